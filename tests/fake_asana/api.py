"""The fake's REST API: its routes, what each accepts, and the JSON Asana answers.

``ROUTES`` are the GETs of Asana's spec (path parameters named as there) that the tap or
the tests call; anything else is Asana's 404 "No matching route for request". List
endpoints return the spec's ``*Compact`` records, single-object GETs the full record
without its opt-in fields, ``opt_fields`` a projection (nested paths are answered from
the referenced object, as Asana's docs show with ``this.assignee.email``).

The fake is strict about what a client sends. Asana is reported to ignore unknown query
parameters and ``opt_fields`` names; the fake answers 400 instead, so a tap that asks for
something in vain fails its tests rather than syncing nulls forever:

* a query parameter the operation does not document, or one it documents that the fake
  does not implement (never a silently unfiltered answer);
* a top-level ``opt_fields`` name the operation does not document;
* and as Asana does: ``limit`` outside 1..100, an ``offset`` the fake did not issue for
  this very query (or older than ``offset_ttl``), an unpaginated list over 1,000 records.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
import os
from collections import ChainMap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode

from . import scopes as scope_rules
from . import spec
from .dataset import COMPACT_FIELDS, OPT_IN_FIELDS, iso_ms, parse_iso_ms, parse_iso_us
from .wire import ApiError, dumps

NO_ROUTE = "No matching route for request"
TOO_LARGE = (
    "The result is too large. You should use pagination (may require specifying a workspace)!"
)
BAD_OFFSET = "offset: Your pagination token is invalid."
BAD_LIMIT = "limit: Must be between 1 and 100"
# 402s for workspaces without Asana's paid features. The search wording was reported
# from the live API (Asana's docs: errors); the others are modelled on it (our guess).
SEARCH_PREMIUM = "Search is only available to premium users."
PORTFOLIOS_PREMIUM = "Portfolios are only available to premium users."
GOALS_PREMIUM = "Goals are only available to premium users."
TIME_TRACKING_PREMIUM = "Time tracking is only available to premium users."
# Asana serves unpaginated lists only up to about this size (Asana's docs: pagination).
MAX_UNPAGINATED = 1000
# Search answers at most this many tasks and has no next_page (its docs: pagination).
SEARCH_MAX = 100
SEARCH_TEMPLATE = "/workspaces/{workspace_gid}/tasks/search"
_SEARCH_SORTS = ("modified_at", "created_at")
_SEARCH_BOUNDS = (
    "modified_at.after",
    "modified_at.before",
    "created_at.after",
    "created_at.before",
)
# Query parameters that shape pages rather than say which records a list holds; the
# others are the pagination fingerprint, so a token only works for its own query.
_PAGE_PARAMS = frozenset({"limit", "offset", "opt_fields"})
# GET /events (Asana's docs: events): at most this many events per answer (then
# ``has_more``); a sync token older than this is refused with a 412 and a fresh token.
EVENTS_PER_CALL = 100
# GET /workspaces/{gid}/events (the spec: "Get workspace events"): every event of the
# workspace, at most 1,000 per answer (then ``has_more``); the same 412 and tokens.
WORKSPACE_EVENTS_TEMPLATE = "/workspaces/{workspace_gid}/events"
WORKSPACE_EVENTS_PER_CALL = 1000
# Asana limits some endpoints to higher tiers; the spec does not say which answer this
# one gives where it is not offered. A 402 like search's is our guess (tests also try 403
# through ``workspace_events_status``).
WORKSPACE_EVENTS_UNAVAILABLE = "Workspace events are only available to premium users."
SYNC_TOKEN_TTL = 24 * 3600.0
SYNC_TOO_OLD = (
    "Sync token invalid or too old. If you are attempting to keep resources in sync, "
    "you must fetch the full dataset for this query now and use the new sync token for "
    "the next sync."
)
# Every record has these; ``opt_fields`` may always name them.
_ALWAYS_RETURNABLE = frozenset({"gid", "resource_type"})


@dataclass(frozen=True)
class Route:
    """One GET the fake serves.

    ``index`` names the Dataset index that lists the path object's records; otherwise
    ``handler`` (a method of :class:`ApiServer`) returns them. ``params`` are the
    filters the fake implements, ``premium`` the 402 for workspaces without paid
    features, ``kind`` "list" (``limit``/``offset`` pagination), "single" (one full
    record) or "search" (at most ``limit`` records, no ``next_page``).
    """

    template: str
    resource: str
    index: str = ""
    handler: str = ""
    params: frozenset[str] = frozenset()
    premium: str | None = None
    kind: str = "list"


def _params(names: str) -> frozenset[str]:
    return frozenset(names.split())


ROUTES: tuple[Route, ...] = (
    Route("/workspaces", "workspace", handler="_workspaces"),
    Route("/users", "user", handler="_users", params=_params("workspace")),
    Route("/users/{user_gid}", "user", kind="single"),
    Route("/projects", "project", handler="_projects", params=_params("workspace archived")),
    Route("/projects/{project_gid}", "project", kind="single"),
    Route("/projects/{project_gid}/sections", "section", "sections_by_project"),
    Route(
        "/projects/{project_gid}/project_memberships",
        "project_membership",
        "project_memberships_by_project",
    ),
    Route(
        "/projects/{project_gid}/custom_field_settings",
        "custom_field_setting",
        "custom_field_settings_by_project",
    ),
    Route(
        "/tasks",
        "task",
        handler="_tasks",
        params=_params("project assignee workspace modified_since"),
    ),
    Route("/tasks/{task_gid}", "task", kind="single"),
    Route("/tasks/{task_gid}/stories", "story", "stories_by_task"),
    Route("/tasks/{task_gid}/subtasks", "task", "subtasks_by_parent"),
    Route(
        "/tasks/{task_gid}/time_tracking_entries",
        "time_tracking_entry",
        "time_tracking_entries_by_task",
        premium=TIME_TRACKING_PREMIUM,
    ),
    Route("/attachments", "attachment", handler="_attachments", params=_params("parent")),
    Route("/status_updates", "status_update", handler="_status_updates", params=_params("parent")),
    Route("/workspaces/{workspace_gid}/tags", "tag", "tags_by_workspace"),
    Route(
        "/workspaces/{workspace_gid}/custom_fields", "custom_field", "custom_fields_by_workspace"
    ),
    Route("/workspaces/{workspace_gid}/teams", "team", handler="_teams"),
    Route(
        SEARCH_TEMPLATE,
        "task",
        handler="_search",
        params=_params("limit is_subtask sort_by sort_ascending " + " ".join(_SEARCH_BOUNDS)),
        kind="search",
    ),
    Route("/teams/{team_gid}/team_memberships", "team_membership", "team_memberships_by_team"),
    Route("/portfolios", "portfolio", handler="_portfolios", params=_params("workspace owner")),
    Route(
        "/portfolios/{portfolio_gid}/items",
        "project",
        "portfolio_items",
        premium=PORTFOLIOS_PREMIUM,
    ),
    Route("/goals", "goal", handler="_goals", params=_params("workspace")),
    Route("/events", "event", handler="_events", params=_params("resource sync"), kind="events"),
    Route(
        WORKSPACE_EVENTS_TEMPLATE,
        "event",
        handler="_events",
        params=_params("sync"),
        kind="events",
    ),
)


_SEGMENTS = [(route.template.strip("/").split("/"), route) for route in ROUTES]


def match(parts: list[str]) -> tuple[Route, tuple[str, str] | None]:
    """The route for a request's path segments, and its path parameter (if any) as
    ``(resource type, value)``: ``/tasks/123/stories`` -> ``("task", "123")``."""
    for segments, route in _SEGMENTS:
        if len(segments) == len(parts) and all(
            s[0] == "{" or s == p for s, p in zip(segments, parts, strict=True)
        ):
            for segment, part in zip(segments, parts, strict=True):
                if segment[0] == "{":
                    return route, (segment[1:-1].removesuffix("_gid"), part)
            return route, None
    raise ApiError(404, NO_ROUTE)


# --------------------------------------------------------------------------- opt_fields
# Marker key in an opt_fields tree: the field was named bare (``assignee``) as well as
# with sub-fields (``assignee.name``).
_BARE = ""


class OptFields:
    """A compiled ``opt_fields`` value: ``entries`` of ``(name, child or None, bare)``.

    ``child`` is None for a leaf; ``bare`` is True when the field was also named on its
    own (``assignee`` as well as ``assignee.name``). ``names`` is the set of entry names.
    """

    __slots__ = ("entries", "names")

    def __init__(self, entries: tuple[tuple[str, OptFields | None, bool], ...]) -> None:
        """Wrap compiled entries (use :func:`compile_opt_fields`)."""
        self.entries = entries
        self.names = frozenset(name for name, _, _ in entries)


def _compile(tree: dict[str, Any]) -> OptFields:
    return OptFields(
        tuple(
            (name, _compile(sub) if set(sub) - {_BARE} else None, _BARE in sub)
            for name, sub in tree.items()
            if name != _BARE
        )
    )


@lru_cache(maxsize=512)
def compile_opt_fields(raw: str) -> OptFields:
    """Parse ``opt_fields`` (comma-separated dotted paths) into a cached, shared tree."""
    tree: dict[str, Any] = {}
    for item in raw.split(","):
        segments = [s.strip() for s in item.split(".") if s.strip()]
        node = tree
        for i, segment in enumerate(segments):
            existed = segment in node
            child = node.setdefault(segment, {})
            # Named both bare and with sub-fields: remember the bare request too.
            if existed and (bool(child) == (i == len(segments) - 1)):
                child[_BARE] = {}
            node = child
    return _compile(tree)


_SCALARS = (str, int, float, bool, type(None))
Resolver = Callable[[dict[str, Any]], "dict[str, Any] | None"]


def _bare(value: dict[str, Any]) -> dict[str, Any]:
    # A bare resource reference comes back minimal; plain objects come back whole
    # (Asana's docs: input/output options).
    if "resource_type" in value and "gid" in value:
        return {"gid": value["gid"], "resource_type": value["resource_type"]}
    return value


def _project_value(value: Any, child: OptFields | None, bare: bool, resolve: Resolver) -> Any:
    if value.__class__ is dict:
        if child is None:
            return _bare(value)
        if not child.names <= value.keys():
            # Asana answers nested paths from the referenced object itself, so
            # ``assignee.email`` works although the compact reference has no email.
            value = resolve(value) or value
        out = project(value, child, resolve)
        return {**_bare(value), **out} if bare else out
    if value.__class__ is list:
        return [
            e if e.__class__ in _SCALARS else _project_value(e, child, bare, resolve) for e in value
        ]
    return value


def project(obj: dict[str, Any], fields: OptFields, resolve: Resolver) -> dict[str, Any]:
    """``obj`` cut to compiled ``fields``, plus ``gid`` at every level that has one.

    ``resolve(ref)`` returns the full object behind a compact reference (or None).
    """
    out: dict[str, Any] = {"gid": obj["gid"]} if "gid" in obj else {}
    for name, child, bare in fields.entries:
        if name in obj:
            value = obj[name]
            if value.__class__ in _SCALARS:
                out[name] = value
            else:
                out[name] = _project_value(value, child, bare, resolve)
    return out


# --------------------------------------------------------------------------- helpers
def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _required(query: dict[str, list[str]], name: str) -> str:
    value = _first(query, name)
    if value is None:
        raise ApiError(400, f"{name}: Missing input")
    return value


def _bool(query: dict[str, list[str]], name: str) -> bool | None:
    value = _first(query, name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise ApiError(400, f"{name}: Not a boolean: {value}")
    return value == "true"


def _limit(query: dict[str, list[str]]) -> int | None:
    raw = _first(query, "limit")
    if raw is None:
        return None
    if not (raw.isdigit() and 1 <= int(raw) <= 100):
        raise ApiError(400, BAD_LIMIT)
    return int(raw)


def _since(query: dict[str, list[str]], name: str) -> str | None:
    """An inclusive date-time bound as a canonical ms string (they compare as text)."""
    value = _first(query, name)
    if value is None:
        return None
    try:
        return iso_ms(parse_iso_ms(value))
    except (ValueError, OverflowError, OSError):
        raise ApiError(400, f"{name}: Not a valid date-time") from None


def _exclusive_bound(query: dict[str, list[str]], name: str) -> str | None:
    """A search bound (``x.after``/``x.before``, exclusive) as a canonical ms string.

    After: keep ``value >= bound`` (= strictly later than the input, which may have
    microseconds); before: keep ``value < bound`` (strictly earlier).
    """
    value = _first(query, name)
    if value is None:
        return None
    try:
        micros = parse_iso_us(value)
    except (ValueError, OverflowError, OSError):
        raise ApiError(400, f"{name}: Not a valid date-time") from None
    return iso_ms(micros // 1000 + 1 if name.endswith(".after") else -(-micros // 1000))


def _check_gid(kind: str, value: str) -> None:
    if not value:
        raise ApiError(400, f"{kind}: Not a Long")
    if not value.isdigit():
        raise ApiError(400, f"{kind}: Not a recognized ID: {value}")


def _workspace_of(obj: dict[str, Any]) -> str:
    return (obj.get("workspace") or {}).get("gid") or ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --------------------------------------------------------------------------- the API
class ApiServer:
    """The API half of ``FakeAsana`` (which calls :meth:`_init_api` and provides
    ``dataset``, ``now``, ``api_url`` and ``_access_tokens``)."""

    def _init_api(self) -> None:
        #: Seconds a pagination token stays valid (None: forever).
        self.offset_ttl: float | None = None
        #: Cache each record's JSON per opt_fields. Only safe while the dataset changes
        #: through the mutation helpers alone (they invalidate it); the CLI turns it on.
        self.cache_responses = False
        #: Search's sorted indexes, while ``cache_responses`` (see ``_search_indexed``).
        self._search_indexes: dict[tuple, tuple[list, list[dict]]] = {}
        self._search_version = -1
        #: Workspaces with Asana's paid features (search, portfolios, goals, time
        #: tracking); those routes answer 402 for any other workspace. Default: all.
        self.premium_workspaces: set[str] = set(self.dataset.workspaces)
        #: Status for a request the token's scopes do not allow (Asana's is undocumented).
        self.scope_error_status = 403
        #: Workspaces whose ``GET /workspaces/{gid}/events`` answers (default: all);
        #: the others answer ``workspace_events_status`` (see WORKSPACE_EVENTS_UNAVAILABLE).
        self.workspace_events_workspaces: set[str] = set(self.dataset.workspaces)
        self.workspace_events_status = 402
        #: Seconds a sync token of ``GET /events`` stays valid (Asana: 24 h, sooner
        #: under load; tests shorten it or move the clock).
        self.sync_token_ttl = SYNC_TOKEN_TTL
        self._secret = os.urandom(32)
        self._fragments: dict[tuple[Any, ...], bytes] = {}
        self._cache_version = -1
        ds = self.dataset
        # Subtasks are tasks and their stories stories, wherever a gid is looked up.
        self._tables = {
            "workspace": ds.workspaces,
            "user": ds.users,
            "project": ds.projects,
            "task": ChainMap(ds.tasks, ds.subtasks),
            "story": ChainMap(ds.stories, ds.subtask_stories),
            "section": ds.sections,
            "tag": ds.tags,
            "team": ds.teams,
            "team_membership": ds.team_memberships,
            "project_membership": ds.project_memberships,
            "custom_field_setting": ds.custom_field_settings,
            "attachment": ds.attachments,
            "portfolio": ds.portfolios,
            "status_update": ds.status_updates,
            "goal": ds.goals,
            "time_tracking_entry": ds.time_tracking_entries,
        }

    def _api_get(
        self, parts: list[str], query: dict[str, list[str]], token: str, user_gid: str
    ) -> bytes:
        """The body of a successful GET (raises :class:`ApiError` otherwise)."""
        route, path_object = match(parts)
        self._check_query(route, query)
        opt_fields = _first(query, "opt_fields") or None
        fields = compile_opt_fields(opt_fields) if opt_fields else None
        undocumented = (fields.names if fields else frozenset()) - _ALWAYS_RETURNABLE
        undocumented -= spec.documented_fields(route.template)
        if undocumented:
            name = sorted(undocumented)[0]
            raise ApiError(400, f"opt_fields: Not a field of GET {route.template}: {name}")
        info = self._access_tokens.get(token)
        if info is not None:
            names = fields.names if fields else ()
            denied = scope_rules.denial(info.scopes, route.template, route.resource, names)
            if denied is not None:
                raise ApiError(self.scope_error_status, denied)
        with self.dataset.lock:
            obj = None
            if path_object is not None and path_object[0] == "user":
                obj = self._user(path_object[1], user_gid)  # "me" is the token's user
            elif path_object is not None:
                obj = self._get(*path_object)
            if route.template == WORKSPACE_EVENTS_TEMPLATE:
                if obj["gid"] not in self.workspace_events_workspaces:
                    raise ApiError(self.workspace_events_status, WORKSPACE_EVENTS_UNAVAILABLE)
            elif route.premium is not None and obj is not None:
                self._premium(_workspace_of(obj), route.premium)
            if route.kind == "single":
                return self._envelope([obj], route, opt_fields, single=True)
            if route.kind == "events":
                return self._events(query, fields, obj)
            if route.index:
                records = getattr(self.dataset, route.index).get(obj["gid"], [])
            else:
                records = getattr(self, route.handler)(obj, query, user_gid)
            if route.kind == "search":
                return self._envelope(records, route, opt_fields)
            return self._paginate(parts, query, route, records, opt_fields)

    def _check_query(self, route: Route, query: dict[str, list[str]]) -> None:
        accepted = route.params | ({"opt_fields"} & spec.documented_params(route.template))
        if route.kind == "list":
            accepted |= {"limit", "offset"}
        for name in query:
            if name in accepted:
                continue
            if name in spec.documented_params(route.template):
                raise ApiError(400, f"{name}: Not implemented by this fake")
            raise ApiError(400, f"{name}: Not a parameter of GET {route.template}")

    # ----- lookups
    def _get(self, kind: str, gid: str) -> dict[str, Any]:
        _check_gid(kind, gid)
        obj = self._tables[kind].get(gid)
        if obj is None:
            raise ApiError(404, f"{kind}: Unknown object: {gid}")
        return obj

    def _user(self, ref: str, user_gid: str) -> dict[str, Any]:
        return self.dataset.users[user_gid] if ref == "me" else self._get("user", ref)

    def _premium(self, workspace_gid: str, message: str) -> None:
        """Raise Asana's 402 unless the workspace has the paid features."""
        if workspace_gid not in self.premium_workspaces:
            raise ApiError(402, message)

    # ----- list handlers: (path object, query, user gid) -> records in gid order
    def _workspaces(self, _obj: None, _query: Any, _user: str) -> list[dict[str, Any]]:
        return list(self.dataset.workspaces.values())

    def _users(self, _obj: None, query: dict[str, list[str]], _user: str) -> list[dict[str, Any]]:
        workspace = _first(query, "workspace")
        if workspace is None:
            return list(self.dataset.users.values())
        return self.dataset.users_by_workspace[self._get("workspace", workspace)["gid"]]

    def _projects(self, _obj: None, query: dict[str, list[str]], _user: str) -> list[dict]:
        ds = self.dataset
        workspace = _first(query, "workspace")
        if workspace is None:
            if "limit" in query or "offset" in query:
                raise ApiError(400, "Need to specify a workspace or team to paginate!")
            records = list(ds.projects.values())
        else:
            records = ds.projects_by_workspace[self._get("workspace", workspace)["gid"]]
        archived = _bool(query, "archived")
        if archived is not None:
            records = [p for p in records if p["archived"] is archived]
        return records

    def _tasks(self, _obj: None, query: dict[str, list[str]], user_gid: str) -> list[dict]:
        project = _first(query, "project")
        assignee = _first(query, "assignee")
        workspace = _first(query, "workspace")
        if project is not None and (assignee is not None or workspace is not None):
            raise ApiError(400, "project: Not implemented by this fake with assignee/workspace")
        if project is None and (assignee is None) != (workspace is None):
            # The spec: "If you specify assignee, you must also specify the workspace".
            raise ApiError(400, "assignee: Must specify workspace as well")
        if project is None and assignee is None:
            # Asana's answer without any filter (measured); the filters other than
            # ``project`` and ``assignee`` + ``workspace`` are not implemented here.
            raise ApiError(
                400, "You should specify one of workspace, project, tag, section, user_task_list"
            )
        if project is not None:
            records = self.dataset.tasks_by_project[self._get("project", project)["gid"]]
        else:
            # Top-level tasks assigned to the user in the workspace, in projects or not.
            user = self._user(str(assignee), user_gid)
            ws = self._get("workspace", str(workspace))["gid"]
            records = sorted(
                (
                    t
                    for t in self.dataset.tasks.values()
                    if _workspace_of(t) == ws
                    and (t.get("assignee") or {}).get("gid") == user["gid"]
                ),
                key=lambda t: t["gid"],
            )
        modified_since = _since(query, "modified_since")
        if modified_since is not None:
            # Inclusive bound (>=), the way tap-asana assumes (the spec's GET /tasks).
            records = [t for t in records if t["modified_at"] >= modified_since]
        return records

    def _attachments(self, _obj: None, query: dict[str, list[str]], _user: str) -> list[dict]:
        # Projects (their "Key resources") can have attachments too; ours have none.
        gid = _required(query, "parent")
        _check_gid("parent", gid)
        if gid not in self._tables["task"] and gid not in self.dataset.projects:
            raise ApiError(404, f"parent: Unknown object: {gid}")
        return self.dataset.attachments_by_parent.get(gid, [])

    def _status_updates(self, _obj: None, query: dict[str, list[str]], _user: str) -> list[dict]:
        gid = _required(query, "parent")
        _check_gid("parent", gid)
        if gid in self.dataset.portfolios or gid in self.dataset.goals:
            raise ApiError(400, "parent: Only projects are implemented by this fake")
        if gid not in self.dataset.projects:
            raise ApiError(404, f"parent: Unknown object: {gid}")
        return self.dataset.status_updates_by_parent.get(gid, [])

    def _teams(self, workspace: dict, _query: Any, _user: str) -> list[dict[str, Any]]:
        # Only organizations have teams. What Asana answers for a plain workspace is not
        # documented; a 400 naming the problem is our guess.
        if not workspace["is_organization"]:
            raise ApiError(400, "workspace: Not an organization")
        return self.dataset.teams_by_workspace[workspace["gid"]]

    def _portfolios(self, _obj: None, query: dict[str, list[str]], user_gid: str) -> list[dict]:
        workspace = self._get("workspace", _required(query, "workspace"))
        # The current spec marks ``owner`` optional (for service accounts); clients report
        # it as required for PAT/OAuth users, which is what this fake models.
        owner = self._user(_required(query, "owner"), user_gid)
        self._premium(workspace["gid"], PORTFOLIOS_PREMIUM)
        return [
            p
            for p in self.dataset.portfolios_by_workspace[workspace["gid"]]
            if (p["owner"] or {}).get("gid") == owner["gid"]
        ]

    def _goals(self, _obj: None, query: dict[str, list[str]], _user: str) -> list[dict]:
        workspace = self._get("workspace", _required(query, "workspace"))
        self._premium(workspace["gid"], GOALS_PREMIUM)
        return self.dataset.goals_by_workspace[workspace["gid"]]

    def _search(self, workspace: dict, query: dict[str, list[str]], _user: str) -> list[dict]:
        """``GET /workspaces/{gid}/tasks/search`` over the workspace's tasks and subtasks.

        Like Asana there is no offset pagination: at most ``limit`` (default and maximum
        100) tasks and no ``next_page``; clients page by sorting ascending and moving
        ``modified_at.after`` past the last result. Implemented: ``is_subtask``,
        ``{modified,created}_at.{after,before}`` (exclusive), ``sort_by``
        (``modified_at`` or ``created_at``), ``sort_ascending`` and ``limit``.
        """
        limit = _limit(query) or SEARCH_MAX
        is_subtask = _bool(query, "is_subtask")
        ascending = bool(_bool(query, "sort_ascending"))
        sort_by = _first(query, "sort_by") or "modified_at"
        if sort_by not in _SEARCH_SORTS:
            if sort_by in spec.param_enum(SEARCH_TEMPLATE, "sort_by"):
                raise ApiError(400, f"sort_by: Not implemented by this fake: {sort_by}")
            raise ApiError(400, f"sort_by: Not a valid value: {sort_by}")
        bounds = []  # (field, bound, whether values must be at or after it)
        for name in _SEARCH_BOUNDS:
            bound = _exclusive_bound(query, name)
            if bound is not None:
                field, _, side = name.partition(".")
                bounds.append((field, bound, side == "after"))
        # The paid plan is checked after the input (our guess at Asana's order).
        self._premium(workspace["gid"], SEARCH_PREMIUM)
        if self.cache_responses:
            return self._search_indexed(
                workspace["gid"], is_subtask, sort_by, ascending, bounds, limit
            )
        records = [
            task
            for task in self._searchable(workspace["gid"], is_subtask)
            if all((task[f] >= b) if after else (task[f] < b) for f, b, after in bounds)
        ]
        records.sort(key=lambda t: (t[sort_by], t["gid"]), reverse=not ascending)
        return records[:limit]

    def _searchable(self, workspace: str, is_subtask: bool | None) -> list[dict]:
        """The workspace's tasks, subtasks or both (``is_subtask`` unset), as search sees them."""
        ds = self.dataset
        tables = {None: (ds.tasks, ds.subtasks), True: (ds.subtasks,), False: (ds.tasks,)}
        return [
            task
            for table in tables[is_subtask]
            for task in table.values()
            if _workspace_of(task) == workspace
        ]

    def _search_indexed(
        self,
        workspace: str,
        is_subtask: bool | None,
        sort_by: str,
        ascending: bool,
        bounds: list[tuple[str, str, bool]],
        limit: int,
    ) -> list[dict]:
        """``_search``'s answer from a sorted index (``cache_responses``: benchmarks).

        The same tasks in the same order, without filtering and sorting the whole
        workspace for every page: a first run pages through every task, which made the
        fake's answers slow down with the square of the workspace's size.
        """
        if self._search_version != self.dataset.version:
            self._search_indexes.clear()
            self._search_version = self.dataset.version
        key = (workspace, is_subtask, sort_by)
        index = self._search_indexes.get(key)
        if index is None:
            tasks = self._searchable(workspace, is_subtask)
            tasks.sort(key=lambda t: (t[sort_by], t["gid"]))
            index = self._search_indexes[key] = ([(t[sort_by], t["gid"]) for t in tasks], tasks)
        keys, tasks = index
        # The sort field's own bounds narrow the range; any other is checked per task.
        low, high = 0, len(tasks)
        for field, bound, after in bounds:
            if field == sort_by and after:
                low = max(low, bisect.bisect_left(keys, (bound,)))
            elif field == sort_by:
                high = min(high, bisect.bisect_left(keys, (bound,)))
        order = range(low, high) if ascending else range(high - 1, low - 1, -1)
        found: list[dict] = []
        for position in order:
            task = tasks[position]
            if all((task[f] >= b) if after else (task[f] < b) for f, b, after in bounds):
                found.append(task)
                if len(found) == limit:
                    break
        return found

    # ----- events
    def _events(
        self, query: dict[str, list[str]], fields: OptFields | None, workspace: dict | None
    ) -> bytes:
        """``GET /events``: what happened to ``resource`` since the ``sync`` token.

        No token, or one that is unreadable, for another resource or older than
        ``sync_token_ttl``: 412 with a fresh token (events from now on). Otherwise the
        next events (at most 100, ``has_more`` if there are more) and the token to
        send next; re-sending a token gives the same answer.

        ``GET /workspaces/{gid}/events`` (``workspace`` given): the same for every event
        of the workspace, at most 1,000 per answer.
        """
        per_call = EVENTS_PER_CALL
        if workspace is not None:
            resource = workspace["gid"]
            per_call = WORKSPACE_EVENTS_PER_CALL
        else:
            resource = _required(query, "resource")
            _check_gid("resource", resource)
            if not any(resource in self._tables[kind] for kind in ("project", "task", "goal")):
                raise ApiError(404, f"resource: Unknown object: {resource}")
        events = self.dataset.events
        after = self._decode_sync(_first(query, "sync"), resource)
        if after is None:
            latest = events[-1][0] if events else 0
            raise ApiError(412, SYNC_TOO_OLD, extra={"sync": self._encode_sync(resource, latest)})
        mine = [e for e in events if e[0] > after and resource in e[2]]
        page = mine[:per_call]
        last = page[-1][0] if page else after
        data = [project(e[3], fields, self._resolve) if fields else e[3] for e in page]
        return dumps(
            {
                "data": data,
                "sync": self._encode_sync(resource, last),
                "has_more": len(mine) > per_call,
            }
        )

    def _encode_sync(self, resource: str, after_seq: int) -> str:
        payload = json.dumps(
            {"r": resource, "s": after_seq, "iat": round(self.now(), 3)}, separators=(",", ":")
        ).encode("utf-8")
        signature = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
        return _b64(payload) + "." + _b64(signature)

    def _decode_sync(self, token: str | None, resource: str) -> int | None:
        """The last event sequence number a token has seen; None if it is not valid."""
        if not token:
            return None
        try:
            payload_part, signature_part = token.split(".")
            payload = _unb64(payload_part)
            expected = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
            if not hmac.compare_digest(expected, _unb64(signature_part)):
                return None
            data = json.loads(payload)
            if data["r"] != resource or self.now() - data["iat"] > self.sync_token_ttl:
                return None
            return int(data["s"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    # ----- pagination
    def _fingerprint(self, parts: list[str], query: dict[str, list[str]]) -> str:
        filters = sorted((k, v) for k, vs in query.items() if k not in _PAGE_PARAMS for v in vs)
        raw = "/".join(parts) + "?" + json.dumps(filters)
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]

    def _encode_offset(self, fingerprint: str, after_gid: str) -> str:
        payload = json.dumps(
            {"fp": fingerprint, "after": after_gid, "iat": round(self.now(), 3)},
            separators=(",", ":"),
        ).encode("utf-8")
        signature = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
        return _b64(payload) + "." + _b64(signature)

    def _decode_offset(self, token: str, fingerprint: str) -> str:
        """The gid to resume after; raises the 400 for anything the fake did not issue."""
        try:
            payload_part, signature_part = token.split(".")
            payload = _unb64(payload_part)
            expected = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
            if not hmac.compare_digest(expected, _unb64(signature_part)):
                raise ValueError("bad signature")
            data = json.loads(payload)
            if data["fp"] != fingerprint:
                raise ValueError("token from another query")
            if self.offset_ttl is not None and self.now() - data["iat"] > self.offset_ttl:
                raise ValueError("expired")
            return str(data["after"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ApiError(400, BAD_OFFSET) from None

    def _paginate(
        self,
        parts: list[str],
        query: dict[str, list[str]],
        route: Route,
        records: list[dict[str, Any]],
        opt_fields: str | None,
    ) -> bytes:
        limit = _limit(query)
        start = 0
        offset = _first(query, "offset")
        if offset is not None:
            after = self._decode_offset(offset, self._fingerprint(parts, query))
            # Every listing is in gid order (gids grow with creation), so resuming after
            # the last served gid is a bisect, and deletes/inserts cannot cause repeats.
            start = bisect.bisect_right(records, after, key=lambda r: r["gid"])
        if limit is None:
            rest = records[start:]
            if len(rest) > MAX_UNPAGINATED:
                raise ApiError(400, TOO_LARGE)
            return self._envelope(rest, route, opt_fields)
        page = records[start : start + limit]
        next_page = None
        if start + limit < len(records):
            token = self._encode_offset(self._fingerprint(parts, query), page[-1]["gid"])
            pairs = [(k, v) for k, vs in query.items() if k != "offset" for v in vs]
            path = (
                "/"
                + "/".join(parts)
                + "?"
                + urlencode([*pairs, ("offset", token)], safe=",.", quote_via=quote)
            )
            next_page = {"offset": token, "path": path, "uri": self.api_url + path}
        return self._envelope(page, route, opt_fields, next_page=next_page, paginated=True)

    # ----- rendering
    def shape(self, obj: dict[str, Any], endpoint: str, opt_fields: str) -> dict[str, Any]:
        """``obj`` as the fake answers it for ``opt_fields`` at ``endpoint`` (a spec path).

        For tests that compare what the tap emitted with what Asana sent it. (Every
        endpoint projects alike: ``endpoint`` only says where the answer came from.)
        """
        del endpoint
        with self.dataset.lock:
            return project(obj, compile_opt_fields(opt_fields), self._resolve)

    def _resolve(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        # Custom fields are left out on purpose: a task's custom field *value* is not a
        # subset of the field's definition, so nested paths must not resolve to it.
        table = self._tables.get(ref.get("resource_type") or "")
        return table.get(ref.get("gid")) if table is not None else None

    def _render(
        self, obj: dict[str, Any], resource: str, opt_fields: str | None, *, full: bool
    ) -> bytes:
        """The JSON Asana sends for ``obj`` (projection, full record or compact)."""
        key = (resource, obj["gid"], opt_fields, full)
        if self.cache_responses:
            # Any mutation through the helpers bumps the dataset version.
            if self._cache_version != self.dataset.version:
                self._fragments.clear()
                self._cache_version = self.dataset.version
            cached = self._fragments.get(key)
            if cached is not None:
                return cached
        if opt_fields:
            shaped = project(obj, compile_opt_fields(opt_fields), self._resolve)
        elif full:
            hidden = OPT_IN_FIELDS.get(resource, frozenset())
            shaped = {k: v for k, v in obj.items() if k not in hidden}
        else:
            shaped = {k: obj[k] for k in COMPACT_FIELDS[resource] if k in obj}
        fragment = dumps(shaped)
        if self.cache_responses:
            self._fragments[key] = fragment
        return fragment

    def _envelope(
        self,
        records: Iterable[dict[str, Any]],
        route: Route,
        opt_fields: str | None,
        *,
        single: bool = False,
        next_page: dict[str, str] | None = None,
        paginated: bool = False,
    ) -> bytes:
        """``{"data": ...}``, with ``next_page`` (null on the last page) when paginated."""
        rendered = [self._render(r, route.resource, opt_fields, full=single) for r in records]
        data = rendered[0] if single else b"[" + b",".join(rendered) + b"]"
        tail = b',"next_page":' + dumps(next_page) if paginated else b""
        return b'{"data":' + data + tail + b"}"
