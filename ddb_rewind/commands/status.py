"""``ddb-rewind status``: what each table's backup covers."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from changelog.errors import RewindError, UsageError
from changelog.gaps import Gap, gap_to_json
from changelog.layout import TABLES, table_names
from changelog.names import table_name_problem
from changelog.restorable import describe_intervals
from changelog.store import open_store
from changelog.timefmt import format_time, from_micros
from ddb_rewind.args import add_store, add_table
from ddb_rewind.output import print_rows

if TYPE_CHECKING:
    from changelog.proof import CoverageProof
    from changelog.state import Coverage


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser("status", help="earliest and latest restorable times per table")
    add_store(parser)
    which = parser.add_mutually_exclusive_group()
    add_table(which, required=False)
    which.add_argument("--tables", metavar="T1,T2,...",
                       help="these tables only, and the latest moment restorable for all of them (default: all)")
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


def _proof_json(proof: CoverageProof) -> dict[str, Any]:
    latest = proof.latest_restorable_us
    return {
        "latest_restorable": format_time(from_micros(latest)) if latest is not None else None,
        "capture_lag_seconds": proof.capture_lag_seconds,
        "held_by": list(proof.held_by),
        "shards": proof.shards,
        "unread_shards": list(proof.unread_shards),
        "gaps": proof.gaps,
        "quarantined": proof.quarantined,
        "whole": proof.whole,
    }


def run(args: argparse.Namespace) -> int:
    """Print one row per table."""
    import time

    from changelog.proof import prove
    from changelog.state import coverage

    store = open_store(args.store)
    if args.table:
        tables = [args.table]
    elif args.tables:
        tables = list(dict.fromkeys(t.strip() for t in args.tables.split(",") if t.strip()))
        problems = [p for p in map(table_name_problem, tables) if p]
        if problems or not tables:
            raise UsageError(f"--tables: {problems[0] if problems else 'no table named'}")
    else:
        tables = table_names(store.list(TABLES + "/"))
    columns = ["table", "earliest_restorable", "latest_restorable", "changes", "change_files", "snapshots",
               "quarantined", "gaps", "bytes_stored"]
    rows = []
    coverages = []
    for table in tables:
        cov = coverage(store, table, count_changes=True)
        coverages.append(cov)
        rows.append([
            table,
            format_time(from_micros(cov.earliest_us)) if cov.earliest_us is not None else None,
            format_time(from_micros(cov.latest_restorable_us)) if cov.latest_restorable_us is not None else None,
            cov.changes, cov.change_files, cov.snapshots, cov.quarantined, _gaps(table, cov.gaps, args.format),
            cov.bytes_stored,
        ])
    now_us = time.time_ns() // 1000
    proofs = [prove(cov, now_us) for cov in coverages]
    if args.format == "json":
        columns += ["restorable", "proof"]
        for row, cov, proof in zip(rows, coverages, proofs, strict=True):
            row.append([{"from": format_time(from_micros(low)), "to": format_time(from_micros(high))}
                        for low, high in cov.intervals])
            row.append(_proof_json(proof))
    print_rows(columns, rows, args.format)
    if args.format == "table":
        for cov in coverages:
            if cov.losses or len(cov.intervals) != 1:
                # Coverage is a set of intervals: earliest and latest alone would promise the moments a loss cut.
                print(f"{cov.table} restorable: {describe_intervals(cov.intervals)}; "
                      f"{len(cov.losses):,} loss(es) (gaps, quarantined records or missing files)")
        for proof in proofs:
            # What the newest restorable moment rests on, and what holds it back (the stack's hourly proof).
            print(proof.describe())
    if len(coverages) > 1 and args.format == "table":
        print(f"latest moment restorable for all {len(coverages)} tables: {_common_latest(coverages)}")
    return 0


def _common_latest(coverages: list[Coverage]) -> str:
    """The latest moment every table can be restored to, checked with replay's own rule, or why none."""
    from changelog.state import check_restorable

    latest = [cov.latest_restorable_us for cov in coverages if cov.latest_restorable_us is not None]
    if len(latest) < len(coverages):
        empty = ", ".join(c.table for c in coverages if c.latest_restorable_us is None)
        return f"none ({empty} has no restorable moment yet)"
    moment = min(latest)
    for cov in coverages:
        try:
            check_restorable(cov, from_micros(moment), moment)
        except RewindError as exc:
            return f"none ({exc})"
    return format_time(from_micros(moment))
