"""A compaction snapshot: the Lambda's path (DuckDB) against the Spark job's (local mode), on one store.

Run ``python -m bench.compaction [--changes N] [--keys K] [--dir DIR]`` (defaults 2,000,000 changes
over 400,000 keys). It builds a store with ``bench.storegen``, copies it, and times the snapshot at the
last second on each copy: ``build_snapshot`` (what the compactor Lambda runs) and
``compactor/spark_snapshot.py`` with ``--publish`` (what EMR Serverless runs; Spark's start-up is
timed apart, since a cluster's executors are already up). Both snapshots are checked to be the same
parts, byte for byte, before the figures are printed (JSON on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.storegen import generate_store

TABLE = "orders"
WRITER = "00000000beef"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compaction", description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=400_000)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one, removed after)")
    parser.add_argument("--driver-memory", default="4g", help="SPARK_DRIVER_MEMORY (local mode: the executors' too)")
    args = parser.parse_args(argv)
    os.environ["SPARK_DRIVER_MEMORY"] = args.driver_memory
    work = args.dir or Path(tempfile.mkdtemp(prefix="ddb-rewind-bench-compaction-"))
    try:
        print(json.dumps(_bench(work, args.changes, args.keys), indent=1))
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


def _bench(work: Path, changes: int, keys: int) -> dict[str, object]:
    from changelog.store import LocalStore
    from changelog.timefmt import format_time, from_micros
    from compactor import spark_snapshot
    from compactor.snapshots import build_snapshot

    started = time.perf_counter()
    generated = generate_store(work / "lambda", TABLE, changes=changes, keys=keys)
    shutil.copytree(work / "lambda", work / "spark")
    at_us = generated.last_us - generated.last_us % 1_000_000
    figures: dict[str, object] = {"changes": changes, "keys": keys, "store_bytes": generated.bytes_written,
                                  "generate_s": round(time.perf_counter() - started, 1)}

    started = time.perf_counter()
    lambda_manifest = build_snapshot(LocalStore(work / "lambda"), TABLE, at_us, writer_id=WRITER)
    figures["lambda_duckdb_s"] = round(time.perf_counter() - started, 1)

    from changelog.spark import session

    started = time.perf_counter()
    session()
    figures["spark_start_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    spark_manifest = spark_snapshot.run(["--store", str(work / "spark"), "--table", TABLE,
                                         "--at", format_time(from_micros(at_us)), "--writer", WRITER, "--publish"])
    figures["spark_job_s"] = round(time.perf_counter() - started, 1)

    if spark_manifest.part_sums != lambda_manifest.part_sums:
        raise SystemExit("the Spark snapshot's parts differ from the Lambda's")
    figures.update(items=lambda_manifest.items, tombstones=lambda_manifest.tombstones,
                   parts=len(lambda_manifest.parts), identical_parts=True)
    return figures


if __name__ == "__main__":
    main()
