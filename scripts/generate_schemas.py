#!/usr/bin/env python3
"""Generate the tap's stream JSON schemas from Asana's OpenAPI specification.

The tap does not need the specification at run time: this script turns the spec's
``*Response`` components into the JSON files under ``tap_asana_vl/schemas`` that are
committed to the repository.  Only structure is carried over (property names, types,
``date``/``date-time`` formats); no prose from the specification.

Usage::

    python scripts/generate_schemas.py            # (re)write the schema files
    python scripts/generate_schemas.py --check    # exit 1 if the files are stale

Rules, in short (details next to the code that implements them):

* ``$ref`` (local ``#/components/schemas/...`` only) is resolved and ``allOf`` merged.
* ``type`` is always a list.
* ``enum``, ``description``, ``example``, ``pattern``, ``minimum``, ``readOnly``,
  ``x-*`` ... are dropped; of the formats only ``date-time`` and ``date`` are kept.
* The record gets the properties of its Response component that the stream's list
  endpoint documents in its ``opt_fields`` parameter (``ENDPOINTS``): a list endpoint
  returns nothing else, whatever ``opt_fields`` asks for. Resources nested two or more
  levels below the record are reduced to their Compact form; objects nested deeper
  than ``MAX_DEPTH`` become free-form objects.
* Every property except the record's primary key may be null, at every depth (nested
  objects, array items, objects inside arrays). The spec's ``nullable`` is incomplete
  (e.g. ``date_value.date_time`` is described as null but typed ``string``), and one
  null a schema refuses makes a validating target reject the whole load.
* Deprecated, ``*Conditional*`` and ``Opt In`` properties are included like all others
  (the tap wants every field; Opt In ones are only returned because ``opt_fields``
  names them).
* ``OVERRIDES`` fixes known type inaccuracies of the specification.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict

import yaml

# --------------------------------------------------------------------------------------
# Tables: edit these to add a stream or fix the specification.
# --------------------------------------------------------------------------------------

#: Stream name -> component of ``#/components/schemas`` describing one record.
#: Adding a stream is one line here (plus the stream class in the tap).
STREAMS: dict[str, str] = {
    "workspaces": "WorkspaceResponse",
    "users": "UserResponse",
    "projects": "ProjectResponse",
    "tasks": "TaskResponse",
    "stories": "StoryResponse",
    "subtasks": "TaskResponse",
    "subtask_stories": "StoryResponse",
    "sections": "SectionResponse",
    "tags": "TagResponse",
    "teams": "TeamResponse",
    "team_memberships": "TeamMembershipResponse",
    "project_memberships": "ProjectMembershipNormalResponse",
    "custom_fields": "CustomFieldResponse",
    "project_custom_field_settings": "CustomFieldSettingResponse",
    "attachments": "AttachmentResponse",
    "portfolios": "PortfolioResponse",
    "portfolio_items": "ProjectCompact",
    "status_updates": "StatusUpdateResponse",
    "goals": "GoalResponse",
    # The list endpoint returns compact entries; opt_fields asks for every field of
    # the full entry (the spec has no TimeTrackingEntryResponse component).
    "time_tracking_entries": "TimeTrackingEntryBase",
}

#: Stream name -> the GET operation (path) whose answers the stream's records are. Its
#: ``opt_fields`` enum lists what that endpoint can return; anything else the schema
#: declared would be requested in vain and load as null forever.
ENDPOINTS: dict[str, str] = {
    "workspaces": "/workspaces",
    "users": "/users",
    "projects": "/projects",
    "tasks": "/tasks",
    "stories": "/tasks/{task_gid}/stories",
    # Subtasks come from both endpoints; the spec documents the same fields for each.
    "subtasks": "/tasks/{task_gid}/subtasks",
    "subtask_stories": "/tasks/{task_gid}/stories",
    "sections": "/projects/{project_gid}/sections",
    "tags": "/workspaces/{workspace_gid}/tags",
    "teams": "/workspaces/{workspace_gid}/teams",
    "team_memberships": "/teams/{team_gid}/team_memberships",
    "project_memberships": "/projects/{project_gid}/project_memberships",
    "custom_fields": "/workspaces/{workspace_gid}/custom_fields",
    "project_custom_field_settings": "/projects/{project_gid}/custom_field_settings",
    "attachments": "/attachments",
    "portfolios": "/portfolios",
    "portfolio_items": "/portfolios/{portfolio_gid}/items",
    "status_updates": "/status_updates",
    "goals": "/goals",
    "time_tracking_entries": "/tasks/{task_gid}/time_tracking_entries",
}

#: Documented fields that never carry data for a stream's records, left out so that
#: they cost nothing and do not look like missing data. A custom field *definition*
#: has no value: values live on each task (``tasks.custom_fields``).
NEVER_SET: dict[str, frozenset[str]] = {
    "custom_fields": frozenset(
        {
            "date_value",
            "display_value",
            "enum_value",
            "html_text_value",
            "multi_enum_values",
            "number_value",
            "people_value",
            "reference_value",
            "text_value",
        }
    ),
}

#: Entries of an ``opt_fields`` enum that are pagination, not record fields.
PAGINATION_FIELDS = frozenset({"offset", "path", "uri"})
#: Fields every endpoint returns whether or not its enum names them.
ALWAYS_RETURNED = frozenset({"gid", "resource_type"})

#: Properties the tap itself adds to records; they are not Asana fields, so they are
#: not part of ``opt_fields``.
EXTRA_PROPERTIES: dict[str, dict[str, dict[str, Any]]] = {
    # gid of the project through which the task was fetched (tasks are listed per
    # project, and a task can be in several projects).
    "tasks": {"project_gid": {"type": ["string", "null"]}},
    # Portfolio items are projects; the portfolio they belong to is part of the key.
    "portfolio_items": {"portfolio_gid": {"type": ["string", "null"]}},
    # The endpoint documents no link back to the task; the tap fills it from the context.
    "time_tracking_entries": {"task_gid": {"type": ["string", "null"]}},
}

#: Streams whose deleted objects the tap reports from Asana's events (see
#: tap_asana_vl/streams/deletes.py): they get the Singer ``_sdc_deleted_at`` column,
#: null while the object exists, the time Asana deleted it otherwise.
TOMBSTONED: frozenset[str] = frozenset({"tasks", "stories", "sections"})
DELETED_AT: dict[str, dict[str, Any]] = {
    "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"}
}

#: Primary keys other than ``gid`` (the only properties that are never null).
EXTRA_KEYS: dict[str, tuple[str, ...]] = {"portfolio_items": ("portfolio_gid",)}


class Override(TypedDict, total=False):
    """A correction applied to one generated property: ``type`` replaces its JSON type."""

    type: str


#: (stream, component such as ``StoryResponse`` (every stream built from it), or ``"*"``
#: for every stream; dotted property path) -> correction.
#: Paths look like ``opt_fields`` paths: array items are transparent, so
#: ``custom_fields.created_by`` is the ``created_by`` of each ``custom_fields`` item.
#: Every entry must match a generated property, or generation fails (no stale entries).
OVERRIDES: dict[tuple[str, str], Override] = {
    # Number custom fields hold decimals (they have a ``precision``); the spec types
    # these story fields as integer.
    ("StoryResponse", "old_number_value"): {"type": "number"},
    ("StoryResponse", "new_number_value"): {"type": "number"},
}

# --------------------------------------------------------------------------------------
# Knobs.
# --------------------------------------------------------------------------------------

#: Depth 0 is the record, 1 its properties, 2 the properties of those, ...
#: Resources at this depth or deeper are reduced to their Compact form.
COMPACT_FROM_DEPTH = 2
#: Objects at this depth or deeper are emitted free-form (no ``properties``).
MAX_DEPTH = 4
#: Keep the comma-joined ``opt_fields`` under this (it goes into the request URL).
OPT_FIELDS_MAX_CHARS = 6000
#: Properties kept when a resource without a Compact component is reduced.
RESOURCE_MINIMUM = ("gid", "resource_type", "name")
#: Components without a Compact form that keep more than the minimum when reduced.
#: Enum options: analysts group by colour, and ``enabled`` tells retired options apart.
REDUCED_EXTRA: dict[str, tuple[str, ...]] = {"EnumOption": ("color", "enabled")}
#: ``format`` values carried over; others (``uri``, ``email`` ...) are dropped so that a
#: target validating formats cannot reject a record for a cosmetic reason.
KEPT_FORMATS = frozenset({"date-time", "date"})
#: Type list used when the spec gives no usable type (never the case for the current
#: streams; kept so an untyped schema does not crash the generator).
ANY_TYPES = ("array", "boolean", "integer", "number", "object", "string")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO_ROOT / "spec" / "asana_oas.yaml"
DEFAULT_OUT = REPO_ROOT / "tap_asana_vl" / "schemas"
REF_PREFIX = "#/components/schemas/"


class SpecError(Exception):
    """The specification (or a table above) cannot be turned into schemas."""


# --------------------------------------------------------------------------------------
# Resolving $ref / allOf / oneOf / anyOf into one flat node.
# --------------------------------------------------------------------------------------


@dataclass
class Node:
    """A spec schema with ``$ref`` and the combinators resolved.

    ``None`` means "not declared", so that a later ``allOf`` entry overrides only what it
    declares.  ``properties`` and ``items`` hold *raw* spec schemas, resolved lazily
    (the spec is recursive, e.g. a task's ``parent`` is a task).
    """

    types: list[str] | None = None
    fmt: str | None = None
    properties: dict[str, Any] | None = None
    items: Any = None
    #: Outermost component this node was referenced as (e.g. ``UserBase``).
    component: str | None = None

    def merged_with(self, later: Node) -> Node:
        """Return ``self`` overlaid with ``later`` (later wins where it declares)."""
        properties = self.properties
        if later.properties is not None:
            # Union of properties; a property declared again replaces the earlier one.
            properties = {**(self.properties or {}), **later.properties}
        return Node(
            types=later.types if later.types is not None else self.types,
            fmt=later.fmt if later.fmt is not None else self.fmt,
            properties=properties,
            items=later.items if later.items is not None else self.items,
            component=self.component or later.component,
        )

    def json_types(self) -> list[str]:
        """Return the declared non-null JSON types, inferring object/array if needed."""
        declared = [t for t in self.types or () if t != "null"]
        if declared:
            return declared
        if self.properties is not None:
            return ["object"]
        if self.items is not None:
            return ["array"]
        return list(ANY_TYPES)


class Resolver:
    """Resolves spec schemas against ``components.schemas`` of one specification."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        """Keep a reference to the spec's component schemas."""
        try:
            self.components: Mapping[str, Any] = spec["components"]["schemas"]
        except (KeyError, TypeError) as exc:
            raise SpecError("the spec has no components.schemas") from exc

    def component(self, name: str) -> Any:
        """Return the raw component schema called ``name``."""
        if name not in self.components:
            raise SpecError(f"unknown component {name!r}")
        return self.components[name]

    def resolve(self, raw: Any, seen: tuple[str, ...] = ()) -> Node:
        """Flatten ``raw`` (a spec schema) into a :class:`Node`."""
        if not isinstance(raw, Mapping):
            raise SpecError(f"expected a schema object, got {raw!r}")
        node = Node()
        ref = raw.get("$ref")
        if ref is not None:
            if not isinstance(ref, str) or not ref.startswith(REF_PREFIX):
                raise SpecError(f"only local component refs are supported, got {ref!r}")
            name = ref[len(REF_PREFIX) :]
            if name in seen:
                raise SpecError(f"$ref cycle without properties: {' -> '.join(seen)}")
            node = self.resolve(self.component(name), (*seen, name))
            # The outermost name wins: ``UserBase`` (-> ``UserCompact``) stays UserBase.
            node = replace(node, component=name)
        for part in raw.get("allOf") or ():
            node = node.merged_with(self.resolve(part, seen))
        alternatives = [*(raw.get("oneOf") or ()), *(raw.get("anyOf") or ())]
        if alternatives:
            node = node.merged_with(self._union(alternatives, seen))
        # Keywords next to $ref/allOf (e.g. ``format``) apply to the merged result.
        return node.merged_with(self._own(raw))

    def _union(self, alternatives: list[Any], seen: tuple[str, ...]) -> Node:
        """Resolve ``oneOf``/``anyOf``.

        Choice: the union of the alternatives' types.
        Structure is only kept when every alternative is the same single type (object
        properties are then unioned as in ``allOf``; array items come from the first
        alternative); otherwise the result is free-form (no ``properties``/``items``),
        because a JSON schema type list cannot say "these properties if an object".
        None of the current streams' components uses oneOf/anyOf.
        """
        nodes = [self.resolve(alt, seen) for alt in alternatives]
        types: list[str] = []
        for node in nodes:
            types.extend(t for t in node.json_types() if t not in types)
        formats = {node.fmt for node in nodes}
        result = Node(
            types=types,
            fmt=formats.pop() if len(formats) == 1 else None,
        )
        if types == ["object"]:
            properties: dict[str, Any] = {}
            for node in nodes:
                properties.update(node.properties or {})
            result.properties = properties or None
        elif types == ["array"]:
            result.items = nodes[0].items
        return result

    @staticmethod
    def _own(raw: Mapping[str, Any]) -> Node:
        """Return the keywords ``raw`` itself declares (ignoring combinators)."""
        node = Node()
        declared = raw.get("type")
        if isinstance(declared, str):
            node.types = [declared]
        elif isinstance(declared, list):  # OpenAPI 3.1 style, for robustness
            node.types = [str(t) for t in declared if t != "null"]
        if isinstance(raw.get("format"), str):
            node.fmt = raw["format"]
        if isinstance(raw.get("properties"), Mapping):
            node.properties = dict(raw["properties"])
        if raw.get("items") is not None:
            node.items = raw["items"]
        return node


# --------------------------------------------------------------------------------------
# Building JSON schemas.
# --------------------------------------------------------------------------------------


def compact_name(component: str) -> str:
    """Return the Compact counterpart of a component name (``TaskResponse`` -> ...)."""
    return re.sub(r"(Response|Base|Compact)$", "", component) + "Compact"


def is_resource(node: Node) -> bool:
    """Return whether ``node`` describes an Asana resource (has gid and resource_type)."""
    return node.properties is not None and {"gid", "resource_type"} <= node.properties.keys()


@dataclass
class Builder:
    """Turns resolved spec nodes into JSON schema fragments for one stream."""

    resolver: Resolver
    #: Reductions the depth rule made, as ``"From->To"`` (for the report).
    reductions: set[str] = field(default_factory=set)

    def record(self, component: str) -> dict[str, Any]:
        """Return the JSON schema of a record described by ``component``."""
        node = self.resolver.resolve({"$ref": REF_PREFIX + component})
        if not node.properties:
            raise SpecError(f"{component} has no properties")
        return {
            "type": "object",
            "properties": self.properties(node.properties, depth=1),
        }

    def properties(self, raw_properties: Mapping[str, Any], depth: int) -> dict[str, Any]:
        """Convert the properties of an object, sorted by name, at ``depth``."""
        converted = {}
        for name in sorted(raw_properties):
            node = self.resolver.resolve(raw_properties[name])
            converted[name] = self.value(node, depth)
        return converted

    def value(self, node: Node, depth: int) -> dict[str, Any]:
        """Convert one value (a property, or array items) at ``depth``; always nullable."""
        types = node.json_types()
        schema: dict[str, Any] = {"type": [*types, "null"]}
        if node.fmt in KEPT_FORMATS and "string" in types:
            schema["format"] = node.fmt
        if types == ["array"] and node.items is not None:
            # Array items sit at the same depth as the array itself.
            schema["items"] = self.value(self.resolver.resolve(node.items), depth)
        elif types == ["object"]:
            properties = self.object_properties(node, depth)
            if properties:
                schema["properties"] = properties
        return schema

    def object_properties(self, node: Node, depth: int) -> dict[str, Any] | None:
        """Return the converted properties of an object at ``depth`` (None: free-form)."""
        if not node.properties or depth >= MAX_DEPTH:
            return None
        raw_properties = node.properties
        if depth >= COMPACT_FROM_DEPTH and is_resource(node):
            raw_properties = self.compact_properties(node)
        return self.properties(raw_properties, depth + 1)

    def compact_properties(self, node: Node) -> dict[str, Any]:
        """Return the raw properties of the Compact form of a resource ``node``."""
        properties = node.properties or {}
        if node.component is not None:
            name = compact_name(node.component)
            if name in self.resolver.components:
                compact = self.resolver.resolve({"$ref": REF_PREFIX + name})
                if compact.properties:
                    if name != node.component:
                        self.reductions.add(f"{node.component}->{name}")
                    return compact.properties
        # No Compact component (e.g. EnumOption, inline objects): keep the minimum.
        keep = (*RESOURCE_MINIMUM, *REDUCED_EXTRA.get(node.component or "", ()))
        kept = {k: v for k, v in properties.items() if k in keep}
        if kept.keys() != properties.keys():
            self.reductions.add(f"{node.component or 'inline'}->{{{','.join(sorted(kept))}}}")
        return kept


def property_at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """Return the property at dotted ``path`` of a record schema (array items transparent)."""
    target: dict[str, Any] = schema
    for part in path.split("."):
        while "items" in target:
            target = target["items"]
        if part not in target.get("properties", {}):
            raise SpecError(f"path {path!r} matches no property")
        target = target["properties"][part]
    return target


def apply_override(schema: dict[str, Any], path: str, override: Override) -> None:
    """Apply ``override`` to the property at dotted ``path`` of a record schema."""
    target = property_at(schema, path)
    target["type"] = [override["type"], "null"]
    target.pop("format", None)


def documented_fields(spec: Mapping[str, Any], endpoint: str) -> frozenset[str]:
    """The dotted field paths the GET operation at ``endpoint`` documents it can return."""
    try:
        operation = spec["paths"][endpoint]["get"]
    except (KeyError, TypeError) as exc:
        raise SpecError(f"the spec has no GET {endpoint}") from exc
    for parameter in operation.get("parameters") or ():
        if isinstance(parameter, Mapping) and parameter.get("name") == "opt_fields":
            enum = parameter.get("schema", {}).get("items", {}).get("enum") or ()
            return frozenset(enum) - PAGINATION_FIELDS
    raise SpecError(f"GET {endpoint} documents no opt_fields")


def keep_documented(
    properties: dict[str, Any], documented: frozenset[str], prefix: str = ""
) -> None:
    """Drop (in place) the properties an endpoint does not document returning.

    A nested object whose own fields the endpoint does not enumerate is returned whole,
    so its generated properties stay.
    """
    if prefix and not any(path.startswith(prefix) for path in documented):
        return
    for name in list(properties):
        path = f"{prefix}{name}"
        if name not in ALWAYS_RETURNED and path not in documented:
            del properties[name]
            continue
        inner = properties[name].get("items", properties[name])
        if "properties" in inner:
            keep_documented(inner["properties"], documented, f"{path}.")


def opt_fields(schema: Mapping[str, Any], skip: frozenset[str] = frozenset()) -> list[str]:
    """Return the dotted ``opt_fields`` paths of a schema, as the tap computes them.

    An object with ``properties`` (or an array of such objects) contributes the paths of
    its leaves; anything else contributes its own path.  Top-level names in ``skip``
    (the tap's extra properties) are left out.
    """

    def walk(properties: Mapping[str, Any], prefix: str) -> Iterator[str]:
        for name, prop in properties.items():
            if not prefix and name in skip:
                continue
            inner = prop.get("items", prop)
            if inner.get("properties"):
                yield from walk(inner["properties"], f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    return list(walk(schema.get("properties", {}), ""))


@dataclass
class StreamResult:
    """A generated schema plus numbers for the report."""

    schema: dict[str, Any]
    top_level: int
    opt_fields: list[str]
    reductions: set[str]

    @property
    def opt_fields_chars(self) -> int:
        """Length of the comma-joined ``opt_fields`` string."""
        return len(",".join(self.opt_fields))


def generate(spec: Mapping[str, Any]) -> dict[str, StreamResult]:
    """Generate the schema of every stream in :data:`STREAMS` from a loaded spec."""
    resolver = Resolver(spec)
    results: dict[str, StreamResult] = {}
    for stream, component in STREAMS.items():
        builder = Builder(resolver)
        schema = builder.record(component)
        keep_documented(schema["properties"], documented_fields(spec, ENDPOINTS[stream]))
        for name in NEVER_SET.get(stream, ()):
            del schema["properties"][name]
        spec_names = set(schema["properties"])
        extras = {
            **EXTRA_PROPERTIES.get(stream, {}),
            **(DELETED_AT if stream in TOMBSTONED else {}),
        }
        clash = spec_names & extras.keys()
        if clash:
            raise SpecError(f"{stream}: extra properties shadow spec ones: {sorted(clash)}")
        properties = {**schema["properties"], **copy.deepcopy(extras)}
        schema["properties"] = {name: properties[name] for name in sorted(properties)}
        for (target, path), override in OVERRIDES.items():
            if target in (stream, component):
                apply_override(schema, path, override)
        # The record's key is the one thing that is never null.
        for key in ("gid", *EXTRA_KEYS.get(stream, ())):
            schema["properties"][key]["type"] = [
                t for t in schema["properties"][key]["type"] if t != "null"
            ]
        fields = opt_fields(schema, skip=frozenset(extras))
        result = StreamResult(schema, len(schema["properties"]), fields, builder.reductions)
        if result.opt_fields_chars > OPT_FIELDS_MAX_CHARS:
            raise SpecError(
                f"{stream}: opt_fields is {result.opt_fields_chars} characters "
                f"(limit {OPT_FIELDS_MAX_CHARS}); tighten COMPACT_FROM_DEPTH/MAX_DEPTH"
            )
        results[stream] = result
    for target, _ in OVERRIDES:
        if target not in STREAMS and target not in STREAMS.values():
            raise SpecError(f"override for unknown stream or component {target!r}")
    results.update(derived_results())
    return results


# --------------------------------------------------------------------------------------
# Derived tables (issue #16): rows the tap builds from fields of records it already
# fetched (a task's custom_fields, tags, followers, dependencies; a story's old_/new_
# fields), so they cost no request. Not Asana objects, so not from the spec: the columns
# are declared here, and generated like the others (keys never null, all else nullable).
# --------------------------------------------------------------------------------------

#: Column kinds of derived tables -> JSON schema (before ``null`` is added).
DERIVED_KINDS: dict[str, dict[str, Any]] = {
    "string": {"type": ["string"]},
    "number": {"type": ["number"]},
    "boolean": {"type": ["boolean"]},
    "date": {"type": ["string"], "format": "date"},
    "date-time": {"type": ["string"], "format": "date-time"},
    "strings": {"type": ["array"], "items": {"type": ["string"]}},
}
#: Soft-delete marker (the Singer convention targets such as target-postgres load as is):
#: set on a row the tap knows no longer holds (see the README, "Derived tables").
DERIVED_DELETED_AT = {"_sdc_deleted_at": "date-time"}
_CUSTOM_FIELD_VALUE_COLUMNS = {
    "custom_field_gid": "string",
    "custom_field_name": "string",
    "type": "string",
    "text_value": "string",
    "number_value": "number",
    "enum_option_gid": "string",
    "enum_option_name": "string",
    "multi_enum_option_gids": "strings",
    "multi_enum_option_names": "strings",
    "date_value": "date",
    "date_time_value": "date-time",
    "people_gids": "strings",
    "display_value": "string",
    **DERIVED_DELETED_AT,
}
#: Derived stream -> (primary key, {column: kind}).
DERIVED_STREAMS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "task_custom_field_values": (
        ("task_gid", "custom_field_gid"),
        {"task_gid": "string", **_CUSTOM_FIELD_VALUE_COLUMNS, "modified_at": "date-time"},
    ),
    "project_custom_field_values": (
        ("project_gid", "custom_field_gid"),
        {"project_gid": "string", **_CUSTOM_FIELD_VALUE_COLUMNS, "modified_at": "date-time"},
    ),
    "task_tags": (
        ("task_gid", "tag_gid"),
        {
            "task_gid": "string",
            "tag_gid": "string",
            "tag_name": "string",
            "task_modified_at": "date-time",
            **DERIVED_DELETED_AT,
        },
    ),
    "task_followers": (
        ("task_gid", "user_gid"),
        {
            "task_gid": "string",
            "user_gid": "string",
            "user_name": "string",
            "task_modified_at": "date-time",
            **DERIVED_DELETED_AT,
        },
    ),
    "task_dependencies": (
        ("task_gid", "depends_on_gid"),
        {
            "task_gid": "string",
            "depends_on_gid": "string",
            "task_modified_at": "date-time",
            **DERIVED_DELETED_AT,
        },
    ),
    "task_history": (
        ("story_gid",),
        {
            "story_gid": "string",
            "task_gid": "string",
            "created_at": "date-time",
            "created_by_gid": "string",
            "resource_subtype": "string",
            "field": "string",
            "custom_field_gid": "string",
            "project_gid": "string",
            "old_value": "string",
            "new_value": "string",
            "old_gid": "string",
            "new_gid": "string",
            "old_number_value": "number",
            "new_number_value": "number",
            "old_date_value": "date",
            "new_date_value": "date",
            "old_date_time_value": "date-time",
            "new_date_time_value": "date-time",
        },
    ),
}


def derived_schema(keys: tuple[str, ...], columns: Mapping[str, str]) -> dict[str, Any]:
    """The JSON schema of a derived table: keys are non-null strings, all else nullable."""
    properties: dict[str, Any] = {}
    for name in sorted(columns):
        schema = copy.deepcopy(DERIVED_KINDS[columns[name]])
        if name not in keys:
            schema["type"].append("null")
            if "items" in schema:
                schema["items"]["type"].append("null")
        properties[name] = schema
    return {"type": "object", "properties": properties}


def derived_results() -> dict[str, StreamResult]:
    """The derived tables' schemas, as results (no ``opt_fields``: never requested)."""
    results = {}
    for stream, (keys, columns) in DERIVED_STREAMS.items():
        missing = set(keys) - columns.keys()
        if missing:
            raise SpecError(f"{stream}: key columns {sorted(missing)} are not declared")
        schema = derived_schema(keys, columns)
        results[stream] = StreamResult(schema, len(schema["properties"]), [], set())
    return results


def render(schema: Mapping[str, Any]) -> str:
    """Serialise a schema the way it is committed (2-space indent, final newline)."""
    return json.dumps(schema, indent=2) + "\n"


# --------------------------------------------------------------------------------------
# Loading, writing, checking.
# --------------------------------------------------------------------------------------


def load_spec(path: Path) -> dict[str, Any]:
    """Load the OpenAPI YAML (with the C loader when PyYAML has it)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open(encoding="utf-8") as handle:
        spec = yaml.load(handle, Loader=loader)  # both loaders are safe loaders
    if not isinstance(spec, dict):
        raise SpecError(f"{path} is not an OpenAPI document")
    return spec


def _flatten(schema: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Map each dotted property path of ``schema`` to its own keywords (for diffs)."""
    out: dict[str, str] = {}
    for name, prop in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        inner = prop
        own = {k: v for k, v in prop.items() if k not in ("properties", "items")}
        if "items" in prop:
            inner = prop["items"]
            item_own = {k: v for k, v in inner.items() if k not in ("properties", "items")}
            own["items"] = item_own
        out[path] = json.dumps(own, sort_keys=True)
        if isinstance(inner, Mapping):
            out.update(_flatten(inner, f"{path}."))
    return out


def describe_difference(old_text: str, new_schema: Mapping[str, Any], limit: int = 15) -> list[str]:
    """Summarise how a committed schema differs from the generated one."""
    try:
        old_schema = json.loads(old_text)
    except json.JSONDecodeError as exc:
        return [f"    not valid JSON ({exc})"]
    old, new = _flatten(old_schema), _flatten(new_schema)
    lines = [f"    + {path}  {new[path]}" for path in sorted(new.keys() - old.keys())]
    lines += [f"    - {path}" for path in sorted(old.keys() - new.keys())]
    lines += [
        f"    ~ {path}  {old[path]} -> {new[path]}"
        for path in sorted(old.keys() & new.keys())
        if old[path] != new[path]
    ]
    if not lines:
        lines = ["    same content, different formatting (key order/indent/newline)"]
    if len(lines) > limit:
        lines = [*lines[:limit], f"    ... and {len(lines) - limit} more"]
    return lines


def check(results: Mapping[str, StreamResult], out_dir: Path) -> list[str]:
    """Return a readable list of problems; empty when the files are up to date."""
    problems: list[str] = []
    for stream, result in results.items():
        path = out_dir / f"{stream}.json"
        if not path.exists():
            problems.append(f"{path}: missing")
            continue
        text = path.read_text(encoding="utf-8")
        if text != render(result.schema):
            problems.append(f"{path}: differs from the generated schema")
            problems.extend(describe_difference(text, result.schema))
    return problems


def report(results: Mapping[str, StreamResult]) -> None:
    """Print per-stream numbers (properties, opt_fields paths and length)."""
    print(f"{'stream':<12} {'props':>5} {'opt_fields':>10} {'chars':>6}  compact reductions")
    for stream, result in results.items():
        reductions = ", ".join(sorted(result.reductions)) or "-"
        print(
            f"{stream:<12} {result.top_level:>5} {len(result.opt_fields):>10} "
            f"{result.opt_fields_chars:>6}  {reductions}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spec",
        type=Path,
        default=DEFAULT_SPEC,
        help="Asana OpenAPI YAML (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="directory for <stream>.json (default: %(default)s)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the files differ from what would be generated",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Generate (or check) the schema files; return the process exit code."""
    args = parse_args(argv)
    if not args.spec.is_file():
        print(f"error: spec not found: {args.spec}", file=sys.stderr)
        return 2
    try:
        results = generate(load_spec(args.spec))
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report(results)
    if args.check:
        problems = check(results, args.out)
        if problems:
            print(
                "\nschemas are out of date; run scripts/generate_schemas.py "
                "(+ added by generation, - removed, ~ changed: on disk -> generated):",
                file=sys.stderr,
            )
            for line in problems:
                print(line, file=sys.stderr)
            return 1
        print(f"\n{len(results)} schemas in {args.out} are up to date")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for stream, result in results.items():
        path = args.out / f"{stream}.json"
        text = render(result.schema)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
