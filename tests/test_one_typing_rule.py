"""One typing rule (changelog.plain): an item reads with the same column types and values in SQL's
``<table>_at`` and in ``replay --to-file`` .parquet and .csv, its key attributes first."""

from __future__ import annotations

import base64
import csv
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from changelog.store import Store
from ddb_rewind.cli import main
from replayer.engines.views import open_sql
from tests.workloads import BASE, Workload

BIG = "9" * 38
B64 = base64.b64encode(b"\x00\xffbin").decode()
ITEM: dict[str, Any] = {
    "zone": {"S": "eu"}, "at": {"N": "5"},  # partition key zone, sort key at: names sort the other way
    "s": {"S": "shipped"}, "n": {"N": BIG}, "f": {"N": "12.50"}, "b": {"B": B64}, "ok": {"BOOL": True},
    "nothing": {"NULL": True}, "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [B64]},
    "l": {"L": [{"S": "x"}, {"N": "1"}]}, "m": {"M": {"k": {"S": "v"}}},
}
TYPES = {"zone": "VARCHAR", "at": "DECIMAL(38,0)", "s": "VARCHAR", "n": "DECIMAL(38,0)", "f": "DECIMAL(38,2)",
         "b": "BLOB", "ok": "BOOLEAN", "nothing": '"NULL"', "ss": "VARCHAR[]", "ns": "VARCHAR[]", "bs": "BLOB[]",
         "l": "JSON", "m": "JSON"}
VALUES = {"zone": "eu", "at": Decimal(5), "s": "shipped", "n": Decimal(BIG), "f": Decimal("12.50"),
          "b": b"\x00\xffbin", "ok": True, "nothing": None, "ss": ["a", "b"], "ns": ["1", "2.5"],
          "bs": [b"\x00\xffbin"], "l": '{"L":[{"S":"x"},{"N":"1"}]}', "m": '{"M":{"k":{"S":"v"}}}'}
AT = datetime.fromtimestamp(BASE, tz=UTC).isoformat()


@pytest.fixture
def captured(store: Store) -> Store:
    work = Workload(key_names=("zone", "at"), key_types=("S", "N"))
    work.put(ITEM, BASE)
    work.capture(store)
    return store


def _sql(store: Store) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    con = open_sql(store, plain_tables=True)
    relation = con.sql(f"SELECT * FROM orders_at('{AT}')")
    (row,) = relation.fetchall()
    return list(zip(relation.columns, map(str, relation.types), strict=True)), dict(zip(relation.columns, row,
                                                                                         strict=True))


def _parquet(store: Store, tmp_path: Path) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    path = tmp_path / "x.parquet"
    assert main(["replay", "--table", "orders", "--store", store.uri, "--at", AT, "--to-file", str(path)]) == 0
    relation = duckdb.sql(f"SELECT * FROM read_parquet('{path}')")
    (row,) = relation.fetchall()
    return list(zip(relation.columns, map(str, relation.types), strict=True)), dict(zip(relation.columns, row,
                                                                                         strict=True))


def test_sql_types_every_attribute_value_type_by_the_rule(captured: Store) -> None:
    columns, row = _sql(captured)
    typed = {name: kind for name, kind in columns if name in TYPES}
    assert typed == TYPES
    assert {name: row[name] for name in TYPES} == VALUES


def test_parquet_gives_the_same_types_and_values_as_sql(captured: Store, tmp_path: Path) -> None:
    sql_columns, sql_row = _sql(captured)
    columns, row = _parquet(captured, tmp_path)
    assert {n: t for n, t in columns if n in TYPES} == {n: t for n, t in sql_columns if n in TYPES}
    assert {n: row[n] for n in TYPES} == {n: sql_row[n] for n in TYPES}


def test_csv_gives_the_text_of_the_same_values(captured: Store, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    assert main(["replay", "--table", "orders", "--store", captured.uri, "--at", AT, "--to-file", str(path)]) == 0
    with open(path, encoding="utf-8", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert {name: row[name] for name in TYPES} == {
        "zone": "eu", "at": "5", "s": "shipped", "n": BIG, "f": "12.50", "b": B64, "ok": "true", "nothing": "",
        "ss": '["a","b"]', "ns": '["1","2.5"]', "bs": json.dumps([B64]), "l": VALUES["l"], "m": VALUES["m"]}


def test_sql_columns_put_the_key_attributes_first(captured: Store) -> None:
    columns, _row = _sql(captured)
    assert [name for name, _ in columns][:5] == ["zone", "at", "item_key", "keys", "item"]


def test_parquet_columns_put_the_key_attributes_first(captured: Store, tmp_path: Path) -> None:
    columns, _row = _parquet(captured, tmp_path)
    assert [name for name, _ in columns][:6] == ["zone", "at", "item_key", "keys", "item", "doc"]


def test_csv_columns_put_the_key_attributes_first(captured: Store, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    assert main(["replay", "--table", "orders", "--store", captured.uri, "--at", AT, "--to-file", str(path)]) == 0
    header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[:3] == ["zone", "at", "item_key"] and header[-1] == "item"


def test_numbers_beyond_decimal_38_are_their_exact_text_in_sql_and_parquet(store: Store, tmp_path: Path) -> None:
    work = Workload(key_names=("zone", "at"), key_types=("S", "N"))
    work.put({"zone": {"S": "a"}, "at": {"N": "1"}, "n": {"N": "1" * 30}}, BASE)
    work.put({"zone": {"S": "b"}, "at": {"N": "1"}, "n": {"N": "0." + "1" * 10}}, BASE)
    work.capture(store)
    con = open_sql(store, plain_tables=True)
    sql = con.sql(f"SELECT n FROM orders_at('{AT}') ORDER BY zone")
    path = tmp_path / "x.parquet"
    assert main(["replay", "--table", "orders", "--store", store.uri, "--at", AT, "--to-file", str(path)]) == 0
    parquet = duckdb.sql(f"SELECT n FROM read_parquet('{path}') ORDER BY zone")
    assert str(sql.types[0]) == str(parquet.types[0]) == "VARCHAR"
    assert sql.fetchall() == parquet.fetchall() == [("1" * 30,), ("0." + "1" * 10,)]
