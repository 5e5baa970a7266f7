"""A workload generator for forensics tests: one sequence of writes, seen three ways.

Each write becomes (1) a Lambda-shaped stream record (``tests.events.lambda_record``) with a time in
seconds and an increasing sequence number, (2) a step of a plain Python model of the table (the
independent answer tests compare with) and, when a moto client is given, (3) the same write on a
live DynamoDB table, so the live table matches what the records describe.
"""

from __future__ import annotations

import copy
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from changelog.codec import base64_to_binaries, decode_lambda_record, item_key
from changelog.meta import meta_from_description, write_meta
from changelog.store import Store
from stream_consumer.capture import capture_batch
from tests.events import TTL_IDENTITY, lambda_record

BASE = 1_750_000_000  # 2025-06-15T15:06:40Z


@dataclass(frozen=True)
class Step:
    """One write as the model saw it: the item before and after (None = absent)."""

    seconds: int
    sequence: int
    event_name: str
    key: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    ttl: bool = False


@dataclass
class Workload:
    """Writes to one table, recorded as stream records, model steps and (optionally) live writes."""

    table: str = "orders"
    key_names: tuple[str, ...] = ("pk",)
    key_types: tuple[str, ...] = ("S",)
    client: Any = None
    sequence: int = 1000
    records: list[dict[str, Any]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    live: dict[str, dict[str, Any]] = field(default_factory=dict)

    def description(self) -> dict[str, Any]:
        """A DescribeTable-like description of the table (key schema and attribute types)."""
        roles = ("HASH", "RANGE")
        return {
            "TableName": self.table,
            "KeySchema": [{"AttributeName": n, "KeyType": r} for n, r in zip(self.key_names, roles, strict=False)],
            "AttributeDefinitions": [
                {"AttributeName": n, "AttributeType": t} for n, t in zip(self.key_names, self.key_types, strict=True)
            ],
        }

    def create_live_table(self) -> None:
        """Create the table on the moto client (on-demand)."""
        d = self.description()
        self.client.create_table(TableName=self.table, KeySchema=d["KeySchema"],
                                 AttributeDefinitions=d["AttributeDefinitions"], BillingMode="PAY_PER_REQUEST")

    def key_of(self, item: dict[str, Any]) -> dict[str, Any]:
        """The key attributes of an item."""
        return {name: item[name] for name in self.key_names}

    def _record(self, seconds: int, event_name: str, keys: dict[str, Any], new: Any, old: Any,
                ttl: bool = False) -> None:
        self.sequence += 1
        self.records.append(lambda_record(
            self.table, event_name, keys, seconds, self.sequence, new=new, old=old,
            event_id=f"{self.table}-{self.sequence}", identity=TTL_IDENTITY if ttl else None,
        ))
        self.steps.append(Step(seconds, self.sequence, event_name, item_key(keys), old, new, ttl))

    def put(self, item: dict[str, Any], seconds: int) -> None:
        """PutItem: an INSERT, or a MODIFY carrying the old image."""
        item = copy.deepcopy(item)
        keys = self.key_of(item)
        text = item_key(keys)
        old = self.live.get(text)
        self._record(seconds, "MODIFY" if old is not None else "INSERT", keys, item, old)
        self.live[text] = item
        if self.client is not None:
            self.client.put_item(TableName=self.table, Item=base64_to_binaries(item))

    def delete(self, keys: dict[str, Any], seconds: int, ttl: bool = False) -> None:
        """DeleteItem (or a TTL expiry); deleting an absent item writes nothing, as in DynamoDB."""
        text = item_key(keys)
        old = self.live.pop(text, None)
        if old is None:
            return
        self._record(seconds, "REMOVE", keys, None, old, ttl=ttl)
        if self.client is not None:
            self.client.delete_item(TableName=self.table, Key=base64_to_binaries(keys))

    def capture(self, store: Store, batch: int = 40, duplicates: bool = False) -> None:
        """Write meta.json and feed the records through capture_batch in batches.

        With ``duplicates`` every other batch is delivered twice, split differently, as Lambda
        retries do.
        """
        write_meta(store, meta_from_description(self.description()))
        for start in range(0, len(self.records), batch):
            chunk = self.records[start:start + batch]
            capture_batch(store, chunk, decode_lambda_record, source="test")
            if duplicates and (start // batch) % 2:
                capture_batch(store, chunk[1:] + chunk[:1], decode_lambda_record, source="test")

    def state_at(self, seconds: int) -> dict[str, dict[str, Any]]:
        """The model's table at a second: the last step at or before it, per key."""
        state: dict[str, dict[str, Any]] = {}
        for step in sorted(self.steps, key=lambda s: (s.seconds, s.sequence)):
            if step.seconds > seconds:
                break
            if step.after is None:
                state.pop(step.key, None)
            else:
                state[step.key] = step.after
        return state

    def history_of(self, key: str) -> list[Step]:
        """The model's steps of one item, in order."""
        return [s for s in sorted(self.steps, key=lambda s: (s.seconds, s.sequence)) if s.key == key]


# One item with every AttributeValue type, 38-digit numbers, binary and unicode.
EVERY_TYPE = {
    "pk": {"S": "a"},
    "n": {"N": "12345678901234567890123456789012345678"},
    "f": {"N": "-0.000000000000000000000000000000000001"},
    "b": {"B": "AAEC/w=="},
    "ss": {"SS": ["x", "y"]},
    "ns": {"NS": ["1", "2"]},
    "bs": {"BS": ["AA==", "AQ=="]},
    "m": {"M": {"l": {"L": [{"NULL": True}, {"BOOL": False}, {"S": "ü🔑"}]}}},
}


def deliver_in_cuts(store: Store, records: list[dict[str, Any]], cuts: list[int]) -> None:
    """Capture ``records`` as batches split at ``cuts`` (taken modulo the count): one change file each."""
    points = sorted({0, len(records), *[c % (len(records) + 1) for c in cuts]})
    for start, end in itertools.pairwise(points):
        if end > start:
            capture_batch(store, records[start:end], decode_lambda_record, source="test")


def run_cli(argv: list[str]) -> int:
    """Exit code of ``ddb-rewind argv``, whether the command returns it or argparse exits with it."""
    from ddb_rewind.cli import main

    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def random_value(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A random AttributeValue: every type, nesting up to two levels."""
    kinds = ["S", "N", "BOOL", "NULL", "SS", "NS", "B"] + (["M", "L"] if depth < 2 else [])
    kind = rng.choice(kinds)
    if kind == "S":
        return {"S": rng.choice(["a", "b", "ü", "shipped", "new"])}
    if kind == "N":
        return {"N": rng.choice(["1", "2", "5.5", "-3", "12345678901234567890123456789012345678"])}
    if kind == "BOOL":
        return {"BOOL": rng.random() < 0.5}
    if kind == "NULL":
        return {"NULL": True}
    if kind == "SS":
        return {"SS": rng.sample(["x", "y", "z"], rng.randint(1, 3))}
    if kind == "NS":
        return {"NS": rng.sample(["1", "2", "3.5"], rng.randint(1, 3))}
    if kind == "B":
        return {"B": rng.choice(["AAE=", "/w==", "aGk="])}
    if kind == "M":
        names = rng.sample(["city", "zip", "n"], rng.randint(0, 3))
        return {"M": {name: random_value(rng, depth + 1) for name in names}}
    return {"L": [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]}


def random_item(rng: random.Random, key: dict[str, Any]) -> dict[str, Any]:
    """A random item with the given key and a few attributes drawn from a small pool of names."""
    item = dict(key)
    for name in rng.sample(["status", "total", "address", "tags", "flag", "blob"], rng.randint(1, 4)):
        item[name] = random_value(rng)
    return item


def random_workload(seed: int, keys: int = 6, writes: int = 30, table: str = "orders") -> Workload:
    """A random mix of puts and deletes (some by TTL) over a few keys, several per second."""
    rng = random.Random(seed)
    work = Workload(table=table)
    seconds = BASE
    for _ in range(writes):
        seconds += rng.choice([0, 0, 1, 2])
        key = {"pk": {"S": f"k{rng.randrange(keys)}"}}
        if rng.random() < 0.25:
            work.delete(key, seconds, ttl=rng.random() < 0.3)
        else:
            work.put(random_item(rng, key), seconds)
    return work


@dataclass(frozen=True)
class BadDeploy:
    """A table's story: normal traffic, a bad deploy in (``from_s``, ``to_s``], legitimate writes after it."""

    work: Workload
    from_s: int
    to_s: int
    corrupted: tuple[str, ...]
    deleted: tuple[str, ...]
    junk: tuple[str, ...]
    later: tuple[str, ...]  # damaged items written again legitimately after the deploy
    untouched_later: tuple[str, ...]  # items the deploy did not touch, written after it


def bad_deploy(client: Any = None, seed: int = 7, items: int = 40) -> BadDeploy:
    """Normal traffic, then a deploy that corrupts 15% of items, deletes some and adds junk, then legit writes.

    With a moto ``client`` the same writes go to a live table named ``orders``, so the live table
    matches what the stream records describe.
    """
    rng = random.Random(seed)
    work = Workload(client=client)
    if client is not None:
        work.create_live_table()
    keys = [{"pk": {"S": f"order-{n:03d}"}} for n in range(items)]
    for n, key in enumerate(keys):
        work.put(random_item(rng, key) | {
            "total": {"N": f"{n}.50"},
            "bin": {"BS": ["AAE=", "/w=="]},
            "labels": {"SS": ["b", "a"]},
            "prefs": {"M": {"lang": {"S": "nb"}, "lines": {"L": [{"N": "1"}, {"M": {"x": {"NULL": True}}}]}}},
        }, BASE + n)
    for key in rng.sample(keys, items // 4):
        work.put(work.live[item_key(key)] | random_item(rng, key), BASE + items + 1)
    from_s = BASE + 100
    victims = rng.sample(keys, round(items * 0.15) + 3)
    corrupted, deleted = victims[: round(items * 0.15)], victims[round(items * 0.15):]
    for n, key in enumerate(corrupted):
        item = dict(work.live[item_key(key)])
        item["status"] = {"S": "CORRUPT"}
        item.pop("address", None)
        item["total"] = {"N": "-1"}
        work.put(item, from_s + 1 + n % 3)
    for key in deleted:
        work.delete(key, from_s + 4)
    junk = [{"pk": {"S": f"junk-{n}"}, "status": {"S": "CORRUPT"}} for n in range(2)]
    for item in junk:
        work.put(item, from_s + 5)
    to_s = from_s + 5
    later_at = to_s + 100
    work.put(dict(work.live[item_key(corrupted[0])]) | {"note": {"S": "customer fixed it"}}, later_at)
    work.put(dict(work.live[item_key(corrupted[1])]) | {"total": {"N": "99"}}, later_at)
    work.put({**deleted[0], "status": {"S": "re-ordered"}}, later_at)
    work.delete(work.key_of(junk[0]), later_at)
    untouched = next(k for k in keys if k not in victims)
    work.put(dict(work.live[item_key(untouched)]) | {"status": {"S": "later"}}, later_at + 1)
    work.put({"pk": {"S": "order-new"}, "status": {"S": "new"}}, later_at + 2)
    return BadDeploy(
        work=work,
        from_s=from_s,
        to_s=to_s,
        corrupted=tuple(item_key(k) for k in corrupted),
        deleted=tuple(item_key(k) for k in deleted),
        junk=tuple(item_key(work.key_of(j)) for j in junk),
        later=tuple(item_key(k) for k in (corrupted[0], corrupted[1], deleted[0], work.key_of(junk[0]))),
        untouched_later=(item_key(untouched), item_key({"pk": {"S": "order-new"}})),
    )
