"""Timestamps as Asana and Singer state write them: ISO 8601, UTC, milliseconds, ``Z``.

Parsing, formatting and arithmetic go through pendulum, so no format string or ``Z``
juggling is written by hand. (``Retry-After`` HTTP dates are the one exception: RFC
9110's IMF-fixdate is read by the standard library's ``email.utils``, which implements
exactly that format; see ``transport.retry_after_seconds``.)
"""

from __future__ import annotations

import email.utils
import threading
import typing as t

import pendulum

if t.TYPE_CHECKING:
    import datetime

#: Asana's own format: ``2024-01-31T09:15:00.123Z``.
ASANA_FORMAT = "YYYY-MM-DD[T]HH:mm:ss.SSS[Z]"


def parse_timestamp(value: str) -> pendulum.DateTime:
    """Parse an ISO 8601 date or date-time (Asana's, SDK state's, a setting's).

    A date is midnight UTC; a date-time without an offset is UTC.

    Raises:
        ValueError: ``value`` is not an ISO 8601 date or date-time.
        TypeError: ``value`` is not a string.

    """
    parsed = pendulum.parse(value, exact=True)
    if isinstance(parsed, pendulum.DateTime):
        return parsed
    if isinstance(parsed, pendulum.Date):
        return pendulum.datetime(parsed.year, parsed.month, parsed.day, tz="UTC")
    msg = f"{value!r} is a time or a duration, not a date-time"
    raise ValueError(msg)


def format_timestamp(value: datetime.datetime) -> str:
    """Format a date-time the way Asana writes them: UTC, milliseconds, ``Z``."""
    return pendulum.instance(value).in_timezone("UTC").format(ASANA_FORMAT)


def now() -> pendulum.DateTime:
    """The current time, in UTC."""
    return pendulum.now("UTC")


def shift_ms(timestamp: str, milliseconds: int) -> str:
    """``timestamp`` moved by ``milliseconds`` (negative: earlier), formatted as Asana does."""
    return format_timestamp(
        parse_timestamp(timestamp) + pendulum.duration(milliseconds=milliseconds)
    )


def older_than(timestamp: str, days: float) -> bool:
    """Whether ``timestamp`` lies at least ``days`` days in the past."""
    return now() - parse_timestamp(timestamp) >= pendulum.duration(days=days)


def minutes_before(moment: datetime.datetime, minutes: float) -> pendulum.DateTime:
    """``moment`` minus ``minutes`` minutes."""
    return pendulum.instance(moment) - pendulum.duration(minutes=minutes)


class ServerClock:
    """The latest time Asana's own clock showed (its answers' ``Date`` header).

    Bookmarks that say "everything up to here was read" are taken from Asana's clock, not
    the tap host's: a host clock minutes off would otherwise skip or repeat changes.
    Thread-safe (answers arrive on several threads).
    """

    def __init__(self) -> None:
        """No answer seen yet."""
        self._lock = threading.Lock()
        self._latest: datetime.datetime | None = None

    def saw(self, date_header: str | None) -> None:
        """An answer carried ``Date: date_header`` (RFC 9110 IMF-fixdate; ignored if bad)."""
        if not date_header:
            return
        try:
            moment = email.utils.parsedate_to_datetime(date_header)
        except (TypeError, ValueError):
            return
        if moment.tzinfo is None:
            return
        with self._lock:
            if self._latest is None or moment > self._latest:
                self._latest = moment

    def latest(self) -> pendulum.DateTime:
        """Asana's time at the latest answer (second precision), else the host's time.

        One second earlier than the header says: it is truncated to the second, and
        what Asana had done before that answer is what it covers.
        """
        with self._lock:
            latest = self._latest
        if latest is None:
            return now()
        return pendulum.instance(latest).in_timezone("UTC") - pendulum.duration(seconds=1)
