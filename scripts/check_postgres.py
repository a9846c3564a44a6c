"""Check that target-postgres can reach its database before a run extracts anything.

Reads the loader's configuration as JSON on stdin, exactly what Meltano passes it
(``meltano invoke --dump=config target-postgres``), connects as target-postgres 0.8.1
would, and on failure prints ONE line saying what is wrong and how to fix it, then exits
with status 1. Needs psycopg 3: run it with target-postgres's own Python
(``.meltano/loaders/target-postgres/venv/bin/python``) or the project's.

    scripts/meltano invoke --dump=config target-postgres | python scripts/check_postgres.py
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

CONNECT_TIMEOUT_SECONDS = 10
SETTINGS_HINT = "in .env or the environment"


class CheckFailedError(Exception):
    """The loader could not work with these settings; the message says why and what to do."""


def _connect_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """Connection parameters for libpq, equivalent to the URL target-postgres builds."""
    if config.get("sqlalchemy_url"):
        # `postgresql+psycopg://…` is SQLAlchemy's; libpq reads the same URL without the driver.
        url = re.sub(r"^[a-z]+(\+[a-z0-9_]+)?://", "postgresql://", config["sqlalchemy_url"])
        return {"conninfo": url}
    # target-postgres 0.8.1 reads these keys unconditionally: a missing one is a KeyError.
    for key in ("host", "port", "user", "password", "database"):
        if key not in config or config[key] is None:
            env = f"TARGET_POSTGRES_{key.upper()}"
            hint = " (empty is fine with trust authentication)" if key == "password" else ""
            msg = f"{env} is not set{hint}: set it {SETTINGS_HINT}."
            raise CheckFailedError(msg)
    kwargs: dict[str, Any] = {
        "host": config["host"],
        "port": config["port"],
        "user": config["user"],
        "password": config["password"],
        "dbname": config["database"],
    }
    if config.get("ssl_enable"):
        kwargs["sslmode"] = config.get("ssl_mode") or "verify-full"
    return kwargs


def _explain(error: psycopg.Error, kwargs: dict[str, Any], *, embedded: bool) -> str:
    """One line: what went wrong connecting, and how to fix it (never the password)."""
    text = str(error)
    params = conninfo_to_dict(**kwargs)
    host, port = params.get("host") or "localhost", params.get("port") or 5432
    user, database = params.get("user"), params.get("dbname")
    server = f"{host}:{port}"
    if embedded:
        server = f"the embedded server {server}"
        start_it = "bash scripts/postgres.sh start"
    else:
        start_it = (
            f"start it, or fix TARGET_POSTGRES_HOST / TARGET_POSTGRES_PORT {SETTINGS_HINT} "
            "(without TARGET_POSTGRES_HOST, scripts/run.sh uses its embedded server)"
        )
    if "Connection refused" in text:
        return f"{server} refused the connection (is PostgreSQL running there?): {start_it}."
    if re.search(r"failed to resolve host|could not translate host name", text):
        return f"host {host!r} is unknown: fix TARGET_POSTGRES_HOST {SETTINGS_HINT}."
    if re.search(r"authentication failed|no password supplied", text):
        return (
            f"{server} refused the login of role {user!r} (authentication failed): fix "
            f"TARGET_POSTGRES_PASSWORD (or TARGET_POSTGRES_USER) {SETTINGS_HINT}."
        )
    if match := re.search(r'database "([^"]*)" does not exist', text):
        return (
            f"database {match.group(1)!r} does not exist on {server}: create it "
            f"(createdb -h {host} -p {port} -O {user} {match.group(1)}) or fix "
            f"TARGET_POSTGRES_DATABASE {SETTINGS_HINT}."
        )
    if match := re.search(r'role "([^"]*)" does not exist', text):
        return (
            f"role {match.group(1)!r} does not exist on {server}: create it "
            f"(createuser -h {host} -p {port} {match.group(1)}, owner of database "
            f"{database!r}) or fix TARGET_POSTGRES_USER {SETTINGS_HINT}."
        )
    if "no pg_hba.conf entry" in text:
        return (
            f"{server} does not accept role {user!r} for database {database!r} from this "
            "machine (no pg_hba.conf entry): allow it in the server's pg_hba.conf, or enable "
            f"SSL if the server requires it (TARGET_POSTGRES_SSL_ENABLE) {SETTINGS_HINT}."
        )
    if "timeout expired" in text:
        return (
            f"{server} did not answer within {CONNECT_TIMEOUT_SECONDS} s (a firewall, or a "
            f"wrong host?): {start_it}."
        )
    # Anything else: the driver's own words, on one line.
    detail = " ".join(text.replace("connection failed:", "").split())
    return f"cannot use {server} as role {user!r}, database {database!r}: {detail}."


def _check_schema_privilege(conn: psycopg.Connection, config: dict[str, Any]) -> None:
    """The loader creates its schema (or tables in it): fail now if it may not."""
    schema = config.get("default_target_schema")
    if not schema:
        return
    row = conn.execute(
        "select case when n.oid is null then has_database_privilege(current_database(), 'CREATE') "
        "else has_schema_privilege(n.oid, 'CREATE') end, n.oid is not null, current_user, "
        "current_database() from (select 1) one left join pg_namespace n on n.nspname = %s",
        (schema,),
    ).fetchone()
    assert row is not None
    allowed, exists, user, database = row
    if allowed:
        return
    if exists:
        msg = (
            f"role {user!r} may not create tables in schema {schema!r}: "
            f"GRANT CREATE ON SCHEMA {schema} TO {user} (as the schema's owner), or set "
            f"TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA {SETTINGS_HINT}."
        )
    else:
        msg = (
            f"role {user!r} may not create schema {schema!r} in database {database!r}: "
            f"GRANT CREATE ON DATABASE {database} TO {user} (or create the schema for it), "
            f"or set TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA {SETTINGS_HINT}."
        )
    raise CheckFailedError(msg)


def check(config: dict[str, Any], *, embedded: bool = False) -> None:
    """Raise CheckFailedError, with a one-line message, if the loader cannot work."""
    if (config.get("ssh_tunnel") or {}).get("enable"):
        return  # the target opens the tunnel itself; a direct check would be wrong
    kwargs = _connect_kwargs(config)
    try:
        with psycopg.connect(connect_timeout=CONNECT_TIMEOUT_SECONDS, **kwargs) as conn:
            _check_schema_privilege(conn, config)
    except psycopg.Error as exc:
        raise CheckFailedError(_explain(exc, kwargs, embedded=embedded)) from exc


def main(argv: list[str] | None = None) -> int:
    """Read the loader config on stdin; print one line and return 1 if it cannot work."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--embedded", action="store_true", help="the settings are the embedded server's"
    )
    args = parser.parse_args(argv)
    try:
        config = json.load(sys.stdin)
    except json.JSONDecodeError as exc:
        print(f"PostgreSQL check: the loader configuration is not JSON ({exc}).", file=sys.stderr)
        return 2
    try:
        check(config, embedded=args.embedded)
    except CheckFailedError as exc:
        print(f"PostgreSQL check failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
