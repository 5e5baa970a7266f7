"""``--where`` is one whitelisted boolean expression over attribute names; it can do nothing but filter."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from changelog.codec import decode_lambda_record
from changelog.errors import UsageError
from changelog.plain import Column
from changelog.predicate import lock_down, parse_predicate
from changelog.store import Store
from replayer.forensics.diff import diff_states
from replayer.restoring.replay import open_items, select_counts
from stream_consumer.capture import capture_batch
from tests.model import Op, model_state, stream_records

TABLE = "orders"
T0 = 1_700_000_000
OPS = [
    Op(0, {"pk": {"S": "a"}, "status": {"S": "new"}, "total": {"N": "12.50"}, "select": {"S": "kw"}}, T0),
    Op(1, {"pk": {"S": "b"}, "status": {"S": "shipped"}, "total": {"N": "250.5"}}, T0),
    Op(2, {"pk": {"S": "ключ"}, "status": {"S": "shipped"}, "total": {"N": "99"}}, T0 + 1),
    Op(1, {"pk": {"S": "b"}, "status": {"S": "lost"}, "total": {"N": "250.5"}}, T0 + 2),
]
ATTRIBUTES = ["pk", "status", "total", "select"]

HOSTILE = [
    ("1=1); COPY (SELECT 1) TO '/tmp/x.csv'; SELECT (1", "second statement"),
    ("status = 'x'; DROP TABLE state", "second statement"),
    ("status = 'x';", "second statement"),
    ("read_csv('/etc/passwd') IS NULL", "read_csv"),
    ("EXISTS (SELECT * FROM read_text('/etc/passwd'))", "cannot contain"),
    ("status IN (SELECT content FROM read_text('/etc/passwd'))", "subquery"),
    ("status = (SELECT 1)", "subquery"),
    ("getenv('HOME') = 'x'", "getenv"),
    ("INSTALL httpfs", "cannot contain"),
    ("LOAD httpfs", "cannot contain"),
    ("ATTACH '/tmp/x.db'", "cannot contain"),
    ("status = 'x' UNION SELECT 1", "cannot contain"),
    ("state.status = 'x'", "qualified name"),
    ("CAST(status AS STRUCT(a INT)) IS NULL", "cast to"),
    ("CAST(status AS my_type) IS NULL", "cast to"),
    ("$1 = 1", "cannot contain"),
    ("*", "cannot contain"),
    ("status = (", "not a valid condition"),
    ("", "empty"),
    ("-- nothing", "no condition"),
    ("(" * 300 + "status" + ")" * 300, "nested"),
]


def _at(second: int) -> datetime:
    return datetime.fromtimestamp(second, tz=UTC)


@pytest.fixture
def filled(store: Store) -> Store:
    capture_batch(store, stream_records(TABLE, OPS), decode_lambda_record, source="test")
    return store


@pytest.mark.parametrize(("text", "message"), HOSTILE)
def test_a_hostile_or_malformed_where_is_refused_before_it_reaches_duckdb(text: str, message: str) -> None:
    with pytest.raises(UsageError, match="--where") as raised:
        parse_predicate(text).bind(ATTRIBUTES)
    assert message in str(raised.value)


@pytest.mark.parametrize("text", [
    "status = 'shipped' AND total > 100",
    "status IN ('new', 'lost') OR NOT (total BETWEEN 1 AND 50)",
    "status LIKE 'sh%' OR status ILIKE 'NEW' OR pk IS NULL OR pk IS NOT NULL",
    "CAST(total AS DECIMAL(10,2)) * 2 - 1 >= 24 OR lower(status) = 'lost' OR length(pk) % 2 = 1",
    "coalesce(status, 'none') <> 'none' AND starts_with(pk, 'a') IS NOT DISTINCT FROM TRUE",
    "\"select\" = 'kw'",
])
def test_an_ordinary_filter_is_accepted(text: str) -> None:
    assert parse_predicate(text).bind(ATTRIBUTES)


def test_duckdb_gets_sql_regenerated_from_the_tree_not_the_users_text() -> None:
    # A comment could otherwise hide anything from a reader of the text; it is dropped, and names are quoted.
    sql = parse_predicate("status = 'x' -- */ ; COPY (SELECT 1) TO 'y'").bind(ATTRIBUTES)
    assert sql == "\"status\" = 'x'"


def test_an_unknown_attribute_is_named_with_a_suggestion_and_the_known_ones() -> None:
    with pytest.raises(UsageError) as raised:
        parse_predicate("stauts = 'new'").bind(ATTRIBUTES)
    message = str(raised.value)
    assert "unknown attribute 'stauts'" in message and "did you mean 'status'" in message
    assert "known attributes: pk, select, status, total" in message


def test_an_attribute_name_binds_only_exactly_and_a_case_variant_is_suggested() -> None:
    # DynamoDB's attribute names are case-sensitive: STATUS is not status.
    with pytest.raises(UsageError, match="unknown attribute 'STATUS' \\(did you mean 'status'\\?\\)"):
        parse_predicate("STATUS = 'x'").bind(ATTRIBUTES)


def test_a_locked_connection_reads_no_file_and_cannot_be_unlocked(tmp_path: Path) -> None:
    con = duckdb.connect()
    lock_down(con)
    with pytest.raises(duckdb.PermissionException):
        con.execute("SELECT * FROM read_text('/etc/hostname')")
    with pytest.raises(duckdb.Error, match="locked"):
        con.execute("SET enable_external_access = true")


def test_the_replay_connection_is_locked_once_the_state_is_read(filled: Store) -> None:
    con = open_items(filled, TABLE, _at(T0 + 2))
    assert select_counts(con).items == 3
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"SELECT * FROM read_parquet('{filled.uri}/**/*.parquet')")


def test_replay_where_filters_exactly(filled: Store) -> None:
    con = open_items(filled, TABLE, _at(T0 + 2), where="status = 'shipped' OR total < 13")
    keys = {row[0] for row in con.execute("SELECT item_key FROM items").fetchall()}
    assert keys == {k for k in model_state(OPS, T0 + 2) if k != '{"pk":{"S":"b"}}'}


def test_diff_where_keeps_items_matching_on_either_side(filled: Store) -> None:
    diff = diff_states(filled, TABLE, T0 * 1_000_000, (T0 + 2) * 1_000_000, where="status = 'shipped'")
    assert {c.item_key for c in diff.all()} == {'{"pk":{"S":"b"}}', '{"pk":{"S":"ключ"}}'}


def test_diff_where_naming_an_unknown_attribute_is_refused(filled: Store) -> None:
    with pytest.raises(UsageError, match="unknown attribute 'nope'"):
        diff_states(filled, TABLE, T0 * 1_000_000, (T0 + 2) * 1_000_000, where="nope = 1")


# --- attributes whose names differ only in case -------------------------------------------------------

CASED = [Op(0, {"pk": {"S": "a"}, "status": {"S": "new"}, "Status": {"S": "old"}}, T0),
         Op(1, {"pk": {"S": "b"}, "status": {"S": "old"}, "Status": {"S": "new"}}, T0),
         Op(3, {"pk": {"S": "d"}, "status": {"S": "new"}}, T0 + 1)]


@pytest.fixture
def cased(store: Store) -> Store:
    capture_batch(store, stream_records(TABLE, CASED), decode_lambda_record, source="test")
    return store


def test_where_binds_an_attribute_by_its_exact_name_when_another_differs_only_in_case(cased: Store) -> None:
    con = open_items(cased, TABLE, _at(T0 + 1), where="status = 'new'")
    assert {row[0] for row in con.execute("SELECT item_key FROM items").fetchall()} == {
        '{"pk":{"S":"a"}}', '{"pk":{"S":"d"}}'}
    con = open_items(cased, TABLE, _at(T0 + 1), where="Status = 'new'")
    assert {row[0] for row in con.execute("SELECT item_key FROM items").fetchall()} == {'{"pk":{"S":"b"}}'}


def test_diff_where_binds_the_exact_name_too(cased: Store) -> None:
    # Only d changes (it is added); it has status 'new' and no Status, which must not bind to status.
    lower = diff_states(cased, TABLE, T0 * 1_000_000, (T0 + 1) * 1_000_000, where="status = 'new'")
    assert {c.item_key for c in lower.all()} == {'{"pk":{"S":"d"}}'}
    with pytest.raises(UsageError, match="unknown attribute 'Status'"):
        diff_states(cased, TABLE, T0 * 1_000_000, (T0 + 1) * 1_000_000, where="Status = 'new'")


def test_a_name_matching_attributes_only_by_case_is_refused() -> None:
    with pytest.raises(UsageError, match="unknown attribute 'STATUS'"):
        parse_predicate("STATUS = 'x'").bind(["status", "Status", "pk"])


def test_the_table_macro_leaves_attributes_differing_only_in_case_in_item(cased: Store) -> None:
    from replayer.engines.views import open_sql

    con = open_sql(cased, plain_tables=True)
    columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {TABLE}_at('{_at(T0 + 1).isoformat()}')")
               .fetchall()]
    assert "status" not in [c.lower() for c in columns if c not in ("item_key", "keys", "item")]
    count = con.execute(f"SELECT count(*) FROM {TABLE}_at('{_at(T0 + 1).isoformat()}') "
                        "WHERE item->>'$.status.S' = 'new'").fetchone()
    assert count == (2,)


# Keys a, b, ключ and d (tests.model.KEYS), each with a 38-digit number.
BIG = [Op(0, {"n": {"N": "12345678901234567890123456789012345678"}}, T0),
       Op(1, {"n": {"N": "12345678901234567890123456789012345679"}}, T0),
       Op(2, {"n": {"N": "10000000000000000000000000000000000000"}}, T0),
       Op(3, {"n": {"N": "10000000000000000000000000000000000001"}}, T0)]


@pytest.mark.parametrize(("where", "expected"), [
    ("n = 12345678901234567890123456789012345678.0", {"a"}),
    ("n = 1E+37", {"ключ"}),
    ("n = 1.0000000000000000000000000000000000000e37", {"ключ"}),
    ("n > 1e37 AND n < 12345678901234567890123456789012345679", {"d", "a"}),
])
def test_a_number_written_with_an_exponent_or_trailing_zeros_compares_exactly(store: Store, where: str,
                                                                             expected: set[str]) -> None:
    # DuckDB reads such a literal as a DOUBLE and compared 38-digit numbers through it.
    capture_batch(store, stream_records(TABLE, BIG), decode_lambda_record, source="test")
    con = open_items(store, TABLE, _at(T0), where=where)
    keys = {row[0] for row in con.execute("SELECT keys::JSON->>'$.pk.S' FROM items").fetchall()}
    assert keys == expected


@pytest.mark.parametrize("number", ["1e38", "123456789012345678901234567890123456789", "1e-39"])
def test_a_number_too_wide_to_compare_exactly_is_refused(number: str) -> None:
    with pytest.raises(UsageError, match="38 digits"):
        parse_predicate(f"n = {number}")


def test_the_refusal_of_a_wide_number_names_it_whole_and_suggests_a_form_that_is_accepted(store: Store) -> None:
    number = "1.2345678901234567890123456789012345678E-130"
    with pytest.raises(UsageError) as refused:
        parse_predicate(f"n > {number}")
    message = str(refused.value)
    assert number in message
    suggested = message.rsplit(": ", 1)[1]
    capture_batch(store, stream_records(TABLE, BIG), decode_lambda_record, source="test")
    con = open_items(store, TABLE, _at(T0), where=suggested)
    assert con.execute("SELECT count(*) FROM items").fetchone() == (4,)


def _matching(store: Store, ops: list[Op], where: str) -> set[str]:
    capture_batch(store, stream_records(TABLE, ops), decode_lambda_record, source="test")
    con = open_items(store, TABLE, _at(T0), where=where)
    return {row[0] for row in con.execute("SELECT keys::JSON->>'$.pk.S' FROM items").fetchall()}


WHOLE = [Op(0, {"n": {"N": "5"}}, T0), Op(1, {"n": {"N": "6"}}, T0)]  # a DECIMAL(38,0) column


@pytest.mark.parametrize(("where", "expected"), [
    ("n = '5.5'", set()),
    ("n BETWEEN '5.1' AND '5.9'", set()),
    ("n IN ('5.5', '6')", {"b"}),
    ("n + 0 = ' 6 '", {"b"}),
    ("n = ('5.5')", set()),
])
def test_a_quoted_number_is_compared_exactly_not_rounded_to_the_columns_scale(store: Store, where: str,
                                                                              expected: set[str]) -> None:
    # DuckDB cast '5.5' to the column's DECIMAL(38,0), rounding it to 6.
    assert _matching(store, WHOLE, where) == expected


# 12.15 and 1E-38 need 40 digits together: the column holds each number's text.
AS_TEXT = [Op(0, {"t": {"N": "12.15"}}, T0), Op(1, {"t": {"N": "1E-38"}}, T0)]


@pytest.mark.parametrize("where", ["t = 12", "t IN (12, 13)", "t > 0", "0 = t", "t BETWEEN 0 AND 1", "t + 0 = 12"])
def test_a_number_kept_as_text_is_not_compared_with_a_number_but_refused(store: Store, where: str) -> None:
    # DuckDB cast each text to the other side's type: '12.15' = 12 and '1E-38' = 0 held.
    with pytest.raises(UsageError, match="holds each number's text"):
        _matching(store, AS_TEXT, where)


def test_a_string_attribute_compared_with_a_number_is_refused(store: Store) -> None:
    ops = [Op(0, {"n": {"N": "6"}, "s": {"S": "5.5"}}, T0)]
    with pytest.raises(UsageError, match="compares a string attribute with a number"):
        _matching(store, ops, "n = s")


def test_a_number_kept_as_text_compares_as_its_text(store: Store) -> None:
    assert _matching(store, AS_TEXT, "t = '12.15'") == {"a"}


def test_an_exact_division_is_refused_and_a_division_of_doubles_is_not(store: Store) -> None:
    # DuckDB divides decimals as doubles: 10^37 + 1 divided by 1 equalled 10^37.
    for where in ("n / 1 = 1E+37", "n // 1 = 1E+37"):
        with pytest.raises(UsageError, match="cannot divide exact numbers"):
            parse_predicate(where).bind_columns([Column("n", "N")])
    assert _matching(store, BIG, "n::DOUBLE / 2 > 0") == {"a", "b", "ключ", "d"}


def test_diff_where_over_a_window_without_changes_is_an_empty_diff(filled: Store) -> None:
    at = (T0 + 2) * 1_000_000
    assert diff_states(filled, TABLE, at, at, where="nothing_has_this = 1").all() == ()


def test_diff_where_names_an_attribute_only_unchanged_items_hold_as_null(store: Store) -> None:
    # The columns are typed from the items that changed; the table's summarized files (here a
    # snapshot's parts) say that status is an attribute: NULL for the changed item, not a typo.
    from compactor.snapshots import build_snapshot

    ops = [Op(0, {"status": {"S": "shipped"}}, T0), Op(1, {"v": {"N": "1"}}, T0), Op(1, {"v": {"N": "2"}}, T0 + 10)]
    capture_batch(store, stream_records(TABLE, ops), decode_lambda_record, source="test")
    build_snapshot(store, TABLE, (T0 + 5) * 1_000_000)
    window = ((T0 + 6) * 1_000_000, (T0 + 10) * 1_000_000)

    assert diff_states(store, TABLE, *window, where="status = 'shipped'").all() == ()
    assert {c.item_key for c in diff_states(store, TABLE, *window, where="status IS NULL").all()} == \
        {'{"pk":{"S":"b"}}'}


def test_a_number_with_a_huge_exponent_is_refused_without_being_written_out() -> None:
    with pytest.raises(UsageError, match="38 digits"):
        parse_predicate("n = 1e-999999999")
