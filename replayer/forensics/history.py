"""Every version of one item, in order, with what changed at each step.

The look-up filters on ``item_key`` alone, a constant the Parquet reader compares with each row
group's min/max statistics; change files are written sorted by item_key, so on a big store almost
every row group is skipped without being read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from changelog.consistent import read_consistently, table_prefixes
from changelog.docs import key_text as plain_key
from changelog.meta import key_names, resolve_key
from changelog.record import SCHEMA
from changelog.restorable import Loss
from changelog.source import register_parquet
from changelog.spec import history_sql, render
from changelog.state import Coverage, change_files, check_complete, coverage, listing_losses
from changelog.store import Store
from changelog.timefmt import format_time, from_micros
from replayer.forensics.attrdiff import PathChange, diff_items


@dataclass(frozen=True)
class Version:
    """One change of an item: when, what kind, the images around it and the paths it changed."""

    event_time_us: int
    event_name: str
    sequence_number: str
    event_id: str
    is_ttl_delete: bool
    old_image: dict[str, Any] | None
    new_image: dict[str, Any] | None
    changes: tuple[PathChange, ...]

    @property
    def event_time(self) -> datetime:
        """The change's time as an aware UTC datetime."""
        return from_micros(self.event_time_us)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (time as ISO 8601 UTC, images as DynamoDB JSON objects)."""
        return {
            "event_time": format_time(self.event_time),
            "event_name": self.event_name,
            "sequence_number": self.sequence_number.lstrip("0") or "0",
            "event_id": self.event_id,
            "ttl_delete": self.is_ttl_delete,
            "old_image": self.old_image,
            "new_image": self.new_image,
            "changes": [change.as_json() for change in self.changes],
        }


def check_history_complete(cov: Coverage, shown: str) -> None:
    """Refuse the history of an item while its table (``cov``) has a loss.

    A lost change can belong to any item, and no bootstrap puts it back in a list of changes: the
    refusal names the loss, and ``--partial`` lists what the store holds with the losses named.
    ``shown`` is the key as a person reads it (``docs.key_text``).
    """
    check_complete(cov, None, None, what=f"the history of {shown}",
                   narrow="give --partial to list the changes the store holds, with each loss named")


def history_losses(store: Store, table: str) -> tuple[Loss, ...]:
    """What a history may miss (the table's losses, and what ``expire`` removed), which a partial history
    names beside the changes the store holds."""
    return listing_losses(coverage(store, table))


def item_history(store: Store, table: str, key_text: str,
                 con: duckdb.DuckDBPyConnection | None = None, *, engine: str = "duckdb",
                 partial: bool = False) -> list[Version]:
    """Every change of the item with key ``key_text``, in version order (``changelog.record.counts_from``).

    Refused (TimeOutOfRange) while the table has a gap or a quarantined record, unless ``partial``.

    Duplicates (the same event_id captured twice) appear once. The changes of a version are taken
    between its old image and new image; where the stream gave no old image (NEW_IMAGE streams),
    between the previous version's new image and this one's. ``engine`` runs the query
    (``changelog.spec.history_sql``) with DuckDB or Spark.
    """
    key, canonical = resolve_key(store, table, key_text)
    if not partial:
        check_history_complete(coverage(store, table), plain_key(key, key_names(store, table)))
    sql = history_sql(table, canonical, changes="history__changes")

    def read() -> pa.Table:
        files = change_files(store, table)
        if engine == "spark":
            from changelog.spark import run_sql

            return run_sql(sql, {"history__changes": (store, files, SCHEMA)})
        connection = con or duckdb.connect()
        connection.execute("SET TimeZone = 'UTC'")
        register_parquet(connection, "history__changes", store, files, SCHEMA)
        return connection.sql(render(sql, "duckdb")).to_arrow_table()

    found = read_consistently(store, table_prefixes(table), read)
    return versions_of(found)


def versions_of(found: pa.Table) -> list[Version]:
    """The Versions of history rows (``HISTORY_COLUMNS``, in version order), each with the paths it changed."""
    times = found.column("event_time").cast(pa.int64()).to_pylist()
    columns = [found.column(name).to_pylist() for name in
               ("event_name", "sequence_number", "event_id", "is_ttl_delete", "old_image", "new_image")]
    versions: list[Version] = []
    previous: dict[str, Any] | None = None
    for micros, name, sequence, event_id, ttl, old_text, new_text in zip(times, *columns, strict=True):
        old = json.loads(old_text) if old_text is not None else None
        new = json.loads(new_text) if new_text is not None else None
        before = old if old is not None else previous
        after = None if name == "REMOVE" else new
        versions.append(Version(
            event_time_us=int(micros),
            event_name=name,
            sequence_number=sequence,
            event_id=event_id,
            is_ttl_delete=bool(ttl),
            old_image=old,
            new_image=new,
            changes=tuple(diff_items(before, after)),
        ))
        previous = after
    return versions
