"""A run remembers only the gids it may meet again, so its memory does not grow per task.

Tasks in several projects are listed under each and subtasks read under a changed task
may come back from the workspace's subtask search: those are remembered (their second
copy is dropped), a task only until its last project is listed; a task in one project,
or a subtask the search will not return (none on a free plan), is delivered once and
not remembered (``AsanaStream.may_come_again``).
"""

from __future__ import annotations

from collections import Counter

import tap_asana_vl.streams.subtasks as subtasks_module
from tap_asana_vl.streams.base import gid_key
from tests.tap_runner import FAST, run_tap


def _remembered(result, stream: str) -> set[str]:
    return {str(gid) for gid in result.tap.streams[stream]._emitted}


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
    # ... and forgotten there once each of its projects was listed: only those with a
    # project this run does not list (archived, say) are still remembered at the end.
    listed = {
        project for plan in result.tap.streams["tasks"]._plans.values() for project in plan.projects
    }
    still_to_come = {
        gid for gid in multi if not {p["gid"] for p in ds.tasks[gid]["projects"]} <= listed
    }
    assert len(still_to_come) < len(multi)
    assert _remembered(result, "tasks") == still_to_come


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


def _subtask_searches(fake) -> list:
    return [
        r
        for r in fake.requests
        if r.path.endswith("/tasks/search") and r.query.get("is_subtask") == ["true"]
    ]


def test_a_free_plan_first_run_remembers_no_subtask(fake, pat_config):
    """No search on a free plan: a subtask read under its task cannot come again.

    Before, a run without a subtask search bookmark (every free-plan run) remembered
    every subtask read under a task, for a search that answers 402. The search is asked
    once per workspace, as before, and every subtask is still delivered once.
    """
    fake.premium_workspaces.clear()
    ds = fake.dataset

    result = run_tap({**pat_config, **FAST})

    counts = Counter(result.gids("subtasks"))
    assert set(counts) == set(ds.subtasks)
    assert {gid: n for gid, n in counts.items() if n > 1} == {}
    assert _remembered(result, "subtasks") == set()
    workspaces = {ds.get_task(gid)["workspace"]["gid"] for gid in ds.subtasks}
    assert len(_subtask_searches(fake)) == len(workspaces)


def test_a_paid_first_run_remembers_only_the_subtasks_its_search_returns_again(fake, pat_config):
    """A first run's sweep searches from the run's start less the index lag: of the
    subtasks read under a task, only those edited since then are remembered (and dropped
    when the search returns them), and the search is not asked more than before."""
    ds = fake.dataset
    recent = next(
        gid
        for gid in sorted(ds.subtasks)
        if ds.get_task(gid)["workspace"]["gid"] in fake.premium_workspaces
    )
    fake.touch_task(recent)  # edited a moment ago: inside the search's window

    result = run_tap({**pat_config, **FAST})

    counts = Counter(result.gids("subtasks"))
    assert set(counts) == set(ds.subtasks)
    assert {gid: n for gid, n in counts.items() if n > 1} == {}
    assert _remembered(result, "subtasks") == {recent}
    # Kept compact: ints (gid, modified_at in microseconds), not the records' strings.
    memory = result.tap.streams["subtasks"]._emitted
    assert all(type(gid) is int and type(stamp) is int for gid, stamp in memory.items())
    # No tree noted: where search works, no walk follows to skip them.
    assert len(result.tap.streams["subtasks"]._trees_read) == 0
    pages = Counter(
        (r.path, tuple(sorted((k, tuple(v)) for k, v in r.query.items())))
        for r in _subtask_searches(fake)
    )
    assert pages
    # Asked once early (does search work here, before any tree is read), then again by
    # the sweep, which must see what was edited meanwhile; no other page twice.
    assert max(pages.values()) == 2
    assert sum(pages.values()) <= len(pages) + len(fake.premium_workspaces)


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


def test_a_subtask_edited_after_its_first_delivery_is_emitted_again_in_the_same_run(
    fake, pat_config, monkeypatch
):
    """A newer copy is a change, not a repeat: dropping it lost the edit for good.

    The subtask is read under its changed parent, then edited before the workspace's
    subtask search returns it: the search's copy must be emitted (before, it was dropped
    as a repeat yet remembered as delivered, so the next run skipped it too).
    """
    ds = fake.dataset
    config = {**pat_config, **FAST}
    first = run_tap(config)
    parent = next(
        gid
        for gid, subtasks in ds.subtasks_by_parent.items()
        if gid in ds.tasks and subtasks and len(ds.tasks[gid]["projects"]) == 1
    )
    subtask = ds.subtasks_by_parent[parent][0]["gid"]
    fake.touch_task(parent)
    fake.touch_task(subtask)
    workspace = ds.get_task(subtask)["workspace"]["gid"]
    sweep = subtasks_module.SubtasksStream._sweep

    def edited_before_the_sweep(stream, swept):
        if swept == workspace:
            fake.touch_task(subtask, at=_later(ds.get_task(subtask)["modified_at"]))
            ds.get_task(subtask)["name"] = "edited during the run"
        yield from sweep(stream, swept)

    monkeypatch.setattr(subtasks_module.SubtasksStream, "_sweep", edited_before_the_sweep)
    second = run_tap(config, state=first.state)
    monkeypatch.setattr(subtasks_module.SubtasksStream, "_sweep", sweep)
    third = run_tap(config, state=second.state)

    copies = [
        r for r in second.records["subtasks"] + third.records["subtasks"] if r["gid"] == subtask
    ]
    assert copies, "the changed subtask was never emitted"
    truth = ds.get_task(subtask)
    assert (copies[-1]["modified_at"], copies[-1]["name"]) == (
        truth["modified_at"],
        "edited during the run",
    )


def test_each_subtask_tree_is_walked_once_when_the_full_walk_and_the_reconcile_meet(
    fake, pat_config
):
    """Free plan, every run both a full walk and a reconcile: each tree read once per run."""
    fake.premium_workspaces.clear()  # no search: subtasks come from walks
    config = {**pat_config, **FAST, "reconcile_every_days": 0, "subtasks_full_walk_days": 0}
    first = run_tap(config)
    already = len(fake.requests)

    second = run_tap(config, state=first.state)

    counts = Counter(second.gids("subtasks"))
    assert counts
    assert {gid: n for gid, n in counts.items() if n > 1} == {}
    walked = Counter(r.path for r in fake.requests[already:] if r.path.endswith("/subtasks"))
    assert walked
    assert max(walked.values()) == 1


def _workspace_of(ds, gid: str) -> str:
    return ds.get_task(gid)["workspace"]["gid"]


def _and_below(ds, gids) -> set[str]:
    """``gids`` and every subtask below them, those with subtasks: the trees read."""
    trees: set[str] = set()
    todo = list(gids)
    while todo:
        gid = todo.pop()
        below = ds.subtasks_by_parent.get(gid) or []
        if below:
            trees.add(gid)
            todo.extend(subtask["gid"] for subtask in below)
    return trees


def _top_task(ds, gid: str) -> str:
    while ds.get_task(gid).get("parent"):
        gid = ds.get_task(gid)["parent"]["gid"]
    return gid


def _tree_of(gids) -> set:
    """Gids as ``_trees_read`` keeps them."""
    return {gid_key(gid) for gid in gids}


def test_trees_read_are_remembered_only_in_a_workspace_whose_sweep_may_walk(fake, pat_config):
    """A sweep's walk skips the trees already read; only a walk needs them noted.

    Before, every tree read under a task was noted in every run, a gid per task with
    subtasks: memory growing with the workspace. Now only in a workspace whose sweep may
    walk: a free plan's run with a full walk due, not a paid plan's (it searches), nor a
    free plan's run between full walks.
    """
    ds = fake.dataset
    free, paid = sorted(ds.workspaces)
    fake.premium_workspaces.discard(free)
    config = {**pat_config, **FAST}

    first = run_tap(config)

    counts = Counter(first.gids("subtasks"))
    assert set(counts) == set(ds.subtasks)
    assert {gid: n for gid, n in counts.items() if n > 1} == {}
    emitted = {gid for gid in first.gids("tasks") if _workspace_of(ds, gid) == free}
    expected = _and_below(ds, emitted)
    assert expected
    noted = first.tap.streams["subtasks"]._trees_read
    assert set(noted) == _tree_of(expected)
    assert all(type(gid) is int for gid in noted)  # compact
    assert any(_workspace_of(ds, gid) == paid for gid in _and_below(ds, first.gids("tasks")))

    # The next run, no full walk due (subtasks_full_walk_days): nothing noted anywhere.
    parent = next(gid for gid in sorted(emitted) if ds.subtasks_by_parent.get(gid))
    fake.touch_task(parent)
    second = run_tap(config, state=first.state)

    assert parent in second.gids("tasks")
    assert set(second.gids("subtasks")) >= {s["gid"] for s in ds.subtasks_by_parent[parent]}
    assert len(second.tap.streams["subtasks"]._trees_read) == 0


def test_a_workspace_moved_to_a_free_plan_drops_its_subtask_search_bookmark(fake, pat_config):
    """Search answers 402 where it had a bookmark: the bookmark is nulled, so later runs
    know the sweep walks and note the trees read before it (else, trusting the stale
    bookmark, they noted none and walked every tree twice)."""
    ds = fake.dataset
    config = {**pat_config, **FAST}
    first = run_tap(config)
    moved = sorted(ds.workspaces)[0]
    assert first.state["bookmarks"]["subtasks"]["search_bookmarks"].get(moved)
    fake.premium_workspaces.discard(moved)

    second = run_tap(config, state=first.state)

    marks = second.state["bookmarks"]["subtasks"]["search_bookmarks"]
    assert moved in marks
    assert marks[moved] is None
    # Walked there: every subtask below a task in its projects (the walk lists those).
    in_projects = {gid for gid, task in ds.tasks.items() if task["projects"]}
    below_projects = {
        gid
        for gid in ds.subtasks
        if _workspace_of(ds, gid) == moved and _top_task(ds, gid) in in_projects
    }
    assert below_projects
    assert below_projects <= set(second.gids("subtasks"))

    parent = next(
        gid
        for gid in sorted(ds.tasks)
        if _workspace_of(ds, gid) == moved
        and ds.subtasks_by_parent.get(gid)
        and len(ds.tasks[gid]["projects"]) == 1
    )
    changed = ds.subtasks_by_parent[parent][0]["gid"]
    fake.touch_task(parent)
    fake.touch_task(changed)
    third = run_tap({**config, "subtasks_full_walk_days": 0}, state=second.state)

    assert set(third.tap.streams["subtasks"]._trees_read) == _tree_of(_and_below(ds, [parent]))
    counts = Counter(third.gids("subtasks"))
    assert counts[changed] == 1
    assert {gid: n for gid, n in counts.items() if n > 1} == {}


def _later(timestamp: str) -> str:
    """A ``modified_at`` 1 s after ``timestamp`` (Asana's format: ms, Z)."""
    from datetime import datetime, timedelta

    moved = datetime.fromisoformat(timestamp.replace("Z", "+00:00")) + timedelta(seconds=1)
    return moved.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moved.microsecond // 1000:03d}Z"
