"""Incremental runs on paid plans find changed tasks through Asana's workspace search.

Per project ``modified_since`` listings cost one request per project per run; search
costs ⌈changed / 100⌉ per workspace. The bookmarks of both stay consistent whatever
the plan does between runs (changed_tasks.py).
"""

from __future__ import annotations

import time

import tap_asana_vl.streams.search as search_module
from tap_asana_vl.streams.search import SEARCH_REQUESTS_PER_MINUTE
from tests.fake_asana import FakeAsana
from tests.fake_asana.dataset import build_dataset, iso_ms, parse_iso_ms
from tests.tap_runner import FAST, run_tap


def _project_listings(fake) -> list:
    """Listings of a project's changed tasks (not the subtasks walk's ``num_subtasks``)."""
    return [
        r
        for r in fake.requests
        if r.path == "/api/1.0/tasks"
        and "project" in r.query
        and r.query.get("opt_fields") != ["num_subtasks"]
    ]


def _task_searches(fake) -> list:
    return [
        r
        for r in fake.requests
        if r.path.endswith("/tasks/search") and r.query.get("is_subtask") == ["false"]
    ]


def _partitions(state: dict) -> dict[str, dict]:
    return {p["context"]["project_gid"]: p for p in state["bookmarks"]["tasks"]["partitions"]}


def _a_task_in_a_live_project(ds) -> dict:
    return next(
        t
        for t in ds.tasks.values()
        if not ds.projects[t["projects"][0]["gid"]]["archived"] and len(t["projects"]) == 1
    )


def test_an_incremental_run_searches_instead_of_listing_each_project(fake, pat_config):
    config = {**pat_config, **FAST}
    first = run_tap(config)
    # The first run lists every project (there is no search bookmark yet); its one
    # search per workspace, from the start, is for tasks in no project.
    assert len(_project_listings(fake)) == len(fake.dataset.projects)
    assert len(_task_searches(fake)) == len(fake.dataset.workspaces)
    assert not [r for r in _task_searches(fake) if "modified_at.after" in r.query]
    bookmarks = first.state["bookmarks"]["tasks"]["search_bookmarks"]
    assert set(bookmarks) == set(fake.dataset.workspaces)

    ds = fake.dataset
    changed = _a_task_in_a_live_project(ds)
    ds.add_story(changed["gid"], "changed after the first run")
    fake.reset_log()

    second = run_tap(config, state=first.state)

    assert _project_listings(fake) == []
    searches = _task_searches(fake)
    assert len(searches) == len(ds.workspaces)  # one page each: fewer than 100 changed
    for search in searches:
        workspace = search.path.split("/")[4]
        assert search.query["modified_at.after"] == [bookmarks[workspace]]
        assert search.query["sort_by"] == ["modified_at"]
        assert search.query["sort_ascending"] == ["true"]
    assert [t["gid"] for t in second.records["tasks"]] == [changed["gid"]]
    record = second.records["tasks"][0]
    assert record["project_gid"] == changed["projects"][0]["gid"]
    assert record["memberships"]  # the full record, as a listing gives it
    # Its children as if it had been listed: stories asked of it alone (and of no
    # other task), its task_projects pairs.
    story_requests = {
        r.path.split("/")[4]
        for r in fake.requests
        if r.path.endswith("/stories") and r.path.split("/")[4] in ds.tasks
    }
    assert story_requests == {changed["gid"]}
    assert {r["gid"] for r in second.records["stories"]} == {
        s["gid"] for s in ds.stories_by_task[changed["gid"]]
    }
    assert {(r["task_gid"], r["project_gid"]) for r in second.records["task_projects"]} == {
        (changed["gid"], p["gid"]) for p in changed["projects"]
    }
    # The bookmarks of the workspace's projects moved with the search: none is older.
    workspace = changed["workspace"]["gid"]
    searched = parse_iso_ms(second.state["bookmarks"]["tasks"]["search_bookmarks"][workspace])
    for project in ds.projects_by_workspace[workspace]:
        bookmark = _partitions(second.state)[project["gid"]]["replication_key_value"]
        assert parse_iso_ms(bookmark) >= searched


def test_a_run_with_nothing_changed_costs_no_request_per_project(fake, pat_config):
    config = {**pat_config, **FAST}
    first = run_tap(config)
    fake.reset_log()

    second = run_tap(config, state=first.state)

    assert second.records["tasks"] == []
    assert _project_listings(fake) == []
    assert len(_task_searches(fake)) == len(fake.dataset.workspaces)
    assert not [r for r in fake.requests if r.path.endswith("/stories")]


def test_search_results_outside_the_synced_projects_are_left_out(fake, pat_config):
    ds = fake.dataset
    workspace = next(iter(ds.workspaces))
    kept, dropped = [p["gid"] for p in ds.projects_by_workspace[workspace] if not p["archived"]][:2]
    config = {**pat_config, **FAST, "project_gids": [kept]}
    first = run_tap(config)
    only_in = {
        project: next(t for t in ds.tasks_by_project[project] if len(t["projects"]) == 1)["gid"]
        for project in (kept, dropped)
    }
    for gid in only_in.values():
        ds.touch_task(gid)
    fake.reset_log()

    second = run_tap(config, state=first.state)

    assert _project_listings(fake) == []
    assert {t["gid"] for t in second.records["tasks"]} == {only_in[kept]}


def test_a_project_the_search_does_not_cover_yet_is_listed_from_its_own_bookmark(fake, pat_config):
    """A project new in scope has no bookmark: it is listed once, then searched."""
    ds = fake.dataset
    workspace = next(iter(ds.workspaces))
    live = [p["gid"] for p in ds.projects_by_workspace[workspace] if not p["archived"]]
    first = run_tap({**pat_config, **FAST, "project_gids": live[:1]})
    fake.reset_log()

    second = run_tap({**pat_config, **FAST, "project_gids": live[:2]}, state=first.state)

    listed = {r.query["project"][0] for r in _project_listings(fake)}
    assert listed == {live[1]}
    assert "modified_since" not in _project_listings(fake)[0].query
    assert {t["gid"] for t in second.records["tasks"]} >= {
        t["gid"] for t in ds.tasks_by_project[live[1]]
    }
    fake.reset_log()

    run_tap({**pat_config, **FAST, "project_gids": live[:2]}, state=second.state)
    assert _project_listings(fake) == []


def test_paid_then_free_lists_each_project_from_where_the_search_got(fake, pat_config):
    config = {**pat_config, **FAST}
    first = run_tap(config)
    second = run_tap(config, state=first.state)  # searched: project bookmarks moved
    ds = fake.dataset
    changed = _a_task_in_a_live_project(ds)
    ds.touch_task(changed["gid"])
    fake.premium_workspaces = set()
    fake.reset_log()

    third = run_tap(config, state=second.state)

    listings = _project_listings(fake)
    assert len(listings) == len(ds.projects)
    searched = second.state["bookmarks"]["tasks"]["search_bookmarks"]
    for listing in listings:
        since = listing.query["modified_since"][0]
        workspace = ds.projects[listing.query["project"][0]]["workspace"]["gid"]
        # Not older than what the search covered: no re-emitting what it found.
        assert parse_iso_ms(since) >= parse_iso_ms(searched[workspace])
    assert [t["gid"] for t in third.records["tasks"]] == [changed["gid"]]
    assert "Listing each project's changed tasks" in third.logs


def test_free_then_paid_searches_from_where_the_listings_started(fake, pat_config):
    config = {**pat_config, **FAST}
    fake.premium_workspaces = set()
    first = run_tap(config)
    second = run_tap(config, state=first.state)  # free: listed again
    ds = fake.dataset
    changed = _a_task_in_a_live_project(ds)
    ds.touch_task(changed["gid"])
    fake.premium_workspaces = set(ds.workspaces)
    fake.reset_log()

    third = run_tap(config, state=second.state)

    assert _project_listings(fake) == []
    assert [t["gid"] for t in third.records["tasks"]] == [changed["gid"]]
    bookmarks = second.state["bookmarks"]["tasks"]["search_bookmarks"]
    for search in _task_searches(fake):
        workspace = search.path.split("/")[4]
        assert search.query["modified_at.after"] == [bookmarks[workspace]]


def test_a_change_during_the_search_lag_is_found_by_the_next_run(fake, pat_config):
    """The search bookmark stays behind Asana's clock by the index lag."""
    config = {**pat_config, **FAST}
    first = run_tap(config)
    fake.advance_clock(11 * 60)
    second = run_tap(config, state=first.state)
    ds = fake.dataset
    changed = _a_task_in_a_live_project(ds)
    ds.touch_task(changed["gid"])
    workspace = changed["workspace"]["gid"]
    bookmark = second.state["bookmarks"]["tasks"]["search_bookmarks"][workspace]
    # On Asana's clock (the fake's, moved on): never closer to it than the lag.
    assert parse_iso_ms(bookmark) <= int(fake.now() * 1000) - 10 * 60 * 1000
    assert parse_iso_ms(bookmark) >= int(fake.now() * 1000) - 11 * 60 * 1000

    third = run_tap(config, state=second.state)
    fourth = run_tap(config, state=third.state)

    assert [t["gid"] for t in third.records["tasks"]] == [changed["gid"]]
    # Within the lag the search finds it again, but it was delivered as it is: skipped.
    assert fourth.records["tasks"] == []
    assert third.state["bookmarks"]["tasks"]["search_overlap"][workspace] == {
        changed["gid"]: changed["modified_at"]
    }
    fake.advance_clock(11 * 60)
    fifth = run_tap(config, state=fourth.state)
    sixth = run_tap(config, state=fifth.state)
    # Once the lag has passed the search no longer returns it, and nothing is kept.
    assert fifth.records["tasks"] == []
    assert sixth.records["tasks"] == []
    assert workspace not in sixth.state["bookmarks"]["tasks"].get("search_overlap", {})


def test_inside_the_overlap_only_tasks_changed_again_are_emitted_again(fake, pat_config):
    """Two runs inside the search overlap: unchanged tasks cost no request the second time."""
    config = {**pat_config, **FAST}
    first = run_tap(config)
    fake.advance_clock(11 * 60)
    ds = fake.dataset
    workspace = next(iter(ds.workspaces))
    single = [
        t
        for t in ds.tasks.values()
        if t["workspace"]["gid"] == workspace
        and len(t["projects"]) == 1
        and not ds.projects[t["projects"][0]["gid"]]["archived"]
    ]
    kept, again = single[0], single[1]
    ds.add_story(kept["gid"], "one comment")
    ds.add_story(again["gid"], "one comment")
    second = run_tap(config, state=first.state)
    assert {t["gid"] for t in second.records["tasks"]} == {kept["gid"], again["gid"]}
    fake.advance_clock(2 * 60)  # still inside the 10-minute overlap
    ds.add_story(again["gid"], "another comment")
    fake.reset_log()

    third = run_tap(config, state=second.state)

    # Both come back from the search; the one changed since is emitted with its stories.
    assert [t["gid"] for t in third.records["tasks"]] == [again["gid"]]
    story_requests = {r.path.split("/")[4] for r in fake.requests if r.path.endswith("/stories")}
    assert kept["gid"] not in story_requests
    assert again["gid"] in story_requests
    assert {s["target"]["gid"] for s in third.records["stories"]} == {again["gid"]}
    # Both stay remembered while inside the window, with their current modified_at.
    overlap = third.state["bookmarks"]["tasks"]["search_overlap"][workspace]
    assert overlap == {
        kept["gid"]: ds.tasks[kept["gid"]]["modified_at"],
        again["gid"]: ds.tasks[again["gid"]]["modified_at"],
    }


def test_a_reconcile_pass_lists_every_project(fake, pat_config):
    config = {**pat_config, **FAST}
    first = run_tap(config)
    fake.reset_log()

    run_tap({**config, "reconcile_every_days": 0}, state=first.state)

    assert len(_project_listings(fake)) == len(fake.dataset.projects)
    # Only the search for tasks in no project, all of them (a reconcile re-writes them).
    assert not [r for r in _task_searches(fake) if "modified_at.after" in r.query]


def test_full_refresh_lists_every_project(fake, pat_config):
    config = {**pat_config, **FAST}
    run_tap(config)
    fake.reset_log()

    result = run_tap(config, state={})

    assert len(_project_listings(fake)) == len(fake.dataset.projects)
    assert {t["gid"] for t in result.records["tasks"]} == set(fake.dataset.tasks)


def test_a_search_it_cannot_page_makes_the_next_run_list_each_project():
    with FakeAsana(build_dataset(workspaces=1, tasks_per_project=40, seed=5)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        first = run_tap(config)
        ds = fake.dataset
        workspace = next(iter(ds.workspaces))
        stamp = iso_ms(int(fake.now() * 1000) + 1000)
        tasks = list(ds.tasks.values())
        for task in tasks[:101]:
            ds.touch_task(task["gid"], stamp)
            task["created_at"] = stamp  # a bulk import: search cannot tell them apart
        fake.advance_clock(5)
        second = run_tap(config, state=first.state)
        assert "cannot page past" in second.logs
        assert workspace not in second.state["bookmarks"]["tasks"]["search_bookmarks"]
        fake.reset_log()

        third = run_tap(config, state=second.state)

        listed = {r.query["project"][0] for r in _project_listings(fake)}
        assert listed == {p["gid"] for p in ds.projects_by_workspace[workspace]}
        emitted = {t["gid"] for t in second.records["tasks"]} | {
            t["gid"] for t in third.records["tasks"]
        }
        assert {t["gid"] for t in tasks[:101]} <= emitted
        assert workspace in third.state["bookmarks"]["tasks"]["search_bookmarks"]


def test_search_requests_are_paced_at_asanas_search_limit(fake, pat_config):
    result = run_tap({**pat_config, **FAST})
    assert result.tap is not None
    assert result.tap.search_pacer.ceiling == SEARCH_REQUESTS_PER_MINUTE == 60
    pacer = result.tap.search_pacer
    started = time.monotonic()
    waits = [pacer.reserve() for _ in range(3)]
    assert waits[2] - (time.monotonic() - started) >= 1.0  # 60/min: a second apart


def test_inside_the_overlap_an_unchanged_subtask_is_not_emitted_again(fake, pat_config):
    config = {**pat_config, **FAST}
    first = run_tap(config)
    fake.advance_clock(11 * 60)
    ds = fake.dataset
    subtask = next(iter(ds.subtasks.values()))
    ds.add_story(subtask["gid"], "a comment on a subtask")
    second = run_tap(config, state=first.state)
    assert subtask["gid"] in second.gids("subtasks")
    fake.advance_clock(60)
    fake.reset_log()

    third = run_tap(config, state=second.state)

    assert subtask["gid"] not in third.gids("subtasks")
    assert not [r for r in fake.requests if r.path.endswith(f"/{subtask['gid']}/stories")]
    ds.touch_task(subtask["gid"])
    fourth = run_tap(config, state=third.state)
    assert fourth.gids("subtasks") == [subtask["gid"]]


def test_a_bulk_edit_inside_the_overlap_is_not_remembered_but_delivered_again(
    fake, pat_config, monkeypatch
):
    """Past the memory's limit the state keeps nothing of the window: delivered again."""
    monkeypatch.setattr(search_module, "OVERLAP_MEMORY_LIMIT", 1)
    config = {**pat_config, **FAST}
    first = run_tap(config)
    fake.advance_clock(11 * 60)
    ds = fake.dataset
    workspace = next(iter(ds.workspaces))
    edited = [
        t
        for t in ds.tasks.values()
        if t["workspace"]["gid"] == workspace
        and len(t["projects"]) == 1
        and not ds.projects[t["projects"][0]["gid"]]["archived"]
    ][:2]
    for task in edited:
        ds.add_story(task["gid"], "bulk edit")
    second = run_tap(config, state=first.state)
    assert workspace not in (second.state["bookmarks"]["tasks"].get("search_overlap") or {})
    fake.advance_clock(2 * 60)

    third = run_tap(config, state=second.state)

    assert {t["gid"] for t in edited} <= {t["gid"] for t in third.records["tasks"]}


def test_the_overlap_memory_holds_nothing_during_the_run_once_past_its_limit(monkeypatch):
    """A bulk edit inside the window is not remembered at the end, so it is not held
    during the run either (before, every recent result was kept until the save)."""
    monkeypatch.setattr(search_module, "OVERLAP_MEMORY_LIMIT", 3)
    state: dict = {}
    monkeypatch.setattr(search_module.sdk_adapter, "stored_state", lambda stream: {})
    monkeypatch.setattr(search_module.sdk_adapter, "own_state", lambda stream: state)
    memory = search_module.OverlapMemory(None, "1", "2026-01-01T00:00:00.000Z")
    recent = "2026-01-01T00:05:00.000Z"
    for gid in range(3):
        memory.note({"gid": str(gid), "modified_at": recent})
    assert len(memory.delivered) == 3  # within the limit: kept

    for gid in range(3, 10):
        memory.note({"gid": str(gid), "modified_at": recent})

    assert memory.delivered == {}
    memory.save(None, "1", "2026-01-01T00:01:00.000Z")
    assert "1" not in state[search_module.OVERLAP_STATE_KEY]
