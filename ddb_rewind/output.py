"""Printing query results as an aligned table, CSV or JSON."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TextIO

from changelog.timefmt import format_time


def _moment(value: datetime) -> str:
    """One time format everywhere: UTC with a Z (format_time); a time without a zone as ISO 8601."""
    return format_time(value) if value.tzinfo is not None else value.isoformat()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _moment(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return _moment(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table",
               out: TextIO | None = None, max_width: int = 60) -> None:
    """Print rows in ``fmt`` (table, csv or json); table cells are cut at ``max_width`` characters."""
    out = out or sys.stdout
    if fmt == "json":
        json.dump([dict(zip(columns, map(_jsonable, row), strict=True)) for row in rows], out,
                  ensure_ascii=False, indent=2)
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
