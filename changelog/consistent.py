"""Reads that stay exact while a merge or an expire replaces files underneath them.

Every reader lists the files it needs, then reads them. A merge (write-first, delete-last) or an
expire running meanwhile may delete a listed file between the two steps: the read then fails
although the store is sound, and listing again would give a consistent set (the merged file holds
every record of the ones it replaced). So a failed read is retried from the listing on, but only
when a file it could have listed was deleted while it ran; a failure while nothing was deleted (new
files arriving from capture do not count) is a real one and is raised as it is. The read must
therefore be a function that lists and reads afresh each time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import duckdb
import pyarrow as pa

from changelog.errors import FileVanished, StoreError
from changelog.layout import changes_root, snapshots_root
from changelog.store import Store

T = TypeVar("T")
ATTEMPTS = 5
# What a read of a file that vanished looks like: DuckDB's "No files found" / an Arrow stream that
# failed to open, pyarrow's own errors, the OS's, or the store's (ObjectMissing, a failed digest).
READ_ERRORS: tuple[type[BaseException], ...] = (duckdb.Error, pa.ArrowException, OSError, StoreError)


def table_prefixes(table: str) -> tuple[str, ...]:
    """What a read of one table plans from: its change files and its snapshots."""
    return (changes_root(table) + "/", snapshots_root(table) + "/")


def listing(store: Store, prefixes: Sequence[str]) -> tuple[str, ...]:
    """Every object under ``prefixes``: what a read's plan was made from."""
    return tuple(path for prefix in prefixes for path in store.list(prefix))


def read_consistently(store: Store, prefixes: Sequence[str], read: Callable[[], T], *,
                      listed: tuple[str, ...] | None = None) -> T:
    """Run ``read`` (which lists and reads the store); retry it while files under ``prefixes`` vanish.

    ``listed`` is the listing the first attempt's plan was made from, when that happened earlier
    (an SQL session lists when it opens, and reads when a query runs). Raises FileVanished (one
    line) when files kept vanishing for every attempt; any failure while none did propagates unchanged.
    """
    for attempt in range(ATTEMPTS):
        before = listed if attempt == 0 and listed is not None else listing(store, prefixes)
        try:
            return read()
        except READ_ERRORS:
            if set(before) <= set(listing(store, prefixes)):
                raise
    raise FileVanished(
        f"files of {store.uri} kept being replaced while they were read ({ATTEMPTS} attempts): a merge or "
        "expire is running; try again when it has finished"
    )
