"""The reconcile pass: tasks, subtasks and their rows that are gone, without Asana's events.

Events are delivered at most once and expire after 24 hours, so some deletes and moves
are never reported. Every ``reconcile_every_days`` days, and when events were lost (in a
run whose newest events token is over 24 hours old, or whose first events request Asana
refused before anything was listed; else in the run after a refused token) the tasks
stream lists every project's tasks in full
instead of only the changed ones, and writes with one Singer table version (the run's
start, in ms): every live task's row and (task, project) pair (changed tasks through the
usual sync, unchanged ones directly: their stories are asked nothing) and, with
``subtasks`` selected, every subtask and subtask story (the subtrees of unchanged tasks
are read in their workspace's sweep) and every live task's and subtask's rows of the
derived task tables (``DERIVED``: made of the task record, so no request; a removed
follower, a field of a project the task left, the pairs of a deleted task are then the
rows not written). At the end of the run one ACTIVATE_VERSION per
stream tells the target that rows of an older version are gone; target-postgres then
sets their ``_sdc_deleted_at`` (keeping their other columns), or deletes them with
``hard_delete: true``.

ACTIVATE_VERSION is table-wide, so it is only sent when it cannot mark a live row: the
conditions of ``full_reads.py`` (no project filter, nothing skipped or cut off in the
tasks, projects, workspaces or the subtask streams, every project seen by the previous
reconcile seen again or deleted, a previous reconcile to compare with, the run not
stopped), and no later ``start_date`` than the previous reconcile's (tasks modified before
it are not listed).

State: the time of the last reconcile, whether one is requested, its ``start_date`` and
the gids of the projects it saw, in the tasks stream's entry (grows with projects, never
with tasks). A run that read every task's stories also records the stories' candidate
floor, and the next reconcile that activates confirms it (``purge.py``).
"""

from __future__ import annotations

import datetime
import time
import typing as t
from dataclasses import dataclass, field

import tap_asana_vl.streams.deletes as deletes
import tap_asana_vl.streams.full_reads as full_reads
import tap_asana_vl.streams.purge as purge
import tap_asana_vl.streams.workspace_events as workspace_events
from tap_asana_vl import scopes, sdk_adapter
from tap_asana_vl.timestamps import format_timestamp, parse_timestamp

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from tap_asana_vl.streams.base import AsanaStream

#: Key of the reconcile bookkeeping in the tasks stream's state entry.
STATE_KEY = "reconcile"
BRIDGE = "task_projects"
SUBTASKS = "subtasks"
SUBTASK_STORIES = "subtask_stories"
STORIES = "stories"
#: Hours Asana keeps events: an events token older than that is refused (412).
EVENTS_KEPT_HOURS = 24
#: Derived tables made of each task's and subtask's record (streams/derived.py).
DERIVED = ("task_custom_field_values", "task_tags", "task_followers", "task_dependencies")


def task_project_rows(task_gid: str, memberships: t.Any) -> Iterator[dict[str, t.Any]]:
    """The ``task_projects`` rows of a task: one per project in its ``memberships``."""
    for membership in memberships or []:
        project = membership.get("project") or {}
        section = membership.get("section") or {}
        if project.get("gid"):
            yield {
                "task_gid": task_gid,
                "project_gid": project["gid"],
                "project_name": project.get("name"),
                "section_gid": section.get("gid"),
                "section_name": section.get("name"),
            }


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def scope_filters(config: Mapping[str, t.Any]) -> list[str]:
    """The settings that leave projects out of the run (the reconcile needs none)."""
    return full_reads.scope_filters(config, full_reads.PROJECT)


@dataclass
class Reconcile:
    """One run's reconcile pass, kept by the tasks stream."""

    due: bool
    version: int = 0
    #: Why the pass may not send ACTIVATE_VERSION in this run.
    problems: list[str] = field(default_factory=list)
    #: Projects whose every task was listed in this run.
    projects_done: set[str] = field(default_factory=set)
    #: Tasks whose rows were re-written without being emitted (listed unchanged).
    rewritten: set[str] = field(default_factory=set)
    #: The derived task tables this pass re-writes (see ``_versioned_streams``).
    derived: list[AsanaStream] = field(default_factory=list)


def plan(stream: AsanaStream, refused: str | None = None) -> Reconcile:
    """Whether this run reconciles (decided once, before the first project's listing).

    ``refused``: whose events token Asana refused (412) before anything was listed.
    """
    state = sdk_adapter.own_state(stream).get(STATE_KEY) or {}
    every = int(stream.config.get("reconcile_every_days", 7))
    if not _versioned_streams(stream):
        return Reconcile(due=False)
    filters = scope_filters(stream.config)
    if filters:
        stream.logger.info(
            "No reconcile pass: it needs every project in scope (%s set); deletes come "
            "from Asana's events only",
            ", ".join(filters),
        )
        return Reconcile(due=False)
    last = state.get("at")
    due = (
        every == 0
        or not last
        or bool(state.get("requested"))
        or _now() - parse_timestamp(str(last)) >= datetime.timedelta(days=every)
    )
    if not due:
        # Deletes since the last events read are lost: reconcile in this run rather than
        # in the next one, which a refused token (412) would ask for.
        expired = events_expired(stream)
        if expired is not None:
            stream.logger.info(
                "Reconcile pass in this run: Asana's events were last read at %s, more "
                "than %d hours ago (their sync tokens have expired)",
                expired,
                EVENTS_KEPT_HOURS,
            )
        elif refused is not None:
            stream.logger.info(
                "Reconcile pass in this run: Asana refused the events token of %s (412) "
                "before anything was listed",
                refused,
            )
        else:
            return Reconcile(due=False)
    version = int(time.time() * 1000)
    versioned = _versioned_streams(stream)
    for each in versioned:
        sdk_adapter.set_table_version(each, version)
    derived = [s for s in versioned if s.name in DERIVED]
    left_out = [s.name for s in _selected(stream, DERIVED) if s not in derived]
    if left_out:
        stream.logger.info(
            "Reconcile pass: %s not reconciled (they hold rows of subtasks, which this run "
            "does not re-read in full: select subtasks, with include_subtasks on)",
            ", ".join(left_out),
        )
    return Reconcile(due=True, version=version, derived=derived)


def events_expired(stream: AsanaStream) -> str | None:
    """When Asana's events were last read, if that is over ``EVENTS_KEPT_HOURS`` ago.

    Asana keeps events 24 hours and refuses older tokens. The newest token the state
    holds (a workspace's or a project's) says when the last run read events; the tokens
    of projects since deleted or left are older still, and do not count. Asana's clock
    (its answers' ``Date``), as when the tokens were received. None: not known to be
    expired (no token with its time yet; a token refused sooner is found by its 412), or
    events not read in this run (granular OAuth scopes: the tokens kept stay old, and
    would make every run a reconcile).
    """
    if scopes.granted_scopes(stream.config) is not None:
        return None
    state = sdk_adapter.own_state(stream)
    times = list((state.get(workspace_events.RECEIVED_STATE_KEY) or {}).values())
    times += [
        partition[deletes.RECEIVED_STATE_KEY]
        for partition in state.get("partitions") or []
        if partition.get(deletes.RECEIVED_STATE_KEY)
    ]
    if not times:
        return None
    newest = max(parse_timestamp(str(time_)) for time_ in times)
    now = stream.services.server_clock.latest()
    if now - newest < datetime.timedelta(hours=EVENTS_KEPT_HOURS):
        return None
    return format_timestamp(newest)


def _versioned_streams(stream: AsanaStream) -> list[AsanaStream]:
    """The streams a reconcile re-writes in full, if selected.

    Tasks, task_projects, and subtasks (unless ``include_subtasks`` is off); with
    subtasks, subtask_stories too: every subtask is emitted in a reconcile, and every
    story of an emitted subtask is (stories have no "changed since" filter). The derived
    task tables only with subtasks too: they hold rows of subtasks, which are re-written
    only when every subtree is read (with subtasks off or deselected, the subtask rows
    written before would be marked though the subtasks still have those values).
    """
    streams = stream.services.streams
    names = [stream.name, BRIDGE]
    subtasks = streams.get(SUBTASKS)
    if stream.config.get("include_subtasks", True) and subtasks is not None and subtasks.selected:
        names += [SUBTASKS, SUBTASK_STORIES, *DERIVED]
    return _selected(stream, names)


def _selected(stream: AsanaStream, names: Iterable[str]) -> list[AsanaStream]:
    found = [stream.services.streams.get(name) for name in names]
    return [s for s in found if s is not None and s.selected]


def read_subtasks_later(stream: AsanaStream, record: Mapping[str, t.Any]) -> None:
    """A task listed unchanged has subtasks: its workspace's sweep reads them.

    Only when the subtasks table is written (its rows are what the reconcile re-writes).
    """
    subtasks = stream.services.streams.get(SUBTASKS)
    if subtasks is not None and subtasks.selected:
        workspace = (record.get("workspace") or {}).get("gid")
        if workspace:
            subtasks.read_tree_later(str(workspace), str(record["gid"]))


def request(stream: AsanaStream) -> None:
    """Ask for a reconcile in the next run (a project's events token expired).

    Or in this one, asked before it is planned (the tasks' bookmarks started over).
    """
    sdk_adapter.own_state(stream).setdefault(STATE_KEY, {})["requested"] = True


def possible(stream: AsanaStream) -> bool:
    """Whether a reconcile pass can run with these settings and this selection (``plan``)."""
    return bool(_versioned_streams(stream)) and not scope_filters(stream.config)


def write_unchanged(stream: AsanaStream, reconcile: Reconcile, record: dict[str, t.Any]) -> None:
    """Re-write the row and pairs of a task the reconcile listed but does not emit.

    The whole record (as the listing returned it, with the tap's own fields): the
    target replaces every column of a row it upserts. Its children (stories …) are not
    asked anything: they did not change.
    """
    gid = str(record["gid"])
    if gid in reconcile.rewritten:
        return  # a multi-homed task, listed unchanged under another project
    rows = list(task_project_rows(gid, record.get("memberships")))
    if len(rows) != 1:
        # Only a task listed under several projects (or one whose projects are hidden)
        # comes again: remembering just those keeps a reconcile's memory flat in tasks.
        reconcile.rewritten.add(gid)
    sdk_adapter.write_records(stream, [record])
    bridge = stream.services.streams.get(BRIDGE)
    if bridge is not None:
        sdk_adapter.write_records(bridge, rows)
    # The derived tables' rows, from the context a task gives them (its record's fields),
    # exactly as when it is emitted: the same code makes them.
    context = stream.get_child_context(record, None)
    for derived in reconcile.derived:
        purge.write_rows(stream.services.purges, derived, derived.rows(context))


def finish(stream: AsanaStream, reconcile: Reconcile) -> None:
    """At the end of a run that reconciled: ACTIVATE_VERSION if nothing forbids it.

    The conditions are the complete reads' (full_reads.py), for tasks and what is above
    them; the projects the previous reconcile saw are the ones that must be seen again.
    """
    if not reconcile.due:
        return
    entry = sdk_adapter.own_state(stream).setdefault(STATE_KEY, {})
    problems = list(reconcile.problems) + full_reads.skip_problems(full_reads.lineage(stream))
    problems += full_reads.skip_problems(
        [s for s in _versioned_streams(stream) if s.name in {SUBTASKS, SUBTASK_STORIES}]
    )
    start = stream.config.get("start_date")
    # Tasks last modified before start_date are not listed: a later start_date than the
    # one of the previous reconcile leaves out tasks whose rows are in the warehouse.
    if (
        "start_date" in entry
        and entry["start_date"] != start
        and not _earlier(start, entry.get("start_date"))
    ):
        problems.append(
            f"start_date changed from {entry.get('start_date')} to {start} "
            "(a later one leaves tasks out; clear the state to start over)"
        )
    stories_in_full = not problems and _read_every_story(stream, reconcile)
    previous = entry.get("projects")
    if previous is None and not problems:
        entry.update(
            at=format_timestamp(_now()), projects=sorted(reconcile.projects_done), start_date=start
        )
        entry.pop("requested", None)
        _record_stories(stream, stories_in_full)
        sdk_adapter.write_state(stream)
        stream.logger.info(
            "Reconcile pass: first one, %d projects recorded; the next one marks what is gone",
            len(reconcile.projects_done),
        )
        return
    problems += full_reads.lost_parent_problems(
        stream, full_reads.PROJECT, previous or [], reconcile.projects_done
    )
    if problems:
        stream.logger.warning(
            "Reconcile pass: nothing marked deleted in this run (%s); it is tried again next run",
            full_reads.summarize(problems),
        )
        entry["requested"] = True
        sdk_adapter.write_state(stream)
        return
    for versioned in _versioned_streams(stream):
        purge.activate(stream.services.purges, versioned, reconcile.version)
    # Before a candidate of this run is recorded: only an earlier run's is confirmed.
    _confirm_stories(stream, reconcile)
    _record_stories(stream, stories_in_full)
    entry.update(
        at=format_timestamp(_now()), projects=sorted(reconcile.projects_done), start_date=start
    )
    entry.pop("requested", None)
    sdk_adapter.write_state(stream)
    stream.logger.info(
        "Reconcile pass: %d projects listed in full; %s rows not seen are marked deleted "
        "by the target",
        len(reconcile.projects_done),
        ", ".join(s.name for s in _versioned_streams(stream)),
    )


def _read_every_story(stream: AsanaStream, reconcile: Reconcile) -> bool:
    """Whether this run read the stories of every task in scope (see purge.py, stories).

    A reconcile lists every task of every project (and every task in no project), and
    emits those its bookmark does not say unchanged: with no bookmark (a first run,
    after ``state clear`` or ``--full-refresh``) that is all of them, and each one's
    stories are read. So: no task listed unchanged (``on_unchanged``), none re-written
    without being emitted, and nothing skipped or cut off in the stories stream or above
    it (the caller checked the reconcile's own problems).
    """
    stories = stream.services.streams.get(STORIES)
    if stories is None or not stories.selected:
        return False
    if stream.stats.unchanged_dropped or reconcile.rewritten:
        return False
    return not full_reads.skip_problems(full_reads.lineage(stories))


def _record_stories(stream: AsanaStream, read_in_full: bool) -> None:
    """A run that read every story: its version is the stories' candidate floor."""
    stories = stream.services.streams.get(STORIES)
    if read_in_full and stories is not None and purge.record_candidate(stories) is not None:
        stream.logger.info(
            "Every task's stories read in full: the next reconcile pass makes this the "
            "stories' floor (then deleted comments are removed with hard_delete)"
        )


def _confirm_stories(stream: AsanaStream, reconcile: Reconcile) -> None:
    """A reconcile that activates confirms the stories' candidate of an earlier run.

    Every task in scope is listed and those gone are marked now, under the scope the
    candidate was read under (``purge.plan`` drops one of another scope): the stories
    that run did not write are deleted ones or those of tasks marked now.
    """
    stories = stream.services.streams.get(STORIES)
    if stories is None:
        return
    confirmed = purge.confirm(stream.services.purges, stories, reconcile.version)
    if confirmed is not None:
        stream.logger.info(
            "Reconcile pass: stories read in full at version %d are the stories' floor; "
            "stories not seen since are marked deleted by the target",
            confirmed,
        )


def _earlier(start: t.Any, previous: t.Any) -> bool:
    """Whether ``start`` (a start_date) lists at least what ``previous`` listed."""
    if not start:
        return True
    if not previous:
        return False
    return parse_timestamp(str(start)) <= parse_timestamp(str(previous))
