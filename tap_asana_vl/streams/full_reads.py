"""Rows gone from Asana, marked by one ACTIVATE_VERSION after a complete read.

Asana's list endpoints never show what is gone, and a tap cannot read the warehouse.
So a stream read *completely* in a run writes every row it has with one Singer table
version (the run's start, in ms), and at the end of the run one ACTIVATE_VERSION tells
the target that rows with an older version are gone: target-postgres sets their
``_sdc_deleted_at`` (keeping the other columns) or, with ``hard_delete: true``, deletes
them. The target's rows are the memory; the version says which were seen.

Streams read in full on every run (tags, custom fields, projects, teams, memberships,
users, portfolios, goals) take part on every run (``full_read_level``); sections,
project memberships, custom field settings and status updates of every project only in
a run that read every project's (``project_children.py``: changed projects only, and all
at a periodic refresh); tasks and ``task_projects`` only in a reconcile pass
(``reconcile.py``). All go through the conditions here, because ACTIVATE_VERSION is
table-wide and must never mark a live row:

- no setting leaves rows out of the run (``scope_filters``): ``workspace_gids`` for
  every stream, also ``project_gids`` / ``include_archived_projects: false`` for what is
  listed per project (and projects themselves);
- a per-project child read for every project, not only the changed ones
  (``project_children.unread_problems``);
- the stream and every stream above it read in full: no 402/403/404 skip, no listing cut
  off, no OAuth scope that turns one off (``skip_problems``); the run not stopped part-way
  (ACTIVATE_VERSION is written last);
- every workspace (and, per project, every project) seen by the previous complete read
  is seen again, or answers 404 (deleted): one whose access was lost still has live rows
  (``lost_parent_problems``);
- a previous complete read to compare with: the first one only records what it saw.

State: the gids of the workspaces and projects last seen in full, in the workspaces
stream's entry (grows with projects, never with tasks).
"""

from __future__ import annotations

import time
import typing as t
from dataclasses import dataclass, field

import tap_asana_vl.streams.project_children as project_children
import tap_asana_vl.streams.purge as purge
from tap_asana_vl import sdk_adapter
from tap_asana_vl.errors import SkippedObjectError

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from tap_asana_vl.streams.base import AsanaStream

#: Key of the complete reads' bookkeeping in the workspaces stream's state entry.
STATE_KEY = "complete_reads"
#: What a stream is listed under, for the conditions: per workspace, or per project.
WORKSPACE = "workspace"
PROJECT = "project"


def scope_filters(config: Mapping[str, t.Any], level: str = PROJECT) -> list[str]:
    """The settings that leave rows of a ``level`` stream out of the run."""
    names = ["workspace_gids"] if config.get("workspace_gids") else []
    if level == PROJECT:
        if config.get("project_gids"):
            names.append("project_gids")
        if not config.get("include_archived_projects", True):
            names.append("include_archived_projects: false")
    return names


def lineage(stream: AsanaStream) -> list[AsanaStream]:
    """``stream`` and every stream above it (its parent, the parent's parent …)."""
    chain: list[AsanaStream] = []
    current: t.Any = stream
    while current is not None:
        chain.append(current)
        parent = current.parent_stream_type
        current = None if parent is None else stream.services.streams.get(parent.name)
    return chain


def skip_problems(streams: Iterable[AsanaStream]) -> list[str]:
    """Why ``streams`` were not read in full: skips, listings cut off, scopes."""
    problems: list[str] = []
    for stream in streams:
        if stream.scope_off is not None:
            problems.append(f"{stream.name} off (OAuth scopes)")
        problems += [f"{stream.name} skipped ({entry})" for entry in stream.stats.skipped]
    return problems


def missing_project_problem(stream: AsanaStream, gid: str) -> list[str]:
    """Nothing if a project seen before is deleted (404) now; else why it blocks."""
    try:
        found = list(stream.list_endpoint(f"/projects/{gid}", {"opt_fields": "gid"}))
    except SkippedObjectError as exc:
        if exc.status == 404:
            return []
        return [f"project {gid} answered {exc.status}"]
    return [f"project {gid} was not listed" if found else f"project {gid} is unreadable"]


def lost_parent_problems(
    stream: AsanaStream, kind: str, previous: Iterable[str], seen: set[str]
) -> list[str]:
    """Workspaces or projects seen before but not now (a deleted project is fine)."""
    problems: list[str] = []
    for gid in sorted(set(previous) - seen):
        if kind == PROJECT:
            problems += missing_project_problem(stream, gid)
        else:
            problems.append(f"workspace {gid} was not listed")
    return problems


def summarize(problems: list[str]) -> str:
    """The first few problems, for one log line."""
    more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    return "; ".join(problems[:5]) + more


@dataclass
class FullReads:
    """One run's complete reads of the full-table streams (kept by the workspaces stream)."""

    version: int
    #: The streams that write their rows with ``version`` in this run, by name.
    streams: dict[str, AsanaStream] = field(default_factory=dict)
    #: Gids listed in this run: workspaces, and projects (all, before any filter).
    seen: dict[str, set[str]] = field(default_factory=lambda: {WORKSPACE: set(), PROJECT: set()})


def plan(root: AsanaStream) -> FullReads:
    """Before the first record: every selected full-read stream gets the run's version."""
    reads = FullReads(version=int(time.time() * 1000))
    for stream in root.services.streams.values():
        level = getattr(stream, "full_read_level", None)
        if level is not None and stream.selected:
            sdk_adapter.set_table_version(stream, reads.version)
            reads.streams[stream.name] = stream
    return reads


def finish(root: AsanaStream, reads: FullReads) -> None:
    """At the end of a run: ACTIVATE_VERSION for each stream read in full, one line why not."""
    config = root.config
    entry = sdk_adapter.own_state(root).setdefault(STATE_KEY, {})
    lost: dict[str, list[str]] = {}
    children = project_children.plan_of(root)
    if children is not None:
        projects = root.services.streams.get("projects")
        listed_in_full = projects is not None and not skip_problems(lineage(projects))
        children.finish(listing_complete=listed_in_full)
    # Only the levels a selected stream needs: projects are not even listed when no
    # selected stream is below them (and asking for each one seen before would cost).
    kinds = [WORKSPACE] if reads.streams else []
    if any(stream.full_read_level == PROJECT for stream in reads.streams.values()):
        kinds.append(PROJECT)
    for kind in kinds:
        listing = root if kind == WORKSPACE else root.services.streams.get("projects")
        unread = skip_problems(lineage(listing)) if listing is not None else ["not listed"]
        if kind == PROJECT:
            # Other listings of every project count as seeing them (``lists_projects``):
            # one cut off must not leave a partial memory of the projects seen.
            unread += skip_problems(s for s in reads.streams.values() if s.lists_projects)
        filters = scope_filters(config, kind)
        previous = entry.get(f"{kind}s")
        if unread or filters:
            lost[kind] = unread or [f"{', '.join(filters)} set"]
            continue
        lost[kind] = lost_parent_problems(root, kind, previous or [], reads.seen[kind])
        if previous is None:
            lost[kind] = lost[kind] or [f"first complete read: the {kind}s seen are recorded"]
        if not lost[kind] or previous is None:
            entry[f"{kind}s"] = sorted(reads.seen[kind])
    activated: list[str] = []
    blocked: list[str] = []
    for name, stream in sorted(reads.streams.items()):
        level = stream.full_read_level
        problems = scope_filters(config, level) + skip_problems(lineage(stream))
        problems += lost[WORKSPACE] + (lost[PROJECT] if level == PROJECT else [])
        # Re-read only for projects that changed: not every row was written (see
        # project_children.py), so no table-wide ACTIVATE_VERSION.
        problems += project_children.unread_problems(stream)
        if problems:
            blocked.append(f"{name}: {summarize(problems)}")
            continue
        purge.activate(root.services.purges, stream, reads.version)
        activated.append(name)
    if kinds:
        sdk_adapter.write_state(root)
    if activated:
        root.logger.info(
            "Read in full: %s; their rows gone from Asana are marked deleted by the target",
            ", ".join(activated),
        )
    if blocked:
        root.logger.info(
            "Not marking rows gone from Asana in this run (not read in full): %s",
            " | ".join(blocked),
        )
