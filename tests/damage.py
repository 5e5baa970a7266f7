"""A small store with three chained snapshots, and the ways a store gets damaged (shared by the integrity tests).

The history: 12 writes of 5 keys, one every 15 minutes over three hours; snapshots at the 2nd, 5th
and 8th writes (so a moment can fall before, between or after them); the last four writes are
captured after the last snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from changelog.codec import decode_lambda_record
from changelog.layout import changes_root
from changelog.snapshot import list_manifests
from changelog.snapshot import part_paths as snapshot_part_paths
from changelog.state import change_files
from changelog.store import Store, open_store
from changelog.timefmt import format_time, from_micros
from compactor.snapshots import build_snapshot
from stream_consumer.capture import capture_batch
from tests.built import built_once, copy_store
from tests.model import KEYS, Op, stream_records

TABLE = "orders"
T0 = 1_700_000_400  # 2023-11-14T22:20:00Z
STEP = 900
OPS = [Op(i % len(KEYS), {**KEYS[i % len(KEYS)], "n": {"N": str(i)}, "pad": {"S": "x" * (40 + i)}}, T0 + STEP * i)
       for i in range(12)]
SNAPSHOT_SECONDS = (T0 + STEP * 2, T0 + STEP * 5, T0 + STEP * 8)
LAST_SECOND = T0 + STEP * 11
US = 1_000_000


def at(second: int) -> str:
    """TIME argument for a second."""
    return format_time(from_micros(second * US))


def build_store(store: Store) -> None:
    """Capture the history in batches and publish the three snapshots between them."""
    records = stream_records(TABLE, OPS)
    captured = 0
    for snapshot in SNAPSHOT_SECONDS:
        upto = sum(1 for op in OPS if op.second <= snapshot)
        capture_batch(store, records[captured:upto], decode_lambda_record, source="test")
        captured = upto
        build_snapshot(store, TABLE, snapshot * US)
    capture_batch(store, records[captured:10], decode_lambda_record, source="test")
    capture_batch(store, records[10:], decode_lambda_record, source="test")


# One local store built by ``build_store`` per test process (the build is the same every time).
pristine = built_once(build_store)


def copy_built_store(store: Store) -> None:
    """Make an empty ``store`` what ``build_store`` makes, byte for byte, by copying the pristine build."""
    copy_store(pristine(), store)


def fresh_s3_store(s3_over_http: Store, tmp_path: Path) -> Store:
    """A store under a prefix of its own in the HTTP moto bucket (moto keeps objects across servers)."""
    return open_store(f"{s3_over_http.uri}/{tmp_path.name}", allow_empty=True)  # the test builds it


def manifest_paths(store: Store) -> list[str]:
    """Manifest paths, oldest snapshot first."""
    return [path for path, _ in list_manifests(store, TABLE)]


def part_paths(store: Store) -> list[str]:
    """Every snapshot part, oldest snapshot first."""
    return [part for path, m in list_manifests(store, TABLE) for part in snapshot_part_paths(path, m)]


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    """``data`` with the byte at ``offset`` XOR ``mask``."""
    changed = bytearray(data)
    changed[offset] ^= mask
    return bytes(changed)


@dataclass(frozen=True)
class Damage:
    """One way to damage the store: ``apply`` damages it and returns the path a refusal must name."""

    name: str
    apply: Callable[[Store], str]
    by_structure: bool  # found by `check` without --read-data (a listing and the manifests suffice)
    in_changes: bool  # a change file: sql, history and status read every one


def _swap_part(store: Store) -> str:
    # A valid Parquet file from another snapshot in place of the middle snapshot's part.
    parts = part_paths(store)
    store.write(parts[1], store.read(parts[0]))
    return parts[1]


def _truncate_part(store: Store) -> str:
    part = part_paths(store)[-1]
    data = store.read(part)
    store.write(part, data[: len(data) // 2])
    return part


def _flip_part(store: Store) -> str:
    part = part_paths(store)[-1]
    data = store.read(part)
    store.write(part, flip(data, len(data) // 3))
    return part


def _missing_part(store: Store) -> str:
    part = part_paths(store)[-1]
    store.delete(part)
    return part


def _last_change_file(store: Store) -> str:
    return change_files(store, TABLE)[-1]


def _empty_change_file(store: Store) -> str:
    path = _last_change_file(store)
    store.write(path, b"")
    return path


def _flip_change_file(store: Store) -> str:
    path = _last_change_file(store)
    data = store.read(path)
    store.write(path, flip(data, len(data) // 2))
    return path


def _foreign_file(store: Store) -> str:
    # A valid change file of this very table, under a name this product never writes.
    source = _last_change_file(store)
    path = f"{source.rsplit('/', 1)[0]}/export-from-elsewhere.parquet"
    store.write(path, store.read(source))
    return path


def _move_change_file_to_a_later_hour(store: Store) -> str:
    # A change file of hour 00 moved, name and bytes intact, into hour 01 (what a replay of its hour skips).
    source = next(p for p in change_files(store, TABLE) if "/hour=00/" in p)
    target = source.replace("/hour=00/", "/hour=01/")
    store.write(target, store.read(source))
    store.delete(source)
    return target


def _other_tables_change_file(store: Store) -> str:
    # A change file captured for another table, placed in this table's hour of the same time.
    capture_batch(store, stream_records("invoices", [Op(0, {**KEYS[0], "n": {"N": "99"}}, LAST_SECOND)]),
                  decode_lambda_record, source="test")
    (source,) = change_files(store, "invoices")
    target = source.replace("tables/invoices/", f"tables/{TABLE}/")
    store.write(target, store.read(source))
    for path in store.list("tables/invoices/"):
        store.delete(path)
    return target


def _delete_manifest_mid_chain(store: Store) -> str:
    _first, middle, last = manifest_paths(store)
    store.delete(middle)
    return last  # the successor that names it


def _rewrite_manifest_mid_chain(store: Store) -> str:
    middle = manifest_paths(store)[1]
    text = store.read(middle).decode()
    store.write(middle, text.replace('"kind": "compaction"', '"kind": "export"').encode())
    return middle


def _forge_manifest_mid_chain(store: Store) -> str:
    # Rewritten with a valid own checksum (a careful forger): only the chain tells.
    from dataclasses import replace

    from changelog.snapshot import Manifest

    middle = manifest_paths(store)[1]
    manifest = Manifest.from_json(store.read(middle))
    store.write(middle, replace(manifest, created_at="2000-01-01T00:00:00+00:00").to_json())
    return middle


DAMAGES = [
    Damage("swapped part", _swap_part, by_structure=True, in_changes=False),
    Damage("truncated part", _truncate_part, by_structure=True, in_changes=False),
    Damage("bit flip in a part", _flip_part, by_structure=False, in_changes=False),
    Damage("missing part", _missing_part, by_structure=True, in_changes=False),
    Damage("zero-byte change file", _empty_change_file, by_structure=True, in_changes=True),
    Damage("bit flip in a change file", _flip_change_file, by_structure=False, in_changes=True),
    Damage("foreign file", _foreign_file, by_structure=True, in_changes=True),
    Damage("change file moved to a later hour", _move_change_file_to_a_later_hour, by_structure=True,
           in_changes=True),
    Damage("change file of another table", _other_tables_change_file, by_structure=True, in_changes=True),
    Damage("manifest deleted mid-chain", _delete_manifest_mid_chain, by_structure=True, in_changes=False),
    Damage("manifest rewritten mid-chain", _rewrite_manifest_mid_chain, by_structure=True, in_changes=False),
    Damage("manifest forged mid-chain", _forge_manifest_mid_chain, by_structure=True, in_changes=False),
]


def changes_prefix() -> str:
    """Prefix of the table's change files."""
    return changes_root(TABLE) + "/"


def delete_newest_change_file(store: Store) -> str:
    """Delete the change file of the newest hour (what capture wrote last); returns its path."""
    path = _last_change_file(store)
    store.delete(path)
    return path


def ledger_records(store: Store, table: str = TABLE) -> list[str]:
    """Every ledger record of the table (changelog.ledger), in chain order."""
    return store.list(f"tables/{table}/ledger/")
