"""A faithful fake of the Asana REST API (read side + OAuth) on a real localhost socket.

Behaviour follows Asana's documentation (its OpenAPI spec, vendored in spec/, and its
guides on errors, pagination, input/output options, rate limits and OAuth): Asana's envelope,
opaque signed pagination tokens, ``opt_fields`` projection, Asana-worded errors,
per-token rate limiting with ``Retry-After``, and the OAuth authorization-code flow with
PKCE and refresh tokens. Test hooks: fault injection, a request log, mutation helpers
and a clock that tests can move forward (``advance_clock``) instead of sleeping.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import threading
import time
import traceback
from collections import ChainMap, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from . import scopes as scope_rules
from .dataset import (
    COMPACT_FIELDS,
    OPT_IN_FIELDS,
    Dataset,
    build_dataset,
    iso_ms,
    parse_iso_ms,
    parse_iso_us,
)

API_PREFIX = "/api/1.0"
AUTHORIZE_PATH = "/-/oauth_authorize"
TOKEN_PATH = "/-/oauth_token"
REVOKE_PATH = "/-/oauth_revoke"

HELP = (
    "For more information on API status codes and how to handle them, "
    "read the docs on errors: https://developers.asana.com/docs/errors"
)
RATE_LIMIT_MESSAGE = (
    "You've made too many requests and hit a rate limit. "
    "Please retry after the given amount of time."
)
EXPIRED_MESSAGE = (
    "The bearer token has expired. If you have a refresh token, please use it to get a new "
    "access token. Otherwise, the user must re-authorize."
)
NO_ROUTE = "No matching route for request"
TOO_LARGE = (
    "The result is too large. You should use pagination (may require specifying a workspace)!"
)
BAD_OFFSET = "offset: Your pagination token is invalid."
# 402s for workspaces without Asana's paid features. The search wording was reported
# from the live API (Asana's docs: errors); the others are modelled on it (our guess).
SEARCH_PREMIUM = "Search is only available to premium users."
PORTFOLIOS_PREMIUM = "Portfolios are only available to premium users."
GOALS_PREMIUM = "Goals are only available to premium users."
TIME_TRACKING_PREMIUM = "Time tracking is only available to premium users."
NOT_AN_ORGANIZATION = "workspace: Not an organization"
# Search answers at most this many tasks and has no next_page (see ``_search``).
SEARCH_MAX = 100
SEARCH_SORTS = ("modified_at", "created_at", "completed_at", "due_date", "likes", "relevance")
# Search filters of Asana's spec that the fake does not implement: asking for one is a
# 400 rather than a silently unfiltered answer.
_SEARCH_UNSUPPORTED = frozenset(
    {
        "text",
        "resource_subtype",
        "assignee.any",
        "assignee.not",
        "portfolios.any",
        "projects.not",
        "projects.all",
        "sections.any",
        "sections.not",
        "sections.all",
        "tags.any",
        "tags.not",
        "tags.all",
        "teams.any",
        "followers.any",
        "followers.not",
        "created_by.any",
        "created_by.not",
        "assigned_by.any",
        "assigned_by.not",
        "liked_by.not",
        "commented_on_by.not",
        "due_on.before",
        "due_on.after",
        "due_on",
        "due_at.before",
        "due_at.after",
        "start_on.before",
        "start_on.after",
        "start_on",
        "created_on.before",
        "created_on.after",
        "created_on",
        "completed_on.before",
        "completed_on.after",
        "completed_on",
        "modified_on.before",
        "modified_on.after",
        "modified_on",
        "is_blocking",
        "is_blocked",
        "has_attachment",
    }
)
JSON_TYPE = "application/json; charset=UTF-8"
# Asana serves unpaginated lists only up to about this size (Asana's docs: pagination).
MAX_UNPAGINATED = 1000
# Query parameters that do not change *which* records a list holds; everything else is
# part of the pagination fingerprint, so a token only works for the query it came from.
_NON_FILTER_PARAMS = frozenset({"limit", "offset", "opt_fields", "opt_pretty", "opt_expand"})
_TASK_FILTERS = ("project", "section", "tag", "user_task_list", "assignee", "workspace")
_DEFAULT_MESSAGES = {
    400: "Bad Request",
    401: "Not Authorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    412: "Precondition Failed",
    429: RATE_LIMIT_MESSAGE,
    451: "Unavailable For Legal Reasons",
    500: "Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_PHRASE_WORDS = (
    ("sad", "happy", "sleepy", "brave", "tiny", "grumpy"),
    ("squid", "otters", "llamas", "pandas", "ducks", "moles"),
    ("snuggle", "dance", "wander", "giggle", "hum", "nap"),
    ("softly", "boldly", "quietly", "wildly", "slowly", "gently"),
)


@dataclass
class RecordedRequest:
    """One request as the fake saw it (secrets redacted; the raw bearer token kept aside)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int
    time: float
    #: The raw bearer token (for auth assertions); kept out of ``repr``.
    token: str | None = field(default=None, repr=False)


@dataclass
class TokenRequest:
    """One call of the OAuth token endpoint (no secrets, codes or tokens are stored)."""

    grant_type: str | None
    client_id: str | None
    status: int
    error: str | None
    time: float


@dataclass
class _Client:
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: frozenset[str] | None
    #: Scopes the app is registered for; None: full permissions.
    scopes: frozenset[str] | None = None

    def accepts(self, redirect_uri: str) -> bool:
        if self.redirect_uris is not None:
            return redirect_uri in self.redirect_uris
        try:
            parts = urlsplit(redirect_uri)
            return parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1")
        except ValueError:
            return False


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str | None
    scopes: frozenset[str]
    user_gid: str
    expires_at: float


@dataclass
class _AccessToken:
    client_id: str | None
    user_gid: str
    expires_at: float
    scopes: frozenset[str] = scope_rules.FULL_ACCESS_SCOPES


@dataclass
class _Fault:
    pattern: re.Pattern[str]
    status: int
    remaining: int | None
    headers: dict[str, str | None]
    body: Any
    raw_body: bytes | None
    delay: float | None


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str | None = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


class _ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _dumps(payload: Any, pretty: bool = False) -> bytes:
    if pretty:
        return json.dumps(payload, indent=2, ensure_ascii=False).encode("utf-8")
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _phrase() -> str:
    words = [secrets.choice(group) for group in _PHRASE_WORDS]
    return f"{secrets.randbelow(9) + 2} " + " ".join(words)


def error_body(status: int, message: str) -> dict[str, Any]:
    """Asana's error envelope; 500s carry a ``phrase`` for support (Asana's docs: errors)."""
    error: dict[str, Any] = {"message": message, "help": HELP}
    if status == 500:
        error["phrase"] = _phrase()
    return {"errors": [error]}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, _dumps(error_body(status, message)), headers=headers or {})


# --------------------------------------------------------------------------- opt_fields
def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _expand(path: str) -> list[list[str]]:
    """Expand one dotted path with ``(a|b)`` groups into plain segment lists."""
    results: list[list[str]] = [[]]
    for segment in _split_top(path, "."):
        segment = segment.strip()
        if segment.startswith("(") and segment.endswith(")"):
            alternatives = [
                expanded for alt in _split_top(segment[1:-1], "|") for expanded in _expand(alt)
            ]
        else:
            alternatives = [[segment]]
        results = [r + a for r in results for a in alternatives]
    return results


def _fields(names: str) -> frozenset[str]:
    """A set of field names from a space-separated string (keeps the table below short)."""
    return frozenset(names.split())


# The top-level fields each endpoint documents in its ``opt_fields`` parameter (the
# spec's enum for it, without ``offset``/``path``/``uri``, which are pagination).
# Asana silently ignores opt_fields an endpoint does not document, and so does the fake;
# routes missing here are projected unfiltered. tests/test_fake_asana.py checks this
# table against spec/asana_oas.yaml.
_TASK_FIELDS = _fields(
    "actual_time_minutes approval_status assigned_by assignee assignee_section assignee_status "
    "completed completed_at completed_by created_at created_by custom_fields custom_type "
    "custom_type_status_option dependencies dependents due_at due_on external followers hearted "
    "hearts html_notes is_rendered_as_separator liked likes memberships modified_at name notes "
    "num_hearts num_likes num_subtasks parent permalink_url projects resource_subtype start_at "
    "start_on tags workspace"
)
_PROJECT_FIELDS = _fields(
    "archived color completed completed_at completed_by created_at created_from_template "
    "current_status current_status_update custom_field_settings custom_fields "
    "default_access_level default_view due_date due_on followers html_notes icon members "
    "minimum_access_level_for_customization minimum_access_level_for_sharing modified_at name "
    "notes owner permalink_url privacy_setting project_brief public start_on team workspace"
)
_USER_FIELDS = _fields("custom_fields email name photo workspaces")
ENDPOINT_FIELDS: dict[str, frozenset[str]] = {
    "/workspaces": _fields("email_domains is_organization name"),
    "/users": _USER_FIELDS,
    "/users/{user_gid}": _USER_FIELDS,
    "/projects": _PROJECT_FIELDS,
    "/projects/{project_gid}": _PROJECT_FIELDS,
    "/portfolios/{portfolio_gid}/items": _PROJECT_FIELDS,
    "/tasks": _TASK_FIELDS,
    "/tasks/{task_gid}": _TASK_FIELDS,
    "/tasks/{task_gid}/subtasks": _TASK_FIELDS,
    "/workspaces/{workspace_gid}/tasks/search": _TASK_FIELDS,
    "/tasks/{task_gid}/stories": _fields(
        "assignee created_at created_by custom_field dependency duplicate_of duplicated_from "
        "follower hearted hearts html_text is_editable is_edited is_pinned liked likes "
        "new_approval_status new_date_value new_dates new_enum_value new_multi_enum_values "
        "new_name new_number_value new_people_value new_resource_subtype new_section "
        "new_text_value num_hearts num_likes old_approval_status old_date_value old_dates "
        "old_enum_value old_multi_enum_values old_name old_number_value old_people_value "
        "old_resource_subtype old_section old_text_value previews project reaction_summary "
        "resource_subtype source sticker_name story tag target task text type"
    ),
    "/attachments": _fields(
        "connected_to_app created_at download_url host name parent permanent_url resource_subtype "
        "size view_url"
    ),
    "/tasks/{task_gid}/time_tracking_entries": _fields(
        "attributable_to categories created_by duration_minutes entered_on"
    ),
    "/projects/{project_gid}/sections": _fields("created_at name project projects"),
    "/projects/{project_gid}/project_memberships": _fields("access_level member parent"),
    "/projects/{project_gid}/custom_field_settings": _fields(
        "custom_field is_important parent project"
    ),
    "/status_updates": _fields(
        "author created_at created_by hearted hearts html_text liked likes modified_at num_hearts "
        "num_likes parent reaction_summary resource_subtype status_type text title"
    ),
    "/workspaces/{workspace_gid}/tags": _fields(
        "color created_at followers name notes permalink_url workspace"
    ),
    "/workspaces/{workspace_gid}/custom_fields": _fields(
        "asana_created_field created_by currency_code custom_label custom_label_position "
        "date_value default_access_level description display_value enabled enum_options "
        "enum_value format has_notifications_enabled html_text_value id_prefix input_restrictions "
        "is_formula_field is_global_to_workspace is_value_read_only multi_enum_values name "
        "number_value people_value precision privacy_setting reference_value representation_type "
        "resource_subtype text_value type"
    ),
    "/workspaces/{workspace_gid}/teams": _fields(
        "custom_field_settings description edit_team_name_or_description_access_level "
        "edit_team_visibility_or_trash_team_access_level endorsed "
        "guest_invite_management_access_level html_description "
        "join_request_management_access_level member_invite_management_access_level name "
        "organization permalink_url team_content_management_access_level "
        "team_member_removal_access_level visibility"
    ),
    "/teams/{team_gid}/team_memberships": _fields("is_admin is_guest is_limited_access team user"),
    "/portfolios": _fields(
        "archived color created_at created_by current_status_update custom_field_settings "
        "custom_fields default_access_level due_on members name owner permalink_url "
        "privacy_setting project_templates public start_on workspace"
    ),
    "/goals": _fields(
        "current_status_update custom_field_settings custom_fields default_access_level due_on "
        "followers html_notes is_workspace_level liked likes metric name notes num_likes owner "
        "privacy_setting start_on status team time_period workspace"
    ),
}
# Not fields of the record but always allowed: every record has them.
_ALWAYS_RETURNABLE = frozenset({"gid", "resource_type"})


def endpoint_of(parts: list[str]) -> str:
    """The spec's path template of a request, e.g. ``/tasks/{task_gid}/stories``."""
    return "/" + "/".join(
        "{" + parts[0].removesuffix("s") + "_gid}" if i == 1 else part
        for i, part in enumerate(parts)
    )


# Marker key in an opt_fields tree: the field itself was named bare (``assignee``) as well
# as with sub-fields (``assignee.name``).
_BARE = ""


@lru_cache(maxsize=512)
def parse_opt_fields(raw: str) -> dict[str, Any]:
    """Parse ``opt_fields`` into a tree ``{name: subtree}`` (leaf = ``{}``); cached.

    Handles the optional ``this.`` prefix and the ``(a|b)`` group operator at any level.
    The returned tree is shared between callers: do not mutate it.
    """
    tree: dict[str, Any] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        for segments in _expand(item):
            if segments and segments[0] == "this":
                segments = segments[1:]
            segments = [s for s in segments if s]
            if not segments:
                continue
            node = tree
            for i, segment in enumerate(segments):
                existed = segment in node
                child = node.setdefault(segment, {})
                last = i == len(segments) - 1
                # Named both bare and with sub-fields: remember the bare request too.
                if existed and (bool(child) == last):
                    child[_BARE] = {}
                node = child
    return tree


class OptFields:
    """A compiled ``opt_fields`` tree: ``entries`` of ``(name, child or None, bare)``.

    ``child`` is None for a leaf; ``bare`` is True when the field was also named on its
    own (``assignee`` as well as ``assignee.name``). ``names`` is the set of entry names.
    """

    __slots__ = ("entries", "names")

    def __init__(self, entries: tuple[tuple[str, OptFields | None, bool], ...]) -> None:
        """Wrap compiled entries (use :func:`compile_opt_fields`)."""
        self.entries = entries
        self.names = frozenset(name for name, _, _ in entries)


def _compile(tree: dict[str, Any]) -> OptFields:
    return OptFields(
        tuple(
            (name, _compile(sub) if set(sub) - {_BARE} else None, _BARE in sub)
            for name, sub in tree.items()
            if name != _BARE
        )
    )


@lru_cache(maxsize=512)
def compile_opt_fields(raw: str) -> OptFields:
    """Parse and compile an ``opt_fields`` value (cached per distinct string)."""
    return _compile(parse_opt_fields(raw))


@lru_cache(maxsize=1024)
def documented_opt_fields(raw: str, endpoint: str) -> OptFields:
    """``opt_fields`` compiled and cut to what ``endpoint`` documents (cached)."""
    fields = compile_opt_fields(raw)
    allowed = ENDPOINT_FIELDS.get(endpoint)
    if allowed is None:
        return fields
    return OptFields(
        tuple(e for e in fields.entries if e[0] in allowed or e[0] in _ALWAYS_RETURNABLE)
    )


_SCALARS = (str, int, float, bool, type(None))
Resolver = Callable[[dict[str, Any]], "dict[str, Any] | None"]


def _bare(value: dict[str, Any]) -> dict[str, Any]:
    # A bare resource reference comes back minimal; plain objects come back whole
    # (Asana's docs: input/output options).
    if "resource_type" in value and "gid" in value:
        return {"gid": value["gid"], "resource_type": value["resource_type"]}
    return value


def _project_value(
    value: Any, child: OptFields | None, bare: bool, resolve: Resolver | None
) -> Any:
    cls = value.__class__
    if cls is dict:
        if child is None:
            return _bare(value)
        if resolve is not None and not child.names <= value.keys():
            # Asana answers nested paths from the referenced object itself, so
            # ``assignee.email`` works although the compact reference has no email.
            value = resolve(value) or value
        out = project(value, child, resolve)
        return {**_bare(value), **out} if bare else out
    if cls is list:
        return [
            e if e.__class__ in _SCALARS else _project_value(e, child, bare, resolve) for e in value
        ]
    return value


def project(
    obj: dict[str, Any], fields: OptFields, resolve: Resolver | None = None
) -> dict[str, Any]:
    """Project ``obj`` to compiled ``fields`` plus ``gid`` at every level that has one.

    ``resolve(ref)`` may return the full object behind a compact reference; it is used
    when a nested path asks for a field the reference does not carry.
    """
    out: dict[str, Any] = {"gid": obj["gid"]} if "gid" in obj else {}
    for name, child, bare in fields.entries:
        if name in obj:
            value = obj[name]
            if value.__class__ in _SCALARS:
                out[name] = value
            else:
                out[name] = _project_value(value, child, bare, resolve)
    return out


# --------------------------------------------------------------------------- HTTP plumbing
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections, as with Asana
    server_version = "FakeAsana/1.0"
    # Headers and body go out in one write, but keep Nagle off anyway so a client's
    # delayed ACK can never add 40 ms to a response.
    disable_nagle_algorithm = True

    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: the fake serves thousands of requests in tests and benchmarks."""

    def _dispatch(self) -> None:
        self.server.fake._handle(self)

    # http.server looks handlers up as do_<METHOD>; every method goes through one router.
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # benchmarks open many connections at once
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeAsana) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        # Keep-alive handler threads would otherwise keep serving after stop().
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


# ``GET /<head>/{gid}`` for resources without premium checks or special lookups.
_SINGLE_ROUTES = {
    "sections": "section",
    "tags": "tag",
    "teams": "team",
    "team_memberships": "team_membership",
    "project_memberships": "project_membership",
    "attachments": "attachment",
    "status_updates": "status_update",
}


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _search_key(task: dict[str, Any], sort_by: str) -> Any:
    if sort_by == "likes":
        return task.get("num_likes")
    if sort_by == "due_date":
        return task.get("due_at") or task.get("due_on")
    if sort_by == "relevance":  # no text search here, so "relevance" = most recent change
        return task.get("modified_at")
    return task.get(sort_by)


def _sort_search(
    records: list[dict[str, Any]], sort_by: str, ascending: bool
) -> list[dict[str, Any]]:
    """Sort search hits (ties by gid, in the same direction; missing values last)."""
    present = [t for t in records if _search_key(t, sort_by) is not None]
    missing = [t for t in records if _search_key(t, sort_by) is None]
    present.sort(key=lambda t: (_search_key(t, sort_by), t["gid"]), reverse=not ascending)
    missing.sort(key=lambda t: t["gid"], reverse=not ascending)
    return present + missing


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeAsana:
    """A fake Asana API server on localhost (context manager; or ``start()``/``stop()``).

    Args:
        dataset: data to serve (default: ``build_dataset()``).
        latency: seconds to sleep per API request (not OAuth), outside any lock.
        rate_limit_per_minute: per-token limit over a sliding 60 s window (None = off).
        access_token_ttl: lifetime in seconds of OAuth access tokens this server issues.
        host: interface to bind.
        port: port to bind (0 = any free port).

    Tunable attributes (may be changed while running): ``latency``,
    ``rate_limit_per_minute``, ``access_token_ttl``, ``offset_ttl`` (seconds a pagination
    token stays valid, None = forever), ``oauth_deny``, ``rotate_refresh_tokens``,
    ``omit_opt_in_fields`` (leave Asana's opt-in fields out of full records, default True),
    ``cache_responses`` (cache each record's JSON per opt_fields, default False: only safe
    when the dataset changes solely through the mutation helpers, which invalidate it;
    the CLI turns it on), ``premium_workspaces`` (gids of workspaces with Asana's paid
    features -- search, portfolios, goals, time tracking; the others get 402s; default:
    every workspace), ``scope_error_status`` (status for a request the token's OAuth
    scopes do not allow, default 403; see ``scopes.py``).
    """

    def __init__(
        self,
        dataset: Dataset | None = None,
        *,
        latency: float = 0.0,
        rate_limit_per_minute: int | None = None,
        access_token_ttl: int = 3600,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """Configure the fake; nothing listens until :meth:`start`."""
        self.dataset = dataset if dataset is not None else build_dataset()
        self.latency = latency
        self.rate_limit_per_minute = rate_limit_per_minute
        self.access_token_ttl = access_token_ttl
        self.offset_ttl: float | None = None
        self.oauth_deny = False
        self.rotate_refresh_tokens = False
        self.omit_opt_in_fields = True
        self.cache_responses = False
        #: Workspaces with Asana's paid features (search, portfolios, goals, time
        #: tracking); those routes answer 402 for any other workspace. Default: all.
        self.premium_workspaces: set[str] = set(self.dataset.workspaces)
        self.host = host
        self.port = port
        self.base_url = ""
        self.api_url = ""
        self.token_url = ""
        self.authorize_url = ""
        self.revoke_url = ""
        # Deliberately not shaped like a real Asana PAT ("1/123...:<32 hex>").
        self.pat = "fake-pat-" + secrets.token_hex(16)
        self.pats: set[str] = {self.pat}
        self.requests: list[RecordedRequest] = []
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[TokenRequest] = []
        self.server_errors: list[str] = []
        self.access_tokens_issued = 0
        self.responses_429 = 0
        self._secret = os.urandom(32)
        self._clock_offset = 0.0
        self._log_lock = threading.Lock()
        self._state_lock = threading.Lock()  # OAuth state, rate windows, faults
        self._clients: dict[str, _Client] = {}
        self._codes: dict[str, _Grant] = {}
        self._access_tokens: dict[str, _AccessToken] = {}
        # token -> (client, user, granted scopes)
        self._refresh_tokens: dict[str, tuple[str, str, frozenset[str]]] = {}
        #: Status for a request the token's scopes do not allow (Asana's is undocumented).
        self.scope_error_status = 403
        self._windows: dict[str, deque[float]] = {}
        self._faults: list[_Fault] = []
        self._fragments: dict[tuple[Any, ...], bytes] = {}
        self._cache_version = -1
        ds = self.dataset
        # Subtasks are tasks and their stories stories, wherever a gid is looked up.
        self._all_tasks: Mapping[str, dict[str, Any]] = ChainMap(ds.tasks, ds.subtasks)
        self._all_stories: Mapping[str, dict[str, Any]] = ChainMap(ds.stories, ds.subtask_stories)
        # Custom fields are left out on purpose: a task's custom field *value* is not a
        # subset of the field's definition, so nested paths must not resolve to it.
        self._tables: dict[str, Mapping[str, dict[str, Any]]] = {
            "workspace": ds.workspaces,
            "user": ds.users,
            "project": ds.projects,
            "task": self._all_tasks,
            "story": self._all_stories,
            "section": ds.sections,
            "tag": ds.tags,
            "team": ds.teams,
            "team_membership": ds.team_memberships,
            "project_membership": ds.project_memberships,
            "custom_field_setting": ds.custom_field_settings,
            "attachment": ds.attachments,
            "portfolio": ds.portfolios,
            "status_update": ds.status_updates,
            "goal": ds.goals,
            "time_tracking_entry": ds.time_tracking_entries,
        }
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.dataset.clock = self.now

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeAsana:
        """Bind the socket and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self)
        host, port = self._server.server_address[:2]
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self.api_url = self.base_url + API_PREFIX
        self.token_url = self.base_url + TOKEN_PATH
        self.authorize_url = self.base_url + AUTHORIZE_PATH
        self.revoke_url = self.base_url + REVOKE_PATH
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"fake-asana-{port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections and close the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        # serve_forever notices the shutdown request only when select() returns; a
        # throwaway connection wakes it now instead of after the poll interval.
        address = server.server_address[:2]
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection(address, timeout=0.2).close()
            stopper.join(0.01)
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeAsana:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ clock
    def now(self) -> float:
        """The fake's clock (epoch seconds): wall time plus :meth:`advance_clock` shifts."""
        return time.time() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the fake's clock forward (token expiry, rate windows, offset TTL, "now")."""
        self._clock_offset += seconds

    # ------------------------------------------------------------------ test helpers
    def requests_for(self, path_prefix: str) -> list[RecordedRequest]:
        """Logged requests whose path starts with ``path_prefix`` (API prefix optional)."""
        api_prefix = API_PREFIX + path_prefix
        with self._log_lock:
            return [
                r
                for r in self.requests
                if r.path.startswith(path_prefix) or r.path.startswith(api_prefix)
            ]

    def reset_log(self) -> None:
        """Forget logged requests, token calls and authorize calls (counters are kept)."""
        with self._log_lock:
            self.requests.clear()
            self.token_requests.clear()
            self.authorize_requests.clear()
            self.server_errors.clear()

    def inject(
        self,
        path_regex: str,
        status: int,
        *,
        times: int | None = 1,
        headers: dict[str, str | None] | None = None,
        body: Any = None,
        raw_body: bytes | str | None = None,
        delay: float | None = None,
    ) -> None:
        """Answer the next ``times`` requests whose path+query matches with this response.

        ``path_regex`` is searched (``re.search``) in the raw request target, e.g.
        ``/api/1.0/tasks?project=1&limit=100``. ``times=None`` keeps the fault until
        :meth:`clear_faults`. Without ``body``/``raw_body`` the body is Asana's error
        envelope for ``status`` (429s also get ``Retry-After: 1`` unless ``headers`` is
        given; a header value of None removes a default header). ``raw_body`` is sent
        verbatim (``text/html`` unless ``headers`` sets Content-Type). A ``Content-Length``
        in ``headers`` is sent as given and the connection closed afterwards, which
        simulates a truncated response. ``delay`` sleeps before answering (timeouts).
        """
        if isinstance(raw_body, str):
            raw_body = raw_body.encode("utf-8")
        default_headers: dict[str, str | None] = {"Retry-After": "1"} if status == 429 else {}
        fault = _Fault(
            pattern=re.compile(path_regex),
            status=status,
            remaining=times,
            headers=dict(headers) if headers is not None else default_headers,
            body=body,
            raw_body=raw_body,
            delay=delay,
        )
        with self._state_lock:
            self._faults.append(fault)

    def invalidate_cache(self) -> None:
        """Drop cached renderings (only needed after editing dataset dicts directly)."""
        with self.dataset.lock:
            self.dataset.version += 1

    def clear_faults(self) -> None:
        """Remove all injected faults."""
        with self._state_lock:
            self._faults.clear()

    # ------------------------------------------------------------------ data mutations
    def touch_task(self, gid: str, at: datetime | str | None = None) -> dict[str, Any]:
        """Thread-safe :meth:`Dataset.touch_task`."""
        with self.dataset.lock:
            return self.dataset.touch_task(gid, at)

    def add_story(
        self, task_gid: str, text: str = "A new comment", **kwargs: Any
    ) -> dict[str, Any]:
        """Thread-safe :meth:`Dataset.add_story` (bumps the task's ``modified_at``)."""
        with self.dataset.lock:
            return self.dataset.add_story(task_gid, text, **kwargs)

    def delete_task(self, gid: str) -> dict[str, Any]:
        """Thread-safe :meth:`Dataset.delete_task`."""
        with self.dataset.lock:
            return self.dataset.delete_task(gid)

    def add_task(self, project_gid: str, **overrides: Any) -> dict[str, Any]:
        """Thread-safe :meth:`Dataset.add_task`."""
        with self.dataset.lock:
            return self.dataset.add_task(project_gid, **overrides)

    def add_subtask(self, parent_gid: str, **overrides: Any) -> dict[str, Any]:
        """Thread-safe :meth:`Dataset.add_subtask` (the parent's ``modified_at`` stays)."""
        with self.dataset.lock:
            return self.dataset.add_subtask(parent_gid, **overrides)

    # ------------------------------------------------------------------ OAuth helpers
    def register_client(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: Iterable[str] | None = None,
        *,
        scopes: Iterable[str] | None = None,
    ) -> None:
        """Register an OAuth app.

        ``redirect_uris=None`` accepts any ``http://localhost:*`` or ``http://127.0.0.1:*``
        redirect URI (like a native app); otherwise only exact matches are accepted.
        ``scopes`` are the scopes the app is registered for (None: full permissions).
        """
        uris = frozenset(redirect_uris) if redirect_uris is not None else None
        registered = frozenset(scopes) if scopes is not None else None
        with self._state_lock:
            self._clients[client_id] = _Client(client_id, client_secret, uris, registered)

    def issue_refresh_token(
        self,
        client_id: str,
        user_gid: str | None = None,
        *,
        scopes: Iterable[str] | None = None,
    ) -> str:
        """Mint a refresh token for a registered client (as if the user had authorized).

        ``scopes``: what the user granted (None: ``default``, full access).

        Raises:
            ValueError: if the client is not registered.
        """
        granted = frozenset(scopes) if scopes is not None else scope_rules.FULL_ACCESS_SCOPES
        with self._state_lock:
            if client_id not in self._clients:
                raise ValueError(f"unknown OAuth client: {client_id!r}")
            return self._new_refresh_token(client_id, user_gid or self.dataset.me_gid, granted)

    def revoke_refresh_token(self, token: str) -> None:
        """Revoke a refresh token (unknown tokens are ignored)."""
        with self._state_lock:
            self._refresh_tokens.pop(token, None)

    def issue_access_token(
        self,
        client_id: str | None = None,
        *,
        ttl: float | None = None,
        scopes: Iterable[str] | None = None,
    ) -> str:
        """Mint an OAuth access token directly (expires after ``ttl`` or the server TTL).

        ``scopes``: what it was granted (None: ``default``, full access).
        """
        granted = frozenset(scopes) if scopes is not None else scope_rules.FULL_ACCESS_SCOPES
        with self._state_lock:
            return self._new_access_token(client_id, self.dataset.me_gid, ttl, granted)

    def _new_refresh_token(self, client_id: str, user_gid: str, scopes: frozenset[str]) -> str:
        token = "fake-refresh-" + secrets.token_hex(20)
        self._refresh_tokens[token] = (client_id, user_gid, scopes)
        return token

    def _new_access_token(
        self, client_id: str | None, user_gid: str, ttl: float | None, scopes: frozenset[str]
    ) -> str:
        token = "fake-access-" + secrets.token_hex(20)
        lifetime = self.access_token_ttl if ttl is None else ttl
        self._access_tokens[token] = _AccessToken(
            client_id, user_gid, self.now() + lifetime, scopes
        )
        self.access_tokens_issued += 1
        return token

    # ------------------------------------------------------------------ request entry
    def _handle(self, handler: _Handler) -> None:
        received = self.now()
        method = handler.command
        target = handler.path
        path, _, query_string = target.partition("?")
        query = parse_qs(query_string, keep_blank_values=True) if query_string else {}
        headers = handler.headers
        length = headers.get("Content-Length")
        body = b""
        if length:
            try:
                body = handler.rfile.read(int(length))
            except ValueError:
                handler.close_connection = True
        if headers.get("Transfer-Encoding", "").lower() == "chunked":
            # We don't parse chunked bodies; answering and closing keeps the stream sane.
            handler.close_connection = True
        authorization = headers.get("Authorization")
        token = None
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        is_api = path == API_PREFIX or path.startswith(API_PREFIX + "/")

        try:
            fault = self._take_fault(target) if self._faults else None
            if is_api and self.latency:
                time.sleep(self.latency)
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                response = self._fault_response(fault)
            elif is_api:
                response = self._api(method, path[len(API_PREFIX) :], query, token)
            elif path == AUTHORIZE_PATH:
                response = self._authorize(query)
            elif path == TOKEN_PATH and method == "POST":
                response = self._token(headers, body, received)
            elif path == REVOKE_PATH and method == "POST":
                response = self._revoke(headers, body)
            else:
                response = _error(404, NO_ROUTE)
        except Exception:
            self.server_errors.append(traceback.format_exc())
            response = _error(500, "Server Error")

        recorded_headers = dict(headers.items())
        for name in list(recorded_headers):
            if name.lower() == "authorization":
                scheme = recorded_headers[name].split(" ", 1)[0]
                recorded_headers[name] = f"{scheme} <redacted>"
        record = RecordedRequest(
            method, path, query, recorded_headers, response.status, received, token
        )
        with self._log_lock:
            self.requests.append(record)
            if response.status == 429:
                self.responses_429 += 1
        self._write(handler, response)

    def _write(self, handler: _Handler, response: _Response) -> None:
        reason = handler.responses.get(response.status, ("",))[0]
        lines = [f"HTTP/1.1 {response.status} {reason}"]
        if response.content_type is not None:
            lines.append(f"Content-Type: {response.content_type}")
        if not any(k.lower() == "content-length" for k in response.headers):
            lines.append(f"Content-Length: {len(response.body)}")
        else:
            handler.close_connection = True
        for name, value in response.headers.items():
            lines.append(f"{name}: {value}")
        if handler.close_connection:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if handler.command != "HEAD":
            data += response.body
        try:
            handler.wfile.write(data)
        except OSError:  # client went away (e.g. it timed out on an injected delay)
            handler.close_connection = True

    # ------------------------------------------------------------------ faults
    def _take_fault(self, target: str) -> _Fault | None:
        with self._state_lock:
            for i, fault in enumerate(self._faults):
                if fault.pattern.search(target):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            del self._faults[i]
                    return fault
        return None

    def _fault_response(self, fault: _Fault) -> _Response:
        headers = {k: v for k, v in fault.headers.items() if v is not None}
        content_type: str | None = JSON_TYPE
        for name in list(headers):
            if name.lower() == "content-type":
                content_type = headers.pop(name)
        if fault.raw_body is not None:
            if not any(k.lower() == "content-type" for k in fault.headers):
                content_type = "text/html; charset=UTF-8"
            body = fault.raw_body
        elif fault.body is not None:
            body = _dumps(fault.body)
        elif fault.status >= 400:
            message = _DEFAULT_MESSAGES.get(fault.status, "Error")
            body = _dumps(error_body(fault.status, message))
        else:
            body = _dumps({"data": {}})
        return _Response(fault.status, body, content_type, headers)

    # ------------------------------------------------------------------ API
    def _authenticate(self, token: str | None) -> str:
        """Return the user gid behind ``token`` or raise the 401 Asana would send."""
        if token is None:
            raise _ApiError(401, "Not Authorized")
        if token in self.pats:
            return self.dataset.me_gid
        info = self._access_tokens.get(token)
        if info is None:
            raise _ApiError(401, "Not Authorized")
        if info.expires_at <= self.now():
            raise _ApiError(401, EXPIRED_MESSAGE)
        return info.user_gid

    def _check_scopes(self, token: str, parts: list[str], query: dict[str, list[str]]) -> None:
        """Refuse what the token's OAuth scopes do not allow (PATs have full access)."""
        info = self._access_tokens.get(token)
        if info is None:
            return
        fields = parse_opt_fields(_first(query, "opt_fields") or "")
        denied = scope_rules.denial(info.scopes, parts, fields)
        if denied is not None:
            raise _ApiError(self.scope_error_status, denied)

    def _rate_limited(self, token: str) -> int | None:
        """Count this request in the token's window; seconds to wait if over the limit."""
        limit = self.rate_limit_per_minute
        if limit is None:
            return None
        now = self.now()
        with self._state_lock:
            window = self._windows.get(token)
            if window is None:
                window = self._windows[token] = deque()
            cutoff = now - 60.0
            while window and window[0] <= cutoff:
                window.popleft()
            window.append(now)  # rejected requests count too (as on Asana)
            if len(window) <= limit:
                return None
            # The next request fits once this many of the oldest entries have expired.
            oldest_blocking = window[len(window) - limit]
            return max(1, int(-(-(oldest_blocking + 60.0 - now) // 1)))

    def _api(
        self, method: str, sub_path: str, query: dict[str, list[str]], token: str | None
    ) -> _Response:
        try:
            user_gid = self._authenticate(token)
            assert token is not None
            retry_after = self._rate_limited(token)
            if retry_after is not None:
                raise _ApiError(429, RATE_LIMIT_MESSAGE, {"Retry-After": str(retry_after)})
            if method not in ("GET", "HEAD"):
                raise _ApiError(404, NO_ROUTE)
            parts = [p for p in sub_path.split("/") if p]
            self._check_scopes(token, parts, query)
            with self.dataset.lock:
                return _Response(200, self._route(parts, query, user_gid))
        except _ApiError as exc:
            return _error(exc.status, exc.message, exc.headers)

    def _route(self, parts: list[str], query: dict[str, list[str]], user_gid: str) -> bytes:
        ds = self.dataset
        n = len(parts)
        head = parts[0] if parts else ""
        sub = parts[2] if n == 3 else None
        if head == "workspaces":
            if n == 1:
                return self._list(parts, query, "workspace", list(ds.workspaces.values()))
            workspace = self._get(ds.workspaces, "workspace", parts[1])
            ws_gid = workspace["gid"]
            if n == 2:
                return self._single(workspace, "workspace", query, parts)
            if sub == "projects":
                records = self._filter_archived(ds.projects_by_workspace[ws_gid], query)
                return self._list(parts, query, "project", records)
            if sub == "tags":
                return self._list(parts, query, "tag", ds.tags_by_workspace[ws_gid])
            if sub == "teams":
                return self._list(parts, query, "team", self._teams_of(workspace))
            if sub == "custom_fields":
                records = ds.custom_fields_by_workspace.get(ws_gid, [])
                return self._list(parts, query, "custom_field", records)
            if n == 4 and parts[2:] == ["tasks", "search"]:
                return self._search(workspace, query)
        elif head == "organizations" and sub == "teams":
            workspace = self._get(ds.workspaces, "organization", parts[1])
            return self._list(parts, query, "team", self._teams_of(workspace))
        elif head == "users":
            if n == 1:
                return self._list(parts, query, "user", self._users(query))
            if n == 2:
                return self._single(self._user(parts[1], user_gid), "user", query, parts)
        elif head == "projects":
            if n == 1:
                return self._list(parts, query, "project", self._projects(query))
            project_obj = self._get(ds.projects, "project", parts[1])
            gid = project_obj["gid"]
            if n == 2:
                return self._single(project_obj, "project", query, parts)
            if sub == "tasks":
                records = ds.tasks_by_project[gid]
                records = self._filter_tasks(records, query, modified=False)
                return self._list(parts, query, "task", records)
            if sub == "sections":
                return self._list(parts, query, "section", ds.sections_by_project.get(gid, []))
            if sub == "project_memberships":
                records = ds.project_memberships_by_project.get(gid, [])
                user_ref = _first(query, "user")
                if user_ref is not None:
                    wanted = self._user(user_ref, user_gid)["gid"]
                    records = [m for m in records if (m.get("user") or {}).get("gid") == wanted]
                return self._list(parts, query, "project_membership", records)
            if sub == "custom_field_settings":
                records = ds.custom_field_settings_by_project.get(gid, [])
                return self._list(parts, query, "custom_field_setting", records)
        elif head == "tasks":
            if n == 1:
                return self._list(parts, query, "task", self._tasks(query, user_gid))
            task = self._get(self._all_tasks, "task", parts[1])
            gid = task["gid"]
            if n == 2:
                return self._single(task, "task", query, parts)
            if sub == "stories":
                return self._list(parts, query, "story", ds.stories_by_task.get(gid, []))
            if sub == "subtasks":
                return self._list(parts, query, "task", ds.subtasks_by_parent.get(gid, []))
            if sub == "time_tracking_entries":
                self._premium(self._workspace_of(task), TIME_TRACKING_PREMIUM)
                records = ds.time_tracking_entries_by_task.get(gid, [])
                return self._list(parts, query, "time_tracking_entry", records)
        elif head == "stories" and n == 2:
            return self._single(
                self._get(self._all_stories, "story", parts[1]), "story", query, parts
            )
        elif head == "tags" and n == 1:
            return self._list(parts, query, "tag", self._tags(query))
        elif head == "teams" and sub is not None:
            team = self._get(ds.teams, "team", parts[1])
            if sub == "team_memberships":
                records = ds.team_memberships_by_team.get(team["gid"], [])
                return self._list(parts, query, "team_membership", records)
            if sub == "projects":
                records = [
                    p
                    for p in ds.projects_by_workspace.get(
                        self._workspace_of(team, "organization"), []
                    )
                    if (p.get("team") or {}).get("gid") == team["gid"]
                ]
                return self._list(parts, query, "project", self._filter_archived(records, query))
        elif head == "team_memberships" and n == 1:
            records = self._team_memberships(query, user_gid)
            return self._list(parts, query, "team_membership", records)
        elif head == "attachments" and n == 1:
            return self._list(parts, query, "attachment", self._attachments(query))
        elif head == "portfolios":
            if n == 1:
                return self._list(parts, query, "portfolio", self._portfolios(query, user_gid))
            portfolio = self._get(ds.portfolios, "portfolio", parts[1])
            self._premium(self._workspace_of(portfolio), PORTFOLIOS_PREMIUM)
            if n == 2:
                return self._single(portfolio, "portfolio", query, parts)
            if sub == "items":
                records = ds.portfolio_items.get(portfolio["gid"], [])
                return self._list(parts, query, "project", records)
        elif head == "status_updates" and n == 1:
            return self._list(parts, query, "status_update", self._status_updates(query))
        elif head == "goals":
            if n == 1:
                return self._list(parts, query, "goal", self._goals(query))
            if n == 2:
                goal = self._get(ds.goals, "goal", parts[1])
                self._premium(self._workspace_of(goal), GOALS_PREMIUM)
                return self._single(goal, "goal", query, parts)
        elif head == "time_tracking_entries" and n == 2:
            entry = self._get(ds.time_tracking_entries, "time_tracking_entry", parts[1])
            task_ref = entry.get("task") or {}
            task = self._all_tasks.get(task_ref.get("gid") or "")
            if task is not None:
                self._premium(self._workspace_of(task), TIME_TRACKING_PREMIUM)
            return self._single(entry, "time_tracking_entry", query, parts)
        elif head == "custom_fields" and n == 2:
            definition = self._get(ds.custom_fields, "custom_field", parts[1])
            return self._single(definition, "custom_field", query, parts)
        elif n == 2 and head in _SINGLE_ROUTES:
            resource_type = _SINGLE_ROUTES[head]
            obj = self._get(self._tables[resource_type], resource_type, parts[1])
            return self._single(obj, resource_type, query, parts)
        raise _ApiError(404, NO_ROUTE)

    # ----- lookups and filters
    @staticmethod
    def _check_gid(kind: str, value: str) -> None:
        if not value:
            raise _ApiError(400, f"{kind}: Not a Long")
        if not value.isdigit():
            raise _ApiError(400, f"{kind}: Not a recognized ID: {value}")

    def _get(self, table: Mapping[str, dict[str, Any]], kind: str, gid: str) -> dict[str, Any]:
        self._check_gid(kind, gid)
        obj = table.get(gid)
        if obj is None:
            raise _ApiError(404, f"{kind}: Unknown object: {gid}")
        return obj

    def _user(self, ref: str, user_gid: str) -> dict[str, Any]:
        users = self.dataset.users
        if ref == "me":
            return users[user_gid]
        if "@" in ref:
            for user in users.values():
                if user.get("email") == ref:
                    return user
            raise _ApiError(404, f"user: Unknown object: {ref}")
        return self._get(users, "user", ref)

    def _users(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        workspace_gid = _first(query, "workspace")
        if workspace_gid is None:
            return list(self.dataset.users.values())
        workspace = self._get(self.dataset.workspaces, "workspace", workspace_gid)
        return self.dataset.users_by_workspace[workspace["gid"]]

    def _projects(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        ds = self.dataset
        workspace_gid = _first(query, "workspace")
        team_gid = _first(query, "team")
        paginating = "limit" in query or "offset" in query
        if workspace_gid is None and team_gid is None and paginating:
            raise _ApiError(400, "Need to specify a workspace or team to paginate!")
        if workspace_gid is not None:
            workspace = self._get(ds.workspaces, "workspace", workspace_gid)
            records = ds.projects_by_workspace[workspace["gid"]]
        else:
            records = list(ds.projects.values())
        if team_gid is not None:
            self._get(ds.teams, "team", team_gid)
            records = [p for p in records if (p.get("team") or {}).get("gid") == team_gid]
        return self._filter_archived(records, query)

    @staticmethod
    def _filter_archived(
        records: list[dict[str, Any]], query: dict[str, list[str]]
    ) -> list[dict[str, Any]]:
        archived = _first(query, "archived")
        if archived is None:
            return records
        if archived not in ("true", "false"):
            raise _ApiError(400, f"archived: Not a boolean: {archived}")
        wanted = archived == "true"
        return [p for p in records if bool(p.get("archived")) is wanted]

    def _tasks(self, query: dict[str, list[str]], user_gid: str) -> list[dict[str, Any]]:
        ds = self.dataset
        given = {name: query[name][0] for name in _TASK_FILTERS if name in query}
        if not given:
            raise _ApiError(
                400, "You should specify one of workspace, project, tag, section, user_task_list"
            )
        keys = set(given)
        if not (len(keys) == 1 and "assignee" not in keys and "workspace" not in keys) and keys != {
            "assignee",
            "workspace",
        }:
            raise _ApiError(
                400,
                "Must specify exactly one of project, tag, section, user task list, "
                "or assignee + workspace",
            )
        if "project" in given:
            records = ds.tasks_by_project[
                self._get(ds.projects, "project", given["project"])["gid"]
            ]
        elif "section" in given:
            section = self._get(ds.sections, "section", given["section"])
            records = []
            for project_gid, sections in ds.sections_by_project.items():
                if any(s is section for s in sections):
                    records = [
                        t
                        for t in ds.tasks_by_project[project_gid]
                        if any(
                            (m.get("section") or {}).get("gid") == section["gid"]
                            for m in t.get("memberships") or []
                        )
                    ]
                    break
        elif "tag" in given:
            tag = self._get(ds.tags, "tag", given["tag"])
            records = [
                t
                for t in ds.tasks.values()
                if any(x.get("gid") == tag["gid"] for x in t.get("tags") or [])
            ]
        elif "user_task_list" in given:
            self._check_gid("user_task_list", given["user_task_list"])
            raise _ApiError(404, f"user_task_list: Unknown object: {given['user_task_list']}")
        else:
            workspace = self._get(ds.workspaces, "workspace", given["workspace"])
            assignee = given["assignee"]
            assignee_gid = self._user(assignee, user_gid)["gid"]
            records = [
                t
                for t in ds.tasks.values()
                if (t.get("workspace") or {}).get("gid") == workspace["gid"]
                and (t.get("assignee") or {}).get("gid") == assignee_gid
            ]
        return self._filter_tasks(records, query, modified=True)

    @staticmethod
    def _since(query: dict[str, list[str]], name: str) -> str | None:
        value = _first(query, name)
        if value is None:
            return None
        try:
            # Canonical ms strings compare correctly as text (fixed width, all UTC).
            return iso_ms(parse_iso_ms(value))
        except (ValueError, OverflowError, OSError):
            raise _ApiError(400, f"{name}: Not a valid date-time") from None

    def _filter_tasks(
        self, records: list[dict[str, Any]], query: dict[str, list[str]], *, modified: bool
    ) -> list[dict[str, Any]]:
        if modified:
            modified_since = self._since(query, "modified_since")
            if modified_since is not None:
                # Inclusive bound (>=), the way tap-asana assumes (the spec's GET /tasks).
                records = [t for t in records if (t.get("modified_at") or "") >= modified_since]
        if _first(query, "completed_since") == "now":
            records = [t for t in records if not t.get("completed")]
        else:
            completed_since = self._since(query, "completed_since")
            if completed_since is not None:
                records = [
                    t
                    for t in records
                    if not t.get("completed") or (t.get("completed_at") or "") >= completed_since
                ]
        return records

    # ----- the newer resources
    @staticmethod
    def _required(query: dict[str, list[str]], name: str) -> str:
        value = _first(query, name)
        if value is None:
            raise _ApiError(400, f"{name}: Missing input")
        return value

    @staticmethod
    def _bool(query: dict[str, list[str]], name: str) -> bool | None:
        value = _first(query, name)
        if value is None:
            return None
        if value not in ("true", "false"):
            raise _ApiError(400, f"{name}: Not a boolean: {value}")
        return value == "true"

    @staticmethod
    def _workspace_of(obj: dict[str, Any], key: str = "workspace") -> str:
        return (obj.get(key) or {}).get("gid") or ""

    def _premium(self, workspace_gid: str, message: str) -> None:
        """Raise Asana's 402 unless the workspace has the paid features."""
        if workspace_gid not in self.premium_workspaces:
            raise _ApiError(402, message)

    def _teams_of(self, workspace: dict[str, Any]) -> list[dict[str, Any]]:
        # Only organizations have teams. What Asana answers for a plain workspace is not
        # documented; a 400 naming the problem is our guess (no source documents it).
        if not workspace.get("is_organization"):
            raise _ApiError(400, NOT_AN_ORGANIZATION)
        return self.dataset.teams_by_workspace.get(workspace["gid"], [])

    def _tags(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        ds = self.dataset
        workspace_gid = _first(query, "workspace")
        if workspace_gid is None:
            if "limit" in query or "offset" in query:
                raise _ApiError(400, "Need to specify a workspace to paginate!")
            return list(ds.tags.values())
        workspace = self._get(ds.workspaces, "workspace", workspace_gid)
        return ds.tags_by_workspace[workspace["gid"]]

    def _team_memberships(self, query: dict[str, list[str]], user_gid: str) -> list[dict[str, Any]]:
        """``team``, or ``user`` + ``workspace`` (the wording of their errors is a guess)."""
        ds = self.dataset
        team_gid = _first(query, "team")
        user_ref = _first(query, "user")
        workspace_gid = _first(query, "workspace")
        if team_gid is not None:
            team = self._get(ds.teams, "team", team_gid)
            records = ds.team_memberships_by_team.get(team["gid"], [])
            if user_ref is not None:
                wanted = self._user(user_ref, user_gid)["gid"]
                records = [m for m in records if (m.get("user") or {}).get("gid") == wanted]
            return records
        if user_ref is None and workspace_gid is None:
            raise _ApiError(400, "Must specify either team, or user and workspace")
        user = self._user(self._required(query, "user"), user_gid)
        workspace = self._get(ds.workspaces, "workspace", self._required(query, "workspace"))
        records = [
            m
            for team in ds.teams_by_workspace.get(workspace["gid"], [])
            for m in ds.team_memberships_by_team.get(team["gid"], [])
            if (m.get("user") or {}).get("gid") == user["gid"]
        ]
        return sorted(records, key=lambda m: m["gid"])

    def _parent(self, query: dict[str, list[str]], *kinds: str) -> tuple[str, dict[str, Any]]:
        """The ``parent`` object of a list request: ``(resource_type, object)``."""
        gid = self._required(query, "parent")
        self._check_gid("parent", gid)
        for kind in kinds:
            obj = self._tables[kind].get(gid)
            if obj is not None:
                return kind, obj
        raise _ApiError(404, f"parent: Unknown object: {gid}")

    def _attachments(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        # Projects (their "Key resources") can have attachments too; ours have none.
        _, parent = self._parent(query, "task", "project")
        return self.dataset.attachments_by_parent.get(parent["gid"], [])

    def _status_updates(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        kind, parent = self._parent(query, "project", "portfolio", "goal")
        if kind == "portfolio":
            self._premium(self._workspace_of(parent), PORTFOLIOS_PREMIUM)
        elif kind == "goal":
            self._premium(self._workspace_of(parent), GOALS_PREMIUM)
        records = self.dataset.status_updates_by_parent.get(parent["gid"], [])
        created_since = self._since(query, "created_since")
        if created_since is not None:
            # Inclusive, like modified_since (not documented either way).
            records = [u for u in records if (u.get("created_at") or "") >= created_since]
        return records

    def _portfolios(self, query: dict[str, list[str]], user_gid: str) -> list[dict[str, Any]]:
        ds = self.dataset
        workspace_gid = self._required(query, "workspace")
        # The current spec marks ``owner`` optional (for service accounts); clients report
        # it as required for PAT/OAuth users, which is what this fake models.
        owner_ref = self._required(query, "owner")
        workspace = self._get(ds.workspaces, "workspace", workspace_gid)
        owner = self._user(owner_ref, user_gid)
        self._premium(workspace["gid"], PORTFOLIOS_PREMIUM)
        return [
            p
            for p in ds.portfolios_by_workspace.get(workspace["gid"], [])
            if (p.get("owner") or {}).get("gid") == owner["gid"]
        ]

    def _goals(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Goals of a workspace and/or team; supporting-goal filters give [] (not modelled)."""
        ds = self.dataset
        workspace_gid = _first(query, "workspace")
        team_gid = _first(query, "team")
        workspace_level = self._bool(query, "is_workspace_level")
        if workspace_level is not None and workspace_gid is None:
            raise _ApiError(400, "is_workspace_level: Must be used with workspace")
        team = self._get(ds.teams, "team", team_gid) if team_gid is not None else None
        if workspace_gid is not None:
            ws_gid = self._get(ds.workspaces, "workspace", workspace_gid)["gid"]
        elif team is not None:
            ws_gid = self._workspace_of(team, "organization")
        else:
            for kind in ("portfolio", "project", "task"):
                ref = _first(query, kind)
                if ref is not None:
                    supported = self._get(self._tables[kind], kind, ref)
                    self._premium(self._workspace_of(supported), GOALS_PREMIUM)
                    return []
            raise _ApiError(400, "Must specify one of workspace, team, portfolio, project or task")
        self._premium(ws_gid, GOALS_PREMIUM)
        records = ds.goals_by_workspace.get(ws_gid, [])
        if team is not None:
            records = [g for g in records if (g.get("team") or {}).get("gid") == team["gid"]]
        if workspace_level is not None:
            records = [g for g in records if bool(g.get("is_workspace_level")) is workspace_level]
        return records

    @staticmethod
    def _bound(query: dict[str, list[str]], name: str, *, after: bool) -> str | None:
        """An exclusive date-time bound as a canonical ms string to compare with.

        ``after``: keep ``value >= bound`` (= strictly later than the input, which may
        have microseconds); otherwise keep ``value < bound`` (strictly earlier).
        """
        value = _first(query, name)
        if value is None:
            return None
        try:
            micros = parse_iso_us(value)
            return iso_ms(micros // 1000 + 1 if after else -(-micros // 1000))
        except (ValueError, OverflowError, OSError):
            raise _ApiError(400, f"{name}: Not a valid date-time") from None

    def _search(self, workspace: dict[str, Any], query: dict[str, list[str]]) -> bytes:
        """``GET /workspaces/{gid}/tasks/search`` over the workspace's tasks and subtasks.

        Like Asana there is no offset pagination: at most ``limit`` (default and maximum
        100) tasks and no ``next_page``. Clients page by sorting on ``modified_at`` (or
        ``created_at``) ascending and moving ``modified_at.after`` past the last result.
        ``offset`` is not a search parameter and is ignored (Asana ignores unknown
        parameters). Supported: ``is_subtask``, ``completed``, ``projects.any``,
        ``{modified,created,completed}_at.{after,before}`` (exclusive), ``sort_by``,
        ``sort_ascending``, ``limit``, ``opt_fields``; the spec's other filters are a 400
        (the fake does not implement them).
        """
        ds = self.dataset
        unsupported = sorted(
            k
            for k in query
            if k in _SEARCH_UNSUPPORTED or k.startswith(("custom_fields.", "custom_types."))
        )
        if unsupported:
            raise _ApiError(400, f"{unsupported[0]}: Not supported by this fake")
        limit_raw = _first(query, "limit")
        limit = SEARCH_MAX
        if limit_raw is not None:
            try:
                limit = int(limit_raw)
            except ValueError:
                limit = 0
            if not 1 <= limit <= SEARCH_MAX:
                raise _ApiError(400, "limit: Must be between 1 and 100")
        is_subtask = self._bool(query, "is_subtask")
        completed = self._bool(query, "completed")
        ascending = bool(self._bool(query, "sort_ascending"))
        sort_by = _first(query, "sort_by") or "modified_at"
        if sort_by not in SEARCH_SORTS:
            raise _ApiError(400, f"sort_by: Not a valid value: {sort_by}")
        bounds: list[tuple[str, str, bool]] = []
        for field_name in ("modified_at", "created_at", "completed_at"):
            for suffix, after in (("after", True), ("before", False)):
                bound = self._bound(query, f"{field_name}.{suffix}", after=after)
                if bound is not None:
                    bounds.append((field_name, bound, after))
        projects_any: set[str] | None = None
        projects_raw = _first(query, "projects.any")
        if projects_raw is not None:
            projects_any = {gid.strip() for gid in projects_raw.split(",")}
            for gid in projects_any:
                self._check_gid("projects.any", gid)
        # The search needs the paid plan (it is checked after the input, as we guess).
        self._premium(workspace["gid"], SEARCH_PREMIUM)
        if is_subtask is None:
            candidates: Iterable[dict[str, Any]] = [*ds.tasks.values(), *ds.subtasks.values()]
        else:
            candidates = (ds.subtasks if is_subtask else ds.tasks).values()
        ws_gid = workspace["gid"]
        records = []
        for task in candidates:
            if self._workspace_of(task) != ws_gid:
                continue
            if completed is not None and bool(task.get("completed")) is not completed:
                continue
            if projects_any is not None and not any(
                p.get("gid") in projects_any for p in task.get("projects") or []
            ):
                continue
            if not all(
                (task.get(name) is not None)
                and ((task[name] >= bound) if after else (task[name] < bound))
                for name, bound, after in bounds
            ):
                continue
            records.append(task)
        records = _sort_search(records, sort_by, ascending)
        endpoint = "/workspaces/{workspace_gid}/tasks/search"
        return self._envelope(records[:limit], "task", query, endpoint, None, paginated=False)

    # ----- rendering
    def shape(self, obj: dict[str, Any], endpoint: str, opt_fields: str) -> dict[str, Any]:
        """``obj`` as ``endpoint`` (a spec path template) answers it for ``opt_fields``.

        For tests that compare what the tap emitted with what Asana sent it.
        """
        with self.dataset.lock:
            return project(obj, documented_opt_fields(opt_fields, endpoint), self._resolve)

    def _resolve(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        table = self._tables.get(ref.get("resource_type") or "")
        gid = ref.get("gid")
        return table.get(gid) if table is not None and isinstance(gid, str) else None

    def _cache_check(self) -> None:
        # Any mutation through the helpers bumps the dataset version and drops the cache.
        if self._cache_version != self.dataset.version:
            self._fragments.clear()
            self._cache_version = self.dataset.version

    def _shape(
        self,
        obj: dict[str, Any],
        resource_type: str,
        opt_fields: str | None,
        endpoint: str,
        *,
        full: bool,
    ) -> dict[str, Any]:
        """The JSON object Asana sends for ``obj`` (projection, compact or full record)."""
        if opt_fields:
            return project(obj, documented_opt_fields(opt_fields, endpoint), self._resolve)
        if full:
            hidden = OPT_IN_FIELDS.get(resource_type, ()) if self.omit_opt_in_fields else ()
            return {k: v for k, v in obj.items() if k not in hidden} if hidden else obj
        return {k: obj[k] for k in COMPACT_FIELDS[resource_type] if k in obj}

    def _fragment(
        self,
        obj: dict[str, Any],
        resource_type: str,
        opt_fields: str | None,
        endpoint: str,
        *,
        full: bool,
    ) -> bytes:
        key = (resource_type, obj.get("gid"), opt_fields, endpoint, full)
        fragment = self._fragments.get(key)
        if fragment is None:
            fragment = _dumps(self._shape(obj, resource_type, opt_fields, endpoint, full=full))
            self._fragments[key] = fragment
        return fragment

    def _single(
        self,
        obj: dict[str, Any],
        resource_type: str,
        query: dict[str, list[str]],
        parts: list[str],
    ) -> bytes:
        opt_fields = _first(query, "opt_fields") or None
        pretty = _first(query, "opt_pretty") not in (None, "false")
        endpoint = endpoint_of(parts)
        if self.cache_responses and not pretty:
            self._cache_check()
            fragment = self._fragment(obj, resource_type, opt_fields, endpoint, full=True)
            return b'{"data":' + fragment + b"}"
        shaped = self._shape(obj, resource_type, opt_fields, endpoint, full=True)
        return _dumps({"data": shaped}, pretty)

    def _envelope(
        self,
        records: list[dict[str, Any]],
        resource_type: str,
        query: dict[str, list[str]],
        endpoint: str,
        next_page: dict[str, str] | None,
        *,
        paginated: bool,
    ) -> bytes:
        opt_fields = _first(query, "opt_fields") or None
        pretty = _first(query, "opt_pretty") not in (None, "false")
        if self.cache_responses and not pretty:
            self._cache_check()
            data = b",".join(
                self._fragment(r, resource_type, opt_fields, endpoint, full=False) for r in records
            )
            tail = b',"next_page":' + _dumps(next_page) if paginated else b""
            return b'{"data":[' + data + b"]" + tail + b"}"
        payload: dict[str, Any] = {
            "data": [
                self._shape(r, resource_type, opt_fields, endpoint, full=False) for r in records
            ]
        }
        if paginated:
            payload["next_page"] = next_page
        return _dumps(payload, pretty)

    # ----- pagination
    def _fingerprint(self, parts: list[str], query: dict[str, list[str]]) -> str:
        filters = sorted(
            (k, v) for k, vs in query.items() if k not in _NON_FILTER_PARAMS for v in vs
        )
        raw = "/".join(parts) + "?" + json.dumps(filters)
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]

    def _encode_offset(self, fingerprint: str, after_gid: str) -> str:
        payload = json.dumps(
            {"fp": fingerprint, "after": after_gid, "iat": round(self.now(), 3)},
            separators=(",", ":"),
        ).encode("utf-8")
        signature = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
        return _b64(payload) + "." + _b64(signature)

    def _decode_offset(self, token: str, fingerprint: str) -> str:
        """The gid to resume after; raises the 400 for anything we did not issue."""
        try:
            payload_part, signature_part = token.split(".")
            payload = _unb64(payload_part)
            expected = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
            if not hmac.compare_digest(expected, _unb64(signature_part)):
                raise ValueError("bad signature")
            data = json.loads(payload)
            if data["fp"] != fingerprint:
                raise ValueError("token from another query")
            if self.offset_ttl is not None and self.now() - data["iat"] > self.offset_ttl:
                raise ValueError("expired")
            after = data["after"]
            if not isinstance(after, str):
                raise ValueError("bad payload")
            return after
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _ApiError(400, BAD_OFFSET) from None

    def _list(
        self,
        parts: list[str],
        query: dict[str, list[str]],
        resource_type: str,
        records: list[dict[str, Any]],
    ) -> bytes:
        limit_raw = _first(query, "limit")
        limit = None
        if limit_raw is not None:
            try:
                limit = int(limit_raw)
            except ValueError:
                limit = None
            if limit is None or not 1 <= limit <= 100:
                raise _ApiError(400, "limit: Must be between 1 and 100")
        start = 0
        offset = _first(query, "offset")
        fingerprint = None
        if offset is not None:
            fingerprint = self._fingerprint(parts, query)
            after = self._decode_offset(offset, fingerprint)
            # Every listing is in gid order (gids grow with creation), so resuming after
            # the last served gid is a bisect, and deletes/inserts cannot cause repeats.
            start = bisect.bisect_right(records, after, key=lambda r: r["gid"])
        if limit is None:
            rest = records[start:] if start else records
            if len(rest) > MAX_UNPAGINATED:
                raise _ApiError(400, TOO_LARGE)
            return self._envelope(
                rest, resource_type, query, endpoint_of(parts), None, paginated=False
            )
        page = records[start : start + limit]
        next_page = None
        if start + limit < len(records):
            fingerprint = fingerprint or self._fingerprint(parts, query)
            token = self._encode_offset(fingerprint, page[-1]["gid"])
            pairs = [(k, v) for k, vs in query.items() if k != "offset" for v in vs]
            pairs.append(("offset", token))
            path = "/" + "/".join(parts) + "?" + urlencode(pairs, safe=",.|()", quote_via=quote)
            next_page = {"offset": token, "path": path, "uri": self.api_url + path}
        return self._envelope(
            page, resource_type, query, endpoint_of(parts), next_page, paginated=True
        )

    # ------------------------------------------------------------------ OAuth endpoints
    def _authorize(self, query: dict[str, list[str]]) -> _Response:
        params = {k: v[0] for k, v in query.items()}
        with self._log_lock:
            self.authorize_requests.append(params)
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        with self._state_lock:
            client = self._clients.get(client_id)
            if client is None:
                return _Response(
                    400,
                    b"Error: invalid client_id. The app could not be found.",
                    "text/plain; charset=UTF-8",
                )
            if not redirect_uri or not client.accepts(redirect_uri):
                return _Response(
                    400,
                    b"Error: The redirect_uri parameter does not match a valid redirect URL "
                    b"for this app.",
                    "text/plain; charset=UTF-8",
                )
            state = params.get("state")
            result: dict[str, str]
            challenge = params.get("code_challenge")
            challenge_method = params.get("code_challenge_method")
            requested = scope_rules.parse_scope_param(params.get("scope"))
            if self.oauth_deny:
                result = {"error": "access_denied"}
            elif params.get("response_type") != "code":
                result = {
                    "error": "unsupported_response_type",
                    "error_description": "This fake supports response_type=code only.",
                }
            elif (challenge_method not in (None, "S256")) or (
                challenge_method is not None and not challenge
            ):
                result = {
                    "error": "invalid_request",
                    "error_description": (
                        "code_challenge_method must be S256, with a code_challenge."
                    ),
                }
            elif refused := scope_rules.authorize_error(requested, client.scopes):
                result = refused
            else:
                code = "fake-code-" + secrets.token_hex(16)
                self._codes[code] = _Grant(
                    client_id=client_id,
                    redirect_uri=redirect_uri,
                    challenge=challenge,
                    scopes=frozenset(requested),
                    user_gid=self.dataset.me_gid,
                    expires_at=self.now() + 600,
                )
                result = {"code": code}
        if state is not None:
            result["state"] = state
        separator = "&" if urlsplit(redirect_uri).query else "?"
        location = redirect_uri + separator + urlencode(result)
        return _Response(302, b"", None, {"Location": location})

    @staticmethod
    def _form(headers: Any, body: bytes) -> dict[str, str]:
        try:
            form = {
                k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()
            }
        except UnicodeDecodeError:
            form = {}
        authorization = headers.get("Authorization") or ""
        if authorization[:6].lower() == "basic " and "client_id" not in form:
            # RFC 6749 client_secret_basic, in case a client prefers it.
            try:
                user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
                form["client_id"], form["client_secret"] = user, password
            except (ValueError, UnicodeDecodeError):
                pass
        return form

    def _token(self, headers: Any, body: bytes, received: float) -> _Response:
        form = self._form(headers, body)
        grant_type = form.get("grant_type")
        client_id = form.get("client_id")
        with self._state_lock:
            status, payload = self._token_grant(form)
        record = TokenRequest(grant_type, client_id, status, payload.get("error"), received)
        with self._log_lock:
            self.token_requests.append(record)
        return _Response(
            status, _dumps(payload), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
        )

    def _token_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        def fail(status: int, error: str, description: str) -> tuple[int, dict[str, Any]]:
            return status, {"error": error, "error_description": description}

        grant_type = form.get("grant_type")
        if not grant_type:
            return fail(400, "invalid_request", "The grant_type parameter is missing.")
        if grant_type not in ("authorization_code", "refresh_token"):
            return fail(400, "unsupported_grant_type", f"Unsupported grant_type: {grant_type}")
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if not client_id or not client_secret:
            return fail(400, "invalid_request", "client_id and client_secret are required.")
        client = self._clients.get(client_id)
        if client is None or not hmac.compare_digest(client.client_secret, client_secret):
            return fail(401, "invalid_client", "Client authentication failed.")

        if grant_type == "authorization_code":
            code = form.get("code")
            redirect_uri = form.get("redirect_uri")
            if not code or not redirect_uri:
                return fail(400, "invalid_request", "code and redirect_uri are required.")
            grant = self._codes.pop(code, None)  # single use, even if the exchange fails
            if grant is None or grant.expires_at <= self.now():
                return fail(400, "invalid_grant", "The authorization code is invalid or expired.")
            if grant.client_id != client_id:
                return fail(400, "invalid_grant", "The code was issued to another client.")
            if grant.redirect_uri != redirect_uri:
                return fail(400, "invalid_grant", "redirect_uri does not match the authorize call.")
            if grant.challenge is not None:
                verifier = form.get("code_verifier")
                if not verifier:
                    return fail(400, "invalid_request", "code_verifier is required (PKCE).")
                computed = _b64(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
                if not hmac.compare_digest(computed, grant.challenge):
                    return fail(400, "invalid_grant", "PKCE verification failed.")
            user_gid = grant.user_gid
            granted = grant.scopes
            refresh_token: str | None = self._new_refresh_token(client_id, user_gid, granted)
        else:
            presented = form.get("refresh_token")
            if not presented:
                return fail(400, "invalid_request", "The refresh_token parameter is missing.")
            owner = self._refresh_tokens.get(presented)
            if owner is None or owner[0] != client_id:
                return fail(400, "invalid_grant", "The refresh token is invalid or revoked.")
            user_gid, granted = owner[1], owner[2]
            refresh_token = None
            if self.rotate_refresh_tokens:
                del self._refresh_tokens[presented]
                refresh_token = self._new_refresh_token(client_id, user_gid, granted)

        access_token = self._new_access_token(client_id, user_gid, None, granted)
        user = self.dataset.users.get(user_gid, {})
        payload: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": self.access_token_ttl,
            "token_type": "bearer",
        }
        if refresh_token is not None:
            payload["refresh_token"] = refresh_token
        payload["data"] = {
            "id": int(user_gid) if user_gid.isdigit() else 0,
            "gid": user_gid,
            "name": user.get("name"),
            "email": user.get("email"),
        }
        return 200, payload

    def _revoke(self, headers: Any, body: bytes) -> _Response:
        form = self._form(headers, body)
        with self._state_lock:
            client = self._clients.get(form.get("client_id") or "")
            if client is None or not hmac.compare_digest(
                client.client_secret, form.get("client_secret") or ""
            ):
                payload = {
                    "error": "invalid_client",
                    "error_description": "Client authentication failed.",
                }
                return _Response(401, _dumps(payload))
            if not form.get("token"):
                payload = {"error": "invalid_request", "error_description": "token is required."}
                return _Response(400, _dumps(payload))
            # 200 whether or not the token was known (as Asana documents).
            self._refresh_tokens.pop(form["token"], None)
        return _Response(200, b"")
