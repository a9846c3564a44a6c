"""Bookmarks hold only for the streams they were kept with: a new selection starts them over.

The tasks stream leaves out tasks unchanged since its bookmarks, and with them every row
read under them or made of them (their stories, attachments, the derived task tables
…); the subtasks stream does the same for subtasks (its search bookmarks, its walks).
So those bookmarks say what was written only for the streams written when they were
kept. A stream selected later (``stories`` added next to ``tasks``; ``subtasks`` selected
after it ran deselected, as the parent of ``subtask_stories``; ``include_attachments``
turned on) would otherwise get rows only for records changed from then on, and the
older ones never, silently.

So each stream with ``bookmark_keys`` keeps, next to its bookmarks, what they cover
(``STATE_KEY``): what it and the streams fed by its records write (``covers``: a
stream selected and not turned off by a setting or the OAuth scopes; the tasks stream
also names the tasks in no project), down to a child with bookmarks of its own
(subtasks under tasks: it keeps its own record). At the start of a run
(``start_over_where_newly_selected``), if something is written now that is not
covered, the stream's bookmarks are cleared (``AsanaStream.start_over``), as in its
first run: every record in scope is read again (targets upsert), with an INFO line;
the tasks stream also reconciles then where it can, as a first run does. The newly
covered streams' delete floors are forgotten (purge.py: their rows missed deletes
meanwhile; the run's complete read makes the next floor). Other keys stay (events
tokens, the reconcile's bookkeeping). A stream deselected or turned off leaves the
record, so selecting it again starts over too.

Asana may refuse a stream only during the run (OAuth scopes not declared, found
missing by the first request; a paid feature in a free workspace). Such a stream
leaves the record at the end of the run and is kept as refused (``REFUSED_KEY``), so
that runs where it is still refused do not each start over; the run after one where
it was read again starts over for it.

A state kept without the record (a first run, or a tap before this one) counts as
covering what is written now: a first run has no bookmarks to clear, and an older
state cannot be checked (starting everyone over on an upgrade would cost a full read).
A stream not run at all (deselected, nothing selected below it) keeps its record: its
bookmarks do not move either.
"""

from __future__ import annotations

import typing as t

import tap_asana_vl.streams.purge as purge
from tap_asana_vl import sdk_adapter

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Iterable, Iterator, Mapping

    from tap_asana_vl.streams.base import AsanaStream

#: Key, in the state entry of a stream with ``bookmark_keys``, of what they cover.
STATE_KEY = "bookmarks_cover"
#: Key of what Asana refused during the last complete run (not covered, not new).
REFUSED_KEY = "bookmarks_refused"


def start_over_where_newly_selected(
    streams: Iterable[AsanaStream], logger: logging.Logger
) -> list[str]:
    """Clear the bookmarks that do not cover what is written now; record what they cover.

    Call before any stream reads its state. Returns the streams started over.
    """
    started_over = []
    for stream in streams:
        if not stream.bookmark_keys or not stream.runs:
            continue
        covered = covered_by(stream)
        stored = sdk_adapter.stored_state(stream)
        recorded = _names(stored, STATE_KEY, stream, logger)
        refused = _names(stored, REFUSED_KEY, stream, logger) or []
        new = [] if recorded is None else [n for n in covered if n not in recorded + refused]
        if new:
            stream.start_over()
            _forget_floors(stream, new)
            started_over.append(stream.name)
            logger.info(
                "Newly selected since the bookmarks of '%s' were kept: %s. Starting them "
                "over, as in a first run (every one of its records in scope is read "
                "again), so that older rows come too",
                stream.name,
                ", ".join(new),
            )
            refused = []
        # Refused last time: not covered now either (should Asana answer it now, only
        # changed records' rows come), and refused until the run's end says otherwise
        # (note_refusals), so that the run after the one it is answered in starts over.
        entry = sdk_adapter.own_state(stream)
        entry[STATE_KEY] = [n for n in covered if n not in refused]
        entry[REFUSED_KEY] = [n for n in refused if n in covered]
    return started_over


def note_refusals(streams: Iterable[AsanaStream]) -> None:
    """After a run: what Asana refused during it leaves the records (kept as refused).

    A stream kept as refused that made no request in this run stays refused: nothing
    says it can be read now.
    """
    for stream in streams:
        recorded = sdk_adapter.stored_state(stream).get(STATE_KEY)
        if not stream.bookmark_keys or not stream.runs or not isinstance(recorded, list):
            continue
        entry = sdk_adapter.own_state(stream)
        was_refused = set(entry.get(REFUSED_KEY) or [])
        # Only what was to be written: a stream known to be off at the start is not
        # covered anyway, and must count as new once it is on.
        expected = set(recorded) | was_refused
        refused = {
            child.name
            for child, off in _below(stream)
            if child.name in expected
            and (off or (child.name in was_refused and not child.stats.requests))
        }
        if refused != was_refused:
            entry[STATE_KEY] = [n for n in recorded if n not in refused]
            entry[REFUSED_KEY] = sorted(refused)
            sdk_adapter.write_state(stream)


def _below(stream: AsanaStream, *, off: bool = False) -> Iterator[tuple[AsanaStream, bool]]:
    """The streams fed by ``stream``, each with whether Asana refused it or one above it.

    In this run; as ``fed_by``, not below a child with bookmarks of its own.
    ``stream`` itself is not one: refused, it read nothing, so its bookmarks did not
    move.
    """
    for child in t.cast("list[AsanaStream]", stream.child_streams):
        if child.bookmark_keys:
            continue
        refused = off or child.refused_in_run()
        yield child, refused
        yield from _below(child, off=refused)


def covered_by(stream: AsanaStream) -> list[str]:
    """What ``stream`` and the streams fed by its records write in this run, sorted."""
    return sorted({name for s in fed_by(stream) for name in s.covers()})


def fed_by(stream: AsanaStream) -> list[AsanaStream]:
    """``stream`` and the streams whose rows come only with its records, at any depth.

    Not below a child with bookmarks of its own (it keeps its own record), nor below
    one turned off (it feeds nothing).
    """
    found: list[AsanaStream] = [stream]
    if stream.switched_off():
        return found
    for child in t.cast("list[AsanaStream]", stream.child_streams):
        if child.bookmark_keys:
            continue
        for below in fed_by(child):
            if below not in found:
                found.append(below)
    return found


def _forget_floors(stream: AsanaStream, new: list[str]) -> None:
    for child in fed_by(stream):
        if child.name in new:
            purge.forget_marks(child)


def _names(
    stored: Mapping[str, t.Any], key: str, stream: AsanaStream, logger: logging.Logger
) -> list[str] | None:
    """The stream names kept under ``key`` (None: none kept; malformed: covers nothing)."""
    value = stored.get(key)
    if value is None or (isinstance(value, list) and all(isinstance(n, str) for n in value)):
        return value
    logger.warning(
        "State of '%s': %r is %r, not a list of stream names: taken as empty (its "
        "bookmarks start over if that leaves what is written now uncovered)",
        stream.name,
        key,
        value,
    )
    return []
