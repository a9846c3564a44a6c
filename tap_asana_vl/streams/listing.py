"""How a stream reads from Asana: requests, pagination and the skip policy.

- **Requests**: the URL, the query (``opt_fields`` from the selected schema properties,
  ``limit``, ``offset``, ``modified_since``, filters from the context), signed and sent
  by the run's transport.
- **Pagination** through the SDK's own request loop (``request_records``), also for the
  few other endpoints a stream reads (``list_endpoint``: a search, a lookup), and
  listings restarted when Asana's page cursor expires.
- **Skip policy**: which refusals skip one object (``tolerated_statuses``,
  ``unavailable_statuses``), and the OAuth scope refusal that turns a stream off.

What is done with the records (filters, children, summary) is in ``base.py``.
"""

from __future__ import annotations

import logging
import threading
import typing as t
from dataclasses import dataclass
from functools import cached_property

import requests
from singer_sdk import RESTStream, SchemaDirectory, StreamSchema
from singer_sdk.exceptions import FatalAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel

import tap_asana_vl.streams.purge as purge
from tap_asana_vl import __version__, schemas
from tap_asana_vl.errors import (
    ExpiredOffsetError,
    RefusedError,
    ScopeMissingError,
    SkippedObjectError,
)
from tap_asana_vl.scopes import fix_hint
from tap_asana_vl.streams.paging import AsanaPaginator, opt_fields_for
from tap_asana_vl.timestamps import format_timestamp
from tap_asana_vl.transport import RequestStats, error_message, response_body

if t.TYPE_CHECKING:
    import datetime
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from concurrent.futures import Executor

    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context
    from singer_sdk.streams.rest import HTTPRequest, PageContext

    from tap_asana_vl.auth import AsanaAuthenticator
    from tap_asana_vl.heap import HeapTrimmer
    from tap_asana_vl.progress import RunProgress
    from tap_asana_vl.rate_limit import RateLimiter
    from tap_asana_vl.streams.children_plan import ChildrenPlans
    from tap_asana_vl.streams.prefetch import WhileWaiting
    from tap_asana_vl.streams.purge import Purges
    from tap_asana_vl.timestamps import ServerClock
    from tap_asana_vl.transport import Transport
    from tap_asana_vl.user_refs import UserReferences

# Times a listing is started over after its pagination token expired.
MAX_LISTING_RESTARTS = 3
# Context key under which ``list_endpoint`` hands another endpoint to the request loop.
ENDPOINT = "__endpoint__"
#: The Singer column that marks a deleted object (set by the tap, never asked of Asana);
#: defined with the tombstones' table version in purge.py.
DELETED_AT = purge.DELETED_AT


class RunServices(t.Protocol):
    """What streams use of the tap that runs them (``TapAsanaVl`` provides it)."""

    logger: logging.Logger

    @property
    def transport(self) -> Transport:
        """The run's one transport."""

    @property
    def executor(self) -> Executor:
        """The pool that prefetches children."""

    @property
    def lead_executor(self) -> Executor:
        """The pool that reads the next parents' first pages ahead."""

    @property
    def while_waiting(self) -> WhileWaiting:
        """Chores the main thread does while it waits for a fetch started ahead."""

    @property
    def progress(self) -> RunProgress:
        """The run's progress lines."""

    @property
    def heap(self) -> HeapTrimmer:
        """Gives freed memory back to the system between batches."""

    @property
    def streams(self) -> Mapping[str, t.Any]:
        """Every stream of the run by name (tombstones are written to other streams)."""

    @property
    def user_references(self) -> UserReferences:
        """Users referenced by the run's emitted records (see user_refs.py)."""

    @property
    def purges(self) -> Purges:
        """The run's tombstones and ACTIVATE_VERSIONs (see purge.py)."""

    @property
    def children_plans(self) -> ChildrenPlans:
        """Which projects' children the run re-reads (see project_children.py)."""

    @property
    def tasks_from_scratch(self) -> dict[str, datetime.datetime]:
        """Workspaces whose every task this run emits (``changed_tasks.holds_no_bookmark``).

        Workspace gid -> Asana's time before its first listing.
        """

    @property
    def search_pacer(self) -> RateLimiter:
        """Slots for Asana's task search (its own 60 requests per minute)."""

    @property
    def server_clock(self) -> ServerClock:
        """Asana's clock, as its answers' ``Date`` headers show it."""


@dataclass(frozen=True)
class Endpoint:
    """Another endpoint a stream lists (search, a lookup): path and full query."""

    path: str
    params: Mapping[str, t.Any]


class StreamStats(RequestStats):
    """What one stream did during a run, for the end-of-run summary."""

    def __init__(self) -> None:
        """All counters start at zero."""
        super().__init__()
        self.skipped: list[str] = []
        self.records = 0
        self.duplicates_dropped = 0
        self.unchanged_dropped = 0


class AsanaListing(RESTStream[str]):
    """Reads an Asana list endpoint (``GET`` returning ``{"data": [...]}``)."""

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
    #: Name of the server-side "changed since" filter for incremental streams.
    modified_since_param: t.ClassVar[str | None] = None
    #: Record properties the tap adds itself, from the stream context (e.g. the parent's
    #: gid, when the endpoint's records carry no link to it); never requested from Asana.
    tap_fields: t.ClassVar[frozenset[str]] = frozenset()
    #: What a context is called in messages, and its key: ``("project", "project_gid")``.
    context_label: t.ClassVar[tuple[str, str] | None] = None
    #: Fields the tap uses itself (children, filters), requested even when deselected.
    required_fields: t.ClassVar[frozenset[str]] = frozenset({"workspace"})
    #: Refusals that skip one object and let the sync go on (like tap-github's
    #: ``tolerated_http_errors``): 402 a premium feature, 403 an object the token may
    #: not read, 404 one deleted since it was listed. Not for top-level streams.
    tolerated_statuses: t.ClassVar[frozenset[int]] = frozenset({402, 403, 404})
    #: Answers meaning "this feature does not exist in this workspace" (402: a paid
    #: plan is needed; 400 on a first page: e.g. teams or goals asked of a personal
    #: workspace). Such an answer turns the stream off for that workspace, one warning.
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

    def __init__(self, tap: Tap, *args: t.Any, **kwargs: t.Any) -> None:
        """Set up per-run bookkeeping; ``tap`` provides the run's shared services."""
        super().__init__(tap, *args, **kwargs)
        self.services = t.cast("RunServices", tap)
        self.stats = StreamStats()
        #: Why the OAuth scopes keep this stream from being read (None: they don't).
        self.scope_off: str | None = None
        #: Fields the granted OAuth scopes cannot read; never requested.
        self.scope_skipped_fields: frozenset[str] = frozenset()
        #: With OAuth scopes unknown, send the first request alone: if Asana refuses it
        #: for the scopes, no other request of this stream is sent.
        self.probe_first_request = False
        self._probe_lock = threading.Lock()
        self._scope_warned = False

    # --- Settings and the run's shared parts ---------------------------------------------

    @property
    def url_base(self) -> str:
        """Asana's API root (``api_url`` setting)."""
        return str(self.config["api_url"]).rstrip("/")

    @property
    def transport(self) -> Transport:
        """The run's one transport (session, pacing, retries, breaker)."""
        return self.services.transport

    @property
    def authenticator(self) -> AsanaAuthenticator:
        """One authenticator for the whole run, so one OAuth token serves all streams."""
        return self.transport.authenticator

    @property
    def requests_session(self) -> requests.Session:
        """The run's one HTTP session (its connection pool has room for every thread)."""
        return self.transport.session

    @property
    def timeout(self) -> int:
        """Per-request timeout in seconds (``request_timeout`` setting)."""
        return self.transport.timeout

    @cached_property
    def user_agent(self) -> str:
        """Identify ourselves to Asana (``user_agent`` setting overrides)."""
        return str(self.config.get("user_agent") or f"tap-asana-vl/{__version__}")

    @property
    def page_size(self) -> int:
        """Records per page (``page_size`` setting, Asana allows 1-100)."""
        return int(self.config["page_size"])

    # --- Requests ------------------------------------------------------------------------

    @cached_property
    def opt_fields(self) -> str:
        """Comma-joined ``opt_fields`` for every selected property of the schema.

        Computed on first use, after the catalog is applied, so deselected properties
        are not requested at all. A deselected stream read only for its children keeps
        every field; a selected one drops deselected properties except those the tap
        itself relies on (the SDK still leaves them out of the output).
        """
        skip = set(self.tap_fields) | self.scope_skipped_fields | {DELETED_AT}
        if self.selected:
            properties = self.schema.get("properties", {})
            skip |= {name for name in properties if not self.requests_field(name)}
        return ",".join(opt_fields_for(self.schema, skip))

    def requests_field(self, name: str) -> bool:
        """Whether ``name`` would be in ``opt_fields`` (selected, or used by the tap)."""
        if name in self.required_fields or name in self.primary_keys:
            return True
        if name == self.replication_key:
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
        """The stream's own listing, or the endpoint ``list_endpoint`` put in the context."""
        request = super().get_http_request(page=page)
        context = page.stream_context or {}
        endpoint: Endpoint | None = context.get(ENDPOINT)
        if endpoint is not None:
            request.url = f"{self.url_base}{endpoint.path}"
            params = dict(endpoint.params)
        else:
            params = {param: context[key] for param, key in self.context_params.items()}
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

        Requests are signed when sent, inside the transport's retry loop, so a token
        refresh that fails transiently (token endpoint 5xx or timeout) is retried with
        backoff like the request that needed it, instead of failing the run.
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

    def validate_response(self, response: requests.Response) -> None:
        """Sort the answer (``Transport.check``), then apply this stream's skip policy.

        A refusal this stream tolerates skips the object; any other is fatal. A refusal
        for the token's OAuth scopes turns the whole stream off.
        """
        self.services.server_clock.saw(response.headers.get("Date"))
        try:
            self.transport.check(response, listing=self.name)
        except ScopeMissingError as exc:
            # No other request of this stream would fare better. Warned here, not where
            # the error is caught: the stream's other contexts (and the one whose
            # prefetch failed) now end before reaching _skip.
            self.scope_off = exc.reason
            self._warn_scopes_once(exc)
            raise
        except RefusedError as exc:
            if self.tolerates(exc):
                raise SkippedObjectError(exc.status, str(exc)) from None
            raise

    def _warn_scopes_once(self, exc: ScopeMissingError) -> None:
        """One warning, and one summary entry, when the scopes turn this stream off."""
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

    def tolerates(self, refusal: RefusedError) -> bool:
        """Whether a refusal skips the object: the skip policy (see the class flags).

        A 400 means "not offered here" only on a first page: on a later page of a
        listing that started fine it is something else, and must not truncate it.
        """
        if refusal.status == 400:
            return 400 in self.unavailable_statuses and refusal.first_page
        return refusal.status in self.tolerated_statuses | self.unavailable_statuses

    def response_error_message(self, response: requests.Response) -> str:
        """Status, path and Asana's own error text, never headers or tokens."""
        return error_message(response)

    def parse_response(self, response: requests.Response) -> Iterable[dict[str, t.Any]]:
        """Records are the ``data`` of the (already parsed) body (one object: itself).

        A page's records are taken out of the parsed body as they are handed on: the
        SDK keeps the response until the next page is in, so the whole page would
        otherwise stay decoded while the next is parsed (two pages of 100 projects:
        ~8 MB of Python objects).
        """
        data = response_body(response)["data"]
        if not isinstance(data, list):
            return [t.cast("dict[str, t.Any]", data)]
        return _taken_out(data)

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

    # --- Listings ------------------------------------------------------------------------

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

    def list_endpoint(self, path: str, params: Mapping[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        """Records of another endpoint (``params`` is its whole query but ``offset``).

        Read through this stream's request loop: same auth, pacing, retries, skip
        policy and pagination checks as its own listing.
        """
        return self.list_records({ENDPOINT: Endpoint(path, params)})

    def _context_description(self, context: Mapping[str, t.Any] | None) -> str:
        if self.context_label and context and self.context_label[1] in context:
            label, key = self.context_label
            return f"{label} {context[key]}"
        if context and "workspace_gid" in context:
            return f"workspace {context['workspace_gid']}"
        return self.path


def _taken_out(records: list[dict[str, t.Any]]) -> Iterator[dict[str, t.Any]]:
    """Yield ``records`` in order, removing each from the list as it is yielded."""
    records.reverse()
    while records:
        yield records.pop()
