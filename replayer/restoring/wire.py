"""BatchWriteItem bodies built from stored DynamoDB JSON, signed and retried by botocore.

A stored image is validated DynamoDB JSON with binaries as base64 text (changelog.codec), which is
exactly the JSON DynamoDB reads on the wire. Turning it into Python values only for botocore to
validate and serialise it back cost about 120 of the old writer's 151 CPU µs per item, so requests
travel here as their wire text (bytes) and a call's body is those texts joined.

How the body reaches botocore without hand-written signing: the client is called with a one-entry
placeholder and the real body under an extra parameter (``_BODY``). A ``before-parameter-build``
handler moves that body into the call's context before botocore validates the parameters, and a
``before-call`` handler puts it in place of the serialised placeholder, before the request is
created. Every attempt botocore makes (its own retries included) builds, signs and sends that body.
Without the handlers the extra parameter fails botocore's validation, so the placeholder can never be
sent by mistake; and it deletes a key with no attributes, which DynamoDB would refuse anyway.

Responses are botocore's, parsed as usual: on success they hold only ``UnprocessedItems``, which are
turned back into wire text to be sent again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from changelog.codec import base64_to_binaries, binaries_to_base64

_BODY = "DdbRewindWireBody"
_CONTEXT_KEY = "ddb_rewind_wire_body"
_EVENTS = "dynamodb.BatchWriteItem"


@dataclass(frozen=True)
class Sent:
    """What one BatchWriteItem call left to do, and whether the SDK had to retry it to get there."""

    unprocessed: list[bytes]
    retried: bool


def put_request(image: str | bytes) -> bytes:
    """The wire text of a PutRequest for a stored DynamoDB-JSON image (no parsing: it is already wire JSON)."""
    text = image.encode() if isinstance(image, str) else image
    return b'{"PutRequest":{"Item":' + text + b"}}"


def request_text(request: dict[str, Any]) -> bytes:
    """The wire text of a PutRequest/DeleteRequest given as boto3 low-level values (bytes for binaries)."""
    return orjson.dumps(binaries_to_base64(request))


def batch_body(table: str, requests: list[bytes]) -> bytes:
    """The BatchWriteItem body writing ``requests`` (wire texts) into ``table``."""
    return b'{"RequestItems":{' + json.dumps(table).encode() + b":[" + b",".join(requests) + b"]}}"


def envelope_bytes(table: str) -> int:
    """How many bytes of a body are not its requests' texts (the commas between them aside)."""
    return len(batch_body(table, []))


def _take_body(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    body = params.pop(_BODY, None)
    if body is not None:
        context[_CONTEXT_KEY] = body


def _put_body(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    body = context.get(_CONTEXT_KEY)
    if body is not None:
        params["body"] = body


def is_botocore_client(client: Any) -> bool:
    """Whether ``client`` is a botocore client (which the raw body path needs), not a stand-in."""
    return callable(getattr(getattr(getattr(client, "meta", None), "events", None), "register", None))


def enable_raw_bodies(client: Any) -> None:
    """Let ``client.batch_write_item`` take a ready body (idempotent; harmless to every other call)."""
    events = client.meta.events
    events.register(f"before-parameter-build.{_EVENTS}", _take_body, unique_id="ddb-rewind-wire-take-body")
    events.register(f"before-call.{_EVENTS}", _put_body, unique_id="ddb-rewind-wire-put-body")


def send_raw(client: Any, table: str, requests: list[bytes]) -> Sent:
    """One BatchWriteItem of ``requests`` through a botocore client set up by ``enable_raw_bodies``.

    Raises botocore's ClientError/BotoCoreError as a ``batch_write_item`` call would.
    """
    # Replaced by the body; a fresh one per call, since handlers may mutate parameters.
    placeholder: list[dict[str, Any]] = [{"DeleteRequest": {"Key": {}}}]
    response = client.batch_write_item(RequestItems={table: placeholder}, **{_BODY: batch_body(table, requests)})
    return _sent(response, table)


def send_values(client: Any, table: str, requests: list[bytes]) -> Sent:
    """One BatchWriteItem through any object with boto3's ``batch_write_item`` (values, not text).

    For stand-ins that are not botocore clients; the requests make the same round trip the old
    writer made (wire text to Python values, bytes for binaries).
    """
    items = [base64_to_binaries(orjson.loads(request)) for request in requests]
    return _sent(client.batch_write_item(RequestItems={table: items}), table)


def _sent(response: dict[str, Any], table: str) -> Sent:
    unprocessed = response.get("UnprocessedItems", {}).get(table, [])
    retried = bool(response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
    return Sent([request_text(request) for request in unprocessed], retried)
