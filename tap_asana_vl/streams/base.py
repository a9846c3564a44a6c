"""The base stream: which records a stream emits, and what its children get of them.

- **Records**: unchanged ones (Asana's ``modified_since`` is inclusive) and repeats
  (multi-homed tasks, users of several workspaces) are dropped, config filters apply
  (``accept``), unreadable objects are skipped and named in the summary.
- **Children** get what they need of a record in the context its stream passes them
  (``get_child_context``; tap-github style), never by reading another stream; a child
  decides from that context alone whether it has anything to fetch (``wanted``), and
  children that cost a request per parent are fetched ahead of time, and the first page
  of those with many records per parent is read ahead for the next parents
  (``children_ahead.py``, ``prefetch.py``).
- **Hooks** around each record's children (``before_children``, ``after_children``)
  and after a context's last record (``after_emit``), for progress lines and for state
  a stream keeps itself.
- **Summary**: one line per stream at the end of the run.

How records are read from Asana is in ``listing.py``.
"""

from __future__ import annotations

import calendar
import logging
import typing as t
from functools import cached_property

from singer_sdk.exceptions import FatalAPIError

from tap_asana_vl import asana_urls, sdk_adapter
from tap_asana_vl.errors import ScopeMissingError, SkippedObjectError
from tap_asana_vl.gid_table import GidTable
from tap_asana_vl.streams.children_ahead import ChildrenAhead
from tap_asana_vl.streams.listing import AsanaListing
from tap_asana_vl.streams.prefetch import Prefetches, Started
from tap_asana_vl.timestamps import parse_timestamp

if t.TYPE_CHECKING:
    import datetime
    from collections.abc import Callable, Iterable, Iterator, Mapping

    from singer_sdk import Tap, metrics
    from singer_sdk.helpers.types import Context

T = t.TypeVar("T")
M = t.TypeVar("M", bound="metrics.Meter")

#: Why each tolerated refusal skips an object, as the summary says it.
SKIP_REASONS = {402: "premium feature", 403: "no access", 404: "not found"}


class AsanaStream(AsanaListing):
    """Base class of every Asana stream."""

    #: Context key under which this stream hands each record's gid to its children.
    child_context_key: t.ClassVar[str | None] = None
    #: Emit each gid at most once per run (objects reachable from several parents).
    deduplicate: t.ClassVar[bool] = False
    #: Fetch this (child) stream for a whole batch of parents concurrently, ahead of
    #: the SDK asking for it parent by parent. For per-parent children such as stories.
    prefetch: t.ClassVar[bool] = False
    #: Start the prefetching children's requests this many records ahead of the record
    #: the SDK syncs, instead of for the whole batch and the next one (None). For a
    #: parent whose records each take long to sync (a project: its tasks), children
    #: prefetched for two batches of 100 projects would be held, decoded, for as long
    #: as the first 200 projects take (~14 MiB, measured): a few ahead keep the
    #: requests under way as well. Such a parent also hands its records over in
    #: small batches (``ChildrenAhead.batch_size``), not of a page.
    prefetch_records_ahead: t.ClassVar[int | None] = None
    #: Start the first page of this (child) stream's listing for the next parents while
    #: the SDK syncs it for the current one (see prefetch.py): for children with many
    #: records per parent (a project's tasks), whose first request would otherwise wait
    #: until the previous parent's last records (and their children) are written.
    reads_ahead: t.ClassVar[bool] = False
    #: Synced once per parent record (per task, per project): log totals, not each sync.
    per_parent: t.ClassVar[bool] = False
    #: Also synced once per workspace, with the context ``{"workspace_gid": …}``, after
    #: that workspace's other streams: for changes no parent record reveals (subtasks
    #: edited under unchanged tasks). The workspaces stream runs these sweeps.
    sweeps_each_workspace: t.ClassVar[bool] = False
    #: Keys of its state entry (and of each partition's) that make a run leave out
    #: records unchanged since: cleared when a stream fed by its records is newly
    #: selected (selection.py). Empty: its state leaves nothing out.
    bookmark_keys: t.ClassVar[tuple[str, ...]] = ()
    #: Sweep after the other sweeps (for a table completed from what they emitted).
    sweeps_last: t.ClassVar[bool] = False
    #: Read in full on every run, per workspace or per project (``full_reads.WORKSPACE``,
    #: ``PROJECT``): rows gone from Asana are then marked by one ACTIVATE_VERSION at the
    #: end of a run that read the stream completely (see full_reads.py).
    full_read_level: t.ClassVar[str | None] = None
    #: Lists every project of a workspace itself (not under ``projects``): the projects
    #: it lists count as seen by the complete reads, and its skips as theirs.
    lists_projects: t.ClassVar[bool] = False
    #: Whether records may hold compact user objects (``{"gid", "resource_type": "user"}``
    #: at any depth), walked for the users table. Off for the flat rows the tap builds:
    #: they name users by gid only (``user_gids``).
    holds_user_objects: t.ClassVar[bool] = True

    #: The setting that turns this stream off when false (``include_attachments``):
    #: selected, it then reads and writes nothing.
    switch_setting: t.ClassVar[str | None] = None

    def switched_off(self) -> bool:
        """Whether ``switch_setting`` or the OAuth scopes keep this stream from reading."""
        off = self.switch_setting is not None and not self.config.get(self.switch_setting, True)
        return off or self.scope_off is not None

    @property
    def runs(self) -> bool:
        """Whether this stream runs: selected, or read for a selected stream below it."""
        return bool(self.selected or self.has_selected_descendents)

    def covers(self) -> list[str]:
        """What this run writes of this stream, as a bookmarks record names it (selection.py)."""
        return [self.name] if self.selected and not self.switched_off() else []

    def refused_in_run(self) -> bool:
        """Whether Asana refused this stream during the run (scopes, a paid feature)."""
        return self.scope_off is not None or bool(self._unavailable_in)

    def start_over(self) -> None:
        """Forget what makes a run leave records out (``bookmark_keys``), as a first run.

        For a newly selected stream fed by this one's records (selection.py).
        """
        sdk_adapter.clear_state_keys(self, self.bookmark_keys)

    @property
    def offers_state(self) -> bool:
        """Whether the SDK offers the tap's whole state when a sync of this stream ends.

        Not for a child stream without a bookmark (derived tables, sections,
        attachments …, synced once per task or project): its sync moves no bookmark,
        yet each offer encodes the whole state (state_output.py), ~7 ms at 2,000
        projects. What such a stream keeps in the state itself (an events token, a
        walk's date) goes out with the next offer: that of a stream with a bookmark, or
        the run's end. Every STATE written is still one offered, so it covers only
        records already written; a failing run's checkpoint may be a little older.
        """
        return self.replication_key is not None or self.parent_stream_type is None

    def __init__(self, tap: Tap, *args: t.Any, **kwargs: t.Any) -> None:
        """Set up per-run bookkeeping."""
        super().__init__(tap, *args, **kwargs)
        #: gid -> ``modified_at`` as emitted, of records this run may deliver again, both
        #: compact (``gid_key``, ``_stamp``: ints) in a table of flat arrays.
        self._emitted = GidTable()
        self._after_emit: list[Callable[[], None]] = []
        self._unavailable_in: set[str] = set()
        #: The parent whose sync of this stream runs now (for ``prefetch_from_heads``).
        self._syncing: str | None = None
        if self.reads_ahead:
            # A head read ahead is expanded as it comes in, whatever the main thread waits for.
            self.services.while_waiting.add(self.prefetch_from_heads)
        if self.per_parent or self.prefetch:
            sdk_adapter.quiet_per_parent_stream(self)

    # --- Records -------------------------------------------------------------------------

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Yield the records to emit, a batch at a time, one batch read ahead.

        Before a batch is handed to the SDK (which syncs each record's children inline,
        one after the other), the requests of prefetching children (e.g. each task's
        stories) are started for the whole batch on the shared thread pool, and so are
        those of the next batch (its page is listed first): while the SDK waits for the
        last children of one batch, the next batch's are already under way, so the
        number of requests in flight never drains to the listing's one request at a
        time (a parent with ``prefetch_records_ahead`` starts them a few records ahead
        instead). Children that read ahead (each project's tasks) get the first page of
        their listing for the next records started before this record's children are
        synced (``ChildrenAhead.hand_over``), so a parent boundary does not drain it either. The SDK
        still writes every message from this thread, in its usual order, so output and
        state stay exactly as in a sequential run; only the waiting overlaps.
        """
        self._after_emit = []
        self.children_ahead.begin()
        self._syncing = self.prefetch_key(context) if self.reads_ahead else None
        progress = self.services.progress
        if self.context_label is None or self.context_label[0] == "workspace":
            # What the heartbeat names during a long listing; per-project and per-task
            # streams run under the project line (see ProjectsStream).
            progress.doing(f"'{self.name}' for {self._context_description(context)}")
        try:
            ahead: tuple[list[dict[str, t.Any]], list[Started]] | None = None
            batch_size = self.children_ahead.batch_size
            for batch in _batched(self._records_to_emit(context), batch_size):
                started = self.children_ahead.start_for_batch(batch, context)
                if ahead is not None:
                    yield from self._hand_over(*ahead, context, following=batch)
                ahead = (batch, started)
            if ahead is not None:
                yield from self._hand_over(*ahead, context, following=[])
            # Every record is written now, so state that covers them may move forward.
            for callback in self._after_emit:
                callback()
            if not self.offers_state:
                sdk_adapter.skip_state_offer(self)
        except BaseException:
            # Failing or stopped early: children prefetched for this batch are moot.
            self.children_ahead.fail()
            raise
        finally:
            self.children_ahead.end()
            if self._syncing is not None:
                # Children started for this parent's head and not taken: nobody will.
                self.prefetches.release(self._syncing)
                self._syncing = None

    def _hand_over(
        self,
        batch: list[dict[str, t.Any]],
        started: list[Started],
        context: Context | None,
        following: list[dict[str, t.Any]],
    ) -> Iterator[dict[str, t.Any]]:
        """Yield ``batch`` to the SDK, which syncs each record's children and writes it.

        ``following``: the records handed over after it (the next batch), whose
        children's work may be started meanwhile (``ChildrenAhead.hand_over``).
        """
        self.stats.records += len(batch)
        if self.selected:
            self.services.progress.count_records(self.name, len(batch))
            self._note_user_references(batch)
        for record in self.children_ahead.hand_over(batch, started, context, following):
            self.before_children(record, context)
            yield record
            # The SDK asks for the next record only once this one's children
            # are synced and the record is written.
            self.after_children(record, context)
        self.services.heap.batch_written()

    def prefetch_from_heads(self) -> None:
        """Start the prefetching children of records in heads read ahead as whole listings.

        See ``ChildrenAhead.from_heads``; a chore while the main thread waits, too.
        """
        self.children_ahead.from_heads()

    def expected_from_head(self, record: dict[str, t.Any], key: str) -> bool:  # noqa: ARG002
        """Whether ``record``, read ahead for parent ``key``, may be emitted in this run.

        Not one emitted already (override to tell more, e.g. one unchanged). A record
        emitted under an earlier parent after all (a task in two projects) costs
        nothing extra if that parent lists the same copy: its children's fetch is taken
        there. A newer copy (edited since) has them fetched anew (``prefetch_children``).
        """
        return gid_key(record.get("gid")) not in self._emitted and self.accept(record)

    def _note_user_references(self, batch: list[dict[str, t.Any]]) -> None:
        """Tell the run which users the records about to be emitted reference."""
        references = self.services.user_references
        if references.enabled:
            for record in batch:
                if self.holds_user_objects:
                    references.note_record(record)
                references.note_gids(self.user_gids(record))

    def user_gids(self, record: dict[str, t.Any]) -> Iterable[str]:  # noqa: ARG002
        """Users a record names by gid only, outside compact references (override)."""
        return ()

    def before_children(self, record: dict[str, t.Any], context: Context | None) -> None:
        """Hook: ``record`` is about to be handed to the SDK, which syncs its children."""

    def after_children(self, record: dict[str, t.Any], context: Context | None) -> None:
        """Hook: ``record``'s children are synced and the record is written."""

    def after_emit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once every record of the current context is written.

        For state a stream keeps itself (e.g. a search high-water mark): updating it
        earlier could let a STATE message pass records not yet written.
        """
        self._after_emit.append(callback)

    def _records_to_emit(self, context: Context | None) -> Iterator[dict[str, t.Any]]:
        """Records from Asana minus unreadable objects, repeats and already-synced ones."""
        if self.scope_off is not None or (
            self.parent_stream_type is not None and not self.wanted(context or {})
        ):
            if self.prefetch or self.reads_ahead:
                self.prefetches.drop(self.prefetch_key(context))
            return
        # Asana's `modified_since` is inclusive, so the record(s) that set the previous
        # bookmark come back every run. They were delivered then; dropping them keeps a
        # no-change re-sync from re-requesting their children.
        bound = self._previous_bookmark(context)
        key = self.replication_key
        try:
            for record in self.source_records(context):
                value = record.get(key) if bound is not None and key else None
                if value and parse_timestamp(value) <= bound and not self.always_emit(record):
                    self.stats.unchanged_dropped += 1
                    self.on_unchanged(record, context)
                    continue
                if not self.accept(record) or self._is_repeat(record, context):
                    continue
                yield record
        except SkippedObjectError as exc:
            if self.parent_stream_type is None:
                # Only a child of a known parent may be skipped; a top-level listing
                # that answers 403/404 means a wrong api_url or token: nothing to sync.
                msg = (
                    f"The top-level listing of {self.name} failed ({exc}): check "
                    f"api_url ({self.url_base}; Asana's is {asana_urls.API_URL}) and "
                    "that the token may read workspaces."
                )
                raise FatalAPIError(msg) from None
            self._skip(context, exc)
            if self.replication_key:
                # Cut off part-way: what was read must not become the bookmark, or the
                # unread pages' older changes would be skipped for good. That includes
                # repeats, which mark progress without being emitted. Records of the
                # last batch are still to be written (and will mark progress again), so
                # the progress is dropped once they are out.
                self.after_emit(lambda: sdk_adapter.drop_progress(self, context))

    def always_emit(self, record: dict[str, t.Any]) -> bool:  # noqa: ARG002
        """Whether to emit ``record`` even if its bookmark says it is unchanged.

        For records read again on purpose (a task moved without a new ``modified_at``).
        """
        return False

    def on_unchanged(self, record: dict[str, t.Any], context: Context | None) -> None:
        """Hook: ``record`` was listed but is not emitted (its bookmark says unchanged)."""

    def source_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Where records come from: the prefetched or listed pages for ``context``.

        Override for streams whose records are derived or gathered differently.
        """
        prefetched = (
            self.prefetches.take(self.prefetch_key(context))
            if self.prefetch or self.reads_ahead
            else None
        )
        return self.fetch(context or {}) if prefetched is None else prefetched

    def fetch(self, context: Context) -> Iterable[dict[str, t.Any]]:
        """The records of ``context`` from Asana (what a prefetch runs ahead of time)."""
        return self.list_records(context)

    def ready_to_read_ahead(self, context: Context) -> bool:  # noqa: ARG002
        """Whether this stream's listing for ``context`` may be started ahead now.

        Called on the main thread just before the listing is started on the pool:
        override to refuse where decisions taken at an earlier parent must come first,
        and to ready what the listing reads on the pool.
        """
        return True

    def prefetch_key(self, context: Context | None) -> str | None:
        """The parent a context is for (the gid named by ``context_label``)."""
        if self.context_label is None or not context:
            return None
        value = context.get(self.context_label[1])
        return None if value is None else str(value)

    @cached_property
    def children_ahead(self) -> ChildrenAhead:
        """The children's work this stream starts ahead of the SDK (children_ahead.py)."""
        return ChildrenAhead(self, self.services.while_waiting)

    @cached_property
    def prefetches(self) -> Prefetches:
        """Listings of this stream started ahead of time (see prefetch.py)."""
        return self.new_prefetches()

    def new_prefetches(self) -> Prefetches:
        """A set of listings started ahead of time on the run's pool (one per use)."""
        services = self.services
        return Prefetches(
            services.executor,
            self.transport.run_control,
            services.lead_executor,
            services.while_waiting,
        )

    def accept(self, record: dict[str, t.Any]) -> bool:  # noqa: ARG002
        """Whether to emit a record (override for config filters such as project_gids).

        Filtering here, before emission, also spares the record's children requests.
        """
        return True

    def _is_repeat(self, record: dict[str, t.Any], context: Context | None) -> bool:
        """True for a record already emitted in this run (multi-homed task, shared user).

        Only gids that ``may_come_again`` are remembered, so what a run keeps grows with
        the objects reachable twice, not with every object emitted.
        """
        if not self.deduplicate:
            return False
        gid = gid_key(record.get("gid"))
        if gid not in self._emitted:
            if self.may_come_again(record, context):
                self._emitted[gid] = _stamp(record.get("modified_at"))
            return False
        modified = _stamp(record.get("modified_at"))
        emitted = self._emitted[gid]
        # Forgotten once no later part of the run can deliver it (e.g. a task's last
        # project is listed), so the memory holds what is still to come, not all seen.
        last = not self.may_come_again(record, context)
        if modified is not None and emitted is not None and modified > emitted:
            # Edited after its first delivery in this run: the newer copy is a change,
            # not a repeat (dropping it would leave the older copy in the warehouse).
            self._forget_or_update(gid, modified, last=last)
            return False
        self._forget_or_update(gid, emitted, last=last)
        self.stats.duplicates_dropped += 1
        if self.replication_key and self.replication_method == "INCREMENTAL":
            # Delivered under another parent; this partition's bookmark must still pass
            # it, or every later run would list it here again and re-request its children.
            sdk_adapter.advance_bookmark(self, record, context)
        return True

    def _forget_or_update(self, gid: int | str, modified: int | None, *, last: bool) -> None:
        if last:
            del self._emitted[gid]
        else:
            self._emitted[gid] = modified

    def may_come_again(self, record: dict[str, t.Any], context: Context | None) -> bool:  # noqa: ARG002
        """Whether a later part of this run may deliver ``record`` again (``deduplicate``).

        Asked at its first delivery (False: not remembered) and at each repeat (False:
        forgotten). Override to remember fewer gids: a stream that can tell which
        records are reachable only once keeps memory flat in the number of records.
        """
        return True

    def _previous_bookmark(self, context: Context | None) -> datetime.datetime | None:
        if not (self.modified_since_param and self.replication_key):
            return None
        value = sdk_adapter.bookmark_value(self, context)
        return parse_timestamp(value) if isinstance(value, str) else None

    # --- Children ------------------------------------------------------------------------

    def get_child_context(
        self,
        record: dict[str, t.Any],
        context: Context | None,  # noqa: ARG002
    ) -> dict[str, t.Any] | None:
        """What children get of ``record``: its gid (override to pass more of it)."""
        if self.child_context_key is None:
            return None
        return {self.child_context_key: record["gid"]}

    def generate_child_contexts(
        self,
        record: dict[str, t.Any],
        context: Context | None,
    ) -> Iterable[dict[str, t.Any] | None]:
        """No child contexts for leaf streams (the SDK would warn once per record)."""
        if self.child_streams:
            yield from super().generate_child_contexts(record, context)

    def wanted(self, context: Mapping[str, t.Any]) -> bool:
        """Whether this child stream has anything to fetch for the parent of ``context``.

        Saves a request per parent where the answer is known from what the parent
        passed (no subtasks, not an organization, a paid feature this workspace lacks,
        scopes that do not allow it). Override to add reasons.
        """
        if self.scope_off is not None:
            return False
        return context.get("workspace_gid") not in self._unavailable_in

    # --- Skips and the summary -----------------------------------------------------------

    def _skip(self, context: Context | None, exc: SkippedObjectError) -> None:
        if isinstance(exc, ScopeMissingError):
            return  # the stream is off; warned once when Asana refused it
        workspace = (context or {}).get("workspace_gid")
        if exc.status in self.unavailable_statuses and workspace is not None:
            if workspace in self._unavailable_in:
                return
            # Once per workspace: the feature is off there, so stop asking.
            self._unavailable_in.add(workspace)
            what = f"workspace {workspace}"
            reason = "premium feature" if exc.status == 402 else "not offered there"
            with self.stats.lock:
                self.stats.skipped.append(f"{self.name}: {what} ({reason})")
            because = (
                "Asana says it needs a paid plan"
                if exc.status == 402
                else "Asana does not offer it in this kind of workspace"
            )
            self.logger.warning(
                "Skipping stream '%s' for %s: %s (%s)", self.name, what, because, exc
            )
            return
        what = self._context_description(context)
        entry = f"{self.name}: {what} ({SKIP_REASONS.get(exc.status, str(exc.status))})"
        with self.stats.lock:
            self.stats.skipped.append(entry)
        level = logging.DEBUG if exc.status == 404 else logging.WARNING
        self.logger.log(level, "Skipping %s for stream '%s': %s", what, self.name, exc)

    def get_http_request_counter(self) -> metrics.Counter:
        """The SDK's request counter (silent for per-parent streams, see __init__)."""
        return self._quiet(super().get_http_request_counter())

    def get_record_counter(self) -> metrics.Counter:  # type: ignore[override]
        """The SDK's record counter (silent for per-parent streams, see __init__)."""
        return self._quiet(super().get_record_counter())

    def get_sync_timer(self) -> metrics.Timer:
        """The SDK's sync timer (silent for per-parent streams, see __init__)."""
        return self._quiet(super().get_sync_timer())

    def _quiet(self, meter: M) -> M:
        if self.per_parent or self.prefetch:
            return sdk_adapter.silenced(meter)
        return meter

    def log_sync_costs(self) -> None:
        """End-of-run summary line per stream (the SDK calls this for every stream)."""
        super().log_sync_costs()
        stats = self.stats
        if not stats.requests and not stats.skipped:
            return
        self.services.logger.info(
            "Summary for '%s': %d records, %d requests, %d retries, %d rate-limited (429), "
            "%d duplicates dropped, %d unchanged dropped, %d skipped%s",
            self.name,
            stats.records,
            stats.requests,
            stats.retries,
            stats.rate_limited,
            stats.duplicates_dropped,
            stats.unchanged_dropped,
            len(stats.skipped),
            (": " + "; ".join(stats.skipped)) if stats.skipped else "",
        )


def gid_key(gid: object) -> int | str:
    """A gid as a run's memory keeps it: an int where it is one (Asana's are digits).

    32 bytes instead of its ~65-byte string, and a new object, not one of a record's
    strings left behind among freed records.
    """
    text = str(gid)
    return int(text) if text.isascii() and text.isdigit() and text[:1] != "0" else text


def _stamp(modified: object) -> int | None:
    """A ``modified_at`` as microseconds since the epoch (None: none)."""
    if not modified:
        return None
    moment = parse_timestamp(str(modified))
    return calendar.timegm(moment.utctimetuple()) * 1_000_000 + moment.microsecond


def workspace_of(record: Mapping[str, t.Any]) -> str:
    """The workspace gid of a record (a workspace is its own)."""
    workspace = record.get("workspace")
    if isinstance(workspace, dict) and workspace.get("gid"):
        return str(workspace["gid"])
    return str(record.get("gid"))


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
