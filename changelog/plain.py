"""The typing rule: one typed column per top-level attribute, the same in SQL, Parquet and CSV.

Stated for users in docs/formats.md; this module is the only place it is coded.
``<table>_at(TIME)`` (replayer.engines.views), ``--where`` (changelog.predicate) and the typed
columns of ``replay --to-file x.parquet|x.csv`` (replayer.restoring.export) all derive from it.

An attribute's column is decided by the DynamoDB type tags its values carry in the images the
surface reads (``changelog.attributes.AttributeTypes``), NULL aside:

====================  =====================  ======================================================
tags seen             SQL (DuckDB) type      Arrow / Parquet type; CSV text
====================  =====================  ======================================================
S                     VARCHAR                string; the text
N, all fit            DECIMAL(38,s)          decimal128(38,s); exact decimal text
N, some do not fit    VARCHAR                string; the number's exact text
B                     BLOB                   binary; base64
BOOL                  BOOLEAN                bool; true/false
SS                    VARCHAR[]              list<string>; a JSON list
NS                    VARCHAR[]              list<string> (each number's text); a JSON list
BS                    BLOB[]                 list<binary>; a JSON list of base64
L, M, or mixed tags   JSON                   JSON (arrow.json); the attribute's DynamoDB JSON
only NULL             NULL                   null; empty
====================  =====================  ======================================================

N fits when the most integer digits plus the largest scale of any value of the attribute is at
most 38: s is that largest scale, so every value is exact (5 reads as 5, 12.50 as 12.50, a
38-digit integer as itself). Numbers are read from their text, never through a float. NULL and
a missing attribute are SQL null (empty in CSV). Whatever the column, the lossless DynamoDB JSON
(``item``) stays beside it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, Rounded
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from changelog.attributes import AttributeTypes, Summary

MAX_DIGITS = 38
# Quantizing is checked: a value it would round raises instead (it cannot, by the rule).
_EXACT = Context(prec=MAX_DIGITS, traps=[Inexact, Rounded])

_SQL_TYPES = {"S": "VARCHAR", "NTEXT": "VARCHAR", "B": "BLOB", "BOOL": "BOOLEAN", "SS": "VARCHAR[]",
              "NS": "VARCHAR[]", "BS": "BLOB[]", "JSON": "JSON", "NULL": "NULL"}
_ARROW_TYPES = {"S": pa.string(), "NTEXT": pa.string(), "B": pa.binary(), "BOOL": pa.bool_(),
                "SS": pa.list_(pa.string()), "NS": pa.list_(pa.string()), "BS": pa.list_(pa.binary()),
                "JSON": pa.json_(), "NULL": pa.null()}


@dataclass(frozen=True)
class Column:
    """One typed column: the attribute, the kind of value it holds (S, N, NTEXT, B, BOOL, SS, NS,
    BS, JSON, NULL) and, for N, its scale."""

    name: str
    kind: str
    scale: int = 0

    @property
    def sql_type(self) -> str:
        return f"DECIMAL({MAX_DIGITS},{self.scale})" if self.kind == "N" else _SQL_TYPES[self.kind]

    @property
    def arrow(self) -> pa.DataType:
        return pa.decimal128(MAX_DIGITS, self.scale) if self.kind == "N" else _ARROW_TYPES[self.kind]


def column_of(name: str, types: AttributeTypes) -> Column:
    """The rule: the column an attribute seen with ``types`` gets."""
    kinds = types.tags - {"NULL"}
    if not kinds:
        return Column(name, "NULL")
    if len(kinds) > 1:
        return Column(name, "JSON")
    (tag,) = kinds
    if tag == "N":
        if types.integer + types.scale <= MAX_DIGITS:
            return Column(name, "N", types.scale)
        return Column(name, "NTEXT")
    return Column(name, tag if tag in _SQL_TYPES else "JSON")


def columns_of(summary: Summary, keys: Sequence[str] = (), reserved: Iterable[str] = ()) -> list[Column]:
    """The typed columns of ``summary``: the table's ``keys`` first (partition, then sort), then the
    other attributes by name; attributes named in ``reserved`` (the lossless columns) have none."""
    left_out = set(reserved)
    first = [name for name in keys if name in summary and name not in left_out]
    rest = sorted(name for name in summary if name not in left_out and name not in first)
    return [column_of(name, summary[name]) for name in [*first, *rest]]


def quote_ident(name: str) -> str:
    """A DuckDB identifier in double quotes."""
    return '"' + name.replace('"', '""') + '"'


def _pointer(name: str, *steps: str) -> str:
    """A JSON pointer (RFC 6901) to an attribute, as a SQL literal: any name, exactly."""
    path = "/".join(["", name.replace("~", "~0").replace("/", "~1"), *steps])
    return "'" + path.replace("'", "''") + "'"


def _paths(column: Column) -> list[str]:
    """The JSON pointers whose text ``_value_sql`` reads for ``column``."""
    if column.kind == "JSON":
        return [_pointer(column.name), _pointer(column.name, "NULL")]
    if column.kind == "NULL":
        return []
    return [_pointer(column.name, "N" if column.kind == "NTEXT" else column.kind)]


# A stored number's text (codec._NUMBER) with an exponent, as a plain decimal with the same digits:
# sign, integer part, fraction and exponent split, then the point moved (zeros added as needed).
_PLAIN_NUMBER = (
    "list_transform([regexp_extract({value}, '^(-?)([0-9]*)(?:\\.([0-9]*))?[eE]([-+]?[0-9]+)$', "
    "['sign', 'whole', 'fraction', 'exponent'])], lambda p: p.sign || list_transform("
    "[{{'digits': p.whole || p.fraction, 'point': length(p.whole) + CAST(p.exponent AS INTEGER)}}], "
    "lambda d: CASE WHEN d.point <= 0 THEN '0.' || repeat('0', -d.point) || d.digits "
    "WHEN d.point >= length(d.digits) THEN d.digits || repeat('0', d.point - length(d.digits)) "
    "ELSE d.digits[1:d.point] || '.' || d.digits[d.point + 1:] END)[1])[1]"
)


def _value_sql(column: Column, texts: list[str]) -> str:
    """The typed value of ``column`` from the extracted texts of its ``_paths`` (SQL expressions)."""
    if column.kind == "JSON":
        value, null = texts
        return f"CASE WHEN {null} IS NULL THEN {value} END::JSON"
    if column.kind == "NULL":
        return "NULL"
    (value,) = texts
    if column.kind == "N":
        # Exact: the scale is at least every value's and the digits fit 38 (column_of). DuckDB scales
        # an exponent form's digits before applying its exponent and refuses a number that fits
        # ("12e-6" as DECIMAL(38,37)): such text is written out as a plain decimal first.
        plain = _PLAIN_NUMBER.format(value=value)
        return (f"CASE WHEN contains({value}, 'e') OR contains({value}, 'E') THEN CAST({plain} AS {column.sql_type}) "
                f"ELSE CAST({value} AS {column.sql_type}) END")
    return {"B": f"from_base64({value})", "BOOL": f"{value}::BOOLEAN",
            "SS": f"CAST({value}::JSON AS VARCHAR[])", "NS": f"CAST({value}::JSON AS VARCHAR[])",
            "BS": f"list_transform(CAST({value}::JSON AS VARCHAR[]), lambda b: from_base64(b))"}.get(column.kind, value)


def column_sql(column: Column, image: str) -> str:
    """The SQL expression of ``column`` read from the DynamoDB JSON in column ``image`` (one attribute)."""
    return _value_sql(column, [f"json_extract_string({image}, {path})" for path in _paths(column)])


def plain_columns(summary: Summary, image: str = "image", reserved: frozenset[str] = frozenset(),
                  keys: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(attribute name, SQL expression) of each typed column of ``summary``, keys first."""
    return [(column.name, column_sql(column, image)) for column in columns_of(summary, keys, reserved)]


def plain_select(summary: Summary, image: str = "image", reserved: frozenset[str] = frozenset(),
                 keys: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The (name, ``expr AS "name"``) of each typed column SQL can name, keys first.

    Attribute names in ``reserved`` are left out (they stay reachable through the image), and so
    are names that differ only in case from another attribute or a reserved name: SQL identifiers
    ignore case, so ``status`` and ``Status`` cannot both be columns, and DuckDB would rename one
    (``WHERE status = ...`` then reads the wrong one). Such attributes are read from the image.
    """
    folded: dict[str, int] = {}
    for name in [*summary, *reserved]:
        folded[name.lower()] = folded.get(name.lower(), 0) + 1
    return [(name, f"{expr} AS {quote_ident(name)}") for name, expr in plain_columns(summary, image, reserved, keys)
            if folded[name.lower()] == 1]


def typed_query(columns: list[Column], relation: str, leading: str, image: str = "image") -> str:
    """SQL selecting ``leading`` then each column's typed value from ``relation``'s ``image``, parsed once.

    The same values as ``column_sql``, with every attribute's text extracted in one call per row.
    """
    if not columns:
        return f"SELECT {leading} FROM {relation}"
    paths: list[str] = []
    values: list[str] = []
    for column in columns:
        at = len(paths) + 1  # DuckDB lists count from 1
        own = _paths(column)
        paths += own
        values.append(_value_sql(column, [f"__rewind_v[{at + index}]" for index in range(len(own))]))
    selected = ", ".join(f"{value} AS __rewind_c{index}" for index, value in enumerate(values))
    extracted = f"json_extract_string({image}, [{', '.join(paths)}])" if paths else "[]::VARCHAR[]"
    return f"SELECT {leading}, {selected} FROM (SELECT *, {extracted} AS __rewind_v FROM {relation})"


def finish_array(column: Column, array: pa.Array) -> pa.Array:
    """A column of ``typed_query``'s values as its Arrow type, byte for byte what ``typed_value`` gives."""
    if column.kind == "NULL":
        return pa.nulls(len(array))
    if column.kind == "JSON":
        # DuckDB writes JSON as orjson does except for the case of hex digits in \u escapes (\u001F,
        # orjson \u001f): a value with any \u is written again by orjson, the rest is already exact.
        texts = array.to_pylist()
        storage = pa.array([text if text is None or "\\u" not in text else orjson.dumps(orjson.loads(text)).decode()
                            for text in texts], pa.string())
        return pa.ExtensionArray.from_storage(pa.json_(), storage)
    return array.cast(column.arrow)


def typed_value(column: Column, value: dict[str, Any] | None) -> Any:
    """The rule for one value in Python (None for NULL or missing): what ``typed_query`` gives."""
    if value is None or "NULL" in value:
        return None
    ((_tag, inner),) = value.items()
    kind = column.kind
    if kind == "N":
        return _EXACT.quantize(Decimal(inner), Decimal(1).scaleb(-column.scale))
    if kind == "B":
        return base64.b64decode(inner)
    if kind == "BS":
        return [base64.b64decode(v) for v in inner]
    if kind == "JSON":
        # orjson writes what json.dumps(..., ensure_ascii=False, separators=(",", ":")) writes for
        # valid text (changelog.codec), at a tenth of the cost.
        return orjson.dumps(value).decode()
    return inner  # S, NTEXT (the number's text), BOOL, SS, NS


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


def text_array(column: Column, array: pa.Array, number_text: pa.Array | None = None) -> pa.Array:
    """A column of ``typed_query``'s values as CSV texts ("" for null), byte for byte what ``text_value`` gives.

    ``number_text`` is needed for an N column: the numbers' own text (``typed_query``'s value of the
    column as NTEXT). A decimal has no negative zero, Python's Decimal has: "-0.0" at scale 2 is
    "-0.00" (a stored number is negative exactly when its text starts with "-", codec._NUMBER).
    """
    kind = column.kind
    if kind == "NULL":
        return pa.array([""] * len(array), pa.string())
    if kind == "N":
        if number_text is None:
            raise ValueError(f"the text of N column {column.name!r} is needed for its sign")
        numbers = array.cast(column.arrow)
        texts = numbers.cast(pa.string())
        # Arrow writes values below 1E-6 (zeros of a scale above 6 too) in exponent form ("0E-7"):
        # those few are formatted by Decimal, as text_value does.
        exponent = pc.fill_null(pc.match_substring(texts, "E"), False)
        if pc.any(exponent).as_py():
            plain = [f"{value:f}" for value in pc.filter(numbers, exponent).to_pylist()]
            texts = pc.replace_with_mask(texts, exponent, pa.array(plain, pa.string()))
        negative_zero = pc.and_(pc.equal(numbers, pa.scalar(0, column.arrow)), pc.starts_with(number_text, "-"))
        texts = pc.if_else(negative_zero, pc.binary_join_element_wise("-", texts, ""), texts)
    elif kind == "BOOL":
        texts = pc.if_else(array.cast(pa.bool_()), "true", "false")
    elif kind == "B":
        texts = pa.array([None if value is None else binascii.b2a_base64(value, newline=False).decode("ascii")
                          for value in array.cast(pa.binary()).to_pylist()], pa.string())
    elif kind in ("SS", "NS", "BS"):
        # orjson writes a list of strings as json.dumps(..., ensure_ascii=False, separators=(",", ":"))
        # does (changelog.codec); base64 needs no escapes.
        lists = finish_array(column, array).to_pylist()
        texts = pa.array([None if value is None else orjson.dumps(
            [binascii.b2a_base64(v, newline=False).decode("ascii") for v in value] if kind == "BS" else value
        ).decode() for value in lists], pa.string())
    elif kind == "JSON":
        texts = finish_array(column, array).storage
    else:  # S, NTEXT
        texts = array.cast(pa.string())
    return pc.fill_null(texts, "")
