"""OAuth scopes in the fake Asana: taken from the spec, refused at authorize, enforced."""

from __future__ import annotations

import urllib.parse

import pytest
import requests

from tests import spec_scopes
from tests.conftest import token_grant
from tests.fake_asana import FakeAsana
from tests.fake_asana.scopes import known_scopes

CLIENT_ID = "1209999000000002"
CLIENT_SECRET = "cs_scopes_0123456789abcdef0123456"


@pytest.fixture
def fake():
    with FakeAsana() as server:
        server.register_client(CLIENT_ID, CLIENT_SECRET, scopes=["tasks:read", "projects:read"])
        yield server


def authorize(fake: FakeAsana, scope: str | None) -> dict[str, str]:
    params = {"client_id": CLIENT_ID, "redirect_uri": "http://localhost:9/cb", "state": "st"}
    params |= {"response_type": "code", **({"scope": scope} if scope is not None else {})}
    answer = requests.get(fake.authorize_url, params=params, allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(answer.headers["Location"]).query))


def grant(fake: FakeAsana, **form: str) -> dict:
    answer = token_grant(fake, CLIENT_ID, CLIENT_SECRET, **form)
    assert answer.status_code == 200
    return answer.json()


def get(fake: FakeAsana, token: str, path: str, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(fake.api_url + path, params=params, headers=headers, timeout=10)


def message(answer: requests.Response) -> str:
    return answer.json()["errors"][0]["message"]


def test_known_scopes_are_the_spec_list_plus_those_of_field_tables():
    assert known_scopes() - spec_scopes.scope_list() == {
        "project_sections:read",
        "time_periods:read",
    }


def test_authorize_refuses_unknown_and_unregistered_scopes(fake):
    answer = authorize(fake, "tasks:read sections:read")
    assert answer["error"] == "invalid_scope"
    assert "`sections:read`" in answer["error_description"]
    assert authorize(fake, "tasks:read project_sections:read") == {
        "error": "forbidden_scopes",
        "error_description": "forbidden_scopes: Your app is not allowed to request user "
        "authorization for `project_sections:read` scopes.",  # the words observed from Asana
        "state": "st",
    }
    assert "`default`" in authorize(fake, None)["error_description"]  # no scope: default
    fake.register_client(CLIENT_ID, CLIENT_SECRET)  # full permissions: anything known
    assert "code" in authorize(fake, "tasks:read project_sections:read")
    assert authorize(fake, "nope:read")["error"] == "invalid_scope"


def test_tokens_carry_the_granted_scopes_through_refresh(fake):
    code = authorize(fake, "tasks:read projects:read")["code"]
    tokens = grant(
        fake, grant_type="authorization_code", redirect_uri="http://localhost:9/cb", code=code
    )
    refreshed = grant(fake, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    project = next(iter(fake.dataset.projects))
    for token in (tokens["access_token"], refreshed["access_token"]):
        assert get(fake, token, "/tasks", project=project, limit=1).status_code == 200
        answer = get(fake, token, "/users", workspace=next(iter(fake.dataset.workspaces)))
        assert answer.status_code == 403
        assert "`users:read`" in message(answer)


def test_operations_and_fields_need_their_scopes(fake):
    project = next(iter(fake.dataset.projects))
    token = fake.issue_access_token(scopes=["projects:read", "tasks:read"])
    for path, params in (
        (f"/projects/{project}/sections", {}),
        (f"/projects/{project}/project_memberships", {}),
        ("/status_updates", {"parent": project}),
    ):
        answer = get(fake, token, path, **params)
        assert answer.status_code == 403, path
        assert "full permissions" in message(answer)
    for full in (fake.issue_access_token(scopes=["default"]), fake.pat):
        assert get(fake, full, f"/projects/{project}/sections").status_code == 200
    assert get(fake, token, "/tasks", project=project, opt_fields="assignee.name").ok
    answer = get(fake, token, "/tasks", project=project, opt_fields="name,memberships.section")
    assert answer.status_code == 403
    assert "`memberships`" in message(answer)
    assert "`project_sections:read`" in message(answer)
    assert get(fake, token, f"/projects/{project}", opt_fields="team.name").status_code == 403
    more = fake.issue_access_token(scopes=["projects:read", "tasks:read", "project_sections:read"])
    assert get(fake, more, "/tasks", project=project, opt_fields="memberships.section").ok


def test_scope_error_status_can_be_401(fake):
    fake.scope_error_status = 401
    token = fake.issue_access_token(scopes=["tasks:read"])
    assert get(fake, token, "/workspaces").status_code == 401
