"""``ddb-rewind replay``: the table as it was at TIME, into a table or a file."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

from changelog.errors import Interrupted, UsageError, WriteFailed
from changelog.meta import read_meta
from changelog.progress import Progress
from changelog.store import Store, check_outside, open_store
from changelog.timefmt import format_time
from ddb_rewind.args import (
    TIME_HELP,
    add_engine,
    add_store,
    add_where,
    add_yes,
    check_can_confirm,
    confirm,
    int_range,
    location_arg,
    path_arg,
    positive_float,
    table_arg,
    time_arg,
)

if TYPE_CHECKING:
    from replayer.restoring.writer import WriteReport, WriteSettings

RERUN = "re-running with --into-existing is safe (puts are idempotent)"


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser("replay", help="rebuild the table as it was at TIME")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--table", type=table_arg, metavar="T", help="source table name")
    source.add_argument("--tables", metavar="T1,T2,...",
                        help="several source tables, restored to the same --at in parallel "
                             "(targets: --to-table-suffix or --to-dir)")
    add_store(parser)
    parser.add_argument("--at", required=True, type=time_arg, metavar="TIME",
                        help=TIME_HELP)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-table", type=table_arg, metavar="NAME", help="DynamoDB table to write the items into")
    target.add_argument("--to-file", type=path_arg, metavar="PATH",
                        help="file to write: .jsonl, .parquet or .avro (lossless), "
                             ".csv; .parquet and .csv add one typed column per attribute; "
                             "- writes JSON lines to stdout (messages go to stderr)")
    target.add_argument("--to-export", type=location_arg(), metavar="DEST",
                        help="directory or s3://bucket/prefix to write a DynamoDB export (AWSDynamoDB/<id>/) into")
    parser.add_argument("--overwrite", action="store_true", help="replace --to-file or the export if it exists")
    parser.add_argument("--via-import", action="store_true",
                        help="create --to-table with DynamoDB's ImportTable from an export written to S3")
    parser.add_argument("--import-prefix", type=location_arg(local=False), metavar="S3URI",
                        help="s3://bucket/prefix for --via-import's export (default: <store>/imports on an S3 store)")
    parser.add_argument("--export-file-mb", type=int_range("--export-file-mb", 1, 4096), default=None,
                        metavar="MB", help="largest data file of an export, in MiB of JSON lines (default 512)")
    target.add_argument("--to-table-suffix", metavar="SUFFIX",
                        help="with --tables: write each table T into table T+SUFFIX (a suffix starting with - is "
                             "given as --to-table-suffix=-restored)")
    target.add_argument("--to-dir", type=path_arg, metavar="DIR",
                        help="with --tables: write each table T to DIR/T.jsonl")
    # A new table or an existing one: argparse refuses both in one line.
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--create-table", action="store_true",
                        help="create the target table(s) with the source's settings as at --at (see --without)")
    parser.add_argument("--without", default="", metavar="SETTINGS",
                        help="with --create-table: settings of the source to leave out, comma-separated: sse, "
                             "stream, table-class, deletion-protection, on-demand-throughput, warm-throughput, "
                             "tags, ttl, pitr, resource-policy, autoscaling, or settings for all (default: none)")
    parser.add_argument("--with-later-indexes", action="store_true",
                        help="with --create-table: also create GSIs the table got after --at")
    existing.add_argument("--into-existing", action="store_true", help="write into an existing --to-table")
    parser.add_argument("--clear-first", action="store_true",
                        help="delete every item of the target first (asks first; --yes to skip)")
    add_where(parser, "one condition over plain attribute names, e.g. \"status = 'shipped' AND total > 100\"")
    parser.add_argument("--dry-run", action="store_true", help="report items and bytes; write nothing")
    add_engine(parser)
    add_yes(parser)
    parser.add_argument("--workers", type=int_range("--workers", 1, 256), default=8,
                        help="parallel BatchWriteItem workers (1 to 256)")
    parser.add_argument("--max-rate", type=positive_float("--max-rate"), default=None, metavar="ITEMS_PER_S",
                        help="write-rate cap")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Replay and print a summary."""
    from changelog.aws import aws_boundary, client
    from replayer.restoring.replay import check_file_target, clear_table, open_items, replay_to_file, select_counts
    from replayer.restoring.table_settings import apply_after_create, parse_without, restore_plan
    from replayer.restoring.target import prepare_target
    from replayer.restoring.writer import WriteSettings

    # Every refusal that needs no data comes first: a typo costs nothing.
    without = parse_without(args.without)
    if (without or args.with_later_indexes) and not args.create_table:
        raise UsageError("--without and --with-later-indexes choose how --create-table creates the table: "
                         "add --create-table, or drop them")
    check_table_options(args)
    if args.tables or args.to_table_suffix is not None or args.to_dir is not None:
        return _run_many(args, without)
    check_export_options(args)
    if args.to_export or args.via_import:
        from ddb_rewind.commands.replay_export import run_export

        return run_export(args)
    if args.to_file:
        check_file_target(args.to_file, args.overwrite)
    elif args.clear_first and not args.dry_run:
        check_can_confirm(args.yes, f"--clear-first (deletes every item of {args.to_table})")
    store = open_store(args.store)
    if args.to_file and args.to_file != "-":
        check_outside(store, args.to_file, "--to-file")
    con = open_items(store, args.table, args.at, where=args.where, engine=args.engine)
    selection = select_counts(con)
    what = f"{selection.items:,} items ({selection.image_bytes:,} bytes of DynamoDB JSON) as of {format_time(args.at)}"
    messages = sys.stderr if args.to_file == "-" else sys.stdout  # stdout carries the data then
    say_erasures(store, [args.table], messages)
    if args.to_file:
        if args.dry_run:
            print(f"dry run: would write {what} to {args.to_file}", file=messages)
            return 0
        from changelog.meta import key_names

        count = replay_to_file(con, args.to_file, selection.items, overwrite=args.overwrite,
                               keys=key_names(store, args.table))
        print(f"wrote {count:,} items as of {format_time(args.at)} to {args.to_file}", file=messages)
        return 0
    with aws_boundary(f"replay into table {args.to_table!r}"):
        dynamodb = client("dynamodb")
        meta = read_meta(store, args.table)
        plan = (restore_plan(store, args.table, args.to_table, meta, args.at, without=without,
                             with_later_indexes=args.with_later_indexes) if args.create_table else None)
        action = prepare_target(dynamodb, args.to_table, meta, create=args.create_table,
                                into_existing=args.into_existing, dry_run=args.dry_run,
                                request=plan.request if plan else None)
        if args.dry_run:
            verb = "create and fill" if action == "created" else "write into existing"
            clear = " after clearing it" if args.clear_first else ""
            print(f"dry run: would {verb} table {args.to_table}{clear}: {what}")
            if plan and action == "created":
                print("\n".join(["settings it would be created with:", *plan.lines()]))
            return 0
        if plan and action == "created":
            apply_after_create(dynamodb, client("application-autoscaling"), plan)
            for note in plan.not_applied:
                print(f"not applied: {note}")
        settings = WriteSettings(workers=args.workers, max_rate=args.max_rate)
        if args.clear_first:
            confirm(args.yes, f"delete every item of table {args.to_table!r} before writing {what}?")
            cleared = clear_table(dynamodb, args.to_table, settings)
            print(f"cleared {cleared.written:,} items from {args.to_table}")
        report, errors = _restore(con, dynamodb, args.to_table, selection.items, settings)
    rate = report.written / report.seconds if report.seconds else 0.0
    print(f"replayed {what} into {args.to_table}: written {report.written:,}, retried {report.retried:,}, "
          f"failed {report.failed:,} in {report.seconds:.1f}s ({rate:,.0f} items/s)")
    for error in errors:
        print(f"  error: {error}")
    if report.failed:
        raise WriteFailed(f"{report.failed:,} of {selection.items:,} items could not be written into "
                          f"{args.to_table} ({report.written:,} were); {RERUN}")
    return 0


def check_table_options(args: argparse.Namespace) -> None:
    """Refuse the options that act on a target table when the target is a file, a directory or an export."""
    outputs = (("--to-file", args.to_file), ("--to-export", args.to_export), ("--to-dir", args.to_dir))
    files = next((f"{option} {value}" for option, value in outputs if value is not None), None)
    if files is None:
        return
    given = [option for option, value in (("--create-table", args.create_table),
                                          ("--into-existing", args.into_existing),
                                          ("--clear-first", args.clear_first)) if value]
    if given:
        verb, pronoun = ("act", "them") if len(given) > 1 else ("acts", "it")
        raise UsageError(f"{', '.join(given)} {verb} on a target table, and {files} writes files: drop {pronoun}, "
                         "or restore into a table with --to-table")


def say_erasures(store: Store, tables: list[str], out: TextIO) -> None:
    """A restore says when ``forget`` left items out of the table's history."""
    from changelog.forgotten import erasure_note

    for table in tables:
        note = erasure_note(store, table)
        if note:
            print(note, file=out)


def check_export_options(args: argparse.Namespace) -> None:
    """Options that only make sense with an export or an import, and the ones an import excludes."""
    exporting = bool(args.to_export or args.via_import)
    if args.via_import and not args.to_table:
        raise UsageError("--via-import needs --to-table NAME (the new table ImportTable creates)")
    if args.via_import and (args.into_existing or args.clear_first):
        raise UsageError("--via-import always creates a new table: drop --into-existing/--clear-first, or "
                         "restore into an existing table without --via-import")
    if args.import_prefix and not args.via_import:
        raise UsageError("--import-prefix is only used with --via-import")
    if args.export_file_mb is not None and not exporting:
        raise UsageError("--export-file-mb is only used with --to-export or --via-import")


def _run_many(args: argparse.Namespace, without: frozenset[str]) -> int:
    """``--tables``: every table to the same moment, one summary, non-zero if any failed."""
    from changelog.aws import aws_boundary, client
    from replayer.restoring.many import parse_tables, restore_many, target_names
    from replayer.restoring.writer import WriteSettings

    if not args.tables or (args.to_table_suffix is None and args.to_dir is None):
        raise UsageError("--tables goes with --to-table-suffix SUFFIX or --to-dir DIR (and they with --tables)")
    if args.where or args.clear_first:
        raise UsageError("--where and --clear-first restore one table: use --table")
    tables = parse_tables(args.tables)
    targets = target_names(tables, args.to_table_suffix, args.to_dir)
    store = open_store(args.store)
    if args.to_dir is not None:
        check_outside(store, args.to_dir, "--to-dir")
    say_erasures(store, tables, sys.stdout)
    with aws_boundary(f"replay of {len(tables)} tables"):
        outcomes = restore_many(
            store, tables, args.at, targets, to_files=args.to_dir is not None, overwrite=args.overwrite,
            create=args.create_table, into_existing=args.into_existing, without=without,
            with_later_indexes=args.with_later_indexes, dry_run=args.dry_run,
            settings=WriteSettings(workers=args.workers, max_rate=args.max_rate),
            clients=lambda: (client("dynamodb"), client("application-autoscaling")))
    verb = "would restore" if args.dry_run else "restored"
    for outcome in outcomes:
        done = f"{outcome.items:,} items" if args.dry_run else f"{outcome.written:,} of {outcome.items:,} items"
        print(f"{outcome.table} -> {outcome.target}: " + (f"failed: {outcome.error}" if outcome.error else done))
    failed = [o.table for o in outcomes if o.error]
    print(f"{verb} {len(outcomes) - len(failed)} of {len(outcomes)} tables as of {format_time(args.at)}")
    if failed:
        raise WriteFailed(f"{len(failed)} of {len(outcomes)} tables failed ({', '.join(failed)}); "
                          "each line above says why")
    return 0


def _restore(con: Any, dynamodb: Any, name: str, total: int,
             settings: WriteSettings) -> tuple[WriteReport, list[str]]:
    """replay_to_table, saying on Ctrl-C or a failure how far it got and that running it again is safe."""
    from botocore.exceptions import BotoCoreError, ClientError

    from changelog.aws import translate
    from replayer.restoring.replay import replay_to_table

    progress = Progress("replay", total=total)
    try:
        return replay_to_table(con, dynamodb, name, total, settings, progress=progress)
    except KeyboardInterrupt:
        progress.close()
        raise Interrupted(f"interrupted after writing {progress.done:,} of {total:,} items into {name}; "
                          f"{RERUN}") from None
    except (BotoCoreError, ClientError) as exc:
        progress.close()
        raise translate(exc, f"writing into {name} stopped after {progress.done:,} of {total:,} items "
                             f"({RERUN})") from None
