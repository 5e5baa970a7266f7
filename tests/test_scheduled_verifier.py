"""The scheduled verifier (replayer/proving/scheduled.py): the coverage proof, a restore drill and a rotating
sampled ``check --read-data``, published as Powertools metrics; and the proof ``status`` shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changelog.gaps import Gap, write_gap
from changelog.proof import coverage_proof
from changelog.state import change_files
from changelog.store import Store
from changelog.timefmt import format_time, from_micros
from replayer.proving import scheduled
from replayer.proving.scheduled import DAY_US, MINUTE_US, in_sample, verify_once
from stream_consumer.checkpoint import Checkpoint, write_checkpoint
from tests.damage import (
    DAMAGES,
    LAST_SECOND,
    SNAPSHOT_SECONDS,
    TABLE,
    US,
    Damage,
    copy_built_store,
    fresh_s3_store,
    part_paths,
)
from tests.test_store import s3_over_http as s3_over_http

NOW_US = (LAST_SECOND + 3600) * US
HOUR = 60 * MINUTE_US


def invoke(store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *,
           now_us: int = NOW_US, cycle_days: int = 7) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the handler as the schedule does; (its summary, the metrics it published)."""
    monkeypatch.setenv("REWIND_STORE", store.uri)
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    monkeypatch.setenv("REWIND_VERIFY_INTERVAL_MINUTES", "60")
    monkeypatch.setenv("REWIND_VERIFY_CYCLE_DAYS", str(cycle_days))
    monkeypatch.setattr(scheduled, "_stores", {})
    capsys.readouterr()
    event = {"source": "aws.events", "detail-type": "Scheduled Event",
             "time": format_time(from_micros(now_us)).replace("+00:00", "Z")}
    summary = scheduled.lambda_handler(event, None)
    out = capsys.readouterr().out
    documents = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]
    assert documents, "no metrics were emitted"
    # Powertools writes a value once per run as a number or a one-item list, depending on its version.
    return summary, {name: value[0] if isinstance(value, list) and len(value) == 1 else value
                     for name, value in documents[-1].items()}


@pytest.fixture
def built(store: Store) -> Store:
    copy_built_store(store)
    return store


@pytest.fixture
def s3_built(s3_over_http: Store, tmp_path: Path) -> Store:
    store = fresh_s3_store(s3_over_http, tmp_path)
    copy_built_store(store)
    return store


def test_a_sound_s3_store_publishes_zero_failures_and_its_proof(
        s3_built: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    summary, published = invoke(s3_built, monkeypatch, capsys)
    assert summary["failures"] == [] and summary["drill_matches"] is True
    assert published["VerificationFailures"] == 0
    assert (published["Gaps"], published["QuarantinedRecords"], published["UnreadShards"]) == (0, 0, 0)
    # Lambda path (no shard records): the newest stored change is the latest restorable moment.
    assert published["CaptureLagSeconds"] == 3600
    assert published["DrillsPassed"] == 1
    assert published["service"] == "ddb-rewind-verifier"


def test_the_drill_is_at_a_moment_after_the_newest_snapshot(built: Store, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    summary, _ = invoke(built, monkeypatch, capsys)
    drilled = summary["drill_at"]
    assert format_time(from_micros(SNAPSHOT_SECONDS[-1] * US)) <= drilled <= format_time(
        from_micros(LAST_SECOND * US))


STRUCTURAL = [d for d in DAMAGES if d.name in
              ("truncated part", "missing part", "zero-byte change file", "manifest deleted mid-chain")]


@pytest.mark.parametrize("damage", STRUCTURAL, ids=[d.name for d in STRUCTURAL])
def test_a_damaged_file_in_an_s3_store_publishes_a_verification_failure(
        s3_built: Store, damage: Damage, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Damage a listing and the manifests show is found by every run, whatever share it reads whole.
    named = damage.apply(s3_built)
    summary, published = invoke(s3_built, monkeypatch, capsys)
    assert published["VerificationFailures"] >= 1
    assert any(named in failure for failure in summary["failures"]), summary["failures"]


@pytest.mark.slow
def test_a_bit_flip_is_found_by_some_run_of_every_cycle(built: Store, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    part = part_paths(built)[0]  # the oldest snapshot: no drill reads it, only the rotating check
    data = bytearray(built.read(part))
    data[len(data) // 3] ^= 1
    built.write(part, bytes(data))
    found = []
    for run in range(24):
        summary, published = invoke(built, monkeypatch, capsys, now_us=NOW_US + run * HOUR, cycle_days=1)
        if published["VerificationFailures"]:
            found.append(run)
            assert any(part in failure for failure in summary["failures"])
    assert found, "no run of the cycle re-hashed the damaged part"
    # Each run reads about a 24th of the files, not all of them.
    assert len(found) < 24


def test_a_gap_publishes_the_gap_count_and_the_loss_holds_the_proof_back(
        built: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    start = (LAST_SECOND - 600) * US
    write_gap(built, TABLE, Gap("shardId-1", detected_at_us=LAST_SECOND * US, reason="trimmed",
                                start_us=start, end_us=start + 10 * US, after_sequence_number="5"))
    summary, published = invoke(built, monkeypatch, capsys)
    assert published["Gaps"] == 1
    # The newest restorable moment is the last microsecond before the gap.
    assert published["CaptureLagSeconds"] == (NOW_US - (start - 1)) / US
    assert "a gap: shard shardId-1" in summary["proof"]


def test_a_shard_listed_but_never_read_is_published_and_named(
        built: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    write_checkpoint(built, TABLE, Checkpoint("shardId-0001", watermark_us=LAST_SECOND * US))
    write_checkpoint(built, TABLE, Checkpoint("shardId-0002"))
    summary, published = invoke(built, monkeypatch, capsys)
    assert published["UnreadShards"] == 1
    # Capture proves no moment past the unread shard's start; the newest snapshot, proven when it was
    # built, stays restorable.
    assert published["CaptureLagSeconds"] == (NOW_US - SNAPSHOT_SECONDS[-1] * US) / US
    assert "shard shardId-0002 (listed, not read yet" in summary["proof"]


def test_a_table_not_captured_yet_is_no_failure(store: Store, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    summary, published = invoke(store, monkeypatch, capsys)
    assert published["VerificationFailures"] == 0 and summary["skipped"]


@pytest.mark.filterwarnings("ignore:No application metrics")
@pytest.mark.parametrize("value", ["0", "-1", "1.5", "a day"])
def test_a_bad_cycle_setting_is_refused_before_anything_is_read(
        store: Store, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from changelog.errors import UsageError

    monkeypatch.setenv("REWIND_STORE", store.uri)
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    monkeypatch.setenv("REWIND_VERIFY_CYCLE_DAYS", value)
    with pytest.raises(UsageError, match="REWIND_VERIFY_CYCLE_DAYS"):
        scheduled.lambda_handler({}, None)


@pytest.mark.slow
def test_every_file_is_hashed_once_over_a_cycle_of_runs(built: Store) -> None:
    files = set(change_files(built, TABLE)) | set(part_paths(built))
    hashed: set[str] = set()
    for run in range(24):
        report = verify_once(built, TABLE, NOW_US + run * HOUR, HOUR, DAY_US).check
        assert report is not None and report.sound
        hashed |= {path for path in files if in_sample(path, NOW_US + run * HOUR, HOUR, DAY_US)}
        assert report.files_read == sum(1 for p in files if in_sample(p, NOW_US + run * HOUR, HOUR, DAY_US))
    assert hashed == files


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(paths=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=40, unique=True),
       interval_minutes=st.integers(5, 24 * 60), cycle_days=st.integers(1, 60),
       start_us=st.integers(0, 2 * 10**15), late=st.lists(st.floats(0, 0.25), min_size=1, max_size=1))
def test_runs_every_interval_cover_every_file_within_the_cycle(
        paths: list[str], interval_minutes: int, cycle_days: int, start_us: int, late: list[float]) -> None:
    interval, cycle = interval_minutes * MINUTE_US, cycle_days * DAY_US
    runs = -(-cycle // interval)
    # Each run may start up to a quarter of an interval late.
    times = [start_us + k * interval + int(late[0] * interval * (k % 2)) for k in range(runs)]
    covered = {p for t in times for p in paths if in_sample(p, t, interval, cycle)}
    assert covered == set(paths)


def test_the_proof_of_a_sound_store_is_whole(built: Store) -> None:
    proof = coverage_proof(built, TABLE, NOW_US)
    assert proof.whole
    assert proof.latest_restorable_us == LAST_SECOND * US
    assert proof.held_by == ("the newest stored change (without shard records nothing proves a later moment)",)


def test_status_shows_the_proof_in_json_and_in_a_line(built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    from ddb_rewind.cli import main

    write_checkpoint(built, TABLE, Checkpoint("shardId-0001", watermark_us=(LAST_SECOND - 60) * US))
    assert main(["status", "--store", built.uri, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    proof = row["proof"]
    assert proof["latest_restorable"] == format_time(from_micros((LAST_SECOND - 60) * US))
    assert proof["held_by"] == ["shard shardId-0001 (open, read to its watermark)"]
    assert (proof["shards"], proof["unread_shards"], proof["gaps"], proof["quarantined"]) == (1, [], 0, 0)
    assert main(["status", "--store", built.uri]) == 0
    out = capsys.readouterr().out
    assert f"{TABLE} proof: latest restorable" in out and "held back by shard shardId-0001" in out
