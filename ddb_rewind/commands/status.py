"""``ddb-rewind status``: what each table's backup covers."""

from __future__ import annotations

import argparse
from typing import Any

from changelog.gaps import Gap, gap_to_json
from changelog.layout import TABLES, table_names
from changelog.store import open_store
from changelog.timefmt import format_time, from_micros
from ddb_rewind.args import add_store, add_table
from ddb_rewind.output import print_rows


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser("status", help="earliest and latest restorable times per table")
    add_store(parser)
    add_table(parser, required=False)
    parser.add_argument("--format", choices=("table", "json"), default="table", help="how rows are printed")
    parser.set_defaults(run=run)


def _gaps(table: str, gaps: tuple[Gap, ...], fmt: str) -> Any:
    """JSON: every gap in full. Table: how many, and from when moments need a new bootstrap."""
    if fmt == "json":
        return [gap_to_json(table, gap) for gap in gaps]
    if not gaps:
        return 0
    first = gaps[0]
    start = format_time(from_micros(first.start_us)) if first.start_us is not None else "unknown time"
    return f"{len(gaps):,} from {start}"


def run(args: argparse.Namespace) -> int:
    """Print one row per table."""
    from changelog.state import coverage

    store = open_store(args.store)
    tables = [args.table] if args.table else table_names(store.list(TABLES + "/"))
    columns = ["table", "earliest_restorable", "latest_restorable", "changes", "change_files", "snapshots",
               "quarantined", "gaps", "bytes_stored"]
    rows = []
    for table in tables:
        cov = coverage(store, table)
        rows.append([
            table,
            format_time(from_micros(cov.earliest_us)) if cov.earliest_us is not None else None,
            format_time(from_micros(cov.latest_us)) if cov.latest_us is not None else None,
            cov.changes, cov.change_files, cov.snapshots, cov.quarantined, _gaps(table, cov.gaps, args.format),
            cov.bytes_stored,
        ])
    print_rows(columns, rows, args.format)
    return 0
