"""serve writes GetItem, Query and Scan answers as plain JSON: they must say what moto's serializer says.

moto's model-driven serializer is the reference (it is what every other answer goes through); the
answers are compared as parsed JSON over generated items holding every attribute type, binaries in
items and in keys included.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from moto.core.responses import ActionContext
from moto.core.serialize import get_serializer_class
from moto.core.utils import get_service_model
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.responses import DynamoHandler, DynamoResult

from replayer.serving.protocol import plain_answer

_b64 = st.binary(min_size=1, max_size=6).map(lambda b: base64.b64encode(b).decode())
_scalar = st.one_of(
    st.text(max_size=5).map(lambda s: {"S": s}),
    st.decimals(-10**6, 10**6, places=3, allow_nan=False).map(lambda d: {"N": str(d)}),
    _b64.map(lambda b: {"B": b}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=3, unique=True).map(lambda v: {"SS": v}),
    st.lists(st.integers(-99, 99).map(str), min_size=1, max_size=3, unique=True).map(lambda v: {"NS": v}),
    st.lists(_b64, min_size=1, max_size=3, unique=True).map(lambda v: {"BS": v}),
)
_value = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(lambda v: {"L": v}),
    st.dictionaries(st.text(min_size=1, max_size=3), inner, max_size=3).map(lambda v: {"M": v})), max_leaves=6)
_items = st.lists(st.tuples(_b64, st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), _value, max_size=4)),
                  max_size=4)


def _moto_says(operation: str, result: DynamoResult) -> Any:
    service = get_service_model("dynamodb")
    context = ActionContext(service, service.operation_model(operation), get_serializer_class("dynamodb", "json"),
                            DynamoHandler())
    return json.loads(result.execute_result(context)[2])


def _item(pk: str, attributes: dict[str, Any]) -> Item:
    attrs = {"pk": {"B": pk}, "sk": {"N": "1"}, **attributes}
    return Item(DynamoType(attrs["pk"]), DynamoType(attrs["sk"]), attrs)


@settings(max_examples=60, deadline=None)
@given(_items, st.booleans())
def test_query_and_scan_answers_say_what_moto_says(items: list[tuple[str, dict[str, Any]]], stopped: bool) -> None:
    taken = [_item(pk, attributes) for pk, attributes in items]
    for operation in ("Query", "Scan"):
        answer: dict[str, Any] = {"Count": len(taken), "ScannedCount": len(taken) + 1,
                                  "Items": [item.attrs for item in taken],
                                  "ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.0}}
        if stopped and taken:
            answer["LastEvaluatedKey"] = {"pk": taken[-1].attrs["pk"], "sk": taken[-1].attrs["sk"]}
        result = DynamoResult(answer)
        assert json.loads(plain_answer(result.result) or "null") == _moto_says(operation, result)


@settings(max_examples=30, deadline=None)
@given(_items)
def test_get_item_answers_say_what_moto_says(items: list[tuple[str, dict[str, Any]]]) -> None:
    for pk, attributes in items or [("AA==", {})]:
        result = DynamoResult({"Item": _item(pk, attributes).attrs})
        assert json.loads(plain_answer(result.result) or "null") == _moto_says("GetItem", result)


def test_an_answer_holding_anything_but_items_goes_to_moto() -> None:
    assert plain_answer({"Count": 1, "Items": [], "When": datetime(2025, 1, 1, tzinfo=UTC)}) is None
    assert plain_answer(["not", "a", "dict"]) is None

