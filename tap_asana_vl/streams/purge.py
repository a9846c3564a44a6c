"""Tombstones gone with ``hard_delete: true``: the purge ACTIVATE_VERSION.

target-postgres 0.8.1 applies ``hard_delete`` only to ACTIVATE_VERSION (it deletes rows
whose table version is older than the one activated, or null, instead of setting their
``_sdc_deleted_at``); a tombstone RECORD is upserted like any other row, so it would stay,
marked. This module makes one more ACTIVATE_VERSION delete exactly the tombstones.

- A stream's **floor** is the table version of the last ACTIVATE_VERSION the tap sent
  for it (a reconcile pass, a complete read: ``activate``). That run re-wrote every live
  row of the table with that version (the conditions of ``full_reads.py``), and every
  later run writes the stream's records with a version at least as high (``plan``). So
  every live row's version is at least the floor. Kept in the stream's state entry
  (one number per stream).
- Tombstones are written with version 1 (``TOMBSTONE_VERSION``), below any floor: also
  in a run whose complete read writes the stream with the run's version, so that run's
  own ACTIVATE_VERSION deletes them too.
- A run that wrote tombstones to a stream with a floor, and sent no ACTIVATE_VERSION of
  its own for it, ends with ACTIVATE_VERSION(floor) (``finish``). Older than the floor
  are only the tombstones and the rows the floor's run marked: with ``hard_delete`` the
  target deletes exactly those; without, it marks rows older than the floor not marked
  yet, and there are none. A live row is never touched, whatever this run skipped: its
  version says it was written at or after the floor, not by this run.

A stream without a floor (none activated yet by this version of the tap; ``stories``,
which no run reads in full after the first) keeps its tombstones as marked rows.
"""

from __future__ import annotations

import time
import typing as t
from dataclasses import dataclass, field

from tap_asana_vl import sdk_adapter

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Iterable

    from singer_sdk import Stream

#: The table version of every tombstone: below any version a run writes (ms since 1970).
TOMBSTONE_VERSION = 1
#: The Singer column of a deleted row's time (a tombstone has it set).
DELETED_AT = "_sdc_deleted_at"
#: Key of a stream's floor in its state entry.
FLOOR_KEY = "table_version_floor"


@dataclass
class Purges:
    """One run's bookkeeping: streams that got tombstones, streams activated."""

    #: Streams tombstones were written to in this run, by name.
    tombstoned: dict[str, Stream] = field(default_factory=dict)
    #: Streams that sent an ACTIVATE_VERSION of their own in this run (a new floor).
    activated: set[str] = field(default_factory=set)


def floor(stream: Stream) -> int | None:
    """The version of the last ACTIVATE_VERSION sent for ``stream`` (None: none yet)."""
    value = sdk_adapter.stored_state(stream).get(FLOOR_KEY)
    return int(value) if value is not None else None


def plan(streams: Iterable[Stream]) -> None:
    """Before the first record: each stream with a floor writes with a version above it.

    The run's start in ms is above every earlier run's (the floor too, unless the
    clock went back: then the floor itself). A reconcile or a complete read may set a
    later version of its own; it is later still.
    """
    version = int(time.time() * 1000)
    for stream in streams:
        stream_floor = floor(stream)
        if stream_floor is not None and stream.selected:
            sdk_adapter.set_table_version(stream, max(version, stream_floor))


def activate(purges: Purges, stream: Stream, version: int) -> None:
    """Send ``stream``'s ACTIVATE_VERSION ``version``: every live row was written with it.

    Only for a run that re-wrote every live row of the table with ``version`` (a
    reconcile, a complete read): ``version`` becomes the stream's floor.
    """
    if not stream.selected:
        return
    sdk_adapter.write_activate_version(stream, version)
    sdk_adapter.own_state(stream)[FLOOR_KEY] = version
    purges.activated.add(stream.name)


def write_tombstones(purges: Purges, stream: Stream, records: list[dict[str, t.Any]]) -> int:
    """Write tombstone ``records`` (with ``_sdc_deleted_at``) to ``stream``; how many."""
    written = sdk_adapter.write_records(stream, records, version=TOMBSTONE_VERSION)
    if written:
        purges.tombstoned[stream.name] = stream
    return written


def write_rows(purges: Purges, stream: Stream, rows: Iterable[dict[str, t.Any]]) -> int:
    """Write ``rows`` now: live ones with the stream's version, tombstones with version 1.

    For a reconcile re-writing a task's derived rows, some of which are marked (a
    custom field without a value): as tombstones, ``hard_delete`` removes them too.
    """
    live: list[dict[str, t.Any]] = []
    dead: list[dict[str, t.Any]] = []
    for row in rows:
        (dead if is_tombstone(row) else live).append(row)
    return sdk_adapter.write_records(stream, live) + write_tombstones(purges, stream, dead)


def is_tombstone(record: dict[str, t.Any]) -> bool:
    """Whether ``record`` marks its row deleted (``_sdc_deleted_at`` set)."""
    return record.get(DELETED_AT) is not None


def finish(purges: Purges, logger: logging.Logger) -> list[str]:
    """At the end of a run: ACTIVATE_VERSION(floor) where tombstones were written.

    Not for a stream activated in this run (its ACTIVATE_VERSION, above the tombstones'
    version, already covered them), without a floor (nothing says which rows are live),
    or whose records this run carry a version below the floor. Returns the streams
    purged.
    """
    purged: list[str] = []
    for name, stream in sorted(purges.tombstoned.items()):
        stream_floor = floor(stream)
        if name in purges.activated or stream_floor is None:
            continue
        written_with = sdk_adapter.table_version(stream)
        if written_with is None or written_with < stream_floor:
            # This run's records are below the floor (a reconcile or a complete read
            # set a version of its own, and the clock went back since the floor's run):
            # the purge would reach them. The tombstones stay marked this time.
            logger.warning(
                "Not removing %s tombstones in this run: its records were written with "
                "table version %s, below the last complete write's %s (did the clock go "
                "back?); they stay marked deleted",
                name,
                written_with,
                stream_floor,
            )
            continue
        sdk_adapter.write_activate_version(stream, stream_floor)
        purged.append(name)
    if purged:
        logger.info(
            "Deleted rows: ACTIVATE_VERSION of the last complete write for %s (with "
            "hard_delete the target removes their tombstones; otherwise it changes nothing)",
            ", ".join(purged),
        )
    return purged
