"""TIME keywords: ``latest`` (the latest restorable moment, said on stderr), ``now`` and ``-2h``."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from changelog.codec import decode_lambda_record
from changelog.state import coverage
from changelog.store import Store
from changelog.timefmt import format_time, from_micros
from ddb_rewind.args import Latest, time_arg
from ddb_rewind.cli import main
from stream_consumer.capture import capture_batch
from tests.events import lambda_record

TABLE = "orders"
BASE = 1_700_006_400


@pytest.fixture
def captured(store: Store) -> Store:
    records = [lambda_record(TABLE, "INSERT", {"pk": {"S": f"k{i}"}}, BASE + 10 * i, 100 + i,
                             new={"pk": {"S": f"k{i}"}, "n": {"N": str(i)}}) for i in range(5)]
    capture_batch(store, records, decode_lambda_record, source="test")
    return store


def test_latest_replays_the_latest_restorable_moment_and_says_which(
    captured: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "state.jsonl"
    latest = coverage(captured, TABLE).latest_us
    assert latest is not None

    assert main(["replay", "--table", TABLE, "--store", captured.uri, "--at", "latest", "--to-file", str(out)]) == 0

    assert len(out.read_text().splitlines()) == 5
    assert f"'latest' is {format_time(from_micros(latest))}" in capsys.readouterr().err


def test_latest_works_for_every_time_option(captured: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "--table", TABLE, "--store", captured.uri, "--from", str(BASE + 15), "--to", "latest",
                 "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["added"]) == 3


def test_now_and_relative_times_are_read_against_the_clock() -> None:
    before = datetime.now(UTC)
    now = time_arg("now")
    two_hours = time_arg("-2h")
    assert isinstance(now, datetime) and isinstance(two_hours, datetime)
    assert before <= now <= datetime.now(UTC)
    assert abs((now - two_hours) - timedelta(hours=2)) < timedelta(seconds=5)
    assert isinstance(time_arg("LATEST"), Latest)


@pytest.mark.parametrize("text", ["-2x", "yesterday", "-h", "+2h"])
def test_an_unknown_time_names_every_accepted_form(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"'latest'.*'now'.*-2h"):
        time_arg(text)


def test_latest_of_a_store_without_the_table_is_one_line(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", "--table", TABLE, "--store", store.uri, "--at", "latest", "--to-file", "-"])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_time_before_now_is_taken_after_a_space_too(captured: Store, capsys: pytest.CaptureFixture[str]) -> None:
    # argparse would take "-2h" for an option; the CLI reads it as the TIME it is.
    assert main(["timeline", "--table", TABLE, "--store", captured.uri, "--from", "-520w", "--to", "-1s",
                 "--format", "json"]) == 0
    assert sum(b["total"] for b in json.loads(capsys.readouterr().out)) == 5


def test_latest_with_every_table_is_the_latest_moment_all_of_them_share(captured: Store) -> None:
    from ddb_rewind.args import resolve_times

    records = [lambda_record("users", "INSERT", {"pk": {"S": "u"}}, BASE + 12, 300, new={"pk": {"S": "u"}})]
    capture_batch(captured, records, decode_lambda_record, source="test")
    args = argparse.Namespace(store=captured.uri, tables="all", at=Latest())

    resolve_times(args)

    shared = min(coverage(captured, table).latest_us or 0 for table in (TABLE, "users"))
    assert args.at == from_micros(shared)


def _sql(store: Store, query: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, object]], str]:
    code = main(["sql", "--store", store.uri, query, "--format", "json"])
    captured_out = capsys.readouterr()
    rows = json.loads(captured_out.out) if code == 0 else []
    return code, rows, captured_out.err


def test_sql_table_at_latest_is_the_state_the_command_line_restores_for_latest(
    captured: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    latest = coverage(captured, TABLE).latest_us
    assert latest is not None
    exact = format_time(from_micros(latest))

    code, by_keyword, _ = _sql(captured, f"SELECT item_key FROM {TABLE}_at('latest') ORDER BY 1", capsys)
    assert code == 0
    _, by_moment, _ = _sql(captured, f"SELECT item_key FROM {TABLE}_at('{exact}') ORDER BY 1", capsys)

    assert by_keyword == by_moment and len(by_keyword) == 5


def test_sql_state_at_takes_epoch_seconds(captured: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, rows, err = _sql(captured, f"SELECT count(*) AS n FROM state_at({BASE + 25}, only_table := '{TABLE}')",
                           capsys)
    assert (code, rows) == (0, [{"n": 3}]), err


def test_sql_table_at_reads_a_time_before_now_against_the_clock(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    now = int(datetime.now(UTC).timestamp())
    records = [lambda_record(TABLE, "INSERT", {"pk": {"S": f"k{hours}"}}, now - hours * 3600, 100 + i,
                             new={"pk": {"S": f"k{hours}"}}) for i, hours in enumerate((4, 3, 1))]
    capture_batch(store, records, decode_lambda_record, source="test")

    code, rows, err = _sql(store, f"SELECT item_key FROM {TABLE}_at('-2h') ORDER BY 1", capsys)

    assert code == 0, err
    assert [row["item_key"] for row in rows] == [json.dumps({"pk": {"S": "k3"}}, separators=(",", ":")),
                                                 json.dumps({"pk": {"S": "k4"}}, separators=(",", ":"))]


def test_sql_a_time_before_the_history_is_refused(captured: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _sql(captured, f"SELECT count(*) FROM {TABLE}_at('-520w')", capsys)
    assert code == 5 and "before the earliest restorable time of 'orders'" in err


def test_sql_state_at_of_a_table_the_store_does_not_hold_is_refused_not_empty(
    captured: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _sql(captured, f"SELECT count(*) FROM state_at({BASE + 25}, only_table := 'ordres')", capsys)
    assert code == 4
    assert err.strip().count("\n") == 0 and "holds no table 'ordres'" in err


@pytest.mark.parametrize("time", ["'yesterday'", "NULL"])
def test_sql_a_time_it_cannot_read_is_one_line_naming_the_forms(
    time: str, captured: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _sql(captured, f"SELECT count(*) FROM {TABLE}_at({time})", capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "'latest'" in err and "-2h" in err


@pytest.mark.parametrize("text", ["1700000009.9999996", "1700000009.9999999", "1700000009.999999"])
def test_epoch_seconds_past_the_microsecond_are_cut_not_rounded_up(text: str) -> None:
    # As a float, 1700000009.9999996 was 1700000010: a moment after the one asked, holding its changes.
    from changelog.timefmt import parse_time

    assert format_time(parse_time(text)) == "2023-11-14T22:13:29.999999Z"


def test_latest_is_the_end_of_the_last_restorable_interval_when_a_loss_cuts_it(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A change file the ledger names is missing: coverage ends before its changes, and 'latest' with it.
    from changelog.state import change_files

    for number in range(2):
        capture_batch(store, [lambda_record(TABLE, "INSERT", {"pk": {"S": f"k{number}"}}, BASE + 3600 * number,
                                            100 + number, new={"pk": {"S": f"k{number}"}})],
                      decode_lambda_record, source="test")
    store.delete(change_files(store, TABLE)[-1])
    spans = coverage(store, TABLE).intervals
    assert coverage(store, TABLE).latest_restorable_us == spans[-1][1]

    out = tmp_path / "state.jsonl"
    assert main(["replay", "--table", TABLE, "--store", store.uri, "--at", "latest", "--to-file", str(out)]) == 0
    assert format_time(from_micros(spans[-1][1])) in capsys.readouterr().err


def test_a_refusal_after_latest_was_resolved_is_one_line_naming_the_moment(
        captured: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    latest = coverage(captured, TABLE).latest_us
    assert latest is not None
    existing = tmp_path / "mine.jsonl"
    existing.write_text("the user's file\n")
    capsys.readouterr()
    assert main(["replay", "--table", TABLE, "--store", captured.uri, "--at", "latest", "--to-file",
                 str(existing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err
    assert err.rstrip().endswith(f"('latest' is {format_time(from_micros(latest))})")
