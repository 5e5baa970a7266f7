"""A stand-alone DynamoDB Streams poller: the same capture as the Lambda handler, without Lambda.

Shards are read parent before child (a child only once its parent is closed and drained, or gone
from the stream). Every shard DescribeStream lists gets a checkpoint before it is read (coverage
stops at the start of a shard not read yet: ``changelog.captured``); each GetRecords batch goes
through ``capture_batch`` and then the shard's checkpoint is written, so a restart resumes exactly
after the last record stored. Records trimmed from the stream before they were read are reported as
gaps (a line on stderr, an object under ``tables/<table>/gaps/``, the checkpoint, the summary),
never skipped silently.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from changelog.codec import decode_getrecords_record
from changelog.errors import EXIT_UNREACHABLE, RewindError, StreamConfigError, TableNotFound
from changelog.gaps import STREAM_CLOCK_STEP_US, STREAM_TIME_MARGIN_US, Gap, floor_second, write_gap
from changelog.layout import meta_path
from changelog.meta import meta_from_description, write_meta
from changelog.progress import Progress
from changelog.settings import SettingsVersion, observe_or_report
from changelog.store import Store
from changelog.timefmt import to_micros
from stream_consumer.capture import capture_batch
from stream_consumer.checkpoint import Checkpoint, read_checkpoints, write_checkpoint

IMAGE_VIEWS = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")
GETRECORDS_LIMIT = 1000  # the service maximum: fewer calls per shard, which is rate limited to 5/s
# How often a long-running poll records the table's settings again (it always does at its start). A
# setting changed between two observations is dated to the later one, so this is how late a restore
# may see a change; each observation is a handful of read-only control-plane calls, far below their
# rate limits, and writes nothing unless something changed.
SETTINGS_EVERY_S = 15 * 60.0
# Throttling (LimitExceededException) and transient faults are retried by botocore's standard mode.
_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 10})


class StreamReadError(RewindError):
    """A DynamoDB or DynamoDB Streams call failed for a reason other than a user's table settings."""

    exit_code = EXIT_UNREACHABLE


@dataclass(frozen=True)
class PollSummary:
    """What one ``poll`` run did (counts for this run only)."""

    table: str
    records: int  # GetRecords records seen = captured + quarantined + erased
    captured: int
    quarantined: int
    files: int
    shards: int  # shards read from in this run
    gaps: int
    rounds: int
    interrupted: bool  # stopped by Ctrl-C (everything stored so far is checkpointed)
    erased: int = 0  # records of an erased item, dropped (changelog.forgotten)


@dataclass(frozen=True)
class Shard:
    """One shard as DescribeStream lists it."""

    shard_id: str
    parent_shard_id: str | None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _now_us() -> int:
    return to_micros(datetime.now(UTC))


# GetRecords answers an empty page where "the portion of the shard that the iterator points to" holds
# no records, and "it might take multiple calls to get to a portion of the shard that contains stream
# records" (DynamoDB Streams API reference): a shard counts as caught up only after this many empty
# pages in a row along its iterator chain. AWS states no bound; the first pages of a new iterator are
# where it happens.
CAUGHT_UP_PAGES = 3


def caught_up_watermark(asked_us: int) -> int:
    """The watermark of a shard that had nothing more to read when asked at wall-clock ``asked_us``.

    Stream times are rounded down to the second and a record becomes readable a little after it was
    created, by a clock that is not ours: an empty answer at ``asked_us`` proves only that records
    stamped before ``asked_us - STREAM_TIME_MARGIN_US`` are all read. Everything up to the end of the
    last whole second before that is complete.
    """
    return floor_second(asked_us - STREAM_TIME_MARGIN_US) - 1


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def stream_arn(dynamodb: Any, table: str) -> tuple[dict[str, Any], str]:
    """DescribeTable: the description and the stream ARN, or one clear error why it cannot be backed up."""
    try:
        description = dict(dynamodb.describe_table(TableName=table)["Table"])
    except ClientError as exc:
        if _code(exc) == "ResourceNotFoundException":
            region = getattr(getattr(dynamodb, "meta", None), "region_name", None) or "this region"
            raise TableNotFound(f"DynamoDB has no table {table!r} in {region}: check --table and AWS_REGION") from None
        raise StreamReadError(f"DescribeTable {table!r} failed: {_code(exc)}") from None
    except BotoCoreError as exc:
        raise StreamReadError(f"cannot reach DynamoDB: {exc}") from None
    spec = description.get("StreamSpecification") or {}
    arn = description.get("LatestStreamArn")
    if not spec.get("StreamEnabled") or not arn:
        raise StreamConfigError(
            f"table {table!r} has no stream: enable one with StreamViewType NEW_AND_OLD_IMAGES "
            f"(aws dynamodb update-table --table-name {table} "
            "--stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES)"
        )
    view = spec.get("StreamViewType")
    if view not in IMAGE_VIEWS:
        raise StreamConfigError(
            f"the stream of table {table!r} has view type {view}, which carries no new images to restore "
            "from: disable it and enable one with StreamViewType NEW_AND_OLD_IMAGES (or NEW_IMAGE)"
        )
    return description, str(arn)


def list_shards(streams: Any, arn: str) -> list[Shard]:
    """Every shard of the stream (DescribeStream, paginated), parents listed before their children."""
    shards: list[Shard] = []
    start: str | None = None
    while True:
        request: dict[str, Any] = {"StreamArn": arn}
        if start:
            request["ExclusiveStartShardId"] = start
        description = streams.describe_stream(**request)["StreamDescription"]
        for shard in description.get("Shards", []):
            shards.append(Shard(shard["ShardId"], shard.get("ParentShardId")))
        start = description.get("LastEvaluatedShardId")
        if not start:
            return parent_first(shards)


def parent_first(shards: list[Shard]) -> list[Shard]:
    """The shards ordered so that a parent comes before its children (stable otherwise)."""
    by_id = {shard.shard_id: shard for shard in shards}
    ordered: list[Shard] = []
    placed: set[str] = set()

    def place(shard: Shard, seen: frozenset[str]) -> None:
        if shard.shard_id in placed:
            return
        parent = by_id.get(shard.parent_shard_id or "")
        if parent is not None and parent.shard_id not in seen:  # `seen` guards against a malformed cycle
            place(parent, seen | {shard.shard_id})
        placed.add(shard.shard_id)
        ordered.append(shard)

    for shard in shards:
        place(shard, frozenset())
    return ordered


class _Session:
    """One poll run's state: clients, checkpoints by shard, live iterators, and the counts so far."""

    def __init__(self, store: Store, table: str, arn: str, streams: Any, *, limit: int,
                 deadline: float | None, progress: Progress | None, warn: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.table = table
        self.arn = arn
        self.streams = streams
        self.limit = limit
        self.deadline = deadline
        self.clock = clock
        self.progress = progress
        self.warn = warn
        self.checkpoints = read_checkpoints(store, table)
        self.iterators: dict[str, str] = {}  # kept between rounds; renewed when expired
        self.read_shards: set[str] = set()
        self.records = self.captured = self.quarantined = self.files = self.gaps = self.erased = 0

    def expired(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def save(self, checkpoint: Checkpoint) -> None:
        write_checkpoint(self.store, self.table, checkpoint)
        self.checkpoints[checkpoint.shard_id] = checkpoint

    def gap(self, checkpoint: Checkpoint, reason: str, *, close: bool = False) -> Checkpoint:
        """Report, record and checkpoint lost records; the caller goes on with what is left."""
        after = checkpoint.sequence_number
        self.warn(
            f"ddb-rewind: warning: GAP in table {self.table!r} shard {checkpoint.shard_id}: records after "
            f"sequence {after or '(shard start)'} may be lost ({reason}); continuing from what is left"
        )
        self.gaps += 1
        # Unread records of this shard are newer than its watermark; without one, any moment may be hit.
        start = checkpoint.watermark_us + 1 if checkpoint.watermark_us is not None else None
        gap = Gap(checkpoint.shard_id, _now_us(), reason, start_us=start, after_sequence_number=after)
        write_gap(self.store, self.table, gap)
        known = any(g.after_sequence_number == after for g in checkpoint.gaps)
        updated = checkpoint if known else checkpoint.with_gap(gap)
        # The gap holds the old position; forgetting it makes a restart read from TRIM_HORIZON, not re-report.
        updated = replace(updated, sequence_number=None, closed=close or updated.closed)
        self.save(updated)
        return updated

    def settle_vanished(self, present: dict[str, Shard]) -> None:
        """An unfinished checkpoint whose shard left the stream: its unread records are gone."""
        for shard_id, checkpoint in list(self.checkpoints.items()):
            if not checkpoint.closed and shard_id not in present:
                self.iterators.pop(shard_id, None)
                self.gap(checkpoint, "the shard was trimmed from the stream before it was fully read", close=True)

    def iterator(self, shard: Shard) -> str | None:
        """A fresh iterator just after the checkpoint, or at TRIM_HORIZON; None if the shard is gone."""
        checkpoint = self.checkpoint(shard)
        request = {"StreamArn": self.arn, "ShardId": shard.shard_id}
        try:
            if checkpoint.sequence_number:
                try:
                    return str(self.streams.get_shard_iterator(
                        **request, ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                        SequenceNumber=checkpoint.sequence_number)["ShardIterator"])
                except ClientError as exc:
                    if _code(exc) != "TrimmedDataAccessException":
                        raise
                    self.gap(checkpoint, "trimmed from the stream before it was read")
            return str(self.streams.get_shard_iterator(**request, ShardIteratorType="TRIM_HORIZON")["ShardIterator"])
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None  # left the stream since DescribeStream; the next round settles it
            raise

    def checkpoint(self, shard: Shard) -> Checkpoint:
        return self.checkpoints.get(shard.shard_id) or Checkpoint(shard.shard_id, shard.parent_shard_id)

    def finished(self, shard_id: str) -> bool:
        checkpoint = self.checkpoints.get(shard_id)
        return checkpoint is not None and checkpoint.closed

    def drain(self, shard: Shard) -> int:
        """Read one shard until it is caught up or closed and drained; returns records seen."""
        seen = 0
        iterator = self.iterators.pop(shard.shard_id, None) or self.iterator(shard)
        empty: list[int] = []  # when each page of the current run of empty pages was asked for
        while iterator is not None:
            if self.expired():
                self.iterators[shard.shard_id] = iterator
                return seen
            asked_us = _now_us()
            try:
                response = self.streams.get_records(ShardIterator=iterator, Limit=self.limit)
            except ClientError as exc:
                code = _code(exc)
                if code == "ExpiredIteratorException":
                    iterator = self.iterator(shard)  # from the checkpoint, which is the last record stored
                    continue
                if code == "TrimmedDataAccessException":
                    self.gap(self.checkpoint(shard), "trimmed from the stream while it was being read")
                    iterator = self.iterator(shard)
                    continue
                if code == "ResourceNotFoundException":
                    return seen
                raise
            self.read_shards.add(shard.shard_id)
            records = response.get("Records") or []
            following = response.get("NextShardIterator")
            checkpoint = self.checkpoint(shard)
            if records:
                empty.clear()
                seen += len(records)
                self.store_batch(shard, checkpoint, records, closed=following is None)
            elif following is None:
                self.save(replace(checkpoint, closed=True))
            elif len(empty) + 1 < CAUGHT_UP_PAGES:
                empty.append(asked_us)
            else:
                # Caught up: everything this shard held when the run of empty pages began is stored
                # (less a safety margin).
                watermark = max(checkpoint.watermark_us or 0, caught_up_watermark(empty[0] if empty else asked_us))
                self.save(replace(checkpoint, watermark_us=watermark))
                self.iterators[shard.shard_id] = following
                return seen
            iterator = following
        return seen

    def store_batch(self, shard: Shard, checkpoint: Checkpoint, records: list[Any], *, closed: bool) -> None:
        result = capture_batch(
            self.store, records, lambda r: decode_getrecords_record(r, self.table, shard.shard_id),
            source="poller", table_hint=self.table, shard_id=shard.shard_id,
        )
        last = records[-1]
        body = last.get("dynamodb") if isinstance(last, dict) else None
        body = body if isinstance(body, dict) else {}
        created = body.get("ApproximateCreationDateTime")
        last_us = to_micros(created) if isinstance(created, datetime) else result.newest_event_us
        watermark = checkpoint.watermark_us
        if last_us is not None:
            # Unread records of this shard may share the last one's (rounded) time, or carry the
            # second before it where the stream's clock stepped back: complete strictly before that,
            # and never past the moment it was read (a record stamped ahead of our clock proves
            # nothing about the time in between).
            watermark = max(watermark or 0, min(last_us - STREAM_CLOCK_STEP_US - 1, _now_us()))
        sequence = body.get("SequenceNumber")
        self.save(replace(
            checkpoint,
            sequence_number=str(sequence) if sequence is not None else checkpoint.sequence_number,
            closed=closed,
            watermark_us=watermark,
        ))
        self.records += result.records
        self.captured += result.captured
        self.quarantined += result.quarantined
        self.erased += result.erased
        self.files += len(result.files)
        if self.progress is not None:
            self.progress.advance(result.records)

    def round(self) -> int:
        """Read every shard in the stream to its current end, parents first; returns records seen."""
        shards = list_shards(self.streams, self.arn)
        present = {shard.shard_id: shard for shard in shards}
        self.settle_vanished(present)
        for shard in shards:
            # Known before read: until it is read, coverage stops at its start (changelog.captured),
            # whether this run reads it, fails on another shard first, or runs out of time.
            if shard.shard_id not in self.checkpoints:
                self.save(Checkpoint(shard.shard_id, shard.parent_shard_id))
        done: set[str] = set()
        seen = 0
        moved = True
        while moved and not self.expired():
            moved = False
            for shard in shards:
                if shard.shard_id in done:
                    continue
                if self.finished(shard.shard_id):
                    done.add(shard.shard_id)
                    continue
                parent = shard.parent_shard_id
                if parent and parent in present and not self.finished(parent):
                    continue
                seen += self.drain(shard)
                done.add(shard.shard_id)
                moved = True
        return seen


def poll(
    store: Store,
    table: str,
    *,
    once: bool,
    poll_interval: float = 1.0,
    max_seconds: float | None = None,
    dynamodb: Any = None,
    streams: Any = None,
    progress: Progress | None = None,
    warn: Callable[[str], None] = _warn,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    limit: int = GETRECORDS_LIMIT,
    autoscaling: Any = None,
) -> PollSummary:
    """Capture the table's stream into the store; with ``once``, drain what is there now and return.

    Without ``once`` it polls until Ctrl-C or ``max_seconds`` (sleeping ``poll_interval`` after a
    round that found nothing). Raises TableNotFound, StreamConfigError (no stream, or a view type
    without new images) and StreamReadError. ``dynamodb``/``streams``/``autoscaling`` default to boto3
    clients. The table's settings are recorded before the first round and then every
    SETTINGS_EVERY_S (``changelog.settings``); failing to read them is a warning, never a stop.
    """
    dynamodb = dynamodb or boto3.client("dynamodb", config=_CLIENT_CONFIG)
    streams = streams or boto3.client("dynamodbstreams", config=_CLIENT_CONFIG)
    description, arn = stream_arn(dynamodb, table)
    if not store.exists(meta_path(table)):
        write_meta(store, meta_from_description(description))

    def observe_settings() -> SettingsVersion | None:
        return observe_or_report(store, table, lambda line: warn(f"ddb-rewind: warning: {line}"),
                                 dynamodb=dynamodb, autoscaling=autoscaling)

    observe_settings()
    observed_at = clock()
    deadline = clock() + max_seconds if max_seconds is not None else None
    session = _Session(store, table, arn, streams, limit=limit, deadline=deadline, progress=progress, warn=warn,
                       clock=clock)
    rounds = 0
    interrupted = False
    try:
        while True:
            seen = session.round()
            rounds += 1
            if once or session.expired():
                break
            if clock() - observed_at >= SETTINGS_EVERY_S:
                observe_settings()
                observed_at = clock()
            if seen == 0:
                pause = poll_interval
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - clock()))
                sleep(pause)
    except KeyboardInterrupt:
        interrupted = True
    except (ClientError, BotoCoreError) as exc:
        raise StreamReadError(f"reading the stream of {table!r} failed: {exc}") from None
    finally:
        if progress is not None:
            progress.close()
    return PollSummary(
        table=table,
        records=session.records,
        captured=session.captured,
        quarantined=session.quarantined,
        files=session.files,
        shards=len(session.read_shards),
        gaps=session.gaps,
        rounds=rounds,
        interrupted=interrupted,
        erased=session.erased,
    )
