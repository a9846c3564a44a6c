"""What Asana's vendored OpenAPI spec says about OAuth scopes (for tests).

Read from spec/asana_oas.yaml: the scope list, each GET operation's required scope
(``<b>Required scope: </b><code>X</code>`` at the start of its description; None when
absent, i.e. full permissions only) and the field tables of scopes some fields need.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

SPEC = Path(__file__).resolve().parent.parent / "spec" / "asana_oas.yaml"
_REQUIRED = re.compile(r"\s*<b>Required scope: </b><code>([^<]*)</code>")
_FIELD_ROW = re.compile(r"<td><code>([^<]+)</code></td>\s*<td>(.*?)</td>", re.DOTALL)
_PARAM = re.compile(r"\{[^}]*\}")


@cache
def spec() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=loader)  # a safe loader


def scope_list() -> frozenset[str]:
    flows = spec()["components"]["securitySchemes"]["oauth2"]["flows"]
    return frozenset(flows["authorizationCode"]["scopes"])


def _normal(path: str) -> str:
    return _PARAM.sub("{}", path)


def get_operation(path: str) -> dict[str, Any]:
    """The spec's GET operation for ``path`` (path parameter names may differ)."""
    wanted = _normal(path)
    for candidate, item in spec()["paths"].items():
        if _normal(candidate) == wanted and "get" in item:
            return item["get"]
    raise KeyError(path)


def has_get(path: str) -> bool:
    try:
        get_operation(path)
    except KeyError:
        return False
    return True


def required_scope(path: str) -> str | None:
    """The operation's granular scope; None: full permissions only."""
    match = _REQUIRED.match(get_operation(path).get("description", ""))
    return match.group(1) if match else None


def field_scopes(path: str) -> dict[str, tuple[str, ...]]:
    """The operation's table of fields that need further scopes."""
    description = get_operation(path).get("description", "")
    return {
        name: tuple(re.findall(r"<code>([^<]+)</code>", cell))
        for name, cell in _FIELD_ROW.findall(description)
    }
