"""``ddb-rewind verify``: compare a live table with the backup, or run a restore drill."""

from __future__ import annotations

import argparse
from typing import Any

from changelog.errors import UsageError
from changelog.store import open_store
from changelog.timefmt import format_time, from_micros, to_micros
from ddb_rewind.args import add_store, add_table, int_range, table_arg, time_arg
from ddb_rewind.output import sampled


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser(
        "verify", help="compare a live table with the backup; or a restore drill",
        description="Scan a live table and compare it with the stored state (exit 0 only on a match); "
                    "--drill checks that snapshot replay equals replay from changes alone.")
    add_table(parser)
    add_store(parser)
    parser.add_argument("--against", type=table_arg, metavar="NAME", help="live DynamoDB table to compare")
    parser.add_argument("--at", type=time_arg, metavar="TIME", help="stored state to compare with (default: watermark)")
    parser.add_argument("--segments", type=int_range("--segments", 1, 1_000_000), default=4, metavar="N",
                        help="parallel scan segments")
    parser.add_argument("--sample", type=int_range("--sample", 0, 1_000_000), default=10, metavar="N",
                        help="keys listed per kind of drift")
    parser.add_argument("--drill", action="store_true", help="restore drill at a random moment within coverage")
    parser.add_argument("--drill-at", type=time_arg, metavar="TIME", help="restore drill at this moment")
    parser.add_argument("--seed", type=int, help="seed for the drill's random moment")
    parser.set_defaults(run=run)


def _drill(args: argparse.Namespace) -> bool:
    from replayer.proving.verify import restore_drill

    result = restore_drill(open_store(args.store), args.table,
                           to_micros(args.drill_at) if args.drill_at else None, args.seed)
    print(f"restore drill at {format_time(from_micros(result.at_us))} "
          f"(snapshot: {result.snapshot_path or 'none before it'})")
    print(f"  snapshot + changes: {result.items_with_snapshot} items, checksum {result.checksum_with_snapshot}, "
          f"{result.seconds_with_snapshot:.2f}s")
    print(f"  changes only:       {result.items_from_changes} items, checksum {result.checksum_from_changes}, "
          f"{result.seconds_from_changes:.2f}s")
    print("  match" if result.matches else "  MISMATCH: snapshot replay differs from replay of the changes")
    return result.matches


def run(args: argparse.Namespace) -> int:
    """Exit 0 only when everything asked for matches, 1 otherwise."""
    from changelog.aws import aws_boundary, client
    from replayer.proving.verify import verify_table

    if not args.against and not (args.drill or args.drill_at):
        raise UsageError("give --against NAME (a live table to compare) or --drill")
    ok = True
    if args.against:
        store = open_store(args.store)
        with aws_boundary(f"reading table {args.against!r}"):
            report = verify_table(store, args.table, client("dynamodb"), args.against,
                                  to_micros(args.at) if args.at else None, args.segments)
        print(f"{args.against} vs {args.table} at {format_time(from_micros(report.at_us))}: "
              f"stored {report.stored:,}, live {report.live:,}")
        for label, keys in (("missing", report.missing), ("extra", report.extra), ("different", report.different)):
            shown, cut = sampled(keys, args.sample)
            print(f"  {label}: {len(keys):,}{cut}")
            for key in shown:
                print(f"    {key}")
        print("  match" if report.matches else "  DRIFT")
        ok = report.matches
    if args.drill or args.drill_at:
        ok = _drill(args) and ok
    return 0 if ok else 1
