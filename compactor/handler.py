"""Lambda entry point for scheduled compaction and retention.

Store from REWIND_STORE, table from REWIND_TABLE; REWIND_RETENTION_POLICY (the ``expire --keep``
grammar; empty keeps everything) is applied after each compaction through the same plan and the
same refusals as ``ddb-rewind expire``, so the deployed stack never deletes what the CLI would keep.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger

from changelog.errors import ConflictError, RewindError, TimeOutOfRange
from changelog.settings import observe_or_report
from changelog.store import Store, open_store
from compactor.compaction import compact
from compactor.policy import Policy, parse_policy
from compactor.retention import apply_expire, plan_expire

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
    try:
        result = compact(store, table)
    except (ConflictError, TimeOutOfRange) as exc:
        # Another compactor won, or there is no restorable moment to snapshot yet (a table with nothing
        # captured, or one a gap cuts: the Gaps alarm says that): nothing for this run to do.
        logger.warning("compaction skipped", extra={"reason": str(exc)})
        return {"snapshot": None, "skipped": str(exc), "settings_recorded": changed is not None}
    summary: dict[str, Any] = {
        "settings_recorded": changed is not None,
        "merged_partitions": result.merge.partitions,
        "merged_files": result.merge.files_in,
        "snapshot": result.snapshot.snapshot_time.isoformat() if result.snapshot else None,
        "items": result.snapshot.items if result.snapshot else None,
    }
    if policy is not None:
        summary["retention"] = _expire(store, table, policy)
    logger.info("compaction done", extra=summary)
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
