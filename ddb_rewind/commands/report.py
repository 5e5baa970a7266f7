"""``ddb-rewind report``: one self-contained HTML page about a window (an incident) to look at."""

from __future__ import annotations

import argparse
from typing import Any

from changelog.store import check_outside, open_store
from changelog.timefmt import to_micros
from ddb_rewind.args import TIME_HELP, add_store, add_table, add_where, int_range, time_arg


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser(
        "report", help="an incident report as one HTML file",
        description="Write ONE self-contained HTML file (no network needed to open it) about the window "
                    "(--from, --to]: the change rate by event type as a chart, the attributes most changed, "
                    "sample before/after diffs (damaged items first) and the plan repair would follow to restore the "
                    "window start, with the exact repair --dry-run line to paste. "
                    "Refuses a window outside coverage, as diff does.")
    add_table(parser)
    add_store(parser)
    parser.add_argument("--from", dest="start", type=time_arg, required=True, metavar="TIME",
                        help=f"the window start: the state repair would restore ({TIME_HELP})")
    parser.add_argument("--to", dest="end", type=time_arg, required=True, metavar="TIME", help="the window end")
    parser.add_argument("-o", "--output", required=True, metavar="PATH", help="the HTML file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    add_where(parser, "narrow the attributes and sample diffs to items matching on either side "
                      "(the chart and the repair plan still cover every item)")
    parser.add_argument("--samples", type=int_range("--samples", 0, 1000), default=10, metavar="N",
                        help="before/after diffs and repair actions shown (0 to 1,000)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Gather, render, write whole; print what was written."""
    import importlib.util

    from changelog.errors import UsageError
    from replayer.restoring.outfile import check_output

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("report draws its chart with matplotlib, which is not installed: "
                         "pip install 'ddb-rewind[report]'")
    from replayer.forensics.report import build_report
    from replayer.forensics.report_html import write_report

    check_output(args.output, args.overwrite)
    store = open_store(args.store)
    check_outside(store, args.output, "--output")
    report = build_report(store, args.table, to_micros(args.start), to_micros(args.end),
                          args.where, samples=args.samples)
    size = write_report(report, args.output, overwrite=args.overwrite)
    print(f"wrote {args.output} ({size:,} bytes): {report.added + report.removed + report.changed:,} items differ, "
          f"repair would put {report.repair_puts:,} and delete {report.repair_deletes:,}")
    return 0
