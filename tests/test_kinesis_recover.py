"""A Kinesis batch Lambda gave up on is held, recovered or recorded as a gap exactly as a DynamoDB one.

Everything runs on moto: a Kinesis data stream carrying a table's DynamoDB changes (the payloads
DynamoDB writes to it), the Lambda consumer fed the stream's own records in the form Lambda
delivers them, and an SQS on-failure queue holding Lambda's ``KinesisBatchInfo`` records in the
shape AWS documents. moto cannot trim a stream; the trimmed case removes the batch's records from
moto's shard, so that AT_SEQUENCE_NUMBER answers with a later record, as Kinesis does past its
retention.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from changelog.gaps import read_gaps
from changelog.state import coverage
from changelog.store import Store
from ddb_rewind.cli import main
from stream_consumer import handler, recover
from stream_consumer.recover import parse_failure_message

TABLE = "sensors"
STREAM = "ddb-changes"
T0 = 1_750_000_000  # 2025-06-15T15:06:40Z
SECOND = 1_000_000
# (second, key, version or None for a delete): three batches of the stream, the middle one given up on.
CHANGES = [(T0, "a", 1), (T0, "b", 1), (T0 + 10, "c", 1), (T0 + 10, "a", 2), (T0 + 10, "b", None),
           (T0 + 20, "d", 1), (T0 + 20, "c", 2)]
BATCHES = [(0, 2), (2, 5), (5, 7)]


def payload(second: int, key: str, version: int | None, n: int) -> bytes:
    """What DynamoDB writes to the Kinesis stream for one change (times in milliseconds)."""
    keys = {"pk": {"S": key}}
    body: dict[str, Any] = {"ApproximateCreationDateTime": second * 1000,
                            "ApproximateCreationDateTimePrecision": "MILLISECOND", "Keys": keys, "SizeBytes": 20}
    if version is not None:
        body["NewImage"] = {**keys, "v": {"N": str(version)}}
    return json.dumps({"awsRegion": "us-east-1", "eventID": f"ddb-{n}",
                       "eventName": "MODIFY" if version is not None else "REMOVE", "userIdentity": None,
                       "recordFormat": "application/json", "tableName": TABLE, "dynamodb": body,
                       "eventSource": "aws:dynamodb"}).encode()


def expected(second: int) -> dict[str, int]:
    """Each item's version at ``second`` (the model: the changes applied in order)."""
    state: dict[str, int] = {}
    for at, key, version in CHANGES:
        if at <= second:
            if version is None:
                state.pop(key, None)
            else:
                state[key] = version
    return state


class Stream:
    """The Kinesis stream on moto, its records as Lambda delivers them, and the batches of CHANGES."""

    def __init__(self) -> None:
        self.kinesis = boto3.client("kinesis")
        self.kinesis.create_stream(StreamName=STREAM, ShardCount=1)
        self.arn = self.kinesis.describe_stream(StreamName=STREAM)["StreamDescription"]["StreamARN"]
        for n, (second, key, version) in enumerate(CHANGES):
            self.kinesis.put_record(StreamName=STREAM, Data=payload(second, key, version, n), PartitionKey=key)
        (shard,) = self.kinesis.list_shards(StreamName=STREAM)["Shards"]
        self.shard = shard["ShardId"]
        iterator = self.kinesis.get_shard_iterator(StreamName=STREAM, ShardId=self.shard,
                                                   ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        self.raw = self.kinesis.get_records(ShardIterator=iterator)["Records"]
        self.events = [self.lambda_record(record) for record in self.raw]

    def lambda_record(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": record["PartitionKey"],
                        "sequenceNumber": record["SequenceNumber"],
                        "data": base64.b64encode(record["Data"]).decode(),
                        "approximateArrivalTimestamp": record["ApproximateArrivalTimestamp"].timestamp()},
            "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventName": "aws:kinesis:record",
            "eventID": f"{self.shard}:{record['SequenceNumber']}", "eventSourceARN": self.arn,
            "awsRegion": "us-east-1",
        }

    def batch(self, index: int) -> list[dict[str, Any]]:
        low, high = BATCHES[index]
        return self.events[low:high]

    def failure_message(self, index: int = 1, **override: Any) -> str:
        """Lambda's on-failure record of one batch, as AWS documents it for a Kinesis source."""
        low, high = BATCHES[index]

        def arrival(n: int) -> str:
            return datetime.fromtimestamp(CHANGES[n][0], tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")

        info = {
            "shardId": self.shard,
            "startSequenceNumber": self.raw[low]["SequenceNumber"],
            "endSequenceNumber": self.raw[high - 1]["SequenceNumber"],
            "approximateArrivalOfFirstRecord": arrival(low),
            "approximateArrivalOfLastRecord": arrival(high - 1),
            "batchSize": high - low,
            "streamArn": self.arn,
            **override,
        }
        return json.dumps({
            "requestContext": {"requestId": "c9b8fa9f-5a7f-xmpl-af9c-0c604cde93a5",
                               "condition": "RetryAttemptsExhausted",
                               "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:rewind-consumer",
                               "approximateInvokeCount": 4},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": "2025-06-15T15:08:06.021Z",
            "KinesisBatchInfo": info,
        })

    def trim(self, index: int = 1) -> None:
        """Kinesis past its retention: the batch's records are gone from the shard (moto cannot trim)."""
        from moto.kinesis.models import kinesis_backends

        shard = kinesis_backends["123456789012"]["us-east-1"].streams[STREAM].get_shard(self.shard)
        low, high = BATCHES[index]
        for record in self.raw[low:high]:
            del shard.records[int(record["SequenceNumber"])]


@pytest.fixture
def stream(handler_store: Store, monkeypatch: pytest.MonkeyPatch) -> Stream:
    """The consumer stores batches 0 and 2 into the store; batch 1 fails on every try (Lambda gives up)."""
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    kinesis = Stream()
    failing = kinesis.batch(1)[0]["kinesis"]["sequenceNumber"]
    real = handler.capture_batch

    def capture(store: Store, records: list[Any], *args: Any, **kwargs: Any) -> Any:
        if records[0]["kinesis"]["sequenceNumber"] == failing:
            raise RuntimeError("the batch failed")  # as a store write would
        return real(store, records, *args, **kwargs)

    with monkeypatch.context() as failing_store:
        failing_store.setattr(handler, "capture_batch", capture)
        assert handler.lambda_handler({"Records": kinesis.batch(0)}, None) == {"batchItemFailures": []}
        response = handler.lambda_handler({"Records": kinesis.batch(1)}, None)
        assert response == {"batchItemFailures": [{"itemIdentifier": failing}]}
        assert handler.lambda_handler({"Records": kinesis.batch(2)}, None) == {"batchItemFailures": []}
    return kinesis


@pytest.fixture
def queue(stream: Stream, sqs_answers_at_once: None) -> str:
    return str(boto3.client("sqs").create_queue(QueueName="rewind-failures")["QueueUrl"])


def send(queue: str, body: str) -> None:
    boto3.client("sqs").send_message(QueueUrl=queue, MessageBody=body)


def queued(queue: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return sum(int(value) for value in attributes["Attributes"].values())


def run_recover(store: Store, queue: str, *extra: str) -> int:
    return main(["recover", "--queue-url", queue, "--store", store.uri, *extra])


def replay(store: Store, second: int, out: Path) -> tuple[int, dict[str, int]]:
    """Exit code of ``ddb-rewind replay --at second --to-file`` and each item's version."""
    if out.exists():
        out.unlink()
    at = datetime.fromtimestamp(second, tz=UTC).isoformat()
    code = main(["replay", "--table", TABLE, "--store", store.uri, "--at", at, "--to-file", str(out)])
    if code != 0:
        return code, {}
    items = [json.loads(line)["Item"] for line in out.read_text(encoding="utf-8").splitlines()]
    return code, {item["pk"]["S"]: int(item["v"]["N"]) for item in items}


# --- held while pending ------------------------------------------------------------------------------


def test_a_failed_kinesis_batch_holds_coverage_before_its_first_change(stream: Stream, store: Store) -> None:
    # The newest stored change is at T0+20, but the changes of T0+10 are not stored.
    assert coverage(store, TABLE).latest_us == (T0 + 10) * SECOND - 1


def test_status_names_the_pending_kinesis_batch_and_its_shard(
    stream: Stream, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["status", "--store", store.uri, "--table", TABLE])
    out = capsys.readouterr().out
    assert stream.shard in out and "failed batch" in out


def test_replay_refuses_a_moment_past_the_pending_kinesis_batch(stream: Stream, store: Store, tmp_path: Path) -> None:
    assert replay(store, T0 + 20, tmp_path / "state.jsonl")[0] == 5
    assert replay(store, T0 + 5, tmp_path / "state.jsonl") == (0, expected(T0 + 5))


# --- recovered -----------------------------------------------------------------------------------------


def test_recover_recaptures_the_kinesis_batch_and_replay_equals_the_model(
    stream: Stream, store: Store, queue: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    send(queue, stream.failure_message())

    assert run_recover(store, queue) == 0

    assert "1 batches recovered" in capsys.readouterr().out
    assert queued(queue) == 0
    assert coverage(store, TABLE).latest_us == (T0 + 20) * SECOND
    for second in (T0, T0 + 10, T0 + 20):
        assert replay(store, second, tmp_path / "state.jsonl") == (0, expected(second))


def test_the_recover_lambda_recaptures_the_kinesis_batch(
    stream: Stream, store: Store, tmp_path: Path
) -> None:
    event = {"Records": [{"messageId": "m1", "body": stream.failure_message()}]}
    assert recover.lambda_handler(event, None) == {"batchItemFailures": []}
    assert replay(store, T0 + 20, tmp_path / "state.jsonl") == (0, expected(T0 + 20))


def test_a_kinesis_batch_of_another_table_stays_in_the_queue_with_table(stream: Stream, store: Store,
                                                                       queue: str) -> None:
    send(queue, stream.failure_message())
    assert run_recover(store, queue, "--table", "other") == 0
    assert queued(queue) == 1
    assert coverage(store, TABLE).latest_us == (T0 + 10) * SECOND - 1


# --- trimmed -------------------------------------------------------------------------------------------


def test_a_trimmed_kinesis_batch_becomes_a_gap_naming_its_range(stream: Stream, store: Store, queue: str,
                                                                tmp_path: Path) -> None:
    stream.trim()
    send(queue, stream.failure_message())

    assert run_recover(store, queue) == 1  # a gap was recorded

    (gap,) = read_gaps(store, TABLE)
    low, high = BATCHES[1]
    assert (gap.shard_id, gap.first_sequence_number, gap.last_sequence_number) == (
        stream.shard, stream.raw[low]["SequenceNumber"], stream.raw[high - 1]["SequenceNumber"])
    assert "no longer in the stream" in gap.reason
    assert queued(queue) == 0
    # The pending record is settled by the gap, and the gap refuses what follows it.
    assert replay(store, T0 + 20, tmp_path / "state.jsonl")[0] == 5
    # The gap starts the stream's time margin before the first lost record's arrival (T0+10).
    assert replay(store, T0 + 4, tmp_path / "state.jsonl") == (0, expected(T0 + 4))


def test_a_trimmed_kinesis_batch_that_arrived_late_gaps_from_its_oldest_change(
        stream: Stream, store: Store, queue: str, tmp_path: Path) -> None:
    # Kinesis may deliver DynamoDB's records long after they were made: the batch's first record
    # arrived at T0+60, its oldest change was made at T0+10 (the consumer's pending record read it).
    stream.trim()
    late = datetime.fromtimestamp(T0 + 60, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    send(queue, stream.failure_message(approximateArrivalOfFirstRecord=late, approximateArrivalOfLastRecord=late))

    assert run_recover(store, queue) == 1
    (gap,) = read_gaps(store, TABLE)
    assert gap.start_us == (T0 + 10) * SECOND
    assert replay(store, T0 + 15, tmp_path / "state.jsonl")[0] == 5
    assert replay(store, T0 + 9, tmp_path / "state.jsonl") == (0, expected(T0 + 9))


def test_a_trimmed_batch_of_two_tables_gaps_both_when_recover_runs_for_one(
        handler_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # One stream carries sensors and meters; the lost batch is pending under both. recover runs for the
    # stack's table (sensors) and must settle meters too, or meters is held for good.
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    kinesis = boto3.client("kinesis")
    kinesis.create_stream(StreamName="two-tables", ShardCount=1)
    arn = kinesis.describe_stream(StreamName="two-tables")["StreamDescription"]["StreamARN"]
    for n, (table, second) in enumerate([(TABLE, T0), (TABLE, T0 + 10), ("meters", T0 + 10), (TABLE, T0 + 20)]):
        data = json.loads(payload(second, f"k{n}", 1, n))
        data["tableName"] = table
        kinesis.put_record(StreamName="two-tables", Data=json.dumps(data).encode(), PartitionKey="k")
    (shard,) = kinesis.list_shards(StreamName="two-tables")["Shards"]
    iterator = kinesis.get_shard_iterator(StreamName="two-tables", ShardId=shard["ShardId"],
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    raw = kinesis.get_records(ShardIterator=iterator)["Records"]
    events = [{"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "k", "sequenceNumber": r["SequenceNumber"],
                           "data": base64.b64encode(r["Data"]).decode(), "approximateArrivalTimestamp": 0},
               "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventName": "aws:kinesis:record",
               "eventID": f"{shard['ShardId']}:{r['SequenceNumber']}", "eventSourceARN": arn,
               "awsRegion": "us-east-1"} for r in raw]
    real = handler.capture_batch

    def capture(store: Store, records: list[Any], *args: Any, **kwargs: Any) -> Any:
        if records[0] is events[1]:
            raise RuntimeError("the batch failed")
        return real(store, records, *args, **kwargs)

    with monkeypatch.context() as failing:
        failing.setattr(handler, "capture_batch", capture)
        assert handler.lambda_handler({"Records": events[0:1]}, None) == {"batchItemFailures": []}
        assert handler.lambda_handler({"Records": events[1:3]}, None)["batchItemFailures"]
        assert handler.lambda_handler({"Records": events[3:4]}, None) == {"batchItemFailures": []}
    from moto.kinesis.models import kinesis_backends

    stored = kinesis_backends["123456789012"]["us-east-1"].streams["two-tables"].get_shard(shard["ShardId"])
    for record in raw[1:3]:
        del stored.records[int(record["SequenceNumber"])]
    stamp = datetime.fromtimestamp(T0 + 10, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    message = json.dumps({"requestContext": {"condition": "RetryAttemptsExhausted"}, "version": "1.0",
                          "timestamp": stamp, "KinesisBatchInfo": {
                              "shardId": shard["ShardId"], "startSequenceNumber": raw[1]["SequenceNumber"],
                              "endSequenceNumber": raw[2]["SequenceNumber"], "approximateArrivalOfFirstRecord": stamp,
                              "approximateArrivalOfLastRecord": stamp, "batchSize": 2, "streamArn": arn}})

    outcome = recover.recover_batch(handler_store, None, parse_failure_message(message), kinesis=kinesis, table=TABLE)

    assert set(outcome.tables) == {TABLE, "meters"}
    assert [len(read_gaps(handler_store, table)) for table in (TABLE, "meters")] == [1, 1]


def test_the_recover_lambda_records_the_gap_of_a_trimmed_kinesis_batch(stream: Stream, store: Store) -> None:
    stream.trim()
    event = {"Records": [{"messageId": "m1", "body": stream.failure_message()}]}
    assert recover.lambda_handler(event, None) == {"batchItemFailures": []}
    assert len(read_gaps(store, TABLE)) == 1


# --- forged and malformed bodies -----------------------------------------------------------------------

BAD_FIELDS: dict[str, dict[str, Any]] = {
    "shard-id-a-path": {"shardId": "../../../../escaped-shard-id"},
    "shard-id-not-kinesis": {"shardId": "shard-1"},
    "shard-id-number": {"shardId": 1},
    "stream-arn-dynamodb": {"streamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/sensors/stream/x"},
    "stream-arn-a-path": {"streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/../../x"},
    "stream-arn-missing": {"streamArn": None},
    "sequence-not-digits": {"startSequenceNumber": "49x"},
    "sequence-5000-digits": {"endSequenceNumber": "9" * 5000},
    "sequence-a-number": {"startSequenceNumber": 4959},
    "end-before-start": {"startSequenceNumber": "200", "endSequenceNumber": "100"},
}


@pytest.mark.parametrize("name", sorted(BAD_FIELDS))
def test_a_malformed_kinesis_batch_info_is_no_on_failure_record(stream: Stream, name: str) -> None:
    field = next(iter(BAD_FIELDS[name]))
    with pytest.raises(recover.BadFailureMessage, match=field.replace("startSequenceNumber", "SequenceNumber")
                       .replace("endSequenceNumber", "SequenceNumber")):
        parse_failure_message(stream.failure_message(**BAD_FIELDS[name]))


BOTH = '{"KinesisBatchInfo": {"shardId": "shardId-000000000000"}, "DDBStreamBatchInfo": {}}'


@pytest.mark.parametrize("body", ['{"KinesisBatchInfo": 5}', '{"KinesisBatchInfo": {}}', "[" * 200_000, BOTH])
def test_a_body_that_is_no_kinesis_batch_info_is_refused(body: str) -> None:
    with pytest.raises(recover.BadFailureMessage):
        parse_failure_message(body)


def test_the_documented_kinesis_on_failure_record_is_read(stream: Stream) -> None:
    batch = parse_failure_message(stream.failure_message())
    low, high = BATCHES[1]
    assert (batch.source, batch.table, batch.shard_id, batch.start_sequence, batch.end_sequence, batch.batch_size) == (
        "kinesis", None, stream.shard, stream.raw[low]["SequenceNumber"], stream.raw[high - 1]["SequenceNumber"], 3)
    assert batch.first_arrival_us == (T0 + 10) * SECOND


@pytest.mark.parametrize("name", ["shard-id-a-path", "sequence-5000-digits", "stream-arn-a-path"])
def test_recover_leaves_a_malformed_kinesis_message_in_the_queue_with_one_line(
    stream: Stream, store: Store, queue: str, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    send(queue, stream.failure_message(**BAD_FIELDS[name]))
    assert run_recover(store, queue) == 1  # as every unreadable message
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("ddb-rewind: warning: message")
    assert queued(queue) == 1
    assert not list(Path(store.uri).parent.rglob("*escaped*"))
    assert read_gaps(store, TABLE) == ()


def test_the_recover_lambda_fails_only_the_malformed_kinesis_message(stream: Stream, store: Store,
                                                                     tmp_path: Path) -> None:
    event = {"Records": [{"messageId": "bad", "body": stream.failure_message(shardId="../x")},
                         {"messageId": "good", "body": stream.failure_message()}]}
    assert recover.lambda_handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert replay(store, T0 + 20, tmp_path / "state.jsonl") == (0, expected(T0 + 20))


def test_a_forged_kinesis_message_no_table_holds_pending_records_no_gap_and_stays(
    stream: Stream, store: Store, queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A well-formed message naming a stream and range nothing here ever failed on: nothing can be read,
    # and no table holds a pending record for it, so it cannot be attributed to a table.
    forged = stream.failure_message(streamArn="arn:aws:kinesis:us-east-1:123456789012:stream/elsewhere")
    send(queue, forged)
    assert run_recover(store, queue) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "cannot be attributed" in line
    assert read_gaps(store, TABLE) == ()
    assert queued(queue) == 1


def test_the_recover_lambda_records_no_gap_for_a_forged_kinesis_message(stream: Stream, store: Store) -> None:
    stream.trim()
    forged = stream.failure_message(shardId="shardId-000000000007")
    event = {"Records": [{"messageId": "forged", "body": forged},
                         {"messageId": "good", "body": stream.failure_message()}]}
    assert recover.lambda_handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "forged"}]}
    (gap,) = read_gaps(store, TABLE)  # the good message's
    assert gap.shard_id == stream.shard


def test_a_failed_kinesis_batch_stored_on_a_retry_releases_coverage(stream: Stream, store: Store) -> None:
    assert handler.lambda_handler({"Records": stream.batch(1)}, None) == {"batchItemFailures": []}
    assert coverage(store, TABLE).latest_us == (T0 + 20) * SECOND
