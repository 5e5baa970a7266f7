"""Orphaned parts of killed, losing or stalled compactors: removed when old, never published over."""

from __future__ import annotations

import time
from typing import Any

import pytest

from changelog.codec import decode_lambda_record
from changelog.errors import ConflictError
from changelog.layout import snapshot_dir
from changelog.snapshot import MANIFEST, list_manifests
from changelog.store import Store
from compactor.policy import parse_policy
from compactor.retention import apply_expire, orphan_files, plan_expire
from compactor.snapshots import build_snapshot, publish_manifest
from stream_consumer.capture import capture_batch
from tests.faults.harness import assert_every_replay_equals_the_model
from tests.workloads import random_workload

AN_HOUR_LATER = 3700.0


@pytest.fixture
def work(fault_store: Store) -> Any:
    workload = random_workload(seed=5, writes=30)
    capture_batch(fault_store, workload.records, decode_lambda_record, source="test")
    return workload


def _moment(work: Any) -> int:
    return work.steps[-1].seconds * 1_000_000


def test_a_losing_compactors_parts_beside_a_published_manifest_are_removed_when_old(
        fault_store: Store, work: Any) -> None:
    loser = build_snapshot(fault_store, work.table, _moment(work), writer_id="loser", publish=False)
    winner = build_snapshot(fault_store, work.table, _moment(work), writer_id="winner")
    directory = snapshot_dir(work.table, winner.snapshot_time)
    assert orphan_files(fault_store, work.table) == []  # young: a compactor may still be at work
    later = orphan_files(fault_store, work.table, clock=lambda: time.time() + AN_HOUR_LATER)
    assert later == [f"{directory}/{part}" for part in loser.parts]
    plan = plan_expire(fault_store, work.table, parse_policy("changes=400d"),
                       clock=lambda: time.time() + AN_HOUR_LATER)
    apply_expire(fault_store, plan)
    assert fault_store.list(directory + "/") == sorted([f"{directory}/{MANIFEST}",
                                                        *(f"{directory}/{p}" for p in winner.parts)])
    assert_every_replay_equals_the_model(fault_store, work, [work.steps[-1].seconds])


def test_a_compactor_whose_parts_were_removed_while_it_stalled_publishes_nothing(
        fault_store: Store, work: Any) -> None:
    stalled = build_snapshot(fault_store, work.table, _moment(work), writer_id="stalled", publish=False)
    directory = snapshot_dir(work.table, stalled.snapshot_time)
    plan = plan_expire(fault_store, work.table, parse_policy("changes=400d"),
                       clock=lambda: time.time() + AN_HOUR_LATER)
    assert plan.drop_orphans  # expire, an hour later, takes the stalled run's parts
    apply_expire(fault_store, plan)
    with pytest.raises(ConflictError, match="nothing was published"):
        publish_manifest(fault_store, f"{directory}/{MANIFEST}", stalled)
    assert list_manifests(fault_store, work.table) == []
    assert_every_replay_equals_the_model(fault_store, work, [work.steps[-1].seconds])


def test_a_part_changed_since_it_was_written_is_refused(fault_store: Store, work: Any) -> None:
    manifest = build_snapshot(fault_store, work.table, _moment(work), writer_id="w", publish=False)
    directory = snapshot_dir(work.table, manifest.snapshot_time)
    fault_store.write(f"{directory}/{manifest.parts[0]}", b"truncated")
    with pytest.raises(ConflictError, match="nothing was published"):
        publish_manifest(fault_store, f"{directory}/{MANIFEST}", manifest)
    assert list_manifests(fault_store, work.table) == []
