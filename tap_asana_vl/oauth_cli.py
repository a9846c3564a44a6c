"""``tap-asana-vl-auth``: get an Asana OAuth refresh token for tap-asana-vl.

Runs Asana's OAuth 2.0 authorization-code flow with PKCE:

1. builds the authorization URL (``client_id``, ``redirect_uri``,
   ``response_type=code``, a random ``state``, a PKCE S256 challenge, ``scope``);
2. opens it in the browser (and prints it) while a one-shot HTTP listener on the
   local redirect URI waits for Asana to send the browser back with ``code`` and
   ``state`` -- or, with ``--headless``, asks for the redirected URL on stdin;
3. checks ``state``, exchanges the code (plus the PKCE verifier) for tokens;
4. stores ``TAP_ASANA_VL_REFRESH_TOKEN`` in a ``.env`` file (mode 0600), where
   Meltano and the tap (``--config ENV``) pick it up.

Secrets (client secret, access and refresh tokens) are never printed, unless
``--print-token`` asks for the refresh token on stdout.  All messages go to
stderr.  Exit codes: 0 success, 1 authorization failed, 2 usage or
configuration error.

Only the standard library and ``requests`` are used.
"""

from __future__ import annotations

import argparse
import base64
import errno
import getpass
import hashlib
import html
import http.server
import os
import re
import secrets
import shlex
import socket
import socketserver
import sys
import textwrap
import threading
import urllib.parse
import webbrowser
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from tap_asana_vl import __version__
from tap_asana_vl.auth import describe_redirect, is_loopback_host
from tap_asana_vl.dotenv_file import NotOwnerError, check_owner, read_env_file, update_env_file
from tap_asana_vl.redaction import printable, safe_text

__all__ = [
    "DEFAULT_SCOPES",
    "DEFAULT_SCOPE_PURPOSES",
    "FULL_ACCESS_STREAMS",
    "SECTIONS_SCOPE",
    "AuthFailedError",
    "CallbackListener",
    "CliError",
    "TokenResponse",
    "UsageError",
    "build_authorize_url",
    "exchange_code",
    "main",
    "make_pkce_pair",
    "parse_callback",
    "update_env_file",
    "wait_for_callback",
]

PROG = "tap-asana-vl-auth"

DEFAULT_AUTHORIZE_URL = "https://app.asana.com/-/oauth_authorize"
DEFAULT_TOKEN_URL = "https://app.asana.com/-/oauth_token"  # noqa: S105 - a URL
DEFAULT_REDIRECT_URI = "http://localhost:8080/callback"
DEFAULT_ENV_FILE = ".env"
DEFAULT_CALLBACK_TIMEOUT = 300.0
TOKEN_REQUEST_TIMEOUT = 60.0
OOB_REDIRECT_URI = "urn:ietf:wg:oauth:2.0:oob"

ENV_CLIENT_ID = "TAP_ASANA_VL_CLIENT_ID"
ENV_CLIENT_SECRET = "TAP_ASANA_VL_CLIENT_SECRET"  # noqa: S105 - a variable name
ENV_REFRESH_TOKEN = "TAP_ASANA_VL_REFRESH_TOKEN"  # noqa: S105 - a variable name
ENV_OAUTH_SCOPES = "TAP_ASANA_VL_OAUTH_SCOPES"

# Read scopes requested by default, each with what the tap reads with it.  All of
# them are in the scope list of Asana's OpenAPI spec (tests check that against
# spec/asana_oas.yaml, and that every stream's scope is here): Asana refuses the whole
# authorization when one requested scope is not registered for the app, so a doubtful
# scope here would block every sign-in.
DEFAULT_SCOPE_PURPOSES: dict[str, str] = {
    "workspaces:read": "workspaces (every other stream starts from them)",
    "users:read": "users",
    "projects:read": "projects, project_custom_field_settings",
    "tasks:read": "tasks, subtasks",
    "stories:read": "stories, subtask_stories",
    "time_tracking_entries:read": "time_tracking_entries, tasks.actual_time_minutes",
    "teams:read": "teams, projects.team",
    "team_memberships:read": "team_memberships",
    "tags:read": "tags",
    "custom_fields:read": "custom_fields",
    "attachments:read": "attachments",
    "portfolios:read": "portfolios, portfolio_items",
    "goals:read": "goals",
}
DEFAULT_SCOPES: tuple[str, ...] = tuple(DEFAULT_SCOPE_PURPOSES)
# Asana's docs require it for the task field `memberships` (with projects:read), but
# it is not in the spec's scope list: an app may not be able to register it, and then
# requesting it gets the whole authorization refused.  Hence opt-in (--sections-scope).
SECTIONS_SCOPE = "project_sections:read"
# Streams whose endpoints have no granular scope in Asana's spec: only a token with
# full permissions (--full-access) can read them.
FULL_ACCESS_STREAMS: tuple[str, ...] = ("sections", "project_memberships", "status_updates")
# Full access; Asana grants it only to apps registered with full permissions.
FULL_ACCESS_SCOPE = "default"

EXIT_OK = 0
EXIT_AUTH_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Hosts the callback listener may bind to, mapped to the address it binds.
_LOOPBACK_BIND_ADDRESSES = {
    "localhost": "127.0.0.1",
    "127.0.0.1": "127.0.0.1",
    "::1": "::1",
}

OpenUrl = Callable[[str], object]


class CliError(Exception):
    """An error reported as one line on stderr, without a traceback."""

    exit_code = EXIT_AUTH_FAILED


class UsageError(CliError):
    """Bad options or configuration (exit code 2)."""

    exit_code = EXIT_USAGE


class AuthFailedError(CliError):
    """The authorization did not succeed (exit code 1)."""

    exit_code = EXIT_AUTH_FAILED


class ScopesRefusedError(AuthFailedError):
    """Asana refused requested scopes (``invalid_scope`` / ``forbidden_scopes``)."""

    def __init__(self, message: str, refused: Sequence[str]) -> None:
        """Keep the scope names Asana's message gave (may be empty)."""
        super().__init__(message)
        self.refused = list(refused)


# --------------------------------------------------------------------------- URL


def make_pkce_pair() -> tuple[str, str]:
    """Return a new PKCE ``(code_verifier, code_challenge)`` pair (RFC 7636, S256).

    The verifier is 86 characters of the unreserved set (within the 43-128
    allowed); the challenge is BASE64URL(SHA256(verifier)) without padding.
    """
    verifier = secrets.token_urlsafe(64)
    return verifier, pkce_challenge(verifier)


def pkce_challenge(verifier: str) -> str:
    """Return the S256 code challenge of a PKCE verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def build_authorize_url(
    authorize_url: str,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    code_challenge: str,
    scopes: Sequence[str],
) -> str:
    """Return Asana's authorization URL for the authorization-code + PKCE flow.

    Query parameters already in ``authorize_url`` are kept.
    """
    parts = urllib.parse.urlsplit(authorize_url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += [
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("response_type", "code"),
        ("state", state),
        ("code_challenge_method", "S256"),
        ("code_challenge", code_challenge),
        ("scope", " ".join(scopes)),
    ]
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    return urllib.parse.urlunsplit(parts._replace(query=encoded))


# ---------------------------------------------------------------------- callback


def _callback_params(callback: str) -> dict[str, str]:
    """Return the OAuth parameters of a redirect URL, path or query string."""
    text = callback.strip()
    if "?" in text or "#" in text or "://" in text or text.startswith("/"):
        parts = urllib.parse.urlsplit(text)
        query, fragment = parts.query, parts.fragment
    else:
        query, fragment = text, ""
    params: dict[str, str] = {}
    # Some providers put the answer in the fragment; the query wins.
    for part in (fragment, query):
        params.update(urllib.parse.parse_qsl(part, keep_blank_values=True))
    return params


SCOPE_ERRORS = ("invalid_scope", "forbidden_scopes")
_SCOPE_NAME = re.compile(r"^[a-z_]+(:[a-z_]+)?$")


def refused_scopes(description: str) -> list[str]:
    """Scope names in Asana's ``error_description`` of a scope refusal.

    Asana quotes them in backticks, e.g. "forbidden_scopes: Your app is not allowed to
    request user authorization for `default identity` scopes."; otherwise any
    ``resource:action`` word counts.  May name groups (``identity``) that were not
    requested: callers match the result against what they asked for.
    """
    quoted = re.findall(r"`([^`]*)`", description)
    words = (
        [w for chunk in quoted for w in chunk.replace(",", " ").split()]
        if quoted
        else re.findall(r"\b[a-z_]+:[a-z_]+\b", description)
    )
    return list(dict.fromkeys(w for w in words if _SCOPE_NAME.match(w)))


def _describe_authorize_error(params: Mapping[str, str]) -> str:
    """Turn an ``error=...`` redirect into one line telling what to do."""
    error = params.get("error", "")
    description = params.get("error_description", "").strip()
    detail = f" ({safe_text(description)})" if description else ""
    if error == "access_denied":
        return (
            f"authorization was denied in Asana (access_denied){detail}; "
            f"re-run {PROG} and click Allow"
        )
    if error in SCOPE_ERRORS:
        refused = refused_scopes(description)
        named = f": {' '.join(refused)}" if refused else ""
        # Asana's description starts with the error code; don't say it twice.
        said = f" ({safe_text(description)})" if description.startswith(error) else ""
        return (
            f"Asana refused the requested scopes{named}{said or f' ({error}){detail}'}; "
            "enable them for the app in Asana's developer console, or re-run without them (--scope)"
        )
    if error == "unauthorized_client":
        return (
            f"the app may not use the authorization-code flow (unauthorized_client){detail}; "
            "check the app's OAuth settings in Asana's developer console"
        )
    return f"Asana returned an authorization error: {safe_text(error)}{detail}; re-run {PROG}"


def parse_callback(callback: str, expected_state: str) -> str:
    """Return the authorization code carried by Asana's redirect.

    ``callback`` is the URL the browser was redirected to (or its path and
    query, or just the query string).

    Raises:
        AuthFailedError: the ``state`` does not match (possible CSRF or a stale
            browser tab), Asana sent ``error=...``, or there is no code.

    """
    params = _callback_params(callback)
    state = params.get("state")
    # An error redirect without state is reported as the error; anything else
    # must carry this run's state.
    state_required = not (state is None and "error" in params)
    if state_required and (
        state is None
        or not secrets.compare_digest(
            state.encode("utf-8", "surrogateescape"),
            expected_state.encode("utf-8", "surrogateescape"),
        )
    ):
        raise AuthFailedError(
            "the redirect's state parameter does not match this run "
            "(possible CSRF, or a stale browser tab from an earlier run); "
            f"close old Asana authorization tabs and re-run {PROG}"
        )
    if "error" in params:
        message = _describe_authorize_error(params)
        if params["error"] in SCOPE_ERRORS:
            refused = refused_scopes(params.get("error_description", ""))
            raise ScopesRefusedError(message, refused)
        raise AuthFailedError(message)
    code = params.get("code", "")
    if not code:
        raise AuthFailedError(
            f"the redirect carries no authorization code; re-run {PROG}",
        )
    return code


class NotPastedCodeError(AuthFailedError):
    """What was pasted is neither the redirected URL nor a code; worth asking again."""


# Asana's codes look like ``1/1204…:0f3a…``: unreserved characters, ``/`` and ``:``.
_BARE_CODE = re.compile(r"[A-Za-z0-9._~+/:%-]{8,2048}")
# Pasted text that is (part of) a URL, not a code: a scheme, a query, a fragment.
_URL_MARKS = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/|^/|[?#=&]")
MAX_PASTE_ATTEMPTS = 3


def _parse_pasted(text: str, expected_state: str, redirect_uri: str) -> str:
    """Return the code from what the user pasted in headless mode.

    A full redirected URL (or its query) is checked like :func:`parse_callback`; a
    bare code is accepted as is, since there is no state to check.  Anything else
    -- a URL cut off before its ``code=``, a stray line -- raises
    :class:`NotPastedCodeError` and is never sent to Asana.
    """
    text = text.strip()
    if not text:
        raise NotPastedCodeError("nothing was pasted")
    host = urllib.parse.urlsplit(redirect_uri).hostname
    if _URL_MARKS.search(text) or (host and host in text.lower()):
        if not any(name in _callback_params(text) for name in ("code", "error", "state")):
            raise NotPastedCodeError(
                "not a URL or code: that URL has no code= parameter (was it cut off?); "
                "copy the whole address from the browser"
            )
        return parse_callback(text, expected_state)
    if not _BARE_CODE.fullmatch(text):
        raise NotPastedCodeError(
            "not a URL or code: paste the whole redirected URL from the browser's "
            "address bar, or just the value of its code= parameter"
        )
    return urllib.parse.unquote(text)


@dataclass
class _Outcome:
    """What the listener received: a code or an error."""

    code: str | None = None
    error: CliError | None = None


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 4em auto">
<h1>{title}</h1>
{body}</body></html>
"""


class _CallbackServer(http.server.ThreadingHTTPServer):
    """HTTP server that skips the reverse-DNS lookup of HTTPServer.server_bind."""

    daemon_threads = True
    # Don't wait for handler threads on close: an idle browser pre-connect would
    # otherwise hold up the exit until the handler's read timeout.
    block_on_close = False
    listener: CallbackListener

    def server_bind(self) -> None:
        """Bind without calling socket.getfqdn (slow on some networks)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _CallbackServer6(_CallbackServer):
    """IPv6 variant for a ``[::1]`` redirect URI."""

    address_family = socket.AF_INET6


class _CallbackHandler(http.server.BaseHTTPRequestHandler):
    """Answers the browser; only the redirect path counts, anything else is 404."""

    server: _CallbackServer
    timeout = 30  # a browser pre-connect that never sends a request must not hang
    server_version = "tap-asana-vl-auth"
    sys_version = ""

    def do_GET(self) -> None:
        """Handle a GET: the OAuth redirect or something to ignore."""
        listener = self.server.listener
        target = urllib.parse.urlsplit(self.path)
        if (target.path or "/") != listener.path:
            self._send(404, "Not found", "This address only receives Asana's redirect.")
            return
        params = _callback_params(self.path)
        if not any(name in params for name in ("code", "error", "state")):
            self._send(
                400,
                "Waiting for Asana",
                "This page receives Asana's redirect after you click Allow; "
                "there is nothing to see here yet.",
            )
            return
        if listener.done:
            self._send(
                409,
                "Already handled",
                "An authorization response was already received; see the terminal.",
            )
            return
        try:
            code = parse_callback(self.path, listener.expected_state)
        except CliError as exc:
            self._send(
                400,
                "Authorization failed",
                f"{exc}.",
                "See the terminal for details. You can close this tab.",
            )
            listener.finish(_Outcome(error=exc))
            return
        self._send(
            200,
            "tap-asana-vl is authorized",
            "Asana sent the authorization back to the terminal. You can close this tab.",
        )
        listener.finish(_Outcome(code=code))

    def _send(self, status: int, title: str, *paragraphs: str) -> None:
        """Send a small HTML page (all text is escaped)."""
        body_html = "".join(f"<p>{html.escape(text)}</p>\n" for text in paragraphs)
        body = _PAGE.format(title=html.escape(title), body=body_html).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: request lines carry the authorization code."""


class CallbackListener:
    """One-shot HTTP listener on the local redirect URI.

    Binding happens in the constructor, so a busy port is reported before the
    user goes to the browser.  A redirect URI with port 0 gets a free port (for
    tests: Asana itself needs the exact registered redirect URL); the resulting
    URI is :attr:`redirect_uri`.  Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, redirect_uri: str, expected_state: str) -> None:
        """Bind the listener for ``redirect_uri`` (a loopback ``http://`` URL).

        Raises:
            UsageError: the URI is not a local http URL, or the port cannot be bound.

        """
        parts = urllib.parse.urlsplit(redirect_uri)
        host = (parts.hostname or "").lower()
        if parts.scheme != "http" or host not in _LOOPBACK_BIND_ADDRESSES:
            raise UsageError(
                f"cannot listen for the redirect on {redirect_uri!r}: the listener needs "
                "an http:// URI on localhost, 127.0.0.1 or [::1]; use --headless to "
                "paste the redirected URL instead"
            )
        try:
            port = parts.port if parts.port is not None else 80
        except ValueError as exc:
            raise UsageError(f"invalid port in redirect URI {redirect_uri!r}") from exc
        bind_address = _LOOPBACK_BIND_ADDRESSES[host]
        server_class = _CallbackServer6 if ":" in bind_address else _CallbackServer
        try:
            self._server = server_class((bind_address, port), _CallbackHandler)
        except OSError as exc:
            raise UsageError(_describe_bind_error(exc, bind_address, port)) from exc
        self._server.listener = self
        self.expected_state = expected_state
        self.path = parts.path or "/"
        actual_port = self._server.server_address[1]
        netloc = parts.netloc
        if port == 0:
            netloc = f"[{host}]:{actual_port}" if ":" in host else f"{host}:{actual_port}"
        self.redirect_uri = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        self.port = actual_port
        self._outcome: _Outcome | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def done(self) -> bool:
        """Whether a callback has been received."""
        return self._done.is_set()

    def finish(self, outcome: _Outcome) -> None:
        """Record the first callback's outcome (later ones are ignored)."""
        with self._lock:
            if self._outcome is None:
                self._outcome = outcome
                self._done.set()

    def start(self) -> None:
        """Serve requests in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="tap-asana-vl-auth-callback",
            daemon=True,
        )
        self._thread.start()

    def wait(self, timeout: float) -> _Outcome | None:
        """Wait up to ``timeout`` seconds; return the outcome or None."""
        if not self._done.wait(timeout):
            return None
        return self._outcome

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> CallbackListener:
        """Return self."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the listener."""
        self.close()


def _describe_bind_error(exc: OSError, address: str, port: int) -> str:
    """Explain why the listener could not bind."""
    where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is already in use (is another "
            f"{PROG} still running?); stop that program, or register another "
            "redirect URL for the app and pass it with --redirect-uri"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"cannot listen on {where}: permission denied (ports below 1024 need "
            "privileges); register a redirect URL with a higher port, e.g. "
            f"{DEFAULT_REDIRECT_URI}, and pass it with --redirect-uri"
        )
    return f"cannot listen on {where}: {exc.strerror or exc}"


def wait_for_callback(listener: CallbackListener, timeout: float) -> str:
    """Wait for Asana's redirect on ``listener``; return the authorization code.

    Raises:
        AuthFailedError: nothing arrived within ``timeout`` seconds, or the
            redirect was rejected (state mismatch, ``error=...``).

    """
    outcome = listener.wait(timeout)
    if outcome is None:
        raise AuthFailedError(
            f"no redirect from Asana reached {listener.redirect_uri} within "
            f"{timeout:g} s; re-run {PROG} (use --timeout to wait longer, or "
            "--headless if the browser runs on another machine)"
        )
    if outcome.error is not None:
        raise outcome.error
    assert outcome.code is not None
    return outcome.code


# ------------------------------------------------------------------------- token


@dataclass(frozen=True)
class TokenResponse:
    """The parts of Asana's token response we use; secrets stay out of repr."""

    refresh_token: str = field(repr=False)
    access_token: str = field(default="", repr=False)
    user_name: str | None = None
    user_email: str | None = None
    user_gid: str | None = None


_TOKEN_ERROR_HINTS = {
    "invalid_client": (
        "Asana rejected the client credentials (invalid_client): check the client ID "
        f"and secret (--client-id/--client-secret, {ENV_CLIENT_ID}/{ENV_CLIENT_SECRET}) "
        "against the app in Asana's developer console"
    ),
    "invalid_grant": (
        "Asana rejected the authorization code (invalid_grant): it expired or was "
        "already used, or the redirect URI differs from the one used to authorize; "
        f"re-run {PROG}"
    ),
    "unauthorized_client": (
        "the app may not use the authorization-code grant (unauthorized_client): "
        "check the app's OAuth settings in Asana's developer console"
    ),
    "unsupported_grant_type": (
        "the token endpoint does not support this grant (unsupported_grant_type): check --token-url"
    ),
    "invalid_scope": (
        "Asana refused the requested scopes (invalid_scope): enable them for the app "
        "in Asana's developer console or choose others with --scope"
    ),
    "invalid_request": (
        "the token endpoint rejected the request as malformed (invalid_request): "
        "check --token-url and --redirect-uri"
    ),
}


def exchange_code(
    token_url: str,
    *,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    code: str,
    code_verifier: str,
    timeout: float = TOKEN_REQUEST_TIMEOUT,
    session: requests.Session | None = None,
) -> TokenResponse:
    """Exchange an authorization code for tokens at ``token_url``.

    Raises:
        AuthFailedError: the endpoint cannot be reached, answers with an OAuth
            error (RFC 6749 section 5.2) or without a refresh token.  Messages
            name what to fix and never contain secrets.

    """
    form = {
        "grant_type": "authorization_code",
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uri": redirect_uri,
        "code": code,
        "code_verifier": code_verifier,
    }
    post = session.post if session is not None else requests.post
    try:
        response = post(
            token_url,
            data=form,
            headers={"Accept": "application/json"},
            timeout=timeout,
            # Following would re-post the secret, the code and the verifier elsewhere.
            allow_redirects=False,
        )
    except requests.exceptions.Timeout as exc:
        raise AuthFailedError(
            f"the token endpoint {token_url} did not answer within {timeout:g} s; "
            f"check your network and re-run {PROG}"
        ) from exc
    except requests.exceptions.RequestException as exc:
        raise AuthFailedError(
            f"could not connect to the token endpoint {token_url} "
            f"({type(exc).__name__}); check --token-url and your network, then re-run "
            f"{PROG}"
        ) from exc

    if 300 <= response.status_code < 400:
        raise AuthFailedError(
            f"the token endpoint {token_url} answered with a {describe_redirect(response)}; "
            "it was not followed, so the client secret and the code were not sent on. Pass "
            f"the token endpoint itself with --token-url and re-run {PROG}"
        )
    secret_values = (client_secret, code, code_verifier)
    try:
        payload: Any = response.json()
    except ValueError:
        payload = None

    if response.ok and isinstance(payload, dict) and payload.get("refresh_token"):
        user = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        return TokenResponse(
            refresh_token=str(payload["refresh_token"]),
            access_token=str(payload.get("access_token") or ""),
            user_name=_optional_str(user.get("name")),
            user_email=_optional_str(user.get("email")),
            user_gid=_optional_str(user.get("gid") or user.get("id")),
        )

    where = f"{token_url} answered HTTP {response.status_code}"
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        error = payload["error"]
        description = payload.get("error_description")
        detail = f" [Asana: {safe_text(description, secret_values)}]" if description else ""
        hint = _TOKEN_ERROR_HINTS.get(error)
        if hint is None:
            hint = f"the token request failed ({safe_text(error, secret_values)}); re-run {PROG}"
        raise AuthFailedError(f"{hint}{detail} ({where})")
    if isinstance(payload, dict) and isinstance(payload.get("errors"), list) and payload["errors"]:
        first = payload["errors"][0]
        message = first.get("message") if isinstance(first, dict) else first
        raise AuthFailedError(
            f"the token request failed: {safe_text(message, secret_values)} ({where})"
        )
    if response.ok:
        raise AuthFailedError(
            f"the token response has no refresh_token ({where}); check --token-url"
        )
    kind = "JSON" if payload is not None else "not JSON"
    raise AuthFailedError(
        f"unexpected answer from the token endpoint ({where}, {kind}); check "
        f"--token-url, or try again later"
    )


def _optional_str(value: object) -> str | None:
    """Return ``value`` as a non-empty printable string, or None.

    The user's name and email are printed: server text, so without control characters.
    """
    if value is None:
        return None
    text = printable(str(value))
    return text or None


# ---------------------------------------------------------------------------- CLI


def _csv_or_space_list(values: Iterable[str] | None) -> list[str]:
    """Split repeated ``--scope`` values on blanks/commas, dropping duplicates."""
    result: list[str] = []
    for value in values or ():
        for item in value.replace(",", " ").split():
            if item not in result:
                result.append(item)
    return result


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``tap-asana-vl-auth``."""
    scopes_text = "\n".join(
        f"  {scope:<28}{purpose}" for scope, purpose in DEFAULT_SCOPE_PURPOSES.items()
    )
    full_access_text = textwrap.fill(
        f"{', '.join(FULL_ACCESS_STREAMS)}: their endpoints have no granular scope, "
        "so only a token with full permissions (--full-access, for an app registered "
        "with full permissions) can read them. With the default scopes the tap skips "
        "them with one warning each (or deselect them).",
        width=78,
        initial_indent="  ",
        subsequent_indent="  ",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Authorize tap-asana-vl in Asana (OAuth 2.0 authorization code + PKCE)\n"
            f"and save the refresh token as {ENV_REFRESH_TOKEN} in a .env file\n"
            "(mode 0600)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""\
setup:
  Create an app in Asana's developer console (https://app.asana.com/0/my-apps),
  add the redirect URL {DEFAULT_REDIRECT_URI} (or the one you pass with
  --redirect-uri: it must match exactly) and enable the permission scopes you
  request.  Put the app's client ID and secret in {ENV_CLIENT_ID} and
  {ENV_CLIENT_SECRET} (environment or the env file), then run
  {PROG}.

modes:
  (default)     listen on the local redirect URI, open the browser, wait
  --no-browser  listen, but only print the URL (open it on this machine)
  --headless    don't listen: open the printed URL anywhere, then paste the URL
                the browser was redirected to (or just its code) on stdin

default scopes (read only; what each is for):
{scopes_text}

streams that need full permissions:
{full_access_text}

left empty with the default scopes (full permissions read them):
  tasks.memberships and so the task_projects stream: need {SECTIONS_SCOPE}
                (--sections-scope, if the app is registered for it)
  goals.time_period: needs time_periods:read, not in Asana's scope list

exit codes: 0 ok, 1 authorization failed, 2 usage or configuration error.
""",
    )
    parser.add_argument(
        "--client-id",
        help=f"the app's client ID (default: ${ENV_CLIENT_ID}, then the env file)",
    )
    parser.add_argument(
        "--client-secret",
        help=(
            f"the app's client secret (default: ${ENV_CLIENT_SECRET}, then the env file; "
            "prefer those: command lines are visible to other local users)"
        ),
    )
    parser.add_argument(
        "--redirect-uri",
        default=DEFAULT_REDIRECT_URI,
        help=(
            "redirect URL registered for the app in Asana's developer console "
            "(default: %(default)s). Port 0 picks a free port (testing only)."
        ),
    )
    scope_group = parser.add_mutually_exclusive_group()
    scope_group.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help=(
            "scope(s) to request, space or comma separated; repeatable; replaces the "
            "default read-only scopes"
        ),
    )
    scope_group.add_argument(
        "--full-access",
        action="store_true",
        help=(
            f"request the '{FULL_ACCESS_SCOPE}' (full access) scope instead; needs an app "
            f"registered with full permissions; lets the tap read {', '.join(FULL_ACCESS_STREAMS)}"
        ),
    )
    scope_group.add_argument(
        "--sections-scope",
        action="store_true",
        help=(
            f"also request {SECTIONS_SCOPE}, which Asana needs for the task field "
            "memberships (so for the task_projects stream and the section columns); "
            "it is not in Asana's published scope list, and an app not registered for "
            "it gets its whole authorization refused"
        ),
    )
    parser.add_argument(
        "--env-file",
        default=DEFAULT_ENV_FILE,
        help="dotenv file to write the token to (default: %(default)s in the current directory)",
    )
    parser.add_argument(
        "--save-client",
        action="store_true",
        help=f"also store {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} in the env file",
    )
    mode_group = parser.add_mutually_exclusive_group()
    mode_group.add_argument(
        "--headless",
        action="store_true",
        help="don't listen; paste the redirected URL (or the code) on stdin",
    )
    mode_group.add_argument(
        "--no-browser",
        action="store_true",
        help="listen, but don't try to open a browser; just print the URL",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_CALLBACK_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for the redirect (default: %(default)g)",
    )
    parser.add_argument(
        "--print-token",
        action="store_true",
        help="also print the refresh token on stdout (nothing else is printed there)",
    )
    parser.add_argument(
        "--authorize-url",
        default=DEFAULT_AUTHORIZE_URL,
        help="authorization endpoint (default: %(default)s)",
    )
    parser.add_argument(
        "--token-url",
        default=DEFAULT_TOKEN_URL,
        help="token endpoint (default: %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _check_endpoint(url: str, option: str) -> None:
    """Refuse endpoints that are not http(s), or plain http to a remote host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{option} must be an http(s) URL, got {url!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise UsageError(
            f"{option} {url!r} uses plain http to a remote host; use https "
            "(secrets would travel unencrypted)"
        )


def _say(message: str = "") -> None:
    """Print a message for the user on stderr."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class _Settings:
    """Validated options."""

    client_id: str
    client_secret: str
    redirect_uri: str
    scopes: list[str]
    env_file: Path
    save_client: bool
    headless: bool
    open_browser: bool
    timeout: float
    print_token: bool
    authorize_url: str
    token_url: str


def _stdin_is_tty() -> bool:
    """Whether stdin is an interactive terminal."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _resolve_settings(args: argparse.Namespace) -> _Settings:
    """Validate options and fill client credentials from env / env file."""
    if not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    _check_endpoint(args.authorize_url, "--authorize-url")
    _check_endpoint(args.token_url, "--token-url")

    redirect_uri = args.redirect_uri.strip()
    parts = urllib.parse.urlsplit(redirect_uri)
    if redirect_uri != OOB_REDIRECT_URI and (
        parts.scheme not in ("http", "https") or not parts.hostname
    ):
        raise UsageError(
            f"--redirect-uri must be an http(s) URL (or {OOB_REDIRECT_URI} with "
            f"--headless), got {redirect_uri!r}"
        )
    if not args.headless and not (
        parts.scheme == "http" and (parts.hostname or "").lower() in _LOOPBACK_BIND_ADDRESSES
    ):
        raise UsageError(
            f"the redirect URI {redirect_uri!r} is not a local http:// address this "
            "command can listen on (localhost, 127.0.0.1 or [::1]); use --headless and "
            "paste the redirected URL instead"
        )

    env_file = Path(args.env_file).expanduser().absolute()
    if env_file.is_dir():
        raise UsageError(f"--env-file {str(env_file)!r} is a directory")
    if not env_file.parent.is_dir():
        raise UsageError(f"the directory of --env-file {str(env_file)!r} does not exist")
    if not os.access(env_file.parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to the directory of --env-file {str(env_file)!r}")
    try:
        # Checked again when writing; here so the user does not authorize in vain.
        check_owner(env_file)
    except NotOwnerError as exc:
        raise UsageError(f"{exc} (--env-file)") from exc
    try:
        file_values = read_env_file(env_file)
    except OSError as exc:
        raise UsageError(
            f"cannot read --env-file {str(env_file)!r}: {exc.strerror or exc}"
        ) from exc

    client_id = (
        args.client_id or os.environ.get(ENV_CLIENT_ID) or file_values.get(ENV_CLIENT_ID) or ""
    ).strip()
    client_secret = (
        args.client_secret
        or os.environ.get(ENV_CLIENT_SECRET)
        or file_values.get(ENV_CLIENT_SECRET)
        or ""
    ).strip()
    if not client_id and _stdin_is_tty():
        print("Asana app client ID: ", end="", file=sys.stderr, flush=True)
        client_id = sys.stdin.readline().strip()
    if not client_secret and client_id and _stdin_is_tty():
        client_secret = getpass.getpass("Asana app client secret (not echoed): ").strip()
    missing = [
        name
        for name, value in ((ENV_CLIENT_ID, client_id), (ENV_CLIENT_SECRET, client_secret))
        if not value
    ]
    if missing:
        raise UsageError(
            f"missing {' and '.join(missing)}: set {'it' if len(missing) == 1 else 'them'} "
            "in the environment or in "
            f"{env_file}, or pass --client-id/--client-secret (see {PROG} --help)"
        )

    scopes = [FULL_ACCESS_SCOPE] if args.full_access else _csv_or_space_list(args.scope)
    if args.scope is not None and not scopes:
        raise UsageError("--scope was given without any scope")
    if args.sections_scope:
        scopes = [*DEFAULT_SCOPES, SECTIONS_SCOPE]
    return _Settings(
        client_id=client_id,
        client_secret=client_secret,
        redirect_uri=redirect_uri,
        scopes=scopes or list(DEFAULT_SCOPES),
        env_file=env_file,
        save_client=args.save_client,
        headless=args.headless,
        open_browser=not args.no_browser,
        timeout=args.timeout,
        print_token=args.print_token,
        authorize_url=args.authorize_url,
        token_url=args.token_url,
    )


def _open_browser(open_url: OpenUrl | None, url: str) -> None:
    """Try to open ``url`` in a browser; never fails (the URL is printed anyway)."""
    if open_url is None:
        return
    try:
        opened = open_url(url)
    except Exception as exc:
        _say(f"Could not open a browser ({type(exc).__name__}); open the URL above yourself.")
        return
    if opened is False:
        _say("Could not open a browser; open the URL above yourself.")


def _read_pasted_line() -> str:
    """Read one line from stdin for headless mode."""
    try:
        line = sys.stdin.readline() if sys.stdin is not None else ""
    except (OSError, ValueError) as exc:
        raise AuthFailedError(
            f"cannot read the redirected URL from stdin ({type(exc).__name__})"
        ) from exc
    if not line:
        raise AuthFailedError(
            f"stdin closed before the redirected URL was pasted; re-run {PROG} --headless"
        )
    return line


def _authorize_url(settings: _Settings, redirect_uri: str, state: str, challenge: str) -> str:
    return build_authorize_url(
        settings.authorize_url,
        client_id=settings.client_id,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=challenge,
        scopes=settings.scopes,
    )


def _show_url(url: str) -> None:
    _say()
    _say(f"    {url}")
    _say()


def _obtain_code_headless(settings: _Settings, state: str, challenge: str) -> tuple[str, str]:
    """Print the URL and read the redirected URL (or code) from stdin."""
    url = _authorize_url(settings, settings.redirect_uri, state, challenge)
    _say("Open this URL in a browser (on any machine), sign in to Asana and click Allow:")
    _show_url(url)
    if settings.redirect_uri == OOB_REDIRECT_URI:
        _say("Asana then shows an authorization code. Paste it here and press Enter:")
    else:
        _say(
            textwrap.fill(
                f"Asana then sends the browser to {settings.redirect_uri}?code=...; that page "
                "may fail to load, which is fine. Copy the full URL from the address bar (or "
                "just the code) and paste it here, then press Enter:",
                width=78,
            )
        )
    attempts = 1
    while True:
        try:
            code = _parse_pasted(_read_pasted_line(), state, settings.redirect_uri)
        except NotPastedCodeError as exc:
            if attempts >= MAX_PASTE_ATTEMPTS:
                raise AuthFailedError(f"{exc}; re-run {PROG} --headless") from None
            attempts += 1
            _say(f"{PROG}: {exc}. Paste it again and press Enter:")
            continue
        return code, settings.redirect_uri


def _obtain_code_listening(
    settings: _Settings, state: str, challenge: str, open_url: OpenUrl | None
) -> tuple[str, str]:
    """Listen on the redirect URI, open the browser and wait for the redirect."""
    with CallbackListener(settings.redirect_uri, state) as listener:
        url = _authorize_url(settings, listener.redirect_uri, state, challenge)
        if open_url is not None:
            _say("Opening your browser to authorize tap-asana-vl in Asana.")
            _say("If it does not open, visit this URL on this machine:")
        else:
            _say("Open this URL in a browser on this machine, sign in to Asana and click Allow:")
        _show_url(url)
        _say(
            f"Waiting up to {settings.timeout:g} s for Asana to redirect to "
            f"{listener.redirect_uri} (Ctrl-C to abort) ..."
        )
        listener.start()
        _open_browser(open_url, url)
        code = wait_for_callback(listener, settings.timeout)
        return code, listener.redirect_uri


def _print_summary(settings: _Settings, token: TokenResponse, written_keys: list[str]) -> None:
    """Tell who authorized, where the token went and what to do next."""
    who = " ".join(
        part
        for part in (token.user_name, f"<{token.user_email}>" if token.user_email else None)
        if part
    )
    _say(f"Authorized as {who}." if who else "Authorized.")
    _say(f"Saved {', '.join(written_keys)} to {settings.env_file} (mode 0600).")
    file_values = read_env_file(settings.env_file)
    missing = [
        key
        for key in (ENV_CLIENT_ID, ENV_CLIENT_SECRET)
        if key not in file_values and not os.environ.get(key)
    ]
    if FULL_ACCESS_SCOPE not in settings.scopes:
        _say(
            textwrap.fill(
                f"Scoped token: the tap skips {', '.join(FULL_ACCESS_STREAMS)} (they need "
                "full permissions: re-run with --full-access if the app has them)"
                + (
                    ""
                    if SECTIONS_SCOPE in settings.scopes
                    else f" and task memberships (they need {SECTIONS_SCOPE}: --sections-scope)"
                )
                + ", with one warning each.",
                width=78,
            )
        )
    _say()
    _say("Next steps:")
    if missing:
        _say(
            f"  - The tap also needs {' and '.join(missing)} to refresh access tokens:\n"
            f"    add {'it' if len(missing) == 1 else 'them'} to {settings.env_file} "
            "(re-run with --save-client) or to your environment."
        )
    _say("  - With Meltano (reads .env in the project directory):")
    _say("      meltano run tap-asana-vl target-postgres")
    _say("  - Stand-alone (the tap reads TAP_ASANA_VL_* variables with --config ENV):")
    _say(f"      set -a; . {shlex.quote(str(settings.env_file))}; set +a")
    _say("      tap-asana-vl --config ENV --discover")
    _say(f"Keep {settings.env_file.name} private (it holds secrets) and out of version control.")


def _command_line(args: argparse.Namespace, scope_options: Sequence[str]) -> str:
    """The command line of this run with other scope options (no client secret)."""
    defaults = build_parser().parse_args([])
    words = [PROG]
    for option, name in (
        ("--client-id", "client_id"),
        ("--redirect-uri", "redirect_uri"),
        ("--env-file", "env_file"),
        ("--timeout", "timeout"),
        ("--authorize-url", "authorize_url"),
        ("--token-url", "token_url"),
    ):
        value = getattr(args, name)
        if value is not None and value != getattr(defaults, name):
            words += [option, f"{value:g}" if isinstance(value, float) else str(value)]
    for option, name in (
        ("--save-client", "save_client"),
        ("--headless", "headless"),
        ("--no-browser", "no_browser"),
        ("--print-token", "print_token"),
    ):
        if getattr(args, name):
            words.append(option)
    return shlex.join([*words, *scope_options])


def _rerun_advice(args: argparse.Namespace, settings: _Settings, refused: Sequence[str]) -> str:
    """The re-run command(s) that avoid the scopes Asana refused."""
    dropped = [scope for scope in settings.scopes if scope in refused]
    remaining = [scope for scope in settings.scopes if scope not in refused]
    lines: list[str] = []

    def offer(text: str, scope_options: list[str]) -> None:
        lines.extend((text, f"    {_command_line(args, scope_options)}"))

    if settings.scopes == [FULL_ACCESS_SCOPE]:
        offer(
            "The app is not registered for full permissions; re-run with the default read "
            f"scopes ({', '.join(FULL_ACCESS_STREAMS)} are then skipped):",
            [],
        )
    else:
        if dropped and remaining:
            default = remaining == list(DEFAULT_SCOPES)
            offer(
                f"Re-run without {' '.join(dropped)}:",
                [] if default else ["--scope", " ".join(remaining)],
            )
        elif not dropped:
            lines.append(
                "Asana did not name the refused scopes: enable the requested scopes for the "
                "app in Asana's developer console, or re-run with only those it is "
                "registered for (--scope ...)."
            )
        lead = "Or, if" if lines else "If"
        offer(f"{lead} the app is registered with full permissions:", ["--full-access"])
    if args.client_secret:
        lines.append(
            f"(Pass the client secret as before, or better set {ENV_CLIENT_SECRET}; it is "
            "not repeated here.)"
        )
    return "\n".join(lines)


def _run(args: argparse.Namespace, open_url: OpenUrl | None) -> int:
    """Run the whole flow; raises CliError on failure."""
    settings = _resolve_settings(args)
    if not settings.open_browser:
        open_url = None
    verifier, challenge = make_pkce_pair()
    state = secrets.token_urlsafe(32)

    try:
        if settings.headless:
            code, redirect_uri = _obtain_code_headless(settings, state, challenge)
        else:
            code, redirect_uri = _obtain_code_listening(settings, state, challenge, open_url)
    except ScopesRefusedError as exc:
        raise AuthFailedError(f"{exc}\n{_rerun_advice(args, settings, exc.refused)}") from None

    _say("Exchanging the authorization code for tokens ...")
    token = exchange_code(
        settings.token_url,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        redirect_uri=redirect_uri,
        code=code,
        code_verifier=verifier,
    )
    if settings.print_token:
        print(token.refresh_token, flush=True)

    # Asana grants all requested scopes or none; the tap reads this to skip, up front,
    # the streams and fields these scopes cannot read.
    values = {ENV_REFRESH_TOKEN: token.refresh_token, ENV_OAUTH_SCOPES: " ".join(settings.scopes)}
    if settings.save_client:
        values[ENV_CLIENT_ID] = settings.client_id
        values[ENV_CLIENT_SECRET] = settings.client_secret
    try:
        update_env_file(settings.env_file, values)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AuthFailedError(
            f"authorized, but could not write {settings.env_file}: {reason}; fix that and "
            f"re-run {PROG} (add --print-token to see the token instead)"
        ) from exc
    _print_summary(settings, token, list(values))
    return EXIT_OK


def main(argv: list[str] | None = None, *, open_url: OpenUrl | None = None) -> int:
    """Run ``tap-asana-vl-auth``; return the exit code.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
        open_url: opens the authorization URL in a browser (default:
            :func:`webbrowser.open`, which honours ``$BROWSER``); tests pass a
            function that follows the URL themselves.

    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _run(args, open_url if open_url is not None else webbrowser.open)
    except CliError as exc:
        _say(f"{PROG}: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
