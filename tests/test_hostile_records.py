"""Hostile stream records: impossible times, table names that are paths, absurd nesting.

Each bad record is quarantined whole with the reason that is really wrong with it, and the rest of
its batch is captured: one bad record never fails a batch, and nothing lands outside ``tables/``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from changelog.codec import MAX_NESTING, decode_kinesis_record, decode_lambda_record, table_from_arn
from changelog.errors import DecodeError
from changelog.layout import table_root
from changelog.store import Store
from stream_consumer import handler
from tests.events import event, kinesis_record, lambda_record

TABLE = "orders"
GOOD_SECONDS = 1_750_000_000
KEY = {"pk": {"S": "a"}}


@pytest.fixture
def local(handler_store: Store) -> Store:
    return handler_store


def _good(sequence: int = 1) -> dict[str, Any]:
    return lambda_record(TABLE, "INSERT", KEY, GOOD_SECONDS, sequence, new=KEY)


def _at(seconds: Any) -> dict[str, Any]:
    record = lambda_record(TABLE, "INSERT", {"pk": {"S": "b"}}, GOOD_SECONDS, 2, new={"pk": {"S": "b"}})
    record["dynamodb"]["ApproximateCreationDateTime"] = seconds
    return record


def _quarantined(store: Store, table: str = TABLE) -> list[dict[str, Any]]:
    return [json.loads(store.read(path)) for path in store.list(table_root(table) + "/quarantine/")]


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"S": "bottom"}
    for _ in range(depth):
        value = {"M": {"x": value}}
    return value


@pytest.mark.parametrize(("seconds", "reason"), [
    (GOOD_SECONDS * 1000, "in the future"),          # milliseconds where seconds are expected
    (1e20, "not a time"),
    (math.nan, "must be epoch seconds"),
    (math.inf, "must be epoch seconds"),
    (-1, "before 2012"),
    (0, "before 2012"),
    (1_000_000_000, "before 2012"),                  # 2001
    (4_102_444_800, "in the future"),                # 2100
])
def test_a_record_with_an_impossible_time_is_quarantined_and_the_batch_goes_on(local: Store, seconds: Any,
                                                                               reason: str) -> None:
    assert handler.lambda_handler(event([_good(), _at(seconds)]), None) == {"batchItemFailures": []}
    (kept,) = _quarantined(local)
    assert reason in kept["reason"]
    assert kept["record"]["eventID"] == _at(seconds)["eventID"]


@pytest.mark.parametrize("sequence", ["²", "١٢٣", "12³", "", "-1", "1.5"])
def test_a_record_whose_sequence_number_is_not_ascii_digits_is_quarantined(local: Store, sequence: str) -> None:
    bad = _at(GOOD_SECONDS)
    bad["dynamodb"]["SequenceNumber"] = sequence  # str.isdigit() alone takes "²" and "١"
    assert handler.lambda_handler(event([_good(), bad]), None) == {"batchItemFailures": []}
    (kept,) = _quarantined(local)
    assert "sequence number must be digits" in kept["reason"]


@pytest.mark.parametrize("name", ["..", ".", "a/b", "ab", "x" * 256, "tab le", "../../etc", "ünï"])
def test_an_arn_whose_table_name_is_not_a_dynamodb_name_is_refused(name: str) -> None:
    with pytest.raises(DecodeError, match=r"not a DynamoDB table name|names no"):
        table_from_arn(f"arn:aws:dynamodb:us-east-1:123456789012:table/{name}/stream/2024-01-01T00:00:00.000")


def test_an_arn_naming_dotdot_writes_nothing_outside_tables(local: Store) -> None:
    bad = lambda_record("..", "INSERT", KEY, GOOD_SECONDS, 1, new=KEY)
    assert handler.lambda_handler(event([bad, _good(2)]), None) == {"batchItemFailures": []}
    root = Path(local.uri)
    assert sorted(p.name for p in root.iterdir()) == ["tables"]
    assert sorted(p.name for p in (root / "tables").iterdir()) == [TABLE]
    (kept,) = _quarantined(local)
    assert "not a DynamoDB table name" in kept["reason"]


def test_a_kinesis_payload_naming_a_path_is_refused() -> None:
    record = kinesis_record("..", "INSERT", KEY, GOOD_SECONDS * 1000, 1, new=KEY)
    with pytest.raises(DecodeError, match="tableName"):
        decode_kinesis_record(record)


def test_a_200_deep_map_is_quarantined_as_too_deep(local: Store) -> None:
    deep = lambda_record(TABLE, "INSERT", KEY, GOOD_SECONDS, 2, new={**KEY, "deep": _nested(200)})
    assert handler.lambda_handler(event([_good(), deep]), None) == {"batchItemFailures": []}
    (kept,) = _quarantined(local)
    assert "nested more than 32 levels" in kept["reason"]


def test_nesting_up_to_dynamodbs_limit_is_captured() -> None:
    record = lambda_record(TABLE, "INSERT", KEY, GOOD_SECONDS, 2, new={**KEY, "deep": _nested(MAX_NESTING)})
    assert decode_lambda_record(record).new_image is not None
    too_deep = lambda_record(TABLE, "INSERT", KEY, GOOD_SECONDS, 2, new={**KEY, "deep": _nested(MAX_NESTING + 1)})
    with pytest.raises(DecodeError, match="nested"):
        decode_lambda_record(too_deep)


def test_deep_lists_count_as_nesting_too() -> None:
    value: dict[str, Any] = {"N": "1"}
    for _ in range(MAX_NESTING + 1):
        value = {"L": [value]}
    with pytest.raises(DecodeError, match="nested"):
        decode_lambda_record(lambda_record(TABLE, "INSERT", KEY, GOOD_SECONDS, 2, new={**KEY, "l": value}))
