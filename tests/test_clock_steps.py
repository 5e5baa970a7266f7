"""When the stream's clock steps back, an item's later change still wins.

DynamoDB Streams gives one item's records in the order of its changes, with sequence numbers
rising within a shard, but stamps each with a clock that can step back. Every reader orders an
item's stream rows by sequence, each counting from the latest stamp up to it
(``record.counts_from``), whichever batches captured them; capture does the same within a batch
(``record.monotone_item_times``), which keeps the moments between two stamps exact too. Every
reader, and every copy of a record, then agrees with the independent model
(``tests.model.model_state``) wherever what it reads can decide the moment.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changelog.changefile import publish_change_file
from changelog.codec import decode_lambda_record
from changelog.errors import TimeOutOfRange
from changelog.footer import footer, lifted_ids
from changelog.layout import hour_partition
from changelog.record import rows_to_table
from changelog.state import change_files
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
PROPERTY = settings(max_examples=20, deadline=None,
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


def _two_batches(store: Store) -> None:
    """Version 300 stamped T+10, then in a later batch version 301 stamped a second earlier."""
    handler.lambda_handler(event([_version(300, T + 10, 300)]), None)
    handler.lambda_handler(event([_version(301, T + 9, 301)]), None)


def test_a_later_change_stamped_earlier_in_a_later_batch_is_the_items_latest_version(local: Store) -> None:
    _two_batches(local)
    (image,) = _replayed(local, T + 10).values()
    assert '"v":{"N":"301"}' in image


def test_sql_state_at_orders_an_item_by_sequence_across_batches(local: Store) -> None:
    _two_batches(local)
    rows = open_sql(local).execute("SELECT item::VARCHAR, epoch(event_time) FROM state_at(?::TIMESTAMPTZ)",
                                   [datetime.fromtimestamp(T + 10, tz=UTC)]).fetchall()
    assert [(json.loads(item)["v"], seconds) for item, seconds in rows] == [({"N": "301"}, T + 10)]


def test_sql_state_at_over_merged_hours_counts_the_latest_version_from_the_items_latest_stamp(local: Store) -> None:
    _two_batches(local)
    merge_small_files(local, TABLE, (T + 7200) * 1_000_000)
    rows = open_sql(local).execute("SELECT item::VARCHAR, epoch(event_time) FROM state_at(?::TIMESTAMPTZ)",
                                   [datetime.fromtimestamp(T + 10, tz=UTC)]).fetchall()
    assert [(json.loads(item)["v"], seconds) for item, seconds in rows] == [({"N": "301"}, T + 10)]


def test_sql_state_at_beside_merged_hours_reads_a_lone_copy_stamped_before_its_lifted_twin(local: Store) -> None:
    # An earlier hour is merged. Then 301 is stored twice: lifted to 300's T+10 in their batch, and
    # at its own T+9 by a re-split retry. At T+9 only the lone copy is read, as replay reads it.
    other = {"pk": {"S": "b"}}
    handler.lambda_handler(event([lambda_record(TABLE, "INSERT", other, float(T - 3600), 100, new=other)]), None)
    merge_small_files(local, TABLE, T * 1_000_000)
    handler.lambda_handler(event([_version(300, T + 10, 300), _version(301, T + 9, 301)]), None)
    handler.lambda_handler(event([_version(301, T + 9, 301)]), None)
    rows = open_sql(local).execute("SELECT item_key, item::VARCHAR FROM state_at(?::TIMESTAMPTZ)",
                                   [datetime.fromtimestamp(T + 9, tz=UTC)]).fetchall()
    assert dict(rows) == _replayed(local, T + 9)
    assert len(rows) == 2


def test_history_across_batches_is_in_sequence_order_with_times_that_never_go_back(local: Store) -> None:
    _two_batches(local)
    history = item_history(local, TABLE, '{"pk":{"S":"a"}}')
    assert [(v.sequence_number.lstrip("0"), v.event_time.timestamp()) for v in history] == [
        ("300", T + 10), ("301", T + 10)]
    sql = open_sql(local).execute("""SELECT sequence_number, epoch(event_time) FROM history('{"pk":{"S":"a"}}')""")
    assert [(sequence.lstrip("0"), seconds) for sequence, seconds in sql.fetchall()] == [
        ("300", T + 10), ("301", T + 10)]


def test_a_snapshot_and_merged_hours_keep_the_sequence_order_across_batches(local: Store) -> None:
    _two_batches(local)
    build_snapshot(local, TABLE, (T + 10) * 1_000_000)
    merge_small_files(local, TABLE, (T + 7200) * 1_000_000)
    (image,) = _replayed(local, T + 10).values()
    assert '"v":{"N":"301"}' in image


def test_a_moment_between_the_two_stamps_shows_what_was_read_for_it(local: Store) -> None:
    # At T+9 only 301 is stamped at or before the moment: nothing read then says 300 came first.
    _two_batches(local)
    (image,) = _replayed(local, T + 9).values()
    assert '"v":{"N":"301"}' in image


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


def _decidable(records: list[dict[str, Any]], batches: list[list[int]], moments: list[int]) -> list[int]:
    """The moments what a reader reads can decide: none where a batch holds an item's record r but not
    an earlier record q of that item stamped later, from r's stamp up to q's (``record.counts_from``)."""
    stamps = [int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in records]
    keys = [json.dumps(r["dynamodb"]["Keys"], sort_keys=True) for r in records]
    windows = {(stamps[r], stamps[q]) for batch in map(set, batches) for r in batch for q in range(r)
               if keys[q] == keys[r] and q not in batch and stamps[q] > stamps[r]}
    return [m for m in moments if not any(low <= m < high for low, high in windows)]


def _sql_states(store: Store, moments: list[int]) -> dict[int, dict[str, Any]]:
    """SQL's ``state_at`` at each moment, asked in one session as a user would."""
    con = open_sql(store)
    return {moment: _canonical(dict(con.execute(
        "SELECT item_key, item::VARCHAR FROM state_at(?::TIMESTAMPTZ) WHERE table_name = ?",
        [datetime.fromtimestamp(moment, tz=UTC), TABLE]).fetchall())) for moment in moments}



@pytest.mark.slow
@PROPERTY
@given(ops=operations(clock_steps=True), data=st.data(),
       retries=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), max_size=3),
       snapshot_at=st.integers(0, 100))
def test_every_reader_equals_the_model_when_the_clock_steps_back_in_any_batches(
    tmp_path_factory: pytest.TempPathFactory, ops: list[Op], data: st.DataObject, retries: list[tuple[int, int]],
    snapshot_at: int
) -> None:
    records = stream_records(TABLE, ops)
    if not records:
        return
    # Each record goes to one of up to four batches (a batch holds any subset, in sequence order);
    # a retry re-captures a slice, which may miss a record's predecessor.
    owner = data.draw(st.lists(st.integers(0, 3), min_size=len(records), max_size=len(records)))
    batches = [[i for i, b in enumerate(owner) if b == batch] for batch in sorted(set(owner))]
    for start, length in retries:
        first = start % len(records)
        batches.append(list(range(first, min(len(records), first + 1 + length % 4))))
    store = LocalStore(tmp_path_factory.mktemp("store"))
    for batch in batches:
        capture_batch(store, [records[i] for i in batch], decode_lambda_record, source="test")
    moments = _decidable(records, batches, _moments(records))
    newest = max(int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in records)
    assert newest in moments  # at and after every stamp, every moment is decided
    expected = {m: model_state(ops, m) for m in moments}
    assert {m: _replayed(store, m, use_snapshots=False) for m in moments} == expected
    assert _sql_states(store, moments) == {m: _canonical(expected[m]) for m in moments}
    # A snapshot (at any moment, decided or not) and merged hours give the same answers.
    every = _moments(records)
    build_snapshot(store, TABLE, every[snapshot_at % len(every)] * 1_000_000)
    merge_small_files(store, TABLE, (max(op.second for op in ops) + 7200) * 1_000_000)
    assert {m: _replayed(store, m) for m in moments} == expected
    assert _sql_states(store, moments) == {m: _canonical(expected[m]) for m in moments}
    assert _listed_twice(store) == []
    for key in KEYS:
        text = json.dumps(key, separators=(",", ":"), ensure_ascii=False)
        emitted = sum(1 for r in records if r["dynamodb"]["Keys"] == key)
        history = item_history(store, TABLE, text) if emitted else []
        versions = [v.sequence_number for v in history]
        assert versions == sorted(set(versions)) and len(versions) == emitted
        times = [v.event_time for v in history]
        assert times == sorted(times)


def _listed_twice(store: Store) -> list[Any]:
    """Records SQL's ``changes`` view lists more than once."""
    return open_sql(store).execute(
        "SELECT event_id FROM changes GROUP BY table_name, event_id HAVING count(*) > 1").fetchall()


def test_a_record_lifted_into_the_next_hour_by_one_batch_and_not_by_another_is_one_change(local: Store) -> None:
    # 301 is stamped in the hour before 300: the batch holding both stores 301 in 300's hour, a
    # re-split retry holding 301 alone stores it in its own. Each hour merged alone still holds it once.
    boundary = T - T % 3600 + 3600
    first = _version(300, boundary, 10**20 + 1)
    second = lambda_record(TABLE, "MODIFY", KEY, boundary - 0.5, 10**20 + 2, new={**KEY, "v": {"N": "301"}})
    capture_batch(local, [first, second], decode_lambda_record, source="test")
    capture_batch(local, [second], decode_lambda_record, source="test")
    merge_small_files(local, TABLE, (boundary + 7200) * 1_000_000)

    assert _listed_twice(local) == []
    (image,) = _replayed(local, boundary).values()
    assert '"v":{"N":"301"}' in image


def test_a_lifted_record_not_yet_merged_is_one_change_beside_its_merged_copy(local: Store) -> None:
    boundary = T - T % 3600 + 3600
    second = lambda_record(TABLE, "MODIFY", KEY, boundary - 0.5, 10**20 + 2, new={**KEY, "v": {"N": "301"}})
    capture_batch(local, [second], decode_lambda_record, source="test")
    merge_small_files(local, TABLE, (boundary + 7200) * 1_000_000)
    capture_batch(local, [_version(300, boundary, 10**20 + 1), second], decode_lambda_record, source="test")

    assert _listed_twice(local) == []


def test_a_merged_file_says_which_of_its_records_capture_lifted_into_its_hour(local: Store) -> None:
    boundary = T - T % 3600 + 3600
    second = lambda_record(TABLE, "MODIFY", KEY, boundary - 0.5, 10**20 + 2, new={**KEY, "v": {"N": "301"}})
    capture_batch(local, [_version(300, boundary, 10**20 + 1), second], decode_lambda_record, source="test")
    capture_batch(local, [_version(302, boundary + 1, 10**20 + 3)], decode_lambda_record, source="test")
    merge_small_files(local, TABLE, (boundary + 7200) * 1_000_000)

    (merged,) = change_files(local, TABLE)
    assert lifted_ids(footer(local, merged)) == [second["eventID"]]


def test_merged_hours_that_do_not_say_which_records_were_lifted_are_de_duplicated(local: Store) -> None:
    # Files merged before capture recorded its lifts: nothing says a copy is not in another hour.
    boundary = T - T % 3600 + 3600
    row = decode_lambda_record(lambda_record(TABLE, "MODIFY", KEY, boundary - 0.5, 10**20 + 2,
                                             new={**KEY, "v": {"N": "301"}}))
    lifted = replace(row, event_time_us=boundary * 1_000_000)
    for copy in (row, lifted):
        publish_change_file(local, TABLE, hour_partition(copy.event_time_us), copy.sequence_number,
                            copy.sequence_number, rows_to_table([copy]), deduplicated=True)

    assert _listed_twice(local) == []
    assert len(open_sql(local).execute("SELECT * FROM changes").fetchall()) == 1


def test_the_model_orders_an_items_changes_by_sequence_when_the_clock_steps_back() -> None:
    ops = [Op(0, {**KEYS[0], "v": {"N": "300"}}, T + 10), Op(0, {**KEYS[0], "v": {"N": "301"}}, T + 10, clock_back=1)]
    assert model_state(ops, T + 9) == {}  # 301 counts from 300's stamp, which it follows
    assert list(model_state(ops, T + 10).values()) == ['{"pk":{"S":"a"},"v":{"N":"301"}}']


def test_a_record_stamped_hours_ahead_never_makes_a_future_moment_restorable(local: Store) -> None:
    now = int(time.time())
    handler.lambda_handler(event([_version(1, now - 60, 100), _version(2, now + 20 * 3600, 101)]), None)
    with pytest.raises(TimeOutOfRange, match="after the latest restorable time"):
        _replayed(local, now + 10 * 3600)
