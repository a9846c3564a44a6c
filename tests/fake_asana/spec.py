"""What Asana's OpenAPI spec (vendored in spec/) documents for the GETs the fake serves.

Read at run time, through tests/spec_scopes.py, so the fake's rules are Asana's
documentation rather than a hand copy of it: the query parameters of an operation, the
top-level fields its ``opt_fields`` may name, the OAuth scope it requires and the scopes
some fields need. Parsing the spec takes about a second; :func:`load` does it once per
process (``FakeAsana.start`` calls it, so no request pays for it).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from tests import spec_scopes

#: Entries of an ``opt_fields`` enum that are pagination, not fields of the record.
_PAGINATION = frozenset({"offset", "path", "uri"})


def load() -> None:
    """Parse the spec now (it is cached for the process)."""
    spec_scopes.spec()


@cache
def _parameters(template: str) -> dict[str, dict[str, Any]]:
    """Query parameters of ``GET template`` by name (path-level ones included)."""
    spec = spec_scopes.spec()
    shared = spec["paths"][template].get("parameters", [])
    result = {}
    for parameter in [*shared, *spec_scopes.get_operation(template).get("parameters", [])]:
        if "$ref" in parameter:
            parameter = spec["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[-1]]
        if parameter["in"] == "query":
            result[parameter["name"]] = parameter
    return result


def documented_params(template: str) -> frozenset[str]:
    """The query parameters the spec lists for ``GET template``."""
    return frozenset(_parameters(template))


@cache
def documented_fields(template: str) -> frozenset[str]:
    """Top-level field names the operation's ``opt_fields`` enum lists."""
    parameter = _parameters(template).get("opt_fields")
    if parameter is None:
        return frozenset()  # e.g. GET /workspaces/{workspace_gid}/events has no opt_fields
    enum = parameter["schema"]["items"]["enum"]
    return frozenset(name.split(".")[0] for name in enum) - _PAGINATION


@cache
def required_scope(template: str) -> str | None:
    """The operation's OAuth scope; None: no granular scope (full permissions only)."""
    return spec_scopes.required_scope(template)


@cache
def field_scopes(resource_type: str) -> dict[str, tuple[str, ...]]:
    """Fields of ``resource_type`` that need scopes beyond the operation's.

    The spec tabulates them on the resource's single-object GET (``/tasks/{task_gid}``);
    Asana applies them wherever the resource is returned, and so does the fake.
    """
    suffix = "/{" + resource_type + "_gid}"
    for path in spec_scopes.spec()["paths"]:
        if path.endswith(suffix) and path.count("/") == 2:
            return spec_scopes.field_scopes(path)
    return {}


@cache
def scope_list() -> frozenset[str]:
    """The scopes the spec lists for OAuth apps."""
    return spec_scopes.scope_list()


def param_enum(template: str, name: str) -> tuple[str, ...]:
    """The values the spec lists for query parameter ``name`` of ``GET template``."""
    return tuple(_parameters(template)[name]["schema"].get("enum", ()))
