"""Re-capture quarantined records once the cause is fixed (a corrected record, a fixed decoder).

Each quarantine document is decoded again by the decoder of the path that kept it (``source``), and
every record that now passes is stored through ``write_change_files`` exactly as capture stores it:
file names derive from the rows, and a record whose ``eventID`` was already captured is a copy that
every reader drops (``changelog.record.first_copies``), never a second winner. A document is deleted
only after the change file holding its record is published (write first, remove last); a record
that still fails stays where it is, with the reason it fails now.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from changelog.changefile import write_change_files
from changelog.codec import decode_getrecords_record, decode_kinesis_record, decode_lambda_record
from changelog.errors import DecodeError
from changelog.forgotten import erased_mask
from changelog.layout import meta_path
from changelog.ledger import record_dropped
from changelog.meta import meta_from_keys, write_meta
from changelog.quarantine import Quarantined, list_quarantined
from changelog.record import ChangeRow
from changelog.store import Store


@dataclass(frozen=True)
class Requeued:
    """What became of one quarantined record: ``reason`` is None when it was (or would be) captured."""

    path: str
    table_name: str
    event_id: str | None
    reason: str | None
    erased: bool = False  # a record of an erased item: dropped, never stored (changelog.forgotten)


@dataclass(frozen=True)
class RequeueSummary:
    outcomes: tuple[Requeued, ...]
    files: tuple[str, ...]
    dry_run: bool

    @property
    def captured(self) -> int:
        return sum(1 for outcome in self.outcomes if outcome.reason is None and not outcome.erased)

    @property
    def still_failing(self) -> int:
        return len(self.outcomes) - self.captured - self.erased

    @property
    def erased(self) -> int:
        return sum(1 for outcome in self.outcomes if outcome.erased)


def _from_jsonable(value: Any) -> Any:
    """Undo capture's ``_jsonable`` for a GetRecords record: bytes back from their base64 marker."""
    if isinstance(value, dict):
        if set(value) == {"__bytes_base64__"} and isinstance(value["__bytes_base64__"], str):
            return base64.b64decode(value["__bytes_base64__"])
        return {key: _from_jsonable(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_from_jsonable(inner) for inner in value]
    return value


def _getrecords(kept: Quarantined) -> ChangeRow:
    shard = kept.field("shard_id")
    if shard is None:
        raise DecodeError("kept without its shard id (quarantined by an older version): it cannot be re-read "
                          "exactly; inspect it with the sql view quarantine")
    record = _from_jsonable(kept.record)
    body: dict[str, Any] = record.get("dynamodb") if isinstance(record.get("dynamodb"), dict) else {}
    created = body.get("ApproximateCreationDateTime")
    if isinstance(created, str):  # capture kept boto3's datetime as ISO text
        try:
            body["ApproximateCreationDateTime"] = datetime.fromisoformat(created)
        except ValueError:
            raise DecodeError(f"ApproximateCreationDateTime {created!r} is not a time") from None
    return decode_getrecords_record(record, kept.table_name, shard)


_DECODERS: dict[str, Callable[[Quarantined], ChangeRow]] = {
    "lambda-dynamodb": lambda kept: decode_lambda_record(kept.record),
    "lambda-kinesis": lambda kept: decode_kinesis_record(kept.record),
    "poller": _getrecords,
    # recover re-reads a DynamoDB stream (GetRecords form) or a Kinesis one (Lambda's Kinesis form).
    "recover": lambda kept: decode_kinesis_record(kept.record) if isinstance(kept.record, dict)
    and "kinesis" in kept.record else _getrecords(kept),
}


def decode_quarantined(kept: Quarantined) -> ChangeRow:
    """Decode a kept record as the capture path that kept it would; DecodeError when it still fails."""
    if kept.document is None:
        raise DecodeError("the quarantine document is not a JSON object")
    decoder = _DECODERS.get(kept.field("source") or "")
    if decoder is None:
        raise DecodeError(f"kept by an unknown capture path {kept.field('source')!r}")
    if not isinstance(kept.record, dict):
        raise DecodeError("the kept record is not an object")
    return decoder(kept)


def requeue(store: Store, table: str | None = None, *, dry_run: bool = False) -> RequeueSummary:
    """Re-capture every quarantined record of ``table`` (or all) that now decodes; remove only those."""
    failed: dict[str, str] = {}
    passed: list[tuple[Quarantined, ChangeRow]] = []
    listed = list_quarantined(store, table)
    for kept in listed:
        try:
            row = decode_quarantined(kept)
            if row.table_name != kept.table_name:
                # A record is put back only into the table whose quarantine holds it: a document
                # planted under one table must not write changes into another.
                raise DecodeError(f"the record is a change of table {row.table_name!r}, kept under "
                                  f"{kept.table_name!r}: move it to that table's quarantine to requeue it")
        except DecodeError as exc:
            failed[kept.path] = str(exc)
            continue
        passed.append((kept, row))
    # A kept record of an erased item is dropped like a late one, and its quarantine copy (which holds
    # the erased values) is removed with the others.
    mask = erased_mask(store, [row for _, row in passed])
    erased = {kept.path for (kept, _), dropped in zip(passed, mask, strict=True) if dropped}
    rows = {kept.path: row for kept, row in passed}
    outcomes = [Requeued(kept.path, kept.table_name, kept.event_id, failed[kept.path]) if kept.path in failed
                else Requeued(kept.path, rows[kept.path].table_name, rows[kept.path].event_id, None,
                              kept.path in erased)
                for kept in listed]
    files: list[str] = []
    if passed and not dry_run:
        stored = [row for kept, row in passed if kept.path not in erased]
        files = write_change_files(store, stored) if stored else []  # raises before anything is removed
        for row in stored:
            if not store.exists(meta_path(row.table_name)):
                write_meta(store, meta_from_keys(row.table_name, json.loads(row.keys)))
        for kept, _ in passed:
            record_dropped(store, kept.table_name, [kept.path])  # before removing: the ledger tells it from a loss
            store.delete(kept.path)
    return RequeueSummary(tuple(outcomes), tuple(files), dry_run)
