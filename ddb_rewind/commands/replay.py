"""``ddb-rewind replay``: the table as it was at TIME, into a table or a file."""

from __future__ import annotations

import argparse
from typing import Any

import boto3

from changelog.meta import read_meta
from changelog.store import open_store
from changelog.timefmt import format_time
from ddb_rewind.args import add_store, add_table, time_arg
from replayer.replay import clear_table, open_items, replay_to_file, replay_to_table, select_counts
from replayer.target import prepare_target
from replayer.writer import WriteSettings


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser("replay", help="rebuild the table as it was at TIME")
    add_table(parser)
    add_store(parser)
    parser.add_argument("--at", required=True, type=time_arg, metavar="TIME", help="ISO 8601 or epoch seconds")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-table", metavar="NAME", help="DynamoDB table to write the items into")
    target.add_argument("--to-file", metavar="PATH", help="file to write: .jsonl, .parquet or .avro")
    parser.add_argument("--create-table", action="store_true", help="create --to-table from meta.json")
    parser.add_argument("--into-existing", action="store_true", help="write into an existing --to-table")
    parser.add_argument("--clear-first", action="store_true", help="delete every item of the target first")
    parser.add_argument("--where", metavar="SQL", help="predicate over plain attribute names")
    parser.add_argument("--dry-run", action="store_true", help="report items and bytes; write nothing")
    parser.add_argument("--workers", type=int, default=8, help="parallel BatchWriteItem workers")
    parser.add_argument("--max-rate", type=float, default=None, metavar="ITEMS_PER_S", help="write-rate cap")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Replay and print a summary."""
    store = open_store(args.store)
    con = open_items(store, args.table, args.at, where=args.where)
    selection = select_counts(con)
    what = f"{selection.items:,} items ({selection.image_bytes:,} bytes of DynamoDB JSON) as of {format_time(args.at)}"
    if args.to_file:
        if args.dry_run:
            print(f"dry run: would write {what} to {args.to_file}")
            return 0
        count = replay_to_file(con, args.to_file, selection.items)
        print(f"wrote {count:,} items as of {format_time(args.at)} to {args.to_file}")
        return 0
    client = boto3.client("dynamodb")
    action = prepare_target(client, args.to_table, read_meta(store, args.table), create=args.create_table,
                            into_existing=args.into_existing, dry_run=args.dry_run)
    if args.dry_run:
        verb = "create and fill" if action == "created" else "write into existing"
        clear = " after clearing it" if args.clear_first else ""
        print(f"dry run: would {verb} table {args.to_table}{clear}: {what}")
        return 0
    settings = WriteSettings(workers=args.workers, max_rate=args.max_rate)
    if args.clear_first:
        cleared = clear_table(client, args.to_table, settings)
        print(f"cleared {cleared.written:,} items from {args.to_table}")
    report, errors = replay_to_table(con, client, args.to_table, selection.items, settings)
    rate = report.written / report.seconds if report.seconds else 0.0
    print(f"replayed {what} into {args.to_table}: written {report.written:,}, retried {report.retried:,}, "
          f"failed {report.failed:,} in {report.seconds:.1f}s ({rate:,.0f} items/s)")
    for error in errors:
        print(f"  error: {error}")
    return 0 if report.failed == 0 else 3
