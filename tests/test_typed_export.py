"""replay --to-file: typed columns per attribute beside the lossless ones (.parquet, .csv), JSON lines on stdout.

The typed values are checked against the independent model (tests/model.py): every value equals
the model's, and every number, up to DynamoDB's 38 digits, is exact (compared as Decimal, never float).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changelog.attributes import summarize
from changelog.codec import decode_lambda_record
from changelog.meta import meta_from_keys, write_meta
from changelog.plain import Column, columns_of, finish_array, text_value, typed_query, typed_value
from changelog.store import LocalStore, Store
from ddb_rewind.cli import main
from replayer.restoring.export import csv_query, write_csv
from stream_consumer.capture import capture_batch
from tests.model import KEYS, Op, model_state, operations, stream_records
from tests.test_image_validation import good_values

ROOT = Path(__file__).resolve().parents[1]
TABLE = "orders"
T0 = 1_700_000_000


def _fill(store: Store, ops: list[Op]) -> int:
    records = stream_records(TABLE, ops)
    write_meta(store, meta_from_keys(TABLE, KEYS[0]))  # as capture writes it: pk is the partition key
    capture_batch(store, records, decode_lambda_record, source="test")
    return int(max(r["dynamodb"]["ApproximateCreationDateTime"] for r in records))  # the latest captured


def _at(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).isoformat()


def _replay(store: Store, at: int, path: Path) -> None:
    assert main(["replay", "--table", TABLE, "--store", store.uri, "--at", _at(at), "--to-file", str(path),
                 "--overwrite"]) == 0


def _tags(model: dict[str, str]) -> dict[str, set[str]]:
    tags: dict[str, set[str]] = {}
    for image in model.values():
        for name, value in json.loads(image).items():
            tags.setdefault(name, set()).update(set(value) - {"NULL"})
    return tags


def _expected_cell(tags: set[str], value: dict[str, Any] | None, cell: Any) -> None:
    """The model's rule for one typed cell; asserts ``cell`` holds exactly that."""
    if value is None or "NULL" in value:
        assert cell is None
        return
    ((tag, inner),) = value.items()
    if len(tags) > 1 or tag in ("L", "M"):
        assert json.loads(cell) == value
    elif tag == "N":
        assert Decimal(str(cell)) == Decimal(inner)  # decimal column or exact text, never a float
        assert not isinstance(cell, float)
    elif tag == "B":
        assert cell == base64.b64decode(inner)
    elif tag == "BS":
        assert cell == [base64.b64decode(v) for v in inner]
    else:  # S, BOOL, SS, NS (NS as the numbers' text)
        assert cell == inner


def _check_parquet(path: Path, model: dict[str, str]) -> None:
    table = pq.read_table(path)
    # The key attribute first; a state of no items has no typed column (the rule types what the items hold).
    keys = ["pk"] if model else []
    assert table.column_names[:len(keys) + 4] == [*keys, "item_key", "keys", "item", "doc"]
    tags = _tags(model)
    typed = [*keys, *table.column_names[len(keys) + 4:]]
    assert sorted(typed) == sorted(n for n in tags if n not in ("keys", "item", "doc"))
    for row in table.to_pylist():
        item = json.loads(row["item"])
        assert item == json.loads(model[json.dumps(json.loads(row["keys"]), separators=(",", ":"),
                                                   ensure_ascii=False)])
        for name in typed:
            _expected_cell(tags[name], item.get(name), row[name])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations(max_ops=8))
def test_every_typed_parquet_value_equals_the_models(tmp_path_factory: Any, ops: list[Op]) -> None:
    ops = [Op(4, {**KEYS[4], "n": {"N": "7"}}, T0 - 1), *ops]  # the table exists whatever ops delete
    store = LocalStore(tmp_path_factory.mktemp("store"))
    at = _fill(store, ops)
    path = tmp_path_factory.mktemp("out") / "items.parquet"
    _replay(store, at, path)
    _check_parquet(path, model_state(ops, at))


_DIGITS = st.text("0123456789", min_size=1, max_size=38).filter(lambda d: d[0] != "0" or d == "0")


@st.composite
def _numbers(draw: Any) -> str:
    digits = draw(_DIGITS)
    point = draw(st.integers(0, len(digits)))
    sign = draw(st.sampled_from(["", "-"]))
    text = digits[:point] + ("." + digits[point:] if point < len(digits) else "")
    return Decimal(sign + (text if not text.startswith(".") else "0" + text)).normalize().__format__("f")


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(numbers=st.lists(_numbers(), min_size=1, max_size=len(KEYS)))
def test_numbers_up_to_38_digits_are_exact_in_parquet_and_csv(tmp_path_factory: Any, numbers: list[str]) -> None:
    ops = [Op(i, {**KEYS[i], "n": {"N": n}}, T0) for i, n in enumerate(numbers)]
    store = LocalStore(tmp_path_factory.mktemp("store"))
    _fill(store, ops)
    out = tmp_path_factory.mktemp("out")
    _replay(store, T0, out / "items.parquet")
    _check_parquet(out / "items.parquet", model_state(ops, T0))
    _replay(store, T0, out / "items.csv")
    with open(out / "items.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_key = {row["item_key"]: row for row in rows}
    assert len(by_key) == len(numbers)
    for row in rows:
        assert Decimal(row["n"]) == Decimal(json.loads(row["item"])["n"]["N"])
        assert row["n"] == format(Decimal(row["n"]), "f")  # plain decimal text, no exponent


def test_a_38_digit_number_is_a_decimal_38_column(store: Store, tmp_path: Path) -> None:
    big = "9" * 38
    _fill(store, [Op(0, {**KEYS[0], "n": {"N": big}}, T0), Op(1, {**KEYS[1], "n": {"N": "-1"}}, T0)])
    _replay(store, T0, tmp_path / "x.parquet")
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.schema.field("n").type == pa.decimal128(38, 0)
    assert sorted(table.column("n").to_pylist()) == [Decimal(-1), Decimal(big)]


def test_a_number_in_exponent_form_is_exact_beside_numbers_of_a_high_scale(store: Store, tmp_path: Path) -> None:
    # 12e-6 at scale 37: DuckDB alone refuses the cast (its digits scaled first would pass 38).
    _fill(store, [Op(0, {**KEYS[0], "n": {"N": "12e-6"}}, T0), Op(1, {**KEYS[1], "n": {"N": "0." + "1" * 37}}, T0)])
    _replay(store, T0, tmp_path / "x.parquet")
    assert sorted(pq.read_table(tmp_path / "x.parquet").column("n").to_pylist()) == [Decimal("12e-6"),
                                                                                     Decimal("0." + "1" * 37)]
    _replay(store, T0, tmp_path / "x.csv")
    with open(tmp_path / "x.csv", encoding="utf-8", newline="") as handle:
        assert sorted(row["n"] for row in csv.DictReader(handle)) == ["0.0000120000000000000000000000000000000",
                                                                      "0." + "1" * 37]


def test_numbers_no_decimal_38_holds_stay_exact_text(store: Store, tmp_path: Path) -> None:
    _fill(store, [Op(0, {**KEYS[0], "n": {"N": "1" * 30}}, T0), Op(1, {**KEYS[1], "n": {"N": "0." + "1" * 10}}, T0)])
    _replay(store, T0, tmp_path / "x.parquet")
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.schema.field("n").type == pa.string()
    assert sorted(table.column("n").to_pylist()) == sorted(["1" * 30, "0." + "1" * 10])


def test_an_exponent_form_fits_a_column_of_38_fraction_digits(store: Store, tmp_path: Path) -> None:
    _fill(store, [Op(0, {**KEYS[0], "n": {"N": "1e-5"}}, T0), Op(1, {**KEYS[1], "n": {"N": "0." + "1" * 38}}, T0)])
    _replay(store, T0, tmp_path / "x.parquet")
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.schema.field("n").type == pa.decimal128(38, 38)
    assert sorted(table.column("n").to_pylist()) == [Decimal("0.00001"), Decimal("0." + "1" * 38)]


def test_mixed_types_are_one_text_column_of_dynamodb_json(store: Store, tmp_path: Path) -> None:
    _fill(store, [Op(0, {**KEYS[0], "v": {"S": "x"}}, T0), Op(1, {**KEYS[1], "v": {"N": "5"}}, T0)])
    _replay(store, T0, tmp_path / "x.parquet")
    cells = pq.read_table(tmp_path / "x.parquet").column("v").to_pylist()
    assert sorted(cells) == ['{"N":"5"}', '{"S":"x"}']


def test_csv_quotes_only_what_needs_quoting_and_keeps_the_lossless_item(store: Store, tmp_path: Path) -> None:
    _fill(store, [Op(0, {**KEYS[0], "s": {"S": 'a,"b"'}, "ok": {"BOOL": True}}, T0)])
    _replay(store, T0, tmp_path / "x.csv")
    text = (tmp_path / "x.csv").read_bytes().decode("utf-8")
    header, line = text.split("\r\n")[:2]
    assert header == "pk,item_key,ok,s,item"  # the key attributes first
    assert ',true,"a,""b""",' in line
    (row,) = csv.DictReader(text.splitlines())
    assert json.loads(row["item"]) == {**KEYS[0], "s": {"S": 'a,"b"'}, "ok": {"BOOL": True}}


def test_to_file_dash_writes_json_lines_to_stdout_and_messages_to_stderr(store: Store) -> None:
    _fill(store, [Op(0, {**KEYS[0], "n": {"N": "1" * 38}}, T0)])
    done = subprocess.run([sys.executable, "-m", "ddb_rewind", "replay", "--table", TABLE, "--store", store.uri,
                           "--at", _at(T0), "--to-file", "-"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [{"Item": {**KEYS[0], "n": {"N": "1" * 38}}}]
    assert "wrote 1 items" in done.stderr


# Names that collide across items (so types mix), that JSON pointers must escape, and any text at all.
_NAMES = st.sampled_from(["a", "b/c", "~1", "~", "", 'q"', "back\\slash", "é", "Case", "case", "it's"]) | st.text(
    max_size=3)
_ODD_NUMBERS = st.sampled_from(["1.5E+3", "0.050", "-0.0", "007", ".5", "5.", "1e-5", "12E2", "-1E+37", "0",
                                "12e-6", "-0.0E1", "000123456789.10e-20", ".5e+0", "5.E2",
                                "9" * 38, "0." + "1" * 37, "0." + "1" * 38, "1" * 30, "-" + "9" * 20 + ".5"])
_ITEMS = st.lists(st.dictionaries(_NAMES, st.one_of(good_values, _ODD_NUMBERS.map(lambda n: {"N": n})), max_size=6),
                  min_size=1, max_size=6)


def _model_columns(images: list[dict[str, Any]]) -> list[Column]:
    """The column rule by Python's Decimal: tags per name, and for N the largest integer part and scale."""
    seen: dict[str, tuple[set[str], int, int]] = {}
    for image in images:
        for name, value in image.items():
            ((tag, inner),) = value.items()
            tags, integer, scale = seen.get(name, (set(), 0, 0))
            if tag == "N":
                _sign, digits, exponent = Decimal(inner).as_tuple()
                integer = max(integer, len(digits) + int(exponent))
                scale = max(scale, -int(exponent))
            seen[name] = (tags | {tag}, integer, scale)
    columns = []
    for name, (tags, integer, scale) in sorted(seen.items()):
        if name in ("item_key", "keys", "item", "doc"):
            continue  # the lossless columns' names: such attributes stay in item
        kinds = tags - {"NULL"}
        kind = "NULL" if not kinds else "JSON" if len(kinds) > 1 or kinds & {"L", "M"} else next(iter(kinds))
        if kind == "N":
            kind = "N" if integer + scale <= 38 else "NTEXT"
        columns.append(Column(name, kind, scale if kind == "N" else 0))
    return columns


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(images=_ITEMS)
def test_duckdb_finds_the_columns_and_values_the_python_rule_gives_byte_for_byte(images: list[dict[str, Any]]) -> None:
    con = duckdb.connect()
    con.register("items", pa.table({"image": [orjson.dumps(image).decode() for image in images]}))
    columns = columns_of(summarize(con, "items", "image"), reserved=("item_key", "keys", "item", "doc"))
    assert columns == _model_columns(images)
    result = con.sql(typed_query(columns, "items", "image")).to_arrow_table()
    for index, column in enumerate(columns):
        cells = finish_array(column, result.column(index + 1).combine_chunks()).to_pylist()
        assert cells == [typed_value(column, image.get(column.name)) for image in images], column


def _python_csv(rows: list[tuple[str, dict[str, Any]]], columns: list[Column], key_columns: int) -> bytes:
    """The CSV the rule gives item by item in Python: ``text_value`` cells through ``csv.writer``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    keys, rest = columns[:key_columns], columns[key_columns:]
    writer.writerow([*(c.name for c in keys), "item_key", *(c.name for c in rest), "item"])
    for item_key, image in rows:
        writer.writerow([*(text_value(c, image.get(c.name)) for c in keys), item_key,
                         *(text_value(c, image.get(c.name)) for c in rest), orjson.dumps(image).decode()])
    return out.getvalue().encode("utf-8")


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(images=_ITEMS, item_keys=st.lists(st.text(max_size=4), min_size=6, max_size=6), keys=st.integers(0, 2),
       batch=st.integers(1, 4))
def test_csv_written_a_column_at_a_time_is_the_python_rules_csv_byte_for_byte(
        images: list[dict[str, Any]], item_keys: list[str], keys: int, batch: int) -> None:
    rows = list(zip(item_keys, images, strict=False))
    con = duckdb.connect()
    con.register("items", pa.table({"item_key": [key for key, _ in rows],
                                    "image": [orjson.dumps(image).decode() for _, image in rows]}))
    columns = columns_of(summarize(con, "items", "image"), reserved=("item_key", "keys", "item", "doc"))
    keys = min(keys, len(columns))
    batches = con.sql(csv_query(columns, "items")).to_arrow_reader(batch)
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "x.csv"
        assert write_csv(path, batches, columns, keys) == len(rows)
        assert path.read_bytes() == _python_csv(rows, columns, keys)
