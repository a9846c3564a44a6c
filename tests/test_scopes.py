"""OAuth scopes: stream declarations match Asana's spec, and the tap lives by them.

With known scopes (setting ``oauth_scopes``) streams they cannot read make no request and
get one warning each; fields they cannot read are left out. With unknown scopes, the
first 401/403 that blames a scope turns the stream off, with one warning.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tap_asana_vl import scopes
from tap_asana_vl.oauth import common as auth_command
from tap_asana_vl.tap import STREAM_TYPES
from tests import spec_scopes
from tests.conftest import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET
from tests.tap_runner import FAST, run_tap

SCHEMAS = Path(__file__).resolve().parent.parent / "tap_asana_vl" / "schemas"
BY_NAME = {stream_type.name: stream_type for stream_type in STREAM_TYPES}
# The spec's single-object GET of each stream's records: where its field tables are.
OBJECT_GET = {
    "workspaces": "/workspaces/{workspace_gid}",
    "users": "/users/{user_gid}",
    "projects": "/projects/{project_gid}",
    "tasks": "/tasks/{task_gid}",
    "subtasks": "/tasks/{task_gid}",
    "stories": "/stories/{story_gid}",
    "subtask_stories": "/stories/{story_gid}",
    "attachments": "/attachments/{attachment_gid}",
    "time_tracking_entries": "/time_tracking_entries/{time_tracking_entry_gid}",
    "sections": "/sections/{section_gid}",
    "project_memberships": "/project_memberships/{project_membership_gid}",
    "status_updates": "/status_updates/{status_update_gid}",
    "tags": "/tags/{tag_gid}",
    "custom_fields": "/custom_fields/{custom_field_gid}",
    "teams": "/teams/{team_gid}",
    "team_memberships": "/team_memberships/{team_membership_gid}",
    "portfolios": "/portfolios/{portfolio_gid}",
    "portfolio_items": "/projects/{project_gid}",
    "goals": "/goals/{goal_gid}",
}
FULL_ONLY = {"sections", "project_memberships", "status_updates"}


# ------------------------------------------------------------------ declarations vs spec


@pytest.mark.parametrize("stream_type", STREAM_TYPES, ids=lambda s: s.name)
def test_required_scope_matches_the_spec(stream_type):
    if stream_type.from_parent_field:
        parent = stream_type.parent_stream_type
        assert stream_type.from_parent_field in parent.field_scopes
        return
    assert stream_type.required_scope == spec_scopes.required_scope(stream_type.path)


def test_subtasks_search_needs_the_same_scope():
    assert spec_scopes.required_scope("/workspaces/{workspace_gid}/tasks/search") == "tasks:read"
    assert spec_scopes.required_scope("/tasks") == BY_NAME["subtasks"].required_scope


@pytest.mark.parametrize("stream_type", STREAM_TYPES, ids=lambda s: s.name)
def test_field_scopes_match_the_spec(stream_type):
    path = OBJECT_GET.get(stream_type.name)
    if path is None:
        assert stream_type.field_scopes == {}
        return
    schema = json.loads((SCHEMAS / f"{stream_type.name}.json").read_text())
    expected = {
        name: needed
        for name, needed in spec_scopes.field_scopes(path).items()
        if name in schema["properties"]
    }
    assert stream_type.field_scopes == expected


def test_default_scopes_are_listed_and_cover_every_stream():
    listed = spec_scopes.scope_list()
    assert set(auth_command.DEFAULT_SCOPES) <= listed
    assert all(scope.endswith(":read") for scope in auth_command.DEFAULT_SCOPES)
    assert auth_command.SECTIONS_SCOPE == scopes.SECTIONS_SCOPE
    assert scopes.SECTIONS_SCOPE not in listed  # hence opt-in
    for stream_type in STREAM_TYPES:
        scope = stream_type.required_scope
        if scope in listed:
            assert scope in auth_command.DEFAULT_SCOPES, stream_type.name
        for needed in stream_type.field_scopes.values():
            assert {s for s in needed if s in listed} <= set(auth_command.DEFAULT_SCOPES)
    full_only = {s.name for s in STREAM_TYPES if not s.required_scope and not s.from_parent_field}
    assert full_only == FULL_ONLY == set(auth_command.FULL_ACCESS_STREAMS)


# ------------------------------------------------------------------ runs


def scoped_config(fake, granted, *, declared=True):
    fake.register_client(OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET)
    config = {
        "client_id": OAUTH_CLIENT_ID,
        "client_secret": OAUTH_CLIENT_SECRET,
        "refresh_token": fake.issue_refresh_token(OAUTH_CLIENT_ID, scopes=granted),
        "api_url": fake.api_url,
        "oauth_token_url": fake.token_url,
        **FAST,
    }
    if declared:
        config["oauth_scopes"] = " ".join(granted)
    return config


def requests_to(fake, suffix: str) -> int:
    return sum(1 for r in fake.requests if r.path.endswith(suffix))


def warnings_about(logs: str, stream: str) -> list[str]:
    return [
        line
        for line in logs.splitlines()
        if line.startswith("WARNING") and f"stream '{stream}'" in line.lower()
    ]


def test_known_default_scopes_skip_up_front(fake):
    config = scoped_config(fake, auth_command.DEFAULT_SCOPES)
    result = run_tap(config)

    # Nothing the grant cannot read was asked for: no 403 at all.
    assert [r.path for r in fake.requests if r.status >= 400] == []
    for suffix in ("/sections", "/project_memberships", "/status_updates"):
        assert requests_to(fake, suffix) == 0
    for stream in FULL_ONLY:
        (warning,) = warnings_about(result.logs, stream)
        assert "full permissions" in warning
        assert "tap-asana-vl-auth --full-access" in warning
        assert "deselect the stream" in warning
        assert result.records[stream] == []
    (warning,) = warnings_about(result.logs, "task_projects")
    assert "project_sections:read" in warning
    assert "--sections-scope" in warning
    # Fields: one warning per stream, the fields load as null.
    for stream, field in (("tasks", "memberships"), ("subtasks", "memberships")):
        (warning,) = warnings_about(result.logs, stream)
        assert f"leaving out {field} (needs project_sections:read)" in warning
        assert result.records[stream]
        assert all(record.get(field) is None for record in result.records[stream])
    (warning,) = warnings_about(result.logs, "goals")
    assert "time_period (needs time_periods:read)" in warning
    assert all(record.get("time_period") is None for record in result.records["goals"])
    # What the grant covers is synced as usual.
    for stream in ("workspaces", "users", "projects", "stories", "teams", "tags"):
        assert result.records[stream], stream
    assert any(r.get("actual_time_minutes") is not None for r in result.records["tasks"])
    assert "revoked" not in result.logs


def test_known_scopes_without_stories(fake):
    granted = [s for s in auth_command.DEFAULT_SCOPES if s != "stories:read"]
    result = run_tap(scoped_config(fake, granted))
    assert requests_to(fake, "/stories") == 0
    for stream in ("stories", "subtask_stories"):
        (warning,) = warnings_about(result.logs, stream)
        assert "needs stories:read" in warning
    assert result.records["tasks"]


def test_known_scopes_without_projects_turn_off_what_hangs_below(fake):
    granted = [s for s in auth_command.DEFAULT_SCOPES if s != "projects:read"]
    result = run_tap(scoped_config(fake, granted))
    assert [r.path for r in fake.requests if r.status >= 400] == []
    assert requests_to(fake, "/projects") == 0
    assert requests_to(fake, "/tasks") == 0  # tasks are listed per project
    (warning,) = warnings_about(result.logs, "tasks")
    assert "needs projects:read" in warning
    assert result.records["users"]


def test_a_grant_that_reads_nothing_fails_instead_of_a_green_empty_run(fake):
    with pytest.raises(Exception, match="can read none of the selected streams"):
        run_tap(scoped_config(fake, ["tasks:read"]))  # no workspaces:read: nothing below
    assert fake.requests == []


def test_full_access_scope_reads_everything(fake):
    result = run_tap(scoped_config(fake, ["default"]))
    for stream in FULL_ONLY:
        assert result.records[stream], stream
        assert warnings_about(result.logs, stream) == []
    assert any(r.get("memberships") for r in result.records["tasks"])


@pytest.mark.parametrize("status", [403, 401])
def test_unknown_scopes_one_request_and_one_warning_per_stream(fake, status):
    fake.scope_error_status = status
    # Field-level scopes granted, so only the full-permission endpoints are refused.
    granted = [*auth_command.DEFAULT_SCOPES, "project_sections:read", "time_periods:read"]
    config = scoped_config(fake, granted, declared=False)
    result = run_tap({**config, "max_concurrent_requests": 8})

    assert len(fake.dataset.projects) > 1
    for suffix in ("/sections", "/project_memberships", "/status_updates"):
        assert requests_to(fake, suffix) == 1, suffix  # no per-project repeats
    for stream in FULL_ONLY:
        (warning,) = warnings_about(result.logs, stream)
        assert "for the rest of this run" in warning
        assert "OAuth scopes" in warning
        assert "tap-asana-vl-auth --full-access" in warning
    assert result.records["tasks"]
    assert any(r.get("memberships") for r in result.records["tasks"])
    # A scope refusal is not a dead token: no forced refresh, no "revoked" advice.
    assert "revoked" not in result.logs
    assert "refreshing the OAuth token" not in result.logs
    refreshes = [t for t in fake.token_requests if t.grant_type == "refresh_token"]
    assert len(refreshes) == 1


def test_personal_access_token_ignores_oauth_scopes(fake, pat_config):
    result = run_tap({**pat_config, **FAST, "oauth_scopes": "tasks:read"})
    for stream in FULL_ONLY:
        assert result.records[stream], stream
