"""``verify``: a live table against the stored state, and the restore drill (snapshots are only a cache)."""

from __future__ import annotations

import json

import boto3
import duckdb
import pytest

from changelog.changefile import parquet_bytes
from changelog.snapshot import MANIFEST, SNAPSHOT_SCHEMA, Manifest, part_sum_of
from changelog.state import change_files, open_state, plan_state
from changelog.store import Store
from changelog.timefmt import format_time, from_micros
from compactor.snapshots import publish_manifest
from replayer.forensics.repair import execute_repair, plan_repair
from replayer.proving.verify import VerifyReport, restore_drill, state_checksum, verify_table
from tests.workloads import BadDeploy, bad_deploy, run_cli

US = 1_000_000


@pytest.fixture
def story(aws: None, store: Store) -> BadDeploy:
    """The bad-deploy story on a live moto table and in the store."""
    result = bad_deploy(boto3.client("dynamodb"))
    result.work.capture(store, batch=16)
    return result


def _verify(store: Store, at_s: int | None = None) -> VerifyReport:
    return verify_table(store, "orders", boto3.client("dynamodb"), "orders",
                        at_s * US if at_s is not None else None, segments=3)


def test_the_live_table_matches_the_store_at_the_watermark(store: Store, story: BadDeploy) -> None:
    report = _verify(store)
    assert report.matches and report.live == report.stored == len(story.work.live)


def test_verify_at_the_watermark_refuses_when_a_lost_change_file_cuts_coverage(store: Store, story: BadDeploy) -> None:
    # The watermark is what capture proves, not what the store can restore: a file the ledger names
    # is gone, and the table matched the damaged state (it was reported as a match).
    from changelog.errors import TimeOutOfRange

    store.delete(change_files(store, "orders")[-1])
    with pytest.raises(TimeOutOfRange, match="missing change file"):
        _verify(store)


def test_verify_before_the_deploy_reports_the_damage_and_the_later_writes(store: Store, story: BadDeploy) -> None:
    report = _verify(store, story.from_s)
    damaged_now = set(story.corrupted + story.deleted + story.junk) - {story.later[3]}
    assert set(report.missing) == set(story.deleted) - {story.later[2]}
    assert set(report.extra) == {story.junk[1], story.untouched_later[1]}
    assert set(report.different) == (
        damaged_now - set(report.missing) - set(report.extra) | {story.untouched_later[0]}
    )


def test_after_repair_only_the_later_legitimate_writes_differ_from_before_the_deploy(
        store: Store, story: BadDeploy) -> None:
    plan = plan_repair(store, "orders", story.from_s * US, story.to_s * US)
    execute_repair(plan, boto3.client("dynamodb"), "orders", sleep=lambda _: None)
    report = _verify(store, story.from_s)
    assert report.missing == ()
    assert set(report.extra) == {story.untouched_later[1]}
    assert set(report.different) == set(story.later[:3]) | {story.untouched_later[0]}


def test_the_cli_exits_0_on_a_match_and_1_on_drift(store: Store, story: BadDeploy,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["verify", "--table", "orders", "--store", store.uri, "--against", "orders", "--segments", "2"]
    assert run_cli(argv) == 0
    assert run_cli([*argv, "--at", str(story.from_s), "--sample", "2"]) == 1
    out = capsys.readouterr().out
    assert "missing: 2" in out and "DRIFT" in out


def test_the_cli_says_when_its_key_list_is_cut_to_the_sample(store: Store, story: BadDeploy,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["verify", "--table", "orders", "--store", store.uri, "--against", "orders", "--segments", "2"]
    assert run_cli([*argv, "--at", str(story.from_s), "--sample", "1"]) == 1
    assert "missing: 2 (the first 1; --sample N shows more)" in capsys.readouterr().out


def test_a_missing_live_table_gets_one_line(store: Store, story: BadDeploy, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["verify", "--table", "orders", "--store", store.uri, "--against", "nope"]) == 4  # not found
    assert capsys.readouterr().err.count("\n") == 1


def test_a_time_before_coverage_gets_one_line(store: Store, story: BadDeploy,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["verify", "--table", "orders", "--store", store.uri, "--against", "orders", "--at", "1000"]) == 5
    assert "earliest" in capsys.readouterr().err


def _write_snapshot(store: Store, at_s: int, corrupt: bool = False) -> None:
    """A snapshot as the compactor publishes one: the state with tombstones, parts, then the manifest."""
    plan = plan_state(store, "orders", at_s * US)
    con = duckdb.connect()
    open_state(con, store, plan, name="snap", tombstones=True)
    table = con.sql("SELECT table_name, item_key, keys, event_name, event_time, sequence_number, image "
                    "FROM snap ORDER BY item_key").to_arrow_table().cast(SNAPSHOT_SCHEMA)
    if corrupt:
        images = table.column("image").to_pylist()
        index = next(i for i, image in enumerate(images) if image)
        images[index] = json.dumps({**json.loads(images[index]), "status": {"S": "bit rot"}})
        table = table.set_column(table.schema.get_field_index("image"), "image", [images])
        # A version no change produced, so the bad row wins over the change it claims to be.
        sequences = table.column("sequence_number").to_pylist()
        sequences[index] = "9" * 40
        table = table.set_column(table.schema.get_field_index("sequence_number"), "sequence_number", [sequences])
    base = f"tables/orders/snapshots/{from_micros(at_s * US):%Y%m%dT%H%M%SZ}"
    data = parquet_bytes(table)
    store.write(f"{base}/part-00000.parquet", data)
    manifest = Manifest("orders", at_s * US, "compaction", ("part-00000.parquet",),
                        consumed_files=tuple(change_files(store, "orders")), items=table.num_rows,
                        part_sums=(part_sum_of("part-00000.parquet", data, table.num_rows),))
    publish_manifest(store, f"{base}/{MANIFEST}", manifest)


def test_the_drill_matches_when_the_snapshot_is_faithful(store: Store, story: BadDeploy) -> None:
    _write_snapshot(store, story.from_s)
    result = restore_drill(store, "orders", at_us=story.to_s * US)
    assert result.snapshot_path is not None and result.matches
    assert result.items_with_snapshot == len(story.work.state_at(story.to_s))


def test_the_drill_catches_a_snapshot_that_disagrees_with_the_changes(store: Store, story: BadDeploy) -> None:
    _write_snapshot(store, story.from_s, corrupt=True)
    result = restore_drill(store, "orders", at_us=story.from_s * US)
    assert not result.matches and result.items_with_snapshot == result.items_from_changes


def test_a_seeded_drill_picks_the_same_moment(store: Store, story: BadDeploy) -> None:
    assert restore_drill(store, "orders", seed=3).at_us == restore_drill(store, "orders", seed=3).at_us


def test_the_drill_cli_reports_and_exits_non_zero_on_mismatch(store: Store, story: BadDeploy,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    _write_snapshot(store, story.from_s, corrupt=True)
    at = format_time(from_micros(story.to_s * US))
    assert run_cli(["verify", "--table", "orders", "--store", store.uri, "--drill-at", at]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_the_checksum_ignores_order_and_layout() -> None:
    one = {"a": {"x": {"N": "5.0"}, "s": {"SS": ["q", "p"]}}, "b": {"y": {"S": "t"}}}
    two = {"b": {"y": {"S": "t"}}, "a": {"s": {"SS": ["p", "q"]}, "x": {"N": "5"}}}
    assert state_checksum(one) == state_checksum(two) != state_checksum({"a": one["a"]})


def test_a_random_drill_starts_from_the_newest_snapshot(store: Store, story: BadDeploy) -> None:
    # The snapshot lies late in the history: a moment drawn from the whole coverage would mostly fall
    # before it and compare the changes with themselves.
    _write_snapshot(store, story.to_s)
    for seed in range(5):
        result = restore_drill(store, "orders", seed=seed)
        assert result.snapshot_path is not None and result.at_us >= story.to_s * US and result.matches


def test_a_random_drill_catches_a_faulty_snapshot(store: Store, story: BadDeploy) -> None:
    _write_snapshot(store, story.to_s, corrupt=True)
    assert not restore_drill(store, "orders", seed=1).matches
