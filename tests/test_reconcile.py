"""The reconcile pass: task_projects rows gone without an event, via ACTIVATE_VERSION.

Every live pair is written with the run's table version, then one ACTIVATE_VERSION (the
target marks older rows deleted); only when nothing can make that a false delete.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fake_asana import FakeAsana
from tests.tap_runner import SyncResult, catalog_selecting, run_tap

FAST = {"max_requests_per_minute": 100_000}


@pytest.fixture
def config(pat_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **pat_config,
        **FAST,
        "include_subtasks": False,
        "include_attachments": False,
        "reconcile_every_days": 0,
    }


def _activations(result: SyncResult) -> list[dict[str, Any]]:
    return [m for m in result.messages if m["type"] == "ACTIVATE_VERSION"]


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

    (activation,) = _activations(second)
    assert activation["stream"] == "task_projects"
    # Every live pair is written with that version (the unchanged tasks' ones too), the
    # deleted task's is not: the target marks exactly that row deleted.
    pairs = _versioned_pairs(second, activation["version"])
    assert pairs == _live_pairs(fake)
    assert (gone["gid"], gone["projects"][0]["gid"]) not in pairs
    # Unchanged tasks were not emitted again, nor their stories requested.
    assert second.records["tasks"] == []
    assert second.records["stories"] == []
    # ACTIVATE_VERSION comes after every task_projects record, then a STATE.
    kinds = [m["type"] for m in second.messages]
    last_record = max(i for i, m in enumerate(second.messages) if m["type"] == "RECORD")
    assert kinds.index("ACTIVATE_VERSION") > last_record
    assert kinds[-1] == "STATE"


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
    assert all(m.get("version") is None for m in second.messages if m["type"] == "RECORD")


def test_no_reconcile_before_its_time_or_without_task_projects(fake, config):
    first = run_tap({**config, "reconcile_every_days": 7})
    second = run_tap({**config, "reconcile_every_days": 7}, state=first.state)
    assert _activations(second) == []
    assert all(m.get("version") is None for m in second.messages if m["type"] == "RECORD")
    catalog = catalog_selecting(config, {"tasks"})
    third = run_tap(config, state=second.state, catalog=catalog)
    assert _activations(third) == []


def test_an_expired_events_token_requests_a_reconcile_next_run(fake, config):
    weekly = {**config, "reconcile_every_days": 7}
    first = run_tap(weekly)
    fake.advance_clock(25 * 3600)
    second = run_tap(weekly, state=first.state)
    assert second.state["bookmarks"]["tasks"]["reconcile"]["requested"] is True
    third = run_tap(weekly, state=second.state)
    assert len(_activations(third)) == 1
    assert "requested" not in third.state["bookmarks"]["tasks"]["reconcile"]
