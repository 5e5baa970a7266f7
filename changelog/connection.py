"""DuckDB connections bounded in memory that spill to the system's temporary directory.

DuckDB's own default is 80% of the machine's memory, so a large replay held it all; with a bound it
spills its sorts, joins and materialised tables instead (5M changes: peak 1.7 GB -> 1.2 GB at a 1 GB
bound for +7% time; bench/replay.py --memory-limit). Its default spill directory is ``.tmp`` in the
caller's working directory: every reader spills beside other temporary files instead, in a
directory of its own process (mode 700, removed when the process ends). DuckDB lets a connection
locked against file access still read its spill directory: shared between processes, a ``sql``
session could read what another process's replay of another store had spilled.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile

import duckdb

from changelog.errors import UsageError

DEFAULT_MEMORY_LIMIT = "2GB"
_spill: dict[int, str] = {}  # by process id: a forked child makes its own (and removes only its own)

_UNITS = {"kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
# Below this DuckDB cannot hold one vector of a query; above it DuckDB's own parser refuses the amount.
MIN_MEMORY, MAX_MEMORY = 64 * 1024**2, 1024**5


def memory_limit() -> str:
    """DuckDB's memory bound for a reader: DDB_REWIND_MEMORY_LIMIT (e.g. 8GB), else 2GB."""
    value = os.environ.get("DDB_REWIND_MEMORY_LIMIT", "").strip() or DEFAULT_MEMORY_LIMIT
    found = re.fullmatch(r"(\d{1,20}(?:\.\d{1,9})?)\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value, re.IGNORECASE)
    if not found:
        raise UsageError(f"DDB_REWIND_MEMORY_LIMIT={value[:40]!r} is not an amount of memory: write e.g. 4GB or 512MB")
    amount = float(found.group(1)) * _UNITS[found.group(2).lower()]
    if not MIN_MEMORY <= amount <= MAX_MEMORY:
        raise UsageError(f"DDB_REWIND_MEMORY_LIMIT={value!r} is out of range: give from 64MiB to 1024TiB "
                         "(e.g. 4GB or 512MB)")
    return value


def spill_directory() -> str:
    """This process's own spill directory under the system's temporary directory (made on first use)."""
    pid = os.getpid()
    if pid not in _spill:
        _spill[pid] = tempfile.mkdtemp(prefix="ddb-rewind-duckdb-")  # mode 700
        atexit.register(_remove, pid)
    return _spill[pid]


def _remove(pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(_spill[pid], ignore_errors=True)


def bounded_connection(memory: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection bounded at ``memory`` (else ``memory_limit()``) that spills to ``spill_directory()``."""
    return duckdb.connect(config={"temp_directory": spill_directory(), "memory_limit": memory or memory_limit()})
