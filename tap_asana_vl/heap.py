"""Keep the run's resident memory flat however long it runs (glibc's malloc settings).

Why: pages of tasks are read and decoded on the pool's threads (a page of 100 tasks is
~0.7 MB of JSON and ~2 MB of objects). With glibc's defaults the resident size crept up
with the length of a full sync, about 0.3 MiB per 1,000 tasks, although what the run
holds did not grow: ``mallinfo2`` showed the heap's *free* bytes growing (15 to 36 MiB
from 30,000 to 100,000 tasks) while the bytes in use and Python's blocks stayed level.
Three glibc defaults make those holes:

- a freed large buffer raises the size from which buffers are mapped on their own
  (``M_MMAP_THRESHOLD`` adapts up to 32 MB), so from the first response body on, every
  body is carved out of a heap and leaves a hole there when freed;
- each of the ~50 pool threads may get an arena of its own (up to 8 per core), each
  keeping its own holes;
- ``free`` gives pages back only from the top of a heap.

``start`` fixes the threshold at 128 KiB (glibc's initial value: a body is mapped and
unmapped whole) and allows 2 arenas, before the pool's threads allocate; between
batches, at most once a second, ``batch_written`` calls ``malloc_trim(0)``, which gives
back the free pages inside every arena (a few milliseconds). One more default
keeps freed memory counted as in use: each thread's cache of freed small buffers,
which no call can empty from another thread; the pool's threads end after a number of
tasks instead (``worker_pool.py``), which frees theirs. Measured with
``benchmarks/state_and_memory.py memory``; the figures are in the README.

Elsewhere than glibc (macOS, musl) there are no such calls and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Seconds between two trims at least: a trim walks every arena's free chunks.
TRIM_EVERY_SECONDS = 1.0
#: glibc's ``mallopt`` parameters (malloc.h) and the values a run sets.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 128 * 1024
ARENAS = 2


def glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (it has ``malloc_trim`` and ``mallopt``), else None."""
    for libc in _c_libraries():
        if libc is not None and all(hasattr(libc, f) for f in ("malloc_trim", "mallopt")):
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
            libc.malloc_trim.restype = ctypes.c_int
            libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.mallopt.restype = ctypes.c_int
            return libc
    return None


def _c_libraries() -> Iterator[ctypes.CDLL | None]:
    """Where the C library may be, the interpreter's own symbols first (None: not there).

    ``find_library`` is asked last, only if needed: it runs ``ldconfig`` or a compiler,
    which slim images lack.
    """
    yield _load(None)
    yield _load("libc.so.6")
    yield _load(ctypes.util.find_library("c"))


def _load(name: str | None) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


class HeapTrimmer:
    """Sets glibc's malloc up for the run and trims its heaps, at most every ``every_seconds``."""

    def __init__(
        self,
        *,
        every_seconds: float = TRIM_EVERY_SECONDS,
        libc: ctypes.CDLL | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Use ``libc`` (default: the C library, if glibc); ``clock`` is injectable for tests."""
        self._libc = libc if libc is not None else glibc()
        self._every = every_seconds
        self._clock = clock
        self._last = clock()

    def start(self) -> None:
        """Before the run's threads allocate: big buffers mapped whole, 2 arenas."""
        if self._libc is not None:
            self._libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            self._libc.mallopt(M_ARENA_MAX, ARENAS)

    def batch_written(self) -> None:
        """A batch of records is written and let go: trim if the last trim is old enough."""
        if self._libc is None:
            return
        now = self._clock()
        if now - self._last >= self._every:
            self._last = now
            self._libc.malloc_trim(0)
