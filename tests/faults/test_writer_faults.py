"""Restores into DynamoDB under its push-back: throttling, partial UnprocessedItems, transaction conflicts."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer

from changelog.codec import item_key
from replayer.restoring import writer
from replayer.restoring.rate import AdaptiveRate, RateSettings
from replayer.restoring.target import scan_keys
from replayer.restoring.writer import WriteSettings, write_images, write_requests
from tests.faults.proxy import FaultProxy
from tests.workloads import random_workload, run_cli

FAST = WriteSettings(workers=2, base_delay=0.001, max_delay=0.01)


def _table_items(direct: Callable[[str], Any], name: str) -> dict[str, Any]:
    from changelog.codec import binaries_to_base64

    items = direct("dynamodb").scan(TableName=name)["Items"]
    return {item_key({"pk": item["pk"]}): binaries_to_base64(item) for item in items}


def _create(direct: Callable[[str], Any], name: str) -> None:
    direct("dynamodb").create_table(TableName=name, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                                    BillingMode="PAY_PER_REQUEST")


def test_transaction_conflicts_are_retried_like_throttling(proxy: FaultProxy, direct: Callable[[str], Any]) -> None:
    _create(direct, "target")
    conflicts = proxy.add("error", operation="BatchWriteItem", status=400, code="TransactionConflictException",
                          count=3)
    requests = [{"PutRequest": {"Item": {"pk": {"S": f"k{n}"}}}} for n in range(10)]
    report, errors = write_requests(boto3.client("dynamodb"), "target", requests, settings=FAST)
    assert conflicts.exhausted
    assert (report.written, report.failed, errors) == (10, 0, [])
    assert len(direct("dynamodb").scan(TableName="target")["Items"]) == 10


@pytest.mark.slow
def test_a_replay_into_a_throttling_table_with_partial_unprocessed_items_equals_the_model(
        proxy: FaultProxy, direct: Callable[[str], Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each push-back still cuts the rate, but never under 500 items/s: at the default floor of 1/s
    # these 60 items took 18 s to pace (test_rate holds the pacing; this test, what is written).
    monkeypatch.setattr(writer, "AdaptiveRate", lambda ceiling, clock: AdaptiveRate(
        ceiling, settings=RateSettings(floor=500.0), clock=clock))
    work = random_workload(seed=21, keys=60, writes=150)
    store = tmp_path / "store"
    store.mkdir()
    from changelog.store import open_store

    work.capture(open_store(str(store)), batch=25)
    _create(direct, "restored")
    direct("dynamodb").put_item(TableName="restored", Item={"pk": {"S": "stale"}})  # cleared first
    throttled = proxy.add("error", operation="BatchWriteItem", status=400,
                          code="ProvisionedThroughputExceededException", count=6)
    partial = proxy.add("unprocessed", operation="BatchWriteItem", keep=3, count=12)
    second = work.steps[-1].seconds
    assert run_cli(["replay", "--table", work.table, "--store", str(store), "--at", str(second),
                    "--to-table", "restored", "--into-existing", "--clear-first", "--yes", "--workers", "2"]) == 0
    assert throttled.exhausted and partial.exhausted
    assert _table_items(direct, "restored") == work.state_at(second)


def test_clearing_a_table_reads_its_keys_one_page_at_a_time(proxy: FaultProxy, direct: Callable[[str], Any]) -> None:
    _create(direct, "big")
    for n in range(20):
        direct("dynamodb").put_item(TableName="big", Item={"pk": {"S": f"k{n:02d}"}})
    keys = scan_keys(boto3.client("dynamodb"), "big", page_size=5)
    first = next(iter(keys))
    assert len(proxy.requests(operation="Scan")) == 1  # only the first page has been fetched
    assert TypeDeserializer().deserialize(first["pk"]).startswith("k")
    assert len([first, *keys]) == 20
    assert len(proxy.requests(operation="Scan")) >= 4


def test_botocore_retries_a_failed_call_with_the_same_body(proxy: FaultProxy, direct: Callable[[str], Any]) -> None:
    _create(direct, "target")
    failing = proxy.add("error", operation="BatchWriteItem", status=500, code="InternalServerError", count=1)
    client = boto3.client("dynamodb")
    bodies: list[bytes] = []
    client.meta.events.register("before-send.dynamodb.BatchWriteItem", lambda request, **_: bodies.append(request.body))
    images = [f'{{"pk":{{"S":"k{n}"}},"v":{{"N":"{n}.50"}}}}' for n in range(5)]
    report, errors = write_images(client, "target", images, settings=FAST)
    assert failing.exhausted
    assert (report.written, report.failed, errors) == (5, 0, [])
    assert len(bodies) == 2 and bodies[0] == bodies[1]  # one call of ours, two attempts of botocore's
    assert len(direct("dynamodb").scan(TableName="target")["Items"]) == 5


def test_unprocessed_items_are_sent_again_byte_for_byte(proxy: FaultProxy, direct: Callable[[str], Any]) -> None:
    _create(direct, "target")
    partial = proxy.add("unprocessed", operation="BatchWriteItem", keep=2, count=4)
    images = [json.dumps({"pk": {"S": f"ключ-{n}"}, "b": {"B": base64.b64encode(bytes([n, 0, 255])).decode()},
                          "n": {"N": "1234567890123456789012345678901234567" + str(n)}}, ensure_ascii=False)
              for n in range(10)]
    report, errors = write_images(boto3.client("dynamodb"), "target", images, settings=FAST)
    assert partial.exhausted
    assert (report.written, report.failed, errors) == (10, 0, [])
    assert report.retried > 0
    assert sorted(_table_items(direct, "target").values(), key=str) == sorted(map(json.loads, images), key=str)
