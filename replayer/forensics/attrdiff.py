"""Attribute-level differences between two DynamoDB-JSON items, as paths (``address.city``, ``tags[2]``).

Equality is DynamoDB's, not the text's: numbers compare by value (``5.0`` equals ``5``), sets compare
as sets (order never matters), maps by their attributes whatever their order. Maps and lists are
walked into, so a change deep inside a document is reported at its own path; a value whose type
changed (``S`` to ``N``, a map replaced by a list) is reported once, at the path where it changed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from changelog.codec import canonical_number
from changelog.errors import DecodeError

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


@dataclass(frozen=True)
class PathChange:
    """One difference: ``kind`` is ``added``, ``removed`` or ``changed``; values are AttributeValues."""

    path: str
    kind: str
    old: Any = None
    new: Any = None

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (old/new left out where they do not apply)."""
        out: dict[str, Any] = {"path": self.path, "kind": self.kind}
        if self.kind != "added":
            out["old"] = self.old
        if self.kind != "removed":
            out["new"] = self.new
        return out


def _number(text: Any) -> str:
    try:
        return canonical_number(text)
    except DecodeError:
        return str(text)


def normalize(value: Any) -> Any:
    """A comparable form of an AttributeValue: numbers canonical, sets as frozensets, maps as dicts."""
    if not isinstance(value, dict) or len(value) != 1:
        return ("?", repr(value))
    ((tag, inner),) = value.items()
    if tag == "N":
        return ("N", _number(inner))
    if tag == "NS":
        return ("NS", frozenset(_number(v) for v in inner))
    if tag in ("SS", "BS"):
        return (tag, frozenset(inner))
    if tag == "M":
        return ("M", normalize_item(inner))
    if tag == "L":
        return ("L", tuple(normalize(v) for v in inner))
    return (tag, inner)


def normalize_item(item: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A hashable, order-independent form of a whole item (for equality and checksums)."""
    return tuple(sorted((name, normalize(value)) for name, value in item.items()))


def values_equal(left: Any, right: Any) -> bool:
    """Whether two AttributeValues are equal as DynamoDB sees them."""
    return bool(normalize(left) == normalize(right))


def items_equal(left: dict[str, Any] | None, right: dict[str, Any] | None) -> bool:
    """Whether two items (None = absent) are equal as DynamoDB sees them."""
    if left is None or right is None:
        return left is None and right is None
    return normalize_item(left) == normalize_item(right)


def _child(prefix: str, name: str) -> str:
    segment = name if _PLAIN_NAME.fullmatch(name) else '["' + name.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    if not prefix:
        return segment
    return prefix + segment if segment.startswith("[") else f"{prefix}.{segment}"


def _diff_maps(prefix: str, old: dict[str, Any], new: dict[str, Any], out: list[PathChange]) -> None:
    for name in old:
        path = _child(prefix, name)
        if name not in new:
            out.append(PathChange(path, "removed", old=old[name]))
        else:
            _diff_values(path, old[name], new[name], out)
    for name in new:
        if name not in old:
            out.append(PathChange(_child(prefix, name), "added", new=new[name]))


def _diff_values(path: str, old: Any, new: Any, out: list[PathChange]) -> None:
    if old == new:  # the same text-level value (most attributes of a changed item): nothing to walk
        return
    old_tag = next(iter(old)) if isinstance(old, dict) and len(old) == 1 else None
    new_tag = next(iter(new)) if isinstance(new, dict) and len(new) == 1 else None
    if old_tag == new_tag == "M":
        _diff_maps(path, old["M"], new["M"], out)
        return
    if old_tag == new_tag == "L":
        before, after = old["L"], new["L"]
        for index in range(max(len(before), len(after))):
            element = f"{path}[{index}]"
            if index >= len(after):
                out.append(PathChange(element, "removed", old=before[index]))
            elif index >= len(before):
                out.append(PathChange(element, "added", new=after[index]))
            else:
                _diff_values(element, before[index], after[index], out)
        return
    if not values_equal(old, new):
        out.append(PathChange(path, "changed", old=old, new=new))


def diff_items(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[PathChange]:
    """Every path that differs from ``old`` to ``new`` (None = item absent), in attribute order."""
    out: list[PathChange] = []
    _diff_maps("", old or {}, new or {}, out)
    return out


def _canonical(value: Any) -> Any:
    if not isinstance(value, dict) or len(value) != 1:
        return value
    ((tag, inner),) = value.items()
    if tag == "N":
        return {"N": _number(inner)}
    if tag == "NS":
        return {"NS": sorted({_number(v) for v in inner})}
    if tag in ("SS", "BS"):
        return {tag: sorted(set(inner))}
    if tag == "M":
        return {"M": {name: _canonical(v) for name, v in sorted(inner.items())}}
    if tag == "L":
        return {"L": [_canonical(v) for v in inner]}
    return value


def canonical_text(item: dict[str, Any]) -> str:
    """One text per DynamoDB-equal item (sorted names and sets, canonical numbers), for checksums."""
    return json.dumps({name: _canonical(v) for name, v in sorted(item.items())}, ensure_ascii=False,
                      separators=(",", ":"), sort_keys=True)
