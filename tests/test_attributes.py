"""The attribute summaries in file footers describe exactly the images a full scan would find."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changelog.attributes import AttributeTypes, footer_summary, stored_summary
from changelog.codec import decode_lambda_record
from changelog.snapshot import list_manifests, part_paths
from changelog.state import change_files
from changelog.store import LocalStore, Store
from changelog.timefmt import format_time, from_micros
from compactor.compaction import compact
from ddb_rewind.cli import main
from stream_consumer.capture import capture_batch
from tests.model import Op, emitted_changes, operations, stream_records

TABLE = "orders"
HOUR = 3600


def _model_summary(ops: list[Op]) -> dict[str, AttributeTypes]:
    """Tags, most integer digits and largest scale of every top-level attribute of every new image, by Decimal."""
    seen: dict[str, tuple[set[str], int, int]] = {}
    for change in emitted_changes(ops):
        for name, value in (change.new or {}).items():
            tags, integer, scale = seen.get(name, (set(), 0, 0))
            (tag, inner), = value.items()
            tags.add(tag)
            if tag == "N":
                _sign, digits, exponent = Decimal(inner).as_tuple()
                integer = max(integer, len(digits) + int(exponent))
                scale = max(scale, -int(exponent))
            seen[name] = (tags, integer, scale)
    return {name: AttributeTypes(frozenset(tags), integer, scale) for name, (tags, integer, scale) in seen.items()}


def _stored(store: Store) -> dict[str, AttributeTypes]:
    parts = [part for path, manifest in list_manifests(store, TABLE) for part in part_paths(path, manifest)]
    return stored_summary(store, change_files(store, TABLE), parts)


def _capture(store: Store, ops: list[Op]) -> bool:
    records = stream_records(TABLE, ops)
    if records:
        capture_batch(store, records, decode_lambda_record, source="test")
    return bool(records)


@pytest.mark.slow
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations(), split=st.floats(0, 1))
def test_stored_summary_equals_the_model_before_and_after_compaction(
        tmp_path_factory: pytest.TempPathFactory, ops: list[Op], split: float) -> None:
    if not stream_records(TABLE, ops):
        return
    store = LocalStore(tmp_path_factory.mktemp("store"))
    # Two deliveries, a compaction between them: footers (merged files, snapshot parts) and
    # fresh capture files without one must together say what every image says.
    if _capture(store, ops[: int(split * len(ops))]):
        compact(store, TABLE)
    _capture(store, ops)  # the stream again, whole: re-sent copies add nothing
    expected = _model_summary(ops)
    assert _stored(store) == expected
    compact(store, TABLE)
    assert _stored(store) == expected


def _op(key: int, second: int, **attributes: Any) -> Op:
    return Op(key, {"pk": {"S": ["a", "b", "ключ", "d", "e"][key]}, **attributes}, second)


def _deliver(store: Store, ops: list[Op], batches: list[list[int]]) -> None:
    """Capture the stream of ``ops`` in the given batches of record indexes (one change file each)."""
    records = stream_records(TABLE, ops)
    for batch in batches:
        capture_batch(store, [records[i] for i in batch], decode_lambda_record, source="test")


START = 1_700_000_000 - 1_700_000_000 % HOUR


def test_compaction_gives_the_files_it_writes_an_attribute_summary(store: Store) -> None:
    ops = [_op(0, START + 5, n={"N": "1.25"}), _op(1, START + 9, s={"S": "x"}),
           _op(2, START + HOUR + 1, flag={"BOOL": True}), _op(3, START + 2 * HOUR + 1, s={"S": "y"})]
    # Hour 1: two capture files (merged); hour 2: one (rewritten once); hour 3: open, left alone.
    _deliver(store, ops, [[0], [1], [2], [3]])
    assert all(footer_summary(store, path) is None for path in change_files(store, TABLE))
    compact(store, TABLE)
    files = change_files(store, TABLE)
    summarized = [path for path in files if footer_summary(store, path) is not None]
    assert len(files) == 3 and len(summarized) == 2
    parts = [part for path, manifest in list_manifests(store, TABLE) for part in part_paths(path, manifest)]
    assert parts and all(footer_summary(store, part) is not None for part in parts)


def test_a_new_attribute_in_a_fresh_capture_file_is_a_column_of_the_table_macro(
        store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    ops = [_op(0, START + 5, total={"N": "12.50"}), _op(1, START + 7, total={"N": "3"}),
           _op(2, START + HOUR + 2, total={"N": "4"}, coupon={"S": "WELCOME"})]
    _deliver(store, ops, [[0], [1]])
    compact(store, TABLE)
    _deliver(store, ops, [[2]])
    at = format_time(from_micros((START + HOUR + 2) * 1_000_000))
    query = f"SELECT pk, total, coupon FROM orders_at('{at}') ORDER BY pk"
    assert main(["sql", "--store", store.uri, query, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"pk": "a", "total": "12.50", "coupon": None}, {"pk": "b", "total": "3.00", "coupon": None},
                    {"pk": "ключ", "total": "4.00", "coupon": "WELCOME"}]
