"""The compactor's Spark jobs: a snapshot too big for a Lambda is computed by EMR Serverless.

Above ``REWIND_SPARK_THRESHOLD_BYTES`` of input (change files and base snapshot parts a snapshot
would read; 0 or unset: never) the compactor starts ``compactor/spark_snapshot.py`` as an EMR
Serverless job run and records it in the store (``layout.spark_compaction_path``). Later scheduled
runs follow that job: while it runs they do nothing else (a merge or an expire would remove files it
reads); once it succeeded they publish its draft through the Lambda's own publish step
(``snapshots.publish_draft``); when it failed they say so in one line and start it again, up to
``MAX_ATTEMPTS``, after which the Lambda computes the snapshot itself.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from changelog.errors import StoreError, UsageError
from changelog.layout import spark_compaction_path
from changelog.store import ObjectMissing, Store
from changelog.timefmt import format_time, from_micros

MAX_ATTEMPTS = 3
DONE = "SUCCESS"
FAILED = ("FAILED", "CANCELLED")


@dataclass(frozen=True)
class SparkSettings:
    """Where and how the stack runs Spark (the compactor's environment, set by the template)."""

    threshold_bytes: int
    application_id: str
    role_arn: str
    entry_point: str
    submit_parameters: str

    @staticmethod
    def from_env() -> SparkSettings | None:
        """The settings, or None when Spark is off (threshold 0 or unset). UsageError on a bad value."""
        text = os.environ.get("REWIND_SPARK_THRESHOLD_BYTES", "").strip() or "0"
        if not text.isdigit():
            raise UsageError(f"REWIND_SPARK_THRESHOLD_BYTES={text!r} is not a whole number of bytes")
        if int(text) == 0:
            return None
        names = ("REWIND_SPARK_APPLICATION_ID", "REWIND_SPARK_ROLE_ARN", "REWIND_SPARK_ENTRY_POINT")
        missing = [name for name in names if not os.environ.get(name)]
        if missing:
            raise UsageError(f"REWIND_SPARK_THRESHOLD_BYTES is set but {', '.join(missing)} is not")
        return SparkSettings(int(text), os.environ[names[0]], os.environ[names[1]], os.environ[names[2]],
                             os.environ.get("REWIND_SPARK_SUBMIT_PARAMETERS", ""))


@dataclass(frozen=True)
class PendingJob:
    """A Spark job computing the snapshot of ``table`` at ``at_us``, parts named by ``writer``."""

    job_run_id: str
    table: str
    at_us: int
    writer: str
    attempt: int


def start_job(client: Any, settings: SparkSettings, store: Store, table: str, at_us: int,
              attempt: int = 1) -> PendingJob:
    """Start the job run and record it in the store; returns the record."""
    writer = uuid.uuid4().hex[:12]
    driver: dict[str, Any] = {
        "entryPoint": settings.entry_point,
        "entryPointArguments": ["--store", store.uri, "--table", table, "--at", format_time(from_micros(at_us)),
                                "--writer", writer],
    }
    if settings.submit_parameters:
        driver["sparkSubmitParameters"] = settings.submit_parameters
    response = client.start_job_run(
        applicationId=settings.application_id, executionRoleArn=settings.role_arn,
        clientToken=f"{table}-{at_us}-{attempt}"[:64], name=f"ddb-rewind snapshot {table}"[:256],
        jobDriver={"sparkSubmit": driver})
    job = PendingJob(str(response["jobRunId"]), table, at_us, writer, attempt)
    store.write(spark_compaction_path(table), json.dumps(asdict(job), sort_keys=True).encode())
    return job


def pending_job(store: Store, table: str) -> PendingJob | None:
    """The recorded job, or None; StoreError when the record is not one this code wrote."""
    path = spark_compaction_path(table)
    try:
        body = json.loads(store.read(path))
        job = PendingJob(str(body["job_run_id"]), str(body["table"]), int(body["at_us"]), str(body["writer"]),
                         int(body["attempt"]))
    except ObjectMissing:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"the Spark job record {path} is unreadable ({exc}): delete it to start afresh") from None
    if job.table != table:
        raise StoreError(f"the Spark job record {path} names table {job.table!r}, not {table!r}")
    return job


def clear_job(store: Store, table: str) -> None:
    store.delete(spark_compaction_path(table))


def job_state(client: Any, settings: SparkSettings, job: PendingJob) -> tuple[str, str]:
    """The job run's state and EMR's one-line reason (empty when it gives none)."""
    run = client.get_job_run(applicationId=settings.application_id, jobRunId=job.job_run_id)["jobRun"]
    details = str(run.get("stateDetails") or "").strip().splitlines()
    return str(run["state"]), details[0][:300] if details else ""
