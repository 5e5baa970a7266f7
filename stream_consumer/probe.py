"""The probe: what the Lambda path's per-shard progress proves about each shard of the stream, now.

Lambda records how far it stored each shard it read (``changelog.captured.ShardProgress``), but it
cannot say that a shard is idle, and it says nothing of a shard it has not read yet. The probe lists
the stream's shards (DescribeStream, parents first) and reads one page of each just after its stored
progress (from its start when nothing is stored):

- no record, and a next iterator: the shard held nothing more when asked, so every change of it
  stamped before then (less the stream's time margin) is stored: the poller's caught-up rule;
- no record and no next iterator: the shard ended and everything in it is stored (closed);
- records: Lambda is behind on it; every change stamped before the first unstored record is stored.

What it proves is written as the shard's checkpoint, in the poller's format, so that the one
lineage rule (``changelog.captured``) reads the probe and the poller alike; the progress Lambda
stores afterwards raises it further. An unfinished shard that left the stream is a gap, as in the
poller. The probe reads the stream and writes checkpoints and gap records only: never a change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from changelog.captured import ShardProgress, read_shard_progress
from changelog.gaps import STREAM_CLOCK_STEP_US, Gap, write_gap
from changelog.layout import capture_root
from changelog.store import Store
from changelog.timefmt import to_micros
from stream_consumer.checkpoint import Checkpoint, read_checkpoints, write_checkpoint
from stream_consumer.poller import CAUGHT_UP_PAGES, Shard, caught_up_watermark, list_shards

PROBE_LIMIT = 100


@dataclass(frozen=True)
class ShardFinding:
    """What the probe found for one shard."""

    shard_id: str
    state: str  # "caught up", "behind", "closed", "trimmed", "gone" or "vanished"
    watermark_us: int | None


@dataclass(frozen=True)
class ProbeSummary:
    """One probe of one table's stream."""

    table: str
    findings: tuple[ShardFinding, ...]
    gaps: int
    dry_run: bool


def _now_us() -> int:
    return to_micros(datetime.now(UTC))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _higher(current: int | None, found: int | None) -> int | None:
    if found is None:
        return current
    return found if current is None else max(current, found)


def _first_time_us(records: list[Any]) -> int | None:
    body = records[0].get("dynamodb") if isinstance(records[0], dict) else None
    created = body.get("ApproximateCreationDateTime") if isinstance(body, dict) else None
    return to_micros(created) if isinstance(created, datetime) else None


def probe_stream(store: Store, table: str, streams: Any, stream_arn: str, *, dry_run: bool = False,
                 clock: Callable[[], int] = _now_us) -> ProbeSummary:
    """Probe every shard of ``stream_arn`` for ``table`` and write what each proves (nothing on a dry run)."""
    progress = {shard: found for shard, found in
                read_shard_progress(store, table, store.list(capture_root(table) + "progress/")).items()
                if found.stream_arn == stream_arn}
    checkpoints = read_checkpoints(store, table)
    shards = list_shards(streams, stream_arn)
    present = {shard.shard_id for shard in shards}
    findings: list[ShardFinding] = []
    gaps = 0

    def save(checkpoint: Checkpoint) -> None:
        if not dry_run:
            write_checkpoint(store, table, checkpoint)

    for shard_id, checkpoint in sorted(checkpoints.items()):
        if checkpoint.closed or shard_id in present:
            continue
        # It left the stream (trimmed after 24 hours) before anything showed it was read to its end.
        stored = progress.get(shard_id)
        mark = _higher(checkpoint.watermark_us, stored.watermark_us() if stored else None)
        gap = Gap(shard_id, clock(), "the shard left the stream before the probe saw it read to its end",
                  start_us=mark + 1 if mark is not None else None,
                  after_sequence_number=stored.last_sequence if stored else checkpoint.sequence_number)
        if not dry_run:
            write_gap(store, table, gap)
        save(replace(checkpoint.with_gap(gap), closed=True, watermark_us=mark))
        findings.append(ShardFinding(shard_id, "vanished", mark))
        gaps += 1
    for shard in shards:
        checkpoint = checkpoints.get(shard.shard_id) or Checkpoint(shard.shard_id, shard.parent_shard_id)
        if checkpoint.closed:
            continue
        finding, updated = _probe_shard(streams, stream_arn, shard, checkpoint, progress.get(shard.shard_id), clock)
        save(updated)
        findings.append(finding)
    return ProbeSummary(table, tuple(findings), gaps, dry_run)


def _probe_shard(streams: Any, stream_arn: str, shard: Shard, checkpoint: Checkpoint,
                 stored: ShardProgress | None, clock: Callable[[], int]) -> tuple[ShardFinding, Checkpoint]:
    position = stored.last_sequence if stored is not None else checkpoint.sequence_number
    mark = _higher(checkpoint.watermark_us, stored.watermark_us() if stored else None)
    updated = replace(checkpoint, parent_shard_id=checkpoint.parent_shard_id or shard.parent_shard_id,
                      sequence_number=position, watermark_us=mark)
    request = {"StreamArn": stream_arn, "ShardId": shard.shard_id}
    asked_us = clock()
    try:
        if position is not None:
            iterator = streams.get_shard_iterator(**request, ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                                  SequenceNumber=position)["ShardIterator"]
        else:
            iterator = streams.get_shard_iterator(**request, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        response = streams.get_records(ShardIterator=iterator, Limit=PROBE_LIMIT)
        for _ in range(CAUGHT_UP_PAGES - 1):  # an empty page may precede records (poller.CAUGHT_UP_PAGES)
            if response.get("Records") or response.get("NextShardIterator") is None:
                break
            response = streams.get_records(ShardIterator=response["NextShardIterator"], Limit=PROBE_LIMIT)
    except ClientError as exc:
        code = _code(exc)
        if code == "TrimmedDataAccessException":
            # Lambda is more than the stream's retention behind: what it gives up on reaches the
            # on-failure queue, and recover records it; nothing more is proven here.
            return ShardFinding(shard.shard_id, "trimmed", mark), updated
        if code == "ResourceNotFoundException":
            return ShardFinding(shard.shard_id, "gone", mark), updated  # the next probe settles it
        raise
    records = response.get("Records") or []
    if records:
        first = _first_time_us(records)
        if first is not None:
            # The records not stored yet carry at least the first one's time less a step of the
            # stream's clock (gaps.STREAM_CLOCK_STEP_US): everything stamped before that is stored.
            mark = _higher(mark, min(first - STREAM_CLOCK_STEP_US - 1, asked_us))
        return ShardFinding(shard.shard_id, "behind", mark), replace(updated, watermark_us=mark)
    if response.get("NextShardIterator") is None:
        return ShardFinding(shard.shard_id, "closed", mark), replace(updated, closed=True)
    mark = _higher(mark, caught_up_watermark(asked_us))
    return ShardFinding(shard.shard_id, "caught up", mark), replace(updated, watermark_us=mark)
