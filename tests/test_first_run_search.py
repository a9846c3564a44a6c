"""A listing run's search for tasks in no project runs while the projects are listed.

On paid plans a first run (and a reconcile pass) searches every top-level task of a
workspace for those in no project, at Asana's 60 search requests a minute: read after
the listings that added n / 6000 minutes to the run. It now starts with the first
project (unplaced_search.py); these tests check it overlaps, writes what the sequential
run wrote, stops with a failing run, and that a task moved meanwhile lands right.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import tap_asana_vl.streams.unplaced_search as unplaced_search
from tap_asana_vl.streams.search import SEARCH_INDEX_LAG_MINUTES
from tap_asana_vl.timestamps import parse_timestamp
from tests.tap_runner import FAST, run_tap


@pytest.fixture
def config(pat_config: dict[str, Any]) -> dict[str, Any]:
    return {**pat_config, **FAST, "include_attachments": False}


def _project_listings(fake, project: str | None = None) -> list:
    return [
        r
        for r in fake.requests
        if r.path == "/api/1.0/tasks"
        and "project" in r.query
        and (project is None or r.query["project"] == [project])
    ]


def _task_searches(fake, workspace: str | None = None) -> list:
    return [
        r
        for r in fake.requests
        if r.path.endswith("/tasks/search")
        and r.query.get("is_subtask") == ["false"]
        and (workspace is None or f"/workspaces/{workspace}/" in r.path)
    ]


def _search_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("asana-search-")]


def _my_tasks(fake, count: int) -> list[dict]:
    ds = fake.dataset
    made = []
    for workspace in ds.workspaces:
        user = ds.users_by_workspace[workspace][1]["gid"]
        made += [ds.add_task_without_project(workspace, user) for _ in range(count)]
    return made


def _on_first_search(fake, workspace: str, action, *, then_list: str) -> list[bool]:
    """Run ``action`` once the fake has answered the workspace's first task search.

    The answer is computed before ``action`` runs: the search saw the data before it.
    Listings of project ``then_list`` are answered after it (waiting up to 5 s for it),
    so the order does not depend on how fast each thread of the tap runs. Returns, per
    such listing, whether ``action`` had run before it was answered.
    """
    original = fake._api
    done = threading.Event()
    listed_after: list[bool] = []

    def api(method, sub_path, query, token):
        if sub_path == "/tasks" and query.get("project") == [then_list]:
            listed_after.append(done.wait(5))
        response = original(method, sub_path, query, token)
        if (
            not done.is_set()
            and sub_path.startswith(f"/workspaces/{workspace}/tasks/search")
            and query.get("is_subtask") == ["false"]
        ):
            action()
            done.set()
        return response

    fake._api = api
    return listed_after


def _last_live_project(fake, workspace: str) -> str:
    ds = fake.dataset
    return [p["gid"] for p in ds.projects_by_workspace[workspace] if not p["archived"]][-1]


def test_a_first_paid_run_searches_while_listing_and_writes_what_a_sequential_run_did(fake, config):
    unplaced = {t["gid"] for t in _my_tasks(fake, 3)}
    # The first workspace's last project (later workspaces' searches wait for the search
    # pacer's next slots, after the earlier workspace's: their listings may come first).
    workspace = next(iter(fake.dataset.workspaces))
    last = _last_live_project(fake, workspace)
    searched_first = _on_first_search(fake, workspace, lambda: None, then_list=last)

    run_started = time.time()  # the clock the fake serves (and records requests with)
    first = run_tap(config)

    # Its listing was answered after the search was (sequential: the search came last,
    # after every listing, and the listing would wait in vain).
    assert searched_first
    assert all(searched_first)
    # Every task exactly once (as a sequential run writes them), those in no project
    # with no project; nothing else of the workspace's search is written.
    tasks = first.records["tasks"]
    gids = [r["gid"] for r in tasks]
    ds = fake.dataset
    expected = {gid for gid, t in ds.tasks.items() if not t.get("parent")}
    assert sorted(gids) == sorted(expected)
    assert unplaced <= set(gids)
    assert all(r["project_gid"] is None for r in tasks if r["gid"] in unplaced)
    assert all(r["project_gid"] is not None for r in tasks if r["gid"] not in unplaced)
    # The search bookmark bounds every change since the search started: the next
    # run's search starts no later than this one's first search request, less the
    # index lag (a change made just before it may not have been indexed yet).
    bookmarks = first.state["bookmarks"]["tasks"]["search_bookmarks"]
    assert set(bookmarks) == set(ds.workspaces)
    for gid, bookmark in bookmarks.items():
        started = min(r.time for r in _task_searches(fake, gid))
        lag = SEARCH_INDEX_LAG_MINUTES * 60
        # ... and no earlier than the run's start less the lag (Date headers: seconds).
        assert run_started - lag - 2 <= parse_timestamp(bookmark).timestamp() <= started - lag
    assert not _search_threads()


def test_a_failing_run_stops_the_search_running_meanwhile(fake, config):
    # Pages enough for the search (60 a minute: a page a second) to outlive the run.
    _my_tasks(fake, 450)
    workspace = next(iter(fake.dataset.workspaces))
    last = _last_live_project(fake, workspace)
    # The project listed before it waits for the search (a fault bypasses the hook), so
    # the failing listing comes once the search has started.
    live = [p["gid"] for p in fake.dataset.projects_by_workspace[workspace] if not p["archived"]]
    _on_first_search(fake, workspace, lambda: None, then_list=live[-2])
    fake.inject(
        rf"/api/1\.0/tasks\?.*project={last}",
        400,
        body={"errors": [{"message": "The result is too large. You should use pagination"}]},
        times=None,
    )

    with pytest.raises(Exception, match=r"refused to list tasks .* in full"):
        run_tap(config)
    failed_at = time.time()  # the clock the fake records requests with

    # It had started (before the sweep it used to wait for) ...
    assert _task_searches(fake, workspace)
    # ... and stops with the run: no thread left, no search sent afterwards.
    deadline = time.monotonic() + 2
    while _search_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _search_threads()
    sent = len(_task_searches(fake))
    time.sleep(1.5)
    assert len(_task_searches(fake)) == sent
    assert all(r.time <= failed_at for r in _task_searches(fake))


def test_a_task_moved_into_a_project_after_the_search_saw_it_in_none_is_written_as_listed(
    fake, config
):
    workspace = next(iter(fake.dataset.workspaces))
    (task, *_) = [t for t in _my_tasks(fake, 1) if t["workspace"]["gid"] == workspace]
    target = _last_live_project(fake, workspace)
    moved = _on_first_search(
        fake, workspace, lambda: fake.move_task(task["gid"], add_to=target), then_list=target
    )

    first = run_tap(config)

    # The search ran while the projects were listed: the move came before that listing.
    assert moved
    assert all(moved)
    rows = [r for r in first.records["tasks"] if r["gid"] == task["gid"]]
    # The listing's copy is the newer: the search's older one must not overwrite it.
    assert rows
    assert rows[-1]["project_gid"] == target
    assert [m["project"]["gid"] for m in rows[-1]["memberships"]] == [target]

    fake.reset_log()
    second = run_tap(config, state=first.state)
    again = [r for r in second.records["tasks"] if r["gid"] == task["gid"]]
    assert all(r["project_gid"] == target for r in again)


def test_a_task_moved_out_of_a_project_before_its_listing_is_found_by_the_next_run(fake, config):
    workspace = next(iter(fake.dataset.workspaces))
    target = _last_live_project(fake, workspace)
    ds = fake.dataset
    task = next(
        t
        for t in ds.tasks.values()
        if [p["gid"] for p in t["projects"]] == [target] and not t.get("parent")
    )
    # Asana may not change modified_at for a move: the harder case.
    moved = _on_first_search(
        fake, workspace, lambda: fake.move_task(task["gid"], remove_from=target), then_list=target
    )

    first = run_tap(config)

    # The search saw it in the project, whose listing came after it left: not in this run.
    assert moved
    assert all(moved)
    assert task["gid"] not in {r["gid"] for r in first.records["tasks"]}

    fake.reset_log()
    second = run_tap(config, state=first.state)
    rows = [r for r in second.records["tasks"] if r["gid"] == task["gid"]]
    assert rows
    assert rows[-1]["memberships"] == []
    assert rows[-1]["project_gid"] is None


def test_more_tasks_in_no_project_than_the_buffer_holds_are_all_written_once(
    fake, config, monkeypatch
):
    # The search waits for the sweep once the buffer is full, then reads on.
    monkeypatch.setattr(unplaced_search, "BUFFERED", 7)
    unplaced = [t["gid"] for t in _my_tasks(fake, 130)]

    first = run_tap(config)

    written = [r["gid"] for r in first.records["tasks"] if r["project_gid"] is None]
    assert sorted(written) == sorted(unplaced)
