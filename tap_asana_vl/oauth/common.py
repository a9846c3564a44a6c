"""What every part of ``tap-asana-vl-auth`` shares: names, exit codes, errors, scopes."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tap_asana_vl.scopes import AUTH_COMMAND, FULL_ACCESS, SECTIONS_SCOPE

__all__ = [
    "DEFAULT_SCOPES",
    "DEFAULT_SCOPE_PURPOSES",
    "FULL_ACCESS_SCOPE",
    "FULL_ACCESS_STREAMS",
    "PROG",
    "SECTIONS_SCOPE",
    "AuthFailedError",
    "CliError",
    "ScopesRefusedError",
    "UsageError",
    "say",
    "stdin_is_tty",
]

PROG = AUTH_COMMAND

ENV_CLIENT_ID = "TAP_ASANA_VL_CLIENT_ID"
ENV_CLIENT_SECRET = "TAP_ASANA_VL_CLIENT_SECRET"  # noqa: S105 - a variable name
ENV_REFRESH_TOKEN = "TAP_ASANA_VL_REFRESH_TOKEN"  # noqa: S105 - a variable name
ENV_OAUTH_SCOPES = "TAP_ASANA_VL_OAUTH_SCOPES"
# The personal access token: the tap refuses to run when it is set next to OAuth.
ENV_ACCESS_TOKEN = "TAP_ASANA_VL_ACCESS_TOKEN"  # noqa: S105 - a variable name

# Read scopes requested by default, each with what the tap reads with it.  All of
# them are in the scope list of Asana's OpenAPI spec (tests check that against
# spec/asana_oas.yaml, and that every stream's scope is here): Asana refuses the whole
# authorization when one requested scope is not registered for the app, so a doubtful
# scope here would block every sign-in.
DEFAULT_SCOPE_PURPOSES: dict[str, str] = {
    "workspaces:read": "workspaces (every other stream starts from them)",
    "users:read": "users",
    "projects:read": "projects, project_custom_field_settings",
    "tasks:read": "tasks, subtasks",
    "stories:read": "stories, subtask_stories",
    "time_tracking_entries:read": "time_tracking_entries, tasks.actual_time_minutes",
    "teams:read": "teams, projects.team",
    "team_memberships:read": "team_memberships",
    "tags:read": "tags",
    "custom_fields:read": "custom_fields",
    "attachments:read": "attachments",
    "portfolios:read": "portfolios, portfolio_items",
    "goals:read": "goals",
}
DEFAULT_SCOPES: tuple[str, ...] = tuple(DEFAULT_SCOPE_PURPOSES)
# SECTIONS_SCOPE (project_sections:read): Asana's docs require it for the task field
# `memberships` (with projects:read), but it is not in the spec's scope list: an app
# may not be able to register it, and then requesting it gets the whole authorization
# refused.  Hence opt-in (--sections-scope).
# Streams whose endpoints have no granular scope in Asana's spec: only a token with
# full permissions (--full-access) can read them.
FULL_ACCESS_STREAMS: tuple[str, ...] = ("sections", "project_memberships", "status_updates")
# Full access; Asana grants it only to apps registered with full permissions.
FULL_ACCESS_SCOPE = FULL_ACCESS

EXIT_OK = 0
EXIT_AUTH_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error reported as one line on stderr, without a traceback."""

    exit_code = EXIT_AUTH_FAILED


class UsageError(CliError):
    """Bad options or configuration (exit code 2)."""

    exit_code = EXIT_USAGE


class AuthFailedError(CliError):
    """The authorization did not succeed (exit code 1)."""

    exit_code = EXIT_AUTH_FAILED


class ScopesRefusedError(AuthFailedError):
    """Asana refused requested scopes (``invalid_scope`` / ``forbidden_scopes``)."""

    def __init__(self, message: str, refused: Sequence[str]) -> None:
        """Keep the scope names Asana's message gave (may be empty)."""
        super().__init__(message)
        self.refused = list(refused)


def say(message: str = "") -> None:
    """Print a message for the user on stderr (stdout is only for --print-token)."""
    print(message, file=sys.stderr, flush=True)


def stdin_is_tty() -> bool:
    """Whether stdin is an interactive terminal (only then does the command ask)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        return False
