"""Stored values as DynamoDB's expressions compare them, for moto's evaluator.

moto evaluates a FilterExpression on plain Python values (``DynamoType.cast_value``): N 1 and BOOL
true were equal there (Python's ``1 == True``), and ``<`` between two types raised a TypeError
that failed the whole request. In DynamoDB values of two types are never equal, and a comparison
between two types is false for that item. The values of a stored item are wrapped so that moto's
own code keeps those rules whichever side of an operator they are on (a request's values stay
moto's plain ones: Python asks a subclass's reflected method first, and a foreign type's when its
own gives up).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from moto.dynamodb.models.dynamo_type import DynamoType


def _number(other: object) -> bool:
    return isinstance(other, Decimal | int) and not isinstance(other, bool | Flag)


class Number(Decimal):
    """An N value: equal to, and ordered against, numbers only."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return _number(other) and Decimal.__eq__(self, other) is True

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __lt__(self, other: object) -> bool:
        return _number(other) and Decimal.__lt__(self, other) is True  # type: ignore[operator]

    def __le__(self, other: object) -> bool:
        return _number(other) and Decimal.__le__(self, other) is True  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        return _number(other) and Decimal.__gt__(self, other) is True  # type: ignore[operator]

    def __ge__(self, other: object) -> bool:
        return _number(other) and Decimal.__ge__(self, other) is True  # type: ignore[operator]

    __hash__ = Decimal.__hash__


class _OrderedWithinKind:
    """Ordering operators true only against a value of the class's own kind (``_kind``): a comparison
    across types is false for the item, as DynamoDB's is (Python would raise)."""

    __slots__ = ()
    _kind: type[Any]

    def __lt__(self, other: object) -> bool:
        return isinstance(other, self._kind) and self._kind.__lt__(self, other) is True

    def __le__(self, other: object) -> bool:
        return isinstance(other, self._kind) and self._kind.__le__(self, other) is True

    def __gt__(self, other: object) -> bool:
        return isinstance(other, self._kind) and self._kind.__gt__(self, other) is True

    def __ge__(self, other: object) -> bool:
        return isinstance(other, self._kind) and self._kind.__ge__(self, other) is True


class Text(_OrderedWithinKind, str):
    """An S value: ordered against texts only (by code point, which is UTF-8's byte order)."""

    __slots__ = ()
    _kind = str


class Binary(_OrderedWithinKind, bytes):
    """A B value: ordered against binaries only (byte by byte, unsigned)."""

    __slots__ = ()
    _kind = bytes


class Flag:
    """A BOOL value: equal only to the same boolean, never ordered."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Flag):
            return self.value == other.value
        return isinstance(other, bool) and other == self.value

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __lt__(self, other: object) -> bool:
        return False

    __le__ = __gt__ = __ge__ = __lt__

    def __hash__(self) -> int:
        return hash(self.value)

    def __bool__(self) -> bool:
        return self.value


class _Unordered:
    """Ordering operators that are false: DynamoDB does not order sets, lists or maps (Python would
    compare lists element-wise, sets by inclusion, and raise for a map)."""

    __slots__ = ()

    def __lt__(self, other: object) -> bool:
        return False

    __le__ = __gt__ = __ge__ = __lt__


class Members(_Unordered, set[Any]):
    """An SS, NS or BS value."""


class Elements(_Unordered, list[Any]):
    """An L value."""


class Fields(_Unordered, dict[str, Any]):
    """An M value."""


class StoredType(DynamoType):
    """A stored item's AttributeValue: moto's, with values compared as DynamoDB compares them."""

    @property
    def cast_value(self) -> Any:
        kind, value = self.type, self.value
        if kind == "N":
            return Number(value)
        if kind == "S":
            return Text(value)
        if kind == "B":
            return Binary(value)
        if kind == "BOOL":
            return Flag(value)
        if kind in ("SS", "NS", "BS"):
            return Members(StoredType({kind[0]: element}).cast_value for element in value)
        if kind == "L":
            return Elements(StoredType(element).cast_value for element in value)
        if kind == "M":
            return Fields((name, StoredType(element).cast_value) for name, element in value.items())
        return None  # NULL

    def child_attr(self, key: int | str | None) -> DynamoType | None:
        child = super().child_attr(key)
        return None if child is None else StoredType(child)
