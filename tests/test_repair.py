"""``repair``: undo a bad deploy item by item, and never clobber a later legitimate write."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from changelog.docs import key_text
from changelog.errors import TargetError, UsageError
from changelog.store import Store
from ddb_rewind.cli import main
from replayer.forensics.attrdiff import items_equal
from replayer.forensics.repair import RepairAction, apply_action, execute_repair, plan_repair
from replayer.proving.verify import scan_table
from tests.workloads import BadDeploy, bad_deploy, run_cli

US = 1_000_000


@pytest.fixture
def story(aws: None, store: Store) -> BadDeploy:
    """The bad-deploy story on a live moto table and in the store."""
    result = bad_deploy(boto3.client("dynamodb"))
    result.work.capture(store, batch=16, duplicates=True)
    return result


def _repair(store: Store, story: BadDeploy, force: bool = False) -> Any:
    plan = plan_repair(store, "orders", story.from_s * US, story.to_s * US)
    return execute_repair(plan, boto3.client("dynamodb"), "orders", force=force, sleep=lambda _: None)


def test_the_plan_holds_exactly_the_damaged_items(store: Store, story: BadDeploy) -> None:
    plan = plan_repair(store, "orders", story.from_s * US, story.to_s * US)
    assert {a.item_key for a in plan.actions} == set(story.corrupted + story.deleted + story.junk)
    assert plan.counts() == {"recreate": len(story.deleted), "delete": len(story.junk),
                             "restore": len(story.corrupted)}


def test_the_deploy_corrupted_15_percent_of_the_items(story: BadDeploy) -> None:
    assert len(story.corrupted) == 6


def test_repair_restores_damaged_items_and_skips_the_ones_written_again(store: Store, story: BadDeploy) -> None:
    result = _repair(store, story)
    assert sorted(k for k, _ in result.skipped) == sorted(story.later)
    assert set(result.repaired) == set(story.corrupted + story.deleted + story.junk) - set(story.later)
    assert result.failed == ()


def test_after_repair_the_table_is_its_pre_deploy_self_plus_the_later_writes(store: Store, story: BadDeploy) -> None:
    _repair(store, story)
    before, now = story.work.state_at(story.from_s), story.work.live
    damaged = set(story.corrupted + story.deleted + story.junk) - set(story.later)
    expected = {k: v for k, v in now.items() if k not in damaged} | {k: before[k] for k in damaged if k in before}
    live = scan_table(boto3.client("dynamodb"), "orders", segments=3)
    assert live.keys() == expected.keys()
    assert all(items_equal(live[k], expected[k]) for k in expected)


def test_force_writes_over_later_changes_too(store: Store, story: BadDeploy) -> None:
    result = _repair(store, story, force=True)
    assert result.skipped == () and len(result.repaired) == len(story.corrupted + story.deleted + story.junk)
    live = scan_table(boto3.client("dynamodb"), "orders")
    before = story.work.state_at(story.from_s)
    for key in story.corrupted + story.deleted:
        assert items_equal(live[key], before[key])


def test_the_write_condition_catches_a_change_the_read_did_not_see(store: Store, story: BadDeploy) -> None:
    plan = plan_repair(store, "orders", story.from_s * US, story.to_s * US)
    client = boto3.client("dynamodb")
    outcomes = {a.item_key: apply_action(client, "orders", a, "pk", precheck=False) for a in plan.actions}
    # The first later write only added an attribute neither side knew: no condition can name it, which
    # is why the consistent read comes first. Every other later write is caught by the condition.
    assert {k for k, why in outcomes.items() if why} == set(story.later[1:])
    assert all("condition failed" in why for why in outcomes.values() if why)


def test_map_list_and_set_attributes_compare_equal_in_the_condition(store: Store, story: BadDeploy) -> None:
    client = boto3.client("dynamodb")
    key = story.corrupted[2]
    current = story.work.live[key]
    # A binary set, a string set and a map holding a list, each compared with = in the condition.
    assert {"bin", "labels", "prefs"} <= set(current)
    action = RepairAction(key, {"pk": current["pk"]}, "restore", story.work.state_at(story.from_s)[key], current)
    assert apply_action(client, "orders", action, "pk", precheck=False) is None


def test_throttled_writes_are_retried_with_backoff(store: Store, story: BadDeploy) -> None:
    real = boto3.client("dynamodb")
    waits: list[float] = []

    class Throttled:
        """A moto client whose first two PutItem calls are throttled."""

        def __init__(self) -> None:
            self.refusals = 2

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def put_item(self, **request: Any) -> Any:
            if self.refusals:
                self.refusals -= 1
                raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "PutItem")
            return real.put_item(**request)

    plan = plan_repair(store, "orders", story.from_s * US, story.to_s * US)
    action = next(a for a in plan.actions if a.action == "recreate" and a.item_key not in story.later)
    assert apply_action(Throttled(), "orders", action, "pk", sleep=waits.append) is None
    assert len(waits) == 2 and all(w >= 0 for w in waits)


def test_dry_run_prints_the_plan_and_writes_nothing(store: Store, story: BadDeploy,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    before = scan_table(boto3.client("dynamodb"), "orders")
    assert main(["repair", "--table", "orders", "--store", store.uri, "--from", str(story.from_s),
                 "--to", str(story.to_s), "--target", "orders", "--dry-run"]) == 0
    assert "plan: recreate 3, delete 2, restore 6" in capsys.readouterr().out
    assert scan_table(boto3.client("dynamodb"), "orders") == before


def test_a_second_repair_says_the_items_are_already_repaired_not_changed_by_someone(
        store: Store, story: BadDeploy) -> None:
    from replayer.forensics.repair import SKIP_CHANGED, SKIP_REPAIRED

    first = _repair(store, story)
    again = _repair(store, story)

    # Items the first run put back hold their state at --from; so may one a later write happened to
    # leave that way (a junk item deleted after the window). The rest were written again after it.
    already = {key for key, why in again.skipped if why == SKIP_REPAIRED}
    assert again.repaired == ()
    assert set(first.repaired) <= already
    assert {key for key, why in again.skipped if why == SKIP_CHANGED} == set(story.later) - already


def test_the_cli_reports_repaired_and_skipped_keys(store: Store, story: BadDeploy,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["repair", "--table", "orders", "--store", store.uri, "--from", str(story.from_s),
                 "--to", str(story.to_s), "--target", "orders", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "repaired 7, skipped 4, failed 0" in out
    # A person reads the keys: plain, not DynamoDB JSON.
    assert all(f"skipped {key_text(json.loads(key), ('pk',))}:" in out for key in story.later)


def test_a_missing_target_table_is_refused(store: Store, story: BadDeploy) -> None:
    plan = plan_repair(store, "orders", story.from_s * US, story.to_s * US)
    with pytest.raises(TargetError, match="does not exist"):
        execute_repair(plan, boto3.client("dynamodb"), "no-such-table")


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry run"])
def test_a_target_keyed_otherwise_is_refused_before_anything_is_written(
        store: Store, story: BadDeploy, capsys: pytest.CaptureFixture[str], dry_run: bool) -> None:
    # Every write would fail: refused at once (exit 8), not item by item ending in "run it again" (exit 3).
    client = boto3.client("dynamodb")
    client.create_table(TableName="other", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    capsys.readouterr()
    assert run_cli(["repair", "--table", "orders", "--store", store.uri, "--from", str(story.from_s),
                    "--to", str(story.to_s), "--target", "other", "--yes",
                    *(["--dry-run"] if dry_run else [])]) == 8
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "keyed by id (S, partition), the restored items by pk (S, partition)" in err
    assert client.scan(TableName="other")["Count"] == 0


def test_an_inverted_window_is_refused(store: Store, story: BadDeploy) -> None:
    with pytest.raises(UsageError):
        plan_repair(store, "orders", story.to_s * US, story.from_s * US)


def test_an_inverted_window_gets_one_line_from_the_cli(store: Store, story: BadDeploy,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["repair", "--table", "orders", "--store", store.uri, "--from", str(story.to_s),
                    "--to", str(story.from_s), "--target", "orders", "--yes"]) != 0
    assert capsys.readouterr().err.count("\n") == 1


def test_a_dry_run_predicts_the_real_result_exactly(store: Store, story: BadDeploy) -> None:
    plan = plan_repair(store, "orders", story.from_s * US, story.to_s * US)
    client = boto3.client("dynamodb")
    before = scan_table(client, "orders")
    predicted = execute_repair(plan, client, "orders", dry_run=True, sleep=lambda _: None)
    assert scan_table(client, "orders") == before
    actual = execute_repair(plan, client, "orders", sleep=lambda _: None)
    assert predicted == actual
    assert predicted.skipped  # the story has later writes: the dry run saw them too


def test_the_cli_dry_run_lists_what_the_real_run_will_skip(store: Store, story: BadDeploy,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    args = ["repair", "--table", "orders", "--store", store.uri, "--from", str(story.from_s),
            "--to", str(story.to_s), "--target", "orders"]
    assert main([*args, "--dry-run"]) == 0
    assert "dry run: would repair 7, skip 4, fail 0; nothing written" in capsys.readouterr().out
    assert main([*args, "--yes"]) == 0
    assert "repaired 7, skipped 4, failed 0" in capsys.readouterr().out


def test_the_cli_dry_run_says_when_its_plan_list_is_cut_to_the_sample(store: Store, story: BadDeploy,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["repair", "--table", "orders", "--store", store.uri, "--from", str(story.from_s),
                 "--to", str(story.to_s), "--target", "orders", "--dry-run", "--sample", "1"]) == 0
    assert "(the first 1 below; --sample N shows more)" in capsys.readouterr().out


def test_a_repair_without_a_terminal_needs_yes(store: Store, story: BadDeploy,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    before = scan_table(boto3.client("dynamodb"), "orders")
    assert main(["repair", "--table", "orders", "--store", store.uri, "--from", str(story.from_s),
                 "--to", str(story.to_s), "--target", "orders"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "add --yes" in err
    assert scan_table(boto3.client("dynamodb"), "orders") == before


def test_a_dry_run_of_a_missing_target_is_refused_as_the_real_run_is(store: Store, story: BadDeploy) -> None:
    plan = plan_repair(store, "orders", story.from_s * US, story.to_s * US)
    with pytest.raises(TargetError, match="does not exist"):
        execute_repair(plan, boto3.client("dynamodb"), "no-such-table", dry_run=True)


def test_a_scan_aws_refuses_is_an_aws_error_not_a_usage_error(story: BadDeploy) -> None:
    from changelog.errors import AwsError

    client = boto3.client("dynamodb")

    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Scan")

    client.meta.events.register("before-call.dynamodb.Scan", refuse)
    with pytest.raises(AwsError, match="AccessDeniedException") as refused:
        scan_table(client, "orders", segments=2)
    assert refused.value.exit_code == 7
