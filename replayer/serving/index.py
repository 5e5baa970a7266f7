"""A table's state at T as an on-disk SQLite index: key-ordered rows of DynamoDB JSON, never all in memory.

One file per served table, one row per item: the partition key's bytes, the sort key's bytes (both
from ``keyorder``, so SQLite's BLOB order is DynamoDB's key order), the item's scan segment byte, and
its DynamoDB JSON. Rows arrive from DuckDB in Arrow batches and go to disk as they come; the unique
index over (partition, sort, segment) is built once after loading, and answers GetItem, Query ranges,
Scan pages and parallel Scan segments without reading an image it does not return.

Each secondary index the table had at T is one more SQLite table of key bytes pointing at the item's
row: (index partition, index order, table partition, table sort), ordered as moto orders an index
(its sort key, ties broken by the table's keys). An item without every key attribute of the index is
not in it (a sparse index).
"""

from __future__ import annotations

import hashlib
import queue
import sqlite3
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from changelog.errors import DamagedStore
from replayer.serving.keyorder import NotAKey, encode_value

BATCH_ROWS = 10_000
FETCH_ROWS = 64


@dataclass(frozen=True)
class KeyNames:
    """The table's key attributes: partition key, and sort key when it has one."""

    hash_key: str
    range_key: str | None


@dataclass(frozen=True)
class IndexKeys:
    """One secondary index's keys as the index file orders it.

    ``order_key`` is what its rows are ordered by within a partition: the index's sort key, or, for an
    index without one, the table's sort key (partition key when it has none), as moto orders a Query
    there. ``types`` are the table's AttributeDefinitions (name, S/N/B), the index's keys and the table's among them.
    """

    name: str
    hash_key: str
    range_key: str | None
    order_key: str
    types: tuple[tuple[str, str], ...]

    def type_of(self, attribute: str) -> str:
        """The declared type of one of the index's key attributes."""
        return dict(self.types)[attribute]


@dataclass(frozen=True)
class Bound:
    """One end of a sort-key range: the encoded value and whether the value itself is inside."""

    value: bytes
    inclusive: bool


def segment_byte(hash_value: Any) -> int:
    """The byte a Scan segment is chosen by: the first byte of md5 of the partition key's text.

    moto's rule (DynamoDB's own is unpublished): every item of one partition key lands in one segment.
    """
    inner = next(iter(hash_value.values()))
    text = inner.decode("ascii") if isinstance(inner, bytes) else str(inner)
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).digest()[0]


def _row(keys: KeyNames, key_json: str, image: str) -> tuple[bytes, bytes, int, str]:
    key = orjson.loads(key_json)
    try:
        hash_value = key[keys.hash_key]
        range_value = key[keys.range_key] if keys.range_key else None
        return (encode_value(hash_value), b"" if range_value is None else encode_value(range_value),
                segment_byte(hash_value), image)
    except (KeyError, NotAKey) as exc:
        raise DamagedStore(f"an item's key {key_json[:80]} does not fit the table's key schema ({exc})") from None


def _index_row(index: IndexKeys, row: tuple[bytes, bytes, int, str], item_id: int,
               attrs: dict[str, Any]) -> tuple[bytes, bytes, bytes, bytes, int, int] | None:
    """The row of one item in a secondary index, or None when the item lacks one of its key attributes."""
    values = []
    for attribute in (index.hash_key, index.order_key):
        value = attrs.get(attribute)
        if value is None:
            return None
        kind = index.type_of(attribute)
        if not isinstance(value, dict) or set(value) != {kind}:
            # DynamoDB refuses such a write, so the stream cannot hold it: the store is not what was written.
            raise DamagedStore(f"an item's {attribute!r} is not of type {kind}, as index {index.name!r} "
                               "declares it")
        try:
            values.append(encode_value(value))
        except NotAKey as exc:
            raise DamagedStore(f"an item's {attribute!r} cannot be a key of index {index.name!r} ({exc})") from None
    return values[0], values[1], row[0], row[1], row[2], item_id


def build(path: Path, keys: KeyNames, batches: Iterator[Any], indexes: tuple[IndexKeys, ...] = ()) -> int:
    """Write the rows of ``batches`` (Arrow batches of columns ``keys``, ``image``) to a new index at ``path``.

    ``indexes`` are the secondary indexes to build beside the items (index ``n`` is SQL table ``ix<n>``).
    Returns how many items it holds.
    """
    con = sqlite3.connect(path)
    try:
        # A scratch file rebuilt at every start: no journal, no fsync.
        con.execute("PRAGMA journal_mode = OFF")
        con.execute("PRAGMA synchronous = OFF")
        con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, h BLOB NOT NULL, s BLOB NOT NULL, "
                    "seg INTEGER NOT NULL, image TEXT NOT NULL)")
        for number in range(len(indexes)):
            con.execute(f"CREATE TABLE ix{number} (ih BLOB NOT NULL, ir BLOB NOT NULL, h BLOB NOT NULL, "
                        "s BLOB NOT NULL, seg INTEGER NOT NULL, item INTEGER NOT NULL)")
        count = 0
        for batch in batches:
            key_texts, images = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            rows = [_row(keys, k, i) for k, i in zip(key_texts, images, strict=True)]
            con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)",
                            [(count + n, *row) for n, row in enumerate(rows)])
            if indexes:
                parsed = [orjson.loads(image) for image in images]
                for number, index in enumerate(indexes):
                    index_rows = (_index_row(index, row, count + n, attrs)
                                  for n, (row, attrs) in enumerate(zip(rows, parsed, strict=True)))
                    con.executemany(f"INSERT INTO ix{number} VALUES (?, ?, ?, ?, ?, ?)",
                                    [r for r in index_rows if r is not None])
            count += len(images)
        con.execute("CREATE UNIQUE INDEX items_key ON items (h, s, seg)")
        for number, index in enumerate(indexes):
            con.execute(f"CREATE INDEX ix{number}_order ON ix{number} (ih, ir, h, s)")
            if index.range_key is None:
                # A Scan of an index without a sort key goes by the table's keys within a partition.
                con.execute(f"CREATE INDEX ix{number}_scan ON ix{number} (ih, h, s)")
        con.execute("ANALYZE")
        con.commit()
    finally:
        con.close()
    return count


class Index:
    """Read access to one built index, safe from many threads (each request borrows a connection)."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.count = count
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            con = self._idle.get_nowait()
        except queue.Empty:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        try:
            yield con
        finally:
            self._idle.put(con)

    def _rows(self, sql: str, params: tuple[Any, ...]) -> Generator[str, None, None]:
        # Fetched a few rows at a time: a page stops at its Limit or 1 MB, long before the range ends.
        with self._connection() as con:
            cursor = con.execute(sql, params)
            try:
                while rows := cursor.fetchmany(FETCH_ROWS):
                    for (image,) in rows:
                        yield image
            finally:
                cursor.close()

    def get(self, hash_key: bytes, range_key: bytes) -> str | None:
        """The image of one item, or None."""
        with self._connection() as con:
            row = con.execute("SELECT image FROM items WHERE h = ? AND s = ?", (hash_key, range_key)).fetchone()
        return None if row is None else str(row[0])

    def partition(self, hash_key: bytes, low: Bound | None, high: Bound | None, *,
                  forward: bool) -> Generator[str, None, None]:
        """Images of one partition whose sort key lies within [low, high], in sort-key order (or reversed)."""
        where, params = ["h = ?"], [hash_key]
        if low is not None:
            where.append("s >= ?" if low.inclusive else "s > ?")
            params.append(low.value)
        if high is not None:
            where.append("s <= ?" if high.inclusive else "s < ?")
            params.append(high.value)
        order = "ASC" if forward else "DESC"
        yield from self._rows(f"SELECT image FROM items WHERE {' AND '.join(where)} ORDER BY s {order}",
                              tuple(params))

    def scan(self, after: tuple[bytes, bytes] | None, segment: tuple[int, int] | None) -> Generator[str, None, None]:
        """Images in (partition, sort) order after the key ``after``; only segment ``s`` of ``n`` when given."""
        where: list[str] = ["1"]
        params: list[Any] = []
        if after is not None:
            where.append("(h, s) > (?, ?)")
            params.extend(after)
        if segment is not None:
            where.append("seg % ? = ?")
            params.extend((segment[1], segment[0]))
        yield from self._rows(f"SELECT image FROM items WHERE {' AND '.join(where)} ORDER BY h, s", tuple(params))

    def index_partition(self, number: int, partition: bytes, low: Bound | None, high: Bound | None,
                        after: tuple[bytes, bytes, bytes] | None, *, forward: bool) -> Generator[str, None, None]:
        """Images of one partition of index ``number`` in (order key, table keys) order (or reversed).

        ``low``/``high`` bound the order key; ``after`` is the (order key, partition, sort) a page ended at.
        """
        where, params = ["x.ih = ?"], [partition]
        if low is not None:
            where.append("x.ir >= ?" if low.inclusive else "x.ir > ?")
            params.append(low.value)
        if high is not None:
            where.append("x.ir <= ?" if high.inclusive else "x.ir < ?")
            params.append(high.value)
        if after is not None:
            where.append("(x.ir, x.h, x.s) > (?, ?, ?)" if forward else "(x.ir, x.h, x.s) < (?, ?, ?)")
            params.extend(after)
        order = "ASC" if forward else "DESC"
        yield from self._rows(f"SELECT i.image FROM ix{number} x JOIN items i ON i.id = x.item "
                              f"WHERE {' AND '.join(where)} ORDER BY x.ir {order}, x.h {order}, x.s {order}",
                              tuple(params))

    def index_scan(self, number: int, by_order_key: bool, after: tuple[bytes, ...] | None,
                   segment: tuple[int, int] | None) -> Generator[str, None, None]:
        """Images of index ``number`` in (partition, [order key], table keys) order after the key ``after``."""
        columns = ("x.ih", "x.ir", "x.h", "x.s") if by_order_key else ("x.ih", "x.h", "x.s")
        where: list[str] = ["1"]
        params: list[Any] = []
        if after is not None:
            where.append(f"({', '.join(columns)}) > ({', '.join('?' * len(columns))})")
            params.extend(after)
        if segment is not None:
            where.append("x.seg % ? = ?")
            params.extend((segment[1], segment[0]))
        yield from self._rows(f"SELECT i.image FROM ix{number} x JOIN items i ON i.id = x.item "
                              f"WHERE {' AND '.join(where)} ORDER BY {', '.join(columns)}", tuple(params))

    def close(self) -> None:
        """Close every idle connection."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
