"""The records of shards that no longer change coverage are removed, and coverage stays what it was.

A checkpoint (and on the Lambda path a progress record) is written for every shard the stream ever
had, a new shard every few hours; every coverage read fetches each one. The compactor removes those
``changelog.captured.settled_shards`` names (compactor/shard_records.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changelog.captured import STREAM_KEEPS_US, ShardProgress, capture_watermark, record_shard_progress
from changelog.codec import decode_lambda_record
from changelog.gaps import Gap
from changelog.layout import capture_root, checkpoints_root
from changelog.store import LocalStore, Store
from compactor.compaction import compact
from compactor.shard_records import prune_shard_records
from stream_consumer.capture import capture_batch
from stream_consumer.checkpoint import Checkpoint, write_checkpoint
from tests.events import lambda_record

TABLE = "orders"
ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2025-01-01T00:00:00.000"
T = 1_750_000_000 * 1_000_000
HOUR = 3_600_000_000


def _answer(store: Store) -> int | None:
    """The latest restorable time capture proves, as every coverage read computes it."""
    listing = [*store.list(checkpoints_root(TABLE)), *store.list(capture_root(TABLE))]
    return capture_watermark(store, TABLE, listing, None)


def _shards(store: Store) -> list[str]:
    return sorted(path.rsplit("/", 1)[-1] for path in store.list(checkpoints_root(TABLE)))


@st.composite
def lineages(draw: Any) -> tuple[list[Checkpoint], list[ShardProgress]]:
    """Shards of a stream as their records may stand: each shard's parent mostly the shard before it (a
    rollover), else any earlier shard, one never seen or none; closed or open; read to some hours after
    its parent's read (within the stream's day or past it) or not at all; progress records for some."""
    checkpoints: list[Checkpoint] = []
    read_to: dict[str, int] = {}
    for number in range(draw(st.integers(1, 8))):
        earlier = [c.shard_id for c in checkpoints]
        parent = draw(st.one_of(st.sampled_from(earlier[-1:] or [None]),
                                st.sampled_from([None, "shardId-gone", *earlier])))
        hours = draw(st.none() | st.integers(0, 60).map(lambda h, p=parent: read_to.get(p or "", 0) + h))
        if hours is not None:
            read_to[f"shardId-{number}"] = hours
        checkpoints.append(Checkpoint(f"shardId-{number}", parent, closed=draw(st.booleans()),
                                      watermark_us=None if hours is None else T + hours * HOUR))
    progress = [ShardProgress(shard_id, ARN, "1" * 21, T + hours * HOUR + 1)
                for shard_id, hours in draw(st.dictionaries(st.sampled_from([c.shard_id for c in checkpoints]),
                                                            st.integers(0, 120), max_size=3)).items()]
    return checkpoints, progress


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(lineages())
def test_removing_settled_shards_never_changes_the_latest_restorable_time(
        lineage: tuple[list[Checkpoint], list[ShardProgress]]) -> None:
    checkpoints, progress = lineage
    with tempfile.TemporaryDirectory() as root:
        store = LocalStore(Path(root))
        for checkpoint in checkpoints:
            write_checkpoint(store, TABLE, checkpoint)
        for shard in progress:
            record_shard_progress(store, TABLE, shard)
        before = _answer(store)
        removed = prune_shard_records(store, TABLE)
        assert _answer(store) == before
        assert len(_shards(store)) == len(checkpoints) - removed
        assert prune_shard_records(store, TABLE) == 0  # what is left is what changes the answer


def _parent_and_child(store: Store, child_read_to: int, gaps: tuple[Gap, ...] = ()) -> None:
    write_checkpoint(store, TABLE, Checkpoint("shardId-1", None, closed=True, watermark_us=T, gaps=gaps))
    record_shard_progress(store, TABLE, ShardProgress("shardId-1", ARN, "1" * 21, T - HOUR))
    write_checkpoint(store, TABLE, Checkpoint("shardId-2", "shardId-1", watermark_us=child_read_to))


def test_a_closed_parent_its_child_has_read_past_the_streams_day_goes_with_its_progress(store: Store) -> None:
    _parent_and_child(store, T + STREAM_KEEPS_US)
    before = _answer(store)
    assert prune_shard_records(store, TABLE) == 1
    assert _shards(store) == ["shardId-2.json"]
    assert store.list(capture_root(TABLE) + "progress/") == []
    assert _answer(store) == before == T + STREAM_KEEPS_US


def test_a_closed_parent_still_within_the_streams_day_stays(store: Store) -> None:
    # The stream may still list it: a poller or probe that found no checkpoint would start it afresh.
    _parent_and_child(store, T + STREAM_KEEPS_US - 1)
    assert prune_shard_records(store, TABLE) == 0


def test_a_checkpoint_listing_a_gap_stays(store: Store) -> None:
    # It is the gap's second copy: deleting the gap record alone must not lift the refusal.
    gap = Gap("shardId-1", T, "trimmed before it was read", start_us=T - HOUR, after_sequence_number="1" * 21)
    _parent_and_child(store, T + 2 * STREAM_KEEPS_US, gaps=(gap,))
    assert prune_shard_records(store, TABLE) == 0


@pytest.fixture
def captured(store: Store) -> Store:
    """A table with one change captured, whose stream had a shard closed two days before its child's read."""
    capture_batch(store, [lambda_record(TABLE, "INSERT", {"pk": {"S": "a"}}, T / 1e6, 100,
                                        new={"pk": {"S": "a"}})], decode_lambda_record, source="test")
    _parent_and_child(store, T + 2 * STREAM_KEEPS_US)
    return store


def test_each_compaction_removes_the_settled_shards_records(captured: Store) -> None:
    assert compact(captured, TABLE).settled_shards == 1
    assert _shards(captured) == ["shardId-2.json"]
