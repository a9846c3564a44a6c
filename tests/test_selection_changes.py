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

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tap_asana_vl.oauth import common as auth_command
from tap_asana_vl.streams.project_level import TASKS_IN_NO_PROJECT
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
    """What the stream's bookmarks cover, but the tasks in no project (always read here)."""
    recorded = result.state["bookmarks"][stream].get(STATE_KEY)
    return [name for name in recorded if name != TASKS_IN_NO_PROJECT]


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
    """Its rows were not written: once the token may read it, it counts as new.

    Known scopes turn it off before the run: the first run with the scope starts over.
    Probed, Asana refuses it during the run: the run after the first in which Asana
    answers it starts over (runs where it is refused, or not asked, do not).
    """
    ds = fake.dataset
    # Field-level scopes too: probed, the task listing's fields would need them.
    granted = [*auth_command.DEFAULT_SCOPES, "project_sections:read", "time_periods:read"]
    without = [s for s in granted if s != "stories:read"]

    def config_for(scopes):
        return {**scoped_config(fake, scopes, declared=declared), "include_attachments": False}

    first = run_selecting(config_for(without), {"tasks", "stories"})
    assert first.records["stories"] == []
    assert cover(first, "tasks") == ["tasks"]
    second = run_selecting(config_for(without), {"tasks", "stories"}, first.state)
    assert started_over(second) == []

    changed = sorted(ds.tasks)[0]
    fake.add_story(changed, "Asked for, so Asana is asked for stories again")

    third = run_selecting(config_for(granted), {"tasks", "stories"}, second.state)

    if not declared:
        # Asana answered for the changed task: from the next run on, it counts as new.
        assert started_over(third) == []
        assert set(third.gids("stories")) == {
            gid for gid, story in ds.stories.items() if story["target"]["gid"] == changed
        }
        third = run_selecting(config_for(granted), {"tasks", "stories"}, third.state)
    assert set(third.gids("stories")) == set(ds.stories)
    assert started_over(third)


def test_a_paid_feature_refused_in_a_free_workspace_starts_nothing_over(fake, config):
    """Time tracking answers 402 on free plans: refused in every run, never new."""
    fake.premium_workspaces = set()
    first = run_selecting(config, {"tasks", "time_tracking_entries"})
    assert "Skipping stream 'time_tracking_entries'" in first.logs
    assert cover(first, "tasks") == ["tasks"]

    second = run_selecting(config, {"tasks", "time_tracking_entries"}, first.state)

    assert started_over(second) == []
    assert second.records["tasks"] == []


@pytest.mark.parametrize(
    ("setting", "stream", "selected"),
    [
        ("include_attachments", "attachments", {"tasks", "attachments"}),
        ("include_subtasks", "subtasks", {"tasks", "subtasks"}),
    ],
)
def test_a_stream_turned_on_by_its_setting_later_comes_in_full(
    fake, config, setting, stream, selected
):
    ds = fake.dataset
    first = run_selecting({**config, setting: False}, selected)
    assert first.records[stream] == []

    second = run_selecting({**config, setting: True}, selected, first.state)

    expected = ds.attachments if stream == "attachments" else ds.subtasks
    assert expected
    assert set(second.gids(stream)) == set(expected)
    assert started_over(second)


def _merged(partial: dict, complete: dict) -> dict:
    """Meltano's reading of a failed run's state: the partial merged onto the last complete
    one, key by key at any depth (an object's keys missing from the partial stay)."""
    merged = copy.deepcopy(complete)

    def merge(source: dict, dest: dict) -> None:
        for key, value in source.items():
            if isinstance(value, dict):
                merge(value, dest.setdefault(key, {}))
            else:
                dest[key] = value

    merge(copy.deepcopy(partial), merged)
    return merged


def test_a_start_over_interrupted_under_meltano_is_not_undone_by_the_merged_state(fake, config):
    """Cleared keys are nulls: a merge onto the older state cannot bring them back."""
    ds = fake.dataset
    workspace = sorted(fake.premium_workspaces)[0]
    user = ds.users_by_workspace[workspace][0]["gid"]
    # Found by the workspace's search only, from its bookmark (cleared by the start
    # over): last modified before the first run's search bookmark (its start less the
    # index lag), so that bookmark, back, would leave it out.
    unplaced = ds.add_task_without_project(workspace, user)["gid"]
    fake.add_story(unplaced, "A comment on a task in no project")
    fake.touch_task(unplaced, datetime.now(timezone.utc) - timedelta(hours=2))
    first = run_selecting(config, {"tasks"})
    assert unplaced in first.gids("tasks")
    second = run_selecting(config, {"tasks", "stories"}, first.state)
    assert started_over(second)
    # Killed after its first STATE: Meltano keeps that as partial state.
    interrupted = _merged(second.states[0], first.state)

    third = run_selecting(config, {"tasks", "stories"}, interrupted)

    assert set(third.gids("stories")) == set(ds.stories)
