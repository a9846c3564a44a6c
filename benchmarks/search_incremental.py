#!/usr/bin/env python3
"""Incremental run of a big workspace: each project listed (before) vs one search (after).

One workspace, 2,000 projects of 5 tasks each, on the test suite's fake Asana (loopback
HTTP, a paid plan, Asana's paid quota of 1,500 requests/min and a per-request latency).
After a first full sync, 20 tasks change; the same incremental run is then made twice
from the same state, side by side:

  before: Asana's search and workspace events unavailable (402), as on a free plan:
          one ``GET /tasks?project=…&modified_since=…`` and one ``GET /events?resource=…``
          per project (what every run cost before issue 15);
  after:  the paid plan: one search and one workspace events request per workspace.

Prints requests by kind and wall time of each. Streams: workspaces, users, projects,
tasks, stories (the per-project children such as sections cost one request per project
per run whatever the plan: issue 15 item 4).

  python benchmarks/search_incremental.py
  python benchmarks/search_incremental.py --projects 200 --latency 0.1
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

CORE = {"workspaces", "users", "projects", "tasks", "stories"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=2000)
    parser.add_argument("--tasks-per-project", type=int, default=5)
    parser.add_argument("--changed", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    parser.add_argument("--rate-limit", type=int, default=1500, help="requests/minute quota")
    return parser.parse_args()


def catalog(config: dict, selected: set[str]) -> dict:
    from tap_asana_vl.tap import TapAsanaVl

    result = TapAsanaVl(config=config, parse_env_config=False).catalog_dict
    for stream in result["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = stream["tap_stream_id"] in selected
    return result


def kind(request: RecordedRequest) -> str:
    path = request.path.removeprefix("/api/1.0")
    if path == "/tasks" and "project" in request.query:
        return "task listings per project"
    if path == "/events":
        return "events per project"
    if path.endswith("/events"):
        return "workspace events"
    if path.endswith("/tasks/search"):
        return "task searches"
    if path.endswith("/stories"):
        return "stories"
    return "other (workspaces, users, projects)"


def run(fake: FakeAsana, config: dict, selected: set[str], state: dict | None) -> tuple:
    """Run the tap as a subprocess; (wall seconds, requests by kind, final state)."""
    last_state: dict = {}

    def keep_state(line: bytes) -> None:
        nonlocal last_state
        if line.startswith(b'{"type":"STATE"'):
            last_state = json.loads(line)["value"]

    before = len(fake.requests)
    process = run_tap_process(
        "run", config, keep_state, catalog=catalog(config, selected), state=state
    )
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
        }
        # The first full sync, unthrottled (stories left out: only the incremental
        # runs are measured, and they ask stories of changed tasks only).
        _, _, state = run(fake, config, CORE - {"stories"}, None)
        changed = list(ds.tasks)[:: len(ds.tasks) // args.changed][: args.changed]
        for gid in changed:
            ds.add_story(gid, "changed for the benchmark")

        fake.latency = args.latency
        fake.rate_limit_per_minute = args.rate_limit
        config["max_requests_per_minute"] = args.rate_limit
        figures = {}
        fake.premium_workspaces = set()
        fake.workspace_events_workspaces = set()
        figures["before (per project)"] = run(fake, config, CORE, copy.deepcopy(state))
        fake.premium_workspaces = set(ds.workspaces)
        fake.workspace_events_workspaces = set(ds.workspaces)
        figures["after (search)"] = run(fake, config, CORE, copy.deepcopy(state))

    print(
        f"dataset: 1 workspace, {len(ds.projects)} projects, {len(ds.tasks)} tasks; "
        f"{len(changed)} tasks changed; latency {args.latency * 1000:.0f} ms; quota "
        f"{args.rate_limit}/min (search: 60/min); streams {', '.join(sorted(CORE))}"
    )
    kinds = sorted({k for _, counts, _ in figures.values() for k in counts})
    header = f"{'incremental run':<22}{'requests':>9}{'wall s':>8}  by kind"
    print(header)
    print("-" * 100)
    for name, (wall, counts, _) in figures.items():
        detail = ", ".join(f"{k}: {counts[k]}" for k in kinds if counts[k])
        print(f"{name:<22}{sum(counts.values()):>9}{wall:>8.1f}  {detail}")


if __name__ == "__main__":
    main()
