"""Property: Kinesis re-sends, arriving anywhere later in any batches, never change a replay or SQL's state_at.

Operations share milliseconds; each becomes one Kinesis record with a rising Kinesis sequence
number. Any of them may be re-sent later (same DynamoDB eventID, a new, larger Kinesis sequence
number), interleaved with later records, in batches cut anywhere, with a snapshot and a merge
taken part-way. Replay and ``state_at`` at every moment equal the independent model (tests/model.py) applying the
operations once each, in their original order.
"""

from __future__ import annotations

import base64
import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changelog.codec import decode_kinesis_record
from changelog.store import LocalStore
from changelog.timefmt import format_time, from_micros
from compactor.merge import merge_small_files
from compactor.snapshots import build_snapshot
from replayer.engines.views import open_sql
from replayer.restoring.replay import open_items
from stream_consumer.capture import capture_batch
from tests.events import kinesis_record
from tests.model import KEYS, Op, emitted_changes, model_state, operations

TABLE = "sensors"
PROPERTY = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _records(ops: list[Op]) -> list[tuple[int, dict[str, Any]]]:
    """(operation index, Kinesis record) per change real DynamoDB would emit; times in whole seconds as ms."""
    return [(c.index, kinesis_record(TABLE, c.event_name, KEYS[c.op.key_index], c.op.second * 1000, "0",
                                     new=c.new, old=c.old, event_id=f"ddb-{c.index}"))
            for c in emitted_changes(ops)]


def _with_sequence(record: dict[str, Any], sequence: int) -> dict[str, Any]:
    copy = json.loads(json.dumps(record))
    copy["kinesis"]["sequenceNumber"] = str(sequence)
    return copy


@pytest.mark.slow
@PROPERTY
@given(ops=operations(), resends=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), max_size=6),
       cuts=st.lists(st.integers(0, 200), max_size=4), compact_at=st.integers(0, 200))
def test_kinesis_re_sends_never_change_a_replay_or_state_at(tmp_path_factory: pytest.TempPathFactory, ops: list[Op],
                                                resends: list[tuple[int, int]], cuts: list[int],
                                                compact_at: int) -> None:
    emitted = _records(ops)
    if not emitted:
        return
    # Kinesis sequence numbers rise in delivery order; a re-send gets the next one where it lands.
    delivery: list[dict[str, Any]] = [record for _, record in emitted]
    for which, after in sorted(resends, key=lambda r: r[1]):
        original = emitted[which % len(emitted)][1]
        position = max(after % (len(delivery) + 1), delivery.index(original) + 1)
        delivery.insert(position, original)
    delivery = [_with_sequence(record, 10**20 + n) for n, record in enumerate(delivery)]
    store = LocalStore(tmp_path_factory.mktemp("store"))
    points = sorted({0, len(delivery), *(c % (len(delivery) + 1) for c in cuts)})
    seconds = sorted({ops[i].second for i, _ in emitted})
    snapshot_after = points[1 + compact_at % (len(points) - 1)] if len(points) > 1 else len(delivery)
    for start, end in itertools.pairwise(points):
        capture_batch(store, delivery[start:end], decode_kinesis_record, source="test")
        if end == snapshot_after and end < len(delivery):
            captured = sorted({json.loads(_payload(r))["dynamodb"]["ApproximateCreationDateTime"] // 1000
                               for r in delivery[:end]})
            build_snapshot(store, TABLE, captured[-1] * 1_000_000)
            merge_small_files(store, TABLE, (captured[-1] + 7200) * 1_000_000)
    sql = open_sql(store)
    for second in seconds:
        con = open_items(store, TABLE, datetime.fromtimestamp(second, tz=UTC))
        assert dict(con.execute("SELECT item_key, image FROM items").fetchall()) == model_state(ops, second)
        # SQL finds each item's latest rows its own way (record.latest_rows): Kinesis rows go by their time.
        at = format_time(from_micros(second * 1_000_000))
        rows = sql.execute(f"SELECT item_key, item::VARCHAR FROM state_at('{at}', only_table := '{TABLE}')").fetchall()
        assert dict(rows) == model_state(ops, second)


def _payload(record: dict[str, Any]) -> str:
    return base64.b64decode(record["kinesis"]["data"]).decode()
