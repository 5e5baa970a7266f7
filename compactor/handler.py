"""Lambda entry point for scheduled compaction and retention.

Store from REWIND_STORE, table from REWIND_TABLE; REWIND_RETENTION_POLICY (the ``expire --keep``
grammar; empty keeps everything) is applied after each compaction through the same plan and the
same refusals as ``ddb-rewind expire``, so the deployed stack never deletes what the CLI would keep.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger

from changelog.errors import ConflictError, RewindError, TimeOutOfRange
from changelog.settings import observe_or_report
from changelog.store import Store, open_store
from changelog.timefmt import format_time, from_micros
from compactor.compaction import CompactionResult, compact
from compactor.policy import Policy, parse_policy
from compactor.retention import apply_expire, plan_expire
from compactor.snapshots import publish_draft
from compactor.spark_runs import (
    DONE,
    FAILED,
    MAX_ATTEMPTS,
    PendingJob,
    SparkSettings,
    clear_job,
    job_state,
    pending_job,
    start_job,
)

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "ddb-rewind-compactor"))


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Run one compaction; a lost race with another compactor is reported, not raised."""
    store_uri = os.environ.get("REWIND_STORE")
    table = (event or {}).get("table") or os.environ.get("REWIND_TABLE")
    if not store_uri or not table:
        raise RewindError("REWIND_STORE and REWIND_TABLE must be set")
    # A policy that does not parse fails the run before anything is read or deleted.
    policy = _retention_policy()
    store = open_store(store_uri, allow_empty=True)  # scheduled from the start, before the first change
    # Whenever the settings change, the next run records them (a missing permission: that setting
    # unknown); failing to read them must not stop the backup itself.
    changed = observe_or_report(store, table, logger.warning)
    spark = SparkSettings.from_env()
    summary: dict[str, Any] = {"settings_recorded": changed is not None}
    try:
        job = pending_job(store, table) if spark else None
        followed = _follow_spark_job(store, table, spark, job) if spark is not None and job is not None else None
        if followed is not None and followed.get("spark_state") is not None:
            # The job reads the files a merge or an expire would remove: nothing else runs meanwhile.
            return {**summary, **followed}
        if followed is None:
            result = _compact(store, table, spark, job)
    except (ConflictError, TimeOutOfRange) as exc:
        # Another compactor won, or there is no restorable moment to snapshot yet (a table with nothing
        # captured, or one a gap cuts: the Gaps alarm says that): nothing for this run to do.
        logger.warning("compaction skipped", extra={"reason": str(exc)})
        return {"snapshot": None, "skipped": str(exc), **summary}
    if followed is not None:
        summary.update(followed)  # the Spark job's snapshot, published: retention may run now
    elif result.spark_job is not None:
        summary.update(snapshot=None, spark_job=result.spark_job)
        logger.info("snapshot handed to Spark", extra=summary)
        return summary
    else:
        summary.update(merged_partitions=result.merge.partitions, merged_files=result.merge.files_in,
                       settled_shards=result.settled_shards, folded_ledger_records=result.folded_records,
                       snapshot=result.snapshot.snapshot_time.isoformat() if result.snapshot else None,
                       items=result.snapshot.items if result.snapshot else None)
    if policy is not None:
        summary["retention"] = _expire(store, table, policy)
    logger.info("compaction done", extra=summary)
    return summary


def _compact(store: Store, table: str, spark: SparkSettings | None, failed: PendingJob | None) -> CompactionResult:
    """Compact, handing a snapshot above the threshold to Spark (again, after a failure, up to MAX_ATTEMPTS)."""
    if failed is not None:
        clear_job(store, table)  # the attempt count goes on in the next record, if a job is started again
    if spark is None or (failed is not None and failed.attempt >= MAX_ATTEMPTS):
        return compact(store, table)
    attempt = failed.attempt + 1 if failed is not None else 1
    client = boto3.client("emr-serverless")
    return compact(store, table, spark_above_bytes=spark.threshold_bytes,
                   start_spark=lambda at_us: start_job(client, spark, store, table, at_us, attempt).job_run_id)


def _follow_spark_job(store: Store, table: str, spark: SparkSettings, job: PendingJob) -> dict[str, Any] | None:
    """What this run did about the recorded job (``spark_state`` while it runs); None when it failed."""
    state, reason = job_state(boto3.client("emr-serverless"), spark, job)
    if state in FAILED:
        logger.warning(f"Spark job {job.job_run_id} for the snapshot at {format_time(from_micros(job.at_us))} "
                       f"ended {state}: {reason or 'no reason given'} (attempt {job.attempt} of {MAX_ATTEMPTS})")
        return None
    if state != DONE:
        return {"snapshot": None, "spark_job": job.job_run_id, "spark_state": state}
    try:
        manifest = publish_draft(store, table, job.at_us, job.writer)
    finally:
        clear_job(store, table)
    summary = {"snapshot": manifest.snapshot_time.isoformat(), "items": manifest.items,
               "spark_job": job.job_run_id}
    logger.info("Spark snapshot published", extra=summary)
    return summary


def _retention_policy() -> Policy | None:
    text = os.environ.get("REWIND_RETENTION_POLICY", "").strip()
    return parse_policy(text) if text else None


def _expire(store: Store, table: str, policy: Policy) -> dict[str, Any]:
    """Apply the policy as ``ddb-rewind expire --keep POLICY --yes`` would; what it did, in counts."""
    plan = plan_expire(store, table, policy)
    apply_expire(store, plan)
    return {
        "policy": policy.text,
        "restorable_from_us": plan.floor_us,
        "snapshots_deleted": len(plan.drop_snapshots),
        "change_files_deleted": len(plan.drop_changes),
        "orphans_deleted": len(plan.drop_orphans),
    }
