"""Forget: rewrite every change file and snapshot part holding a version of one item, without it.

A writer of the store like the merge, in the same order: write first, publish last, delete last.

1. Plan. Every change file and snapshot part whose row-group statistics on ``item_key`` (files are
   sorted by it) admit the key has those row groups' keys read; a file that cannot hold the key is
   not read at all. The plan says exactly which files and which snapshots (restore points) change.
2. Write the replacements: each change file through ``publish_change_file`` (new name, new digest,
   a ``put`` ledger record), each snapshot part as a new part beside the old one. A file left with
   no row gets no replacement.
3. Record the erasure (``changelog.forgotten``): from here on capture drops a record of the item
   stamped at or before the erased-up-to moment, however late it arrives.
4. Re-publish each touched snapshot's manifest, chained as every manifest is: a removal record for
   the old one (its digest, so the chain stays verifiable), then the new one at the same place,
   listing the new parts and, in its consumed files, the replacements of the files it consumed.
5. Delete the old objects: change files after a ``del`` ledger record (so ``check`` tells the
   erasure from a loss), old parts after their manifest stopped listing them; on a versioned bucket
   every earlier version goes too (``Store.purge``).

A crash anywhere leaves either the old files (the erasure record, if written, names them and
``check`` reports the erasure incomplete: run ``forget`` again) or both (duplicates readers drop),
never a moment that cannot be restored. Records of the item captured while the rewrite ran are
found by planning again after it, until a plan finds nothing (``forget``).

Neither the key nor any erased value is ever logged or stored: the erasure record names the item by
its keyed hash only.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from changelog.attributes import METADATA_KEY, summarize, with_summary
from changelog.changefile import COMPACTED_LEVEL, parquet_bytes, publish_change_file
from changelog.errors import ConflictError, UsageError
from changelog.footer import DEDUPLICATED
from changelog.forgotten import (
    ErasedKeys,
    Erasure,
    Replaced,
    ensure_secret,
    erased_keys,
    erased_versions_mask,
    keep_bounds,
    key_hash,
    write_erasure,
)
from changelog.integrity import verify_for_read
from changelog.layout import parse_change_file_name, partition_of
from changelog.ledger import record_dropped, record_removed
from changelog.meta import resolve_key
from changelog.plain import columns_of
from changelog.predicate import Predicate, lock_down
from changelog.quarantine import list_quarantined, quarantined_item_key
from changelog.record import SCHEMA
from changelog.snapshot import SNAPSHOT_SCHEMA, Manifest, list_manifests, part_paths, part_sum_of
from changelog.source import register_parquet
from changelog.state import change_files, stored_time_bounds
from changelog.store import Store
from changelog.timefmt import to_micros
from compactor.snapshots import republish_manifest

# Rounds of plan-and-rewrite: a record captured while a round ran is found by the next one.
_ROUNDS = 3


class EraseRefused(ConflictError):
    """The store cannot erase what a forget would replace (S3 Object Lock in compliance mode)."""


@dataclass(frozen=True)
class Hit:
    """A file holding versions of the item: how many rows, and (a snapshot part) its manifest."""

    path: str
    rows: int
    manifest: str | None = None


@dataclass(frozen=True)
class ForgetPlan:
    """What one forget would rewrite. ``item_key`` stays in memory: it is never printed or stored."""

    table: str
    item_key: str
    change_files: tuple[Hit, ...]
    parts: tuple[Hit, ...]
    snapshots: tuple[str, ...]  # manifests re-published: their parts hold the item, or they consumed a rewritten file
    files_read: int  # files whose keys were read (their statistics admitted the key)
    files_skipped: int  # files their statistics ruled out without reading a row
    latest_version_us: int | None  # the newest erased version's time
    refusal: str | None  # why the store cannot erase (Object Lock), if it cannot
    up_to_us: int | None = None  # only versions stamped at or before this (a later round's plan)
    quarantine: tuple[Hit, ...] = ()  # quarantined records of the item (their key attributes read exactly)
    quarantine_unread: int = 0  # quarantined records whose key attributes cannot be read: whose they are is unknown

    @property
    def versions(self) -> int:
        """Versions of the item in change files (each stored copy counted)."""
        return sum(hit.rows for hit in self.change_files)

    @property
    def snapshot_rows(self) -> int:
        """Rows of the item in snapshot parts (at most one per snapshot)."""
        return sum(hit.rows for hit in self.parts)

    @property
    def empty(self) -> bool:
        """True when no file holds the item."""
        return not self.change_files and not self.parts and not self.quarantine


def _row_groups_admitting(metadata: pq.FileMetaData, key: str) -> list[int]:
    """Row groups whose ``item_key`` statistics do not rule ``key`` out (all of them without statistics).

    Statistics may be truncated (a shorter minimum, a greater maximum): both only widen the range.
    """
    admitted = []
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        if group.num_rows == 0:
            continue
        stats = None
        for column in range(group.num_columns):
            if group.column(column).path_in_schema == "item_key":
                stats = group.column(column).statistics
        if stats is None or not stats.has_min_max or (str(stats.min) <= key <= str(stats.max)):
            admitted.append(index)
    return admitted


def _footer(store: Store, path: str) -> pq.FileMetaData:
    root = store.local_root()
    if root is not None:
        return pq.ParquetFile(str(root / path)).metadata
    filesystem, base = store.arrow()
    with filesystem.open_input_file(f"{base}/{path}") as handle:
        return pq.ParquetFile(handle).metadata


def _count(store: Store, path: str, key: str, up_to_us: int | None) -> tuple[bool, int, int | None]:
    """(whether the file had to be read, rows of ``key`` stamped at or before ``up_to_us`` in it, the
    newest one's time in µs); reads only the keys of the row groups the statistics admit."""
    groups = _row_groups_admitting(_footer(store, path), key)
    if not groups:
        return False, 0, None
    verify_for_read(store, [path])  # what is rewritten must first be what was written
    parquet = pq.ParquetFile(pa.BufferReader(store.read(path)))
    rows = parquet.read_row_groups(groups, columns=["item_key", "event_time"])
    mine = rows.filter(_erased_rows(rows, key, up_to_us))
    if mine.num_rows == 0:
        return True, 0, None
    return True, mine.num_rows, to_micros(pc.max(mine.column("event_time")).as_py())


def _erased_rows(rows: pa.Table, key: str, up_to_us: int | None) -> pa.ChunkedArray:
    """A mask of the rows of ``key`` stamped at or before ``up_to_us`` (every row of it when None)."""
    mine = pc.equal(rows.column("item_key"), key)
    if up_to_us is None:
        return mine
    limit = pa.scalar(up_to_us, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return pc.and_(mine, pc.less_equal(rows.column("event_time"), limit))


def plan_forget(store: Store, table: str, key_text: str) -> ForgetPlan:
    """Find every change file and snapshot part holding a version of the item ``key_text`` names."""
    _key, canonical = resolve_key(store, table, key_text)
    return plan_item(store, table, canonical)


def plan_item(store: Store, table: str, item_key: str) -> ForgetPlan:
    """Find every change file and snapshot part holding a version of the item of canonical key ``item_key``."""
    return _plan(store, table, item_key, None)


def _plan(store: Store, table: str, key: str, up_to_us: int | None) -> ForgetPlan:
    hits: list[Hit] = []
    parts: list[Hit] = []
    read = skipped = 0
    latest: int | None = None
    manifests = list_manifests(store, table)
    candidates: list[tuple[str, str | None]] = [(path, None) for path in change_files(store, table)]
    candidates += [(part, path) for path, m in manifests for part in part_paths(path, m)]
    for path, manifest_path in candidates:
        was_read, rows, newest = _count(store, path, key, up_to_us)
        read, skipped = (read + 1, skipped) if was_read else (read, skipped + 1)
        if not rows:
            continue
        (hits if manifest_path is None else parts).append(Hit(path, rows, manifest_path))
        if newest is not None and (latest is None or newest > latest):
            latest = newest
    rewritten = {hit.path for hit in hits}
    touched = {hit.manifest for hit in parts if hit.manifest is not None}
    touched |= {path for path, m in manifests if rewritten.intersection(m.consumed_files)}
    snapshots = tuple(path for path, _ in manifests if path in touched)
    quarantined, unread = _quarantined(store, table, key, up_to_us)
    refusal = None
    if hits or parts or quarantined:
        refusal = store.erase_refusal([hit.path for hit in (*hits, *parts, *quarantined)])
    return ForgetPlan(table, key, tuple(hits), tuple(parts), snapshots, read, skipped, latest, refusal, up_to_us,
                      quarantined, unread)


def _quarantined(store: Store, table: str, key: str, up_to_us: int | None) -> tuple[tuple[Hit, ...], int]:
    """(the quarantined records of the item, how many quarantined records could not be told whose they are).

    A quarantined record is kept whole, with the item's values: it is a stored version like any other.
    Within a later round (``up_to_us``), only records that may be versions at or before the erased-up-to
    moment are the erasure's (``Quarantined.is_version_by``): a later write is kept as usual.
    """
    hits: list[Hit] = []
    unread = 0
    for kept in list_quarantined(store, table):
        found = quarantined_item_key(kept)
        if found is None:
            unread += 1
            continue
        if found == key and kept.is_version_by(up_to_us):
            hits.append(Hit(kept.path, 1))
    return tuple(hits), unread


def _without(data: bytes, key: str, up_to_us: int | None, image: str) -> tuple[pa.Table, pa.Table]:
    """(the file's rows without the erased versions, the rows removed), its footer's metadata kept and
    its attribute summary redone."""
    table = pq.read_table(pa.BufferReader(data))
    mine = _erased_rows(table, key, up_to_us)
    kept, removed = table.filter(pc.invert(mine)), table.filter(mine)
    if METADATA_KEY in (table.schema.metadata or {}):
        # The attribute summary names the attributes the images hold: the erased item's must not stay in it.
        kept = with_summary(kept, image)
    return kept, removed


def _rewrite_change_file(store: Store, plan: ForgetPlan, path: str) -> str | None:
    """Write ``path`` again without the item; returns the replacement (None when no row is left)."""
    verify_for_read(store, [path])
    kept, _removed = _without(store.read(path), plan.item_key, plan.up_to_us, "new_image")
    if kept.num_rows == 0:
        return None
    name = parse_change_file_name(path)
    assert name is not None  # change_files listed it and verify_for_read checked its name
    deduplicated = DEDUPLICATED in (kept.schema.metadata or {})
    return publish_change_file(store, plan.table, partition_of(path), name.first_seq, name.last_seq, kept,
                               deduplicated=deduplicated, level=COMPACTED_LEVEL)


def _rewrite_snapshot(store: Store, plan: ForgetPlan, manifest_path: str, manifest: Manifest, hit_parts: set[str],
                      writer: str, replaced: dict[str, str | None], parts_replaced: dict[str, str | None]) -> Manifest:
    """Write the hit parts of one snapshot again without the item (each old part's replacement goes in
    ``parts_replaced``); returns the manifest that lists them, unpublished."""
    directory = manifest_path.rsplit("/", 1)[0]
    sums = []
    items, tombstones = manifest.items, manifest.tombstones
    for entry in manifest.part_sums:
        part = f"{directory}/{entry.name}"
        if part not in hit_parts:
            sums.append(entry)
            continue
        verify_for_read(store, [part])
        kept, removed = _without(store.read(part), plan.item_key, plan.up_to_us, "image")
        gone = removed.column("event_name").to_pylist()
        tombstones -= sum(1 for name in gone if name == "REMOVE")
        items -= sum(1 for name in gone if name != "REMOVE")
        if kept.num_rows == 0:
            parts_replaced[part] = None
            continue
        name = f"part-{writer}-{len(sums):05d}.parquet"
        data = parquet_bytes(kept, level=COMPACTED_LEVEL)
        store.write(f"{directory}/{name}", data)
        sums.append(part_sum_of(name, data, kept.num_rows))
        parts_replaced[part] = f"{directory}/{name}"
    consumed = sorted({new for old in manifest.consumed_files
                       for new in ([replaced[old]] if old in replaced else [old]) if new is not None})
    return replace(manifest, parts=tuple(entry.name for entry in sums), part_sums=tuple(sums),
                   items=items, tombstones=tombstones, consumed_files=tuple(consumed),
                   extra={**manifest.extra, "rewritten_by": "forget"})


def _paths(plan: ForgetPlan) -> list[str]:
    return [hit.path for hit in (*plan.change_files, *plan.parts, *plan.quarantine)]


def check_erasable(store: Store, plan: ForgetPlan) -> None:
    """Refuse (EraseRefused) a plan the store cannot carry out for good, before anything is written.

    Beyond the plan's refusal (compliance mode, a legal hold), this tries what the erasure will need
    (governance mode: the bypass permission), which a dry run does not.
    """
    refusal = plan.refusal
    if refusal is None and not plan.empty:
        refusal = store.erase_refusal(_paths(plan), probe=True)
    if refusal is not None:
        raise EraseRefused(f"cannot forget in {store.uri}: {refusal}; nothing was changed")


def apply_forget(store: Store, plan: ForgetPlan, reason: str, *, now_us: int | None = None) -> Erasure:
    """Carry out a plan (see the module's steps); returns the erasure as recorded."""
    check_erasable(store, plan)
    table = plan.table
    started = datetime.now(UTC)
    now = to_micros(started) if now_us is None else now_us
    secret = ensure_secret(store, table)
    # Before any row goes: the erased versions may be the first or last stored, which bound coverage.
    keep_bounds(store, table, *stored_time_bounds(store, table))
    replaced: dict[str, str | None] = {}
    for hit in plan.change_files:
        replaced[hit.path] = _rewrite_change_file(store, plan, hit.path)
    manifests = dict(list_manifests(store, table))
    writer = f"forget{uuid.uuid4().hex[:8]}"
    hit_parts: dict[str, set[str]] = defaultdict(set)
    for hit in plan.parts:
        assert hit.manifest is not None
        hit_parts[hit.manifest].add(hit.path)
    parts_replaced: dict[str, str | None] = {}
    rewritten = {path: _rewrite_snapshot(store, plan, path, manifests[path], hit_parts[path], writer, replaced,
                                         parts_replaced)
                 for path in plan.snapshots if path in manifests}
    erasure = Erasure(
        key_hash=key_hash(secret, plan.item_key),
        # A later round, or an erasure done again, keeps the moment the first one erased up to:
        # the item's writes after it are kept.
        erased_up_to_us=plan.up_to_us if plan.up_to_us is not None else max(now, plan.latest_version_us or 0),
        at=started.isoformat(),
        reason=reason,
        versions_removed=plan.versions,
        snapshot_rows_removed=plan.snapshot_rows,
        replaced=tuple(Replaced(old, new) for old, new in (*replaced.items(), *parts_replaced.items(),
                                                           *((hit.path, None) for hit in plan.quarantine))),
        snapshots=plan.snapshots,
    )
    path = write_erasure(store, table, erasure, now)
    for manifest_path, manifest in rewritten.items():
        republish_manifest(store, manifest_path, manifest, reason="forget: rewritten without an erased item")
    record_removed(store, list(replaced))  # before deleting: the ledger tells an erasure from a loss
    record_dropped(store, table, [hit.path for hit in plan.quarantine])
    for old in replaced:
        store.purge(old)
    for hit in (*plan.parts, *plan.quarantine):  # a quarantined copy left by a crash is dropped by requeue
        store.purge(hit.path)
    return replace(erasure, path=path)


@dataclass(frozen=True)
class ForgetResult:
    """What ``forget`` did: one erasure per round (more than one when records arrived meanwhile)."""

    erasures: tuple[Erasure, ...]

    @property
    def versions(self) -> int:
        """Versions removed from change files."""
        return sum(e.versions_removed for e in self.erasures)

    @property
    def files(self) -> int:
        """Files replaced or deleted."""
        return sum(len(e.replaced) for e in self.erasures)


ERASED_AGAIN = "erased again: a forget ran while a compaction read the files it published"


def erase_again(store: Store, table: str, rows: Callable[[], pa.Table], written_with: ErasedKeys | None) -> int:
    """Call right after publishing a merge's or a snapshot's output, written without the versions the
    ledger ``written_with`` covered (``forgotten.without_erased``; None: no erasure then, or not
    applied): when an erasure was recorded since, erase once more, from the whole store, every item of
    ``rows()`` (``item_key``, ``event_time``) that an erasure covers. Returns how many items were erased
    again; ``rows`` is read only when the ledger grew.

    A forget that ran while the files were read rewrote those files, not the output published after
    them, and its last plan may come before that publication. An erasure recorded before this check
    is seen here; one recorded after it plans again after the publication, and so finds the output
    itself. The erasure keeps the moment the first one erased up to.
    """
    ledger = erased_keys(store, table)
    if ledger is None or (written_with is not None and ledger.records <= written_with.records):
        return 0
    data = rows()
    mask = erased_versions_mask(data, ledger)
    keys = {key for key, erased in zip(data.column("item_key").to_pylist(), mask, strict=True) if erased}
    for key in sorted(keys):
        forget(store, _plan(store, table, key, ledger.up_to[key_hash(ledger.secret, key)]), ERASED_AGAIN)
    return len(keys)


def forget(store: Store, plan: ForgetPlan, reason: str) -> ForgetResult:
    """Apply ``plan``, then plan again until no file holds the item (records captured meanwhile)."""
    done: list[Erasure] = []
    for _ in range(_ROUNDS):
        if plan.empty:
            break
        erasure = apply_forget(store, plan, reason)
        done.append(erasure)
        # Only what the erasure covers: a write to the live table after it is kept as usual.
        plan = _plan(store, plan.table, plan.item_key, erasure.erased_up_to_us)
    if not plan.empty:
        raise ConflictError(f"versions of the item kept arriving in {plan.table!r} while forget ran; run it again")
    return ForgetResult(tuple(done))


@dataclass(frozen=True)
class WherePlan:
    """What ``forget --where`` would erase: the items any stored version of which matches, one plan each.

    Each item goes through the same per-key erasure (``forget``) and leaves its own ledger record.
    """

    table: str
    plans: tuple[ForgetPlan, ...]  # one per matched item, in key order
    versions_scanned: int  # stored versions (change images, snapshot images) the predicate was tested on

    @property
    def item_keys(self) -> tuple[str, ...]:
        """The matched items' canonical keys (in memory; printed by --dry-run for the user to confirm)."""
        return tuple(plan.item_key for plan in self.plans)

    @property
    def versions(self) -> int:
        return sum(plan.versions for plan in self.plans)

    @property
    def change_files(self) -> tuple[str, ...]:
        """Distinct change files that hold a version of any matched item."""
        return tuple(sorted({hit.path for plan in self.plans for hit in plan.change_files}))

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(sorted({hit.path for plan in self.plans for hit in plan.parts}))

    @property
    def snapshots(self) -> tuple[str, ...]:
        return tuple(sorted({path for plan in self.plans for path in plan.snapshots}))

    @property
    def quarantine(self) -> int:
        """Quarantined records of the matched items."""
        return sum(len(plan.quarantine) for plan in self.plans)

    @property
    def refusal(self) -> str | None:
        return next((plan.refusal for plan in self.plans if plan.refusal is not None), None)


def matching_items(store: Store, table: str, predicate: Predicate) -> tuple[list[str], int]:
    """(the canonical keys of the items any stored version of which ``predicate`` holds for, how many
    versions were tested).

    A version is every image the store holds: each change's new and old image and each snapshot
    image (a bootstrap's copy is in no change file). The predicate is bound exactly as replay and
    diff bind it (``changelog.predicate``), over the attributes of every image, on a connection
    locked once the images are read.
    """
    manifests = list_manifests(store, table)
    con = duckdb.connect()
    register_parquet(con, "forget__changes", store, change_files(store, table), SCHEMA, through_arrow=True)
    register_parquet(con, "forget__parts", store, [part for path, m in manifests for part in part_paths(path, m)],
                     SNAPSHOT_SCHEMA, through_arrow=True)
    con.execute("""CREATE TEMP TABLE forget__versions AS
                   SELECT item_key, new_image AS image FROM forget__changes WHERE new_image IS NOT NULL
                   UNION ALL SELECT item_key, old_image FROM forget__changes WHERE old_image IS NOT NULL
                   UNION ALL SELECT item_key, image FROM forget__parts WHERE image IS NOT NULL""")
    where_sql, extra = predicate.bind_columns(columns_of(summarize(con, "forget__versions", "image")))
    lock_down(con)
    (scanned,) = con.execute("SELECT count(*) FROM forget__versions").fetchone() or (0,)
    try:
        rows = con.execute(f"""SELECT DISTINCT __rewind_key FROM
                                   (SELECT item_key AS __rewind_key{extra} FROM forget__versions)
                               WHERE ({where_sql}) ORDER BY __rewind_key""").fetchall()
    except duckdb.Error as exc:
        raise UsageError(f"--where cannot be applied: {str(exc).splitlines()[0]}") from None
    return [str(key) for (key,) in rows], int(scanned)


def plan_forget_where(store: Store, table: str, predicate: Predicate) -> WherePlan:
    """Plan the erasure of every item any stored version of which ``predicate`` holds for."""
    keys, scanned = matching_items(store, table, predicate)
    return WherePlan(table, tuple(plan_item(store, table, key) for key in keys), scanned)


def forget_where(store: Store, plan: WherePlan, reason: str) -> ForgetResult:
    """Erase each matched item through ``forget``, one after another, each planned afresh (the one before
    it rewrote files they may share); one ledger record per item and round."""
    for item_plan in plan.plans:
        check_erasable(store, item_plan)  # every item's files, before the first is rewritten
    done: list[Erasure] = []
    for key in plan.item_keys:
        done += forget(store, plan_item(store, plan.table, key), reason).erasures
    return ForgetResult(tuple(done))


def describe_hits(hits: Sequence[Hit]) -> list[str]:
    """One line per file: its path and how many rows of the item it holds (never the rows)."""
    return [f"{hit.path} ({hit.rows:,} row{'s' if hit.rows != 1 else ''})" for hit in hits]
