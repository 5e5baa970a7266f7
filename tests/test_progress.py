"""Progress of long work: on a terminal only, on stderr, never mixed into results."""

from __future__ import annotations

import io

import duckdb
import pytest

from changelog.progress import query_progress, track_progress

# Long enough for a few draws on any machine; the test asserts what is drawn, never how fast.
LONG_QUERY = "SELECT count(*) FROM range(400000000) t(i) WHERE i % 7 = 3"


def _connection() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    track_progress(con)
    return con


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_long_query_shows_duckdbs_percentage_on_a_terminal_then_clears_the_line() -> None:
    con = _connection()
    terminal = _Terminal()
    with query_progress(con, "query", stream=terminal, delay=0):
        con.execute(LONG_QUERY).fetchall()
    shown = terminal.getvalue()
    assert "\rquery: " in shown and "%" in shown
    assert shown.endswith("\r\033[K")  # results printed next start on a clean line


def test_nothing_is_drawn_in_a_pipe() -> None:
    con = _connection()
    pipe = io.StringIO()
    with query_progress(con, "query", stream=pipe, delay=0):
        con.execute(LONG_QUERY).fetchall()
    assert pipe.getvalue() == ""


def test_nothing_is_drawn_in_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "rewind-consumer")
    con = _connection()
    terminal = _Terminal()
    with query_progress(con, "query", stream=terminal, delay=0):
        con.execute(LONG_QUERY).fetchall()
    assert terminal.getvalue() == ""


def test_duckdb_never_draws_its_own_bar_on_stdout_where_results_go() -> None:
    # DuckDB draws only when stdout is a terminal, which a test cannot give it: the setting is the check.
    con = _connection()
    assert con.execute("SELECT current_setting('enable_progress_bar_print')").fetchone() == (False,)
