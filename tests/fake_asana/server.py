"""A faithful fake of the Asana REST API (read side + OAuth) on a real localhost socket.

Behaviour follows Asana's documentation (its OpenAPI spec, vendored in spec/, and its
guides on errors, pagination, input/output options, rate limits and OAuth). This module
holds the server itself: HTTP, authentication, per-token rate limiting with
``Retry-After``, and the test hooks (fault injection, a request log, mutation helpers and
a clock that tests move forward with ``advance_clock`` instead of sleeping). The API is in
``api.py``, OAuth in ``oauth.py``.
"""

from __future__ import annotations

import contextlib
import email.utils
import re
import secrets
import socket
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from . import spec
from .api import NO_ROUTE, ApiServer
from .dataset import Dataset, build_dataset
from .oauth import OAuthServer
from .wire import JSON_TYPE, ApiError, Response, dumps, error_body

API_PREFIX = "/api/1.0"
AUTHORIZE_PATH = "/-/oauth_authorize"
TOKEN_PATH = "/-/oauth_token"
REVOKE_PATH = "/-/oauth_revoke"

RATE_LIMIT_MESSAGE = (
    "You've made too many requests and hit a rate limit. "
    "Please retry after the given amount of time."
)
EXPIRED_MESSAGE = (
    "The bearer token has expired. If you have a refresh token, please use it to get a new "
    "access token. Otherwise, the user must re-authorize."
)
# Messages of injected faults that give no body (Asana's wording where it has one).
_DEFAULT_MESSAGES = {
    400: "Bad Request",
    401: "Not Authorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    429: RATE_LIMIT_MESSAGE,
    500: "Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


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
class _Fault:
    pattern: re.Pattern[str]
    status: int
    remaining: int | None
    headers: dict[str, str | None]
    body: Any
    raw_body: bytes | None
    delay: float | None

    def response(self) -> Response:
        headers = {k: v for k, v in self.headers.items() if v is not None}
        content_type: str | None = JSON_TYPE
        for name in list(headers):
            if name.lower() == "content-type":
                content_type = headers.pop(name)
        if self.raw_body is not None:
            if not any(k.lower() == "content-type" for k in self.headers):
                content_type = "text/html; charset=UTF-8"
            body = self.raw_body
        elif self.body is not None:
            body = dumps(self.body)
        elif self.status >= 400:
            body = dumps(error_body(self.status, _DEFAULT_MESSAGES.get(self.status, "Error")))
        else:
            body = dumps({"data": {}})
        return Response(self.status, body, content_type, headers)


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
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch  # noqa: N815


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


class FakeAsana(ApiServer, OAuthServer):
    """A fake Asana API server on localhost (context manager; or ``start()``/``stop()``).

    Args:
        dataset: data to serve (default: ``build_dataset()``).
        latency: seconds to sleep per API request (not OAuth), outside any lock.
        rate_limit_per_minute: per-token limit over a sliding 60 s window (None = off).
        access_token_ttl: lifetime in seconds of OAuth access tokens this server issues.
        host: interface to bind.
        port: port to bind (0 = any free port).

    Observed (read-only): ``requests`` (the request log), ``responses_429``, and
    ``in_flight`` / ``peak_in_flight``: API requests being served now / at most at once
    (from arrival to answer, latency included; Asana's limit of 50 concurrent reads
    per token is not enforced).

    Tunable attributes (may be changed while running): ``latency``,
    ``rate_limit_per_minute``, ``access_token_ttl``, ``pats``, and those of the API
    (``offset_ttl``, ``cache_responses``, ``premium_workspaces``, ``scope_error_status``)
    and of OAuth (``oauth_deny``, ``rotate_refresh_tokens``).
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
        self.host = host
        self.port = port
        self.base_url = self.api_url = self.token_url = self.authorize_url = self.revoke_url = ""
        # Deliberately not shaped like a real Asana PAT ("1/123...:<32 hex>").
        self.pat = "fake-pat-" + secrets.token_hex(16)
        self.pats: set[str] = {self.pat}
        self.requests: list[RecordedRequest] = []
        self.server_errors: list[str] = []
        self.responses_429 = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self._clock_offset = 0.0
        self._log_lock = threading.Lock()
        self._state_lock = threading.Lock()  # rate windows, faults
        self._windows: dict[str, deque[float]] = {}
        self._faults: list[_Fault] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._init_api()
        self._init_oauth()
        self.access_token_ttl = access_token_ttl
        self.dataset.clock = self.now

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeAsana:
        """Bind the socket and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            return self
        spec.load()  # once per process, so that no request waits for it
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
        prefixes = (path_prefix, API_PREFIX + path_prefix)
        with self._log_lock:
            return [r for r in self.requests if r.path.startswith(prefixes)]

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

    def clear_faults(self) -> None:
        """Remove all injected faults."""
        with self._state_lock:
            self._faults.clear()

    def invalidate_cache(self) -> None:
        """Drop cached renderings (only needed after editing dataset dicts directly)."""
        with self.dataset.lock:
            self.dataset.version += 1

    # ------------------------------------------------------------------ data mutations
    def touch_task(self, gid: str, at: datetime | str | None = None) -> dict[str, Any]:
        """:meth:`Dataset.touch_task` (thread-safe)."""
        return self.dataset.touch_task(gid, at)

    def add_story(
        self, task_gid: str, text: str = "A new comment", **kwargs: Any
    ) -> dict[str, Any]:
        """:meth:`Dataset.add_story` (bumps the task's ``modified_at``; thread-safe)."""
        return self.dataset.add_story(task_gid, text, **kwargs)

    def delete_task(self, gid: str) -> dict[str, Any]:
        """:meth:`Dataset.delete_task` (thread-safe)."""
        return self.dataset.delete_task(gid)

    def add_task(self, project_gid: str, **overrides: Any) -> dict[str, Any]:
        """:meth:`Dataset.add_task` (thread-safe)."""
        return self.dataset.add_task(project_gid, **overrides)

    def add_subtask(self, parent_gid: str, **overrides: Any) -> dict[str, Any]:
        """:meth:`Dataset.add_subtask` (the parent's ``modified_at`` stays; thread-safe)."""
        return self.dataset.add_subtask(parent_gid, **overrides)

    def delete_story(self, gid: str) -> dict[str, Any]:
        """:meth:`Dataset.delete_story` (thread-safe)."""
        return self.dataset.delete_story(gid)

    def delete_section(self, gid: str) -> dict[str, Any]:
        """:meth:`Dataset.delete_section` (an empty section only; thread-safe)."""
        return self.dataset.delete_section(gid)

    def move_task(self, gid: str, **kwargs: Any) -> dict[str, Any]:
        """:meth:`Dataset.move_task` (remove from / add to a project; thread-safe)."""
        return self.dataset.move_task(gid, **kwargs)

    def remove_custom_field_from_project(self, project_gid: str, field_gid: str) -> None:
        """:meth:`Dataset.remove_custom_field_from_project` (thread-safe)."""
        self.dataset.remove_custom_field_from_project(project_gid, field_gid)

    def remove_from_task(self, task_gid: str, field: str, gid: str) -> dict[str, Any] | None:
        """:meth:`Dataset.remove_from_task` (a tag, dependency or follower; thread-safe)."""
        return self.dataset.remove_from_task(task_gid, field, gid)

    def add_to_task(self, task_gid: str, field: str, gid: str) -> dict[str, Any]:
        """:meth:`Dataset.add_to_task` (a tag, dependency or follower; thread-safe)."""
        return self.dataset.add_to_task(task_gid, field, gid)

    # ------------------------------------------------------------------ request entry
    def _handle(self, handler: _Handler) -> None:
        received = self.now()
        method, target, headers = handler.command, handler.path, handler.headers
        path, _, query_string = target.partition("?")
        query = parse_qs(query_string, keep_blank_values=True) if query_string else {}
        body = b""
        length = headers.get("Content-Length")
        if length:
            try:
                body = handler.rfile.read(int(length))
            except ValueError:
                handler.close_connection = True
        if headers.get("Transfer-Encoding", "").lower() == "chunked":
            # Chunked bodies are not parsed; answering and closing keeps the stream sane.
            handler.close_connection = True
        authorization = headers.get("Authorization")
        token = None
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        is_api = path == API_PREFIX or path.startswith(API_PREFIX + "/")

        if is_api:
            with self._log_lock:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            fault = self._take_fault(target) if self._faults else None
            if is_api and self.latency:
                time.sleep(self.latency)
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                response = fault.response()
            elif is_api:
                response = self._api(method, path[len(API_PREFIX) :], query, token)
            elif path == AUTHORIZE_PATH:
                response = self._authorize(query)
            elif path == TOKEN_PATH and method == "POST":
                response = self._token(headers, body, received)
            elif path == REVOKE_PATH and method == "POST":
                response = self._revoke(headers, body)
            else:
                response = ApiError(404, NO_ROUTE).response()
        except Exception:
            self.server_errors.append(traceback.format_exc())
            response = ApiError(500, "Server Error").response()

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
            if is_api:
                self.in_flight -= 1
        self._write(handler, response)

    def _write(self, handler: _Handler, response: Response) -> None:
        reason = handler.responses.get(response.status, ("",))[0]
        lines = [f"HTTP/1.1 {response.status} {reason}"]
        if not any(k.lower() == "date" for k in response.headers):
            # Every answer of Asana's carries its clock (RFC 9110: an origin server
            # with a clock sends Date); the fake's is its own clock (advance_clock).
            lines.append(f"Date: {email.utils.formatdate(self.now(), usegmt=True)}")
        if response.content_type is not None:
            lines.append(f"Content-Type: {response.content_type}")
        if not any(k.lower() == "content-length" for k in response.headers):
            lines.append(f"Content-Length: {len(response.body)}")
        else:
            handler.close_connection = True
        lines.extend(f"{name}: {value}" for name, value in response.headers.items())
        if handler.close_connection:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body
        try:
            handler.wfile.write(data)
        except OSError:  # client went away (e.g. it timed out on an injected delay)
            handler.close_connection = True

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

    # ------------------------------------------------------------------ API entry
    def _api(
        self, method: str, sub_path: str, query: dict[str, list[str]], token: str | None
    ) -> Response:
        try:
            user_gid = self._authenticate(token)
            assert token is not None
            retry_after = self._rate_limited(token)
            if retry_after is not None:
                raise ApiError(429, RATE_LIMIT_MESSAGE, {"Retry-After": str(retry_after)})
            if method != "GET":
                raise ApiError(404, NO_ROUTE)
            parts = [p for p in sub_path.split("/") if p]
            return Response(200, self._api_get(parts, query, token, user_gid))
        except ApiError as exc:
            return exc.response()

    def _authenticate(self, token: str | None) -> str:
        """Return the user gid behind ``token`` or raise the 401 Asana would send."""
        if token in self.pats:
            return self.dataset.me_gid
        info = self._access_tokens.get(token or "")
        if info is None:
            raise ApiError(401, "Not Authorized")
        if info.expires_at <= self.now():
            raise ApiError(401, EXPIRED_MESSAGE)
        return info.user_gid

    def _rate_limited(self, token: str) -> int | None:
        """Count this request in the token's window; seconds to wait if over the limit."""
        limit = self.rate_limit_per_minute
        if limit is None:
            return None
        now = self.now()
        with self._state_lock:
            window = self._windows.setdefault(token, deque())
            while window and window[0] <= now - 60.0:
                window.popleft()
            window.append(now)  # rejected requests count too (as on Asana)
            if len(window) <= limit:
                return None
            # The next request fits once this many of the oldest entries have expired.
            oldest_blocking = window[len(window) - limit]
            return max(1, int(-(-(oldest_blocking + 60.0 - now) // 1)))
