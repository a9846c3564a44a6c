"""Whether a run should stop: one circuit breaker and one stop flag for every request.

Two reasons, shared by all streams and threads of one tap run:

- **An outage.** Each request retries on its own with backoff; when Asana (or the
  network) is down, ten concurrent requests would each keep retrying for minutes. The
  circuit breaker trips once no request has succeeded for ``max_outage_seconds`` (a
  shorter bound before the first success: an ``api_url`` nothing answers must fail
  fast), and every request then fails with the same one-line cause.
- **A stop request** (SIGTERM/SIGINT, or a fatal error elsewhere in the run): waits end
  at once and no new request starts.
"""

from __future__ import annotations

import threading
import time
import typing as t
from contextlib import contextmanager

from singer_sdk.exceptions import FatalAPIError

if t.TYPE_CHECKING:
    from collections.abc import Iterator

#: Before any request has succeeded, give up after this long: a wrong URL or a dead
#: network must not hold a run for minutes.
FIRST_SUCCESS_WITHIN_SECONDS = 30.0


class OutageError(FatalAPIError):
    """No request to Asana has succeeded for too long: the run stops."""


class StoppedError(Exception):
    """The run is stopping (signal or fatal error); this thread's work is abandoned."""


class RunControl:
    """The run-wide circuit breaker and stop flag (thread-safe)."""

    def __init__(
        self, max_outage_seconds: float, *, clock: t.Callable[[], float] = time.monotonic
    ) -> None:
        """Start the outage clock now (the run's first request is about to go out)."""
        self.max_outage_seconds = max_outage_seconds
        self.stopping = threading.Event()
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_success: float | None = None
        self._tripped: str | None = None
        self._thread = threading.local()

    @contextmanager
    def cancellable(self, cancelled: threading.Event, *, first: bool = False) -> Iterator[None]:
        """Within the block, this thread's waits also end when ``cancelled`` is set.

        For work done ahead of time (a prefetch) that its consumer may drop. ``first``:
        its requests go before other workers' (``goes_first``), as the main thread's.
        """
        self._thread.cancelled = cancelled
        self._thread.first = first
        try:
            yield
        finally:
            self._thread.cancelled = None
            self._thread.first = False

    def goes_first(self) -> bool:
        """Whether this thread's requests go before other workers' (see ``cancellable``).

        The main thread's do, and so do a read-ahead's: they list the parents whose
        children the workers fetch, and queued behind those children they would let the
        work run dry.
        """
        if threading.current_thread() is threading.main_thread():
            return True
        return bool(getattr(self._thread, "first", False))

    def succeeded(self) -> None:
        """A request got an answer from Asana (any non-5xx status)."""
        with self._lock:
            self._last_success = self._clock()

    def failed(self, reason: str) -> None:
        """A request failed transiently; trip the breaker if the outage is too long.

        Raises:
            OutageError: when the breaker trips (or has tripped before).

        """
        with self._lock:
            if self._tripped is None and self._seconds_left() <= 0:
                since = self._last_success if self._last_success is not None else self._started
                what = "since the last success" if self._last_success is not None else "yet"
                self._tripped = (
                    f"No request to Asana has succeeded {what} ({self._clock() - since:.0f}s; "
                    f"last error: {reason}). Asana or the network is down, or api_url is "
                    "wrong: stopping. Re-run later; the next run resumes from the last state "
                    "(max_outage_seconds sets how long to keep trying)."
                )
            tripped = self._tripped
        if tripped is not None:
            self.stopping.set()
            raise OutageError(tripped)

    def seconds_left(self) -> float:
        """How long a retry may still wait before the breaker would trip."""
        with self._lock:
            return max(0.0, self._seconds_left())

    def _seconds_left(self) -> float:
        if self._last_success is None:
            limit = min(self.max_outage_seconds, FIRST_SUCCESS_WITHIN_SECONDS)
            return self._started + limit - self._clock()
        return self._last_success + self.max_outage_seconds - self._clock()

    def pause(self, seconds: float, cancelled: threading.Event | None = None) -> None:
        """Sleep ``seconds``, waking at once when the run (or this thread's prefetch) stops.

        Raises:
            OutageError: the breaker tripped while this thread waited.
            StoppedError: the run is stopping, or ``cancelled`` was set.

        """
        if cancelled is None:
            cancelled = getattr(self._thread, "cancelled", None)
        deadline = self._clock() + max(0.0, seconds)
        while True:
            self.raise_if_stopping(cancelled)
            left = deadline - self._clock()
            if left <= 0:
                return
            # Wake regularly to notice a cancelled prefetch as well as a stopping run.
            self.stopping.wait(min(left, 0.25))

    def raise_if_stopping(self, cancelled: threading.Event | None = None) -> None:
        """Raise if no new work should start.

        Raises:
            OutageError: the breaker tripped.
            StoppedError: the run is stopping, or ``cancelled`` was set.

        """
        if self._tripped is not None:
            raise OutageError(self._tripped)
        if self.stopping.is_set() or (cancelled is not None and cancelled.is_set()):
            raise StoppedError
