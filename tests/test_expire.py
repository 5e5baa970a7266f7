"""Expire: old change files and snapshots go, and every restore point that is kept replays exactly as before."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from changelog.codec import decode_lambda_record
from changelog.errors import TimeOutOfRange, UsageError
from changelog.snapshot import list_manifests
from changelog.state import change_files, coverage
from changelog.store import LocalStore, Store
from compactor.policy import parse_policy
from compactor.retention import apply_expire, plan_expire
from compactor.snapshots import build_snapshot
from ddb_rewind.cli import main
from replayer.forensics.history import item_history
from replayer.forensics.timeline import timeline
from replayer.proving.verify import restore_drill
from replayer.restoring.replay import open_items
from stream_consumer.capture import capture_batch
from tests.events import lambda_record

TABLE = "orders"
BASE = 1_700_006_400  # 2023-11-15T00:00:00Z
DAY = 86_400
CHANGES = 100  # one every 5 hours: 21 days
LATE_SECOND = BASE + 3 * DAY + 77  # a change of day 3 whose file lands only after every snapshot


def _change(index: int) -> dict[str, Any]:
    second = BASE + index * 5 * 3600 + (index % 7) * 13
    key = {"pk": {"S": f"k{index % 6}"}}
    if index % 9 == 8:
        return lambda_record(TABLE, "REMOVE", key, second, 1000 + index, old={**key, "n": {"N": "0"}})
    item = {**key, "n": {"N": str(index)}, "day": {"S": f"d{(second - BASE) // DAY}"}}
    return lambda_record(TABLE, "MODIFY" if index > 5 else "INSERT", key, second, 1000 + index, new=item)


def _late() -> dict[str, Any]:
    item = {"pk": {"S": "late"}, "n": {"N": "7"}}
    return lambda_record(TABLE, "INSERT", {"pk": {"S": "late"}}, LATE_SECOND, 999, new=item)


def _seconds() -> list[int]:
    return [int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in map(_change, range(CHANGES))]


@pytest.fixture(scope="module")
def built_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A month of changes, a snapshot at noon every day, and one late file: built once per module."""
    root = tmp_path_factory.mktemp("history")
    store = LocalStore(root)
    capture_batch(store, [_change(i) for i in range(CHANGES)], decode_lambda_record, source="test")
    for day in range(21):
        build_snapshot(store, TABLE, (BASE + day * DAY + 12 * 3600) * 1_000_000)
    capture_batch(store, [_late()], decode_lambda_record, source="test")
    return root


@pytest.fixture
def history(store: Store, built_history: Path) -> Store:
    """Each test's own copy of the month (tests expire from it), the same bytes as building it afresh."""
    assert isinstance(store, LocalStore)
    shutil.copytree(built_history, store.root, dirs_exist_ok=True)
    return store


def _state(store: Store, second: int) -> dict[str, str]:
    con = open_items(store, TABLE, datetime.fromtimestamp(second, tz=UTC))
    return dict(con.execute("SELECT item_key, image FROM items").fetchall())


def _kept_moments(store: Store, floor_us: int, count: int = 30) -> list[int]:
    """About ``count`` moments from the floor on, sampled from: the floor, each change second and the one after,
    every snapshot time and the last change."""
    floor = -(-floor_us // 1_000_000)
    snapshots = [m.snapshot_time_us // 1_000_000 for _, m in list_manifests(store, TABLE)]
    last = max(_seconds())
    candidates = {floor, last, *snapshots, *(s for s in _seconds()), *(s + 1 for s in _seconds())}
    kept = sorted(s for s in candidates if floor <= s <= last)
    return kept[:: max(1, len(kept) // count)]


@pytest.mark.slow
def test_every_kept_restore_point_replays_identically_after_expire(history: Store) -> None:
    # 8 days back from the last change is day 12 after noon: the base is day 12's noon snapshot, and
    # the change file of that hour also holds a change made after noon, which must stay.
    policy = parse_policy("daily=4d,monthly=1m,changes=8d")
    plan = plan_expire(history, TABLE, policy)
    assert plan.base_snapshot is not None and plan.base_snapshot.endswith("20231127T120000Z/manifest.json")
    assert plan.floor_us is not None and plan.drop_changes and plan.drop_snapshots
    moments = _kept_moments(history, plan.floor_us)
    before = {second: _state(history, second) for second in moments}
    apply_expire(history, plan)
    assert {second: _state(history, second) for second in moments} == before


def test_restore_drills_still_match_after_expire_removed_the_oldest_changes(store: Store) -> None:
    # An item last changed before the retention floor lives on only in the snapshot the floor rests
    # on: the drill's second computation must start there, not from the changes alone.
    quiet = {"pk": {"S": "quiet"}}
    records = [lambda_record(TABLE, "INSERT", quiet, BASE, 1, new={**quiet, "n": {"N": "1"}})]
    busy = {"pk": {"S": "busy"}}
    for index in range(1, 15):
        records.append(lambda_record(TABLE, "MODIFY" if index > 1 else "INSERT", busy, BASE + index * 5 * 3600,
                                     1 + index, new={**busy, "n": {"N": str(index)}}))
    capture_batch(store, records, decode_lambda_record, source="test")
    for day in range(3):
        build_snapshot(store, TABLE, (BASE + day * DAY + 12 * 3600) * 1_000_000)
    plan = plan_expire(store, TABLE, parse_policy("changes=1d"))
    assert plan.drop_changes
    apply_expire(store, plan)
    for seed in range(3):
        drill = restore_drill(store, TABLE, seed=seed)
        assert drill.matches and drill.items_with_snapshot == 2


@pytest.mark.slow
def test_the_floor_keeps_up_with_the_horizon_when_expire_runs_every_day(tmp_path: Path) -> None:
    # Run as the stack runs it: a snapshot each noon, expire an hour later, keeping three days of
    # changes and no daily snapshots. The base must advance with the horizon, not stay at the first one.
    store = LocalStore(tmp_path / "store")
    capture_batch(store, [_change(i) for i in range(CHANGES)], decode_lambda_record, source="test")
    policy = parse_policy("changes=3d")
    for day in range(21):
        build_snapshot(store, TABLE, (BASE + day * DAY + 12 * 3600) * 1_000_000)
        plan = plan_expire(store, TABLE, policy, now_us=(BASE + day * DAY + 13 * 3600) * 1_000_000)
        apply_expire(store, plan)

    horizon = BASE + 17 * DAY + 13 * 3600
    floor = coverage(store, TABLE).earliest_us
    assert floor is not None and horizon - DAY <= floor // 1_000_000 <= horizon
    assert len(list_manifests(store, TABLE)) <= 5  # the base, the newest and a next base per day between


def test_the_late_file_a_snapshot_never_consumed_is_kept(history: Store) -> None:
    late_files = [p for p in change_files(history, TABLE) if "dt=2023-11-18/hour=00" in p]
    apply_expire(history, plan_expire(history, TABLE, parse_policy("changes=10d")))
    remaining = change_files(history, TABLE)
    assert late_files and all(path in remaining for path in late_files)
    assert len(remaining) < CHANGES


def test_status_shows_the_new_earliest_and_earlier_moments_are_refused(history: Store) -> None:
    first_before = coverage(history, TABLE).earliest_us
    plan = plan_expire(history, TABLE, parse_policy("changes=10d"))
    apply_expire(history, plan)
    earliest = coverage(history, TABLE).earliest_us
    assert first_before is not None and plan.floor_us is not None and earliest is not None
    assert earliest == plan.floor_us > first_before
    open_items(history, TABLE, datetime.fromtimestamp(plan.floor_us / 1_000_000, tz=UTC))  # the floor itself
    with pytest.raises(TimeOutOfRange, match="before the earliest restorable time"):
        open_items(history, TABLE, datetime.fromtimestamp(plan.floor_us / 1_000_000 - 1, tz=UTC))


K1 = '{"pk": {"S": "k1"}}'


def _expired(history: Store) -> int:
    plan = plan_expire(history, TABLE, parse_policy("changes=10d"))
    apply_expire(history, plan)
    assert plan.floor_us is not None
    return plan.floor_us


def test_a_history_reaching_back_past_what_expire_removed_is_refused(history: Store) -> None:
    # k1's first changes were removed: listed from what is left, its history looked whole.
    floor = _expired(history)
    with pytest.raises(TimeOutOfRange, match="removed by the retention policy"):
        item_history(history, TABLE, K1)
    kept = item_history(history, TABLE, K1, partial=True)
    assert kept and all(version.event_time_us > floor for version in kept)


def test_the_partial_history_names_what_expire_removed(history: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _expired(history)
    assert main(["history", "--table", TABLE, "--store", history.uri, "--key", K1, "--partial"]) == 0
    assert "may be missing: the changes up to" in capsys.readouterr().err


def test_a_timeline_reaching_back_past_what_expire_removed_is_refused(history: Store) -> None:
    floor = _expired(history)
    with pytest.raises(TimeOutOfRange, match="removed by the retention policy"):
        timeline(history, TABLE, "day", BASE * 1_000_000, floor + DAY * 1_000_000)
    after = timeline(history, TABLE, "day", floor + 1, max(_seconds()) * 1_000_000)
    assert sum(bucket.total for bucket in after) == sum(1 for second in _seconds() if second * 1_000_000 > floor)


@pytest.mark.slow
def test_the_floor_snapshot_survives_a_later_more_generous_policy(history: Store) -> None:
    first = plan_expire(history, TABLE, parse_policy("changes=5d"))
    apply_expire(history, first)
    assert first.floor_us is not None
    moments = _kept_moments(history, first.floor_us, count=8)
    before = {second: _state(history, second) for second in moments}
    second = plan_expire(history, TABLE, parse_policy("changes=400d"))
    assert second.floor_us == first.floor_us
    apply_expire(history, second)
    assert {s: _state(history, s) for s in moments} == before


def test_nothing_is_deleted_without_a_snapshot_before_the_horizon(store: Store) -> None:
    capture_batch(store, [_change(i) for i in range(CHANGES)], decode_lambda_record, source="test")
    plan = plan_expire(store, TABLE, parse_policy("changes=1d"))
    assert plan.base_snapshot is None and plan.drop_changes == () and plan.floor_us is None


def test_dry_run_deletes_nothing(history: Store, capsys: pytest.CaptureFixture[str]) -> None:
    listing = history.list("")
    code = main(["expire", "--table", TABLE, "--store", history.uri, "--keep", "daily=2d,changes=3d", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "change files would delete: " in out and "tables/orders/changes/dt=2023-11-15" in out
    assert history.list("") == listing


def test_the_cli_expires_and_status_follows(history: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["expire", "--table", TABLE, "--store", history.uri, "--keep", "daily=2d,changes=3d",
                 "--yes"]) == 0
    assert "change files deleted: " in capsys.readouterr().out
    assert main(["status", "--store", history.uri, "--table", TABLE, "--format", "json"]) == 0
    assert "2023-11-15" not in capsys.readouterr().out


@pytest.mark.parametrize("policy, message", [
    ("daily=35d", "must say how long changes are kept"),
    ("changes=400x", "needs a unit of h, d, w, m or y"),
    ("weekly=4w,changes=1d", "cannot read retention entry 'weekly=4w'"),
    ("daily=3m,changes=1d", "daily counts days"),
    ("changes=1d,changes=2d", "given twice"),
    ("changes=0d", "at least 1"),
])
def test_a_bad_policy_is_one_clear_line(store: Store, capsys: pytest.CaptureFixture[str], policy: str,
                                        message: str) -> None:
    code = main(["expire", "--table", TABLE, "--store", store.uri, "--keep", policy])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err and err.startswith("ddb-rewind: error: ")


def test_the_policy_grammar() -> None:
    policy = parse_policy(" daily=35d , monthly=24m,changes=400d")
    assert (policy.daily, policy.monthly, policy.changes, policy.changes_unit) == (35, 24, 400, "d")
    with pytest.raises(UsageError):
        parse_policy("")


def test_snapshot_directories_without_a_manifest_are_removed_after_an_hour(history: Store) -> None:
    build_snapshot(history, TABLE, (BASE + 20 * DAY + 13 * 3600) * 1_000_000, publish=False)
    fresh = plan_expire(history, TABLE, parse_policy("changes=400d"))
    assert fresh.drop_orphans == ()
    later = plan_expire(history, TABLE, parse_policy("changes=400d"), clock=lambda: time.time() + 7200)
    assert len(later.drop_orphans) == 1
    apply_expire(history, later)
    assert not any(history.exists(path) for path in later.drop_orphans)


# --- the deployed stack's retention: the scheduled compactor applies the same plan ----------------


@pytest.mark.slow
def test_the_scheduled_compactor_applies_the_stacks_retention_policy(
    history: Store, monkeypatch: pytest.MonkeyPatch, aws: None
) -> None:
    from compactor.handler import lambda_handler

    expected = plan_expire(history, TABLE, parse_policy("daily=4d,changes=8d"))
    assert expected.floor_us is not None
    moments = _kept_moments(history, expected.floor_us)
    before = {second: _state(history, second) for second in moments}
    monkeypatch.setenv("REWIND_STORE", history.uri)
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    monkeypatch.setenv("REWIND_RETENTION_POLICY", "daily=4d,changes=8d")

    summary = lambda_handler({}, None)

    assert summary["retention"]["restorable_from_us"] == expected.floor_us == coverage(history, TABLE).earliest_us
    assert summary["retention"]["change_files_deleted"] == len(expected.drop_changes) > 0
    assert {second: _state(history, second) for second in moments} == before


def test_the_scheduled_compactor_keeps_everything_without_a_policy(
    history: Store, monkeypatch: pytest.MonkeyPatch, aws: None
) -> None:
    from compactor.handler import lambda_handler

    earliest = coverage(history, TABLE).earliest_us
    snapshots = len(list_manifests(history, TABLE))
    monkeypatch.setenv("REWIND_STORE", history.uri)
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    monkeypatch.setenv("REWIND_RETENTION_POLICY", "")

    assert "retention" not in lambda_handler({}, None)
    assert coverage(history, TABLE).earliest_us == earliest
    assert len(list_manifests(history, TABLE)) == snapshots + 1  # only the new compaction snapshot


def test_a_bad_retention_policy_fails_the_scheduled_run_before_anything_changes(
    history: Store, monkeypatch: pytest.MonkeyPatch, aws: None
) -> None:
    from compactor.handler import lambda_handler

    files = change_files(history, TABLE)
    monkeypatch.setenv("REWIND_STORE", history.uri)
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    monkeypatch.setenv("REWIND_RETENTION_POLICY", "changes=forever")

    with pytest.raises(UsageError):
        lambda_handler({}, None)
    assert change_files(history, TABLE) == files
