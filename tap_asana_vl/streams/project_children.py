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
import hashlib
import json
import typing as t
from dataclasses import dataclass, field

from tap_asana_vl import sdk_adapter
from tap_asana_vl.streams.base import AsanaStream
from tap_asana_vl.timestamps import format_timestamp, parse_timestamp

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from singer_sdk.helpers.types import Context

    from tap_asana_vl.errors import SkippedObjectError

#: Key of the bookkeeping in the projects stream's state entry.
STATE_KEY = "project_children"
#: Project fields that summarise its children: always requested while one is selected.
SIGNAL_FIELDS = frozenset(
    {"modified_at", "members", "custom_field_settings", "custom_fields", "current_status_update"}
)
SETTING = "project_children_refresh_days"
DEFAULT_REFRESH_DAYS = 7


def digest(record: Mapping[str, t.Any]) -> str:
    """A short digest of a listed project record (any field changed: another digest).

    32 bits: state grows by ~30 bytes per project; a change hidden by a collision (one
    in 4 billion) waits for the refresh.
    """
    text = json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass
class ChildrenPlan:
    """One run's decisions: which projects' children are read."""

    #: The selected streams re-read by this plan, by name.
    streams: list[str]
    #: Every project's children are read in this run (the refresh).
    refresh: bool
    #: Why the refresh (for the log), or None.
    refresh_because: str | None
    #: The bookkeeping kept in state (mutated as projects are done).
    entry: dict[str, t.Any]
    #: Whether digests are kept (not when every run is a refresh).
    keep_digests: bool = True
    #: Digest of each project listed in this run.
    listed: dict[str, str] = field(default_factory=dict)
    #: Projects whose events in this run named one of their sections.
    section_events: set[str] = field(default_factory=set)
    #: Projects whose children were read in this run / left unread as unchanged.
    read: set[str] = field(default_factory=set)
    unread: set[str] = field(default_factory=set)
    #: Projects whose children read was skipped (403/404 …): read again next run.
    failed: set[str] = field(default_factory=set)

    @property
    def digests(self) -> dict[str, str]:
        """Digest of each project at the last read of its children (writable)."""
        return self.entry.setdefault("digests", {}) if self.keep_digests else {}

    def saw(self, projects: Iterable[Mapping[str, t.Any]]) -> None:
        """The projects listed in a workspace (raw records, before any filter)."""
        for project in projects:
            self.listed[str(project["gid"])] = digest(project)

    def wants(self, project: str) -> bool:
        """Whether ``project``'s children are read in this run."""
        if self.refresh or project in self.section_events:
            return True
        now = self.listed.get(project)
        return now is None or self.digests.get(project) != now

    def started(self, project: str) -> None:
        """A child stream syncs for ``project``: note whether it is read or left as is."""
        if self.wants(project):
            self.read.add(project)
        else:
            self.unread.add(project)

    def project_done(self, project: str) -> None:
        """Every child of ``project`` is written: its digest is kept, or dropped."""
        if not self.keep_digests:
            return
        if project in self.failed or project not in self.listed:
            self.digests.pop(project, None)
        elif project in self.read:
            self.digests[project] = self.listed[project]

    def finish(self, *, listing_complete: bool) -> None:
        """At the end of a run: the refresh's time if every project was read.

        Digests of projects no longer listed go, unless the listing was cut off.
        """
        if listing_complete:
            for gone in set(self.digests) - set(self.listed):
                del self.digests[gone]
        # A project that failed is read again next run (its digest is gone) and blocks
        # the ACTIVATE (full_reads): it must not turn every run into a refresh.
        if not self.unread and self.read:
            self.entry["refreshed_at"] = format_timestamp(_now())
            self.entry["streams"] = sorted(self.streams)


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
    elif _now() - parse_timestamp(str(last)) >= datetime.timedelta(days=every):
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
    projects = stream.services.streams.get("projects")
    # Made when the projects are first listed (``ProjectsStream.children_plan``).
    found = vars(projects).get("children_plan") if projects is not None else None
    return found if isinstance(found, ChildrenPlan) else None


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
