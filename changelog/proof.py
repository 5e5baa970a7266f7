"""What a store can prove about one table right now: the coverage proof the stack publishes every hour.

The proof restates coverage (``changelog.state.coverage``) as the few facts an operator watches:
the newest restorable moment and how far it lags the clock, what holds it back (a shard not read
far enough, a failed batch still pending, or a loss), the shards of the lineage listed but never
read, and the gaps and quarantined records in the store. It adds no rule of its own: the latest
restorable time is capture's (``changelog.captured``) and the moments a loss cuts are
``changelog.restorable``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from changelog.captured import binding_holds
from changelog.restorable import blocking_loss, bridged
from changelog.state import Coverage, coverage, gap_loss
from changelog.store import Store
from changelog.timefmt import format_time, from_micros

_SECOND_US = 1_000_000


@dataclass(frozen=True)
class CoverageProof:
    """What ``coverage`` proves for ``table`` at ``checked_at_us``."""

    table: str
    checked_at_us: int
    latest_restorable_us: int | None  # the newest moment a restore answers exactly; None: none
    held_by: tuple[str, ...]  # what stops it being later (shards, pending batches, a loss)
    shards: int  # shards of the lineage that hold coverage (Lambda path: 0, it has no shard records)
    unread_shards: tuple[str, ...]  # listed, nothing read from them yet
    gaps: int  # gaps no bootstrap has bridged yet: they cut the newest moments (bridged ones stay in status)
    quarantined: int  # quarantined records no bootstrap has bridged yet (status counts every one kept)

    @property
    def capture_lag_seconds(self) -> float | None:
        """The clock minus the newest restorable moment (None when no moment is restorable)."""
        if self.latest_restorable_us is None:
            return None
        return max(0, self.checked_at_us - self.latest_restorable_us) / _SECOND_US

    @property
    def whole(self) -> bool:
        """True when some moment is restorable, every shard was read and nothing is lost or quarantined."""
        return (self.latest_restorable_us is not None and not self.unread_shards
                and not self.gaps and not self.quarantined)

    def describe(self) -> str:
        """One line: the newest restorable moment, what holds it back, and the counts."""
        latest = (format_time(from_micros(self.latest_restorable_us))
                  if self.latest_restorable_us is not None else "none")
        lag = self.capture_lag_seconds
        lag_text = f" ({lag:,.0f} s behind)" if lag is not None else ""
        unread = f" ({', '.join(self.unread_shards)})" if self.unread_shards else ""
        return (f"{self.table} proof: latest restorable {latest}{lag_text}, held back by "
                f"{'; '.join(self.held_by) or 'nothing captured yet'}; {len(self.unread_shards):,} of "
                f"{self.shards:,} shard(s) unread{unread}, {self.gaps:,} open gap(s), "
                f"{self.quarantined:,} quarantined record(s)")


def prove(cov: Coverage, now_us: int) -> CoverageProof:
    """The proof ``cov`` gives at ``now_us``."""
    spans = cov.intervals
    latest = spans[-1][1] if spans else None
    held_by: list[str] = []
    loss = blocking_loss(cov.losses, cov.bases, cov.latest_us) if cov.latest_us is not None else None
    if loss is not None:
        # The last moments capture proves are cut by a loss: the newest restorable one is before it.
        held_by.append(loss.what)
    else:
        # Capture's binding holds, also when a snapshot proven when it was built lifts the latest
        # restorable time above what capture proves now: they are what keeps it from moving on.
        held_by.extend(hold.what for hold in binding_holds(cov.holds))
    shard_holds = [hold for hold in cov.holds if hold.shard_id is not None]
    return CoverageProof(
        table=cov.table,
        checked_at_us=now_us,
        latest_restorable_us=latest,
        held_by=tuple(held_by),
        shards=len(shard_holds),
        unread_shards=tuple(sorted(hold.shard_id for hold in shard_holds if hold.shard_id and hold.unread)),
        gaps=sum(1 for gap in cov.gaps if not bridged(gap_loss(gap), cov.bases)),
        # Like a gap, a quarantined record stops cutting moments once a bootstrap is newer than it; its
        # file stays (requeue may still want it), so counting files would hold the alarm for ever.
        quarantined=sum(1 for loss in cov.losses
                        if loss.kind == "quarantine" and not bridged(loss, cov.bases)),
    )


def coverage_proof(store: Store, table: str, now_us: int) -> CoverageProof:
    """The proof for ``table`` in ``store`` at ``now_us`` (changes are not counted: only times are read)."""
    return prove(coverage(store, table), now_us)
