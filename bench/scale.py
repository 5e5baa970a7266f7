"""State at T at scale: DuckDB against Spark (local mode) on the same synthetic store, in one run.

Run ``python -m bench.scale [--changes N] [--keys K] [--dir DIR]`` (defaults 20,000,000 changes over
4,000,000 keys, two days). It builds the store with ``bench.storegen``, then times, each phase in
its own process (peak memory and CPU belong to one phase only), the state at the last second:

- ``duckdb``: ``ddb-rewind replay --to-file out.parquet``'s path (``open_items``, ``select_counts``,
  ``replay_to_file``) with the default engine;
- ``spark``: the same with ``--engine spark`` (Spark computes, the result comes back as Arrow);
- ``spark-job``: ``replayer/engines/spark_job.py``, Spark computing and writing Parquet part files itself:
  the path that scales out on EMR Serverless or Glue.

Spark runs ``local[*]`` with ``SPARK_DRIVER_MEMORY`` (default here 6g). Every output is checked to
hold the same items before figures are printed. Throughput per core is changes read per CPU-second
of the whole process tree (the JVM included), the figure docs/scale.md extrapolates from; ``engine``
wall time excludes starting the JVM (a cluster's executors are already running).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.replay import fingerprint
from bench.storegen import GeneratedStore, generate_store

TABLE = "orders"
REPO = Path(__file__).resolve().parent.parent


def _phase_replay(store: Path, at_us: int, out: Path, engine: str) -> dict[str, Any]:
    from changelog.store import LocalStore
    from changelog.timefmt import from_micros
    from replayer.restoring.replay import open_items, replay_to_file, select_counts

    con = open_items(LocalStore(store), TABLE, from_micros(at_us), engine=engine)
    selection = select_counts(con)
    items = replay_to_file(con, str(out / f"{engine}.parquet"), selection.items)
    return {"items": items, "output": str(out / f"{engine}.parquet")}


def _phase_job(store: Path, at_us: int, out: Path) -> dict[str, Any]:
    from changelog.timefmt import format_time, from_micros
    from replayer.engines import spark_job

    items = spark_job.run(["--store", str(store), "--table", TABLE, "--at", format_time(from_micros(at_us)),
                           "--output", str(out / "spark-job")])
    return {"items": items, "output": str(out / "spark-job" / "*.parquet")}


PHASES = {
    "duckdb": lambda store, at_us, out: _phase_replay(store, at_us, out, "duckdb"),
    "spark": lambda store, at_us, out: _phase_replay(store, at_us, out, "spark"),
    "spark-job": _phase_job,
}


def _descendants_cpu() -> float:
    """CPU seconds of this process's live descendants (Spark's JVM), which exit unreaped by us."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(value) for value in fields[11:15]) / tick
    mine, found = {os.getpid()}, True
    while found:
        found = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                found = True
    return sum(times[pid] for pid in mine if pid != os.getpid())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_phase(name: str, store: Path, at_us: int, out: Path, driver_memory: str) -> dict[str, Any]:
    """One phase in a fresh interpreter (and, for Spark, a fresh JVM); wall and CPU of the whole tree."""
    command = [sys.executable, "-m", "bench.scale", "--phase", name, "--store", str(store),
               "--at-us", str(at_us), "--out", str(out)]
    env = {**os.environ, "SPARK_DRIVER_MEMORY": driver_memory, "PYTHONPATH": str(REPO)}
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures.update(wall=wall, cpu=_children_cpu() - cpu_before + figures["jvm_cpu"])
    return figures


def main(argv: list[str] | None = None) -> None:
    """Build a store, time every phase, print a table of figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20_000_000)
    parser.add_argument("--keys", type=int, default=4_000_000)
    parser.add_argument("--days", type=float, default=2.0, help="time range of the changes")
    parser.add_argument("--driver-memory", default="6g", help="SPARK_DRIVER_MEMORY for the Spark phases")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one, removed after)")
    parser.add_argument("--reuse-store", action="store_true", help="with --dir: keep a store built by an earlier run")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--at-us", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        if args.phase != "duckdb":
            from changelog.spark import session

            session()  # started before the clock: a cluster's JVMs are already up
        started = time.perf_counter()
        figures = PHASES[args.phase](args.store, args.at_us, args.out)
        figures.update(engine_wall=time.perf_counter() - started, jvm_cpu=_descendants_cpu())
        print(json.dumps(figures))
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="rewind-scale-"))
    try:
        _bench(args, work)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, work: Path) -> None:
    started = time.perf_counter()
    if args.reuse_store and (work / "store").is_dir():
        # The same seed and sizes give the same store: time the engines again without rebuilding it.
        from changelog.state import coverage
        from changelog.store import LocalStore

        cov = coverage(LocalStore(work / "store"), TABLE)
        generated = GeneratedStore(work / "store", TABLE, args.changes, args.keys, cov.change_files,
                                   cov.earliest_us or 0, cov.latest_us or 0, cov.bytes_stored)
    else:
        generated = generate_store(work / "store", TABLE, changes=args.changes, keys=args.keys, days=args.days)
    print(f"store: {generated.changes:,} changes over {generated.keys:,} keys in {generated.files:,} files, "
          f"{generated.bytes_written / 1e9:.2f} GB, ready in {time.perf_counter() - started:.0f} s", flush=True)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    results = {}
    for name in PHASES:
        results[name] = run_phase(name, generated.root, generated.last_us, out, args.driver_memory)
        figures = results[name]
        print(f"{name:<10} wall {figures['wall']:7.1f} s (engine {figures['engine_wall']:7.1f} s)  "
              f"cpu {figures['cpu']:7.1f} s  items {figures['items']:,}  "
              f"{args.changes / figures['cpu']:,.0f} changes per CPU-second", flush=True)
    prints = {name: fingerprint(figures["output"]) for name, figures in results.items()}
    if len(set(prints.values())) != 1:
        raise SystemExit(f"the engines disagree: {prints}")
    print(f"all engines hold the same {prints['duckdb'][0]:,} items; cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
