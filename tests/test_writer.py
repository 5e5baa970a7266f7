"""The batch writer loses nothing when DynamoDB returns UnprocessedItems or throttles."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from replayer.restoring.writer import WriteSettings, chunk_requests, write_requests

TABLE = "target"


class FlakyDynamo:
    """The real moto client, with DynamoDB's two ways of pushing back injected into BatchWriteItem."""

    def __init__(self, client: Any, unprocessed_calls: int = 0, throttled_calls: int = 0) -> None:
        self.client = client
        self.unprocessed_calls = unprocessed_calls
        self.throttled_calls = throttled_calls
        self.calls = 0

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        self.calls += 1
        if self.throttled_calls:
            self.throttled_calls -= 1
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                              "BatchWriteItem")
        requests = RequestItems[TABLE]
        if self.unprocessed_calls and len(requests) > 1:
            self.unprocessed_calls -= 1
            half = len(requests) // 2
            self.client.batch_write_item(RequestItems={TABLE: requests[:half]})
            return {"UnprocessedItems": {TABLE: requests[half:]}}
        return dict(self.client.batch_write_item(RequestItems=RequestItems))


@pytest.fixture
def dynamo(aws: None) -> Any:
    client = boto3.client("dynamodb")
    client.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    return client


def _puts(count: int) -> list[dict[str, Any]]:
    return [{"PutRequest": {"Item": {"pk": {"S": f"k{i:04d}"}, "n": {"N": str(i)}}}} for i in range(count)]


def _count(client: Any) -> int:
    return sum(page["Count"] for page in client.get_paginator("scan").paginate(TableName=TABLE, Select="COUNT"))


FAST = WriteSettings(workers=4, base_delay=0.0, max_delay=0.0)


def test_unprocessed_items_are_retried_until_written(dynamo: Any) -> None:
    flaky = FlakyDynamo(dynamo, unprocessed_calls=6)
    report, errors = write_requests(flaky, TABLE, _puts(130), settings=FAST, sleep=lambda _: None)
    assert (report.written, report.failed, errors) == (130, 0, [])
    assert report.retried > 0
    assert _count(dynamo) == 130


def test_throttled_calls_are_retried_with_backoff(dynamo: Any) -> None:
    sleeps: list[float] = []
    flaky = FlakyDynamo(dynamo, throttled_calls=3)
    report, _ = write_requests(flaky, TABLE, _puts(30), settings=WriteSettings(workers=1, base_delay=0.01),
                               sleep=sleeps.append)
    assert (report.written, report.failed) == (30, 0)
    assert len(sleeps) == 3
    assert _count(dynamo) == 30


def test_requests_still_unprocessed_after_the_last_attempt_are_counted_as_failed(dynamo: Any) -> None:
    flaky = FlakyDynamo(dynamo, throttled_calls=10**6)
    report, errors = write_requests(flaky, TABLE, _puts(10),
                                    settings=WriteSettings(workers=1, max_attempts=3, base_delay=0.0),
                                    sleep=lambda _: None)
    assert (report.written, report.failed) == (0, 10)
    assert errors


def test_a_non_retryable_error_fails_its_batch_and_says_why(dynamo: Any) -> None:
    report, errors = write_requests(dynamo, "no-such-table", _puts(5), settings=FAST)
    assert report.failed == 5
    assert any("ResourceNotFound" in error for error in errors)


def test_calls_hold_at_most_25_requests() -> None:
    assert [len(batch) for batch in chunk_requests(_puts(60))] == [25, 25, 10]


def test_calls_stay_under_16_mb() -> None:
    big = [{"PutRequest": {"Item": {"pk": {"S": str(i)}, "blob": {"S": "x" * 390_000}}}} for i in range(60)]
    sizes = [len(batch) for batch in chunk_requests(big)]
    assert sum(sizes) == 60
    assert max(sizes) <= 16 * 1024 * 1024 // 390_000
