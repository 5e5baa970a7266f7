"""Real ``ddb-rewind`` processes killed at chosen store operations, racing each other, or reading during a merge.

Every outcome is checked the same way: each replay equals the independent model exactly, or the
product refused with one line and a non-zero exit where refusing is right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from changelog.layout import hour_partition
from changelog.snapshot import list_manifests
from changelog.store import Store
from tests.faults.harness import (
    assert_every_replay_equals_the_model,
    file_state,
    hours_workload,
    kill_when_blocked,
    kill_when_present,
    one_error_line,
    run_rewind,
    s3_only,
    start_rewind,
    wait_blocked,
)
from tests.faults.proxy import DELETE_OBJECTS, FaultProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def work(fault_store: Store) -> Any:
    """Several hours of changes in many small files."""
    workload = hours_workload(seed=9)
    workload.capture(fault_store, batch=6)
    return workload


def _compact(store: Store, work: Any, proxy: FaultProxy) -> Any:
    return start_rewind("compact", "--no-settings", "--table", work.table, "--store", store.uri, proxy=proxy)


def test_a_compactor_killed_before_its_manifest_then_rerun_equals_the_model(
        fault_store: Store, proxy: FaultProxy, work: Any, tmp_path: Path) -> None:
    root = fault_store.local_root()
    if root is None:
        held = proxy.add("block", method="PUT", service="s3", path=r"manifest\.json")
        kill_when_blocked(_compact(fault_store, work, proxy), held)
        assert list_manifests(fault_store, work.table) == []
    else:
        # Killed from outside as soon as the first part is being written (its temporary file
        # appears); the manifest may or may not have followed before the signal landed.
        assert kill_when_present(_compact(fault_store, work, proxy), root, "tables/*/snapshots/*/*")
    rerun = run_rewind("compact", "--no-settings", "--table", work.table, "--store", fault_store.uri, proxy=proxy)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list_manifests(fault_store, work.table)) == 1
    assert_every_replay_equals_the_model(fault_store, work)


def test_a_compactor_killed_between_merging_and_deleting_then_rerun_equals_the_model(
        fault_store: Store, proxy: FaultProxy, work: Any) -> None:
    s3_only(fault_store)
    held = proxy.add("block", method="POST", service="s3", path=DELETE_OBJECTS, skip=1)
    kill_when_blocked(_compact(fault_store, work, proxy), held)
    assert_every_replay_equals_the_model(fault_store, work)  # merged file and originals side by side
    rerun = run_rewind("compact", "--no-settings", "--table", work.table, "--store", fault_store.uri, proxy=proxy)
    assert rerun.returncode == 0, rerun.stderr
    assert_every_replay_equals_the_model(fault_store, work)


def _assert_one_published(fault_store: Store, work: Any, outcomes: list[tuple[str, str, int]]) -> None:
    for _out, err, code in outcomes:
        assert code in (0, 8), err
        if code == 8:
            one_error_line(err)
        else:
            assert "Traceback" not in err
    assert len(list_manifests(fault_store, work.table)) == 1
    assert_every_replay_equals_the_model(fault_store, work)


def test_two_compactors_started_together_publish_exactly_one_snapshot(
        fault_store: Store, proxy: FaultProxy, work: Any) -> None:
    first, second = _compact(fault_store, work, proxy), _compact(fault_store, work, proxy)
    outcomes = [(*process.communicate(timeout=120), process.returncode) for process in (first, second)]
    _assert_one_published(fault_store, work, outcomes)


@pytest.mark.parametrize("held_at", [
    pytest.param(r"manifest\.json", id="publish"),
    pytest.param(DELETE_OBJECTS, id="merge"),  # the merge deletes its originals in one call per hour
])
def test_a_compactor_overtaken_by_another_publishes_nothing_and_says_so_in_one_line(
        fault_store: Store, proxy: FaultProxy, work: Any, held_at: str) -> None:
    s3_only(fault_store)
    method = "PUT" if "manifest" in held_at else "POST"
    held = proxy.add("block", method=method, service="s3", path=held_at, then="forward")
    first = _compact(fault_store, work, proxy)
    wait_blocked(held)
    second = run_rewind("compact", "--no-settings", "--table", work.table, "--store", fault_store.uri, proxy=proxy)
    held.release.set()
    out, err = first.communicate(timeout=120)
    _assert_one_published(fault_store, work, [(out, err, first.returncode),
                                              (second.stdout, second.stderr, second.returncode)])


def test_a_replay_killed_while_writing_then_rerun_equals_the_model(
        fault_store: Store, proxy: FaultProxy, work: Any, direct: Any) -> None:
    s3_only(fault_store)
    second = work.steps[-1].seconds
    args = ("replay", "--table", work.table, "--store", fault_store.uri, "--at", str(second),
            "--to-table", "restored", "--workers", "1")
    held = proxy.add("block", operation="BatchWriteItem", applied=True)
    kill_when_blocked(start_rewind(*args, "--create-table", proxy=proxy), held)
    rerun = run_rewind(*args, "--into-existing", "--clear-first", "--yes", proxy=proxy)
    assert rerun.returncode == 0, rerun.stderr
    from changelog.codec import binaries_to_base64, item_key

    items = direct("dynamodb").scan(TableName="restored")["Items"]
    assert {item_key({"pk": i["pk"]}): binaries_to_base64(i) for i in items} == work.state_at(second)


def test_a_replay_whose_files_a_merge_deleted_meanwhile_equals_the_model_or_refuses_in_one_line(
        fault_store: Store, proxy: FaultProxy, work: Any, tmp_path: Path) -> None:
    s3_only(fault_store)
    second = work.steps[-1].seconds
    out = tmp_path / "replay.jsonl"
    # The replay has listed the files and is about to read one of the first, closed hour when it is
    # held; a whole compaction (merge: that hour's originals deleted, snapshot) runs meanwhile; then
    # the replay goes on.
    first_hour = hour_partition(work.steps[0].seconds * 1_000_000)
    held = proxy.add("block", method="GET", service="s3", path=f"/changes/{first_hour}/", then="forward")
    replay = start_rewind("replay", "--table", work.table, "--store", fault_store.uri, "--at", str(second),
                          "--to-file", str(out), proxy=proxy)
    wait_blocked(held)
    merged = run_rewind("compact", "--no-settings", "--table", work.table, "--store", fault_store.uri)
    assert merged.returncode == 0, merged.stderr
    held.release.set()
    _, err = replay.communicate(timeout=120)
    if replay.returncode == 0:
        assert file_state(out) == work.state_at(second)
    else:
        one_error_line(err)


def test_a_consumer_killed_at_its_checkpoint_then_rerun_equals_the_live_table(
        fault_store: Store, proxy: FaultProxy, direct: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import random
    from datetime import timedelta

    from moto.dynamodb.models import table as moto_table

    from changelog.codec import binaries_to_base64, item_key
    from changelog.state import coverage
    from tests.faults.harness import replayed
    from tests.workloads import random_item

    s3_only(fault_store)
    dynamodb = direct("dynamodb")
    dynamodb.create_table(TableName="live", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                          BillingMode="PAY_PER_REQUEST",
                          StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    # The poller's watermark stays 5 s behind the wall clock: the writes are stamped 10 s back (moto
    # serves from this process), so every one is behind it at once, without waiting.
    stamped = moto_table.utcnow
    monkeypatch.setattr(moto_table, "utcnow", lambda: stamped() - timedelta(seconds=10))
    rng = random.Random(3)
    for _ in range(40):
        key = {"pk": {"S": f"k{rng.randrange(8)}"}}
        if rng.random() < 0.2:
            dynamodb.delete_item(TableName="live", Key=key)
        else:
            from changelog.codec import base64_to_binaries

            dynamodb.put_item(TableName="live", Item=base64_to_binaries(random_item(rng, key)))
    held = proxy.add("block", method="PUT", service="s3", path=r"/checkpoints/")
    args = ("consume", "--table", "live", "--store", fault_store.uri, "--once")
    kill_when_blocked(start_rewind(*args, proxy=proxy), held)
    rerun = run_rewind(*args, proxy=proxy)
    assert rerun.returncode == 0, rerun.stderr
    latest = coverage(fault_store, "live").latest_us
    assert latest is not None
    live = {item_key({"pk": i["pk"]}): binaries_to_base64(i) for i in dynamodb.scan(TableName="live")["Items"]}
    assert replayed(fault_store, "live", latest // 1_000_000) == live


@pytest.mark.parametrize("fault", ["error", "drop"])
def test_a_replay_during_an_s3_outage_refuses_in_one_line(
        fault_store: Store, proxy: FaultProxy, work: Any, tmp_path: Path, fault: str) -> None:
    s3_only(fault_store)
    proxy.add(fault, method="GET", service="s3", path=r"/changes/.*\.parquet", count=10_000)
    replay = run_rewind("replay", "--table", work.table, "--store", fault_store.uri, "--at",
                        str(work.steps[-1].seconds), "--to-file", str(tmp_path / "out.jsonl"), proxy=proxy)
    assert replay.returncode == 7
    assert "s3://faults/backups" in one_error_line(replay.stderr)
    assert not (tmp_path / "out.jsonl").exists()
