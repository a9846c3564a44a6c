"""STATE output is bounded (issue 15, item 3) and still resumable after a kill -9."""

from __future__ import annotations

import json
from typing import Any

import pytest
from singer_sdk import Stream

from tap_asana_vl.state_output import BUDGET_FACTOR, StateOutput
from tap_asana_vl.tap import TapAsanaVl
from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import FAST, SyncResult, parse_lines, run_cli, run_killed, run_tap

# Checkpoints as often as the spacing and the budget allow: the most STATE output.
EAGER = {**FAST, "state_interval_seconds": 0}
#: Tables made from a task's record (no request, no bookmark).
TASK_TABLES = {
    "task_custom_field_values",
    "task_tags",
    "task_followers",
    "task_dependencies",
    "task_history",
    "task_projects",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _output(clock: Clock, *, min_interval: float = 0.0) -> tuple[StateOutput, list[dict]]:
    written: list[dict] = []
    output = StateOutput(min_interval=min_interval, write=written.append, clock=clock)
    return output, written


def _state(n: int, *, progress: bool = False) -> dict[str, Any]:
    """A state of ``n`` finished partitions (plus, optionally, one in progress)."""
    partitions: list[dict[str, Any]] = [
        {"context": {"project_gid": str(1000 + i)}, "replication_key_value": "2025-01-01"}
        for i in range(n)
    ]
    if progress:
        partitions.append(
            {
                "context": {"project_gid": "9"},
                "progress_markers": {"Note": "x" * 200, "replication_key_value": "2025-01-02"},
            }
        )
    return {"bookmarks": {"tasks": {"partitions": partitions}}}


def _line_bytes(state: dict[str, Any]) -> int:
    return len(json.dumps({"type": "STATE", "value": state}, separators=(",", ":"))) + 1


# --- The policy, on a fake clock --------------------------------------------------------


def test_the_first_state_is_written_then_states_wait_for_the_spacing():
    clock = Clock()
    output, written = _output(clock, min_interval=60)
    output.offer(_state(1))
    clock.now += 59
    output.offer(_state(2))
    assert written == [_state(1)]
    clock.now += 1
    output.offer(_state(3))
    assert written == [_state(1), _state(3)]


def test_the_spacing_grows_with_the_run_length():
    clock = Clock()
    output, written = _output(clock, min_interval=0)
    output.offer(_state(1))
    clock.now += 400  # 400 s into the run: the next one waits a quarter of the run
    output.offer(_state(2))
    clock.now += 99  # 99 s: under a quarter of the 499 s run
    output.offer(_state(3))
    assert len(written) == 2
    clock.now += 35  # 134 s after the last one: over a quarter of the 534 s run
    output.offer(_state(4))
    assert written[-1] == _state(4)


def test_a_state_held_back_is_written_when_the_run_ends():
    clock = Clock()
    output, written = _output(clock, min_interval=60)
    output.offer(_state(1))
    state = _state(2)
    output.offer(state)
    state["bookmarks"]["tasks"]["partitions"].append({"context": {"project_gid": "later"}})
    output.flush()
    # As offered, not as the dict became afterwards (the SDK keeps updating it).
    assert written == [_state(1), _state(2)]
    output.flush()
    assert len(written) == 2


def test_a_repeated_state_is_not_written_again():
    clock = Clock()
    output, written = _output(clock)
    output.offer(_state(1))
    clock.now += 1000
    output.offer(_state(1))
    output.flush()
    assert written == [_state(1)]


def test_the_byte_budget_stops_checkpoints_of_a_state_that_does_not_grow():
    clock = Clock()
    output, written = _output(clock)
    for i in range(200):
        clock.now += 10 + 10 * i  # always past the spacing
        output.offer(_state(50) | {"n": i})
    output.flush()
    final = written[-1]
    total = sum(_line_bytes(s) for s in written)
    assert BUDGET_FACTOR <= len(written) <= BUDGET_FACTOR + 1
    assert total <= (BUDGET_FACTOR + 1) * _line_bytes(final) * 1.01
    assert final["n"] == 199  # the last one offered always ends the run


def test_the_budget_is_measured_against_the_final_size_not_the_interim_markers():
    """Mid-run states carry progress markers that finalization removes; the budget is
    measured without them, so a final state smaller than every mid-run one still bounds
    the total."""
    clock = Clock()
    output, written = _output(clock)
    for i in range(100):
        clock.now += 10 + 10 * i
        output.offer(_state(1, progress=True) | {"n": i})
    clock.now += 1
    finalized = _state(1)
    finalized["bookmarks"]["tasks"]["partitions"].append(
        {"context": {"project_gid": "9"}, "replication_key_value": "2025-01-02"}
    )
    output.offer(finalized | {"n": 100})  # its progress markers promoted, then gone
    output.flush()
    total = sum(_line_bytes(s) for s in written)
    final = _line_bytes(written[-1])
    assert max(_line_bytes(s) for s in written) > 2 * final
    assert total <= 30 * final


# --- Whole runs against the fake --------------------------------------------------------


def _state_bytes(result: SyncResult) -> tuple[int, int]:
    """Bytes of every STATE line of a run, and of its last one."""
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"type":"STATE"')]
    return sum(len(line) + 1 for line in lines), len(lines[-1]) + 1


def _changed_run(fake: FakeAsana, config: dict[str, Any]) -> tuple[SyncResult, SyncResult]:
    first = run_tap(config)
    tasks = list(fake.dataset.tasks)
    for gid in tasks[:: len(tasks) // 20][:20]:
        fake.touch_task(gid)
    return first, run_tap(config, state=first.state)


@pytest.fixture
def many_projects() -> FakeAsana:
    dataset = build_dataset(
        workspaces=1,
        users_per_workspace=3,
        projects_per_workspace=40,
        tasks_per_project=3,
        stories_per_task=1,
        seed=21,
    )
    with FakeAsana(dataset) as fake:
        yield fake


def test_state_bytes_of_a_run_stay_within_30_times_the_final_state(many_projects):
    fake = many_projects
    config = {"access_token": fake.pat, "api_url": fake.api_url, **EAGER}
    first, second = _changed_run(fake, config)
    for result in (first, second):
        total, final = _state_bytes(result)
        assert total <= 30 * final, (total, final)
        assert len(result.states) >= 3  # checkpoints during the run, not just the end
        tasks = result.state["bookmarks"]["tasks"]["partitions"]
        assert len(tasks) == len(fake.dataset.projects)
        assert all(p.get("replication_key_value") for p in tasks)
        assert "progress_markers" not in json.dumps(result.state)
    # The 20 changed tasks, and nothing lost to a state written too early or too late.
    assert len({r["gid"] for r in second.records["tasks"]}) >= 20
    third = run_tap(config, state=second.state)
    # Nothing more: on a paid plan the workspace search stays 10 minutes behind Asana's
    # clock (its index lags), so the tasks changed just now may come once more (README).
    assert {r["gid"] for r in third.records["tasks"]} <= {r["gid"] for r in second.records["tasks"]}


def test_the_sdk_writer_would_exceed_the_bound_on_the_same_runs(many_projects, monkeypatch):
    """The dataset above is a real test of the bound: every STATE the SDK offers, written,
    is far more than 30 times the final state."""
    monkeypatch.setattr(TapAsanaVl, "bounded_state_output", False)
    fake = many_projects
    config = {"access_token": fake.pat, "api_url": fake.api_url, **EAGER}
    _, second = _changed_run(fake, config)
    total, final = _state_bytes(second)
    assert total > 30 * final


def test_only_streams_with_a_bookmark_offer_state_when_their_sync_ends(monkeypatch):
    """A child stream without a bookmark (derived tables, sections, attachments …,
    synced once per task or project) moves no bookmark, so it offers no state (each
    offer encodes the whole state); streams with one, and the top-level ones, do."""
    offers: list[str] = []
    offer = StateOutput.offer
    syncing: list[str] = []

    def counted_offer(output: StateOutput, state: dict[str, Any]) -> None:
        offers.append(syncing[-1] if syncing else "")
        offer(output, state)

    sync = Stream.sync

    def tracked_sync(stream: Stream, context: Any = None) -> None:
        syncing.append(stream.name)
        try:
            sync(stream, context)
        finally:
            syncing.pop()

    monkeypatch.setattr(StateOutput, "offer", counted_offer)
    monkeypatch.setattr(Stream, "sync", tracked_sync)
    dataset = build_dataset(workspaces=1, projects_per_workspace=3, tasks_per_project=4, seed=5)
    with FakeAsana(dataset) as fake:
        result = run_tap({"access_token": fake.pat, "api_url": fake.api_url, **FAST})
    tap = result.tap
    assert tap is not None
    without_bookmark = {
        name
        for name, stream in tap.streams.items()
        if stream.replication_key is None and stream.parent_stream_type is not None
    }
    assert without_bookmark >= TASK_TABLES | {"sections", "subtasks"}
    assert all(result.records[name] for name in TASK_TABLES | {"sections", "subtasks"})
    assert not [name for name in offers if name in without_bookmark]
    assert {"stories", "tasks", "projects", "workspaces"} <= set(offers)


@pytest.mark.parametrize("kill_after_states", [2, 4])
def test_a_run_killed_between_sparse_checkpoints_resumes_without_loss(tmp_path, kill_after_states):
    dataset = build_dataset(
        workspaces=1, projects_per_workspace=12, tasks_per_project=6, stories_per_task=2, seed=8
    )
    with FakeAsana(dataset, latency=0.01) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **EAGER}
        clean = run_tap(config)
        first, running = run_killed(
            tmp_path, {**config, "max_concurrent_requests": 2}, kill_after_states
        )
        assert running, "the run ended before the kill: nothing was tested"
        states = [m["value"] for m in first if m["type"] == "STATE"]
        resumed = run_tap(config, state=states[-1])

    interrupted = SyncResult(messages=first, stdout="", logs="")
    for message in first:
        if message["type"] == "RECORD":
            interrupted.records[message["stream"]].append(message["record"])
    union = {**interrupted.by_key(), **resumed.by_key()}
    assert set(union) >= set(clean.by_key()), "a record was lost"


def test_a_failing_run_still_writes_the_last_state_offered(tmp_path):
    """Between checkpoints the newest state is held back; a run that fails writes it on
    the way out, so the next run resumes from the projects finished before the failure."""
    dataset = build_dataset(workspaces=1, projects_per_workspace=6, tasks_per_project=4, seed=9)
    with FakeAsana(dataset) as fake:
        last_project = list(fake.dataset.projects)[-1]
        task = fake.dataset.tasks_by_project[last_project][-1]["gid"]
        fake.inject(rf"/api/1\.0/tasks/{task}/stories", 503, times=None)
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST, "max_retries": 0}
        proc = run_cli(tmp_path, config)
    assert proc.returncode != 0
    states = [m["value"] for m in parse_lines(proc.stdout) if m["type"] == "STATE"]

    def finished(state: dict[str, Any]) -> set[str]:
        partitions = state.get("bookmarks", {}).get("tasks", {}).get("partitions", [])
        return {p["context"]["project_gid"] for p in partitions if p.get("replication_key_value")}

    # Written at the start (the first state offered) and on the way out, nothing between.
    assert len(states) == 2
    assert finished(states[0]) == set()
    assert finished(states[-1])
    assert last_project not in finished(states[-1])
