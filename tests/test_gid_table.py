"""The compact gid memory (gid_table.py) behaves as a dict and a set, in little room."""

from __future__ import annotations

import random
import sys
import threading
import tracemalloc

import pytest

from tap_asana_vl.gid_table import GidTable

#: Asana-like gids: 16 digits, handed out in sequence with gaps.
BASE = 1_204_567_890_123_456


def test_it_answers_as_a_dict_through_inserts_updates_and_deletes():
    rng = random.Random(5)
    table, model = GidTable(), {}
    pool = [BASE + rng.randrange(0, 50_000) * 16 for _ in range(6_000)]
    pool += ["0123", "abc", 2**63, 2**70]  # kept aside: leading zero, letters, too big
    for step in range(40_000):
        gid = rng.choice(pool)
        roll = rng.random()
        if roll < 0.5:
            value = rng.choice([None, rng.randrange(-(2**62), 2**62)])
            table[gid] = value
            model[gid] = value
        elif roll < 0.75 and gid in model:
            del table[gid]
            del model[gid]
        else:
            assert (gid in table) == (gid in model), step
            if gid in model:
                assert table[gid] == model[gid], step
        if step % 5_000 == 0:
            assert len(table) == len(model)
    assert dict(table.items()) == model
    assert sorted(map(str, table)) == sorted(map(str, model))


def test_missing_gids_raise_key_error_and_bad_values_are_refused():
    table = GidTable()
    table[BASE] = 7
    with pytest.raises(KeyError):
        table[BASE + 1]
    with pytest.raises(KeyError):
        del table[BASE + 1]
    for bad in (-(2**63), 2**63, 1.5, "7"):
        with pytest.raises(ValueError, match="ints of 64 bits or None"):
            table[BASE] = bad
        with pytest.raises(ValueError, match="ints of 64 bits or None"):
            table[BASE + 2] = bad
    assert table[BASE] == 7
    assert BASE + 2 not in table
    assert len(table) == 1
    table.add(BASE + 1)
    assert BASE + 1 in table
    assert table[BASE + 1] is None


def test_deleted_gids_do_not_make_the_table_grow():
    table = GidTable()
    for round_number in range(50):
        for offset in range(1_000):
            table[BASE + round_number * 1_000 + offset] = offset
        for offset in range(1_000):
            del table[BASE + round_number * 1_000 + offset]
    assert len(table) == 0
    assert table.table_bytes <= 2 * 8 * 4_096  # sized for ~1,000 live gids, not 50,000


def test_thirty_thousand_gids_take_a_fraction_of_a_dict():
    gids = [BASE + n * 7 for n in range(30_000)]
    stamp = 1_700_000_000_000_000
    tracemalloc.start()
    try:
        as_dict = {gid + 1: stamp + 1 for gid in gids}  # new ints, as a run makes them
        dict_bytes = tracemalloc.get_traced_memory()[0]
        del as_dict
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        table = GidTable()
        for gid in gids:
            table[gid] = stamp
        table_bytes = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(table) == 30_000
    assert table_bytes * 3 < dict_bytes, (table_bytes, dict_bytes)
    assert table_bytes < 40 * 30_000


def test_gids_added_from_several_threads_are_all_kept():
    # Threads switched as often as possible: without the lock, two inserts into one
    # slot, or one during a rebuild, lose gids.
    table = GidTable()

    def add(start: int) -> None:
        for n in range(start, 20_000, 4):
            table.add(BASE + n)

    threads = [threading.Thread(target=add, args=(start,)) for start in range(4)]
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    assert len(table) == 20_000
    assert all(BASE + n in table for n in range(20_000))


def test_a_set_answers_as_a_set_in_half_the_room_and_refuses_values():
    rng = random.Random(9)
    as_set, as_map, model = GidTable(values=False), GidTable(), set()
    pool = [BASE + rng.randrange(0, 50_000) * 16 for _ in range(6_000)] + ["abc", 2**70]
    for step in range(30_000):
        gid = rng.choice(pool)
        if rng.random() < 0.6:
            as_set.add(gid)
            as_map.add(gid)
            model.add(gid)
        elif gid in model:
            del as_set[gid]
            del as_map[gid]
            model.discard(gid)
        assert (gid in as_set) == (gid in model), step
    assert set(as_set) == model
    assert all(value is None for _, value in as_set.items())
    assert all(as_set[gid] is None for gid in model)
    # The same slots, without the array of values: half the bytes.
    assert as_set.table_bytes * 2 == as_map.table_bytes
    with pytest.raises(ValueError, match="is a set"):
        as_set[BASE] = 7
    assert BASE not in as_set or as_set[BASE] is None


def test_thirty_thousand_gids_in_a_set_take_eight_bytes_a_slot():
    gids = [BASE + n * 7 for n in range(30_000)]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        table = GidTable(values=False)
        for gid in gids:
            table.add(gid)
        table_bytes = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(table) == 30_000
    assert all(gid in table for gid in gids)
    # 65,536 slots (grown at 70 % full) of 8 bytes, and no array of values beside them.
    assert table_bytes < 20 * 30_000, table_bytes
