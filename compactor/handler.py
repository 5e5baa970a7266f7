"""Lambda entry point for scheduled compaction (store from REWIND_STORE, table from REWIND_TABLE)."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger

from changelog.errors import ConflictError, RewindError
from changelog.settings import observe as observe_settings
from changelog.store import open_store
from compactor.compaction import compact

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "ddb-rewind-compactor"))


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Run one compaction; a lost race with another compactor is reported, not raised."""
    store_uri = os.environ.get("REWIND_STORE")
    table = (event or {}).get("table") or os.environ.get("REWIND_TABLE")
    if not store_uri or not table:
        raise RewindError("REWIND_STORE and REWIND_TABLE must be set")
    store = open_store(store_uri)
    try:
        # Whenever the settings change, the next run records them (a missing permission: that setting
        # unknown); failing to read them must not stop the backup itself.
        changed = observe_settings(store, table)
    except RewindError as exc:
        logger.warning("settings not recorded", extra={"reason": str(exc)})
        changed = None
    try:
        result = compact(store, table)
    except ConflictError as exc:
        logger.warning("compaction skipped", extra={"reason": str(exc)})
        return {"snapshot": None, "skipped": str(exc), "settings_recorded": changed is not None}
    summary = {
        "settings_recorded": changed is not None,
        "merged_partitions": result.merge.partitions,
        "merged_files": result.merge.files_in,
        "snapshot": result.snapshot.snapshot_time.isoformat() if result.snapshot else None,
        "items": result.snapshot.items if result.snapshot else None,
    }
    logger.info("compaction done", extra=summary)
    return summary
