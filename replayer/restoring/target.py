"""The restore target table: create it from meta.json, or check it may be written into."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from changelog.aws import translate
from changelog.errors import TargetError, TargetExists, TargetKeyMismatch, TargetMissing

_INDEX_KEEP = ("IndexName", "KeySchema", "Projection")


def _described(client: Any, name: str) -> dict[str, Any] | None:
    """The live table's DescribeTable ``Table``; None when it does not exist."""
    try:
        table: dict[str, Any] = client.describe_table(TableName=name)["Table"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise translate(exc, f"describing table {name!r}") from None
    return table


def _key_text(keys: dict[str, str | None], roles: dict[str, str | None]) -> str:
    """``pk (S, partition), sk (N, sort)``: partition key first."""
    role_names = {"HASH": "partition", "RANGE": "sort"}
    ordered = sorted(keys, key=lambda k: (roles.get(k) != "HASH", k))
    return ", ".join(f"{k} ({keys[k] or '?'}"
                     + (f", {role_names.get(roles[k] or '', roles[k])}" if roles.get(k) else "") + ")"
                     for k in ordered)


def check_same_key(name: str, table: dict[str, Any], meta: dict[str, Any]) -> None:
    """Refuse a target whose key is not the restored items' (names, types and which is the partition
    key): it is another table, and ``--clear-first`` would already have emptied it."""
    types = {d["AttributeName"]: d["AttributeType"] for d in table.get("AttributeDefinitions", [])}
    target = {k["AttributeName"]: types.get(k["AttributeName"]) for k in table.get("KeySchema", [])}
    target_roles = {k["AttributeName"]: k.get("KeyType") for k in table.get("KeySchema", [])}
    source = {k["AttributeName"]: k.get("AttributeType") for k in meta.get("key_schema", [])}
    source_roles = {k["AttributeName"]: k.get("KeyType") for k in meta.get("key_schema", [])}
    if not source or not target:
        return
    differ = set(target) != set(source) or any(
        (source[k] and target[k] and source[k] != target[k])
        or (source_roles[k] and target_roles[k] and source_roles[k] != target_roles[k]) for k in source)
    if differ:
        raise TargetKeyMismatch(f"target table {name!r} is keyed by {_key_text(target, target_roles)}, the restored "
                                f"items by {_key_text(source, source_roles)}: it is not a table of these items "
                                "(nothing was cleared or written)")


# What --without can leave out of the restored table; "settings" leaves out all of them (keys, indexes
# and billing mode only, as meta.json alone gives).
OPTIONAL_SETTINGS = ("sse", "stream", "table-class", "deletion-protection", "on-demand-throughput",
                     "warm-throughput", "tags", "ttl", "pitr", "resource-policy", "autoscaling")
# Warm throughput a new on-demand table gets anyway (AWS docs): asking for it is redundant, so only
# more than this is requested.
_DEFAULT_WARM = {"ReadUnitsPerSecond": 12000, "WriteUnitsPerSecond": 4000}


def _capacity(throughput: dict[str, Any]) -> dict[str, int]:
    return {
        "ReadCapacityUnits": max(1, int(throughput.get("ReadCapacityUnits", 5))),
        "WriteCapacityUnits": max(1, int(throughput.get("WriteCapacityUnits", 5))),
    }


def _warm(entry: dict[str, Any], billing: str) -> dict[str, int] | None:
    """The warm throughput to ask for: only what a new table would not get by itself."""
    warm = entry.get("WarmThroughput") or {}
    wanted = {k: int(warm[k]) for k in ("ReadUnitsPerSecond", "WriteUnitsPerSecond") if k in warm}
    if not wanted:
        return None
    if billing == "PROVISIONED":
        implied = entry.get("ProvisionedThroughput") or {}
        floor = {"ReadUnitsPerSecond": int(implied.get("ReadCapacityUnits", 0)),
                 "WriteUnitsPerSecond": int(implied.get("WriteCapacityUnits", 0))}
    else:
        floor = _DEFAULT_WARM
    return wanted if any(wanted[k] > floor[k] for k in wanted) else None


def billing_mode(description: dict[str, Any]) -> str:
    """The source's billing mode. DescribeTable leaves BillingModeSummary out for a table created
    without a mode and never switched, which is provisioned: its capacity then says so. Without
    either (meta.json of keys only) a copy is on demand, which needs no capacity to be guessed."""
    summary = (description.get("BillingModeSummary") or {}).get("BillingMode")
    if summary:
        return str(summary)
    capacity = description.get("ProvisionedThroughput") or {}
    provisioned = any(int(capacity.get(k) or 0) > 0 for k in ("ReadCapacityUnits", "WriteCapacityUnits"))
    return "PROVISIONED" if provisioned else "PAY_PER_REQUEST"


def create_table_request(name: str, meta: dict[str, Any], description: dict[str, Any] | None = None, *,
                         without: frozenset[str] = frozenset(),
                         extra_indexes: tuple[dict[str, Any], ...] = (),
                         extra_definitions: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """CreateTable arguments for a copy of the source: the one place they are built.

    ``description`` is the source's DescribeTable as it was at T (from the settings history); without
    it, meta.json's gives keys, indexes and billing mode only. With it, every setting CreateTable takes
    is copied (encryption, stream, table class, deletion protection, on-demand and warm throughput)
    except those named in ``without``. ``extra_indexes`` are GSIs the table got after T, asked for
    (``extra_definitions``: the attribute types their keys need).
    """
    full = description is not None and "settings" not in without
    description = description if description is not None else (meta.get("description") or {})
    key_schema = description.get("KeySchema") or [
        {"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in meta["key_schema"]
    ]
    if any(not k.get("KeyType") for k in key_schema):
        raise TargetError("meta.json does not say which key is the partition key; create the target table yourself")
    definitions = description.get("AttributeDefinitions") or [
        {"AttributeName": k["AttributeName"], "AttributeType": k["AttributeType"]} for k in meta["key_schema"]
    ]
    billing = billing_mode(description)
    request: dict[str, Any] = {"TableName": name, "KeySchema": key_schema, "BillingMode": billing}
    if billing == "PROVISIONED":
        request["ProvisionedThroughput"] = _capacity(description.get("ProvisionedThroughput") or {})
    gsis = []
    for index in [*(description.get("GlobalSecondaryIndexes") or []), *extra_indexes]:
        kept = {key: index[key] for key in _INDEX_KEEP if key in index}
        if billing == "PROVISIONED":
            kept["ProvisionedThroughput"] = _capacity(index.get("ProvisionedThroughput") or {})
        if full and "on-demand-throughput" not in without and index.get("OnDemandThroughput"):
            kept["OnDemandThroughput"] = index["OnDemandThroughput"]
        warm = _warm(index, billing) if full and "warm-throughput" not in without else None
        if warm:
            kept["WarmThroughput"] = warm
        gsis.append(kept)
    if gsis:
        request["GlobalSecondaryIndexes"] = gsis
    lsis = [{key: index[key] for key in _INDEX_KEEP if key in index}
            for index in description.get("LocalSecondaryIndexes") or []]
    if lsis:
        request["LocalSecondaryIndexes"] = lsis
    # CreateTable wants exactly the attributes the keys name: a later index may add some.
    named = {k["AttributeName"] for entry in [request, *gsis, *lsis] for k in entry["KeySchema"]}
    types = {d["AttributeName"]: d for d in [*extra_definitions, *definitions]}  # the source's order wins
    order = [d["AttributeName"] for d in definitions] + sorted({*types} - {d["AttributeName"] for d in definitions})
    request["AttributeDefinitions"] = [types[n] for n in order if n in named]
    if full:
        _add_settings(request, description, billing, without)
    return request


def _add_settings(request: dict[str, Any], description: dict[str, Any], billing: str,
                  without: frozenset[str]) -> None:
    """The table-level settings CreateTable takes, as the source had them."""
    stream = description.get("StreamSpecification") or {}
    if "stream" not in without and stream.get("StreamEnabled"):
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    sse = description.get("SSEDescription") or {}
    if "sse" not in without and sse.get("Status") in ("ENABLED", "ENABLING", "UPDATING"):
        request["SSESpecification"] = {"Enabled": True, "SSEType": sse.get("SSEType", "KMS")}
        if sse.get("KMSMasterKeyArn"):
            request["SSESpecification"]["KMSMasterKeyId"] = sse["KMSMasterKeyArn"]
    table_class = (description.get("TableClassSummary") or {}).get("TableClass")
    if "table-class" not in without and table_class:
        request["TableClass"] = table_class
    if "deletion-protection" not in without and description.get("DeletionProtectionEnabled"):
        request["DeletionProtectionEnabled"] = True
    if "on-demand-throughput" not in without and description.get("OnDemandThroughput"):
        request["OnDemandThroughput"] = description["OnDemandThroughput"]
    warm = _warm(description, billing) if "warm-throughput" not in without else None
    if warm:
        request["WarmThroughput"] = warm


def prepare_target(client: Any, name: str, meta: dict[str, Any], *, create: bool, into_existing: bool,
                   dry_run: bool = False, request: dict[str, Any] | None = None) -> str:
    """Make sure ``name`` can receive the restore; returns what was done (``created``/``existing``).

    Refuses an existing table unless ``into_existing``, and a missing one unless ``create``.
    ``request`` is the CreateTable call to make (default: from meta.json alone).
    """
    described = _described(client, name)
    exists = described is not None
    if exists and create:
        raise TargetExists(f"target table {name!r} already exists: pick a new name, or drop --create-table "
                          "and pass --into-existing to write into it")
    if exists and not into_existing:
        raise TargetExists(f"target table {name!r} already exists: pass --into-existing to write into it "
                          "(add --clear-first to empty it before)")
    if not exists and not create:
        raise TargetMissing(f"target table {name!r} does not exist: pass --create-table to create it with the "
                            "settings the table had at that moment (or --without settings: keys and indexes only)")
    if described is not None:
        check_same_key(name, described, meta)
        return "existing"
    if not dry_run:
        client.create_table(**(request or create_table_request(name, meta)))
        client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return "created"


def _about_table(name: str, what: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``call``'s answer about live table ``name``; TargetMissing when the table does not exist."""
    try:
        return call()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise TargetMissing(f"DynamoDB table {name!r} does not exist (check the name and region)") from None
        raise translate(exc, f"{what} DynamoDB table {name!r}") from None


def key_names(client: Any, name: str, meta: dict[str, Any] | None = None) -> list[str]:
    """The key attribute names of a live table, the partition key first; raises TargetError when it
    does not exist, or is keyed otherwise than ``meta`` (meta.json) says the items are."""
    description = _about_table(name, "describing", lambda: client.describe_table(TableName=name)["Table"])
    if meta is not None:
        check_same_key(name, description, meta)
    return [k["AttributeName"] for k in sorted(description["KeySchema"], key=lambda k: k.get("KeyType") != "HASH")]


def ttl_attribute(client: Any, name: str) -> str | None:
    """The attribute a live table's TTL expires items by; None when its TTL is off (or turning off)."""
    description = _about_table(name, "reading the TTL of",
                               lambda: client.describe_time_to_live(TableName=name)["TimeToLiveDescription"])
    if description.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        return None
    attribute = description.get("AttributeName")
    return attribute if isinstance(attribute, str) and attribute else None


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
    return _described(client, name) is not None
