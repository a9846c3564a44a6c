"""Every user an emitted record names is in ``users`` (issue #16), at one request each.

People who left a workspace are no longer listed by ``GET /users?workspace=``, yet tasks
keep naming them; joins on ``users`` must not lose those rows.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tap_asana_vl.tap import STREAM_TYPES
from tap_asana_vl.user_refs import UserReferences
from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import FAST, SyncResult, catalog_selecting, run_tap

USER_COLUMNS = ("user_gid", "created_by_gid")


def _referenced(result: SyncResult) -> set[str]:
    """Every user gid in any emitted record: compact references and derived columns."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("resource_type") == "user" and value.get("gid"):
                found.add(value["gid"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for stream, records in result.records.items():
        for record in records:
            walk(record)
            found.update(record[c] for c in USER_COLUMNS if record.get(c))
            found.update(record.get("people_gids") or [])
            if stream == "task_history" and record["field"] in ("assignee", "follower"):
                found.update(g for g in (record["old_gid"], record["new_gid"]) if g)
    return found


def _user_lookups(fake: FakeAsana) -> Counter[str]:
    return Counter(r.path for r in fake.requests if r.path.startswith("/api/1.0/users/"))


def test_users_who_left_are_read_once_or_emitted_as_referenced():
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        tasks = list(fake.dataset.tasks)
        readable = fake.dataset.add_departed_user(tasks[0])
        gone = fake.dataset.add_departed_user(tasks[1], still_readable=False)
        # The same person named by a second task: still one lookup.
        fake.dataset.tasks[tasks[2]]["followers"].append(
            {"gid": readable["gid"], "resource_type": "user", "name": readable["name"]}
        )
        fake.touch_task(tasks[2])

        result = run_tap(config)
        lookups = _user_lookups(fake)

    users = {r["gid"]: r for r in result.records["users"]}
    assert len(users) == len(result.records["users"])
    assert _referenced(result) <= set(users)
    # Readable: the full record, as GET /users/{gid} returns it.
    assert users[readable["gid"]]["email"] == readable["email"]
    # Gone: what the references carried.
    assert users[gone["gid"]]["name"] == gone["name"]
    assert lookups == Counter(
        {f"/api/1.0/users/{readable['gid']}": 1, f"/api/1.0/users/{gone['gid']}": 1}
    )


def test_listed_users_cost_no_lookup_and_users_deselected_cost_nothing():
    with FakeAsana(build_dataset(seed=11)) as fake:
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        result = run_tap(config)
        assert _referenced(result) <= {r["gid"] for r in result.records["users"]}
        assert not _user_lookups(fake)

        fake.dataset.add_departed_user(next(iter(fake.dataset.tasks)))
        fake.reset_log()
        others = {s.name for s in STREAM_TYPES} - {"users"}
        run_tap(config, catalog=catalog_selecting(config, others))
        assert not _user_lookups(fake)
        assert not [r for r in fake.requests if r.path == "/api/1.0/users"]


def test_flat_rows_the_tap_builds_are_not_walked_for_user_objects(monkeypatch):
    """Derived tables' and task_projects' rows name users by gid only: walking them for
    compact user objects would find none, so only the records Asana sent are walked."""
    walked: list[frozenset[str]] = []
    note_record = UserReferences.note_record

    def recorded(references: UserReferences, record: dict[str, Any]) -> None:
        walked.append(frozenset(record))
        note_record(references, record)

    monkeypatch.setattr(UserReferences, "note_record", recorded)
    with FakeAsana(build_dataset(seed=11)) as fake:
        result = run_tap({"access_token": fake.pat, "api_url": fake.api_url, **FAST})

    flat = {"task_tags", "task_followers", "task_history", "task_projects"}
    flat_shapes = {frozenset(r) for name in flat for r in result.records[name]}
    assert flat_shapes
    assert walked
    assert not flat_shapes & set(walked)
    # Users named only in flat rows are still in the users table (from their gids).
    assert _referenced(result) <= {r["gid"] for r in result.records["users"]}
