"""The table at a moment: which snapshot and change files to read, and the one query that merges them.

State at T, for each item key, is the latest version in the one order (``record.counts_from``: an
item's DynamoDB Streams rows in sequence order, each counting from the latest stamp up to it)
among the chosen snapshot's rows and every change with ``event_time <= T`` (each record counted
once, at its earliest copy: ``record.first_copies``); the item exists unless that version is a
REMOVE. Reading a change that the snapshot already folded in cannot change the answer (its version
is not newer), so the plan only has to make sure nothing newer is left out: every change file in an
hour partition at or after the snapshot's, plus every partition holding a file the snapshot's
manifest did not consume (a late file), read whole so that every copy of a late record is seen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa

from changelog.captured import Hold, capture_holds, watermark
from changelog.consistent import read_consistently
from changelog.damage import damaged, read_json_object
from changelog.errors import TableNotFound, TimeOutOfRange
from changelog.forgotten import kept_bounds
from changelog.gaps import Gap, all_gaps, gap_path
from changelog.layout import (
    changes_root,
    hour_partition,
    partition_of,
    retention_path,
    snapshots_root,
    table_root,
)
from changelog.ledger import missing_losses
from changelog.quarantine import list_quarantined, quarantine_loss
from changelog.record import LATEST_FIRST, SCHEMA, STREAM_ROW, first_copies, latest_counts_from, may_be_latest
from changelog.restorable import (
    GAP_REMEDY,
    Base,
    Interval,
    Loss,
    blocking_loss,
    describe_intervals,
    initial_bases,
    intervals,
)
from changelog.snapshot import SNAPSHOT_SCHEMA, Manifest, list_manifests, part_paths
from changelog.source import local_parquet, register_parquet
from changelog.spec import changes_condition, moment
from changelog.store import ObjectMissing, ReadOnce, Store
from changelog.timefmt import format_time, from_micros


def change_files(store: Store, table: str) -> list[str]:
    """All change files of a table (relative paths), sorted."""
    return [path for path in store.list(changes_root(table) + "/") if path.endswith(".parquet")]


@dataclass(frozen=True)
class StatePlan:
    """What to read for the state of ``table`` at ``at_us``."""

    table: str
    at_us: int
    snapshot_path: str | None
    snapshot: Manifest | None
    change_files: tuple[str, ...]
    # Changes stamped before this are superseded by the bootstrap beneath the snapshot (see copy_floor_us).
    changes_from_us: int | None = None


BOOTSTRAP_KINDS = ("export", "scan")


def copy_floor_us(manifest: Manifest) -> int | None:
    """For a bootstrap, the first stream time its copy does not already hold; None for other snapshots.

    A bootstrap is a whole copy: an item absent from it did not exist then, so a change stamped
    before the copy must not bring it back. That matters only when a change after it was lost (a gap,
    which is why the table was bootstrapped again): the lost REMOVE is not there to bury the item.
    Copied rows are versioned 1 µs below the floor: the second before the one the copy began, as a
    change made after the copy read its item can be stamped (``compactor.bootstrap.row_version_us``,
    recorded as ``extra.row_version_us``; a copy written before that keeps the second it began).
    A compaction snapshot built on a bootstrap carries its floor (``extra.copy_floor_us``), so the
    rule holds after ``expire`` deleted the bootstrap itself.
    """
    if manifest.kind == "compaction":
        return _int_or_none(manifest.extra.get("copy_floor_us"))
    if manifest.kind not in BOOTSTRAP_KINDS:
        return None
    version = _int_or_none(manifest.extra.get("row_version_us"))
    if version is not None:
        return version + 1
    started = manifest.extra.get("scan_started_us") if manifest.kind == "scan" else manifest.snapshot_time_us
    return None if started is None else int(started) - int(started) % 1_000_000


def copies(manifests: list[tuple[str, Manifest]]) -> frozenset[str]:
    """The manifest paths of the bootstraps (whole copies) among ``manifests``."""
    return frozenset(path for path, manifest in manifests if manifest.kind in BOOTSTRAP_KINDS)


def copy_published_since(manifests: list[tuple[str, Manifest]], known: frozenset[str],
                         snapshot: Manifest) -> Manifest | None:
    """A bootstrap not among ``known`` (the copies there when ``snapshot``'s state was planned) that is
    dated at or before ``snapshot`` by its copy floor; None when there is none.

    Readers would prefer such a snapshot to the copy, yet it was built without it, and may hold the
    state across a loss the copy was taken to clear. A bootstrap withdraws every compaction snapshot
    newer than its rows' version when it publishes (``compactor.bootstrap.stale_snapshots``); one
    published after that, by a compaction that planned before the bootstrap was there, is found by
    this.
    """
    for path, manifest in manifests:
        floor = copy_floor_us(manifest) if path not in known and manifest.kind in BOOTSTRAP_KINDS else None
        if floor is not None and snapshot.snapshot_time_us >= floor:
            return manifest
    return None


def manifest_bases(manifest: Manifest) -> tuple[Base, ...]:
    """The whole copies of the table a snapshot proves: its own bootstrap, or the ones it was built on.

    A compaction snapshot inherits its ancestors' bootstraps (``extra.bases_us``, with what each
    clears in ``extra.base_floors_us``): ``expire`` may delete a bootstrap older than the snapshot it
    keeps, and the bootstrap must go on clearing the gap it was taken for (``changelog.restorable``).
    A bootstrap clears only what was lost before its copy floor; a snapshot written before the floors
    were kept says nothing of them, and its bases clear what they did then (up to their moment).
    """
    found = []
    own = manifest.restorable_from_us
    if own is not None:
        floor = copy_floor_us(manifest)
        found.append(Base(own, min(floor, own) if floor is not None else own))
    inherited = manifest.extra.get("bases_us")
    floors = manifest.extra.get("base_floors_us")
    if isinstance(inherited, list):
        clears = floors if isinstance(floors, list) and len(floors) == len(inherited) else inherited
        for at, before in zip(map(_int_or_none, inherited), map(_int_or_none, clears), strict=True):
            if at is not None:
                found.append(Base(at, min(at, before) if before is not None else at))
    return tuple(sorted(set(found)))


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def plan_state(store: Store, table: str, at_us: int, *, use_snapshots: bool = True,
               snapshots_until_us: int | None = None) -> StatePlan:
    """Choose the latest snapshot at or before ``at_us`` and the change files that may be newer.

    ``snapshots_until_us`` leaves out the snapshots after it (the restore drill's second computation
    starts from the snapshot the retention floor rests on, the oldest start the store still has).
    """
    files = change_files(store, table)
    manifests = list_manifests(store, table) if use_snapshots else []
    until = at_us if snapshots_until_us is None else min(at_us, snapshots_until_us)
    chosen = [(path, m) for path, m in manifests if m.snapshot_time_us <= until]
    upper = hour_partition(at_us)
    if not chosen:
        return StatePlan(table, at_us, None, None, tuple(p for p in files if partition_of(p) <= upper))
    path, manifest = chosen[-1]
    lower = hour_partition(manifest.snapshot_time_us)
    consumed = set(manifest.consumed_files)
    # A late file's partition is read whole: copies of one record share an hour partition, and only
    # with all of them in view does de-duplication keep the earliest (see record.first_copies).
    late = {partition_of(p) for p in files if p not in consumed}
    wanted = tuple(
        p for p in files if partition_of(p) <= upper and (partition_of(p) >= lower or partition_of(p) in late)
    )
    # The floor of the copy the chosen snapshot rests on (its own, or the one it was built on): another
    # bootstrap, imported after that snapshot was built, is not in what it holds.
    return StatePlan(table, at_us, path, manifest, wanted, copy_floor_us(manifest))


# A DuckDB TIMESTAMPTZ literal for a moment in µs (exact, whatever the session's time zone).
timestamp_literal = moment


def _source(con: duckdb.DuckDBPyConnection, store: Store, name: str, paths: list[str], schema: pa.Schema,
            local: bool) -> str:
    """A relation over ``paths`` that has row locators (``__f``, ``__r``) when the store is local."""
    register_parquet(con, name, store, paths, schema)
    root = store.local_root()
    if not local or root is None or not paths:
        return f'(SELECT *, NULL::BIGINT AS __f, NULL::BIGINT AS __r FROM "{name}")'
    return local_parquet([str(root / path) for path in paths], schema,
                         ", file_index::BIGINT AS __f, file_row_number AS __r", ", file_row_number=true")


def snapshot_parts(plan: StatePlan) -> list[str]:
    """The store paths of the plan's snapshot rows (none without a snapshot)."""
    if plan.snapshot is None or plan.snapshot_path is None:
        return []
    return part_paths(plan.snapshot_path, plan.snapshot)


def open_state(con: duckdb.DuckDBPyConnection, store: Store, plan: StatePlan, *, name: str = "state",
               tombstones: bool = False, only_keys: str | None = None) -> None:
    """Create view ``name``: one row per item key as of the plan's moment.

    Columns: table_name, item_key, keys, event_name, event_time, sequence_number and image (DynamoDB
    JSON; ``changelog.docs`` derives its plain JSON). With ``tombstones`` keys whose last change is a REMOVE stay, with
    event_name REMOVE and no image (what a snapshot keeps). ``only_keys`` names a relation with an
    ``item_key`` column: the state is computed for those keys alone (a diff's window).
    """
    con.execute("SET TimeZone = 'UTC'")
    parts = snapshot_parts(plan)
    # Two passes: pick each key's winning version from the light columns (key, time, sequence), then
    # fetch images for the winners only. Sorting whole images to rank versions costs twice the time
    # and four times the memory. Local files give an exact row locator (file, row), so a duplicated
    # change (a retried batch in two files) is fetched once; Arrow datasets (s3://) have none, so the
    # winners are matched on their version and duplicates dropped afterwards.
    local = store.local_root() is not None
    changes = _source(con, store, f"{name}__changes", list(plan.change_files), SCHEMA, local)
    snapshot = _source(con, store, f"{name}__snapshot", parts, SNAPSHOT_SCHEMA, local)
    changes_filter = changes_condition(plan.table, plan.at_us, plan.changes_from_us)
    live_only = "" if tombstones else " AND event_name <> 'REMOVE'"
    key_filter = f" AND item_key IN (SELECT item_key FROM {only_keys})" if only_keys else ""
    light = "item_key, event_name, event_time, sequence_number, __f, __r"
    dedup = "" if local else "QUALIFY row_number() OVER (PARTITION BY v.item_key) = 1"
    con.execute(
        f"""
        CREATE OR REPLACE VIEW "{name}" AS
        WITH candidates AS (
            -- Only the rows that may hold an item's latest version (record.may_be_latest); each keeps
            -- the item's latest stream time, which its winner counts from (record.latest_counts_from).
            SELECT table_name, event_id, {light},
                   max(CASE WHEN {STREAM_ROW} THEN event_time END) OVER (PARTITION BY item_key) AS stream_time
            FROM {changes} WHERE {changes_filter}{key_filter}
            QUALIFY {may_be_latest()}
        ),
        winners AS (
            SELECT src, item_key, event_time, sequence_number, __f, __r, counts_from FROM (
                SELECT *, {latest_counts_from(stream_time="stream_time")} AS counts_from FROM (
                    SELECT 0 AS src, item_key, event_name, event_time, sequence_number, __f, __r, stream_time
                    FROM ({first_copies("candidates", light + ", stream_time")})
                    UNION ALL
                    SELECT 1 AS src, item_key, event_name, event_time, sequence_number, __f, __r,
                           event_time AS stream_time
                    FROM {snapshot} WHERE TRUE{key_filter}
                )
            )
            QUALIFY row_number() OVER (
                PARTITION BY item_key
                ORDER BY {LATEST_FIRST}, src
            ) = 1{live_only}
        )
        SELECT v.table_name, v.item_key, v.keys, v.event_name, w.counts_from AS event_time, v.sequence_number,
               v.image
        FROM (
            SELECT 0 AS src, table_name, item_key, keys, event_name, event_time, sequence_number,
                   new_image AS image, __f, __r
            FROM {changes} WHERE {changes_filter}
            UNION ALL
            SELECT 1 AS src, table_name, item_key, keys, event_name, event_time, sequence_number, image, __f, __r
            FROM {snapshot}
        ) AS v
        JOIN winners AS w ON v.src = w.src AND v.item_key = w.item_key AND v.event_time = w.event_time
            AND v.sequence_number = w.sequence_number AND v.__f IS NOT DISTINCT FROM w.__f
            AND v.__r IS NOT DISTINCT FROM w.__r
        {dedup}
        """
    )


@dataclass(frozen=True)
class Coverage:
    """What a table's backup covers, like PITR's describe-continuous-backups."""

    table: str
    earliest_us: int | None
    latest_us: int | None
    changes: int | None
    change_files: int
    snapshots: int
    quarantined: int
    bytes_stored: int
    gaps: tuple[Gap, ...] = ()  # stream records lost for good (changelog.gaps)
    bases: tuple[Base, ...] = ()  # every whole copy of the table a snapshot proves (manifest_bases)
    losses: tuple[Loss, ...] = ()  # gaps and quarantined records: what the store does not hold
    holds: tuple[Hold, ...] = ()  # what capture proves, shard by shard (changelog.captured); latest_us is their min
    # The floor ``expire`` left: the changes up to it may be deleted (a kept snapshot restores the
    # moments from it on, but no list of changes reaching back to it is whole).
    expired_up_to_us: int | None = None

    @property
    def intervals(self) -> tuple[Interval, ...]:
        """The restorable moments, as disjoint inclusive intervals (changelog.restorable)."""
        return intervals(self.earliest_us, self.latest_us, self.losses, self.bases)

    @property
    def latest_restorable_us(self) -> int | None:
        """The latest moment that can be restored: the end of the last interval. ``latest_us`` is what
        capture proves, which a loss (a missing file, a gap) may cut short of."""
        spans = self.intervals
        return spans[-1][1] if spans else None


def gap_loss(gap: Gap) -> Loss:
    """A gap as a loss coverage counts."""
    return Loss(gap.start_us, gap.latest_affected_us, f"a gap: {gap.describe()}", GAP_REMEDY, "gap")


def coverage(store: Store, table: str, con: duckdb.DuckDBPyConnection | None = None, *,
             count_changes: bool = False) -> Coverage:
    """Earliest and latest restorable times, the losses between them, and counts for one table.

    Earliest: the first bootstrap taken before any loss, else the first captured change; once
    ``expire`` has run, the floor it left (a kept snapshot's moment).
    Latest (the watermark): with poller checkpoints, the oldest point every open shard is known
    complete to; otherwise the newest captured change.
    Between them, gaps and quarantined records cut the moments a later base does not re-open
    (``Coverage.intervals``).
    ``count_changes=True`` also counts distinct changes, a read of every change file's event ids
    (only ``status`` shows the count); without it ``changes`` is None and the times read only the
    first and last hour partitions, so proving a moment costs the same however long the history.
    """
    # One listing gives both the paths and the bytes stored (on S3 a listing of the whole table is a
    # call per thousand objects, and a store that runs for years holds tens of thousands).
    sized = store.sizes(table_root(table) + "/")
    listing = sorted(sized)
    if not listing:
        raise TableNotFound(f"the store {store.uri} holds no table {table!r}: run 'ddb-rewind status' to list tables")
    manifests = list_manifests(store, table)
    connection = con or duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")

    def read() -> tuple[int | None, int | None, int | None, int]:
        current = change_files(store, table)
        first, last = _time_bounds(connection, store, current)
        count: int | None = None
        if count_changes:
            register_parquet(connection, "coverage__changes", store, current, SCHEMA)
            ((count,),) = connection.execute("SELECT count(DISTINCT event_id) FROM coverage__changes").fetchall()
        return first, last, count, len(current)

    first, last, count, files = read_consistently(store, (changes_root(table) + "/",), read)
    # A forget may have erased the first or last stored change: the times it recorded still bound what was captured.
    kept_first, kept_last = kept_bounds(listing, table)
    first = min((t for t in (first, kept_first) if t is not None), default=None)
    last = max((t for t in (last, kept_last) if t is not None), default=None)
    records = ReadOnce(store)  # each checkpoint is read for its gaps here and for its shard's progress below
    gaps = all_gaps(records, table, listing)
    quarantined = list_quarantined(store, table) if any("/quarantine/" in p for p in listing) else []
    # What the ledger records and the store lost (a deleted change file or gap record) counts too.
    missing = missing_losses(store, table, listing, [gap_path(table, gap) for gap in gaps])
    losses = tuple(sorted([*map(gap_loss, gaps), *map(quarantine_loss, quarantined), *missing],
                          key=lambda loss: (loss.start_us is not None, loss.start_us or 0, loss.what)))
    bases = sorted({base for _, m in manifests for base in manifest_bases(m)})
    initial = [base.at_us for base in initial_bases(losses, bases)]
    earliest = min(initial) if initial else first
    if earliest is None and bases:
        earliest = bases[0].at_us
    if earliest is None and manifests:
        earliest = manifests[0][1].snapshot_time_us
    floor = retention_floor(store, table)
    if floor is not None:
        # The floor is a kept snapshot's moment: restorable even when no change of that time is left.
        earliest = max(floor, min(initial)) if initial else floor
    holds = capture_holds(records, table, listing, last)
    latest = watermark(holds)
    # A snapshot proves its moment only if it says it was inside coverage when it was built: a
    # bootstrap (the copy was consistent then), or a compaction that recorded the watermark it was
    # checked against. Capture only moves forward, so that moment stays covered even after expire
    # deleted the changes that showed it. Any other manifest (hand-made, or dated by a typo) claims
    # nothing.
    proven = [m.snapshot_time_us for _, m in manifests
              if m.restorable_from_us is not None or m.snapshot_time_us <= _checked_watermark(m)]
    if proven:
        latest = max(proven) if latest is None else max(latest, max(proven))
    return Coverage(
        table=table,
        earliest_us=earliest,
        latest_us=latest,
        changes=None if count is None else int(count or 0),
        change_files=files,
        snapshots=len(manifests),
        quarantined=sum(1 for p in listing if "/quarantine/" in p),
        bytes_stored=sum(sized.values()),
        gaps=gaps,
        bases=tuple(bases),
        losses=losses,
        holds=holds,
        expired_up_to_us=floor,
    )


def _checked_watermark(manifest: Manifest) -> int:
    """The watermark a compaction snapshot was checked against; -1 when it recorded none."""
    value = manifest.extra.get("watermark_us")
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def stored_time_bounds(store: Store, table: str) -> tuple[int | None, int | None]:
    """The first and last change time (µs) the table's change files hold now."""
    return _time_bounds(duckdb.connect(), store, change_files(store, table))


def _time_bounds(con: duckdb.DuckDBPyConnection, store: Store, files: list[str]) -> tuple[int | None, int | None]:
    """First and last change time (µs): partitions bound their files' times, so only the edge ones are read."""
    if not files:
        return None, None
    partitions = [partition_of(p) for p in files]
    low, high = min(partitions), max(partitions)
    edges = [p for p, part in zip(files, partitions, strict=True) if part in (low, high)]
    register_parquet(con, "coverage__edges", store, edges, SCHEMA)
    ((first, last),) = con.execute(
        "SELECT epoch_us(min(event_time)), epoch_us(max(event_time)) FROM coverage__edges"
    ).fetchall()
    return first, last


def retention_floor(store: Store, table: str) -> int | None:
    """The floor an earlier ``expire`` left (µs), or None."""
    try:
        body = read_json_object(store, retention_path(table))
    except ObjectMissing:
        return None
    value = body.get("restorable_from_us")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        raise damaged(store, retention_path(table), "holds no valid restorable_from_us") from None


def check_restorable(cov: Coverage, at: datetime, at_us: int) -> None:
    """Refuse a moment outside the table's coverage with one line naming the bounds or the loss."""
    if cov.earliest_us is None:
        raise TimeOutOfRange(f"table {cov.table!r} has nothing captured yet: nothing to restore")
    if cov.latest_us is None:
        raise TimeOutOfRange(
            f"no moment of {cov.table!r} is proven yet: a shard of its stream is listed but not read (or a "
            "failed batch holds no time); let capture read it ('ddb-rewind consume', or the Lambda consumer)"
        )
    if at_us < cov.earliest_us:
        raise TimeOutOfRange(
            f"{format_time(at)} is before the earliest restorable time of {cov.table!r}, "
            f"{format_time(from_micros(cov.earliest_us))}"
        )
    if at_us > cov.latest_us:
        raise TimeOutOfRange(
            f"{format_time(at)} is after the latest restorable time of {cov.table!r}, "
            f"{format_time(from_micros(cov.latest_us))} (changes after it may not be captured yet)"
        )
    loss = blocking_loss(cov.losses, cov.bases, at_us)
    if loss is not None:
        raise TimeOutOfRange(
            f"{format_time(at)} is at or after {loss.what} in the backup of {cov.table!r}; {loss.remedy} "
            f"(restorable: {describe_intervals(cov.intervals)})"
        )


def latest_restorable(tables: Sequence[str], coverage_of: Callable[[str], Coverage]) -> datetime:
    """What TIME ``latest`` stands for: the latest moment every one of ``tables`` can be restored to.

    Raises TimeOutOfRange when a table has no restorable moment proven yet.
    """
    latest = {table: coverage_of(table).latest_restorable_us for table in tables}
    missing = [table for table, value in latest.items() if value is None]
    if missing:
        raise TimeOutOfRange(f"'latest' names no moment: no restorable moment of {', '.join(missing)} is proven yet")
    return from_micros(min(value for value in latest.values() if value is not None))


def check_complete(cov: Coverage, low_us: int | None, high_us: int | None, *, what: str, narrow: str) -> None:
    """Refuse a listing of changes over [low_us, high_us] that a loss may leave incomplete.

    A base re-opens states after a loss, never the list of changes across it: history and timeline
    answer only for windows no loss overlaps. ``what`` names the answer; ``narrow`` how to ask for less.
    """
    for loss in listing_losses(cov):
        if loss.overlaps(low_us, high_us):
            raise TimeOutOfRange(
                f"{what} of {cov.table!r} may miss changes: {loss.what}; {narrow}"
            )


def listing_losses(cov: Coverage) -> tuple[Loss, ...]:
    """What a list of the table's changes may miss: its losses, and the changes ``expire`` removed.

    A removal by the retention policy loses no restore point (a kept snapshot restores the moments
    after it), but a history or timeline reaching back to it would miss the changes it removed.
    """
    if cov.expired_up_to_us is None:
        return cov.losses
    expired = Loss(None, cov.expired_up_to_us,
                   f"the changes up to {format_time(from_micros(cov.expired_up_to_us))} were removed by the "
                   "retention policy (expire)", "", "expired")
    return (*cov.losses, expired)


def snapshot_dirs(store: Store, table: str) -> list[str]:
    """Every snapshot directory that has files, published or not (for clean-up)."""
    return sorted({p.rsplit("/", 1)[0] for p in store.list(snapshots_root(table) + "/")})
