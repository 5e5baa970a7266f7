"""Replay into a table or a file gives exactly the items of the model; mistakes are one clear line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import fastavro
import pyarrow.parquet as pq
import pytest

from changelog.codec import binaries_to_base64, decode_lambda_record, item_key
from changelog.meta import meta_from_description, write_meta
from changelog.store import Store
from ddb_rewind.cli import main
from replayer.restoring.export import from_avro_value
from stream_consumer.capture import capture_batch
from tests.events import pk_table_description
from tests.model import Op, model_state, stream_records
from tests.workloads import EVERY_TYPE

TABLE = "orders"
T0 = 1_700_000_000
OPS = [
    Op(0, EVERY_TYPE, T0),
    Op(1, {"pk": {"S": "b"}, "status": {"S": "shipped"}, "total": {"N": "250.5"}}, T0),
    Op(2, {"pk": {"S": "ключ"}, "status": {"S": "new"}, "total": {"N": "10"}}, T0 + 1),
    Op(1, {"pk": {"S": "b"}, "status": {"S": "lost"}, "total": {"N": "250.5"}}, T0 + 2),
    Op(2, None, T0 + 3),
]


def _at(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).isoformat()


@pytest.fixture
def filled(store: Store) -> Store:
    capture_batch(store, stream_records(TABLE, OPS), decode_lambda_record, source="test")
    write_meta(store, meta_from_description(pk_table_description(TABLE)))
    return store


def _cli(*args: str) -> int:
    return main(list(args))


def test_jsonl_holds_one_item_line_per_item_with_the_exact_images(filled: Store, tmp_path: Path) -> None:
    out = tmp_path / "state.jsonl"
    assert _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0 + 2), "--to-file", str(out)) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    expected = model_state(OPS, T0 + 2)
    got = {item_key({"pk": json.loads(line)["Item"]["pk"]}): line for line in lines}
    assert got == {key: '{"Item":' + image + "}" for key, image in expected.items()}


def test_parquet_output_keeps_the_dynamodb_json(filled: Store, tmp_path: Path) -> None:
    out = tmp_path / "state.parquet"
    assert _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0 + 3), "--to-file", str(out)) == 0
    rows = pq.read_table(out).to_pylist()
    assert {row["item_key"]: row["item"] for row in rows} == model_state(OPS, T0 + 3)


def test_avro_output_round_trips_every_dynamodb_type(filled: Store, tmp_path: Path) -> None:
    out = tmp_path / "state.avro"
    assert _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0), "--to-file", str(out)) == 0
    with open(out, "rb") as handle:
        items = [{k: from_avro_value(v) for k, v in record["Item"].items()} for record in fastavro.reader(handle)]
    assert EVERY_TYPE in items
    assert len(items) == 2


def test_where_filters_on_plain_attribute_names(filled: Store, tmp_path: Path) -> None:
    out = tmp_path / "shipped.jsonl"
    assert _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0 + 1), "--to-file", str(out),
                "--where", "status = 'shipped' AND total > 100") == 0
    assert [json.loads(line)["Item"]["pk"] for line in out.read_text().splitlines()] == [{"S": "b"}]


def test_dry_run_reports_items_and_writes_nothing(filled: Store, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never.jsonl"
    assert _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0 + 1), "--to-file", str(out),
                "--dry-run") == 0
    assert "would write 3 items" in capsys.readouterr().out
    assert not out.exists()


def _scan(name: str) -> dict[str, str]:
    client = boto3.client("dynamodb")
    items = [binaries_to_base64(i) for p in client.get_paginator("scan").paginate(TableName=name) for i in p["Items"]]
    return {item_key({"pk": i["pk"]}): i for i in items}


def _normal(items: dict[str, Any]) -> dict[str, Any]:
    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: sorted(v) if k in ("SS", "NS", "BS") else norm(v) for k, v in value.items()}
        if isinstance(value, list):
            return [norm(v) for v in value]
        return value

    return {key: norm(json.loads(item) if isinstance(item, str) else item) for key, item in items.items()}


def test_replay_into_a_new_table_equals_the_model(filled: Store, aws: None) -> None:
    assert _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0 + 2), "--to-table", "restored",
                "--create-table") == 0
    assert _normal(_scan("restored")) == _normal(model_state(OPS, T0 + 2))


def test_replay_can_clear_an_existing_table_first(filled: Store, aws: None) -> None:
    _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0 + 1), "--to-table", "restored",
         "--create-table")
    assert _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0 + 3), "--to-table", "restored",
                "--into-existing", "--clear-first", "--yes") == 0
    assert _normal(_scan("restored")) == _normal(model_state(OPS, T0 + 3))


@pytest.mark.parametrize("key", [("id", "S"), ("pk", "N")])
def test_clear_first_into_a_table_keyed_otherwise_is_refused_before_anything_is_deleted(
        filled: Store, aws: None, key: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    # Every write would fail: clearing it first turned a wrong target name into an empty live table.
    client = boto3.client("dynamodb")
    client.create_table(TableName="prod", KeySchema=[{"AttributeName": key[0], "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": key[0], "AttributeType": key[1]}],
                        BillingMode="PAY_PER_REQUEST")
    client.put_item(TableName="prod", Item={key[0]: {key[1]: "7"}})
    capsys.readouterr()

    assert _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0 + 2), "--to-table", "prod",
                "--into-existing", "--clear-first", "--yes") == 8
    assert "it is not a table of these items" in _one_error_line(capsys)
    assert client.scan(TableName="prod")["Count"] == 1


def test_a_table_with_the_same_key_attributes_in_other_roles_is_refused() -> None:
    from changelog.errors import TargetKeyMismatch
    from replayer.restoring.target import check_same_key

    meta = {"key_schema": [{"AttributeName": "pk", "AttributeType": "S", "KeyType": "HASH"},
                           {"AttributeName": "sk", "AttributeType": "S", "KeyType": "RANGE"}]}
    swapped = {"KeySchema": [{"AttributeName": "sk", "KeyType": "HASH"}, {"AttributeName": "pk", "KeyType": "RANGE"}],
               "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                        {"AttributeName": "sk", "AttributeType": "S"}]}
    with pytest.raises(TargetKeyMismatch, match=r"keyed by sk \(S, partition\), pk \(S, sort\), the restored items "
                                                 r"by pk \(S, partition\), sk \(S, sort\)"):
        check_same_key("other", swapped, meta)
    check_same_key("copy", {**swapped, "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                                                     {"AttributeName": "sk", "KeyType": "RANGE"}]}, meta)


def _deletes_refused_after_the_first_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's BatchWriteItem answers the first batch of deletes, then AccessDenied (a policy that stops them)."""
    from moto.dynamodb.exceptions import ERROR_TYPE_PREFIX, DynamodbException
    from moto.dynamodb.responses import DynamoHandler

    real = DynamoHandler.batch_write_item
    seen = {"deletes": 0}

    def refusing(self: Any) -> Any:
        if any("DeleteRequest" in r for requests in self.body["RequestItems"].values() for r in requests):
            seen["deletes"] += 1
            if seen["deletes"] > 1:
                raise DynamodbException(ERROR_TYPE_PREFIX + "AccessDeniedException", "not allowed")
        return real(self)

    monkeypatch.setattr(DynamoHandler, "batch_write_item", refusing)


def test_a_clear_first_that_fails_part_way_is_a_failed_write_saying_what_it_deleted(
        filled: Store, aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    client = boto3.client("dynamodb")
    _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0 + 1), "--to-table", "restored",
         "--create-table")
    for n in range(57):
        client.put_item(TableName="restored", Item={"pk": {"S": f"extra-{n:02d}"}})
    _deletes_refused_after_the_first_batch(monkeypatch)
    capsys.readouterr()

    # Exit 2 says nothing was written; 25 items are gone by then.
    assert _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0 + 3), "--to-table", "restored",
                "--into-existing", "--clear-first", "--yes", "--workers", "1") == 3
    line = _one_error_line(capsys)
    assert "after 25 items were deleted" in line and "AccessDeniedException" in line
    assert client.scan(TableName="restored", Select="COUNT")["Count"] == 60 - 25


def test_dry_run_into_a_table_creates_nothing(filled: Store, aws: None) -> None:
    assert _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0 + 2), "--to-table", "restored",
                "--create-table", "--dry-run") == 0
    assert "restored" not in boto3.client("dynamodb").list_tables()["TableNames"]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ddb-rewind: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--at", "1699999999"], "before the earliest restorable time of 'orders', 2023-11-14T22:13:20Z"),
        (["--at", "1800000000"], "after the latest restorable time"),
        (["--at", "yesterday"], "cannot read time"),
        (["--at", _at(T0), "--to-file", "x.xlsx"], "use a file ending in .jsonl, .parquet, .avro or .csv"),
        (["--at", _at(T0), "--to-file", "/no/such/dir/x.jsonl"], "does not exist"),
        (["--at", _at(T0), "--to-file", "x.jsonl", "--where", "nosuchcolumn = 1"], "unknown attribute 'nosuchcolumn'"),
    ],
)
def test_replay_mistakes_are_one_clear_line(filled: Store, capsys: pytest.CaptureFixture[str], args: list[str],
                                            message: str) -> None:
    base = ["replay", "--table", TABLE, "--store", filled.uri]
    if "--to-file" not in args:
        args = [*args, "--to-file", "out.jsonl"]
    assert _cli(*base, *args) != 0
    assert message in _one_error_line(capsys)


def test_an_unknown_table_is_one_clear_line(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("replay", "--table", "nope", "--store", filled.uri, "--at", _at(T0), "--to-file", "x.jsonl") != 0
    assert "holds no table 'nope'" in _one_error_line(capsys)


def test_an_unknown_store_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("replay", "--table", TABLE, "--store", str(tmp_path / "nope"), "--at", _at(T0),
                "--to-file", "x.jsonl") != 0
    assert "does not exist" in _one_error_line(capsys)


def test_an_existing_target_table_is_refused_with_create_table(filled: Store, aws: None,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0), "--to-table", "restored",
         "--create-table")
    capsys.readouterr()
    assert _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0), "--to-table", "restored",
                "--create-table") != 0
    assert "already exists" in _one_error_line(capsys)


def test_a_missing_target_table_needs_create_table(filled: Store, aws: None,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("replay", "--table", TABLE, "--store", filled.uri, "--at", _at(T0), "--to-table", "absent") != 0
    assert "--create-table" in _one_error_line(capsys)



def test_replay_memory_bound_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from changelog.connection import DEFAULT_MEMORY_LIMIT, memory_limit

    monkeypatch.delenv("DDB_REWIND_MEMORY_LIMIT", raising=False)
    assert memory_limit() == DEFAULT_MEMORY_LIMIT
    monkeypatch.setenv("DDB_REWIND_MEMORY_LIMIT", "8GB")
    assert memory_limit() == "8GB"


def test_a_memory_bound_that_is_not_an_amount_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from changelog.connection import memory_limit
    from changelog.errors import UsageError

    monkeypatch.setenv("DDB_REWIND_MEMORY_LIMIT", "lots")
    with pytest.raises(UsageError, match="DDB_REWIND_MEMORY_LIMIT"):
        memory_limit()
