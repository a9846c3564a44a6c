"""Per-project children re-read only for projects that show a change, plus a refresh.

``sections``, ``project_memberships``, ``project_custom_field_settings`` and
``status_updates`` cost one request per project. Asana has no "changed since" filter for
them, but every run lists every project anyway (``projects``: one request per 100), and
the project record carries what summarises its children (Asana's ``Project`` schema):
``members`` (who the memberships are of), ``custom_field_settings`` and ``custom_fields``
(the fields it uses), ``current_status_update`` (its latest status update) and
``modified_at``. A digest of the whole listed record is kept per project; a project is
re-read when:

- its digest differs from the one kept when its children were last read, or none is kept
  (a project seen for the first time, one whose children read failed, a new selection);
- its events, read by the tasks stream earlier in the same run, name one of its sections
  (added, changed, removed, deleted: Asana's ``modified_at`` does not reflect changes of
  associations, so a section renamed leaves the record alone);
- or the run is a full refresh: every ``project_children_refresh_days`` days (0: every
  run), and whenever the selected children are not all covered by the digests kept.

What no signal shows (a member's access level changed, an older status update edited,
a section renamed where events are not read) is caught by the refresh.

Deletes (full_reads.py, purge.py): rows gone from Asana are marked by the complete
read's ACTIVATE_VERSION, which needs every project's children read in the run. A run
that left unchanged projects unread sends none for these streams (``unread_problems``):
their rows, written at or above the last floor, are never below a floor this run
activates. Tombstones from events are still written and purged as before.

State: in the projects stream's entry, ``project_children``: when the last refresh read
every project, which streams the digests cover, and one short digest per project
(grows with projects, never with tasks).
"""

from __future__ import annotations

import datetime
import typing as t

from tap_asana_vl import sdk_adapter
from tap_asana_vl.streams.base import AsanaStream
from tap_asana_vl.streams.children_plan import (
    DEFAULT_REFRESH_DAYS,
    SETTING,
    STATE_KEY,
    ChildrenPlan,
    now,
)
from tap_asana_vl.timestamps import parse_timestamp

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from singer_sdk.helpers.types import Context

    from tap_asana_vl.errors import SkippedObjectError


def plan(projects: AsanaStream) -> ChildrenPlan:
    """Whether this run is a refresh (decided once, when projects are first listed)."""
    every = int(projects.config.get(SETTING, DEFAULT_REFRESH_DAYS))
    streams = sorted(
        child.name
        for child in projects.child_streams
        if isinstance(child, ProjectChildStream) and child.selected
    )
    # None selected: nothing to keep (what an earlier run kept stays as it was).
    entry = sdk_adapter.own_state(projects).setdefault(STATE_KEY, {}) if streams else {}
    if set(entry.get("streams") or []) - set(streams):
        # One deselected: the digests kept from now on no longer cover it, so when it is
        # selected again it counts as newly selected (a refresh).
        entry["streams"] = sorted(set(entry["streams"]) & set(streams))
    last = entry.get("refreshed_at")
    because = None
    if every == 0:
        because = f"{SETTING} is 0"
        entry.pop("digests", None)  # never consulted: state stays small
    elif not last:
        because = "first read"
    elif not set(streams) <= set(entry.get("streams") or []):
        because = "newly selected"
    elif now() - parse_timestamp(str(last)) >= datetime.timedelta(days=every):
        because = f"last full read over {every} days ago"
    result = ChildrenPlan(
        streams=streams,
        refresh=because is not None,
        refresh_because=because,
        entry=entry,
        keep_digests=every != 0,
    )
    if streams and because is not None:
        projects.logger.info("Reading %s for every project (%s)", ", ".join(streams), because)
    elif streams:
        projects.logger.info(
            "Re-reading %s only for projects that changed (full refresh every %d days; "
            "rows gone from Asana are marked at the refresh)",
            ", ".join(streams),
            every,
        )
    return result


def any_selected(projects: AsanaStream) -> bool:
    """Whether a stream re-read per project by its signal is selected."""
    return any(
        isinstance(child, ProjectChildStream) and child.selected for child in projects.child_streams
    )


def plan_of(stream: AsanaStream) -> ChildrenPlan | None:
    """The run's plan, kept by the projects stream (None: no project listed yet)."""
    # Made when the projects are first listed (``ProjectsStream.children_plan``).
    return stream.services.children_plans.current


def note_section_events(stream: AsanaStream, project: str) -> None:
    """Events read in this run name a section of ``project``: its children are read."""
    children = plan_of(stream)
    if children is not None:
        children.section_events.add(project)


def note_events_lost(stream: AsanaStream, workspace: str) -> None:
    """A workspace's events token expired: section changes anywhere may have been missed.

    A workspace's events do not say which projects they were of, so every project's
    children are read in this run (a refresh; projects already done stay as read).
    """
    children = plan_of(stream)
    if children is not None and children.streams and not children.refresh:
        children.refresh = True
        children.refresh_because = f"events token of workspace {workspace} expired"
        stream.logger.info(
            "Reading %s for every project (%s)",
            ", ".join(children.streams),
            children.refresh_because,
        )


def unread_problems(stream: AsanaStream) -> list[str]:
    """Why ``stream`` was not read for every project in this run (none: it was)."""
    if not isinstance(stream, ProjectChildStream):
        return []
    children = plan_of(stream)
    if children is None or not children.unread:
        return []
    return [
        f"{len(children.unread)} unchanged projects not re-read "
        f"(re-read at the full refresh, every "
        f"{stream.config.get(SETTING, DEFAULT_REFRESH_DAYS)} days)"
    ]


class ProjectChildStream(AsanaStream):
    """A stream listed per project, read only where the project shows a change."""

    def wanted(self, context: Mapping[str, t.Any]) -> bool:
        """As any child; and only for a project this run re-reads (``ChildrenPlan``)."""
        if not super().wanted(context):
            return False
        children = plan_of(self)
        project = context.get("project_gid")
        return children is None or project is None or children.wants(str(project))

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        """As any stream, noting whether the project was read (for the deletes)."""
        children = plan_of(self)
        project = (context or {}).get("project_gid")
        if children is not None and project is not None and self.selected:
            children.started(str(project))
        yield from super().get_records(context)

    def _skip(self, context: Context | None, exc: SkippedObjectError) -> None:
        """A project whose children were not read in full is read again next run."""
        children = plan_of(self)
        project = (context or {}).get("project_gid")
        if children is not None and project is not None:
            children.failed.add(str(project))
        super()._skip(context, exc)
