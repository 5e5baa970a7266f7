"""Capture throughput: Lambda stream records through decode + encode + Parquet, against a naive baseline.

Run ``python -m bench.consumer [--records N] [--item-kb 1|10] [--profile]``. The real path is what
the Lambda handler runs: ``capture_batch`` with ``decode_lambda_record`` over batches of 1,000
records (Lambda's largest batch for a DynamoDB stream) into a local temporary store. The baseline
is what a hand-rolled consumer typically does: boto3's ``TypeDeserializer`` per record, ``json.dumps``
row at a time, and a Parquet file from a list of Python dicts. The anchor is
what the Lambda runtime itself does with the same records before the handler runs: ``json.loads``
of each batch's event bytes; the handler's CPU per record should not exceed it.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import json
import pstats
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from boto3.dynamodb.types import Binary, TypeDeserializer

from changelog.changefile import write_change_files
from changelog.codec import base64_to_binaries, decode_lambda_record, pad_sequence, table_from_arn
from changelog.record import ChangeRow
from changelog.store import LocalStore
from stream_consumer.capture import capture_batch

BATCH = 1_000
TABLE = "orders"
ARN = f"arn:aws:dynamodb:us-east-1:123456789012:table/{TABLE}/stream/2024-01-01T00:00:00.000"
START = 1_750_000_000  # epoch seconds of the first record
WORDS = ("shipped", "pending", "naïve", "ключ", "paid", "returned", "express", "ground", "gift", "🎁")


@dataclass(frozen=True)
class Figures:
    """One run of one path."""

    name: str
    records: int
    input_bytes: int
    seconds: float

    @property
    def records_per_second(self) -> float:
        """Records per second."""
        return self.records / self.seconds

    @property
    def mb_per_second(self) -> float:
        """Input megabytes (the event JSON as Lambda hands it over) per second."""
        return self.input_bytes / self.seconds / 1e6


def _size(value: Any) -> int:
    """Bytes of the UTF-8 JSON text, as Lambda hands the event over."""
    return len(json.dumps(value, ensure_ascii=False).encode())


def _text(rng: random.Random, length: int) -> str:
    words = []
    size = 0
    while size < length:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word.encode()) + 1
    return " ".join(words)[:length]


def make_item(rng: random.Random, index: int) -> dict[str, Any]:
    """A DynamoDB-JSON item: strings, numbers, a map, a list of maps, sets, a binary, BOOL and NULL."""
    lines = [
        {"M": {"sku": {"S": f"SKU-{rng.randrange(10**6):06d}"}, "qty": {"N": str(rng.randrange(1, 9))},
               "price": {"N": f"{rng.randrange(100, 99999) / 100:.2f}"}}}
        for _ in range(2)
    ]
    return {
        "pk": {"S": f"customer#{index % 5000:05d}"},
        "sk": {"N": str(index)},
        "status": {"S": rng.choice(WORDS)},
        "total": {"N": f"{rng.randrange(100, 10**7) / 100:.2f}"},
        "created": {"N": str(START + index)},
        "express": {"BOOL": rng.random() < 0.5},
        "coupon": {"NULL": True},
        "tags": {"SS": sorted({rng.choice(WORDS) for _ in range(3)})},
        "ratings": {"NS": sorted({str(rng.randrange(1, 6)) for _ in range(3)})},
        "checksum": {"B": base64.b64encode(rng.randbytes(12)).decode()},
        "address": {"M": {"city": {"S": rng.choice(WORDS)}, "zip": {"S": f"{rng.randrange(10**5):05d}"}}},
        "lines": {"L": lines},
    }


def make_records(count: int, item_kb: int, seed: int = 7) -> list[dict[str, Any]]:
    """Lambda DynamoDB Streams records of about ``item_kb`` KB each (as delivered, images included).

    The mix: 40% INSERT, 50% MODIFY (both images, so each is about half the record), 10% REMOVE.
    """
    rng = random.Random(seed)
    records = []
    for index in range(count):
        item = make_item(rng, index)
        keys = {"pk": item["pk"], "sk": item["sk"]}
        roll = rng.random()
        name = "INSERT" if roll < 0.4 else "MODIFY" if roll < 0.9 else "REMOVE"
        images = 2 if name == "MODIFY" else 1
        body: dict[str, Any] = {
            "ApproximateCreationDateTime": START + index // 100,
            "Keys": keys,
            "SequenceNumber": str(10**20 + index),
            "SizeBytes": 0,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        record = {
            "eventID": f"{index:032x}",
            "eventName": name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": body,
            "eventSourceARN": ARN,
        }
        bare = _size(record) + images * _size(item)
        room = (item_kb * 1024 - bare) // images - len(', "note": {"S": ""}')
        if room > 0:
            item["note"] = {"S": _text(rng, room)}
        if name != "REMOVE":
            body["NewImage"] = item
        if name == "MODIFY":
            body["OldImage"] = {**item, "status": {"S": "pending"}}
        if name == "REMOVE":
            body["OldImage"] = item
        body["SizeBytes"] = _size(item)
        records.append(record)
    return records


def _batches(records: Sequence[dict[str, Any]]) -> list[Sequence[dict[str, Any]]]:
    return [records[start:start + BATCH] for start in range(0, len(records), BATCH)]


def run_capture(records: Sequence[dict[str, Any]], root: Path) -> int:
    """The handler's path: decode, validate, encode and write Parquet per batch; returns rows captured."""
    store = LocalStore(root)
    captured = 0
    for batch in _batches(records):
        captured += capture_batch(store, batch, decode_lambda_record, source="lambda-dynamodb").captured
    return captured


def run_unchecked(records: Sequence[dict[str, Any]], root: Path) -> int:
    """What capture costs without validating anything: the same rows, the same files, no check at all.

    Not a path the product has: the floor under capture's checks, to show how much of the anchor
    storing alone already takes.
    """
    store = LocalStore(root)
    written = 0
    for batch in _batches(records):
        rows = []
        for record in batch:
            body = record["dynamodb"]
            new, old = body.get("NewImage"), body.get("OldImage")
            rows.append(ChangeRow(
                table_name=table_from_arn(record["eventSourceARN"]), event_id=record["eventID"],
                event_name=record["eventName"], event_time_us=round(body["ApproximateCreationDateTime"] * 1_000_000),
                sequence_number=pad_sequence(body["SequenceNumber"]), shard_id=None,
                item_key=orjson.dumps(body["Keys"], option=orjson.OPT_SORT_KEYS).decode(),
                keys=orjson.dumps(body["Keys"]), new_image=None if new is None else orjson.dumps(new),
                old_image=None if old is None else orjson.dumps(old),
                is_ttl_delete=False, size_bytes=body["SizeBytes"]))
        write_change_files(store, rows)
        written += len(rows)
    return written


def runtime_events(records: Sequence[dict[str, Any]]) -> list[bytes]:
    """Each batch as the bytes of the Lambda event the runtime receives (``{"Records": [...]}``)."""
    return [json.dumps({"Records": list(batch)}, ensure_ascii=False).encode() for batch in _batches(records)]


def run_runtime_parse(events: Sequence[bytes]) -> int:
    """The anchor: what the Lambda runtime does before the handler runs, ``json.loads`` of each event."""
    parsed = 0
    for event in events:
        parsed += len(json.loads(event)["Records"])
    return parsed


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Binary):
        return base64.b64encode(value.value).decode()  # type: ignore[attr-defined]  # the stubs omit .value
    if isinstance(value, set):
        return sorted(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def run_baseline(records: Sequence[dict[str, Any]], root: Path) -> int:
    """A naive consumer: TypeDeserializer per record, json.dumps row at a time, Parquet from dicts."""
    deserializer = TypeDeserializer()

    def item(image: dict[str, Any] | None) -> str | None:
        if image is None:
            return None
        # Lambda hands binaries over as base64 text; TypeDeserializer wants bytes.
        plain = {name: deserializer.deserialize(value) for name, value in base64_to_binaries(image).items()}
        return json.dumps(_plain(plain))

    written = 0
    for number, batch in enumerate(_batches(records)):
        rows = []
        for record in batch:
            body = record["dynamodb"]
            rows.append({
                "event_id": record["eventID"],
                "event_name": record["eventName"],
                "event_time": int(body["ApproximateCreationDateTime"]) * 1_000_000,
                "sequence_number": body["SequenceNumber"],
                "keys": item(body["Keys"]),
                "new_image": item(body.get("NewImage")),
                "old_image": item(body.get("OldImage")),
                "size_bytes": body["SizeBytes"],
            })
        pq.write_table(pa.Table.from_pylist(rows), root / f"baseline-{number:05d}.parquet", compression="zstd")
        written += len(rows)
    return written


def measure(name: str, path: Callable[[Sequence[dict[str, Any]], Path], int],
            records: Sequence[dict[str, Any]], input_bytes: int, rounds: int) -> Figures:
    """Best of ``rounds`` runs of one path, each into a fresh temporary directory."""
    best = float("inf")
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as temp:
            # CPU time of this process: the figure for one core, whatever else the machine runs.
            started = time.process_time()
            done = path(records, Path(temp))
            best = min(best, time.process_time() - started)
        if done != len(records):
            raise SystemExit(f"{name}: {done} of {len(records)} records made it")
    return Figures(name, len(records), input_bytes, best)


def _report(figures: Figures) -> None:
    print(f"{figures.name:<9} {figures.records:>8} records  {figures.seconds:7.3f} CPU s  "
          f"{figures.records_per_second:>10,.0f} records/s  {figures.mb_per_second:7.1f} MB/s")


def main(argv: Sequence[str] | None = None) -> None:
    """Generate records, run both paths, print records/s, MB/s and the ratio."""
    parser = argparse.ArgumentParser(prog="python -m bench.consumer", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--item-kb", type=int, choices=(1, 10), default=1)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs per path")
    parser.add_argument("--profile", action="store_true", help="profile the capture path instead")
    args = parser.parse_args(argv)
    records = make_records(args.records, args.item_kb)
    input_bytes = sum(_size(record) for record in records)
    print(f"{args.records} records, items of about {args.item_kb} KB, "
          f"{input_bytes / args.records:,.0f} bytes per record as Lambda delivers it, batches of {BATCH}")
    if args.profile:
        with tempfile.TemporaryDirectory() as temp:
            profile = cProfile.Profile()
            profile.runcall(run_capture, records, Path(temp))
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)
        return
    events = runtime_events(records)
    # A Lambda holds one event at a time; here every record of the run is alive. Frozen, they are out
    # of the collector's reach, as they would be out of the process, so no path pays for scanning them.
    gc.freeze()
    capture = measure("capture", run_capture, records, input_bytes, args.rounds)
    _report(capture)
    runtime = measure("json.loads", lambda _records, _root: run_runtime_parse(events), records, input_bytes,
                      args.rounds)
    _report(runtime)
    unchecked = measure("unchecked", run_unchecked, records, input_bytes, args.rounds)
    _report(unchecked)
    baseline = measure("baseline", run_baseline, records, input_bytes, args.rounds)
    _report(baseline)
    print(f"capture CPU per record: {capture.seconds / capture.records * 1e6:,.1f} µs; the runtime's json.loads "
          f"of the same events: {runtime.seconds / runtime.records * 1e6:,.1f} µs "
          f"({capture.seconds / runtime.seconds:.2f}x; goal at most 1.00x)")
    print(f"of which storing alone, with no check (same rows, same files): "
          f"{unchecked.seconds / unchecked.records * 1e6:,.1f} µs ({unchecked.seconds / runtime.seconds:.2f}x "
          f"json.loads); checking every value: {(capture.seconds - unchecked.seconds) / capture.records * 1e6:,.1f} µs")
    print(f"capture is {capture.records_per_second / baseline.records_per_second:.1f}x the baseline")


if __name__ == "__main__":
    main()
