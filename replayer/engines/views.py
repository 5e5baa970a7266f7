"""The SQL surface over a store: ``changes``, ``snapshots``, ``state_at(TIME)``, ``history(KEY)``.

A user never needs the file layout: every view reads through the store (local or s3://).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from changelog.attributes import stored_summary
from changelog.codec import item_key, parse_key
from changelog.connection import bounded_connection
from changelog.consistent import listing, read_consistently
from changelog.docs import register_doc_function
from changelog.errors import RewindError, TableNotFound, TimeOutOfRange, UsageError
from changelog.footer import DEDUPLICATED, footers, lifted_ids, recorded_lifts
from changelog.layout import TABLES, partition_of, table_names
from changelog.meta import key_attribute_schema, key_names, read_meta
from changelog.plain import plain_select, quote_ident
from changelog.predicate import lock_down
from changelog.progress import query_progress, track_progress
from changelog.quarantine import list_quarantined
from changelog.record import (
    LATEST_FIRST,
    SCHEMA,
    VERSION_ORDER,
    counts_from,
    first_copies,
    grouped_counts_from,
    latest_counts_from,
    latest_rows,
)
from changelog.snapshot import SNAPSHOT_SCHEMA, list_manifests, part_paths
from changelog.source import register_parquet
from changelog.state import (
    Coverage,
    change_files,
    check_complete,
    check_restorable,
    copy_floor_us,
    coverage,
    latest_restorable,
    timestamp_literal,
)
from changelog.store import Store
from changelog.timefmt import TIME_FORMS, parse_moment, to_micros
from changelog.udf import sql_function

_LIFTED = pa.schema([("table_name", pa.string()), ("event_id", pa.string())])


def _split_deduplicated(store: Store, files: list[str]) -> tuple[list[str], list[str], pa.Table | None]:
    """(files alone in their hour partition, de-duplicated by the merge and saying which records
    capture lifted into a later hour; every other file; every file's lifted records as
    ``table_name, event_id``, or None when a file does not say which)."""
    by_hour: dict[tuple[str, str], list[str]] = {}
    for path in files:
        by_hour.setdefault((path.split("/", 2)[1], partition_of(path)), []).append(path)
    said = footers(store, [paths[0] for paths in by_hour.values() if len(paths) == 1])
    merged = {p for p, metadata in said.items()
              if metadata.get(DEDUPLICATED) == b"1" and lifted_ids(metadata) is not None}
    clean, other = [p for p in files if p in merged], [p for p in files if p not in merged]
    if not clean:  # every record goes through first_copies: what capture lifted does not matter
        return clean, other, None
    by_table: dict[str, list[str]] = {}
    for path in files:
        by_table.setdefault(path.split("/", 2)[1], []).append(path)
    lifted = []
    for table, paths in by_table.items():
        ids = recorded_lifts(store, paths)
        if ids is None:
            return clean, other, None
        lifted += [{"table_name": table, "event_id": event_id} for event_id in ids]
    return clean, other, pa.Table.from_pylist(lifted, schema=_LIFTED)


def _changes_sql(clean: list[str], lifted: pa.Table | None, where: str = "TRUE") -> str:
    """The ``changes`` rows that meet ``where``: each stream record once (``first_copies``), reading a
    merged hour as it is.

    A merged hour holds each record once, and a copy in another hour can only be a row capture lifted
    into a later hour (footer.LIFTED): those records go through first_copies with the unmerged hours.
    When a file does not say what capture lifted, every record an unmerged hour also holds goes too.
    ``where`` applies before de-duplication, as every reader's time bound does (a copy stamped after
    the moment is not read).
    """
    if not clean:
        return first_copies("changes__other", where=where)
    if lifted is not None and lifted.num_rows == 0:
        return (f"SELECT * FROM changes__clean WHERE {where} "
                f"UNION ALL BY NAME {first_copies('changes__other', where=where)}")
    elsewhere = "(SELECT table_name, event_id FROM changes__lifted"
    elsewhere += ")" if lifted is not None else " UNION SELECT table_name, event_id FROM changes__other)"
    copies = (f"(SELECT * FROM changes__other UNION ALL BY NAME "
              f"SELECT * FROM changes__clean SEMI JOIN {elsewhere} AS e USING (table_name, event_id))")
    return (f"SELECT * FROM changes__clean ANTI JOIN {elsewhere} AS e USING (table_name, event_id) WHERE {where} "
            f"UNION ALL BY NAME {first_copies(copies, where=where)}")


def _state_at_sql(clean: list[str], lifted: pa.Table | None) -> str:
    """The body of ``state_at(t, only_table)``: each table's live items at t, over every stored row.

    Only the rows that may hold an item's latest version go on (record.latest_rows, the rule of
    may_be_latest), each with its item's latest stream time, which the winner counts from. A bootstrap
    is a whole copy: changes stamped before it do not count (state.copy_floor_us). Every relation read
    twice is a subquery, not a common table expression: DuckDB materialises a CTE read more than once,
    images and all, and then computes columns a query does not read (the doc of every item for a count).

    - With merged hours (the compactor's steady state) the rows are the ``changes`` rows, each record
      once (``_changes_sql``: a merged hour is read as it is; only unmerged hours go through
      first_copies). The snapshot's rows then join the same pass, so each item's latest stream time
      covers them and the time a row counts from needs no window (record.grouped_counts_from).
    - Without, de-duplicating every row would sort them all, images included: only the latest rows'
      copies go through first_copies (every copy of such a record is among them), and the snapshot's
      rows join afterwards (they carry no event id), ranked by record.latest_counts_from.
    """
    # The floor of the copy the snapshot read rests on (plan_state's rule): the latest snapshot's.
    floors = ("SELECT table_name, arg_max(changes_from, snapshot_time) AS changes_from FROM snapshots "
              f"WHERE snapshot_time <= {AT} GROUP BY table_name")
    chosen = ("SELECT table_name, max(snapshot_time) AS snapshot_time FROM snapshots "
              f"WHERE snapshot_time <= {AT} AND (only_table IS NULL OR table_name = only_table) GROUP BY table_name")
    rows = f"({_changes_sql(clean, lifted, f'event_time <= {AT}')})" if clean else "changes__raw"
    changes = (f"SELECT 0 AS src, c.table_name, c.event_id, c.item_key, c.keys, c.event_name, c.event_time, "
               f"c.sequence_number, c.new_image AS image FROM {rows} c LEFT JOIN ({floors}) f "
               f"ON c.table_name = f.table_name WHERE c.event_time <= {AT} "
               "AND (only_table IS NULL OR c.table_name = only_table) "
               "AND c.event_time >= coalesce(f.changes_from, '-infinity'::TIMESTAMPTZ)")
    snapshot = ("SELECT 1 AS src, r.table_name, r.item_key, r.keys, r.event_name, r.event_time, r.sequence_number, "
                f"r.image FROM snapshot_rows r JOIN ({chosen}) c "
                "ON r.table_name = c.table_name AND r.snapshot_time = c.snapshot_time")
    if clean:
        versions = f"SELECT * EXCLUDE (event_id) FROM ({changes}) UNION ALL BY NAME {snapshot}"
        ranked = f"SELECT *, {grouped_counts_from()} AS counts_from FROM ({latest_rows(versions)})"
    else:
        winners = first_copies(f"({latest_rows(changes)})")
        ranked = (f"SELECT *, {latest_counts_from('table_name, item_key', 'stream_time')} AS counts_from FROM ("
                  f"SELECT * EXCLUDE (event_id) FROM ({winners}) "
                  f"UNION ALL BY NAME SELECT *, event_time AS stream_time FROM ({snapshot}))")
    return f"""
        SELECT table_name, item_key, keys::JSON AS keys, image::JSON AS item, rewind_doc(image)::JSON AS doc,
               counts_from AS event_time, sequence_number
        -- The guard is a relation of its own, so a refusal is raised even when no row would come back.
        FROM (SELECT 1 WHERE rewind_held(only_table) AND rewind_restorable({AT}, only_table)) AS guard, ({ranked})
        QUALIFY row_number() OVER (PARTITION BY table_name, item_key ORDER BY {LATEST_FIRST}, src) = 1
            AND event_name <> 'REMOVE'
        """


def _key_reader(store: Store, tables: list[str]) -> Callable[[str], str]:
    """``rewind_key``: a KEY as the CLI takes it (DynamoDB JSON, or ``pk=a,sk=5`` typed from the key
    schema) to its canonical item_key. ``history(KEY)`` spans every table, so a plain key is read with
    each table's schema and must mean one key in all that can read it."""
    schemas = {}
    for table in tables:
        try:
            schemas[table] = key_attribute_schema(read_meta(store, table))
        except TableNotFound:
            continue  # a table captured without meta.json: DynamoDB JSON still works

    def canonical(text: str) -> str:
        if text.strip().startswith("{"):
            return item_key(parse_key(text))
        readings: dict[str, str] = {}
        reasons: set[str] = set()
        for table, schema in schemas.items():
            try:
                readings[table] = item_key(parse_key(text, schema))
            except UsageError as exc:
                reasons.add(str(exc))
        keys = set(readings.values())
        if not keys:
            # Every table refusing it for one reason (a number beyond DynamoDB's range): say which.
            why = f" ({reasons.pop()})" if len(reasons) == 1 else ""
            raise UsageError(f"no table's key schema reads the key {text!r}{why}: give NAME=VALUE pairs of a table's "
                             'key attributes, or DynamoDB JSON such as {"pk":{"S":"a"}}')
        if len(keys) > 1:
            raise UsageError(f"the key {text!r} reads differently for tables {', '.join(sorted(readings))} "
                             "(their key types differ): give it as DynamoDB JSON")
        return keys.pop()

    return canonical


Proven = dict[str, Coverage | RewindError]  # each table's coverage, or why it could not be read


def prove_tables(store: Store) -> Proven:
    """The coverage of every table of the store, read before its files are listed (``open_sql``).

    Capture writes a table's files before the records that prove them, so files listed after a
    coverage read hold every change that coverage proves; the other order would prove moments the
    listed files do not reach. A table whose coverage cannot be read keeps its error, raised only
    when a query asks that table.
    """
    proven: Proven = {}
    for table in table_names(store.list(TABLES + "/")):
        try:
            proven[table] = coverage(store, table)
        except RewindError as exc:
            proven[table] = exc
    return proven


def open_sql(store: Store, *, plain_tables: bool = False, proven: Proven | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the store's views and macros.

    - ``changes``: every captured change, de-duplicated on event_id, with ``new_doc``/``old_doc`` JSON
      (derived from the images by ``changelog.docs``, only when a query reads them);
    - ``tables``: the tables the store holds;
    - ``quarantine``: every record capture could not decode, as text (it is malformed by definition);
    - ``snapshots``: one row per published snapshot;
    - ``state_at(TIME)``: every live item of every table at TIME (table_name, item_key, keys, item, doc);
    - ``history(KEY)``: every change of the item with that DynamoDB-JSON key, in order;
    - per table ``<table>_at(TIME)``: its items at TIME with one typed column per attribute
      (``WHERE status = 'shipped'``). Finding the attributes reads every image of the table, so
      these are made on demand by ``ensure_plain_macros``; ``plain_tables`` makes them all now.

    The moments it answers for are those ``proven`` (by default ``prove_tables`` now) proves.
    """
    proven = prove_tables(store) if proven is None else proven
    con = bounded_connection()
    con.execute("SET TimeZone = 'UTC'")
    track_progress(con)
    register_doc_function(con)
    tables = list(proven)
    # Every relation is an Arrow object registered from Python, not a DuckDB table: SQL cannot change
    # what it holds, and reading it needs no file access (the connection is locked below).
    con.register("tables", pa.table({"table_name": pa.array(tables, pa.string())}))
    _quarantine_view(con, store)
    files = [path for table in tables for path in change_files(store, table)]
    register_parquet(con, "changes__raw", store, files, SCHEMA, through_arrow=True)
    clean, other, lifted = _split_deduplicated(store, files)
    register_parquet(con, "changes__clean", store, clean, SCHEMA, through_arrow=True)
    register_parquet(con, "changes__other", store, other, SCHEMA, through_arrow=True)
    con.register("changes__lifted", lifted if lifted is not None else _LIFTED.empty_table())
    con.execute(
        f"""CREATE VIEW changes AS
           SELECT *, rewind_doc(new_image)::JSON AS new_doc, rewind_doc(old_image)::JSON AS old_doc
           FROM ({_changes_sql(clean, lifted)})"""
    )
    snapshots: list[dict[str, Any]] = []
    selects: list[str] = []
    for table in tables:
        for index, (path, manifest) in enumerate(list_manifests(store, table)):
            snapshots.append({
                "table_name": table, "snapshot_time": manifest.snapshot_time_us, "kind": manifest.kind,
                "items": manifest.items, "tombstones": manifest.tombstones, "manifest": path,
                # A bootstrap supersedes every older change (as in replay).
                "changes_from": copy_floor_us(manifest),
            })
            name = f"snapshot__{len(selects)}_{index}"
            register_parquet(con, name, store, part_paths(path, manifest), SNAPSHOT_SCHEMA, through_arrow=True)
            selects.append(
                f"SELECT *, {timestamp_literal(manifest.snapshot_time_us)} AS snapshot_time"
                f" FROM {name}"
            )
    con.register("snapshots", pa.Table.from_pylist(snapshots, schema=_SNAPSHOTS))
    if selects:
        con.execute("CREATE VIEW snapshot_rows AS " + " UNION ALL ".join(selects))
    else:
        register_parquet(con, "snapshot_rows__empty", store, [], SNAPSHOT_SCHEMA, through_arrow=True)
        con.execute(
            "CREATE VIEW snapshot_rows AS SELECT *, NULL::TIMESTAMPTZ AS snapshot_time FROM snapshot_rows__empty"
        )
    _coverage_guard(con, proven)
    con.execute(f"CREATE MACRO state_at(t, only_table := NULL) AS TABLE {_state_at_sql(clean, lifted)}")
    sql_function(con, "rewind_key", _key_reader(store, tables), ["VARCHAR"], "VARCHAR")
    con.execute(
        f"""CREATE MACRO history(k) AS TABLE
            SELECT table_name, counts_from AS event_time, event_name, sequence_number, is_ttl_delete,
                   old_image::JSON AS old_image, new_image::JSON AS new_image, event_id
            -- Refused, like the history command, while a table has a loss (changelog.restorable).
            FROM (SELECT 1 WHERE rewind_complete()) AS guard,
                 (SELECT *, {counts_from()} AS counts_from FROM changes WHERE item_key = rewind_key(k))
            ORDER BY table_name, {VERSION_ORDER}"""
    )
    if plain_tables:
        for table in tables:
            plain_table_macro(con, store, table)
    # From here the connection reads only what is registered above: no file, network or extension,
    # and no setting can undo that, whatever a statement the filter (check_read_only) missed asks.
    lock_down(con)
    return con


_TIMESTAMPTZ = pa.timestamp("us", tz="UTC")
_SNAPSHOTS = pa.schema([("table_name", pa.string()), ("snapshot_time", _TIMESTAMPTZ), ("kind", pa.string()),
                        ("items", pa.int64()), ("tombstones", pa.int64()), ("manifest", pa.string()),
                        ("changes_from", _TIMESTAMPTZ)])
_QUARANTINE = pa.schema([(name, pa.string()) for name in ("table_name", "reason", "source", "quarantined_at",
                                                           "event_time", "event_id", "path", "record")])


def _quarantine_view(con: duckdb.DuckDBPyConnection, store: Store) -> None:
    """View ``quarantine``: one row per kept record, read as text, never decoded.

    ``event_time`` is the record's stream time as it came (text: it may be the impossible value the
    record was kept for); ``record`` is the whole document's text, capture's fields included.
    """
    rows = [dict(zip(_QUARANTINE.names, (kept.table_name, kept.field("reason"), kept.field("source"),
                                          kept.field("quarantined_at"), kept.event_time, kept.event_id, kept.path,
                                          kept.text), strict=True))
            for kept in list_quarantined(store)]
    con.register("quarantine__raw", pa.Table.from_pylist(rows, schema=_QUARANTINE))
    con.execute(
        "CREATE VIEW quarantine AS SELECT table_name, reason, source,"
        " TRY_CAST(quarantined_at AS TIMESTAMPTZ) AS quarantined_at, event_time, event_id, path, record"
        " FROM quarantine__raw"
    )


REFUSED = "outside coverage: "
# The moment a macro's TIME argument ``t`` names (``_coverage_guard``'s rewind_time): any form the
# command line takes, ``latest`` of the table(s) asked, ``now`` and ``-2h`` from the statement's start.
AT = "rewind_time(t::VARCHAR, only_table, current_timestamp)"


def _coverage_guard(con: duckdb.DuckDBPyConnection, proven: Proven) -> None:
    """Macro ``rewind_restorable(t, only_table)``: TRUE, or an error naming the table and its bounds.

    The SQL macros answer only what ``replay`` would answer: the one coverage rule
    (``changelog.state.check_restorable``) decides, per table, whether a moment can be proven.
    ``state_at(t)`` spans every table, so it refuses when any table cannot answer for t;
    ``state_at(t, only_table := 'orders')`` and ``orders_at(t)`` ask for one table only.
    """
    held = frozenset(proven)

    def not_held(table: str) -> TableNotFound:
        return TableNotFound(f"the store holds no table {table!r}: the tables view lists those it holds")

    def covered(table: str) -> Coverage:
        found = proven.get(table)
        if found is None:  # 'latest' of an only_table may be asked before rewind_held refuses it
            raise not_held(table)
        if isinstance(found, RewindError):
            raise found
        return found

    def reason(table: str, check: Callable[[Coverage], None]) -> str:
        """Why ``check`` refuses ``table`` ('' when it does not: a DuckDB Python function may not return NULL)."""
        if table not in held:
            # A query may call these functions itself: a name that is no table of the store never
            # reaches a path (it could name a directory outside the store).
            return f"the store holds no table {table!r}"
        try:
            check(covered(table))
        except TimeOutOfRange as exc:
            return str(exc)
        return ""

    def refusal(table: str, at: datetime | str) -> str:
        if not isinstance(at, datetime):
            # DuckDB hands over a time past Python's year 9999 as text: no store holds such a moment.
            return f"{str(at)[:40]} is out of range: no moment after 9999-01-01 is restorable"
        return reason(table, lambda cov: check_restorable(cov, at, to_micros(at)))

    def incomplete(table: str) -> str:
        return reason(table, lambda cov: check_complete(
            cov, None, None, what="history()",
            narrow="the changes view lists what the store holds, without the lost changes"))

    def moment(text: str | None, only_table: str | None, now: datetime) -> datetime:
        # TIME as the command line takes it. DuckDB calls this while planning a query, its arguments
        # being constants, and puts the moment in the plan (filters on it still reach the files);
        # ``now`` is the statement's start, the same for every part of it.
        if text is None:
            raise UsageError(f"TIME is NULL: give {TIME_FORMS}")
        at = parse_moment(text, now)
        if at is not None:
            return at
        return latest_restorable([only_table] if only_table is not None else sorted(held), covered)

    def held_table(only_table: str | None) -> bool:
        # Else a misspelt only_table would answer with no items, as if the table had been empty.
        if only_table is not None and only_table not in held:
            raise not_held(only_table)
        return True

    sql_function(con, "rewind_held", held_table, ["VARCHAR"], "BOOLEAN", side_effects=False, null_handling="special")
    sql_function(con, "rewind_time", moment, ["VARCHAR", "VARCHAR", "TIMESTAMPTZ"], "TIMESTAMPTZ", side_effects=False,
                 null_handling="special")
    sql_function(con, "rewind_refusal", refusal, ["VARCHAR", "TIMESTAMPTZ"], "VARCHAR", side_effects=False)
    sql_function(con, "rewind_incomplete", incomplete, ["VARCHAR"], "VARCHAR", side_effects=False)
    con.execute(
        f"""CREATE MACRO rewind_complete() AS (
            SELECT CASE WHEN count(*) > 0
                        THEN error('{REFUSED}' || string_agg(reason, '; ' ORDER BY table_name))
                        ELSE TRUE END
            FROM (SELECT table_name, rewind_incomplete(table_name) AS reason FROM tables)
            WHERE reason <> '')"""
    )
    con.execute(
        f"""CREATE MACRO rewind_restorable(t, only_table) AS (
            SELECT CASE WHEN count(*) > 0
                        THEN error('{REFUSED}' || string_agg(reason, '; ' ORDER BY table_name)
                                   -- state_at(t) spans every table: say how to ask the others alone.
                                   || CASE WHEN only_table IS NULL
                                           THEN '; state_at(t) answers for every table at once: to ask one '
                                                || 'table, use state_at(t, only_table := ''<table>'') or <table>_at(t)'
                                           ELSE '' END)
                        ELSE TRUE END
            FROM (SELECT table_name, rewind_refusal(table_name, t) AS reason FROM tables
                  WHERE only_table IS NULL OR table_name = only_table)
            WHERE reason <> '')"""
    )


class SqlSession:
    """The SQL surface of one store, opened again when a merge or expire replaced files a query read.

    The views read the store's files when a query runs, not when they are made; a file listed when
    the session opened may be gone by then (``changelog.consistent``).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.listed = listing(store, (TABLES + "/",))
        self.proven: Proven = {}
        self.con = read_consistently(store, (TABLES + "/",), self._open, listed=self.listed)

    def _open(self) -> duckdb.DuckDBPyConnection:
        # The moments the session answers for are the ones its files were listed after (prove_tables).
        self.proven = prove_tables(self.store)
        return open_sql(self.store, proven=self.proven)

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]] | None:
        """Run ``sql``: its column names and rows, or None for a statement without a result.

        Only statements that read are run (``check_read_only``): SQL over the store never writes a
        file, attaches a database, loads an extension or changes a setting.
        """
        check_read_only(self.con, sql)
        attempts = 0

        def run() -> tuple[list[str], list[tuple[Any, ...]]] | None:
            nonlocal attempts
            if attempts:
                self.listed = listing(self.store, (TABLES + "/",))
                self.con = self._open()
            attempts += 1
            with query_progress(self.con, "query"):
                ensure_plain_macros(self.con, self.store, sql)
                relation = self.con.sql(sql)
                if relation is None:
                    return None
                return list(relation.columns), relation.fetchall()

        return read_consistently(self.store, (TABLES + "/",), run, listed=self.listed)


# SELECT covers WITH, FROM-first, DESCRIBE, SHOW and SUMMARIZE; EXPLAIN shows (or runs) the statement it holds.
_READING = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})
# The query nodes of DuckDB's parse tree that only read. A SELECT may hold others: a WITH clause's
# body can be COPY ... TO, INSERT, UPDATE or DELETE (COPY_QUERY_NODE, INSERT_QUERY_NODE, ...).
_READING_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})
_ONLY_READS = "sql only reads: {} statements are not run (use SELECT, DESCRIBE, SHOW or EXPLAIN)"
# DuckDB runs a PIVOT that does not list its values as two statements: one creates an ENUM type of them.
_PIVOT_UNLISTED = ("sql only reads: a PIVOT without its values listed makes DuckDB create a type of them first; "
                   "list them: PIVOT t ON c IN ('a', 'b') USING count(*)")


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse ``sql`` (UsageError) unless every statement in it only reads, as DuckDB's own parser sees it.

    COPY or EXPORT write files, ATTACH creates them, INSTALL/LOAD fetch and run code, SET/PRAGMA
    change how the session reads, and a WITH clause may hold a COPY or an INSERT: none of it belongs
    in an audit. This is the first of two layers: the connection itself is locked (``open_sql``).
    """
    for statement in _statements(con, sql):
        _check_statement(con, statement)


def _statements(con: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    try:
        return list(con.extract_statements(sql))
    except duckdb.Error as exc:
        raise UsageError(f"query failed: {str(exc).splitlines()[0]}") from None


def _type(statement: Any) -> Any:
    """The statement's type; None for one DuckDB's Python enum has no name for (UPDATE EXTENSIONS)."""
    try:
        return statement.type
    except ValueError:
        return None


def _kind(statement: Any) -> str:
    kind = _type(statement)
    return "these" if kind is None else str(kind).rsplit(".", 1)[-1]


def _check_statement(con: duckdb.DuckDBPyConnection, statement: Any) -> None:
    if _type(statement) == duckdb.StatementType.MULTI:
        raise UsageError(_PIVOT_UNLISTED)
    if _type(statement) not in _READING:
        raise UsageError(_ONLY_READS.format(_kind(statement)))
    if _type(statement) == duckdb.StatementType.EXPLAIN:
        _check_explained(con, statement.query)
        return
    (serialized,) = con.execute("SELECT json_serialize_sql(?)", [statement.query]).fetchone() or (None,)
    try:
        tree = json.loads(serialized) if isinstance(serialized, str) else {"error": True}
    except RecursionError:
        # Python's JSON decoder stops a few hundred levels deep; no audit query nests that far.
        raise UsageError("sql only reads: this query is nested too deeply to check that it does") from None
    if tree.get("error"):
        raise UsageError("sql only reads: this statement could not be checked to only read")
    writing = sorted(_query_nodes(tree) - _READING_NODES)
    if writing:
        raise UsageError(_ONLY_READS.format(writing[0].removesuffix("_QUERY_NODE").removesuffix("_NODE")
                                            + " (inside a SELECT)"))
    named = _macro_reading_a_column(tree)
    if named:
        raise UsageError(f"{named}() takes constants: a column in its arguments would be read from the store's "
                         "own rows inside it, not from yours; give TIME (and only_table) as constants")


def _is_macro(name: str) -> bool:
    # state_at, history and every table's <table>_at: SQL macros, whose arguments are pasted into
    # their bodies and bound there.
    return name in ("state_at", "history") or name.endswith("_at")


def _macro_reading_a_column(tree: Any) -> str | None:
    """The first of the store's macros called with a column in its arguments, if any.

    A macro's arguments are bound inside its body: ``state_at(c.event_time)`` or
    ``LATERAL state_at(t, only_table := c.table_name)`` read the macro's own rows (whose alias and
    columns they share), answered every row with one moment and passed the coverage check for a
    table the moment was refused for.
    """
    for node in _objects(tree):
        function = node.get("function") if node.get("type") == "TABLE_FUNCTION" else None
        if isinstance(function, dict):
            name = str(function.get("function_name", "")).lower()
            arguments = [function.get("arguments"), function.get("children")]
            if _is_macro(name) and any(part.get("class") == "COLUMN_REF" for part in _objects(arguments)):
                return name
    return None


def _query_nodes(tree: Any) -> set[str]:
    """Every query-node type in a parse tree of ``json_serialize_sql``."""
    return {kind for node in _objects(tree)
            if isinstance(kind := node.get("type"), str) and kind.endswith("_NODE")}


def _objects(tree: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in a parse tree of ``json_serialize_sql``, however deep (no recursion)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            yield node
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def _check_explained(con: duckdb.DuckDBPyConnection, text: str) -> None:
    """Refuse an EXPLAIN unless the statement it holds only reads: EXPLAIN ANALYZE runs it.

    DuckDB's parser does not hand out the statement under EXPLAIN, so it is cut from the text after
    the header (``EXPLAIN``, ``ANALYZE``, an option list in parentheses). The header can be read more
    than one way (``EXPLAIN (SELECT 1)``: options, or the statement?): every reading that parses must
    give one statement that only reads.
    """
    every = duckdb.tokenize(text)
    ends = [position for position, _ in every[1:]] + [len(text)]
    tokens = [(position, kind, end) for (position, kind), end in zip(every, ends, strict=True)
              if kind != duckdb.token_type.comment]

    def word(index: int) -> str:
        return text[tokens[index][0]:tokens[index][2]].strip().upper()

    starts = {1}
    at = 1
    if at < len(tokens) and word(at) == "ANALYZE":
        at += 1
        starts.add(at)
    if at < len(tokens) and word(at).startswith("("):
        depth = 0
        for index in range(at, len(tokens)):
            if tokens[index][1] == duckdb.token_type.operator:
                depth += word(index).count("(") - word(index).count(")")
            if depth <= 0:
                starts.add(index + 1)
                break
    readings = []
    for start in sorted(starts):
        if start >= len(tokens):
            continue
        try:
            inner = list(con.extract_statements(text[tokens[start][0]:]))
        except duckdb.Error:
            continue
        if inner:
            readings.append(inner)
    if not readings:
        raise UsageError("sql only reads: the statement under this EXPLAIN could not be checked to only read")
    for inner in readings:
        if len(inner) != 1 or _type(inner[0]) != duckdb.StatementType.SELECT:
            raise UsageError(_ONLY_READS.format(f"EXPLAIN of {_kind(inner[0]) if len(inner) == 1 else 'MULTI'}"))
        _check_statement(con, inner[0])


def ensure_plain_macros(con: duckdb.DuckDBPyConnection, store: Store, sql: str) -> None:
    """Create the ``<table>_at`` macros that ``sql`` mentions and the connection does not have yet."""
    lowered = sql.lower()
    tables = [name for (name,) in con.execute("SELECT table_name FROM tables").fetchall()]
    existing = {
        name.lower()
        for (name,) in con.execute(
            "SELECT function_name FROM duckdb_functions() WHERE function_type = 'table_macro'"
        ).fetchall()
    }
    by_macro: dict[str, list[str]] = {}
    for table in tables:
        by_macro.setdefault(f"{table}_at".lower(), []).append(table)
    for macro, named in by_macro.items():
        if macro not in lowered or macro in existing:
            continue
        if len(named) > 1:
            # DuckDB matches identifiers without regard to case: one macro would answer for all of them.
            raise UsageError(f"tables {', '.join(sorted(named))} differ only in case, so {macro} cannot tell them "
                             f"apart: use state_at(TIME, only_table := '{sorted(named)[0]}')")
        plain_table_macro(con, store, named[0])


def plain_table_macro(con: duckdb.DuckDBPyConnection, store: Store, table: str) -> None:
    """Create ``<table>_at(TIME)``: the table's items at TIME with one typed column per attribute.

    The columns are typed by the one rule (``changelog.plain``, docs/engines.md) over every image the
    store holds for the table, so a column has one type at every TIME. Its key attributes come first
    (partition, then sort), then ``item_key, keys, item``, then the other attributes by name. The
    attribute summaries come from the table's file footers (changelog.attributes), so making the
    macro reads footers, not every image.
    """
    parts = [part for path, manifest in list_manifests(store, table) for part in part_paths(path, manifest)]
    summary = stored_summary(store, change_files(store, table), parts)
    keys = key_names(store, table)
    columns = plain_select(summary, image="item", reserved=frozenset({"item_key", "item", "keys"}), keys=keys)
    selected = [expr for name, expr in columns if name in keys]
    selected += ["item_key", "keys", "item", *(expr for name, expr in columns if name not in keys)]
    literal = table.replace("'", "''")
    con.execute(
        f"""CREATE MACRO {quote_ident(table + '_at')}(t) AS TABLE
            SELECT {', '.join(selected)} FROM state_at(t, only_table := '{literal}')"""
    )
