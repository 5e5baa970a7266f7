"""Reading quarantined records back: what capture kept whole under ``tables/<t>/quarantine/``.

A quarantined record is malformed by definition, so nothing here decodes it: each document is read
as text, and only the fields capture itself wrote (reason, source, quarantined_at, shard_id) and the
record's own ``eventID`` and stream time, when they are plain values, are picked out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from changelog.codec import item_key, kinesis_payload
from changelog.errors import DecodeError
from changelog.layout import TABLES, table_names, table_root
from changelog.store import ObjectMissing, Store


@dataclass(frozen=True)
class Quarantined:
    """One quarantine document; ``document`` is None when its text is not a JSON object."""

    path: str
    table_name: str
    text: str
    document: dict[str, Any] | None

    def field(self, name: str) -> str | None:
        value = self.document.get(name) if self.document else None
        return value if isinstance(value, str) else None

    @property
    def record(self) -> Any:
        return self.document.get("record") if self.document else None

    @property
    def event_id(self) -> str | None:
        value = self.record.get("eventID") if isinstance(self.record, dict) else None
        return value if isinstance(value, str) else None

    @property
    def event_time(self) -> str | None:
        """The record's stream time as it came (text: it may be the impossible value it was kept for)."""
        body = self.record.get("dynamodb") if isinstance(self.record, dict) else None
        value = body.get("ApproximateCreationDateTime") if isinstance(body, dict) else None
        return None if value is None or isinstance(value, dict | list) else str(value)


def _unmarked(value: Any) -> Any:
    """A GetRecords key value as the Lambda form carries it: capture kept its bytes as a base64 marker."""
    if isinstance(value, dict) and set(value) == {"__bytes_base64__"}:
        return value["__bytes_base64__"]
    if isinstance(value, dict):
        return {name: _unmarked(inner) for name, inner in value.items()}
    return value


def quarantined_item_key(kept: Quarantined) -> str | None:
    """The canonical key of the item a quarantined record is a change of, when its key attributes can be read
    exactly (``Keys`` of its DynamoDB body, or of a Kinesis record's payload); None otherwise.

    Only the keys are read, never the images: what made the record fail is usually elsewhere. ``forget``
    uses this to find the quarantined copies of an erased item's versions.
    """
    record = kept.record
    if not isinstance(record, dict):
        return None
    try:
        body = kinesis_payload(record.get("kinesis")).get("dynamodb") if kept.field("source") == "lambda-kinesis" \
            else record.get("dynamodb")
        if not isinstance(body, dict):
            return None
        return item_key(_unmarked(body.get("Keys")))
    except (DecodeError, ValueError, TypeError, RecursionError):
        return None


def quarantine_paths(store: Store, table: str | None = None) -> list[str]:
    """Every quarantine document of ``table`` (or of every table), in name order."""
    tables = [table] if table else table_names(store.list(TABLES + "/"))
    return sorted(p for t in tables for p in store.list(table_root(t) + "/quarantine/") if p.endswith(".json"))


def read_quarantined(store: Store, path: str) -> Quarantined | None:
    """One document as text (invalid UTF-8 replaced, never refused); None when it is already gone."""
    try:
        data = store.read(path)
    except ObjectMissing:
        return None
    text = data.decode("utf-8", errors="replace")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # nested past the recursion limit: kept as text, never decoded
        document = None
    return Quarantined(path, path.split("/")[1], text, document if isinstance(document, dict) else None)


def list_quarantined(store: Store, table: str | None = None) -> list[Quarantined]:
    """Every quarantined record still in the store."""
    found = (read_quarantined(store, path) for path in quarantine_paths(store, table))
    return [record for record in found if record is not None]
