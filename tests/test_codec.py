"""The codec keeps every AttributeValue exactly and gives one canonical key per item."""

from __future__ import annotations

import base64
import json
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changelog.codec import canonical_number, decode_lambda_record, item_key, parse_key, plain_json
from changelog.docs import doc_text, key_text, plain_text
from changelog.errors import DecodeError, StreamConfigError, UsageError
from changelog.store import LocalStore
from stream_consumer.capture import capture_batch
from tests.events import TTL_IDENTITY, lambda_record

B64 = base64.b64encode(bytes(range(256))).decode()
# A possible stream time (2023-11-14): the codec refuses times before 2012 or in the future.
T = 1_700_000_000.0

EVERY_TYPE = {
    "pk": {"S": "ключ-🔑"},
    "s": {"S": "naïve \"quoted\" \\ line\nbreak"},
    "n": {"N": "-12345678901234567890.123456789012345678"},
    "big": {"N": "99999999999999999999999999999999999999"},
    "tiny": {"N": "1E-130"},
    "b": {"B": B64},
    "ss": {"SS": ["a", "b", "ü"]},
    "ns": {"NS": ["1", "2.5", "-3e10"]},
    "bs": {"BS": [B64, base64.b64encode(b"\x00").decode()]},
    "m": {"M": {"inner": {"L": [{"S": "x"}, {"N": "1"}, {"NULL": True}, {"BOOL": False}]}}},
    "l": {"L": [{"M": {"deep": {"SS": ["y"]}}}, {"B": B64}]},
    "null": {"NULL": True},
    "t": {"BOOL": True},
}


def test_every_attribute_type_round_trips_to_the_exact_dynamodb_json() -> None:
    row = decode_lambda_record(lambda_record("tbl", "INSERT", {"pk": EVERY_TYPE["pk"]}, T, 1, new=EVERY_TYPE))
    assert row.new_image is not None
    assert json.loads(row.new_image) == EVERY_TYPE
    assert list(json.loads(row.new_image)) == list(EVERY_TYPE)


def test_numbers_keep_all_38_digits_in_the_plain_doc() -> None:
    doc = plain_json({"big": {"N": "12345678901234567890123456789012345678"}})
    assert doc == '{"big":"12345678901234567890123456789012345678"}'


def test_plain_doc_numbers_are_strings_holding_the_text_dynamodb_sent() -> None:
    doc = plain_json({"total": {"N": "12.50"}, "ns": {"NS": ["1", "2.5"]}, "odd": {"N": "05"}})
    assert doc == '{"total":"12.50","ns":["1","2.5"],"odd":"05"}'


def test_duckdb_reads_a_plain_doc_number_back_with_every_digit() -> None:
    doc = plain_json({"total": {"N": "12345678901234567890.5"}})
    value = duckdb.connect().execute("SELECT ?::JSON->>'total'", [doc]).fetchone()
    assert value == ("12345678901234567890.5",)


TRICKY_TEXT = "".join(chr(c) for c in range(0x20)) + '"\\/\x7f\u2028\u2029\ufeff\uffff é ключ 🎁 \U0010ffff'


def test_images_are_written_byte_for_byte_as_the_stdlib_json_writes_them() -> None:
    image = {TRICKY_TEXT: {"M": {"s": {"S": TRICKY_TEXT}, "ss": {"SS": [TRICKY_TEXT, "a"]}}}, "pk": {"S": "a"}}
    row = decode_lambda_record(lambda_record("tbl", "INSERT", {"pk": {"S": "a"}}, T, 1, new=image))
    assert row.new_image == json.dumps(image, ensure_ascii=False, separators=(",", ":")).encode()
    assert doc_text(row.new_image) == json.dumps({TRICKY_TEXT: {"s": TRICKY_TEXT, "ss": [TRICKY_TEXT, "a"]},
                                                  "pk": "a"}, ensure_ascii=False, separators=(",", ":"))


def test_text_that_is_not_valid_unicode_is_refused() -> None:
    with pytest.raises(DecodeError):
        plain_json({"s": {"S": "lone \ud800 surrogate"}})


@pytest.mark.parametrize("bad", ["٣", "1²", "1" * 39, "1e200", "-", ""])
def test_numbers_dynamodb_could_not_hold_are_refused_in_images(bad: str) -> None:
    with pytest.raises(DecodeError):
        plain_json({"n": {"N": bad}})
    with pytest.raises(DecodeError):
        plain_json({"ns": {"NS": ["1", bad]}})


def test_a_record_with_text_that_is_not_unicode_is_quarantined_not_a_failed_batch(store: LocalStore) -> None:
    good = lambda_record("tbl", "INSERT", {"pk": {"S": "a"}}, T, 1, new={"pk": {"S": "a"}})
    bad = lambda_record("tbl", "INSERT", {"pk": {"S": "b"}}, T, 2, new={"pk": {"S": "b"}, "s": {"S": "\ud800"}})
    result = capture_batch(store, [good, bad], decode_lambda_record, source="test")
    assert (result.captured, result.quarantined) == (1, 1)


def test_a_modify_whose_old_image_writes_1_for_true_is_quarantined(store: LocalStore) -> None:
    new = {"pk": {"S": "a"}, "paid": {"BOOL": True}, "status": {"S": "shipped"}}
    old = {"pk": {"S": "a"}, "paid": {"BOOL": 1}, "status": {"S": "pending"}}  # 1 == True in Python
    bad = lambda_record("tbl", "MODIFY", {"pk": {"S": "a"}}, T, 1, new=new, old=old)
    result = capture_batch(store, [bad], decode_lambda_record, source="test")
    assert (result.captured, result.quarantined) == (0, 1)


def test_attribute_names_must_be_strings() -> None:
    with pytest.raises(DecodeError):
        plain_json({1: {"S": "a"}})  # type: ignore[dict-item]


def test_a_400_kb_item_is_kept_whole() -> None:
    item = {"pk": {"S": "big"}, "blob": {"S": "x" * 400_000}}
    row = decode_lambda_record(lambda_record("tbl", "INSERT", {"pk": {"S": "big"}}, T, 1, new=item))
    assert row.new_image is not None and json.loads(row.new_image) == item


def test_binary_keys_keep_their_base64_text() -> None:
    keys = {"pk": {"B": B64}}
    row = decode_lambda_record(lambda_record("tbl", "REMOVE", keys, T, 1, old=keys))
    assert json.loads(row.keys) == keys
    assert json.loads(row.item_key) == keys


def test_key_attribute_order_does_not_change_the_item_key() -> None:
    one = {"pk": {"S": "a"}, "sk": {"N": "5"}}
    other = {"sk": {"N": "5.0"}, "pk": {"S": "a"}}
    assert item_key(one) == item_key(other) == '{"pk":{"S":"a"},"sk":{"N":"5"}}'


def test_unicode_keys_are_canonical_and_readable() -> None:
    assert item_key({"pk": {"S": "ключ"}}) == '{"pk":{"S":"ключ"}}'


def test_ttl_deletes_are_flagged() -> None:
    keys = {"pk": {"S": "a"}}
    row = decode_lambda_record(lambda_record("tbl", "REMOVE", keys, T, 1, old=keys, identity=TTL_IDENTITY))
    assert row.is_ttl_delete


def test_user_deletes_are_not_ttl_deletes() -> None:
    keys = {"pk": {"S": "a"}}
    assert not decode_lambda_record(lambda_record("tbl", "REMOVE", keys, T, 1, old=keys)).is_ttl_delete


def test_sequence_numbers_are_padded_to_40_digits() -> None:
    row = decode_lambda_record(lambda_record("tbl", "INSERT", {"pk": {"S": "a"}}, T, 123, new={"pk": {"S": "a"}}))
    assert row.sequence_number == "0" * 37 + "123"


def test_keys_only_streams_fail_loudly() -> None:
    record = lambda_record("tbl", "INSERT", {"pk": {"S": "a"}}, T, 1, view="KEYS_ONLY")
    with pytest.raises(StreamConfigError, match="NEW_AND_OLD_IMAGES"):
        decode_lambda_record(record)


@pytest.mark.parametrize(
    "bad",
    [
        {"x": {"Q": "1"}},
        {"x": {"N": "abc"}},
        {"x": {"B": "not base64!"}},
        {"x": {"SS": []}},
        {"x": {"S": "a", "N": "1"}},
        {"x": {"NULL": False}},
    ],
)
def test_invalid_attribute_values_are_refused(bad: dict) -> None:
    with pytest.raises(DecodeError):
        plain_json(bad)


def test_numbers_beyond_38_digits_are_refused_not_rounded() -> None:
    with pytest.raises(DecodeError):
        canonical_number("1234567890123456789012345678901234567890")


def test_plain_keys_are_typed_from_the_key_schema() -> None:
    schema = [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}]
    assert parse_key("pk=a,sk=5", schema) == {"pk": {"S": "a"}, "sk": {"N": "5"}}


def test_a_binary_key_spelt_with_other_padding_bits_is_the_same_key() -> None:
    # AAF= and AAE= both decode to 00 01: one item, one canonical key text.
    assert item_key({"pk": {"B": "AAF="}}) == item_key({"pk": {"B": "AAE="}}) == '{"pk":{"B":"AAE="}}'


@pytest.mark.parametrize("text", ["pk= a,sk=5", "pk=a ,sk=5"])
def test_a_plain_key_refuses_a_text_value_with_a_space_at_either_end(text: str) -> None:
    schema = [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}]
    with pytest.raises(UsageError, match="JSON"):
        parse_key(text, schema)


def test_a_plain_key_naming_an_attribute_twice_is_refused() -> None:
    schema = [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}]
    with pytest.raises(UsageError, match="twice"):
        parse_key("pk=a,sk=5,pk=b", schema)


def test_a_plain_key_takes_spaces_around_its_parts_and_numbers() -> None:
    schema = [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}]
    assert parse_key(" pk=a, sk = 5 ", schema) == {"pk": {"S": "a"}, "sk": {"N": "5"}}


def test_a_key_of_the_wrong_shape_is_a_usage_error() -> None:
    schema = [{"AttributeName": "pk", "AttributeType": "S"}]
    with pytest.raises(UsageError, match="key schema"):
        parse_key('{"id":{"S":"a"}}', schema)


@settings(max_examples=300, deadline=None)
@given(keys=st.dictionaries(
    st.text(max_size=6) | st.sampled_from(["pk", "sk", "é", "\n", '"', "\\"]),
    st.one_of(st.text(max_size=8).map(lambda s: {"S": s}),
              st.integers(-(10**38) + 1, 10**38 - 1).map(lambda n: {"N": str(n)}),
              st.sampled_from([{"N": "007"}, {"N": "-0"}, {"N": "5.0"}, {"N": "1e3"}, {"B": "AA=="}, {"N": "1٣"},
                               {"S": 1}, {"N": 5}, {"S": "a", "N": "1"}, {"SS": ["a"]}, {}, "a", {"B": "A"}])),
    max_size=3))
def test_the_one_call_key_text_is_the_general_key_text(keys: dict[str, Any]) -> None:
    from changelog.codec import _general_item_key

    try:
        expected = _general_item_key(keys)
    except DecodeError:
        with pytest.raises(DecodeError):
            item_key(keys)
    else:
        assert item_key(keys) == expected


@pytest.mark.parametrize("digits", ["1٣", "٣", "1²", "-١"])
def test_a_key_number_with_digits_that_are_not_ascii_is_refused(digits: str) -> None:
    with pytest.raises(DecodeError):
        item_key({"pk": {"N": digits}})


def test_a_value_shown_plainly_is_what_the_items_doc_holds() -> None:
    item = {**EVERY_TYPE, "m": {"M": {"n": {"N": "12.50"}, "l": {"L": [{"NULL": True}, {"BOOL": False}]}}}}
    doc = json.loads(doc_text(json.dumps(item)) or "")
    assert {name: json.loads(plain_text(value)) for name, value in item.items()} == doc


def test_a_key_shown_plainly_puts_the_partition_key_first_and_reads_back() -> None:
    key = {"sk": {"N": "100136"}, "pk": {"S": "customer-034"}}
    text = key_text(key, ("pk", "sk"))
    schema = [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}]
    assert text == "pk=customer-034, sk=100136" and parse_key(text, schema) == key


@pytest.mark.parametrize("text", ["4111111111111111111111111111111111111111", "card 4111-1111"])
def test_a_number_that_cannot_be_stored_is_refused_without_quoting_it(text: str) -> None:
    # The reason is kept with the quarantined record and reaches the verifier's logs: no item values there.
    with pytest.raises(DecodeError) as refused:
        canonical_number(text)
    assert "4111" not in str(refused.value)


@pytest.mark.parametrize("number", ["1.2345678901234567890123456789012345678E-130",
                                    "-9.9999999999999999999999999999999999999E+125"])
def test_thirty_eight_digits_at_either_end_of_dynamodbs_range_are_a_number(number: str) -> None:
    # DynamoDB bounds a number's magnitude (1E-130 to 9.99...E+125) and its digits (38), not the
    # exponent of its last digit: such a record is a change to keep, not one to quarantine.
    assert canonical_number(canonical_number(number)) == canonical_number(number)


@pytest.mark.parametrize("number", ["1E+126", "11E+125", "1E-131", "0.9E-130", "-1E-131"])
def test_a_number_outside_dynamodbs_range_is_refused(number: str) -> None:
    with pytest.raises(DecodeError):
        canonical_number(number)


@pytest.mark.parametrize("number", ["1E+125", "-9.99E+125", "1E-130", "120000000000000000000000000000000000000000"])
def test_a_numbers_canonical_text_reads_back_as_itself(number: str) -> None:
    # Written out in full, 1E+125 is 126 characters: read as 126 digits it was refused, so a key's own
    # canonical text (item_key) could not be given back to --key.
    canonical = canonical_number(number)
    assert canonical_number(canonical) == canonical
    key = {"id": {"N": number}}
    assert item_key(parse_key(item_key(key))) == item_key(key)
