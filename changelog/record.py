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


# Sequence numbers as stored (changelog.codec.pad_sequence): DynamoDB Streams' have 21 to 40 digits
# and are zero-padded to 40; Kinesis's (56 digits today) are padded to at least 41; bootstrap rows
# carry 40 zeros (a number no stream gives). So the stored width tells a DynamoDB Streams row from
# the rest without a column of its own. Comparing (length, text) is numeric order for every width.
STREAM_SEQUENCE_WIDTH = 40
KINESIS_SEQUENCE_WIDTH = STREAM_SEQUENCE_WIDTH + 1
ZERO_SEQUENCE = "0" * STREAM_SEQUENCE_WIDTH
# A row of a DynamoDB stream: its sequence order is its item's order of changes.
STREAM_ROW = f"(length(sequence_number) = {STREAM_SEQUENCE_WIDTH} AND sequence_number <> '{ZERO_SEQUENCE}')"

# The order of an item's versions (docs/design.md, semantics 1), over the rows a reader reads (its
# changes up to T and its snapshot's rows): the time a row counts from (``counts_from``), then the
# sequence number as a number. Every SQL that orders versions uses these, on a ``counts_from`` column.
VERSION_ORDER = "counts_from, length(sequence_number), sequence_number"
LATEST_FIRST = "counts_from DESC, length(sequence_number) DESC, sequence_number DESC"
# How rows lie in a change file (``rows_to_table``): their stored time, then sequence.
STORED_ORDER = "event_time, length(sequence_number), sequence_number"


def counts_from(partition: str = "table_name, item_key") -> str:
    """SQL: the time a row counts from, for ordering every version of an item (``VERSION_ORDER``).

    DynamoDB Streams gives one item's records in the order of its changes, sequence numbers rising,
    but stamps them with ApproximateCreationDateTime: the second, rounded down, of a clock that can
    step back. So among an item's DynamoDB Streams rows sequence order is the order, and a row
    counts from the latest stamp among the item's stream rows at or before it in sequence order (a
    running max in sequence order). Capture already lifts times so within one batch
    (``monotone_item_times``); this rule carries it across batches, which capture cannot (a Lambda
    event does not name its shard). Kinesis rows (Kinesis may reorder and re-send) and bootstrap
    rows keep their own time. Every row then has one time, and (counts_from, sequence) is one total
    order of the item's versions, snapshot rows included (a snapshot row is its version, counting
    from the time it counted from when the snapshot was built).

    The rule can only use the rows a reader reads: for a moment T, the changes stamped at or before
    T. A row stamped at or before T whose predecessor was stamped after T, and captured in another
    batch, counts from its own stamp at T (the predecessor is not read): the later change shows
    before the earlier one is visible. No store of stamps can decide that moment; every moment at or
    after both stamps is exact.
    """
    return (f"CASE WHEN {STREAM_ROW} THEN max(CASE WHEN {STREAM_ROW} THEN event_time END) OVER ("
            f"PARTITION BY {partition} ORDER BY length(sequence_number), sequence_number "
            f"RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) ELSE event_time END")


def latest_counts_from(partition: str = "item_key", stream_time: str = "event_time") -> str:
    """SQL: ``counts_from`` where only each item's latest version is wanted (a state), without sorting.

    An item's stream rows count from non-decreasing times in sequence order, so the latest of them
    is the one with the greatest sequence number and counts from the item's latest stream time. Giving
    every stream row that time ranks them by sequence alone: the same winner at the same time, with
    no ordered window. ``stream_time`` is the column holding a row's stream time (a pre-aggregated
    maximum where the caller kept only some rows).
    """
    return (f"CASE WHEN {STREAM_ROW} THEN max(CASE WHEN {STREAM_ROW} THEN {stream_time} END) OVER ("
            f"PARTITION BY {partition}) ELSE event_time END")


def grouped_counts_from(stream_time: str = "stream_time") -> str:
    """SQL: ``latest_counts_from`` where ``stream_time`` already holds the item's latest stream time over
    every row being ranked (``latest_rows`` over all of them): no window is needed."""
    return f"CASE WHEN {STREAM_ROW} THEN {stream_time} ELSE event_time END"


def may_be_latest(partition: str = "item_key") -> str:
    """SQL condition (for QUALIFY): the row can hold its item's latest version (``latest_counts_from``).

    Of the stream rows, those with the item's greatest sequence number; of the others (Kinesis,
    bootstrap), those at their latest time. Copies of a record share its sequence number (stream)
    or its time (Kinesis), so de-duplicating these few rows is as exact as de-duplicating them all.
    """
    window = f"OVER (PARTITION BY {partition})"
    return (f"(CASE WHEN {STREAM_ROW} "
            f"THEN sequence_number = max(CASE WHEN {STREAM_ROW} THEN sequence_number END) {window} "
            f"ELSE event_time = max(CASE WHEN NOT {STREAM_ROW} THEN event_time END) {window} END)")


def latest_rows(rows: str) -> str:
    """SQL: the rows of the query ``rows`` that may hold their item's latest version (``may_be_latest``),
    each with its item's latest stream time as ``stream_time`` (``latest_counts_from``).

    The same rule as ``may_be_latest``, for a reader whose rows carry their images: each item's
    maxima come from a grouping of the light columns, and the rows are matched to them by equality
    (a hash join), so no window partitions the images. ``rows`` (with ``table_name``, ``item_key``,
    ``event_time`` and ``sequence_number``) is read twice, each time as a subquery of its own: a
    common table expression read more than once is materialised whole, images included.
    """
    latest = (f"(SELECT table_name, item_key, max(CASE WHEN {STREAM_ROW} THEN event_time END) AS stream_time, "
              f"max(CASE WHEN {STREAM_ROW} THEN sequence_number END) AS latest_sequence, "
              f"max(CASE WHEN NOT {STREAM_ROW} THEN event_time END) AS latest_time "
              f"FROM ({rows}) GROUP BY table_name, item_key)")
    return (f"SELECT r.*, m.stream_time FROM ({rows}) AS r JOIN {latest} AS m "
            f"ON r.table_name = m.table_name AND r.item_key = m.item_key "
            f"WHERE CASE WHEN {STREAM_ROW} THEN r.sequence_number = m.latest_sequence "
            f"ELSE r.event_time = m.latest_time END")


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
    never after. The state view de-duplicates only the rows that may hold an item's latest version
    (``may_be_latest``), which this rule keeps exact: every copy of such a record is among them.
    """
    return (f"SELECT {columns} FROM {source} WHERE {where} "
            f"QUALIFY row_number() OVER (PARTITION BY table_name, event_id "
            f"ORDER BY event_time DESC, length(sequence_number), sequence_number) = 1")


def monotone_item_times(rows: Sequence[ChangeRow]) -> list[ChangeRow]:
    """DynamoDB Streams rows of one batch, each item's times made non-decreasing in sequence order.

    The stored time is then the time the row counts from (``counts_from``) as far as this batch
    shows: readers apply the same rule across batches, but a reader at a moment between a row's own
    stamp and its predecessor's reads only the row, so lifting it here keeps every moment exact for
    changes captured together. One batch (Lambda, the poller, recover) holds records of one shard,
    so sequence order is the stream's order there. Kinesis rows must not come here: Kinesis may
    reorder and duplicate, and its own time is the order.
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
        """Storage order (``STORED_ORDER``): stored time, then sequence number compared as a number."""
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
