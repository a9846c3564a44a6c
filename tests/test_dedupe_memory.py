"""A run remembers only the gids it may meet again, so its memory does not grow per task.

Tasks in several projects are listed under each and subtasks read under a changed task
may come back from the workspace's subtask search: those are remembered (their second
copy is dropped); a task in one project, or a subtask the search will not return, is
delivered once and not remembered (``AsanaStream.may_come_again``).
"""

from __future__ import annotations

from collections import Counter

from tests.tap_runner import run_tap

FAST = {"max_requests_per_minute": 100_000}


def _remembered(result, stream: str) -> set[str]:
    return set(result.tap.streams[stream]._emitted)


def test_a_multi_homed_task_is_emitted_once_and_a_single_homed_one_is_not_remembered(
    fake, pat_config
):
    ds = fake.dataset
    multi = {gid for gid, task in ds.tasks.items() if len(task["projects"]) > 1}
    single = set(ds.tasks) - multi
    assert multi
    assert single

    result = run_tap({**pat_config, **FAST})

    counts = Counter(result.gids("tasks"))
    assert set(counts) == set(ds.tasks)
    assert {gid: n for gid, n in counts.items() if n > 1} == {}
    # Each multi-homed task was listed under a second project and dropped there.
    assert "duplicates dropped" in result.logs
    remembered = _remembered(result, "tasks")
    assert remembered == multi
    assert not remembered & single


def test_a_subtask_read_under_a_changed_task_is_remembered_only_if_search_returns_it(
    fake, pat_config
):
    ds = fake.dataset
    config = {**pat_config, **FAST}
    first = run_tap(config)
    parent_gid = next(
        gid
        for gid, subtasks in ds.subtasks_by_parent.items()
        if gid in ds.tasks and len(subtasks) > 1 and len(ds.tasks[gid]["projects"]) == 1
    )
    changed, unchanged = ds.subtasks_by_parent[parent_gid][:2]
    ds.touch_task(parent_gid)
    ds.touch_task(changed["gid"])

    second = run_tap(config, state=first.state)

    # The parent's tree brings both; the sweep's search brings the changed one again.
    counts = Counter(second.gids("subtasks"))
    assert counts[changed["gid"]] == 1
    assert counts[unchanged["gid"]] == 1
    searches = [
        r
        for r in fake.requests
        if r.path.endswith("/tasks/search") and r.query.get("is_subtask") == ["true"]
    ]
    assert searches
    remembered = _remembered(second, "subtasks")
    assert changed["gid"] in remembered
    assert unchanged["gid"] not in remembered
    assert _remembered(second, "tasks") == set()


def test_a_reconcile_rewrites_each_unchanged_task_once_remembering_only_multi_homed_ones(
    fake, pat_config
):
    ds = fake.dataset
    config = {**pat_config, **FAST, "include_subtasks": False, "reconcile_every_days": 0}
    first = run_tap(config)

    second = run_tap(config, state=first.state)

    rewritten = Counter(second.gids("tasks"))
    in_projects = {gid for gid, task in ds.tasks.items() if task["projects"]}
    assert in_projects <= set(rewritten)
    assert {gid: n for gid, n in rewritten.items() if n > 1} == {}
    multi = {gid for gid, task in ds.tasks.items() if len(task["projects"]) > 1}
    assert second.tap.streams["tasks"].reconcile.rewritten == multi
