"""Deterministic, schema-driven Asana data for the fake API.

Every object holds every property that our stream schema lists for it (minus the
tap-only fields in ``NON_ASANA_FIELDS``); values are first filled generically from the
schema (by type, format and field name) and then the relational/core fields are set
explicitly so the data hangs together the way Asana's does (compact references carry
the referenced object's real name, timestamps are ordered, multi-homed tasks show up
in two projects, ...).
"""

from __future__ import annotations

import bisect
import copy
import json
import random
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: The tap's schemas, shipped with the package (the repo must not need /work/shared).
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "tap_asana_vl" / "schemas"

#: Stream name -> Asana ``resource_type`` (one schema file per stream).
STREAM_RESOURCE_TYPES = {
    "workspaces": "workspace",
    "users": "user",
    "projects": "project",
    "tasks": "task",
    "stories": "story",
    "subtasks": "task",
    "subtask_stories": "story",
    "sections": "section",
    "tags": "tag",
    "teams": "team",
    "team_memberships": "team_membership",
    "project_memberships": "project_membership",
    "custom_fields": "custom_field",
    "project_custom_field_settings": "custom_field_setting",
    "attachments": "attachment",
    "portfolios": "portfolio",
    "portfolio_items": "project",
    "status_updates": "status_update",
    "goals": "goal",
    "time_tracking_entries": "time_tracking_entry",
}

#: Properties in our schemas that Asana does not have (the tap adds them itself).
NON_ASANA_FIELDS: dict[str, frozenset[str]] = {
    "tasks": frozenset({"project_gid"}),
    "portfolio_items": frozenset({"portfolio_gid"}),
}

#: Fields Asana leaves out of the full record unless named in ``opt_fields`` (NOTES §3).
OPT_IN_FIELDS: dict[str, frozenset[str]] = {
    "workspace": frozenset(),
    "user": frozenset(),
    "project": frozenset({"html_notes", "project_brief", "created_from_template"}),
    "task": frozenset(
        {
            "assigned_by",
            "created_by",
            "dependencies",
            "dependents",
            "external",
            "html_notes",
            "is_rendered_as_separator",
            "num_subtasks",
        }
    ),
    "story": frozenset({"html_text"}),
    # The spec marks these "Opt In" (it also marks a project membership's ``parent``,
    # which its compact form carries, so only ``project`` is treated as opt-in here).
    "section": frozenset(),
    "tag": frozenset(),
    "team": frozenset({"description", "html_description"}),
    "team_membership": frozenset(),
    "project_membership": frozenset({"project"}),
    "custom_field": frozenset({"description"}),
    "custom_field_setting": frozenset(),
    "attachment": frozenset(),
    "portfolio": frozenset({"archived"}),
    "status_update": frozenset({"html_text"}),
    "goal": frozenset(),
    "time_tracking_entry": frozenset(),
}

#: Compact shapes returned by list endpoints without ``opt_fields`` (NOTES §3).
COMPACT_FIELDS: dict[str, tuple[str, ...]] = {
    "workspace": ("gid", "resource_type", "name"),
    "user": ("gid", "resource_type", "name"),
    "project": ("gid", "resource_type", "name"),
    "task": ("gid", "resource_type", "name", "resource_subtype"),
    "story": ("gid", "resource_type", "created_at", "created_by", "resource_subtype", "text"),
    # The OpenAPI ``*Compact`` components of the newer resources.
    "section": ("gid", "resource_type", "name"),
    "tag": ("gid", "resource_type", "name"),
    "team": ("gid", "resource_type", "name"),
    "team_membership": (
        "gid",
        "resource_type",
        "user",
        "team",
        "is_guest",
        "is_limited_access",
        "is_admin",
    ),
    "project_membership": ("gid", "resource_type", "parent", "member", "access_level"),
    "custom_field": (
        "gid",
        "resource_type",
        "name",
        "type",
        "enum_options",
        "enabled",
        "representation_type",
        "id_prefix",
        "input_restrictions",
        "is_formula_field",
        "date_value",
        "enum_value",
        "multi_enum_values",
        "number_value",
        "text_value",
        "display_value",
    ),
    "custom_field_setting": ("gid", "resource_type"),
    "attachment": ("gid", "resource_type", "name", "resource_subtype"),
    "portfolio": ("gid", "resource_type", "name"),
    "status_update": ("gid", "resource_type", "title", "resource_subtype"),
    "goal": ("gid", "resource_type", "name", "owner"),
    "time_tracking_entry": (
        "gid",
        "resource_type",
        "duration_minutes",
        "entered_on",
        "attributable_to",
        "created_by",
        "categories",
    ),
}

# Everything lands in 2024-2025 so that "now" (used by the mutation helpers) is always
# later than the generated data: incremental syncs then see mutations as new changes.
_RANGE_START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_RANGE_END_MS = 1_767_225_599_000  # 2025-12-31T23:59:59Z
_DAY_MS = 86_400_000
_GID_START = 1_200_000_000_000_000  # 16 digits, like modern Asana gids

# Known enumerations (the schemas are Singer-style and carry no ``enum``).
_ENUMS: dict[str, tuple[str, ...]] = {
    "color": (
        "dark-pink",
        "dark-green",
        "dark-blue",
        "dark-red",
        "dark-teal",
        "dark-brown",
        "dark-orange",
        "dark-purple",
        "dark-warm-gray",
        "light-pink",
        "light-green",
        "light-blue",
        "light-red",
        "light-teal",
        "light-brown",
        "light-orange",
        "light-purple",
        "light-warm-gray",
    ),
    "icon": ("list", "board", "timeline", "calendar", "rocket", "people", "check", "star"),
    "default_view": ("list", "board", "calendar", "timeline"),
    "privacy_setting": ("public_to_workspace", "private_to_team", "private"),
    "default_access_level": ("admin", "editor", "commenter", "viewer"),
    "minimum_access_level_for_customization": ("admin", "editor"),
    "minimum_access_level_for_sharing": ("admin", "editor"),
    "assignee_status": ("today", "upcoming", "later", "new", "inbox"),
    "approval_status": ("pending", "approved", "rejected", "changes_requested"),
    "old_approval_status": ("pending", "approved", "rejected", "changes_requested"),
    "new_approval_status": ("pending", "approved", "rejected", "changes_requested"),
    "source": ("web", "email", "mobile", "api", "unknown"),
    "representation_type": ("text", "enum", "multi_enum", "number", "date", "people"),
    "format": ("currency", "identifier", "percentage", "custom", "duration", "none"),
    "custom_label_position": ("prefix", "suffix"),
    "currency_code": ("EUR", "USD", "GBP"),
    "asana_created_field": ("priority", "status", "effort"),
}

# Values of the newer resources' enumerations (set explicitly; deliberately not in
# ``_ENUMS``, which would change what the generic generator draws for the other streams).
_TEAM_VISIBILITY = ("public", "request_to_join", "secret")
_TEAM_ACCESS = ("all_team_members", "only_team_admins")
_MEMBER_ACCESS = ("editor", "commenter", "viewer")
_ATTACHMENT_HOSTS = ("asana", "dropbox", "gdrive", "asana", "box", "onedrive", "external")
_TIME_APPROVAL = ("DRAFT", "SUBMITTED", "APPROVED", "REJECTED")
_BILLABLE = ("billable", "nonBillable", "notApplicable")
_STATUS_TYPES = ("on_track", "at_risk", "off_track", "on_hold", "complete")

# resource_type of a nested object, by the name of the property holding it.
_RT_BY_KEY: dict[str, str] = {
    **dict.fromkeys(
        (
            "assignee",
            "assigned_by",
            "completed_by",
            "created_by",
            "owner",
            "author",
            "user",
            "follower",
            "followers",
            "members",
            "people_value",
            "old_people_value",
            "new_people_value",
        ),
        "user",
    ),
    **dict.fromkeys(("workspace", "workspaces"), "workspace"),
    **dict.fromkeys(("project", "projects"), "project"),
    **dict.fromkeys(
        (
            "parent",
            "target",
            "task",
            "dependencies",
            "dependents",
            "duplicate_of",
            "duplicated_from",
            "dependency",
            "reference_value",
        ),
        "task",
    ),
    **dict.fromkeys(("section", "assignee_section", "old_section", "new_section"), "section"),
    **dict.fromkeys(("tag", "tags"), "tag"),
    "team": "team",
    **dict.fromkeys(("custom_field", "custom_fields"), "custom_field"),
    **dict.fromkeys(
        (
            "enum_options",
            "enum_value",
            "old_enum_value",
            "new_enum_value",
            "multi_enum_values",
            "old_multi_enum_values",
            "new_multi_enum_values",
        ),
        "enum_option",
    ),
    "current_status_update": "status_update",
    "current_status": "project_status",
    "project_brief": "project_brief",
    "created_from_template": "project_template",
    "custom_field_settings": "custom_field_setting",
    "story": "story",
    "custom_type": "custom_type",
    "custom_type_status_option": "custom_type_status_option",
}

# Types whose compact references the generator points at real objects of the dataset.
# Marks a value in ``Dataset._make`` that should stay generically generated.
_GENERIC = object()

_REAL_TYPES = frozenset({"workspace", "user", "project", "task", "section", "tag", "team"})

# Story properties that only exist for some story subtypes (NOTES §4); the others are
# null for a given story, as they are semantically absent.
_STORY_COMMENT_FIELDS = frozenset(
    {
        "html_text",
        "is_pinned",
        "is_edited",
        "is_editable",
        "hearted",
        "hearts",
        "num_hearts",
        "liked",
        "likes",
        "num_likes",
        "reaction_summary",
        "previews",
    }
)
_STORY_CONDITIONAL_FIELDS = _STORY_COMMENT_FIELDS | frozenset(
    {
        "sticker_name",
        "old_name",
        "new_name",
        "old_dates",
        "new_dates",
        "old_resource_subtype",
        "new_resource_subtype",
        "story",
        "assignee",
        "follower",
        "old_section",
        "new_section",
        "task",
        "project",
        "tag",
        "custom_field",
        "old_text_value",
        "new_text_value",
        "old_number_value",
        "new_number_value",
        "old_enum_value",
        "new_enum_value",
        "old_date_value",
        "new_date_value",
        "old_people_value",
        "new_people_value",
        "old_multi_enum_values",
        "new_multi_enum_values",
        "new_approval_status",
        "old_approval_status",
        "duplicate_of",
        "duplicated_from",
        "dependency",
    }
)
# System story subtypes used for stories after the first one, with the fields they use.
_SYSTEM_STORY_SUBTYPES: tuple[tuple[str, frozenset[str]], ...] = (
    ("assigned", frozenset({"assignee"})),
    ("name_changed", frozenset({"old_name", "new_name"})),
    ("due_date_changed", frozenset({"old_dates", "new_dates"})),
    ("section_changed", frozenset({"old_section", "new_section", "project"})),
    ("followers_added", frozenset({"follower"})),
    ("added_to_tag", frozenset({"tag"})),
    (
        "enum_custom_field_changed",
        frozenset({"custom_field", "old_enum_value", "new_enum_value"}),
    ),
    (
        "number_custom_field_changed",
        frozenset({"custom_field", "old_number_value", "new_number_value"}),
    ),
    ("text_custom_field_changed", frozenset({"custom_field", "old_text_value", "new_text_value"})),
    ("date_custom_field_changed", frozenset({"custom_field", "old_date_value", "new_date_value"})),
    (
        "multi_enum_custom_field_changed",
        frozenset({"custom_field", "old_multi_enum_values", "new_multi_enum_values"}),
    ),
    (
        "people_custom_field_changed",
        frozenset({"custom_field", "old_people_value", "new_people_value"}),
    ),
    ("approval_status_changed", frozenset({"old_approval_status", "new_approval_status"})),
    ("resource_subtype_changed", frozenset({"old_resource_subtype", "new_resource_subtype"})),
    ("dependency_added", frozenset({"dependency"})),
    ("marked_duplicate", frozenset({"duplicate_of"})),
    ("duplicate_merged", frozenset({"duplicated_from"})),
    ("added_to_task", frozenset({"task"})),
    ("comment_liked", frozenset({"story"})),
    ("marked_complete", frozenset()),
)


def iso_ms(ms: int) -> str:
    """Format epoch milliseconds the way Asana does: ``2024-05-01T10:00:00.123Z`` (UTC)."""
    seconds, millis = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def iso_date(ms: int) -> str:
    """Format epoch milliseconds as an ISO date (``YYYY-MM-DD``, UTC)."""
    return time.strftime("%Y-%m-%d", time.gmtime(int(ms) // 1000))


def parse_iso_ms(value: str) -> int:
    """Parse an ISO-8601 date or date-time (``Z``/offset/naive=UTC) to epoch ms, rounding up.

    Rounding up keeps an inclusive ``>=`` comparison exact for sub-millisecond input:
    a stored ``...00.123Z`` is ``>= ...00.123456`` only if 123 ms >= 123.456 ms, i.e. never.

    Raises:
        ValueError: if the value is not a valid ISO-8601 date/date-time.
    """
    return -(-parse_iso_us(value) // 1000)


def parse_iso_us(value: str) -> int:
    """Parse an ISO-8601 date or date-time (``Z``/offset/naive=UTC) to epoch microseconds.

    Raises:
        ValueError: if the value is not a valid ISO-8601 date/date-time.
    """
    text = value.strip()
    if not text or not text[0].isdigit():
        raise ValueError(value)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp()) * 1_000_000 + parsed.microsecond


def load_schemas(schema_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Load our stream schemas (``{stream: schema}``) from ``tap_asana_vl/schemas``."""
    directory = Path(schema_dir) if schema_dir is not None else SCHEMA_DIR
    schemas = {}
    for stream in STREAM_RESOURCE_TYPES:
        path = directory / f"{stream}.json"
        if not path.exists():
            raise FileNotFoundError(f"schema for stream {stream!r} not found: {path}")
        schemas[stream] = json.loads(path.read_text(encoding="utf-8"))
    return schemas


def _types(schema: dict[str, Any]) -> list[str]:
    """The JSON types a schema node allows (handles ``type`` lists and ``anyOf``)."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return list(kind)
    alternatives = schema.get("anyOf") or schema.get("oneOf") or []
    out: list[str] = []
    for alt in alternatives:
        out.extend(_types(alt))
    if not out and "properties" in schema:
        out = ["object"]
    return out


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """The first non-null alternative of an ``anyOf``/``oneOf`` node, else the node."""
    for alt in schema.get("anyOf") or schema.get("oneOf") or []:
        if _types(alt) != ["null"]:
            return alt
    return schema


def props(schema: dict[str, Any] | None) -> dict[str, Any]:
    """The ``properties`` of an object schema node ({} if none)."""
    if not schema:
        return {}
    return _non_null(schema).get("properties") or {}


def items(schema: dict[str, Any] | None) -> dict[str, Any]:
    """The ``items`` schema of an array schema node ({} if none)."""
    if not schema:
        return {}
    return _non_null(schema).get("items") or {}


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith("s"):
        return name[:-1]
    return name


class _Generator:
    """Generic, deterministic value factory driven by a JSON schema."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._next_gid = _GID_START
        self.counter = 0

    def gid(self) -> str:
        # Increasing gids mean "creation order" == "gid order" for every listing, which
        # lets pagination resume with a bisect instead of a scan.
        self._next_gid += self.rng.randint(1, 9_999)
        return str(self._next_gid)

    def timestamp_ms(self, lo: int = _RANGE_START_MS, hi: int = _RANGE_END_MS) -> int:
        return self.rng.randint(lo, max(lo, hi))

    def value(self, schema: dict[str, Any], key: str, parent_rt: str, depth: int = 0) -> Any:
        """Generate a non-null value for property ``key`` described by ``schema``."""
        schema = _non_null(schema)
        kinds = [t for t in _types(schema) if t != "null"]
        if "enum" in schema:
            choices = [v for v in schema["enum"] if v is not None]
            if choices:
                return self.rng.choice(choices)
        if not kinds:
            return None
        kind = kinds[0]
        if kind == "object":
            rt = _RT_BY_KEY.get(key, _singular(key))
            return {
                name: self.value(sub, name, rt, depth + 1)
                for name, sub in (schema.get("properties") or {}).items()
            }
        if kind == "array":
            # Deeply nested generic arrays stay empty to keep objects (and pages) small.
            if depth >= 2:
                return []
            return [self.value(items(schema), key, parent_rt, depth + 1)]
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "integer":
            return self.rng.randint(0, 5) if key.startswith("num_") else self.rng.randint(0, 100)
        if kind == "number":
            return round(self.rng.uniform(0, 500), 2)
        return self.string(schema, key, parent_rt)

    def string(self, schema: dict[str, Any], key: str, parent_rt: str) -> str:
        fmt = schema.get("format")
        self.counter += 1
        n = self.counter
        if fmt == "date-time" or (fmt is None and (key.endswith("_at") or key == "date_time")):
            return iso_ms(self.timestamp_ms())
        if fmt == "date" or (fmt is None and (key.endswith("_on") or key == "date")):
            return iso_date(self.timestamp_ms())
        if key == "gid":
            return self.gid()
        if key == "resource_type":
            return parent_rt
        if fmt == "email" or "email" in key:
            return f"person{n}@example.com"
        if fmt in ("uri", "url") or "url" in key or key.startswith("image_"):
            return f"https://assets.example.com/{key}/{n}"
        if key in _ENUMS:
            return self.rng.choice(_ENUMS[key])
        if key == "name":
            return f"{parent_rt.replace('_', ' ').title()} {n}"
        return f"{key.replace('_', ' ').capitalize()} {n}"

    def full(self, schema: dict[str, Any], resource_type: str) -> dict[str, Any]:
        return {name: self.value(sub, name, resource_type) for name, sub in props(schema).items()}


def compact(target: dict[str, Any] | None, node: dict[str, Any] | None) -> dict[str, Any] | None:
    """A compact reference to ``target`` with exactly the keys the schema node lists."""
    if target is None:
        return None
    keys = props(node)
    if not keys:
        return {"gid": target["gid"], "resource_type": target.get("resource_type")}
    return {k: copy.deepcopy(target.get(k)) for k in keys}


def fit(target: dict[str, Any] | None, node: dict[str, Any] | None) -> dict[str, Any] | None:
    """Like :func:`compact`, but nested objects are cut to the schema node's keys, too."""
    if target is None:
        return None
    keys = props(node)
    if not keys:
        return {"gid": target["gid"], "resource_type": target.get("resource_type")}
    out: dict[str, Any] = {}
    for key, sub in keys.items():
        value = target.get(key)
        if isinstance(value, dict) and props(sub):
            value = fit(value, sub)
        elif isinstance(value, list) and props(items(sub)):
            value = [fit(e, items(sub)) if isinstance(e, dict) else e for e in value]
        else:
            value = copy.deepcopy(value)
        out[key] = value
    return out


class Dataset:
    """The fake Asana domain: full objects by gid plus the indexes the API needs.

    Tables (gid -> full object; insertion order == creation order == gid order):
    ``workspaces``, ``users``, ``projects``, ``tasks``, ``stories``, ``subtasks``,
    ``subtask_stories``, ``sections``, ``tags``, ``teams``, ``team_memberships``,
    ``project_memberships``, ``custom_fields``, ``custom_field_settings``,
    ``attachments``, ``portfolios``, ``status_updates``, ``goals``,
    ``time_tracking_entries``.

    Subtasks are tasks with a ``parent`` (a task or another subtask), no projects and no
    memberships; they are kept apart from ``tasks`` (which holds the tasks listed in
    projects) and listed per parent in ``subtasks_by_parent``. Their stories are in
    ``subtask_stories``; ``stories_by_task`` lists the stories of tasks and subtasks.
    ``sections`` also holds the "Recently assigned" sections of users' My Tasks lists,
    which are minimal internal objects (``{gid, resource_type, name}``); the sections of
    projects are full objects, listed in ``sections_by_project``.

    Index lists (``tasks_by_project``, ``subtasks_by_parent``, ...) are kept sorted by
    gid; ``portfolio_items`` maps a portfolio gid to its projects (full objects).

    Mutation helpers take ``self.lock`` (re-entrant), so they are safe while a
    :class:`FakeAsana` serves the dataset; the server reads under the same lock.
    """

    def __init__(self, schemas: dict[str, dict[str, Any]], seed: int = 1) -> None:
        """Create an empty dataset for ``schemas`` (use :func:`build_dataset` to fill one)."""
        self.schemas = schemas
        self.lock = threading.RLock()
        #: Time source (epoch seconds) for "now"; FakeAsana points it at its own clock.
        self.clock: Callable[[], float] = time.time
        self.workspaces: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.projects: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.stories: dict[str, dict[str, Any]] = {}
        self.sections: dict[str, dict[str, Any]] = {}
        self.tags: dict[str, dict[str, Any]] = {}
        self.teams: dict[str, dict[str, Any]] = {}
        self.projects_by_workspace: dict[str, list[dict[str, Any]]] = {}
        self.users_by_workspace: dict[str, list[dict[str, Any]]] = {}
        self.tasks_by_project: dict[str, list[dict[str, Any]]] = {}
        self.stories_by_task: dict[str, list[dict[str, Any]]] = {}
        self.sections_by_project: dict[str, list[dict[str, Any]]] = {}
        self.tags_by_workspace: dict[str, list[dict[str, Any]]] = {}
        self.teams_by_workspace: dict[str, list[dict[str, Any]]] = {}
        #: Custom field definitions (full objects) per workspace.
        self.custom_fields_by_workspace: dict[str, list[dict[str, Any]]] = {}
        self.subtasks: dict[str, dict[str, Any]] = {}
        self.subtask_stories: dict[str, dict[str, Any]] = {}
        self.team_memberships: dict[str, dict[str, Any]] = {}
        self.project_memberships: dict[str, dict[str, Any]] = {}
        self.custom_fields: dict[str, dict[str, Any]] = {}
        self.custom_field_settings: dict[str, dict[str, Any]] = {}
        self.attachments: dict[str, dict[str, Any]] = {}
        self.portfolios: dict[str, dict[str, Any]] = {}
        self.status_updates: dict[str, dict[str, Any]] = {}
        self.goals: dict[str, dict[str, Any]] = {}
        self.time_tracking_entries: dict[str, dict[str, Any]] = {}
        self.subtasks_by_parent: dict[str, list[dict[str, Any]]] = {}
        self.team_memberships_by_team: dict[str, list[dict[str, Any]]] = {}
        self.project_memberships_by_project: dict[str, list[dict[str, Any]]] = {}
        self.custom_field_settings_by_project: dict[str, list[dict[str, Any]]] = {}
        self.attachments_by_parent: dict[str, list[dict[str, Any]]] = {}
        self.portfolios_by_workspace: dict[str, list[dict[str, Any]]] = {}
        self.portfolio_items: dict[str, list[dict[str, Any]]] = {}
        self.status_updates_by_parent: dict[str, list[dict[str, Any]]] = {}
        self.goals_by_workspace: dict[str, list[dict[str, Any]]] = {}
        self.time_tracking_entries_by_task: dict[str, list[dict[str, Any]]] = {}
        #: The user behind every PAT and OAuth grant (member of all workspaces).
        self.me_gid = ""
        #: Bumped by every mutation helper (lets the server drop cached renderings).
        self.version = 0
        self._gen = _Generator(random.Random(seed))
        self._task_counter = 0
        self._story_counter = 0
        self._rotation = 0
        self._my_tasks_sections: dict[str, dict[str, Any]] = {}
        # The custom field values tasks and projects copy (task-value shape), per workspace.
        self._custom_field_templates: dict[str, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------------ helpers
    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _schema_props(self, stream: str) -> dict[str, Any]:
        return props(self.schemas[stream])

    def _node(self, stream: str, *path: str) -> dict[str, Any]:
        """Schema node at ``path`` (array levels are stepped through automatically)."""
        node: dict[str, Any] = self.schemas[stream]
        for part in path:
            while "array" in _types(node) and "object" not in _types(node):
                node = items(node)
            node = props(node).get(part, {})
        while "array" in _types(node) and "object" not in _types(node):
            node = items(node)
        return node

    def _ref(self, stream: str, field: str, target: dict[str, Any] | None) -> Any:
        return compact(target, self._node(stream, field))

    def _make(
        self, stream: str, values: dict[str, Any], nulls: Iterable[str] = ()
    ) -> dict[str, Any]:
        """Build a full object from our schema for ``stream``.

        Keys get ``values`` (keys the schema lacks are dropped: the schema defines what we
        serve), ``None`` for ``nulls``, and generic values for everything else, including
        keys whose value is ``_GENERIC``.
        """
        fixed = {k: v for k, v in values.items() if v is not _GENERIC}
        for key in nulls:
            fixed.setdefault(key, None)
        gen = self._gen
        resource_type = STREAM_RESOURCE_TYPES[stream]
        # Generating only what is not set explicitly keeps building large datasets fast.
        return {
            name: fixed[name] if name in fixed else gen.value(sub, name, resource_type)
            for name, sub in self._schema_props(stream).items()
        }

    def _finish(self, stream: str, obj: dict[str, Any], workspace_gid: str) -> None:
        """Point generic references at real objects and drop tap-only fields."""
        self._fix_refs(obj, workspace_gid, top=True)
        for key in NON_ASANA_FIELDS.get(stream, ()):
            obj.pop(key, None)
        for key in [k for k in obj if k.startswith("_sdc")]:
            del obj[key]

    def _pool(self, resource_type: str, workspace_gid: str) -> list[dict[str, Any]]:
        if resource_type == "user":
            return self.users_by_workspace.get(workspace_gid, [])
        if resource_type == "workspace":
            return [self.workspaces[workspace_gid]] if workspace_gid in self.workspaces else []
        if resource_type == "project":
            return self.projects_by_workspace.get(workspace_gid, [])
        if resource_type == "task":
            return [
                t
                for p in self.projects_by_workspace.get(workspace_gid, [])[:1]
                for t in self.tasks_by_project.get(p["gid"], [])[:5]
            ]
        if resource_type == "tag":
            return self.tags_by_workspace.get(workspace_gid, [])
        if resource_type == "team":
            return self.teams_by_workspace.get(workspace_gid, [])
        if resource_type == "section":
            return [
                s
                for p in self.projects_by_workspace.get(workspace_gid, [])[:1]
                for s in self.sections_by_project.get(p["gid"], [])
            ]
        return []

    def _lookup(self, resource_type: str, gid: str) -> dict[str, Any] | None:
        table = {
            "workspace": self.workspaces,
            "user": self.users,
            "project": self.projects,
            "task": self.tasks,
            "section": self.sections,
            "tag": self.tags,
            "team": self.teams,
        }.get(resource_type)
        if table is None:
            return None
        found = table.get(gid)
        if found is None and resource_type == "task":
            found = self.subtasks.get(gid)
        return found

    def get_task(self, gid: str) -> dict[str, Any]:
        """The task or subtask ``gid``.

        Raises:
            KeyError: if there is neither.
        """
        task = self.tasks.get(gid)
        return task if task is not None else self.subtasks[gid]

    def _fix_refs(self, value: Any, workspace_gid: str, top: bool = False) -> None:
        """Replace generically generated compact refs by refs to real dataset objects."""
        if isinstance(value, list):
            for element in value:
                self._fix_refs(element, workspace_gid)
            return
        if not isinstance(value, dict):
            return
        rt = value.get("resource_type")
        if not top and rt in _REAL_TYPES and isinstance(value.get("gid"), str):
            if self._lookup(rt, value["gid"]) is None:
                pool = self._pool(rt, workspace_gid)
                if pool:
                    real = pool[self._gen.rng.randrange(len(pool))]
                    for key in value:
                        if key in real:
                            value[key] = copy.deepcopy(real[key])
            return
        for child in value.values():
            if isinstance(child, (dict, list)):
                self._fix_refs(child, workspace_gid)

    # ------------------------------------------------------------------ builders
    def _new_workspace(self, index: int) -> dict[str, Any]:
        gen = self._gen
        gid = gen.gid()
        ws = self._make(
            "workspaces",
            {
                "gid": gid,
                "resource_type": "workspace",
                "name": f"Workspace {index}",
                "email_domains": [f"ws{index}.example.com"],
                # Alternate organizations (which have teams) and plain workspaces.
                "is_organization": index % 2 == 1,
            },
        )
        self.workspaces[gid] = ws
        self.projects_by_workspace[gid] = []
        self.users_by_workspace[gid] = []
        self.tags_by_workspace[gid] = []
        self.teams_by_workspace[gid] = []
        return ws

    def _new_user(self, index: int, workspaces: list[dict[str, Any]]) -> dict[str, Any]:
        gen = self._gen
        gid = gen.gid()
        photo_node = self._node("users", "photo")
        photo = {
            k: f"https://s3.example.com/profile_photos/{gid}.{k}.png" for k in props(photo_node)
        }
        user = self._make(
            "users",
            {
                "gid": gid,
                "resource_type": "user",
                "name": f"User {index}",
                "email": f"user{index}@example.com",
                "photo": photo if index % 4 else None,  # some users have no photo
                "workspaces": [self._ref("users", "workspaces", ws) for ws in workspaces],
            },
        )
        self.users[gid] = user
        for ws in workspaces:
            bisect.insort(self.users_by_workspace[ws["gid"]], user, key=lambda u: u["gid"])
        return user

    def _internal(self, resource_type: str, name: str) -> dict[str, Any]:
        return {"gid": self._gen.gid(), "resource_type": resource_type, "name": name}

    def _my_tasks_section(self, user_gid: str) -> dict[str, Any]:
        """The "Recently assigned" section of a user's My Tasks list (one per user)."""
        section = self._my_tasks_sections.get(user_gid)
        if section is None:
            section = self._internal("section", "Recently assigned")
            self.sections[section["gid"]] = section
            self._my_tasks_sections[user_gid] = section
        return section

    def _like(self, stream: str, field: str, user: dict[str, Any]) -> dict[str, Any]:
        """An entry of ``hearts``/``likes``: ``{gid, user}`` (keys as the schema lists)."""
        node = self._node(stream, field)
        entry = {"gid": self._gen.gid(), "user": compact(user, props(node).get("user"))}
        return {k: entry.get(k) for k in props(node)} if props(node) else entry

    def _new_custom_fields(self, ws_gid: str) -> list[dict[str, Any]]:
        """Two custom field definitions per workspace (an enum and a number field)."""
        node = self._node("tasks", "custom_fields")
        if not props(node):
            return []
        gen = self._gen
        out = []
        for kind in ("enum", "number"):
            cf = gen.full(node, "custom_field")
            options = [
                {
                    "gid": gen.gid(),
                    "resource_type": "enum_option",
                    "name": name,
                    "enabled": True,
                    "color": color,
                }
                for name, color in (("Low", "green"), ("Medium", "yellow"), ("High", "red"))
            ]
            option_node = self._node("tasks", "custom_fields", "enum_options")
            values = {
                "gid": gen.gid(),
                "resource_type": "custom_field",
                "name": "Priority" if kind == "enum" else "Estimate",
                "type": kind,
                "resource_subtype": kind,
                "representation_type": kind,
                "enum_options": [compact(o, option_node) for o in options]
                if kind == "enum"
                else [],
                "enabled": True,
                "is_formula_field": False,
                "number_value": None,
                "text_value": None,
                "date_value": None,
                "enum_value": None,
                "multi_enum_values": [],
                "people_value": [],
                "reference_value": [],
                "html_text_value": None,
                "input_restrictions": [],
                "precision": 0,
            }
            for key, value in values.items():
                if key in cf:
                    cf[key] = value
            self._fix_refs(cf, ws_gid)
            out.append(cf)
        return out

    def _custom_field_values(self, ws_gid: str) -> list[dict[str, Any]]:
        out = []
        for definition in self._custom_field_templates.get(ws_gid, []):
            cf = copy.deepcopy(definition)
            if cf.get("type") == "enum" and cf.get("enum_options"):
                option = self._gen.rng.choice(cf["enum_options"])
                if "enum_value" in cf:
                    cf["enum_value"] = copy.deepcopy(option)
                display = option.get("name")
            else:
                number = self._gen.rng.randint(1, 40)
                if "number_value" in cf:
                    cf["number_value"] = number
                display = str(number)
            if "display_value" in cf:
                cf["display_value"] = display
            out.append(cf)
        return out

    def _new_project(self, index: int, ws: dict[str, Any], archived: bool) -> dict[str, Any]:
        gen = self._gen
        rng = gen.rng
        ws_gid = ws["gid"]
        gid = gen.gid()
        users = self.users_by_workspace[ws_gid]
        owner = users[index % len(users)] if users else None
        created = gen.timestamp_ms(_RANGE_START_MS, _RANGE_START_MS + 180 * _DAY_MS)
        modified = gen.timestamp_ms(created, _RANGE_END_MS)
        start = gen.timestamp_ms(created, created + 30 * _DAY_MS)
        due = gen.timestamp_ms(start, start + 365 * _DAY_MS)
        teams = self.teams_by_workspace[ws_gid]
        members = users[: min(3, len(users))]
        notes = f"Notes for project {index}."
        project = self._make(
            "projects",
            {
                "gid": gid,
                "resource_type": "project",
                "name": f"Project {index}",
                "archived": archived,
                "created_at": iso_ms(created),
                "modified_at": iso_ms(modified),
                "start_on": iso_date(start),
                "due_on": iso_date(due),
                "due_date": iso_date(due),
                "notes": notes,
                "html_notes": f"<body>{notes}</body>",
                # Archived projects were completed first (at their last modification).
                "completed": archived,
                "completed_at": iso_ms(modified) if archived else None,
                "completed_by": self._ref("projects", "completed_by", owner if archived else None),
                "owner": self._ref("projects", "owner", owner),
                "members": [self._ref("projects", "members", u) for u in members],
                "followers": [self._ref("projects", "followers", owner)] if owner else [],
                # Teams exist in organizations only; plain workspaces have none.
                "team": self._ref("projects", "team", teams[index % len(teams)]) if teams else None,
                "workspace": self._ref("projects", "workspace", ws),
                "permalink_url": f"https://app.asana.com/1/{ws_gid}/project/{gid}",
                "public": rng.random() < 0.5,
                "custom_fields": [
                    compact(cf, self._node("projects", "custom_fields"))
                    for cf in self._custom_field_values(ws_gid)
                ],
                # Generic values stay for some projects; most have no brief/template.
                "project_brief": _GENERIC if index % 2 else None,
                "created_from_template": _GENERIC if index % 3 else None,
            },
        )
        self._finish("projects", project, ws_gid)
        self.projects[gid] = project
        self.projects_by_workspace[ws_gid].append(project)
        self.tasks_by_project[gid] = []
        sections = [self._internal("section", f"Section {index}.{n}") for n in (1, 2)]
        for section in sections:
            self.sections[section["gid"]] = section
        self.sections_by_project[gid] = sections
        return project

    def _membership(self, project: dict[str, Any], completed: bool) -> dict[str, Any]:
        sections = self.sections_by_project.get(project["gid"]) or [None]
        section = sections[-1] if completed else sections[0]
        node = self._node("tasks", "memberships")
        out = {}
        if "project" in props(node):
            out["project"] = compact(project, props(node)["project"])
        if "section" in props(node):
            out["section"] = compact(section, props(node)["section"])
        return out

    def _new_task(
        self,
        project: dict[str, Any] | None,
        created: int,
        modified: int,
        *,
        completed: bool,
        parent: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A task in ``project`` or, with ``parent`` (and no project), a subtask of it."""
        gen = self._gen
        rng = gen.rng
        self._task_counter += 1
        index = self._task_counter
        stream = "tasks" if parent is None else "subtasks"
        home = project if project is not None else parent
        assert home is not None
        ws_gid = home["workspace"]["gid"] if home.get("workspace") else ""
        ws = self.workspaces.get(ws_gid)
        users = self.users_by_workspace.get(ws_gid, [])
        gid = gen.gid()
        creator = users[index % len(users)] if users else None
        assignee = None if index % 5 == 0 or not users else users[(index * 7) % len(users)]
        subtype = ("default_task",) * 6 + ("milestone", "approval")
        resource_subtype = subtype[index % len(subtype)]
        completed_at = gen.timestamp_ms(created, modified) if completed else None
        start = gen.timestamp_ms(created, created + 20 * _DAY_MS)
        due = gen.timestamp_ms(start, start + 60 * _DAY_MS)
        # Asana uses either due_at or due_on; a due_at implies the matching due_on.
        has_due_at = index % 3 == 0
        # Subtasks carry no tags here: ``GET /tasks?tag=`` lists top-level tasks only.
        tags = self.tags_by_workspace.get(ws_gid, []) if parent is None else []
        task_tags = [tags[(index + k) % len(tags)] for k in range(index % 3)] if tags else []
        likers = users[: index % 3]
        notes = f"Notes for task {index}."
        followers = [u for u in (creator, assignee) if u is not None]
        followers = list({u["gid"]: u for u in followers}.values())
        permalink = (
            f"https://app.asana.com/1/{ws_gid}/project/{project['gid']}/task/{gid}"
            if project is not None
            else f"https://app.asana.com/1/{ws_gid}/task/{gid}"
        )
        task = self._make(
            stream,
            {
                "gid": gid,
                "resource_type": "task",
                "name": f"Task {index}" if parent is None else f"Subtask {index}",
                "resource_subtype": resource_subtype,
                "approval_status": (
                    rng.choice(_ENUMS["approval_status"])
                    if resource_subtype == "approval"
                    else None
                ),
                "assignee_status": rng.choice(_ENUMS["assignee_status"]),
                "assignee": self._ref(stream, "assignee", assignee),
                "assigned_by": self._ref(stream, "assigned_by", creator if assignee else None),
                "assignee_section": (
                    self._ref(stream, "assignee_section", self._my_tasks_section(assignee["gid"]))
                    if assignee
                    else None
                ),
                "completed": completed,
                "completed_at": iso_ms(completed_at) if completed_at is not None else None,
                "completed_by": self._ref(stream, "completed_by", creator if completed else None),
                "created_at": iso_ms(created),
                "modified_at": iso_ms(modified),
                "created_by": self._ref(stream, "created_by", creator),
                "dependencies": [],
                "dependents": [],
                "due_at": iso_ms(due) if has_due_at else None,
                "due_on": iso_date(due),
                "start_at": iso_ms(start) if has_due_at and index % 2 else None,
                "start_on": iso_date(start),
                "notes": notes,
                "html_notes": f"<body>{notes}</body>",
                "hearted": False,
                "liked": False,
                "hearts": [self._like(stream, "hearts", u) for u in likers],
                "likes": [self._like(stream, "likes", u) for u in likers],
                "num_hearts": len(likers),
                "num_likes": len(likers),
                "num_subtasks": 0,
                "is_rendered_as_separator": False,
                "memberships": [self._membership(project, completed)] if project else [],
                "projects": [self._ref(stream, "projects", project)] if project else [],
                "tags": [self._ref(stream, "tags", t) for t in task_tags],
                "followers": [self._ref(stream, "followers", u) for u in followers],
                "parent": self._ref(stream, "parent", parent),
                "custom_fields": self._custom_field_values(ws_gid),
                "custom_type": None,
                "custom_type_status_option": None,
                "workspace": self._ref(stream, "workspace", ws),
                "permalink_url": permalink,
            },
        )
        self._finish(stream, task, ws_gid)
        if parent is None:
            assert project is not None
            self.tasks[gid] = task
            self.tasks_by_project[project["gid"]].append(task)
        else:
            self.subtasks[gid] = task
            siblings = self.subtasks_by_parent.setdefault(parent["gid"], [])
            siblings.append(task)
            parent["num_subtasks"] = len(siblings)
        self.subtasks_by_parent.setdefault(gid, [])
        self.stories_by_task[gid] = []
        return task

    # ----- the newer resources (built after tasks and stories, so that adding them left
    # ----- the data of the original five streams unchanged for a given seed)
    def _created_between(self, lo_iso: str | None, hi_iso: str | None, days: int = 0) -> int:
        lo = parse_iso_ms(lo_iso) if lo_iso else _RANGE_START_MS
        hi = parse_iso_ms(hi_iso) if hi_iso else _RANGE_END_MS
        if days:
            hi = min(hi, lo + days * _DAY_MS)
        return self._gen.timestamp_ms(lo, hi)

    def _fill(self, stream: str, internal: dict[str, Any], values: dict[str, Any]) -> None:
        """Turn an internal ``{gid, resource_type, name}`` object into a full one, in place."""
        ws_gid = values.pop("_workspace_gid")
        full = self._make(stream, {**internal, **values})
        self._finish(stream, full, ws_gid)
        internal.clear()
        internal.update(full)

    def _complete_tags(self, ws: dict[str, Any]) -> None:
        me = self.users.get(self.me_gid)
        for n, tag in enumerate(self.tags_by_workspace[ws["gid"]]):
            notes = f"Notes for {tag['name']}."
            self._fill(
                "tags",
                tag,
                {
                    "_workspace_gid": ws["gid"],
                    "color": _ENUMS["color"][n * 5 % len(_ENUMS["color"])] if n % 3 else None,
                    "created_at": iso_ms(self._created_between(None, None)),
                    "followers": [self._ref("tags", "followers", me)] if me and n % 2 else [],
                    "notes": notes,
                    "permalink_url": f"https://app.asana.com/1/{ws['gid']}/tag/{tag['gid']}/list",
                    "workspace": self._ref("tags", "workspace", ws),
                },
            )

    def _complete_teams(self, ws: dict[str, Any]) -> None:
        users = self.users_by_workspace[ws["gid"]]
        for n, team in enumerate(self.teams_by_workspace[ws["gid"]]):
            description = f"About {team['name']}."
            level = _TEAM_ACCESS[n % 2]
            self._fill(
                "teams",
                team,
                {
                    "_workspace_gid": ws["gid"],
                    "custom_field_settings": [],
                    "description": description,
                    "html_description": f"<body>{description}</body>",
                    "edit_team_name_or_description_access_level": level,
                    "edit_team_visibility_or_trash_team_access_level": "only_team_admins",
                    "guest_invite_management_access_level": level,
                    "join_request_management_access_level": level,
                    "member_invite_management_access_level": level,
                    "team_member_removal_access_level": "only_team_admins",
                    "team_content_management_access_level": (
                        "no_restriction" if n % 2 == 0 else "only_team_admins"
                    ),
                    "endorsed": n == 0,
                    "organization": self._ref("teams", "organization", ws),
                    "permalink_url": f"https://app.asana.com/1/{ws['gid']}/team/{team['gid']}",
                    "visibility": _TEAM_VISIBILITY[n % len(_TEAM_VISIBILITY)],
                },
            )
            # The first team has every workspace user, the others the first two.
            members = users if n == 0 else users[:2]
            listing = self.team_memberships_by_team.setdefault(team["gid"], [])
            for m, user in enumerate(members):
                membership = self._make(
                    "team_memberships",
                    {
                        "gid": self._gen.gid(),
                        "resource_type": "team_membership",
                        "user": self._ref("team_memberships", "user", user),
                        "team": self._ref("team_memberships", "team", team),
                        "is_admin": m == 0,
                        "is_guest": False,
                        "is_limited_access": False,
                    },
                )
                self._finish("team_memberships", membership, ws["gid"])
                self.team_memberships[membership["gid"]] = membership
                listing.append(membership)

    def _complete_sections(self, project: dict[str, Any], extra: bool) -> None:
        """Make the project's sections full objects (plus a third, empty one if ``extra``)."""
        ws_gid = project["workspace"]["gid"]
        sections = self.sections_by_project[project["gid"]]
        if extra:
            number = project["name"].split()[-1]
            section = self._internal("section", f"Section {number}.3")
            self.sections[section["gid"]] = section
            sections.append(section)
        for section in sections:
            created = self._created_between(project["created_at"], project["modified_at"], 5)
            self._fill(
                "sections",
                section,
                {
                    "_workspace_gid": ws_gid,
                    "created_at": iso_ms(created),
                    "project": self._ref("sections", "project", project),
                    "projects": [self._ref("sections", "projects", project)],
                },
            )

    def _new_project_memberships(self, project: dict[str, Any]) -> None:
        ws_gid = project["workspace"]["gid"]
        owner_gid = (project.get("owner") or {}).get("gid")
        listing = self.project_memberships_by_project.setdefault(project["gid"], [])
        for n, ref in enumerate(project.get("members") or []):
            user = self.users[ref["gid"]]
            level = "admin" if user["gid"] == owner_gid else _MEMBER_ACCESS[n % len(_MEMBER_ACCESS)]
            membership = self._make(
                "project_memberships",
                {
                    "gid": self._gen.gid(),
                    "resource_type": "project_membership",
                    "access_level": level,
                    "write_access": (
                        "full_write" if level in ("admin", "editor") else "comment_only"
                    ),
                    "member": self._ref("project_memberships", "member", user),
                    "user": self._ref("project_memberships", "user", user),
                    "parent": self._ref("project_memberships", "parent", project),
                    "project": self._ref("project_memberships", "project", project),
                },
            )
            self._finish("project_memberships", membership, ws_gid)
            self.project_memberships[membership["gid"]] = membership
            listing.append(membership)

    def _complete_custom_fields(self, ws: dict[str, Any]) -> None:
        """Full definitions for the custom fields whose values tasks and projects carry."""
        me = self.users.get(self.me_gid)
        definitions = self.custom_fields_by_workspace.setdefault(ws["gid"], [])
        option_node = self._node("custom_fields", "enum_options")
        for template in self._custom_field_templates.get(ws["gid"], []):
            kind = template.get("type") or "text"
            description = f"{template.get('name')} of the work."
            definition = self._make(
                "custom_fields",
                {
                    "gid": template["gid"],
                    "resource_type": "custom_field",
                    "name": template.get("name"),
                    "type": kind,
                    "resource_subtype": kind,
                    "representation_type": kind,
                    "asana_created_field": "priority" if kind == "enum" else None,
                    "created_by": self._ref("custom_fields", "created_by", me),
                    "currency_code": None,
                    "custom_label": None,
                    "custom_label_position": None,
                    "date_value": None,
                    "default_access_level": "editor",
                    "description": description,
                    "display_value": None,
                    "enabled": True,
                    "enum_options": [
                        fit(o, option_node) for o in template.get("enum_options") or []
                    ],
                    "enum_value": None,
                    "format": "none" if kind == "enum" else "custom",
                    "has_notifications_enabled": True,
                    "html_text_value": None,
                    "id_prefix": None,
                    "input_restrictions": [],
                    "is_formula_field": False,
                    "is_global_to_workspace": True,
                    "is_value_read_only": False,
                    "multi_enum_values": [],
                    "number_value": None,
                    "people_value": [],
                    "precision": 0 if kind == "enum" else 1,
                    "privacy_setting": "public_with_guests",
                    "reference_value": [],
                    "text_value": None,
                },
            )
            self._finish("custom_fields", definition, ws["gid"])
            self.custom_fields[definition["gid"]] = definition
            definitions.append(definition)

    def _new_custom_field_settings(self, project: dict[str, Any]) -> None:
        ws_gid = project["workspace"]["gid"]
        listing = self.custom_field_settings_by_project.setdefault(project["gid"], [])
        node = self._node("project_custom_field_settings", "custom_field")
        for n, definition in enumerate(self.custom_fields_by_workspace.get(ws_gid, [])):
            setting = self._make(
                "project_custom_field_settings",
                {
                    "gid": self._gen.gid(),
                    "resource_type": "custom_field_setting",
                    "custom_field": fit(definition, node),
                    "is_important": n == 0,
                    "parent": self._ref("project_custom_field_settings", "parent", project),
                    "project": self._ref("project_custom_field_settings", "project", project),
                },
            )
            self._finish("project_custom_field_settings", setting, ws_gid)
            self.custom_field_settings[setting["gid"]] = setting
            listing.append(setting)

    def _new_attachments(self, task: dict[str, Any], count: int) -> None:
        ws_gid = task["workspace"]["gid"]
        listing = self.attachments_by_parent.setdefault(task["gid"], [])
        for _ in range(count):
            gen = self._gen
            gid = gen.gid()
            n = len(self.attachments) + 1
            host = _ATTACHMENT_HOSTS[n % len(_ATTACHMENT_HOSTS)]
            name = f"attachment-{n}.{('png', 'pdf', 'txt')[n % 3]}"
            on_asana = host == "asana"
            attachment = self._make(
                "attachments",
                {
                    "gid": gid,
                    "resource_type": "attachment",
                    "name": name,
                    "resource_subtype": host,
                    "host": host,
                    "connected_to_app": False,
                    "created_at": iso_ms(
                        self._created_between(task["created_at"], task["modified_at"])
                    ),
                    "download_url": (
                        f"https://files.example.com/assets/{gid}/{name}" if on_asana else None
                    ),
                    "permanent_url": f"https://app.asana.com/app/asana/-/get_asset?asset_id={gid}",
                    "view_url": f"https://files.example.com/view/{gid}/{name}",
                    "size": 1024 * (1 + n % 500),
                    "parent": fit(task, self._node("attachments", "parent")),
                },
            )
            self._finish("attachments", attachment, ws_gid)
            self.attachments[gid] = attachment
            listing.append(attachment)

    def _new_time_tracking_entries(self, task: dict[str, Any], count: int) -> None:
        ws_gid = task["workspace"]["gid"]
        users = self.users_by_workspace.get(ws_gid, [])
        listing = self.time_tracking_entries_by_task.setdefault(task["gid"], [])
        for _ in range(count):
            gen = self._gen
            n = len(self.time_tracking_entries) + 1
            user = users[n % len(users)] if users else None
            created = self._created_between(task["created_at"], task["modified_at"])
            entry = self._make(
                "time_tracking_entries",
                {
                    "gid": gen.gid(),
                    "resource_type": "time_tracking_entry",
                    "duration_minutes": 15 * gen.rng.randint(1, 16),
                    "entered_on": iso_date(created),
                    "created_at": iso_ms(created),
                    "created_by": self._ref("time_tracking_entries", "created_by", user),
                    "attributable_to": self._ref("time_tracking_entries", "attributable_to", user),
                    "approval_status": _TIME_APPROVAL[n % len(_TIME_APPROVAL)],
                    "billable_status": _BILLABLE[n % len(_BILLABLE)],
                    "categories": [],
                    "description": f"Work on {task.get('name')}",
                    "task": fit(task, self._node("time_tracking_entries", "task")),
                },
            )
            self._finish("time_tracking_entries", entry, ws_gid)
            self.time_tracking_entries[entry["gid"]] = entry
            listing.append(entry)

    def _new_status_updates(self, project: dict[str, Any], count: int) -> None:
        ws_gid = project["workspace"]["gid"]
        author = self.users.get((project.get("owner") or {}).get("gid") or self.me_gid)
        listing = self.status_updates_by_parent.setdefault(project["gid"], [])
        stamps = sorted(
            self._created_between(project["created_at"], project["modified_at"])
            for _ in range(count)
        )
        for created in stamps:
            n = len(self.status_updates) + 1
            modified = self._gen.timestamp_ms(created, parse_iso_ms(project["modified_at"]))
            text = f"Status update {n}: {project['name']} is moving along."
            update = self._make(
                "status_updates",
                {
                    "gid": self._gen.gid(),
                    "resource_type": "status_update",
                    "resource_subtype": "project_status_update",
                    "title": f"Status update {n}",
                    "text": text,
                    "html_text": f"<body>{text}</body>",
                    "status_type": _STATUS_TYPES[n % len(_STATUS_TYPES)],
                    "author": self._ref("status_updates", "author", author),
                    "created_by": self._ref("status_updates", "created_by", author),
                    "created_at": iso_ms(created),
                    "modified_at": iso_ms(modified),
                    "hearted": False,
                    "hearts": [],
                    "num_hearts": 0,
                    "liked": False,
                    "likes": [],
                    "num_likes": 0,
                    "reaction_summary": [],
                    "parent": self._ref("status_updates", "parent", project),
                },
            )
            self._finish("status_updates", update, ws_gid)
            self.status_updates[update["gid"]] = update
            listing.append(update)

    def _new_portfolios(self, ws: dict[str, Any]) -> None:
        """Two portfolios owned by ``me``: the first holds two projects, the second one."""
        me = self.users.get(self.me_gid)
        projects = self.projects_by_workspace[ws["gid"]]
        listing = self.portfolios_by_workspace.setdefault(ws["gid"], [])
        for n, chosen in enumerate((projects[:2], projects[2:3] or projects[-1:])):
            gen = self._gen
            gid = gen.gid()
            created = self._created_between(None, None)
            start = gen.timestamp_ms(created, created + 30 * _DAY_MS)
            portfolio = self._make(
                "portfolios",
                {
                    "gid": gid,
                    "resource_type": "portfolio",
                    "name": f"Portfolio {len(self.portfolios) + 1}",
                    "archived": False,
                    "color": _ENUMS["color"][(len(self.portfolios) * 3) % len(_ENUMS["color"])],
                    "created_at": iso_ms(created),
                    "created_by": self._ref("portfolios", "created_by", me),
                    "current_status_update": None,
                    "custom_field_settings": [],
                    "custom_fields": [],
                    "default_access_level": ("admin", "editor", "viewer")[n % 3],
                    "start_on": iso_date(start),
                    "due_on": iso_date(start + 90 * _DAY_MS),
                    "members": [self._ref("portfolios", "members", me)] if me else [],
                    "owner": self._ref("portfolios", "owner", me),
                    "permalink_url": f"https://app.asana.com/1/{ws['gid']}/portfolio/{gid}",
                    "privacy_setting": ("members_only", "public_to_domain")[n % 2],
                    "project_templates": [],
                    "public": n % 2 == 1,
                    "workspace": self._ref("portfolios", "workspace", ws),
                },
            )
            self._finish("portfolios", portfolio, ws["gid"])
            self.portfolios[gid] = portfolio
            listing.append(portfolio)
            self.portfolio_items[gid] = sorted(chosen, key=lambda p: p["gid"])

    def _new_goals(self, ws: dict[str, Any]) -> None:
        me = self.users.get(self.me_gid)
        users = self.users_by_workspace[ws["gid"]]
        teams = self.teams_by_workspace[ws["gid"]]
        listing = self.goals_by_workspace.setdefault(ws["gid"], [])
        for n in range(2):
            gen = self._gen
            number = len(self.goals) + 1
            start = gen.timestamp_ms(_RANGE_START_MS, _RANGE_END_MS - 120 * _DAY_MS)
            notes = f"Why goal {number} matters."
            owner = me if n == 0 or not users else users[-1]
            target = float(10 * (number + 1))
            team = teams[0] if teams and n == 1 else None
            goal = self._make(
                "goals",
                {
                    "gid": gen.gid(),
                    "resource_type": "goal",
                    "name": f"Goal {number}",
                    "notes": notes,
                    "html_notes": f"<body>{notes}</body>",
                    "start_on": iso_date(start),
                    "due_on": iso_date(start + 90 * _DAY_MS),
                    "followers": [self._ref("goals", "followers", u) for u in users[:2]],
                    "is_workspace_level": team is None,
                    "liked": False,
                    "likes": [],
                    "num_likes": 0,
                    "owner": self._ref("goals", "owner", owner),
                    "privacy_setting": "public_to_workspace",
                    "default_access_level": "editor",
                    "status": ("green", "yellow", "red")[number % 3],
                    "team": self._ref("goals", "team", team),
                    "workspace": self._ref("goals", "workspace", ws),
                    "current_status_update": None,
                    "custom_field_settings": [],
                    "custom_fields": [],
                    "metric": {
                        "gid": gen.gid(),
                        "resource_type": "metric",
                        "resource_subtype": "number",
                        "unit": "none",
                        "precision": 0,
                        "currency_code": None,
                        "initial_number_value": 0.0,
                        "current_number_value": target / 2,
                        "target_number_value": target,
                        "current_display_value": str(int(target / 2)),
                        "progress_source": "manual",
                        "is_custom_weight": False,
                        "can_manage": True,
                    },
                    "time_period": {
                        "gid": gen.gid(),
                        "resource_type": "time_period",
                        "display_name": f"Q{n + 1} FY{time.gmtime(start / 1000).tm_year % 100}",
                        "period": f"Q{n + 1}",
                        "start_on": iso_date(start),
                        "end_on": iso_date(start + 90 * _DAY_MS),
                    },
                },
            )
            if isinstance(goal.get("metric"), dict):
                goal["metric"] = fit(goal["metric"], self._node("goals", "metric"))
            if isinstance(goal.get("time_period"), dict):
                goal["time_period"] = fit(goal["time_period"], self._node("goals", "time_period"))
            self._finish("goals", goal, ws["gid"])
            self.goals[goal["gid"]] = goal
            listing.append(goal)

    def _new_subtasks(self, parent: dict[str, Any], count: int, stories: bool) -> None:
        """``count`` subtasks of ``parent``, each with one or two stories if ``stories``."""
        gen = self._gen
        for _ in range(count):
            created = self._created_between(parent["created_at"], None, 20)
            modified = gen.timestamp_ms(created, _RANGE_END_MS)
            completed = self._task_counter % 4 == 0
            subtask = self._new_task(None, created, modified, completed=completed, parent=parent)
            n_stories = 1 + self._task_counter % 2 if stories else 0
            _build_stories(self, subtask, created, modified, n_stories, first="added_to_task")

    def _depend(self, task: dict[str, Any], blocker: dict[str, Any]) -> None:
        """Make ``task`` depend on ``blocker`` (and list it among the blocker's dependents)."""
        if blocker is task:
            return
        if "dependencies" in task:
            task["dependencies"] = [self._ref("tasks", "dependencies", blocker)]
        if "dependents" in blocker:
            blocker["dependents"] = [*blocker["dependents"], self._ref("tasks", "dependents", task)]

    def _add_to_project(self, task: dict[str, Any], project: dict[str, Any]) -> None:
        """Multi-home ``task``: it also belongs to ``project`` (and is listed there)."""
        if "projects" in task:
            task["projects"].append(self._ref("tasks", "projects", project))
        if "memberships" in task:
            task["memberships"].append(self._membership(project, bool(task.get("completed"))))
        bisect.insort(self.tasks_by_project[project["gid"]], task, key=lambda t: t["gid"])

    def _new_story(
        self,
        task: dict[str, Any],
        created: int,
        subtype: str,
        *,
        author: dict[str, Any] | None,
        text: str | None = None,
    ) -> dict[str, Any]:
        gen = self._gen
        rng = gen.rng
        self._story_counter += 1
        index = self._story_counter
        ws_gid = task["workspace"]["gid"] if task.get("workspace") else ""
        parent = self._lookup("task", task["parent"]["gid"]) if task.get("parent") else None
        stream = "stories" if parent is None else "subtask_stories"
        gid = gen.gid()
        is_comment = subtype == "comment_added"
        keep = dict(_SYSTEM_STORY_SUBTYPES).get(subtype, frozenset())
        if subtype == "added_to_project":
            keep = frozenset({"project"})
        if is_comment:
            keep = _STORY_COMMENT_FIELDS
        project = None
        if task.get("projects"):
            project = self.projects.get(task["projects"][0]["gid"])
        if text is None and subtype == "added_to_task" and parent is not None:
            text = f"added to {parent.get('name')}"
        if text is None:
            text = {
                "comment_added": f"Comment {index} on {task.get('name')}",
                "added_to_project": f"added to {project['name'] if project else 'a project'}",
                "marked_complete": "marked this task complete",
            }.get(subtype, f"{subtype.replace('_', ' ')} (story {index})")
        likers = self.users_by_workspace.get(ws_gid, [])[: (index // 2) % 3] if is_comment else []
        values: dict[str, Any] = {
            "gid": gid,
            "resource_type": "story",
            "created_at": iso_ms(created),
            "created_by": self._ref(stream, "created_by", author),
            "resource_subtype": subtype,
            "type": "comment" if is_comment else "system",
            "text": text,
            "source": "web" if is_comment else rng.choice(("web", "api")),
            "target": compact(task, self._node(stream, "target")),
        }
        if is_comment:
            values.update(
                {
                    "html_text": f"<body>{text}</body>",
                    "is_pinned": False,
                    "is_edited": False,
                    "is_editable": True,
                    "hearted": False,
                    "liked": False,
                    "hearts": [self._like(stream, "hearts", u) for u in likers],
                    "likes": [self._like(stream, "likes", u) for u in likers],
                    "num_hearts": len(likers),
                    "num_likes": len(likers),
                }
            )
        if "project" in keep and project is not None:
            values["project"] = self._ref(stream, "project", project)
        if subtype == "resource_subtype_changed":
            values["old_resource_subtype"] = "default_task"
            values["new_resource_subtype"] = task.get("resource_subtype") or "milestone"
        if subtype == "comment_liked":
            earlier = self.stories_by_task.get(task["gid"]) or []
            values["story"] = compact(earlier[0], self._node(stream, "story")) if earlier else None
        if is_comment:
            # Occasional stickers, link previews and reactions on comments.
            values["sticker_name"] = "dancing_unicorn" if index % 7 == 0 else None
            if index % 3:
                values["previews"] = []
                values["reaction_summary"] = []
        if subtype == "name_changed":
            values["old_name"] = f"Old name of {task.get('name')}"
            values["new_name"] = task.get("name")
        if subtype == "section_changed" and project is not None:
            sections = self.sections_by_project.get(project["gid"], [])
            if len(sections) >= 2:
                values["old_section"] = self._ref(stream, "old_section", sections[0])
                values["new_section"] = self._ref(stream, "new_section", sections[1])
        if subtype == "added_to_task" and parent is not None:
            values["task"] = self._ref(stream, "task", parent)
        story = self._make(stream, values, nulls=_STORY_CONDITIONAL_FIELDS - keep)
        self._finish(stream, story, ws_gid)
        (self.stories if parent is None else self.subtask_stories)[gid] = story
        self.stories_by_task.setdefault(task["gid"], []).append(story)
        return story

    # ------------------------------------------------------------------ mutations
    def touch_task(self, gid: str, at: datetime | str | None = None) -> dict[str, Any]:
        """Set a task's (or subtask's) ``modified_at`` to now (UTC, ms) or to ``at``.

        Returns the task. A subtask's parent is left alone: in Asana a change of a subtask
        does not modify its parent.

        Raises:
            KeyError: if there is no task or subtask ``gid``.
        """
        with self.lock:
            task = self.get_task(gid)
            if at is None:
                stamp = iso_ms(self._now_ms())
            elif isinstance(at, datetime):
                aware = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
                stamp = iso_ms(int(aware.timestamp() * 1000))
            else:
                stamp = iso_ms(parse_iso_ms(at))
            task["modified_at"] = stamp
            self.version += 1
            return task

    def add_story(
        self, task_gid: str, text: str = "A new comment", *, author_gid: str | None = None
    ) -> dict[str, Any]:
        """Add a comment story created now and bump the task's ``modified_at`` (as Asana does).

        Works for subtasks too (the story goes to ``subtask_stories``; the subtask's
        ``modified_at`` moves, its parent's does not).

        Raises:
            KeyError: if there is no task or subtask ``task_gid``.
        """
        with self.lock:
            task = self.get_task(task_gid)
            author = self.users.get(author_gid or self.me_gid)
            now = self._now_ms()
            story = self._new_story(task, now, "comment_added", author=author, text=text)
            task["modified_at"] = story["created_at"]
            self.version += 1
            return story

    def delete_task(self, gid: str) -> dict[str, Any]:
        """Delete a task or subtask with its subtasks (recursively), stories, attachments
        and time tracking entries; returns the deleted task.

        Deleting a subtask lowers its parent's ``num_subtasks`` (its ``modified_at`` stays).

        Raises:
            KeyError: if there is no task or subtask ``gid``.
        """
        with self.lock:
            task = self.get_task(gid)
            if gid in self.tasks:
                del self.tasks[gid]
                for listing in self.tasks_by_project.values():
                    for i, candidate in enumerate(listing):
                        if candidate is task:
                            del listing[i]
                            break
            else:
                del self.subtasks[gid]
                parent_gid = task["parent"]["gid"]
                siblings = self.subtasks_by_parent.get(parent_gid, [])
                siblings[:] = [t for t in siblings if t is not task]
                parent = self._lookup("task", parent_gid)
                if parent is not None and "num_subtasks" in parent:
                    parent["num_subtasks"] = len(siblings)
            for child in list(self.subtasks_by_parent.get(gid, [])):
                self.delete_task(child["gid"])
            self.subtasks_by_parent.pop(gid, None)
            for story in self.stories_by_task.pop(gid, []):
                self.stories.pop(story["gid"], None)
                self.subtask_stories.pop(story["gid"], None)
            for attachment in self.attachments_by_parent.pop(gid, []):
                self.attachments.pop(attachment["gid"], None)
            for entry in self.time_tracking_entries_by_task.pop(gid, []):
                self.time_tracking_entries.pop(entry["gid"], None)
            self.version += 1
            return task

    def add_task(self, project_gid: str, **overrides: Any) -> dict[str, Any]:
        """Create an incomplete task in a project, created and modified now.

        ``overrides`` are applied last (e.g. ``name="Urgent"``). Returns the task.

        Raises:
            KeyError: if there is no project ``project_gid``.
        """
        with self.lock:
            project = self.projects[project_gid]
            now = self._now_ms()
            task = self._new_task(project, now, now, completed=False)
            task.update(overrides)
            self.version += 1
            return task

    def add_subtask(self, parent_gid: str, **overrides: Any) -> dict[str, Any]:
        """Create an incomplete subtask of a task or subtask, created and modified now.

        The parent's ``num_subtasks`` goes up; its ``modified_at`` does not change (in Asana
        a change of a related object does not modify the task). Returns the subtask.

        Raises:
            KeyError: if there is no task or subtask ``parent_gid``.
        """
        with self.lock:
            parent = self.get_task(parent_gid)
            now = self._now_ms()
            subtask = self._new_task(None, now, now, completed=False, parent=parent)
            subtask.update(overrides)
            self.version += 1
            return subtask

    def iter_objects(self) -> Iterable[tuple[str, dict[str, Any]]]:
        """Yield ``(stream, object)`` for every served object (for schema validation).

        Sections are those of projects; portfolio items are the projects as a portfolio
        lists them (projected onto the ``portfolio_items`` schema, minus tap-only keys).
        """
        tables = {
            "sections": [s for listing in self.sections_by_project.values() for s in listing],
            "project_custom_field_settings": list(self.custom_field_settings.values()),
            "portfolio_items": [
                {k: project.get(k) for k in self._schema_props("portfolio_items")}
                for listing in self.portfolio_items.values()
                for project in listing
            ],
        }
        for stream in STREAM_RESOURCE_TYPES:
            objects = tables.get(stream)
            if objects is None:
                objects = list(getattr(self, stream).values())
            for obj in objects:
                if stream in NON_ASANA_FIELDS:
                    obj = {k: v for k, v in obj.items() if k not in NON_ASANA_FIELDS[stream]}
                yield stream, obj


def build_dataset(
    *,
    workspaces: int = 2,
    users_per_workspace: int = 4,
    projects_per_workspace: int = 3,
    tasks_per_project: int = 12,
    stories_per_task: int = 2,
    multi_home_every: int = 5,
    archived_every: int = 3,
    subtasks_every: int = 6,
    attachments_every: int = 3,
    time_entries_every: int = 4,
    seed: int = 1,
    schema_dir: Path | None = None,
) -> Dataset:
    """Generate a deterministic dataset (same arguments -> same data).

    * One user ("User 1", ``Dataset.me_gid``) belongs to every workspace; each workspace
      has ``users_per_workspace - 1`` users of its own.
    * Every ``archived_every``-th project (1-based, counted per workspace) is archived
      (0 = none).
    * Every ``multi_home_every``-th task of a project (0 = none) also belongs to the next
      project of the same workspace (wrapping around), so it is listed in both.
    * Each task gets ``stories_per_task`` stories: first "added_to_project", then
      alternating comments and assorted system stories, in chronological order.

    Then the newer resources (after all of the above, so that for a given seed the
    workspaces, users, projects, tasks and stories are what they were before these
    existed; only the parents' ``num_subtasks`` differ):

    * tags (3 per workspace) and teams (2 per organization, i.e. odd-numbered
      workspaces) become full objects; the first team has every workspace user as a
      member, the second the first two (``team_memberships``);
    * custom field definitions (the 2 per workspace that task values point to); one
      custom field setting per project and definition;
    * sections become full objects; every second project of a workspace gets a third,
      empty section; one project membership per project member; 1 or 2 status updates
      per project;
    * 2 portfolios per workspace, owned by ``me``, holding 2 and 1 projects; 2 goals per
      workspace;
    * every ``attachments_every``-th task (counted over all tasks, 1-based) has 1 or 2
      attachments, every ``time_entries_every``-th 1 or 2 time tracking entries;
    * every ``subtasks_every``-th task has 1 or 2 subtasks and every third subtask a
      subtask of its own (two levels); each subtask has 1 or 2 stories (none when
      ``stories_per_task`` is 0). 0 turns the respective kind off.
    """
    dataset = Dataset(load_schemas(schema_dir), seed=seed)
    gen = dataset._gen
    with dataset.lock:
        ws_list = [dataset._new_workspace(i + 1) for i in range(workspaces)]
        user_no = 1
        if ws_list and users_per_workspace > 0:
            dataset.me_gid = dataset._new_user(user_no, ws_list)["gid"]
            user_no += 1
        for ws in ws_list:
            for _ in range(max(0, users_per_workspace - 1)):
                dataset._new_user(user_no, [ws])
                user_no += 1
        for ws in ws_list:
            ws_no = ws["name"].split()[-1]
            for n in (1, 2, 3):
                tag = dataset._internal("tag", f"Tag {ws_no}.{n}")
                dataset.tags[tag["gid"]] = tag
                dataset.tags_by_workspace[ws["gid"]].append(tag)
            if ws.get("is_organization"):
                for n in (1, 2):
                    team = dataset._internal("team", f"Team {ws_no}.{n}")
                    dataset.teams[team["gid"]] = team
                    dataset.teams_by_workspace[ws["gid"]].append(team)
            dataset._custom_field_templates[ws["gid"]] = dataset._new_custom_fields(ws["gid"])
        project_no = 0
        for ws in ws_list:
            for p in range(projects_per_workspace):
                project_no += 1
                archived = bool(archived_every) and (p + 1) % archived_every == 0
                dataset._new_project(project_no, ws, archived)
        for ws in ws_list:
            projects = dataset.projects_by_workspace[ws["gid"]]
            for p_index, project in enumerate(projects):
                created_list = sorted(
                    gen.timestamp_ms(_RANGE_START_MS, _RANGE_END_MS - 30 * _DAY_MS)
                    for _ in range(tasks_per_project)
                )
                for t_index, created in enumerate(created_list, start=1):
                    modified = gen.timestamp_ms(created, _RANGE_END_MS)
                    completed = t_index % 3 == 0
                    task = dataset._new_task(project, created, modified, completed=completed)
                    if t_index % 4 == 0:
                        dataset._depend(task, dataset.tasks_by_project[project["gid"]][-2])
                    if multi_home_every and t_index % multi_home_every == 0 and len(projects) > 1:
                        dataset._add_to_project(task, projects[(p_index + 1) % len(projects)])
                    _build_stories(dataset, task, created, modified, stories_per_task)
        _build_newer_resources(
            dataset,
            ws_list,
            subtasks_every=subtasks_every,
            attachments_every=attachments_every,
            time_entries_every=time_entries_every,
            subtask_stories=stories_per_task > 0,
        )
    return dataset


def _build_newer_resources(
    dataset: Dataset,
    ws_list: list[dict[str, Any]],
    *,
    subtasks_every: int,
    attachments_every: int,
    time_entries_every: int,
    subtask_stories: bool,
) -> None:
    for ws in ws_list:
        dataset._complete_tags(ws)
        dataset._complete_teams(ws)
        dataset._complete_custom_fields(ws)
    for ws in ws_list:
        for p_index, project in enumerate(dataset.projects_by_workspace[ws["gid"]]):
            dataset._complete_sections(project, extra=p_index % 2 == 1)
            dataset._new_project_memberships(project)
            dataset._new_custom_field_settings(project)
            dataset._new_status_updates(project, 1 + p_index % 2)
    for ws in ws_list:
        dataset._new_portfolios(ws)
        dataset._new_goals(ws)
    tasks = list(dataset.tasks.values())
    for i, task in enumerate(tasks, start=1):
        if attachments_every and i % attachments_every == 0:
            dataset._new_attachments(task, 1 + (i // attachments_every) % 2)
        if time_entries_every and i % time_entries_every == 0:
            dataset._new_time_tracking_entries(task, 1 + (i // time_entries_every) % 2)
        # Like Asana: a task's actual time is the sum of its time entries (null if none).
        entries = dataset.time_tracking_entries_by_task.get(task["gid"], [])
        if "actual_time_minutes" in task:
            total = sum(e.get("duration_minutes") or 0 for e in entries)
            task["actual_time_minutes"] = total or None
    if subtasks_every:
        for i, task in enumerate(tasks, start=1):
            if i % subtasks_every == 0:
                dataset._new_subtasks(task, 1 + (i // subtasks_every) % 2, subtask_stories)
        for n, subtask in enumerate(list(dataset.subtasks.values()), start=1):
            if n % 3 == 0:
                dataset._new_subtasks(subtask, 1, subtask_stories)


def _build_stories(
    dataset: Dataset,
    task: dict[str, Any],
    created: int,
    modified: int,
    count: int,
    first: str = "added_to_project",
) -> None:
    if count <= 0:
        return
    gen = dataset._gen
    ws_gid = task["workspace"]["gid"] if task.get("workspace") else ""
    users = dataset.users_by_workspace.get(ws_gid, [])
    creator = dataset.users.get(task["created_by"]["gid"]) if task.get("created_by") else None
    stamps = [created, *sorted(gen.timestamp_ms(created, modified) for _ in range(count - 1))]
    for i, stamp in enumerate(stamps):
        author = creator
        if i == 0:
            subtype = first
        else:
            # A dataset-wide rotation (every other story a comment), so that even with two
            # stories per task every system subtype -- and so every conditional story
            # field -- appears somewhere.
            dataset._rotation += 1
            if dataset._rotation % 2:
                subtype = "comment_added"
                author = users[dataset._rotation % len(users)] if users else None
            else:
                position = (dataset._rotation // 2) % len(_SYSTEM_STORY_SUBTYPES)
                subtype = _SYSTEM_STORY_SUBTYPES[position][0]
        dataset._new_story(task, stamp, subtype, author=author)
