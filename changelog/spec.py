"""The semantics of every answer, written once as SQL and transpiled to each engine's dialect.

State at T, one item's history and the items that differ between two moments are defined here over
logical relations (``changes``: rows of ``record.SCHEMA``; ``snapshot``: rows of
``snapshot.SNAPSHOT_SCHEMA``), in DuckDB's dialect, from the one ordering rule
(``record.counts_from`` with ``VERSION_ORDER``/``LATEST_FIRST``) and the one de-duplication rule
(``record.first_copies``).
SQLGlot turns them into Spark SQL and Trino (Athena) SQL, so no engine keeps its own copy that could
drift. Which files those relations hold (``state.plan_state``) and whether a moment is inside coverage
(``state.check_restorable``) are decided in Python before any engine runs: an engine never answers
outside coverage.

DuckDB's replay keeps its two-pass plan (``state.open_state``, faster on large tables) built from the
same pieces; tests prove it returns what ``state_sql`` returns.
"""

from __future__ import annotations

from typing import Literal

import sqlglot

from changelog.record import LATEST_FIRST, VERSION_ORDER, counts_from, first_copies, latest_counts_from
from changelog.timefmt import from_micros

Dialect = Literal["duckdb", "spark", "trino"]
DIALECTS: tuple[Dialect, ...] = ("duckdb", "spark", "trino")

# The columns of a state, in order (what a snapshot holds). The plain-JSON doc is derived afterwards,
# where an answer shows it (changelog.docs).
STATE_COLUMNS = "table_name, item_key, keys, event_name, event_time, sequence_number, image"
# The columns of one item's history, in order.
HISTORY_COLUMNS = "event_time, event_name, sequence_number, event_id, is_ttl_delete, old_image, new_image"
# The columns of a diff's differing rows, in order.
DIFF_COLUMNS = "key, keys, before, after"


def literal(text: str) -> str:
    """An SQL string literal (the same in every dialect here)."""
    return "'" + text.replace("'", "''") + "'"


def moment(at_us: int) -> str:
    """A time-zone-aware timestamp literal for a moment in µs, exact whatever the session's time zone."""
    return f"TIMESTAMPTZ '{from_micros(at_us).isoformat()}'"


def changes_condition(table: str, at_us: int, changes_from_us: int | None = None) -> str:
    """Which changes count for the state at ``at_us``: the table's, up to T, from the bootstrap copy floor on.

    A bootstrap is a whole copy: a change stamped before it must not bring back an item the copy
    does not hold (``state.copy_floor_us``).
    """
    condition = f"table_name = {literal(table)} AND event_time <= {moment(at_us)}"
    if changes_from_us is not None:
        condition += f" AND event_time >= {moment(changes_from_us)}"
    return condition


def state_sql(table: str, at_us: int, *, changes: str = "changes", snapshot: str = "snapshot",
              changes_from_us: int | None = None, tombstones: bool = False, only_keys: str | None = None) -> str:
    """One row per item key as of ``at_us`` (columns ``STATE_COLUMNS``).

    Each change counts once, at its earliest copy (de-duplicated before versions are ranked); the
    snapshot's rows compete with later changes by version, in the one order
    (``record.latest_counts_from``: an item's DynamoDB Streams rows by sequence); an item whose
    winning version is a REMOVE is absent, or kept as a tombstone (no image) with ``tombstones``.
    ``event_time`` is the time the version counts from. ``only_keys`` names a relation with an
    ``item_key`` column: the state of those keys alone.
    """
    key_filter = f" AND item_key IN (SELECT item_key FROM {only_keys})" if only_keys else ""
    live_only = "" if tombstones else " AND event_name <> 'REMOVE'"
    change_columns = "table_name, item_key, keys, event_name, event_time, sequence_number, new_image AS image"
    copies = first_copies(changes, "*", changes_condition(table, at_us, changes_from_us) + key_filter)
    # The source breaks a tie between a snapshot row and the change it folded in (same version, same
    # image): any engine then picks the same row.
    return f"""
        SELECT table_name, item_key, keys, event_name, counts_from AS event_time, sequence_number, image FROM (
            SELECT *, {latest_counts_from()} AS counts_from FROM (
                SELECT 0 AS src, {change_columns} FROM ({copies}) AS c
                UNION ALL
                SELECT 1 AS src, {STATE_COLUMNS} FROM {snapshot} WHERE TRUE{key_filter}
            ) AS versions
        ) AS timed
        QUALIFY row_number() OVER (PARTITION BY item_key ORDER BY {LATEST_FIRST}, src) = 1{live_only}
    """


def history_sql(table: str, canonical_key: str, changes: str = "changes") -> str:
    """Every change of one item (columns ``HISTORY_COLUMNS``), each once, in version order.

    ``event_time`` is the time each version counts from (``record.counts_from``): times never go
    back along a history, even where the stream's clock stepped back.

    The filter is a constant on ``item_key``, which the Parquet readers compare with row-group
    statistics (files are sorted by item_key), so a big store is mostly skipped.
    """
    where = f"item_key = {literal(canonical_key)} AND table_name = {literal(table)}"
    columns = HISTORY_COLUMNS.replace("event_time", "counts_from AS event_time", 1)
    return (f"SELECT {columns} FROM (SELECT *, {counts_from()} AS counts_from "
            f"FROM ({first_copies(changes, '*', where)}) AS c) AS h "
            f"ORDER BY {VERSION_ORDER}, event_id")


def window_keys_sql(from_us: int, to_us: int, changes: str = "changes") -> str:
    """Keys with a change in (from, to]: the only ones whose state can differ between the two moments."""
    return (f"SELECT DISTINCT item_key FROM {changes} "
            f"WHERE event_time > {moment(from_us)} AND event_time <= {moment(to_us)}")


def differing_sql(before: str, after: str, condition: str = "TRUE") -> str:
    """Keys whose version differs between two states (columns ``DIFF_COLUMNS``), by key.

    ``before``/``after`` are state relations; ``condition`` may narrow on ``key``. Whether two
    different versions hold different items is decided afterwards (replayer.forensics.attrdiff), in Python.
    """
    return f"""
        SELECT {DIFF_COLUMNS} FROM (
            SELECT coalesce(t.item_key, f.item_key) AS key, coalesce(t.keys, f.keys) AS keys,
                   f.image AS before, t.image AS after
            FROM {before} AS f FULL OUTER JOIN {after} AS t ON f.item_key = t.item_key
            WHERE f.item_key IS NULL OR t.item_key IS NULL
               OR f.event_time <> t.event_time OR f.sequence_number <> t.sequence_number
        ) AS d WHERE {condition}
        ORDER BY key
    """


def diff_sql(table: str, from_us: int, to_us: int, *, window: str, before_changes: str, before_snapshot: str,
             after_changes: str, after_snapshot: str, before_from_us: int | None = None,
             after_from_us: int | None = None) -> str:
    """The differing rows between the states at two moments, as one query (columns ``DIFF_COLUMNS``).

    ``window`` holds the changes of the window's partitions; each side has its own relations (its
    own plan) and copy floor.
    """
    before = state_sql(table, from_us, changes=before_changes, snapshot=before_snapshot,
                       changes_from_us=before_from_us, only_keys="diff_keys")
    after = state_sql(table, to_us, changes=after_changes, snapshot=after_snapshot,
                      changes_from_us=after_from_us, only_keys="diff_keys")
    return (f"WITH diff_keys AS ({window_keys_sql(from_us, to_us, window)}), "
            f"diff_from AS ({before}), diff_to AS ({after}) {differing_sql('diff_from', 'diff_to')}")


def render(sql: str, dialect: Dialect, *, pretty: bool = False) -> str:
    """``sql`` (DuckDB's dialect, as written here) in ``dialect``, by SQLGlot."""
    (rendered,) = sqlglot.transpile(sql, read="duckdb", write=dialect, pretty=pretty)
    return rendered
