"""One compaction run: merge small files of closed hours and take a base snapshot at the watermark, then
remove the records of settled shards and fold the ledger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from changelog.errors import UsageError
from changelog.snapshot import Manifest, list_manifests
from changelog.state import Coverage, check_restorable, coverage
from changelog.store import Store
from changelog.timefmt import format_time, from_micros
from compactor.ledger_fold import fold_ledger, foldable_records
from compactor.merge import MergeResult, merge_small_files, mergeable_hours
from compactor.shard_records import prune_shard_records, settled_shard_records
from compactor.snapshots import build_snapshot, default_snapshot_time, snapshot_input_bytes


@dataclass(frozen=True)
class CompactionResult:
    """What a compaction run did; ``snapshot`` is None when nothing new had arrived."""

    merge: MergeResult
    snapshot: Manifest | None
    # The Spark job started to compute the snapshot instead (compactor.spark_runs), when one was.
    spark_job: str | None = None
    # Shards whose records no longer change coverage, removed (compactor.shard_records).
    settled_shards: int = 0
    # Ledger records replaced by a fold (compactor.ledger_fold).
    folded_records: int = 0


def compact(store: Store, table: str, at_us: int | None = None, *, merge: bool = True,
            spark_above_bytes: int = 0, start_spark: Callable[[int], str] | None = None) -> CompactionResult:
    """``_merge_and_snapshot``, then the store's own records tidied: the records of settled shards
    removed and the ledger folded, last, so that a large first fold never delays a snapshot."""
    result = _merge_and_snapshot(store, table, at_us, merge=merge, spark_above_bytes=spark_above_bytes,
                                 start_spark=start_spark)
    return replace(result, settled_shards=prune_shard_records(store, table), folded_records=fold_ledger(store, table))


def _merge_and_snapshot(store: Store, table: str, at_us: int | None = None, *, merge: bool = True,
                        spark_above_bytes: int = 0, start_spark: Callable[[int], str] | None = None
                        ) -> CompactionResult:
    """Merge closed hours' small files, then snapshot at ``at_us`` (default: the watermark).

    ``at_us`` must lie inside the table's coverage (the one rule replay uses): a snapshot dated after
    the watermark would claim changes that were never captured, and one before the earliest
    restorable time would be built from partial history. With the default moment, no snapshot is
    taken when the newest one is already at or after the watermark; late files merged meanwhile are
    still read by every replay (they are not in any manifest's consumed list) until the next one.

    With ``start_spark``, a snapshot reading more than ``spark_above_bytes`` is handed to it (it starts
    the Spark job computing that moment and returns the job's id) instead of being built here.
    """
    cov, target, snapshot = _targets(store, table, at_us)
    if target is None:
        return CompactionResult(MergeResult(0, 0, 0, 0), None)
    merged = merge_small_files(store, table, target) if merge else MergeResult(0, 0, 0, 0)
    if not snapshot:
        return CompactionResult(merged, None)
    if start_spark is not None and snapshot_input_bytes(store, table, target) > spark_above_bytes:
        return CompactionResult(merged, None, spark_job=start_spark(target))
    return CompactionResult(merged, build_snapshot(store, table, target, cov=cov))


def _targets(store: Store, table: str, at_us: int | None) -> tuple[Coverage, int | None, bool]:
    """The table's coverage, the moment a run merges up to and snapshots (None: nothing to do), and
    whether it takes a snapshot there; refuses a moment outside coverage or one already snapshotted."""
    cov = coverage(store, table)
    target: int | None = at_us
    if at_us is not None:
        check_restorable(cov, from_micros(at_us), at_us)  # before merging anything
    else:
        target = default_snapshot_time(cov)
    manifests = list_manifests(store, table)
    if at_us is not None and any(m.snapshot_time_us == at_us for _, m in manifests):
        raise UsageError(f"a snapshot of {table!r} at {format_time(from_micros(at_us))} already exists")
    # With the default moment, none is taken when the newest snapshot is already at or after it.
    newer = at_us is None and target is not None and bool(manifests) and manifests[-1][1].snapshot_time_us >= target
    return cov, target, target is not None and not newer


@dataclass(frozen=True)
class CompactionPlan:
    """What a compaction run would do now (``compact --dry-run``), read from the store as it is."""

    hours: int  # hour partitions whose change files would be merged
    files: int  # change files merged
    snapshot_us: int | None  # the moment a snapshot would be taken at, if one would
    settled_shards: int
    # Counted on the ledger as it is now: the run's own merge would add a record per file it removes.
    folded_records: int


def plan_compaction(store: Store, table: str, at_us: int | None = None, *, merge: bool = True) -> CompactionPlan:
    """What ``compact`` with these arguments would do now; nothing is written (the same refusals)."""
    _, target, snapshot = _targets(store, table, at_us)
    hours = mergeable_hours(store, table, target) if merge and target is not None else {}
    return CompactionPlan(len(hours), sum(len(files) for files in hours.values()), target if snapshot else None,
                          len(settled_shard_records(store, table)), foldable_records(store, table))
