"""``history``: every version of one item, in order, with the attribute paths each change touched."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changelog.errors import UsageError
from changelog.store import Store
from ddb_rewind.cli import main
from replayer.forensics.attrdiff import PathChange, diff_items
from replayer.forensics.history import item_history
from tests.workloads import BASE, Workload, random_workload

KEY = {"pk": {"S": "a"}}


def _three_versions(store: Store, duplicates: bool = False) -> Workload:
    work = Workload()
    work.put({**KEY, "status": {"S": "new"}, "address": {"M": {"city": {"S": "Oslo"}}},
              "tags": {"L": [{"S": "x"}, {"S": "y"}, {"S": "z"}]}}, BASE)
    work.put({**KEY, "status": {"S": "paid"}, "address": {"M": {"city": {"S": "Bergen"}}},
              "tags": {"L": [{"S": "x"}, {"S": "y"}, {"S": "w"}]}, "total": {"N": "5"}}, BASE)
    work.delete(KEY, BASE + 1, ttl=True)
    work.put({"pk": {"S": "other"}, "n": {"N": "1"}}, BASE + 1)
    work.capture(store, batch=2, duplicates=duplicates)
    return work


def test_versions_come_in_time_then_sequence_order(store: Store) -> None:
    _three_versions(store)
    versions = item_history(store, "orders", json.dumps(KEY))
    assert [v.event_name for v in versions] == ["INSERT", "MODIFY", "REMOVE"]
    assert versions[0].event_time_us == versions[1].event_time_us


def test_a_change_captured_twice_appears_once(store: Store) -> None:
    _three_versions(store, duplicates=True)
    assert len(item_history(store, "orders", json.dumps(KEY))) == 3


def test_changes_name_nested_paths_with_old_and_new_values(store: Store) -> None:
    _three_versions(store)
    modify = item_history(store, "orders", json.dumps(KEY))[1]
    assert list(modify.changes) == [
        PathChange("status", "changed", {"S": "new"}, {"S": "paid"}),
        PathChange("address.city", "changed", {"S": "Oslo"}, {"S": "Bergen"}),
        PathChange("tags[2]", "changed", {"S": "z"}, {"S": "w"}),
        PathChange("total", "added", None, {"N": "5"}),
    ]


def test_ttl_deletes_are_marked(store: Store) -> None:
    _three_versions(store)
    versions = item_history(store, "orders", json.dumps(KEY))
    assert [v.is_ttl_delete for v in versions] == [False, False, True]


def test_a_plain_key_is_typed_from_the_key_schema(store: Store) -> None:
    _three_versions(store)
    assert len(item_history(store, "orders", "pk=a")) == 3


def test_a_key_of_the_wrong_shape_is_a_usage_error(store: Store) -> None:
    _three_versions(store)
    with pytest.raises(UsageError, match="key schema"):
        item_history(store, "orders", '{"id": {"S": "a"}}')


def test_json_output_has_one_object_per_change(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _three_versions(store)
    assert main(["history", "--table", "orders", "--store", store.uri, "--key", "pk=a", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["event_name"] for o in out] == ["INSERT", "MODIFY", "REMOVE"]
    assert out[1]["old_image"]["status"] == {"S": "new"} and out[1]["new_image"]["total"] == {"N": "5"}
    assert {"event_time", "sequence_number", "changes"} <= set(out[0])


def test_table_output_lists_each_change(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _three_versions(store)
    assert main(["history", "--table", "orders", "--store", store.uri, "--key", "pk=a"]) == 0
    out = capsys.readouterr().out
    assert "REMOVE (TTL)" in out and '~ address.city: {"S":"Oslo"} -> {"S":"Bergen"}' in out


def test_an_unknown_key_gets_one_line_and_a_non_zero_exit(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _three_versions(store)
    assert main(["history", "--table", "orders", "--store", store.uri, "--key", "pk=nobody"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no changes recorded for key" in err


def test_a_malformed_key_gets_one_line_and_a_non_zero_exit(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _three_versions(store)
    assert main(["history", "--table", "orders", "--store", store.uri, "--key", "sk=5"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_history_agrees_with_a_plain_model(tmp_path_factory: pytest.TempPathFactory, seed: int) -> None:
    from changelog.store import LocalStore

    store = LocalStore(tmp_path_factory.mktemp("store"))
    work = random_workload(seed)
    work.capture(store, batch=7, duplicates=seed % 2 == 0)
    for key in {step.key for step in work.steps}:
        versions = item_history(store, "orders", key)
        steps = work.history_of(key)
        assert [(v.event_name, v.is_ttl_delete) for v in versions] == [(s.event_name, s.ttl) for s in steps]
        assert [v.changes for v in versions] == [tuple(diff_items(s.before, s.after)) for s in steps]
