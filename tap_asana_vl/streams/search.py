"""Asana's workspace task search, paged by ``modified_at``: what changed since a bookmark.

``GET /workspaces/{gid}/tasks/search`` (paid plans; 402 elsewhere) returns at most 100
tasks and has no offset. Sorted by ``modified_at`` ascending, it is paged by moving
``modified_at.after`` up to the last result (minus 1 ms, so ties at that instant come
back and are skipped as seen); a full page of one single instant (a bulk edit) is read
on its own, paged by ``created_at``; if even that cannot move, ``SearchTiesError``
tells the caller to fall back to listings.

Used by the tasks stream (``is_subtask=false``: changed top-level tasks) and the
subtasks stream (``is_subtask=true``). Asana limits search to 60 requests per minute
per token on top of the general quota: every search request waits for a slot of the
run's search pacer (``RunServices.search_pacer``).

Search lags edits (Asana's docs: 10-60 s, more during incidents): a bookmark never
passes "now - ``SEARCH_INDEX_LAG_MINUTES``" (see ``covered_until``).
"""

from __future__ import annotations

import typing as t

from tap_asana_vl import sdk_adapter
from tap_asana_vl.errors import ScopeMissingError, SkippedObjectError
from tap_asana_vl.timestamps import (
    format_timestamp,
    minutes_before,
    parse_timestamp,
    shift_ms,
)

if t.TYPE_CHECKING:
    import datetime
    from collections.abc import Iterator, Mapping

    from tap_asana_vl.streams.base import AsanaStream

# How far behind edits Asana's search index may be (its docs: 10-60 s, more during
# incidents).
SEARCH_INDEX_LAG_MINUTES = 10
#: Search returns at most this many tasks per request, with no offset.
SEARCH_PAGE = 100
#: Asana's own limit for search requests, per token (its docs: rate limits).
SEARCH_REQUESTS_PER_MINUTE = 60.0
#: Key of a stream's search bookmarks (workspace gid -> timestamp) in its state entry.
SEARCH_STATE_KEY = "search_bookmarks"
#: Key of what its searches delivered inside the overlap window (workspace gid ->
#: {task gid: modified_at}; see ``OverlapMemory``).
OVERLAP_STATE_KEY = "search_overlap"
#: Most tasks remembered per workspace: a bulk edit of more inside the window is not
#: remembered at all (the next run delivers them again, which is only a cost), so the
#: state stays small whatever an automation touches.
OVERLAP_MEMORY_LIMIT = 10_000


def search_bookmarks(stream: AsanaStream) -> dict[str, str]:
    """``stream``'s search bookmarks, workspace gid -> timestamp (writable)."""
    return sdk_adapter.own_map(stream, SEARCH_STATE_KEY)


class OverlapMemory:
    """What a workspace's search delivered inside its overlap window, kept across runs.

    The search bookmark stays ``SEARCH_INDEX_LAG_MINUTES`` behind Asana's clock, so the
    next run's search returns every task modified in those minutes again. Their gid and
    ``modified_at`` are kept in state (only those after the bookmark: a window's
    changes, never a workspace's tasks), and a task returned again with the same
    ``modified_at`` is skipped, with its children (stories); one modified since is
    delivered.
    """

    def __init__(self, stream: AsanaStream, workspace: str, window_from: str) -> None:
        """Read the previous run's memory; remember results modified after ``window_from``.

        ``window_from``: no later than the bookmark this run's search can reach.
        """
        stored = sdk_adapter.stored_state(stream).get(OVERLAP_STATE_KEY) or {}
        self.previous: dict[str, str] = dict(stored.get(workspace) or {})
        self.window_from = parse_timestamp(window_from)
        self.delivered: dict[str, str] = {}
        #: More than the limit fell in the window: nothing is remembered (see ``save``),
        #: so nothing more is kept during the run either (a bulk edit of recent tasks
        #: would otherwise hold every one of them until the end).
        self.overflowed = False

    def delivered_before(self, record: Mapping[str, t.Any]) -> bool:
        """Whether an earlier run delivered ``record`` as it is now (same ``modified_at``)."""
        modified = record.get("modified_at")
        return bool(modified) and self.previous.get(str(record.get("gid"))) == modified

    def note(self, record: Mapping[str, t.Any]) -> None:
        """``record`` is delivered in this run: the next run need not deliver it again."""
        modified = record.get("modified_at")
        if self.overflowed or not modified or parse_timestamp(str(modified)) <= self.window_from:
            return
        self.delivered[str(record.get("gid"))] = str(modified)
        if len(self.delivered) > OVERLAP_MEMORY_LIMIT:
            self.overflowed = True
            self.delivered = {}

    def save(self, stream: AsanaStream, workspace: str, bookmark: str | None) -> None:
        """Keep what the next search from ``bookmark`` returns again (None: nothing)."""
        memory = sdk_adapter.own_map(stream, OVERLAP_STATE_KEY)
        kept = {}
        if bookmark is not None:
            after = parse_timestamp(bookmark)
            kept = {
                gid: modified
                for gid, modified in {**self.previous, **self.delivered}.items()
                if parse_timestamp(modified) > after
            }
        if kept and len(kept) <= OVERLAP_MEMORY_LIMIT and not self.overflowed:
            memory[workspace] = kept
        else:
            memory.pop(workspace, None)


def forget_overlap(stream: AsanaStream, workspace: str) -> None:
    """Drop a workspace's overlap memory (its next search starts elsewhere)."""
    own = sdk_adapter.own_state(stream)
    if own.get(OVERLAP_STATE_KEY):
        own[OVERLAP_STATE_KEY].pop(workspace, None)


class SearchUnavailableError(Exception):
    """Asana's task search is not available in this workspace (a paid feature)."""


class SearchTiesError(Exception):
    """Search cannot move past an instant (more ties than a page holds); the argument."""


class SearchProgress:
    """The newest ``modified_at`` a search returned (its safe high-water mark)."""

    def __init__(self, high_water: str | None) -> None:
        """Start from the previous run's mark (None: never searched)."""
        self.high_water = high_water

    def saw(self, modified_at: str | None) -> None:
        """A result was read: move the mark up to its ``modified_at``."""
        if modified_at and (self.high_water is None or modified_at > self.high_water):
            self.high_water = modified_at


def covered_until(started: datetime.datetime) -> str:
    """Up to when a search started at ``started`` and read to its end saw every change.

    Every task modified before ``started`` minus the index lag was indexed, so a
    complete search returned it (if it matched).
    """
    return format_timestamp(minutes_before(started, SEARCH_INDEX_LAG_MINUTES))


class TaskSearch:
    """One workspace's search for changed tasks (or subtasks), read as it is needed.

    ``first_page``: the answer to the first request if the caller already has it (a
    probe that found out whether search is available), so it is not asked twice.
    """

    def __init__(
        self,
        stream: AsanaStream,
        workspace: str,
        *,
        is_subtask: bool,
        progress: SearchProgress,
    ) -> None:
        """Search ``workspace`` through ``stream``'s request loop (auth, retries, skips)."""
        self.stream = stream
        self.workspace = workspace
        self.is_subtask = is_subtask
        self.progress = progress
        self.first_page: list[dict[str, t.Any]] | None = None
        #: The bound the first page was asked with (``probe``).
        self._first_after: str | None = None
        #: Search requests sent (for tests and the benchmark).
        self.requests = 0
        #: Asana's time before the first request (None: not asked yet). A search read to
        #: its end saw every change up to ``covered_until`` of it, not of a later time:
        #: a change indexed late, below a page already read, is not on the next one.
        self.started: datetime.datetime | None = None

    def probe(self, after: str | None) -> None:
        """Ask for the first page now: raises ``SearchUnavailableError`` where it is paid.

        The page is kept for ``changed``, if it is called with the same ``after``.
        """
        self.first_page = self._first(after)
        self._first_after = _normal(after)

    def changed(self, after: str | None) -> Iterator[dict[str, t.Any]]:
        """Tasks modified after ``after`` (None: all), oldest first, each once.

        Raises ``SearchUnavailableError`` before yielding anything where search is a
        paid feature. Only the gids at the last page's newest instant (those the next
        page returns again) and the newest ``modified_at`` are kept in memory, so a
        search of every task (a first run) keeps no gid per task.
        """
        after = _normal(after)
        seen: set[str] = set()
        page = self.first_page
        if page is None or self._first_after != after:
            page = self._first(after)  # never probed, or from elsewhere
        self.first_page = None
        while True:
            # A result at or before the bound was read already (on an earlier page, or
            # it is a repeat a search ignoring its bound would send again).
            bound = parse_timestamp(after) if after else None
            fresh = [r for r in page if bound is None or parse_timestamp(r["modified_at"]) > bound]
            new = list(self._unseen(fresh, seen))
            yield from new
            if len(page) < SEARCH_PAGE:
                return
            if not new:
                # The bound did not move the search forward (Asana treating it as
                # inclusive?): never loop on the same page; the caller walks instead.
                raise SearchTiesError(after or "start")
            first, last = page[0]["modified_at"], page[-1]["modified_at"]
            # The next page starts at ``last``: only the ties there can come back.
            seen = {r["gid"] for r in page if r["modified_at"] == last}
            if first == last:
                yield from self._instant(last, seen)
                after = last  # exclusive: everything at that instant is read now
                seen = set()
            else:
                after = shift_ms(last, -1)
            page = self._page({"modified_at.after": after})

    def _first(self, after: str | None) -> list[dict[str, t.Any]]:
        self.started = self.stream.services.server_clock.latest()
        try:
            return self._page({"modified_at.after": _normal(after)})
        except ScopeMissingError:
            raise  # the stream is off, not just search
        except SkippedObjectError as exc:
            raise SearchUnavailableError(str(exc.status)) from None

    def _instant(self, instant: str, earlier: set[str]) -> Iterator[dict[str, t.Any]]:
        """Every task modified at exactly ``instant``, paged by ``created_at``.

        ``earlier``: those at ``instant`` already yielded (at most a page), skipped on
        any page; of this paging's own, only the ties at a page's last ``created_at``
        can come back.
        """
        window = {
            "modified_at.after": shift_ms(instant, -1),
            "modified_at.before": shift_ms(instant, 1),
        }
        created_after: str | None = None
        ties: set[str] = set()
        while True:
            params = {**window, "sort_by": "created_at", "created_at.after": created_after}
            page = self._page(params)
            fresh = [r for r in page if r["gid"] not in earlier]
            new = list(self._unseen(fresh, ties))
            yield from new
            if len(page) < SEARCH_PAGE:
                return
            first, last = page[0]["created_at"], page[-1]["created_at"]
            if first == last:
                # A full page created and modified in the same millisecond: search
                # cannot tell them apart. Never skip them: the caller walks instead.
                # (Otherwise the bound moves on, even past a page of ``earlier`` ones.)
                raise SearchTiesError(instant)
            ties = {r["gid"] for r in page if r["created_at"] == last}
            created_after = shift_ms(last, -1)

    def _page(self, bounds: Mapping[str, t.Any]) -> list[dict[str, t.Any]]:
        params = {
            "limit": SEARCH_PAGE,
            "is_subtask": "true" if self.is_subtask else "false",
            "sort_by": "modified_at",
            "sort_ascending": "true",
            "opt_fields": self.stream.opt_fields,
            **bounds,
        }
        params = {k: v for k, v in params.items() if v is not None}
        services = self.stream.services
        # Search has its own quota (60/min) on top of the general one.
        services.transport.run_control.pause(services.search_pacer.reserve())
        self.requests += 1
        path = f"/workspaces/{self.workspace}/tasks/search"
        return list(self.stream.list_endpoint(path, params))

    def _unseen(self, page: list[dict[str, t.Any]], seen: set[str]) -> Iterator[dict[str, t.Any]]:
        for record in page:
            if record["gid"] not in seen:
                seen.add(record["gid"])
                self.progress.saw(record.get("modified_at"))
                yield record


def _normal(after: str | None) -> str | None:
    """A search bound as Asana writes timestamps (None: no bound)."""
    return format_timestamp(parse_timestamp(str(after))) if after else None
