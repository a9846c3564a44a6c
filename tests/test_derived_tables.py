"""Derived tables (issue #16): custom field values, bridges, task history.

Checked against the fake's ground truth (its dataset, never the tap's code), and for
their cost: the requests the fake counts with and without them selected.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from singer_sdk import Stream

from tap_asana_vl.streams.history import change_of
from tap_asana_vl.streams.purge import TOMBSTONE_VERSION
from tap_asana_vl.tap import TapAsanaVl
from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import FAST, SyncResult, catalog_selecting, run_cli, run_tap

TASK_DERIVED = {
    "task_custom_field_values",
    "task_tags",
    "task_followers",
    "task_dependencies",
}
SOURCES = {"projects", "tasks", "subtasks", "stories", "subtask_stories"}


@pytest.fixture(scope="module")
def synced() -> Any:
    """One full sync of a small fake (read only here)."""
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        yield fake, run_tap(config)


def _all_tasks(fake: FakeAsana) -> dict[str, dict[str, Any]]:
    return {**fake.dataset.tasks, **fake.dataset.subtasks}


# --- custom field values ----------------------------------------------------------------


def test_one_typed_row_per_task_and_subtask_custom_field(synced):
    fake, result = synced
    tasks = _all_tasks(fake)
    expected = {(gid, cf["gid"]) for gid, task in tasks.items() for cf in task["custom_fields"]}
    records = result.records["task_custom_field_values"]
    rows = {(r["task_gid"], r["custom_field_gid"]): r for r in records}
    assert len(rows) == len(records)
    assert set(rows) == expected

    seen_types = set()
    for (task_gid, field_gid), row in rows.items():
        value = next(cf for cf in tasks[task_gid]["custom_fields"] if cf["gid"] == field_gid)
        kind = value["resource_subtype"]
        seen_types.add(kind)
        assert row["custom_field_name"] == value["name"]
        assert row["type"] == kind
        assert row["display_value"] == value["display_value"]
        assert row["modified_at"] == tasks[task_gid]["modified_at"]
        if kind == "enum":
            enum = value["enum_value"]
            assert row["enum_option_gid"] == (enum and enum["gid"])
            assert row["enum_option_name"] == (enum and enum["name"])
        elif kind == "multi_enum":
            assert row["multi_enum_option_gids"] == [o["gid"] for o in value["multi_enum_values"]]
            assert row["multi_enum_option_names"] == [o["name"] for o in value["multi_enum_values"]]
        elif kind == "number":
            assert row["number_value"] == value["number_value"]
        elif kind == "text":
            assert row["text_value"] == value["text_value"]
        elif kind == "date":
            date_value = value["date_value"] or {}
            assert row["date_value"] == date_value.get("date")
            assert row["date_time_value"] == date_value.get("date_time")
        elif kind == "people":
            assert row["people_gids"] == [u["gid"] for u in value["people_value"]]
        # An empty value is a value that is gone: marked deleted, as of the task's change.
        empty = value["display_value"] in (None, "")
        assert row["_sdc_deleted_at"] == (tasks[task_gid]["modified_at"] if empty else None)
    assert seen_types >= {"enum", "multi_enum", "number", "text", "date", "people"}


def test_project_custom_field_values(synced):
    fake, result = synced
    expected = {
        (gid, cf["gid"]): cf
        for gid, project in fake.dataset.projects.items()
        for cf in project["custom_fields"]
    }
    rows = {
        (r["project_gid"], r["custom_field_gid"]): r
        for r in result.records["project_custom_field_values"]
    }
    assert expected
    assert set(rows) == set(expected)
    for key, row in rows.items():
        value = expected[key]
        assert row["type"] == value["type"]
        assert row["display_value"] == value["display_value"]
        assert row["enum_option_name"] == ((value.get("enum_value") or {}).get("name"))
        assert row["modified_at"] == fake.dataset.projects[key[0]]["modified_at"]


# --- bridges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "field", "column"),
    [
        ("task_tags", "tags", "tag_gid"),
        ("task_followers", "followers", "user_gid"),
        ("task_dependencies", "dependencies", "depends_on_gid"),
    ],
)
def test_bridges_have_one_row_per_pair(synced, stream, field, column):
    fake, result = synced
    expected = Counter(
        (gid, item["gid"]) for gid, task in _all_tasks(fake).items() for item in task[field]
    )
    assert expected, f"the dataset has no {field}: the test would prove nothing"
    got = Counter((r["task_gid"], r[column]) for r in result.records[stream])
    assert got == Counter(set(expected))
    if stream == "task_followers":
        # Subtasks feed the derived tables too (the fake's subtasks have followers, but
        # no custom fields: they are in no project).
        assert {task for task, _ in got} & set(fake.dataset.subtasks)
    for row in result.records[stream]:
        assert row["task_modified_at"] == _all_tasks(fake)[row["task_gid"]]["modified_at"]
        assert row["_sdc_deleted_at"] is None


def test_tag_names_come_with_the_tag(synced):
    fake, result = synced
    names = {gid: tag["name"] for gid, tag in fake.dataset.tags.items()}
    assert all(r["tag_name"] == names[r["tag_gid"]] for r in result.records["task_tags"])


# --- task history -----------------------------------------------------------------------


def test_one_history_row_per_change_story(synced):
    fake, result = synced
    stories = {**fake.dataset.stories, **fake.dataset.subtask_stories}
    changes = {
        gid
        for gid, s in stories.items()
        if s["type"] == "system" and s["resource_subtype"] != "comment_liked"
    }
    rows = {r["story_gid"]: r for r in result.records["task_history"]}
    assert len(result.records["task_history"]) == len(rows)
    assert set(rows) == changes
    for gid, row in rows.items():
        story = stories[gid]
        assert row["task_gid"] == story["target"]["gid"]
        assert row["created_at"] == story["created_at"]
        assert row["created_by_gid"] == (story["created_by"] or {}).get("gid")
        assert row["resource_subtype"] == story["resource_subtype"]


def _rows_of(result: SyncResult, fake: FakeAsana, subtype: str) -> list[tuple[dict, dict]]:
    """History rows of ``subtype`` with their stories (those carrying the subtype's fields;
    the fake's subtasks are in no project, so e.g. their section changes carry none)."""
    stories = {**fake.dataset.stories, **fake.dataset.subtask_stories}
    pairs = [
        (r, stories[r["story_gid"]])
        for r in result.records["task_history"]
        if r["resource_subtype"] == subtype
        and stories[r["story_gid"]]["target"]["gid"] in fake.dataset.tasks
    ]
    assert pairs, f"the dataset has no {subtype} story"
    return pairs


def test_history_types_the_values_stories_carry(synced):
    fake, result = synced
    for row, story in _rows_of(result, fake, "section_changed"):
        assert row["field"] == "section"
        assert (row["old_gid"], row["new_gid"]) == (
            story["old_section"]["gid"],
            story["new_section"]["gid"],
        )
        assert (row["old_value"], row["new_value"]) == (
            story["old_section"]["name"],
            story["new_section"]["name"],
        )
        assert row["project_gid"] == story["project"]["gid"]
    for row, story in _rows_of(result, fake, "enum_custom_field_changed"):
        assert row["field"] == story["custom_field"]["name"]
        assert row["custom_field_gid"] == story["custom_field"]["gid"]
        assert row["new_gid"] == story["new_enum_value"]["gid"]
        assert row["new_value"] == story["new_enum_value"]["name"]
    for row, story in _rows_of(result, fake, "number_custom_field_changed"):
        assert row["old_number_value"] == story["old_number_value"]
        assert row["new_number_value"] == story["new_number_value"]
    for row, story in _rows_of(result, fake, "date_custom_field_changed"):
        assert row["new_date_value"] == story["new_date_value"]["due_on"]
    for row, story in _rows_of(result, fake, "assigned"):
        assert (row["field"], row["new_gid"]) == ("assignee", story["assignee"]["gid"])
    for row, _ in _rows_of(result, fake, "marked_complete"):
        assert (row["field"], row["old_value"], row["new_value"]) == ("completed", "false", "true")
    for row, story in _rows_of(result, fake, "name_changed"):
        assert (row["old_value"], row["new_value"]) == (story["old_name"], story["new_name"])
    for row, story in _rows_of(result, fake, "added_to_project"):
        assert (row["field"], row["new_gid"]) == ("project", story["project"]["gid"])


# --- cost -------------------------------------------------------------------------------


def _requests(selection: set[str]) -> Counter[str]:
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        run_tap(config, catalog=catalog_selecting(config, selection))
        return Counter(r.path for r in fake.requests)


def test_task_derived_tables_cost_no_request():
    without = _requests(SOURCES)
    with_them = _requests(SOURCES | TASK_DERIVED | {"task_history"})
    assert with_them == without


def test_project_custom_field_values_cost_one_listing_per_workspace():
    without = _requests(SOURCES)
    with_it = _requests(SOURCES | {"project_custom_field_values"})
    extra = with_it - without
    assert sum(extra.values()) == 2  # two workspaces, fewer than 100 projects each
    assert set(extra) == {"/api/1.0/projects"}


def test_a_derived_table_alone_reads_only_its_sources():
    """task_tags alone reads tasks and subtasks (not emitted), and nothing else."""
    alone = _requests({"task_tags"})
    assert alone == _requests({"tasks", "subtasks"})
    assert not [path for path in alone if path.endswith("/stories")]


# --- removals ---------------------------------------------------------------------------


def _current(result: SyncResult, stream: str, keys: tuple[str, ...]) -> dict[tuple, dict]:
    """What an upserting target holds after ``result``: the last row per key."""
    return {tuple(r[k] for k in keys): r for r in result.records[stream]}


def test_removed_tag_and_dependency_are_marked_deleted_from_the_tasks_stories():
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        first = run_tap(config)
        ds = fake.dataset
        tagged = next(t for t in ds.tasks.values() if t["tags"])
        tag = tagged["tags"][0]["gid"]
        blocked = next(t for t in ds.tasks.values() if t["dependencies"])
        blocker = blocked["dependencies"][0]["gid"]
        follower_task = next(t for t in ds.tasks.values() if len(t["followers"]) > 1)
        follower = follower_task["followers"][0]["gid"]
        tag_story = fake.dataset.remove_from_task(tagged["gid"], "tags", tag)
        dependency_story = fake.dataset.remove_from_task(blocked["gid"], "dependencies", blocker)
        fake.dataset.remove_from_task(follower_task["gid"], "followers", follower)

        second = run_tap(config, state=first.state)

    # A warehouse upserting both runs keeps no stale pair as current.
    tags = _current(first, "task_tags", ("task_gid", "tag_gid"))
    tags.update(_current(second, "task_tags", ("task_gid", "tag_gid")))
    assert tags[(tagged["gid"], tag)]["_sdc_deleted_at"] == tag_story["created_at"]
    deps = _current(first, "task_dependencies", ("task_gid", "depends_on_gid"))
    deps.update(_current(second, "task_dependencies", ("task_gid", "depends_on_gid")))
    assert deps[(blocked["gid"], blocker)]["_sdc_deleted_at"] == dependency_story["created_at"]
    # The pairs the task still has are re-emitted as current, with its new modified_at.
    kept = [r for r in second.records["task_tags"] if r["task_gid"] == tagged["gid"]]
    assert {r["tag_gid"] for r in kept if r["_sdc_deleted_at"] is None} == {
        t["gid"] for t in tagged["tags"]
    }
    assert {r["task_modified_at"] for r in kept} == {tagged["modified_at"]}
    # Asana writes no story when a follower is removed; its event marks the pair (below).
    followers = _current(first, "task_followers", ("task_gid", "user_gid"))
    followers.update(_current(second, "task_followers", ("task_gid", "user_gid")))
    assert followers[(follower_task["gid"], follower)]["_sdc_deleted_at"] is not None
    current = {
        user
        for (task, user), r in followers.items()
        if task == follower_task["gid"] and r["_sdc_deleted_at"] is None
    }
    assert current == {u["gid"] for u in follower_task["followers"]}


def test_a_removal_story_marks_its_pair_without_a_sync_per_story(monkeypatch):
    """The tables get each change story directly: they are synced once per task or
    subtask emitted, never once per story, and the story's tombstone still comes (the
    events saying the same are lost here, so only the story can mark the pair)."""
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        first = run_tap(config)
        ds = fake.dataset
        tagged = next(t for t in ds.tasks.values() if t["tags"])
        tag = tagged["tags"][0]["gid"]
        tag_story = ds.remove_from_task(tagged["gid"], "tags", tag)
        with ds.lock:
            ds.events.clear()
        syncs: Counter[str] = Counter()
        sync = Stream.sync

        def counted(stream: Stream, context: Any = None) -> None:
            syncs[stream.name] += 1
            sync(stream, context)

        monkeypatch.setattr(Stream, "sync", counted)
        second = run_tap(config, state=first.state)

    tags = _current(second, "task_tags", ("task_gid", "tag_gid"))
    assert tags[(tagged["gid"], tag)]["_sdc_deleted_at"] == tag_story["created_at"]
    assert [r for r in second.records["task_history"] if r["story_gid"] == tag_story["gid"]]
    emitted = len(second.records["tasks"]) + len(second.records["subtasks"])
    assert emitted
    assert {name: syncs[name] for name in TASK_DERIVED} == dict.fromkeys(TASK_DERIVED, emitted)


def _removal_event_time(fake: FakeAsana, task_gid: str, field: str, gid: str) -> str:
    """When the fake's events say ``gid`` was removed from ``field`` of the task."""
    (at,) = [
        event["created_at"]
        for _, _, _, event in fake.dataset.events
        if event["action"] == "changed"
        and event["resource"]["gid"] == task_gid
        and event["change"] == {**event["change"], "field": field, "action": "removed"}
        and event["change"]["removed_value"]["gid"] == gid
    ]
    return at


def test_a_removed_follower_is_marked_deleted_from_the_projects_events():
    """No story says a follower left; the ``changed`` event on the task does."""
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        catalog = catalog_selecting(config, {"tasks", "task_followers"})  # no stories
        first = run_tap(config, catalog=catalog)
        task = next(t for t in fake.dataset.tasks.values() if len(t["followers"]) > 1)
        follower = task["followers"][0]["gid"]
        fake.remove_from_task(task["gid"], "followers", follower)

        second = run_tap(config, state=first.state, catalog=catalog)
        at = _removal_event_time(fake, task["gid"], "followers", follower)

    assert (task["gid"], follower) in _current(first, "task_followers", ("task_gid", "user_gid"))
    rows = _current(second, "task_followers", ("task_gid", "user_gid"))
    tombstone = rows[(task["gid"], follower)]
    assert tombstone["_sdc_deleted_at"] == at
    assert tombstone["task_modified_at"] == task["modified_at"]
    assert tombstone["user_name"] == fake.dataset.users[follower]["name"]
    # The followers it keeps are re-emitted live; nothing else is marked.
    assert {
        user for (gid, user), r in rows.items() if gid == task["gid"] and not r["_sdc_deleted_at"]
    } == {u["gid"] for u in task["followers"]}
    assert [key for key, r in rows.items() if r["_sdc_deleted_at"]] == [(task["gid"], follower)]


def test_a_value_added_back_is_not_marked_and_removals_cost_no_stories():
    """A removal undone later (by an event, or seen in the task's current record) marks
    nothing; removed tags and dependencies are marked from events without stories."""
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        bridges = {"task_tags", "task_followers", "task_dependencies"}
        catalog = catalog_selecting(config, {"tasks", *bridges})
        first = run_tap(config, catalog=catalog)
        ds = fake.dataset
        readded = next(t for t in ds.tasks.values() if t["followers"])
        back = readded["followers"][0]["gid"]
        fake.remove_from_task(readded["gid"], "followers", back)
        fake.add_to_task(readded["gid"], "followers", back)
        # Added back without an event reaching the tap: the re-read record has it.
        silent = next(t for t in ds.tasks.values() if t["tags"] and t is not readded)
        silent_tag = silent["tags"][0]
        fake.remove_from_task(silent["gid"], "tags", silent_tag["gid"])
        with ds.lock:
            silent["tags"] = [*silent["tags"], silent_tag]
            ds.version += 1
        tagged = next(t for t in ds.tasks.values() if t["tags"] and t not in (readded, silent))
        tag = tagged["tags"][0]["gid"]
        fake.remove_from_task(tagged["gid"], "tags", tag)
        blocked = next(t for t in ds.tasks.values() if t["dependencies"])
        blocker = blocked["dependencies"][0]["gid"]
        fake.remove_from_task(blocked["gid"], "dependencies", blocker)
        fake.reset_log()

        second = run_tap(config, state=first.state, catalog=catalog)
        tag_at = _removal_event_time(fake, tagged["gid"], "tags", tag)
        blocker_at = _removal_event_time(fake, blocked["gid"], "dependencies", blocker)
        story_requests = [r for r in fake.requests if r.path.endswith("/stories")]

    assert not story_requests
    marked = {
        (
            stream,
            tuple(
                v
                for k, v in r.items()
                if k in {"task_gid", "tag_gid", "user_gid", "depends_on_gid"}
            ),
        ): r["_sdc_deleted_at"]
        for stream in bridges
        for r in second.records[stream]
        if r["_sdc_deleted_at"]
    }
    assert marked == {
        ("task_tags", (tagged["gid"], tag)): tag_at,
        ("task_dependencies", (blocked["gid"], blocker)): blocker_at,
    }
    followers = _current(second, "task_followers", ("task_gid", "user_gid"))
    assert followers[(readded["gid"], back)]["_sdc_deleted_at"] is None
    tags = _current(second, "task_tags", ("task_gid", "tag_gid"))
    assert tags[(silent["gid"], silent_tag["gid"])]["_sdc_deleted_at"] is None


def test_no_removal_marked_when_the_task_cannot_be_read_again():
    """A task the token may no longer read (403) is left as it is: nothing is known."""
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        catalog = catalog_selecting(config, {"tasks", "task_followers"})
        first = run_tap(config, catalog=catalog)
        task = next(t for t in fake.dataset.tasks.values() if len(t["followers"]) > 1)
        fake.remove_from_task(task["gid"], "followers", task["followers"][0]["gid"])
        fake.inject(rf"/tasks/{task['gid']}\?", status=403, times=None)

        second = run_tap(config, state=first.state, catalog=catalog)

    assert not [r for r in second.records["task_followers"] if r["_sdc_deleted_at"]]


def test_a_cleared_custom_field_value_is_marked_deleted_and_in_the_history():
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        first = run_tap(config)
        task = next(
            t
            for t in fake.dataset.tasks.values()
            if any(cf["type"] == "enum" and cf["enum_value"] for cf in t["custom_fields"])
        )
        field = next(cf for cf in task["custom_fields"] if cf["type"] == "enum")
        old_option = field["enum_value"]
        story = fake.dataset.clear_custom_field(task["gid"], field["gid"])

        second = run_tap(config, state=first.state)

    before = _current(first, "task_custom_field_values", ("task_gid", "custom_field_gid"))
    assert before[(task["gid"], field["gid"])]["enum_option_gid"] == old_option["gid"]
    after = _current(second, "task_custom_field_values", ("task_gid", "custom_field_gid"))
    row = after[(task["gid"], field["gid"])]
    assert row["enum_option_gid"] is None
    assert row["_sdc_deleted_at"] == task["modified_at"]
    (history,) = [r for r in second.records["task_history"] if r["story_gid"] == story["gid"]]
    assert (history["field"], history["old_gid"], history["new_gid"]) == (
        field["name"],
        old_option["gid"],
        None,
    )


def test_tombstones_cost_nothing_without_stories_selected():
    """Without stories selected, bridges never make the tap read stories."""
    requests = _requests({"task_tags", "task_dependencies", "task_custom_field_values"})
    assert not [path for path in requests if path.endswith("/stories")]


def test_history_dates_are_typed(synced):
    fake, result = synced
    for row, story in _rows_of(result, fake, "due_date_changed"):
        assert row["field"] == "due_on"
        assert row["new_date_value"] == story["new_dates"]["due_on"]
        assert row["new_date_time_value"] == story["new_dates"]["due_at"]
        assert row["old_date_value"] == story["old_dates"]["due_on"]


def test_a_changed_task_and_a_subtask_found_by_search_re_emit_all_their_rows():
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        first = run_tap(config)
        task = next(t for t in fake.dataset.tasks.values() if len(t["custom_fields"]) > 2)
        subtask = next(
            s
            for s in fake.dataset.subtasks.values()
            if s["followers"] and s["parent"]["gid"] in fake.dataset.tasks
        )
        fake.touch_task(task["gid"])
        fake.touch_task(subtask["gid"])  # its parent is unchanged: found by search

        second = run_tap(config, state=first.state)

    values = [r for r in second.records["task_custom_field_values"] if r["task_gid"] == task["gid"]]
    assert {r["custom_field_gid"] for r in values} == {cf["gid"] for cf in task["custom_fields"]}
    assert {r["modified_at"] for r in values} == {task["modified_at"]}
    followers = [r for r in second.records["task_followers"] if r["task_gid"] == subtask["gid"]]
    assert {r["user_gid"] for r in followers} == {u["gid"] for u in subtask["followers"]}
    assert {r["task_modified_at"] for r in followers} == {subtask["modified_at"]}
    # Unchanged tasks are not re-emitted.
    changed = {task["gid"], subtask["gid"]}
    assert {r["task_gid"] for r in second.records["task_followers"]} <= changed


def test_derived_tables_hang_under_tasks_subtasks_and_selected_stories():
    """Fed by tasks and subtasks; by stories only when those are selected (read anyway),
    and then as handlers of each change story, not as child streams synced per story."""

    def children(catalog: dict | None) -> dict[str, set[str]]:
        tap = TapAsanaVl(config={"access_token": "x"}, catalog=catalog, parse_env_config=False)
        return {
            name: {c.name for c in s.child_streams}
            | {f"story:{h.__self__.name}" for h in getattr(s, "change_story_handlers", [])}
            for name, s in tap.streams.items()
        }

    everything = children(None)
    for parent in ("tasks", "subtasks"):
        assert everything[parent] >= TASK_DERIVED, parent
    for parent in ("stories", "subtask_stories"):
        assert everything[parent] == {"task_history"} | {f"story:{n}" for n in TASK_DERIVED}
    config = {"access_token": "x"}
    without_stories = children(catalog_selecting(config, {"tasks", "subtasks", "task_tags"}))
    assert "story:task_tags" not in without_stories["stories"]
    assert "story:task_tags" not in without_stories["subtask_stories"]
    assert "task_tags" in without_stories["subtasks"]


@pytest.mark.parametrize(
    ("story", "expected"),
    [
        (
            {"resource_subtype": "unassigned", "assignee": {"gid": "7", "name": "Ana"}},
            {"field": "assignee", "old_gid": "7", "old_value": "Ana"},
        ),
        (
            {"resource_subtype": "removed_from_project", "project": {"gid": "9", "name": "Web"}},
            {"field": "project", "old_gid": "9", "old_value": "Web", "project_gid": "9"},
        ),
        (
            {"resource_subtype": "marked_incomplete"},
            {"field": "completed", "old_value": "true", "new_value": "false"},
        ),
        (
            {
                "resource_subtype": "multi_enum_custom_field_changed",
                "custom_field": {"gid": "5", "name": "Platforms"},
                "old_multi_enum_values": [],
                "new_multi_enum_values": [{"gid": "1", "name": "Web"}, {"gid": "2", "name": "iOS"}],
            },
            {"field": "Platforms", "custom_field_gid": "5", "new_value": "Web, iOS"},
        ),
        (
            # A kind of change the tap does not know: kept, with its text.
            {"resource_subtype": "teleported", "text": "moved to Mars"},
            {"field": "teleported", "new_value": "moved to Mars"},
        ),
    ],
    ids=lambda value: value.get("resource_subtype", "") if "resource_subtype" in value else "",
)
def test_change_of_reads_each_kind_of_story(story, expected):
    change = change_of(story)
    assert {k: change.get(k) for k in expected} == expected


# --- removed values: the reconcile pass and complete reads -------------------------------

DERIVED_KEYS = {
    "task_custom_field_values": ("custom_fields", "custom_field_gid"),
    "task_tags": ("tags", "tag_gid"),
    "task_followers": ("followers", "user_gid"),
    "task_dependencies": ("dependencies", "depends_on_gid"),
}
RECONCILING = {**FAST, "include_attachments": False, "reconcile_every_days": 0}


def _activations(result: SyncResult) -> dict[str, int]:
    return result.activated_versions()


def _versioned_pairs(result: SyncResult, stream: str, version: int) -> set[tuple[str, str]]:
    """The (task, value) pairs written with ``version`` (what an ACTIVATE_VERSION keeps)."""
    column = DERIVED_KEYS[stream][1]
    return {
        (m["record"]["task_gid"], m["record"][column])
        for m in result.messages
        if m["type"] == "RECORD" and m["stream"] == stream and m.get("version") == version
    }


def _live_pairs(fake: FakeAsana, stream: str) -> set[tuple[str, str]]:
    field = DERIVED_KEYS[stream][0]
    return {(gid, item["gid"]) for gid, task in _all_tasks(fake).items() for item in task[field]}


def _multi_homed_with_fields(fake: FakeAsana) -> dict[str, Any]:
    ds = fake.dataset
    return next(
        t
        for t in ds.tasks.values()
        if len(t["projects"]) > 1
        and t["custom_fields"]
        and all(ds.custom_field_settings_by_project[p["gid"]] for p in t["projects"])
    )


def test_a_reconcile_marks_a_left_projects_field_and_the_pairs_of_deleted_tasks():
    """What no event or story says: a field gone with a project the task left, every
    pair of a task or subtask deleted while events were lost. Every live pair is written
    with the reconcile's version, so its ACTIVATE_VERSION marks exactly those."""
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **RECONCILING}
        first = run_tap(config)  # the first reconcile records the projects it saw
        ds = fake.dataset
        task = _multi_homed_with_fields(fake)
        left, kept = (p["gid"] for p in task["projects"][:2])
        field = task["custom_fields"][0]["gid"]
        # The project it stays in no longer has the field; then it leaves the other.
        fake.remove_custom_field_from_project(kept, field)
        fake.move_task(task["gid"], remove_from=left)
        deleted = next(
            t for t in ds.tasks.values() if t["tags"] and t["followers"] and t is not task
        )
        deleted_pairs = {
            stream: {(deleted["gid"], item["gid"]) for item in deleted[source]}
            for stream, (source, _) in DERIVED_KEYS.items()
        }
        fake.delete_task(deleted["gid"])
        subtask = next(s for s in ds.subtasks.values() if s["followers"])
        subtask_followers = {(subtask["gid"], u["gid"]) for u in subtask["followers"]}
        fake.delete_task(subtask["gid"])
        with ds.lock:
            ds.events.clear()  # lost: Asana keeps events 24 h, delivers them at most once

        second = run_tap(config, state=first.state)

    activations = _activations(second)
    assert set(DERIVED_KEYS) <= set(activations)
    version = activations["tasks"]
    assert {activations[stream] for stream in DERIVED_KEYS} == {version}
    for stream in DERIVED_KEYS:
        # A field listed without a value is a tombstone (table version 1, so that
        # hard_delete removes it): live, but marked.
        marked = _versioned_pairs(second, stream, TOMBSTONE_VERSION)
        assert _versioned_pairs(second, stream, version) | marked == _live_pairs(fake, stream)
        assert not _versioned_pairs(second, stream, version) & marked
        if stream != "task_custom_field_values":
            assert not marked, stream
        assert deleted_pairs[stream] <= _versioned_pairs(first, stream, _version_of(first)) | (
            _versioned_pairs(first, stream, TOMBSTONE_VERSION)
        )
        assert not deleted_pairs[stream] & _versioned_pairs(second, stream, version)
    assert (task["gid"], field) not in _versioned_pairs(second, "task_custom_field_values", version)
    assert (task["gid"], field) in {
        (r["task_gid"], r["custom_field_gid"]) for r in first.records["task_custom_field_values"]
    }
    assert not subtask_followers & _versioned_pairs(second, "task_followers", version)
    # No request for it: the reconcile lists what it lists anyway, no story is read for
    # an unchanged task.
    assert second.records["stories"] == []


def _version_of(result: SyncResult) -> int | None:
    """The table version the records of ``result``'s task tables carry (None: none)."""
    versions = {
        m.get("version")
        for m in result.messages
        if m["type"] == "RECORD" and m["stream"] in DERIVED_KEYS
    } - {TOMBSTONE_VERSION}
    assert len(versions) == 1
    return versions.pop()


def test_a_field_taken_off_a_project_is_marked_by_the_complete_read_of_projects():
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        first = run_tap(config)
        project = next(p for p in fake.dataset.projects.values() if p["custom_fields"])
        field = project["custom_fields"][0]["gid"]
        fake.remove_custom_field_from_project(project["gid"], field)

        second = run_tap(config, state=first.state)

    version = _activations(second)["project_custom_field_values"]
    written = {
        (m["record"]["project_gid"], m["record"]["custom_field_gid"])
        for m in second.messages
        if m["type"] == "RECORD"
        and m["stream"] == "project_custom_field_values"
        and m.get("version") == version
    }
    live = {
        (gid, cf["gid"]) for gid, p in fake.dataset.projects.items() for cf in p["custom_fields"]
    }
    assert written == live
    assert (project["gid"], field) not in written


@pytest.mark.parametrize(
    "narrowing",
    [
        "project_gids",
        "skipped project",
        "listing cut off",
        "subtasks deselected",
        "include_subtasks off",
    ],
)
def test_no_derived_pair_is_marked_when_the_reconcile_could_miss_a_live_one(narrowing):
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **RECONCILING}
        catalog = None
        if narrowing == "project_gids":
            config["project_gids"] = sorted(fake.dataset.projects)[:2]
        elif narrowing == "subtasks deselected":
            catalog = catalog_selecting(config, {"tasks", "task_projects", *DERIVED_KEYS})
        elif narrowing == "include_subtasks off":
            config["include_subtasks"] = False
        elif narrowing == "listing cut off":
            config["page_size"] = 2
        first = run_tap(config, catalog=catalog)
        if narrowing == "skipped project":
            project = next(iter(fake.dataset.tasks_by_project))
            fake.inject(rf"/tasks\?.*project={project}", status=403, times=None)
        elif narrowing == "listing cut off":
            # A second page of one project's tasks refused: that listing ends part-way.
            fake.inject(r"/tasks\?.*offset=", status=404, times=1)
        fake.delete_task(next(t for t in fake.dataset.tasks.values() if t["followers"])["gid"])

        second = run_tap(config, state=first.state, catalog=catalog)

    assert not set(DERIVED_KEYS) & set(_activations(second))
    if narrowing == "project_gids":
        assert "project_custom_field_values" not in _activations(second)
    if narrowing in {"subtasks deselected", "include_subtasks off"}:
        assert "not reconciled (they hold rows of subtasks" in second.logs
        assert {"tasks", "task_projects"} <= set(_activations(second))


def test_a_project_listing_of_its_own_cut_off_records_no_projects_and_marks_nothing():
    """project_custom_field_values lists the projects itself: its listing cut off part-way
    must neither mark its rows nor leave the complete reads a partial memory of projects."""
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST, "page_size": 1}
        catalog = catalog_selecting(config, {"project_custom_field_values"})
        fake.inject(r"/projects\?.*offset=", status=404, times=1)
        first = run_tap(config, catalog=catalog)
        assert "projects" not in first.state["bookmarks"]["workspaces"]["complete_reads"]
        second = run_tap(config, state=first.state, catalog=catalog)
        entry = second.state["bookmarks"]["workspaces"]["complete_reads"]
        assert entry["projects"] == sorted(fake.dataset.projects)
        fake.inject(r"/projects\?.*offset=", status=404, times=1)
        third = run_tap(config, state=second.state, catalog=catalog)
        fourth = run_tap(config, state=second.state, catalog=catalog)

    assert _activations(first) == _activations(second) == _activations(third) == {}
    assert set(_activations(fourth)) == {"project_custom_field_values"}


def test_a_reconcile_stopped_part_way_marks_no_derived_pair(tmp_path):
    """ACTIVATE_VERSION comes last: a run that fails after writing derived rows sends none."""
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **RECONCILING}
        first = run_tap(config)
        fake.delete_task(next(t for t in fake.dataset.tasks.values() if t["followers"])["gid"])
        # Fails in the subtasks sweep, after the first workspace's tasks are written.
        fake.inject(r"/workspaces/\d+/tasks/search", status=401, times=None)
        run = run_cli(tmp_path, {**config, "max_retries": 0}, state=first.state)
    assert run.returncode != 0
    messages = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert any(m["type"] == "RECORD" and m["stream"] == "task_followers" for m in messages)
    assert not any(m["type"] == "ACTIVATE_VERSION" for m in messages)


def test_marked_derived_rows_are_tombstones_that_hard_delete_can_remove():
    """A derived row marked deleted (a custom field without a value, a value a story
    removed) carries the tombstones' table version, below every live row's: a purge
    ACTIVATE_VERSION (purge.py) then removes it with ``hard_delete``; live rows never."""
    with FakeAsana(build_dataset(seed=3)) as fake:
        result = run_tap({"access_token": fake.pat, "api_url": fake.api_url})
    marked = live = 0
    for message in result.messages:
        if message["type"] != "RECORD" or message["stream"] not in DERIVED_KEYS:
            continue
        if message["record"].get("_sdc_deleted_at"):
            marked += 1
            assert message.get("version") == TOMBSTONE_VERSION, message
        else:
            live += 1
            assert message.get("version") != TOMBSTONE_VERSION, message
    assert marked
    assert live
