"""Streams read once per task emitted in this run (stories, attachments and the like).

Fetched concurrently, a page of tasks at a time (see prefetch.py).
"""

from __future__ import annotations

import typing as t

from tap_asana_vl.streams.base import AsanaStream
from tap_asana_vl.streams.project_level import TasksStream
from tap_asana_vl.streams.reconcile import task_project_rows

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from singer_sdk.helpers.types import Context

# Scopes some story fields need beyond stories:read (Asana's spec, GET /stories/{gid}).
STORY_FIELD_SCOPES: dict[str, tuple[str, ...]] = {"previews": ("attachments:read",)}


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


class TaskProjectsStream(AsanaStream):
    """Bridge: one row per (task, project) with the task's section there. No requests."""

    name = "task_projects"
    path = "/tasks/{task_gid}/memberships"  # never requested: rows come from the task
    from_parent_field = "memberships"
    parent_stream_type = TasksStream
    primary_keys = ("task_gid", "project_gid")
    per_parent = True

    def source_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Rows from the task's ``memberships``, which the task passes its children."""
        context = context or {}
        yield from task_project_rows(context["task_gid"], context.get("memberships"))


class AttachmentsStream(AsanaStream):
    """Attachment metadata (no file contents) of each task changed since the last run."""

    name = "attachments"
    path = "/attachments"
    required_scope = "attachments:read"
    parent_stream_type = TasksStream
    context_params: t.ClassVar[dict[str, str]] = {"parent": "task_gid"}
    context_label = ("task", "task_gid")
    prefetch = True

    def wanted(self, context: Mapping[str, t.Any]) -> bool:
        """Off with ``include_attachments: false``."""
        return bool(self.config["include_attachments"]) and super().wanted(context)


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

    def wanted(self, context: Mapping[str, t.Any]) -> bool:
        """Tasks with tracked time only."""
        return bool(context.get("actual_time_minutes")) and super().wanted(context)
