"""Audit SQL: ``<table>_at(T)`` with a filter, against the raw latest-per-key query, in one run.

Run ``python -m bench.sql [--changes N] [--keys K]`` (defaults 5,000,000 over 1,000,000 keys). It builds
a synthetic store with ``bench.storegen`` (capture-style files: no attribute summaries in their
footers) and times, each in a fresh DuckDB session:

- ``raw``: the anchor, one latest-per-key query with ``json_extract_string`` over the same files;
- ``raw, through Arrow``: the same query reading the files as Arrow datasets, as a locked session must
  (``changelog.source``: DuckDB's own file access cannot be granted for reading only);
- ``sql, scanned``: ``ddb-rewind sql``'s path (SqlSession) when attribute discovery must read every image;
- ``sql, summarized``: the same after the compactor's merge gave every file its attribute summary
  (``changelog.attributes``), so discovery reads footers;
- ``changes by day``: ``SELECT date_trunc('day', event_time), count(*) FROM changes GROUP BY 1``
  against the same query over ``read_parquet`` (no de-duplication), before and after the merge
  (after it, an hour's one de-duplicated file is read as it is: ``changelog.footer``).

Each phase's seconds are split into opening the session, making the ``<table>_at`` macro
(attribute discovery) and the query itself. All three must count the same items.

``--rounds N`` then times, N times in alternating order, the raw query over the merged files (read
by DuckDB, then through Arrow) against ``sql, summarized``, and gives the median of the rounds' ratios
(single runs on a shared machine move by 30% or more).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as pads

from bench.storegen import generate_store
from changelog.state import change_files
from changelog.store import LocalStore
from changelog.timefmt import format_time, from_micros

TABLE = "orders"
STATUS = "shipped"


def _raw(store: LocalStore, at: str, through_arrow: bool = False) -> tuple[int, dict[str, float]]:
    started = time.perf_counter()
    paths = [str(store.root / path) for path in change_files(store, TABLE)]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if through_arrow:
        # What register_parquet hands a session that will be locked (page checksums verified as it reads).
        scan = pads.ParquetFragmentScanOptions(page_checksum_verification=True)
        con.register("files", pads.dataset(paths, format=pads.ParquetFileFormat(default_fragment_scan_options=scan)))
        files = "files"
    else:
        files = "read_parquet([" + ",".join(f"'{path}'" for path in paths) + "])"
    ((count,),) = con.execute(
        f"""SELECT count(*) FROM (
              SELECT new_image FROM {files}
              WHERE event_time <= TIMESTAMPTZ '{at}'
              QUALIFY row_number() OVER (PARTITION BY item_key ORDER BY event_time DESC, sequence_number DESC) = 1
                  AND event_name <> 'REMOVE')
            WHERE json_extract_string(new_image, '$.status.S') = '{STATUS}'"""
    ).fetchall()
    return int(count), {"query": time.perf_counter() - started}


def _session(store: LocalStore, at: str) -> tuple[int, dict[str, float]]:
    from replayer.engines.views import SqlSession, ensure_plain_macros

    started = time.perf_counter()
    session = SqlSession(store)
    opened = time.perf_counter()
    query = f"SELECT count(*) FROM {TABLE}_at('{at}') WHERE status = '{STATUS}'"
    ensure_plain_macros(session.con, store, query)
    discovered = time.perf_counter()
    result = session.query(query)
    done = time.perf_counter()
    assert result is not None
    ((count,),) = result[1]
    return int(count), {"open": opened - started, "discover": discovered - opened, "query": done - discovered}


BY_DAY = "SELECT date_trunc('day', event_time) AS day, count(*) FROM {} GROUP BY day ORDER BY day"


def _by_day(store: LocalStore) -> dict[str, tuple[list[Any], float]]:
    from replayer.engines.views import SqlSession

    session = SqlSession(store)
    timed = {}
    for name, relation in (("raw", "changes__raw"), ("changes", "changes")):
        started = time.perf_counter()
        rows = session.con.execute(BY_DAY.format(relation)).fetchall()
        timed[name] = (rows, time.perf_counter() - started)
    return timed


def _by_day_line(label: str, timed: dict[str, tuple[list[Any], float]]) -> str:
    assert timed["raw"][0] == timed["changes"][0], "changes and the raw files disagree"
    raw, view = timed["raw"][1], timed["changes"][1]
    return f"changes by day, {label}: {view:.2f} s vs raw read_parquet {raw:.2f} s  {view / raw:5.2f}x raw"


def _summarize(store: LocalStore, last_us: int) -> float:
    from compactor.merge import merge_small_files

    started = time.perf_counter()
    merge_small_files(store, TABLE, last_us + 7_200_000_000)  # every hour closed
    return time.perf_counter() - started


def _raw_arrow(store: LocalStore, at: str) -> tuple[int, dict[str, float]]:
    return _raw(store, at, through_arrow=True)


def _rounds(store: LocalStore, at: str, rounds: int) -> None:
    """The raw query over the merged files (read by DuckDB, then through Arrow) against ``sql, summarized``,
    in an order that turns every round."""
    ratios: dict[str, list[float]] = {"raw": [], "raw, through Arrow": []}
    for number in range(rounds):
        phases = [_raw, _raw_arrow, _session]
        phases = phases[number % 3:] + phases[:number % 3]
        timed = {phase: phase(store, at) for phase in phases}
        sql_count, sql = timed[_session]
        seconds = sum(sql.values())
        line = f"round {number + 1}: sql, summarized {seconds:.2f} s"
        for name, phase in (("raw", _raw), ("raw, through Arrow", _raw_arrow)):
            count, raw = timed[phase]
            assert count == sql_count, f"{name} and sql disagree: {count} vs {sql_count}"
            ratios[name].append(seconds / sum(raw.values()))
            line += f", {name} {sum(raw.values()):.2f} s ({ratios[name][-1]:.2f}x)"
        print(line, flush=True)
    for name, each in ratios.items():
        print(f"sql, summarized / {name} over the same merged files: median {statistics.median(each):.2f}x "
              f"of {rounds} rounds ({min(each):.2f}x to {max(each):.2f}x; target <= 1.3x)")


def _line(name: str, figures: dict[str, float], anchor: float) -> str:
    total = sum(figures.values())
    parts = ", ".join(f"{k} {v:.2f}s" for k, v in figures.items())
    return f"{name:<18} {total:7.2f} s  ({parts})  {total / anchor:5.2f}x raw"


def main(argv: list[str] | None = None) -> None:
    """Build a store, time each phase, print seconds beside the raw anchor."""
    parser = argparse.ArgumentParser(prog="python -m bench.sql", description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=5_000_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one, removed after)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="after the merge, time the raw query over the merged files and `sql, summarized` "
                             "this many times, in alternating order, and print the median ratio")
    args = parser.parse_args(argv)
    work = args.dir or Path(tempfile.mkdtemp(prefix="rewind-bench-sql-"))
    try:
        shutil.rmtree(work / "store", ignore_errors=True)  # a store left in --dir would be added to
        generated = generate_store(work / "store", TABLE, changes=args.changes, keys=args.keys)
        store = LocalStore(work / "store")
        at = format_time(from_micros(generated.first_us + (generated.last_us - generated.first_us) * 9 // 10))
        print(f"{args.changes:,} changes over {args.keys:,} keys in {generated.files:,} files; "
              f"SELECT count(*) FROM {TABLE}_at('{at}') WHERE status = '{STATUS}'")
        results: dict[str, tuple[int, dict[str, float]]] = {"raw": _raw(store, at),
                                                             "raw, through Arrow": _raw_arrow(store, at)}
        results["sql, scanned"] = _session(store, at)
        before_merge = _by_day(store)
        merged = _summarize(store, generated.last_us)
        results["sql, summarized"] = _session(store, at)
        after_merge = _by_day(store)
        counts = {count for count, _ in results.values()}
        assert len(counts) == 1, f"the phases disagree: {results}"
        anchor = sum(results["raw"][1].values())
        for name, (_, figures) in results.items():
            print(_line(name, figures, anchor))
        print(_by_day_line("capture files", before_merge))
        print(_by_day_line("merged files", after_merge))
        print(f"(the merge that wrote the summaries: {merged:.1f} s, once, offline in the compactor; "
              f"{counts.pop():,} items matched)")
        if args.rounds > 0:
            _rounds(store, at, args.rounds)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

