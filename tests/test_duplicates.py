"""One de-duplication rule for every reader: of a record's copies, the earliest version counts.

A Kinesis producer's re-send carries the same DynamoDB eventID under a later Kinesis sequence
number. Ranked before de-duplication it would overtake a later change of the same item in the
same millisecond and revert it. Every reader must give the later change.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from changelog.snapshot import list_manifests
from changelog.state import change_files
from changelog.store import Store
from compactor.merge import merge_small_files
from compactor.policy import parse_policy
from compactor.retention import apply_expire, plan_expire
from compactor.snapshots import build_snapshot
from replayer.engines.views import open_sql
from replayer.forensics.diff import diff_states
from replayer.forensics.history import item_history
from replayer.restoring.replay import open_items
from stream_consumer import handler
from tests.events import event, kinesis_record

TABLE = "sensors"
KEY = {"id": {"S": "s-1"}}
KEY_TEXT = '{"id":{"S":"s-1"}}'
MS = 1_750_000_000_123  # 2025-06-15T15:06:40.123Z
AFTER_US = MS * 1_000  # the moment of every change: the latest restorable time
LATER_HOUR_MS = MS + 3_600_000


@pytest.fixture
def local(handler_store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The handler, with fresh caches, writes Kinesis batches into the local test store."""
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    return handler_store


def version(n: int, created_ms: int, sequence: str) -> dict[str, Any]:
    return kinesis_record(TABLE, "MODIFY", KEY, created_ms, sequence, new={**KEY, "v": {"N": str(n)}},
                          event_id=f"ddb-{n}")


def invoke(records: list[dict[str, Any]]) -> None:
    assert handler.lambda_handler(event(records), None) == {"batchItemFailures": []}


def resend_after_a_later_change(store: Store) -> None:
    """A (seq 100) then B (seq 101) in one millisecond; then A is re-sent as seq 102."""
    invoke([version(1, MS, "100"), version(2, MS, "101")])
    invoke([version(1, MS, "102")])


def replayed_v(store: Store, at_us: int = AFTER_US) -> str:
    con = open_items(store, TABLE, datetime.fromtimestamp(at_us / 1e6, tz=UTC))
    (image,) = con.execute("SELECT image FROM items").fetchall()[0]
    return str(json.loads(image)["v"]["N"])


def test_replay_keeps_the_later_change_when_an_earlier_one_is_re_sent(local: Store) -> None:
    resend_after_a_later_change(local)
    assert replayed_v(local) == "2"


def test_sql_state_at_keeps_the_later_change(local: Store) -> None:
    resend_after_a_later_change(local)
    con = open_sql(local)
    moment = datetime.fromtimestamp(AFTER_US / 1e6, tz=UTC).isoformat()
    rows = con.execute(f"SELECT item->'$.v'->>'N' FROM state_at('{moment}')").fetchall()
    assert rows == [("2",)]


def test_sql_state_at_keeps_the_later_change_beside_merged_hours(local: Store) -> None:
    # An earlier hour is merged (read as it is); the re-send sits in an unmerged hour, which is
    # still de-duplicated.
    invoke([version(0, MS - 3_600_000, "50")])
    merge_small_files(local, TABLE, MS * 1_000)
    resend_after_a_later_change(local)
    con = open_sql(local)
    moment = datetime.fromtimestamp(AFTER_US / 1e6, tz=UTC).isoformat()
    rows = con.execute(f"SELECT item->'$.v'->>'N' FROM state_at('{moment}')").fetchall()
    assert rows == [("2",)]


def test_the_changes_view_keeps_the_first_copy_of_a_re_sent_record(local: Store) -> None:
    resend_after_a_later_change(local)
    rows = open_sql(local).execute(
        "SELECT event_id, ltrim(sequence_number, '0') FROM changes ORDER BY event_id").fetchall()
    assert rows == [("ddb-1", "100"), ("ddb-2", "101")]


def test_history_lists_the_re_sent_change_once_in_its_first_place(local: Store) -> None:
    resend_after_a_later_change(local)
    versions = item_history(local, TABLE, KEY_TEXT)
    assert [(v.event_id, v.sequence_number.lstrip("0")) for v in versions] == [("ddb-1", "100"), ("ddb-2", "101")]


def test_a_merge_keeps_the_first_copy(local: Store) -> None:
    resend_after_a_later_change(local)
    merged = merge_small_files(local, TABLE, LATER_HOUR_MS * 1_000)
    assert merged.files_in == 2 and merged.files_out == 1
    assert replayed_v(local) == "2"
    rows = open_sql(local).execute("SELECT count(*) FROM changes__raw").fetchall()
    assert rows == [(2,)]


def test_a_snapshot_keeps_the_later_change(local: Store) -> None:
    resend_after_a_later_change(local)
    build_snapshot(local, TABLE, AFTER_US)
    assert replayed_v(local) == "2"


def test_a_re_send_landing_after_the_snapshot_does_not_revert_the_item(local: Store) -> None:
    # The snapshot, an hour later, folded A and B in; the re-send of A arrives late, in a file the
    # snapshot did not consume. The replay must still see A's first copy, which only a consumed file
    # of that hour holds.
    invoke([version(1, MS, "100"), version(2, MS, "101")])
    other = {"id": {"S": "s-2"}}
    invoke([kinesis_record(TABLE, "INSERT", other, LATER_HOUR_MS, "200", new=other, event_id="ddb-other")])
    build_snapshot(local, TABLE, LATER_HOUR_MS * 1_000)
    invoke([version(1, MS, "102")])
    (manifest,) = [m for _, m in list_manifests(local, TABLE)]
    assert len(change_files(local, TABLE)) == len(manifest.consumed_files) + 1
    con = open_items(local, TABLE, datetime.fromtimestamp(LATER_HOUR_MS / 1e3, tz=UTC))
    images = [json.loads(image) for (image,) in con.execute("SELECT image FROM items ORDER BY item_key").fetchall()]
    assert images[0]["v"] == {"N": "2"}


def test_a_diff_across_the_re_send_reports_nothing(local: Store) -> None:
    invoke([version(1, MS, "100"), version(2, MS, "101")])
    invoke([version(1, MS, "102")])
    diff = diff_states(local, TABLE, MS * 1_000, AFTER_US)
    assert diff.all() == ()


def test_expire_keeps_the_first_copy_of_a_late_re_send(local: Store) -> None:
    # A partition holding a late file is kept whole: deleting its consumed file would leave the
    # re-send as the only copy, and it would overtake B.
    invoke([version(1, MS, "100"), version(2, MS, "101")])
    other = {"id": {"S": "s-2"}}
    invoke([kinesis_record(TABLE, "INSERT", other, LATER_HOUR_MS, "200", new=other, event_id="ddb-other")])
    build_snapshot(local, TABLE, LATER_HOUR_MS * 1_000)
    invoke([version(1, MS, "102")])
    # A day on: the hours of Kinesis rows stay 25 hours anyway (retention.RESEND_WINDOW_US).
    plan = plan_expire(local, TABLE, parse_policy("changes=1h"), now_us=(LATER_HOUR_MS + 26 * 3_600_000) * 1_000)
    assert plan.drop_changes and not any("hour=15" in path for path in plan.drop_changes)
    apply_expire(local, plan)
    con = open_items(local, TABLE, datetime.fromtimestamp(LATER_HOUR_MS / 1e3, tz=UTC))
    images = [json.loads(image) for (image,) in con.execute("SELECT image FROM items ORDER BY item_key").fetchall()]
    assert images[0]["v"] == {"N": "2"}
