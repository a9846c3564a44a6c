"""Deletes and moves reach the output: tombstones from Asana's events, per project.

Against the fake (tests/fake_asana), which reports deletions and moves in ``GET /events``
as Asana's docs describe, and answers 404 for deleted objects afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest
from singer_sdk.exceptions import FatalAPIError

from tests.fake_asana import FakeAsana
from tests.tap_runner import FAST, SyncResult, catalog_selecting, run_tap

DELETED_AT = "_sdc_deleted_at"


#: Streams that may carry tombstones from Asana's events (deletes.py). The derived
#: tables mark cleared values and removed pairs themselves (tests/test_derived_tables.py).
EVENT_TOMBSTONED = frozenset({"tasks", "task_projects", "stories", "sections"})


def _any_tombstone(result: SyncResult) -> bool:
    """Whether the run wrote any tombstone of the event-tombstoned streams."""
    return any(
        r.get(DELETED_AT)
        for stream, records in result.records.items()
        if stream in EVENT_TOMBSTONED
        for r in records
    )


def _deleted(result: SyncResult, stream: str) -> dict[tuple[str, ...], dict[str, Any]]:
    """Tombstones of a stream by key."""
    return {
        key: record
        for (name, key), record in result.by_key().items()
        if name == stream and record.get(DELETED_AT)
    }


def _single_home_tasks(fake: FakeAsana) -> tuple[str, list[dict[str, Any]]]:
    """A project and its tasks that are in that project only."""
    for gid, tasks in fake.dataset.tasks_by_project.items():
        alone = [t for t in tasks if len(t["projects"]) == 1]
        if len(alone) >= 3:
            return gid, alone
    raise AssertionError("no such project")


@pytest.fixture
def config(fake: FakeAsana, pat_config: dict[str, Any]) -> dict[str, Any]:
    # Each project's events: where Asana does not offer a workspace's events (402). The
    # workspace's events (one request per run) are tested in test_workspace_events.py,
    # and the main delete/move test below runs on both.
    fake.workspace_events_workspaces = set()
    return {**pat_config, **FAST, "include_subtasks": False, "include_attachments": False}


def test_first_run_gets_a_token_per_project_and_marks_nothing(fake, config):
    result = run_tap(config)
    assert not _any_tombstone(result)
    partitions = result.state["bookmarks"]["tasks"]["partitions"]
    tokens = {p["context"]["project_gid"]: p.get("events_sync") for p in partitions}
    assert set(tokens) == set(fake.dataset.projects)
    assert all(tokens.values())
    # One events request per project, answered 412 (no token yet): not an error.
    events = fake.requests_for("/api/1.0/events")
    assert len(events) == len(fake.dataset.projects)
    assert {r.status for r in events} == {412}


@pytest.mark.parametrize("events", ["per project", "per workspace"])
def test_deleted_task_story_section_and_moves_become_tombstones(fake, config, events):
    if events == "per workspace":
        fake.workspace_events_workspaces = set(fake.dataset.workspaces)
    first = run_tap(config)
    project, tasks = _single_home_tasks(fake)
    other = next(p for p in fake.dataset.projects if p != project)
    deleted, moved, commented = tasks[0], tasks[1], tasks[2]
    story = fake.dataset.stories_by_task[commented["gid"]][0]
    fake.delete_task(deleted["gid"])
    fake.delete_story(story["gid"])
    # Moved without a new modified_at (Asana's docs disagree on whether it bumps it).
    fake.move_task(moved["gid"], remove_from=project, add_to=other)
    icebox = [s for s in fake.dataset.sections_by_project[project] if s["name"] == "Icebox"]
    for section in icebox:
        fake.delete_section(section["gid"])
    fake.reset_log()

    second = run_tap(config, state=first.state)

    assert set(_deleted(second, "tasks")) == {(deleted["gid"],)}
    assert _deleted(second, "tasks")[(deleted["gid"],)]["name"] == deleted["name"]
    assert set(_deleted(second, "stories")) == {(story["gid"],)}
    assert set(_deleted(second, "sections")) == {(s["gid"],) for s in icebox}
    # A workspace's events do not say which projects a deleted task was in: its pair
    # is marked by the next reconcile pass (README, Deletes and moves).
    deleted_pairs = {(deleted["gid"], project)} if events == "per project" else set()
    assert set(_deleted(second, "task_projects")) == deleted_pairs | {(moved["gid"], project)}
    events_requests = [r for r in fake.requests if r.path.endswith("/events")]
    if events == "per workspace":
        assert {r.path for r in events_requests} == {
            f"/api/1.0/workspaces/{w}/events" for w in fake.dataset.workspaces
        }
        assert len(events_requests) == len(fake.dataset.workspaces)
    else:
        # One per project, after one refused request per workspace.
        assert len(fake.requests_for("/api/1.0/events")) == len(fake.dataset.projects)
        assert {r.status for r in events_requests if "/workspaces/" in r.path} == {402}
    # The moved task is emitted again with its new membership, so its new pair appears,
    # under the project it is in now.
    assert [r["project_gid"] for r in second.records["tasks"] if r["gid"] == moved["gid"]] == [
        other
    ]
    pairs = {k for (name, k), r in second.by_key().items() if name == "task_projects"}
    assert (moved["gid"], other) in pairs
    assert not second.by_key()[("task_projects", (moved["gid"], other))].get(DELETED_AT)
    # A third run with nothing changed marks nothing again.
    third = run_tap(config, state=second.state)
    assert not _any_tombstone(third)
    assert third.records["tasks"] == []


def test_a_run_stopped_before_the_project_is_written_reads_the_events_again(fake, config):
    # A free plan: each project's changed tasks are listed right after its events (a
    # paid plan's search would find them after every project of the workspace).
    fake.premium_workspaces = set()
    first = run_tap(config)
    project, tasks = _single_home_tasks(fake)
    fake.delete_task(tasks[0]["gid"])
    # The tombstone's events are read, but the run dies on the project's task listing.
    fake.inject(rf"/tasks\?.*project={project}", status=500, times=None)
    with pytest.raises(FatalAPIError, match="Giving up"):
        run_tap({**config, "max_retries": 0}, state=first.state)
    fake.clear_faults()
    again = run_tap(config, state=first.state)
    assert set(_deleted(again, "tasks")) == {(tasks[0]["gid"],)}


def test_an_expired_token_is_not_an_error_and_marks_nothing(fake, config):
    first = run_tap(config)
    project, tasks = _single_home_tasks(fake)
    fake.delete_task(tasks[0]["gid"])
    fake.advance_clock(25 * 3600)
    second = run_tap(config, state=first.state)
    assert "events token for project" in second.logs
    assert "expired" in second.logs
    assert _deleted(second, "tasks") == {}
    partition = next(
        p
        for p in second.state["bookmarks"]["tasks"]["partitions"]
        if p["context"]["project_gid"] == project
    )
    assert partition["events_sync"] != next(
        p["events_sync"]
        for p in first.state["bookmarks"]["tasks"]["partitions"]
        if p["context"]["project_gid"] == project
    )
    assert partition.get("events_expired_at")


def test_a_project_whose_events_are_refused_is_skipped_not_marked(fake, config):
    first = run_tap(config)
    project, tasks = _single_home_tasks(fake)
    fake.delete_task(tasks[0]["gid"])
    fake.inject(rf"/events\?.*resource={project}", status=403, times=None)
    second = run_tap(config, state=first.state)
    assert _deleted(second, "tasks") == {}
    fake.clear_faults()
    # The token was kept: the next run still sees the delete.
    third = run_tap(config, state=second.state)
    assert set(_deleted(third, "tasks")) == {(tasks[0]["gid"],)}


def test_deselected_streams_get_no_tombstones(fake, config):
    first = run_tap(config)
    project, tasks = _single_home_tasks(fake)
    fake.delete_task(tasks[0]["gid"])
    catalog = catalog_selecting(config, {"task_projects"})
    second = run_tap(config, state=first.state, catalog=catalog)
    assert set(second.records) <= {"task_projects"}
    assert set(_deleted(second, "task_projects")) == {(tasks[0]["gid"], project)}


def test_a_narrower_project_filter_marks_nothing_deleted(fake, config):
    projects = sorted(fake.dataset.projects)
    first = run_tap({**config, "project_gids": projects[:3]})
    second = run_tap({**config, "project_gids": projects[:1]}, state=first.state)
    assert not _any_tombstone(second)
    # The projects left out keep their tokens for when they are back in the filter.
    tokens = {
        p["context"]["project_gid"]: p.get("events_sync")
        for p in second.state["bookmarks"]["tasks"]["partitions"]
    }
    assert set(tokens) == set(projects[:3])
    assert all(tokens.values())


def test_a_listing_cut_off_part_way_marks_nothing_deleted(fake, config):
    fake.premium_workspaces = set()  # free plan: every run lists each project's tasks
    first = run_tap({**config, "page_size": 5})
    project, tasks = _single_home_tasks(fake)
    for task in tasks:
        fake.touch_task(task["gid"])
    # The second page of the project's listing is refused: the project is skipped.
    fake.inject(rf"/tasks\?.*project={project}.*offset=", status=403, times=None)
    second = run_tap({**config, "page_size": 5}, state=first.state)
    assert "Skipping project" in second.logs
    assert not _any_tombstone(second)


def test_granular_oauth_scopes_skip_the_events_with_one_warning(fake, oauth_config):
    scopes = "workspaces:read users:read projects:read tasks:read stories:read"
    config = {
        **oauth_config,
        **FAST,
        "oauth_scopes": scopes,
        "refresh_token": fake.issue_refresh_token(oauth_config["client_id"], scopes=scopes.split()),
        "include_subtasks": False,
        "include_attachments": False,
    }
    catalog = catalog_selecting(config, {"workspaces", "projects", "tasks", "stories"})
    result = run_tap(config, catalog=catalog)
    assert fake.requests_for("/api/1.0/events") == []
    assert result.logs.count("Not reading Asana's events in this run") == 1
    assert result.records["tasks"]


def test_events_are_paged_with_has_more_and_a_delete_after_100_events_is_caught(fake, config):
    first = run_tap(config)
    project, tasks = _single_home_tasks(fake)
    for _ in range(101):
        fake.add_story(tasks[1]["gid"])
    fake.delete_task(tasks[0]["gid"])
    fake.reset_log()
    second = run_tap(config, state=first.state)
    assert set(_deleted(second, "tasks")) == {(tasks[0]["gid"],)}
    calls = [r for r in fake.requests_for("/api/1.0/events") if r.query["resource"] == [project]]
    assert len(calls) == 2


def test_a_subtask_named_by_an_event_is_not_emitted_as_a_task(fake, config):
    first = run_tap(config)
    project, tasks = _single_home_tasks(fake)
    subtask = fake.add_subtask(tasks[0]["gid"])
    # As if Asana let the subtask's events bubble up to the project (its docs say they
    # may): added to its parent task, then undeleted.
    with fake.dataset.lock:
        fake.dataset._emit("added", subtask, {project}, parent=tasks[0])
        fake.dataset._emit("undeleted", subtask, {project})
    second = run_tap(config, state=first.state)
    assert subtask["gid"] not in second.gids("tasks")
