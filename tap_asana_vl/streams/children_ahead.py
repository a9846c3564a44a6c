"""A parent stream's children started ahead of the SDK, around the hand-over of its records.

The SDK syncs a parent's records one at a time, from one thread, each record's children
right after it. ``ChildrenAhead`` is what a parent stream (``AsanaStream``) does around
each record it hands over, so that the requests of what comes next are already under
way (the fetches themselves are in ``prefetch.py``):

- **Prefetching children** (each task's stories) are started for a whole batch before
  it is handed over, and for the next batch too (``start_for_batch``); for a parent with
  ``prefetch_records_ahead``, a few records ahead instead (``hand_over``).
- **Reading-ahead children** (each project's tasks) get the first page of their listing
  for the next records started before each record's children are synced, and again
  while the main thread waits for a fetch (``_read_ahead_more``, a ``WhileWaiting``
  chore): there may be room for another head by then.
- **Heads** read ahead that hold a parent's whole listing are expanded
  (``from_heads``): their records' own prefetching children start at once.

What was started for a record and not taken once it is synced is forgotten, so no fetch
outlives the records it was for.
"""

from __future__ import annotations

import typing as t

from tap_asana_vl.streams.prefetch import (
    EXPANDED_FETCHES_MAX,
    Prefetches,
    ReadingAheadChild,
    Started,
    WhileWaiting,
    has_room_for_head,
    prefetch_children,
    read_ahead,
)

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from singer_sdk.helpers.types import Context

#: How many of the next parents a reading-ahead child's first page is requested for:
#: two, so that a parent synced in less than a round trip (a project with nothing
#: changed) still finds the next one's page under way.
READ_AHEAD_RECORDS = 2
#: And up to this many while the pages read ahead hold few records (``has_room_for_head``
#: bounds what they hold): small projects, each synced in a fraction of a round trip,
#: need their first pages (and then their tasks' stories) requested that much earlier.
READ_AHEAD_RECORDS_MAX = 8

Record = dict[str, t.Any]


class Child(ReadingAheadChild, t.Protocol):
    """What a parent starts of a child stream ahead (``prefetch`` or ``reads_ahead``)."""

    def prefetch_from_heads(self) -> None:
        """Start the child's own children for its heads read ahead (``from_heads``)."""


class Parent(t.Protocol):
    """What ``ChildrenAhead`` needs of the stream it works for."""

    page_size: int
    reads_ahead: bool
    prefetch_records_ahead: int | None

    @property
    def child_streams(self) -> Sequence[object]:
        """The stream's children, as the SDK lists them."""

    @property
    def prefetches(self) -> Prefetches:
        """The stream's own listings started ahead (its heads, when it reads ahead)."""

    def get_child_context(self, record: Record, context: Context | None) -> Record | None:
        """What the stream's children get of ``record``."""

    def expected_from_head(self, record: Record, key: str) -> bool:
        """Whether ``record``, read ahead for parent ``key``, may be emitted in this run."""


class ChildrenAhead:
    """One parent stream's children's work started ahead (one per stream, for the run).

    ``begin`` readies it for each sync of the stream (one parent's context); what it
    learns of the children (``_children_that``) and its chore while waiting are kept.
    """

    def __init__(self, parent: Parent, while_waiting: WhileWaiting) -> None:
        """Nothing started yet."""
        self._parent = parent
        self._while_waiting = while_waiting
        self._children_by_flag: dict[str, list[Child]] = {}
        #: Children's listings read ahead, by the gid of the record they are for.
        self._reading_ahead: dict[str, list[Started]] = {}
        #: Children's prefetches started record by record (``prefetch_records_ahead``).
        self._prefetched_ahead: dict[str, list[Started]] = {}
        #: The records after the one whose children are synced now, and their context:
        #: whose children's first pages may be read ahead (``_read_ahead_more``).
        self._window: tuple[list[Record], Context | None] | None = None
        self._reads_ahead_while_waiting = False

    @property
    def batch_size(self) -> int:
        """Records handed to the SDK per batch (and the next batch held meanwhile).

        A page, so that prefetching children start for a page of parents at once. A
        parent that starts them a few records ahead (``prefetch_records_ahead``) needs
        only those held, and the next ``READ_AHEAD_RECORDS_MAX`` (whose children may be
        read ahead): its records each take long to sync (a project: its tasks), and two
        batches of 100 projects would stay decoded (~40 KB each) for as long as the
        first 100 projects take.
        """
        ahead = self._parent.prefetch_records_ahead
        if ahead is None:
            return self._parent.page_size
        return max(ahead, READ_AHEAD_RECORDS_MAX)

    def begin(self) -> None:
        """A sync of the parent starts: nothing started for it yet."""
        self._reading_ahead = {}
        self._prefetched_ahead = {}

    def fail(self) -> None:
        """The parent's sync fails or stops early: what was started for it is moot."""
        # A child that both prefetches and reads ahead is discarded twice: a no-op.
        for child in self._children_that("prefetch") + self._children_that("reads_ahead"):
            child.prefetches.discard()
        self._reading_ahead = {}
        self._prefetched_ahead = {}

    def end(self) -> None:
        """The parent's sync ended (either way): no more records to read ahead for."""
        self._window = None

    def start_for_batch(self, batch: list[Record], context: Context | None) -> list[Started]:
        """Start the prefetching children's requests for ``batch``; what was started."""
        # Only prefetching children need the batch's child contexts (stories' children,
        # the derived tables and history, do not: no context is built for them).
        prefetching = self._children_that("prefetch")
        if not prefetching or self._parent.prefetch_records_ahead is not None:
            return []  # none, or started record by record (hand_over)
        contexts = [self._parent.get_child_context(record, context) for record in batch]
        return prefetch_children(prefetching, [c for c in contexts if c is not None])

    def hand_over(
        self,
        batch: list[Record],
        started: list[Started],
        context: Context | None,
        following: list[Record],
    ) -> Iterator[Record]:
        """Yield ``batch``'s records, starting what comes next before each one.

        The caller hands each record to the SDK, which syncs its children before it
        asks for the next. ``following``: the records handed over after ``batch`` (the
        next batch), whose children's listings may be read ahead meanwhile.
        ``started``: what ``start_for_batch`` started for ``batch``.
        """
        reading_ahead = self._children_that("reads_ahead")
        ahead = self._parent.prefetch_records_ahead
        prefetching = self._children_that("prefetch") if ahead is not None else []
        upcoming = [*batch, *following] if reading_ahead or prefetching else []
        for index, record in enumerate(batch):
            if reading_ahead:
                # Before this record's children are synced, so the next records' first
                # requests overlap them; and again whenever a head read ahead comes in
                # while they are synced (there may be room for another then).
                nexts = upcoming[index + 1 : index + 1 + READ_AHEAD_RECORDS_MAX]
                self._window = (nexts, context)
                self._read_ahead_children(reading_ahead, nexts, context)
                if not self._reads_ahead_while_waiting:
                    self._reads_ahead_while_waiting = True
                    self._while_waiting.add(self._read_ahead_more)
            if self._parent.reads_ahead:
                # Between two records of a parent (a task of a project) the main thread
                # is free to start the children of heads read ahead meanwhile.
                self.from_heads()
            if prefetching and ahead is not None:
                self._prefetch_ahead(prefetching, upcoming[index : index + 1 + ahead], context)
            yield record
            # Read ahead for this record but not taken (a child the SDK did not sync,
            # or that decided not to list): nobody will take it now.
            gid = str(record.get("gid"))
            for prefetches, key, handle in [
                *self._reading_ahead.pop(gid, []),
                *self._prefetched_ahead.pop(gid, []),
            ]:
                prefetches.forget(key, handle)
        # Fetches of this batch nobody took (a child the SDK did not sync for some
        # record) would otherwise keep running and hold their results.
        for prefetches, key, handle in started:
            prefetches.forget(key, handle)

    def from_heads(self) -> None:
        """Start the prefetching children of records in heads read ahead as whole listings.

        A small parent's whole listing read ahead (a project of 5 tasks): its records'
        children (their stories) are requested now, not when the SDK reaches that
        parent, or each small parent costs a round trip of its own. Only for records
        the parent expects to emit there (``expected_from_head``); one it does not
        (emitted under another parent after all) costs a request, never a record:
        whatever the SDK syncs takes its fetch, or lists anew. At most
        ``EXPANDED_FETCHES_MAX`` are outstanding; what the parent's sync did not take is
        stopped when it ends (``Prefetches.release``).
        """
        prefetching = self._children_that("prefetch")
        if not prefetching:
            return
        parent = self._parent
        prefetches = parent.prefetches
        for key, context, records in prefetches.heads_read():
            if prefetches.expanded_fetches >= EXPANDED_FETCHES_MAX:
                return
            contexts = [
                parent.get_child_context(record, context)
                for record in records
                if parent.expected_from_head(record, key)
            ]
            prefetches.expanded(
                key, prefetch_children(prefetching, [c for c in contexts if c is not None])
            )

    def _children_that(self, flag: str) -> list[Child]:
        """The child streams whose class sets ``flag`` (``prefetch``, ``reads_ahead``).

        Asked for every batch; the children and their flags are fixed once the tap has
        built its streams, so the answer is kept.
        """
        if flag not in self._children_by_flag:
            self._children_by_flag[flag] = [
                t.cast("Child", c) for c in self._parent.child_streams if getattr(c, flag, False)
            ]
        return self._children_by_flag[flag]

    def _prefetch_ahead(
        self, children: list[Child], records: list[Record], context: Context | None
    ) -> None:
        """Start the prefetching children's requests for ``records`` not started yet."""
        for record in records:
            gid = str(record.get("gid"))
            if gid in self._prefetched_ahead:
                continue
            child_context = self._parent.get_child_context(record, context)
            self._prefetched_ahead[gid] = (
                prefetch_children(children, [child_context]) if child_context is not None else []
            )

    def _read_ahead_children(
        self, children: list[Child], records: list[Record], context: Context | None
    ) -> None:
        """Start the reading-ahead children's first pages for ``records`` (not yet started).

        A child may not be ready to list a record yet (what decides its listing is
        found at its first parent): it is asked again before the next record.
        """
        for position, record in enumerate(records):
            gid = str(record.get("gid"))
            if gid in self._reading_ahead:
                continue
            if position >= READ_AHEAD_RECORDS and not has_room_for_head(children):
                break
            child_context = self._parent.get_child_context(record, context)
            if child_context is None:
                continue
            started = read_ahead(children, child_context)
            if started:
                self._reading_ahead[gid] = started
        for child in children:
            child.prefetch_from_heads()

    def _read_ahead_more(self) -> None:
        """Read ahead for the next records, if there is room now (a chore while waiting)."""
        if self._window is not None:
            self._read_ahead_children(self._children_that("reads_ahead"), *self._window)
