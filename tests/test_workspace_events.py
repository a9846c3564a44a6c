"""Deletes from one ``GET /workspaces/{gid}/events`` per workspace per run.

Each project's events cost one request per project per run; a workspace's events cost
one per workspace (workspace_events.py). Where Asana refuses them (402/403) the tap
reads each project's events, as tests/test_deletes.py checks in detail.
"""

from __future__ import annotations

from typing import Any

import pytest
from singer_sdk.exceptions import FatalAPIError

from tests.tap_runner import FAST, run_tap

DELETED_AT = "_sdc_deleted_at"


@pytest.fixture
def config(pat_config: dict[str, Any]) -> dict[str, Any]:
    return {**pat_config, **FAST, "include_subtasks": False, "include_attachments": False}


def _deleted_tasks(result) -> set[str]:
    return {r["gid"] for r in result.records["tasks"] if r.get(DELETED_AT)}


def _single_home_task(ds) -> dict:
    return next(t for t in ds.tasks.values() if len(t["projects"]) == 1)


def test_first_run_keeps_one_token_per_workspace_and_reads_no_project_events(fake, config):
    result = run_tap(config)

    assert fake.requests_for("/api/1.0/events") == []
    calls = [r for r in fake.requests if r.path.endswith("/events")]
    assert sorted(r.path for r in calls) == sorted(
        f"/api/1.0/workspaces/{w}/events" for w in fake.dataset.workspaces
    )
    assert {r.status for r in calls} == {412}  # no token yet: not an error
    tokens = result.state["bookmarks"]["tasks"]["workspace_events"]
    assert set(tokens) == set(fake.dataset.workspaces)
    assert all(tokens.values())
    assert not _deleted_tasks(result)


def test_an_incremental_run_costs_no_request_per_project_for_tasks(fake, config):
    first = run_tap(config)
    task = _single_home_task(fake.dataset)
    fake.delete_task(task["gid"])
    fake.reset_log()

    second = run_tap(config, state=first.state)

    assert _deleted_tasks(second) == {task["gid"]}
    per_project = [
        r
        for r in fake.requests
        if r.path in {"/api/1.0/events", "/api/1.0/tasks"}
        and ("project" in r.query or "resource" in r.query)
    ]
    assert per_project == []
    workspaces = len(fake.dataset.workspaces)
    assert len([r for r in fake.requests if r.path.endswith("/events")]) == workspaces
    assert len([r for r in fake.requests if r.path.endswith("/tasks/search")]) == workspaces


def test_an_expired_workspace_token_marks_nothing_and_the_run_reconciles(fake, config):
    first = run_tap(config)
    task = _single_home_task(fake.dataset)
    fake.delete_task(task["gid"])
    fake.advance_clock(25 * 3600)

    second = run_tap(config, state=first.state)

    assert "events token for workspace" in second.logs
    assert not _deleted_tasks(second)
    # The token was over 24 h old: this run is a reconcile (reconcile.py), no next one.
    assert "this run reconciles tasks" in second.logs
    assert "requested" not in second.state["bookmarks"]["tasks"]["reconcile"]
    assert any(m["type"] == "ACTIVATE_VERSION" and m["stream"] == "tasks" for m in second.messages)
    workspace = task["workspace"]["gid"]
    tokens = second.state["bookmarks"]["tasks"]["workspace_events"]
    assert tokens[workspace] != first.state["bookmarks"]["tasks"]["workspace_events"][workspace]


@pytest.mark.parametrize("status", [402, 403])
def test_where_asana_refuses_workspace_events_each_projects_events_are_read(fake, config, status):
    fake.workspace_events_workspaces = set()
    fake.workspace_events_status = status
    first = run_tap(config)
    task = _single_home_task(fake.dataset)
    fake.delete_task(task["gid"])

    second = run_tap(config, state=first.state)

    assert _deleted_tasks(second) == {task["gid"]}
    assert len(fake.requests_for("/api/1.0/events")) == 2 * len(fake.dataset.projects)
    assert "Workspace events unavailable" in second.logs
    assert "workspace_events" not in second.state["bookmarks"]["tasks"]


def test_a_run_stopped_before_the_workspace_is_written_reads_its_events_again(fake, config):
    first = run_tap(config)
    task = _single_home_task(fake.dataset)
    fake.delete_task(task["gid"])
    # The events are read (first project of the workspace), then the run dies.
    fake.inject(r"/tasks/search", status=500, times=None)
    with pytest.raises(FatalAPIError, match="Giving up"):
        run_tap({**config, "max_retries": 0}, state=first.state)
    fake.clear_faults()

    again = run_tap(config, state=first.state)

    assert _deleted_tasks(again) == {task["gid"]}
