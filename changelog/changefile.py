"""Writing change rows as immutable, deterministically named zstd Parquet files."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from changelog.footer import DEDUPLICATED, LIFTED
from changelog.formats import FOOTER_KEY, FORMAT_VERSION
from changelog.layout import HOUR_US, change_file_path, hour_partition
from changelog.ledger import record_published
from changelog.record import ChangeRow, rows_to_table
from changelog.store import Store

ROW_GROUP_ROWS = 64_000
# What the compactor writes (merged change files, snapshot parts) is written once, offline, and read
# for years: zstd level 9 makes it 14% smaller than the default level for 4x the compression CPU.
COMPACTED_LEVEL = 9
# Dictionary pages pay only for columns that repeat; min/max statistics only for columns readers prune
# on. Trying a dictionary on every JSON image, and min/max over it, cost time and save nothing.
_REPEATING = frozenset(("table_name", "event_name", "shard_id", "kind"))
_JSON_TEXT = frozenset(("keys", "new_image", "old_image", "image"))


def parquet_bytes(table: pa.Table, *, level: int | None = None) -> bytes:
    """A zstd Parquet file of ``table`` as bytes (statistics on, so readers can prune row groups).

    Deterministic: the same table gives the same bytes (file names carry their digest). Every page
    carries a CRC32 (``write_page_checksum``) that pyarrow verifies on read. ``level`` is zstd's
    (default: the library's, cheap enough for the capture path). The footer declares the store
    format (``changelog.formats``).
    """
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), FOOTER_KEY: str(FORMAT_VERSION).encode()})
    sink = pa.BufferOutputStream()
    names = table.column_names
    pq.write_table(table, sink, compression="zstd", compression_level=level, row_group_size=ROW_GROUP_ROWS,
                   use_dictionary=[name for name in names if name in _REPEATING],
                   write_statistics=[name for name in names if name not in _JSON_TEXT],
                   write_page_checksum=True)
    return bytes(sink.getvalue().to_pybytes())


def publish_change_file(store: Store, table_name: str, partition: str, first_seq: str, last_seq: str,
                        rows: pa.Table, *, deduplicated: bool = False, level: int | None = None,
                        lifted: Iterable[str] | None = None) -> str:
    """Write one change file named by its sequence range and the digest of its bytes; returns its path.

    Every writer of change files (capture, poller, merge, bench) goes through here, so names,
    checksums and the ledger record of each file (``changelog.ledger``) are made in one place.
    ``lifted``: the event ids of its rows stored in a later hour than their own stamp's
    (``changelog.footer.LIFTED``); None keeps what ``rows`` already says.
    """
    metadata = dict(rows.schema.metadata or {})
    if deduplicated:  # every record once in its hour (changelog.footer)
        metadata[DEDUPLICATED] = b"1"
    if lifted is not None:
        metadata[LIFTED] = json.dumps(sorted(set(lifted)), separators=(",", ":")).encode()
    if metadata != dict(rows.schema.metadata or {}):
        rows = rows.replace_schema_metadata(metadata)
    data = parquet_bytes(rows, level=level)
    path = change_file_path(table_name, partition, first_seq, last_seq, data)
    store.write(path, data)
    record_published(store, path, len(data))  # after the bytes: a record never names a file not written
    return path


def write_change_files(store: Store, rows: Sequence[ChangeRow], lifted: frozenset[str] = frozenset()) -> list[str]:
    """Write rows as one file per (table, hour partition); returns the paths written.

    A batch that spans an hour boundary is split, so the ``dt``/``hour`` partitions bound the times
    inside them exactly and readers may prune on both sides. Names derive from the rows alone,
    so retrying the same batch rewrites the same objects. A failed write raises (StoreError).
    ``lifted``: the event ids of the rows stored in a later hour than their own stamp's; each file's
    footer lists those it holds (none, for rows never lifted).
    """
    groups: dict[tuple[str, int], list[ChangeRow]] = defaultdict(list)
    for row in rows:
        groups[(row.table_name, row.event_time_us // HOUR_US)].append(row)
    written = []
    for (table_name, hour), group in sorted(groups.items()):
        partition = hour_partition(hour * HOUR_US)
        versions = [row.order() for row in group]
        # rows_to_table puts the rows in one fixed order: the same rows, however a retry delivers
        # them, give the same bytes.
        written.append(publish_change_file(store, table_name, partition, min(versions)[2], max(versions)[2],
                                           rows_to_table(group),
                                           lifted=[row.event_id for row in group if row.event_id in lifted]))
    return written
