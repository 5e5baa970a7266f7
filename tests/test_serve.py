"""``serve --at T`` answers DynamoDB's read API exactly as the table answered at T; writes are refused.

The oracle is a moto table: a random workload is written to it and captured as its stream records;
at the moment T every read below is asked of the moto table (as it was then) and of ``serve --at T``
through unchanged boto3, and the answers must be equal.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from changelog.codec import decode_lambda_record
from changelog.meta import meta_from_description, write_meta
from changelog.settings import record, stable
from changelog.store import LocalStore, Store
from ddb_rewind.cli import main
from replayer.serving.keyorder import encode_number, encode_value
from replayer.serving.server import serving
from stream_consumer.capture import capture_batch
from tests.events import lambda_record
from tests.moto_http import free_port

REPO = Path(__file__).resolve().parent.parent
TABLE = "orders"
T0 = 1_700_000_000
PKS = ["a", "b", "ключ"]
SKS: dict[str, list[Any]] = {"N": [-10, -1, 0, 1, 2, 15, 300], "S": ["a", "ab", "abc", "b", "ba", "é", "z"]}
S_VALUES = ["a", "ab", "abc", "é", "b a"]
# The table's secondary indexes: a GSI with a sort key projecting some attributes, a GSI without a sort
# key projecting the keys only, and an LSI projecting everything.
GSIS: list[Any] = [
    {"IndexName": "by_s", "KeySchema": [{"AttributeName": "s", "KeyType": "HASH"},
                                        {"AttributeName": "n", "KeyType": "RANGE"}],
     "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["tags"]}},
    {"IndexName": "by_n", "KeySchema": [{"AttributeName": "n", "KeyType": "HASH"}],
     "Projection": {"ProjectionType": "KEYS_ONLY"}},
]
LSIS: list[Any] = [
    {"IndexName": "by_pk_n", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                                           {"AttributeName": "n", "KeyType": "RANGE"}],
     "Projection": {"ProjectionType": "ALL"}},
]

_text = st.text(alphabet="abcé ", max_size=5)
_value = st.recursive(
    st.one_of(
        _text.map(lambda s: {"S": s}),
        st.integers(-50, 50).map(lambda n: {"N": str(n)}),
        st.booleans().map(lambda b: {"BOOL": b}),
        st.just({"NULL": True}),
        st.lists(st.text(alphabet="abc", min_size=1, max_size=3), min_size=1, max_size=3, unique=True)
        .map(lambda v: {"SS": v}),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3).map(lambda v: {"L": v}),
                            st.dictionaries(st.sampled_from(["x", "y"]), inner, max_size=2).map(lambda v: {"M": v})),
    max_leaves=4,
)
# Padding makes a few pages stop at DynamoDB's 1 MB, not at Limit.
_padding = st.sampled_from([0, 0, 0, 300_000])


@st.composite
def workloads(draw: Any, sort_type: str) -> tuple[list[tuple[str, Any, dict[str, Any] | None]], int]:
    """Puts and deletes over a small key space, and the number of them that happened by the moment T."""
    ops: list[tuple[str, Any, dict[str, Any] | None]] = []
    for _ in range(draw(st.integers(1, 30))):
        pk, sk = draw(st.sampled_from(PKS)), draw(st.sampled_from(SKS[sort_type]))
        if ops and draw(st.integers(0, 4)) == 0:
            ops.append((pk, sk, None))
            continue
        # Each attribute keeps one type: moto fails (where DynamoDB answers false) on comparing a list to a number.
        # n and s are the secondary indexes' keys: few values, so index partitions hold several items.
        attributes = draw(st.fixed_dictionaries({}, optional={
            "n": st.integers(-3, 3).map(lambda n: {"N": str(n)}),
            "s": st.sampled_from(S_VALUES).map(lambda v: {"S": v}),
            "tags": st.lists(st.text(alphabet="abc", min_size=1, max_size=3), min_size=1, max_size=3, unique=True)
            .map(lambda v: {"SS": v}),
            "doc": _value}))
        padding = draw(_padding)
        if padding:
            attributes["pad"] = {"S": "p" * padding}
        ops.append((pk, sk, attributes))
    return ops, draw(st.integers(1, len(ops)))


def _key(pk: str, sk: Any, sort_type: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {sort_type: str(sk)}}


def _description(sort_type: str, indexed: bool = False) -> dict[str, Any]:
    description: dict[str, Any] = {
        "TableName": TABLE,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                 {"AttributeName": "sk", "AttributeType": sort_type}],
        "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"}}
    if indexed:
        description["AttributeDefinitions"] += [{"AttributeName": "n", "AttributeType": "N"},
                                                {"AttributeName": "s", "AttributeType": "S"}]
        description["GlobalSecondaryIndexes"] = GSIS
        description["LocalSecondaryIndexes"] = LSIS
    return description


def _at(second: int) -> datetime:
    return datetime.fromtimestamp(second, tz=UTC)


def _client(port: int) -> Any:
    return boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="anything", aws_secret_access_key="anything")


def _requests(sort_type: str) -> list[tuple[str, dict[str, Any]]]:
    """Every read the equivalence compares: GetItem, BatchGetItem, Query and Scan with their options."""
    low, high = SKS[sort_type][1], SKS[sort_type][4]
    value = {sort_type: str(low)}
    conditions: list[tuple[str, dict[str, Any]]] = [
        ("pk = :p", {}), ("pk = :p AND sk = :v", {":v": value}), ("pk = :p AND sk < :v", {":v": value}),
        ("pk = :p AND sk <= :v", {":v": value}), ("pk = :p AND sk > :v", {":v": value}),
        ("pk = :p AND sk >= :v", {":v": value}),
        ("pk = :p AND sk BETWEEN :v AND :w", {":v": value, ":w": {sort_type: str(high)}}),
    ]
    if sort_type == "S":
        conditions.append(("pk = :p AND begins_with(sk, :v)", {":v": {"S": "a"}}))
    requests: list[tuple[str, dict[str, Any]]] = []
    for pk in [*PKS, "nobody"]:
        for condition, values in conditions:
            for forward in (True, False):
                for limit in (None, 2):
                    request: dict[str, Any] = {"KeyConditionExpression": condition, "ScanIndexForward": forward,
                                               "ExpressionAttributeValues": {":p": {"S": pk}, **values}}
                    if limit:
                        request["Limit"] = limit
                    requests.append(("query", request))
        base = {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": pk}}}
        requests += [
            ("query", {**base, "Select": "COUNT"}),
            ("query", {**base, "Limit": 2, "ProjectionExpression": "pk, sk, #n, tags",
                       "ExpressionAttributeNames": {"#n": "n"}}),
            ("query", {**base, "Limit": 2, "FilterExpression": "attribute_exists(#n) AND #n > :zero",
                       "ExpressionAttributeNames": {"#n": "n"},
                       "ExpressionAttributeValues": {":p": {"S": pk}, ":zero": {"N": "0"}}}),
            ("query", {**base,
                       "FilterExpression": "contains(tags, :c) OR (attribute_type(#s, :str) AND size(#s) > :two)",
                       "ExpressionAttributeNames": {"#s": "s"}, "Select": "COUNT",
                       "ExpressionAttributeValues": {":p": {"S": pk}, ":c": {"S": "a"}, ":two": {"N": "2"},
                                                     ":str": {"S": "S"}}}),
        ]
    for limit in (None, 1, 3):
        requests.append(("scan", {"Limit": limit} if limit else {}))
        for segment in range(3):
            requests.append(("scan", {"Segment": segment, "TotalSegments": 3, **({"Limit": limit} if limit else {})}))
    requests += [
        ("scan", {"Select": "COUNT", "FilterExpression": "attribute_type(doc, :m)",
                  "ExpressionAttributeValues": {":m": {"S": "M"}}}),
        ("scan", {"Limit": 2, "FilterExpression": "NOT attribute_exists(tags)", "ProjectionExpression": "sk, tags"}),
    ]
    requests += _index_requests()
    keys = [_key(pk, sk, sort_type) for pk in PKS for sk in SKS[sort_type]]
    requests += [("get_item", {"Key": key}) for key in keys]
    requests += [("get_item", {"Key": key, "ProjectionExpression": "#n, doc", "ExpressionAttributeNames": {"#n": "n"}})
                 for key in keys[:5]]
    requests.append(("batch_get_item", {"RequestItems": {TABLE: {"Keys": keys[:20]}}}))
    return requests


def _index_requests() -> list[tuple[str, dict[str, Any]]]:
    """Query and Scan on each secondary index: key conditions, order, pages, projections, sparse items, errors."""
    n_conditions: list[tuple[str, dict[str, Any]]] = [
        ("", {}), (" AND n = :v", {":v": {"N": "0"}}), (" AND n < :v", {":v": {"N": "1"}}),
        (" AND n >= :v", {":v": {"N": "-1"}}), (" AND n BETWEEN :v AND :w", {":v": {"N": "-1"}, ":w": {"N": "2"}}),
    ]
    partitions = [("by_s", "s", {"S": v}) for v in [*S_VALUES[:3], "nobody"]] + \
                 [("by_pk_n", "pk", {"S": v}) for v in PKS]
    requests: list[tuple[str, dict[str, Any]]] = []
    for index, attribute, value in partitions:
        for condition, values in n_conditions:
            for forward in (True, False):
                for limit in (None, 2):
                    request: dict[str, Any] = {
                        "IndexName": index, "KeyConditionExpression": f"#h = :p{condition}",
                        "ScanIndexForward": forward,
                        "ExpressionAttributeNames": {"#h": attribute},
                        "ExpressionAttributeValues": {":p": value, **values}, **({"Limit": limit} if limit else {})}
                    requests.append(("query", request))
        base = {"IndexName": index, "KeyConditionExpression": "#h = :p", "ExpressionAttributeNames": {"#h": attribute},
                "ExpressionAttributeValues": {":p": value}}
        requests += [("query", {**base, "Select": "COUNT"}),
                     ("query", {**base, "Limit": 1, "ProjectionExpression": "pk, sk, tags, doc"}),
                     ("query", {**base, "FilterExpression": "attribute_exists(tags)"})]
    for n in range(-3, 4):
        for forward in (True, False):
            requests.append(("query", {"IndexName": "by_n", "KeyConditionExpression": "n = :n", "ScanIndexForward":
                                       forward, "ExpressionAttributeValues": {":n": {"N": str(n)}}, "Limit": 2}))
    for index in ("by_s", "by_n", "by_pk_n"):
        for limit in (None, 1, 3):
            requests.append(("scan", {"IndexName": index, **({"Limit": limit} if limit else {})}))
            requests.append(("scan", {"IndexName": index, "Segment": 1, "TotalSegments": 2,
                                      **({"Limit": limit} if limit else {})}))
    requests += [
        ("query", {"IndexName": "by_s", "KeyConditionExpression": "s = :p", "Select": "ALL_ATTRIBUTES",
                   "ExpressionAttributeValues": {":p": {"S": "a"}}}),
        ("query", {"IndexName": "by_n", "KeyConditionExpression": "n = :p", "ConsistentRead": True,
                   "ExpressionAttributeValues": {":p": {"N": "1"}}}),
        ("scan", {"IndexName": "by_s", "FilterExpression": "n > :z", "ExpressionAttributeValues": {":z": {"N": "0"}}}),
    ]
    return requests


def _sets_sorted(value: Any) -> Any:
    """``value`` with the members of every SS, NS and BS sorted: a set's members come in no set order."""
    if isinstance(value, dict):
        return {k: sorted(v, key=repr) if k in ("SS", "NS", "BS") and isinstance(v, list) else _sets_sorted(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_sets_sorted(v) for v in value]
    return value


def _ask(client: Any, operation: str, request: dict[str, Any]) -> Any:
    """The answer to one read: every page of it (LastEvaluatedKey followed), or the error's code; sets sorted."""
    return _sets_sorted(_asked(client, operation, request))


def _asked(client: Any, operation: str, request: dict[str, Any]) -> Any:
    if operation == "batch_get_item":
        answer = client.batch_get_item(**request)
        return sorted(json.dumps(item, sort_keys=True, default=str) for item in answer["Responses"][TABLE])
    if operation == "get_item":
        return client.get_item(TableName=TABLE, **request).get("Item")
    pages = []
    start: dict[str, Any] = {}
    for _ in range(40):
        try:
            answer = getattr(client, operation)(TableName=TABLE, **request, **start)
        except ClientError as exc:
            return {"error": exc.response["Error"]["Code"]}
        pages.append({key: answer.get(key) for key in ("Items", "Count", "ScannedCount", "LastEvaluatedKey")})
        if "LastEvaluatedKey" not in answer:
            break
        start = {"ExclusiveStartKey": answer["LastEvaluatedKey"]}
    return pages


def _capture(store: Store, ops: list[tuple[str, Any, dict[str, Any] | None]], sort_type: str, moto: Any,
             ask_at: int, asked: list[Any]) -> None:
    """Write ``ops`` to the moto table one a second; before op ``ask_at`` ask every read; keep the stream."""
    records = []
    requests = _requests(sort_type)
    for number, (pk, sk, attributes) in enumerate([*ops, ("zz-last", SKS[sort_type][0], {})]):
        if number == ask_at:
            asked.extend(_ask(moto, operation, request) for operation, request in requests)
        key = _key(pk, sk, sort_type)
        old = moto.get_item(TableName=TABLE, Key=key).get("Item")
        sequence = 10**20 + 7 * (number + 1)
        if attributes is None:
            moto.delete_item(TableName=TABLE, Key=key)
            if old is not None:
                records.append(lambda_record(TABLE, "REMOVE", key, float(T0 + number), sequence, old=old))
            continue
        new = {**attributes, **key}
        moto.put_item(TableName=TABLE, Item=new)
        records.append(lambda_record(TABLE, "MODIFY" if old else "INSERT", key, float(T0 + number), sequence,
                                     new=new, old=old))
    capture_batch(store, records, decode_lambda_record, source="test")
    write_meta(store, meta_from_description(_description(sort_type, indexed=True)))


@contextmanager
def _captured(sort_type: str, ops: list[tuple[str, Any, dict[str, Any] | None]],
              ask_at: int) -> Iterator[tuple[Store, list[Any]]]:
    root = Path(tempfile.mkdtemp(prefix="serve-test-"))
    try:
        store = LocalStore(root)
        asked: list[Any] = []
        with mock_aws():
            moto = boto3.client("dynamodb", region_name="us-east-1")
            description = _description(sort_type, indexed=True)
            moto.create_table(TableName=TABLE, KeySchema=description["KeySchema"],
                              AttributeDefinitions=description["AttributeDefinitions"], BillingMode="PAY_PER_REQUEST",
                              GlobalSecondaryIndexes=GSIS, LocalSecondaryIndexes=LSIS)
            # The table's settings (its indexes) as observed before the first write.
            record(store, TABLE, {"table": stable(moto.describe_table(TableName=TABLE)["Table"])}, (T0 - 60) * 10**6)
            _capture(store, ops, sort_type, moto, ask_at, asked)
        yield store, asked
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("sort_type", ["N", "S"])
@settings(max_examples=5, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_every_read_at_a_moment_equals_what_the_table_answered_then(sort_type: str, data: st.DataObject) -> None:
    ops, ask_at = data.draw(workloads(sort_type))
    with _captured(sort_type, ops, ask_at) as (store, expected), \
            serving(store, [TABLE], _at(T0 + ask_at - 1)) as server:
        client = _client(server.server_address[1])
        answered = [_ask(client, operation, request) for operation, request in _requests(sort_type)]
    for (operation, request), want, got in zip(_requests(sort_type), expected, answered, strict=True):
        assert got == want, (operation, request)


@pytest.mark.slow
def test_sigterm_stops_serve_and_deletes_its_index(tmp_path: Path) -> None:
    ops: list[tuple[str, Any, dict[str, Any] | None]] = [("a", 1, {"n": {"N": "5"}})]
    with _captured("N", ops, 1) as (store, _):
        server = subprocess.Popen([sys.executable, "-m", "ddb_rewind", "serve", "--store", store.uri, "--at",
                                   _at(T0).isoformat(), "--port", str(free_port())], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)})
        try:
            assert server.stdout is not None
            assert "serving" in server.stdout.readline()
            assert [p.name for p in tmp_path.glob("ddb-rewind-serve-*")], "the index is where TMPDIR says"
            server.terminate()
            _out, err = server.communicate(timeout=30)
        finally:
            server.kill()
    assert server.returncode == 0, err
    assert err.splitlines()[-1] == "stopped"
    assert list(tmp_path.glob("ddb-rewind-serve-*")) == []


@pytest.fixture(scope="module")
def served() -> Iterator[int]:
    """``orders`` (sort key N) with three items, served at the moment after the third (read-only, so one
    server answers every test of the module)."""
    ops: list[tuple[str, Any, dict[str, Any] | None]] = [("a", 1, {"n": {"N": "5"}}), ("a", 2, {}), ("b", 1, {})]
    with _captured("N", ops, len(ops)) as (store, _), serving(store, [TABLE], _at(T0 + 2)) as server:
        yield int(server.server_address[1])


def _post(port: int, target: str, body: bytes = b"{}") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, method="POST",
                                     headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.0"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("operation", ["PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems",
                                       "CreateTable", "DeleteTable", "UpdateTable", "ExecuteStatement"])
def test_every_write_is_refused_in_dynamodbs_error_shape(served: int, operation: str) -> None:
    status, body = _post(served, f"DynamoDB_20120810.{operation}",
                         json.dumps({"TableName": TABLE, "Item": {"pk": {"S": "x"}, "sk": {"N": "1"}}}).encode())
    assert status == 400
    assert body["__type"] == "com.amazonaws.dynamodb.v20120810#ValidationException"
    assert "read-only moment" in body["message"] and operation in body["message"]


def test_boto3_sees_a_refused_write_as_a_validation_error(served: int) -> None:
    with pytest.raises(ClientError) as raised:
        _client(served).put_item(TableName=TABLE, Item={"pk": {"S": "x"}, "sk": {"N": "1"}})
    assert raised.value.response["Error"]["Code"] == "ValidationException"


def test_an_unknown_operation_is_an_unknown_operation_error(served: int) -> None:
    status, body = _post(served, "DynamoDB_20120810.Frobnicate")
    assert (status, body["__type"]) == (400, "com.amazonaws.dynamodb.v20120810#UnknownOperationException")


def test_a_body_that_is_not_json_is_a_serialization_error(served: int) -> None:
    status, body = _post(served, "DynamoDB_20120810.GetItem", b"{not json")
    assert (status, body["__type"]) == (400, "com.amazonaws.dynamodb.v20120810#SerializationException")


def test_a_request_moto_cannot_parse_is_a_400_not_a_500(served: int) -> None:
    status, body = _post(served, "DynamoDB_20120810.Query", json.dumps({"TableName": TABLE, "Limit": "x"}).encode())
    assert status == 400 and body["__type"].startswith("com.amazonaws.dynamodb.v20120810#")


def test_describe_table_gives_the_keys_and_the_item_count_at_the_moment(served: int) -> None:
    table = _client(served).describe_table(TableName=TABLE)["Table"]
    assert (table["TableStatus"], table["ItemCount"]) == ("ACTIVE", 3)
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"},
                                  {"AttributeName": "sk", "KeyType": "RANGE"}]
    assert _client(served).list_tables()["TableNames"] == [TABLE]


def test_describe_table_lists_the_indexes_the_table_had_at_the_moment(served: int) -> None:
    table = _client(served).describe_table(TableName=TABLE)["Table"]
    assert sorted(index["IndexName"] for index in table["GlobalSecondaryIndexes"]) == ["by_n", "by_s"]
    assert [index["IndexName"] for index in table["LocalSecondaryIndexes"]] == ["by_pk_n"]


def test_a_keys_only_index_holds_only_the_items_with_its_key_and_only_their_keys(served: int) -> None:
    answer = _client(served).query(TableName=TABLE, IndexName="by_n", KeyConditionExpression="n = :n",
                                   ExpressionAttributeValues={":n": {"N": "5"}})
    # Only ("a", 1) has an ``n``: the others are not in the sparse index.
    assert answer["Items"] == [{"pk": {"S": "a"}, "sk": {"N": "1"}, "n": {"N": "5"}}]
    assert _client(served).scan(TableName=TABLE, IndexName="by_n")["Count"] == 1


def test_an_index_the_table_did_not_have_is_a_validation_error(served: int) -> None:
    with pytest.raises(ClientError) as raised:
        _client(served).scan(TableName=TABLE, IndexName="by_nothing")
    assert raised.value.response["Error"]["Code"] == "ValidationException"


def test_a_table_not_served_is_resource_not_found(served: int) -> None:
    with pytest.raises(ClientError) as raised:
        _client(served).get_item(TableName="customers", Key={"pk": {"S": "a"}})
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_serve_refuses_a_moment_before_coverage_with_exit_5(capsys: pytest.CaptureFixture[str]) -> None:
    with _captured("N", [("a", 1, {})], 1) as (store, _):
        code = main(["serve", "--store", store.uri, "--at", _at(T0 - 60).isoformat(), "--tables", TABLE,
                     "--port", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5
    assert len(err) == 1 and err[0].startswith("ddb-rewind: error:") and TABLE in err[0]


def test_serve_refuses_when_one_of_the_tables_cannot_be_proven(capsys: pytest.CaptureFixture[str]) -> None:
    with _captured("N", [("a", 1, {})], 1) as (store, _):
        code = main(["serve", "--store", store.uri, "--at", _at(T0).isoformat(), "--tables", f"{TABLE},customers",
                     "--port", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4  # as replay --tables: refused for all, naming the table the store does not hold
    assert len(err) == 1 and "customers" in err[0]


def test_serve_without_motos_dynamodb_is_one_clear_line(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # moto's handler is imported beside the loading: a broken install is still one line, exit 2.
    for module in ("replayer.serving.protocol", "replayer.serving.moment"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, "moto.dynamodb.responses", None)
    with _captured("N", [("a", 1, {})], 1) as (store, _):
        code = main(["serve", "--store", store.uri, "--at", _at(T0).isoformat(), "--tables", TABLE, "--port", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("ddb-rewind: error: serve needs moto's DynamoDB")


def test_a_busy_port_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy, _captured("N", [("a", 1, {})], 1) as (store, _):
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = main(["serve", "--store", store.uri, "--at", _at(T0).isoformat(), "--port", str(busy.getsockname()[1])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot listen" in err[0]


@given(st.lists(st.one_of(st.integers(-(10**38) + 1, 10**38 - 1).map(str),
                          st.decimals(allow_nan=False, allow_infinity=False, places=6).map(str),
                          st.builds(lambda d, e: f"{d}E{e}", st.integers(-(10**5), 10**5), st.integers(-120, 120))),
                min_size=2, max_size=20))
def test_numbers_order_exactly_as_dynamodb_orders_them(numbers: list[str]) -> None:
    by_value = sorted(numbers, key=Decimal)
    by_bytes = sorted(numbers, key=encode_number)
    assert [Decimal(n) for n in by_bytes] == [Decimal(n) for n in by_value]


def test_equal_numbers_written_differently_are_one_key() -> None:
    assert encode_number("1.50") == encode_number("1.5") == encode_number("15E-1")
    assert encode_number("-0") == encode_number("0.000")


@given(st.lists(st.text(max_size=6), min_size=2, max_size=10), st.lists(st.binary(max_size=6), min_size=2, max_size=10))
def test_strings_and_binaries_order_by_their_bytes(strings: list[str], blobs: list[bytes]) -> None:
    import base64

    assert sorted(strings, key=lambda s: encode_value({"S": s})) == sorted(strings, key=lambda s: s.encode())
    encoded = [{"B": base64.b64encode(b).decode()} for b in blobs]
    assert [encode_value(v) for v in sorted(encoded, key=encode_value)] == sorted(blobs)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_the_aws_cli_queries_a_served_moment_unchanged() -> None:
    ops: list[tuple[str, Any, dict[str, Any] | None]] = [("customer-034", 1, {"total": {"N": "12"}})]
    with _captured("N", ops, 1) as (store, _):
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        server = subprocess.Popen([sys.executable, "-m", "ddb_rewind", "serve", "--store", store.uri, "--at",
                                   _at(T0).isoformat(), "--port", str(port)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert server.stdout is not None
            assert "serving" in server.stdout.readline()
            done = subprocess.run(
                ["aws", "dynamodb", "query", "--endpoint-url", f"http://127.0.0.1:{port}", "--region", "us-east-1",
                 "--table-name", TABLE, "--key-condition-expression", "pk = :p",
                 "--expression-attribute-values", '{":p":{"S":"customer-034"}}', "--output", "json"],
                capture_output=True, text=True, check=False, timeout=120,
                env={**env, "AWS_ACCESS_KEY_ID": "anything", "AWS_SECRET_ACCESS_KEY": "anything"})
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["Items"] == [{"pk": {"S": "customer-034"}, "sk": {"N": "1"},
                                                         "total": {"N": "12"}}]
        finally:
            server.terminate()
            server.wait(timeout=30)


@pytest.mark.parametrize("shape", ["one 409,000-byte string", "1,000 attributes"])
def test_an_item_at_dynamodbs_limits_is_served_whole(shape: str, store: Store) -> None:
    # DynamoDB's limit is 400 KB (409,600 bytes of names and values); moto's own item check stops at
    # 405,000 and costs a sum over every attribute for each one added.
    key = _key("wide", 1, "N")
    if shape.startswith("one"):
        item = {**key, "big": {"S": "x" * 409_000}}
    else:
        item = {**key, **{f"attribute_{number:04}": {"S": "v" * 300} for number in range(1_000)}}
    capture_batch(store, [lambda_record(TABLE, "INSERT", key, float(T0), 10**20, new=item)], decode_lambda_record,
                  source="test")
    write_meta(store, meta_from_description(_description("N")))

    with serving(store, [TABLE], _at(T0)) as server:
        client = _client(int(server.server_address[1]))
        got = client.get_item(TableName=TABLE, Key=key)["Item"]
        scanned = client.scan(TableName=TABLE)["Items"]

    assert got == item and scanned == [item]


def _inserted(store: Store, items: list[dict[str, Any]], description: dict[str, Any]) -> None:
    """``items`` captured as INSERTs at T0 (one record each, rising sequence numbers), and the table's meta."""
    records = [lambda_record(TABLE, "INSERT", {k: item[k] for k in ("pk", "sk")}, float(T0), 10**20 + number,
                             new=item) for number, item in enumerate(items)]
    capture_batch(store, records, decode_lambda_record, source="test")
    write_meta(store, meta_from_description(description))


def _matching(client: Any, expression: str, value: dict[str, Any]) -> list[str]:
    """The partition keys of the items a Scan with ``expression`` (``:v`` = ``value``) keeps, sorted."""
    answer = client.scan(TableName=TABLE, FilterExpression=expression, ExpressionAttributeValues={":v": value})
    return sorted(item["pk"]["S"] for item in answer["Items"])


def test_binary_attributes_are_compared_and_sized_as_bytes(store: Store) -> None:
    # The store keeps binaries as base64 text; DynamoDB compares their bytes and size() counts bytes.
    items = [{**_key("zero", 1, "N"), "v": {"B": "AA=="}, "bs": {"BS": ["AA==", "AQ=="]},
              "m": {"M": {"b": {"B": "AA=="}}}},
             {**_key("two", 1, "N"), "v": {"B": "/wE="}}]
    _inserted(store, items, _description("N"))

    with serving(store, [TABLE], _at(T0)) as server:
        client = _client(int(server.server_address[1]))
        assert _matching(client, "v = :v", {"B": b"\x00"}) == ["zero"]
        assert _matching(client, "v IN (:v)", {"B": b"\xff\x01"}) == ["two"]
        assert _matching(client, "contains(bs, :v)", {"B": b"\x01"}) == ["zero"]
        assert _matching(client, "m.b = :v", {"B": b"\x00"}) == ["zero"]
        assert _matching(client, "size(v) = :v", {"N": "2"}) == ["two"]
        assert client.get_item(TableName=TABLE, Key=_key("zero", 1, "N"))["Item"]["bs"] == {"BS": [b"\x00", b"\x01"]}


def test_values_of_two_types_are_never_equal_and_compare_false(store: Store) -> None:
    # moto compares Python values: N 1 == BOOL true there, and N < S raised a TypeError for the request.
    values = {"one": {"N": "1"}, "zero": {"N": "0"}, "true": {"BOOL": True}, "false": {"BOOL": False},
              "text": {"S": "1"}, "listed": {"L": [{"BOOL": True}]}}
    _inserted(store, [{**_key(name, 1, "N"), "v": value} for name, value in values.items()], _description("N"))

    with serving(store, [TABLE], _at(T0)) as server:
        client = _client(int(server.server_address[1]))
        assert _matching(client, "v = :v", {"BOOL": True}) == ["true"]
        assert _matching(client, "v = :v", {"N": "1"}) == ["one"]
        assert _matching(client, "v IN (:v)", {"BOOL": False}) == ["false"]
        assert _matching(client, "v <> :v", {"N": "0"}) == ["false", "listed", "one", "text", "true"]
        assert _matching(client, "contains(v, :v)", {"N": "1"}) == []
        assert _matching(client, "v < :v", {"N": "5"}) == ["one", "zero"]
        assert _matching(client, ":v > v", {"N": "5"}) == ["one", "zero"]
        assert _matching(client, "v >= :v", {"S": "0"}) == ["text"]


def test_between_with_its_bounds_reversed_is_refused_as_dynamodb_refuses_it(served: int) -> None:
    with pytest.raises(ClientError, match="BETWEEN operator requires upper bound"):
        _client(served).query(TableName=TABLE, KeyConditionExpression="pk = :p AND sk BETWEEN :a AND :b",
                              ExpressionAttributeValues={":p": {"S": "a"}, ":a": {"N": "5"}, ":b": {"N": "1"}})


@pytest.mark.parametrize("number", ["1E+126", "1E-131", "1" * 39])
@pytest.mark.parametrize("operation", ["query", "get_item", "scan", "batch_get_item"])
def test_a_number_dynamodb_refuses_is_refused_in_any_read(served: int, operation: str, number: str) -> None:
    # Compared as it came, it was answered: DynamoDB refuses it (beyond its range, or 39 digits).
    value = {"N": number}
    requests = {
        "query": {"TableName": TABLE, "KeyConditionExpression": "pk = :p AND sk > :n",
                  "ExpressionAttributeValues": {":p": {"S": "a"}, ":n": value}},
        "get_item": {"TableName": TABLE, "Key": {"pk": {"S": "a"}, "sk": value}},
        "scan": {"TableName": TABLE, "FilterExpression": "n IN (:n)",
                 "ExpressionAttributeValues": {":n": {"L": [{"NS": ["1", number]}]}}},
        "batch_get_item": {"RequestItems": {TABLE: {"Keys": [{"pk": {"S": "a"}, "sk": value}]}}},
    }
    with pytest.raises(ClientError, match="ValidationException"):
        getattr(_client(served), operation)(**requests[operation])


def _query_a(served: int, condition: str, **request: Any) -> list[str]:
    values = {":p": {"S": "a"}, ":one": {"N": "1"}, ":two": {"N": "2"}, **request.pop("values", {})}
    answer = _client(served).query(TableName=TABLE, KeyConditionExpression=condition,
                                   ExpressionAttributeValues=values, **request)
    return [item["sk"]["N"] for item in answer["Items"]]


def test_two_conditions_on_the_sort_key_are_refused_not_one_of_them_dropped(served: int) -> None:
    assert _query_a(served, "pk = :p AND sk >= :two") == ["2"]
    # moto keeps the last condition and answered 1 and 2; DynamoDB allows one condition per key.
    with pytest.raises(ClientError, match="one condition per key"):
        _query_a(served, "pk = :p AND sk >= :two AND sk <= :two")


@pytest.mark.parametrize("attribute", ["sk", "pk"])
def test_a_query_filter_on_a_key_attribute_is_refused_as_dynamodb_refuses_it(served: int, attribute: str) -> None:
    with pytest.raises(ClientError, match=f"non-primary key attributes: Primary key attribute: {attribute}"):
        _query_a(served, "pk = :p", FilterExpression=f"{attribute} = :v", values={":v": {"N": "1"}})
    with pytest.raises(ClientError, match=f"non-primary key attributes: Primary key attribute: {attribute}"):
        _query_a(served, "pk = :p", FilterExpression="attribute_exists(#k)", ExpressionAttributeNames={"#k": attribute})


def test_a_scan_filter_may_name_a_key_attribute(served: int) -> None:
    answer = _client(served).scan(TableName=TABLE, FilterExpression="sk = :one",
                                  ExpressionAttributeValues={":one": {"N": "1"}})
    assert sorted(item["pk"]["S"] for item in answer["Items"]) == ["a", "b"]


def test_a_query_starting_key_outside_its_sort_key_condition_is_refused(served: int) -> None:
    with pytest.raises(ClientError, match="does not match the range key predicate"):
        _query_a(served, "pk = :p AND sk > :one", ExclusiveStartKey={"pk": {"S": "a"}, "sk": {"N": "1"}})


def test_a_range_query_is_still_walked_page_by_page(served: int) -> None:
    pages: list[list[str]] = []
    start: dict[str, Any] = {}
    while True:
        answer = _client(served).query(TableName=TABLE, KeyConditionExpression="pk = :p AND sk >= :one",
                                       ExpressionAttributeValues={":p": {"S": "a"}, ":one": {"N": "1"}}, Limit=1,
                                       **start)
        pages.append([item["sk"]["N"] for item in answer["Items"]])
        if "LastEvaluatedKey" not in answer:
            break
        start = {"ExclusiveStartKey": answer["LastEvaluatedKey"]}
    assert [n for page in pages for n in page] == ["1", "2"]


@pytest.mark.parametrize("empty", [{"SS": []}, {"NS": []}, {"BS": []}, {"M": {"x": {"SS": []}}}])
def test_an_empty_set_is_refused_as_dynamodb_refuses_it(served: int, empty: dict[str, Any]) -> None:
    with pytest.raises(ClientError, match="may not be empty"):
        _client(served).scan(TableName=TABLE, FilterExpression="n = :v", ExpressionAttributeValues={":v": empty})


def test_one_key_written_two_ways_is_a_duplicate_in_batch_get_item(served: int) -> None:
    keys = [{"pk": {"S": "a"}, "sk": {"N": "1"}}, {"sk": {"N": "1.0"}, "pk": {"S": "a"}}]
    with pytest.raises(ClientError, match="contains duplicates"):
        _client(served).batch_get_item(RequestItems={TABLE: {"Keys": keys}})


@pytest.mark.parametrize(("expression", "expected"), [
    ("a[0], a[2]", {"a": {"L": [{"S": "a0"}, {"S": "a2"}]}}),
    ("a[2], a[0]", {"a": {"L": [{"S": "a0"}, {"S": "a2"}]}}),
    ("a[3][1]", {"a": {"L": [{"L": [{"N": "6"}]}]}}),
    ("a[1].b, a[1].c", {"a": {"L": [{"M": {"b": {"N": "1"}, "c": {"S": "x"}}}]}}),
    ("pk, a[9], m.nope", {"pk": {"S": "p"}}),
])
def test_a_projection_keeps_every_path_it_names_lists_in_order(store: Store, expression: str,
                                                              expected: dict[str, Any]) -> None:
    # moto merged paths as nested dictionaries: a[0], a[2] kept only one element.
    item = {**_key("p", 1, "N"), "a": {"L": [{"S": "a0"}, {"M": {"b": {"N": "1"}, "c": {"S": "x"}}}, {"S": "a2"},
                                              {"L": [{"N": "5"}, {"N": "6"}]}]}, "m": {"M": {"x": {"N": "1"}}}}
    _inserted(store, [item], _description("N"))
    with serving(store, [TABLE], _at(T0)) as server:
        got = _client(int(server.server_address[1])).get_item(TableName=TABLE, Key=_key("p", 1, "N"),
                                                              ProjectionExpression=expression)["Item"]
    assert got == expected


@pytest.mark.parametrize("expression", ["a[0], a", "m, m.x", "a[0], a.b"])
def test_overlapping_or_conflicting_projection_paths_are_refused_as_dynamodb_refuses_them(served: int,
                                                                                          expression: str) -> None:
    with pytest.raises(ClientError, match="Two document paths"):
        _client(served).get_item(TableName=TABLE, Key={"pk": {"S": "a"}, "sk": {"N": "1"}},
                                 ProjectionExpression=expression)


def test_a_local_index_fetches_from_the_table_what_a_request_names_beyond_its_projection(store: Store) -> None:
    # DynamoDB's Query reference: a local secondary index fetches non-projected attributes from the table.
    description = _description("N")
    description["AttributeDefinitions"].append({"AttributeName": "lk", "AttributeType": "S"})
    description["LocalSecondaryIndexes"] = [{
        "IndexName": "by_lk", "Projection": {"ProjectionType": "KEYS_ONLY"},
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "lk", "KeyType": "RANGE"}]}]
    items = [{**_key("p", number, "N"), "lk": {"S": f"x{number}"}, "big": {"N": str(10 * number)}}
             for number in range(3)]
    _inserted(store, items, description)
    query = {"TableName": TABLE, "IndexName": "by_lk", "KeyConditionExpression": "pk = :p",
             "ExpressionAttributeValues": {":p": {"S": "p"}}}

    with serving(store, [TABLE], _at(T0)) as server:
        client = _client(int(server.server_address[1]))
        whole = client.query(**query, Select="ALL_ATTRIBUTES")["Items"]
        named = client.query(**query, ProjectionExpression="sk, big")["Items"]
        filtered = client.query(**{**query, "ExpressionAttributeValues": {":p": {"S": "p"}, ":v": {"N": "5"}}},
                                FilterExpression="big > :v")["Items"]
        projected = client.query(**query)["Items"]

    assert whole == items
    assert named == [{"sk": item["sk"], "big": item["big"]} for item in items]
    assert filtered == [{k: item[k] for k in ("pk", "sk", "lk")} for item in items[1:]]
    assert projected == [{k: item[k] for k in ("pk", "sk", "lk")} for item in items]


def test_the_items_a_request_read_are_not_kept_once_it_is_answered(served: int) -> None:
    # A serve that runs for days answers millions of reads: what one read made must not outlive it.
    from moto.dynamodb.models.dynamo_type import Item

    def items_alive() -> set[int]:
        gc.collect()
        return {id(thing) for thing in gc.get_objects() if isinstance(thing, Item)}

    before = items_alive()
    client = _client(served)
    scanned = client.scan(TableName=TABLE)["Items"]
    client.get_item(TableName=TABLE, Key={name: scanned[0][name] for name in ("pk", "sk")}, ProjectionExpression="pk")

    assert len(scanned) == 3
    assert items_alive() - before == set()
