"""Deletes and moves of a whole workspace from one events request per run.

``GET /events?resource=<project>`` costs one request per project per run (deletes.py),
which an incremental run that searches (changed_tasks.py) would otherwise pay for every
project. ``GET /workspaces/{gid}/events`` answers the same ``EventResponse`` objects for
everything in the workspace, up to 1,000 per request, with the same sync tokens (412 on
the first call and on an expired token). Where Asana offers it, the tasks stream reads
it once per workspace, at the workspace's first project, and no project's events.
Where it answers 402 or 403 (Asana keeps some endpoints to higher tiers) each project's
events are read as before.

The events are turned into the same tombstones and re-reads as a project's
(deletes.py), in the workspace's sweep: ``added`` / ``removed`` with a project as
``parent`` are that project's moves; everything else (deleted tasks, stories,
sections, moves between sections) belongs to no project in particular. A deleted
task's ``task_projects`` rows are therefore not marked from these events (they do not
say which projects it was in): the next reconcile pass marks them.

The token is kept per workspace in the tasks stream's state entry
(``workspace_events``), and moves once the workspace's records and tombstones are
written.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

import tap_asana_vl.streams.deletes as deletes
from tap_asana_vl import sdk_adapter
from tap_asana_vl.errors import SyncTokenRefusedError
from tap_asana_vl.timestamps import format_timestamp

if t.TYPE_CHECKING:
    from tap_asana_vl.streams.base import AsanaStream

#: Key of the workspace events tokens (workspace gid -> token) in the tasks state entry.
STATE_KEY = "workspace_events"
#: Key of when each token was received (workspace gid -> Asana's time), same entry.
RECEIVED_STATE_KEY = "workspace_events_at"
#: Pages read per workspace per run at most (1,000 events each); the rest next run.
MAX_PAGES = 20
#: Bucket of the events that belong to no project in particular.
NO_PROJECT = ""


@dataclass
class WorkspaceEvents:
    """One workspace's events read: changes per project, the token, whether it expired."""

    workspace: str
    #: Project gid -> its moves; ``NO_PROJECT`` -> deletes and other re-reads.
    changes: dict[str, deletes.ProjectChanges] = field(default_factory=dict)
    sync: str | None = None
    expired: bool = False
    #: Task fields whose removed values are wanted (those of selected derived tables).
    value_fields: frozenset[str] = frozenset()
    #: Asana's time when the token was received (its age says when it expires).
    received_at: str | None = None

    def bucket(self, project: str) -> deletes.ProjectChanges:
        """The changes of ``project`` (``NO_PROJECT``: of none in particular)."""
        if project not in self.changes:
            self.changes[project] = deletes.ProjectChanges(project, value_fields=self.value_fields)
        return self.changes[project]

    def add(self, event: dict[str, t.Any]) -> None:
        """Fold one event in, under the project it names as ``parent`` if any."""
        parent = event.get("parent") or {}
        if parent.get("resource_type") == "project" and parent.get("gid"):
            self.bucket(str(parent["gid"])).add(event)
            # A task deleted after its move is deleted whatever the project.
            if event.get("action") == "deleted":
                self.bucket(NO_PROJECT).add(event)
        else:
            self.bucket(NO_PROJECT).add(event)

    @property
    def reread_tasks(self) -> set[str]:
        """Tasks to read again (moved, undeleted, a value removed), none deleted since."""
        deleted = set(self.bucket(NO_PROJECT).deleted_tasks)
        return {
            gid for c in self.changes.values() for gid in c.reread_tasks | c.value_removal_tasks()
        } - deleted


def path(workspace: str) -> str:
    """``GET /workspaces/{gid}/events``."""
    return f"/workspaces/{workspace}/events"


def tokens(stream: AsanaStream) -> dict[str, str]:
    """The workspace events tokens kept in the tasks state entry (writable)."""
    return sdk_adapter.own_state(stream).setdefault(STATE_KEY, {})


def read(
    stream: AsanaStream, workspace: str, value_fields: frozenset[str] = frozenset()
) -> WorkspaceEvents:
    """The workspace's events since its token (all pages, up to ``MAX_PAGES``).

    ``value_fields``: task fields whose removed values to keep (deletes.ValueRemoval).

    Raises ``SkippedObjectError`` where Asana does not offer them (402, 403, 404) on
    the first request: the caller reads each project's events instead.
    """
    sync = sdk_adapter.own_state(stream).get(STATE_KEY, {}).get(workspace)
    result = WorkspaceEvents(workspace, sync=sync, value_fields=value_fields)
    result.received_at = format_timestamp(stream.services.server_clock.latest())
    for _ in range(MAX_PAGES):
        params = {"sync": result.sync} if result.sync else {}
        try:
            pages = list(stream.list_endpoint(path(workspace), params))
        except SyncTokenRefusedError as exc:
            # The first call has no token; a later 412 means the token expired.
            result.expired = result.sync is not None
            result.sync = exc.sync
            return result
        page = pages[0] if pages else {"events": [], "sync": result.sync, "has_more": False}
        for event in page["events"]:
            result.add(event)
        result.sync = page["sync"] or result.sync
        if not page["has_more"]:
            break
    return result


def write_tombstones(
    stream: AsanaStream, events: WorkspaceEvents, emitted: dict[str, set[str]], *, now: str
) -> int:
    """Write the tombstones of every bucket (deletes.py); how many."""
    written = 0
    for changes in events.changes.values():
        written += deletes.write_tombstones(stream, changes, emitted, now=now)
    return written


def keep_token(stream: AsanaStream, events: WorkspaceEvents) -> None:
    """Store the token to send next run (once the workspace is written)."""
    if events.sync:
        tokens(stream)[events.workspace] = events.sync
        if events.received_at:
            received = sdk_adapter.own_state(stream).setdefault(RECEIVED_STATE_KEY, {})
            received[events.workspace] = events.received_at
