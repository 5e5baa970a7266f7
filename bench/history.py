"""Benchmark: one item's history in a store of N changes (default 5,000,000).

Builds a local store of change files laid out as the consumer writes them (hour partitions, rows
sorted by item_key, zstd, 64k-row groups with statistics), then times ``item_history`` for one key:
the first call (cold) and the median of five more. Prints the figures; asserts nothing.

    python -m bench.history [--changes 5000000] [--keys N] [--files 20] [--store DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from changelog.changefile import publish_change_file
from changelog.layout import hour_partition
from changelog.meta import meta_from_description, write_meta
from changelog.record import SCHEMA
from changelog.store import LocalStore, Store
from replayer.forensics.history import item_history

TABLE = "bench"
BASE_US = 1_750_000_000 * 1_000_000


def _key(n: int) -> str:
    return f'{{"pk":{{"S":"item-{n:08d}"}}}}'


def build_store(store: Store, changes: int, keys: int, files: int) -> None:
    """Write ``changes`` changes over ``keys`` items as ``files`` change files, one per hour."""
    write_meta(store, meta_from_description({
        "TableName": TABLE,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    }))
    per_file = -(-changes // files)
    for f in range(files):
        start, end = f * per_file, min(changes, (f + 1) * per_file)
        if start >= end:
            break
        numbers = range(start, end)
        # Multiplying by a prime spreads consecutive changes over every item.
        item = [(n * 7919) % keys for n in numbers]
        key_text = [_key(k) for k in item]
        pairs = list(zip(item, numbers, strict=True))
        new = [f'{{"pk":{{"S":"item-{k:08d}"}},"n":{{"N":"{n}"}},"status":{{"S":"s{n % 7}"}}}}' for k, n in pairs]
        hour_us = BASE_US + f * 3_600_000_000
        times = [hour_us + (n - start) * 1000 for n in numbers]
        sequences = [str(n).zfill(40) for n in numbers]
        columns = {
            "table_name": [TABLE] * len(item),
            "event_id": [f"e{n}" for n in numbers],
            "event_name": ["MODIFY"] * len(item),
            "event_time": times,
            "sequence_number": sequences,
            "shard_id": [None] * len(item),
            "item_key": key_text,
            "keys": key_text,
            "new_image": new,
            "old_image": [None] * len(item),
            "is_ttl_delete": [False] * len(item),
            "size_bytes": [len(s) for s in new],
        }
        table = pa.Table.from_arrays([pa.array(columns[fl.name], type=fl.type) for fl in SCHEMA], schema=SCHEMA)
        table = table.sort_by([("item_key", "ascending"), ("event_time", "ascending")])
        publish_change_file(store, TABLE, hour_partition(hour_us), sequences[0], sequences[-1], table, lifted=())


def main() -> None:
    """Build the store (unless it exists), time one item's history, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=5_000_000)
    parser.add_argument("--keys", type=int, help="distinct items (default: changes / 20)")
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--store", help="directory to build in (default: a temporary one)")
    args = parser.parse_args()
    keys = args.keys or max(1, args.changes // 20)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.store or scratch)
        root.mkdir(parents=True, exist_ok=True)
        store = LocalStore(root)
        started = time.perf_counter()
        if not store.list(f"tables/{TABLE}/changes/"):
            build_store(store, args.changes, keys, args.files)
        built = time.perf_counter() - started
        size = sum(store.sizes(f"tables/{TABLE}/").values())
        print(f"store: {args.changes:,} changes, {keys:,} items, {args.files} files, {size / 1e6:.1f} MB "
              f"(built in {built:.1f}s)")
        probe = json.loads(_key(keys // 2))
        key_text = json.dumps(probe)
        started = time.perf_counter()
        versions = item_history(store, TABLE, key_text)
        cold = time.perf_counter() - started
        warm = []
        for _ in range(5):
            started = time.perf_counter()
            item_history(store, TABLE, key_text)
            warm.append(time.perf_counter() - started)
        typical = statistics.median(warm)
        print(f"history of one item: {len(versions)} versions; first call {cold * 1000:.0f} ms, "
              f"median of 5 more {typical * 1000:.0f} ms")
        # The first call also hashes every file whole (the integrity check; verified files are
        # remembered per process by size and mtime): that difference is what checking costs.
        print(f"  integrity (first - later): {(cold - typical) * 1000:.0f} ms for {size / 1e6:.1f} MB, "
              f"{size / 1e9 / max(cold - typical, 1e-9):.2f} GB/s; the look-up itself "
              f"{typical / args.files * 1000:.2f} ms per file")


if __name__ == "__main__":
    main()
