"""``ddb-rewind bootstrap``: a base snapshot from a native export or a parallel Scan."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from changelog.store import open_store
from changelog.timefmt import format_time, from_micros
from ddb_rewind.args import add_store, add_table


def _segments(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--segments must be a whole number, not {text!r}") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError("--segments must be between 1 and 1000000")
    return value


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser(
        "bootstrap", help="base snapshot of items that existed before the stream (native export or Scan)"
    )
    add_table(parser)
    add_store(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-export", metavar="URI",
                        help="folder AWSDynamoDB/<export id>/ of a DYNAMODB_JSON full export (local or s3://)")
    source.add_argument("--scan", action="store_true",
                        help="parallel Scan of the live table (its stream must already be captured)")
    parser.add_argument("--segments", type=_segments, default=4, metavar="N", help="Scan segments (default 4)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Bootstrap and print what was published."""
    from compactor.bootstrap import bootstrap_from_export, bootstrap_from_scan

    store = open_store(args.store, allow_empty=True)  # a bootstrap may start the store
    if args.from_export:
        result = bootstrap_from_export(store, args.table, args.from_export)
    else:
        result = bootstrap_from_scan(store, args.table, segments=args.segments)
    snap = result.manifest
    print(f"{snap.kind} bootstrap of {args.table}: {snap.items:,} items in {len(snap.parts):,} parts, "
          f"snapshot at {format_time(snap.snapshot_time)}")
    if snap.restorable_from_us is not None:
        print(f"restorable from {format_time(from_micros(snap.restorable_from_us))}")
    if result.withdrawn:
        print(f"withdrew {len(result.withdrawn):,} newer snapshot(s) built from changes alone")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
