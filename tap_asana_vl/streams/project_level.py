"""Streams listed once per project: its tasks, sections, members, custom fields, updates."""

from __future__ import annotations

import typing as t

from tap_asana_vl.streams.base import AsanaStream, workspace_of
from tap_asana_vl.streams.workspace_level import ProjectsStream

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

# Scopes some fields need beyond the stream's own (Asana's spec, GET /tasks/{task_gid});
# tests check every declaration against the spec.
TASK_FIELD_SCOPES: dict[str, tuple[str, ...]] = {
    "memberships": ("projects:read", "project_sections:read"),
    "actual_time_minutes": ("time_tracking_entries:read",),
}


# Fields of a task (or subtask) its derived tables are made of (streams/derived.py):
# passed to its children, so those tables cost no request.
DERIVED_FIELDS = ("modified_at", "custom_fields", "tags", "followers", "dependencies")


def derived_fields(record: dict[str, t.Any]) -> dict[str, t.Any]:
    """What a task passes its derived tables (``DERIVED_FIELDS`` of its record)."""
    return {name: record.get(name) for name in DERIVED_FIELDS}


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
    # One bookmark per project, so an interrupted run resumes project by project. (The
    # context a project passes is therefore exactly {"project_gid": …}: it is the key of
    # the bookmark.)
    state_partitioning_keys = None
    # Children read these even when a user deselects them.
    required_fields = frozenset(
        {"workspace", "num_subtasks", "memberships", "actual_time_minutes", *DERIVED_FIELDS}
    )

    def get_child_context(
        self,
        record: dict[str, t.Any],
        context: Context | None,  # noqa: ARG002
    ) -> dict[str, t.Any]:
        """What the task's children need of it.

        Its gid and workspace; whether it has subtasks and tracked time (its children
        skip the request where it has none); its ``memberships`` (the rows of
        task_projects); what the derived tables are made of (``derived_fields``).
        """
        return {
            "task_gid": record["gid"],
            "workspace_gid": workspace_of(record),
            "num_subtasks": record.get("num_subtasks"),
            "actual_time_minutes": record.get("actual_time_minutes"),
            "memberships": record.get("memberships"),
            **derived_fields(record),
        }


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
