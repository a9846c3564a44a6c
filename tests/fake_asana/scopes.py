"""OAuth scopes in the fake: what an app may request and what each API operation needs.

Written by hand from Asana's OpenAPI spec (spec/asana_oas.yaml):
``components.securitySchemes.oauth2`` lists the scopes; each operation's description
starts with ``<b>Required scope: </b><code>X</code>`` (operations without it have no
granular scope: only a token with full permissions may call them); some operations
have a table of fields that need further scopes. ``tests/test_fake_asana_scopes.py``
checks these tables against the spec. The fake never imports the tap.

What Asana answers for a token that lacks a scope is not documented (Asana's docs: OAuth): the
403 messages below are our guess, and ``FakeAsana.scope_error_status`` can make them
401s (as Airbyte reported "401s caused by tokens without read scopes").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Full access: a token with it (or a personal access token) may call anything.
FULL_ACCESS = "default"
#: What a token gets when no scope was requested.
FULL_ACCESS_SCOPES = frozenset({FULL_ACCESS})

#: ``components.securitySchemes.oauth2.flows.authorizationCode.scopes`` of the spec.
SPEC_SCOPES = frozenset(
    {
        "attachments:delete",
        "attachments:read",
        "attachments:write",
        "custom_fields:read",
        "custom_fields:write",
        "default",
        "email",
        "goals:read",
        "jobs:read",
        "ooo_entries:delete",
        "ooo_entries:read",
        "ooo_entries:write",
        "openid",
        "portfolios:read",
        "portfolios:write",
        "profile",
        "project_portfolio_settings:read",
        "project_portfolio_settings:write",
        "project_templates:read",
        "projects:delete",
        "projects:read",
        "projects:write",
        "roles:delete",
        "roles:read",
        "roles:write",
        "stories:read",
        "stories:write",
        "tags:read",
        "tags:write",
        "task_custom_types:read",
        "task_templates:read",
        "tasks:delete",
        "tasks:read",
        "tasks:write",
        "team_memberships:read",
        "teams:read",
        "time_tracking_categories:delete",
        "time_tracking_categories:read",
        "time_tracking_categories:write",
        "time_tracking_entries:read",
        "timesheet_approval_statuses:read",
        "timesheet_approval_statuses:write",
        "users:read",
        "webhooks:delete",
        "webhooks:read",
        "webhooks:write",
        "workspaces:read",
    }
)

#: Scopes the spec names only in field tables. The fake treats them as real scopes an
#: app can be registered for (whether Asana lets apps register them is unknown).
FIELD_ONLY_SCOPES = frozenset({"project_sections:read", "time_periods:read"})

KNOWN_SCOPES = SPEC_SCOPES | FIELD_ONLY_SCOPES


@dataclass(frozen=True)
class Operation:
    """One GET the fake serves: its spec path, required scope and resource type."""

    path: str
    scope: str | None  # None: no granular scope, full permissions only
    resource: str


#: Every GET route of the fake. Path parameters are named as in the spec.
OPERATIONS: tuple[Operation, ...] = (
    Operation("/workspaces", "workspaces:read", "workspace"),
    Operation("/workspaces/{workspace_gid}", "workspaces:read", "workspace"),
    Operation("/workspaces/{workspace_gid}/projects", "projects:read", "project"),
    Operation("/workspaces/{workspace_gid}/tags", "tags:read", "tag"),
    Operation("/workspaces/{workspace_gid}/teams", "teams:read", "team"),
    Operation("/workspaces/{workspace_gid}/custom_fields", "custom_fields:read", "custom_field"),
    Operation("/workspaces/{workspace_gid}/tasks/search", "tasks:read", "task"),
    Operation("/organizations/{workspace_gid}/teams", "teams:read", "team"),
    Operation("/users", "users:read", "user"),
    Operation("/users/{user_gid}", "users:read", "user"),
    Operation("/projects", "projects:read", "project"),
    Operation("/projects/{project_gid}", "projects:read", "project"),
    Operation("/projects/{project_gid}/tasks", "tasks:read", "task"),
    Operation("/projects/{project_gid}/sections", None, "section"),
    Operation("/projects/{project_gid}/project_memberships", None, "project_membership"),
    Operation(
        "/projects/{project_gid}/custom_field_settings", "projects:read", "custom_field_setting"
    ),
    Operation("/tasks", "tasks:read", "task"),
    Operation("/tasks/{task_gid}", "tasks:read", "task"),
    Operation("/tasks/{task_gid}/stories", "stories:read", "story"),
    Operation("/tasks/{task_gid}/subtasks", "tasks:read", "task"),
    Operation(
        "/tasks/{task_gid}/time_tracking_entries",
        "time_tracking_entries:read",
        "time_tracking_entry",
    ),
    Operation("/stories/{story_gid}", "stories:read", "story"),
    Operation("/tags", "tags:read", "tag"),
    Operation("/tags/{tag_gid}", "tags:read", "tag"),
    Operation("/teams/{team_gid}", "teams:read", "team"),
    Operation("/teams/{team_gid}/team_memberships", "team_memberships:read", "team_membership"),
    Operation("/teams/{team_gid}/projects", "projects:read", "project"),
    Operation("/team_memberships", "team_memberships:read", "team_membership"),
    Operation(
        "/team_memberships/{team_membership_gid}", "team_memberships:read", "team_membership"
    ),
    Operation("/sections/{section_gid}", None, "section"),
    Operation("/project_memberships/{project_membership_gid}", None, "project_membership"),
    Operation("/attachments", "attachments:read", "attachment"),
    Operation("/attachments/{attachment_gid}", "attachments:read", "attachment"),
    Operation("/portfolios", "portfolios:read", "portfolio"),
    Operation("/portfolios/{portfolio_gid}", "portfolios:read", "portfolio"),
    Operation("/portfolios/{portfolio_gid}/items", "portfolios:read", "project"),
    Operation("/status_updates", None, "status_update"),
    Operation("/status_updates/{status_update_gid}", None, "status_update"),
    Operation("/goals", "goals:read", "goal"),
    Operation("/goals/{goal_gid}", "goals:read", "goal"),
    Operation(
        "/time_tracking_entries/{time_tracking_entry_gid}",
        "time_tracking_entries:read",
        "time_tracking_entry",
    ),
    Operation("/custom_fields/{custom_field_gid}", "custom_fields:read", "custom_field"),
)

#: Routes the fake serves that the current spec no longer lists (legacy aliases).
NOT_IN_SPEC = frozenset({"/organizations/{workspace_gid}/teams"})

#: Fields needing scopes beyond the operation's, per resource type (the spec's field
#: tables, e.g. GET /tasks/{task_gid}). Applied wherever the resource is returned.
FIELD_SCOPES: dict[str, dict[str, tuple[str, ...]]] = {
    "task": {
        "memberships": ("projects:read", "project_sections:read"),
        "actual_time_minutes": ("time_tracking_entries:read",),
    },
    "project": {"team": ("teams:read",)},
    "goal": {"time_period": ("time_periods:read",)},
    "story": {"previews": ("attachments:read",), "attachments": ("attachments:read",)},
    "team_membership": {"team": ("teams:read",)},
}

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

_PARAM = re.compile(r"^\{[^}]+\}$")


def find_operation(parts: Sequence[str]) -> Operation | None:
    """The operation whose path matches ``parts`` (path segments after /api/1.0)."""
    for operation in OPERATIONS:
        template = [p for p in operation.path.split("/") if p]
        if len(template) == len(parts) and all(
            _PARAM.match(t) or t == p for t, p in zip(template, parts, strict=True)
        ):
            return operation
    return None


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
    unknown = [s for s in requested if s not in KNOWN_SCOPES]
    if unknown:
        return {
            "error": "invalid_scope",
            "error_description": (
                f"invalid_scope: The requested scopes `{' '.join(unknown)}` are not valid."
            ),
        }
    if registered is None:
        return None
    forbidden = [s for s in requested if s not in registered]
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
    granted: frozenset[str] | None, parts: Sequence[str], fields: Iterable[str]
) -> str | None:
    """Why a token with ``granted`` scopes may not make this request (None: it may).

    ``granted`` None (personal access tokens) or holding ``default`` is full access.
    ``fields`` are the top-level names in ``opt_fields``.
    """
    if granted is None or FULL_ACCESS in granted:
        return None
    operation = find_operation(parts)
    if operation is None:
        return None  # no such route: the router answers 404
    if operation.scope is None:
        return FULL_PERMISSIONS_ONLY
    if operation.scope not in granted:
        return MISSING_SCOPE.format(scope=operation.scope)
    needs = FIELD_SCOPES.get(operation.resource, {})
    for name in fields:
        missing = [s for s in needs.get(name, ()) if s not in granted]
        if missing:
            return MISSING_FIELD_SCOPE.format(field=name, scopes=" ".join(missing))
    return None
