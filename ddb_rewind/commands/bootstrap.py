"""``ddb-rewind bootstrap``: a base snapshot from a native export or a parallel Scan."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from changelog.store import Store, open_store
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
    parser.add_argument("--dry-run", action="store_true",
                        help="check what a run checks first and say what it would copy; read no item, write nothing")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Bootstrap and print what was published."""
    from compactor.bootstrap import bootstrap_from_export, bootstrap_from_scan

    store = open_store(args.store, allow_empty=True)  # a bootstrap may start the store
    if args.dry_run:
        return _dry_run(store, args)
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
        print(f"withdrew {len(result.withdrawn):,} newer snapshot(s) built without this copy")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _dry_run(store: Store, args: argparse.Namespace) -> int:
    """Print what a run would copy and withdraw (the same refusals as a run); nothing is read or written."""
    from compactor.bootstrap import plan_bootstrap_from_export, plan_bootstrap_from_scan

    plan = (plan_bootstrap_from_export(store, args.table, args.from_export) if args.from_export
            else plan_bootstrap_from_scan(store, args.table))
    items = "an unknown number of items" if plan.items is None else f"{plan.items:,} items"
    if plan.kind == "export":
        files = f" in {plan.data_files:,} data files" if plan.data_files is not None else ""
        print(f"would import the export of {args.table}: {items}{files} "
              "(the run checks each file's MD5 and every item as it reads them)")
    else:
        items = items if plan.items is None else f"about {items}"
        print(f"would Scan {args.table} in {args.segments} segments: {items} (DescribeTable's ItemCount, "
              "which DynamoDB updates about every six hours)")
    if plan.snapshot_time_us is not None:
        print(f"the snapshot would be at {format_time(from_micros(plan.snapshot_time_us))}, restorable from then")
    else:
        print("the snapshot would be at the Scan's end, restorable from then")
    if plan.stale:
        print(f"would withdraw {len(plan.stale):,} newer snapshot(s) built without this copy")
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("dry run: nothing was written")
    return 0
