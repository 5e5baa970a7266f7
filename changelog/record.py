"""The change record: one row per stream record, and its Parquet schema (the public file format).

Format 2 (``changelog.footer.FORMAT_VERSION``): format 1 files also held ``new_doc``/``old_doc``,
the images as plain JSON. Those are a pure function of the images and were a third of the bytes;
readers now derive them (``changelog.docs``) and read format 1 files through this schema, which
leaves those columns out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

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
VERSION_ORDER = "event_time, length(sequence_number), sequence_number"
LATEST_FIRST = "event_time DESC, length(sequence_number) DESC, sequence_number DESC"


def first_copies(source: str, columns: str = "*", where: str = "TRUE") -> str:
    """SQL selecting one row per stream record from ``source``: of its copies, the earliest version.

    The one de-duplication rule of every reader (state, snapshots, merge, views, history, diff).
    A record can be stored more than once: a retried or re-split Lambda batch, the poller and Lambda
    both, a Kinesis producer's re-send. Copies share the event id and event time; only a Kinesis
    re-send differs, in its (later) Kinesis sequence number. Keeping the earliest copy puts the
    record where it first appeared, so a re-send can never overtake a later change of the same item.
    De-duplication happens before versions are ranked, never after. Copies share their event time
    and so their hour partition: a reader that reads partitions whole sees every copy.
    """
    return (f"SELECT {columns} FROM {source} WHERE {where} "
            f"QUALIFY row_number() OVER (PARTITION BY table_name, event_id ORDER BY {VERSION_ORDER}) = 1")


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
