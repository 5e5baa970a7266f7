"""Checks of the deployable stack, infra/template.yaml (AWS SAM).

Nothing here touches the network or needs AWS credentials:

- cfn-lint (through its Python API) validates the template as written, and again after the
  official SAM translator (``aws-sam-translator``, offline: tests/sam.py) has turned the
  ``AWS::Serverless::Function`` resources into plain CloudFormation, so that the Lambda,
  event-source-mapping and schedule properties are checked against the CloudFormation schemas too;
- the YAML is read with a loader that understands the short intrinsic tags (``!Ref``, ``!Sub``, ...)
  and each test checks one behaviour the backup relies on;
- the expanded template is deployed into moto's CloudFormation (which cannot run the SAM transform
  itself: it ignores ``Transform`` and skips ``AWS::Serverless::*`` resources).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from changelog.codec import decode_lambda_record
from changelog.glue import glue_columns, partition_keys
from changelog.store import LocalStore
from changelog.timefmt import parse_time
from stream_consumer.capture import capture_batch
from tests.model import Op, stream_records
from tests.sam import deploy, expand, load_template

INFRA = Path(__file__).resolve().parent.parent / "infra"
TEMPLATE_PATH = INFRA / "template.yaml"

NO_VALUE = {"Ref": "AWS::NoValue"}

# Statements allowed to use Resource "*", keyed by (logical id of the resource holding the
# policy, statement Sid). Keep this list short and explain every entry.
RESOURCE_STAR_ALLOWLIST = {
    # In a KMS key policy, Resource "*" means "this key" and nothing else: a key policy cannot
    # name its own ARN. The statement delegates the key to IAM in the same account.
    ("StoreKey", "AccountAdministersKeyThroughIam"),
    # Application Auto Scaling's Describe* actions support no resource-level permissions.
    ("CompactorRole", "ReadAutoScalingSettings"),
    # dynamodb:ListStreams supports no resource-level permission (recover attributes a failed batch
    # of a replaced stream to its table with it).
    ("RecoverRole", "ListTableStreams"),
}

# Deny statements allowed to use a wildcard action. A wildcard in a Deny only takes
# permissions away, and a TLS-only policy must cover every action of the service, including
# ones added after the template was written.
WILDCARD_DENY_ALLOWLIST = {
    ("StoreBucketPolicy", "DenyRequestsWithoutTls"),
    ("FailureQueuePolicy", "DenyRequestsWithoutTls"),
}



# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def expanded(template: dict[str, Any]) -> dict[str, Any]:
    """The template after the official SAM transform (tests/sam.py)."""
    return expand(template)


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


def _function(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """Properties of a SAM function with the template's Globals merged in (as SAM does)."""
    resource = template["Resources"][logical_id]
    assert resource["Type"] == "AWS::Serverless::Function"
    merged = dict(template.get("Globals", {}).get("Function", {}))
    merged.update(resource["Properties"])
    return merged


def _stream_event(template: dict[str, Any]) -> dict[str, Any]:
    """The consumer's one stream trigger (a plain mapping, so that its source can follow StreamSource)."""
    assert "Events" not in _function(template, "ConsumerFunction"), "the trigger is ConsumerStreamMapping"
    mappings = [r["Properties"] for r in template["Resources"].values()
                if r["Type"] == "AWS::Lambda::EventSourceMapping"
                and r["Properties"]["FunctionName"] == {"Ref": "ConsumerFunction"}]
    assert len(mappings) == 1, "the consumer must have exactly one stream trigger"
    return mappings[0]


def _condition_value(template: dict[str, Any], node: Any, parameters: dict[str, str]) -> bool:
    """A condition evaluated as CloudFormation would for these parameter values (defaults for the rest)."""
    if isinstance(node, dict) and "Condition" in node:
        return _condition_value(template, template["Conditions"][node["Condition"]], parameters)
    ((function, arguments),) = node.items()
    if function == "Fn::Equals":
        left, right = (_resolved(template, argument, parameters) for argument in arguments)
        return bool(left == right)
    if function == "Fn::Not":
        return not _condition_value(template, arguments[0], parameters)
    if function in ("Fn::And", "Fn::Or"):
        values = [_condition_value(template, argument, parameters) for argument in arguments]
        return all(values) if function == "Fn::And" else any(values)
    raise AssertionError(f"_condition_value does not know {function}")


def _resolved(template: dict[str, Any], node: Any, parameters: dict[str, str]) -> Any:
    """``node`` with every Fn::If decided and parameter Refs replaced by their values; AWS::NoValue dropped.

    Refs to resources and other intrinsics are left as they are: what a choice of parameters changes
    is which statements, mappings and ARNs the stack gets, and that is what the tests compare.
    """
    if isinstance(node, list):
        values = [_resolved(template, value, parameters) for value in node]
        return [value for value in values if value != NO_VALUE]
    if not isinstance(node, dict):
        return node
    if "Fn::If" in node:
        condition, when_true, when_false = node["Fn::If"]
        chosen = when_true if _condition_value(template, template["Conditions"][condition], parameters) else when_false
        return _resolved(template, chosen, parameters)
    if set(node) == {"Ref"} and node["Ref"] in template["Parameters"]:
        name = node["Ref"]
        return parameters.get(name, template["Parameters"][name].get("Default"))
    return {key: _resolved(template, value, parameters) for key, value in node.items()}


DYNAMODB_SOURCE = {"StreamSource": "DynamoDBStreams",
                   "TableStreamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00"}
KINESIS_SOURCE = {"StreamSource": "KinesisDataStreams", "TableStreamArn": "", "KinesisStreamName": "orders-changes"}
# The Kinesis stream's ARN as the template builds it from KinesisStreamName (same account and region).
KINESIS_ARN = {"Fn::Sub": "arn:${AWS::Partition}:kinesis:${AWS::Region}:${AWS::AccountId}:stream/${KinesisStreamName}"}


def _source_actions(template: dict[str, Any], role: str, parameters: dict[str, str]) -> dict[str, set[str]]:
    """The stream actions (dynamodb stream reads, kinesis) a role gets for a choice of source, by resource."""
    resolved = _resolved(template, template["Resources"][role]["Properties"], parameters)
    found: dict[str, set[str]] = {}
    for _, statement in _policy_statements(resolved, role):
        for action in _as_list(statement["Action"]):
            if action.startswith("kinesis:") or action in ("dynamodb:DescribeStream", "dynamodb:GetRecords",
                                                           "dynamodb:GetShardIterator"):
                found.setdefault(str(statement["Resource"]), set()).add(action)
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _if_branches(value: Any) -> list[Any]:
    """Both outcomes of an Fn::If (minus AWS::NoValue), or the value itself."""
    if isinstance(value, dict) and "Fn::If" in value:
        _, when_true, when_false = value["Fn::If"]
        return [b for b in (*_if_branches(when_true), *_if_branches(when_false)) if b != NO_VALUE]
    return [value]


def _policy_statements(node: Any, owner: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every policy statement anywhere under ``node`` (both branches of any Fn::If)."""
    if isinstance(node, dict):
        if "Statement" in node and isinstance(node["Statement"], list):
            for item in node["Statement"]:
                for statement in _if_branches(item):
                    yield owner, statement
        for value in node.values():
            yield from _policy_statements(value, owner)
    elif isinstance(node, list):
        for value in node:
            yield from _policy_statements(value, owner)


def _all_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for logical_id, resource in template["Resources"].items():
        found.extend(_policy_statements(resource.get("Properties", {}), logical_id))
    assert found, "the template has no policy statements at all?"
    return found


def _role_actions(resources: dict[str, Any], role: str) -> set[str]:
    actions: set[str] = set()
    for policy in resources[role]["Properties"]["Policies"]:
        for _, statement in _policy_statements(policy["PolicyDocument"], role):
            actions.update(_as_list(statement["Action"]))
    return actions


def _statement(resources: dict[str, Any], owner: str, sid: str) -> dict[str, Any]:
    for _, statement in _policy_statements(resources[owner]["Properties"], owner):
        if statement.get("Sid") == sid:
            return statement
    raise AssertionError(f"{owner} has no statement {sid}")


def _alarms(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}


def _find_alarm(resources: dict[str, Any], metric: str, dimension_value: Any) -> dict[str, Any]:
    matches = [
        a
        for a in _alarms(resources).values()
        if a["MetricName"] == metric and any(d["Value"] == dimension_value for d in a.get("Dimensions", []))
    ]
    assert len(matches) == 1, f"expected one alarm on {metric} for {dimension_value}, found {len(matches)}"
    return matches[0]


# ------------------------------------------------------------------------------------------------
# The official SAM expansion: what CloudFormation deploys, wired as the code expects
# ------------------------------------------------------------------------------------------------

FUNCTIONS = ("ConsumerFunction", "RecoverFunction", "CompactorFunction", "VerifierFunction")


def _of_type(expanded: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r["Properties"] for k, r in expanded["Resources"].items() if r["Type"] == kind}


def _env_names_read(module: str) -> set[str]:
    """The settings a handler reads from its environment: every REWIND_/POWERTOOLS_ name its module
    spells, and the store's (changelog.store.environment_store, which the stream functions call)."""
    import importlib

    import changelog.store

    sources = [Path(importlib.import_module(module).__file__ or "").read_text(encoding="utf-8")]
    if "environment_store" in sources[0]:
        sources.append(Path(changelog.store.__file__).read_text(encoding="utf-8"))
    return {name for source in sources for name in re.findall(r"\"((?:REWIND|POWERTOOLS)_[A-Z_]+)\"", source)}


def test_the_expansion_makes_a_lambda_function_of_each_sam_function(expanded: dict[str, Any]) -> None:
    functions = _of_type(expanded, "AWS::Lambda::Function")
    assert set(functions) == set(FUNCTIONS)
    for props in functions.values():
        assert props["Runtime"] == "python3.13" and props["Architectures"] == ["arm64"]  # Globals applied


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_handler_is_importable_and_callable(expanded: dict[str, Any], function: str) -> None:
    import importlib

    module, _, name = expanded["Resources"][function]["Properties"]["Handler"].rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_gets_every_setting_its_handler_reads(expanded: dict[str, Any], function: str) -> None:
    props = expanded["Resources"][function]["Properties"]
    module = props["Handler"].rpartition(".")[0]
    read = _env_names_read(module)
    assert "REWIND_STORE" in read
    assert read <= set(props["Environment"]["Variables"])


def test_the_stream_trigger_sends_exhausted_batches_to_the_queue_recover_reads(expanded: dict[str, Any]) -> None:
    mappings = _of_type(expanded, "AWS::Lambda::EventSourceMapping")
    by_function = {m["FunctionName"]["Ref"]: m for m in mappings.values()}
    assert set(by_function) == {"ConsumerFunction", "RecoverFunction"}
    queue = {"Fn::GetAtt": ["FailureQueue", "Arn"]}
    assert by_function["ConsumerFunction"]["DestinationConfig"] == {"OnFailure": {"Destination": queue}}
    assert by_function["RecoverFunction"]["EventSourceArn"] == queue
    assert by_function["RecoverFunction"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_schedules_invoke_the_compactor_the_verifier_and_the_probe(expanded: dict[str, Any]) -> None:
    rules = _of_type(expanded, "AWS::Events::Rule")
    targets = {rule["Targets"][0]["Arn"]["Fn::GetAtt"][0]: rule for rule in rules.values()}
    assert set(targets) == {"CompactorFunction", "VerifierFunction", "RecoverFunction"}
    # The probe runs only where the consumer records per-shard progress (a DynamoDB stream, one batch a shard).
    assert targets["RecoverFunction"]["State"] == {"Fn::If": ["RecordsShardProgress", "ENABLED", "DISABLED"]}
    recover_env = expanded["Resources"]["RecoverFunction"]["Properties"]["Environment"]["Variables"]
    assert recover_env["REWIND_STREAM_ARN"] == {"Fn::If": ["ReadsDynamoDBStream", {"Ref": "TableStreamArn"}, ""]}
    assert targets["CompactorFunction"]["ScheduleExpression"] == {"Ref": "CompactionSchedule"}
    # The verifier is told the interval it runs at: each run reads its own slot of the cycle.
    assert targets["VerifierFunction"]["ScheduleExpression"] == {"Fn::Sub": "rate(${VerifyIntervalMinutes} minutes)"}
    verifier_env = expanded["Resources"]["VerifierFunction"]["Properties"]["Environment"]["Variables"]
    assert verifier_env["REWIND_VERIFY_INTERVAL_MINUTES"] == {"Ref": "VerifyIntervalMinutes"}
    permissions = _of_type(expanded, "AWS::Lambda::Permission")
    assert {(p["FunctionName"]["Ref"], p["Principal"]) for p in permissions.values()} == {
        ("CompactorFunction", "events.amazonaws.com"), ("VerifierFunction", "events.amazonaws.com"),
        ("RecoverFunction", "events.amazonaws.com")}


def test_the_consumer_names_its_shard_only_where_a_shard_is_read_one_batch_at_a_time(
    expanded: dict[str, Any]
) -> None:
    mappings = _of_type(expanded, "AWS::Lambda::EventSourceMapping")
    (consumer,) = [m for m in mappings.values() if m["FunctionName"]["Ref"] == "ConsumerFunction"]
    assert consumer["TumblingWindowInSeconds"] == {"Fn::If": ["RecordsShardProgress", 900, {"Ref": "AWS::NoValue"}]}
    assert expanded["Conditions"]["RecordsShardProgress"] == {"Fn::And": [
        {"Condition": "ReadsDynamoDBStream"}, {"Fn::Equals": [{"Ref": "ParallelizationFactor"}, "1"]}]}


def test_each_function_runs_with_its_own_role(expanded: dict[str, Any]) -> None:
    roles = {f: expanded["Resources"][f]["Properties"]["Role"] for f in FUNCTIONS}
    assert roles == {f: {"Fn::GetAtt": [f.replace("Function", "Role"), "Arn"]} for f in FUNCTIONS}
    # Besides the functions' roles, only the Spark job's own (EMR Serverless runs it, not Lambda).
    assert not [k for k, r in expanded["Resources"].items() if r["Type"] == "AWS::IAM::Role" and k not in
                {f.replace("Function", "Role") for f in FUNCTIONS} | {"SparkJobRole"}], "the transform added a role"


def test_the_expansion_keeps_the_alarms_and_the_dashboard(expanded: dict[str, Any], template: dict[str, Any]) -> None:
    alarms = _of_type(expanded, "AWS::CloudWatch::Alarm")
    assert alarms == _alarms(template["Resources"])
    body = expanded["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert all(f"${{{name}.Arn}}" in body for name in alarms if name.startswith(
        ("CaptureLag", "UnreadShards", "StoreGaps", "StoreQuarantined", "VerificationFailures", "VerifierErrors")))


# ------------------------------------------------------------------------------------------------
# cfn-lint
# ------------------------------------------------------------------------------------------------


def _blocking(matches: list[Any]) -> list[str]:
    """Errors and warnings; informational matches are reported by the CLI but never block."""
    return [f"{m.rule.id} {m.message} ({m.filename}:{m.linenumber})" for m in matches if m.rule.id[0] in "EW"]


@pytest.mark.slow
def test_template_passes_cfn_lint_without_errors_or_warnings() -> None:
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(TEMPLATE_PATH, config=ManualArgs(regions=["us-east-1", "eu-west-1"]))
    assert _blocking(matches) == []


@pytest.mark.slow
def test_expanded_template_passes_cfn_lint(template: dict[str, Any]) -> None:
    # Checks the Lambda function and event source mapping properties (enums, types, runtimes)
    # against the plain CloudFormation schemas, which cfn-lint does not apply to SAM resources.
    from cfnlint.api import ManualArgs, lint

    matches = lint(json.dumps(expand(template)), config=ManualArgs(regions=["us-east-1"]))
    assert _blocking(matches) == []


# ------------------------------------------------------------------------------------------------
# Stream trigger
# ------------------------------------------------------------------------------------------------


def test_stream_trigger_starts_at_trim_horizon(template: dict[str, Any]) -> None:
    assert _stream_event(template)["StartingPosition"] == "TRIM_HORIZON"


def test_stream_trigger_reports_batch_item_failures(template: dict[str, Any]) -> None:
    assert _stream_event(template)["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_stream_trigger_bisects_failing_batches(template: dict[str, Any]) -> None:
    assert _stream_event(template)["BisectBatchOnFunctionError"] is True


def test_stream_trigger_retries_are_bounded(template: dict[str, Any]) -> None:
    retries = _stream_event(template)["MaximumRetryAttempts"]
    assert isinstance(retries, dict) and "Ref" in retries, "retries should be a parameter"
    parameter = template["Parameters"][retries["Ref"]]
    # -1 means "retry until the record expires"; the bounds must exclude it.
    assert parameter["Type"] == "Number"
    assert 0 <= parameter["MinValue"] <= parameter["Default"] <= parameter["MaxValue"] <= 10000


def test_stream_trigger_sends_exhausted_batches_to_an_encrypted_queue(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    on_failure = _stream_event(template)["DestinationConfig"]["OnFailure"]
    queue_id, attribute = on_failure["Destination"]["Fn::GetAtt"]
    assert attribute == "Arn"
    queue = resources[queue_id]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"].get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue["Properties"]


def test_stream_trigger_batch_size_and_window_are_parameters(template: dict[str, Any]) -> None:
    event = _stream_event(template)
    for prop in ("BatchSize", "MaximumBatchingWindowInSeconds"):
        assert event[prop]["Ref"] in template["Parameters"], prop


def test_stream_trigger_reads_the_table_stream_by_default(template: dict[str, Any]) -> None:
    assert template["Parameters"]["StreamSource"]["Default"] == "DynamoDBStreams"
    mapping = _resolved(template, _stream_event(template), DYNAMODB_SOURCE)
    assert mapping["EventSourceArn"] == DYNAMODB_SOURCE["TableStreamArn"]


def test_stream_trigger_reads_the_kinesis_stream_when_that_source_is_chosen(template: dict[str, Any]) -> None:
    mapping = _resolved(template, _stream_event(template), KINESIS_SOURCE)
    assert mapping["EventSourceArn"] == KINESIS_ARN


@pytest.mark.parametrize("source", [DYNAMODB_SOURCE, KINESIS_SOURCE], ids=["dynamodb", "kinesis"])
def test_both_sources_keep_the_same_trigger_settings_and_failure_destination(
    template: dict[str, Any], source: dict[str, str]
) -> None:
    mapping = _resolved(template, _stream_event(template), source)
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["DestinationConfig"] == {"OnFailure": {"Destination": {"Fn::GetAtt": ["FailureQueue", "Arn"]}}}


@pytest.mark.parametrize(("source", "arn_parameter"), [("DynamoDBStreams", "TableStreamArn"),
                                                       ("KinesisDataStreams", "KinesisStreamName")])
def test_the_chosen_source_must_name_its_stream(template: dict[str, Any], source: str, arn_parameter: str) -> None:
    (rule,) = [r for r in template["Rules"].values()
               if r["RuleCondition"] == {"Fn::Equals": [{"Ref": "StreamSource"}, source]}]
    assert [a["Assert"] for a in rule["Assertions"]] == [
        {"Fn::Not": [{"Fn::Equals": [{"Ref": arn_parameter}, ""]}]}]
    assert template["Parameters"]["StreamSource"]["AllowedValues"] == ["DynamoDBStreams", "KinesisDataStreams"]


# ------------------------------------------------------------------------------------------------
# Functions
# ------------------------------------------------------------------------------------------------


def test_consumer_handler_is_stream_consumer_lambda_handler(template: dict[str, Any]) -> None:
    assert _function(template, "ConsumerFunction")["Handler"] == "stream_consumer.handler.lambda_handler"


def test_compactor_handler_is_compactor_lambda_handler(template: dict[str, Any]) -> None:
    assert _function(template, "CompactorFunction")["Handler"] == "compactor.handler.lambda_handler"


FUNCTIONS = ["ConsumerFunction", "CompactorFunction", "RecoverFunction", "VerifierFunction"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_functions_run_python_3_12_or_newer_on_arm64(template: dict[str, Any], function: str) -> None:
    props = _function(template, function)
    match = re.fullmatch(r"python3\.(\d+)", props["Runtime"])
    assert match and int(match.group(1)) >= 12, props["Runtime"]
    assert props["Architectures"] == ["arm64"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_functions_get_the_store_uri_and_powertools_settings(template: dict[str, Any], function: str) -> None:
    env = _function(template, function)["Environment"]["Variables"]
    assert env["REWIND_STORE"] == {"Fn::Sub": "s3://${StoreBucket}/${StorePrefix}"}
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
    assert "POWERTOOLS_SERVICE_NAME" in env


def test_recover_handler_is_stream_consumer_recover_lambda_handler(template: dict[str, Any]) -> None:
    assert _function(template, "RecoverFunction")["Handler"] == "stream_consumer.recover.lambda_handler"


def test_recover_is_triggered_by_the_failure_queue_one_batch_at_a_time(template: dict[str, Any]) -> None:
    events = _function(template, "RecoverFunction")["Events"]
    (trigger,) = [e["Properties"] for e in events.values() if e["Type"] == "SQS"]
    assert trigger["Queue"] == _stream_event(template)["DestinationConfig"]["OnFailure"]["Destination"]
    assert trigger["BatchSize"] == 1
    # A message is deleted only when the function does not list it: recovered or recorded as a gap.
    assert trigger["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_failure_queue_hides_a_message_longer_than_the_recover_function_runs(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    timeout = _function(template, "RecoverFunction")["Timeout"]
    assert resources["FailureQueue"]["Properties"]["VisibilityTimeout"] >= 6 * timeout


def test_compactor_runs_on_a_schedule_for_its_table(template: dict[str, Any]) -> None:
    props = _function(template, "CompactorFunction")
    assert props["Environment"]["Variables"]["REWIND_TABLE"] == {"Ref": "TableName"}
    schedules = [e["Properties"] for e in props["Events"].values() if e["Type"] in ("Schedule", "ScheduleV2")]
    assert len(schedules) == 1
    assert schedules[0]["Schedule"] == {"Ref": "CompactionSchedule"}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_functions_are_built_from_the_build_script_artifact(resources: dict[str, Any], function: str) -> None:
    # sam build runs infra/Makefile (BuildMethod: makefile), which copies infra/.build/artifact.
    assert resources[function]["Metadata"]["BuildMethod"] == "makefile"
    assert resources[function]["Properties"]["CodeUri"] == "."
    makefile = (INFRA / "Makefile").read_text(encoding="utf-8")
    (rule,) = re.findall(rf"^(?:\S+ )*build-{function}(?: \S+)*:\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    # The capture functions get the artifact without the SQL engine; the others the full one.
    artifact = "CAPTURE" if function in ("ConsumerFunction", "RecoverFunction") else "FULL"
    assert f'cp -R "$({artifact})/." "$(ARTIFACTS_DIR)/"' in rule


def _distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_lambda_pins_cover_every_runtime_dependency_with_a_version_it_accepts() -> None:
    import tomllib

    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    for line in (INFRA / "requirements-lambda.txt").read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            name, _, version = text.partition("==")
            assert version, f"{text}: every line of the pins is an exact == pin"
            pins[_distribution(name)] = version
    project = tomllib.loads((INFRA.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for dependency in map(Requirement, project["dependencies"]):
        name = _distribution(dependency.name)
        assert name in pins, f"{name} is a runtime dependency without a pin in infra/requirements-lambda.txt"
        assert dependency.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {dependency.specifier}"


def test_build_installs_only_the_pins_without_resolving() -> None:
    script = (INFRA / "build.sh").read_text(encoding="utf-8")
    installs = [line for line in script.splitlines() if "pip_target --target" in line]
    assert installs and all("--no-deps" in line for line in installs)
    assert "budget_mib=200" in script


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_build_script_is_valid_bash_in_strict_mode() -> None:
    script = INFRA / "build.sh"
    assert "set -euo pipefail" in script.read_text(encoding="utf-8")
    subprocess.run(["bash", "-n", str(script)], check=True)  # parse only: never run it here


# ------------------------------------------------------------------------------------------------
# Store bucket
# ------------------------------------------------------------------------------------------------


def test_bucket_is_encrypted_by_default(resources: dict[str, Any]) -> None:
    rules = resources["StoreBucket"]["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert len(rules) == 1
    choices = _if_branches(rules[0]["ServerSideEncryptionByDefault"])
    assert {c["SSEAlgorithm"] for c in choices} <= {"aws:kms", "AES256"}
    assert choices, "no default encryption"
    for choice in choices:
        if choice["SSEAlgorithm"] == "aws:kms":
            assert choice["KMSMasterKeyID"] == {"Fn::GetAtt": ["StoreKey", "Arn"]}


def test_bucket_is_versioned(resources: dict[str, Any]) -> None:
    assert resources["StoreBucket"]["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}


def test_bucket_blocks_all_public_access(resources: dict[str, Any]) -> None:
    props = resources["StoreBucket"]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}


def test_bucket_and_key_outlive_the_stack(resources: dict[str, Any]) -> None:
    for logical_id in ("StoreBucket", "StoreKey"):
        assert resources[logical_id]["DeletionPolicy"] == "Retain", logical_id
        assert resources[logical_id]["UpdateReplacePolicy"] == "Retain", logical_id


def test_bucket_policy_denies_requests_without_tls(resources: dict[str, Any]) -> None:
    policy = resources["StoreBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "StoreBucket"}
    statement = _statement(resources, "StoreBucketPolicy", "DenyRequestsWithoutTls")
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statement["Resource"] == [
        {"Fn::GetAtt": ["StoreBucket", "Arn"]},
        {"Fn::Sub": "${StoreBucket.Arn}/*"},
    ]


def test_change_files_move_to_standard_ia_then_glacier_ir(resources: dict[str, Any]) -> None:
    rules = resources["StoreBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    # Lifecycle prefixes are literal (no wildcards): one stack, one table, one exact prefix.
    tiering = [r for r in rules if r.get("Prefix") == {"Fn::Sub": "${StorePrefix}/tables/${TableName}/changes/"}]
    assert len(tiering) == 1
    transitions = {t["StorageClass"]: t["TransitionInDays"] for t in tiering[0]["Transitions"]}
    assert transitions == {
        "STANDARD_IA": {"Ref": "ChangesToStandardIaDays"},
        "GLACIER_IR": {"Ref": "ChangesToGlacierIrDays"},
    }


def test_lifecycle_expires_noncurrent_versions_and_aborts_uploads(resources: dict[str, Any]) -> None:
    rules = resources["StoreBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    bucket_wide = [r for r in rules if "Prefix" not in r and r["Status"] == "Enabled"]
    assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") for r in bucket_wide)
    assert any(r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") for r in bucket_wide)


def test_object_lock_is_off_by_default(template: dict[str, Any], resources: dict[str, Any]) -> None:
    mode = template["Parameters"]["ObjectLockMode"]
    assert mode["Default"] == "NONE"
    assert set(mode["AllowedValues"]) == {"NONE", "GOVERNANCE", "COMPLIANCE"}
    assert template["Conditions"]["UseObjectLock"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ObjectLockMode"}, "NONE"]}]}
    props = resources["StoreBucket"]["Properties"]
    for prop in ("ObjectLockEnabled", "ObjectLockConfiguration"):
        condition, _, when_off = props[prop]["Fn::If"]
        assert condition == "UseObjectLock"
        assert when_off == NO_VALUE


# ------------------------------------------------------------------------------------------------
# IAM
# ------------------------------------------------------------------------------------------------


def test_no_allow_statement_uses_a_wildcard_action(template: dict[str, Any]) -> None:
    offenders = []
    for owner, statement in _all_statements(template):
        assert "NotAction" not in statement and "NotResource" not in statement, (owner, statement)
        wildcard = [a for a in _as_list(statement["Action"]) if isinstance(a, str) and "*" in a]
        if not wildcard:
            continue
        if statement["Effect"] == "Deny" and (owner, statement.get("Sid")) in WILDCARD_DENY_ALLOWLIST:
            continue
        offenders.append((owner, statement.get("Sid"), wildcard))
    assert offenders == []


def test_resource_star_only_in_the_allowlist(template: dict[str, Any]) -> None:
    found = {
        (owner, statement.get("Sid"))
        for owner, statement in _all_statements(template)
        if "*" in _as_list(statement.get("Resource", []))
    }
    assert found <= RESOURCE_STAR_ALLOWLIST


def test_functions_use_explicit_roles_without_sam_policies(template: dict[str, Any]) -> None:
    # SAM policy templates and managed policies would bypass the statement checks above.
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            props = _function(template, logical_id)
            assert "Policies" not in props, logical_id
            role_id, attribute = props["Role"]["Fn::GetAtt"]
            assert attribute == "Arn"
            assert template["Resources"][role_id]["Type"] == "AWS::IAM::Role"
        if resource["Type"] == "AWS::IAM::Role":
            assert "ManagedPolicyArns" not in resource["Properties"], logical_id


def test_consumer_reads_only_the_table_stream_when_it_is_the_source(template: dict[str, Any]) -> None:
    assert _source_actions(template, "ConsumerRole", DYNAMODB_SOURCE) == {
        DYNAMODB_SOURCE["TableStreamArn"]: {"dynamodb:DescribeStream", "dynamodb:GetRecords",
                                            "dynamodb:GetShardIterator"}}


def test_consumer_reads_only_the_kinesis_stream_when_it_is_the_source(template: dict[str, Any]) -> None:
    assert _source_actions(template, "ConsumerRole", KINESIS_SOURCE) == {
        str(KINESIS_ARN): {"kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:DescribeStream",
                                             "kinesis:DescribeStreamSummary", "kinesis:ListShards"}}


def test_recover_re_reads_and_probes_the_table_stream_only_when_it_is_the_source(template: dict[str, Any]) -> None:
    # Failed ranges by iterator and GetRecords; the probe lists the shards (DescribeStream) too.
    assert _source_actions(template, "RecoverRole", DYNAMODB_SOURCE) == {
        DYNAMODB_SOURCE["TableStreamArn"]: {"dynamodb:DescribeStream", "dynamodb:GetRecords",
                                            "dynamodb:GetShardIterator"}}


def test_recover_re_reads_only_the_named_kinesis_stream_when_it_is_the_source(template: dict[str, Any]) -> None:
    # The ranges of failed Kinesis batches, by iterator and GetRecords: that one stream, no wildcard.
    assert _source_actions(template, "RecoverRole", KINESIS_SOURCE) == {
        str(KINESIS_ARN): {"kinesis:GetRecords", "kinesis:GetShardIterator"}}


def test_recover_gets_no_dynamodb_action_when_kinesis_is_the_source(template: dict[str, Any]) -> None:
    # A Kinesis batch names its stream and table itself: DescribeTable and ListStreams ("*") would go unused.
    resolved = _resolved(template, template["Resources"]["RecoverRole"]["Properties"], KINESIS_SOURCE)
    actions = {action for _, statement in _policy_statements(resolved, "RecoverRole")
               for action in _as_list(statement["Action"])}
    assert not any(action.startswith("dynamodb:") for action in actions)


@pytest.mark.parametrize("source", [DYNAMODB_SOURCE, KINESIS_SOURCE], ids=["dynamodb", "kinesis"])
def test_iterator_age_alarm_watches_the_consumer_whatever_its_source(
    template: dict[str, Any], source: dict[str, str]
) -> None:
    resolved = _resolved(template, template["Resources"], source)
    assert _find_alarm(resolved, "IteratorAge", {"Ref": "ConsumerFunction"})["Namespace"] == "AWS/Lambda"


def test_stream_read_is_scoped_to_the_stream_arn(resources: dict[str, Any]) -> None:
    statement = _statement(resources, "ConsumerRole", "ReadTableStream")
    assert set(statement["Action"]) == {
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
    }
    assert statement["Resource"] == {"Ref": "TableStreamArn"}
    describe = _statement(resources, "ConsumerRole", "DescribeSourceTable")
    assert describe["Action"] == "dynamodb:DescribeTable"
    assert "table/${TableName}" in describe["Resource"]["Fn::Sub"]


def test_only_the_compactor_may_delete_objects(resources: dict[str, Any]) -> None:
    assert "s3:DeleteObject" not in _role_actions(resources, "ConsumerRole")
    assert "s3:DeleteObject" not in _role_actions(resources, "RecoverRole")
    assert "s3:DeleteObject" in _role_actions(resources, "CompactorRole")


@pytest.mark.parametrize("role", ["ConsumerRole", "CompactorRole", "RecoverRole", "VerifierRole"])
def test_object_access_is_limited_to_the_store_prefix(resources: dict[str, Any], role: str) -> None:
    for _, statement in _policy_statements(resources[role]["Properties"], role):
        actions = _as_list(statement["Action"])
        if any(a.startswith("s3:") for a in actions):
            if actions == ["s3:ListBucket"]:
                assert statement["Resource"] == {"Fn::GetAtt": ["StoreBucket", "Arn"]}
                ((operator, condition),) = statement["Condition"].items()
                # IfExists on purpose: HeadBucket (open_store) and the 404 answer for a missing
                # key need s3:ListBucket and carry no s3:prefix; StringLike alone would deny them.
                assert operator == "StringLikeIfExists"
                assert condition == {"s3:prefix": [{"Ref": "StorePrefix"}, {"Fn::Sub": "${StorePrefix}/*"}]}
            else:
                assert statement["Resource"] == {"Fn::Sub": "${StoreBucket.Arn}/${StorePrefix}/*"}


def test_consumer_may_send_only_to_its_failure_queue(resources: dict[str, Any]) -> None:
    statement = _statement(resources, "ConsumerRole", "SendFailedBatchMetadata")
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == {"Fn::GetAtt": ["FailureQueue", "Arn"]}


def test_recover_reads_only_its_queue_the_table_stream_and_whose_stream_it_is(resources: dict[str, Any]) -> None:
    queue = _statement(resources, "RecoverRole", "ConsumeFailureQueue")
    assert set(queue["Action"]) == {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
    assert queue["Resource"] == {"Fn::GetAtt": ["FailureQueue", "Arn"]}
    stream = _statement(resources, "RecoverRole", "ReReadTableStream")
    assert set(stream["Action"]) == {"dynamodb:DescribeStream", "dynamodb:GetShardIterator", "dynamodb:GetRecords"}
    assert stream["Resource"] == {"Ref": "TableStreamArn"}
    assert {a for a in _role_actions(resources, "RecoverRole") if a.startswith(("sqs:", "dynamodb:"))} == {
        *queue["Action"], *stream["Action"], "dynamodb:DescribeTable", "dynamodb:ListStreams"}


@pytest.mark.parametrize(
    ("role", "log_group"),
    [("ConsumerRole", "ConsumerLogGroup"), ("CompactorRole", "CompactorLogGroup"), ("RecoverRole", "RecoverLogGroup"),
     ("VerifierRole", "VerifierLogGroup")],
)
def test_functions_log_only_to_their_own_log_group(
    template: dict[str, Any], resources: dict[str, Any], role: str, log_group: str
) -> None:
    statement = _statement(resources, role, "WriteOwnLogs")
    assert set(statement["Action"]) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert statement["Resource"] == {"Fn::GetAtt": [log_group, "Arn"]}
    function = role.replace("Role", "Function")
    assert _function(template, function)["LoggingConfig"] == {"LogGroup": {"Ref": log_group}}


# ------------------------------------------------------------------------------------------------
# Alarms
# ------------------------------------------------------------------------------------------------


def test_alarm_on_consumer_iterator_age(template: dict[str, Any], resources: dict[str, Any]) -> None:
    alarm = _find_alarm(resources, "IteratorAge", {"Ref": "ConsumerFunction"})
    assert alarm["Namespace"] == "AWS/Lambda"
    assert alarm["Statistic"] == "Maximum"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"]["Ref"] in template["Parameters"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_alarm_on_function_errors(resources: dict[str, Any], function: str) -> None:
    alarm = _find_alarm(resources, "Errors", {"Ref": function})
    assert alarm["Namespace"] == "AWS/Lambda"
    assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"]) == ("Sum", "GreaterThanThreshold", 0)


def test_alarm_on_a_failed_batch_left_unrecovered_in_the_queue(resources: dict[str, Any]) -> None:
    # The recover function empties the queue within minutes; a message an hour old means it fails,
    # with most of the stream's 24 hours still left to fix it.
    alarm = _find_alarm(resources, "ApproximateAgeOfOldestMessage", {"Fn::GetAtt": ["FailureQueue", "QueueName"]})
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert 0 < alarm["Threshold"] <= 3600


def test_alarm_on_permanent_gaps_matches_the_powertools_metric(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    env = _function(template, "RecoverFunction")["Environment"]["Variables"]
    alarm = _find_alarm(resources, "PermanentGaps", env["POWERTOOLS_SERVICE_NAME"])
    assert alarm["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
    assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"]) == ("Sum", "GreaterThanThreshold", 0)


def test_alarm_on_failed_store_writes_matches_the_powertools_metric(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    # A failed store write is returned as batchItemFailures, not raised: Errors never sees it.
    env = _function(template, "ConsumerFunction")["Environment"]["Variables"]
    alarm = _find_alarm(resources, "FailedBatches", env["POWERTOOLS_SERVICE_NAME"])
    assert alarm["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]


def test_alarm_on_quarantined_records_matches_the_powertools_metric(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    env = _function(template, "ConsumerFunction")["Environment"]["Variables"]
    alarm = _find_alarm(resources, "QuarantinedRecords", env["POWERTOOLS_SERVICE_NAME"])
    # Powertools Metrics publishes (as EMF) under POWERTOOLS_METRICS_NAMESPACE with one
    # dimension, "service" = POWERTOOLS_SERVICE_NAME: the alarm must name exactly that metric.
    assert alarm["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)


def test_alarm_on_a_stream_without_images_matches_the_powertools_metric(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    env = _function(template, "ConsumerFunction")["Environment"]["Variables"]
    alarm = _find_alarm(resources, "MisconfiguredStream", env["POWERTOOLS_SERVICE_NAME"])
    assert alarm["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]


def test_every_alarm_notifies_the_stack_topic(resources: dict[str, Any]) -> None:
    alarms = _alarms(resources)
    assert len(alarms) >= 6
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
    assert resources["AlarmTopic"]["Type"] == "AWS::SNS::Topic"


def test_alarm_email_subscription_is_optional(template: dict[str, Any], resources: dict[str, Any]) -> None:
    subscription = resources["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    assert template["Conditions"]["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}


# ------------------------------------------------------------------------------------------------
# Glue and Athena
# ------------------------------------------------------------------------------------------------


def test_glue_table_uses_partition_projection(resources: dict[str, Any]) -> None:
    table = resources["ChangesTable"]["Properties"]["TableInput"]
    params = table["Parameters"]
    assert params["projection.enabled"] == "true"
    assert params["projection.dt.type"] == "date"
    assert params["projection.dt.format"] == "yyyy-MM-dd"
    assert params["projection.dt.range"]["Fn::Sub"].endswith(",NOW")
    assert params["projection.hour.type"] == "integer"
    assert params["projection.hour.range"] == "0,23"
    assert params["projection.hour.digits"] == "2"
    # ${!dt} is how Fn::Sub writes a literal ${dt}: Athena fills it in, not CloudFormation.
    assert params["storage.location.template"] == {
        "Fn::Sub": "s3://${StoreBucket}/${StorePrefix}/tables/${TableName}/changes/dt=${!dt}/hour=${!hour}/"
    }
    assert [(k["Name"], k["Type"]) for k in table["PartitionKeys"]] == [("dt", "string"), ("hour", "string")]


def test_glue_table_reads_the_change_files_as_parquet(resources: dict[str, Any]) -> None:
    storage = resources["ChangesTable"]["Properties"]["TableInput"]["StorageDescriptor"]
    assert storage["Location"] == {"Fn::Sub": "s3://${StoreBucket}/${StorePrefix}/tables/${TableName}/changes/"}
    assert storage["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert storage["InputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    assert [(c["Name"], c["Type"]) for c in storage["Columns"]] == glue_columns()


def test_glue_columns_are_those_of_a_change_file_the_writers_produce(resources: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ops = [Op(0, {"pk": {"S": "a"}, "n": {"N": "1"}}, 1_700_000_000), Op(0, None, 1_700_000_001)]
    capture_batch(store, stream_records("orders", ops), decode_lambda_record, source="test")
    (path,) = store.list("tables/orders/changes/")
    written = pq.read_schema(tmp_path / path)
    storage = resources["ChangesTable"]["Properties"]["TableInput"]["StorageDescriptor"]
    assert [(c["Name"], c["Type"]) for c in storage["Columns"]] == glue_columns(written)


def test_glue_partition_keys_are_the_layouts(resources: dict[str, Any]) -> None:
    keys = resources["ChangesTable"]["Properties"]["TableInput"]["PartitionKeys"]
    assert [(k["Name"], k["Type"]) for k in keys] == [(name, "string") for name in partition_keys()]


def _projected_location(params: dict[str, Any], moment: datetime, bucket: str, prefix: str, table: str) -> str:
    """The S3 location Athena's partition projection computes for the partition holding ``moment``."""
    day_format = params["projection.dt.format"]
    for java, strftime in (("yyyy", "%Y"), ("MM", "%m"), ("dd", "%d")):
        day_format = day_format.replace(java, strftime)
    low, high = (int(bound) for bound in params["projection.hour.range"].split(","))
    assert low <= moment.hour <= high
    hour = str(moment.hour).zfill(int(params["projection.hour.digits"]))
    location: str = params["storage.location.template"]["Fn::Sub"]
    for name, value in (("${StoreBucket}", bucket), ("${StorePrefix}", prefix), ("${TableName}", table),
                        ("${!dt}", moment.strftime(day_format)), ("${!hour}", hour)):
        location = location.replace(name, value)
    return location


@pytest.mark.parametrize("moment", ["2024-02-29T00:00:00Z", "2024-12-31T23:59:59Z", "2025-01-01T09:30:00Z"])
def test_partition_projection_finds_the_partition_the_writers_use(resources: dict[str, Any], tmp_path: Path,
                                                                  moment: str) -> None:
    when = parse_time(moment)
    store = LocalStore(tmp_path)
    ops = [Op(0, {"pk": {"S": "a"}}, int(when.timestamp()))]
    capture_batch(store, stream_records("orders", ops), decode_lambda_record, source="test")
    (path,) = store.list("tables/orders/changes/")
    params = resources["ChangesTable"]["Properties"]["TableInput"]["Parameters"]
    expected = _projected_location(params, when, "bucket", "rewind", "orders")
    assert f"s3://bucket/rewind/{path.rsplit('/', 1)[0]}/" == expected


def test_athena_workgroup_enforces_encrypted_results_in_the_bucket(resources: dict[str, Any]) -> None:
    config = resources["AthenaWorkGroup"]["Properties"]["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    results = config["ResultConfiguration"]
    assert results["OutputLocation"] == {"Fn::Sub": "s3://${StoreBucket}/athena-results/"}
    choices = _if_branches(results["EncryptionConfiguration"])
    assert {c["EncryptionOption"] for c in choices} == {"SSE_KMS", "SSE_S3"}


def test_outputs_name_what_operators_need(template: dict[str, Any]) -> None:
    assert {
        "StoreBucketName",
        "StoreUri",
        "ConsumerFunctionName",
        "CompactorFunctionName",
        "RecoverFunctionName",
        "VerifierFunctionName",
        "DashboardName",
        "FailureQueueUrl",
        "AlarmTopicArn",
        "GlueDatabaseName",
        "AthenaWorkGroupName",
    } <= set(template["Outputs"])


# ------------------------------------------------------------------------------------------------
# moto
# ------------------------------------------------------------------------------------------------


# moto skips (with a warning) the resource types it does not model.
@pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")
@pytest.mark.parametrize("source", ["DynamoDBStreams", "KinesisDataStreams"])
def test_expanded_template_deploys_into_moto(template: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                             source: str) -> None:
    """The wiring (Ref, GetAtt, Sub, Conditions, Outputs) resolves and moto builds what it models.

    moto models the bucket, key, queue, topic, roles, log groups, functions, the event source
    mapping and the schedule rule; it skips (with a warning) bucket and queue policies, alarms,
    EventInvokeConfig, Glue and Athena (the dashboard, which names the alarms, is left out), which
    the template checks above cover instead.
    """
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)

    expanded = expand(template)
    with moto.mock_aws():
        dynamodb = boto3.client("dynamodb")
        table = dynamodb.create_table(
            TableName="orders",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )["TableDescription"]
        if source == "KinesisDataStreams":
            kinesis = boto3.client("kinesis")
            kinesis.create_stream(StreamName="orders-changes", ShardCount=1)
            source_arn = kinesis.describe_stream_summary(StreamName="orders-changes")[
                "StreamDescriptionSummary"]["StreamARN"]
            source_parameters = {"TableStreamArn": "", "KinesisStreamName": "orders-changes"}
        else:
            source_arn = table["LatestStreamArn"]
            source_parameters = {"TableStreamArn": source_arn}
        outputs = deploy(expanded, "rewind-orders", {"TableName": "orders", "StreamSource": source,
                                                     **source_parameters, "GlueDatabaseName": "rewind_orders"})

        bucket = outputs["StoreBucketName"]
        assert outputs["StoreUri"] == f"s3://{bucket}/rewind"
        # moto's CloudFormation applies only BucketEncryption and Tags to a bucket (versioning,
        # public access block etc. are checked on the template above).
        encryption = boto3.client("s3").get_bucket_encryption(Bucket=bucket)
        (rule,) = encryption["ServerSideEncryptionConfiguration"]["Rules"]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == outputs["StoreKeyArn"]

        awslambda = boto3.client("lambda")
        consumer = awslambda.get_function_configuration(FunctionName=outputs["ConsumerFunctionName"])
        assert consumer["Handler"] == "stream_consumer.handler.lambda_handler"
        assert consumer["Environment"]["Variables"]["REWIND_STORE"] == outputs["StoreUri"]
        mappings = awslambda.list_event_source_mappings(FunctionName=outputs["ConsumerFunctionName"])
        (mapping,) = mappings["EventSourceMappings"]
        assert mapping["EventSourceArn"] == source_arn
        assert mapping["StartingPosition"] == "TRIM_HORIZON"
        compactor = awslambda.get_function_configuration(FunctionName=outputs["CompactorFunctionName"])
        assert compactor["Handler"] == "compactor.handler.lambda_handler"
        assert compactor["Environment"]["Variables"]["REWIND_TABLE"] == "orders"
        verifier = awslambda.get_function_configuration(FunctionName=outputs["VerifierFunctionName"])
        assert verifier["Handler"] == "replayer.proving.scheduled.lambda_handler"
        assert str(verifier["Environment"]["Variables"]["REWIND_VERIFY_INTERVAL_MINUTES"]) == "60"
        recover = awslambda.get_function_configuration(FunctionName=outputs["RecoverFunctionName"])
        assert recover["Handler"] == "stream_consumer.recover.lambda_handler"
        (trigger,) = awslambda.list_event_source_mappings(FunctionName=outputs["RecoverFunctionName"])[
            "EventSourceMappings"]
        queue_arn = boto3.client("sqs").get_queue_attributes(
            QueueUrl=outputs["FailureQueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        assert trigger["EventSourceArn"] == queue_arn


def test_recover_may_tell_whose_stream_a_failed_batch_came_from(resources: dict[str, Any]) -> None:
    # stream_consumer.recover.stream_of_table calls both before it records a gap.
    describe = _statement(resources, "RecoverRole", "AttributeFailedBatchToTable")
    assert describe["Action"] == "dynamodb:DescribeTable"
    assert describe["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}"
                                               ":table/${TableName}"}
    assert _statement(resources, "RecoverRole", "ListTableStreams")["Action"] == "dynamodb:ListStreams"


def test_compactor_may_read_the_table_settings_of_its_own_table_only(resources: dict[str, Any]) -> None:
    statements = resources["CompactorRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    read = next(s for s in statements if isinstance(s, dict) and s.get("Sid") == "ReadSourceTableSettings")
    assert set(read["Action"]) == {"dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive",
                                   "dynamodb:DescribeContinuousBackups", "dynamodb:ListTagsOfResource",
                                   "dynamodb:GetResourcePolicy"}
    assert read["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}"
                                           ":table/${TableName}"}


def test_the_compactor_applies_the_stacks_retention_policy(template: dict[str, Any]) -> None:
    props = _function(template, "CompactorFunction")
    assert props["Environment"]["Variables"]["REWIND_RETENTION_POLICY"] == {"Ref": "RetentionPolicy"}
    assert template["Parameters"]["RetentionPolicy"]["Default"] == ""


@pytest.mark.parametrize("policy", ["", "changes=400d", "daily=35d,monthly=24m,changes=400d", "changes=1y",
                                    "daily=7,changes=1w"])
def test_the_retention_parameter_takes_what_expire_takes(template: dict[str, Any], policy: str) -> None:
    import re

    from compactor.policy import parse_policy

    assert re.fullmatch(template["Parameters"]["RetentionPolicy"]["AllowedPattern"], policy)
    if policy:
        parse_policy(policy)


@pytest.mark.parametrize("policy", ["forever", "changes=", "daily=35d;", "changes=5x", "daily=35d",
                                    "daily=35h,changes=1d", "changes=0d", "monthly=2d,changes=1y"])
def test_the_retention_parameter_refuses_at_deploy_what_expire_refuses(template: dict[str, Any], policy: str) -> None:
    import re

    assert not re.fullmatch(template["Parameters"]["RetentionPolicy"]["AllowedPattern"], policy)


# ------------------------------------------------------------------------------------------------
# Verifier: coverage proof, restore drill, sampled check
# ------------------------------------------------------------------------------------------------

VERIFIER_METRICS = ["CaptureLagSeconds", "UnreadShards", "Gaps", "QuarantinedRecords", "VerificationFailures"]


def _dashboard(resources: dict[str, Any]) -> dict[str, Any]:
    """The dashboard body as CloudWatch reads it, with each ${...} left as its own name."""
    (body,) = [r["Properties"]["DashboardBody"]["Fn::Sub"] for r in resources.values()
               if r["Type"] == "AWS::CloudWatch::Dashboard"]
    numbers = re.sub(r"\$\{CaptureLagAlarmSeconds\}", "7200", body)
    return json.loads(numbers)


def test_verifier_handler_is_replayer_scheduled_lambda_handler(template: dict[str, Any]) -> None:
    assert _function(template, "VerifierFunction")["Handler"] == "replayer.proving.scheduled.lambda_handler"


def test_verifier_runs_on_the_interval_it_is_told_hourly_by_default(template: dict[str, Any]) -> None:
    props = _function(template, "VerifierFunction")
    env = props["Environment"]["Variables"]
    assert env["REWIND_TABLE"] == {"Ref": "TableName"}
    assert env["REWIND_VERIFY_INTERVAL_MINUTES"] == {"Ref": "VerifyIntervalMinutes"}
    assert env["REWIND_VERIFY_CYCLE_DAYS"] == {"Ref": "VerifyFullCycleDays"}
    (schedule,) = [e["Properties"] for e in props["Events"].values() if e["Type"] == "Schedule"]
    assert schedule["Schedule"] == {"Fn::Sub": "rate(${VerifyIntervalMinutes} minutes)"}
    parameters = template["Parameters"]
    # rate(1 minutes) is not a valid expression: the interval is at least 5 minutes.
    interval = parameters["VerifyIntervalMinutes"]
    assert interval["Default"] == 60 and min(interval["AllowedValues"]) > 1
    assert parameters["VerifyFullCycleDays"]["MinValue"] >= 1
    assert props["EventInvokeConfig"] == {"MaximumRetryAttempts": 0}


def test_verifier_only_reads_the_store_prefix_and_samples_its_own_table(resources: dict[str, Any]) -> None:
    actions = _role_actions(resources, "VerifierRole")
    assert actions == {"logs:CreateLogStream", "logs:PutLogEvents", "s3:ListBucket", "s3:GetObject", "kms:Decrypt",
                       "dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:BatchGetItem"}
    sample = _statement(resources, "VerifierRole", "SampleLiveTable")
    assert sample["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${TableName}"}
    read = _statement(resources, "VerifierRole", "ReadStoreObjects")
    assert read["Resource"] == {"Fn::Sub": "${StoreBucket.Arn}/${StorePrefix}/*"}
    key = _statement(resources, "VerifierRole", "DecryptWithStoreKey")
    assert key["Resource"] == {"Fn::GetAtt": ["StoreKey", "Arn"]}


def test_verifier_metrics_need_no_cloudwatch_permission(template: dict[str, Any], resources: dict[str, Any]) -> None:
    # Powertools Metrics writes embedded metric format to the function's log: CloudWatch extracts
    # the metrics from the log group, so the role has no cloudwatch:* action to misuse.
    assert not {a for a in _role_actions(resources, "VerifierRole") if a.startswith("cloudwatch:")}
    import replayer.proving.scheduled as scheduled

    assert type(scheduled.metrics).__name__ == "Metrics"


@pytest.mark.parametrize("metric", VERIFIER_METRICS)
def test_each_verifier_metric_has_an_alarm_on_the_powertools_metric(
        template: dict[str, Any], resources: dict[str, Any], metric: str) -> None:
    env = _function(template, "VerifierFunction")["Environment"]["Variables"]
    alarm = _find_alarm(resources, metric, env["POWERTOOLS_SERVICE_NAME"])
    assert alarm["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    expected = {"Ref": "CaptureLagAlarmSeconds"} if metric == "CaptureLagSeconds" else 0
    assert alarm["Threshold"] == expected


@pytest.mark.parametrize("metric", VERIFIER_METRICS)
def test_each_verifier_metric_has_a_dashboard_line(resources: dict[str, Any], metric: str) -> None:
    lines = [line for widget in _dashboard(resources)["widgets"] if widget["type"] == "metric"
             for line in widget["properties"]["metrics"]]
    assert ["${MetricsNamespace}", metric, "service", "ddb-rewind-verifier-${TableName}"] in lines


def test_the_dashboard_shows_every_verifier_alarm(resources: dict[str, Any]) -> None:
    (widget,) = [w for w in _dashboard(resources)["widgets"] if w["type"] == "alarm"]
    shown = set(widget["properties"]["alarms"])
    verifier_alarms = {name for name, alarm in _alarms(resources).items()
                       if alarm["Dimensions"][0]["Value"] in ({"Fn::Sub": "ddb-rewind-verifier-${TableName}"},
                                                              {"Ref": "VerifierFunction"})}
    assert len(verifier_alarms) == len(VERIFIER_METRICS) + 1
    assert shown == {f"${{{name}.Arn}}" for name in verifier_alarms}


def test_the_verifier_metric_names_are_the_ones_the_handler_publishes() -> None:
    import inspect

    import replayer.proving.scheduled as scheduled

    source = inspect.getsource(scheduled.publish)
    for metric in VERIFIER_METRICS:
        assert f'name="{metric}"' in source


# ------------------------------------------------------------------------------------------------
# Compaction on Spark (EMR Serverless)
# ------------------------------------------------------------------------------------------------


def test_spark_compaction_is_off_unless_its_threshold_is_set(template: dict[str, Any],
                                                             resources: dict[str, Any]) -> None:
    assert template["Parameters"]["SparkCompactionThresholdBytes"]["Default"] == 0
    assert template["Conditions"]["UseSpark"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SparkCompactionThresholdBytes"},
                                                                                0]}]}
    assert resources["SparkApplication"]["Condition"] == resources["SparkJobRole"]["Condition"] == "UseSpark"
    assert resources["SparkApplication"]["Properties"]["Type"] == "SPARK"


def test_the_compactor_is_told_the_threshold_application_role_and_job_code(template: dict[str, Any]) -> None:
    env = _function(template, "CompactorFunction")["Environment"]["Variables"]
    assert env["REWIND_SPARK_THRESHOLD_BYTES"] == {"Ref": "SparkCompactionThresholdBytes"}
    assert env["REWIND_SPARK_APPLICATION_ID"] == {"Fn::If": ["UseSpark", {"Ref": "SparkApplication"}, ""]}
    assert env["REWIND_SPARK_ROLE_ARN"] == {"Fn::If": ["UseSpark", {"Fn::GetAtt": ["SparkJobRole", "Arn"]}, ""]}
    assert env["REWIND_SPARK_ENTRY_POINT"] == {"Fn::Sub": "s3://${StoreBucket}/ddb-rewind-spark/spark_snapshot.py"}
    assert "spark.ddbrewind.s3Scheme=s3" in env["REWIND_SPARK_SUBMIT_PARAMETERS"]["Fn::Sub"]


def test_the_compactor_may_only_start_and_follow_jobs_of_its_own_application(resources: dict[str, Any]) -> None:
    run = _statement(resources, "CompactorRole", "RunSparkSnapshotJobs")
    assert set(run["Action"]) == {"emr-serverless:StartJobRun", "emr-serverless:GetJobRun"}
    assert run["Resource"] == [{"Fn::GetAtt": ["SparkApplication", "Arn"]},
                               {"Fn::Sub": "${SparkApplication.Arn}/jobruns/*"}]
    passing = _statement(resources, "CompactorRole", "PassSparkJobRole")
    assert passing["Action"] == "iam:PassRole" and passing["Resource"] == {"Fn::GetAtt": ["SparkJobRole", "Arn"]}
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "emr-serverless.amazonaws.com"}}


def test_the_spark_job_reads_and_writes_the_store_prefix_reads_its_code_and_deletes_nothing(
    resources: dict[str, Any]
) -> None:
    role = resources["SparkJobRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "emr-serverless.amazonaws.com"}
    statements = [s for _, s in _policy_statements(role["Policies"], "SparkJobRole")]
    actions = {action for s in statements if s.get("Effect") == "Allow"
               for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                       "kms:GenerateDataKey", "kms:Decrypt"}
    write = _statement(resources, "SparkJobRole", "ReadWriteStoreObjects")
    assert write["Resource"] == {"Fn::Sub": "${StoreBucket.Arn}/${StorePrefix}/*"}
    assert _statement(resources, "SparkJobRole", "ReadJobCode")["Resource"] == \
        {"Fn::Sub": "${StoreBucket.Arn}/ddb-rewind-spark/*"}


def test_every_verify_interval_gives_its_alarms_a_period_that_holds_a_run(template: dict[str, Any]) -> None:
    # An hour's period with runs three hours apart left two hours without data, read as OK: a gap
    # alarm went OK between runs, and the two-in-a-row shard alarm never fired.
    periods = template["Mappings"]["VerifierAlarmPeriod"]
    for minutes in template["Parameters"]["VerifyIntervalMinutes"]["AllowedValues"]:
        seconds = periods[str(minutes)]["Seconds"]
        assert seconds >= max(3600, minutes * 60) and seconds % 60 == 0
        assert 2 * seconds <= 86400  # CloudWatch's bound on evaluation periods times period
    verifier_alarms = [name for name, resource in template["Resources"].items()
                       if resource["Type"] == "AWS::CloudWatch::Alarm"
                       and "verifier" in json.dumps(resource["Properties"]).lower()]
    assert verifier_alarms and all(
        template["Resources"][name]["Properties"]["Period"]
        == {"Fn::FindInMap": ["VerifierAlarmPeriod", {"Ref": "VerifyIntervalMinutes"}, "Seconds"]}
        for name in verifier_alarms)
