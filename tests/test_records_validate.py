"""Every record of a full sync is valid against the SCHEMA message the tap sent for it.

This is what a validating target (target-postgres, target-jsonl) checks: one record the
schema refuses fails the whole load. The fake sends what Asana documents, nulls
included, independently of the tap's schemas.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from tap_asana_vl.tap import STREAM_TYPES
from tests.tap_runner import FAST, run_tap


def test_every_record_of_every_stream_matches_its_schema_message(fake, pat_config):
    result = run_tap({**pat_config, **FAST})

    validators: dict[str, jsonschema.Draft7Validator] = {}
    checked: dict[str, int] = dict.fromkeys((s.name for s in STREAM_TYPES), 0)
    problems: list[str] = []
    for message in result.messages:
        stream = message.get("stream")
        if message["type"] == "SCHEMA":
            validators[stream] = jsonschema.Draft7Validator(
                message["schema"], format_checker=jsonschema.FormatChecker()
            )
        elif message["type"] == "RECORD":
            record: dict[str, Any] = message["record"]
            for error in validators[stream].iter_errors(record):
                where = ".".join(str(p) for p in error.absolute_path)
                problems.append(f"{stream} {record.get('gid')} {where}: {error.message}")
            checked[stream] += 1

    assert not problems, "\n".join(problems[:20])
    empty = sorted(stream for stream, count in checked.items() if count == 0)
    assert not empty, f"streams with no record to check: {empty}"
