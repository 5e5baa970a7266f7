"""Snapshots: the table at one moment as Parquet parts plus a manifest that is written last.

A snapshot row keeps the version (``event_time``, ``sequence_number``) it came from, and keys whose
last change is a REMOVE stay as tombstones, so a change file that lands late can still be merged
exactly: the newer version wins, whichever side it is on. The manifest is published with a
conditional write; parts are named by writer, so a losing writer never touches the winner's parts.

Integrity: a manifest lists each part with its size, sha256 and row count (items + tombstones must
equal the rows), and is hash-chained: it carries a ``generation`` (publication order, not snapshot
time: ``compact --at`` can publish an older moment later) and the sha256 of the manifest published
before it. A manifest removed on purpose leaves a removal record (written before the delete) with
its digest, so a manifest deleted or rewritten by hand in the middle of history breaks the chain and
every reader refuses the store. Two writers racing may both extend the same predecessor (a fork);
that is not damage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from changelog.damage import damaged, micros, parse_json_object, strict_json
from changelog.formats import FORMAT_VERSION, MANIFEST_KEY, check_format
from changelog.layout import snapshot_removal_path, snapshot_removals_root, snapshots_root
from changelog.store import ObjectMissing, Store
from changelog.timefmt import from_micros

SNAPSHOT_SCHEMA = pa.schema(
    [
        pa.field("table_name", pa.string(), nullable=False),
        pa.field("item_key", pa.string(), nullable=False),
        pa.field("keys", pa.string(), nullable=False),
        pa.field("event_name", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("sequence_number", pa.string(), nullable=False),
        pa.field("image", pa.string()),
    ]
)  # format 1 parts also held ``doc`` (the image as plain JSON), now derived (changelog.docs)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PartSum:
    """One part as its manifest records it: what a reader checks the part's bytes against."""

    name: str
    size: int
    sha256: str
    rows: int


@dataclass(frozen=True)
class Manifest:
    """What makes a snapshot visible. ``kind`` is ``compaction``, ``export`` or ``scan``.

    ``consumed_files`` are the change files folded in; ``restorable_from_us`` is set on bootstrap
    snapshots: the moment the copy became consistent (no restore before it). ``part_sums`` lists
    every part's size, sha256 and rows; ``generation`` and ``previous_sha256`` chain the manifest to
    the one published before it (set by ``publish``; 0 and None until then).
    """

    table_name: str
    snapshot_time_us: int
    kind: str
    parts: tuple[str, ...]
    consumed_files: tuple[str, ...] = ()
    items: int = 0
    tombstones: int = 0
    base_snapshot: str | None = None
    restorable_from_us: int | None = None
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    part_sums: tuple[PartSum, ...] = ()
    generation: int = 0
    previous_sha256: str | None = None
    format_version: int = FORMAT_VERSION

    @property
    def snapshot_time(self) -> datetime:
        """The moment the snapshot represents."""
        return from_micros(self.snapshot_time_us)

    def part_sum(self, name: str) -> PartSum | None:
        """The recorded checksum of part ``name``, or None when the manifest does not list it."""
        return next((entry for entry in self.part_sums if entry.name == name), None)

    def to_json(self) -> bytes:
        """The manifest's stored form: canonical JSON carrying the sha256 of its own content.

        Canonical (sorted keys, fixed layout, ASCII) so a reader can tell that not one byte changed,
        even in the newest manifest, which no successor vouches for yet.
        """
        sums = {entry.name: entry for entry in self.part_sums}
        body = {
            "table_name": self.table_name,
            "snapshot_time_us": self.snapshot_time_us,
            "snapshot_time": self.snapshot_time.isoformat(),
            "kind": self.kind,
            "generation": self.generation,
            "previous_sha256": self.previous_sha256,
            "parts": [
                {"name": name, "size": sums[name].size, "sha256": sums[name].sha256, "rows": sums[name].rows}
                for name in self.parts
            ],
            "consumed_files": list(self.consumed_files),
            "items": self.items,
            "tombstones": self.tombstones,
            "base_snapshot": self.base_snapshot,
            "restorable_from_us": self.restorable_from_us,
            "created_at": self.created_at,
            "extra": self.extra,
            MANIFEST_KEY: self.format_version,
        }
        return _canonical({**body, "self_sha256": sha256_hex(_canonical(body))})

    @staticmethod
    def from_json(data: bytes, *, draft: bool = False) -> Manifest:
        """Parse a stored manifest; ValueError (or KeyError, TypeError) when it is not a sound one.

        ``draft``: a manifest written but not yet chained (generation 0), as a Spark job leaves it
        for the compactor to publish.
        """
        body = strict_json(data)  # Infinity or 1e400 would pass a checksum its forger computed
        if not isinstance(body, dict):
            raise TypeError("a manifest is a JSON object")
        claimed = body.pop("self_sha256")
        if sha256_hex(_canonical(body)) != claimed:
            raise ValueError("its content does not match its own sha256: it was altered")
        if _canonical({**body, "self_sha256": claimed}) != data:
            raise ValueError("its bytes are not the canonical form it was written in: it was altered")
        sums = tuple(
            PartSum(str(entry["name"]), int(entry["size"]), str(entry["sha256"]), int(entry["rows"]))
            for entry in body["parts"]
        )
        manifest = Manifest(
            table_name=str(body["table_name"]),
            snapshot_time_us=micros(body["snapshot_time_us"], "snapshot_time_us"),
            kind=str(body["kind"]),
            parts=tuple(entry.name for entry in sums),
            consumed_files=tuple(str(p) for p in body.get("consumed_files", ())),
            items=int(body.get("items", 0)),
            tombstones=int(body.get("tombstones", 0)),
            base_snapshot=body.get("base_snapshot"),
            restorable_from_us=(None if body.get("restorable_from_us") is None
                                else micros(body["restorable_from_us"], "restorable_from_us")),
            created_at=str(body.get("created_at", "")),
            extra=dict(body.get("extra") or {}),
            part_sums=sums,
            generation=int(body["generation"]),
            previous_sha256=body["previous_sha256"],
            format_version=int(body.get(MANIFEST_KEY, 1)),
        )
        manifest.check_counts(published=not draft)
        return manifest

    def check_counts(self, *, published: bool = True) -> None:
        """Refuse a manifest whose parts' rows do not add up to its items and tombstones (ValueError)."""
        if published and self.generation < 1:
            raise ValueError(f"generation {self.generation} is not a published one")
        if self.previous_sha256 is not None and not _is_sha256(self.previous_sha256):
            raise ValueError("previous_sha256 is not a sha256")
        if len({entry.name for entry in self.part_sums}) != len(self.part_sums):
            raise ValueError("a part is listed twice")
        for entry in self.part_sums:
            if "/" in entry.name or not entry.name.endswith(".parquet") or not _is_sha256(entry.sha256):
                raise ValueError(f"part entry {entry.name!r} is malformed")
        rows = sum(entry.rows for entry in self.part_sums)
        if rows != self.items + self.tombstones:
            raise ValueError(f"its parts hold {rows} rows but it counts {self.items} items and "
                             f"{self.tombstones} tombstones")


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, indent=1, ensure_ascii=True).encode("ascii")


def part_sum_of(name: str, data: bytes, rows: int) -> PartSum:
    """The manifest entry of a part written as ``data`` holding ``rows`` rows."""
    return PartSum(name, len(data), sha256_hex(data), rows)


def _is_sha256(text: object) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def sha256_hex(data: bytes) -> str:
    """The full sha256 of stored bytes, as hex."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class StoredManifest:
    """A published manifest as read: where, what, and the sha256 of its stored bytes."""

    path: str
    manifest: Manifest
    sha256: str


@dataclass(frozen=True)
class Removal:
    """The record a deliberate removal of a published manifest leaves (written before the delete)."""

    path: str
    manifest_path: str
    sha256: str
    generation: int
    previous_sha256: str | None
    snapshot_time_us: int
    reason: str
    removed_at: str


@dataclass(frozen=True)
class ChainProblem:
    """A break in the manifest chain: which object, what is wrong, around which snapshot time."""

    path: str
    problem: str
    snapshot_time_us: int | None


def read_manifest(store: Store, path: str) -> StoredManifest:
    """Read and parse one manifest; DamagedStore (one line naming it) when it is empty or unsound."""
    try:
        data = store.read(path)
    except ObjectMissing:
        raise damaged(store, path, "is listed but cannot be read") from None
    body = parse_json_object(store, path, data)
    version = body.get(MANIFEST_KEY, 1)
    check_format(store, path, version if isinstance(version, int) else FORMAT_VERSION + 1)
    try:
        manifest = Manifest.from_json(data)
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"is not a sound snapshot manifest ({type(exc).__name__}: {exc})"
        if isinstance(exc, KeyError):
            problem = f"is not a sound snapshot manifest (it lacks {exc}; written by an older version?)"
        raise damaged(store, path, problem) from None
    parts = path.split("/")
    if parts[1:2] != [manifest.table_name] or parts[-2:-1] != [f"{manifest.snapshot_time:%Y%m%dT%H%M%SZ}"]:
        raise damaged(store, path, f"describes a snapshot of {manifest.table_name!r} at "
                      f"{manifest.snapshot_time.isoformat()}, not the one its place in the store says: moved")
    return StoredManifest(path, manifest, sha256_hex(data))


def read_removals(store: Store, table: str) -> list[Removal]:
    """Every removal record of the table."""
    found = []
    for path in store.list(snapshot_removals_root(table)):
        body = parse_json_object(store, path, store.read(path))
        try:
            found.append(Removal(path, str(body["manifest"]), str(body["sha256"]), int(body["generation"]),
                                 body.get("previous_sha256"), micros(body["snapshot_time_us"], "snapshot_time_us"),
                                 str(body.get("reason", "")), str(body.get("removed_at", ""))))
        except (KeyError, TypeError, ValueError) as exc:
            raise damaged(store, path, f"is not a sound removal record ({exc})") from None
    return found


def write_removal(store: Store, table: str, manifest_path: str, reason: str) -> None:
    """Record, before deleting it, that a published manifest is removed on purpose (and why)."""
    stored = read_manifest(store, manifest_path)
    body = {
        "manifest": manifest_path,
        "sha256": stored.sha256,
        "generation": stored.manifest.generation,
        "previous_sha256": stored.manifest.previous_sha256,
        "snapshot_time_us": stored.manifest.snapshot_time_us,
        "reason": reason,
        "removed_at": datetime.now(UTC).isoformat(),
    }
    path = snapshot_removal_path(table, stored.manifest.snapshot_time, stored.sha256)
    store.write(path, json.dumps(body, indent=1).encode("utf-8"))


def chain_problems(manifests: list[StoredManifest], removals: list[Removal]) -> list[ChainProblem]:
    """Every break in the chain of manifests and removal records (empty when the history is intact).

    Each link must name a predecessor of generation ``g - 1`` whose digest is known, either a
    manifest's stored bytes or a removal record. A missing one was deleted by hand; a present one with
    another digest was rewritten. The newest manifest has no successor to vouch for it: its parts'
    checksums and row counts are still checked.
    """
    links: list[tuple[str, int, str | None, int]] = [
        (m.path, m.manifest.generation, m.manifest.previous_sha256, m.manifest.snapshot_time_us) for m in manifests
    ] + [(r.path, r.generation, r.previous_sha256, r.snapshot_time_us) for r in removals]
    known = {m.sha256 for m in manifests} | {r.sha256 for r in removals}
    by_generation: dict[int, list[str]] = {}
    for m in manifests:
        by_generation.setdefault(m.manifest.generation, []).append(m.path)
    found = []
    for path, generation, previous, at_us in links:
        if generation == 1:
            if previous is not None:
                found.append(ChainProblem(path, "is generation 1 but names a predecessor", at_us))
            continue
        if previous is None:
            found.append(ChainProblem(path, f"is generation {generation} but names no predecessor", at_us))
        elif previous not in known:
            same = by_generation.get(generation - 1, [])
            if same:
                problem = (f"names a predecessor (generation {generation - 1}, sha256 {previous[:16]}) that "
                           f"{', '.join(same)} does not match: that manifest was rewritten")
            else:
                problem = (f"names a predecessor (generation {generation - 1}, sha256 {previous[:16]}) that is "
                           "neither in the store nor recorded as removed: a manifest was deleted by hand")
            found.append(ChainProblem(path, problem, at_us))
    return found


def part_paths(manifest_path: str, manifest: Manifest) -> list[str]:
    """The store paths of the parts a manifest lists (they lie beside it)."""
    directory = manifest_path.rsplit("/", 1)[0]
    return [f"{directory}/{part}" for part in manifest.parts]


def read_manifests(store: Store, table: str) -> list[StoredManifest]:
    """Published snapshots of a table, oldest first, after checking every manifest and the chain.

    Checks each manifest (canonical bytes, own checksum, counts, that it belongs where it lies), the
    chain, and that every part it lists is present with its recorded size (one listing, no reads:
    a missing or truncated part is refused even by ``status``). Raises DamagedStore naming the first
    problem. Directories without a manifest (a crashed or losing writer) are invisible here.
    """
    sizes = store.sizes(snapshots_root(table) + "/")
    found = [read_manifest(store, path) for path in sorted(sizes) if path.endswith("/" + MANIFEST)]
    for stored in found:
        directory = stored.path.rsplit("/", 1)[0]
        manifest = stored.manifest
        for entry in manifest.part_sums:
            size = sizes.get(f"{directory}/{entry.name}")
            if size is None:
                raise damaged(store, f"{directory}/{entry.name}", "is listed by its snapshot's manifest but missing")
            if size != entry.size:
                raise damaged(store, f"{directory}/{entry.name}",
                              f"has {size} bytes, its manifest records {entry.size}: truncated or swapped")
    problems = chain_problems(found, read_removals(store, table))
    if problems:
        raise damaged(store, problems[0].path, problems[0].problem)
    return sorted(found, key=lambda entry: entry.manifest.snapshot_time_us)


def list_manifests(store: Store, table: str) -> list[tuple[str, Manifest]]:
    """Published snapshots of a table as (manifest path, manifest), oldest first (chain checked)."""
    return [(entry.path, entry.manifest) for entry in read_manifests(store, table)]


def chain_head(store: Store, table: str) -> tuple[int, str] | None:
    """(generation, sha256) a newly published manifest chains to: the newest link, removed or not."""
    links = [(m.manifest.generation, m.sha256) for m in read_manifests(store, table)]
    links += [(r.generation, r.sha256) for r in read_removals(store, table)]
    return max(links) if links else None

