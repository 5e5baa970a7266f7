"""Printing query results as an aligned table, CSV or JSON."""

from __future__ import annotations

import base64
import csv
import json
import math
import sys
from collections.abc import Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, TextIO, TypeVar

from changelog.timefmt import format_time


def _moment(value: datetime) -> str:
    """One time format everywhere: UTC with a Z (format_time); a time without a zone as ISO 8601."""
    return format_time(value) if value.tzinfo is not None else value.isoformat()


def _jsonable(value: Any) -> Any:
    """A query value as JSON holds it, by the export's text rule (docs/formats.md): decimals exact and
    positional, binaries base64; times ISO 8601; what JSON has no value for (a NaN, an interval, a
    UUID) as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return format(value, "f")  # 1E-38 and 0E-8 as 0.00...01 and 0.00000000, never an exponent
    if isinstance(value, datetime):
        return _moment(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _text(value: Any) -> str:
    """A query value as one CSV or table cell: the JSON value's text, a list or a map as compact JSON."""
    plain = _jsonable(value)
    if plain is None:
        return ""
    if isinstance(plain, bool):
        return "true" if plain else "false"
    if isinstance(plain, list | dict):
        return json.dumps(plain, ensure_ascii=False, separators=(",", ":"))
    return str(plain)


def _named(columns: Sequence[str]) -> list[str]:
    """Column names made distinct for JSON objects (a second ``item_key`` is ``item_key_2``), so no
    column of a join hides another."""
    taken: set[str] = set()
    names = []
    for column in columns:
        name, number = column, 1
        while name in taken:
            number += 1
            name = f"{column}_{number}"
        taken.add(name)
        names.append(name)
    return names


Shown = TypeVar("Shown")


def sampled(items: Sequence[Shown], sample: int, where: str = "") -> tuple[Sequence[Shown], str]:
    """The first ``sample`` of ``items`` to list, and a note saying the list is cut (empty when it is not)."""
    shown = items[: max(0, sample)]
    cut = f" (the first {len(shown):,}{where}; --sample N shows more)" if 0 < len(shown) < len(items) else ""
    return shown, cut


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table",
               out: TextIO | None = None, max_width: int = 60) -> None:
    """Print rows in ``fmt`` (table, csv or json); table cells are cut at ``max_width`` characters."""
    out = out or sys.stdout
    if fmt == "json":
        names = _named(columns)
        json.dump([dict(zip(names, map(_jsonable, row), strict=True)) for row in rows], out,
                  ensure_ascii=False, indent=2, allow_nan=False)
        out.write("\n")
        return
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([[_text(v) for v in row] for row in rows])
        return
    cells = [[_text(v) for v in row] for row in rows]
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in cells]
    widths = [max([len(col)] + [len(row[i]) for row in cells]) for i, col in enumerate(columns)]
    out.write("  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
    out.write(f"({len(rows):,} row{'s' if len(rows) != 1 else ''})\n")
