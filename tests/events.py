"""Stream records built the way Lambda, GetRecords and Kinesis deliver them (for tests and benchmarks)."""

from __future__ import annotations

import base64
import json
from typing import Any

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2024-01-01T00:00:00.000"
TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


def lambda_record(
    table: str,
    event_name: str,
    keys: dict[str, Any],
    seconds: float,
    sequence: int | str,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    event_id: str | None = None,
    identity: dict[str, Any] | None = None,
    view: str = "NEW_AND_OLD_IMAGES",
) -> dict[str, Any]:
    """One record of a Lambda DynamoDB Streams event (epoch seconds, B as base64 text)."""
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": seconds,
        "Keys": keys,
        "SequenceNumber": str(sequence),
        "SizeBytes": len(json.dumps(new or old or keys)),
        "StreamViewType": view,
    }
    if new is not None:
        body["NewImage"] = new
    if old is not None:
        body["OldImage"] = old
    record: dict[str, Any] = {
        "eventID": event_id or f"evt-{sequence}",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": body,
        "eventSourceARN": ARN.format(table=table),
    }
    if identity is not None:
        record["userIdentity"] = identity
    return record


def kinesis_record(
    table: str,
    event_name: str,
    keys: dict[str, Any],
    created: int,
    kinesis_sequence: str,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    event_id: str | None = None,
    precision: str | None = "MILLISECOND",
    shard: str = "shardId-000000000001",
) -> dict[str, Any]:
    """One record of a Lambda Kinesis event carrying a DynamoDB change: the payload JSON, base64."""
    body: dict[str, Any] = {"ApproximateCreationDateTime": created, "Keys": keys, "SizeBytes": 10}
    if precision:
        body["ApproximateCreationDateTimePrecision"] = precision
    if new is not None:
        body["NewImage"] = new
    if old is not None:
        body["OldImage"] = old
    payload = {
        "awsRegion": "us-east-1",
        "eventID": event_id or f"kin-{kinesis_sequence}",
        "eventName": event_name,
        "userIdentity": None,
        "recordFormat": "application/json",
        "tableName": table,
        "dynamodb": body,
        "eventSource": "aws:dynamodb",
    }
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "pk",
            "sequenceNumber": kinesis_sequence,
            "data": base64.b64encode(json.dumps(payload).encode()).decode(),
            "approximateArrivalTimestamp": created / 1000,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard}:{kinesis_sequence}",
        "eventName": "aws:kinesis:record",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/ddb-changes",
        "awsRegion": "us-east-1",
    }


def event(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A Lambda event around the records."""
    return {"Records": records}


def pk_table_description(table: str) -> dict[str, Any]:
    """DescribeTable's ``Table`` for an on-demand table keyed by a string ``pk`` alone."""
    return {
        "TableName": table,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
    }
