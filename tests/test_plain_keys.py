"""Keys where a person reads them are plain (``zone=eu, at=5``), the partition key first; JSON keeps them structured.

The table's partition key ``zone`` sorts after its sort key ``at``: the order shown is the key
schema's, not the names'.
"""

from __future__ import annotations

import json

import boto3
import pytest

from changelog.store import Store
from ddb_rewind.cli import main
from tests.workloads import BASE, Workload

KEY = {"zone": {"S": "eu"}, "at": {"N": "5"}}


def _captured(store: Store, client: object = None) -> Workload:
    work = Workload(key_names=("zone", "at"), key_types=("S", "N"), client=client)
    if client is not None:
        work.create_live_table()
    work.put({**KEY, "status": {"S": "new"}}, BASE)
    work.put({**KEY, "status": {"S": "paid"}}, BASE + 2)
    work.capture(store)
    return work


def _window(store: Store) -> list[str]:
    return ["--table", "orders", "--store", store.uri, "--from", str(BASE + 1), "--to", str(BASE + 2)]


def test_diff_text_shows_each_key_plainly_partition_key_first(store: Store,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    _captured(store)
    assert main(["diff", *_window(store)]) == 0
    assert "changed  zone=eu, at=5\n" in capsys.readouterr().out


def test_diff_json_keeps_the_structured_key(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _captured(store)
    assert main(["diff", *_window(store), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"][0]["key"] == KEY


def test_history_text_names_the_item_by_its_plain_key(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _captured(store)
    assert main(["history", "--table", "orders", "--store", store.uri, "--key", "zone=eu,at=5"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "orders zone=eu, at=5"


def test_repair_dry_run_lists_the_plan_by_plain_keys(aws: None, store: Store,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _captured(store, boto3.client("dynamodb"))
    assert main(["repair", *_window(store), "--target", "orders", "--dry-run"]) == 0
    assert "  restore  zone=eu, at=5\n" in capsys.readouterr().out
