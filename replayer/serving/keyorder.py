"""Key values as bytes that sort exactly as DynamoDB orders them, so SQLite's BLOB order is DynamoDB's.

DynamoDB orders S by UTF-8 bytes, B by unsigned bytes and N numerically, exactly (38 significant
digits, far past a float). A number becomes: a sign class (negative < zero < positive), then its
decimal exponent and its digits, both complemented for a negative number so that a larger magnitude
sorts first. Digits carry no trailing zeros, so equal numbers written differently (``1.0``, ``1``)
have one encoding; a negative number's digits end in a byte above any complemented digit, so that
-0.12 sorts after -0.123 although its digits are a prefix.
"""

from __future__ import annotations

import base64
from decimal import Decimal, InvalidOperation
from typing import Any

KEY_TYPES = ("S", "N", "B")
_NEGATIVE, _ZERO, _POSITIVE = b"\x01", b"\x02", b"\x03"
# DynamoDB's exponents run from -130 to +126; the bias keeps every one within two bytes, unsigned.
_EXPONENT_BIAS = 1 << 14


class NotAKey(ValueError):
    """A value that cannot be a key attribute's value (a type other than S, N, B, or unreadable)."""


def encode_number(text: str) -> bytes:
    """Bytes for a DynamoDB number that sort in numeric order."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise NotAKey(f"{text[:40]!r} is not a number") from None
    if not value.is_finite():
        raise NotAKey(f"{text[:40]!r} is not a number")
    if value.is_zero():
        return _ZERO
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    while digits and digits[-1] == 0:
        digits = digits[:-1]
        exponent += 1
    # value = 0.d1d2...dn x 10^adjusted
    adjusted = exponent + len(digits) + _EXPONENT_BIAS
    text_digits = bytes(48 + d for d in digits)
    if not sign:
        return _POSITIVE + adjusted.to_bytes(2, "big") + text_digits
    flipped = (0xFFFF - adjusted).to_bytes(2, "big")
    return _NEGATIVE + flipped + bytes(0xFF - b for b in text_digits) + b"\xff"


def encode_value(value: Any) -> bytes:
    """Bytes for one key attribute value in DynamoDB JSON (``{"S": ...}``, ``{"N": ...}``, ``{"B": base64}``)."""
    if not isinstance(value, dict) or len(value) != 1:
        raise NotAKey("a key value is one of S, N or B")
    ((kind, inner),) = value.items()
    if kind not in KEY_TYPES or not isinstance(inner, str | bytes):
        raise NotAKey(f"a key value is one of S, N or B, not {kind!r}")
    if kind == "S":
        return inner.encode("utf-8") if isinstance(inner, str) else inner
    if kind == "N":
        return encode_number(inner if isinstance(inner, str) else inner.decode("ascii"))
    if isinstance(inner, bytes):
        return inner
    try:
        return base64.b64decode(inner, validate=True)
    except ValueError:
        raise NotAKey("a B key value is not base64") from None


def prefix_end(prefix: bytes) -> bytes | None:
    """The least byte string greater than every string starting with ``prefix`` (None: there is none)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
