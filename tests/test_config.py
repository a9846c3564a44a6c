"""Bad settings fail before any request, with one clear line naming the setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from singer_sdk.exceptions import ConfigValidationError

from tap_asana_vl.settings import ENV_PREFIX
from tap_asana_vl.tap import STREAM_TYPES, TapAsanaVl
from tests.settings_samples import as_text, sample_configs
from tests.tap_runner import run_cli, run_tap

SECRET = "fake-pat-0123456789abcdef"

CASES = [
    pytest.param({}, "No credentials: set access_token", id="no-auth"),
    pytest.param(
        {"access_token": SECRET, "client_id": "id"},
        "keep only one authentication mode",
        id="both-modes",
    ),
    pytest.param(
        {"client_id": "id", "refresh_token": "rt-secret-value"},
        "client_secret missing",
        id="half-oauth",
    ),
    pytest.param(
        {"access_token": SECRET, "start_date": "last tuesday"},
        "start_date 'last tuesday' is not an ISO 8601",
        id="bad-start-date",
    ),
    pytest.param(
        {"access_token": SECRET, "page_size": 500},
        "500 is greater than the maximum of 100 in config['page_size']",
        id="page-size-too-big",
    ),
    pytest.param(
        {"access_token": SECRET, "page_size": 0},
        "0 is less than the minimum of 1 in config['page_size']",
        id="page-size-zero",
    ),
    pytest.param(
        {"access_token": SECRET, "api_url": "app.asana.com/api"},
        "api_url 'app.asana.com/api' is not an http(s) URL",
        id="api-url-not-url",
    ),
    pytest.param(
        {"access_token": SECRET, "api_url": "http://asana-proxy.example.com/api/1.0"},
        "api_url 'http://asana-proxy.example.com/api/1.0' uses plain http to a remote host",
        id="api-url-plain-http",
    ),
    pytest.param(
        {
            "client_id": "id",
            "client_secret": "cs-secret-value",
            "refresh_token": "rt-secret-value",
            "oauth_token_url": "http://10.1.2.3/-/oauth_token",
        },
        "oauth_token_url 'http://10.1.2.3/-/oauth_token' uses plain http to a remote host",
        id="token-url-plain-http",
    ),
    pytest.param(
        {"access_token": "fake-pat first-half second-half"},
        "access_token contains spaces or control characters",
        id="token-with-space",
    ),
    pytest.param(
        {"access_token": [SECRET]},
        "access_token must be a string (its value is not shown: the setting is secret)",
        id="secret-of-wrong-type",
    ),
    pytest.param(
        {
            "client_id": "id",
            "client_secret": {"value": "cs-secret-value"},
            "refresh_token": ["rt-secret-value"],
        },
        "client_secret must be a string (its value is not shown",
        id="oauth-secrets-of-wrong-type",
    ),
    pytest.param(
        {"access_token": SECRET, "workspace_gids": "123"},
        "'123' is not of type 'array'",
        id="gids-not-a-list",
    ),
]


@pytest.mark.parametrize(("config", "message"), CASES)
def test_bad_config_fails_before_any_request(fake, tmp_path, config, message):
    proc = run_cli(tmp_path, {"api_url": fake.api_url, **config})
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert fake.requests == []
    for value in (SECRET, "rt-secret-value", "cs-secret-value"):
        assert value not in proc.stderr


def test_discovery_needs_no_credentials_and_no_network(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tap_asana_vl", "--discover"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=True,
    )
    catalog = json.loads(proc.stdout)
    streams = {s["tap_stream_id"]: s for s in catalog["streams"]}
    assert set(streams) == {stream_type.name for stream_type in STREAM_TYPES}
    assert len(streams) == 27
    bridges = {
        "task_projects": ["task_gid", "project_gid"],
        "portfolio_items": ["portfolio_gid", "gid"],
        # Derived tables (issue #16).
        "task_custom_field_values": ["task_gid", "custom_field_gid"],
        "project_custom_field_values": ["project_gid", "custom_field_gid"],
        "task_tags": ["task_gid", "tag_gid"],
        "task_followers": ["task_gid", "user_gid"],
        "task_dependencies": ["task_gid", "depends_on_gid"],
        "task_history": ["story_gid"],
    }
    for name, stream in streams.items():
        assert stream["key_properties"] == bridges.get(name, ["gid"]), name
    assert streams["tasks"]["replication_key"] == "modified_at"
    assert streams["projects"]["replication_key"] == "modified_at"
    assert streams["stories"]["replication_key"] == "created_at"
    assert "replication_key" not in streams["users"]


def test_a_null_setting_means_its_default(fake, pat_config):
    """Settings with a default are read as given, or as their config_jsonschema default."""
    nulls = {
        "include_attachments": None,  # was read as false
        "include_archived_projects": None,  # was read as "leave archived projects out"
        "page_size": None,
        "request_timeout": None,
    }
    result = run_tap({**pat_config, "max_requests_per_minute": 100_000, **nulls})
    assert {r["gid"] for r in result.records["attachments"]} == set(fake.dataset.attachments)
    assert {r["gid"] for r in result.records["projects"]} == set(fake.dataset.projects)


# --- every setting from the environment (--config ENV) ---------------------------------


@pytest.mark.parametrize("config", sample_configs(), ids=["pat-mode", "oauth-mode"])
def test_every_setting_is_typed_when_read_from_the_environment(monkeypatch, config):
    """TAP_ASANA_VL_<NAME>, as text, reaches the tap as its setting's JSON type."""
    for name in os.environ:
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in config.items():
        monkeypatch.setenv(ENV_PREFIX + name.upper(), as_text(value))

    try:
        tap = TapAsanaVl(config={}, parse_env_config=True, validate_config=True)
    except ConfigValidationError as exc:
        pytest.fail(f"valid settings refused: {exc.errors}")

    for name, value in config.items():
        got = tap.config.get(name)
        assert (got, type(got)) == (value, type(value)), name
