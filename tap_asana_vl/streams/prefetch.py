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
there is one: the first batch may need some of it) is held, the first packed unless it
is the whole listing (``packed.py``: a page of 100 tasks, ~2 MB decoded, waits a whole
project's sync); the rest of the listing is read on, from the main thread, when the SDK
gets to that parent. How many parents
ahead is bounded by the records their first pages may hold (``has_room_for_head``): two
parents always, more while their pages turn out short (many small projects).

A first page read ahead that holds a parent's whole listing is *expanded*: its records'
own prefetching children (a small project's tasks' stories) are started too, before
the SDK reaches that parent (``ChildrenAhead.from_heads``); otherwise each small
parent would cost a round trip of its own, for those children, at its turn.
"""

from __future__ import annotations

import itertools
import threading
import typing as t
from dataclasses import dataclass, field

from tap_asana_vl.errors import SkippedObjectError
from tap_asana_vl.packed import PackedRecords

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from concurrent.futures import Executor, Future

    from singer_sdk.helpers.types import Context

    from tap_asana_vl.run_control import RunControl

Records = list[dict[str, t.Any]]
#: A listing's first records (packed unless they are all of it), and the listing
#: itself, to be read on from there.
Head = tuple["Records | PackedRecords", "Iterator[dict[str, t.Any]]"]
#: One fetch started: whose it is, for which parent, and its stop signal (which tells it
#: from a later fetch for the same parent, and holds nothing of its result).
Started = tuple["Prefetches", str, threading.Event]
Fetch = tuple["Future[Records | Head]", threading.Event]
T = t.TypeVar("T")
#: Records the heads read ahead for one child may hold, in first pages (``first``
#: records): a head not answered yet, or answered but not whole, counts as two (its
#: listing holds the second page too), a whole one as the records it holds. Four: two
#: heads, as four pages of 100 tasks with every field decode to ~8 MB. Seven while
#: listings turn out short (the last head answered was whole, and none held is not):
#: three heads in flight, as two small projects' first pages per round trip are too
#: few to keep 25 requests/s going at 500 ms.
HEADS_HELD_PAGES = 4
HEADS_HELD_PAGES_SHORT = 7
#: No more heads are expanded while this many of their children's fetches are under
#: way or held, not taken (per reading-ahead stream): a page's worth, as a batch of
#: parents' children prefetched ahead.
EXPANDED_FETCHES_MAX = 100


@dataclass
class _HeadRead:
    """A listing read ahead up to its ``first`` records (``Prefetches.start``)."""

    first: int
    context: Context | None
    #: Gids of the records read so far.
    gids: set[str] = field(default_factory=set)
    #: The listing ended within ``first`` records: the head is all of it.
    whole: bool = False
    #: Its records' children's fetches were started (``Prefetches.expanded``).
    expanded: bool = False


class PrefetchingChild(t.Protocol):
    """What ``prefetch_children`` needs of a child stream."""

    prefetch: bool
    prefetches: Prefetches

    @property
    def runs(self) -> bool:
        """Selected, or read for a selected stream below it."""

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


class WhileWaiting:
    """Chores the main thread does while it waits for a fetch started ahead.

    The main thread waits for a task's stories while the next projects' first pages
    come in on the lead pool: a whole one's tasks' stories are started as it comes in
    (the chore), not when the main thread next gets to a record, so that a small
    project's stories are under way one round trip after its first page, however long
    the main thread waits meanwhile.
    """

    def __init__(self) -> None:
        """No chores yet (``add``)."""
        self._woken = threading.Event()
        self._chores: list[Callable[[], None]] = []

    def add(self, chore: Callable[[], None]) -> None:
        """Run ``chore`` (on the main thread) whenever ``wake`` is called during a wait."""
        self._chores.append(chore)

    def wake(self, _done: object = None) -> None:
        """Something a chore handles has come in (a head read ahead; any thread)."""
        self._woken.set()

    def result(self, future: Future[T]) -> T:
        """``future``'s result, doing the chores while the main thread waits for it."""
        if not self._chores or threading.current_thread() is not threading.main_thread():
            return future.result()
        future.add_done_callback(self.wake)
        while not future.done():
            self._woken.wait()
            self._woken.clear()
            for chore in self._chores:
                chore()
        return future.result()


class Prefetches:
    """One child stream's listings started ahead of time, by parent."""

    def __init__(
        self,
        executor: Executor,
        run_control: RunControl,
        lead_executor: Executor | None = None,
        while_waiting: WhileWaiting | None = None,
    ) -> None:
        """Run fetches on ``executor``, heads (``first``) on ``lead_executor``.

        Their waits end when the run stops; a wait for one on the main thread does the
        chores of ``while_waiting`` (which each head wakes when it is read).
        """
        self._executor = executor
        self._lead_executor = lead_executor or executor
        self._while_waiting = while_waiting or WhileWaiting()
        self._run_control = run_control
        self._started: dict[str, Fetch] = {}
        #: The context each fetch was started for (``started_for``).
        self._started_for: dict[str, Context | None] = {}
        #: Each read-ahead (``first``) not taken yet, in the order started (the parents').
        self._heads: dict[str, _HeadRead] = {}
        #: Children's fetches started for heads (``expanded``), kept past the head's
        #: ``take`` until its parent is synced (``release``).
        self._expanded: dict[str, list[Started]] = {}
        #: Whether the last head read was a whole listing (``has_room_for_head``).
        self.short_listings = False

    def start(
        self,
        key: str,
        fetch: Callable[[], Iterable[dict[str, t.Any]]],
        *,
        first: int | None = None,
        context: Context | None = None,
    ) -> threading.Event:
        """Start ``fetch`` for parent ``key`` on the pool: all of it, or its ``first`` records.

        With ``first`` (a head), the listing stops after that many records; whoever
        takes it reads on from there. A head runs on the lead pool and its requests go
        first (it lists what other fetches are for; users' listings read in order too).
        ``context``: what the fetch is for (``started_for``; a head's, ``heads_read``).
        Returns the fetch's stop signal, its handle for ``forget``.
        """
        cancelled = threading.Event()
        head_read: _HeadRead | None = None
        if first is not None:
            head_read = self._heads[key] = _HeadRead(first, context)

        def run() -> Records | Head:
            # Dropped by its consumer (discard), the fetch stops at its next wait. A head
            # goes before other workers' requests (they fetch what heads list).
            with self._run_control.cancellable(cancelled, first=head_read is not None):
                if first is None or head_read is None:
                    return list(fetch())
                listing = iter(fetch())
                head: Records = []
                try:
                    for record in itertools.islice(listing, first):
                        head_read.gids.add(str(record.get("gid")))
                        head.append(record)
                except SkippedObjectError as exc:
                    if not head:
                        raise
                    # The next page is refused: the first is delivered, as it would be
                    # read in turn, and the refusal comes where that page would.
                    return head, _raising(exc)
                head_read.whole = self.short_listings = len(head) < first
                if head_read.whole:
                    return head, listing  # expanded from its records (heads_read)
                # Held until the SDK reaches its parent (a whole project's sync later),
                # decoded ~2 MB a page of tasks: packed, ~0.2 MB, unpacked as read.
                packed = PackedRecords()
                for record in head:
                    packed.append(record)
                return packed, listing

        if head_read is None:
            future = self._executor.submit(run)
        else:
            future = self._lead_executor.submit(run)
            future.add_done_callback(self._while_waiting.wake)
        self._started[key] = (future, cancelled)
        self._started_for[key] = context
        return cancelled

    def holds(self, gid: str) -> bool:
        """Whether a read-ahead not taken yet has read a record ``gid`` (it will deliver it).

        Read ahead, a listing delivers records read before others delivered now: a task
        moved between two projects in the meantime comes from the later one first, and
        then in an older copy from the one read ahead. Whoever dedupes asks this.
        """
        return any(gid in head.gids for head in list(self._heads.values()))

    def __contains__(self, key: str) -> bool:
        """Whether a fetch for ``key`` is started and not taken or dropped yet."""
        return key in self._started

    def started_for(self, key: str) -> Context | None:
        """The context the fetch for ``key`` (not taken yet) was started for."""
        return self._started_for.get(key)

    def pending(self, key: str, handle: threading.Event) -> bool:
        """Whether the fetch ``handle`` for ``key`` is started and not taken or dropped."""
        started = self._started.get(key)
        return started is not None and started[1] is handle

    def take(self, key: str | None) -> Iterable[dict[str, t.Any]] | None:
        """The records fetched for ``key`` (waiting for them); None if never started.

        A skipped object (one task deleted since it was listed) is re-raised for its
        parent only; any other failure ends the run, so the other fetches are dropped.
        While it waits on the main thread, the run's chores are done (``WhileWaiting``).
        """
        started = self._started.pop(key, None) if key is not None else None
        if started is None:
            return None
        self._started_for.pop(str(key), None)
        self._heads.pop(str(key), None)
        try:
            result = self._while_waiting.result(started[0])
        except SkippedObjectError:
            raise
        except BaseException:
            # This fetch too, if what failed was a chore done while waiting for it.
            started[1].set()
            started[0].cancel()
            self.discard()
            raise
        if isinstance(result, tuple):
            head, rest = result
            records = head.drain() if isinstance(head, PackedRecords) else head
            return itertools.chain(records, rest)
        return result

    def drop(self, key: str | None) -> None:
        """Stop the fetch for ``key`` (and, for a head, its records' children's): unused."""
        started = self._started.pop(key, None) if key is not None else None
        self._started_for.pop(str(key), None)
        self._heads.pop(str(key), None)
        self.release(key)
        if started is not None:
            started[1].set()
            started[0].cancel()

    def forget(self, key: str, handle: threading.Event) -> None:
        """Stop fetch ``handle`` for ``key`` if it is still there, not taken: nobody will."""
        if self.pending(key, handle):
            self.drop(key)

    def discard(self) -> None:
        """Stop every fetch nobody will consume (a failing run, filtered-out parents)."""
        for future, cancelled in self._started.values():
            cancelled.set()
            future.cancel()
        self._started.clear()
        self._started_for.clear()
        self._heads.clear()
        for key in list(self._expanded):
            self.release(key)

    # --- Heads read ahead, and their records' children (``ChildrenAhead.from_heads``)

    def room_for_head(self, first: int) -> bool:
        """Whether one more head of ``first`` records fits ``HEADS_HELD_PAGES``."""
        held, long_held = 0, False
        for key, head in list(self._heads.items()):
            answered = self._finished(key)
            if answered and head.whole:
                held += len(head.gids)
            else:
                held += 2 * first  # its first page and, in its listing, the second
                long_held = long_held or answered
        short = self.short_listings and not long_held
        pages = HEADS_HELD_PAGES_SHORT if short else HEADS_HELD_PAGES
        return held + 2 * first <= pages * first

    def heads_read(self) -> Iterator[tuple[str, Context | None, Records]]:
        """Heads read ahead that hold their parent's whole listing, not expanded yet.

        In the order started; each with the parent's context and its records.
        """
        for key, head in list(self._heads.items()):
            if not head.expanded and head.whole and self._finished(key):
                result = self._started[key][0].result()
                if isinstance(result, tuple) and isinstance(result[0], list):
                    yield key, head.context, result[0]

    def expanded(self, key: str, started: list[Started]) -> None:
        """Note ``started``, the fetches of head ``key``'s records' children (till ``release``)."""
        head = self._heads.get(key)
        if head is None:  # dropped meanwhile: nobody will take them
            for prefetches, child_key, handle in started:
                prefetches.forget(child_key, handle)
            return
        head.expanded = True
        self._expanded[key] = started

    @property
    def expanded_fetches(self) -> int:
        """Children's fetches started for heads, under way or held, not taken yet."""
        return sum(
            prefetches.pending(child_key, handle)
            for started in list(self._expanded.values())
            for prefetches, child_key, handle in started
        )

    def release(self, key: str | None) -> None:
        """Parent ``key`` is synced: its records' children's fetches nobody took stop."""
        for prefetches, child_key, handle in self._expanded.pop(str(key), []):
            prefetches.forget(child_key, handle)

    def _finished(self, key: str) -> bool:
        started = self._started.get(key)
        return (
            started is not None
            and started[0].done()
            and not started[0].cancelled()
            and (started[0].exception() is None)
        )


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
        if not child.prefetch or not child.runs:
            continue
        for context in child_contexts:
            key = child.prefetch_key(context)
            if key is None or not child.wanted(context):
                continue
            if key in child.prefetches:
                if child.prefetches.started_for(key) == context:
                    continue  # started for this very record (from a head): taken as is
                # Started for another copy of the record (a task edited since a page read
                # ahead held it): its children may have changed since, fetched anew.
                child.prefetches.drop(key)
            handle = child.prefetches.start(
                key, lambda c=context, s=child: s.fetch(c), context=context
            )
            started.append((child.prefetches, key, handle))
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
        if not child.reads_ahead or not child.runs:
            continue
        key = child.prefetch_key(child_context)
        if key is None or key in child.prefetches or not child.wanted(child_context):
            continue
        if not child.ready_to_read_ahead(child_context):
            continue
        # One record past the first page, so that the second is requested too (and held
        # by the listing): the first page's records may be repeats (tasks written for an
        # earlier project) that the child's first batch has to make up from the second.
        handle = child.prefetches.start(
            key,
            lambda c=child_context, s=child: s.fetch(c),
            first=child.page_size + 1,
            context=child_context,
        )
        started.append((child.prefetches, key, handle))
    return started


def has_room_for_head(children: Iterable[ReadingAheadChild]) -> bool:
    """Whether one more head may be read ahead for each child (``HEADS_HELD_PAGES``)."""
    return all(
        child.prefetches.room_for_head(child.page_size + 1)
        for child in children
        if child.reads_ahead
    )


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
