"""The deployed stack run in-process: each function invoked as Lambda would, against moto, on a simulated clock.

``Simulator`` deploys infra/template.yaml (expanded offline by the SAM translator, tests/sam.py) into
moto's CloudFormation, then reads back, as deployed, each function's handler, environment, role
policy and triggers: the stream mapping (batch size, tumbling window, retries, on-failure queue),
the SQS mapping of the recover function, and the EventBridge schedules with their rate expressions.
It plays the Lambda service for them:

- the stream mapping reads the table's real moto stream (GetShardIterator, GetRecords) with the
  consumer's role, cuts batches of at most BatchSize records within one tumbling window, invokes the
  consumer with the event shape Lambda sends (epoch seconds, base64 binaries, ``shardId``, ``window``,
  ``state``), retries a batch reported failed up to MaximumRetryAttempts, then sends Lambda's on-failure
  record (``DDBStreamBatchInfo``) to the queue with the consumer's role and moves on;
- the SQS mapping receives each message (BatchSize 1) with the recover function's role, invokes it with
  an SQS event, and deletes the messages it did not report failed;
- every schedule fires at its rate with EventBridge's "Scheduled Event", ``time`` the moment it fired.

Each function runs under exactly its deployed environment (values as the strings Lambda gives) plus
what the Lambda runtime adds, with its handler module loaded fresh under that environment (a cold
start: module-level settings such as the Powertools service name are read then). The clock is
time-machine's: moto's stream stamps, S3's times and every ``time.time``/``datetime.now`` read the
simulated moment; a handler's sleep advances it instead of waiting.

Every botocore call a function makes (and every call the service makes for it with its role) is
recorded as an IAM action and resource, and checked against the role's policy as moto deployed it
(``IamCheck``). Metrics are read from the embedded-metric-format lines the handlers print.

``python -m tests.simulation --days 30`` runs a month and prints a summary (see ``main``).
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import contextvars
import copy
import fnmatch
import importlib.util
import io
import json
import os
import re
import sys
import time
import types
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.moto_http import MotoHttpServer
from tests.sam import ACCOUNT, REGION, deploy, expand

STACK = "rewind-orders"
TABLE = "orders"
MINUTE = 60
HOUR = 3600
DAY = 86400
# The Lambda runtime's own variables (besides the function's): region, credentials, name, memory.
RUNTIME_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "AWS_SESSION_TOKEN", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                     "AWS_LAMBDA_FUNCTION_VERSION", "AWS_EXECUTION_ENV", "LAMBDA_TASK_ROOT", "TZ",
                     "AWS_ACCOUNT_ID_ENDPOINT_MODE", "AWS_ENDPOINT_URL")


def rate_seconds(expression: str) -> int:
    """Seconds between runs of an EventBridge ``rate(N unit)`` expression."""
    found = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression.strip())
    if found is None:
        raise ValueError(f"not a rate expression the simulator runs: {expression!r}")
    unit = {"minute": MINUTE, "hour": HOUR, "day": DAY}[found.group(2).rstrip("s")]
    return int(found.group(1)) * unit


# ------------------------------------------------------------------------------------------------
# What the stack deployed
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    rule: str
    rule_arn: str
    expression: str
    enabled: bool

    @property
    def period_s(self) -> int:
        return rate_seconds(self.expression)


@dataclass(frozen=True)
class Function:
    """One deployed function, as the stack resolved it."""

    logical_id: str
    name: str
    arn: str
    handler: str
    environment: dict[str, str]
    memory: int
    role_arn: str
    statements: tuple[dict[str, Any], ...]
    log_group: str
    schedules: tuple[Schedule, ...] = ()


@dataclass(frozen=True)
class StreamMapping:
    function: str  # logical id
    source_arn: str
    batch_size: int
    window_s: int | None  # TumblingWindowInSeconds
    max_retries: int
    on_failure: str | None  # queue ARN


@dataclass(frozen=True)
class QueueMapping:
    function: str
    queue_arn: str
    batch_size: int


def _numbers_as_strings(expanded: dict[str, Any]) -> dict[str, Any]:
    """The template with Number parameters typed String, for moto only.

    CloudFormation hands every parameter to intrinsic functions as a string (Number only validates
    it): ``Fn::Equals [!Ref ParallelizationFactor, "1"]`` is true. moto converts Number parameters to
    integers first, so that condition is false there and the stack it builds has no tumbling window and
    a disabled probe schedule; typed String, moto resolves every condition as CloudFormation does.
    """
    body = copy.deepcopy(expanded)
    for parameter in body["Parameters"].values():
        if parameter.get("Type") == "Number":
            parameter["Type"] = "String"
            for bound in ("MinValue", "MaxValue"):
                parameter.pop(bound, None)
    return body


def _resolve_if(template: dict[str, Any], node: Any, parameters: dict[str, str]) -> Any:
    """A template value with parameters and Fn::If decided as CloudFormation does (strings compared)."""
    if isinstance(node, list):
        return [_resolve_if(template, value, parameters) for value in node]
    if not isinstance(node, dict):
        return node
    if "Fn::If" in node:
        condition, yes, no = node["Fn::If"]
        chosen = yes if _condition(template, template["Conditions"][condition], parameters) else no
        return _resolve_if(template, chosen, parameters)
    if set(node) == {"Ref"} and node["Ref"] in template["Parameters"]:
        name = node["Ref"]
        return str(parameters.get(name, template["Parameters"][name].get("Default", "")))
    if set(node) == {"Fn::FindInMap"}:
        mapping, key, field = (_resolve_if(template, value, parameters) for value in node["Fn::FindInMap"])
        return template["Mappings"][mapping][str(key)][field]
    return {key: _resolve_if(template, value, parameters) for key, value in node.items()}


def _condition(template: dict[str, Any], node: Any, parameters: dict[str, str]) -> bool:
    if "Condition" in node:
        return _condition(template, template["Conditions"][node["Condition"]], parameters)
    ((function, arguments),) = node.items()
    if function == "Fn::Equals":
        left, right = (_resolve_if(template, argument, parameters) for argument in arguments)
        return str(left) == str(right)
    if function == "Fn::Not":
        return not _condition(template, arguments[0], parameters)
    values = [_condition(template, argument, parameters) for argument in arguments]
    return all(values) if function == "Fn::And" else any(values)


def _resolve(template: dict[str, Any], node: Any, parameters: dict[str, str]) -> Any:
    """``_resolve_if`` plus ``Fn::Sub`` of parameters (what the stack's alarm properties use)."""
    node = _resolve_if(template, node, parameters)
    if isinstance(node, dict) and set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
        def value(found: re.Match[str]) -> str:
            name = found.group(1)
            return str(parameters.get(name, template["Parameters"].get(name, {}).get("Default", found.group(0))))

        return re.sub(r"\$\{([A-Za-z0-9:]+)\}", value, node["Fn::Sub"])
    if isinstance(node, dict):
        return {key: _resolve(template, value, parameters) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(template, value, parameters) for value in node]
    return node


@dataclass(frozen=True)
class Alarm:
    """One CloudWatch alarm of the stack, its properties decided for the deployed parameters."""

    logical_id: str
    namespace: str
    metric: str
    dimensions: tuple[tuple[str, str], ...]
    statistic: str
    period_s: int
    evaluation_periods: int
    datapoints_to_alarm: int
    threshold: float
    comparison: str

    def breaches(self, value: float) -> bool:
        return {"GreaterThanThreshold": value > self.threshold,
                "GreaterThanOrEqualToThreshold": value >= self.threshold,
                "LessThanThreshold": value < self.threshold,
                "LessThanOrEqualToThreshold": value <= self.threshold}[self.comparison]


def stack_alarms(template: dict[str, Any], parameters: dict[str, str]) -> list[Alarm]:
    """Every AWS::CloudWatch::Alarm of the template, as CloudFormation would create it."""
    alarms = []
    for logical, resource in template["Resources"].items():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        spec = _resolve(template, resource["Properties"], parameters)
        # A dimension naming a resource of the stack (the function's name) is kept as its logical id.
        dimensions = tuple((d["Name"], d["Value"]["Ref"] if isinstance(d["Value"], dict) and "Ref" in d["Value"]
                            else d["Value"] if isinstance(d["Value"], str) else json.dumps(d["Value"]))
                           for d in spec.get("Dimensions", []))
        evaluation = int(spec["EvaluationPeriods"])
        alarms.append(Alarm(logical, spec["Namespace"], spec["MetricName"], dimensions, spec["Statistic"],
                            int(spec["Period"]), evaluation, int(spec.get("DatapointsToAlarm", evaluation)),
                            float(spec["Threshold"]), spec["ComparisonOperator"]))
    return alarms


def alarm_transitions(alarm: Alarm, datapoints: list[tuple[int, float]], start_s: int,
                      end_s: int) -> list[tuple[int, str]]:
    """(period end, new state) each time the alarm changes state, evaluated at every period's end as
    CloudWatch does: ALARM when at least DatapointsToAlarm of the last EvaluationPeriods periods breach;
    a period without data does not breach (TreatMissingData notBreaching, as every alarm here says)."""
    by_period: dict[int, list[float]] = defaultdict(list)
    for second, value in datapoints:
        by_period[second // alarm.period_s].append(value)
    breached: list[bool] = []
    state, transitions = "OK", []
    for period in range(start_s // alarm.period_s, end_s // alarm.period_s + 1):
        values = by_period.get(period)
        if values:
            statistic = {"Maximum": max, "Minimum": min, "Sum": sum,
                         "Average": lambda v: sum(v) / len(v), "SampleCount": len}[alarm.statistic](values)
            breached.append(alarm.breaches(float(statistic)))
        else:
            breached.append(False)
        now = "ALARM" if sum(breached[-alarm.evaluation_periods:]) >= alarm.datapoints_to_alarm else "OK"
        if now != state:
            transitions.append(((period + 1) * alarm.period_s, now))
            state = now
    return transitions


# ------------------------------------------------------------------------------------------------
# Recording the AWS calls of each function, as IAM actions
# ------------------------------------------------------------------------------------------------

_principal: contextvars.ContextVar[str | None] = contextvars.ContextVar("principal", default=None)

# IAM's name for an API operation where it differs from "<prefix>:<Operation>".
_S3_ACTIONS = {
    "HeadBucket": "s3:ListBucket", "ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket",
    "HeadObject": "s3:GetObject", "GetObject": "s3:GetObject", "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject", "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObject": "s3:DeleteObject", "DeleteObjects": "s3:DeleteObject",
    "ListObjectVersions": "s3:ListBucketVersions", "CopyObject": "s3:PutObject",
}
_PREFIX = {"dynamodbstreams": "dynamodb"}


@dataclass(frozen=True)
class Call:
    """One authorised request: who (function logical id), the IAM action, its resource and s3:prefix."""

    principal: str
    action: str
    resource: str
    prefix: str | None = None
    by: str = "function"  # "function", or "service" (Lambda, S3 or the runtime acting with the role)


@dataclass
class Recorder:
    """Every botocore call made while a function's principal is current, as IAM requests."""

    calls: list[Call] = field(default_factory=list)
    stream_of_iterator: dict[str, str] = field(default_factory=dict)
    bucket_keys: dict[str, str] = field(default_factory=dict)  # bucket -> KMS key ARN of its default SSE-KMS
    faults: list[Callable[[str, str, dict[str, Any]], Exception | None]] = field(default_factory=list)

    def requests(self, service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str, str | None]]:
        """(action, resource, s3 prefix) for each authorisation the call needs."""
        arn = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:"
        if service == "s3":
            bucket, key = params.get("Bucket", ""), params.get("Key")
            action = _S3_ACTIONS.get(operation, f"s3:{operation}")
            if "VersionId" in params and action in ("s3:GetObject", "s3:DeleteObject"):
                action += "Version"
            found: list[tuple[str, str, str | None]] = []
            if key is None and operation != "DeleteObjects":
                found.append((action, f"arn:aws:s3:::{bucket}", params.get("Prefix")))
            elif operation == "DeleteObjects":
                found += [(action, f"arn:aws:s3:::{bucket}/{o['Key']}", None)
                          for o in params.get("Delete", {}).get("Objects", [])]
            else:
                found.append((action, f"arn:aws:s3:::{bucket}/{key}", None))
            if operation == "CopyObject":
                source = params["CopySource"]
                text = source if isinstance(source, str) else f"{source['Bucket']}/{source['Key']}"
                found.append(("s3:GetObject", f"arn:aws:s3:::{text.lstrip('/')}", None))
            key_arn = self.bucket_keys.get(bucket)
            if key_arn:
                # S3 uses the bucket's KMS key with the caller's own permissions (SSE-KMS).
                if operation in ("PutObject", "CreateMultipartUpload", "UploadPart", "CopyObject"):
                    found.append(("kms:GenerateDataKey", key_arn, None))
                if operation in ("GetObject", "CopyObject", "CompleteMultipartUpload"):
                    found.append(("kms:Decrypt", key_arn, None))
            return found
        prefix = _PREFIX.get(service, service)
        action = f"{prefix}:{operation}"
        if prefix == "dynamodb":
            if "StreamArn" in params:
                return [(action, params["StreamArn"], None)]
            if "ShardIterator" in params:
                return [(action, self.stream_of_iterator.get(params["ShardIterator"], "?"), None)]
            if "TableName" in params:
                return [(action, arn.format("dynamodb") + f"table/{params['TableName']}", None)]
            if "ResourceArn" in params:
                return [(action, params["ResourceArn"], None)]
            if "RequestItems" in params:
                return [(action, arn.format("dynamodb") + f"table/{name}", None) for name in params["RequestItems"]]
            return [(action, "*", None)]
        if prefix == "sqs" and "QueueUrl" in params:
            return [(action, arn.format("sqs") + params["QueueUrl"].rsplit("/", 1)[-1], None)]
        return [(action, "*", None)]

    def record(self, principal: str, service: str, operation: str, params: dict[str, Any], by: str) -> None:
        for action, resource, prefix in self.requests(service, operation, params):
            self.calls.append(Call(principal, action, resource, prefix, by))

    def note_iterators(self, params: dict[str, Any], response: Any) -> None:
        if not isinstance(response, dict):
            return
        stream = params.get("StreamArn") or self.stream_of_iterator.get(params.get("ShardIterator", ""))
        for name in ("ShardIterator", "NextShardIterator"):
            if stream and isinstance(response.get(name), str):
                self.stream_of_iterator[response[name]] = stream

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Record (and fault) every client's calls made under a principal, whatever session made the client."""
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        recorder = self

        def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
            principal = _principal.get()
            service = client.meta.service_model.service_name
            if principal is not None:
                who, by = principal.split("|", 1) if "|" in principal else (principal, "function")
                recorder.record(who, service, operation, params, by)
                for fault in recorder.faults:
                    failure = fault(who, f"{service}:{operation}", params)
                    if failure is not None:
                        raise failure
            response = original(client, operation, params)
            if service == "dynamodbstreams":
                recorder.note_iterators(params, response)
            return response

        BaseClient._make_api_call = make_api_call  # type: ignore[method-assign]
        try:
            yield
        finally:
            BaseClient._make_api_call = original  # type: ignore[method-assign]


# The principal of the invocation running now, for requests the moto server thread receives.
_ACTIVE: list[str | None] = [None]


@contextlib.contextmanager
def acting_as(principal: str, by: str = "function") -> Iterator[None]:
    token = _principal.set(principal if by == "function" else f"{principal}|{by}")
    saved = _ACTIVE[0]
    _ACTIVE[0] = _principal.get()
    try:
        yield
    finally:
        _principal.reset(token)
        _ACTIVE[0] = saved


def _recording_app(app: Any, recorder: Recorder) -> Any:
    """The moto server's WSGI app, recording the S3 requests that do not come through botocore
    (pyarrow's and DuckDB's own S3 clients) under the invocation's principal."""
    from urllib.parse import parse_qs, unquote

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        principal = _ACTIVE[0]
        agent = str(environ.get("HTTP_USER_AGENT", ""))
        if principal is not None and "Botocore" not in agent and "Boto3" not in agent:
            who, by = principal.split("|", 1) if "|" in principal else (principal, "function")
            path = unquote(str(environ.get("PATH_INFO", ""))).lstrip("/")
            bucket, _, key = path.partition("/")
            query = parse_qs(str(environ.get("QUERY_STRING", "")))
            method = environ.get("REQUEST_METHOD")
            operation = {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject",
                         "DELETE": "DeleteObject"}.get(str(method), str(method))
            params: dict[str, Any] = {"Bucket": bucket}
            if key:
                params["Key"] = key
            elif method in ("GET", "HEAD"):
                operation = "ListObjectsV2" if method == "GET" else "HeadBucket"
                if "prefix" in query:
                    params["Prefix"] = query["prefix"][0]
            recorder.record(who, "s3", operation, params, by)
        return app(environ, start_response)

    return wrapped


def _matches(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value.lower(), pattern.lower()) if "*" in pattern or "?" in pattern \
        else pattern.lower() == value.lower()


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allowing_statement(statements: tuple[dict[str, Any], ...], call: Call) -> str | None:
    """The Sid of the first Allow statement that grants ``call`` (action, resource, s3:prefix), else None."""
    for statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        if not any(_matches(str(a), call.action) for a in _as_list(statement["Action"])):
            continue
        resources = [str(r) for r in _as_list(statement["Resource"])]
        # A log group's ARN as moto gives it has no ":*": the group itself stands for its streams.
        if not any(_matches(r, call.resource) or _matches(r + ":*", call.resource) for r in resources):
            continue
        condition = statement.get("Condition") or {}
        like = condition.get("StringLikeIfExists", {}).get("s3:prefix")
        if like is not None and call.prefix is not None and \
                not any(_matches(str(p), call.prefix) for p in _as_list(like)):
            continue
        unknown = set(condition) - {"StringLikeIfExists"}
        if unknown:
            raise AssertionError(f"the IAM check does not evaluate condition {sorted(unknown)}")
        return str(statement.get("Sid", "?"))
    return None


@dataclass(frozen=True)
class IamFinding:
    function: str
    denied: tuple[Call, ...]  # calls no statement allows
    unused: tuple[str, ...]  # actions the role allows that no call needed
    used: tuple[str, ...]


def iam_check(functions: dict[str, Function], calls: list[Call]) -> dict[str, IamFinding]:
    findings = {}
    for logical, function in functions.items():
        mine = [c for c in calls if c.principal == logical]
        denied = tuple(sorted({c for c in mine if allowing_statement(function.statements, c) is None},
                              key=lambda c: (c.action, c.resource)))
        used = {c.action for c in mine}
        allowed = {str(a) for s in function.statements if s.get("Effect") == "Allow" for a in _as_list(s["Action"])}
        findings[logical] = IamFinding(logical, denied, tuple(sorted(allowed - used)), tuple(sorted(used)))
    return findings


# ------------------------------------------------------------------------------------------------
# Events as Lambda and EventBridge send them
# ------------------------------------------------------------------------------------------------


def _lambda_value(value: Any) -> Any:
    """A GetRecords attribute value (boto3 gives binaries as bytes) as a Lambda event carries it (base64)."""
    if isinstance(value, dict):
        return {k: _lambda_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lambda_value(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    return value


def lambda_stream_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record as Lambda's DynamoDB event carries it (epoch seconds, base64 binaries)."""
    body = dict(_lambda_value(record["dynamodb"]))
    created = record["dynamodb"]["ApproximateCreationDateTime"]
    body["ApproximateCreationDateTime"] = float(int(created.timestamp()))
    return {"eventID": record["eventID"], "eventName": record["eventName"], "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": REGION, "dynamodb": body, "eventSourceARN": stream_arn,
            **({"userIdentity": record["userIdentity"]} if "userIdentity" in record else {})}


def _iso(second: float) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduled_event(schedule: Schedule, second: int) -> dict[str, Any]:
    """EventBridge's "Scheduled Event", ``time`` the moment the rule fired."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": ACCOUNT, "time": _iso(second), "region": REGION, "resources": [schedule.rule_arn],
            "detail": {}}


class _Context:
    """The parts of Lambda's context object a handler may read."""

    def __init__(self, function: Function, remaining_ms: int) -> None:
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function.arn
        self.memory_limit_in_mb = function.memory
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = function.log_group
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self._remaining = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self._remaining


# ------------------------------------------------------------------------------------------------
# The simulator
# ------------------------------------------------------------------------------------------------


class _Stdout(io.TextIOBase):
    """sys.stdout while simulating: what handlers print goes to the current invocation's buffer."""

    def __init__(self) -> None:
        self.buffer_: io.StringIO = io.StringIO()

    def write(self, text: str) -> int:
        return self.buffer_.write(text)

    def take(self) -> str:
        text, self.buffer_ = self.buffer_.getvalue(), io.StringIO()
        return text


@dataclass(frozen=True)
class Invocation:
    function: str
    at_s: int
    trigger: str  # "stream", "queue", or the schedule's rule
    result: Any
    error: str | None
    metrics: dict[str, Any]  # name -> value of the EMF documents it printed (summed over documents)
    service: str | None  # the "service" dimension of its metrics
    cpu_s: float = 0.0  # process CPU the invocation took (the moto server's included)


class Simulator:
    """The stack deployed in moto and its functions run in-process on a simulated clock (use as a context)."""

    def __init__(self, start: datetime, parameters: dict[str, str] | None = None) -> None:
        self.start = start
        self.user_parameters = dict(parameters or {})
        self.recorder = Recorder()
        self.invocations: list[Invocation] = []
        self.functions: dict[str, Function] = {}
        self._modules: dict[str, types.ModuleType] = {}
        self._stack = contextlib.ExitStack()
        self.stdout = _Stdout()
        self.shard_positions: dict[str, str] = {}  # shard -> last sequence delivered (or given up on)
        self.pending: list[dict[str, Any]] = []  # stream records read, not yet delivered
        self.trimmed: set[str] = set()  # sequence numbers the stream no longer holds (injected)
        self.failing_batches = 0
        self.last_given_up: list[dict[str, Any]] = []
        # Called with a batch's records when the mapping gives up on it (before its on-failure record is sent).
        self.on_give_up: Callable[[list[dict[str, Any]]], None] | None = None
        # Injected: changes the next batch's event records before it is delivered (then cleared).
        self.mangle_next_batch: Callable[[list[dict[str, Any]]], None] | None = None
        # Injected: the stream mapping delivers nothing before this second (a consumer outage).
        self.delivery_paused_until = 0

    def datapoints(self, alarm: Alarm) -> list[tuple[int, float]] | None:
        """The datapoints the run published to ``alarm``'s metric, or None for a metric it cannot see
        (one the Lambda or SQS service computes: IteratorAge, the queue's message age)."""
        dimensions = dict(alarm.dimensions)
        if alarm.namespace == "AWS/Lambda" and alarm.metric == "Errors":
            logical = dimensions["FunctionName"]
            assert logical in self.functions, logical
            return [(i.at_s, 1.0 if i.error else 0.0) for i in self.invocations if i.function == logical]
        if alarm.namespace.startswith("AWS/"):
            return None
        return [(i.at_s, float(i.metrics[alarm.metric])) for i in self.invocations
                if alarm.metric in i.metrics and i.service == dimensions.get("service")]

    # --- setup ------------------------------------------------------------------------------

    def __enter__(self) -> Simulator:
        import boto3
        import moto
        import time_machine

        for name, value in {"AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled", "AWS_DEFAULT_REGION": REGION,
                            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
            self._stack.enter_context(_env_var(name, value))
        self.traveller = self._stack.enter_context(time_machine.travel(self.start, tick=False))
        # A moto server in this process, reached over HTTP: the store's Parquet readers (pyarrow, DuckDB)
        # talk to S3 themselves, not through botocore, and must reach the same buckets.
        server = MotoHttpServer()
        server.start()
        self._stack.callback(server.stop)
        assert server._server is not None
        server._server.app = _recording_app(server._server.app, self.recorder)  # type: ignore[attr-defined]
        host, port = server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self._stack.enter_context(_env_var("AWS_ENDPOINT_URL", self.endpoint))
        del moto
        self._stack.enter_context(self.recorder.installed())
        for module in ("stream_consumer.handler", "stream_consumer.recover", "stream_consumer.probe",
                       "compactor.handler", "replayer.proving.scheduled", "replayer.proving.live_sample"):
            importlib.import_module(module)  # so that every default argument holding time.sleep is seen
        self._stack.enter_context(_simulated_sleep(self.advance))
        self._stack.enter_context(self._trimming())
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.streams = boto3.client("dynamodbstreams", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.s3 = boto3.client("s3", region_name=REGION)
        self.stream_arn = self.dynamodb.create_table(
            TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )["TableDescription"]["LatestStreamArn"]
        self.parameters = {"TableName": TABLE, "TableStreamArn": self.stream_arn,
                           "GlueDatabaseName": "rewind_orders", **self.user_parameters}
        self.expanded = expand()
        self.outputs = deploy(_numbers_as_strings(self.expanded), STACK, self.parameters)
        self._read_stack()
        self._unhook_moto_mappings()
        self.now_s = int(self.start.timestamp())
        self._through = self.now_s
        self._real_stdout = sys.stdout
        sys.stdout = self.stdout
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.stdout = self._real_stdout
        self._stack.close()

    def _read_stack(self) -> None:
        import boto3

        cfn = boto3.client("cloudformation", region_name=REGION)
        physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                    for r in cfn.describe_stack_resources(StackName=STACK)["StackResources"]
                    if "LogicalResourceId" in r and "PhysicalResourceId" in r}
        lam = boto3.client("lambda", region_name=REGION)
        iam = boto3.client("iam", region_name=REGION)
        events = boto3.client("events", region_name=REGION)
        rules: dict[str, list[Schedule]] = defaultdict(list)
        rule_ids = {name: logical for logical, name in physical.items()}
        for rule in events.list_rules()["Rules"]:
            # moto does not decide this rule's State condition as CloudFormation does (a condition
            # naming another condition): decided here from the template.
            spec = self.expanded["Resources"][rule_ids[rule["Name"]]]["Properties"]
            state = _resolve_if(self.expanded, spec.get("State", "ENABLED"), self.parameters)
            for target in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]:
                rules[target["Arn"]].append(Schedule(rule["Name"], rule["Arn"], rule["ScheduleExpression"],
                                                     state == "ENABLED"))
        resources = self.expanded["Resources"]
        for logical, resource in resources.items():
            if resource["Type"] != "AWS::Lambda::Function":
                continue
            config = lam.get_function_configuration(FunctionName=physical[logical])
            role = config["Role"].rsplit("/", 1)[-1]
            statements: list[dict[str, Any]] = []
            for policy in iam.list_role_policies(RoleName=role)["PolicyNames"]:
                document = iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
                if isinstance(document, str):
                    # moto keeps a policy a stack gave it as Python's text of the dict, not JSON.
                    document = ast.literal_eval(document)
                statements += [s for s in document["Statement"] if s]  # moto leaves AWS::NoValue as None
            group_ref = resource["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
            self.functions[logical] = Function(
                logical_id=logical, name=config["FunctionName"], arn=config["FunctionArn"],
                handler=config["Handler"],
                # Lambda hands every variable to the function as a string.
                environment={k: str(v) for k, v in config.get("Environment", {}).get("Variables", {}).items()},
                memory=int(config.get("MemorySize", 128)), role_arn=config["Role"], statements=tuple(statements),
                log_group=physical[group_ref], schedules=tuple(rules.get(config["FunctionArn"], ())),
            )
        by_arn = {f.arn: f.logical_id for f in self.functions.values()}
        self.stream_mapping: StreamMapping | None = None
        self.queue_mappings: list[QueueMapping] = []
        mapping_resources = {logical: r for logical, r in resources.items()
                             if r["Type"] == "AWS::Lambda::EventSourceMapping"}
        for mapping in lam.list_event_source_mappings()["EventSourceMappings"]:
            function = by_arn[mapping["FunctionArn"]]
            if ":sqs:" in mapping["EventSourceArn"]:
                self.queue_mappings.append(QueueMapping(function, mapping["EventSourceArn"], mapping["BatchSize"]))
                continue
            # moto keeps no TumblingWindowInSeconds from a stack: read it from the template, decided as
            # CloudFormation decides it for these parameters.
            (spec,) = [r["Properties"] for r in mapping_resources.values()
                       if r["Properties"]["FunctionName"] == {"Ref": function}]
            window = _resolve_if(self.expanded, spec.get("TumblingWindowInSeconds"), self.parameters)
            on_failure = (mapping.get("DestinationConfig") or {}).get("OnFailure", {}).get("Destination")
            self.stream_mapping = StreamMapping(
                function, mapping["EventSourceArn"], int(mapping["BatchSize"]),
                int(window) if window not in (None, {"Ref": "AWS::NoValue"}) else None,
                int(mapping["MaximumRetryAttempts"]), on_failure)
        bucket = self.outputs["StoreBucketName"]
        with contextlib.suppress(Exception):
            rule = self.s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
            default = rule["ApplyServerSideEncryptionByDefault"]
            if default["SSEAlgorithm"] == "aws:kms":
                self.recorder.bucket_keys[bucket] = default["KMSMasterKeyID"]

    def _unhook_moto_mappings(self) -> None:
        """moto would run the functions itself (in docker) on a stream write or a queued message: the
        simulator is the mapping here."""
        from moto.dynamodb.models import dynamodb_backends
        from moto.sqs.models import sqs_backends

        dynamodb_backends[ACCOUNT][REGION].tables[TABLE].lambda_event_source_mappings.clear()
        for queue in sqs_backends[ACCOUNT][REGION].queues.values():
            queue.lambda_event_source_mappings.clear()

    # --- the clock -------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.move_to(self.now_s + seconds)

    def move_to(self, second: float) -> None:
        if second < self.now_s:
            raise AssertionError("the simulated clock never goes back")
        self.traveller.move_to(datetime.fromtimestamp(second, tz=UTC))
        self.now_s = int(second) if float(second).is_integer() else second  # type: ignore[assignment]

    # --- invoking ----------------------------------------------------------------------------------

    def _module(self, function: Function) -> types.ModuleType:
        """The handler's module, loaded fresh under the function's environment (its cold start)."""
        if function.logical_id not in self._modules:
            module_name = function.handler.rsplit(".", 1)[0]
            spec = importlib.util.find_spec(module_name)
            assert spec is not None and spec.origin is not None, function.handler
            fresh = importlib.util.spec_from_file_location(f"_simulated_{function.logical_id}", spec.origin)
            assert fresh is not None and fresh.loader is not None
            module = importlib.util.module_from_spec(fresh)
            sys.modules[fresh.name] = module  # dataclasses look their module up by name
            with self._environment(function):
                fresh.loader.exec_module(module)
            self._modules[function.logical_id] = module
        return self._modules[function.logical_id]

    @contextlib.contextmanager
    def _environment(self, function: Function) -> Iterator[None]:
        saved = dict(os.environ)
        runtime = {"AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                   "AWS_LAMBDA_FUNCTION_NAME": function.name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                   "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory),
                   "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13", "LAMBDA_TASK_ROOT": os.getcwd(), "TZ": ":UTC",
                   "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
                   # The one addition to the function's environment: where "AWS" is (the moto server).
                   "AWS_ENDPOINT_URL": self.endpoint}
        keep = {k: v for k, v in saved.items() if k not in RUNTIME_VARIABLES and not k.startswith(("REWIND_",
                                                                                                   "POWERTOOLS_"))}
        # Only the process's own variables (PATH, PYTHONPATH...) stay; the function's replace the rest.
        os.environ.clear()
        os.environ.update({**keep, **runtime, **function.environment})
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def invoke(self, logical: str, event: Any, trigger: str) -> Invocation:
        function = self.functions[logical]
        handler = getattr(self._module(function), function.handler.rsplit(".", 1)[1])
        # The runtime writes the function's logs with its role.
        with acting_as(logical, "runtime"):
            group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{function.log_group}"
            for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
                self.recorder.calls.append(Call(logical, action, group, None, "runtime"))
        error = None
        result: Any = None
        self.stdout.take()
        started = time.process_time()
        with self._environment(function), acting_as(logical):
            try:
                result = handler(event, _Context(function, 900_000))
            except Exception as exc:  # the function's error: Lambda counts it in Errors
                error = f"{type(exc).__name__}: {exc}"
        printed = self.stdout.take()
        metrics: Counter[str] = Counter()
        service = None
        for line in printed.splitlines():
            if line.startswith("{") and '"_aws"' in line:
                document = json.loads(line)
                service = document.get("service", service)
                for directive in document["_aws"]["CloudWatchMetrics"]:
                    for metric in directive["Metrics"]:
                        value = document[metric["Name"]]
                        metrics[metric["Name"]] += sum(value) if isinstance(value, list) else value
        found = Invocation(logical, int(self.now_s), trigger, result, error, dict(metrics), service,
                           time.process_time() - started)
        self.invocations.append(found)
        return found

    # --- the stream mapping ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _trimming(self) -> Iterator[None]:
        """A record in ``trimmed`` is answered for as DynamoDB Streams does once it aged out (moto never trims)."""
        from moto.core.exceptions import JsonRESTError
        from moto.dynamodbstreams.models import DynamoDBStreamsBackend

        real = DynamoDBStreamsBackend.get_shard_iterator
        simulator = self

        def get_shard_iterator(backend: Any, arn: str, shard_id: str, kind: str, sequence: Any = None) -> Any:
            if kind == "AT_SEQUENCE_NUMBER" and str(sequence) in simulator.trimmed:
                raise JsonRESTError("TrimmedDataAccessException",
                                    "The operation attempted to read past the oldest stream record in a shard.")
            return real(backend, arn, shard_id, kind, sequence)

        DynamoDBStreamsBackend.get_shard_iterator = get_shard_iterator  # type: ignore[method-assign]
        try:
            yield
        finally:
            DynamoDBStreamsBackend.get_shard_iterator = real  # type: ignore[method-assign]

    def _poll(self) -> None:
        """Read what the stream holds past each shard's delivered position (the mapping, with the consumer's role)."""
        mapping = self.stream_mapping
        assert mapping is not None
        with acting_as(mapping.function, "service"):
            shards = self.streams.describe_stream(StreamArn=mapping.source_arn)["StreamDescription"]["Shards"]
            for shard in shards:
                shard_id = shard["ShardId"]
                position = self.shard_positions.get(shard_id)
                request = {"StreamArn": mapping.source_arn, "ShardId": shard_id}
                if position is None:
                    iterator = self.streams.get_shard_iterator(**request, ShardIteratorType="TRIM_HORIZON")
                else:
                    iterator = self.streams.get_shard_iterator(**request, ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                                               SequenceNumber=position)
                records = self.streams.get_records(ShardIterator=iterator["ShardIterator"], Limit=1000)["Records"]
                for record in records:
                    self.pending.append({"shard": shard_id, "record": record})
                if records:
                    self.shard_positions[shard_id] = records[-1]["dynamodb"]["SequenceNumber"]

    def deliver(self) -> int:
        """Deliver every record the stream holds to the consumer, batch by batch; the batches given up on."""
        mapping = self.stream_mapping
        assert mapping is not None
        self._poll()
        given_up = 0
        while self.pending:
            shard = self.pending[0]["shard"]
            window_of = (lambda r: int(r["dynamodb"]["ApproximateCreationDateTime"].timestamp()) // mapping.window_s) \
                if mapping.window_s else (lambda r: 0)
            first_window = window_of(self.pending[0]["record"])
            batch = []
            for entry in self.pending:
                if entry["shard"] != shard or window_of(entry["record"]) != first_window \
                        or len(batch) == mapping.batch_size:
                    break
                batch.append(entry["record"])
            del self.pending[:len(batch)]
            if not self._deliver_batch(mapping, shard, batch, first_window):
                given_up += 1
        return given_up

    def _deliver_batch(self, mapping: StreamMapping, shard: str, batch: list[dict[str, Any]], window: int) -> bool:
        records = [lambda_stream_record(r, mapping.source_arn) for r in batch]
        if self.mangle_next_batch is not None:
            self.mangle_next_batch(records)
            self.mangle_next_batch = None
        attempts = 0
        while True:
            event: dict[str, Any] = {"Records": records}
            if mapping.window_s:
                start = window * mapping.window_s
                event = {"Records": records, "shardId": shard, "eventSourceARN": mapping.source_arn, "state": {},
                         "window": {"start": _iso(start), "end": _iso(start + mapping.window_s)},
                         "isFinalInvokeForWindow": False, "isWindowTerminatedEarly": False}
            done = self.invoke(mapping.function, event, "stream")
            failures = (done.result or {}).get("batchItemFailures") if isinstance(done.result, dict) else None
            if done.error is None and not failures and (not mapping.window_s or "state" in done.result):
                return True
            if failures:
                # Lambda retries from the first record reported failed.
                first = failures[0]["itemIdentifier"]
                records = [r for r in records if int(r["dynamodb"]["SequenceNumber"]) >= int(first)]
            attempts += 1
            if attempts > mapping.max_retries:
                self._give_up(mapping, shard, records, attempts)
                return False
            self.advance(1)  # Lambda's backoff between retries

    def _give_up(self, mapping: StreamMapping, shard: str, records: list[dict[str, Any]], attempts: int) -> None:
        """Lambda's on-failure record of the batch, sent with the consumer's role; the mapping moves on."""
        self.failing_batches += 1
        self.last_given_up = records
        if self.on_give_up is not None:
            self.on_give_up(records)
        if mapping.on_failure is None:
            return
        first, last = records[0]["dynamodb"], records[-1]["dynamodb"]
        body = {
            "requestContext": {"requestId": str(uuid.uuid4()), "functionArn": self.functions[mapping.function].arn,
                               "condition": "RetryAttemptsExhausted", "approximateInvokeCount": attempts},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": None},
            "version": "1.0", "timestamp": _iso(self.now_s),
            "DDBStreamBatchInfo": {
                "shardId": shard, "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso(first["ApproximateCreationDateTime"]),
                "approximateArrivalOfLastRecord": _iso(last["ApproximateCreationDateTime"]),
                "batchSize": len(records), "streamArn": mapping.source_arn,
            },
        }
        url = self.outputs["FailureQueueUrl"]
        with acting_as(mapping.function, "service"):
            self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))

    # --- the queue mapping ---------------------------------------------------------------------------

    def drain_queue(self) -> int:
        """Hand each message of the on-failure queue to the recover function, as its SQS mapping does."""
        handled = 0
        for mapping in self.queue_mappings:
            url = self.outputs["FailureQueueUrl"]
            with acting_as(mapping.function, "service"):
                attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            assert attributes["Attributes"]["QueueArn"] == mapping.queue_arn
            while True:
                with acting_as(mapping.function, "service"):
                    received = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=mapping.batch_size,
                                                        AttributeNames=["All"]).get("Messages", [])
                if not received:
                    break
                event = {"Records": [{
                    "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                    "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs", "eventSourceARN": mapping.queue_arn, "awsRegion": REGION,
                } for m in received]}
                done = self.invoke(mapping.function, event, "queue")
                failed = {f["itemIdentifier"] for f in (done.result or {}).get("batchItemFailures", [])} \
                    if done.error is None else {m["MessageId"] for m in received}
                with acting_as(mapping.function, "service"):
                    for message in received:
                        if message["MessageId"] not in failed:
                            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                handled += len(received)
                if failed:
                    break  # retried when the message is visible again
        return handled

    # --- schedules -------------------------------------------------------------------------------

    def schedules(self) -> list[tuple[str, Schedule]]:
        return [(f.logical_id, s) for f in self.functions.values() for s in f.schedules if s.enabled]

    def refuse_store_writes(self, logical: str) -> Callable[[], None]:
        """From now on every S3 write ``logical`` makes is refused (503 SlowDown, after botocore's own
        retries); the function returned ends it."""
        from botocore.exceptions import ClientError

        def refuse(who: str, operation: str, params: dict[str, Any]) -> Exception | None:
            if who == logical and operation in ("s3:PutObject", "s3:CreateMultipartUpload"):
                return ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
                                    "ResponseMetadata": {"HTTPStatusCode": 503}}, operation.split(":")[1])
            return None

        self.recorder.faults.append(refuse)
        return lambda: self.recorder.faults.remove(refuse)

    def run_until(self, end_s: int, *, writes: Callable[[int], None] | None = None, write_every_s: int = HOUR,
                  on_day: Callable[[int], None] | None = None,
                  after: Callable[[int, str], None] | None = None) -> None:
        """Advance to ``end_s``: writes every ``write_every_s`` (delivered within the batching window) and
        every enabled schedule at its rate, in time order."""
        window = int(self._mapping_window())
        due: list[tuple[int, int, str, Schedule | None]] = []
        # Every tick after the last one already run (moving the clock by hand skips none).
        first = self._through
        self._through = end_s
        for index, (logical, schedule) in enumerate(self.schedules()):
            period = schedule.period_s
            second = first - first % period + period
            while second <= end_s:
                due.append((second, index + 1, logical, schedule))
                second += period
        if writes is not None:
            second = first - first % write_every_s + write_every_s
            while second <= end_s:
                due.append((second, 0, "write", None))
                second += write_every_s
        day = (first - int(self.start.timestamp())) // DAY
        for second, _, what, schedule in sorted(due, key=lambda d: (d[0], d[1])):
            if second < self.now_s:
                second = int(self.now_s)
            self.move_to(second)
            if what == "write":
                assert writes is not None
                writes(second)
                self.move_to(second + window)  # the mapping's batching window
                if self.now_s >= self.delivery_paused_until:
                    self.deliver()
                self.drain_queue()
            else:
                assert schedule is not None
                self.invoke(what, scheduled_event(schedule, second), schedule.rule)
            if after is not None:
                after(second, what)
            today = (int(self.now_s) - int(self.start.timestamp())) // DAY
            if today != day and on_day is not None:
                on_day(today)
            day = today
        self.move_to(max(end_s, self.now_s))

    def _mapping_window(self) -> int:
        import boto3

        for mapping in boto3.client("lambda", region_name=REGION).list_event_source_mappings()["EventSourceMappings"]:
            if ":sqs:" not in mapping["EventSourceArn"]:
                return int(mapping.get("MaximumBatchingWindowInSeconds", 0))
        return 0


@contextlib.contextmanager
def _env_var(name: str, value: str) -> Iterator[None]:
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


@contextlib.contextmanager
def _simulated_sleep(advance: Callable[[float], None]) -> Iterator[None]:
    """``time.sleep`` advances the simulated clock, including where a function took it as a default argument."""
    real = time.sleep

    def sleep(seconds: float) -> None:
        advance(seconds)

    patched: list[tuple[Any, str, Any]] = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in ("changelog", "stream_consumer", "compactor", "replayer"):
            continue
        for value in vars(module).values():
            for attribute in ("__defaults__", "__kwdefaults__"):
                defaults = getattr(value, attribute, None) if isinstance(value, types.FunctionType) else None
                if isinstance(defaults, tuple) and any(d is real for d in defaults):
                    patched.append((value, attribute, defaults))
                    setattr(value, attribute, tuple(sleep if d is real else d for d in defaults))
                elif isinstance(defaults, dict) and any(d is real for d in defaults.values()):
                    patched.append((value, attribute, defaults))
                    setattr(value, attribute, {k: sleep if d is real else d for k, d in defaults.items()})
    time.sleep = sleep
    try:
        yield
    finally:
        time.sleep = real
        for value, attribute, defaults in patched:
            setattr(value, attribute, defaults)


# ------------------------------------------------------------------------------------------------
# A month of operation: python -m tests.simulation --days 30
# ------------------------------------------------------------------------------------------------


OUTAGE_S = 4 * HOUR  # longer than the CaptureLagAlarm's default 7,200 s
OPERATOR_DELAY_S = 10 * MINUTE
# The alarms each injected fault must raise (and nothing else may: see ``main``).
FAULT_ALARMS = {
    "gap": ("ConsumerFailedBatchesAlarm", "PermanentGapsAlarm", "StoreGapsAlarm"),
    "quarantine": ("QuarantinedRecordsAlarm", "StoreQuarantinedRecordsAlarm"),
    "outage": ("CaptureLagAlarm",),
    "corruption": ("VerificationFailuresAlarm", "CompactorErrorsAlarm"),
}


@dataclass
class Month:
    """The month's scenario, its incidents, the operator's answers to them, and what was proven."""

    sim: Simulator
    days: int
    seed: int = 7
    keys: int = 40
    replays: list[tuple[int, bool]] = field(default_factory=list)
    incidents: list[str] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)  # injected fault -> when
    # Each restore point kept at the end: (moment, items equal the model, TTL as the table had it then).
    restores: list[tuple[int, bool, bool]] = field(default_factory=list)
    # At the end: (the policy's change horizon, the store's floor), µs; None without a policy.
    floor: tuple[int, int | None] | None = None

    def run(self, report: Callable[[str], None]) -> None:
        import random

        from changelog.store import open_store
        from tests.workloads import Workload

        sim = self.sim
        rng = random.Random(self.seed)
        store = open_store(sim.outputs["StoreUri"], allow_empty=True)
        model = Workload(table=TABLE, client=sim.dynamodb)
        t0 = int(sim.start.timestamp())
        gap_at = t0 + (self.days // 3) * DAY + 12 * HOUR
        quarantine_at = t0 + (self.days // 2) * DAY + 6 * HOUR
        outage_at = t0 + (self.days // 2) * DAY + 18 * HOUR
        corrupt_at = t0 + (2 * self.days // 3) * DAY + 12 * HOUR
        self.faults = {"gap": gap_at, "quarantine": quarantine_at, "outage": outage_at, "corruption": corrupt_at}
        state: dict[str, Any] = {"count": 0, "stop_refusing": None, "corrupted": None, "gap_seen": False,
                                 "quarantine_seen": False}

        def undecodable(records: list[dict[str, Any]]) -> None:
            image = next(r["dynamodb"]["NewImage"] for r in records if "NewImage" in r["dynamodb"])
            image["v"] = {"XX": "1"}  # no such AttributeValue type

        def lost(records: list[dict[str, Any]]) -> None:
            sim.trimmed.update(r["dynamodb"]["SequenceNumber"] for r in records)
            state["stop_refusing"]()

        sim.on_give_up = lost

        def writes(second: int) -> None:
            if second == t0 + 5 * DAY:
                sim.dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={
                    "Enabled": True, "AttributeName": "expires"})
                self.incidents.append(f"{_iso(second)} settings: TTL turned on")
            if second == gap_at:
                state["stop_refusing"] = sim.refuse_store_writes("ConsumerFunction")
                self.incidents.append(f"{_iso(second)} injected: S3 refuses the consumer's writes for one batch, "
                                      "and the stream trims it before recover reads it")
            if second == quarantine_at:
                sim.mangle_next_batch = undecodable
                self.incidents.append(f"{_iso(second)} injected: one record of the next batch carries an "
                                      "attribute of no AttributeValue type")
            if second == outage_at:
                sim.delivery_paused_until = second + OUTAGE_S
                self.incidents.append(f"{_iso(second)} injected: the stream mapping delivers nothing for "
                                      f"{OUTAGE_S // HOUR} hours (the consumer is throttled)")
            for _ in range(6):
                state["count"] += 1
                key = {"pk": {"S": f"k{rng.randrange(self.keys)}"}}
                if rng.random() < 0.2:
                    model.delete(key, second)
                else:
                    model.put({**key, "v": {"N": str(state["count"])}}, second)

        def after(second: int, what: str) -> None:
            last = sim.invocations[-1] if sim.invocations else None
            if second == corrupt_at and state["corrupted"] is None:
                path = change_files_of(store)[-1]
                key = f"{sim.outputs['StoreUri'].split('/', 3)[3]}/{path}"
                original = store.read(path)
                data = bytearray(original)
                data[len(data) // 2] ^= 0x01
                sim.s3.put_object(Bucket=sim.outputs["StoreBucketName"], Key=key, Body=bytes(data))
                state["corrupted"] = key
                state["original"] = original
                self.incidents.append(f"{_iso(second)} injected: one byte of {path.rsplit('/', 1)[-1]} flipped")
            if last is not None and last.function == "VerifierFunction" and last.at_s >= second:
                for metric, seen in (("Gaps", "gap_seen"), ("QuarantinedRecords", "quarantine_seen")):
                    if last.metrics.get(metric) and not state[seen]:
                        state[seen] = True
                        # The operator answers the alarm some minutes later (the simulated clock stands
                        # still meanwhile: a scan at the very microsecond of the loss could not follow it).
                        sim.advance(OPERATOR_DELAY_S)
                        self.incidents.append(f"{_iso(second)} {metric} alarm metric: {last.metrics[metric]:g}; "
                                              f"{_iso(sim.now_s)} operator runs ddb-rewind bootstrap --scan")
                        _operator(["bootstrap", "--table", TABLE, "--store", sim.outputs["StoreUri"], "--scan"])
                if last.metrics.get("VerificationFailures") and state["corrupted"]:
                    self.incidents.append(f"{_iso(second)} VerificationFailures alarm metric: "
                                          f"{last.metrics['VerificationFailures']:g}; operator restores the "
                                          "file from a copy")
                    sim.s3.put_object(Bucket=sim.outputs["StoreBucketName"], Key=state["corrupted"],
                                      Body=state["original"])
                    state["corrupted"] = ""
            if what == "write" and second % (6 * HOUR) == 0 and not state["corrupted"]:
                restorable = [(low // 1_000_000 + 1, high // 1_000_000)
                              for low, high in coverage_of(store).intervals]
                restorable = [(low, high) for low, high in restorable if low <= high]
                if restorable:
                    low, high = rng.choice(restorable)
                    moment = rng.randint(low, high)
                    self.replays.append((moment, replayed(store, moment) == model.state_at(moment)))

        def on_day(day: int) -> None:
            report(self.day_line(day))

        sim.run_until(t0 + self.days * DAY, writes=writes, after=after, on_day=on_day)
        self.restore_points(store, model, ttl_on_at=t0 + 5 * DAY)
        self.floor = self.floor_against_policy(store)

    def floor_against_policy(self, store: Any) -> tuple[int, int | None] | None:
        """The policy's change horizon at the last compactor run and the floor the store keeps."""
        from changelog.state import retention_floor
        from compactor.policy import parse_policy
        from compactor.retention import horizon_us

        text = str(self.sim.parameters.get("RetentionPolicy") or "")
        runs = [i for i in self.sim.invocations if i.function == "CompactorFunction" and not i.error]
        if not text or not runs:
            return None
        return horizon_us(int(runs[-1].at_s * 1_000_000), parse_policy(text)), retention_floor(store, TABLE)

    def restore_points(self, store: Any, model: Any, ttl_on_at: int) -> None:
        """Every snapshot the store keeps at the end, restored as an operator would into a new table.

        ``replay --to-table --create-table`` at the snapshot's moment: the new table must hold the
        model's items of that moment, and have TTL on exactly when the table had it on then.
        """
        from changelog.codec import item_key
        from changelog.snapshot import list_manifests
        from changelog.timefmt import format_time, from_micros

        for number, (_, manifest) in enumerate(list_manifests(store, TABLE)):
            moment_us = manifest.snapshot_time_us
            target = f"restored-{number}"
            try:
                _operator(["replay", "--table", TABLE, "--store", self.sim.outputs["StoreUri"], "--at",
                           format_time(from_micros(moment_us)), "--to-table", target, "--create-table"])
            except AssertionError as refused:
                self.incidents.append(f"restore point {format_time(from_micros(moment_us))} ({manifest.kind}) "
                                      f"not restored: {refused}")
                self.restores.append((moment_us // 1_000_000, False, False))
                continue
            items = self.sim.dynamodb.scan(TableName=target, ConsistentRead=True)["Items"]
            restored = {item_key({"pk": i["pk"]}): i for i in items}
            expected = model.state_at(moment_us / 1_000_000)
            ttl = self.sim.dynamodb.describe_time_to_live(TableName=target)["TimeToLiveDescription"]
            ttl_on = ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")
            self.restores.append((moment_us // 1_000_000, restored == expected,
                                  ttl_on == (moment_us // 1_000_000 >= ttl_on_at)))

    def day_line(self, day: int) -> str:
        mine = [i for i in self.sim.invocations if i.at_s < int(self.sim.start.timestamp()) + day * DAY]
        counts = Counter(i.function for i in mine)
        verifier = [i for i in mine if i.function == "VerifierFunction"]
        passed = sum(1 for i in verifier if i.metrics.get("DrillsPassed") == 1)
        failures = sum(1 for i in verifier if i.metrics.get("VerificationFailures"))
        return (f"day {day:>2}: invocations {dict(sorted(counts.items()))}, drills passed {passed}/{len(verifier)}, "
                f"runs with failures {failures}, replays {sum(e for _, e in self.replays)}/{len(self.replays)} exact")


def change_files_of(store: Any) -> list[str]:
    from changelog.state import change_files

    return list(change_files(store, TABLE))


def coverage_of(store: Any) -> Any:
    from changelog.state import coverage

    return coverage(store, TABLE)


def replayed(store: Any, at_s: int) -> dict[str, Any]:
    from replayer.restoring.replay import open_items

    con = open_items(store, TABLE, datetime.fromtimestamp(at_s, tz=UTC))
    return {key: json.loads(image) for key, image in con.execute("SELECT item_key, image FROM items").fetchall()}


def _operator(argv: list[str]) -> None:
    """An operator's CLI command (not a function of the stack: not IAM-checked)."""
    from ddb_rewind.cli import main as cli

    with contextlib.redirect_stderr(io.StringIO()) as said:
        code = cli(argv)
    if code != 0:
        raise AssertionError(f"ddb-rewind {' '.join(argv[:1])} exited {code}: {said.getvalue().strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation",
                                     description="Run the deployed stack for simulated days and print what was proven.")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--retention", default="daily=7d,changes=7d", help="the stack's RetentionPolicy")
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="another stack parameter (e.g. VerifyIntervalMinutes=180); repeatable")
    args = parser.parse_args(argv)
    parameters = {"RetentionPolicy": args.retention,
                  **dict(item.split("=", 1) for item in args.parameter)}
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    out = sys.stdout
    started = time.perf_counter()
    cpu = time.process_time()
    with Simulator(datetime(2026, 1, 1, tzinfo=UTC), parameters) as sim:
        month = Month(sim, args.days)

        def report(line: str) -> None:
            print(f"{line}  [{time.perf_counter() - started:.0f} s]", file=out, flush=True)

        month.run(report)
        findings = iam_check(sim.functions, sim.recorder.calls)
        print(f"\nsimulated {args.days} days in {time.perf_counter() - started:.0f} s "
              f"({time.process_time() - cpu:.0f} s CPU); parameters: "
              f"{', '.join(f'{k}={v}' for k, v in parameters.items())}, others the template's defaults", file=out)
        print("invocations: " + ", ".join(f"{k} {v}" for k, v in
                                          sorted(Counter(i.function for i in sim.invocations).items())), file=out)
        errors = Counter(i.function for i in sim.invocations if i.error)
        print(f"function errors: {dict(errors) or 'none'}", file=out)
        alarms: Counter[str] = Counter()
        for invocation in sim.invocations:
            for name in ("Gaps", "PermanentGaps", "VerificationFailures", "QuarantinedRecords", "FailedBatches",
                         "UnreadShards"):
                if invocation.metrics.get(name):
                    alarms[f"{name} ({invocation.function})"] += 1
        print(f"alarm metrics above 0 (invocations): {dict(alarms) or 'none'}", file=out)
        verifier = [i for i in sim.invocations if i.function == "VerifierFunction"]
        print(f"drills passed: {sum(1 for i in verifier if i.metrics.get('DrillsPassed') == 1)} of {len(verifier)} "
              "verifier runs", file=out)
        retention = [i.result["retention"] for i in sim.invocations if i.function == "CompactorFunction"
                     and isinstance(i.result, dict) and "retention" in i.result]
        print(f"retention: {len(retention)} runs applied it, {sum(r['change_files_deleted'] for r in retention)} "
              f"change files and {sum(r['snapshots_deleted'] for r in retention)} snapshots deleted", file=out)
        floor_kept_up = True
        if month.floor is not None:
            horizon, floor = month.floor
            # The base is the newest snapshot at or before the horizon, and expire keeps one a day after it.
            # Before the horizon passes the run's first days there is no base to expect.
            young = horizon < (int(sim.start.timestamp()) + 2 * DAY) * 1_000_000
            floor_kept_up = young or (floor is not None and horizon - 2 * DAY * 1_000_000 <= floor <= horizon)
            lag = "none" if floor is None else f"{(horizon - floor) / 3.6e9:.1f} h behind it"
            print(f"retention floor {_iso(floor // 1_000_000) if floor else 'none'}, the policy's horizon at the "
                  f"last compaction {_iso(horizon // 1_000_000)}: {lag}"
                  f"{'' if floor_kept_up else ' (NOT within two days)'}", file=out)
        exact = sum(1 for _, e in month.replays if e)
        print(f"replays checked against the model: {exact} exact of {len(month.replays)}", file=out)
        restored = [(_iso(moment), items, ttl) for moment, items, ttl in month.restores]
        print(f"restore points kept at the end, each restored with --create-table: {len(restored)}; items exact "
              f"{sum(1 for _, i, _ in restored if i)}, TTL as the table had it {sum(1 for *_, t in restored if t)} "
              f"({', '.join(moment for moment, *_ in restored)})", file=out)
        for line in month.incidents:
            print(f"  {line}", file=out)
        seen: set[str] = set()
        for invocation in verifier:
            result = invocation.result if isinstance(invocation.result, dict) else {}
            for label, findings_of in (("finding", result.get("failures", [])), ("skip", result.get("skipped", []))):
                for finding in findings_of:
                    kind = f"{label} {str(finding).split(':')[0][:40]}"
                    if kind not in seen:
                        seen.add(kind)
                        print(f"  first verifier {label} of its kind, {_iso(invocation.at_s)}: {str(finding)[:300]}",
                              file=out)
        end_s = int(sim.now_s)
        raised: dict[str, list[tuple[int, str]]] = {}
        print("alarms, evaluated as CloudWatch would on what the functions published:", file=out)
        for alarm in stack_alarms(sim.expanded, sim.parameters):
            points = sim.datapoints(alarm)
            if points is None:
                print(f"  {alarm.logical_id}: not evaluated ({alarm.namespace} {alarm.metric} is the service's "
                      "own metric)", file=out)
                continue
            raised[alarm.logical_id] = alarm_transitions(alarm, points, int(sim.start.timestamp()), end_s)
            history = ", ".join(f"{state} {_iso(at)}" for at, state in raised[alarm.logical_id]) or "never raised"
            print(f"  {alarm.logical_id}: {history}", file=out)
        expected = {name: fault for fault, names in FAULT_ALARMS.items() for name in names}
        for fault, at in month.faults.items():
            for name in FAULT_ALARMS[fault]:
                fired = [t for t, state in raised.get(name, []) if state == "ALARM" and t >= at]
                print(f"  fault {fault} ({_iso(at)}) -> {name}: "
                      f"{'ALARM ' + _iso(fired[0]) if fired else 'NOT RAISED'}", file=out)
        unexpected = sorted(name for name, history in raised.items()
                            if any(state == "ALARM" for _, state in history) and name not in expected)
        print(f"  raised with no fault injected for it: {unexpected or 'none'}", file=out)
        alarms_right = not unexpected and all(
            any(state == "ALARM" and t >= at for t, state in raised.get(name, []))
            for fault, at in month.faults.items() for name in FAULT_ALARMS[fault])
        for logical, found in findings.items():
            calls = Counter(c.action for c in sim.recorder.calls if c.principal == logical)
            print(f"IAM {logical}: {sum(calls.values())} requests, {len(calls)} actions; denied "
                  f"{[(c.action, c.resource) for c in found.denied] or 'none'}; allowed but unused "
                  f"{list(found.unused) or 'none'}", file=out)
        ok = (exact == len(month.replays) and not any(f.denied for f in findings.values())
              and all(items and ttl for _, items, ttl in month.restores) and alarms_right and floor_kept_up)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "Alarm",
    "Call",
    "Function",
    "IamFinding",
    "Invocation",
    "Schedule",
    "Simulator",
    "alarm_transitions",
    "allowing_statement",
    "iam_check",
    "rate_seconds",
    "scheduled_event",
    "stack_alarms",
    "timedelta",
]
