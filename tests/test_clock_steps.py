"""When the stream's clock steps back, an item's later change still wins.

DynamoDB Streams gives one item's records in the order of its changes, with sequence numbers
rising within a shard, but stamps each with a clock that can step back. Capture keeps each item's
times in sequence order within a batch (``record.monotone_item_times``); every reader, and every
copy of a record, then agrees with the independent model (``tests.model.model_state``).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changelog.codec import decode_lambda_record
from changelog.errors import TimeOutOfRange
from changelog.store import LocalStore, Store
from compactor.merge import merge_small_files
from compactor.snapshots import build_snapshot
from replayer.engines.views import open_sql
from replayer.forensics.history import item_history
from replayer.restoring.replay import open_items
from stream_consumer import handler
from stream_consumer.capture import capture_batch
from tests.events import event, kinesis_record, lambda_record
from tests.model import KEYS, Op, model_state, operations, stream_records

TABLE = "orders"
KEY = {"pk": {"S": "a"}}
T = 1_750_000_000
PROPERTY = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def local(handler_store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    return handler_store


def _version(n: int, second: int, sequence: int) -> dict[str, Any]:
    return lambda_record(TABLE, "MODIFY", KEY, float(second), sequence, new={**KEY, "v": {"N": str(n)}})


def _replayed(store: Store, second: int, **kwargs: Any) -> dict[str, str]:
    con = open_items(store, TABLE, datetime.fromtimestamp(second, tz=UTC), **kwargs)
    return dict(con.execute("SELECT item_key, image FROM items").fetchall())


def test_a_later_sequence_stamped_a_second_earlier_is_the_items_latest_version(local: Store) -> None:
    handler.lambda_handler(event([_version(300, T + 10, 300), _version(301, T + 9, 301)]), None)
    (image,) = _replayed(local, T + 10).values()
    assert '"v":{"N":"301"}' in image


def test_a_copy_captured_without_its_predecessor_does_not_undo_the_order(local: Store) -> None:
    # The whole batch first, then a retry that re-split it: the lone 301 carries its own, earlier stamp.
    handler.lambda_handler(event([_version(300, T + 10, 300), _version(301, T + 9, 301)]), None)
    handler.lambda_handler(event([_version(301, T + 9, 301)]), None)
    (image,) = _replayed(local, T + 10, use_snapshots=False).values()
    assert '"v":{"N":"301"}' in image
    history = item_history(local, TABLE, '{"pk":{"S":"a"}}')
    assert [version.sequence_number.lstrip("0") for version in history] == ["300", "301"]


def test_kinesis_rows_keep_their_own_time_order(local: Store) -> None:
    # Kinesis may deliver out of order: its record's own time, not its sequence number, is the order.
    newer = kinesis_record(TABLE, "MODIFY", KEY, T * 1000 + 10_000, "300", new={**KEY, "v": {"N": "2"}},
                           event_id="ddb-2")
    older = kinesis_record(TABLE, "MODIFY", KEY, T * 1000 + 9_000, "301", new={**KEY, "v": {"N": "1"}},
                           event_id="ddb-1")
    handler.lambda_handler(event([newer, older]), None)
    (image,) = _replayed(local, T + 10).values()
    assert '"v":{"N":"2"}' in image


def _moments(records: list[dict[str, Any]]) -> list[int]:
    """Every stamped second and the second after each, within what the store covers: from the
    earliest first change of an item (a later one may be stamped earlier, but counts from after it)."""
    stamps = sorted({int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in records})
    firsts = {json.dumps(r["dynamodb"]["Keys"]): r for r in reversed(records)}
    earliest = min(int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in firsts.values())
    return sorted({s for s in (*stamps, *(s + 1 for s in stamps)) if earliest <= s <= stamps[-1]})


def _canonical(images: dict[str, str]) -> dict[str, Any]:
    return {key: json.loads(image) for key, image in images.items()}


@pytest.mark.slow
@PROPERTY
@given(ops=operations(clock_steps=True), retries=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)),
                                                         max_size=3),
       snapshot_at=st.integers(0, 100))
def test_every_reader_equals_the_model_when_the_clock_steps_back(
    tmp_path_factory: pytest.TempPathFactory, ops: list[Op], retries: list[tuple[int, int]], snapshot_at: int
) -> None:
    records = stream_records(TABLE, ops)
    if not records:
        return
    store = LocalStore(tmp_path_factory.mktemp("store"))
    capture_batch(store, records, decode_lambda_record, source="test")
    moments = _moments(records)
    # A retry of a slice that misses a record's predecessor stores a copy at the record's own stamp:
    # from the newest stamp on, the answer must not change (before it, that copy may count from its
    # stamp, as capture could not know better).
    for start, length in retries:
        first = start % len(records)
        capture_batch(store, records[first:first + 1 + length % 4], decode_lambda_record, source="test")
    if retries:
        moments = moments[-1:]
    assert {m: _replayed(store, m, use_snapshots=False) for m in moments} == {m: model_state(ops, m) for m in moments}
    con = open_sql(store)
    for m in moments:
        rows = con.execute("SELECT item_key, item::VARCHAR FROM state_at(?::TIMESTAMPTZ) WHERE table_name = ?",
                           [datetime.fromtimestamp(m, tz=UTC), TABLE]).fetchall()
        assert _canonical(dict(rows)) == _canonical(model_state(ops, m))
    # A snapshot and merged hours give the same answers.
    chosen = moments[snapshot_at % len(moments)]
    build_snapshot(store, TABLE, chosen * 1_000_000)
    merge_small_files(store, TABLE, (max(op.second for op in ops) + 7200) * 1_000_000)
    for m in moments:
        assert _replayed(store, m) == model_state(ops, m)
    for key in KEYS:
        text = json.dumps(key, separators=(",", ":"), ensure_ascii=False)
        emitted = sum(1 for r in records if r["dynamodb"]["Keys"] == key)
        versions = [v.sequence_number for v in item_history(store, TABLE, text)] if emitted else []
        assert versions == sorted(set(versions)) and len(versions) == emitted

def test_the_model_orders_an_items_changes_by_sequence_when_the_clock_steps_back() -> None:
    ops = [Op(0, {**KEYS[0], "v": {"N": "300"}}, T + 10), Op(0, {**KEYS[0], "v": {"N": "301"}}, T + 10, clock_back=1)]
    assert model_state(ops, T + 9) == {}  # 301 counts from 300's stamp, which it follows
    assert list(model_state(ops, T + 10).values()) == ['{"pk":{"S":"a"},"v":{"N":"301"}}']


def test_a_record_stamped_hours_ahead_never_makes_a_future_moment_restorable(local: Store) -> None:
    now = int(time.time())
    handler.lambda_handler(event([_version(1, now - 60, 100), _version(2, now + 20 * 3600, 101)]), None)
    with pytest.raises(TimeOutOfRange, match="after the latest restorable time"):
        _replayed(local, now + 10 * 3600)
