"""The shared request pacer, on a simulated clock."""

from __future__ import annotations

import bisect
import random

import pytest

from tap_asana_vl.rate_limit import (
    DECREASE_COOLDOWN_SECONDS,
    MIN_REQUESTS_PER_MINUTE,
    QUOTA_MARGIN,
    RECOVERY_PERIOD_SECONDS,
    RateLimiter,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _send(limiter: RateLimiter, clock: Clock, count: int) -> float:
    """Send `count` requests back to back, sleeping as told; return elapsed time."""
    start = clock.now
    for _ in range(count):
        clock.now += limiter.reserve()
    return clock.now - start


def test_requests_are_spaced_evenly_just_below_the_configured_rate():
    clock = Clock()
    limiter = RateLimiter(600, clock=clock)  # one request per 0.1 s, less the margin
    assert _send(limiter, clock, 601) == pytest.approx(60.0 / QUOTA_MARGIN)


def test_requests_at_full_demand_stay_within_a_sliding_minute_despite_jitter():
    # Asana counts requests as they arrive, over a sliding minute. Sent at exactly the
    # quota, up to 0.2 s of network jitter put 1,501 into one minute (a 429, and the
    # pace halved for minutes).
    clock = Clock()
    limiter = RateLimiter(1500, clock=clock)
    jitter = random.Random(3)
    arrivals = []
    for _ in range(6000):
        clock.now += limiter.reserve()
        arrivals.append(clock.now + jitter.uniform(0.0, 0.2))
    arrivals.sort()
    most_in_a_minute = max(
        bisect.bisect_left(arrivals, start + 60.0) - index for index, start in enumerate(arrivals)
    )
    assert most_in_a_minute <= 1500
    assert most_in_a_minute >= 1500 * QUOTA_MARGIN - 2  # and not far below it


def test_a_429_pauses_everyone_for_retry_after_and_halves_the_pace():
    clock = Clock()
    limiter = RateLimiter(600, clock=clock)
    _send(limiter, clock, 10)
    limiter.rate_limited(5.0)
    assert limiter.reserve() == pytest.approx(5.0)
    assert limiter.rate == 300
    # Concurrent 429s from the same burst halve the pace only once.
    limiter.rate_limited(5.0)
    assert limiter.rate == 300


def test_pace_never_falls_below_the_floor_and_recovers_without_429s():
    clock = Clock()
    limiter = RateLimiter(1500, clock=clock)
    for _ in range(20):
        limiter.rate_limited(1.0)
        clock.now += DECREASE_COOLDOWN_SECONDS
    assert limiter.rate == MIN_REQUESTS_PER_MINUTE
    clock.now += RECOVERY_PERIOD_SECONDS
    limiter.reserve()
    assert limiter.rate > MIN_REQUESTS_PER_MINUTE
    for _ in range(100):
        clock.now += RECOVERY_PERIOD_SECONDS
        limiter.reserve()
    assert limiter.rate == 1500


def test_a_free_plan_quota_is_found_from_the_paid_default():
    """Asana allows 150/min; starting at 1,500 the pace drops below it after a few 429s."""
    clock = Clock()
    limiter = RateLimiter(1500, clock=clock)
    window: list[float] = []
    rejected = 0
    for _ in range(2000):
        clock.now += limiter.reserve()
        window = [t for t in window if t > clock.now - 60] + [clock.now]
        if len(window) > 150:
            rejected += 1
            limiter.rate_limited(60 - (clock.now - window[0]))
    assert limiter.rate <= 150
    # A few 429s (each costs one wasted request) while probing back up is the price
    # of recovering when the limit was only a burst from another client.
    assert rejected < 0.02 * 2000


def test_isolated_429s_do_not_drive_the_pace_to_the_floor():
    """One 429 a second for 30 s (cost or concurrency limits) halves the pace 3 times."""
    clock = Clock()
    limiter = RateLimiter(1500, clock=clock)
    for _ in range(30):
        limiter.rate_limited(1.0)
        clock.now += 1.0
    assert limiter.rate == 1500 / 2**3
