"""``ddb-rewind expire``: apply a retention policy (see ``compactor.retention`` for the grammar)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from changelog.store import open_store
from changelog.timefmt import format_time, from_micros
from ddb_rewind.args import add_store, add_table, add_yes, check_can_confirm, confirm, policy_arg

if TYPE_CHECKING:
    from compactor.retention import ExpirePlan

LISTED = 20


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser(
        "expire", help="delete change files and snapshots the retention policy no longer needs"
    )
    add_table(parser)
    add_store(parser)
    parser.add_argument(
        "--keep", required=True, type=policy_arg, metavar="POLICY",
        help="e.g. daily=35d,monthly=24m,changes=400d: snapshots of the last 35 days and 24 months, "
             "changes of the last 400 days (units for changes: h, d, w, m, y)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    add_yes(parser)
    parser.set_defaults(run=run)


def _when(micros: int | None) -> str:
    return format_time(from_micros(micros)) if micros is not None else "-"


def _listing(label: str, paths: tuple[str, ...], plan: ExpirePlan, show: bool) -> None:
    print(f"{label}: {len(paths):,} objects, {plan.bytes_of(paths):,} bytes")
    if show:
        for path in paths[:LISTED]:
            print(f"  {path}")
        if len(paths) > LISTED:
            print(f"  ... and {len(paths) - LISTED:,} more")


def run(args: argparse.Namespace) -> int:
    """Plan, print, and (unless --dry-run) apply."""
    from compactor.retention import apply_expire, plan_expire

    policy = args.keep
    if not args.dry_run:
        check_can_confirm(args.yes, "expire (deletes files from the store)")
    store = open_store(args.store)
    plan = plan_expire(store, args.table, policy)
    print(f"policy {policy.text}; now (watermark) {_when(plan.now_us)}; change horizon {_when(plan.horizon_us)}")
    print(f"earliest restorable: {_when(plan.previous_floor_us)} -> {_when(plan.floor_us)}"
          + (f" (base snapshot {plan.base_snapshot})" if plan.base_snapshot else " (no snapshot at or before the "
             "horizon: change files kept; run 'ddb-rewind compact' to allow more)"))
    if not args.dry_run:
        count = len(plan.snapshot_files()) + len(plan.drop_changes) + len(plan.drop_orphans)
        if count:
            confirm(args.yes, f"delete {count:,} objects ({len(plan.drop_snapshots):,} snapshots) from the store, "
                              f"making {_when(plan.floor_us)} the earliest restorable time?")
        apply_expire(store, plan)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"snapshots kept: {len(plan.keep_snapshots):,}; {verb}: {len(plan.drop_snapshots):,}")
    _listing(f"snapshot files {verb}", plan.snapshot_files(), plan, args.dry_run)
    _listing(f"change files {verb}", plan.drop_changes, plan, args.dry_run)
    _listing(f"orphan snapshot files {verb}", plan.drop_orphans, plan, args.dry_run)
    return 0
