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


# --- poison records: each is quarantined whole with its reason, the rest of its batch is stored ----


def _kinesis_good() -> dict[str, Any]:
    return kinesis_record(TABLE, "INSERT", KEY, GOOD_SECONDS * 1000, "1", new=KEY)


def _captured(store: Store) -> int:
    return len(store.list(table_root(TABLE) + "/changes/"))


def test_a_kinesis_payload_nested_past_the_recursion_limit_is_quarantined(local: Store) -> None:
    import base64

    deep = kinesis_record(TABLE, "INSERT", KEY, GOOD_SECONDS * 1000, "2", new=KEY)
    deep["kinesis"]["data"] = base64.b64encode(b"[" * 200_000).decode()
    assert handler.lambda_handler(event([_kinesis_good(), deep]), None) == {"batchItemFailures": []}
    (kept,) = _quarantined(local)
    assert "nested deeper" in kept["reason"]
    assert _captured(local) == 1


def test_a_300_digit_sequence_number_is_quarantined_not_a_failed_batch(local: Store) -> None:
    long = _at(GOOD_SECONDS)
    long["dynamodb"]["SequenceNumber"] = "7" * 300  # its change file's name would pass 255 bytes
    assert handler.lambda_handler(event([_good(), long]), None) == {"batchItemFailures": []}
    (kept,) = _quarantined(local)
    assert "300 digits" in kept["reason"]
    assert _captured(local) == 1


def test_a_300_digit_kinesis_sequence_number_is_quarantined(local: Store) -> None:
    long = kinesis_record(TABLE, "INSERT", {"pk": {"S": "b"}}, GOOD_SECONDS * 1000, "4" * 300,
                          new={"pk": {"S": "b"}})
    assert handler.lambda_handler(event([_kinesis_good(), long]), None) == {"batchItemFailures": []}
    (kept,) = _quarantined(local)
    assert "300 digits" in kept["reason"]


def _image(**attributes: Any) -> dict[str, Any]:
    return lambda_record(TABLE, "INSERT", {"pk": {"S": "b"}}, GOOD_SECONDS, 2, new={"pk": {"S": "b"}, **attributes})


IMPOSSIBLE_IMAGES = {
    "string-set-duplicate": (_image(tags={"SS": ["a", "b", "a"]}), "same member twice"),
    "number-set-same-value": (_image(ns={"NS": ["1", "1.0"]}), "same member twice"),
    "binary-set-duplicate": (_image(bs={"BS": ["AAE=", "AAE="]}), "same member twice"),
    "nested-set-duplicate": (_image(m={"M": {"s": {"SS": ["x", "x"]}}}), "same member twice"),
    "empty-attribute-name": (_image(**{"": {"S": "x"}}), "attribute name is empty"),
    "over-400-kb": (_image(blob={"S": "x" * (400 * 1024)}), "400 KB"),
}


@pytest.mark.parametrize("name", sorted(IMPOSSIBLE_IMAGES))
def test_an_image_dynamodb_could_never_hold_is_quarantined(local: Store, name: str) -> None:
    record, reason = IMPOSSIBLE_IMAGES[name]
    assert handler.lambda_handler(event([_good(), record]), None) == {"batchItemFailures": []}
    (kept,) = _quarantined(local)
    assert reason in kept["reason"]
    assert _captured(local) == 1


def test_an_item_just_under_400_kb_is_captured() -> None:
    # The name "pk" and its value, plus the name "blob" and its value: exactly 400 KB.
    text = "é" * ((400 * 1024 - 2 - 1 - 4) // 2)  # two bytes each in UTF-8, more in the JSON escapes
    record = _image(blob={"S": text})
    assert decode_lambda_record(record).new_image is not None


def test_an_image_missing_a_key_attribute_is_quarantined(local: Store) -> None:
    record = lambda_record(TABLE, "INSERT", {"pk": {"S": "b"}}, GOOD_SECONDS, 2, new={"other": {"S": "b"}})
    assert handler.lambda_handler(event([_good(), record]), None) == {"batchItemFailures": []}
    (kept,) = _quarantined(local)
    assert "lacks the key attribute(s) pk" in kept["reason"]


@pytest.mark.parametrize("which", ["new", "old"])
def test_a_change_whose_keys_disagree_with_its_image_is_quarantined(local: Store, which: str) -> None:
    images = {"new": {"pk": {"S": "b"}}, "old": {"pk": {"S": "b"}}}
    images[which] = {"pk": {"S": "someone-else"}}
    record = lambda_record(TABLE, "MODIFY", {"pk": {"S": "b"}}, GOOD_SECONDS, 2, **images)
    assert handler.lambda_handler(event([_good(), record]), None) == {"batchItemFailures": []}
    (kept,) = _quarantined(local)
    assert "Keys disagree" in kept["reason"]


def test_a_number_key_written_differently_in_its_image_is_the_same_key() -> None:
    record = lambda_record(TABLE, "INSERT", {"pk": {"N": "5"}}, GOOD_SECONDS, 2, new={"pk": {"N": "5.0"}})
    assert decode_lambda_record(record).item_key == '{"pk":{"N":"5"}}'


@pytest.mark.parametrize("not_an_event", [{"Records": 5}, {"Records": "abc"}, [], None, "x", {"Records": None}])
def test_an_event_that_is_not_a_stream_batch_is_logged_not_a_traceback(local: Store, not_an_event: Any) -> None:
    assert handler.lambda_handler(not_an_event, None) == {"batchItemFailures": []}
    assert not Path(local.uri, "tables").exists()


def test_a_record_the_decoder_did_not_foresee_is_quarantined_by_its_kind(local: Store) -> None:
    from stream_consumer.capture import capture_batch

    def decode(raw: Any) -> Any:
        if raw is not None:
            return decode_lambda_record(raw)
        raise OverflowError("an unforeseen failure quoting the item")

    result = capture_batch(local, [_good(), None], decode, source="test", table_hint=TABLE)
    assert (result.captured, result.quarantined) == (1, 1)
    (kept,) = _quarantined(local)
    assert kept["reason"] == "the record could not be decoded (OverflowError)"


# --- the store's small documents: what no writer produces is a damaged store (exit 6), never a traceback


def _forged_manifest(store: Store, **fields: Any) -> str:
    """A published manifest rewritten with ``fields``, its own checksum recomputed (as a forger would)."""
    from changelog.snapshot import _canonical, sha256_hex
    from compactor.compaction import compact

    capture_good(store)
    compact(store, TABLE, GOOD_SECONDS * 1_000_000, merge=False)
    (path,) = [p for p in store.list(table_root(TABLE) + "/snapshots/") if p.endswith("manifest.json")]
    body = json.loads(store.read(path))
    body.pop("self_sha256")
    body.update(fields)
    text = json.dumps(body, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=True)
    body = json.loads(text)  # Infinity kept as the float json reads it back as
    store.write(path, _canonical({**body, "self_sha256": sha256_hex(_canonical(body))}))
    return path


def capture_good(store: Store) -> None:
    from changelog.meta import meta_from_keys, write_meta
    from stream_consumer.capture import capture_batch

    capture_batch(store, [_good(1), _good(2)], decode_lambda_record, source="test")
    write_meta(store, meta_from_keys(TABLE, KEY))


@pytest.mark.parametrize("fields", [{"snapshot_time_us": math.inf}, {"items": math.inf},
                                    {"restorable_from_us": 10 ** 30}, {"format_version": -1},
                                    {"format_version": 0}])
def test_a_forged_manifest_holding_a_number_no_writer_produces_is_a_damaged_store(store: Store,
                                                                                  fields: Any) -> None:
    from changelog.errors import DamagedStore
    from changelog.snapshot import read_manifest

    path = _forged_manifest(store, **fields)
    with pytest.raises(DamagedStore):
        read_manifest(store, path)


GAP_BODIES = {
    "infinity": '{"shard_id": "s", "detected_at_us": Infinity}',
    "1e400": '{"shard_id": "s", "detected_at_us": 1e400}',
    "nan-start": '{"shard_id": "s", "detected_at_us": 1, "start_us": NaN}',
    "huge": '{"shard_id": "s", "detected_at_us": 1, "end_us": 1000000000000000000000000000000}',
    "5000-digits": '{"shard_id": "s", "detected_at_us": ' + "9" * 5000 + "}",
    "negative": '{"shard_id": "s", "detected_at_us": -5}',
    "text-time": '{"shard_id": "s", "detected_at_us": "soon"}',
    "missing": '{"shard_id": "s"}',
    "list": "[1, 2]",
    "deep": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("name", sorted(GAP_BODIES))
def test_a_gap_record_no_writer_produces_is_a_damaged_store(store: Store, name: str) -> None:
    from changelog.errors import DamagedStore
    from changelog.gaps import gaps_root, read_gaps

    store.write(gaps_root(TABLE) + "s-start.json", GAP_BODIES[name].encode())
    with pytest.raises(DamagedStore, match=r"s-start\.json"):
        read_gaps(store, TABLE)


@pytest.mark.parametrize("body", ['{"shard_id": "s", "watermark_us": 1e400}', '{"watermark_us": 5}',
                                  '{"shard_id": "s", "watermark_us": Infinity}',
                                  '{"shard_id": "s", "sequence_number": 5}', "[" * 100_000])
def test_a_checkpoint_no_writer_produces_is_a_damaged_store(store: Store, body: str) -> None:
    from changelog.errors import DamagedStore
    from changelog.layout import checkpoint_path
    from stream_consumer.checkpoint import read_checkpoints

    store.write(checkpoint_path(TABLE, "s"), body.encode())
    with pytest.raises(DamagedStore):
        read_checkpoints(store, TABLE)


@pytest.mark.parametrize("body", ['{"observed_us": 1e400, "settings": {}}', '{"settings": {}}',
                                  '{"observed_us": 5}', '{"observed_us": 5, "settings": 7}'])
def test_a_settings_record_no_writer_produces_is_a_damaged_store(store: Store, body: str) -> None:
    from changelog.errors import DamagedStore
    from changelog.layout import settings_root
    from changelog.settings import history

    store.write(f"{settings_root(TABLE)}/{5:016d}-0123456789abcdef.json", body.encode())
    with pytest.raises(DamagedStore):
        history(store, TABLE)


@pytest.mark.parametrize("meta", [{}, {"table_name": TABLE}, {"table_name": TABLE, "key_schema": "pk"},
                                  {"table_name": TABLE, "key_schema": [{"AttributeName": 5}]},
                                  {"table_name": TABLE, "key_schema": [{"AttributeName": "pk", "KeyType": "X"}]},
                                  {"table_name": TABLE, "key_schema": []},
                                  {"table_name": "other", "key_schema": [{"AttributeName": "pk"}]}])
def test_a_meta_json_of_the_wrong_shape_is_a_damaged_store(store: Store, meta: Any) -> None:
    from changelog.errors import DamagedStore
    from changelog.layout import meta_path
    from changelog.meta import read_meta

    store.write(meta_path(TABLE), json.dumps(meta).encode())
    with pytest.raises(DamagedStore, match=r"meta\.json"):
        read_meta(store, TABLE)
