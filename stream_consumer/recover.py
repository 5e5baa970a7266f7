"""Re-capture the batches Lambda gave up on, from the stack's on-failure queue; record what is gone as gaps.

When a stream batch exhausts its retries, Lambda sends its metadata (``DDBStreamBatchInfo`` for a
DynamoDB stream, ``KinesisBatchInfo`` for a Kinesis data stream: shard, first and last sequence
number, arrival times) to the on-failure queue and moves on: the records are not in the store. For
each such message this module reads exactly that range again from the stream (GetShardIterator
AT_SEQUENCE_NUMBER, GetRecords until past the last sequence number) and stores it through the same
``capture_batch`` as the handler and the poller, with the decoder of its source. File names derive
from the records, so a re-run, or an overlap with a Lambda retry, rewrites the same objects or adds
duplicates that readers drop on ``event_id``. A stored batch is recorded (``changelog.captured``),
which settles the pending record the handler left for it.

A Kinesis message names no table (one Kinesis stream may carry several): the batch belongs to the
tables its records name and to those holding the handler's pending record for it. A lost Kinesis
batch records its gap under those; when no table holds a pending record for it and none of its
records could be read, it cannot be attributed (forged, or its pending record was never written)
and stays in the queue for an operator, as a DynamoDB message naming a stream its table never had.

A range that cannot be read any more (trimmed after 24 hours, shard or stream gone) becomes a gap
(``changelog.gaps``), which ``status`` shows and every restore refuses to cross. The message is
deleted only after its records or its gap are stored (write first, acknowledge last); anything
transient (the store, throttling, the network) leaves it in the queue to be tried again.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from changelog.captured import (
    DYNAMODB_SEQUENCE_DIGITS,
    is_pending,
    pending_hold,
    sequence_problem,
    settle_pending_batch,
)
from changelog.codec import (
    MAX_SEQUENCE_DIGITS,
    decode_getrecords_record,
    decode_kinesis_record,
    kinesis_shard_problem,
    kinesis_stream_arn_problem,
    table_from_arn,
)
from changelog.errors import EXIT_CONFLICT, DecodeError, RewindError, StreamConfigError, UnsafeName, UsageError
from changelog.gaps import STREAM_TIME_MARGIN_US, Gap, floor_second, write_gap
from changelog.layout import TABLES, meta_path, safe_name, table_names
from changelog.meta import meta_from_keys, write_meta
from changelog.names import table_name_problem
from changelog.store import Store, environment_store
from changelog.timefmt import EARLIEST, LATEST, to_micros
from stream_consumer.capture import capture_batch

GETRECORDS_LIMIT = 1000
# An open shard may answer GetRecords with no records although more follow; this many empty answers
# in a row before the end sequence means "not readable now": the message stays and is tried again.
MAX_EMPTY_READS = 20
_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 10})
_GONE = {
    "TrimmedDataAccessException": "trimmed from the stream (older than its 24-hour retention) before it was re-read",
    "ResourceNotFoundException": "the shard or the stream is gone",
}

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "ddb-rewind-recover"))
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ddb-rewind"),
    service=os.environ.get("POWERTOOLS_SERVICE_NAME", "ddb-rewind-recover"),
)


class BadFailureMessage(UsageError):
    """A queue message that is not Lambda's on-failure record of a DynamoDB or Kinesis stream batch."""


class RecoverReadError(RewindError):
    """Reading the stream failed for a reason that may pass (throttling, network): try again later."""

    exit_code = 7


@dataclass(frozen=True)
class FailedBatch:
    """One on-failure record: which records of which shard Lambda could not deliver."""

    table: str | None  # None for a Kinesis batch: its records name their tables
    stream_arn: str
    shard_id: str
    start_sequence: str
    end_sequence: str
    first_arrival_us: int | None
    last_arrival_us: int | None
    failed_at_us: int | None  # the record's own timestamp: when Lambda gave up
    batch_size: int | None
    source: Literal["dynamodb", "kinesis"] = "dynamodb"

    @property
    def label(self) -> str:
        """The batch's table, or for a Kinesis batch its stream."""
        return self.table if self.table is not None else f"Kinesis stream {self.stream_arn.rsplit('/', 1)[-1]}"


@dataclass(frozen=True)
class Outcome:
    """What became of one failed batch."""

    batch: FailedBatch
    kind: Literal["recovered", "gap"]
    records: int  # records read back from the stream
    files: tuple[str, ...]  # change files written (none in a dry run)
    gap: Gap | None
    gap_path: str | None
    tables: tuple[str, ...] = ()  # the tables it was recorded under (a Kinesis batch's may be several)


def _arrival(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        moment = datetime.fromisoformat(text)
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # year 1 with an offset is no time in UTC
        return None
    return to_micros(moment) if EARLIEST <= moment < LATEST else None


def _sequence(value: Any, name: str, max_digits: int = DYNAMODB_SEQUENCE_DIGITS) -> str:
    problem = sequence_problem(value, max_digits)
    if problem is not None:
        raise BadFailureMessage(f"{name}: {problem}")
    return str(value)


def _batch_size(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 100_000 else None


def _parse_kinesis(document: dict[str, Any], info: dict[str, Any]) -> FailedBatch:
    """Lambda's on-failure record of a Kinesis batch: every field checked before it reaches a name or an API."""
    arn, shard = info.get("streamArn"), info.get("shardId")
    problem = kinesis_stream_arn_problem(arn)
    if problem is not None:
        raise BadFailureMessage(f"streamArn: {problem}")
    problem = kinesis_shard_problem(shard)
    if problem is not None:
        raise BadFailureMessage(f"shardId: {problem}")
    start = _sequence(info.get("startSequenceNumber"), "startSequenceNumber", MAX_SEQUENCE_DIGITS)
    end = _sequence(info.get("endSequenceNumber"), "endSequenceNumber", MAX_SEQUENCE_DIGITS)
    if int(end) < int(start):
        raise BadFailureMessage(f"endSequenceNumber {end} is before startSequenceNumber {start}")
    return FailedBatch(
        table=None,
        stream_arn=str(arn),
        shard_id=str(shard),
        start_sequence=start,
        end_sequence=end,
        first_arrival_us=_arrival(info.get("approximateArrivalOfFirstRecord")),
        last_arrival_us=_arrival(info.get("approximateArrivalOfLastRecord")),
        failed_at_us=_arrival(document.get("timestamp")),
        batch_size=_batch_size(info.get("batchSize")),
        source="kinesis",
    )


def parse_failure_message(body: str | bytes) -> FailedBatch:
    """Read Lambda's on-failure record (the SQS message body) for a DynamoDB stream or Kinesis batch."""
    try:
        document = json.loads(body)
    except ValueError:
        raise BadFailureMessage("the message is not JSON") from None
    except RecursionError:
        raise BadFailureMessage("the message is JSON nested deeper than any on-failure record") from None
    kinesis = document.get("KinesisBatchInfo") if isinstance(document, dict) else None
    info = document.get("DDBStreamBatchInfo") if isinstance(document, dict) else None
    if isinstance(kinesis, dict) and info is None:
        return _parse_kinesis(document, kinesis)
    if not isinstance(info, dict) or kinesis is not None:
        raise BadFailureMessage("the message has no DDBStreamBatchInfo or KinesisBatchInfo (not an on-failure "
                                "record of a stream batch)")
    arn = info.get("streamArn")
    shard = info.get("shardId")
    if not isinstance(arn, str) or ":table/" not in arn or "/stream/" not in arn:
        raise BadFailureMessage(f"streamArn is not a DynamoDB stream ARN: {arn!r}")
    if not isinstance(shard, str) or not shard:
        raise BadFailureMessage("shardId is missing")
    try:
        safe_name(shard, "shardId")  # it names the gap record: a path step, never a path
    except UnsafeName as exc:
        raise BadFailureMessage(str(exc)) from None
    start = _sequence(info.get("startSequenceNumber"), "startSequenceNumber")
    end = _sequence(info.get("endSequenceNumber"), "endSequenceNumber")
    if int(end) < int(start):
        raise BadFailureMessage(f"endSequenceNumber {end} is before startSequenceNumber {start}")
    size = info.get("batchSize")
    try:
        table = table_from_arn(arn)
    except DecodeError as exc:
        raise BadFailureMessage(str(exc)) from None
    return FailedBatch(
        table=table,
        stream_arn=arn,
        shard_id=shard,
        start_sequence=start,
        end_sequence=end,
        first_arrival_us=_arrival(info.get("approximateArrivalOfFirstRecord")),
        last_arrival_us=_arrival(info.get("approximateArrivalOfLastRecord")),
        failed_at_us=_arrival(document.get("timestamp")),
        batch_size=_batch_size(size),
    )


class _Lost(Exception):
    """The range (or part of it) cannot be read from the stream any more."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _sequence_of(record: Any) -> int:
    # A DynamoDB stream record keeps it in its "dynamodb" body, a Kinesis record at its top.
    body = record.get("dynamodb", record) if isinstance(record, dict) else None
    sequence = body.get("SequenceNumber") if isinstance(body, dict) else None
    if not isinstance(sequence, str) or not sequence.isascii() or not sequence.isdigit():
        return -1  # undecodable: kept and quarantined by capture_batch, never used to stop the read
    return int(sequence)


def read_range(streams: Any, batch: FailedBatch, *, limit: int = GETRECORDS_LIMIT,
               sleep: Callable[[float], None] = time.sleep) -> tuple[list[Any], str | None]:
    """The batch's records, read again: (records, None), or (what could be read, why the rest is lost).

    Raises RecoverReadError when the stream could not be read for a reason that may pass.
    """
    start, end = int(batch.start_sequence), int(batch.end_sequence)
    records: list[Any] = []
    last_seen: int | None = None
    try:
        iterator = _iterator(streams, batch, "AT_SEQUENCE_NUMBER", batch.start_sequence)
        empty = 0
        while True:
            try:
                # A Kinesis read names its stream as its iterator was asked for (by ARN).
                by_arn = {"StreamARN": batch.stream_arn} if batch.source == "kinesis" else {}
                response = streams.get_records(ShardIterator=iterator, Limit=limit, **by_arn)
            except ClientError as exc:
                if _code(exc) != "ExpiredIteratorException":
                    raise
                # Resume just after the last record read, or at the start again.
                position = ("AFTER_SEQUENCE_NUMBER", str(last_seen)) if last_seen is not None \
                    else ("AT_SEQUENCE_NUMBER", batch.start_sequence)
                iterator = _iterator(streams, batch, *position)
                continue
            page = response.get("Records") or []
            for record in page:
                sequence = _sequence_of(record)
                if last_seen is None and sequence > start:
                    # AT_SEQUENCE_NUMBER answered with a later record: the first ones are gone.
                    raise _Lost("the first records of the batch are no longer in the stream")
                if sequence > end:
                    return records, _incomplete(batch, records)
                if sequence >= start or sequence < 0:
                    records.append(record)
                if sequence >= 0:
                    last_seen = sequence
                if sequence == end:
                    return records, _incomplete(batch, records)
            following = response.get("NextShardIterator")
            if following is None:
                return records, "the shard ended before the batch's last sequence number"
            empty = 0 if page else empty + 1
            if empty >= MAX_EMPTY_READS:
                raise RecoverReadError(
                    f"the stream returned nothing up to sequence {batch.end_sequence} of shard {batch.shard_id} "
                    "yet: the message stays in the queue; try again later"
                )
            if not page:
                sleep(0.2)
            iterator = str(following)
    except _Lost as lost:
        return records, lost.reason
    except ClientError as exc:
        code = _code(exc)
        if code in _GONE:
            gone = _GONE[code]
            if batch.source == "kinesis":
                gone = gone.replace("its 24-hour retention", "the stream's retention period")
            return records, gone
        raise RecoverReadError(f"reading shard {batch.shard_id} of {batch.stream_arn} failed: {code}") from None
    except BotoCoreError as exc:
        raise RecoverReadError(f"cannot reach {_service(batch)}: {exc}") from None


def _service(batch: FailedBatch) -> str:
    return "Kinesis Data Streams" if batch.source == "kinesis" else "DynamoDB Streams"


def _iterator(streams: Any, batch: FailedBatch, kind: str, sequence: str) -> str:
    if batch.source == "kinesis":
        response = streams.get_shard_iterator(StreamARN=batch.stream_arn, ShardId=batch.shard_id,
                                              ShardIteratorType=kind, StartingSequenceNumber=sequence)
    else:
        response = streams.get_shard_iterator(StreamArn=batch.stream_arn, ShardId=batch.shard_id,
                                              ShardIteratorType=kind, SequenceNumber=sequence)
    return str(response["ShardIterator"])


def _incomplete(batch: FailedBatch, records: list[Any]) -> str | None:
    """Why the range read is short of the batch Lambda reported, or None when it is whole."""
    if batch.batch_size is not None and len(records) < batch.batch_size:
        return f"the stream holds {len(records)} of the batch's {batch.batch_size} records"
    return None


def gap_of(batch: FailedBatch, reason: str, detected_at_us: int, hold_us: int | None = None) -> Gap:
    """The gap a lost batch leaves, with time bounds from the arrival times Lambda reported.

    A record's stream time is its creation time rounded down to the second, and it arrives a moment
    after it is created: the first lost change is no older than the first arrival less the margin,
    and none is newer than the last arrival (rounded down, as stream times are). Kinesis may deliver
    a record long after it was made, and not in order: where the consumer's pending record read the
    batch's oldest change (its hold, ``hold_us``), the gap starts no later than that change.
    """
    first = batch.first_arrival_us
    last = batch.last_arrival_us if batch.last_arrival_us is not None else batch.failed_at_us
    start = floor_second(first - STREAM_TIME_MARGIN_US) if first is not None else None
    if start is not None and hold_us is not None:
        start = min(start, hold_us + 1)
    return Gap(
        shard_id=batch.shard_id,
        detected_at_us=detected_at_us,
        reason=reason,
        start_us=start,
        end_us=floor_second(last) if last is not None else None,
        first_sequence_number=batch.start_sequence,
        last_sequence_number=batch.end_sequence,
        source="recover",
    )


def _table_of(batch: FailedBatch) -> str:
    """The table a DynamoDB stream batch's message names (a Kinesis one names none)."""
    if batch.table is None:
        raise BadFailureMessage(f"the batch of {batch.stream_arn} names no table")
    return batch.table


def stream_of_table(streams: Any, dynamodb: Any, batch: FailedBatch) -> None:
    """Refuse (BadFailureMessage) a message whose stream DynamoDB does not know as its table's.

    A gap blocks every restore across it: only a batch of a stream the table really had may record
    one. The table is the one the ARN names (``parse_failure_message``); the stream must be its
    current one (DescribeTable) or one ListStreams lists for it (streams stay listed a while after
    they are replaced or disabled). A stream neither knows cannot be attributed: a forged message, or
    a stream gone so long ago nothing can say whose it was; the message stays for an operator.
    """
    owner = _table_of(batch)
    known: set[str] = set()
    try:
        with contextlib.suppress(ClientError):  # no such table any more: ListStreams may still know
            known.add(str(dynamodb.describe_table(TableName=owner)["Table"].get("LatestStreamArn") or ""))
        start: dict[str, str] = {}
        while batch.stream_arn not in known:
            try:
                page = streams.list_streams(TableName=owner, **start)
            except ClientError as exc:
                if _code(exc) != "ResourceNotFoundException":
                    raise
                break
            known |= {str(entry.get("StreamArn")) for entry in page.get("Streams") or []}
            following = page.get("LastEvaluatedStreamArn")
            if not following:
                break
            start = {"ExclusiveStartStreamArn": str(following)}
    except (ClientError, BotoCoreError) as exc:
        raise RecoverReadError(f"cannot tell whether {batch.stream_arn} is a stream of table {owner!r} "
                               f"({type(exc).__name__}): the message stays in the queue; try again later") from None
    if batch.stream_arn not in known:
        raise BadFailureMessage(f"streamArn {batch.stream_arn} is neither the current stream of table "
                                f"{owner!r} nor one ListStreams lists for it: the batch cannot be attributed "
                                "to the table (forged, or a stream gone too long to tell), so no gap is recorded")


def _lambda_kinesis_record(record: Any, batch: FailedBatch) -> Any:
    """A Kinesis GetRecords record in the form Lambda delivers it, for the one Kinesis decoder.

    Anything not shaped as GetRecords documents it is passed on as it is: the decoder refuses it
    and capture quarantines it, as it would in the handler.
    """
    if not isinstance(record, dict):
        return record
    data, sequence = record.get("Data"), record.get("SequenceNumber")
    if not isinstance(data, bytes | bytearray) or not isinstance(sequence, str):
        return record
    arrival = record.get("ApproximateArrivalTimestamp")
    return {
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": str(record.get("PartitionKey", "")),
                    "sequenceNumber": sequence, "data": base64.b64encode(bytes(data)).decode("ascii"),
                    "approximateArrivalTimestamp": arrival.timestamp() if isinstance(arrival, datetime) else None},
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{batch.shard_id}:{sequence}",
        "eventName": "aws:kinesis:record",
        "eventSourceARN": batch.stream_arn,
    }


def _tables_of(records: list[Any]) -> set[str]:
    tables = set()
    for record in records:
        with contextlib.suppress(Exception):  # an undecodable record names no table; capture keeps it
            tables.add(decode_kinesis_record(record).table_name)
    return tables


def _pending_tables(store: Store, batch: FailedBatch, candidates: set[str]) -> set[str]:
    """The tables that hold the handler's pending record for this Kinesis batch.

    Looked for under the tables already known to be the batch's (its records', the configured
    table); only when there are none, under every table of the store.
    """
    candidates = candidates | set(table_names(store.list(TABLES + "/")))
    return {table for table in candidates
            if is_pending(store, table, batch.stream_arn, batch.start_sequence, batch.shard_id)}


def _recover_kinesis(store: Store, kinesis: Any, batch: FailedBatch, *, dry_run: bool, clock: Callable[[], int],
                     table: str | None) -> Outcome:
    """``recover_batch`` for a Kinesis batch: the same steps, under every table the batch belongs to."""
    raw, lost = read_range(kinesis, batch)
    records = [_lambda_kinesis_record(record, batch) for record in raw]
    read = _tables_of(records)
    tables = read | _pending_tables(store, batch, read | ({table} if table else set()))
    files: tuple[str, ...] = ()
    if records and not dry_run:
        result = capture_batch(store, records, decode_kinesis_record, source="recover",
                               table_hint=table or (min(tables) if tables else None), shard_id=batch.shard_id)
        files = result.files
        for name, keys in result.sample_keys:
            if not store.exists(meta_path(name)):
                write_meta(store, meta_from_keys(name, json.loads(keys)))
    if lost is None:
        if not dry_run:
            for name in sorted(tables):
                settle_pending_batch(store, name, batch.stream_arn, batch.start_sequence, batch.end_sequence,
                                     "recover", batch.shard_id, always=True)
        return Outcome(batch, "recovered", len(records), files, None, None, tuple(sorted(tables)))
    if not tables:
        raise BadFailureMessage(
            f"the Kinesis batch from sequence {batch.start_sequence} of shard {batch.shard_id} of {batch.stream_arn} "
            f"is lost ({lost}), but no table holds a pending record for it and none of its records could be "
            "read: it cannot be attributed to a table (forged, or its pending record was never written), so no "
            "gap is recorded")
    gaps = {name: gap_of(batch, lost, clock(), pending_hold(store, name, batch.stream_arn, batch.start_sequence,
                                                           batch.shard_id)) for name in sorted(tables)}
    paths = [] if dry_run else [write_gap(store, name, gap) for name, gap in gaps.items()]
    return Outcome(batch, "gap", len(records), files, min(gaps.values(), key=lambda g: g.start_us or 0),
                   paths[0] if paths else None, tuple(sorted(tables)))


def recover_batch(store: Store, streams: Any, batch: FailedBatch, *, dry_run: bool = False,
                  now_us: Callable[[], int] | None = None, dynamodb: Any = None, kinesis: Any = None,
                  table: str | None = None) -> Outcome:
    """Re-capture one failed batch into the store, or record it as a gap; nothing written when ``dry_run``.

    ``streams`` reads a DynamoDB stream, ``kinesis`` (made when needed) a Kinesis one; ``table`` is
    the table a Kinesis batch is looked for under first (the stack's). Raises BadFailureMessage when
    the batch is lost and cannot be attributed to a table that had its stream.
    """
    clock = now_us or (lambda: to_micros(datetime.now(UTC)))
    if batch.source == "kinesis":
        return _recover_kinesis(store, kinesis or kinesis_client(), batch, dry_run=dry_run, clock=clock,
                                table=table)
    owner = _table_of(batch)
    records, lost = read_range(streams, batch)
    files: tuple[str, ...] = ()
    if records and not dry_run:
        try:
            result = capture_batch(
                store, records, lambda r: decode_getrecords_record(r, owner, batch.shard_id),
                source="recover", table_hint=owner, shard_id=batch.shard_id,
            )
        except StreamConfigError as exc:
            # A stream without images (KEYS_ONLY) can never give these changes: the batch is lost for
            # good, like a trimmed one, and the gap says why and stops every restore after it.
            lost = f"the stream carries no item images, so its changes cannot be captured ({exc})"
        else:
            files = result.files
            if result.sample_keys and not store.exists(meta_path(owner)):
                write_meta(store, meta_from_keys(owner, json.loads(result.sample_keys[0][1])))
    if lost is None:
        if not dry_run:
            # Settles the pending record the handler left for this batch (changelog.captured).
            settle_pending_batch(store, owner, batch.stream_arn, batch.start_sequence, batch.end_sequence,
                                 "recover", always=True)
        return Outcome(batch, "recovered", len(records), files, None, None, (owner,))
    stream_of_table(streams, dynamodb or boto3.client("dynamodb", config=_CLIENT_CONFIG), batch)
    gap = gap_of(batch, lost, clock(), pending_hold(store, owner, batch.stream_arn, batch.start_sequence, None))
    path = None if dry_run else write_gap(store, owner, gap)
    return Outcome(batch, "gap", len(records), files, gap, path, (owner,))


def streams_client() -> Any:
    """A DynamoDB Streams client that retries throttling and transient faults."""
    return boto3.client("dynamodbstreams", config=_CLIENT_CONFIG)


def kinesis_client() -> Any:
    """A Kinesis Data Streams client that retries throttling and transient faults."""
    return boto3.client("kinesis", config=_CLIENT_CONFIG)


@dataclass(frozen=True)
class QueueSummary:
    """What one ``recover_queue`` run did."""

    recovered: int  # batches stored whole
    gaps: int  # batches (partly) lost: gap recorded
    records: int  # records read back from the stream
    files: int
    skipped: int  # messages of other tables, left in the queue
    unreadable: int  # messages that are not on-failure records, left in the queue
    dry_run: bool
    in_flight: int = 0  # messages another reader holds invisible (a recover still running or killed): not seen


class RecoveryInFlight(RewindError):
    """Messages of the queue are held by another reader: their batches were not seen by this run."""

    exit_code = EXIT_CONFLICT


class QueueNotFound(RewindError):
    """The queue URL names no queue."""

    exit_code = 4


def _sqs_error(exc: ClientError | BotoCoreError, queue_url: str) -> RewindError:
    if isinstance(exc, ClientError) and _code(exc) in ("AWS.SimpleQueueService.NonExistentQueue",
                                                      "QueueDoesNotExist"):
        return QueueNotFound(f"no SQS queue {queue_url}: pass the stack's FailureQueueUrl output as --queue-url")
    return RecoverReadError(f"the on-failure queue {queue_url} could not be read or updated: {exc}")


def recover_queue(store: Store, sqs: Any, streams: Any, queue_url: str, *, table: str | None = None,
                  dry_run: bool = False, wait_seconds: int = 1, hold_seconds: int = 900,
                  report: Callable[[Outcome], None] | None = None,
                  warn: Callable[[str], None] | None = None, kinesis: Any = None) -> QueueSummary:
    """Recover every message in the on-failure queue; each is deleted once its records or gap are stored.

    Messages of other tables (with ``table``), unreadable ones, and all of them in a ``dry_run``
    stay in the queue: they are held invisible while this runs (so each is seen once) and made
    visible again at the end. A Kinesis message names no table: with ``table`` it is that table's
    when the table holds the handler's pending record for it. A transient failure raises after
    releasing what it holds; what was already recovered stays recovered.
    """
    held: list[str] = []
    recovered = gaps = records = files = skipped = unreadable = 0
    try:
        while True:
            try:
                response = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                               WaitTimeSeconds=wait_seconds, VisibilityTimeout=hold_seconds)
            except (ClientError, BotoCoreError) as exc:
                raise _sqs_error(exc, queue_url) from None
            messages = response.get("Messages") or []
            if not messages:
                break
            for message in messages:
                handle = str(message["ReceiptHandle"])
                held.append(handle)
                try:
                    batch = parse_failure_message(message.get("Body", ""))
                    if table is not None and not _of_table(store, batch, table):
                        skipped += 1
                        continue
                    outcome = recover_batch(store, streams, batch, dry_run=dry_run, kinesis=kinesis, table=table)
                except BadFailureMessage as exc:
                    unreadable += 1
                    if warn is not None:
                        warn(f"ddb-rewind: warning: message {message.get('MessageId')} left in the queue: {exc}")
                    continue
                if not dry_run:
                    try:
                        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=handle)
                    except (ClientError, BotoCoreError) as exc:
                        raise _sqs_error(exc, queue_url) from None
                    held.remove(handle)
                recovered += outcome.kind == "recovered"
                gaps += outcome.kind == "gap"
                records += outcome.records
                files += len(outcome.files)
                if report is not None:
                    report(outcome)
    finally:
        for handle in held:
            # A failed release is harmless: the message becomes visible again by itself when the hold ends.
            with contextlib.suppress(ClientError, BotoCoreError):
                sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=handle, VisibilityTimeout=0)
    return QueueSummary(recovered, gaps, records, files, skipped, unreadable, dry_run,
                        _held_elsewhere(sqs, queue_url))


def _of_table(store: Store, batch: FailedBatch, table: str) -> bool:
    if batch.source == "kinesis":
        return table_name_problem(table) is None and \
            is_pending(store, table, batch.stream_arn, batch.start_sequence, batch.shard_id)
    return batch.table == table


def _held_elsewhere(sqs: Any, queue_url: str) -> int:
    """Messages invisible now: this run released all it held, so another reader holds them.

    A recover killed mid-run leaves what it received invisible until its hold ends (15 minutes);
    this run cannot see those batches, and must not call the queue drained.
    """
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url,
                                              AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    except (ClientError, BotoCoreError) as exc:
        raise _sqs_error(exc, queue_url) from None
    value = attributes.get("Attributes", {}).get("ApproximateNumberOfMessagesNotVisible", "0")
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else 0


# --- Lambda ------------------------------------------------------------------------------------

_stores: dict[str, Store] = {}


def _store() -> Store:
    return environment_store(_stores)


def scheduled_probe() -> dict[str, Any]:
    """The schedule's trigger: probe the shards of the stream the consumer reads (``stream_consumer.probe``).

    A failure raises, so the function's error alarm fires; coverage simply stays where the last
    probe left it.
    """
    from stream_consumer.probe import probe_stream

    table = os.environ.get("REWIND_TABLE") or ""
    arn = os.environ.get("REWIND_STREAM_ARN") or ""
    try:
        named = table_from_arn(arn) if ":table/" in arn else None
    except DecodeError:
        named = None
    if table_name_problem(table) is not None or named != table:
        raise UsageError("the probe needs REWIND_TABLE and REWIND_STREAM_ARN naming that table's stream")
    summary = probe_stream(_store(), table, streams_client(), arn)
    states = [finding.state for finding in summary.findings]
    metrics.add_metric(name="ProbedShards", unit=MetricUnit.Count, value=len(states))
    behind = states.count("behind") + states.count("trimmed")
    metrics.add_metric(name="ShardsBehind", unit=MetricUnit.Count, value=behind)
    if summary.gaps:
        metrics.add_metric(name="PermanentGaps", unit=MetricUnit.Count, value=summary.gaps)
    logger.info("shards probed", extra={"table": table, **{state: states.count(state) for state in set(states)}})
    return {"probed": len(states), "gaps": summary.gaps}


@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """SQS trigger on the on-failure queue: recover each message; failed ones are reported for a retry.

    Lambda deletes the messages not listed in ``batchItemFailures`` after this returns, that is
    after their records or gap are stored. The stack's schedule invokes it too, to probe the shards.
    """
    if isinstance(event, dict) and event.get("detail-type") == "Scheduled Event":
        return scheduled_probe()
    failures: list[dict[str, str]] = []
    streams = streams_client()
    kinesis: Any = None
    # The stack's table: where a Kinesis batch (whose message names no table) is looked for first.
    configured = os.environ.get("REWIND_TABLE") or None
    table = configured if configured is not None and table_name_problem(configured) is None else None
    found = event.get("Records") if isinstance(event, dict) else None
    for message in found if isinstance(found, list) else []:
        if not isinstance(message, dict):
            continue  # no message id to report it by: nothing Lambda could retry or delete
        message_id = str(message.get("messageId", ""))
        try:
            batch = parse_failure_message(message.get("body", ""))
            if batch.source == "kinesis" and kinesis is None:
                kinesis = kinesis_client()
            outcome = recover_batch(_store(), streams, batch, kinesis=kinesis, table=table)
        except BadFailureMessage as exc:
            # Not a batch record: nothing can be recovered from it; it stays for an operator
            # (the failure queue alarm keeps firing) instead of being deleted silently.
            logger.error("unreadable on-failure message", extra={"messageId": message_id, "error": str(exc)})
            metrics.add_metric(name="UnreadableFailureMessages", unit=MetricUnit.Count, value=1)
            failures.append({"itemIdentifier": message_id})
            continue
        except (RewindError, ClientError, BotoCoreError) as exc:
            logger.warning("recovery failed; the message is retried", extra={"messageId": message_id,
                                                                            "error": str(exc)})
            failures.append({"itemIdentifier": message_id})
            continue
        except Exception as exc:  # one message's unforeseen failure is that message's alone
            logger.error("recovery failed unexpectedly; the message is retried",
                         extra={"messageId": message_id, "error_kind": type(exc).__name__})
            failures.append({"itemIdentifier": message_id})
            continue
        metrics.add_metric(name="RecoveredRecords", unit=MetricUnit.Count, value=outcome.records)
        details = {"messageId": message_id, "table": batch.label, "tables": list(outcome.tables),
                   "shard": batch.shard_id,
                   "start": batch.start_sequence, "end": batch.end_sequence, "records": outcome.records,
                   "files": list(outcome.files)}
        if outcome.gap is not None:
            metrics.add_metric(name="PermanentGaps", unit=MetricUnit.Count, value=1)
            logger.error("batch lost for good: gap recorded",
                         extra={**details, "reason": outcome.gap.reason, "gap": outcome.gap_path})
        else:
            metrics.add_metric(name="RecoveredBatches", unit=MetricUnit.Count, value=1)
            logger.info("batch recovered", extra=details)
    return {"batchItemFailures": failures}
