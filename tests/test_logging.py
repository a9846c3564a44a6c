"""What a user reads at the default log level: progress, not noise.

The tap runs as a user runs it (a subprocess with the CLI's own logging setup), against
a fake workspace big enough for the per-run lines (version, summary) not to dominate.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tap_asana_vl import progress
from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import catalog_selecting, run_tap

PROJECT_LINE = re.compile(
    r'project (?P<pos>\d+)/(?P<total>\d+) "(?P<name>[^"]+)": (?P<tasks>[\d,]+) tasks?, '
    r"(?P<stories>[\d,]+) stor(?:y|ies)(?:, [\d,]+ other records?)?; "
    r"(?P<so_far>[\d,]+) records so far, [\d.]+ req/s$"
)


@pytest.fixture(scope="module")
def workspace() -> Iterator[FakeAsana]:
    """One workspace, 8 projects of 30 tasks: about 2,000 records with default streams."""
    dataset = build_dataset(workspaces=1, projects_per_workspace=8, tasks_per_project=30, seed=5)
    with FakeAsana(dataset) as server:
        yield server


def _cli(tmp_path: Path, config: dict[str, Any], **env: str) -> subprocess.CompletedProcess[str]:
    """The tap's CLI with ``config``, no stdin, no TAP_ASANA_VL_* from this environment."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAP_ASANA_VL_")}
    clean.pop("LOGLEVEL", None)
    return subprocess.run(
        [sys.executable, "-m", "tap_asana_vl", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**clean, **env},
        check=False,
    )


def _run(tmp_path: Path, config: dict[str, Any], **env: str) -> tuple[list[str], list[dict]]:
    proc = _cli(tmp_path, config, **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    messages = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.stderr.splitlines(), [m for m in messages if m["type"] == "RECORD"]


def _config(fake: FakeAsana, **settings: Any) -> dict[str, Any]:
    # A fast pacer: this test is about the log, not about the quota.
    return {
        "access_token": fake.pat,
        "api_url": fake.api_url,
        "max_requests_per_minute": 60000,
        **settings,
    }


def test_a_full_sync_logs_progress_not_noise(workspace: FakeAsana, tmp_path: Path) -> None:
    lines, records = _run(tmp_path, _config(workspace))
    assert len(records) >= 1500
    # The budget of the issue: at most 50 lines per 1,000 records.
    assert len(lines) <= 50 * len(records) / 1000, "\n".join(lines)
    text = "\n".join(lines)
    assert "METRIC" not in text
    assert "not resumable" not in text
    assert "Beginning sync of" not in text
    assert "as child stream to" not in text

    # One line per project, in order, each counting that project's own tasks.
    project_lines = [m for line in lines if (m := PROJECT_LINE.search(line))]
    assert [int(m["pos"]) for m in project_lines] == list(range(1, 9))
    assert {int(m["total"]) for m in project_lines} == {8}
    tasks_per_project = Counter(
        r["record"]["project_gid"] for r in records if r["stream"] == "tasks"
    )
    names = {r["record"]["gid"]: r["record"]["name"] for r in records if r["stream"] == "projects"}
    by_name = {names[gid]: count for gid, count in tasks_per_project.items()}
    assert {m["name"]: int(m["tasks"].replace(",", "")) for m in project_lines} == by_name
    so_far = [int(m["so_far"].replace(",", "")) for m in project_lines]
    assert so_far == sorted(so_far)
    assert so_far[-1] <= len(records)
    assert any("workspace " in line and "8 projects to sync" in line for line in lines)
    # The per-stream summary and the run total close the log.
    assert sum("Summary for '" in line for line in lines) >= 5
    assert re.search(r"Sync finished: [\d,]+ records, [\d,]+ requests in", lines[-1])


def test_metric_lines_with_the_setting(workspace: FakeAsana, tmp_path: Path) -> None:
    config = _config(workspace, project_gids=[next(iter(workspace.dataset.projects))])
    lines, _ = _run(tmp_path, {**config, "log_metrics": True})
    assert any("METRIC" in line and "http_request_count" in line for line in lines)


def test_debug_shows_what_the_default_level_hides(workspace: FakeAsana, tmp_path: Path) -> None:
    config = _config(workspace, project_gids=[next(iter(workspace.dataset.projects))])
    lines, _ = _run(tmp_path, config, TAP_ASANA_VL_LOGLEVEL="DEBUG")
    text = "\n".join(lines)
    assert "METRIC" in text
    assert "Beginning sync of 'tasks'" in text
    assert "as child stream to" in text


def test_heartbeat_during_a_long_listing(
    fake: FakeAsana, pat_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every request takes 0.2 s; the heartbeat speaks after 0.3 s of silence.
    monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.3)
    fake.latency = 0.2
    config = {
        **pat_config,
        "project_gids": [next(iter(fake.dataset.projects))],
        "max_concurrent_requests": 1,
    }
    catalog = catalog_selecting(config, {"projects", "tasks", "stories"})
    result = run_tap(config, catalog=catalog)
    beats = [line for line in result.logs.splitlines() if "still working on" in line]
    assert beats, result.logs
    assert all(re.search(r"[\d,]+ records so far, [\d.]+ req/s", line) for line in beats)
    assert any('project 1/1 "' in line for line in beats)


def test_a_failing_run_ends_in_one_error_line(workspace: FakeAsana, tmp_path: Path) -> None:
    workspace.inject(r"/api/1.0/tasks/\d+/stories", 500, times=None)
    try:
        proc = _cli(tmp_path, _config(workspace, max_retries=0))
    finally:
        workspace.clear_faults()
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, proc.stderr
    assert "Giving up on /tasks/{task_gid}/stories after 1 attempts: 500" in errors[0]


def test_under_meltanos_structured_logging_too(workspace: FakeAsana, tmp_path: Path) -> None:
    # What Meltano 4.4.1 writes to .meltano/run/<tap>/tap.singer_sdk_logging.json for a
    # plugin with the structured-logging capability; the SDK applies it with dictConfig.
    log_config = tmp_path / "tap.singer_sdk_logging.json"
    log_config.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {
                    "singer_formatter": {"()": "singer_sdk.logging.StructuredFormatter"}
                },
                "handlers": {
                    "console": {
                        "class": "logging.StreamHandler",
                        "formatter": "singer_formatter",
                        "stream": "ext://sys.stderr",
                    }
                },
                "root": {"handlers": ["console"], "level": "INFO"},
            }
        )
    )
    lines, records = _run(tmp_path, _config(workspace), SINGER_SDK_LOG_CONFIG=str(log_config))
    assert len(lines) <= 50 * len(records) / 1000, "\n".join(lines[:40])
    messages = [json.loads(line)["message"] for line in lines]
    assert "METRIC" not in messages
    assert sum(PROJECT_LINE.search(m) is not None for m in messages) == 8
