"""Workspaces, and the streams listed once per workspace (or per team, per portfolio).

The request cost of every stream per run is in the README's stream table.
"""

from __future__ import annotations

import typing as t
from functools import cached_property

from singer_sdk.exceptions import ConfigValidationError

import tap_asana_vl.streams.full_reads as full_reads
import tap_asana_vl.streams.project_children as project_children
from tap_asana_vl.errors import SkippedObjectError
from tap_asana_vl.packed import PackedRecords
from tap_asana_vl.streams.base import AsanaStream, gid_key, workspace_of
from tap_asana_vl.streams.children_plan import SIGNAL_FIELDS, ChildrenPlan, digest

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from singer_sdk.helpers.types import Context


#: Context key marking a workspace's sweep (``AsanaStream.sweeps_each_workspace``).
SWEEP = "sweep"


def note_projects_seen(stream: AsanaStream, gids: Iterable[str]) -> None:
    """Record ``gids`` as listed in this run by ``stream`` (``lists_projects``).

    The complete reads (full_reads.py) require every project seen before to be seen
    again; the run's one record of them is kept with the workspaces stream's plan.
    """
    workspaces = stream.services.streams.get("workspaces")
    if isinstance(workspaces, WorkspacesStream):
        workspaces.full_reads.seen[full_reads.PROJECT].update(str(gid) for gid in gids)


class WorkspacesStream(AsanaStream):
    """Workspaces and organizations the token can see (``workspace_gids`` narrows them).

    After each workspace's streams are synced, the streams that sweep every workspace
    (subtasks: changes no changed task reveals) are synced for it.
    """

    name = "workspaces"
    path = "/workspaces"
    required_scope = "workspaces:read"
    child_context_key = "workspace_gid"
    required_fields = frozenset({"is_organization"})

    def source_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """List all workspaces first (there are few) so a wrong filter fails up front."""
        self.full_reads  # noqa: B018 (planned before any record of a full-read stream)
        records = list(super().source_records(context))
        self.full_reads.seen[full_reads.WORKSPACE].update(str(r["gid"]) for r in records)
        wanted = self.config.get("workspace_gids") or []
        if wanted:
            check_gids_exist("workspace_gids", wanted, {r["gid"] for r in records})
            records = [r for r in records if r["gid"] in wanted]
        # One small request per configured project, before anything is synced: a typo
        # in project_gids must not surface as a silently empty table hours later.
        project_gids = self.config.get("project_gids") or []
        visible = {gid for gid in project_gids if self._project_exists(gid)}
        check_gids_exist("project_gids", project_gids, visible)
        return records

    @cached_property
    def full_reads(self) -> full_reads.FullReads:
        """The complete reads of the full-table streams in this run (see full_reads.py)."""
        return full_reads.plan(self)

    def finish_run(self) -> None:
        """After every stream synced: ACTIVATE_VERSION for each stream read in full."""
        if "full_reads" in self.__dict__:
            full_reads.finish(self, self.full_reads)

    def _project_exists(self, gid: str) -> bool:
        try:
            return any(self.list_endpoint(f"/projects/{gid}", {"opt_fields": "gid"}))
        except SkippedObjectError:
            return False

    def get_child_context(
        self,
        record: dict[str, t.Any],
        context: Context | None,  # noqa: ARG002
    ) -> dict[str, t.Any]:
        """The workspace's gid, and whether it is an organization (only those have teams)."""
        return {"workspace_gid": record["gid"], "is_organization": record.get("is_organization")}

    def after_children(
        self,
        record: dict[str, t.Any],
        context: Context | None,  # noqa: ARG002
    ) -> None:
        """The workspace's streams are synced: now its sweeps (see ``sweeps_each_workspace``).

        Sweeps that complete a table from what the others emitted (users) go last.
        """
        sweeps = [
            stream
            for stream in self.descendent_streams
            if isinstance(stream, AsanaStream) and stream.sweeps_each_workspace and stream.runs
        ]
        for stream in sorted(sweeps, key=lambda s: s.sweeps_last):
            stream.sync(context={"workspace_gid": record["gid"], SWEEP: True})


def check_gids_exist(setting: str, wanted: Iterable[str], found: set[str]) -> None:
    """Fail clearly when a configured gid filter names something Asana doesn't show."""
    missing = sorted(set(wanted) - found)
    if missing:
        msg = (
            f"Setting {setting} names {', '.join(missing)}, which this token cannot "
            f"see in Asana. Check the gid(s) and that the token's user has access."
        )
        raise ConfigValidationError(msg, errors=[msg])


class UsersStream(AsanaStream):
    """Users of each workspace; someone in several workspaces is emitted once.

    After each workspace's other streams (a sweep, ``sweeps_last``), the users their
    records referenced but no listing returned (people who left, some guests, users of
    other workspaces; see user_refs.py) are read one by one (``GET /users/{gid}``, once
    per run each); one Asana no longer shows is emitted as the reference carried it
    (gid and name).
    """

    name = "users"
    full_read_level = full_reads.WORKSPACE
    path = "/users"
    required_scope = "users:read"
    parent_stream_type = WorkspacesStream
    context_params: t.ClassVar[dict[str, str]] = {"workspace": "workspace_gid"}
    context_label = ("workspace", "workspace_gid")
    deduplicate = True
    sweeps_each_workspace = True
    sweeps_last = True

    def source_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """The workspace's listing; in its sweep, the referenced users not emitted yet."""
        if not (context or {}).get(SWEEP):
            yield from super().source_records(context)
            return
        for reference in self.services.user_references.seen():
            if gid_key(reference["gid"]) in self._emitted:
                continue
            try:
                found = list(
                    self.list_endpoint(
                        f"/users/{reference['gid']}", {"opt_fields": self.opt_fields}
                    )
                )
            except SkippedObjectError:
                found = []
            yield from found or [reference]


class ProjectsStream(AsanaStream):
    """Projects of each workspace, archived ones included unless configured otherwise.

    Asana has no server-side "modified since" filter for projects, so every run lists
    them all (one request per 100 projects); ``modified_at`` is the replication key so
    targets and the bookmark see what changed.
    """

    name = "projects"
    full_read_level = full_reads.PROJECT
    path = "/projects"
    required_scope = "projects:read"
    field_scopes: t.ClassVar[dict[str, tuple[str, ...]]] = {"team": ("teams:read",)}
    parent_stream_type = WorkspacesStream
    replication_key = "modified_at"
    context_params: t.ClassVar[dict[str, str]] = {"workspace": "workspace_gid"}
    context_label = ("workspace", "workspace_gid")
    child_context_key = "project_gid"
    # Each project's tasks take long to sync: its sections, memberships … are
    # requested only a few projects ahead (see AsanaStream).
    prefetch_records_ahead = 4
    # The progress lines name each project.
    required_fields = frozenset({"workspace", "name"})
    _to_sync = 0
    _position = 0

    def extra_params(self, context: Mapping[str, t.Any]) -> dict[str, t.Any]:  # noqa: ARG002
        """Leave out `archived` to get both; `false` to skip archived projects."""
        return project_listing_params(self.config)

    def accept(self, record: dict[str, t.Any]) -> bool:
        """Apply the ``project_gids`` filter (children of dropped projects are skipped)."""
        return project_wanted(self.config, record["gid"])

    def source_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """The whole listing first (one request per 100 projects), to count the projects.

        The count makes the progress lines (``project 37/412 …``) possible. The records
        wait packed (packed.py), as each is handed over only once the previous
        project's tasks are written. A listing cut off part-way still hands over what
        it read before the error goes on.
        """
        held = PackedRecords()
        listed: dict[str, str] = {}  # gid -> digest, for the children plan
        try:
            self._pack_listing(context, held, listed)
        except SkippedObjectError:
            self._count_projects(listed, context)
            del listed  # the plan keeps its own copy
            yield from held.drain()
            raise
        self._count_projects(listed, context)
        del listed
        yield from held.drain()

    def _pack_listing(
        self, context: Context | None, held: PackedRecords, listed: dict[str, str]
    ) -> None:
        """List the projects into ``held``, and each one's digest into ``listed``.

        A method of its own so that no decoded project outlives the listing (the
        loop's variable, in the generator above, would stay alive for the whole run).
        """
        for project in super().source_records(context):
            listed[str(project["gid"])] = digest(project)
            held.append(project)

    @cached_property
    def children_plan(self) -> ChildrenPlan:
        """Which projects' children this run re-reads (see project_children.py)."""
        made = project_children.plan(self)
        self.services.children_plans.current = made  # what the child streams consult
        return made

    def requests_field(self, name: str) -> bool:
        """As any stream; plus what tells whether a project's children changed."""
        return super().requests_field(name) or (
            name in SIGNAL_FIELDS and project_children.any_selected(self)
        )

    def _count_projects(self, listed: dict[str, str], context: Context | None) -> None:
        self.children_plan.saw(listed)
        note_projects_seen(self, listed)
        self._to_sync = sum(project_wanted(self.config, gid) for gid in listed)
        self._position = 0
        if self.has_selected_descendents and context:
            workspace = str(context.get("workspace_gid"))
            self.services.progress.workspace_listed(workspace, self._to_sync)

    def get_child_context(
        self,
        record: dict[str, t.Any],
        context: Context | None,
    ) -> dict[str, t.Any]:
        """The project's gid, and its workspace (whose search may cover its tasks)."""
        workspace = (context or {}).get("workspace_gid") or workspace_of(record)
        return {"project_gid": record["gid"], "workspace_gid": workspace}

    def before_children(
        self,
        record: dict[str, t.Any],
        context: Context | None,  # noqa: ARG002
    ) -> None:
        """A project's tasks (and their children) start: its progress line begins."""
        if self.has_selected_descendents:
            self._position += 1
            name = record.get("name") or record["gid"]
            self.services.progress.project_started(self._position, self._to_sync, name)

    def after_children(self, record: dict[str, t.Any], *_: t.Any) -> None:
        """Everything under the project is written: one progress line for it."""
        self.children_plan.project_done(str(record["gid"]))
        if self.has_selected_descendents:
            self.services.progress.project_done()


def project_listing_params(config: Mapping[str, t.Any]) -> dict[str, str]:
    """Filters for listing a workspace's projects, as the settings ask."""
    return {} if config["include_archived_projects"] else {"archived": "false"}


def project_wanted(config: Mapping[str, t.Any], gid: str) -> bool:
    """Whether the ``project_gids`` setting lets project ``gid`` through."""
    wanted = config.get("project_gids")
    return not wanted or gid in wanted


class TagsStream(AsanaStream):
    """Tags of each workspace."""

    name = "tags"
    full_read_level = full_reads.WORKSPACE
    path = "/workspaces/{workspace_gid}/tags"
    required_scope = "tags:read"
    parent_stream_type = WorkspacesStream
    context_label = ("workspace", "workspace_gid")


class CustomFieldsStream(AsanaStream):
    """Custom field definitions (with enum options) of each workspace."""

    name = "custom_fields"
    full_read_level = full_reads.WORKSPACE
    path = "/workspaces/{workspace_gid}/custom_fields"
    required_scope = "custom_fields:read"
    parent_stream_type = WorkspacesStream
    context_label = ("workspace", "workspace_gid")


class TeamsStream(AsanaStream):
    """Teams of each organization (plain workspaces have none: no request)."""

    name = "teams"
    full_read_level = full_reads.WORKSPACE
    path = "/workspaces/{workspace_gid}/teams"
    required_scope = "teams:read"
    parent_stream_type = WorkspacesStream
    context_label = ("workspace", "workspace_gid")
    child_context_key = "team_gid"

    def wanted(self, context: Mapping[str, t.Any]) -> bool:
        """Only organizations have teams."""
        return context.get("is_organization") is not False and super().wanted(context)


class TeamMembershipsStream(AsanaStream):
    """Members of each team."""

    name = "team_memberships"
    full_read_level = full_reads.WORKSPACE
    path = "/teams/{team_gid}/team_memberships"
    required_scope = "team_memberships:read"
    field_scopes: t.ClassVar[dict[str, tuple[str, ...]]] = {"team": ("teams:read",)}
    parent_stream_type = TeamsStream
    context_label = ("team", "team_gid")
    per_parent = True


class PortfoliosStream(AsanaStream):
    """Portfolios owned by the token's user (Asana lists only an owner's portfolios)."""

    name = "portfolios"
    full_read_level = full_reads.WORKSPACE
    path = "/portfolios"
    required_scope = "portfolios:read"
    parent_stream_type = WorkspacesStream
    context_params: t.ClassVar[dict[str, str]] = {"workspace": "workspace_gid"}
    context_label = ("workspace", "workspace_gid")
    child_context_key = "portfolio_gid"
    unavailable_statuses = frozenset({400, 402})

    def extra_params(self, context: Mapping[str, t.Any]) -> dict[str, t.Any]:  # noqa: ARG002
        """Asana requires an owner; ``me`` is the token's user."""
        return {"owner": "me"}


class PortfolioItemsStream(AsanaStream):
    """Projects in each portfolio (bridge: portfolio_gid + project)."""

    name = "portfolio_items"
    path = "/portfolios/{portfolio_gid}/items"
    required_scope = "portfolios:read"
    parent_stream_type = PortfoliosStream
    primary_keys = ("portfolio_gid", "gid")
    context_label = ("portfolio", "portfolio_gid")
    tap_fields = frozenset({"portfolio_gid"})
    per_parent = True


class GoalsStream(AsanaStream):
    """Goals of each workspace; a 402 or a first-page 400 turns it off for that workspace."""

    name = "goals"
    full_read_level = full_reads.WORKSPACE
    path = "/goals"
    required_scope = "goals:read"
    # time_periods:read is not in Asana's scope list: scoped tokens never get it.
    field_scopes: t.ClassVar[dict[str, tuple[str, ...]]] = {"time_period": ("time_periods:read",)}
    parent_stream_type = WorkspacesStream
    context_params: t.ClassVar[dict[str, str]] = {"workspace": "workspace_gid"}
    context_label = ("workspace", "workspace_gid")
    unavailable_statuses = frozenset({400, 402})
