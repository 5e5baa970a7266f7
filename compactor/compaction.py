"""One compaction run: merge small files of closed hours, then a base snapshot at the watermark."""

from __future__ import annotations

from dataclasses import dataclass

from changelog.errors import UsageError
from changelog.snapshot import Manifest, list_manifests
from changelog.store import Store
from compactor.merge import MergeResult, merge_small_files
from compactor.snapshots import build_snapshot, default_snapshot_time


@dataclass(frozen=True)
class CompactionResult:
    """What a compaction run did; ``snapshot`` is None when nothing new had arrived."""

    merge: MergeResult
    snapshot: Manifest | None


def compact(store: Store, table: str, at_us: int | None = None, *, merge: bool = True) -> CompactionResult:
    """Merge closed hours' small files, then snapshot at ``at_us`` (default: the watermark).

    With the default moment, no snapshot is taken when the newest one is already at the watermark.
    """
    target = at_us if at_us is not None else default_snapshot_time(store, table)
    manifests = list_manifests(store, table)
    if at_us is not None and manifests and any(m.snapshot_time_us == at_us for _, m in manifests):
        raise UsageError("a snapshot at that moment already exists")
    merged = merge_small_files(store, table, target) if merge else MergeResult(0, 0, 0, 0)
    if at_us is None and manifests and manifests[-1][1].snapshot_time_us >= target and merged.files_in == 0:
        return CompactionResult(merged, None)
    return CompactionResult(merged, build_snapshot(store, table, target))
