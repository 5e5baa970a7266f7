"""Reading quarantined records back: what capture kept whole under ``tables/<t>/quarantine/``.

A quarantined record is malformed by definition, so nothing here decodes it: each document is read
as text, and only the fields capture itself wrote (reason, source, quarantined_at, shard_id) and the
record's own ``eventID`` and stream time, when they are plain values, are picked out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from changelog.codec import item_key, kinesis_micros, kinesis_payload
from changelog.errors import DecodeError
from changelog.layout import TABLES, table_names, table_root
from changelog.restorable import QUARANTINE_REMEDY, Loss
from changelog.store import ObjectMissing, Store
from changelog.timefmt import to_micros


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
    def quarantined_at_us(self) -> int | None:
        """When capture kept the record, or None when the document does not say it readably."""
        return _iso_us(self.field("quarantined_at"))

    @property
    def stream_time_us(self) -> int | None:
        """The record's stream time floored to the second, or None when it cannot be read as a real moment."""
        body, through_kinesis = self.change
        if not through_kinesis:
            return _stream_time_us(self.event_time)
        try:  # epoch milliseconds or microseconds, as the payload's precision says
            created = kinesis_micros((body or {}).get("ApproximateCreationDateTime"),
                                     (body or {}).get("ApproximateCreationDateTimePrecision"))
        except DecodeError:
            return None
        return created - created % 1_000_000

    @property
    def change(self) -> tuple[dict[str, Any] | None, bool]:
        """The record's DynamoDB change body (None when it cannot be read), and whether it came through
        Kinesis (the body is then its base64 payload's, whichever capture path kept it)."""
        record = self.record
        if not isinstance(record, dict):
            return None, False
        if "kinesis" not in record:
            body = record.get("dynamodb")
            return (body if isinstance(body, dict) else None), False
        try:
            body = kinesis_payload(record.get("kinesis")).get("dynamodb")
        except (DecodeError, RecursionError):
            return None, True
        return (body if isinstance(body, dict) else None), True

    def is_version_by(self, up_to_us: int | None) -> bool:
        """True when the record may be a version stamped at or before ``up_to_us`` (None: any moment).

        Its stream time says so when readable; a record quarantined by then was created by then; and one
        whose time of quarantine cannot be read may be of any moment. The rule ``forget`` erases quarantined
        records by, capture drops a late one by, and ``check`` proves an erasure with.
        """
        if up_to_us is None:
            return True
        kept_at, created = self.quarantined_at_us, self.stream_time_us
        return kept_at is None or kept_at <= up_to_us or (created is not None and created <= up_to_us)

    @property
    def event_time(self) -> str | None:
        """The record's stream time as it came (text: it may be the impossible value it was kept for)."""
        body, _through_kinesis = self.change
        value = body.get("ApproximateCreationDateTime") if body is not None else None
        return None if value is None or isinstance(value, dict | list) else str(value)


def _iso_us(text: str | None) -> int | None:
    try:
        return to_micros(datetime.fromisoformat(text)) if text else None
    except (ValueError, OverflowError):
        return None


def _stream_time_us(text: str | None) -> int | None:
    """A DynamoDB stream time (epoch seconds, or ISO 8601 as the poller's records carry it), floored to the second."""
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        micros = _iso_us(text)
        return None if micros is None else micros - micros % 1_000_000
    if not 0 <= seconds < 253402300800:  # year 9999
        return None
    return int(seconds) * 1_000_000


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
    body, _through_kinesis = kept.change
    if body is None:
        return None
    try:
        return item_key(_unmarked(body.get("Keys")))
    except (DecodeError, ValueError, TypeError, RecursionError):
        return None


def is_quarantine_path(table: str, path: str) -> bool:
    """True when ``path`` (a store path) is one of ``table``'s quarantine documents."""
    return path.startswith(table_root(table) + "/quarantine/") and path.endswith(".json")


def quarantine_paths(store: Store, table: str | None = None) -> list[str]:
    """Every quarantine document of ``table`` (or of every table), in name order."""
    tables = [table] if table else table_names(store.list(TABLES + "/"))
    return sorted(p for t in tables for p in store.list(table_root(t) + "/quarantine/") if is_quarantine_path(t, p))


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


def quarantine_loss(record: Quarantined) -> Loss:
    """A quarantined record as a loss: from its stream time (when readable) to when it was quarantined.

    The record was created before capture kept it, so ``quarantined_at`` bounds its time from above;
    a record whose own time cannot be read may belong to any earlier moment.
    """
    quarantined_at = record.quarantined_at_us
    created = record.stream_time_us
    end = quarantined_at if quarantined_at is not None else created
    if end is None:
        start: int | None = None
        end = 0
    else:
        start = created if created is not None and created <= end else None
    name = record.path.rsplit("/", 1)[-1]
    reason = record.field("reason") or "no reason recorded"
    return Loss(start, end, f"a quarantined record {name} ({reason})", QUARANTINE_REMEDY, "quarantine")
