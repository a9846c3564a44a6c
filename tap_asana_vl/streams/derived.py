"""Derived tables (issue #16): rows built from records the tap already fetched.

A task's ``custom_fields``, ``tags``, ``followers`` and ``dependencies`` become one row
per (task, value): typed custom field values and bridge tables an analyst can join
without ``unnest``. They cost no request: the task (or subtask) passes those fields in
the context it gives its children (``task_child_context``), and these streams turn the
context into rows. Every row carries the task's ``modified_at``, and every row of a
changed task is re-emitted, so the newest rows of a task are its current ones.

Each stream is a child of ``tasks`` and is also synced under ``subtasks``
(``also_child_of``), so subtasks get their rows too, whichever way they were found.

Removals, without per-task state (details in the README, "Derived tables"):

- a custom field the task lists with no value is emitted with ``_sdc_deleted_at`` (the
  task record itself says the value is gone);
- a follower, tag or dependency an event of the task's project says was removed
  (``event_tombstones``; the tasks stream reads the events and the task again, see
  deletes.py) is written with ``_sdc_deleted_at`` = the event's time, if the task's
  current record no longer has it;
- where ``stories`` / ``subtask_stories`` are selected (so read anyway), a story that
  removed something the task no longer has (``removed_from_tag``,
  ``dependency_removed``, a custom field change of a field the task no longer lists)
  re-emits that pair with ``_sdc_deleted_at`` = the story's time;
- anything else (a field of a project the task left, the pairs of a deleted task, a
  lost event) is marked by the reconcile pass (reconcile.py): it writes every live
  task's rows with its table version and its ACTIVATE_VERSION marks the others. Until
  then such a pair keeps an older ``task_modified_at`` (``modified_at`` for custom
  field values) than the task's current ``modified_at``.
"""

from __future__ import annotations

import typing as t

import tap_asana_vl.streams.full_reads as full_reads
import tap_asana_vl.streams.purge as purge
from tap_asana_vl.streams.base import AsanaStream
from tap_asana_vl.streams.project_level import TasksStream
from tap_asana_vl.streams.subtasks import SubtasksStream, SubtaskStoriesStream
from tap_asana_vl.streams.task_level import StoriesStream
from tap_asana_vl.streams.workspace_level import (
    WorkspacesStream,
    note_projects_seen,
    project_listing_params,
    project_wanted,
)

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from singer_sdk.helpers.types import Context

    from tap_asana_vl.streams.deletes import ValueRemoval


class DerivedStream(AsanaStream):
    """Rows made from the context the parent passes; never a request of its own."""

    per_parent = True
    holds_user_objects = False  # flat rows: users by gid only (user_gids)
    #: Further parents whose records feed this stream too (tasks *and* subtasks).
    also_child_of: t.ClassVar[tuple[type[AsanaStream], ...]] = ()

    def source_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """The rows of the parent record the context describes.

        Rows marked deleted (a removed value, a custom field without one) are written
        as tombstones, with table version 1, so that ``hard_delete`` removes them
        (purge.py); the live ones are synced as usual.
        """
        for row in self.rows(context or {}):
            if purge.is_tombstone(row):
                purge.write_tombstones(self.services.purges, self, [row])
            else:
                yield row

    def rows(self, context: Mapping[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        """Override: the rows for one parent record."""
        raise NotImplementedError


class TaskDerivedStream(DerivedStream):
    """Rows of each task and subtask emitted in this run, and tombstones from its stories.

    Under a task (or subtask), the rows of its current values. Where ``stories`` /
    ``subtask_stories`` are selected (so read anyway: ``tombstones_from``), each change
    story is handed to ``write_story_tombstones`` (no sync of this stream per story): a
    story that removed a value the task no longer has writes that pair again with
    ``_sdc_deleted_at`` = the story's time.
    """

    path = "/tasks/{task_gid}"  # never requested: rows come from the task record
    required_scope = "tasks:read"
    parent_stream_type = TasksStream
    also_child_of = (SubtasksStream,)
    #: Streams whose change stories reveal removals; the tap hands their stories to
    #: ``write_story_tombstones`` only where they are selected, so a tombstone never
    #: costs a request.
    tombstones_from: t.ClassVar[tuple[type[AsanaStream], ...]] = (
        StoriesStream,
        SubtaskStoriesStream,
    )

    def rows(self, context: Mapping[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        """The rows of the task's current values."""
        return self.current_rows(context)

    def write_story_tombstones(self, context: Mapping[str, t.Any]) -> None:
        """Write the tombstone of the change story ``context`` carries, if it has one.

        ``context``: what a story passes its children (``story_child_context``). Called
        by the story listing for each change story, instead of a sync of this stream per
        story (a story yields at most one row, always a tombstone).
        """
        if not self.selected or not self.wanted(context):
            return
        row = self.story_tombstone(context)
        if row is not None:
            purge.write_tombstones(self.services.purges, self, [row])

    def story_tombstone(self, context: Mapping[str, t.Any]) -> dict[str, t.Any] | None:
        """The pair the story in ``context`` removed, if the task no longer has it."""
        story = context.get("story") or {}
        removed = self.removed_by(story)
        if removed is None:
            return None
        gid, row = removed
        if gid in {gid_of(item) for item in context.get(self.task_field) or []}:
            return None
        return {
            "task_gid": context["task_gid"],
            **row,
            self.time_column: context.get("modified_at"),
            "_sdc_deleted_at": story.get("created_at"),
        }

    #: The task field the rows come from, and the column holding the task's modified_at.
    task_field: t.ClassVar[str] = ""
    time_column: t.ClassVar[str] = "task_modified_at"
    #: Asana's events name a value removed from ``task_field`` (``change.field`` is the
    #: task's property name, ``change.removed_value`` the compact object): the tasks
    #: stream keeps those removals (deletes.py) and this stream turns them into
    #: tombstones (``event_tombstones``).
    removals_from_events: t.ClassVar[bool] = False

    def value_columns(self, value: Mapping[str, t.Any]) -> dict[str, t.Any]:
        """Override: the key (and name) columns of the pair for a compact ``value``."""
        raise NotImplementedError

    def event_tombstones(
        self,
        removals: Iterable[ValueRemoval],
        current: Mapping[str, Mapping[str, t.Any] | None],
    ) -> list[dict[str, t.Any]]:
        """Tombstones of the pairs events say were removed and the task no longer has.

        ``current``: each task read again after the events (None: deleted). A task that
        has the value again (added back) gets none, nor one that could not be read (no
        access: nothing is known). ``_sdc_deleted_at`` is the event's time.
        """
        rows = []
        for removal in removals:
            if removal.task_gid not in current:
                continue
            record = current[removal.task_gid]
            if record is not None and removal.value["gid"] in {
                gid_of(item) for item in record.get(self.task_field) or []
            }:
                continue
            rows.append(
                {
                    "task_gid": removal.task_gid,
                    **self.value_columns(removal.value),
                    self.time_column: record.get("modified_at") if record else None,
                    "_sdc_deleted_at": removal.at,
                }
            )
        return rows

    def current_rows(self, context: Mapping[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        """Override: the rows of the task's current values."""
        raise NotImplementedError

    def removed_by(
        self,
        story: Mapping[str, t.Any],  # noqa: ARG002
    ) -> tuple[str, dict[str, t.Any]] | None:
        """Override: (gid, key columns) of what ``story`` removed, if it removed one."""
        return None


# --- Custom field values ----------------------------------------------------------------


def gid_of(obj: t.Any) -> str | None:
    """The gid of a compact object (None for anything else)."""
    return str(obj["gid"]) if isinstance(obj, dict) and obj.get("gid") else None


def _names_and_gids(items: t.Any) -> tuple[list[str], list[str | None]]:
    items = [i for i in items or [] if isinstance(i, dict) and i.get("gid")]
    return [str(i["gid"]) for i in items], [i.get("name") for i in items]


def custom_field_value_row(value: Mapping[str, t.Any], deleted_at: str | None) -> dict[str, t.Any]:
    """Typed columns of one custom field value (Asana's CustomFieldResponse on an object).

    A field without a value gets ``_sdc_deleted_at`` = ``deleted_at``: Asana lists every
    field of an object's projects, set or not, so an empty one is a value that is gone
    (or never was), known from the record alone.
    """
    enum = value.get("enum_value")
    multi_gids, multi_names = _names_and_gids(value.get("multi_enum_values"))
    people_gids, _ = _names_and_gids(value.get("people_value"))
    date_value = value.get("date_value") or {}
    row: dict[str, t.Any] = {
        "custom_field_gid": str(value["gid"]),
        "custom_field_name": value.get("name"),
        # Projects' compact values document `type` only; tasks' also resource_subtype.
        "type": value.get("resource_subtype") or value.get("type"),
        "text_value": value.get("text_value"),
        "number_value": value.get("number_value"),
        "enum_option_gid": gid_of(enum),
        "enum_option_name": enum.get("name") if isinstance(enum, dict) else None,
        "multi_enum_option_gids": multi_gids,
        "multi_enum_option_names": multi_names,
        "date_value": date_value.get("date"),
        "date_time_value": date_value.get("date_time"),
        "people_gids": people_gids,
        "display_value": value.get("display_value"),
    }
    empty = not any(
        row[k] not in (None, "", [])
        for k in (
            "text_value",
            "number_value",
            "enum_option_gid",
            "multi_enum_option_gids",
            "date_value",
            "date_time_value",
            "people_gids",
            "display_value",
        )
    )
    row["_sdc_deleted_at"] = deleted_at if empty else None
    return row


class TaskCustomFieldValuesStream(TaskDerivedStream):
    """One row per (task, custom field) with typed value columns."""

    name = "task_custom_field_values"
    primary_keys = ("task_gid", "custom_field_gid")
    task_field = "custom_fields"
    time_column = "modified_at"

    def user_gids(self, record: dict[str, t.Any]) -> Iterable[str]:
        """People field values name users by gid."""
        return record.get("people_gids") or ()

    def current_rows(self, context: Mapping[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        """A row per custom field the task lists (set or not)."""
        modified = context.get("modified_at")
        for value in context.get("custom_fields") or []:
            if isinstance(value, dict) and value.get("gid"):
                row = custom_field_value_row(value, modified)
                yield {"task_gid": context["task_gid"], **row, "modified_at": modified}

    def removed_by(self, story: Mapping[str, t.Any]) -> tuple[str, dict[str, t.Any]] | None:
        """A change story of a field the task no longer lists (removed from its project)."""
        field = story.get("custom_field")
        if not str(story.get("resource_subtype") or "").endswith("_custom_field_changed"):
            return None
        gid = gid_of(field)
        if gid is None:
            return None
        return gid, {"custom_field_gid": gid, "custom_field_name": field.get("name")}


# --- Bridges ----------------------------------------------------------------------------


class TaskBridgeStream(TaskDerivedStream):
    """Bridge: one row per (task, value of ``task_field``), made by ``value_columns``."""

    removals_from_events = True
    #: The story subtype that removes a value, and the story field that names it.
    removal_subtype: t.ClassVar[str] = ""
    story_field: t.ClassVar[str] = ""

    def removed_by(self, story: Mapping[str, t.Any]) -> tuple[str, dict[str, t.Any]] | None:
        """A ``removal_subtype`` story names the value in ``story_field``."""
        value = story.get(self.story_field)
        gid = gid_of(value)
        if story.get("resource_subtype") != self.removal_subtype or gid is None:
            return None
        return gid, self.value_columns(value)

    def current_rows(self, context: Mapping[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        """From the task's ``task_field``."""
        for value in context.get(self.task_field) or []:
            if gid_of(value):
                yield {
                    "task_gid": context["task_gid"],
                    **self.value_columns(value),
                    self.time_column: context.get("modified_at"),
                    "_sdc_deleted_at": None,
                }


class TaskTagsStream(TaskBridgeStream):
    """Bridge: one row per (task, tag)."""

    name = "task_tags"
    primary_keys = ("task_gid", "tag_gid")
    task_field = "tags"
    removal_subtype = "removed_from_tag"
    story_field = "tag"

    def value_columns(self, value: Mapping[str, t.Any]) -> dict[str, t.Any]:
        """The tag's gid and name."""
        return {"tag_gid": gid_of(value), "tag_name": value.get("name")}


class TaskFollowersStream(TaskBridgeStream):
    """Bridge: one row per (task, follower)."""

    name = "task_followers"
    primary_keys = ("task_gid", "user_gid")
    task_field = "followers"
    # (If Asana writes one: a follower's removal is known from its event.)
    removal_subtype = "followers_removed"
    story_field = "follower"

    def value_columns(self, value: Mapping[str, t.Any]) -> dict[str, t.Any]:
        """The follower's gid and name."""
        return {"user_gid": gid_of(value), "user_name": value.get("name")}

    def user_gids(self, record: dict[str, t.Any]) -> Iterable[str]:
        """The follower."""
        return (record["user_gid"],)


class TaskDependenciesStream(TaskBridgeStream):
    """Bridge: one row per (task, task it depends on), from the task's ``dependencies``.

    ``GET /tasks`` (and ``/subtasks``, search) document ``dependencies`` in their
    ``opt_fields`` (opt-in, compact ``{gid, resource_type}``), so no
    ``/tasks/{gid}/dependencies`` request is needed.
    """

    name = "task_dependencies"
    primary_keys = ("task_gid", "depends_on_gid")
    task_field = "dependencies"
    removal_subtype = "dependency_removed"
    story_field = "dependency"

    def value_columns(self, value: Mapping[str, t.Any]) -> dict[str, t.Any]:
        """The gid of the task it depended on."""
        return {"depends_on_gid": gid_of(value)}


# --- Projects ---------------------------------------------------------------------------


class ProjectCustomFieldValuesStream(AsanaStream):
    """One row per (project, custom field) with typed value columns.

    Not derived from the ``projects`` stream's records: a project passes its children
    only its gid and workspace (the tasks' bookmarks are keyed by the gid), so this stream
    lists each workspace's projects itself, asking only for ``custom_fields`` and
    ``modified_at``: one request per 100 projects per workspace, none when deselected.

    Read in full on every run like ``projects`` (``full_read_level``): its rows carry the
    run's table version and, under the conditions of full_reads.py, one ACTIVATE_VERSION
    marks the pairs not written (a field removed from a project, a deleted project's).
    The projects it lists count as seen, like the projects stream's.
    """

    name = "project_custom_field_values"
    full_read_level = full_reads.PROJECT
    lists_projects = True
    path = "/projects"
    required_scope = "projects:read"
    parent_stream_type = WorkspacesStream
    context_label = ("workspace", "workspace_gid")
    primary_keys = ("project_gid", "custom_field_gid")
    #: What the narrow listing asks for (GET /projects documents each).
    listing_fields = (
        "modified_at",
        "custom_fields.name",
        "custom_fields.type",
        "custom_fields.text_value",
        "custom_fields.number_value",
        "custom_fields.enum_value.name",
        "custom_fields.multi_enum_values.name",
        "custom_fields.date_value.date",
        "custom_fields.date_value.date_time",
        "custom_fields.display_value",
    )

    def source_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Rows of every wanted project of the workspace."""
        workspace = str((context or {})["workspace_gid"])
        params = {
            "workspace": workspace,
            "limit": self.page_size,
            "opt_fields": ",".join(self.listing_fields),
            **project_listing_params(self.config),
        }
        for project in self.list_endpoint("/projects", params):
            note_projects_seen(self, (project["gid"],))
            if not project_wanted(self.config, project["gid"]):
                continue
            modified = project.get("modified_at")
            for value in project.get("custom_fields") or []:
                if isinstance(value, dict) and value.get("gid"):
                    row = custom_field_value_row(value, modified)
                    yield {"project_gid": project["gid"], **row, "modified_at": modified}
