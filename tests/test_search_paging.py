"""Search paging by ``modified_at`` yields every task once while keeping only a page of gids.

A stand-in for Asana's search (sorted, bounded, 100 per page, no offset) drives
``TaskSearch.changed`` directly: ties across page boundaries and a bulk edit (more
tasks at one instant than a page holds, paged by ``created_at``).
"""

from __future__ import annotations

import typing as t
from types import SimpleNamespace

import pytest

from tap_asana_vl.streams.search import SEARCH_PAGE, SearchProgress, SearchTiesError, TaskSearch
from tap_asana_vl.timestamps import ServerClock, parse_timestamp


def _ts(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    return f"2026-01-01T10:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


class _SearchStub:
    """Asana's task search over ``tasks``: the bounds it documents, strict; 100 a page."""

    opt_fields = "gid,modified_at,created_at"

    def __init__(self, tasks: list[dict[str, str]]) -> None:
        self.tasks = tasks
        self.pages = 0
        pacer = SimpleNamespace(reserve=lambda: 0.0)
        run_control = SimpleNamespace(pause=lambda _seconds: None)
        self.services = SimpleNamespace(
            search_pacer=pacer,
            transport=SimpleNamespace(run_control=run_control),
            server_clock=ServerClock(),
        )

    def list_endpoint(self, _path: str, params: dict[str, t.Any]) -> list[dict[str, str]]:
        self.pages += 1

        def after(field: str, bound: str | None) -> t.Callable[[dict], bool]:
            return lambda task: (
                bound is None or parse_timestamp(task[field]) > parse_timestamp(bound)
            )

        checks = [
            after("modified_at", params.get("modified_at.after")),
            after("created_at", params.get("created_at.after")),
        ]
        before = params.get("modified_at.before")
        if before is not None:
            checks.append(
                lambda task: parse_timestamp(task["modified_at"]) < parse_timestamp(before)
            )
        found = [task for task in self.tasks if all(check(task) for check in checks)]
        found.sort(key=lambda task: (task[params["sort_by"]], task["gid"]))
        return [dict(task) for task in found[: params["limit"]]]


def _tasks() -> list[dict[str, str]]:
    tasks = []
    # 130 tasks, 3 per millisecond: every page boundary falls inside a tie.
    for n in range(130):
        tasks.append({"gid": f"a{n:04d}", "modified_at": _ts(1000 + n // 3), "created_at": _ts(n)})
    # A bulk edit: 230 tasks modified at one instant, distinct created_at (2 per ms).
    for n in range(230):
        tasks.append({"gid": f"b{n:04d}", "modified_at": _ts(5000), "created_at": _ts(n // 2)})
    # Then 120 more, one per millisecond.
    for n in range(120):
        tasks.append({"gid": f"c{n:04d}", "modified_at": _ts(6000 + n), "created_at": _ts(n)})
    return tasks


def test_every_task_is_yielded_once_across_tied_pages_and_a_bulk_edit():
    tasks = _tasks()
    stub = _SearchStub(tasks)
    search = TaskSearch(stub, "w1", is_subtask=False, progress=SearchProgress(None))  # type: ignore[arg-type]

    gids = [record["gid"] for record in search.changed(None)]

    assert sorted(gids) == sorted(task["gid"] for task in tasks)
    assert len(gids) == len(set(gids))
    assert search.progress.high_water == _ts(6119)
    assert stub.pages > len(tasks) // SEARCH_PAGE


def test_a_search_from_a_bookmark_yields_only_later_tasks():
    tasks = _tasks()
    stub = _SearchStub(tasks)
    search = TaskSearch(stub, "w1", is_subtask=False, progress=SearchProgress(None))  # type: ignore[arg-type]

    gids = [record["gid"] for record in search.changed(_ts(5000))]

    assert gids == [f"c{n:04d}" for n in range(120)]


def test_a_search_ignoring_its_bound_stops_without_repeating_a_task():
    tasks = _tasks()[:100]
    stub = _SearchStub(tasks)
    stub.list_endpoint = lambda _path, _params: [dict(task) for task in tasks]  # type: ignore[method-assign]
    search = TaskSearch(stub, "w1", is_subtask=False, progress=SearchProgress(None))  # type: ignore[arg-type]
    gids: list[str] = []

    with pytest.raises(SearchTiesError):
        gids.extend(record["gid"] for record in search.changed(None))

    assert sorted(gids) == sorted(task["gid"] for task in tasks)


def test_a_first_page_probed_from_one_bound_is_not_used_for_another():
    """A probe's page answers only the search it was asked for (the caller's start may
    move in between: a first run that turns out not to read every task)."""
    tasks = _tasks()
    stub = _SearchStub(tasks)
    search = TaskSearch(stub, "w1", is_subtask=False, progress=SearchProgress(None))  # type: ignore[arg-type]
    search.probe(_ts(6000))
    assert stub.pages == 1

    gids = [task["gid"] for task in search.changed(None)]

    assert sorted(gids) == sorted(task["gid"] for task in tasks)
    assert stub.pages >= 1 + 5  # the probe, then 480 tasks anew from no bound


def test_a_probed_first_page_is_used_for_the_same_bound():
    stub = _SearchStub(_tasks())
    search = TaskSearch(stub, "w1", is_subtask=False, progress=SearchProgress(None))  # type: ignore[arg-type]
    search.probe("2026-01-01T10:00:06.000+00:00")  # the same instant, written otherwise

    gids = [task["gid"] for task in search.changed(_ts(6000))]

    assert gids == [f"c{n:04d}" for n in range(1, 120)]
    assert stub.pages == 2  # the probed page (100 tasks) and the one after it
