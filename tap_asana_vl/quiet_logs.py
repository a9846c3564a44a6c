"""Keep the SDK's per-context chatter and METRIC lines out of the default log.

The SDK logs at INFO, for every context of every stream, lines such as "Beginning sync
of 'tasks' … with context keys: ('project_gid',)", and one METRIC line per request,
timer and counter. For a run with hundreds of projects and thousands of tasks that is
most of the log (3,505 of 3,672 lines in one real run) and it hides the progress lines
(see ``progress.py``). The lines are not lost: they are demoted to DEBUG, where
``TAP_ASANA_VL_LOGLEVEL=DEBUG`` shows them; METRIC lines also return with the
``log_metrics`` setting.

This module knows the SDK's logger names and message formats: when upgrading the SDK,
check them here (tests/test_quiet_logs.py fails if a demoted line comes back at INFO).
"""

from __future__ import annotations

import logging

from singer_sdk import metrics

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


def demote(logger: logging.Logger, formats: frozenset[str]) -> None:
    """Attach a ``DemoteToDebug`` filter to ``logger`` once."""
    if not any(isinstance(f, DemoteToDebug) and f.formats == formats for f in logger.filters):
        logger.addFilter(DemoteToDebug(formats))


def quiet_tap_logger(tap_logger: logging.Logger) -> None:
    """Before the SDK builds the streams: its setup lines go to DEBUG."""
    demote(tap_logger, TAP_CHATTER)
    demote(logging.getLogger(STATE_LOGGER), STATE_CHATTER)


def quiet_stream_logger(stream_logger: logging.Logger) -> None:
    """Per-context "Beginning sync …" lines of a stream go to DEBUG."""
    demote(stream_logger, STREAM_CHATTER)


def set_metric_lines(*, enabled: bool) -> None:
    """METRIC lines at INFO only when asked for (``log_metrics``) or at DEBUG."""
    logger = metrics.get_metrics_logger()
    if enabled:
        if logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    elif not logger.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.WARNING)
