"""A listing run's search for tasks in no project, read while the projects are listed.

A run that lists every project (the first run, a reconcile pass, ``--full-refresh``)
still has to find the tasks no project lists (a person's My Tasks,
``include_tasks_without_projects``). On paid plans that is the workspace's task search
from the search bookmark (from ``start_date``, i.e. every top-level task, on a first
run or a reconcile pass): n tasks cost n / 100 search requests, which Asana limits to
60 per minute. Read after the listings (in the workspace's sweep) that adds n / 6000
minutes to the run; read meanwhile, the run takes about the longer of the two.

So the search starts when the workspace's plan is decided (its first project) on a
thread of its own, paced by the run's search pacer as before, and keeps only the
**candidates**: results in no project (few; every other result is dropped as it is
read). The sweep then emits them where it used to search, and falls back exactly as
before on what the search raised there (402: each user's assigned tasks; a tie it
cannot page; a 403/404 part-way). Memory stays bounded: at most ``BUFFERED`` candidates
wait; beyond that the search waits for the sweep (it is slower then, never bigger).
Its own thread, not the run's pool: a search that waits for the sweep must never hold
a worker the listings (and their prefetches) need.

Why the result is what the sequential run wrote:

- **Bookmarks.** The search's start (Asana's clock just before its first request) is
  earlier than before, and ``covered_until`` of it bounds the search bookmark
  (changed_tasks.py: the oldest of the listing starts and that), so the next run's
  search starts no later than any change made during this run.
- **A task moved during the run.** Search and listings read at different instants in
  both designs; only which moves fall in between differs. Moved *into* a project after
  the search saw it in none: its project's listing, if later, delivers it, and the
  candidate is then a repeat of an older copy (``may_come_again`` remembers listed
  tasks that are waiting candidates; the dedupe keeps the newer ``modified_at``,
  dropping the candidate when equal). Moved *out of* a project after the search saw
  it in one and before that project's listing: not written by this run (as a task moved
  into a project between its listing and the old sweep's search was not); the next run
  finds it, by its new ``modified_at`` (after the search bookmark, see above) or, where
  a move does not change ``modified_at``, by the project's ``removed`` event (the events
  token is taken before any listing or search).
- **A failing run.** The thread stops at its next wait once the run stops
  (``RunControl``: every pause and request checks it) or once its consumer leaves
  (a sweep that fails part-way cancels it); a candidate waiting in the buffer keeps no
  thread alive (daemon thread, queue waits are cancellable).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import typing as t

from tap_asana_vl.run_control import StoppedError
from tap_asana_vl.streams.search import SearchProgress, TaskSearch

if t.TYPE_CHECKING:
    import datetime
    from collections.abc import Callable, Iterator

    from tap_asana_vl.streams.base import AsanaStream

#: Most candidates waiting for the sweep (each a task record): memory does not grow
#: with the workspace; past this the search waits for the sweep to take them.
BUFFERED = 1_000
#: How often a wait wakes to check whether the run (or the consumer) stopped.
WAKE_SECONDS = 0.25

#: What the search thread hands over: a candidate, the end (None, None), or its error.
_Item = tuple["dict[str, t.Any] | None", "BaseException | None"]


class UnplacedSearch:
    """One workspace's search for tasks in no project, read ahead on its own thread."""

    def __init__(
        self,
        stream: AsanaStream,
        workspace: str,
        after: str | None,
        keep: Callable[[dict[str, t.Any]], bool],
    ) -> None:
        """Start searching ``workspace`` for tasks modified after ``after`` (None: all).

        Only results ``keep`` accepts (tasks in no project) are held for the sweep.
        """
        self.workspace = workspace
        #: Asana's time just before the first search request (what a complete read covers).
        self.started: datetime.datetime = stream.services.server_clock.latest()
        self._run_control = stream.services.transport.run_control
        progress = SearchProgress(None)
        self._finder = TaskSearch(stream, workspace, is_subtask=False, progress=progress)
        self._after = after
        self._keep = keep
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=BUFFERED)
        self._lock = threading.Lock()
        #: Candidates read but not yet taken: gid -> ``modified_at``.
        self._waiting: dict[str, str | None] = {}
        self._cancelled = threading.Event()
        self._thread = threading.Thread(
            target=self._search, name=f"asana-search-{workspace}", daemon=True
        )
        self._thread.start()

    @property
    def requests(self) -> int:
        """Search requests sent so far (for tests)."""
        return self._finder.requests

    def waiting(self, gid: str) -> bool:
        """Whether task ``gid`` is a candidate the sweep has not taken yet."""
        with self._lock:
            return gid in self._waiting

    def candidates(self) -> Iterator[dict[str, t.Any]]:
        """The tasks in no project, in search order; then what the search raised, if any.

        Raises what ``TaskSearch.changed`` raised (``SearchUnavailableError``,
        ``SearchTiesError``, ``SkippedObjectError``, a fatal error) after the candidates
        read before it. Leaving early (or failing) stops the search.
        """
        try:
            while True:
                record, error = self._take()
                if error is not None:
                    raise error
                if record is None:
                    return
                with self._lock:
                    self._waiting.pop(str(record.get("gid")), None)
                yield record
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop the search at its next wait (nobody will take its results)."""
        self._cancelled.set()

    def _take(self) -> _Item:
        while True:
            try:
                return self._queue.get(timeout=WAKE_SECONDS)
            except queue.Empty:
                self._run_control.raise_if_stopping()
                if not self._thread.is_alive() and self._queue.empty():
                    # Its thread stopped without a last word (cancelled): nothing more.
                    raise StoppedError from None

    def _search(self) -> None:
        try:
            with self._run_control.cancellable(self._cancelled):
                for record in self._finder.changed(self._after):
                    if not self._keep(record):
                        continue  # a project's listing delivers it
                    with self._lock:
                        self._waiting[str(record.get("gid"))] = record.get("modified_at")
                    self._put((record, None))
            self._put((None, None))
        except StoppedError:
            return  # the run or the consumer stopped: nobody waits for more
        except BaseException as exc:  # handed to the consumer, raised there
            # Stopping (or the breaker tripped) meanwhile: the consumer learns it from
            # the run control itself; this thread just ends.
            with contextlib.suppress(BaseException):
                self._put((None, exc))

    def _put(self, item: _Item) -> None:
        """Hand ``item`` over, waiting while the buffer is full (raises once stopped)."""
        while True:
            self._run_control.raise_if_stopping(self._cancelled)
            try:
                self._queue.put(item, timeout=WAKE_SECONDS)
            except queue.Full:
                continue
            return
