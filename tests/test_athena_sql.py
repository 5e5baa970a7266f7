"""``ddb-rewind athena-sql``: Trino SQL that a real Trino parser accepts and that answers what replay answers.

The SQL is checked with SQLGlot's Trino parser (no fallback to an opaque command), and run: SQLGlot
turns the printed Trino SQL into DuckDB's dialect, which runs it over the store's files laid out as
the stack's Glue tables (partition columns ``dt``/``hour``, ``snapshot`` and ``"$path"``; times as
naive UTC timestamps, as Athena types them), and the rows equal replay's, history's and diff's.
"""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from changelog.codec import decode_kinesis_record, decode_lambda_record
from changelog.docs import doc_text
from changelog.glue import glue_columns
from changelog.record import SCHEMA
from changelog.snapshot import SNAPSHOT_SCHEMA, list_manifests
from changelog.state import change_files, plan_state
from changelog.store import LocalStore, Store
from compactor.snapshots import build_snapshot
from ddb_rewind.cli import main
from replayer.engines.athena import Catalog, diff_query, history_query, state_query, unload_query
from replayer.forensics.diff import diff_states
from replayer.forensics.history import item_history
from replayer.restoring.replay import open_items
from stream_consumer.capture import capture_batch
from tests.events import kinesis_record
from tests.model import KEYS, Op, operations, stream_records
from tests.sam import _CfnLoader
from tests.test_store import s3_over_http as s3_over_http

TABLE = "orders"
TEMPLATE = Path(__file__).resolve().parents[1] / "infra" / "template.yaml"
PROPERTY = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def parse_trino(sql: str) -> exp.Expression:
    """SQLGlot's Trino parser, raising on anything it cannot parse (no fallback to a Command)."""
    (tree,) = sqlglot.parse(sql, read="trino", error_level=ErrorLevel.RAISE)
    assert tree is not None and not isinstance(tree, exp.Command)
    return tree


def assert_trino(sql: str) -> None:
    tree = parse_trino(sql)
    assert parse_trino(tree.sql("trino")) == tree  # round trip


def athena_in_duckdb(store: LocalStore, sql: str) -> list[tuple[Any, ...]]:
    """Run printed Trino SQL with DuckDB over the store laid out as the stack's Glue tables."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute('CREATE SCHEMA "rewind_orders"')
    files = [str(store.root / p) for p in change_files(store, TABLE)]
    columns = ", ".join(f.name if f.name != "event_time" else "event_time::TIMESTAMP AS event_time" for f in SCHEMA)
    if files:
        con.execute(f"""CREATE VIEW rewind_orders.changes AS SELECT {columns}, dt::VARCHAR AS dt, hour::VARCHAR AS hour
                        FROM read_parquet({files}, hive_partitioning = true, hive_types_autocast = false)""")
    parts = [str(p) for p in store.root.glob(f"tables/{TABLE}/snapshots/*/*.parquet")]
    snap_columns = ", ".join(f.name if f.name != "event_time" else "event_time::TIMESTAMP AS event_time"
                             for f in SNAPSHOT_SCHEMA)
    if parts:
        con.execute(f"""CREATE VIEW rewind_orders.snapshots AS
                        SELECT {snap_columns}, filename AS "$path", split_part(filename, '/', -2) AS snapshot
                        FROM read_parquet({parts}, filename = true)""")
    else:
        con.execute(f"""CREATE VIEW rewind_orders.snapshots AS SELECT {snap_columns}, '' AS "$path", '' AS snapshot
                        FROM (SELECT NULL AS table_name, NULL AS item_key, NULL AS keys, NULL AS event_name,
                              NULL::TIMESTAMP AS event_time, NULL AS sequence_number, NULL AS image, NULL AS doc)
                        WHERE FALSE""")
    (duck,) = sqlglot.transpile(sql, read="trino", write="duckdb")
    return con.execute(duck).fetchall()


def _store(tmp: Path, ops: list[Op], snapshot_share: float | None) -> tuple[LocalStore, list[int]]:
    store = LocalStore(tmp)
    records = stream_records(TABLE, ops)
    capture_batch(store, records, decode_lambda_record, source="test")
    capture_batch(store, records[: len(records) // 2], decode_lambda_record, source="test")  # a retry
    seconds = sorted({int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in records})
    if snapshot_share is not None:
        build_snapshot(store, TABLE, seconds[int(snapshot_share * (len(seconds) - 1))] * 1_000_000)
    return store, seconds


@pytest.mark.slow
@PROPERTY
@given(ops=operations(), snapshot_share=st.one_of(st.none(), st.floats(0, 1)), pick=st.floats(0, 1),
       key_index=st.integers(0, len(KEYS) - 1))
def test_the_printed_sql_parses_as_trino_and_answers_what_replay_history_and_diff_answer(
    tmp_path_factory: pytest.TempPathFactory, ops: list[Op], snapshot_share: float | None, pick: float,
    key_index: int
) -> None:
    if not stream_records(TABLE, ops):
        return
    store, seconds = _store(tmp_path_factory.mktemp("store"), ops, snapshot_share)
    catalog = Catalog("rewind_orders", str(store.root))
    at = seconds[int(pick * (len(seconds) - 1))]
    plan = plan_state(store, TABLE, at * 1_000_000)

    state = state_query(catalog, plan)
    assert_trino(state)
    rows = athena_in_duckdb(store, state)
    replayed = open_items(store, TABLE, datetime.fromtimestamp(at, tz=UTC))
    # Athena answers with the images; the doc a replay file shows is derived from them (changelog.docs).
    assert [(r[1], r[2], r[6], doc_text(r[6])) for r in rows] == replayed.execute("SELECT * FROM items").fetchall()

    key = KEYS[key_index]
    canonical = json.dumps(key, separators=(",", ":"), ensure_ascii=False)
    history = history_query(catalog, store, TABLE, canonical)
    assert_trino(history)
    versions = item_history(store, TABLE, canonical)
    assert [(r[1], r[3]) for r in athena_in_duckdb(store, history)] == [(v.event_name, v.event_id) for v in versions]

    first, last = seconds[0] * 1_000_000, seconds[-1] * 1_000_000
    diff = diff_query(catalog, store, (plan_state(store, TABLE, first), plan_state(store, TABLE, last)))
    assert_trino(diff)
    reported = {c.item_key for c in diff_states(store, TABLE, first, last).all()}
    # Athena compares image text: every item ddb-rewind reports, and only items whose text changed.
    assert {row[0] for row in athena_in_duckdb(store, diff)} >= reported


def test_a_snapshot_is_read_only_through_the_parts_its_manifest_lists(tmp_path: Path) -> None:
    store, seconds = _store(tmp_path, [Op(0, {"pk": {"S": "a"}}, 1_750_000_000),
                                       Op(1, {"pk": {"S": "b"}}, 1_750_000_004)], snapshot_share=1.0)
    plan = plan_state(store, TABLE, seconds[-1] * 1_000_000)
    ((path, manifest),) = list_manifests(store, TABLE)

    sql = state_query(Catalog("rewind_orders", "s3://bucket/prefix"), plan)

    directory = path.split("/")[-2]
    listed = {f"s3://bucket/prefix/tables/{TABLE}/snapshots/{directory}/{part}" for part in manifest.parts}
    tree = parse_trino(sql)
    ins = [node for node in tree.find_all(exp.In) if node.this.name == "$path"]
    assert [{e.name for e in node.expressions} for node in ins] == [listed]
    assert f"snapshot = '{directory}'" in sql


def test_unload_writes_gzipped_item_lines_into_the_data_prefix(tmp_path: Path) -> None:
    store, seconds = _store(tmp_path, [Op(0, {"pk": {"S": "a"}}, 1_750_000_000)], snapshot_share=None)
    plan = plan_state(store, TABLE, seconds[-1] * 1_000_000)

    sql = unload_query(Catalog("rewind_orders", "s3://b/p"), plan, "s3://exports/orders/")

    match = re.fullmatch(r"UNLOAD \(\n(.*)\n\) TO 's3://exports/orders/data/'\n"
                         r"WITH \(format = 'TEXTFILE', compression = 'GZIP'\)", sql, re.S)
    assert match is not None
    inner = match.group(1)
    assert_trino(inner)
    ((line,),) = athena_in_duckdb(store, inner)
    assert line == '{"Item":{"pk":{"S":"a"}}}'


def _cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def test_athena_sql_prints_the_coverage_and_one_trino_statement(s3_over_http: Store) -> None:
    capture_batch(s3_over_http, stream_records(TABLE, [Op(0, {"pk": {"S": "a"}}, 1_750_000_000)]),
                  decode_lambda_record, source="test")

    code, out = _cli(["athena-sql", "--table", TABLE, "--store", s3_over_http.uri, "--at", "2025-06-15T15:06:40Z"])

    assert code == 0
    header, coverage, *body = out.splitlines()
    assert header.startswith("-- ddb-rewind athena-sql: state at 2025-06-15T15:06:40Z of orders")
    assert coverage == f"-- coverage proven by {s3_over_http.uri}: 2025-06-15T15:06:40Z to 2025-06-15T15:06:40Z"
    assert_trino("\n".join(body).removesuffix(";"))


def test_a_key_with_a_line_break_stays_inside_the_header_comment(s3_over_http: Store) -> None:
    # Keys come from whoever writes the table: "a\nDROP TABLE ...; --" printed raw began a statement.
    import sqlglot

    key = {"pk": {"S": "a\nDROP TABLE rewind_orders.changes; --"}}
    capture_batch(s3_over_http, stream_records(TABLE, [Op(0, key, 1_750_000_000)]), decode_lambda_record,
                  source="test")

    code, out = _cli(["athena-sql", "--table", TABLE, "--store", s3_over_http.uri, "--key", json.dumps(key)])

    assert code == 0
    statements = [tree for tree in sqlglot.parse(out, read="trino") if tree is not None]
    assert len(statements) == 1 and "DROP" not in out.splitlines()[1]


def test_athena_sql_refuses_a_moment_outside_coverage_with_exit_5(
    s3_over_http: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    capture_batch(s3_over_http, stream_records(TABLE, [Op(0, {"pk": {"S": "a"}}, 1_750_000_000)]),
                  decode_lambda_record, source="test")

    code = main(["athena-sql", "--table", TABLE, "--store", s3_over_http.uri, "--at", "2025-06-15T15:06:41Z"])

    captured = capsys.readouterr()
    assert code == 5 and captured.out == ""
    assert captured.err.startswith("ddb-rewind: error: 2025-06-15T15:06:41Z is after the latest restorable time")


def test_athena_sql_refuses_sub_millisecond_times_athena_would_truncate(
    s3_over_http: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    record = kinesis_record(TABLE, "INSERT", {"pk": {"S": "a"}}, 1_750_000_000_000_500, "1",
                            new={"pk": {"S": "a"}}, precision="MICROSECOND")
    capture_batch(s3_over_http, [record], decode_kinesis_record, source="test")

    code = main(["athena-sql", "--table", TABLE, "--store", s3_over_http.uri, "--at", "2025-06-15T15:06:40.0005Z"])

    assert code == 2
    assert "sub-millisecond" in capsys.readouterr().err


def test_athena_sql_refuses_a_local_store(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["athena-sql", "--table", TABLE, "--store", store.uri, "--at", "2025-06-15T15:06:40Z"]) == 2
    assert "s3://" in capsys.readouterr().err


def _glue_table(name: str) -> dict[str, Any]:
    with open(TEMPLATE, encoding="utf-8") as handle:
        resources = yaml.load(handle, Loader=_CfnLoader)["Resources"]
    return dict(resources[name]["Properties"]["TableInput"])


def test_the_glue_snapshots_table_declares_the_snapshot_arrow_schema_and_an_injected_partition() -> None:
    table = _glue_table("SnapshotsTable")
    assert [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]] == glue_columns(SNAPSHOT_SCHEMA)
    assert [(k["Name"], k["Type"]) for k in table["PartitionKeys"]] == [("snapshot", "string")]
    assert table["Parameters"]["projection.snapshot.type"] == "injected"
    assert table["Parameters"]["storage.location.template"] == {
        "Fn::Sub": "s3://${StoreBucket}/${StorePrefix}/tables/${TableName}/snapshots/${!snapshot}/"
    }
