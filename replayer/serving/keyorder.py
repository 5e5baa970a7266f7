"""Key values as bytes that sort exactly as DynamoDB orders them, so byte order is DynamoDB's key order.

DynamoDB orders S by UTF-8 bytes, B by unsigned bytes and N numerically, exactly (38 significant
digits, far past a float). A number becomes: a sign class (negative < zero < positive), then its
decimal exponent and its digits, both complemented for a negative number so that a larger magnitude
sorts first. Digits carry no trailing zeros, so equal numbers written differently (``1.0``, ``1``)
have one encoding; a negative number's digits end in a byte above any complemented digit, so that
-0.12 sorts after -0.123 although its digits are a prefix.

The same rule is written twice: in Python (``encode_value``, for the keys of requests) and in DuckDB
SQL (``sql_key``, for every item of a served table at once, see ``serving.index``); the tests hold
the two equal. Only the plain forms DynamoDB itself writes are keys: a number as optional sign,
digits with at most one point, optional exponent (``NUMBER``); a binary as padded base64 (``BASE64``).
"""

from __future__ import annotations

import base64
import re
from decimal import Decimal, InvalidOperation
from typing import Any

KEY_TYPES = ("S", "N", "B")
_NEGATIVE, _ZERO, _POSITIVE = b"\x01", b"\x02", b"\x03"
# DynamoDB's exponents run from -130 to +126; the bias keeps every one within two bytes, unsigned.
_EXPONENT_BIAS = 1 << 14
# An exponent of more digits than this puts any number of fewer than 10**15 digits out of range, zero included.
_EXPONENT_DIGITS = 15
NUMBER = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
BASE64 = r"([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"


class NotAKey(ValueError):
    """A value that cannot be a key attribute's value (a type other than S, N, B, or unreadable)."""


def encode_number(text: str) -> bytes:
    """Bytes for a DynamoDB number that sort in numeric order."""
    # Decimal alone would take more (spaces, underscores, other scripts' digits, Infinity): not numbers DynamoDB writes.
    form = re.fullmatch(NUMBER, text)
    if form is None:
        raise NotAKey(f"{text[:40]!r} is not a number")
    if len(form.group(2)[1:].lstrip("+-").lstrip("0") if form.group(2) else "") > _EXPONENT_DIGITS:
        raise NotAKey(f"{text[:40]!r} is beyond any exponent DynamoDB holds")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise NotAKey(f"{text[:40]!r} is not a number") from None
    if value.is_zero():
        return _ZERO
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    while digits and digits[-1] == 0:
        digits = digits[:-1]
        exponent += 1
    # value = 0.d1d2...dn x 10^adjusted
    adjusted = exponent + len(digits) + _EXPONENT_BIAS
    if not 0 <= adjusted <= 0xFFFF:
        raise NotAKey(f"{text[:40]!r} is beyond any exponent DynamoDB holds")
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
    if re.fullmatch(BASE64, inner) is None:
        raise NotAKey("a B key value is not base64")
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


# -- the same rule in DuckDB SQL -------------------------------------------------------------------

_PARTS = r"^([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?)0*([0-9]+))?$"
# A macro's argument is copied wherever it is named: ``sql_bytes`` is given a column, and the
# rarer forms bind theirs once by ``list_transform([x], lambda v: ...)[1]`` (the regular expressions
# would otherwise run a dozen times per value).
_MACROS = (
    # A positive integer of up to 127 digits: every byte of its encoding is ASCII (the exponent's two
    # are 0x40 and the digit count), so it is built as text, with no hex round trip.
    f"""CREATE OR REPLACE TEMP MACRO rewind_number_key(x) AS CASE
        WHEN regexp_full_match(x, '[1-9][0-9]*') AND length(x) <= 127
            THEN encode(chr({_POSITIVE[0]}) || chr({_EXPONENT_BIAS >> 8}) || chr(CAST(length(x) AS INTEGER))
                        || rtrim(x, '0'))
        WHEN x = '0' THEN unhex('{_ZERO.hex()}')
        WHEN regexp_full_match(x, '{NUMBER}') THEN list_transform(
            [regexp_extract(x, '{_PARTS}', ['sign', 'int', 'frac', 'esign', 'exp'])],
            lambda p: rewind_number_scaled(p.sign = '-', ltrim(p.int || p.frac, '0'),
                CASE WHEN p.exp = '' THEN 0 WHEN length(p.exp) > {_EXPONENT_DIGITS} THEN NULL
                     ELSE CAST(p.exp AS BIGINT) * (CASE WHEN p.esign = '-' THEN -1 ELSE 1 END) END
                - length(p.frac)))[1] END""",
    # 0.digits x 10^(exp10 + len(digits)): ``digits`` without leading zeros, exp10 the exponent of its last digit.
    f"""CREATE OR REPLACE TEMP MACRO rewind_number_scaled(negative, digits, exp10) AS list_transform(
        [{{'negative': negative, 'digits': digits, 'exp10': exp10}}], lambda v: CASE
            WHEN v.exp10 IS NULL THEN NULL
            WHEN v.digits = '' THEN unhex('{_ZERO.hex()}')
            ELSE rewind_number_bytes(v.negative, rtrim(v.digits, '0'), v.exp10 + length(v.digits) + {_EXPONENT_BIAS})
        END)[1]""",
    # A negative number's bytes are complemented: '3d' (the digit d in ASCII) becomes 'C' (F - d), one translate.
    f"""CREATE OR REPLACE TEMP MACRO rewind_number_bytes(negative, digits, adjusted) AS CASE
        WHEN adjusted < 0 OR adjusted > 65535 THEN NULL
        WHEN negative THEN unhex('{_NEGATIVE.hex()}' || lpad(hex(65535 - adjusted), 4, '0')
            || translate(hex(digits), '0123456789', 'FEDCBA9876') || 'FF')
        ELSE unhex('{_POSITIVE.hex()}' || lpad(hex(adjusted), 4, '0') || hex(digits))
        END""",
)


def define_sql(con: Any) -> None:
    """Define on a DuckDB connection the macros ``sql_key`` uses."""
    for macro in reversed(_MACROS):  # each macro names the next ones
        con.execute(macro)


def sql_text(value: str, kind: str) -> str:
    """SQL for the text inside a key value of type ``kind`` (``value``: SQL of JSON ``{"S": ...}``, a column or
    cheap to repeat); NULL when the value is not one member of that type holding a string."""
    if kind not in KEY_TYPES:
        raise NotAKey(f"a key value is one of S, N or B, not {kind!r}")
    return (f"(CASE WHEN json_type({value}) = 'OBJECT' AND len(json_keys({value})) = 1 "
            f"AND json_type({value}, '$.{kind}') = 'VARCHAR' THEN {value} ->> '$.{kind}' END)")


def sql_bytes(text: str, kind: str) -> str:
    """SQL for ``encode_value`` of a key value of type ``kind`` given the text inside it (``text``: a column, or
    SQL cheap to repeat, of type VARCHAR): a BLOB, NULL where ``encode_value`` refuses. ``define_sql`` first."""
    if kind == "S":
        return f"encode({text})"
    if kind == "N":
        return f"rewind_number_key({text})"
    if kind == "B":
        return f"(CASE WHEN regexp_full_match({text}, '{BASE64}') THEN from_base64({text}) END)"
    raise NotAKey(f"a key value is one of S, N or B, not {kind!r}")


def sql_key(value: str, kind: str) -> str:
    """SQL for ``encode_value`` of a key value of type ``kind`` (``value``: SQL of its DynamoDB JSON): a BLOB,
    NULL where ``encode_value`` refuses (or the value is of another type). ``define_sql`` first."""
    return sql_bytes(sql_text(value, kind), kind)
