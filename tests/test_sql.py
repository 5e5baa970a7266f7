"""`ddb-rewind sql`: the views over a store, one query or statements read from standard input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from changelog.codec import decode_lambda_record
from changelog.store import Store
from ddb_rewind.cli import main
from stream_consumer.capture import capture_batch
from tests.model import Op, stream_records

T0 = 1_700_000_000
OPS = [
    Op(0, {"pk": {"S": "a"}, "status": {"S": "active"}, "total": {"N": "12345678901234567890.5"}}, T0),
    Op(1, {"pk": {"S": "b"}, "status": {"S": "active"}, "total": {"N": "3"}}, T0),
    Op(1, {"pk": {"S": "b"}, "status": {"S": "closed"}, "total": {"N": "3"}}, T0 + 60),
    Op(0, None, T0 + 120),
]


@pytest.fixture
def filled(store: Store) -> Store:
    capture_batch(store, stream_records("users", OPS), decode_lambda_record, source="test")
    capture_batch(store, stream_records("users", OPS), decode_lambda_record, source="retry")
    return store


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    assert main(["sql", *args, "--format", "json"]) == 0
    return list(json.loads(capsys.readouterr().out))


def test_changes_holds_each_change_once_despite_redelivery(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _json(capsys, "--store", filled.uri, "SELECT count(*) AS n FROM changes")
    assert rows == [{"n": 4}]


def test_plain_attribute_names_filter_the_state_at_a_moment(filled: Store,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    rows = _json(capsys, "--store", filled.uri,
                 "SELECT pk, total FROM users_at('2023-11-14T22:13:30Z') WHERE status = 'active' ORDER BY pk")
    assert rows == [{"pk": "a", "total": "12345678901234567890.5"}, {"pk": "b", "total": "3.0"}]


def test_state_at_sees_deletes(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _json(capsys, "--store", filled.uri, "SELECT doc->>'pk' AS pk FROM state_at('2023-11-14T22:15:20Z')")
    assert rows == [{"pk": "b"}]


def test_history_lists_an_items_changes_in_order(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _json(capsys, "--store", filled.uri,
                 """SELECT event_name FROM history('{"pk":{"S":"b"}}')""")
    assert [row["event_name"] for row in rows] == ["INSERT", "MODIFY"]


def test_csv_output_has_a_header(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--store", filled.uri, "SELECT 1 AS one", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["one", "1"]


def test_without_a_query_statements_are_read_from_stdin(filled: Store, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT count(*) AS n\nFROM changes;\nSELECT 2 AS two;\n"))
    assert main(["sql", "--store", filled.uri, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "4", "two", "2"]


def test_a_malformed_query_is_one_clear_line(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--store", filled.uri, "SELEC nonsense"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ddb-rewind: error: query failed")


def test_a_table_macro_refuses_tables_whose_names_differ_only_in_case(
        filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    # DuckDB matches identifiers without regard to case: users_at would silently answer for one of them.
    capture_batch(filled, stream_records("Users", OPS[:1]), decode_lambda_record, source="test")
    assert main(["sql", "--store", filled.uri, "SELECT count(*) FROM users_at('2023-11-14T22:13:30Z')"]) == 2
    assert "Users, users differ only in case" in capsys.readouterr().err


@pytest.mark.parametrize("statement", [
    "COPY (SELECT * FROM changes) TO '{out}'",
    "EXPORT DATABASE '{out}'",
    "ATTACH '{out}' AS copy",
    "SELECT 1; COPY (SELECT 1) TO '{out}'",
])
def test_a_statement_that_writes_is_refused_and_writes_nothing(filled: Store, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str],
                                                              statement: str) -> None:
    out = tmp_path / "written"
    assert main(["sql", "--store", filled.uri, statement.format(out=out)]) == 2
    assert "sql only reads" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("statement", ["INSTALL httpfs", "LOAD httpfs", "SET threads = 1", "PRAGMA version",
                                       "CREATE TABLE t AS SELECT 1", "CALL pragma_version()"])
def test_statements_that_load_code_or_change_the_session_are_refused(filled: Store, statement: str) -> None:
    assert main(["sql", "--store", filled.uri, statement]) == 2


@pytest.mark.parametrize("statement", ["DESCRIBE changes", "SHOW TABLES", "EXPLAIN SELECT count(*) FROM changes",
                                       "SUMMARIZE SELECT event_name FROM changes", "FROM changes LIMIT 1",
                                       "WITH c AS (SELECT 1 AS n) SELECT n FROM c"])
def test_statements_that_only_read_run(filled: Store, statement: str) -> None:
    assert main(["sql", "--store", filled.uri, statement]) == 0


def test_a_query_naming_a_remote_file_is_refused_without_reaching_it(filled: Store,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--store", filled.uri, "SELECT * FROM read_parquet('https://example.com/x.parquet')"]) == 2
    err = capsys.readouterr().err
    assert "reads only the store's views" in err and "download" not in err.lower()


def test_the_shell_lists_tables_with_what_each_can_restore(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from changelog.store import LocalStore
    from tests.events import lambda_record

    store = LocalStore(tmp_path / "store")
    capture_batch(store, [lambda_record("orders", "INSERT", {"pk": {"S": "a"}}, 1_700_000_000, 1,
                                        new={"pk": {"S": "a"}})], decode_lambda_record, source="test")
    monkeypatch.setattr("sys.stdin", io.StringIO(".tables\nSELECT 1 AS one;\n"))

    assert main(["sql", "--store", store.uri]) == 0

    out = capsys.readouterr().out
    assert "orders" in out and "2023-11-14T22:13:20Z to 2023-11-14T22:13:20Z" in out and "one" in out


def test_history_takes_the_plain_key_form_the_cli_takes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from changelog.meta import write_meta
    from changelog.store import LocalStore
    from tests.events import lambda_record

    store = LocalStore(tmp_path / "store")
    key = {"pk": {"S": "a"}, "sk": {"N": "5"}}
    capture_batch(store, [lambda_record("orders", "INSERT", key, 1_700_000_000, 1, new={**key, "n": {"N": "1"}})],
                  decode_lambda_record, source="test")
    write_meta(store, {"table_name": "orders", "description": None, "key_schema": [
        {"AttributeName": "pk", "KeyType": "HASH", "AttributeType": "S"},
        {"AttributeName": "sk", "KeyType": "RANGE", "AttributeType": "N"}]})

    assert main(["sql", "--store", store.uri, "--format", "json",
                 "SELECT event_name FROM history('pk=a,sk=5')"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"event_name": "INSERT"}]
    assert main(["sql", "--store", store.uri, "SELECT * FROM history('nope=1')"]) == 2
    assert "no table's key schema reads the key" in capsys.readouterr().err
    assert main(["sql", "--store", store.uri, "SELECT * FROM history('pk=a,sk=1E+126')"]) == 2
    assert "exceeds DynamoDB's 38 digits or range" in capsys.readouterr().err


def test_a_query_that_is_not_utf8_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "store").mkdir()
    assert main(["sql", "--store", str(tmp_path / "store"), "SELECT '\udcff'"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not valid UTF-8" in err


@pytest.mark.parametrize("statement", [
    "SELECT event_time, (SELECT count(*) FROM users_at(event_time)) FROM (SELECT DISTINCT event_time FROM changes)",
    "SELECT count(*) FROM (SELECT DISTINCT event_time FROM changes) c, LATERAL state_at(c.event_time) s",
    "SELECT count(*) FROM tables c, LATERAL state_at('latest', only_table := c.table_name) s",
    "SELECT item_key, (SELECT count(*) FROM history(item_key)) FROM (SELECT DISTINCT item_key FROM changes)",
])
def test_a_macro_given_a_column_is_refused_not_answered_from_its_own_rows(
        filled: Store, statement: str, capsys: pytest.CaptureFixture[str]) -> None:
    # A macro's arguments are bound inside its body: c.event_time there is the store's own column.
    assert main(["sql", "--store", filled.uri, statement]) == 2
    assert "takes constants" in capsys.readouterr().err


def test_a_semicolon_in_a_comment_or_a_string_does_not_end_a_statement_read_from_stdin(
        filled: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    script = "SELECT count(*) AS n FROM changes -- all of them;\nWHERE table_name = 'no;pe';\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    assert main(["sql", "--store", filled.uri, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "0"]


def test_json_output_holds_every_value_duckdb_returns(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _json(capsys, "--store", filled.uri,
                 "SELECT DATE '2024-01-02' AS d, 'nan'::DOUBLE AS n, 1e-38::DECIMAL(38,38) AS e, "
                 "[blob '\\x00', blob '\\xff'] AS bs, a.item_key, b.item_key "
                 "FROM changes a JOIN changes b ON a.item_key = b.item_key ORDER BY a.item_key LIMIT 1")
    assert rows == [{"d": "2024-01-02", "n": "nan", "e": "0.00000000000000000000000000000000000001",
                     "bs": ["AA==", "/w=="], "item_key": '{"pk":{"S":"a"}}', "item_key_2": '{"pk":{"S":"a"}}'}]


def test_csv_output_writes_values_as_the_csv_export_does(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--store", filled.uri, "--format", "csv",
                 "SELECT true AS b, blob '\\x00\\x01\\x02' AS x, ['b', 'a'] AS l, 0::DECIMAL(38,8) AS z"]) == 0
    assert capsys.readouterr().out.splitlines() == ["b,x,l,z", 'true,AAEC,"[""b"",""a""]",0.00000000']


def test_a_sql_session_spills_beside_temporary_files_not_into_the_working_directory(filled: Store) -> None:
    # DuckDB's own default is .tmp in the working directory: a large query would leave files there.
    from changelog.connection import spill_directory
    from replayer.engines.views import open_sql

    con = open_sql(filled)
    assert con.execute("SELECT current_setting('temp_directory')").fetchall() == [(spill_directory(),)]


def test_a_sql_session_cannot_read_what_another_process_spills(filled: Store,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # DuckDB lets a locked connection read its spill directory: one shared by every process let a
    # session read the rows another process (a replay of another store) had spilled.
    import subprocess
    import sys

    from changelog.connection import spill_directory

    plant = ("import pathlib, sys; from changelog.connection import spill_directory; d = spill_directory(); "
             "(pathlib.Path(d) / 'spilled.tmp').write_text(\"another store's rows\"); print(d, flush=True); "
             "sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", plant], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
    try:
        theirs = (other.stdout.readline() if other.stdout else "").strip()
        assert theirs and theirs != spill_directory()
        assert (Path(spill_directory()).stat().st_mode & 0o777) == 0o700
        assert main(["sql", "--store", filled.uri, f"SELECT content FROM read_text('{theirs}/spilled.tmp')"]) != 0
    finally:
        other.communicate("", timeout=30)
    out, err = capsys.readouterr()
    assert "another store's rows" not in out and len(err.strip().splitlines()) == 1
    assert not Path(theirs).exists()  # removed when its process ended


def test_a_table_macro_of_a_table_the_store_does_not_hold_is_not_found(
        filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--store", filled.uri, "SELECT count(*) FROM orders_at('latest')"]) == 4
    assert "holds no table 'orders'" in capsys.readouterr().err
