"""An independent, deliberately simple model of a DynamoDB table and its stream, for property tests.

The model applies operations one by one to a dict; it shares no code with the replayer.
"""

from __future__ import annotations

import base64
import json
import string
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.events import TTL_IDENTITY, lambda_record

_text = st.text(alphabet=string.ascii_letters + "é🔑\n\"\\ ", max_size=8)
_number = st.one_of(
    st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-10**6, max_value=10**6).map(
        lambda d: format(d.normalize(), "f") if d != 0 else "0"
    ),
)
_binary = st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode())
_scalar = st.one_of(
    _text.map(lambda s: {"S": s}),
    _number.map(lambda n: {"N": n}),
    _binary.map(lambda b: {"B": b}),
    st.just({"NULL": True}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.lists(_text, min_size=1, max_size=3, unique=True).map(lambda v: {"SS": v}),
    st.lists(st.integers(-1000, 1000).map(str), min_size=1, max_size=3, unique=True).map(lambda v: {"NS": v}),
    st.lists(_binary, min_size=1, max_size=3, unique=True).map(lambda v: {"BS": v}),
)
attribute_values = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda v: {"L": v}),
        st.dictionaries(st.sampled_from(["a", "b", "ü"]), inner, max_size=3).map(lambda v: {"M": v}),
    ),
    max_leaves=6,
)
KEYS = [{"pk": {"S": "a"}}, {"pk": {"S": "b"}}, {"pk": {"S": "ключ"}}, {"pk": {"S": "d"}}, {"pk": {"S": "e"}}]


@st.composite
def items(draw: Any, key: dict[str, Any]) -> dict[str, Any]:
    """A full item for ``key`` with random attributes of every type."""
    attributes = draw(st.dictionaries(st.sampled_from(["status", "n", "blob", "tags", "doc"]), attribute_values,
                                      max_size=4))
    return {**key, **attributes}


@dataclass(frozen=True)
class Op:
    """A write to the table: put (item) or delete (item None), at a whole second.

    ``clock_back``: how many seconds behind the stream's clock was when it stamped the change
    (DynamoDB's clock can step back; its stamp is still the change's only time).
    """

    key_index: int
    item: dict[str, Any] | None
    second: int
    ttl: bool = False
    clock_back: int = 0

    @property
    def stamp(self) -> int:
        """The second the stream record carries."""
        return self.second - self.clock_back


def item_of(op: Op) -> dict[str, Any]:
    """The item an operation writes: the key attributes are always its key's (as DynamoDB's images are)."""
    assert op.item is not None
    return {**op.item, **KEYS[op.key_index]}


@st.composite
def operations(draw: Any, max_ops: int = 25, clock_steps: bool = False) -> list[Op]:
    """A random operation sequence; many operations share a second, as on real streams.

    With ``clock_steps`` the stream's clock sometimes stamps a change a few seconds (or an hour,
    across an hour partition) behind.
    """
    count = draw(st.integers(1, max_ops))
    second = 1_700_000_000
    ops = []
    for _ in range(count):
        second += draw(st.sampled_from([0, 0, 0, 1, 2, 3600]))
        index = draw(st.integers(0, len(KEYS) - 1))
        back = draw(st.sampled_from([0, 0, 1, 2, 5, 3600])) if clock_steps else 0
        if draw(st.integers(0, 3)) == 0:
            ops.append(Op(index, None, second, ttl=draw(st.booleans()), clock_back=back))
        else:
            ops.append(Op(index, draw(items(KEYS[index])), second, clock_back=back))
    return ops


@dataclass(frozen=True)
class Change:
    """One change real DynamoDB emits for operation ``ops[index]``: its kind and the item around it."""

    index: int
    op: Op
    event_name: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None


def emitted_changes(ops: list[Op]) -> list[Change]:
    """The changes real DynamoDB would emit for ``ops``, in order (none for deleting a missing item)."""
    current: dict[int, dict[str, Any]] = {}
    changes = []
    for index, op in enumerate(ops):
        old = current.get(op.key_index)
        if op.item is None:
            if old is None:
                continue
            del current[op.key_index]
            changes.append(Change(index, op, "REMOVE", old, None))
        else:
            item = item_of(op)
            current[op.key_index] = item
            changes.append(Change(index, op, "MODIFY" if old is not None else "INSERT", old, item))
    return changes


def stream_records(table: str, ops: list[Op]) -> list[dict[str, Any]]:
    """The stream records real DynamoDB would emit for ``ops`` (no record for deleting a missing item)."""
    return [
        # 21 digits, the shortest real sequence numbers, 7 apart per operation.
        lambda_record(table, c.event_name, KEYS[c.op.key_index], float(c.op.stamp), 10**20 + 7 * (c.index + 1),
                      new=c.new, old=c.old, identity=TTL_IDENTITY if c.op.ttl and c.event_name == "REMOVE" else None)
        for c in emitted_changes(ops)
    ]


def model_state(ops: list[Op], at_second: int) -> dict[str, str]:
    """Canonical key text → compact DynamoDB-JSON image of every item alive at ``at_second``.

    A change counts from its stamp, or from the item's previous change if that was stamped later:
    the stream gives one item's changes in the order they happened, whatever its clock says.
    """
    live: set[int] = set()
    counts_from: dict[int, int] = {}
    table: dict[int, dict[str, Any]] = {}
    for op in ops:
        if op.item is None and op.key_index not in live:
            continue  # deleting a missing item changes nothing and emits nothing
        counts_from[op.key_index] = max(op.stamp, counts_from.get(op.key_index, op.stamp))
        if op.item is None:
            live.discard(op.key_index)
        else:
            live.add(op.key_index)
        if counts_from[op.key_index] > at_second:
            continue
        if op.item is None:
            table.pop(op.key_index, None)
        else:
            table[op.key_index] = item_of(op)
    return {
        json.dumps(KEYS[index], separators=(",", ":"), ensure_ascii=False):
            json.dumps(item, separators=(",", ":"), ensure_ascii=False)
        for index, item in table.items()
    }
