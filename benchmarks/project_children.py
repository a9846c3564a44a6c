#!/usr/bin/env python3
"""Incremental run with every stream selected: per-project children every run vs on change.

One workspace, 2,000 projects of 5 tasks each, on the test suite's fake Asana (loopback
HTTP, a paid plan). After a first full sync (every stream selected), 20 tasks change; the
same incremental run is then made twice from the same state:

  before: ``project_children_refresh_days: 0``: sections, project memberships, custom
          field settings and status updates read for every project (what every run cost
          before issue 15 item 4);
  after:  the default (7): read only for projects that show a change (none here: a
          task's change leaves its project's record alone).

Prints requests by kind, the wall time, and the time Asana's paid quota (1,500/min)
allows for that many requests (the fake is not throttled here: the requests are the
point).

  python benchmarks/project_children.py
  python benchmarks/project_children.py --projects 200
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.tap_process import run_tap_process  # noqa: E402
from tests.fake_asana import FakeAsana, build_dataset  # noqa: E402
from tests.fake_asana.server import RecordedRequest  # noqa: E402

QUOTA_PER_MINUTE = 1500
CHILD_SUFFIXES = ("/sections", "/project_memberships", "/custom_field_settings")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=2000)
    parser.add_argument("--tasks-per-project", type=int, default=5)
    parser.add_argument("--changed", type=int, default=20)
    return parser.parse_args()


def kind(request: RecordedRequest) -> str:
    path = request.path.removeprefix("/api/1.0")
    if path.startswith("/projects/") and path.endswith(CHILD_SUFFIXES):
        return "project children"
    if path == "/status_updates":
        return "project children"
    if path.endswith("/stories"):
        return "stories"
    return "other"


def run(fake: FakeAsana, config: dict, state: dict | None) -> tuple[float, Counter, dict]:
    """Run the tap as a subprocess; (wall seconds, requests by kind, final state)."""
    last_state: dict = {}

    def keep_state(line: bytes) -> None:
        nonlocal last_state
        if line.startswith(b'{"type":"STATE"'):
            last_state = json.loads(line)["value"]

    before = len(fake.requests)
    process = run_tap_process("run", config, keep_state, state=state)
    counts = Counter(kind(r) for r in fake.requests[before:] if r.path.startswith("/api/"))
    return process.wall, counts, last_state


def main() -> None:
    args = parse_args()
    dataset = build_dataset(
        workspaces=1,
        users_per_workspace=5,
        projects_per_workspace=args.projects,
        tasks_per_project=args.tasks_per_project,
        stories_per_task=2,
        subtasks_every=0,
        seed=42,
    )
    with FakeAsana(dataset) as fake:
        ds = fake.dataset
        config = {
            "access_token": fake.pat,
            "api_url": fake.api_url,
            "max_requests_per_minute": 1_000_000,
            "include_subtasks": False,
            "include_attachments": False,
        }
        # The first full sync (every stream, the default catalog) records the digests.
        _, _, state = run(fake, config, None)
        changed = list(ds.tasks)[:: len(ds.tasks) // args.changed][: args.changed]
        for gid in changed:
            ds.add_story(gid, "changed for the benchmark")
        figures = {
            "before (every run)": run(
                fake, {**config, "project_children_refresh_days": 0}, copy.deepcopy(state)
            ),
            "after (on change)": run(fake, config, copy.deepcopy(state)),
        }

    print(
        f"dataset: 1 workspace, {len(ds.projects)} projects, {len(ds.tasks)} tasks; "
        f"{len(changed)} tasks changed; every stream selected (attachments off)"
    )
    print(f"{'incremental run':<20}{'requests':>9}{'quota min':>10}{'wall s':>8}  by kind")
    print("-" * 90)
    for name, (wall, counts, _) in figures.items():
        total = sum(counts.values())
        detail = ", ".join(f"{k}: {counts[k]}" for k in sorted(counts))
        print(f"{name:<20}{total:>9}{total / QUOTA_PER_MINUTE:>10.2f}{wall:>8.1f}  {detail}")


if __name__ == "__main__":
    main()
