"""Run the tap in-process and collect the Singer messages it writes."""

from __future__ import annotations

import copy
import io
import json
import logging
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Collection
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tap_asana_vl.tap import STREAM_TYPES, TapAsanaVl
from tests.fake_asana import FakeAsana

#: No request quota: the fake answers at once, and what a test measures is the tap.
FAST: dict[str, Any] = {"max_requests_per_minute": 100_000}


@dataclass
class SyncResult:
    """Messages of one run, by kind."""

    messages: list[dict[str, Any]]
    stdout: str
    logs: str
    records: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    states: list[dict[str, Any]] = field(default_factory=list)
    tap: TapAsanaVl | None = None

    @property
    def state(self) -> dict[str, Any]:
        """The last STATE the tap emitted (what a target would persist)."""
        return self.states[-1] if self.states else {}

    def by_key(self) -> dict[tuple[str, tuple[str, ...]], dict[str, Any]]:
        """Every record by (stream, primary key values): the last one emitted wins."""
        keys = {stream_type.name: stream_type.primary_keys for stream_type in STREAM_TYPES}
        return {
            (stream, tuple(str(record[k]) for k in keys[stream])): record
            for stream, records in self.records.items()
            for record in records
        }

    def activations(self, streams: Collection[str] | None = None) -> list[dict[str, Any]]:
        """The run's ACTIVATE_VERSION messages in order (of ``streams`` only, if given)."""
        return [
            m
            for m in self.messages
            if m["type"] == "ACTIVATE_VERSION" and (streams is None or m["stream"] in streams)
        ]

    def activated_versions(self) -> dict[str, int]:
        """The version of each stream's (last) ACTIVATE_VERSION in the run."""
        return {m["stream"]: m["version"] for m in self.activations()}

    def gids(self, stream: str) -> list[str]:
        """Primary keys of a stream's records, in emission order."""
        return [r["gid"] for r in self.records[stream]]


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def run_tap(
    config: dict[str, Any],
    *,
    state: dict[str, Any] | None = None,
    catalog: dict[str, Any] | None = None,
) -> SyncResult:
    """Sync everything selected and parse stdout into messages."""
    handler = _ListHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    # The CLI logs at INFO; in-process the root logger would drop INFO lines.
    previous_level = root.level
    root.setLevel(logging.INFO)
    # A text stream over bytes, like the real stdout: the writer uses its .buffer.
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    stderr = io.StringIO()
    try:
        tap = TapAsanaVl(
            # Copies: the SDK updates state in place, and callers compare runs.
            config=copy.deepcopy(config),
            state=copy.deepcopy(state),
            catalog=copy.deepcopy(catalog),
            parse_env_config=False,
        )
        with redirect_stdout(stdout), redirect_stderr(stderr):
            tap.sync_all()
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
    stdout.flush()
    text = stdout.buffer.getvalue().decode("utf-8")  # type: ignore[attr-defined]
    messages = [json.loads(line) for line in text.splitlines() if line.strip()]
    result = SyncResult(
        messages=messages,
        stdout=text,
        logs="\n".join(handler.lines) + stderr.getvalue(),
        tap=tap,
    )
    for message in messages:
        if message["type"] == "RECORD":
            result.records[message["stream"]].append(message["record"])
        elif message["type"] == "STATE":
            result.states.append(message["value"])
    return result


#: Fields the tap adds to records itself (the key of the parent it listed them under).
TAP_ADDED_FIELDS = frozenset({"project_gid", "task_gid", "portfolio_gid"})


def as_served(fake: FakeAsana, path: str, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as the fake answered it at ``path`` (a stream's path template) for the
    ``opt_fields`` the tap sent there: what the tap should emit, field for field."""
    pattern = re.compile("^/api/1.0" + re.sub(r"\{\w+\}", "[^/]+", path) + "$")
    sent = [r.query.get("opt_fields", [""])[0] for r in fake.requests if pattern.match(r.path)]
    return fake.shape(obj, path, max(sent, key=len))


def catalog_selecting(config: dict[str, Any], selected: set[str]) -> dict[str, Any]:
    """The tap's catalog with exactly the ``selected`` streams selected."""
    catalog = TapAsanaVl(config=config, parse_env_config=False).catalog_dict
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = stream["tap_stream_id"] in selected
    return catalog


def run_cli(
    tmp_path: Path, config: dict[str, Any], state: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tap_asana_vl --config <file> [--state <file>]`` as a user would,
    no stdin (for runs that must fail or be seen from outside the process)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    args = [sys.executable, "-m", "tap_asana_vl", "--config", str(path)]
    if state is not None:
        state_path = tmp_path / "state.json"
        state_path.write_text(json.dumps(state))
        args += ["--state", str(state_path)]
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def parse_lines(text: str) -> list[dict[str, Any]]:
    """Singer messages of a tap's output, up to the line a kill cut in half."""
    messages = []
    for line in text.splitlines():
        try:
            messages.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the line the kill cut in half
    return messages


def run_killed(
    tmp_path: Path, config: dict[str, Any], kill_after_states: int
) -> tuple[list[dict[str, Any]], bool]:
    """Run the tap's CLI with ``config`` and SIGKILL it once it wrote that many STATEs.

    Returns the messages written before the kill and whether it was still running (a
    run that ended first tested nothing).
    """
    config_path, out_path = tmp_path / "config.json", tmp_path / "out.jsonl"
    config_path.write_text(json.dumps(config))
    with out_path.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tap_asana_vl", "--config", str(config_path)],
            stdout=out,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out_path.read_text().count('"type":"STATE"') >= kill_after_states:
                break
            time.sleep(0.005)
        running = proc.poll() is None
        proc.kill()  # SIGKILL: no handler, no final state
        proc.wait()
    return parse_lines(out_path.read_text()), running
