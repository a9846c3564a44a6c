"""Bookmarks hold only for the streams they were kept with: a new selection starts them over.

The tasks stream leaves out tasks unchanged since its bookmarks, and with them every row
read under them or made of them (their stories, attachments, the derived task tables
…); the subtasks stream does the same for subtasks (its search bookmarks, its walks).
So those bookmarks say what was written only for the streams selected when they were
kept. A stream selected later (``stories`` added next to ``tasks``; ``subtasks`` selected
after it ran deselected, as the parent of ``subtask_stories``) would otherwise get rows
only for records changed from then on, and the older ones never, silently.

So each stream with ``bookmark_keys`` keeps, next to its bookmarks, the streams they
cover (``STATE_KEY``): itself and the streams fed by its records, down to a stream that
finds its records on its own (``sweeps_each_workspace``: subtasks under tasks). At the
start of a run (``start_over_where_newly_selected``), if one of those is selected now
and not covered, the stream's bookmarks are dropped, as in its first run (every record
in scope is read again; targets upsert), with an INFO line naming the stream
(``AsanaStream.start_over``; the tasks stream also reconciles in that run, as a first
run does). Its other keys stay (events tokens, the reconcile's and the deletes'
bookkeeping). A
stream deselected, or whose scope the token lacks, leaves the record (its rows stop
being written), so selecting it again starts over too.

A state kept without the record (a first run, or a tap before this one) counts as
covering the current selection: a first run has no bookmarks to drop, and an older
state cannot be checked (starting everyone over on an upgrade would cost a full read).
A stream not run at all (deselected, nothing selected below it) keeps its record: its
bookmarks do not move either.
"""

from __future__ import annotations

import typing as t

from tap_asana_vl import sdk_adapter

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Iterable

    from tap_asana_vl.streams.base import AsanaStream

#: Key, in the state entry of a stream with ``bookmark_keys``, of the streams covered.
STATE_KEY = "bookmarks_cover"


def start_over_where_newly_selected(
    streams: Iterable[AsanaStream], logger: logging.Logger
) -> list[str]:
    """Drop the bookmarks that do not cover a selected stream; record the coverage.

    Call before any stream reads its state. Returns the streams started over.
    """
    started_over = []
    for stream in streams:
        if not stream.bookmark_keys:
            continue
        if not (stream.selected or stream.has_selected_descendents):
            continue  # not run: its bookmarks stay where its rows are
        covered = sorted(s.name for s in fed_by(stream) if written(s))
        recorded = sdk_adapter.stored_state(stream).get(STATE_KEY)
        if recorded is not None and not _is_names(recorded):
            logger.warning(
                "State of '%s': %r is %r, not a list of stream names: starting its "
                "bookmarks over, as for a newly selected stream",
                stream.name,
                STATE_KEY,
                recorded,
            )
            recorded = []  # covers nothing: whatever is written now is new
        new = [] if recorded is None else [n for n in covered if n not in recorded]
        entry = sdk_adapter.own_state(stream)
        if new:
            stream.start_over()
            started_over.append(stream.name)
            logger.info(
                "Newly selected since the bookmarks of '%s' were kept: %s. Starting them "
                "over, as in a first run (every one of its records in scope is read "
                "again), so that older rows come too",
                stream.name,
                ", ".join(new),
            )
        entry[STATE_KEY] = covered
    return started_over


def fed_by(stream: AsanaStream) -> list[AsanaStream]:
    """``stream`` and the streams whose rows come only with its records, at any depth.

    Not below a child that finds its own records (``sweeps_each_workspace``): its own
    bookmarks decide what it reads.
    """
    found: list[AsanaStream] = [stream]
    for child in stream.child_streams:
        if getattr(child, "sweeps_each_workspace", False):
            continue
        for below in fed_by(t.cast("AsanaStream", child)):
            if below not in found:
                found.append(below)
    return found


def written(stream: AsanaStream) -> bool:
    """Whether ``stream``'s rows are written in this run (selected, its scope granted)."""
    return bool(stream.selected) and stream.scope_off is None


def _is_names(value: t.Any) -> bool:
    return isinstance(value, list) and all(isinstance(name, str) for name in value)


def uncover_turned_off(streams: Iterable[AsanaStream]) -> None:
    """After a run: a stream its scopes turned off during it had no rows written.

    (With OAuth scopes unknown, a stream's first request finds out.) It leaves the
    records it was in, so that once the token may read it, it counts as newly selected.
    """
    for stream in streams:
        recorded = sdk_adapter.stored_state(stream).get(STATE_KEY)
        if not stream.bookmark_keys or not _is_names(recorded):
            continue
        off = {s.name for s in fed_by(stream) if s.name in recorded and s.scope_off is not None}
        if off:
            sdk_adapter.own_state(stream)[STATE_KEY] = [n for n in recorded if n not in off]
            sdk_adapter.write_state(stream)
