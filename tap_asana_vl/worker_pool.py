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

Cost, measured on a 2-core machine with tasks that do nothing: 27 µs a task at 100
tasks a thread (172 µs at one task a thread: a new thread is ~0.15 ms), against 13 µs
with ``ThreadPoolExecutor``; a run's tasks are requests of milliseconds.

Otherwise it is ``concurrent.futures.ThreadPoolExecutor``: up to ``max_workers``
threads, started as work comes while none is idle; ``map`` comes from ``Executor``;
``shutdown(cancel_futures=True)`` cancels what has not started. The threads are daemon
threads (``PoolThread``), so that a pool nobody shut down never keeps a process alive;
the tap's ``main`` gives those still under way a grace period at exit, as to any other
thread.
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
        # Reentrant: a signal handler that stops the run (shutdown) may interrupt the main
        # thread while it holds the lock in ``submit``.
        self._lock = threading.RLock()
        #: Counts kept under the lock: work queued, not taken; threads waiting for work.
        self._queued = 0
        self._idle = 0
        self._threads: set[PoolThread] = set()
        #: Threads that retired and may not have ended yet (for ``shutdown(wait=True)``).
        self._retired: list[PoolThread] = []
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
                others = {*self._threads, *self._retired} - {threading.current_thread()}
                others = {thread for thread in others if thread.is_alive()}
            if not others:
                break
            next(iter(others)).join()

    def _start_thread_if_needed(self, *, in_place_of: int = 0) -> None:
        """Under the lock: a thread for queued work no idle thread will take.

        ``in_place_of``: threads counted in ``_threads`` that are about to leave.
        Raises what ``Thread.start`` raises (the system allows no more threads).
        """
        if self._queued > self._idle and len(self._threads) - in_place_of < self.max_workers:
            thread = PoolThread(target=self._run, name=f"{self._prefix}_{next(self._numbers)}")
            thread.start()  # first: a thread that failed to start is not counted
            self._threads.add(thread)
            self.threads_started += 1

    def _run(self) -> None:
        """A thread's life: take work until ``tasks_per_thread`` are done or a stop."""
        done = 0
        while True:
            if done >= self.tasks_per_thread and self._retire():
                return
            with self._lock:
                self._idle += 1
            work = self._work.get()
            with self._lock:
                self._idle -= 1
                if work is None:
                    self._leave()
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
            done += 1

    def _retire(self) -> bool:
        """Leave the pool, a successor started if work waits; False: the thread stays.

        (After a shutdown too: that work was queued before it, and the "stop" this
        thread leaves unread is its successor's.) A successor that cannot be started
        (the system allows no more threads) must not leave the work without a thread.
        """
        with self._lock:
            try:
                self._start_thread_if_needed(in_place_of=1)
            except RuntimeError:
                return False
            self._leave()
            return True

    def _leave(self) -> None:
        """Under the lock: this thread is no longer the pool's (it is about to end)."""
        current = t.cast("PoolThread", threading.current_thread())
        self._threads.discard(current)
        self._retired = [thread for thread in self._retired if thread.is_alive()]
        self._retired.append(current)


class PoolThread(threading.Thread):
    """A thread of a ``RecyclingThreadPool`` (daemon: see the module's docstring)."""

    def __init__(self, *, target: Callable[[], None], name: str) -> None:
        """A daemon thread running ``target``."""
        super().__init__(target=target, name=name, daemon=True)
