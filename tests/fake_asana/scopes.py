"""OAuth scopes in the fake: what an app may request and what a request needs.

The rules are Asana's spec (see ``spec.py``): the scope list, the scope each operation
requires (operations without one need full permissions) and the fields needing further
scopes. What Asana answers for a token that lacks a scope is not documented: the 403
messages below are our guess, and ``FakeAsana.scope_error_status`` can make them 401s (as
Airbyte reported "401s caused by tokens without read scopes").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache

from . import spec
from .dataset import COMPACT_FIELDS

#: Full access: a token with it (or a personal access token) may call anything.
FULL_ACCESS = "default"
#: What a token gets when no scope was requested.
FULL_ACCESS_SCOPES = frozenset({FULL_ACCESS})

MISSING_SCOPE = (
    "Forbidden: this token was not granted the OAuth scope `{scope}`, which this request requires."
)
FULL_PERMISSIONS_ONLY = (
    "Forbidden: this request has no OAuth scope; it needs a token with full permissions "
    "(the `default` scope)."
)
MISSING_FIELD_SCOPE = (
    "Forbidden: opt_fields `{field}` requires the OAuth scope(s) `{scopes}`, which this "
    "token was not granted."
)


@cache
def known_scopes() -> frozenset[str]:
    """The spec's scope list plus the scopes it names only in field tables of the
    resources the fake serves (``project_sections:read``, ``time_periods:read``): the
    fake lets apps register for those (whether Asana does is unknown)."""
    tables = [spec.field_scopes(resource) for resource in COMPACT_FIELDS]
    in_tables = {s for table in tables for needed in table.values() for s in needed}
    return spec.scope_list() | in_tables


def parse_scope_param(value: str | None) -> list[str]:
    """The scopes of an authorize request (space separated; none means ``default``)."""
    scopes = list(dict.fromkeys((value or "").split()))
    return scopes or [FULL_ACCESS]


def authorize_error(
    requested: Sequence[str], registered: frozenset[str] | None
) -> dict[str, str] | None:
    """The ``error`` redirect for an authorize request, or None when it is allowed.

    ``registered`` is what the app was registered for (None: full permissions, which
    may request anything known).
    """
    unknown = [s for s in requested if s not in known_scopes()]
    if unknown:
        return {
            "error": "invalid_scope",
            "error_description": (
                f"invalid_scope: The requested scopes `{' '.join(unknown)}` are not valid."
            ),
        }
    forbidden = [s for s in requested if registered is not None and s not in registered]
    if forbidden:
        # The wording observed from Asana (public issues).
        return {
            "error": "forbidden_scopes",
            "error_description": (
                "forbidden_scopes: Your app is not allowed to request user authorization "
                f"for `{' '.join(forbidden)}` scopes."
            ),
        }
    return None


def denial(
    granted: frozenset[str] | None, template: str, resource_type: str, fields: Iterable[str]
) -> str | None:
    """Why a token with ``granted`` scopes may not make this request (None: it may).

    ``granted`` None (personal access tokens) or holding ``default`` is full access.
    ``template`` is the operation's spec path, ``resource_type`` what it returns and
    ``fields`` the top-level names in ``opt_fields``.
    """
    if granted is None or FULL_ACCESS in granted:
        return None
    scope = spec.required_scope(template)
    if scope is None:
        return FULL_PERMISSIONS_ONLY
    if scope not in granted:
        return MISSING_SCOPE.format(scope=scope)
    needs = spec.field_scopes(resource_type)
    for name in fields:
        missing = [s for s in needs.get(name, ()) if s not in granted]
        if missing:
            return MISSING_FIELD_SCOPE.format(field=name, scopes=" ".join(missing))
    return None
