"""`bash scripts/run.sh` as a newcomer runs it, on a copy of this checkout.

With only an Asana token in .env it creates and starts the project's embedded
PostgreSQL server and loads into it; with TARGET_POSTGRES_* it uses that server instead.
The copy lives in a folder the `postgres` user can enter (as root the embedded server
runs as that user), and every server started here is stopped again.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fake_asana import FakeAsana, build_dataset
from tests.postgres_server import (
    PostgresServer,
    PostgresUnavailableError,
    find_bindir,
    running_postgres,
)
from tests.test_e2e_meltano import KEYS, _expected_counts, _unavailable, _uv

REPO = Path(__file__).resolve().parent.parent
PSQL_LINE = re.compile(
    r'^  psql: +\S*psql "(postgresql://asana@127\.0\.0\.1:(\d+)/warehouse)"$', re.M
)
IS_ROOT = os.geteuid() == 0


def _copy_checkout(dest: Path) -> None:
    """The files a clone would have (plus new ones not yet committed), nothing else."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        _unavailable(f"git could not list the checkout's files ({exc})")
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _traversable_tempdir() -> Path:
    # pytest's tmp_path is under a 0700 folder, which the `postgres` user cannot enter.
    path = Path(tempfile.mkdtemp(prefix="tap-asana-vl-run-", dir="/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def project() -> Iterator[Path]:
    """A copy of the checkout, as a newcomer has it (no .env, nothing installed)."""
    if _uv() is None:
        _unavailable("uv is not installed (it runs Meltano)")
    try:
        find_bindir()
    except PostgresUnavailableError as exc:
        _unavailable(str(exc))
    path = _traversable_tempdir()
    try:
        _copy_checkout(path)
        yield path
    finally:
        # Never leave a server running, whatever failed.
        subprocess.run(
            ["bash", "scripts/postgres.sh", "stop"], cwd=path, capture_output=True, check=False
        )
        shutil.rmtree(path, ignore_errors=True)


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TAP_ASANA_VL_", "TARGET_", "MELTANO_", "PG"))
    }
    uv = _uv() or "uv"
    env["PATH"] = os.pathsep.join([str(Path(uv).parent), env.get("PATH", "")])
    env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env.update(extra)
    return env


def _run(
    project: Path, *command: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd or project,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=1500,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _run_sh(project: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return _run(project, "bash", "scripts/run.sh", **env)


def _explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"


def _write_env(project: Path, fake: FakeAsana, *lines: str) -> Path:
    env_file = project / ".env"
    env_file.write_text(
        "\n".join(
            [
                f"TAP_ASANA_VL_ACCESS_TOKEN={fake.pat}",
                f"TAP_ASANA_VL_API_URL={fake.api_url}",
                "TAP_ASANA_VL_MAX_REQUESTS_PER_MINUTE=100000",
                *lines,
            ]
        )
        + "\n"
    )
    # As `cp .secrets.example .env` leaves it under the usual umask.
    env_file.chmod(0o644)
    return env_file


def _counts(url: str) -> dict[str, tuple[int, int]]:
    counts = {}
    with psycopg.connect(url) as conn:
        for stream, key in KEYS.items():
            sql = f"select count(*), count(distinct ({', '.join(key)})) from asana.{stream}"
            row = conn.execute(sql).fetchone()
            assert row is not None
            counts[stream] = (row[0], row[1])
    return counts


def _accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_embedded_server_by_default(project: Path) -> None:
    with FakeAsana(build_dataset(seed=31)) as fake:
        env_file = _write_env(project, fake)
        expected = {s: (n, n) for s, n in _expected_counts(fake.dataset).items()}

        # --- First run: installs, creates the server, loads, says how to connect.
        first = _run_sh(project)
        assert first.returncode == 0, _explain(first)
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert ".env was open to other users (mode 644)" in first.stdout
        assert "Installing Meltano 4.4.1 and the plugins" in first.stdout
        match = PSQL_LINE.search(first.stdout)
        assert match, first.stdout
        url, port = match.group(1), int(match.group(2))
        assert (project / ".postgres" / "port").read_text().strip() == str(port)
        assert "  server:  bash scripts/postgres.sh stop   (or start, status)" in first.stdout
        assert _counts(url) == expected
        if IS_ROOT:  # PostgreSQL refuses root: the server runs as the `postgres` user
            assert (project / ".postgres" / "data").stat().st_uid == pwd.getpwnam("postgres").pw_uid

        # --- Second run: nothing reinstalled, same server and port, no duplicates.
        second = _run_sh(project)
        assert second.returncode == 0, _explain(second)
        assert "Meltano plugins up to date" in second.stdout
        assert "Installing" not in second.stdout + second.stderr
        assert ".env was open" not in second.stdout
        again = PSQL_LINE.search(second.stdout)
        assert again, second.stdout
        assert again.group(1) == url
        assert _counts(url) == expected

        # --- The everyday commands get the embedded server's settings, from any
        # folder, and a stopped server is started for a command naming target-postgres.
        stopped = _run(project, "bash", "scripts/postgres.sh", "stop")
        assert stopped.stdout.startswith("Stopped the embedded PostgreSQL server"), stopped
        assert not _accepts_connections(port)
        listed = _run(
            project,
            str(project / "scripts" / "meltano"),
            "config",
            "list",
            "target-postgres",
            cwd=Path("/"),
        )
        assert listed.returncode == 0, _explain(listed)
        assert f"current value: {port} (from the TARGET_POSTGRES_PORT variable" in listed.stdout
        rerun = _run(
            project,
            str(project / "scripts" / "meltano"),
            "run",
            "--full-refresh",
            "tap-asana-vl",
            "target-postgres",
            cwd=Path("/"),
        )
        assert rerun.returncode == 0, _explain(rerun)
        assert _counts(url) == expected

        # --- Stop it; status says so.
        stopped = _run(project, "bash", "scripts/postgres.sh", "stop")
        assert stopped.returncode == 0, _explain(stopped)
        assert not _accepts_connections(port)
        status = _run(project, "bash", "scripts/postgres.sh", "status")
        assert status.returncode == 3
        assert "not running" in status.stdout


def test_a_configured_server_is_used_and_none_started(project: Path) -> None:
    try:
        with running_postgres() as server:
            _load_into_configured_server(project, server)
    except PostgresUnavailableError as exc:
        _unavailable(str(exc))


def _load_into_configured_server(project: Path, server: PostgresServer) -> None:
    with FakeAsana(build_dataset(seed=32)) as fake:
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        closed.close()
        _write_env(
            project,
            fake,
            f"TARGET_POSTGRES_HOST={server.host}",
            f"TARGET_POSTGRES_PORT={closed_port}",
            f"TARGET_POSTGRES_USER={server.user}",
            f"TARGET_POSTGRES_PASSWORD={server.password}",
            f"TARGET_POSTGRES_DATABASE={server.database}",
        )

        # A changed meltano.yml means new plugin definitions: installed again.
        with (project / "meltano.yml").open("a") as meltano_yml:
            meltano_yml.write("# changed\n")

        # --- A wrong port: one line, and nothing extracted.
        refused = _run_sh(project)
        assert refused.returncode == 1, _explain(refused)
        assert "Installing Meltano 4.4.1 and the plugins" in refused.stdout
        errors = [line for line in refused.stderr.splitlines() if "PostgreSQL" in line]
        assert errors == [
            f"PostgreSQL check failed: {server.host}:{closed_port} refused the connection "
            "(is PostgreSQL running there?): start it, or fix TARGET_POSTGRES_HOST / "
            "TARGET_POSTGRES_PORT in .env or the environment (without TARGET_POSTGRES_HOST, "
            "scripts/run.sh uses its embedded server)."
        ]
        assert "Traceback" not in refused.stderr
        assert fake.requests == []

        # --- The environment wins over .env (as in Meltano): the right port loads.
        loaded = _run_sh(project, TARGET_POSTGRES_PORT=str(server.port))
        assert loaded.returncode == 0, _explain(loaded)
        assert "Meltano plugins up to date" in loaded.stdout
        expected = {s: (n, n) for s, n in _expected_counts(fake.dataset).items()}
        assert _counts(server.dsn) == expected
        assert "Loading into your PostgreSQL server (TARGET_POSTGRES_* settings)." in loaded.stdout
        assert "Embedded PostgreSQL server running" not in loaded.stdout
        status = _run(project, "bash", "scripts/postgres.sh", "status")
        assert status.returncode == 3, _explain(status)


@pytest.mark.parametrize(
    ("line", "external"),
    [
        ("TARGET_POSTGRES_HOST=db.example", True),
        ('export TARGET_POSTGRES_HOST="db.example"', True),
        ("  TARGET_POSTGRES_SQLALCHEMY_URL = postgresql://u@db/x", True),
        ("TARGET_POSTGRES_HOST=", False),
        ("TARGET_POSTGRES_HOST=''", False),
        ("TARGET_POSTGRES_HOST=    # set it to use your own server", False),
        ("# TARGET_POSTGRES_HOST=localhost", False),
        ("TARGET_POSTGRES_HOSTNAME=db.example", False),
        ("TARGET_POSTGRES_PORT=5433", False),
    ],
)
def test_which_server_a_env_file_chooses(tmp_path: Path, line: str, *, external: bool) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "lib.sh", tmp_path / "scripts" / "lib.sh")
    (tmp_path / ".env").write_text(f"TAP_ASANA_VL_ACCESS_TOKEN=x\n{line}\n")
    script = "source scripts/lib.sh; external_postgres_configured && echo external || echo embedded"
    proc = _run(tmp_path, "bash", "-c", script)
    assert proc.stdout.strip() == ("external" if external else "embedded")

    # The environment decides too (Meltano prefers it to .env).
    proc = _run(tmp_path, "bash", "-c", script, TARGET_POSTGRES_HOST="db.example")
    assert proc.stdout.strip() == "external"


@pytest.mark.skipif(not IS_ROOT, reason="only root runs the server as another user")
def test_a_data_folder_the_server_user_cannot_reach_is_named() -> None:
    private = Path(tempfile.mkdtemp(prefix="tap-asana-vl-private-", dir="/tmp"))  # 0700
    try:
        checkout = private / "checkout"
        (checkout / "scripts").mkdir(parents=True)
        for name in ("lib.sh", "postgres.sh"):
            shutil.copy2(REPO / "scripts" / name, checkout / "scripts" / name)
        proc = _run(checkout, "bash", "scripts/postgres.sh", "start")
        assert proc.returncode == 1
        assert proc.stderr.splitlines() == [
            f"The embedded PostgreSQL server runs as the 'postgres' user, which cannot enter "
            f"{private} (mode 700, owner root): move this checkout under a folder it can reach "
            f"(e.g. /srv or /opt), or run `chmod o+x {private}`, or use your own server (set "
            "TARGET_POSTGRES_HOST in .env)."
        ]
        assert not (checkout / ".postgres" / "data").exists()
    finally:
        shutil.rmtree(private, ignore_errors=True)


@pytest.mark.skipif(not IS_ROOT, reason="needs another user's .env, made as root")
def test_a_shared_env_file_of_another_user_is_refused() -> None:
    checkout = _traversable_tempdir()
    try:
        (checkout / "scripts").mkdir()
        for name in ("lib.sh", "run.sh"):
            shutil.copy2(REPO / "scripts" / name, checkout / "scripts" / name)
        env_file = checkout / ".env"
        env_file.write_text("TAP_ASANA_VL_ACCESS_TOKEN=secret-of-root\n")
        env_file.chmod(0o644)
        proc = subprocess.run(
            ["runuser", "-u", "postgres", "--", "bash", "scripts/run.sh"],
            cwd=checkout,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 1
        assert proc.stderr.splitlines() == [
            ".env is open to other users (mode 644) and is not yours (owner: root): ask its "
            "owner to run `chmod 600 .env` (or make a .env of your own), then re-run."
        ]
        assert "secret-of-root" not in proc.stdout + proc.stderr
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o644
    finally:
        shutil.rmtree(checkout, ignore_errors=True)


def test_a_server_that_will_not_start_says_why_in_one_line() -> None:
    try:
        find_bindir()
    except PostgresUnavailableError as exc:
        _unavailable(str(exc))
    checkout = _traversable_tempdir()
    try:
        (checkout / "scripts").mkdir()
        for name in ("lib.sh", "postgres.sh"):
            shutil.copy2(REPO / "scripts" / name, checkout / "scripts" / name)
        started = _run(checkout, "bash", "scripts/postgres.sh", "start")
        assert started.returncode == 0, _explain(started)
        assert started.stdout.startswith("Creating the embedded PostgreSQL server in .postgres/")
        stopped = _run(checkout, "bash", "scripts/postgres.sh", "stop")
        assert stopped.returncode == 0, _explain(stopped)

        with (checkout / ".postgres" / "data" / "postgresql.conf").open("a") as conf:
            conf.write("shared_buffers = plenty\n")
        proc = _run(checkout, "bash", "scripts/postgres.sh", "start")
        assert proc.returncode == 1
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("The embedded PostgreSQL server did not start: ")
        assert 'invalid value for parameter "shared_buffers": "plenty"' in proc.stderr
        assert proc.stderr.rstrip().endswith("(see .postgres/server.log).")
    finally:
        _run(checkout, "bash", "scripts/postgres.sh", "stop")
        shutil.rmtree(checkout, ignore_errors=True)
