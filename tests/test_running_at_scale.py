"""Past one process (issue 15, item 7): an organization split into jobs by project_gids.

README "Running at scale": each job is its own Meltano job (its own token and state
id). Here two tap runs with disjoint ``project_gids`` and separate states stand for
them; together they must deliver what one sync of everything delivers.
"""

from __future__ import annotations

from typing import Any

from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import FAST, TAP_ADDED_FIELDS, SyncResult, run_tap

# The tap's own "through which parent" keys: a multi-homed task is listed through a
# project of each job, and a derived row names the project it was found under.
THROUGH = TAP_ADDED_FIELDS


def _union(*results: SyncResult) -> dict[tuple[str, tuple[str, ...]], dict[str, Any]]:
    union: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    for result in results:
        union.update(result.by_key())
    return union


def _asana_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in THROUGH}


def _projects(state: dict[str, Any]) -> set[str]:
    partitions = state["bookmarks"]["tasks"]["partitions"]
    return {p["context"]["project_gid"] for p in partitions}


def test_two_jobs_split_by_project_deliver_what_one_full_sync_delivers():
    dataset = build_dataset(workspaces=2, projects_per_workspace=4, tasks_per_project=8, seed=17)
    with FakeAsana(dataset) as fake:
        base = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        projects = sorted(fake.dataset.projects)
        # Interleaved, so each job has projects of both workspaces and multi-homed
        # tasks (in a project and the next one) belong to both jobs.
        halves = [projects[0::2], projects[1::2]]
        whole = run_tap(base)
        jobs = [run_tap({**base, "project_gids": half}) for half in halves]

        union = _union(*jobs)
        expected = whole.by_key()
        assert set(union) == set(expected)
        for key, record in expected.items():
            assert _asana_fields(union[key]) == _asana_fields(record), key
        # Each job's state is its own: bookmarks for its projects only.
        for job, half in zip(jobs, halves, strict=True):
            assert _projects(job.state) == set(half)
        # A task in projects of both jobs came from both (the target upserts it).
        tasks = [{r["gid"] for r in job.records["tasks"]} for job in jobs]
        shared = tasks[0] & tasks[1]
        assert shared
        assert all(len(fake.dataset.tasks[gid]["projects"]) > 1 for gid in shared)

        # Next runs, each from its own state: the changes reach the union once more.
        changed = list(fake.dataset.tasks)[::7]
        for gid in changed:
            fake.touch_task(gid)
        whole_again = run_tap(base, state=whole.state)
        jobs_again = [
            run_tap({**base, "project_gids": half}, state=job.state)
            for half, job in zip(halves, jobs, strict=True)
        ]
        # Under project_gids no reconcile: only workspace-level complete reads send an
        # ACTIVATE_VERSION (README: select those streams in one job only).
        workspace_level = {
            "custom_fields",
            "goals",
            "portfolios",
            "tags",
            "team_memberships",
            "teams",
            "users",
        }
        for job in jobs_again:
            activated = {m["stream"] for m in job.messages if m["type"] == "ACTIVATE_VERSION"}
            assert activated == workspace_level
        union_again = _union(*jobs_again)
        expected_again = whole_again.by_key()
        assert {g for (s, (g, *_)) in expected_again if s == "tasks"} >= set(changed)
        assert set(union_again) == set(expected_again)
        for key, record in expected_again.items():
            assert _asana_fields(union_again[key]) == _asana_fields(record), key
