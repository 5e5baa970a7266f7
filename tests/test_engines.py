"""Every engine gives the same bytes: Spark's state, history and diff equal DuckDB's and the model's.

The workloads are the ones that prove DuckDB's replay (tests/model.py): every AttributeValue type,
same-second changes, retried and re-split batches, late files and snapshots, Kinesis re-sends.
For sampled moments Spark and DuckDB write byte-identical files and return identical histories
and diffs, and both equal the independent model. One SparkSession serves the whole test run.
"""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changelog.codec import decode_kinesis_record, decode_lambda_record
from changelog.record import SCHEMA
from changelog.snapshot import SNAPSHOT_SCHEMA
from changelog.source import register_parquet
from changelog.spec import STATE_COLUMNS, render, state_sql
from changelog.state import coverage, open_state, plan_state, snapshot_parts
from changelog.store import LocalStore, Store
from compactor.bootstrap import bootstrap_from_scan
from compactor.merge import merge_small_files
from compactor.snapshots import build_snapshot
from replayer.engines import spark_job
from replayer.forensics.diff import diff_states, write_diff_parquet
from replayer.forensics.history import item_history
from replayer.restoring.export import PARQUET_SCHEMA
from replayer.restoring.replay import open_items, replay_to_file
from stream_consumer.capture import capture_batch
from tests.model import KEYS, Op, model_state, operations, stream_records
from tests.test_kinesis_property import _payload, _records, _with_sequence
from tests.test_recover import T0, Scenario, run_recover, send

# Fixtures the bootstrap-after-a-gap scenario needs.
from tests.test_recover import clock as clock
from tests.test_recover import queue as queue
from tests.test_recover import scenario as scenario
from tests.test_recover import trimmed as trimmed
from tests.test_store import s3_over_http as s3_over_http

TABLE = "orders"
ROOT = Path(__file__).resolve().parents[1]
PROPERTY = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SPARK_PROPERTY = settings(max_examples=4, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local SparkSession for the whole run (the engine's own, as the CLI starts it)."""
    from changelog.spark import session

    yield session()


def _at(second: int) -> datetime:
    return datetime.fromtimestamp(second, tz=UTC)


def _moments(records: list[dict[str, Any]]) -> list[int]:
    seconds = sorted({int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in records})
    return sorted({*seconds, *(s + 1 for s in seconds if s + 1 <= seconds[-1])})


def _sample(moments: list[int], picks: list[float]) -> list[int]:
    return sorted({moments[int(p * (len(moments) - 1))] for p in picks})


def _covered(store: Store, seconds: list[int]) -> list[int]:
    """The seconds inside the table's coverage (a record stamped before the first one captured is not)."""
    earliest = coverage(store, TABLE).earliest_us or 0
    return [second for second in seconds if second * 1_000_000 >= earliest]


def _store_with_snapshot_and_late_files(tmp: Path, ops: list[Op], cuts: list[int], snapshot_share: float,
                                        late_share: float) -> tuple[LocalStore, list[dict[str, Any]]]:
    """Records captured in batches cut anywhere and then all again (a retry), a snapshot, late files."""
    records = stream_records(TABLE, ops)
    store = LocalStore(tmp)
    late = set(range(0, len(records), max(1, int(1 / late_share)))) if late_share > 0.05 else set()
    on_time = [r for i, r in enumerate(records) if i not in late]
    points = sorted({0, len(on_time), *[c % (len(on_time) + 1) for c in cuts]})
    for start, end in itertools.pairwise(points):
        if end > start:
            capture_batch(store, on_time[start:end], decode_lambda_record, source="test")
    if on_time:
        capture_batch(store, on_time, decode_lambda_record, source="test")  # the retried whole batch
        seconds = _covered(store, sorted({int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in on_time}))
        build_snapshot(store, TABLE, seconds[int(snapshot_share * (len(seconds) - 1))] * 1_000_000)
    late_records = [records[i] for i in sorted(late)]
    if late_records:
        capture_batch(store, late_records, decode_lambda_record, source="test")
    return store, records


def _state_rows(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return con.execute("SELECT item_key, keys, image, doc FROM items").fetchall()


# --- DuckDB: the spec's one-pass SQL equals the two-pass plan replay runs ---------------------------


def _spec_state_in_duckdb(store: Store, at_second: int, tombstones: bool) -> list[tuple[Any, ...]]:
    plan = plan_state(store, TABLE, at_second * 1_000_000)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    register_parquet(con, "changes", store, list(plan.change_files), SCHEMA)
    register_parquet(con, "snapshot", store, snapshot_parts(plan), SNAPSHOT_SCHEMA)
    sql = state_sql(TABLE, plan.at_us, changes_from_us=plan.changes_from_us, tombstones=tombstones)
    return con.execute(f"SELECT * FROM ({render(sql, 'duckdb')}) ORDER BY item_key").fetchall()


def _two_pass_state(store: Store, at_second: int, tombstones: bool) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    open_state(con, store, plan_state(store, TABLE, at_second * 1_000_000), tombstones=tombstones)
    return con.execute(f"SELECT {STATE_COLUMNS} FROM state ORDER BY item_key").fetchall()


@pytest.mark.slow
@PROPERTY
@given(ops=st.booleans().flatmap(lambda steps: operations(clock_steps=steps)),
       cuts=st.lists(st.integers(0, 100), max_size=4), snapshot_share=st.floats(0, 1),
       late_share=st.floats(0, 0.5), tombstones=st.booleans())
def test_the_spec_state_in_duckdb_equals_the_two_pass_replay_state(
    tmp_path_factory: pytest.TempPathFactory, ops: list[Op], cuts: list[int], snapshot_share: float,
    late_share: float, tombstones: bool
) -> None:
    store, records = _store_with_snapshot_and_late_files(tmp_path_factory.mktemp("store"), ops, cuts,
                                                         snapshot_share, late_share)
    for second in _moments(records):
        assert _spec_state_in_duckdb(store, second, tombstones) == _two_pass_state(store, second, tombstones)


# --- Spark: the same bytes as DuckDB, and the model -------------------------------------------------


def _replay_bytes(store: Store, second: int, engine: str, path: Path) -> bytes:
    con = open_items(store, TABLE, _at(second), engine=engine)
    replay_to_file(con, str(path), 0, overwrite=True)
    return path.read_bytes()


@pytest.mark.spark
@SPARK_PROPERTY
@given(ops=operations(), cuts=st.lists(st.integers(0, 100), max_size=4), snapshot_share=st.floats(0, 1),
       late_share=st.floats(0, 0.5), picks=st.lists(st.floats(0, 1), min_size=2, max_size=3),
       key_index=st.integers(0, len(KEYS) - 1))
def test_spark_state_history_and_diff_are_byte_identical_to_duckdb_and_the_model(
    spark: Any, tmp_path_factory: pytest.TempPathFactory, ops: list[Op], cuts: list[int], snapshot_share: float,
    late_share: float, picks: list[float], key_index: int
) -> None:
    store, records = _store_with_snapshot_and_late_files(tmp_path_factory.mktemp("store"), ops, cuts,
                                                         snapshot_share, late_share)
    if not records:
        return
    out = tmp_path_factory.mktemp("out")
    moments = _sample(_moments(records), picks)
    for second in moments:
        spark_items = _state_rows(open_items(store, TABLE, _at(second), engine="spark"))
        assert spark_items == _state_rows(open_items(store, TABLE, _at(second)))
        assert {key: image for key, _, image, _ in spark_items} == model_state(ops, second)
    for suffix in (".jsonl", ".parquet"):
        second = moments[-1]
        assert (_replay_bytes(store, second, "spark", out / f"spark{suffix}")
                == _replay_bytes(store, second, "duckdb", out / f"duckdb{suffix}"))
    key = json.dumps(KEYS[key_index], separators=(",", ":"), ensure_ascii=False)
    assert item_history(store, TABLE, key, engine="spark") == item_history(store, TABLE, key)
    first, last = moments[0], moments[-1]
    spark_diff = diff_states(store, TABLE, first * 1_000_000, last * 1_000_000, engine="spark")
    duck_diff = diff_states(store, TABLE, first * 1_000_000, last * 1_000_000)
    assert json.dumps(spark_diff.as_json()) == json.dumps(duck_diff.as_json())
    write_diff_parquet(spark_diff, str(out / "spark-diff.parquet"), overwrite=True)
    write_diff_parquet(duck_diff, str(out / "duckdb-diff.parquet"), overwrite=True)
    assert (out / "spark-diff.parquet").read_bytes() == (out / "duckdb-diff.parquet").read_bytes()
    before, after = model_state(ops, first), model_state(ops, last)
    assert {c.item_key for c in spark_diff.added} == after.keys() - before.keys()
    assert {c.item_key for c in spark_diff.removed} == before.keys() - after.keys()


@pytest.mark.spark
@SPARK_PROPERTY
@given(ops=operations(clock_steps=True), cuts=st.lists(st.integers(0, 100), min_size=1, max_size=4),
       snapshot_share=st.floats(0, 1), picks=st.lists(st.floats(0, 1), min_size=2, max_size=3),
       key_index=st.integers(0, len(KEYS) - 1))
def test_spark_orders_an_item_by_sequence_like_duckdb_when_the_clock_steps_back_across_batches(
    spark: Any, tmp_path_factory: pytest.TempPathFactory, ops: list[Op], cuts: list[int], snapshot_share: float,
    picks: list[float], key_index: int
) -> None:
    # The same rows give the same answer at every moment, decided or not (record.counts_from).
    store, records = _store_with_snapshot_and_late_files(tmp_path_factory.mktemp("store"), ops, cuts,
                                                         snapshot_share, 0.3)
    if not records:
        return
    moments = _sample(_covered(store, _moments(records)), picks)
    for second in moments:
        assert (_state_rows(open_items(store, TABLE, _at(second), engine="spark"))
                == _state_rows(open_items(store, TABLE, _at(second))))
    last = _moments(records)[-1]
    assert {key: image for key, _, image, _ in _state_rows(open_items(store, TABLE, _at(last), engine="spark"))} \
        == model_state(ops, last)
    key = json.dumps(KEYS[key_index], separators=(",", ":"), ensure_ascii=False)
    assert item_history(store, TABLE, key, engine="spark") == item_history(store, TABLE, key)


@pytest.mark.spark
@SPARK_PROPERTY
@given(ops=operations(), resends=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), max_size=6),
       cuts=st.lists(st.integers(0, 200), max_size=4), compact_at=st.integers(0, 200))
def test_spark_keeps_the_first_copy_of_kinesis_re_sends_like_duckdb(
    spark: Any, tmp_path_factory: pytest.TempPathFactory, ops: list[Op], resends: list[tuple[int, int]],
    cuts: list[int], compact_at: int
) -> None:
    emitted = _records(ops)
    if not emitted:
        return
    delivery: list[dict[str, Any]] = [record for _, record in emitted]
    for which, after in sorted(resends, key=lambda r: r[1]):
        original = emitted[which % len(emitted)][1]
        delivery.insert(max(after % (len(delivery) + 1), delivery.index(original) + 1), original)
    delivery = [_with_sequence(record, 10**20 + n) for n, record in enumerate(delivery)]
    store = LocalStore(tmp_path_factory.mktemp("store"))
    points = sorted({0, len(delivery), *(c % (len(delivery) + 1) for c in cuts)})
    seconds = sorted({ops[i].second for i, _ in emitted})
    snapshot_after = points[1 + compact_at % (len(points) - 1)] if len(points) > 1 else len(delivery)
    for start, end in itertools.pairwise(points):
        capture_batch(store, delivery[start:end], decode_kinesis_record, source="test")
        if end == snapshot_after and end < len(delivery):
            captured = sorted({json.loads(_payload(r))["dynamodb"]["ApproximateCreationDateTime"] // 1000
                               for r in delivery[:end]})
            build_snapshot(store, "sensors", captured[-1] * 1_000_000)
            merge_small_files(store, "sensors", (captured[-1] + 7200) * 1_000_000)
    for second in (seconds[0], seconds[-1]):
        spark_items = open_items(store, "sensors", _at(second), engine="spark")
        rows = spark_items.execute("SELECT item_key, image FROM items").fetchall()
        assert dict(rows) == model_state(ops, second)
        assert _state_rows(spark_items) == _state_rows(open_items(store, "sensors", _at(second)))


@pytest.mark.spark
def test_spark_honours_the_bootstrap_copy_floor_after_a_gap(
    spark: Any, scenario: Scenario, store: Store, queue: str, trimmed: None
) -> None:
    send(queue, scenario.failure_message())
    run_recover(store, queue)
    ticks = iter([(T0 + 30) * 1_000_000, (T0 + 31) * 1_000_000 + 200_000])
    bootstrap_from_scan(store, "orders", client=scenario.client, clock=lambda: next(ticks))

    con = open_items(store, "orders", _at(T0 + 32), engine="spark")
    rows = con.execute("SELECT item_key, image FROM items").fetchall()

    assert {key: json.loads(image) for key, image in rows} == scenario.expected(T0 + 32)


@pytest.mark.spark
def test_a_where_filter_gives_the_same_items_and_diff_on_spark(spark: Any, tmp_path: Path) -> None:
    store = _cli_store(tmp_path)
    at = datetime.fromisoformat("2025-06-15T15:06:49Z")

    items = {engine: _state_rows(open_items(store, TABLE, at, where="m IS NOT NULL", engine=engine))
             for engine in ("duckdb", "spark")}
    diffs = {engine: diff_states(store, TABLE, 1_750_000_000_000_000, 1_750_000_009_000_000, "s IS NOT NULL",
                                 engine=engine).as_json() for engine in ("duckdb", "spark")}

    assert items["spark"] == items["duckdb"] and len(items["spark"]) == 1
    assert diffs["spark"] == diffs["duckdb"] and [c["key"] for c in diffs["spark"]["changed"]] == [{"pk": {"S": "b"}}]


# --- Fixtures the in-process Spark tests share with tests/test_spark_cli.py -----------------------


def _cli_store(tmp_path: Path) -> LocalStore:
    ops = [Op(0, {"pk": {"S": "a"}, "n": {"N": "1.50"}}, 1_750_000_000),
           Op(1, {"pk": {"S": "b"}, "s": {"SS": ["x", "y"]}}, 1_750_000_000),
           Op(0, None, 1_750_000_005), Op(1, {"pk": {"S": "b"}, "m": {"M": {"a": {"NULL": True}}}}, 1_750_000_009)]
    store = LocalStore(tmp_path / "store")
    capture_batch(store, stream_records(TABLE, ops), decode_lambda_record, source="test")
    return store


# --- The spark-submit job ---------------------------------------------------------------------------


@pytest.mark.spark
def test_the_spark_job_writes_the_replay_file_s_items_in_key_order(spark: Any, tmp_path: Path) -> None:
    store = _cli_store(tmp_path)
    at = "2025-06-15T15:06:45Z"
    assert spark_job.main(["--store", str(store.root), "--table", TABLE, "--at", at,
                           "--output", str(tmp_path / "parquet")]) == 0
    assert spark_job.main(["--store", str(store.root), "--table", TABLE, "--at", at,
                           "--output", str(tmp_path / "jsonl"), "--format", "jsonl"]) == 0

    con = open_items(store, TABLE, datetime.fromisoformat(at))
    replay_to_file(con, str(tmp_path / "replay.jsonl"), 0)
    parts = sorted((tmp_path / "jsonl").glob("part-*"))
    assert b"".join(p.read_bytes() for p in parts) == (tmp_path / "replay.jsonl").read_bytes()
    written = pq.read_table(sorted((tmp_path / "parquet").glob("part-*.parquet")))
    assert written.column_names == PARQUET_SCHEMA.names
    assert [tuple(row.values()) for row in written.to_pylist()] == _state_rows(con)


@pytest.mark.spark
def test_the_spark_job_writes_the_data_files_importtable_reads(spark: Any, tmp_path: Path) -> None:
    store = _cli_store(tmp_path)
    at = "2025-06-15T15:06:45Z"
    assert spark_job.main(["--store", str(store.root), "--table", TABLE, "--at", at,
                           "--output", str(tmp_path / "export"), "--format", "dynamodb-json"]) == 0

    con = open_items(store, TABLE, datetime.fromisoformat(at))
    replay_to_file(con, str(tmp_path / "replay.jsonl"), 0)
    data = tmp_path / "export" / "data"
    # Only gzip'd line files under data/ (ImportTable reads every object there): no _SUCCESS marker.
    assert sorted(p.name for p in data.iterdir() if not p.name.startswith(".")) == \
        sorted(p.name for p in data.glob("part-*.txt.gz"))
    lines = [line for part in data.glob("part-*.txt.gz") for line in gzip.decompress(part.read_bytes()).splitlines()]
    assert sorted(lines) == sorted((tmp_path / "replay.jsonl").read_bytes().splitlines())


@pytest.mark.spark
def test_the_spark_job_refuses_an_import_request_for_a_local_output(
    spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _cli_store(tmp_path)

    code = spark_job.main(["--store", str(store.root), "--table", TABLE, "--at", "2025-06-15T15:06:45Z",
                           "--output", str(tmp_path / "export"), "--format", "dynamodb-json",
                           "--import-table", "orders-restored"])

    assert code == 2 and "ImportTable reads S3" in capsys.readouterr().err


@pytest.mark.spark
def test_the_spark_job_refuses_a_moment_outside_coverage_with_exit_5(
    spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _cli_store(tmp_path)

    code = spark_job.main(["--store", str(store.root), "--table", TABLE, "--at", "2020-01-01T00:00:00Z",
                           "--output", str(tmp_path / "out")])

    assert code == 5 and not (tmp_path / "out").exists()
    assert capsys.readouterr().err.startswith("ddb-rewind: error: 2020-01-01T00:00:00Z is before the earliest")


def test_the_spark_job_accepts_the_arguments_a_glue_job_adds() -> None:
    args = spark_job._arguments(["--JOB_ID", "j_1", "--store", "s3://b/p", "--table", TABLE, "--at", "0",
                                 "--output", "s3://o/", "--job-bookmark-option", "job-bookmark-disable",
                                 "--TempDir", "s3://t/"])
    assert (args.store, args.output) == ("s3://b/p", "s3://o/")


def test_the_spark_job_refuses_an_argument_it_does_not_know(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        spark_job._arguments(["--store", "s3://b/p", "--table", TABLE, "--at", "0", "--output", "o", "--fromat", "x"])
    assert exit_info.value.code == 2 and "--fromat" in capsys.readouterr().err


# --- Spark: every file checked by the executors that read it ---------------------------------------


def _small_store(tmp: Path) -> tuple[LocalStore, int]:
    ops = [Op(key_index=0, item={"pk": {"S": "a"}, "n": {"N": "1"}}, second=1_750_000_000, ttl=False),
           Op(key_index=1, item={"pk": {"S": "b"}}, second=1_750_000_005, ttl=False)]
    records = stream_records(TABLE, ops)
    store = LocalStore(tmp)
    capture_batch(store, records, decode_lambda_record, source="test")
    return store, 1_750_000_005


@pytest.mark.spark
def test_spark_refuses_a_change_file_that_fails_its_checksum(spark: Any, tmp_path: Path) -> None:
    from changelog.errors import DamagedStore
    from changelog.state import change_files

    store, at = _small_store(tmp_path / "store")
    (path,) = change_files(store, TABLE)
    damaged = store.root / path
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(DamagedStore, match="fails its checksum"):
        open_items(store, TABLE, _at(at), engine="spark")


@pytest.mark.spark
def test_spark_refuses_a_file_in_a_newer_store_format(spark: Any, tmp_path: Path) -> None:
    import pyarrow as pa

    from changelog.errors import DamagedStore
    from changelog.formats import FOOTER_KEY, FORMAT_VERSION
    from changelog.layout import change_file_path, hour_partition
    from changelog.state import change_files

    store, at = _small_store(tmp_path / "store")
    (path,) = change_files(store, TABLE)
    rows = pq.read_table(store.root / path)
    newer = rows.replace_schema_metadata({FOOTER_KEY: str(FORMAT_VERSION + 1).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(newer, sink)
    data = sink.getvalue().to_pybytes()
    (store.root / path).unlink()
    store.write(change_file_path(TABLE, hour_partition(at * 1_000_000), "1" * 40, "1" * 40, data), data)
    with pytest.raises(DamagedStore, match="written by a newer ddb-rewind"):
        open_items(store, TABLE, _at(at), engine="spark")


@pytest.mark.spark
def test_spark_without_hadoop_aws_refuses_an_s3_store_with_one_line(
        spark: Any, s3_over_http: Store, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.workloads import run_cli

    records = stream_records(TABLE, [Op(0, {"pk": {"S": "a"}}, 1_750_000_000)])
    capture_batch(s3_over_http, records, decode_lambda_record, source="test")
    assert run_cli(["replay", "--store", s3_over_http.uri, "--table", TABLE, "--at", "1750000000",
                    "--to-file", "-", "--engine", "spark"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hadoop-aws" in err
