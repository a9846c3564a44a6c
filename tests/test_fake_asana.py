"""The fake Asana's contract: what the tap's tests rely on it to do as Asana does.

Documented shapes and nulls, pagination with opaque offsets, strictness about what a
client sends, Asana's errors, OAuth, rate limits, and the test hooks (faults, request
log, mutations, CLI). Scopes are in test_fake_asana_scopes.py.
"""

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
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests import spec_scopes
from tests.conftest import token_grant
from tests.fake_asana import Dataset, FakeAsana, build_dataset, spec
from tests.fake_asana.api import ROUTES, SEARCH_TEMPLATE
from tests.fake_asana.dataset import COMPACT_FIELDS, OPT_IN_FIELDS, iso_ms, parse_iso_ms

REPO = Path(__file__).resolve().parents[1]
CLIENT_ID = "test-client"
CLIENT_SECRET = "test-client-secret-value"
REDIRECT_URI = "http://localhost:8765/callback"
BAD_OFFSET = "offset: Your pagination token is invalid."
UNKNOWN = "1234567890123456"
LIST_ROUTES = [r for r in ROUTES if r.kind == "list"]


@pytest.fixture(scope="module")
def shared_dataset() -> Dataset:
    """Read-only dataset shared by tests that do not mutate data."""
    return build_dataset()


@pytest.fixture
def fake(shared_dataset: Dataset):
    with FakeAsana(shared_dataset) as server:
        server.register_client(CLIENT_ID, CLIENT_SECRET)
        yield server


@pytest.fixture
def mutable_fake():
    with FakeAsana(build_dataset()) as server:
        yield server


def _get(fake: FakeAsana, path: str, token: str | None = None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {token or fake.pat}"}
    return requests.get(fake.api_url + path, params=params or None, headers=headers, timeout=5)


@pytest.fixture
def api(fake: FakeAsana):
    """GET with the fake's PAT: ``api(path, **params)``."""
    return lambda path, **params: _get(fake, path, **params)


def _error(response: requests.Response) -> str:
    """The message of Asana's error envelope (checked to be exactly that envelope)."""
    (error,) = response.json()["errors"]
    assert error["help"].startswith("For more information on API status codes")
    return error["message"]


def _walk(get, path: str, **params) -> tuple[list[dict], int]:
    """Follow next_page to the end; all records and the number of pages."""
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
        query = {k: v[0] for k, v in parse_qs(urlsplit(next_page["path"]).query).items()}
        assert query["offset"] == next_page["offset"]
        response = get(urlsplit(next_page["path"]).path, **query)


def _org(ds: Dataset) -> str:
    return next(g for g, w in ds.workspaces.items() if w["is_organization"])


def _plain(ds: Dataset) -> str:
    return next(g for g, w in ds.workspaces.items() if not w["is_organization"])


def _with_two(index: dict[str, list[dict]]) -> str:
    return next(key for key, listing in index.items() if len(listing) >= 2)


def _list_examples(ds: Dataset) -> dict[str, tuple[str, dict, list[dict]]]:
    """Per list route: (path, params, the records expected in order), two or more."""
    org, project = _org(ds), _with_two(ds.status_updates_by_parent)
    task = _with_two(ds.attachments_by_parent)
    portfolios = ds.portfolios_by_workspace[org]
    examples = {  # template: (gid in the path, params, records)
        "/workspaces": (None, {}, list(ds.workspaces.values())),
        "/users": (None, {"workspace": org}, ds.users_by_workspace[org]),
        "/projects": (None, {"workspace": org}, ds.projects_by_workspace[org]),
        "/tasks": (None, {"project": project}, ds.tasks_by_project[project]),
        "/attachments": (None, {"parent": task}, ds.attachments_by_parent[task]),
        "/status_updates": (None, {"parent": project}, ds.status_updates_by_parent[project]),
        "/workspaces/{workspace_gid}/teams": (org, {}, ds.teams_by_workspace[org]),
        "/portfolios": (None, {"workspace": org, "owner": "me"}, portfolios),
        "/goals": (None, {"workspace": org}, ds.goals_by_workspace[org]),
    }
    for route in LIST_ROUTES:
        if route.index:
            key = _with_two(getattr(ds, route.index))
            examples[route.template] = (key, {}, getattr(ds, route.index)[key])
    return {
        template: (re.sub(r"\{\w+\}", key or "", template), params, records)
        for template, (key, params, records) in examples.items()
    }


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("route", LIST_ROUTES, ids=lambda r: r.template)
def test_list_routes_are_compact_paginated_and_projected(fake: FakeAsana, api, route) -> None:
    path, params, expected = _list_examples(fake.dataset)[route.template]
    body = api(path, **params).json()
    assert set(body) == {"data"}  # no next_page without limit
    compact = COMPACT_FIELDS[route.resource]
    assert body["data"] == [{k: obj[k] for k in compact if k in obj} for obj in expected]
    records, pages = _walk(api, path, limit=1, **params)
    assert [r["gid"] for r in records] == [obj["gid"] for obj in expected]
    assert pages == len(expected)
    # Every field the endpoint documents: the stored object cut to them.
    documented = spec.documented_fields(route.template)
    data = api(path, opt_fields=",".join(sorted(documented)), **params).json()["data"]
    for record, obj in zip(data, expected, strict=True):
        assert set(record) == {"gid"} | (documented & set(obj))
        scalars = {k for k, v in obj.items() if not isinstance(v, dict | list)}
        assert all(record[k] == obj[k] for k in documented & scalars)


def test_single_reads_are_full_records_without_opt_in_fields(fake: FakeAsana, api) -> None:
    ds = fake.dataset
    for path, obj, resource in [
        ("/tasks/{}", next(iter(ds.tasks.values())), "task"),
        ("/tasks/{}", next(iter(ds.subtasks.values())), "task"),
        ("/projects/{}", next(iter(ds.projects.values())), "project"),
    ]:
        response = api(path.format(obj["gid"]))
        assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
        hidden = OPT_IN_FIELDS[resource]
        assert response.json() == {"data": {k: v for k, v in obj.items() if k not in hidden}}
        named = api(path.format(obj["gid"]), opt_fields=",".join(sorted(hidden))).json()["data"]
        assert set(named) == {"gid"} | (hidden & set(obj))  # opt-in fields, when named


def _objects(ds: Dataset) -> dict[str, list[dict]]:
    """Every object the API serves, by the spec component that documents it."""
    return {
        "WorkspaceResponse": list(ds.workspaces.values()),
        "UserResponse": list(ds.users.values()),
        "ProjectResponse": list(ds.projects.values()),
        "TaskResponse": [*ds.tasks.values(), *ds.subtasks.values()],
        "StoryResponse": [*ds.stories.values(), *ds.subtask_stories.values()],
        "SectionResponse": [s for ss in ds.sections_by_project.values() for s in ss],
        "TagResponse": list(ds.tags.values()),
        "TeamResponse": list(ds.teams.values()),
        "TeamMembershipResponse": list(ds.team_memberships.values()),
        "ProjectMembershipNormalResponse": list(ds.project_memberships.values()),
        "CustomFieldResponse": list(ds.custom_fields.values()),
        "CustomFieldSettingResponse": list(ds.custom_field_settings.values()),
        "AttachmentResponse": list(ds.attachments.values()),
        "PortfolioResponse": list(ds.portfolios.values()),
        "StatusUpdateResponse": list(ds.status_updates.values()),
        "GoalResponse": list(ds.goals.values()),
        "TimeTrackingEntryBase": list(ds.time_tracking_entries.values()),
    }


def _documented_properties(component: str) -> set[str]:
    """Property names of a spec component, following ``$ref`` and ``allOf``."""
    schema = spec_scopes.spec()["components"]["schemas"][component]
    names: set[str] = set()
    for part in [schema, *schema.get("allOf", [])]:
        if "$ref" in part:
            names |= _documented_properties(part["$ref"].rsplit("/", 1)[-1])
        names |= set(part.get("properties", {}))
    return names


@pytest.mark.parametrize("component", list(_objects(Dataset())))
def test_objects_are_full_documented_records(shared_dataset: Dataset, component: str) -> None:
    """Each object has only documented fields, and together they have all of them
    (conditional ones -- a story's subtype fields, an approval task's status -- on some)."""
    documented = _documented_properties(component)
    objects = _objects(shared_dataset)[component]
    for obj in objects:
        assert set(obj) <= documented, sorted(set(obj) - documented)
    # Reference custom fields (Asana's newest field type) are not modelled.
    assert set().union(*objects) == documented - {"reference_value"}


def test_dataset_has_the_nulls_asana_sends(shared_dataset: Dataset) -> None:
    ds = shared_dataset
    tasks, projects = list(ds.tasks.values()), list(ds.projects.values())

    def some(objects, key, value=None) -> bool:
        return any(o.get(key, "absent") == value for o in objects)

    for key in ("assignee", "due_on", "due_at", "start_on", "start_at", "completed_at"):
        assert some(tasks, key), key
    for key in ("tags", "followers", "dependencies", "custom_fields"):
        assert some(tasks, key, []), key
    assert all(t["parent"] is None and t["external"] is None for t in tasks)
    assert some(ds.users.values(), "photo")
    for key in ("owner", "due_on", "start_on", "current_status_update", "project_brief", "icon"):
        assert some(projects, key), key
    assert all(p["team"] is None for p in projects if p["workspace"]["gid"] == _plain(ds))
    assert some([s for s in ds.stories.values() if s["type"] == "system"], "created_by")
    definitions = list(ds.custom_fields.values())
    assert all((d["precision"] is None) is (d["type"] != "number") for d in definitions)
    values = [v for t in tasks for v in t["custom_fields"]]
    numbers = [v["number_value"] for v in values if v["type"] == "number"]
    assert {12.5, None} <= set(numbers)
    assert any(isinstance(n, int) for n in numbers)
    dates = [v["date_value"] for v in values if v["type"] == "date"]
    assert None in dates
    assert any(d and d["date_time"] is None for d in dates)  # a date without a time
    assert some(values, "enum_value")
    assert some(values, "text_value")


def test_dataset_is_deterministic_and_relational() -> None:
    a, b = build_dataset(seed=3), build_dataset(seed=3)
    assert json.dumps(_objects(a)) == json.dumps(_objects(b))
    gids = [o["gid"] for objects in _objects(a).values() for o in objects]
    assert len(gids) == len(set(gids))
    assert all(re.fullmatch(r"\d{16}", g) for g in gids)
    for task in [*a.tasks.values(), *a.subtasks.values()]:
        assert "2024-01-01" <= task["created_at"] <= task["modified_at"] < "2026"
        assert task["completed"] == (task["completed_at"] is not None)
        assert [m["project"]["gid"] for m in task["memberships"]] == [
            p["gid"] for p in task["projects"]
        ]
        assert task["num_subtasks"] == len(a.subtasks_by_parent[task["gid"]])
        for story in a.stories_by_task[task["gid"]]:
            assert story["target"]["gid"] == task["gid"]
            assert task["created_at"] <= story["created_at"] <= task["modified_at"]
    depths = {1 if s["parent"]["gid"] in a.tasks else 2 for s in a.subtasks.values()}
    assert depths == {1, 2}
    assert sum(len(t["projects"]) == 2 for t in a.tasks.values()) == 12  # multi-homed
    for task_gid, entries in a.time_tracking_entries_by_task.items():
        minutes = sum(e["duration_minutes"] for e in entries)
        assert a.tasks[task_gid]["actual_time_minutes"] == minutes


# --------------------------------------------------------------------------- strictness
SEARCH = "/workspaces/{w}/tasks/search"
NOT_IMPLEMENTED = "Not implemented by this fake"


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/tasks", {"project": "{p}", "colour": "red"}, "colour: Not a parameter of GET /tasks"),
        ("/tasks", {"section": "{p}"}, "section: " + NOT_IMPLEMENTED),
        ("/tasks", {"project": "{p}", "opt_pretty": "1"}, "opt_pretty: " + NOT_IMPLEMENTED),
        ("/tasks/{t}", {"limit": "5"}, "limit: Not a parameter of GET /tasks/{task_gid}"),
        (
            "/tasks",
            {"project": "{p}", "opt_fields": "name,assignee.name,is_template"},
            "opt_fields: Not a field of GET /tasks: is_template",
        ),
        (SEARCH, {"offset": "x"}, "offset: Not a parameter of GET " + SEARCH_TEMPLATE),
        (SEARCH, {"text": "x"}, "text: Not implemented by this fake"),
        (SEARCH, {"sort_by": "likes"}, "sort_by: Not implemented by this fake: likes"),
        (SEARCH, {"sort_by": "size"}, "sort_by: Not a valid value: size"),
    ],
)  # fmt: skip
def test_what_the_fake_does_not_know_is_a_400(fake: FakeAsana, api, path, params, message) -> None:
    """Never a silently unfiltered or silently thinner answer."""
    ds = fake.dataset
    names = {"p": next(iter(ds.projects)), "t": next(iter(ds.tasks)), "w": _org(ds)}
    response = api(path.format(**names), **{k: v.format(**names) for k, v in params.items()})
    assert response.status_code == 400
    assert _error(response) == message


def test_implemented_parameters_are_documented() -> None:
    for route in ROUTES:
        implemented = route.params | ({"limit", "offset"} if route.kind == "list" else set())
        # Search documents ``limit`` in its description, not in its parameter list.
        extra = {"limit"} if route.kind == "search" else set()
        assert implemented - spec.documented_params(route.template) <= extra, route.template


def test_nested_paths_resolve_through_the_referenced_object(fake: FakeAsana, api) -> None:
    """Asana's docs show ``this.assignee.email``: nested paths need not be in the enum."""
    task = next(t for t in fake.dataset.tasks.values() if t["assignee"] and t["likes"])
    fields = "assignee,assignee.email,projects.no_such_field,likes.user.name,memberships.section"
    data = api(f"/tasks/{task['gid']}", opt_fields=fields + ",external").json()["data"]
    user = fake.dataset.users[task["assignee"]["gid"]]
    assert data == {
        "gid": task["gid"],
        # Named bare and with a sub-field: the minimal reference plus the field.
        "assignee": {"gid": user["gid"], "resource_type": "user", "email": user["email"]},
        "projects": [{"gid": p["gid"]} for p in task["projects"]],
        "likes": [
            {"gid": like["gid"], "user": {"gid": like["user"]["gid"], "name": like["user"]["name"]}}
            for like in task["likes"]
        ],
        # A bare reference comes back minimal, a plain object (or null) whole.
        "memberships": [
            {"section": {"gid": m["section"]["gid"], "resource_type": "section"}}
            for m in task["memberships"]
        ],
        "external": None,
    }


# --------------------------------------------------------------------------- pagination
@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "", "1.5"])
def test_bad_limits(fake: FakeAsana, api, limit: str) -> None:
    response = api("/tasks", project=next(iter(fake.dataset.projects)), limit=limit)
    assert response.status_code == 400
    assert _error(response) == "limit: Must be between 1 and 100"
    assert api("/workspaces", limit=2).json()["next_page"] is None  # an exact last page


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
    response = api("/tasks", project=next(iter(fake.dataset.projects)), limit=2, offset=offset)
    assert response.status_code == 400
    assert _error(response) == BAD_OFFSET


def test_offsets_are_bound_to_their_query_and_expire(fake: FakeAsana, api) -> None:
    first, second = list(fake.dataset.projects)[:2]
    token = api("/tasks", project=first, limit=2).json()["next_page"]["offset"]
    # Other limit/opt_fields: fine (they do not change the result set).
    ok = api("/tasks", project=first, limit=3, offset=token, opt_fields="name")
    assert ok.json()["data"][0]["gid"] == fake.dataset.tasks_by_project[first][2]["gid"]
    for params in ({"project": second}, {"project": first, "modified_since": "2020-01-01"}):
        assert _error(api("/tasks", limit=2, offset=token, **params)) == BAD_OFFSET
    payload, signature = token.split(".")
    tampered = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    assert api("/tasks", project=first, limit=2, offset=tampered).status_code == 400
    fake.offset_ttl = 30
    assert api("/tasks", project=first, limit=2, offset=token).status_code == 200
    fake.advance_clock(31)
    assert _error(api("/tasks", project=first, limit=2, offset=token)) == BAD_OFFSET


def test_unpaginated_result_too_large() -> None:
    dataset = build_dataset(
        workspaces=1, users_per_workspace=1, projects_per_workspace=1, tasks_per_project=1001
    )
    with FakeAsana(dataset) as fake:
        project = next(iter(dataset.projects))
        response = _get(fake, "/tasks", project=project)
        assert response.status_code == 400
        assert _error(response).startswith("The result is too large. You should use pagination")
        assert len(_get(fake, "/tasks", project=project, limit=100).json()["data"]) == 100


def test_pagination_survives_deletes_and_inserts(mutable_fake: FakeAsana) -> None:
    fake = mutable_fake
    project = next(iter(fake.dataset.projects))
    expected = [t["gid"] for t in fake.dataset.tasks_by_project[project]]
    page = _get(fake, "/tasks", project=project, limit=3).json()
    fake.delete_task(page["data"][-1]["gid"])  # the token's anchor disappears
    fake.delete_task(expected[3])
    new = fake.add_task(project)
    offset = page["next_page"]["offset"]
    get = lambda path, **query: _get(fake, path, **query)  # noqa: E731
    rest, _ = _walk(get, "/tasks", project=project, limit=3, offset=offset)
    assert [t["gid"] for t in rest] == [*expected[4:], new["gid"]]


# --------------------------------------------------------------------------- filters, errors
def test_task_and_project_filters(fake: FakeAsana, api) -> None:
    ds = fake.dataset
    project = next(iter(ds.projects))
    tasks = ds.tasks_by_project[project]
    pivot = sorted(t["modified_at"] for t in tasks)[len(tasks) // 2]

    def since(value: str) -> set[str]:
        listing = api("/tasks", project=project, modified_since=value).json()["data"]
        return {t["gid"] for t in listing}

    expected = {t["gid"] for t in tasks if t["modified_at"] >= pivot}  # inclusive
    assert since(pivot) == expected
    at_pivot = {t["gid"] for t in tasks if t["modified_at"] == pivot}
    assert since(iso_ms(parse_iso_ms(pivot) + 1)) == expected - at_pivot
    assert since(pivot.replace("Z", "") + "000") == expected  # microseconds, naive = UTC
    projects = ds.projects_by_workspace[_org(ds)]
    archived = {p["gid"] for p in projects if p["archived"]}
    assert archived
    for value, wanted in (("true", archived), ("false", {p["gid"] for p in projects} - archived)):
        listing = api("/projects", workspace=_org(ds), archived=value).json()["data"]
        assert {p["gid"] for p in listing} == wanted


NO_FILTER = "You should specify one of workspace, project, tag, section, user_task_list"
NO_ROUTE = "No matching route for request"
BAD_DATE = "Not a valid date-time"
BAD_SINCE = "modified_since: " + BAD_DATE


@pytest.mark.parametrize(
    ("request_line", "params", "status", "message"),
    [
        ("GET /tasks", {}, 400, NO_FILTER),
        ("GET /tasks", {"project": ""}, 400, "project: Not a Long"),
        ("GET /tasks", {"project": "abc"}, 400, "project: Not a recognized ID: abc"),
        ("GET /tasks", {"project": UNKNOWN}, 404, f"project: Unknown object: {UNKNOWN}"),
        ("GET /tasks", {"project": "{p}", "modified_since": "x"}, 400, BAD_SINCE),
        (f"GET /tasks/{UNKNOWN}/stories", {}, 404, f"task: Unknown object: {UNKNOWN}"),
        ("GET /tasks/abc", {}, 400, "task: Not a recognized ID: abc"),
        ("GET /projects", {"limit": "5"}, 400, "Need to specify a workspace or team to paginate!"),
        ("GET /projects", {"archived": "maybe"}, 400, "archived: Not a boolean: maybe"),
        ("GET /workspaces/{plain}/teams", {}, 400, "workspace: Not an organization"),
        ("GET /attachments", {}, 400, "parent: Missing input"),
        ("GET /attachments", {"parent": UNKNOWN}, 404, f"parent: Unknown object: {UNKNOWN}"),
        ("GET /status_updates", {"parent": "{w}"}, 404, "parent: Unknown object: {w}"),
        ("GET /portfolios", {"workspace": "{w}"}, 400, "owner: Missing input"),
        ("GET /goals", {}, 400, "workspace: Missing input"),
        ("GET " + SEARCH, {"is_subtask": "maybe"}, 400, "is_subtask: Not a boolean: maybe"),
        ("GET " + SEARCH, {"modified_at.after": "x"}, 400, "modified_at.after: " + BAD_DATE),
        ("GET /users/me/teams", {}, 404, NO_ROUTE),
        ("POST /tasks", {}, 404, NO_ROUTE),
        ("DELETE /workspaces", {}, 404, NO_ROUTE),
    ],
)  # fmt: skip
def test_asana_errors(fake: FakeAsana, request_line, params, status, message) -> None:
    ds = fake.dataset
    names = {"p": next(iter(ds.projects)), "w": _org(ds), "plain": _plain(ds)}
    method, path = request_line.format(**names).split(" ")
    response = requests.request(
        method,
        fake.api_url + path,
        params={k: v.format(**names) for k, v in params.items()},
        headers={"Authorization": f"Bearer {fake.pat}"},
        timeout=5,
    )
    assert response.status_code == status
    assert _error(response) == message.format(**names)


def test_paid_features_answer_402_in_free_workspaces(fake: FakeAsana, api) -> None:
    ds = fake.dataset
    org = _org(ds)
    task = next(
        t for t in ds.time_tracking_entries_by_task if ds.tasks[t]["workspace"]["gid"] == org
    )
    calls = [
        (f"/workspaces/{org}/tasks/search", {}, "Search is only available to premium users."),
        ("/portfolios", {"workspace": org, "owner": "me"}, "Portfolios are only available"),
        (f"/portfolios/{ds.portfolios_by_workspace[org][0]['gid']}/items", {}, "Portfolios"),
        ("/goals", {"workspace": org}, "Goals are only available"),
        (f"/tasks/{task}/time_tracking_entries", {}, "Time tracking is only available"),
    ]
    assert all(api(path, **params).status_code == 200 for path, params, _ in calls)
    fake.premium_workspaces.discard(org)
    for path, params, message in calls:
        response = api(path, **params)
        assert response.status_code == 402, path
        assert _error(response).startswith(message)
    assert api(f"/tasks/{task}").status_code == 200  # free features are unaffected
    assert api("/goals", workspace=_plain(ds)).status_code == 200  # and so is the other one


# --------------------------------------------------------------------------- search
def test_search_semantics(fake: FakeAsana, api) -> None:
    ds = fake.dataset
    org = _org(ds)
    everything = [
        t for t in [*ds.tasks.values(), *ds.subtasks.values()] if t["workspace"]["gid"] == org
    ]
    by_modified = sorted(everything, key=lambda t: (t["modified_at"], t["gid"]))

    def search(**params) -> list[dict]:
        body = api(f"/workspaces/{org}/tasks/search", **params).json()
        assert set(body) == {"data"}  # never a next_page
        return body["data"]

    # Default: newest modification first, compact records, this workspace only.
    compact = COMPACT_FIELDS["task"]
    assert search() == [{k: t[k] for k in compact} for t in reversed(by_modified)]
    subtasks = {r["gid"] for r in search(is_subtask="true")}
    assert subtasks == {t["gid"] for t in everything if t["parent"]}
    # Bounds are exclusive, to the microsecond.
    pivot = by_modified[len(by_modified) // 2]["modified_at"]
    later = {t["gid"] for t in everything if t["modified_at"] > pivot}
    at_pivot = {t["gid"] for t in everything if t["modified_at"] == pivot}
    for after, expected in [
        (pivot, later),
        (pivot.replace("Z", "999"), later),
        (iso_ms(parse_iso_ms(pivot) - 1), later | at_pivot),
    ]:
        assert {r["gid"] for r in search(**{"modified_at.after": after})} == expected
    earlier = {t["gid"] for t in everything if t["modified_at"] < pivot}
    assert {r["gid"] for r in search(**{"modified_at.before": pivot})} == earlier
    first = search(sort_by="modified_at", sort_ascending="true", opt_fields="modified_at", limit=5)
    assert first == [{"gid": t["gid"], "modified_at": t["modified_at"]} for t in by_modified[:5]]
    created = search(sort_by="created_at", sort_ascending="true", opt_fields="created_at")
    assert [r["created_at"] for r in created] == sorted(t["created_at"] for t in everything)


def test_search_returns_at_most_100_and_pages_by_modified_at() -> None:
    dataset = build_dataset(workspaces=1, projects_per_workspace=2, tasks_per_project=60)
    with FakeAsana(dataset) as fake:
        path = f"/workspaces/{next(iter(dataset.workspaces))}/tasks/search"
        everything = [*dataset.tasks.values(), *dataset.subtasks.values()]
        assert len(everything) > 100
        assert len({t["modified_at"] for t in everything}) == len(everything)  # no ties
        assert len(_get(fake, path).json()["data"]) == 100
        seen, cursor = [], "2000-01-01T00:00:00.000Z"
        params = {"sort_by": "modified_at", "sort_ascending": "true", "opt_fields": "modified_at"}
        while page := _get(fake, path, **params, **{"modified_at.after": cursor}).json()["data"]:
            seen.extend(page)
            cursor = page[-1]["modified_at"]
        expected = sorted(everything, key=lambda t: t["modified_at"])
        assert [r["gid"] for r in seen] == [t["gid"] for t in expected]


def test_search_answers_the_same_from_its_index_when_responses_are_cached() -> None:
    # Benchmarks cache responses; search then answers from a sorted index instead of
    # sorting the workspace per page. Same answers, and a mutation refreshes it.
    dataset = build_dataset(workspaces=1, projects_per_workspace=3, tasks_per_project=50)
    with FakeAsana(dataset) as fake:
        path = f"/workspaces/{next(iter(dataset.workspaces))}/tasks/search"
        stamps = sorted(t["modified_at"] for t in dataset.tasks.values())
        pivot, later = stamps[len(stamps) // 3], stamps[2 * len(stamps) // 3]
        queries = [
            {},
            {"is_subtask": "true"},
            {"is_subtask": "false", "sort_by": "modified_at", "sort_ascending": "true"},
            {"sort_ascending": "true", "modified_at.after": pivot, "limit": "7"},
            {"modified_at.after": pivot, "modified_at.before": later},
            {"sort_by": "created_at", "sort_ascending": "true", "created_at.after": pivot},
            {"sort_by": "created_at", "modified_at.after": pivot, "limit": "30"},
            {"modified_at.before": later, "limit": "9"},  # newest first, below a bound
            {"sort_ascending": "true", "modified_at.before": pivot},
            {"sort_by": "created_at", "created_at.before": later, "created_at.after": pivot},
        ]

        def answers() -> list[list[str]]:
            got = []
            for query in queries:
                body = _get(fake, path, opt_fields="modified_at,created_at", **query).json()
                got.append([r["gid"] for r in body["data"]])
            return got

        plain = answers()
        fake.cache_responses = True
        assert answers() == plain
        assert any(len(gids) > 5 for gids in plain)
        newest = fake.touch_task(next(iter(dataset.tasks)))["gid"]
        refreshed = answers()
        assert refreshed[0][0] == newest  # newest first by default
        assert newest not in refreshed[7]  # now after the bound
        fake.cache_responses = False
        assert answers() == refreshed


# --------------------------------------------------------------------------- mutations
def test_add_story_bumps_the_task(mutable_fake: FakeAsana) -> None:
    fake = mutable_fake
    fake.cache_responses = True  # the helpers must invalidate cached renderings
    task = next(iter(fake.dataset.tasks.values()))
    cutoff = iso_ms(int(fake.now() * 1000) - 1)
    story = fake.add_story(task["gid"], "Hello from the test")
    assert (story["text"], story["type"]) == ("Hello from the test", "comment")
    assert task["modified_at"] == story["created_at"] > cutoff
    assert _get(fake, f"/tasks/{task['gid']}/stories").json()["data"][-1]["gid"] == story["gid"]
    changed = _get(fake, "/tasks", project=task["projects"][0]["gid"], modified_since=cutoff)
    assert [t["gid"] for t in changed.json()["data"]] == [task["gid"]]


def test_subtask_changes_leave_the_parent_alone(mutable_fake: FakeAsana) -> None:
    fake = mutable_fake
    fake.cache_responses = True
    ds = fake.dataset
    child = next(s for s in ds.subtasks.values() if ds.subtasks_by_parent[s["gid"]])
    grandchild = ds.subtasks_by_parent[child["gid"]][0]
    task = ds.tasks[child["parent"]["gid"]]
    task_modified, before = task["modified_at"], task["num_subtasks"]
    cutoff = iso_ms(int(fake.now() * 1000) - 1)
    assert fake.touch_task(child["gid"]) is child
    story = fake.add_story(grandchild["gid"], "On a subtask")
    assert story["gid"] in ds.subtask_stories
    search = f"/workspaces/{task['workspace']['gid']}/tasks/search"
    changed = _get(fake, search, **{"modified_at.after": cutoff}).json()["data"]
    assert {r["gid"] for r in changed} == {child["gid"], grandchild["gid"]}
    project = task["projects"][0]["gid"]
    assert _get(fake, "/tasks", project=project, modified_since=cutoff).json()["data"] == []
    new = fake.add_subtask(child["gid"], name="Fresh subtask")
    listed = _get(fake, f"/tasks/{child['gid']}/subtasks", opt_fields="name").json()["data"]
    assert listed[-1] == {"gid": new["gid"], "name": "Fresh subtask"}
    fake.delete_task(child["gid"])
    for gone in (child, grandchild, new):
        assert _error(_get(fake, f"/tasks/{gone['gid']}")) == f"task: Unknown object: {gone['gid']}"
    assert (task["num_subtasks"], task["modified_at"]) == (before - 1, task_modified)


# --------------------------------------------------------------------------- auth, OAuth
@pytest.mark.parametrize("header", [None, "Bearer nope", "Bearer ", "Basic Zm9vOmJhcg=="])
def test_unauthorized(fake: FakeAsana, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = requests.get(fake.api_url + "/workspaces", headers=headers, timeout=5)
    assert response.status_code == 401
    assert _error(response) == "Not Authorized"


def test_pats_and_expired_access_tokens(fake: FakeAsana) -> None:
    assert not re.fullmatch(r"\d/\d+:[0-9a-f]{32}", fake.pat)  # not shaped like a real one
    fake.pats.add("second-fake-pat")
    assert _get(fake, "/workspaces", token="second-fake-pat").status_code == 200
    token = fake.issue_access_token(ttl=60)
    assert _get(fake, "/workspaces", token=token).status_code == 200
    fake.advance_clock(61)
    assert "The bearer token has expired" in _error(_get(fake, "/workspaces", token=token))


def _authorize(fake: FakeAsana, challenge: str | None = None, **extra) -> requests.Response:
    params = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, "response_type": "code"}
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    params = {"state": "xyz", **params, **extra}
    return requests.get(fake.authorize_url, params=params, allow_redirects=False, timeout=5)


def _redirect_params(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def _refresh(fake: FakeAsana, token: str, **overrides) -> requests.Response:
    form = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "refresh_token": token}
    form |= {"grant_type": "refresh_token", **overrides}
    return requests.post(fake.token_url, data=form, timeout=5)


def test_oauth_code_flow_with_pkce(fake: FakeAsana) -> None:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def exchange(code: str, verifier: str) -> requests.Response:
        form = {"redirect_uri": REDIRECT_URI, "code": code, "code_verifier": verifier}
        return token_grant(fake, CLIENT_ID, CLIENT_SECRET, grant_type="authorization_code", **form)

    params = _redirect_params(_authorize(fake, challenge, state="s-123"))
    assert params["state"] == "s-123"
    assert exchange(params["code"], verifier + "x").json()["error"] == "invalid_grant"
    code = _redirect_params(_authorize(fake, challenge))["code"]
    body = exchange(code, verifier).json()
    me = fake.dataset.users[fake.dataset.me_gid]
    assert (body["token_type"], body["expires_in"]) == ("bearer", 3600)
    assert body["data"] == {k: me[k] for k in ("gid", "name", "email")} | {"id": int(me["gid"])}
    assert _get(fake, "/workspaces", token=body["access_token"]).status_code == 200
    assert exchange(code, verifier).json()["error"] == "invalid_grant"  # single-use
    refreshed = _refresh(fake, body["refresh_token"]).json()
    assert "refresh_token" not in refreshed  # unless rotation is on
    assert refreshed["access_token"] != body["access_token"]
    assert [(r.grant_type, r.status) for r in fake.token_requests] == [
        ("authorization_code", 400),
        ("authorization_code", 200),
        ("authorization_code", 400),
        ("refresh_token", 200),
    ]
    assert CLIENT_SECRET not in repr(fake.token_requests) + repr(fake.requests)


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "unknown"}, 401, "invalid_client"),
        ({"refresh_token": "fake-refresh-unknown"}, 400, "invalid_grant"),
        ({"refresh_token": ""}, 400, "invalid_request"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ],
)
def test_oauth_token_errors(fake: FakeAsana, overrides: dict, status: int, error: str) -> None:
    response = _refresh(fake, fake.issue_refresh_token(CLIENT_ID), **overrides)
    assert response.status_code == status
    assert response.json()["error"] == error


def test_oauth_revoked_rotated_and_expiring_tokens(fake: FakeAsana) -> None:
    fake.rotate_refresh_tokens = True
    first = fake.issue_refresh_token(CLIENT_ID)
    rotated = _refresh(fake, first).json()["refresh_token"]
    assert _refresh(fake, first).json()["error"] == "invalid_grant"
    form = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token": rotated}
    assert requests.post(fake.revoke_url, data=form, timeout=5).status_code == 200
    assert _refresh(fake, rotated).json()["error"] == "invalid_grant"
    fake.access_token_ttl = 5
    body = _refresh(fake, fake.issue_refresh_token(CLIENT_ID)).json()
    assert body["expires_in"] == 5
    fake.advance_clock(5)
    assert _get(fake, "/workspaces", token=body["access_token"]).status_code == 401


def test_oauth_authorize_errors(fake: FakeAsana) -> None:
    unknown = _authorize(fake, client_id="nope")
    assert unknown.status_code == 400
    assert unknown.headers["Content-Type"].startswith("text/plain")
    assert _authorize(fake, redirect_uri="https://evil.example.com/cb").status_code == 400
    fake.register_client("strict", "secret", redirect_uris=["http://127.0.0.1:9/cb"])
    assert _authorize(fake, client_id="strict").status_code == 400
    plain = _redirect_params(_authorize(fake, "x", code_challenge_method="plain"))
    assert plain["error"] == "invalid_request"
    fake.oauth_deny = True
    assert _redirect_params(_authorize(fake)) == {"error": "access_denied", "state": "xyz"}


# --------------------------------------------------------------------------- hooks
def test_rate_limit_429_and_retry_after(fake: FakeAsana) -> None:
    fake.rate_limit_per_minute = 3
    assert [_get(fake, "/workspaces").status_code for _ in range(3)] == [200] * 3
    limited = _get(fake, "/workspaces")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert _error(limited).startswith("You've made too many requests and hit a rate limit")
    fake.pats.add("other-pat")
    assert _get(fake, "/workspaces", token="other-pat").status_code == 200  # per token
    fake.advance_clock(30)  # rejected requests count too: the window is still full
    assert _get(fake, "/workspaces").status_code == 429
    fake.advance_clock(31)  # the four from t0 expired; only the one from t0+30 remains
    assert _get(fake, "/workspaces").status_code == 200
    assert fake.responses_429 == 2


def test_fault_injection(fake: FakeAsana, api) -> None:
    fake.inject(r"/workspaces\b", 500, times=2)
    first, second, third = (api("/workspaces") for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [500, 500, 200]
    assert "phrase" in first.json()["errors"][0]
    fake.inject(r"/users", 502, raw_body="<html><body>Bad Gateway</body></html>")
    html = api("/users")
    assert (html.status_code, html.headers["Content-Type"][:9]) == (502, "text/html")
    fake.inject(r"limit=7", 503, body={"errors": [{"message": "custom"}]}, headers={"X-Test": "1"})
    custom = api("/workspaces", limit=7)
    assert (custom.json(), custom.headers["X-Test"]) == ({"errors": [{"message": "custom"}]}, "1")
    fake.inject(r"/workspaces", 429, times=None)
    assert [api("/workspaces").headers["Retry-After"] for _ in range(2)] == ["1", "1"]
    fake.clear_faults()
    assert api("/workspaces").status_code == 200
    fake.inject(r"/workspaces", 200, raw_body='{"data": [', headers={"Content-Length": "500"})
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api("/workspaces")
    fake.inject(r"/workspaces", 200, delay=0.3)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(fake.api_url + "/workspaces", timeout=0.1)


def test_request_log_and_silence(fake: FakeAsana, api, capfd: pytest.CaptureFixture[str]) -> None:
    project = next(iter(fake.dataset.projects))
    api("/tasks", project=project, limit=2)
    requests.get(fake.api_url + "/workspaces", headers={"Authorization": "Bearer wrong"}, timeout=5)
    requests.get(fake.base_url + "/elsewhere", timeout=5)
    (record,) = fake.requests_for("/tasks")
    assert (record.method, record.path, record.status) == ("GET", "/api/1.0/tasks", 200)
    assert record.query == {"project": [project], "limit": ["2"]}
    assert record.headers["Authorization"] == "Bearer <redacted>"
    assert record.token == fake.pat
    assert fake.pat not in repr(record)
    assert [r.status for r in fake.requests_for("/api/1.0/workspaces")] == [401]
    assert capfd.readouterr() == ("", "")
    fake.reset_log()
    assert fake.requests == []


def test_latency_is_applied_in_parallel(fake: FakeAsana) -> None:
    fake.latency = 0.2
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(_get(fake, "/workspaces").status_code))
        for _ in range(10)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 10
    assert 0.2 <= time.perf_counter() - started < 1.0  # ten sleeps overlapped, not queued
    # The fake counts requests being served at once (what a client keeps in flight).
    assert fake.peak_in_flight == 10
    assert fake.in_flight == 0


def test_stop_closes_keep_alive_connections() -> None:
    fake = FakeAsana(build_dataset(workspaces=1, tasks_per_project=1)).start()
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {fake.pat}"
        assert session.get(fake.api_url + "/workspaces", timeout=5).status_code == 200
        fake.stop()
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(fake.api_url + "/workspaces", timeout=5)


def test_cli_serves_until_sigterm() -> None:
    command = [sys.executable, "-m", "tests.fake_asana", "--workspaces", "1"]
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        info = {}
        for line in proc.stdout:
            key, _, value = line.strip().partition("=")
            info[key] = value
            if key == "counts":
                break
        assert "subtasks=" in info["counts"]
        headers = {"Authorization": f"Bearer {info['pat']}"}
        assert requests.get(info["api_url"] + "/workspaces", headers=headers, timeout=5).ok
        form = {"grant_type": "refresh_token", "refresh_token": info["refresh_token"]}
        form |= {"client_id": info["client_id"], "client_secret": info["client_secret"]}
        assert requests.post(info["token_url"], data=form, timeout=5).ok
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stderr.read() == ""


def test_a_user_is_read_by_gid_or_as_me(fake: FakeAsana) -> None:
    """``GET /users/{user_gid}`` (the tap reads users no listing returns): ``me`` too."""
    headers = {"Authorization": f"Bearer {fake.pat}"}
    user = next(iter(fake.dataset.users.values()))
    answer = requests.get(f"{fake.api_url}/users/{user['gid']}", headers=headers, timeout=10)
    assert answer.status_code == 200
    assert answer.json()["data"]["email"] == user["email"]
    me = requests.get(f"{fake.api_url}/users/me", headers=headers, timeout=10).json()["data"]
    assert me["gid"] == fake.dataset.me_gid
    missing = requests.get(f"{fake.api_url}/users/1999999999999999", headers=headers, timeout=10)
    assert missing.status_code == 404
