"""A synthetic store, fast: N changes over K keys written as change files in the real layout.

Rows are composed column-wise with numpy and pyarrow compute (never through the Python codec), so
millions of rows build in seconds. What the files hold is what the consumer would write:

- one row per change, columns and types of ``changelog.record.SCHEMA``; rows inside a file sorted
  by (item_key, event_time, sequence_number); zstd, 64,000-row groups, statistics on;
- files in ``dt=YYYY-MM-DD/hour=HH`` partitions that bound their times, named
  ``<first seq>-<last seq>-<digest of event ids>.parquet``;
- times in whole seconds (as DynamoDB Streams gives them) spread over ``days``, many changes per
  second; sequence numbers of 21 digits padded to 40, increasing with time;
- per key: the first change is an INSERT, about one change in ten a REMOVE (never two in a row),
  the change after a REMOVE an INSERT, the rest MODIFY; images of about 300 bytes with S, N, SS, M,
  BOOL and B attributes; old images are the previous version's new image, as NEW_AND_OLD_IMAGES.

A version's image is a pure function of its row number, so ``old_image`` can be rebuilt per file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from changelog.changefile import publish_change_file
from changelog.layout import hour_partition
from changelog.meta import meta_from_keys, write_meta
from changelog.record import SCHEMA
from changelog.store import LocalStore

START_S = 1_750_000_000  # epoch seconds of the first possible change
STATUSES = ("pending", "paid", "shipped", "delivered", "returned")
CITIES = ("Lisboa", "Zürich", "Oslo", "Kraków", "Nairobi", "Osaka", "Lima", "Perth",
          "Quito", "Reykjavík", "Tartu", "Dakar", "Porto", "Hanoi", "Austin", "Ghent")
NOTES = tuple(
    f"{word} order, leave at the {place}; call before delivery #{n:02d}"
    for n, (word, place) in enumerate(
        (w, p) for w in ("urgent", "regular", "gift", "fragile") for p in ("door", "desk", "back gate", "locker")
    )
)
BLOBS = ("AAECAwQFBgcICQoLDA0ODw==", "8J+OgQ==", "3q2+7w==", "AQIDBAUGBwg=", "/////w==", "AA==", "c2Vuc29y", "eA==")


@dataclass(frozen=True)
class GeneratedStore:
    """What was written."""

    root: Path
    table: str
    changes: int
    keys: int
    files: int
    first_us: int
    last_us: int
    bytes_written: int


def _text(values: np.ndarray) -> pa.Array:
    return pa.array(values).cast(pa.string())


def _pick(choices: tuple[str, ...], index: np.ndarray) -> pa.Array:
    return pc.take(pa.array(choices), pa.array(index % len(choices)))


def _join(*parts: object) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _hex_ids(rng: np.random.Generator, count: int) -> pa.Array:
    """``count`` random 32-digit hex ids, built as one buffer."""
    raw = rng.integers(0, 256, size=(count, 16), dtype=np.uint8)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    out = np.empty((count, 32), dtype=np.uint8)
    out[:, 0::2] = digits[raw >> 4]
    out[:, 1::2] = digits[raw & 15]
    offsets = np.arange(0, 32 * count + 1, 32, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(out.tobytes()))


def _keys(key: np.ndarray) -> pa.Array:
    """Canonical item_key / keys text: ``{"pk":{"S":"cust#0000001"},"sk":{"N":"3"}}``."""
    pk = pc.utf8_lpad(_text(key // 4), width=7, padding="0")
    return _join('{"pk":{"S":"cust#', pk, '"},"sk":{"N":"', _text(key % 4), '"}}')


def _images(key: np.ndarray, version: np.ndarray) -> pa.Array:
    """The DynamoDB-JSON image of each (key, version row number)."""
    pk = _join("cust#", pc.utf8_lpad(_text(key // 4), width=7, padding="0"))
    sk = _text(key % 4)
    cents = (version * 7919) % 100_000
    total = _join(_text(cents // 100), ".", pc.utf8_lpad(_text(cents % 100), width=2, padding="0"))
    ver = _text(version)
    tag_a = _join("t", _text(version % 13))
    tag_b = _join("t", _text(version % 13 + 13))
    status = _pick(STATUSES, version)
    city = _pick(CITIES, key)
    zip_code = pc.utf8_lpad(_text(key % 100_000), width=5, padding="0")
    gift = _pick(("true", "false", "false"), version)
    note = _pick(NOTES, version // 3)
    blob = _pick(BLOBS, version // 7)
    image = _join(
        '{"pk":{"S":"', pk, '"},"sk":{"N":"', sk, '"},"status":{"S":"', status, '"},"total":{"N":"', total,
        '"},"version":{"N":"', ver, '"},"tags":{"SS":["', tag_a, '","', tag_b, '"]},"address":{"M":{"city":{"S":"',
        city, '"},"zip":{"S":"', zip_code, '"}}},"gift":{"BOOL":', gift, '},"note":{"S":"', note,
        '"},"blob":{"B":"', blob, '"}}',
    )
    return image


def _masked(values: pa.Array, mask: np.ndarray) -> pa.Array:
    """``values`` with nulls where ``mask`` is true."""
    return pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), values)


def _event_names(key: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Event name codes (0 INSERT, 1 MODIFY, 2 REMOVE) and each row's previous row of the same key (-1: none)."""
    count = len(key)
    order = np.lexsort((np.arange(count), key))
    sorted_key = key[order]
    first = np.ones(count, dtype=bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    candidate = (rng.random(count) < 0.1) & ~first
    remove = candidate.copy()
    remove[1:] &= ~candidate[:-1]
    after_remove = np.zeros(count, dtype=bool)
    after_remove[1:] = remove[:-1] & ~first[1:]
    codes_sorted = np.where(remove, 2, np.where(first | after_remove, 0, 1)).astype(np.int8)
    previous_sorted = np.where(first, -1, np.concatenate(([-1], order[:-1])))
    codes = np.empty(count, dtype=np.int8)
    codes[order] = codes_sorted
    previous = np.empty(count, dtype=np.int64)
    previous[order] = previous_sorted
    return codes, previous


def generate_store(root: Path, table: str = "orders", *, changes: int = 5_000_000, keys: int = 1_000_000,
                   days: float = 2.0, file_rows: int = 25_000, seed: int = 7) -> GeneratedStore:
    """Write ``changes`` changes over ``keys`` keys into a new local store at ``root``; returns a summary.

    Deterministic for a seed. ``file_rows`` bounds the rows of one change file (files never span
    an hour partition), like a consumer whose small files the compactor has merged.
    """
    store = LocalStore(root)
    rng = np.random.default_rng(seed)
    span = max(1, int(days * 86_400))
    seconds = np.sort(rng.integers(START_S, START_S + span, size=changes, dtype=np.int64))
    key = rng.integers(0, keys, size=changes, dtype=np.int64)
    codes, previous = _event_names(key, rng)
    names = pa.array(["INSERT", "MODIFY", "REMOVE"])
    write_meta(store, meta_from_keys(table, {"pk": {"S": "cust#0000000"}, "sk": {"N": "0"}}))
    hours = seconds // 3600
    boundaries = np.flatnonzero(np.diff(hours)) + 1
    starts = [0, *boundaries.tolist()]
    ends = [*boundaries.tolist(), changes]
    files = 0
    written = 0
    for hour_start, hour_end in zip(starts, ends, strict=True):
        for lo in range(hour_start, hour_end, file_rows):
            hi = min(lo + file_rows, hour_end)
            written += _write_file(store, table, rng, names, seconds, key, codes, previous, lo, hi)
            files += 1
    return GeneratedStore(root, table, changes, keys, files, int(seconds[0]) * 1_000_000,
                          int(seconds[-1]) * 1_000_000, written)


def _write_file(store: LocalStore, table: str, rng: np.random.Generator, names: pa.Array, seconds: np.ndarray,
                key: np.ndarray, codes: np.ndarray, previous: np.ndarray, lo: int, hi: int) -> int:
    rows = np.arange(lo, hi, dtype=np.int64)
    count = hi - lo
    k = key[lo:hi]
    code = codes[lo:hi]
    prev = previous[lo:hi]
    image = _images(k, rows)
    old_image = _images(k, np.maximum(prev, 0))
    no_old = prev < 0
    removed = code == 2
    sequence = pc.utf8_lpad(_join("1", pc.utf8_lpad(_text(rows), width=20, padding="0")), width=40, padding="0")
    event_ids = _hex_ids(rng, count)
    item_keys = _keys(k)
    new_image = _masked(image, removed)
    size = pc.add(pc.binary_length(item_keys), pc.binary_length(pc.fill_null(new_image, "")))
    columns = {
        "table_name": pa.array([table] * count, pa.string()),
        "event_id": event_ids,
        "event_name": pc.take(names, pa.array(code)),
        "event_time": pa.array(seconds[lo:hi] * 1_000_000).cast(pa.timestamp("us", tz="UTC")),
        "sequence_number": sequence,
        "shard_id": pa.array([None] * count, pa.string()),
        "item_key": item_keys,
        "keys": item_keys,
        "new_image": new_image,
        "old_image": _masked(old_image, no_old),
        "is_ttl_delete": pa.array(np.zeros(count, dtype=bool)),
        "size_bytes": pc.cast(size, pa.int64()),
    }
    data = pa.Table.from_arrays([columns[f.name] for f in SCHEMA], schema=SCHEMA)
    data = data.sort_by([("item_key", "ascending"), ("event_time", "ascending"), ("sequence_number", "ascending")])
    first_us = int(seconds[lo]) * 1_000_000
    path = publish_change_file(store, table, hour_partition(first_us), sequence[0].as_py(),
                               sequence[count - 1].as_py(), data, lifted=())
    return (store.root / path).stat().st_size
