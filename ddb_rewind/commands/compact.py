"""``ddb-rewind compact``: merge small change files and take a base snapshot."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from changelog.store import open_store
from changelog.timefmt import format_time, to_micros
from ddb_rewind.args import add_store, add_table, time_arg


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser("compact", help="merge small change files and snapshot the table")
    add_table(parser)
    add_store(parser)
    parser.add_argument("--at", type=time_arg, metavar="TIME", help="snapshot moment (default: the watermark)")
    parser.add_argument("--no-merge", action="store_true", help="snapshot only; leave change files as they are")
    parser.add_argument("--no-settings", action="store_true",
                        help="do not read the table's settings from DynamoDB (by default each compaction records "
                             "them when they changed, for replay --create-table)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Compact and print what was done."""
    from changelog.settings import observe_or_report
    from compactor.compaction import compact

    store = open_store(args.store)
    if not args.no_settings:
        # As the scheduled compactor does: a table that cannot be read now is one warning, not a failed compaction.
        observe_or_report(store, args.table, lambda line: print(f"ddb-rewind: warning: {line}", file=sys.stderr))
    result = compact(store, args.table, to_micros(args.at) if args.at else None, merge=not args.no_merge)
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
