"""How many requests may be in flight at once: Little's law on the measured latency.

The pacer (``rate_limit``) decides how often a request may start; this module decides
how many may be outstanding, so that the pacer's rate is reachable at any latency.
By Little's law a steady rate of ``r`` requests/s that each take ``L`` seconds keeps
``r * L`` requests in flight: 25/s (Asana's paid quota, 1,500/min) needs 2.5 at 100 ms
and 12.5 at 500 ms. A fixed number is either too small for far-away or heavy requests
or needlessly large for near ones.

``InFlightLimit`` keeps a smoothed latency of the answers it hears of and allows
``rate * latency * HEADROOM + SPARE`` requests in flight, where ``rate`` is the pacer's
current pace (so after a 429 halves the pace, fewer requests are admitted too), within
``1 … ceiling`` (``max_concurrent_requests``, never above Asana's 50 concurrent reads
per token). It shrinks when latency drops, and at once to half on a 429 or a transient
failure (5xx, timeout), staying there for ``CONGESTION_HOLD_SECONDS`` and then growing
back: an overloaded Asana answers slower, and Little's law alone would admit more.

The transport holds a slot of it around each request, from before the pacer's wait
until the answer: a slot waiting for its pacer turn is one ready to go, so the pacer,
not this limit, sets the pace whenever the limit exceeds ``rate * latency``.
"""

from __future__ import annotations

import math
import threading
import time
import typing as t
from collections import deque
from contextlib import contextmanager

from tap_asana_vl.settings import MAX_CONCURRENT_REQUESTS

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Asana's concurrency limit for reads (GETs) per token; more answer 429.
ASANA_MAX_CONCURRENT_READS = MAX_CONCURRENT_REQUESTS
#: Slots beyond Little's law, as a factor: latencies vary (a heavy page of tasks takes
#: longer than a task's stories), and the law holds for the mean.
HEADROOM = 1.5
#: And a few more: the main thread's listing requests come one after another, beside
#: the concurrent ones, and rounding must never leave the pacer waiting.
SPARE = 2
#: Weight of each new latency sample in the smoothed latency (about the last 10 count).
LATENCY_SMOOTHING = 0.2
#: A sample counts as at most this many times the smoothed latency: one answer stuck
#: for seconds must not open the gates, a lasting rise still shows within ten answers.
MAX_SAMPLE_FACTOR = 3.0
#: Latency assumed before the first answer (the first requests come one at a time).
INITIAL_LATENCY_SECONDS = 0.25
#: After a 429 or a transient failure the limit stays at most half of what it was
#: for this long (as the pacer's own cool-down), then that cap doubles every as long
#: again: congestion again soon after halves it further.
CONGESTION_HOLD_SECONDS = 10.0
#: How often a thread waiting for a slot checks whether it should stop.
WAIT_CHECK_SECONDS = 0.25


class InFlightLimit:
    """An adjustable bound on requests in flight, from latency and the pacer's rate."""

    def __init__(
        self,
        ceiling: int,
        rate_per_minute: Callable[[], float],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Allow at most ``ceiling`` (and Asana's 50); ``rate_per_minute`` is the pace now."""
        self.ceiling = max(1, min(int(ceiling), ASANA_MAX_CONCURRENT_READS))
        self._rate_per_minute = rate_per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._latency = INITIAL_LATENCY_SECONDS
        self._sampled = False
        self._congestion_cap = self.ceiling
        self._congested_until = -math.inf
        self.in_flight = 0
        # Threads waiting for a slot, in order (``first`` ones before the others).
        self._firsts: deque[threading.Event] = deque()
        self._waiters: deque[threading.Event] = deque()
        #: The most requests in flight at once in this run (for tests and diagnostics).
        self.peak = 0

    @property
    def latency(self) -> float:
        """The smoothed latency of answers, in seconds."""
        with self._lock:
            return self._latency

    def limit(self) -> int:
        """How many requests may be in flight now."""
        with self._lock:
            return self._limit()

    def _limit(self) -> int:
        rate_per_second = max(0.0, self._rate_per_minute()) / 60.0
        wanted = math.ceil(rate_per_second * self._latency * HEADROOM) + SPARE
        limit = min(wanted, self.ceiling)
        since = self._clock() - self._congested_until
        if since < 0:
            limit = min(limit, self._congestion_cap)
        elif since < CONGESTION_HOLD_SECONDS * 6:  # later the cap is past any ceiling
            regrown = self._congestion_cap * 2 ** (since / CONGESTION_HOLD_SECONDS)
            limit = min(limit, math.floor(regrown))
        return max(1, limit)

    def observe(self, seconds: float) -> None:
        """An answer came ``seconds`` after its request was sent."""
        seconds = max(0.0, seconds)
        with self._lock:
            before = self._limit()
            if self._sampled:
                sample = min(seconds, self._latency * MAX_SAMPLE_FACTOR)
                self._latency += LATENCY_SMOOTHING * (sample - self._latency)
            else:
                self._latency, self._sampled = seconds, True
            if self._limit() > before:
                self._admit()

    def congested(self) -> None:
        """Asana answered 429, or failed transiently: halve the limit for a while."""
        with self._lock:
            now = self._clock()
            # Requests already in flight report the same burst: halve once per hold.
            if now >= self._congested_until:
                self._congestion_cap = max(1, self._limit() // 2)
                self._congested_until = now + CONGESTION_HOLD_SECONDS

    @contextmanager
    def slot(self, check: Callable[[], None], *, first: bool = False) -> Iterator[None]:
        """Hold one of the slots while the block runs (waiting for one if all are taken).

        Slots go to waiters in the order they asked: fetches started a batch ahead
        must not overtake those of the batch being written. ``first``: before every
        other waiter, for the requests that feed the concurrent ones (the next page of
        tasks, whose stories are next): queued behind those of the current page, they
        would let the work run dry before the next page arrives. ``check`` is called
        while waiting and may raise to give up (the run stops).
        """
        with self._lock:
            ticket: threading.Event | None = None
            if self._firsts or self._waiters or self.in_flight >= self._limit():
                ticket = threading.Event()
                (self._firsts if first else self._waiters).append(ticket)
            else:
                self._take()
        if ticket is not None:
            self._wait(ticket, check)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1
                self._admit()

    def _wait(self, ticket: threading.Event, check: Callable[[], None]) -> None:
        try:
            while not ticket.wait(WAIT_CHECK_SECONDS):
                check()
                with self._lock:
                    self._admit()  # the limit grows with time after congestion, too
        except BaseException:
            with self._lock:
                if ticket.is_set():  # admitted meanwhile: hand the slot on
                    self.in_flight -= 1
                    self._admit()
                else:
                    queue = self._firsts if ticket in self._firsts else self._waiters
                    queue.remove(ticket)
            raise

    def _take(self) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def _admit(self) -> None:
        """Give free slots to the waiters next in line (under the lock)."""
        limit = self._limit()
        while self.in_flight < limit and (self._firsts or self._waiters):
            ticket = (self._firsts or self._waiters).popleft()
            self._take()
            ticket.set()
