"""The run's thread pools: threads retire after a number of tasks (see worker_pool.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tap_asana_vl import heap, tap, worker_pool
from tap_asana_vl.worker_pool import RecyclingThreadPool
from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import FAST, catalog_selecting, run_tap


def _thread_name() -> str:
    time.sleep(0.001)
    return threading.current_thread().name


def test_each_thread_runs_at_most_tasks_per_thread_then_a_successor_takes_over():
    pool = RecyclingThreadPool(2, thread_name_prefix="t", tasks_per_thread=3)
    futures = [pool.submit(_thread_name) for _ in range(20)]
    names = [future.result(timeout=5) for future in futures]  # none left without a thread
    pool.shutdown()
    per_thread = {name: names.count(name) for name in names}
    assert all(count <= 3 for count in per_thread.values())
    assert len(per_thread) >= 7  # 20 tasks, 3 each at most
    assert pool.threads_started == len(per_thread)


def test_results_exceptions_and_map_in_order():
    pool = RecyclingThreadPool(3, thread_name_prefix="t", tasks_per_thread=2)

    def fail() -> None:
        raise KeyError("boom")

    assert list(pool.map(lambda n: n * n, range(10))) == [n * n for n in range(10)]
    with pytest.raises(KeyError, match="boom"):
        pool.submit(fail).result(timeout=5)
    assert pool.submit(lambda: "after a failure").result(timeout=5) == "after a failure"
    pool.shutdown()


def test_never_more_threads_at_once_than_max_workers():
    pool = RecyclingThreadPool(3, thread_name_prefix="t", tasks_per_thread=2)
    lock = threading.Lock()
    running = most = 0

    def task() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.005)
        with lock:
            running -= 1

    futures = [pool.submit(task) for _ in range(30)]
    for future in futures:
        future.result(timeout=10)
    pool.shutdown()
    assert most == 3


def test_an_idle_thread_takes_new_work_before_another_starts():
    pool = RecyclingThreadPool(4, thread_name_prefix="t", tasks_per_thread=100)
    for _ in range(10):
        pool.submit(_thread_name).result(timeout=5)  # one at a time
        time.sleep(0.05)  # a result is out just before its thread is idle again
    pool.shutdown()
    assert pool.threads_started <= 2  # 10 without reuse


def test_work_is_not_left_without_a_thread_when_one_cannot_start(monkeypatch):
    pool = RecyclingThreadPool(1, thread_name_prefix="t", tasks_per_thread=1)
    assert pool.submit(_thread_name).result(timeout=5)
    start = worker_pool.PoolThread.start
    refused = []

    def start_once_refused(thread: threading.Thread) -> None:
        if not refused:
            refused.append(thread.name)
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(worker_pool.PoolThread, "start", start_once_refused)
    with pytest.raises(RuntimeError, match="start new thread"):
        pool.submit(_thread_name)  # queued, but no thread for it yet
    later = pool.submit(_thread_name)  # a thread starts: it runs both
    assert later.result(timeout=5)
    pool.shutdown(wait=True)
    assert refused


def test_a_retiring_thread_that_cannot_be_replaced_stays():
    pool = RecyclingThreadPool(1, thread_name_prefix="t", tasks_per_thread=1)
    release = threading.Event()
    first = pool.submit(release.wait, 5)
    queued = [pool.submit(_thread_name) for _ in range(3)]
    refusals = 0

    def refuse(thread: threading.Thread) -> None:
        nonlocal refusals
        refusals += 1
        raise RuntimeError("can't start new thread")

    worker_pool.PoolThread.start = refuse  # type: ignore[method-assign]
    try:
        release.set()
        names = {future.result(timeout=5) for future in queued}
    finally:
        del worker_pool.PoolThread.start  # threading.Thread's again
    assert first.result(timeout=5)
    assert len(names) == 1  # the first thread ran them all
    assert refusals >= 3
    pool.shutdown(wait=True)


def test_a_signal_handler_may_shut_the_pool_down_while_submit_holds_its_lock():
    pool = RecyclingThreadPool(1, thread_name_prefix="t")
    stopped = threading.Event()

    def stop_on_signal() -> None:  # as tap.stop_work, run on the main thread
        pool.shutdown(wait=False, cancel_futures=True)
        stopped.set()

    def signal_inside_submit() -> None:
        # Where a signal can land: between two bytecodes inside submit's locked block.
        with pool._lock:
            stop_on_signal()

    handler = threading.Thread(target=signal_inside_submit, daemon=True)
    handler.start()
    handler.join(5)
    assert not handler.is_alive(), "deadlocked"
    assert stopped.is_set()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(_thread_name)


def test_shutdown_runs_the_queued_work_even_when_its_threads_retire_meanwhile():
    pool = RecyclingThreadPool(1, thread_name_prefix="t", tasks_per_thread=1)
    futures = [pool.submit(_thread_name) for _ in range(5)]
    pool.shutdown(wait=True)
    assert all(future.done() and not future.cancelled() for future in futures)
    assert len({future.result() for future in futures}) == 5
    assert not [t for t in threading.enumerate() if t.name.startswith("t_")]


def test_shutdown_with_cancel_futures_cancels_what_has_not_started():
    pool = RecyclingThreadPool(1, thread_name_prefix="t")
    release = threading.Event()
    started = threading.Event()

    def blocking() -> str:
        started.set()
        release.wait(5)
        return "done"

    first = pool.submit(blocking)
    queued = [pool.submit(_thread_name) for _ in range(3)]
    assert started.wait(5)
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert first.result(timeout=5) == "done"
    assert all(future.cancelled() for future in queued)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(_thread_name)


# Eight threads each free 7 buffers of every size glibc's per-thread cache (tcache)
# keeps (Python hands objects above 512 bytes to malloc). Those stay "in use" for as
# long as their thread lives: with a ThreadPoolExecutor, for the whole run.
_THREAD_CACHES = """
import ctypes, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from tap_asana_vl.worker_pool import RecyclingThreadPool

class MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
barrier = threading.Barrier(8)

def fill_cache():
    barrier.wait()  # all eight threads at work
    for size in range(520, 1040, 16):
        buffers = [bytearray(size) for _ in range(7)]
        del buffers

if sys.argv[1] == "recycling":
    pool = RecyclingThreadPool(8, thread_name_prefix="w", tasks_per_thread=1)
else:
    pool = ThreadPoolExecutor(max_workers=8)
before = libc.mallinfo2().uordblks
for future in [pool.submit(fill_cache) for _ in range(8)]:
    future.result()
deadline = time.monotonic() + 5
while threading.active_count() > 1 and sys.argv[1] == "recycling":
    assert time.monotonic() < deadline
    time.sleep(0.01)
print(libc.mallinfo2().uordblks - before)
"""


@pytest.mark.skipif(heap.glibc() is None, reason="glibc only (CI and the image are Debian)")
def test_retired_threads_give_their_malloc_caches_back():
    def kept_in_use(pool: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _THREAD_CACHES, pool],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(run.stdout)

    # 8 threads x 33 sizes x 7 buffers of ~780 bytes: ~1.4 MB kept by live threads.
    assert kept_in_use("executor") > 1_000_000
    assert kept_in_use("recycling") < 300_000


def test_a_sync_replaces_its_pool_threads_as_they_retire(monkeypatch):
    pools: list[RecyclingThreadPool] = []

    def recorded(max_workers: int, *, thread_name_prefix: str) -> RecyclingThreadPool:
        pools.append(
            RecyclingThreadPool(
                max_workers, thread_name_prefix=thread_name_prefix, tasks_per_thread=2
            )
        )
        return pools[-1]

    monkeypatch.setattr(tap, "RecyclingThreadPool", recorded)
    dataset = build_dataset(seed=3, workspaces=1, projects_per_workspace=3, tasks_per_project=8)
    with FakeAsana(dataset) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        result = run_tap(
            config, catalog=catalog_selecting(config, {"projects", "tasks", "stories"})
        )
    assert len(result.records["tasks"]) == len(dataset.tasks)
    assert len(result.records["stories"]) == len(dataset.stories)
    # Each task's stories are a task of the pool: 24 tasks need 12 threads at least.
    assert sum(pool.threads_started for pool in pools) >= 12


# A request still under way when the run ends, on a pool thread (a daemon thread).
_UNDER_WAY_AT_EXIT = """
import threading, time
from tap_asana_vl import tap
from tap_asana_vl.worker_pool import RecyclingThreadPool

under_way = threading.Event()

def answered():
    under_way.set()
    time.sleep(0.5)
    print("answered", flush=True)

def cli():
    pool = RecyclingThreadPool(1, thread_name_prefix="w")
    pool.submit(answered)
    under_way.wait(5)
    pool.shutdown(wait=False, cancel_futures=True)  # as stop_work

tap.TapAsanaVl.cli = staticmethod(cli)
tap.main()
"""


def test_main_gives_a_pool_thread_under_way_the_exit_grace():
    run = subprocess.run(
        [sys.executable, "-c", _UNDER_WAY_AT_EXIT], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["answered"]
