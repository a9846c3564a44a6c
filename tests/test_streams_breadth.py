"""Sections, tags, teams, memberships, custom fields, attachments, portfolios, status
updates, goals, time tracking and subtasks: complete, cheap, and skipped cleanly where
Asana says a feature is paid."""

from __future__ import annotations

from collections import Counter

import pytest
from singer_sdk.exceptions import FatalAPIError

from tap_asana_vl.tap import STREAM_TYPES, TapAsanaVl
from tests.fake_asana.dataset import iso_ms
from tests.tap_runner import FAST, TAP_ADDED_FIELDS, as_served, catalog_selecting, run_tap


def _gids(result, stream: str) -> set[str]:
    return {r["gid"] for r in result.records[stream]}


def test_every_object_family_is_synced_completely(fake, pat_config):
    ds = fake.dataset
    result = run_tap({**pat_config, **FAST})

    project_sections = {s["gid"] for ss in ds.sections_by_project.values() for s in ss}
    assert _gids(result, "sections") == project_sections
    assert _gids(result, "tags") == set(ds.tags)
    assert _gids(result, "teams") == set(ds.teams)
    assert _gids(result, "team_memberships") == set(ds.team_memberships)
    assert _gids(result, "project_memberships") == set(ds.project_memberships)
    assert _gids(result, "custom_fields") == set(ds.custom_fields)
    assert _gids(result, "project_custom_field_settings") == set(ds.custom_field_settings)
    assert _gids(result, "attachments") == set(ds.attachments)
    assert _gids(result, "portfolios") == set(ds.portfolios)
    assert _gids(result, "status_updates") == set(ds.status_updates)
    assert _gids(result, "goals") == set(ds.goals)
    assert _gids(result, "time_tracking_entries") == set(ds.time_tracking_entries)
    assert _gids(result, "subtasks") == set(ds.subtasks)
    assert _gids(result, "subtask_stories") == set(ds.subtask_stories)
    items = {
        (portfolio, project["gid"])
        for portfolio, projects in ds.portfolio_items.items()
        for project in projects
    }
    assert {(r["portfolio_gid"], r["gid"]) for r in result.records["portfolio_items"]} == items
    # What we emit is what Asana sent, field for field (the keys the tap adds aside).
    paths = {stream_type.name: stream_type.path for stream_type in STREAM_TYPES}
    for stream in ("sections", "attachments", "subtasks", "goals", "time_tracking_entries"):
        source = getattr(ds, stream)
        for record in result.records[stream]:
            emitted = {k: v for k, v in record.items() if k not in TAP_ADDED_FIELDS}
            assert emitted == as_served(fake, paths[stream], source[record["gid"]]), stream


def test_subtasks_two_levels_deep_keep_their_parent(fake, pat_config):
    ds = fake.dataset
    deep = [s for s in ds.subtasks.values() if s["parent"]["gid"] in ds.subtasks]
    assert deep, "the dataset must have subtasks of subtasks"
    result = run_tap({**pat_config, **FAST})
    emitted = {r["gid"]: r for r in result.records["subtasks"]}
    for subtask in deep:
        assert emitted[subtask["gid"]]["parent"]["gid"] == subtask["parent"]["gid"]


def test_bridge_has_one_row_per_task_membership_and_costs_nothing(fake, pat_config):
    ds = fake.dataset
    result = run_tap({**pat_config, **FAST})
    rows = result.records["task_projects"]
    expected = Counter(
        (gid, m["project"]["gid"]) for gid, task in ds.tasks.items() for m in task["memberships"]
    )
    assert Counter((r["task_gid"], r["project_gid"]) for r in rows) == expected
    assert max(expected.values()) == 1
    multi = next(t for t in ds.tasks.values() if len(t["memberships"]) > 1)
    sections = {r["project_gid"]: r["section_gid"] for r in rows if r["task_gid"] == multi["gid"]}
    assert sections == {m["project"]["gid"]: m["section"]["gid"] for m in multi["memberships"]}
    assert not [r for r in fake.requests if "memberships" in r.path and "/tasks/" in r.path]


def test_per_task_children_are_requested_only_where_needed(fake, pat_config):
    ds = fake.dataset
    run_tap({**pat_config, **FAST})
    subtask_calls = Counter(r.path for r in fake.requests if r.path.endswith("/subtasks"))
    with_subtasks = {g for g, t in {**ds.tasks, **ds.subtasks}.items() if t["num_subtasks"]}
    assert set(subtask_calls) == {f"/api/1.0/tasks/{g}/subtasks" for g in with_subtasks}
    assert max(subtask_calls.values()) == 1
    timed = {g for g, t in ds.tasks.items() if t["actual_time_minutes"]}
    assert 0 < len(timed) < len(ds.tasks)
    time_calls = {r.path for r in fake.requests if r.path.endswith("/time_tracking_entries")}
    assert time_calls == {f"/api/1.0/tasks/{g}/time_tracking_entries" for g in timed}
    organizations = {g for g, w in ds.workspaces.items() if w["is_organization"]}
    team_calls = {r.path for r in fake.requests if r.path.endswith("/teams")}
    assert team_calls == {f"/api/1.0/workspaces/{g}/teams" for g in organizations}


def test_a_subtask_changed_without_its_parent_is_caught_by_search(fake, pat_config):
    config = {**pat_config, **FAST}
    first = run_tap(config)
    subtask = next(
        s for s in fake.dataset.subtasks.values() if s["parent"]["gid"] in fake.dataset.tasks
    )
    parent_modified = fake.dataset.tasks[subtask["parent"]["gid"]]["modified_at"]
    fake.touch_task(subtask["gid"])
    assert fake.dataset.tasks[subtask["parent"]["gid"]]["modified_at"] == parent_modified
    fake.reset_log()

    second = run_tap(config, state=first.state)

    assert second.records["tasks"] == []
    assert [r["gid"] for r in second.records["subtasks"]] == [subtask["gid"]]
    assert {r.path for r in fake.requests if r.path.endswith("/stories")} == {
        f"/api/1.0/tasks/{subtask['gid']}/stories"
    }
    searches = [
        r
        for r in fake.requests
        if r.path.endswith("/tasks/search") and r.query.get("is_subtask") == ["true"]
    ]
    assert len(searches) == len(fake.dataset.workspaces)
    assert all(r.query.get("modified_at.after") for r in searches)


def test_without_search_subtasks_are_walked_when_due_and_only_then(fake, pat_config):
    fake.premium_workspaces = set()
    config = {**pat_config, **FAST}
    first = run_tap(config)
    assert _gids(first, "subtasks") == set(fake.dataset.subtasks)
    assert set(first.state["bookmarks"]["subtasks"]["full_walks"]) == set(fake.dataset.workspaces)
    subtask = next(iter(fake.dataset.subtasks.values()))
    fake.touch_task(subtask["gid"])
    fake.reset_log()

    not_due = run_tap(config, state=first.state)  # walked less than 7 days ago
    assert not_due.records["subtasks"] == []
    assert not [r for r in fake.requests if r.path.endswith("/subtasks")]

    walked = run_tap({**config, "subtasks_full_walk_days": 0}, state=first.state)
    assert subtask["gid"] in _gids(walked, "subtasks")


def test_premium_features_are_skipped_per_workspace_with_one_warning(fake, pat_config):
    paid, free = list(fake.dataset.workspaces)
    fake.premium_workspaces = {paid}
    result = run_tap({**pat_config, **FAST})

    free_tasks = {g for g, t in fake.dataset.tasks.items() if t["workspace"]["gid"] == free}
    assert not {r["task_gid"] for r in result.records["time_tracking_entries"]} & free_tasks
    assert result.records["time_tracking_entries"], "the paid workspace still syncs"
    time_calls = [
        r
        for r in fake.requests
        if r.path.endswith("/time_tracking_entries") and r.path.split("/")[3] in free_tasks
    ]
    assert len(time_calls) <= 10  # at most one page of prefetches, then it stops asking
    for stream in ("time_tracking_entries", "goals", "portfolios"):
        warnings = [
            line
            for line in result.logs.splitlines()
            if line.startswith("WARNING")
            and f"Skipping stream '{stream}' for workspace {free}" in line
        ]
        assert len(warnings) == 1, stream
    assert all(g["workspace"]["gid"] != free for g in result.records["goals"])


def test_a_400_from_a_listing_some_workspaces_lack_skips_it_there_once(fake, pat_config):
    """Goals and portfolios asked of the wrong kind of workspace: skip, not fail.

    (Teams are only asked of organizations, so a 400 there is unexpected and fails.)
    """
    first, second = list(fake.dataset.workspaces)
    fake.inject(rf"/api/1\.0/goals\?.*workspace={first}", 400, times=None)
    fake.inject(rf"/api/1\.0/portfolios\?.*workspace={first}", 400, times=None)

    result = run_tap({**pat_config, **FAST})

    for stream in ("goals", "portfolios"):
        warnings = [
            line
            for line in result.logs.splitlines()
            if line.startswith("WARNING")
            and f"Skipping stream '{stream}' for workspace {first}" in line
        ]
        assert len(warnings) == 1, (stream, result.logs)
        assert "does not offer it" in warnings[0]
    assert {g["gid"] for g in result.records["goals"]} == {
        g["gid"] for g in fake.dataset.goals.values() if g["workspace"]["gid"] == second
    }
    assert result.records["tasks"], "everything else still syncs"


def test_a_400_elsewhere_still_fails_the_run(fake, pat_config):
    fake.inject(r"/api/1\.0/workspaces/\d+/tags", 400, times=None)
    with pytest.raises(FatalAPIError, match="400"):
        run_tap({**pat_config, **FAST})


def test_deselected_streams_cost_no_requests(fake, pat_config):
    config = {**pat_config, **FAST}
    result = run_tap(config, catalog=catalog_selecting(config, {"workspaces", "tags"}))
    assert set(result.records) == {"workspaces", "tags"}
    paths = {r.path.split("/")[3] for r in fake.requests}
    assert paths == {"workspaces"}, paths


def test_a_selected_child_of_a_deselected_parent_still_syncs(fake, pat_config):
    config = {**pat_config, **FAST}
    result = run_tap(config, catalog=catalog_selecting(config, {"stories"}))
    assert set(result.records) == {"stories"}
    assert _gids(result, "stories") == set(fake.dataset.stories)
    assert not [m for m in result.messages if m["type"] == "SCHEMA" and m["stream"] == "tasks"]


def test_settings_turn_off_expensive_families(fake, pat_config):
    result = run_tap(
        {**pat_config, **FAST, "include_subtasks": False, "include_attachments": False}
    )
    assert result.records["subtasks"] == []
    assert result.records["attachments"] == []
    assert not [r for r in fake.requests if r.path.endswith("/subtasks") or "attachments" in r.path]
    subtask_searches = [
        r
        for r in fake.requests
        if r.path.endswith("/tasks/search") and r.query.get("is_subtask") == ["true"]
    ]
    assert not subtask_searches
    assert _gids(result, "tasks") == set(fake.dataset.tasks)  # the rest is unaffected
    assert _gids(result, "stories") == set(fake.dataset.stories)


def test_deselected_task_columns_do_not_starve_child_streams(fake, pat_config):
    config = {**pat_config, **FAST}
    catalog = catalog_selecting(config, {"tasks", "task_projects", "time_tracking_entries"})
    for stream in catalog["streams"]:
        if stream["tap_stream_id"] != "tasks":
            continue
        for entry in stream["metadata"]:
            if entry["breadcrumb"] in (
                ["properties", "memberships"],
                ["properties", "actual_time_minutes"],
                ["properties", "num_subtasks"],
            ):
                entry["metadata"]["selected"] = False
    result = run_tap(config, catalog=catalog)
    assert "memberships" not in result.records["tasks"][0]  # the user's choice holds
    memberships = sum(len(t["memberships"]) for t in fake.dataset.tasks.values())
    assert len(result.records["task_projects"]) == memberships
    assert _gids(result, "time_tracking_entries") == set(fake.dataset.time_tracking_entries)


def test_a_subtask_tree_that_vanished_skips_only_itself(fake, pat_config):
    ds = fake.dataset
    parents = [g for g, t in ds.tasks.items() if t["num_subtasks"]]
    gone = parents[0]
    fake.premium_workspaces = set()  # no search: subtasks come from walking the trees
    fake.inject(rf"/api/1\.0/tasks/{gone}/subtasks", 404, times=None)
    result = run_tap({**pat_config, **FAST})

    def below(gid: str) -> set[str]:
        direct = {s["gid"] for s in ds.subtasks_by_parent.get(gid, [])}
        return direct.union(*(below(d) for d in direct)) if direct else set()

    assert _gids(result, "subtasks") == set(ds.subtasks) - below(gone)


def test_activate_version_is_never_sent(fake, pat_config):
    result = run_tap({**pat_config, **FAST, "emit_activate_version_messages": True})
    assert not [m for m in result.messages if m["type"] == "ACTIVATE_VERSION"]
    assert "activate-version" not in TapAsanaVl.capabilities


def _bulk_edited_subtasks(fake, count: int, *, same_created_at: bool) -> tuple[list[str], str]:
    """``count`` new subtasks of one task, all modified at one instant (a bulk edit)."""
    ds = fake.dataset
    parent = next(iter(ds.tasks.values()))
    now_ms = int(fake.now() * 1000)
    instant = iso_ms(now_ms - 60_000)
    gids = []
    for i in range(count):
        created = iso_ms(now_ms - 120_000 - (0 if same_created_at else count - i))
        subtask = fake.add_subtask(parent["gid"], created_at=created)
        fake.touch_task(subtask["gid"], at=instant)
        gids.append(subtask["gid"])
    return gids, instant


def test_subtask_search_reads_every_subtask_of_a_bulk_edit(fake, pat_config):
    """250 subtasks share one modified_at: search has no offset, yet none is skipped."""
    config = {**pat_config, **FAST}
    first = run_tap(config)
    bulk, instant = _bulk_edited_subtasks(fake, 250, same_created_at=False)
    fake.reset_log()

    second = run_tap(config, state=first.state)

    assert set(bulk) <= set(second.gids("subtasks"))
    assert second.records["tasks"] == []  # found by search, not through a changed parent
    workspace = next(iter(fake.dataset.tasks.values()))["workspace"]["gid"]
    bookmark = second.state["bookmarks"]["subtasks"]["search_bookmarks"][workspace]
    assert bookmark <= instant
    # A third run re-reads at most the lag window, and still nothing is missing.
    third = run_tap(config, state=second.state)
    assert set(bulk) <= set(second.gids("subtasks")) | set(third.gids("subtasks"))


def test_subtask_search_ties_it_cannot_page_fall_back_to_a_walk(fake, pat_config):
    """Over a page created *and* modified in one millisecond: walk, never skip."""
    config = {**pat_config, **FAST}
    first = run_tap(config)
    bulk, _ = _bulk_edited_subtasks(fake, 150, same_created_at=True)
    fake.reset_log()

    second = run_tap(config, state=first.state)

    assert set(bulk) <= set(second.gids("subtasks"))
    assert "same millisecond" in second.logs


def test_free_plan_subtasks_alone_still_walk_every_workspace(fake, pat_config):
    """Selected alone (no projects, no tasks), subtasks list the projects themselves."""
    fake.premium_workspaces = set()
    config = {**pat_config, **FAST}
    result = run_tap(config, catalog=catalog_selecting(config, {"subtasks"}))
    assert _gids(result, "subtasks") == set(fake.dataset.subtasks)
    assert set(result.state["bookmarks"]["subtasks"]["full_walks"]) == set(fake.dataset.workspaces)


def test_a_walk_mark_is_per_workspace_so_a_killed_walk_is_redone(fake, pat_config):
    """Killed during the second workspace's walk: the resumed run walks it again."""
    fake.premium_workspaces = set()
    config = {**pat_config, **FAST}
    first_ws, second_ws = list(fake.dataset.workspaces)
    # What a run killed during the second workspace's walk leaves behind: only the
    # first workspace's walk is recorded.
    full = run_tap(config)
    state = full.state
    state["bookmarks"]["subtasks"]["full_walks"].pop(second_ws)
    fake.reset_log()

    resumed = run_tap(config, state=state)

    in_second = {g for g, s in fake.dataset.subtasks.items() if s["workspace"]["gid"] == second_ws}
    assert in_second
    assert in_second <= _gids(resumed, "subtasks")
    assert not {
        g for g, s in fake.dataset.subtasks.items() if s["workspace"]["gid"] == first_ws
    } & _gids(resumed, "subtasks"), "the first workspace's walk is not due again"


def test_subtask_walks_survive_deselected_bookkeeping_columns(fake, pat_config):
    """num_subtasks/modified_at deselected by a user: still requested, the walk goes deep."""
    fake.premium_workspaces = set()
    config = {**pat_config, **FAST}
    catalog = catalog_selecting(config, {"subtasks"})
    for stream in catalog["streams"]:
        if stream["tap_stream_id"] == "subtasks":
            for entry in stream["metadata"]:
                if entry["breadcrumb"] in (
                    ["properties", "num_subtasks"],
                    ["properties", "modified_at"],
                ):
                    entry["metadata"]["selected"] = False
    result = run_tap(config, catalog=catalog)
    assert _gids(result, "subtasks") == set(fake.dataset.subtasks)
    assert all("num_subtasks" not in r for r in result.records["subtasks"])


def test_a_search_that_does_not_move_forward_falls_back_to_a_walk(fake, pat_config):
    """If Asana ever treated modified_at.after as inclusive, paging must not loop."""
    workspace = next(iter(fake.dataset.workspaces))
    page = [
        {
            "gid": str(9_000_000_000_000_000 + i),
            "name": f"Same page {i}",
            "modified_at": iso_ms(1_735_689_600_000 + i),
            "created_at": iso_ms(1_735_689_600_000),
            "num_subtasks": 0,
            "workspace": {"gid": workspace, "resource_type": "workspace"},
        }
        for i in range(100)
    ]
    fake.inject(
        rf"/api/1\.0/workspaces/{workspace}/tasks/search", 200, body={"data": page}, times=None
    )

    # (The page would also be tasks in no project: this test is about subtasks.)
    config = {**pat_config, **FAST, "include_tasks_without_projects": False}
    result = run_tap({**config, "workspace_gids": [workspace]})

    assert "cannot page past" in result.logs
    in_workspace = {
        g for g, s in fake.dataset.subtasks.items() if s["workspace"]["gid"] == workspace
    }
    assert in_workspace <= _gids(result, "subtasks")
    assert len(fake.requests_for(f"/api/1.0/workspaces/{workspace}/tasks/search")) <= 3
