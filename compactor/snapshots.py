"""Building base snapshots: the previous snapshot plus the changes since, written parts-first.

Publish order: part files (named by a writer id, so two compactors never write the same object),
then the manifest with a conditional write. A crash before the manifest leaves only unlisted parts
that no reader looks at; of two compactors racing for the same moment exactly one publishes.
The manifest lists every part's size, sha256 and rows, and chains to the manifest published before
it (``publish_manifest``), so readers can check both the parts and the history.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from changelog.attributes import with_summary
from changelog.changefile import COMPACTED_LEVEL, parquet_bytes
from changelog.consistent import read_consistently, table_prefixes
from changelog.errors import ConflictError, TimeOutOfRange
from changelog.layout import snapshot_dir
from changelog.snapshot import (
    MANIFEST,
    SNAPSHOT_SCHEMA,
    Manifest,
    PartSum,
    chain_head,
    list_manifests,
    part_sum_of,
    write_removal,
)
from changelog.state import (
    Coverage,
    StatePlan,
    check_restorable,
    coverage,
    manifest_bases,
    open_state,
    plan_state,
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


def build_snapshot(store: Store, table: str, at_us: int, *, writer_id: str | None = None,
                   part_rows: int = PART_ROWS, publish: bool = True, cov: Coverage | None = None) -> Manifest:
    """Write the snapshot of ``table`` at ``at_us`` and publish its manifest; returns the manifest.

    ``at_us`` must lie inside the table's coverage (TimeOutOfRange otherwise); ``cov`` is that
    coverage when the caller has just computed it (merging files does not move it).

    Raises ConflictError when a snapshot at that moment is already published (or another writer
    publishes first). ``publish=False`` writes the parts only (used to test crashes).
    """
    cov = cov or coverage(store, table, count_changes=False)
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
    plan = plan_state(store, table, at_us)
    con = duckdb.connect()
    open_state(con, store, plan, name="snap", tombstones=True)
    reader = con.sql(
        """SELECT table_name, item_key, keys, event_name, event_time, sequence_number, image
            FROM snap ORDER BY item_key"""
    ).to_arrow_reader(part_rows)
    parts: list[PartSum] = []
    items = tombstones = 0
    pending: list[pa.RecordBatch] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending, pending_rows
        if not pending:
            return
        table_part = with_summary(pa.Table.from_batches(pending).cast(SNAPSHOT_SCHEMA), "image")
        name = f"part-{writer}-{len(parts):05d}.parquet"
        data = parquet_bytes(table_part, level=COMPACTED_LEVEL)
        store.write(f"{directory}/{name}", data)
        parts.append(part_sum_of(name, data, table_part.num_rows))
        pending, pending_rows = [], 0

    for batch in reader:
        names = batch.column("event_name").to_pylist()
        removed = sum(1 for name in names if name == "REMOVE")
        tombstones += removed
        items += len(names) - removed
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows >= part_rows:
            flush()
    flush()
    consumed = set(plan.change_files)
    if plan.snapshot is not None:
        consumed.update(plan.snapshot.consumed_files)
    manifest = Manifest(
        table_name=table,
        snapshot_time_us=at_us,
        kind="compaction",
        parts=tuple(part.name for part in parts),
        part_sums=tuple(parts),
        consumed_files=tuple(sorted(consumed)),
        items=items,
        tombstones=tombstones,
        base_snapshot=plan.snapshot_path,
        restorable_from_us=None,
        created_at=datetime.now(UTC).isoformat(),
        # Checked against this watermark: coverage may trust the snapshot's moment (changelog.state).
        extra={"writer": writer, "watermark_us": cov.latest_us, **_inherited(store, table, plan)},
    )
    if publish:
        manifest = publish_manifest(store, f"{directory}/{MANIFEST}", manifest)
    return manifest


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
    ``expire`` deletes them); ``copy_floor_us``: the copy floor its state was read with (changes
    stamped before it must not bring back an item the copy did not hold). See changelog.state.
    """
    bases = sorted({base for _, m in list_manifests(store, table) if m.snapshot_time_us <= plan.at_us
                    for base in manifest_bases(m) if base <= plan.at_us})
    found: dict[str, object] = {}
    if bases:
        found["bases_us"] = bases
    if plan.changes_from_us is not None:
        found["copy_floor_us"] = plan.changes_from_us
    return found
