"""Several tables restored to one moment with one command; status across tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from changelog.codec import decode_lambda_record
from changelog.meta import meta_from_description, write_meta
from changelog.store import Store
from ddb_rewind.cli import main
from stream_consumer.capture import capture_batch
from tests.events import pk_table_description
from tests.model import Op, model_state, stream_records

T0 = 1_700_000_000
OPS = {
    "orders": [Op(0, {"pk": {"S": "o1"}, "n": {"N": "1"}}, T0), Op(0, {"pk": {"S": "o1"}, "n": {"N": "2"}}, T0 + 2),
               Op(1, {"pk": {"S": "o2"}}, T0 + 3)],
    "customers": [Op(0, {"pk": {"S": "c1"}}, T0 + 1), Op(1, {"pk": {"S": "c2"}}, T0 + 2),
                  Op(1, None, T0 + 9)],
}


def _at(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).isoformat()


@pytest.fixture
def two(store: Store) -> Store:
    for table, ops in OPS.items():
        capture_batch(store, stream_records(table, ops), decode_lambda_record, source="test")
        write_meta(store, meta_from_description(pk_table_description(table)))
    return store


def _scan(name: str) -> dict[str, str]:
    pages = boto3.client("dynamodb").get_paginator("scan").paginate(TableName=name)
    return {json.dumps(i["pk"]): json.dumps(i, sort_keys=True) for p in pages for i in p["Items"]}


def _model(table: str, second: int) -> dict[str, str]:
    state = model_state(OPS[table], second)
    return {json.dumps(json.loads(image)["pk"]): json.dumps(json.loads(image), sort_keys=True)
            for image in state.values()}


def test_every_table_is_restored_to_the_same_moment(two: Store, aws: None,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--tables", "orders,customers", "--store", two.uri, "--at", _at(T0 + 2),
                 "--to-table-suffix=-restored", "--create-table"]) == 0
    assert _scan("orders-restored") == _model("orders", T0 + 2)
    assert _scan("customers-restored") == _model("customers", T0 + 2)
    assert "restored 2 of 2 tables" in capsys.readouterr().out


def test_one_table_out_of_coverage_means_none_is_written(two: Store, aws: None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # customers is restorable at T0+9; orders was last captured at T0+3.
    assert main(["replay", "--tables", "orders,customers", "--store", two.uri, "--at", _at(T0 + 9),
                 "--to-table-suffix=-restored", "--create-table"]) == 5
    assert "'orders'" in capsys.readouterr().err
    assert boto3.client("dynamodb").list_tables()["TableNames"] == []


def test_an_existing_target_means_none_is_written(two: Store, aws: None) -> None:
    boto3.client("dynamodb").create_table(
        TableName="customers-restored", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    assert main(["replay", "--tables", "orders,customers", "--store", two.uri, "--at", _at(T0 + 2),
                 "--to-table-suffix=-restored", "--create-table"]) == 8
    assert "orders-restored" not in boto3.client("dynamodb").list_tables()["TableNames"]


def test_to_dir_writes_one_file_per_table(two: Store, tmp_path: Path) -> None:
    assert main(["replay", "--tables", "orders,customers", "--store", two.uri, "--at", _at(T0 + 2),
                 "--to-dir", str(tmp_path)]) == 0
    for table in OPS:
        lines = (tmp_path / f"{table}.jsonl").read_text().splitlines()
        assert len(lines) == len(model_state(OPS[table], T0 + 2))


def test_tables_need_a_target_naming_rule(two: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--tables", "orders,customers", "--store", two.uri, "--at", _at(T0 + 2),
                 "--to-table", "restored"]) == 2
    assert "--to-table-suffix" in capsys.readouterr().err


def test_status_names_the_latest_moment_restorable_for_all_tables(two: Store,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--store", two.uri, "--tables", "orders,customers"]) == 0
    out = capsys.readouterr().out
    assert f"latest moment restorable for all 2 tables: {_at(T0 + 3).replace('+00:00', 'Z')}" in out
