"""Gids a run remembers, kept in flat arrays: 23 to 46 bytes each instead of ~110.

A run remembers some objects until it can no longer deliver them again: the subtasks
the workspace's search may find again, the tasks whose subtask trees were read, the
tasks in several projects. As Python ints in a dict or a set each costs ~110 bytes, and
tens of thousands of small long-lived objects, allocated among the short-lived records,
also keep pymalloc's pages from being given back. Asana's gids are digit strings that
fit a signed 64-bit int: those are kept in an open-addressing hash table made of two
``array('q')`` (gids, values), or of one for a set (``values=False``: 8 bytes a slot
instead of 16); any other key in a plain dict.
"""

from __future__ import annotations

import itertools
import threading
import typing as t
from array import array

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

#: A slot never used: a lookup stops there.
_EMPTY = -1
#: A slot whose gid was deleted: a lookup goes on past it; an insert may reuse it.
_DELETED = -2
#: How a value of None is stored.
_NONE = -(2**63)
_LARGEST = 2**63 - 1
#: Fibonacci hashing spreads gids handed out in sequence (or with a stride) evenly.
_GOLDEN = 0x9E3779B97F4A7C15
_WORD = 2**64 - 1
#: Grow (or clear deleted slots) once this share of the slots is taken.
_FULL = 0.7
_SMALLEST_BITS = 6


class GidTable:
    """A ``gid -> int | None`` map (``add``: a set), compact, safe from any thread.

    Keys are as ``gid_key`` makes them: an int where the gid is digits, else a string
    (an int key matches only an int: ``True`` or ``1.0`` are other keys, unlike in a
    dict). Values are ints from -(2**63 - 1) to 2**63 - 1 (timestamps in microseconds)
    or None.
    """

    def __init__(self, *, values: bool = True) -> None:
        """Start empty; ``values=False``: a set (every value None), half the room."""
        self._lock = threading.Lock()
        self._others: dict[int | str, int | None] = {}
        self._with_values = values
        self._allocate(_SMALLEST_BITS)

    def _allocate(self, bits: int) -> None:
        self._bits = bits
        self._keys = array("q", [_EMPTY]) * (1 << bits)
        self._values = array("q", [0]) * (1 << bits) if self._with_values else None
        self._live = 0
        self._taken = 0  # live and deleted slots

    # --- Mapping -------------------------------------------------------------------------

    def __contains__(self, gid: object) -> bool:
        """Whether ``gid`` is remembered."""
        with self._lock:
            if not _fits(gid):
                return gid in self._others
            return self._keys[self._find(t.cast("int", gid))] == gid

    def __getitem__(self, gid: int | str) -> int | None:
        """The value remembered for ``gid`` (KeyError if none)."""
        with self._lock:
            if not _fits(gid):
                return self._others[gid]
            slot = self._find(t.cast("int", gid))
            if self._keys[slot] != gid:
                raise KeyError(gid)
            if self._values is None:
                return None
            value = self._values[slot]
            return None if value == _NONE else value

    def __setitem__(self, gid: int | str, value: int | None) -> None:
        """Remember ``gid`` with ``value`` (replacing what was remembered)."""
        if value is not None and (type(value) is not int or not -_LARGEST <= value <= _LARGEST):
            # Checked before anything is written: a half-made entry would be remembered.
            msg = f"a gid table holds ints of 64 bits or None, not {value!r}"
            raise ValueError(msg)
        if value is not None and not self._with_values:
            msg = f"this gid table is a set: it holds no values ({value!r})"
            raise ValueError(msg)
        stored = _NONE if value is None else value
        with self._lock:
            if not _fits(gid):
                self._others[gid] = value
                return
            key = t.cast("int", gid)
            slot = self._find(key)
            if self._keys[slot] != key:
                if self._keys[slot] == _EMPTY:
                    self._taken += 1
                self._keys[slot] = key
                self._live += 1
            if self._values is not None:
                self._values[slot] = stored
            if self._taken > _FULL * len(self._keys):
                self._rebuild()

    def add(self, gid: int | str) -> None:
        """Remember ``gid`` (as a set does; its value is None)."""
        self[gid] = None

    def __delitem__(self, gid: int | str) -> None:
        """Forget ``gid`` (KeyError if it is not remembered)."""
        with self._lock:
            if not _fits(gid):
                del self._others[gid]
                return
            slot = self._find(t.cast("int", gid))
            if self._keys[slot] != gid:
                raise KeyError(gid)
            self._keys[slot] = _DELETED
            self._live -= 1

    def __len__(self) -> int:
        """How many gids are remembered."""
        with self._lock:
            return self._live + len(self._others)

    def items(self) -> Iterator[tuple[int | str, int | None]]:
        """The remembered gids and values (a copy taken when first asked)."""
        with self._lock:
            pairs = [
                (key, None if value == _NONE else value)
                for key, value in zip(self._keys, self._stored_values(), strict=True)
                if key >= 0
            ]
            pairs += self._others.items()
        return iter(pairs)

    def __iter__(self) -> Iterator[int | str]:
        """The remembered gids."""
        return (gid for gid, _ in self.items())

    @property
    def table_bytes(self) -> int:
        """What the arrays take (bytes), the dict of other keys aside."""
        arrays = 1 if self._values is None else 2
        return self._keys.buffer_info()[1] * self._keys.itemsize * arrays

    def _stored_values(self) -> Iterable[int]:
        """Each slot's stored value (a set's: ``_NONE``, without an array of them)."""
        return itertools.repeat(_NONE, len(self._keys)) if self._values is None else self._values

    # --- Open addressing -----------------------------------------------------------------

    def _find(self, key: int) -> int:
        """The slot holding ``key``, else the slot where it would be put."""
        keys = self._keys
        mask = len(keys) - 1
        slot = ((key * _GOLDEN) & _WORD) >> (64 - self._bits)
        free = -1
        while True:
            found = keys[slot]
            if found == key:
                return slot
            if found == _EMPTY:
                return slot if free < 0 else free
            if found == _DELETED and free < 0:
                free = slot
            slot = (slot + 1) & mask

    def _rebuild(self) -> None:
        """Re-insert the live gids in a fresh table.

        Twice as big, or as big when half the taken slots were deleted ones.
        """
        old_keys, old_values, live = self._keys, self._stored_values(), self._live
        self._allocate(self._bits + 1 if live * 2 > self._taken else self._bits)
        for key, value in zip(old_keys, old_values, strict=True):
            if key >= 0:  # not a list of pairs first: that would take ~4 MB at 30,000
                slot = self._find(key)
                self._keys[slot] = key
                if self._values is not None:
                    self._values[slot] = value
        self._live = self._taken = live


def _fits(gid: object) -> bool:
    """Whether ``gid`` goes in the arrays: an int from 0 to 2**63 - 1 (not a bool)."""
    return type(gid) is int and 0 <= gid <= _LARGEST
