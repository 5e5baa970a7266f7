"""One batch of stream records in, change files and quarantined records out; shared by Lambda and poller."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from changelog.changefile import write_change_files
from changelog.codec import decode_kinesis_record, kinesis_payload, kinesis_table, table_from_arn
from changelog.errors import DecodeError, StreamConfigError
from changelog.forgotten import drop_erased, erased_keys
from changelog.layout import HOUR_US, digest, quarantine_path
from changelog.ledger import record_kept
from changelog.quarantine import Quarantined, quarantine_loss
from changelog.record import ChangeRow, monotone_item_times
from changelog.store import Store

Decoder = Callable[[Any], ChangeRow]


@dataclass(frozen=True)
class CaptureResult:
    """What one batch became. ``records`` = ``captured`` + ``quarantined`` + ``erased``, always."""

    records: int
    captured: int
    quarantined: int
    size_bytes: int
    files: tuple[str, ...]
    oldest_event_us: int | None
    newest_event_us: int | None
    # (table, keys JSON) of one captured row of each table, to describe the tables (a Kinesis stream may carry several)
    sample_keys: tuple[tuple[str, bytes], ...]
    erased: int = 0  # records of an erased item, stamped at or before its erasure: dropped (changelog.forgotten)
    tables: tuple[str, ...] = ()  # the tables of the captured rows (a Kinesis stream may carry several)


def _first_keys(rows: Sequence[ChangeRow]) -> dict[str, bytes]:
    """Each table's first row's keys, in the order the tables first come."""
    first: dict[str, bytes] = {}
    for row in rows:
        first.setdefault(row.table_name, row.keys)
    return first


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _jsonable(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(inner) for inner in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return {"__bytes_base64__": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _table_of(raw: Any, fallback: str | None) -> str:
    """The table a kept record belongs to, read from the record where it says (the ARN of a DynamoDB
    stream record, the payload of a Kinesis one: one Kinesis stream can carry several tables)."""
    if isinstance(raw, dict):
        arn = raw.get("eventSourceARN")
        if isinstance(arn, str) and ":table/" in arn:
            try:
                return table_from_arn(arn)
            except DecodeError:  # not a valid table name: never a path in the store
                pass
        if "kinesis" in raw:
            with contextlib.suppress(DecodeError):  # unreadable: kept under the fallback
                return kinesis_table(kinesis_payload(raw["kinesis"]))
    return fallback or "_unknown"


def quarantine(store: Store, raw: Any, reason: str, source: str, table_hint: str | None,
               shard_id: str | None = None) -> str | None:
    """Keep a record that could not be decoded, whole, under its table's quarantine; returns the path, or
    None when the record is a version an erasure removed (``forget``): dropped, as its decoded rows would be.

    The name is a digest of the record only, so a retried batch rewrites the same object whenever
    it is retried. A GetRecords record does not name its shard, so the shard is kept beside it
    (``requeue`` needs it to decode the record as capture would).
    """
    body = _jsonable(raw)
    # Text that is not valid Unicode (a lone surrogate) cannot be UTF-8: such a record is kept with
    # \u escapes instead of failing the whole batch.
    readable = _encodable(body)
    text = json.dumps(body, sort_keys=True, ensure_ascii=not readable)
    now = datetime.now(UTC)
    table = _table_of(raw, table_hint)
    path = quarantine_path(table, digest([text]))
    document = {"reason": reason, "source": source, "quarantined_at": now.isoformat(), "record": body}
    if shard_id is not None:
        document["shard_id"] = shard_id
    data = json.dumps(document, ensure_ascii=not readable, indent=1)
    kept = Quarantined(path, table, data, document)
    ledger = erased_keys(store, table)
    if ledger is not None and ledger.holds_erased(kept):
        return None
    store.write(path, data.encode("utf-8"))
    # Recorded once written: readers then notice the record going missing, as they notice a change file.
    loss = quarantine_loss(kept)
    record_kept(store, table, path, loss.start_us, loss.end_us)
    return path


def _encodable(body: Any) -> bool:
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def capture_batch(
    store: Store,
    raw_records: Sequence[Any],
    decode: Decoder,
    *,
    source: str,
    table_hint: str | None = None,
    shard_id: str | None = None,
    stream_order: bool | None = None,
) -> CaptureResult:
    """Decode a batch and store it: change files first, then quarantine; any failed write raises.

    A record that cannot be decoded is quarantined whole and counted; the rest goes on. A
    StreamConfigError (no images on the stream) is not a bad record and propagates to fail loudly.
    ``stream_order`` says the batch is one DynamoDB stream shard's, in which sequence order is each
    item's order of changes (``record.monotone_item_times``); by default every decoder but the
    Kinesis one's.
    """
    rows: list[ChangeRow] = []
    rejected: list[tuple[Any, str]] = []
    for raw in raw_records:
        try:
            rows.append(decode(raw))
        except DecodeError as exc:
            rejected.append((raw, str(exc)))
        except StreamConfigError:
            raise
        except Exception as exc:  # a record the decoder did not foresee is still one record
            # Failing the batch would fail it on every retry and block the shard: the record is kept
            # whole (named by the kind of failure only: its text may quote the item) and the rest goes on.
            rejected.append((raw, f"the record could not be decoded ({type(exc).__name__})"))
    lifted: frozenset[str] = frozenset()
    if stream_order if stream_order is not None else decode is not decode_kinesis_record:
        stamps = {row.event_id: row.event_time_us for row in rows}
        rows = monotone_item_times(rows)
        # A row lifted into a later hour than its own stamp's is there, and a copy captured without
        # its predecessor is in its own hour: its file says so, for readers that trust a merged hour
        # to hold each record once (footer.LIFTED).
        lifted = frozenset(row.event_id for row in rows
                           if row.event_time_us // HOUR_US != stamps[row.event_id] // HOUR_US)
    hint = table_hint or (rows[0].table_name if rows else None)
    # A late, re-sent or recovered record of an erased item must not bring it back: dropped, counted.
    rows, erased = drop_erased(store, rows) if rows else (rows, 0)
    files = write_change_files(store, rows, lifted) if rows else []
    kept = [raw for raw, reason in rejected if quarantine(store, raw, reason, source, hint, shard_id) is not None]
    times = [row.event_time_us for row in rows]
    return CaptureResult(
        records=len(raw_records),
        captured=len(rows),
        quarantined=len(kept),
        size_bytes=sum(row.size_bytes for row in rows),
        files=tuple(files),
        oldest_event_us=min(times) if times else None,
        newest_event_us=max(times) if times else None,
        sample_keys=tuple(_first_keys(rows).items()),
        erased=erased + len(rejected) - len(kept),
        tables=tuple(sorted({row.table_name for row in rows})),
    )


def lag_seconds(result: CaptureResult, now: float | None = None) -> float | None:
    """Seconds between now and the oldest change of the batch (how far capture runs behind)."""
    if result.oldest_event_us is None:
        return None
    return max(0.0, (now if now is not None else time.time()) - result.oldest_event_us / 1_000_000)
