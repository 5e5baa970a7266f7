"""Output files appear whole or not at all, and replace an existing file only with --overwrite."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from changelog.codec import decode_lambda_record
from changelog.errors import UsageError
from changelog.store import Store
from ddb_rewind.cli import main
from replayer.restoring.export import write_jsonl
from replayer.restoring.outfile import output_file
from stream_consumer.capture import capture_batch
from tests.model import Op, stream_records

TABLE = "orders"
T0 = 1_700_000_000
OPS = [Op(0, {"pk": {"S": "a"}, "n": {"N": "1"}}, T0), Op(1, {"pk": {"S": "b"}, "n": {"N": "2"}}, T0 + 1)]
OLD = "the user's own file\n"


@pytest.fixture
def filled(store: Store) -> Store:
    capture_batch(store, stream_records(TABLE, OPS), decode_lambda_record, source="test")
    return store


def _at(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).isoformat()


def _replay(store: Store, path: Path, *extra: str) -> int:
    return main(["replay", "--table", TABLE, "--store", store.uri, "--at", _at(T0 + 1), "--to-file", str(path),
                 *extra])


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ddb-rewind: error: "), err
    return err


def test_an_existing_file_is_not_replaced_without_overwrite(filled: Store, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "state.jsonl"
    out.write_text(OLD)
    assert _replay(filled, out) == 2
    assert "already exists: add --overwrite" in _one_error(capsys)
    assert out.read_text() == OLD


def test_overwrite_replaces_an_existing_file(filled: Store, tmp_path: Path) -> None:
    out = tmp_path / "state.jsonl"
    out.write_text(OLD)
    assert _replay(filled, out, "--overwrite") == 0
    assert len(out.read_text().splitlines()) == 2


def test_a_directory_named_like_a_file_is_one_line(filled: Store, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.jsonl").mkdir()
    assert _replay(filled, tmp_path / "x.jsonl", "--overwrite") == 2
    assert "is a directory" in _one_error(capsys)


def test_a_dry_run_refuses_the_same_existing_file_the_real_run_would(filled: Store, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "state.parquet"
    out.write_text(OLD)
    assert _replay(filled, out, "--dry-run") == 2
    assert "already exists" in _one_error(capsys)


def test_an_interrupted_write_leaves_the_old_file_and_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "state.jsonl"
    out.write_text(OLD)

    def images() -> Iterator[pa.RecordBatch]:
        yield pa.record_batch({"image": ['{"pk":{"S":"a"}}']})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), output_file(str(out), overwrite=True) as partial:
        write_jsonl(partial, images())
    assert out.read_text() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.jsonl"]


def test_a_file_created_while_writing_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "state.jsonl"
    with pytest.raises(UsageError, match="created while it was being written"), \
            output_file(str(out), overwrite=False) as partial:
        partial.write_text("new\n")
        out.write_text(OLD)  # another writer got there first
    assert out.read_text() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.jsonl"]


def test_a_published_file_gets_the_usual_permissions(tmp_path: Path) -> None:
    out = tmp_path / "state.jsonl"
    with output_file(str(out), overwrite=False) as partial:
        partial.write_text("x\n")
    assert out.stat().st_mode & 0o044 == 0o044  # readable by others, as open() would make it under umask 022


def test_diff_output_refuses_an_existing_file(filled: Store, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "diff.parquet"
    out.write_text(OLD)
    assert main(["diff", "--table", TABLE, "--store", filled.uri, "--from", _at(T0), "--to", _at(T0 + 1),
                 "--format", "parquet", "--output", str(out)]) == 2
    assert "add --overwrite" in _one_error(capsys)
    assert out.read_text() == OLD


def test_a_json_file_name_is_refused_since_the_items_are_json_lines(tmp_path: Path) -> None:
    from replayer.restoring.export import check_format

    with pytest.raises(UsageError, match=r"JSON lines.*\.jsonl"):
        check_format(str(tmp_path / "state.json"))
