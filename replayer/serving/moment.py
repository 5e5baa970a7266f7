"""DynamoDB's read operations over the indexes of a moment, with moto's DynamoDB semantics.

moto's request handling (validation, KeyConditionExpression, FilterExpression and ProjectionExpression
parsing and evaluation, response shapes) is used as it is; only where the items come from changes:
``MomentTable`` is moto's ``Table`` whose items live in an ``index.Index`` on disk, read a page at a
time in key order. The paging rules (Limit, the 1 MB page, when LastEvaluatedKey is given,
ScannedCount) are moto's loop, fed from the index instead of from a sorted list of every item.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from contextvars import ContextVar
from typing import Any, cast

import orjson
from moto.dynamodb.comparisons import AttributePath, Func, Op
from moto.dynamodb.exceptions import MockValidationException, ResourceNotFoundException
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.table import RESULT_SIZE_LIMIT, Table

from changelog.codec import base64_to_binaries
from replayer.serving.compare import StoredType
from replayer.serving.index import Bound, Index, IndexKeys, KeyNames
from replayer.serving.keyorder import NotAKey, encode_value, prefix_end
from replayer.serving.load import Loaded
from replayer.serving.projection import project

ACCOUNT = "123456789012"
# The request's Select, which moto does not hand its table (``protocol`` sets it for each request).
REQUESTED_SELECT: ContextVar[str | None] = ContextVar("requested_select", default=None)
REGION = "us-east-1"
_INVALID_KEY = "The provided key element does not match the schema"


class MomentTable(Table):
    """moto's Table over an on-disk index: GetItem, Query and Scan read the index; nothing writes."""

    def __init__(self, name: str, key_schema: list[dict[str, Any]], attributes: list[dict[str, str]],
                 index: Index, description: Mapping[str, Any], served: tuple[IndexKeys, ...] = ()) -> None:
        super().__init__(name, ACCOUNT, REGION, schema=key_schema, attr=attributes,
                         indexes=list(description.get("LocalSecondaryIndexes") or []),
                         global_indexes=list(description.get("GlobalSecondaryIndexes") or []))
        self.index = index
        self.description = description
        self.keys = KeyNames(self.hash_key_attr, self.range_key_attr)
        # Secondary index name -> (its number in the index file, its keys).
        self.served = {keys.name: (number, keys) for number, keys in enumerate(served)}

    # -- items from the index ------------------------------------------------------------------

    def _item(self, image: str) -> Item:
        return self._item_of(orjson.loads(image))

    def _item_of(self, attrs: dict[str, Any]) -> Item:
        return stored_item(attrs, self.hash_key_attr, self.range_key_attr)

    def _encode(self, value: Any, kind: str | None, message: str = _INVALID_KEY) -> bytes:
        if isinstance(value, DynamoType):
            value = {value.type: value.value}
        if not isinstance(value, dict) or set(value) != {kind}:
            raise MockValidationException(message)
        try:
            return encode_value(value)
        except NotAKey:
            raise MockValidationException(message) from None

    def _key_of(self, key: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """A request's key (GetItem, ExclusiveStartKey) as index bytes; DynamoDB's error when it does not fit."""
        names = {self.hash_key_attr, *([self.range_key_attr] if self.range_key_attr else [])}
        if not isinstance(key, Mapping) or not names <= set(key):
            raise MockValidationException(_INVALID_KEY)
        hash_bytes = self._encode(key[self.hash_key_attr], self.hash_key_type)
        if not self.range_key_attr:
            return hash_bytes, b""
        return hash_bytes, self._encode(key[self.range_key_attr], self.range_key_type)

    def all_items(self) -> list[Item]:
        # Every path here reads the index a page at a time; a list of every item is what this avoids.
        raise MockValidationException("this operation is not answered at a moment")

    def __len__(self) -> int:
        return self.index.count

    # -- the read operations -------------------------------------------------------------------

    def get_item(self, hash_key: DynamoType, range_key: DynamoType | None = None,
                 projection_expression: list[list[str]] | None = None) -> Item | None:
        if self.has_range_key and not range_key:
            raise MockValidationException("Table has a range key, but no range key was passed into get_item")
        key = {self.hash_key_attr: hash_key, **({self.range_key_attr: range_key} if self.range_key_attr else {})}
        image = self.index.get(*self._key_of(key))
        if image is None:
            return None
        item = self._item(image)
        return project(item, projection_expression) if projection_expression else item

    def query(self, hash_key: DynamoType | None, range_comparison: str | None, range_objs: list[DynamoType],
              limit: int, exclusive_start_key: dict[str, Any], scan_index_forward: bool,
              projection_expressions: list[list[str]] | None, index_name: str | None = None,
              consistent_read: bool = False, filter_expression: Any = None,
              hash_key_conditions: list[tuple[str, DynamoType]] | None = None,
              range_key_conditions: list[tuple[str, str, list[DynamoType]]] | None = None,
              **filter_kwargs: Any) -> tuple[list[Item], int, dict[str, Any] | None]:
        if filter_kwargs:
            raise MockValidationException("QueryFilter is not served at a moment: use FilterExpression")
        _check_filter(filter_expression, self._query_keys(index_name or None))
        if index_name:
            return self._query_index(index_name, hash_key, hash_key_conditions, range_comparison, range_objs, limit,
                                     exclusive_start_key, scan_index_forward, projection_expressions,
                                     consistent_read, filter_expression)
        if hash_key is None:
            raise MockValidationException("Query condition missed key schema element: " + self.hash_key_attr)
        mismatch = "One or more parameter values were invalid: Condition parameter type does not match schema type"
        partition = self._encode(hash_key, self.hash_key_type, mismatch)
        low, high = self._range(range_comparison, range_objs, mismatch)
        forward = scan_index_forward is not False
        if exclusive_start_key is not None:
            start_hash, start_range = self._key_of(exclusive_start_key)
            if start_hash != partition:
                raise MockValidationException("The provided starting key is invalid: "
                                              "The provided key element does not match the schema")
            _check_start(start_range, low, high)
            after = Bound(start_range, False)
            if forward:
                low = _tighter(low, after, lower=True)
            else:
                high = _tighter(high, after, lower=False)
        with closing(self.index.partition(partition, low, high, forward=forward)) as images:
            results, scanned, stopped = _page(map(self._item, images), limit)
        if stopped is None and results and self.range_key_attr:
            # moto's loop reaches past the key condition: the partition's next item (in range or not)
            # is where it stops and gives LastEvaluatedKey (see _page).
            beyond = Bound(self._encode(results[-1].range_key, self.range_key_type), False)
            rest = self.index.partition(partition, beyond if forward else None, None if forward else beyond,
                                        forward=forward)
            with closing(rest):
                following = next(rest, None)
            if following is not None:
                stopped = _stops(results, self._item(following), limit)
        return self._finish(results, scanned, stopped, filter_expression, projection_expressions)

    def _query_keys(self, index_name: str | None) -> tuple[str, ...]:
        """The key attributes a Query on the table (or on ``index_name``) conditions."""
        if index_name is None:
            return (self.hash_key_attr, *([self.range_key_attr] if self.range_key_attr else []))
        index = self.get_index(index_name, error_if_not=True)
        return tuple(str(key["AttributeName"]) for key in index.schema)

    def _served_index(self, index_name: str, consistent_read: bool) -> tuple[int, IndexKeys]:
        index = self.get_index(index_name, error_if_not=True)
        if consistent_read and index in self.global_indexes:
            raise MockValidationException("Consistent reads are not supported on global secondary indexes")
        if index_name not in self.served:
            raise MockValidationException(f"index {index_name!r} has keys of more than one attribute or of a type "
                                          "not recorded: it is not served at a moment")
        return self.served[index_name]

    def _index_key_of(self, keys: IndexKeys, key: Mapping[str, Any], attributes: tuple[str, ...]) -> tuple[bytes, ...]:
        """ExclusiveStartKey of an index as the index file's key bytes, in the order of ``attributes``."""
        if not isinstance(key, Mapping) or not set(attributes) <= set(key):
            raise MockValidationException(_INVALID_KEY)
        self._key_of(key)  # the table's keys must fit too
        return tuple(self._encode(key[attribute], keys.type_of(attribute)) for attribute in attributes)

    def _query_index(self, index_name: str, hash_key: DynamoType | None,
                     hash_key_conditions: list[tuple[str, DynamoType]] | None, range_comparison: str | None,
                     range_objs: list[DynamoType], limit: int, exclusive_start_key: dict[str, Any] | None,
                     scan_index_forward: bool, projection_expressions: list[list[str]] | None,
                     consistent_read: bool, filter_expression: Any) -> tuple[list[Item], int, dict[str, Any] | None]:
        """Query on a secondary index, in moto's index order: its sort key, then the table's keys."""
        number, keys = self._served_index(index_name, consistent_read)
        if hash_key_conditions:
            hash_key = dict(hash_key_conditions).get(keys.hash_key, hash_key)
        if hash_key is None:
            raise MockValidationException("Query condition missed key schema element: " + keys.hash_key)
        if range_comparison and keys.range_key is None:
            raise MockValidationException(f"Range Key comparison but no range key found for index: {index_name}")
        mismatch = "One or more parameter values were invalid: Condition parameter type does not match schema type"
        partition = self._encode(hash_key, keys.type_of(keys.hash_key), mismatch)
        low, high = self._range(range_comparison, range_objs, mismatch,
                                keys.type_of(keys.range_key) if keys.range_key else None)
        forward = scan_index_forward is not False
        after = None
        if exclusive_start_key is not None:
            start = self._index_key_of(keys, exclusive_start_key, self._index_order(keys, by_order_key=True))
            if start[0] != partition:
                raise MockValidationException("The provided starting key is invalid: "
                                              "The provided key element does not match the schema")
            if keys.range_key is not None:
                _check_start(start[1], low, high)
            after = (start[1], start[2], start[3] if len(start) > 3 else b"")
        with closing(self.index.index_partition(number, partition, low, high, after, forward=forward)) as images:
            results, scanned, stopped = _page(map(self._item, images), limit)
        if stopped is None and results:
            # As for the table: moto's loop goes on through the index partition past the key condition.
            last = self._index_key_of(keys, results[-1].attrs, self._index_order(keys, by_order_key=True))
            rest = self.index.index_partition(number, partition, None, None,
                                              (last[1], last[2], last[3] if len(last) > 3 else b""), forward=forward)
            with closing(rest):
                following = next(rest, None)
            if following is not None:
                stopped = _stops(results, self._item(following), limit)
        return self._finish(results, scanned, stopped, filter_expression, projection_expressions, index_name)

    def _index_order(self, keys: IndexKeys, *, by_order_key: bool) -> tuple[str, ...]:
        """The attributes an index's rows are ordered by: partition, [order key], table partition, table sort."""
        table_keys = (self.hash_key_attr, *([self.range_key_attr] if self.range_key_attr else []))
        return (keys.hash_key, *([keys.order_key] if by_order_key else []), *table_keys)

    def _range(self, comparison: str | None, values: list[DynamoType],
               mismatch: str, kind: str | None = None) -> tuple[Bound | None, Bound | None]:
        """The key condition on the sort key (the table's, or ``kind`` given: an index's) as index bounds."""
        if comparison is None:
            return None, None
        kind = kind or self.range_key_type
        encoded = [self._encode(v, kind, mismatch) for v in values]
        op = comparison.upper()
        if op in ("=", "EQ"):
            return Bound(encoded[0], True), Bound(encoded[0], True)
        if op in ("<", "LT"):
            return None, Bound(encoded[0], False)
        if op in ("<=", "LE"):
            return None, Bound(encoded[0], True)
        if op in (">", "GT"):
            return Bound(encoded[0], False), None
        if op in (">=", "GE"):
            return Bound(encoded[0], True), None
        if op == "BETWEEN":
            if encoded[0] > encoded[1]:  # the index's bytes order as the key values do
                low, high = (f"AttributeValue: {{{v.type}:{v.value}}}" for v in values)
                raise MockValidationException(
                    "Invalid KeyConditionExpression: The BETWEEN operator requires upper bound to be greater than "
                    f"or equal to lower bound; lower bound operand: {low}, upper bound operand: {high}")
            return Bound(encoded[0], True), Bound(encoded[1], True)
        if op == "BEGINS_WITH":
            if kind == "N":
                raise MockValidationException("Invalid KeyConditionExpression: Incorrect operand type for operator "
                                              "or function; operator or function: begins_with, operand type: N")
            end = prefix_end(encoded[0])
            return Bound(encoded[0], True), None if end is None else Bound(end, False)
        raise MockValidationException(f"Invalid KeyConditionExpression: unsupported comparison {comparison}")

    def scan(self, filters: dict[str, Any], limit: int, exclusive_start_key: dict[str, Any],
             filter_expression: Any = None, index_name: str | None = None, consistent_read: bool = False,
             projection_expression: list[list[str]] | None = None,
             segments: tuple[None, None] | tuple[int, int] = (None, None),
             ) -> tuple[list[Item], int, dict[str, Any] | None]:
        segment = None if segments == (None, None) else (int(segments[0]), int(segments[1]))  # type: ignore[arg-type]
        if index_name:
            number, keys = self._served_index(index_name, consistent_read)
            by_order_key = keys.range_key is not None
            order = self._index_order(keys, by_order_key=by_order_key)
            start = (self._index_key_of(keys, exclusive_start_key, order)
                     if exclusive_start_key is not None else None)
            if start is not None and not self.range_key_attr:
                start = (*start, b"")
            with closing(self.index.index_scan(number, by_order_key, start)) as images:
                results, scanned, stopped = _page(self._segment_items(images, segment), limit,
                                                  keep=lambda item: _passes(item, filters))
            return self._finish(results, scanned, stopped, filter_expression, projection_expression, index_name)
        after = self._key_of(exclusive_start_key) if exclusive_start_key is not None else None
        with closing(self.index.scan(after)) as images:
            results, scanned, stopped = _page(self._segment_items(images, segment), limit,
                                              keep=lambda item: _passes(item, filters))
        return self._finish(results, scanned, stopped, filter_expression, projection_expression)

    def _segment_items(self, images: Iterator[str], segment: tuple[int, int] | None) -> Iterator[Item]:
        """The items of ``images``, of segment ``s`` of ``n`` only when a parallel Scan asks for one."""
        if segment is None:
            return map(self._item, images)
        number, total = segment
        parsed = map(orjson.loads, images)
        return map(self._item_of, (attrs for attrs in parsed
                                   if segment_byte(attrs[self.hash_key_attr]) % total == number))

    def _finish(self, results: list[Item], scanned: int, stopped: bool | None, filter_expression: Any,
                projection: list[list[str]] | None,
                index_name: str | None = None) -> tuple[list[Item], int, dict[str, Any] | None]:
        last_key = self._get_last_evaluated_key(results[-1], index_name) if stopped else None
        index = self.get_index(index_name) if index_name else None
        # A global index answers from what it holds (KEYS_ONLY, INCLUDE): the filter sees only that, as
        # moto does. A local one fetches from the table whatever the request names beyond it: the
        # filter sees the whole item, and so do a projection and Select=ALL_ATTRIBUTES.
        fetches = index is not None and any(index.name == local.name for local in self.indexes)
        if index is not None and not fetches:
            results = [index.project(item) for item in results]
        if filter_expression is not None:
            results = [item for item in results if filter_expression.expr(item)]
        if projection:
            results = [project(item, projection) for item in results]
        elif index is not None and fetches and REQUESTED_SELECT.get() != "ALL_ATTRIBUTES":
            results = [index.project(item) for item in results]
        return results, scanned, last_key

    def describe_moment(self) -> dict[str, Any]:
        """DescribeTable's ``Table``: the table as configured at the moment, its item count at the moment."""
        return {**self.description, "TableStatus": "ACTIVE", "ItemCount": self.index.count}


def stored_item(attrs: dict[str, Any], hash_key_attr: str, range_key_attr: str | None) -> Item:
    """moto's ``Item`` of an image the store holds, built without moto's size check.

    moto's constructor adds the attributes one by one, summing the size of every attribute already
    there at each step: an item of 400 attributes took 51 ms, of 1,000 attributes 312 ms, for every
    GetItem and every item a Query or Scan read. A stored image was a DynamoDB item, so within its
    size. Its values are compared as DynamoDB compares them (``replayer.serving.compare``), and its
    binaries are bytes, as moto holds a request's (a stored image keeps them as base64 text: left so,
    a stored binary never equalled a filter's ``:b`` and ``size()`` counted base64 characters).
    """
    item = cast(Item, Item.__new__(Item))
    item.attrs = LimitedSizeDict({name: StoredType(base64_to_binaries(value)) for name, value in attrs.items()})
    item.hash_key = item.attrs[hash_key_attr]
    item.range_key = item.attrs[range_key_attr] if range_key_attr else None
    return item


def segment_byte(hash_value: Any) -> int:
    """The byte a Scan segment is chosen by: the first byte of md5 of the partition key's text.

    moto's rule (DynamoDB's own is unpublished): every item of one partition key lands in one segment.
    """
    inner = next(iter(hash_value.values()))
    text = inner.decode("ascii") if isinstance(inner, bytes) else str(inner)
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).digest()[0]


def _check_filter(filter_expression: Any, keys: tuple[str, ...]) -> None:
    """Refuse a Query filter on a key attribute of the table or index queried, as DynamoDB does (moto answers)."""
    filtered = sorted(_read_attributes(filter_expression) & set(keys))
    if filtered:
        raise MockValidationException("Filter Expression can only contain non-primary key attributes: "
                                      f"Primary key attribute: {filtered[0]}")


def _read_attributes(node: Any) -> set[str]:
    """The top-level attributes a parsed condition (moto's expression tree) reads."""
    if isinstance(node, AttributePath):
        return {str(node.path[0])}
    if isinstance(node, list | tuple):
        return {name for part in node for name in _read_attributes(part)}
    if isinstance(node, Op | Func):
        return {name for part in vars(node).values() for name in _read_attributes(part)}
    return set()


def _check_start(start: bytes, low: Bound | None, high: Bound | None) -> None:
    """Refuse a Query's ExclusiveStartKey whose sort key lies outside the key condition, as DynamoDB does."""
    above = low is None or start > low.value or (start == low.value and low.inclusive)
    below = high is None or start < high.value or (start == high.value and high.inclusive)
    if not (above and below):
        raise MockValidationException("The provided starting key does not match the range key predicate")


def _tighter(bound: Bound | None, other: Bound, *, lower: bool) -> Bound:
    if bound is None:
        return other
    if bound.value == other.value:
        return Bound(bound.value, bound.inclusive and other.inclusive)
    return max(bound, other, key=lambda b: b.value) if lower else min(bound, other, key=lambda b: b.value)


def _stops(results: list[Item], candidate: Item, limit: int | None, size: int | None = None) -> bool:
    """moto's test before taking ``candidate``: the page is full by Limit or would pass 1 MB with it."""
    used = sum(item.size() for item in results) if size is None else size
    return (limit is not None and len(results) == limit) or used + candidate.size() > RESULT_SIZE_LIMIT


def _page(candidates: Iterable[Item], limit: int | None, keep: Any = None) -> tuple[list[Item], int, bool | None]:
    """moto's paging loop: (items taken, ScannedCount, True when it stopped at a candidate, else None).

    A page stops at the first candidate that finds it full; LastEvaluatedKey is then the last item
    taken. Without such a candidate the page is the last one (None: the caller may look further).
    """
    results: list[Item] = []
    size = 0
    scanned = 0
    for item in candidates:
        if _stops(results, item, limit, size):
            return results, scanned, True
        if keep is None or keep(item):
            results.append(item)
            size += item.size()
        scanned += 1
    return results, scanned, None


def _passes(item: Item, filters: dict[str, Any]) -> bool:
    """A legacy ScanFilter, as moto's Table.scan applies it."""
    for name, (operator, values) in filters.items():
        attribute = item.attrs.get(name)
        if attribute:
            if not attribute.compare(operator, values):
                return False
        elif operator != "NULL":
            return False
    return True


class MomentBackend(DynamoDBBackend):
    """moto's DynamoDB backend holding only the tables of one moment."""

    def __init__(self, tables: Iterable[MomentTable]) -> None:
        super().__init__(REGION, ACCOUNT)
        for table in sorted(tables, key=lambda t: t.name):
            self.tables[table.name] = table

    def get_schema(self, table_name: str, index_name: str | None) -> list[dict[str, Any]]:
        # DynamoDB's answer to an index the table does not have (moto's is ResourceNotFound).
        table = self.get_table(table_name)
        if index_name:
            return table.get_index(index_name, error_if_not=True).schema
        return table.schema

    def describe_table(self, name: str) -> dict[str, Any]:
        table = self.tables.get(name)
        if not isinstance(table, MomentTable):
            raise ResourceNotFoundException(table_name=name)
        return {"Table": table.describe_moment()}


def backend_of(loaded: Iterable[Loaded]) -> MomentBackend:
    """The loaded tables of a moment behind moto's DynamoDB backend."""
    return MomentBackend(MomentTable(  # type: ignore[abstract]  # moto's Table is instantiated so too
        one.table, one.key_schema, one.attributes, one.index, one.description, one.indexes) for one in loaded)


def images_of(items: Iterator[Item]) -> Iterator[dict[str, Any]]:
    """Items as DynamoDB JSON (for tests and benchmarks)."""
    for item in items:
        yield item.to_json()["Attributes"]
