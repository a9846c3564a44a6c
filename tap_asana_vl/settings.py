"""The tap's settings: their schema and defaults, and the checks JSON Schema cannot express.

``SETTINGS_SCHEMA`` is the tap's ``config_jsonschema``; ``meltano.yml`` declares the same
settings (tests/test_meltano_settings.py keeps them equal). Defaults live here only: the
SDK fills them into the config.
"""

from __future__ import annotations

import re
import typing as t
from urllib.parse import urlparse

from singer_sdk import typing as th

from tap_asana_vl import asana_urls
from tap_asana_vl.auth import DEFAULT_OAUTH_TOKEN_URL, is_loopback_host
from tap_asana_vl.redaction import redact
from tap_asana_vl.timestamps import parse_timestamp

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

# Settings come from TAP_ASANA_VL_<SETTING> with --config ENV (the SDK's naming).
ENV_PREFIX = "TAP_ASANA_VL_"
OAUTH_SETTINGS = ("client_id", "client_secret", "refresh_token")

DEFAULT_PAGE_SIZE = 100  # Asana's maximum
DEFAULT_MAX_REQUESTS_PER_MINUTE = 1500  # Asana's quota on paid plans
# Asana allows 50 concurrent reads per token. The tap keeps only about rate * latency
# in flight (concurrency.py: 14 at 1,500/min and 300 ms); the setting caps that.
MAX_CONCURRENT_REQUESTS = 50
DEFAULT_MAX_CONCURRENT_REQUESTS = MAX_CONCURRENT_REQUESTS
DEFAULT_MAX_OUTAGE_SECONDS = 120
DEFAULT_MAX_RETRIES = 8
DEFAULT_REQUEST_TIMEOUT = 300
DEFAULT_STATE_INTERVAL_SECONDS = 60

SETTINGS_SCHEMA: dict[str, t.Any] = th.PropertiesList(
    th.Property(
        "access_token",
        th.StringType,
        secret=True,
        title="Personal access token",
        description=("An Asana personal access token. Use this or the three OAuth settings."),
    ),
    th.Property(
        "client_id",
        th.StringType,
        title="OAuth client ID",
        description="Client ID of your Asana OAuth app (OAuth mode).",
    ),
    th.Property(
        "client_secret",
        th.StringType,
        secret=True,
        title="OAuth client secret",
        description="Client secret of your Asana OAuth app (OAuth mode).",
    ),
    th.Property(
        "refresh_token",
        th.StringType,
        secret=True,
        title="OAuth refresh token",
        description=(
            "Long-lived refresh token from `tap-asana-vl-auth` (OAuth mode). "
            "Exchanged for short-lived access tokens during the run."
        ),
    ),
    th.Property(
        "oauth_scopes",
        th.StringType,
        title="OAuth scopes",
        description=(
            "The scopes the OAuth refresh token was granted, space separated "
            "(`tap-asana-vl-auth` writes them). With granular scopes, streams and "
            "fields they cannot read are skipped up front with one warning each; "
            "empty means unknown."
        ),
    ),
    th.Property(
        "start_date",
        th.DateTimeType,
        title="Start date",
        description=(
            "Only tasks modified at or after this time are synced on the first run "
            "(ISO 8601). Leave empty to sync everything."
        ),
    ),
    th.Property(
        "workspace_gids",
        th.ArrayType(th.StringType),
        title="Workspace gids",
        description="Sync only these workspaces (default: every workspace visible).",
    ),
    th.Property(
        "project_gids",
        th.ArrayType(th.StringType),
        title="Project gids",
        description="Sync only these projects and their tasks (default: all).",
    ),
    th.Property(
        "include_archived_projects",
        th.BooleanType,
        default=True,
        title="Include archived projects",
        description="Also sync archived projects and their tasks.",
    ),
    th.Property(
        "include_subtasks",
        th.BooleanType,
        default=True,
        title="Include subtasks",
        description=(
            "Sync subtasks (and their stories). Costs one request per changed task "
            "that has subtasks, plus Asana's task search or a periodic full walk."
        ),
    ),
    th.Property(
        "include_tasks_without_projects",
        th.BooleanType,
        default=True,
        title="Include tasks without projects",
        description=(
            "Also sync tasks that are in no project (a person's My Tasks), into tasks with "
            "an empty memberships. Paid plans: from the workspace task search, at no extra "
            "request. Free plans: one request per user of the workspace per run. Private "
            "tasks of other people that are in no project stay unreachable."
        ),
    ),
    th.Property(
        "subtasks_full_walk_days",
        # An integer, not a number: the SDK reads a number setting from the
        # environment (--config ENV) as a string, which then fails validation.
        th.IntegerType(minimum=0),
        default=7,
        title="Subtasks full walk (days)",
        description=(
            "Where Asana's task search is unavailable (free plans), re-read every "
            "task's subtasks this often to catch edits to subtasks of unchanged "
            "tasks; 0 walks on every run."
        ),
    ),
    th.Property(
        "reconcile_every_days",
        # An integer: see subtasks_full_walk_days.
        th.IntegerType(minimum=0),
        default=7,
        title="Reconcile every (days)",
        description=(
            "List every project's tasks (and subtask trees) in full this often (and after a"
            " project's events token expired) so tasks, subtasks and task_projects rows "
            "deleted or moved without an event are marked deleted: 1 request per 100 tasks "
            "per project and 1 per task with subtasks; every task row is written again. 0 "
            "reconciles on every run. Needs every project in scope (no workspace_gids / "
            "project_gids filter)."
        ),
    ),
    th.Property(
        "project_children_refresh_days",
        # An integer: see subtasks_full_walk_days.
        th.IntegerType(minimum=0),
        default=7,
        title="Project children refresh (days)",
        description=(
            "Re-read every project's sections, project memberships, custom field settings "
            "and status updates this often (1 request per project each); in between only "
            "those of projects whose record or events show a change. Rows of these streams "
            "gone from Asana are marked deleted at this refresh. 0 re-reads every project "
            "on every run."
        ),
    ),
    th.Property(
        "include_attachments",
        th.BooleanType,
        default=True,
        title="Include attachments",
        description="Sync attachment metadata: one request per changed task.",
    ),
    th.Property(
        "page_size",
        th.IntegerType(minimum=1, maximum=100),
        default=DEFAULT_PAGE_SIZE,
        title="Page size",
        description="Records per request, 1-100 (Asana's maximum, and the cheapest).",
    ),
    th.Property(
        "max_requests_per_minute",
        th.IntegerType(minimum=1),
        default=DEFAULT_MAX_REQUESTS_PER_MINUTE,
        title="Max requests per minute",
        description=(
            "Pace of requests. 1500 suits paid plans; on a free plan (150/min) the "
            "tap slows down by itself after the first 429."
        ),
    ),
    th.Property(
        "max_concurrent_requests",
        th.IntegerType(minimum=1, maximum=MAX_CONCURRENT_REQUESTS),
        default=DEFAULT_MAX_CONCURRENT_REQUESTS,
        title="Max concurrent requests",
        description=(
            "Most requests in flight at once, 1-50 (Asana's limit per token). The tap "
            "keeps about rate times latency in flight, up to this; 1 makes the sync "
            "strictly sequential."
        ),
    ),
    th.Property(
        "max_retries",
        th.IntegerType(minimum=0),
        default=DEFAULT_MAX_RETRIES,
        title="Max retries",
        description=(
            "Retries of a request after a 5xx, a timeout or a broken response "
            "(429s are retried after Retry-After, up to 60 in a row or 15 minutes in all)."
        ),
    ),
    th.Property(
        "request_timeout",
        th.IntegerType(minimum=1),
        default=DEFAULT_REQUEST_TIMEOUT,
        title="Request timeout",
        description="Seconds to wait for one Asana response.",
    ),
    th.Property(
        "max_outage_seconds",
        th.IntegerType(minimum=1),
        default=DEFAULT_MAX_OUTAGE_SECONDS,
        title="Max outage (seconds)",
        description=(
            "Stop the run when no request to Asana has succeeded for this long (Asana "
            "or the network down); 30 s at most before the first success."
        ),
    ),
    th.Property(
        "state_interval_seconds",
        th.IntegerType(minimum=0),
        default=DEFAULT_STATE_INTERVAL_SECONDS,
        title="State interval (seconds)",
        description=(
            "Least seconds between two STATE messages (checkpoints) during a run; the "
            "spacing also grows to a quarter of the run's elapsed time, and a run's STATE "
            "output stays within 20 times the final state's size. The final state is "
            "always written. 0: as often as that allows."
        ),
    ),
    th.Property(
        "api_url",
        th.StringType,
        default=asana_urls.API_URL,
        title="API URL",
        description="Asana API root; change only for proxies or tests.",
    ),
    th.Property(
        "oauth_token_url",
        th.StringType,
        default=DEFAULT_OAUTH_TOKEN_URL,
        title="OAuth token URL",
        description="Asana's OAuth token endpoint; change only for proxies or tests.",
    ),
    th.Property(
        "log_metrics",
        th.BooleanType,
        default=False,
        title="Log metrics",
        description=(
            "Write the SDK's METRIC lines (one per request, per stream sync) at INFO. "
            "Off by default: the log shows one progress line per project instead. "
            "LOGLEVEL=DEBUG shows them too."
        ),
    ),
    th.Property(
        "user_agent",
        th.StringType,
        title="User agent",
        description="User-Agent header sent to Asana (default tap-asana-vl/<version>).",
    ),
).to_dict()


# How the SDK ends a JSON-schema error: `` in config['setting']…``.
_ERROR_PATH = re.compile(r" in config\['(?P<setting>[^']+)'\][^ ]*$")


def hide_secret_values(
    errors: Iterable[str], config: Mapping[str, t.Any], secret_settings: Iterable[str]
) -> list[str]:
    """Rewrite schema errors about secret settings so they do not quote the value."""
    secret_settings = set(secret_settings)
    values = [text for name in secret_settings for text in _strings_in(config.get(name))]
    result = []
    for error in errors:
        match = _ERROR_PATH.search(error)
        if match and match["setting"] in secret_settings:
            what = "must be a string" if "is not of type" in error else "is not valid"
            error = (
                f"{match['setting']} {what} (its value is not shown: the setting is secret) "
                f"in config['{match['setting']}']"
            )
        # Belt and braces: any other message that quotes a secret (e.g. the whole config).
        result.append(redact(error, values))
    return result


def _strings_in(value: t.Any) -> list[str]:
    """A value as text, and every string nested in it (a secret of the wrong type)."""
    if value is None:
        return []
    found = [str(value)]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        found += [text for item in value for text in _strings_in(item)]
    return found


def config_errors(config: Mapping[str, t.Any]) -> list[str]:
    """Problems with a config, each naming the setting(s) to fix."""
    errors: list[str] = []
    has_pat = bool(config.get("access_token"))
    oauth_set = [k for k in OAUTH_SETTINGS if config.get(k)]
    if has_pat and oauth_set:
        errors.append(
            "Both a personal access token (access_token) and OAuth settings "
            f"({', '.join(oauth_set)}) are set: keep only one authentication mode."
        )
    elif not has_pat and not oauth_set:
        errors.append(
            "No credentials: set access_token (TAP_ASANA_VL_ACCESS_TOKEN) to a personal "
            "access token, or set client_id, client_secret and refresh_token for OAuth "
            "(run `tap-asana-vl-auth` to get the refresh token)."
        )
    elif not has_pat and len(oauth_set) < len(OAUTH_SETTINGS):
        missing = [k for k in OAUTH_SETTINGS if k not in oauth_set]
        errors.append(
            f"OAuth is half configured: {', '.join(missing)} missing "
            "(client_id, client_secret and refresh_token are all required)."
        )
    for setting in ("access_token", "client_id", "client_secret", "refresh_token"):
        value = str(config.get(setting) or "").strip()
        if any(ch.isspace() or ord(ch) < 32 for ch in value):
            errors.append(
                f"{setting} contains spaces or control characters (a pasting mistake?); "
                "set it to the value alone."
            )
    start_date = config.get("start_date")
    if start_date:
        try:
            parse_timestamp(str(start_date))
        except ValueError:
            errors.append(
                f"start_date {start_date!r} is not an ISO 8601 date or date-time "
                "(e.g. 2024-01-31 or 2024-01-31T00:00:00Z)."
            )
    for setting in ("api_url", "oauth_token_url"):
        value = config.get(setting)
        if value is not None:
            parsed = urlparse(str(value))
            if parsed.scheme not in {"http", "https"} or not parsed.netloc:
                errors.append(f"{setting} {value!r} is not an http(s) URL.")
            elif parsed.scheme == "http" and not is_loopback_host(parsed.hostname):
                errors.append(
                    f"{setting} {value!r} uses plain http to a remote host: the token would "
                    "travel unencrypted. Use https (plain http is accepted for localhost only)."
                )
    return errors
