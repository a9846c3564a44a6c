"""Where an incremental run finds a workspace's changed tasks: a search, or each project.

Listing each project's tasks with ``modified_since`` costs one request per project per
run, even when nothing changed. Where Asana's workspace task search works (paid plans)
the tasks stream asks it instead, once per workspace, for the top-level tasks modified
since the workspace's **search bookmark** (``search.py``: ⌈changed / 100⌉ requests), and
lists no project whose own bookmark the search covers.

Bookmarks mean "every task modified up to here was written", on Asana's clock:

- a project's bookmark (its partition of the tasks state) moves to the time its listing
  started (Asana's clock: the latest ``Date`` it sent before), and in a run that searched
  to the end, to what the search covered (``search.covered_until``);
- the search bookmark moves to what the search covered, or, in a run that listed every
  project, to the oldest of those listing times.

So both plans stay consistent whatever a workspace's plan does between runs: after a
move to a free plan (search answers 402) each project is listed from its own bookmark,
which the searches kept moving; after a move to a paid plan, the search starts where
the last listing of every project started. A project whose bookmark is older than the
search bookmark (new, back in ``project_gids``, cut off last time) is listed, from its
own bookmark. The first run (no search bookmark), a reconcile pass, ``--full-refresh``
(no state) and a token whose scopes hide ``memberships`` (search results could not be
matched to projects) list every project, as before; their search for tasks in no
project runs meanwhile (unplaced_search.py), its start bounding the search bookmark.

The search bookmark is kept in the tasks stream's state entry (``search_bookmarks``,
one timestamp per workspace: state does not grow with tasks).
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

import tap_asana_vl.streams.workspace_events as workspace_events
from tap_asana_vl import sdk_adapter
from tap_asana_vl.streams.search import (
    SEARCH_STATE_KEY,
    OverlapMemory,
    SearchProgress,
    SearchUnavailableError,
    TaskSearch,
    covered_until,
    forget_overlap,
    search_bookmarks,
)
from tap_asana_vl.timestamps import format_timestamp, parse_timestamp

if t.TYPE_CHECKING:
    import datetime

    from tap_asana_vl.streams.base import AsanaStream
    from tap_asana_vl.streams.unplaced_search import UnplacedSearch


@dataclass
class WorkspacePlan:
    """How one run reads one workspace's changed tasks."""

    workspace: str
    #: The search bookmark at the start of the run (None: never recorded).
    previous: str | None
    #: Set when this run searches (the first page is already read: search works).
    search: TaskSearch | None = None
    #: Asana's time just before the first search request.
    searched_from: datetime.datetime | None = None
    #: Why this run lists each project (for the log), when it does.
    listing_because: str = ""
    #: Search answered 402/403 in this run (it is not asked again for this workspace).
    search_refused: bool = False
    #: Projects whose tasks context ran: gid -> Asana's time before their listing
    #: (None: not listed, the search covers them).
    projects: dict[str, str | None] = field(default_factory=dict)
    #: Projects whose listing was cut off or refused: their bookmarks stay.
    cut_off: set[str] = field(default_factory=set)
    #: Whether the search read every page (it covers up to ``searched_from`` - lag).
    searched_to_end: bool = False
    #: The workspace's events, where Asana offers them per workspace (None: each
    #: project's events are read instead; see workspace_events.py).
    events: workspace_events.WorkspaceEvents | None = None
    #: Tasks the workspace's sweep reads again for its events (known before any
    #: project's listing, which may deliver them too).
    rereads_in_sweep: frozenset[str] = frozenset()
    #: What the last run's search delivered in its overlap window (set when searching).
    overlap: OverlapMemory | None = None
    #: Tasks in no project, where this run read them apart from a search (listing
    #: mode): Asana's time up to which they are read (None: not read).
    unplaced_covered: str | None = None
    #: Reading them failed part-way: the search bookmark cannot move.
    unplaced_failed: bool = False
    #: Listing mode: the search for tasks in no project, started with the plan and read
    #: while the projects are listed (unplaced_search.py); None: not searched that way.
    unplaced_search: UnplacedSearch | None = None


def holds_no_bookmark(state: t.Mapping[str, t.Any]) -> bool:
    """Whether a tasks state entry has never recorded a complete read of anything.

    A project's bookmark, a search bookmark: either means a run wrote tasks and a later
    run lists only what changed since. A run that starts without any (and without
    ``start_date`` or ``project_gids``) lists every task in scope and leaves none out as
    unchanged: the tasks stream notes each workspace it plans then in
    ``services.tasks_from_scratch``
    (workspace gid -> Asana's time before its first listing), after which every such
    task, and the subtree read under it (subtasks.py), is read.
    """
    if any((state.get(SEARCH_STATE_KEY) or {}).values()) or state.get("replication_key_value"):
        return False
    return not any(p.get("replication_key_value") for p in state.get("partitions") or [])


def plan(stream: AsanaStream, workspace: str, *, listing_because: str | None) -> WorkspacePlan:
    """Decide how ``workspace``'s changed tasks are found in this run.

    ``listing_because``: a reason known up front to list every project (a reconcile
    pass), or None. Otherwise a search bookmark means search, if Asana answers it: its
    first page is read now, so a 402 (free plan) still lets every project be listed.
    """
    previous = (sdk_adapter.own_state(stream).get(SEARCH_STATE_KEY) or {}).get(workspace)
    result = WorkspacePlan(workspace, previous)
    if listing_because is not None:
        result.listing_because = listing_because
    elif not previous:
        result.listing_because = "no search bookmark yet"
    else:
        finder = TaskSearch(stream, workspace, is_subtask=False, progress=SearchProgress(previous))
        searched_from = stream.services.server_clock.latest()
        try:
            finder.probe(previous)
        except SearchUnavailableError as exc:
            result.listing_because = f"task search unavailable ({exc}: a free plan?)"
            result.search_refused = True
        else:
            result.search = finder
            result.searched_from = searched_from
    return result


def covered_by_search(plan: WorkspacePlan, project_bookmark: t.Any) -> bool:
    """Whether the search finds every change of a project with this bookmark.

    The search starts at the search bookmark: a project whose own bookmark is older
    (or missing) would miss the changes in between, so it is listed.
    """
    if plan.search is None or not plan.previous or not isinstance(project_bookmark, str):
        return False
    return parse_timestamp(project_bookmark) >= parse_timestamp(plan.previous)


def searched_again(plan: WorkspacePlan, record: t.Mapping[str, t.Any]) -> bool:
    """Whether the workspace's search (read in its sweep) may return this listed task.

    It returns the tasks modified after the search bookmark, so a project listed in a
    run that searches (its bookmark was older) may deliver some of them first.
    """
    if plan.search is None or not plan.previous:
        return False
    modified = record.get("modified_at")
    return not modified or parse_timestamp(str(modified)) > parse_timestamp(plan.previous)


def in_no_project(record: t.Mapping[str, t.Any]) -> bool:
    """A top-level task in no project (a person's My Tasks)."""
    return not record.get("memberships") and not record.get("parent")


def project_of(record: t.Mapping[str, t.Any], plan: WorkspacePlan) -> str | None:
    """The first project of a task's ``memberships`` this run syncs (None: none)."""
    for membership in record.get("memberships") or []:
        gid = str((membership.get("project") or {}).get("gid") or "")
        if gid in plan.projects:
            return gid
    return None


def advance(stream: AsanaStream, plan: WorkspacePlan) -> None:
    """Everything of the workspace is written: move the bookmarks (see the module).

    Runs once the sweep's records are out, so a run stopped before reads it all again.
    """
    covered = (
        covered_until(plan.searched_from)
        if plan.searched_to_end and plan.searched_from is not None
        else None
    )
    listed: list[str] = []
    for project, listed_at in plan.projects.items():
        if project in plan.cut_off:
            continue
        if listed_at is not None:
            listed.append(listed_at)
        marks = [mark for mark in (listed_at, covered) if mark is not None]
        if marks:
            latest = max(marks, key=parse_timestamp)
            sdk_adapter.raise_bookmark(stream, {"project_gid": project}, latest)
    bookmarks = search_bookmarks(stream)
    if (plan.search is not None and not plan.searched_to_end) or plan.unplaced_failed:
        # The search could not read past an instant (a bulk edit): the next run lists
        # each project from its own bookmark, then searches again from there.
        bookmarks.pop(plan.workspace, None)
        forget_overlap(stream, plan.workspace)
        return
    if plan.unplaced_covered is not None:
        listed.append(plan.unplaced_covered)
    if covered is not None:
        new = covered
    elif listed:
        new = min(listed, key=parse_timestamp)
    elif not plan.projects:
        new = format_timestamp(stream.services.server_clock.latest())
    else:
        return  # every project cut off: nothing proven
    if not (plan.previous and parse_timestamp(plan.previous) > parse_timestamp(new)):
        bookmarks[plan.workspace] = new
    if plan.overlap is not None:
        plan.overlap.save(stream, plan.workspace, bookmarks.get(plan.workspace))
    else:
        # A run that listed each project: what it wrote is not remembered, so the next
        # search may deliver tasks modified during it once more (targets upsert).
        forget_overlap(stream, plan.workspace)
