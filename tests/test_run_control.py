"""The run stops promptly and clearly: an outage, a signal, a fatal error."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import tap_asana_vl.transport
from tap_asana_vl.run_control import FIRST_SUCCESS_WITHIN_SECONDS, OutageError, RunControl
from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import FAST, run_cli, run_tap


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_trips_sooner_before_any_success_then_after_max_outage():
    clock = Clock()
    control = RunControl(120, clock=clock)
    clock.now += FIRST_SUCCESS_WITHIN_SECONDS - 1
    control.failed("ConnectionError")  # still within the first-success bound
    clock.now += 2
    with pytest.raises(OutageError, match="has succeeded yet"):
        control.failed("ConnectionError")
    assert control.stopping.is_set()

    clock = Clock()
    control = RunControl(120, clock=clock)
    control.succeeded()
    clock.now += 100
    control.failed("503")  # 100 s without success: within max_outage_seconds
    clock.now += 21
    with pytest.raises(OutageError, match=r"since the last success \(121s; last error: 503\)"):
        control.failed("503")
    # Every later request fails with the same cause, without waiting.
    with pytest.raises(OutageError):
        control.pause(60)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_cli(tmp_path, config: dict) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = run_cli(tmp_path, config)
    return proc, time.monotonic() - started


def test_an_api_url_nothing_answers_fails_within_a_minute(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/api/1.0"
    proc, elapsed = _run_cli(tmp_path, {"access_token": "fake-pat-x", "api_url": url})
    assert proc.returncode != 0
    assert "No request to Asana has succeeded yet" in proc.stderr
    assert elapsed < 60


def test_asana_going_down_mid_run_stops_everything_after_max_outage(monkeypatch):
    """Every concurrent request retrying on its own would go on for many minutes."""
    monkeypatch.setattr(tap_asana_vl.transport, "backoff_seconds", lambda failures: 0.2)
    with FakeAsana(build_dataset(seed=5, tasks_per_project=25)) as fake:
        fake.inject(r"/api/1\.0/tasks/\d+/stories", 503, times=None)
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        started = time.monotonic()
        with pytest.raises(OutageError, match="has succeeded since the last success"):
            run_tap({**config, "max_outage_seconds": 2, "max_retries": 1000})
        assert time.monotonic() - started < 15


def test_sigterm_stops_the_run_promptly_and_non_zero(tmp_path):
    """Without it the tap said 'Gracefully shutting down', exited 0... after 40+ s."""
    with FakeAsana(build_dataset(seed=5, tasks_per_project=25)) as fake:
        # Stories keep failing: the run sits in retries when the signal comes.
        fake.inject(r"/api/1\.0/tasks/\d+/stories", 503, times=None)
        path = tmp_path / "config.json"
        path.write_text(json.dumps({"access_token": fake.pat, "api_url": fake.api_url, **FAST}))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tap_asana_vl", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not any("/stories" in r.path for r in fake.requests):
            assert time.monotonic() < deadline, "the run never reached the stories"
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        elapsed = time.monotonic() - sent
    assert proc.returncode not in (0, None)
    assert "Stopping on SIGTERM" in stderr
    assert elapsed < 10


def test_a_fatal_error_does_not_wait_for_a_stuck_request(tmp_path):
    """An in-flight request may be stuck for request_timeout: the process exits anyway."""
    with FakeAsana(build_dataset(seed=5, tasks_per_project=25)) as fake:
        tasks = list(fake.dataset.tasks)
        fake.inject(rf"/api/1\.0/tasks/{tasks[5]}/stories", 200, delay=60, times=None)
        fake.inject(rf"/api/1\.0/tasks/{tasks[3]}/stories", 400, times=None)
        config = {"access_token": fake.pat, "api_url": fake.api_url, **FAST}
        proc, elapsed = _run_cli(tmp_path, {**config, "request_timeout": 120})
    assert proc.returncode != 0
    assert f"/tasks/{tasks[3]}/stories" in proc.stderr
    assert elapsed < 20


class _TricklingServer:
    """Answers every request with headers at once, then its JSON body a byte at a time."""

    def __init__(self, body: bytes, byte_every: float) -> None:
        self.body = body
        self.byte_every = byte_every
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/api/1.0"
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(self.body)}\r\n\r\n"
                )
                conn.sendall(head.encode())
                for byte in self.body:
                    if self.done.wait(self.byte_every):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return


def test_request_timeout_bounds_the_whole_response_not_each_read():
    """A body trickling 1 byte per 0.2 s: each read is quick, the response never ends."""
    body = json.dumps({"data": [{"gid": "1", "name": "Slow workspace"}], "next_page": None})
    with _TricklingServer(body.encode(), byte_every=0.2) as server:
        config = {"access_token": "fake-pat-x", "api_url": server.url, **FAST}
        started = time.monotonic()
        with pytest.raises(Exception, match=r"Giving up on /workspaces after 1 attempts"):
            run_tap({**config, "request_timeout": 2, "max_retries": 0})
        elapsed = time.monotonic() - started
    # The body alone takes ~15 s; the timeout must cut it at ~2 s.
    assert elapsed < 6
