"""Export throughput: the table at a moment as a DynamoDB export (``replay --to-export``) next to .jsonl.

Run ``python -m bench.export [--changes N] [--keys K] [--file-mb MB]`` (defaults 2,000,000 over
500,000 keys). It builds a synthetic store with ``bench.storegen``, computes the state once
(``open_items``), then times writing it as ``.jsonl`` (``replay_to_file``) and as an export
(``export_images``: hashed-key order, gzip data files, manifests), and checks that the export holds
exactly the .jsonl's lines.
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.storegen import generate_store
from changelog.store import LocalStore
from changelog.timefmt import from_micros
from replayer.restoring.ddb_export import export_images
from replayer.restoring.replay import export_batches, open_items, replay_to_file, select_counts

TABLE = "orders"


def main() -> None:
    """Build, time, check, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=2_000_000)
    parser.add_argument("--keys", type=int, default=500_000)
    parser.add_argument("--file-mb", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as work:
        root = Path(work)
        generated = generate_store(root / "store", TABLE, changes=args.changes, keys=args.keys)
        store = LocalStore(root / "store")
        at = from_micros(generated.last_us)
        started = time.perf_counter()
        con = open_items(store, TABLE, at)
        items = select_counts(con).items
        state_s = time.perf_counter() - started
        started = time.perf_counter()
        replay_to_file(con, str(root / "state.jsonl"), items)
        jsonl_s = time.perf_counter() - started
        target = LocalStore(root / "export")
        started = time.perf_counter()
        files, summary = export_images(target, "AWSDynamoDB/bench", export_batches(con), table_arn="",
                                       export_time=datetime.now(UTC), overwrite=False,
                                       max_file_bytes=args.file_mb * 1024 * 1024)
        export_s = time.perf_counter() - started
        lines = sorted(line for f in files for line in
                       gzip.decompress((root / "export" / "AWSDynamoDB/bench" / f.path).read_bytes()).splitlines())
        assert lines == sorted((root / "state.jsonl").read_bytes().splitlines()), "export differs from .jsonl"
        raw = (root / "state.jsonl").stat().st_size
        packed = sum(f.size_bytes for f in files)
        print(f"store: {generated.changes:,} changes over {generated.keys:,} keys; state: {items:,} items "
              f"({raw / 1e6:,.0f} MB of JSON lines) in {state_s:.1f} s")
        print(f".jsonl:  {jsonl_s:6.1f} s  {items / jsonl_s:10,.0f} items/s  {raw / 1e6 / jsonl_s:6.1f} MB/s")
        print(f"export:  {export_s:6.1f} s  {items / export_s:10,.0f} items/s  {raw / 1e6 / export_s:6.1f} MB/s "
              f"-> {len(files)} data files, {packed / 1e6:,.0f} MB gzip ({packed / raw:.0%}), "
              f"itemCount {summary['itemCount']:,}")


if __name__ == "__main__":
    main()
