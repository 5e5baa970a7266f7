"""Snapshots: the table at one moment as Parquet parts plus a manifest that is written last.

A snapshot row keeps the version (``event_time``, ``sequence_number``) it came from, and keys whose
last change is a REMOVE stay as tombstones, so a change file that lands late can still be merged
exactly: the newer version wins, whichever side it is on. The manifest is published with a
conditional write; parts are named by writer, so a losing writer never touches the winner's parts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from changelog.errors import StoreError
from changelog.layout import snapshots_root
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
        pa.field("doc", pa.string()),
    ]
)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """What makes a snapshot visible. ``kind`` is ``compaction``, ``export`` or ``scan``.

    ``consumed_files`` are the change files folded in; ``restorable_from_us`` is set on bootstrap
    snapshots: the moment the copy became consistent (no restore before it).
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

    @property
    def snapshot_time(self) -> datetime:
        """The moment the snapshot represents."""
        return from_micros(self.snapshot_time_us)

    def to_json(self) -> bytes:
        """The manifest's stored form."""
        body = {
            "table_name": self.table_name,
            "snapshot_time_us": self.snapshot_time_us,
            "snapshot_time": self.snapshot_time.isoformat(),
            "kind": self.kind,
            "parts": list(self.parts),
            "consumed_files": list(self.consumed_files),
            "items": self.items,
            "tombstones": self.tombstones,
            "base_snapshot": self.base_snapshot,
            "restorable_from_us": self.restorable_from_us,
            "created_at": self.created_at,
            "extra": self.extra,
        }
        return json.dumps(body, indent=1).encode("utf-8")

    @staticmethod
    def from_json(data: bytes) -> Manifest:
        """Parse a stored manifest."""
        body = json.loads(data)
        return Manifest(
            table_name=body["table_name"],
            snapshot_time_us=int(body["snapshot_time_us"]),
            kind=body["kind"],
            parts=tuple(body["parts"]),
            consumed_files=tuple(body.get("consumed_files", ())),
            items=int(body.get("items", 0)),
            tombstones=int(body.get("tombstones", 0)),
            base_snapshot=body.get("base_snapshot"),
            restorable_from_us=body.get("restorable_from_us"),
            created_at=body.get("created_at", ""),
            extra=dict(body.get("extra") or {}),
        )


def list_manifests(store: Store, table: str) -> list[tuple[str, Manifest]]:
    """Published snapshots of a table as (manifest path, manifest), oldest first.

    Directories without a manifest (a crashed or losing writer) are invisible here.
    """
    found = []
    for path in store.list(snapshots_root(table) + "/"):
        if path.endswith("/" + MANIFEST):
            try:
                found.append((path, Manifest.from_json(store.read(path))))
            except (ObjectMissing, ValueError, KeyError) as exc:
                raise StoreError(f"snapshot manifest {path} is unreadable: {exc}") from None
    return sorted(found, key=lambda entry: entry[1].snapshot_time_us)
