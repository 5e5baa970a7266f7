"""Kinesis Data Streams for DynamoDB: double base64, ms/µs times, duplicates and reordering are handled."""

from __future__ import annotations

import base64
import json
from typing import Any

import duckdb
import pytest

from changelog.state import open_state, plan_state
from changelog.store import Store
from replayer.engines.views import open_sql
from stream_consumer import handler
from tests.events import event, kinesis_record

TABLE = "sensors"
KEY = {"id": {"S": "s-1"}}
MS = 1_750_000_000_123  # 2025-06-15T15:06:40.123Z
US = 1_750_000_000_123_456  # 2025-06-15T15:06:40.123456Z
LONG_SEQ = "49590338271490256608559692538361571095921575989136588898"  # 56 digits, as Kinesis gives them


@pytest.fixture
def local(handler_store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The handler, with fresh caches, writes Kinesis batches into the local test store."""
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    return handler_store


def version(n: int, created: int, sequence: str, precision: str | None = "MILLISECOND",
            event_id: str | None = None) -> dict[str, Any]:
    """A MODIFY of the one item, carrying ``n`` as its version."""
    return kinesis_record(TABLE, "MODIFY", KEY, created, sequence, new={**KEY, "v": {"N": str(n)}},
                          event_id=event_id or f"ddb-{n}", precision=precision)


def invoke(records: list[dict[str, Any]]) -> None:
    assert handler.lambda_handler(event(records), None) == {"batchItemFailures": []}


def query(store: Store, sql: str) -> list[tuple[Any, ...]]:
    return open_sql(store, plain_tables=False).execute(sql).fetchall()


def latest(store: Store) -> dict[str, Any]:
    """The item as the state query sees it after everything captured."""
    con = duckdb.connect()
    open_state(con, store, plan_state(store, TABLE, 2_000_000_000_000_000))
    rows = con.execute("SELECT image FROM state").fetchall()
    assert len(rows) == 1
    return dict(json.loads(rows[0][0]))


def test_binaries_base64_inside_the_base64_payload_stay_base64_text(local: Store) -> None:
    blob = base64.b64encode(b"\x00\xff binary \x10").decode()
    new = {**KEY, "blob": {"B": blob}, "set": {"BS": [blob]}}
    invoke([kinesis_record(TABLE, "INSERT", KEY, MS, "1", new=new)])
    (image,) = query(local, "SELECT new_image FROM changes")[0]
    assert json.loads(image) == new


@pytest.mark.parametrize(
    ("created", "precision", "expected"),
    [
        (MS, "MILLISECOND", "2025-06-15 15:06:40.123+00"),
        (MS, None, "2025-06-15 15:06:40.123+00"),
        (US, "MICROSECOND", "2025-06-15 15:06:40.123456+00"),
        (US, None, "2025-06-15 15:06:40.123456+00"),
    ],
)
def test_event_time_keeps_milliseconds_and_microseconds(
    local: Store, created: int, precision: str | None, expected: str
) -> None:
    invoke([version(1, created, "1", precision=precision)])
    assert query(local, "SELECT event_time::VARCHAR FROM changes") == [(expected,)]


def test_the_kinesis_shard_and_whole_sequence_number_are_kept(local: Store) -> None:
    invoke([version(1, MS, LONG_SEQ)])
    assert query(local, "SELECT shard_id, sequence_number FROM changes") == [("shardId-000000000001", LONG_SEQ)]


def test_a_payload_delivered_twice_in_one_batch_is_one_change(local: Store) -> None:
    # Kinesis producers retry: the same DynamoDB eventID comes back under a new Kinesis sequence number.
    invoke([version(1, MS, "100"), version(1, MS, "101")])
    assert query(local, "SELECT event_id FROM changes") == [("ddb-1",)]


def test_a_payload_delivered_again_in_a_later_batch_is_one_change(local: Store) -> None:
    invoke([version(1, MS, "100"), version(2, MS + 5, "102")])
    invoke([version(1, MS, "103")])
    assert query(local, "SELECT event_id FROM changes ORDER BY event_id") == [("ddb-1",), ("ddb-2",)]
    assert latest(local)["v"] == {"N": "2"}


def test_records_arriving_out_of_order_give_the_latest_version_by_event_time(local: Store) -> None:
    invoke([version(3, MS + 20, "300")])
    invoke([version(1, MS, "100"), version(2, MS + 10, "200")])
    assert latest(local)["v"] == {"N": "3"}


def test_within_one_millisecond_the_kinesis_sequence_number_orders_numerically(local: Store) -> None:
    # The older change has the longer-looking text start ("9..."), the newer one has one digit more.
    older, newer = "9" + "0" * 55, "1" + "0" * 56
    invoke([version(2, MS, newer), version(1, MS, older)])
    assert latest(local)["v"] == {"N": "2"}
    lengths = query(local, "SELECT length(sequence_number) FROM changes ORDER BY 1")
    assert lengths == [(56,), (57,)]


def test_microsecond_times_order_changes_within_a_millisecond(local: Store) -> None:
    invoke([version(2, US + 2, "1", precision="MICROSECOND"), version(1, US + 1, "2", precision="MICROSECOND")])
    assert latest(local)["v"] == {"N": "2"}


# --- one stream, two tables ------------------------------------------------------------------------------------


def _change(table: str, key: str, created: int, sequence: int) -> dict[str, Any]:
    keys = {"pk": {"S": key}}
    return kinesis_record(table, "INSERT", keys, created, str(10**20 + sequence), new={**keys, "v": {"N": "1"}},
                          event_id=f"{table}-{key}-{sequence}")


def _failed_once(monkeypatch: pytest.MonkeyPatch, batch: list[dict[str, Any]]) -> None:
    """Deliver ``batch`` once while the store is down: it is reported failed, pending under each of its tables."""
    real = handler.capture_batch

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the store is down")

    monkeypatch.setattr(handler, "capture_batch", failing)
    assert handler.lambda_handler(event(batch), None)["batchItemFailures"]
    monkeypatch.setattr(handler, "capture_batch", real)


def test_a_two_table_batch_retried_in_halves_releases_both_tables(
        local: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # The failed batch is pending under both tables, named by its first record; after a timeout Lambda
    # retries it in halves, each holding one table's record: each half settles both tables' records.
    from changelog.state import coverage

    batch = [_change("beta", "b", MS, 1), _change("alpha", "a", MS + 1, 2)]
    _failed_once(monkeypatch, batch)
    invoke(batch[:1])
    invoke(batch[1:])
    invoke([_change("alpha", "a", MS + 5000, 3), _change("beta", "b", MS + 5000, 4)])

    for table in ("alpha", "beta"):
        assert coverage(local, table).latest_us == (MS + 5000) * 1000, table


def test_a_quarantined_kinesis_record_takes_away_only_the_moments_from_its_change_on(local: Store) -> None:
    # Its payload says when DynamoDB made the change (milliseconds): the history before it stays restorable.
    from changelog.state import coverage

    invoke([_change(TABLE, "a", MS, 1), _change(TABLE, "b", MS + 10_000, 2)])
    bad = _change(TABLE, "c", MS + 20_000, 3)
    payload = json.loads(base64.b64decode(bad["kinesis"]["data"]))
    payload["dynamodb"]["NewImage"]["v"] = {"N": "1e999"}  # beyond DynamoDB's range: quarantined
    bad["kinesis"]["data"] = base64.b64encode(json.dumps(payload).encode()).decode()
    invoke([bad, _change(TABLE, "d", MS + 30_000, 4)])

    (loss,) = [loss for loss in coverage(local, TABLE).losses if loss.kind == "quarantine"]
    assert loss.start_us == (MS + 20_000) // 1000 * 1_000_000


def test_every_table_of_a_two_table_batch_gets_its_meta_json(local: Store) -> None:
    # A restore into a new table reads the key schema from it: each table of the stream needs its own.
    from changelog.meta import read_meta

    invoke([_change("alpha", "a", MS, 1), _change("beta", "b", MS, 2)])
    for table in ("alpha", "beta"):
        assert [k["AttributeName"] for k in read_meta(local, table)["key_schema"]] == ["pk"]


def test_a_re_send_arriving_after_expire_still_finds_its_first_copy(local: Store) -> None:
    # Two changes of one item in one millisecond, then a snapshot an hour later and an expire that keeps
    # an hour of changes. A producer's re-send of the first (a new Kinesis sequence number) then arrives:
    # beside its first copy it is a copy; alone it would read as the latest change.
    from compactor.policy import parse_policy
    from compactor.retention import RESEND_WINDOW_US, apply_expire, plan_expire
    from compactor.snapshots import build_snapshot

    later = MS + 3_600_000
    invoke([version(1, MS, "100"), version(2, MS, "101")])
    invoke([kinesis_record(TABLE, "INSERT", {"id": {"S": "o"}}, later, "200", new={"id": {"S": "o"}})])
    build_snapshot(local, TABLE, later * 1000)
    apply_expire(local, plan_expire(local, TABLE, parse_policy("changes=1h"), now_us=(later + 3_600_000) * 1000))
    # The hour stays a day (no re-send comes later than that), then goes.
    assert plan_expire(local, TABLE, parse_policy("changes=1h"), now_us=later * 1000 + RESEND_WINDOW_US).drop_changes

    invoke([version(1, MS, "102", event_id="ddb-1")])  # the re-send
    con = duckdb.connect()
    open_state(con, local, plan_state(local, TABLE, later * 1000))
    images = [json.loads(image) for (image,) in con.execute("SELECT image FROM state").fetchall()]
    assert [image["v"] for image in images if image["id"] == KEY["id"]] == [{"N": "2"}]


def test_expire_keeps_a_merged_hour_whose_kinesis_rows_sit_between_stream_rows(local: Store) -> None:
    # A table moving from its DynamoDB stream to Kinesis: the merged hour's name carries its first and
    # last rows' sequence numbers (a stream's), the Kinesis row lies between.
    from changelog.codec import decode_lambda_record
    from compactor.merge import merge_small_files
    from compactor.policy import parse_policy
    from compactor.retention import plan_expire
    from compactor.snapshots import build_snapshot
    from stream_consumer.capture import capture_batch
    from tests.events import lambda_record

    a, c = {"id": {"S": "a"}}, {"id": {"S": "c"}}
    capture_batch(local, [lambda_record(TABLE, "INSERT", a, MS // 1000 - 1, 10**20 + 7, new=a)],
                  decode_lambda_record, source="test")
    invoke([version(1, MS, "100")])
    capture_batch(local, [lambda_record(TABLE, "INSERT", c, MS // 1000 + 1, 10**20 + 14, new=c)],
                  decode_lambda_record, source="test")
    hour_end_ms = (MS // 3_600_000 + 1) * 3_600_000
    merge_small_files(local, TABLE, (hour_end_ms + 1) * 1_000)
    invoke([kinesis_record(TABLE, "INSERT", {"id": {"S": "o"}}, hour_end_ms + 3_600_000, "200",
                           new={"id": {"S": "o"}})])
    build_snapshot(local, TABLE, (hour_end_ms + 3_600_000) * 1_000)

    plan = plan_expire(local, TABLE, parse_policy("changes=1h"), now_us=(hour_end_ms + 2 * 3_600_000) * 1_000)
    assert not [path for path in plan.drop_changes if "hour=15" in path]


def test_a_retried_half_leaves_pending_only_the_tables_with_records_in_the_rest(
        local: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # [a(alpha) b(beta) c(alpha)] fails; Lambda stores the half [a b]: only alpha has a record left (c).
    # beta is settled: were the rest pending under it, a loss of c would be a gap of beta's too.
    from changelog.state import coverage

    batch = [_change("alpha", "a", MS, 1), _change("beta", "b", MS + 1, 2), _change("alpha", "c", MS + 2, 3)]
    _failed_once(monkeypatch, batch)
    invoke(batch[:2])

    assert [hold.kind for hold in coverage(local, "beta").holds if hold.kind == "pending batch"] == []
    assert [hold.kind for hold in coverage(local, "alpha").holds if hold.kind == "pending batch"] == ["pending batch"]
