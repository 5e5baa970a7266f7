"""Quarantined records: visible in SQL as text, and re-captured by ``requeue`` once their cause is fixed.

Every quarantined record here is made by the real capture path (the Lambda handler); "fixing the
cause" is an operator correcting the kept record, the way a fixed producer would send it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from changelog.codec import decode_getrecords_record, decode_kinesis_record
from changelog.errors import StoreError
from changelog.layout import table_root
from changelog.quarantine import quarantine_paths
from changelog.store import LocalStore, Store
from replayer.engines.views import SqlSession
from stream_consumer import handler
from stream_consumer.capture import capture_batch
from stream_consumer.requeue import requeue
from tests.events import event, kinesis_record, lambda_record

ROOT = Path(__file__).resolve().parents[1]
TABLE = "orders"
GOOD_SECONDS = 1_750_000_000


def _record(pk: str, sequence: int, seconds: Any = GOOD_SECONDS) -> dict[str, Any]:
    key = {"pk": {"S": pk}}
    return lambda_record(TABLE, "INSERT", key, seconds, sequence, new={**key, "n": {"N": "1" * 38}})


def _capture(*records: dict[str, Any]) -> None:
    assert handler.lambda_handler(event(list(records)), None) == {"batchItemFailures": []}


def _fix_time(store: Store, path: str) -> None:
    """The operator's fix: the kept record gets the time it should have had."""
    document = json.loads(store.read(path))
    document["record"]["dynamodb"]["ApproximateCreationDateTime"] = GOOD_SECONDS
    store.write(path, json.dumps(document).encode())


def _changes(store: Store, pk: str) -> list[tuple[Any, ...]]:
    result = SqlSession(store).query(
        f"SELECT event_id, new_image FROM changes WHERE item_key LIKE '%{pk}%' ORDER BY event_id")
    assert result is not None
    return result[1]


def test_the_quarantine_view_shows_each_kept_record_with_its_reason_as_text(handler_store: Store) -> None:
    _capture(_record("a", 1), _record("b", 2, seconds=float("nan")))
    result = SqlSession(handler_store).query(
        "SELECT table_name, reason, source, quarantined_at IS NOT NULL, event_time, event_id, record FROM quarantine")
    assert result is not None
    ((table, reason, source, dated, event_time, event_id, record),) = result[1]
    assert (table, source, dated, event_time, event_id) == (TABLE, "lambda-dynamodb", True, "nan", "evt-2")
    assert "must be epoch seconds" in reason
    assert json.loads(record)["record"]["eventID"] == "evt-2"


def test_the_quarantine_view_reads_a_document_that_is_not_json(handler_store: Store) -> None:
    handler_store.write(f"{table_root(TABLE)}/quarantine/broken.json", b"\xff{not json")
    result = SqlSession(handler_store).query("SELECT table_name, reason, event_id, record FROM quarantine")
    assert result is not None
    assert result[1] == [(TABLE, None, None, "\ufffd{not json")]


def test_a_fixed_record_is_captured_and_its_quarantine_document_removed(handler_store: Store) -> None:
    _capture(_record("a", 1), _record("b", 2, seconds=-1))
    (path,) = quarantine_paths(handler_store, TABLE)
    _fix_time(handler_store, path)
    summary = requeue(handler_store, TABLE)
    assert (summary.captured, summary.still_failing, len(summary.files)) == (1, 0, 1)
    assert quarantine_paths(handler_store, TABLE) == []
    ((event_id, image),) = _changes(handler_store, "b")
    assert event_id == "evt-2"
    assert json.loads(image)["n"] == {"N": "1" * 38}


def test_a_record_that_still_fails_stays_with_its_reason(handler_store: Store) -> None:
    _capture(_record("b", 2, seconds=-1))
    summary = requeue(handler_store, TABLE)
    (outcome,) = summary.outcomes
    assert (summary.captured, summary.still_failing, summary.files) == (0, 1, ())
    assert outcome.reason is not None and "before 2012" in outcome.reason
    assert quarantine_paths(handler_store, TABLE) == [outcome.path]


def test_a_record_already_captured_stays_one_change(handler_store: Store) -> None:
    _capture(_record("a", 1))
    bad = _record("a", 1, seconds=-1)  # the same record (same eventID), once kept as bad
    _capture(bad)
    (path,) = quarantine_paths(handler_store, TABLE)
    _fix_time(handler_store, path)
    assert requeue(handler_store, TABLE).captured == 1
    assert [event_id for event_id, _ in _changes(handler_store, "a")] == ["evt-1"]


def test_dry_run_writes_and_removes_nothing(handler_store: Store) -> None:
    _capture(_record("b", 2, seconds=-1))
    (path,) = quarantine_paths(handler_store, TABLE)
    _fix_time(handler_store, path)
    summary = requeue(handler_store, TABLE, dry_run=True)
    assert (summary.captured, summary.files) == (1, ())
    assert quarantine_paths(handler_store, TABLE) == [path]
    assert handler_store.list(table_root(TABLE) + "/changes/") == []


def test_a_failed_change_file_write_keeps_the_quarantine_document(handler_store: Store,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _capture(_record("b", 2, seconds=-1))
    (path,) = quarantine_paths(handler_store, TABLE)
    _fix_time(handler_store, path)

    def refuse(*_: Any) -> None:
        raise StoreError("store unreachable")

    monkeypatch.setattr("stream_consumer.requeue.write_change_files", refuse)
    with pytest.raises(StoreError):
        requeue(handler_store, TABLE)
    assert quarantine_paths(handler_store, TABLE) == [path]


def test_the_cli_lists_what_still_fails_and_exits_1(handler_store: Store) -> None:
    _capture(_record("b", 2, seconds=-1), _record("c", 3, seconds=-1))
    _fix_time(handler_store, quarantine_paths(handler_store, TABLE)[0])
    done = subprocess.run([sys.executable, "-m", "ddb_rewind", "requeue", "--store", handler_store.uri],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("still quarantined ") and "before 2012" in lines[0]
    assert lines[1] == "requeue: 1 records re-captured, 1 still quarantined, 1 change files written"


SHARD = "shardId-00000001700000000000-abcdef01"


def _getrecords_record(number: Any) -> dict[str, Any]:
    """A record as boto3's GetRecords returns it: a datetime, and binaries as bytes."""
    key = {"pk": {"B": b"\x00\xffkey"}}
    return {
        "eventID": "gr-1", "eventName": "INSERT", "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime.fromtimestamp(GOOD_SECONDS, UTC),
            "Keys": key, "SequenceNumber": "4200000000012345678901", "SizeBytes": 40,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "NewImage": {**key, "n": {"N": number}, "bs": {"BS": [b"\x01", b"\x02\x03"]}, "s": {"S": "ключ"}},
        },
    }


def _files(store: Store) -> dict[str, bytes]:
    return {path: store.read(path) for path in store.list(table_root(TABLE) + "/changes/")}


@pytest.mark.parametrize("source", ["poller", "recover"])
def test_a_fixed_getrecords_record_is_stored_exactly_as_its_capture_path_would_have(
        tmp_path: Path, source: str) -> None:
    kept, direct = LocalStore(tmp_path / "kept"), LocalStore(tmp_path / "direct")

    def capture(store: Store, record: dict[str, Any]) -> int:
        return capture_batch(store, [record], lambda r: decode_getrecords_record(r, TABLE, SHARD), source=source,
                             table_hint=TABLE, shard_id=SHARD).quarantined

    assert capture(kept, _getrecords_record("1e999")) == 1  # out of DynamoDB's range
    assert capture(direct, _getrecords_record("5")) == 0
    (path,) = quarantine_paths(kept, TABLE)
    document = json.loads(kept.read(path))
    document["record"]["dynamodb"]["NewImage"]["n"] = {"N": "5"}  # the operator's fix
    kept.write(path, json.dumps(document).encode())
    assert requeue(kept, TABLE).captured == 1
    assert _files(kept) == _files(direct)  # same names, same bytes: binaries, time and shard intact
    assert quarantine_paths(kept, TABLE) == []


@pytest.mark.parametrize("source", ["lambda-kinesis", "recover"])  # recover re-reads a Kinesis stream too
def test_a_fixed_kinesis_record_is_stored_exactly_as_the_kinesis_handler_would_have(
        tmp_path: Path, source: str) -> None:
    kept, direct = LocalStore(tmp_path / "kept"), LocalStore(tmp_path / "direct")
    key = {"pk": {"S": "a"}}

    def record(number: str) -> dict[str, Any]:
        return kinesis_record(TABLE, "INSERT", key, GOOD_SECONDS * 1000, "4959033827149025660855969253836157109592",
                              new={**key, "n": {"N": number}})

    assert capture_batch(kept, [record("1e999")], decode_kinesis_record, source=source).quarantined == 1
    assert capture_batch(direct, [record("5")], decode_kinesis_record, source=source).quarantined == 0
    (path,) = quarantine_paths(kept, TABLE)
    document = json.loads(kept.read(path))
    document["record"] = record("5")  # the operator's fix: the producer's corrected record
    kept.write(path, json.dumps(document).encode())
    assert requeue(kept, TABLE).captured == 1
    assert _files(kept) == _files(direct)
    assert quarantine_paths(kept, TABLE) == []


def test_a_bad_kinesis_record_is_kept_under_its_own_table_when_the_stream_carries_several(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    good = kinesis_record("customers", "INSERT", {"pk": {"S": "c"}}, GOOD_SECONDS * 1000, "1",
                          new={"pk": {"S": "c"}})
    bad = kinesis_record(TABLE, "INSERT", {"pk": {"S": "a"}}, GOOD_SECONDS * 1000, "2",
                         new={"pk": {"S": "a"}, "n": {"N": "1e999"}})
    result = capture_batch(store, [good, bad], decode_kinesis_record, source="lambda-kinesis")
    assert (result.captured, result.quarantined) == (1, 1)
    assert len(quarantine_paths(store, TABLE)) == 1
    assert quarantine_paths(store, "customers") == []


def test_a_record_kept_under_one_table_is_never_requeued_into_another(handler_store: Store) -> None:
    _capture(_record("a", 1), _record("b", 2, seconds=-1))
    (path,) = quarantine_paths(handler_store, TABLE)
    _fix_time(handler_store, path)
    planted = path.replace(f"tables/{TABLE}/", "tables/evil/")
    handler_store.write(planted, handler_store.read(path))
    handler_store.delete(path)
    summary = requeue(handler_store, "evil")
    assert (summary.captured, summary.still_failing) == (0, 1)
    assert "kept under 'evil'" in str(summary.outcomes[0].reason)
    assert _changes(handler_store, "b") == []
    assert quarantine_paths(handler_store, "evil") == [planted]


def test_a_quarantine_document_nested_past_the_recursion_limit_stays_with_its_reason(handler_store: Store) -> None:
    handler_store.write(f"{table_root(TABLE)}/quarantine/deep.json", b"[" * 100_000 + b"]" * 100_000)
    summary = requeue(handler_store, TABLE)
    assert (summary.captured, summary.still_failing) == (0, 1)
    assert "not a JSON object" in str(summary.outcomes[0].reason)
