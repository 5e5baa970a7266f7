"""Snapshots are a cache, never a different answer: crashes, races, merges and late files."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from changelog.codec import decode_lambda_record
from changelog.errors import ConflictError, TimeOutOfRange
from changelog.layout import snapshot_dir
from changelog.snapshot import MANIFEST, list_manifests
from changelog.state import change_files, coverage
from changelog.store import Store
from changelog.timefmt import from_micros
from compactor.compaction import compact
from compactor.handler import lambda_handler
from compactor.merge import merge_small_files
from compactor.policy import parse_policy
from compactor.retention import plan_expire
from compactor.snapshots import build_snapshot, publish_manifest
from replayer.engines.views import open_sql
from replayer.restoring.replay import open_items
from stream_consumer.capture import capture_batch
from tests.model import Op, model_state, stream_records

TABLE = "orders"
T0 = 1_700_000_000
OPS = [Op(i % 4, {"pk": {"S": "abcd"[i % 4]}, "n": {"N": str(i)}}, T0 + 600 * i) for i in range(24)]
OPS.append(Op(1, None, T0 + 600 * 24))
RECORDS = stream_records(TABLE, OPS)
END = T0 + 600 * 24


def _state(store: Store, second: int, **kwargs: Any) -> dict[str, str]:
    con = open_items(store, TABLE, datetime.fromtimestamp(second, tz=UTC), **kwargs)
    return dict(con.execute("SELECT item_key, image FROM items").fetchall())


@pytest.fixture
def captured(store: Store) -> Store:
    for start in range(0, len(RECORDS), 3):  # many small files, as a busy Lambda leaves them
        capture_batch(store, RECORDS[start:start + 3], decode_lambda_record, source="test")
    return store


def test_a_crash_before_the_manifest_leaves_no_snapshot_visible(captured: Store) -> None:
    build_snapshot(captured, TABLE, (T0 + 3600) * 1_000_000, publish=False)
    assert list_manifests(captured, TABLE) == []
    assert _state(captured, END) == model_state(OPS, END)


def test_of_two_compactors_racing_for_one_moment_exactly_one_publishes(captured: Store) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def compactor(writer: str) -> None:
        manifest = build_snapshot(captured, TABLE, (T0 + 7200) * 1_000_000, writer_id=writer, publish=False)
        barrier.wait()
        path = f"{snapshot_dir(TABLE, manifest.snapshot_time)}/manifest.json"
        try:
            publish_manifest(captured, path, manifest)
            outcomes.append("published")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=compactor, args=(w,)) for w in ("writer-a", "writer-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict", "published"]
    assert len(list_manifests(captured, TABLE)) == 1
    assert _state(captured, END) == model_state(OPS, END)


def test_a_second_snapshot_at_the_same_moment_is_refused(captured: Store) -> None:
    build_snapshot(captured, TABLE, (T0 + 3600) * 1_000_000)
    with pytest.raises(ConflictError):
        build_snapshot(captured, TABLE, (T0 + 3600) * 1_000_000)


def test_merging_small_files_keeps_every_record(captured: Store) -> None:
    before = open_sql(captured, plain_tables=False).execute(
        "SELECT event_id, new_image FROM changes ORDER BY event_id").fetchall()
    files_before = len(change_files(captured, TABLE))
    result = merge_small_files(captured, TABLE, END * 1_000_000)
    after = open_sql(captured, plain_tables=False).execute(
        "SELECT event_id, new_image FROM changes ORDER BY event_id").fetchall()
    assert after == before
    assert result.files_in > result.files_out
    assert len(change_files(captured, TABLE)) < files_before


def test_merging_twice_changes_nothing(captured: Store) -> None:
    merge_small_files(captured, TABLE, END * 1_000_000)
    files = change_files(captured, TABLE)
    assert merge_small_files(captured, TABLE, END * 1_000_000).files_in == 0
    assert change_files(captured, TABLE) == files


@pytest.mark.slow
def test_compaction_at_the_watermark_then_replay_matches_the_model_everywhere(captured: Store) -> None:
    result = compact(captured, TABLE)
    assert result.snapshot is not None
    for op in OPS:
        assert _state(captured, op.second) == model_state(OPS, op.second)


def test_compaction_with_nothing_new_takes_no_snapshot(captured: Store) -> None:
    compact(captured, TABLE)
    assert compact(captured, TABLE).snapshot is None


def test_a_late_file_older_than_the_snapshot_still_counts(store: Store) -> None:
    late = RECORDS[5]
    capture_batch(store, [r for r in RECORDS if r is not late], decode_lambda_record, source="test")
    build_snapshot(store, TABLE, END * 1_000_000)
    capture_batch(store, [late], decode_lambda_record, source="test")
    assert _state(store, END) == _state(store, END, use_snapshots=False) == model_state(OPS, END)


def test_the_scheduled_lambda_compacts_the_table(captured: Store, monkeypatch: pytest.MonkeyPatch,
                                                 aws: None) -> None:
    monkeypatch.setenv("REWIND_STORE", captured.uri)
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    summary = lambda_handler({}, None)
    assert summary["snapshot"] is not None
    assert len(list_manifests(captured, TABLE)) == 1


def test_compact_at_a_moment_after_the_watermark_is_refused(captured: Store) -> None:
    # A typo (2036 for 2026) must not publish a snapshot claiming changes that were never captured.
    latest = OPS[-1].second
    with pytest.raises(TimeOutOfRange, match="after the latest restorable time"):
        compact(captured, TABLE, (latest + 10 * 365 * 86_400) * 1_000_000)
    assert list_manifests(captured, TABLE) == []


def test_compact_at_a_moment_before_the_earliest_restorable_time_is_refused(captured: Store) -> None:
    with pytest.raises(TimeOutOfRange, match="before the earliest restorable time"):
        compact(captured, TABLE, (T0 - 3600) * 1_000_000)
    assert list_manifests(captured, TABLE) == []


def test_a_compaction_snapshot_never_moves_the_latest_restorable_time(captured: Store) -> None:
    # One dated after the watermark (written before compact checked its moment) claims nothing.
    before = coverage(captured, TABLE).latest_us
    future_manifest(captured)
    assert coverage(captured, TABLE).latest_us == before


def future_manifest(store: Store) -> None:
    """A snapshot dated ten years after the watermark, as an older version's `compact --at` typo left it."""
    build_snapshot(store, TABLE, END * 1_000_000)
    ((path, manifest),) = list_manifests(store, TABLE)
    moment = (END + 10 * 365 * 86_400) * 1_000_000
    directory = snapshot_dir(TABLE, from_micros(moment))  # a manifest lies in its own moment's directory
    for part in manifest.parts:
        store.write(f"{directory}/{part}", store.read(f"{path.rsplit('/', 1)[0]}/{part}"))
    publish_manifest(store, f"{directory}/{MANIFEST}", replace(manifest, snapshot_time_us=moment, extra={}))


def test_the_compaction_after_a_late_file_succeeds_without_a_new_snapshot(store: Store) -> None:
    late = RECORDS[5]
    capture_batch(store, [r for r in RECORDS if r is not late], decode_lambda_record, source="test")
    first = compact(store, TABLE)
    assert first.snapshot is not None
    capture_batch(store, [late], decode_lambda_record, source="test")
    again = compact(store, TABLE)
    assert again.merge.files_in >= 2 and again.snapshot is None
    assert len(list_manifests(store, TABLE)) == 1
    assert _state(store, END) == model_state(OPS, END)


def test_expire_measures_its_horizon_from_the_watermark_not_from_a_future_snapshot(captured: Store) -> None:
    future_manifest(captured)
    plan = plan_expire(captured, TABLE, parse_policy("changes=1h"))
    assert plan.now_us == END * 1_000_000
    kept_window = [p for p in change_files(captured, TABLE) if p not in plan.drop_changes]
    assert kept_window, "the last hour of changes must stay"


def test_the_scheduled_lambda_skips_a_table_with_nothing_captured_yet(store: Store, monkeypatch: pytest.MonkeyPatch,
                                                                        aws: None) -> None:
    # A stack deployed on a quiet table: no compactor error (and no alarm) until a change is captured.
    from changelog.meta import write_meta

    write_meta(store, {"table_name": TABLE, "key_schema": [], "description": None})
    monkeypatch.setenv("REWIND_STORE", store.uri)
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    summary = lambda_handler({}, None)
    assert summary["snapshot"] is None and "nothing captured yet" in summary["skipped"]
