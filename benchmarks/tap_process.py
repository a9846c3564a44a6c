"""Run the real tap (``python -m tap_asana_vl``) as a subprocess, for the benchmarks.

The tap runs under a tiny wrapper that reports, at exit, its own peak RSS (VmHWM:
rusage from wait4 would include the benchmark's memory, copied into the child by fork
before exec) and the states it offered (how many, seconds spent deciding). Its stdout
is handed over line by line as it comes (the SDK writer's STATE output can be GBs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parent.parent

#: Modes: "bounded" (the tap as it is), "sdk-state-writer" (the SDK's own STATE writer),
#: "every-offer" (every stream offers the state after its sync, as before tables made
#: from a task's record stopped offering one).
WRAPPER = """
import atexit, os, runpy, sys, time
if os.environ.get("TAP_BENCH_TRACEMALLOC"):
    import tracemalloc
    tracemalloc.start(int(os.environ.get("TAP_BENCH_TRACE_FRAMES", "1")))
    import threading
    near_peak = [0, None]

    def watch_peak():  # a snapshot near the traced peak, once a second at most
        while True:
            time.sleep(1.0)
            current = tracemalloc.get_traced_memory()[0]
            if current > near_peak[0] * 1.02:
                near_peak[:] = [current, tracemalloc.take_snapshot()]

    threading.Thread(target=watch_peak, daemon=True).start()
if os.environ.get("TAP_BENCH_RSS_TRACE"):
    # Each time the resident size passes its highest yet (sampled every 5 ms): when,
    # how much, Python's blocks in use, and what every thread was doing then.
    import threading, traceback
    rss_rises = []

    def resident_kib():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        libc = None

    def c_heap():  # glibc's heap: in use, free inside it, mapped on their own (MiB)
        if libc is None:
            return ""
        info = libc.mallinfo2()
        return (
            f"C used {info.uordblks / 2**20:5.1f} free {info.fordblks / 2**20:5.1f} "
            f"mapped {info.hblkhd / 2**20:5.1f}  "
        )

    def watch_rss():
        started, highest = time.monotonic(), 0
        while True:
            time.sleep(0.005)
            rss = resident_kib()
            if rss > highest:
                highest = rss
                doing = sorted(
                    f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_code.co_name}"
                    for tid, frame in sys._current_frames().items()
                    if tid != threading.get_ident()
                )
                rss_rises.append(
                    (time.monotonic() - started, rss, sys.getallocatedblocks(), c_heap(), doing)
                )

    threading.Thread(target=watch_rss, daemon=True).start()
import tap_asana_vl
if os.environ.get("TAP_BENCH_NO_SEARCH_PACING"):
    # Search's 60/min only adds wall time (minutes at 100k tasks), not memory.
    import tap_asana_vl.tap
    tap_asana_vl.tap.SEARCH_REQUESTS_PER_MINUTE = float("inf")
sys.stderr.write("TAP_SOURCE " + tap_asana_vl.__file__ + "\\n")
# The gid tables' arrays (by design, per gid), bytes: now, and the most, as sized after
# each growth (a table's old arrays live on beside the new ones during its rebuild).
gid_tables = [0, 0]
try:  # a baseline revision may predate the gid tables
    from tap_asana_vl import gid_table
except ImportError:
    gid_table = None
if gid_table is not None:
    allocate = gid_table.GidTable._allocate

    import threading
    gid_tables_lock = threading.Lock()  # tables grow on the pool's threads too

    def counted_allocate(table, bits):
        before = table.table_bytes if hasattr(table, "_keys") else 0
        allocate(table, bits)
        with gid_tables_lock:
            gid_tables[0] += table.table_bytes - before
            gid_tables[1] = max(gid_tables[1], gid_tables[0])

    gid_table.GidTable._allocate = counted_allocate
offers = [0, 0.0]
try:  # a baseline revision may predate the bounded STATE output
    from tap_asana_vl import sdk_adapter, state_output
except ImportError:
    state_output = None
if state_output is not None:
    offer = state_output.StateOutput.offer

    def timed_offer(output, state):
        started = time.perf_counter()
        try:
            return offer(output, state)
        finally:
            offers[0] += 1
            offers[1] += time.perf_counter() - started

    state_output.StateOutput.offer = timed_offer

def report():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                sys.stderr.write("PEAK_RSS_KIB " + line.split()[1] + "\\n")
    sys.stderr.write(f"STATE_OFFERS {offers[0]} {offers[1]:.3f}\\n")
    sys.stderr.write(f"GID_TABLES_PEAK_KIB {gid_tables[1] // 1024}\\n")
    if os.environ.get("TAP_BENCH_RSS_TRACE"):
        import collections
        with open(os.environ["TAP_BENCH_RSS_TRACE"], "w") as out:
            for at, rss, blocks, heap, doing in rss_rises:
                busy = collections.Counter(doing).most_common()
                out.write(
                    f"{at:8.2f}s {rss / 1024:7.1f} MiB {blocks:>9,} blocks  {heap}"
                    + ", ".join(f"{n}x {name}" if n > 1 else name for name, n in busy)
                    + "\\n"
                )
    if os.environ.get("TAP_BENCH_TRACEMALLOC"):
        current, peak = tracemalloc.get_traced_memory()
        snapshot = tracemalloc.take_snapshot()
        with open(os.environ["TAP_BENCH_TRACEMALLOC"], "w") as out:
            out.write(f"traced now {current / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB\\n")
            for stat in snapshot.statistics("lineno")[:40]:
                out.write(f"{stat}\\n")
            if near_peak[1] is not None:
                out.write(f"\\nnear the peak ({near_peak[0] / 2**20:.1f} MiB), minus the end:\\n")
                for stat in near_peak[1].compare_to(snapshot, "lineno")[:25]:
                    out.write(f"{stat}\\n")
            if tracemalloc.get_traceback_limit() > 1:  # where the biggest ones come from
                for stat in snapshot.statistics("traceback")[:15]:
                    out.write(f"\\n{stat.size / 1024:.0f} KiB in {stat.count} blocks:\\n")
                    out.write("\\n".join(stat.traceback.format(limit=8)) + "\\n")

atexit.register(report)
if sys.argv[1] == "sdk-state-writer":
    from tap_asana_vl.tap import TapAsanaVl
    TapAsanaVl.bounded_state_output = False
if sys.argv[1] == "every-offer":
    sdk_adapter.skip_state_offer = lambda stream: None
sys.argv = ["tap-asana-vl", *sys.argv[2:]]
runpy.run_module("tap_asana_vl", run_name="__main__")
"""


@dataclass
class TapProcess:
    """What one run of the tap reported about itself."""

    wall: float
    peak_rss_mib: float
    #: The most the gid tables' arrays took at once (what a run remembers by design).
    gid_tables_mib: float
    offers: int
    offer_seconds: float


def run_tap_process(
    name: str,
    config: dict,
    on_line: Callable[[bytes], None],
    *,
    catalog: dict | None = None,
    state: dict | None = None,
    mode: str = "bounded",
    tap_root: Path = REPO,
) -> TapProcess:
    """Run the tap whose package is under ``tap_root``; each stdout line to ``on_line``.

    Exits the benchmark (naming the run) if the tap fails or was imported from
    elsewhere than ``tap_root``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-c", WRAPPER, mode]
        for option, value in (("--config", config), ("--catalog", catalog), ("--state", state)):
            if value is not None:
                path = Path(tmp, option.strip("-") + ".json")
                path.write_text(json.dumps(value))
                args += [option, str(path)]
        # `python -c` puts the working directory first on sys.path: the tap imported is
        # the one under tap_root (checked below).
        env = {**os.environ, "PYTHONPATH": str(tap_root)}
        err_path = Path(tmp, "err.log")
        started = time.monotonic()
        with err_path.open("w") as err:
            proc = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=tap_root,
                env=env,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                on_line(line)
            proc.wait()
        wall = time.monotonic() - started
        log = err_path.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{name}: the tap failed ({proc.returncode}):\n{log[-3000:]}")
    source = Path(log.split("TAP_SOURCE ", 1)[1].split("\n", 1)[0])
    if not source.is_relative_to(tap_root):
        raise SystemExit(f"{name}: ran the tap from {source}, not from {tap_root}")
    offers, offer_seconds = log.rsplit("STATE_OFFERS ", 1)[1].split()[:2]
    return TapProcess(
        wall=wall,
        peak_rss_mib=int(log.rsplit("PEAK_RSS_KIB ", 1)[1].split()[0]) / 1024,
        gid_tables_mib=int(log.rsplit("GID_TABLES_PEAK_KIB ", 1)[1].split()[0]) / 1024,
        offers=int(offers),
        offer_seconds=float(offer_seconds),
    )
