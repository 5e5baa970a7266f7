"""Stored images reach DynamoDB byte for byte as BatchWriteItem bodies, signed by botocore, never parsed."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ParamValidationError

from changelog.codec import binaries_to_base64
from replayer.restoring.wire import batch_body, enable_raw_bodies, put_request, send_raw
from replayer.restoring.writer import WriteSettings, write_images

TABLE = "target"


@pytest.fixture
def binary_keyed(aws: None) -> Any:
    """A table keyed by a binary partition key and a number sort key."""
    client = boto3.client("dynamodb")
    client.create_table(TableName=TABLE,
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                   {"AttributeName": "n", "KeyType": "RANGE"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "B"},
                                              {"AttributeName": "n", "AttributeType": "N"}],
                        BillingMode="PAY_PER_REQUEST")
    return client


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _image(key: bytes, number: str, **extra: Any) -> str:
    item = {"pk": {"B": _b64(key)}, "n": {"N": number}, **extra}
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))


def _stored(client: Any) -> dict[str, dict[str, Any]]:
    items = client.scan(TableName=TABLE)["Items"]
    return {binaries_to_base64(item)["pk"]["B"] + "/" + item["n"]["N"]: binaries_to_base64(item) for item in items}


def _written(client: Any, images: list[str]) -> None:
    report, errors = write_images(client, TABLE, images, settings=WriteSettings(workers=2))
    assert (report.written, report.failed, errors) == (len(images), 0, [])


def _expected(images: list[str]) -> dict[str, dict[str, Any]]:
    parsed = [json.loads(image) for image in images]
    return {item["pk"]["B"] + "/" + item["n"]["N"]: item for item in parsed}


def test_binary_keys_round_trip_byte_for_byte(binary_keyed: Any) -> None:
    images = [_image(bytes([n, 0, 255, 10, 13]) + b"\x00" * n, str(n)) for n in range(30)]
    _written(binary_keyed, images)
    assert _stored(binary_keyed) == _expected(images)


def test_38_digit_numbers_keep_every_digit(binary_keyed: Any) -> None:
    numbers = ["12345678901234567890123456789012345678", "-0.0000000000000000000000000000000000001",
               "9.9999999999999999999999999999999999999E+125", "1E-130"]
    images = [_image(b"k", str(n), v={"N": number}, ns={"NS": [number, "1"]}) for n, number in enumerate(numbers)]
    _written(binary_keyed, images)
    assert _stored(binary_keyed) == _expected(images)


def test_unicode_sets_and_nesting_arrive_unchanged(binary_keyed: Any) -> None:
    image = _image(b"\xf0\x9f", "1", s={"S": "naïve ключ 🎁 \u2028 \"quoted\" \\ tab\t"},
                   ss={"SS": ["é", "🎁"]}, bs={"BS": [_b64(b"\x00"), _b64(b"\xff\xfe")]},
                   m={"M": {"名前": {"L": [{"NULL": True}, {"BOOL": False}, {"M": {}}, {"L": []}]}}})
    _written(binary_keyed, [image])
    assert _stored(binary_keyed) == _expected([image])


def test_a_400_kb_item_is_written_whole(binary_keyed: Any) -> None:
    blob = bytes(range(256)) * 1500  # 384,000 bytes
    image = _image(b"big", "1", blob={"B": _b64(blob)}, text={"S": "é" * 4000})
    _written(binary_keyed, [image])
    stored = binary_keyed.get_item(TableName=TABLE, Key={"pk": {"B": b"big"}, "n": {"N": "1"}})["Item"]
    assert stored["blob"]["B"] == blob
    assert binaries_to_base64(stored) == json.loads(image)


def test_the_body_sent_is_the_stored_text_and_its_signature_covers_it(binary_keyed: Any) -> None:
    sent: list[Any] = []
    binary_keyed.meta.events.register("before-send.dynamodb.BatchWriteItem", lambda request, **_: sent.append(request))
    images = [_image(b"a", "1", s={"S": "ключ"}), _image(b"b", "2")]
    _written(binary_keyed, images)
    (request,) = sent
    assert request.body == batch_body(TABLE, [put_request(image) for image in images])
    # Sign the same request afresh at the same moment: the signature must be the one that was sent.
    headers = {name: (value.decode() if isinstance(value, bytes) else value) for name, value in request.headers.items()}
    signed = headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    again = AWSRequest(method="POST", url=request.url, data=request.body,
                       headers={name: value for name, value in headers.items() if name.lower() in signed})
    again.context["timestamp"] = headers["X-Amz-Date"]
    credentials = boto3.Session().get_credentials().get_frozen_credentials()
    signer = SigV4Auth(credentials, "dynamodb", "us-east-1")
    signature = signer.signature(signer.string_to_sign(again, signer.canonical_request(again)), again)
    assert headers["Authorization"].endswith(f"Signature={signature}")


def test_a_client_without_the_handlers_refuses_the_body_and_sends_nothing(binary_keyed: Any) -> None:
    with pytest.raises(ParamValidationError):
        send_raw(boto3.client("dynamodb"), TABLE, [put_request(_image(b"a", "1"))])
    assert binary_keyed.scan(TableName=TABLE)["Count"] == 0


def test_other_calls_of_a_prepared_client_are_untouched(binary_keyed: Any) -> None:
    enable_raw_bodies(binary_keyed)
    enable_raw_bodies(binary_keyed)  # idempotent
    item = {"pk": {"B": b"x"}, "n": {"N": "5"}}
    binary_keyed.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": item}}]})
    assert binary_keyed.get_item(TableName=TABLE, Key={"pk": {"B": b"x"}, "n": {"N": "5"}})["Item"]["n"] == {"N": "5"}
