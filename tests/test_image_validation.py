"""Image validation on the capture path: exactly DynamoDB's AttributeValue rules, however it is checked.

Capture checks an image either with one regex pass over the JSON orjson wrote (``codec._IMAGE``, for
images up to 2 KB) or with the walk (``codec.check_image``). These properties hold both to an
independent model of the rules, over generated images that mix valid values with every kind of
wrong one (wrong tags, wrong payload types, bad numbers, bad base64, empty sets, extra tags).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from changelog import codec
from changelog.codec import canonical_number, check_image, image_bytes
from changelog.errors import DecodeError

TAGS = ["S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "M", "L"]
MAX_NESTING = 32


# The model: DynamoDB's rules as its documentation states them, written without the codec's walk.
def _number_ok(text: Any) -> bool:
    if type(text) is not str:
        return False
    try:
        canonical_number(text)  # the 38-digit and range rule, one definition
    except DecodeError:
        return False
    return True


def _base64_ok(text: Any) -> bool:
    return type(text) is str and len(text) % 4 == 0 and re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", text) is not None


def model_valid(value: Any, depth: int = 0) -> bool:
    """Whether one AttributeValue is valid at nesting ``depth``."""
    if type(value) is not dict or len(value) != 1:
        return False
    ((tag, inner),) = value.items()
    checks = {
        "S": lambda: type(inner) is str,
        "N": lambda: _number_ok(inner),
        "B": lambda: _base64_ok(inner),
        "BOOL": lambda: type(inner) is bool,
        "NULL": lambda: inner is True,
        # A set's members are distinct: numbers by value, binaries by their bytes.
        "SS": lambda: type(inner) is list and bool(inner) and all(type(e) is str for e in inner)
        and len(set(inner)) == len(inner),
        "NS": lambda: type(inner) is list and bool(inner) and all(_number_ok(e) for e in inner)
        and len({canonical_number(e) for e in inner}) == len(inner),
        "BS": lambda: type(inner) is list and bool(inner) and all(_base64_ok(e) for e in inner)
        and len({base64.b64decode(e) for e in inner}) == len(inner),
        "M": lambda: depth < MAX_NESTING and type(inner) is dict
        and all(model_valid(v, depth + 1) for v in inner.values()),
        "L": lambda: depth < MAX_NESTING and type(inner) is list and all(model_valid(v, depth + 1) for v in inner),
    }
    return tag in checks and checks[tag]()


def model_image_valid(image: Any) -> bool:
    # An attribute name is at least one character long.
    return type(image) is dict and "" not in image and all(model_valid(value) for value in image.values())


numbers = st.one_of(
    st.integers(-(10**40), 10**40).map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.from_regex(r"-?[0-9]{0,42}(\.[0-9]{0,4})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["5.", ".5", "-0", "007", "1e126", "1e-131", "0.0", "٣", "+1", "1_0", " 1", "", "-", "."]),
)
binaries = st.one_of(st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()),
                     st.text(alphabet="AB=+/x-", max_size=8))
texts = st.text(max_size=8) | st.sampled_from(['"', "\\", '\\"', '{"S":"x"}', "é🎁", "\u2028"])
names = texts | st.sampled_from(TAGS)
# Anything a JSON parser can produce, in places where an AttributeValue or a payload belongs.
junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(names, inner, max_size=2),
    max_leaves=4,
)


def _values(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        texts.map(lambda s: {"S": s}),
        numbers.map(lambda n: {"N": n}),
        binaries.map(lambda b: {"B": b}),
        st.booleans().map(lambda b: {"BOOL": b}),
        st.just({"NULL": True}),
        st.lists(texts, max_size=3).map(lambda v: {"SS": v}),
        st.lists(numbers, max_size=3).map(lambda v: {"NS": v}),
        st.lists(binaries, max_size=3).map(lambda v: {"BS": v}),
        st.dictionaries(names, children, max_size=3).map(lambda v: {"M": v}),
        st.lists(children, max_size=3).map(lambda v: {"L": v}),
        st.tuples(st.sampled_from([*TAGS, "X", "s"]), junk).map(lambda t: {t[0]: t[1]}),  # a wrong payload
        st.dictionaries(st.sampled_from(TAGS), junk, min_size=2, max_size=3),  # more than one tag
        junk,
    )


values = st.recursive(texts.map(lambda s: {"S": s}) | numbers.map(lambda n: {"N": n}), _values, max_leaves=25)

# Valid values only, and one defect to hide among them: an image that is wrong in one place only is
# where a check that looks at too little would say yes.
good_numbers = st.one_of(st.integers(-(10**38) + 1, 10**38 - 1).map(str),
                         st.from_regex(r"-?[1-9][0-9]{0,20}\.[0-9]{1,16}", fullmatch=True))
good_binaries = st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode())


def _good(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        texts.map(lambda s: {"S": s}), good_numbers.map(lambda n: {"N": n}), good_binaries.map(lambda b: {"B": b}),
        st.booleans().map(lambda b: {"BOOL": b}), st.just({"NULL": True}),
        st.lists(texts, min_size=1, max_size=3, unique=True).map(lambda v: {"SS": v}),
        st.lists(good_numbers, min_size=1, max_size=3, unique_by=canonical_number).map(lambda v: {"NS": v}),
        st.lists(good_binaries, min_size=1, max_size=3, unique_by=base64.b64decode).map(lambda v: {"BS": v}),
        st.dictionaries(names, children, max_size=3).map(lambda v: {"M": v}),
        st.lists(children, max_size=3).map(lambda v: {"L": v}),
    )


good_values = st.recursive(texts.map(lambda s: {"S": s}) | good_numbers.map(lambda n: {"N": n}), _good,
                           max_leaves=15)
good_images = st.dictionaries(names.filter(bool), good_values, max_size=6)
KNOWN_DEFECTS = [
    {"NULL": False}, {"NULL": 1}, {"BOOL": 1}, {"BOOL": 0}, {"BOOL": 1.0}, {"BOOL": None}, {"BOOL": "true"},
    {"SS": []}, {"NS": []}, {"BS": []}, {"SS": ["a", 1]}, {"NS": ["1", "x"]}, {"BS": ["AA==", "A"]},
    {"M": []}, {"L": {}}, {"L": [1]}, {"M": {"a": "b"}}, {"M": {"a": []}}, {"S": None}, {"S": 1}, {"N": 1},
    {"N": 1.5}, {"N": "1" * 39}, {"N": "0." + "1" * 39}, {"N": "1e200"}, {"N": "٣"}, {"N": ""}, {"B": "A"},
    {"B": "A==="}, {"SS": ["a", "a"]}, {"NS": ["1", "1.0"]}, {"NS": ["-0", "0"]}, {"BS": ["AA==", "AA=="]},
    {"X": "a"}, {"s": "a"}, {}, {"S": "a", "N": "1"}, [], "S", None, 1, True,
]
defects = st.one_of(
    numbers.map(lambda n: {"N": n}),
    st.integers(10**37, 10**40).map(lambda n: {"N": str(n)}),
    st.integers(10**37, 10**40).map(lambda n: {"N": f"-{n}"}),
    binaries.map(lambda b: {"B": b}),
    st.sampled_from(KNOWN_DEFECTS),
    st.tuples(st.sampled_from(TAGS), junk).map(lambda t: {t[0]: t[1]}),
)


@st.composite
def one_defect_images(draw: st.DrawFn, defect_of: st.SearchStrategy[Any] = defects) -> dict[str, Any]:
    """A valid image with one bad value put somewhere in it: at the top or inside maps and lists."""
    image = draw(good_images)
    defect = draw(defect_of)
    for wrap in draw(st.lists(st.sampled_from(["M", "L"]), max_size=4)):
        defect = {"M": {draw(names): defect}} if wrap == "M" else {"L": [draw(good_values), defect]}
    return {**image, draw(names): defect}


images = st.one_of(good_images, one_defect_images(), st.dictionaries(names, values, max_size=6), junk)
PROPERTY = settings(max_examples=600, deadline=None)


def _dumpable(image: Any) -> bytes:
    try:
        return orjson.dumps(image)
    except TypeError:  # text that is not Unicode, or an integer past 64 bits: refused before validation
        assume(False)
        raise


@pytest.mark.slow
@PROPERTY
@given(image=images)
def test_the_walk_accepts_exactly_what_dynamodb_accepts(image: Any) -> None:
    valid = model_image_valid(image)
    if valid:
        check_image(image)
    else:
        with pytest.raises(DecodeError):
            check_image(image)


@pytest.mark.slow
@PROPERTY
@given(image=images)
def test_the_one_pass_pattern_never_accepts_an_invalid_image(image: Any) -> None:
    text = _dumpable(image)
    if codec._IMAGE.fullmatch(text) is not None:
        assert model_image_valid(image)


@pytest.mark.slow
@PROPERTY
@given(image=st.one_of(good_images, one_defect_images(), st.dictionaries(names, values, max_size=6)))
def test_capture_refuses_exactly_the_invalid_images_and_stores_what_orjson_wrote(image: Any) -> None:
    text = _dumpable(image)
    if model_image_valid(image):
        assert image_bytes(image) == text
    else:
        with pytest.raises(DecodeError):
            image_bytes(image)


def _numbers_for_flags(value: Any, number: Any) -> Any:
    """``value`` with every BOOL and NULL payload written as ``number``: equal under Python's ``==``
    when ``number`` is 1, 1.0, 0 or -0.0 (``True == 1``), yet invalid."""
    if isinstance(value, dict):
        return {name: number if name in ("BOOL", "NULL") and type(inner) is bool else _numbers_for_flags(inner, number)
                for name, inner in value.items()}
    if isinstance(value, list):
        return [_numbers_for_flags(inner, number) for inner in value]
    return value


@st.composite
def old_and_new_images(draw: st.DrawFn) -> tuple[Any, dict[str, Any]]:
    """A valid new image and an old image that repeats most of it: some attributes changed (to
    anything, valid or not), dropped or added, and some with their flags written as numbers."""
    new = draw(good_images)
    old: dict[str, Any] = {}
    for name, value in new.items():
        change = draw(st.sampled_from(["same", "same", "changed", "dropped", "flags"]))
        if change == "same":
            old[name] = value
        elif change == "changed":
            old[name] = draw(st.one_of(values, defects, good_values))
        elif change == "flags":
            old[name] = _numbers_for_flags(value, draw(st.sampled_from([1, 0, 1.0, 0.0, -0.0, True, False])))
    old.update(draw(st.dictionaries(names, st.one_of(good_values, values), max_size=2)))
    if draw(st.integers(0, 9)) == 0:
        return draw(junk), new  # not a map at all
    return old, new


@pytest.mark.slow
@PROPERTY
@given(pair=old_and_new_images())
def test_an_old_image_checked_beside_its_new_image_gets_the_verdict_of_a_whole_check(
        pair: tuple[Any, dict[str, Any]]) -> None:
    old, new = pair
    text = _dumpable(old)
    if model_image_valid(old):
        assert image_bytes(old, beside=new) == text
    else:
        with pytest.raises(DecodeError):
            image_bytes(old, beside=new)


@pytest.mark.parametrize("number", [1, 1.0, 0, 0.0, -0.0], ids=repr)
def test_an_old_image_writing_a_number_for_a_flag_its_new_image_holds_is_refused(number: Any) -> None:
    new = {"pk": {"S": "a"}, "flags": {"L": [{"BOOL": bool(number)}, {"NULL": True}]}}
    old = {"pk": {"S": "a"}, "flags": {"L": [{"BOOL": number}, {"NULL": True}]}}
    assert old == new  # Python's equality cannot tell them apart
    with pytest.raises(DecodeError):
        image_bytes(old, beside=new)


@pytest.mark.parametrize("defect", KNOWN_DEFECTS, ids=repr)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_one_known_defect_anywhere_in_a_valid_image_is_refused_both_ways(defect: Any, data: st.DataObject) -> None:
    image = data.draw(one_defect_images(st.just(defect)))
    assert not model_image_valid(image)
    with pytest.raises(DecodeError):
        check_image(image)
    assert codec._IMAGE.fullmatch(_dumpable(image)) is None


def test_the_pattern_takes_the_common_images_in_one_pass() -> None:
    common = {"pk": {"S": "order#1"}, "n": {"N": "-12.50"}, "ok": {"BOOL": True}, "none": {"NULL": True},
              "b": {"B": "AAEC/w=="}, "m": {"M": {"l": {"L": [{"M": {"x": {"S": "\\"}}}, {"N": "7"}]}}}}
    assert codec._IMAGE.fullmatch(orjson.dumps(common)) is not None


@pytest.mark.parametrize("a_set", [{"SS": ["a", 'q"uote']}, {"NS": ["1", "2.5"]}, {"BS": ["AA=="]}])
def test_a_set_always_gets_the_walk_which_sees_a_member_twice(a_set: dict[str, Any]) -> None:
    image = {"pk": {"S": "a"}, "set": a_set}
    assert codec._IMAGE.fullmatch(orjson.dumps(image)) is None
    assert image_bytes(image) == orjson.dumps(image)
    ((tag, members),) = a_set.items()
    with pytest.raises(DecodeError, match="same member twice"):
        image_bytes({"pk": {"S": "a"}, "set": {tag: [*members, members[0]]}})


def test_a_number_form_the_pattern_does_not_take_gets_the_walk_verdict() -> None:
    assert image_bytes({"n": {"N": "1.5E+3"}}) == b'{"n":{"N":"1.5E+3"}}'
    with pytest.raises(DecodeError):
        image_bytes({"n": {"N": "1e999"}})
