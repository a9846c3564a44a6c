"""Records held packed while they wait (packed.py), and the projects that use it."""

from __future__ import annotations

import gc
import json
import tracemalloc
from decimal import Decimal

from tap_asana_vl.packed import PackedRecords
from tap_asana_vl.streams.children_ahead import READ_AHEAD_RECORDS_MAX
from tap_asana_vl.streams.listing import _taken_out
from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import FAST, catalog_selecting, run_tap


def test_records_come_back_in_order_with_their_exact_types():
    records = [
        {"gid": "1", "number_value": Decimal("1.10"), "tags": [{"gid": "7", "name": "é"}]},
        {"gid": "2", "due_on": None, "completed": False, "count": 3},
    ]
    held = PackedRecords()
    for record in records:
        held.append(record)
    records[0]["tags"].append({"gid": "late"})  # packed as it was when appended
    assert len(held) == 2
    back = list(held.drain())
    assert back[0]["number_value"] == Decimal("1.10")
    assert str(back[0]["number_value"]) == "1.10"  # not 1.1: the exact decimal
    assert back[0]["tags"] == [{"gid": "7", "name": "é"}]
    assert back[1] == records[1]
    assert len(held) == 0


def test_drained_records_are_let_go_one_by_one():
    held = PackedRecords()
    for number in range(3):
        held.append({"gid": str(number)})
    drain = held.drain()
    next(drain)
    assert len(held) == 2
    next(drain)
    assert len(held) == 1


def test_a_packed_project_takes_a_fraction_of_its_decoded_record():
    dataset = build_dataset(seed=7, workspaces=1, projects_per_workspace=3, tasks_per_project=1)
    texts = [json.dumps(project) for project in dataset.projects.values()]
    tracemalloc.start()
    try:
        decoded = [json.loads(text, parse_float=Decimal) for text in texts]
        decoded_bytes = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    held = PackedRecords()
    for record in decoded:
        held.append(record)
    assert held.packed_bytes * 5 < decoded_bytes, (held.packed_bytes, decoded_bytes)
    assert list(held.drain()) == decoded


def _decoded_projects(exclude: set[int]) -> int:
    """Project records alive in this process, other than the fake's own.

    Earlier tests may keep some alive (a module's results): compare with a count
    taken before the run.
    """
    gc.collect()  # earlier tests' records, unreachable but not yet freed, do not count
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, dict)
        and obj.get("resource_type") == "project"
        and "custom_field_settings" in obj
        and id(obj) not in exclude
    )


def test_projects_wait_packed_while_earlier_projects_tasks_are_synced():
    # The projects are listed in full before the first is synced; decoded, a big
    # workspace's projects (and two batches of 100 handed over) stayed in memory for
    # the whole run. While the 30th project's tasks are listed, only the projects
    # handed over around it (a batch and the next, for the read-ahead window) are decoded.
    dataset = build_dataset(seed=7, workspaces=1, projects_per_workspace=60, tasks_per_project=1)
    with FakeAsana(dataset) as fake:
        fake.premium_workspaces.clear()  # every project's tasks listed, in order
        workspace = next(iter(dataset.workspaces))
        projects = [p["gid"] for p in dataset.projects_by_workspace[workspace]]
        watched = projects[30]
        own = {id(p) for p in dataset.projects.values()}
        counts: list[int] = []
        answer = fake._api

        def api(method, sub_path, query, token):
            if sub_path == "/tasks" and query.get("project") == [watched] and not counts:
                counts.append(_decoded_projects(own))
            return answer(method, sub_path, query, token)

        fake._api = api
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        catalog = catalog_selecting(config, {"workspaces", "projects", "tasks"})
        before = _decoded_projects(own)
        result = run_tap(config, catalog=catalog)
    assert [p["gid"] for p in result.records["projects"]] == projects
    assert len(counts) == 1
    assert counts[0] - before <= 2 * READ_AHEAD_RECORDS_MAX + 2, (counts, before)


def test_a_listed_page_is_let_go_before_the_next_page_is_read():
    # The SDK keeps a page's response until the next page is in: its decoded records
    # stayed alive with it, so two pages were decoded at once.
    dataset = build_dataset(seed=7, workspaces=1, projects_per_workspace=60, tasks_per_project=1)
    with FakeAsana(dataset) as fake:
        own = {id(p) for p in dataset.projects.values()}
        counts: list[int] = []
        answer = fake._api

        def api(method, sub_path, query, token):
            if sub_path == "/projects" and "offset" in query:
                counts.append(_decoded_projects(own))
            return answer(method, sub_path, query, token)

        fake._api = api
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST, "page_size": 20}
        catalog = catalog_selecting(config, {"workspaces", "projects"})
        before = _decoded_projects(own)
        result = run_tap(config, catalog=catalog)
    assert len(result.records["projects"]) == 60
    assert len(counts) == 2  # pages 2 and 3
    assert max(counts) - before <= 2, (counts, before)


def test_a_page_hands_its_records_on_in_order_and_ends_empty():
    page = [{"gid": str(n)} for n in range(5)]
    handed = []
    for record in _taken_out(page):
        handed.append(record["gid"])
        assert len(page) == 5 - len(handed)  # each taken out as it is handed on
    assert handed == ["0", "1", "2", "3", "4"]
    assert page == []
