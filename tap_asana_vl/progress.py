"""Progress lines for a long run: one per project, a heartbeat, nothing per request.

A full sync of a large workspace runs for hours. At the default log level the user
sees where the run is (``project 37/412 "Website relaunch": …``), how much it has
written and how fast it goes, and a heartbeat at least every ``heartbeat_seconds`` while
one listing takes long; per-request and per-task lines are left to DEBUG.

The counters are fed by the streams (records when they are handed to the SDK, requests
when they are sent, from any thread); the lines are written by the main thread, except
the heartbeat, which has its own daemon thread so that it also speaks during a long
wait (a rate limit, a slow page).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

#: Seconds of silence after which the heartbeat says what the run is doing.
HEARTBEAT_SECONDS = 30.0


class RunProgress:
    """Run-wide counters and the progress lines made from them."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        heartbeat_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start counting now; ``clock`` is injectable for tests."""
        self._logger = logger
        self._heartbeat_seconds = heartbeat_seconds or HEARTBEAT_SECONDS
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_line_at = self._started
        self._requests = 0
        self._records: Counter[str] = Counter()
        self._activity = "starting"
        self._project: tuple[str, Counter[str]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- Counting (any thread) -----------------------------------------------------------

    def count_request(self) -> None:
        """One HTTP request sent to Asana (retries included)."""
        with self._lock:
            self._requests += 1

    def count_records(self, stream: str, count: int) -> None:
        """``count`` records of ``stream`` handed to the SDK for writing."""
        with self._lock:
            self._records[stream] += count

    @property
    def records(self) -> int:
        """Records written so far in this run, all streams together."""
        with self._lock:
            return sum(self._records.values())

    @property
    def requests(self) -> int:
        """Requests sent so far in this run."""
        with self._lock:
            return self._requests

    # --- What the run is doing (main thread) ---------------------------------------------

    def doing(self, activity: str) -> None:
        """Name what the run works on now, for the heartbeat (cheap: no line written)."""
        self._activity = activity

    def workspace_listed(self, workspace: str, projects: int) -> None:
        """A workspace's projects are listed: say how many will be synced."""
        self._log("workspace %s: %s to sync", workspace, _plural(projects, "project"))

    def project_started(self, position: int, total: int, name: str) -> None:
        """The children of a project (its tasks, their stories …) start syncing."""
        label = f'project {position:,}/{total:,} "{name}"'
        with self._lock:
            self._project = (label, Counter(self._records))
        self.doing(label)

    def project_done(self) -> None:
        """Everything under the project started last is written: one line for it."""
        with self._lock:
            if self._project is None:
                return
            label, before = self._project
            self._project = None
            written = Counter(self._records)
            written.subtract(before)
        tasks, stories = written.pop("tasks", 0), written.pop("stories", 0)
        other = sum(count for count in written.values() if count > 0)
        parts = [_plural(tasks, "task"), _plural(stories, "story", "stories")]
        if other:
            parts.append(_plural(other, "other record"))
        self._log("%s: %s; %s", label, ", ".join(parts), self._totals())

    def finished(self) -> None:
        """The run is complete: totals in one line (the per-stream summary follows)."""
        elapsed = self._clock() - self._started
        self._log(
            "Sync finished: %s records, %s requests in %.1f s (%s)",
            f"{self.records:,}",
            f"{self.requests:,}",
            elapsed,
            f"{self.requests / max(elapsed, 1e-9):.1f} req/s",
        )

    # --- Heartbeat ---------------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """Write a line whenever ``heartbeat_seconds`` pass without one (until ``stop``)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._beat, name="tap-asana-vl-heartbeat", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def heartbeat_due(self) -> bool:
        """Whether the log has been silent for ``heartbeat_seconds``."""
        return self._clock() - self._last_line_at >= self._heartbeat_seconds

    def beat(self) -> None:
        """Write the heartbeat line if it is due."""
        if self.heartbeat_due():
            self._log("still working on %s; %s", self._activity, self._totals())

    def _beat(self) -> None:
        # Wake often enough that a line is never more than a few seconds late.
        interval = max(0.05, min(self._heartbeat_seconds / 6, 5.0))
        while not self._stop.wait(interval):
            self.beat()

    # --- Formatting ---------------------------------------------------------------------

    def _totals(self) -> str:
        elapsed = max(self._clock() - self._started, 1e-9)
        return f"{self.records:,} records so far, {self.requests / elapsed:.1f} req/s"

    def _log(self, message: str, *args: object) -> None:
        self._last_line_at = self._clock()
        self._logger.info(message, *args)


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    word = singular if count == 1 else (plural or singular + "s")
    return f"{count:,} {word}"
