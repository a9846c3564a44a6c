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

#: Stream name -> Asana ``resource_type``.
STREAM_RESOURCE_TYPES = {
    "workspaces": "workspace",
    "users": "user",
    "projects": "project",
    "tasks": "task",
    "stories": "story",
}

#: Properties in our schemas that Asana does not have (the tap adds them itself).
NON_ASANA_FIELDS: dict[str, frozenset[str]] = {
    "tasks": frozenset({"project_gid"}),
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
}

#: Compact shapes returned by list endpoints without ``opt_fields`` (NOTES §3).
COMPACT_FIELDS: dict[str, tuple[str, ...]] = {
    "workspace": ("gid", "resource_type", "name"),
    "user": ("gid", "resource_type", "name"),
    "project": ("gid", "resource_type", "name"),
    "task": ("gid", "resource_type", "name", "resource_subtype"),
    "story": ("gid", "resource_type", "created_at", "created_by", "resource_subtype", "text"),
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
    text = value.strip()
    if not text or not text[0].isdigit():
        raise ValueError(value)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    micros = int(parsed.timestamp()) * 1_000_000 + parsed.microsecond
    return -(-micros // 1000)


def load_schemas(schema_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Load our five stream schemas (``{stream: schema}``) from ``tap_asana_vl/schemas``."""
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


class Dataset:
    """The fake Asana domain: full objects by gid plus the indexes the API needs.

    ``workspaces``, ``users``, ``projects``, ``tasks``, ``stories`` map gid -> full object
    (insertion order == creation order == gid order). ``sections``, ``tags`` and
    ``teams`` are small internal objects that compact references point to (no routes).
    Index lists (``tasks_by_project`` etc.) are kept sorted by gid.

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
        self.custom_fields_by_workspace: dict[str, list[dict[str, Any]]] = {}
        #: The user behind every PAT and OAuth grant (member of all workspaces).
        self.me_gid = ""
        #: Bumped by every mutation helper (lets the server drop cached renderings).
        self.version = 0
        self._gen = _Generator(random.Random(seed))
        self._task_counter = 0
        self._story_counter = 0
        self._rotation = 0
        self._my_tasks_sections: dict[str, dict[str, Any]] = {}

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
        return table.get(gid) if table is not None else None

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
        for definition in self.custom_fields_by_workspace.get(ws_gid, []):
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
        project: dict[str, Any],
        created: int,
        modified: int,
        *,
        completed: bool,
    ) -> dict[str, Any]:
        gen = self._gen
        rng = gen.rng
        self._task_counter += 1
        index = self._task_counter
        ws_gid = project["workspace"]["gid"] if project.get("workspace") else ""
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
        tags = self.tags_by_workspace.get(ws_gid, [])
        task_tags = [tags[(index + k) % len(tags)] for k in range(index % 3)] if tags else []
        likers = users[: index % 3]
        notes = f"Notes for task {index}."
        followers = [u for u in (creator, assignee) if u is not None]
        followers = list({u["gid"]: u for u in followers}.values())
        task = self._make(
            "tasks",
            {
                "gid": gid,
                "resource_type": "task",
                "name": f"Task {index}",
                "resource_subtype": resource_subtype,
                "approval_status": (
                    rng.choice(_ENUMS["approval_status"])
                    if resource_subtype == "approval"
                    else None
                ),
                "assignee_status": rng.choice(_ENUMS["assignee_status"]),
                "assignee": self._ref("tasks", "assignee", assignee),
                "assigned_by": self._ref("tasks", "assigned_by", creator if assignee else None),
                "assignee_section": (
                    self._ref("tasks", "assignee_section", self._my_tasks_section(assignee["gid"]))
                    if assignee
                    else None
                ),
                "completed": completed,
                "completed_at": iso_ms(completed_at) if completed_at is not None else None,
                "completed_by": self._ref("tasks", "completed_by", creator if completed else None),
                "created_at": iso_ms(created),
                "modified_at": iso_ms(modified),
                "created_by": self._ref("tasks", "created_by", creator),
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
                "hearts": [self._like("tasks", "hearts", u) for u in likers],
                "likes": [self._like("tasks", "likes", u) for u in likers],
                "num_hearts": len(likers),
                "num_likes": len(likers),
                "num_subtasks": 0,
                "is_rendered_as_separator": False,
                "memberships": [self._membership(project, completed)],
                "projects": [self._ref("tasks", "projects", project)],
                "tags": [self._ref("tasks", "tags", t) for t in task_tags],
                "followers": [self._ref("tasks", "followers", u) for u in followers],
                "parent": None,
                "custom_fields": self._custom_field_values(ws_gid),
                "custom_type": None,
                "custom_type_status_option": None,
                "workspace": self._ref("tasks", "workspace", ws),
                "permalink_url": f"https://app.asana.com/1/{ws_gid}/project/{project['gid']}/task/{gid}",
            },
        )
        self._finish("tasks", task, ws_gid)
        self.tasks[gid] = task
        self.tasks_by_project[project["gid"]].append(task)
        self.stories_by_task[gid] = []
        return task

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
            "created_by": self._ref("stories", "created_by", author),
            "resource_subtype": subtype,
            "type": "comment" if is_comment else "system",
            "text": text,
            "source": "web" if is_comment else rng.choice(("web", "api")),
            "target": compact(task, self._node("stories", "target")),
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
                    "hearts": [self._like("stories", "hearts", u) for u in likers],
                    "likes": [self._like("stories", "likes", u) for u in likers],
                    "num_hearts": len(likers),
                    "num_likes": len(likers),
                }
            )
        if "project" in keep and project is not None:
            values["project"] = self._ref("stories", "project", project)
        if subtype == "resource_subtype_changed":
            values["old_resource_subtype"] = "default_task"
            values["new_resource_subtype"] = task.get("resource_subtype") or "milestone"
        if subtype == "comment_liked":
            earlier = self.stories_by_task.get(task["gid"]) or []
            values["story"] = (
                compact(earlier[0], self._node("stories", "story")) if earlier else None
            )
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
                values["old_section"] = self._ref("stories", "old_section", sections[0])
                values["new_section"] = self._ref("stories", "new_section", sections[1])
        story = self._make("stories", values, nulls=_STORY_CONDITIONAL_FIELDS - keep)
        self._finish("stories", story, ws_gid)
        self.stories[gid] = story
        self.stories_by_task.setdefault(task["gid"], []).append(story)
        return story

    # ------------------------------------------------------------------ mutations
    def touch_task(self, gid: str, at: datetime | str | None = None) -> dict[str, Any]:
        """Set a task's ``modified_at`` to now (UTC, ms) or to ``at``; returns the task.

        Raises:
            KeyError: if there is no task ``gid``.
        """
        with self.lock:
            task = self.tasks[gid]
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

        Raises:
            KeyError: if there is no task ``task_gid``.
        """
        with self.lock:
            task = self.tasks[task_gid]
            author = self.users.get(author_gid or self.me_gid)
            now = self._now_ms()
            story = self._new_story(task, now, "comment_added", author=author, text=text)
            task["modified_at"] = story["created_at"]
            self.version += 1
            return story

    def delete_task(self, gid: str) -> dict[str, Any]:
        """Delete a task (and its stories) from the dataset; returns the deleted task.

        Raises:
            KeyError: if there is no task ``gid``.
        """
        with self.lock:
            task = self.tasks.pop(gid)
            for listing in self.tasks_by_project.values():
                for i, candidate in enumerate(listing):
                    if candidate is task:
                        del listing[i]
                        break
            for story in self.stories_by_task.pop(gid, []):
                self.stories.pop(story["gid"], None)
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

    def iter_objects(self) -> Iterable[tuple[str, dict[str, Any]]]:
        """Yield ``(stream, object)`` for every served object (for schema validation)."""
        for stream in STREAM_RESOURCE_TYPES:
            yield from ((stream, obj) for obj in list(getattr(self, stream).values()))


def build_dataset(
    *,
    workspaces: int = 2,
    users_per_workspace: int = 4,
    projects_per_workspace: int = 3,
    tasks_per_project: int = 12,
    stories_per_task: int = 2,
    multi_home_every: int = 5,
    archived_every: int = 3,
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
            dataset.custom_fields_by_workspace[ws["gid"]] = dataset._new_custom_fields(ws["gid"])
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
    return dataset


def _build_stories(
    dataset: Dataset, task: dict[str, Any], created: int, modified: int, count: int
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
            subtype = "added_to_project"
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
