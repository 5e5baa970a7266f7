"""``ddb-rewind repair``: put every item changed in a window back to its state before it."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from changelog.errors import WriteFailed
from changelog.store import open_store
from changelog.timefmt import format_time, from_micros, to_micros
from ddb_rewind.args import (
    TIME_HELP,
    add_store,
    add_table,
    add_yes,
    check_can_confirm,
    confirm,
    int_range,
    table_arg,
    time_arg,
)
from ddb_rewind.output import sampled

if TYPE_CHECKING:
    from replayer.forensics.repair import RepairResult


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser(
        "repair", help="undo the changes of a window, item by item",
        description="Put every item changed in (--from, --to] back to its state at --from, skipping items "
                    "written again after --to (unless --force) and not re-creating items the target's TTL "
                    "has expired (unless --recreate-expired). --dry-run reads every item and predicts "
                    "exactly what the real run would repair and skip.")
    add_table(parser)
    add_store(parser)
    parser.add_argument("--from", dest="start", type=time_arg, required=True, metavar="TIME",
                        help=f"the moment to put items back to ({TIME_HELP})")
    parser.add_argument("--to", dest="end", type=time_arg, required=True, metavar="TIME",
                        help="the end of the window whose changes are undone")
    parser.add_argument("--target", required=True, type=table_arg, metavar="NAME",
                        help="live DynamoDB table to repair")
    parser.add_argument("--dry-run", action="store_true",
                        help="read and check every item as the real run would, write nothing")
    add_yes(parser)
    parser.add_argument("--force", action="store_true", help="write even over items changed after --to")
    parser.add_argument("--recreate-expired", action="store_true",
                        help="re-create removed items even when the target's TTL has expired them")
    parser.add_argument("--workers", type=int_range("--workers", 1, 256), default=8, metavar="N",
                        help="parallel writers (1 to 256)")
    parser.add_argument("--sample", type=int_range("--sample", 0, 1_000_000), default=10, metavar="N",
                        help="keys listed in the plan")
    parser.set_defaults(run=run)


def _print_result(result: RepairResult, dry_run: bool, names: tuple[str, ...]) -> None:
    from changelog.docs import key_text

    def shown(item_key: str) -> str:
        return key_text(json.loads(item_key), names)

    if dry_run:
        print(f"dry run: would repair {len(result.repaired):,}, skip {len(result.skipped):,}, "
              f"fail {len(result.failed):,}; nothing written")
    else:
        print(f"repaired {len(result.repaired):,}, skipped {len(result.skipped):,}, failed {len(result.failed):,}")
    for key, why in result.skipped:
        print(f"  skipped {shown(key)}: {why}")
    for key, why in result.failed:
        print(f"  failed  {shown(key)}: {why}")


def run(args: argparse.Namespace) -> int:
    """Print the plan, then (unless --dry-run, which predicts it) what was repaired, skipped and failed."""
    from changelog.aws import aws_boundary, client
    from changelog.docs import key_text
    from changelog.meta import key_names
    from replayer.forensics.repair import check_target, execute_repair, plan_repair

    if not args.dry_run:
        check_can_confirm(args.yes, f"repair (writes to live table {args.target})")
    store = open_store(args.store)
    plan = plan_repair(store, args.table, to_micros(args.start), to_micros(args.end))
    names = key_names(store, args.table)
    counts = plan.counts()
    print(f"repair {args.target} from {args.table}: undo {format_time(from_micros(plan.from_us))} -> "
          f"{format_time(from_micros(plan.to_us))}")
    shown, cut = sampled(plan.actions, args.sample if args.dry_run else 0, " below")
    print("plan: " + ", ".join(f"{name} {n}" for name, n in counts.items()) + cut)
    for action in shown:
        print(f"  {action.action:<8} {key_text(action.key, names)}")
    with aws_boundary(f"repair of table {args.target!r}"):
        dynamodb = client("dynamodb")
        check_target(plan, dynamodb, args.target)
        if not args.dry_run and plan.actions:
            confirm(args.yes, f"write {len(plan.actions):,} items to live table {args.target!r}?")
        result = execute_repair(plan, dynamodb, args.target, force=args.force, workers=args.workers,
                                dry_run=args.dry_run, recreate_expired=args.recreate_expired)
    _print_result(result, args.dry_run, names)
    if result.failed and not args.dry_run:
        raise WriteFailed(f"{len(result.failed):,} of {len(plan.actions):,} items could not be written to "
                          f"{args.target} ({len(result.repaired):,} were); see the list above")
    return 0
