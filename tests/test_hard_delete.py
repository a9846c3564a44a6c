"""``hard_delete: true`` removes tombstones too: the purge ACTIVATE_VERSION (purge.py).

target-postgres 0.8.1 applies ``hard_delete`` only to ACTIVATE_VERSION, so tombstones
carry table version 1 and a run that wrote some ends with ACTIVATE_VERSION(floor), the
version of the last run that re-wrote every live row of the stream. ``Warehouse`` below
applies the tap's messages as target-postgres does, in both modes, so each test checks
the rows a warehouse ends up with, not only the messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tap_asana_vl.streams.purge import CANDIDATE_KEY, FLOOR_KEY, SCOPE_KEY, TOMBSTONE_VERSION
from tap_asana_vl.streams.selection import STATE_KEY as SELECTION_KEY
from tests.fake_asana import FakeAsana
from tests.tap_runner import FAST, SyncResult, catalog_selecting, run_cli, run_tap

DELETED_AT = "_sdc_deleted_at"
VERSION = "_sdc_table_version"
#: Streams that get tombstones from Asana's events (deletes.py).
TOMBSTONED = ("tasks", "task_projects", "stories", "sections")
#: Of those, the ones a floor can come from (a reconcile, a complete read; stories: the
#: first run's complete read, confirmed by the next reconcile).
WITH_FLOOR = {"tasks", "task_projects", "sections", "stories"}


class Warehouse:
    """The rows target-postgres 0.8.1 keeps from Singer messages (``sinks.py``).

    A RECORD upserts its row by key, every column from the record (so its version and
    ``_sdc_deleted_at``, null when absent). ACTIVATE_VERSION v, on rows whose version
    is null or below v: deletes them (``hard_delete``) or sets ``_sdc_deleted_at`` on
    those not marked yet.
    """

    def __init__(self, *, hard: bool) -> None:
        self.hard = hard
        self.keys: dict[str, list[str]] = {}
        self.tables: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}

    def apply(self, messages: list[dict[str, Any]]) -> Warehouse:
        for message in messages:
            stream = message.get("stream")
            if message["type"] == "SCHEMA":
                self.keys[stream] = message["key_properties"]
            elif message["type"] == "RECORD":
                record = message["record"]
                row = {**record, VERSION: message.get("version")}
                row.setdefault(DELETED_AT, None)
                key = tuple(record[k] for k in self.keys[stream])
                self.tables.setdefault(stream, {})[key] = row
            elif message["type"] == "ACTIVATE_VERSION":
                self._activate(self.tables.get(stream, {}), message["version"])
        return self

    def _activate(self, table: dict[tuple[Any, ...], dict[str, Any]], version: int) -> None:
        for key, row in list(table.items()):
            if row[VERSION] is None or row[VERSION] < version:
                if self.hard:
                    del table[key]
                elif row[DELETED_AT] is None:
                    row[DELETED_AT] = "activated"

    def live(self, stream: str) -> set[tuple[Any, ...]]:
        return {k for k, r in self.tables.get(stream, {}).items() if r[DELETED_AT] is None}

    def marked(self, stream: str) -> set[tuple[Any, ...]]:
        return {k for k, r in self.tables.get(stream, {}).items() if r[DELETED_AT] is not None}


def load(*runs: SyncResult, hard: bool) -> Warehouse:
    warehouse = Warehouse(hard=hard)
    for run in runs:
        warehouse.apply(run.messages)
    return warehouse


def asana_now(fake: FakeAsana) -> dict[str, set[tuple[Any, ...]]]:
    """The keys of what exists in Asana now, per tombstoned stream."""
    ds = fake.dataset
    return {
        "tasks": {(gid,) for gid in ds.tasks},
        "task_projects": {
            (t["gid"], m["project"]["gid"]) for t in ds.tasks.values() for m in t["memberships"]
        },
        "sections": {(s["gid"],) for listing in ds.sections_by_project.values() for s in listing},
        "stories": {(gid,) for gid in ds.stories},
    }


def activations(result: SyncResult) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for m in result.messages:
        if m["type"] == "ACTIVATE_VERSION":
            found.setdefault(m["stream"], []).append(m["version"])
    return found


def tombstones(result: SyncResult) -> list[dict[str, Any]]:
    """Tombstones from events (the derived tables mark cleared values their own way)."""
    return [
        m
        for m in result.messages
        if m["type"] == "RECORD" and m["stream"] in TOMBSTONED and m["record"].get(DELETED_AT)
    ]


@pytest.fixture
def config(fake: FakeAsana, pat_config: dict[str, Any]) -> dict[str, Any]:
    # Each project's events (where Asana refuses a workspace's): they name the project
    # of a deleted task, so its task_projects rows get tombstones too. A workspace's
    # events do not (test_workspace_events.py): those rows wait for the reconcile.
    fake.workspace_events_workspaces = set()
    return {
        **pat_config,
        **FAST,
        "include_subtasks": False,
        "include_attachments": False,
        # Sections' floor from a complete read on every run; partial runs (projects
        # left alone) are in test_project_children.py.
        "project_children_refresh_days": 0,
    }


def floor_runs(config: dict[str, Any]) -> list[SyncResult]:
    """A first run (records what it saw), then a reconcile: every stream has a floor."""
    first = run_tap(config)
    second = run_tap({**config, "reconcile_every_days": 0}, state=first.state)
    assert set(activations(second)) >= WITH_FLOOR
    # The stories' floor is the version the first run wrote every story with.
    candidate = first.state["bookmarks"]["stories"][CANDIDATE_KEY]
    assert activations(second)["stories"] == [candidate]
    assert second.state["bookmarks"]["stories"][FLOOR_KEY] == candidate
    assert CANDIDATE_KEY not in second.state["bookmarks"]["stories"]
    return [first, second]


def single_home_tasks(fake: FakeAsana) -> tuple[str, list[dict[str, Any]]]:
    """A project with an empty "Icebox" section, and its tasks in no other project."""
    ds = fake.dataset
    for gid, tasks in ds.tasks_by_project.items():
        alone = [t for t in tasks if len(t["projects"]) == 1 and ds.stories_by_task[t["gid"]]]
        icebox = [s for s in ds.sections_by_project[gid] if s["name"] == "Icebox"]
        if len(alone) >= 3 and icebox:
            return gid, alone
    raise AssertionError("no such project")


def delete_and_move(fake: FakeAsana) -> dict[str, set[tuple[Any, ...]]]:
    """A task, a story, a section deleted and a task moved; the keys to be tombstoned."""
    ds = fake.dataset
    project, tasks = single_home_tasks(fake)
    other = next(p for p in ds.projects if p != project)
    deleted, moved, commented = tasks[0], tasks[1], tasks[2]
    story = ds.stories_by_task[commented["gid"]][0]
    icebox = [s for s in ds.sections_by_project[project] if s["name"] == "Icebox"]
    fake.delete_task(deleted["gid"])
    fake.delete_story(story["gid"])
    for section in icebox:
        fake.delete_section(section["gid"])
    fake.move_task(moved["gid"], remove_from=project, add_to=other)
    return {
        "tasks": {(deleted["gid"],)},
        "task_projects": {(deleted["gid"], project), (moved["gid"], project)},
        "stories": {(story["gid"],)},
        "sections": {(s["gid"],) for s in icebox},
    }


def test_tombstones_carry_version_1_and_a_run_ends_with_activate_version_of_the_floor(fake, config):
    runs = floor_runs(config)
    floor = runs[1].state["bookmarks"]["tasks"][FLOOR_KEY]
    assert activations(runs[1])["tasks"] == [floor]
    assert runs[1].state["bookmarks"]["task_projects"][FLOOR_KEY] == floor
    gone = delete_and_move(fake)

    third = run_tap(config, state=runs[1].state)

    assert {(m["stream"], m.get("version")) for m in tombstones(third)} == {
        (stream, TOMBSTONE_VERSION) for stream in gone
    }
    # Every live record written after the floor carries a version at least as high.
    live = [m for m in third.messages if m["type"] == "RECORD" and m not in tombstones(third)]
    for stream in WITH_FLOOR:
        versions = {m.get("version") for m in live if m["stream"] == stream}
        assert versions, stream
        assert all(v is not None and v >= floor for v in versions), stream
    # tasks and task_projects (no reconcile in this run): ACTIVATE_VERSION of the floor,
    # after every record; sections: the run's own complete read (its version is above
    # the tombstones'); stories: their floor (the first run's complete read).
    activated = activations(third)
    assert activated["tasks"] == activated["task_projects"] == [floor]
    assert activated["sections"] == [third.state["bookmarks"]["sections"][FLOOR_KEY]]
    assert activated["sections"][0] > floor
    assert activated["stories"] == [runs[1].state["bookmarks"]["stories"][FLOOR_KEY]]
    kinds = [m["type"] for m in third.messages]
    assert kinds.index("ACTIVATE_VERSION") > max(i for i, k in enumerate(kinds) if k == "RECORD")
    # The floor of a stream not activated in this run stays what it was.
    assert third.state["bookmarks"]["tasks"][FLOOR_KEY] == floor


def test_hard_delete_removes_exactly_the_tombstones_and_soft_is_unchanged(fake, config):
    runs = floor_runs(config)
    gone = delete_and_move(fake)
    third = run_tap(config, state=runs[1].state)
    exists = asana_now(fake)

    hard = load(*runs, third, hard=True)
    soft = load(*runs, third, hard=False)
    for stream in ("tasks", "task_projects", "sections", "stories"):
        # Soft: the tombstones are marked, everything in Asana is there, unmarked.
        assert soft.marked(stream) == gone[stream], stream
        assert exists[stream] <= soft.live(stream), stream
        # Hard: the same rows, without the tombstones; nothing else differs.
        assert hard.marked(stream) == set(), stream
        assert hard.tables[stream] == {
            k: r for k, r in soft.tables[stream].items() if k not in gone[stream]
        }, stream
    for stream in ("tasks", "task_projects", "sections"):
        assert soft.live(stream) == exists[stream], stream
    # The deleted task's comments stay live: Asana sends no event for them, and no
    # floor can reach them (see the README, Deletes).
    deleted_task = next(iter(gone["tasks"]))[0]
    orphans = {
        k
        for k, r in hard.tables["stories"].items()
        if (r.get("target") or {}).get("gid") == deleted_task
    }
    assert orphans
    assert soft.live("stories") - exists["stories"] == orphans
    # Without hard_delete the purge changes nothing: the same rows as without it.
    purge = [
        m
        for m in third.messages
        if m["type"] == "ACTIVATE_VERSION" and m["stream"] in {"tasks", "task_projects"}
    ]
    assert purge
    without_purge = load(*runs, hard=False).apply([m for m in third.messages if m not in purge])
    assert without_purge.tables == soft.tables


def test_no_floor_no_purge_and_tombstones_stay_marked(fake, config):
    first = run_tap(config)
    gone = delete_and_move(fake)
    second = run_tap(config, state=first.state)

    assert tombstones(second)
    activated = activations(second)
    assert not {"tasks", "task_projects", "stories"} & set(activated)
    hard = load(first, second, hard=True)
    for stream in ("tasks", "task_projects", "stories"):
        assert hard.marked(stream) == gone[stream], stream
    # sections were read in full by the first run too: this run's complete read
    # activates them, above the tombstones' version, so they go.
    assert hard.marked("sections") == set()
    assert hard.live("sections") == asana_now(fake)["sections"]
    # Stories: the first run read every story, a candidate only until a reconcile.
    stories_state = second.state["bookmarks"]["stories"]
    assert CANDIDATE_KEY in stories_state
    assert FLOOR_KEY not in stories_state
    # The next reconcile deletes the tasks' tombstones (version 1 < its version), and
    # confirms the stories' floor: their tombstone goes too.
    third = run_tap({**config, "reconcile_every_days": 0}, state=second.state)
    hard.apply(third.messages)
    assert hard.marked("tasks") == hard.marked("task_projects") == set()
    assert hard.live("tasks") == asana_now(fake)["tasks"]
    assert activations(third)["stories"] == [stories_state[CANDIDATE_KEY]]
    assert hard.marked("stories") == set()
    assert asana_now(fake)["stories"] <= hard.live("stories")


def test_no_tombstones_no_purge(fake, config):
    runs = floor_runs(config)
    fake.touch_task(next(iter(fake.dataset.tasks)))
    third = run_tap(config, state=runs[1].state)
    assert not tombstones(third)
    assert not {"tasks", "task_projects", "stories"} & set(activations(third))


def _other_project(fake: FakeAsana) -> str:
    project, _ = single_home_tasks(fake)
    return next(p for p in sorted(fake.dataset.projects) if p != project)


Disruption = Callable[[FakeAsana, dict[str, Any], str, str], dict[str, Any]]


def _skip_project(fake: FakeAsana, config: dict[str, Any], _: str, other: str) -> dict[str, Any]:
    fake.inject(rf"/tasks\?.*project={other}", status=403, times=None)
    return config


def _skip_sections(fake: FakeAsana, config: dict[str, Any], _: str, other: str) -> dict[str, Any]:
    fake.inject(rf"/projects/{other}/sections", status=403, times=None)
    return config


def _cut_listing(fake: FakeAsana, config: dict[str, Any], _: str, other: str) -> dict[str, Any]:
    fake.inject(rf"/tasks\?.*project={other}.*offset=", status=403, times=None)
    return {**config, "page_size": 2}


def _filter(_: FakeAsana, config: dict[str, Any], project: str, __: str) -> dict[str, Any]:
    return {**config, "project_gids": [project]}


#: What a run may leave out, each of another project than the one with the deletes.
DISRUPTIONS: dict[str, Disruption] = {
    "skipped project": _skip_project,
    "skipped sections": _skip_sections,
    "listing cut off": _cut_listing,
    "project filter": _filter,
}


@pytest.mark.parametrize("disruption", sorted(DISRUPTIONS))
def test_a_purge_never_touches_a_live_row_whatever_the_run_skipped(fake, config, disruption):
    runs = floor_runs(config)
    project, _ = single_home_tasks(fake)
    other = _other_project(fake)
    # Changes the disrupted run does not read: they must simply not be applied.
    fake.touch_task(next(t["gid"] for t in fake.dataset.tasks_by_project[other]))
    gone = delete_and_move(fake)
    disrupted = DISRUPTIONS[disruption](fake, config, project, other)
    fake.reset_log()

    third = run_tap(disrupted, state=runs[1].state)

    assert tombstones(third), "the deletes' project was read: its tombstones are written"
    assert set(activations(third)) >= {"tasks", "task_projects"}
    exists = asana_now(fake)
    for hard in (True, False):
        before = load(*runs, hard=hard)
        warehouse = load(*runs, third, hard=hard)
        # Stories: the deleted task's comments stay live (nothing marks them). A filter
        # changes the scope of the stories' floor, which is dropped: the tombstone stays.
        kept = not hard or disruption == "project filter"
        assert before.live("stories") & exists["stories"] <= warehouse.live("stories"), hard
        assert warehouse.marked("stories") == (gone["stories"] if kept else set()), hard
        for stream in ("tasks", "task_projects", "sections"):
            # Every row that was there and still exists in Asana is there, unmarked
            # (with the filter, the moved task's new pair is not written: its new
            # project is out of scope); nothing gone from Asana is left live.
            assert before.live(stream) & exists[stream] <= warehouse.live(stream), (stream, hard)
            assert warehouse.live(stream) <= exists[stream], (stream, hard)
            assert warehouse.marked(stream) == (set() if hard else gone[stream]), (stream, hard)


def test_a_run_stopped_part_way_sends_no_purge_and_the_next_reconcile_removes(
    fake, config, tmp_path
):
    # A free plan: each project's tasks are listed (no search), so a listing that fails
    # stops the run after the deletes' project is written.
    fake.premium_workspaces = set()
    runs = floor_runs(config)
    project, _ = single_home_tasks(fake)
    gone = delete_and_move(fake)
    # The deletes' project is written, then the run dies on a later project.
    later = max(fake.dataset.projects)
    assert later != project
    fake.inject(rf"/tasks\?.*project={later}", status=500, times=None)
    run = run_cli(tmp_path, {**config, "max_retries": 0}, state=runs[1].state)
    assert run.returncode != 0
    messages = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert any(m["type"] == "RECORD" and m["record"].get(DELETED_AT) for m in messages)
    assert not any(m["type"] == "ACTIVATE_VERSION" for m in messages)
    stopped = SyncResult(messages=messages, stdout=run.stdout, logs=run.stderr)
    hard = load(*runs, stopped, hard=True)
    assert hard.marked("tasks") == gone["tasks"]

    fake.clear_faults()
    states = [m["value"] for m in messages if m["type"] == "STATE"]
    fourth = run_tap({**config, "reconcile_every_days": 0}, state=states[-1])
    hard.apply(fourth.messages)
    for stream in ("tasks", "task_projects"):
        assert hard.marked(stream) == set(), stream
        assert hard.live(stream) == asana_now(fake)[stream], stream


def test_rows_of_an_older_tap_version_are_never_marked_by_a_purge(fake, config):
    """Rows written without a version (older tap versions) are older than any floor."""
    first = run_tap(config)
    unversioned = [{**m, "version": None} if m["type"] == "RECORD" else m for m in first.messages]
    older = SyncResult(messages=unversioned, stdout="", logs="")
    gone = delete_and_move(fake)
    # No floor yet (the state of an older tap has none): tombstones, no purge.
    second = run_tap(config, state=first.state)
    assert not {"tasks", "task_projects"} & set(activations(second))
    soft = load(older, second, hard=False)
    assert soft.marked("tasks") == gone["tasks"]
    # The floor's run (a reconcile) re-writes every live row; then a purge marks nothing.
    third = run_tap({**config, "reconcile_every_days": 0}, state=second.state)
    fake.delete_task(next(iter(fake.dataset.tasks)))
    fourth = run_tap(config, state=third.state)
    assert activations(fourth)["tasks"] == [third.state["bookmarks"]["tasks"][FLOOR_KEY]]
    purge = [m for m in fourth.messages if m["type"] == "ACTIVATE_VERSION"]
    without_purge = load(older, second, third, hard=False)
    without_purge.apply([m for m in fourth.messages if m not in purge])
    soft = load(older, second, third, fourth, hard=False)
    assert soft.tables == without_purge.tables
    for stream in ("tasks", "task_projects"):
        assert soft.live(stream) == asana_now(fake)[stream], stream


def test_no_purge_when_the_run_writes_below_the_floor(fake, config):
    """The clock went back since the floor's run: a complete read's own version (the
    run's start) is below the floor; a purge would reach this run's live rows."""
    runs = floor_runs(config)
    state = json.loads(json.dumps(runs[1].state))
    future = int(state["bookmarks"]["sections"][FLOOR_KEY]) + 10**9
    state["bookmarks"]["sections"][FLOOR_KEY] = future
    project, _ = single_home_tasks(fake)
    other = _other_project(fake)
    gone = delete_and_move(fake)
    # sections not read in full: no complete read of its own, a purge would be due.
    _skip_sections(fake, config, project, other)

    third = run_tap(config, state=state)

    assert "sections" not in activations(third)
    assert "Not removing sections tombstones in this run" in third.logs
    hard = load(*runs, third, hard=True)
    assert hard.marked("sections") == gone["sections"]
    assert hard.live("sections") == asana_now(fake)["sections"]
    # tasks write with at least their floor (purge.plan): purged as usual.
    assert hard.marked("tasks") == set()


# --- The stories' floor (purge.py): a complete read, confirmed by the next reconcile ----


def _delete_a_story(fake: FakeAsana) -> tuple[str]:
    """Delete a comment of a task that stays; its key."""
    _, tasks = single_home_tasks(fake)
    story = fake.dataset.stories_by_task[tasks[-1]["gid"]][-1]
    fake.delete_story(story["gid"])
    return (story["gid"],)


def test_a_changed_scope_drops_the_stories_floor_for_good(fake, config):
    runs = floor_runs(config)
    earlier = {**config, "start_date": "2000-01-01T00:00:00Z"}
    deleted = _delete_a_story(fake)

    third = run_tap(earlier, state=runs[1].state)

    # A task that comes into scope again may have comments in the warehouse from before
    # the floor's run: no purge may reach them, so the floor is gone.
    # (Null, not removed: a Meltano merge of an interrupted run's state keeps nulls.)
    stories_state = third.state["bookmarks"]["stories"]
    assert {key: stories_state.get(key) for key in (FLOOR_KEY, CANDIDATE_KEY, SCOPE_KEY)} == {
        FLOOR_KEY: None,
        CANDIDATE_KEY: None,
        SCOPE_KEY: None,
    }
    assert "stories: start_date changed since its last complete read" in third.logs
    assert "stories" not in activations(third)
    hard = load(*runs, third, hard=True)
    assert hard.marked("stories") == {deleted}
    # Back to the first scope: the floor does not come back (nothing confirms it again).
    again = _delete_a_story(fake)
    fourth = run_tap({**config, "reconcile_every_days": 0}, state=third.state)
    assert "stories" not in activations(fourth)
    assert not any(fourth.state["bookmarks"]["stories"].get(k) for k in (FLOOR_KEY, CANDIDATE_KEY))
    hard.apply(fourth.messages)
    assert hard.marked("stories") == {deleted, again}


def _first_run_blocks(fake: FakeAsana, how: str) -> None:
    other = _other_project(fake)
    if how == "stories of a task refused":
        task = next(t for t in fake.dataset.tasks_by_project[other] if t["gid"])
        fake.inject(rf"/tasks/{task['gid']}/stories", status=403, times=None)
    else:
        fake.inject(rf"/tasks\?.*project={other}", status=403, times=None)


@pytest.mark.parametrize("how", ["stories of a task refused", "project skipped"])
def test_a_first_run_that_did_not_read_every_story_gives_no_floor(fake, config, how):
    _first_run_blocks(fake, how)
    first = run_tap(config)
    fake.clear_faults()
    assert CANDIDATE_KEY not in first.state["bookmarks"].get("stories", {})
    # Nor does any later run (they read changed tasks' stories only): deleted comments
    # stay marked, with hard_delete too.
    second = run_tap({**config, "reconcile_every_days": 0}, state=first.state)
    deleted = _delete_a_story(fake)
    third = run_tap({**config, "reconcile_every_days": 0}, state=second.state)
    for run in (second, third):
        assert "stories" not in activations(run)
        stories_state = run.state["bookmarks"].get("stories", {})
        assert not any(stories_state.get(k) for k in (FLOOR_KEY, CANDIDATE_KEY))
    assert load(first, second, third, hard=True).marked("stories") == {deleted}


def test_stories_selected_later_over_an_older_state_give_no_floor(fake, config):
    """Tasks listed unchanged have their stories never read: no candidate.

    (A state of the tap before ``bookmarks_cover``: taken to cover the selection, so the
    tasks' bookmarks do not start over; see selection.py.)
    """
    without = {"workspaces", "projects", "tasks", "task_projects"}
    first = run_tap(config, catalog=catalog_selecting(config, without))
    del first.state["bookmarks"]["tasks"][SELECTION_KEY]
    catalog = catalog_selecting(config, without | {"stories"})
    second = run_tap({**config, "reconcile_every_days": 0}, state=first.state, catalog=catalog)
    third = run_tap({**config, "reconcile_every_days": 0}, state=second.state, catalog=catalog)
    for run in (second, third):
        assert "stories" not in activations(run)
        stories_state = run.state["bookmarks"].get("stories", {})
        assert not any(stories_state.get(k) for k in (FLOOR_KEY, CANDIDATE_KEY))


def test_stories_selected_later_read_every_tasks_stories_and_give_a_candidate(fake, config):
    """The tasks' bookmarks start over for them: every story is read, a candidate kept."""
    without = {"workspaces", "projects", "tasks", "task_projects"}
    first = run_tap(config, catalog=catalog_selecting(config, without))
    catalog = catalog_selecting(config, without | {"stories"})

    second = run_tap(config, state=first.state, catalog=catalog)

    assert set(second.gids("stories")) == set(fake.dataset.stories)
    assert CANDIDATE_KEY in second.state["bookmarks"]["stories"]
