"""Recovering the batches Lambda gave up on (``ddb-rewind recover``), and gaps when the stream lost them.

Everything runs on moto: a table with a stream, an SQS on-failure queue holding Lambda's on-failure
records, built by hand in the shape AWS documents. moto stamps stream records with its own clock,
which the tests set so that every write lands on a chosen second (as the model's steps do); moto
cannot trim a stream, so the trimmed case makes moto's own GetShardIterator answer as DynamoDB
Streams does for a trimmed sequence number (TrimmedDataAccessException).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from moto.core.exceptions import JsonRESTError

from changelog.captured import hold_before, record_pending_batch, record_stored_batch
from changelog.codec import decode_getrecords_record, item_key
from changelog.gaps import STREAM_TIME_MARGIN_US, gaps_root, read_gaps
from changelog.layout import table_root
from changelog.meta import meta_from_description, write_meta
from changelog.state import coverage
from changelog.store import Store
from compactor.bootstrap import bootstrap_from_scan
from ddb_rewind.cli import main
from replayer.engines.views import open_sql
from replayer.proving.verify import restore_drill
from stream_consumer import recover
from stream_consumer.capture import capture_batch
from stream_consumer.recover import parse_failure_message, recover_queue
from tests.workloads import BASE, Workload

TABLE = "orders"
T0 = BASE
SECOND = 1_000_000


class Clock:
    """The time moto stamps on stream records (naive UTC, as moto's own utcnow)."""

    def __init__(self) -> None:
        self.second = T0

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.second, tz=UTC).replace(tzinfo=None)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fixed = Clock()
    monkeypatch.setattr("moto.dynamodb.models.table.utcnow", fixed)
    return fixed


@pytest.fixture
def queue(aws: None, sqs_answers_at_once: None) -> str:
    return str(boto3.client("sqs").create_queue(QueueName="rewind-failures")["QueueUrl"])


def stream_records(client: Any, arn: str) -> tuple[str, list[dict[str, Any]]]:
    """The shard id and every record moto's stream holds (GetRecords form)."""
    streams = boto3.client("dynamodbstreams")
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return shard["ShardId"], streams.get_records(ShardIterator=iterator)["Records"]


class Scenario:
    """Three Lambda batches of one table: the first and last stored, the middle one given up on."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.client = boto3.client("dynamodb")
        self.model = Workload(table=TABLE, client=self.client)
        description = self.model.description()
        self.arn = self.client.create_table(
            TableName=TABLE, KeySchema=description["KeySchema"],
            AttributeDefinitions=description["AttributeDefinitions"], BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )["TableDescription"]["LatestStreamArn"]
        self.clock = clock
        self.put(T0, "a", 1)
        self.put(T0, "b", 1)
        self.put(T0 + 10, "c", 1)
        self.put(T0 + 10, "a", 2)
        self.model.delete({"pk": {"S": "b"}}, T0 + 10)
        self.put(T0 + 20, "d", 1)
        self.put(T0 + 20, "c", 2)
        self.shard, records = stream_records(self.client, self.arn)
        self.batches = [records[0:2], records[2:5], records[5:7]]
        for batch in (self.batches[0], self.batches[2]):  # what the Lambda consumer stored
            capture_batch(store, batch, lambda r: decode_getrecords_record(r, TABLE, self.shard), source="test")
        write_meta(store, meta_from_description(description))

    def put(self, second: int, key: str, version: int) -> None:
        """PutItem on moto at ``second`` (the model records the same write at the same second)."""
        self.clock.second = second
        self.model.put({"pk": {"S": key}, "v": {"N": str(version)}}, second)

    def first_lost_sequence(self) -> str:
        return str(self.batches[1][0]["dynamodb"]["SequenceNumber"])

    def failure_message(self, batch: int = 1) -> str:
        """Lambda's on-failure record for one batch, as AWS documents it."""
        records = self.batches[batch]
        first, last = records[0]["dynamodb"], records[-1]["dynamodb"]

        def arrival(body: dict[str, Any]) -> str:
            return body["ApproximateCreationDateTime"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

        return json.dumps({
            "requestContext": {
                "requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:rewind-consumer",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": 101,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": "2025-06-15T15:07:30.717Z",
            "DDBStreamBatchInfo": {
                "shardId": self.shard,
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": arrival(first),
                "approximateArrivalOfLastRecord": arrival(last),
                "batchSize": len(records),
                "streamArn": self.arn,
            },
        })

    def expected(self, second: int) -> dict[str, dict[str, Any]]:
        return self.model.state_at(second)


@pytest.fixture
def scenario(aws: None, store: Store, clock: Clock) -> Scenario:
    return Scenario(store, clock)


@pytest.fixture
def trimmed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's stream answers every sequence-number iterator as DynamoDB Streams does once it is trimmed."""
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend

    original = DynamoDBStreamsBackend.get_shard_iterator

    def get_shard_iterator(self: Any, arn: str, shard_id: str, kind: str, sequence: Any = None) -> Any:
        if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            raise JsonRESTError("TrimmedDataAccessException",
                                "The operation attempted to read past the oldest stream record in a shard.")
        return original(self, arn, shard_id, kind, sequence)

    monkeypatch.setattr(DynamoDBStreamsBackend, "get_shard_iterator", get_shard_iterator)
    yield


def send(queue: str, body: str) -> None:
    boto3.client("sqs").send_message(QueueUrl=queue, MessageBody=body)


def queued(queue: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return sum(int(value) for value in attributes["Attributes"].values())


def replay(store: Store, second: int, out: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    """Exit code and items of ``ddb-rewind replay --at second --to-file``."""
    if out.exists():
        out.unlink()
    at = datetime.fromtimestamp(second, tz=UTC).isoformat()
    code = main(["replay", "--table", TABLE, "--store", store.uri, "--at", at, "--to-file", str(out)])
    if code != 0:
        return code, {}
    items = [json.loads(line)["Item"] for line in out.read_text(encoding="utf-8").splitlines()]
    return code, {item_key({"pk": item["pk"]}): item for item in items}


def run_recover(store: Store, queue: str, *extra: str) -> int:
    return main(["recover", "--queue-url", queue, "--store", store.uri, *extra])


def listing(store: Store) -> list[str]:
    return store.list(table_root(TABLE) + "/")


# --- recovery --------------------------------------------------------------------------------------


def test_a_failed_batch_is_recovered_and_replay_equals_the_model(
    scenario: Scenario, store: Store, queue: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    send(queue, scenario.failure_message())

    assert run_recover(store, queue) == 0

    out = capsys.readouterr().out
    assert f"recovered {TABLE} shard {scenario.shard}" in out and "3 records" in out
    assert queued(queue) == 0
    for second in (T0, T0 + 10, T0 + 20):
        assert replay(store, second, tmp_path / "state.jsonl") == (0, scenario.expected(second))


def test_without_recovery_the_batch_is_missing(scenario: Scenario, store: Store, tmp_path: Path) -> None:
    # The failure this module exists for: the middle batch is not in the store until recovered.
    _, items = replay(store, T0 + 20, tmp_path / "state.jsonl")
    assert items != scenario.expected(T0 + 20)


def test_recovered_rows_carry_the_shard_and_the_exact_sequence_range(
    scenario: Scenario, store: Store, queue: str
) -> None:
    send(queue, scenario.failure_message())
    summary = recover_queue(store, boto3.client("sqs"), boto3.client("dynamodbstreams"), queue, wait_seconds=0)
    assert (summary.recovered, summary.gaps, summary.records) == (1, 0, 3)
    first = scenario.first_lost_sequence().zfill(40)
    (path,) = [p for p in listing(store) if p.rsplit("/", 1)[-1].startswith(first)]
    rows = pq.read_table(store.local_root() / path).to_pylist()  # type: ignore[operator]
    assert {row["shard_id"] for row in rows} == {scenario.shard}
    assert sorted(row["sequence_number"] for row in rows) == sorted(
        str(r["dynamodb"]["SequenceNumber"]).zfill(40) for r in scenario.batches[1])


def test_recovering_the_same_message_twice_rewrites_the_same_files(
    scenario: Scenario, store: Store, queue: str, tmp_path: Path
) -> None:
    send(queue, scenario.failure_message())
    assert run_recover(store, queue) == 0
    first = {path: store.read(path) for path in listing(store) if "/changes/" in path}

    send(queue, scenario.failure_message())  # delivered again (at-least-once), or a re-run
    assert run_recover(store, queue) == 0

    assert {path: store.read(path) for path in listing(store) if "/changes/" in path} == first
    assert replay(store, T0 + 20, tmp_path / "state.jsonl") == (0, scenario.expected(T0 + 20))


def test_dry_run_writes_nothing_and_deletes_no_message(
    scenario: Scenario, store: Store, queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    send(queue, scenario.failure_message())
    before = {path: store.read(path) for path in listing(store)}

    assert run_recover(store, queue, "--dry-run") == 0

    assert {path: store.read(path) for path in listing(store)} == before
    assert queued(queue) == 1
    assert "would recover" in capsys.readouterr().out
    # Released, not held: a real run right after finds the message.
    assert run_recover(store, queue) == 0 and queued(queue) == 0


def test_messages_of_other_tables_stay_in_the_queue(scenario: Scenario, store: Store, queue: str) -> None:
    send(queue, scenario.failure_message())
    assert run_recover(store, queue, "--table", "invoices") == 0
    assert queued(queue) == 1
    assert not [p for p in listing(store) if scenario.first_lost_sequence() in p]


def test_an_unreadable_message_is_left_in_the_queue_with_one_warning(
    scenario: Scenario, store: Store, queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    send(queue, '{"hello": "world"}')
    assert run_recover(store, queue) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "DDBStreamBatchInfo" in err
    assert queued(queue) == 1


def test_a_missing_queue_is_one_line_and_exit_4(store: Store, aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/nope"
    assert run_recover(store, url) == 4
    err = capsys.readouterr().err
    assert err.startswith("ddb-rewind: error: ") and len(err.strip().splitlines()) == 1


def test_a_store_failure_keeps_the_message(
    scenario: Scenario, store: Store, queue: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    from changelog.errors import StoreError

    def failing_write(*args: Any, **kwargs: Any) -> None:
        raise StoreError("the store refused the write")

    send(queue, scenario.failure_message())
    monkeypatch.setattr(type(store), "write", failing_write)
    assert run_recover(store, queue) == 7
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert queued(queue) == 1  # written first, acknowledged last: nothing acknowledged


# --- gaps ------------------------------------------------------------------------------------------


def test_a_trimmed_batch_becomes_a_gap_and_the_message_is_deleted(
    scenario: Scenario, store: Store, queue: str, trimmed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    send(queue, scenario.failure_message())

    assert run_recover(store, queue) == 1

    out = capsys.readouterr().out
    assert out.startswith(f"GAP {TABLE} shard {scenario.shard}") and "trimmed" in out
    assert queued(queue) == 0
    (gap,) = read_gaps(store, TABLE)
    first = scenario.batches[1][0]["dynamodb"]
    assert (gap.first_sequence_number, gap.last_sequence_number) == (
        first["SequenceNumber"], scenario.batches[1][-1]["dynamodb"]["SequenceNumber"])
    assert gap.start_us == (T0 + 10) * SECOND - STREAM_TIME_MARGIN_US
    assert gap.end_us == (T0 + 10) * SECOND
    assert gap.source == "recover"


def test_a_deleted_gap_record_that_recover_found_is_noticed(
    scenario: Scenario, store: Store, queue: str, trimmed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # recover lists its gap in no checkpoint: only the ledger still knows the record was written.
    send(queue, scenario.failure_message())
    run_recover(store, queue)
    (record,) = store.list(f"tables/{TABLE}/gaps/")
    store.delete(record)
    capsys.readouterr()
    assert main(["check", "--store", store.uri]) == 6
    out = capsys.readouterr().out
    assert record in out and "is missing" in out
    cov = coverage(store, TABLE)  # what status and every reader count: the gap still cuts coverage
    assert any(record in loss.what for loss in cov.losses)
    assert all(high < (T0 + 10) * SECOND - STREAM_TIME_MARGIN_US for _, high in cov.intervals)


def test_status_shows_the_gap(
    scenario: Scenario, store: Store, queue: str, trimmed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    send(queue, scenario.failure_message())
    run_recover(store, queue)
    capsys.readouterr()

    assert main(["status", "--store", store.uri, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    (gap,) = row["gaps"]
    assert gap["shard_id"] == scenario.shard and gap["start"] == "2025-06-15T15:06:45Z"
    assert main(["status", "--store", store.uri]) == 0
    table = capsys.readouterr().out
    assert "2025-06-15T15:06:45Z" in table.splitlines()[2]


def test_replay_refuses_moments_at_or_after_the_gap_and_serves_those_before(
    scenario: Scenario, store: Store, queue: str, trimmed: None, tmp_path: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    send(queue, scenario.failure_message())
    run_recover(store, queue)
    capsys.readouterr()

    assert replay(store, T0 + 4, tmp_path / "state.jsonl") == (0, scenario.expected(T0 + 4))
    for second in (T0 + 5, T0 + 20):
        code, _ = replay(store, second, tmp_path / "state.jsonl")
        err = capsys.readouterr().err
        assert code == 5
        assert len(err.strip().splitlines()) == 1 and err.startswith("ddb-rewind: error: ")
        assert scenario.shard in err and "gap" in err and "ddb-rewind bootstrap --scan" in err


def test_a_bootstrap_after_the_gap_makes_later_moments_restorable(
    scenario: Scenario, store: Store, queue: str, trimmed: None, tmp_path: Path
) -> None:
    send(queue, scenario.failure_message())
    run_recover(store, queue)
    ticks = iter([(T0 + 30) * SECOND, (T0 + 31) * SECOND + 200_000])
    bootstrap_from_scan(store, TABLE, client=scenario.client, clock=lambda: next(ticks))
    scenario.put(T0 + 40, "e", 1)
    _, records = stream_records(scenario.client, scenario.arn)
    capture_batch(store, records[-1:], lambda r: decode_getrecords_record(r, TABLE, scenario.shard), source="test")

    assert replay(store, T0 + 40, tmp_path / "state.jsonl") == (0, scenario.expected(T0 + 40))
    assert replay(store, T0 + 32, tmp_path / "state.jsonl") == (0, scenario.expected(T0 + 32))
    assert replay(store, T0 + 20, tmp_path / "state.jsonl")[0] == 5  # between gap and bootstrap: still refused


def test_a_restore_drill_after_the_bootstrap_matches(
    scenario: Scenario, store: Store, queue: str, trimmed: None
) -> None:
    # The lost batch's changes are in the bootstrap's copy only: the drill's second computation starts
    # there, not from the changes alone (which lack them, and would report every drill as a mismatch).
    send(queue, scenario.failure_message())
    run_recover(store, queue)
    ticks = iter([(T0 + 30) * SECOND, (T0 + 31) * SECOND + 200_000])
    bootstrap_from_scan(store, TABLE, client=scenario.client, clock=lambda: next(ticks))
    scenario.put(T0 + 40, "e", 1)
    _, records = stream_records(scenario.client, scenario.arn)
    capture_batch(store, records[-1:], lambda r: decode_getrecords_record(r, TABLE, scenario.shard), source="test")

    drill = restore_drill(store, TABLE, at_us=(T0 + 40) * SECOND)

    assert drill.matches and drill.items_with_snapshot == len(scenario.expected(T0 + 40))


def test_sql_state_at_after_the_bootstrap_agrees_with_replay(
    scenario: Scenario, store: Store, queue: str, trimmed: None
) -> None:
    send(queue, scenario.failure_message())
    run_recover(store, queue)
    ticks = iter([(T0 + 30) * SECOND, (T0 + 31) * SECOND + 200_000])
    bootstrap_from_scan(store, TABLE, client=scenario.client, clock=lambda: next(ticks))

    at = datetime.fromtimestamp(T0 + 32, tz=UTC).isoformat()
    rows = open_sql(store).sql(f"SELECT item_key, item FROM state_at('{at}')").fetchall()

    assert {key: json.loads(item) for key, item in rows} == scenario.expected(T0 + 32)


def test_dry_run_of_a_trimmed_batch_records_no_gap(
    scenario: Scenario, store: Store, queue: str, trimmed: None
) -> None:
    send(queue, scenario.failure_message())
    assert run_recover(store, queue, "--dry-run") == 1
    assert store.list(gaps_root(TABLE)) == []
    assert queued(queue) == 1


def test_a_shard_that_is_gone_from_the_tables_stream_becomes_a_gap(
    scenario: Scenario, store: Store, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend

    def gone(self: Any, arn: str, shard_id: str, kind: str, sequence: Any = None) -> Any:
        raise JsonRESTError("ResourceNotFoundException", "Requested resource not found")

    monkeypatch.setattr(DynamoDBStreamsBackend, "get_shard_iterator", gone)
    send(queue, scenario.failure_message())
    summary = recover_queue(store, boto3.client("sqs"), boto3.client("dynamodbstreams"), queue, wait_seconds=0)
    assert summary.gaps == 1
    (gap,) = read_gaps(store, TABLE)
    assert "gone" in gap.reason
    assert coverage(store, TABLE).gaps == (gap,)


def test_a_stream_gone_with_its_table_and_known_to_nobody_stays_in_the_queue(
    scenario: Scenario, store: Store, queue: str
) -> None:
    scenario.client.delete_table(TableName=TABLE)
    send(queue, scenario.failure_message())
    warnings: list[str] = []
    summary = recover_queue(store, boto3.client("sqs"), boto3.client("dynamodbstreams"), queue, wait_seconds=0,
                            warn=warnings.append)
    assert (summary.gaps, summary.unreadable) == (0, 1)
    (line,) = warnings
    assert "gone too long to tell" in line
    assert read_gaps(store, TABLE) == ()
    assert queued(queue) == 1


# --- the message and the Lambda entry --------------------------------------------------------------


def test_the_documented_on_failure_record_is_read() -> None:
    body = json.dumps({
        "requestContext": {"requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81", "condition": "RetryAttemptsExhausted",
                           "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
                           "approximateInvokeCount": 1},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2019-11-14T00:13:49.717Z",
        "DDBStreamBatchInfo": {
            "shardId": "shardId-00000001573689847184-864758bb",
            "startSequenceNumber": "800000000003126276362",
            "endSequenceNumber": "800000000003126276362",
            "approximateArrivalOfFirstRecord": "2019-11-14T00:13:19Z",
            "approximateArrivalOfLastRecord": "2019-11-14T00:13:19Z",
            "batchSize": 1,
            "streamArn": "arn:aws:dynamodb:us-east-2:123456789012:table/mytable/stream/2019-11-14T00:04:06.388",
        },
    })
    batch = parse_failure_message(body)
    assert (batch.table, batch.start_sequence, batch.end_sequence, batch.batch_size) == (
        "mytable", "800000000003126276362", "800000000003126276362", 1)
    assert batch.first_arrival_us == 1_573_690_399 * SECOND


@pytest.mark.parametrize("body", ["not json", "[]", '{"DDBStreamBatchInfo": {"shardId": "s"}}'])
def test_a_message_that_is_no_on_failure_record_is_refused(body: str) -> None:
    with pytest.raises(recover.BadFailureMessage):
        parse_failure_message(body)


def test_the_lambda_entry_recovers_and_reports_only_failed_messages(
    scenario: Scenario, store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REWIND_STORE", store.uri)
    event = {"Records": [
        {"messageId": "m1", "receiptHandle": "r1", "body": scenario.failure_message(), "eventSource": "aws:sqs"},
        {"messageId": "m2", "receiptHandle": "r2", "body": "{}", "eventSource": "aws:sqs"},
    ]}
    assert recover.lambda_handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert replay(store, T0 + 20, tmp_path / "state.jsonl") == (0, scenario.expected(T0 + 20))


def test_the_lambda_entry_emits_permanent_gaps_for_a_trimmed_batch(
    scenario: Scenario, store: Store, monkeypatch: pytest.MonkeyPatch, trimmed: None,
    capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REWIND_STORE", store.uri)
    event = {"Records": [{"messageId": "m1", "receiptHandle": "r1", "body": scenario.failure_message()}]}
    capsys.readouterr()
    assert recover.lambda_handler(event, None) == {"batchItemFailures": []}
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(doc.get("PermanentGaps") == [1.0] or doc.get("PermanentGaps") == 1.0 for doc in emitted)
    assert len(read_gaps(store, TABLE)) == 1


def test_a_range_whose_first_records_are_gone_is_a_gap_even_without_a_batch_size() -> None:
    # DynamoDB Streams answers AT_SEQUENCE_NUMBER with the oldest record it still holds once the
    # first ones are trimmed; moto cannot trim, so this stream is built by hand (as in test_poller).
    batch = recover.FailedBatch(table=TABLE, stream_arn="arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/x",
                                shard_id="s1", start_sequence="100", end_sequence="100", first_arrival_us=None,
                                last_arrival_us=None, failed_at_us=None, batch_size=None)

    class TrimmedStreams:
        def get_shard_iterator(self, **request: Any) -> dict[str, str]:
            return {"ShardIterator": "i"}

        def get_records(self, **request: Any) -> dict[str, Any]:
            return {"Records": [{"dynamodb": {"SequenceNumber": "101"}}], "NextShardIterator": "j"}

    assert recover.read_range(TrimmedStreams(), batch) == (
        [], "the first records of the batch are no longer in the stream")


@pytest.mark.parametrize("sequence", ["²", "١٢٣", "x", "", None])
def test_a_record_whose_sequence_number_is_not_ascii_digits_never_stops_the_read(sequence: Any) -> None:
    from stream_consumer.recover import _sequence_of

    # -1: the record is read and left to capture, which quarantines it ("²".isdigit() is True in Python)
    assert _sequence_of({"dynamodb": {"SequenceNumber": sequence}}) == -1


# --- coverage while a batch is pending, and a recover that was stopped ------------------------------


def pending_from_the_handler(scenario: Scenario, store: Store) -> None:
    """What the Lambda consumer records when the middle batch fails (tests/test_handler.py checks it writes this)."""
    times = [r["dynamodb"]["ApproximateCreationDateTime"].timestamp() for r in scenario.batches[1]]
    record_pending_batch(store, TABLE, scenario.arn, scenario.first_lost_sequence(), hold_before(times), "lambda")


def test_a_pending_batch_holds_coverage_until_recover_stores_it(
    scenario: Scenario, store: Store, queue: str
) -> None:
    pending_from_the_handler(scenario, store)
    assert coverage(store, TABLE).latest_us == (T0 + 10) * SECOND - 1

    send(queue, scenario.failure_message())
    assert run_recover(store, queue) == 0

    assert coverage(store, TABLE).latest_us == (T0 + 20) * SECOND


def test_a_stored_batch_whose_range_only_contains_the_pending_start_does_not_settle_it(
    scenario: Scenario, store: Store
) -> None:
    # Another shard's batch, or a concurrent one of the same shard: its sequence numbers interleave.
    pending_from_the_handler(scenario, store)
    first = int(scenario.first_lost_sequence())
    record_stored_batch(store, TABLE, scenario.arn, str(first - 1), str(first + 1), "lambda")
    assert coverage(store, TABLE).latest_us == (T0 + 10) * SECOND - 1

    record_stored_batch(store, TABLE, scenario.arn, str(first), str(first + 1), "lambda")
    assert coverage(store, TABLE).latest_us == (T0 + 20) * SECOND


def test_a_pending_batch_recorded_as_a_gap_no_longer_holds_coverage(
    scenario: Scenario, store: Store, queue: str, trimmed: None
) -> None:
    pending_from_the_handler(scenario, store)
    send(queue, scenario.failure_message())
    assert run_recover(store, queue) == 1

    cov = coverage(store, TABLE)
    assert cov.latest_us == (T0 + 20) * SECOND and len(cov.gaps) == 1  # the gap refuses what follows it


def test_a_rerun_while_a_stopped_recover_still_holds_a_message_is_not_a_clean_exit(
    scenario: Scenario, store: Store, queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    send(queue, scenario.failure_message())
    # A recover killed mid-run: it received the message (held for 15 minutes) and never deleted it.
    boto3.client("sqs").receive_message(QueueUrl=queue, VisibilityTimeout=900)

    assert run_recover(store, queue) == 8

    captured = capsys.readouterr()
    assert "0 batches recovered" in captured.out
    assert captured.err.startswith("ddb-rewind: error: 1 messages") and len(captured.err.strip().splitlines()) == 1
    assert "held by another reader" in captured.err


# --- hostile messages: a bad message is refused alone, never written, never fails the good ones ----


def hostile(scenario: Scenario, **info: Any) -> str:
    """The scenario's on-failure message with some of its DDBStreamBatchInfo fields replaced."""
    document = json.loads(scenario.failure_message())
    document["DDBStreamBatchInfo"].update(info)
    return json.dumps(document)


# Long enough for botocore's ShardId length check (28 to 65), which would otherwise stop it first.
ESCAPE = "../../../../escaped-shard-id-long-enough"
TRAVERSALS = [ESCAPE, "../../../../../../tmp/evil", "..", "a/b", "shard\\..\\x", "", "x" * 300]


@pytest.mark.parametrize("shard", TRAVERSALS)
def test_a_shard_id_that_is_a_path_is_no_on_failure_record(shard: str) -> None:
    body = json.dumps({"DDBStreamBatchInfo": {
        "shardId": shard, "startSequenceNumber": "100", "endSequenceNumber": "200",
        "streamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"}})
    with pytest.raises(recover.BadFailureMessage, match="shardId"):
        parse_failure_message(body)


def test_the_lambda_entry_fails_only_the_message_whose_shard_id_is_a_path(
    scenario: Scenario, store: Store, monkeypatch: pytest.MonkeyPatch, trimmed: None, tmp_path: Path
) -> None:
    # Trimmed: the evil batch would become a gap record named by its shard id, outside the store.
    monkeypatch.setenv("REWIND_STORE", store.uri)
    event = {"Records": [
        {"messageId": "good", "body": scenario.failure_message()},  # its gap makes the gaps/ folder
        {"messageId": "evil", "body": hostile(scenario, shardId=ESCAPE)},
    ]}
    assert recover.lambda_handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "evil"}]}
    root = Path(store.uri)
    assert not list(root.parent.rglob("*escaped*"))
    assert len(read_gaps(store, TABLE)) == 1  # the good message's gap


def test_recover_leaves_a_message_whose_shard_id_is_a_path_in_the_queue(
    scenario: Scenario, store: Store, queue: str, trimmed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (Path(store.uri) / "tables" / TABLE / "gaps").mkdir(parents=True)
    send(queue, hostile(scenario, shardId=ESCAPE))
    assert run_recover(store, queue) == 1  # as every unreadable message
    assert "shardId" in capsys.readouterr().err
    assert queued(queue) == 1
    assert not list(Path(store.uri).parent.rglob("*escaped*"))
    assert read_gaps(store, TABLE) == ()


def test_a_body_nested_past_the_recursion_limit_is_no_on_failure_record() -> None:
    with pytest.raises(recover.BadFailureMessage, match="nested"):
        parse_failure_message("[" * 200_000)


def test_a_5000_digit_sequence_number_is_no_on_failure_record(scenario: Scenario) -> None:
    with pytest.raises(recover.BadFailureMessage, match="1 to 40 digits"):
        parse_failure_message(hostile(scenario, endSequenceNumber="9" * 5000))


@pytest.mark.parametrize("arrival", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z"])
def test_an_arrival_time_out_of_range_reads_as_unknown(scenario: Scenario, arrival: str) -> None:
    batch = parse_failure_message(hostile(scenario, approximateArrivalOfFirstRecord=arrival))
    assert batch.first_arrival_us is None


HOSTILE_BODIES = {
    "deep": "[" * 200_000,
    "long-sequence": {"endSequenceNumber": "9" * 5000},
    "shard-id-a-path": {"shardId": ESCAPE},
}


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_the_lambda_entry_fails_only_the_hostile_message_and_recovers_the_good_one(
    scenario: Scenario, store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    monkeypatch.setenv("REWIND_STORE", store.uri)
    spec = HOSTILE_BODIES[name]
    body = spec if isinstance(spec, str) else hostile(scenario, **spec)
    event = {"Records": [{"messageId": "bad", "body": body}, {"messageId": "good", "body": scenario.failure_message()}]}
    result = recover.lambda_handler(event, None)
    assert result == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert replay(store, T0 + 20, tmp_path / "state.jsonl") == (0, scenario.expected(T0 + 20))


@pytest.mark.parametrize("not_an_event", [{"Records": 5}, [], None, {"Records": [5, None]}])
def test_the_lambda_entry_given_no_sqs_batch_fails_nothing(store: Store, monkeypatch: pytest.MonkeyPatch,
                                                           not_an_event: Any) -> None:
    monkeypatch.setenv("REWIND_STORE", store.uri)
    assert recover.lambda_handler(not_an_event, None) == {"batchItemFailures": []}


def test_the_lambda_entry_recovers_a_batch_whose_arrival_time_is_year_1_with_an_offset(
    scenario: Scenario, store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REWIND_STORE", store.uri)
    body = hostile(scenario, approximateArrivalOfFirstRecord="0001-01-01T00:00:00+01:00")
    event = {"Records": [{"messageId": "odd", "body": body}, {"messageId": "good", "body": scenario.failure_message()}]}
    assert recover.lambda_handler(event, None) == {"batchItemFailures": []}
    assert replay(store, T0 + 20, tmp_path / "state.jsonl") == (0, scenario.expected(T0 + 20))


def test_a_batch_of_a_stream_without_images_becomes_a_gap_that_says_why(
    aws: None, store: Store, queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The consumer can never capture a KEYS_ONLY stream; after Lambda's bounded retries the batch
    # comes here, and is lost for good: a gap naming the cause, not a message retried forever.
    client = boto3.client("dynamodb")
    arn = client.create_table(
        TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
    )["TableDescription"]["LatestStreamArn"]
    client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    shard, records = stream_records(client, arn)
    first, last = records[0]["dynamodb"], records[-1]["dynamodb"]
    send(queue, json.dumps({"DDBStreamBatchInfo": {
        "shardId": shard, "startSequenceNumber": first["SequenceNumber"], "endSequenceNumber": last["SequenceNumber"],
        "batchSize": len(records), "streamArn": arn}}))

    assert run_recover(store, queue) == 1

    (gap,) = read_gaps(store, TABLE)
    assert "no item images" in gap.reason and "KEYS_ONLY" in gap.reason
    assert queued(queue) == 0


# --- a message must name a stream its table had before it may record a gap -------------------------

FORGED_STREAM = f"arn:aws:dynamodb:us-east-1:123456789012:table/{TABLE}/stream/2099-01-01T00:00:00.000"


def test_a_forged_stream_records_no_gap_and_stays_in_the_queue(
    scenario: Scenario, store: Store, queue: str, trimmed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    send(queue, hostile(scenario, streamArn=FORGED_STREAM))
    assert run_recover(store, queue) == 1  # as every unreadable message
    (line,) = capsys.readouterr().err.splitlines()
    assert "cannot be attributed" in line and FORGED_STREAM in line
    assert read_gaps(store, TABLE) == ()
    assert queued(queue) == 1


def test_the_lambda_entry_records_no_gap_for_a_forged_stream(
    scenario: Scenario, store: Store, monkeypatch: pytest.MonkeyPatch, trimmed: None
) -> None:
    monkeypatch.setenv("REWIND_STORE", store.uri)
    event = {"Records": [{"messageId": "forged", "body": hostile(scenario, streamArn=FORGED_STREAM)},
                         {"messageId": "good", "body": scenario.failure_message()}]}
    assert recover.lambda_handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "forged"}]}
    (gap,) = read_gaps(store, TABLE)  # the good message's, of the table's own stream
    assert gap.first_sequence_number == scenario.first_lost_sequence()


def test_a_trimmed_batch_of_the_tables_own_stream_still_records_its_gap(
    scenario: Scenario, store: Store, queue: str, trimmed: None
) -> None:
    send(queue, scenario.failure_message())
    summary = recover_queue(store, boto3.client("sqs"), boto3.client("dynamodbstreams"), queue, wait_seconds=0)
    assert (summary.gaps, summary.unreadable) == (1, 0)
