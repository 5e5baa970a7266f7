"""One line, always: every expected failure leaves the CLI as one stderr line with its documented exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError

import changelog.aws
from changelog.aws import translate
from changelog.codec import decode_lambda_record
from changelog.errors import (
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    AwsError,
    TableNotFound,
)
from changelog.meta import meta_from_description, write_meta
from changelog.store import Store
from ddb_rewind.cli import _as_error, main
from stream_consumer.capture import capture_batch
from tests.events import lambda_record, pk_table_description

REPO = Path(__file__).resolve().parent.parent
TABLE = "orders"
SECONDS = 1_750_000_000
ITEMS = 120


@pytest.fixture
def filled(store: Store) -> Store:
    records = [lambda_record(TABLE, "INSERT", {"pk": {"S": f"k{n:03d}"}}, SECONDS, 1000 + n,
                             new={"pk": {"S": f"k{n:03d}"}, "n": {"N": str(n)}}) for n in range(ITEMS)]
    capture_batch(store, records, decode_lambda_record, source="test")
    write_meta(store, meta_from_description(pk_table_description(TABLE)))
    return store


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("ddb-rewind: error: "), err
    return err


def test_version_prints_the_package_version() -> None:
    out = subprocess.run([sys.executable, "-m", "ddb_rewind", "--version"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
    assert out.startswith("ddb-rewind ") and len(out.splitlines()) == 1


@pytest.mark.parametrize(("exc", "kind", "code", "words"), [
    (NoRegionError(), AwsError, EXIT_UNREACHABLE, "no AWS region"),
    (NoCredentialsError(), AwsError, EXIT_UNREACHABLE, "no AWS credentials"),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), AwsError, EXIT_UNREACHABLE, "could not reach"),
    (ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Scan"), AwsError,
     EXIT_UNREACHABLE, "refused the call"),
    (ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "Scan"), AwsError,
     EXIT_UNREACHABLE, "throttling"),
    (ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "Requested resource not found"}},
                 "DescribeTable"), TableNotFound, EXIT_NOT_FOUND, "not found"),
])
def test_botocore_failures_become_typed_errors(exc: Exception, kind: type, code: int, words: str) -> None:
    error = translate(exc, "reading table t")
    assert isinstance(error, kind) and error.exit_code == code
    assert words in str(error) and str(error).startswith("reading table t: ")


@pytest.mark.parametrize(("exc", "code"), [
    (KeyboardInterrupt(), EXIT_INTERRUPTED),
    (duckdb.InterruptException("INTERRUPT Error: Interrupted!"), EXIT_INTERRUPTED),
    (RuntimeError("Query interrupted"), EXIT_INTERRUPTED),
    (PermissionError(13, "Permission denied", "/s/tables/x"), EXIT_UNREACHABLE),
    (IsADirectoryError(21, "Is a directory", "x.jsonl"), 2),
    (OSError(28, "No space left on device", "/out/x.jsonl"), 3),
    (duckdb.IOException("IO Error: No magic bytes found at end of file 'x.parquet'"), 6),
])
def test_foreign_exceptions_map_to_their_documented_exit_code(exc: BaseException, code: int) -> None:
    error = _as_error(exc)
    assert error is not None and error.exit_code == code


def test_a_bug_keeps_its_traceback() -> None:
    assert _as_error(ZeroDivisionError("bug")) is None
    assert _as_error(RuntimeError("some other bug")) is None


def test_replay_with_no_region_is_one_line(filled: Store, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    code = main(["replay", "--table", TABLE, "--store", filled.uri, "--at", str(SECONDS), "--to-table", "restored",
                 "--create-table"])
    assert code == EXIT_UNREACHABLE
    assert "no AWS region" in _one_line(capsys)


def test_replay_to_an_unreachable_endpoint_is_one_line(filled: Store, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code = main(["replay", "--table", TABLE, "--store", filled.uri, "--at", str(SECONDS), "--to-table", "restored",
                 "--create-table"])
    assert code == EXIT_UNREACHABLE
    assert "could not reach AWS" in _one_line(capsys)


class _InterruptAfter:
    """A moto DynamoDB client on which Ctrl-C arrives during the third BatchWriteItem."""

    def __init__(self, calls: int) -> None:
        self.real = boto3.client("dynamodb")
        self.calls = calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def batch_write_item(self, **request: Any) -> Any:
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt
        return self.real.batch_write_item(**request)


def test_an_interrupted_restore_says_how_many_items_it_wrote_and_that_rerunning_is_safe(
        filled: Store, aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(changelog.aws, "client", lambda service: _InterruptAfter(2))
    code = main(["replay", "--table", TABLE, "--store", filled.uri, "--at", str(SECONDS), "--to-table", "restored",
                 "--create-table", "--workers", "1"])
    assert code == EXIT_INTERRUPTED
    line = _one_line(capsys)
    written = boto3.client("dynamodb").scan(TableName="restored", Select="COUNT")["Count"]
    assert f"interrupted after writing {written} of {ITEMS} items into restored" in line
    assert "re-running with --into-existing is safe" in line
    assert 0 < written < ITEMS
    # And it is: the re-run completes the table.
    monkeypatch.undo()
    assert main(["replay", "--table", TABLE, "--store", filled.uri, "--at", str(SECONDS), "--to-table", "restored",
                 "--into-existing"]) == 0
    assert boto3.client("dynamodb").scan(TableName="restored", Select="COUNT")["Count"] == ITEMS


def test_clear_first_without_a_terminal_needs_yes_and_clears_nothing(
        filled: Store, aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--table", TABLE, "--store", filled.uri, "--at", str(SECONDS), "--to-table", "restored",
                 "--create-table"]) == 0
    capsys.readouterr()
    code = main(["replay", "--table", TABLE, "--store", filled.uri, "--at", str(SECONDS), "--to-table", "restored",
                 "--into-existing", "--clear-first"])
    assert code == 2
    assert "add --yes" in _one_line(capsys)
    assert boto3.client("dynamodb").scan(TableName="restored", Select="COUNT")["Count"] == ITEMS


def test_an_output_name_too_long_for_the_file_system_is_a_usage_error(
        filled: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = str(tmp_path / ("y" * 300)) + ".jsonl"
    assert main(["replay", "--table", TABLE, "--store", filled.uri, "--at", str(SECONDS), "--to-file", name]) == 2
    assert "too long" in _one_line(capsys)


@pytest.mark.parametrize("tables", ["orders,nosuch", "nosuch"])
def test_tables_naming_one_the_store_does_not_hold_is_not_found(
        filled: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str], tables: str) -> None:
    # Exit 4, as --table nosuch is: not a moment out of coverage (5).
    assert main(["replay", "--tables", tables, "--store", filled.uri, "--at", str(SECONDS),
                 "--to-dir", str(tmp_path), "--dry-run"]) == 4
    assert "holds no table 'nosuch'" in _one_line(capsys)
