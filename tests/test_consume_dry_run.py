"""``consume --dry-run``: the shards a run would read records from, and the gaps it would record; nothing written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from changelog.errors import StreamConfigError
from changelog.store import LocalStore
from ddb_rewind.cli import main
from stream_consumer.checkpoint import read_checkpoints
from tests.test_poller import make_table

TABLE = "orders"


def _digest(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def _consume(store: LocalStore, *extra: str) -> list[str]:
    return ["consume", "--table", TABLE, "--store", store.uri, *extra]


def test_a_dry_run_writes_nothing_and_finds_the_records_the_run_then_stores(
        aws: None, store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    client = make_table()
    client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    before = _digest(store.root)
    assert main(_consume(store, "--dry-run")) == 0
    said = capsys.readouterr().out
    assert _digest(store.root) == before  # no checkpoint, no meta.json, no settings
    assert ": behind, complete to" in said and "1 behind" in said and "(dry run: nothing written)" in said

    assert main(_consume(store, "--once")) == 0
    assert "1 records captured" in capsys.readouterr().out
    assert main(_consume(store, "--dry-run")) == 0
    assert "0 behind" in capsys.readouterr().out


def test_a_dry_run_counts_a_shard_trimmed_past_its_checkpoint_as_the_gap_the_run_records(
        aws: None, store: LocalStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    client = make_table()
    client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    assert main(_consume(store, "--once")) == 0
    real = boto3.client("dynamodbstreams").__class__._make_api_call

    def trimmed(self: object, operation: str, params: dict[str, object]) -> object:
        if operation == "GetShardIterator" and params.get("ShardIteratorType") == "AFTER_SEQUENCE_NUMBER":
            raise ClientError({"Error": {"Code": "TrimmedDataAccessException", "Message": "trimmed"}}, operation)
        return real(self, operation, params)  # type: ignore[arg-type]

    monkeypatch.setattr("botocore.client.BaseClient._make_api_call", trimmed)
    capsys.readouterr()
    before = _digest(store.root)
    assert main(_consume(store, "--dry-run")) == 1
    assert "1 trimmed" in capsys.readouterr().out
    assert _digest(store.root) == before
    assert main(_consume(store, "--once")) == 1  # the run: a gap, then the records still in the stream
    assert any(checkpoint.gaps for checkpoint in read_checkpoints(store, TABLE).values())


def test_a_dry_run_refuses_a_table_without_a_stream_as_the_run_does(
        aws: None, store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    make_table(view=None)
    assert main(_consume(store, "--dry-run")) == main(_consume(store, "--once")) == StreamConfigError.exit_code
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]
    assert _digest(store.root) == {}
