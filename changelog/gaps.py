"""Gaps: stream records that were never captured and can no longer be read (shared vocabulary).

A gap is written by whoever finds the loss: the poller (records trimmed before it read them) or
``recover`` (a Lambda batch that exhausted its retries and was trimmed before it could be re-read).
Each is its own object under ``tables/<table>/gaps/``, named by shard and sequence numbers so that
finding the same loss twice rewrites one object.

Time bounds make a gap usable by coverage: ``start_us`` is the earliest moment whose state may
lack a lost change (inclusive), ``end_us`` the latest moment a lost change can carry. A moment
before ``start_us`` is restorable as before; a moment at or after it only from a bootstrap that
became consistent after the gap's end (a fresh copy of the whole table).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from changelog.damage import damaged, micros, parse_json_object, read_json_object
from changelog.layout import checkpoints_root, safe_name, table_root
from changelog.ledger import record_gap
from changelog.store import Store
from changelog.timefmt import format_time, from_micros

SECOND_US = 1_000_000
# How long before a record becomes readable in the stream (or is reported as "arrived") its stream
# time may lie. Stream times are the creation time rounded down to the second; a record is readable
# (and arrives) shortly after it is created, normally well under a second, and the wall clock of the
# host that reads the stream may differ from DynamoDB's by up to a second or so under NTP. Five
# seconds covers rounding, delay and clock error with room to spare; it only ever delays the latest
# restorable time (or widens a gap) by that much. docs/decisions.md ("Stream time margin").
STREAM_TIME_MARGIN_US = 5 * SECOND_US
# The stream stamps a shard's records with a clock that can step back (docs/reliability.md, "When the
# stream's clock steps back"): a record after the last one read may carry an earlier second. A
# shard is taken as complete only this far before the last record read, so that a record stamped up
# to a second earlier (the step seen, a clock error of milliseconds across a rounded second) still
# falls after the moment proven.
STREAM_CLOCK_STEP_US = SECOND_US


def gaps_root(table: str) -> str:
    """Prefix of the table's gap records (ends with '/', for listing)."""
    return f"{table_root(table)}/gaps/"


def poller_gap_path(table: str, shard_id: str, after_sequence: str | None) -> str:
    """Records lost in one shard after a sequence number (the poller's find)."""
    after = safe_name(after_sequence, "sequence number") if after_sequence else "start"
    return f"{gaps_root(table)}{safe_name(shard_id, 'shard id')}-{after}.json"


def batch_gap_path(table: str, shard_id: str, first_sequence: str, last_sequence: str) -> str:
    """Records of one failed Lambda batch, first to last sequence number (``recover``'s find)."""
    return (f"{gaps_root(table)}{safe_name(shard_id, 'shard id')}-{safe_name(first_sequence, 'sequence number')}"
            f"-to-{safe_name(last_sequence, 'sequence number')}.json")


def floor_second(micros: int) -> int:
    """The whole second at or before ``micros`` (stream times are rounded down to the second)."""
    return micros - micros % SECOND_US


@dataclass(frozen=True)
class Gap:
    """Stream records of one shard that were never captured and cannot be read any more."""

    shard_id: str
    detected_at_us: int
    reason: str
    # Earliest moment affected (inclusive); None: unknown, so every moment is affected.
    start_us: int | None = None
    # Latest stream time a lost record can carry; None: unknown, at most when the gap was found.
    end_us: int | None = None
    after_sequence_number: str | None = None  # last record captured before the gap (poller)
    first_sequence_number: str | None = None  # first and last record lost (recover)
    last_sequence_number: str | None = None
    source: str = "poller"

    @property
    def latest_affected_us(self) -> int:
        """The newest stream time a lost record can carry (lost records were all created before the find)."""
        return self.end_us if self.end_us is not None else self.detected_at_us

    def describe(self) -> str:
        """One phrase naming the gap: shard, sequence range and time bounds."""
        if self.first_sequence_number is not None:
            sequences = f"sequence {self.first_sequence_number} to {self.last_sequence_number or '?'}"
        else:
            sequences = f"records after sequence {self.after_sequence_number or '(shard start)'}"
        start = format_time(from_micros(self.start_us)) if self.start_us is not None else "an unknown time"
        return (f"shard {self.shard_id} {sequences}, from {start} to "
                f"{format_time(from_micros(self.latest_affected_us))} ({self.reason})")


def gap_to_json(table: str, gap: Gap) -> dict[str, Any]:
    """The stored form: every field, plus readable times."""
    return {
        "table": table,
        "shard_id": gap.shard_id,
        "detected_at_us": gap.detected_at_us,
        "detected_at": format_time(from_micros(gap.detected_at_us)),
        "reason": gap.reason,
        "start_us": gap.start_us,
        "start": format_time(from_micros(gap.start_us)) if gap.start_us is not None else None,
        "end_us": gap.end_us,
        "end": format_time(from_micros(gap.end_us)) if gap.end_us is not None else None,
        "after_sequence_number": gap.after_sequence_number,
        "first_sequence_number": gap.first_sequence_number,
        "last_sequence_number": gap.last_sequence_number,
        "source": gap.source,
    }


def _optional_micros(value: Any, name: str) -> int | None:
    return None if value is None else micros(value, name)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def gap_from_json(body: dict[str, Any]) -> Gap:
    """Read a stored gap; one written before gaps had time bounds reads with an unknown start.

    ValueError (or KeyError, TypeError) when it is not a sound one: a time that is no integer of
    epoch microseconds in range (``Infinity``, ``1e400`` or ``10**30`` would break every reader).
    """
    if not isinstance(body, dict):
        raise TypeError("a gap record is a JSON object")
    return Gap(
        shard_id=str(body["shard_id"]),
        detected_at_us=micros(body["detected_at_us"], "detected_at_us"),
        reason=str(body.get("reason", "")),
        start_us=_optional_micros(body.get("start_us"), "start_us"),
        end_us=_optional_micros(body.get("end_us"), "end_us"),
        after_sequence_number=_optional_str(body.get("after_sequence_number")),
        first_sequence_number=_optional_str(body.get("first_sequence_number")),
        last_sequence_number=_optional_str(body.get("last_sequence_number")),
        source=str(body.get("source", "poller")),
    )


def gap_path(table: str, gap: Gap) -> str:
    """Where a gap is kept: derived from shard and sequences, so the same loss is one object."""
    if gap.first_sequence_number is not None:
        return batch_gap_path(table, gap.shard_id, gap.first_sequence_number,
                              gap.last_sequence_number or gap.first_sequence_number)
    return poller_gap_path(table, gap.shard_id, gap.after_sequence_number)


def write_gap(store: Store, table: str, gap: Gap) -> str:
    """Record a gap as its own object; returns its path (finding it again rewrites the same object)."""
    path = gap_path(table, gap)
    store.write(path, json.dumps(gap_to_json(table, gap), indent=1, sort_keys=True).encode("utf-8"))
    # Recorded after it is written: deleting the record is then noticed (changelog.ledger).
    record_gap(store, table, path, gap.start_us, gap.latest_affected_us)
    return path


def _oldest_first(gaps: Iterable[Gap]) -> tuple[Gap, ...]:
    return tuple(sorted(gaps, key=lambda g: (g.start_us or 0, g.shard_id)))


def read_gap(store: Store, path: str) -> Gap:
    """One gap record; DamagedStore naming it when it is not one."""
    body = parse_json_object(store, path, store.read(path))
    try:
        return gap_from_json(body)
    except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
        raise damaged(store, path, f"is not a readable gap record ({exc!r})") from None


def read_gaps(store: Store, table: str, listing: Iterable[str] | None = None) -> tuple[Gap, ...]:
    """Every gap record of the table, oldest start first; ``listing`` (of the table's prefix) saves a LIST call."""
    root = gaps_root(table)
    paths = listing if listing is not None else store.list(root)
    return _oldest_first(read_gap(store, path) for path in paths if path.startswith(root) and path.endswith(".json"))


def checkpoint_gaps(store: Store, path: str) -> tuple[Gap, ...]:
    """The gaps a poller checkpoint lists (``stream_consumer.checkpoint`` writes them beside each record)."""
    body = read_json_object(store, path)
    listed = body.get("gaps", [])
    if not isinstance(listed, list) or not all(isinstance(item, dict) for item in listed):
        raise damaged(store, path, "lists gaps that are not gap records")
    try:
        return tuple(gap_from_json(item) for item in listed)
    except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
        raise damaged(store, path, f"lists a gap that cannot be read ({exc!r})") from None


def all_gaps(store: Store, table: str, listing: Iterable[str] | None = None) -> tuple[Gap, ...]:
    """Every gap of the table from both places it is kept, oldest start first.

    The poller lists each gap in its shard's checkpoint as well as in the gap's own record, so
    deleting the record alone does not lift the refusal. One loss is one gap, identified by where
    its record is kept (``gap_path``); when both exist the record is taken. ``listing`` is of the
    table's prefix (``tables/<table>/``).
    """
    paths = list(listing) if listing is not None else store.list(table_root(table) + "/")
    root = gaps_root(table)
    found = {path: read_gap(store, path) for path in paths if path.startswith(root) and path.endswith(".json")}
    for path in paths:
        if path.startswith(checkpoints_root(table)) and path.endswith(".json"):
            for gap in checkpoint_gaps(store, path):
                found.setdefault(gap_path(table, gap), gap)
    return _oldest_first(found.values())

