"""One run's decisions about per-project children, and their state (project_children.py).

Pure bookkeeping, apart from the streams: which projects were listed (a digest of each
record), which had section events, which were read, left unread or failed, and when the
last refresh read every project. The tap holds it for the run (``ChildrenPlans``, a run
service), so the child streams, the tasks stream and the complete reads consult it without
reading the projects stream.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import typing as t
from dataclasses import dataclass, field

from tap_asana_vl.timestamps import format_timestamp

if t.TYPE_CHECKING:
    from collections.abc import Mapping

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


def now() -> datetime.datetime:
    """The time now (UTC): the refresh clock is the tap's own, not Asana's."""
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

    def saw(self, listed: Mapping[str, str]) -> None:
        """The projects listed in a workspace: gid -> ``digest`` of the raw record."""
        self.listed.update(listed)

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
            self.entry["refreshed_at"] = format_timestamp(now())
            self.entry["streams"] = sorted(self.streams)


@dataclass
class ChildrenPlans:
    """Where a run's streams find its plan (a run service: ``services.children_plans``)."""

    #: Made by the projects stream when it first lists projects (None before).
    current: ChildrenPlan | None = None
