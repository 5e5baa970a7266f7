"""The key rule in SQL (``keyorder.sql_key``, ``index.layout``) gives exactly the bytes the Python rule gives.

``serve`` keys every item of a table in DuckDB; requests are keyed in Python (``keyorder.encode_value``).
Both must agree byte for byte, and refuse the same values, or a GetItem would miss an item it holds.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changelog.errors import DamagedStore
from replayer.restoring.replay import laid_out
from replayer.serving.index import Index, KeyNames, build, layout
from replayer.serving.keyorder import NotAKey, define_sql, encode_value, sql_key

_DIGITS = st.text("0123456789", min_size=1, max_size=40)
NUMBERS = st.one_of(
    st.integers(-(10**38) + 1, 10**38 - 1).map(str),
    st.integers(10**120, 10**135).map(str),  # either side of the 127 digits of the short path
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.builds(lambda sign, whole, point, fraction, e, exponent: f"{sign}{whole}{point}{fraction}{e}{exponent}",
              st.sampled_from(["", "-", "+"]), st.one_of(st.just(""), _DIGITS), st.sampled_from(["", "."]),
              st.one_of(st.just(""), _DIGITS), st.sampled_from(["", "e", "E", "e+", "E-", "e-0"]),
              st.one_of(st.just(""), st.integers(0, 60_000).map(str), _DIGITS)),
    st.text("0123456789+-.eE _", max_size=12),
    st.sampled_from(["1.0", "-0.12", "-0.123", "0", "-0", "0.000", "1E+5", "1e49150", "1e49151", "1e-16384",
                     "1e-16385", "0e9999999999999999", "0e99999999999999999", "9" * 38, "-" + "9" * 38 + "e-130",
                     "Infinity", "NaN", "1_0", " 1", "١"]),
)
BINARIES = st.one_of(st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()),
                     st.text("ABCQRab+/=09", max_size=9))


def _python(value: dict[str, Any]) -> bytes | None:
    try:
        return encode_value(value)
    except NotAKey:
        return None


def _sql(values: list[dict[str, Any]], kind: str) -> list[bytes | None]:
    con = duckdb.connect()
    define_sql(con)
    rows = con.execute(f"SELECT {sql_key('v', kind)} "
                       "FROM (SELECT unnest(?)::JSON AS v, generate_subscripts(?, 1) AS n) ORDER BY n",
                       [[orjson.dumps(v).decode() for v in values]] * 2).fetchall()
    return [row[0] for row in rows]


def _agree(values: list[dict[str, Any]], kind: str) -> None:
    for value, key in zip(values, _sql(values, kind), strict=True):
        assert key == _python(value), value


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(st.lists(NUMBERS, min_size=1, max_size=30))
def test_sql_encodes_numbers_exactly_as_python_and_refuses_what_it_refuses(numbers: list[str]) -> None:
    _agree([{"N": n} for n in numbers], "N")


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=1, max_size=30))
def test_sql_encodes_strings_as_their_utf8_bytes(strings: list[str]) -> None:
    _agree([{"S": s} for s in strings], "S")


@pytest.mark.slow
@settings(max_examples=80, deadline=None)
@given(st.lists(BINARIES, min_size=1, max_size=30))
def test_sql_decodes_binaries_as_python_and_refuses_what_is_not_padded_base64(blobs: list[str]) -> None:
    _agree([{"B": b} for b in blobs], "B")


def test_a_value_not_of_the_declared_type_has_no_sql_key() -> None:
    values: list[Any] = [{"N": 1}, {"S": "a", "N": "1"}, {"B": "QQ=="}, [1], None, {}]
    assert _sql(values, "N") == [None] * len(values)


# -- the state's key column and the index built from it ------------------------------------------

NAMES = KeyNames("pk", "sk")
KINDS = {"pk": "S", "sk": "N"}


def _raw(documents: list[str]) -> duckdb.DuckDBPyConnection:
    """A connection with table ``raw`` (item_key, keys, image), each the document itself."""
    con = duckdb.connect()
    con.execute("CREATE TABLE raw (item_key VARCHAR, keys VARCHAR, image VARCHAR)")
    con.executemany("INSERT INTO raw VALUES (?, ?, ?)", [(d, d, d) for d in documents])
    return con


def _laid_out(documents: list[str]) -> duckdb.DuckDBPyConnection:
    """A connection with table ``items``: the documents as ``layout`` lays them out."""
    con = _raw(documents)
    plan = layout(NAMES, KINDS, Path("unused"))
    plan.prepare(con)
    con.execute(f"CREATE TABLE items AS {laid_out(plan, 'raw')}")
    return con


def _kept(documents: list[str], path: Path) -> duckdb.DuckDBPyConnection:
    """A connection with view ``items`` as ``open_items`` leaves it for ``layout``: its items file kept in ``path``."""
    con = _raw(documents)
    path.mkdir()
    plan = layout(NAMES, KINDS, path / "items.arrow")
    plan.prepare(con)
    assert plan.keep is not None
    plan.keep(con, laid_out(plan, "raw"))
    con.execute("CREATE VIEW items AS SELECT * FROM state")
    return con


@pytest.mark.slow
@given(st.lists(st.tuples(st.text(max_size=5), NUMBERS, st.booleans(), st.booleans()), min_size=1, max_size=20,
                unique_by=lambda t: t[0] + "|" + t[1]))
@settings(max_examples=60, deadline=None)
def test_the_state_key_column_reads_any_key_document_as_python_reads_it(
        keys: list[tuple[str, str, bool, bool]]) -> None:
    # The consumer's compact text (read with one parse) and other texts of the same document (read carefully).
    documents = []
    for pk, sk, spaced, reversed_order in keys:
        members = [("pk", {"S": pk}), ("sk", {"N": sk})]
        document = dict(members[::-1] if reversed_order else members)
        # json.dumps: spaces after separators, non-ASCII as \u escapes.
        documents.append(json.dumps(document) if spaced else orjson.dumps(document).decode())
    con = _laid_out(documents)
    got = {row[0]: (row[1], row[2]) for row in con.execute("SELECT image, rewind_h, rewind_s FROM items").fetchall()}
    for text in documents:
        parsed = orjson.loads(text)
        assert got[text] == (_python(parsed["pk"]), _python(parsed["sk"]))


def test_an_item_whose_key_is_not_of_the_declared_type_is_a_damaged_store(tmp_path: Path) -> None:
    with pytest.raises(DamagedStore, match=r'"sk":\{"S":"1"\}\} does not fit the table\'s key schema'):
        _kept(['{"pk":{"S":"a"},"sk":{"N":"1"}}', '{"pk":{"S":"b"},"sk":{"S":"1"}}'], tmp_path / "t")


def test_an_item_whose_number_key_is_not_a_number_is_a_damaged_store(tmp_path: Path) -> None:
    with pytest.raises(DamagedStore, match=r'"sk":\{"N":"1_0"\}\} does not fit the table\'s key schema'):
        _kept(['{"pk":{"S":"a"},"sk":{"N":"1"}}', '{"pk":{"S":"b"},"sk":{"N":"1_0"}}'], tmp_path / "t")


def test_two_items_of_one_key_written_differently_are_a_damaged_store(tmp_path: Path) -> None:
    with pytest.raises(DamagedStore, match="one key"):
        _kept(['{"pk":{"S":"a"},"sk":{"N":"1"}}', '{"pk":{"S":"a"},"sk":{"N":"1.0"}}'], tmp_path / "t")


@pytest.mark.slow
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "ab", "é"]), st.integers(-50, 50)), min_size=1, max_size=60,
                unique=True))
@settings(max_examples=40, deadline=None)
def test_the_index_finds_every_item_and_orders_them_as_the_python_keys_do(tmp_path_factory: Any,
                                                                        keys: list[tuple[str, int]]) -> None:
    documents = [orjson.dumps({"pk": {"S": pk}, "sk": {"N": str(sk)}}).decode() for pk, sk in keys]
    path = tmp_path_factory.mktemp("index") / "t"
    assert build(path, _kept(documents, path)) == len(keys)
    index = Index(path, len(keys))
    try:
        by_key = sorted(documents, key=lambda d: (encode_value(orjson.loads(d)["pk"]),
                                                   encode_value(orjson.loads(d)["sk"])))
        assert list(index.scan(None)) == by_key
        for document in documents:
            parsed = orjson.loads(document)
            assert index.get(encode_value(parsed["pk"]), encode_value(parsed["sk"])) == document
        assert index.get(b"zz", b"") is None
    finally:
        index.close()
