"""Removing the shard records that no longer change what coverage proves.

Every shard the stream ever had leaves a checkpoint (the poller's or the probe's) and, on the Lambda
path, a progress record; DynamoDB Streams closes a shard every few hours, and every coverage read
fetches each of them. ``changelog.captured.settled_shards`` says which can go without changing any
answer; the compactor removes them on each run, a shard's progress record before its checkpoint (a
progress record without its checkpoint would count as an open shard, held at its end).
"""

from __future__ import annotations

from changelog.captured import read_shard_progress, read_shard_records, settled_shards, with_progress
from changelog.errors import UnsafeName
from changelog.gaps import checkpoint_gaps
from changelog.layout import capture_root, checkpoint_path, checkpoints_root, shard_progress_path
from changelog.store import Store


def settled_shard_records(store: Store, table: str) -> list[str]:
    """The shards whose records ``prune_shard_records`` would remove, in the order it removes them."""
    listing = [*store.list(checkpoints_root(table)), *store.list(capture_root(table) + "progress/")]
    shards = read_shard_records(store, table, listing)
    progress = read_shard_progress(store, table, listing)
    # As coverage reads them: progress raises a shard's watermark.
    merged = with_progress(shards, progress.values()) if progress else shards
    listed = set(listing)
    # Only a checkpoint at its own shard's path is removed; one listing a gap is the gap's second copy
    # (changelog.gaps.all_gaps), so it stays.
    kept = frozenset(shard_id for shard_id in shards
                     if _own_path(table, shard_id) not in listed or checkpoint_gaps(store, _own_path(table, shard_id)))
    return [shard_id for shard_id in settled_shards(merged, kept) if shard_id in shards]


def _own_path(table: str, shard_id: str) -> str:
    try:
        return checkpoint_path(table, shard_id)
    except UnsafeName:  # a checkpoint naming a shard no path can hold: not ours to remove
        return ""


def prune_shard_records(store: Store, table: str) -> int:
    """Remove the records of the settled shards; returns how many shards' records were removed."""
    settled = settled_shard_records(store, table)
    for shard_id in settled:
        store.delete(shard_progress_path(table, shard_id))
        store.delete(checkpoint_path(table, shard_id))
    return len(settled)
