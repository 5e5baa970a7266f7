"""DynamoDB's JSON 1.0 protocol at a moment: read operations answered by moto's handler, the rest refused.

A request is ``POST /`` with ``X-Amz-Target: DynamoDB_20120810.<Operation>`` and a JSON body. Reads go
to moto's ``DynamoHandler`` over the moment's backend; every write, and every operation not served,
gets DynamoDB's error shape (HTTP 400, ``{"__type": ..., "message": ...}``) saying why. Nothing that
goes wrong while answering becomes a 500 or a hang: it is a 400 with one line. Signatures are not
checked: any credentials are accepted (the server listens on loopback by default).
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

import orjson
from moto.core.model_instances import model_data
from moto.core.request import Request
from moto.core.responses import TYPE_RESPONSE, ActionResult
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler

from changelog.codec import canonical_number
from changelog.errors import DecodeError
from replayer.serving.keyorder import NotAKey, encode_value
from replayer.serving.moment import REQUESTED_SELECT
from replayer.serving.shapes import JSON_1_0, Response, error

PREFIX = "DynamoDB_20120810."
# Answers made only of items, counts and keys: written straight as JSON (see _Handler.serialized).
PLAIN_ANSWERS = frozenset({"GetItem", "Query", "Scan"})
READS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "DescribeTable", "ListTables", "TransactGetItems"})

log = logging.getLogger("ddb_rewind.serve")


@cache
def dynamodb_operations() -> frozenset[str]:
    """Every operation DynamoDB has (botocore's service model)."""
    import botocore.session

    return frozenset(botocore.session.get_session().get_service_model("dynamodb").operation_names)


class _Handler(DynamoHandler):
    """moto's handler answering from one moment's backend, whatever the credentials."""

    def __init__(self, backend: DynamoDBBackend) -> None:
        super().__init__()
        self._backend = backend

    @property
    def dynamodb_backend(self) -> DynamoDBBackend:
        return self._backend

    def _authenticate_and_authorize_normal_action(self, resource: str = "*") -> None:
        return None

    def _contains_duplicates(self, keys: list[Any]) -> bool:
        # One key written twice (N 1 and 1.0, or names in another order) is a duplicate to DynamoDB;
        # moto compares the keys as they were written, and answered such a BatchGetItem with one item twice.
        seen: set[Any] = set()
        for key in keys:
            try:
                canonical = tuple(sorted((name, encode_value(value)) for name, value in key.items()))
            except (AttributeError, NotAKey):
                return super()._contains_duplicates(keys)
            if canonical in seen:
                return True
            seen.add(canonical)
        return False

    def serialized(self, action_result: ActionResult) -> TYPE_RESPONSE:
        # moto's model-driven serializer walks every attribute value of every item through botocore's
        # shapes (about 3 ms per 300-byte item, 90% of a Scan page): item answers are written directly.
        body = plain_answer(action_result.result) if self._get_action() in PLAIN_ANSWERS else None
        if body is None:
            return super().serialized(action_result)
        headers: dict[str, str | int] = {"Content-Type": JSON_1_0, **self.response_headers, "status": 200}
        return 200, headers, body


def plain_answer(result: object) -> str | None:
    """A GetItem, Query or Scan answer as its JSON body; None when it holds anything but JSON and bytes.

    Such an answer holds items and keys (DynamoDB JSON whose B and BS values moto decoded to bytes),
    counts and consumed capacity: plain JSON with bytes as base64 is what moto's serializer writes for
    them (tests/test_serve_answers.py holds the two equal). Anything else (a date, a set) is left to moto.
    """
    if not isinstance(result, dict):
        return None
    try:
        return orjson.dumps(result, default=_base64, option=_ONLY_JSON).decode()
    except TypeError:
        return None


# What orjson would otherwise write its own way (dates as ISO text) goes to _base64, which refuses it.
_ONLY_JSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _base64(value: object) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(type(value).__name__)


def forget_models() -> None:
    """Let go of the DynamoDB model objects moto keeps.

    moto keeps every model object it makes (``BaseModel.__new__`` adds it to its class's
    ``instances_tracked``, for its server's dashboard): each item a request read, projected or not,
    would stay in memory for as long as serve runs, a million of them after one Scan of a million items.
    """
    for model in model_data.get("dynamodb", {}).values():
        tracked = getattr(model, "instances_tracked", None)
        if isinstance(tracked, list):
            tracked.clear()


def _request_values(request: Any) -> list[Any]:
    """The AttributeValues a read request carries: its keys and its expression values."""
    request = _mapping(request)
    maps = [request.get("Key"), request.get("ExclusiveStartKey"), request.get("ExpressionAttributeValues")]
    for asked in _mapping(request.get("RequestItems")).values():
        maps += _sequence(_mapping(asked).get("Keys"))
    for item in _sequence(request.get("TransactItems")):
        maps.append(_mapping(_mapping(item).get("Get")).get("Key"))
    return [value for values in maps if isinstance(values, dict) for value in values.values()]


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _sequence(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


_SET_NAMES = {"SS": "string set", "NS": "number set", "BS": "binary set"}


def _value_problem(request: Any) -> str | None:
    """Why a value in the request is one DynamoDB refuses, or None: a number of more than 38 digits or
    beyond its range, or an empty set.

    DynamoDB refuses such a request; moto would compare the value as it came and answer.
    """
    pending = _request_values(request)
    while pending:
        value = pending.pop()
        if not isinstance(value, dict) or len(value) != 1:
            continue  # not an AttributeValue: moto's own checks answer for the rest
        ((tag, inner),) = value.items()
        if tag in _SET_NAMES and inner == []:
            return f"One or more parameter values were invalid: An {_SET_NAMES[tag]} may not be empty"
        for number in [inner] if tag == "N" else _sequence(inner) if tag == "NS" else []:
            try:
                canonical_number(number)
            except DecodeError as exc:
                return str(exc)
        if tag == "M":
            pending += _mapping(inner).values()
        elif tag == "L":
            pending += _sequence(inner)
    return None


# The words of a KeyConditionExpression: placeholders, and names (its values are all placeholders).
_KEY_WORDS = re.compile(r"[#:]?[\w.-]+")
_KEY_KEYWORDS = frozenset({"and", "between", "begins_with"})


def _key_condition_problem(request: Any) -> str | None:
    """Why a Query's KeyConditionExpression is one DynamoDB refuses and moto answers, or None: a key
    named in two conditions (moto keeps the last and answers with the other dropped)."""
    request = _mapping(request)
    expression, names = request.get("KeyConditionExpression"), _mapping(request.get("ExpressionAttributeNames"))
    if not isinstance(expression, str):
        return None
    named = [names.get(word, word) for word in _KEY_WORDS.findall(expression)
             if not word.startswith(":") and word.lower() not in _KEY_KEYWORDS]
    if len(named) != len(set(named)):
        return "Invalid KeyConditionExpression: KeyConditionExpressions must only contain one condition per key"
    return None


class Protocol:
    """Answers one request for a moment described by ``moment`` (a phrase such as "orders as of 14:02Z")."""

    def __init__(self, backend: DynamoDBBackend, moment: str) -> None:
        self.backend = backend
        self.moment = moment

    def answer(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Response:
        """The response to one HTTP request."""
        target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")
        if method != "POST" or not target.startswith(PREFIX):
            return error("UnknownOperationException",
                         "this endpoint speaks DynamoDB's JSON protocol: POST / with X-Amz-Target: "
                         "DynamoDB_20120810.<Operation>")
        operation = target[len(PREFIX):]
        if operation not in READS:
            if operation in dynamodb_operations():
                return error("ValidationException",
                             f"{operation} is not answered here: this endpoint is {self.moment}, a read-only "
                             f"moment (it answers {', '.join(sorted(READS))})")
            return error("UnknownOperationException", f"DynamoDB has no operation {operation[:80]!r}")
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            return error("SerializationException", "the request body is not JSON")
        problem = _value_problem(parsed) or (_key_condition_problem(parsed) if operation == "Query" else None)
        if problem is not None:
            return error("ValidationException", f"{operation} could not be answered: {problem}")
        select = parsed.get("Select") if isinstance(parsed, dict) else None
        token = REQUESTED_SELECT.set(select if isinstance(select, str) else None)
        try:
            request = Request.from_primitives(method, url, dict(headers), body)
            status, response_headers, content = _Handler(self.backend)._dispatch(request)
        except Exception as exc:  # anything moto did not expect is one 400, never a 500
            log.warning("%s failed: %s: %.200s", operation, type(exc).__name__, exc)
            return error("ValidationException", f"{operation} could not be answered: {type(exc).__name__}")
        finally:
            REQUESTED_SELECT.reset(token)
            forget_models()
        data = content if isinstance(content, bytes) else str(content).encode()
        if int(status) >= 500:
            log.warning("%s: moto answered %s: %s", operation, status, data[:200])
            return error("ValidationException", f"{operation} could not be answered")
        out = {str(k): str(v) for k, v in response_headers.items() if str(k).lower() != "status"}
        out.setdefault("Content-Type", JSON_1_0)
        return Response(int(status), out, data)
