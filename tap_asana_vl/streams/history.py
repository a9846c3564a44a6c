"""``task_history``: one row per change story of a task or subtask, no request of its own.

Asana records every change to a task as a system story (``assigned``, ``section_changed``,
``enum_custom_field_changed`` …), and the tap already reads all stories of every task
that changed. Each story passes itself to this stream (``StoriesStream`` and
``SubtaskStoriesStream`` give their children the story), which turns it into
``field`` / ``old_value`` / ``new_value``: text for every change, and typed columns
where the story carries typed ``old_*``/``new_*`` fields (Asana's ``StoryResponse``):
gids of sections, users, enum options, projects, tags; numbers; dates.

Asana's spec does not enumerate story subtypes; the ones mapped here are those whose
fields the spec documents. Any other system story still gets a row (``field`` = its
subtype, ``new_value`` = its text), so a new kind of change is never lost.
"""

from __future__ import annotations

import typing as t

from tap_asana_vl.streams.derived import DerivedStream, gid_of
from tap_asana_vl.streams.subtasks import SubtaskStoriesStream
from tap_asana_vl.streams.task_level import StoriesStream, is_change

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

#: Subtypes that add (``+``) or remove (``-``) one related object, named by a story field:
#: subtype -> (history field, story field holding the object, direction).
MEMBERSHIP_CHANGES: dict[str, tuple[str, str, str]] = {
    "added_to_project": ("project", "project", "+"),
    "removed_from_project": ("project", "project", "-"),
    "added_to_tag": ("tag", "tag", "+"),
    "removed_from_tag": ("tag", "tag", "-"),
    "followers_added": ("follower", "follower", "+"),
    "collaborator_added": ("follower", "follower", "+"),
    "follower_added": ("follower", "follower", "+"),
    "followers_removed": ("follower", "follower", "-"),
    "dependency_added": ("dependency", "dependency", "+"),
    "dependency_removed": ("dependency", "dependency", "-"),
    "dependent_added": ("dependent", "dependency", "+"),
    "dependent_removed": ("dependent", "dependency", "-"),
    "added_to_task": ("parent", "task", "+"),
    "removed_from_task": ("parent", "task", "-"),
    "marked_duplicate": ("duplicate_of", "duplicate_of", "+"),
    "duplicate_merged": ("duplicated_from", "duplicated_from", "+"),
}


#: The columns ``change_of`` fills (each row has all of them, null where not known).
CHANGE_COLUMNS = (
    "field",
    "custom_field_gid",
    "project_gid",
    "old_value",
    "new_value",
    "old_gid",
    "new_gid",
    "old_number_value",
    "new_number_value",
    "old_date_value",
    "new_date_value",
    "old_date_time_value",
    "new_date_time_value",
)


def _name(obj: t.Any) -> str | None:
    return obj.get("name") if isinstance(obj, dict) else None


def _joined(items: t.Any, key: str) -> str | None:
    values = [str(i[key]) for i in items or [] if isinstance(i, dict) and i.get(key)]
    return ", ".join(values) or None


def _text(value: t.Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def change_of(story: Mapping[str, t.Any]) -> dict[str, t.Any]:
    """``field``, old/new values (text and typed) of one system story."""
    subtype = str(story.get("resource_subtype") or "")
    change: dict[str, t.Any] = {"field": subtype or None}
    if subtype in MEMBERSHIP_CHANGES:
        field, key, direction = MEMBERSHIP_CHANGES[subtype]
        obj = story.get(key)
        side = "new" if direction == "+" else "old"
        change.update({"field": field, f"{side}_gid": gid_of(obj), f"{side}_value": _name(obj)})
        if field == "project":
            change["project_gid"] = gid_of(obj)
    elif subtype in ("assigned", "unassigned"):
        assignee = story.get("assignee")
        side = "new" if subtype == "assigned" else "old"
        change.update(
            {"field": "assignee", f"{side}_gid": gid_of(assignee), f"{side}_value": _name(assignee)}
        )
    elif subtype in ("marked_complete", "marked_incomplete"):
        done = subtype == "marked_complete"
        change.update(
            {"field": "completed", "old_value": _text(not done), "new_value": _text(done)}
        )
    elif subtype == "name_changed":
        change.update(
            {
                "field": "name",
                "old_value": story.get("old_name"),
                "new_value": story.get("new_name"),
            }
        )
    elif subtype == "section_changed":
        old, new = story.get("old_section"), story.get("new_section")
        change.update(
            {
                "field": "section",
                "project_gid": gid_of(story.get("project")),
                "old_gid": gid_of(old),
                "new_gid": gid_of(new),
                "old_value": _name(old),
                "new_value": _name(new),
            }
        )
    elif "old_dates" in story or "new_dates" in story:
        change.update(_dates("due_on", story.get("old_dates"), story.get("new_dates")))
        if subtype.startswith("start"):
            change["field"] = "start_on"
    elif story.get("custom_field") is not None:
        change.update(_custom_field_change(story))
    elif subtype == "resource_subtype_changed":
        change.update(
            {
                "field": "resource_subtype",
                "old_value": story.get("old_resource_subtype"),
                "new_value": story.get("new_resource_subtype"),
            }
        )
    elif subtype == "approval_status_changed":
        change.update(
            {
                "field": "approval_status",
                "old_value": story.get("old_approval_status"),
                "new_value": story.get("new_approval_status"),
            }
        )
    else:
        change["new_value"] = story.get("text")
    return change


def _dates(field: str, old: t.Any, new: t.Any) -> dict[str, t.Any]:
    """A date change (``StoryResponseDates``: start_on, due_on, due_at)."""
    old, new = old or {}, new or {}
    return {
        "field": field,
        "old_date_value": old.get("due_on"),
        "new_date_value": new.get("due_on"),
        "old_date_time_value": old.get("due_at"),
        "new_date_time_value": new.get("due_at"),
        "old_value": old.get("due_at") or old.get("due_on"),
        "new_value": new.get("due_at") or new.get("due_on"),
    }


def _custom_field_change(story: Mapping[str, t.Any]) -> dict[str, t.Any]:
    """A ``*_custom_field_changed`` story: the field's name, its old and new values."""
    custom_field = story.get("custom_field") or {}
    change: dict[str, t.Any] = {
        "field": _name(custom_field),
        "custom_field_gid": gid_of(custom_field),
    }
    for side in ("old", "new"):
        enum = story.get(f"{side}_enum_value")
        multi = story.get(f"{side}_multi_enum_values")
        people = story.get(f"{side}_people_value")
        dates = story.get(f"{side}_date_value")
        number = story.get(f"{side}_number_value")
        text = story.get(f"{side}_text_value")
        if enum is not None:
            change[f"{side}_gid"] = gid_of(enum)
            change[f"{side}_value"] = _name(enum)
        elif multi is not None and f"{side}_multi_enum_values" in story:
            change[f"{side}_value"] = _joined(multi, "name")
        elif people is not None:
            change[f"{side}_value"] = _joined(people, "name") or _joined(people, "gid")
        elif isinstance(dates, dict):
            change[f"{side}_date_value"] = dates.get("due_on")
            change[f"{side}_date_time_value"] = dates.get("due_at")
            change[f"{side}_value"] = dates.get("due_at") or dates.get("due_on")
        elif number is not None:
            change[f"{side}_number_value"] = number
            change[f"{side}_value"] = _text(number)
        else:
            change[f"{side}_value"] = _text(text)
    return change


class TaskHistoryStream(DerivedStream):
    """One row per change story (system story) of each task and subtask emitted."""

    name = "task_history"
    path = "/stories/{story_gid}"  # never requested: rows come from the story records
    required_scope = "stories:read"
    parent_stream_type = StoriesStream
    also_child_of = (SubtaskStoriesStream,)
    primary_keys = ("story_gid",)

    def user_gids(self, record: dict[str, t.Any]) -> Iterable[str]:
        """Who made the change, and the users an assignee or follower change names."""
        gids = [record.get("created_by_gid")]
        if record.get("field") in ("assignee", "follower"):
            gids += [record.get("old_gid"), record.get("new_gid")]
        return [gid for gid in gids if gid]

    def rows(self, context: Mapping[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        """The story's change, if it is one (comments and likes are not)."""
        story = context.get("story") or {}
        subtype = story.get("resource_subtype")
        if not story.get("gid") or not is_change(story):
            return
        yield {
            "story_gid": str(story["gid"]),
            "task_gid": context.get("task_gid"),
            "created_at": story.get("created_at"),
            "created_by_gid": gid_of(story.get("created_by")),
            "resource_subtype": subtype,
            **dict.fromkeys(CHANGE_COLUMNS),
            **change_of(story),
        }
