"""Per-table meta.json: the key schema, and the DescribeTable description for creating restore targets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from changelog.damage import damaged, read_json_object
from changelog.errors import TableNotFound
from changelog.layout import changes_root, meta_path
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
    path = meta_path(table)
    try:
        meta = read_json_object(store, path)
    except ObjectMissing:
        raise TableNotFound(
            f"the store {store.uri} holds no table {table!r}: run 'ddb-rewind status' to list its tables"
        ) from None
    problem = _meta_problem(meta, table)
    if problem:
        raise damaged(store, path, f"is not a sound meta.json ({problem})")
    return meta


def _meta_problem(meta: dict[str, Any], table: str) -> str | None:
    """What is wrong with a meta.json's shape (every reader relies on it), or None."""
    if meta.get("table_name") != table:
        return f"it names table {str(meta.get('table_name'))[:60]!r}, not {table!r}"
    schema = meta.get("key_schema")
    if not isinstance(schema, list) or not 1 <= len(schema) <= 2:
        return "key_schema is not a list of one or two key attributes"
    for entry in schema:
        if (not isinstance(entry, dict) or not isinstance(entry.get("AttributeName"), str)
                or not entry["AttributeName"] or entry.get("KeyType") not in ("HASH", "RANGE", None)
                or entry.get("AttributeType") not in ("S", "N", "B", None)):
            return "a key_schema entry is not {AttributeName, KeyType HASH or RANGE, AttributeType S, N or B}"
    if len({entry["AttributeName"] for entry in schema}) != len(schema):
        return "key_schema names one attribute twice"
    description = meta.get("description")
    if description is not None and not isinstance(description, dict):
        return "description is not a JSON object"
    return None


def key_attribute_schema(meta: dict[str, Any]) -> list[dict[str, str]]:
    """``[{"AttributeName", "AttributeType"}]`` of the table's key, for reading plain keys."""
    return [
        {"AttributeName": k["AttributeName"], "AttributeType": k["AttributeType"]}
        for k in meta.get("key_schema", [])
        if k.get("AttributeType")
    ]


def resolve_key(store: Store, table: str, text: str) -> tuple[dict[str, Any], str]:
    """Read a user KEY for ``table`` (DynamoDB JSON or ``pk=a,sk=5``); returns (key, canonical item_key).

    The key is checked against the stored key schema when meta.json has one. Raises UsageError for
    a malformed key or one of the wrong shape, TableNotFound when the store has no such table.
    Shared by every command that takes ``--key`` (history, forget), so a KEY means one item everywhere.
    """
    from changelog.codec import item_key, parse_key

    try:
        schema: list[dict[str, str]] | None = key_attribute_schema(read_meta(store, table)) or None
    except TableNotFound:
        if not any(path.endswith(".parquet") for path in store.list(changes_root(table) + "/")):
            raise
        schema = None
    key = parse_key(text, schema)
    return key, item_key(key)


def key_names(store: Store, table: str) -> tuple[str, ...]:
    """The table's key attribute names, the partition key first; () for a table captured without meta.json.

    Every item-shaped output puts these first, and ``docs.key_text`` shows keys in this order.
    """
    try:
        meta = read_meta(store, table)
    except TableNotFound:
        return ()
    roles = {"HASH": 0, "RANGE": 1}
    schema = meta.get("key_schema") or []
    ordered = sorted(schema, key=lambda k: (roles.get(k.get("KeyType") or "", 2), str(k.get("AttributeName"))))
    return tuple(str(k["AttributeName"]) for k in ordered if k.get("AttributeName"))
