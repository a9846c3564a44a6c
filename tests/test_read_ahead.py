"""The next projects' first page of tasks is requested while a project is still synced.

Without it, each project's first request waits until the previous project's last stories
are written: requests in flight drain to none at every project boundary.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections.abc import Callable

import pytest
from singer_sdk.singerlib import RecordMessage

from tap_asana_vl.streams.project_level import USERS_READ_AHEAD
from tap_asana_vl.tap import TapAsanaVl
from tap_asana_vl.timestamps import parse_timestamp
from tests.fake_asana import FakeAsana, build_dataset
from tests.fake_asana.dataset import ref
from tests.tap_runner import FAST, catalog_selecting, run_cli, run_tap
from tests.test_concurrency import _comparable

CORE = {"workspaces", "users", "projects", "tasks", "stories"}
LATENCY = 0.1
#: Seconds an answer waits for the tap to have read a page answered just before it: a
#: page read ahead is known to hold a task only once read (CI failed without it).
HELD_MARGIN = 5 * LATENCY
#: When the re-sync tests edit tasks: the same in every run, after any bookmark.
TOUCHED = "2030-01-01T00:00:00.000Z"


def _dataset():
    return build_dataset(
        seed=7, workspaces=1, projects_per_workspace=6, tasks_per_project=4, archived_every=100
    )


def _sync(fake: FakeAsana, **settings) -> object:
    config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST, **settings}
    return run_tap(config, catalog=catalog_selecting(config, CORE))


def _sequential_messages(dataset, plan: str) -> list[dict]:
    """What a sync of ``dataset`` writes one request at a time, without latency."""
    with FakeAsana(dataset) as fake:
        if plan == "free":
            fake.premium_workspaces.clear()  # search answers 402: every project listed
        return _sync(fake, max_concurrent_requests=1).messages


def _first_task_pages(fake: FakeAsana) -> dict[str, float]:
    """When each project's first page of tasks was requested."""
    return {
        r.query["project"][0]: r.time
        for r in reversed(fake.requests_for("/tasks"))
        if "project" in r.query and "offset" not in r.query
    }


def _last_story_answers(fake: FakeAsana, project_of_task: dict[str, str]) -> dict[str, float]:
    """When each project's last stories request was answered (arrival + latency)."""
    last: dict[str, float] = {}
    for request in fake.requests_for("/tasks/"):
        parts = request.path.rstrip("/").split("/")
        if parts[-1] == "stories" and parts[-2] in project_of_task:
            project = project_of_task[parts[-2]]
            last[project] = max(last.get(project, 0.0), request.time + fake.latency)
    return last


def _record_write_times(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """When each task record is written (by gid), as the tap writes it."""
    written: dict[str, float] = {}
    write = TapAsanaVl.write_message

    def timed(tap: TapAsanaVl, message: object) -> None:
        if isinstance(message, RecordMessage) and message.stream == "tasks":
            written.setdefault(str(message.record["gid"]), time.time())
        write(tap, message)

    monkeypatch.setattr(TapAsanaVl, "write_message", timed)
    return written


@pytest.mark.parametrize("plan", ["paid", "free"])
def test_next_projects_first_page_is_requested_before_the_previous_project_is_written(
    plan, monkeypatch
):
    written = _record_write_times(monkeypatch)
    with FakeAsana(_dataset(), latency=LATENCY) as fake:
        if plan == "free":
            fake.premium_workspaces.clear()  # search answers 402: every project listed
        result = _sync(fake, max_concurrent_requests=10)
        project_of_task = {r["gid"]: r["project_gid"] for r in result.records["tasks"]}
        projects = list(dict.fromkeys(project_of_task.values()))
        first_pages = _first_task_pages(fake)
    first_written = {}
    for task, project in project_of_task.items():
        first_written[project] = min(first_written.get(project, math.inf), written[task])
    assert len(projects) == 6
    # From the third project on (the workspace's plan is decided at its first project,
    # so the second is not read ahead), a project's first page is requested before the
    # previous project's first task is written: not at its own turn.
    for previous, project in itertools.pairwise(projects[2:]):
        assert first_pages[project] < first_written[previous], (previous, project)
    # Only the waiting overlaps: the same messages as one request at a time, no latency.
    assert _comparable(result.messages) == _comparable(_sequential_messages(_dataset(), plan))


def test_a_project_cut_off_at_its_read_ahead_first_page_is_skipped_as_in_a_sequential_run():
    def run(latency: float, workers: int):
        with FakeAsana(_dataset(), latency=latency) as fake:
            previous, gone = list(fake.dataset.projects)[2:4]
            # The project was deleted after the projects were listed: its tasks 404.
            fake.inject(rf"/api/1\.0/tasks\?project={gone}&", 404, times=None)
            result = _sync(fake, max_concurrent_requests=workers)
            return result, fake, previous, gone

    read_ahead, fake, previous, gone = run(LATENCY, 10)
    sequential, _, _, _ = run(0.0, 1)
    assert _comparable(read_ahead.messages) == _comparable(sequential.messages)
    assert f"tasks: project {gone} (not found)" in read_ahead.logs
    # Its page was read ahead: requested while the previous project was synced.
    project_of_task = {r["gid"]: r["project_gid"] for r in read_ahead.records["tasks"]}
    assert previous in project_of_task.values()
    tried = [r for r in fake.requests_for("/tasks") if r.query.get("project") == [gone]]
    assert tried
    assert tried[0].time < _last_story_answers(fake, project_of_task)[previous]


def test_a_failing_run_drops_the_read_ahead_and_ends_promptly(tmp_path):
    with FakeAsana(_dataset(), latency=LATENCY) as fake:
        projects = list(fake.dataset.projects)
        tasks_of = fake.dataset.tasks_by_project
        # The fourth project's first page fails transiently for good (minutes of
        # backoff) while it is read ahead; a story of the third fails fatally.
        fake.inject(rf"/api/1\.0/tasks\?project={projects[3]}&", 503, times=None)
        failing = tasks_of[projects[2]][-1]["gid"]
        fake.inject(rf"/api/1\.0/tasks/{failing}/stories", 400, times=None)
        started = time.monotonic()
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        proc = run_cli(tmp_path, config)
        elapsed = time.monotonic() - started
        tried = [r for r in fake.requests_for("/tasks") if r.query.get("project") == [projects[3]]]
    assert proc.returncode != 0
    assert "/stories" in proc.stderr
    assert tried, "the fourth project's first page was not read ahead"
    assert elapsed < 30
    # No task of the fourth project was written.
    records = [json.loads(line) for line in proc.stdout.splitlines() if '"RECORD"' in line]
    assert not [
        m for m in records if m["stream"] == "tasks" and m["record"]["project_gid"] == projects[3]
    ]
    assert [m for m in records if m["stream"] == "tasks"]


def test_a_free_plan_resync_reads_ahead_from_each_projects_bookmark():
    def resync(latency: float, workers: int):
        with FakeAsana(_dataset()) as fake:
            fake.premium_workspaces.clear()
            first = _sync(fake, max_concurrent_requests=workers)
            for project in list(fake.dataset.projects)[1:]:
                fake.touch_task(fake.dataset.tasks_by_project[project][0]["gid"], at=TOUCHED)
            fake.latency = latency
            start = len(fake.requests)
            config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
            config["max_concurrent_requests"] = workers
            second = run_tap(config, catalog=catalog_selecting(config, CORE), state=first.state)
            listings = [
                r
                for r in fake.requests[start:]
                if r.path.endswith("/tasks") and "project" in r.query
            ]
            bookmarks = {
                p["context"]["project_gid"]: p["replication_key_value"]
                for p in first.state["bookmarks"]["tasks"]["partitions"]
            }
            return second, listings, bookmarks

    read_ahead, listings, bookmarks = resync(LATENCY, 10)
    sequential, _, _ = resync(0.0, 1)
    assert _without_table_versions(read_ahead.messages) == _without_table_versions(
        sequential.messages
    )
    assert len(read_ahead.records["tasks"]) >= 5
    # Every project's listing, read ahead or not, asked only for what changed since
    # its own bookmark.
    assert len(listings) == 6
    for listing in listings:
        since = listing.query["modified_since"][0]
        bookmark = bookmarks[listing.query["project"][0]]
        assert parse_timestamp(since) == parse_timestamp(bookmark)
    # And listings overlapped: the next project's was under way before one was answered.
    arrivals = sorted(r.time for r in listings)
    assert any(later < earlier + LATENCY for earlier, later in itertools.pairwise(arrivals))


def _without_table_versions(messages: list[dict]) -> object:
    """As ``_comparable``, also without the table version floors (a re-sync's run time)."""

    def strip(value: object) -> object:
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "table_version_floor"}
        return value

    return strip(_comparable(messages))


def test_free_plan_users_assigned_tasks_are_requested_ahead_of_each_other():
    # Free plans find tasks in no project through each user's assigned tasks: one
    # listing per user, which one after another would each wait a round trip alone.
    with FakeAsana(_dataset(), latency=LATENCY) as fake:
        fake.premium_workspaces.clear()
        result = _sync(fake, max_concurrent_requests=10)
        assigned = sorted(r.time for r in fake.requests_for("/tasks") if "assignee" in r.query)
        users = len(fake.dataset.users)
    ahead = USERS_READ_AHEAD
    assert len(assigned) == users > ahead + 1
    # The next users' listings are under way before the first one is answered, and no
    # more than that (each holds a page of tasks).
    assert assigned[ahead] < assigned[0] + LATENCY
    assert sum(1 for time in assigned if time < assigned[0] + LATENCY * 0.9) == ahead + 1
    assert _comparable(result.messages) == _comparable(_sequential_messages(_dataset(), "free"))


def test_a_projects_second_page_is_read_ahead_too():
    # A project's first page may hold tasks already written for an earlier project
    # (multi-homed); its first batch then needs records of its second page, which must
    # not wait until the project's turn (a round trip with nothing else in flight).
    with FakeAsana(_dataset(), latency=LATENCY) as fake:
        result = _sync(fake, max_concurrent_requests=10, page_size=2)
        project_of_task = {r["gid"]: r["project_gid"] for r in result.records["tasks"]}
        projects = list(dict.fromkeys(project_of_task.values()))
        second_pages = {
            r.query["project"][0]: r.time
            for r in reversed(fake.requests_for("/tasks"))
            if "project" in r.query and "offset" in r.query
        }
        last_stories = _last_story_answers(fake, project_of_task)
    assert len(projects) == 6
    for previous, project in itertools.pairwise(projects[2:]):
        assert second_pages[project] < last_stories[previous], (previous, project)


def _change_between_answers(
    fake: FakeAsana,
    *,
    read_ahead: Callable[[dict], bool],
    listed_after: Callable[[dict], bool],
    change: Callable[[], None],
) -> threading.Event:
    """Run ``change`` right after the fake answers the first ``/tasks`` listing matching
    ``read_ahead``; answer those matching ``listed_after`` only after it (set: done).

    The later answer also waits ``HELD_MARGIN``, for the tap to have read the page
    answered just before it (answered then, with its latency).
    """
    answer = fake._api
    changed = threading.Event()

    def api(method, sub_path, query, token):
        if sub_path == "/tasks" and listed_after(query):
            changed.wait(3)
            time.sleep(HELD_MARGIN)
        response = answer(method, sub_path, query, token)
        if not changed.is_set() and sub_path == "/tasks" and read_ahead(query):
            change()
            changed.set()
        return response

    fake._api = api
    return changed


def test_a_task_moved_out_of_a_project_read_ahead_keeps_its_newer_copy():
    # A project's page read ahead holds a task that is then moved into an earlier
    # project, whose listing writes the moved (newer) copy first: the page's older copy
    # must not be written after it, as a sequential run would never do.
    with FakeAsana(_dataset(), latency=LATENCY) as fake:
        fake.premium_workspaces.clear()
        workspace = next(iter(fake.dataset.workspaces))
        live = [p["gid"] for p in fake.dataset.projects_by_workspace[workspace]]
        source, target = live[3], live[1]
        task = next(
            t
            for t in fake.dataset.tasks.values()
            if [p["gid"] for p in t["projects"]] == [source] and not t.get("parent")
        )
        moved = _change_between_answers(
            fake,
            read_ahead=lambda query: query.get("project") == [source] and "offset" not in query,
            listed_after=lambda query: query.get("project") == [target],
            change=lambda: fake.move_task(task["gid"], remove_from=source, add_to=target),
        )
        result = _sync(fake, max_concurrent_requests=10, page_size=2)
    assert moved.is_set()
    copies = [r["project_gid"] for r in result.records["tasks"] if r["gid"] == task["gid"]]
    assert copies == [target], copies


def test_a_project_refused_at_its_second_page_still_writes_its_first():
    # The read-ahead reads a project's second page too; refused there (access lost
    # between the two pages), the first page's tasks are still written, as in turn.
    def run(latency: float, workers: int):
        with FakeAsana(_dataset(), latency=latency) as fake:
            gone = list(fake.dataset.projects)[3]
            fake.inject(rf"/api/1\.0/tasks\?project={gone}&.*offset=", 404, times=None)
            result = _sync(fake, max_concurrent_requests=workers, page_size=2)
            return result, gone

    read_ahead, gone = run(LATENCY, 10)
    sequential, _ = run(0.0, 1)
    assert [r for r in read_ahead.records["tasks"] if r["project_gid"] == gone]
    assert f"tasks: project {gone} (not found)" in read_ahead.logs
    assert _comparable(read_ahead.messages) == _comparable(sequential.messages)


def test_a_task_reassigned_from_a_user_read_ahead_keeps_its_newer_copy():
    # Free plans: a later user's assigned tasks, read ahead, hold a task that is then
    # reassigned to an earlier user, whose listing writes the newer copy first: the
    # older copy held for the later user must not be written after it.
    with FakeAsana(_dataset(), latency=LATENCY) as fake:
        fake.premium_workspaces.clear()
        ds = fake.dataset
        workspace = next(iter(ds.workspaces))
        users = [u["gid"] for u in ds.users_by_workspace[workspace]]
        earlier, later = users[0], users[USERS_READ_AHEAD]
        task = ds.add_task_without_project(workspace, later)

        def reassign() -> None:
            with ds.lock:
                task["assignee"] = ref(ds.users[earlier])
            ds.touch_task(task["gid"])

        moved = _change_between_answers(
            fake,
            read_ahead=lambda query: query.get("assignee") == [later],
            listed_after=lambda query: query.get("assignee") == [earlier],
            change=reassign,
        )
        result = _sync(fake, max_concurrent_requests=10)
    assert moved.is_set()
    copies = [r["assignee"]["gid"] for r in result.records["tasks"] if r["gid"] == task["gid"]]
    assert copies == [earlier], copies


def test_project_children_are_requested_a_few_projects_ahead_not_for_the_whole_batch():
    # Prefetched for a whole batch of 100 projects (and the next), each project's
    # sections would be held, decoded, until the SDK reaches that project; they are
    # requested only 4 projects ahead (and still before their project is synced).
    dataset = build_dataset(seed=7, workspaces=1, projects_per_workspace=12, tasks_per_project=3)
    streams = {*CORE, "sections"}
    with FakeAsana(dataset, latency=LATENCY) as fake:
        fake.premium_workspaces.clear()  # every project listed, in order
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        config["max_concurrent_requests"] = 10
        result = run_tap(config, catalog=catalog_selecting(config, streams))
        sections = {
            r.path.split("/")[-2]: r.time
            for r in reversed(fake.requests_for("/projects/"))
            if r.path.endswith("/sections")
        }
        first_pages = _first_task_pages(fake)
    projects = [p["gid"] for p in result.records["projects"]]
    assert len(projects) == 12
    assert set(sections) == set(projects)
    for earlier, later in zip(projects, projects[5:], strict=False):
        assert sections[later] > first_pages[earlier], (earlier, later)
    with FakeAsana(dataset) as fake:
        fake.premium_workspaces.clear()
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        config["max_concurrent_requests"] = 1
        sequential = run_tap(config, catalog=catalog_selecting(config, streams))
    assert _comparable(result.messages) == _comparable(sequential.messages)


def _small_projects(**overrides):
    settings = {"seed": 7, "workspaces": 1, "projects_per_workspace": 14, "tasks_per_project": 3}
    return build_dataset(**(settings | overrides))


def _stories_requests(fake: FakeAsana) -> list[tuple[str, float]]:
    """(task gid, when requested) of every stories listing (its first page)."""
    return [
        (r.path.rstrip("/").split("/")[-2], r.time)
        for r in fake.requests_for("/tasks/")
        if r.path.rstrip("/").endswith("/stories") and "offset" not in r.query
    ]


@pytest.mark.parametrize("plan", ["paid", "free"])
def test_small_projects_stories_are_requested_before_the_previous_projects_are_answered(plan):
    # A project of a few tasks used to cost a round trip of its own: its tasks' stories
    # were requested only once the SDK reached it, after the previous project's stories
    # were answered and written. Its first page, read ahead whole, now starts them.
    with FakeAsana(_small_projects(), latency=LATENCY) as fake:
        if plan == "free":
            fake.premium_workspaces.clear()
        result = _sync(fake, max_concurrent_requests=20)
        project_of_task = {r["gid"]: r["project_gid"] for r in result.records["tasks"]}
        projects = list(dict.fromkeys(project_of_task.values()))
        first_asked: dict[str, float] = {}
        last_answered: dict[str, float] = {}
        for task, when in _stories_requests(fake):
            project = project_of_task[task]
            first_asked[project] = min(first_asked.get(project, math.inf), when)
            last_answered[project] = max(last_answered.get(project, 0.0), when + fake.latency)
    assert len(projects) == 14
    # One project after the other, none overlapped. Read ahead a few at a time, most do
    # (those read ahead together; the read-ahead has not started for the first two).
    overlapping = [
        project
        for previous, project in itertools.pairwise(projects[2:])
        if first_asked[project] < last_answered[previous]
    ]
    assert len(overlapping) >= (len(projects) - 3) / 2, (overlapping, projects)
    assert _comparable(result.messages) == _comparable(
        _sequential_messages(_small_projects(), plan)
    )


def test_stories_started_from_a_read_ahead_are_requested_once_per_task():
    # Every second task is in two projects: it is written under the first, so a page
    # read ahead for the second must not start its stories again.
    dataset = _small_projects(tasks_per_project=4, multi_home_every=2)
    with FakeAsana(dataset, latency=LATENCY) as fake:
        fake.premium_workspaces.clear()
        result = _sync(fake, max_concurrent_requests=20)
        asked = [task for task, _ in _stories_requests(fake)]
    tasks = {r["gid"] for r in result.records["tasks"]}
    multi_homed = {gid for gid, task in dataset.tasks.items() if len(task["memberships"]) > 1}
    assert len(multi_homed & tasks) >= 10
    assert sorted(asked) == sorted(tasks)


def test_a_free_plan_resync_requests_no_stories_of_tasks_at_the_bookmark():
    # Asana's modified_since is inclusive: a task modified at the very moment a
    # project's bookmark names comes back in its first page, read ahead, and is dropped
    # as unchanged. Its stories must not be started from that page either.
    with FakeAsana(_small_projects()) as fake:
        fake.premium_workspaces.clear()
        first = _sync(fake, max_concurrent_requests=10)
        bookmarks = {
            p["context"]["project_gid"]: p["replication_key_value"]
            for p in first.state["bookmarks"]["tasks"]["partitions"]
        }
        for project, bookmark in bookmarks.items():
            fake.touch_task(fake.dataset.tasks_by_project[project][0]["gid"], at=bookmark)
        fake.latency = LATENCY
        start = len(fake.requests)
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        config["max_concurrent_requests"] = 10
        second = run_tap(config, catalog=catalog_selecting(config, CORE), state=first.state)
        resync = fake.requests[start:]
    assert len(bookmarks) == 14
    listings = sorted(r.time for r in resync if "project" in r.query)
    assert len(listings) == 14
    # Read ahead (one after the other, none would be asked while another is answered).
    overlapping = [b for a, b in itertools.pairwise(listings) if b < a + LATENCY]
    assert len(overlapping) >= 5
    assert "14 unchanged dropped" in second.logs
    assert not second.records["tasks"]
    assert not [r for r in resync if r.path.endswith("/stories")]


def test_stories_started_from_a_read_ahead_are_fetched_again_for_an_edited_copy():
    # A task in two projects: its stories are started from the later project's whole
    # first page, read ahead. Then a comment is added (its modified_at moves), and the
    # earlier project's second page lists the newer copy: the stories fetched before
    # the comment must not be written with it (the bookmark would pass the comment).
    dataset = build_dataset(
        seed=7, workspaces=1, projects_per_workspace=6, tasks_per_project=2, multi_home_every=0
    )
    with FakeAsana(dataset, latency=LATENCY) as fake:
        fake.premium_workspaces.clear()  # every project listed, in order
        workspace = next(iter(dataset.workspaces))
        projects = [p["gid"] for p in dataset.projects_by_workspace[workspace]]
        earlier, later = projects[1], projects[3]
        task = dataset.tasks_by_project[later][0]["gid"]
        fake.move_task(task, add_to=earlier)  # the earlier project's third task: page 2
        answer = fake._api
        commented = threading.Event()

        def api(method, sub_path, query, token):
            if sub_path == "/tasks" and query.get("project") == [earlier] and "offset" in query:
                commented.wait(3)
            response = answer(method, sub_path, query, token)
            if sub_path == f"/tasks/{task}/stories" and not commented.is_set():
                fake.add_story(task, "Added after the stories were read")
                commented.set()
            return response

        fake._api = api
        result = _sync(fake, max_concurrent_requests=10, page_size=2)
        stories_asked = len([t for t, _ in _stories_requests(fake) if t == task])
    assert commented.is_set()
    written = [r for r in result.records["tasks"] if r["gid"] == task]
    assert len(written) == 1
    texts = [s.get("text") for s in result.records["stories"] if s["target"]["gid"] == task]
    assert "Added after the stories were read" in texts
    assert stories_asked == 2, stories_asked  # the first, from the page read ahead, was outdated
