"""``ddb-rewind replay``: the table as it was at TIME, into a table or a file."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from changelog.errors import Interrupted, UsageError, WriteFailed
from changelog.meta import read_meta
from changelog.progress import Progress
from changelog.store import open_store
from changelog.timefmt import format_time
from ddb_rewind.args import (
    add_engine,
    add_store,
    add_table,
    add_where,
    add_yes,
    check_can_confirm,
    confirm,
    int_range,
    positive_float,
    table_arg,
    time_arg,
)

if TYPE_CHECKING:
    from replayer.writer import WriteReport, WriteSettings

RERUN = "re-running with --into-existing is safe (puts are idempotent)"


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser("replay", help="rebuild the table as it was at TIME")
    add_table(parser)
    add_store(parser)
    parser.add_argument("--at", required=True, type=time_arg, metavar="TIME", help="ISO 8601 or epoch seconds")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-table", type=table_arg, metavar="NAME", help="DynamoDB table to write the items into")
    target.add_argument("--to-file", metavar="PATH", help="file to write: .jsonl, .parquet or .avro (lossless), "
                             ".csv; .parquet and .csv add one typed column per attribute; "
                             "- writes JSON lines to stdout (messages go to stderr)")
    target.add_argument("--to-export", metavar="DEST",
                        help="directory or s3://bucket/prefix to write a DynamoDB export (AWSDynamoDB/<id>/) into")
    parser.add_argument("--overwrite", action="store_true", help="replace --to-file or the export if it exists")
    parser.add_argument("--via-import", action="store_true",
                        help="create --to-table with DynamoDB's ImportTable from an export written to S3")
    parser.add_argument("--import-prefix", metavar="S3URI",
                        help="s3://bucket/prefix for --via-import's export (default: <store>/imports on an S3 store)")
    parser.add_argument("--export-file-mb", type=int_range("--export-file-mb", 1, 4096), default=None,
                        metavar="MB", help="largest data file of an export, in MiB of JSON lines (default 512)")
    parser.add_argument("--create-table", action="store_true", help="create --to-table from meta.json")
    parser.add_argument("--into-existing", action="store_true", help="write into an existing --to-table")
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
    from replayer.replay import check_file_target, clear_table, open_items, replay_to_file, select_counts
    from replayer.target import prepare_target
    from replayer.writer import WriteSettings

    # Every refusal that needs no data comes first: a typo costs nothing.
    check_export_options(args)
    if args.to_export or args.via_import:
        from ddb_rewind.commands.replay_export import run_export

        return run_export(args)
    if args.to_file:
        check_file_target(args.to_file, args.overwrite)
    elif args.clear_first and not args.dry_run:
        check_can_confirm(args.yes, f"--clear-first (deletes every item of {args.to_table})")
    store = open_store(args.store)
    con = open_items(store, args.table, args.at, where=args.where, engine=args.engine)
    selection = select_counts(con)
    what = f"{selection.items:,} items ({selection.image_bytes:,} bytes of DynamoDB JSON) as of {format_time(args.at)}"
    if args.to_file:
        messages = sys.stderr if args.to_file == "-" else sys.stdout  # stdout carries the data then
        if args.dry_run:
            print(f"dry run: would write {what} to {args.to_file}", file=messages)
            return 0
        count = replay_to_file(con, args.to_file, selection.items, overwrite=args.overwrite)
        print(f"wrote {count:,} items as of {format_time(args.at)} to {args.to_file}", file=messages)
        return 0
    with aws_boundary(f"replay into table {args.to_table!r}"):
        dynamodb = client("dynamodb")
        action = prepare_target(dynamodb, args.to_table, read_meta(store, args.table), create=args.create_table,
                                into_existing=args.into_existing, dry_run=args.dry_run)
        if args.dry_run:
            verb = "create and fill" if action == "created" else "write into existing"
            clear = " after clearing it" if args.clear_first else ""
            print(f"dry run: would {verb} table {args.to_table}{clear}: {what}")
            return 0
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


def _restore(con: Any, dynamodb: Any, name: str, total: int,
             settings: WriteSettings) -> tuple[WriteReport, list[str]]:
    """replay_to_table, saying on Ctrl-C or a failure how far it got and that running it again is safe."""
    from botocore.exceptions import BotoCoreError, ClientError

    from changelog.aws import translate
    from replayer.replay import replay_to_table

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
