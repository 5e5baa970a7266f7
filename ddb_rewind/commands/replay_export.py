"""``replay --to-export`` and ``replay --to-table NAME --via-import``: the state at TIME as a DynamoDB
export, and a new table made from it by DynamoDB's ImportTable (parsing done in replay; printing here)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from changelog.errors import Interrupted, TargetExists, UsageError
from changelog.meta import read_meta
from changelog.progress import Progress
from changelog.store import EXPORTS_DIR, Store, check_outside, open_location, open_store
from changelog.timefmt import format_time, to_micros
from ddb_rewind.commands.replay import say_erasures

if TYPE_CHECKING:
    from replayer.restoring.import_table import ImportRequest

MIB = 1024 * 1024


def _destination_uri(args: argparse.Namespace, store: Store) -> str:
    # Both options were checked by their argparse types (ddb_rewind.args.location_arg).
    if args.to_export:
        check_outside(store, args.to_export, "--to-export")
        return str(args.to_export)
    if args.import_prefix:
        check_outside(store, args.import_prefix, "--import-prefix")
        return str(args.import_prefix)
    if not store.uri.startswith("s3://"):
        raise UsageError("--via-import needs --import-prefix s3://bucket/prefix when the store is local "
                         "(ImportTable reads only S3)")
    return f"{store.uri}/{EXPORTS_DIR}"


def _open_destination(uri: str, *, create: bool) -> Store | None:
    """The export's destination; None for a local directory not made yet (a dry run creates nothing)."""
    if not create and not uri.startswith("s3://"):
        from pathlib import Path

        if not Path(uri).expanduser().exists():
            return None
    return open_location(uri, create=create, what="export destination", option="--to-export")


def _key_prefix(target: Store, folder: str) -> tuple[str, str]:
    from changelog.store import S3Store

    assert isinstance(target, S3Store)  # _destination_uri admits only s3:// for an import
    return target.bucket, f"{target.prefix}/{folder}/data/" if target.prefix else f"{folder}/data/"


def run_export(args: argparse.Namespace) -> int:
    """Write the export; with --via-import, then import it into a new table and report the counts."""
    from changelog.aws import aws_boundary, client
    from replayer.restoring.ddb_export import (
        DEFAULT_FILE_BYTES,
        check_destination,
        export_folder,
        export_id,
        plan_export,
    )
    from replayer.restoring.import_table import import_request
    from replayer.restoring.replay import export_image_lengths, open_items, select_counts
    from replayer.restoring.target import table_exists

    store = open_store(args.store)
    uri = _destination_uri(args, store)
    meta = read_meta(store, args.table)
    folder = export_folder(export_id(args.table, to_micros(args.at), args.where.text if args.where else ""))
    max_bytes = args.export_file_mb * MIB if args.export_file_mb else DEFAULT_FILE_BYTES
    request = None
    if args.via_import:
        # Refusals that need no data first: a table that exists, indexes an import cannot make.
        request = import_request(args.to_table, meta, "bucket", "prefix")
        with aws_boundary(f"looking up table {args.to_table!r}"):
            if table_exists(client("dynamodb"), args.to_table):
                raise TargetExists(f"target table {args.to_table!r} already exists: ImportTable always creates a "
                                   "new table, pick a new name")
    target = _open_destination(uri, create=False)  # made only once the state is read: a refusal leaves nothing
    if target is not None:
        check_destination(target, folder, args.overwrite)
    con = open_items(store, args.table, args.at, where=args.where)
    if target is None and not args.dry_run:
        target = _open_destination(uri, create=True)
    say_erasures(store, [args.table], sys.stdout)
    if args.dry_run:
        plan = plan_export(export_image_lengths(con), max_bytes)
        print(f"dry run: would write {plan.items:,} items as of {format_time(args.at)} ({plan.line_bytes:,} bytes "
              f"of JSON lines, before gzip) in {plan.files:,} data files to {uri}/{folder}")
        if request is not None:
            print(f"dry run: then ImportTable would create table {args.to_table} from them")
            if request.not_carried:
                print(f"dry run: not carried by ImportTable: {', '.join(request.not_carried)}")
        return 0
    assert target is not None
    total = select_counts(con).items
    written = _write(con, target, folder, meta, args, total, max_bytes)
    if request is None:
        return 0
    return _import(args.to_table, target, folder, meta, total, written)


def _write(con: Any, target: Store, folder: str, meta: dict[str, Any], args: argparse.Namespace, total: int,
           max_bytes: int) -> int:
    from replayer.restoring.ddb_export import export_images
    from replayer.restoring.replay import export_batches

    table_arn = str((meta.get("description") or {}).get("TableArn") or "")
    progress = Progress("export", total=total)
    try:
        files, _summary = export_images(target, folder, export_batches(con), table_arn=table_arn,
                                        export_time=args.at, overwrite=args.overwrite, max_file_bytes=max_bytes,
                                        progress=progress)
    except KeyboardInterrupt:
        progress.close()
        raise Interrupted(f"interrupted after exporting {progress.done:,} of {total:,} items; {target.uri}/{folder} "
                          "is incomplete (no manifest-summary.json): re-run with --overwrite") from None
    progress.close()
    print(f"wrote {total:,} items as of {format_time(args.at)} in {len(files):,} data files "
          f"({sum(f.size_bytes for f in files):,} bytes gzip) to {target.uri}/{folder}")
    return len(files)


def _import(name: str, target: Store, folder: str, meta: dict[str, Any], total: int, files: int) -> int:
    from changelog.aws import aws_boundary, client
    from replayer.restoring.ddb_export import IMPORT_MAX_OBJECTS
    from replayer.restoring.import_table import check_result, import_request, wait_for_import

    if files > IMPORT_MAX_OBJECTS:
        raise UsageError(f"the export has {files:,} data files but ImportTable takes at most {IMPORT_MAX_OBJECTS:,}: "
                         "re-run with a larger --export-file-mb and --overwrite")
    bucket, key_prefix = _key_prefix(target, folder)
    request: ImportRequest = import_request(name, meta, bucket, key_prefix)
    with aws_boundary(f"importing s3://{bucket}/{key_prefix} into table {name!r}"):
        dynamodb = client("dynamodb")
        arn = dynamodb.import_table(**request.arguments)["ImportTableDescription"]["ImportArn"]
        print(f"importing into new table {name}: {arn}", flush=True)
        progress = Progress("import", total=total)
        try:
            result = wait_for_import(dynamodb, arn, progress)
        except KeyboardInterrupt:
            progress.close()
            raise Interrupted(f"stopped waiting; the import goes on in DynamoDB: aws dynamodb describe-import "
                              f"--import-arn {arn}") from None
    print(f"import {result.status}: imported {result.imported:,}, processed {result.processed:,}, "
          f"errors {result.errors:,} (of {total:,} items)")
    check_result(result, name, total)
    if request.not_carried:
        print(f"not carried by ImportTable (set them on {name} now): {', '.join(request.not_carried)}")
    return 0
