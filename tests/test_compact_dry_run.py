"""``compact --dry-run``: what a compaction would merge, snapshot, remove and fold, with nothing written."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from changelog.codec import decode_lambda_record
from changelog.errors import EXIT_OUT_OF_COVERAGE
from changelog.store import LocalStore, Store
from changelog.timefmt import format_time, from_micros
from compactor.compaction import compact, plan_compaction
from compactor.ledger_fold import fold_ledger
from compactor.merge import merge_small_files
from ddb_rewind.cli import main
from stream_consumer.capture import capture_batch
from tests.model import Op, stream_records

TABLE = "orders"
T0 = 1_700_000_000
OPS = [Op(i % 4, {"pk": {"S": "abcd"[i % 4]}, "n": {"N": str(i)}}, T0 + 600 * i) for i in range(24)]


def _digest(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture
def captured(store: Store) -> Store:
    records = stream_records(TABLE, OPS)
    for start in range(0, len(records), 3):  # many small files over four hours, as a busy Lambda leaves them
        capture_batch(store, records[start:start + 3], decode_lambda_record, source="test")
    return store


def test_a_dry_run_writes_nothing_and_says_what_the_run_then_does(
        aws: None, captured: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    # The table exists, so a real run would record its settings: a dry run does not read them.
    boto3.client("dynamodb").create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                                          AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                                          BillingMode="PAY_PER_REQUEST")
    before = _digest(captured.root)
    assert main(["compact", "--table", TABLE, "--store", captured.uri, "--dry-run"]) == 0
    said = capsys.readouterr()
    assert _digest(captured.root) == before
    assert said.err == ""
    plan = plan_compaction(captured, TABLE)
    assert plan.files > 0 and plan.snapshot_us is not None
    assert f"would merge {plan.files:,} change files of {plan.hours:,} hours" in said.out
    assert f"would take a snapshot of {TABLE} at {format_time(from_micros(plan.snapshot_us))}" in said.out
    assert said.out.rstrip().endswith("dry run: nothing was written")

    done = compact(captured, TABLE)
    assert (done.merge.partitions, done.merge.files_in) == (plan.hours, plan.files)
    assert done.snapshot is not None and done.snapshot.snapshot_time_us == plan.snapshot_us


def test_after_a_run_a_dry_run_finds_nothing_more_to_merge_or_snapshot(captured: Store) -> None:
    compact(captured, TABLE)
    plan = plan_compaction(captured, TABLE)
    assert (plan.hours, plan.files, plan.snapshot_us) == (0, 0, None)


def test_a_dry_run_counts_the_ledger_records_a_fold_deletes(captured: Store) -> None:
    merge_small_files(captured, TABLE, (T0 + 600 * len(OPS)) * 1_000_000)  # a del record per file it removed
    planned = plan_compaction(captured, TABLE).folded_records
    assert planned > 0
    assert fold_ledger(captured, TABLE) == planned


def test_a_dry_run_refuses_a_moment_outside_coverage_as_a_run_does(
        captured: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digest(captured.root)
    early = datetime.fromtimestamp(T0 - 3600, tz=UTC).isoformat()
    args = ["compact", "--table", TABLE, "--store", captured.uri, "--at", early, "--no-settings"]
    assert main([*args, "--dry-run"]) == EXIT_OUT_OF_COVERAGE
    dry = capsys.readouterr().err
    assert main(args) == EXIT_OUT_OF_COVERAGE
    assert capsys.readouterr().err == dry
    assert _digest(captured.root) == before
