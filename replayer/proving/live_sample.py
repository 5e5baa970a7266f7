"""A sample of the live table against the stored state: does the backup hold what the table holds?

Each verifier run reads a few live items, with strongly consistent reads, two ways: one page of a
random Scan segment (items the backup may lack) and a BatchGetItem of keys drawn from the stored
state (items the backup may hold that the table no longer does). Each read is bracketed by the
wall-clock interval it ran in.

A live item is compared with a stored state only where no change can fall between them, so a
finding is a fact, never a race with capture:

- equal to the stored item at the latest restorable moment: the item agrees;
- otherwise, once coverage has passed the read (the run waits a bounded time for it), the stored
  versions just before and just after the read (``SLACK_S`` either side, for the stream's
  rounded, steppable clock) decide: live equal to either agrees (the item changed around the read);
  the same stored version on both sides that differs from the live item is a mismatch;
- anything else (coverage did not pass the read in time, a loss blocks the moment, the item changed
  around the read into a third version) is inconclusive and counted, not guessed.

Item contents never reach a message: a mismatch names its key only.
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from changelog.codec import binaries_to_base64, item_key
from changelog.consistent import read_consistently, table_prefixes
from changelog.errors import RewindError
from changelog.meta import read_meta
from changelog.restorable import blocking_loss
from changelog.state import check_restorable, coverage, open_state, plan_state
from changelog.store import Store
from changelog.timefmt import format_time, from_micros
from replayer.forensics.attrdiff import items_equal

SECOND_US = 1_000_000
# The stream stamps a change with its second, rounded down, on a clock that may differ from this
# function's by a little: a version stamped within this many seconds of a read may be either side of it.
SLACK_S = 5
# BatchGetItem takes at most 100 keys per request.
_BATCH_GET = 100
# DynamoDB's ceiling for a parallel scan's TotalSegments.
_MAX_SEGMENTS = 1_000_000


@dataclass(frozen=True)
class LiveRead:
    """Live items read in one interval: by canonical key, None where the table holds no item."""

    items: dict[str, dict[str, Any] | None]
    keys: dict[str, dict[str, Any]]  # canonical key -> the key attributes (DynamoDB JSON)
    started_us: int
    ended_us: int


@dataclass(frozen=True)
class LiveSample:
    """What one sample compared and found."""

    compared: int
    agreed: int
    mismatched: tuple[str, ...]  # canonical keys whose stored version differs from the table's
    inconclusive: int
    why_inconclusive: tuple[str, ...]  # one line per distinct reason


@dataclass(frozen=True)
class _Version:
    sequence: str
    time_us: int
    image: dict[str, Any] | None


def _key_names(meta: dict[str, Any]) -> list[str]:
    return [entry["AttributeName"] for entry in meta["key_schema"]]


def _now_us() -> int:
    return time.time_ns() // 1000


def scan_page(client: Any, table: str, names: list[str], size: int, rng: random.Random,
              clock: Callable[[], int] = _now_us) -> LiveRead:
    """One page of at most ``size`` items from a random segment of the live table (consistent read)."""
    count = int(client.describe_table(TableName=table)["Table"].get("ItemCount", 0))
    segments = max(1, min(_MAX_SEGMENTS, count // max(1, size)))
    part = {"Segment": rng.randrange(segments), "TotalSegments": segments} if segments > 1 else {}
    started = clock()
    page = client.scan(TableName=table, Limit=size, ConsistentRead=True, **part)
    ended = clock()
    items: dict[str, dict[str, Any] | None] = {}
    keys: dict[str, dict[str, Any]] = {}
    for raw in page.get("Items", []):
        item = binaries_to_base64(raw)
        key = {name: item[name] for name in names}
        items[item_key(key)] = item
        keys[item_key(key)] = key
    return LiveRead(items, keys, started, ended)


def get_items(client: Any, table: str, keys: dict[str, dict[str, Any]],
              clock: Callable[[], int] = _now_us) -> LiveRead:
    """The live items of ``keys`` (consistent reads); a key the table does not hold maps to None."""
    found: dict[str, dict[str, Any] | None] = dict.fromkeys(keys)
    names = list(next(iter(keys.values()))) if keys else []
    started = clock()
    pending = [_boto_key(key) for key in keys.values()]
    while pending:
        batch, pending = pending[:_BATCH_GET], pending[_BATCH_GET:]
        response = client.batch_get_item(RequestItems={table: {"Keys": batch, "ConsistentRead": True}})
        for raw in response.get("Responses", {}).get(table, []):
            item = binaries_to_base64(raw)
            found[item_key({name: item[name] for name in names})] = item
        # Unprocessed keys (throttling) are asked again; botocore already retried the request itself.
        pending += response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
    return LiveRead(found, dict(keys), started, clock())


def _boto_key(key: dict[str, Any]) -> dict[str, Any]:
    return {name: ({"B": base64.b64decode(value["B"])} if "B" in value else value) for name, value in key.items()}


def _versions(store: Store, table: str, at_us: int, keys: Iterable[str]) -> dict[str, _Version]:
    """The stored version of each key at ``at_us`` (absent keys are left out)."""
    wanted = pa.table({"item_key": pa.array(sorted(set(keys)), pa.string())})

    def read() -> list[tuple[str, str, Any, str | None]]:
        con = duckdb.connect()
        con.register("live_keys", wanted)
        open_state(con, store, plan_state(store, table, at_us), name="live_state", tombstones=True,
                   only_keys="live_keys")
        rows: list[tuple[str, str, Any, str | None]] = con.execute(
            "SELECT item_key, sequence_number, epoch_us(event_time), image FROM live_state").fetchall()
        return rows

    return {key: _Version(sequence, int(time_us), orjson.loads(image) if image is not None else None)
            for key, sequence, time_us, image in read_consistently(store, table_prefixes(table), read)}


def sample_stored_keys(store: Store, table: str, at_us: int, size: int, seed: int) -> dict[str, dict[str, Any]]:
    """Up to ``size`` keys of the items stored at ``at_us``, drawn with ``seed``: canonical key -> key."""

    def read() -> list[tuple[str, str]]:
        con = duckdb.connect()
        open_state(con, store, plan_state(store, table, at_us), name="sample_state")
        rows: list[tuple[str, str]] = con.execute(
            f"SELECT item_key, keys FROM sample_state USING SAMPLE reservoir({int(size)} ROWS) "
            f"REPEATABLE ({int(seed) % 2**31})").fetchall()
        return rows

    return {key: orjson.loads(keys) for key, keys in read_consistently(store, table_prefixes(table), read)}


def compare(store: Store, table: str, reads: list[LiveRead], *, wait_s: float,
            sleep: Callable[[float], None] = time.sleep, clock: Callable[[], int] = _now_us) -> LiveSample:
    """Compare live reads with the stored state, exactly or not at all (see the module's rules)."""
    covered = coverage(store, table)
    latest = covered.latest_us
    if latest is None:
        return LiveSample(0, 0, (), 0, ())
    try:
        # What capture proves is compared only where the store can restore it (a loss may cut it short).
        check_restorable(covered, from_micros(latest), latest)
    except RewindError as exc:
        total = sum(len(read.items) for read in reads)
        return LiveSample(total, 0, (), total, (str(exc),))
    agreed = 0
    compared = 0
    undecided: list[tuple[LiveRead, str]] = []
    for read in reads:
        compared += len(read.items)
        at_latest = _versions(store, table, latest, read.items)
        for key, live in read.items.items():
            stored = at_latest.get(key)
            if items_equal(stored.image if stored else None, live):
                agreed += 1
            else:
                undecided.append((read, key))
    mismatched: list[str] = []
    reasons: list[str] = []
    if undecided:
        newest_end = max(read.ended_us for read, _key in undecided)
        target = (newest_end // SECOND_US + SLACK_S + 1) * SECOND_US
        deadline = clock() + int(wait_s * SECOND_US)
        cov = coverage(store, table)
        lost = blocking_loss(cov.losses, cov.bases, target)
        if lost is not None:
            # No wait lets a moment past a loss be proven (only a bootstrap does): undecided at once,
            # rather than a run billed for its whole wait at every interval while the loss stands.
            reasons.append(f"{format_time(from_micros(target))} is not restorable: {lost.what}")
            return LiveSample(compared, agreed, (), len(undecided), tuple(reasons))
        while (cov.latest_us or 0) < target and clock() < deadline:
            sleep(min(5.0, max(0.0, (deadline - clock()) / SECOND_US)))
            cov = coverage(store, table)
        if (cov.latest_us or 0) < target:
            reasons.append(f"coverage did not pass {format_time(from_micros(target))} within {wait_s:g} s")
            return LiveSample(compared, agreed, (), len(undecided), tuple(reasons))
        by_read: dict[int, list[str]] = {}
        for read, key in undecided:
            by_read.setdefault(id(read), []).append(key)
        for read in reads:
            keys = by_read.get(id(read))
            if not keys:
                continue
            # Just before the first second a version on either side of the read may be stamped with.
            before_us = (read.started_us // SECOND_US - SLACK_S) * SECOND_US - 1
            after_us = target
            try:
                for moment in (before_us, after_us):
                    check_restorable(cov, from_micros(moment), moment)
            except RewindError as exc:
                reasons.append(str(exc))
                continue
            before = _versions(store, table, before_us, keys)
            after = _versions(store, table, after_us, keys)
            for key in keys:
                live = read.items[key]
                old, new = before.get(key), after.get(key)
                if items_equal(old.image if old else None, live) or items_equal(new.image if new else None, live):
                    agreed += 1
                elif _same_version(old, new):
                    mismatched.append(key)
                else:
                    reasons.append("an item changed around the read into a version neither side holds")
    inconclusive = compared - agreed - len(mismatched)
    return LiveSample(compared, agreed, tuple(mismatched), inconclusive, tuple(dict.fromkeys(reasons)))


def _same_version(old: _Version | None, new: _Version | None) -> bool:
    if old is None or new is None:
        return old is None and new is None
    return (old.sequence, old.time_us) == (new.sequence, new.time_us)


def live_sample(store: Store, table: str, client: Any, size: int, seed: int, *, wait_s: float,
                sleep: Callable[[float], None] = time.sleep, clock: Callable[[], int] = _now_us) -> LiveSample:
    """Read ``size`` live items each way and compare them with the stored state."""
    rng = random.Random(seed)
    names = _key_names(read_meta(store, table))
    latest = coverage(store, table).latest_us
    reads = [scan_page(client, table, names, size, rng, clock)]
    if latest is not None:
        stored_keys = {key: value for key, value in sample_stored_keys(store, table, latest, size, seed).items()
                       if key not in reads[0].items}
        if stored_keys:
            reads.append(get_items(client, table, stored_keys, clock))
    return compare(store, table, reads, wait_s=wait_s, sleep=sleep, clock=clock)
