"""Concurrent per-task requests change the waiting, not the output."""

from __future__ import annotations

import time

from tap_asana_vl.tap import TapAsanaVl
from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import FAST, run_cli, run_tap


def _comparable(value):
    """Messages without what is run-specific: extraction times, the sync-start signpost,
    the reconcile pass's table version and time, the events sync tokens of projects and
    workspaces (they carry the time they were issued) and when they were received, the
    stories' candidate floor (the run's table version), the children's refresh time, and
    the times up to which the run read every project's tasks (Asana's clock when it
    listed them: the tasks' bookmarks)."""
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {
            k: _comparable(v)
            for k, v in value.items()
            if k not in {"time_extracted", "replication_key_signpost", "version", "events_sync"}
            and not (k == "at" and "projects" in value)
            and not (k == "replication_key_value" and "project_gid" in value.get("context", {}))
            and k not in {"search_bookmarks", "workspace_events", "workspace_events_at"}
            and k not in {"events_sync_at", "table_version_candidate", "refreshed_at"}
        }
    return value


def _sync(workers: int, latency: float) -> tuple[list[dict], FakeAsana]:
    with FakeAsana(build_dataset(seed=5, tasks_per_project=25), latency=latency) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        result = run_tap({**config, "max_concurrent_requests": workers})
        return result.messages, fake


def test_concurrent_sync_writes_exactly_what_a_sequential_sync_writes():
    sequential, _ = _sync(workers=1, latency=0.0)
    concurrent, fake = _sync(workers=10, latency=0.005)
    assert _comparable(concurrent) == _comparable(sequential)
    story_calls = [
        r
        for r in fake.requests
        if r.path.endswith("/stories") and r.path.split("/")[4] in fake.dataset.tasks
    ]
    assert len(story_calls) == len(fake.dataset.tasks)
    # The requests really overlapped: several were in flight at once.
    assert max(_in_flight(story_calls, latency=0.005)) > 1


def _in_flight(requests: list, latency: float) -> list[int]:
    """How many requests were being served when each one arrived."""
    times = sorted(r.time for r in requests)
    return [sum(1 for other in times if t - latency < other <= t) for t in times]


def test_messages_are_in_a_valid_order_and_state_never_runs_ahead(monkeypatch):
    """Each bookmark in every STATE is covered by records already written, per partition.

    Tasks: a project's bookmark ("every task modified up to here is written") is only
    written once every task of that project modified up to it is; a workspace's search
    bookmark likewise for the workspace's tasks. Stories: the stream bookmark never
    passes the newest story written. Subtask search: every subtask of the workspace
    modified up to its mark is written (a first run's mark is its start, less the index
    lag: later than any subtask, all of them written under their tasks).
    """
    # Every state the SDK offers is checked, not only those the tap writes (a subset,
    # each written when offered or later: records only accumulate in between).
    monkeypatch.setattr(TapAsanaVl, "bounded_state_output", False)
    messages, fake = _sync(workers=10, latency=0.002)
    ds = fake.dataset
    schema_seen: set[str] = set()
    written_tasks: set[str] = set()
    story_max = ""
    written_subtasks: set[str] = set()
    checked = 0
    for message in messages:
        if message["type"] == "SCHEMA":
            schema_seen.add(message["stream"])
        elif message["type"] == "RECORD":
            stream, record = message["stream"], message["record"]
            assert stream in schema_seen, f"RECORD of {stream} before its SCHEMA"
            if stream == "tasks":
                written_tasks.add(record["gid"])
            elif stream == "stories":
                story_max = max(story_max, record["created_at"])
            elif stream == "subtasks":
                written_subtasks.add(record["gid"])
        elif message["type"] == "STATE":
            bookmarks = message["value"].get("bookmarks", {})
            for partition in bookmarks.get("tasks", {}).get("partitions", []):
                bookmark = partition.get("replication_key_value")
                if bookmark:
                    project = partition["context"]["project_gid"]
                    covered = {
                        t["gid"]
                        for t in ds.tasks_by_project[project]
                        if t["modified_at"][:23] <= bookmark[:23]
                    }
                    assert covered <= written_tasks, (
                        f"project {project}'s bookmark passed its records not yet written"
                    )
                    checked += 1
            searched = bookmarks.get("tasks", {}).get("search_bookmarks", {})
            for workspace, mark in searched.items():
                covered = {
                    t["gid"]
                    for t in ds.tasks.values()
                    if t["workspace"]["gid"] == workspace and t["modified_at"][:23] <= mark[:23]
                }
                assert covered <= written_tasks, f"workspace {workspace}'s task search ran ahead"
                checked += 1
            stories = bookmarks.get("stories", {}).get("replication_key_value")
            if stories:
                assert stories[:23] <= story_max[:23], "stories bookmark ran ahead"
                checked += 1
            search = bookmarks.get("subtasks", {}).get("search_bookmarks", {})
            for workspace, mark in search.items():
                covered = {
                    t["gid"]
                    for t in ds.subtasks.values()
                    if t["workspace"]["gid"] == workspace and t["modified_at"][:23] <= mark[:23]
                }
                assert covered, f"workspace {workspace}'s mark covers no subtask: checks nothing"
                assert covered <= written_subtasks, f"workspace {workspace}'s search mark ran ahead"
                checked += 1
    assert checked, "no bookmark was checked"


def test_a_fatal_error_in_one_prefetch_stops_the_run_promptly(tmp_path):
    with FakeAsana(build_dataset(seed=5, tasks_per_project=25)) as fake:
        tasks = list(fake.dataset.tasks)
        # Several tasks' stories fail transiently for good (long backoff ahead)…
        for gid in tasks[5:12]:
            fake.inject(rf"/api/1\.0/tasks/{gid}/stories", 503, times=None)
        # …and one fails fatally. The run must fail now, not after every backoff.
        fake.inject(rf"/api/1\.0/tasks/{tasks[3]}/stories", 400, times=None)
        started = time.monotonic()
        proc = run_cli(tmp_path, {"access_token": fake.pat, "api_url": fake.api_url, **FAST})
        elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert f"/tasks/{tasks[3]}/stories" in proc.stderr
    # Backoff for the 503s alone would take minutes (1+2+4+…+60 s).
    assert elapsed < 30
