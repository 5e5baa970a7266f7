"""``ddb-rewind repair``: put every item changed in a window back to its state before it."""

from __future__ import annotations

import argparse
from typing import Any

import boto3

from changelog.codec import dump_json
from changelog.store import open_store
from changelog.timefmt import format_time, from_micros, to_micros
from ddb_rewind.args import add_store, add_table, time_arg
from replayer.repair import execute_repair, plan_repair


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser(
        "repair", help="undo the changes of a window, item by item",
        description="Put every item changed in (--from, --to] back to its state at --from, skipping items "
                    "written again after --to (unless --force).")
    add_table(parser)
    add_store(parser)
    parser.add_argument("--from", dest="start", type=time_arg, required=True, metavar="TIME")
    parser.add_argument("--to", dest="end", type=time_arg, required=True, metavar="TIME")
    parser.add_argument("--target", required=True, metavar="NAME", help="live DynamoDB table to repair")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    parser.add_argument("--force", action="store_true", help="write even over items changed after --to")
    parser.add_argument("--workers", type=int, default=8, metavar="N", help="parallel writers")
    parser.add_argument("--sample", type=int, default=10, metavar="N", help="keys listed in the plan")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the plan, then (unless --dry-run) what was repaired, skipped and failed."""
    plan = plan_repair(open_store(args.store), args.table, to_micros(args.start), to_micros(args.end))
    counts = plan.counts()
    print(f"repair {args.target} from {args.table}: undo {format_time(from_micros(plan.from_us))} -> "
          f"{format_time(from_micros(plan.to_us))}")
    print("plan: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    if args.dry_run:
        for action in plan.actions[: max(0, args.sample)]:
            print(f"  {action.action:<8} {dump_json(action.key)}")
        print("dry run: nothing written")
        return 0
    result = execute_repair(plan, boto3.client("dynamodb"), args.target, force=args.force, workers=args.workers)
    print(f"repaired {len(result.repaired)}, skipped {len(result.skipped)}, failed {len(result.failed)}")
    for key, why in result.skipped:
        print(f"  skipped {key}: {why}")
    for key, why in result.failed:
        print(f"  failed  {key}: {why}")
    return 1 if result.failed else 0
