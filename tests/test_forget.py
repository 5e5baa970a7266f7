"""forget: one item's versions leave every file of the store, nothing else changes, and check proves it."""

from __future__ import annotations

import itertools
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changelog.codec import decode_lambda_record
from changelog.forgotten import read_erasures
from changelog.layout import TABLES
from changelog.store import LocalStore, S3Store, Store, open_store
from changelog.timefmt import format_time, from_micros
from compactor.forget import EraseRefused, forget, plan_forget
from compactor.ledger_fold import fold_ledger
from compactor.merge import merge_small_files
from compactor.snapshots import build_snapshot
from replayer.engines.views import open_sql
from replayer.forensics.diff import diff_states
from replayer.forensics.history import item_history
from replayer.proving.check import check_store
from stream_consumer.capture import capture_batch
from tests.built import built_once, copy_store
from tests.events import lambda_record
from tests.model import KEYS, Op, model_state, operations, stream_records
from tests.moto_http import MotoHttpServer
from tests.workloads import deliver_in_cuts, run_cli

TABLE = "orders"
BASE = 1_700_000_000
ERASED = 1  # KEYS[1], {"pk": {"S": "b"}}
KEY_TEXT = json.dumps(KEYS[ERASED])
SECRETS = ("erase-me-first-7f3a", "erase-me-second-91c2", "erase-me-third-0d44")
OPS = [
    Op(0, {"status": {"S": "new"}}, BASE),
    Op(ERASED, {"email": {"S": SECRETS[0]}}, BASE + 1),
    Op(2, {"n": {"N": "1"}}, BASE + 2),
    Op(ERASED, {"email": {"S": SECRETS[1]}}, BASE + 3600),
    Op(0, None, BASE + 3601),
    Op(ERASED, None, BASE + 3602),
    Op(2, {"n": {"N": "2"}}, BASE + 3603),
    Op(ERASED, {"email": {"S": SECRETS[2]}}, BASE + 7200),
    Op(3, {"status": {"S": "last"}}, BASE + 7201),
]
KEPT = [op for op in OPS if op.key_index != ERASED]


def _fill(store: Store) -> None:
    """Capture OPS in several batches, merge the closed hours, snapshot twice, then a re-sent copy."""
    records = stream_records(TABLE, OPS)
    deliver_in_cuts(store, records, [2, 4, 6])
    merge_small_files(store, TABLE, (BASE + 7200) * 1_000_000)
    build_snapshot(store, TABLE, (BASE + 3601) * 1_000_000)  # holds the item
    build_snapshot(store, TABLE, (BASE + 3603) * 1_000_000)  # holds its tombstone
    deliver_in_cuts(store, records[5:], [])  # a retried batch: copies in a merged hour


def _moments() -> list[int]:
    seconds = sorted({op.stamp for op in OPS})
    return sorted({*seconds, *(s + 1 for s in seconds[:-1])})


def _states_at(store: Store, seconds: list[int]) -> dict[int, dict[str, str]]:
    """The table at each second, as SQL's ``state_at`` gives it (one session for all of them)."""
    con = open_sql(store)
    states = {}
    for second in seconds:
        at = format_time(from_micros(second * 1_000_000))
        states[second] = dict(con.execute(
            f"SELECT item_key, item::VARCHAR FROM state_at('{at}', only_table := '{TABLE}')").fetchall())
    return states


def _forget(store: Store) -> None:
    forget(store, plan_forget(store, TABLE, KEY_TEXT), "request 42")


def _every_value(store: LocalStore) -> Iterator[tuple[str, bytes]]:
    """Every file of the store as bytes a search can match: Parquet decoded (it is compressed), the rest raw."""
    for path in sorted(store.root.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            yield str(path), json.dumps(table.to_pylist(), default=str, ensure_ascii=False).encode("utf-8")
        yield str(path), path.read_bytes()


_pristine = built_once(_fill)


@pytest.fixture
def filled(store: Store) -> Store:
    """A store ``_fill`` made (copied from one build per test process)."""
    copy_store(_pristine(), store)
    return store


def test_state_at_every_moment_equals_the_model_without_the_item(filled: Store) -> None:
    _forget(filled)
    assert _states_at(filled, _moments()) == {second: model_state(KEPT, second) for second in _moments()}


def test_replay_at_every_moment_equals_the_model_without_the_item(filled: Store, tmp_path: Path) -> None:
    from changelog.codec import item_key

    _forget(filled)
    out = tmp_path / "state.jsonl"
    for second in _moments():
        at = format_time(from_micros(second * 1_000_000))
        assert run_cli(["replay", "--table", TABLE, "--store", filled.uri, "--at", at, "--to-file", str(out),
                        "--overwrite"]) == 0
        lines = out.read_text(encoding="utf-8").splitlines()
        got = {item_key({"pk": json.loads(line)["Item"]["pk"]}): line for line in lines}
        assert got == {key: '{"Item":' + image + "}" for key, image in model_state(KEPT, second).items()}


def test_a_restore_says_that_an_erased_item_is_left_out(filled: Store, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    at = format_time(from_micros((BASE + 2) * 1_000_000))  # a moment before the erasure, the item alive
    argv = ["replay", "--table", TABLE, "--store", filled.uri, "--at", at, "--to-file", str(tmp_path / "x.jsonl")]
    assert run_cli(argv) == 0
    assert "forget erased" not in capsys.readouterr().out
    _forget(filled)
    assert run_cli([*argv, "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert f"note: {TABLE}: forget erased 1 item from the history" in out and "leaves it out" in out
    assert SECRETS[0] not in out and KEY_TEXT not in out


def test_history_of_the_erased_item_is_empty_and_others_are_unchanged(filled: Store) -> None:
    before = [v.as_json() for v in item_history(filled, TABLE, json.dumps(KEYS[2]))]
    _forget(filled)
    assert item_history(filled, TABLE, KEY_TEXT) == []
    assert [v.as_json() for v in item_history(filled, TABLE, json.dumps(KEYS[2]))] == before


def test_diff_between_any_two_moments_equals_the_model_without_the_item(filled: Store) -> None:
    _forget(filled)
    moments = _moments()
    for low, high in itertools.pairwise(moments):
        diff = diff_states(filled, TABLE, low * 1_000_000, high * 1_000_000)
        before, after = model_state(KEPT, low), model_state(KEPT, high)
        assert sorted(c.item_key for c in diff.added) == sorted(after.keys() - before.keys())
        assert sorted(c.item_key for c in diff.removed) == sorted(before.keys() - after.keys())
        assert sorted(c.item_key for c in diff.changed) == sorted(
            k for k in before.keys() & after.keys() if before[k] != after[k])


def test_erased_values_appear_in_no_file_of_the_store(filled: Store) -> None:
    assert isinstance(filled, LocalStore)
    assert any(SECRETS[0].encode() in data for _, data in _every_value(filled))  # the search finds them before
    _forget(filled)
    for path, data in _every_value(filled):
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} is still in {path}"


def test_the_erasure_record_holds_neither_the_key_nor_data(filled: Store) -> None:
    _forget(filled)
    (erasure,) = read_erasures(filled, TABLE)
    text = filled.read(erasure.path).decode()
    assert '"b"' not in text and "pk" not in text and not any(secret in text for secret in SECRETS)
    assert erasure.reason == "request 42" and erasure.versions_removed > 0


def test_dry_run_writes_nothing(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(filled, LocalStore)
    before = {p: p.read_bytes() for p in filled.root.rglob("*") if p.is_file()}
    plan = plan_forget(filled, TABLE, KEY_TEXT)
    assert run_cli(["forget", "--table", TABLE, "--store", filled.uri, "--key", KEY_TEXT,
                    "--reason", "request 42", "--dry-run"]) == 0
    assert {p: p.read_bytes() for p in filled.root.rglob("*") if p.is_file()} == before
    out = capsys.readouterr().out
    assert all(hit.path in out for hit in plan.change_files + plan.parts)
    assert all(snapshot in out for snapshot in plan.snapshots) and len(plan.snapshots) == 2


def test_files_that_cannot_hold_the_key_are_not_read(store: Store) -> None:
    records = [lambda_record(TABLE, "INSERT", {"pk": {"S": f"k{i:03d}"}}, BASE + i, 100 + i,
                             new={"pk": {"S": f"k{i:03d}"}}) for i in range(6)]
    deliver_in_cuts(store, records, [2, 4])  # three files: k000-k001, k002-k003, k004-k005
    plan = plan_forget(store, TABLE, '{"pk":{"S":"k003"}}')
    assert (plan.files_read, plan.files_skipped, len(plan.change_files)) == (1, 2, 1)


def test_check_passes_after_forget_and_reports_the_erasure(filled: Store) -> None:
    _forget(filled)
    report = check_store(filled, TABLE, read_data=True)
    assert report.sound, report.problems
    assert report.erasures == 1 and "erasures" in report.verified
    assert any("records an erasure" in f.problem and "request 42" in f.problem for f in report.findings)


def test_check_passes_after_forget_then_a_merge_and_a_ledger_fold(filled: Store) -> None:
    # The erasure's replacement files merged away: the fold keeps their put and del, which check reads.
    _forget(filled)
    merge_small_files(filled, TABLE, (BASE + 7200) * 1_000_000, min_files=1)
    assert fold_ledger(filled, TABLE) > 0
    report = check_store(filled, TABLE, read_data=True)
    assert report.sound, report.problems


def test_check_finds_a_replaced_file_put_back(filled: Store, tmp_path: Path) -> None:
    assert isinstance(filled, LocalStore)
    kept = tmp_path / "copy"
    shutil.copytree(filled.root / TABLES, kept)
    plan = plan_forget(filled, TABLE, KEY_TEXT)
    _forget(filled)
    old = plan.change_files[0].path
    (filled.root / old).write_bytes((kept / old.removeprefix(TABLES + "/")).read_bytes())
    report = check_store(filled, TABLE, read_data=True)
    assert [f.path for f in report.problems if "erasure" in f.problem] == [old]


def test_a_late_record_of_the_erased_item_is_dropped(filled: Store) -> None:
    _forget(filled)
    late = lambda_record(TABLE, "MODIFY", KEYS[ERASED], BASE + 3700, 10**21,
                         new={**KEYS[ERASED], "email": {"S": "late-copy-5b1e"}})
    result = capture_batch(filled, [late], decode_lambda_record, source="test")
    assert (result.captured, result.erased, result.files) == (0, 1, ())
    assert item_history(filled, TABLE, KEY_TEXT) == []


def test_a_write_after_the_erasure_is_kept(filled: Store) -> None:
    _forget(filled)
    later = int(time.time()) + 5
    record = lambda_record(TABLE, "INSERT", KEYS[ERASED], later, 10**21, new={**KEYS[ERASED], "n": {"N": "7"}})
    result = capture_batch(filled, [record], decode_lambda_record, source="test")
    assert (result.captured, result.erased) == (1, 0)
    assert [v.event_name for v in item_history(filled, TABLE, KEY_TEXT)] == ["INSERT"]


def test_a_requeued_record_of_the_erased_item_is_dropped_with_its_quarantine_copy(filled: Store) -> None:
    from stream_consumer.requeue import requeue

    _forget(filled)
    kept = lambda_record(TABLE, "MODIFY", KEYS[ERASED], BASE + 10, 10**21,
                         new={**KEYS[ERASED], "email": {"S": "kept-copy-44aa"}})
    quarantined = {"reason": "test", "source": "lambda-dynamodb", "quarantined_at": "2023-11-14T22:20:00+00:00",
                   "record": kept}
    filled.write(f"{TABLES}/{TABLE}/quarantine/deadbeef.json", json.dumps(quarantined).encode())
    summary = requeue(filled, TABLE)
    assert (summary.erased, summary.captured, summary.files) == (1, 0, ())
    assert not filled.exists(f"{TABLES}/{TABLE}/quarantine/deadbeef.json")


def test_a_bootstrap_copy_from_before_the_erasure_leaves_the_item_out(filled: Store) -> None:
    from compactor.bootstrap import SnapshotWriter

    _forget(filled)
    # An export taken before the erasure (its version is its export time) still holds the item.
    writer = SnapshotWriter(filled, TABLE, (BASE + 8000) * 1_000_000, (BASE + 8000) * 1_000_000, ["pk"])
    writer.add([{**KEYS[ERASED], "email": {"S": SECRETS[2]}}, {**KEYS[3], "status": {"S": "last"}}])
    assert (writer.items, writer.erased) == (1, 1)
    writer.abort()


def test_a_bootstrap_copy_after_the_erasure_keeps_the_item(filled: Store) -> None:
    from compactor.bootstrap import SnapshotWriter

    _forget(filled)
    later = (int(time.time()) + 5) * 1_000_000  # a scan of the live table after the erasure copies what it holds
    writer = SnapshotWriter(filled, TABLE, later, later, ["pk"])
    writer.add([{**KEYS[ERASED], "n": {"N": "7"}}])
    assert (writer.items, writer.erased) == (1, 0)
    writer.abort()


def test_forget_without_yes_in_a_pipe_is_refused(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["forget", "--table", TABLE, "--store", filled.uri, "--key", KEY_TEXT, "--reason", "r"])
    assert code == 2 and "--yes" in capsys.readouterr().err
    assert item_history(filled, TABLE, KEY_TEXT) != []


def test_a_reason_quoting_the_key_is_refused(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["forget", "--table", TABLE, "--store", filled.uri, "--key", KEY_TEXT,
                    "--reason", f"erase {KEY_TEXT}", "--yes"])
    assert code == 2 and "contains the key" in capsys.readouterr().err
    assert read_erasures(filled, TABLE) == []


def test_the_cli_forgets_with_yes(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["forget", "--table", TABLE, "--store", filled.uri, "--key", KEY_TEXT, "--reason", "request 42",
                    "--yes"]) == 0
    assert "forgot:" in capsys.readouterr().out
    assert item_history(filled, TABLE, KEY_TEXT) == []


# --- S3: versioned buckets and Object Lock (a moto server, so Parquet readers reach it too) ----------------


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    server = MotoHttpServer()
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    try:
        yield
    finally:
        server.stop()


@pytest.mark.slow
def test_forget_on_a_versioned_bucket_leaves_no_old_version(moto_server: None) -> None:
    s3 = boto3.client("s3")
    bucket = f"versioned-{uuid.uuid4().hex[:12]}"  # moto's state outlives its server: a name no other test used
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    store = open_store(f"s3://{bucket}/backups", allow_empty=True)  # a new store, filled below
    _fill(store)
    plan = plan_forget(store, TABLE, KEY_TEXT)
    _forget(store)
    versions = s3.list_object_versions(Bucket=bucket, Prefix="backups/")
    left = {v["Key"] for v in versions.get("Versions", []) + versions.get("DeleteMarkers", [])}
    assert not left & {f"backups/{hit.path}" for hit in plan.change_files + plan.parts}
    assert _states_at(store, _moments()) == {second: model_state(KEPT, second) for second in _moments()}
    assert check_store(store, TABLE).sound


def _locked_store() -> Store:
    """A store in a fresh bucket whose Object Lock keeps every version in compliance mode for a day."""
    s3 = boto3.client("s3")
    bucket = f"locked-{uuid.uuid4().hex[:12]}"  # moto's state outlives its server: a name no other test used
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    store = open_store(f"s3://{bucket}/backups", allow_empty=True)  # a new store, filled below
    _fill(store)
    return store


@pytest.mark.slow
def test_forget_refuses_a_bucket_in_object_lock_compliance_mode(moto_server: None) -> None:
    store = _locked_store()
    before = store.sizes("")
    plan = plan_forget(store, TABLE, KEY_TEXT)
    assert plan.refusal is not None and "compliance mode" in plan.refusal
    with pytest.raises(EraseRefused, match="compliance mode"):
        forget(store, plan, "request 42")
    assert store.sizes("") == before


@pytest.mark.slow
def test_the_cli_refuses_object_lock_compliance_in_one_line(moto_server: None,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    store = _locked_store()
    capsys.readouterr()
    assert run_cli(["forget", "--table", TABLE, "--store", store.uri, "--key", KEY_TEXT, "--reason", "r",
                    "--yes"]) == 8
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compliance mode" in err[0] and "nothing was changed" in err[0]


# --- the property: any writes, any erased key, any late copies ---------------------------------------------


@pytest.mark.slow
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations(max_ops=15), erased=st.integers(0, len(KEYS) - 1), cuts=st.lists(st.integers(0, 100), max_size=3),
       snapshot_share=st.none() | st.floats(0, 1))
def test_any_history_after_forget_equals_the_model_without_the_item(
        tmp_path_factory: pytest.TempPathFactory, ops: list[Op], erased: int, cuts: list[int],
        snapshot_share: float | None) -> None:
    records = stream_records(TABLE, ops)
    kept = [op for op in ops if op.key_index != erased]
    kept_records = stream_records(TABLE, kept)
    if not records or not kept_records:
        return
    store = LocalStore(tmp_path_factory.mktemp("store"))
    deliver_in_cuts(store, records, cuts)
    seconds = sorted({int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in records})
    if snapshot_share is not None:
        build_snapshot(store, TABLE, seconds[int(snapshot_share * (len(seconds) - 1))] * 1_000_000)
    forget(store, plan_forget(store, TABLE, json.dumps(KEYS[erased])), "property")
    deliver_in_cuts(store, records, [])  # every record again, late: the erased item's are dropped
    # Moments where the kept items' history is in the store (the erased item may have held the edges).
    kept_seconds = sorted({int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in kept_records})
    inside = [s for s in seconds if kept_seconds[0] <= s <= kept_seconds[-1]]
    assert _states_at(store, inside) == {second: model_state(kept, second) for second in inside}
    assert check_store(store, TABLE, read_data=True).sound
    assert item_history(store, TABLE, json.dumps(KEYS[erased])) == []


def test_all_rows_of_a_file_erased_leave_no_replacement(store: Store) -> None:
    records = [lambda_record(TABLE, "INSERT", KEYS[0], BASE, 100, new=KEYS[0]),
               lambda_record(TABLE, "INSERT", KEYS[ERASED], BASE + 1, 101, new=KEYS[ERASED]),
               lambda_record(TABLE, "INSERT", KEYS[2], BASE + 2, 102, new=KEYS[2])]
    deliver_in_cuts(store, records, [1, 2])
    result = forget(store, plan_forget(store, TABLE, KEY_TEXT), "r")
    assert [r.new for r in result.erasures[0].replaced] == [None]
    assert check_store(store, TABLE).sound


def test_erasing_the_first_and_last_stored_changes_keeps_every_moment_restorable(store: Store) -> None:
    # Coverage reads its earliest and latest moments from the first and last stored change: the
    # erased item's, here. Every moment must still answer, without the item.
    from changelog.state import coverage

    records = [lambda_record(TABLE, "INSERT", KEYS[ERASED], BASE, 100, new=KEYS[ERASED]),
               lambda_record(TABLE, "INSERT", KEYS[0], BASE + 60, 101, new=KEYS[0]),
               lambda_record(TABLE, "MODIFY", KEYS[ERASED], BASE + 120, 102, new=KEYS[ERASED])]
    deliver_in_cuts(store, records, [1, 2])
    before = coverage(store, TABLE)
    forget(store, plan_forget(store, TABLE, KEY_TEXT), "r")
    after = coverage(store, TABLE)

    assert (after.earliest_us, after.latest_us) == (before.earliest_us, before.latest_us) == \
        (BASE * 1_000_000, (BASE + 120) * 1_000_000)
    assert check_store(store, TABLE).sound


# --- a forget while a compaction reads: its output is published after the forget rewrote the files ----------


def _racing(monkeypatch: pytest.MonkeyPatch, module: Any, publisher: str, store: Store) -> list[Any]:
    """Make ``module.publisher`` run a whole forget first, once: the compaction has read its files by then."""
    real = getattr(module, publisher)
    ran: list[Any] = []

    def publish(*args: Any, **kwargs: Any) -> Any:
        if not ran:
            ran.append(forget(store, plan_forget(store, TABLE, KEY_TEXT), "request 42"))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, publisher, publish)
    return ran


def _leaves_no_erased_version(store: Store) -> None:
    assert plan_forget(store, TABLE, KEY_TEXT).empty
    assert _states_at(store, _moments()) == {second: model_state(KEPT, second) for second in _moments()}
    assert check_store(store, TABLE, read_data=True).sound


def test_a_forget_while_a_merge_reads_its_files_leaves_no_erased_version_in_the_merged_file(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import compactor.merge

    deliver_in_cuts(store, stream_records(TABLE, OPS), [1, 2, 4, 6])
    ran = _racing(monkeypatch, compactor.merge, "publish_change_file", store)
    merge_small_files(store, TABLE, (BASE + 7200) * 1_000_000)
    assert ran
    _leaves_no_erased_version(store)


def test_a_forget_while_a_snapshot_is_built_leaves_no_erased_version_in_the_snapshot(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import compactor.snapshots

    deliver_in_cuts(store, stream_records(TABLE, OPS), [2, 4])
    ran = _racing(monkeypatch, compactor.snapshots, "publish_manifest", store)
    build_snapshot(store, TABLE, (BASE + 3601) * 1_000_000)
    assert ran
    _leaves_no_erased_version(store)


def test_a_merge_of_files_a_running_forget_has_not_deleted_yet_leaves_out_what_it_erased(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # The merge starts once the erasure is recorded, and reads the files forget replaced before forget
    # deletes them; forget then finishes (its last plan cannot see the merge's output) before it publishes.
    import threading

    import compactor.forget
    import compactor.merge

    deliver_in_cuts(store, stream_records(TABLE, OPS), [1, 2, 4, 6])
    merge_read, forget_done = threading.Event(), threading.Event()
    failures: list[BaseException] = []
    real_publish, real_write_erasure = compactor.merge.publish_change_file, compactor.forget.write_erasure

    def publish(*args: Any, **kwargs: Any) -> Any:
        merge_read.set()
        forget_done.wait(60)
        return real_publish(*args, **kwargs)

    def merge() -> None:
        try:
            merge_small_files(store, TABLE, (BASE + 7200) * 1_000_000)
        except BaseException as exc:  # reported below
            failures.append(exc)
            merge_read.set()

    merging = threading.Thread(target=merge)

    def write_erasure(*args: Any, **kwargs: Any) -> Any:
        path = real_write_erasure(*args, **kwargs)
        if not merging.is_alive() and not merge_read.is_set():
            merging.start()
            merge_read.wait(60)
        return path

    monkeypatch.setattr(compactor.merge, "publish_change_file", publish)
    monkeypatch.setattr(compactor.forget, "write_erasure", write_erasure)
    _forget(store)
    forget_done.set()
    merging.join(60)
    monkeypatch.undo()
    assert not failures
    _leaves_no_erased_version(store)


def test_a_merge_failing_after_it_published_leaves_no_erased_version(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import compactor.merge

    deliver_in_cuts(store, stream_records(TABLE, OPS), [1, 2, 4, 6])
    _racing(monkeypatch, compactor.merge, "publish_change_file", store)

    def failing(paths: Any) -> None:
        raise OSError("the store timed out")

    monkeypatch.setattr(store, "delete_many", failing)
    with pytest.raises(OSError):
        merge_small_files(store, TABLE, (BASE + 7200) * 1_000_000)
    monkeypatch.undo()
    assert plan_forget(store, TABLE, KEY_TEXT).empty


def test_a_forget_while_a_spark_snapshot_waits_for_publication_leaves_no_erased_version_in_it(store: Store) -> None:
    # The Spark job leaves a draft; the compactor publishes it later.
    from compactor.snapshots import publish_draft, write_draft

    deliver_in_cuts(store, stream_records(TABLE, OPS), [2, 4])
    at_us = (BASE + 3601) * 1_000_000
    write_draft(store, build_snapshot(store, TABLE, at_us, writer_id="5ba4c0b00001", publish=False))
    _forget(store)
    publish_draft(store, TABLE, at_us, "5ba4c0b00001")
    _leaves_no_erased_version(store)


def test_an_erasure_done_again_keeps_the_moment_the_first_erased_up_to(filled: Store) -> None:
    # Done again (a forget's later round, or after a compaction that raced it), it must not reach the
    # item's writes made after the first: they are kept.
    from compactor.forget import _plan, apply_forget

    (first,) = forget(filled, plan_forget(filled, TABLE, KEY_TEXT), "request 42").erasures
    plan = _plan(filled, TABLE, plan_forget(filled, TABLE, KEY_TEXT).item_key, first.erased_up_to_us)
    again = apply_forget(filled, plan, "again", now_us=first.erased_up_to_us + 60_000_000)
    assert again.erased_up_to_us == first.erased_up_to_us


# --- quarantined records: a kept copy of an erased version is erased with it ---------------------------------


def _quarantine(store: Store, name: str, key: dict[str, Any], value: str, source: str = "lambda-dynamodb") -> str:
    """A quarantined stream record of ``key`` holding ``value``, undecodable (an attribute of no DynamoDB type)."""
    record = lambda_record(TABLE, "MODIFY", key, BASE + 10, 10**21, new={**key, "email": {"S": value}})
    record["dynamodb"]["NewImage"]["bad"] = {"X": "no such type"}
    if source == "lambda-kinesis":
        import base64

        payload = {"eventName": "MODIFY", "tableName": TABLE, "dynamodb": record["dynamodb"]}
        record = {"kinesis": {"data": base64.b64encode(json.dumps(payload).encode()).decode()}}
    path = f"{TABLES}/{TABLE}/quarantine/{name}.json"
    store.write(path, json.dumps({"reason": "test", "source": source, "quarantined_at": "2023-11-14T22:20:00+00:00",
                                  "record": record}).encode())
    return path


@pytest.mark.parametrize("source", ["lambda-dynamodb", "lambda-kinesis"])
def test_a_quarantined_record_of_the_erased_item_is_erased_with_it(filled: Store, source: str) -> None:
    assert isinstance(filled, LocalStore)
    path = _quarantine(filled, "0badf00d", KEYS[ERASED], "quarantined-copy-77e1", source)
    plan = plan_forget(filled, TABLE, KEY_TEXT)
    assert [hit.path for hit in plan.quarantine] == [path]
    _forget(filled)
    assert not filled.exists(path)
    assert path in {swap.old for swap in read_erasures(filled, TABLE)[0].replaced}
    assert not any(b"quarantined-copy-77e1" in data for _, data in _every_value(filled))
    assert check_store(filled, TABLE).sound


def test_a_quarantined_record_of_another_item_is_kept(filled: Store) -> None:
    path = _quarantine(filled, "0ddba11", KEYS[2], "someone-else-3c1d")
    _forget(filled)
    assert filled.exists(path)


def test_requeue_after_forget_brings_no_quarantined_copy_back(filled: Store) -> None:
    from stream_consumer.requeue import requeue

    _quarantine(filled, "0badf00d", KEYS[ERASED], "quarantined-copy-77e1")
    _forget(filled)
    summary = requeue(filled, TABLE)
    assert (summary.captured, summary.erased, summary.still_failing) == (0, 0, 0)
    assert item_history(filled, TABLE, KEY_TEXT) == []


def test_a_late_undecodable_record_of_the_erased_item_is_dropped_not_quarantined(filled: Store) -> None:
    assert isinstance(filled, LocalStore)
    _forget(filled)
    late = lambda_record(TABLE, "MODIFY", KEYS[ERASED], BASE + 3700, 10**21,
                         new={**KEYS[ERASED], "email": {"S": "late-bad-copy-6d2f"}})
    late["dynamodb"]["NewImage"]["bad"] = {"X": "no such type"}
    result = capture_batch(filled, [late], decode_lambda_record, source="test")
    assert (result.captured, result.quarantined, result.erased) == (0, 0, 1)
    assert not any(b"late-bad-copy-6d2f" in data for _, data in _every_value(filled))


def test_an_undecodable_write_after_the_erasure_is_quarantined_as_usual(filled: Store) -> None:
    _forget(filled)
    later = lambda_record(TABLE, "INSERT", KEYS[ERASED], int(time.time()) + 5, 10**21,
                          new={**KEYS[ERASED], "bad": {"X": "no such type"}})
    result = capture_batch(filled, [later], decode_lambda_record, source="test")
    assert (result.quarantined, result.erased) == (1, 0)


def test_check_finds_a_quarantined_copy_of_an_erased_version_kept_after_the_erasure(filled: Store) -> None:
    _forget(filled)
    # Quarantined after the erasure (as an older capture would have kept a late record), stamped before it.
    path = _quarantine(filled, "0badf00d", KEYS[ERASED], "quarantined-late-5e0c")
    document = json.loads(filled.read(path))
    filled.write(path, json.dumps({**document, "quarantined_at": "2099-01-01T00:00:00+00:00"}).encode())
    assert [f.path for f in check_store(filled, TABLE, read_data=True).problems] == [path]
    assert check_store(filled, TABLE).sound  # contents are read only with --read-data
    _forget(filled)
    assert not filled.exists(path)
    assert check_store(filled, TABLE, read_data=True).sound


def test_a_quarantined_record_whose_key_cannot_be_read_is_reported_not_guessed(filled: Store) -> None:
    path = f"{TABLES}/{TABLE}/quarantine/feedface.json"
    filled.write(path, b'{"reason": "test", "source": "lambda-dynamodb", "record": "not an object"}')
    plan = plan_forget(filled, TABLE, KEY_TEXT)
    assert (plan.quarantine, plan.quarantine_unread) == ((), 1)
    _forget(filled)
    assert filled.exists(path)


# --- S3 Object Lock in governance mode: erased with the bypass, refused without it --------------------------


def _governed_store(by_default: bool = True) -> Store:
    """A store in a fresh bucket whose Object Lock keeps every version in governance mode for a day: by the
    bucket's default retention, or by a retention set on each object."""
    s3 = boto3.client("s3")
    bucket = f"governed-{uuid.uuid4().hex[:12]}"  # moto's state outlives its server: a name no other test used
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    if by_default:
        s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    store = open_store(f"s3://{bucket}/backups", allow_empty=True)  # a new store, filled below
    _fill(store)
    if not by_default:
        until = datetime.now(UTC) + timedelta(days=1)
        for version in s3.list_object_versions(Bucket=bucket, Prefix="backups/")["Versions"]:
            s3.put_object_retention(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"],
                                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})
    return store


def _versions(store: Store) -> set[str]:
    assert isinstance(store, S3Store)
    found = store.client.list_object_versions(Bucket=store.bucket, Prefix="backups/")
    return {v["Key"] for v in found.get("Versions", []) + found.get("DeleteMarkers", [])}


@pytest.mark.slow
@pytest.mark.parametrize("by_default", [True, False], ids=["bucket-default", "per-object"])
def test_forget_erases_locked_versions_in_governance_mode_with_the_bypass(moto_server: None,
                                                                          by_default: bool) -> None:
    store = _governed_store(by_default)
    plan = plan_forget(store, TABLE, KEY_TEXT)
    assert plan.refusal is None
    _forget(store)
    assert not _versions(store) & {f"backups/{hit.path}" for hit in plan.change_files + plan.parts}
    assert not any(key.startswith("backups/forget-probe-") for key in _versions(store))
    assert _states_at(store, _moments()) == {second: model_state(KEPT, second) for second in _moments()}
    assert check_store(store, TABLE).sound


@pytest.mark.slow
def test_governance_mode_without_the_bypass_permission_is_refused_before_writing(moto_server: None) -> None:
    store = _governed_store()
    assert isinstance(store, S3Store)

    # moto does not evaluate IAM: a caller without s3:BypassGovernanceRetention is emulated by a request whose
    # bypass header never reaches S3, which S3 (and moto) answer with AccessDenied for a locked version.
    def without_bypass(request: Any, **_: Any) -> None:
        if "x-amz-bypass-governance-retention" in request.headers:
            del request.headers["x-amz-bypass-governance-retention"]

    store.client.meta.events.register("before-sign.s3.DeleteObject", without_bypass)
    before = store.sizes(TABLES)
    plan = plan_forget(store, TABLE, KEY_TEXT)
    with pytest.raises(EraseRefused, match="s3:BypassGovernanceRetention"):
        forget(store, plan, "request 42")
    assert store.sizes(TABLES) == before
