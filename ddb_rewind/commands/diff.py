"""``ddb-rewind diff``: items added, removed and changed between two moments, with attribute paths."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

from changelog.errors import UsageError
from changelog.store import check_outside, open_store
from changelog.timefmt import format_time, from_micros, to_micros
from ddb_rewind.args import TIME_HELP, add_engine, add_store, add_table, add_where, time_arg

if TYPE_CHECKING:
    from replayer.forensics.diff import StateDiff


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser("diff", help="what changed between two moments",
                                   description="Items added, removed and changed between --from and --to.")
    add_table(parser)
    add_store(parser)
    parser.add_argument("--from", dest="start", type=time_arg, required=True, metavar="TIME",
                        help=f"the earlier moment ({TIME_HELP})")
    parser.add_argument("--to", dest="end", type=time_arg, required=True, metavar="TIME", help="the later moment")
    add_where(parser, "one condition over plain attribute names; an item matching on either side is kept")
    parser.add_argument("--format", choices=("table", "json", "parquet"), default="table",
                        help="table or json on stdout, parquet into --output")
    parser.add_argument("--output", metavar="PATH", help="file for --format parquet")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    add_engine(parser)
    parser.set_defaults(run=run)


def write_json(diff: StateDiff, out: TextIO) -> None:
    """The diff as one JSON document on ``out``, written at once (the stdlib's indenting encoder is pure Python)."""
    import orjson

    out.write(orjson.dumps(diff.as_json(), option=orjson.OPT_INDENT_2).decode())
    out.write("\n")


def run(args: argparse.Namespace) -> int:
    """Print counts first, then each item change."""
    from changelog.codec import dump_json
    from changelog.docs import key_text
    from changelog.meta import key_names
    from replayer.forensics.diff import diff_states, write_diff_parquet
    from replayer.restoring.outfile import check_output

    if args.format == "parquet" and not args.output:
        raise UsageError("--format parquet needs --output PATH")
    if args.output and args.format != "parquet":
        raise UsageError("--output is for --format parquet; the other formats print to stdout")
    if args.output:
        check_output(args.output, args.overwrite)
    store = open_store(args.store)
    if args.output:
        check_outside(store, args.output, "--output")
    diff = diff_states(store, args.table, to_micros(args.start), to_micros(args.end), args.where,
                       engine=args.engine)
    if args.format == "parquet":
        rows = write_diff_parquet(diff, args.output, overwrite=args.overwrite)
        print(f"wrote {rows:,} item changes to {args.output}")
        return 0
    if args.format == "json":
        write_json(diff, sys.stdout)
        return 0
    print(f"{args.table}: {format_time(from_micros(diff.from_us))} -> {format_time(from_micros(diff.to_us))}")
    print(f"added {len(diff.added):,}, removed {len(diff.removed):,}, changed {len(diff.changed):,}")
    names = key_names(store, args.table)
    for change in diff.all():
        print(f"{change.kind:<8} {key_text(change.key, names)}")
        for path in change.paths if change.kind == "changed" else ():
            old = dump_json(path.old) if path.kind != "added" else "(absent)"
            new = dump_json(path.new) if path.kind != "removed" else "(absent)"
            print(f"    {path.path}: {old} -> {new}")
    return 0
