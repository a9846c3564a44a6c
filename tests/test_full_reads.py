"""Rows of full-table streams gone from Asana: one ACTIVATE_VERSION after a complete read.

Tags, custom fields, projects, teams, memberships, users, portfolios, goals and each
project's sections, memberships, custom field settings and status updates are read in
full on every run; their records carry the run's table version, and a run that read a
stream completely ends with its ACTIVATE_VERSION (the target marks older rows deleted).
Never when that could mark a live row.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fake_asana import FakeAsana
from tests.tap_runner import FAST, SyncResult, catalog_selecting, run_cli, run_tap

WORKSPACE_LEVEL = {"tags", "custom_fields", "projects", "users", "teams", "team_memberships"}
PROJECT_LEVEL = {"sections", "project_memberships", "project_custom_field_settings"}


@pytest.fixture
def config(pat_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **pat_config,
        **FAST,
        "include_subtasks": False,
        "include_attachments": False,
        # Full-table deletes only; the reconcile pass has its own tests.
        "reconcile_every_days": 10_000,
        # Every project's children read on every run: these tests are about the complete
        # reads; test_project_children.py tests runs that read changed projects only.
        "project_children_refresh_days": 0,
    }


def _activated(result: SyncResult) -> dict[str, int]:
    return result.activated_versions()


def _versioned(result: SyncResult, stream: str, version: int) -> set[str]:
    return {
        m["record"]["gid"]
        for m in result.messages
        if m["type"] == "RECORD" and m["stream"] == stream and m.get("version") == version
    }


def _delete_tag(fake: FakeAsana) -> dict[str, Any]:
    """A tag deleted in Asana: no longer listed (Asana sends no event for it)."""
    with fake.dataset.lock:
        listing = next(tags for tags in fake.dataset.tags_by_workspace.values() if tags)
        tag = listing.pop(0)
        fake.dataset.version += 1
    return tag


def _delete_section(fake: FakeAsana) -> tuple[str, dict[str, Any]]:
    with fake.dataset.lock:
        project, listing = next((p, s) for p, s in fake.dataset.sections_by_project.items() if s)
        section = listing.pop()
        fake.dataset.version += 1
    return project, section


def test_the_first_run_records_what_it_saw_and_marks_nothing(fake, config):
    result = run_tap(config)
    assert _activated(result) == {}
    entry = result.state["bookmarks"]["workspaces"]["complete_reads"]
    assert entry["workspaces"] == sorted(fake.dataset.workspaces)
    assert entry["projects"] == sorted(fake.dataset.projects)
    # Every record of a full-read stream already carries the run's one version.
    versions = {
        m.get("version")
        for m in result.messages
        if m["type"] == "RECORD" and m["stream"] in WORKSPACE_LEVEL | PROJECT_LEVEL
    }
    assert len(versions) == 1
    assert None not in versions


def test_a_deleted_tag_and_section_are_not_rewritten_then_activated(fake, config):
    first = run_tap(config)
    tag = _delete_tag(fake)
    _, section = _delete_section(fake)

    second = run_tap(config, state=first.state)

    activated = _activated(second)
    assert set(activated) >= WORKSPACE_LEVEL | PROJECT_LEVEL
    # Never for streams that are not read in full (tasks, stories …).
    assert not {"tasks", "stories", "task_projects", "workspaces"} & set(activated)
    version = activated["tags"]
    assert len(set(activated.values())) == 1
    live_tags = {t["gid"] for tags in fake.dataset.tags_by_workspace.values() for t in tags}
    assert _versioned(second, "tags", version) == live_tags
    assert tag["gid"] not in live_tags
    live_sections = {s["gid"] for ss in fake.dataset.sections_by_project.values() for s in ss}
    assert _versioned(second, "sections", version) == live_sections
    assert section["gid"] not in live_sections
    # ACTIVATE_VERSION comes after every record.
    kinds = [m["type"] for m in second.messages]
    last_record = max(i for i, kind in enumerate(kinds) if kind == "RECORD")
    assert kinds.index("ACTIVATE_VERSION") > last_record


def test_a_skipped_project_blocks_only_what_is_listed_per_project(fake, config):
    first = run_tap(config)
    project = sorted(fake.dataset.projects)[0]
    fake.inject(rf"/projects/{project}/sections", status=403, times=None)
    second = run_tap(config, state=first.state)
    activated = _activated(second)
    assert "sections" not in activated
    assert "tags" in activated
    assert "project_memberships" in activated
    assert "sections: sections skipped" in second.logs


def test_a_skipped_workspace_listing_blocks_that_stream(fake, config):
    first = run_tap(config)
    workspace = sorted(fake.dataset.workspaces)[0]
    fake.inject(rf"/workspaces/{workspace}/tags", status=403, times=None)
    second = run_tap(config, state=first.state)
    assert "tags" not in _activated(second)
    assert "custom_fields" in _activated(second)


def test_a_listing_cut_off_blocks_that_stream(fake, config):
    small = {**config, "page_size": 1}
    first = run_tap(small)
    # The second page of a tags listing refused: the listing is cut off part-way.
    fake.inject(r"/tags\?.*offset=", status=404, times=1)
    second = run_tap(small, state=first.state)
    assert "tags" not in _activated(second)
    assert "custom_fields" in _activated(second)


def test_a_cut_off_projects_listing_blocks_projects_and_what_is_below(fake, config):
    small = {**config, "page_size": 1}
    first = run_tap(small)
    fake.inject(r"/projects\?.*offset=", status=404, times=1)
    second = run_tap(small, state=first.state)
    activated = _activated(second)
    assert not (PROJECT_LEVEL | {"projects"}) & set(activated)
    assert "tags" in activated


def test_a_run_stopped_part_way_sends_no_activation(fake, config, tmp_path):
    first = run_tap(config)
    _delete_tag(fake)
    # Fails after the tags are written, while team memberships are being listed.
    fake.inject(r"/teams/\d+/team_memberships", status=401, times=None)
    run = run_cli(tmp_path, {**config, "max_retries": 0}, state=first.state)
    assert run.returncode != 0
    messages = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert any(m["type"] == "RECORD" and m["stream"] == "tags" for m in messages)
    assert not any(m["type"] == "ACTIVATE_VERSION" for m in messages)
    fake.clear_faults()
    # The next complete run marks the tag.
    third = run_tap(config, state=first.state)
    assert "tags" in _activated(third)


def test_filters_mean_no_activation_where_they_narrow(fake, config):
    first = run_tap(config)
    projects = sorted(fake.dataset.projects)
    by_project = run_tap({**config, "project_gids": projects[:2]}, state=first.state)
    activated = _activated(by_project)
    assert not (PROJECT_LEVEL | {"projects"}) & set(activated)
    assert "tags" in activated
    workspace = sorted(fake.dataset.workspaces)[0]
    by_workspace = run_tap({**config, "workspace_gids": [workspace]}, state=first.state)
    assert _activated(by_workspace) == {}
    # The filter dropped again: the state still names every workspace and project.
    entry = by_workspace.state["bookmarks"]["workspaces"]["complete_reads"]
    assert entry["workspaces"] == sorted(fake.dataset.workspaces)
    assert entry["projects"] == sorted(fake.dataset.projects)


def test_archived_projects_left_out_mean_no_activation_per_project(fake, config):
    first = run_tap(config)
    second = run_tap({**config, "include_archived_projects": False}, state=first.state)
    assert not (PROJECT_LEVEL | {"projects"}) & set(_activated(second))


def test_a_project_gone_unreadable_blocks_per_project_streams(fake, config):
    first = run_tap(config)
    project = sorted(fake.dataset.projects)[0]
    with fake.dataset.lock:
        for listing in fake.dataset.projects_by_workspace.values():
            listing[:] = [p for p in listing if p["gid"] != project]
        fake.dataset.version += 1
    fake.inject(rf"/projects/{project}\?", status=403, times=None)
    second = run_tap(config, state=first.state)
    activated = _activated(second)
    assert not (PROJECT_LEVEL | {"projects"}) & set(activated)
    assert "tags" in activated
    assert f"project {project} answered 403" in second.logs


def test_a_deleted_project_is_marked_with_its_sections(fake, config):
    first = run_tap(config)
    project = sorted(fake.dataset.projects)[0]
    with fake.dataset.lock:
        for listing in fake.dataset.projects_by_workspace.values():
            listing[:] = [p for p in listing if p["gid"] != project]
        fake.dataset.version += 1
    fake.inject(rf"/projects/{project}\?", status=404, times=None)
    second = run_tap(config, state=first.state)
    activated = _activated(second)
    assert PROJECT_LEVEL | {"projects"} <= set(activated)
    assert project not in _versioned(second, "projects", activated["projects"])


def test_deselected_streams_get_no_activation_and_a_deselected_parent_still_counts(fake, config):
    catalog = catalog_selecting(config, {"sections", "tags"})
    first = run_tap(config, catalog=catalog)
    _, section = _delete_section(fake)
    second = run_tap(config, state=first.state, catalog=catalog)
    activated = _activated(second)
    # projects (the parent) is deselected but read in full: sections are complete.
    assert set(activated) == {"sections", "tags"}
    live = {s["gid"] for ss in fake.dataset.sections_by_project.values() for s in ss}
    assert _versioned(second, "sections", activated["sections"]) == live
    assert section["gid"] not in live


def test_scopes_that_turn_a_stream_off_block_it(fake, config):
    first = run_tap(config)
    fake.inject(
        r"/workspaces/\d+/tags",
        status=403,
        times=None,
        body={"errors": [{"message": "Forbidden: missing scope tags:read"}]},
    )
    second = run_tap(config, state=first.state)
    assert "tags" not in _activated(second)


def test_projects_are_not_looked_up_when_no_stream_below_them_is_selected(fake, config):
    catalog = catalog_selecting(config, {"tags"})
    first = run_tap(config)  # every stream: the state names every project
    fake.reset_log()
    second = run_tap(config, state=first.state, catalog=catalog)
    assert set(_activated(second)) == {"tags"}
    assert not [r for r in fake.requests if r.path.startswith("/api/1.0/projects")]
