"""A compaction snapshot computed by Spark is the snapshot the Lambda writes: same parts, same manifest.

The Spark job (``compactor.spark_snapshot``, pyspark local mode here, EMR Serverless in the stack)
and the Lambda's DuckDB path write their parts through the same part writer and describe them with
the same manifest code; the two snapshots of the same store at the same moment are compared file by
file, and replay from the Spark one equals replay from the changes alone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from changelog.codec import decode_lambda_record
from changelog.layout import snapshot_dir
from changelog.snapshot import MANIFEST
from changelog.store import LocalStore
from compactor import spark_snapshot
from compactor.snapshots import build_snapshot
from replayer.proving.check import check_store
from replayer.restoring.replay import open_items
from stream_consumer.capture import capture_batch
from tests.events import lambda_record

TABLE = "orders"
WRITER = "0123456789ab"
T0 = 1_750_000_000


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """The engine's own local SparkSession (one per test run, shared with tests/test_engines.py)."""
    from changelog.spark import session

    yield session()


def _records() -> list[dict[str, Any]]:
    """Forty keys written, rewritten and some removed over a minute: tombstones, many parts, a base."""
    records: list[dict[str, Any]] = []
    current: dict[int, dict[str, Any]] = {}

    def write(k: int, second: int, item: dict[str, Any] | None) -> None:
        key = {"pk": {"S": f"k{k:02d}"}}
        old = current.pop(k, None)
        name = "REMOVE" if item is None else "MODIFY" if old else "INSERT"
        new = None if item is None else {**item, **key}
        if new is not None:
            current[k] = new
        records.append(lambda_record(TABLE, name, key, float(second), 10**20 + 7 * len(records), new=new, old=old))

    ops = [(T0 + k % 7, k, {"n": {"N": str(k)}, "b": {"B": "AQI="}}) for k in range(40)]
    ops += [(T0 + 20 + k % 5, k, None) for k in range(0, 40, 3)]
    ops += [(T0 + 30 + k % 9, k, {"l": {"L": [{"S": "x"}, {"NULL": True}]}}) for k in range(1, 40, 4)]
    for second, k, item in sorted(ops, key=lambda op: op[0]):
        write(k, second, item)
    return records


def _store(tmp: Path) -> LocalStore:
    """Changes captured in batches, a first snapshot at +25 s (the base the second one builds on), more changes."""
    store = LocalStore(tmp)
    records = _records()
    for start in range(0, len(records), 9):
        capture_batch(store, records[start:start + 9], decode_lambda_record, source="test")
    build_snapshot(store, TABLE, (T0 + 25) * 1_000_000, writer_id="aaaaaaaaaaaa", part_rows=7)
    return store


def _files(store: LocalStore, at_us: int) -> dict[str, bytes]:
    directory = store.root / snapshot_dir(TABLE, datetime.fromtimestamp(at_us / 1e6, UTC))
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def _manifest_fields(data: bytes) -> dict[str, Any]:
    body = json.loads(data)
    for written_when in ("created_at", "self_sha256"):
        body.pop(written_when)
    return dict(body)


@pytest.mark.spark
def test_the_spark_snapshot_is_the_lambda_snapshot_part_for_part_and_field_for_field(
    spark: Any, tmp_path: Path
) -> None:
    _store(tmp_path / "lambda")
    shutil.copytree(tmp_path / "lambda", tmp_path / "spark")
    lambda_store, spark_store = LocalStore(tmp_path / "lambda"), LocalStore(tmp_path / "spark")
    at_us = (T0 + 38) * 1_000_000

    build_snapshot(lambda_store, TABLE, at_us, writer_id=WRITER, part_rows=4)
    spark_snapshot.run(["--store", str(spark_store.root), "--table", TABLE, "--at", str(T0 + 38),
                        "--writer", WRITER, "--part-rows", "4", "--publish"])

    lambda_files, spark_files = _files(lambda_store, at_us), _files(spark_store, at_us)
    assert sorted(spark_files) == sorted(lambda_files) and len(lambda_files) > 3
    parts = [name for name in lambda_files if name != MANIFEST]
    assert [spark_files[name] for name in parts] == [lambda_files[name] for name in parts]
    assert _manifest_fields(spark_files[MANIFEST]) == _manifest_fields(lambda_files[MANIFEST])


@pytest.mark.spark
def test_replay_from_the_spark_snapshot_is_replay_from_the_changes_alone(spark: Any, tmp_path: Path) -> None:
    store = _store(tmp_path)
    spark_snapshot.run(["--store", str(store.root), "--table", TABLE, "--at", str(T0 + 33), "--part-rows", "5",
                        "--publish"])

    for second in (T0 + 33, T0 + 36, T0 + 38):
        at = datetime.fromtimestamp(second, UTC)
        rows = "SELECT item_key, keys, image, doc FROM items ORDER BY item_key"
        assert open_items(store, TABLE, at).execute(rows).fetchall() == \
            open_items(store, TABLE, at, use_snapshots=False).execute(rows).fetchall()
    assert check_store(store, TABLE, read_data=True).problems == ()


@pytest.mark.spark
def test_a_spark_snapshot_left_as_a_draft_is_not_read_until_the_compactor_publishes_it(
    spark: Any, tmp_path: Path
) -> None:
    from compactor.snapshots import publish_draft

    store = _store(tmp_path)
    at_us = (T0 + 38) * 1_000_000
    spark_snapshot.run(["--store", str(store.root), "--table", TABLE, "--at", str(T0 + 38), "--writer", WRITER])
    assert not store.exists(f"{snapshot_dir(TABLE, datetime.fromtimestamp(T0 + 38, UTC))}/{MANIFEST}")

    manifest = publish_draft(store, TABLE, at_us, WRITER)

    assert manifest.generation == 2 and manifest.base_snapshot is not None
    assert sorted(_files(store, at_us)) == sorted([MANIFEST, *manifest.parts])
