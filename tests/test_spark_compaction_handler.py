"""The scheduled compactor hands a snapshot too big for a Lambda to EMR Serverless, then publishes it.

Moto's EMR Serverless stands in for the service (its job runs succeed at once, or are cancelled
here); what the job leaves in the store, parts and a draft manifest, is written by the Lambda's own
code (the Spark job writes the same bytes: tests/test_spark_compaction.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from changelog.codec import decode_lambda_record
from changelog.layout import spark_compaction_path
from changelog.snapshot import list_manifests
from changelog.store import Store
from compactor.handler import lambda_handler
from compactor.snapshots import build_snapshot, snapshot_input_bytes, write_draft
from compactor.spark_runs import MAX_ATTEMPTS, pending_job
from replayer.restoring.replay import open_items
from stream_consumer.capture import capture_batch
from tests.model import Op, stream_records

TABLE = "orders"
T0 = 1_700_000_000
OPS = [Op(i % 4, {"pk": {"S": "abcd"[i % 4]}, "n": {"N": str(i)}}, T0 + 600 * i) for i in range(12)]
ENTRY = "s3://artifacts/ddb-rewind/spark_snapshot.py"


@pytest.fixture
def emr(store: Store, monkeypatch: pytest.MonkeyPatch, aws: None) -> Iterator[Any]:
    """A captured table, an EMR Serverless application and the compactor's environment for it."""
    records = stream_records(TABLE, OPS)
    for start in range(0, len(records), 3):
        capture_batch(store, records[start:start + 3], decode_lambda_record, source="test")
    client = boto3.client("emr-serverless", region_name="us-east-1")
    app = client.create_application(name="rewind", releaseLabel="emr-7.5.0", type="SPARK")["applicationId"]
    for name, value in {"REWIND_STORE": store.uri, "REWIND_TABLE": TABLE, "REWIND_SPARK_APPLICATION_ID": app,
                        "REWIND_SPARK_ROLE_ARN": "arn:aws:iam::123456789012:role/rewind-spark",
                        "REWIND_SPARK_ENTRY_POINT": ENTRY, "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    yield client


def _threshold(monkeypatch: pytest.MonkeyPatch, value: int) -> None:
    monkeypatch.setenv("REWIND_SPARK_THRESHOLD_BYTES", str(value))


def _job_runs(client: Any) -> list[dict[str, Any]]:
    app = client.list_applications()["applications"][0]["id"]
    try:
        runs = client.list_job_runs(applicationId=app)["jobRuns"]
    except client.exceptions.ResourceNotFoundException:
        return []  # moto answers so for an application that never ran a job
    return [client.get_job_run(applicationId=app, jobRunId=run["id"])["jobRun"] for run in runs]


def _the_job_runs(store: Store) -> None:
    """What the Spark job leaves: the parts and the draft manifest of the recorded moment."""
    job = pending_job(store, TABLE)
    assert job is not None
    write_draft(store, build_snapshot(store, TABLE, job.at_us, writer_id=job.writer, publish=False))


def test_a_table_below_the_threshold_is_compacted_by_the_lambda(
    store: Store, emr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _threshold(monkeypatch, 10**12)

    summary = lambda_handler({}, None)

    assert summary["snapshot"] is not None and "spark_job" not in summary
    assert _job_runs(emr) == [] and len(list_manifests(store, TABLE)) == 1


def test_a_table_above_the_threshold_starts_the_spark_job_and_publishes_nothing_yet(
    store: Store, emr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _threshold(monkeypatch, 1)

    summary = lambda_handler({}, None)

    (run,) = _job_runs(emr)
    job = pending_job(store, TABLE)
    assert job is not None and summary["spark_job"] == run["jobRunId"] == job.job_run_id
    driver = run["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"] == ENTRY
    at = datetime.fromtimestamp(job.at_us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert driver["entryPointArguments"] == ["--store", store.uri, "--table", TABLE, "--at", at,
                                             "--writer", job.writer]
    assert summary["snapshot"] is None and list_manifests(store, TABLE) == []


def test_the_threshold_compares_the_bytes_a_snapshot_would_read(
    store: Store, emr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    at_us = (T0 + 600 * 11) * 1_000_000
    _threshold(monkeypatch, snapshot_input_bytes(store, TABLE, at_us))  # not above it: the Lambda's

    assert lambda_handler({}, None)["snapshot"] is not None and _job_runs(emr) == []


def test_the_next_run_publishes_the_finished_job_s_snapshot_through_the_shared_publish_step(
    store: Store, emr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _threshold(monkeypatch, 1)
    lambda_handler({}, None)
    _the_job_runs(store)

    summary = lambda_handler({}, None)

    ((_, manifest),) = list_manifests(store, TABLE)
    assert summary["snapshot"] == manifest.snapshot_time.isoformat() and manifest.generation == 1
    assert not store.exists(spark_compaction_path(TABLE))
    at = manifest.snapshot_time
    rows = "SELECT item_key, image FROM items ORDER BY item_key"
    assert open_items(store, TABLE, at).execute(rows).fetchall() == \
        open_items(store, TABLE, at, use_snapshots=False).execute(rows).fetchall()


def test_a_failed_job_is_reported_and_started_again_then_left_to_the_lambda(
    store: Store, emr: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _threshold(monkeypatch, 1)
    lambda_handler({}, None)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        job = pending_job(store, TABLE)
        assert job is not None and job.attempt == attempt
        emr.cancel_job_run(applicationId=emr.list_applications()["applications"][0]["id"], jobRunId=job.job_run_id)
        summary = lambda_handler({}, None)

    assert summary["snapshot"] is not None and len(list_manifests(store, TABLE)) == 1
    assert pending_job(store, TABLE) is None and len(_job_runs(emr)) == MAX_ATTEMPTS
