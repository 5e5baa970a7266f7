"""Change counts per minute or hour (inserts, modifies, removes, TTL removes), and a text bar chart of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from changelog.consistent import read_consistently
from changelog.errors import TableNotFound, UsageError
from changelog.layout import changes_root
from changelog.record import SCHEMA, first_copies
from changelog.source import register_parquet
from changelog.state import change_files
from changelog.store import Store
from changelog.timefmt import format_time, from_micros

BUCKETS = ("minute", "hour")


@dataclass(frozen=True)
class Bucket:
    """The changes of one minute or hour (``removes`` excludes TTL removes)."""

    start_us: int
    inserts: int
    modifies: int
    removes: int
    ttl_removes: int

    @property
    def total(self) -> int:
        """All changes in the bucket."""
        return self.inserts + self.modifies + self.removes + self.ttl_removes

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict with the bucket's start as ISO 8601 UTC."""
        return {
            "start": format_time(from_micros(self.start_us)),
            "inserts": self.inserts,
            "modifies": self.modifies,
            "removes": self.removes,
            "ttl_removes": self.ttl_removes,
            "total": self.total,
        }


def timeline(store: Store, table: str, bucket: str = "hour", from_us: int | None = None,
             to_us: int | None = None) -> list[Bucket]:
    """Counts of de-duplicated changes per bucket, oldest first; empty buckets are left out.

    ``from_us``/``to_us`` bound event times inclusively. Raises TableNotFound for a table the store
    does not hold, UsageError for an unknown bucket or an inverted window.
    """
    if bucket not in BUCKETS:
        raise UsageError(f"unknown bucket {bucket!r}: use one of {', '.join(BUCKETS)}")
    if from_us is not None and to_us is not None and from_us > to_us:
        raise UsageError("--from is after --to: give the earlier time first")

    def read() -> list[tuple[Any, ...]]:
        files = change_files(store, table)
        if not files:
            raise TableNotFound(f"the store {store.uri} holds no changes of table {table!r}")
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        register_parquet(con, "timeline__changes", store, files, SCHEMA)
        where = ["table_name = ?"]
        params: list[Any] = [table]
        if from_us is not None:
            where.append("event_time >= make_timestamptz(?::BIGINT)")
            params.append(from_us)
        if to_us is not None:
            where.append("event_time <= make_timestamptz(?::BIGINT)")
            params.append(to_us)
        rows: list[tuple[Any, ...]] = con.execute(
            f"""
            SELECT epoch_us(date_trunc('{bucket}', event_time)) AS start,
                   count(*) FILTER (WHERE event_name = 'INSERT'),
                   count(*) FILTER (WHERE event_name = 'MODIFY'),
                   count(*) FILTER (WHERE event_name = 'REMOVE' AND NOT is_ttl_delete),
                   count(*) FILTER (WHERE event_name = 'REMOVE' AND is_ttl_delete)
            FROM ({first_copies("timeline__changes", "event_time, event_name, is_ttl_delete",
                                " AND ".join(where))})
            GROUP BY start ORDER BY start
            """,
            params,
        ).fetchall()
        return rows

    rows = read_consistently(store, (changes_root(table) + "/",), read)
    return [Bucket(int(start), int(i), int(m), int(r), int(t)) for start, i, m, r, t in rows]


def render_bars(buckets: list[Bucket], width: int = 50) -> list[str]:
    """Lines of a plain-text bar chart: one line per bucket, bar length proportional to its total.

    Bars use ``+`` for inserts, ``~`` for modifies, ``-`` for removes and ``x`` for TTL removes, so
    the mix shows without colour; every non-empty kind gets at least one character.
    """
    if not buckets:
        return ["(no changes)"]
    peak = max(b.total for b in buckets) or 1
    count_width = len(str(peak))
    lines = []
    for b in buckets:
        parts = [("+", b.inserts), ("~", b.modifies), ("-", b.removes), ("x", b.ttl_removes)]
        bar = "".join(mark * (max(1, round(n * width / peak)) if n else 0) for mark, n in parts)
        lines.append(f"{format_time(from_micros(b.start_us))}  {str(b.total).rjust(count_width)}  {bar}")
    lines.append("legend: + insert  ~ modify  - remove  x ttl remove")
    return lines
