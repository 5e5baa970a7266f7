"""The state of a table at a moment, computed and written by a Spark cluster: the ``spark-submit`` entry point.

Runs unchanged under ``spark-submit`` (EMR Serverless, a Glue job, any cluster) or ``python -m
replayer.spark_job``. The driver lists the store, refuses a moment outside coverage (exactly as
``replay`` does) and plans which files to read; the executors read them and run the spec's state
SQL (``changelog.spec``); the result is written by Spark itself, in key order, as a directory of
part files: ``parquet`` (item_key, keys, item, doc, as ``replay --to-file x.parquet``) or ``jsonl``
(``{"Item": ...}`` lines, as ``replay --to-file x.jsonl``; the parts concatenated in name order are
that file's bytes). See docs/engines.md for the exact EMR Serverless and Glue commands.
"""

from __future__ import annotations

import argparse
import sys

from changelog.errors import RewindError
from changelog.state import check_restorable, coverage, plan_state
from changelog.store import open_store
from changelog.timefmt import format_time, to_micros
from ddb_rewind.args import table_arg, time_arg
from replayer.export import JSONL_ITEM, PARQUET_SCHEMA
from replayer.spark_engine import spark_errors, state_frame


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spark_job.py", description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="s3://bucket/prefix or a local directory")
    parser.add_argument("--table", required=True, type=table_arg, help="source table name")
    parser.add_argument("--at", required=True, type=time_arg, metavar="TIME", help="ISO 8601 or epoch seconds")
    parser.add_argument("--output", required=True, help="directory to create (s3a://..., s3://... or local)")
    parser.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
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
    check_restorable(coverage(store, args.table, count_changes=False), args.at, at_us)
    state = state_frame(store, plan_state(store, args.table, at_us))
    with spark_errors(f"writing {args.output}"):
        # A range partitioning by key: part files in name order are in key order.
        ordered = state.orderBy("item_key").cache()
        if args.format == "parquet":
            # The columns of replay's .parquet file (the image is named "item" there).
            columns = zip(("item_key", "keys", "image", "doc"), PARQUET_SCHEMA.names, strict=True)
            ordered.selectExpr(*(f"{source} AS `{name}`" for source, name in columns)) \
                .write.mode("errorifexists").parquet(args.output)
        else:
            before, after = (text.replace("'", "\\'") for text in JSONL_ITEM)
            ordered.selectExpr(f"concat('{before}', image, '{after}') AS value") \
                .write.mode("errorifexists").text(args.output)
        count = int(ordered.count())
    print(f"wrote {count:,} items of {args.table} as of {format_time(args.at)} to {args.output}")
    return count


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
