"""A table's state at T as an on-disk SQLite index: key-ordered rows of DynamoDB JSON, never all in memory.

One file per served table, one row per item: the partition key's bytes, the sort key's bytes (both
from ``keyorder``, so SQLite's BLOB order is DynamoDB's key order), the item's scan segment byte, and
its DynamoDB JSON. Rows arrive from DuckDB in Arrow batches and go to disk as they come; the unique
index over (partition, sort, segment) is built once after loading, and answers GetItem, Query ranges,
Scan pages and parallel Scan segments without reading an image it does not return.
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


def build(path: Path, keys: KeyNames, batches: Iterator[Any]) -> int:
    """Write the rows of ``batches`` (Arrow batches of columns ``keys``, ``image``) to a new index at ``path``.

    Returns how many items it holds.
    """
    con = sqlite3.connect(path)
    try:
        # A scratch file rebuilt at every start: no journal, no fsync.
        con.execute("PRAGMA journal_mode = OFF")
        con.execute("PRAGMA synchronous = OFF")
        con.execute("CREATE TABLE items (h BLOB NOT NULL, s BLOB NOT NULL, seg INTEGER NOT NULL, image TEXT NOT NULL)")
        count = 0
        for batch in batches:
            key_texts, images = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            con.executemany("INSERT INTO items VALUES (?, ?, ?, ?)",
                            [_row(keys, k, i) for k, i in zip(key_texts, images, strict=True)])
            count += len(images)
        con.execute("CREATE UNIQUE INDEX items_key ON items (h, s, seg)")
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

    def close(self) -> None:
        """Close every idle connection."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
