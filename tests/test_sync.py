"""What a sync sends to Asana and what it emits: completeness, pagination, incremental."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import jsonschema
import pytest

from tap_asana_vl.streams.paging import opt_fields_for
from tap_asana_vl.tap import STREAM_TYPES
from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import FAST, as_served, catalog_selecting, run_tap

SCHEMA_DIR = "tap_asana_vl/schemas"
STREAMS = ("workspaces", "users", "projects", "tasks", "stories")
STREAM_PATHS = {stream_type.name: stream_type.path for stream_type in STREAM_TYPES}


def _schema(stream: str) -> dict[str, Any]:
    with open(f"{SCHEMA_DIR}/{stream}.json", encoding="utf-8") as handle:
        return json.load(handle)


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def test_full_sync_emits_every_object_once_complete_and_valid(fake, pat_config):
    ds = fake.dataset
    result = run_tap({**pat_config, **FAST})

    assert sorted(result.gids("workspaces")) == sorted(ds.workspaces)
    assert sorted(result.gids("users")) == sorted(ds.users)
    assert sorted(result.gids("projects")) == sorted(ds.projects)
    assert sorted(result.gids("tasks")) == sorted(ds.tasks)
    assert sorted(result.gids("stories")) == sorted(ds.stories)

    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    for stream in STREAMS:
        schema = _schema(stream)
        validator = jsonschema.Draft7Validator(schema, format_checker=checker)
        for record in result.records[stream]:
            errors = sorted(validator.iter_errors(record), key=str)
            assert not errors, f"{stream} {record['gid']}: {errors[0].message}"
            # Asana leaves out fields that do not apply (another story subtype's,
            # approval_status of a plain task): absent is null to a target. Nothing
            # outside the schema, and (below) nothing Asana sent is lost.
            assert set(record) <= set(schema["properties"]), stream
        # What we emit is what Asana sent, field for field (task project_gid aside).
        source = getattr(ds, stream)
        path = STREAM_PATHS[stream]
        for record in result.records[stream]:
            emitted = {k: v for k, v in record.items() if k != "project_gid"}
            served = as_served(fake, path, source[record["gid"]])
            assert emitted == served, f"{stream} {record['gid']} differs"


def test_requests_are_the_minimum_and_ask_for_every_field(fake, pat_config):
    ds = fake.dataset
    config = {**pat_config, **FAST}
    run_tap(config, catalog=catalog_selecting(config, set(STREAMS)))
    api = [r for r in fake.requests if r.path.startswith("/api/1.0/")]
    # Plus one events request per workspace (deletes; the first is a 412 with a token).
    events = [r for r in api if r.path.endswith("/events")]
    assert sorted(r.path for r in events) == sorted(
        f"/api/1.0/workspaces/{w}/events" for w in ds.workspaces
    )
    assert {r.status for r in events} == {412}
    # Plus one task search per workspace (fewer than 100 tasks each): the tasks in no
    # project, which no project listing returns (include_tasks_without_projects).
    searches = [r for r in api if r.path.endswith("/tasks/search")]
    assert sorted(r.path for r in searches) == sorted(
        f"/api/1.0/workspaces/{w}/tasks/search" for w in ds.workspaces
    )
    api = [r for r in api if r not in events and r not in searches]

    # One list call per workspace/project/task: nothing requested twice.
    keys = Counter((r.path, tuple(sorted((k, tuple(v)) for k, v in r.query.items()))) for r in api)
    assert max(keys.values()) == 1
    minimum = 1 + 2 * len(ds.workspaces) + len(ds.projects) + len(ds.tasks)
    assert len(api) == minimum
    assert all(r.status == 200 for r in api)

    expected = {
        "/api/1.0/workspaces": "workspaces",
        "/api/1.0/users": "users",
        "/api/1.0/projects": "projects",
        "/api/1.0/tasks": "tasks",
    }
    for request in api:
        stream = expected.get(request.path, "stories")
        assert _first(request.query, "limit") == "100"
        sent = set((_first(request.query, "opt_fields") or "").split(","))
        wanted = set(opt_fields_for(_schema(stream), skip={"project_gid", "_sdc_deleted_at"}))
        assert sent == wanted, stream
        assert request.token == fake.pat
        assert request.headers.get("User-Agent", "").startswith("tap-asana-vl/")


def test_pagination_follows_offsets_across_pages(fake, pat_config):
    ds = fake.dataset
    result = run_tap({**pat_config, **FAST, "page_size": 5})

    assert sorted(result.gids("tasks")) == sorted(ds.tasks)
    for project_gid, tasks in ds.tasks_by_project.items():
        calls = [
            r
            for r in fake.requests_for("/api/1.0/tasks")
            if _first(r.query, "project") == project_gid
        ]
        assert len(calls) == max(1, math.ceil(len(tasks) / 5))
        assert _first(calls[0].query, "offset") is None
        assert all(_first(c.query, "offset") for c in calls[1:])
        assert all(_first(c.query, "limit") == "5" for c in calls)


def test_multi_homed_tasks_are_emitted_once_and_their_stories_fetched_once(fake, pat_config):
    ds = fake.dataset
    multi = [gid for gid, task in ds.tasks.items() if len(task["projects"]) > 1]
    assert multi, "the dataset must contain tasks that live in several projects"

    result = run_tap({**pat_config, **FAST})
    counts = Counter(result.gids("tasks"))
    assert all(counts[gid] == 1 for gid in multi)
    story_calls = Counter(r.path for r in fake.requests_for("/api/1.0/tasks/"))
    assert all(story_calls[f"/api/1.0/tasks/{gid}/stories"] == 1 for gid in multi)


def test_users_in_several_workspaces_are_emitted_once(fake, pat_config):
    shared = [u for u in fake.dataset.users.values() if len(u["workspaces"]) > 1]
    assert shared
    result = run_tap({**pat_config, **FAST})
    assert Counter(result.gids("users"))[shared[0]["gid"]] == 1


def test_second_run_fetches_only_changed_tasks_and_their_stories(fake, pat_config):
    config = {**pat_config, **FAST}
    first = run_tap(config)
    ds = fake.dataset
    task_a, task_b = list(ds.tasks)[3], list(ds.tasks)[20]
    fake.touch_task(task_a)
    new_story = fake.add_story(task_b, text="a new comment")
    fake.reset_log()

    second = run_tap(config, state=first.state)

    assert sorted(second.gids("tasks")) == sorted([task_a, task_b])
    story_paths = {r.path for r in fake.requests if r.path.endswith("/stories")}
    assert story_paths == {f"/api/1.0/tasks/{task_a}/stories", f"/api/1.0/tasks/{task_b}/stories"}
    assert new_story["gid"] in second.gids("stories")

    # Every project's listing asked only for what changed since that project's bookmark.
    bookmarks = {
        p["context"]["project_gid"]: p["replication_key_value"]
        for p in first.state["bookmarks"]["tasks"]["partitions"]
    }
    for request in fake.requests_for("/api/1.0/tasks"):
        if request.path != "/api/1.0/tasks":
            continue
        project = _first(request.query, "project")
        assert _first(request.query, "modified_since") == bookmarks[project][:23] + "Z"


def test_resync_without_changes_makes_no_per_task_request(fake, pat_config):
    config = {**pat_config, **FAST}
    first = run_tap(config)
    fake.reset_log()
    second = run_tap(config, state=first.state)

    assert second.records["tasks"] == []
    assert second.records["stories"] == []
    assert [r for r in fake.requests if r.path.endswith("/stories")] == []


def test_state_grows_with_projects_not_tasks(fake, pat_config):
    result = run_tap({**pat_config, **FAST})
    bookmarks = result.state["bookmarks"]
    assert len(bookmarks["tasks"]["partitions"]) == len(fake.dataset.projects)
    assert "partitions" not in bookmarks["stories"] or not bookmarks["stories"]["partitions"]
    # Per project: a bookmark, an events sync token and a gid in the complete reads.
    # Once: the streams the tasks' and subtasks' bookmarks cover (selection.py), ~250 B.
    size = len(json.dumps(result.state))
    assert size < 350 * len(fake.dataset.projects) + 1800
    # Five times the tasks (same projects, same seed): the state does not grow.
    with FakeAsana(build_dataset(seed=11, tasks_per_project=60)) as bigger:
        big = run_tap({"access_token": bigger.pat, "api_url": bigger.api_url, **FAST})
    assert len(bigger.dataset.tasks) >= 4 * len(fake.dataset.tasks)
    assert abs(len(json.dumps(big.state)) - size) <= 50


def test_start_date_filters_the_first_run(fake, pat_config):
    ds = fake.dataset
    cutoff = sorted(t["modified_at"] for t in ds.tasks.values())[len(ds.tasks) // 2]
    result = run_tap({**pat_config, **FAST, "start_date": cutoff})
    expected = sorted(gid for gid, t in ds.tasks.items() if t["modified_at"] >= cutoff)
    assert sorted(result.gids("tasks")) == expected


def test_archived_projects_can_be_left_out(fake, pat_config):
    archived = {gid for gid, p in fake.dataset.projects.items() if p["archived"]}
    assert archived
    result = run_tap({**pat_config, **FAST, "include_archived_projects": False})
    assert not archived & set(result.gids("projects"))
    listings = [r for r in fake.requests if r.path == "/api/1.0/projects"]
    assert listings
    assert all(_first(r.query, "archived") == "false" for r in listings)


def test_workspace_and_project_filters_narrow_everything_below(fake, pat_config):
    ds = fake.dataset
    workspace = list(ds.workspaces)[1]
    project = ds.projects_by_workspace[workspace][0]["gid"]
    result = run_tap(
        {**pat_config, **FAST, "workspace_gids": [workspace], "project_gids": [project]}
    )
    assert result.gids("workspaces") == [workspace]
    assert result.gids("projects") == [project]
    in_project = {t["gid"] for t in ds.tasks_by_project[project]}
    assert set(result.gids("tasks")) == in_project
    assert {r.path for r in fake.requests_for("/api/1.0/users")} == {"/api/1.0/users"}
    assert {_first(r.query, "workspace") for r in fake.requests_for("/api/1.0/users")} == {
        workspace
    }


def test_unknown_workspace_gid_fails_naming_it(fake, pat_config):
    with pytest.raises(Exception, match="workspace_gids names 999") as info:
        run_tap({**pat_config, **FAST, "workspace_gids": ["999"]})
    assert fake.pat not in str(info.value)


def test_a_few_thousand_tasks_arrive_exactly_once_and_valid():
    dataset = build_dataset(
        seed=17, projects_per_workspace=5, tasks_per_project=250, stories_per_task=1
    )
    with FakeAsana(dataset) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        result = run_tap(config, catalog=catalog_selecting(config, set(STREAMS)))
    assert len(dataset.tasks) >= 2000
    for stream in STREAMS:
        emitted = result.gids(stream)
        assert len(emitted) == len(set(emitted)) == len(getattr(dataset, stream)), stream
        assert set(emitted) == set(getattr(dataset, stream)), stream
    validator = jsonschema.Draft7Validator(_schema("tasks"))
    assert all(validator.is_valid(record) for record in result.records["tasks"])
