"""SQL's state_at(TIME) gives exactly the independent model's table at every moment, like replay."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changelog.store import LocalStore
from changelog.timefmt import format_time, from_micros
from compactor.merge import merge_small_files
from compactor.snapshots import build_snapshot
from replayer.engines.views import open_sql
from tests.model import Op, model_state, operations, stream_records
from tests.workloads import deliver_in_cuts

TABLE = "orders"


def _state_at(store: LocalStore, second: int) -> dict[str, str]:
    at = format_time(from_micros(second * 1_000_000))
    rows = open_sql(store).execute(
        f"SELECT item_key, item::VARCHAR FROM state_at('{at}', only_table := '{TABLE}')").fetchall()
    return dict(rows)


@pytest.mark.slow
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations(), cuts=st.lists(st.integers(0, 100), max_size=4),
       retry_cuts=st.lists(st.integers(0, 100), max_size=3), snapshot_share=st.none() | st.floats(0, 1))
def test_state_at_equals_the_model_at_every_moment(tmp_path_factory: pytest.TempPathFactory, ops: list[Op],
                                                   cuts: list[int], retry_cuts: list[int],
                                                   snapshot_share: float | None) -> None:
    records = stream_records(TABLE, ops)
    if not records:
        return
    store = LocalStore(tmp_path_factory.mktemp("store"))
    deliver_in_cuts(store, records, cuts)
    seconds = sorted({int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in records})
    if snapshot_share is not None:
        build_snapshot(store, TABLE, seconds[int(snapshot_share * (len(seconds) - 1))] * 1_000_000)
    deliver_in_cuts(store, records, retry_cuts)  # the stream again, split differently, after the snapshot
    for second in sorted({*seconds, *(s + 1 for s in seconds[:-1])}):
        assert _state_at(store, second) == model_state(ops, second)


@pytest.mark.slow
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations(), cuts=st.lists(st.integers(0, 100), max_size=4),
       retry_cuts=st.lists(st.integers(0, 100), max_size=3), merged_share=st.floats(0, 1))
def test_changes_holds_every_record_once_around_merges(tmp_path_factory: pytest.TempPathFactory, ops: list[Op],
                                                       cuts: list[int], retry_cuts: list[int],
                                                       merged_share: float) -> None:
    records = stream_records(TABLE, ops)
    if not records:
        return
    store = LocalStore(tmp_path_factory.mktemp("store"))
    deliver_in_cuts(store, records, cuts)
    # Hours merged (each one de-duplicated file, read as it is), then the stream again: late copies
    # land in merged hours, which must be de-duplicated again.
    seconds = sorted({int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in records})
    merge_small_files(store, TABLE, seconds[int(merged_share * (len(seconds) - 1))] * 1_000_000)
    expected = sorted(json.dumps(r["eventID"]) for r in records)
    assert sorted(json.dumps(e) for (e,) in open_sql(store).execute("SELECT event_id FROM changes").fetchall()) \
        == expected
    deliver_in_cuts(store, records, retry_cuts)
    assert sorted(json.dumps(e) for (e,) in open_sql(store).execute("SELECT event_id FROM changes").fetchall()) \
        == expected
