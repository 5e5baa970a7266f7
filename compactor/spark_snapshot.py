"""A compaction snapshot computed by a Spark cluster: the ``spark-submit`` entry point for tables that outgrow a Lambda.

Runs unchanged under ``spark-submit`` (EMR Serverless, which the stack starts when a table's stored
size passes ``SparkCompactionThresholdBytes``) or ``python -m compactor.spark_snapshot``. The driver
refuses a moment outside coverage and plans the files exactly as the Lambda does
(``state.plan_state``); the executors read them and run the spec's state SQL (``changelog.spec``,
tombstones kept), the rows are sorted by key and numbered, and each executor writes the parts its
rows fall in through the Lambda's own part writer (``snapshots.write_part``): the same rows in the
same parts of ``PART_ROWS`` rows, so the same bytes. The manifest (``snapshots.snapshot_manifest``)
is left as a draft beside the parts; the compactor publishes it (checksums checked, hash chain) by
the Lambda's own step, or this job does with ``--publish``.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from changelog.argtypes import moment_arg, table_arg
from changelog.errors import ConflictError, RewindError
from changelog.layout import snapshot_dir
from changelog.snapshot import MANIFEST, SNAPSHOT_SCHEMA, Manifest, PartSum
from changelog.spark import spark_errors, state_frame
from changelog.spec import STATE_COLUMNS
from changelog.state import check_restorable, coverage, plan_state
from changelog.store import open_store
from changelog.timefmt import format_time, from_micros, to_micros
from compactor.snapshots import (
    PART_ROWS,
    WRITER_ID,
    WrittenParts,
    part_name,
    publish_draft,
    snapshot_manifest,
    write_draft,
    write_part,
)


def _writer_arg(text: str) -> str:
    if not WRITER_ID.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not 12 lowercase hex digits")
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of rows above 0")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spark_snapshot.py", description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="s3://bucket/prefix or a local directory")
    parser.add_argument("--table", required=True, type=table_arg, help="source table name")
    parser.add_argument("--at", required=True, type=moment_arg, metavar="TIME",
                        help="the snapshot's moment (ISO 8601 or epoch seconds), inside coverage")
    parser.add_argument("--writer", type=_writer_arg, help="the writer id naming the parts (12 hex digits)")
    parser.add_argument("--part-rows", type=_positive, default=PART_ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--publish", action="store_true",
                        help="publish the manifest here instead of leaving the draft for the compactor")
    return parser


def run(argv: list[str] | None = None) -> Manifest:
    """Compute and write the parts and the draft manifest (published with ``--publish``). Raises RewindError."""
    args = _parser().parse_args(argv)
    store = open_store(args.store)
    at_us = to_micros(args.at)
    cov = coverage(store, args.table)
    check_restorable(cov, args.at, at_us)
    directory = snapshot_dir(args.table, args.at)
    if store.exists(f"{directory}/{MANIFEST}"):
        raise ConflictError(f"a snapshot of {args.table!r} at {format_time(args.at)} already exists")
    writer = args.writer or uuid.uuid4().hex[:12]
    plan = plan_state(store, args.table, at_us)
    written = spark_parts(state_frame(store, plan, tombstones=True), store.uri, directory, writer, args.part_rows)
    manifest = snapshot_manifest(store, plan, cov, writer, written)
    write_draft(store, manifest)
    if args.publish:
        manifest = publish_draft(store, args.table, at_us, writer)
    print(f"wrote the snapshot of {args.table} at {format_time(from_micros(at_us))}: {manifest.items:,} items, "
          f"{manifest.tombstones:,} tombstones in {len(manifest.parts)} parts"
          + ("" if args.publish else " (draft: the compactor publishes it)"))
    return manifest


def spark_parts(state: Any, store_uri: str, directory: str, writer: str, part_rows: int) -> WrittenParts:
    """Write the state's rows as parts in key order, part ``i`` holding rows ``i*part_rows`` onwards.

    Each part is written by one executor, from rows numbered after a global sort: the layout does
    not depend on how Spark partitioned the work.
    """
    from pyspark import StorageLevel

    # The time as µs since the epoch: a Python datetime from Spark would be in the worker's zone.
    columns = [f"unix_micros({name}) AS {name}" if name == "event_time" else name
               for name in (c.strip() for c in STATE_COLUMNS.split(","))]
    with spark_errors(f"writing the snapshot parts under {directory}"):
        rows = state.orderBy("item_key").selectExpr(*columns).rdd.map(tuple) \
            .persist(StorageLevel.MEMORY_AND_DISK)
        try:
            numbered = rows.zipWithIndex()
            count = numbered.count()
            parts = max(1, -(-count // part_rows))
            results = (numbered.map(lambda pair: (pair[1] // part_rows, (pair[1], pair[0])))
                       .partitionBy(parts, lambda index: int(index))
                       .mapPartitionsWithIndex(lambda index, rows_of: _write_partition(
                           store_uri, directory, writer, index, rows_of))
                       .collect())
        finally:
            rows.unpersist()
    results.sort(key=lambda result: result[0])
    sums: tuple[PartSum, ...] = tuple(part for _, part, _ in results)
    tombstones = sum(removed for _, _, removed in results)
    return WrittenParts(sums, sum(part.rows for part in sums) - tombstones, tombstones)


def _write_partition(store_uri: str, directory: str, writer: str, index: int,
                     pairs: Iterable[tuple[int, tuple[int, tuple[Any, ...]]]]) -> Iterator[tuple[int, PartSum, int]]:
    """On an executor: write part ``index`` from its numbered rows (none: no part, as an empty table has none)."""
    ordered = [row for _, row in sorted((number, row) for _, (number, row) in pairs)]
    if not ordered:
        return
    values = list(zip(*ordered, strict=True))
    arrays = [pa.array(column, pa.int64()).cast(field.type) if field.name == "event_time"
              else pa.array(column, field.type) for column, field in zip(values, SNAPSHOT_SCHEMA, strict=True)]
    part, removed = write_part(open_store(store_uri), f"{directory}/{part_name(writer, index)}",
                               pa.Table.from_arrays(arrays, schema=SNAPSHOT_SCHEMA))
    yield index, part, removed


def main(argv: list[str] | None = None) -> int:
    """Run the job; a refusal or failure is one line on stderr and its documented exit code."""
    try:
        run(argv)
    except RewindError as exc:
        print(f"ddb-rewind: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
