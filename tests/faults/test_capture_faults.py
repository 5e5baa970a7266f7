"""Capture under faults: the Lambda handler, retried as Lambda retries, ends with exactly the model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from changelog.codec import decode_lambda_record
from changelog.layout import table_root
from changelog.store import Store
from stream_consumer import capture, handler
from stream_consumer.capture import capture_batch
from tests.events import event
from tests.faults.harness import assert_every_replay_equals_the_model, s3_only
from tests.faults.proxy import FaultProxy
from tests.workloads import random_workload


def _deliver_until_done(records: list[dict[str, Any]], attempts: int = 20) -> int:
    """Invoke the handler with a batch until it reports no failure, as Lambda retries; returns failures."""
    for failures in range(attempts):
        answer = handler.lambda_handler(event(records), None)
        if not answer["batchItemFailures"]:
            return failures
        assert answer["batchItemFailures"] == [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]
    raise AssertionError("the batch never succeeded")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["error", "drop", "drop_after"])
def test_capture_under_s3_faults_retried_by_lambda_equals_the_model(
        fault_store: Store, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    s3_only(fault_store)
    monkeypatch.setenv("REWIND_STORE", fault_store.uri)
    work = random_workload(seed=11, writes=60)
    # Every third change-file PUT fails for longer than botocore's three attempts, so whole
    # batches fail and are redelivered; meta.json look-ups fail as well.
    proxy.add(fault, method="PUT", service="s3", path=r"/changes/", count=40, skip=2)
    proxy.add(fault, method="HEAD", service="s3", path=r"meta\.json", count=4)
    failed = sum(_deliver_until_done(work.records[start:start + 7]) for start in range(0, len(work.records), 7))
    assert failed > 0
    proxy.clear()
    assert_every_replay_equals_the_model(fault_store, work)


def test_a_dropped_connection_reading_meta_json_fails_the_batch_for_retry(
        fault_store: Store, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    s3_only(fault_store)
    monkeypatch.setenv("REWIND_STORE", fault_store.uri)
    work = random_workload(seed=3, writes=10)
    lost = proxy.add("drop", method="HEAD", service="s3", path=r"meta\.json", count=3)
    answer = handler.lambda_handler(event(work.records), None)
    assert answer == {"batchItemFailures": [{"itemIdentifier": work.records[0]["dynamodb"]["SequenceNumber"]}]}
    assert lost.exhausted
    assert handler.lambda_handler(event(work.records), None) == {"batchItemFailures": []}
    assert_every_replay_equals_the_model(fault_store, work)


def test_any_unexpected_failure_fails_the_batch_instead_of_raising(
        fault_store: Store, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWIND_STORE", fault_store.uri)
    work = random_workload(seed=4, writes=10)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(handler, "write_meta", broken)
    answer = handler.lambda_handler(event(work.records), None)
    assert answer == {"batchItemFailures": [{"itemIdentifier": work.records[0]["dynamodb"]["SequenceNumber"]}]}


def test_a_record_quarantined_again_on_another_day_is_kept_once(
        fault_store: Store, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = {"eventID": "x", "eventName": "INSERT", "eventSource": "aws:dynamodb", "dynamodb": {"Keys": "not a map"},
           "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024"}
    for day in (datetime(2025, 6, 1, 23, 59, 59, tzinfo=UTC), datetime(2025, 6, 2, 0, 0, 1, tzinfo=UTC)):
        monkeypatch.setattr(capture, "datetime", _FixedClock.at(day))
        result = capture_batch(fault_store, [bad], decode_lambda_record, source="test")
        assert result.quarantined == 1
    assert len(fault_store.list(table_root("orders") + "/quarantine/")) == 1


class _FixedClock(datetime):
    moment: datetime

    @classmethod
    def at(cls, moment: datetime) -> type[_FixedClock]:
        return type("Clock", (cls,), {"moment": moment})

    @classmethod
    def now(cls, tz: Any = None) -> _FixedClock:  # type: ignore[override]
        return cls.moment  # type: ignore[return-value]
