"""Concurrent prefetch of per-parent children (a page of tasks' stories at once).

The SDK syncs a parent record's children right after the record, one parent at a time,
from one thread. For children that cost a request per parent (each task's stories,
attachments, subtasks; each project's sections) that would be one round trip after the
other. Before the parent hands a batch of records to the SDK, ``prefetch_children``
starts every wanted child listing of the batch on the run's thread pool; when the SDK
then syncs a child for one parent, the child takes the result that is ready (or waits
for it). Messages are still written by the SDK, from the main thread, in its usual
order: only the waiting overlaps.
"""

from __future__ import annotations

import threading
import typing as t

from tap_asana_vl.errors import SkippedObjectError

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from concurrent.futures import Executor, Future

    from singer_sdk.helpers.types import Context

    from tap_asana_vl.run_control import RunControl

Records = list[dict[str, t.Any]]
#: One fetch started: whose it is, for which parent, and the fetch itself.
Started = tuple["Prefetches", str, "Fetch"]
Fetch = tuple["Future[Records]", threading.Event]


class PrefetchingChild(t.Protocol):
    """What ``prefetch_children`` needs of a child stream."""

    prefetch: bool
    selected: bool
    has_selected_descendents: bool
    prefetches: Prefetches

    def wanted(self, context: Context) -> bool:
        """Whether the child has anything to fetch for the parent of ``context``."""

    def prefetch_key(self, context: Context) -> str | None:
        """Which parent ``context`` is for."""

    def fetch(self, context: Context) -> Iterable[dict[str, t.Any]]:
        """The child's records for ``context``, from Asana."""


class Prefetches:
    """One child stream's listings started ahead of time, by parent."""

    def __init__(self, executor: Executor, run_control: RunControl) -> None:
        """Run fetches on ``executor``; their waits end when the run stops."""
        self._executor = executor
        self._run_control = run_control
        self._started: dict[str, Fetch] = {}

    def start(self, key: str, fetch: Callable[[], Iterable[dict[str, t.Any]]]) -> Fetch:
        """Start ``fetch`` for parent ``key`` on the pool."""
        cancelled = threading.Event()

        def run() -> Records:
            # Dropped by its consumer (discard), the fetch stops at its next wait.
            with self._run_control.cancellable(cancelled):
                return list(fetch())

        started = self._started[key] = (self._executor.submit(run), cancelled)
        return started

    def take(self, key: str | None) -> Records | None:
        """The records fetched for ``key`` (waiting for them); None if never started.

        A skipped object (one task deleted since it was listed) is re-raised for its
        parent only; any other failure ends the run, so the other fetches are dropped.
        """
        started = self._started.pop(key, None) if key is not None else None
        if started is None:
            return None
        try:
            return started[0].result()
        except SkippedObjectError:
            raise
        except BaseException:
            self.discard()
            raise

    def drop(self, key: str | None) -> None:
        """Stop the fetch for ``key``: nobody will consume it."""
        started = self._started.pop(key, None) if key is not None else None
        if started is not None:
            started[1].set()
            started[0].cancel()

    def forget(self, key: str, fetch: Fetch) -> None:
        """Stop ``fetch`` for ``key`` if it is still there, not taken: nobody will take it."""
        if self._started.get(key) is fetch:
            self.drop(key)

    def discard(self) -> None:
        """Stop every fetch nobody will consume (a failing run, filtered-out parents)."""
        for future, cancelled in self._started.values():
            cancelled.set()
            future.cancel()
        self._started.clear()


def prefetch_children(
    children: Iterable[PrefetchingChild],
    child_contexts: list[Context],
) -> list[Started]:
    """Start, for each child that prefetches, its fetch for every context it wants.

    ``child_contexts`` are what the parent passes its children for each record of a
    batch (see ``AsanaStream.get_child_context``): what a child fetches, and whether it
    fetches at all, depends only on them. Returns what was started, for the parent to
    ``forget`` once the batch is synced (fetches of an earlier batch may still be
    running: the parent reads one batch ahead).
    """
    started: list[Started] = []
    for child in children:
        if not child.prefetch or not (child.selected or child.has_selected_descendents):
            continue
        for context in child_contexts:
            key = child.prefetch_key(context)
            if key is not None and child.wanted(context):
                fetch = child.prefetches.start(key, lambda c=context, s=child: s.fetch(c))
                started.append((child.prefetches, key, fetch))
    return started
