"""replay --to-export writes DynamoDB's native export layout; --via-import restores it with ImportTable."""

from __future__ import annotations

import gzip
import json
import tempfile
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changelog.codec import binaries_to_base64, decode_lambda_record
from changelog.errors import EXIT_CONFLICT, EXIT_UNREACHABLE, EXIT_USAGE, EXIT_WRITE_FAILED
from changelog.meta import meta_from_description, write_meta
from changelog.store import LocalStore, Store, open_store
from compactor.export_reader import ExportInvalid, open_export, read_data_files, read_items, read_summary
from ddb_rewind.cli import main
from replayer.restoring.ddb_export import (
    SUMMARY,
    describe_data_file,
    export_images,
    item_line,
    plan_export,
    write_data_files,
    write_manifests,
)
from stream_consumer.capture import capture_batch
from tests.events import pk_table_description
from tests.model import Op, model_state, stream_records
from tests.moto_http import MotoHttpServer, free_port
from tests.workloads import EVERY_TYPE

TABLE = "orders"
T0 = 1_700_000_000
OPS = [
    Op(0, EVERY_TYPE, T0),
    Op(1, {"pk": {"S": "b"}, "status": {"S": "shipped"}, "total": {"N": "250.5"}}, T0),
    Op(2, {"pk": {"S": "ключ"}, "status": {"S": "new"}, "total": {"N": "10"}}, T0 + 1),
    Op(3, {"pk": {"S": "d"}, "status": {"S": "new"}, "blob": {"B": "/w=="}}, T0 + 1),
    Op(1, {"pk": {"S": "b"}, "status": {"S": "lost"}, "total": {"N": "250.5"}}, T0 + 2),
    Op(4, {"pk": {"S": "e"}, "status": {"S": "gone"}}, T0 + 2),
    Op(4, None, T0 + 3),
]
AT = T0 + 3


def _at(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).isoformat()


def _fill(store: Store, description: dict[str, Any] | None = None) -> Store:
    capture_batch(store, stream_records(TABLE, OPS), decode_lambda_record, source="test")
    write_meta(store, meta_from_description(description or pk_table_description(TABLE)))
    return store


@pytest.fixture
def filled(store: Store) -> Store:
    return _fill(store)


def _export(store: Store, dest: Path | str, *extra: str) -> int:
    return main(["replay", "--table", TABLE, "--store", store.uri, "--at", _at(AT), "--to-export", str(dest), *extra])


def _folder(dest: Path) -> Path:
    (folder,) = (dest / "AWSDynamoDB").iterdir()
    return folder


def _lines(folder: Path) -> list[bytes]:
    return [line + b"\n" for path in sorted((folder / "data").glob("*.json.gz"))
            for line in gzip.decompress(path.read_bytes()).splitlines()]


def test_export_round_trips_through_the_export_reader_byte_for_byte(filled: Store, tmp_path: Path) -> None:
    assert _export(filled, tmp_path / "out") == 0
    expected = model_state(OPS, AT)
    source = open_export(str(_folder(tmp_path / "out")))
    summary = read_summary(source)
    items = [item for data_file in read_data_files(source, summary) for item in read_items(source, data_file)]
    assert summary.item_count == len(expected)
    assert sorted(json.dumps(item) for item in items) == sorted(json.dumps(json.loads(i)) for i in expected.values())
    assert sorted(_lines(_folder(tmp_path / "out"))) == sorted(item_line(image) for image in expected.values())


def test_export_time_in_the_summary_is_the_replayed_moment(filled: Store, tmp_path: Path) -> None:
    assert _export(filled, tmp_path / "out") == 0
    summary = read_summary(open_export(str(_folder(tmp_path / "out"))))
    assert summary.export_time_us == AT * 1_000_000
    assert (summary.output_format, summary.export_type) == ("DYNAMODB_JSON", "FULL_EXPORT")
    assert summary.export_arn == ""  # no DynamoDB export made it, so it names none


def test_export_is_split_into_data_files_of_bounded_size(filled: Store, tmp_path: Path) -> None:
    assert _export(filled, tmp_path / "out", "--export-file-mb", "1") == 0
    images = [json.dumps({"pk": {"S": f"k{i}"}, "pad": {"S": "x" * 1000}}) for i in range(300)]
    target = LocalStore(tmp_path / "split")
    files = write_data_files(target, "f", [pa.record_batch({"image": images})], max_file_bytes=20_000)
    sizes = [len(gzip.decompress((tmp_path / "split" / "f" / f.path).read_bytes())) for f in files]
    assert len(files) == plan_export([len(image) for image in images], 20_000).files > 1
    assert max(sizes) <= 20_000
    assert sum(f.item_count for f in files) == 300


def test_a_single_item_larger_than_the_bound_gets_a_file_of_its_own(tmp_path: Path) -> None:
    images = ['{"pk":{"S":"big"},"v":{"S":"' + "y" * 500 + '"}}', '{"pk":{"S":"small"}}']
    files = write_data_files(LocalStore(tmp_path), "f", [pa.record_batch({"image": images})], max_file_bytes=100)
    assert [f.item_count for f in files] == [1, 1]


def test_an_empty_state_gives_one_empty_data_file_and_item_count_zero(tmp_path: Path) -> None:
    target = LocalStore(tmp_path)
    files, summary = export_images(target, "AWSDynamoDB/x", iter([]), table_arn="", export_time=datetime.now(UTC),
                                   overwrite=False)
    assert [f.item_count for f in files] == [0]
    source = open_export(str(tmp_path / "AWSDynamoDB" / "x"))
    assert summary["itemCount"] == 0
    assert [list(read_items(source, f)) for f in read_data_files(source, read_summary(source))] == [[]]


class _Recording(LocalStore):
    """A real local store that remembers the order of its writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[str] = []

    def write(self, path: str, data: bytes, *, if_absent: bool = False) -> None:
        self.writes.append(path)
        super().write(path, data, if_absent=if_absent)


def test_the_summary_is_written_last_and_only_when_absent(tmp_path: Path) -> None:
    target = _Recording(tmp_path)
    export_images(target, "AWSDynamoDB/x", iter([pa.record_batch({"image": ['{"pk":{"S":"a"}}']})]),
                  table_arn="", export_time=datetime.now(UTC), overwrite=False)
    assert target.writes[-1] == f"AWSDynamoDB/x/{SUMMARY}"
    assert target.writes[0] == "AWSDynamoDB/x/_started"


def test_data_files_without_manifests_are_never_taken_for_an_export(tmp_path: Path) -> None:
    target = LocalStore(tmp_path)
    write_data_files(target, "AWSDynamoDB/x", [pa.record_batch({"image": ['{"pk":{"S":"a"}}']})])
    with pytest.raises(ExportInvalid, match=r"manifest-summary\.json"):
        read_summary(open_export(str(tmp_path / "AWSDynamoDB" / "x")))


def test_manifests_describe_data_files_written_by_another_engine(tmp_path: Path) -> None:
    data = gzip.compress(b'{"Item":{"pk":{"S":"a"}}}\n{"Item":{"pk":{"S":"b"}}}\n')
    (tmp_path / "AWSDynamoDB" / "x" / "data").mkdir(parents=True)
    (tmp_path / "AWSDynamoDB" / "x" / "data" / "spark-part-0.json.gz").write_bytes(data)
    target = LocalStore(tmp_path)
    write_manifests(target, "AWSDynamoDB/x", [describe_data_file("data/spark-part-0.json.gz", data)], table_arn="",
                    export_time=datetime.now(UTC))
    source = open_export(str(tmp_path / "AWSDynamoDB" / "x"))
    (data_file,) = read_data_files(source, read_summary(source))
    assert [item["pk"]["S"] for item in read_items(source, data_file)] == ["a", "b"]


def test_an_existing_export_is_refused_without_overwrite(filled: Store, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert _export(filled, tmp_path / "out") == 0
    assert _export(filled, tmp_path / "out") == EXIT_USAGE
    assert "--overwrite" in capsys.readouterr().err


def test_a_half_written_export_is_refused_as_incomplete(filled: Store, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert _export(filled, tmp_path / "out") == 0
    (_folder(tmp_path / "out") / SUMMARY).unlink()
    assert _export(filled, tmp_path / "out") == EXIT_USAGE
    assert "incomplete export" in capsys.readouterr().err


def test_overwrite_replaces_the_export_and_leaves_no_old_data_file(filled: Store, tmp_path: Path) -> None:
    assert _export(filled, tmp_path / "out") == 0
    stale = _folder(tmp_path / "out") / "data" / "stale.json.gz"
    stale.write_bytes(gzip.compress(b'{"Item":{"pk":{"S":"ghost"}}}\n'))
    assert _export(filled, tmp_path / "out", "--overwrite") == 0
    assert not stale.exists()
    assert sorted(_lines(_folder(tmp_path / "out"))) == sorted(item_line(i) for i in model_state(OPS, AT).values())


def test_dry_run_reports_items_bytes_and_files_and_writes_nothing(filled: Store, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert _export(filled, tmp_path / "out", "--dry-run") == 0
    expected = model_state(OPS, AT)
    line_bytes = sum(len(item_line(image)) for image in expected.values())
    out = capsys.readouterr().out
    assert f"would write {len(expected):,} items" in out
    assert f"({line_bytes:,} bytes of JSON lines" in out
    assert "in 1 data files" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("extra", "code"), [(["--where", "nosuch = 1"], 2), (["--at", "1600000000"], 5)],
                         ids=["bad where", "out of coverage"])
def test_a_refused_export_creates_no_directory(filled: Store, tmp_path: Path, extra: list[str], code: int) -> None:
    assert _export(filled, tmp_path / "out", *extra) == code
    assert not (tmp_path / "out").exists()


def test_export_options_without_an_export_are_refused(filled: Store, tmp_path: Path) -> None:
    code = main(["replay", "--table", TABLE, "--store", filled.uri, "--at", _at(AT), "--to-file",
                 str(tmp_path / "x.jsonl"), "--export-file-mb", "5"])
    assert code == EXIT_USAGE


# --- --via-import: ImportTable on moto's S3 and DynamoDB -------------------------------------------


# pyarrow reads an s3:// store over HTTP, so these use a moto server on 127.0.0.1 (S3 and DynamoDB in
# one process, as ImportTable needs). Its backends outlive a server, so each test starts from a reset.


@pytest.fixture
def s3_over_http(monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A store in a bucket of a fresh moto server on 127.0.0.1, reached over HTTP like real S3."""
    server = MotoHttpServer()
    server.start()
    endpoint = server.url
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    try:
        urllib.request.urlopen(reset).close()
        boto3.client("s3").create_bucket(Bucket="http-store")
        yield open_store("s3://http-store/backups", allow_empty=True)
    finally:
        urllib.request.urlopen(reset).close()
        server.stop()


@pytest.fixture
def s3_filled(s3_over_http: Store) -> Store:
    return _fill(s3_over_http)


def _import(store: Store, name: str, *extra: str) -> int:
    return main(["replay", "--table", TABLE, "--store", store.uri, "--at", _at(AT), "--to-table", name,
                 "--via-import", *extra])


def _canonical(item: dict[str, Any]) -> str:
    return json.dumps(item, sort_keys=True, ensure_ascii=False)


def _scan(name: str) -> list[dict[str, Any]]:
    pages = boto3.client("dynamodb").get_paginator("scan").paginate(TableName=name)
    return [binaries_to_base64(item) for page in pages for item in page["Items"]]


def test_via_import_creates_a_table_holding_exactly_the_replayed_items(
        s3_filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert _import(s3_filled, "restored") == 0
    expected = sorted(_canonical(json.loads(image)) for image in model_state(OPS, AT).values())
    assert sorted(_canonical(item) for item in _scan("restored")) == expected
    out = capsys.readouterr().out
    assert f"imported {len(expected):,}, processed {len(expected):,}, errors 0" in out


def test_via_import_puts_the_export_next_to_an_s3_store(s3_filled: Store) -> None:
    assert _import(s3_filled, "restored") == 0
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="http-store")["Contents"]]
    assert any(k.startswith("backups/imports/AWSDynamoDB/") and k.endswith(SUMMARY) for k in keys)


def test_via_import_carries_keys_indexes_and_billing_mode(s3_over_http: Store) -> None:
    description = pk_table_description(TABLE) | {
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                 {"AttributeName": "status", "AttributeType": "S"}],
        "GlobalSecondaryIndexes": [{"IndexName": "by-status", "KeySchema": [{"AttributeName": "status",
                                                                               "KeyType": "HASH"}],
                                    "Projection": {"ProjectionType": "ALL"}}],
    }
    assert _import(_fill(s3_over_http, description), "restored") == 0
    table = boto3.client("dynamodb").describe_table(TableName="restored")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == ["by-status"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_via_import_refuses_a_table_with_local_secondary_indexes(s3_over_http: Store,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    description = pk_table_description(TABLE) | {
        "LocalSecondaryIndexes": [{"IndexName": "lsi", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                                   "Projection": {"ProjectionType": "ALL"}}],
    }
    assert _import(_fill(s3_over_http, description), "restored") == EXIT_USAGE
    assert "local secondary indexes (lsi)" in capsys.readouterr().err


def test_via_import_refuses_an_existing_target_table_with_exit_8(s3_filled: Store) -> None:
    boto3.client("dynamodb").create_table(
        TableName="restored", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    assert _import(s3_filled, "restored") == EXIT_CONFLICT


def test_via_import_from_a_local_store_needs_an_import_prefix(filled: Store, aws: None,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert _import(filled, "restored") == EXIT_USAGE
    assert "--import-prefix" in capsys.readouterr().err


def test_via_import_from_a_local_store_uses_the_import_prefix(filled: Store, s3_over_http: Store) -> None:
    boto3.client("s3").create_bucket(Bucket="staging")
    assert _import(filled, "restored", "--import-prefix", "s3://staging/restores") == 0
    assert len(_scan("restored")) == len(model_state(OPS, AT))


def test_via_import_dry_run_writes_nothing_and_creates_no_table(s3_filled: Store) -> None:
    assert _import(s3_filled, "restored", "--dry-run") == 0
    assert boto3.client("dynamodb").list_tables()["TableNames"] == []
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="http-store")["Contents"]]
    assert not [k for k in keys if "/imports/" in k]


def test_an_import_with_item_errors_exits_3_naming_the_counts(s3_over_http: Store,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    # meta.json says the key is a number: every stored item (pk a string) fails the import.
    description = pk_table_description(TABLE) | {"AttributeDefinitions": [{"AttributeName": "pk",
                                                                           "AttributeType": "N"}]}
    assert _import(_fill(s3_over_http, description), "restored") == EXIT_WRITE_FAILED
    err = capsys.readouterr().err.strip()
    assert err.startswith("ddb-rewind: error: the import into restored ended FAILED")
    assert len(err.splitlines()) == 1


def test_via_import_without_to_table_is_a_usage_error(filled: Store, tmp_path: Path) -> None:
    code = main(["replay", "--table", TABLE, "--store", filled.uri, "--at", _at(AT), "--to-export",
                 str(tmp_path / "o"), "--via-import"])
    assert code == EXIT_USAGE


def test_unreachable_dynamodb_is_one_line_and_exit_7(filled: Store, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    closed = free_port()  # a port nothing listens on: the connection is refused at once
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert _import(filled, "restored", "--import-prefix", "s3://staging/restores") == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert err.startswith("ddb-rewind: error: looking up table 'restored': could not reach AWS")
    assert len(err.splitlines()) == 1


def test_an_export_bootstraps_a_new_store_that_replays_the_same_items(filled: Store, tmp_path: Path) -> None:
    assert _export(filled, tmp_path / "out") == 0
    fresh = LocalStore(tmp_path / "fresh")
    write_meta(fresh, meta_from_description(pk_table_description(TABLE)))
    assert main(["bootstrap", "--table", TABLE, "--store", fresh.uri, "--from-export",
                 str(_folder(tmp_path / "out"))]) == 0
    out = tmp_path / "again.jsonl"
    assert main(["replay", "--table", TABLE, "--store", fresh.uri, "--at", _at(AT), "--to-file", str(out)]) == 0
    assert sorted(out.read_bytes().splitlines(keepends=True)) == sorted(_lines(_folder(tmp_path / "out")))


def test_an_export_interrupted_midway_is_never_complete(tmp_path: Path) -> None:
    def batches() -> Iterator[pa.RecordBatch]:
        yield pa.record_batch({"image": ['{"pk":{"S":"a"}}']})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_images(LocalStore(tmp_path), "AWSDynamoDB/x", batches(), table_arn="", export_time=datetime.now(UTC),
                      overwrite=False, max_file_bytes=10)
    with pytest.raises(ExportInvalid, match=r"manifest-summary\.json"):
        read_summary(open_export(str(tmp_path / "AWSDynamoDB" / "x")))


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(min_value=2, max_value=60), max_size=40),
       bound=st.integers(min_value=10, max_value=200), split=st.integers(min_value=1, max_value=7))
def test_dry_run_counts_exactly_the_data_files_written(lengths: list[int], bound: int, split: int) -> None:
    images = [json.dumps({"pk": {"S": f"{i:02d}" + "x" * length}}) for i, length in enumerate(lengths)]
    batches = [pa.record_batch({"image": images[i:i + split]}, schema=pa.schema([("image", pa.string())]))
               for i in range(0, len(images), split)]
    with tempfile.TemporaryDirectory() as root:
        files = write_data_files(LocalStore(Path(root)), "f", batches, max_file_bytes=bound)
    plan = plan_export([len(image.encode()) for image in images], bound)
    assert (plan.files, plan.items) == (len(files), sum(f.item_count for f in files))


def test_via_import_carries_provisioned_throughput(s3_over_http: Store) -> None:
    description = pk_table_description(TABLE) | {
        "BillingModeSummary": {"BillingMode": "PROVISIONED"},
        "ProvisionedThroughput": {"ReadCapacityUnits": 7, "WriteCapacityUnits": 9},
    }
    assert _import(_fill(s3_over_http, description), "restored") == 0
    table = boto3.client("dynamodb").describe_table(TableName="restored")["Table"]
    throughput = table["ProvisionedThroughput"]
    assert (throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"]) == (7, 9)
