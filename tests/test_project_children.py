"""Per-project children re-read only where the project shows a change (issue 15 item 4).

``sections``, ``project_memberships``, ``project_custom_field_settings`` and
``status_updates`` cost one request per project. A run re-reads them for projects whose
listed record changed (its digest, kept in state) or whose events name a section, and
for every project every ``project_children_refresh_days`` days (0: every run). Their
complete-read ACTIVATE_VERSION is sent only by a run that read every project: a partial
run must never mark (nor, with ``hard_delete``, delete) a row of a project it left alone.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tap_asana_vl.streams.project_children import STATE_KEY
from tests.fake_asana import FakeAsana
from tests.tap_runner import SyncResult, catalog_selecting, run_tap
from tests.test_hard_delete import activations, load

FAST = {"max_requests_per_minute": 100_000}
CHILDREN = ("sections", "project_memberships", "project_custom_field_settings", "status_updates")
_PER_PROJECT = re.compile(
    r"^/api/1\.0/projects/(\d+)/(sections|project_memberships|custom_field_settings)$"
)


@pytest.fixture
def config(pat_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **pat_config,
        **FAST,
        "include_subtasks": False,
        "include_attachments": False,
        "reconcile_every_days": 10_000,
    }


def children_read(fake: FakeAsana) -> dict[str, set[str]]:
    """Per project, which of its children's listings were requested (since reset_log)."""
    found: dict[str, set[str]] = {}
    for request in fake.requests:
        match = _PER_PROJECT.match(request.path)
        if match:
            found.setdefault(match[1], set()).add(match[2])
        elif request.path == "/api/1.0/status_updates":
            found.setdefault(request.query["parent"][0], set()).add("status_updates")
    return found


def all_projects(fake: FakeAsana) -> set[str]:
    return set(fake.dataset.projects)


def every_child(fake: FakeAsana) -> dict[str, set[str]]:
    kinds = {"sections", "project_memberships", "custom_field_settings", "status_updates"}
    return {gid: kinds for gid in all_projects(fake)}


def child_records(result: SyncResult) -> dict[str, int]:
    return {name: len(result.records.get(name, [])) for name in CHILDREN}


def age_refresh(state: dict[str, Any], days: int) -> dict[str, Any]:
    """``state`` as if the last full refresh were ``days`` days ago."""
    entry = state["bookmarks"]["projects"][STATE_KEY]
    entry["refreshed_at"] = f"2000-01-{days:02d}T00:00:00.000Z"  # long ago
    return state


def test_an_unchanged_run_reads_no_project_children(fake, config):
    first = run_tap(config)
    assert children_read(fake) == every_child(fake)
    fake.reset_log()
    second = run_tap(config, state=first.state)
    # Every stream selected (the default catalog), nothing changed: no request per
    # project for these four, and none of their records again.
    assert children_read(fake) == {}
    assert child_records(second) == dict.fromkeys(CHILDREN, 0)
    assert not set(activations(second)) & set(CHILDREN)
    assert "6 unchanged projects not re-read" in second.logs
    # The other complete reads are not held back by these.
    assert "tags" in activations(second)


@pytest.mark.parametrize(
    "change",
    ["status update posted", "custom field taken off", "section added", "section renamed"],
)
def test_a_changed_project_is_read_again_and_only_it(fake, config, change):
    if change == "section renamed":
        # A rename reaches a project's own events, not a workspace's (no parent):
        # where Asana refuses the workspace's, each project's are read.
        fake.workspace_events_workspaces = set()
    first = run_tap(config)
    project = next(
        gid for gid, fields in fake.dataset.custom_field_settings_by_project.items() if fields
    )
    ds = fake.dataset
    before = dict(ds.projects[project])
    if change == "status update posted":
        expected = ds.add_status_update(project)["gid"]
        stream = "status_updates"
    elif change == "custom field taken off":
        setting = ds.custom_field_settings_by_project[project][0]
        ds.remove_custom_field_from_project(project, setting["custom_field"]["gid"])
        expected = None
        stream = "project_custom_field_settings"
    elif change == "section added":
        expected = ds.add_section(project)["gid"]
        stream = "sections"
    else:
        section = ds.sections_by_project[project][0]
        expected = ds.rename_section(section["gid"], "Renamed")["gid"]
        stream = "sections"
    if change.startswith("section"):
        # Sections are associations: the project's record says nothing (Asana's docs).
        assert ds.projects[project] == before
    fake.reset_log()
    second = run_tap(config, state=first.state)
    assert set(children_read(fake)) == {project}
    assert children_read(fake)[project] == every_child(fake)[project]
    gids = {r["gid"] for r in second.records[stream]}
    if expected is not None:
        assert expected in gids
    # Read for one project only: nothing says which rows of the others are gone.
    assert not set(activations(second)) & set(CHILDREN)
    # Its digest is kept: the run after reads nothing again.
    fake.reset_log()
    run_tap(config, state=second.state)
    assert children_read(fake) == {}


def test_the_refresh_reads_every_project_and_activates(fake, config):
    first = run_tap(config)
    fake.reset_log()
    second = run_tap(config, state=first.state)
    assert children_read(fake) == {}
    # A section gone from Asana without an event (none reaches the tap): only the
    # refresh's complete read can see it.
    with fake.dataset.lock:
        listing = next(s for s in fake.dataset.sections_by_project.values() if s)
        gone = listing.pop()
        fake.dataset.version += 1
    fake.reset_log()
    third = run_tap(config, state=age_refresh(second.state, 1))
    assert children_read(fake) == every_child(fake)
    activated = activations(third)
    assert set(CHILDREN) <= set(activated)
    assert "Read in full" in third.logs
    warehouse = load(first, second, third, hard=False)
    assert (gone["gid"],) in warehouse.marked("sections")
    live = {(s["gid"],) for ss in fake.dataset.sections_by_project.values() for s in ss}
    assert warehouse.live("sections") == live
    # The refresh's time is kept: the next run is incremental again.
    fake.reset_log()
    run_tap(config, state=third.state)
    assert children_read(fake) == {}


def test_zero_reads_every_project_on_every_run(fake, config):
    every_run = {**config, "project_children_refresh_days": 0}
    first = run_tap(every_run)
    fake.reset_log()
    second = run_tap(every_run, state=first.state)
    assert children_read(fake) == every_child(fake)
    assert set(CHILDREN) <= set(activations(second))
    # No digests kept when they are never consulted.
    assert "digests" not in second.state["bookmarks"]["projects"][STATE_KEY]


def test_a_newly_selected_child_stream_reads_every_project(fake, config):
    some = catalog_selecting(config, {"projects", "sections"})
    first = run_tap(config, catalog=some)
    fake.reset_log()
    more = catalog_selecting(config, {"projects", "sections", "project_memberships"})
    run_tap(config, state=first.state, catalog=more)
    assert set(children_read(fake)) == all_projects(fake)


@pytest.mark.parametrize("hard", [False, True])
def test_a_partial_run_never_marks_a_row_of_a_project_left_alone(fake, config, hard):
    """Floors stay sound: a partial run's purge reaches tombstones only."""
    first = run_tap(config)  # records what it saw
    second = run_tap(config, state=age_refresh(first.state, 1))  # a refresh: activates
    floor = activations(second)["sections"][0]  # every section row is at this version
    # Now partial runs: one section deleted (its event makes a tombstone, and the run a
    # purge ACTIVATE_VERSION(floor)), one project changed, the others left alone.
    ds = fake.dataset
    icebox = next(s for ss in ds.sections_by_project.values() for s in ss if s["name"] == "Icebox")
    ds.delete_section(icebox["gid"])
    changed = next(gid for gid in ds.projects if gid != icebox["project"]["gid"])
    ds.add_status_update(changed)
    fake.reset_log()
    third = run_tap(config, state=second.state)
    read = set(children_read(fake))
    assert changed in read
    assert read != all_projects(fake)
    assert activations(third).get("sections") == [floor]  # the purge, not a complete read
    for stream in ("project_memberships", "project_custom_field_settings", "status_updates"):
        assert stream not in activations(third)
    warehouse = load(first, second, third, hard=hard)
    live = {(s["gid"],) for ss in ds.sections_by_project.values() for s in ss}
    assert warehouse.live("sections") == live
    gone = {(icebox["gid"],)}
    assert (warehouse.marked("sections") == gone) if not hard else not warehouse.marked("sections")
    for stream, table in (
        ("project_memberships", ds.project_memberships),
        ("status_updates", ds.status_updates),
    ):
        assert {k[0] for k in warehouse.live(stream)} == set(table)
        assert warehouse.marked(stream) == set()


def test_a_project_whose_children_failed_is_read_again(fake, config):
    first = run_tap(config)
    project = next(iter(fake.dataset.projects))
    fake.dataset.add_status_update(project)
    fake.inject(rf"/projects/{project}/sections", status=403, times=1)
    second = run_tap(config, state=first.state)
    assert "sections skipped" in second.logs or "Skipping" in second.logs
    fake.reset_log()
    run_tap(config, state=second.state)
    assert set(children_read(fake)) == {project}


def test_an_expired_events_token_reads_that_projects_children_again(fake, config):
    """Events of its sections may have been missed: conservative, read it again."""
    fake.workspace_events_workspaces = set()  # each project's events
    first = run_tap(config)
    fake.advance_clock(25 * 3600)  # every project's token expires (Asana: 24 h)
    fake.reset_log()
    second = run_tap(config, state=first.state)
    assert "expired" in second.logs
    assert children_read(fake) == every_child(fake)
    fake.reset_log()
    run_tap(config, state=second.state)
    assert children_read(fake) == {}


def test_an_expired_workspace_events_token_reads_every_projects_children_again(fake, config):
    """A workspace's events name no project: which sections changed is unknown."""
    first = run_tap(config)
    fake.advance_clock(25 * 3600)  # the workspace's token expires (Asana: 24 h)
    fake.reset_log()
    second = run_tap(config, state=first.state)
    assert "events token for workspace" in second.logs
    assert children_read(fake) == every_child(fake)
    fake.reset_log()
    run_tap(config, state=second.state)
    assert children_read(fake) == {}


def test_a_project_failing_on_every_run_does_not_make_every_run_a_refresh(fake, config):
    """Only the failing project is read again; the others wait for the refresh."""
    project = next(iter(fake.dataset.projects))
    fake.inject(rf"/projects/{project}/sections", status=403, times=None)
    first = run_tap(config)  # the first read: every project, one of them refused
    fake.reset_log()
    second = run_tap(config, state=first.state)
    assert set(children_read(fake)) == {project}
    assert "for every project" not in second.logs


def test_a_child_stream_deselected_then_selected_again_reads_every_project(fake, config):
    """While deselected its changes were not read: selecting it again is a refresh."""
    four = {"projects", *CHILDREN}
    first = run_tap(config, catalog=catalog_selecting(config, four))
    project = next(iter(fake.dataset.projects))
    posted = fake.dataset.add_status_update(project, title="Posted while deselected")
    without = catalog_selecting(config, four - {"status_updates"})
    second = run_tap(config, state=first.state, catalog=without)
    fake.reset_log()
    third = run_tap(config, state=second.state, catalog=catalog_selecting(config, four))
    assert set(children_read(fake)) == all_projects(fake)
    assert posted["gid"] in {r["gid"] for r in third.records["status_updates"]}
