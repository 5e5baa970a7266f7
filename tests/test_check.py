"""``ddb-rewind check``: names every damaged file and the restore points it affects; exit 0 only when sound."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changelog.errors import RewindError
from changelog.gaps import Gap, write_gap
from changelog.state import change_files
from changelog.store import LocalStore, Store
from compactor.merge import merge_small_files
from compactor.policy import parse_policy
from compactor.retention import apply_expire, plan_expire
from compactor.snapshots import build_snapshot
from replayer.proving.check import check_store
from replayer.proving.verify import stored_state
from stream_consumer.checkpoint import Checkpoint, write_checkpoint
from tests.damage import (
    DAMAGES,
    LAST_SECOND,
    OPS,
    SNAPSHOT_SECONDS,
    TABLE,
    US,
    Damage,
    at,
    build_store,
    copy_built_store,
    delete_newest_change_file,
    flip,
    fresh_s3_store,
    ledger_records,
    part_paths,
    pristine,
)
from tests.model import model_state
from tests.test_store import s3_over_http  # noqa: F401  (the fixture)
from tests.workloads import run_cli


@pytest.fixture
def built(store: Store) -> Store:
    copy_built_store(store)
    return store


def _check(store: Store, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = run_cli(["check", "--store", store.uri, "--format", "json", *extra])
    return code, json.loads(capsys.readouterr().out)


def test_a_sound_store_passes_check(built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _check(built, capsys, "--read-data")
    assert code == 0 and report["sound"] is True and report["problems"] == []
    assert report["checked"] == {"manifests": 3, "parts": 3, "change_files": 7, "gap_records": 0,
                                 "ledger_records": 7, "erasures": 0}


@pytest.mark.slow
def test_a_sound_s3_store_passes_check(s3_over_http: Store, tmp_path: Path,  # noqa: F811
                                       capsys: pytest.CaptureFixture[str]) -> None:
    store = fresh_s3_store(s3_over_http, tmp_path)
    build_store(store)
    code, report = _check(store, capsys, "--read-data")
    assert code == 0 and report["sound"] is True


@pytest.mark.parametrize("edit", [b"not json", b'{"observed_us": 1, "settings": {"edited": true}}'])
def test_check_finds_a_damaged_settings_record(built: Store, edit: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    # serve and --create-table read the settings history; check used to pass a record they refused.
    from changelog.settings import record

    table = next(iter(sorted({p.split("/")[1] for p in built.list("tables/")})))
    version = record(built, table, {"billing": "PAY_PER_REQUEST"}, 1_700_000_000_000_000)
    assert version is not None
    built.write(version.path, edit)

    code, report = _check(built, capsys)
    assert code == 6
    assert [p["file"] for p in report["problems"]] == [version.path]  # type: ignore[union-attr]


def test_a_file_that_is_no_change_file_is_named_without_claiming_readers_refuse_it(
        built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    changed = next(p for p in built.list("tables/") if p.endswith(".parquet") and "/changes/" in p)
    notes = changed.rsplit("/", 1)[0] + "/notes.txt"
    built.write(notes, b"hand-written")

    code, report = _check(built, capsys)
    (finding,) = [p for p in report["problems"] if p["file"] == notes]  # type: ignore[union-attr]
    assert code == 6 and finding["affects"].startswith("no reader")


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.name for d in DAMAGES])
def test_check_read_data_names_each_damaged_file_and_what_it_affects(
        built: Store, damage: Damage, capsys: pytest.CaptureFixture[str]) -> None:
    named = damage.apply(built)
    code, report = _check(built, capsys, "--read-data")
    assert code == 6 and report["sound"] is False
    problems = report["problems"]
    assert isinstance(problems, list)
    hit = [p for p in problems if p["file"] == named or named in p["problem"]]
    assert hit, problems
    assert all(p["affects"] for p in hit)


@pytest.mark.parametrize("damage", [d for d in DAMAGES if d.by_structure], ids=[d.name for d in DAMAGES
                                                                                 if d.by_structure])
def test_check_without_read_data_finds_structural_damage(built: Store, damage: Damage,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    damage.apply(built)
    code, _ = _check(built, capsys)
    assert code == 6


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES, ids=[d.name for d in DAMAGES])
def test_check_finds_damage_in_an_s3_store(s3_over_http: Store, tmp_path: Path, damage: Damage,  # noqa: F811
                                           capsys: pytest.CaptureFixture[str]) -> None:
    store = fresh_s3_store(s3_over_http, tmp_path)
    copy_built_store(store)
    named = damage.apply(store)
    code, report = _check(store, capsys, "--read-data")
    assert code == 6 and named in json.dumps(report["problems"])


def test_a_damaged_snapshot_part_names_the_snapshot_and_the_moments_it_serves(
        built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    part = part_paths(built)[1]
    data = built.read(part)
    built.write(part, flip(data, len(data) // 2))
    _, report = _check(built, capsys, "--read-data")
    (problem,) = report["problems"]  # type: ignore[misc]
    assert problem["file"] == part
    assert problem["affects"] == (f"snapshot {at(SNAPSHOT_SECONDS[1])} unusable; moments from "
                                  f"{at(SNAPSHOT_SECONDS[1])} until {at(SNAPSHOT_SECONDS[2])} affected")


def test_a_damaged_change_file_names_the_moments_from_its_hour(built: Store,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    damage = next(d for d in DAMAGES if d.name == "bit flip in a change file")
    damage.apply(built)
    _, report = _check(built, capsys, "--read-data")
    (problem,) = report["problems"]  # type: ignore[misc]
    assert problem["affects"].startswith("moments from 2023-11-15T01:00:00Z on")


def test_orphans_are_notes_not_problems(built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    build_snapshot(built, TABLE, LAST_SECOND * US, publish=False)  # a crashed compactor's parts
    root = built.local_root()
    assert root is not None
    (root / f"tables/{TABLE}/changes/.tmp-0123").write_bytes(b"half")
    code, report = _check(built, capsys)
    notes = report["notes"]
    assert code == 0 and isinstance(notes, list)
    kinds = {n["note"].split(":")[0] for n in notes if "/snapshots/" in n["file"] or ".tmp-" in n["file"]}
    assert kinds == {"is an orphan", "is a leftover of an interrupted write"}


def test_a_folder_no_table_can_be_named_is_a_problem_check_names_and_readers_pass_by(
        built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    root = built.local_root()
    assert root is not None
    (root / "tables" / "orders copy").mkdir()
    (root / "tables" / "orders copy" / "meta.json").write_text("{}")
    code, report = _check(built, capsys)
    assert code == 6
    assert [(p["file"], p["problem"]) for p in report["problems"]] == [  # type: ignore[union-attr]
        ("tables/orders copy/", "is no table of this store: no table can have that name")]
    assert run_cli(["status", "--store", built.uri]) == 0


def test_check_of_a_table_that_is_not_there_is_not_found(built: Store) -> None:
    assert run_cli(["check", "--store", built.uri, "--table", "nope"]) == 4


def test_check_prints_a_summary(built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    part = part_paths(built)[-1]
    built.delete(part)
    assert run_cli(["check", "--store", built.uri]) == 6
    out = capsys.readouterr().out
    assert f"PROBLEM: {part} is missing" in out and "1 problem(s) found" in out


def _published(root: Path) -> list[str]:
    found = []
    for directory, _subdirs, files in os.walk(root / "tables"):
        found.extend(os.path.relpath(os.path.join(directory, name), root) for name in files
                     if name.endswith((".parquet", "manifest.json")))
    return sorted(found)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file_choice=st.integers(0, 10_000), offset_choice=st.integers(0, 10**9), mask=st.integers(1, 255))
def test_any_single_byte_flip_is_detected_and_never_changes_a_replay(
        tmp_path: Path, file_choice: int, offset_choice: int, mask: int) -> None:
    target = Path(tempfile.mkdtemp(dir=tmp_path)) / "store"
    shutil.copytree(pristine(), target)
    files = _published(target)
    victim = target / files[file_choice % len(files)]
    data = victim.read_bytes()
    victim.write_bytes(flip(data, offset_choice % len(data), mask))
    store = LocalStore(target)
    assert not check_store(store, read_data=True).sound, victim
    for second in (SNAPSHOT_SECONDS[1] + 60, LAST_SECOND):
        try:
            state = stored_state(store, TABLE, second * US)
        except RewindError as exc:
            assert exc.exit_code == 6, exc
            continue
        assert {k: json.dumps(v, separators=(",", ":"), ensure_ascii=False) for k, v in state.items()} \
            == model_state(OPS, second)


def test_plain_check_names_a_change_file_moved_to_another_hour_and_its_times(
        built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    moved = next(d for d in DAMAGES if d.name == "change file moved to a later hour").apply(built)
    code, report = _check(built, capsys)
    assert code == 6
    problem, gone = sorted(report["problems"], key=lambda p: p["file"] != moved)  # type: ignore[arg-type]
    assert problem["file"] == moved
    assert "outside its hour partition dt=2023-11-15/hour=01" in problem["problem"]
    assert gone["file"] == moved.replace("/hour=01/", "/hour=00/") and gone["problem"].startswith("is missing")


def test_plain_check_names_a_change_file_of_another_table(built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    placed = next(d for d in DAMAGES if d.name == "change file of another table").apply(built)
    code, report = _check(built, capsys)
    assert code == 6
    (problem,) = report["problems"]  # type: ignore[misc]
    assert problem["file"] == placed and "holds rows of table 'invoices' under table 'orders'" in problem["problem"]


def test_a_change_file_outside_any_hour_partition_is_a_problem(built: Store,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    source = next(p for p in change_files(built, TABLE) if "/hour=01/" in p)
    target = source.replace("/hour=01/", "/hour=24/")
    built.write(target, built.read(source))
    built.delete(source)
    code, report = _check(built, capsys)
    assert code == 6
    problem, gone = sorted(report["problems"], key=lambda p: p["file"] != target)  # type: ignore[arg-type]
    assert problem["file"] == target and "is not in an hour partition" in problem["problem"]
    assert gone["file"] == source and gone["problem"].startswith("is missing")


def test_plain_check_says_what_it_verified_and_that_it_did_not_read_contents(
        built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert run_cli(["check", "--store", built.uri]) == 0
    out = capsys.readouterr().out
    assert "verified: 3 manifests" in out and "7 change files present with their recorded sizes and names" in out
    assert "not verified: file contents" in out and "--read-data" in out
    assert "the store is sound" not in out


def test_check_read_data_verifies_contents_and_leaves_nothing_unverified(
        built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _check(built, capsys, "--read-data")
    assert code == 0 and report["not_verified"] == []
    assert "read whole, hashed against their records and decoded" in str(report["verified"])


def _gap_listed_by_a_checkpoint(store: Store) -> str:
    """A poller gap written as the poller writes it: its record, then the checkpoint listing it."""
    gap = Gap("shardId-1", (LAST_SECOND + 60) * US, "trimmed", start_us=(OPS[9].second - 1) * US,
              after_sequence_number="105")
    path = write_gap(store, TABLE, gap)
    write_checkpoint(store, TABLE, Checkpoint("shardId-1", sequence_number=None,
                                                    watermark_us=LAST_SECOND * US, gaps=(gap,)))
    return path


def test_a_gap_record_its_checkpoint_lists_is_checked_and_sound(built: Store,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    _gap_listed_by_a_checkpoint(built)
    code, report = _check(built, capsys)
    assert code == 0 and report["checked"]["gap_records"] == 1  # type: ignore[index]


def test_a_deleted_gap_record_that_a_checkpoint_lists_is_a_problem(built: Store,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    record = _gap_listed_by_a_checkpoint(built)
    built.delete(record)
    code, report = _check(built, capsys)
    assert code == 6
    (problem,) = report["problems"]  # type: ignore[misc]
    assert problem["file"] == record and problem["problem"].startswith("is missing: the checkpoint ")
    assert "shard shardId-1" in problem["problem"]


def test_an_unreadable_gap_record_is_a_problem(built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    record = _gap_listed_by_a_checkpoint(built)
    built.write(record, b'{"shard_id": "shardId-1", "detected_at_us": "soon"}')
    code, report = _check(built, capsys)
    assert code == 6
    (problem,) = report["problems"]  # type: ignore[misc]
    assert problem["file"] == record and "is not a readable gap record" in problem["problem"]


# --- deletions: the ledger of what the store's writers published (changelog.ledger) ---------------


def test_a_deleted_change_file_of_the_newest_hour_is_named_by_check(built: Store,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    deleted = delete_newest_change_file(built)
    code, report = _check(built, capsys)
    assert code == 6
    (problem,) = report["problems"]  # type: ignore[misc]
    assert problem["file"] == deleted
    assert problem["problem"].startswith("is missing: the ledger record ")
    assert "no merge or expire removed it" in problem["problem"]
    assert "moments from 2023-11-15T01:00:00Z on affected" in problem["affects"]


def test_a_deleted_gap_record_no_checkpoint_lists_is_named_by_check(built: Store,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # A gap as recover records it: by sequence range, listed by no poller checkpoint.
    gap = Gap("shardId-1", (LAST_SECOND + 60) * US, "trimmed", start_us=(OPS[9].second - 5) * US,
              end_us=OPS[9].second * US, first_sequence_number="105", last_sequence_number="107", source="recover")
    built.delete(write_gap(built, TABLE, gap))
    code, report = _check(built, capsys)
    assert code == 6
    (problem,) = report["problems"]  # type: ignore[misc]
    assert problem["file"] == f"tables/{TABLE}/gaps/shardId-1-105-to-107.json"
    assert "says a gap was recorded here" in problem["problem"]


def test_a_ledger_record_deleted_before_its_chains_newest_is_named_by_check(
        built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    # The careful deleter removes a file and the record naming it; the chain's numbering tells.
    records = ledger_records(built)
    victim = records[2]
    built.delete(victim)
    code, report = _check(built, capsys)
    assert code == 6
    (problem,) = report["problems"]  # type: ignore[misc]
    assert victim.startswith(problem["file"]) and "record 2 of the ledger chain" in problem["problem"]
    assert problem["affects"].startswith("every moment refused until a bootstrap after ")


def test_the_newest_ledger_record_and_its_file_deleted_together_go_unnoticed(
        built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    # The documented limit (docs/reliability.md): S3 Object Lock is what closes it.
    built.delete(ledger_records(built)[-1])
    delete_newest_change_file(built)
    code, report = _check(built, capsys)
    assert code == 0 and report["checked"]["ledger_records"] == 6  # type: ignore[index]


def test_a_merge_of_small_files_raises_no_alarm(built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    before = change_files(built, TABLE)
    assert merge_small_files(built, TABLE, (LAST_SECOND + 3600) * US).files_in > 1
    assert change_files(built, TABLE) != before
    code, report = _check(built, capsys)
    assert code == 0 and report["problems"] == []
    assert report["checked"]["ledger_records"] > 7  # type: ignore[index]  (merged files and removals recorded)


def test_a_file_merge_wrote_is_recorded_so_its_deletion_is_noticed(built: Store,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    merge_small_files(built, TABLE, (LAST_SECOND + 3600) * US)
    deleted = delete_newest_change_file(built)
    code, report = _check(built, capsys)
    assert code == 6 and [p["file"] for p in report["problems"]] == [deleted]  # type: ignore[union-attr]


def test_an_expire_raises_no_alarm(built: Store, capsys: pytest.CaptureFixture[str]) -> None:
    plan = plan_expire(built, TABLE, parse_policy("changes=1h"), now_us=LAST_SECOND * US)
    assert plan.drop_changes
    apply_expire(built, plan)
    code, report = _check(built, capsys)
    assert code == 0 and report["problems"] == []
    assert report["checked"]["ledger_records"] == 7 + len(plan.drop_changes)  # type: ignore[index]
