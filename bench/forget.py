"""Benchmark: erasing one item from a store of many hourly change files, against a full rewrite.

Builds a store with ``bench/storegen.py`` (N changes over K keys spread over ``days`` of hourly
partitions), then, in the same run:

1. ``forget`` for one key (an item with versions in several hours): files whose footers were read,
   files whose keys were read, files rewritten, seconds (plan and erasure);
2. the anchor, a full rewrite: every change file read whole, filtered without the key and written
   again (to a scratch directory, so the store is not touched twice): files read and rewritten,
   seconds.

Prints the figures; asserts nothing.

    python -m bench.forget [--changes 20000000] [--keys 1000000] [--days 365] [--store DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.storegen import generate_store
from changelog.changefile import parquet_bytes
from changelog.state import change_files
from changelog.store import LocalStore
from compactor.forget import forget, plan_item


def _a_key(store: LocalStore, table: str) -> tuple[str, int]:
    """An item with versions (the middle key of the middle file: neither end of the key range, where statistics
    would rule out more files than for a typical key), and how many change files the store holds."""
    files = change_files(store, table)
    middle = pq.read_table(store.root / files[len(files) // 2], columns=["item_key"])
    key = str(middle.column("item_key")[middle.num_rows // 2].as_py())
    return key, len(files)


def _full_rewrite(store: LocalStore, table: str, key: str, scratch: Path) -> tuple[int, int, float]:
    """(files read, files written, seconds) of the naive erasure: every file read whole and written again."""
    started = time.perf_counter()
    read = written = 0
    for index, path in enumerate(change_files(store, table)):
        rows = pq.read_table(pa.BufferReader(store.read(path)))
        read += 1
        kept = rows.filter(pc.not_equal(rows.column("item_key"), key))
        (scratch / f"{index:06d}.parquet").write_bytes(parquet_bytes(kept))
        written += 1
    return read, written, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20_000_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=365.0)
    parser.add_argument("--store", type=Path, help="an empty directory for the store (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-forget-") as tmp:
        root = args.store or Path(tmp) / "store"
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        generated = generate_store(root, changes=args.changes, keys=args.keys, days=args.days)
        print(f"store: {generated.changes:,} changes over {generated.keys:,} keys in {generated.files:,} files "
              f"({generated.bytes_written / 1e6:,.0f} MB), {args.days:g} days; built in "
              f"{time.perf_counter() - started:,.1f} s")
        store = LocalStore(root)
        key, files = _a_key(store, generated.table)

        started = time.perf_counter()
        plan = plan_item(store, generated.table, key)
        planned = time.perf_counter() - started
        result = forget(store, plan, "bench")
        total = time.perf_counter() - started
        print(f"forget one key ({plan.versions:,} versions): {files:,} footers read, {plan.files_read:,} files' keys "
              f"read ({plan.files_skipped:,} ruled out by statistics), {len(plan.change_files):,} files rewritten; "
              f"plan {planned:,.1f} s, total {total:,.1f} s ({len(result.erasures)} round(s))")

        scratch = Path(tmp) / "rewrite"
        scratch.mkdir()
        read, written, seconds = _full_rewrite(store, generated.table, key, scratch)
        print(f"anchor, full rewrite: {read:,} files read whole, {written:,} files written, {seconds:,.1f} s")
        print(f"forget / full rewrite: {total / seconds:.3f} of the time, "
              f"{len(plan.change_files) / max(written, 1):.4f} of the files written")


if __name__ == "__main__":
    main()
