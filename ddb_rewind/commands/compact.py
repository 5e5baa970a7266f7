"""``ddb-rewind compact``: merge small change files and take a base snapshot."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from changelog.store import Store, open_store
from changelog.timefmt import format_time, from_micros, to_micros
from ddb_rewind.args import add_store, add_table, time_arg


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser("compact", help="merge small change files and snapshot the table")
    add_table(parser)
    add_store(parser)
    parser.add_argument("--at", type=time_arg, metavar="TIME", help="snapshot moment (default: the watermark)")
    parser.add_argument("--no-merge", action="store_true", help="snapshot only; leave change files as they are")
    parser.add_argument("--dry-run", action="store_true",
                        help="say what a run would merge, snapshot, remove and fold now; write nothing")
    parser.add_argument("--no-settings", action="store_true",
                        help="do not read the table's settings from DynamoDB (by default each compaction records "
                             "them when they changed, for replay --create-table)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Compact and print what was done."""
    from changelog.settings import observe_or_report
    from compactor.compaction import compact

    store = open_store(args.store)
    at_us = to_micros(args.at) if args.at else None
    if args.dry_run:
        return _dry_run(store, args.table, at_us, merge=not args.no_merge)
    if not args.no_settings:
        # As the scheduled compactor does: a table that cannot be read now is one warning, not a failed compaction.
        observe_or_report(store, args.table, lambda line: print(f"ddb-rewind: warning: {line}", file=sys.stderr))
    result = compact(store, args.table, at_us, merge=not args.no_merge)
    if result.merge.files_in:
        print(f"merged {result.merge.files_in:,} change files into {result.merge.files_out:,} "
              f"({result.merge.records:,} records, {result.merge.partitions} hours)")
    if result.folded_records:
        print(f"folded {result.folded_records:,} ledger records")
    if result.settled_shards:
        print(f"removed the records of {result.settled_shards:,} closed shards that no longer change coverage")
    if result.snapshot is None:
        print("nothing new since the latest snapshot")
    else:
        snap = result.snapshot
        print(f"snapshot of {args.table} at {format_time(snap.snapshot_time)}: {snap.items:,} items, "
              f"{snap.tombstones:,} tombstones, {len(snap.parts):,} parts")
    return 0


def _dry_run(store: Store, table: str, at_us: int | None, *, merge: bool) -> int:
    """Print what a run would do now (the same refusals as a run); nothing is written, settings not read."""
    from compactor.compaction import plan_compaction

    plan = plan_compaction(store, table, at_us, merge=merge)
    if plan.files:
        print(f"would merge {plan.files:,} change files of {plan.hours:,} hours")
    if plan.snapshot_us is None:
        print("would take no snapshot: nothing new since the latest snapshot")
    else:
        print(f"would take a snapshot of {table} at {format_time(from_micros(plan.snapshot_us))}")
    if plan.settled_shards:
        print(f"would remove the records of {plan.settled_shards:,} closed shards that no longer change coverage")
    if plan.folded_records:
        print(f"would fold {plan.folded_records:,} ledger records (and those this run's merge writes)")
    print("dry run: nothing was written")
    return 0
