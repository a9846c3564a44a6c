"""Tasks in no project (a person's My Tasks) land in ``tasks`` with empty memberships.

Paid plans find them with the workspace task search; free plans list each user's
assigned tasks (``include_tasks_without_projects``).
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.tap_runner import FAST, run_tap


@pytest.fixture
def config(pat_config: dict[str, Any]) -> dict[str, Any]:
    return {**pat_config, **FAST, "include_attachments": False}


def _my_task(fake) -> dict:
    ds = fake.dataset
    workspace = next(iter(ds.workspaces))
    user = ds.users_by_workspace[workspace][1]["gid"]
    task = ds.add_task_without_project(workspace, user, name="Call the bank")
    ds.add_story(task["gid"], "a note to self")
    return task


def _per_user_listings(fake) -> list:
    return [r for r in fake.requests if r.path == "/api/1.0/tasks" and "assignee" in r.query]


@pytest.mark.parametrize("plan", ["paid", "free"])
def test_a_task_in_no_project_is_synced_with_its_stories_then_incrementally(fake, config, plan):
    if plan == "free":
        fake.premium_workspaces = set()
    task = _my_task(fake)

    first = run_tap(config)

    (row,) = [r for r in first.records["tasks"] if r["gid"] == task["gid"]]
    assert row["memberships"] == []
    assert row["project_gid"] is None
    assert {s["gid"] for s in fake.dataset.stories_by_task[task["gid"]]} <= {
        s["gid"] for s in first.records["stories"]
    }
    assert not [r for r in first.records["task_projects"] if r["task_gid"] == task["gid"]]
    users = sum(len(u) for u in fake.dataset.users_by_workspace.values())
    assert len(_per_user_listings(fake)) == (users if plan == "free" else 0)

    fake.dataset.touch_task(task["gid"])
    fake.reset_log()
    second = run_tap(config, state=first.state)

    assert [r["gid"] for r in second.records["tasks"]] == [task["gid"]]
    if plan == "free":
        # One request per user of each workspace, from the workspace's bookmark.
        listings = _per_user_listings(fake)
        assert len(listings) == users
        assert all(r.query.get("modified_since") for r in listings)
        # Search is asked once per workspace (402), not again for tasks in no project.
        searches = [
            r
            for r in fake.requests
            if r.path.endswith("/tasks/search") and r.query.get("is_subtask") == ["false"]
        ]
        assert len(searches) == len(fake.dataset.workspaces)
        assert {r.status for r in searches} == {402}
    else:
        assert _per_user_listings(fake) == []
    # Once past the search index lag (paid), nothing is emitted again.
    fake.advance_clock(11 * 60)
    third = run_tap(config, state=second.state)
    fourth = run_tap(config, state=third.state)
    assert fourth.records["tasks"] == []


def test_tasks_in_no_project_can_be_left_out(fake, config):
    fake.premium_workspaces = set()
    task = _my_task(fake)
    config = {**config, "include_tasks_without_projects": False}

    result = run_tap(config)

    assert task["gid"] not in {r["gid"] for r in result.records["tasks"]}
    assert _per_user_listings(fake) == []


@pytest.mark.parametrize("plan", ["paid", "free"])
def test_a_reconcile_pass_rewrites_tasks_in_no_project_so_none_is_marked_gone(fake, config, plan):
    if plan == "free":
        fake.premium_workspaces = set()
    task = _my_task(fake)
    config = {**config, "reconcile_every_days": 0}
    first = run_tap(config)
    fake.reset_log()

    second = run_tap(config, state=first.state)

    activate = [
        m for m in second.messages if m["type"] == "ACTIVATE_VERSION" and m["stream"] == "tasks"
    ]
    assert activate, second.logs
    version = activate[0]["version"]
    rows = [
        m
        for m in second.messages
        if m["type"] == "RECORD" and m["stream"] == "tasks" and m["record"]["gid"] == task["gid"]
    ]
    assert rows
    assert rows[-1]["version"] == version


def test_the_fake_lists_a_users_assigned_tasks_in_a_workspace_only_with_both(fake):
    """``GET /tasks?assignee=&workspace=`` as Asana documents it (both, or a 400)."""
    ds = fake.dataset
    task = _my_task(fake)
    workspace, user = task["workspace"]["gid"], task["assignee"]["gid"]

    def get(**params):
        return requests.get(
            f"{fake.api_url}/tasks",
            params={"opt_fields": "memberships", **params},
            headers={"Authorization": f"Bearer {fake.pat}"},
            timeout=10,
        )

    assert get(assignee=user).status_code == 400
    assert get(workspace=workspace).status_code == 400
    listed = get(assignee=user, workspace=workspace).json()["data"]
    expected = {
        t["gid"]
        for t in ds.tasks.values()
        if t["workspace"]["gid"] == workspace and (t["assignee"] or {}).get("gid") == user
    }
    assert {t["gid"] for t in listed} == expected
    assert task["gid"] in expected
    assert next(t for t in listed if t["gid"] == task["gid"])["memberships"] == []
