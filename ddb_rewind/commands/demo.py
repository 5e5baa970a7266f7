"""``ddb-rewind demo``: the whole product end to end on an embedded local AWS."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ddb_rewind.args import int_range


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser("demo", help="end to end on an embedded local AWS (moto): no account needed")
    parser.add_argument("--store", default="rewind-demo", metavar="DIR",
                        help="local directory for the demo's store (default: ./rewind-demo)")
    parser.add_argument("--orders", type=int_range("--orders", 1, 100_000), default=300,
                        help="orders in the workload (1 to 100000)")
    parser.add_argument("--keep-running", action="store_true",
                        help="leave the local AWS up after the demo (until Ctrl-C) and print the environment "
                             "to export, so every command can be tried against it")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 only when the restore matched the table exactly."""
    from ddb_rewind.demo import run_demo, wait_for_ctrl_c

    keep = wait_for_ctrl_c if args.keep_running else None
    return 0 if run_demo(Path(args.store), orders=args.orders, keep_running=keep) else 1
