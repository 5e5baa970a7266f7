"""``ddb-rewind timeline``: change counts per minute or hour, as a text bar chart or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from changelog.store import open_store
from changelog.timefmt import to_micros
from ddb_rewind.args import add_format, add_store, add_table, time_arg


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser("timeline", help="change counts per minute or hour",
                                   description="Inserts, modifies, removes and TTL removes per bucket.")
    add_table(parser)
    add_store(parser)
    parser.add_argument("--bucket", choices=("minute", "hour"), default="hour", help="width of one bucket")
    parser.add_argument("--from", dest="start", type=time_arg, metavar="TIME", help="first time counted")
    parser.add_argument("--to", dest="end", type=time_arg, metavar="TIME", help="last time counted")
    add_format(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the buckets."""
    from replayer.timeline import render_bars, timeline

    buckets = timeline(
        open_store(args.store), args.table, args.bucket,
        to_micros(args.start) if args.start else None,
        to_micros(args.end) if args.end else None,
    )
    if args.format == "json":
        json.dump([b.as_json() for b in buckets], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    for line in render_bars(buckets):
        print(line)
    return 0
