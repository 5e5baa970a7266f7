"""The state of a table at a moment, computed and written by a Spark cluster: the ``spark-submit`` entry point.

Runs unchanged under ``spark-submit`` (EMR Serverless, a Glue job, any cluster) or ``python -m
replayer.engines.spark_job``. The driver lists the store, refuses a moment outside coverage (exactly as
``replay`` does) and plans which files to read; the executors read them and run the spec's state
SQL (``changelog.spec``); the result is written by Spark itself, in key order, as a directory of
part files: ``parquet`` (item_key, keys, item, doc, as ``replay --to-file x.parquet``) or ``jsonl``
(``{"Item": ...}`` lines, as ``replay --to-file x.jsonl``; the parts concatenated in name order are
that file's bytes) or ``dynamodb-json`` (the same lines gzip'd under ``OUTPUT/data/`` in hashed-key
order: the data files of a DynamoDB export, which ImportTable turns into a new table; ``--import-table``
writes that ImportTable request). See docs/engines.md for the exact EMR Serverless and Glue commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from changelog.argtypes import moment_arg, table_arg
from changelog.docs import DOC_FUNCTION
from changelog.errors import RewindError, UsageError
from changelog.meta import read_meta
from changelog.spark import register_doc_udf, spark_errors, state_frame
from changelog.state import check_restorable, coverage, plan_state
from changelog.store import open_store
from changelog.timefmt import format_time, to_micros
from replayer.restoring.export import JSONL_ITEM, PARQUET_SCHEMA
from replayer.restoring.import_table import import_request


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spark_job.py", description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="s3://bucket/prefix or a local directory")
    parser.add_argument("--table", required=True, type=table_arg, help="source table name")
    parser.add_argument("--at", required=True, type=moment_arg, metavar="TIME", help="ISO 8601 or epoch seconds")
    parser.add_argument("--output", required=True, help="directory to create (s3a://..., s3://... or local)")
    parser.add_argument("--format", choices=("parquet", "jsonl", "dynamodb-json"), default="parquet",
                        help="dynamodb-json: gzip'd {\"Item\": ...} lines under OUTPUT/data/, what ImportTable reads")
    parser.add_argument("--import-table", metavar="NAME", type=table_arg,
                        help="with dynamodb-json on s3://: also write the ImportTable request creating NAME")
    parser.add_argument("--import-request", metavar="FILE", default="import-table.json",
                        help="where --import-table writes it, for aws dynamodb import-table --cli-input-json "
                             "file://FILE (default: import-table.json)")
    return parser


# Arguments a Glue job adds to every run's command line; any other unknown argument is a mistake.
GLUE_ARGUMENTS = ("--JOB_", "--job-", "--TempDir", "--enable-", "--extra-", "--additional-python-modules",
                  "--python-modules-installer-option", "--scriptLocation", "--conf")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    mistakes = [arg for arg in unknown if arg.startswith("--") and not arg.startswith(GLUE_ARGUMENTS)]
    if mistakes:
        parser.error(f"unrecognized arguments: {' '.join(mistakes)}")
    return args


def run(argv: list[str] | None = None) -> int:
    """Compute and write the state; returns how many items were written. Raises RewindError."""
    args = _arguments(argv)
    store = open_store(args.store)
    at_us = to_micros(args.at)
    check_restorable(coverage(store, args.table), args.at, at_us)
    state = state_frame(store, plan_state(store, args.table, at_us))
    with spark_errors(f"writing {args.output}"):
        if args.format == "dynamodb-json":
            count = _write_import_data(state, args.output)
        else:
            # A range partitioning by key: part files in name order are in key order.
            ordered = state.orderBy("item_key").cache()
            if args.format == "parquet":
                # The columns of replay's .parquet file (the image is named "item" there).
                register_doc_udf(state.sparkSession)
                columns = zip(("item_key", "keys", "image", f"{DOC_FUNCTION}(image)"), PARQUET_SCHEMA.names,
                              strict=True)
                ordered.selectExpr(*(f"{source} AS `{name}`" for source, name in columns)) \
                    .write.mode("errorifexists").parquet(args.output)
            else:
                before, after = (text.replace("'", "\\'") for text in JSONL_ITEM)
                ordered.selectExpr(f"concat('{before}', image, '{after}') AS value") \
                    .write.mode("errorifexists").text(args.output)
            count = int(ordered.count())
    print(f"wrote {count:,} items of {args.table} as of {format_time(args.at)} to {args.output}")
    if args.import_table:
        _write_import_request(store, args, count)
    return count


def _write_import_data(state: Any, output: str) -> int:
    """The data files of a DynamoDB export: gzip'd {"Item": ...} lines, nothing else under data/.

    Lines go out in hashed-key order (AWS's import guide: key-sorted input makes a hot partition), and
    no _SUCCESS marker is written, since ImportTable reads every object under the prefix.
    """
    before, after = (text.replace("'", "\\'") for text in JSONL_ITEM)
    state.sparkSession.sparkContext._jsc.hadoopConfiguration().set(
        "mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
    from pyspark.sql import functions

    lines = state.orderBy(functions.md5(functions.col("item_key"))).cache()
    lines.selectExpr(f"concat('{before}', image, '{after}') AS value") \
        .write.mode("errorifexists").option("compression", "gzip").text(f"{output.rstrip('/')}/data")
    return int(lines.count())


def _write_import_request(store: Any, args: argparse.Namespace, count: int) -> None:
    """The ImportTable request for the data just written (keys, GSIs, billing from meta.json)."""
    scheme, _, rest = args.output.partition("://")
    if args.format != "dynamodb-json" or scheme not in ("s3", "s3a"):
        raise UsageError("--import-table needs --format dynamodb-json and an s3:// output (ImportTable reads S3)")
    bucket, _, prefix = rest.partition("/")
    request = import_request(args.import_table, read_meta(store, args.table), bucket,
                             f"{prefix.strip('/')}/data/".lstrip("/")).arguments
    Path(args.import_request).write_text(json.dumps(request, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"ImportTable request for {count:,} items written to {args.import_request}: "
          f"aws dynamodb import-table --cli-input-json file://{args.import_request}")


def main(argv: list[str] | None = None) -> int:
    """Run the job; a refusal or failure is one line on stderr and its documented exit code."""
    try:
        run(argv)
    except RewindError as exc:
        print(f"ddb-rewind: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
