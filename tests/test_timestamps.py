"""Timestamps are read and written exactly as before pendulum: Asana's format, UTC."""

from __future__ import annotations

import datetime

import pytest

from tap_asana_vl.timestamps import format_timestamp, older_than, parse_timestamp, shift_ms


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("2024-01-31", "2024-01-31T00:00:00.000Z"),
        ("2024-01-31T10:11:12Z", "2024-01-31T10:11:12.000Z"),
        ("2024-01-31T10:11:12.345Z", "2024-01-31T10:11:12.345Z"),
        ("2024-01-31T10:11:12.345678+00:00", "2024-01-31T10:11:12.345Z"),  # SDK state
        ("2024-01-31T10:11:12+02:00", "2024-01-31T08:11:12.000Z"),
        ("2024-01-31T10:11:12", "2024-01-31T10:11:12.000Z"),  # no offset: UTC
        ("2024-01-31 10:11:12", "2024-01-31T10:11:12.000Z"),
    ],
)
def test_timestamps_are_written_as_asana_writes_them(text, written):
    assert format_timestamp(parse_timestamp(text)) == written


@pytest.mark.parametrize("text", ["last tuesday", "2024-13-01", "2024-02-30", "", "12:00", "P1D"])
def test_what_is_not_a_date_time_is_a_value_error(text):
    with pytest.raises(ValueError):  # noqa: PT011 (the callers catch exactly this)
        parse_timestamp(text)


def test_a_non_string_is_a_type_error():
    with pytest.raises(TypeError):
        parse_timestamp(20240131)  # type: ignore[arg-type]


def test_shifts_and_ages():
    assert shift_ms("2024-01-31T10:11:12.000Z", -1) == "2024-01-31T10:11:11.999Z"
    assert shift_ms("2024-12-31T23:59:59.999Z", 1) == "2025-01-01T00:00:00.000Z"
    aware = datetime.datetime(2024, 1, 1, 1, 2, 3, 999_999, tzinfo=datetime.timezone.utc)
    assert format_timestamp(aware) == "2024-01-01T01:02:03.999Z"
    eight_days_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=8)
    assert older_than(format_timestamp(eight_days_ago), 7)
    assert not older_than(format_timestamp(eight_days_ago), 8.5)
