"""``repair`` and the target's TTL: an item TTL has expired is not brought back, unless asked for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from changelog.codec import item_key
from changelog.store import Store
from ddb_rewind.cli import main
from replayer.forensics.repair import RepairResult, execute_repair, plan_repair
from replayer.proving.verify import scan_table
from tests.workloads import BASE, Workload

US = 1_000_000
NOW = BASE + 10_000  # the moment the repair runs at (its clock)
FIVE_YEARS = 5 * 365 * 86_400


@dataclass(frozen=True)
class Story:
    """Items removed in the window (``from_s``, ``to_s``], each named for how its TTL stands."""

    work: Workload
    from_s: int
    to_s: int
    keys: dict[str, str]  # role -> item_key


def _story(client: Any, ttl_enabled: bool = True) -> Story:
    work = Workload(client=client)
    work.create_live_table()
    if ttl_enabled:
        client.update_time_to_live(TableName="orders",
                                   TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    expiry: dict[str, dict[str, Any] | None] = {
        "expired": {"N": str(NOW - 3_600)},  # TTL removes it in the window: gone for good
        "ahead": {"N": str(NOW + 86_400)},  # the deploy deleted it and it is still wanted
        "ancient": {"N": str(NOW - FIVE_YEARS - 86_400)},  # TTL ignores expiry times over five years old
        "text": {"S": str(NOW - 3_600)},  # TTL ignores an attribute that is not a number
        "none": None,  # no TTL attribute at all
        "fraction": {"N": f"{NOW - 1}.5"},  # seconds may carry a fraction
    }
    keys = {}
    for n, (role, value) in enumerate(expiry.items()):
        item = {"pk": {"S": f"item-{role}"}, "n": {"N": str(n)}}
        if value is not None:
            item["expires_at"] = value
        work.put(item, BASE + n)
        keys[role] = item_key({"pk": item["pk"]})
    # A deploy sets a wrong expiry time in the past; TTL then removes the item in the window. At
    # --from its expiry time was ahead: it must come back.
    work.put({"pk": {"S": "item-deploy-set"}, "expires_at": {"N": str(NOW + 86_400)}}, BASE + 10)
    keys["deploy-set"] = item_key({"pk": {"S": "item-deploy-set"}})
    from_s = BASE + 100
    work.put({"pk": {"S": "item-deploy-set"}, "expires_at": {"N": str(BASE)}}, from_s + 1)
    for role in ("expired", "ancient", "text", "none", "fraction", "deploy-set"):
        work.delete({"pk": {"S": f"item-{role}"}}, from_s + 2, ttl=role in ("expired", "fraction", "deploy-set"))
    work.delete({"pk": {"S": "item-ahead"}}, from_s + 3)
    work.put({"pk": {"S": "item-later"}}, from_s + 10)  # traffic after the window
    return Story(work, from_s, from_s + 5, keys)


@pytest.fixture
def story(aws: None, store: Store) -> Story:
    result = _story(boto3.client("dynamodb"))
    result.work.capture(store)
    return result


def _repair(store: Store, story: Story, **options: Any) -> RepairResult:
    plan = plan_repair(store, "orders", story.from_s * US, story.to_s * US)
    return execute_repair(plan, boto3.client("dynamodb"), "orders", sleep=lambda _: None, clock=lambda: NOW,
                          **options)


def _skipped(result: RepairResult) -> dict[str, str]:
    return dict(result.skipped)


def test_an_item_the_targets_ttl_has_expired_is_not_recreated(store: Store, story: Story) -> None:
    result = _repair(store, story)
    assert set(_skipped(result)) == {story.keys["expired"], story.keys["fraction"]}
    live = scan_table(boto3.client("dynamodb"), "orders")  # by item_key
    assert story.keys["expired"] not in live and story.keys["fraction"] not in live


def test_the_skip_names_the_attribute_and_its_expiry_time(store: Store, story: Story) -> None:
    why = _skipped(_repair(store, story))[story.keys["expired"]]
    assert why.startswith("expired (expires_at = 2025-06-15T16:53:20Z, before now)")
    assert "--recreate-expired" in why


def test_items_ttl_leaves_alone_are_recreated(store: Store, story: Story) -> None:
    # Ahead of now, over five years old, not a number, or no attribute: DynamoDB's TTL would not delete them.
    repaired = set(_repair(store, story).repaired)
    assert {story.keys[role] for role in ("ahead", "ancient", "text", "none")} <= repaired


def test_an_item_a_deploy_made_expire_is_recreated_with_its_earlier_expiry(store: Store, story: Story) -> None:
    assert story.keys["deploy-set"] in _repair(store, story).repaired
    item = boto3.client("dynamodb").get_item(TableName="orders", Key={"pk": {"S": "item-deploy-set"}})["Item"]
    assert item["expires_at"] == {"N": str(NOW + 86_400)}


def test_recreate_expired_brings_them_back_too(store: Store, story: Story) -> None:
    result = _repair(store, story, recreate_expired=True)
    assert result.skipped == ()
    assert set(result.repaired) == set(story.keys.values())


def test_a_target_without_ttl_gets_every_item_back(aws: None, store: Store) -> None:
    story = _story(boto3.client("dynamodb"), ttl_enabled=False)
    story.work.capture(store)
    result = _repair(store, story)
    assert result.skipped == ()
    assert set(result.repaired) == set(story.keys.values())


def test_a_dry_run_predicts_the_expired_skips(store: Store, story: Story) -> None:
    predicted = _repair(store, story, dry_run=True)
    assert predicted == _repair(store, story)


def test_the_cli_lists_an_expired_item_as_skipped_and_its_flag_recreates_it(
        store: Store, story: Story, capsys: pytest.CaptureFixture[str]) -> None:
    # The CLI's clock is the real one: the story's expiry times are in 2025, within five years of it.
    args = ["repair", "--table", "orders", "--store", store.uri, "--from", str(story.from_s),
            "--to", str(story.to_s), "--target", "orders"]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "skipped pk=item-expired: expired (expires_at = 2025-06-15T16:53:20Z, before now)" in out
    assert main([*args, "--yes", "--recreate-expired"]) == 0
    assert "skipped 0" in capsys.readouterr().out
    assert "Item" in boto3.client("dynamodb").get_item(TableName="orders", Key={"pk": {"S": "item-expired"}})
