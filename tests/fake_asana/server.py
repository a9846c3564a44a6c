"""A faithful fake of the Asana REST API (read side + OAuth) on a real localhost socket.

Behaviour follows /work/shared/asana/NOTES.md (sections 1-3, 5-7, 9): Asana's envelope,
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
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from .dataset import (
    COMPACT_FIELDS,
    OPT_IN_FIELDS,
    Dataset,
    build_dataset,
    iso_ms,
    parse_iso_ms,
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
JSON_TYPE = "application/json; charset=UTF-8"
# Asana serves unpaginated lists only up to about this size (NOTES §2).
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
    scope: str
    user_gid: str
    expires_at: float


@dataclass
class _AccessToken:
    client_id: str | None
    user_gid: str
    expires_at: float


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
    """Asana's error envelope; 500s carry a ``phrase`` for support (NOTES §1)."""
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


_SCALARS = (str, int, float, bool, type(None))
Resolver = Callable[[dict[str, Any]], "dict[str, Any] | None"]


def _bare(value: dict[str, Any]) -> dict[str, Any]:
    # A bare resource reference comes back minimal; plain objects come back whole (NOTES §3).
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


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


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
    the CLI turns it on).
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
        self._refresh_tokens: dict[str, tuple[str, str]] = {}  # token -> (client, user)
        self._windows: dict[str, deque[float]] = {}
        self._faults: list[_Fault] = []
        self._fragments: dict[tuple[Any, ...], bytes] = {}
        self._cache_version = -1
        ds = self.dataset
        self._tables: dict[str, dict[str, dict[str, Any]]] = {
            "workspace": ds.workspaces,
            "user": ds.users,
            "project": ds.projects,
            "task": ds.tasks,
            "story": ds.stories,
            "section": ds.sections,
            "tag": ds.tags,
            "team": ds.teams,
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

    # ------------------------------------------------------------------ OAuth helpers
    def register_client(
        self, client_id: str, client_secret: str, redirect_uris: Iterable[str] | None = None
    ) -> None:
        """Register an OAuth app.

        ``redirect_uris=None`` accepts any ``http://localhost:*`` or ``http://127.0.0.1:*``
        redirect URI (like a native app); otherwise only exact matches are accepted.
        """
        uris = frozenset(redirect_uris) if redirect_uris is not None else None
        with self._state_lock:
            self._clients[client_id] = _Client(client_id, client_secret, uris)

    def issue_refresh_token(self, client_id: str, user_gid: str | None = None) -> str:
        """Mint a refresh token for a registered client (as if the user had authorized).

        Raises:
            ValueError: if the client is not registered.
        """
        with self._state_lock:
            if client_id not in self._clients:
                raise ValueError(f"unknown OAuth client: {client_id!r}")
            return self._new_refresh_token(client_id, user_gid or self.dataset.me_gid)

    def revoke_refresh_token(self, token: str) -> None:
        """Revoke a refresh token (unknown tokens are ignored)."""
        with self._state_lock:
            self._refresh_tokens.pop(token, None)

    def issue_access_token(self, client_id: str | None = None, *, ttl: float | None = None) -> str:
        """Mint an OAuth access token directly (expires after ``ttl`` or the server TTL)."""
        with self._state_lock:
            return self._new_access_token(client_id, self.dataset.me_gid, ttl)

    def _new_refresh_token(self, client_id: str, user_gid: str) -> str:
        token = "fake-refresh-" + secrets.token_hex(20)
        self._refresh_tokens[token] = (client_id, user_gid)
        return token

    def _new_access_token(self, client_id: str | None, user_gid: str, ttl: float | None) -> str:
        token = "fake-access-" + secrets.token_hex(20)
        lifetime = self.access_token_ttl if ttl is None else ttl
        self._access_tokens[token] = _AccessToken(client_id, user_gid, self.now() + lifetime)
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
            with self.dataset.lock:
                return _Response(200, self._route(parts, query, user_gid))
        except _ApiError as exc:
            return _error(exc.status, exc.message, exc.headers)

    def _route(self, parts: list[str], query: dict[str, list[str]], user_gid: str) -> bytes:
        ds = self.dataset
        n = len(parts)
        head = parts[0] if parts else ""
        if head == "workspaces":
            if n == 1:
                return self._list(parts, query, "workspace", list(ds.workspaces.values()))
            workspace = self._get(ds.workspaces, "workspace", parts[1])
            if n == 2:
                return self._single(workspace, "workspace", query)
            if n == 3 and parts[2] == "projects":
                records = self._filter_archived(ds.projects_by_workspace[workspace["gid"]], query)
                return self._list(parts, query, "project", records)
        elif head == "users":
            if n == 1:
                return self._list(parts, query, "user", self._users(query))
            if n == 2:
                return self._single(self._user(parts[1], user_gid), "user", query)
        elif head == "projects":
            if n == 1:
                return self._list(parts, query, "project", self._projects(query))
            project_obj = self._get(ds.projects, "project", parts[1])
            if n == 2:
                return self._single(project_obj, "project", query)
            if n == 3 and parts[2] == "tasks":
                records = ds.tasks_by_project[project_obj["gid"]]
                records = self._filter_tasks(records, query, modified=False)
                return self._list(parts, query, "task", records)
        elif head == "tasks":
            if n == 1:
                return self._list(parts, query, "task", self._tasks(query, user_gid))
            task = self._get(ds.tasks, "task", parts[1])
            if n == 2:
                return self._single(task, "task", query)
            if n == 3 and parts[2] == "stories":
                return self._list(parts, query, "story", ds.stories_by_task.get(task["gid"], []))
        elif head == "stories" and n == 2:
            return self._single(self._get(ds.stories, "story", parts[1]), "story", query)
        raise _ApiError(404, NO_ROUTE)

    # ----- lookups and filters
    @staticmethod
    def _check_gid(kind: str, value: str) -> None:
        if not value:
            raise _ApiError(400, f"{kind}: Not a Long")
        if not value.isdigit():
            raise _ApiError(400, f"{kind}: Not a recognized ID: {value}")

    def _get(self, table: dict[str, dict[str, Any]], kind: str, gid: str) -> dict[str, Any]:
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
                # Inclusive bound (>=), the way tap-asana assumes (NOTES §5).
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

    # ----- rendering
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
        self, obj: dict[str, Any], resource_type: str, opt_fields: str | None, *, full: bool
    ) -> dict[str, Any]:
        """The JSON object Asana sends for ``obj`` (projection, compact or full record)."""
        if opt_fields:
            return project(obj, compile_opt_fields(opt_fields), self._resolve)
        if full:
            hidden = OPT_IN_FIELDS.get(resource_type, ()) if self.omit_opt_in_fields else ()
            return {k: v for k, v in obj.items() if k not in hidden} if hidden else obj
        return {k: obj[k] for k in COMPACT_FIELDS[resource_type] if k in obj}

    def _fragment(
        self, obj: dict[str, Any], resource_type: str, opt_fields: str | None, *, full: bool
    ) -> bytes:
        key = (resource_type, obj.get("gid"), opt_fields, full)
        fragment = self._fragments.get(key)
        if fragment is None:
            fragment = _dumps(self._shape(obj, resource_type, opt_fields, full=full))
            self._fragments[key] = fragment
        return fragment

    def _single(
        self, obj: dict[str, Any], resource_type: str, query: dict[str, list[str]]
    ) -> bytes:
        opt_fields = _first(query, "opt_fields") or None
        pretty = _first(query, "opt_pretty") not in (None, "false")
        if self.cache_responses and not pretty:
            self._cache_check()
            return b'{"data":' + self._fragment(obj, resource_type, opt_fields, full=True) + b"}"
        return _dumps({"data": self._shape(obj, resource_type, opt_fields, full=True)}, pretty)

    def _envelope(
        self,
        records: list[dict[str, Any]],
        resource_type: str,
        query: dict[str, list[str]],
        next_page: dict[str, str] | None,
        *,
        paginated: bool,
    ) -> bytes:
        opt_fields = _first(query, "opt_fields") or None
        pretty = _first(query, "opt_pretty") not in (None, "false")
        if self.cache_responses and not pretty:
            self._cache_check()
            fragment = self._fragment
            data = b",".join(fragment(r, resource_type, opt_fields, full=False) for r in records)
            tail = b',"next_page":' + _dumps(next_page) if paginated else b""
            return b'{"data":[' + data + b"]" + tail + b"}"
        payload: dict[str, Any] = {
            "data": [self._shape(r, resource_type, opt_fields, full=False) for r in records]
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
            return self._envelope(rest, resource_type, query, None, paginated=False)
        page = records[start : start + limit]
        next_page = None
        if start + limit < len(records):
            fingerprint = fingerprint or self._fingerprint(parts, query)
            token = self._encode_offset(fingerprint, page[-1]["gid"])
            pairs = [(k, v) for k, vs in query.items() if k != "offset" for v in vs]
            pairs.append(("offset", token))
            path = "/" + "/".join(parts) + "?" + urlencode(pairs, safe=",.|()", quote_via=quote)
            next_page = {"offset": token, "path": path, "uri": self.api_url + path}
        return self._envelope(page, resource_type, query, next_page, paginated=True)

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
            else:
                code = "fake-code-" + secrets.token_hex(16)
                self._codes[code] = _Grant(
                    client_id=client_id,
                    redirect_uri=redirect_uri,
                    challenge=challenge,
                    scope=params.get("scope") or "default",
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
            refresh_token: str | None = self._new_refresh_token(client_id, user_gid)
        else:
            presented = form.get("refresh_token")
            if not presented:
                return fail(400, "invalid_request", "The refresh_token parameter is missing.")
            owner = self._refresh_tokens.get(presented)
            if owner is None or owner[0] != client_id:
                return fail(400, "invalid_grant", "The refresh token is invalid or revoked.")
            user_gid = owner[1]
            refresh_token = None
            if self.rotate_refresh_tokens:
                del self._refresh_tokens[presented]
                refresh_token = self._new_refresh_token(client_id, user_gid)

        access_token = self._new_access_token(client_id, user_gid, None)
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
