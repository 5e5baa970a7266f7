"""Lambda entry point for DynamoDB Streams and Kinesis Data Streams for DynamoDB events.

The store comes from ``REWIND_STORE``. One batch becomes one zstd Parquet file per hour it spans.
Records that cannot be decoded are quarantined whole and counted. Any other failure of the batch
(a store write, a dropped connection reading meta.json, a bug) reports the whole batch as failed
(``ReportBatchItemFailures`` from its first record) so Lambda retries it whole, and the retry
rewrites the same objects; raising instead would make Lambda bisect the batch into more, smaller
files. The one exception is a stream without images (StreamConfigError): it counts
``MisconfiguredStream`` (its own alarm) and raises, so the function's error alarm fires too; after
Lambda's bounded retries, ``recover`` records the batch as a gap. Logs carry counts, paths and
error kinds, never item contents.

Coverage (``changelog.captured``): a stored batch is recorded by its sequence range after its
files; a failed one is recorded as pending before the failure is reported (one about to time out,
shortly before Lambda's timeout: ``_Deadline``), so ``status`` stops the latest restorable time
before it until a retry or ``recover`` stores it (or ``recover`` records it as a gap). A retry of
half of it (Lambda bisects after a timeout) settles that half only. Lambda may give up on a batch;
the pending record does not. Both sources take this one path: a DynamoDB stream batch is recorded
under the table its ARN names, a Kinesis batch under each table its records name (or
``REWIND_TABLE`` when none can be read), with its shard.

Per-shard progress: when the event names its shard (the stack turns on tumbling windows for a
DynamoDB stream read one batch at a time per shard, and such events carry ``shardId``), the stored
batch's shard and its newest record are recorded too (``changelog.captured.record_shard_progress``),
and the response carries the ``state`` Lambda requires of a windowed invocation (this function keeps
none: an empty one).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from changelog.captured import (
    ShardProgress,
    hold_before,
    record_pending_batch,
    record_shard_progress,
    sequence_problem,
    settle_pending_batch,
)
from changelog.codec import (
    MAX_SEQUENCE_DIGITS,
    decode_kinesis_record,
    decode_lambda_record,
    kinesis_shard_problem,
    kinesis_stream_arn_problem,
    table_from_arn,
)
from changelog.errors import DecodeError, RewindError, StoreError, StreamConfigError
from changelog.layout import meta_path, safe_name
from changelog.meta import meta_from_description, meta_from_keys, write_meta
from changelog.names import table_name_problem
from changelog.store import Store, environment_store
from stream_consumer.capture import Decoder, capture_batch, lag_seconds

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "ddb-rewind"))
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ddb-rewind"),
    service=os.environ.get("POWERTOOLS_SERVICE_NAME", "ddb-rewind"),
)

_stores: dict[str, Store] = {}
_known_meta: set[tuple[str, str]] = set()


def _store() -> Store:
    return environment_store(_stores)


def _source(records: list[dict[str, Any]]) -> tuple[str, Decoder, str]:
    """Event kind, decoder, and the field Lambda's partial-batch response names a record by."""
    first = records[0] if records else {}
    if isinstance(first, dict) and first.get("eventSource") == "aws:kinesis":
        return "lambda-kinesis", decode_kinesis_record, "kinesis.sequenceNumber"
    return "lambda-dynamodb", decode_lambda_record, "dynamodb.SequenceNumber"


def _identifier(record: Any, field: str) -> str:
    outer, inner = field.split(".")
    try:
        return str(record[outer][inner])
    except (KeyError, TypeError):
        return ""


def ensure_meta(store: Store, table: str, keys: dict[str, Any]) -> None:
    """Write the table's meta.json once: from DescribeTable when allowed, else from a record's key."""
    if (store.uri, table) in _known_meta:
        return
    if not store.exists(meta_path(table)):
        try:
            description = boto3.client("dynamodb").describe_table(TableName=table)["Table"]
            write_meta(store, meta_from_description(description))
        except (ClientError, BotoCoreError) as exc:
            logger.warning("describe_table failed; meta.json from a key", extra={"error": type(exc).__name__})
            write_meta(store, meta_from_keys(table, keys))
    _known_meta.add((store.uri, table))


@dataclass(frozen=True)
class _Batch:
    """A stream batch as coverage records it: its table, stream, sequence range, oldest time and shard."""

    table: str
    stream_arn: str
    first: str
    last: str
    hold_us: int | None
    shard_id: str | None = None  # a DynamoDB stream event names it only in a tumbling window
    last_us: int | None = None  # the latest stream time among the batch's records (per-shard progress)
    sequences: tuple[str, ...] = ()  # its records, so that a retry of half of it settles only that half
    own: tuple[str, ...] | None = None  # those of them that are this table's (a Kinesis batch's; None: all)


def _window_shard(event: dict[str, Any]) -> str | None:
    """The shard a windowed DynamoDB stream event names, when it can name a record (None otherwise)."""
    shard = event.get("shardId")
    if not isinstance(shard, str) or not shard.startswith("shardId-"):
        return None
    try:
        return safe_name(shard, "shard id")
    except RewindError:
        return None


def _record_time_us(record: Any) -> int | None:
    body = record.get("dynamodb") if isinstance(record, dict) else None
    seconds = body.get("ApproximateCreationDateTime") if isinstance(body, dict) else None
    if seconds is None or hold_before([seconds]) is None:  # not a stream time
        return None
    return int(float(seconds)) * 1_000_000


def _batch(table: str, arn: str, records: list[Any], shard_id: str | None) -> _Batch | None:
    """The batch's range from the records whose sequence numbers can name a record (None when none can)."""
    sequences = [_identifier(record, "dynamodb.SequenceNumber") for record in records]
    valid = [(sequence, record) for sequence, record in zip(sequences, records, strict=True)
             if sequence_problem(sequence) is None]
    if not valid:
        return None
    times = [record.get("dynamodb", {}).get("ApproximateCreationDateTime") for record in records
             if isinstance(record, dict) and isinstance(record.get("dynamodb"), dict)]
    first = min(valid, key=lambda pair: int(pair[0]))[0]
    last = max(valid, key=lambda pair: int(pair[0]))[0]
    # The latest time, not the last record's: the stream's clock can step back within a batch.
    stamps = [stamp for stamp in (_record_time_us(record) for _, record in valid) if stamp is not None]
    return _Batch(table, arn, first, last, hold_before(times), shard_id, max(stamps, default=None),
                  tuple(sequence for sequence, _ in valid))


def _kinesis_changes(records: list[Any]) -> dict[str, list[tuple[int, str]]]:
    """The (stream time in seconds, Kinesis sequence number) of each table's changes in a Kinesis batch
    (a failing batch's: decoded here)."""
    changes: dict[str, list[tuple[int, str]]] = {}
    for record in records:
        try:
            row = decode_kinesis_record(record)
        except Exception:  # quarantined by capture: no change of any table
            continue
        changes.setdefault(row.table_name, []).append((row.event_time_us // 1_000_000,
                                                       _identifier(record, "kinesis.sequenceNumber")))
    return changes


def _kinesis_batches(records: list[Any], changes: dict[str, list[tuple[int, str]]],
                     table_hint: str | None) -> list[_Batch]:
    """A Kinesis batch as coverage records it: once per table its records name (``changes``: each
    table's stream seconds and sequence numbers), with the batch's whole range (Lambda's on-failure
    record names the range, not the tables), the shard from the records' ``eventID``, per table the
    latest moment before that table's oldest change, and its own records among the batch's (a record
    no table could be read from counts as the stack's table's, where capture keeps it).

    Empty when the batch cannot name a stream, one shard or a sequence number: nothing from the
    event reaches a record's name unchecked.
    """
    first = records[0] if isinstance(records[0], dict) else {}
    arn = first.get("eventSourceARN")
    shards = {str(record.get("eventID", "")).split(":", 1)[0] for record in records if isinstance(record, dict)}
    if kinesis_stream_arn_problem(arn) is not None or len(shards) != 1:
        return []
    (shard,) = shards
    sequences = [_identifier(record, "kinesis.sequenceNumber") for record in records]
    valid = [sequence for sequence in sequences if sequence_problem(sequence, MAX_SEQUENCE_DIGITS) is None]
    if kinesis_shard_problem(shard) is not None or not valid:
        return []
    changes = dict(changes)
    if not changes and table_hint and table_name_problem(table_hint) is None:
        changes[table_hint] = []  # nothing readable: recorded under the stack's table, holding every moment
    named = {sequence for found in changes.values() for _, sequence in found}
    unread = [sequence for sequence in valid if sequence not in named]
    low, high = min(valid, key=int), max(valid, key=int)
    batches = []
    for table, found in sorted(changes.items()):
        own = {sequence for _, sequence in found} | (set(unread) if table == table_hint else set())
        batches.append(_Batch(table, str(arn), low, high, hold_before([second for second, _ in found]), shard,
                              sequences=tuple(valid), own=tuple(s for s in valid if s in own) if found else None))
    return batches


def _record_pending(batches: list[_Batch]) -> None:
    """Record a failing batch as pending; the store may be what failed, so a failure here is only logged."""
    tables = sorted({batch.table for batch in batches})  # a Kinesis batch: each table its records name
    for batch in batches:
        try:
            record_pending_batch(_store(), batch.table, batch.stream_arn, batch.first, batch.hold_us, "lambda",
                                 batch.shard_id, batch.sequences, tables, batch.own)
        except Exception as exc:  # the batch's own failure is what gets reported
            logger.error("the pending record of a failing batch could not be written; recover shows the hole",
                         extra={"error_kind": type(exc).__name__})
            return


# How long before Lambda's timeout the batch's pending record is written (at most half the time left).
DEADLINE_MARGIN_S = 10.0


class _Deadline:
    """Writes the batch's pending record shortly before Lambda's timeout would end the invocation.

    A timed-out invocation reports nothing: a batch that only ever timed out, which Lambda then gave
    up on, would leave no pending record, and coverage would pass over it until ``recover`` ran.
    Settling a stored batch takes the same lock first, so a record the timer wrote is always settled.
    The timer is cancelled before the invocation returns: Lambda freezes the process, and a timer
    left running would fire in a later invocation.
    """

    def __init__(self, context: Any, pending: Callable[[], list[_Batch]]) -> None:
        self._lock = threading.Lock()
        self._stored = False
        self._timer: threading.Timer | None = None
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if callable(remaining):
            left = float(remaining()) / 1000
            self._timer = threading.Timer(max(0.0, left - min(DEADLINE_MARGIN_S, left / 2)), self._fire, (pending,))
            self._timer.daemon = True
            self._timer.start()

    def _fire(self, pending: Callable[[], list[_Batch]]) -> None:
        with self._lock:
            if self._stored:
                return
            logger.error("the batch is about to time out; its pending record is written",
                         extra={"error_kind": "Timeout"})
            _record_pending(pending())

    def stored(self) -> None:
        """The batch is stored: from here the timer writes nothing (call before settling)."""
        with self._lock:
            self._stored = True

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _failing_kinesis(source: str, records: list[Any], table_hint: str | None) -> list[_Batch]:
    """A failing Kinesis batch's records, read for its tables and times (a DynamoDB one's are known already)."""
    if source != "lambda-kinesis":
        return []
    try:
        return _kinesis_batches(records, _kinesis_changes(records), table_hint)
    except Exception as exc:  # the batch's own failure is what gets reported
        logger.error("a failing Kinesis batch could not be read for its pending record",
                     extra={"error_kind": type(exc).__name__})
        return []


@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Capture one Lambda batch; returns the partial batch response Lambda expects."""
    found = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(found, list):
        # Not a stream batch (an invocation by hand, a test event): it holds no record to capture
        # or retry. Logged and counted, so it is seen, instead of a traceback.
        logger.error("the event is not a stream batch (no list of Records); nothing captured",
                     extra={"event_kind": type(event).__name__})
        metrics.add_metric(name="MalformedEvents", unit=MetricUnit.Count, value=1)
        return {"batchItemFailures": []}
    # A windowed invocation without "state" in its response counts as failed.
    window: dict[str, Any] = {"state": {}} if "window" in event or "shardId" in event else {}
    records = list(found)
    if not records:
        return {"batchItemFailures": [], **window}
    source, decode, id_field = _source(records)
    batches: list[_Batch] = []
    table_hint = os.environ.get("REWIND_TABLE")
    deadline = _Deadline(context, lambda: _failing_kinesis(source, records, table_hint) or batches)
    try:
        return _capture(event, records, source, decode, id_field, batches, table_hint, deadline, window)
    finally:
        deadline.cancel()


def _capture(event: dict[str, Any], records: list[Any], source: str, decode: Decoder, id_field: str,
             batches: list[_Batch], table_hint: str | None, deadline: _Deadline,
             window: dict[str, Any]) -> dict[str, Any]:
    """``lambda_handler``'s work on a batch of records; ``batches`` is filled in place (the deadline reads it)."""
    try:
        if source == "lambda-dynamodb":
            arn = records[0].get("eventSourceARN") if isinstance(records[0], dict) else None
            if isinstance(arn, str) and ":table/" in arn:
                # An invalid name is the record's problem (it is quarantined), not the batch's.
                with contextlib.suppress(DecodeError):
                    table_hint = table_from_arn(arn)
                    found_batch = _batch(table_hint, arn, records, _window_shard(event))
                    batches[:] = [found_batch] if found_batch is not None else []
        store = _store()
        result = capture_batch(store, records, decode, source=source, table_hint=table_hint)
        for table, keys in result.sample_keys:
            ensure_meta(store, table, json.loads(keys))
        if source == "lambda-kinesis":
            batches[:] = _kinesis_batches(records, {table: [] for table in result.tables}, table_hint)
        deadline.stored()
        for batch in batches:
            settle_pending_batch(store, batch.table, batch.stream_arn, batch.first, batch.last, "lambda",
                                 batch.shard_id)
            if source == "lambda-dynamodb" and batch.shard_id is not None:
                record_shard_progress(store, batch.table, ShardProgress(batch.shard_id, batch.stream_arn,
                                                                        batch.last, batch.last_us))
    except StreamConfigError as exc:
        # No retry can succeed on a stream without images: the MisconfiguredStream alarm says so at
        # once; Lambda's bounded retries then hand the batch to recover, which records it as a gap.
        _record_pending(_failing_kinesis(source, records, table_hint) or batches)
        logger.error("the stream carries no item images; nothing can be captured from it",
                     extra={"error": str(exc), "error_kind": type(exc).__name__})
        metrics.add_metric(name="MisconfiguredStream", unit=MetricUnit.Count, value=1)
        raise
    except Exception as exc:  # any failure: retry the batch whole, never bisect it
        _record_pending(_failing_kinesis(source, records, table_hint) or batches)
        # Store errors are our own one-line messages; anything else is named by its kind only,
        # since an unexpected exception's text may quote item contents.
        stored = isinstance(exc, StoreError)
        detail = str(exc) if stored else type(exc).__name__
        logger.error(f"{'store write' if stored else 'batch'} failed; the whole batch is reported for retry",
                     extra={"error": detail, "error_kind": type(exc).__name__,
                            "expected": isinstance(exc, RewindError)})
        metrics.add_metric(name="FailedBatches", unit=MetricUnit.Count, value=1)
        return {"batchItemFailures": [{"itemIdentifier": _identifier(records[0], id_field)}], **window}
    metrics.add_metric(name="ChangeRecords", unit=MetricUnit.Count, value=result.captured)
    metrics.add_metric(name="ChangeBytes", unit=MetricUnit.Bytes, value=result.size_bytes)
    metrics.add_metric(name="QuarantinedRecords", unit=MetricUnit.Count, value=result.quarantined)
    if result.erased:
        metrics.add_metric(name="ErasedRecords", unit=MetricUnit.Count, value=result.erased)
    lag = lag_seconds(result)
    if lag is not None:
        metrics.add_metric(name="LagSeconds", unit=MetricUnit.Seconds, value=lag)
    logger.info(
        "batch captured",
        extra={
            "source": source,
            "records": result.records,
            "captured": result.captured,
            "quarantined": result.quarantined,
            "erased": result.erased,  # a count only: never the key of an erased item
            "files": list(result.files),
        },
    )
    return {"batchItemFailures": [], **window}
