"""Asana streams. Each one declares its endpoint, parent and keys; behaviour is in client.py.

Request cost per run (P = page size, 100 by default):
- workspaces: 1 request per P workspaces.
- users: 1 per P users, per workspace.
- projects: 1 per P projects, per workspace.
- tasks: 1 per P changed tasks, per project (one request for an unchanged project).
- stories: 1 per P stories, per task changed since the last run.
"""

from __future__ import annotations

import typing as t

from tap_asana_vl.client import AsanaStream

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from singer_sdk.helpers.types import Context


class WorkspacesStream(AsanaStream):
    """Workspaces and organizations the token can see (``workspace_gids`` narrows them)."""

    name = "workspaces"
    path = "/workspaces"
    child_context_key = "workspace_gid"

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
    parent_stream_type = WorkspacesStream
    context_params: t.ClassVar[dict[str, str]] = {"workspace": "workspace_gid"}
    context_label = ("workspace", "workspace_gid")
    state_partitioning_keys: t.ClassVar[list[str]] = []
    deduplicate = True


class ProjectsStream(AsanaStream):
    """Projects of each workspace, archived ones included unless configured otherwise.

    Asana has no server-side "modified since" filter for projects, so every run lists
    them all (one request per 100 projects); ``modified_at`` is the replication key so
    targets and the bookmark see what changed.
    """

    name = "projects"
    path = "/projects"
    parent_stream_type = WorkspacesStream
    replication_key = "modified_at"
    context_params: t.ClassVar[dict[str, str]] = {"workspace": "workspace_gid"}
    context_label = ("workspace", "workspace_gid")
    child_context_key = "project_gid"
    state_partitioning_keys: t.ClassVar[list[str]] = []

    def extra_params(self, context: Mapping[str, t.Any]) -> dict[str, t.Any]:  # noqa: ARG002
        """Leave out `archived` to get both; `false` to skip archived projects."""
        if self.config.get("include_archived_projects", True):
            return {}
        return {"archived": "false"}

    def accept(self, record: dict[str, t.Any]) -> bool:
        """Apply the ``project_gids`` filter (children of dropped projects are skipped)."""
        wanted = self.config.get("project_gids")
        return not wanted or record["gid"] in wanted


class TasksStream(AsanaStream):
    """Tasks per project changed since the project's bookmark; multi-homed tasks once."""

    name = "tasks"
    path = "/tasks"
    parent_stream_type = ProjectsStream
    replication_key = "modified_at"
    modified_since_param = "modified_since"
    context_params: t.ClassVar[dict[str, str]] = {"project": "project_gid"}
    context_label = ("project", "project_gid")
    child_context_key = "task_gid"
    tap_fields = frozenset({"project_gid"})
    deduplicate = True


class StoriesStream(AsanaStream):
    """Comments and activity of each task emitted in this run.

    Asana bumps a task's ``modified_at`` whenever a story is added, so stories of
    unchanged tasks never need to be requested. All stories of a changed task are
    re-read (edited comments and new likes are caught too); one stream-wide bookmark
    keeps state small.
    """

    name = "stories"
    path = "/tasks/{task_gid}/stories"
    parent_stream_type = TasksStream
    replication_key = "created_at"
    context_label = ("task", "task_gid")
    state_partitioning_keys: t.ClassVar[list[str]] = []
    prefetch = True
