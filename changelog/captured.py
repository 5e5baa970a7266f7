"""What capture has read, and the one rule that turns it into the latest restorable time.

The lineage rule: a moment is restorable only when every shard of the stream's lineage that could
hold a change at or before it has been read up to it (closed parents to their end, children listed
and read from their start), and no batch in that range is pending. Every capture path records what
it read, and ``capture_holds`` is the only reader of those records:

- The poller keeps one checkpoint per shard (``stream_consumer.checkpoint``; the keys read here are
  part of the store's format). It writes one for every shard DescribeStream lists, before reading
  it, so a listed shard nobody has read yet is known.
- The Lambda path records the batches Lambda may give up on: a *pending* record, written before it
  reports a batch failed, named by the batch's first sequence number. A retry of that batch starts
  at the same record (the handler reports the whole batch failed), so the retry that stores it
  writes a *stored* record from that first sequence number (``settle_pending_batch``); ``recover``
  writes one for a batch it re-captured, or a gap (``changelog.gaps``) for one it could not. Either
  settles the pending record: a stored record only when it starts where the pending one does (its
  range alone could settle another shard's or another concurrent batch's pending record, since
  their sequence numbers interleave). A batch stored at its first attempt leaves no record here:
  one object per batch, listed by every reader's coverage, would grow without end. A DynamoDB stream
  event carries only the stream ARN, so its records name no shard; a Kinesis event names the shard
  of every record (``eventID`` ``shardId-...:sequence``), so a Kinesis batch's records also carry
  ``shard_id`` and settle only by a record or gap of the same shard. A Kinesis stream may carry
  several tables: the batch is recorded under each table its records name.
- The Lambda path also records, per shard, how far it has stored it (a *progress* record, replaced
  after every batch) when its event names the shard: the stack turns on tumbling windows for a
  DynamoDB stream read one batch at a time per shard, and then every event carries ``shardId``.
  Lambda reads a shard in order and moves on only once a batch is stored or given up (pending), so
  every record up to the progress record's sequence number is stored or pending. Progress alone
  cannot see a shard that stored nothing yet, nor know a shard is idle: the scheduled probe
  (``stream_consumer.probe``) lists the stream's shards and reads one page after each shard's
  progress, and writes what that proves as the shard's checkpoint, in the poller's format.

Holds (``Hold``, each named so that ``status`` can say what holds coverage back), each the latest
moment it lets be restorable (None: no moment is proven):

- an open shard: its watermark; one not read yet: its start, the end of its parent (a root shard,
  or one whose parent the store never saw, may hold changes of any time: None);
- a closed shard no known shard names as parent: its end (its children, not listed yet, may hold
  the changes right after it); a closed shard whose children are known holds nothing itself;
- a pending batch: the second before its oldest change (None when its records carry no time).

A shard's progress record raises its checkpoint's watermark to just before the newest stored
record's second (the next record may share it); a shard known only by its progress is an open
shard. Progress records without any checkpoint leave the lineage unknown: no moment is proven until
the probe has listed the shards. Without any shard record at all (the Lambda path with events that
name no shard), the newest stored change stands in for the shards.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from changelog.codec import MAX_SEQUENCE_DIGITS
from changelog.damage import damaged, read_json_object
from changelog.errors import DamagedStore
from changelog.gaps import SECOND_US, STREAM_CLOCK_STEP_US, floor_second, read_gaps
from changelog.layout import (
    capture_root,
    checkpoints_root,
    pending_batch_path,
    safe_name,
    shard_progress_path,
    stored_batch_path,
)
from changelog.ledger import record_pending
from changelog.names import table_name_problem
from changelog.store import ObjectMissing, Store

# DynamoDB Streams sequence numbers are 21 to 40 digits; Kinesis's are 56 today, and the codec keeps
# up to MAX_SEQUENCE_DIGITS. Anything else never becomes part of a name.
DYNAMODB_SEQUENCE_DIGITS = 40
_DIGITS = re.compile(r"[0-9]+")
# A stream time outside these bounds (before 2012, after 2200) is no time at all for a hold.
_EARLIEST_S, _LATEST_S = 1_325_376_000, 7_258_118_400


@dataclass(frozen=True)
class ShardRead:
    """How far one shard has been read (from the poller's checkpoint)."""

    shard_id: str
    parent_shard_id: str | None
    closed: bool  # read to its end
    watermark_us: int | None  # every change of the shard at or before it is stored; None: nothing proven


@dataclass(frozen=True)
class BatchRecord:
    """A stream batch, by sequence range: stored, or pending (failed and not yet settled)."""

    stream_arn: str
    first_sequence: str
    last_sequence: str
    hold_us: int | None = None  # pending only: the latest moment before its oldest change
    shard_id: str | None = None  # a Kinesis batch's shard (a DynamoDB stream event names none)


def sequence_problem(value: object, max_digits: int = DYNAMODB_SEQUENCE_DIGITS) -> str | None:
    """Why ``value`` is not a stream sequence number usable in a record's name (None when it is)."""
    if isinstance(value, str) and value.isascii() and len(value) <= max_digits and _DIGITS.fullmatch(value):
        return None
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"{shown} is not a sequence number of 1 to {max_digits} digits"


def hold_before(times_s: Iterable[object]) -> int | None:
    """The latest moment (µs) before the oldest of a batch's stream times (epoch seconds); None if none is a time.

    Stream times are whole seconds: the changes of the batch may lie anywhere from the oldest one's
    second on.
    """
    seconds = [float(t) for t in times_s
               if isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t)
               and _EARLIEST_S <= t <= _LATEST_S]
    if not seconds:
        return None
    return floor_second(int(min(seconds) * SECOND_US)) - 1


def _checked(sequences: Iterable[str], shard_id: str | None) -> None:
    limit = DYNAMODB_SEQUENCE_DIGITS if shard_id is None else MAX_SEQUENCE_DIGITS
    for value in sequences:
        problem = sequence_problem(value, limit)
        if problem is not None:
            raise ValueError(problem)
    if shard_id is not None:
        safe_name(shard_id, "shard id")


def record_stored_batch(store: Store, table: str, stream_arn: str, first_sequence: str, last_sequence: str,
                        source: str, shard_id: str | None = None) -> str:
    """Record that the batch ``first_sequence``..``last_sequence`` is stored; call after its files are written."""
    _checked((first_sequence, last_sequence), shard_id)
    path = stored_batch_path(table, stream_arn, first_sequence, last_sequence, shard_id)
    body = {"stream_arn": stream_arn, "first_sequence": first_sequence, "last_sequence": last_sequence,
            "source": source, **({"shard_id": shard_id} if shard_id is not None else {})}
    store.write(path, json.dumps(body, indent=1, sort_keys=True).encode("utf-8"))
    return path


def settle_pending_batch(store: Store, table: str, stream_arn: str, first_sequence: str, last_sequence: str,
                         source: str, shard_id: str | None = None, *, always: bool = False) -> str | None:
    """After a batch is stored: its stored record when a pending record waits for it (a retry), or
    ``always`` (``recover``); else nothing.

    Lambda retries a batch whole or, after a function error (a timeout), in halves, in order: a half
    starting where the pending batch starts is not all of it, and the rest comes next. So, for a
    retry (not ``always``), the pending batch's records after ``last_sequence`` stay pending, under
    the first of them, before the stored record settles the half: the hold never lifts over a record
    not stored. A table keeps a rest only when records of its own are in it. ``recover`` stores a
    batch Lambda gave up on after Lambda moved past it: what followed it was stored, or is pending
    or queued on its own, so it leaves no rest. A Kinesis batch is pending under every table its
    records name, and a half may hold another table's records only: the pending record names them
    all, and the half settles each of them alike.
    """
    _checked((first_sequence, last_sequence), shard_id)
    stored, others = _settle(store, table, stream_arn, first_sequence, last_sequence, source, shard_id, always,
                             keep_rest=not always)
    for other in sorted(others - {table}):
        _settle(store, other, stream_arn, first_sequence, last_sequence, source, shard_id, False, keep_rest=not always)
    return stored


def _settle(store: Store, table: str, stream_arn: str, first_sequence: str, last_sequence: str, source: str,
            shard_id: str | None, always: bool, *, keep_rest: bool) -> tuple[str | None, set[str]]:
    """``settle_pending_batch`` for one table: (its stored record or None, the tables its pending record names)."""
    try:
        body = read_json_object(store, pending_batch_path(table, stream_arn, first_sequence, shard_id))
    except ObjectMissing:
        body = None
    except DamagedStore:
        body = {}  # coverage names the damaged record; the stored one is still the truth
    if body is None and not always:
        return None, set()
    body = body or {}
    tables = _pending_tables(body)
    after = int(last_sequence)
    rest = [sequence for sequence in _pending_sequences(body) if int(sequence) > after]
    own = _pending_sequences(body, "own") if "own" in body else rest
    if keep_rest and rest and any(int(sequence) > after for sequence in own):
        hold = body.get("hold_us")
        record_pending_batch(store, table, stream_arn, rest[0], hold if isinstance(hold, int) else None, source,
                             shard_id, rest, tables, [sequence for sequence in own if int(sequence) > after])
    return record_stored_batch(store, table, stream_arn, first_sequence, last_sequence, source, shard_id), tables


def _pending_tables(body: Mapping[str, Any]) -> set[str]:
    """The tables a pending record says its batch is pending under (valid names only)."""
    found = body.get("tables")
    return {name for name in found if isinstance(name, str) and table_name_problem(name) is None} \
        if isinstance(found, list) else set()


def _pending_sequences(body: Mapping[str, Any], field: str = "sequences") -> list[str]:
    """The sequence numbers a pending record lists: the batch's (``sequences``) or the table's own
    records among them (``own``); records written before they were listed list none."""
    found = body.get(field)
    if not isinstance(found, list):
        return []
    return sorted({s for s in found if sequence_problem(s, MAX_SEQUENCE_DIGITS) is None}, key=int)


def record_pending_batch(store: Store, table: str, stream_arn: str, first_sequence: str,
                         hold_us: int | None, source: str, shard_id: str | None = None,
                         sequences: Sequence[str] = (), tables: Iterable[str] = (),
                         own: Sequence[str] | None = None) -> str:
    """Record that the batch from ``first_sequence`` failed: coverage stops before it until it is settled.

    ``sequences`` are the batch's records, so that a retry of part of it settles only that part
    (``settle_pending_batch``); ``own`` those of them that are this table's (None: all of them);
    ``tables`` every table the batch is pending under. A pending record already there for the same
    first record (an earlier, larger attempt) keeps its records, its tables and its earlier hold:
    it never shrinks.
    """
    _checked((first_sequence, *sequences, *(own or ())), shard_id)
    path = pending_batch_path(table, stream_arn, first_sequence, shard_id)
    try:
        earlier: dict[str, Any] = read_json_object(store, path)
    except (ObjectMissing, DamagedStore):
        earlier = {}
    listed = sorted({*sequences, *_pending_sequences(earlier)}, key=int)
    named = sorted({*tables, *_pending_tables(earlier)} - {table})
    mine = None if own is None else sorted({*own, *_pending_sequences(earlier, "own")}, key=int)
    if mine is not None and earlier.get("sequences") and "own" not in earlier:
        mine = None  # an earlier record counted every record of its batch as this table's: keep that
    held = earlier.get("hold_us")
    if isinstance(held, int) and not isinstance(held, bool) and (hold_us is None or held < hold_us):
        hold_us = held
    body = {"stream_arn": stream_arn, "first_sequence": first_sequence, "hold_us": hold_us, "source": source,
            **({"shard_id": shard_id} if shard_id is not None else {}), **({"sequences": listed} if listed else {}),
            **({"tables": [table, *named]} if named else {}), **({"own": mine} if mine is not None else {})}
    store.write(path, json.dumps(body, indent=1, sort_keys=True).encode("utf-8"))
    # Recorded once written: a pending record removed by hand would otherwise lift its hold unnoticed.
    record_pending(store, table, path, hold_us)
    return path


def pending_hold(store: Store, table: str, stream_arn: str, first_sequence: str, shard_id: str | None) -> int | None:
    """The hold of the table's pending record for the batch from ``first_sequence`` (None: no record,
    or it read no stream time)."""
    try:
        hold = read_json_object(store, pending_batch_path(table, stream_arn, first_sequence, shard_id)).get("hold_us")
    except (ObjectMissing, DamagedStore):
        return None
    return hold if isinstance(hold, int) and not isinstance(hold, bool) else None


def is_pending(store: Store, table: str, stream_arn: str, first_sequence: str, shard_id: str | None) -> bool:
    """Whether the table holds a pending record for the batch from ``first_sequence`` (settled or not)."""
    return store.exists(pending_batch_path(table, stream_arn, first_sequence, shard_id))


@dataclass(frozen=True)
class ShardProgress:
    """How far the Lambda path has stored one shard: every record up to ``last_sequence`` is stored or pending."""

    shard_id: str
    stream_arn: str
    last_sequence: str
    # The latest stream time the shard's stored records carry (not the last one's by sequence: the
    # stream's clock can step back); None: they carried none.
    last_us: int | None

    def watermark_us(self) -> int | None:
        """Complete strictly before the earliest time the shard's next record may carry (a second before
        the latest stored, ``gaps.STREAM_CLOCK_STEP_US``), never past now."""
        if self.last_us is None:
            return None
        return min(self.last_us - STREAM_CLOCK_STEP_US - 1, time.time_ns() // 1000)


def record_shard_progress(store: Store, table: str, progress: ShardProgress) -> str:
    """Record how far the shard is stored; call after the batch's files and its stored record are written.

    Replacing it with an older position (a duplicate invocation of an earlier batch) only proves less.
    The latest stream time stays the latest the shard's stored records carry, so that a batch whose
    records the stream stamped a second early does not move the latest restorable time back.
    """
    _checked((progress.last_sequence,), progress.shard_id)
    path = shard_progress_path(table, progress.shard_id)
    last_us = progress.last_us
    try:
        earlier = read_json_object(store, path)
    except (ObjectMissing, DamagedStore):  # none yet, or one this write replaces (capture must go on)
        earlier = {}
    seen = earlier.get("last_us")
    if earlier.get("stream_arn") == progress.stream_arn and isinstance(seen, int) and not isinstance(seen, bool):
        last_us = seen if last_us is None else max(last_us, seen)
    body = {"shard_id": progress.shard_id, "stream_arn": progress.stream_arn,
            "last_sequence": progress.last_sequence, "last_us": last_us}
    store.write(path, json.dumps(body, indent=1, sort_keys=True).encode("utf-8"))
    return path


def read_shard_progress(store: Store, table: str, listing: Iterable[str]) -> dict[str, ShardProgress]:
    """Every progress record of the table, by shard id."""
    prefix = capture_root(table) + "progress/"
    found: dict[str, ShardProgress] = {}
    for path in listing:
        if path.startswith(prefix) and path.endswith(".json"):
            body = read_json_object(store, path)
            shard, arn, last, at = (body.get("shard_id"), body.get("stream_arn"), body.get("last_sequence"),
                                    body.get("last_us"))
            if not isinstance(shard, str) or path != shard_progress_path(table, shard) or not isinstance(arn, str) \
                    or sequence_problem(last, MAX_SEQUENCE_DIGITS) \
                    or not (at is None or (isinstance(at, int) and not isinstance(at, bool))):
                raise damaged(store, path, "is not a sound shard progress record (shard_id, stream_arn, "
                                           "last_sequence, last_us)")
            found[shard] = ShardProgress(shard, arn, str(last), at)
    return found


@dataclass(frozen=True)
class Hold:
    """One thing that limits the latest restorable time: the latest moment it lets be restorable."""

    at_us: int | None  # None: no moment is proven while it stands
    kind: str  # "shard", "pending batch" or "newest change"
    what: str  # one phrase naming it (shard id, sequence number)
    shard_id: str | None = None  # the shard, for a shard's hold
    unread: bool = False  # a shard listed that nothing has been read from yet


def lineage_holds(shards: Mapping[str, ShardRead]) -> list[Hold]:
    """One hold per shard that limits coverage, by the rule above."""
    named_as_parent = {s.parent_shard_id for s in shards.values() if s.parent_shard_id}

    def start(shard: ShardRead, seen: frozenset[str]) -> int | None:
        parent = shards.get(shard.parent_shard_id or "")
        if parent is None or parent.shard_id in seen:  # `seen` guards against a malformed cycle
            return None
        return end(parent, seen | {shard.shard_id})

    def end(shard: ShardRead, seen: frozenset[str]) -> int | None:
        return shard.watermark_us if shard.watermark_us is not None else start(shard, seen)

    holds: list[Hold] = []
    for shard in shards.values():
        if shard.closed and shard.shard_id in named_as_parent:
            continue
        if shard.watermark_us is not None:
            state = "read to its end, children not listed yet" if shard.closed else "open, read to its watermark"
        elif shard.parent_shard_id in shards:
            state = "listed, not read yet (bounded by its parent's end)"
        else:
            state = "listed, not read yet (no known parent bounds it)"
        holds.append(Hold(end(shard, frozenset()), "shard", f"shard {shard.shard_id} ({state})",
                          shard_id=shard.shard_id, unread=shard.watermark_us is None and not shard.closed))
    return holds


# DynamoDB Streams keeps a record 24 hours; a closed shard leaves DescribeStream with its last record.
# An hour more for the stream's clock and the reader's.
STREAM_KEEPS_US = 25 * 3_600_000_000


def settled_shards(shards: Mapping[str, ShardRead], kept: frozenset[str] = frozenset()) -> list[str]:
    """The shards whose records no longer change what ``lineage_holds`` proves, in the order to remove them;
    never one in ``kept`` (whose record holds more than its read: a checkpoint listing a gap).

    A closed shard, read to its end, whose parent is not (or no longer) among the records, whose
    children are known and all read, and whose end lies more than the stream keeps a record before
    the furthest any shard is read: it holds nothing (its children are known) and bounds nothing (no
    child is unread), and no reader lists it again (a poller or probe that met it in DescribeStream
    would start it afresh). Removed, it leaves its children as roots that are read; removing from
    the roots down keeps every closed shard that stays named as a parent. A record per shard ever
    seen (a new shard every few hours), each fetched by every coverage read, would otherwise grow
    without end.
    """
    marks = [shard.watermark_us for shard in shards.values() if shard.watermark_us is not None]
    if not marks:
        return []
    furthest = max(marks)
    remaining = dict(shards)
    order: list[str] = []
    while True:
        children: dict[str, list[ShardRead]] = {}
        for shard in remaining.values():
            if shard.parent_shard_id:
                children.setdefault(shard.parent_shard_id, []).append(shard)
        settled = sorted(
            shard.shard_id for shard in remaining.values()
            if shard.closed and shard.watermark_us is not None and shard.parent_shard_id not in remaining
            and shard.shard_id not in kept and shard.watermark_us + STREAM_KEEPS_US <= furthest
            and children.get(shard.shard_id)
            and all(child.watermark_us is not None for child in children[shard.shard_id]))
        if not settled:
            return order
        for shard_id in settled:
            del remaining[shard_id]
        order.extend(settled)


def with_progress(shards: Mapping[str, ShardRead], progress: Iterable[ShardProgress]) -> dict[str, ShardRead]:
    """The shards with each one's watermark raised to what its progress proves (an unknown shard: open)."""
    merged = dict(shards)
    for shard in progress:
        mark = shard.watermark_us()
        known = merged.get(shard.shard_id)
        if known is None:
            merged[shard.shard_id] = ShardRead(shard.shard_id, None, False, mark)
        elif mark is not None and (known.watermark_us is None or mark > known.watermark_us):
            merged[shard.shard_id] = replace(known, watermark_us=mark)
    return merged


def capture_holds(store: Store, table: str, listing: Sequence[str], newest_change_us: int | None) -> tuple[Hold, ...]:
    """Every hold on the table's latest restorable time (the rule above); ``watermark`` reduces them.

    ``listing`` is a listing of the table's prefix; ``newest_change_us`` the newest stored change,
    which stands in for the shards when no shard record exists (the Lambda path).
    """
    shards = read_shard_records(store, table, listing)
    progress = read_shard_progress(store, table, listing)
    if progress:
        holds = lineage_holds(with_progress(shards, progress.values()))
        if not shards:
            holds.append(Hold(None, "shard", "the stream's shards (not listed yet: a shard that stored nothing "
                                             "may be behind; the stack's scheduled probe lists them, or run "
                                             "'ddb-rewind recover --probe')", unread=True))
    elif shards:
        holds = lineage_holds(shards)
    else:
        holds = [Hold(newest_change_us, "newest change",
                      "the newest stored change (without shard records nothing proves a later moment)")]
    pending = _read_batches(store, listing, capture_root(table) + "pending/")
    if pending:
        stored = _read_batches(store, listing, capture_root(table) + "batches/")
        gaps = read_gaps(store, table, listing)
        lost = [(g.shard_id, int(g.first_sequence_number), int(g.last_sequence_number or g.first_sequence_number))
                for g in gaps if g.first_sequence_number is not None
                and not sequence_problem(g.first_sequence_number, MAX_SEQUENCE_DIGITS)
                and not sequence_problem(g.last_sequence_number or g.first_sequence_number, MAX_SEQUENCE_DIGITS)]

        def same_shard(shard: str | None, other: str | None) -> bool:
            # A DynamoDB stream batch's records name no shard: its range alone settles it.
            return shard is None or other is None or shard == other

        for batch in pending:
            first = int(batch.first_sequence)
            settled = any(s.stream_arn == batch.stream_arn and same_shard(batch.shard_id, s.shard_id)
                          and int(s.first_sequence) == first for s in stored) \
                or any(same_shard(batch.shard_id, shard) and low <= first <= high for shard, low, high in lost)
            if not settled:
                shard = f" of shard {batch.shard_id}" if batch.shard_id else ""
                holds.append(Hold(batch.hold_us, "pending batch",
                                  f"the failed batch from sequence {batch.first_sequence}{shard} (not stored or "
                                  "recovered yet)"))
    return tuple(holds)


def read_capture_record(store: Store, table: str, path: str) -> None:
    """Read one of the table's capture records (a checkpoint, or a progress, stored or pending batch
    record) as ``capture_holds`` reads it: DamagedStore when coverage would refuse it."""
    if path.startswith(checkpoints_root(table)):
        read_shard_records(store, table, [path])
    elif path.startswith(capture_root(table) + "progress/"):
        read_shard_progress(store, table, [path])
    else:
        for kind in ("pending/", "batches/"):
            _read_batches(store, [path], capture_root(table) + kind)


def watermark(holds: Sequence[Hold]) -> int | None:
    """The latest restorable time the holds allow: the earliest of them; None if any proves nothing (or none)."""
    if any(hold.at_us is None for hold in holds):
        return None
    known = [hold.at_us for hold in holds if hold.at_us is not None]
    # A stream time may run ahead of the clock (codec accepts a day's slack for skew), but no store
    # can know a moment that has not happened yet: whatever the records say, never past now.
    return min(*known, time.time_ns() // 1000) if known else None


def binding_holds(holds: Sequence[Hold]) -> tuple[Hold, ...]:
    """The holds that set the watermark (those proving nothing, else the earliest)."""
    limit = watermark(holds)
    return tuple(hold for hold in holds if hold.at_us == limit)


def capture_watermark(store: Store, table: str, listing: Sequence[str], newest_change_us: int | None) -> int | None:
    """The latest restorable time capture proves (µs), or None when it proves no moment."""
    return watermark(capture_holds(store, table, listing, newest_change_us))


def read_shard_records(store: Store, table: str, listing: Iterable[str]) -> dict[str, ShardRead]:
    """Every shard record (poller checkpoint) of the table, by shard id."""
    prefix = checkpoints_root(table)
    found: dict[str, ShardRead] = {}
    for path in listing:
        if path.startswith(prefix) and path.endswith(".json"):
            body = read_json_object(store, path)
            try:
                shard = _shard_from_json(body)
            except (KeyError, TypeError, ValueError, OverflowError):
                raise damaged(store, path, "is not a sound checkpoint (shard_id, closed, watermark_us)") from None
            found[shard.shard_id] = shard
    return found


def _shard_from_json(body: dict[str, Any]) -> ShardRead:
    shard_id = body["shard_id"]
    parent = body.get("parent_shard_id")
    closed = body.get("closed", False)
    watermark = body.get("watermark_us")
    if not isinstance(shard_id, str) or not (parent is None or isinstance(parent, str)) \
            or not isinstance(closed, bool):
        raise TypeError("wrong types")
    if watermark is not None and (not isinstance(watermark, int) or isinstance(watermark, bool)):
        raise TypeError("watermark_us is not an integer")
    return ShardRead(shard_id, parent, closed, watermark)


def _read_batches(store: Store, listing: Iterable[str], prefix: str) -> list[BatchRecord]:
    found = []
    for path in listing:
        if path.startswith(prefix) and path.endswith(".json"):
            body = read_json_object(store, path)
            arn, first = body.get("stream_arn"), body.get("first_sequence")
            last, hold, shard = body.get("last_sequence", first), body.get("hold_us"), body.get("shard_id")
            if not isinstance(arn, str) or sequence_problem(first, MAX_SEQUENCE_DIGITS) \
                    or sequence_problem(last, MAX_SEQUENCE_DIGITS) or not (shard is None or isinstance(shard, str)) \
                    or not (hold is None or (isinstance(hold, int) and not isinstance(hold, bool))):
                raise damaged(store, path, "is not a sound capture record (stream_arn, sequences, shard_id, hold_us)")
            found.append(BatchRecord(arn, str(first), str(last), hold, shard))
    return found
