# ruff: noqa: F811  (the scenario fixtures are shared with tests/test_recover.py)
"""Coverage is a set of intervals: what gaps and quarantined records cut, what bootstraps re-open, and
that every reader, and ``expire``, keeps to it.

The scenario (tests/test_recover.py) stores three Lambda batches of one table and loses the middle one
for good (the stream trimmed it): a gap from T0+5 to T0+10.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from changelog.restorable import Base, Loss, blocking_loss, intervals
from changelog.snapshot import list_manifests
from changelog.state import coverage
from changelog.store import Store
from compactor.bootstrap import bootstrap_from_scan
from compactor.policy import parse_policy
from compactor.retention import apply_expire, plan_expire
from compactor.snapshots import build_snapshot
from ddb_rewind.cli import main
from replayer.proving.verify import drill_moment
from stream_consumer.capture import capture_batch
from tests.test_recover import (  # noqa: F401  (fixtures)
    SECOND,
    T0,
    TABLE,
    Scenario,
    clock,
    queue,
    replay,
    run_recover,
    scenario,
    send,
    stream_records,
    trimmed,
)


def iso(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).isoformat()


# --- the rule, against a model ---------------------------------------------------------------------


def restorable_in_model(t: int, earliest: int, latest: int, losses: list[Loss], bases: list[Base]) -> bool:
    """A moment is known when every loss before it is cleared by a whole copy at or before it: one that
    cannot be missing the lost change (a scan clears only what was lost before it began)."""
    if not earliest <= t <= latest:
        return False
    for loss in losses:
        if loss.start_us is not None and loss.start_us > t:
            continue  # the lost change comes after t: the state at t does not need it
        if not any(at <= t and loss.end_us < clears for at, clears in bases):
            return False
    return True


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, int, list[Loss], list[Base]]:
    earliest = draw(st.integers(0, 20))
    latest = draw(st.integers(0, 60))
    losses = []
    for _ in range(draw(st.integers(0, 3))):
        start = draw(st.none() | st.integers(0, 60))
        end = draw(st.integers(start or 0, 60))
        losses.append(Loss(start, end, "lost", "bootstrap"))
    bases = []
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, 60))
        bases.append(Base(at, draw(st.integers(0, at))))  # a scan clears only what was lost before it began
    return earliest, latest, losses, bases


@given(histories())
def test_intervals_hold_exactly_the_moments_the_model_can_restore(
    history: tuple[int, int, list[Loss], list[Base]],
) -> None:
    earliest, latest, losses, bases = history
    spans = intervals(earliest, latest, losses, bases)

    inside = {t for low, high in spans for t in range(low, high + 1)}
    assert inside == {t for t in range(0, 61) if restorable_in_model(t, earliest, latest, losses, bases)}
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(spans))  # disjoint, merged
    for t in range(0, 61):
        assert (blocking_loss(losses, bases, t) is None) == restorable_in_model(t, 0, 60, losses, bases)


# --- a bootstrap re-opens, and takes nothing away ----------------------------------------------------


def lose_the_middle_batch(scenario: Scenario, store: Store, queue: str) -> None:
    send(queue, scenario.failure_message())
    assert run_recover(store, queue) == 1  # a gap recorded


def bootstrap_after_the_gap(scenario: Scenario, store: Store) -> None:
    ticks = iter([(T0 + 30) * SECOND, (T0 + 31) * SECOND + 200_000])
    bootstrap_from_scan(store, TABLE, client=scenario.client, clock=lambda: next(ticks))


def capture_a_later_write(scenario: Scenario, store: Store) -> None:
    from changelog.codec import decode_getrecords_record

    scenario.put(T0 + 40, "e", 1)
    _, records = stream_records(scenario.client, scenario.arn)
    capture_batch(store, records[-1:], lambda r: decode_getrecords_record(r, TABLE, scenario.shard), source="test")


def test_moments_before_the_gap_stay_restorable_after_the_bootstrap_that_follows_it(
    scenario: Scenario, store: Store, queue: str, trimmed: None, tmp_path: Path
) -> None:
    lose_the_middle_batch(scenario, store, queue)
    bootstrap_after_the_gap(scenario, store)

    assert replay(store, T0 + 4, tmp_path / "s.jsonl") == (0, scenario.expected(T0 + 4))
    assert replay(store, T0 + 20, tmp_path / "s.jsonl")[0] == 5
    assert replay(store, T0 + 32, tmp_path / "s.jsonl") == (0, scenario.expected(T0 + 32))


def test_status_lists_the_restorable_intervals_on_either_side_of_the_gap(
    scenario: Scenario, store: Store, queue: str, trimmed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    lose_the_middle_batch(scenario, store, queue)
    bootstrap_after_the_gap(scenario, store)
    capture_a_later_write(scenario, store)
    capsys.readouterr()

    assert main(["status", "--store", store.uri, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)

    assert [span["from"] for span in row["restorable"]] == ["2025-06-15T15:06:40Z", "2025-06-15T15:07:12Z"]
    assert row["restorable"][0]["to"] == "2025-06-15T15:06:44.999999Z"  # the gap starts 5 s before its record


def test_the_proof_counts_a_gap_open_until_a_bootstrap_bridges_it(
    scenario: Scenario, store: Store, queue: str, trimmed: None
) -> None:
    from changelog.proof import coverage_proof

    lose_the_middle_batch(scenario, store, queue)
    assert coverage_proof(store, TABLE, (T0 + 60) * SECOND).gaps == 1  # the alarm's metric: raised
    bootstrap_after_the_gap(scenario, store)
    capture_a_later_write(scenario, store)
    proof = coverage_proof(store, TABLE, (T0 + 60) * SECOND)
    assert proof.gaps == 0  # the remedy clears the alarm; status still lists the gap
    assert proof.latest_restorable_us is not None and proof.latest_restorable_us >= (T0 + 40) * SECOND


def quarantine_a_record_of_the_middle_batch(scenario: Scenario, store: Store) -> None:
    import copy

    import time_machine

    from changelog.codec import decode_getrecords_record

    records = copy.deepcopy(scenario.batches[1])
    records[0]["dynamodb"]["NewImage"]["v"] = {"XX": "1"}  # no such type: the record is undecodable
    with time_machine.travel(T0 + 12, tick=False):  # captured (and quarantined) two seconds after it was written
        capture_batch(store, records, lambda r: decode_getrecords_record(r, TABLE, scenario.shard), source="test")


def test_the_proof_counts_a_quarantined_record_until_a_bootstrap_bridges_it(scenario: Scenario, store: Store) -> None:
    from changelog.proof import coverage_proof

    quarantine_a_record_of_the_middle_batch(scenario, store)
    assert coverage_proof(store, TABLE, (T0 + 60) * SECOND).quarantined == 1  # the alarm's metric: raised
    bootstrap_after_the_gap(scenario, store)
    capture_a_later_write(scenario, store)
    assert coverage_proof(store, TABLE, (T0 + 60) * SECOND).quarantined == 0  # the remedy clears the alarm
    assert coverage(store, TABLE).quarantined == 1  # the record stays, and status still counts it


def compacted_after_a_gap_and_its_bootstrap(scenario: Scenario, store: Store, queue: str) -> None:
    """Gap, the bootstrap the refusal asks for, a later write, then a compaction snapshot on top."""
    lose_the_middle_batch(scenario, store, queue)
    bootstrap_after_the_gap(scenario, store)
    capture_a_later_write(scenario, store)
    build_snapshot(store, TABLE, (T0 + 40) * SECOND)


def test_expire_after_gap_bootstrap_and_compaction_keeps_every_moment_its_policy_keeps(
    scenario: Scenario, store: Store, queue: str, trimmed: None, tmp_path: Path
) -> None:
    compacted_after_a_gap_and_its_bootstrap(scenario, store, queue)

    # An hour later, keeping one hour of changes: the compaction snapshot is the new base.
    plan = plan_expire(store, TABLE, parse_policy("changes=1h"), now_us=(T0 + 40 + 3600) * SECOND)
    apply_expire(store, plan)

    assert [m.kind for _, m in list_manifests(store, TABLE)] == ["compaction"]
    assert replay(store, T0 + 40, tmp_path / "s.jsonl") == (0, scenario.expected(T0 + 40))


def test_expire_deletes_an_older_bootstrap_whose_gap_a_later_one_the_base_carries_also_clears(
    scenario: Scenario, store: Store, queue: str, trimmed: None, tmp_path: Path
) -> None:
    lose_the_middle_batch(scenario, store, queue)
    bootstrap_after_the_gap(scenario, store)
    # A later bootstrap (the remedy of a later loss, say) becomes the base: a bootstrap carries only its
    # own moment, which clears the gap as well as the first one did.
    ticks = iter([(T0 + 33) * SECOND, (T0 + 34) * SECOND + 200_000])
    bootstrap_from_scan(store, TABLE, client=scenario.client, clock=lambda: next(ticks))
    capture_a_later_write(scenario, store)

    apply_expire(store, plan_expire(store, TABLE, parse_policy("changes=1h"), now_us=(T0 + 40 + 3600) * SECOND))

    # Kept, the first bootstrap would stay for ever (a whole copy of the table) and serve no moment.
    assert [(m.kind, m.snapshot_time_us) for _, m in list_manifests(store, TABLE)] == [
        ("scan", (T0 + 35) * SECOND)]  # a bootstrap is dated at the next whole second
    assert replay(store, T0 + 40, tmp_path / "s.jsonl") == (0, scenario.expected(T0 + 40))


def test_expire_keeps_a_bootstrap_its_base_snapshot_does_not_carry(
    scenario: Scenario, store: Store, queue: str, trimmed: None
) -> None:
    compacted_after_a_gap_and_its_bootstrap(scenario, store, queue)
    # A compaction snapshot written before snapshots carried their bootstraps' moments.
    ((path, manifest),) = [(p, m) for p, m in list_manifests(store, TABLE) if m.kind == "compaction"]
    legacy = {key: value for key, value in manifest.extra.items() if key not in ("bases_us", "copy_floor_us")}
    store.write(path, dataclasses.replace(manifest, extra=legacy).to_json())

    plan = plan_expire(store, TABLE, parse_policy("changes=1h"), now_us=(T0 + 40 + 3600) * SECOND)

    ((bootstrap, _),) = [(p, m) for p, m in list_manifests(store, TABLE) if m.kind == "scan"]
    assert bootstrap in plan.keep_snapshots and bootstrap not in plan.drop_snapshots


# --- every reader keeps to the rule -------------------------------------------------------------------


def test_history_refuses_while_a_gap_may_hide_changes_of_the_item(
    scenario: Scenario, store: Store, queue: str, trimmed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    lose_the_middle_batch(scenario, store, queue)
    capsys.readouterr()

    assert main(["history", "--table", TABLE, "--store", store.uri, "--key", "pk=a"]) == 5

    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "gap" in err and "--partial" in err


def test_a_partial_history_lists_what_the_store_holds_and_names_the_gap(
    scenario: Scenario, store: Store, queue: str, trimmed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    lose_the_middle_batch(scenario, store, queue)
    capsys.readouterr()

    assert main(["history", "--table", TABLE, "--store", store.uri, "--key", "pk=a", "--partial",
                 "--format", "json"]) == 0

    captured = capsys.readouterr()
    assert [v["event_name"] for v in json.loads(captured.out)] == ["INSERT"]  # the MODIFY at T0+10 was lost
    assert "may be missing: a gap" in captured.err and scenario.shard in captured.err


def test_timeline_refuses_a_window_across_a_gap_and_counts_one_beside_it(
    scenario: Scenario, store: Store, queue: str, trimmed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    lose_the_middle_batch(scenario, store, queue)
    capsys.readouterr()

    assert main(["timeline", "--table", TABLE, "--store", store.uri, "--format", "json"]) == 5
    assert "gap" in capsys.readouterr().err
    assert main(["timeline", "--table", TABLE, "--store", store.uri, "--format", "json",
                 "--from", iso(T0 + 11), "--to", iso(T0 + 25)]) == 0
    assert sum(b["total"] for b in json.loads(capsys.readouterr().out)) == 2


def test_the_drill_only_draws_moments_the_coverage_proves(
    scenario: Scenario, store: Store, queue: str, trimmed: None
) -> None:
    lose_the_middle_batch(scenario, store, queue)
    cov = coverage(store, TABLE)

    for seed in range(20):
        moment = drill_moment(store, TABLE, seed)
        assert any(low <= moment <= high for low, high in cov.intervals)


def test_a_quarantined_record_refuses_the_moments_after_it_and_serves_those_before(
    scenario: Scenario, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from changelog.codec import decode_getrecords_record

    bad = dict(scenario.batches[1][0])
    bad["dynamodb"] = {**bad["dynamodb"], "NewImage": {"v": {"N": "not a number"}}}
    capture_batch(store, [bad], lambda r: decode_getrecords_record(r, TABLE, scenario.shard), source="test",
                  table_hint=TABLE)
    capsys.readouterr()

    assert replay(store, T0 + 9, tmp_path / "s.jsonl") == (0, scenario.expected(T0 + 9))
    assert replay(store, T0 + 10, tmp_path / "s.jsonl")[0] == 5
    err = capsys.readouterr().err
    assert "quarantined record" in err and "ddb-rewind requeue" in err


def test_sql_history_refuses_like_the_history_command_while_a_gap_may_hide_changes(
    scenario: Scenario, store: Store, queue: str, trimmed: None, capsys: pytest.CaptureFixture[str]
) -> None:
    lose_the_middle_batch(scenario, store, queue)
    capsys.readouterr()

    assert main(["sql", "--store", store.uri, """SELECT * FROM history('{"pk":{"S":"a"}}')"""]) == 5

    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "gap" in err and "changes view" in err
