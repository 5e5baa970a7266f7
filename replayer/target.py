"""The restore target table: create it from meta.json, or check it may be written into."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from changelog.aws import translate
from changelog.errors import TargetError, TargetExists, TargetMissing

_INDEX_KEEP = ("IndexName", "KeySchema", "Projection")


def _exists(client: Any, name: str) -> bool:
    try:
        client.describe_table(TableName=name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return False
        raise translate(exc, f"describing table {name!r}") from None
    return True


def create_table_request(name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """CreateTable arguments for a copy of the source: keys, indexes and billing mode from meta.json."""
    description = meta.get("description") or {}
    key_schema = description.get("KeySchema") or [
        {"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in meta["key_schema"]
    ]
    if any(not k.get("KeyType") for k in key_schema):
        raise TargetError("meta.json does not say which key is the partition key; create the target table yourself")
    definitions = description.get("AttributeDefinitions") or [
        {"AttributeName": k["AttributeName"], "AttributeType": k["AttributeType"]} for k in meta["key_schema"]
    ]
    billing = (description.get("BillingModeSummary") or {}).get("BillingMode", "PAY_PER_REQUEST")
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": key_schema,
        "AttributeDefinitions": definitions,
        "BillingMode": billing,
    }
    throughput = description.get("ProvisionedThroughput") or {}
    if billing == "PROVISIONED":
        request["ProvisionedThroughput"] = {
            "ReadCapacityUnits": max(1, int(throughput.get("ReadCapacityUnits", 5))),
            "WriteCapacityUnits": max(1, int(throughput.get("WriteCapacityUnits", 5))),
        }
    gsis = []
    for index in description.get("GlobalSecondaryIndexes") or []:
        kept = {key: index[key] for key in _INDEX_KEEP if key in index}
        if billing == "PROVISIONED":
            provisioned = index.get("ProvisionedThroughput") or {}
            kept["ProvisionedThroughput"] = {
                "ReadCapacityUnits": max(1, int(provisioned.get("ReadCapacityUnits", 5))),
                "WriteCapacityUnits": max(1, int(provisioned.get("WriteCapacityUnits", 5))),
            }
        gsis.append(kept)
    if gsis:
        request["GlobalSecondaryIndexes"] = gsis
    lsis = [{key: index[key] for key in _INDEX_KEEP if key in index}
            for index in description.get("LocalSecondaryIndexes") or []]
    if lsis:
        request["LocalSecondaryIndexes"] = lsis
    return request


def prepare_target(client: Any, name: str, meta: dict[str, Any], *, create: bool, into_existing: bool,
                   dry_run: bool = False) -> str:
    """Make sure ``name`` can receive the restore; returns what was done (``created``/``existing``).

    Refuses an existing table unless ``into_existing``, and a missing one unless ``create``.
    """
    exists = _exists(client, name)
    if exists and create:
        raise TargetExists(f"target table {name!r} already exists: pick a new name, or drop --create-table "
                          "and pass --into-existing to write into it")
    if exists and not into_existing:
        raise TargetExists(f"target table {name!r} already exists: pass --into-existing to write into it "
                          "(add --clear-first to empty it before)")
    if not exists and not create:
        raise TargetMissing(f"target table {name!r} does not exist: pass --create-table to create it from meta.json")
    if exists:
        return "existing"
    if not dry_run:
        client.create_table(**create_table_request(name, meta))
        client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return "created"


def key_names(client: Any, name: str) -> list[str]:
    """The key attribute names of a live table; raises TargetError when it does not exist."""
    try:
        description = client.describe_table(TableName=name)["Table"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise TargetMissing(f"DynamoDB table {name!r} does not exist (check the name and region)") from None
        raise translate(exc, f"describing DynamoDB table {name!r}") from None
    return [k["AttributeName"] for k in description["KeySchema"]]


def scan_keys(client: Any, name: str, *, page_size: int | None = None) -> Iterator[dict[str, Any]]:
    """Every key of a live table (for clearing it before a restore), one Scan page at a time.

    The table is checked at once (a missing one raises TargetError here); keys are then yielded as
    pages arrive, so clearing a table of any size holds only the pages in flight, never every key.
    """
    names = key_names(client, name)
    projection = ", ".join(f"#k{i}" for i in range(len(names)))
    aliases = {f"#k{i}": n for i, n in enumerate(names)}
    paging = {"PageSize": page_size} if page_size else {}

    def pages() -> Iterator[dict[str, Any]]:
        paginator = client.get_paginator("scan")
        for page in paginator.paginate(TableName=name, ProjectionExpression=projection,
                                       ExpressionAttributeNames=aliases, PaginationConfig=paging):
            yield from page.get("Items", [])

    return pages()


def table_exists(client: Any, name: str) -> bool:
    """Whether a DynamoDB table of that name exists (other failures are translated AWS errors)."""
    return _exists(client, name)
