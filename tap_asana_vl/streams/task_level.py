"""Streams read once per task emitted in this run (stories, attachments and the like).

Fetched concurrently, a page of tasks at a time (see prefetch.py).
"""

from __future__ import annotations

import typing as t

from tap_asana_vl.streams.base import AsanaStream
from tap_asana_vl.streams.project_level import DERIVED_FIELDS, TasksStream
from tap_asana_vl.streams.reconcile import task_project_rows

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context

# Scopes some story fields need beyond stories:read (Asana's spec, GET /stories/{gid}).
STORY_FIELD_SCOPES: dict[str, tuple[str, ...]] = {"previews": ("attachments:read",)}

# Story fields task_history (streams/history.py) is made of: requested even when
# deselected from ``stories``, passed to its children with the story.
HISTORY_FIELDS = frozenset(
    {
        "created_at",
        "created_by",
        "resource_subtype",
        "type",
        "text",
        "assignee",
        "follower",
        "project",
        "tag",
        "task",
        "dependency",
        "duplicate_of",
        "duplicated_from",
        "custom_field",
        "old_name",
        "new_name",
        "old_dates",
        "new_dates",
        "old_section",
        "new_section",
        "old_enum_value",
        "new_enum_value",
        "old_multi_enum_values",
        "new_multi_enum_values",
        "old_number_value",
        "new_number_value",
        "old_text_value",
        "new_text_value",
        "old_date_value",
        "new_date_value",
        "old_people_value",
        "new_people_value",
        "old_resource_subtype",
        "new_resource_subtype",
        "old_approval_status",
        "new_approval_status",
    }
)


class StoryListing(AsanaStream):
    """Stories of one task (or subtask): what ``stories`` and ``subtask_stories`` share.

    A change story is handed to the stream's children (task_history) and to the
    ``change_story_handlers`` (the derived tables' tombstones); a comment is not.
    """

    path = "/tasks/{task_gid}/stories"
    required_scope = "stories:read"
    field_scopes = STORY_FIELD_SCOPES
    replication_key = "created_at"
    prefetch = True
    required_fields = HISTORY_FIELDS

    def __init__(self, tap: Tap, *args: t.Any, **kwargs: t.Any) -> None:
        """No change story handlers until the tap adds some."""
        super().__init__(tap, *args, **kwargs)
        #: Called with each change story's child context (``story_child_context``) once
        #: the story is written: the derived tables' tombstones, which the tap adds here
        #: rather than as child streams, so a story costs no sync of each table (most
        #: stories remove nothing).
        self.change_story_handlers: list[Callable[[Mapping[str, t.Any]], None]] = []

    def after_children(self, record: dict[str, t.Any], context: Context | None) -> None:
        """Hand a change story to the ``change_story_handlers``."""
        if self.change_story_handlers and is_change(record):
            story_context = story_child_context(record, context)
            for handler in self.change_story_handlers:
                handler(story_context)

    def get_child_context(
        self, record: dict[str, t.Any], context: Context | None
    ) -> dict[str, t.Any]:
        """The story itself (task_history is made of it) and its task's gid."""
        return story_child_context(record, context)

    def generate_child_contexts(
        self, record: dict[str, t.Any], context: Context | None
    ) -> Iterable[dict[str, t.Any] | None]:
        """None for a comment: every child of a story is made of changes (see is_change)."""
        if is_change(record):
            yield from super().generate_child_contexts(record, context)


class StoriesStream(StoryListing):
    """Comments and activity of each task emitted in this run.

    Asana bumps a task's ``modified_at`` whenever a story is added, so stories of
    unchanged tasks never need to be requested. All stories of a changed task are
    re-read (edited comments and new likes are caught too); one stream-wide bookmark
    keeps state small.
    """

    name = "stories"
    parent_stream_type = TasksStream
    context_label = ("task", "task_gid")


def is_change(story: Mapping[str, t.Any]) -> bool:
    """Whether a story records a change of its task (not a comment, not a like).

    Only such stories feed the story's children (task_history, the derived tables'
    tombstones); skipping the others spares a child sync per comment.
    """
    subtype = story.get("resource_subtype")
    if story.get("type") == "comment" or subtype == "comment_added":
        return False
    return subtype not in NOT_CHANGES


#: Stories that are not changes of the task (reactions to comments).
NOT_CHANGES = frozenset({"comment_liked", "liked", "comment_hearted", "hearted"})


def story_child_context(record: dict[str, t.Any], context: Context | None) -> dict[str, t.Any]:
    """What a story passes its children: the story, its task's gid and derived fields.

    With the task's current tags, dependencies and custom fields next to it, a story
    that removed one tells the derived tables whether that removal still holds.
    """
    context = context or {}
    return {
        "task_gid": context.get("task_gid"),
        "story": record,
        **{name: context.get(name) for name in DERIVED_FIELDS},
    }


class TaskProjectsStream(AsanaStream):
    """Bridge: one row per (task, project) with the task's section there. No requests."""

    name = "task_projects"
    path = "/tasks/{task_gid}/memberships"  # never requested: rows come from the task
    from_parent_field = "memberships"
    parent_stream_type = TasksStream
    primary_keys = ("task_gid", "project_gid")
    per_parent = True
    holds_user_objects = False  # flat rows, no user in them

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
    switch_setting = "include_attachments"

    def wanted(self, context: Mapping[str, t.Any]) -> bool:
        """Off with ``include_attachments: false``."""
        return not self.switched_off() and super().wanted(context)


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
