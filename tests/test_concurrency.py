"""Concurrent per-task requests change the waiting, not the output."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import run_tap

FAST = {"max_requests_per_minute": 100_000}


def _comparable(value):
    """Messages without extraction times and the sync-start signpost (run-specific)."""
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {
            k: _comparable(v)
            for k, v in value.items()
            if k not in {"time_extracted", "replication_key_signpost"}
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


def test_messages_are_in_a_valid_order_and_state_never_runs_ahead():
    messages, _ = _sync(workers=10, latency=0.002)
    schema_seen: set[str] = set()
    written_max: dict[str, str] = {}
    for message in messages:
        if message["type"] == "SCHEMA":
            schema_seen.add(message["stream"])
        elif message["type"] == "RECORD":
            stream = message["stream"]
            assert stream in schema_seen, f"RECORD of {stream} before its SCHEMA"
            if stream == "tasks":
                value = message["record"]["modified_at"]
                written_max["tasks"] = max(written_max.get("tasks", ""), value)
        elif message["type"] == "STATE":
            tasks = message["value"].get("bookmarks", {}).get("tasks", {})
            for partition in tasks.get("partitions", []):
                bookmark = partition.get("replication_key_value")
                if bookmark:
                    assert bookmark[:23] <= written_max["tasks"][:23], (
                        "a bookmark passed records not yet written"
                    )


def test_a_fatal_error_in_one_prefetch_stops_the_run_promptly(tmp_path):
    with FakeAsana(build_dataset(seed=5, tasks_per_project=25)) as fake:
        tasks = list(fake.dataset.tasks)
        # Several tasks' stories fail transiently for good (long backoff ahead)…
        for gid in tasks[5:12]:
            fake.inject(rf"/api/1\.0/tasks/{gid}/stories", 503, times=None)
        # …and one fails fatally. The run must fail now, not after every backoff.
        fake.inject(rf"/api/1\.0/tasks/{tasks[3]}/stories", 400, times=None)
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"access_token": fake.pat, "api_url": fake.api_url, **FAST}))
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "tap_asana_vl", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert f"/tasks/{tasks[3]}/stories" in proc.stderr
    # Backoff for the 503s alone would take minutes (1+2+4+…+60 s).
    assert elapsed < 30
