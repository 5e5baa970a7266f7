"""Storage per change on realistic items, beside the same changes as gzip'd stream JSON.

Run ``python -m bench.storage [--changes N] [--keys K] [--seed S]`` (defaults 200,000 changes over
40,000 orders). A seeded order workload (0.4-4 KB items: free text in several scripts, emails,
timestamps, prices, line items as a list of maps, an address map, tag sets, the odd binary; an
INSERT, then MODIFYs changing one to three attributes, some REMOVEs and TTL deletes, over six
hours) becomes the Lambda stream records a real NEW_AND_OLD_IMAGES stream delivers. Then, in one run:

- anchor: those records as compact JSON lines, gzip level 6 (what a Firehose-to-S3 archive keeps),
  and the final table as export-style ``{"Item": ...}`` lines, gzip'd, for reference;
- capture: ``capture_batch`` over Lambda-sized batches into a local store (what the handler writes);
- compacted: the compactor's merge of every hour (one de-duplicated zstd-9 file per hour);
- per column of the compacted files, their share of the bytes;
- what-ifs (labelled; not the product's format): the compacted rows rewritten with other writer
  settings, to show what each would buy.

Prints bytes per change beside the anchor; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import random
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from changelog.changefile import COMPACTED_LEVEL, parquet_bytes
from changelog.codec import decode_lambda_record
from changelog.docs import doc_text
from changelog.meta import meta_from_description, write_meta
from changelog.state import change_files
from changelog.store import LocalStore
from compactor.merge import merge_small_files
from stream_consumer.capture import capture_batch

TABLE = "orders"
ARN = f"arn:aws:dynamodb:eu-west-1:123456789012:table/{TABLE}/stream/2025-06-01T00:00:00.000"
START = 1_750_000_000
HOURS = 6
BATCH = 100
FIRST = ("Ava", "Liam", "Noah", "Emma", "Mateo", "Sofía", "Yuki", "Hiroshi", "Olga", "Dmitri", "Chloé", "Zoë",
         "Oliver", "Amara", "Kwame", "Priya", "Arjun", "Mei", "Wei", "Fatima", "Omar", "Lucía", "Jonas", "Ingrid")
LAST = ("Smith", "García", "Müller", "Rossi", "Kowalski", "Nguyen", "Tanaka", "Ivanov", "O'Brien", "Dubois",
        "Silva", "Kim", "Patel", "Okafor", "Johansson", "Novák", "Yılmaz", "Cohen", "Haddad", "Moreau")
STREETS = ("Main St", "High Street", "Rue de Rivoli", "Königsallee", "Calle Mayor", "Via Roma", "Baker St",
           "Maple Ave", "Oak Lane", "Sakura-dōri", "Nevsky Prospekt", "Church Road", "Elm Street")
CITIES = ("London", "Paris", "Berlin", "Madrid", "Roma", "Tokyo", "New York", "São Paulo", "Zürich", "Kraków",
          "Toronto", "Seoul", "Lagos", "Mumbai", "Sydney", "Москва")
WORDS = ("please", "leave", "the", "parcel", "at", "door", "ring", "bell", "gift", "wrap", "fragile", "call",
         "before", "delivery", "back", "entrance", "neighbour", "side", "garage", "weekend", "only", "thanks",
         "ne", "pas", "plier", "bitte", "klingeln", "gracias", "よろしく", "спасибо", "🎁", "📦")
PRODUCTS = ("Espresso beans 1kg", "Ceramic mug", "Trail shoes", "Wool scarf", "USB-C cable 2m", "Desk lamp",
            "Notebook A5", "Water bottle", "Headphones", "Yoga mat", "Tea sampler", "Phone case")
STATUSES = ("pending", "paid", "packed", "shipped", "delivered")
TAGS = ("prime", "gift", "b2b", "repeat", "promo", "fragile", "express", "eco", "vip", "international")


def _money(rng: random.Random, low: int, high: int) -> str:
    cents = rng.randint(low * 100, high * 100)
    return f"{cents // 100}.{cents % 100:02d}"


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"


def new_order(rng: random.Random, order_id: str, created: float) -> dict[str, Any]:
    """One order item in DynamoDB JSON, 0.4-4 KB."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    lines = []
    for _ in range(rng.choice((1, 1, 2, 2, 3, 4, 6, 10))):
        lines.append({"M": {"sku": {"S": f"SKU-{rng.randrange(10**6):06d}"}, "name": {"S": rng.choice(PRODUCTS)},
                            "qty": {"N": str(rng.randint(1, 5))}, "price": {"N": _money(rng, 2, 300)}}})
    item: dict[str, Any] = {
        "pk": {"S": f"ORDER#{order_id}"},
        "sk": {"S": "ORDER"},
        "customer": {"M": {"name": {"S": f"{first} {last}"},
                           "email": {"S": f"{first.lower()}.{last.lower()}{rng.randrange(100)}@example.com"},
                           "phone": {"S": f"+{rng.randint(1, 99)} {rng.randrange(10**9):09d}"}}},
        "address": {"M": {"street": {"S": f"{rng.randint(1, 999)} {rng.choice(STREETS)}"},
                          "city": {"S": rng.choice(CITIES)}, "zip": {"S": f"{rng.randrange(10**5):05d}"},
                          "country": {"S": rng.choice(("GB", "FR", "DE", "ES", "IT", "JP", "US", "BR", "CH"))}}},
        "lines": {"L": lines},
        "total": {"N": _money(rng, 5, 2000)},
        "currency": {"S": rng.choice(("EUR", "GBP", "USD", "JPY"))},
        "status": {"S": "pending"},
        "created_at": {"S": _iso(created)},
        "updated_at": {"S": _iso(created)},
        "version": {"N": "1"},
        "gift": {"BOOL": rng.random() < 0.1},
        "coupon": {"NULL": True} if rng.random() < 0.7 else {"S": f"SAVE{rng.randint(5, 50)}"},
        "payment": {"M": {"method": {"S": rng.choice(("card", "paypal", "sepa", "klarna"))},
                          "last4": {"S": f"{rng.randrange(10**4):04d}"}}},
    }
    if rng.random() < 0.5:
        item["notes"] = {"S": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))}
    if rng.random() < 0.6:
        item["tags"] = {"SS": sorted(rng.sample(TAGS, rng.randint(1, 4)))}
    if rng.random() < 0.2:
        item["checksum"] = {"B": base64.b64encode(rng.randbytes(32)).decode()}
    if rng.random() < 0.1:
        item["ttl"] = {"N": str(int(created) + 86_400 * 90)}
    return item


def modify(rng: random.Random, item: dict[str, Any], at: float) -> dict[str, Any]:
    """The item after one application write: status moves on, updated_at and version change, sometimes more."""
    after = json.loads(json.dumps(item))
    status = after["status"]["S"]
    if status in STATUSES[:-1] and rng.random() < 0.8:
        after["status"] = {"S": STATUSES[STATUSES.index(status) + 1]}
    after["updated_at"] = {"S": _iso(at)}
    after["version"] = {"N": str(int(after["version"]["N"]) + 1)}
    roll = rng.random()
    if roll < 0.15:
        after["notes"] = {"S": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))}
    elif roll < 0.25:
        after["total"] = {"N": _money(rng, 5, 2000)}
    elif roll < 0.30:
        after["tracking"] = {"S": f"1Z{rng.randrange(16**16):016X}"}
    return after


@dataclass
class Workload:
    """The stream records of a workload, in stream order, and the final table."""

    records: list[dict[str, Any]]
    final: dict[str, dict[str, Any]]


def _record(rng: random.Random, sequence: int, name: str, at: float, item: dict[str, Any],
            new: dict[str, Any] | None, old: dict[str, Any] | None, ttl: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"ApproximateCreationDateTime": float(int(at)),
                            "Keys": {"pk": item["pk"], "sk": item["sk"]}}
    if new is not None:
        body["NewImage"] = new
    if old is not None:
        body["OldImage"] = old
    body.update({"SequenceNumber": f"{sequence:021d}", "SizeBytes": len(json.dumps(new or old)),
                 "StreamViewType": "NEW_AND_OLD_IMAGES"})
    record: dict[str, Any] = {"eventID": uuid.UUID(int=rng.getrandbits(128)).hex, "eventName": name,
                              "eventVersion": "1.1", "eventSource": "aws:dynamodb", "awsRegion": "eu-west-1",
                              "dynamodb": body, "eventSourceARN": ARN}
    if ttl:
        record["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    return record


def workload(changes: int, keys: int, seed: int) -> Workload:
    """About ``changes`` stream records over ``keys`` orders, spread over HOURS hours, in stream order."""
    rng = random.Random(seed)
    span = HOURS * 3600
    events: list[tuple[float, int, str]] = []  # (time, order, kind)
    per_key = max(1, changes // keys)
    for order in range(keys):
        created = START + rng.random() * span * 0.7
        events.append((created, order, "INSERT"))
        at = created
        for _ in range(max(0, per_key - 1 + rng.choice((-1, 0, 0, 1)))):
            at += rng.expovariate(1 / 900)
            events.append((at, order, "MODIFY"))
        if rng.random() < 0.07:
            events.append((at + rng.expovariate(1 / 900), order, "TTL" if rng.random() < 0.3 else "REMOVE"))
    events.sort()
    live: dict[int, dict[str, Any]] = {}
    ids = {order: uuid.UUID(int=rng.getrandbits(128)).hex[:20] for order in range(keys)}
    records = []
    for sequence, (at, order, kind) in enumerate(e for e in events if e[0] < START + span):
        before = live.get(order)
        if kind == "INSERT":
            item = new_order(rng, ids[order], at)
            records.append(_record(rng, 10**20 + sequence, "INSERT", at, item, item, None))
            live[order] = item
        elif before is None:
            continue
        elif kind == "MODIFY":
            after = modify(rng, before, at)
            records.append(_record(rng, 10**20 + sequence, "MODIFY", at, after, after, before))
            live[order] = after
        else:
            records.append(_record(rng, 10**20 + sequence, "REMOVE", at, before, None, before, ttl=kind == "TTL"))
            del live[order]
    final = {json.dumps({"pk": i["pk"], "sk": i["sk"]}): i for i in live.values()}
    return Workload(records, final)


def gzip_lines(lines: list[str]) -> int:
    """Bytes of ``lines`` as one gzip'd (level 6) JSON-lines file."""
    return len(gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6))


def store_bytes(store: LocalStore) -> tuple[int, int]:
    """(bytes, files) of the table's change files."""
    root = store.local_root()
    assert root is not None
    files = change_files(store, TABLE)
    return sum((root / path).stat().st_size for path in files), len(files)


def column_shares(paths: list[Path]) -> dict[str, int]:
    """Compressed bytes of each column over ``paths`` (from the Parquet footers)."""
    sizes: dict[str, int] = defaultdict(int)
    for path in paths:
        metadata = pq.read_metadata(path)
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            for column in range(row_group.num_columns):
                chunk = row_group.column(column)
                sizes[chunk.path_in_schema] += chunk.total_compressed_size
    return dict(sizes)


def what_ifs(tables: list[pa.Table]) -> list[tuple[str, int, float]]:
    """(label, bytes, seconds) of the compacted rows written with other settings."""

    def written(label: str, write: Callable[[pa.Table], bytes]) -> tuple[str, int, float]:
        started = time.process_time()
        size = sum(len(write(table)) for table in tables)
        return label, size, time.process_time() - started

    def options(**extra: Any) -> Callable[[pa.Table], bytes]:
        def write(table: pa.Table) -> bytes:
            sink = pa.BufferOutputStream()
            settings: dict[str, Any] = {"compression": "zstd", "compression_level": COMPACTED_LEVEL,
                                        "row_group_size": 64_000, "write_statistics": False,
                                        "use_dictionary": ["table_name", "event_name", "shard_id"]}
            settings.update(extra)
            pq.write_table(table, sink, **settings)
            return bytes(sink.getvalue().to_pybytes())
        return write

    def with_docs(table: pa.Table) -> pa.Table:
        for name in ("new_image", "old_image"):
            docs = pa.array([doc_text(image) for image in table.column(name).to_pylist()], pa.string())
            table = table.append_column(name.replace("image", "doc"), docs)
        return table

    return [
        written("the product's compacted writer (zstd 9)", lambda t: parquet_bytes(t, level=COMPACTED_LEVEL)),
        written("  format 1: the same with new_doc/old_doc stored (before)",
                lambda t: parquet_bytes(with_docs(t), level=COMPACTED_LEVEL)),
        written("  zstd 15", options(compression_level=15)),
        written("  zstd 9, 8 MB data pages", options(data_page_size=8 << 20)),
        written("  zstd 9, dictionary on item_key and keys too",
                options(use_dictionary=["table_name", "event_name", "shard_id", "item_key", "keys"])),
        written("  zstd 9, without old_image (its cost)", lambda t: options()(t.drop_columns(["old_image"]))),
    ]


def main() -> None:
    """Build the workload, store it both ways, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    work = workload(args.changes, args.keys, args.seed)
    count = len(work.records)
    stream_gz = gzip_lines([json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in work.records])
    export_gz = gzip_lines([json.dumps({"Item": item}, separators=(",", ":"), ensure_ascii=False)
                            for item in work.final.values()])
    raw = sum(len(json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode()) + 1 for r in work.records)
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as folder:
        store = LocalStore(Path(folder) / "store")
        write_meta(store, meta_from_description({
            "TableName": TABLE,
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                     {"AttributeName": "sk", "AttributeType": "S"}]}))
        for start in range(0, count, BATCH):
            capture_batch(store, work.records[start:start + BATCH], decode_lambda_record, source="bench")
        captured, captured_files = store_bytes(store)
        started = time.process_time()
        merge_small_files(store, TABLE, (START + (HOURS + 1) * 3600) * 1_000_000)
        merge_cpu = time.process_time() - started
        compacted, compacted_files = store_bytes(store)
        root = store.local_root()
        assert root is not None
        paths = [root / path for path in change_files(store, TABLE)]
        shares = column_shares(paths)
        alternatives = what_ifs([pq.read_table(path) for path in paths])

    def row(label: str, size: int) -> str:
        return f"| {label} | {size / count:,.1f} | {size / stream_gz:.2f}x |"

    print(f"{count:,} changes over {args.keys:,} orders, {len(work.final):,} items at the end; "
          f"stream JSON {raw / count:,.0f} B/change before gzip\n")
    print("| stored as | bytes/change | vs gzip'd stream JSON |")
    print("| --- | --- | --- |")
    print(row("**anchor**: stream records as JSON lines, gzip -6", stream_gz))
    print(row("final table as export `{\"Item\":...}` lines, gzip -6 (reference)", export_gz))
    print(row(f"capture files ({captured_files:,} files, zstd default)", captured))
    print(row(f"**compacted** ({compacted_files:,} merged files, zstd {COMPACTED_LEVEL}; merge CPU "
              f"{merge_cpu:.1f} s)", compacted))
    print("\ncolumns of the compacted files:\n\n| column | bytes/change | share |\n| --- | --- | --- |")
    total = sum(shares.values())
    for name, size in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {size / count:,.1f} | {size / total:.0%} |")
    print("\nwhat-ifs (the compacted rows rewritten; not the product's format):\n")
    print("| writer | bytes/change | vs anchor | write CPU s |\n| --- | --- | --- | --- |")
    for label, size, seconds in alternatives:
        print(f"| {label} | {size / count:,.1f} | {size / stream_gz:.2f}x | {seconds:.1f} |")


if __name__ == "__main__":
    main()
