"""Compaction and expiry under S3 faults: one line and nothing lost, a rerun completes, replay equals the model."""

from __future__ import annotations

from typing import Any

import pytest

from changelog.snapshot import list_manifests
from changelog.state import change_files
from changelog.store import Store
from tests.faults.harness import assert_every_replay_equals_the_model, cli, hours_workload, s3_only
from tests.faults.proxy import DELETE_OBJECTS, FaultProxy
from tests.workloads import BASE


@pytest.fixture
def work(fault_store: Store) -> Any:
    """Several hours of changes in many small files, as a busy Lambda leaves them."""
    workload = hours_workload(seed=8)
    workload.capture(fault_store, batch=6)
    return workload


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddb-rewind: error: "), err
    return lines[0]


def test_a_manifest_put_applied_with_its_answer_lost_is_the_compactors_success(
        fault_store: Store, proxy: FaultProxy, work: Any, capsys: pytest.CaptureFixture[str]) -> None:
    s3_only(fault_store)
    lost = proxy.add("drop_after", method="PUT", service="s3", path=r"manifest\.json")
    assert cli("compact", "--no-settings", "--table", work.table, "--store", fault_store.uri) == 0
    out = capsys.readouterr()
    assert lost.exhausted and "another compactor" not in out.out + out.err
    assert len(list_manifests(fault_store, work.table)) == 1
    assert_every_replay_equals_the_model(fault_store, work)


@pytest.mark.slow
def test_delete_failures_during_a_merge_are_one_line_and_a_rerun_completes(
        fault_store: Store, proxy: FaultProxy, work: Any, capsys: pytest.CaptureFixture[str]) -> None:
    s3_only(fault_store)
    before = len(change_files(fault_store, work.table))
    proxy.add("error", method="POST", service="s3", path=DELETE_OBJECTS, count=1000)
    assert cli("compact", "--no-settings", "--table", work.table, "--store", fault_store.uri) == 7
    assert "cannot delete" in _one_line(capsys)
    assert_every_replay_equals_the_model(fault_store, work)  # merged copies beside the originals
    proxy.clear()
    assert cli("compact", "--no-settings", "--table", work.table, "--store", fault_store.uri) == 0
    assert len(change_files(fault_store, work.table)) < before
    assert_every_replay_equals_the_model(fault_store, work)


@pytest.mark.slow
def test_delete_failures_during_expire_are_one_line_and_a_rerun_completes(
        fault_store: Store, proxy: FaultProxy, work: Any, capsys: pytest.CaptureFixture[str]) -> None:
    s3_only(fault_store)
    middle = BASE + 2 * 3600
    assert cli("compact", "--no-settings", "--table", work.table, "--store", fault_store.uri, "--at", str(middle)) == 0
    kept = [s for s in sorted({step.seconds for step in work.steps}) if s >= middle]
    proxy.add("drop", method="POST", service="s3", path=DELETE_OBJECTS, count=1000)
    assert cli("expire", "--table", work.table, "--store", fault_store.uri, "--keep", "changes=1h", "--yes") == 7
    assert "cannot delete" in _one_line(capsys)
    assert_every_replay_equals_the_model(fault_store, work, [kept[0], kept[-1]])
    proxy.clear()
    files = len(change_files(fault_store, work.table))
    assert cli("expire", "--table", work.table, "--store", fault_store.uri, "--keep", "changes=1h", "--yes") == 0
    assert len(change_files(fault_store, work.table)) < files
    assert_every_replay_equals_the_model(fault_store, work, [kept[0], kept[len(kept) // 2], kept[-1]])
