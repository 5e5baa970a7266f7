"""``ddb-rewind requeue``: re-capture quarantined records that now decode (the cause was fixed)."""

from __future__ import annotations

import argparse
from typing import Any

from ddb_rewind.args import add_store, add_table


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser(
        "requeue", help="re-capture quarantined records that now pass validation",
        description="Decode every quarantined record again, as the capture path that kept it would; each one "
                    "that now passes is written as a change file exactly as capture writes it (a record "
                    "already captured stays one change: readers keep one copy per eventID), and its "
                    "quarantine document is removed only after that file is published. Records that still "
                    "fail stay, each listed with its reason (see them with: sql 'SELECT * FROM quarantine'). "
                    "Exit 1 when any record still fails. Not for lost batches: that is recover.",
    )
    add_store(parser)
    add_table(parser, required=False)
    parser.add_argument("--dry-run", action="store_true", help="decode and report; write and remove nothing")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """One line per record that still fails, one summary line."""
    from changelog.store import open_store
    from stream_consumer.requeue import requeue

    summary = requeue(open_store(args.store), args.table, dry_run=args.dry_run)
    for outcome in summary.outcomes:
        if outcome.reason is not None:
            print(f"still quarantined {outcome.path}: {outcome.reason}")
    verb = "would be re-captured" if args.dry_run else "re-captured"
    erased = f", {summary.erased} of an erased item dropped" if summary.erased else ""
    print(f"requeue: {summary.captured} records {verb}{erased}, {summary.still_failing} still quarantined, "
          f"{len(summary.files)} change files written" + (" (dry run: nothing written or removed)" if args.dry_run
                                                           else ""))
    return 1 if summary.still_failing else 0
