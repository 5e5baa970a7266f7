"""Diff between two moments: ``ddb-rewind diff`` against the raw SQL diff of the two states, in one run.

Run ``python -m bench.diff [--changes N] [--keys K] [--window-minutes M] [--store DIR]`` (defaults:
5,000,000 changes over 1,000,000 keys, a 60-minute window ending at the last change). It builds a
synthetic store with ``bench.storegen`` (or reuses ``--store``) and times:

- ``raw``: the anchor, one DuckDB query over the same files: the latest version per key at each
  moment and the keys whose version differs, images fetched (what any SQL diff must at least do);
- ``diff``: ``replayer.forensics.diff.diff_states`` (coverage check, both states for the window's keys, the
  attribute-path diff of every differing item) plus the JSON the CLI prints for it.

Both must name the same items. Prints seconds beside the anchor; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import duckdb

from bench.storegen import generate_store
from changelog.state import change_files, coverage
from changelog.store import LocalStore
from changelog.timefmt import from_micros

TABLE = "orders"


def _raw(store: LocalStore, from_us: int, to_us: int) -> tuple[int, float]:
    started = time.perf_counter()
    files = "[" + ",".join(f"'{store.root / path}'" for path in change_files(store, TABLE)) + "]"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")

    def latest(at_us: int) -> str:
        return (f"""SELECT item_key, event_name, sequence_number, new_image FROM read_parquet({files})
                    WHERE event_time <= TIMESTAMPTZ '{from_micros(at_us).isoformat()}'
                    QUALIFY row_number() OVER (PARTITION BY item_key
                                               ORDER BY event_time DESC, sequence_number DESC) = 1""")

    ((count,),) = con.execute(
        f"""SELECT count(*) FROM (
              SELECT f.new_image, t.new_image FROM ({latest(from_us)}) f FULL OUTER JOIN ({latest(to_us)}) t
                  ON f.item_key = t.item_key
              WHERE (f.event_name IS DISTINCT FROM t.event_name OR f.sequence_number IS DISTINCT FROM
                     t.sequence_number)
                AND NOT (coalesce(f.event_name, 'REMOVE') = 'REMOVE'
                         AND coalesce(t.event_name, 'REMOVE') = 'REMOVE'))"""
    ).fetchall()
    return int(count), time.perf_counter() - started


def _diff(store: LocalStore, from_us: int, to_us: int) -> tuple[int, float, float]:
    from ddb_rewind.commands.diff import write_json
    from replayer.forensics.diff import diff_states

    started = time.perf_counter()
    diff = diff_states(store, TABLE, from_us, to_us)
    computed = time.perf_counter()
    write_json(diff, io.StringIO())
    return len(diff.all()), computed - started, time.perf_counter() - computed


def main(argv: list[str] | None = None) -> None:
    """Build (or reuse) a store, time both, print seconds beside the anchor."""
    parser = argparse.ArgumentParser(prog="python -m bench.diff", description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=5_000_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--window-minutes", type=int, default=60)
    parser.add_argument("--store", type=Path, help="reuse a store built by bench.storegen (default: build one)")
    args = parser.parse_args(argv)
    if args.store is None:
        args.store = Path(tempfile.mkdtemp(prefix="rewind-bench-diff-")) / "store"
        generate_store(args.store, TABLE, changes=args.changes, keys=args.keys)
    store = LocalStore(args.store)
    latest = coverage(store, TABLE).latest_us
    assert latest is not None, "the store holds no changes"
    to_us = latest - latest % 1_000_000
    from_us = to_us - args.window_minutes * 60_000_000
    raw_items, raw_s = _raw(store, from_us, to_us)
    items, diff_s, json_s = _diff(store, from_us, to_us)
    print(f"{args.window_minutes}-minute window, {items:,} items differ (raw query: {raw_items:,})")
    print(f"raw SQL diff of the two states: {raw_s:6.2f} s   1.00x")
    print(f"diff_states + JSON output:      {diff_s + json_s:6.2f} s  {(diff_s + json_s) / raw_s:5.2f}x raw "
          f"(diff_states {diff_s:.2f} s, JSON {json_s:.2f} s)")


if __name__ == "__main__":
    main()
