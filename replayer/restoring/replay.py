"""Replay: the table as it was at a moment, filtered, into a file or a DynamoDB table."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from changelog.attributes import summarize
from changelog.connection import bounded_connection
from changelog.consistent import read_consistently, table_prefixes
from changelog.docs import register_doc_function
from changelog.errors import UsageError, WriteFailed
from changelog.plain import columns_of, typed_query
from changelog.predicate import Predicate, lock_down, parse_predicate
from changelog.progress import Progress, query_progress, track_progress
from changelog.state import check_restorable, coverage, open_state, plan_state
from changelog.store import Store, remote_read_failure
from changelog.timefmt import format_time, to_micros
from replayer.restoring.export import (
    RESERVED,
    STDOUT,
    check_format,
    csv_query,
    write_avro,
    write_csv,
    write_jsonl,
    write_jsonl_to,
    write_parquet,
)
from replayer.restoring.outfile import check_output, output_file
from replayer.restoring.target import scan_keys
from replayer.restoring.writer import WriteReport, WriteSettings, write_images, write_requests

BATCH_ROWS = 10_000


@dataclass(frozen=True)
class Selection:
    """The items chosen for a replay: how many, and their DynamoDB-JSON size in bytes."""

    items: int
    image_bytes: int


@dataclass(frozen=True)
class Layout:
    """How ``open_items`` keeps the state for a reader other than replay: more columns, another row order.

    ``columns`` are (name, SQL over the state's columns and the columns before it), computed once
    per item as the state is written (each in its own projection, so a value named twice is computed
    once); ``kept`` are those the ``items`` view passes on (the state keeps only them and what
    ``items`` reads); ``order_by`` orders the rows instead of ``item_key``; ``prepare`` defines on the
    connection what that SQL needs (macros).

    ``keep`` runs the laid-out query and leaves its rows on the connection as ``state``, with the
    carried and kept columns; without it they go into a temporary table. A reader that writes every
    row out anyway (serve's index file) writes them there as they are computed and registers what it
    wrote, rather than copying them into DuckDB first and reading them back. It runs while the store
    is read (``read_consistently`` runs it again when a merge replaced a file meanwhile).
    """

    columns: tuple[tuple[str, str], ...]
    kept: tuple[str, ...]
    order_by: str
    prepare: Callable[[duckdb.DuckDBPyConnection], None] = lambda con: None
    # The state's own columns carried through the sort (a reader that needs only the image sorts less).
    carried: tuple[str, ...] = ("item_key", "keys", "image")
    keep: Callable[[duckdb.DuckDBPyConnection, str], None] | None = None


def laid_out(layout: Layout, source: str) -> str:
    """The query of the rows of ``source`` (a table or view) as ``layout`` lays them out."""
    for name, sql in layout.columns:
        source = f"(SELECT *, {sql} AS {name} FROM {source})"
    # Only what ``items`` reads is kept (the sort carries every column it keeps).
    return f"SELECT {', '.join((*layout.carried, *layout.kept))} FROM {source} ORDER BY {layout.order_by}"


def open_items(store: Store, table: str, at: datetime, *, where: str | Predicate | None = None,
               use_snapshots: bool = True, engine: str = "duckdb",
               layout: Layout | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with view ``items`` (item_key, keys, image, doc): the table at ``at``.

    Refuses a moment outside the table's coverage. ``where`` is a predicate over plain attribute
    names (``status = 'shipped' AND total > 100``; see changelog.predicate). Once the state is
    read the connection is locked: no file, network or extension access from then on.
    ``engine`` computes the state (DuckDB, or Spark by ``changelog.spec``); everything after it
    (the filter, counts, writing) is the same DuckDB code for both, so both give the same bytes.
    ``layout`` adds columns to ``items`` and orders it otherwise (``serving`` keys it so, in the same pass).
    """
    predicate = parse_predicate(where) if isinstance(where, str) else where
    if predicate is not None and layout is not None and layout.carried != Layout.carried:
        raise UsageError("a --where needs the state's keys, which this layout does not carry")
    at_us = to_micros(at)

    def materialise() -> duckdb.DuckDBPyConnection:
        con = bounded_connection()
        track_progress(con)
        register_doc_function(con)
        check_restorable(coverage(store, table, con), at, at_us)
        plan = plan_state(store, table, at_us, use_snapshots=use_snapshots)
        if engine == "spark":
            from changelog.spark import state_table

            con.execute("SET TimeZone = 'UTC'")
            con.register("state__spark", state_table(store, plan))
            con.execute("CREATE VIEW state__view AS SELECT * FROM state__spark")
        else:
            open_state(con, store, plan, name="state__view")
        # Computed once, kept in key order: counting, --where discovery and writing then scan rows
        # instead of recomputing the state each time, and reads keep that order without sorting again
        # (preserve_insertion_order). DuckDB spills the table to a temporary file if memory runs short.
        query = "SELECT * FROM state__view ORDER BY item_key"
        if layout is not None:
            layout.prepare(con)
            query = laid_out(layout, "state__view")
        with query_progress(con, f"reading {table} as of {format_time(at)}"):
            if layout is not None and layout.keep is not None:
                layout.keep(con, query)
            else:
                con.execute(f"CREATE TEMP TABLE state AS {query}")
        return con

    # Everything after this reads the materialised table, never the store's files again.
    con = read_consistently(store, table_prefixes(table), materialise)
    passed = "".join(f", {name}" for name in layout.kept) if layout is not None else ""
    if predicate is None:
        lock_down(con)
        carried = ", ".join(layout.carried) if layout is not None else "item_key, keys, image"
        con.execute(f"CREATE VIEW items AS SELECT {carried}, rewind_doc(image) AS doc{passed} FROM state")
        return con
    where_sql, extra = predicate.bind_columns(columns_of(summarize(con, "state", "image")))
    lock_down(con)
    try:
        con.execute(
            f"""CREATE VIEW items AS
                SELECT __rewind_key AS item_key, __rewind_keys AS keys, __rewind_image AS image,
                       rewind_doc(__rewind_image) AS doc{passed}
                FROM (SELECT item_key AS __rewind_key, keys AS __rewind_keys, image AS __rewind_image{extra}{passed}
                      FROM state)
                WHERE ({where_sql})"""
        )
        con.execute("SELECT count(*) FROM items").fetchall()
    except duckdb.Error as exc:
        raise remote_read_failure(exc) or UsageError(f"--where cannot be applied: {str(exc).splitlines()[0]}") from None
    return con


def select_counts(con: duckdb.DuckDBPyConnection) -> Selection:
    """How many items and bytes of DynamoDB JSON the ``items`` view holds."""
    (row,) = con.execute("SELECT count(*), coalesce(sum(strlen(image)), 0) FROM items").fetchall()
    return Selection(int(row[0]), int(row[1]))


def _batches(con: duckdb.DuckDBPyConnection, columns: str) -> Iterator[pa.RecordBatch]:
    yield from _read(con, f"SELECT {columns} FROM items")


def _read(con: duckdb.DuckDBPyConnection, query: str) -> Iterator[pa.RecordBatch]:
    # items is a filter over a table written in key order: no ORDER BY needed (see open_items).
    yield from con.sql(query).to_arrow_reader(BATCH_ROWS)


def _images(con: duckdb.DuckDBPyConnection, progress: Progress | None) -> Iterator[str]:
    for batch in _batches(con, "image"):
        images = batch.column(0).to_pylist()
        yield from images
        if progress is not None:
            progress.advance(len(images))


def check_file_target(path: str, overwrite: bool) -> None:
    """Refuse, before any work, an output file that could not be written (format, directory, existing)."""
    check_format(path)
    if path != STDOUT:
        check_output(path, overwrite)


def replay_to_file(con: duckdb.DuckDBPyConnection, path: str, total: int, *, overwrite: bool = False,
                   keys: Sequence[str] = ()) -> int:
    """Write the ``items`` view to ``path`` (.jsonl, .parquet or .avro); returns items written.

    The file appears only when complete (replayer.restoring.outfile); an existing one is replaced only with
    ``overwrite``. ``keys`` are the table's key attributes (``changelog.meta.key_names``): their typed
    columns come first in .parquet and .csv.
    """
    kind = check_format(path)
    progress = Progress("replay", total=total)
    if path == STDOUT:
        sys.stdout.flush()
        count = write_jsonl_to(sys.stdout.buffer, _counted(_batches(con, "image"), progress))
        sys.stdout.buffer.flush()
        progress.close()
        return count
    # Parquet and CSV: a first pass over the images finds each attribute's type (changelog.plain's rule).
    columns = []
    if kind in (".parquet", ".csv"):
        with query_progress(con, "finding the attributes' types"):
            columns = columns_of(summarize(con, "items", "image"), keys, RESERVED)
    with output_file(path, overwrite) as partial:
        if kind == ".jsonl":
            count = write_jsonl(partial, _counted(_batches(con, "image"), progress))
        elif kind == ".avro":
            count = write_avro(partial, _images(con, progress))
        elif kind == ".csv":
            count = write_csv(partial, _counted(_read(con, csv_query(columns, "items")), progress), columns,
                              len(keys))
        else:
            query = typed_query(columns, "items", "item_key, keys, image, doc")
            count = write_parquet(_counted(_read(con, query), progress), partial, columns, len(keys))
    progress.close()
    return count


def _counted(batches: Iterator[pa.RecordBatch], progress: Progress) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        yield batch
        progress.advance(batch.num_rows)


def _stored_images(con: duckdb.DuckDBPyConnection) -> Iterator[str]:
    # The images go out as they are stored: they are BatchWriteItem's wire format (replayer.restoring.wire).
    for batch in _batches(con, "image"):
        yield from batch.column(0).to_pylist()


def clear_table(client: Any, name: str, settings: WriteSettings) -> WriteReport:
    """Delete every item of a live table (for ``--clear-first``)."""
    requests = ({"DeleteRequest": {"Key": key}} for key in scan_keys(client, name))
    report, errors = write_requests(client, name, requests, settings=settings,
                                    progress=Progress("clearing", unit="items"))
    if report.failed:
        # Items are already gone: a write that failed part-way (exit 3), never a usage error.
        raise WriteFailed(f"could not clear {name!r}: {report.failed:,} deletes failed after {report.written:,} "
                          f"items were deleted ({errors[0] if errors else 'no error given'}); nothing was restored "
                          "yet; running it again with --clear-first goes on clearing")
    return report


def replay_to_table(con: duckdb.DuckDBPyConnection, client: Any, name: str, total: int,
                    settings: WriteSettings, progress: Progress | None = None) -> tuple[WriteReport, list[str]]:
    """BatchWriteItem every item of the ``items`` view into table ``name``.

    ``progress.done`` counts the items written so far, also after an interruption.
    """
    progress = progress or Progress("replay", total=total)
    return write_images(client, name, _stored_images(con), settings=settings, progress=progress)


# Items in the order of a digest of their key, not key order: ImportTable writes each data file in
# order, and key-sorted files would send one partition's items in a run (a rolling hot partition,
# which the DynamoDB import guide warns of). md5 is stable across DuckDB versions; the key breaks ties.
_EXPORT_ORDER = "ORDER BY md5(item_key), item_key"


def export_batches(con: duckdb.DuckDBPyConnection) -> Iterator[pa.RecordBatch]:
    """The ``items`` view's DynamoDB-JSON images (column ``image``) in export order, for ``ddb_export``."""
    yield from con.sql(f"SELECT image FROM items {_EXPORT_ORDER}").to_arrow_reader(BATCH_ROWS)


def export_image_lengths(con: duckdb.DuckDBPyConnection) -> Iterator[int]:
    """UTF-8 byte lengths of the images in export order (what a --dry-run needs to count data files)."""
    for batch in con.sql(f"SELECT strlen(image) FROM items {_EXPORT_ORDER}").to_arrow_reader(BATCH_ROWS):
        yield from batch.column(0).to_pylist()
