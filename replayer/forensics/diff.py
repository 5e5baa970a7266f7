"""What changed in a table between two moments: items added, removed and changed, with attribute paths.

Both sides come from the one state query (``plan_state`` + ``open_state``), so a diff always agrees
with a restore at either moment. DuckDB narrows the candidates to keys whose version differs; Python
then compares the two images as DynamoDB does, so a write that changed nothing (or a value changed
and changed back) is not reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from changelog.attributes import AttributeTypes, summarize, summarized_names
from changelog.codec import dump_json
from changelog.connection import bounded_connection
from changelog.consistent import read_consistently, table_prefixes
from changelog.errors import UsageError
from changelog.layout import hour_partition, partition_of
from changelog.plain import columns_of
from changelog.predicate import Predicate, lock_down, parse_predicate
from changelog.record import SCHEMA
from changelog.source import register_parquet
from changelog.spec import differing_sql, window_keys_sql
from changelog.state import change_files, check_restorable, coverage, open_state, plan_state, snapshot_parts
from changelog.store import Store
from changelog.timefmt import format_time, from_micros
from replayer.forensics.attrdiff import PathChange, diff_items
from replayer.restoring.gc_pause import paused_gc
from replayer.restoring.outfile import output_file


@dataclass(frozen=True)
class ItemChange:
    """One item that differs: ``kind`` is ``added``, ``removed`` or ``changed``.

    ``before``/``after`` are the DynamoDB-JSON items at the two moments (None = absent).
    """

    kind: str
    item_key: str
    key: dict[str, Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    paths: tuple[PathChange, ...]

    def as_json(self) -> dict[str, Any]:
        """The JSON form: ``key`` + ``item`` for added/removed; ``key``, ``before``, ``after``, ``paths``."""
        if self.kind == "added":
            return {"key": self.key, "item": self.after}
        if self.kind == "removed":
            return {"key": self.key, "item": self.before}
        return {"key": self.key, "before": self.before, "after": self.after,
                "paths": [p.as_json() for p in self.paths]}


@dataclass(frozen=True)
class StateDiff:
    """Items added, removed and changed from ``from_us`` to ``to_us``, each list ordered by key.

    ``where`` is the text of the predicate that narrowed it (None: every item).
    """

    table: str
    from_us: int
    to_us: int
    added: tuple[ItemChange, ...]
    removed: tuple[ItemChange, ...]
    changed: tuple[ItemChange, ...]
    where: str | None = None

    def all(self) -> tuple[ItemChange, ...]:
        """Every item change, ordered by key."""
        return tuple(sorted(self.added + self.removed + self.changed, key=lambda c: c.item_key))

    def as_json(self) -> dict[str, Any]:
        """``{"from", "to", "added": [...], "removed": [...], "changed": [...]}``."""
        with paused_gc():
            return self._as_json()

    def _as_json(self) -> dict[str, Any]:
        return {
            "from": format_time(from_micros(self.from_us)),
            "to": format_time(from_micros(self.to_us)),
            "added": [c.as_json() for c in self.added],
            "removed": [c.as_json() for c in self.removed],
            "changed": [c.as_json() for c in self.changed],
        }


def check_window(store: Store, table: str, from_us: int, to_us: int,
                 con: duckdb.DuckDBPyConnection | None = None) -> None:
    """Refuse an inverted window (UsageError) or a moment outside coverage (TimeOutOfRange)."""
    if from_us > to_us:
        raise UsageError(
            f"--from {format_time(from_micros(from_us))} is after --to {format_time(from_micros(to_us))}: "
            "give the earlier time first"
        )
    cov = coverage(store, table, con)
    for moment in (from_us, to_us):
        check_restorable(cov, from_micros(moment), moment)


def _filter_sql(con: duckdb.DuckDBPyConnection, predicate: Predicate, known: set[str]) -> str:
    """A condition on ``key`` keeping keys whose item matches ``predicate`` on either side.

    The columns are typed from the items that changed. An attribute none of them holds is NULL in
    each (``status IS NULL`` keeps them all, ``status = 'x'`` none) when ``known`` (the attributes the
    table's summarized files name) holds it; a name neither knows is refused as a likely typo.
    The predicate runs in a second connection that holds only the two sides' plain columns (as
    Arrow) and is locked before it runs: it can read nothing else, on disk or on the network.
    """
    con.execute("CREATE OR REPLACE TEMP VIEW diff__docs AS "
                "SELECT image FROM diff_from UNION ALL SELECT image FROM diff_to")
    summary = summarize(con, "diff__docs", "image")
    if not summary and not con.execute("SELECT count(*) FROM diff__docs").fetchall()[0][0]:
        return "FALSE"  # nothing changed in the window: no item can match, whatever the names
    absent = {name: AttributeTypes(frozenset({"NULL"})) for name in predicate.columns
              if name in known and name not in summary}
    where_sql, extra = predicate.bind_columns(columns_of({**summary, **absent}, reserved=frozenset({"item_key"})))
    sides = {side: con.sql(f"SELECT item_key{extra} FROM diff_{side}").to_arrow_table() for side in ("from", "to")}
    judge = duckdb.connect()
    for side, rows in sides.items():
        judge.register(f"diff_{side}_plain", rows)
    lock_down(judge)
    try:
        matching = judge.sql(
            f"SELECT item_key FROM diff_from_plain WHERE ({where_sql}) "
            f"UNION SELECT item_key FROM diff_to_plain WHERE ({where_sql})"
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise UsageError(f"--where {predicate.text!r} failed: {str(exc).splitlines()[0]}") from None
    finally:
        judge.close()
    con.register("diff__matching", matching)
    return "key IN (SELECT item_key FROM diff__matching)"


def _differing_rows(store: Store, table: str, from_us: int, to_us: int,
                    predicate: Predicate | None, engine: str = "duckdb") -> list[tuple[Any, ...]]:
    """(key, keys, image before, image after) of every key whose version differs, by key."""
    con = bounded_connection()
    # Only an item with a change in (from, to] can differ: compute both states for those keys alone.
    # Files never span an hour partition, so the window's partitions hold every such change.
    low, high = hour_partition(from_us), hour_partition(to_us)
    window_files = [p for p in change_files(store, table) if low <= partition_of(p) <= high]
    plans = {"from": plan_state(store, table, from_us), "to": plan_state(store, table, to_us)}
    if engine == "spark":
        from changelog.spark import window_states

        for side, state in window_states(store, window_files, plans, from_us, to_us).items():
            con.execute("SET TimeZone = 'UTC'")
            con.register(f"diff_{side}__spark", state)
            con.execute(f"CREATE TEMP TABLE diff_{side} AS SELECT * FROM diff_{side}__spark")
    else:
        register_parquet(con, "diff__window", store, window_files, SCHEMA)
        con.execute(f"CREATE TEMP TABLE diff__keys AS {window_keys_sql(from_us, to_us, 'diff__window')}")
        for side, plan in plans.items():
            open_state(con, store, plan, name=f"diff_{side}", only_keys="diff__keys")
    condition = "TRUE"
    if predicate is not None:
        parts = [part for plan in plans.values() for part in snapshot_parts(plan)]
        condition = _filter_sql(con, predicate, summarized_names(store, [*window_files, *parts]))
    rows: list[tuple[Any, ...]] = con.execute(differing_sql("diff_from", "diff_to", condition)).fetchall()
    return rows


def diff_states(store: Store, table: str, from_us: int, to_us: int,
                where: str | Predicate | None = None, *, engine: str = "duckdb") -> StateDiff:
    """The difference between the table's state at ``from_us`` and at ``to_us``.

    ``where`` is a predicate over plain attribute names (``status = 'shipped'``; see
    changelog.predicate); an item is kept when it matches on either side. Raises UsageError for an
    inverted window or a bad predicate, TimeOutOfRange for a moment outside coverage. ``engine``
    computes the two states (DuckDB or Spark); the comparison after it is the same for both.
    """
    predicate = parse_predicate(where) if isinstance(where, str) else where
    check_window(store, table, from_us, to_us)
    rows = read_consistently(store, table_prefixes(table),
                             lambda: _differing_rows(store, table, from_us, to_us, predicate, engine))
    added: list[ItemChange] = []
    removed: list[ItemChange] = []
    changed: list[ItemChange] = []
    with paused_gc():
        _sort_changes(rows, added, removed, changed)
    return StateDiff(table, from_us, to_us, tuple(added), tuple(removed), tuple(changed),
                     predicate.text if predicate is not None else None)


def _sort_changes(rows: list[tuple[Any, ...]], added: list[ItemChange], removed: list[ItemChange],
                  changed: list[ItemChange]) -> None:
    for key_text, keys, before_text, after_text in rows:
        if before_text is not None and before_text == after_text:
            continue  # a new version with the same image: not a difference
        before = orjson.loads(before_text) if before_text is not None else None
        after = orjson.loads(after_text) if after_text is not None else None
        paths = tuple(diff_items(before, after))
        if not paths and before is not None and after is not None:
            continue
        kind = "added" if before is None else "removed" if after is None else "changed"
        change = ItemChange(kind, key_text, orjson.loads(keys), before, after, paths)
        {"added": added, "removed": removed, "changed": changed}[kind].append(change)


DIFF_SCHEMA = pa.schema([
    pa.field("change", pa.string(), nullable=False),
    pa.field("item_key", pa.string(), nullable=False),
    pa.field("keys", pa.string(), nullable=False),
    pa.field("before", pa.string()),
    pa.field("after", pa.string()),
    pa.field("paths", pa.string(), nullable=False),
])


def write_diff_parquet(diff: StateDiff, path: str, *, overwrite: bool = False) -> int:
    """Write one row per item change (images and paths as JSON text) to a Parquet file; returns rows.

    The file appears only when complete (replayer.restoring.outfile); an existing one is replaced only with
    ``overwrite``.
    """
    changes = diff.all()
    columns = {
        "change": [c.kind for c in changes],
        "item_key": [c.item_key for c in changes],
        "keys": [dump_json(c.key) for c in changes],
        "before": [dump_json(c.before) if c.before is not None else None for c in changes],
        "after": [dump_json(c.after) if c.after is not None else None for c in changes],
        "paths": [dump_json([p.as_json() for p in c.paths]) for c in changes],
    }
    table = pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in DIFF_SCHEMA], schema=DIFF_SCHEMA)
    with output_file(path, overwrite) as partial:
        pq.write_table(table, partial, compression="zstd")
    return len(changes)
