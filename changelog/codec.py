"""Lossless AttributeValue codec: stream records in, change rows out.

Three inputs share one core: Lambda DynamoDB Streams records, boto3 ``GetRecords`` records and
Kinesis Data Streams for DynamoDB payloads. Images stay DynamoDB JSON: N keeps its text with all
its digits, B/BS stay base64 text (boto3's bytes are re-encoded), sets stay sets. Every image is
validated on the way in, so a record that would break a restore is refused here (and quarantined by
the caller) instead of years later.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
import time
from collections.abc import Mapping
from datetime import datetime
from decimal import (
    Context,
    Decimal,
    DecimalException,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    Subnormal,
    Underflow,
)
from typing import Any

import orjson

from changelog.docs import plain_of
from changelog.errors import DecodeError, StreamConfigError, UsageError
from changelog.layout import MAX_SEQUENCE_DIGITS
from changelog.names import table_name_problem
from changelog.record import KINESIS_SEQUENCE_WIDTH, STREAM_SEQUENCE_WIDTH, ChangeRow
from changelog.timefmt import to_micros

SEQUENCE_WIDTH = STREAM_SEQUENCE_WIDTH
# ASCII digits only: str.isdigit and the regex class \d would also take "٣" or "²".
_NUMBER = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# At most 38 characters of this shape hold at most 38 digits and lie inside DynamoDB's range.
_SHORT_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
# Integers that are already canonical (no sign on zero, no leading zeros, at most 38 digits).
_CANONICAL_INTEGER_TEXT = r"0|-?[1-9][0-9]{0,37}"
_CANONICAL_INTEGER = re.compile(_CANONICAL_INTEGER_TEXT)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_TTL_PRINCIPAL = "dynamodb.amazonaws.com"
# DynamoDB allows 32 levels of nested maps and lists; deeper cannot come from DynamoDB.
MAX_NESTING = 32
# DynamoDB's largest item: 400 KB, names and values together.
MAX_ITEM_BYTES = 400 * 1024
# DynamoDB's table names: 3 to 255 of letters, digits, '_', '-' and '.'. They become directory names
# in the store, so '.' and '..' (valid characters, but path steps) are refused too.
# Change times a stream can carry: DynamoDB Streams began in 2014 (anything before 2012 is a
# unit or sign mistake), and nothing is written in the future (a day's slack for clock skew).
EARLIEST_EVENT_US = 1_325_376_000 * 1_000_000  # 2012-01-01T00:00:00Z
FUTURE_SLACK_US = 86_400 * 1_000_000
_EVENT_NAMES = frozenset(("INSERT", "MODIFY", "REMOVE"))
# DynamoDB numbers: up to 38 significant digits, magnitude from 1E-130 to 9.99...E+125 (its first
# digit's exponent from -130 to 125, whatever the digits after it). Traps make any rounding, and
# any number outside that range (Overflow above, Subnormal below), an error.
_NUMBER_CONTEXT = Context(prec=38, Emin=-130, Emax=125,
                          traps=[InvalidOperation, Inexact, Rounded, Overflow, Subnormal, Underflow])
_encode_str = json.encoder.encode_basestring
# Built once: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dump_json(value: Any) -> str:
    """Compact JSON text, unicode kept as is (any JSON value, numbers included).

    Validated images are written by orjson instead, which gives the same bytes for every valid
    Unicode text (checked by the tests), several times faster.
    """
    return _ENCODER.encode(value)


def canonical_number(text: str) -> str:
    """The canonical text of a DynamoDB number (``5.0`` and ``05`` give ``5``); refuses rounding.

    Raises DecodeError when ``text`` is not a number DynamoDB could hold.
    """
    if not isinstance(text, str) or not _NUMBER.fullmatch(text):
        # Never the value itself: a reason is stored with the quarantined record and reaches logs.
        shown = f"a text of {len(text)} characters" if isinstance(text, str) else f"a {type(text).__name__}"
        raise DecodeError(f"not a DynamoDB number: N holds {shown} that is no decimal number")
    try:
        value = _NUMBER_CONTEXT.create_decimal(_significant(text))
        value = value.normalize(_NUMBER_CONTEXT)
    except DecimalException:  # rounding, or a magnitude outside the range
        raise DecodeError(f"a number of {len(text)} characters exceeds DynamoDB's 38 digits or range") from None
    if value.is_zero():
        return "0"
    return f"{value:f}"


def _significant(text: str) -> Decimal:
    """``text`` as an exact Decimal without the zeros after its last significant digit.

    Written out in full, a number has more characters than the digits DynamoDB keeps: the canonical
    text of 1E+125 is 1 and 125 zeros, which read as 126 digits was refused, so a key's own
    canonical text could not be read back (``--key``)."""
    sign, digits, exponent = Decimal(text).as_tuple()
    if not isinstance(exponent, int):
        return Decimal(text)
    kept = list(digits)
    while len(kept) > 1 and kept[-1] == 0:
        kept.pop()
        exponent += 1
    return Decimal((sign, tuple(kept), exponent))


def plain_json(item: Mapping[str, Any]) -> str:
    """Validate a DynamoDB-JSON item and return its plain JSON (``{"status": "shipped", "n": "5"}``).

    Numbers are written as JSON strings holding their exact text as DynamoDB sent it (JSON readers
    turn a number token into a double and lose digits); binaries as base64 strings; sets as arrays.
    Raises DecodeError on anything that is not a valid AttributeValue. Readers derive docs from
    stored images with ``changelog.docs``, which gives the same bytes.
    """
    check_image(item)
    return _dumps(plain_of(item)).decode()


def check_image(item: Any) -> None:
    """Validate a DynamoDB-JSON item: every AttributeValue's tag and payload, nesting within DynamoDB's limit.

    Raises DecodeError on anything that is not a valid AttributeValue. Attribute names and text are
    left to orjson, which refuses a name that is not a string, or text that is not valid Unicode,
    when the image is written (``image_bytes``).
    """
    if not isinstance(item, dict):
        raise DecodeError("an item image must be a map of attributes")
    _check_names(item)
    _check_values(item.values(), 0)


def _check_names(item: dict[Any, Any]) -> None:
    if "" in item:
        raise DecodeError("an attribute name is empty (DynamoDB's names are at least one character)")


def _check_size(item: dict[str, Any]) -> None:
    """Refuse an item larger than DynamoDB's 400 KB, sized as DynamoDB sizes it (never more).

    Its JSON text is never smaller than that size (names and texts are quoted, binaries are base64,
    numbers are text), so only an image whose text is over the limit is sized at all.
    """
    size = sum(len(name.encode("utf-8")) + _value_size(value) for name, value in item.items())
    if size > MAX_ITEM_BYTES:
        raise DecodeError(f"the item is {size} bytes, over DynamoDB's {MAX_ITEM_BYTES}-byte (400 KB) item limit")


def _value_size(value: dict[str, Any]) -> int:
    # DynamoDB's documented sizes, rounded down where they are approximate (a number is about one
    # byte per two significant digits plus one), so a real item is never refused.
    ((tag, inner),) = value.items()
    if tag == "S":
        return len(inner.encode("utf-8"))
    if tag == "N":
        return _number_size(inner)
    if tag == "B":
        return len(inner) // 4 * 3 - inner.count("=")
    if tag == "SS":
        return sum(len(element.encode("utf-8")) for element in inner)
    if tag == "NS":
        return sum(_number_size(element) for element in inner)
    if tag == "BS":
        return sum(len(element) // 4 * 3 - element.count("=") for element in inner)
    if tag == "M":
        return 3 + sum(len(name.encode("utf-8")) + 1 + _value_size(element) for name, element in inner.items())
    if tag == "L":
        return 3 + sum(1 + _value_size(element) for element in inner)
    return 1  # BOOL, NULL


def _number_size(text: str) -> int:
    digits = len(canonical_number(text).lstrip("-").replace(".", "").strip("0"))
    return digits // 2 + 1


def image_bytes(item: Any, beside: dict[str, Any] | None = None) -> bytes:
    """Validate a DynamoDB-JSON item and return the UTF-8 JSON it is stored as; DecodeError when invalid.

    The capture hot path. orjson writes the image first (refusing names that are not strings and
    text that is not Unicode); an image of up to ``_FAST_BYTES`` whose text the ``_IMAGE`` pattern
    matches is valid without a walk, and any other image (larger, nested deeper than the pattern,
    a rare number form, or invalid) gets the exact verdict of the walk. The pattern accepts only
    what the walk accepts (tests/test_image_validation.py proves it by property), over the values JSON parsers
    and boto3 produce: the only inputs any decoder hands over.

    ``beside`` is an image already found valid that this one mostly repeats (a MODIFY's new image,
    for its old one). An attribute equal to its counterpart there (Python's deep ``==``, in C) has
    the same verdict, so only the attributes that differ are walked. The one place where ``==`` and
    DynamoDB's typing part ways is ``True == 1`` (and ``False == 0.0``): an image that writes a
    number where a BOOL or NULL payload belongs gets the whole check instead.
    """
    try:
        text = _dumps(item)
    except DecodeError:
        check_image(item)  # an invalid value (nested too deep, say) is named by the walk
        raise
    if beside is not None and type(item) is dict and _FLAG_NUMBER.search(text) is None:
        _check_names(item)
        _check_values([value for name, value in item.items() if beside.get(name, _ABSENT) != value], 0)
    elif len(text) > _FAST_BYTES or _IMAGE.fullmatch(text) is None:
        check_image(item)
    if len(text) > MAX_ITEM_BYTES:
        _check_size(item)
    return text


def image_json(item: Mapping[str, Any]) -> str:
    """``image_bytes`` as text."""
    return image_bytes(item).decode()


def _dumps(value: Any) -> bytes:
    """Compact JSON of an image or doc, byte for byte what ``dump_json`` writes for a valid one."""
    try:
        return orjson.dumps(value)
    except TypeError:
        # A name that is not a string, or a lone surrogate in a text (not valid Unicode, so never
        # from DynamoDB), or a value no JSON parser produces.
        raise DecodeError("attribute names must be strings and text valid Unicode") from None


def _too_deep() -> DecodeError:
    return DecodeError(f"attributes nested more than {MAX_NESTING} levels deep (DynamoDB's own limit)")


_JSON_TEXT = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
# What orjson writes, names sorted, for a key of strings and canonical integers: its canonical text.
_PLAIN_KEY = re.compile(
    rf'\{{(?:,?{_JSON_TEXT}:\{{(?:"S":{_JSON_TEXT}|"N":"(?:{_CANONICAL_INTEGER_TEXT})")\}})++\}}'.encode())


def _image_pattern(depth: int) -> re.Pattern[bytes]:
    """What orjson writes for a valid image with containers nested at most ``depth`` deep.

    orjson's output is well-formed JSON, so the pattern checks only DynamoDB's typing: one tag per
    value, S a string, N a plain decimal of at most 38 characters (what the walk takes without a
    Decimal), B/BS base64, SS/NS/BS non-empty, BOOL, NULL true, M and L holding values. Quantifiers
    are possessive: a match is decided in one pass, with no backtracking.
    """
    text = _JSON_TEXT
    # At most 38 characters without a look-ahead: integers of up to 37 digits, decimals of up to
    # 18.18 digits (longer ones are rare and get the walk). 10% faster than counting the characters.
    number = r'"-?(?:[0-9]{1,37}+"|[0-9]{1,18}+\.[0-9]{1,18}+")'
    base64 = r'"(?:[A-Za-z0-9+/]{4})*+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?+"'

    def value(level: int) -> str:
        # Most frequent first: a branch is rejected at its tag, but each one tried costs a step.
        tags = [f'"S":{text}', f'"N":{number}']
        if level > 0:
            inner = value(level - 1)
            tags += [rf'"M":\{{(?:,?{text}:{inner})*+\}}', rf'"L":\[(?:,?{inner})*+\]']
        # No SS, NS or BS: a set's members must be distinct, which a pattern cannot tell; sets get the walk.
        tags += ['"BOOL":(?:true|false)', '"NULL":true', f'"B":{base64}']
        return r"\{(?>" + "|".join(tags) + r")\}"

    # An attribute name is never empty (a map's keys may be).
    return re.compile(rf"\{{(?:,?(?!\"\"){text}:{value(depth)})*+\}}".encode())


# Measured (bench/consumer.py): one regex pass costs ~5 ns per byte, the walk ~0.35 µs per value; the
# pattern wins for images up to about 2 KB (most items) and loses on long texts, which the walk
# checks in one step.
_FAST_BYTES = 2048
_IMAGE = _image_pattern(3)
# A number right after a name ending in L, as orjson writes ``"BOOL":1`` or ``"NULL":0.0`` (inside a
# text the quotes would be escaped). Whatever else it matches is invalid too, and gets the whole check.
_FLAG_NUMBER = re.compile(rb'L":[-0-9]')
_ABSENT = object()


def _check_values(values: Any, depth: int) -> None:
    # S and N (most values) are tested first and inline; everything else goes to _check_other.
    for value in values:
        if type(value) is not dict or len(value) != 1:
            raise DecodeError("an AttributeValue must be a map with exactly one type tag")
        for tag, inner in value.items():
            if tag == "S":
                if type(inner) is not str:
                    raise DecodeError("S must hold a string")
            elif tag == "N":
                if not (type(inner) is str and len(inner) <= 38 and (
                        (inner.isascii() and inner.isdigit()) or _SHORT_DECIMAL.fullmatch(inner))):
                    _checked_number(inner, "N must hold a number as text")
            else:
                _check_other(tag, inner, depth)


def _check_other(tag: Any, inner: Any, depth: int) -> None:
    if tag == "M":
        if depth >= MAX_NESTING:
            raise _too_deep()
        if type(inner) is not dict:
            raise DecodeError("M must hold a map")
        _check_values(inner.values(), depth + 1)
    elif tag == "L":
        if depth >= MAX_NESTING:
            raise _too_deep()
        if type(inner) is not list:
            raise DecodeError("L must hold a list")
        _check_values(inner, depth + 1)
    elif tag == "BOOL":
        if inner is not True and inner is not False:
            raise DecodeError("BOOL must hold true or false")
    elif tag == "NULL":
        if inner is not True:
            raise DecodeError("NULL must hold true")
    elif tag == "B":
        _check_base64(inner)
    elif tag in ("SS", "NS", "BS"):
        _check_set(tag, inner)
    else:
        raise DecodeError(f"unknown AttributeValue type {tag!r}")


def _check_set(tag: str, inner: Any) -> None:
    if type(inner) is not list or not inner:
        raise DecodeError(f"{tag} must hold a non-empty list")
    if tag == "SS":
        if not all(type(element) is str for element in inner):
            raise DecodeError("SS must hold strings")
        members: set[Any] = set(inner)
    elif tag == "NS":
        for element in inner:
            _number(element, "NS must hold numbers as text")
        members = {canonical_number(element) for element in inner}  # 1 and 1.0 are one number
    else:
        for element in inner:
            _check_base64(element)
        members = {base64.b64decode(element) for element in inner}
    if len(members) != len(inner):
        raise DecodeError(f"{tag} holds the same member twice (a DynamoDB set never does)")


def _number(text: Any, problem: str) -> str:
    """Check a DynamoDB number and return its text unchanged."""
    if isinstance(text, str) and len(text) <= 38 and (
        (text.isascii() and text.isdigit()) or _SHORT_DECIMAL.fullmatch(text)
    ):
        return text
    return _checked_number(text, problem)


def _checked_number(text: Any, problem: str) -> str:
    # Exponents, more than 38 characters, "5." or ".5": rare, so only these pay for the Decimal check.
    if isinstance(text, str) and _NUMBER.fullmatch(text):
        canonical_number(text)
        return text
    raise DecodeError(problem)


def _check_base64(value: Any) -> None:
    if not isinstance(value, str) or len(value) % 4 or not _BASE64.fullmatch(value):
        raise DecodeError("binary values must be base64 text")


def item_key(keys: Any) -> str:
    """Canonical text of an item's key: attribute names sorted, numbers normalised, compact JSON.

    Equal keys give equal text whatever order the attributes came in (the stream and a backfill
    may list them differently). Raises DecodeError when a key value is not S, N or B.
    """
    if type(keys) is dict:
        # Strings and canonical integers (almost every key) are written as they came: orjson with
        # sorted names gives the text the general path below builds, in one call, and one pattern
        # pass tells whether that is all the key holds.
        try:
            text = orjson.dumps(keys, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            text = b""  # a name that is not a string: refused below, by name
        if _PLAIN_KEY.fullmatch(text) is not None:
            return text.decode()
    return _general_item_key(keys)


def _general_item_key(keys: Any) -> str:
    if not isinstance(keys, dict) or not keys:
        raise DecodeError("a record must carry its key attributes")
    if not all(isinstance(name, str) for name in keys):
        raise DecodeError("key attribute names must be strings")
    parts = []
    for name in sorted(keys):
        value = keys[name]
        if not isinstance(value, dict) or len(value) != 1:
            raise DecodeError("a key attribute must be a map with one type tag")
        ((tag, inner),) = value.items()
        if tag == "S":
            if not isinstance(inner, str):
                raise DecodeError("S key must hold a string")
            text = _encode_str(inner)
        elif tag == "N":
            fast = isinstance(inner, str) and _CANONICAL_INTEGER.fullmatch(inner)
            canonical = inner if fast else canonical_number(inner)
            text = '"' + canonical + '"'  # digits, a sign and a dot never need escaping
        elif tag == "B":
            _check_base64(inner)
            # Base64 may spell one byte string more than one way (AAF= and AAE= are both 00 01):
            # the key is its bytes, so its text is their one canonical spelling.
            text = _encode_str(base64.b64encode(base64.b64decode(inner)).decode("ascii"))
        else:
            raise DecodeError(f"key attributes must be S, N or B, not {tag!r}")
        parts.append(f'{_encode_str(name)}:{{"{tag}":{text}}}')
    return "{" + ",".join(parts) + "}"


def parse_key(text: str, key_schema: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Read a user KEY: DynamoDB JSON, or ``pk=a,sk=5`` typed from the table's key schema.

    ``key_schema`` is a list of ``{"AttributeName", "AttributeType"}``. Raises UsageError naming
    what is wrong and the forms accepted.
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            key = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise UsageError(f"key is not valid JSON ({exc.msg}); use {{\"pk\":{{\"S\":\"a\"}}}} or pk=a") from None
        except RecursionError:
            raise UsageError("key is nested too deep to be a key: use {\"pk\":{\"S\":\"a\"}} or pk=a") from None
    else:
        if not key_schema:
            raise UsageError("a plain key (pk=a,sk=5) needs the table's key schema; give DynamoDB JSON instead")
        types = {entry["AttributeName"]: entry["AttributeType"] for entry in key_schema}
        key = {}
        for raw in text.split(","):
            part = raw.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep or name.strip() not in types:
                raise UsageError(f"cannot read key part {part!r}: expected NAME=VALUE with NAME in {sorted(types)}")
            if name.strip() in key:
                raise UsageError(f"key part {part!r}: the key names {name.strip()!r} twice")
            value = raw.partition("=")[2]
            if types[name.strip()] == "S" and value != value.strip():
                # pk= a may name ' a' or 'a': which one is not for this form to guess.
                raise UsageError(f"key part {raw!r}: a plain key cannot hold a text that starts or ends with a "
                                 "space; give the key as DynamoDB JSON, e.g. {\"pk\":{\"S\":\" a\"}}")
            key[name.strip()] = {types[name.strip()]: value.strip()}
    try:
        item_key(key)
        # A lone surrogate (from a \ud800 escape, or bytes the shell could not decode) is no text DynamoDB holds.
        _dumps(key)
    except DecodeError as exc:
        raise UsageError(f"malformed key: {exc}") from None
    if key_schema is not None:
        expected = {entry["AttributeName"]: entry["AttributeType"] for entry in key_schema}
        got = {name: next(iter(value)) for name, value in key.items()}
        if got != expected:
            want = ", ".join(f"{n} ({t})" for n, t in sorted(expected.items()))
            raise UsageError(f"key does not match the table's key schema: it needs exactly {want}")
    return key


def binaries_to_base64(value: Any) -> Any:
    """Copy of a boto3 AttributeValue (or item) with every bytes value turned into base64 text."""
    if isinstance(value, dict):
        return {name: binaries_to_base64(inner) for name, inner in value.items()}
    if isinstance(value, list):
        return [binaries_to_base64(inner) for inner in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def base64_to_binaries(value: Any) -> Any:
    """Copy of a DynamoDB-JSON item with B and BS values decoded to bytes, as boto3 writes them."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for name, inner in value.items():
            if name == "B" and len(value) == 1 and isinstance(inner, str):
                return {"B": base64.b64decode(inner)}
            if name == "BS" and len(value) == 1 and isinstance(inner, list):
                return {"BS": [base64.b64decode(element) for element in inner]}
            out[name] = base64_to_binaries(inner)
        return out
    if isinstance(value, list):
        return [base64_to_binaries(inner) for inner in value]
    return value


def pad_sequence(sequence: Any, width: int = SEQUENCE_WIDTH) -> str:
    """Zero-pad a sequence number to ``width`` digits (40: DynamoDB Streams' widest) so text order is numeric order.

    Longer numbers (Kinesis's run to 56 and more) are kept whole, never cut; readers order by
    (length, text), which is numeric order for every width. Kinesis numbers are padded to at least
    41 (``record.KINESIS_SEQUENCE_WIDTH``): the width then tells a DynamoDB Streams row, whose
    sequence order is its item's order, from a Kinesis one (``record.STREAM_ROW``).
    """
    text = str(sequence)
    if not (text.isascii() and text.isdigit()):  # isdigit alone takes "²" and "٣"
        raise DecodeError("a sequence number must be digits")
    if len(text) > MAX_SEQUENCE_DIGITS:
        raise DecodeError(f"a sequence number of {len(text)} digits is longer than any stream's "
                          f"({MAX_SEQUENCE_DIGITS} at most)")
    return text.zfill(width)


@functools.lru_cache(maxsize=256)  # every record of a batch carries the same ARN
def table_from_arn(arn: str) -> str:
    """The table name inside a DynamoDB stream or table ARN; DecodeError unless it is a valid name."""
    marker = ":table/"
    start = arn.find(marker)
    if start < 0:
        raise DecodeError("eventSourceARN names no DynamoDB table")
    name = arn[start + len(marker):].split("/", 1)[0]
    problem = table_name_problem(name)
    if problem:
        raise DecodeError(f"eventSourceARN: {problem}")
    return name


def checked_event_time(micros: int) -> int:
    """``micros`` when it is a possible change time, else DecodeError saying what is wrong with it."""
    if micros < EARLIEST_EVENT_US:
        raise DecodeError(f"ApproximateCreationDateTime {_shown(micros)} is before 2012: not a stream time "
                          "(negative, or in the wrong unit)")
    if micros > time.time_ns() // 1000 + FUTURE_SLACK_US:
        raise DecodeError(f"ApproximateCreationDateTime {_shown(micros)} lies in the future (milliseconds "
                          "where seconds are expected?)")
    return micros


def _shown(micros: int) -> str:
    return f"{micros / 1_000_000:.6g} s"


def _is_ttl(event_name: str, identity: Any) -> bool:
    return (
        event_name == "REMOVE"
        and isinstance(identity, dict)
        and identity.get("type") == "Service"
        and identity.get("principalId") == _TTL_PRINCIPAL
    )


def build_row(
    *,
    table_name: str,
    event_id: Any,
    event_name: Any,
    body: Any,
    event_time_us: int,
    sequence: str,
    shard_id: str | None,
    identity: Any,
) -> ChangeRow:
    """Validate the ``dynamodb`` body of a stream record and make its change row.

    Raises StreamConfigError for a stream that carries no images (a whole-stream problem, not a
    bad record) and DecodeError for a record that cannot be decoded.
    """
    if not isinstance(body, dict):
        raise DecodeError("record has no 'dynamodb' body")
    if not isinstance(event_id, str) or not event_id:
        raise DecodeError("record has no eventID")
    if event_name not in _EVENT_NAMES:
        raise DecodeError(f"unknown eventName {event_name!r}")
    view = body.get("StreamViewType")
    if view in ("KEYS_ONLY", "OLD_IMAGE"):
        raise StreamConfigError(
            f"stream view type {view} carries no new images, so nothing could be restored: "
            "set the table's stream to NEW_AND_OLD_IMAGES (or NEW_IMAGE)"
        )
    keys = body.get("Keys")
    key_text = item_key(keys)
    new_image = body.get("NewImage")
    old_image = body.get("OldImage")
    if event_name != "REMOVE" and new_image is None:
        raise DecodeError(f"{event_name} record carries no NewImage")
    new_text = image_bytes(new_image) if new_image is not None else None
    # A new image is valid by now: the old one is checked only where it differs.
    old_text = image_bytes(old_image, beside=new_image) if old_image is not None else None
    # The images are valid maps by now, and ``keys`` a valid key.
    if new_image is not None:
        _check_key_of(keys, key_text, new_image, "NewImage")
    if old_image is not None:
        _check_key_of(keys, key_text, old_image, "OldImage")
    size = body.get("SizeBytes", 0)
    if not isinstance(size, int) or isinstance(size, bool):
        raise DecodeError("SizeBytes must be an integer")
    return ChangeRow(
        table_name=table_name,
        event_id=event_id,
        event_name=event_name,
        event_time_us=event_time_us,
        sequence_number=sequence,
        shard_id=shard_id,
        item_key=key_text,
        keys=_dumps(keys),
        new_image=new_text,
        old_image=old_text,
        is_ttl_delete=_is_ttl(event_name, identity),
        size_bytes=size,
    )


def _check_key_of(keys: Any, key_text: str, image: Any, which: str) -> None:
    """Refuse an image that is not of the item the record's ``Keys`` name (replay would emit two items for one key)."""
    missing = sorted(name for name in keys if name not in image)
    if missing:
        raise DecodeError(f"the {which} lacks the key attribute(s) {', '.join(missing)}")
    if item_key({name: image[name] for name in keys}) != key_text:
        raise DecodeError(f"the record's Keys disagree with its {which}")


def _seconds_to_micros(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DecodeError("ApproximateCreationDateTime must be epoch seconds")
    if abs(value) > 1e15:  # far beyond any time; keeps the product below exact for the range check
        raise DecodeError(f"ApproximateCreationDateTime {value:.6g} is not a time in epoch seconds")
    return checked_event_time(round(value * 1_000_000))


def decode_lambda_record(record: Mapping[str, Any]) -> ChangeRow:
    """Decode one record of a Lambda DynamoDB Streams event (times in epoch seconds, B as base64)."""
    if not isinstance(record, dict):
        raise DecodeError("record is not a JSON object")
    body = record.get("dynamodb")
    if not isinstance(body, dict):
        raise DecodeError("record has no 'dynamodb' body")
    return build_row(
        table_name=table_from_arn(str(record.get("eventSourceARN", ""))),
        event_id=record.get("eventID"),
        event_name=record.get("eventName"),
        body=body,
        event_time_us=_seconds_to_micros(body.get("ApproximateCreationDateTime")),
        sequence=pad_sequence(body.get("SequenceNumber", "")),
        shard_id=None,
        identity=record.get("userIdentity"),
    )


def decode_getrecords_record(record: Mapping[str, Any], table_name: str, shard_id: str) -> ChangeRow:
    """Decode one record as boto3's ``GetRecords`` returns it (datetimes, bytes for binaries)."""
    body = record.get("dynamodb")
    if not isinstance(body, dict):
        raise DecodeError("record has no 'dynamodb' body")
    created = body.get("ApproximateCreationDateTime")
    micros = checked_event_time(to_micros(created)) if isinstance(created, datetime) else _seconds_to_micros(created)
    body = binaries_to_base64(body)
    return build_row(
        table_name=table_name,
        event_id=record.get("eventID"),
        event_name=record.get("eventName"),
        body=body,
        event_time_us=micros,
        sequence=pad_sequence(body.get("SequenceNumber", "")),
        shard_id=shard_id,
        identity=record.get("userIdentity"),
    )


def kinesis_micros(value: Any, precision: Any) -> int:
    """A Kinesis payload's ApproximateCreationDateTime (epoch ms or µs, as its precision says) in µs, or DecodeError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DecodeError("ApproximateCreationDateTime must be an epoch number")
    if abs(value) > 1e18:
        raise DecodeError(f"ApproximateCreationDateTime {value:.6g} is not an epoch time")
    if precision == "MICROSECOND" or (precision is None and value > 1e14):
        return checked_event_time(int(value))
    if precision == "MILLISECOND" or (precision is None and value > 1e11):
        return checked_event_time(round(value * 1000))
    return checked_event_time(round(value * 1_000_000))


def kinesis_payload(kinesis: Any) -> dict[str, Any]:
    """The DynamoDB change a Kinesis record's ``kinesis`` body carries (base64 JSON); DecodeError otherwise."""
    if not isinstance(kinesis, dict):
        raise DecodeError("record has no 'kinesis' body")
    try:
        payload = json.loads(base64.b64decode(kinesis.get("data", ""), validate=True))
    except (binascii.Error, ValueError, TypeError):
        raise DecodeError("Kinesis data is not base64-encoded JSON") from None
    except RecursionError:
        raise DecodeError("Kinesis data is JSON nested deeper than any DynamoDB change") from None
    if not isinstance(payload, dict):
        raise DecodeError("Kinesis payload is not a JSON object")
    return payload


# A Kinesis data stream's ARN (names: 1 to 128 of letters, digits, '_', '.', '-') and a shard id as
# Kinesis gives them ("shardId-000000000001"): both come from outside (an event, a queue message),
# and a shard id becomes part of a gap record's name, so each is checked whole before use.
_KINESIS_STREAM_ARN = re.compile(r"arn:aws[a-z-]{0,20}:kinesis:[a-z0-9-]{1,30}:[0-9]{12}:stream/[A-Za-z0-9_.-]{1,128}")
_KINESIS_SHARD_ID = re.compile(r"shardId-[0-9]{1,28}")


def kinesis_stream_arn_problem(arn: Any) -> str | None:
    """Why ``arn`` is not a Kinesis data stream ARN (None when it is one)."""
    if isinstance(arn, str) and arn.isascii() and _KINESIS_STREAM_ARN.fullmatch(arn):
        return None
    shown = repr(arn) if len(repr(arn)) <= 100 else repr(arn)[:97] + "..."
    return f"{shown} is not a Kinesis data stream ARN"


def kinesis_shard_problem(shard_id: Any) -> str | None:
    """Why ``shard_id`` is not a Kinesis shard id ("shardId-" and digits; None when it is one)."""
    if isinstance(shard_id, str) and shard_id.isascii() and _KINESIS_SHARD_ID.fullmatch(shard_id):
        return None
    shown = repr(shard_id) if len(repr(shard_id)) <= 60 else repr(shard_id)[:57] + "..."
    return f"{shown} is not a Kinesis shard id (\"shardId-\" and up to 28 digits)"


def kinesis_table(payload: Mapping[str, Any]) -> str:
    """The table a Kinesis payload names, if DynamoDB could have named it (it becomes a path); DecodeError otherwise."""
    table = payload.get("tableName")
    if not isinstance(table, str) or not table:
        raise DecodeError("Kinesis payload names no table")
    problem = table_name_problem(table)
    if problem:
        raise DecodeError(f"Kinesis payload tableName: {problem}")
    return table


def decode_kinesis_record(record: Mapping[str, Any]) -> ChangeRow:
    """Decode one record of a Lambda Kinesis event carrying a DynamoDB change (payload base64 JSON).

    Ordering comes from the payload's millisecond or microsecond time, then the Kinesis sequence
    number; the DynamoDB ``eventID`` inside the payload is what duplicates share.
    """
    if not isinstance(record, dict):
        raise DecodeError("record is not a JSON object")
    kinesis: Any = record.get("kinesis")  # a dict once kinesis_payload has read it
    payload = kinesis_payload(kinesis)
    body = payload.get("dynamodb")
    if not isinstance(body, dict):
        raise DecodeError("Kinesis payload has no 'dynamodb' body")
    table = kinesis_table(payload)
    shard = str(record.get("eventID", "")).split(":", 1)[0] or None
    return build_row(
        table_name=table,
        event_id=payload.get("eventID"),
        event_name=payload.get("eventName"),
        body=body,
        event_time_us=kinesis_micros(
            body.get("ApproximateCreationDateTime"), body.get("ApproximateCreationDateTimePrecision")
        ),
        sequence=pad_sequence(kinesis.get("sequenceNumber", ""), KINESIS_SEQUENCE_WIDTH),
        shard_id=shard,
        identity=payload.get("userIdentity"),
    )

