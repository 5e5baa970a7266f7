"""``ddb-rewind timeline``: change counts per time bucket, as a terminal chart, a table, CSV or JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from changelog.store import open_store
from changelog.timefmt import format_time, from_micros, to_micros
from ddb_rewind.args import add_store, add_table, time_arg

# The same names as replayer.forensics.timeline.BUCKETS, repeated here so --help does not load DuckDB.
BUCKETS = ("auto", "minute", "5min", "15min", "hour", "6hour", "day")
FORMATS = ("chart", "table", "csv", "json")


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser(
        "timeline", help="change counts over time, as a chart",
        description="Inserts, modifies, removes and TTL removes per time bucket. On a terminal: a header, a "
                    "sparkline and one bar per bucket (quiet buckets included); in a pipe: a table of the "
                    "non-empty buckets.")
    add_table(parser)
    add_store(parser)
    parser.add_argument("--bucket", choices=BUCKETS, default="auto",
                        help="width of one bucket; auto keeps the span within 60 buckets")
    parser.add_argument("--from", dest="start", type=time_arg, metavar="TIME", help="first time counted")
    parser.add_argument("--to", dest="end", type=time_arg, metavar="TIME", help="last time counted")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="output format (default: chart on a terminal, table otherwise)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the buckets."""
    from ddb_rewind.output import print_rows
    from replayer.forensics.timeline import KINDS, render_bars, timeline

    line = timeline(
        open_store(args.store), args.table, args.bucket,
        to_micros(args.start) if args.start else None,
        to_micros(args.end) if args.end else None,
    )
    fmt = args.format or ("chart" if sys.stdout.isatty() else "table")
    if fmt == "json":
        json.dump([b.as_json() for b in line], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif fmt == "chart":
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        for text in render_bars(line, color=color):
            print(text)
    else:
        print_rows(("start", *KINDS, "total"),
                   [(format_time(from_micros(b.start_us)), *(getattr(b, k) for k in KINDS), b.total) for b in line],
                   fmt)
    return 0
