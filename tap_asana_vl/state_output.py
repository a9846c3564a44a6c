"""Which STATE messages a run writes: few, spaced in time, and bounded in bytes.

The SDK offers the whole tap state after every child sync (each project's tasks, each
task's stories ...). With 2,000 projects that is a ~550 KB message per child sync, a
gigabyte per run for the target and Meltano to parse. A STATE message is only a
checkpoint: the next run resumes from the last one the target confirmed. So the tap
writes one only when

- it is due in time: at least ``min_interval`` seconds after the last one, and at least
  a quarter of the run's elapsed time (so a long run checkpoints ever more rarely, and
  the number of checkpoints grows with the logarithm of the run's length); and
- the byte budget allows it: everything written in the run, this one included, stays
  within ``BUDGET_FACTOR`` x the final size this state will have.

Every offered state that is not written is kept (as the bytes it was offered as) and
replaced by the next one; the last one is written when the run ends, however it ends
(``flush``). A STATE is written at the moment the SDK offered it or later, never
earlier, so it only ever covers records already written: a run killed at any point
resumes from a correct, if older, checkpoint.

Why the total stays ≤ 30 x the final state's size: a mid-run state is larger than the
final one only by the SDK's interim markers (progress markers, signposts), which
finalization removes. ``final_size`` measures the state without them, a lower bound of
the final state's size as long as the run only adds to the state. Each intermediate
write keeps the total ≤ ``BUDGET_FACTOR`` (20) x that bound, and the final state adds
its own size once: 21 x the final size, with room for a final state up to 30%
smaller than any bound measured during the run (the tap's own entries, such as the
list of projects a reconcile saw, may shrink a little).
"""

from __future__ import annotations

import time
import typing as t

# The encoding the tap's message writer uses (MsgSpecWriter): sizes are bytes written.
from singer_sdk.contrib.msgspec import decoder, encoder

from tap_asana_vl import sdk_adapter

if t.TYPE_CHECKING:
    from collections.abc import Callable

#: Intermediate STATE bytes ≤ this x (a lower bound of) the final state's size.
BUDGET_FACTOR = 20
#: A checkpoint at most every this fraction of the run's elapsed time.
SPACING_FRACTION = 0.25
#: Bytes of a STATE line around its value: ``{"type":"STATE","value":`` … ``}\n``.
MESSAGE_OVERHEAD = len('{"type":"STATE","value":}\n')


def final_size(state: dict[str, t.Any]) -> int:
    """Bytes of ``state`` once finalized (without the SDK's interim markers)."""
    return len(encoder.encode(sdk_adapter.without_interim_markers(state)))


class StateOutput:
    """Decides, for each state the SDK offers, whether to write it now."""

    def __init__(
        self,
        *,
        min_interval: float,
        write: Callable[[dict[str, t.Any]], None],
        final_size: Callable[[dict[str, t.Any]], int] = final_size,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Write through ``write``; ``final_size`` bounds a state's final size from below."""
        self.min_interval = min_interval
        self._write = write
        self._final_size = final_size
        self._clock = clock
        self._started = clock()
        #: When the last decision was made (written, or refused by the budget).
        self._last_decision: float | None = None
        self._last_written: bytes | None = None
        self._pending: bytes | None = None
        self.written_bytes = 0
        self.written_count = 0
        self.offered_count = 0

    def offer(self, state: dict[str, t.Any]) -> None:
        """The tap's state now: write it, or keep it for later (the latest one wins)."""
        # Encoded now: a snapshot (the SDK keeps updating the same dict) and its size.
        encoded = encoder.encode(state)
        if encoded == self._last_written:
            self._pending = None  # back to what the target already has
            return
        if encoded == self._pending:
            return
        self.offered_count += 1
        self._pending = encoded
        now = self._clock()
        if not self._due(now):
            return
        # Budget refusals count as decisions too: the next check waits for the next
        # spacing, so a spent budget costs no more measuring than a written state.
        self._last_decision = now
        size = len(encoded) + MESSAGE_OVERHEAD
        bound = self._final_size(state) + MESSAGE_OVERHEAD
        if self.written_bytes + size <= BUDGET_FACTOR * bound:
            self._write_pending()

    def flush(self) -> None:
        """Write the last state offered, if it is not written yet (the run is ending)."""
        if self._pending is not None:
            self._write_pending()

    def _due(self, now: float) -> bool:
        if self._last_decision is None:
            return True
        spacing = max(self.min_interval, SPACING_FRACTION * (now - self._started))
        return now - self._last_decision >= spacing

    def _write_pending(self) -> None:
        encoded, self._pending = self._pending, None
        if encoded is None:
            return
        self._write(decoder.decode(encoded))
        self._last_written = encoded
        self.written_bytes += len(encoded) + MESSAGE_OVERHEAD
        self.written_count += 1
