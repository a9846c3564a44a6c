"""The reconcile pass: ``task_projects`` rows that are gone, without Asana's events.

Events are delivered at most once and expire after 24 hours, so some deletes and moves
are never reported. Every ``reconcile_every_days`` days (and in the run after a
project's events token expired) the tasks stream lists every project's tasks in full
instead of only the changed ones, and every live (task, project) pair is written to
``task_projects`` with one Singer table version (the run's start, in ms): changed tasks
through the usual sync, unchanged ones directly (no other stream is asked anything for
them). At the end of the run one ACTIVATE_VERSION tells the target that rows of an older
version are gone; target-postgres then sets their ``_sdc_deleted_at`` (keeping their
other columns), or deletes them with ``hard_delete: true``.

ACTIVATE_VERSION is table-wide, so it is only sent when it cannot mark a live pair:

- no ``workspace_gids`` / ``project_gids`` filter and archived projects included (a
  pair of an out-of-scope project is only re-written while one of its tasks is in
  scope);
- every workspace, project and project listing of the run read in full (no 402/403/404
  skip, no listing cut off, the run not stopped: it is sent last);
- every project of the previous reconcile seen again, or answering 404 (deleted) now:
  one that answers 403 (access lost) or is not listed stops it;
- a previous reconcile to compare with: the first one only records which projects it saw.

State: the time of the last reconcile, whether one is requested, and the gids of the
projects it saw, in the tasks stream's entry (grows with projects, never with tasks).
"""

from __future__ import annotations

import datetime
import time
import typing as t
from dataclasses import dataclass, field

from tap_asana_vl import sdk_adapter
from tap_asana_vl.errors import SkippedObjectError
from tap_asana_vl.timestamps import format_timestamp, parse_timestamp

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from tap_asana_vl.streams.base import AsanaStream

#: Key of the reconcile bookkeeping in the tasks stream's state entry.
STATE_KEY = "reconcile"
BRIDGE = "task_projects"


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
    names = [name for name in ("workspace_gids", "project_gids") if config.get(name)]
    if not config.get("include_archived_projects", True):
        names.append("include_archived_projects: false")
    return names


@dataclass
class Reconcile:
    """One run's reconcile pass, kept by the tasks stream."""

    due: bool
    version: int = 0
    #: Why the pass may not send ACTIVATE_VERSION in this run.
    problems: list[str] = field(default_factory=list)
    #: Projects whose every task was listed in this run.
    projects_done: set[str] = field(default_factory=set)


def plan(stream: AsanaStream) -> Reconcile:
    """Whether this run reconciles (decided once, before the first project)."""
    services = stream.services
    bridge = services.streams.get(BRIDGE)
    state = sdk_adapter.own_state(stream).get(STATE_KEY) or {}
    every = int(stream.config.get("reconcile_every_days", 7))
    if bridge is None or not bridge.selected:
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
        return Reconcile(due=False)
    version = int(time.time() * 1000)
    sdk_adapter.set_table_version(bridge, version)
    return Reconcile(due=True, version=version)


def request(stream: AsanaStream) -> None:
    """Ask for a reconcile in the next run (a project's events token expired)."""
    sdk_adapter.own_state(stream).setdefault(STATE_KEY, {})["requested"] = True


def write_unchanged(stream: AsanaStream, record: Mapping[str, t.Any]) -> None:
    """Re-write the pairs of a task the reconcile listed but does not emit."""
    bridge = stream.services.streams.get(BRIDGE)
    if bridge is not None:
        rows = list(task_project_rows(str(record["gid"]), record.get("memberships")))
        sdk_adapter.write_records(bridge, rows)


def finish(stream: AsanaStream, reconcile: Reconcile) -> None:
    """At the end of a run that reconciled: ACTIVATE_VERSION if nothing forbids it."""
    if not reconcile.due:
        return
    services = stream.services
    entry = sdk_adapter.own_state(stream).setdefault(STATE_KEY, {})
    problems = list(reconcile.problems)
    for name in ("workspaces", "projects", "tasks"):
        other = services.streams.get(name)
        skipped = getattr(getattr(other, "stats", None), "skipped", [])
        problems += [f"{name} skipped ({entry})" for entry in skipped]
    previous = entry.get("projects")
    if previous is None and not problems:
        entry.update(at=format_timestamp(_now()), projects=sorted(reconcile.projects_done))
        entry.pop("requested", None)
        sdk_adapter.write_state(stream)
        stream.logger.info(
            "Reconcile pass: first one, %d projects recorded; the next one marks what is gone",
            len(reconcile.projects_done),
        )
        return
    for gid in sorted(set(previous or []) - reconcile.projects_done):
        problems += _missing_project_problem(stream, gid)
    if problems:
        stream.logger.warning(
            "Reconcile pass: nothing marked deleted in this run (%s); it is tried again next run",
            "; ".join(problems[:5])
            + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""),
        )
        entry["requested"] = True
        sdk_adapter.write_state(stream)
        return
    sdk_adapter.write_activate_version(services.streams[BRIDGE], reconcile.version)
    entry.update(at=format_timestamp(_now()), projects=sorted(reconcile.projects_done))
    entry.pop("requested", None)
    sdk_adapter.write_state(stream)
    stream.logger.info(
        "Reconcile pass: %d projects listed in full; task_projects rows not seen are "
        "marked deleted by the target",
        len(reconcile.projects_done),
    )


def _missing_project_problem(stream: AsanaStream, gid: str) -> list[str]:
    """Nothing if a project seen last time is deleted (404); else why it blocks."""
    try:
        found = list(stream.list_endpoint(f"/projects/{gid}", {"opt_fields": "gid"}))
    except SkippedObjectError as exc:
        if exc.status == 404:
            return []
        return [f"project {gid} answered {exc.status}"]
    return [f"project {gid} was not listed" if found else f"project {gid} is unreadable"]
