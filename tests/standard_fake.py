"""The fake Asana the SDK's standard tests run against.

`get_tap_test_class` needs the tap config (with the server's URL) when the test module
is imported, before any fixture could run, so this server starts on first import and
stops when the test process exits. Standard tests only read, so one dataset serves both
auth modes.
"""

from __future__ import annotations

import atexit

from tests.fake_asana import FakeAsana, build_dataset

FAKE = FakeAsana(build_dataset(seed=7))
FAKE.start()
atexit.register(FAKE.stop)

CLIENT_ID = "standard-tests-client"
CLIENT_SECRET = "standard-tests-client-secret"
FAKE.register_client(CLIENT_ID, CLIENT_SECRET)
REFRESH_TOKEN = FAKE.issue_refresh_token(CLIENT_ID)

COMMON = {"api_url": FAKE.api_url, "start_date": "2020-01-01T00:00:00Z"}
PAT_CONFIG = {**COMMON, "access_token": FAKE.pat}
OAUTH_CONFIG = {
    **COMMON,
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
    "refresh_token": REFRESH_TOKEN,
    "oauth_token_url": FAKE.token_url,
}
