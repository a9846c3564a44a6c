"""Memory the run has freed goes back to the system between batches (see heap.py)."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading

import pytest

from tap_asana_vl import heap, tap
from tap_asana_vl.heap import HeapTrimmer
from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import FAST, catalog_selecting, run_tap


class _Libc:
    """Records what the trimmer asks of glibc."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", (pad,)))
        return 1

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append(("mallopt", (parameter, value)))
        return 1


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_trims_at_most_once_per_interval():
    clock, libc = _Clock(), _Libc()
    trimmer = HeapTrimmer(every_seconds=1.0, libc=libc, clock=clock)
    trimmer.batch_written()  # the run has just started
    clock.now += 0.6
    trimmer.batch_written()
    assert libc.calls == []
    clock.now += 0.5
    trimmer.batch_written()
    trimmer.batch_written()
    trim = ("malloc_trim", (0,))  # 0: keep no padding at the top of the heap
    assert libc.calls == [trim]
    clock.now += 1.0
    trimmer.batch_written()
    assert libc.calls == [trim, trim]


def test_start_maps_big_buffers_whole_and_allows_two_arenas():
    libc = _Libc()
    HeapTrimmer(libc=libc).start()
    assert libc.calls == [
        ("mallopt", (heap.M_MMAP_THRESHOLD, 128 * 1024)),
        ("mallopt", (heap.M_ARENA_MAX, 2)),
    ]


def test_without_malloc_trim_nothing_is_called(monkeypatch):
    monkeypatch.setattr(heap, "glibc", lambda: None)
    clock = _Clock()
    trimmer = HeapTrimmer(every_seconds=0.0, clock=clock)
    trimmer.start()
    clock.now += 5
    trimmer.batch_written()  # no error: macOS and musl have no malloc_trim


# 400 buffers of 100 kB, each followed by a small one that stays (above Python's
# small-object size, so glibc's heap holds both): once the big ones are freed, their
# 40 MB are holes in the middle of the heap that free() cannot give back. This is how
# the run's resident size crept up; only malloc_trim returns those pages.
_FRAGMENTED_HEAP = """
from tap_asana_vl.heap import glibc

def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

libc = glibc()
buffers, kept = [], []
for _ in range(400):
    buffers.append(bytearray(100_000))
    kept.append(bytearray(1_000))
allocated = rss_kib()
del buffers
freed = rss_kib()
libc.malloc_trim(0)
print(allocated - freed, freed - rss_kib())
"""


@pytest.mark.skipif(heap.glibc() is None, reason="glibc only (CI and the image are Debian)")
def test_glibc_trim_gives_freed_pages_in_the_middle_of_the_heap_back():
    released = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED_HEAP], capture_output=True, text=True, check=True
    )
    given_back_by_free, given_back_by_trim = map(int, released.stdout.split())  # KiB
    assert given_back_by_free < 5_000
    assert given_back_by_trim > 30_000


def test_a_sync_sets_malloc_up_first_then_trims_on_the_main_thread_between_batches(
    monkeypatch,
):
    calls: list[tuple[str, str]] = []

    class Libc(_Libc):
        def malloc_trim(self, pad: int) -> int:
            calls.append(("malloc_trim", threading.current_thread().name))
            return 1

        def mallopt(self, parameter: int, value: int) -> int:
            # Before any thread of the run: only the main thread and the fake's exist.
            calls.append(("mallopt", str(threading.active_count())))
            return 1

    def trimmer() -> HeapTrimmer:
        return HeapTrimmer(every_seconds=0.0, libc=Libc())

    monkeypatch.setattr(tap, "HeapTrimmer", trimmer)
    dataset = build_dataset(seed=3, workspaces=1, projects_per_workspace=3, tasks_per_project=4)
    with FakeAsana(dataset) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        threads_before = threading.active_count()
        result = run_tap(config, catalog=catalog_selecting(config, {"projects", "tasks"}))
    assert len(result.records["tasks"]) >= 12
    assert [name for name, _ in calls[:2]] == ["mallopt", "mallopt"]
    assert calls[0][1] == calls[1][1] == str(threads_before)
    trims = calls[2:]
    # A batch per project's tasks at least, plus the workspaces' and projects' own.
    assert len(trims) >= 3
    assert set(trims) == {("malloc_trim", threading.main_thread().name)}


_BODY_PEAK_SCRIPT = """
import sys, tracemalloc
from tap_asana_vl.session import new_session
url = sys.argv[1]
session = new_session(url, pool_size=1)
tracemalloc.start()
response = session.get(url, timeout=30)
size = len(response.content)
print(size, tracemalloc.get_traced_memory()[1] / size)
"""


def test_a_body_read_in_chunks_is_held_once_not_twice():
    """The adapter reads a body a chunk at a time (session.py): a 4 MB page must not
    exist twice over (its chunks and their join) while it is read."""
    body = b'{"data": [' + b",".join(b'{"gid": "%d"}' % n for n in range(300_000)) + b"]}"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for start in range(0, len(body), 16 * 1024):  # as a network delivers it
                self.wfile.write(body[start : start + 16 * 1024])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/page"
        result = subprocess.run(
            [sys.executable, "-c", _BODY_PEAK_SCRIPT, url],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        server.shutdown()
        server.server_close()
    size, peak_per_byte = result.stdout.split()
    assert int(size) == len(body)
    # Held once, grown in place (bytearray: ~1.1-1.25x); chunks and their join: 2x.
    assert float(peak_per_byte) < 1.5
