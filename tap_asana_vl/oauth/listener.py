"""The one-shot HTTP listener on the local redirect URI.

It answers the browser Asana sends back after "Allow": the redirect path gets a small
page and hands the code (or the error) to the waiting command; anything else -- a
favicon request, a browser pre-connect -- is ignored.  Request lines carry the code, so
nothing is logged.
"""

from __future__ import annotations

import errno
import html
import http.server
import socket
import socketserver
import threading
import urllib.parse
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from tap_asana_vl.oauth.callback import callback_params, parse_callback
from tap_asana_vl.oauth.common import PROG, AuthFailedError, CliError, UsageError

__all__ = [
    "DEFAULT_REDIRECT_URI",
    "LOOPBACK_BIND_ADDRESSES",
    "CallbackListener",
    "wait_for_callback",
]

DEFAULT_REDIRECT_URI = "http://localhost:8080/callback"

# Hosts the callback listener may bind to, mapped to the address it binds.
LOOPBACK_BIND_ADDRESSES = {
    "localhost": "127.0.0.1",
    "127.0.0.1": "127.0.0.1",
    "::1": "::1",
}


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
    server_version = PROG
    sys_version = ""

    def do_GET(self) -> None:
        """Handle a GET: the OAuth redirect or something to ignore."""
        listener = self.server.listener
        target = urllib.parse.urlsplit(self.path)
        if (target.path or "/") != listener.path:
            self._send(404, "Not found", "This address only receives Asana's redirect.")
            return
        params = callback_params(self.path)
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
        if parts.scheme != "http" or host not in LOOPBACK_BIND_ADDRESSES:
            raise UsageError(
                f"cannot listen for the redirect on {redirect_uri!r}: the listener needs "
                "an http:// URI on localhost, 127.0.0.1 or [::1]; use --headless to "
                "paste the redirected URL instead"
            )
        try:
            port = parts.port if parts.port is not None else 80
        except ValueError as exc:
            raise UsageError(f"invalid port in redirect URI {redirect_uri!r}") from exc
        bind_address = LOOPBACK_BIND_ADDRESSES[host]
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
