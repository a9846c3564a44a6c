"""Every use of the Singer SDK's internals, in one place: the file to check on an upgrade.

The tap relies on a few things the SDK does not promise (underscored attributes, the
layout of its state, the wording of its log lines). Each is reached only through a
function here, and ``tests/test_sdk_adapter.py`` checks each against the installed SDK,
so an upgrade that changes one fails there, naming it, rather than somewhere in a sync.

- **State**: a stream's own keys next to its bookmarks, the bookmark of a partition, the
  SDK's ``progress_markers`` (a bookmark not yet final), advancing it for a record that
  is not emitted; where the SDK sends each STATE it would write (its tap-wide state
  writer, replaced so that ``state_output`` decides), and which keys of a bookmark are
  interim (removed when the bookmark becomes final).
- **Quieter per-parent streams**: the per-request METRIC switch and the stream logger's
  level of a stream synced once per parent record (per task), and the logger of the
  meters (counters, timers) the SDK creates for it.
- **Log lines** the SDK writes at INFO once per stream or per context, demoted to DEBUG,
  and the METRIC logger's level.
- **Config validation**: the SDK's JSON-schema check quotes offending values; the tap
  rewrites those messages (see ``SchemaErrorsRewritten``).
- **OAuth**: the HTTP session of the SDK's ``OAuthAuthenticator``.
- **Tombstones**: RECORD messages of a stream written outside its own sync (deletes
  learnt from Asana's events belong to streams whose parent record no longer exists);
  the Singer table version of a stream's records (tombstones get one of their own),
  its ACTIVATE_VERSION message and a STATE message written at the end of a run (the
  reconcile pass, complete reads, the purge of tombstones).
"""

from __future__ import annotations

import logging
import typing as t

from singer_sdk import metrics
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers._state import (
    PROGRESS_MARKERS,
    SIGNPOST_MARKER,
    STARTING_MARKER,
    StateWriter,
)

from tap_asana_vl.timestamps import parse_timestamp

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import requests
    from singer_sdk import Stream, Tap
    from singer_sdk.authenticators import OAuthAuthenticator
    from singer_sdk.helpers.types import Context
    from singer_sdk.streams import RESTStream

__all__ = [
    "PROGRESS_MARKERS",
    "SchemaErrorsRewritten",
    "add_child_stream",
    "advance_bookmark",
    "bookmark_value",
    "clear_state_keys",
    "drop_progress",
    "finalize_partition",
    "oauth_session",
    "own_map",
    "own_state",
    "partition_state",
    "quiet_per_parent_stream",
    "quiet_stream_logger",
    "quiet_tap_logger",
    "raise_bookmark",
    "route_state_messages",
    "set_metric_lines",
    "set_table_version",
    "silenced",
    "stored_state",
    "table_version",
    "without_interim_markers",
    "write_activate_version",
    "write_records",
    "write_state",
]

M = t.TypeVar("M", bound=metrics.Meter)

# --- State ------------------------------------------------------------------------------


def own_state(stream: Stream) -> dict[str, t.Any]:
    """The stream's state entry, where it may keep keys of its own next to bookmarks."""
    return stream.stream_state


def stored_state(stream: Stream) -> Mapping[str, t.Any]:
    """The stream's state entry, read only: for a stream without one, none is created."""
    return (stream.tap_state.get("bookmarks") or {}).get(stream.name) or {}


def clear_state_keys(stream: Stream, keys: Iterable[str]) -> None:
    """Set ``keys`` to null in the stream's state entry and in each of its partitions.

    Null, not removed: Meltano merges the state of a failed or interrupted run onto the
    last complete one key by key, at any depth, so a key removed would come back from
    the older state; a null replaces whatever it had. Readers take null as absent
    (``own_map``).
    """
    entry = own_state(stream)
    for holder in (entry, *(entry.get("partitions") or [])):
        for key in keys:
            if holder.get(key) is not None:
                holder[key] = None


def own_map(stream: Stream, key: str) -> dict[str, t.Any]:
    """The object kept under ``key`` in the stream's state entry, writable (made if absent)."""
    entry = own_state(stream)
    if not isinstance(entry.get(key), dict):
        entry[key] = {}
    return t.cast("dict[str, t.Any]", entry[key])


def bookmark_value(stream: Stream, context: Context | None) -> t.Any:
    """The final bookmark (``replication_key_value``) of ``context``'s partition, if any."""
    return stream.get_context_state(context).get("replication_key_value")


def partition_state(stream: Stream, context: Context | None) -> dict[str, t.Any]:
    """The state entry of ``context``'s partition, for keys of the tap's own.

    The SDK writes it out with the bookmark and leaves unknown keys alone.
    """
    return stream.get_context_state(context)


def drop_progress(stream: Stream, context: Context | None) -> None:
    """Forget the partition's bookmark progress of this sync (it must not become final)."""
    stream.get_context_state(context).pop(PROGRESS_MARKERS, None)


def advance_bookmark(stream: Stream, record: Mapping[str, t.Any], context: Context | None) -> None:
    """Move the partition's progress past ``record`` as if it had been emitted."""
    if stream.replication_key:
        stream.state_manager.increment_state(
            dict(record), context=context, replication_key=stream.replication_key
        )


def raise_bookmark(stream: Stream, context: Context | None, value: str) -> bool:
    """Make ``value`` the final bookmark of ``context``'s partition if it is later.

    For a partition whose own sync is over (a project whose changed tasks came from a
    workspace search): everything up to ``value`` is written. Timestamps compare as
    instants; returns whether the bookmark moved.
    """
    partition = stream.get_context_state(context)
    current = partition.get("replication_key_value")
    if isinstance(current, str) and parse_timestamp(current) >= parse_timestamp(value):
        return False
    partition["replication_key"] = stream.replication_key
    partition["replication_key_value"] = value
    return True


def starting_value(stream: Stream, context: Context | None) -> t.Any:
    """The bookmark the SDK will start ``context``'s partition from, without writing state.

    As ``write_starting_replication_value`` computes it when the partition's sync starts
    (its final bookmark, or ``start_date`` if later or if there is none), but read
    only: for a listing started ahead of that sync, whose partition entry must not
    appear in the state (or move in its order) before the sync starts.
    """
    keys = stream.state_partitioning_keys
    wanted = {key: (context or {}).get(key) for key in keys} if keys else None
    partitions = stored_state(stream).get("partitions") or []
    state = next((p for p in partitions if p.get("context") == wanted), {}) if wanted else {}
    value = None
    bookmark = state.get("replication_key_value")
    if bookmark and stream.replication_key == state.get("replication_key"):
        value = bookmark
    start_date = stream.config.get("start_date")
    if start_date:
        value = stream.compare_start_date(value, start_date) if value else start_date
    return value


def finalize_partition(stream: Stream, context: Context | None) -> None:
    """Make the partition's bookmark progress of this sync final now.

    The SDK does so at the end of a context's sync only when the context *is* the
    partition; a context with more keys than ``state_partitioning_keys`` (a project and
    its workspace) would stay unfinalized until the end of the run.
    """
    stream.state_manager.finalize_state(stream.get_context_state(context))


def add_child_stream(parent: Stream, child: Stream) -> None:
    """Make ``child`` also a child of ``parent`` (the SDK links each stream to one parent).

    The SDK syncs ``parent.child_streams`` after each of its records, with the context
    the parent makes, and counts them in ``has_selected_descendents``.
    """
    if child not in parent.child_streams:
        parent.child_streams.append(child)


#: Keys of a stream's or partition's state that the SDK removes when it finalizes it.
INTERIM_KEYS = frozenset({PROGRESS_MARKERS, SIGNPOST_MARKER, STARTING_MARKER})


def without_interim_markers(state: t.Any) -> t.Any:
    """A copy of ``state`` without the SDK's interim keys: what finalizing leaves of it."""
    if isinstance(state, dict):
        return {k: without_interim_markers(v) for k, v in state.items() if k not in INTERIM_KEYS}
    if isinstance(state, list):
        return [without_interim_markers(v) for v in state]
    return state


class _RoutedStateWriter(StateWriter):
    """The SDK's tap-wide STATE writer, handing every state to a callable instead.

    The SDK's own writer compares each state with a deep copy of the last one (a copy
    per child sync, ~10 ms for a 2,000-project state); the callable decides itself.
    """

    def __init__(self, tap: Tap, offer: t.Callable[[dict[str, t.Any]], None]) -> None:
        super().__init__(tap.message_writer)
        self._offer = offer

    def write_state(self, state: dict[str, t.Any]) -> None:
        self._offer(state)


def route_state_messages(tap: Tap, offer: t.Callable[[dict[str, t.Any]], None]) -> None:
    """From now on, every STATE the SDK would write for ``tap`` goes to ``offer``.

    That is every one: streams write through ``tap.state_writer`` and the tap through
    its private ``_state_writer`` (the same object).
    """
    tap._state_writer = _RoutedStateWriter(tap, offer)  # private: see the module docstring


# --- Per-parent streams -----------------------------------------------------------------

# Metrics logger for meters whose per-parent lines are replaced by the run summary.
_SILENT_METRICS = logging.getLogger("tap_asana_vl.per_parent_metrics")
# A level above every record and no propagation, rather than ``disabled``: the logging
# config the SDK applies at start-up (Meltano's SINGER_SDK_LOG_CONFIG, via dictConfig)
# sets ``disabled = False`` on every existing logger it does not name, but keeps levels.
_SILENT_METRICS.setLevel(logging.CRITICAL + 1)
_SILENT_METRICS.propagate = False


def quiet_per_parent_stream(stream: RESTStream[t.Any]) -> None:
    """No per-request METRIC line, and INFO lines only from the tap, for ``stream``.

    For streams synced once per parent record (per task): the SDK's per-sync lines would
    be six per task, and worker threads queueing on the log handler's lock halved
    throughput. The end-of-run summary reports such a stream's totals instead.
    """
    stream._LOG_REQUEST_METRICS = False  # private: see the module docstring
    if stream.logger.getEffectiveLevel() == logging.INFO:
        stream.logger.setLevel(logging.WARNING)


def silenced(meter: M) -> M:
    """``meter`` (a counter or timer the SDK made for a stream), logging nowhere."""
    meter.logger = _SILENT_METRICS
    return meter


# --- The SDK's log lines ----------------------------------------------------------------

#: Formats the SDK logs on the tap's own logger, once per stream or stream pair.
TAP_CHATTER = frozenset(
    {
        "Added '%s' as child stream to '%s'",
        "Skipping deselected stream '%s'.",
        "Parsing env var for settings config...",
        "Skipping parse of env var settings...",
    }
)
#: Formats the SDK logs on a stream's logger, once per context (per project, per task).
STREAM_CHATTER = frozenset(
    {
        "Beginning sync of '%s' in %s mode",
        "Beginning sync of '%s' in %s mode with context keys: %s",
        "Starting incremental sync of '%s' with bookmark value: %s",
        # Logged at ERROR by every stream the failure unwinds through (stories, tasks,
        # projects, workspaces); the tap's own one-line error names the cause.
        "An unhandled error occurred while syncing '%s'",
    }
)
#: The SDK's state helpers warn, once per partition, that an unsorted stream's progress
#: "is not resumable if interrupted". For this tap that is misleading: bookmarks are
#: per project and only move when a project is complete, so a run resumes project by
#: project (tests/test_reliability.py kills runs to prove it).
STATE_LOGGER = "singer_sdk"
STATE_CHATTER = frozenset(
    {"Stream is assumed to be unsorted, progress is not resumable if interrupted"}
)


class DemoteToDebug(logging.Filter):
    """Turn the listed messages of one logger into DEBUG records."""

    def __init__(self, formats: frozenset[str]) -> None:
        """Demote records whose unformatted message is one of ``formats``."""
        super().__init__()
        self.formats = formats

    def filter(self, record: logging.LogRecord) -> bool:
        """Demote a listed message; keep it only if its logger shows DEBUG."""
        if record.levelno > logging.DEBUG and record.msg in self.formats:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def _demote(logger: logging.Logger, formats: frozenset[str]) -> None:
    """Attach a ``DemoteToDebug`` filter to ``logger`` once."""
    if not any(isinstance(f, DemoteToDebug) and f.formats == formats for f in logger.filters):
        logger.addFilter(DemoteToDebug(formats))


def quiet_tap_logger(tap_logger: logging.Logger) -> None:
    """Before the SDK builds the streams: its setup lines go to DEBUG."""
    _demote(tap_logger, TAP_CHATTER)
    _demote(logging.getLogger(STATE_LOGGER), STATE_CHATTER)


def quiet_stream_logger(stream_logger: logging.Logger) -> None:
    """Per-context "Beginning sync …" lines of a stream go to DEBUG."""
    _demote(stream_logger, STREAM_CHATTER)


def set_metric_lines(*, enabled: bool) -> None:
    """METRIC lines at INFO only when asked for (``log_metrics``) or at DEBUG."""
    logger = metrics.get_metrics_logger()
    if enabled:
        if logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    elif not logger.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.WARNING)


# --- Config validation and OAuth --------------------------------------------------------


class SchemaErrorsRewritten:
    """Tap mixin: the SDK's config schema errors pass through ``rewrite_schema_errors``.

    (The SDK validates in its private ``_validate_config``, called from its constructor.)
    """

    def rewrite_schema_errors(self, errors: list[str]) -> list[str]:
        """Override: return the messages to show instead of ``errors``."""
        return errors

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        try:
            errors = super()._validate_config(raise_errors=raise_errors)  # type: ignore[misc]
        except ConfigValidationError as exc:
            rewritten = self.rewrite_schema_errors(list(exc.errors))
            raise ConfigValidationError(str(exc), errors=rewritten, schema=exc.schema) from None
        return self.rewrite_schema_errors(list(errors))


def oauth_session(authenticator: OAuthAuthenticator) -> requests.Session:
    """The session the SDK's OAuth authenticator made for token requests."""
    return authenticator._session  # private: see the module docstring


# --- Tombstones -------------------------------------------------------------------------


def write_records(
    stream: Stream, records: list[dict[str, t.Any]], *, version: int | None = None
) -> int:
    """Write ``records`` as RECORD messages of ``stream`` now, outside its own sync.

    Its SCHEMA goes first (the message writer leaves out a repeat), and the records pass
    through the same selection, stream maps and message writer as synced ones. Nothing
    is written for a deselected stream. Returns how many records were written.

    With ``version``, these records carry that table version instead of the stream's
    (tombstones: below every version a live row is written with). The SDK writes all
    messages from one thread, so the swap is seen by these records only.
    """
    if not stream.selected or not records:
        return 0
    stream._write_schema_message()  # private: see the module docstring
    own_version = table_version(stream)
    if version is not None:
        set_table_version(stream, version)
    try:
        for record in records:
            stream._write_record_message(dict(record))  # private: see the module docstring
    finally:
        stream._stream_version = own_version  # private: see the module docstring
    return len(records)


def table_version(stream: Stream) -> int | None:
    """The Singer table version ``stream``'s records are written with now (None: none)."""
    return stream._stream_version  # private: see the module docstring


def set_table_version(stream: Stream, version: int) -> None:
    """Every RECORD of ``stream`` written from now on carries ``version``.

    The SDK sets it only for FULL_TABLE streams that emit ACTIVATE_VERSION at the start
    of each sync; the reconcile pass needs it for a whole run instead.
    """
    stream._stream_version = version  # private: see the module docstring


def write_activate_version(stream: Stream, version: int) -> None:
    """Write ``stream``'s ACTIVATE_VERSION ``version`` (nothing for a deselected stream).

    Its SCHEMA goes first: a target only knows streams it was told the schema of (the
    message writer leaves out a repeat).
    """
    if stream.selected:
        stream._write_schema_message()  # private: see the module docstring
        stream._write_activate_version_message(version)  # private: see the module docstring


def skip_state_offer(stream: Stream) -> None:
    """No STATE offer when ``stream``'s current sync ends (it changed no state).

    The SDK offers the whole tap state after a sync that wrote records (its state
    manager is not "flushed"); marking it flushed skips that one offer. A later offer
    carries whatever else changed meanwhile, so the written states stay a subset of the
    offered ones.
    """
    stream.state_manager.is_flushed = True


def write_state(stream: Stream) -> None:
    """Write a STATE message with the tap's whole state now."""
    stream.state_manager.is_flushed = False
    stream._write_state_message()  # private: see the module docstring
