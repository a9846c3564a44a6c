"""scripts/check_postgres.py: one line saying what is wrong with the loader's database.

scripts/run.sh pipes it target-postgres's configuration (as Meltano dumps it) before
extracting anything; here it gets the same JSON for throw-away servers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.postgres_server import (
    PASSWORD,
    PostgresServer,
    PostgresUnavailableError,
    running_postgres,
)
from tests.test_e2e_meltano import _unavailable

REPO = Path(__file__).resolve().parent.parent
CHECKER = REPO / "scripts" / "check_postgres.py"


@pytest.fixture(scope="module")
def trusting() -> Iterator[PostgresServer]:
    """A server that lets any loopback client in without a password."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailableError as exc:
        _unavailable(str(exc))


@pytest.fixture(scope="module")
def with_password() -> Iterator[PostgresServer]:
    """A server that asks for PASSWORD."""
    try:
        with running_postgres(password_auth=True) as server:
            yield server
    except PostgresUnavailableError as exc:
        _unavailable(str(exc))


def _config(server: PostgresServer, **changes: Any) -> dict[str, Any]:
    """target-postgres's settings as `meltano invoke --dump=config` prints them."""
    config = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": "",
        "database": server.database,
        "default_target_schema": "asana",
        "load_method": "upsert",
        "add_record_metadata": True,
    }
    config.update(changes)
    return config


def _check(config: dict[str, Any], *args: str) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [sys.executable, str(CHECKER), *args],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout == ""
    return proc.returncode, proc.stderr.splitlines()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_good_settings_pass_silently_and_an_empty_password_works_with_trust(
    trusting: PostgresServer,
) -> None:
    assert _check(_config(trusting)) == (0, [])


def test_the_right_password_passes(with_password: PostgresServer) -> None:
    assert _check(_config(with_password, password=PASSWORD)) == (0, [])


def test_connection_refused(trusting: PostgresServer) -> None:
    port = _closed_port()
    code, lines = _check(_config(trusting, port=port))
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(f"PostgreSQL check failed: 127.0.0.1:{port} refused the connection")
    assert "TARGET_POSTGRES_HOST / TARGET_POSTGRES_PORT" in lines[0]

    # For the embedded server, the fix is to start it.
    code, lines = _check(_config(trusting, port=port), "--embedded")
    assert code == 1
    assert len(lines) == 1
    assert f"the embedded server 127.0.0.1:{port} refused" in lines[0]
    assert lines[0].endswith("bash scripts/postgres.sh start.")


def test_unknown_host(trusting: PostgresServer) -> None:
    code, lines = _check(_config(trusting, host="no-such-host.invalid"))
    assert code == 1
    assert lines == [
        "PostgreSQL check failed: host 'no-such-host.invalid' is unknown: fix "
        "TARGET_POSTGRES_HOST in .env or the environment."
    ]


@pytest.mark.parametrize("password", ["wrong-password", ""])
def test_authentication_failed(with_password: PostgresServer, password: str) -> None:
    code, lines = _check(_config(with_password, password=password))
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(
        f"PostgreSQL check failed: 127.0.0.1:{with_password.port} refused the login of role "
        f"'{with_password.user}' (authentication failed): fix TARGET_POSTGRES_PASSWORD"
    )
    assert "wrong-password" not in lines[0]


def test_database_missing(trusting: PostgresServer) -> None:
    code, lines = _check(_config(trusting, database="nowhere"))
    assert code == 1
    assert lines == [
        f"PostgreSQL check failed: database 'nowhere' does not exist on "
        f"127.0.0.1:{trusting.port}: create it (createdb -h 127.0.0.1 -p {trusting.port} "
        f"-O {trusting.user} nowhere) or fix TARGET_POSTGRES_DATABASE in .env or the "
        "environment."
    ]


def test_role_missing(trusting: PostgresServer) -> None:
    code, lines = _check(_config(trusting, user="ghost"))
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(
        f"PostgreSQL check failed: role 'ghost' does not exist on 127.0.0.1:{trusting.port}"
    )
    assert "TARGET_POSTGRES_USER" in lines[0]


def test_a_setting_the_target_needs_is_missing(trusting: PostgresServer) -> None:
    config = _config(trusting)
    del config["password"]
    code, lines = _check(config)
    assert code == 1
    assert lines == [
        "PostgreSQL check failed: TARGET_POSTGRES_PASSWORD is not set (empty is fine with "
        "trust authentication): set it in .env or the environment."
    ]


def test_a_role_that_may_not_create_the_schema(trusting: PostgresServer) -> None:
    with psycopg.connect(trusting.dsn, autocommit=True) as conn:
        conn.execute("drop role if exists reader")
        conn.execute("create role reader login")
    code, lines = _check(_config(trusting, user="reader"))
    assert code == 1
    assert lines == [
        f"PostgreSQL check failed: role 'reader' may not create schema 'asana' in database "
        f"'{trusting.database}': GRANT CREATE ON DATABASE {trusting.database} TO reader (or "
        "create the schema for it), or set TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA in .env or "
        "the environment."
    ]


def test_sqlalchemy_url_is_used_and_its_password_never_shown(
    with_password: PostgresServer,
) -> None:
    base = f"postgresql+psycopg://{with_password.user}:{{}}@127.0.0.1:{with_password.port}"
    good = {"sqlalchemy_url": base.format(PASSWORD) + f"/{with_password.database}"}
    assert _check(good) == (0, [])

    bad = {"sqlalchemy_url": base.format("s3cret-in-url") + f"/{with_password.database}"}
    code, lines = _check(bad)
    assert code == 1
    assert len(lines) == 1
    assert "authentication failed" in lines[0]
    assert "s3cret-in-url" not in lines[0]
