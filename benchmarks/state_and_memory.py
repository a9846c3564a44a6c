#!/usr/bin/env python3
"""STATE output and peak memory of tap-asana-vl at scale, against the fake Asana.

Two measurements (issue 15), each with the real tap as a subprocess:

  state   1 workspace x 2,000 projects x 5 tasks: a full sync, then 20 tasks changed and
          the same incremental run twice from the full sync's state: with the SDK's
          own STATE writer (every state it offers: "before") and with the tap's bounded
          output ("after"). Prints STATE messages, their bytes, the final state's size
          and the ratio, which the tap keeps <= 30.
  memory  full syncs of 10,000, 30,000 and 100,000 tasks: the tap's peak RSS (VmHWM),
          search's 60/min pacing lifted (it only adds wall time: 22 minutes at 100k).
          ``--baseline REV`` also runs the tap of git revision REV ("before")
          against the same fake, interleaved; ``--trace DIR`` writes each run's
          tracemalloc figures (traced peak, biggest lines at the end) there.
          ``--rss-trace DIR`` writes, for each run, every rise of its resident size
          to a new high (sampled every 5 ms) with what each thread was doing then.
          ``--repeat N`` runs each tap N times per size, interleaved, and prints each
          tap's median peak per size, the spread of its repeats and its growth from the
          smallest size to the largest: flat means growth within that spread.

  python benchmarks/state_and_memory.py state
  python benchmarks/state_and_memory.py memory [--baseline 51c70e4] [--trace /tmp/trace]
                                              [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.benchmark import export_tap  # noqa: E402
from benchmarks.tap_process import run_tap_process  # noqa: E402
from tests.fake_asana import FakeAsana, build_dataset  # noqa: E402


@dataclass
class Run:
    name: str
    wall: float
    records: int
    states: int
    state_bytes: int
    final_state_bytes: int
    final_state: dict
    peak_rss_mib: float
    gid_tables_mib: float = 0.0
    offers: int = 0
    offer_seconds: float = 0.0


def run_tap(
    config: dict,
    state: dict | None,
    name: str,
    *,
    mode: str = "bounded",
    tap_root: Path = REPO,
) -> Run:
    """One tap run (``mode``: see tap_process.WRAPPER), its STATE lines counted."""
    records = states = state_bytes = 0
    last_state = b""

    def count(line: bytes) -> None:
        nonlocal records, states, state_bytes, last_state
        if line.startswith(b'{"type":"RECORD"'):
            records += 1
        elif line.startswith(b'{"type":"STATE"'):
            states += 1
            state_bytes += len(line)
            last_state = line

    process = run_tap_process(name, config, count, state=state, mode=mode, tap_root=tap_root)
    return Run(
        name=name,
        wall=process.wall,
        records=records,
        states=states,
        state_bytes=state_bytes,
        final_state_bytes=len(last_state),
        final_state=json.loads(last_state)["value"] if last_state else {},
        peak_rss_mib=process.peak_rss_mib,
        gid_tables_mib=process.gid_tables_mib,
        offers=process.offers,
        offer_seconds=process.offer_seconds,
    )


def tap_config(fake: FakeAsana) -> dict:
    # No quota: what is measured is the tap, not Asana's rate limit.
    return {
        "access_token": fake.pat,
        "api_url": fake.api_url,
        "max_requests_per_minute": 1_000_000,
    }


def measure_state(projects: int, tasks_per_project: int, changed: int) -> None:
    dataset = build_dataset(
        workspaces=1,
        users_per_workspace=20,
        projects_per_workspace=projects,
        tasks_per_project=tasks_per_project,
        stories_per_task=2,
        seed=42,
    )
    with FakeAsana(dataset) as fake:
        config = tap_config(fake)
        print(
            f"dataset: {projects} projects x {tasks_per_project} tasks = "
            f"{len(dataset.tasks)} tasks, {len(dataset.stories)} stories; default selection",
            flush=True,
        )
        before = run_tap(config, None, "full sync: every offer", mode="every-offer")
        full = run_tap(config, None, "full sync (bounded)")
        print_runs([before, full])
        tasks = list(dataset.tasks)
        for gid in tasks[:: max(1, len(tasks) // changed)][:changed]:
            fake.touch_task(gid)
        runs = [
            run_tap(
                config, full.final_state, f"{changed} changed: SDK writer", mode="sdk-state-writer"
            ),
            run_tap(
                config, full.final_state, f"{changed} changed: every offer", mode="every-offer"
            ),
            run_tap(config, full.final_state, f"{changed} changed: bounded"),
        ]
        print_runs(runs)


def print_runs(runs: list[Run]) -> None:
    header = (
        f"{'run':<28}{'wall s':>8}{'records':>9}{'STATEs':>8}{'STATE bytes':>15}"
        f"{'final state':>13}{'bytes/final':>13}{'peak RSS MiB':>14}{'offers':>8}{'offer s':>9}"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        print(
            f"{run.name:<28}{run.wall:>8.1f}{run.records:>9}{run.states:>8}"
            f"{run.state_bytes:>15,}{run.final_state_bytes:>13,}"
            f"{run.state_bytes / max(1, run.final_state_bytes):>13.1f}{run.peak_rss_mib:>14.1f}"
            f"{run.offers:>8}{run.offer_seconds:>9.2f}",
            flush=True,
        )


def measure_memory(
    sizes: list[int],
    tasks_per_project: int,
    baseline: str | None,
    trace: Path | None,
    repeat: int = 1,
    rss_trace: Path | None = None,
) -> None:
    os.environ["TAP_BENCH_NO_SEARCH_PACING"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        taps = [("after", REPO)]
        if baseline:
            # A revision of this repository, or a directory holding a tap_asana_vl package.
            root = Path(baseline)
            if not (root / "tap_asana_vl").is_dir():
                root = export_tap(baseline, Path(tmp))
            taps.insert(0, ("before", root))
            print(f"before = {baseline}, after = this tree", flush=True)
        measure_memory_of(taps, sizes, tasks_per_project, trace, repeat, rss_trace)


def measure_memory_of(
    taps: list[tuple[str, Path]],
    sizes: list[int],
    tasks_per_project: int,
    trace: Path | None,
    repeat: int = 1,
    rss_trace: Path | None = None,
) -> None:
    runs = []
    peaks: dict[tuple[str, int], list[float]] = {}
    for total in sizes:
        dataset = build_dataset(
            workspaces=1,
            users_per_workspace=20,
            projects_per_workspace=max(1, total // tasks_per_project),
            tasks_per_project=tasks_per_project,
            stories_per_task=1,
            seed=7,
        )
        with FakeAsana(dataset) as fake:
            fake.cache_responses = True  # nothing changes mid-run; keeps the fake fast
            print(
                f"dataset: {len(dataset.tasks)} tasks ({len(dataset.subtasks)} subtasks), "
                f"{len(dataset.stories)} stories",
                flush=True,
            )
            # Interleaved (before, after, before, after ...): what the machine does
            # meanwhile falls on both taps alike.
            for name, root in [tap for _ in range(repeat) for tap in taps]:
                if trace is not None:
                    trace.mkdir(parents=True, exist_ok=True)
                    out = trace / f"{name}-{len(dataset.tasks)}.txt"
                    os.environ["TAP_BENCH_TRACEMALLOC"] = str(out)
                if rss_trace is not None:
                    rss_trace.mkdir(parents=True, exist_ok=True)
                    out = rss_trace / f"{name}-{len(dataset.tasks)}-{len(runs)}.txt"
                    os.environ["TAP_BENCH_RSS_TRACE"] = str(out)
                label = f"{name}, {len(dataset.tasks)} tasks"
                runs.append(run_tap(tap_config(fake), None, label, tap_root=root))
                run = runs[-1]
                peaks.setdefault((name, len(dataset.tasks)), []).append(run.peak_rss_mib)
                print(
                    f"  {label}: peak RSS {run.peak_rss_mib:.1f} MiB, of which gid tables "
                    f"at most {run.gid_tables_mib:.2f} MiB; without them "
                    f"{run.peak_rss_mib - run.gid_tables_mib:.1f} MiB",
                    flush=True,
                )
        del dataset
    print_runs(runs)
    if repeat > 1:
        print_growth(peaks, [name for name, _ in taps])


def print_growth(peaks: dict[tuple[str, int], list[float]], taps: list[str]) -> None:
    """Each tap's median peak per size, and its growth against its repeats' spread."""
    print(f"\n{'tap':<10}{'tasks':>9}{'median MiB':>12}{'min-max MiB':>16}{'spread':>8}")
    for name in taps:
        sizes = sorted(size for tap, size in peaks if tap == name)
        for size in sizes:
            values = peaks[name, size]
            print(
                f"{name:<10}{size:>9,}{statistics.median(values):>12.1f}"
                f"{min(values):>8.1f}-{max(values):<7.1f}{max(values) - min(values):>8.1f}"
            )
        smallest, largest = peaks[name, sizes[0]], peaks[name, sizes[-1]]
        growth = statistics.median(largest) - statistics.median(smallest)
        spread = max(max(v) - min(v) for (tap, _), v in peaks.items() if tap == name)
        verdict = "within" if abs(growth) <= spread else "beyond"
        print(
            f"{name}: {sizes[0]:,} -> {sizes[-1]:,} tasks: median peak grows {growth:+.1f} MiB; "
            f"repeats of one size differ by up to {spread:.1f} MiB: growth {verdict} that spread",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    state = sub.add_parser("state", help="STATE bytes, SDK writer vs bounded")
    state.add_argument("--projects", type=int, default=2000)
    state.add_argument("--tasks-per-project", type=int, default=5)
    state.add_argument("--changed", type=int, default=20)
    memory = sub.add_parser("memory", help="peak RSS of full syncs")
    memory.add_argument("--tasks", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    memory.add_argument("--tasks-per-project", type=int, default=500)
    memory.add_argument("--baseline", help="git revision (or directory) of the 'before' tap")
    memory.add_argument("--trace", type=Path, help="directory for tracemalloc figures")
    memory.add_argument("--repeat", type=int, default=1, help="runs of each tap per size")
    memory.add_argument(
        "--rss-trace", type=Path, help="directory for each run's resident-size rises"
    )
    args = parser.parse_args()
    if args.what == "state":
        measure_state(args.projects, args.tasks_per_project, args.changed)
    else:
        measure_memory(
            args.tasks,
            args.tasks_per_project,
            args.baseline,
            args.trace,
            max(1, args.repeat),
            args.rss_trace,
        )


if __name__ == "__main__":
    main()
