"""Where a workspace's subtask sweep searches from, and what that search may miss.

In the first run of tasks and subtasks every task in scope is emitted and its subtree
read, so the sweep's search (paid plans) need only find the subtasks edited since the
workspace's first listing (less the search index lag), not every subtask of the
workspace: before, a first run searched them all, which cost ⌈subtasks / 100⌉ search
requests at 60 a minute, remembered every subtask read under a task, and emitted the
subtasks of tasks out of scope. A run that does not read every task (tasks have a
bookmark; ``start_date`` or ``project_gids`` is set; a project's listing or a subtree
refused) still searches from ``start_date`` (None: all).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import tap_asana_vl.streams.subtasks as subtasks_module
from tap_asana_vl.streams.changed_tasks import holds_no_bookmark
from tap_asana_vl.streams.search import SEARCH_INDEX_LAG_MINUTES
from tap_asana_vl.timestamps import parse_timestamp
from tests.tap_runner import FAST, run_tap


@pytest.fixture
def config(pat_config: dict[str, Any]) -> dict[str, Any]:
    return {**pat_config, **FAST, "include_attachments": False}


def _subtask_searches(fake, since: int = 0) -> list:
    return [
        r
        for r in fake.requests[since:]
        if r.path.endswith("/tasks/search") and r.query.get("is_subtask") == ["true"]
    ]


def _root(ds, gid: str) -> str:
    """The top-level task above a subtask (at any depth)."""
    task = ds.get_task(gid)
    while task.get("parent"):
        task = ds.get_task(task["parent"]["gid"])
    return task["gid"]


def _workspace(ds, gid: str) -> str:
    return ds.get_task(gid)["workspace"]["gid"]


def _subtask_bookmarks(result) -> dict[str, str]:
    return result.state["bookmarks"]["subtasks"].get("search_bookmarks") or {}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _a_subtask_of_a_single_homed_task(ds, fake) -> str:
    return next(
        subtasks[0]["gid"]
        for gid, subtasks in sorted(ds.subtasks_by_parent.items())
        if gid in ds.tasks
        and subtasks
        and len(ds.tasks[gid]["projects"]) == 1
        and _workspace(ds, gid) in fake.premium_workspaces
    )


def test_a_paid_first_run_searches_subtasks_only_from_its_own_start(fake, config):
    ds = fake.dataset
    before = datetime.now(timezone.utc)

    result = run_tap(config)

    counts = Counter(result.gids("subtasks"))
    assert set(counts) == set(ds.subtasks)
    assert {gid: n for gid, n in counts.items() if n > 1} == {}
    searches = _subtask_searches(fake)
    assert {r.path.split("/")[4] for r in searches} == set(fake.premium_workspaces)
    # Two requests per workspace (nothing was edited since the run began), not one per
    # 100 subtasks, from the run's start less the index lag: one before any tree is read
    # (does search work here? then no tree need be noted for a walk), one by the sweep.
    assert len(searches) == 2 * len(fake.premium_workspaces)
    lag = timedelta(minutes=SEARCH_INDEX_LAG_MINUTES)
    for request in searches:
        after = parse_timestamp(request.query["modified_at.after"][0])
        assert before - lag - timedelta(seconds=5) <= after <= datetime.now(timezone.utc) - lag
    # Nothing read under a task can come again, so nothing is remembered.
    assert set(result.tap.streams["subtasks"]._emitted) == set()
    # The search found nothing, yet the next run searches from there (see below).
    assert set(_subtask_bookmarks(result)) == set(fake.premium_workspaces)


def test_a_subtask_edited_during_the_first_run_after_its_tree_was_read_is_delivered(
    fake, config, monkeypatch
):
    ds = fake.dataset
    subtask = _a_subtask_of_a_single_homed_task(ds, fake)
    workspace = _workspace(ds, subtask)
    sweep = subtasks_module.SubtasksStream._sweep

    def edited_before_the_sweep(stream, swept):
        if swept == workspace:
            fake.touch_task(subtask)
            ds.get_task(subtask)["name"] = "edited during the run"
            # A long run: the search must start from the run's start, not the sweep's.
            fake.advance_clock(20 * 60)
        yield from sweep(stream, swept)

    monkeypatch.setattr(subtasks_module.SubtasksStream, "_sweep", edited_before_the_sweep)
    result = run_tap(config)

    copies = [r for r in result.records["subtasks"] if r["gid"] == subtask]
    assert [c["name"] for c in copies][-1] == "edited during the run"
    assert copies[-1]["modified_at"] == ds.get_task(subtask)["modified_at"]


def test_the_run_after_a_narrow_first_run_searches_only_what_changed_since(fake, config):
    """The first run's search found nothing, but its start is the next run's bookmark.

    Without it, the next run (tasks have bookmarks now) would search every subtask
    again and deliver them all.
    """
    ds = fake.dataset
    first = run_tap(config)
    subtask = _a_subtask_of_a_single_homed_task(ds, fake)
    fake.touch_task(subtask)
    ds.get_task(subtask)["name"] = "edited between runs"
    already = len(fake.requests)

    second = run_tap(config, state=first.state)

    assert second.gids("subtasks") == [subtask]
    assert second.records["subtasks"][0]["name"] == "edited between runs"
    searches = _subtask_searches(fake, already)
    assert len(searches) == len(fake.premium_workspaces)


def test_a_first_run_emits_no_subtask_of_a_task_out_of_scope(fake, config):
    """Archived projects and tasks in no project left out: their subtasks too."""
    ds = fake.dataset
    scoped = {**config, "include_archived_projects": False, "include_tasks_without_projects": False}

    result = run_tap(scoped)

    tasks = set(result.gids("tasks"))
    assert tasks
    emitted = set(result.gids("subtasks"))
    under_emitted = {gid for gid in ds.subtasks if _root(ds, gid) in tasks}
    assert under_emitted
    assert emitted == under_emitted
    assert set(ds.subtasks) - under_emitted  # others exist: the check means something


def test_with_project_gids_a_first_run_searches_every_subtask_of_the_workspace(fake, config):
    """Jobs split by project_gids leave subtasks to one of them ("Running at scale"),
    which relies on the workspace's search: its first run searches them all, as before."""
    ds = fake.dataset
    project = sorted(
        p for p in ds.projects if _workspace_of_project(ds, p) in fake.premium_workspaces
    )[0]
    workspace = _workspace_of_project(ds, project)

    result = run_tap({**config, "project_gids": [project]})

    in_workspace = {gid for gid in ds.subtasks if _workspace(ds, gid) == workspace}
    assert in_workspace <= set(result.gids("subtasks"))
    assert all("modified_at.after" not in r.query for r in _subtask_searches(fake))


def test_a_project_whose_listing_failed_leaves_the_first_run_searching_every_subtask(fake, config):
    """Its tasks are not emitted, so their subtrees are not read: the search must find
    their subtasks (before this was handled, a narrow first run lost them)."""
    ds = fake.dataset
    project = next(
        p
        for p in sorted(ds.projects)
        if _workspace_of_project(ds, p) in fake.premium_workspaces
        and any(
            len(task["projects"]) == 1 and ds.subtasks_by_parent.get(task["gid"])
            for task in ds.tasks_by_project[p]
        )
    )
    only_there = {
        sub["gid"]
        for task in ds.tasks_by_project[project]
        if len(task["projects"]) == 1
        for sub in ds.subtasks_by_parent.get(task["gid"], [])
    }
    fake.inject(rf"/api/1\.0/tasks\?(.*&)?project={project}(&|$)", 403, times=None)

    result = run_tap(config)

    assert "skipped" in result.logs
    assert only_there <= set(result.gids("subtasks"))


def test_a_subtree_refused_leaves_the_first_run_searching_every_subtask(fake, config):
    ds = fake.dataset
    subtask = _a_subtask_of_a_single_homed_task(ds, fake)
    parent = ds.get_task(subtask)["parent"]["gid"]
    below = {sub["gid"] for sub in ds.subtasks_by_parent[parent]}
    fake.inject(rf"/api/1\.0/tasks/{parent}/subtasks", 403, times=None)

    result = run_tap(config)

    assert below <= set(result.gids("subtasks"))
    assert not [
        r for r in fake.requests if r.path.endswith(f"/tasks/{parent}/subtasks") and r.status == 200
    ]


def test_a_first_run_stopped_after_some_projects_searches_every_subtask_next_time(fake, config):
    """Tasks have project bookmarks but no search bookmark, nor subtasks any: the next
    run does not read every task, so its sweep searches every subtask."""
    ds = fake.dataset
    first = run_tap(config)
    state = first.state
    del state["bookmarks"]["tasks"]["search_bookmarks"]
    del state["bookmarks"]["subtasks"]["search_bookmarks"]
    assert any(p.get("replication_key_value") for p in state["bookmarks"]["tasks"]["partitions"])

    second = run_tap(config, state=state)

    premium = {gid for gid in ds.subtasks if _workspace(ds, gid) in fake.premium_workspaces}
    assert premium <= set(second.gids("subtasks"))


def test_holds_no_bookmark_sees_a_project_bookmark_or_a_search_bookmark():
    assert holds_no_bookmark({})
    assert holds_no_bookmark({"partitions": [{"context": {"project_gid": "1"}}]})
    assert holds_no_bookmark({"search_bookmarks": {}})
    assert not holds_no_bookmark(
        {"partitions": [{"context": {"project_gid": "1"}, "replication_key_value": "x"}]}
    )
    assert not holds_no_bookmark({"search_bookmarks": {"w": "2026-01-01T00:00:00.000Z"}})


def _workspace_of_project(ds, project: str) -> str:
    return ds.projects[project]["workspace"]["gid"]


def test_subtasks_first_synced_after_tasks_search_every_subtask(fake, config):
    """Tasks already have bookmarks: an unchanged task's subtree is not read, so the
    sweep's search must start at ``start_date`` (here none: every subtask)."""
    ds = fake.dataset
    first = run_tap({**config, "include_subtasks": False})
    assert first.gids("subtasks") == []

    second = run_tap(config, state=first.state)

    assert second.gids("tasks") == []
    premium = {gid for gid in ds.subtasks if _workspace(ds, gid) in fake.premium_workspaces}
    assert premium
    assert premium <= set(second.gids("subtasks"))


def test_a_first_run_with_start_date_searches_subtasks_from_it(fake, config):
    """Tasks modified before ``start_date`` are not emitted, so their subtrees are not
    read: a subtask edited since under such a task comes from the search alone."""
    ds = fake.dataset
    now = datetime.now(timezone.utc)
    subtask = _a_subtask_of_a_single_homed_task(ds, fake)
    fake.touch_task(subtask, at=now - timedelta(minutes=30))
    assert parse_timestamp(ds.get_task(_root(ds, subtask))["modified_at"]) < now - timedelta(
        hours=1
    )

    result = run_tap({**config, "start_date": _iso(now - timedelta(hours=1))})

    assert subtask in result.gids("subtasks")


def test_a_subtask_indexed_late_is_found_by_the_next_run_however_long_the_sweep(
    fake, config, monkeypatch
):
    """The bookmark stays the index lag behind the search's first request, not its end.

    A subtask edited just as the search starts is not in Asana's index yet, while one
    edited a millisecond later is, and the sweep then goes on for longer than the lag.
    Before, the bookmark was bounded by the lag before the sweep's end and moved past
    the first edit to the second: the next run searched from there and lost it.
    """
    ds = fake.dataset
    first = run_tap(config)
    late = _a_subtask_of_a_single_homed_task(ds, fake)
    workspace = _workspace(ds, late)
    other = next(
        gid
        for gid in sorted(ds.subtasks)
        if gid != late and _workspace(ds, gid) == workspace and _root(ds, gid) != _root(ds, late)
    )
    hidden: set[str] = set()
    searchable = fake._searchable
    search = fake._search

    def lagging_index(workspace_gid, is_subtask):
        return [t for t in searchable(workspace_gid, is_subtask) if t["gid"] not in hidden]

    def edits_as_the_search_starts(obj, query, user):
        if query.get("is_subtask") == ["true"] and not hidden:
            fake.touch_task(late)
            ds.get_task(late)["name"] = "indexed late"
            hidden.add(late)
            indexed = parse_timestamp(ds.get_task(late)["modified_at"]) + timedelta(milliseconds=1)
            fake.touch_task(other, at=indexed)
        return search(obj, query, user)

    monkeypatch.setattr(fake, "_searchable", lagging_index)
    monkeypatch.setattr(fake, "_search", edits_as_the_search_starts)
    # The sweep ends 15 minutes later, as after a long walk or search.
    monkeypatch.setattr(
        subtasks_module, "now", lambda: datetime.now(timezone.utc) + timedelta(minutes=15)
    )
    second = run_tap(config, state=first.state)
    assert late not in second.gids("subtasks")
    assert other in second.gids("subtasks")
    hidden.clear()
    monkeypatch.undo()

    third = run_tap(config, state=second.state)

    copies = [r for r in third.records["subtasks"] if r["gid"] == late]
    assert copies, "the subtask edited as the search started was never delivered"
    assert copies[-1]["name"] == "indexed late"
