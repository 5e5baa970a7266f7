"""A restored table is the table: its settings as they were at T are recorded, and recreated."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto.core import set_initial_no_auth_action_count

from changelog.codec import decode_lambda_record
from changelog.errors import SettingsUnknown
from changelog.meta import meta_from_description, write_meta
from changelog.settings import SettingsVersion, history, observe, settings_at, wall_clock_us
from changelog.store import Store
from compactor.handler import lambda_handler
from ddb_rewind.cli import main
from stream_consumer.capture import capture_batch
from tests.model import Op, stream_records

TABLE = "orders"
T0 = 1_700_000_000
OPS = [Op(0, {"pk": {"S": "a"}, "g": {"S": "x"}}, T0), Op(1, {"pk": {"S": "b"}, "g": {"S": "y"}}, T0 + 1)]
# What DescribeTable and friends report about this instance, not its configuration: these may differ.
IDENTITY = frozenset({"TableName", "TableArn", "TableId", "CreationDateTime", "LatestStreamArn", "LatestStreamLabel",
                      "ItemCount", "TableSizeBytes", "IndexArn", "IndexSizeBytes", "ResponseMetadata",
                      "EarliestRestorableDateTime", "LatestRestorableDateTime", "CreationTime",
                      "ScalableTargetARN", "PolicyARN", "Alarms", "RevisionId"})


def _at(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).isoformat()


def _source_table(dynamodb: Any, autoscaling: Any) -> str:
    """A table using every setting moto models; returns its ARN."""
    dynamodb.create_table(
        TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "g", "AttributeType": "S"}],
        BillingMode="PROVISIONED", ProvisionedThroughput={"ReadCapacityUnits": 3, "WriteCapacityUnits": 4},
        GlobalSecondaryIndexes=[{"IndexName": "by-g", "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                                 "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["total"]},
                                 "ProvisionedThroughput": {"ReadCapacityUnits": 2, "WriteCapacityUnits": 1}}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        SSESpecification={"Enabled": True, "SSEType": "KMS",
                          "KMSMasterKeyId": "arn:aws:kms:us-east-1:123456789012:key/restore-me"},
        TableClass="STANDARD_INFREQUENT_ACCESS", DeletionProtectionEnabled=True,
        Tags=[{"Key": "team", "Value": "payments"}, {"Key": "cost-centre", "Value": "42"}])
    arn = str(dynamodb.describe_table(TableName=TABLE)["Table"]["TableArn"])
    dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "exp"})
    dynamodb.update_continuous_backups(TableName=TABLE, PointInTimeRecoverySpecification={
        "PointInTimeRecoveryEnabled": True, "RecoveryPeriodInDays": 10})
    dynamodb.put_resource_policy(ResourceArn=arn, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "dynamodb:GetItem",
        "Resource": [arn, f"{arn}/index/*"]}]}))
    for resource, dimension in ((f"table/{TABLE}", "dynamodb:table:ReadCapacityUnits"),
                                (f"table/{TABLE}/index/by-g", "dynamodb:index:WriteCapacityUnits")):
        autoscaling.register_scalable_target(ServiceNamespace="dynamodb", ResourceId=resource,
                                             ScalableDimension=dimension, MinCapacity=1, MaxCapacity=40)
        autoscaling.put_scaling_policy(
            PolicyName=f"keep-{dimension.rsplit(':', 1)[-1]}", ServiceNamespace="dynamodb", ResourceId=resource,
            ScalableDimension=dimension, PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={"TargetValue": 70.0, "PredefinedMetricSpecification": {
                "PredefinedMetricType": "DynamoDBReadCapacityUtilization"}})
    return arn


@pytest.fixture
def source(store: Store, aws: None) -> Store:
    """The source table, its settings observed before T0, and its changes captured."""
    dynamodb, autoscaling = boto3.client("dynamodb"), boto3.client("application-autoscaling")
    _source_table(dynamodb, autoscaling)
    write_meta(store, meta_from_description(dynamodb.describe_table(TableName=TABLE)["Table"]))
    observe(store, TABLE, now_us=(T0 - 60) * 1_000_000)
    capture_batch(store, stream_records(TABLE, OPS), decode_lambda_record, source="test")
    return store


def _without_identity(value: Any, name: str, arn: str) -> Any:
    """A response with identity fields dropped and the table's own name/ARN replaced by placeholders."""
    if isinstance(value, dict):
        return {k: _without_identity(v, name, arn) for k, v in value.items() if k not in IDENTITY}
    if isinstance(value, list):
        return [_without_identity(v, name, arn) for v in value]
    if isinstance(value, str):
        return value.replace(arn, "<arn>").replace(f"table/{name}", "table/<name>")
    return value


def _everything(name: str) -> dict[str, Any]:
    """Every setting moto reports for table ``name``."""
    dynamodb, autoscaling = boto3.client("dynamodb"), boto3.client("application-autoscaling")
    table = dynamodb.describe_table(TableName=name)["Table"]
    arn = table["TableArn"]
    resources = [f"table/{name}", f"table/{name}/index/by-g"]
    report = {
        "table": table,
        "ttl": dynamodb.describe_time_to_live(TableName=name),
        "backups": dynamodb.describe_continuous_backups(TableName=name),
        "tags": sorted(dynamodb.list_tags_of_resource(ResourceArn=arn)["Tags"], key=lambda t: t["Key"]),
        "policy": json.loads(dynamodb.get_resource_policy(ResourceArn=arn)["Policy"]),
        "targets": sorted(autoscaling.describe_scalable_targets(ServiceNamespace="dynamodb", ResourceIds=resources)
                          ["ScalableTargets"], key=lambda t: t["ResourceId"]),
        "policies": [p for r in resources for p in autoscaling.describe_scaling_policies(
            ServiceNamespace="dynamodb", ResourceId=r)["ScalingPolicies"]],
    }
    return dict(_without_identity(report, name, arn))


def _restore(store: Store, *extra: str) -> int:
    return main(["replay", "--table", TABLE, "--store", store.uri, "--at", _at(T0 + 1), "--to-table", "restored",
                 "--create-table", *extra])


def test_every_setting_moto_reports_is_the_same_on_the_restored_table(source: Store) -> None:
    assert _restore(source) == 0
    assert _everything("restored") == _everything(TABLE)


def test_without_leaves_the_named_settings_out(source: Store) -> None:
    assert _restore(source, "--without", "ttl,tags,autoscaling") == 0
    dynamodb = boto3.client("dynamodb")
    arn = dynamodb.describe_table(TableName="restored")["Table"]["TableArn"]
    assert dynamodb.describe_time_to_live(TableName="restored")["TimeToLiveDescription"]["TimeToLiveStatus"] == \
        "DISABLED"
    assert dynamodb.list_tags_of_resource(ResourceArn=arn)["Tags"] == []
    assert boto3.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="dynamodb", ResourceIds=["table/restored"])["ScalableTargets"] == []
    assert _everything("restored")["backups"] == _everything(TABLE)["backups"]


def test_an_unknown_setting_name_is_refused_before_anything_is_read(source: Store,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _restore(source, "--without", "ttl,colour") == 2
    assert "unknown setting colour" in capsys.readouterr().err
    assert "restored" not in boto3.client("dynamodb").list_tables()["TableNames"]


def test_dry_run_prints_the_settings_it_would_apply(source: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert _restore(source, "--dry-run") == 0
    out = capsys.readouterr().out
    assert '"StreamViewType": "NEW_AND_OLD_IMAGES"' in out
    assert "TimeToLive" in out and "table/restored/index/by-g" in out
    assert "restored" not in boto3.client("dynamodb").list_tables()["TableNames"]


def _add_later_index(store: Store) -> None:
    dynamodb = boto3.client("dynamodb")
    dynamodb.update_table(TableName=TABLE, AttributeDefinitions=[{"AttributeName": "h", "AttributeType": "N"}],
                          GlobalSecondaryIndexUpdates=[{"Create": {
                              "IndexName": "by-h", "KeySchema": [{"AttributeName": "h", "KeyType": "HASH"}],
                              "Projection": {"ProjectionType": "KEYS_ONLY"},
                              "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}}}])
    observe(store, TABLE, now_us=(T0 + 100) * 1_000_000)


def _indexes(name: str) -> list[str]:
    table = boto3.client("dynamodb").describe_table(TableName=name)["Table"]
    return sorted(i["IndexName"] for i in table.get("GlobalSecondaryIndexes", []))


def test_an_index_added_after_t_is_not_created(source: Store) -> None:
    _add_later_index(source)
    assert _restore(source) == 0
    assert _indexes("restored") == ["by-g"]


def test_an_index_added_after_t_is_created_when_asked(source: Store) -> None:
    _add_later_index(source)
    assert _restore(source, "--with-later-indexes") == 0
    assert _indexes("restored") == ["by-g", "by-h"]


def test_unchanged_settings_add_no_version(source: Store) -> None:
    assert observe(source, TABLE, now_us=(T0 + 50) * 1_000_000) is None
    assert len(history(source, TABLE)) == 1


def test_settings_at_t_are_the_newest_observed_at_or_before_t(source: Store) -> None:
    boto3.client("dynamodb").update_time_to_live(TableName=TABLE, TimeToLiveSpecification={
        "Enabled": False, "AttributeName": "exp"})
    observe(source, TABLE, now_us=(T0 + 10) * 1_000_000)
    before = settings_at(source, TABLE, (T0 + 9) * 1_000_000)
    after = settings_at(source, TABLE, (T0 + 10) * 1_000_000)
    assert before is not None and before.settings["ttl"]["TimeToLiveStatus"] == "ENABLED"
    assert after is not None and after.settings["ttl"]["TimeToLiveStatus"] == "DISABLED"


def test_settings_before_the_first_observation_are_refused(source: Store) -> None:
    with pytest.raises(SettingsUnknown, match="first recorded at"):
        settings_at(source, TABLE, (T0 - 61) * 1_000_000)


@set_initial_no_auth_action_count(3)
def _observe_without_ttl_permission(store: Store) -> SettingsVersion | None:
    """Observe as a user allowed everything but DescribeTimeToLive (moto enforces IAM after 3 calls)."""
    iam = boto3.client("iam")
    iam.create_user(UserName="backup")
    iam.put_user_policy(UserName="backup", PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["dynamodb:*", "application-autoscaling:*"], "Resource": "*"},
            {"Effect": "Deny", "Action": "dynamodb:DescribeTimeToLive", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="backup")["AccessKey"]
    credentials = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"],
                   "aws_session_token": None}
    return observe(store, TABLE, dynamodb=boto3.client("dynamodb", **credentials),
                   autoscaling=boto3.client("application-autoscaling", **credentials), now_us=T0 * 1_000_000)


def test_a_setting_whose_read_is_refused_is_recorded_as_unknown_and_reported(
        source: Store, capsys: pytest.CaptureFixture[str]) -> None:
    version = _observe_without_ttl_permission(source)
    assert version is not None and version.unknown() == {"ttl": "AccessDenied on DescribeTimeToLive"}
    assert version.settings["tags"]  # the rest is still captured
    assert _restore(source) == 0
    assert "not applied: ttl (unknown when observed: AccessDenied on DescribeTimeToLive)" in capsys.readouterr().out


def test_the_scheduled_compactor_records_changed_settings(source: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWIND_STORE", source.uri)
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    boto3.client("dynamodb").tag_resource(ResourceArn=boto3.client("dynamodb").describe_table(
        TableName=TABLE)["Table"]["TableArn"], Tags=[{"Key": "owner", "Value": "ops"}])
    assert lambda_handler({}, None)["settings_recorded"] is True
    assert {"Key": "owner", "Value": "ops"} in history(source, TABLE)[-1].settings["tags"]
    assert lambda_handler({}, None)["settings_recorded"] is False


def test_without_and_later_indexes_need_create_table(source: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--table", TABLE, "--store", source.uri, "--at", _at(T0 + 1), "--to-table", "restored",
                 "--into-existing", "--without", "ttl"]) == 2
    assert "--create-table" in capsys.readouterr().err


def test_a_global_tables_replicas_are_reported_as_not_applied() -> None:
    from replayer.restoring.table_settings import plan_table

    description = {"TableName": TABLE, "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                   "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                   "Replicas": [{"RegionName": "eu-west-1", "ReplicaStatus": "ACTIVE"},
                                {"RegionName": "us-west-2", "ReplicaStatus": "ACTIVE"}]}
    meta = {"table_name": TABLE, "key_schema": [{"AttributeName": "pk", "AttributeType": "S", "KeyType": "HASH"}]}
    plan = plan_table("orders-restored", meta, SettingsVersion(T0 * 1_000_000, {"table": description}, "x"), None)
    assert "Replicas" not in plan.request
    assert any("global table replicas in eu-west-1, us-west-2" in note for note in plan.not_applied)


# DescribeTable of a table created without a billing mode (provisioned, never switched) has no
# BillingModeSummary at all; moto always writes one, so the description is written as DynamoDB gives it.
_PROVISIONED_WITHOUT_SUMMARY = {
    "TableName": TABLE, "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                             {"AttributeName": "g", "AttributeType": "S"}],
    "ProvisionedThroughput": {"NumberOfDecreasesToday": 0, "ReadCapacityUnits": 3, "WriteCapacityUnits": 4},
    "GlobalSecondaryIndexes": [{"IndexName": "by-g", "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                                "Projection": {"ProjectionType": "ALL"},
                                "ProvisionedThroughput": {"ReadCapacityUnits": 5, "WriteCapacityUnits": 6}}],
}


def test_a_table_described_without_a_billing_mode_is_copied_as_provisioned_with_its_capacity() -> None:
    from replayer.restoring.target import create_table_request

    meta = {"table_name": TABLE, "key_schema": [{"AttributeName": "pk", "AttributeType": "S", "KeyType": "HASH"}]}
    request = create_table_request("copy", meta, _PROVISIONED_WITHOUT_SUMMARY)
    assert request["BillingMode"] == "PROVISIONED"
    assert request["ProvisionedThroughput"] == {"ReadCapacityUnits": 3, "WriteCapacityUnits": 4}
    assert request["GlobalSecondaryIndexes"][0]["ProvisionedThroughput"] == {"ReadCapacityUnits": 5,
                                                                             "WriteCapacityUnits": 6}


def test_a_table_known_by_its_keys_alone_is_copied_on_demand() -> None:
    from replayer.restoring.target import create_table_request

    meta = {"table_name": TABLE, "key_schema": [{"AttributeName": "pk", "AttributeType": "S", "KeyType": "HASH"}]}
    assert create_table_request("copy", meta)["BillingMode"] == "PAY_PER_REQUEST"


# --- every job that reads the table records its settings (consume and compact, not only the Lambda) ----------


def test_a_store_kept_by_consume_and_compact_restores_every_setting(
        store: Store, aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    dynamodb, autoscaling = boto3.client("dynamodb"), boto3.client("application-autoscaling")
    _source_table(dynamodb, autoscaling)
    for key in "abc":
        dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": key}, "g": {"S": key}})
    # The settings are observed when consume starts; dated a minute back so that the moments the
    # stream proves just after it are restorable without this test waiting out the stream margin.
    started_us = wall_clock_us() - 60_000_000
    monkeypatch.setattr("changelog.settings.wall_clock_us", lambda: started_us)
    # consume as if it ran a minute after the writes: the shard it finds caught up then proves them all.
    later = wall_clock_us() + 60_000_000
    monkeypatch.setattr("stream_consumer.poller._now_us", lambda: later)
    assert main(["consume", "--table", TABLE, "--store", store.uri, "--once"]) == 0
    assert main(["compact", "--table", TABLE, "--store", store.uri]) == 0
    assert main(["replay", "--table", TABLE, "--store", store.uri, "--at", "latest", "--to-table", "restored",
                 "--create-table"]) == 0
    restored, source = _everything("restored"), _everything(TABLE)
    for section in ("ttl", "backups", "tags", "policy", "targets", "policies"):
        assert restored[section] == source[section], section
    for setting in ("StreamSpecification", "SSEDescription", "DeletionProtectionEnabled", "TableClassSummary"):
        assert restored["table"].get(setting) == source["table"].get(setting), setting
    assert restored["table"] == source["table"]


def test_compact_records_changed_settings(source: Store) -> None:
    dynamodb = boto3.client("dynamodb")
    dynamodb.tag_resource(ResourceArn=dynamodb.describe_table(TableName=TABLE)["Table"]["TableArn"],
                          Tags=[{"Key": "owner", "Value": "ops"}])
    assert main(["compact", "--table", TABLE, "--store", source.uri]) == 0
    assert {"Key": "owner", "Value": "ops"} in history(source, TABLE)[-1].settings["tags"]


def test_compact_with_no_settings_reads_nothing_from_dynamodb(source: Store) -> None:
    boto3.client("dynamodb").update_time_to_live(
        TableName=TABLE, TimeToLiveSpecification={"Enabled": False, "AttributeName": "exp"})
    before = history(source, TABLE)
    assert main(["compact", "--table", TABLE, "--store", source.uri, "--no-settings"]) == 0
    assert history(source, TABLE) == before


def test_compact_goes_on_when_the_table_cannot_be_read(
        source: Store, capsys: pytest.CaptureFixture[str]) -> None:
    boto3.client("dynamodb").update_table(TableName=TABLE, DeletionProtectionEnabled=False)
    boto3.client("dynamodb").delete_table(TableName=TABLE)
    assert main(["compact", "--table", TABLE, "--store", source.uri]) == 0
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"ddb-rewind: warning: the settings of table {TABLE!r} were not recorded this time")
