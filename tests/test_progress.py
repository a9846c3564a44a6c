"""The progress lines' wording, counts and heartbeat timing (no tap run needed)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from tap_asana_vl.progress import RunProgress


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def progress(clock: _Clock) -> RunProgress:
    return RunProgress(logging.getLogger("test-progress"), clock=clock)


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test-progress"]


def test_project_line_counts_what_was_written_under_that_project(
    progress: RunProgress, clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    progress.count_records("projects", 1)
    progress.count_records("tasks", 5)  # before the project: not its own
    progress.project_started(37, 412, "Website relaunch")
    progress.count_records("tasks", 214)
    progress.count_records("stories", 1902)
    progress.count_records("sections", 3)
    progress.count_records("task_projects", 214)
    for _ in range(240):
        progress.count_request()
    clock.now += 10
    progress.project_done()
    assert _lines(caplog) == [
        'project 37/412 "Website relaunch": 214 tasks, 1,902 stories, 217 other records; '
        "2,339 records so far, 24.0 req/s"
    ]


def test_singular_and_no_other_records(
    progress: RunProgress, clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    progress.project_started(1, 1, "Solo")
    progress.count_records("tasks", 1)
    progress.count_records("stories", 1)
    clock.now += 1
    progress.project_done()
    progress.project_done()  # nothing started: no second line
    assert _lines(caplog) == ['project 1/1 "Solo": 1 task, 1 story; 2 records so far, 0.0 req/s']


def test_workspace_line(progress: RunProgress, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    progress.workspace_listed('"Acme"', 412)
    assert _lines(caplog) == ['workspace "Acme": 412 projects to sync']


def test_heartbeat_only_after_silence(
    progress: RunProgress, clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    progress.doing("'stories' of project 3/5 \"Big\"")
    clock.now += 29
    progress.beat()
    assert _lines(caplog) == []
    clock.now += 1
    progress.count_records("stories", 1500)
    progress.beat()
    assert _lines(caplog) == [
        "still working on 'stories' of project 3/5 \"Big\"; 1,500 records so far, 0.0 req/s"
    ]
    # A progress line resets the silence.
    clock.now += 20
    progress.project_started(3, 5, "Big")
    progress.project_done()
    clock.now += 20
    progress.beat()
    assert len(_lines(caplog)) == 2


def test_heartbeat_thread_speaks_during_a_long_wait(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    progress = RunProgress(logging.getLogger("test-progress"), heartbeat_seconds=0.2)
    progress.doing("a slow page")
    progress.start_heartbeat()
    try:
        time.sleep(0.7)  # the main thread is "stuck", as in a rate-limit wait
    finally:
        progress.stop()
    beats = [line for line in _lines(caplog) if line.startswith("still working on a slow page")]
    assert 2 <= len(beats) <= 4
    count = len(_lines(caplog))
    time.sleep(0.3)
    assert len(_lines(caplog)) == count, "no heartbeat after stop()"


def test_counts_from_many_threads_add_up(progress: RunProgress) -> None:
    def work() -> None:
        for _ in range(1000):
            progress.count_request()
            progress.count_records("stories", 2)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert progress.requests == 8000
    assert progress.records == 16000
