"""``bootstrap --dry-run``: what a bootstrap would copy and withdraw, with its refusals, and nothing written."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import boto3
import pytest

from changelog.codec import decode_lambda_record
from changelog.errors import EXIT_CONFLICT, EXIT_USAGE
from changelog.meta import meta_from_description, write_meta
from changelog.store import LocalStore
from compactor.bootstrap import bootstrap_from_export
from compactor.snapshots import build_snapshot
from ddb_rewind.cli import main
from stream_consumer.capture import capture_batch
from tests.events import lambda_record
from tests.exports import write_export

TABLE = "orders"
EXPORT_SECOND = 1_700_000_000
EXPORT_TIME = "2023-11-14T22:13:20.500Z"
DESCRIPTION: dict[str, Any] = {
    "TableName": TABLE,
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
}
ITEMS = [{"pk": {"S": f"user#{i}"}, "n": {"N": str(i)}} for i in range(7)]


def _digest(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture
def described(store: LocalStore) -> LocalStore:
    write_meta(store, meta_from_description(DESCRIPTION))
    return store


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return write_export(tmp_path / "bucket", TABLE, ITEMS, EXPORT_TIME, files=3)


def _bootstrap(store: LocalStore, *source: str) -> list[str]:
    return ["bootstrap", "--table", TABLE, "--store", store.uri, *source, "--dry-run"]


def test_an_export_dry_run_writes_nothing_and_says_what_the_run_then_does(
        described: LocalStore, export: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A snapshot built from changes alone, newer than the export: the run withdraws it.
    later = {"pk": {"S": "user#1"}, "n": {"N": "100"}}
    capture_batch(described, [lambda_record(TABLE, "MODIFY", {"pk": later["pk"]}, EXPORT_SECOND + 10, 200,
                                            new=later, old=ITEMS[1])], decode_lambda_record, source="test")
    build_snapshot(described, TABLE, (EXPORT_SECOND + 10) * 1_000_000)
    before = _digest(described.root)
    assert main(_bootstrap(described, "--from-export", str(export))) == 0
    said = capsys.readouterr().out
    assert _digest(described.root) == before
    assert "would import the export of orders: 7 items in 3 data files" in said
    assert "the snapshot would be at 2023-11-14T22:13:20.500000Z" in said
    assert "would withdraw 1 newer snapshot(s) built without this copy" in said
    assert said.rstrip().endswith("dry run: nothing was written")

    done = bootstrap_from_export(described, TABLE, str(export))
    assert (done.manifest.items, done.manifest.snapshot_time_us) == (7, EXPORT_SECOND * 1_000_000 + 500_000)
    assert len(done.withdrawn) == 1


def test_an_export_dry_run_refuses_what_the_run_refuses(described: LocalStore, export: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    bootstrap_from_export(described, TABLE, str(export))
    capsys.readouterr()
    # The run's refusal, line and exit code: a bootstrap not older than this one exists.
    assert main(_bootstrap(described, "--from-export", str(export))) == EXIT_CONFLICT
    assert "already has a export bootstrap" in capsys.readouterr().err
    assert main(["bootstrap", "--table", "other", "--store", described.uri, "--from-export", str(export),
                 "--dry-run"]) == EXIT_USAGE
    assert "the export is of table 'orders', not 'other'" in capsys.readouterr().err


def test_an_export_dry_run_does_not_save_the_key_schema_it_asks_dynamodb_for(
        aws: None, store: LocalStore, export: Path, capsys: pytest.CaptureFixture[str]) -> None:
    boto3.client("dynamodb").create_table(BillingMode="PAY_PER_REQUEST", **DESCRIPTION)
    before = _digest(store.root)
    assert main(_bootstrap(store, "--from-export", str(export))) == 0
    assert _digest(store.root) == before
    assert "7 items in 3 data files" in capsys.readouterr().out


def test_a_scan_dry_run_reads_no_item_and_records_no_settings(aws: None, store: LocalStore,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    client = boto3.client("dynamodb")
    client.create_table(BillingMode="PAY_PER_REQUEST", StreamSpecification={
        "StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}, **DESCRIPTION)
    for item in ITEMS:
        client.put_item(TableName=TABLE, Item=item)
    before = _digest(store.root)
    assert main(_bootstrap(store, "--scan", "--segments", "3")) == 0
    said = capsys.readouterr()
    assert _digest(store.root) == before
    assert "would Scan orders in 3 segments: about 7 items" in said.out
    assert said.out.rstrip().endswith("dry run: nothing was written")


def test_a_scan_dry_run_of_a_table_without_a_stream_is_refused_as_the_run_is(
        aws: None, store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    boto3.client("dynamodb").create_table(BillingMode="PAY_PER_REQUEST", **DESCRIPTION)
    assert main(_bootstrap(store, "--scan")) == main(_bootstrap(store, "--scan")[:-1]) != 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and "has no stream" in lines[0]
    assert _digest(store.root) == {}
