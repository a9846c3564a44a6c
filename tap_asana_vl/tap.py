"""The tap: settings, their validation, the stream list and run-wide shared objects."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
import typing as t
from functools import cached_property

from singer_sdk import Tap
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers.capabilities import PluginCapabilities, TapCapabilities
from singer_sdk.singerlib import SchemaMessage, StateMessage

from tap_asana_vl import inputs, sdk_adapter, streams
from tap_asana_vl.auth import build_authenticator
from tap_asana_vl.cli_errors import errors_in_one_line
from tap_asana_vl.concurrency import InFlightLimit
from tap_asana_vl.heap import HeapTrimmer
from tap_asana_vl.progress import RunProgress
from tap_asana_vl.rate_limit import RateLimiter
from tap_asana_vl.run_control import RunControl
from tap_asana_vl.scopes import apply_grant, granted_scopes
from tap_asana_vl.settings import (
    ENV_PREFIX,
    SETTINGS_SCHEMA,
    config_errors,
    hide_secret_values,
)
from tap_asana_vl.state_output import StateOutput
from tap_asana_vl.streams import children_plan, purge, selection
from tap_asana_vl.streams.children_ahead import READ_AHEAD_RECORDS_MAX
from tap_asana_vl.streams.prefetch import WhileWaiting
from tap_asana_vl.streams.project_level import USERS_READ_AHEAD
from tap_asana_vl.streams.search import SEARCH_REQUESTS_PER_MINUTE
from tap_asana_vl.timestamps import ServerClock
from tap_asana_vl.transport import Transport
from tap_asana_vl.user_refs import UserReferences
from tap_asana_vl.worker_pool import PoolThread, RecyclingThreadPool

if t.TYPE_CHECKING:
    import datetime

    import click
    from singer_sdk.streams import Stream

    from tap_asana_vl.auth import AsanaAuthenticator

# After the run ends, requests still in flight get this long before the process exits
# anyway (a stuck read could otherwise hold it for request_timeout).
EXIT_GRACE_SECONDS = 3.0
#: Threads of the pool that reads ahead: the most projects' first pages, and users'
#: assigned tasks, read ahead at once.
LEAD_THREADS = READ_AHEAD_RECORDS_MAX + USERS_READ_AHEAD + 1

# The catalog's order (children of one parent also sync in it; no stream depends on it:
# what a stream needs of another comes in the context its parent passes it).
STREAM_TYPES: tuple[type[streams.AsanaStream], ...] = (
    streams.WorkspacesStream,
    streams.UsersStream,
    streams.ProjectsStream,
    streams.TasksStream,
    streams.StoriesStream,
    streams.TaskProjectsStream,
    streams.AttachmentsStream,
    streams.TimeTrackingEntriesStream,
    streams.SectionsStream,
    streams.ProjectMembershipsStream,
    streams.ProjectCustomFieldSettingsStream,
    streams.StatusUpdatesStream,
    streams.TagsStream,
    streams.CustomFieldsStream,
    streams.TeamsStream,
    streams.TeamMembershipsStream,
    streams.PortfoliosStream,
    streams.PortfolioItemsStream,
    streams.GoalsStream,
    streams.SubtasksStream,
    streams.SubtaskStoriesStream,
    # Derived tables (issue #16): made of records fetched above, no request of their own
    # (project_custom_field_values: one narrow projects listing).
    streams.TaskCustomFieldValuesStream,
    streams.ProjectCustomFieldValuesStream,
    streams.TaskTagsStream,
    streams.TaskFollowersStream,
    streams.TaskDependenciesStream,
    streams.TaskHistoryStream,
)

STREAM_NAMES = frozenset(stream_type.name for stream_type in STREAM_TYPES)


class RepeatedSchemaSkippingWriter(MsgSpecWriter):
    """Writes Singer messages, leaving out a SCHEMA identical to the stream's last one.

    The SDK re-sends a child stream's SCHEMA each time it syncs the children of one
    parent, i.e. the stories schema once per task. Serialising that large schema costs
    more than the task's records; a repeat says nothing new to a target. Messages are
    encoded with msgspec (the SDK's own faster writer): JSON encoding was the largest
    per-record cost.
    """

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Start with no schema sent."""
        super().__init__(*args, **kwargs)
        self._last_schema: dict[str, SchemaMessage] = {}

    def write_message(self, message: t.Any) -> None:
        """Write ``message`` unless it repeats the stream's current SCHEMA."""
        if isinstance(message, SchemaMessage):
            previous = self._last_schema.get(message.stream)
            if previous is not None and (
                (previous.schema is message.schema or previous.schema == message.schema)
                and previous.key_properties == message.key_properties
                and previous.bookmark_properties == message.bookmark_properties
            ):
                return
            self._last_schema[message.stream] = message
        # The SDK flushes stdout after every message; with tens of thousands of records
        # that is a syscall (and a GIL hand-off) per record. Flushing at each STATE keeps
        # what the target has seen consistent: records always reach it before the
        # STATE that covers them, and the buffer is flushed at exit.
        sys.stdout.buffer.write(self.format_message(message))
        if isinstance(message, StateMessage):
            sys.stdout.flush()


class TapAsanaVl(sdk_adapter.SchemaErrorsRewritten, Tap):
    """Singer tap for Asana."""

    name = "tap-asana-vl"
    message_writer_class = RepeatedSchemaSkippingWriter
    # Set once derived streams are also children of their further parents (``streams``).
    _extra_parents_added = False
    #: Write STATE through ``state_output`` (False: every STATE the SDK offers, as the
    #: SDK does; for benchmarks measuring the difference).
    bounded_state_output = True

    # The SDK's defaults minus BATCH (a preview feature we do not test, unused by
    # target-postgres) and ACTIVATE_VERSION (see AsanaStream.emit_activate_version_messages).
    capabilities: t.ClassVar[list[t.Any]] = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]

    config_jsonschema = SETTINGS_SCHEMA

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Validate settings that JSON Schema cannot express, before any request."""
        env = kwargs.get("parse_env_config", False)
        config = kwargs.get("config")
        if isinstance(config, dict) and None in config.values():
            # A setting given as null means its default: the SDK fills defaults from
            # config_jsonschema only for absent keys, so every setting is then present.
            kwargs["config"] = {k: v for k, v in config.items() if v is not None}
        # Before the SDK builds the streams, which logs a line per stream.
        sdk_adapter.quiet_tap_logger(self.logger)
        with inputs.env_settings_named(self.config_jsonschema, ENV_PREFIX, enabled=env):
            super().__init__(*args, **kwargs)
        sdk_adapter.set_metric_lines(enabled=bool(self.config["log_metrics"]))
        if threading.current_thread() is threading.main_thread():
            # Replaces the SDK's handlers, which exit 0 and leave worker threads retrying.
            signal.signal(signal.SIGINT, self._stop_on_signal)
            signal.signal(signal.SIGTERM, self._stop_on_signal)
        if kwargs.get("validate_config", True):
            errors = config_errors(self.config)
            if errors:
                raise ConfigValidationError(
                    "Config validation failed", errors=errors, schema=self.config_jsonschema
                )

    def rewrite_schema_errors(self, errors: list[str]) -> list[str]:
        """The SDK's JSON-schema errors, without the values of secret settings.

        The SDK quotes the offending value (``['csec-…'] is not of type 'string'``),
        which for a secret of the wrong JSON type prints the secret.
        """
        secret = [
            name
            for name, prop in self.config_jsonschema["properties"].items()
            if prop.get("secret")
        ]
        return hide_secret_values(errors, self.config, secret)

    # Command line: inputs are checked before any output, and every failure ends in one
    # ERROR line (see cli_errors). The SDK's callbacks run the same way, only wrapped.

    @classmethod
    def cb_config(cls, ctx: click.Context, param: click.Option, value: tuple[str, ...]) -> t.Any:
        """Check the --config files (naming the bad one), then let the SDK read them."""
        with errors_in_one_line(cls.logger):
            inputs.check_config_files(value)
        return super().cb_config(ctx, param, value)

    @classmethod
    def cb_discover(cls, ctx: click.Context, param: click.Option, value: bool) -> None:
        """--discover, failing in one line."""
        with errors_in_one_line(cls.logger):
            super().cb_discover(ctx, param, value)

    @classmethod
    def cb_test(cls, ctx: click.Context, param: click.Option, value: str) -> None:
        """--test, failing in one line."""
        with errors_in_one_line(cls.logger):
            super().cb_test(ctx, param, value)

    @classmethod
    def invoke(
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: t.Any = None,
        state: t.IO[str] | None = None,
        catalog: t.IO[str] | None = None,
    ) -> None:
        """Sync, with --state and --catalog checked first, failing in one line."""
        with errors_in_one_line(cls.logger):
            super().invoke(
                about=about,
                about_format=about_format,
                config=config,
                state=inputs.checked_state(state, STREAM_NAMES, cls.logger),
                catalog=inputs.checked_catalog(catalog, STREAM_NAMES),
            )

    @cached_property
    def authenticator(self) -> AsanaAuthenticator:
        """The one authenticator every stream uses (one OAuth token per run)."""
        return build_authenticator(self.config)

    @cached_property
    def run_control(self) -> RunControl:
        """The run-wide circuit breaker and stop flag."""
        return RunControl(float(self.config["max_outage_seconds"]))

    @cached_property
    def transport(self) -> Transport:
        """The one transport every stream sends through: session, pacer, retries."""
        rate_limiter = RateLimiter(float(self.config["max_requests_per_minute"]))
        return Transport(
            url_base=self.config["api_url"],
            authenticator=self.authenticator,
            rate_limiter=rate_limiter,
            # In flight: the pacer's current rate * the measured latency (Little's law).
            in_flight=InFlightLimit(
                int(self.config["max_concurrent_requests"]), lambda: rate_limiter.rate
            ),
            run_control=self.run_control,
            max_retries=int(self.config["max_retries"]),
            timeout=int(self.config["request_timeout"]),
            # As many connections as requests may be in flight (whichever threads send
            # them; a thread waits for a slot before it takes a connection), + the main's.
            pool_size=int(self.config["max_concurrent_requests"]) + 1,
            on_request=self.progress.count_request,
        )

    @cached_property
    def search_pacer(self) -> RateLimiter:
        """Slots for Asana's task search: 60 requests per minute, besides the quota."""
        ceiling = float(self.config["max_requests_per_minute"])
        return RateLimiter(min(SEARCH_REQUESTS_PER_MINUTE, ceiling))

    @cached_property
    def server_clock(self) -> ServerClock:
        """Asana's clock as its answers show it (bookmarks of complete reads use it)."""
        return ServerClock()

    @cached_property
    def heap(self) -> HeapTrimmer:
        """Gives the memory freed between batches back to the system (see heap.py)."""
        return HeapTrimmer()

    @cached_property
    def progress(self) -> RunProgress:
        """Run-wide counts and the progress lines (one per project, a heartbeat)."""
        return RunProgress(self.logger)

    @cached_property
    def user_references(self) -> UserReferences:
        """Users the emitted records reference (``users`` completes itself from them)."""
        return UserReferences()

    @cached_property
    def children_plans(self) -> children_plan.ChildrenPlans:
        """The run's plan of per-project children reads (see project_children.py)."""
        return children_plan.ChildrenPlans()

    @cached_property
    def tasks_from_scratch(self) -> dict[str, datetime.datetime]:
        """Workspaces whose every task this run emits (``changed_tasks.holds_no_bookmark``).

        Workspace gid -> Asana's time before its first listing.
        """
        return {}

    @cached_property
    def purges(self) -> purge.Purges:
        """The run's tombstones and ACTIVATE_VERSIONs (``hard_delete``; see purge.py)."""
        return purge.Purges()

    @cached_property
    def executor(self) -> RecyclingThreadPool:
        """The thread pool that fetches per-parent children (stories) ahead of time.

        A thread for each request that may ever be in flight: how many actually are
        is the transport's ``InFlightLimit`` (the others wait for a slot). Threads are
        replaced after a number of tasks, which bounds what glibc's per-thread caches
        hold (worker_pool.py).
        """
        workers = int(self.config["max_concurrent_requests"])
        return RecyclingThreadPool(workers, thread_name_prefix="asana")

    @cached_property
    def while_waiting(self) -> WhileWaiting:
        """Chores the main thread does while it waits for a fetch started ahead (prefetch.py)."""
        return WhileWaiting()

    @cached_property
    def lead_executor(self) -> RecyclingThreadPool:
        """The thread pool that reads the next parents' first pages ahead (prefetch.py).

        Apart from ``executor``: queued behind the children fetched for the parents
        read before, the reads that feed those fetches would let the work run dry.
        Their requests go first for a slot in flight, too (``RunControl.goes_first``).
        """
        workers = min(int(self.config["max_concurrent_requests"]), LEAD_THREADS)
        return RecyclingThreadPool(workers, thread_name_prefix="asana-lead")

    @cached_property
    def state_output(self) -> StateOutput:
        """Which STATE messages are written (see state_output.py)."""
        return StateOutput(
            min_interval=float(self.config["state_interval_seconds"]),
            write=lambda state: self.message_writer.write_message(StateMessage(value=state)),
        )

    def sync_all(self) -> None:
        """Sync, after turning off what the OAuth scopes cannot read (before any request)."""
        if self.bounded_state_output:
            sdk_adapter.route_state_messages(self, self.state_output.offer)
        if self.input_catalog is not None:
            inputs.warn_if_nothing_selected(self.streams.values(), self.logger)
        asana_streams = [s for s in self.streams.values() if isinstance(s, streams.AsanaStream)]
        granted = granted_scopes(self.config)
        if granted is not None:
            apply_grant(asana_streams, granted)
        elif not self.config.get("oauth_scopes") and getattr(self.authenticator, "is_oauth", False):
            # Scopes unknown: let each stream's first request find out alone.
            for stream in asana_streams:
                stream.probe_first_request = True
        users = self.streams.get("users")
        # Collected only for a users table to complete (see user_refs.py).
        self.user_references.enabled = bool(users is not None and users.selected)
        self.heap.start()  # before any thread of the run allocates
        self.progress.start_heartbeat()
        # Bookmarks kept for another selection leave a newly selected stream's older
        # rows out: they start over (before anything reads them, the deletes' plan too).
        selection.start_over_where_newly_selected(asana_streams, self.logger)
        # Deletes (issue 14): a stream with a floor writes with a version above it.
        purge.plan(self.streams.values(), self.logger)
        try:
            super().sync_all()
            # Deletes (issue 14): the reconcile pass ends after every record is written.
            tasks = self.streams.get("tasks")
            if isinstance(tasks, streams.TasksStream):
                tasks.finish_run()
            # Deletes of the full-table streams (issue 14): after the reconcile pass.
            workspaces = self.streams.get("workspaces")
            if isinstance(workspaces, streams.WorkspacesStream):
                workspaces.finish_run()
            # Tombstones removed with hard_delete: after every other ACTIVATE_VERSION.
            purge.finish(self.purges, self.logger)
            selection.note_refusals(asana_streams)
            self.progress.finished()
        finally:
            # Done, failing or interrupted: nothing may keep running (or queued) after.
            self.stop_work()
            # The last state offered covers only records already written: a failed or
            # stopped run resumes from it rather than from an older checkpoint.
            if "state_output" in self.__dict__:
                self.state_output.flush()

    def stop_work(self) -> None:
        """Stop every request in progress or queued (the run ended, failed or was stopped)."""
        self.run_control.stopping.set()
        self.progress.stop()
        for pool in ("executor", "lead_executor"):
            if pool in self.__dict__:
                self.__dict__[pool].shutdown(wait=False, cancel_futures=True)

    def _stop_on_signal(self, signum: int, frame: t.Any) -> None:  # noqa: ARG002
        name = signal.Signals(signum).name
        self.logger.error(
            "Stopping on %s: queued requests cancelled; the next run resumes from the "
            "last state written",
            name,
        )
        self.stop_work()
        raise SystemExit(128 + signum)

    def discover_streams(self) -> list[Stream]:
        """Instantiate the streams (no API call: discovery must work offline)."""
        discovered = [stream_type(tap=self) for stream_type in STREAM_TYPES]
        for stream in discovered:
            sdk_adapter.quiet_stream_logger(stream.logger)
        return discovered

    @property
    def streams(self) -> dict[str, Stream]:
        """The streams, with derived ones also under their further parents.

        The SDK gives a stream one parent; a derived table of tasks is fed by subtasks
        too (``DerivedStream.also_child_of``), so it is added to their children here,
        once, after the SDK has built its tree.
        """
        loaded = super().streams
        if not self._extra_parents_added:
            self._extra_parents_added = True
            for child in loaded.values():
                for parent_type in getattr(child, "also_child_of", ()):
                    for parent in loaded.values():
                        if type(parent) is parent_type:
                            sdk_adapter.add_child_stream(parent, child)
                # Tombstones from stories only where those are read anyway (selected):
                # each change story is handed to the table directly, not synced to it.
                for parent_type in getattr(child, "tombstones_from", ()):
                    for parent in loaded.values():
                        if type(parent) is parent_type and parent.selected:
                            parent.change_story_handlers.append(child.write_story_tombstones)
        return loaded


def main() -> None:
    """Console entry point: the SDK's CLI, then an exit no stuck request can delay.

    Worker threads are joined at interpreter exit; one blocked reading a response would
    hold a finished (or failed, or interrupted) run open for up to ``request_timeout``.
    """
    code: int | str | None = 0
    try:
        TapAsanaVl.cli()
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        traceback.print_exc()
        code = 1
    exit_code = code if isinstance(code, int) else (0 if code is None else 1)
    if isinstance(code, str):
        print(code, file=sys.stderr)
    deadline = time.monotonic() + EXIT_GRACE_SECONDS
    # The pools' threads are daemon threads, yet get the grace too: one still logging
    # while the interpreter finalizes could abort it.
    others = [
        thread
        for thread in threading.enumerate()
        if thread is not threading.current_thread()
        and (not thread.daemon or isinstance(thread, PoolThread))
    ]
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    if any(thread.is_alive() for thread in others):
        os._exit(exit_code)
    sys.exit(exit_code)
