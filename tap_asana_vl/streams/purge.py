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

A stream without a floor (none activated yet by this version of the tap) keeps its
tombstones as marked rows.

``stories`` have no complete read of their own after the first run (a later run reads
the comments of changed tasks only), so their floor comes in two steps (``record_candidate``,
``confirm``; the tasks stream's reconcile decides when, see reconcile.py):

- Every record of the stream carries the run's version (``VERSIONED_ALWAYS``), floor or not.
- A run that read every task's stories (no bookmark: a first run, after ``state clear`` or
  ``--full-refresh``; nothing skipped or cut off; no filter; not stopped) wrote every
  story of every task in scope with its version V: the *candidate*, kept with the scope
  settings it was read under (``scope_of``).
- A later run whose reconcile pass activates (every task in scope listed, those gone
  marked) confirms it: ACTIVATE_VERSION(V) marks (deletes) the stories V's run did not
  see, which are stories deleted before it or of tasks the reconcile marks too, and V
  becomes the floor.
- A change of the scope settings drops the candidate and the floor for good (``plan``): a
  story of a task that comes into scope again may be in the warehouse from before V's run
  with an older version, and nothing would re-write it.
"""

from __future__ import annotations

import time
import typing as t
from dataclasses import dataclass, field

from tap_asana_vl import sdk_adapter

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Iterable, Mapping

    from singer_sdk import Stream

#: The table version of every tombstone: below any version a run writes (ms since 1970).
TOMBSTONE_VERSION = 1
#: The Singer column of a deleted row's time (a tombstone has it set).
DELETED_AT = "_sdc_deleted_at"
#: Key of a stream's floor in its state entry.
FLOOR_KEY = "table_version_floor"
#: Key of a floor not confirmed yet (``stories``: see ``record_candidate``).
CANDIDATE_KEY = "table_version_candidate"
#: Key of the scope settings a candidate or floor was recorded under (``scope_of``).
SCOPE_KEY = "table_version_scope"
#: Streams whose records always carry the run's version (a candidate can come from any
#: run that reads them in full, and must be the version every row of that run carries).
VERSIONED_ALWAYS = frozenset({"stories"})
#: The settings that decide which tasks (so which stories) a run reads, with defaults.
SCOPE_SETTINGS: dict[str, t.Any] = {
    "start_date": None,
    "workspace_gids": None,
    "project_gids": None,
    "include_archived_projects": True,
    "include_tasks_without_projects": True,
}


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


def candidate(stream: Stream) -> int | None:
    """The version of ``stream``'s last complete read not confirmed yet (None: none)."""
    value = sdk_adapter.stored_state(stream).get(CANDIDATE_KEY)
    return int(value) if value is not None else None


def scope_of(config: Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The scope settings of ``config`` (an empty list counts as unset)."""
    scope = {}
    for name, default in SCOPE_SETTINGS.items():
        value = config.get(name, default)
        scope[name] = default if value in (None, []) else value
    return scope


def plan(streams: Iterable[Stream], logger: logging.Logger | None = None) -> None:
    """Before the first record: each stream with a floor writes with a version above it.

    The run's start in ms is above every earlier run's (the floor too, unless the
    clock went back: then the floor itself). A reconcile or a complete read may set a
    later version of its own; it is later still. A floor or candidate recorded under
    other scope settings is dropped first (``drop_if_scope_changed``).
    """
    version = int(time.time() * 1000)
    for stream in streams:
        if not stream.selected:
            continue
        drop_if_scope_changed(stream, logger)
        marks = [mark for mark in (floor(stream), candidate(stream)) if mark is not None]
        if marks or stream.name in VERSIONED_ALWAYS:
            sdk_adapter.set_table_version(stream, max([version, *marks]))


def drop_if_scope_changed(stream: Stream, logger: logging.Logger | None = None) -> bool:
    """Forget ``stream``'s floor and candidate if the scope settings changed since.

    Only for a floor recorded with its scope (``record_candidate``). Whether one is dropped.
    """
    recorded = sdk_adapter.stored_state(stream).get(SCOPE_KEY)
    if recorded is None or recorded == scope_of(stream.config):
        return False
    changed = sorted(k for k, v in scope_of(stream.config).items() if recorded.get(k) != v)
    forget_marks(stream)
    if logger is not None:
        logger.info(
            "%s: %s changed since its last complete read, so its deleted rows stay marked "
            "(not removed with hard_delete) until a run reads it in full again "
            "(state clear or --full-refresh)",
            stream.name,
            ", ".join(changed),
        )
    return True


def forget_marks(stream: Stream) -> None:
    """Forget ``stream``'s floor and candidate: the next run that reads it in full sets them.

    For a scope change, and for a stream newly selected (selection.py): rows deleted
    while it was not written are below no floor of a later run.
    """
    sdk_adapter.clear_state_keys(stream, (FLOOR_KEY, CANDIDATE_KEY, SCOPE_KEY))


def record_candidate(stream: Stream) -> int | None:
    """Record that this run read every row of ``stream`` in scope: its version, a candidate.

    Not if a floor or a candidate exists already (the first one stays: its run is the
    one the confirming reconcile's conditions are checked against). Returns the version.
    """
    if not stream.selected or floor(stream) is not None or candidate(stream) is not None:
        return None
    version = sdk_adapter.table_version(stream)
    if version is None:
        return None
    entry = sdk_adapter.own_state(stream)
    entry[CANDIDATE_KEY] = version
    entry[SCOPE_KEY] = scope_of(stream.config)
    return version


def confirm(purges: Purges, stream: Stream, before: int) -> int | None:
    """Make ``stream``'s candidate its floor: ACTIVATE_VERSION of it (see the module doc).

    For a reconcile that activates in a run after the candidate's (``before``: its
    version), under the same scope (``plan`` dropped a candidate of another one).
    Returns the new floor.
    """
    version = candidate(stream)
    if not stream.selected or version is None or version >= before:
        return None
    activate(purges, stream, version)
    sdk_adapter.own_state(stream).pop(CANDIDATE_KEY, None)
    return version


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
