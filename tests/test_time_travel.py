"""Replay gives exactly the table of the independent model at every moment, however records arrive."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from changelog.codec import binaries_to_base64, decode_lambda_record, item_key
from changelog.errors import TimeOutOfRange
from changelog.store import LocalStore
from compactor.snapshots import build_snapshot
from replayer.restoring.replay import open_items, replay_to_table
from replayer.restoring.writer import WriteSettings
from stream_consumer.capture import capture_batch
from tests.model import Op, model_state, operations, stream_records
from tests.workloads import deliver_in_cuts

TABLE = "orders"
PROPERTY = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _replayed(store: LocalStore, second: int, **kwargs: Any) -> dict[str, str]:
    con = open_items(store, TABLE, datetime.fromtimestamp(second, tz=UTC), **kwargs)
    return dict(con.execute("SELECT item_key, image FROM items").fetchall())


def _moments(records: list[dict[str, Any]]) -> list[int]:
    """Every second with a change, and the second after each, within what the store covers."""
    seconds = sorted({int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in records})
    return sorted({*seconds, *(s + 1 for s in seconds if s + 1 <= seconds[-1])})


def _fresh(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    return LocalStore(tmp_path_factory.mktemp("store"))


@pytest.mark.slow
@PROPERTY
@given(ops=operations(), cuts=st.lists(st.integers(0, 100), max_size=4), retry_cuts=st.lists(st.integers(0, 100),
       max_size=3))
def test_replay_equals_the_model_at_every_moment(tmp_path_factory: pytest.TempPathFactory, ops: list[Op],
                                                 cuts: list[int], retry_cuts: list[int]) -> None:
    records = stream_records(TABLE, ops)
    if not records:
        return
    store = _fresh(tmp_path_factory)
    deliver_in_cuts(store, records, cuts)
    deliver_in_cuts(store, records, retry_cuts)  # Lambda retries the whole stream, split differently
    for second in _moments(records):
        assert _replayed(store, second) == model_state(ops, second)


@pytest.mark.slow
@PROPERTY
@given(ops=operations(), snapshot_share=st.floats(0, 1), late_share=st.floats(0, 0.5))
def test_replay_from_a_snapshot_equals_replay_from_the_first_change(
    tmp_path_factory: pytest.TempPathFactory, ops: list[Op], snapshot_share: float, late_share: float
) -> None:
    records = stream_records(TABLE, ops)
    if not records:
        return
    store = _fresh(tmp_path_factory)
    # Some records land only after the snapshot was built (a lagging shard): they are late files.
    late = set(range(0, len(records), max(1, int(1 / late_share)))) if late_share > 0.05 else set()
    on_time = [r for i, r in enumerate(records) if i not in late]
    if on_time:
        capture_batch(store, on_time, decode_lambda_record, source="test")
        seconds = sorted({int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in on_time})
        build_snapshot(store, TABLE, seconds[int(snapshot_share * (len(seconds) - 1))] * 1_000_000)
    late_records = [records[i] for i in sorted(late)]
    if late_records:
        capture_batch(store, late_records, decode_lambda_record, source="test")
    for second in _moments(records):
        from_snapshot = _replayed(store, second)
        from_changes = _replayed(store, second, use_snapshots=False)
        assert from_snapshot == from_changes == model_state(ops, second)


def test_a_time_before_the_earliest_restorable_time_is_refused(store: LocalStore) -> None:
    ops = [Op(0, {"pk": {"S": "a"}, "n": {"N": "1"}}, 1_700_000_000)]
    capture_batch(store, stream_records(TABLE, ops), decode_lambda_record, source="test")
    with pytest.raises(TimeOutOfRange, match="earliest restorable time of 'orders', 2023-11-14T22:13:20Z"):
        open_items(store, TABLE, datetime.fromtimestamp(1_699_999_999, tz=UTC))


def _normal(value: Any) -> Any:
    """Sets compared as sets: DynamoDB does not keep their order."""
    if isinstance(value, dict):
        return {k: sorted(v) if k in ("SS", "NS", "BS") else _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations(max_ops=12), pick=st.floats(0, 1))
def test_replay_into_a_table_equals_the_model(tmp_path_factory: pytest.TempPathFactory, ops: list[Op],
                                              pick: float) -> None:
    records = stream_records(TABLE, ops)
    if not records:
        return
    store = _fresh(tmp_path_factory)
    capture_batch(store, records, decode_lambda_record, source="test")
    moments = _moments(records)
    second = moments[int(pick * (len(moments) - 1))]
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(TableName="restored", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
        con = open_items(store, TABLE, datetime.fromtimestamp(second, tz=UTC))
        report, errors = replay_to_table(con, client, "restored", 0, WriteSettings(workers=2))
        assert (report.failed, errors) == (0, [])
        scanned = [binaries_to_base64(item) for item in client.scan(TableName="restored")["Items"]]
    got = {item_key({"pk": item["pk"]}): _normal(item) for item in scanned}
    want = {key: _normal(json.loads(image)) for key, image in model_state(ops, second).items()}
    assert got == want
