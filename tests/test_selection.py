"""A stream's records do not depend on which other streams are selected.

Each stream alone, and odd combinations (a child without its parent, subtasks without
projects or tasks, stories without tasks), must sync exactly the records a full
selection syncs for it: streams get what they need of another through their parent's
context or fetch it themselves, never by reading another stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tap_asana_vl.tap import STREAM_TYPES
from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import FAST, SyncResult, catalog_selecting, run_tap

KEYS = {stream_type.name: stream_type.primary_keys for stream_type in STREAM_TYPES}

SELECTIONS = [
    *({stream_type.name} for stream_type in STREAM_TYPES),
    {"projects", "stories"},  # stories without tasks
    {"workspaces", "subtasks"},  # subtasks without projects and tasks
    {"tasks", "subtask_stories"},  # subtask stories without subtasks
    {"users", "subtasks", "attachments"},
    {"task_projects", "time_tracking_entries", "portfolio_items"},
]


def _keys(result: SyncResult, stream: str) -> set[tuple[str, ...]]:
    return {tuple(str(r[k]) for k in KEYS[stream]) for r in result.records[stream]}


@pytest.fixture(scope="module")
def full() -> Iterator[tuple[dict[str, Any], SyncResult]]:
    """A small fake Asana (read only here) and what a full selection syncs from it."""
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        yield config, run_tap(config)


@pytest.mark.parametrize("selection", SELECTIONS, ids=lambda s: "+".join(sorted(s)))
def test_a_selection_syncs_what_a_full_selection_syncs(full, selection):
    config, everything = full
    result = run_tap(config, catalog=catalog_selecting(config, selection))

    assert {stream for stream, records in result.records.items() if records} <= selection
    for stream in selection:
        expected = _keys(everything, stream)
        assert expected, f"the dataset has no {stream}: the comparison would prove nothing"
        assert _keys(result, stream) == expected, stream


@pytest.mark.parametrize("selection", [None, {"subtasks"}, {"workspaces", "subtasks"}], ids=str)
def test_a_new_subtask_of_a_changed_task_arrives_whatever_is_selected(selection):
    """Free plan (no search), full walk not due: the subtask comes through its task."""
    with FakeAsana(build_dataset(seed=11)) as fake:
        fake.premium_workspaces = set()
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        catalog = None if selection is None else catalog_selecting(config, selection)
        first = run_tap(config, catalog=catalog)
        assert first.records["subtasks"]
        task = next(iter(fake.dataset.tasks))
        subtask = fake.add_subtask(task)
        fake.touch_task(task)

        second = run_tap(config, state=first.state, catalog=catalog)

    assert subtask["gid"] in second.gids("subtasks")
