"""Change counts per time bucket (inserts, modifies, removes, TTL removes), and a terminal chart of them.

Buckets are aligned to the epoch (so a day starts at 00:00Z and an hour on the hour) and counted in
integer microseconds, never in floating point. ``auto`` picks the narrowest width that keeps the
window within ``AUTO_MAX_BUCKETS`` bars: two days become 48 hourly bars, not 2,880 minute lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb

from changelog.consistent import read_consistently
from changelog.errors import TableNotFound, UsageError
from changelog.layout import changes_root, table_root
from changelog.record import SCHEMA, first_copies
from changelog.source import register_parquet
from changelog.state import change_files, check_complete, coverage
from changelog.store import Store
from changelog.timefmt import format_time, from_micros

SECOND_US = 1_000_000
# Bucket names and widths in seconds, narrowest first (auto takes the first that fits).
WIDTHS = {"minute": 60, "5min": 300, "15min": 900, "hour": 3600, "6hour": 6 * 3600, "day": 86400}
BUCKETS = ("auto", *WIDTHS)
AUTO_MAX_BUCKETS = 60
# A chart draws every bucket of its span, quiet ones too: 10,000 years of minutes is 5 billion lines.
MAX_BUCKETS = 100_000
KINDS = ("inserts", "modifies", "removes", "ttl_removes")
_LABELS = {"minute": "1-minute", "5min": "5-minute", "15min": "15-minute", "hour": "1-hour", "6hour": "6-hour",
           "day": "1-day"}


@dataclass(frozen=True)
class Bucket:
    """The changes of one bucket (``removes`` excludes TTL removes)."""

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


@dataclass(frozen=True)
class Timeline:
    """The non-empty buckets of one table, oldest first, and the span they were counted over.

    ``first_us``/``last_us`` are the starts of the first and last bucket of the span (the window
    asked for, or the first and last change when it was left open); None when nothing was counted.
    """

    table: str
    bucket: str
    width_us: int
    buckets: tuple[Bucket, ...]
    first_us: int | None
    last_us: int | None

    def __iter__(self) -> Iterator[Bucket]:
        return iter(self.buckets)

    def __len__(self) -> int:
        return len(self.buckets)

    @property
    def label(self) -> str:
        """``1-hour`` and the like, for headers."""
        return _LABELS[self.bucket]

    def totals(self) -> dict[str, int]:
        """Changes of each kind over the whole span."""
        return {kind: sum(getattr(b, kind) for b in self.buckets) for kind in KINDS}

    def filled(self) -> tuple[Bucket, ...]:
        """Every bucket of the span, quiet ones as zeros: the time axis a chart needs."""
        if self.first_us is None or self.last_us is None:
            return ()
        found = {b.start_us: b for b in self.buckets}
        return tuple(found.get(start, Bucket(start, 0, 0, 0, 0))
                     for start in range(self.first_us, self.last_us + 1, self.width_us))


def choose_width(bucket: str, span_us: int, max_buckets: int = AUTO_MAX_BUCKETS) -> str:
    """The bucket name to count with: ``bucket`` itself, or for ``auto`` the narrowest that fits."""
    if bucket != "auto":
        return bucket
    for name, seconds in WIDTHS.items():
        if span_us // (seconds * SECOND_US) + 1 <= max_buckets:
            return name
    return "day"


def check_bucket_count(name: str, span_us: int) -> None:
    """Refuse (UsageError) a span of more than MAX_BUCKETS buckets of ``name``, naming a wider one that fits."""
    count = span_us // (WIDTHS[name] * SECOND_US) + 1
    if count <= MAX_BUCKETS:
        return
    wider = next((other for other, seconds in WIDTHS.items()
                  if seconds > WIDTHS[name] and span_us // (seconds * SECOND_US) + 1 <= MAX_BUCKETS), None)
    remedy = f"use --bucket {wider}" if wider else "give --from and --to closer together"
    raise UsageError(f"the timeline would have {count:,} {_LABELS[name]} buckets, more than the {MAX_BUCKETS:,} "
                     f"it counts: {remedy}")


def timeline(store: Store, table: str, bucket: str = "auto", from_us: int | None = None,
             to_us: int | None = None, max_buckets: int = AUTO_MAX_BUCKETS) -> Timeline:
    """Counts of de-duplicated changes per bucket, oldest first; empty buckets are left out.

    ``auto`` picks the narrowest bucket that keeps the span within ``max_buckets``.
    ``from_us``/``to_us`` bound event times inclusively. A table held only as snapshots counts no
    changes. Raises TableNotFound for a table the store does not hold, UsageError for an unknown
    bucket or an inverted window.
    """
    if bucket not in BUCKETS:
        raise UsageError(f"unknown bucket {bucket!r}: use one of {', '.join(BUCKETS)}")
    if from_us is not None and to_us is not None and from_us > to_us:
        raise UsageError("--from is after --to: give the earlier time first")
    if from_us is not None and to_us is not None:
        check_bucket_count(choose_width(bucket, to_us - from_us, max_buckets), to_us - from_us)
    # Counts across a loss would be short by changes nobody can count: ask for a window beside it.
    # (coverage refuses a table the store does not hold, in the same words as below.)
    check_complete(coverage(store, table), from_us, to_us, what="the timeline",
                   narrow="give --from and --to around it to count the changes on either side")

    def read() -> tuple[str, list[tuple[Any, ...]], int | None, int | None]:
        files = change_files(store, table)
        if not files:
            # A table held only as snapshots (bootstrapped and quiet since, or expired) has no changes to
            # count; only a table the store does not hold at all is not found.
            if not store.list(table_root(table) + "/"):
                raise TableNotFound(f"the store {store.uri} holds no table {table!r}: "
                                    "run 'ddb-rewind status' to list tables")
            span = to_us - from_us if from_us is not None and to_us is not None else 0
            return choose_width(bucket, span, max_buckets), [], from_us, to_us
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
        con.execute(
            f"""CREATE TEMP TABLE timeline__window AS
                SELECT epoch_us(event_time) AS at_us, event_name, is_ttl_delete
                FROM ({first_copies("timeline__changes", "event_time, event_name, is_ttl_delete",
                                    " AND ".join(where))})""",
            params,
        )
        low, high = con.execute("SELECT min(at_us), max(at_us) FROM timeline__window").fetchone() or (None, None)
        span_low = from_us if from_us is not None else low
        span_high = to_us if to_us is not None else high
        span = span_high - span_low if span_low is not None and span_high is not None else 0
        name = choose_width(bucket, span, max_buckets)
        check_bucket_count(name, span)  # an open end: the span reaches the first or last change
        width = WIDTHS[name] * SECOND_US
        rows: list[tuple[Any, ...]] = con.execute(
            f"""
            SELECT at_us // {width} * {width} AS start,
                   count(*) FILTER (WHERE event_name = 'INSERT'),
                   count(*) FILTER (WHERE event_name = 'MODIFY'),
                   count(*) FILTER (WHERE event_name = 'REMOVE' AND NOT is_ttl_delete),
                   count(*) FILTER (WHERE event_name = 'REMOVE' AND is_ttl_delete)
            FROM timeline__window GROUP BY start ORDER BY start
            """
        ).fetchall()
        return name, rows, span_low, span_high

    name, rows, span_low, span_high = read_consistently(store, (changes_root(table) + "/",), read)
    width = WIDTHS[name] * SECOND_US
    buckets = tuple(Bucket(int(start), int(i), int(m), int(r), int(t)) for start, i, m, r, t in rows)
    if span_low is None or span_high is None:
        return Timeline(table, name, width, buckets, None, None)
    return Timeline(table, name, width, buckets, span_low // width * width, span_high // width * width)


_MARKS = (("+", "inserts", "32"), ("~", "modifies", "33"), ("-", "removes", "31"), ("x", "ttl_removes", "35"))
_SPARKS = "▁▂▃▄▅▆▇█"
# Wider than a terminal the sparkline would wrap and mislead; the bars below still show every bucket.
SPARKLINE_MAX = 120


def sparkline(buckets: tuple[Bucket, ...]) -> str:
    """One character per bucket, its height proportional to the bucket's total (a space for none)."""
    peak = max((b.total for b in buckets), default=0) or 1
    return "".join(_SPARKS[(b.total * len(_SPARKS) - 1) // peak] if b.total else " " for b in buckets)


def header(line: Timeline) -> str:
    """One line naming the table, the span, the bucket width and the totals by kind."""
    totals = line.totals()
    if line.first_us is None or line.last_us is None:
        return f"{line.table}: no changes"
    end = from_micros(line.last_us + line.width_us)
    kinds = ", ".join(f"{kind.replace('_', ' ')} {n:,}" for kind, n in totals.items())
    return (f"{line.table}: {format_time(from_micros(line.first_us))} to {format_time(end)}, "
            f"{line.label} buckets, {sum(totals.values()):,} changes ({kinds})")


def render_bars(line: Timeline, width: int = 50, color: bool = False) -> list[str]:
    """Lines of a terminal chart: a header, a sparkline, then one bar per bucket (quiet ones included).

    Bar length is proportional to the bucket's total; ``+`` inserts, ``~`` modifies, ``-`` removes
    and ``x`` TTL removes, so the mix shows without colour (``color`` adds ANSI colours); every
    non-empty kind gets at least one character.
    """
    lines = [header(line)]
    buckets = line.filled()
    if not buckets:
        return lines
    peak = max(b.total for b in buckets) or 1
    count_width = max(len(str(peak)), len("total"))
    if len(buckets) <= SPARKLINE_MAX:
        lines.append(f"activity  {sparkline(buckets)}")
    lines.append(f"{'start':<20}  {'total':>{count_width}}  " + "  ".join(f"{m} {k.replace('_', ' ')}"
                                                                         for m, k, _ in _MARKS))
    for b in buckets:
        bar = ""
        for mark, kind, code in _MARKS:
            n = getattr(b, kind)
            piece = mark * (max(1, round(n * width / peak)) if n else 0)
            bar += f"\033[{code}m{piece}\033[0m" if color and piece else piece
        lines.append(f"{format_time(from_micros(b.start_us)):<20}  {str(b.total).rjust(count_width)}  {bar}".rstrip())
    return lines
