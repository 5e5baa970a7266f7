"""Every read that a restore, a diff or an answer depends on refuses a damaged store, in one line.

Each kind of damage (tests/damage.py) is applied to a store of three chained snapshots; the
commands that read the damaged file must exit 6 with one line naming it, and write nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from changelog.changefile import parquet_bytes, write_change_files
from changelog.codec import decode_lambda_record
from changelog.errors import DamagedStore
from changelog.gaps import Gap, all_gaps, write_gap
from changelog.layout import change_file_path, meta_path, parse_change_file_name
from changelog.record import rows_to_table
from changelog.snapshot import list_manifests
from changelog.state import change_files, coverage, retention_floor
from changelog.store import Store
from compactor.policy import parse_policy
from compactor.retention import apply_expire, plan_expire
from compactor.snapshots import build_snapshot
from replayer.proving.verify import stored_state
from stream_consumer.checkpoint import Checkpoint, read_checkpoints, write_checkpoint
from tests.damage import (
    DAMAGES,
    LAST_SECOND,
    OPS,
    SNAPSHOT_SECONDS,
    T0,
    TABLE,
    US,
    Damage,
    at,
    build_store,
    copy_built_store,
    delete_newest_change_file,
    flip,
    fresh_s3_store,
    manifest_paths,
)
from tests.model import model_state, stream_records
from tests.test_store import s3_over_http  # noqa: F401  (the fixture)
from tests.workloads import run_cli

ROOT = Path(__file__).resolve().parents[1]


def _commands(store: Store, damage: Damage, out: Path) -> dict[str, list[str]]:
    """The commands whose answer depends on the damaged file."""
    commands = {
        "replay": ["replay", "--table", TABLE, "--store", store.uri, "--at", at(LAST_SECOND), "--to-file", str(out)],
        "diff": ["diff", "--table", TABLE, "--store", store.uri, "--from", at(SNAPSHOT_SECONDS[0] + 1),
                 "--to", at(LAST_SECOND)],
        "sql": ["sql", "--store", store.uri, "SELECT count(*) FROM changes"],
    }
    if damage.by_structure or damage.in_changes:
        commands["status"] = ["status", "--store", store.uri]
    if damage.in_changes:
        commands["history"] = ["history", "--table", TABLE, "--store", store.uri, "--key", '{"pk":{"S":"b"}}']
    return commands


@pytest.fixture
def built(store: Store) -> Store:
    copy_built_store(store)
    return store


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.name for d in DAMAGES])
def test_every_reader_refuses_a_damaged_local_store_in_one_line(
        built: Store, damage: Damage, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    named = damage.apply(built)
    out = tmp_path / "restore.jsonl"
    for command, argv in _commands(built, damage, out).items():
        capsys.readouterr()
        assert run_cli(argv) == 6, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("ddb-rewind: error: damaged store: "), (command, err)
        assert named in err and "ddb-rewind check --store" in err, (command, err)
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES, ids=[d.name for d in DAMAGES])
def test_every_reader_refuses_a_damaged_s3_store_in_one_line(
        s3_over_http: Store, damage: Damage, tmp_path: Path,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    store = fresh_s3_store(s3_over_http, tmp_path)
    copy_built_store(store)
    named = damage.apply(store)
    out = tmp_path / "restore.jsonl"
    for command, argv in _commands(store, damage, out).items():
        capsys.readouterr()
        assert run_cli(argv) == 6, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err, (command, err)
    assert not out.exists()


def test_a_sound_store_replays_the_model_from_every_snapshot(built: Store) -> None:
    for second in (*SNAPSHOT_SECONDS, LAST_SECOND):
        state = stored_state(built, TABLE, second * US)
        assert {k: json.dumps(v, separators=(",", ":"), ensure_ascii=False) for k, v in state.items()} \
            == model_state(OPS, second)


def test_a_damaged_store_is_refused_by_a_real_process_without_a_traceback(built: Store, tmp_path: Path) -> None:
    named = DAMAGES[0].apply(built)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "ddb_rewind", "replay", "--table", TABLE, "--store", built.uri,
                             "--at", at(LAST_SECOND), "--to-file", str(tmp_path / "x.jsonl")],
                            capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 6
    assert result.stderr.count("\n") == 1 and named in result.stderr and "Traceback" not in result.stderr


def test_the_same_rows_give_the_same_change_file_whatever_their_order(store: Store) -> None:
    rows = [decode_lambda_record(r) for r in stream_records(TABLE, OPS[:5])]
    first = write_change_files(store, rows)
    again = write_change_files(store, list(reversed(rows)))
    assert first == again and len(change_files(store, TABLE)) == len(first)
    assert parquet_bytes(rows_to_table(rows)) == parquet_bytes(rows_to_table(rows))


def test_a_change_file_name_carries_the_sha256_of_its_bytes(built: Store) -> None:
    import hashlib

    for path in change_files(built, TABLE):
        name = parse_change_file_name(path)
        assert name is not None and hashlib.sha256(built.read(path)).hexdigest().startswith(name.digest)


def test_published_parquet_files_carry_page_checksums(built: Store) -> None:
    import io

    import pyarrow.parquet as pq

    data = built.read(change_files(built, TABLE)[-1])
    # A flip inside the first data page is caught by pyarrow's page checksum verification.
    with pytest.raises((OSError, pa.ArrowException)):
        offset = 4 + 40  # past the magic and the page header, inside the first page's data
        pq.read_table(io.BytesIO(flip(data, offset, 0xFF)), page_checksum_verification=True)


def test_a_manifest_lists_its_parts_with_size_sha256_and_rows(built: Store) -> None:
    import hashlib

    for path, manifest in list_manifests(built, TABLE):
        base = path.rsplit("/", 1)[0]
        assert [entry.name for entry in manifest.part_sums] == list(manifest.parts)
        for entry in manifest.part_sums:
            data = built.read(f"{base}/{entry.name}")
            assert (entry.size, entry.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert sum(entry.rows for entry in manifest.part_sums) == manifest.items + manifest.tombstones


def test_manifests_are_chained_in_publication_order_not_snapshot_time(store: Store) -> None:
    build_store(store)
    # An older moment published later takes the next generation and names the newest link.
    older = build_snapshot(store, TABLE, (SNAPSHOT_SECONDS[0] + 60) * US)
    generations = {m.snapshot_time_us: m.generation for _, m in list_manifests(store, TABLE)}
    assert older.generation == 4 and sorted(generations.values()) == [1, 2, 3, 4]


def test_expire_leaves_a_removal_record_so_the_chain_stays_verifiable(built: Store) -> None:
    plan = plan_expire(built, TABLE, parse_policy("changes=1h"), now_us=LAST_SECOND * US)
    assert plan.drop_snapshots
    apply_expire(built, plan)
    assert list_manifests(built, TABLE)  # no DamagedStore: the removals were recorded
    assert built.list(f"tables/{TABLE}/snapshot-removals/")
    build_snapshot(built, TABLE, LAST_SECOND * US)
    assert [m.generation for _, m in list_manifests(built, TABLE)][-1] == 4


def test_a_manifest_deleted_by_hand_after_expire_is_still_detected(built: Store) -> None:
    first = manifest_paths(built)[0]
    built.delete(first)  # generation 1, deleted without a removal record
    with pytest.raises(DamagedStore, match="deleted by hand"):
        list_manifests(built, TABLE)


@pytest.mark.parametrize("content", [b"", b"garbage{", b"[1, 2]"], ids=["empty", "garbage", "not an object"])
def test_garbage_json_documents_are_a_damaged_store(built: Store, content: bytes) -> None:
    built.write(meta_path(TABLE), content)
    with pytest.raises(DamagedStore, match=r"meta\.json"):
        from changelog.meta import read_meta

        read_meta(built, TABLE)
    built.write(f"tables/{TABLE}/retention.json", content)
    with pytest.raises(DamagedStore, match=r"retention\.json"):
        retention_floor(built, TABLE)
    built.write(f"tables/{TABLE}/checkpoints/shard-1.json", content)
    with pytest.raises(DamagedStore, match=r"shard-1\.json"):
        read_checkpoints(built, TABLE)
    with pytest.raises(DamagedStore):
        coverage(built, TABLE)


def test_a_garbage_manifest_is_refused_by_status_in_one_line(built: Store,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = next(path for path, _ in list_manifests(built, TABLE))
    built.write(path, b"\x00\x01not json")
    assert run_cli(["status", "--store", built.uri]) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and path in err


def test_a_refusal_names_the_check_that_finds_damage_inside_a_file(built: Store, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    named = next(d for d in DAMAGES if d.name == "bit flip in a change file").apply(built)
    capsys.readouterr()
    assert run_cli(["replay", "--table", TABLE, "--store", built.uri, "--at", at(LAST_SECOND),
                    "--to-file", str(tmp_path / "out.jsonl")]) == 6
    err = capsys.readouterr().err
    assert named in err and f"'ddb-rewind check --store {built.uri} --read-data'" in err


def test_a_replay_refuses_a_change_file_moved_into_an_hour_it_reads(built: Store, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # Moved into an earlier hour: every replay from that hour on plans it, and must not count it there.
    source = next(p for p in change_files(built, TABLE) if "/hour=01/" in p)
    target = source.replace("dt=2023-11-15/hour=01/", "dt=2023-11-15/hour=00/")
    built.write(target, built.read(source))
    built.delete(source)
    capsys.readouterr()
    assert run_cli(["replay", "--table", TABLE, "--store", built.uri, "--at", at(SNAPSHOT_SECONDS[2] + 60),
                    "--to-file", str(tmp_path / "out.jsonl")]) == 6
    err = capsys.readouterr().err
    assert target in err and "outside its hour partition dt=2023-11-15/hour=00" in err


def _without_statistics(rows: pa.Table) -> bytes:
    """A change file as an older or foreign writer makes it: no row-group statistics in its footer."""
    sink = pa.BufferOutputStream()
    pq.write_table(rows, sink, write_statistics=False)
    return bytes(sink.getvalue().to_pybytes())


def _place_without_statistics(store: Store, hour: str) -> str:
    """The hour-01 change file rewritten without statistics and stored under ``hour`` of 2023-11-15."""
    source = next(p for p in change_files(store, TABLE) if "/hour=01/" in p)
    data = _without_statistics(pq.read_table(pa.BufferReader(store.read(source))))
    assert pq.read_metadata(pa.BufferReader(data)).row_group(0).column(0).statistics is None
    store.delete(source)
    path = change_file_path(TABLE, f"dt=2023-11-15/{hour}", "1", "2", data)
    store.write(path, data)
    return path


def test_a_change_file_without_statistics_in_its_own_hour_is_read(built: Store) -> None:
    _place_without_statistics(built, "hour=01")
    assert coverage(built, TABLE).change_files == 7


def test_a_change_file_without_statistics_in_another_hour_is_refused(built: Store) -> None:
    path = _place_without_statistics(built, "hour=00")
    with pytest.raises(DamagedStore, match="outside its hour partition") as refused:
        coverage(built, TABLE)
    assert path in str(refused.value)


def test_a_deleted_gap_record_does_not_lift_the_refusal(built: Store, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # The poller writes the gap's record, then the checkpoint that lists it; the record is then deleted.
    gap = Gap("shardId-1", (LAST_SECOND + 60) * US, "trimmed", start_us=(OPS[9].second - 1) * US,
              after_sequence_number="105")
    built.delete(write_gap(built, TABLE, gap))
    write_checkpoint(built, TABLE, Checkpoint("shardId-1", watermark_us=LAST_SECOND * US, gaps=(gap,)))
    assert coverage(built, TABLE).gaps == (gap,)
    capsys.readouterr()
    assert run_cli(["replay", "--table", TABLE, "--store", built.uri, "--at", at(LAST_SECOND),
                    "--to-file", str(tmp_path / "out.jsonl")]) == 5
    assert "at or after a gap" in capsys.readouterr().err


def test_a_gap_in_both_its_record_and_its_checkpoint_counts_once(built: Store) -> None:
    gap = Gap("shardId-1", (LAST_SECOND + 60) * US, "trimmed", start_us=(OPS[9].second - 1) * US,
              after_sequence_number="105")
    write_gap(built, TABLE, gap)
    write_checkpoint(built, TABLE, Checkpoint("shardId-1", watermark_us=LAST_SECOND * US, gaps=(gap,)))
    assert all_gaps(built, TABLE) == (gap,)


def test_a_refusal_inside_the_watermark_names_the_deleted_file(built: Store, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # A poller's checkpoint proves capture read past the deleted file: the loss, not the watermark, refuses.
    write_checkpoint(built, TABLE, Checkpoint("shardId-1", watermark_us=LAST_SECOND * US))
    deleted = delete_newest_change_file(built)
    capsys.readouterr()
    assert run_cli(["replay", "--table", TABLE, "--store", built.uri, "--at", at(LAST_SECOND),
                    "--to-file", str(tmp_path / "out.jsonl")]) == 5
    err = capsys.readouterr().err
    assert f"a missing change file {deleted}" in err and "bootstrap" in err


def test_status_claims_no_moment_a_deleted_file_served(built: Store) -> None:
    write_checkpoint(built, TABLE, Checkpoint("shardId-1", watermark_us=LAST_SECOND * US))
    deleted = delete_newest_change_file(built)
    hour_start = (LAST_SECOND - LAST_SECOND % 3600) * US  # 2023-11-15T01:00:00Z, the deleted file's hour
    assert "/hour=01/" in deleted
    cov = coverage(built, TABLE)
    # Every moment before the file's hour is still claimed; none from it on.
    assert cov.intervals == ((T0 * US, hour_start - 1),)


def test_a_deleted_gap_record_that_no_checkpoint_lists_does_not_lift_the_refusal(
        built: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gap = Gap("shardId-1", (LAST_SECOND + 60) * US, "trimmed", start_us=(OPS[9].second - 5) * US,
              end_us=OPS[9].second * US, first_sequence_number="105", last_sequence_number="107", source="recover")
    built.delete(write_gap(built, TABLE, gap))
    capsys.readouterr()
    assert run_cli(["replay", "--table", TABLE, "--store", built.uri, "--at", at(LAST_SECOND),
                    "--to-file", str(tmp_path / "out.jsonl")]) == 5
    assert "shardId-1-105-to-107.json is missing" in capsys.readouterr().err
