"""Python functions that SQL calls: a refusal raised inside one reaches the user as itself.

DuckDB turns an exception raised by a Python function into its own error, "Python exception
occurred while executing the UDF: <type>: <text>", which would leak to the user and lose the exit
code. Every function a query can call with the user's input (``history('<key>')``, a time past
year 9999) is made by ``sql_function``: the RewindError it raises is kept, and ``refusal_behind``
hands it back to whoever catches DuckDB's error, so it is reported as one line with its own code.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from changelog.errors import RewindError

if TYPE_CHECKING:
    import duckdb

_UDF_FAILED = "Python exception occurred while executing the UDF"
_lock = threading.Lock()
_raised: list[RewindError] = []  # the refusal of the query that failed last (DuckDB may call from its threads)


def sql_function(con: duckdb.DuckDBPyConnection, name: str, function: Callable[..., Any], parameters: list[Any],
                 returns: Any, **options: Any) -> None:
    """``con.create_function``, with a RewindError raised by ``function`` kept for ``refusal_behind``."""

    @functools.wraps(function)
    def guarded(*args: Any) -> Any:
        try:
            return function(*args)
        except RewindError as exc:
            with _lock:
                _raised[:] = [exc]
            raise

    con.create_function(name, guarded, parameters, returns, **options)


def refusal_behind(exc: BaseException) -> RewindError | None:
    """The RewindError a function of ``sql_function`` raised that became DuckDB's ``exc``, else None."""
    if _UDF_FAILED not in str(exc):
        return None
    with _lock:
        found = _raised.pop() if _raised else None
    return found
