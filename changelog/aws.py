"""AWS at the boundary: botocore's exceptions become typed errors with one clear line.

Library code keeps catching ``ClientError`` where a code means something to it (a failed condition
is a skip, throttling is retried, a missing target table is created). What escapes it, a missing
region, no credentials, an unreachable endpoint, access denied, a missing table, is turned into
AwsError (exit 7) or TableNotFound (exit 4) here, by ``translate``: the commands call AWS inside
``aws_boundary`` and the CLI edge uses the same function for anything that slips past.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from changelog.errors import AwsError, RewindError, TableNotFound

_DENIED = frozenset({
    "AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
    "ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "MissingAuthenticationToken",
    "SignatureDoesNotMatch", "InvalidAccessKeyId",
})
_THROTTLED = frozenset({
    "ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded", "SlowDown",
    "LimitExceededException",
})


def client(service: str, **kwargs: Any) -> Any:
    """A boto3 client; a missing region is one line (AwsError), not botocore's traceback."""
    try:
        return boto3.client(service, **kwargs)  # type: ignore[call-overload]
    except BotoCoreError as exc:
        raise translate(exc, f"creating an AWS {service} client") from None


def translate(exc: BaseException, action: str) -> RewindError:
    """The typed error for a botocore exception raised while doing ``action``."""
    if isinstance(exc, NoRegionError):
        return AwsError(f"{action}: no AWS region is set; set AWS_REGION or AWS_DEFAULT_REGION (or a profile's "
                        "region)")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AwsError(f"{action}: no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return AwsError(f"{action}: could not reach AWS ({exc}); check the network, AWS_REGION and "
                        "AWS_ENDPOINT_URL")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "ClientError"))
        message = str(error.get("Message", "")).splitlines()[0] if error.get("Message") else code
        if code == "ResourceNotFoundException":
            return TableNotFound(f"{action}: {message}; check the table name and the region")
        if code in _DENIED:
            return AwsError(f"{action}: AWS refused the call ({code}: {message}); check the credentials and "
                            "their permissions")
        if code in _THROTTLED:
            return AwsError(f"{action}: AWS kept throttling the calls ({code}) after retries; lower --workers "
                            "or --max-rate, or try again later")
        return AwsError(f"{action}: AWS call failed ({code}: {message})")
    if isinstance(exc, BotoCoreError):
        return AwsError(f"{action}: {exc}")
    return AwsError(f"{action}: {exc}")


@contextlib.contextmanager
def aws_boundary(action: str) -> Iterator[None]:
    """Run AWS calls; any botocore exception that escapes becomes a typed one-line error."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise translate(exc, action) from None
