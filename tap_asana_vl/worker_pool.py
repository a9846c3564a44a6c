"""A thread pool whose threads retire after a number of tasks, so that memory stays flat.

Why: glibc gives each thread a cache of freed small buffers (its *tcache*: up to 7 a
size, for sizes up to ~1 KB) that only that thread reuses and that counts as in use.
Each of the run's ~50 pool threads frees such buffers all the time (strings and tables
of the pages it decodes), and its cache fills the longer it works: sampled during a
30,000-task full sync, glibc's bytes in use crept up by 2.3 MiB from the first
seconds to the end while Python's blocks in use did not grow, and with the cache off
(``GLIBC_TUNABLES=glibc.malloc.tcache_count=0``, an environment variable read when a
process starts, so not something a run can set) they stayed level and the peak RSS
fell from 86.3 to 83.0 MiB. A thread's cache goes back to the heap (and from there,
with ``heap.py``'s trims, to the system) when the thread ends. So a thread here ends
after ``tasks_per_thread`` tasks and a fresh one takes its place if there is work: what
the caches hold is bounded by what that many tasks leave, however long the run.

A new thread costs ~0.1 ms; at 100 tasks per thread that is ~1 ms in 100 requests.

Otherwise it is ``concurrent.futures.ThreadPoolExecutor``: up to ``max_workers``
threads, started as work comes while none is idle; ``map`` comes from ``Executor``;
``shutdown(cancel_futures=True)`` cancels what has not started. The threads are daemon
threads: a run that ends or fails shuts its pools down and never waits for a request
still under way whose answer nobody would read.
"""

from __future__ import annotations

import itertools
import queue
import threading
import typing as t
from concurrent.futures import Executor, Future

if t.TYPE_CHECKING:
    from collections.abc import Callable

T = t.TypeVar("T")

#: Tasks a thread runs before it ends (a page's worth of tasks' stories).
TASKS_PER_THREAD = 100

_Work = tuple["Future[t.Any]", "Callable[..., t.Any]", tuple[t.Any, ...], dict[str, t.Any]]


class RecyclingThreadPool(Executor):
    """An executor of up to ``max_workers`` threads, each ending after ``tasks_per_thread``."""

    def __init__(
        self,
        max_workers: int,
        *,
        thread_name_prefix: str,
        tasks_per_thread: int = TASKS_PER_THREAD,
    ) -> None:
        """Start no thread yet: they start as work is submitted."""
        if max_workers < 1 or tasks_per_thread < 1:
            msg = "max_workers and tasks_per_thread must be at least 1"
            raise ValueError(msg)
        self.max_workers = max_workers
        self.tasks_per_thread = tasks_per_thread
        self._prefix = thread_name_prefix
        self._numbers = itertools.count()
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        #: Counts kept under the lock: work queued, not taken; threads waiting for work.
        self._queued = 0
        self._idle = 0
        self._threads: set[threading.Thread] = set()
        self._shut_down = False
        #: Threads started in all (a retired thread's successor counts again).
        self.threads_started = 0

    def submit(self, fn: Callable[..., T], /, *args: t.Any, **kwargs: t.Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on a thread of the pool; its future."""
        future: Future[T] = Future()
        with self._lock:
            if self._shut_down:
                msg = "cannot schedule new futures after shutdown"
                raise RuntimeError(msg)
            self._work.put((future, fn, args, kwargs))
            self._queued += 1
            self._start_thread_if_needed()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more work; ``cancel_futures``: cancel what has not started; ``wait``: join."""
        with self._lock:
            self._shut_down = True
            if cancel_futures:
                while True:
                    try:
                        work = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if work is not None:
                        self._queued -= 1
                        work[0].cancel()
            for _ in self._threads:
                self._work.put(None)  # one "stop" for each thread, after the work queued
        while wait:
            with self._lock:  # threads end one by one, and a retiring one has a successor
                others = self._threads - {threading.current_thread()}
            if not others:
                break
            next(iter(others)).join()

    def _start_thread_if_needed(self) -> None:
        """Under the lock: a thread for queued work no idle thread will take."""
        if self._queued > self._idle and len(self._threads) < self.max_workers:
            thread = threading.Thread(
                target=self._run,
                name=f"{self._prefix}_{next(self._numbers)}",
                daemon=True,
            )
            self._threads.add(thread)
            self.threads_started += 1
            thread.start()

    def _run(self) -> None:
        """A thread's life: take work until ``tasks_per_thread`` are done or a stop."""
        for _ in range(self.tasks_per_thread):
            with self._lock:
                self._idle += 1
            work = self._work.get()
            with self._lock:
                self._idle -= 1
                if work is None:
                    self._threads.discard(threading.current_thread())
                    return
                self._queued -= 1
            future, fn, args, kwargs = work
            del work
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # handed to whoever reads the future
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                    del result
            # Nothing of this task stays referenced while the thread waits for the next.
            del future, fn, args, kwargs
        with self._lock:
            self._threads.discard(threading.current_thread())
            # A successor if work is waiting (after a shutdown too: it was queued before,
            # and the "stop" this thread leaves unread is its successor's).
            self._start_thread_if_needed()
