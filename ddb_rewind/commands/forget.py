"""``ddb-rewind forget``: erase one item from every version of a table's history (see ``compactor.forget``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from changelog.errors import UsageError
from changelog.store import open_store
from changelog.timefmt import format_time, from_micros
from ddb_rewind.args import add_store, add_table, add_yes, check_can_confirm, confirm, where_arg

if TYPE_CHECKING:
    from changelog.predicate import Predicate
    from compactor.forget import ForgetPlan, ForgetResult, WherePlan


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser(
        "forget", help="erase one item from every change file and snapshot (a deletion request)",
        description="Rewrite every change file and snapshot part that holds a version of the item without it, "
                    "delete the old files (and their earlier versions in a versioned bucket), and record the "
                    "erasure in the store's forget ledger (a keyed hash, never the key), so that a late record "
                    "of the item is dropped at capture. 'check' proves it afterwards.")
    add_table(parser)
    add_store(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--key", metavar="KEY",
                       help='DynamoDB JSON ({"pk":{"S":"a"}}) or pk=a,sk=5 typed from the key schema')
    which.add_argument("--where", type=where_arg, metavar="EXPR",
                       help="erase every item any stored version of which matches, e.g. \"email = 'a@b.example'\" "
                            "(the grammar of replay --where; --dry-run lists the matched keys)")
    parser.add_argument("--reason", required=True, metavar="TEXT",
                        help="why (kept in the forget ledger, e.g. a request's reference; never the key itself)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the files and restore points that would be rewritten; change nothing")
    add_yes(parser)
    parser.set_defaults(run=run)


def _print_plan(plan: ForgetPlan, verb: str) -> None:
    from compactor.forget import describe_hits

    print(f"{plan.files_read:,} files read, {plan.files_skipped:,} ruled out by their statistics without reading")
    print(f"change files {verb}: {len(plan.change_files):,} ({plan.versions:,} versions of the item)")
    for line in describe_hits(plan.change_files):
        print(f"  {line}")
    print(f"snapshots (restore points) {verb}: {len(plan.snapshots):,}")
    for path in plan.snapshots:
        print(f"  {path}")
    print(f"snapshot parts {verb}: {len(plan.parts):,} ({plan.snapshot_rows:,} rows of the item)")
    for line in describe_hits(plan.parts):
        print(f"  {line}")
    deleted = "that would be deleted" if "would" in verb else "to delete"
    print(f"quarantined records {deleted}: {len(plan.quarantine):,}")
    for line in describe_hits(plan.quarantine):
        print(f"  {line}")


def _print_unread(unread: int, table: str) -> None:
    if unread:
        # Their key attributes cannot be read: forget cannot tell whose they are. 'requeue' drops an erased item's.
        print(f"not attributed: {unread:,} quarantined records of {table!r} whose key cannot be read (run "
              "'ddb-rewind requeue' once they decode: a record of an erased item is then dropped with its quarantine "
              "copy)")


def _check_reason(reason: str, key_text: str, item_key: str) -> None:
    """Refuse a reason that quotes the key: the reason is kept in the ledger, which must not name the item."""
    if not reason.strip():
        raise UsageError("--reason is empty: say why (a request's reference, say), without the key")
    if key_text.strip() in reason or item_key in reason:
        raise UsageError("--reason contains the key: the forget ledger must not name the item; give a "
                         "reference instead")


def _print_result(result: ForgetResult) -> None:
    if not result.erasures:
        print("nothing was left to forget")
        return
    last = max(erasure.erased_up_to_us for erasure in result.erasures)
    print(f"forgot: {result.versions:,} versions removed, {result.files:,} files replaced; records of the erased "
          f"items stamped at or before {format_time(from_micros(last))} will be dropped at capture")
    for erasure in result.erasures:
        print(f"erasure recorded: {erasure.path}")


def _print_where(plan: WherePlan, verb: str) -> None:
    print(f"{plan.versions_scanned:,} stored versions tested; {len(plan.plans):,} items match")
    # The user typed the predicate: the matched keys are shown to confirm it selects whom it should.
    for item_plan in plan.plans:
        print(f"  {item_plan.item_key} ({item_plan.versions:,} versions, {len(item_plan.change_files):,} change "
              f"files, {len(item_plan.snapshots):,} snapshots)")
    print(f"change files {verb}: {len(plan.change_files):,} ({plan.versions:,} versions of the items)")
    for path in plan.change_files:
        print(f"  {path}")
    print(f"snapshots (restore points) {verb}: {len(plan.snapshots):,}")
    for path in plan.snapshots:
        print(f"  {path}")
    print(f"snapshot parts {verb}: {len(plan.parts):,}")
    for path in plan.parts:
        print(f"  {path}")
    deleted = "that would be deleted" if "would" in verb else "to delete"
    print(f"quarantined records {deleted}: {plan.quarantine:,}")


def _run_where(args: argparse.Namespace, predicate: Predicate) -> int:
    from compactor.forget import check_erasable, forget_where, plan_forget_where

    store = open_store(args.store)
    plan = plan_forget_where(store, args.table, predicate)
    if not args.reason.strip():
        raise UsageError("--reason is empty: say why (a request's reference, say), without the key")
    if predicate.text.strip() in args.reason or any(key in args.reason for key in plan.item_keys):
        raise UsageError("--reason contains the --where condition or a matched key: the forget ledger must not "
                         "name the items; give a reference instead")
    if not plan.plans:
        print(f"no stored version of {args.table!r} matches --where: nothing to forget")
        return 0
    _print_where(plan, "that would be rewritten" if args.dry_run else "to rewrite")
    _print_unread(plan.plans[0].quarantine_unread, args.table)
    if args.dry_run:
        if plan.refusal is not None:
            print(f"cannot erase: {plan.refusal}")
        print("dry run: nothing was changed")
        return 0
    for item_plan in plan.plans:
        check_erasable(store, item_plan)  # before asking: a bucket that cannot erase is refused with its reason
    confirm(args.yes, f"erase {len(plan.plans):,} items ({plan.versions:,} versions) from "
                      f"{len(plan.change_files):,} change files and {len(plan.snapshots):,} snapshots of "
                      f"{args.table!r}? This cannot be undone")
    _print_result(forget_where(store, plan, args.reason))
    return 0


def run(args: argparse.Namespace) -> int:
    """Plan, print, and (unless --dry-run) erase."""
    from compactor.forget import check_erasable, forget, plan_forget

    if not args.dry_run:
        check_can_confirm(args.yes, "forget (rewrites and deletes files of the store)")
    if args.where is not None:
        return _run_where(args, args.where)
    store = open_store(args.store)
    plan = plan_forget(store, args.table, args.key)
    _check_reason(args.reason, args.key, plan.item_key)
    if plan.empty:
        print(f"no file of {args.table!r} holds a version of the item: nothing to forget")
        return 0
    _print_plan(plan, "that would be rewritten" if args.dry_run else "to rewrite")
    _print_unread(plan.quarantine_unread, args.table)
    if args.dry_run:
        if plan.refusal is not None:
            print(f"cannot erase: {plan.refusal}")
        print("dry run: nothing was changed")
        return 0
    check_erasable(store, plan)  # before asking: a bucket that cannot erase is refused with its reason
    confirm(args.yes, f"erase {plan.versions:,} versions of the item from {len(plan.change_files):,} change files "
                      f"and {len(plan.snapshots):,} snapshots of {args.table!r}? This cannot be undone")
    _print_result(forget(store, plan, args.reason))
    return 0
