"""Every user mistake on the command line is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from changelog.store import Store
from ddb_rewind.args import time_arg
from ddb_rewind.cli import build_parser, main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and stderr of one command line (argparse mistakes exit through SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def assert_one_error_line(code: int, err: str) -> None:
    assert code != 0
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("ddb-rewind: error: "), err
    assert "Traceback" not in err


def _time_options() -> list[tuple[str, str]]:
    """(subcommand, option) for every option that takes a TIME, across all registered subcommands."""
    found = []
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(name, opt.option_strings[0]) for opt in sub._actions
                          if opt.type is time_arg and opt.option_strings]
    return sorted(found)


def test_a_missing_store_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["sql", "--store", str(tmp_path / "missing"), "SELECT 1"], capsys)
    assert_one_error_line(code, err)
    assert "does not exist" in err


def test_a_store_path_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "store.txt").write_text("not a store")
    code, err = run(["status", "--store", str(tmp_path / "store.txt")], capsys)
    assert_one_error_line(code, err)
    assert code == 4 and "is not a directory" in err


def test_an_s3_store_whose_bucket_is_missing(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["sql", "--store", "s3://no-such-bucket/backups", "SELECT 1"], capsys)
    assert_one_error_line(code, err)
    assert "no-such-bucket" in err


def test_a_malformed_sql_query(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["sql", "--store", store.uri, "SELEC nonsense FROM"], capsys)
    assert_one_error_line(code, err)
    assert "query failed" in err


def test_a_query_naming_an_unknown_column(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["sql", "--store", store.uri, "SELECT no_such_column FROM changes"], capsys)
    assert_one_error_line(code, err)


def test_an_unknown_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["rewind-everything"], capsys)
    assert_one_error_line(code, err)
    assert "rewind-everything" in err


def test_no_subcommand_at_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_error_line(*run([], capsys))


def test_a_missing_required_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["sql", "SELECT 1"], capsys)
    assert_one_error_line(code, err)
    assert "--store" in err


def test_an_unknown_option(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["sql", "--store", store.uri, "--colour", "red"], capsys)
    assert_one_error_line(code, err)


def test_a_bad_choice_of_format(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["sql", "--store", store.uri, "--format", "xml", "SELECT 1"], capsys)
    assert_one_error_line(code, err)
    assert "xml" in err


@pytest.mark.parametrize(("command", "option"), _time_options())
def test_a_malformed_time(command: str, option: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run([command, option, "next tuesday"], capsys)
    assert_one_error_line(code, err)
    assert "next tuesday" in err


def test_aws_region_alone_sets_the_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # Lambda and most SDKs set AWS_REGION; botocore by itself reads only AWS_DEFAULT_REGION.
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "")  # unset for the command; restored after the test
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    with mock_aws():
        code = main(["consume", "--table", "orders", "--store", str(tmp_path / "store"), "--once"])
    err = capsys.readouterr().err
    assert "no AWS region" not in err
    assert code == 4 and "in eu-west-1" in err  # the table is looked up in AWS_REGION's region


OUT_OF_RANGE_TIMES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z",
                      "9999-06-01T00:00:00Z", "1969-12-31T23:59:59Z", "-1", "99999999999999"]


@pytest.mark.parametrize("text", OUT_OF_RANGE_TIMES)
@pytest.mark.parametrize(("command", "option"), _time_options())
def test_a_time_out_of_range_is_one_line(command: str, option: str, text: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run([command, option, text], capsys)
    assert_one_error_line(code, err)
    assert code == 2 and "out of range" in err


DEEP_KEY = '{"pk":' + '{"M":{"a":' * 5000 + '{"S":"x"}' + "}}" * 5000 + "}"


@pytest.mark.parametrize("key", [DEEP_KEY, '{"pk":' + "[" * 100_000 + "]" * 100_000 + "}", '{"pk":{"S":"\\ud800"}}'])
def test_a_key_nested_past_the_recursion_limit_or_not_unicode_is_a_usage_error(
        store: Store, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    from changelog.codec import parse_key
    from changelog.errors import UsageError

    with pytest.raises(UsageError):
        parse_key(key)


@pytest.mark.parametrize("command", [["status"], ["sql", "SELECT 1"], ["check"]])
def test_an_empty_store_argument_is_not_the_current_directory(command: list[str],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run([command[0], "--store", "", *command[1:]], capsys)
    assert_one_error_line(code, err)
    assert code == 4 and "--store is empty" in err


def test_rewind_store_stands_for_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from changelog.codec import decode_lambda_record
    from changelog.store import LocalStore
    from stream_consumer.capture import capture_batch
    from tests.events import lambda_record

    store = LocalStore(tmp_path / "store")
    capture_batch(store, [lambda_record("orders", "INSERT", {"pk": {"S": "a"}}, 1_700_000_000, 1,
                                        new={"pk": {"S": "a"}})], decode_lambda_record, source="test")
    monkeypatch.setenv("REWIND_STORE", store.uri)

    assert main(["status", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["table"] == "orders"


def test_without_store_or_rewind_store_the_store_is_asked_for(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("REWIND_STORE", raising=False)
    assert main(["status"]) == 2
    assert "--store" in capsys.readouterr().err


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals reach the main thread")
def test_sigterm_interrupts_a_command_as_ctrl_c_does(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def terminated(args: argparse.Namespace) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives first
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr("ddb_rewind.commands.status.run", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["status", "--store", "anything"]) == 130
    assert capsys.readouterr().err == "ddb-rewind: error: interrupted (SIGTERM)\n"
    assert signal.getsignal(signal.SIGTERM) is before
