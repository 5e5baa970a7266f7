"""infra/template.yaml as CloudFormation runs it: expanded by the official SAM translator, offline.

``expand`` is what ``sam deploy`` asks CloudFormation to do with ``Transform:
AWS::Serverless-2016-10-31``, done here by ``aws-sam-translator`` (the library the service runs) with
no network: the only thing it would fetch, the map of AWS managed policy names to ARNs, is given as an
empty map (the template attaches no managed policy; a function that named one would fail to expand).
``deploy`` creates the expanded stack in moto's CloudFormation, which resolves every Ref, GetAtt, Sub
and condition, so a test reads each function's handler, environment and triggers as deployed.
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "infra" / "template.yaml"
# What `sam package` puts in CodeUri: the uploaded artifact. The translator accepts only an S3 URI.
ARTIFACT_BUCKET = "ddb-rewind-artifacts"
ARTIFACT_KEY = "artifact.zip"
REGION = "us-east-1"
ACCOUNT = "123456789012"


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags into their long JSON form."""


def _construct_intrinsic(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template() -> dict[str, Any]:
    """The template as written (SAM), short tags in their long form."""
    with TEMPLATE_PATH.open(encoding="utf-8") as fh:
        loaded: dict[str, Any] = yaml.load(fh, Loader=_CfnLoader)  # a SafeLoader subclass: no arbitrary objects
    return loaded


class _NoManagedPolicies:
    """The translator's managed-policy loader, offline: the template names no managed policy."""

    def load(self) -> dict[str, str]:
        return {}


def expand(template: dict[str, Any] | None = None) -> dict[str, Any]:
    """Plain CloudFormation, as the SAM transform makes it (parameters stay references)."""
    from samtranslator.translator.transform import transform

    sam = copy.deepcopy(template if template is not None else load_template())
    for resource in sam["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://{ARTIFACT_BUCKET}/{ARTIFACT_KEY}"
    pseudo = {"AWS::Region": REGION, "AWS::Partition": "aws", "AWS::AccountId": ACCOUNT}
    expanded: dict[str, Any] = transform(sam, pseudo, _NoManagedPolicies())
    return expanded


def deploy(expanded: dict[str, Any], stack: str, parameters: dict[str, str]) -> dict[str, str]:
    """Create the stack in moto (inside ``mock_aws``); its outputs.

    moto builds what it models (bucket, key, queue, topic, roles and their policies, log groups,
    functions, event source mappings, schedule rules) and skips, with a warning, what it does not
    (alarms, the dashboard, policies of buckets and queues, Glue, Athena): the dashboard names the
    alarms' ARNs, which moto cannot give, so it is left out here and read from the template instead.
    """
    import boto3

    body = copy.deepcopy(expanded)
    body["Resources"].pop("Dashboard", None)
    body.get("Outputs", {}).pop("DashboardName", None)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=ARTIFACT_BUCKET)
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("placeholder.py", "")  # the code runs in-process; moto only stores the package
    s3.put_object(Bucket=ARTIFACT_BUCKET, Key=ARTIFACT_KEY, Body=code.getvalue())
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.create_stack(
        StackName=stack, TemplateBody=json.dumps(body), Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
    )
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def resolve(node: Any, values: dict[str, str]) -> Any:
    """``node`` with Ref and Sub of the names in ``values`` (parameters, pseudo parameters) replaced.

    For the resources moto does not model (alarms, the dashboard): what they name is all parameters.
    Anything else left unresolved raises, so a new kind of reference is noticed.
    """
    if isinstance(node, list):
        return [resolve(value, values) for value in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"}:
        return values[node["Ref"]]
    if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
        text = node["Fn::Sub"]
        for name, value in values.items():
            text = text.replace("${" + name + "}", value)
        assert "${" not in text, f"cannot resolve {text!r}"
        return text
    return {key: resolve(value, values) for key, value in node.items()}
