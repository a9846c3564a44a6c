"""One request pacer shared by every stream and thread of a tap run.

Asana limits requests per token per minute (1,500 on paid plans, 150 on free ones) and
counts rejected requests against the quota, so bursting and then backing off wastes
quota. The pacer spaces requests evenly, a little below the configured rate
(``QUOTA_MARGIN``); when Asana still answers 429 it pauses everyone for ``Retry-After``
seconds and halves the pace, then creeps back up while no 429 arrives. A free-plan
workspace therefore converges below 150/min even with the paid-plan default setting.
"""

from __future__ import annotations

import threading
import time
import typing as t

# How far the pace may fall after repeated 429s, in requests per minute.
MIN_REQUESTS_PER_MINUTE = 10.0
# The pace is halved at most once per this many seconds (or per Retry-After if longer).
DECREASE_COOLDOWN_SECONDS = 10.0
# After this many seconds without a 429 the pace grows by RECOVERY_FACTOR.
RECOVERY_PERIOD_SECONDS = 60.0
RECOVERY_FACTOR = 1.25
#: Requests are spaced for this share of the rate. Asana counts them as they arrive, in
#: a sliding minute: spaced exactly at the quota, network jitter bunches a few into one
#: minute, the one over answers 429, and the halved pace takes minutes to creep back (a
#: full sync at 500 ms latency ran at half pace for its last minutes). 2 % absorbs 1.2 s
#: of jitter at 1,500/min.
QUOTA_MARGIN = 0.98


class RateLimiter:
    """Evenly spaced, adaptive request slots (thread-safe)."""

    def __init__(
        self,
        max_requests_per_minute: float,
        *,
        clock: t.Callable[[], float] = time.monotonic,
    ) -> None:
        """Start at the configured ceiling."""
        self.ceiling = float(max_requests_per_minute)
        self.rate = self.ceiling
        self._clock = clock
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._last_change = clock()
        self.rate_limited_count = 0
        self.waited_seconds = 0.0

    def reserve(self) -> float:
        """Reserve the next request slot; return how many seconds to wait for it."""
        with self._lock:
            now = self._clock()
            self._recover(now)
            slot = max(now, self._next_slot)
            self._next_slot = slot + 60.0 / (self.rate * QUOTA_MARGIN)
            wait = slot - now
            self.waited_seconds += wait
        return wait

    def rate_limited(self, retry_after: float) -> None:
        """Asana answered 429: hold every sender for ``retry_after`` and slow down."""
        with self._lock:
            now = self._clock()
            self.rate_limited_count += 1
            self._next_slot = max(self._next_slot, now + max(retry_after, 0.0))
            # Halve at most once per cool-down: requests already in flight report the
            # same burst, and a run of isolated 429s (Asana's cost or concurrency
            # limits) must not drive the pace to the floor one second at a time.
            if now >= self._last_change:
                self.rate = max(MIN_REQUESTS_PER_MINUTE, self.rate / 2)
                self._last_change = now + max(retry_after, DECREASE_COOLDOWN_SECONDS)

    def _recover(self, now: float) -> None:
        if self.rate >= self.ceiling:
            return
        if now - self._last_change >= RECOVERY_PERIOD_SECONDS:
            self.rate = min(self.ceiling, self.rate * RECOVERY_FACTOR)
            self._last_change = now
