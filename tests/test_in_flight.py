"""Requests in flight: Little's law on the measured latency, within bounds (concurrency.py)."""

from __future__ import annotations

import logging
import math
import threading
import time

import pytest
import requests
from singer_sdk.exceptions import RetriableAPIError

from tap_asana_vl.concurrency import (
    ASANA_MAX_CONCURRENT_READS,
    CONGESTION_HOLD_SECONDS,
    InFlightLimit,
)
from tap_asana_vl.errors import RateLimitedError
from tap_asana_vl.rate_limit import RateLimiter
from tap_asana_vl.run_control import RunControl, StoppedError
from tap_asana_vl.settings import DEFAULT_MAX_CONCURRENT_REQUESTS
from tap_asana_vl.transport import RequestStats, Transport
from tests.fake_asana import FakeAsana, build_dataset
from tests.tap_runner import run_tap

PAID_QUOTA = 1500.0  # requests per minute: 25 per second
OLD_FIXED_IN_FLIGHT = 10  # the tap's fixed worker count before the limit adapted


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limit(latency: float, *, rate: float = PAID_QUOTA, ceiling: int = 50) -> InFlightLimit:
    limit = InFlightLimit(ceiling, lambda: rate, clock=Clock())
    for _ in range(50):
        limit.observe(latency)
    return limit


@pytest.mark.parametrize("latency", [0.1, 0.4, 0.5, 1.0])
def test_the_limit_covers_rate_times_latency_with_headroom(latency):
    limit = _limit(latency).limit()
    needed = PAID_QUOTA / 60 * latency  # Little's law: requests in flight at the quota
    assert needed * 1.25 <= limit <= needed * 2 + 3


def test_at_500_ms_more_than_the_old_fixed_ten_are_allowed_at_100_ms_far_fewer():
    assert _limit(0.5).limit() > OLD_FIXED_IN_FLIGHT
    assert _limit(0.1).limit() < OLD_FIXED_IN_FLIGHT


def test_never_above_asanas_50_nor_the_setting_and_never_below_one():
    assert _limit(10.0).limit() == ASANA_MAX_CONCURRENT_READS
    assert _limit(10.0, ceiling=500).limit() == ASANA_MAX_CONCURRENT_READS
    assert _limit(10.0, ceiling=7).limit() == 7
    assert _limit(10.0, ceiling=1).limit() == 1
    assert _limit(0.0, rate=0.0).limit() >= 1


def test_the_limit_follows_the_pacers_current_rate():
    rate = [PAID_QUOTA]
    limit = InFlightLimit(50, lambda: rate[0], clock=Clock())
    limit.observe(1.0)
    full = limit.limit()
    rate[0] = PAID_QUOTA / 4  # the pacer slowed down after 429s
    assert limit.limit() < full / 2


def test_the_limit_shrinks_again_when_latency_drops():
    limit = _limit(1.0)
    high = limit.limit()
    for _ in range(30):
        limit.observe(0.1)
    assert limit.limit() == _limit(0.1).limit() < high / 4


def test_one_slow_answer_does_not_swing_the_limit():
    limit = _limit(0.1)
    before = limit.limit()
    limit.observe(5.0)
    assert limit.limit() < before * 4


def test_a_429_or_failure_halves_the_limit_once_for_a_while():
    clock = Clock()
    limit = InFlightLimit(50, lambda: PAID_QUOTA, clock=clock)
    for _ in range(50):
        limit.observe(1.0)
    full = limit.limit()
    limit.congested()
    assert limit.limit() == full // 2
    limit.congested()  # the same burst, heard from another request in flight
    assert limit.limit() == full // 2
    clock.now += CONGESTION_HOLD_SECONDS  # the hold is over: growing back
    assert full // 2 <= limit.limit() < full
    clock.now += CONGESTION_HOLD_SECONDS
    assert limit.limit() == full
    # Congestion again as soon as each hold ends shrinks it further, down to one.
    for _ in range(10):
        limit.congested()
        clock.now += CONGESTION_HOLD_SECONDS
    assert limit.limit() == 1


def test_slots_beyond_the_limit_wait_until_one_is_free_or_the_run_stops():
    limit = _limit(0.0, ceiling=2)  # rate * 0 s + spare: the ceiling, 2
    assert limit.limit() == 2
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with limit.slot(check=lambda: None):
            entered.set()
            release.wait(5)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for holder in holders:
        holder.start()
    entered.wait(5)
    time.sleep(0.05)
    assert limit.in_flight == 2

    third_in = threading.Event()

    def third() -> None:
        with limit.slot(check=lambda: None):
            third_in.set()

    waiter = threading.Thread(target=third)
    waiter.start()
    assert not third_in.wait(0.3), "a third request went out beyond the limit of 2"
    release.set()
    assert third_in.wait(5)
    for thread in [*holders, waiter]:
        thread.join(5)
    assert limit.peak == 2
    assert limit.in_flight == 0

    # A waiter gives up when told to (the run stops): it never holds a slot.
    with limit.slot(check=lambda: None), limit.slot(check=lambda: None):
        stopping = RunControl(60)
        stopping.stopping.set()
        with pytest.raises(StoppedError), limit.slot(check=lambda: stopping.pause(0)):
            pass
    assert limit.in_flight == 0


# --- The transport tells the limit what it learns ---------------------------------------


def _transport(limit: InFlightLimit) -> Transport:
    class NoAuth:
        def reject(self, token: str) -> bool:
            return False

        def accept(self, token: str) -> None:
            pass

    return Transport(
        url_base="http://127.0.0.1:9/api/1.0",
        authenticator=NoAuth(),  # type: ignore[arg-type]
        rate_limiter=RateLimiter(1_000_000),
        in_flight=limit,
        run_control=RunControl(60),
        max_retries=3,
        timeout=5,
        pool_size=2,
    )


def _scripted(answers: list[Exception | None], in_flight_seen: list[int], limit: InFlightLimit):
    """A request function answering from ``answers`` (None: success) after 50 ms."""

    def send(prepared: object, context: object) -> requests.Response:
        in_flight_seen.append(limit.in_flight)
        time.sleep(0.05)
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return requests.Response()

    return send


def _send(transport: Transport, send) -> None:
    transport.send(
        send,
        requests.Request("GET", "http://x").prepare(),
        None,
        label="/tasks",
        stats=RequestStats(),
        logger=logging.getLogger("test"),
    )


def test_the_transport_reports_latency_and_congestion():
    clock = Clock()
    limit = InFlightLimit(50, lambda: PAID_QUOTA, clock=clock)
    transport = _transport(limit)
    transport.rate_limiter.rate_limited = lambda seconds: None  # type: ignore[method-assign]
    in_flight_seen: list[int] = []

    before = limit.limit()
    _send(transport, _scripted([RateLimitedError(0.0), None], in_flight_seen, limit))
    assert in_flight_seen == [1, 1]  # each attempt held a slot while it was sent
    assert limit.in_flight == 0
    assert limit.latency == pytest.approx(0.05, abs=0.04)  # the answer's, not the 429's
    assert limit.limit() < before  # halved after the 429 (on the new latency's target)

    clock.now += CONGESTION_HOLD_SECONDS
    for _ in range(20):
        limit.observe(1.0)
    before = limit.limit()
    _send(transport, _scripted([RetriableAPIError("503"), None], in_flight_seen, limit))
    assert limit.limit() <= before // 2 + 1  # halved after the 503


# --- Against the fake ---------------------------------------------------------------------


def _peak_in_flight(latency: float, requests_per_minute: int) -> tuple[int, int]:
    dataset = build_dataset(
        workspaces=1, projects_per_workspace=1, tasks_per_project=100, stories_per_task=1
    )
    with FakeAsana(dataset, latency=latency) as fake:
        config = {
            "access_token": fake.pat,
            "api_url": fake.api_url,
            "max_requests_per_minute": requests_per_minute,
        }
        result = run_tap(config)
        assert any(m["type"] == "RECORD" and m["stream"] == "stories" for m in result.messages)
        return fake.peak_in_flight, len(fake.requests)


def test_in_flight_rises_with_latency_above_the_old_fixed_value():
    """At 300 ms and 50 requests/s, Little's law needs 15 in flight: more than the old 10."""
    rate = 3000
    assert DEFAULT_MAX_CONCURRENT_REQUESTS > OLD_FIXED_IN_FLIGHT + 1
    peak, _ = _peak_in_flight(0.3, rate)
    needed = rate / 60 * 0.3
    # Old: 10 workers and the main thread, whatever the latency.
    assert peak > OLD_FIXED_IN_FLIGHT + 1
    assert peak >= needed
    assert peak <= math.ceil(needed * 1.5) + 2 + 1  # the limit (+1: the limit's own lag)


def test_waiters_get_slots_in_order_the_main_threads_listing_first():
    """Fetches started a batch ahead must not overtake the current batch's; the page
    that feeds the workers (``first``) must not wait behind them."""
    limit = _limit(0.0, ceiling=1)
    order: list[str] = []
    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with limit.slot(check=lambda: None):
            holding.set()
            release.wait(5)

    def wait_for_slot(name: str, *, first: bool = False) -> None:
        with limit.slot(check=lambda: None, first=first):
            order.append(name)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    waiters = []
    for name, first in [("story 1", False), ("story 2", False), ("story 3", False), ("page", True)]:
        waiters.append(
            threading.Thread(target=wait_for_slot, args=(name,), kwargs={"first": first})
        )
        waiters[-1].start()
        time.sleep(0.05)  # queued in this order
    release.set()
    for thread in [holder, *waiters]:
        thread.join(5)
    assert order == ["page", "story 1", "story 2", "story 3"]
    assert limit.peak == 1
