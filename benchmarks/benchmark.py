#!/usr/bin/env python3
"""Benchmark tap-asana-vl against the test suite's fake Asana API.

Runs the real tap (`python -m tap_asana_vl`, a subprocess) three times against one
fake dataset served over loopback HTTP:

  a) full sync, b) re-sync with nothing changed, c) re-sync after K tasks changed,

and prints, per run: requests made vs the fewest a correct sync makes on the same path
(search on paid plans, each project listed with ``--free-plan``), wall time vs the
rate-limit bound (the longer of requests / allowed rate and search requests / 60 per
minute) and their ratio, records/s, the tap's peak RSS and the 429s it received.
Figures are ratios measured in one run, so they hold on a noisy machine. Examples:

  python benchmarks/benchmark.py                                   # tap overhead
  python benchmarks/benchmark.py --latency 0.1 --rate-limit 1500   # paid-plan ceiling
  python benchmarks/benchmark.py --tasks-per-project 25 --rate-limit 150  # free plan

With ``--compare-latencies 0.1,0.5 --baseline REF`` it runs only full syncs instead, at
each latency, of the tap at git revision REF ("before") and of this tree ("after"),
interleaved against the same fake, and prints wall ÷ rate-limit bound and the most
requests the fake served at once (in flight) for each.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.tap_process import run_tap_process  # noqa: E402
from tests.fake_asana import FakeAsana, build_dataset  # noqa: E402
from tests.fake_asana.server import RecordedRequest  # noqa: E402

#: Asana's own limit on task search requests (per token, on top of the quota).
SEARCHES_PER_MINUTE = 60


@dataclass
class RunFigures:
    name: str
    requests: int
    minimum: int
    wall: float
    records: int
    peak_rss_mib: float
    responses_429: int
    failed: int
    state: dict
    peak_in_flight: int = 0
    #: Task search requests (``/workspaces/{gid}/tasks/search``): Asana allows 60 a minute.
    searches: int = 0

    def bound(self, rate: float | None) -> float | None:
        """Seconds the slower of the two limits takes: all requests at ``rate`` a minute,
        or the searches at Asana's 60 a minute (which the tap paces on their own)."""
        by_quota = self.requests / rate * 60 if rate else None
        by_search = self.searches / SEARCHES_PER_MINUTE * 60
        if by_quota is None:
            return by_search or None
        return max(by_quota, by_search)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=1)
    parser.add_argument("--projects-per-workspace", type=int, default=20)
    parser.add_argument("--tasks-per-project", type=int, default=500)
    parser.add_argument("--stories-per-task", type=int, default=5)
    parser.add_argument("--users-per-workspace", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=0,
        help="fake Asana's requests/minute quota (0: none)",
    )
    parser.add_argument(
        "--tap-rate",
        type=int,
        default=None,
        help="tap's max_requests_per_minute (default: the tap's default, or 10^6 without "
        "--rate-limit so that only the tap's own overhead is measured)",
    )
    parser.add_argument("--workers", type=int, default=None, help="max_concurrent_requests")
    parser.add_argument("--changed", type=int, default=50, help="K tasks changed before run c")
    parser.add_argument(
        "--free-plan",
        action="store_true",
        help="Asana's task search refused (402) as on a free plan: each project is listed",
    )
    parser.add_argument(
        "--compare-latencies",
        default=None,
        help="comma-separated latencies in seconds (e.g. 0.1,0.5): full syncs only, "
        "before (--baseline) vs after (this tree) at each",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        help="git revision whose tap is 'before' in --compare-latencies",
    )
    parser.add_argument(
        "--all-streams",
        action="store_true",
        help="sync all streams (default: the five core streams, for which the "
        "theoretical minimum is computed)",
    )
    return parser.parse_args()


CORE_STREAMS = {"workspaces", "users", "projects", "tasks", "stories"}


def core_catalog(config: dict) -> dict:
    """A catalog selecting the five core streams (the ones `minimum` is computed for)."""
    from tap_asana_vl.tap import TapAsanaVl

    # A copy: the SDK fills defaults into the dict it is given (they differ by revision).
    catalog = TapAsanaVl(config=dict(config), parse_env_config=False).catalog_dict
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = stream["tap_stream_id"] in CORE_STREAMS
    return catalog


def minimum_requests(fake: FakeAsana, changed_tasks: set[str] | None, first: bool) -> int:
    """Fewest requests a correct sync of the core streams makes, on the tap's path.

    Every run: the workspaces, each workspace's users and projects. Then per workspace,
    by what Asana offers it:

    - events: one workspace events request (the first run's is answered 412 with the
      first sync token); where they are not offered (``workspace_events_workspaces``)
      that request's 402 and one events request per project;
    - search offered (paid plans, ``premium_workspaces``): a first run lists every
      project's tasks and searches every top-level task for those in no project; a
      re-sync searches the changed ones instead of listing any project;
    - no search (free plans): one task listing (at least) per project, each user's
      assigned tasks (tasks in no project: the users, then a listing per user), and
      search's 402, once per run.

    Plus one stories page per emitted task (all on a first run, the changed ones after).
    A search reads ⌊n / 100⌋ + 1 pages for n results (no offset: a full page needs one
    more request to know it was the last); a listing ⌈n / 100⌉, at least one.
    """
    ds = fake.dataset
    pages = lambda n: max(1, math.ceil(n / 100))  # noqa: E731
    search_pages = lambda n: n // 100 + 1  # noqa: E731
    changed = changed_tasks or set()
    total = pages(len(ds.workspaces))
    for ws in ds.workspaces:
        users = len(ds.users_by_workspace[ws])
        total += pages(users) + pages(len(ds.projects_by_workspace[ws]))
        projects = [p["gid"] for p in ds.projects_by_workspace[ws]]
        top_level = [gid for gid, t in ds.tasks.items() if t["workspace"]["gid"] == ws]
        listed = {
            project: [
                t for t in ds.tasks_by_project.get(project, []) if first or t["gid"] in changed
            ]
            for project in projects
        }
        listings = sum(pages(len(tasks)) for tasks in listed.values())
        total += 1  # workspace events (or the 402 saying to read each project's)
        if ws not in fake.workspace_events_workspaces:
            total += len(projects)
        if ws in fake.premium_workspaces:
            if first:
                total += listings + search_pages(len(top_level))
            else:
                total += search_pages(len([gid for gid in top_level if gid in changed]))
        else:
            total += listings
            # Users (gid only), then each one's assigned tasks (in projects or not).
            assigned = Counter(
                (ds.tasks[gid].get("assignee") or {}).get("gid")
                for gid in top_level
                if first or gid in changed
            )
            total += pages(users)
            total += sum(pages(assigned[user["gid"]]) for user in ds.users_by_workspace[ws])
            total += 1  # search's 402, once per run
    stories_for = ds.tasks if first else changed
    total += sum(pages(len(ds.stories_by_task.get(gid, []))) for gid in stories_for)
    return total


def first_token(request: RecordedRequest) -> bool:
    """A first events call (a project's or a workspace's): Asana answers 412 and a token."""
    path = request.path
    events = path == "/api/1.0/events" or (
        path.startswith("/api/1.0/workspaces/") and path.endswith("/events")
    )
    return events and request.status == 412 and "sync" not in request.query


def export_tap(revision: str, into: Path) -> Path:
    """The tap package as it was at git ``revision``, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "tap_asana_vl"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_tap(
    fake: FakeAsana,
    catalog: dict | None,
    config: dict,
    state: dict | None,
    name: str,
    minimum: int,
    tap_root: Path = REPO,
) -> RunFigures:
    """Run the tap whose package is under ``tap_root`` (this tree's by default)."""
    before_requests = len(fake.requests)
    before_429 = fake.responses_429
    fake.peak_in_flight = 0
    records, last_state = 0, {}

    def count(line: bytes) -> None:
        nonlocal records, last_state
        if line.startswith(b'{"type":"RECORD"'):
            records += 1
        elif line.startswith(b'{"type":"STATE"'):
            last_state = json.loads(line)["value"]

    process = run_tap_process(name, config, count, catalog=catalog, state=state, tap_root=tap_root)
    api = [r for r in fake.requests[before_requests:] if r.path.startswith("/api/1.0/")]
    return RunFigures(
        name=name,
        requests=len(api),
        minimum=minimum,
        wall=process.wall,
        records=records,
        peak_rss_mib=process.peak_rss_mib,
        responses_429=fake.responses_429 - before_429,
        failed=sum(1 for r in api if r.status >= 400 and r.status != 429 and not first_token(r)),
        state=last_state,
        peak_in_flight=fake.peak_in_flight,
        searches=sum(1 for r in api if r.path.endswith("/tasks/search")),
    )


def main() -> None:
    args = parse_args()
    dataset = build_dataset(
        workspaces=args.workspaces,
        users_per_workspace=args.users_per_workspace,
        projects_per_workspace=args.projects_per_workspace,
        tasks_per_project=args.tasks_per_project,
        stories_per_task=args.stories_per_task,
        seed=42,
    )
    allowed = args.rate_limit or None
    with FakeAsana(dataset, latency=args.latency, rate_limit_per_minute=allowed) as fake:
        fake.cache_responses = True  # nothing changes mid-run; keeps the fake fast
        if args.free_plan:
            fake.premium_workspaces.clear()
        config: dict = {"access_token": fake.pat, "api_url": fake.api_url}
        if args.tap_rate is not None:
            config["max_requests_per_minute"] = args.tap_rate
        elif not allowed:
            config["max_requests_per_minute"] = 1_000_000
        if args.workers is not None:
            config["max_concurrent_requests"] = args.workers

        catalog = None if args.all_streams else core_catalog(config)
        ds = fake.dataset
        if args.compare_latencies:
            compare_latencies(args, fake, catalog, config)
            return
        print(
            f"dataset: {len(ds.workspaces)} workspaces, {len(ds.users)} users, "
            f"{len(ds.projects)} projects, {len(ds.tasks)} tasks, {len(ds.stories)} stories; "
            f"{'free plan (no search)' if args.free_plan else 'paid plan (search)'}; "
            f"latency {args.latency * 1000:.0f} ms; quota "
            f"{f'{allowed}/min' if allowed else 'none'}; tap config "
            f"{ {k: v for k, v in config.items() if k not in {'access_token', 'api_url'}} }"
        )
        runs = [
            run_tap(fake, catalog, config, None, "a) full sync", minimum_requests(fake, None, True))
        ]
        runs.append(
            run_tap(
                fake,
                catalog,
                config,
                runs[0].state,
                "b) re-sync, no change",
                minimum_requests(fake, set(), False),
            )
        )
        changed = set(
            list(ds.tasks)[:: max(1, len(ds.tasks) // max(args.changed, 1))][: args.changed]
        )
        for gid in changed:
            fake.touch_task(gid)
        runs.append(
            run_tap(
                fake,
                catalog,
                config,
                runs[1].state,
                f"c) re-sync, {len(changed)} changed",
                minimum_requests(fake, changed, False),
            )
        )

    header = (
        f"{'run':<26}{'requests':>9}{'minimum':>9}{'wall s':>9}{'bound s':>9}"
        f"{'wall/bound':>11}{'records':>9}{'records/s':>11}{'peak RSS MiB':>13}"
        f"{'429s':>6}{'failed':>7}"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        bound = run.bound(allowed)
        print(
            f"{run.name:<26}{run.requests:>9}{run.minimum:>9}{run.wall:>9.1f}"
            f"{(f'{bound:.1f}' if bound else '-'):>9}"
            f"{(f'{run.wall / bound:.3f}' if bound else '-'):>11}"
            f"{run.records:>9}{run.records / run.wall:>11.0f}{run.peak_rss_mib:>13.1f}"
            f"{run.responses_429:>6}{run.failed:>7}"
        )


def compare_latencies(
    args: argparse.Namespace, fake: FakeAsana, catalog: dict | None, config: dict
) -> None:
    """Full syncs before (--baseline) and after (this tree), interleaved, per latency."""
    if not args.baseline:
        raise SystemExit("--compare-latencies needs --baseline REV (the 'before' tap)")
    allowed = args.rate_limit or None
    latencies = [float(x) for x in args.compare_latencies.split(",")]
    ds = fake.dataset
    print(
        f"dataset: {len(ds.workspaces)} workspaces, {len(ds.users)} users, "
        f"{len(ds.projects)} projects, {len(ds.tasks)} tasks, {len(ds.stories)} stories; "
        f"quota {f'{allowed}/min' if allowed else 'none'}; full syncs; before = "
        f"{args.baseline}, after = this tree"
    )
    minimum = minimum_requests(fake, None, True)
    rows: list[tuple[float, RunFigures]] = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = export_tap(args.baseline, Path(tmp))
        for latency in latencies:
            fake.latency = latency
            for name, root in (("before", baseline), ("after", REPO)):
                run = run_tap(fake, catalog, config, None, name, minimum, tap_root=root)
                rows.append((latency, run))
                print(f"  {latency * 1000:.0f} ms {name}: {run.wall:.1f} s", flush=True)
    header = (
        f"{'latency':>8}  {'tap':<8}{'requests':>9}{'minimum':>9}{'wall s':>9}{'bound s':>9}"
        f"{'wall/bound':>11}{'peak in flight':>15}{'records/s':>11}{'peak RSS MiB':>13}"
        f"{'429s':>6}{'failed':>7}"
    )
    print(header)
    print("-" * len(header))
    for latency, run in rows:
        bound = run.bound(allowed)
        print(
            f"{latency * 1000:>6.0f}ms  {run.name:<8}{run.requests:>9}{run.minimum:>9}"
            f"{run.wall:>9.1f}{(f'{bound:.1f}' if bound else '-'):>9}"
            f"{(f'{run.wall / bound:.3f}' if bound else '-'):>11}{run.peak_in_flight:>15}"
            f"{run.records / run.wall:>11.0f}{run.peak_rss_mib:>13.1f}"
            f"{run.responses_429:>6}{run.failed:>7}"
        )


if __name__ == "__main__":
    main()
