"""`ddb-rewind sql` touches nothing but the store's views: every write or reach-out, however wrapped, is refused.

Two layers: the statement filter (``replayer.engines.views.check_read_only``) and the locked connection
(``open_sql``: no file, network or extension, no setting). The corpus goes through the CLI, so both
answer; the tests of ``open_sql`` alone show the lock holds when the filter is bypassed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from changelog.codec import decode_lambda_record
from changelog.layout import meta_path
from changelog.store import LocalStore, Store
from ddb_rewind.cli import main
from replayer.engines.views import open_sql
from stream_consumer.capture import capture_batch
from tests.model import Op, stream_records

T0 = 1_700_000_000
OPS = [Op(0, {"pk": {"S": "a"}, "n": {"N": "1"}}, T0), Op(1, {"pk": {"S": "b"}, "n": {"N": "2"}}, T0 + 60)]
USER_BYTES = b"the user's own file\n"


@dataclass(frozen=True)
class Place:
    """Where a statement could write or read: the user's file, the store, a file outside it."""

    root: Path
    store: Store
    user_file: Path

    @property
    def meta(self) -> Path:
        local = self.store.local_root()
        assert local is not None
        return local / meta_path("users")

    def fill(self, statement: str) -> str:
        return statement.format(user=self.user_file, meta=self.meta, new=self.root / "new", store=self.store.uri,
                                outside=self.root / "outside.csv", root=self.root)


def _tree(*roots: Path) -> dict[str, bytes | None]:
    """Every file and directory under ``roots``, with its bytes: any write shows as a difference."""
    found: dict[str, bytes | None] = {}
    for root in roots:
        if not root.exists():
            continue
        for path in sorted(root.rglob("*")):
            found[str(path)] = path.read_bytes() if path.is_file() else None
    return found


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Place]:
    root = tmp_path / "home"
    root.mkdir()
    store = LocalStore(root / "store")
    (root / "store").mkdir()
    capture_batch(store, stream_records("users", OPS), decode_lambda_record, source="test")
    user_file = root / "user.csv"
    user_file.write_bytes(USER_BYTES)
    (root / "outside.csv").write_text("secret\nhunter2\n")
    # Relative paths (DuckDB's own temp or extension files) would land here, inside what is checked.
    monkeypatch.chdir(root)
    yield Place(root, store, user_file)


# Each writes a file, reads one outside the store, loads code or changes the session.
WRITES = [
    "COPY (SELECT 1 AS n) TO '{user}'",
    "COPY (SELECT 1 AS n) TO '{meta}' (FORMAT csv)",
    "COPY (SELECT * FROM changes) TO '{new}.parquet'",
    "COPY tables FROM '{outside}'",
    "EXPORT DATABASE '{new}'",
    "ATTACH '{new}.duckdb' AS copy",
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW changes2 AS SELECT 1",
    "CREATE MACRO m() AS 1",
    "INSERT INTO tables VALUES ('evil')",
    "DELETE FROM tables",
    "SET enable_external_access = true",
    "SET threads = 1",
    "PRAGMA profiling_output = '{user}'",
    "INSTALL httpfs",
    "LOAD '{user}'",
    "SELECT * FROM read_text('{outside}')",
    "SELECT * FROM read_csv('{outside}')",
    "SELECT * FROM read_blob('{store}/tables/users/meta.json')",
    "SELECT * FROM glob('{store}/*')",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    "CALL enable_logging(storage_path = '{new}')",
    "CHECKPOINT",
    "UPDATE EXTENSIONS",  # a statement type DuckDB's Python enum has no name for
]

WRAPPERS = {
    "plain": "{}",
    "explain": "EXPLAIN {}",
    "explain analyze": "EXPLAIN ANALYZE {}",
    "explain options": "EXPLAIN (ANALYZE, FORMAT json) {}",
    "cte": "WITH w AS ({}) SELECT * FROM w",
    "after a select": "SELECT 1; {}",
}


def _one_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("wrapper", WRAPPERS.values(), ids=WRAPPERS.keys())
@pytest.mark.parametrize("write", WRITES)
def test_a_write_or_reach_out_however_wrapped_is_refused_and_touches_nothing(
        place: Place, capsys: pytest.CaptureFixture[str], write: str, wrapper: str) -> None:
    before = _tree(place.root, Path.home() / ".duckdb")
    assert main(["sql", "--store", place.store.uri, wrapper.format(place.fill(write))]) != 0
    _one_refusal(capsys)
    assert place.user_file.read_bytes() == USER_BYTES
    assert _tree(place.root, Path.home() / ".duckdb") == before


@pytest.mark.parametrize("write", WRITES)
def test_a_write_read_from_standard_input_stops_the_script_and_touches_nothing(
        place: Place, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, write: str) -> None:
    before = _tree(place.root)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"SELECT 1 AS one;\n{place.fill(write)};\nSELECT 2 AS two;\n"))
    assert main(["sql", "--store", place.store.uri, "--format", "csv"]) != 0
    assert capsys.readouterr().out.splitlines() == ["one", "1"]  # the script stopped at the refusal
    assert _tree(place.root) == before


@pytest.mark.parametrize("statement", [
    "COPY (SELECT 1 AS n) TO '{user}'",
    "COPY (SELECT 1 AS n) TO '{meta}' (FORMAT csv)",
    "EXPLAIN ANALYZE COPY (SELECT 1 AS n) TO '{meta}' (FORMAT csv)",
    "WITH w AS (COPY (SELECT 1 AS n) TO '{user}') SELECT 1",
    "EXPORT DATABASE '{new}'",
    "ATTACH '{new}.duckdb' AS copy",
    "SELECT * FROM read_text('{outside}')",
    "SELECT * FROM read_text('{meta}')",
    "SET enable_external_access = true",
    "SET allowed_directories = ['{root}']",
    "LOAD '{user}'",
    "INSTALL httpfs",
    "SELECT * FROM duckdb_secrets()",
    "INSERT INTO tables VALUES ('evil')",
    "DELETE FROM snapshots",
    "WITH w AS (INSERT INTO quarantine__raw (table_name) VALUES ('x') RETURNING *) SELECT 1",
])
def test_the_connection_itself_refuses_what_the_filter_would_miss(place: Place, statement: str) -> None:
    con = open_sql(place.store)
    before = _tree(place.root)
    with pytest.raises(duckdb.Error):
        con.execute(place.fill(statement)).fetchall()
    assert _tree(place.root) == before
    assert con.execute("SELECT count(*) FROM tables").fetchall() == [(1,)]


@pytest.mark.parametrize("query", [
    "SELECT count(*) FROM changes",
    "SELECT count(*) FROM state_at('2023-11-14T22:14:00Z')",
    """SELECT count(*) FROM history('{"pk":{"S":"b"}}')""",
    "SELECT count(*) FROM users_at('2023-11-14T22:14:00Z')",
    "SELECT count(*) FROM quarantine",
    "SELECT count(*) FROM snapshots",
    "EXPLAIN SELECT count(*) FROM changes",
    "EXPLAIN ANALYZE SELECT count(*) FROM changes",
    "EXPLAIN (SELECT 1)",
    "EXPLAIN ANALYZE (SELECT 1) UNION ALL (SELECT 2)",
    "EXPLAIN (FORMAT json) WITH c AS (SELECT 1) SELECT * FROM c",
    "/* why */ EXPLAIN ANALYZE -- how\n SELECT 1",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
    "SUMMARIZE changes",
])
def test_reading_queries_run_on_the_locked_connection(place: Place, query: str) -> None:
    assert main(["sql", "--store", place.store.uri, query]) == 0


def test_the_coverage_function_answers_only_for_the_stores_tables(
        place: Place, capsys: pytest.CaptureFixture[str]) -> None:
    # rewind_refusal is callable from a query: a table name must never become a path outside the store.
    assert main(["sql", "--store", place.store.uri, "--format", "csv",
                 "SELECT rewind_refusal('../../..', TIMESTAMPTZ '2023-11-14 22:14:00+00') AS r"]) == 0
    assert capsys.readouterr().out.splitlines() == ["r", "the store holds no table '../../..'"]


def test_a_query_nested_too_deeply_to_check_is_refused_in_one_line(
        place: Place, capsys: pytest.CaptureFixture[str]) -> None:
    query = "SELECT * FROM (" * 900 + "SELECT 1" + ")" * 900
    assert main(["sql", "--store", place.store.uri, query]) == 2
    _one_refusal(capsys)


def test_a_pivot_without_its_values_is_refused_naming_the_form_that_runs(
        place: Place, capsys: pytest.CaptureFixture[str]) -> None:
    # DuckDB runs it as two statements, the first creating a type: the refusal says how to list the values.
    assert main(["sql", "--store", place.store.uri, "PIVOT changes ON event_name USING count(*)"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "PIVOT t ON c IN ('a', 'b')" in err


def test_a_pivot_listing_its_values_runs(place: Place, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--store", place.store.uri, "--format", "csv",
                 "PIVOT changes ON event_name IN ('INSERT', 'REMOVE') USING count(*) GROUP BY table_name"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "table_name,INSERT,REMOVE"
