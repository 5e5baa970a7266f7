"""Restore through DynamoDB's own ImportTable: a new table filled from an export's data files on S3.

The table definition is the one ``--create-table`` uses (replayer.restoring.target.create_table_request),
kept to what ImportTable's TableCreationParameters can carry. Local secondary indexes cannot be
created by an import (nor added later), so a table that has them is refused rather than restored
without them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from changelog.errors import TargetError, WriteFailed
from changelog.progress import Progress
from replayer.restoring.target import create_table_request

# ImportTable's TableCreationParameters (API reference); anything else CreateTable takes is not carried.
CREATION_PARAMETERS = ("TableName", "AttributeDefinitions", "KeySchema", "BillingMode", "ProvisionedThroughput",
                       "OnDemandThroughput", "SSESpecification", "GlobalSecondaryIndexes")
DONE = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


@dataclass(frozen=True)
class ImportRequest:
    """The ImportTable arguments, and the parts of the table definition an import cannot carry."""

    arguments: dict[str, Any]
    not_carried: tuple[str, ...]


@dataclass(frozen=True)
class ImportResult:
    """What DescribeImport says of a finished import."""

    arn: str
    status: str
    imported: int
    processed: int
    errors: int
    failure: str


def import_request(name: str, meta: dict[str, Any], bucket: str, key_prefix: str) -> ImportRequest:
    """ImportTable arguments that create ``name`` like the source (keys, GSIs, billing) from the data files
    under ``s3://bucket/key_prefix`` (gzip'd DynamoDB JSON)."""
    table = create_table_request(name, meta)
    if table.get("LocalSecondaryIndexes"):
        names = ", ".join(index["IndexName"] for index in table["LocalSecondaryIndexes"])
        raise TargetError(f"the table has local secondary indexes ({names}), which ImportTable cannot create "
                          "(and no table can add later): restore with --create-table instead of --via-import")
    parameters = {key: value for key, value in table.items() if key in CREATION_PARAMETERS}
    return ImportRequest(
        arguments={
            "S3BucketSource": {"S3Bucket": bucket, "S3KeyPrefix": key_prefix},
            "InputFormat": "DYNAMODB_JSON",
            "InputCompressionType": "GZIP",
            "TableCreationParameters": parameters,
        },
        not_carried=tuple(sorted(key for key in table if key not in CREATION_PARAMETERS)),
    )


def _result(description: dict[str, Any]) -> ImportResult:
    failure = " ".join(str(part) for part in (description.get("FailureCode"), description.get("FailureMessage"))
                       if part)
    return ImportResult(
        arn=str(description.get("ImportArn", "")),
        status=str(description.get("ImportStatus", "")),
        imported=int(description.get("ImportedItemCount") or 0),
        processed=int(description.get("ProcessedItemCount") or 0),
        errors=int(description.get("ErrorCount") or 0),
        failure=failure,
    )


def wait_for_import(client: Any, arn: str, progress: Progress, *, first_poll: float = 0.5, max_poll: float = 15.0,
                    sleep: Callable[[float], None] = time.sleep) -> ImportResult:
    """Poll DescribeImport until the import ends; ``progress`` follows ProcessedItemCount."""
    delay = first_poll
    while True:
        result = _result(client.describe_import(ImportArn=arn)["ImportTableDescription"])
        progress.advance(max(result.processed - progress.done, 0))
        if result.status in DONE:
            progress.close()
            return result
        sleep(delay)
        delay = min(delay * 2, max_poll)


def check_result(result: ImportResult, name: str, expected: int) -> None:
    """Refuse (exit 3) an import that did not complete, reported errors, or imported another count."""
    where = f"(import {result.arn}; its CloudWatch log group names the bad items)"
    if result.status != "COMPLETED":
        raise WriteFailed(f"the import into {name} ended {result.status}"
                          f"{': ' + result.failure if result.failure else ''} {where}; "
                          f"delete table {name} if it was created, then re-run")
    if result.errors or result.imported != expected:
        raise WriteFailed(f"the import into {name} imported {result.imported:,} of {expected:,} items with "
                          f"{result.errors:,} errors {where}; delete table {name}, then re-run")
