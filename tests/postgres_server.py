"""A throw-away PostgreSQL server for the end-to-end tests.

Started from the Debian packages' binaries on a free loopback port, in a temporary
directory, and stopped afterwards. It trusts loopback connections (any password works),
or with ``password_auth`` requires ``PASSWORD``. PostgreSQL refuses to run as root, so
when the tests run as root (as CI does) the server runs as the ``postgres`` system user
that the Debian package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

USER = "asana_e2e"
PASSWORD = "e2e-password"  # required only by a server started with password_auth
DATABASE = "warehouse"
SERVER_TIMEZONE = "America/New_York"


class PostgresUnavailableError(Exception):
    """No PostgreSQL server binaries on this machine."""


@dataclass(frozen=True)
class PostgresServer:
    """Connection settings of a running server."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def dsn(self) -> str:
        """A libpq connection string."""
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={self.database}"
        )


def find_bindir() -> Path:
    """Directory holding initdb/pg_ctl (newest Debian version first, then PATH)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
        reverse=True,
    )
    if candidates:
        return Path(candidates[0]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    msg = (
        "PostgreSQL server binaries (initdb) not found. Install them with "
        "`apt-get install postgresql` (scripts/test.sh does this when run as root)."
    )
    raise PostgresUnavailableError(msg)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_postgres(*, password_auth: bool = False) -> Iterator[PostgresServer]:
    """Start a fresh server with a database and role for the test; stop it after.

    With ``password_auth``, TCP connections must give ``PASSWORD`` (scram-sha-256).
    """
    bindir = find_bindir()
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            msg = "Running as root but there is no 'postgres' user to run the server as."
            raise PostgresUnavailableError(msg) from exc
        run_as = "postgres"

    root = Path(tempfile.mkdtemp(prefix="tap-asana-vl-pg-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    if run_as:
        entry = pwd.getpwnam(run_as)
        for path in (root, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def run(*args: str) -> None:
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        subprocess.run(args, check=True, capture_output=True, text=True, user=run_as, env=env)

    auth = ["--auth=trust"]
    if password_auth:
        password_file = root / "password"
        password_file.write_text(PASSWORD + "\n")
        if run_as:
            os.chown(password_file, pwd.getpwnam(run_as).pw_uid, -1)
        auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}"]
    port = _free_port()
    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            *auth,
            "--encoding=UTF8",
            "--no-sync",
        )
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            # A non-UTC server time zone, like many real warehouses: loaded timestamps
            # must still be the UTC instants Asana reports.
            "-o",
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c timezone={SERVER_TIMEZONE}",
            "start",
        )
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr or ""
        if log.exists():
            detail += log.read_text(errors="replace")
        shutil.rmtree(root, ignore_errors=True)
        msg = f"Could not start PostgreSQL: {detail.strip()[-2000:]}"
        raise RuntimeError(msg) from exc
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE)
        yield PostgresServer("127.0.0.1", port, USER, PASSWORD, DATABASE)
    finally:
        subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
            user=run_as,
        )
        shutil.rmtree(root, ignore_errors=True)
