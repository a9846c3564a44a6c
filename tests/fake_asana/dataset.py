"""Deterministic Asana data for the fake API, written from Asana's documentation.

Every object is a full record as the spec's ``*Response`` component for its resource
documents it (spec/asana_oas.yaml, read by a person, not by this code), including the
nulls Asana really sends: unassigned tasks, tasks without due dates, empty custom field
values, users without photos, projects without owner or team, system stories without an
author, ... Nested references have the spec's ``*Compact`` shapes and point at real
objects of the dataset.

Nothing here reads the tap (code or schemas): the fake has to be able to send what the
tap does not expect, or the tests cannot catch it.
"""

from __future__ import annotations

import bisect
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any


def _names(text: str) -> tuple[str, ...]:
    """Field names from a space-separated string (keeps the tables below short)."""
    return tuple(text.split())


#: Fields Asana leaves out of a full record unless named in ``opt_fields`` (the spec
#: marks them "Opt In"), for the resources the fake serves whole (single-object GETs).
OPT_IN_FIELDS: dict[str, frozenset[str]] = {
    "project": frozenset(_names("html_notes project_brief created_from_template")),
    "task": frozenset(
        _names(
            "assigned_by created_by dependencies dependents external html_notes "
            "is_rendered_as_separator num_subtasks"
        )
    ),
}

_NAMED = _names("gid resource_type name")
#: Compact shapes (the spec's ``*Compact`` components), returned by list endpoints
#: without ``opt_fields``.
COMPACT_FIELDS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("workspace", "user", "project", "section", "tag", "team"), _NAMED),
    "portfolio": _NAMED,
    "task": _names("gid resource_type name resource_subtype"),
    "story": _names("gid resource_type created_at created_by resource_subtype text"),
    "team_membership": _names("gid resource_type user team is_guest is_limited_access is_admin"),
    "project_membership": _names("gid resource_type parent member access_level"),
    "custom_field": _names(
        "gid resource_type name type enum_options enabled representation_type id_prefix "
        "input_restrictions is_formula_field date_value enum_value multi_enum_values "
        "number_value text_value display_value"
    ),
    "custom_field_setting": _names("gid resource_type"),
    "attachment": _names("gid resource_type name resource_subtype"),
    "status_update": _names("gid resource_type title resource_subtype"),
    "goal": _names("gid resource_type name owner"),
    "time_tracking_entry": _names(
        "gid resource_type duration_minutes entered_on attributable_to created_by categories"
    ),
}

# Keys of a nested reference (``assignee``, ``parent``, ...): the *Compact component of
# the referenced resource, without its opt-in fields.
_REF_KEYS: dict[str, tuple[str, ...]] = {
    "task": COMPACT_FIELDS["task"],
    "status_update": COMPACT_FIELDS["status_update"],
}

# Everything lands in 2024-2025 so that "now" (used by the mutation helpers) is always
# later than the generated data: incremental syncs then see mutations as new changes.
_RANGE_START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_RANGE_END_MS = 1_767_225_599_000  # 2025-12-31T23:59:59Z
_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
_GID_START = 1_200_000_000_000_000  # 16 digits, like modern Asana gids

_FIRST_NAMES = ("Greg", "Ana", "Mei", "Jonas", "Priya", "Fatima", "Lukas", "Noor", "Kofi")
_LAST_NAMES = ("Sanchez", "Okafor", "Lindqvist", "Tanaka", "Moreau", "Haddad", "Kowalski")
_TASK_NAMES = (
    "Draft the launch email",
    "Fix login redirect",
    "Review Q3 budget",
    "Update onboarding docs",
    "Buy catnip",
    "Prepare customer interview",
    "Migrate staging database",
    "Design new pricing page",
)
_COLORS = ("dark-pink", "dark-green", "dark-blue", "light-teal", "light-orange", "dark-purple")
_ICONS = ("list", "board", "timeline", "calendar", "rocket", "chat_bubbles")
_STICKER = "dancing_unicorn"

# Custom field definitions of every workspace, one per kind a tap must handle:
# (name, type, representation_type, precision, description, flavour). The flavour says
# which values tasks get (see ``Dataset._cf_value``).
_CUSTOM_FIELDS: tuple[tuple[str, str, str, int | None, str | None, str], ...] = (
    ("Priority", "enum", "enum", None, "Development team priority", "enum"),
    ("Estimate", "number", "number", 1, "Expected effort in hours.", "decimal"),
    ("Story points", "number", "number", 0, None, "integer"),
    ("QA notes", "text", "text", None, None, "text"),
    ("Platforms", "multi_enum", "multi_enum", None, "Where the change ships.", "multi_enum"),
    ("Launch date", "date", "date", None, None, "date"),
    ("Review meeting", "date", "date", None, "When the work is reviewed.", "date_time"),
    ("Reviewer", "people", "people", None, None, "people"),
    ("Days open", "number", "formula", 0, "Days since the task was created.", "formula"),
)
_ENUM_OPTIONS = {
    "Priority": (("Low", "green"), ("Medium", "yellow"), ("High", "red")),
    "Platforms": (("Web", "blue"), ("iOS", "purple"), ("Android", "green")),
}
# The value key of each custom field type, and its "no value" (``[]`` for lists).
_VALUE_KEY = {
    "enum": ("enum_value", None),
    "multi_enum": ("multi_enum_values", []),
    "number": ("number_value", None),
    "text": ("text_value", None),
    "date": ("date_value", None),
    "people": ("people_value", []),
}
# Keys of a custom field *value* on a task (CustomFieldResponse, as Asana fills it for
# tasks) and on a project or user (CustomFieldCompact); plus the type's value key.
_TASK_VALUE_KEYS = _names(
    "gid resource_type name type resource_subtype representation_type enabled description "
    "precision format is_formula_field is_value_read_only id_prefix created_by enum_options"
)
_COMPACT_VALUE_KEYS = _names(
    "gid resource_type name type representation_type enabled id_prefix input_restrictions "
    "is_formula_field enum_options"
)

# System story subtypes used in rotation after a task's first story, so that every
# subtype-specific story field shows up somewhere even with two stories per task.
_SYSTEM_STORY_SUBTYPES = _names(
    "assigned name_changed due_date_changed section_changed followers_added added_to_tag "
    "enum_custom_field_changed number_custom_field_changed text_custom_field_changed "
    "date_custom_field_changed multi_enum_custom_field_changed people_custom_field_changed "
    "dependency_added marked_duplicate duplicate_merged resource_subtype_changed "
    "approval_status_changed marked_complete comment_liked"
)
# Custom field change stories: subtype -> (field, value key, old value, new value, text).
# A value set for the first time has a null (or empty) old value.
_CF_CHANGES: dict[str, tuple[str, str, Any, Any, str]] = {
    "number_custom_field_changed": ("Story points", "number_value", None, 3, "to 3"),
    "text_custom_field_changed": (
        "QA notes",
        "text_value",
        "",
        "Check the edge cases on mobile.",
        "",
    ),
    # The spec documents date changes as StoryResponseDates, not as a date_value.
    "date_custom_field_changed": (
        "Launch date",
        "date_value",
        None,
        {"start_on": None, "due_at": None, "due_on": "2025-03-01"},
        "to Mar 1, 2025",
    ),
}


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


def ref(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The compact reference Asana nests for ``obj`` (None stays None)."""
    if obj is None:
        return None
    return {k: obj[k] for k in _REF_KEYS.get(obj["resource_type"], _NAMED)}


def _like(gid: str, user: dict[str, Any]) -> dict[str, Any]:
    """An entry of ``likes``/``hearts`` (the spec's ``Like``)."""
    return {"gid": gid, "user": ref(user)}


def _body(text: str) -> str:
    return f"<body>{text}</body>"


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
    ``sections`` also holds the "Recently assigned" sections of users' My Tasks lists
    (``assignee_section``), minimal objects; project sections are in ``sections_by_project``.

    Index lists (``tasks_by_project``, ``subtasks_by_parent``, ...) are kept sorted by
    gid; ``portfolio_items`` maps a portfolio gid to its projects (full objects).

    Mutation helpers take ``self.lock`` (re-entrant), so they are safe while a
    :class:`FakeAsana` serves the dataset; the server reads under the same lock.
    """

    def __init__(self, seed: int = 1) -> None:
        """Create an empty dataset (use :func:`build_dataset` to fill one)."""
        self.lock = threading.RLock()
        #: Time source (epoch seconds) for "now"; FakeAsana points it at its own clock.
        self.clock: Callable[[], float] = time.time
        Table = dict[str, dict[str, Any]]  # noqa: N806
        Index = dict[str, list[dict[str, Any]]]  # noqa: N806
        self.workspaces: Table = {}
        self.users: Table = {}
        self.projects: Table = {}
        self.tasks: Table = {}
        self.stories: Table = {}
        self.subtasks: Table = {}
        self.subtask_stories: Table = {}
        self.sections: Table = {}
        self.tags: Table = {}
        self.teams: Table = {}
        self.team_memberships: Table = {}
        self.project_memberships: Table = {}
        self.custom_fields: Table = {}
        self.custom_field_settings: Table = {}
        self.attachments: Table = {}
        self.portfolios: Table = {}
        self.status_updates: Table = {}
        self.goals: Table = {}
        self.time_tracking_entries: Table = {}
        self.projects_by_workspace: Index = {}
        self.users_by_workspace: Index = {}
        self.tags_by_workspace: Index = {}
        self.teams_by_workspace: Index = {}
        self.custom_fields_by_workspace: Index = {}
        self.portfolios_by_workspace: Index = {}
        self.goals_by_workspace: Index = {}
        self.tasks_by_project: Index = {}
        self.sections_by_project: Index = {}
        self.project_memberships_by_project: Index = {}
        self.custom_field_settings_by_project: Index = {}
        self.stories_by_task: Index = {}
        self.subtasks_by_parent: Index = {}
        self.attachments_by_parent: Index = {}
        self.time_tracking_entries_by_task: Index = {}
        self.team_memberships_by_team: Index = {}
        self.status_updates_by_parent: Index = {}
        #: Portfolio gid -> the projects it holds (full objects, gid order).
        self.portfolio_items: Index = {}
        #: The user behind every PAT and OAuth grant (member of all workspaces).
        self.me_gid = ""
        #: Bumped by every mutation helper (lets the server drop cached renderings).
        self.version = 0
        #: What ``GET /events`` serves: every event a mutation helper caused, oldest
        #: first, as ``(sequence number, created_at ms, subscribable gids, event)``.
        #: Asana's docs: a project's events are those of the project and of the tasks
        #: in it (their stories included); a task's are its own and its stories'. A
        #: workspace hears every event of its objects (``GET /workspaces/{gid}/events``).
        self.events: list[tuple[int, int, frozenset[str], dict[str, Any]]] = []
        self.rng = random.Random(seed)
        self._next_gid = _GID_START
        self._task_counter = 0
        self._story_counter = 0
        self._rotation = 0
        self._my_tasks_sections: dict[str, dict[str, Any]] = {}
        # Custom field gid -> its flavour (see ``_CUSTOM_FIELDS``) and its workspace gid.
        self._cf_flavour: dict[str, str] = {}
        self._cf_workspace: dict[str, str] = {}

    # ------------------------------------------------------------------ helpers
    def gid(self) -> str:
        """A new gid. Gids grow with creation, so every listing in creation order is
        also in gid order, which lets pagination resume with a bisect."""
        self._next_gid += self.rng.randint(1, 9_999)
        return str(self._next_gid)

    def _between(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, max(lo, hi))

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def get_task(self, gid: str) -> dict[str, Any]:
        """The task or subtask ``gid``.

        Raises:
            KeyError: if there is neither.
        """
        task = self.tasks.get(gid)
        return task if task is not None else self.subtasks[gid]

    def _me(self) -> dict[str, Any] | None:
        return self.users.get(self.me_gid)

    # ------------------------------------------------------------------ builders
    def _new_workspace(self, index: int) -> dict[str, Any]:
        gid = self.gid()
        ws = {
            "gid": gid,
            "resource_type": "workspace",
            "name": f"Workspace {index}",
            "email_domains": [f"ws{index}.example.com"],
            # Alternate organizations (which have teams) and plain workspaces.
            "is_organization": index % 2 == 1,
        }
        self.workspaces[gid] = ws
        for index_table in (
            self.projects_by_workspace,
            self.users_by_workspace,
            self.tags_by_workspace,
            self.teams_by_workspace,
            self.custom_fields_by_workspace,
            self.portfolios_by_workspace,
            self.goals_by_workspace,
        ):
            index_table[gid] = []
        return ws

    def _new_user(self, index: int, workspaces: list[dict[str, Any]]) -> dict[str, Any]:
        gid = self.gid()
        first = _FIRST_NAMES[index % len(_FIRST_NAMES)]
        last = _LAST_NAMES[(index // len(_FIRST_NAMES)) % len(_LAST_NAMES)]
        photo = {
            f"image_{size}x{size}": f"https://s3.example.com/profile_photos/{gid}_{size}.png"
            for size in (21, 27, 36, 60, 128, 1024)
        }
        user = {
            "gid": gid,
            "resource_type": "user",
            "name": f"{first} {last}",
            "email": f"{first}.{last}.{index}@example.com".lower(),
            "photo": photo if index % 4 else None,  # no photo uploaded
            "workspaces": [ref(ws) for ws in workspaces],
            "custom_fields": [],
        }
        self.users[gid] = user
        for ws in workspaces:
            bisect.insort(self.users_by_workspace[ws["gid"]], user, key=lambda u: u["gid"])
        return user

    def _my_tasks_section(self, user_gid: str) -> dict[str, Any]:
        """The "Recently assigned" section of a user's My Tasks list (one per user)."""
        section = self._my_tasks_sections.get(user_gid)
        if section is None:
            section = {"gid": self.gid(), "resource_type": "section", "name": "Recently assigned"}
            self.sections[section["gid"]] = section
            self._my_tasks_sections[user_gid] = section
        return section

    def _new_tags(self, ws: dict[str, Any], number: str) -> None:
        me = self._me()
        for n in (1, 2, 3):
            gid = self.gid()
            tag = {
                "gid": gid,
                "resource_type": "tag",
                "name": ("urgent", "blocked", "customer")[n - 1] + f"-{number}",
                "color": None if n == 3 else _COLORS[n],  # a tag with no colour chosen
                "notes": "" if n == 2 else f"Tag {n} of workspace {number}.",
                "created_at": iso_ms(self._between(_RANGE_START_MS, _RANGE_END_MS)),
                "followers": [ref(me)] if me and n == 1 else [],
                "workspace": ref(ws),
                "permalink_url": f"https://app.asana.com/1/{ws['gid']}/tag/{gid}/list",
            }
            self.tags[gid] = tag
            self.tags_by_workspace[ws["gid"]].append(tag)

    def _new_teams(self, ws: dict[str, Any], number: str) -> None:
        """Two teams; the first has every workspace user, the second the first two."""
        users = self.users_by_workspace[ws["gid"]]
        for n in (1, 2):
            gid = self.gid()
            description = "" if n == 2 else "All developers should be members of this team."
            level = ("all_team_members", "only_team_admins")[n - 1]
            team = {
                "gid": gid,
                "resource_type": "team",
                "name": f"{('Engineering', 'Marketing')[n - 1]} {number}",
                "description": description,
                "html_description": _body(description),
                "organization": ref(ws),
                "permalink_url": f"https://app.asana.com/1/{ws['gid']}/team/{gid}",
                "visibility": ("public", "secret")[n - 1],
                "edit_team_name_or_description_access_level": level,
                "edit_team_visibility_or_trash_team_access_level": "only_team_admins",
                "member_invite_management_access_level": level,
                "guest_invite_management_access_level": level,
                "join_request_management_access_level": level,
                "team_member_removal_access_level": "only_team_admins",
                "team_content_management_access_level": ("no_restriction", level)[n - 1],
                "endorsed": n == 1,
                "custom_field_settings": [],
            }
            self.teams[gid] = team
            self.teams_by_workspace[ws["gid"]].append(team)
            listing = self.team_memberships_by_team.setdefault(gid, [])
            for m, user in enumerate(users if n == 1 else users[:2]):
                membership = {
                    "gid": self.gid(),
                    "resource_type": "team_membership",
                    "user": ref(user),
                    "team": ref(team),
                    "is_guest": False,
                    "is_limited_access": False,
                    "is_admin": m == 0,
                }
                self.team_memberships[membership["gid"]] = membership
                listing.append(membership)

    def _new_custom_fields(self, ws: dict[str, Any]) -> None:
        """One definition of every custom field kind (``_CUSTOM_FIELDS``)."""
        me = self._me()
        for name, kind, representation, precision, description, flavour in _CUSTOM_FIELDS:
            value_key, empty = _VALUE_KEY[kind]
            estimate = name == "Estimate"
            definition: dict[str, Any] = {
                "gid": self.gid(),
                "resource_type": "custom_field",
                "name": name,
                "type": kind,
                "resource_subtype": kind,
                "representation_type": representation,
                "enabled": True,
                "description": description,
                # Asana sends ``precision: null`` for every field that is not a number.
                "precision": precision,
                "format": "custom" if estimate else "none",
                "currency_code": None,
                "custom_label": "h" if estimate else None,
                "custom_label_position": "suffix" if estimate else None,
                "id_prefix": None,
                "input_restrictions": [],
                "is_formula_field": representation == "formula",
                "is_value_read_only": representation == "formula",
                "is_global_to_workspace": True,
                "has_notifications_enabled": True,
                "asana_created_field": "priority" if name == "Priority" else None,
                "created_by": None if name == "Priority" else ref(me),
                "privacy_setting": "public_with_guests",
                "default_access_level": "editor",
                "display_value": None,
                value_key: list(empty) if isinstance(empty, list) else empty,
            }
            if kind == "text":
                definition["html_text_value"] = None
            if name in _ENUM_OPTIONS:
                definition["enum_options"] = [
                    {
                        "gid": self.gid(),
                        "resource_type": "enum_option",
                        "name": option,
                        "enabled": True,
                        "color": color,
                    }
                    for option, color in _ENUM_OPTIONS[name]
                ]
            self.custom_fields[definition["gid"]] = definition
            self._cf_flavour[definition["gid"]] = flavour
            self._cf_workspace[definition["gid"]] = ws["gid"]
            self.custom_fields_by_workspace[ws["gid"]].append(definition)

    def _cf_value(
        self, definition: dict[str, Any], flavour: str, n: int, keys: tuple[str, ...]
    ) -> dict[str, Any]:
        """The value of custom field ``definition`` on the ``n``-th task or project.

        Each kind is empty on some objects (``null``, or ``[]`` for lists), as in Asana.
        """
        value: Any
        options = definition.get("enum_options") or []
        if flavour == "enum":
            value = None if n % 4 == 0 else options[n % len(options)]
            display = value["name"] if value else None
        elif flavour == "multi_enum":
            value = options[: n % 3]
            display = ", ".join(o["name"] for o in value) or None
        elif flavour == "decimal":
            value = None if n % 5 == 0 else n % 40 + 0.5  # e.g. 12.5 with precision 1
            display = None if value is None else f"{value:.1f}"
        elif flavour in ("integer", "formula"):
            value = None if flavour == "integer" and n % 6 == 0 else n % 13 + 1
            display = None if value is None else str(value)
        elif flavour == "text":
            value = None if n % 3 == 0 else "Check the edge cases on mobile."
            display = value
        elif flavour == "date":
            day = _RANGE_START_MS + (n % 600) * _DAY_MS
            value = None if n % 2 else {"date": iso_date(day), "date_time": None}
            display = None if value is None else value["date"]
        elif flavour == "date_time":
            moment = _RANGE_START_MS + (n % 600) * _DAY_MS + 14 * _HOUR_MS + 1_800_000
            value = None if n % 3 == 0 else {"date": iso_date(moment), "date_time": iso_ms(moment)}
            display = None if value is None else value["date_time"]
        else:  # people
            users = self.users_by_workspace.get(self._cf_workspace[definition["gid"]], [])
            value = [ref(users[n % len(users)])] if users and n % 2 else []
            display = ", ".join(u["name"] for u in value) or None
        out = {k: definition[k] for k in keys if k in definition}
        value_key = _VALUE_KEY[definition["type"]][0]
        # CustomFieldCompact (on projects) documents no people_value: there only the
        # display_value tells who it is.
        if keys is _TASK_VALUE_KEYS or value_key != "people_value":
            out[value_key] = value
        out["display_value"] = display
        return out

    def _cf_values(
        self, project: dict[str, Any] | None, n: int, keys: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        """Values of the custom fields a project has enabled, for the ``n``-th object."""
        if project is None:
            return []
        settings = self.custom_field_settings_by_project.get(project["gid"], [])
        return [
            self._cf_value(s["custom_field"], self._cf_flavour[s["custom_field"]["gid"]], n, keys)
            for s in settings
        ]

    def _new_project(self, index: int, ws: dict[str, Any], position: int, archived: bool) -> None:
        ws_gid = ws["gid"]
        gid = self.gid()
        users = self.users_by_workspace[ws_gid]
        owner = users[index % len(users)] if users and index % 5 else None
        teams = self.teams_by_workspace[ws_gid]
        created = self._between(_RANGE_START_MS, _RANGE_START_MS + 180 * _DAY_MS)
        modified = self._between(created, _RANGE_END_MS)
        start = created + (index % 30) * _DAY_MS
        due = iso_date(start + (30 + index % 300) * _DAY_MS) if index % 2 == 1 else None
        notes = "" if index % 4 == 0 else f"Everything we need for project {index}."
        project: dict[str, Any] = {
            "gid": gid,
            "resource_type": "project",
            "name": f"Project {index}",
            "archived": archived,
            "color": {2: None, 3: "none"}.get(index % 4, _COLORS[index % len(_COLORS)]),
            "icon": None if index % 3 == 0 else _ICONS[index % len(_ICONS)],
            "created_at": iso_ms(created),
            "current_status": None,  # deprecated; Asana sends null
            "current_status_update": None,  # set by _new_status_updates
            "custom_field_settings": [],
            "default_view": ("list", "board", "calendar", "timeline")[index % 4],
            "due_date": due,
            "due_on": due,
            "html_notes": _body(notes),
            "members": [ref(u) for u in users[:3]],
            "modified_at": iso_ms(modified),
            "notes": notes,
            "public": index % 2 == 0,
            "privacy_setting": ("public_to_workspace", "private_to_team", "private")[index % 3],
            "start_on": iso_date(start) if due and index % 3 else None,
            "default_access_level": ("admin", "editor", "commenter", "viewer")[index % 4],
            "minimum_access_level_for_customization": "editor",
            "minimum_access_level_for_sharing": ("admin", "editor")[index % 2],
            "custom_fields": [],
            # Archived projects were completed first (at their last modification).
            "completed": archived,
            "completed_at": iso_ms(modified) if archived else None,
            "completed_by": ref(owner) if archived else None,
            "followers": [ref(owner)] if owner else [],
            "owner": ref(owner),
            # Teams exist in organizations only; plain workspaces have none.
            "team": ref(teams[index % len(teams)]) if teams else None,
            "permalink_url": f"https://app.asana.com/1/{ws_gid}/project/{gid}",
            "project_brief": (
                {"gid": self.gid(), "resource_type": "project_brief"} if index % 4 == 1 else None
            ),
            "created_from_template": (
                {"gid": self.gid(), "resource_type": "project_template", "name": "Launch plan"}
                if index % 3 == 1
                else None
            ),
            "workspace": ref(ws),
        }
        self.projects[gid] = project
        self.projects_by_workspace[ws_gid].append(project)
        self.tasks_by_project[gid] = []
        self._new_sections(project, extra=position % 2 == 1)
        self._new_project_memberships(project, owner)
        # Every fourth project uses no custom fields (its tasks have ``custom_fields: []``).
        if index % 4:
            self._new_custom_field_settings(project)
        project["custom_fields"] = self._cf_values(project, index, _COMPACT_VALUE_KEYS)

    def _new_sections(self, project: dict[str, Any], extra: bool) -> None:
        """Two sections (open work, done work), plus a third, empty one if ``extra``."""
        created = parse_iso_ms(project["created_at"])
        listing = self.sections_by_project.setdefault(project["gid"], [])
        for name in ("To do", "Done", "Icebox")[: 3 if extra else 2]:
            section = {
                "gid": self.gid(),
                "resource_type": "section",
                "name": name,
                "created_at": iso_ms(self._between(created, created + 5 * _DAY_MS)),
                "project": ref(project),
                "projects": [ref(project)],
            }
            self.sections[section["gid"]] = section
            listing.append(section)

    def _new_project_memberships(self, project: dict[str, Any], owner: dict | None) -> None:
        listing = self.project_memberships_by_project.setdefault(project["gid"], [])
        for n, member in enumerate(project["members"]):
            user = self.users[member["gid"]]
            level = "admin" if owner is user else ("editor", "commenter", "viewer")[n % 3]
            membership = {
                "gid": self.gid(),
                "resource_type": "project_membership",
                "parent": ref(project),
                "member": ref(user),
                "access_level": level,
                "user": ref(user),
                "project": ref(project),
                "write_access": "full_write" if level in ("admin", "editor") else "comment_only",
            }
            self.project_memberships[membership["gid"]] = membership
            listing.append(membership)

    def _new_custom_field_settings(self, project: dict[str, Any]) -> None:
        listing = self.custom_field_settings_by_project.setdefault(project["gid"], [])
        definitions = self.custom_fields_by_workspace[project["workspace"]["gid"]]
        for n, definition in enumerate(definitions):
            setting = {
                "gid": self.gid(),
                "resource_type": "custom_field_setting",
                "project": ref(project),
                "is_important": n == 0,
                "parent": ref(project),
                "custom_field": definition,
            }
            self.custom_field_settings[setting["gid"]] = setting
            listing.append(setting)
        project["custom_field_settings"] = list(listing)

    def _membership(self, project: dict[str, Any], completed: bool) -> dict[str, Any]:
        sections = self.sections_by_project[project["gid"]]
        return {"project": ref(project), "section": ref(sections[1 if completed else 0])}

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
        self._task_counter += 1
        n = self._task_counter
        home = project if project is not None else parent
        assert home is not None
        ws_gid = home["workspace"]["gid"]
        users = self.users_by_workspace.get(ws_gid, [])
        gid = self.gid()
        creator = users[n % len(users)] if users else None
        assignee = None if n % 5 == 0 or not users else users[(n * 7) % len(users)]
        subtypes = ("default_task",) * 6 + ("milestone", "approval")
        # Some tasks have no dates; some a due date only; some a due time (due_at, whose
        # date is due_on too); start dates only come with due dates, start times with times.
        due = created + (2 + n % 60) * _DAY_MS + (n % 24) * _HOUR_MS
        start = created + (n % 2) * _DAY_MS
        has_due = n % 4 != 0
        has_due_at = has_due and n % 3 == 0
        has_start = has_due and n % 2 == 1
        # Subtasks carry no tags here: ``GET /tasks?tag=`` lists top-level tasks only.
        tags = self.tags_by_workspace.get(ws_gid, []) if parent is None else []
        likers = users[: n % 3]
        notes = "" if n % 6 == 0 else f"Notes for task {n}: see the brief."
        people = {u["gid"]: u for u in (creator, assignee) if u}  # without duplicates
        name = _TASK_NAMES[n % len(_TASK_NAMES)]
        where = f"project/{project['gid']}/" if project is not None else ""
        task: dict[str, Any] = {
            "gid": gid,
            "resource_type": "task",
            "name": f"{name} ({n})" if parent is None else f"Subtask: {name} ({n})",
            "resource_subtype": subtypes[n % len(subtypes)],
            "created_by": {"gid": creator["gid"], "resource_type": "user"} if creator else None,
            "assignee_status": ("today", "upcoming", "later", "new", "inbox")[n % 5],
            "assigned_by": ref(creator) if assignee else None,
            "completed": completed,
            "completed_at": iso_ms(self._between(created, modified)) if completed else None,
            "completed_by": ref(assignee or creator) if completed else None,
            "created_at": iso_ms(created),
            "dependencies": [],
            "dependents": [],
            "due_at": iso_ms(due) if has_due_at else None,
            "due_on": iso_date(due) if has_due else None,
            "external": None,  # only set by the app that owns the task (OAuth)
            "html_notes": _body(notes),
            "hearted": False,
            "hearts": [_like(self.gid(), u) for u in likers],
            "is_rendered_as_separator": False,
            "liked": False,
            "likes": [_like(self.gid(), u) for u in likers],
            "memberships": [self._membership(project, completed)] if project else [],
            "modified_at": iso_ms(modified),
            "notes": notes,
            "num_hearts": len(likers),
            "num_likes": len(likers),
            "num_subtasks": 0,
            "start_at": iso_ms(start) if has_start and has_due_at else None,
            "start_on": iso_date(start) if has_start else None,
            "actual_time_minutes": None,  # set from time tracking entries
            "assignee": ref(assignee),
            "assignee_section": ref(self._my_tasks_section(assignee["gid"])) if assignee else None,
            "custom_fields": self._cf_values(project, n, _TASK_VALUE_KEYS),
            "custom_type": None,
            "custom_type_status_option": None,
            "followers": [] if n % 7 == 0 else [ref(u) for u in people.values()],
            "parent": ref(parent),
            "projects": [ref(project)] if project else [],
            "tags": [ref(tags[(n + k) % len(tags)]) for k in range(n % 3)] if tags else [],
            "workspace": ref(self.workspaces.get(ws_gid)),
            "permalink_url": f"https://app.asana.com/1/{ws_gid}/{where}task/{gid}",
        }
        if task["resource_subtype"] == "approval":
            # Conditional: only approval tasks have an approval status.
            task["approval_status"] = "approved" if completed else "pending"
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

    def _depend(self, task: dict[str, Any], blocker: dict[str, Any]) -> None:
        """Make ``task`` depend on ``blocker`` (and list it among the blocker's dependents)."""
        if blocker is not task:
            task["dependencies"] = [{"gid": blocker["gid"], "resource_type": "task"}]
            blocker["dependents"].append({"gid": task["gid"], "resource_type": "task"})

    def _add_to_project(self, task: dict[str, Any], project: dict[str, Any]) -> None:
        """Multi-home ``task``: it also belongs to ``project`` (and is listed there)."""
        task["projects"].append(ref(project))
        task["memberships"].append(self._membership(project, task["completed"]))
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
        """A story on ``task``: a comment or a system story of ``subtype``.

        Fields that only some subtypes have (the spec's "Conditional" fields) are present
        on stories of those subtypes only.
        """
        self._story_counter += 1
        n = self._story_counter
        ws_gid = task["workspace"]["gid"]
        project = self.projects.get(task["projects"][0]["gid"]) if task["projects"] else None
        is_comment = subtype == "comment_added"
        extra: dict[str, Any] = {}
        if is_comment:
            likers = self.users_by_workspace.get(ws_gid, [])[: (n // 2) % 3]
            text = text or f"Comment {n}: looks good to me."
            extra = {
                "html_text": _body(text),
                "is_pinned": n % 11 == 0,
                "sticker_name": _STICKER if n % 7 == 0 else None,
                "is_editable": True,
                "is_edited": n % 5 == 0,
                "hearted": False,
                "hearts": [_like(self.gid(), u) for u in likers],
                "num_hearts": len(likers),
                "liked": False,
                "likes": [_like(self.gid(), u) for u in likers],
                "num_likes": len(likers),
                "reaction_summary": [],
                "previews": [],
            }
        else:
            text, extra = self._system_story(task, subtype, project, n, text)
            if n % 5 == 0 and subtype != "added_to_project":
                author = None  # done by a rule or integration: no user behind it
        story = {
            "gid": self.gid(),
            "resource_type": "story",
            "created_at": iso_ms(created),
            "created_by": ref(author),
            "resource_subtype": subtype,
            "text": text,
            "type": "comment" if is_comment else "system",
            "source": "web" if is_comment or n % 3 else "api",
            "target": ref(task),
            **extra,
        }
        table = self.stories if task["parent"] is None else self.subtask_stories
        table[story["gid"]] = story
        self.stories_by_task[task["gid"]].append(story)
        return story

    def _system_story(
        self,
        task: dict[str, Any],
        subtype: str,
        project: dict[str, Any] | None,
        n: int,
        text: str | None,
    ) -> tuple[str, dict[str, Any]]:
        """Text and subtype-specific fields of a system story (StoryResponse)."""
        ws_gid = task["workspace"]["gid"]
        users = self.users_by_workspace.get(ws_gid, [])
        user = users[n % len(users)] if users else None
        who = user["name"] if user else "someone"
        fields = {f["name"]: f for f in self.custom_fields_by_workspace.get(ws_gid, [])}
        change = _CF_CHANGES.get(subtype)
        extra: dict[str, Any] = {}
        if subtype == "added_to_project":
            extra = {"project": ref(project)}
            default = f"added to {project['name']}" if project else "added to a project"
        elif subtype == "added_to_task":
            parent = self.get_task(task["parent"]["gid"])
            extra = {"task": ref(parent)}
            default = f"added to {parent['name']}"
        elif subtype == "assigned":
            extra = {"assignee": ref(user)}
            default = f"assigned to {user['name'] if user else 'nobody'}"
        elif subtype == "name_changed":
            extra = {"old_name": f"Draft of {task['name']}", "new_name": task["name"]}
            default = f"changed the name to {task['name']}"
        elif subtype == "due_date_changed":
            # The old due date was never set here: old_dates' members are null.
            extra = {
                "old_dates": {"start_on": None, "due_at": None, "due_on": None},
                "new_dates": {k: task[k] for k in ("start_on", "due_at", "due_on")},
            }
            default = f"changed the due date to {task['due_on']}"
        elif subtype == "section_changed" and project is not None:
            old, new = self.sections_by_project[project["gid"]][:2]
            extra = {"old_section": ref(old), "new_section": ref(new), "project": ref(project)}
            default = f"moved this task from {old['name']} to {new['name']}"
        elif subtype == "followers_added":
            extra = {"follower": ref(user)}
            default = f"added {who} as a collaborator"
        elif subtype == "added_to_tag" and self.tags_by_workspace.get(ws_gid):
            tag = self.tags_by_workspace[ws_gid][n % 3]
            extra = {"tag": ref(tag)}
            default = f"added to {tag['name']}"
        elif subtype == "enum_custom_field_changed" and "Priority" in fields:
            old, new = fields["Priority"]["enum_options"][:2]
            extra = {"old_enum_value": old, "new_enum_value": new}
            extra["custom_field"] = self._cf_ref(fields["Priority"])
            default = f"changed Priority from {old['name']} to {new['name']}"
        elif change is not None and change[0] in fields:
            name, key, old, new, what = change
            extra = {"custom_field": self._cf_ref(fields[name]), f"old_{key}": old}
            extra[f"new_{key}"] = new
            default = f"changed {name} {what}".rstrip()
        elif subtype == "multi_enum_custom_field_changed" and "Platforms" in fields:
            extra = {
                "custom_field": self._cf_ref(fields["Platforms"]),
                "old_multi_enum_values": [],
                "new_multi_enum_values": fields["Platforms"]["enum_options"][:2],
            }
            default = "changed Platforms to Web, iOS"
        elif subtype == "people_custom_field_changed" and "Reviewer" in fields:
            extra = {
                "custom_field": self._cf_ref(fields["Reviewer"]),
                "old_people_value": [],
                "new_people_value": [ref(user)] if user else [],
            }
            default = "changed Reviewer"
        elif subtype in ("marked_duplicate", "duplicate_merged"):
            other = self.tasks_by_project[project["gid"]][0] if project else task
            key = "duplicate_of" if subtype == "marked_duplicate" else "duplicated_from"
            extra = {key: ref(other)}
            default = f"marked this a duplicate of {other['name']}"
        elif subtype == "resource_subtype_changed":
            extra = {"old_resource_subtype": "default_task"}
            extra["new_resource_subtype"] = task["resource_subtype"]
            default = "changed this task's type"
        elif subtype == "approval_status_changed":
            extra = {"old_approval_status": "pending", "new_approval_status": "approved"}
            default = "approved this task"
        elif subtype == "dependency_added" and task["dependencies"]:
            blocker = self.get_task(task["dependencies"][0]["gid"])
            extra = {"dependency": ref(blocker)}
            default = f"marked this task as dependent on {blocker['name']}"
        elif subtype == "comment_liked" and self.stories_by_task[task["gid"]]:
            first = self.stories_by_task[task["gid"]][0]
            extra = {"story": {k: first[k] for k in COMPACT_FIELDS["story"]}}
            default = "liked your comment"
        else:
            default = subtype.replace("_", " ")
        return text or default, extra

    @staticmethod
    def _cf_ref(field: dict[str, Any]) -> dict[str, Any]:
        return {k: field[k] for k in COMPACT_FIELDS["custom_field"] if k in field}

    def _new_stories(
        self,
        task: dict[str, Any],
        created: int,
        modified: int,
        count: int,
        first: str = "added_to_project",
    ) -> None:
        """``count`` stories in chronological order: ``first``, then comments alternating
        with system stories of every subtype (a dataset-wide rotation)."""
        if count <= 0:
            return
        users = self.users_by_workspace.get(task["workspace"]["gid"], [])
        creator = self.users.get(task["created_by"]["gid"]) if task["created_by"] else None
        stamps = [created, *sorted(self._between(created, modified) for _ in range(count - 1))]
        for i, stamp in enumerate(stamps):
            author, subtype = creator, first
            if i:
                self._rotation += 1
                if self._rotation % 2:
                    subtype = "comment_added"
                    author = users[self._rotation % len(users)] if users else None
                else:
                    position = (self._rotation // 2) % len(_SYSTEM_STORY_SUBTYPES)
                    subtype = _SYSTEM_STORY_SUBTYPES[position]
            self._new_story(task, stamp, subtype, author=author)

    def _new_subtasks(self, parent: dict[str, Any], count: int, stories: bool) -> None:
        """``count`` subtasks of ``parent``, each with one or two stories if ``stories``."""
        for _ in range(count):
            parent_created = parse_iso_ms(parent["created_at"])
            created = self._between(parent_created, parent_created + 20 * _DAY_MS)
            modified = self._between(created, _RANGE_END_MS)
            completed = self._task_counter % 4 == 0
            subtask = self._new_task(None, created, modified, completed=completed, parent=parent)
            n_stories = 1 + self._task_counter % 2 if stories else 0
            self._new_stories(subtask, created, modified, n_stories, first="added_to_task")

    def _during(self, task: dict[str, Any]) -> int:
        """A moment between the task's creation and its last modification."""
        return self._between(parse_iso_ms(task["created_at"]), parse_iso_ms(task["modified_at"]))

    def _new_attachments(self, task: dict[str, Any], count: int) -> None:
        listing = self.attachments_by_parent.setdefault(task["gid"], [])
        for _ in range(count):
            gid = self.gid()
            n = len(self.attachments) + 1
            host = ("asana", "dropbox", "gdrive", "asana", "box", "onedrive", "external")[n % 7]
            name = f"attachment-{n}.{('png', 'pdf', 'txt')[n % 3]}"
            on_asana = host == "asana"
            attachment = {
                "gid": gid,
                "resource_type": "attachment",
                "name": name,
                "resource_subtype": host,
                "created_at": iso_ms(self._during(task)),
                # Only files stored in Asana can be downloaded; links to other hosts can't.
                "download_url": (
                    f"https://s3.amazonaws.com/assets/{gid}/{name}" if on_asana else None
                ),
                "permanent_url": f"https://app.asana.com/app/asana/-/get_asset?asset_id={gid}",
                "host": host,
                "parent": ref(task),
                "view_url": None if host == "external" else f"https://files.example.com/{gid}",
                "connected_to_app": False,
            }
            if on_asana:
                attachment["size"] = 1024 * (1 + n % 500)  # conditional: Asana files only
            self.attachments[gid] = attachment
            listing.append(attachment)

    def _new_time_tracking_entries(self, task: dict[str, Any], count: int) -> None:
        users = self.users_by_workspace.get(task["workspace"]["gid"], [])
        listing = self.time_tracking_entries_by_task.setdefault(task["gid"], [])
        project = self.projects.get(task["projects"][0]["gid"]) if task["projects"] else None
        for _ in range(count):
            n = len(self.time_tracking_entries) + 1
            created = self._during(task)
            category = {"resource_type": "time_tracking_category", "name": "Development"}
            categories = [{"gid": self.gid(), **category, "color": "blue"}] if n % 2 else []
            entry = {
                "gid": self.gid(),
                "resource_type": "time_tracking_entry",
                "duration_minutes": 15 * (1 + n % 16),
                "entered_on": iso_date(created),
                "attributable_to": ref(project),
                "created_by": ref(users[n % len(users)] if users else None),
                "categories": categories,
                "task": ref(task),
                "created_at": iso_ms(created),
                "approval_status": ("DRAFT", "SUBMITTED", "APPROVED", "REJECTED")[n % 4],
                "billable_status": ("billable", "nonBillable", "notApplicable")[n % 3],
                "description": "" if n % 3 == 0 else f"Work on {task['name']}",
            }
            self.time_tracking_entries[entry["gid"]] = entry
            listing.append(entry)
        # Like Asana: a task's actual time is the sum of its time entries.
        task["actual_time_minutes"] = sum(e["duration_minutes"] for e in listing)

    def _new_status_updates(self, project: dict[str, Any], count: int) -> None:
        author = self.users.get((project["owner"] or {}).get("gid") or self.me_gid)
        listing = self.status_updates_by_parent.setdefault(project["gid"], [])
        created_lo = parse_iso_ms(project["created_at"])
        modified_hi = parse_iso_ms(project["modified_at"])
        for created in sorted(self._between(created_lo, modified_hi) for _ in range(count)):
            n = len(self.status_updates) + 1
            text = f"{project['name']} is moving along." if n % 4 else ""
            update = {
                "gid": self.gid(),
                "resource_type": "status_update",
                "title": f"Status update {n}",
                "resource_subtype": "project_status_update",
                "text": text,
                "html_text": _body(text),
                "status_type": ("on_track", "at_risk", "off_track", "on_hold", "complete")[n % 5],
                "author": ref(author),
                "created_at": iso_ms(created),
                "created_by": ref(author),
                "hearted": False,
                "hearts": [],
                "liked": False,
                "likes": [],
                "reaction_summary": [],
                "modified_at": iso_ms(self._between(created, modified_hi)),
                "num_hearts": 0,
                "num_likes": 0,
                "parent": ref(project),
            }
            self.status_updates[update["gid"]] = update
            listing.append(update)
        if listing:
            project["current_status_update"] = ref(listing[-1])

    def _new_portfolios(self, ws: dict[str, Any]) -> None:
        """Two portfolios owned by ``me``: the first holds two projects, the second one."""
        me = self._me()
        projects = self.projects_by_workspace[ws["gid"]]
        for n, chosen in enumerate((projects[:2], projects[2:3] or projects[-1:])):
            gid = self.gid()
            created = self._between(_RANGE_START_MS, _RANGE_END_MS)
            portfolio = {
                "gid": gid,
                "resource_type": "portfolio",
                "name": f"Portfolio {len(self.portfolios) + 1}",
                "archived": False,
                "color": ("light-green", "none")[n],
                "start_on": iso_date(created) if n == 0 else None,
                "due_on": iso_date(created + 90 * _DAY_MS) if n == 0 else None,
                "default_access_level": ("editor", "viewer")[n],
                "created_at": iso_ms(created),
                "created_by": ref(me),
                "custom_field_settings": [],
                "current_status_update": None,
                "custom_fields": [],
                "members": [ref(me)] if me else [],
                "owner": ref(me),
                "workspace": ref(ws),
                "permalink_url": f"https://app.asana.com/1/{ws['gid']}/portfolio/{gid}",
                "public": n == 1,
                "privacy_setting": ("members_only", "public_to_domain")[n],
                "project_templates": [],
            }
            self.portfolios[gid] = portfolio
            self.portfolios_by_workspace[ws["gid"]].append(portfolio)
            self.portfolio_items[gid] = sorted(chosen, key=lambda p: p["gid"])

    def _new_goals(self, ws: dict[str, Any]) -> None:
        """A workspace goal owned by ``me`` with a metric and a time period, and a team
        goal (or an ownerless one) without them."""
        me = self._me()
        users = self.users_by_workspace[ws["gid"]]
        teams = self.teams_by_workspace[ws["gid"]]
        for n in range(2):
            number = len(self.goals) + 1
            start = self._between(_RANGE_START_MS, _RANGE_END_MS - 120 * _DAY_MS)
            end = iso_date(start + 90 * _DAY_MS)
            notes = f"Why goal {number} matters." if n == 0 else ""
            team = teams[0] if teams and n == 1 else None
            target = float(10 * (number + 1))
            goal: dict[str, Any] = {
                "gid": self.gid(),
                "resource_type": "goal",
                "name": f"Grow web traffic by {10 * number}%",
                "html_notes": _body(notes),
                "notes": notes,
                "due_on": end if n == 0 else None,
                "start_on": iso_date(start) if n == 0 else None,
                "is_workspace_level": team is None,
                "liked": False,
                "likes": [],
                "num_likes": 0,
                "team": ref(team),
                "workspace": ref(ws),
                "followers": [ref(u) for u in users[:2]],
                "time_period": None,
                # A goal without a metric (progress not measured) has ``metric: null``.
                "metric": None,
                "owner": ref(me) if n == 0 else None,
                "current_status_update": None,
                "status": "green" if n == 0 else None,  # no status set yet
                "privacy_setting": "public_to_workspace",
                "default_access_level": "editor",
                "custom_fields": [],
                "custom_field_settings": [],
            }
            if n == 0:
                goal["time_period"] = {
                    "gid": self.gid(),
                    "resource_type": "time_period",
                    "end_on": end,
                    "start_on": iso_date(start),
                    "period": "Q1",
                    "display_name": f"Q1 FY{time.gmtime(start / 1000).tm_year % 100}",
                }
                goal["metric"] = {
                    "gid": self.gid(),
                    "resource_type": "goal_metric",
                    "resource_subtype": "number",
                    "precision": 0,
                    "unit": "none",
                    "currency_code": None,
                    "initial_number_value": 0.0,
                    "target_number_value": target,
                    "current_number_value": target / 2,
                    "current_display_value": str(int(target / 2)),
                    "progress_source": "manual",
                    "is_custom_weight": False,
                }
            self.goals[goal["gid"]] = goal
            self.goals_by_workspace[ws["gid"]].append(goal)

    # ------------------------------------------------------------------ events
    def _emit(
        self,
        action: str,
        resource: dict[str, Any],
        subscribers: set[str],
        parent: dict[str, Any] | None = None,
        change: dict[str, Any] | None = None,
        at_ms: int | None = None,
    ) -> None:
        """Record an event (Asana's ``EventResponse``) for ``GET /events`` to serve.

        ``change`` (only with ``action`` = ``changed``, as the spec says): which field of
        the resource changed and how (``field``, ``action`` and the value added, removed
        or set). ``at_ms``: when it happened (default now), for an edit that also wrote a
        story at that instant.
        """
        now = self._now_ms() if at_ms is None else at_ms
        named = {k: resource[k] for k in ("gid", "resource_type", "name") if k in resource}
        event = {
            "user": ref(self.users.get(self.me_gid)),
            "resource": named,
            "type": resource["resource_type"],  # deprecated, still sent (the spec)
            "action": action,
            "parent": (
                {k: parent[k] for k in ("gid", "resource_type", "name") if k in parent}
                if parent is not None
                else None
            ),
            "created_at": iso_ms(now),
        }
        if change is not None:
            event["change"] = change
        # The workspace hears whatever its projects and tasks hear.
        workspaces = {
            (obj.get("workspace") or {}).get("gid")
            for gid in subscribers
            for obj in (self.projects.get(gid), self.tasks.get(gid), self.subtasks.get(gid))
            if obj is not None
        }
        workspaces |= {(resource.get("workspace") or {}).get("gid")}
        subscribers = set(subscribers) | {w for w in workspaces if w}
        self.events.append((len(self.events) + 1, now, frozenset(subscribers), event))

    def _task_subscribers(self, task: dict[str, Any]) -> set[str]:
        """Who hears about ``task``: itself and the projects it is in (not a subtask's)."""
        return {task["gid"], *(p["gid"] for p in task.get("projects") or [])}

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
            story = self._new_story(task, self._now_ms(), "comment_added", author=author, text=text)
            task["modified_at"] = story["created_at"]
            self._emit("added", story, self._task_subscribers(task), parent=task)
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
            self._emit("deleted", task, self._task_subscribers(task))
            if gid in self.tasks:
                del self.tasks[gid]
                for membership in task["projects"]:
                    listing = self.tasks_by_project[membership["gid"]]
                    listing[:] = [t for t in listing if t is not task]
            else:
                del self.subtasks[gid]
                siblings = self.subtasks_by_parent.get(task["parent"]["gid"], [])
                siblings[:] = [t for t in siblings if t is not task]
                parent = self.tasks.get(task["parent"]["gid"]) or self.subtasks.get(
                    task["parent"]["gid"]
                )
                if parent is not None:
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
            now = self._now_ms()
            project = self.projects[project_gid]
            task = self._new_task(project, now, now, completed=False)
            task.update(overrides)
            self._emit("added", task, self._task_subscribers(task), parent=project)
            self.version += 1
            return task

    def add_task_without_project(
        self, workspace_gid: str, assignee_gid: str | None = None, **overrides: Any
    ) -> dict[str, Any]:
        """Create a task in no project (a person's My Tasks), created and modified now.

        Asana lists such a task in no project listing; ``GET /tasks?assignee=&workspace=``
        (if assigned) and the workspace's task search find it. ``overrides`` are applied
        last. Returns the task.

        Raises:
            KeyError: if there is no workspace (with a project) ``workspace_gid``.
        """
        with self.lock:
            now = self._now_ms()
            # Built like any task (fields, custom field values), then taken out of it.
            project = self.projects_by_workspace[workspace_gid][0]
            task = self._new_task(project, now, now, completed=False)
            listing = self.tasks_by_project[project["gid"]]
            listing[:] = [t for t in listing if t is not task]
            task["projects"] = []
            task["memberships"] = []
            task["permalink_url"] = f"https://app.asana.com/1/{workspace_gid}/task/{task['gid']}"
            assignee = self.users[assignee_gid] if assignee_gid else None
            task["assignee"] = ref(assignee)
            task["assignee_section"] = (
                ref(self._my_tasks_section(assignee["gid"])) if assignee else None
            )
            task.update(overrides)
            self.version += 1
            return task

    def delete_story(self, gid: str) -> dict[str, Any]:
        """Delete a story (a comment); its task's ``modified_at`` stays. Returns the story.

        Raises:
            KeyError: if there is no story ``gid``.
        """
        with self.lock:
            story = self.stories.pop(gid, None) or self.subtask_stories.pop(gid)
            task = self.get_task(story["target"]["gid"])
            listing = self.stories_by_task.get(task["gid"], [])
            listing[:] = [s for s in listing if s is not story]
            self._emit("deleted", story, self._task_subscribers(task))
            self.version += 1
            return story

    def delete_section(self, gid: str) -> dict[str, Any]:
        """Delete an empty section of a project (Asana refuses to delete one with tasks).

        Raises:
            KeyError: if there is no project section ``gid``.
            ValueError: if tasks are still in it.
        """
        with self.lock:
            section = self.sections[gid]
            project_gid = section["project"]["gid"]
            if any(
                (m.get("section") or {}).get("gid") == gid
                for task in self.tasks_by_project[project_gid]
                for m in task["memberships"]
            ):
                raise ValueError(f"section {gid} is not empty")
            del self.sections[gid]
            listing = self.sections_by_project[project_gid]
            listing[:] = [s for s in listing if s is not section]
            self._emit("deleted", section, {project_gid})
            self.version += 1
            return section

    def add_section(self, project_gid: str, name: str = "New section") -> dict[str, Any]:
        """Add a section to a project, created now; returns it.

        The project's record does not change (Asana's docs: its ``modified_at`` does not
        reflect changes of associations); its events say ``added`` with the project as
        ``parent``.

        Raises:
            KeyError: if there is no project ``project_gid``.
        """
        with self.lock:
            project = self.projects[project_gid]
            section = {
                "gid": self.gid(),
                "resource_type": "section",
                "name": name,
                "created_at": iso_ms(self._now_ms()),
                "project": ref(project),
                "projects": [ref(project)],
            }
            self.sections[section["gid"]] = section
            self.sections_by_project[project_gid].append(section)
            self._emit("added", section, {project_gid}, parent=project)
            self.version += 1
            return section

    def rename_section(self, gid: str, name: str) -> dict[str, Any]:
        """Rename a section; its project's record stays, its events say ``changed``.

        Raises:
            KeyError: if there is no project section ``gid``.
        """
        with self.lock:
            section = self.sections[gid]
            section["name"] = name
            change = {"field": "name", "action": "changed", "new_value": name}
            self._emit("changed", section, {section["project"]["gid"]}, change=change)
            self.version += 1
            return section

    def add_status_update(self, project_gid: str, title: str = "Weekly update") -> dict[str, Any]:
        """Post a status update on a project now: it becomes the project's
        ``current_status_update`` (the spec: "The latest status update posted to this
        project"). Returns it.

        Raises:
            KeyError: if there is no project ``project_gid``.
        """
        with self.lock:
            project = self.projects[project_gid]
            author = self.users[self.me_gid]
            now = iso_ms(self._now_ms())
            update = {
                "gid": self.gid(),
                "resource_type": "status_update",
                "title": title,
                "resource_subtype": "project_status_update",
                "text": "",
                "html_text": _body(""),
                "status_type": "on_track",
                "author": ref(author),
                "created_at": now,
                "created_by": ref(author),
                "hearted": False,
                "hearts": [],
                "liked": False,
                "likes": [],
                "reaction_summary": [],
                "modified_at": now,
                "num_hearts": 0,
                "num_likes": 0,
                "parent": ref(project),
            }
            self.status_updates[update["gid"]] = update
            self.status_updates_by_parent.setdefault(project_gid, []).append(update)
            project["current_status_update"] = ref(update)
            self.version += 1
            return update

    def move_task(
        self,
        gid: str,
        *,
        remove_from: str | None = None,
        add_to: str | None = None,
        bump_modified_at: bool = False,
    ) -> dict[str, Any]:
        """Remove a task from a project and/or add it to another (first section there).

        Asana's docs disagree on whether this changes the task's ``modified_at``;
        ``bump_modified_at`` chooses. Events: ``removed`` / ``added`` with the project as
        ``parent``, heard by the task and by that project. A task lists the custom
        fields of the projects it is in: leaving a project drops the values of the
        fields none of its other projects has (a project added brings none here).

        Raises:
            KeyError: if there is no task ``gid`` or project.
            ValueError: if the task is not in ``remove_from`` or already in ``add_to``.
        """
        with self.lock:
            task = self.tasks[gid]
            in_projects = [p["gid"] for p in task["projects"]]
            if remove_from is not None:
                if remove_from not in in_projects:
                    raise ValueError(f"task {gid} is not in project {remove_from}")
                project = self.projects[remove_from]
                task["projects"] = [p for p in task["projects"] if p["gid"] != remove_from]
                task["memberships"] = [
                    m for m in task["memberships"] if m["project"]["gid"] != remove_from
                ]
                listing = self.tasks_by_project[remove_from]
                listing[:] = [t for t in listing if t is not task]
                self._drop_fields_of_projects_left(task)
                self._emit("removed", task, {gid, remove_from}, parent=project)
            if add_to is not None:
                if add_to in in_projects and add_to != remove_from:
                    raise ValueError(f"task {gid} is already in project {add_to}")
                project = self.projects[add_to]
                self._add_to_project(task, project)
                self._emit("added", task, {gid, add_to}, parent=project)
            if bump_modified_at:
                task["modified_at"] = iso_ms(self._now_ms())
            self.version += 1
            return task

    def _drop_fields_of_projects_left(self, task: dict[str, Any]) -> None:
        """Keep only the values of fields enabled on a project ``task`` is still in."""
        enabled = {
            setting["custom_field"]["gid"]
            for project in task["projects"]
            for setting in self.custom_field_settings_by_project.get(project["gid"], [])
        }
        task["custom_fields"] = [cf for cf in task["custom_fields"] if cf["gid"] in enabled]

    def remove_custom_field_from_project(self, project_gid: str, field_gid: str) -> None:
        """Take a custom field off a project (its setting goes).

        The project and its tasks no longer list the field (a task keeps it while another
        of its projects has it); nobody's ``modified_at`` moves (Asana's docs: it does not
        reflect changes of associations).

        Raises:
            KeyError: if the project has no such field.
        """
        with self.lock:
            settings = self.custom_field_settings_by_project[project_gid]
            kept = [s for s in settings if s["custom_field"]["gid"] != field_gid]
            if len(kept) == len(settings):
                raise KeyError(f"project {project_gid} has no custom field {field_gid}")
            for setting in settings:
                if setting not in kept:
                    self.custom_field_settings.pop(setting["gid"], None)
            settings[:] = kept
            project = self.projects[project_gid]
            project["custom_field_settings"] = list(kept)
            project["custom_fields"] = [
                cf for cf in project["custom_fields"] if cf["gid"] != field_gid
            ]
            for task in self.tasks_by_project[project_gid]:
                self._drop_fields_of_projects_left(task)
            self.version += 1

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

    # --- Edits that leave a trace in a task's stories (issue #16: task_history) --------

    def remove_from_task(self, task_gid: str, field: str, gid: str) -> dict[str, Any] | None:
        """Take ``gid`` out of a task's ``tags``, ``dependencies`` or ``followers``.

        As in Asana, the task's ``modified_at`` moves, and removing a tag or a dependency
        adds a system story naming it (``removed_from_tag`` with ``tag``,
        ``dependency_removed`` with ``dependency``; the spec documents those fields, not
        the subtype names). Removing a follower adds no story. Every removal is an event
        on the task, heard by the task and its projects (``EventResponse``: ``action``
        ``changed``, ``change`` = ``{field, action: removed, removed_value}`` with the
        compact object; the field is named as the task's property). Returns the story,
        if any.

        Raises:
            KeyError: if there is no such task, or ``gid`` is not in its ``field``.
        """
        with self.lock:
            task = self.get_task(task_gid)
            removed = next((item for item in task[field] if item["gid"] == gid), None)
            if removed is None:
                raise KeyError(f"{gid} is not in {field} of task {task_gid}")
            task[field] = [item for item in task[field] if item["gid"] != gid]
            if field == "dependencies":
                blocker = self.get_task(gid)
                blocker["dependents"] = [d for d in blocker["dependents"] if d["gid"] != task_gid]
            now = self._now_ms()
            story = None
            kinds = {
                "tags": ("removed_from_tag", "tag"),
                "dependencies": ("dependency_removed", "dependency"),
            }
            if field in kinds:
                subtype, key = kinds[field]
                other = self.tags[gid] if field == "tags" else self.get_task(gid)
                story = self._new_story(
                    task,
                    now,
                    subtype,
                    author=self.users.get(self.me_gid),
                    text=f"removed {other['name']}",
                )
                story[key] = ref(other)
            task["modified_at"] = iso_ms(now)
            change = {"field": field, "action": "removed", "removed_value": dict(removed)}
            self._emit("changed", task, self._task_subscribers(task), change=change, at_ms=now)
            self.version += 1
            return story

    def add_to_task(self, task_gid: str, field: str, gid: str) -> dict[str, Any]:
        """Put ``gid`` (a tag, a task it depends on, a user) into a task's ``field``.

        The task's ``modified_at`` moves; the event is ``changed`` with ``change`` =
        ``{field, action: added, added_value}``, heard by the task and its projects.
        No story (the tests need none). Returns the task.

        Raises:
            KeyError: if there is no such task or object, or ``gid`` is already there.
        """
        with self.lock:
            task = self.get_task(task_gid)
            if any(item["gid"] == gid for item in task[field]):
                raise KeyError(f"{gid} is already in {field} of task {task_gid}")
            sources = {"tags": self.tags, "followers": self.users}
            other = sources[field][gid] if field in sources else self.get_task(gid)
            # Dependencies are listed as {gid, resource_type}, like the generated ones.
            if field == "dependencies":
                added = {"gid": other["gid"], "resource_type": "task"}
                other["dependents"] = [
                    *other["dependents"],
                    {"gid": task_gid, "resource_type": "task"},
                ]
            else:
                added = ref(other)
            task[field] = [*task[field], added]
            task["modified_at"] = iso_ms(self._now_ms())
            change = {"field": field, "action": "added", "added_value": dict(added)}
            self._emit("changed", task, self._task_subscribers(task), change=change)
            self.version += 1
            return task

    def clear_custom_field(self, task_gid: str, field_gid: str) -> dict[str, Any]:
        """Empty a task's value of a custom field; returns the change story Asana adds.

        The field stays in the task's ``custom_fields`` with a null (or empty) value, as
        Asana lists every field of the task's projects; the story
        (``<type>_custom_field_changed``) carries the old and the new (empty) value.
        """
        with self.lock:
            task = self.get_task(task_gid)
            value = next(cf for cf in task["custom_fields"] if cf["gid"] == field_gid)
            key, empty = _VALUE_KEY[value["type"]]
            old = value.get(key)
            value[key] = list(empty) if isinstance(empty, list) else empty
            value["display_value"] = None
            now = self._now_ms()
            story = self._new_story(
                task,
                now,
                f"{value['type']}_custom_field_changed",
                author=self.users.get(self.me_gid),
                text=f"cleared {value['name']}",
            )
            story["custom_field"] = self._cf_ref(self.custom_fields[field_gid])
            story[f"old_{key}"] = old
            story[f"new_{key}"] = value[key]
            task["modified_at"] = iso_ms(now)
            self.version += 1
            return story

    # --- Users tasks name but no listing returns (issue #16: complete users) -----------

    def add_departed_user(self, task_gid: str, *, still_readable: bool = True) -> dict[str, Any]:
        """A user who left the task's workspace but still follows and is assigned the task.

        ``GET /users?workspace=`` no longer lists them. ``still_readable``: Asana still
        answers ``GET /users/{gid}`` for them; otherwise that is a 404 (the account is
        gone) and only the task's compact references name them. The task's
        ``modified_at`` moves (its assignee changed). Returns the user.
        """
        with self.lock:
            task = self.get_task(task_gid)
            gid = self.gid()
            user = {
                "gid": gid,
                "resource_type": "user",
                "name": f"Former colleague {gid[-4:]}",
                "email": f"former.{gid}@example.com",
                "photo": None,
                "workspaces": [],
                "custom_fields": [],
            }
            if still_readable:
                self.users[gid] = user
            task["assignee"] = ref(user)
            task["followers"] = [*task["followers"], ref(user)]
            task["modified_at"] = iso_ms(self._now_ms())
            self.version += 1
            return user


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
) -> Dataset:
    """Generate a deterministic dataset (same arguments -> same data).

    * One user (``Dataset.me_gid``) belongs to every workspace; each workspace has
      ``users_per_workspace - 1`` users of its own, 3 tags, one custom field definition
      of every kind, 2 portfolios owned by ``me`` (holding 2 and 1 projects), 2 goals,
      and in organizations (odd-numbered workspaces) 2 teams.
    * Every ``archived_every``-th project (per workspace) is archived. Projects have 2
      or 3 sections, one membership per member, custom field settings (except every
      fourth project) and 0, 1 or 2 status updates.
    * Every ``multi_home_every``-th task of a project also belongs to the next project of
      its workspace, so it is listed in both. Each task gets ``stories_per_task`` stories:
      "added_to_project", then comments alternating with system stories.
    * Every ``attachments_every``-th task (over all tasks) has 1 or 2 attachments, every
      ``time_entries_every``-th 1 or 2 time tracking entries, every ``subtasks_every``-th
      1 or 2 subtasks, and every third subtask a subtask of its own (two levels).

    0 turns the respective kind off.
    """
    ds = Dataset(seed=seed)
    with ds.lock:
        ws_list = [ds._new_workspace(i + 1) for i in range(workspaces)]
        user_no = 1
        if ws_list and users_per_workspace > 0:
            ds.me_gid = ds._new_user(user_no, ws_list)["gid"]
            user_no += 1
        for ws in ws_list:
            for _ in range(max(0, users_per_workspace - 1)):
                ds._new_user(user_no, [ws])
                user_no += 1
        for ws in ws_list:
            number = ws["name"].split()[-1]
            ds._new_tags(ws, number)
            if ws["is_organization"]:
                ds._new_teams(ws, number)
            ds._new_custom_fields(ws)
        project_no = 0
        for ws in ws_list:
            for p in range(projects_per_workspace):
                project_no += 1
                archived = bool(archived_every) and (p + 1) % archived_every == 0
                ds._new_project(project_no, ws, p, archived)
        for ws in ws_list:
            projects = ds.projects_by_workspace[ws["gid"]]
            for p_index, project in enumerate(projects):
                created_list = sorted(
                    ds._between(_RANGE_START_MS, _RANGE_END_MS - 90 * _DAY_MS)
                    for _ in range(tasks_per_project)
                )
                for t_index, created in enumerate(created_list, start=1):
                    modified = ds._between(created, _RANGE_END_MS)
                    task = ds._new_task(project, created, modified, completed=t_index % 3 == 0)
                    if t_index % 4 == 0:
                        ds._depend(task, ds.tasks_by_project[project["gid"]][-2])
                    if multi_home_every and t_index % multi_home_every == 0 and len(projects) > 1:
                        ds._add_to_project(task, projects[(p_index + 1) % len(projects)])
                    ds._new_stories(task, created, modified, stories_per_task)
                ds._new_status_updates(project, p_index % 3)
            ds._new_portfolios(ws)
            ds._new_goals(ws)
        tasks = list(ds.tasks.values())
        for i, task in enumerate(tasks, start=1):
            if attachments_every and i % attachments_every == 0:
                ds._new_attachments(task, 1 + (i // attachments_every) % 2)
            if time_entries_every and i % time_entries_every == 0:
                ds._new_time_tracking_entries(task, 1 + (i // time_entries_every) % 2)
        if subtasks_every:
            for i, task in enumerate(tasks, start=1):
                if i % subtasks_every == 0:
                    ds._new_subtasks(task, 1 + (i // subtasks_every) % 2, stories_per_task > 0)
            for n, subtask in enumerate(list(ds.subtasks.values()), start=1):
                if n % 3 == 0:
                    ds._new_subtasks(subtask, 1, stories_per_task > 0)
    return ds
