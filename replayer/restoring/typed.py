"""Typed columns for exports: one column per top-level attribute, beside the lossless ``item``.

Types come from the DynamoDB tags of every exported item (a first pass over the items): S -> string,
N -> DECIMAL(38,s) when every value of the attribute fits one such type exactly (else the number's
text: never a float), B -> binary, BOOL -> bool, SS/NS -> list of strings (NS as decimal text),
BS -> list of binaries, L/M -> DynamoDB JSON text; an attribute with mixed types across items (NULL
aside) -> DynamoDB JSON text of each value. NULL and a missing attribute are null.

For Parquet, DuckDB finds the types and extracts the values (``infer_columns``, ``typed_query``),
parsing each image once per pass; Arrow casts each number's text into its DECIMAL(38,s), which is
exact. ``typed_value`` is the same rule for one value in Python (CSV writes its text).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, Rounded
from typing import Any

import duckdb
import orjson
import pyarrow as pa

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


@dataclass
class _Seen:
    tags: set[str]
    integer: int = 0
    scale: int = 0


# Per attribute: its tags, and for N the most integer digits and the largest scale of any value, as
# Python's Decimal counts them (digits without leading zeros, at least one; exponent minus the
# fraction's length): "0.050" has 0 integer digits and scale 3, "1.5E+3" 4 and 0.
_INFER = r"""
SELECT name, list(DISTINCT tag),
       max(greatest(0, greatest(length(ltrim(n.ip || n.fp, '0')), 1) + n.ex - length(n.fp))) FILTER (WHERE tag = 'N'),
       max(greatest(0, length(n.fp) - n.ex)) FILTER (WHERE tag = 'N')
FROM (
    SELECT name, tag, {{'ip': p.ip, 'fp': p.fp, 'ex': coalesce(TRY_CAST(nullif(p.ex, '') AS INTEGER), 0)}} AS n
    FROM (
        SELECT name, json_keys(value)[1] AS tag,
               regexp_extract(value ->> '$.N', '^-?([0-9]*)(?:\.([0-9]*))?(?:[eE]([-+]?[0-9]+))?$',
                              ['ip', 'fp', 'ex']) AS p
        FROM (SELECT unnest(json_keys(image)) AS name, unnest(json_extract(image, '$.*')) AS value FROM {relation})
    )
)
GROUP BY name
"""


def infer_columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[Column]:
    """The typed columns of the DynamoDB-JSON images in column ``image`` of ``relation``, by attribute name."""
    rows = con.execute(_INFER.format(relation=relation)).fetchall()
    return [_column(name, _Seen(set(tags), int(integer or 0), int(scale or 0)))
            for name, tags, integer, scale in sorted(rows) if name not in RESERVED]


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


def _pointer(name: str, *steps: str) -> str:
    """A JSON pointer (RFC 6901) to an attribute, as a SQL literal: any name, exactly."""
    path = "/".join(["", name.replace("~", "~0").replace("/", "~1"), *steps])
    return "'" + path.replace("'", "''") + "'"


def typed_query(columns: list[Column], relation: str, leading: str) -> str:
    """SQL selecting ``leading`` then one value per column from ``relation``'s ``image``, each image parsed once.

    The values come out as DuckDB reads them (finish each with ``finish_array``): text, BLOB,
    BOOLEAN, lists; N as its text, L/M and mixed types as the attribute's JSON.
    """
    paths: list[str] = []
    values: list[str] = []
    for column in columns:
        at = len(paths) + 1  # DuckDB lists count from 1
        if column.kind == "JSON":
            paths += [_pointer(column.name), _pointer(column.name, "NULL")]
            values.append(f"CASE WHEN __rewind_v[{at + 1}] IS NULL THEN __rewind_v[{at}] END")
            continue
        tag = "N" if column.kind == "NTEXT" else column.kind
        paths.append(_pointer(column.name, tag))
        value = f"__rewind_v[{at}]"
        values.append({"B": f"from_base64({value})", "BOOL": f"{value}::BOOLEAN",
                       "SS": f"CAST({value}::JSON AS VARCHAR[])", "NS": f"CAST({value}::JSON AS VARCHAR[])",
                       "BS": f"list_transform(CAST({value}::JSON AS VARCHAR[]), lambda b: from_base64(b))",
                       "NULL": "NULL"}.get(column.kind, value))
    if not columns:
        return f"SELECT {leading} FROM {relation}"
    selected = ", ".join(f"{value} AS __rewind_c{index}" for index, value in enumerate(values))
    return (f"SELECT {leading}, {selected} FROM "
            f"(SELECT *, json_extract_string(image, [{', '.join(paths)}]) AS __rewind_v FROM {relation})")


def finish_array(column: Column, array: pa.Array) -> pa.Array:
    """A column of ``typed_query``'s values as its Arrow type, byte for byte what ``typed_value`` gives."""
    if column.kind == "NULL":
        return pa.nulls(len(array))
    if column.kind == "JSON":
        # DuckDB writes JSON as orjson does except for the case of hex digits in \u escapes (\u001F,
        # orjson \u001f): a value with any \u is written again by orjson, the rest is already exact.
        texts = array.to_pylist()
        return pa.array([text if text is None or "\\u" not in text else orjson.dumps(orjson.loads(text)).decode()
                         for text in texts], pa.string())
    # N: Arrow parses each number's text straight into DECIMAL(38,s), exact since the scale is at
    # least every value's and the digits fit (infer_columns); a rounding cast would raise.
    return array.cast(column.arrow)


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
