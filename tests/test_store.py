"""Both stores keep whole objects, refuse to overwrite on request, and serve Parquet to pyarrow and DuckDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pyarrow.parquet as pq
import pytest

from changelog.codec import decode_lambda_record
from changelog.errors import ConflictError, DamagedStore, StoreError, StoreNotFound
from changelog.record import SCHEMA
from changelog.source import register_parquet
from changelog.state import change_files
from changelog.store import LocalStore, ObjectMissing, S3Store, Store, open_store
from ddb_rewind.cli import main
from replayer.engines.views import open_sql
from stream_consumer.capture import capture_batch
from tests.events import lambda_record
from tests.moto_http import MotoHttpServer


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest) -> Store:
    """Each test runs against a local directory and a moto bucket."""
    fixture = "store" if request.param == "local" else "s3_store"
    return request.getfixturevalue(fixture)


def test_an_object_written_is_read_back_whole(any_store: Store) -> None:
    any_store.write("a/b/c.bin", b"\x00\x01 bytes")
    assert any_store.read("a/b/c.bin") == b"\x00\x01 bytes"
    assert any_store.exists("a/b/c.bin")


def test_a_write_replaces_the_object(any_store: Store) -> None:
    any_store.write("x", b"old")
    any_store.write("x", b"new")
    assert any_store.read("x") == b"new"


def test_reading_a_missing_object_raises_object_missing(any_store: Store) -> None:
    with pytest.raises(ObjectMissing):
        any_store.read("nothing/here")
    assert not any_store.exists("nothing/here")


def test_list_is_recursive_sorted_and_relative(any_store: Store) -> None:
    for path in ("t/b/2", "t/a/1", "t/a/0", "other/x"):
        any_store.write(path, b"-")
    assert any_store.list("t/") == ["t/a/0", "t/a/1", "t/b/2"]
    assert any_store.list("none/") == []


def test_sizes_are_in_bytes(any_store: Store) -> None:
    any_store.write("s/one", b"1")
    any_store.write("s/three", b"333")
    assert any_store.sizes("s/") == {"s/one": 1, "s/three": 3}


def test_delete_removes_and_tolerates_a_missing_object(any_store: Store) -> None:
    any_store.write("d/x", b"-")
    any_store.delete("d/x")
    any_store.delete("d/x")
    assert any_store.list("d/") == []


def test_delete_many_removes_exactly_the_objects_named_and_tolerates_missing_ones(any_store: Store) -> None:
    for n in range(7):
        any_store.write(f"d/{n}", b"-")
    any_store.delete_many(["d/0", "d/2", "d/5", "d/missing"])
    assert any_store.list("d/") == ["d/1", "d/3", "d/4", "d/6"]
    any_store.delete_many([])


def test_s3_deletes_many_objects_a_batch_a_call(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("changelog.store._DELETE_BATCH", 3)  # S3's own limit is 1,000 keys a call
    calls: list[int] = []
    s3_store.client.meta.events.register(
        "before-parameter-build.s3.DeleteObjects", lambda params, **_: calls.append(len(params["Delete"]["Objects"])))
    for n in range(7):
        s3_store.write(f"d/{n}", b"-")
    s3_store.delete_many([f"d/{n}" for n in range(7)])
    assert calls == [3, 3, 1]
    assert s3_store.list("d/") == []


def test_an_object_s3_did_not_delete_is_one_store_error_naming_it(s3_store: S3Store) -> None:
    s3_store.write("d/kept", b"-")
    s3_store.write("d/gone", b"-")

    def refuse_one(parsed: dict[str, Any], **_: Any) -> None:
        # S3 answers a DeleteObjects in part: what it could not delete is listed, the call succeeds.
        parsed["Errors"] = [{"Key": "backups/d/kept", "Code": "AccessDenied", "Message": "Access Denied"}]

    s3_store.client.meta.events.register("after-call.s3.DeleteObjects", refuse_one)
    with pytest.raises(StoreError, match=r"cannot delete d/kept in s3://rewind-store/backups: AccessDenied: .*"
                                         r"\(1 of 2 objects not deleted\)"):
        s3_store.delete_many(["d/kept", "d/gone"])


def test_a_directory_where_a_local_store_keeps_a_file_is_a_damaged_store(tmp_path: Path) -> None:
    # Not an I/O failure a rerun cures (exit 7): something not the store's stands in the file's place.
    store = LocalStore(tmp_path)
    (tmp_path / "tables" / "orders" / "meta.json").mkdir(parents=True)
    with pytest.raises(DamagedStore, match=r"tables/orders/meta\.json .* is a directory"):
        store.write("tables/orders/meta.json", b"{}")


def test_a_second_write_if_absent_is_a_conflict(any_store: Store) -> None:
    any_store.write("m/manifest.json", b"first", if_absent=True)
    with pytest.raises(ConflictError):
        any_store.write("m/manifest.json", b"second", if_absent=True)
    assert any_store.read("m/manifest.json") == b"first"


def test_opening_a_missing_directory_is_store_not_found(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound, match="does not exist"):
        open_store(str(tmp_path / "missing"))


def test_create_makes_a_missing_local_store(tmp_path: Path) -> None:
    assert open_store(str(tmp_path / "new"), create=True).list("") == []


def test_opening_a_missing_bucket_is_store_not_found(aws: None) -> None:
    with pytest.raises(StoreNotFound, match="no-such-bucket"):
        open_store("s3://no-such-bucket/prefix")


def test_an_existing_bucket_opens_with_its_prefix(s3_store: Store) -> None:
    s3_store.write("tables/orders/meta.json", b"{}")
    opened = open_store("s3://rewind-store/backups")
    assert isinstance(opened, S3Store) and opened.uri == s3_store.uri


def test_an_s3_prefix_holding_no_tables_is_no_store(s3_store: Store) -> None:
    s3_store.write("notes.txt", b"someone else's")
    with pytest.raises(StoreNotFound, match="holds no ddb-rewind store"):
        open_store("s3://rewind-store/backups")


def test_a_writer_may_start_a_store_in_an_empty_s3_prefix(s3_store: Store) -> None:
    assert open_store("s3://rewind-store/backups", allow_empty=True).list("") == []


@pytest.mark.parametrize("command", [
    ["status"],
    ["history", "--table", "orders", "--key", "pk=a"],
], ids=["status", "history"])
def test_a_reader_of_an_s3_prefix_holding_no_store_says_so_in_one_line_exit_4(
    s3_store: Store, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    # A mistyped prefix is not an empty store: "0 rows" would read as "nothing was backed up".
    assert main([*command, "--store", "s3://rewind-store/no-such-prefix"]) == 4
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("ddb-rewind: error:") and "holds no ddb-rewind store" in line
    assert "rows" not in captured.out


@pytest.fixture
def s3_over_http(monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A store in a bucket of a moto server on 127.0.0.1, reached over HTTP like real S3."""
    server = MotoHttpServer()
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    try:
        boto3.client("s3").create_bucket(Bucket="http-store")
        yield open_store("s3://http-store/backups", allow_empty=True)
    finally:
        server.stop()


def _capture_two_changes(store: Store) -> None:
    key = {"pk": {"S": "a"}}
    records = [
        lambda_record("orders", "INSERT", key, 1_750_000_000, 1, new={**key, "n": {"N": "1"}}),
        lambda_record("orders", "MODIFY", key, 1_750_000_001, 2, new={**key, "n": {"N": "2"}}),
    ]
    capture_batch(store, records, decode_lambda_record, source="test")


def test_pyarrow_reads_parquet_from_the_s3_store_over_http(s3_over_http: Store) -> None:
    _capture_two_changes(s3_over_http)
    (path,) = change_files(s3_over_http, "orders")
    filesystem, root = s3_over_http.arrow()
    table = pq.read_table(f"{root}/{path}", filesystem=filesystem)
    assert table.schema.equals(SCHEMA)
    assert table.column("event_id").to_pylist() == ["evt-1", "evt-2"]


def test_duckdb_queries_an_s3_store_without_any_extension(s3_over_http: Store) -> None:
    _capture_two_changes(s3_over_http)
    con = duckdb.connect()
    register_parquet(con, "c", s3_over_http, change_files(s3_over_http, "orders"), SCHEMA)
    assert con.execute("SELECT count(*), max(sequence_number) FROM c").fetchall() == [(2, "2".zfill(40))]
    loaded = con.execute("SELECT count(*) FROM duckdb_extensions() WHERE loaded AND extension_name = 'httpfs'")
    assert loaded.fetchall() == [(0,)]


def test_the_sql_views_work_over_an_s3_store(s3_over_http: Store) -> None:
    _capture_two_changes(s3_over_http)
    rows = open_sql(s3_over_http).execute("SELECT new_doc->>'$.n' FROM changes ORDER BY event_id").fetchall()
    assert rows == [("1",), ("2",)]


def test_the_sql_views_over_an_s3_store_answer_on_a_connection_locked_against_the_bucket(s3_over_http: Store) -> None:
    _capture_two_changes(s3_over_http)
    con = open_sql(s3_over_http)
    state = con.execute("SELECT item->>'$.n.N' FROM state_at(TIMESTAMPTZ '2025-06-15 15:06:41+00')").fetchall()
    assert state == [("2",)]
    assert len(con.execute("""SELECT * FROM history('{"pk":{"S":"a"}}')""").fetchall()) == 2
    (path,) = change_files(s3_over_http, "orders")
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"COPY (SELECT 1) TO 's3://http-store/backups/{path}'")
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"SELECT * FROM read_parquet('s3://http-store/backups/{path}')")


# --- names from outside never become more than one step of a path ----------------------------------


UNSAFE_NAMES = ["..", ".", "", "a/b", "../../etc", "x\\..\\y", "x" * 256, "nul\0", "new\nline", "ünï"]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_every_path_built_from_an_outside_name_refuses_one_that_is_not_a_path_step(name: str) -> None:
    from changelog.errors import UnsafeName
    from changelog.gaps import batch_gap_path, poller_gap_path
    from changelog.layout import checkpoint_path, table_root

    builders = [lambda: table_root(name), lambda: checkpoint_path("orders", name),
                lambda: poller_gap_path("orders", name, "1"),
                lambda: batch_gap_path("orders", name, "1", "2"), lambda: batch_gap_path("orders", "s", "1", name)]
    if name:  # no sequence (the shard's start) is the one empty value a gap name allows
        builders.append(lambda: poller_gap_path("orders", "s", name))
    for build in builders:
        with pytest.raises(UnsafeName):
            build()


def test_names_as_dynamodb_and_its_streams_give_them_are_path_steps() -> None:
    from changelog.gaps import batch_gap_path
    from changelog.layout import checkpoint_path

    assert checkpoint_path("my.table-1_x", "shardId-00000001573689847184-864758bb") == (
        "tables/my.table-1_x/checkpoints/shardId-00000001573689847184-864758bb.json")
    assert batch_gap_path("orders", "shardId-000000000000", "100", "200") == (
        "tables/orders/gaps/shardId-000000000000-100-to-200.json")
