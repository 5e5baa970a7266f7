"""Which moments a store can prove: coverage as a set of intervals, and the losses that cut it.

A moment is restorable when it lies between the earliest and the latest restorable time and no
loss makes it unknowable. A loss is a change the store does not hold: a gap (stream records read
too late, ``changelog.gaps``) or a quarantined record (kept whole, but not decoded into a change).
A loss blocks every moment at or after its start, until a base became consistent after its end: a
whole copy of the table (a bootstrap, or a snapshot built on one) holds every item, so the lost
change no longer matters for the moments after that copy. Moments before the loss stay restorable:
a bootstrap after a gap re-opens what follows it and takes nothing away before it.

Readers that list changes rather than states (history, timeline) cannot be rescued by a base: a
lost change is missing from any list that spans it. ``losses_within`` names those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from changelog.timefmt import format_time, from_micros

Interval = tuple[int, int]  # inclusive bounds, µs


@dataclass(frozen=True)
class Loss:
    """Changes the store does not hold: moments from ``start_us`` on may lack them."""

    start_us: int | None  # earliest moment affected (inclusive); None: unknown, so every moment
    end_us: int  # the newest stream time a lost change can carry
    what: str  # one phrase naming the loss
    remedy: str  # what makes the moments after it restorable again
    kind: str = "missing"  # "gap", "quarantine", "missing" (the ledger names a file the store lost), "expired"

    def affects(self, at_us: int) -> bool:
        """Whether the state at ``at_us`` may lack a lost change (bases aside)."""
        return self.start_us is None or at_us >= self.start_us

    def overlaps(self, low_us: int | None, high_us: int | None) -> bool:
        """Whether a lost change can carry a time within [low_us, high_us] (None: unbounded)."""
        if high_us is not None and self.start_us is not None and self.start_us > high_us:
            return False
        return low_us is None or self.end_us >= low_us


GAP_REMEDY = ("bootstrap a new base with 'ddb-rewind bootstrap --scan' or '--from-export' to restore "
              "moments after it")
QUARANTINE_REMEDY = ("fix the cause and run 'ddb-rewind requeue', or bootstrap a new base with "
                     "'ddb-rewind bootstrap --scan' to restore moments after it")


class Base(NamedTuple):
    """A whole copy of the table (a bootstrap, or a snapshot built on one).

    ``at_us``: the moment from which the copy restores the table. ``clears_before_us``: it clears a
    loss whose newest lost change is older than this: the copy's floor (``state.copy_floor_us``).
    Changes stamped from the floor on are laid over the copy, so a loss among them is not cleared by
    it: a captured change before the copy, whose successor was lost, would win over the copy. An
    export restores from its export time; a scan reads the items one by one from its start to its
    end (a change lost while it ran may be missing from the copy), and restores from its end.
    """

    at_us: int
    clears_before_us: int


def bridged(loss: Loss, bases: Sequence[Base], at_us: int | None = None) -> bool:
    """True when a whole copy of the table that the lost change cannot be missing from restores the
    moments from its own on (at or before ``at_us``, if given): they no longer depend on that change."""
    return any(loss.end_us < base.clears_before_us and (at_us is None or base.at_us <= at_us) for base in bases)


def blocking_loss(losses: Sequence[Loss], bases: Sequence[Base], at_us: int) -> Loss | None:
    """The first loss that makes the state at ``at_us`` unknowable, or None."""
    for loss in losses:
        if loss.affects(at_us) and not bridged(loss, bases, at_us):
            return loss
    return None


def initial_bases(losses: Sequence[Loss], bases: Sequence[Base]) -> list[Base]:
    """Bases taken before anything was lost: a table's first bootstrap, not one that re-opened coverage.

    Only these set the earliest restorable time; a base after a loss re-opens the moments after it
    without hiding the moments before the loss, which the changes alone restore exactly.
    """
    if any(loss.start_us is None for loss in losses):
        return list(bases)
    first_loss = min((loss.start_us for loss in losses if loss.start_us is not None), default=None)
    return [base for base in bases if first_loss is None or base.at_us <= first_loss]


def intervals(earliest_us: int | None, latest_us: int | None, losses: Sequence[Loss],
              bases: Sequence[Base]) -> tuple[Interval, ...]:
    """The restorable moments as sorted, disjoint, inclusive intervals.

    Whether a moment is blocked changes only at a loss's start or at a base, so the answer at each
    such point holds until the next one.
    """
    if earliest_us is None or latest_us is None or latest_us < earliest_us:
        return ()
    points = sorted({earliest_us} | {
        p for p in [*(loss.start_us for loss in losses if loss.start_us is not None), *(b.at_us for b in bases)]
        if earliest_us < p <= latest_us
    })
    found: list[Interval] = []
    for index, point in enumerate(points):
        if blocking_loss(losses, bases, point) is not None:
            continue
        end = points[index + 1] - 1 if index + 1 < len(points) else latest_us
        if found and found[-1][1] + 1 == point:
            found[-1] = (found[-1][0], end)
        else:
            found.append((point, end))
    return tuple(found)


def describe_intervals(spans: Sequence[Interval]) -> str:
    """``A to B, C to D`` in ISO 8601, or ``none``."""
    if not spans:
        return "none"
    return ", ".join(f"{format_time(from_micros(low))} to {format_time(from_micros(high))}" for low, high in spans)
