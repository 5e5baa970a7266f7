"""Building base snapshots: the previous snapshot plus the changes since, written parts-first.

Publish order: part files (named by a writer id, so two compactors never write the same object),
then the manifest with a conditional write. A crash before the manifest leaves only unlisted parts
that no reader looks at; of two compactors racing for the same moment exactly one publishes.
The manifest lists every part's size, sha256 and rows, and chains to the manifest published before
it (``publish_manifest``), so readers can check both the parts and the history.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from changelog.attributes import with_summary
from changelog.changefile import COMPACTED_LEVEL, parquet_bytes
from changelog.consistent import read_consistently, table_prefixes
from changelog.errors import ConflictError, StoreError, TimeOutOfRange, UsageError
from changelog.forgotten import ErasedKeys, erased_keys, without_erased
from changelog.layout import changes_root, snapshot_dir, snapshots_root
from changelog.snapshot import (
    MANIFEST,
    SNAPSHOT_SCHEMA,
    Manifest,
    PartSum,
    chain_head,
    list_manifests,
    part_paths,
    part_sum_of,
    write_removal,
)
from changelog.spec import STATE_COLUMNS
from changelog.state import (
    Coverage,
    StatePlan,
    check_restorable,
    copies,
    copy_published_since,
    coverage,
    manifest_bases,
    open_state,
    plan_state,
    snapshot_parts,
)
from changelog.store import Store
from changelog.timefmt import format_time, from_micros

PART_ROWS = 250_000


def default_snapshot_time(cov: Coverage) -> int | None:
    """The watermark (latest restorable time) cut to the whole second, in µs.

    None when that second lies before the earliest restorable time (a bootstrap consistent only
    from a later fraction of the second): there is nothing a snapshot could hold yet.
    """
    if cov.latest_us is None or cov.earliest_us is None:
        raise TimeOutOfRange(f"table {cov.table!r} has nothing captured yet: nothing to compact")
    moment = cov.latest_us - cov.latest_us % 1_000_000
    return moment if moment >= cov.earliest_us else None


def snapshot_input_bytes(store: Store, table: str, at_us: int) -> int:
    """What a snapshot at ``at_us`` reads: the sizes of its change files and of its base snapshot's parts."""
    plan = plan_state(store, table, at_us)
    sizes = {**store.sizes(changes_root(table) + "/"), **store.sizes(snapshots_root(table) + "/")}
    return sum(sizes.get(path, 0) for path in (*plan.change_files, *snapshot_parts(plan)))


def build_snapshot(store: Store, table: str, at_us: int, *, writer_id: str | None = None,
                   part_rows: int = PART_ROWS, publish: bool = True, cov: Coverage | None = None) -> Manifest:
    """Write the snapshot of ``table`` at ``at_us`` and publish its manifest; returns the manifest.

    ``at_us`` must lie inside the table's coverage (TimeOutOfRange otherwise); ``cov`` is that
    coverage when the caller has just computed it (merging files does not move it).

    Raises ConflictError when a snapshot at that moment is already published (or another writer
    publishes first). ``publish=False`` writes the parts only (used to test crashes).
    """
    cov = cov or coverage(store, table)
    check_restorable(cov, from_micros(at_us), at_us)
    directory = snapshot_dir(table, from_micros(at_us))
    manifest_path = f"{directory}/{MANIFEST}"
    if store.exists(manifest_path):
        raise ConflictError(f"a snapshot of {table!r} at {format_time(from_micros(at_us))} already exists")
    writer = writer_id or uuid.uuid4().hex[:12]
    # A merge may replace change files while they are read: plan and write the parts again then.
    return read_consistently(store, table_prefixes(table), lambda: _write_snapshot(
        store, table, at_us, cov, directory, writer, part_rows, publish))


def _write_snapshot(store: Store, table: str, at_us: int, cov: Coverage, directory: str, writer: str,
                    part_rows: int, publish: bool) -> Manifest:
    known = copies(list_manifests(store, table))  # listed before planning: a copy published later is checked for
    plan = plan_state(store, table, at_us)
    ledger = erased_keys(store, table)  # read before the state: see forget.erase_again for one recorded after
    con = duckdb.connect()
    open_state(con, store, plan, name="snap", tombstones=True)
    reader = con.sql(f"SELECT {STATE_COLUMNS} FROM snap ORDER BY item_key").to_arrow_reader(part_rows)
    parts = PartWriter(store, directory, writer, part_rows)
    for batch in reader:
        parts.add(without_erased(batch, ledger))
    manifest = snapshot_manifest(store, plan, cov, writer, parts.finish())
    if publish:
        manifest = publish_manifest(store, f"{directory}/{MANIFEST}", manifest)
        _withdraw_if_built_without_a_copy(store, f"{directory}/{MANIFEST}", manifest, known)
        _erase_again(store, f"{directory}/{MANIFEST}", manifest, ledger)
    return manifest


def _withdraw_if_built_without_a_copy(store: Store, path: str, manifest: Manifest, known: frozenset[str]) -> None:
    """Withdraw the just-published snapshot when a bootstrap not among ``known`` (the copies there when
    its state was planned) is dated before it (``state.copy_published_since``): one published while
    this snapshot was being built, after it had withdrawn the snapshots published by then. Checked
    after publishing, as the bootstrap checks again after its own, so of the two racing one always
    sees the other."""
    from compactor.retention import delete_snapshot

    copy = copy_published_since(list_manifests(store, manifest.table_name), known, manifest)
    if copy is None:
        return
    delete_snapshot(store, path, manifest, reason=f"withdrawn: the {copy.kind} bootstrap at "
                                                  f"{format_time(copy.snapshot_time)} was published while it was built")
    raise ConflictError(f"a {copy.kind} bootstrap of {manifest.table_name!r} at {format_time(copy.snapshot_time)} "
                        f"was published while the snapshot at {format_time(manifest.snapshot_time)} was built on an "
                        "older copy: the snapshot was withdrawn; run compact again")


def _erase_again(store: Store, path: str, manifest: Manifest, written_with: ErasedKeys | None) -> None:
    """``forget.erase_again`` over the published snapshot's rows (their keys and times, read only when an
    erasure was recorded since ``written_with``; always when the parts were written elsewhere: None)."""
    from compactor.forget import erase_again  # forget re-publishes snapshots: it imports this module

    def rows() -> pa.Table:
        return pa.concat_tables([pq.read_table(pa.BufferReader(store.read(part)), columns=["item_key", "event_time"])
                                 for part in part_paths(path, manifest)])

    erase_again(store, manifest.table_name, rows, written_with)


@dataclass(frozen=True)
class WrittenParts:
    """A snapshot's parts as written, in key order, with what they hold."""

    parts: tuple[PartSum, ...]
    items: int
    tombstones: int


def part_name(writer: str, index: int) -> str:
    """The name of a snapshot's ``index``-th part written by ``writer`` (the same on every path)."""
    return f"part-{writer}-{index:05d}.parquet"


def write_part(store: Store, path: str, rows: pa.Table) -> tuple[PartSum, int]:
    """Write one part (rows of ``SNAPSHOT_SCHEMA`` in key order); its manifest entry and its tombstones.

    The one writer of snapshot parts, whoever computed the rows (DuckDB here, Spark's executors in
    ``compactor.spark_snapshot``): the same rows give the same bytes, whatever their batches were.
    """
    part = with_summary(rows.cast(SNAPSHOT_SCHEMA).combine_chunks(), "image")
    data = parquet_bytes(part, level=COMPACTED_LEVEL)
    store.write(path, data)
    removed = pc.sum(pc.equal(part.column("event_name"), "REMOVE")).as_py() or 0
    return part_sum_of(path.rsplit("/", 1)[-1], data, part.num_rows), int(removed)


class PartWriter:
    """Cuts a key-ordered stream of rows into parts of exactly ``part_rows`` rows (the last one fewer)."""

    def __init__(self, store: Store, directory: str, writer: str, part_rows: int) -> None:
        self._store, self._directory, self._writer, self._part_rows = store, directory, writer, part_rows
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0
        self._parts: list[PartSum] = []
        self._tombstones = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._rows += batch.num_rows
        while self._rows >= self._part_rows:
            rows = pa.Table.from_batches(self._pending)
            self._write(rows.slice(0, self._part_rows))
            rest = rows.slice(self._part_rows)
            self._pending, self._rows = rest.to_batches(), rest.num_rows

    def finish(self) -> WrittenParts:
        if self._rows:
            self._write(pa.Table.from_batches(self._pending))
        rows = sum(part.rows for part in self._parts)
        return WrittenParts(tuple(self._parts), rows - self._tombstones, self._tombstones)

    def _write(self, rows: pa.Table) -> None:
        name = part_name(self._writer, len(self._parts))
        part, removed = write_part(self._store, f"{self._directory}/{name}", rows)
        self._parts.append(part)
        self._tombstones += removed


def snapshot_manifest(store: Store, plan: StatePlan, cov: Coverage, writer: str, written: WrittenParts) -> Manifest:
    """The unpublished manifest of a compaction snapshot of ``plan`` (the same fields on every path)."""
    consumed = set(plan.change_files)
    if plan.snapshot is not None:
        consumed.update(plan.snapshot.consumed_files)
    return Manifest(
        table_name=plan.table,
        snapshot_time_us=plan.at_us,
        kind="compaction",
        parts=tuple(part.name for part in written.parts),
        part_sums=written.parts,
        consumed_files=tuple(sorted(consumed)),
        items=written.items,
        tombstones=written.tombstones,
        base_snapshot=plan.snapshot_path,
        restorable_from_us=None,
        created_at=datetime.now(UTC).isoformat(),
        # Checked against this watermark: coverage may trust the snapshot's moment (changelog.state).
        extra={"writer": writer, "watermark_us": cov.latest_us, **_inherited(store, plan.table, plan)},
    )


def publish_manifest(store: Store, path: str, manifest: Manifest) -> Manifest:
    """Make a snapshot visible: one conditional write; losing a race raises ConflictError.

    The manifest is chained to the newest link (by generation) of the table's manifest history,
    removed ones included; returns it as published. Two writers racing may extend the same link
    (a fork), which readers accept.

    Right before publishing, every part must still be there with the size the manifest records:
    a compactor stalled past the orphan age may have had its parts removed by ``expire``, and a
    manifest over missing parts would be a damaged snapshot (ConflictError, nothing published).
    """
    _check_parts_present(store, path.rsplit("/", 1)[0], manifest)
    head = chain_head(store, manifest.table_name)
    manifest = replace(manifest, generation=head[0] + 1 if head else 1, previous_sha256=head[1] if head else None)
    manifest.check_counts()
    try:
        store.write(path, manifest.to_json(), if_absent=True)
    except ConflictError:
        raise ConflictError(
            f"another compactor published the snapshot of {manifest.table_name!r} at "
            f"{format_time(manifest.snapshot_time)} first; this run's parts are left unlisted"
        ) from None
    return manifest


def republish_manifest(store: Store, path: str, manifest: Manifest, *, reason: str) -> Manifest:
    """Replace a published snapshot's manifest by ``manifest`` (same moment, other parts), chained.

    The old manifest's removal record (its digest and ``reason``) is written first, so the manifests
    that name it as predecessor still chain; then the new one is written over it in one atomic write
    (the restore point never disappears) and chained to the newest link, like any publication.
    Used by ``forget``, which rewrites parts without an erased item.
    """
    _check_parts_present(store, path.rsplit("/", 1)[0], manifest)
    write_removal(store, manifest.table_name, path, reason)
    head = chain_head(store, manifest.table_name)
    manifest = replace(manifest, generation=head[0] + 1 if head else 1, previous_sha256=head[1] if head else None)
    manifest.check_counts()
    store.write(path, manifest.to_json())
    return manifest


def _check_parts_present(store: Store, directory: str, manifest: Manifest) -> None:
    present = store.sizes(directory + "/")
    for part in manifest.parts:
        size = present.get(f"{directory}/{part}")
        recorded = manifest.part_sum(part)
        if size is None or (recorded is not None and size != recorded.size):
            raise ConflictError(
                f"part {part} of the snapshot of {manifest.table_name!r} at {format_time(manifest.snapshot_time)} "
                "is gone or changed since it was written (this run stalled past the orphan age and expire "
                "removed it): nothing was published; run compact again"
            )


def _inherited(store: Store, table: str, plan: StatePlan) -> dict[str, object]:
    """What a compaction snapshot carries from the bootstraps beneath it, so it outlives them.

    ``bases_us``: every whole copy at or before its moment (a gap they cleared stays cleared after
    ``expire`` deletes them), and ``base_floors_us`` what each clears (``restorable.Base``);
    ``copy_floor_us``: the copy floor its state was read with (changes stamped before it must not
    bring back an item the copy did not hold). See changelog.state.
    """
    bases = sorted({base for _, m in list_manifests(store, table) if m.snapshot_time_us <= plan.at_us
                    for base in manifest_bases(m) if base.at_us <= plan.at_us})
    found: dict[str, object] = {}
    if bases:
        found["bases_us"] = [base.at_us for base in bases]
        found["base_floors_us"] = [base.clears_before_us for base in bases]
    if plan.changes_from_us is not None:
        found["copy_floor_us"] = plan.changes_from_us
    return found


WRITER_ID = re.compile(r"^[0-9a-f]{12}$")


def draft_path(directory: str, writer: str) -> str:
    """Where a snapshot computed elsewhere (a Spark job) leaves its unpublished manifest."""
    if not WRITER_ID.match(writer):
        raise UsageError(f"writer id {writer!r} is not 12 lowercase hex digits")
    return f"{directory}/draft-{writer}.json"


def write_draft(store: Store, manifest: Manifest) -> str:
    """Leave ``manifest`` (unpublished) beside its parts, for ``publish_draft``; returns its path."""
    path = draft_path(snapshot_dir(manifest.table_name, manifest.snapshot_time), str(manifest.extra["writer"]))
    store.write(path, manifest.to_json())
    return path


def publish_draft(store: Store, table: str, at_us: int, writer: str) -> Manifest:
    """Publish the snapshot a Spark job computed, by the same step as the Lambda's (``publish_manifest``).

    The draft must be the one for this table and moment (StoreError otherwise: nothing published); it
    is deleted once the manifest is published (a leftover is an orphan ``expire`` removes).
    """
    directory = snapshot_dir(table, from_micros(at_us))
    path = draft_path(directory, writer)
    try:
        draft = Manifest.from_json(store.read(path), draft=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"the Spark snapshot's draft manifest {path} is unreadable: {exc}") from None
    if (draft.table_name, draft.snapshot_time_us, draft.extra.get("writer")) != (table, at_us, writer):
        raise StoreError(f"the draft manifest {path} is not the snapshot of {table!r} at "
                         f"{format_time(from_micros(at_us))} by writer {writer}")
    manifest = publish_manifest(store, f"{directory}/{MANIFEST}", draft)
    store.delete(path)
    _erase_again(store, f"{directory}/{MANIFEST}", manifest, None)  # Spark wrote the parts without the ledger
    return manifest
