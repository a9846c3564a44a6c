"""Authentication during a sync: one shared OAuth token, refreshes, 401s, bad credentials."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import urllib.parse

import pytest
from singer_sdk.exceptions import FatalAPIError

import tap_asana_vl.transport
from tap_asana_vl.auth import AsanaAuthError
from tests.conftest import secret_encodings
from tests.tap_runner import FAST, run_cli, run_tap

TOKEN_PATH = r"^/-/oauth_token"


def _refresh_calls(fake) -> list:
    return [t for t in fake.token_requests if t.grant_type == "refresh_token"]


def _failed(api: list) -> list:
    """API requests that did not succeed, except the first events call of a project or
    workspace, which Asana answers 412 with the first sync token (by design)."""
    return [
        r
        for r in api
        if r.status != 200
        and not (r.path.endswith("/events") and r.status == 412 and "sync" not in r.query)
    ]


def test_one_oauth_token_serves_every_stream(fake, oauth_config):
    result = run_tap({**oauth_config, **FAST})
    assert len(result.gids("tasks")) == len(fake.dataset.tasks)
    assert len(_refresh_calls(fake)) == 1
    api = [r for r in fake.requests if r.path.startswith("/api/1.0/")]
    assert len({r.token for r in api}) == 1
    assert _failed(api) == []


@pytest.mark.parametrize(("workers", "latency"), [(1, 0.04), (10, 0.1)])
def test_short_lived_tokens_are_refreshed_before_they_expire(fake, oauth_config, workers, latency):
    fake.access_token_ttl = 1
    fake.latency = latency  # the sync outlives several one-second tokens
    started = time.monotonic()
    result = run_tap({**oauth_config, **FAST, "max_concurrent_requests": workers})
    elapsed = time.monotonic() - started

    assert sorted(result.gids("stories")) == sorted(fake.dataset.stories)
    api = [r for r in fake.requests if r.path.startswith("/api/1.0/")]
    assert _failed(api) == [], "a request went out with an expired token"
    refreshes = len(_refresh_calls(fake))
    assert refreshes >= 2
    # Refreshed a quarter of the TTL early, i.e. every 0.75 s, by one thread for all:
    # never once per request or per thread.
    assert refreshes <= elapsed / 0.75 + 1


def test_a_401_mid_sync_refreshes_once_and_retries(fake, oauth_config):
    task = next(iter(fake.dataset.tasks))
    fake.inject(rf"/api/1\.0/tasks/{task}/stories", 401, times=1)
    result = run_tap({**oauth_config, **FAST})

    assert sorted(result.gids("stories")) == sorted(fake.dataset.stories)
    assert len(_refresh_calls(fake)) == 2
    story_calls = fake.requests_for(f"/api/1.0/tasks/{task}/stories")
    assert [r.status for r in story_calls] == [401, 200]
    assert story_calls[0].token != story_calls[1].token


def test_a_second_401_for_the_same_request_fails_clearly(fake, oauth_config):
    task = next(iter(fake.dataset.tasks))
    fake.inject(rf"/api/1\.0/tasks/{task}/stories", 401, times=2)
    # One request at a time: with others in flight, one may succeed with the refreshed
    # token between the two 401s, and a token that has worked may be refreshed once
    # more (AsanaOAuthAuthenticator.reject) while the run is already failing.
    with pytest.raises(AsanaAuthError, match="tap-asana-vl-auth"):
        run_tap({**oauth_config, **FAST, "max_concurrent_requests": 1})
    assert len(_refresh_calls(fake)) == 2


def test_a_rejected_personal_token_fails_without_retrying(fake, pat_config):
    with pytest.raises(AsanaAuthError, match="personal access token"):
        run_tap({**pat_config, **FAST, "access_token": "fake-pat-revoked"})
    assert len(fake.requests) == 1


def test_rotated_refresh_token_is_used_for_the_rest_of_the_run(fake, oauth_config):
    fake.rotate_refresh_tokens = True
    fake.access_token_ttl = 1
    fake.latency = 0.04
    result = run_tap({**oauth_config, **FAST, "max_concurrent_requests": 1})
    assert sorted(result.gids("stories")) == sorted(fake.dataset.stories)
    assert len(_refresh_calls(fake)) >= 2
    assert all(t.status == 200 for t in fake.token_requests)
    assert "new refresh token" in result.logs
    assert oauth_config["refresh_token"] not in result.logs


def _run_cli(config: dict, tmp_path) -> subprocess.CompletedProcess[str]:
    return run_cli(tmp_path, config)


def test_revoked_refresh_token_exits_nonzero_with_reauthorize_hint(fake, oauth_config, tmp_path):
    fake.revoke_refresh_token(oauth_config["refresh_token"])
    proc = _run_cli({**oauth_config, **FAST}, tmp_path)

    assert proc.returncode != 0
    assert "invalid_grant" in proc.stderr
    assert "tap-asana-vl-auth" in proc.stderr
    for secret in (oauth_config["refresh_token"], oauth_config["client_secret"]):
        assert secret not in proc.stderr
        assert secret not in proc.stdout
    assert [r for r in fake.requests if r.path.startswith("/api/1.0/")] == []


def test_wrong_client_secret_names_the_settings(fake, oauth_config, tmp_path):
    proc = _run_cli({**oauth_config, **FAST, "client_secret": "not-the-secret"}, tmp_path)
    assert proc.returncode != 0
    assert "invalid_client" in proc.stderr
    assert "client_secret" in proc.stderr
    assert "not-the-secret" not in proc.stderr


def test_a_token_pasted_with_a_trailing_newline_still_works(fake, pat_config):
    result = run_tap({**pat_config, **FAST, "access_token": fake.pat + "\n"})
    assert len(result.gids("tasks")) == len(fake.dataset.tasks)


def test_a_token_endpoint_echoing_the_request_leaks_no_secret(fake, oauth_config, tmp_path):
    secret = "cs/+=:secret~value"
    fake.register_client(oauth_config["client_id"], secret)
    refresh = oauth_config["refresh_token"]
    form = urllib.parse.urlencode({"client_secret": secret, "refresh_token": refresh})
    basic = base64.b64encode(f"{oauth_config['client_id']}:{secret}".encode()).decode()
    fake.inject(
        TOKEN_PATH,
        400,
        body={"error": f"\x1b[31mbad request: {form} {basic} {json.dumps(secret)}"},
    )
    proc = _run_cli({**oauth_config, **FAST, "client_secret": secret}, tmp_path)

    assert proc.returncode != 0
    assert "bad request" in proc.stderr
    assert "\x1b" not in proc.stderr
    for value in (secret, refresh):
        for form in secret_encodings(value):
            assert form not in proc.stderr


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirecting_token_endpoint_gets_no_secret(fake, oauth_config, catcher, status):
    fake.inject(TOKEN_PATH, status, headers={"Location": catcher.url}, times=None)
    with pytest.raises(AsanaAuthError, match=f"redirect \\(HTTP {status} to 127.0.0.1"):
        run_tap({**oauth_config, **FAST})
    assert catcher.bodies == []


@pytest.fixture
def quick_backoff(monkeypatch):
    """Real backoff waits seconds per retry; the policy, not the wait, is under test."""
    monkeypatch.setattr(tap_asana_vl.transport, "backoff_seconds", lambda failures: 0.01)


def _after_first_refresh(fake, action) -> threading.Thread:
    """Run ``action`` once the run's first token is in use: a fault mid-run."""

    def watch() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(r.path.startswith("/api/1.0/") for r in fake.requests):
                action()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_token_endpoint_5xx_and_timeout_mid_run_are_retried(fake, oauth_config, quick_backoff):
    fake.access_token_ttl = 1
    fake.latency = 0.04  # the sync outlives the first token

    def break_token_endpoint() -> None:
        fake.inject(TOKEN_PATH, 503, times=1)
        fake.inject(TOKEN_PATH, 502, times=1)
        fake.inject(TOKEN_PATH, 200, times=1, delay=1.5, body={})  # beyond request_timeout

    watcher = _after_first_refresh(fake, break_token_endpoint)
    result = run_tap({**oauth_config, **FAST, "max_concurrent_requests": 1, "request_timeout": 1})
    watcher.join()

    assert sorted(result.gids("stories")) == sorted(fake.dataset.stories)
    statuses = [r.status for r in fake.requests_for("/-/oauth_token")]
    assert statuses[:4] == [200, 503, 502, 200]  # the 4th one answered too late
    assert "token endpoint" in result.logs
    assert "Retrying" in result.logs


def test_a_token_endpoint_that_stays_down_fails_without_blaming_the_credentials(
    fake, oauth_config, quick_backoff
):
    fake.inject(TOKEN_PATH, 503, times=None)
    with pytest.raises(FatalAPIError) as caught:
        run_tap({**oauth_config, **FAST, "max_retries": 2})
    message = str(caught.value)
    assert "token endpoint" in message
    assert "503" in message
    assert "after 3 attempts" in message
    for setting in ("client_id", "client_secret", "refresh_token", "tap-asana-vl-auth"):
        assert setting not in message
    assert len(fake.requests_for("/-/oauth_token")) == 3


def test_a_401_long_after_a_forced_refresh_refreshes_again(fake, oauth_config):
    tasks = list(fake.dataset.tasks)
    fake.inject(rf"/api/1\.0/tasks/{tasks[0]}/stories", 401, times=1)
    fake.inject(rf"/api/1\.0/tasks/{tasks[-1]}/stories", 401, times=1)
    result = run_tap({**oauth_config, **FAST, "max_concurrent_requests": 1})

    assert sorted(result.gids("stories")) == sorted(fake.dataset.stories)
    assert len(_refresh_calls(fake)) == 3
