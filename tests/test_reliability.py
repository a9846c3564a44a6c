"""Faults Asana and networks throw: the record set must come out as if nothing happened."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

import tap_asana_vl.transport
from tests.conftest import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET
from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import FAST, SyncResult, catalog_selecting, run_killed, run_tap


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    """Real backoff waits seconds per retry; the policy, not the wait, is under test."""
    monkeypatch.setattr(tap_asana_vl.transport, "backoff_seconds", lambda failures: 0.01)


def _by_key(result: SyncResult) -> dict[tuple[str, tuple[str, ...]], dict[str, Any]]:
    return result.by_key()


def _every_nth(items: list[str], n: int) -> list[str]:
    return items[::n]


def _inject_5xx(fake: FakeAsana) -> None:
    tasks = list(fake.dataset.tasks)
    for i, gid in enumerate(_every_nth(tasks, 10)):
        fake.inject(rf"/api/1\.0/tasks/{gid}/stories", [500, 502, 503, 504][i % 4])
    project = next(iter(fake.dataset.projects))
    fake.inject(rf"/api/1\.0/tasks\?.*project={project}", 503)
    fake.inject(r"/api/1\.0/projects\?", 500)
    fake.inject(r"/api/1\.0/workspaces", 502)


def _inject_429_storm(fake: FakeAsana) -> None:
    for gid in _every_nth(list(fake.dataset.tasks), 4):
        fake.inject(rf"/api/1\.0/tasks/{gid}/stories", 429, headers={"Retry-After": "1"})
    fake.inject(r"/api/1\.0/users\?", 429, times=3, headers={"Retry-After": "1"})


def _inject_broken_bodies(fake: FakeAsana) -> None:
    tasks = list(fake.dataset.tasks)
    for gid in _every_nth(tasks, 9):
        fake.inject(rf"/api/1\.0/tasks/{gid}/stories", 200, raw_body='{"data": [{"gid": "12')
    for gid in _every_nth(tasks[1:], 11):
        fake.inject(
            rf"/api/1\.0/tasks/{gid}/stories",
            502,
            raw_body="<html><body>502 Bad Gateway</body></html>",
        )
    # A body cut off mid-transfer (Content-Length larger than what is sent).
    fake.inject(
        rf"/api/1\.0/tasks/{tasks[2]}/stories",
        200,
        raw_body='{"data": []',
        headers={"Content-Type": "application/json", "Content-Length": "500"},
    )


def _inject_expired_offset(fake: FakeAsana) -> None:
    project = next(iter(fake.dataset.projects))
    fake.inject(
        rf"/api/1\.0/tasks\?(?=.*project={project})(?=.*offset=)",
        400,
        body={"errors": [{"message": "offset: Your pagination token is invalid."}]},
    )


def _inject_timeouts(fake: FakeAsana) -> None:
    for gid in _every_nth(list(fake.dataset.tasks), 25):
        fake.inject(rf"/api/1\.0/tasks/{gid}/stories", 200, delay=1.5, times=1)


FAULTS = {
    "5xx on 10% of requests": (_inject_5xx, {}),
    "429 storm with Retry-After": (_inject_429_storm, {}),
    "truncated and non-JSON bodies": (_inject_broken_bodies, {}),
    "pagination token expired mid-listing": (_inject_expired_offset, {"page_size": 5}),
    "timeouts": (_inject_timeouts, {"request_timeout": 1}),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_faults_do_not_change_the_record_set(fake, pat_config, fault):
    inject, settings = FAULTS[fault]
    config = {**pat_config, **FAST, **settings}
    clean = run_tap(config)
    clean_requests = len(fake.requests)
    fake.reset_log()
    inject(fake)

    faulty = run_tap(config)

    assert _by_key(faulty) == _by_key(clean)
    assert faulty.gids("tasks") == clean.gids("tasks")  # each once
    # The faults cost extra requests (retries, restarts), so they really happened.
    assert len(fake.requests) > clean_requests


def test_token_expiring_mid_run_changes_nothing(fake, oauth_config):
    clean = run_tap({**oauth_config, **FAST})
    fake.access_token_ttl = 1
    fake.latency = 0.03
    faulty = run_tap({**oauth_config, **FAST, "max_concurrent_requests": 3})
    assert _by_key(faulty) == _by_key(clean)
    assert len([t for t in fake.token_requests if t.grant_type == "refresh_token"]) >= 3


def test_premium_and_forbidden_projects_are_skipped_named_and_summarised(fake, pat_config):
    ds = fake.dataset
    premium, forbidden = (list(ds.projects)[i] for i in (0, 4))
    fake.inject(rf"/api/1\.0/tasks\?.*project={premium}", 402, times=None)
    fake.inject(rf"/api/1\.0/tasks\?.*project={forbidden}", 403, times=None)

    result = run_tap({**pat_config, **FAST})

    reachable = {
        gid
        for gid, task in ds.tasks.items()
        if {p["gid"] for p in task["projects"]} - {premium, forbidden}
    }
    assert set(result.gids("tasks")) == reachable
    assert len(result.gids("projects")) == len(ds.projects)
    assert f"Skipping project {premium}" in result.logs
    assert f"Skipping project {forbidden}" in result.logs
    summary = next(line for line in result.logs.splitlines() if "Summary for 'tasks'" in line)
    assert f"project {premium} (premium feature)" in summary
    assert f"project {forbidden} (no access)" in summary


def test_a_task_deleted_between_listing_and_stories_is_skipped_quietly(fake, pat_config):
    clean = run_tap({**pat_config, **FAST})
    deleted = list(fake.dataset.tasks)[7]
    fake.inject(rf"/api/1\.0/tasks/{deleted}/stories", 404, times=None)

    result = run_tap({**pat_config, **FAST})

    expected = {
        key
        for key, record in _by_key(clean).items()
        if not (key[0] == "stories" and record["target"]["gid"] == deleted)
        # task_history is made of those stories.
        and not (key[0] == "task_history" and record["task_gid"] == deleted)
    }
    assert set(_by_key(result)) == expected
    assert f"Skipping task {deleted}" not in "\n".join(
        line for line in result.logs.splitlines() if line.startswith("WARNING")
    )


def test_persistent_5xx_gives_up_naming_path_and_status(fake, pat_config):
    task = list(fake.dataset.tasks)[3]
    fake.inject(rf"/api/1\.0/tasks/{task}/stories", 503, times=None)
    expected = rf"Giving up on /tasks/{{task_gid}}/stories after 3 attempts: 503 .*/{task}/stories"
    with pytest.raises(Exception, match=expected):
        run_tap({**pat_config, **FAST, "max_retries": 2})
    assert len(fake.requests_for(f"/api/1.0/tasks/{task}/stories")) == 3


def test_result_too_large_fails_instead_of_truncating(fake, pat_config):
    project = next(iter(fake.dataset.projects))
    fake.inject(
        rf"/api/1\.0/tasks\?.*project={project}",
        400,
        body={"errors": [{"message": "The result is too large. You should use pagination"}]},
    )
    with pytest.raises(Exception, match=r"refused to list tasks .* in full"):
        run_tap({**pat_config, **FAST})


def test_unknown_project_gid_fails_before_syncing_anything(fake, pat_config):
    real = next(iter(fake.dataset.projects))
    with pytest.raises(Exception, match="project_gids names 4242424242"):
        run_tap({**pat_config, **FAST, "project_gids": [real, "4242424242"]})
    assert fake.requests_for("/api/1.0/tasks") == []


# --- Kill and resume ------------------------------------------------------------------


@pytest.mark.parametrize("kill_point", ["early", "middle", "late"])
def test_a_killed_run_resumed_from_its_last_state_loses_nothing(tmp_path, kill_point):
    dataset = build_dataset(seed=13, projects_per_workspace=4, tasks_per_project=15)
    with FakeAsana(dataset, latency=0.01) as fake:
        # Checkpoints as often as the tap allows (by default at most one a minute).
        config = {
            "access_token": fake.pat,
            "api_url": fake.api_url,
            **FAST,
            "state_interval_seconds": 0,
        }
        clean = run_tap(config)

        # How many STATEs a whole run writes depends on its timing (they are spaced in
        # time): the kill points are taken from a whole run's count, the last one before
        # its final STATE.
        killed_config = {**config, "max_concurrent_requests": 2}
        whole, _ = run_killed(tmp_path, killed_config, 10**6)
        written = sum(1 for m in whole if m["type"] == "STATE")
        assert written >= 4, written
        kill_after_states = {"early": 2, "middle": written // 2 + 1, "late": written - 1}
        fake.reset_log()
        first, running = run_killed(tmp_path, killed_config, kill_after_states[kill_point])
        assert running, "the run ended before the kill: nothing was tested"
        states = [m["value"] for m in first if m["type"] == "STATE"]
        assert states, "killed before any state was written"
        finished = {
            p["context"]["project_gid"]
            for p in states[-1].get("bookmarks", {}).get("tasks", {}).get("partitions", [])
            if p.get("replication_key_value")
        }
        fake.reset_log()
        resumed = run_tap(config, state=states[-1])

    interrupted = SyncResult(messages=first, stdout="", logs="")
    for message in first:
        if message["type"] == "RECORD":
            interrupted.records[message["stream"]].append(message["record"])
    union = {**_by_key(interrupted), **_by_key(resumed)}
    assert set(union) >= set(_by_key(clean)), "a record was lost"

    # `project_gid` says through which project a multi-homed task was listed; a resumed
    # run may list it through its other project. Every Asana field must match.
    def asana_fields(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k != "project_gid"}

    for key, record in _by_key(clean).items():
        assert asana_fields(union[key]) == asana_fields(record)
    # Finished projects are not walked again: their listing asks only for changes,
    # unless the resumed run is the first reconcile pass, which the killed (first) run
    # never completed: it lists every project in full, but asks nothing per task of
    # the tasks it has (below).
    first_reconcile = "Reconcile pass: first one" in resumed.logs
    for request in fake.requests_for("/api/1.0/tasks"):
        project = request.query.get("project", [None])[0]
        if project in finished and not first_reconcile:
            assert request.query.get("modified_since"), project
    stories_again = {r.path.split("/")[4] for r in fake.requests if r.path.endswith("/stories")}
    only_finished = {
        gid for gid, t in dataset.tasks.items() if {p["gid"] for p in t["projects"]} <= finished
    }
    assert not stories_again & only_finished


# --- Secrets ----------------------------------------------------------------------------


def _cli(config: dict[str, Any], tmp_path, name: str, state: dict | None = None) -> str:
    config_path = tmp_path / f"{name}.json"
    config_path.write_text(json.dumps(config))
    args = [sys.executable, "-m", "tap_asana_vl", "--config", str(config_path)]
    if state is not None:
        state_path = tmp_path / f"{name}-state.json"
        state_path.write_text(json.dumps(state))
        args += ["--state", str(state_path)]
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**_env(), "TAP_ASANA_VL_LOGLEVEL": "DEBUG"},
    )
    return proc.stdout + proc.stderr


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TAP_ASANA_VL_")}


def test_no_secret_appears_in_any_output_even_at_debug_level(fake, tmp_path):
    fake.register_client(OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET)
    refresh = fake.issue_refresh_token(OAUTH_CLIENT_ID)
    oauth = {
        "client_id": OAUTH_CLIENT_ID,
        "client_secret": OAUTH_CLIENT_SECRET,
        "refresh_token": refresh,
        "api_url": fake.api_url,
        "oauth_token_url": fake.token_url,
        **FAST,
    }
    pat = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
    fake.access_token_ttl = 2
    outputs = [_cli(oauth, tmp_path, "oauth-sync"), _cli(pat, tmp_path, "pat-sync")]
    task = next(iter(fake.dataset.tasks))
    fake.inject(rf"/api/1\.0/tasks/{task}/stories", 401, times=2)
    outputs.append(_cli(oauth, tmp_path, "oauth-401"))
    fake.inject(rf"/api/1\.0/tasks/{task}/stories", 503, times=None)
    outputs.append(_cli({**pat, "max_retries": 0}, tmp_path, "pat-503"))
    fake.clear_faults()
    outputs.append(
        _cli({**oauth, "client_secret": "wrong-" + OAUTH_CLIENT_SECRET}, tmp_path, "bad-client")
    )
    outputs.append(_cli({**pat, "client_secret": OAUTH_CLIENT_SECRET}, tmp_path, "both-modes"))
    fake.revoke_refresh_token(refresh)
    outputs.append(_cli(oauth, tmp_path, "revoked"))

    access_tokens = {r.token for r in fake.requests if r.token and r.token != fake.pat}
    secrets = {fake.pat, OAUTH_CLIENT_SECRET, refresh, *access_tokens}
    assert len(secrets) >= 4
    text = "\n".join(outputs)
    assert "Giving up" in text  # the scenarios really ran
    assert "invalid_grant" in text
    for secret in secrets:
        assert secret not in text


def test_endless_429s_give_up_with_a_clear_error(fake, pat_config):
    fake.inject(r"/api/1\.0/workspaces", 429, times=None, headers={"Retry-After": "0"})
    with pytest.raises(Exception, match=r"answered 429 to /workspaces 61 times in a row"):
        run_tap({**pat_config, **FAST})


def test_a_listing_cut_off_part_way_does_not_advance_its_bookmark(fake, pat_config):
    project = next(iter(fake.dataset.projects))
    fake.inject(rf"/api/1\.0/tasks\?(?=.*project={project})(?=.*offset=)", 403, times=None)
    result = run_tap({**pat_config, **FAST, "page_size": 5})

    partitions = {
        p["context"]["project_gid"]: p for p in result.state["bookmarks"]["tasks"]["partitions"]
    }
    assert "replication_key_value" not in partitions[project]  # re-read in full next run
    others = [p for gid, p in partitions.items() if gid != project]
    assert all(p.get("replication_key_value") for p in others)


def _page(records: list[dict[str, Any]], offset: str | None) -> dict[str, Any]:
    next_page = None if offset is None else {"offset": offset, "path": "/x", "uri": "http://x"}
    return {"data": records, "next_page": next_page}


def test_an_empty_page_with_a_next_page_does_not_end_the_listing(fake, pat_config):
    """Asana can send ``data: []`` before more pages; stopping there loses the rest."""
    workspace = next(iter(fake.dataset.workspaces))
    tags = [
        {"gid": t["gid"], "resource_type": "tag", "name": t["name"]}
        for t in fake.dataset.tags_by_workspace[workspace]
    ]
    assert tags
    listing = rf"/api/1\.0/workspaces/{workspace}/tags\?"
    fake.inject(listing + r"(?!.*offset=)", 200, body=_page([], "empty-then-more"))
    fake.inject(listing + r".*offset=empty-then-more", 200, body=_page(tags, None))

    result = run_tap({**pat_config, **FAST, "workspace_gids": [workspace]})

    assert sorted(result.gids("tags")) == sorted(t["gid"] for t in tags)


def test_pagination_tokens_that_cycle_fail_instead_of_looping_forever(fake, pat_config):
    workspace = next(iter(fake.dataset.workspaces))
    listing = rf"/api/1\.0/workspaces/{workspace}/tags\?"
    fake.inject(listing + r"(?!.*offset=)", 200, body=_page([], "token-a"), times=None)
    fake.inject(listing + r".*offset=token-a", 200, body=_page([], "token-b"), times=None)
    fake.inject(listing + r".*offset=token-b", 200, body=_page([], "token-a"), times=None)

    with pytest.raises(Exception, match="pages cycle"):
        run_tap({**pat_config, **FAST, "workspace_gids": [workspace]})
    assert len(fake.requests_for(f"/api/1.0/workspaces/{workspace}/tags")) <= 3


def test_a_listing_cut_off_mid_batch_loses_no_task(pat_config):
    """The cut-off falls inside a batch (some tasks of page 1 were dropped as unchanged).

    Records still waiting in the batch must not carry the bookmark past the unread
    pages, whose tasks may be older: they would never be listed again.
    """
    with FakeAsana(build_dataset(seed=11, tasks_per_project=14, multi_home_every=0)) as fake:
        config = {**pat_config, **FAST, "api_url": fake.api_url, "access_token": fake.pat}
        config["page_size"] = 5
        project = next(iter(fake.dataset.projects))
        first = run_tap(config)
        tasks = [t["gid"] for t in fake.dataset.tasks_by_project[project]]
        assert len(tasks) == 14
        bookmark = next(
            p["replication_key_value"]
            for p in first.state["bookmarks"]["tasks"]["partitions"]
            if p["context"]["project_gid"] == project
        )
        moment = datetime.datetime.fromisoformat(bookmark.replace("Z", "+00:00"))
        # Page 1: two tasks exactly at the bookmark (dropped), three changed late...
        for gid in tasks[:2]:
            fake.touch_task(gid, at=moment)
        for gid in tasks[2:5]:
            fake.touch_task(gid, at=moment + datetime.timedelta(seconds=10))
        # ...and the later pages' tasks changed earlier than those three.
        for gid in tasks[5:]:
            fake.touch_task(gid, at=moment + datetime.timedelta(seconds=1))
        fake.inject(rf"/api/1\.0/tasks\?(?=.*project={project})(?=.*offset=)", 403, times=1)

        second = run_tap(config, state=first.state)
        third = run_tap(config, state=second.state)

    delivered = set(second.gids("tasks")) | set(third.gids("tasks"))
    assert set(tasks[2:]) <= delivered


def test_a_top_level_listing_answering_404_fails_the_run(fake, pat_config):
    """A wrong api_url (404 for /workspaces) must not be a successful run with no data."""
    wrong = fake.api_url.replace("/api/1.0", "/api/1.1")
    with pytest.raises(Exception, match=r"top-level listing of workspaces.*check api_url"):
        run_tap({**pat_config, **FAST, "api_url": wrong})


def test_a_huge_retry_after_is_capped_in_total_then_fails_clearly(fake, pat_config, monkeypatch):
    """Retry-After: 99999 again and again must not hold a run for hours."""
    # The policy, scaled down: each wait capped at 0.2 s, at most 0.5 s in all.
    monkeypatch.setattr(tap_asana_vl.transport, "MAX_RETRY_AFTER_SECONDS", 0.2)
    monkeypatch.setattr(tap_asana_vl.transport, "MAX_RATE_LIMITED_SECONDS", 0.5)
    fake.inject(r"/api/1\.0/workspaces", 429, times=None, headers={"Retry-After": "99999"})
    started = time.monotonic()
    with pytest.raises(Exception, match=r"answered 429 to /workspaces 3 times in a row"):
        run_tap({**pat_config, **FAST})
    assert time.monotonic() - started < 5


def test_a_cut_off_listing_of_repeats_only_does_not_advance_its_bookmark(pat_config):
    """Page 1 holds only a task already emitted under an earlier project; page 2 fails.

    The repeat marks progress without being emitted; that progress must not become the
    bookmark, or the unread pages would never be listed again.
    """
    with FakeAsana(build_dataset(seed=11, multi_home_every=2)) as fake:
        config = {**pat_config, **FAST, "api_url": fake.api_url, "access_token": fake.pat}
        ds = fake.dataset
        order = list(ds.projects)
        project = next(
            gid
            for i, gid in enumerate(order)
            if ds.tasks_by_project[gid]
            and {m["project"]["gid"] for m in ds.tasks_by_project[gid][0]["memberships"]}
            & set(order[:i])
        )
        fake.inject(rf"/api/1\.0/tasks\?(?=.*project={project})(?=.*offset=)", 403, times=1)

        first = run_tap({**config, "page_size": 1})

    partition = next(
        p
        for p in first.state["bookmarks"]["tasks"]["partitions"]
        if p["context"]["project_gid"] == project
    )
    assert "replication_key_value" not in partition


def test_a_400_on_a_later_page_of_goals_fails_instead_of_truncating(fake, pat_config):
    fake.inject(r"/api/1\.0/goals\?.*offset=", 400, times=None)
    with pytest.raises(Exception, match="400"):
        run_tap({**pat_config, **FAST, "page_size": 1})


def test_cycling_tokens_in_the_tap_s_own_listing_loop_fail_too(fake, pat_config):
    """Subtasks selected alone page /projects (their parents' listing, the free-plan walk)."""
    fake.premium_workspaces = set()
    workspace = next(iter(fake.dataset.workspaces))
    listing = rf"/api/1\.0/projects\?(?=.*workspace={workspace})"
    fake.inject(listing + r"(?!.*offset=)", 200, body=_page([], "token-a"), times=None)
    fake.inject(listing + r".*offset=token-a", 200, body=_page([], "token-b"), times=None)
    fake.inject(listing + r".*offset=token-b", 200, body=_page([], "token-a"), times=None)
    config = {**pat_config, **FAST, "workspace_gids": [workspace]}

    with pytest.raises(Exception, match="pages cycle"):
        run_tap(config, catalog=catalog_selecting(config, {"subtasks"}))
