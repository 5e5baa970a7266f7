"""``diff``: items added, removed and changed between two moments, from the same state query as restores."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changelog.errors import TimeOutOfRange, UsageError
from changelog.store import LocalStore, Store
from ddb_rewind.cli import main
from replayer.forensics.attrdiff import diff_items, items_equal
from replayer.forensics.diff import diff_states
from tests.workloads import BASE, Workload, random_workload, run_cli

US = 1_000_000


def _orders(store: Store) -> Workload:
    work = Workload()
    work.put({"pk": {"S": "kept"}, "status": {"S": "new"}}, BASE)
    work.put({"pk": {"S": "gone"}, "status": {"S": "new"}}, BASE)
    work.put({"pk": {"S": "edited"}, "status": {"S": "new"}, "n": {"N": "5"}}, BASE)
    work.put({"pk": {"S": "same"}, "status": {"S": "new"}, "n": {"N": "5"}}, BASE)
    work.put({"pk": {"S": "edited"}, "status": {"S": "shipped"}, "n": {"N": "5.0"}}, BASE + 10)
    work.put({"pk": {"S": "same"}, "status": {"S": "new"}, "n": {"N": "5.00"}}, BASE + 10)
    work.delete({"pk": {"S": "gone"}}, BASE + 10)
    work.put({"pk": {"S": "born"}, "status": {"S": "shipped"}}, BASE + 10)
    work.capture(store)
    return work


def test_added_removed_and_changed_items_are_told_apart(store: Store) -> None:
    _orders(store)
    diff = diff_states(store, "orders", BASE * US, (BASE + 10) * US)
    assert [c.key for c in diff.added] == [{"pk": {"S": "born"}}]
    assert [c.key for c in diff.removed] == [{"pk": {"S": "gone"}}]
    assert [c.key for c in diff.changed] == [{"pk": {"S": "edited"}}]


def test_a_changed_item_lists_its_paths_and_numbers_compare_by_value(store: Store) -> None:
    _orders(store)
    (edited,) = diff_states(store, "orders", BASE * US, (BASE + 10) * US).changed
    assert [(p.path, p.old, p.new) for p in edited.paths] == [("status", {"S": "new"}, {"S": "shipped"})]


def test_a_where_predicate_matches_either_side(store: Store) -> None:
    _orders(store)
    diff = diff_states(store, "orders", BASE * US, (BASE + 10) * US, where="status = 'shipped'")
    assert sorted(c.item_key for c in diff.all()) == ['{"pk":{"S":"born"}}', '{"pk":{"S":"edited"}}']


def test_a_bad_where_predicate_is_a_usage_error(store: Store) -> None:
    _orders(store)
    with pytest.raises(UsageError, match="--where"):
        diff_states(store, "orders", BASE * US, (BASE + 10) * US, where="no_such_column = 1")


def test_an_inverted_window_is_a_usage_error(store: Store) -> None:
    _orders(store)
    with pytest.raises(UsageError, match="after --to"):
        diff_states(store, "orders", (BASE + 10) * US, BASE * US)


def test_a_moment_outside_coverage_is_refused(store: Store) -> None:
    _orders(store)
    with pytest.raises(TimeOutOfRange, match="earliest"):
        diff_states(store, "orders", (BASE - 60) * US, BASE * US)


def test_json_output_is_one_object_with_three_lists(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _orders(store)
    argv = ["diff", "--table", "orders", "--store", store.uri, "--from", str(BASE), "--to", str(BASE + 10)]
    assert main([*argv, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == [{"key": {"pk": {"S": "born"}}, "item": {"pk": {"S": "born"}, "status": {"S": "shipped"}}}]
    assert out["removed"][0]["item"]["status"] == {"S": "new"}
    assert out["changed"][0]["paths"] == [{"path": "status", "kind": "changed", "old": {"S": "new"},
                                           "new": {"S": "shipped"}}]


def test_table_output_puts_counts_first(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _orders(store)
    assert main(["diff", "--table", "orders", "--store", store.uri, "--from", str(BASE), "--to", str(BASE + 10)]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "added 1, removed 1, changed 1"


def test_parquet_output_has_one_row_per_item(store: Store, tmp_path: Path) -> None:
    _orders(store)
    target = tmp_path / "diff.parquet"
    assert main(["diff", "--table", "orders", "--store", store.uri, "--from", str(BASE), "--to", str(BASE + 10),
                 "--format", "parquet", "--output", str(target)]) == 0
    assert sorted(pq.read_table(target).column("change").to_pylist()) == ["added", "changed", "removed"]


@pytest.mark.parametrize("window", [("9", "1"), ("yesterday", "1")])
def test_bad_windows_get_one_line_and_a_non_zero_exit(store: Store, capsys: pytest.CaptureFixture[str],
                                                       window: tuple[str, str]) -> None:
    _orders(store)
    start = str(BASE + int(window[0])) if window[0].isdigit() else window[0]
    assert run_cli(["diff", "--table", "orders", "--store", store.uri, "--from", start,
                    "--to", str(BASE + int(window[1]))]) != 0
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), a=st.floats(0, 1), b=st.floats(0, 1))
def test_diff_agrees_with_a_plain_model(tmp_path_factory: pytest.TempPathFactory, seed: int, a: float,
                                        b: float) -> None:
    store = LocalStore(tmp_path_factory.mktemp("store"))
    work = random_workload(seed)
    work.capture(store, batch=7, duplicates=seed % 2 == 1)
    first, last = work.steps[0].seconds, work.steps[-1].seconds
    start, end = sorted(first + round(x * (last - first)) for x in (a, b))
    before, after = work.state_at(start), work.state_at(end)
    diff = diff_states(store, "orders", start * US, end * US)
    assert [c.item_key for c in diff.added] == sorted(after.keys() - before.keys())
    assert [c.item_key for c in diff.removed] == sorted(before.keys() - after.keys())
    changed = sorted(k for k in before.keys() & after.keys() if not items_equal(before[k], after[k]))
    assert [c.item_key for c in diff.changed] == changed
    assert [c.paths for c in diff.changed] == [tuple(diff_items(before[k], after[k])) for k in changed]
