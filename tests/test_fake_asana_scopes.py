"""OAuth scopes in the fake Asana: its tables match the spec, and it enforces them."""

from __future__ import annotations

import urllib.parse

import pytest
import requests

from tests import spec_scopes
from tests.conftest import token_grant
from tests.fake_asana import FakeAsana
from tests.fake_asana import scopes as rules

CLIENT_ID = "1209999000000002"
CLIENT_SECRET = "cs_scopes_0123456789abcdef0123456"


# ------------------------------------------------------------------ tables vs the spec


def test_known_scopes_are_the_spec_list():
    assert spec_scopes.scope_list() == rules.SPEC_SCOPES
    assert not rules.FIELD_ONLY_SCOPES & rules.SPEC_SCOPES


@pytest.mark.parametrize("operation", rules.OPERATIONS, ids=lambda op: op.path)
def test_operation_scope_matches_the_spec(operation):
    if operation.path in rules.NOT_IN_SPEC:
        assert not spec_scopes.has_get(operation.path)
        return
    assert spec_scopes.required_scope(operation.path) == operation.scope


def test_field_scopes_match_the_spec_tables():
    tables: dict[str, dict[str, tuple[str, ...]]] = {}
    for operation in rules.OPERATIONS:
        if operation.path in rules.NOT_IN_SPEC:
            continue
        for name, needed in spec_scopes.field_scopes(operation.path).items():
            tables.setdefault(operation.resource, {})[name] = needed
    assert tables == rules.FIELD_SCOPES
    # Every field-level scope is either in the list or one of the field-only ones.
    used = {s for fields in tables.values() for needed in fields.values() for s in needed}
    assert used - rules.SPEC_SCOPES == rules.FIELD_ONLY_SCOPES


# ------------------------------------------------------------------ authorize


@pytest.fixture
def fake():
    with FakeAsana() as server:
        server.register_client(CLIENT_ID, CLIENT_SECRET, scopes=["tasks:read", "projects:read"])
        yield server


def authorize(fake, scope: str | None) -> dict[str, str]:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": "http://localhost:9/cb",
        "response_type": "code",
        "state": "st",
    }
    if scope is not None:
        params["scope"] = scope
    answer = requests.get(fake.authorize_url, params=params, allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    location = urllib.parse.urlsplit(answer.headers["Location"])
    return dict(urllib.parse.parse_qsl(location.query))


def exchange(fake, code: str) -> dict:
    answer = token_grant(
        fake,
        CLIENT_ID,
        CLIENT_SECRET,
        grant_type="authorization_code",
        redirect_uri="http://localhost:9/cb",
        code=code,
    )
    assert answer.status_code == 200
    return answer.json()


def refresh(fake, refresh_token: str) -> str:
    answer = token_grant(
        fake,
        CLIENT_ID,
        CLIENT_SECRET,
        grant_type="refresh_token",
        refresh_token=refresh_token,
    )
    assert answer.status_code == 200
    return answer.json()["access_token"]


def get(fake, token: str, path: str, **params) -> requests.Response:
    return requests.get(
        fake.api_url + path,
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_unknown_scope_is_invalid_scope(fake):
    answer = authorize(fake, "tasks:read sections:read")
    assert answer["error"] == "invalid_scope"
    assert "`sections:read`" in answer["error_description"]
    assert answer["state"] == "st"


def test_unregistered_scope_is_forbidden_in_the_observed_words(fake):
    answer = authorize(fake, "tasks:read project_sections:read")
    assert answer == {
        "error": "forbidden_scopes",
        "error_description": "forbidden_scopes: Your app is not allowed to request user "
        "authorization for `project_sections:read` scopes.",
        "state": "st",
    }


def test_no_scope_means_default(fake):
    answer = authorize(fake, None)
    assert answer["error"] == "forbidden_scopes"
    assert "`default`" in answer["error_description"]


def test_full_permission_app_may_request_anything_known():
    with FakeAsana() as server:
        server.register_client(CLIENT_ID, CLIENT_SECRET)
        assert "code" in authorize(server, None)
        assert "code" in authorize(server, "tasks:read project_sections:read")
        assert authorize(server, "nope:read")["error"] == "invalid_scope"


def test_token_carries_granted_scopes_through_refresh(fake):
    tokens = exchange(fake, authorize(fake, "tasks:read projects:read")["code"])
    project = next(iter(fake.dataset.projects))
    for token in (tokens["access_token"], refresh(fake, tokens["refresh_token"])):
        assert get(fake, token, "/tasks", project=project, limit=1).status_code == 200
        answer = get(fake, token, "/users", workspace="1", limit=1)
        assert answer.status_code == 403
        assert "`users:read`" in answer.json()["errors"][0]["message"]


# ------------------------------------------------------------------ API enforcement


def test_operations_without_granular_scope_need_full_permissions(fake):
    token = fake.issue_access_token(scopes=["projects:read", "tasks:read"])
    project = next(iter(fake.dataset.projects))
    for path, params in (
        (f"/projects/{project}/sections", {}),
        (f"/projects/{project}/project_memberships", {}),
        ("/status_updates", {"parent": project}),
    ):
        answer = get(fake, token, path, **params)
        assert answer.status_code == 403, path
        assert "full permissions" in answer.json()["errors"][0]["message"]
    full = fake.issue_access_token(scopes=["default"])
    assert get(fake, full, f"/projects/{project}/sections").status_code == 200
    assert get(fake, fake.pat, f"/projects/{project}/sections").status_code == 200


def test_field_needing_another_scope_is_refused(fake):
    project = next(iter(fake.dataset.projects))
    token = fake.issue_access_token(scopes=["projects:read", "tasks:read"])
    fine = get(fake, token, "/tasks", project=project, opt_fields="name,assignee.name")
    assert fine.status_code == 200
    answer = get(fake, token, "/tasks", project=project, opt_fields="name,memberships.section")
    assert answer.status_code == 403
    message = answer.json()["errors"][0]["message"]
    assert "`memberships`" in message
    assert "`project_sections:read`" in message
    with_it = fake.issue_access_token(
        scopes=["projects:read", "tasks:read", "project_sections:read"]
    )
    answer = get(fake, with_it, "/tasks", project=project, opt_fields="memberships.section")
    assert answer.status_code == 200
    answer = get(fake, token, f"/projects/{project}", opt_fields="team.name")
    assert answer.status_code == 403


def test_scope_error_status_can_be_401(fake):
    fake.scope_error_status = 401
    token = fake.issue_access_token(scopes=["tasks:read"])
    assert get(fake, token, "/workspaces").status_code == 401


def test_refresh_token_issued_with_scopes(fake):
    refresh_token = fake.issue_refresh_token(CLIENT_ID, scopes=["workspaces:read"])
    token = refresh(fake, refresh_token)
    assert get(fake, token, "/workspaces").status_code == 200
    assert get(fake, token, "/users", workspace="1").status_code == 403
    unscoped = refresh(fake, fake.issue_refresh_token(CLIENT_ID))
    assert get(fake, unscoped, "/users", workspace="1", limit=1).status_code != 403
