"""Shared fixtures: a fresh fake Asana per test, and configs pointing the tap at it."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.fake_asana import FakeAsana, build_dataset

OAUTH_CLIENT_ID = "test-client"
OAUTH_CLIENT_SECRET = "test-client-secret-value"


@pytest.fixture
def fake() -> Iterator[FakeAsana]:
    """A fake Asana with a small dataset: 2 workspaces, 3 projects each, 12 tasks each."""
    with FakeAsana(build_dataset(seed=11)) as server:
        yield server


class Catcher(http.server.ThreadingHTTPServer):
    """Another host, as far as a client is concerned: records every request body it gets."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        super().__init__(("127.0.0.1", 0), _CatcherHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/elsewhere"


class _CatcherHandler(http.server.BaseHTTPRequestHandler):
    server: Catcher

    def do_POST(self) -> None:
        self.server.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        # A token answer, so a client that followed the redirect would carry on.
        body = b'{"access_token": "caught-access", "refresh_token": "caught-refresh"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def catcher() -> Iterator[Catcher]:
    """A local server standing in for the host a token endpoint redirects to."""
    server = Catcher()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def pat_config(fake: FakeAsana) -> dict[str, Any]:
    """Tap config authenticating with a personal access token."""
    return {"access_token": fake.pat, "api_url": fake.api_url}


@pytest.fixture
def oauth_config(fake: FakeAsana) -> dict[str, Any]:
    """Tap config authenticating with an OAuth refresh token."""
    fake.register_client(OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET)
    return {
        "client_id": OAUTH_CLIENT_ID,
        "client_secret": OAUTH_CLIENT_SECRET,
        "refresh_token": fake.issue_refresh_token(OAUTH_CLIENT_ID),
        "api_url": fake.api_url,
        "oauth_token_url": fake.token_url,
    }


def token_grant(
    fake: FakeAsana, client_id: str, client_secret: str, **form: str
) -> requests.Response:
    """POST one grant (``grant_type=…`` and its fields) to the fake's token endpoint."""
    return requests.post(
        fake.token_url,
        data={"client_id": client_id, "client_secret": client_secret, **form},
        timeout=10,
    )


def secret_encodings(secret: str) -> list[str]:
    """The forms a secret travels in: raw, URL-encoded, JSON, base64 (alone or in a header)."""
    forms = [
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret, safe="").replace("%2F", "%2f"),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
        json.dumps(secret),
        json.dumps(secret, ensure_ascii=False),
    ]
    # Alone and inside a Basic header, at each of the three byte alignments.
    for prefix in ("", "i:", "id:", "cid:"):
        raw = (prefix + secret).encode()
        forms += [base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]
    return list(dict.fromkeys(forms))
