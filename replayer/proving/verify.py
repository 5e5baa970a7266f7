"""Does the backup match? A live table against the stored state, and snapshot replay against full replay.

``verify_table`` scans a live table in parallel segments and compares every item with the stored
state at a moment (the watermark by default): items missing from the table, extra in it, and
different (compared as DynamoDB compares: numbers by value, sets as sets). ``restore_drill`` proves
that snapshots are only a cache: the state at a random moment at or after the newest snapshot,
computed from that snapshot plus later changes, must equal the state computed from the changes
alone, item for item.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import duckdb

from changelog.codec import item_key
from changelog.connection import bounded_connection
from changelog.consistent import read_consistently, table_prefixes
from changelog.errors import TableNotFound
from changelog.scan import parallel_scan
from changelog.snapshot import list_manifests
from changelog.state import check_restorable, coverage, open_state, plan_state, retention_floor
from changelog.store import Store
from changelog.timefmt import from_micros
from replayer.forensics.attrdiff import canonical_text, items_equal
from replayer.restoring.target import key_names


@dataclass(frozen=True)
class VerifyReport:
    """The comparison of a live table with the stored state at ``at_us`` (keys as canonical item_key)."""

    table: str
    against: str
    at_us: int
    stored: int
    live: int
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    different: tuple[str, ...]

    @property
    def matches(self) -> bool:
        """True when the live table holds exactly the stored items."""
        return not (self.missing or self.extra or self.different)


def scan_table(client: Any, table: str, segments: int = 4) -> dict[str, dict[str, Any]]:
    """Every item of a live table as DynamoDB JSON (binaries as base64), by canonical item_key.

    Scans ``segments`` segments in parallel threads, each paginated to its end.
    """
    names = key_names(client, table)
    found: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()

    def keep(items: list[dict[str, Any]]) -> None:
        keyed = {item_key({n: item[n] for n in names}): item for item in items}
        with lock:
            found.update(keyed)

    parallel_scan(client, table, segments, keep)
    return found


def stored_state(store: Store, table: str, at_us: int, *, use_snapshots: bool = True,
                 con: duckdb.DuckDBPyConnection | None = None) -> dict[str, dict[str, Any]]:
    """The stored items at ``at_us`` (the shared state query), by item_key."""

    def read() -> list[tuple[str, str]]:
        connection = con or duckdb.connect()
        open_state(connection, store, plan_state(store, table, at_us, use_snapshots=use_snapshots),
                   name="verify_state")
        found: list[tuple[str, str]] = connection.execute("SELECT item_key, image FROM verify_state").fetchall()
        return found

    rows = read_consistently(store, table_prefixes(table), read)
    return {key: json.loads(image) for key, image in rows}


def resolve_moment(store: Store, table: str, at_us: int | None,
                   con: duckdb.DuckDBPyConnection | None = None) -> int:
    """``at_us``, or the capture watermark when None, checked against coverage like any restore's moment.

    Unchecked, the watermark was compared past a quarantined record or a missing file, or before the
    first change, and a store that cannot restore that moment was reported as matching the table.
    """
    cov = coverage(store, table, con)
    if at_us is None:
        if cov.latest_us is None:
            raise TableNotFound(f"table {table!r} has nothing captured yet: nothing to verify")
        at_us = cov.latest_us
    check_restorable(cov, from_micros(at_us), at_us)
    return at_us


def verify_table(store: Store, table: str, client: Any, against: str, at_us: int | None = None,
                 segments: int = 4) -> VerifyReport:
    """Compare live table ``against`` with the stored state of ``table`` at ``at_us`` (default: watermark)."""
    con = duckdb.connect()
    moment = resolve_moment(store, table, at_us, con)
    stored = stored_state(store, table, moment, con=con)
    live = scan_table(client, against, segments)
    return VerifyReport(
        table=table,
        against=against,
        at_us=moment,
        stored=len(stored),
        live=len(live),
        missing=tuple(sorted(stored.keys() - live.keys())),
        extra=tuple(sorted(live.keys() - stored.keys())),
        different=tuple(sorted(k for k in stored.keys() & live.keys() if not items_equal(stored[k], live[k]))),
    )


@dataclass(frozen=True)
class DrillResult:
    """The state at one moment computed twice: from the latest snapshot + changes, and from the oldest start
    the store has (changes only, or the snapshot the retention floor rests on, or the newest bootstrap's copy,
    + changes)."""

    table: str
    at_us: int
    snapshot_path: str | None
    items_with_snapshot: int
    items_from_changes: int
    checksum_with_snapshot: str
    checksum_from_changes: str
    seconds_with_snapshot: float
    seconds_from_changes: float

    @property
    def matches(self) -> bool:
        """True when both computations give the same items."""
        return (self.items_with_snapshot == self.items_from_changes
                and self.checksum_with_snapshot == self.checksum_from_changes)


def _item_hash(key: str, item: dict[str, Any]) -> int:
    digest = hashlib.sha256(key.encode() + b"\0" + canonical_text(item).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def state_checksum(state: dict[str, dict[str, Any]]) -> str:
    """Order-independent checksum of (item_key, item) pairs: sum of sha256 prefixes mod 2^64, as hex.

    Items are hashed in their canonical text, so equal items hash equally whatever their layout.
    """
    return f"{sum(_item_hash(key, item) for key, item in state.items()) % (1 << 64):016x}"


# The drill holds no state in Python: rows stream through the checksum in batches, and DuckDB keeps
# its own working memory under this bound, spilling beyond it (5M changes: below 1 GB in all).
DRILL_MEMORY_LIMIT = "512MB"
_DRILL_BATCH = 20_000


def state_fingerprint(store: Store, table: str, at_us: int, *, use_snapshots: bool = True) -> tuple[int, str]:
    """(items, ``state_checksum``) of the stored state at ``at_us``, streamed: never the whole state in memory.

    Without ``use_snapshots`` the state is computed from the oldest start the store still has for
    that moment: the changes alone; or, once ``expire`` removed the oldest changes, the snapshot its
    floor rests on (an item last changed before the floor lives on only there); or, after a bootstrap,
    the bootstrap's copy (changes a gap lost before it live on only there); and every change after it.
    """

    def start_us() -> int | None:
        starts = [m.snapshot_time_us for _, m in list_manifests(store, table)
                  if m.restorable_from_us is not None and m.snapshot_time_us <= at_us]
        floor = retention_floor(store, table)
        if floor is not None:
            starts.append(floor)
        return max(starts) if starts else None

    def read() -> tuple[int, str]:
        con = bounded_connection(DRILL_MEMORY_LIMIT)
        start = None if use_snapshots else start_us()
        plan = plan_state(store, table, at_us, use_snapshots=use_snapshots or start is not None,
                          snapshots_until_us=start)
        open_state(con, store, plan, name="drill_state")
        reader = con.sql("SELECT item_key, image FROM drill_state").to_arrow_reader(_DRILL_BATCH)
        count = total = 0
        for batch in reader:
            for key, image in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
                total += _item_hash(key, json.loads(image))
                count += 1
        return count, f"{total % (1 << 64):016x}"

    return read_consistently(store, table_prefixes(table), read)


def drill_moment(store: Store, table: str, seed: int | None = None) -> int:
    """A random whole second the table's coverage proves (``seed`` makes it repeatable).

    When the table has a snapshot the moment is at or after the newest one, so the replay with
    snapshots really starts from a snapshot and the drill compares it with the changes alone (a
    moment before every snapshot would compare the changes with themselves and prove nothing).
    Only restorable moments are drawn: a moment after a gap would compare two wrong answers.
    """
    cov = coverage(store, table)
    if cov.earliest_us is None or cov.latest_us is None:
        raise TableNotFound(f"table {table!r} has nothing captured yet: nothing to drill")
    manifests = list_manifests(store, table)
    floor = max(cov.earliest_us, manifests[-1][1].snapshot_time_us) if manifests else cov.earliest_us
    seconds = [(max(-(-low // 1_000_000), -(-floor // 1_000_000)), high // 1_000_000)
               for low, high in cov.intervals]
    seconds = [(low, high) for low, high in seconds if low <= high]
    if not seconds:
        # No whole second after the newest snapshot is proven: drill at the snapshot's own moment,
        # or refuse with coverage's own reason.
        check_restorable(cov, from_micros(floor), floor)
        return floor
    rng = random.Random(seed)
    total = sum(high - low + 1 for low, high in seconds)
    pick = rng.randrange(total)
    for low, high in seconds:
        if pick <= high - low:
            return (low + pick) * 1_000_000
        pick -= high - low + 1
    raise AssertionError("unreachable: the pick lies within the intervals")


def restore_drill(store: Store, table: str, at_us: int | None = None, seed: int | None = None) -> DrillResult:
    """Compute the state at ``at_us`` (default: a random moment) both ways and compare count and checksum."""
    moment = drill_moment(store, table, seed) if at_us is None else resolve_moment(store, table, at_us)
    started = time.perf_counter()
    with_snapshot = state_fingerprint(store, table, moment)
    middle = time.perf_counter()
    from_changes = state_fingerprint(store, table, moment, use_snapshots=False)
    ended = time.perf_counter()
    return DrillResult(
        table=table,
        at_us=moment,
        snapshot_path=plan_state(store, table, moment).snapshot_path,
        items_with_snapshot=with_snapshot[0],
        items_from_changes=from_changes[0],
        checksum_with_snapshot=with_snapshot[1],
        checksum_from_changes=from_changes[1],
        seconds_with_snapshot=middle - started,
        seconds_from_changes=ended - middle,
    )
