"""Typed columns for exports: one column per top-level attribute, beside the lossless ``item``.

Types come from the DynamoDB tags of every exported item (a first pass over the items): S -> string,
N -> DECIMAL(38,s) when every value of the attribute fits one such type exactly (else the number's
text: never a float), B -> binary, BOOL -> bool, SS/NS -> list of strings (NS as decimal text),
BS -> list of binaries, L/M -> DynamoDB JSON text; an attribute with mixed types across items (NULL
aside) -> DynamoDB JSON text of each value. NULL and a missing attribute are null. Numbers are
parsed from their text with ``decimal.Decimal``, which is exact.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, Rounded
from typing import Any

import orjson
import pyarrow as pa

from replayer.gc_pause import paused_gc

MAX_DIGITS = 38
# Quantizing is checked: a value it would round raises instead (it cannot, by infer_columns).
_EXACT = Context(prec=MAX_DIGITS, traps=[Inexact, Rounded])
RESERVED = frozenset({"item_key", "keys", "item", "doc"})  # the lossless columns; such attributes stay in item


@dataclass(frozen=True)
class Column:
    """One typed column: the attribute, the kind of value it holds, and the Arrow type."""

    name: str
    kind: str  # S, N, NTEXT, B, BOOL, SS, NS, BS, JSON, NULL
    arrow: pa.DataType


def _digits(text: str) -> tuple[int, int]:
    """(integer digits, scale) of a DynamoDB number written in fixed notation."""
    _sign, digits, exponent = Decimal(text).as_tuple()
    exponent = int(exponent)  # capture refused NaN and infinities: always an int
    scale = max(0, -exponent)
    return max(0, len(digits) + exponent), scale


@dataclass
class _Seen:
    tags: set[str]
    integer: int = 0
    scale: int = 0


def infer_columns(images: Iterable[str]) -> list[Column]:
    """The typed columns of these DynamoDB-JSON images, by attribute name."""
    seen: dict[str, _Seen] = {}
    with paused_gc():
        for image in images:
            for name, value in orjson.loads(image).items():
                ((tag, inner),) = value.items()
                entry = seen.setdefault(name, _Seen(set()))
                entry.tags.add(tag)
                if tag == "N":
                    integer, scale = _digits(inner)
                    entry.integer, entry.scale = max(entry.integer, integer), max(entry.scale, scale)
    return [_column(name, entry) for name, entry in sorted(seen.items()) if name not in RESERVED]


def _column(name: str, seen: _Seen) -> Column:
    kinds = seen.tags - {"NULL"}
    if not kinds:
        return Column(name, "NULL", pa.null())
    if len(kinds) > 1:
        return Column(name, "JSON", pa.string())
    (tag,) = kinds
    if tag == "N":
        if seen.integer + seen.scale <= MAX_DIGITS:
            return Column(name, "N", pa.decimal128(MAX_DIGITS, seen.scale))
        return Column(name, "NTEXT", pa.string())
    arrow = {"S": pa.string(), "B": pa.binary(), "BOOL": pa.bool_(), "SS": pa.list_(pa.string()),
             "NS": pa.list_(pa.string()), "BS": pa.list_(pa.binary())}.get(tag)
    return Column(name, tag, arrow) if arrow is not None else Column(name, "JSON", pa.string())


def typed_value(column: Column, value: dict[str, Any] | None) -> Any:
    """The Python value of one attribute for its column (None for NULL or missing)."""
    if value is None or "NULL" in value:
        return None
    ((_tag, inner),) = value.items()
    kind = column.kind
    if kind == "N":
        # Exact: the column's scale is at least the value's and its digits fit 38 (infer_columns).
        return _EXACT.quantize(Decimal(inner), Decimal(1).scaleb(-column.arrow.scale))
    if kind == "B":
        return base64.b64decode(inner)
    if kind == "BS":
        return [base64.b64decode(v) for v in inner]
    if kind == "JSON":
        # orjson writes what json.dumps(..., ensure_ascii=False, separators=(",", ":")) writes for
        # valid text (changelog.codec), at a tenth of the cost.
        return orjson.dumps(value).decode()
    return inner  # S, NTEXT (the number's text), BOOL, SS, NS


def typed_arrays(columns: list[Column], images: list[str]) -> list[pa.Array]:
    """One Arrow array per column for a batch of images."""
    with paused_gc():
        items = [orjson.loads(image) for image in images]
        return [_numbers(c, items) if c.kind == "N" else
                pa.array([typed_value(c, item.get(c.name)) for item in items], type=c.arrow) for c in columns]


def _numbers(column: Column, items: list[dict[str, Any]]) -> pa.Array:
    # Arrow parses each number's text straight into the column's DECIMAL(38,s): exact, since the scale
    # is at least every value's and the digits fit (infer_columns); no Python Decimal per value.
    texts = [None if (value := item.get(column.name)) is None or "NULL" in value else value["N"] for item in items]
    return pa.array(texts, pa.string()).cast(column.arrow)


def text_value(column: Column, value: dict[str, Any] | None) -> str:
    """The CSV text of one attribute: empty for NULL/missing, decimal text, true/false, base64, JSON."""
    typed = typed_value(column, value)
    if typed is None:
        return ""
    if isinstance(typed, bool):
        return "true" if typed else "false"
    if isinstance(typed, Decimal):
        return f"{typed:f}"
    if isinstance(typed, bytes):
        return base64.b64encode(typed).decode("ascii")
    if isinstance(typed, list):
        shown = [base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v for v in typed]
        return json.dumps(shown, ensure_ascii=False, separators=(",", ":"))
    return str(typed)
