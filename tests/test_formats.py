"""Store formats: what format 1 wrote is answered exactly as format 1 answered it; newer formats are refused.

``tests/fixtures/format1`` holds a store written by the last format-1 version (capture files with
duplicates, a merged hour, a compaction snapshot) and the answers that version gave over it
(``make.py`` says how both were made).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from changelog.formats import FOOTER_KEY, FORMAT_VERSION, MANIFEST_KEY
from changelog.layout import change_file_path, hour_partition
from changelog.record import SCHEMA
from changelog.snapshot import SNAPSHOT_SCHEMA, list_manifests
from changelog.state import change_files
from changelog.store import LocalStore
from compactor.compaction import compact
from replayer.engines.views import open_sql
from replayer.forensics.history import item_history
from replayer.restoring.replay import open_items
from tests.events import lambda_record
from tests.workloads import BASE, run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "format1"
TABLE = "orders"


@pytest.fixture
def format1(tmp_path: Path) -> LocalStore:
    shutil.copytree(FIXTURE / "store", tmp_path / "store")
    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="module")
def answered() -> dict[str, Any]:
    answers: dict[str, Any] = json.loads((FIXTURE / "answers.json").read_text())
    return answers


def _rows(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(row) for row in rows]


def _states(store: LocalStore, answered: dict[str, Any]) -> dict[str, list[list[Any]]]:
    return {at: _rows(open_items(store, TABLE, datetime.fromtimestamp(int(at), tz=UTC))
                      .execute("SELECT item_key, keys, image, doc FROM items").fetchall())
            for at in answered["states"]}


def _footer_format(path: Path) -> bytes | None:
    return (pq.read_metadata(path).metadata or {}).get(FOOTER_KEY)


def test_the_fixture_is_a_format_1_store_with_stored_docs() -> None:
    files = sorted((FIXTURE / "store").rglob("*.parquet"))
    assert files and all(_footer_format(path) is None for path in files)
    assert all({"new_doc", "old_doc"} <= set(pq.read_schema(path).names) for path in files if "/changes/" in str(path))
    assert all("doc" in pq.read_schema(path).names for path in files if "/snapshots/" in str(path))
    manifest = json.loads(next((FIXTURE / "store").rglob("manifest.json")).read_text())
    assert MANIFEST_KEY not in manifest


def test_a_format_1_store_replays_every_moment_as_format_1_did(format1: LocalStore,
                                                               answered: dict[str, Any]) -> None:
    assert _states(format1, answered) == answered["states"]


def test_a_format_1_store_answers_sql_as_format_1_did(format1: LocalStore, answered: dict[str, Any]) -> None:
    con = open_sql(format1)
    changes = con.execute(
        "SELECT event_id, event_name, event_time::VARCHAR, new_image, old_image, new_doc::VARCHAR, old_doc::VARCHAR"
        " FROM changes ORDER BY event_id").fetchall()
    assert _rows(changes) == answered["sql_changes"]
    for at, expected in answered["sql_state"].items():
        rows = con.execute(
            "SELECT item_key, keys::VARCHAR, item::VARCHAR, doc::VARCHAR FROM state_at(?) ORDER BY item_key",
            [datetime.fromtimestamp(int(at), tz=UTC)]).fetchall()
        assert _rows(rows) == expected, at


def test_a_format_1_store_keeps_every_item_history(format1: LocalStore, answered: dict[str, Any]) -> None:
    for key, expected in answered["history"].items():
        found = [[v.event_id, v.event_name, v.new_image, v.old_image] for v in item_history(format1, TABLE, key)]
        assert found == expected, key


def test_compaction_over_a_format_1_store_writes_format_2_and_every_answer_stays(
        format1: LocalStore, answered: dict[str, Any]) -> None:
    before = set(change_files(format1, TABLE))
    last = max(int(at) for at in answered["states"])
    compact(format1, TABLE, last * 1_000_000)
    root = format1.local_root()
    assert root is not None
    merged = [root / path for path in set(change_files(format1, TABLE)) - before]
    assert merged and all(_footer_format(path) == str(FORMAT_VERSION).encode() for path in merged)
    assert all(pq.read_schema(path).names == SCHEMA.names for path in merged)
    (path, manifest), *_ = reversed(list_manifests(format1, TABLE))
    assert manifest.format_version == FORMAT_VERSION
    part = root / path.rsplit("/", 1)[0] / manifest.parts[0]
    assert pq.read_schema(part).names == SNAPSHOT_SCHEMA.names
    assert _states(format1, answered) == answered["states"]


def test_a_capture_file_declares_format_2_and_holds_no_docs(format1: LocalStore) -> None:
    from changelog.codec import decode_lambda_record
    from stream_consumer.capture import capture_batch

    record = lambda_record(TABLE, "INSERT", {"pk": {"S": "new"}}, BASE + 3 * 3600, 5000,
                           new={"pk": {"S": "new"}, "n": {"N": "1"}})
    before = set(change_files(format1, TABLE))
    capture_batch(format1, [record], decode_lambda_record, source="test")
    (written,) = set(change_files(format1, TABLE)) - before
    root = format1.local_root()
    assert root is not None
    assert _footer_format(root / written) == str(FORMAT_VERSION).encode()
    assert pq.read_schema(root / written).names == SCHEMA.names


def _newer_change_file(store: LocalStore) -> None:
    rows = pa.Table.from_pylist([{
        "table_name": TABLE, "event_id": "from-the-future", "event_name": "INSERT",
        "event_time": datetime.fromtimestamp(BASE + 2 * 3600 + 60, tz=UTC), "sequence_number": "9" * 40,
        "shard_id": None, "item_key": '{"pk":{"S":"k0"}}', "keys": '{"pk":{"S":"k0"}}',
        "new_image": '{"pk":{"S":"k0"}}', "old_image": None, "is_ttl_delete": False, "size_bytes": 1,
    }], schema=SCHEMA).replace_schema_metadata({FOOTER_KEY: str(FORMAT_VERSION + 1).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(rows, sink)
    data = sink.getvalue().to_pybytes()
    partition = hour_partition((BASE + 2 * 3600 + 60) * 1_000_000)
    store.write(change_file_path(TABLE, partition, "9" * 40, "9" * 40, data), data)


def test_a_file_in_a_newer_format_is_refused_with_one_line(format1: LocalStore,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _newer_change_file(format1)
    assert run_cli(["replay", "--store", str(format1.root), "--table", TABLE, "--at", str(BASE + 2 * 3600 + 70),
                    "--to-file", str(format1.root.parent / "out.jsonl")]) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"in store format {FORMAT_VERSION + 1}, written by a newer ddb-rewind" in err
    assert not (format1.root.parent / "out.jsonl").exists()


def test_a_manifest_in_a_newer_format_is_refused_with_one_line(format1: LocalStore,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (manifest,) = format1.root.rglob("manifest.json")
    body = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**body, MANIFEST_KEY: FORMAT_VERSION + 1}))
    assert run_cli(["replay", "--store", str(format1.root), "--table", TABLE, "--at", str(BASE + 3600 + 40),
                    "--to-file", str(format1.root.parent / "out.jsonl")]) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "written by a newer ddb-rewind" in err
