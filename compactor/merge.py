"""Merging small change files of closed hours into one file per hour, keeping every record.

Write-first, delete-last: the merged file is written before any original is removed, so a crash
in between leaves duplicates (which readers drop on event_id), never a gap. The merged file is
named like any change file (sequence range plus the digest of its bytes): merging again is a no-op.
Merged rows are sorted by item_key, so one item's history sits in few row groups.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import duckdb

from changelog.attributes import footer_summary, with_summary
from changelog.changefile import COMPACTED_LEVEL, publish_change_file
from changelog.consistent import read_consistently
from changelog.footer import recorded_lifts
from changelog.forgotten import erased_keys, without_erased
from changelog.layout import changes_root, hour_partition, partition_of
from changelog.ledger import record_removed
from changelog.record import SCHEMA, STORED_ORDER, first_copies
from changelog.snapshot import list_manifests
from changelog.source import register_parquet
from changelog.state import change_files
from changelog.store import Store
from compactor.forget import erase_again


@dataclass(frozen=True)
class MergeResult:
    """Files merged and written by one merge run."""

    partitions: int
    files_in: int
    files_out: int
    records: int


def merge_partition(store: Store, table: str, partition: str, files: list[str]) -> tuple[str, int]:
    """Merge the given files of one hour partition into one; returns (path written, records), ("", 0)
    when every row was an erased version."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    register_parquet(con, "merge_in", store, files, SCHEMA)
    columns = ", ".join(field.name for field in SCHEMA)
    # An erasure recorded before the merge wrote is honoured even if forget had not yet rewritten a file read.
    ledger = erased_keys(store, table)
    merged = with_summary(without_erased(con.sql(
        f"""SELECT {columns} FROM ({first_copies("merge_in", columns)})
            ORDER BY item_key, {STORED_ORDER}"""
    ).to_arrow_table().cast(SCHEMA), ledger), "new_image")
    if merged.num_rows == 0:  # every row a version an erasure covers: the hour goes, as forget leaves it
        record_removed(store, files)
        store.delete_many(files)
        return "", 0
    sequences = con.execute(
        f"SELECT sequence_number FROM merge_in ORDER BY {STORED_ORDER}"
    ).fetchall()
    path = publish_change_file(store, table, partition, sequences[0][0], sequences[-1][0], merged,
                               deduplicated=True, level=COMPACTED_LEVEL, lifted=recorded_lifts(store, files))
    erase_again(store, table, lambda: merged, ledger)  # an erasure recorded while it wrote
    replaced = [original for original in files if original != path]
    record_removed(store, replaced)  # before deleting: the ledger tells a merge from a loss
    store.delete_many(replaced)
    return path, merged.num_rows


def _worth_merging(store: Store, files: list[str], consumed: set[str], min_files: int) -> bool:
    """Several files, or one new since the latest snapshot whose footer lacks an attribute summary.

    Rewriting such a lone capture file once gives it the summary (changelog.attributes), so SQL
    sessions read its footer instead of its images. Files an earlier snapshot consumed were seen
    by an earlier compaction: looking again at every old hour would read a footer per hour per run.
    """
    if len(files) >= min_files:
        return True
    return len(files) == 1 and files[0] not in consumed and footer_summary(store, files[0]) is None


def mergeable_hours(store: Store, table: str, before_us: int, *, min_files: int = 2) -> dict[str, list[str]]:
    """The hour partitions ``merge_small_files`` would merge now, each with its change files, in hour order.

    Only closed hours are merged (a file can still land in the current hour).
    """
    return _mergeable(store, table, before_us, min_files, _consumed(store, table))


def _mergeable(store: Store, table: str, before_us: int, min_files: int, consumed: set[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for path in change_files(store, table):
        groups[partition_of(path)].append(path)
    open_hour = hour_partition(before_us)
    return {partition: files for partition, files in sorted(groups.items())
            if partition < open_hour and _worth_merging(store, files, consumed, min_files)}


def _consumed(store: Store, table: str) -> set[str]:
    manifests = list_manifests(store, table)
    return set(manifests[-1][1].consumed_files) if manifests else set()


def merge_small_files(store: Store, table: str, before_us: int, *, min_files: int = 2) -> MergeResult:
    """Merge change files in every hour partition that ends at or before ``before_us`` (``mergeable_hours``)."""
    consumed = _consumed(store, table)
    partitions = files_in = files_out = records = 0
    for partition in _mergeable(store, table, before_us, min_files, consumed):

        def merge_current(partition: str = partition) -> tuple[int, int] | None:
            # Listed afresh on every attempt: another compactor may have merged this hour meanwhile
            # (then its originals are gone and one merged file is left: nothing to do).
            current = [p for p in change_files(store, table) if partition_of(p) == partition]
            if not current or not _worth_merging(store, current, consumed, min_files):
                return None
            return len(current), merge_partition(store, table, partition, current)[1]

        done = read_consistently(store, (changes_root(table) + "/",), merge_current)
        if done is None:
            continue
        partitions += 1
        files_in += done[0]
        files_out += 1
        records += done[1]
    return MergeResult(partitions, files_in, files_out, records)
