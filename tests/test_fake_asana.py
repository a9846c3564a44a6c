"""Tests for the fake Asana API (tests/fake_asana) that the tap's tests and benchmarks use."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml

from tests.fake_asana import Dataset, FakeAsana, RecordedRequest, build_dataset
from tests.fake_asana.dataset import (
    COMPACT_FIELDS,
    OPT_IN_FIELDS,
    iso_ms,
    parse_iso_ms,
)
from tests.fake_asana.server import ENDPOINT_FIELDS

REPO = Path(__file__).resolve().parents[1]
CLIENT_ID = "test-client"
CLIENT_SECRET = "test-client-secret-value"
REDIRECT_URI = "http://localhost:8765/callback"
BAD_OFFSET = "offset: Your pagination token is invalid."
EXACTLY_ONE = (
    "Must specify exactly one of project, tag, section, user task list, or assignee + workspace"
)
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def shared_dataset() -> Dataset:
    """Read-only dataset shared by tests that do not mutate data."""
    return build_dataset()


@pytest.fixture
def fake(shared_dataset: Dataset):
    """A running fake over the shared (read-only) dataset."""
    with FakeAsana(shared_dataset) as server:
        server.register_client(CLIENT_ID, CLIENT_SECRET)
        yield server


@pytest.fixture
def mutable_fake():
    """A running fake over its own dataset, for tests that change data."""
    with FakeAsana(build_dataset()) as server:
        yield server


@pytest.fixture
def api(fake: FakeAsana):
    """A session authenticated with the fake's PAT, bound to the fake's API URL."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {fake.pat}"

        def get(path: str, **params) -> requests.Response:
            return session.get(fake.api_url + path, params=params or None, timeout=5)

        yield get


def _get(fake: FakeAsana, path: str, token: str | None = None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {token or fake.pat}"}
    return requests.get(fake.api_url + path, params=params or None, headers=headers, timeout=5)


def _error_message(response: requests.Response) -> str:
    body = response.json()
    assert set(body) == {"errors"}
    (error,) = body["errors"]
    assert error["help"].startswith("For more information on API status codes")
    return error["message"]


def _first_project(dataset: Dataset) -> dict:
    return next(iter(dataset.projects.values()))


def _walk(get, path: str, **params) -> tuple[list[dict], int]:
    """Follow next_page to the end; returns all records and the number of pages."""
    records, pages = [], 0
    response = get(path, **params)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "next_page"}
        records.extend(body["data"])
        pages += 1
        if body["next_page"] is None:
            return records, pages
        next_page = body["next_page"]
        assert next_page["uri"].endswith(next_page["path"])
        assert f"offset={next_page['offset']}" in next_page["path"]
        query = {k: v[0] for k, v in parse_qs(urlsplit(next_page["path"]).query).items()}
        response = get(urlsplit(next_page["path"]).path, **query)


# --------------------------------------------------------------------------- envelope
def test_envelope_and_compact_defaults(fake: FakeAsana, api) -> None:
    response = api("/workspaces")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    body = response.json()
    assert set(body) == {"data"}  # no next_page without limit
    assert [set(w) for w in body["data"]] == [{"gid", "resource_type", "name"}] * 2

    project = _first_project(fake.dataset)
    tasks = api("/tasks", project=project["gid"], limit=3).json()
    assert set(tasks) == {"data", "next_page"}
    assert all(
        set(t) == {"gid", "resource_type", "name", "resource_subtype"} for t in tasks["data"]
    )

    task_gid = tasks["data"][0]["gid"]
    stories = api(f"/tasks/{task_gid}/stories").json()["data"]
    compact_story = {"gid", "resource_type", "created_at", "created_by", "resource_subtype", "text"}
    assert all(set(s) == compact_story for s in stories)
    assert all(set(u) == {"gid", "resource_type", "name"} for u in api("/users").json()["data"])

    # Single reads return the full record, minus Asana's opt-in fields.
    full = api(f"/tasks/{task_gid}").json()
    assert set(full) == {"data"}
    stored = fake.dataset.tasks[task_gid]
    assert "created_by" not in full["data"]
    assert "html_notes" not in full["data"]
    assert full["data"]["memberships"] == stored["memberships"]
    assert full["data"]["notes"] == stored["notes"]
    assert "project_gid" not in full["data"]
    story = api(f"/stories/{stories[0]['gid']}").json()["data"]
    assert story["target"]["gid"] == task_gid
    assert api(f"/projects/{project['gid']}").json()["data"]["name"] == project["name"]
    assert api(f"/workspaces/{project['workspace']['gid']}").json()["data"]["is_organization"]


def test_pat_is_not_shaped_like_a_real_one(fake: FakeAsana) -> None:
    assert not re.fullmatch(r"\d/\d+:[0-9a-f]{32}", fake.pat)
    assert fake.pat in fake.pats


def test_users_me_and_email(fake: FakeAsana, api) -> None:
    me = api("/users/me").json()["data"]
    assert me["gid"] == fake.dataset.me_gid
    # The shared user belongs to every workspace.
    assert {w["gid"] for w in me["workspaces"]} == set(fake.dataset.workspaces)
    assert api(f"/users/{me['email']}").json()["data"]["gid"] == me["gid"]


# --------------------------------------------------------------------------- pagination
def test_pagination_walk_returns_every_task_once(fake: FakeAsana, api) -> None:
    project = _first_project(fake.dataset)
    expected = [t["gid"] for t in fake.dataset.tasks_by_project[project["gid"]]]
    assert len(expected) > 10
    records, pages = _walk(api, "/tasks", project=project["gid"], limit=4, opt_fields="name")
    gids = [r["gid"] for r in records]
    assert gids == expected
    assert pages == -(-len(expected) // 4)


def test_users_sorted_by_gid_and_paginated(fake: FakeAsana, api) -> None:
    workspace = next(iter(fake.dataset.workspaces))
    records, pages = _walk(api, "/users", workspace=workspace, limit=1)
    gids = [u["gid"] for u in records]
    assert gids == sorted(gids)
    assert len(gids) == 4
    assert pages == 4


def test_exact_last_page_has_null_next_page(fake: FakeAsana, api) -> None:
    body = api("/workspaces", limit=2).json()
    assert len(body["data"]) == 2
    assert body["next_page"] is None


@pytest.mark.parametrize(
    "offset",
    [
        "",
        "garbage",
        "eyJ0eXAiOJiKV1iQLCJhbGciOiJIUzI1NiJ9",
        base64.urlsafe_b64encode(b'{"fp":"x","after":"1","iat":0}').decode() + ".AAAA",
    ],
)
def test_forged_offsets_are_rejected(fake: FakeAsana, api, offset: str) -> None:
    project = _first_project(fake.dataset)
    response = api("/tasks", project=project["gid"], limit=2, offset=offset)
    assert response.status_code == 400
    assert _error_message(response) == BAD_OFFSET


def test_offsets_are_bound_to_their_query(fake: FakeAsana, api) -> None:
    first, second = list(fake.dataset.projects)[:2]
    token = api("/tasks", project=first, limit=2).json()["next_page"]["offset"]
    # Same query with other limit/opt_fields: fine (they do not change the result set).
    ok = api("/tasks", project=first, limit=3, offset=token, opt_fields="name")
    assert ok.status_code == 200
    assert ok.json()["data"][0]["gid"] == fake.dataset.tasks_by_project[first][2]["gid"]
    for params in ({"project": second}, {"project": first, "modified_since": "2020-01-01"}):
        response = api("/tasks", limit=2, offset=token, **params)
        assert response.status_code == 400
        assert _error_message(response) == BAD_OFFSET
    assert (
        api("/projects", workspace=next(iter(fake.dataset.workspaces)), offset=token).status_code
        == 400
    )
    # A tampered signature is rejected.
    payload, signature = token.split(".")
    tampered = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    assert api("/tasks", project=first, limit=2, offset=tampered).status_code == 400


def test_offset_ttl(fake: FakeAsana, api) -> None:
    project = _first_project(fake.dataset)["gid"]
    token = api("/tasks", project=project, limit=2).json()["next_page"]["offset"]
    fake.offset_ttl = 30
    assert api("/tasks", project=project, limit=2, offset=token).status_code == 200
    fake.advance_clock(31)
    response = api("/tasks", project=project, limit=2, offset=token)
    assert response.status_code == 400
    assert _error_message(response) == BAD_OFFSET


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "", "1.5"])
def test_bad_limits(fake: FakeAsana, api, limit: str) -> None:
    response = api("/tasks", project=_first_project(fake.dataset)["gid"], limit=limit)
    assert response.status_code == 400
    assert _error_message(response) == "limit: Must be between 1 and 100"


def test_limit_bounds_accepted(fake: FakeAsana, api) -> None:
    project = _first_project(fake.dataset)["gid"]
    assert len(api("/tasks", project=project, limit=1).json()["data"]) == 1
    assert api("/tasks", project=project, limit=100).json()["next_page"] is None


def test_unpaginated_result_too_large() -> None:
    dataset = build_dataset(
        workspaces=1,
        users_per_workspace=1,
        projects_per_workspace=1,
        tasks_per_project=1001,
        stories_per_task=0,
    )
    with FakeAsana(dataset) as fake:
        project = _first_project(dataset)["gid"]
        response = _get(fake, "/tasks", project=project)
        assert response.status_code == 400
        assert _error_message(response).startswith(
            "The result is too large. You should use pagination"
        )
        assert len(_get(fake, "/tasks", project=project, limit=100).json()["data"]) == 100


def test_projects_need_workspace_to_paginate(fake: FakeAsana, api) -> None:
    response = api("/projects", limit=5)
    assert response.status_code == 400
    assert _error_message(response) == "Need to specify a workspace or team to paginate!"
    assert len(api("/projects").json()["data"]) == len(fake.dataset.projects)


def test_projects_archived_filter(fake: FakeAsana, api) -> None:
    workspace = next(iter(fake.dataset.workspaces))
    projects = fake.dataset.projects_by_workspace[workspace]
    archived = {p["gid"] for p in projects if p["archived"]}
    assert archived
    assert archived != {p["gid"] for p in projects}

    def listed(**params) -> set[str]:
        return {
            p["gid"]
            for p in api("/projects", workspace=workspace, limit=100, **params).json()["data"]
        }

    assert listed(archived="true") == archived
    assert listed(archived="false") == {p["gid"] for p in projects} - archived
    assert listed() == {p["gid"] for p in projects}
    assert api("/projects", workspace=workspace, archived="maybe").status_code == 400


# --------------------------------------------------------------------------- opt_fields
def test_opt_fields_projection(fake: FakeAsana, api) -> None:
    project = _first_project(fake.dataset)
    opt_fields = ",".join(
        [
            "name",
            "this.notes",
            "assignee",
            "assignee.email",
            "memberships.(project|section).name",
            "this.(followers|workspace).name",
            "custom_fields.display_value",
            "likes.user.name",
            "external",
            "no_such_field",
            "projects.no_such_field",
        ]
    )
    data = api("/tasks", project=project["gid"], limit=100, opt_fields=opt_fields).json()["data"]
    users = fake.dataset.users
    for record in data:
        task = fake.dataset.tasks[record["gid"]]
        expected_keys = {
            "gid",
            "name",
            "notes",
            "assignee",
            "memberships",
            "followers",
            "workspace",
            "custom_fields",
            "likes",
            "external",
            "projects",
        }
        assert set(record) == expected_keys
        # An unknown leaf under a known field leaves just the gids.
        assert record["projects"] == [{"gid": p["gid"]} for p in task["projects"]]
        assert record["notes"] == task["notes"]
        if task["assignee"] is None:
            assert record["assignee"] is None
        else:
            # Bare + sub-field: minimal ref plus the field, resolved through the user.
            user = users[task["assignee"]["gid"]]
            assert record["assignee"] == {
                "gid": user["gid"],
                "resource_type": "user",
                "email": user["email"],
            }
        assert record["memberships"] == [
            {
                "project": {"gid": m["project"]["gid"], "name": m["project"]["name"]},
                "section": {"gid": m["section"]["gid"], "name": m["section"]["name"]},
            }
            for m in task["memberships"]
        ]
        assert record["followers"] == [
            {"gid": f["gid"], "name": f["name"]} for f in task["followers"]
        ]
        assert record["workspace"] == {
            "gid": task["workspace"]["gid"],
            "name": task["workspace"]["name"],
        }
        assert all(set(cf) == {"gid", "display_value"} for cf in record["custom_fields"])
        assert all(
            set(like) == {"gid", "user"} and set(like["user"]) == {"gid", "name"}
            for like in record["likes"]
        )
        assert record["external"] == task["external"]  # plain object: comes back whole


def test_opt_fields_bare_resource_and_single_object(fake: FakeAsana, api) -> None:
    task = next(t for t in fake.dataset.tasks.values() if t["assignee"] is not None)
    data = api(
        f"/tasks/{task['gid']}", opt_fields="assignee,projects,created_by,html_notes"
    ).json()["data"]
    assert data == {
        "gid": task["gid"],
        "assignee": {"gid": task["assignee"]["gid"], "resource_type": "user"},
        "projects": [{"gid": p["gid"], "resource_type": "project"} for p in task["projects"]],
        "created_by": {"gid": task["created_by"]["gid"], "resource_type": "user"},
        "html_notes": task["html_notes"],  # opt-in fields come back when named
    }
    assert api(f"/tasks/{task['gid']}", opt_fields="nothing_known").json()["data"] == {
        "gid": task["gid"]
    }


def test_assignee_names_match_users(shared_dataset: Dataset) -> None:
    users = shared_dataset.users
    for task in shared_dataset.tasks.values():
        for ref in [task["assignee"], task["completed_by"], *task["followers"]]:
            if ref is not None:
                assert ref["name"] == users[ref["gid"]]["name"]
        for membership in task["memberships"]:
            assert (
                membership["project"]["name"]
                == shared_dataset.projects[membership["project"]["gid"]]["name"]
            )


# --------------------------------------------------------------------------- dataset
@pytest.fixture(scope="session")
def asana_spec() -> dict:
    """Asana's OpenAPI spec (vendored), parsed once: the fake must agree with it."""
    with (REPO / "spec" / "asana_oas.yaml").open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=yaml.CSafeLoader)


def _documented_properties(spec: dict, component: str) -> set[str]:
    """Property names of a spec component, following ``$ref`` and ``allOf``."""
    schema = spec["components"]["schemas"][component]
    names: set[str] = set()
    for part in [schema, *schema.get("allOf", [])]:
        if "$ref" in part:
            names |= _documented_properties(spec, part["$ref"].rsplit("/", 1)[-1])
        names |= set(part.get("properties", {}))
    return names


#: Objects per stream in the default dataset.
DEFAULT_COUNTS = {
    "workspaces": 2,
    "users": 7,
    "projects": 6,
    "tasks": 72,
    "stories": 144,
    "subtasks": 24,
    "subtask_stories": 36,
    "sections": 14,
    "tags": 6,
    "teams": 2,
    "team_memberships": 6,
    "project_memberships": 18,
    "custom_fields": 18,
    "project_custom_field_settings": 45,
    "attachments": 36,
    "portfolios": 4,
    "portfolio_items": 6,
    "status_updates": 6,
    "goals": 4,
    "time_tracking_entries": 27,
}

#: The spec component documenting one record of each stream.
RESPONSE_COMPONENTS = {
    "workspaces": "WorkspaceResponse",
    "users": "UserResponse",
    "projects": "ProjectResponse",
    "tasks": "TaskResponse",
    "stories": "StoryResponse",
    "subtasks": "TaskResponse",
    "subtask_stories": "StoryResponse",
    "sections": "SectionResponse",
    "tags": "TagResponse",
    "teams": "TeamResponse",
    "team_memberships": "TeamMembershipResponse",
    "project_memberships": "ProjectMembershipNormalResponse",
    "custom_fields": "CustomFieldResponse",
    "project_custom_field_settings": "CustomFieldSettingResponse",
    "attachments": "AttachmentResponse",
    "portfolios": "PortfolioResponse",
    "portfolio_items": "ProjectResponse",
    "status_updates": "StatusUpdateResponse",
    "goals": "GoalResponse",
    "time_tracking_entries": "TimeTrackingEntryBase",
}


def test_default_dataset_counts(shared_dataset: Dataset) -> None:
    counts = Counter(stream for stream, _ in shared_dataset.iter_objects())
    assert dict(counts) == DEFAULT_COUNTS


@pytest.mark.parametrize("stream", list(RESPONSE_COMPONENTS))
def test_objects_are_full_documented_records(
    shared_dataset: Dataset, asana_spec: dict, stream: str
) -> None:
    """Each object has only documented fields, and together they have all of them.

    (Conditional fields -- a story's subtype fields, an approval task's status, an
    Asana-hosted attachment's size -- are on some objects only, as in Asana.)
    """
    component = RESPONSE_COMPONENTS[stream]
    documented = _documented_properties(asana_spec, component)
    # Subtasks and their stories are tasks and stories: check the union over both.
    same = {name for name, other in RESPONSE_COMPONENTS.items() if other == component}
    seen: set[str] = set()
    for name, obj in shared_dataset.iter_objects():
        if name == stream:
            assert set(obj) <= documented, (stream, sorted(set(obj) - documented))
        if name in same:
            seen |= set(obj)
    # Reference custom fields (Asana's newest field type) are not modelled.
    assert seen == documented - {"reference_value"}, (stream, sorted(documented - seen))


def test_dataset_has_the_nulls_asana_sends(shared_dataset: Dataset) -> None:
    ds = shared_dataset
    tasks = list(ds.tasks.values())

    def some(objects, key, value=None) -> bool:
        return any(o.get(key, "absent") == value for o in objects)

    for key in ("assignee", "due_on", "due_at", "start_on", "start_at", "completed_at"):
        assert some(tasks, key), key
    assert all(t["parent"] is None and t["external"] is None for t in tasks)
    assert some(tasks, "notes", "")
    for key in ("tags", "followers", "dependencies", "custom_fields"):
        assert some(tasks, key, []), key
    assert some(ds.users.values(), "photo")
    projects = list(ds.projects.values())
    for key in ("owner", "due_on", "start_on", "current_status_update", "project_brief", "icon"):
        assert some(projects, key), key
    assert all(p["current_status"] is None for p in projects)
    assert some(projects, "color")
    assert some(projects, "color", "none")
    plain = [p for p in projects if not ds.workspaces[p["workspace"]["gid"]]["is_organization"]]
    assert plain
    assert all(p["team"] is None for p in plain)
    system = [s for s in ds.stories.values() if s["type"] == "system"]
    assert some(system, "created_by")
    assert all("is_pinned" not in s and "html_text" not in s for s in system)

    definitions = list(ds.custom_fields.values())
    assert some(definitions, "description")
    assert {d["representation_type"] for d in definitions} >= {
        "text", "number", "enum", "multi_enum", "date", "people", "formula",
    }  # fmt: skip
    for definition in definitions:
        is_number = definition["type"] == "number"
        assert (definition["precision"] is None) is not is_number, definition["name"]
    assert any(d["is_formula_field"] and d["is_value_read_only"] for d in definitions)
    values = [v for t in tasks for v in t["custom_fields"]]
    numbers = [v["number_value"] for v in values if v["type"] == "number"]
    assert 12.5 in numbers
    assert None in numbers
    assert any(isinstance(n, int) for n in numbers)
    dates = [v["date_value"] for v in values if v["type"] == "date"]
    assert None in dates
    assert any(d and d["date_time"] is None for d in dates)  # a date without a time
    assert any(d and d["date_time"] for d in dates)
    assert some(values, "enum_value")
    assert some(values, "text_value")
    assert all(v["precision"] is None for v in values if v["type"] != "number")


def test_endpoint_fields_match_the_spec(asana_spec: dict) -> None:
    """The fake's table of returnable fields is what each operation's ``opt_fields``
    documents (top-level names; ``offset``/``path``/``uri`` are pagination)."""
    for endpoint, fields in ENDPOINT_FIELDS.items():
        operation = asana_spec["paths"][endpoint]["get"]
        parameters = [
            asana_spec["components"]["parameters"][p["$ref"].rsplit("/", 1)[-1]]
            if "$ref" in p
            else p
            for p in operation["parameters"]
        ]
        (opt_fields,) = [p for p in parameters if p["name"] == "opt_fields"]
        names = {name.split(".")[0] for name in opt_fields["schema"]["items"]["enum"]}
        assert fields == names - {"offset", "path", "uri"}, endpoint


def test_dataset_is_deterministic_and_relational() -> None:
    a, b = build_dataset(seed=3), build_dataset(seed=3)
    assert json.dumps(a.tasks) == json.dumps(b.tasks)
    all_gids = [
        g for table in (a.workspaces, a.users, a.projects, a.tasks, a.stories) for g in table
    ]
    assert len(all_gids) == len(set(all_gids))
    assert all(re.fullmatch(r"\d{16}", g) for g in all_gids)
    for project in a.projects.values():
        assert project["created_at"] <= project["modified_at"]
        assert project["resource_type"] == "project"
        assert project["workspace"]["gid"] in a.workspaces
        is_org = a.workspaces[project["workspace"]["gid"]]["is_organization"]
        assert (project["team"] is not None) == is_org
    for task in a.tasks.values():
        assert task["parent"] is None
        assert "2024-01-01" <= task["created_at"] <= task["modified_at"] < "2026"
        assert task["completed"] == (task["completed_at"] is not None)
        if task["completed"]:
            assert task["created_at"] <= task["completed_at"] <= task["modified_at"]
        assert [m["project"]["gid"] for m in task["memberships"]] == [
            p["gid"] for p in task["projects"]
        ]
        ws_users = {u["gid"] for u in a.users_by_workspace[task["workspace"]["gid"]]}
        assert task["assignee"] is None or task["assignee"]["gid"] in ws_users
        for story in a.stories_by_task[task["gid"]]:
            assert story["target"]["gid"] == task["gid"]
            assert task["created_at"] <= story["created_at"] <= task["modified_at"]
            assert story["type"] == (
                "comment" if story["resource_subtype"] == "comment_added" else "system"
            )
    shared = [u for u in a.users.values() if len(u["workspaces"]) == len(a.workspaces)]
    assert len(shared) == 1
    archived = [p["name"] for p in a.projects.values() if p["archived"]]
    assert archived == ["Project 3", "Project 6"]


def test_multi_homed_tasks_are_listed_in_both_projects(fake: FakeAsana, api) -> None:
    multi = [t for t in fake.dataset.tasks.values() if len(t["projects"]) == 2]
    assert len(multi) == 2 * 6  # 12 tasks per project, every 5th multi-homed
    for task in multi[:3]:
        for project in task["projects"]:
            listed = api("/tasks", project=project["gid"], limit=100).json()["data"]
            assert task["gid"] in [t["gid"] for t in listed]
        workspace = task["workspace"]["gid"]
        projects = fake.dataset.projects_by_workspace[workspace]
        first, second = (p["gid"] for p in task["projects"])
        index = [p["gid"] for p in projects].index(first)
        assert second == projects[(index + 1) % len(projects)]["gid"]


# --------------------------------------------------------------------------- filters
def test_modified_since_is_inclusive(fake: FakeAsana, api) -> None:
    project = _first_project(fake.dataset)["gid"]
    tasks = fake.dataset.tasks_by_project[project]
    pivot = sorted(t["modified_at"] for t in tasks)[len(tasks) // 2]

    def listed(since: str) -> set[str]:
        return {
            t["gid"]
            for t in api("/tasks", project=project, modified_since=since, limit=100).json()["data"]
        }

    expected = {t["gid"] for t in tasks if t["modified_at"] >= pivot}
    assert listed(pivot) == expected
    one_ms_later = iso_ms(parse_iso_ms(pivot) + 1)
    assert listed(one_ms_later) == expected - {t["gid"] for t in tasks if t["modified_at"] == pivot}
    # tap-asana's format: microseconds, no zone (= UTC).
    naive = pivot.replace("Z", "") + "000"
    assert listed(naive) == expected
    assert listed("2000-01-01") == {t["gid"] for t in tasks}


@pytest.mark.parametrize("value", ["yesterday", "", "2024-13-01T00:00:00Z", "now"])
def test_bad_modified_since(fake: FakeAsana, api, value: str) -> None:
    response = api("/tasks", project=_first_project(fake.dataset)["gid"], modified_since=value)
    assert response.status_code == 400
    assert _error_message(response) == "modified_since: Not a valid date-time"


def test_completed_since(fake: FakeAsana, api) -> None:
    project = _first_project(fake.dataset)["gid"]
    tasks = fake.dataset.tasks_by_project[project]
    listed = {
        t["gid"] for t in api("/tasks", project=project, completed_since="now").json()["data"]
    }
    assert listed == {t["gid"] for t in tasks if not t["completed"]}
    assert api("/tasks", project=project, completed_since="soon").status_code == 400


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({}, 400, "You should specify one of workspace, project, tag, section, user_task_list"),
        (
            {"workspace": "1"},
            400,
            EXACTLY_ONE,
        ),
        (
            {"project": "1", "tag": "2"},
            400,
            EXACTLY_ONE,
        ),
        ({"project": ""}, 400, "project: Not a Long"),
        ({"project": "abc"}, 400, "project: Not a recognized ID: abc"),
        ({"project": "1234567890123456"}, 404, "project: Unknown object: 1234567890123456"),
    ],
)
def test_tasks_filter_errors(fake: FakeAsana, api, params: dict, status: int, message: str) -> None:
    response = api("/tasks", **params)
    assert response.status_code == status
    assert _error_message(response) == message


def test_other_task_filters(fake: FakeAsana, api) -> None:
    ds = fake.dataset
    task = next(t for t in ds.tasks.values() if t["tags"] and t["assignee"])
    tag = task["tags"][0]["gid"]
    by_tag = {t["gid"] for t in api("/tasks", tag=tag).json()["data"]}
    assert by_tag == {t["gid"] for t in ds.tasks.values() if tag in [x["gid"] for x in t["tags"]]}
    section = task["memberships"][0]["section"]["gid"]
    by_section = {t["gid"] for t in api("/tasks", section=section).json()["data"]}
    assert task["gid"] in by_section
    by_assignee = api(
        "/tasks", assignee=task["assignee"]["gid"], workspace=task["workspace"]["gid"]
    ).json()["data"]
    assert task["gid"] in {t["gid"] for t in by_assignee}


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/tasks/1234567890123456", 404, "task: Unknown object: 1234567890123456"),
        ("GET", "/tasks/1234567890123456/stories", 404, "task: Unknown object: 1234567890123456"),
        ("GET", "/stories/1234567890123456", 404, "story: Unknown object: 1234567890123456"),
        ("GET", "/projects/1234567890123456", 404, "project: Unknown object: 1234567890123456"),
        ("GET", "/users/1234567890123456", 404, "user: Unknown object: 1234567890123456"),
        ("GET", "/workspaces/1234567890123456", 404, "workspace: Unknown object: 1234567890123456"),
        ("GET", "/tasks/abc", 400, "task: Not a recognized ID: abc"),
        ("GET", "/no/such/route", 404, "No matching route for request"),
        ("POST", "/tasks", 404, "No matching route for request"),
        ("DELETE", "/workspaces", 404, "No matching route for request"),
    ],
)
def test_unknown_objects_and_routes(
    fake: FakeAsana, method: str, path: str, status: int, message: str
) -> None:
    response = requests.request(
        method, fake.api_url + path, headers={"Authorization": f"Bearer {fake.pat}"}, timeout=5
    )
    assert response.status_code == status
    assert _error_message(response) == message


# --------------------------------------------------------------------------- mutations
def test_add_story_bumps_task_modified_at(mutable_fake: FakeAsana) -> None:
    fake = mutable_fake
    task = next(iter(fake.dataset.tasks.values()))
    before = task["modified_at"]
    cutoff = iso_ms(int(fake.now() * 1000) - 1)
    story = fake.add_story(task["gid"], "Hello from the test")
    assert story["text"] == "Hello from the test"
    assert story["type"] == "comment"
    assert task["modified_at"] == story["created_at"] > before
    stories = _get(fake, f"/tasks/{task['gid']}/stories").json()["data"]
    assert stories[-1]["gid"] == story["gid"]
    project = task["projects"][0]["gid"]
    changed = _get(fake, "/tasks", project=project, modified_since=cutoff).json()["data"]
    assert [t["gid"] for t in changed] == [task["gid"]]


def test_touch_add_delete_task(mutable_fake: FakeAsana) -> None:
    fake = mutable_fake
    fake.cache_responses = True  # the helpers must invalidate cached renderings
    project = _first_project(fake.dataset)["gid"]
    first = _get(fake, "/tasks", project=project, opt_fields="modified_at").json()["data"]
    gid = first[0]["gid"]
    fake.touch_task(gid, at="2030-01-02T03:04:05.678Z")
    assert (
        _get(fake, f"/tasks/{gid}", opt_fields="modified_at").json()["data"]["modified_at"]
        == "2030-01-02T03:04:05.678Z"
    )
    new = fake.add_task(project, name="Brand new")
    listed = _get(fake, "/tasks", project=project, opt_fields="name").json()["data"]
    assert listed[-1] == {"gid": new["gid"], "name": "Brand new"}
    assert new["created_at"] == new["modified_at"]
    fake.delete_task(gid)
    assert gid not in {t["gid"] for t in _get(fake, "/tasks", project=project).json()["data"]}
    assert _get(fake, f"/tasks/{gid}").status_code == 404


def test_pagination_survives_deletes_and_inserts(mutable_fake: FakeAsana) -> None:
    fake = mutable_fake
    project = _first_project(fake.dataset)["gid"]
    expected = [t["gid"] for t in fake.dataset.tasks_by_project[project]]
    page = _get(fake, "/tasks", project=project, limit=3).json()
    fake.delete_task(page["data"][-1]["gid"])  # the token's anchor disappears
    fake.delete_task(expected[3])
    new = fake.add_task(project)
    rest, _ = _walk(
        lambda p, **q: _get(fake, p, **q),
        "/tasks",
        project=project,
        limit=3,
        offset=page["next_page"]["offset"],
    )
    assert [t["gid"] for t in rest] == [*expected[4:], new["gid"]]


# --------------------------------------------------------------------------- auth
@pytest.mark.parametrize(
    "header", [None, "Bearer nope", "Bearer ", "Basic Zm9vOmJhcg==", "Token x"]
)
def test_unauthorized(fake: FakeAsana, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = requests.get(fake.api_url + "/workspaces", headers=headers, timeout=5)
    assert response.status_code == 401
    assert _error_message(response) == "Not Authorized"


def test_more_pats(fake: FakeAsana) -> None:
    fake.pats.add("second-fake-pat")
    assert _get(fake, "/workspaces", token="second-fake-pat").status_code == 200


def test_expired_access_token(fake: FakeAsana) -> None:
    token = fake.issue_access_token(ttl=60)
    assert _get(fake, "/workspaces", token=token).status_code == 200
    fake.advance_clock(61)
    response = _get(fake, "/workspaces", token=token)
    assert response.status_code == 401
    assert "The bearer token has expired" in _error_message(response)


# --------------------------------------------------------------------------- OAuth
def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    return verifier, challenge


def _authorize(fake: FakeAsana, challenge: str, state: str = "xyz", **extra) -> requests.Response:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "scope": "default",
        **extra,
    }
    return requests.get(fake.authorize_url, params=params, allow_redirects=False, timeout=5)


def _redirect_params(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _exchange(fake: FakeAsana, code: str, verifier: str, **overrides) -> requests.Response:
    form = {
        "grant_type": "authorization_code",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URI,
        "code": code,
        "code_verifier": verifier,
        **overrides,
    }
    return requests.post(fake.token_url, data=form, timeout=5)


def _refresh(fake: FakeAsana, token: str, **overrides) -> requests.Response:
    form = {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": token,
        **overrides,
    }
    return requests.post(fake.token_url, data=form, timeout=5)


def test_oauth_code_flow_with_pkce(fake: FakeAsana) -> None:
    verifier, challenge = _pkce()
    params = _redirect_params(_authorize(fake, challenge, state="s-123"))
    assert params["state"] == "s-123"
    assert fake.authorize_requests[-1]["code_challenge"] == challenge

    response = _exchange(fake, params["code"], verifier)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    me = fake.dataset.users[fake.dataset.me_gid]
    assert body["data"] == {
        "id": int(me["gid"]),
        "gid": me["gid"],
        "name": me["name"],
        "email": me["email"],
    }
    assert _get(fake, "/users/me", token=body["access_token"]).json()["data"]["gid"] == me["gid"]

    # The code is single-use.
    again = _exchange(fake, params["code"], verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"

    # Refresh: new access token, no new refresh token (unless rotation is on).
    refreshed = _refresh(fake, body["refresh_token"])
    assert refreshed.status_code == 200
    assert "refresh_token" not in refreshed.json()
    assert refreshed.json()["access_token"] != body["access_token"]
    assert fake.access_tokens_issued == 2
    assert [(r.grant_type, r.client_id, r.status) for r in fake.token_requests] == [
        ("authorization_code", CLIENT_ID, 200),
        ("authorization_code", CLIENT_ID, 400),
        ("refresh_token", CLIENT_ID, 200),
    ]
    assert CLIENT_SECRET not in repr(fake.token_requests)
    assert CLIENT_SECRET not in repr(fake.requests)


def test_oauth_wrong_verifier_and_redirect(fake: FakeAsana) -> None:
    verifier, challenge = _pkce()
    code = _redirect_params(_authorize(fake, challenge))["code"]
    response = _exchange(fake, code, verifier + "x")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    code = _redirect_params(_authorize(fake, challenge))["code"]
    other_redirect = _exchange(fake, code, verifier, redirect_uri="http://localhost:1/other")
    assert other_redirect.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "unknown"}, 401, "invalid_client"),
        ({"refresh_token": "fake-refresh-unknown"}, 400, "invalid_grant"),
        ({"refresh_token": ""}, 400, "invalid_request"),
        ({"client_secret": ""}, 400, "invalid_request"),
        ({"grant_type": ""}, 400, "invalid_request"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ],
)
def test_oauth_token_errors(fake: FakeAsana, overrides: dict, status: int, error: str) -> None:
    refresh_token = fake.issue_refresh_token(CLIENT_ID)
    response = _refresh(fake, refresh_token, **overrides)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error
    assert body["error_description"]


def test_oauth_revoked_and_rotated_refresh_tokens(fake: FakeAsana) -> None:
    refresh_token = fake.issue_refresh_token(CLIENT_ID)
    fake.rotate_refresh_tokens = True
    rotated = _refresh(fake, refresh_token).json()["refresh_token"]
    assert _refresh(fake, refresh_token).json()["error"] == "invalid_grant"
    fake.revoke_refresh_token(rotated)
    response = _refresh(fake, rotated)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    # Revoking over HTTP, as Asana's /-/oauth_revoke does.
    fake.rotate_refresh_tokens = False
    third = fake.issue_refresh_token(CLIENT_ID)
    form = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token": third}
    assert requests.post(fake.revoke_url, data=form, timeout=5).status_code == 200
    assert _refresh(fake, third).json()["error"] == "invalid_grant"


def test_oauth_access_token_ttl(fake: FakeAsana) -> None:
    fake.access_token_ttl = 5
    body = _refresh(fake, fake.issue_refresh_token(CLIENT_ID)).json()
    assert body["expires_in"] == 5
    assert _get(fake, "/workspaces", token=body["access_token"]).status_code == 200
    fake.advance_clock(5)
    response = _get(fake, "/workspaces", token=body["access_token"])
    assert response.status_code == 401
    assert "The bearer token has expired" in _error_message(response)


def test_oauth_authorize_errors(fake: FakeAsana) -> None:
    _, challenge = _pkce()
    unknown = _authorize(fake, challenge, client_id="nope")
    assert unknown.status_code == 400
    assert unknown.headers["Content-Type"].startswith("text/plain")
    bad_redirect = _authorize(fake, challenge, redirect_uri="https://evil.example.com/cb")
    assert bad_redirect.status_code == 400
    fake.register_client("strict", "secret", redirect_uris=["http://127.0.0.1:9/cb"])
    assert _authorize(fake, challenge, client_id="strict").status_code == 400
    fake.oauth_deny = True
    params = _redirect_params(_authorize(fake, challenge, state="st"))
    assert params == {"error": "access_denied", "state": "st"}


# --------------------------------------------------------------------------- rate limit
def test_rate_limit_429_and_retry_after(fake: FakeAsana) -> None:
    fake.rate_limit_per_minute = 3
    statuses = [_get(fake, "/workspaces").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = _get(fake, "/workspaces")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert _error_message(limited).startswith("You've made too many requests and hit a rate limit")
    # Budgets are per token.
    fake.pats.add("other-pat")
    assert _get(fake, "/workspaces", token="other-pat").status_code == 200
    # Rejected requests count too: after 30 s the window is still full.
    fake.advance_clock(30)
    assert _get(fake, "/workspaces").status_code == 429
    fake.advance_clock(31)  # the four from t0 expired; only the one from t0+30 remains
    assert _get(fake, "/workspaces").status_code == 200
    assert fake.responses_429 == 2


# --------------------------------------------------------------------------- faults
def test_fault_injection(fake: FakeAsana, api) -> None:
    fake.inject(r"/workspaces\b", 500, times=2)
    first, second, third = (api("/workspaces") for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [500, 500, 200]
    assert "phrase" in first.json()["errors"][0]

    fake.inject(r"/users", 502, raw_body="<html><body>Bad Gateway</body></html>")
    html = api("/users")
    assert html.status_code == 502
    assert html.headers["Content-Type"].startswith("text/html")
    assert html.text.startswith("<html>")

    fake.inject(r"limit=7", 503, body={"errors": [{"message": "custom"}]}, headers={"X-Test": "1"})
    custom = api("/workspaces", limit=7)
    assert custom.status_code == 503
    assert custom.json() == {"errors": [{"message": "custom"}]}
    assert custom.headers["X-Test"] == "1"

    fake.inject(r"/workspaces", 429, times=None)
    assert [api("/workspaces").status_code for _ in range(2)] == [429, 429]
    assert api("/workspaces").headers["Retry-After"] == "1"
    fake.clear_faults()
    assert api("/workspaces").status_code == 200


def test_fault_truncated_body_and_delay(fake: FakeAsana) -> None:
    fake.inject(
        r"/workspaces",
        200,
        raw_body='{"data": [',
        headers={"Content-Length": "500", "Content-Type": "application/json"},
    )
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _get(fake, "/workspaces")
    fake.inject(r"/workspaces", 200, delay=0.3)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(
            fake.api_url + "/workspaces",
            headers={"Authorization": f"Bearer {fake.pat}"},
            timeout=0.1,
        )


# --------------------------------------------------------------------------- request log
def test_request_log(fake: FakeAsana, api) -> None:
    project = _first_project(fake.dataset)["gid"]
    api("/tasks", project=project, limit=2)
    requests.get(fake.api_url + "/workspaces", headers={"Authorization": "Bearer wrong"}, timeout=5)
    tasks_log = fake.requests_for("/tasks")
    assert len(tasks_log) == 1
    record = tasks_log[0]
    assert isinstance(record, RecordedRequest)
    assert (record.method, record.path, record.status) == ("GET", "/api/1.0/tasks", 200)
    assert record.query == {"project": [project], "limit": ["2"]}
    assert record.headers["Authorization"] == "Bearer <redacted>"
    assert record.token == fake.pat
    assert fake.pat not in repr(record)
    assert abs(record.time - fake.now()) < 5
    assert [r.status for r in fake.requests_for("/api/1.0/workspaces")] == [401]
    fake.reset_log()
    assert fake.requests == []


def test_server_is_silent(fake: FakeAsana, api, capfd: pytest.CaptureFixture[str]) -> None:
    api("/workspaces")
    api("/nope")
    requests.get(fake.base_url + "/elsewhere", timeout=5)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


# --------------------------------------------------------------------------- concurrency
def test_latency_is_applied_in_parallel() -> None:
    with FakeAsana(build_dataset(workspaces=1, tasks_per_project=2), latency=0.2) as fake:
        results: list[int] = []

        def call() -> None:
            results.append(_get(fake, "/workspaces").status_code)

        started = time.perf_counter()
        threads = [threading.Thread(target=call) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        assert results == [200] * 10
        assert 0.2 <= elapsed < 1.0  # ten sleeps overlapped instead of queueing


def test_concurrent_reads_and_writes(mutable_fake: FakeAsana) -> None:
    fake = mutable_fake
    project = _first_project(fake.dataset)["gid"]
    task_gids = list(fake.dataset.tasks)
    failures: list[str] = []

    def reader() -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {fake.pat}"
            for _ in range(10):
                url = (
                    f"{fake.api_url}/tasks?project={project}&limit=5"
                    "&opt_fields=name,modified_at,assignee.name"
                )
                while url:
                    response = session.get(url, timeout=5)
                    if response.status_code != 200:
                        failures.append(response.text)
                        break
                    next_page = response.json()["next_page"]
                    url = next_page and next_page["uri"]

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for i in range(50):
        fake.add_story(task_gids[i % len(task_gids)], f"comment {i}")
    for thread in threads:
        thread.join()
    assert failures == []
    assert fake.server_errors == []


def test_stop_closes_keep_alive_connections() -> None:
    fake = FakeAsana(build_dataset(workspaces=1, tasks_per_project=1)).start()
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {fake.pat}"
        assert session.get(fake.api_url + "/workspaces", timeout=5).status_code == 200
        fake.stop()
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(fake.api_url + "/workspaces", timeout=5)


# --------------------------------------------------------------------------- CLI
def test_cli_serves_until_sigterm() -> None:
    command = [
        sys.executable,
        "-m",
        "tests.fake_asana",
        "--port",
        "0",
        "--workspaces",
        "1",
        "--projects-per-workspace",
        "2",
        "--tasks-per-project",
        "5",
        "--stories-per-task",
        "1",
        "--latency",
        "0",
        "--rate-limit",
        "1500",
    ]
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        info = {}
        for line in proc.stdout:
            key, _, value = line.strip().partition("=")
            info[key] = value
            if key == "counts":
                break
        assert info["api_url"].startswith("http://127.0.0.1:")
        assert "subtasks=" in info["counts"]
        assert info["token_url"].endswith("/-/oauth_token")
        response = requests.get(
            info["api_url"] + "/workspaces",
            headers={"Authorization": f"Bearer {info['pat']}"},
            timeout=5,
        )
        assert response.status_code == 200
        refreshed = requests.post(
            info["token_url"],
            data={
                "grant_type": "refresh_token",
                "client_id": info["client_id"],
                "client_secret": info["client_secret"],
                "refresh_token": info["refresh_token"],
            },
            timeout=5,
        )
        assert refreshed.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stderr is not None
        assert proc.stderr.read() == ""


# --------------------------------------------------------------------------- newer resources
NEWER_TABLES = (
    "subtasks",
    "subtask_stories",
    "sections",
    "tags",
    "teams",
    "team_memberships",
    "project_memberships",
    "custom_fields",
    "custom_field_settings",
    "attachments",
    "portfolios",
    "status_updates",
    "goals",
    "time_tracking_entries",
)


def _org(ds: Dataset) -> str:
    return next(g for g, w in ds.workspaces.items() if w["is_organization"])


def _plain(ds: Dataset) -> str:
    return next(g for g, w in ds.workspaces.items() if not w["is_organization"])


def _with_two(index: dict[str, list[dict]]) -> str:
    """The first key of an index whose list has at least two entries."""
    return next(key for key, listing in index.items() if len(listing) >= 2)


def _level_two(ds: Dataset) -> tuple[dict, dict, dict]:
    """``(task, subtask, sub-subtask)``: a subtask two levels below a task."""
    for subtask in ds.subtasks.values():
        parent = ds.subtasks.get(subtask["parent"]["gid"])
        if parent is not None:
            return ds.tasks[parent["parent"]["gid"]], parent, subtask
    raise AssertionError("no subtask two levels deep")


def _team_memberships_of_me(ds: Dataset) -> list[dict]:
    memberships = [
        m
        for team in ds.teams_by_workspace[_org(ds)]
        for m in ds.team_memberships_by_team[team["gid"]]
        if m["user"]["gid"] == ds.me_gid
    ]
    return sorted(memberships, key=lambda m: m["gid"])


def _busy_team(ds: Dataset) -> str:
    """The team with the most projects."""
    teams = Counter(p["team"]["gid"] for p in ds.projects.values() if p["team"])
    return teams.most_common(1)[0][0]


def _team_projects(ds: Dataset) -> list[dict]:
    team = _busy_team(ds)
    return [p for p in ds.projects.values() if (p["team"] or {}).get("gid") == team]


# name -> ds -> (path, params, resource_type, the records expected, in order)
LIST_ROUTES = {
    "workspace_tags": lambda ds: (
        f"/workspaces/{_org(ds)}/tags",
        {},
        "tag",
        ds.tags_by_workspace[_org(ds)],
    ),
    "tags_by_workspace": lambda ds: (
        "/tags",
        {"workspace": _plain(ds)},
        "tag",
        ds.tags_by_workspace[_plain(ds)],
    ),
    "workspace_teams": lambda ds: (
        f"/workspaces/{_org(ds)}/teams",
        {},
        "team",
        ds.teams_by_workspace[_org(ds)],
    ),
    "organization_teams": lambda ds: (
        f"/organizations/{_org(ds)}/teams",
        {},
        "team",
        ds.teams_by_workspace[_org(ds)],
    ),
    "team_memberships": lambda ds: (
        f"/teams/{next(iter(ds.teams))}/team_memberships",
        {},
        "team_membership",
        ds.team_memberships_by_team[next(iter(ds.teams))],
    ),
    "team_memberships_by_team": lambda ds: (
        "/team_memberships",
        {"team": next(iter(ds.teams))},
        "team_membership",
        ds.team_memberships_by_team[next(iter(ds.teams))],
    ),
    "team_memberships_of_user": lambda ds: (
        "/team_memberships",
        {"user": "me", "workspace": _org(ds)},
        "team_membership",
        _team_memberships_of_me(ds),
    ),
    "team_projects": lambda ds: (
        f"/teams/{_busy_team(ds)}/projects",
        {},
        "project",
        _team_projects(ds),
    ),
    "sections": lambda ds: (
        f"/projects/{_with_two(ds.sections_by_project)}/sections",
        {},
        "section",
        ds.sections_by_project[_with_two(ds.sections_by_project)],
    ),
    "project_memberships": lambda ds: (
        f"/projects/{_with_two(ds.project_memberships_by_project)}/project_memberships",
        {},
        "project_membership",
        ds.project_memberships_by_project[_with_two(ds.project_memberships_by_project)],
    ),
    "custom_field_settings": lambda ds: (
        f"/projects/{_with_two(ds.custom_field_settings_by_project)}/custom_field_settings",
        {},
        "custom_field_setting",
        ds.custom_field_settings_by_project[_with_two(ds.custom_field_settings_by_project)],
    ),
    "custom_fields": lambda ds: (
        f"/workspaces/{_plain(ds)}/custom_fields",
        {},
        "custom_field",
        ds.custom_fields_by_workspace[_plain(ds)],
    ),
    "attachments": lambda ds: (
        "/attachments",
        {"parent": _with_two(ds.attachments_by_parent)},
        "attachment",
        ds.attachments_by_parent[_with_two(ds.attachments_by_parent)],
    ),
    "portfolios": lambda ds: (
        "/portfolios",
        {"workspace": _org(ds), "owner": "me"},
        "portfolio",
        ds.portfolios_by_workspace[_org(ds)],
    ),
    "portfolios_by_owner_gid": lambda ds: (
        "/portfolios",
        {"workspace": _plain(ds), "owner": ds.me_gid},
        "portfolio",
        ds.portfolios_by_workspace[_plain(ds)],
    ),
    "portfolio_items": lambda ds: (
        f"/portfolios/{_with_two(ds.portfolio_items)}/items",
        {},
        "project",
        ds.portfolio_items[_with_two(ds.portfolio_items)],
    ),
    "status_updates": lambda ds: (
        "/status_updates",
        {"parent": _with_two(ds.status_updates_by_parent)},
        "status_update",
        ds.status_updates_by_parent[_with_two(ds.status_updates_by_parent)],
    ),
    "goals": lambda ds: (
        "/goals",
        {"workspace": _org(ds)},
        "goal",
        ds.goals_by_workspace[_org(ds)],
    ),
    "time_tracking_entries": lambda ds: (
        f"/tasks/{_with_two(ds.time_tracking_entries_by_task)}/time_tracking_entries",
        {},
        "time_tracking_entry",
        ds.time_tracking_entries_by_task[_with_two(ds.time_tracking_entries_by_task)],
    ),
    "subtasks": lambda ds: (
        f"/tasks/{_with_two(ds.subtasks_by_parent)}/subtasks",
        {},
        "task",
        ds.subtasks_by_parent[_with_two(ds.subtasks_by_parent)],
    ),
}


@pytest.mark.parametrize("route", list(LIST_ROUTES))
def test_newer_list_routes(fake: FakeAsana, api, route: str) -> None:
    path, params, resource_type, expected = LIST_ROUTES[route](fake.dataset)
    assert len(expected) >= 2  # so that limit=1 really pages
    gids = [r["gid"] for r in expected]
    body = api(path, **params).json()
    assert set(body) == {"data"}  # no next_page without limit
    assert [r["gid"] for r in body["data"]] == gids
    stored = {r["gid"]: r for r in expected}
    for record in body["data"]:
        obj = stored[record["gid"]]
        assert record == {k: obj[k] for k in COMPACT_FIELDS[resource_type] if k in obj}
    records, pages = _walk(api, path, limit=1, **params)
    assert [r["gid"] for r in records] == gids
    assert pages == len(gids)


SINGLE_ROUTES = [
    ("sections", "section"),
    ("tags", "tag"),
    ("teams", "team"),
    ("team_memberships", "team_membership"),
    ("project_memberships", "project_membership"),
    ("custom_fields", "custom_field"),
    ("attachments", "attachment"),
    ("portfolios", "portfolio"),
    ("status_updates", "status_update"),
    ("goals", "goal"),
    ("time_tracking_entries", "time_tracking_entry"),
    ("tasks", "task"),
    ("stories", "story"),
]


@pytest.mark.parametrize(("head", "resource_type"), SINGLE_ROUTES)
def test_newer_single_reads(fake: FakeAsana, api, head: str, resource_type: str) -> None:
    ds = fake.dataset
    table = {"tasks": ds.subtasks, "stories": ds.subtask_stories}.get(head)
    obj = next(iter((table if table is not None else getattr(ds, head)).values()))
    data = api(f"/{head}/{obj['gid']}").json()["data"]
    hidden = OPT_IN_FIELDS[resource_type]
    assert data == {k: v for k, v in obj.items() if k not in hidden}
    if hidden:
        named = api(f"/{head}/{obj['gid']}", opt_fields=",".join(sorted(hidden))).json()["data"]
        assert set(named) == {"gid", *(hidden & set(obj))}


def test_newer_routes_opt_fields(fake: FakeAsana, api) -> None:
    ds = fake.dataset
    project = _with_two(ds.sections_by_project)
    sections = api(
        f"/projects/{project}/sections", opt_fields="name,created_at,project.name"
    ).json()["data"]
    assert sections == [
        {
            "gid": s["gid"],
            "name": s["name"],
            "created_at": s["created_at"],
            "project": {"gid": project, "name": ds.projects[project]["name"]},
        }
        for s in ds.sections_by_project[project]
    ]
    # Portfolio items are projects: the tap-only portfolio_gid never comes back.
    portfolio = _with_two(ds.portfolio_items)
    items = api(
        f"/portfolios/{portfolio}/items", opt_fields="name,resource_type,portfolio_gid"
    ).json()["data"]
    assert items == [
        {"gid": p["gid"], "name": p["name"], "resource_type": "project"}
        for p in ds.portfolio_items[portfolio]
    ]
    task = _with_two(ds.attachments_by_parent)
    attachments = api(
        "/attachments", parent=task, opt_fields="name,host,download_url,parent.name"
    ).json()["data"]
    assert attachments == [
        {
            "gid": a["gid"],
            "name": a["name"],
            "host": a["host"],
            "download_url": a["download_url"],
            "parent": {"gid": task, "name": ds.tasks[task]["name"]},
        }
        for a in ds.attachments_by_parent[task]
    ]
    # Opt-in fields come back when named; nested paths resolve through the referenced
    # object (a setting's custom_field carries no email of its creator).
    fields = api(
        f"/workspaces/{_org(ds)}/custom_fields", opt_fields="description,enum_options.name"
    ).json()["data"]
    assert [f["description"] for f in fields] == [
        f["description"] for f in ds.custom_fields_by_workspace[_org(ds)]
    ]
    settings = api(
        f"/projects/{project}/custom_field_settings",
        opt_fields="is_important,custom_field.name,project.name,parent.permalink_url",
    ).json()["data"]
    definitions = ds.custom_fields_by_workspace[ds.projects[project]["workspace"]["gid"]]
    assert [s["custom_field"]["name"] for s in settings] == [d["name"] for d in definitions]
    assert [s["is_important"] for s in settings] == [True] + [False] * (len(settings) - 1)
    assert all(
        s["parent"]["permalink_url"] == ds.projects[project]["permalink_url"] for s in settings
    )
    goals = api("/goals", workspace=_org(ds), opt_fields="owner.email,metric.unit").json()["data"]
    assert [g["owner"] and g["owner"]["email"] for g in goals] == [
        g["owner"] and ds.users[g["owner"]["gid"]]["email"] for g in ds.goals_by_workspace[_org(ds)]
    ]
    assert all(g["metric"] is None or set(g["metric"]) == {"gid", "unit"} for g in goals)
    # Fields an endpoint does not document are silently left out, as Asana does.
    memberships = api(
        f"/projects/{project}/project_memberships",
        opt_fields="access_level,member.name,user,write_access,project",
    ).json()["data"]
    assert memberships
    assert all(set(m) == {"gid", "access_level", "member"} for m in memberships)
    entries = api(
        f"/tasks/{_with_two(ds.time_tracking_entries_by_task)}/time_tracking_entries",
        opt_fields="duration_minutes,task,approval_status,description",
    ).json()["data"]
    assert entries
    assert all(set(e) == {"gid", "duration_minutes"} for e in entries)


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/workspaces/{plain}/teams", {}, 400, "workspace: Not an organization"),
        ("/organizations/{plain}/teams", {}, 400, "workspace: Not an organization"),
        ("/attachments", {}, 400, "parent: Missing input"),
        ("/attachments", {"parent": "abc"}, 400, "parent: Not a recognized ID: abc"),
        (
            "/attachments",
            {"parent": "1234567890123456"},
            404,
            "parent: Unknown object: 1234567890123456",
        ),
        ("/status_updates", {}, 400, "parent: Missing input"),
        ("/status_updates", {"parent": "{org}"}, 404, "parent: Unknown object: {org}"),
        (
            "/status_updates",
            {"parent": "{project}", "created_since": "later"},
            400,
            "created_since: Not a valid date-time",
        ),
        ("/portfolios", {"owner": "me"}, 400, "workspace: Missing input"),
        ("/portfolios", {"workspace": "{org}"}, 400, "owner: Missing input"),
        ("/tags", {"limit": "5"}, 400, "Need to specify a workspace to paginate!"),
        ("/team_memberships", {}, 400, "Must specify either team, or user and workspace"),
        ("/team_memberships", {"user": "me"}, 400, "workspace: Missing input"),
        ("/goals", {}, 400, "Must specify one of workspace, team, portfolio, project or task"),
        (
            "/goals",
            {"is_workspace_level": "true"},
            400,
            "is_workspace_level: Must be used with workspace",
        ),
        (
            "/tasks/1234567890123456/subtasks",
            {},
            404,
            "task: Unknown object: 1234567890123456",
        ),
        (
            "/portfolios/1234567890123456/items",
            {},
            404,
            "portfolio: Unknown object: 1234567890123456",
        ),
        ("/tags/1234567890123456", {}, 404, "tag: Unknown object: 1234567890123456"),
        ("/sections/abc", {}, 400, "section: Not a recognized ID: abc"),
        (
            "/workspaces/{org}/tasks/search",
            {"is_subtask": "maybe"},
            400,
            "is_subtask: Not a boolean: maybe",
        ),
        (
            "/workspaces/{org}/tasks/search",
            {"sort_by": "size"},
            400,
            "sort_by: Not a valid value: size",
        ),
        (
            "/workspaces/{org}/tasks/search",
            {"limit": "101"},
            400,
            "limit: Must be between 1 and 100",
        ),
        (
            "/workspaces/{org}/tasks/search",
            {"text": "x"},
            400,
            "text: Not supported by this fake",
        ),
        (
            "/workspaces/{org}/tasks/search",
            {"modified_at.after": "yesterday"},
            400,
            "modified_at.after: Not a valid date-time",
        ),
    ],
)
def test_newer_routes_errors(
    fake: FakeAsana, api, path: str, params: dict, status: int, message: str
) -> None:
    ds = fake.dataset
    names = {"org": _org(ds), "plain": _plain(ds), "project": next(iter(ds.projects))}
    response = api(path.format(**names), **{k: v.format(**names) for k, v in params.items()})
    assert response.status_code == status
    assert _error_message(response) == message.format(**names)


def test_premium_features_answer_402(fake: FakeAsana, api) -> None:
    ds = fake.dataset
    org = _org(ds)
    task = next(
        g for g in ds.time_tracking_entries_by_task if ds.tasks[g]["workspace"]["gid"] == org
    )
    entry = ds.time_tracking_entries_by_task[task][0]["gid"]
    portfolio = ds.portfolios_by_workspace[org][0]["gid"]
    goal = ds.goals_by_workspace[org][0]["gid"]
    calls = [
        (f"/workspaces/{org}/tasks/search", {}, "Search is only available to premium users."),
        ("/portfolios", {"workspace": org, "owner": "me"}, "Portfolios are only available"),
        (f"/portfolios/{portfolio}", {}, "Portfolios are only available"),
        (f"/portfolios/{portfolio}/items", {}, "Portfolios are only available"),
        ("/status_updates", {"parent": portfolio}, "Portfolios are only available"),
        ("/goals", {"workspace": org}, "Goals are only available"),
        ("/goals", {"team": next(iter(ds.teams))}, "Goals are only available"),
        (f"/goals/{goal}", {}, "Goals are only available"),
        (f"/tasks/{task}/time_tracking_entries", {}, "Time tracking is only available"),
        (f"/time_tracking_entries/{entry}", {}, "Time tracking is only available"),
    ]
    for path, params, _ in calls:
        assert api(path, **params).status_code == 200, path
    fake.premium_workspaces.discard(org)
    for path, params, message in calls:
        response = api(path, **params)
        assert response.status_code == 402, path
        assert _error_message(response).startswith(message)
        assert "premium" in _error_message(response)
    # Free features and the other (still premium) workspace are unaffected.
    assert api(f"/workspaces/{org}/tags").status_code == 200
    assert api(f"/tasks/{task}").status_code == 200
    assert api("/goals", workspace=_plain(ds)).status_code == 200
    fake.premium_workspaces.add(org)
    assert api(f"/workspaces/{org}/tasks/search").status_code == 200


def _in_workspace(ds: Dataset, workspace: str) -> list[dict]:
    return [
        t for t in [*ds.tasks.values(), *ds.subtasks.values()] if t["workspace"]["gid"] == workspace
    ]


def test_search_semantics(fake: FakeAsana, api) -> None:
    ds = fake.dataset
    org = _org(ds)
    path = f"/workspaces/{org}/tasks/search"
    everything = _in_workspace(ds, org)
    assert len(everything) < 100
    by_modified = sorted(everything, key=lambda t: (t["modified_at"], t["gid"]))

    body = api(path).json()
    assert set(body) == {"data"}  # never a next_page
    # Default: newest modification first, compact records.
    assert [r["gid"] for r in body["data"]] == [t["gid"] for t in reversed(by_modified)]
    assert all(set(r) == set(COMPACT_FIELDS["task"]) for r in body["data"])

    def search(**params) -> list[dict]:
        response = api(path, **params)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    subtasks = search(is_subtask="true", opt_fields="parent.name")
    assert {r["gid"] for r in subtasks} == {t["gid"] for t in everything if t["parent"]}
    assert {r["gid"] for r in subtasks} & set(ds.subtasks) == {r["gid"] for r in subtasks}
    assert all(r["parent"]["name"] == ds.get_task(r["parent"]["gid"])["name"] for r in subtasks)
    top = search(is_subtask="false")
    assert {r["gid"] for r in top} == {t["gid"] for t in everything if t["parent"] is None}

    # modified_at.after is exclusive, to the microsecond.
    pivot = by_modified[len(by_modified) // 2]["modified_at"]
    later = {t["gid"] for t in everything if t["modified_at"] > pivot}

    def after(value: str) -> set[str]:
        return {r["gid"] for r in search(**{"modified_at.after": value})}

    assert after(pivot) == later
    assert after(pivot.replace("Z", "999")) == later  # ...ss.mmm999, naive = UTC
    at_pivot = {t["gid"] for t in everything if t["modified_at"] == pivot}
    assert after(iso_ms(parse_iso_ms(pivot) - 1)) == later | at_pivot
    before = {r["gid"] for r in search(**{"modified_at.before": pivot})}
    assert before == {t["gid"] for t in everything if t["modified_at"] < pivot}

    ascending = search(
        sort_by="modified_at", sort_ascending="true", opt_fields="modified_at", limit=5
    )
    assert ascending == [
        {"gid": t["gid"], "modified_at": t["modified_at"]} for t in by_modified[:5]
    ]
    created = search(sort_by="created_at", sort_ascending="true", opt_fields="created_at")
    assert [r["created_at"] for r in created] == sorted(t["created_at"] for t in everything)

    done = search(completed="true")
    assert {r["gid"] for r in done} == {t["gid"] for t in everything if t["completed"]}
    project = ds.projects_by_workspace[org][0]["gid"]
    in_project = search(**{"projects.any": project})
    assert {r["gid"] for r in in_project} == {
        t["gid"] for t in everything if project in [p["gid"] for p in t["projects"]]
    }
    # The other workspace's tasks never show up.
    other = {r["gid"] for r in api(f"/workspaces/{_plain(ds)}/tasks/search").json()["data"]}
    assert other == {t["gid"] for t in _in_workspace(ds, _plain(ds))}


def test_search_returns_at_most_100_and_pages_by_modified_at() -> None:
    dataset = build_dataset(
        workspaces=1,
        users_per_workspace=2,
        projects_per_workspace=2,
        tasks_per_project=60,
        stories_per_task=0,
        attachments_every=0,
        time_entries_every=0,
    )
    with FakeAsana(dataset) as fake:
        path = f"/workspaces/{next(iter(dataset.workspaces))}/tasks/search"
        everything = [*dataset.tasks.values(), *dataset.subtasks.values()]
        assert len(everything) > 100
        assert len({t["modified_at"] for t in everything}) == len(everything)
        first = _get(fake, path).json()
        assert set(first) == {"data"}
        assert len(first["data"]) == 100
        # Asana's recipe: sort ascending and move modified_at.after past the last hit.
        seen: list[dict] = []
        cursor = "2000-01-01T00:00:00.000Z"
        while True:
            page = _get(
                fake,
                path,
                sort_by="modified_at",
                sort_ascending="true",
                opt_fields="modified_at",
                **{"modified_at.after": cursor},
            ).json()["data"]
            if not page:
                break
            seen.extend(page)
            cursor = page[-1]["modified_at"]
        expected = sorted(everything, key=lambda t: t["modified_at"])
        assert [r["gid"] for r in seen] == [t["gid"] for t in expected]


def test_subtasks_two_levels_deep(fake: FakeAsana, api) -> None:
    ds = fake.dataset
    task, child, grandchild = _level_two(ds)
    listed = api(
        f"/tasks/{task['gid']}/subtasks", opt_fields="name,num_subtasks,parent.name"
    ).json()["data"]
    assert [r["gid"] for r in listed] == [s["gid"] for s in ds.subtasks_by_parent[task["gid"]]]
    assert child["gid"] in [r["gid"] for r in listed]
    assert all(r["parent"] == {"gid": task["gid"], "name": task["name"]} for r in listed)
    assert all(r["num_subtasks"] == len(ds.subtasks_by_parent[r["gid"]]) for r in listed)
    second = api(f"/tasks/{child['gid']}/subtasks").json()["data"]
    assert grandchild["gid"] in [r["gid"] for r in second]
    assert api(f"/tasks/{grandchild['gid']}/subtasks").json()["data"] == []

    full = api(
        f"/tasks/{grandchild['gid']}",
        opt_fields="parent.name,projects,memberships,workspace,num_subtasks",
    ).json()["data"]
    assert full == {
        "gid": grandchild["gid"],
        "parent": {"gid": child["gid"], "name": child["name"]},
        "projects": [],
        "memberships": [],
        "workspace": {"gid": task["workspace"]["gid"], "resource_type": "workspace"},
        "num_subtasks": 0,
    }
    stories = api(f"/tasks/{grandchild['gid']}/stories").json()["data"]
    assert 1 <= len(stories) <= 2
    assert all(s["gid"] in ds.subtask_stories and s["gid"] not in ds.stories for s in stories)
    story = api(f"/stories/{stories[0]['gid']}").json()["data"]
    assert story["target"]["gid"] == grandchild["gid"]
    assert story["resource_subtype"] == "added_to_task"
    assert story["task"]["gid"] == child["gid"]

    # num_subtasks (an opt-in field) counts direct subtasks, everywhere.
    for gid, t in [*ds.tasks.items(), *ds.subtasks.items()]:
        assert t["num_subtasks"] == len(ds.subtasks_by_parent.get(gid, [])), gid
    project = task["projects"][0]["gid"]
    for record in api("/tasks", project=project, opt_fields="num_subtasks").json()["data"]:
        assert record["num_subtasks"] == len(ds.subtasks_by_parent[record["gid"]])


def test_newer_resources_are_relational() -> None:
    a, b = build_dataset(seed=3), build_dataset(seed=3)
    for name in NEWER_TABLES:
        assert json.dumps(getattr(a, name)) == json.dumps(getattr(b, name)), name
    all_gids = [
        g
        for name in ("workspaces", "users", "projects", "tasks", "stories", *NEWER_TABLES)
        for g in getattr(a, name)
    ]
    assert len(all_gids) == len(set(all_gids))
    assert all(re.fullmatch(r"\d{16}", g) for g in all_gids)
    assert not set(a.subtasks) & set(a.tasks)
    depths = Counter()
    for subtask in a.subtasks.values():
        parent = a.get_task(subtask["parent"]["gid"])
        assert subtask["parent"]["name"] == parent["name"]
        assert subtask["workspace"] == parent["workspace"]
        assert subtask["projects"] == subtask["memberships"] == []
        assert parent["created_at"] <= subtask["created_at"] <= subtask["modified_at"]
        depths[1 if parent["gid"] in a.tasks else 2] += 1
        for story in a.stories_by_task[subtask["gid"]]:
            assert story["gid"] in a.subtask_stories
            assert story["target"]["gid"] == subtask["gid"]
    assert depths[1] > depths[2] > 0
    assert len(depths) == 2  # nothing deeper than two levels
    for project_gid, sections in a.sections_by_project.items():
        assert len(sections) in (2, 3)
        assert all(s["project"]["gid"] == project_gid for s in sections)
    for task in a.tasks.values():
        for ref in task["tags"]:
            assert a.tags[ref["gid"]]["name"] == ref["name"]
            assert a.tags[ref["gid"]]["workspace"]["gid"] == task["workspace"]["gid"]
        settings = a.custom_field_settings_by_project.get(task["projects"][0]["gid"], [])
        definitions = [s["custom_field"]["gid"] for s in settings]
        assert [cf["gid"] for cf in task["custom_fields"]] == definitions
    for workspace in a.workspaces.values():
        teams = a.teams_by_workspace[workspace["gid"]]
        assert bool(teams) == workspace["is_organization"]
        users = {u["gid"] for u in a.users_by_workspace[workspace["gid"]]}
        for team in teams:
            assert team["organization"]["gid"] == workspace["gid"]
            assert {m["user"]["gid"] for m in a.team_memberships_by_team[team["gid"]]} <= users
        for portfolio in a.portfolios_by_workspace[workspace["gid"]]:
            assert portfolio["owner"]["gid"] == a.me_gid
            items = a.portfolio_items[portfolio["gid"]]
            assert 1 <= len(items) <= 2
            assert all(p["workspace"]["gid"] == workspace["gid"] for p in items)
        assert len(a.goals_by_workspace[workspace["gid"]]) == 2
    for project_gid, settings in a.custom_field_settings_by_project.items():
        ws = a.projects[project_gid]["workspace"]["gid"]
        assert [s["custom_field"]["gid"] for s in settings] == [
            f["gid"] for f in a.custom_fields_by_workspace[ws]
        ]
    for project_gid, updates in a.status_updates_by_parent.items():
        assert len(updates) <= 2
        latest = updates[-1]["gid"] if updates else None
        assert (a.projects[project_gid]["current_status_update"] or {}).get("gid") == latest
        for update in updates:
            assert update["parent"]["gid"] == project_gid
            assert update["created_at"] <= update["modified_at"]
    for project_gid, memberships in a.project_memberships_by_project.items():
        members = [m["gid"] for m in a.projects[project_gid]["members"]]
        assert [m["user"]["gid"] for m in memberships] == members
        assert all(m["parent"]["gid"] == project_gid for m in memberships)
    for task_gid, attachments in a.attachments_by_parent.items():
        assert 1 <= len(attachments) <= 2
        assert all(x["parent"]["gid"] == task_gid for x in attachments)
    for task_gid, entries in a.time_tracking_entries_by_task.items():
        assert 1 <= len(entries) <= 2
        assert all(e["task"]["gid"] == task_gid and e["duration_minutes"] > 0 for e in entries)


def test_subtask_changes_leave_the_parent_alone(mutable_fake: FakeAsana) -> None:
    fake = mutable_fake
    fake.cache_responses = True  # the helpers must invalidate cached renderings
    ds = fake.dataset
    task, child, grandchild = _level_two(ds)
    task_modified, child_subtasks = task["modified_at"], child["num_subtasks"]
    cutoff = iso_ms(int(fake.now() * 1000) - 1)

    touched = fake.touch_task(child["gid"])
    assert touched is child
    assert child["modified_at"] > cutoff
    story = fake.add_story(grandchild["gid"], "On a subtask")
    assert story["gid"] in ds.subtask_stories
    assert story["gid"] not in ds.stories
    assert grandchild["modified_at"] == story["created_at"]
    stories = _get(fake, f"/tasks/{grandchild['gid']}/stories").json()["data"]
    assert stories[-1]["gid"] == story["gid"]
    assert task["modified_at"] == task_modified
    assert (
        _get(fake, f"/tasks/{task['gid']}", opt_fields="modified_at").json()["data"]["modified_at"]
        == task_modified
    )
    # Incremental discovery through search sees the subtasks, not the parent.
    search = f"/workspaces/{task['workspace']['gid']}/tasks/search"
    changed = _get(fake, search, **{"modified_at.after": cutoff}).json()["data"]
    assert {r["gid"] for r in changed} == {child["gid"], grandchild["gid"]}
    project = task["projects"][0]["gid"]
    assert _get(fake, "/tasks", project=project, modified_since=cutoff).json()["data"] == []

    new = fake.add_subtask(child["gid"], name="Fresh subtask")
    assert child["num_subtasks"] == child_subtasks + 1
    assert new["parent"]["gid"] == child["gid"]
    listed = _get(fake, f"/tasks/{child['gid']}/subtasks", opt_fields="name").json()["data"]
    assert listed[-1] == {"gid": new["gid"], "name": "Fresh subtask"}
    assert task["modified_at"] == task_modified

    before = task["num_subtasks"]
    fake.delete_task(child["gid"])
    for gone in (child, grandchild, new):
        assert _get(fake, f"/tasks/{gone['gid']}").status_code == 404
    assert _get(fake, f"/stories/{story['gid']}").status_code == 404
    assert task["num_subtasks"] == before - 1
    assert task["modified_at"] == task_modified
