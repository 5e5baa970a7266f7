"""Athena (Trino) SQL for state at T, history and diff over the Glue tables the stack creates.

The queries are the specification's (``changelog.spec``) with its logical relations bound to the
stack's Glue tables (infra/template.yaml): ``changes`` (partitioned by ``dt``/``hour``, projected)
and ``snapshots`` (one partition per snapshot directory, injected). A snapshot is read through its
manifest alone: its directory and the ``"$path"`` of each part it lists, so a loser's unlisted parts
and manifest.json are never read. The changes are narrowed to the hour partitions the plan reads
(``state.plan_state``). Coverage is checked here, before any SQL is printed, as for ``replay``.

Athena reads Parquet timestamps at millisecond precision; the answer is exact only when every time
it compares is a whole millisecond (DynamoDB Streams: seconds; Kinesis: milliseconds unless the
destination was set to microseconds). That is checked on the files the query reads, and a table
with sub-millisecond times is refused rather than answered approximately.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow.dataset as pads
import sqlglot
from sqlglot import exp

from changelog.errors import UsageError
from changelog.layout import hour_partition, partition_of
from changelog.snapshot import SNAPSHOT_SCHEMA
from changelog.spec import (
    STATE_COLUMNS,
    differing_sql,
    history_sql,
    literal,
    render,
    state_sql,
    window_keys_sql,
)
from changelog.state import StatePlan, change_files, snapshot_parts
from changelog.store import Store
from replayer.restoring.export import JSONL_ITEM


def default_database(table: str) -> str:
    """The Glue database name the deploy guide uses for a table: ``rewind_<table>``, lowercase."""
    return ("rewind_" + re.sub(r"[^a-z0-9_]", "_", table.lower()))[:255]  # Glue's longest name


# The stack's GlueDatabaseName (infra/template.yaml): Athena's own rule for a database name.
_DATABASE = re.compile(r"[a-z0-9_]{1,255}")


def database_problem(name: str) -> str | None:
    """Why ``name`` is not a Glue database name Athena can query (None when it is one)."""
    if _DATABASE.fullmatch(name):
        return None
    shown = name if len(name) <= 60 else name[:57] + "..."
    return (f"{shown!r} is not a Glue database name Athena can query (1 to 255 lowercase letters, digits and "
            "'_', as the stack's GlueDatabaseName)")


@dataclass(frozen=True)
class Catalog:
    """Where the stack's Glue tables are, and the s3:// URI of the store they read."""

    database: str
    store_uri: str

    def __post_init__(self) -> None:
        # The name is printed into SQL that users paste: it must be one plain identifier, nothing more.
        problem = database_problem(self.database)
        if problem:
            raise UsageError(f"--database {problem}")

    def table(self, name: str) -> str:
        """A quoted ``"database"."name"``."""
        return f'"{self.database}"."{name}"'


def _partition_range(partitions: Sequence[str]) -> str:
    """A condition on ``dt``/``hour`` keeping the hour partitions from the first to the last given.

    Written per column, so Athena's partition projection prunes on it.
    """
    if not partitions:
        return "FALSE"
    low, high = (part.split("/") for part in (min(partitions), max(partitions)))
    (low_dt, low_hour), (high_dt, high_hour) = ([p.split("=", 1)[1] for p in part] for part in (low, high))
    return (f"dt BETWEEN {literal(low_dt)} AND {literal(high_dt)} "
            f"AND (dt > {literal(low_dt)} OR hour >= {literal(low_hour)}) "
            f"AND (dt < {literal(high_dt)} OR hour <= {literal(high_hour)})")


def _changes(catalog: Catalog, files: Sequence[str], name: str) -> str:
    partitions = sorted({partition_of(path) for path in files})
    return f"(SELECT * FROM {catalog.table('changes')} WHERE {_partition_range(partitions)}) AS {name}"


def _snapshot(catalog: Catalog, plan: StatePlan, name: str) -> str:
    parts = snapshot_parts(plan)
    if not parts:
        nulls = ", ".join(f"CAST(NULL AS {'TIMESTAMPTZ' if f.name == 'event_time' else 'VARCHAR'}) AS {f.name}"
                          for f in SNAPSHOT_SCHEMA)
        return f"(SELECT {nulls} WHERE FALSE) AS {name}"
    directory = parts[0].split("/")[-2]
    paths = ", ".join(literal(f"{catalog.store_uri}/{part}") for part in parts)
    return (f'(SELECT {STATE_COLUMNS} FROM {catalog.table("snapshots")} '
            f'WHERE snapshot = {literal(directory)} AND "$path" IN ({paths})) AS {name}')


def _trino(sql: str) -> str:
    """Render spec SQL for Athena: a moment becomes a plain TIMESTAMP in UTC, as the Glue column is typed."""
    tree = sqlglot.parse_one(render(sql, "trino"), read="trino")

    def naive(node: exp.Expression) -> exp.Expression:
        if (isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.TIMESTAMPTZ)
                and isinstance(node.this, exp.Literal) and node.this.name.endswith("+00:00")):
            return exp.cast(exp.Literal.string(node.this.name.removesuffix("+00:00").replace("T", " ")),
                            exp.DataType.build("TIMESTAMP"))
        if isinstance(node, exp.DataType) and node.is_type(exp.DataType.Type.TIMESTAMPTZ):
            return exp.DataType.build("TIMESTAMP")
        return node

    return tree.transform(naive).sql("trino", pretty=True)


def state_query(catalog: Catalog, plan: StatePlan) -> str:
    """Athena SQL for the state the plan describes (``spec.STATE_COLUMNS``)."""
    sql = state_sql(plan.table, plan.at_us, changes=_changes(catalog, plan.change_files, "changes"),
                    snapshot=_snapshot(catalog, plan, "snapshot"), changes_from_us=plan.changes_from_us)
    return _trino(f"SELECT * FROM ({sql}) AS state ORDER BY item_key")


def unload_query(catalog: Catalog, plan: StatePlan, destination: str) -> str:
    """An UNLOAD writing the state as gzip'd ``{"Item": ...}`` lines: the data files of a DynamoDB export."""
    if not destination.startswith("s3://"):
        raise UsageError(f"--unload {destination!r}: Athena unloads to s3://bucket/prefix/ only")
    before, after = (literal(text) for text in JSONL_ITEM)
    sql = state_sql(plan.table, plan.at_us, changes=_changes(catalog, plan.change_files, "changes"),
                    snapshot=_snapshot(catalog, plan, "snapshot"), changes_from_us=plan.changes_from_us)
    select = _trino(f"SELECT concat({before}, image, {after}) AS line FROM ({sql}) AS state")
    return (f"UNLOAD (\n{select}\n) TO {literal(destination.rstrip('/') + '/data/')}\n"
            "WITH (format = 'TEXTFILE', compression = 'GZIP')")


def history_query(catalog: Catalog, store: Store, table: str, canonical_key: str) -> str:
    """Athena SQL for every change of one item (``spec.HISTORY_COLUMNS``), in version order."""
    return _trino(history_sql(table, canonical_key, _changes(catalog, change_files(store, table), "changes")))


def diff_query(catalog: Catalog, store: Store, plans: tuple[StatePlan, StatePlan]) -> str:
    """Athena SQL for the items whose stored version and image differ between two moments, by key."""
    before, after = plans
    low, high = hour_partition(before.at_us), hour_partition(after.at_us)
    window = [p for p in change_files(store, before.table) if low <= partition_of(p) <= high]
    sides = []
    for name, plan in (("diff_from", before), ("diff_to", after)):
        state = state_sql(plan.table, plan.at_us, changes=_changes(catalog, plan.change_files, f"{name}_changes"),
                          snapshot=_snapshot(catalog, plan, f"{name}_snapshot"),
                          changes_from_us=plan.changes_from_us, only_keys="diff_keys")
        sides.append(f"{name} AS ({state})")
    keys = window_keys_sql(before.at_us, after.at_us, _changes(catalog, window, "window_changes"))
    # Athena compares image text: a write that rewrote an item unchanged is not reported; one that
    # only reordered a set is (ddb-rewind diff compares as DynamoDB does).
    differing = differing_sql("diff_from", "diff_to", "before IS DISTINCT FROM after")
    return _trino(f"WITH diff_keys AS ({keys}), {', '.join(sides)} {differing}")


def sub_millisecond_times(store: Store, changes: Sequence[str], snapshot: Sequence[str] = ()) -> int:
    """How many rows of these files carry a time that is not a whole millisecond (Athena would truncate it)."""
    filesystem, base = store.arrow()
    con = duckdb.connect()
    count = 0
    for paths in (changes, snapshot):
        if not paths:
            continue
        dataset = pads.dataset([f"{base}/{path}" for path in paths], filesystem=filesystem, format="parquet")
        con.register("times", dataset)
        ((found,),) = con.execute("SELECT count(*) FROM times WHERE epoch_us(event_time) % 1000 <> 0").fetchall()
        count += int(found)
    return count


def check_millisecond_times(store: Store, table: str, changes: Sequence[str], snapshot: Sequence[str] = ()) -> None:
    """Refuse when Athena's millisecond timestamps could not give the exact answer."""
    found = sub_millisecond_times(store, changes, snapshot)
    if found:
        raise UsageError(
            f"{found:,} changes of {table!r} carry sub-millisecond times, which Athena reads truncated to "
            "milliseconds, so its answer could be wrong: use 'ddb-rewind replay|diff|history --engine spark' "
            "or the DuckDB default instead"
        )
