"""Tests for ``tap-asana-vl-auth`` (tap_asana_vl.oauth) against the fake Asana.

How the redirect port is chosen: the tests pass ``--redirect-uri
http://127.0.0.1:0/callback``.  Port 0 makes the command bind its callback
listener to a free port *before* it builds the authorization URL, and the URI
with the real port is what it sends to the fake (which accepts any
127.0.0.1/localhost redirect for a client registered with ``redirect_uris=None``)
and later to the token endpoint.  No port is reserved and released, so there is
no race with other processes.

The "browser" is a callable passed as ``main(..., open_url=...)`` that follows
the authorization URL with ``requests`` (the fake auto-approves and redirects
it to the listener); the subprocess test uses a small executable named in
``$BROWSER`` instead, which is how :mod:`webbrowser` finds a browser.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import shlex
import socket
import stat
import subprocess
import sys
import urllib.parse
from pathlib import Path

import dotenv
import pytest
import requests

from tap_asana_vl.oauth import exchange
from tap_asana_vl.oauth.callback import parse_callback, refused_scopes
from tap_asana_vl.oauth.cli import main
from tap_asana_vl.oauth.common import (
    DEFAULT_SCOPES,
    ENV_ACCESS_TOKEN,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_OAUTH_SCOPES,
    ENV_REFRESH_TOKEN,
    SECTIONS_SCOPE,
    AuthFailedError,
)
from tap_asana_vl.oauth.env_file import format_value, read_env_file, update_env_file
from tap_asana_vl.oauth.exchange import build_authorize_url, exchange_code, make_pkce_pair
from tap_asana_vl.oauth.options import build_parser, rerun_advice
from tap_asana_vl.settings import config_errors
from tests.conftest import secret_encodings, token_grant
from tests.fake_asana import FakeAsana

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "1209999000000001"
CLIENT_SECRET = "cs_0123456789abcdef0123456789abcdef"
WRONG_SECRET = "cs_wrong_ffffffffffffffffffffffffff"
EXPECTED_DEFAULT_SCOPE = (
    "workspaces:read users:read projects:read tasks:read stories:read "
    "time_tracking_entries:read "
    "teams:read team_memberships:read tags:read custom_fields:read attachments:read "
    "portfolios:read goals:read"
)
EXISTING_ENV = (
    "# tap-asana-vl settings\n"
    "\n"
    "TAP_ASANA_VL_START_DATE=2024-01-01T00:00:00Z\n"
    "export PGPASSWORD='p@ss word'   # local postgres\n"
    "# TAP_ASANA_VL_REFRESH_TOKEN=commented-out-stays\n"
    "TARGET_POSTGRES_HOST=localhost"
)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    for name in (ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_REFRESH_TOKEN, ENV_ACCESS_TOKEN, "BROWSER"):
        monkeypatch.delenv(name, raising=False)
    # No interactive prompts: stdin is never a terminal here.
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


@pytest.fixture
def fake():
    with FakeAsana() as server:
        server.register_client(CLIENT_ID, CLIENT_SECRET, redirect_uris=None)
        yield server


class TokenSpy:
    """Wraps ``requests.post``: what the command sent and what it got back."""

    def __init__(self, real_post):
        self.real_post = real_post
        self.forms: list[dict] = []
        self.answers: list[dict] = []

    def __call__(self, *args, **kwargs):
        self.forms.append(dict(kwargs.get("data") or {}))
        response = self.real_post(*args, **kwargs)
        with contextlib.suppress(ValueError):
            self.answers.append(response.json())
        return response


@pytest.fixture
def token_spy(monkeypatch):
    spy = TokenSpy(requests.post)
    monkeypatch.setattr(exchange.requests, "post", spy)
    return spy


class Browser:
    """Stands in for the user's browser: loads the URL, following redirects."""

    def __init__(self, *, tamper_state: bool = False, favicon_first: bool = False):
        self.tamper_state = tamper_state
        self.favicon_first = favicon_first
        self.urls: list[str] = []
        self.pages: list[requests.Response] = []

    def __call__(self, url: str) -> bool:
        self.urls.append(url)
        redirect_uri = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))[
            "redirect_uri"
        ]
        if self.favicon_first:
            base = urllib.parse.urlsplit(redirect_uri)._replace(path="/favicon.ico")
            self.pages.append(requests.get(urllib.parse.urlunsplit(base), timeout=10))
        if not self.tamper_state:
            self.pages.append(requests.get(url, timeout=10))
            return True
        answer = requests.get(url, allow_redirects=False, timeout=10)
        location = answer.headers["Location"]
        parts = urllib.parse.urlsplit(location)
        params = dict(urllib.parse.parse_qsl(parts.query))
        params["state"] = "not-the-state-we-sent"
        tampered = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(params)))
        self.pages.append(requests.get(tampered, timeout=10))
        return True


def cli_args(fake, env_file, *extra, redirect="http://127.0.0.1:0/callback"):
    return [
        "--client-id",
        CLIENT_ID,
        "--authorize-url",
        fake.authorize_url,
        "--token-url",
        fake.token_url,
        "--redirect-uri",
        redirect,
        "--env-file",
        str(env_file),
        "--timeout",
        "30",
        *extra,
    ]


def refresh_works(fake, refresh_token: str) -> bool:
    """Use the token in a refresh-token grant against the fake."""
    answer = token_grant(
        fake,
        CLIENT_ID,
        CLIENT_SECRET,
        grant_type="refresh_token",
        refresh_token=refresh_token,
    )
    return answer.status_code == 200 and bool(answer.json().get("access_token"))


def assert_no_secrets(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret
        assert secret not in text


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# ------------------------------------------------------------ the full flow


def test_full_flow_in_process(fake, tmp_path, capsys, monkeypatch, token_spy):
    env_file = tmp_path / ".env"
    env_file.write_bytes(EXISTING_ENV.encode())
    env_file.chmod(0o644)
    monkeypatch.setenv(ENV_CLIENT_SECRET, CLIENT_SECRET)  # secret from the environment
    browser = Browser(favicon_first=True)

    rc = main(cli_args(fake, env_file), open_url=browser)

    out, err = capsys.readouterr()
    assert rc == 0, err
    # The listener ignored /favicon.ico, then answered the real redirect.
    assert [page.status_code for page in browser.pages] == [404, 200]
    assert "You can close this tab" in browser.pages[-1].text

    # .env: old content byte for byte, the token and its scopes appended, mode 0600.
    values = read_env_file(env_file)
    token = values[ENV_REFRESH_TOKEN]
    assert (
        env_file.read_bytes()
        == (
            EXISTING_ENV + f"\n{ENV_REFRESH_TOKEN}={format_value(token)}\n"
            f"{ENV_OAUTH_SCOPES}={format_value(EXPECTED_DEFAULT_SCOPE)}\n"
        ).encode()
    )
    assert mode_of(env_file) == 0o600
    assert refresh_works(fake, token)

    # What the fake saw: default scopes, PKCE S256 and the verifier that matches it.
    (authorize,) = fake.authorize_requests
    assert authorize["scope"] == EXPECTED_DEFAULT_SCOPE == " ".join(DEFAULT_SCOPES)
    assert authorize["response_type"] == "code"
    assert authorize["code_challenge_method"] == "S256"
    assert authorize["client_id"] == CLIENT_ID
    assert authorize["redirect_uri"].startswith("http://127.0.0.1:")
    assert not authorize["redirect_uri"].startswith("http://127.0.0.1:0/")
    assert len(authorize["state"]) >= 32
    assert [(r.grant_type, r.status) for r in fake.token_requests[:1]] == [
        ("authorization_code", 200)
    ]
    (sent,) = [form for form in token_spy.forms if form.get("grant_type") == "authorization_code"]
    assert sent["redirect_uri"] == authorize["redirect_uri"]
    assert sent["client_id"] == CLIENT_ID
    verifier = sent["code_verifier"]
    assert 43 <= len(verifier) <= 128
    assert s256(verifier) == authorize["code_challenge"]

    # Nothing secret printed; stdout stays empty; the summary names the user and file.
    access_tokens = [a["access_token"] for a in token_spy.answers if "access_token" in a]
    assert access_tokens
    assert out == ""
    assert_no_secrets(out + err, CLIENT_SECRET, token, verifier, *access_tokens)
    me = fake.dataset.users[fake.dataset.me_gid]
    assert f"Authorized as {me['name']} <{me['email']}>." in err
    assert str(env_file) in err
    assert "meltano run tap-asana-vl" in err
    assert "oauth_authorize?" in err  # the URL is always printed


def test_print_token_and_save_client(fake, tmp_path, capsys):
    env_file = tmp_path / "secrets.env"

    rc = main(
        cli_args(
            fake, env_file, "--client-secret", CLIENT_SECRET, "--save-client", "--print-token"
        ),
        open_url=Browser(),
    )

    out, err = capsys.readouterr()
    assert rc == 0, err
    values = read_env_file(env_file)
    assert values == {
        ENV_REFRESH_TOKEN: values[ENV_REFRESH_TOKEN],
        ENV_OAUTH_SCOPES: EXPECTED_DEFAULT_SCOPE,
        ENV_CLIENT_ID: CLIENT_ID,
        ENV_CLIENT_SECRET: CLIENT_SECRET,
    }
    assert out == values[ENV_REFRESH_TOKEN] + "\n"  # only the token, only on stdout
    assert_no_secrets(err, CLIENT_SECRET, values[ENV_REFRESH_TOKEN])
    assert mode_of(env_file) == 0o600
    assert refresh_works(fake, values[ENV_REFRESH_TOKEN])


def test_client_credentials_from_env_file(fake, tmp_path, capsys):
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"export {ENV_CLIENT_ID}={CLIENT_ID}\n{ENV_CLIENT_SECRET}='{CLIENT_SECRET}'\n"
    )
    args = [a for a in cli_args(fake, env_file) if a not in ("--client-id", CLIENT_ID)]

    rc = main(args, open_url=Browser())

    _, err = capsys.readouterr()
    assert rc == 0, err
    token = read_env_file(env_file)[ENV_REFRESH_TOKEN]
    assert env_file.read_text() == (
        f"export {ENV_CLIENT_ID}={CLIENT_ID}\n{ENV_CLIENT_SECRET}='{CLIENT_SECRET}'\n"
        f"{ENV_REFRESH_TOKEN}={format_value(token)}\n"
        f"{ENV_OAUTH_SCOPES}={format_value(EXPECTED_DEFAULT_SCOPE)}\n"
    )
    assert "also needs" not in err  # client id/secret are already in the file


def test_subprocess_with_browser_env(fake, tmp_path):
    """Real process, real :mod:`webbrowser` (via $BROWSER), stdin closed, default .env."""
    work = tmp_path / "project"
    work.mkdir()
    (work / ".env").write_text(f"# mine\n{ENV_CLIENT_ID}={CLIENT_ID}\n")
    browser = tmp_path / "fake-browser"
    browser.write_text(
        f"#!{sys.executable}\n"
        "import sys, urllib.request\n"
        "try:\n"
        "    with urllib.request.urlopen(sys.argv[1], timeout=30) as page:\n"
        "        page.read()\n"
        "except Exception as exc:\n"
        "    print('fake-browser:', exc, file=sys.stderr)\n"
    )
    browser.chmod(0o755)
    try:  # webbrowser runs $BROWSER as a program: it must be executable here
        subprocess.run([str(browser), "file:///dev/null"], check=True, timeout=60)
    except OSError as exc:
        if os.environ.get("CI"):
            raise  # in CI every test must really run
        pytest.skip(f"cannot execute a helper script in {tmp_path}: {exc}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_ASANA_VL_")}
    env.update(
        BROWSER=str(browser),
        PYTHONPATH=str(REPO_ROOT),
        TAP_ASANA_VL_CLIENT_SECRET=CLIENT_SECRET,
    )

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tap_asana_vl.oauth",
            "--authorize-url",
            fake.authorize_url,
            "--token-url",
            fake.token_url,
            "--redirect-uri",
            "http://localhost:0/callback",
            "--timeout",
            "60",
        ],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    token = read_env_file(work / ".env")[ENV_REFRESH_TOKEN]
    assert (work / ".env").read_text() == (
        f"# mine\n{ENV_CLIENT_ID}={CLIENT_ID}\n{ENV_REFRESH_TOKEN}={format_value(token)}\n"
        f"{ENV_OAUTH_SCOPES}={format_value(EXPECTED_DEFAULT_SCOPE)}\n"
    )
    assert mode_of(work / ".env") == 0o600
    assert refresh_works(fake, token)
    assert fake.authorize_requests[0]["redirect_uri"].startswith("http://localhost:")
    assert proc.stdout == ""
    assert_no_secrets(proc.stderr, CLIENT_SECRET, token)


@pytest.mark.parametrize("paste", ["url", "code"])
def test_headless_reads_redirected_url_from_stdin(fake, tmp_path, capsys, monkeypatch, paste):
    env_file = tmp_path / ".env"
    seen: list[str] = []

    class PasteRedirect(io.StringIO):
        """The user: opens the printed URL elsewhere, pastes where it landed."""

        def readline(self, *args):
            err = capsys.readouterr().err
            seen.append(err)
            url = next(line.strip() for line in err.splitlines() if "/-/oauth_authorize?" in line)
            answer = requests.get(url, allow_redirects=False, timeout=10)
            location = answer.headers["Location"]
            if paste == "code":
                query = urllib.parse.urlsplit(location).query
                return dict(urllib.parse.parse_qsl(query))["code"] + "\n"
            return location + "\n"

    monkeypatch.setattr(sys, "stdin", PasteRedirect())
    args = cli_args(fake, env_file, "--headless", "--client-secret", CLIENT_SECRET)
    args = args[: args.index("--redirect-uri")] + args[args.index("--redirect-uri") + 2 :]

    rc = main(args, open_url=pytest.fail)  # headless never opens a browser

    out, err = capsys.readouterr()
    assert rc == 0, err
    assert fake.authorize_requests[0]["redirect_uri"] == "http://localhost:8080/callback"
    token = read_env_file(env_file)[ENV_REFRESH_TOKEN]
    assert refresh_works(fake, token)
    assert "paste" in seen[0].lower()
    assert_no_secrets(out + err + "".join(seen), CLIENT_SECRET, token)


def test_headless_rejects_pasted_url_with_wrong_state(fake, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        sys, "stdin", io.StringIO("http://localhost:8080/callback?code=abc&state=forged\n")
    )
    rc = main(cli_args(fake, tmp_path / ".env", "--headless", "--client-secret", CLIENT_SECRET))
    assert rc == 1
    assert "state" in capsys.readouterr().err
    assert not (tmp_path / ".env").exists()
    assert fake.token_requests == []


def test_headless_with_closed_stdin(fake, tmp_path, capsys):
    rc = main(cli_args(fake, tmp_path / ".env", "--headless", "--client-secret", CLIENT_SECRET))
    assert rc == 1
    assert "stdin" in capsys.readouterr().err


# ------------------------------------------------------------ failure paths


def test_state_mismatch_is_rejected(fake, tmp_path, capsys):
    env_file = tmp_path / ".env"
    browser = Browser(tamper_state=True)

    rc = main(cli_args(fake, env_file, "--client-secret", CLIENT_SECRET), open_url=browser)

    out, err = capsys.readouterr()
    assert rc == 1
    assert "state" in err
    assert "CSRF" in err
    assert "re-run" in err
    assert "Traceback" not in err
    assert browser.pages[-1].status_code == 400
    assert "Authorization failed" in browser.pages[-1].text
    assert fake.token_requests == []  # the code was never exchanged
    assert not env_file.exists()
    assert_no_secrets(out + err, CLIENT_SECRET)


def test_access_denied_is_rejected(fake, tmp_path, capsys):
    fake.oauth_deny = True
    env_file = tmp_path / ".env"

    rc = main(cli_args(fake, env_file, "--client-secret", CLIENT_SECRET), open_url=Browser())

    err = capsys.readouterr().err
    assert rc == 1
    assert "denied" in err
    assert "click Allow" in err
    assert "Traceback" not in err
    assert fake.token_requests == []
    assert not env_file.exists()


def test_invalid_client_secret(fake, tmp_path, capsys):
    env_file = tmp_path / ".env"

    rc = main(cli_args(fake, env_file, "--client-secret", WRONG_SECRET), open_url=Browser())

    out, err = capsys.readouterr()
    assert rc == 1
    assert "invalid_client" in err
    assert "client ID and secret" in err
    assert "Traceback" not in err
    assert [(r.status, r.error) for r in fake.token_requests] == [(401, "invalid_client")]
    assert_no_secrets(out + err, WRONG_SECRET, CLIENT_SECRET)
    assert not env_file.exists()


def test_unreachable_token_endpoint(fake, tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    dead_url = f"http://127.0.0.1:{closed_port}/-/oauth_token"
    args = cli_args(fake, tmp_path / ".env", "--client-secret", CLIENT_SECRET)
    args[args.index(fake.token_url)] = dead_url

    rc = main(args, open_url=Browser())

    err = capsys.readouterr().err
    assert rc == 1
    assert dead_url in err
    assert "Traceback" not in err
    assert_no_secrets(err, CLIENT_SECRET)


def test_no_callback_times_out(fake, tmp_path, capsys):
    args = cli_args(fake, tmp_path / ".env", "--client-secret", CLIENT_SECRET)
    args[args.index("--timeout") + 1] = "0.3"

    rc = main(args, open_url=lambda url: False)

    err = capsys.readouterr().err
    assert rc == 1
    assert "open the URL above yourself" in err
    assert "no redirect" in err


def test_non_local_redirect_needs_headless(fake, tmp_path, capsys):
    args = cli_args(
        fake,
        tmp_path / ".env",
        "--client-secret",
        CLIENT_SECRET,
        redirect="https://example.com/callback",
    )
    assert main(args, open_url=pytest.fail) == 2
    assert "--headless" in capsys.readouterr().err


def test_missing_client_secret_is_a_usage_error(fake, tmp_path, capsys):
    assert main(cli_args(fake, tmp_path / ".env"), open_url=pytest.fail) == 2
    err = capsys.readouterr().err
    assert ENV_CLIENT_SECRET in err
    assert fake.authorize_requests == []


def test_help_and_usage_errors(capsys):
    assert main(["--help"]) == 0
    assert "--headless" in capsys.readouterr().out
    assert main(["--scope", "x", "--full-access"]) == 2
    assert main(["--headless", "--no-browser"]) == 2


def test_full_access_and_custom_scopes(fake, tmp_path, capsys):
    for extra, expected in (
        (["--full-access"], "default"),
        (["--scope", "tasks:read projects:read", "--scope", "users:read"], None),
    ):
        rc = main(
            cli_args(fake, tmp_path / ".env", "--client-secret", CLIENT_SECRET, *extra),
            open_url=Browser(),
        )
        assert rc == 0, capsys.readouterr().err
        if expected:
            assert fake.authorize_requests[-1]["scope"] == expected
        else:
            assert fake.authorize_requests[-1]["scope"] == "tasks:read projects:read users:read"


def test_busy_redirect_port_is_a_usage_error(fake, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = cli_args(
            fake,
            tmp_path / ".env",
            "--client-secret",
            CLIENT_SECRET,
            redirect=f"http://127.0.0.1:{port}/callback",
        )
        assert main(args, open_url=pytest.fail) == 2
    assert "already in use" in capsys.readouterr().err
    assert fake.authorize_requests == []


def test_exchange_code_invalid_grant(fake):
    with pytest.raises(AuthFailedError, match="invalid_grant") as caught:
        exchange_code(
            fake.token_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uri="http://localhost:8080/callback",
            code="fake-code-never-issued",
            code_verifier="v" * 43,
        )
    message = str(caught.value)
    assert "expired or was already used" in message
    assert "redirect URI" in message
    assert CLIENT_SECRET not in message
    assert "fake-code-never-issued" not in message


def test_exchange_code_non_json_error():
    class BadGateway:
        def post(self, url, **kwargs):
            response = requests.Response()
            response.status_code = 502
            response._content = b"<html>Bad Gateway</html>"
            response.url = url
            return response

    with pytest.raises(AuthFailedError, match=r"HTTP 502, not JSON"):
        exchange_code(
            "https://asana.invalid/-/oauth_token",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uri="http://localhost:8080/callback",
            code="c",
            code_verifier="v" * 43,
            session=BadGateway(),
        )


def test_exchange_code_redacts_every_form_of_the_secrets_a_server_echoes(fake):
    secret = "cs/+=:secret~value"
    code, verifier = "1/2:code+value", "v/" + "v" * 41
    fake.register_client(CLIENT_ID, secret, redirect_uris=None)
    form = urllib.parse.urlencode(
        {"client_secret": secret, "code": code, "code_verifier": verifier}
    )
    basic = base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()
    fake.inject(
        r"^/-/oauth_token",
        400,
        body={
            "error": f"weird_error {json.dumps(code)}",
            "error_description": f"\x1b]0;title\x07got {form} with {basic}",
        },
    )
    with pytest.raises(AuthFailedError, match="weird_error") as caught:
        exchange_code(
            fake.token_url,
            client_id=CLIENT_ID,
            client_secret=secret,
            redirect_uri="http://localhost:8080/callback",
            code=code,
            code_verifier=verifier,
        )
    message = str(caught.value)
    assert "[redacted]" in message
    assert "\x1b" not in message
    assert "\x07" not in message
    for value in (secret, code, verifier):
        for encoded in secret_encodings(value):
            assert encoded not in message


def test_error_description_cannot_reach_the_terminal_raw(fake, tmp_path, capsys, monkeypatch):
    description = "\x1b[2J\x1b]0;pwned\x07denied\r\nINFO fake log line\u202e"
    callback = "http://localhost:8080/callback?" + urllib.parse.urlencode(
        {"error": "access_denied\x1b[31m", "error_description": description}
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(callback + "\n"))
    rc = main(cli_args(fake, tmp_path / ".env", "--headless", "--client-secret", CLIENT_SECRET))
    err = capsys.readouterr().err
    assert rc == 1
    assert "denied INFO fake log line" in err
    assert not any(ch in err for ch in "\x1b\x07\r\u202e")


@pytest.mark.parametrize("status", [302, 307, 308])
def test_exchange_code_does_not_follow_redirects(fake, catcher, status):
    fake.inject(r"^/-/oauth_token", status, headers={"Location": catcher.url})
    with pytest.raises(AuthFailedError, match="redirect") as caught:
        exchange_code(
            fake.token_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uri="http://localhost:8080/callback",
            code="fake-code-0123",
            code_verifier="v" * 43,
        )
    assert "--token-url" in str(caught.value)
    assert catcher.bodies == []


def test_the_authorized_users_name_reaches_the_terminal_printable(fake, tmp_path, capsys):
    fake.dataset.users[fake.dataset.me_gid]["name"] = "\x1b]0;pwned\x07Ada\x1b[2J Lovelace"
    fake.invalidate_cache()
    rc = main(
        cli_args(fake, tmp_path / ".env", "--client-secret", CLIENT_SECRET), open_url=Browser()
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "Authorized as Ada Lovelace" in err
    assert "\x1b" not in err
    assert "\x07" not in err


# ------------------------------------------------------------ building blocks


def test_make_pkce_pair():
    verifier, challenge = make_pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert set(verifier) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    )
    assert challenge == s256(verifier)
    assert "=" not in challenge
    assert make_pkce_pair()[0] != verifier


def test_build_authorize_url():
    url = build_authorize_url(
        "https://app.asana.com/-/oauth_authorize",
        client_id="123",
        redirect_uri="http://localhost:8080/callback",
        state="st",
        code_challenge="ch",
        scopes=["tasks:read", "users:read"],
    )
    parts = urllib.parse.urlsplit(url)
    assert parts.netloc == "app.asana.com"
    assert "+" not in parts.query  # spaces as %20
    assert dict(urllib.parse.parse_qsl(parts.query)) == {
        "client_id": "123",
        "redirect_uri": "http://localhost:8080/callback",
        "response_type": "code",
        "state": "st",
        "code_challenge_method": "S256",
        "code_challenge": "ch",
        "scope": "tasks:read users:read",
    }


@pytest.mark.parametrize(
    ("callback", "message"),
    [
        ("http://localhost:8080/callback?code=c&state=other", "CSRF"),
        ("http://localhost:8080/callback?code=c", "state"),
        ("/callback?error=access_denied&state=st", "click Allow"),
        ("error=access_denied", "click Allow"),
        ("/callback?error=forbidden_scopes&state=st", "--scope"),
        ("/callback?state=st", "no authorization code"),
    ],
)
def test_parse_callback_rejects(callback, message):
    with pytest.raises(AuthFailedError, match=message):
        parse_callback(callback, "st")


def test_parse_callback_accepts_url_path_or_query():
    for callback in (
        "http://localhost:8080/callback?code=1%2F2%3A3&state=st",
        "/callback?state=st&code=1%2F2%3A3",
        "code=1%2F2%3A3&state=st",
    ):
        assert parse_callback(callback, "st") == "1/2:3"


# ------------------------------------------------------------------ scopes Asana refuses


def _rerun_command(err: str, after: str) -> list[str]:
    """The arguments of the command printed on the line after ``after``."""
    lines = err.splitlines()
    index = next(i for i, line in enumerate(lines) if after in line)
    words = shlex.split(lines[index + 1])
    assert words[0] == "tap-asana-vl-auth"
    return words[1:]


@pytest.fixture
def scoped_app():
    """An app registered for the default read scopes only (no project_sections:read)."""
    with FakeAsana() as server:
        server.register_client(CLIENT_ID, CLIENT_SECRET, scopes=DEFAULT_SCOPES)
        yield server


def test_sections_scope_refused_names_it_and_the_rerun_works(
    scoped_app, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv(ENV_CLIENT_SECRET, CLIENT_SECRET)
    env_file = tmp_path / ".env"
    rc = main(cli_args(scoped_app, env_file, "--sections-scope"), open_url=Browser())

    _, err = capsys.readouterr()
    assert rc == 1
    assert scoped_app.authorize_requests[-1]["scope"] == " ".join([*DEFAULT_SCOPES, SECTIONS_SCOPE])
    assert "refused the requested scopes: project_sections:read (forbidden_scopes: " in err
    rerun = _rerun_command(err, "Re-run without project_sections:read:")
    # The default scopes are what is left: no --scope needed, and none of the others.
    assert not {"--scope", "--sections-scope", "--full-access"} & set(rerun)
    assert "--full-access" in err
    assert not env_file.exists()

    assert main(rerun, open_url=Browser()) == 0, capsys.readouterr().err
    assert scoped_app.authorize_requests[-1]["scope"] == EXPECTED_DEFAULT_SCOPE
    assert read_env_file(env_file)[ENV_OAUTH_SCOPES] == EXPECTED_DEFAULT_SCOPE


def test_full_access_refused_offers_the_default_scopes(scoped_app, tmp_path, capsys):
    env_file = tmp_path / ".env"
    args = cli_args(scoped_app, env_file, "--client-secret", CLIENT_SECRET, "--full-access")
    rc = main(args, open_url=Browser())

    _, err = capsys.readouterr()
    assert rc == 1
    assert "forbidden_scopes" in err
    assert "Your app is not allowed to request user authorization for `default`" in err
    rerun = _rerun_command(err, "not registered for full permissions")
    assert "--full-access" not in rerun
    assert CLIENT_SECRET not in err  # the re-run command leaves the secret out
    assert "Pass the client secret as before" in err
    assert "sections, project_memberships, status_updates" in err

    assert main([*rerun, "--client-secret", CLIENT_SECRET], open_url=Browser()) == 0
    assert read_env_file(env_file)[ENV_OAUTH_SCOPES] == EXPECTED_DEFAULT_SCOPE


def test_unknown_scope_is_named_and_dropped(fake, tmp_path, capsys):
    env_file = tmp_path / ".env"
    args = cli_args(fake, env_file, "--scope", "tasks:read bogus:read projects:read")
    rc = main([*args, "--client-secret", CLIENT_SECRET], open_url=Browser())

    _, err = capsys.readouterr()
    assert rc == 1
    assert "refused the requested scopes: bogus:read (invalid_scope: " in err
    rerun = _rerun_command(err, "Re-run without bogus:read:")
    assert rerun[-2:] == ["--scope", "tasks:read projects:read"]
    assert main([*rerun, "--client-secret", CLIENT_SECRET], open_url=Browser()) == 0
    assert read_env_file(env_file)[ENV_OAUTH_SCOPES] == "tasks:read projects:read"


def test_refusal_without_names_suggests_full_access():
    settings_args = build_parser().parse_args(["--client-id", "1"])
    with pytest.raises(AuthFailedError) as raised:
        parse_callback("/callback?error=forbidden_scopes&state=st", "st")
    assert raised.value.refused == []
    advice = rerun_advice(settings_args, list(DEFAULT_SCOPES), [])
    assert "did not name the refused scopes" in advice
    assert "tap-asana-vl-auth --client-id 1 --full-access" in advice


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        (
            "forbidden_scopes: Your app is not allowed to request user authorization for "
            "`default identity` scopes.",
            ["default", "identity"],
        ),
        ("The scopes tasks:read, bogus:read are invalid", ["tasks:read", "bogus:read"]),
        ("", []),
    ],
)
def test_refused_scopes(description, expected):
    assert refused_scopes(description) == expected


def test_help_says_what_scopes_are_for(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for scope in DEFAULT_SCOPES:
        assert scope in out
    assert "sections, project_memberships, status_updates" in out
    assert "--sections-scope" in out
    assert "goals.time_period" in out


def test_full_access_writes_default_scope(fake, tmp_path, capsys):
    env_file = tmp_path / ".env"
    args = cli_args(fake, env_file, "--client-secret", CLIENT_SECRET, "--full-access")
    assert main(args, open_url=Browser()) == 0, capsys.readouterr().err
    assert read_env_file(env_file)[ENV_OAUTH_SCOPES] == "default"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own a file as another user")
def test_root_refuses_a_users_env_file_before_authorizing(fake, tmp_path, capsys):
    env_file = tmp_path / ".env"
    env_file.write_text("OTHER=1\n")
    os.chown(env_file, 65534, 65534)
    link = tmp_path / "link.env"
    link.symlink_to(env_file)
    rc = main(cli_args(fake, link, "--client-secret", CLIENT_SECRET), open_url=Browser())
    assert rc == 2
    assert "belongs to another user" in capsys.readouterr().err
    assert fake.authorize_requests == []
    with pytest.raises(PermissionError):
        update_env_file(env_file, {ENV_REFRESH_TOKEN: "secret-value"})
    assert env_file.read_text() == "OTHER=1\n"
    assert env_file.stat().st_uid == 65534


@pytest.mark.parametrize(
    "pasted",
    [
        "http://localhost:8080/callb",  # cut off before the query
        "localhost:8080/callback",
        "https://app.asana.com/-/oauth_authorize",
        "the code is 1/2:3",
        "\x1b[A",
    ],
)
def test_headless_never_sends_a_malformed_paste(fake, tmp_path, capsys, monkeypatch, pasted):
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{pasted}\n" * 3))
    args = cli_args(fake, tmp_path / ".env", "--headless", "--client-secret", CLIENT_SECRET)
    args = args[: args.index("--redirect-uri")] + args[args.index("--redirect-uri") + 2 :]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 1
    assert "not a URL or code" in err
    assert err.count("Paste it again") == 2
    assert fake.token_requests == []
    assert not (tmp_path / ".env").exists()


def test_headless_asks_again_after_a_malformed_paste(fake, tmp_path, capsys, monkeypatch):
    class PasteTwice(io.StringIO):
        """The user pastes a cut-off URL first, then the whole one."""

        pastes = 0

        def readline(self, *args):
            self.pastes += 1
            if self.pastes == 1:
                return "http://localhost:8080/callb\n"
            err = capsys.readouterr().err
            assert "not a URL or code" in err
            url = next(line.strip() for line in err.splitlines() if "/-/oauth_authorize?" in line)
            return requests.get(url, allow_redirects=False, timeout=10).headers["Location"] + "\n"

    monkeypatch.setattr(sys, "stdin", PasteTwice())
    args = cli_args(fake, tmp_path / ".env", "--headless", "--client-secret", CLIENT_SECRET)
    args = args[: args.index("--redirect-uri")] + args[args.index("--redirect-uri") + 2 :]
    assert main(args) == 0
    assert len(fake.token_requests) == 1
    assert refresh_works(fake, read_env_file(tmp_path / ".env")[ENV_REFRESH_TOKEN])


# ------------------------------------------- a personal access token in the same .env

PAT = "2/1209999000000002/1209999000000003:0123456789abcdef"
ENV_WITH_PAT = f"# personal token\n{ENV_ACCESS_TOKEN}={PAT}\nTAP_ASANA_VL_START_DATE=2024-01-01\n"
BOTH_MODES = "keep only one authentication mode"


class Terminal(io.StringIO):
    """stdin as an interactive terminal, with the user's answers already typed."""

    def isatty(self):
        return True


def tap_config_errors(env_file: Path) -> list[str]:
    """What ``tap-asana-vl --config ENV`` says of the settings this .env gives it."""
    config = {
        name.removeprefix("TAP_ASANA_VL_").lower(): value
        for name, value in dotenv.dotenv_values(env_file).items()
        if name.startswith("TAP_ASANA_VL_") and value
    }
    return config_errors(config)


def run_with_pat(fake, tmp_path, *extra):
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_WITH_PAT)
    args = cli_args(fake, env_file, "--client-secret", CLIENT_SECRET, "--save-client", *extra)
    return env_file, main(args, open_url=Browser())


def test_pat_without_a_terminal_is_kept_with_a_one_line_warning(fake, tmp_path, capsys):
    env_file, rc = run_with_pat(fake, tmp_path)

    out, err = capsys.readouterr()
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if BOTH_MODES in line]
    assert len(warnings) == 1
    assert "--comment-out-pat" in warnings[0]
    assert ENV_ACCESS_TOKEN in warnings[0]
    assert "[Y/n]" not in err  # nobody to ask
    assert read_env_file(env_file)[ENV_ACCESS_TOKEN] == PAT
    assert_no_secrets(out + err, PAT, CLIENT_SECRET)
    # As the warning says: the tap would refuse this .env.
    assert any(BOTH_MODES in error for error in tap_config_errors(env_file))


def test_comment_out_pat_flag_comments_it_out_in_place(fake, tmp_path, capsys):
    env_file, rc = run_with_pat(fake, tmp_path, "--comment-out-pat")

    out, err = capsys.readouterr()
    assert rc == 0, err
    text = env_file.read_text()
    assert text.startswith(f"# personal token\n# {ENV_ACCESS_TOKEN}={PAT}\n")
    assert ENV_ACCESS_TOKEN not in read_env_file(env_file)
    assert mode_of(env_file) == 0o600
    assert f"Commented out {ENV_ACCESS_TOKEN} in {env_file}" in err
    assert BOTH_MODES not in err
    assert_no_secrets(out + err, PAT, CLIENT_SECRET)
    assert tap_config_errors(env_file) == []  # OAuth alone: the tap runs


@pytest.mark.parametrize(
    ("answer", "commented"),
    [("\n", True), ("y\n", True), ("n\n", False), ("", False)],  # "": Ctrl-D, no answer
)
def test_on_a_terminal_the_command_asks_before_authorizing(
    fake, tmp_path, capsys, monkeypatch, answer, commented
):
    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    env_file, rc = run_with_pat(fake, tmp_path)

    out, err = capsys.readouterr()
    assert rc == 0, err
    assert err.count("[Y/n]") == 1
    assert err.index("[Y/n]") < err.index("oauth_authorize?")  # asked before the browser
    assert (ENV_ACCESS_TOKEN in read_env_file(env_file)) is not commented
    assert (f"# {ENV_ACCESS_TOKEN}={PAT}\n" in env_file.read_text()) is commented
    assert ("--comment-out-pat" in err) is not commented  # the warning, after a "no"
    assert_no_secrets(out + err, PAT, CLIENT_SECRET)
    errors = tap_config_errors(env_file)
    assert errors == [] if commented else any(BOTH_MODES in error for error in errors)


def test_no_question_without_a_pat(fake, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", Terminal(""))
    env_file = tmp_path / ".env"
    args = cli_args(fake, env_file, "--client-secret", CLIENT_SECRET, "--save-client")
    assert main(args, open_url=Browser()) == 0
    err = capsys.readouterr().err
    assert "[Y/n]" not in err
    assert BOTH_MODES not in err
    assert tap_config_errors(env_file) == []
