"""What tap_asana_vl.sdk_adapter assumes of the installed Singer SDK, one test each.

After an SDK upgrade, a failure here names the internal that changed; the adapter is the
only module to fix.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout

import pytest
import requests
from singer_sdk import metrics
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError

from tap_asana_vl import sdk_adapter
from tap_asana_vl.auth import AsanaOAuthAuthenticator
from tap_asana_vl.tap import TapAsanaVl
from tests.tap_runner import catalog_selecting, run_tap

OFFLINE = {"access_token": "fake-pat-offline", "api_url": "http://127.0.0.1:9/api/1.0"}
PROJECT = {"project_gid": "1200000000000001"}


def _tap(state: dict | None = None, **config: object) -> TapAsanaVl:
    return TapAsanaVl(config={**OFFLINE, **config}, state=state, parse_env_config=False)


class _Recorder(logging.Filter):
    """Records what a logger is asked to log, before any other filter changes it."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(logging.makeLogRecord(record.__dict__))
        return True


@contextmanager
def _recording(*names: str) -> Iterator[_Recorder]:
    recorder = _Recorder()
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.filters.insert(0, recorder)
    try:
        yield recorder
    finally:
        for logger in loggers:
            logger.removeFilter(recorder)


# --- State ------------------------------------------------------------------------------


def test_own_state_is_the_stream_entry_of_the_tap_state():
    tap = _tap()
    sdk_adapter.own_state(tap.streams["subtasks"])["search_bookmarks"] = {"1": "x"}
    assert tap.state["bookmarks"]["subtasks"]["search_bookmarks"] == {"1": "x"}


def test_bookmark_value_reads_a_partition_bookmark():
    state = {
        "bookmarks": {
            "tasks": {
                "partitions": [
                    {
                        "context": PROJECT,
                        "replication_key": "modified_at",
                        "replication_key_value": "2024-05-01T10:00:00.000Z",
                    }
                ]
            }
        }
    }
    tap = _tap(state)
    assert sdk_adapter.bookmark_value(tap.streams["tasks"], PROJECT) == "2024-05-01T10:00:00.000Z"
    assert sdk_adapter.bookmark_value(tap.streams["tasks"], {"project_gid": "2"}) is None


def test_advance_bookmark_writes_the_sdk_progress_markers_and_drop_progress_removes_them():
    tap = _tap()
    tasks = tap.streams["tasks"]
    sdk_adapter.advance_bookmark(
        tasks, {"gid": "7", "modified_at": "2024-05-01T10:00:00Z"}, PROJECT
    )
    (partition,) = tap.state["bookmarks"]["tasks"]["partitions"]
    assert partition["context"] == PROJECT
    markers = partition[sdk_adapter.PROGRESS_MARKERS]
    assert markers["replication_key_value"] == "2024-05-01T10:00:00Z"
    # What the SDK makes final at the end of a partition: a bookmark (checked as such).
    sdk_adapter.drop_progress(tasks, PROJECT)
    assert sdk_adapter.PROGRESS_MARKERS not in partition


def test_partition_state_keeps_the_tap_s_own_keys_next_to_the_bookmark():
    tap = _tap()
    sdk_adapter.partition_state(tap.streams["tasks"], PROJECT)["events_sync"] = "tok"
    (partition,) = tap.state["bookmarks"]["tasks"]["partitions"]
    assert partition == {"context": PROJECT, "events_sync": "tok"}


def test_every_state_the_sdk_writes_goes_to_the_routed_callable(fake, pat_config, monkeypatch):
    offered: list[dict] = []
    route_to = sdk_adapter.route_state_messages

    def route(tap: TapAsanaVl, offer: object) -> None:
        route_to(tap, offered.append)

    monkeypatch.setattr(sdk_adapter, "route_state_messages", route)
    result = run_tap({**pat_config, "max_requests_per_minute": 100_000})
    # Nothing reached stdout another way; the SDK offered a state per child sync.
    assert result.states == []
    assert len(offered) > len(fake.dataset.projects)
    assert offered[-1]["bookmarks"]["tasks"]["partitions"]


def test_without_interim_markers_leaves_what_the_sdk_keeps_when_it_finalizes():
    tap = _tap(state={"bookmarks": {"tasks": {"partitions": [{"context": PROJECT}]}}})
    tasks = tap.streams["tasks"]
    # What the SDK does at the start of a partition's sync, then per record.
    tasks._write_starting_replication_value(PROJECT)
    tasks._write_replication_key_signpost(PROJECT, "2099-01-01T00:00:00Z")
    sdk_adapter.advance_bookmark(
        tasks, {"gid": "7", "modified_at": "2024-05-01T10:00:00Z"}, PROJECT
    )
    sdk_adapter.partition_state(tasks, PROJECT)["events_sync"] = "tok"
    interim = sdk_adapter.without_interim_markers(tap.state)
    tasks.state_manager.finalize_state(sdk_adapter.partition_state(tasks, PROJECT))
    final = tap.state
    (partition,) = final["bookmarks"]["tasks"]["partitions"]
    assert partition["replication_key_value"] == "2024-05-01T10:00:00Z"
    # Finalizing removed exactly the interim keys, and only added the bookmark.
    (interim_partition,) = interim["bookmarks"]["tasks"]["partitions"]
    assert interim_partition == {"context": PROJECT, "events_sync": "tok"}
    bookmark = {"replication_key", "replication_key_value"}
    assert {k: v for k, v in partition.items() if k not in bookmark} == interim_partition
    assert set(sdk_adapter.INTERIM_KEYS) & set(json.dumps(tap.state).split('"')) == set()


def test_finalize_partition_makes_the_progress_of_a_wider_context_the_bookmark():
    """A project's context also names its workspace; its partition is the project."""
    tap = _tap()
    tasks = tap.streams["tasks"]
    context = {**PROJECT, "workspace_gid": "9"}
    sdk_adapter.advance_bookmark(
        tasks, {"gid": "7", "modified_at": "2024-05-01T10:00:00Z"}, context
    )
    sdk_adapter.finalize_partition(tasks, context)
    (partition,) = tap.state["bookmarks"]["tasks"]["partitions"]
    assert partition["context"] == PROJECT
    assert sdk_adapter.PROGRESS_MARKERS not in partition
    assert sdk_adapter.bookmark_value(tasks, PROJECT) == "2024-05-01T10:00:00Z"


def test_raise_bookmark_moves_a_final_bookmark_forward_only():
    tap = _tap()
    tasks = tap.streams["tasks"]
    assert sdk_adapter.raise_bookmark(tasks, PROJECT, "2024-05-01T10:00:00.000Z")
    assert not sdk_adapter.raise_bookmark(tasks, PROJECT, "2024-04-01T10:00:00.000Z")
    # Compared as instants, not as text.
    assert not sdk_adapter.raise_bookmark(tasks, PROJECT, "2024-05-01T11:00:00+02:00")
    assert sdk_adapter.bookmark_value(tasks, PROJECT) == "2024-05-01T10:00:00.000Z"
    # (That the next run's listing starts there: tests/test_task_search.py, paid then free.)


# --- Tombstones -------------------------------------------------------------------------


def test_write_records_writes_the_schema_then_selected_properties_only():
    config = {**OFFLINE, "include_subtasks": False}
    catalog = catalog_selecting(config, {"stories", "sections"})
    for entry in catalog["streams"]:
        if entry["tap_stream_id"] == "sections":
            for item in entry["metadata"]:
                if item["breadcrumb"] == ["properties", "name"]:
                    item["metadata"]["selected"] = False
    tap = TapAsanaVl(config=config, catalog=catalog, parse_env_config=False)
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with redirect_stdout(stdout):
        written = sdk_adapter.write_records(
            tap.streams["sections"], [{"gid": "5", "name": "Gone", "_sdc_deleted_at": "x"}]
        )
        skipped = sdk_adapter.write_records(tap.streams["tasks"], [{"gid": "6"}])
    stdout.flush()
    lines = stdout.buffer.getvalue().decode("utf-8").splitlines()  # type: ignore[attr-defined]
    messages = [json.loads(line) for line in lines]
    assert (written, skipped) == (1, 0)
    assert [(m["type"], m["stream"]) for m in messages] == [
        ("SCHEMA", "sections"),
        ("RECORD", "sections"),
    ]
    assert messages[1]["record"] == {"gid": "5", "_sdc_deleted_at": "x"}


def test_table_version_activate_version_and_state_messages():
    config = {**OFFLINE, "include_subtasks": False}
    tap = TapAsanaVl(
        config=config,
        catalog=catalog_selecting(config, {"task_projects"}),
        parse_env_config=False,
    )
    bridge = tap.streams["task_projects"]
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with redirect_stdout(stdout):
        sdk_adapter.set_table_version(bridge, 42)
        sdk_adapter.write_records(bridge, [{"task_gid": "1", "project_gid": "2"}])
        sdk_adapter.write_activate_version(bridge, 42)
        sdk_adapter.write_activate_version(tap.streams["tasks"], 42)  # deselected: nothing
        sdk_adapter.own_state(tap.streams["tasks"])["reconcile"] = {"at": "x"}
        sdk_adapter.write_state(tap.streams["tasks"])
    stdout.flush()
    lines = stdout.buffer.getvalue().decode("utf-8").splitlines()  # type: ignore[attr-defined]
    messages = [json.loads(line) for line in lines]
    assert [m["type"] for m in messages] == ["SCHEMA", "RECORD", "ACTIVATE_VERSION", "STATE"]
    assert messages[1]["version"] == 42
    assert messages[2] == {"type": "ACTIVATE_VERSION", "stream": "task_projects", "version": 42}
    assert messages[3]["value"]["bookmarks"]["tasks"]["reconcile"] == {"at": "x"}


# --- Per-parent streams -----------------------------------------------------------------


def _stream_of(record: logging.LogRecord) -> str:
    """The stream a METRIC line is about (the SDK logs ``"METRIC: %s"``, a Point)."""
    (point,) = record.args  # type: ignore[misc]
    return str(point.tags["stream"])


def _response(stream_path: str) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response.url = f"{OFFLINE['api_url']}{stream_path}"
    return response


def test_a_per_parent_stream_writes_no_request_metric_and_logs_warnings_only():
    tap = _tap(log_metrics=True)
    stories, users = tap.streams["stories"], tap.streams["users"]
    assert stories.logger.level == logging.WARNING
    with _recording(metrics.get_metrics_logger().name) as recorder:
        for stream in (stories, users):
            stream._write_request_duration_log(  # the SDK's own per-request METRIC
                endpoint=stream.path,
                response=_response(stream.path),
                context=None,
                extra_tags=None,
            )
    assert [_stream_of(record) for record in recorder.records] == ["users"]


def test_a_silenced_meter_logs_nothing():
    metrics_logger = metrics.get_metrics_logger()
    level = metrics_logger.level
    metrics_logger.setLevel(logging.INFO)
    with _recording(metrics_logger.name, sdk_adapter._SILENT_METRICS.name) as recorder:
        with metrics.record_counter("loud") as counter:
            counter.increment()
        with sdk_adapter.silenced(metrics.record_counter("quiet")) as counter:
            counter.increment()
    metrics_logger.setLevel(level)
    logged = [r for r in recorder.records if r.name == metrics_logger.name]
    assert [_stream_of(record) for record in logged] == ["loud"]


# --- The SDK's log lines ----------------------------------------------------------------


UNHANDLED = "An unhandled error occurred while syncing '%s'"
RECORDED = ["tap-asana-vl", "singer_sdk"] + [
    f"tap-asana-vl.{stream}" for stream in ("workspaces", "projects", "tasks", "tags")
]


def test_the_sdk_still_writes_every_line_the_adapter_demotes(fake, pat_config):
    config = {**pat_config, "project_gids": [next(iter(fake.dataset.projects))]}
    with _recording(*RECORDED) as recorder:
        TapAsanaVl(config=config, parse_env_config=True)
        run_tap(config, catalog=catalog_selecting(config, {"projects", "tasks"}))
    seen = {record.msg for record in recorder.records}
    chatter = sdk_adapter.TAP_CHATTER | sdk_adapter.STREAM_CHATTER | sdk_adapter.STATE_CHATTER
    assert chatter - {UNHANDLED} <= seen, sorted(chatter - {UNHANDLED} - seen)


def test_the_sdk_still_writes_its_unhandled_error_line(fake, pat_config):
    assert UNHANDLED in sdk_adapter.STREAM_CHATTER
    fake.inject(r"/api/1\.0/workspaces/\d+/tags", 400, times=None)
    config = {**pat_config, "max_requests_per_minute": 100_000}
    with _recording(*RECORDED) as recorder, pytest.raises(FatalAPIError):
        run_tap(config, catalog=catalog_selecting(config, {"tags"}))
    assert UNHANDLED in {record.msg for record in recorder.records}


# --- Config validation and OAuth --------------------------------------------------------


def test_schema_errors_pass_through_the_tap_s_rewrite():
    class Rewriting(TapAsanaVl):
        def rewrite_schema_errors(self, errors: list[str]) -> list[str]:
            return [f"rewritten: {len(errors)}"]

    with pytest.raises(ConfigValidationError) as info:
        Rewriting(config={**OFFLINE, "page_size": 0}, parse_env_config=False)
    assert info.value.errors == ["rewritten: 1"]


def test_the_oauth_session_is_the_one_the_sdk_made_for_token_requests():
    authenticator = AsanaOAuthAuthenticator(
        client_id="id", client_secret="secret", refresh_token="refresh"
    )
    session = sdk_adapter.oauth_session(authenticator)
    assert isinstance(session, requests.Session)
    assert sdk_adapter.oauth_session(authenticator) is session


def test_an_activate_version_of_a_stream_with_no_record_follows_its_schema():
    # A target knows only streams it got a SCHEMA for (every tag deleted: no record).
    config = {**OFFLINE, "include_subtasks": False}
    tap = TapAsanaVl(
        config=config, catalog=catalog_selecting(config, {"tags"}), parse_env_config=False
    )
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with redirect_stdout(stdout):
        sdk_adapter.write_activate_version(tap.streams["tags"], 7)
    stdout.flush()
    lines = stdout.buffer.getvalue().decode("utf-8").splitlines()  # type: ignore[attr-defined]
    messages = [json.loads(line) for line in lines]
    assert [(m["type"], m["stream"]) for m in messages] == [
        ("SCHEMA", "tags"),
        ("ACTIVATE_VERSION", "tags"),
    ]


def test_write_records_with_a_version_of_their_own_leaves_the_stream_s_version():
    config = {**OFFLINE, "include_subtasks": False}
    tap = TapAsanaVl(
        config=config,
        catalog=catalog_selecting(config, {"task_projects"}),
        parse_env_config=False,
    )
    bridge = tap.streams["task_projects"]
    assert sdk_adapter.stored_state(bridge) == {}
    assert "task_projects" not in tap.state.get("bookmarks", {})  # reading created none
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with redirect_stdout(stdout):
        sdk_adapter.set_table_version(bridge, 42)
        sdk_adapter.write_records(bridge, [{"task_gid": "1", "project_gid": "2"}], version=1)
        sdk_adapter.write_records(bridge, [{"task_gid": "3", "project_gid": "2"}])
    stdout.flush()
    lines = stdout.buffer.getvalue().decode("utf-8").splitlines()  # type: ignore[attr-defined]
    records = [json.loads(line) for line in lines if '"RECORD"' in line]
    assert [m["version"] for m in records] == [1, 42]
    assert sdk_adapter.table_version(bridge) == 42
    sdk_adapter.own_state(bridge)["x"] = 1
    assert sdk_adapter.stored_state(bridge) == {"x": 1}
