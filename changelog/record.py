"""The change record: one row per stream record, and its Parquet schema (the public file format).

Format 2 (``changelog.footer.FORMAT_VERSION``): format 1 files also held ``new_doc``/``old_doc``,
the images as plain JSON. Those are a pure function of the images and were a third of the bytes;
readers now derive them (``changelog.docs``) and read format 1 files through this schema, which
leaves those columns out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import pyarrow as pa

SCHEMA = pa.schema(
    [
        pa.field("table_name", pa.string(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_name", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("sequence_number", pa.string(), nullable=False),
        pa.field("shard_id", pa.string()),
        pa.field("item_key", pa.string(), nullable=False),
        pa.field("keys", pa.string(), nullable=False),
        pa.field("new_image", pa.string()),
        pa.field("old_image", pa.string()),
        pa.field("is_ttl_delete", pa.bool_(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
    ]
)


# The order of versions of an item (docs/design.md, semantics 1): time, then the sequence number as a
# number. Sequence numbers are zero-padded to 40 digits but longer ones are kept whole, so comparing
# (length, text) is numeric order for every width. Every SQL that orders versions uses these.
# Time comes first, so where a stream's clock steps back capture keeps an item's times in its
# sequence order (``monotone_item_times``).
VERSION_ORDER = "event_time, length(sequence_number), sequence_number"
LATEST_FIRST = "event_time DESC, length(sequence_number) DESC, sequence_number DESC"


def first_copies(source: str, columns: str = "*", where: str = "TRUE") -> str:
    """SQL selecting one row per stream record from ``source``: of its copies, the best-informed one.

    The one de-duplication rule of every reader (state, snapshots, merge, views, history, diff).
    A record can be stored more than once: a retried or re-split Lambda batch, the poller and Lambda
    both, a Kinesis producer's re-send. Copies share the event id. A Kinesis re-send differs in its
    (later) Kinesis sequence number: the earliest copy counts, so a re-send can never overtake a
    later change of the same item. A DynamoDB Streams copy can differ in its time, when capture
    lifted it to a predecessor's (``monotone_item_times``) in one batch and not in another: the
    latest time counts, since a batch that saw more of the item's earlier changes lifts more. So:
    latest time first, then earliest sequence. De-duplication happens before versions are ranked,
    never after. The state view ranks only each item's rows at its newest time, which this rule
    keeps exact: the copy kept for a record holding that time is a copy at that time.
    """
    return (f"SELECT {columns} FROM {source} WHERE {where} "
            f"QUALIFY row_number() OVER (PARTITION BY table_name, event_id "
            f"ORDER BY event_time DESC, length(sequence_number), sequence_number) = 1")


def monotone_item_times(rows: Sequence[ChangeRow]) -> list[ChangeRow]:
    """DynamoDB Streams rows of one batch, each item's times made non-decreasing in sequence order.

    DynamoDB Streams promises that one item's records appear in the order of its modifications and
    that sequence numbers rise within a shard, but its ApproximateCreationDateTime is only the
    second, rounded down, of a clock that can step back. Versions are ordered by time first
    (``VERSION_ORDER``, which bootstrap rows and Kinesis rows need), so a record stamped earlier
    than the item's previous one would lose to it. Lifting it to its predecessor's time keeps one
    order for every reader and puts the later change last, where the stream says it belongs. One
    batch (Lambda, the poller, recover) holds records of one shard, so sequence order is the
    stream's order there. Kinesis rows must not come here: Kinesis may reorder and duplicate, and
    its own time is the order.
    """
    latest: dict[tuple[str, str], int] = {}
    out = []
    for row in sorted(rows, key=lambda r: (len(r.sequence_number), r.sequence_number)):
        item = (row.table_name, row.item_key)
        previous = latest.get(item)
        if previous is not None and row.event_time_us < previous:
            row = replace(row, event_time_us=previous)
        latest[item] = row.event_time_us
        out.append(row)
    return out


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One decoded stream record. ``keys`` and the images are DynamoDB JSON as UTF-8 bytes, as orjson wrote
    them: they go into Arrow as they are, never decoded into Python text (their plain JSON is
    ``changelog.docs``)."""

    table_name: str
    event_id: str
    event_name: str
    event_time_us: int
    sequence_number: str
    shard_id: str | None
    item_key: str
    keys: bytes
    new_image: bytes | None
    old_image: bytes | None
    is_ttl_delete: bool
    size_bytes: int

    def order(self) -> tuple[int, int, str]:
        """Sort key: event time, then sequence number compared as a number."""
        return (self.event_time_us, len(self.sequence_number), self.sequence_number)


_NAMES = [f.name for f in fields(ChangeRow)]


def rows_to_table(rows: Sequence[ChangeRow]) -> pa.Table:
    """Arrow table in SCHEMA column order, rows sorted by (item_key, time, sequence, event id).

    Sorting by key clusters one item's history in a few row groups, which keeps point look-ups fast;
    the event id orders copies, so the same rows in any order give the same table.
    """
    ordered = sorted(rows, key=lambda row: (row.item_key, row.event_time_us, len(row.sequence_number),
                                            row.sequence_number, row.event_id))
    columns = {name: [getattr(row, name) for row in ordered] for name in _NAMES}
    columns["event_time"] = columns.pop("event_time_us")
    arrays = [_array(columns[field.name], field.name, field.type) for field in SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


_JSON_BYTES = frozenset(("keys", "new_image", "old_image"))


def _array(values: list[object], name: str, kind: pa.DataType) -> pa.Array:
    if name in _JSON_BYTES:
        # orjson's bytes go in as they are, never through Python text; orjson writes only valid
        # UTF-8, so the binary column is read as text without checking it again.
        return pa.array(values, pa.binary()).view(kind)
    return pa.array(values, type=kind)
