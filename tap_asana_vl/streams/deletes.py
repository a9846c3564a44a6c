"""Deletes and moves of a project's tasks, from Asana's Events API.

Asana's list endpoints never show what is gone. Its events do: ``GET /events?resource=
<project>&sync=<token>`` answers what happened to the project and to the tasks in it
(their stories included) since the token was issued. The tasks stream reads them once
per project before listing the project's changed tasks, and turns them into:

- **tombstones**: a deleted task, story or section, and a task removed from the project
  (its ``task_projects`` row), are written with ``_sdc_deleted_at`` = the event's time;
- **re-reads**: a task added to or removed from the project (or a section of it), or
  undeleted, is read again (``GET /tasks/{gid}``) and emitted, since Asana may not bump
  its ``modified_at`` for a move: its ``task_projects`` rows follow its memberships;
- **removed values**: a ``changed`` event whose ``change`` removed a value from one of
  the task fields a selected derived table is made of (``followers``, ``tags``,
  ``dependencies``: ``change.field`` names the task's property) is kept as a
  ``ValueRemoval``; the task is read again, and the derived table writes the pair with
  ``_sdc_deleted_at`` only if the task's current record no longer has it (derived.py).

The token is kept in the project's partition of the tasks state (one per project), and
moves only once the project's records and tombstones are written: a run that stops
before reads the same events again (re-sending a token is safe). A first call (no token)
and an expired token (older than 24 h) are answered 412 with a fresh token; that is not
an error. Events are delivered at most once and expire: a 412 on a token the tap had
means changes in the gap were not seen (a warning says so; see the README).
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

import tap_asana_vl.streams.purge as purge
from tap_asana_vl import sdk_adapter
from tap_asana_vl.errors import SkippedObjectError, SyncTokenRefusedError
from tap_asana_vl.streams.listing import DELETED_AT
from tap_asana_vl.transport import response_body

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    import requests
    from singer_sdk.helpers.types import Context

    from tap_asana_vl.streams.base import AsanaStream

EVENTS_PATH = "/events"
#: Key of the events sync token in a project's partition of the tasks state.
SYNC_STATE_KEY = "events_sync"
#: Key of the time a project's token was found expired (changes may have been missed).
EXPIRED_STATE_KEY = "events_expired_at"
#: Key of when the project's token was received (Asana's time): its age says when it
#: expires, so a run can reconcile at once instead of finding out (reconcile.py).
RECEIVED_STATE_KEY = "events_sync_at"
# Pages of events read per project per run at most (100 events each): a project with
# more queued than this is read on, from the last token, by the next run.
MAX_EVENT_PAGES = 50


#: Parents whose ``added`` / ``removed`` events move a task (a task added to a task is a
#: subtask: the subtasks stream's business; to a tag: not a change of memberships).
MOVES_IN = frozenset({"project", "section"})


@dataclass(frozen=True)
class ValueRemoval:
    """A value an event says was removed from a task's field (a follower, a tag …)."""

    task_gid: str
    #: The task's property (``change.field``): ``followers``, ``tags``, ``dependencies``.
    field: str
    #: The compact object removed (``change.removed_value``).
    value: dict[str, t.Any]
    #: The event's time.
    at: str


@dataclass
class ProjectChanges:
    """What a project's events say about deletes and moves, last event winning."""

    project_gid: str
    #: Deleted tasks: gid -> (deleted at, last name).
    deleted_tasks: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    #: Tasks removed from this project: gid -> removed at.
    removed_tasks: dict[str, str] = field(default_factory=dict)
    #: Tasks to read again (moved in or out, between sections, undeleted).
    reread_tasks: set[str] = field(default_factory=set)
    #: Deleted stories: gid -> deleted at.
    deleted_stories: dict[str, str] = field(default_factory=dict)
    #: Deleted sections: gid -> (deleted at, last name).
    deleted_sections: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    #: Sections any event named (added, changed, removed, deleted): the project's
    #: sections are read again (project_children.py).
    touched_sections: set[str] = field(default_factory=set)
    #: Task fields whose removed values are wanted (those of selected derived tables).
    value_fields: frozenset[str] = frozenset()
    #: Values removed from tasks and not added back since: (task, field, value gid) ->
    #: the removal.
    removed_values: dict[tuple[str, str, str], ValueRemoval] = field(default_factory=dict)

    def add(self, event: dict[str, t.Any]) -> None:
        """Fold one event in (events come oldest first)."""
        resource = event.get("resource") or {}
        gid = str(resource.get("gid") or "")
        if not gid:
            return
        kind = resource.get("resource_type")
        action = event.get("action")
        at = str(event.get("created_at") or "")
        name = resource.get("name")
        parent = event.get("parent") or {}
        if kind == "task":
            if action == "deleted":
                self.deleted_tasks[gid] = (at, name)
                self.reread_tasks.discard(gid)
            elif action == "undeleted":
                self.deleted_tasks.pop(gid, None)
                self.reread_tasks.add(gid)
            elif action in {"added", "removed"} and parent.get("resource_type") in MOVES_IN:
                if str(parent.get("gid")) == self.project_gid:
                    if action == "removed":
                        self.removed_tasks[gid] = at
                    else:
                        self.removed_tasks.pop(gid, None)
                if gid not in self.deleted_tasks:
                    self.reread_tasks.add(gid)
            elif action == "changed":
                self._fold_value_change(gid, event.get("change") or {}, at)
        elif kind == "story":
            if action == "deleted":
                self.deleted_stories[gid] = at
            elif action == "undeleted":
                self.deleted_stories.pop(gid, None)
        elif kind == "section":
            self.touched_sections.add(gid)
            if action == "deleted":
                self.deleted_sections[gid] = (at, name)
            elif action == "undeleted":
                self.deleted_sections.pop(gid, None)

    def _fold_value_change(self, task_gid: str, change: dict[str, t.Any], at: str) -> None:
        """A value removed from (or added back to) a wanted field of a task."""
        name = change.get("field")
        if name not in self.value_fields:
            return
        action = change.get("action")
        value = change.get("removed_value" if action == "removed" else "added_value")
        if not isinstance(value, dict) or not value.get("gid"):
            return
        key = (task_gid, str(name), str(value["gid"]))
        if action == "removed":
            self.removed_values[key] = ValueRemoval(task_gid, str(name), dict(value), at)
        elif action == "added":
            self.removed_values.pop(key, None)  # added back later: the add wins

    def value_removal_tasks(self) -> set[str]:
        """Tasks to read again for their removed values (their current record decides)."""
        return {removal.task_gid for removal in self.removed_values.values()} - set(
            self.deleted_tasks
        )


@dataclass
class EventsResult:
    """One project's events read: the changes, the token to keep, whether it expired."""

    changes: ProjectChanges
    sync: str | None
    #: True when Asana refused a token the tap had (changes in the gap were not seen).
    expired: bool = False
    #: Asana's time when the token was received (its age says when it expires).
    received_at: str | None = None


def is_events_response(response: requests.Response) -> bool:
    """Whether ``response`` answers ``GET /events`` (its body is not a plain listing)."""
    url = response.request.url or ""
    return url.split("?", 1)[0].endswith(EVENTS_PATH)


def events_page(response: requests.Response) -> dict[str, t.Any]:
    """The parts of a ``GET /events`` answer the tap uses, as one pseudo-record."""
    body = response_body(response)
    return {
        "events": list(body.get("data") or []),
        "sync": body.get("sync"),
        "has_more": bool(body.get("has_more")),
    }


def read_events(
    stream: AsanaStream,
    project_gid: str,
    sync: str | None,
    *,
    value_fields: frozenset[str] = frozenset(),
) -> EventsResult:
    """The project's events since ``sync`` (all pages), through ``stream``'s request loop.

    ``value_fields``: task fields whose removed values to keep (``ValueRemoval``).
    """
    changes = ProjectChanges(project_gid, value_fields=value_fields)
    for _ in range(MAX_EVENT_PAGES):
        params = {"resource": project_gid}
        if sync:
            params["sync"] = sync
        try:
            pages = list(stream.list_endpoint(EVENTS_PATH, params))
        except SyncTokenRefusedError as exc:
            # The first call has no token; a later 412 means the token expired.
            return EventsResult(changes, exc.sync, expired=sync is not None)
        page = pages[0] if pages else {"events": [], "sync": sync, "has_more": False}
        for event in page["events"]:
            changes.add(event)
        sync = page["sync"] or sync
        if not page["has_more"]:
            break
    return EventsResult(changes, sync)


def reread(stream: AsanaStream, gids: set[str], changes: ProjectChanges) -> Iterator[dict]:
    """The current record of each task in ``gids``; a 404 makes it a deleted task.

    A 403 (no longer visible to the token) deletes nothing: the task is left as it is.
    A subtask (an undeleted one, say) is left to the subtasks stream.
    """
    for gid in sorted(gids):
        try:
            records = list(stream.list_endpoint(f"/tasks/{gid}", {"opt_fields": stream.opt_fields}))
        except SkippedObjectError as exc:
            if exc.status == 404 and gid not in changes.deleted_tasks:
                # Gone since the event: deleted (Asana sends 404 for deleted tasks).
                changes.deleted_tasks[gid] = ("", None)
            continue
        yield from (record for record in records if not record.get("parent"))


def tombstones(
    changes: ProjectChanges,
    emitted: dict[str, set[str]],
    *,
    now: str,
) -> dict[str, list[dict[str, t.Any]]]:
    """Tombstone records per stream name for ``changes``.

    ``emitted`` maps a task gid re-read and emitted in this run to the projects of its
    current memberships: a task removed from this project but back in it by now gets no
    tombstone. Only keys (and the last known name) are known of a deleted object.
    """
    project = changes.project_gid
    tasks = [
        {"gid": gid, "project_gid": project or None, "name": name, DELETED_AT: at or now}
        for gid, (at, name) in sorted(changes.deleted_tasks.items())
    ]
    # Changes of no project in particular (a workspace's events) name no pair.
    pairs = {gid: at or now for gid, (at, _) in changes.deleted_tasks.items()} if project else {}
    for gid, at in changes.removed_tasks.items():
        if project not in emitted.get(gid, set()):
            pairs.setdefault(gid, at or now)
    task_projects = [
        {"task_gid": gid, "project_gid": project, DELETED_AT: at}
        for gid, at in sorted(pairs.items())
    ]
    stories = [
        {"gid": gid, DELETED_AT: at or now} for gid, at in sorted(changes.deleted_stories.items())
    ]
    sections = [
        {"gid": gid, "name": name, DELETED_AT: at or now}
        for gid, (at, name) in sorted(changes.deleted_sections.items())
    ]
    return {
        "tasks": tasks,
        "task_projects": task_projects,
        "stories": stories,
        "sections": sections,
    }


def project_events_state(stream: AsanaStream, context: Context | None) -> dict[str, t.Any]:
    """The project's partition of the tasks state (where its events token is kept)."""
    return sdk_adapter.partition_state(stream, context)


def write_tombstones(
    stream: AsanaStream, changes: ProjectChanges, emitted: dict[str, set[str]], *, now: str
) -> int:
    """Write the tombstones of ``changes`` to their (selected) streams; how many.

    With table version 1, so that ``hard_delete`` removes them (see purge.py).
    """
    written = 0
    for name, records in tombstones(changes, emitted, now=now).items():
        target = stream.services.streams.get(name)
        if target is not None:
            written += purge.write_tombstones(stream.services.purges, target, records)
    return written


def memberships_of(record: dict[str, t.Any]) -> set[str]:
    """The projects a task record is in now (from its ``memberships``)."""
    return {
        str((m.get("project") or {}).get("gid"))
        for m in record.get("memberships") or []
        if (m.get("project") or {}).get("gid")
    }
