"""The SQL macros answer only what a replay would: a moment outside coverage is refused, never 0 rows."""

from __future__ import annotations

import duckdb
import pytest

from changelog.codec import decode_lambda_record
from changelog.store import Store
from compactor.policy import parse_policy
from compactor.retention import apply_expire, plan_expire
from compactor.snapshots import build_snapshot
from ddb_rewind.cli import main
from replayer.engines.views import SqlSession, ensure_plain_macros, open_sql
from stream_consumer.capture import capture_batch
from tests.events import lambda_record
from tests.model import Op, stream_records

T0 = 1_700_000_000
OPS = [Op(i, {"pk": {"S": k}, "n": {"N": str(i)}}, T0) for i, k in enumerate("abcde")] + [
    Op(0, {"pk": {"S": "a"}, "n": {"N": "9"}}, T0 + 60),
    Op(1, None, T0 + 7200),
]
OTHER = [Op(0, {"pk": {"S": "a"}}, T0 + 3600)]


def iso(second: int) -> str:
    return f"to_timestamp({second})"


@pytest.fixture
def expired(store: Store) -> Store:
    """Changes from T0 to T0+2h; a snapshot at T0+60; expire kept the last hour: the floor is T0+60."""
    capture_batch(store, stream_records("users", OPS), decode_lambda_record, source="test")
    build_snapshot(store, "users", (T0 + 60) * 1_000_000)
    apply_expire(store, plan_expire(store, "users", parse_policy("changes=1h"), now_us=(T0 + 7200) * 1_000_000))
    return store


def count(store: Store, sql: str) -> int:
    con = open_sql(store)
    ensure_plain_macros(con, store, sql)
    ((n,),) = con.execute(sql).fetchall()
    return int(n)


def test_state_at_a_moment_before_the_floor_is_refused(expired: Store) -> None:
    with pytest.raises(duckdb.Error, match="before the earliest restorable time of 'users'"):
        count(expired, f"SELECT count(*) FROM state_at({iso(T0 + 30)})")


def test_state_at_the_floor_answers_from_the_kept_snapshot(expired: Store) -> None:
    assert count(expired, f"SELECT count(*) FROM state_at({iso(T0 + 60)})") == 5


def test_state_at_a_moment_after_the_latest_restorable_time_is_refused(expired: Store) -> None:
    with pytest.raises(duckdb.Error, match="after the latest restorable time of 'users'"):
        count(expired, f"SELECT count(*) FROM state_at({iso(T0 + 7201)})")


def test_a_table_macro_is_refused_outside_its_coverage(expired: Store) -> None:
    with pytest.raises(duckdb.Error, match="before the earliest restorable time of 'users'"):
        count(expired, f"SELECT count(*) FROM users_at({iso(T0 + 30)})")


def test_state_at_refuses_when_any_table_cannot_answer(expired: Store) -> None:
    capture_batch(expired, stream_records("other", OTHER), decode_lambda_record, source="test")
    with pytest.raises(duckdb.Error, match="'other'"):
        count(expired, f"SELECT count(*) FROM state_at({iso(T0 + 120)})")


def test_a_refusal_of_state_at_over_every_table_names_the_way_to_ask_one(expired: Store) -> None:
    capture_batch(expired, stream_records("other", OTHER), decode_lambda_record, source="test")
    with pytest.raises(duckdb.Error, match="only_table := '<table>'"):
        count(expired, f"SELECT count(*) FROM state_at({iso(T0 + 120)})")


def test_one_table_is_asked_for_alone_with_only_table(expired: Store) -> None:
    capture_batch(expired, stream_records("other", OTHER), decode_lambda_record, source="test")
    assert count(expired, f"SELECT count(*) FROM state_at({iso(T0 + 120)}, only_table := 'users')") == 5
    assert count(expired, f"SELECT count(*) FROM users_at({iso(T0 + 120)})") == 5


def test_the_cli_refuses_with_the_out_of_coverage_exit_code(expired: Store,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sql", "--store", expired.uri, f"SELECT count(*) FROM state_at({iso(T0 + 30)})"])
    err = capsys.readouterr().err
    assert code == 5
    assert err.count("\n") == 1 and "earliest restorable time" in err


def test_a_change_captured_after_the_session_opened_is_neither_proven_nor_missed(store: Store) -> None:
    # The session reads the files listed when it opened; the moments it proves must be those files'
    # moments, not the store's a minute later, or a moment the files do not reach would be answered.
    capture_batch(store, stream_records("users", OPS[:5]), decode_lambda_record, source="test")
    session = SqlSession(store)
    later = lambda_record("users", "INSERT", {"pk": {"S": "f"}}, T0 + 600, 10**21, new={"pk": {"S": "f"}})
    capture_batch(store, [later], decode_lambda_record, source="test")

    with pytest.raises(duckdb.Error, match="after the latest restorable time of 'users'"):
        session.query(f"SELECT count(*) FROM users_at({T0 + 600})")
    assert session.query("SELECT count(*) FROM users_at('latest')") == (["count_star()"], [(5,)])
