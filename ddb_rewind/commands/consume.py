"""``ddb-rewind consume``: poll the table's DynamoDB stream and write change files to the store."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from changelog.errors import EXIT_INTERRUPTED, UsageError
from changelog.progress import Progress
from changelog.store import open_store
from ddb_rewind.args import add_store, add_table


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < math.inf:  # also refuses nan, which compares false both ways
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds, at least 0")
    return value


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser(
        "consume", help="poll the table's DynamoDB stream into the store (the capture, without Lambda)",
        description="Read the table's DynamoDB stream, parents before children, resuming from the "
                    "checkpoints in the store. Records trimmed from the stream before they were read are "
                    "reported as gaps (stderr, tables/<T>/gaps/) and make the exit code 1.",
    )
    add_table(parser)
    add_store(parser)
    parser.add_argument("--once", action="store_true", help="drain what the stream holds now, then exit")
    parser.add_argument("--poll-interval", type=_seconds, default=1.0, metavar="SECONDS",
                        help="pause after a round that found nothing (default 1)")
    parser.add_argument("--max-seconds", type=_seconds, default=None, metavar="N",
                        help="stop after about N seconds (default: until Ctrl-C, or the end with --once)")
    parser.add_argument("--dry-run", action="store_true",
                        help="probe each unfinished shard after its checkpoint (one page) and say which are behind, "
                             "caught up or closed, and which gaps a run would record; write nothing")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Poll, then print one summary line."""
    from stream_consumer.poller import poll

    if not args.table:
        raise UsageError("--table must name a table")
    if args.dry_run:
        from ddb_rewind.commands.recover import probe

        found = probe(open_store(args.store, allow_empty=True), args.table, dry_run=True)
        # A run records a gap for a shard trimmed past its checkpoint, and then exits 1.
        return 1 if found.gaps or any(f.state == "trimmed" for f in found.findings) else 0
    store = open_store(args.store, create=True)
    progress = Progress(f"consume {args.table}", stream=sys.stderr, unit="records")
    summary = poll(store, args.table, once=args.once, poll_interval=args.poll_interval,
                   max_seconds=args.max_seconds, progress=progress)
    shards = "shard" if summary.shards == 1 else "shards"
    gaps = "gap" if summary.gaps == 1 else "gaps"
    print(
        f"consume {summary.table}: {summary.captured:,} records captured, {summary.quarantined:,} quarantined, "
        + (f"{summary.erased:,} of an erased item dropped, " if summary.erased else "")
        + f"{summary.files:,} files, {summary.shards:,} {shards}, {summary.gaps:,} {gaps}"
        + (" (interrupted)" if summary.interrupted else "")
    )
    if summary.interrupted:
        # Everything read so far is stored and checkpointed; Ctrl-C still ends the command as 130.
        return EXIT_INTERRUPTED
    return 1 if summary.gaps else 0
