"""Concurrent prefetch of per-parent children (a page of tasks' stories at once).

The SDK syncs a parent record's children right after the record, one parent at a time,
from one thread. For children that cost a request per parent (each task's stories,
attachments, subtasks; each project's sections) that would be one round trip after the
other. Before the parent hands a batch of records to the SDK, ``prefetch_children``
starts every wanted child listing of the batch on the run's thread pool; when the SDK
then syncs a child for one parent, the child takes the result that is ready (or waits
for it). Messages are still written by the SDK, from the main thread, in its usual
order: only the waiting overlaps.

A child with many records per parent (a project's tasks) is instead *read ahead*
(``read_ahead``): while the SDK syncs it for one parent, the first page of the next
parents' listings is already requested, so its first request does not wait for the
previous parent's last records to be written. Only that first page (and the second, if
there is one: the first batch may need some of it) is held; the rest of the listing is
read on, from the main thread, when the SDK gets to that parent.
"""

from __future__ import annotations

import itertools
import threading
import typing as t

from tap_asana_vl.errors import SkippedObjectError

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from concurrent.futures import Executor, Future

    from singer_sdk.helpers.types import Context

    from tap_asana_vl.run_control import RunControl

Records = list[dict[str, t.Any]]
#: A listing's first records, and the listing itself, to be read on from there.
Head = tuple[Records, "Iterator[dict[str, t.Any]]"]
#: One fetch started: whose it is, for which parent, and the fetch itself.
Started = tuple["Prefetches", str, "Fetch"]
Fetch = tuple["Future[Records | Head]", threading.Event]


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


class ReadingAheadChild(PrefetchingChild, t.Protocol):
    """What ``read_ahead`` needs of a child stream."""

    reads_ahead: bool
    page_size: int

    def ready_to_read_ahead(self, context: Context) -> bool:
        """Whether the child's listing for ``context`` may start now (readies it)."""


class Prefetches:
    """One child stream's listings started ahead of time, by parent."""

    def __init__(self, executor: Executor, run_control: RunControl) -> None:
        """Run fetches on ``executor``; their waits end when the run stops."""
        self._executor = executor
        self._run_control = run_control
        self._started: dict[str, Fetch] = {}
        #: Gids of the records each read-ahead (``first``) has read so far, not taken yet.
        self._held: dict[str, set[str]] = {}

    def start(
        self,
        key: str,
        fetch: Callable[[], Iterable[dict[str, t.Any]]],
        *,
        first: int | None = None,
    ) -> Fetch:
        """Start ``fetch`` for parent ``key`` on the pool: all of it, or its ``first`` records.

        With ``first``, the listing stops after that many records; whoever takes it
        reads on from there.
        """
        cancelled = threading.Event()
        held: set[str] | None = None
        if first is not None:
            held = self._held[key] = set()

        def run() -> Records | Head:
            # Dropped by its consumer (discard), the fetch stops at its next wait.
            with self._run_control.cancellable(cancelled):
                if first is None or held is None:
                    return list(fetch())
                listing = iter(fetch())
                head: Records = []
                try:
                    for record in itertools.islice(listing, first):
                        held.add(str(record.get("gid")))
                        head.append(record)
                except SkippedObjectError as exc:
                    if not head:
                        raise
                    # The next page is refused: the first is delivered, as it would be
                    # read in turn, and the refusal comes where that page would.
                    return head, _raising(exc)
                return head, listing

        started = self._started[key] = (self._executor.submit(run), cancelled)
        return started

    def holds(self, gid: str) -> bool:
        """Whether a read-ahead not taken yet has read a record ``gid`` (it will deliver it).

        Read ahead, a listing delivers records read before others delivered now: a task
        moved between two projects in the meantime comes from the later one first, and
        then in an older copy from the one read ahead. Whoever dedupes asks this.
        """
        return any(gid in held for held in list(self._held.values()))

    def __contains__(self, key: str) -> bool:
        """Whether a fetch for ``key`` is started and not taken or dropped yet."""
        return key in self._started

    def take(self, key: str | None) -> Iterable[dict[str, t.Any]] | None:
        """The records fetched for ``key`` (waiting for them); None if never started.

        A skipped object (one task deleted since it was listed) is re-raised for its
        parent only; any other failure ends the run, so the other fetches are dropped.
        """
        started = self._started.pop(key, None) if key is not None else None
        if started is None:
            return None
        self._held.pop(str(key), None)
        try:
            result = started[0].result()
        except SkippedObjectError:
            raise
        except BaseException:
            self.discard()
            raise
        if isinstance(result, tuple):
            head, rest = result
            return itertools.chain(head, rest)
        return result

    def drop(self, key: str | None) -> None:
        """Stop the fetch for ``key``: nobody will consume it."""
        started = self._started.pop(key, None) if key is not None else None
        self._held.pop(str(key), None)
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
        self._held.clear()


def _raising(error: BaseException) -> Iterator[dict[str, t.Any]]:
    """A listing's rest that fails with ``error`` where it is reached."""
    raise error
    yield  # a generator: nothing is raised before the rest is read


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


def read_ahead(
    children: Iterable[ReadingAheadChild],
    child_context: Context,
) -> list[Started]:
    """Start the first page of each reading-ahead child's listing for ``child_context``.

    ``child_context`` is what the parent will pass its children for a record it hands
    over later (the next project); each child decides whether it may list that parent
    now (``wanted``, ``ready_to_read_ahead``). Returns what was started, for the parent
    to ``forget`` once that record is synced (nobody took it: a child the SDK did not
    sync for it, or that decided not to list after all).
    """
    started: list[Started] = []
    for child in children:
        if not child.reads_ahead or not (child.selected or child.has_selected_descendents):
            continue
        key = child.prefetch_key(child_context)
        if key is None or key in child.prefetches or not child.wanted(child_context):
            continue
        if not child.ready_to_read_ahead(child_context):
            continue
        # One record past the first page, so that the second is requested too (and held
        # by the listing): the first page's records may be repeats (tasks written for an
        # earlier project) that the child's first batch has to make up from the second.
        fetch = child.prefetches.start(
            key, lambda c=child_context, s=child: s.fetch(c), first=child.page_size + 1
        )
        started.append((child.prefetches, key, fetch))
    return started


def listings_in_order(
    prefetches: Prefetches,
    keys: list[str],
    listing: Callable[[str], Iterable[dict[str, t.Any]]],
    *,
    depth: int,
    first: int,
) -> Iterator[dict[str, t.Any]]:
    """Each key's listing in turn, the first page of the next ``depth`` keys requested meanwhile.

    For many short listings read one after another (each user's assigned tasks): one at
    a time, each would cost a round trip with nothing else in flight. Records come in
    the order of ``keys`` and, within a key, of its listing; at most ``depth`` + 1 first
    pages are held. Leaving early (or failing) drops what was started and not taken.
    """
    try:
        for index, key in enumerate(keys):
            for upcoming in keys[index : index + depth + 1]:
                if upcoming not in prefetches:
                    prefetches.start(upcoming, lambda k=upcoming: listing(k), first=first)
            yield from prefetches.take(key) or ()
    finally:
        prefetches.discard()
