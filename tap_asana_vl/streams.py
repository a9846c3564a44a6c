"""Asana streams. Each one declares its endpoint, parent and keys; behaviour is in client.py.

The request cost of every stream per run is in the README's stream table.
"""

from __future__ import annotations

import datetime
import typing as t
from functools import cached_property

from tap_asana_vl.client import (
    AsanaStream,
    ScopeMissingError,
    SkippedObjectError,
    format_timestamp,
    parse_timestamp,
)

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from singer_sdk.helpers.types import Context

# Scopes some fields need beyond the stream's own (Asana's spec, GET /tasks/{task_gid}
# and GET /stories/{story_gid}); tests check every declaration against the spec.
TASK_FIELD_SCOPES: dict[str, tuple[str, ...]] = {
    "memberships": ("projects:read", "project_sections:read"),
    "actual_time_minutes": ("time_tracking_entries:read",),
}
STORY_FIELD_SCOPES: dict[str, tuple[str, ...]] = {"previews": ("attachments:read",)}


class WorkspacesStream(AsanaStream):
    """Workspaces and organizations the token can see (``workspace_gids`` narrows them)."""

    name = "workspaces"
    path = "/workspaces"
    required_scope = "workspaces:read"
    child_context_key = "workspace_gid"
    required_fields = frozenset({"is_organization"})

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """List all workspaces first (there are few) so a wrong filter fails up front."""
        records = list(super().get_records(context))
        wanted = self.config.get("workspace_gids") or []
        if wanted:
            self.asana_tap.check_gids_exist("workspace_gids", wanted, {r["gid"] for r in records})
            records = [r for r in records if r["gid"] in wanted]
        # One small request per configured project, before anything is synced: a typo
        # in project_gids must not surface as a silently empty table hours later.
        visible = {
            gid
            for gid in self.config.get("project_gids") or []
            if self.fetch_object(f"/projects/{gid}") is not None
        }
        self.asana_tap.check_gids_exist(
            "project_gids", self.config.get("project_gids") or [], visible
        )
        return records


class UsersStream(AsanaStream):
    """Users of each workspace; someone in several workspaces is emitted once."""

    name = "users"
    path = "/users"
    required_scope = "users:read"
    parent_stream_type = WorkspacesStream
    context_params: t.ClassVar[dict[str, str]] = {"workspace": "workspace_gid"}
    context_label = ("workspace", "workspace_gid")
    deduplicate = True


class ProjectsStream(AsanaStream):
    """Projects of each workspace, archived ones included unless configured otherwise.

    Asana has no server-side "modified since" filter for projects, so every run lists
    them all (one request per 100 projects); ``modified_at`` is the replication key so
    targets and the bookmark see what changed.
    """

    name = "projects"
    path = "/projects"
    required_scope = "projects:read"
    field_scopes: t.ClassVar[dict[str, tuple[str, ...]]] = {"team": ("teams:read",)}
    parent_stream_type = WorkspacesStream
    replication_key = "modified_at"
    context_params: t.ClassVar[dict[str, str]] = {"workspace": "workspace_gid"}
    context_label = ("workspace", "workspace_gid")
    child_context_key = "project_gid"
    # The progress lines name each project.
    required_fields = frozenset({"workspace", "name"})
    _to_sync = 0

    def extra_params(self, context: Mapping[str, t.Any]) -> dict[str, t.Any]:  # noqa: ARG002
        """Leave out `archived` to get both; `false` to skip archived projects."""
        return project_listing_params(self.config)

    def accept(self, record: dict[str, t.Any]) -> bool:
        """Apply the ``project_gids`` filter (children of dropped projects are skipped)."""
        return project_wanted(self.config, record["gid"])

    def source_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """The whole listing first (one request per 100 projects), to count the projects.

        The count makes the progress lines (``project 37/412 …``) possible. A listing
        cut off part-way still hands over what it read before the error goes on.
        """
        projects: list[dict[str, t.Any]] = []
        try:
            projects.extend(super().source_records(context))
        except SkippedObjectError:
            self._count_projects(projects, context)
            yield from projects
            raise
        self._count_projects(projects, context)
        yield from projects

    def _count_projects(self, projects: list[dict[str, t.Any]], context: Context | None) -> None:
        self._to_sync = sum(project_wanted(self.config, p["gid"]) for p in projects)
        if self.has_selected_descendents and context:
            workspace = str(context.get("workspace_gid"))
            self.asana_tap.progress.workspace_listed(workspace, self._to_sync)

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """One progress line per project, once its tasks and their children are written."""
        if not self.has_selected_descendents:
            yield from super().get_records(context)
            return
        progress = self.asana_tap.progress
        for position, record in enumerate(super().get_records(context), start=1):
            progress.project_started(position, self._to_sync, record.get("name") or record["gid"])
            yield record
            # The SDK asks for the next record only after this one's children are written.
            progress.project_done()


def project_listing_params(config: Mapping[str, t.Any]) -> dict[str, str]:
    """Filters for listing a workspace's projects, as the settings ask."""
    return {} if config.get("include_archived_projects", True) else {"archived": "false"}


def project_wanted(config: Mapping[str, t.Any], gid: str) -> bool:
    """Whether the ``project_gids`` setting lets project ``gid`` through."""
    wanted = config.get("project_gids")
    return not wanted or gid in wanted


class TasksStream(AsanaStream):
    """Tasks per project changed since the project's bookmark; multi-homed tasks once."""

    name = "tasks"
    path = "/tasks"
    required_scope = "tasks:read"
    field_scopes = TASK_FIELD_SCOPES
    parent_stream_type = ProjectsStream
    replication_key = "modified_at"
    modified_since_param = "modified_since"
    context_params: t.ClassVar[dict[str, str]] = {"project": "project_gid"}
    context_label = ("project", "project_gid")
    child_context_key = "task_gid"
    tap_fields = frozenset({"project_gid"})
    deduplicate = True
    # One bookmark per project, so an interrupted run resumes project by project.
    state_partitioning_keys = None
    # Children and bookkeeping read these even when a user deselects them.
    required_fields = frozenset({"workspace", "num_subtasks", "memberships", "actual_time_minutes"})

    def accept(self, record: dict[str, t.Any]) -> bool:
        """Remember tasks with subtasks: the subtasks stream walks only those."""
        if record.get("num_subtasks"):
            self.subtask_parents.setdefault(_workspace_gid(record), []).append(record["gid"])
        return True

    @cached_property
    def subtask_parents(self) -> dict[str, list[str]]:
        """Tasks emitted in this run that have subtasks, per workspace."""
        return {}


class StoriesStream(AsanaStream):
    """Comments and activity of each task emitted in this run.

    Asana bumps a task's ``modified_at`` whenever a story is added, so stories of
    unchanged tasks never need to be requested. All stories of a changed task are
    re-read (edited comments and new likes are caught too); one stream-wide bookmark
    keeps state small.
    """

    name = "stories"
    path = "/tasks/{task_gid}/stories"
    required_scope = "stories:read"
    field_scopes = STORY_FIELD_SCOPES
    parent_stream_type = TasksStream
    replication_key = "created_at"
    context_label = ("task", "task_gid")
    prefetch = True


# --- Per-task children (fetched concurrently for each page of changed tasks) -------------


class TaskProjectsStream(AsanaStream):
    """Bridge: one row per (task, project) with the task's section there. No requests."""

    name = "task_projects"
    path = "/tasks/{task_gid}/memberships"  # never requested: rows come from the task
    from_parent_field = "memberships"
    parent_stream_type = TasksStream
    primary_keys = ("task_gid", "project_gid")
    per_parent = True

    def source_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:  # noqa: ARG002
        """Rows from the task's ``memberships``, which the task record already holds."""
        task = self.parent_record() or {}
        for membership in task.get("memberships") or []:
            project = membership.get("project") or {}
            section = membership.get("section") or {}
            if project.get("gid"):
                yield {
                    "task_gid": task["gid"],
                    "project_gid": project["gid"],
                    "project_name": project.get("name"),
                    "section_gid": section.get("gid"),
                    "section_name": section.get("name"),
                }


class AttachmentsStream(AsanaStream):
    """Attachment metadata (no file contents) of each task changed since the last run."""

    name = "attachments"
    path = "/attachments"
    required_scope = "attachments:read"
    parent_stream_type = TasksStream
    context_params: t.ClassVar[dict[str, str]] = {"parent": "task_gid"}
    context_label = ("task", "task_gid")
    prefetch = True

    def wanted_for(self, parent: dict[str, t.Any]) -> bool:
        """Off with ``include_attachments: false``."""
        return bool(self.config.get("include_attachments", True)) and super().wanted_for(parent)


class TimeTrackingEntriesStream(AsanaStream):
    """Time tracking entries of each changed task (paid plans; 402 turns it off).

    Only tasks with time on them are asked: ``actual_time_minutes`` is the sum of a
    task's entries, so a task without it has none.
    """

    name = "time_tracking_entries"
    path = "/tasks/{task_gid}/time_tracking_entries"
    required_scope = "time_tracking_entries:read"
    parent_stream_type = TasksStream
    context_label = ("task", "task_gid")
    # The endpoint's entries carry no link to their task: added from the context.
    tap_fields = frozenset({"task_gid"})
    prefetch = True
    unavailable_statuses = frozenset({402})

    def wanted_for(self, parent: dict[str, t.Any]) -> bool:
        """Tasks with tracked time only."""
        return bool(parent.get("actual_time_minutes")) and super().wanted_for(parent)


# --- Subtasks ---------------------------------------------------------------------------


class SubtasksStream(AsanaStream):
    """Subtasks at any depth, with the full task schema (``parent`` says whose).

    Asana does not bump a task's ``modified_at`` when one of its subtasks changes, so
    changed subtasks are found per workspace, after that workspace's tasks:

    1. Asana's task search (paid plans): ``is_subtask=true`` and ``modified_at.after``
       = this stream's bookmark, sorted by ``modified_at``, 100 per request.
    2. The subtask trees of tasks changed in this run (``num_subtasks > 0`` only).
    3. Where search answers 402 (free plans): a full walk of every task's subtask tree
       every ``subtasks_full_walk_days`` days (0: every run), so edits to subtasks of
       unchanged tasks are caught at least that often.
    """

    name = "subtasks"
    path = "/tasks/{task_gid}/subtasks"
    required_scope = "tasks:read"
    field_scopes = TASK_FIELD_SCOPES
    parent_stream_type = WorkspacesStream
    # No SDK replication key: the SDK's bookmark (the newest record written) would also
    # count subtasks found by tree walks, which could pass changes that search has not
    # seen yet. The search's own high-water mark is kept per workspace instead.
    context_label = ("task", "task_gid")
    child_context_key = "task_gid"
    deduplicate = True
    # The walk follows num_subtasks; search pages by modified_at, then created_at.
    required_fields = frozenset({"workspace", "num_subtasks", "modified_at", "created_at"})
    search_page = 100  # Asana's search returns at most 100 results, with no offset

    def wanted_for(self, parent: dict[str, t.Any]) -> bool:
        """Off with ``include_subtasks: false``."""
        return bool(self.config.get("include_subtasks", True)) and super().wanted_for(parent)

    def source_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Changed subtasks of one workspace (see the class docstring)."""
        workspace = str((context or {})["workspace_gid"])
        tasks = t.cast("TasksStream", self._tap.streams["tasks"])
        parents = list(dict.fromkeys(tasks.subtask_parents.pop(workspace, [])))
        bookmarks = self.stream_state.setdefault("search_bookmarks", {})
        search = _SearchProgress(bookmarks.get(workspace))
        try:
            yield from self._search_changed(workspace, search)
        except SearchTiesError as exc:
            self.logger.warning(
                "Asana's search cannot page past %s in workspace %s (more than %d "
                "subtasks created and modified in the same millisecond?): walking every "
                "task's subtasks there instead",
                exc,
                workspace,
                self.search_page,
            )
            parents = self._all_tasks_with_subtasks(workspace)
            self._walked_workspaces.add(workspace)
        except SearchUnavailableError as exc:
            self.logger.info(
                "Task search unavailable in workspace %s (%s): using subtask walks",
                workspace,
                exc,
            )
            if self._full_walk_due(workspace):
                self.logger.info("Walking every task's subtasks in workspace %s", workspace)
                parents = self._all_tasks_with_subtasks(workspace)
                self._walked_workspaces.add(workspace)
        yield from self._subtrees(parents)
        walked = workspace in self._walked_workspaces
        started = datetime.datetime.now(datetime.timezone.utc)

        def advance_state() -> None:
            # Asana's search index lags edits by seconds to minutes, so never let the
            # mark pass "now - lag": a late-indexed change is found next run (repeats
            # are harmless, targets upsert).
            if search.high_water:
                ceiling = format_timestamp(started - SEARCH_INDEX_LAG)
                bookmarks[workspace] = min(search.high_water, ceiling)
            if walked:
                # Per workspace, and only now that this walk's records are out: a run
                # killed during another workspace's walk redoes that one next time.
                walks = self.stream_state.setdefault("full_walks", {})
                walks[workspace] = format_timestamp(started)

        self.after_emit(advance_state)

    @cached_property
    def _walked_workspaces(self) -> set[str]:
        return set()

    def _search_changed(
        self, workspace: str, search: _SearchProgress
    ) -> Iterator[dict[str, t.Any]]:
        """Subtasks modified since the bookmark, via search, as they arrive.

        Raises ``SearchUnavailableError`` before yielding anything where search is a
        paid feature. Only gids and the newest ``modified_at`` are kept in memory.

        Search has no offset: pages move ``modified_at.after`` up to the last result
        (minus 1 ms, so the ties at that instant come back and are skipped as seen). A
        full page of one single instant (a bulk edit) cannot move that way; the instant
        is then read on its own, paged by ``created_at`` (see ``_search_instant``).
        """
        after = search.high_water or self.config.get("start_date")
        if after:
            after = format_timestamp(parse_timestamp(str(after)))
        seen: set[str] = set()
        while True:
            try:
                page = self._search_page(workspace, {"modified_at.after": after})
            except ScopeMissingError:
                raise  # the stream is off, not just search
            except SkippedObjectError as exc:
                if seen:
                    raise
                raise SearchUnavailableError(str(exc.status)) from None
            new = list(self._unseen(page, seen, search))
            yield from new
            if len(page) < self.search_page:
                return
            if not new:
                # The bound did not move the search forward (Asana treating it as
                # inclusive?): never loop on the same page; walk instead.
                raise SearchTiesError(after or "start")
            first, last = page[0]["modified_at"], page[-1]["modified_at"]
            if first == last:
                yield from self._search_instant(workspace, last, seen, search)
                after = last  # exclusive: everything at that instant is read now
            else:
                after = _just_before(last)

    def _search_instant(
        self, workspace: str, instant: str, seen: set[str], search: _SearchProgress
    ) -> Iterator[dict[str, t.Any]]:
        """Every subtask modified at exactly ``instant``, paged by ``created_at``."""
        window = {
            "modified_at.after": _just_before(instant),
            "modified_at.before": _just_after(instant),
        }
        created_after: str | None = None
        while True:
            params = {**window, "sort_by": "created_at", "created_at.after": created_after}
            page = self._search_page(workspace, params)
            new = list(self._unseen(page, seen, search))
            yield from new
            if len(page) < self.search_page:
                return
            first, last = page[0]["created_at"], page[-1]["created_at"]
            if first == last or not new:
                # A full page created and modified in the same millisecond: search
                # cannot tell them apart. Never skip them: walk this workspace instead.
                raise SearchTiesError(instant)
            created_after = _just_before(last)

    def _search_page(self, workspace: str, bounds: Mapping[str, t.Any]) -> list[dict[str, t.Any]]:
        params = {
            "limit": self.search_page,
            "is_subtask": "true",
            "sort_by": "modified_at",
            "sort_ascending": "true",
            "opt_fields": self.opt_fields,
            **bounds,
        }
        path = f"/workspaces/{workspace}/tasks/search"
        return t.cast("list[dict[str, t.Any]]", self.get_body(path, params)["data"])

    @staticmethod
    def _unseen(
        page: list[dict[str, t.Any]], seen: set[str], search: _SearchProgress
    ) -> Iterator[dict[str, t.Any]]:
        for record in page:
            if record["gid"] not in seen:
                seen.add(record["gid"])
                search.saw(record.get("modified_at"))
                yield record

    def _full_walk_due(self, workspace: str) -> bool:
        if workspace in self._walked_workspaces:
            return True
        last = self.stream_state.get("full_walks", {}).get(workspace)
        if not last:
            return True
        days = float(self.config.get("subtasks_full_walk_days", 7))
        age = datetime.datetime.now(datetime.timezone.utc) - parse_timestamp(last)
        return age >= datetime.timedelta(days=days)

    def _all_tasks_with_subtasks(self, workspace: str) -> list[str]:
        """Tasks with subtasks in the workspace's projects.

        The projects are listed here: this stream must not depend on the projects
        stream having run (it may be deselected).
        """
        projects = self.iter_data(
            "/projects",
            {"workspace": workspace, "opt_fields": "gid", **project_listing_params(self.config)},
        )
        gids: dict[str, None] = {}
        for project in (p["gid"] for p in projects if project_wanted(self.config, p["gid"])):
            params = {"project": project, "opt_fields": "num_subtasks"}
            try:
                for task in self.iter_data("/tasks", params):
                    if task.get("num_subtasks"):
                        gids[task["gid"]] = None
            except SkippedObjectError as exc:
                self._skip({"task_gid": f"(tasks of project {project})"}, exc)
        return list(gids)

    def _subtrees(self, parents: list[str]) -> Iterator[dict[str, t.Any]]:
        """Every subtask below ``parents``, fetched concurrently, depth first per tree.

        A page of parents at a time, so memory holds one batch of trees, not all.
        """
        for start in range(0, len(parents), self.page_size):
            batch = parents[start : start + self.page_size]
            for tree in self.asana_tap.executor.map(self._subtree, batch):
                yield from tree

    def _subtree(self, task_gid: str) -> list[dict[str, t.Any]]:
        try:
            records = list(self.list_records({"task_gid": task_gid}))
        except SkippedObjectError as exc:
            # One task deleted or hidden since it was listed: skip its subtree only.
            self._skip({"task_gid": task_gid}, exc)
            return []
        for record in list(records):
            if record.get("num_subtasks"):
                records.extend(self._subtree(record["gid"]))
        return records


# How far behind edits Asana's search index may be (its docs: 10-60 s, more during
# incidents).
SEARCH_INDEX_LAG = datetime.timedelta(minutes=10)


class SearchUnavailableError(Exception):
    """Asana's task search is not available in this workspace (a paid feature)."""


class SearchTiesError(Exception):
    """Search cannot move past an instant (more ties than a page holds); the argument."""


def _just_before(timestamp: str) -> str:
    return format_timestamp(parse_timestamp(timestamp) - datetime.timedelta(milliseconds=1))


def _just_after(timestamp: str) -> str:
    return format_timestamp(parse_timestamp(timestamp) + datetime.timedelta(milliseconds=1))


class _SearchProgress:
    """The newest ``modified_at`` a search returned (its safe high-water mark)."""

    def __init__(self, high_water: str | None) -> None:
        self.high_water = high_water

    def saw(self, modified_at: str | None) -> None:
        if modified_at and (self.high_water is None or modified_at > self.high_water):
            self.high_water = modified_at


class SubtaskStoriesStream(AsanaStream):
    """Stories of each subtask emitted in this run (the ``stories`` schema)."""

    name = "subtask_stories"
    path = "/tasks/{task_gid}/stories"
    required_scope = "stories:read"
    field_scopes = STORY_FIELD_SCOPES
    parent_stream_type = SubtasksStream
    replication_key = "created_at"
    context_label = ("subtask", "task_gid")
    prefetch = True


# --- Per-project children -------------------------------------------------------------


class SectionsStream(AsanaStream):
    """Sections (columns / headings) of each project."""

    name = "sections"
    path = "/projects/{project_gid}/sections"
    required_scope = None  # full permissions only
    parent_stream_type = ProjectsStream
    context_label = ("project", "project_gid")
    prefetch = True


class ProjectMembershipsStream(AsanaStream):
    """Who is a member of each project, with what access level."""

    name = "project_memberships"
    path = "/projects/{project_gid}/project_memberships"
    required_scope = None  # full permissions only
    parent_stream_type = ProjectsStream
    context_label = ("project", "project_gid")
    prefetch = True


class ProjectCustomFieldSettingsStream(AsanaStream):
    """Which custom fields each project uses."""

    name = "project_custom_field_settings"
    path = "/projects/{project_gid}/custom_field_settings"
    required_scope = "projects:read"
    parent_stream_type = ProjectsStream
    context_label = ("project", "project_gid")
    prefetch = True


class StatusUpdatesStream(AsanaStream):
    """Status updates of each project (the replacement for project statuses)."""

    name = "status_updates"
    path = "/status_updates"
    required_scope = None  # full permissions only
    parent_stream_type = ProjectsStream
    context_params: t.ClassVar[dict[str, str]] = {"parent": "project_gid"}
    context_label = ("project", "project_gid")
    prefetch = True


# --- Per-workspace children -----------------------------------------------------------


class TagsStream(AsanaStream):
    """Tags of each workspace."""

    name = "tags"
    path = "/workspaces/{workspace_gid}/tags"
    required_scope = "tags:read"
    parent_stream_type = WorkspacesStream
    context_label = ("workspace", "workspace_gid")


class CustomFieldsStream(AsanaStream):
    """Custom field definitions (with enum options) of each workspace."""

    name = "custom_fields"
    path = "/workspaces/{workspace_gid}/custom_fields"
    required_scope = "custom_fields:read"
    parent_stream_type = WorkspacesStream
    context_label = ("workspace", "workspace_gid")


class TeamsStream(AsanaStream):
    """Teams of each organization (plain workspaces have none: no request)."""

    name = "teams"
    path = "/workspaces/{workspace_gid}/teams"
    required_scope = "teams:read"
    parent_stream_type = WorkspacesStream
    context_label = ("workspace", "workspace_gid")
    child_context_key = "team_gid"

    def wanted_for(self, parent: dict[str, t.Any]) -> bool:
        """Only organizations have teams."""
        return parent.get("is_organization") is not False and super().wanted_for(parent)


class TeamMembershipsStream(AsanaStream):
    """Members of each team."""

    name = "team_memberships"
    path = "/teams/{team_gid}/team_memberships"
    required_scope = "team_memberships:read"
    field_scopes: t.ClassVar[dict[str, tuple[str, ...]]] = {"team": ("teams:read",)}
    parent_stream_type = TeamsStream
    context_label = ("team", "team_gid")
    per_parent = True


class PortfoliosStream(AsanaStream):
    """Portfolios owned by the token's user (Asana lists only an owner's portfolios)."""

    name = "portfolios"
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
    path = "/goals"
    required_scope = "goals:read"
    # time_periods:read is not in Asana's scope list: scoped tokens never get it.
    field_scopes: t.ClassVar[dict[str, tuple[str, ...]]] = {"time_period": ("time_periods:read",)}
    parent_stream_type = WorkspacesStream
    context_params: t.ClassVar[dict[str, str]] = {"workspace": "workspace_gid"}
    context_label = ("workspace", "workspace_gid")
    unavailable_statuses = frozenset({400, 402})


def _workspace_gid(record: Mapping[str, t.Any]) -> str:
    workspace = record.get("workspace") or {}
    return str(workspace.get("gid"))
