"""ProjectionExpression as DynamoDB applies it to an item.

moto merges the projected paths as nested dictionaries: two paths into one list kept only the last
(``a[0], a[2]`` gave ``[a2]``), a path through a list in a list gave nothing, and overlapping paths
(``m, m.x``) were answered where DynamoDB refuses them. Here each path is followed in the item, the
parts found are kept, and the elements a list keeps stay in their order.
"""

from __future__ import annotations

import re
from typing import Any, cast

from moto.dynamodb.exceptions import MockValidationException
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

from replayer.serving.compare import StoredType

# moto hands a path over as its parts, each a name with the list indexes after it: "a[3][1]".
_PART = re.compile(r"^(.*?)((?:\[\d+\])*)$", re.DOTALL)
_INDEX = re.compile(r"\[(\d+)\]")

Step = tuple[str, str | int]  # ("name", "a") or ("index", 3)


def steps(path: list[str]) -> list[Step]:
    """One moto path (its parts) as steps: names and list indexes."""
    found: list[Step] = []
    for part in path:
        match = _PART.match(part)
        name, indexes = (match.group(1), match.group(2)) if match else (part, "")
        found.append(("name", name))
        found.extend(("index", int(index)) for index in _INDEX.findall(indexes))
    return found


def _spelled(path: list[Step]) -> str:
    return "[" + ", ".join(str(value) if kind == "name" else f"[{value}]" for kind, value in path) + "]"


def check_paths(paths: list[list[Step]]) -> None:
    """DynamoDB's refusals: one path inside another, or two that treat one value as a map and a list."""
    for number, first in enumerate(paths):
        for second in paths[number + 1:]:
            shared = 0
            while shared < min(len(first), len(second)) and first[shared] == second[shared]:
                shared += 1
            if shared == min(len(first), len(second)):
                raise MockValidationException(
                    "Invalid ProjectionExpression: Two document paths overlap with each other; must remove or "
                    f"rewrite one of these paths; path one: {_spelled(first)}, path two: {_spelled(second)}")
            if first[shared][0] != second[shared][0]:
                raise MockValidationException(
                    "Invalid ProjectionExpression: Two document paths conflict with each other; must remove or "
                    f"rewrite one of these paths; path one: {_spelled(first)}, path two: {_spelled(second)}")


class _Kept:
    """What the projection keeps of one value: all of it, or some of its fields or elements."""

    def __init__(self, value: DynamoType) -> None:
        self.value = value
        self.whole = False
        self.parts: dict[str | int, _Kept] = {}

    def keep(self, path: list[Step]) -> bool:
        """Keep what ``path`` names below this value; False when the item has no such path."""
        if not path:
            self.whole = True
            return True
        (kind, step), rest = path[0], path[1:]
        inner = self.value.value
        in_map = kind == "name" and self.value.type == "M" and step in inner
        in_list = kind == "index" and self.value.type == "L" and isinstance(step, int) and step < len(inner)
        if not in_map and not in_list:
            return False  # the path is not in this item: nothing of it is returned
        part = self.parts.get(step) or _Kept(inner[step])
        if not part.keep(rest):
            return False
        self.parts[step] = part
        return True

    def built(self) -> DynamoType:
        # moto's DynamoType: its constructor copies only a value of exactly its own class.
        if self.whole:
            return self.value
        if self.value.type == "L":
            return DynamoType({"L": [self.parts[index].built() for index in sorted(cast(list[int], list(self.parts)))]})
        return DynamoType({"M": {name: kept.built() for name, kept in self.parts.items()}})


def project(item: Item, paths: list[list[str]]) -> Item:
    """The item with only what ``paths`` (moto's parsed ProjectionExpression) name; its key kept aside."""
    followed = [steps(path) for path in paths]
    check_paths(followed)
    top = _Kept(StoredType({"M": {}}))
    top.value.value = item.attrs  # the item's attributes, followed like a map's fields
    for path in followed:
        top.keep(path)
    attrs: dict[str, Any] = {}
    for name, kept in top.parts.items():
        value = kept.built()
        attrs[str(name)] = value if isinstance(value, StoredType) else StoredType(value)
    projected = cast(Item, Item.__new__(Item))
    projected.attrs = LimitedSizeDict(attrs)
    projected.hash_key, projected.range_key = item.hash_key, item.range_key
    return projected
