"""Replay throughput: the table at a moment into a file, against the raw DuckDB query and a naive replay.

Run ``python -m bench.replay [--changes N] [--keys K] [--snapshot]`` (defaults 5,000,000 over
1,000,000 keys). It builds a synthetic store with ``bench.storegen``, then times, each in its own
process so that peak memory (VmHWM) belongs to one phase only:

- ``state``: what ``ddb-rewind replay --to-file out.parquet`` runs: ``open_items`` (coverage check,
  plan, state view), ``select_counts`` and ``replay_to_file``; ``state-jsonl`` the same into .jsonl;
- ``raw``: the floor, one DuckDB latest-per-key query over the same files written with COPY;
- ``naive``: a Python dict of key -> latest version fed by pyarrow batches, written with pyarrow;
- with ``--snapshot``: ``compactor.snapshots.build_snapshot`` at 80% of the time range, then
  ``state`` again, which now reads the snapshot plus the changes after it.

Every output is checked to hold the same items before figures are printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from bench.storegen import generate_store
from changelog.state import change_files
from changelog.store import LocalStore
from changelog.timefmt import from_micros

TABLE = "orders"
REPO = Path(__file__).resolve().parent.parent


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(step: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = step()
    return value, time.perf_counter() - started


def phase_state(store: LocalStore, at: datetime, out: Path) -> dict[str, Any]:
    """The CLI's path: open_items, select_counts, replay_to_file."""
    from replayer.restoring.replay import open_items, replay_to_file, select_counts

    con, opened = _timed(lambda: open_items(store, TABLE, at))
    selection, counted = _timed(lambda: select_counts(con))
    written, wrote = _timed(lambda: replay_to_file(con, str(out), selection.items, overwrite=True))
    return {"items": written, "seconds": opened + counted + wrote,
            "detail": {"open_items": opened, "select_counts": counted, "replay_to_file": wrote}}


def phase_raw(store: LocalStore, at: datetime, out: Path) -> dict[str, Any]:
    """The floor: one latest-per-key query over the same files, COPY to zstd Parquet."""
    started = time.perf_counter()
    files = [str(store.root / path) for path in change_files(store, TABLE)]
    listing = "[" + ",".join(f"'{path}'" for path in files) + "]"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"""COPY (
              SELECT item_key, keys, new_image AS item FROM read_parquet({listing})
              WHERE event_time <= TIMESTAMPTZ '{at.isoformat()}'
              QUALIFY row_number() OVER (PARTITION BY item_key ORDER BY event_time DESC, sequence_number DESC) = 1
                  AND event_name <> 'REMOVE'
            ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"""
    )
    seconds = time.perf_counter() - started
    return {"items": pq.ParquetFile(out).metadata.num_rows, "seconds": seconds}


NAIVE_COLUMNS = ["item_key", "keys", "event_name", "event_time", "sequence_number", "new_image"]


def phase_naive(store: LocalStore, at: datetime, out: Path) -> dict[str, Any]:
    """What one writes by hand: pyarrow batches into a dict of key -> latest version, then pyarrow out."""
    started = time.perf_counter()
    at_us = int(at.timestamp() * 1_000_000)
    latest: dict[str, tuple[tuple[int, int, str], str, str, str | None]] = {}
    for path in change_files(store, TABLE):
        for batch in pq.ParquetFile(store.root / path).iter_batches(batch_size=65_536, columns=NAIVE_COLUMNS):
            keys, key_text, names, times, sequences, images = (
                batch.column(name).to_pylist() if name != "event_time" else batch.column(name).cast(pa.int64())
                .to_pylist() for name in NAIVE_COLUMNS
            )
            for key, text, name, moment, sequence, image in zip(
                keys, key_text, names, times, sequences, images, strict=True
            ):
                if moment > at_us:
                    continue
                version = (moment, len(sequence), sequence)
                current = latest.get(key)
                if current is None or version > current[0]:
                    latest[key] = (version, name, text, image)
    live = [(key, value) for key, value in latest.items() if value[1] != "REMOVE"]
    table = pa.table({
        "item_key": [key for key, _ in live],
        "keys": [value[2] for _, value in live],
        "item": [value[3] for _, value in live],
    })
    pq.write_table(table, out, compression="zstd")
    return {"items": len(live), "seconds": time.perf_counter() - started}


def phase_snapshot_build(store: LocalStore, at: datetime, out: Path) -> dict[str, Any]:
    """Build (and publish) a compaction snapshot at ``at``."""
    from compactor.snapshots import build_snapshot

    at_us = int(at.timestamp() * 1_000_000)
    manifest, seconds = _timed(lambda: build_snapshot(store, TABLE, at_us))
    return {"items": manifest.items, "seconds": seconds, "detail": {"tombstones": manifest.tombstones}}


PHASES: dict[str, Callable[[LocalStore, datetime, Path], dict[str, Any]]] = {
    "state": phase_state,
    "state-jsonl": phase_state,
    "state-avro": phase_state,
    "state-csv": phase_state,
    "raw": phase_raw,
    "naive": phase_naive,
    "snapshot-build": phase_snapshot_build,
    "state-from-snapshot": phase_state,
}


def run_phase(name: str, store: Path, at_us: int, out: Path) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; returns its figures plus its peak memory."""
    command = [sys.executable, "-m", "bench.replay", "--phase", name, "--store", str(store),
               "--at-us", str(at_us), "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(name: str, store: Path, at_us: int, out: Path) -> None:
    started = _cpu_seconds()
    figures = PHASES[name](LocalStore(store), from_micros(at_us), out)
    figures["cpu"] = _cpu_seconds() - started
    figures["peak_mb"] = _peak_mb()
    print(json.dumps(figures))


def fingerprint(path: str | Path) -> tuple[int, int]:
    """Items and an order-independent hash of (item_key, item) of Parquet output (a path or a glob)."""
    con = duckdb.connect()
    (row,) = con.execute(f"SELECT count(*), sum(hash(item_key, item))::HUGEINT FROM read_parquet('{path}')").fetchall()
    return int(row[0]), int(row[1] or 0)


def main(argv: list[str] | None = None) -> None:
    """Build a store, time every phase, print a table of figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=5_000_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=2.0, help="time range of the changes")
    parser.add_argument("--snapshot", action="store_true", help="also replay from a snapshot at 80%% of the range")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline (slow at large N)")
    parser.add_argument("--no-jsonl", action="store_true", help="skip the .jsonl variant")
    parser.add_argument("--formats", action="store_true", help="also replay into .avro and .csv")
    parser.add_argument("--only", help="comma-separated phases to run (e.g. raw,state,state-csv)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the phases this many times, in reversed order every other round, and give each "
                             "ratio as the median of the rounds' ratios (this VM's runs vary by 10%% or more)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one, removed after)")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--at-us", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        _child(args.phase, args.store, args.at_us, args.out)
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="rewind-bench-"))
    try:
        _bench(args, work)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, work: Path) -> None:
    root = work / "store"
    if root.exists():
        shutil.rmtree(root)
    outputs = work / "out"
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir(parents=True, exist_ok=True)
    generated, seconds = _timed(lambda: generate_store(root, TABLE, changes=args.changes, keys=args.keys,
                                                       days=args.days))
    print(f"store: {generated.changes:,} changes over {generated.keys:,} keys, {generated.files} files, "
          f"{generated.bytes_written / 1e6:,.0f} MB, built in {seconds:.1f} s", flush=True)
    at_us = generated.last_us
    plan = [("state", "state.parquet"), ("raw", "raw.parquet")]
    if not args.no_jsonl:
        plan.append(("state-jsonl", "state.jsonl"))
    if args.formats:
        plan += [("state-avro", "state.avro"), ("state-csv", "state.csv")]
    if not args.no_naive:
        plan.append(("naive", "naive.parquet"))
    if args.only:
        wanted = args.only.split(",")
        plan = [step for step in plan if step[0] in wanted]
    results: dict[str, dict[str, Any]] = {}
    rounds: list[dict[str, dict[str, Any]]] = []
    for number in range(max(1, args.rounds)):
        if args.rounds > 1:
            print(f"round {number + 1}:", flush=True)
        this: dict[str, dict[str, Any]] = {}
        for name, file_name in plan if number % 2 == 0 else plan[::-1]:
            this[name] = run_phase(name, root, at_us, outputs / file_name)
            _report(name, this[name], generated.changes)
        rounds.append(this)
    results = rounds[0]
    if args.snapshot:
        cut = generated.first_us + (generated.last_us - generated.first_us) * 4 // 5
        cut -= cut % 1_000_000
        results["snapshot-build"] = run_phase("snapshot-build", root, cut, outputs / "unused")
        _report("snapshot-build", results["snapshot-build"], None)
        results["state-from-snapshot"] = run_phase("state-from-snapshot", root, at_us,
                                                   outputs / "state-from-snapshot.parquet")
        _report("state-from-snapshot", results["state-from-snapshot"], generated.changes)
    _check(outputs, results)
    state = results["state"]["seconds"] if "state" in results else 0.0
    for name in ("state", "state-jsonl", "state-avro", "state-csv"):
        if name in results and "raw" in results:
            walls = [one[name]["seconds"] / one["raw"]["seconds"] for one in rounds]
            cpus = [one[name]["cpu"] / one["raw"]["cpu"] for one in rounds]
            spread = f" (rounds from {min(walls):.2f}x to {max(walls):.2f}x)" if len(rounds) > 1 else ""
            print(f"{name} / raw query: {statistics.median(walls):.2f}x wall{spread}, "
                  f"{statistics.median(cpus):.2f}x cpu (target <= 1.3x)")
    if "naive" in results:
        print(f"naive / state: {results['naive']['seconds'] / state:.1f}x faster wall, "
              f"{results['naive']['cpu'] / results['state']['cpu']:.1f}x cpu (target >= 20x)")
    if "state-from-snapshot" in results:
        print(f"state from snapshot / raw query: "
              f"{results['state-from-snapshot']['seconds'] / results['raw']['seconds']:.2f}x")
    peak = max(r["peak_mb"] for r in results.values())
    print(f"largest peak memory of any phase: {peak:,.0f} MB (target < 4,096 MB)")


def _report(name: str, figures: dict[str, Any], changes: int | None) -> None:
    rate = f"{changes / figures['seconds']:>12,.0f} changes/s" if changes else " " * 22
    detail = figures.get("detail") or {}
    extra = ", ".join(f"{k} {v:.2f}s" if isinstance(v, float) else f"{k} {v}" for k, v in detail.items())
    print(f"{name:<20} {figures['seconds']:>8.2f} s (cpu {figures['cpu']:>6.2f} s) {rate}  "
          f"{figures['items']:>10,} items  peak {figures['peak_mb']:>7,.0f} MB  {extra}", flush=True)


def _check(outputs: Path, results: dict[str, dict[str, Any]]) -> None:
    first = "state" if "state" in results else "raw"
    expected = fingerprint(outputs / f"{first}.parquet")
    for name in ("raw", "naive", "state-from-snapshot"):
        if name in results and fingerprint(outputs / f"{name}.parquet") != expected:
            raise SystemExit(f"{name} does not hold the same items as {first}")
    for name in ("state-jsonl", "state-avro", "state-csv"):
        if name in results and results[name]["items"] != expected[0]:
            raise SystemExit(f"{name} does not hold as many items as {first}")
    print(f"outputs agree: {expected[0]:,} items", flush=True)


if __name__ == "__main__":
    main()
