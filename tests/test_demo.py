"""The demo runs end to end on the embedded local AWS and its restore matches the table exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from changelog.errors import ConflictError
from changelog.store import open_store
from ddb_rewind.cli import main
from ddb_rewind.demo import MARKER, claim_store, run_demo
from replayer.forensics.timeline import timeline


@pytest.mark.slow
def test_the_demo_restores_the_table_as_it_was_before_the_bad_deploy(tmp_path: Path) -> None:
    lines: list[str] = []
    assert run_demo(tmp_path / "store", say=lines.append, orders=60)
    assert any(line.strip().startswith("MATCH") for line in lines)
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [MARKER, "tables"]
    assert [p.name for p in (tmp_path / "store" / "tables").iterdir()] == ["orders"]


@pytest.mark.slow
def test_the_demos_history_spans_hours_with_the_bad_deploy_as_its_spike(tmp_path: Path) -> None:
    assert run_demo(tmp_path / "store", say=lambda line: None, orders=60)
    line = timeline(open_store(str(tmp_path / "store")), "orders", bucket="15min")
    totals = [bucket.total for bucket in line.buckets]
    assert len(totals) >= 30  # more than seven hours of 15-minute buckets
    busiest = max(range(len(totals)), key=totals.__getitem__)
    assert totals[busiest] >= 2 * sorted(totals)[len(totals) // 2]
    assert line.buckets[busiest].modifies > line.buckets[busiest].inserts


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_demo_claims_a_new_directory_with_its_marker(tmp_path: Path) -> None:
    claim_store(tmp_path / "new")
    assert [p.name for p in (tmp_path / "new").iterdir()] == [MARKER]


def test_the_demo_refuses_a_non_empty_directory_it_did_not_create(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "tables" / "orders" / "changes").mkdir(parents=True)
    (real / "tables" / "orders" / "changes" / "x.parquet").write_bytes(b"precious")
    before = _tree(real)
    with pytest.raises(ConflictError, match="not created by the demo"):
        claim_store(real)
    assert _tree(real) == before


def test_the_demo_refuses_its_own_store_once_it_holds_another_table(tmp_path: Path) -> None:
    claim_store(tmp_path / "s")
    (tmp_path / "s" / "tables" / "payments").mkdir(parents=True)
    (tmp_path / "s" / "tables" / "payments" / "meta.json").write_text("{}")
    before = _tree(tmp_path / "s")
    with pytest.raises(ConflictError, match="tables/payments"):
        claim_store(tmp_path / "s")
    assert _tree(tmp_path / "s") == before


def test_a_marker_from_an_older_demo_is_not_proof_of_ownership(tmp_path: Path) -> None:
    store = tmp_path / "s"
    (store / "tables" / "orders").mkdir(parents=True)
    (store / "tables" / "orders" / "meta.json").write_text("{}")
    (store / ".ddb-rewind-demo").write_text("created by ddb-rewind demo; safe to delete\n")
    (store / MARKER).write_text("planted\n")
    before = _tree(store)
    with pytest.raises(ConflictError):
        claim_store(store)
    assert _tree(store) == before


def test_the_demo_empties_only_a_store_it_created(tmp_path: Path) -> None:
    store = tmp_path / "s"
    claim_store(store)
    (store / "tables" / "orders").mkdir(parents=True)
    (store / "tables" / "orders" / "meta.json").write_text("{}")
    claim_store(store)
    assert [p.name for p in store.iterdir()] == [MARKER]


def test_the_cli_refuses_a_foreign_store_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--store", str(tmp_path), "--orders", "5"]) == 8
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "choose another --store" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_keep_running_leaves_the_local_aws_up_for_every_command(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[str] = []
    answers: list[int] = []

    def try_commands(endpoint: str) -> None:
        (verify,) = [line.split("try: ", 1)[1] for line in lines if "try: ddb-rewind verify" in line]
        argv = [*verify.split()[1:], "--store", str(tmp_path / "store")]
        answers.append(main(argv))  # the restored table, read from the still-running local AWS

    assert run_demo(tmp_path / "store", say=lines.append, orders=40, keep_running=try_commands)
    assert answers == [0]
    assert any(line.strip().startswith("export AWS_ENDPOINT_URL=http://127.0.0.1:") for line in lines)


@pytest.mark.slow
def test_after_the_story_writes_are_stamped_with_the_real_time_and_a_new_table_can_be_restored(
        tmp_path: Path) -> None:
    # The story's clock used to stay on while the local AWS kept running: a write an hour later was
    # stamped with the story's last moment and changed the history; and the settings, recorded at
    # the real time, came after every moment of the story, so --create-table had none to recreate.
    import time

    import boto3

    from changelog.state import change_files
    from changelog.store import LocalStore

    store = tmp_path / "store"
    lines: list[str] = []
    answers: list[int] = []

    def write_and_restore(endpoint: str) -> None:
        (verify,) = [line.split("try: ", 1)[1] for line in lines if "try: ddb-rewind verify" in line]
        moment = verify.split("--at ", 1)[1].split()[0]
        answers.append(main(["replay", "--table", "orders", "--store", str(store), "--at", moment,
                             "--to-table", "orders-again", "--create-table"]))
        before = set(change_files(LocalStore(store), "orders"))
        boto3.client("dynamodb").put_item(TableName="orders", Item={"pk": {"S": "late"}, "sk": {"N": "1"}})
        written = time.time()
        answers.append(main(["consume", "--table", "orders", "--store", str(store), "--once"]))
        import duckdb

        new = [str(store / path) for path in change_files(LocalStore(store), "orders") if path not in before]
        (stamp,) = duckdb.sql(f"SELECT max(epoch(event_time)) FROM read_parquet({new!r})").fetchall()[0]
        answers.append(int(abs(stamp - written) < 60))

    assert run_demo(store, say=lines.append, orders=40, keep_running=write_and_restore)
    assert answers == [0, 0, 1]
