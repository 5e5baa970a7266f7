"""forget --where: every item any stored version of which matches is erased, each as --key would erase it."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changelog.errors import UsageError
from changelog.forgotten import read_erasures
from changelog.predicate import parse_predicate
from changelog.store import LocalStore, Store
from compactor.forget import forget_where, plan_forget_where
from compactor.snapshots import build_snapshot
from replayer.forensics.history import item_history
from replayer.proving.check import check_store
from tests.built import copy_store
from tests.model import KEYS, Op, model_state, operations, stream_records
from tests.test_forget import (
    BASE,
    ERASED,
    KEPT,
    OPS,
    SECRETS,
    TABLE,
    _every_value,
    _moments,
    _pristine,
    _states_at,
)
from tests.workloads import deliver_in_cuts, run_cli

# Only the second version of the item holds this value: its other versions must go too.
WHERE = f"email = '{SECRETS[1]}'"


@pytest.fixture
def filled(store: Store) -> Store:
    copy_store(_pristine(), store)
    return store


def _forget_where(store: Store, where: str) -> None:
    forget_where(store, plan_forget_where(store, TABLE, parse_predicate(where)), "request 42")


def test_an_item_one_version_of_which_matches_is_erased_whole(filled: Store) -> None:
    _forget_where(filled, WHERE)
    assert _states_at(filled, _moments()) == {second: model_state(KEPT, second) for second in _moments()}
    assert item_history(filled, TABLE, json.dumps(KEYS[ERASED])) == []


def test_no_value_of_a_matched_item_is_left_in_any_file(filled: Store) -> None:
    assert isinstance(filled, LocalStore)
    _forget_where(filled, WHERE)
    for path, data in _every_value(filled):
        assert not any(secret.encode() in data for secret in SECRETS), path


def test_items_no_version_of_which_matches_are_kept(filled: Store) -> None:
    before = _states_at(filled, _moments())
    plan = plan_forget_where(filled, TABLE, parse_predicate("email = 'nobody'"))
    assert plan.plans == ()
    forget_where(filled, plan, "request 42")
    assert _states_at(filled, _moments()) == before
    assert read_erasures(filled, TABLE) == []


def test_an_old_image_is_a_stored_version_too(filled: Store) -> None:
    # n = 1 is item 2's first version; its second change (n = 2) carries it as the old image.
    plan = plan_forget_where(filled, TABLE, parse_predicate("n = 1"))
    assert plan.item_keys == (json.dumps(KEYS[2], separators=(",", ":"), ensure_ascii=False),)


def test_each_matched_item_leaves_its_own_ledger_record(filled: Store) -> None:
    _forget_where(filled, f"email = '{SECRETS[0]}' OR n = 2")
    erasures = read_erasures(filled, TABLE)
    assert len({e.key_hash for e in erasures}) == 2
    kept = [op for op in OPS if op.key_index not in (ERASED, 2)]
    assert _states_at(filled, _moments()) == {second: model_state(kept, second) for second in _moments()}
    assert check_store(filled, TABLE, read_data=True).sound


def test_dry_run_lists_the_matched_keys_and_counts_and_writes_nothing(
        filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(filled, LocalStore)
    before = {p: p.read_bytes() for p in filled.root.rglob("*") if p.is_file()}
    plan = plan_forget_where(filled, TABLE, parse_predicate(WHERE))
    assert run_cli(["forget", "--table", TABLE, "--store", filled.uri, "--where", WHERE, "--reason", "r",
                    "--dry-run"]) == 0
    assert {p: p.read_bytes() for p in filled.root.rglob("*") if p.is_file()} == before
    out = capsys.readouterr().out
    assert "1 items match" in out and plan.item_keys[0] in out
    assert f"change files that would be rewritten: {len(plan.change_files)} " in out
    assert f"snapshots (restore points) that would be rewritten: {len(plan.snapshots)}" in out
    assert not any(secret in out for secret in SECRETS)


def test_the_cli_erases_with_where(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["forget", "--table", TABLE, "--store", filled.uri, "--where", WHERE, "--reason", "request 42",
                    "--yes"]) == 0
    assert "forgot:" in capsys.readouterr().out
    assert item_history(filled, TABLE, json.dumps(KEYS[ERASED])) == []


def test_key_and_where_together_are_refused(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["forget", "--table", TABLE, "--store", filled.uri, "--key", json.dumps(KEYS[ERASED]),
                    "--where", WHERE, "--reason", "r", "--yes"]) == 2


def test_a_reason_quoting_the_condition_is_refused(filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["forget", "--table", TABLE, "--store", filled.uri, "--where", WHERE,
                    "--reason", f"erase {WHERE}", "--yes"]) == 2
    assert "--where condition" in capsys.readouterr().err
    assert read_erasures(filled, TABLE) == []


def test_an_unknown_attribute_is_refused_naming_it(filled: Store) -> None:
    with pytest.raises(UsageError, match="emial"):
        plan_forget_where(filled, TABLE, parse_predicate("emial = 'x'"))


def _model_matches(ops: list[Op]) -> set[int]:
    """Items any written version of which has a non-null ``n`` (what ``n IS NOT NULL`` selects)."""
    return {op.key_index for op in ops if op.item is not None and op.item.get("n") not in (None, {"NULL": True})}


@pytest.mark.slow
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations(max_ops=12), cuts=st.lists(st.integers(0, 100), max_size=3),
       snapshot_share=st.none() | st.floats(0, 1))
def test_any_history_after_forget_where_equals_the_model_without_the_matched_items(
        tmp_path_factory: pytest.TempPathFactory, ops: list[Op], cuts: list[int],
        snapshot_share: float | None) -> None:
    records = stream_records(TABLE, ops)
    matched = _model_matches(ops)
    kept = [op for op in ops if op.key_index not in matched]
    kept_records = stream_records(TABLE, kept)
    if not records or not kept_records:
        return
    store = LocalStore(tmp_path_factory.mktemp("store"))
    deliver_in_cuts(store, records, cuts)
    seconds = sorted({int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in records})
    if snapshot_share is not None:
        build_snapshot(store, TABLE, seconds[int(snapshot_share * (len(seconds) - 1))] * 1_000_000)
    try:
        plan = plan_forget_where(store, TABLE, parse_predicate("n IS NOT NULL"))
    except UsageError:  # no version has an attribute n at all
        assert not matched
        return
    assert set(plan.item_keys) == {json.dumps(KEYS[i], separators=(",", ":"), ensure_ascii=False) for i in matched}
    forget_where(store, plan, "property")
    deliver_in_cuts(store, records, [])  # every record again, late: the erased items' are dropped
    kept_seconds = sorted({int(r["dynamodb"]["ApproximateCreationDateTime"]) for r in kept_records})
    inside = [s for s in seconds if kept_seconds[0] <= s <= kept_seconds[-1]]
    assert _states_at(store, inside) == {second: model_state(kept, second) for second in inside}
    assert check_store(store, TABLE, read_data=True).sound
    assert BASE  # the shared fixture's epoch, kept for the reader
