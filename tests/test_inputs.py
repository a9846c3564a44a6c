"""Bad config files, environment, state and catalog fail in one clear line, before output.

The tap runs as a subprocess, as a user or Meltano runs it: each failure must exit with
code 1, say what is wrong and where on one ERROR line, show no traceback (unless the
log level is DEBUG), write nothing to stdout and send nothing to Asana.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest

from tap_asana_vl.cli_errors import one_line
from tap_asana_vl.inputs import check_state
from tap_asana_vl.tap import STREAM_NAMES, TapAsanaVl
from tests.tap_runner import FAST, catalog_selecting, run_tap

TASKS_PARTITION = {"context": {"project_gid": "1200000000269941"}}


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


@pytest.mark.parametrize("value", ["ture", "flase", "", "2"])
def test_an_environment_boolean_that_is_neither_true_nor_false_is_named(fake, tmp_path, value):
    # The SDK reads any text but true/1/yes/on as false: a typo would silently turn
    # subtasks off.
    env = {
        "TAP_ASANA_VL_ACCESS_TOKEN": fake.pat,
        "TAP_ASANA_VL_API_URL": fake.api_url,
        "TAP_ASANA_VL_INCLUDE_SUBTASKS": value,
    }
    proc = run_cli(tmp_path, env=env)
    assert_fails_in_one_line(
        proc,
        fake,
        "Environment variable TAP_ASANA_VL_INCLUDE_SUBTASKS (setting include_subtasks) "
        f"is not a boolean: {value!r} (use true or false)",
    )


@pytest.mark.parametrize("value", ["1200000000000001", '"1200000000000001"', "[12, 34]"])
def test_an_environment_list_that_is_not_a_list_of_strings_is_named(fake, tmp_path, value):
    # The SDK reads a lone gid as JSON, i.e. as a number, refused as "not of type
    # 'array'" with no word of the environment variable or of the form wanted.
    env = {
        "TAP_ASANA_VL_ACCESS_TOKEN": fake.pat,
        "TAP_ASANA_VL_API_URL": fake.api_url,
        "TAP_ASANA_VL_PROJECT_GIDS": value,
    }
    proc = run_cli(tmp_path, env=env)
    assert_fails_in_one_line(
        proc,
        fake,
        "Environment variable TAP_ASANA_VL_PROJECT_GIDS (setting project_gids) is not a "
        f"""JSON list of strings: {value!r} (e.g. '["123", "456"]')""",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True)],
        *[("false", False), ("False", False), ("0", False), ("no", False), ("off", False)],
    ],
)
def test_environment_booleans_read_as_the_sdk_reads_them(monkeypatch, value, expected):
    for name in os.environ:
        if name.startswith("TAP_ASANA_VL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TAP_ASANA_VL_ACCESS_TOKEN", "fake-pat")
    monkeypatch.setenv("TAP_ASANA_VL_INCLUDE_SUBTASKS", value)
    tap = TapAsanaVl(config={}, parse_env_config=True)
    assert tap.config["include_subtasks"] is expected


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


# --- state (item 19) -------------------------------------------------------------------


STATE_CASES = [
    pytest.param(
        {
            "bookmarks": {
                "tasks": {
                    "partitions": [
                        {
                            **TASKS_PARTITION,
                            "replication_key": "modified_at",
                            "replication_key_value": "yesterday",
                        }
                    ]
                }
            }
        },
        'stream \'tasks\', partition {"project_gid": "1200000000269941"}, key '
        "'replication_key_value': 'yesterday' is not an ISO 8601 date-time",
        id="garbage-partition-date",
    ),
    pytest.param(
        {"bookmarks": {"stories": {"replication_key_value": 1700000000}}},
        "stream 'stories', key 'replication_key_value': 1700000000 is not an ISO 8601",
        id="number-date",
    ),
    pytest.param(
        {"bookmarks": {"subtasks": {"search_bookmarks": {"123": "soon"}}}},
        "stream 'subtasks', key 'search_bookmarks', workspace '123': 'soon' is not an ISO",
        id="garbage-search-bookmark",
    ),
    pytest.param(
        {"bookmarks": "x"}, '"bookmarks" holds a string, not an object', id="bookmarks-str"
    ),
    pytest.param({"bookmarks": {"tasks": []}}, "stream 'tasks': the bookmark is a list", id="list"),
    pytest.param(
        {"bookmarks": {"tasks": {"partitions": [{"replication_key_value": "2024-01-01"}]}}},
        'partition #1: not an object with a "context" object',
        id="partition-without-context",
    ),
    pytest.param([], "holds a list, not a Singer state", id="list-state"),
    pytest.param({"currently_syncing": "tasks"}, 'has no "bookmarks"', id="no-bookmarks"),
    pytest.param(
        {"value": {"bookmarks": {"tasks": {"replication_key_value": "later"}}}},
        "'later' is not an ISO 8601",
        id="wrapped-and-bad",
    ),
]


@pytest.mark.parametrize(("state", "message"), STATE_CASES)
def test_bad_state_fails_before_any_output(fake, pat_config, tmp_path, state, message):
    proc = run_cli(tmp_path, config=pat_config, state=state)
    assert_fails_in_one_line(proc, fake, f"State file {tmp_path / 'state.json'}")
    assert message in proc.stderr


def test_malformed_state_json_names_the_file(fake, pat_config, tmp_path):
    proc = run_cli(tmp_path, config=pat_config, raw={"state": "{'bookmarks': {}}"})
    assert_fails_in_one_line(proc, fake, f"State file {tmp_path / 'state.json'} is not valid JSON")


def test_a_meltano_wrapped_state_is_unwrapped_not_ignored(fake, pat_config, tmp_path):
    config = {**pat_config, **FAST}
    first = run_tap(config)
    proc = run_cli(tmp_path, config=config, state={"value": first.state})
    assert proc.returncode == 0, proc.stderr
    assert "wraps the Singer state in 'value'" in proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    tasks = [m for m in records if m["type"] == "RECORD" and m["stream"] == "tasks"]
    # Resumed from the bookmarks: only the tasks at each project's bookmark come again.
    assert len(tasks) < len(fake.dataset.tasks) / 2


def test_a_bookmark_of_an_unknown_stream_is_only_a_warning(caplog):
    logger = logging.getLogger("test")
    check_state({"bookmarks": {"taskz": {"x": 1}}}, "State file s.json", STREAM_NAMES, logger)
    assert "State file s.json, stream 'taskz': this tap has no such stream" in caplog.text


def test_every_replication_key_is_a_date_time():
    # The state check reads every replication_key_value as a timestamp.
    tap = TapAsanaVl(config={}, validate_config=False, setup_mapper=False)
    for stream in tap.streams.values():
        if stream.replication_key:
            prop = stream.schema["properties"][stream.replication_key]
            assert prop.get("format") == "date-time", stream.name


# --- catalog (item 20) -----------------------------------------------------------------


def _catalog(config: dict[str, Any], selected: set[str], extra: dict[str, bool]) -> dict:
    """The tap's catalog with ``selected`` streams, plus unknown streams ``extra``."""
    catalog = catalog_selecting(config, selected)
    template = catalog["streams"][0]
    for name, is_selected in extra.items():
        entry = json.loads(json.dumps(template))
        entry["tap_stream_id"] = entry["stream"] = name
        for metadata in entry["metadata"]:
            if metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = is_selected
        catalog["streams"].append(entry)
    return catalog


def test_a_catalog_selecting_an_unknown_stream_fails(fake, pat_config, tmp_path):
    catalog = _catalog(pat_config, set(), {"taskz": True})
    proc = run_cli(tmp_path, config=pat_config, catalog=catalog)
    assert_fails_in_one_line(
        proc, fake, "selects stream 'taskz', which this tap does not have: did you mean 'tasks'?"
    )


def test_an_unknown_stream_left_unselected_is_harmless(fake, pat_config, tmp_path):
    catalog = _catalog({**pat_config, **FAST}, {"workspaces"}, {"taskz": False})
    proc = run_cli(tmp_path, config={**pat_config, **FAST}, catalog=catalog)
    assert proc.returncode == 0, proc.stderr
    assert '"stream":"workspaces"' in proc.stdout.replace(" ", "")


@pytest.mark.parametrize(
    ("catalog", "message"),
    [
        pytest.param({"streams": "x"}, '"streams" is a string, not a list', id="streams-str"),
        pytest.param({}, '"streams" is missing', id="no-streams"),
        pytest.param([], "holds a list, not a Singer catalog", id="list"),
        pytest.param(
            {"streams": [{"stream": "tasks"}]},
            'streams[0]: not an object with a "tap_stream_id"',
            id="no-id",
        ),
        pytest.param(
            {"streams": [{"tap_stream_id": "tasks", "metadata": {"selected": True}}]},
            "stream 'tasks': \"metadata\" must be a list",
            id="metadata-not-list",
        ),
    ],
)
def test_a_malformed_catalog_fails_clearly(fake, pat_config, tmp_path, catalog, message):
    proc = run_cli(tmp_path, config=pat_config, catalog=catalog)
    assert_fails_in_one_line(proc, fake, f"Catalog file {tmp_path / 'catalog.json'}")
    assert message in proc.stderr


def test_malformed_catalog_json_names_the_file(fake, pat_config, tmp_path):
    proc = run_cli(tmp_path, config=pat_config, raw={"catalog": '{"streams": ['})
    assert_fails_in_one_line(
        proc, fake, f"Catalog file {tmp_path / 'catalog.json'} is not valid JSON"
    )


def test_a_catalog_selecting_nothing_warns(fake, pat_config, tmp_path):
    proc = run_cli(tmp_path, config=pat_config, catalog=catalog_selecting(pat_config, set()))
    assert proc.returncode == 0, proc.stderr
    assert "The catalog selects no stream, so nothing will be synced" in proc.stderr
    assert fake.requests == []
