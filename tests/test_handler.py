"""The Lambda handler turns DynamoDB Streams batches into Parquet change files, losing nothing."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import boto3
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from changelog.errors import StreamConfigError
from changelog.layout import capture_root, changes_root, table_root
from changelog.meta import read_meta
from changelog.state import coverage
from changelog.store import Store
from replayer.engines.views import open_sql
from stream_consumer import handler
from tests.events import TTL_IDENTITY, event, lambda_record

TABLE = "orders"
SECRET = "SECRET-CARD-4111-1111"
B64 = base64.b64encode(bytes(range(200))).decode()


def _key(n: int) -> dict[str, Any]:
    return {"pk": {"S": f"customer#{n}"}, "sk": {"N": str(n)}}


def _item(n: int, status: str = "pending") -> dict[str, Any]:
    return {
        **_key(n),
        "status": {"S": status},
        "total": {"N": "12345678901234567890.123456789012345678"},
        "tags": {"SS": ["gift", "ünïcode"]},
        "blob": {"B": B64},
        "lines": {"L": [{"M": {"sku": {"S": "A-1"}, "qty": {"N": "2"}}}, {"NULL": True}]},
        "paid": {"BOOL": True},
    }


def realistic_batch() -> list[dict[str, Any]]:
    """Five records as Lambda delivers them: inserts, a modify, a remove; two share a second."""
    return [
        lambda_record(TABLE, "INSERT", _key(1), 1_750_000_000, 100, new=_item(1)),
        lambda_record(TABLE, "INSERT", _key(2), 1_750_000_000, 101, new=_item(2)),
        lambda_record(TABLE, "MODIFY", _key(1), 1_750_000_001, 102, new=_item(1, "shipped"), old=_item(1)),
        lambda_record(TABLE, "INSERT", _key(3), 1_750_000_002, 103, new=_item(3)),
        lambda_record(TABLE, "REMOVE", _key(2), 1_750_000_003, 104, old=_item(2)),
    ]


@pytest.fixture
def local(handler_store: Store) -> Store:
    """The handler writes into the local test store."""
    return handler_store


def invoke(records: list[dict[str, Any]]) -> dict[str, Any]:
    return handler.lambda_handler(event(records), None)


def change_files(store: Store, table: str = TABLE) -> list[str]:
    return [p for p in store.list(changes_root(table) + "/") if p.endswith(".parquet")]


def changes(store: Store, query: str = "SELECT event_id FROM changes ORDER BY event_id") -> list[tuple[Any, ...]]:
    return open_sql(store, plain_tables=False).execute(query).fetchall()


def emitted_metrics(out: str) -> dict[str, Any]:
    """The EMF metrics document Powertools printed for the invocation."""
    documents = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]
    assert documents, "no metrics were emitted"
    return documents[-1]


def test_a_batch_becomes_parquet_that_duckdb_reads_with_the_documented_columns(local: Store) -> None:
    assert invoke(realistic_batch()) == {"batchItemFailures": []}
    files = change_files(local)
    assert len(files) == 1
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    root = local.local_root()
    assert root is not None
    source = f"read_parquet('{root / files[0]}', hive_partitioning=false)"
    described = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    assert described == {
        "table_name": "VARCHAR",
        "event_id": "VARCHAR",
        "event_name": "VARCHAR",
        "event_time": "TIMESTAMP WITH TIME ZONE",
        "sequence_number": "VARCHAR",
        "shard_id": "VARCHAR",
        "item_key": "VARCHAR",
        "keys": "VARCHAR",
        "new_image": "VARCHAR",
        "old_image": "VARCHAR",
        "is_ttl_delete": "BOOLEAN",
        "size_bytes": "BIGINT",
    }
    rows = con.execute(
        f"SELECT event_name, strftime(event_time, '%Y-%m-%dT%H:%M:%S'), sequence_number, shard_id, keys,"
        f" new_image, old_image, is_ttl_delete FROM {source} WHERE event_id = 'evt-102'"
    ).fetchall()
    name, moment, sequence, shard, keys, new_image, old_image, ttl = rows[0]
    assert (name, moment, shard, ttl) == ("MODIFY", "2025-06-15T15:06:41", None, False)
    assert sequence == "102".zfill(40) and len(sequence) == 40
    assert json.loads(keys) == _key(1)
    assert json.loads(new_image) == _item(1, "shipped")
    assert json.loads(old_image) == _item(1)


def test_the_same_batch_delivered_twice_rewrites_the_same_object(local: Store) -> None:
    invoke(realistic_batch())
    first = change_files(local)
    invoke(realistic_batch())
    assert change_files(local) == first
    assert len(changes(local)) == 5


def test_a_retry_split_differently_adds_no_duplicate_changes(local: Store) -> None:
    batch = realistic_batch()
    invoke(batch[:3])
    invoke(batch)
    assert len(change_files(local)) == 2
    assert [row[0] for row in changes(local)] == [f"evt-{n}" for n in range(100, 105)]


MALFORMED = {
    "missing dynamodb body": lambda r: r.pop("dynamodb"),
    "unknown type tag": lambda r: r["dynamodb"]["NewImage"].update(bad={"Q": SECRET}),
    "N that is not a number": lambda r: r["dynamodb"]["NewImage"].update(bad={"N": SECRET}),
    "base64 garbage": lambda r: r["dynamodb"]["NewImage"].update(bad={"B": SECRET + "!*"}),
}


def _with_malformed(kind: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    batch = realistic_batch()
    bad = lambda_record(TABLE, "INSERT", _key(9), 1_750_000_002, 200, new=_item(9), event_id="evt-bad")
    MALFORMED[kind](bad)
    batch.insert(2, bad)
    return batch, json.loads(json.dumps(bad))


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_record_is_quarantined_whole_and_the_rest_is_captured(local: Store, kind: str) -> None:
    batch, original = _with_malformed(kind)
    assert invoke(batch) == {"batchItemFailures": []}
    quarantined = local.list(table_root(TABLE) + "/quarantine/")
    assert len(quarantined) == 1
    kept = json.loads(local.read(quarantined[0]))
    assert kept["record"] == original
    assert kept["reason"]
    assert [row[0] for row in changes(local)] == [f"evt-{n}" for n in range(100, 105)]


def test_quarantined_records_are_counted_in_the_metrics(local: Store, capsys: pytest.CaptureFixture[str]) -> None:
    batch = realistic_batch()
    for index, kind in enumerate(sorted(MALFORMED)):
        bad = lambda_record(TABLE, "INSERT", _key(20 + index), 1_750_000_002, 300 + index, new=_item(20 + index))
        MALFORMED[kind](bad)
        batch.append(bad)
    invoke(batch)
    document = emitted_metrics(capsys.readouterr().out)
    assert document["QuarantinedRecords"] in (4.0, [4.0])
    assert document["ChangeRecords"] in (5.0, [5.0])


@pytest.fixture
def s3(s3_store: Store, lambda_env: None, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The handler writes into a moto bucket."""
    monkeypatch.setenv("REWIND_STORE", s3_store.uri)
    return s3_store


def test_a_failed_store_write_reports_the_batch_from_its_first_record(s3: Store) -> None:
    invoke(realistic_batch()[:1])  # the handler has opened (and cached) its store
    _empty_and_delete_bucket()
    response = invoke(realistic_batch())
    assert response == {"batchItemFailures": [{"itemIdentifier": "100"}]}


def _empty_and_delete_bucket() -> None:
    s3 = boto3.client("s3")
    for entry in s3.list_objects_v2(Bucket="rewind-store").get("Contents", []):
        s3.delete_object(Bucket="rewind-store", Key=entry["Key"])
    s3.delete_bucket(Bucket="rewind-store")


def test_a_retry_after_the_store_recovers_loses_nothing(s3: Store) -> None:
    invoke(realistic_batch()[:1])
    _empty_and_delete_bucket()
    assert invoke(realistic_batch())["batchItemFailures"]
    boto3.client("s3").create_bucket(Bucket="rewind-store")
    assert invoke(realistic_batch()) == {"batchItemFailures": []}
    assert stored_event_ids(s3) == [f"evt-{n}" for n in range(100, 105)]


def stored_event_ids(store: Store) -> list[str]:
    """Every event id in the store's change files, read through the store (moto is not reachable over HTTP)."""
    ids = []
    for path in change_files(store):
        ids += pq.read_table(pa.BufferReader(store.read(path))).column("event_id").to_pylist()
    return sorted(ids)


@pytest.mark.filterwarnings("ignore:No application metrics")
def test_a_keys_only_stream_fails_loudly(local: Store) -> None:
    record = lambda_record(TABLE, "INSERT", _key(1), 1_750_000_000, 1, view="KEYS_ONLY")
    with pytest.raises(StreamConfigError, match=r"KEYS_ONLY.*NEW_AND_OLD_IMAGES"):
        invoke([record])


def test_a_keys_only_stream_is_counted_for_its_own_alarm(local: Store, capsys: pytest.CaptureFixture[str]) -> None:
    record = lambda_record(TABLE, "INSERT", _key(1), 1_750_000_000, 1, view="KEYS_ONLY")
    with pytest.raises(StreamConfigError):
        invoke([record])
    assert emitted_metrics(capsys.readouterr().out)["MisconfiguredStream"] == [1.0]


def test_meta_json_is_written_from_describe_table(local: Store) -> None:
    boto3.client("dynamodb").create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    invoke(realistic_batch())
    meta = read_meta(local, TABLE)
    assert meta["key_schema"] == [
        {"AttributeName": "pk", "KeyType": "HASH", "AttributeType": "S"},
        {"AttributeName": "sk", "KeyType": "RANGE", "AttributeType": "N"},
    ]
    assert meta["description"]["TableName"] == TABLE


def test_meta_json_falls_back_to_the_key_when_describe_table_fails(local: Store) -> None:
    invoke(realistic_batch())  # moto has no such table: DescribeTable fails
    meta = read_meta(local, TABLE)
    assert meta["description"] is None
    assert [(k["AttributeName"], k["AttributeType"]) for k in meta["key_schema"]] == [("pk", "S"), ("sk", "N")]


@pytest.fixture
def log_output(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Everything the handler's Powertools logger writes (it holds on to the stdout of import time)."""
    buffer = io.StringIO()
    monkeypatch.setattr(handler.logger.registered_handler, "stream", buffer)
    return buffer


def test_logs_never_contain_item_contents(
    s3: Store, log_output: io.StringIO, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    secret = {**_item(5), "card": {"S": SECRET}}
    batch = [lambda_record(TABLE, "INSERT", _key(5), 1_750_000_000, 1, new=secret)]
    batch += _with_malformed("N that is not a number")[0]  # its error names the bad value
    invoke(batch)  # captured, one quarantined, DescribeTable failed
    _empty_and_delete_bucket()
    invoke(batch)  # the store write failed
    written = log_output.getvalue() + caplog.text + "".join(capsys.readouterr())
    assert "batch captured" in written and "store write failed" in written
    assert SECRET not in written


def test_ttl_deletes_are_flagged(local: Store) -> None:
    invoke([
        lambda_record(TABLE, "INSERT", _key(1), 1_750_000_000, 1, new=_item(1)),
        lambda_record(TABLE, "REMOVE", _key(1), 1_750_000_001, 2, old=_item(1), identity=TTL_IDENTITY),
        lambda_record(TABLE, "REMOVE", _key(2), 1_750_000_001, 3, old=_item(2)),
    ])
    flags = changes(local, "SELECT event_id, is_ttl_delete FROM changes ORDER BY event_id")
    assert flags == [("evt-1", False), ("evt-2", True), ("evt-3", False)]


def test_binary_and_unicode_keys_are_kept_exactly(local: Store) -> None:
    binary = {"id": {"B": B64}}
    unicode = {"id": {"S": "ключ-🔑-naïve"}}
    invoke([
        lambda_record("files", "INSERT", binary, 1_750_000_000, 1, new={**binary, "v": {"N": "1"}}),
        lambda_record("files", "INSERT", unicode, 1_750_000_000, 2, new={**unicode, "v": {"N": "2"}}),
    ])
    con = open_sql(local, plain_tables=False)
    for key, version in ((binary, 1), (unicode, 2)):
        rows = con.execute("SELECT new_image FROM history(?)", [json.dumps(key)]).fetchall()
        assert [json.loads(row[0]) for row in rows] == [{**key, "v": {"N": str(version)}}]


def test_a_400_kb_item_is_captured_whole(local: Store) -> None:
    big = {**_key(1), "blob": {"S": "ü" * 200_000}}  # 400,000 bytes of UTF-8
    invoke([lambda_record(TABLE, "INSERT", _key(1), 1_750_000_000, 1, new=big)])
    (image,) = changes(local, "SELECT new_image FROM changes")[0]
    assert json.loads(image) == big


# --- coverage: a batch Lambda may give up on (changelog.captured) ---------------------------------


def _fail_batches_starting_at(monkeypatch: pytest.MonkeyPatch, sequence: str) -> None:
    """capture_batch fails (as a store write would) for every batch whose first record is ``sequence``."""
    real = handler.capture_batch

    def capture(store: Store, records: list[Any], *args: Any, **kwargs: Any) -> Any:
        if records[0]["dynamodb"]["SequenceNumber"] == sequence:
            raise RuntimeError("the batch failed")
        return real(store, records, *args, **kwargs)

    monkeypatch.setattr(handler, "capture_batch", capture)


def test_a_failed_batch_holds_coverage_before_its_first_change(local: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = realistic_batch()
    _fail_batches_starting_at(monkeypatch, "102")
    invoke(batches[0:2])
    assert invoke(batches[2:4]) == {"batchItemFailures": [{"itemIdentifier": "102"}]}
    invoke(batches[4:5])  # Lambda gave up on 102-103 and moved on

    # The newest stored change is at ...003, but the changes of ...001 and ...002 are not stored.
    assert coverage(local, TABLE).latest_us == 1_750_000_001 * 1_000_000 - 1


def test_a_batch_stored_at_its_first_attempt_leaves_no_capture_record(local: Store) -> None:
    # One object per batch, listed by every coverage read, would grow without end.
    for batch in realistic_batch():
        invoke([batch])
    assert local.list(capture_root(TABLE)) == []
    assert coverage(local, TABLE).latest_us == 1_750_000_003 * 1_000_000


def test_a_retry_that_stores_a_failed_batch_records_it_beside_its_pending_record(
        local: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = realistic_batch()
    _fail_batches_starting_at(monkeypatch, "102")
    invoke(batches[2:4])
    monkeypatch.undo()
    monkeypatch.setenv("REWIND_STORE", local.uri)
    invoke(batches[2:5])
    assert [path.split("/")[-2] for path in local.list(capture_root(TABLE))] == ["batches", "pending"]


def test_a_failed_batch_stored_on_a_retry_releases_coverage(local: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = realistic_batch()
    _fail_batches_starting_at(monkeypatch, "102")
    invoke(batches[0:2])
    invoke(batches[2:4])
    monkeypatch.undo()
    monkeypatch.setenv("REWIND_STORE", local.uri)
    assert invoke(batches[2:5]) == {"batchItemFailures": []}  # the retry, with what followed

    assert coverage(local, TABLE).latest_us == 1_750_000_003 * 1_000_000


def test_a_retry_of_the_first_half_of_a_failed_batch_leaves_the_other_half_pending(
        local: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # After a function error (a timeout) Lambda retries a batch in halves: storing the half that
    # starts where the failed batch starts must not lift the hold over the other half.
    batches = realistic_batch()
    invoke(batches[0:2])
    _fail_batches_starting_at(monkeypatch, "102")
    invoke(batches[2:5])
    monkeypatch.undo()
    monkeypatch.setenv("REWIND_STORE", local.uri)
    assert invoke(batches[2:3]) == {"batchItemFailures": []}  # the first half: 102 alone

    # Lambda may give up on 103-104 now: the hold stays where the failed batch's was (its oldest change).
    assert coverage(local, TABLE).latest_us == 1_750_000_001 * 1_000_000 - 1
    assert invoke(batches[3:5]) == {"batchItemFailures": []}  # the second half, stored after all
    assert coverage(local, TABLE).latest_us == 1_750_000_003 * 1_000_000


def test_recover_storing_the_first_half_after_lambda_stored_the_second_leaves_nothing_held(
        local: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lambda gave up on the half 102 and stored 103-104 at their first try (no record); recover then
    # stores 102 out of Lambda's order: the rest of the failed batch is no longer pending anywhere.
    from changelog.captured import settle_pending_batch
    from tests.events import ARN

    batches = realistic_batch()
    invoke(batches[0:2])
    _fail_batches_starting_at(monkeypatch, "102")
    invoke(batches[2:5])
    invoke(batches[2:3])  # the first half fails too; Lambda gives up on it
    monkeypatch.undo()
    monkeypatch.setenv("REWIND_STORE", local.uri)
    assert invoke(batches[3:5]) == {"batchItemFailures": []}

    capture_batch_again = handler.capture_batch(local, batches[2:3], handler.decode_lambda_record, source="recover")
    assert capture_batch_again.captured == 1
    settle_pending_batch(local, TABLE, ARN.format(table=TABLE), "102", "102", "recover", always=True)
    assert coverage(local, TABLE).latest_us == 1_750_000_003 * 1_000_000


class _Ended(BaseException):
    """What the runtime does to an invocation at its timeout: nothing after it runs."""


class _Context:
    """A Lambda context ``seconds`` before the function's timeout."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def _pending(store: Store) -> list[str]:
    return [path for path in store.list(capture_root(TABLE)) if "/pending/" in path]


def test_a_batch_about_to_time_out_is_recorded_pending_first(local: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # A timed-out invocation reports nothing: without its pending record, a batch that only ever timed
    # out and that Lambda then gave up on would be passed over by coverage.
    batches = realistic_batch()
    invoke(batches[0:2])

    def stalled(store: Store, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + 5
        while not _pending(store) and time.monotonic() < deadline:
            time.sleep(0.01)
        raise _Ended

    monkeypatch.setattr(handler, "capture_batch", stalled)
    with pytest.raises(_Ended):
        handler.lambda_handler(event(batches[2:5]), _Context(0.2))
    monkeypatch.undo()
    monkeypatch.setenv("REWIND_STORE", local.uri)

    assert len(_pending(local)) == 1
    invoke(batches[4:5])  # Lambda gave up on 102-104 and moved on
    assert coverage(local, TABLE).latest_us == 1_750_000_001 * 1_000_000 - 1


def test_a_batch_stored_after_its_deadline_record_was_written_is_settled(
        local: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = realistic_batch()
    real = handler.capture_batch

    def slow(store: Store, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)  # past the moment the pending record is written
        return real(store, *args, **kwargs)

    monkeypatch.setattr(handler, "capture_batch", slow)
    assert handler.lambda_handler(event(batches), _Context(0.2)) == {"batchItemFailures": []}
    assert len(_pending(local)) == 1
    assert coverage(local, TABLE).latest_us == 1_750_000_003 * 1_000_000


def test_a_batch_stored_in_time_leaves_no_timer_behind(local: Store) -> None:
    # Lambda freezes the process after the invocation: a timer left running would fire in a later one.
    import threading

    before = threading.active_count()
    assert handler.lambda_handler(event(realistic_batch()), _Context(600)) == {"batchItemFailures": []}
    time.sleep(0.05)
    assert threading.active_count() == before
    assert _pending(local) == []
