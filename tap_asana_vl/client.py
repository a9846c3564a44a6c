"""The base stream every Asana stream derives from.

Everything that is the same for all Asana endpoints lives here, once: the base URL, the
shared authenticator and rate limiter, ``limit``/``offset`` pagination, ``opt_fields``
derived from the stream's JSON schema, ``modified_since`` incremental filtering, error
handling and retries, de-duplication and the end-of-run summary. Streams in
``streams.py`` only declare their path, parent and a few flags.
"""

from __future__ import annotations

import datetime
import logging
import threading
import typing as t
from functools import cached_property

import requests
from singer_sdk import RESTStream, SchemaDirectory, StreamSchema, metrics
from singer_sdk.exceptions import FatalAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.pagination import BaseAPIPaginator

from tap_asana_vl import __version__, schemas
from tap_asana_vl.errors import (
    ExpiredOffsetError,
    PaginationLoopError,
    RefusedError,
    ScopeMissingError,
    SkippedObjectError,
)
from tap_asana_vl.scopes import fix_hint
from tap_asana_vl.transport import RequestStats, error_message, response_body

T = t.TypeVar("T")
M = t.TypeVar("M", bound=metrics.Meter)

# Metrics logger for meters whose per-parent lines are replaced by the run summary.
_SILENT_METRICS = logging.getLogger("tap_asana_vl.per_parent_metrics")
_SILENT_METRICS.disabled = True

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from concurrent.futures import Future

    from singer_sdk.helpers.types import Context
    from singer_sdk.streams.rest import HTTPRequest, PageContext

    from tap_asana_vl.auth import AsanaAuthenticator
    from tap_asana_vl.tap import TapAsanaVl
    from tap_asana_vl.transport import Transport

DEFAULT_API_URL = "https://app.asana.com/api/1.0"
DEFAULT_PAGE_SIZE = 100  # Asana's maximum
DEFAULT_REQUEST_TIMEOUT = 300
DEFAULT_MAX_RETRIES = 8

# Statuses where the object (a project we may not read, a premium-only feature, a task
# deleted since it was listed) is unavailable but the rest of the sync is fine.
SKIPPABLE_STATUSES = {402: "premium feature", 403: "no access", 404: "not found"}
# Times a listing is started over after its pagination token expired.
MAX_LISTING_RESTARTS = 3


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _workspace_of(record: Mapping[str, t.Any]) -> str:
    """The workspace gid of a record (a workspace is its own)."""
    workspace = record.get("workspace")
    if isinstance(workspace, dict) and workspace.get("gid"):
        return str(workspace["gid"])
    return str(record.get("gid"))


def _context_key(context: Mapping[str, t.Any]) -> tuple[tuple[str, t.Any], ...]:
    return tuple(sorted(context.items()))


def parse_timestamp(value: str) -> datetime.datetime:
    """Parse an Asana (or SDK state) ISO-8601 timestamp into an aware datetime."""
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed


def format_timestamp(value: datetime.datetime) -> str:
    """Format a datetime the way Asana writes them: UTC, milliseconds, ``Z``."""
    utc = value.astimezone(datetime.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def opt_fields_for(schema: Mapping[str, t.Any], skip: Iterable[str] = ()) -> list[str]:
    """Asana ``opt_fields`` paths that return every property of a JSON schema.

    Objects with declared properties are expanded into dotted paths (``assignee.name``)
    because naming only the object returns just its gid; arrays are expanded through
    their items; anything else is requested by name.
    """
    skipped = set(skip)
    paths: list[str] = []

    def walk(node: Mapping[str, t.Any], prefix: str) -> None:
        for name, sub in sorted(node.get("properties", {}).items()):
            if not prefix and name in skipped:
                continue
            target = sub.get("items", sub) if _has_type(sub, "array") else sub
            if target.get("properties"):
                walk(target, f"{prefix}{name}.")
            else:
                paths.append(f"{prefix}{name}")

    walk(schema, "")
    return paths


def _has_type(schema: Mapping[str, t.Any], name: str) -> bool:
    declared = schema.get("type", [])
    return name == declared or (isinstance(declared, list) and name in declared)


def _offset_of(body: Mapping[str, t.Any]) -> str | None:
    next_page = body.get("next_page")
    if isinstance(next_page, dict) and next_page.get("offset"):
        return str(next_page["offset"])
    return None


def next_offset(body: Mapping[str, t.Any], seen: set[str]) -> str | None:
    """The offset of the page after ``body`` (None on the last page), never a repeat.

    A token seen before in the same listing means the pages cycle (A -> B -> A): without
    this check the listing would never end. ``seen`` collects this listing's tokens.
    """
    offset = _offset_of(body)
    if offset is None:
        return None
    if offset in seen:
        msg = (
            f"Asana sent a pagination token it had already sent for this listing, after "
            f"{len(seen)} pages: the pages cycle. Stopped instead of looping forever; "
            "re-run later, and report it to Asana if it persists."
        )
        raise PaginationLoopError(msg)
    seen.add(offset)
    return offset


class AsanaPaginator(BaseAPIPaginator[str]):
    """Follows ``next_page.offset``; Asana sends ``next_page: null`` on the last page.

    A page may be empty and still have a next page (records on it were filtered out or
    deleted): paging goes on, where the SDK's default would stop and lose the rest.
    """

    def __init__(self, start_value: str | None) -> None:
        """Start a listing with no token seen."""
        super().__init__(start_value)
        self._seen: set[str] = set()

    def get_next(self, response: requests.Response) -> str | None:
        """Return the opaque offset token of the next page, if any."""
        return next_offset(response_body(response), self._seen)

    def continue_if_empty(self, response: requests.Response) -> bool:
        """Keep paging past an empty page that still has a ``next_page``."""
        return _offset_of(response_body(response)) is not None


class StreamStats(RequestStats):
    """What one stream did during a run, for the end-of-run summary."""

    def __init__(self) -> None:
        """All counters start at zero."""
        super().__init__()
        self.skipped: list[str] = []
        self.records = 0
        self.duplicates_dropped = 0
        self.unchanged_dropped = 0


class AsanaStream(RESTStream[str]):
    """Base class for Asana list endpoints (``GET`` returning ``{"data": [...]}``)."""

    records_jsonpath = "$.data[*]"
    primary_keys: t.ClassVar[tuple[str, ...]] = ("gid",)
    #: One bookmark per stream whatever its parents, so state never grows with the
    #: number of tasks or projects (TasksStream opts back in to one per project).
    state_partitioning_keys: t.ClassVar[list[str] | None] = []
    schema: t.ClassVar[StreamSchema] = StreamSchema(SchemaDirectory(schemas))
    # Records are parsed from Asana's JSON, so every value already has a JSON type (and
    # Decimal serialises as a number); type conformance only cost CPU (~15 % of a
    # sync). The SDK still drops properties that are not in the schema.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    #: Query parameters filled from the stream context: ``{"workspace": "workspace_gid"}``.
    context_params: t.ClassVar[dict[str, str]] = {}
    #: Context key under which this stream hands each record's gid to its children.
    child_context_key: t.ClassVar[str | None] = None
    #: Name of the server-side "changed since" filter for incremental streams.
    modified_since_param: t.ClassVar[str | None] = None
    #: Emit each gid at most once per run (objects reachable from several parents).
    deduplicate: t.ClassVar[bool] = False
    #: Record properties the tap adds itself, from the stream context (e.g. the parent's
    #: gid, when the endpoint's records carry no link to it); never requested from Asana.
    tap_fields: t.ClassVar[frozenset[str]] = frozenset()
    #: What a skipped context is called in warnings, e.g. ``("project", "project_gid")``.
    context_label: t.ClassVar[tuple[str, str] | None] = None
    #: Fetch this (child) stream for a whole batch of parents concurrently, ahead of
    #: the SDK asking for it parent by parent. For per-parent children such as stories.
    prefetch: t.ClassVar[bool] = False
    #: Fields the tap uses itself (children, filters), requested even when deselected.
    required_fields: t.ClassVar[frozenset[str]] = frozenset({"workspace"})
    #: Synced once per parent record (per task, per project): log totals, not each sync.
    per_parent: t.ClassVar[bool] = False
    #: Answers meaning "this feature does not exist in this workspace" (402: a paid
    #: plan is needed; 400: e.g. teams or goals asked of a personal workspace). Such an
    #: answer turns the stream off for that workspace, with one warning.
    unavailable_statuses: t.ClassVar[frozenset[int]] = frozenset()
    #: OAuth scope Asana's spec requires for ``path``; None: the endpoint has no granular
    #: scope, so only a token with full permissions can read it (tests check the spec).
    required_scope: t.ClassVar[str | None] = None
    #: Fields needing further scopes, from the spec's field tables:
    #: ``{"team": ("teams:read",)}``. Left out of ``opt_fields`` when not granted.
    field_scopes: t.ClassVar[dict[str, tuple[str, ...]]] = {}
    #: For streams whose rows come from a field of the parent record (no request of
    #: their own): that field, whose scopes this stream then needs.
    from_parent_field: t.ClassVar[str | None] = None

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Set up per-run bookkeeping."""
        super().__init__(*args, **kwargs)
        self.stats = StreamStats()
        self._emitted: set[str] = set()
        self._prefetched: dict[
            tuple[tuple[str, t.Any], ...], tuple[Future[list[dict]], threading.Event]
        ] = {}
        self._after_emit: list[Callable[[], None]] = []
        self.current_record: dict[str, t.Any] | None = None
        self._unavailable_in: set[str] = set()
        #: Why the OAuth scopes keep this stream from being read (None: they don't).
        self.scope_off: str | None = None
        #: Fields the granted OAuth scopes cannot read; never requested.
        self.scope_skipped_fields: frozenset[str] = frozenset()
        #: With OAuth scopes unknown, send the first request alone: if Asana refuses it
        #: for the scopes, no other request of this stream is sent (see _scope_refused).
        self.probe_first_request = False
        self._probe_lock = threading.Lock()
        self._scope_warned = False
        if self.per_parent or self.prefetch:
            # Synced once per parent (per task): the SDK's per-sync log lines and
            # metrics would be six lines per task, most of the log, and worker threads
            # queueing on the log handler's lock halved throughput. The end-of-run
            # summary reports this stream's totals instead.
            self._LOG_REQUEST_METRICS = False
            if self.logger.getEffectiveLevel() == logging.INFO:
                self.logger.setLevel(logging.WARNING)

    # --- Wiring to the tap -------------------------------------------------------------

    @property
    def asana_tap(self) -> TapAsanaVl:
        """The tap that owns this stream (it holds the shared auth and rate limiter)."""
        return t.cast("TapAsanaVl", self._tap)

    @property
    def url_base(self) -> str:
        """Asana's API root, overridable with the ``api_url`` setting."""
        return str(self.config.get("api_url") or DEFAULT_API_URL).rstrip("/")

    @property
    def authenticator(self) -> AsanaAuthenticator:
        """One authenticator for the whole run, so one OAuth token serves all streams."""
        return self.asana_tap.authenticator

    @property
    def transport(self) -> Transport:
        """The run's one transport (session, pacing, retries, breaker)."""
        return self.asana_tap.transport

    @property
    def timeout(self) -> int:
        """Per-request timeout in seconds (``request_timeout`` setting)."""
        return int(self.config.get("request_timeout") or DEFAULT_REQUEST_TIMEOUT)

    @cached_property
    def user_agent(self) -> str:
        """Identify ourselves to Asana (``user_agent`` setting overrides)."""
        return str(self.config.get("user_agent") or f"tap-asana-vl/{__version__}")

    @property
    def page_size(self) -> int:
        """Records per page (``page_size`` setting, Asana allows 1-100)."""
        return int(self.config.get("page_size") or DEFAULT_PAGE_SIZE)

    # --- Requests ------------------------------------------------------------------------

    @cached_property
    def opt_fields(self) -> str:
        """Comma-joined ``opt_fields`` for every selected property of the schema.

        Computed on first use, after the catalog is applied, so deselected properties
        are not requested at all.
        """
        skip = set(self.tap_fields)
        # A deselected stream read only for its children keeps every field; a selected
        # one drops deselected properties except those the tap itself relies on (the
        # SDK still leaves them out of the output).
        if self.selected:
            needed = {*self.required_fields, *self.primary_keys}
            if self.replication_key:
                needed.add(self.replication_key)
            for name in self.schema.get("properties", {}):
                if name not in needed and not self.mask.get(("properties", name), True):
                    skip.add(name)
        skip |= self.scope_skipped_fields
        return ",".join(opt_fields_for(self.schema, skip))

    def requests_field(self, name: str) -> bool:
        """Whether ``name`` would be in ``opt_fields`` (selected, or used by the tap)."""
        if name in self.required_fields or name in self.primary_keys:
            return True
        return bool(self.mask.get(("properties", name), True))

    @property
    def emit_activate_version_messages(self) -> bool:
        """Never send ACTIVATE_VERSION.

        Streams such as attachments are full table *per changed task*: an
        ACTIVATE_VERSION would tell the target to delete every row not in this run.
        """
        return False

    def get_new_paginator(self) -> AsanaPaginator:
        """Follow Asana's opaque ``next_page.offset`` tokens."""
        return AsanaPaginator(None)

    def get_http_request(self, *, page: PageContext) -> HTTPRequest:
        """Add ``limit``, ``offset``, ``opt_fields`` and the context's filters."""
        request = super().get_http_request(page=page)
        context = page.stream_context or {}
        params = dict(request.params) if isinstance(request.params, dict) else {}
        params.update(
            {param: context[key] for param, key in self.context_params.items()},
        )
        params.update(self.extra_params(context))
        if self.modified_since_param:
            since = self.get_starting_timestamp(context or None)
            if since is not None:
                params[self.modified_since_param] = format_timestamp(since)
        params["limit"] = self.page_size
        params["opt_fields"] = self.opt_fields
        # None is dropped by HTTPRequest.encode_params: no offset on the first page.
        params["offset"] = page.next_page_token
        request.params = params
        # Keep opt_fields readable in URLs (debug logs, proxies); Asana decodes either.
        request.safe_query_chars = ",."
        return request

    def extra_params(self, context: Mapping[str, t.Any]) -> dict[str, t.Any]:  # noqa: ARG002
        """Stream-specific query parameters (override when config decides them)."""
        return {}

    def build_prepared_request(self, *args: t.Any, **kwargs: t.Any) -> requests.PreparedRequest:
        """Prepare a request without signing it (the SDK's version signs it here).

        Requests are signed when sent, inside ``request_decorator``'s retry loop, so a
        token refresh that fails transiently (token endpoint 5xx or timeout) is retried
        with backoff like the request that needed it, instead of failing the run.
        """
        request = requests.Request(*args, **kwargs)
        request.headers.setdefault("User-Agent", self.user_agent)
        return self.requests_session.prepare_request(request)

    def request_decorator(self, func: Callable[..., requests.Response]) -> Callable[..., t.Any]:
        """Send through the run's transport (pacing, Asana's retry rules; see transport).

        With OAuth scopes unknown, a stream's first request goes out alone: if Asana
        refuses it for the scopes, no other request of this stream is sent.
        """

        def attempt(prepared: requests.PreparedRequest, context: Context | None) -> t.Any:
            return self.transport.send(
                func, prepared, context, label=self.path, stats=self.stats, logger=self.logger
            )

        def send(prepared: requests.PreparedRequest, context: Context | None) -> t.Any:
            self._raise_if_scope_off()
            if self.probe_first_request:
                with self._probe_lock:
                    if self.probe_first_request:
                        try:
                            return attempt(prepared, context)
                        finally:
                            self.probe_first_request = False
                self._raise_if_scope_off()
            return attempt(prepared, context)

        return send

    def _raise_if_scope_off(self) -> None:
        if self.scope_off is not None:
            raise ScopeMissingError(403, self.scope_off)

    # --- Responses -----------------------------------------------------------------------

    def validate_response(self, response: requests.Response) -> None:
        """Sort Asana's answer (see ``Transport.check``), then apply this stream's skip policy.

        A refusal (400/402/403/404) this stream tolerates skips the object; any other is
        fatal. A refusal for the token's OAuth scopes turns the whole stream off.
        """
        try:
            self.transport.check(response, listing=self.name)
        except ScopeMissingError as exc:
            # No other request of this stream would fare better. Warned here, not where
            # the error is caught: the stream's other contexts (and the one whose
            # prefetch failed) now end before reaching _skip.
            self.scope_off = exc.reason
            self._skip_for_scopes(exc)
            raise
        except RefusedError as exc:
            if self.tolerates(exc):
                raise SkippedObjectError(exc.status, str(exc)) from None
            raise

    def tolerates(self, exc: RefusedError) -> bool:
        """Whether a refusal skips the object (the skip policy; fatal otherwise).

        402/403/404: a premium feature, an object we may not read, one deleted since it
        was listed. A 400 only where the stream declares it means "not offered in this
        workspace", and only on a first page: a 400 on a later page of a listing that
        started fine is something else, and must not truncate it.
        """
        if exc.status == 400:
            return 400 in self.unavailable_statuses and exc.first_page
        return exc.status in SKIPPABLE_STATUSES or exc.status in self.unavailable_statuses

    def response_error_message(self, response: requests.Response) -> str:
        """Status, path and Asana's own error text, never headers or tokens."""
        return error_message(response)

    def post_process(
        self,
        row: dict[str, t.Any],
        context: Context | None = None,
    ) -> dict[str, t.Any] | None:
        """Fill the tap's own fields (``tap_fields``) from the context."""
        for key in self.tap_fields:
            if context and key in context and row.get(key) is None:
                row[key] = context[key]
        return row

    def parse_response(self, response: requests.Response) -> Iterable[dict[str, t.Any]]:
        """Records are the ``data`` list of the (already parsed) body."""
        return t.cast("list[dict[str, t.Any]]", response_body(response)["data"])

    # --- Records -------------------------------------------------------------------------

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Yield the records to emit, a batch at a time.

        Before a batch is handed to the SDK (which syncs each record's children inline,
        one after the other), the requests of prefetching children (e.g. each task's
        stories) are started for the whole batch on the shared thread pool. The SDK
        still writes every message from this thread, in its usual order, so output and
        state stay exactly as in a sequential run; only the waiting overlaps.
        """
        self._after_emit: list[Callable[[], None]] = []
        progress = self.asana_tap.progress
        if self.context_label is None or self.context_label[0] == "workspace":
            # What the heartbeat names during a long listing; per-project and per-task
            # streams run under the project line (see ProjectsStream.get_records).
            progress.doing(f"'{self.name}' for {self._context_description(context)}")
        try:
            for batch in _batched(self._records_to_emit(context), self.page_size):
                self._prefetch_children(batch, context)
                self.stats.records += len(batch)
                if self.selected:
                    progress.count_records(self.name, len(batch))
                yield from batch
            # Every record is written now (the SDK resumed us after the last one), so
            # state that covers them may move forward.
            for callback in self._after_emit:
                callback()
        except BaseException:
            # Failing or stopped early: children prefetched for this batch are moot.
            for child in self.child_streams:
                if isinstance(child, AsanaStream):
                    child.discard_prefetched()
            raise

    def _records_to_emit(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Records from Asana minus unreadable objects, repeats and already-synced ones."""
        # Asana's `modified_since` is inclusive, so the record(s) that set the previous
        # bookmark come back every run. They were delivered then; dropping them keeps a
        # no-change re-sync from re-requesting their children.
        parent = self.parent_record()
        if self.scope_off is not None or (parent is not None and not self.wanted_for(parent)):
            self._drop_prefetched(context)
            return
        bound = self._previous_bookmark(context)
        key = self.replication_key
        try:
            for record in self.source_records(context):
                value = record.get(key) if bound is not None and key else None
                if value and parse_timestamp(value) <= bound:
                    self.stats.unchanged_dropped += 1
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
                    f"api_url ({self.url_base}; Asana's is {DEFAULT_API_URL}) and that the "
                    "token may read workspaces."
                )
                raise FatalAPIError(msg) from None
            self._skip(context, exc)
            if self.replication_key:
                # Cut off part-way: what was read must not become the bookmark, or the
                # unread pages' older changes would be skipped for good. That includes
                # repeats, which mark progress without being emitted. Records of the
                # last batch are still to be written (and will mark progress again), so
                # the progress is dropped once they are out.
                self.after_emit(
                    lambda: self.get_context_state(context).pop("progress_markers", None)
                )

    def after_emit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once every record of the current context is written.

        For state a stream keeps itself (e.g. a search high-water mark): updating it
        earlier could let a STATE message pass records not yet written.
        """
        self._after_emit.append(callback)

    def accept(self, record: dict[str, t.Any]) -> bool:  # noqa: ARG002
        """Whether to emit a record (override for config filters such as project_gids).

        Filtering here, before emission, also spares the record's children requests.
        """
        return True

    def _is_repeat(self, record: dict[str, t.Any], context: Context | None) -> bool:
        """True for a record already emitted in this run (multi-homed task, shared user)."""
        if not self.deduplicate:
            return False
        gid = str(record.get("gid"))
        if gid not in self._emitted:
            self._emitted.add(gid)
            return False
        self.stats.duplicates_dropped += 1
        if self.replication_key and self.replication_method == "INCREMENTAL":
            # Delivered under another parent; this partition's bookmark must still pass
            # it, or every later run would list it here again and re-request its children.
            self.state_manager.increment_state(
                record, context=context, replication_key=self.replication_key
            )
        return True

    def _previous_bookmark(self, context: Context | None) -> datetime.datetime | None:
        if not (self.modified_since_param and self.replication_key):
            return None
        value = self.get_context_state(context).get("replication_key_value")
        return parse_timestamp(value) if isinstance(value, str) else None

    def _skip(self, context: Context | None, exc: SkippedObjectError) -> None:
        if isinstance(exc, ScopeMissingError):
            return  # the stream is off; warned once when Asana refused it
        parent = self.parent_record()
        if exc.status in self.unavailable_statuses and parent is not None:
            workspace = _workspace_of(parent)
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
        reason = SKIPPABLE_STATUSES.get(exc.status, str(exc.status))
        entry = f"{self.name}: {what} ({reason})"
        with self.stats.lock:
            self.stats.skipped.append(entry)
        level = logging.DEBUG if exc.status == 404 else logging.WARNING
        self.logger.log(level, "Skipping %s for stream '%s': %s", what, self.name, exc)

    def _skip_for_scopes(self, exc: ScopeMissingError) -> None:
        """One warning, then the stream is off for the run (``scope_off`` is set)."""
        with self.stats.lock:
            if self._scope_warned:
                return
            self._scope_warned = True
            self.stats.skipped.append(f"{self.name}: whole stream (OAuth scopes)")
        self.logger.warning(
            "Skipping stream '%s' for the rest of this run: Asana refused it for the "
            "token's OAuth scopes (%s). Fix: %s, or deselect the stream.",
            self.name,
            exc,
            fix_hint([]),
        )

    # --- Concurrent children -------------------------------------------------------------

    def _prefetch_children(self, records: list[dict[str, t.Any]], context: Context | None) -> None:
        for child in self.child_streams:
            if not isinstance(child, AsanaStream) or not child.prefetch:
                continue
            if not (child.selected or child.has_selected_descendents):
                continue
            child.discard_prefetched()
            for record in records:
                if not child.wanted_for(record):
                    continue
                child_context = self.get_child_context(record, context)
                if child_context is not None:
                    child.start_prefetch(child_context)
            self.current_record = None

    def start_prefetch(self, context: Mapping[str, t.Any]) -> None:
        """Start fetching every page for ``context`` on the shared pool."""
        cancelled = threading.Event()

        def fetch() -> list[dict[str, t.Any]]:
            with self.transport.run_control.cancellable(cancelled):
                return list(self.list_records(dict(context)))

        future = self.asana_tap.executor.submit(fetch)
        self._prefetched[_context_key(context)] = (future, cancelled)

    def _drop_prefetched(self, context: Context | None) -> None:
        prefetched = self._prefetched.pop(_context_key(context or {}), None)
        if prefetched is not None:
            prefetched[1].set()
            prefetched[0].cancel()

    def discard_prefetched(self) -> None:
        """Stop prefetches nobody will consume (a failing run, filtered-out parents)."""
        for future, cancelled in self._prefetched.values():
            cancelled.set()
            future.cancel()
        self._prefetched.clear()

    @property
    def parent_stream(self) -> AsanaStream | None:
        """The parent stream's instance in this tap (None for top streams)."""
        if self.parent_stream_type is None:
            return None
        parent = self._tap.streams.get(self.parent_stream_type.name)
        return parent if isinstance(parent, AsanaStream) else None

    def parent_record(self) -> dict[str, t.Any] | None:
        """The parent record whose children are being synced (None for top streams)."""
        parent = self.parent_stream
        return parent.current_record if parent is not None else None

    def wanted_for(self, parent: dict[str, t.Any]) -> bool:
        """Whether this child stream has anything to fetch for ``parent``.

        Saves a request per parent where the answer is known (no subtasks, not an
        organization, a paid feature this workspace lacks, scopes that do not allow
        it). Override to add reasons.
        """
        if self.scope_off is not None:
            return False
        return _workspace_of(parent) not in self._unavailable_in

    def source_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Where records come from: the prefetched or listed pages for ``context``.

        Override for streams whose records are derived or gathered differently.
        """
        return self._fetch_or_prefetched(context)

    def _fetch_or_prefetched(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        prefetched = self._prefetched.pop(_context_key(context or {}), None)
        if prefetched is None:
            return self.list_records(context)
        try:
            return prefetched[0].result()
        except SkippedObjectError:
            raise  # one unreadable object; the other prefetches are still wanted
        except BaseException:
            # The run is about to fail: don't leave other prefetches running.
            self.discard_prefetched()
            raise

    def get_body(self, path: str, params: Mapping[str, t.Any]) -> dict[str, t.Any]:
        """One GET outside the stream's own listing, with the usual auth, pacing, retries.

        For lookups and endpoints that do not fit the listing pattern (single
        objects, Asana's search API). Raises ``SkippedObjectError`` for 402/403/404.
        """
        prepared = self.build_prepared_request(
            method="GET",
            url=f"{self.url_base}{path}",
            params={k: v for k, v in params.items() if v is not None},
            headers=self.http_headers,
        )

        def send_once(request: requests.PreparedRequest, _context: Context | None) -> t.Any:
            response = self.requests_session.send(self.authenticator(request), timeout=self.timeout)
            self.validate_response(response)
            return response

        return response_body(self.request_decorator(send_once)(prepared, None))

    def iter_data(self, path: str, params: Mapping[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        """Every record of a paginated listing other than the stream's own."""
        offset = None
        seen: set[str] = set()
        while True:
            body = self.get_body(path, {**params, "limit": self.page_size, "offset": offset})
            yield from body["data"]
            offset = next_offset(body, seen)
            if offset is None:
                return

    def fetch_object(self, path: str, fields: str = "gid") -> dict[str, t.Any] | None:
        """GET one object (e.g. ``/projects/123``); None if Asana says 403/404."""
        try:
            return t.cast("dict[str, t.Any]", self.get_body(path, {"opt_fields": fields})["data"])
        except SkippedObjectError:
            return None

    def list_records(self, context: Context | None) -> Iterator[dict[str, t.Any]]:
        """All pages of a listing; restarted from the first page if its cursor expires.

        Asana's offset tokens expire after a while. Starting over (skipping the records
        already yielded) beats failing a run that may have been going for hours.
        """
        yielded: set[str] = set()
        for attempt in range(MAX_LISTING_RESTARTS + 1):
            try:
                for record in self.request_records(context):
                    gid = str(record.get("gid"))
                    if gid not in yielded:
                        yielded.add(gid)
                        yield record
            except ExpiredOffsetError as exc:
                what = self._context_description(context)
                if attempt == MAX_LISTING_RESTARTS:
                    msg = (
                        f"Asana kept rejecting the pagination token while listing "
                        f"{self.name} for {what} ({exc}); gave up after "
                        f"{MAX_LISTING_RESTARTS} restarts."
                    )
                    raise FatalAPIError(msg) from None
                self.logger.warning(
                    "Pagination token expired while listing %s for %s; starting that "
                    "listing over (%d records already read are not emitted twice)",
                    self.name,
                    what,
                    len(yielded),
                )
                continue
            return

    def _context_description(self, context: Mapping[str, t.Any] | None) -> str:
        if self.context_label and context:
            label, key = self.context_label
            return f"{label} {context.get(key)}"
        return self.path

    @property
    def requests_session(self) -> requests.Session:
        """The run's one HTTP session (its connection pool has room for every thread)."""
        return self.transport.session

    def get_child_context(
        self,
        record: dict[str, t.Any],
        context: Context | None,  # noqa: ARG002
    ) -> dict[str, t.Any] | None:
        """Children only need the parent's gid (the record itself stays reachable).

        The SDK syncs a record's children right after calling this, before the next
        record, so children may read ``current_record`` (see ``parent_record``).
        """
        self.current_record = record
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

    def _quiet(self, meter: M) -> M:
        if self.per_parent or self.prefetch:
            meter.logger = _SILENT_METRICS
        return meter

    def get_http_request_counter(self) -> metrics.Counter:
        """The SDK's request counter (silent for per-parent streams, see __init__)."""
        return self._quiet(super().get_http_request_counter())

    def get_record_counter(self) -> metrics.Counter:
        """The SDK's record counter (silent for per-parent streams, see __init__)."""
        return self._quiet(super().get_record_counter())

    def get_sync_timer(self) -> metrics.Timer:
        """The SDK's sync timer (silent for per-parent streams, see __init__)."""
        return self._quiet(super().get_sync_timer())

    def log_sync_costs(self) -> None:
        """End-of-run summary line per stream (the SDK calls this for every stream)."""
        super().log_sync_costs()
        stats = self.stats
        if not stats.requests and not stats.skipped:
            return
        self.asana_tap.logger.info(
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
