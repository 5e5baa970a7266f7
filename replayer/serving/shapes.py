"""What goes back on the wire: a response, and DynamoDB's error shape.

Kept apart from ``protocol`` (which is moto's handler) so that the server can answer "still loading"
while moto is still being imported beside the state's computation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

ERROR_TYPE = "com.amazonaws.dynamodb.v20120810#"
JSON_1_0 = "application/x-amz-json-1.0"


@dataclass(frozen=True)
class Response:
    """What goes back on the wire."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def error(kind: str, message: str) -> Response:
    """DynamoDB's error shape."""
    body = json.dumps({"__type": ERROR_TYPE + kind, "message": message}).encode()
    return Response(400, {"Content-Type": JSON_1_0}, body)
