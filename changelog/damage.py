"""Refusing a damaged store: the one message shape, and reading the store's small JSON documents.

Every reader that finds a file missing, unreadable or failing its checksum raises DamagedStore
built here, so the user always reads which file it is and what to do about it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from changelog.errors import DamagedStore
from changelog.store import Store


def damaged(store: Store, path: str, problem: str) -> DamagedStore:
    """A DamagedStore naming ``path`` in ``store``, what is wrong with it and what to do."""
    return DamagedStore(
        f"damaged store: {store.uri}/{path} {problem}: restore it from the bucket's object versions "
        f"(or a copy of the store); 'ddb-rewind check --store {store.uri} --read-data' finds every damaged "
        "file and what it affects (without --read-data, file contents are not read)"
    )


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is no number the store writes")


def strict_json(data: bytes | str) -> Any:
    """JSON as the store writes it: ValueError on anything else, never a value no writer produces.

    ``Infinity``, ``NaN`` and numbers past a double (``1e400``) are refused instead of becoming
    floats that break arithmetic later; nesting past the recursion limit is refused too.
    """
    try:
        return json.loads(data, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("it is nested deeper than any document the store writes") from None


MAX_MICROS = 253_370_764_800_000_000  # 9999-01-01T00:00:00Z: every time a store holds lies before it


def micros(value: Any, name: str) -> int:
    """A stored time in epoch microseconds: an integer from 1970 to before 9999; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_MICROS:
        raise ValueError(f"{name} {str(value)[:40]} is not a time in epoch microseconds")
    return value


def parse_json_object(store: Store, path: str, data: bytes) -> dict[str, Any]:
    """``data`` (the stored bytes of ``path``) as a JSON object; DamagedStore when it is not one."""
    if not data.strip():
        raise damaged(store, path, "is empty")
    try:
        body = strict_json(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise damaged(store, path, f"is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise damaged(store, path, "is not a JSON object")
    return body


def read_json_object(store: Store, path: str) -> dict[str, Any]:
    """Read one of the store's JSON documents (meta, checkpoint, retention, manifest).

    A missing object raises ObjectMissing (callers decide what absence means); an empty or garbage
    one raises DamagedStore.
    """
    return parse_json_object(store, path, store.read(path))
