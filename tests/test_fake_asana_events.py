"""The fake's ``GET /events`` and its deletions and moves, as Asana's docs describe them.

Sync tokens (412 with a fresh one on the first call and when too old), events of a
project for its tasks and their stories, ``has_more`` after 100, deleted objects 404.
"""

from __future__ import annotations

import pytest
import requests

from tests.fake_asana import FakeAsana, build_dataset


@pytest.fixture
def fake():
    with FakeAsana(build_dataset(seed=11)) as server:
        yield server


def _get(fake: FakeAsana, path: str, **params) -> requests.Response:
    return requests.get(
        f"{fake.api_url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {fake.pat}"},
        timeout=10,
    )


def _token(fake: FakeAsana, resource: str) -> str:
    first = _get(fake, "/events", resource=resource)
    assert first.status_code == 412
    body = first.json()
    assert "too old" in body["errors"][0]["message"]
    return body["sync"]


def _project_with_tasks(fake: FakeAsana) -> tuple[str, list[dict]]:
    for gid, tasks in fake.dataset.tasks_by_project.items():
        if len(tasks) >= 3:
            return gid, list(tasks)
    raise AssertionError("no project with tasks")


def test_first_call_is_412_with_a_token_then_only_later_events(fake: FakeAsana) -> None:
    project, tasks = _project_with_tasks(fake)
    token = _token(fake, project)
    answer = _get(fake, "/events", resource=project, sync=token).json()
    assert answer["data"] == []
    assert answer["has_more"] is False
    assert answer["sync"]

    victim = tasks[0]
    fake.delete_task(victim["gid"])
    assert _get(fake, f"/tasks/{victim['gid']}").status_code == 404
    answer = _get(fake, "/events", resource=project, sync=answer["sync"]).json()
    (event,) = answer["data"]
    assert event["action"] == "deleted"
    assert event["parent"] is None
    assert event["resource"] == {
        "gid": victim["gid"],
        "resource_type": "task",
        "name": victim["name"],
    }
    # The next token has seen it; re-sending the old one repeats the answer.
    assert _get(fake, "/events", resource=project, sync=answer["sync"]).json()["data"] == []


def test_moves_stories_and_sections_reach_the_right_subscribers(fake: FakeAsana) -> None:
    project, tasks = _project_with_tasks(fake)
    other = next(p for p in fake.dataset.projects if p != project)
    tokens = {p: _token(fake, p) for p in (project, other)}
    task = tasks[1]
    before = task["modified_at"]
    fake.move_task(task["gid"], remove_from=project, add_to=other)
    assert task["modified_at"] == before  # bump_modified_at=False: Asana may not bump it
    story = fake.add_story(tasks[2]["gid"])
    fake.delete_story(story["gid"])
    empty = next(
        (s for s in fake.dataset.sections_by_project[project] if s["name"] == "Icebox"), None
    )
    if empty is not None:
        fake.delete_section(empty["gid"])

    seen = _get(fake, "/events", resource=project, sync=tokens[project]).json()["data"]
    actions = [
        (e["action"], e["resource"]["resource_type"], (e["parent"] or {}).get("gid")) for e in seen
    ]
    assert ("removed", "task", project) in actions
    assert ("added", "story", tasks[2]["gid"]) in actions
    assert ("deleted", "story", None) in actions
    if empty is not None:
        assert ("deleted", "section", None) in actions
    there = _get(fake, "/events", resource=other, sync=tokens[other]).json()["data"]
    assert [(e["action"], e["parent"]["gid"]) for e in there] == [("added", other)]
    listed = [t["gid"] for t in _get(fake, "/tasks", project=project).json()["data"]]
    assert task["gid"] not in listed
    stories = _get(fake, f"/tasks/{tasks[2]['gid']}/stories").json()["data"]
    assert story["gid"] not in [s["gid"] for s in stories]


def test_a_value_removed_from_a_task_is_a_changed_event_with_the_compact_value(
    fake: FakeAsana,
) -> None:
    """EventResponse: ``action`` changed, ``change`` = {field, action, removed_value} (the
    compact object), heard by the task and its projects; an add carries ``added_value``."""
    project, tasks = _project_with_tasks(fake)
    task = next(t for t in tasks if t["followers"] and t["tags"])
    follower, tag = task["followers"][0], task["tags"][0]
    tokens = {r: _token(fake, r) for r in (project, task["gid"])}

    fake.remove_from_task(task["gid"], "followers", follower["gid"])
    fake.remove_from_task(task["gid"], "tags", tag["gid"])
    fake.add_to_task(task["gid"], "followers", follower["gid"])

    for resource, token in tokens.items():
        seen = _get(fake, "/events", resource=resource, sync=token).json()["data"]
        assert [(e["action"], e["resource"]["gid"], e["parent"]) for e in seen] == [
            ("changed", task["gid"], None)
        ] * 3
        assert [e["change"] for e in seen] == [
            {"field": "followers", "action": "removed", "removed_value": follower},
            {"field": "tags", "action": "removed", "removed_value": tag},
            {"field": "followers", "action": "added", "added_value": follower},
        ]
    served = _get(fake, f"/tasks/{task['gid']}", opt_fields="followers,tags").json()["data"]
    assert follower["gid"] in {u["gid"] for u in served["followers"]}
    assert tag["gid"] not in {t["gid"] for t in served["tags"]}
    with pytest.raises(KeyError):
        fake.remove_from_task(task["gid"], "tags", tag["gid"])


def test_a_nonempty_section_cannot_be_deleted(fake: FakeAsana) -> None:
    _project, tasks = _project_with_tasks(fake)
    section = tasks[0]["memberships"][0]["section"]["gid"]
    with pytest.raises(ValueError, match="not empty"):
        fake.delete_section(section)


def test_has_more_after_100_events_and_tokens_expire_after_24_hours(fake: FakeAsana) -> None:
    project, tasks = _project_with_tasks(fake)
    token = _token(fake, project)
    for _ in range(105):
        fake.add_story(tasks[0]["gid"])
    first = _get(fake, "/events", resource=project, sync=token).json()
    assert len(first["data"]) == 100
    assert first["has_more"] is True
    second = _get(fake, "/events", resource=project, sync=first["sync"]).json()
    assert len(second["data"]) == 5
    assert second["has_more"] is False
    fake.advance_clock(24 * 3600 + 1)
    expired = _get(fake, "/events", resource=project, sync=second["sync"])
    assert expired.status_code == 412
    assert expired.json()["sync"]


def test_events_are_strict_about_their_input(fake: FakeAsana) -> None:
    project, _ = _project_with_tasks(fake)
    assert _get(fake, "/events").status_code == 400
    assert _get(fake, "/events", resource=project, limit=5).status_code == 400
    assert _get(fake, "/events", resource="1234567890123").status_code == 404
    # A token is only good for the resource it was issued for.
    token = _token(fake, project)
    other = next(p for p in fake.dataset.projects if p != project)
    assert _get(fake, "/events", resource=other, sync=token).status_code == 412
    # opt_fields is a projection of the documented fields only.
    fine = _get(fake, "/events", resource=project, sync=token, opt_fields="action,resource.name")
    assert fine.status_code == 200
    bad = _get(fake, "/events", resource=project, sync=token, opt_fields="gidx")
    assert bad.status_code == 400


def test_a_task_lists_only_the_custom_fields_of_projects_it_is_in(fake: FakeAsana) -> None:
    """A field taken off a project, or a project left, drops the field from the task
    (kept while another of its projects has it); ``modified_at`` does not move."""
    ds = fake.dataset
    task = next(
        t
        for t in ds.tasks.values()
        if len(t["projects"]) > 1
        and all(ds.custom_field_settings_by_project[p["gid"]] for p in t["projects"])
    )
    first, second = (p["gid"] for p in task["projects"][:2])
    field = task["custom_fields"][0]["gid"]
    before = task["modified_at"]

    fake.remove_custom_field_from_project(second, field)
    assert field in {cf["gid"] for cf in task["custom_fields"]}  # the first still has it
    fields = _get(
        fake, f"/projects/{second}/custom_field_settings", opt_fields="custom_field"
    ).json()["data"]
    assert field not in {s["custom_field"]["gid"] for s in fields}
    project = _get(fake, f"/projects/{second}", opt_fields="custom_fields").json()["data"]
    assert field not in {cf["gid"] for cf in project["custom_fields"]}

    fake.move_task(task["gid"], remove_from=first)
    served = _get(fake, f"/tasks/{task['gid']}", opt_fields="custom_fields").json()["data"]
    assert field not in {cf["gid"] for cf in served["custom_fields"]}
    assert served["custom_fields"], "the fields of the project it is still in stay"
    assert task["modified_at"] == before


def test_workspace_events_hear_every_object_of_the_workspace(fake: FakeAsana) -> None:
    """``GET /workspaces/{gid}/events`` (the spec's "Get workspace events")."""
    ds = fake.dataset
    project, tasks = _project_with_tasks(fake)
    workspace = ds.projects[project]["workspace"]["gid"]
    other = next(w for w in ds.workspaces if w != workspace)
    path = f"/workspaces/{workspace}/events"
    first = _get(fake, path)
    assert first.status_code == 412
    token = first.json()["sync"]
    other_token = _get(fake, f"/workspaces/{other}/events").json()["sync"]
    story = ds.stories_by_task[tasks[1]["gid"]][0]
    ds.delete_task(tasks[0]["gid"])
    ds.delete_story(story["gid"])

    answer = _get(fake, path, sync=token).json()

    assert [(e["action"], e["resource"]["gid"]) for e in answer["data"]] == [
        ("deleted", tasks[0]["gid"]),
        ("deleted", story["gid"]),
    ]
    assert answer["has_more"] is False
    assert _get(fake, path, sync=answer["sync"]).json()["data"] == []
    # Another workspace hears nothing of it; a project's token is not a workspace's.
    assert _get(fake, f"/workspaces/{other}/events", sync=other_token).json()["data"] == []
    assert _get(fake, path, sync=_token(fake, project)).status_code == 412


def test_workspace_events_are_strict_and_may_be_refused(fake: FakeAsana) -> None:
    workspace = next(iter(fake.dataset.workspaces))
    path = f"/workspaces/{workspace}/events"
    # The spec documents neither opt_fields nor resource here.
    assert _get(fake, path, opt_fields="action").status_code == 400
    assert _get(fake, path, resource=workspace).status_code == 400
    fake.workspace_events_workspaces.discard(workspace)
    refused = _get(fake, path)
    assert refused.status_code == 402
    assert "premium" in refused.json()["errors"][0]["message"]
