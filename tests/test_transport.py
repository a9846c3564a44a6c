"""The transport: one session for the run, and Asana's answers sorted into few types."""

from __future__ import annotations

import json

import pytest
import requests
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_asana_vl.auth import AsanaAuthError
from tap_asana_vl.errors import (
    ExpiredOffsetError,
    RateLimitedError,
    RefusedError,
    ScopeMissingError,
)
from tap_asana_vl.tap import TapAsanaVl
from tap_asana_vl.transport import response_body

API = "http://127.0.0.1:9/api/1.0"
CONFIG = {"access_token": "fake-pat-offline", "api_url": API, "max_concurrent_requests": 7}


def test_every_stream_and_thread_shares_one_session_sized_for_the_workers():
    tap = TapAsanaVl(config=CONFIG, parse_env_config=False)
    sessions = {id(stream.requests_session) for stream in tap.streams.values()}
    assert sessions == {id(tap.transport.session)}
    adapter = tap.transport.session.get_adapter(API)
    assert adapter._pool_maxsize == 7 + 1  # the workers and the main thread


def _answer(status: int, body: object = None, *, query: str = "", **headers: str):
    response = requests.Response()
    response.status_code = status
    response.reason = "Reason"
    response.url = f"{API}/tasks?{query}"
    response.request = requests.Request("GET", response.url).prepare()
    response.headers.update(headers)
    response._content = b"{" if body is None else json.dumps(body).encode()
    return response


def _error(message: str) -> dict:
    return {"errors": [{"message": message}]}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (_answer(429, {}, **{"Retry-After": "7"}), RateLimitedError),
        (_answer(403, _error("Insufficient scopes: tasks:read")), ScopeMissingError),
        (_answer(401, _error("Not Authorized")), AsanaAuthError),  # a PAT: never refreshed
        (_answer(503, {}), RetriableAPIError),
        (_answer(200), RetriableAPIError),  # a body cut off mid-transfer
        (_answer(200, {"no": "data"}), RetriableAPIError),
        (
            _answer(400, _error("offset: Your pagination token is invalid."), query="offset=x"),
            ExpiredOffsetError,
        ),
        (_answer(400, _error("The result is too large.")), FatalAPIError),
        (_answer(402, _error("Premium only")), RefusedError),
        (_answer(404, _error("Unknown object")), RefusedError),
        (_answer(409, _error("Conflict")), FatalAPIError),
    ],
)
def test_answers_are_sorted_into_a_few_types(response, expected):
    transport = TapAsanaVl(config=CONFIG, parse_env_config=False).transport
    with pytest.raises(expected) as info:
        transport.check(response, listing="tasks")
    assert type(info.value) is expected


def test_a_refusal_says_where_in_the_listing_it_came_and_success_passes():
    transport = TapAsanaVl(config=CONFIG, parse_env_config=False).transport
    for query, first_page in (("", True), ("offset=abc", False)):
        with pytest.raises(RefusedError) as info:
            transport.check(_answer(403, _error("Forbidden"), query=query), listing="tasks")
        assert (info.value.status, info.value.first_page) == (403, first_page)
    assert transport.check(_answer(200, {"data": []}), listing="tasks") is None


def test_an_answer_checked_keeps_its_parsed_body_not_its_raw_bytes():
    """The SDK keeps a page's response until the next: ~0.7 MB of bytes no one reads."""
    transport = TapAsanaVl(config=CONFIG, parse_env_config=False).transport
    page = {"data": [{"gid": str(n), "name": "x" * 100} for n in range(100)]}
    answer = _answer(200, page)
    transport.check(answer, listing="tasks")
    assert answer.content == b""
    assert response_body(answer) == page
    # A refusal keeps its bytes: its error text is read from them.
    refusal = _answer(404, _error("Unknown object"))
    with pytest.raises(RefusedError, match="Unknown object"):
        transport.check(refusal, listing="tasks")
    assert refusal.content
