"""The forget ledger: which items were erased from a table's history, up to which moment, without naming them.

``ddb-rewind forget`` (``compactor.forget``) rewrites every file holding a version of one item without
it, then leaves one erasure record here. Capture reads the records (``drop_erased``) so that a late,
re-sent, re-queued or recovered stream record of an erased item, stamped at or before the moment it
was erased up to, is dropped instead of bringing the item back; ``check`` reads them to prove the
erasure (the replaced files are gone, their replacements are in the ledger).

    tables/<table>/forgotten/secret.key                        32 random bytes, written once
    tables/<table>/forgotten/<written µs, 16 digits>-<key hash, 16 hex>.json   one per erasure

An erasure record never holds the key or any data: the item is named by HMAC-SHA256(secret, item
key). Without the secret, the records cannot be tested against a guessed key. Anyone who can read
the store can read the secret too, and can then test guesses (a list of e-mail addresses, say): the
hash hides the key from whoever sees the ledger alone (a listing, a copy of the records, a log), not
from a reader of the whole store. ``docs/forget.md`` says the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from changelog.damage import damaged, micros, parse_json_object
from changelog.errors import ConflictError
from changelog.layout import forgotten_root
from changelog.quarantine import Quarantined, quarantined_item_key
from changelog.record import ChangeRow
from changelog.store import ObjectMissing, Store
from changelog.timefmt import format_time

SECRET = "secret.key"
_SECRET_BYTES = 32
_RECORD = re.compile(r"[0-9]{16}-[0-9a-f]{16}\.json")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Replaced:
    """One file an erasure rewrote: the old path, and its replacement (None when no row was left)."""

    old: str
    new: str | None


@dataclass(frozen=True)
class Erasure:
    """One erasure as its record says: never the key, never data."""

    key_hash: str  # HMAC-SHA256(secret, item key), hex
    erased_up_to_us: int  # records of the item stamped at or before this are dropped
    at: str  # when the erasure ran (ISO 8601 UTC)
    reason: str
    versions_removed: int  # rows removed from change files
    snapshot_rows_removed: int  # rows removed from snapshot parts (one per snapshot holding the item)
    replaced: tuple[Replaced, ...]
    snapshots: tuple[str, ...]  # manifests re-published (restore points touched)
    path: str = ""

    def to_json(self) -> bytes:
        """The record's stored form."""
        body: dict[str, Any] = {
            "key_hmac_sha256": self.key_hash,
            "erased_up_to_us": self.erased_up_to_us,
            "at": self.at,
            "reason": self.reason,
            "versions_removed": self.versions_removed,
            "snapshot_rows_removed": self.snapshot_rows_removed,
            "replaced": [{"old": r.old, "new": r.new} for r in self.replaced],
            "snapshots": list(self.snapshots),
        }
        return json.dumps(body, indent=1, sort_keys=True).encode("utf-8")


def erasure_path(table: str, written_us: int, key_hash: str) -> str:
    """Where the record of one erasure lies (named by time, so a listing is in order)."""
    return f"{forgotten_root(table)}{written_us:016d}-{key_hash[:16]}.json"


def key_hash(secret: bytes, item_key: str) -> str:
    """The keyed hash an erasure names an item by (HMAC-SHA256 of its canonical item key)."""
    return hmac.new(secret, item_key.encode("utf-8"), hashlib.sha256).hexdigest()


def read_secret(store: Store, table: str) -> bytes | None:
    """The table's forget secret, or None when no erasure ever ran."""
    path = forgotten_root(table) + SECRET
    try:
        data = store.read(path)
    except ObjectMissing:
        return None
    if len(data) != _SECRET_BYTES:
        raise damaged(store, path, f"is {len(data)} bytes, a forget secret is {_SECRET_BYTES}")
    return data


def ensure_secret(store: Store, table: str) -> bytes:
    """The table's forget secret, written once (conditionally: two first erasures agree on one)."""
    found = read_secret(store, table)
    if found is not None:
        return found
    with contextlib.suppress(ConflictError):  # another erasure wrote it first: that one is used
        store.write(forgotten_root(table) + SECRET, secrets.token_bytes(_SECRET_BYTES), if_absent=True)
    found = read_secret(store, table)
    assert found is not None
    return found


def write_erasure(store: Store, table: str, erasure: Erasure, written_us: int) -> str:
    """Store one erasure record; returns its path."""
    path = erasure_path(table, written_us, erasure.key_hash)
    store.write(path, erasure.to_json())
    return path


def erasure_records(listing: Iterable[str], table: str) -> list[str]:
    """The erasure record paths of ``table`` in a listing of its prefix, oldest first."""
    root = forgotten_root(table)
    return sorted(p for p in listing if p.startswith(root) and _RECORD.fullmatch(p[len(root):]))


def foreign_objects(listing: Iterable[str], table: str) -> list[str]:
    """Objects under the forget ledger that are neither its secret, an erasure record nor a kept bound."""
    root = forgotten_root(table)
    return sorted(p for p in listing if p.startswith(root) and p != root + SECRET
                  and not _RECORD.fullmatch(p[len(root):]) and not _BOUND.fullmatch(p[len(root):]))


# The first and last change times the table's files showed when a forget began, each an empty object
# named by its time (µs): the erased item's versions may have been the first or the last stored, and
# coverage, which reads those times from the files, reads these from the listing it holds (no request).
_BOUND = re.compile(r"bounds/(first|last)-([0-9]{16})")


def keep_bounds(store: Store, table: str, first_us: int | None, last_us: int | None) -> None:
    """Record the table's stored time bounds before a forget removes any row (idempotent: named by value)."""
    for which, value in (("first", first_us), ("last", last_us)):
        if value is not None:
            store.write(f"{forgotten_root(table)}bounds/{which}-{value:016d}", b"")


def kept_bounds(listing: Iterable[str], table: str) -> tuple[int | None, int | None]:
    """The earliest first and the latest last change time forgets recorded, from a listing of the table."""
    root = forgotten_root(table)
    found: dict[str, list[int]] = {"first": [], "last": []}
    for path in listing:
        match = _BOUND.fullmatch(path[len(root):]) if path.startswith(root) else None
        if match:
            found[match.group(1)].append(int(match.group(2)))
    return (min(found["first"]) if found["first"] else None, max(found["last"]) if found["last"] else None)


def read_erasure(store: Store, path: str) -> Erasure:
    """Parse one erasure record; DamagedStore (one line naming it) when it is not a sound one."""
    body = parse_json_object(store, path, store.read(path))
    try:
        found = Erasure(
            key_hash=str(body["key_hmac_sha256"]),
            erased_up_to_us=micros(body["erased_up_to_us"], "erased_up_to_us"),
            at=str(body["at"]),
            reason=str(body["reason"]),
            versions_removed=int(body["versions_removed"]),
            snapshot_rows_removed=int(body["snapshot_rows_removed"]),
            replaced=tuple(Replaced(str(r["old"]), None if r["new"] is None else str(r["new"]))
                           for r in body["replaced"]),
            snapshots=tuple(str(s) for s in body["snapshots"]),
            path=path,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise damaged(store, path, f"is not a sound erasure record ({type(exc).__name__}: {exc})") from None
    if not _HEX64.fullmatch(found.key_hash):
        raise damaged(store, path, "is not a sound erasure record (its key hash is not an HMAC-SHA256)")
    return found


def read_erasures(store: Store, table: str, listing: Sequence[str] | None = None) -> list[Erasure]:
    """Every erasure of ``table``, oldest first (``listing``: of the forget ledger or the table, if at hand)."""
    if listing is None:
        listing = store.list(forgotten_root(table))
    return [read_erasure(store, path) for path in erasure_records(listing, table)]


@dataclass(frozen=True)
class ErasedKeys:
    """The erasures of one table, ready to test rows against (built once per batch)."""

    secret: bytes
    up_to: dict[str, int]  # key hash -> the latest erased-up-to moment recorded for it
    records: frozenset[str] = frozenset()  # the erasure records read

    def erased(self, item_key: str, event_time_us: int) -> bool:
        """True when a version of ``item_key`` stamped at ``event_time_us`` was erased."""
        limit = self.up_to.get(key_hash(self.secret, item_key))
        return limit is not None and event_time_us <= limit

    def holds_erased(self, kept: Quarantined) -> bool:
        """True when a quarantined record is a copy of a version an erasure covers (its keys read exactly).

        The same rule ``forget`` erases quarantined records by (``Quarantined.is_version_by``).
        """
        key = quarantined_item_key(kept)
        limit = None if key is None else self.up_to.get(key_hash(self.secret, key))
        return limit is not None and kept.is_version_by(limit)


def erasure_note(store: Store, table: str) -> str | None:
    """What a restore of ``table`` must say when ``forget`` erased items from its history: they are left out of
    every moment, those before the erasure included. None when nothing was erased (one listing)."""
    erasures = read_erasures(store, table)
    if not erasures:
        return None
    items = len({erasure.key_hash for erasure in erasures})
    latest = erasures[-1].at
    with contextlib.suppress(ValueError):
        latest = format_time(datetime.fromisoformat(latest))
    return (f"note: {table}: forget erased {items:,} item{'s' if items != 1 else ''} from the history "
            f"(the latest erasure at {latest}); this restore leaves {'them' if items != 1 else 'it'} out "
            "at every moment, as 'ddb-rewind check' records")


def erased_keys(store: Store, table: str) -> ErasedKeys | None:
    """The table's erasures, or None when it has none (one listing of a prefix that is almost always empty)."""
    listing = store.list(forgotten_root(table))
    records = erasure_records(listing, table)
    if not records:
        return None
    secret = read_secret(store, table)
    if secret is None:
        raise damaged(store, forgotten_root(table) + SECRET,
                      "is missing: erasures are recorded, but the secret their key hashes need is gone")
    up_to: dict[str, int] = {}
    for erasure in read_erasures(store, table, listing):
        up_to[erasure.key_hash] = max(up_to.get(erasure.key_hash, erasure.erased_up_to_us), erasure.erased_up_to_us)
    return ErasedKeys(secret, up_to, frozenset(records))


def erased_mask(store: Store, rows: Sequence[ChangeRow]) -> list[bool]:
    """For each row, whether an erasure covers it: its item was erased up to a moment at or after its time.

    Each table's ledger is read once per call (a batch): one listing of a prefix that is almost always empty.
    """
    ledgers: dict[str, ErasedKeys | None] = {}
    mask = []
    for row in rows:
        if row.table_name not in ledgers:
            ledgers[row.table_name] = erased_keys(store, row.table_name)
        ledger = ledgers[row.table_name]
        mask.append(ledger is not None and ledger.erased(row.item_key, row.event_time_us))
    return mask


def drop_erased(store: Store, rows: Sequence[ChangeRow]) -> tuple[list[ChangeRow], int]:
    """``rows`` without the versions an erasure covers, and how many were dropped.

    Every capture path (Lambda, poller, recover through ``capture_batch``; ``requeue``) calls this
    before writing: a record of an erased item stamped at or before its erased-up-to moment is a
    version the erasure removed, however late it arrives. Writes after that moment are kept.
    """
    mask = erased_mask(store, rows)
    kept = [row for row, erased in zip(rows, mask, strict=True) if not erased]
    return kept, len(rows) - len(kept)


def erased_versions_mask(rows: Any, ledger: ErasedKeys) -> list[bool]:
    """For each of ``rows`` (an Arrow table with ``item_key`` and ``event_time``), whether an erasure covers it.

    Each distinct key is hashed once; made with the ledger and its secret, never with the key.
    """
    keys = rows.column("item_key").to_pylist()
    times = rows.column("event_time").cast("int64").to_pylist()
    limits: dict[str, int | None] = {}
    mask = []
    for key, time_us in zip(keys, times, strict=True):
        if key not in limits:
            limits[key] = ledger.up_to.get(key_hash(ledger.secret, key))
        limit = limits[key]
        mask.append(limit is not None and time_us <= limit)
    return mask


def erased_versions_in(rows: Any, ledger: ErasedKeys) -> int:
    """How many of ``rows`` (an Arrow table with ``item_key`` and ``event_time``) an erasure covers.

    What ``check --read-data`` runs on every file: the proof that no file holds an erased version.
    """
    return sum(erased_versions_mask(rows, ledger))


def without_erased(rows: Any, ledger: ErasedKeys | None) -> Any:
    """``rows`` (an Arrow table or batch with ``item_key`` and ``event_time``) less the versions an
    erasure covers: what a merge or a snapshot writes, so that an erasure recorded before it wrote
    never comes back through it."""
    if ledger is None or rows.num_rows == 0:
        return rows
    mask = erased_versions_mask(rows, ledger)
    if not any(mask):
        return rows
    import pyarrow as pa

    return rows.filter(pa.array([not erased for erased in mask]))
