"""Shared fixtures: a fresh fake Asana per test, and configs pointing the tap at it."""

from __future__ import annotations

import base64
import json
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
