"""Bad config files, environment, state and catalog fail in one clear line, before output.

The tap runs as a subprocess, as a user or Meltano runs it: each failure must exit with
code 1, say what is wrong and where on one ERROR line, show no traceback (unless the
log level is DEBUG), write nothing to stdout and send nothing to Asana.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tap_asana_vl.cli_errors import one_line

FAST = {"max_requests_per_minute": 100_000}


def run_cli(
    tmp_path,
    *,
    config: Any = None,
    state: Any = None,
    catalog: Any = None,
    env: dict[str, str] | None = None,
    raw: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tap_asana_vl`` with these inputs written to files.

    ``raw`` gives a file's text as is (e.g. broken JSON), by option name.
    """
    args = [sys.executable, "-m", "tap_asana_vl"]
    texts = {
        name: json.dumps(value)
        for name, value in (("config", config), ("state", state), ("catalog", catalog))
        if value is not None
    }
    texts.update(raw or {})
    for name, text in texts.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        args += [f"--{name}", str(path)]
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_ASANA_VL_")}
    return subprocess.run(
        [*args, *(["--config", "ENV"] if env else [])],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
        env={**clean_env, **(env or {})},
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "| ERROR" in line]


def assert_fails_in_one_line(proc: subprocess.CompletedProcess[str], fake, message: str) -> None:
    """Exit 1, ``message`` on the last ERROR line, no traceback, no output, no request."""
    assert proc.returncode == 1, proc.stderr
    errors = error_lines(proc.stderr)
    assert errors, proc.stderr
    assert message in errors[-1], proc.stderr
    assert errors[-1] == proc.stderr.splitlines()[-1], "the error is the last line"
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert fake.requests == []


# --- config files and environment (item 18) ---------------------------------------------


def test_malformed_config_json_names_the_file(fake, tmp_path):
    proc = run_cli(tmp_path, raw={"config": '{"access_token": "x",'})
    path = tmp_path / "config.json"
    assert_fails_in_one_line(proc, fake, f"Config file {path} is not valid JSON")


def test_a_config_file_holding_a_list_fails_clearly(fake, tmp_path):
    proc = run_cli(tmp_path, config=[1, 2])
    assert_fails_in_one_line(proc, fake, "holds a list, not an object of settings")


def test_a_missing_config_file_is_named(fake, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tap_asana_vl", "--config", str(tmp_path / "nope.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_fails_in_one_line(proc, fake, f"Config file {tmp_path / 'nope.json'} does not exist")


def test_an_unparsable_environment_setting_is_named(fake, tmp_path):
    env = {
        "TAP_ASANA_VL_ACCESS_TOKEN": fake.pat,
        "TAP_ASANA_VL_API_URL": fake.api_url,
        "TAP_ASANA_VL_PAGE_SIZE": "abc",
    }
    proc = run_cli(tmp_path, env=env)
    assert_fails_in_one_line(
        proc,
        fake,
        "Environment variable TAP_ASANA_VL_PAGE_SIZE (setting page_size) is not an integer",
    )
    assert fake.pat not in proc.stderr


# --- errors during the run (item 18) -------------------------------------------------


def test_an_api_error_during_the_run_ends_in_one_line(fake, pat_config, tmp_path):
    fake.inject(r"/api/1\.0/workspaces/\d+/tags", 400, times=None)
    proc = run_cli(tmp_path, config={**pat_config, **FAST})
    assert proc.returncode == 1
    errors = error_lines(proc.stderr)
    assert "400" in errors[-1]
    assert errors[-1] == proc.stderr.splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_a_config_error_found_during_the_run_ends_in_one_line(fake, pat_config, tmp_path):
    proc = run_cli(tmp_path, config={**pat_config, "workspace_gids": ["999"]})
    assert proc.returncode == 1
    errors = error_lines(proc.stderr)
    assert "Setting workspace_gids names 999" in errors[-1]
    assert errors[-1] == proc.stderr.splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_the_traceback_is_shown_at_debug_level(fake, tmp_path):
    env = {
        "TAP_ASANA_VL_ACCESS_TOKEN": "fake-pat-revoked",
        "TAP_ASANA_VL_API_URL": fake.api_url,
        "TAP_ASANA_VL_LOGLEVEL": "DEBUG",
    }
    proc = run_cli(tmp_path, env=env)
    assert proc.returncode == 1
    assert "Asana rejected the personal access token" in proc.stderr
    assert "Traceback" in proc.stderr


def test_an_unforeseen_error_names_its_type_and_where_to_find_more():
    assert one_line(KeyError("gid")) == (
        "KeyError: 'gid' (set TAP_ASANA_VL_LOGLEVEL=DEBUG for the traceback)"
    )
