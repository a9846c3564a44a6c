"""Timestamps as Asana and Singer state write them: ISO 8601, UTC, milliseconds, ``Z``."""

from __future__ import annotations

import datetime


def parse_timestamp(value: str) -> datetime.datetime:
    """Parse an Asana (or SDK state) ISO-8601 timestamp into an aware datetime."""
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed


def format_timestamp(value: datetime.datetime) -> str:
    """Format a datetime the way Asana writes them: UTC, milliseconds, ``Z``."""
    utc = value.astimezone(datetime.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def now() -> datetime.datetime:
    """The current time, in UTC."""
    return datetime.datetime.now(datetime.timezone.utc)


def shift_ms(timestamp: str, milliseconds: int) -> str:
    """``timestamp`` moved by ``milliseconds`` (negative: earlier), formatted as Asana does."""
    moved = parse_timestamp(timestamp) + datetime.timedelta(milliseconds=milliseconds)
    return format_timestamp(moved)


def older_than(timestamp: str, days: float) -> bool:
    """Whether ``timestamp`` lies at least ``days`` days in the past."""
    return now() - parse_timestamp(timestamp) >= datetime.timedelta(days=days)


def minutes_before(moment: datetime.datetime, minutes: float) -> datetime.datetime:
    """``moment`` minus ``minutes`` minutes."""
    return moment - datetime.timedelta(minutes=minutes)
