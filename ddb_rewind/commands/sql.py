"""``ddb-rewind sql``: DuckDB over the store, one query or an interactive shell."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING, Any

from changelog.errors import RewindError, TableNotFound, TimeOutOfRange, UsageError
from changelog.store import open_store, remote_read_failure
from changelog.udf import refusal_behind
from ddb_rewind.args import add_store
from ddb_rewind.output import print_rows

if TYPE_CHECKING:
    import duckdb

    from replayer.engines.views import SqlSession

_HELP = """Views: changes, tables, snapshots, snapshot_rows, quarantine;
macros: state_at(TIME), history(KEY), <table>_at(TIME).
Only reads: SELECT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN; no file, network or setting.
End a query with ';'. .tables lists the tables and what each can restore; .help shows this; .quit leaves.
Line editing and history (Up arrow) as in a database shell; history is kept in ~/.ddb_rewind_sql_history."""

HISTORY_FILE = "~/.ddb_rewind_sql_history"
HISTORY_LINES = 1000


def _line_editing() -> None:
    """GNU readline (or libedit) under input(): arrows, Ctrl-R, and history kept between sessions."""
    import atexit
    import contextlib
    import os

    try:
        import readline
    except ImportError:  # a Python built without readline: the shell still works, without editing
        return
    path = os.path.expanduser(HISTORY_FILE)
    with contextlib.suppress(OSError):  # no history yet (or unreadable): start a new one
        readline.read_history_file(path)
    readline.set_history_length(HISTORY_LINES)

    def save() -> None:
        with contextlib.suppress(OSError):  # a read-only home: the session's history is simply not kept
            readline.write_history_file(path)

    atexit.register(save)


def _tables(session: SqlSession) -> None:
    """``.tables``: each table of the store with the intervals the session can answer for."""
    from changelog.restorable import describe_intervals
    from changelog.state import Coverage

    rows = [(name, describe_intervals(found.intervals) if isinstance(found, Coverage) else f"unreadable: {found}")
            for name, found in sorted(session.proven.items())]
    print_rows(("table", "restorable"), rows, "table")


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser("sql", help="query the whole history with SQL (DuckDB)",
                                   description=_HELP)
    add_store(parser)
    parser.add_argument("query", nargs="?", help="SQL to run; without it, an interactive shell")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="how rows are printed")
    parser.set_defaults(run=run)


def _query_error(exc: duckdb.Error) -> RewindError:
    import duckdb

    from replayer.engines.views import REFUSED

    message = str(exc).splitlines()[0]
    known = refusal_behind(exc) or remote_read_failure(exc)
    if known is not None:
        return known
    if isinstance(exc, duckdb.PermissionException):
        # The locked connection (replayer.engines.views.open_sql): a file, the network or an extension.
        return UsageError(f"sql reads only the store's views: {message}")
    if REFUSED in message:
        # The coverage guard of state_at / <table>_at: the same refusal (and exit code) as replay.
        return TimeOutOfRange(message[message.index(REFUSED) + len(REFUSED):])
    missing = re.search(r'Table Function with name "?([^"!]+?)_at"? does not exist', message)
    if isinstance(exc, duckdb.CatalogException) and missing:
        # <table>_at of a table the store does not hold: refused as state_at(t, only_table := ...) is.
        return TableNotFound(f"the store holds no table {missing.group(1)!r} (no {missing.group(1)}_at): "
                             "the tables view lists those it holds")
    return UsageError(f"query failed: {message}")


def _run_query(session: SqlSession, query: str, fmt: str) -> None:
    import duckdb

    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        # Bytes that are not UTF-8 on the command line arrive as lone surrogates DuckDB cannot take.
        raise UsageError("the query is not valid UTF-8 text") from None
    try:
        result = session.query(query)
    except duckdb.Error as exc:
        raise _query_error(exc) from None
    if result is not None:
        print_rows(result[0], result[1], fmt)


def _ends_statement(text: str) -> bool:
    """Whether ``text`` ends with a ';' of its own: not one inside a comment or a string, as DuckDB reads it."""
    import duckdb

    tokens = [(at, kind) for at, kind in duckdb.tokenize(text) if kind != duckdb.token_type.comment]
    return bool(tokens) and tokens[-1][1] == duckdb.token_type.operator and text[tokens[-1][0]:].startswith(";")


def run(args: argparse.Namespace) -> int:
    """Run one query, or a shell reading queries from stdin."""
    from replayer.engines.views import SqlSession

    con = SqlSession(open_store(args.store))
    if args.query:
        _run_query(con, args.query, args.format)
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        _line_editing()
        print(_HELP)
    buffer: list[str] = []
    while True:
        try:
            line = input("rewind> " if not buffer else "   ...> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        if not interactive and line == "":
            break
        if line.strip() in (".quit", ".exit"):
            break
        if not buffer and line.strip() in (".help", ".tables"):
            if line.strip() == ".help":
                print(_HELP)
            else:
                _tables(con)
            continue
        buffer.append(line)
        if _ends_statement("\n".join(buffer)):
            try:
                _run_query(con, "\n".join(buffer), args.format)
            except RewindError as exc:
                if not interactive:
                    # A script stops at its first refused statement, with that statement's exit code.
                    raise
                print(f"error: {exc}", file=sys.stderr)
            buffer = []
    if buffer and "".join(buffer).strip():
        _run_query(con, "\n".join(buffer), args.format)
    return 0
