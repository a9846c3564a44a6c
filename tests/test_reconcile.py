"""The reconcile pass: task_projects rows gone without an event, via ACTIVATE_VERSION.

Every live pair is written with the run's table version, then one ACTIVATE_VERSION (the
target marks older rows deleted); only when nothing can make that a false delete.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fake_asana import FakeAsana
from tests.tap_runner import FAST, SyncResult, catalog_selecting, run_tap


@pytest.fixture
def config(pat_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **pat_config,
        **FAST,
        "include_subtasks": False,
        "include_attachments": False,
        "reconcile_every_days": 0,
    }


RECONCILED = {"tasks", "task_projects"}


def _activations(result: SyncResult) -> list[dict[str, Any]]:
    """The reconcile's ACTIVATE_VERSION messages (full-table streams have their own)."""
    return result.activations(RECONCILED)


def _versioned_pairs(result: SyncResult, version: int) -> set[tuple[str, str]]:
    return {
        (m["record"]["task_gid"], m["record"]["project_gid"])
        for m in result.messages
        if m["type"] == "RECORD"
        and m["stream"] == "task_projects"
        and m.get("version") == version
        and not m["record"].get("_sdc_deleted_at")
    }


def _live_pairs(fake: FakeAsana) -> set[tuple[str, str]]:
    return {
        (task["gid"], m["project"]["gid"])
        for task in fake.dataset.tasks.values()
        for m in task["memberships"]
    }


def _lose_events(fake: FakeAsana) -> None:
    """Asana forgets events after 24 h (and delivers them at most once)."""
    with fake.dataset.lock:
        fake.dataset.events.clear()


def test_the_first_reconcile_records_projects_and_marks_nothing(fake, config):
    result = run_tap(config)
    assert _activations(result) == []
    entry = result.state["bookmarks"]["tasks"]["reconcile"]
    assert sorted(entry["projects"]) == sorted(fake.dataset.projects)
    assert entry["at"]


def test_a_pair_gone_without_an_event_is_not_rewritten_then_activated(fake, config):
    first = run_tap(config)
    gone = next(t for t in fake.dataset.tasks.values() if len(t["projects"]) == 1)
    fake.delete_task(gone["gid"])
    _lose_events(fake)

    second = run_tap(config, state=first.state)

    activations = {m["stream"]: m["version"] for m in _activations(second)}
    assert set(activations) == RECONCILED
    (version,) = set(activations.values())
    # Every live pair is written with that version (the unchanged tasks' ones too), the
    # deleted task's is not: the target marks exactly that row deleted.
    pairs = _versioned_pairs(second, version)
    assert pairs == _live_pairs(fake)
    assert (gone["gid"], gone["projects"][0]["gid"]) not in pairs
    # The same for the tasks themselves: every live task's whole row, once; not the
    # deleted one's.
    rows = [
        m["record"]
        for m in second.messages
        if m["type"] == "RECORD" and m["stream"] == "tasks" and m.get("version") == version
    ]
    assert sorted(r["gid"] for r in rows) == sorted(fake.dataset.tasks)
    assert gone["gid"] not in {r["gid"] for r in rows}
    first_rows = {r["gid"]: r for r in first.records["tasks"]}
    assert all(r == first_rows[r["gid"]] for r in rows if r["gid"] in first_rows)
    # Their children were not asked anything (the tasks did not change).
    assert second.records["stories"] == []
    # ACTIVATE_VERSION comes after every task_projects record, then a STATE.
    kinds = [m["type"] for m in second.messages]
    last_record = max(i for i, m in enumerate(second.messages) if m["type"] == "RECORD")
    assert kinds.index("ACTIVATE_VERSION") > last_record
    # The reconcile's bookkeeping reaches the state after its ACTIVATE_VERSIONs.
    last_activation = max(i for i, m in enumerate(second.messages) if m in _activations(second))
    assert "STATE" in kinds[last_activation:]


def test_a_skipped_project_stops_the_activation(fake, config):
    first = run_tap(config)
    project = next(iter(fake.dataset.tasks_by_project))
    fake.inject(rf"/tasks\?.*project={project}", status=403, times=None)
    second = run_tap(config, state=first.state)
    assert _activations(second) == []
    assert "Reconcile pass: nothing marked deleted in this run" in second.logs
    assert second.state["bookmarks"]["tasks"]["reconcile"]["requested"] is True


def test_a_project_gone_unreadable_stops_the_activation(fake, config):
    first = run_tap(config)
    project = next(iter(fake.dataset.projects))
    # Access lost: no longer listed, and 403 when asked for directly.
    with fake.dataset.lock:
        for listing in fake.dataset.projects_by_workspace.values():
            listing[:] = [p for p in listing if p["gid"] != project]
        fake.dataset.version += 1
    fake.inject(rf"/projects/{project}\?", status=403, times=None)
    second = run_tap(config, state=first.state)
    assert _activations(second) == []
    assert f"project {project} answered 403" in second.logs


def test_a_project_filter_means_no_reconcile(fake, config):
    projects = sorted(fake.dataset.projects)
    first = run_tap({**config, "project_gids": projects[:2]})
    second = run_tap({**config, "project_gids": projects[:1]}, state=first.state)
    assert _activations(first) == []
    assert _activations(second) == []
    assert "No reconcile pass: it needs every project in scope" in second.logs
    assert all(
        m.get("version") is None
        for m in second.messages
        if m["type"] == "RECORD" and m["stream"] in RECONCILED
    )


def test_no_reconcile_before_its_time_or_without_task_projects(fake, config):
    first = run_tap({**config, "reconcile_every_days": 7})
    second = run_tap({**config, "reconcile_every_days": 7}, state=first.state)
    assert _activations(second) == []
    assert all(
        m.get("version") is None
        for m in second.messages
        if m["type"] == "RECORD" and m["stream"] in RECONCILED
    )
    catalog = catalog_selecting(config, {"stories"})
    third = run_tap(config, state=second.state, catalog=catalog)
    assert _activations(third) == []


@pytest.mark.parametrize("workspace_events", [True, False])
def test_events_older_than_a_day_reconcile_in_the_same_run(fake, config, workspace_events):
    """Asana refuses tokens older than 24 h: the run that finds them reconciles."""
    if not workspace_events:
        fake.workspace_events_workspaces = set()  # each project's events instead
    weekly = {**config, "reconcile_every_days": 7}
    first = run_tap(weekly)
    task = next(iter(fake.dataset.tasks))
    fake.delete_task(task)  # its event is lost with the token
    fake.advance_clock(25 * 3600)

    second = run_tap(weekly, state=first.state)

    assert "Reconcile pass in this run: Asana's events were last read at" in second.logs
    assert "expired (not read for 24 h or more)" in second.logs
    assert "this run reconciles tasks" in second.logs
    assert {m["stream"] for m in _activations(second)} == RECONCILED
    assert "requested" not in second.state["bookmarks"]["tasks"]["reconcile"]
    version = _activations(second)[0]["version"]
    # The deleted task is the row not re-written: the target marks it.
    written = {
        m["record"]["gid"]
        for m in second.messages
        if m["type"] == "RECORD" and m["stream"] == "tasks" and m.get("version") == version
    }
    assert written == set(fake.dataset.tasks)
    assert task not in written
    # Fresh tokens now: the next run is not a reconcile.
    third = run_tap(weekly, state=second.state)
    assert _activations(third) == []


@pytest.mark.parametrize("workspace_events", [True, False])
def test_a_token_refused_before_any_listing_reconciles_in_the_same_run(
    fake, config, workspace_events
):
    """Asana may refuse a younger token (under load): found at the run's first events."""
    if not workspace_events:
        fake.workspace_events_workspaces = set()
    weekly = {**config, "reconcile_every_days": 7}
    first = run_tap(weekly)
    fake.sync_token_ttl = 3600.0
    fake.advance_clock(2 * 3600)
    second = run_tap(weekly, state=first.state)
    assert "Reconcile pass in this run: Asana refused the events token of" in second.logs
    assert "this run reconciles tasks" in second.logs
    assert {m["stream"] for m in _activations(second)} == RECONCILED
    assert "requested" not in second.state["bookmarks"]["tasks"]["reconcile"]


def test_a_token_refused_after_a_listing_requests_a_reconcile_next_run(fake, config):
    """A later project's token refused: its listings are under way, the next run reconciles."""
    fake.workspace_events_workspaces = set()
    weekly = {**config, "reconcile_every_days": 7}
    first = run_tap(weekly)
    later = max(fake.dataset.projects)
    body = {"errors": [{"message": "Sync token invalid or too old."}], "sync": "fresh"}
    fake.inject(rf"/events\?.*resource={later}", status=412, body=body)
    second = run_tap(weekly, state=first.state)
    assert f"events token for project {later} expired" in second.logs
    assert "the next run reconciles tasks" in second.logs
    assert "Reconcile pass in this run" not in second.logs
    assert _activations(second) == []
    assert second.state["bookmarks"]["tasks"]["reconcile"]["requested"] is True
    fake.clear_faults()
    third = run_tap(weekly, state=second.state)
    assert {m["stream"] for m in _activations(third)} == RECONCILED
    assert "requested" not in third.state["bookmarks"]["tasks"]["reconcile"]


def test_events_of_a_project_no_longer_synced_do_not_reconcile(fake, config):
    """Only the newest token's age counts: a stale one (a project left) never expires it."""
    fake.workspace_events_workspaces = set()
    weekly = {**config, "reconcile_every_days": 7}
    first = run_tap(weekly)
    state = first.state
    partitions = state["bookmarks"]["tasks"]["partitions"]
    dated = [p for p in partitions if p.get("events_sync_at")]
    assert dated
    dated[0]["events_sync_at"] = "2001-01-01T00:00:00Z"  # a project not read since
    second = run_tap(weekly, state=state)
    assert "Reconcile pass in this run" not in second.logs
    assert _activations(second) == []


def test_a_later_start_date_stops_the_activation(fake, config):
    first = run_tap({**config, "start_date": "2000-01-01T00:00:00Z"})
    # Tasks modified before a later start_date are no longer listed, but their rows
    # are in the warehouse: marking them would be a false delete.
    later = {**config, "start_date": "2100-01-01T00:00:00Z"}
    second = run_tap(later, state=first.state)
    assert _activations(second) == []
    assert "start_date changed" in second.logs
    # An earlier one lists more: fine.
    earlier = {**config, "start_date": "1990-01-01T00:00:00Z"}
    third = run_tap(earlier, state=first.state)
    assert {m["stream"] for m in _activations(third)} == RECONCILED


def test_only_the_selected_one_of_tasks_and_task_projects_is_activated(fake, config):
    catalog = catalog_selecting(config, {"task_projects"})
    first = run_tap(config, catalog=catalog)
    second = run_tap(config, state=first.state, catalog=catalog)
    assert {m["stream"] for m in _activations(second)} == {"task_projects"}
    assert "tasks" not in second.records


def test_a_deleted_subtask_is_marked_by_the_reconcile(fake, config):
    with_subtasks = {**config, "include_subtasks": True}
    first = run_tap(with_subtasks)
    subtask = next(iter(fake.dataset.subtasks.values()))
    fake.delete_task(subtask["gid"])
    _lose_events(fake)

    second = run_tap(with_subtasks, state=first.state)

    activations = {
        m["stream"]: m["version"] for m in second.messages if m["type"] == "ACTIVATE_VERSION"
    }
    assert {"tasks", "task_projects", "subtasks"} <= set(activations)
    version = activations["subtasks"]
    # Every live subtask is written again with the version (unchanged parents' subtrees
    # are read too), the deleted one (and its own subtasks) is not.
    rewritten = {
        m["record"]["gid"]
        for m in second.messages
        if m["type"] == "RECORD" and m["stream"] == "subtasks" and m.get("version") == version
    }
    assert rewritten == set(fake.dataset.subtasks)
    assert subtask["gid"] not in rewritten


def test_no_subtask_activation_when_a_subtree_is_skipped(fake, config):
    with_subtasks = {**config, "include_subtasks": True}
    first = run_tap(with_subtasks)
    parent = next(t for t in fake.dataset.tasks.values() if t.get("num_subtasks"))
    fake.inject(rf"/tasks/{parent['gid']}/subtasks", status=403, times=None)
    second = run_tap(with_subtasks, state=first.state)
    assert _activations(second) == []
    assert "Reconcile pass: nothing marked deleted in this run" in second.logs


def test_subtask_trees_are_read_for_the_reconcile_only_when_subtasks_are_written(fake, config):
    with_subtasks = {**config, "include_subtasks": True}

    def subtree_requests(selected: set[str], every: int) -> int:
        catalog = catalog_selecting(with_subtasks, selected)
        first = run_tap({**with_subtasks, "reconcile_every_days": 10_000}, catalog=catalog)
        fake.reset_log()
        run_tap(
            {**with_subtasks, "reconcile_every_days": every}, state=first.state, catalog=catalog
        )
        return len([r for r in fake.requests if r.path.endswith("/subtasks")])

    # The subtasks table written: a reconcile reads the trees of unchanged tasks too.
    assert subtree_requests({"subtasks"}, 0) > subtree_requests({"subtasks"}, 10_000)
    # Only their stories selected: it does not (it re-writes no subtask rows).
    only_stories = {"task_projects", "subtask_stories"}
    assert subtree_requests(only_stories, 0) == subtree_requests(only_stories, 10_000)


def test_subtask_comments_gone_are_marked_by_the_reconcile(fake, config):
    with_subtasks = {**config, "include_subtasks": True}
    first = run_tap(with_subtasks)
    story = next(iter(fake.dataset.subtask_stories.values()))
    fake.delete_story(story["gid"])
    _lose_events(fake)

    second = run_tap(with_subtasks, state=first.state)

    activations = {
        m["stream"]: m["version"] for m in second.messages if m["type"] == "ACTIVATE_VERSION"
    }
    version = activations["subtask_stories"]
    rewritten = {
        m["record"]["gid"]
        for m in second.messages
        if m["type"] == "RECORD"
        and m["stream"] == "subtask_stories"
        and m.get("version") == version
    }
    assert rewritten == set(fake.dataset.subtask_stories)
    assert story["gid"] not in rewritten


def test_no_subtask_comments_activation_when_one_listing_is_skipped(fake, config):
    with_subtasks = {**config, "include_subtasks": True}
    first = run_tap(with_subtasks)
    subtask = next(
        s for s in fake.dataset.subtasks.values() if fake.dataset.stories_by_task.get(s["gid"])
    )
    fake.inject(rf"/tasks/{subtask['gid']}/stories", status=403, times=None)
    second = run_tap(with_subtasks, state=first.state)
    assert _activations(second) == []
    assert not [
        m
        for m in second.messages
        if m["type"] == "ACTIVATE_VERSION" and m["stream"] in {"subtasks", "subtask_stories"}
    ]


def test_old_tokens_reconcile_nothing_when_events_are_not_read(fake, config, oauth_config):
    """Granular OAuth scopes read no events: tokens kept from before stay old for good."""
    weekly = {**config, "reconcile_every_days": 7}
    first = run_tap(weekly)
    fake.advance_clock(25 * 3600)
    scopes = "workspaces:read users:read projects:read tasks:read"
    granular = {
        **weekly,
        **oauth_config,
        "oauth_scopes": scopes,
        "refresh_token": fake.issue_refresh_token(oauth_config["client_id"], scopes=scopes.split()),
    }
    granular.pop("access_token", None)
    catalog = catalog_selecting(granular, {"workspaces", "projects", "tasks", "task_projects"})
    second = run_tap(granular, state=first.state, catalog=catalog)
    assert "Not reading Asana's events in this run" in second.logs
    assert "Reconcile pass in this run" not in second.logs
    assert _activations(second) == []
