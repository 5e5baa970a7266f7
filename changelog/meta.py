"""Per-table meta.json: the key schema, and the DescribeTable description for creating restore targets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from changelog.damage import read_json_object
from changelog.errors import TableNotFound
from changelog.layout import meta_path
from changelog.store import ObjectMissing, Store

# What a restore target needs; the rest of DescribeTable (sizes, ARNs, statuses) is about the source.
_KEEP = (
    "TableName",
    "KeySchema",
    "AttributeDefinitions",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "BillingModeSummary",
    "ProvisionedThroughput",
    "StreamSpecification",
    "TableArn",
    "LatestStreamArn",
    "SSEDescription",
    "TableClassSummary",
    "DeletionProtectionEnabled",
)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_plain(inner) for inner in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def meta_from_description(description: Mapping[str, Any]) -> dict[str, Any]:
    """meta.json content from a DescribeTable ``Table`` description."""
    kept = {key: _plain(description[key]) for key in _KEEP if key in description}
    types = {d["AttributeName"]: d["AttributeType"] for d in description.get("AttributeDefinitions", [])}
    key_schema = [
        {"AttributeName": k["AttributeName"], "KeyType": k["KeyType"], "AttributeType": types.get(k["AttributeName"])}
        for k in description.get("KeySchema", [])
    ]
    return {"table_name": description["TableName"], "key_schema": key_schema, "description": kept}


def meta_from_keys(table: str, keys: dict[str, Any]) -> dict[str, Any]:
    """A fallback meta.json from one record's key when DescribeTable is not allowed.

    The stream tells key names and types, not which is the partition key: with two attributes the
    roles stay unknown (KeyType null) until a describe succeeds.
    """
    names = sorted(keys)
    key_schema = [
        {
            "AttributeName": name,
            "KeyType": "HASH" if len(names) == 1 else None,
            "AttributeType": next(iter(keys[name])),
        }
        for name in names
    ]
    return {"table_name": table, "key_schema": key_schema, "description": None}


def write_meta(store: Store, meta: dict[str, Any]) -> None:
    """Write (replace) a table's meta.json."""
    store.write(meta_path(meta["table_name"]), json.dumps(meta, indent=2, sort_keys=True).encode())


def read_meta(store: Store, table: str) -> dict[str, Any]:
    """Read a table's meta.json; TableNotFound naming the store when there is none, DamagedStore when garbage."""
    try:
        return read_json_object(store, meta_path(table))
    except ObjectMissing:
        raise TableNotFound(
            f"the store {store.uri} holds no table {table!r}: run 'ddb-rewind status' to list its tables"
        ) from None


def key_attribute_schema(meta: dict[str, Any]) -> list[dict[str, str]]:
    """``[{"AttributeName", "AttributeType"}]`` of the table's key, for reading plain keys."""
    return [
        {"AttributeName": k["AttributeName"], "AttributeType": k["AttributeType"]}
        for k in meta.get("key_schema", [])
        if k.get("AttributeType")
    ]
