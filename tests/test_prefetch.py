"""Fetches started ahead: the main thread's chores while it waits, heads and their children."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor

import pytest

from tap_asana_vl.packed import PackedRecords
from tap_asana_vl.run_control import RunControl
from tap_asana_vl.streams.prefetch import Prefetches, WhileWaiting


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def _gated(records: list[dict], gate: threading.Event):
    def fetch():
        gate.wait(5)
        return iter(records)

    return fetch


def test_chores_run_while_the_main_thread_waits_and_the_result_comes_back():
    waiting = WhileWaiting()
    done: list[int] = []
    future: Future[str] = Future()

    def chore():
        done.append(len(done))
        if len(done) == 2:
            future.set_result("answer")
        else:
            waiting.wake()  # something else came in meanwhile

    waiting.add(chore)
    waiting.wake()  # a head read ahead came in before the wait
    assert waiting.result(future) == "answer"
    assert done == [0, 1]


def test_a_wait_ends_when_the_fetch_is_cancelled():
    waiting = WhileWaiting()
    waiting.add(lambda: None)
    future: Future[str] = Future()
    threading.Timer(0.05, future.cancel).start()
    with pytest.raises(CancelledError):
        waiting.result(future)


def test_a_failing_chore_stops_the_fetch_waited_for(pool):
    waiting = WhileWaiting()
    prefetches = Prefetches(pool, RunControl(60.0), pool, waiting)
    gate = threading.Event()
    handle = prefetches.start("parent", _gated([{"gid": "1"}], gate))

    def chore():
        raise RuntimeError("a chore failed")

    waiting.add(chore)
    waiting.wake()
    with pytest.raises(RuntimeError):
        prefetches.take("parent")
    assert handle.is_set()  # told to stop
    gate.set()


def test_a_head_dropped_after_it_was_expanded_stops_its_records_children(pool):
    heads = Prefetches(pool, RunControl(60.0), pool)
    stories = Prefetches(pool, RunControl(60.0), pool)
    heads.start("project", lambda: iter([{"gid": "t1"}]), first=3, context={"p": 1})
    [(key, context, records)] = _when_read(heads)
    assert (key, context, records) == ("project", {"p": 1}, [{"gid": "t1"}])
    gate = threading.Event()
    handle = stories.start("t1", _gated([], gate), context={"task": "t1"})
    heads.expanded("project", [(stories, "t1", handle)])
    assert heads.expanded_fetches == 1
    assert list(heads.heads_read()) == []  # expanded once
    heads.drop("project")  # the project is not synced after all
    assert "t1" not in stories
    assert handle.is_set()
    assert heads.expanded_fetches == 0
    gate.set()


def test_children_taken_before_their_head_is_released_are_not_stopped(pool):
    heads = Prefetches(pool, RunControl(60.0), pool)
    stories = Prefetches(pool, RunControl(60.0), pool)
    heads.start("project", lambda: iter([{"gid": "t1"}]), first=3)
    _when_read(heads)
    handle = stories.start("t1", lambda: iter([{"gid": "s1"}]))
    heads.expanded("project", [(stories, "t1", handle)])
    assert list(heads.take("project") or ()) == [{"gid": "t1"}]
    assert list(stories.take("t1") or ()) == [{"gid": "s1"}]
    assert heads.expanded_fetches == 0
    heads.release("project")  # the project is synced
    assert not handle.is_set()


def test_heads_held_are_bounded_in_pages_and_short_listings_allow_more(pool):
    prefetches = Prefetches(pool, RunControl(60.0), pool)
    gate = threading.Event()
    # Two heads not answered yet count as two pages each: four is the bound.
    prefetches.start("a", _gated([{"gid": "1"}], gate), first=3)
    prefetches.start("b", _gated([{"gid": "2"}], gate), first=3)
    assert not prefetches.room_for_head(3)
    gate.set()
    _when_read(prefetches, count=2)
    # Both whole (one record each): short listings, and what they hold is counted.
    assert prefetches.short_listings
    assert prefetches.room_for_head(3)
    later = threading.Event()
    prefetches.start("c", _gated([], later), first=3)
    prefetches.start("d", _gated([], later), first=3)
    assert prefetches.room_for_head(3)  # 2 + 2 x 6 + 6 of 7 x 3 records
    prefetches.start("e", _gated([], later), first=3)
    assert not prefetches.room_for_head(3)
    later.set()
    prefetches.discard()


def test_a_long_head_held_ends_the_short_listings_allowance(pool):
    prefetches = Prefetches(pool, RunControl(60.0), pool)
    prefetches.start("short", lambda: iter([{"gid": "1"}]), first=3)
    _when_read(prefetches, count=1)
    prefetches.start("long", lambda: iter([{"gid": str(n)} for n in range(10)]), first=3)
    _when_done(prefetches, "long")
    prefetches.short_listings = True  # as if a whole one was answered last
    # The long head holds its first page and, in its listing, the second: 1 + 6 + 6 > 12.
    assert not prefetches.room_for_head(3)
    prefetches.discard()


def _when_read(prefetches: Prefetches, count: int = 1) -> list:
    for _ in range(500):
        read = list(prefetches.heads_read())
        if len(read) >= count:
            return read
        threading.Event().wait(0.01)
    raise AssertionError("heads not read")


def _when_done(prefetches: Prefetches, key: str) -> None:
    for _ in range(500):
        if prefetches._finished(key):
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{key} not done")


def test_a_head_held_for_a_long_listing_waits_packed_and_reads_back_in_order(pool):
    """Held until its parent's turn (a whole project's sync): not ~2 MB decoded a page."""
    from decimal import Decimal

    records = [{"gid": str(n), "n": Decimal("1.10"), "tags": [{"gid": "t"}]} for n in range(10)]
    prefetches = Prefetches(pool, RunControl(60.0), pool)
    prefetches.start("long", lambda: iter(records), first=3)
    prefetches.start("short", lambda: iter(records[:2]), first=3)
    _when_done(prefetches, "long")
    _when_done(prefetches, "short")

    held, _rest = prefetches._started["long"][0].result()
    assert isinstance(held, PackedRecords)
    assert len(held) == 3
    assert held.packed_bytes > 0
    # A whole listing stays decoded: its records' children are started from it.
    assert [key for key, _, _ in prefetches.heads_read()] == ["short"]
    assert list(prefetches.take("long")) == records
    assert list(prefetches.take("short")) == records[:2]
