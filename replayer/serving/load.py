"""The tables of a moment, loaded: every table proven at T first, then each one's state into an index.

The state is the one ``replay`` computes (``replayer.restoring.replay.open_items``: coverage, gaps,
quarantine and integrity refusals included), and the tables are checked together
(``check_all_restorable``) before any is loaded, so a moment that cannot be proven for one of them
refuses at once. What DescribeTable says comes from the settings recorded for T
(``changelog.settings``), the key schema from the table's meta.json.

Nothing here imports moto: ``server`` imports it beside the loading, and ``moment.backend_of`` then
puts the loaded tables behind moto's handler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from changelog.errors import SettingsUnknown
from changelog.meta import read_meta
from changelog.settings import settings_at
from changelog.store import Store
from changelog.timefmt import format_time, to_micros
from replayer.restoring.many import check_all_restorable
from replayer.restoring.replay import open_items
from replayer.serving.index import Index, IndexKeys, KeyNames, build, layout

_DESCRIBED = ("TableName", "KeySchema", "AttributeDefinitions", "BillingModeSummary", "ProvisionedThroughput",
              "GlobalSecondaryIndexes", "LocalSecondaryIndexes", "TableArn", "TableId", "StreamSpecification",
              "SSEDescription", "TableClassSummary", "DeletionProtectionEnabled", "OnDemandThroughput",
              "WarmThroughput")


def key_schema(meta: Mapping[str, Any], table: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """KeySchema and the key attributes' AttributeDefinitions from meta.json."""
    schema = meta["key_schema"]
    if any(k.get("KeyType") not in ("HASH", "RANGE") or k.get("AttributeType") not in ("S", "N", "B")
           for k in schema):
        raise SettingsUnknown(f"the store does not record which key of {table!r} is the partition key (DescribeTable "
                              "was never allowed when it was captured): run 'ddb-rewind bootstrap' with "
                              "dynamodb:DescribeTable allowed")
    ordered = sorted(schema, key=lambda k: k["KeyType"] != "HASH")
    return ([{"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in ordered],
            [{"AttributeName": k["AttributeName"], "AttributeType": k["AttributeType"]} for k in ordered])


def describe_at(store: Store, table: str, meta: Mapping[str, Any], at_us: int) -> dict[str, Any]:
    """DescribeTable's ``Table`` as configured at ``at_us``, as far as the store recorded it.

    Indexes come from the settings in force at T. Without settings recorded at or before T the
    description holds only what cannot change: the keys and the local secondary indexes.
    """
    schema, attributes = key_schema(meta, table)
    try:
        version = settings_at(store, table, at_us)
    except SettingsUnknown:
        version = None
    recorded = version.settings.get("table") if version is not None else None
    known = isinstance(recorded, dict) and "unknown" not in recorded
    source: Mapping[str, Any] = recorded if isinstance(recorded, dict) and known else (meta.get("description") or {})
    description = {key: source[key] for key in _DESCRIBED if key in source}
    if not known:
        description.pop("GlobalSecondaryIndexes", None)
    description.update({"TableName": table, "KeySchema": schema})
    description.setdefault("AttributeDefinitions", attributes)
    for index in description.get("GlobalSecondaryIndexes") or []:
        index["IndexStatus"] = "ACTIVE"
    return description


def served_indexes(description: Mapping[str, Any], names: KeyNames) -> tuple[IndexKeys, ...]:
    """The secondary indexes of ``description`` that can be served: one partition and at most one sort attribute.

    An index with keys of several attributes, or a key whose type is not recorded, is left out: a
    request naming it is refused (``MomentTable``), never answered from a guess.
    """
    types = tuple((str(d["AttributeName"]), str(d["AttributeType"]))
                  for d in description.get("AttributeDefinitions") or [])
    declared = dict(types)
    served = []
    indexes = [*(description.get("LocalSecondaryIndexes") or []), *(description.get("GlobalSecondaryIndexes") or [])]
    for index in indexes:
        schema = index.get("KeySchema") or []
        hashes = [k["AttributeName"] for k in schema if k.get("KeyType") == "HASH"]
        ranges = [k["AttributeName"] for k in schema if k.get("KeyType") == "RANGE"]
        if len(hashes) != 1 or len(ranges) > 1:
            continue
        range_key = ranges[0] if ranges else None
        order_key = range_key or names.range_key or names.hash_key
        if any(declared.get(a) not in ("S", "N", "B") for a in (hashes[0], order_key, names.hash_key,
                                                                *([names.range_key] if names.range_key else []))):
            continue
        served.append(IndexKeys(str(index["IndexName"]), hashes[0], range_key, order_key, types))
    return tuple(served)


@dataclass(frozen=True)
class Loaded:
    """One table of the moment, loaded: its index on disk and what DescribeTable says of it."""

    table: str
    key_schema: list[dict[str, str]]
    attributes: list[dict[str, str]]
    index: Index
    description: dict[str, Any]
    indexes: tuple[IndexKeys, ...]


def load_tables(store: Store, tables: list[str], at: datetime, workdir: Path,
                say: Callable[[str], None] = lambda line: None) -> list[Loaded]:
    """Prove ``at`` for every table, then load each table's state at ``at`` into an index under ``workdir``."""
    if len(tables) > 1:  # one table is proven by open_items itself, as replay's is
        check_all_restorable(store, tables, at)
    at_us = to_micros(at)
    loaded = []
    for number, table in enumerate(tables):
        meta = read_meta(store, table)
        description = describe_at(store, table, meta, at_us)
        schema, attributes = key_schema(meta, table)
        names = KeyNames(schema[0]["AttributeName"], schema[1]["AttributeName"] if len(schema) > 1 else None)
        path = workdir / f"table-{number}"
        path.mkdir()
        # The state is keyed, put in key order and written as the items file as it is computed: one sort, no copy.
        con = open_items(store, table, at, layout=layout(names, {a["AttributeName"]: a["AttributeType"]
                                                                 for a in attributes}, path / "items.arrow"))
        try:
            indexes = served_indexes({**description, "AttributeDefinitions":
                                      description.get("AttributeDefinitions") or attributes}, names)
            count = build(path, con, indexes)
        finally:
            con.close()
        say(f"loaded {table}: {count:,} items as of {format_time(at)}")
        index = Index(path, count, len(indexes),
                      tuple(n for n, keys in enumerate(indexes) if keys.range_key is None))
        loaded.append(Loaded(table, schema, description.get("AttributeDefinitions") or attributes, index,
                             description, indexes))
    return loaded
