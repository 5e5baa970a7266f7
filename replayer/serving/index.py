"""A table's state at T as sorted, memory-mapped Arrow files: key-ordered rows, never all in Python memory.

Per served table, one directory. ``items.arrow`` holds one row per item: the partition key's bytes,
the sort key's bytes (both ``keyorder``'s encoding, so byte order is DynamoDB's key order) and its
DynamoDB JSON, sorted by (partition, sort). DuckDB computes every column and sorts
(``keyorder.sql_key``: the key rule in SQL; its sort spills to disk, so memory stays bounded); Python
only hands its Arrow batches to the file as the state is computed (``keep_items``: the state is not
copied into DuckDB first, and the secondary indexes are built from the file itself). The server maps
the file (zero copy) and finds a key by binary search: GetItem, Query ranges and Scan pages read no
image they do not return. A parallel Scan's segment is not stored: every start-up would pay for it,
and only parallel Scans ask (``moment`` picks a segment's items from the images it parses anyway).

Each secondary index the table had at T is one more sorted file, ``ix<n>.arrow``, of key bytes pointing
at the item's row: (index partition, index order, table partition, table sort, row), ordered
as moto orders an index (its sort key, ties broken by the table's keys); an index without a sort key
also has ``ix<n>-scan.arrow``, ordered (index partition, table partition, table sort) as a Scan of it
goes. An item without every key attribute of the index is not in it (a sparse index).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from changelog.errors import DamagedStore
from replayer.restoring.outfile import write_behind
from replayer.restoring.replay import Layout
from replayer.serving.keyorder import define_sql, sql_bytes, sql_text

BATCH_ROWS = 65_536
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


def _quoted(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _pointer(name: str) -> str:
    """The JSON pointer of a top-level member (``~`` and ``/`` escaped)."""
    return "/" + name.replace("~", "~0").replace("/", "~1")


def _attribute(document: str, name: str) -> str:
    """SQL of one top-level attribute of a DynamoDB JSON document."""
    return f"json_extract({document}, {_quoted(_pointer(name))})"


def _document(names: tuple[tuple[str, str], ...], order: tuple[int, ...], texts: str) -> str:
    """SQL of the compact JSON text of a key document with members ``order`` of ``names`` (name, type) holding
    ``texts`` (a SQL list, in the order of ``names``)."""
    members = [f"{_quoted(orjson.dumps(names[n][0]).decode() + ':{' + orjson.dumps(names[n][1]).decode() + ':')}, "
               f"to_json({texts}[{n + 1}]), '}}'" for n in order]
    return "concat('{', " + ", ',', ".join(members) + ", '}')"


def layout(keys: KeyNames, kinds: dict[str, str], items_file: Path) -> Layout:
    """The state as the index is built from it: columns ``image``, ``rewind_h``, ``rewind_s`` and
    ``rewind_keys`` (the keys document of a refused key, else NULL), rows in (h, s) order, kept as
    the index's items file ``items_file`` as they are computed (``keep_items``).

    An item's key text is read from its ``keys`` document with one parse when the document is the
    plain text the consumer writes (the text rebuilt from what was read equals it: then it holds
    exactly those members, of those types); any other document (spaces, escapes, a damaged one) is
    read by ``keyorder.sql_text``, which refuses what is not one member of the declared type. A key
    that is refused is NULL, sorted last, where ``build`` finds it.
    """
    names = ((keys.hash_key, kinds[keys.hash_key]),
             *([(keys.range_key, kinds[keys.range_key])] if keys.range_key else []))
    pointers = "[" + ", ".join(_quoted(_pointer(name) + "/" + kind) for name, kind in names) + "]"
    orders = sorted({tuple(range(len(names))), tuple(reversed(range(len(names))))})
    documents = " OR ".join(f"keys = {_document(names, order, 'rewind_read')}" for order in orders)
    careful = "[" + ", ".join(sql_text(_attribute("keys", name), kind) for name, kind in names) + "]"
    columns = (("rewind_read", f"json_extract_string(keys, {pointers})"),
               ("rewind_text", f"CASE WHEN {documents} THEN rewind_read ELSE {careful} END"),
               ("rewind_ht", "rewind_text[1]"),
               ("rewind_st", "rewind_text[2]" if keys.range_key else "NULL"),
               ("rewind_h", sql_bytes("rewind_ht", names[0][1])),
               ("rewind_s", sql_bytes("rewind_st", names[1][1]) if keys.range_key else "''::BLOB"),
               # The keys document is kept only where it is refused (to name it): the sort carries no other copy.
               ("rewind_keys", "CASE WHEN rewind_h IS NULL OR rewind_s IS NULL THEN keys END"))
    return Layout(columns, ("rewind_h", "rewind_s", "rewind_keys"),
                  "rewind_h NULLS LAST, rewind_s NULLS LAST", define_sql, carried=("image",),
                  keep=lambda con, query: keep_items(items_file, con, query))


def keep_items(path: Path, con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Write the rows of ``query`` (the state laid out by ``layout``) as the items file ``path``, then
    register the file, memory-mapped, as the connection's ``state``: the secondary indexes are built
    from it without a copy of the images in DuckDB.

    A key that is not of its declared type, or two items of one key, is a damaged store: DynamoDB
    refuses such writes, so a stream cannot hold them.
    """
    keyed = f"SELECT rewind_h AS h, rewind_s AS s, image, rewind_keys AS keys FROM ({query})"
    try:
        # Rows come in (h, s) order, as the state is computed: no sort here.
        _write(path, con.sql(keyed), ordered=("h", "s"), dropped=("keys",))
    except _NotAKey as refused:
        keys = refused.batch.filter(pc.or_(pc.is_null(refused.batch.column("h")),
                                           pc.is_null(refused.batch.column("s")))).column("keys")
        shown = f" {str(keys[0].as_py())[:80]}" if len(keys) else ""
        raise DamagedStore(f"an item's key{shown} does not fit the table's key schema") from None
    con.register("rewind_items_file", pa.ipc.open_file(pa.memory_map(str(path))).read_all())
    # Every key was checked as it was written: none is refused.
    con.execute("CREATE TEMP VIEW state AS SELECT image, h AS rewind_h, s AS rewind_s, "
                "NULL::VARCHAR AS rewind_keys FROM rewind_items_file")


def build(path: Path, con: duckdb.DuckDBPyConnection, indexes: tuple[IndexKeys, ...] = ()) -> int:
    """The secondary indexes of the index in the directory ``path``, whose items file the ``items`` view
    of ``con`` (opened with ``layout``) was kept as.

    ``indexes`` are the secondary indexes to build (index ``n`` is file ``ix<n>``). Returns how many
    items the index holds.
    """
    keyed = "(SELECT rewind_h AS h, rewind_s AS s, image FROM items)"
    for number, index in enumerate(indexes):
        _build_index(path, con, keyed, number, index)
    (row,) = con.execute("SELECT count(*) FROM state").fetchall()
    return int(row[0])


def _build_index(path: Path, con: duckdb.DuckDBPyConnection, keyed: str, number: int, index: IndexKeys) -> None:
    """The files of secondary index ``number``: its rows, sorted as its Query and its Scan read them."""
    kinds = {"ih": index.type_of(index.hash_key), "ir": index.type_of(index.order_key)}
    # Rows as the items file numbers them: (h, s) is unique, so both sorts give one order.
    numbered = (f"(SELECT h, s, row_number() OVER (ORDER BY h, s) - 1 AS row, "
                f"{_attribute('image', index.hash_key)} AS ih_json, {_attribute('image', index.order_key)} AS ir_json "
                f"FROM {keyed})")
    present = " AND ".join(f"{name}_json IS NOT NULL AND json_type({name}_json) <> 'NULL'" for name in kinds)
    texts = (f"(SELECT *, {sql_text('ih_json', kinds['ih'])} AS ih_text, {sql_text('ir_json', kinds['ir'])} AS ir_text "
             f"FROM {numbered} WHERE {present})")
    rows = (f"(SELECT {sql_bytes('ih_text', kinds['ih'])} AS ih, {sql_bytes('ir_text', kinds['ir'])} AS ir, "
            f"h, s, row FROM {texts})")
    # DynamoDB refuses a write whose index key is of another type, so the stream cannot hold one.
    if con.execute(f"SELECT 1 FROM {rows} WHERE ih IS NULL OR ir IS NULL LIMIT 1").fetchone() is not None:
        raise DamagedStore(f"an item's key of index {index.name!r} is not of the type the index declares")
    con.execute(f"CREATE OR REPLACE TEMP TABLE rewind_index AS SELECT * FROM {rows}")
    try:
        _write(path / f"ix{number}.arrow", con.sql("SELECT * FROM rewind_index ORDER BY ih, ir, h, s"),
               ordered=("ih", "ir", "h", "s"))
        if index.range_key is None:
            # A Scan of an index without a sort key goes by the table's keys within a partition.
            _write(path / f"ix{number}-scan.arrow", con.sql("SELECT * FROM rewind_index ORDER BY ih, h, s"),
                   ordered=("ih", "h", "s"))
    finally:
        con.execute("DROP TABLE rewind_index")


def _write(path: Path, relation: duckdb.DuckDBPyRelation, ordered: tuple[str, ...] = (),
           dropped: tuple[str, ...] = ()) -> int:
    """Stream ``relation``, less its columns ``dropped``, into an Arrow IPC file at ``path``.

    With ``ordered``: its rows must come in strictly increasing order of those columns (a NULL among
    them is ``_NotAKey``; two rows of one key a damaged store), so that a binary search finds them.
    """
    count = 0

    def checked(reader: pa.RecordBatchReader, written: list[str]) -> Iterator[pa.RecordBatch]:
        nonlocal count
        last: tuple[bytes, ...] | None = None
        for batch in reader:
            if not batch.num_rows:
                continue
            if ordered:
                last = _check_order(batch, ordered, last)
            count += batch.num_rows
            yield batch.select(written)

    # Closed on a refusal too: the connection answers no other query while a result is open.
    with relation.to_arrow_reader(BATCH_ROWS) as reader:
        written = [name for name in reader.schema.names if name not in dropped]
        schema = pa.schema([reader.schema.field(name) for name in written])
        with pa.ipc.new_file(str(path), schema) as writer:
            write_behind(writer.write_batch, checked(reader, written))
    return count


class _NotAKey(Exception):
    """A row of the items file without key bytes: its key is not of the table's key types."""

    def __init__(self, batch: pa.RecordBatch) -> None:
        super().__init__("a key without key bytes")
        self.batch = batch


def _check_order(batch: pa.RecordBatch, names: tuple[str, ...], before: tuple[bytes, ...] | None) -> tuple[bytes, ...]:
    """Refuse a batch not strictly increasing in ``names`` (from ``before``, the previous batch's last key)."""
    columns = [batch.column(name) for name in names]
    if any(column.null_count for column in columns):
        raise _NotAKey(batch)
    first = tuple(column[0].as_py() for column in columns)
    if before is not None and first <= before:
        _disorder(first == before)
    # Row i+1 follows row i when greater in the first column, or equal there and greater in the next...
    follows, equal = None, None
    for column in columns:
        later, earlier = column.slice(1), column.slice(0, len(column) - 1)
        greater = pc.greater(later, earlier)
        follows = greater if follows is None else pc.or_(follows, pc.and_(equal, greater))
        same = pc.equal(later, earlier)
        equal = same if equal is None else pc.and_(equal, same)
    if follows is not None and len(follows) and not pc.all(follows).as_py():
        _disorder(bool(pc.any(equal).as_py()))
    return tuple(column[len(column) - 1].as_py() for column in columns)


def _disorder(duplicate: bool) -> None:
    if duplicate:
        raise DamagedStore("two items of the store have one key (numbers equal but written differently?)")
    raise AssertionError("the state did not come in key order")


class _Sorted:
    """One memory-mapped Arrow file sorted by its first columns: binary search and reads by position."""

    def __init__(self, path: Path, key_columns: tuple[str, ...]) -> None:
        self._source = pa.memory_map(str(path))
        reader = pa.ipc.open_file(self._source)
        self.batches = [reader.get_batch(n) for n in range(reader.num_record_batches)]
        self.starts = [0]
        for batch in self.batches:
            self.starts.append(self.starts[-1] + batch.num_rows)
        self.count = self.starts[-1]
        self.key_columns = key_columns
        self._columns = [[_Binary(batch.column(name)) for name in key_columns] for batch in self.batches]

    def key(self, position: int, width: int) -> tuple[bytes, ...]:
        batch, row = self.locate(position)
        return tuple(column[row] for column in self._columns[batch][:width])

    def locate(self, position: int) -> tuple[int, int]:
        """(batch, row in it) of a position in the file."""
        low, high = 0, len(self.batches) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if self.starts[middle] <= position:
                low = middle
            else:
                high = middle - 1
        return low, position - self.starts[low]

    def bound(self, target: tuple[bytes, ...], *, after: bool) -> int:
        """The first position whose key (its first ``len(target)`` columns) is >= ``target``, or > it with ``after``."""
        width = len(target)
        low, high = 0, self.count
        while low < high:
            middle = (low + high) // 2
            key = self.key(middle, width)
            if key < target or (after and key == target):
                low = middle + 1
            else:
                high = middle
        return low

    def column(self, name: str, start: int, stop: int) -> Iterator[list[Any]]:
        """Values of column ``name`` from ``start`` to ``stop`` (forward), a few at a time."""
        position = start
        while position < stop:
            batch, row = self.locate(position)
            take = min(FETCH_ROWS, stop - position, self.batches[batch].num_rows - row)
            yield self.batches[batch].column(name).slice(row, take).to_pylist()
            position += take

    def backward(self, name: str, start: int, stop: int) -> Iterator[list[Any]]:
        """Values of column ``name`` from ``stop - 1`` down to ``start``, a few at a time."""
        position = stop
        while position > start:
            batch, row = self.locate(position - 1)
            take = min(FETCH_ROWS, position - start, row + 1)
            values = self.batches[batch].column(name).slice(row + 1 - take, take).to_pylist()
            yield values[::-1]
            position -= take

    def value(self, name: str, position: int) -> Any:
        batch, row = self.locate(position)
        return self.batches[batch].column(name)[row].as_py()

    def close(self) -> None:
        self.batches, self._columns = [], []
        self._source.close()


class _Binary:
    """Items of an Arrow binary column as bytes, read straight from its buffers (no scalar per probe)."""

    def __init__(self, array: pa.Array) -> None:
        _, offsets, data = array.buffers()
        wide = pa.types.is_large_binary(array.type)
        self._offsets = memoryview(offsets).cast("q" if wide else "i")[array.offset:]
        self._data = memoryview(data) if data is not None else memoryview(b"")

    def __getitem__(self, row: int) -> bytes:
        return bytes(self._data[self._offsets[row]:self._offsets[row + 1]])


class Index:
    """Read access to one built index; safe from many threads (the files are only read)."""

    def __init__(self, path: Path, count: int, indexes: int = 0, unsorted: tuple[int, ...] = ()) -> None:
        """``indexes`` secondary indexes were built; those in ``unsorted`` have no sort key (a scan file too)."""
        self.path = path
        self.count = count
        self._items = _Sorted(path / "items.arrow", ("h", "s"))
        self._indexes = [_Sorted(path / f"ix{n}.arrow", ("ih", "ir", "h", "s")) for n in range(indexes)]
        self._scans = {n: _Sorted(path / f"ix{n}-scan.arrow", ("ih", "h", "s")) for n in unsorted}

    def _images(self, start: int, stop: int, *, forward: bool = True) -> Generator[str, None, None]:
        chunks = (self._items.column("image", start, stop) if forward
                  else self._items.backward("image", start, stop))
        for chunk in chunks:
            yield from chunk

    def _pointed(self, sorted_file: _Sorted, start: int, stop: int, *,
                 forward: bool = True) -> Generator[str, None, None]:
        """Images of the items the rows ``start:stop`` of an index file point at, in its order."""
        rows = sorted_file.column("row", start, stop) if forward else sorted_file.backward("row", start, stop)
        for chunk in rows:
            for row in chunk:
                yield self._items.value("image", row)

    def get(self, hash_key: bytes, range_key: bytes) -> str | None:
        """The image of one item, or None."""
        position = self._items.bound((hash_key, range_key), after=False)
        if position < self.count and self._items.key(position, 2) == (hash_key, range_key):
            return str(self._items.value("image", position))
        return None

    def partition(self, hash_key: bytes, low: Bound | None, high: Bound | None, *,
                  forward: bool) -> Generator[str, None, None]:
        """Images of one partition whose sort key lies within [low, high], in sort-key order (or reversed)."""
        items = self._items
        start = (items.bound((hash_key,), after=False) if low is None
                 else items.bound((hash_key, low.value), after=not low.inclusive))
        stop = (items.bound((hash_key,), after=True) if high is None
                else items.bound((hash_key, high.value), after=high.inclusive))
        yield from self._images(start, max(start, stop), forward=forward)

    def scan(self, after: tuple[bytes, bytes] | None) -> Generator[str, None, None]:
        """Images in (partition, sort) order after the key ``after``."""
        start = 0 if after is None else self._items.bound(after, after=True)
        yield from self._images(start, self.count)

    def index_partition(self, number: int, partition: bytes, low: Bound | None, high: Bound | None,
                        after: tuple[bytes, bytes, bytes] | None, *, forward: bool) -> Generator[str, None, None]:
        """Images of one partition of index ``number`` in (order key, table keys) order (or reversed).

        ``low``/``high`` bound the order key; ``after`` is the (order key, partition, sort) a page ended at.
        """
        rows = self._indexes[number]
        start = (rows.bound((partition,), after=False) if low is None
                 else rows.bound((partition, low.value), after=not low.inclusive))
        stop = (rows.bound((partition,), after=True) if high is None
                else rows.bound((partition, high.value), after=high.inclusive))
        if after is not None:
            if forward:
                start = max(start, rows.bound((partition, *after), after=True))
            else:
                stop = min(stop, rows.bound((partition, *after), after=False))
        yield from self._pointed(rows, start, max(start, stop), forward=forward)

    def index_scan(self, number: int, by_order_key: bool,
                   after: tuple[bytes, ...] | None) -> Generator[str, None, None]:
        """Images of index ``number`` in (partition, [order key], table keys) order after the key ``after``."""
        rows = self._indexes[number] if by_order_key else self._scans[number]
        start = 0 if after is None else rows.bound(tuple(after), after=True)
        yield from self._pointed(rows, start, rows.count)

    def close(self) -> None:
        """Release the mapped files."""
        for sorted_file in (self._items, *self._indexes, *self._scans.values()):
            sorted_file.close()
