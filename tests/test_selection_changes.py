"""A stream selected after the bookmarks that gate it were kept gets its older rows too.

The tasks stream leaves out tasks unchanged since its bookmarks, and with them their
stories, derived rows …; the subtasks stream likewise for subtasks. Before, a stream
selected later (``stories`` added to a ``tasks`` selection; ``subtasks`` after it ran
deselected as the parent of ``subtask_stories``; ``tasks`` after it ran deselected as
the parent of ``stories``) got rows only for records changed from then on, silently.
Now those bookmarks record which streams they cover and start over when one is new
(``streams/selection.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tap_asana_vl.oauth import common as auth_command
from tap_asana_vl.streams.selection import STATE_KEY
from tests.tap_runner import FAST, catalog_selecting, run_tap
from tests.test_scopes import scoped_config

STARTED_OVER = "Newly selected since the bookmarks of"


@pytest.fixture
def config(pat_config: dict[str, Any]) -> dict[str, Any]:
    return {**pat_config, **FAST, "include_attachments": False}


def run_selecting(config, selected: set[str], state: dict | None = None):
    return run_tap(config, state=state, catalog=catalog_selecting(config, selected))


def started_over(result) -> list[str]:
    return [line for line in result.logs.splitlines() if STARTED_OVER in line]


def cover(result, stream: str) -> Any:
    return result.state["bookmarks"][stream].get(STATE_KEY)


def test_stories_selected_after_tasks_come_for_every_task(fake, config):
    ds = fake.dataset
    first = run_selecting(config, {"tasks"})
    assert cover(first, "tasks") == ["tasks"]

    second = run_selecting(config, {"tasks", "stories"}, first.state)

    assert set(second.gids("stories")) == set(ds.stories)
    (line,) = started_over(second)
    assert "'tasks'" in line
    assert "stories" in line
    assert cover(second, "tasks") == ["stories", "tasks"]
    # The next run is incremental again: nothing changed, nothing read again.
    third = run_selecting(config, {"tasks", "stories"}, second.state)
    assert third.records["tasks"] == []
    assert third.records["stories"] == []
    assert started_over(third) == []


def test_a_stream_deselected_then_selected_again_starts_over(fake, config):
    """Rows it missed meanwhile (a changed task's new comment) come with the rest."""
    ds = fake.dataset
    first = run_selecting(config, {"tasks", "stories"})
    task = sorted(ds.tasks)[0]
    fake.add_story(task, "Written while stories were deselected")
    second = run_selecting(config, {"tasks"}, first.state)
    assert task in second.gids("tasks")
    assert cover(second, "tasks") == ["tasks"]

    third = run_selecting(config, {"tasks", "stories"}, second.state)

    assert set(third.gids("stories")) == set(ds.stories)
    assert started_over(third)


def test_tasks_selected_after_running_deselected_get_the_tasks_changed_meanwhile(fake, config):
    """Deselected, ``tasks`` still runs for ``stories`` and its bookmarks move on.

    Selected again, it reads every task and reconciles, as a first run: a task deleted
    meanwhile (its event read while no tasks row was written) is marked by the target.
    """
    ds = fake.dataset
    first = run_selecting(config, {"tasks", "stories"})
    changed, deleted = sorted(ds.tasks)[1:3]
    fake.touch_task(changed)
    fake.delete_task(deleted)
    second = run_selecting(config, {"stories"}, first.state)
    assert second.records["tasks"] == []
    assert cover(second, "tasks") == ["stories"]

    third = run_selecting(config, {"tasks", "stories"}, second.state)

    assert changed in third.gids("tasks")
    assert set(third.gids("tasks")) == set(ds.tasks)
    assert deleted not in third.gids("tasks")
    # One table version for the run's task rows, activated: older rows are marked gone.
    versions = {
        m.get("version") for m in third.messages if m["type"] == "RECORD" and m["stream"] == "tasks"
    }
    assert [m["version"] for m in third.activations(["tasks"])] == [*versions]
    assert started_over(third)


@pytest.mark.parametrize("plan", ["paid", "free"])
def test_subtasks_selected_after_running_deselected_come_in_full(fake, config, plan):
    """Deselected, ``subtasks`` runs for ``subtask_stories``: searches or walks move on."""
    if plan == "free":
        fake.premium_workspaces = set()
    ds = fake.dataset
    first = run_selecting(config, {"tasks", "subtask_stories"})
    assert first.records["subtasks"] == []
    assert cover(first, "subtasks") == ["subtask_stories"]

    second = run_selecting(config, {"tasks", "subtasks", "subtask_stories"}, first.state)

    assert set(second.gids("subtasks")) == set(ds.subtasks)
    (line,) = started_over(second)
    assert "'subtasks'" in line
    # Only the subtasks' bookmarks: the tasks stream stays incremental.
    assert second.records["tasks"] == []


def test_a_derived_table_selected_later_gets_rows_of_tasks_and_subtasks(fake, config):
    ds = fake.dataset
    first = run_selecting(config, {"tasks", "subtasks"})

    second = run_selecting(config, {"tasks", "subtasks", "task_followers"}, first.state)

    followed = {
        gid
        for table in (ds.tasks, ds.subtasks)
        for gid, task in table.items()
        if task.get("followers")
    }
    assert followed & set(ds.subtasks), "the dataset must give some subtasks followers"
    assert {row["task_gid"] for row in second.records["task_followers"]} == followed
    assert {line.split("'")[1] for line in started_over(second)} == {"tasks", "subtasks"}


def test_a_state_without_the_record_is_not_started_over(fake, config):
    """Kept by a tap before this one: taken to cover the selection (no full re-read)."""
    first = run_selecting(config, {"tasks", "stories"})
    state = first.state
    del state["bookmarks"]["tasks"][STATE_KEY]

    second = run_selecting(config, {"tasks", "stories"}, state)

    assert started_over(second) == []
    assert second.records["tasks"] == []
    assert cover(second, "tasks") == ["stories", "tasks"]


def test_a_malformed_record_starts_over_with_one_warning(fake, config):
    ds = fake.dataset
    first = run_selecting(config, {"tasks"})
    state = first.state
    state["bookmarks"]["tasks"][STATE_KEY] = "tasks"

    second = run_selecting(config, {"tasks"}, state)

    (warning,) = [line for line in second.logs.splitlines() if line.startswith("WARNING")]
    assert "'tasks'" in warning
    assert STATE_KEY in warning
    assert set(second.gids("tasks")) == set(ds.tasks)
    assert cover(second, "tasks") == ["tasks"]


def test_a_stream_not_run_keeps_its_record(fake, config):
    """Neither selected nor below a selected one: its bookmarks did not move either."""
    first = run_selecting(config, {"tasks", "subtasks"})
    second = run_selecting(config, {"tasks"}, first.state)
    assert cover(second, "subtasks") == ["subtasks"]

    third = run_selecting(config, {"tasks", "subtasks"}, second.state)

    assert started_over(third) == []
    assert third.records["subtasks"] == []


@pytest.mark.parametrize("declared", [True, False], ids=["scopes known", "scopes probed"])
def test_a_stream_the_scopes_turn_off_is_not_covered(fake, declared):
    """Its rows were not written: once the token may read it, it is newly selected."""
    ds = fake.dataset
    # Field-level scopes too: probed, the task listing's fields would need them.
    granted = [*auth_command.DEFAULT_SCOPES, "project_sections:read", "time_periods:read"]
    without = [s for s in granted if s != "stories:read"]
    config = {**scoped_config(fake, without, declared=declared), "include_attachments": False}
    first = run_selecting(config, {"tasks", "stories"})
    assert first.records["stories"] == []
    assert cover(first, "tasks") == ["tasks"]

    config = {
        **scoped_config(fake, granted, declared=True),
        "include_attachments": False,
    }
    second = run_selecting(config, {"tasks", "stories"}, first.state)

    assert set(second.gids("stories")) == set(ds.stories)
    assert started_over(second)
