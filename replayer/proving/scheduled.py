"""Lambda entry point of the scheduled verifier: the coverage proof, a restore drill and a sampled check.

Each run, for the table REWIND_TABLE of the store REWIND_STORE:

1. the coverage proof (``changelog.proof``): capture lag, shards listed but never read, gaps and
   quarantined records, published as metrics;
2. a restore drill (``replayer.proving.verify.restore_drill``) at a random restorable moment, seeded by the
   run's time so a failed drill can be repeated with ``ddb-rewind verify --drill-at``;
3. ``check --read-data`` over a rotating share of the files (``in_sample``), so that every file is
   read whole and hashed at least once every REWIND_VERIFY_CYCLE_DAYS, and every other check
   (names, sizes, manifests and their chain, gap records) over every file;
4. with REWIND_VERIFY_LIVE_SAMPLE above 0, that many live items read each way and compared with the
   stored state (``replayer.proving.live_sample``), waiting up to REWIND_VERIFY_LIVE_WAIT_SECONDS
   for coverage to pass the read when an item differs.

Every problem found is counted in VerificationFailures (the stack alarms on it) and named in the
log. The function only reads the store (and, for the live sample, the table); metrics go out as
CloudWatch embedded metric format in its log (aws-lambda-powertools Metrics, like the other
functions), which needs no CloudWatch permission. An error that is not a finding about the store
(a refused S3 call, a bug) raises, so the function's Errors alarm fires.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from changelog.errors import RewindError, TableNotFound, TimeOutOfRange, UsageError
from changelog.names import table_name_problem
from changelog.proof import CoverageProof, coverage_proof
from changelog.store import Store, open_store
from changelog.timefmt import format_time, from_micros, to_micros
from replayer.proving.check import CheckReport, check_store
from replayer.proving.live_sample import LiveSample
from replayer.proving.verify import DrillResult, restore_drill

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "ddb-rewind-verifier"))
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ddb-rewind"),
    service=os.environ.get("POWERTOOLS_SERVICE_NAME", "ddb-rewind-verifier"),
)

MINUTE_US = 60 * 1_000_000
DAY_US = 24 * 60 * MINUTE_US
# A scheduled run may start a little late or early. Each run reads the files of a window a quarter
# longer than the interval, so a run up to a quarter of an interval late leaves no file out.
_SLACK = 1.25


def file_phase(path: str, cycle_us: int) -> int:
    """Where in the cycle ``path`` is read whole: a stable hash of its name, spread evenly over [0, cycle)."""
    digest = int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8], "big")
    return (digest * cycle_us) >> 64


def in_sample(path: str, now_us: int, interval_us: int, cycle_us: int) -> bool:
    """Whether the run at ``now_us`` reads ``path`` whole.

    A run reads the files whose phase lies in the window of the cycle that ended at ``now_us``
    (one interval, plus slack). Runs every ``interval_us`` (or more often) sweep the whole cycle,
    so every file is read at least once in any ``cycle_us`` of runs.
    """
    width = int(interval_us * _SLACK)
    if width >= cycle_us:
        return True
    end = now_us % cycle_us
    start = end - width
    phase = file_phase(path, cycle_us)
    if start >= 0:
        return start < phase <= end
    return phase <= end or phase > start + cycle_us


@dataclass(frozen=True)
class VerificationRun:
    """What one run proved and found."""

    table: str
    at_us: int
    proof: CoverageProof | None
    drill: DrillResult | None
    check: CheckReport | None
    failures: tuple[str, ...]  # each problem found, in one line
    skipped: tuple[str, ...] = ()  # what could not be done, and why (not a problem of the store)
    live: LiveSample | None = None


LiveCheck = Callable[[Store, str, int], LiveSample]


def verify_once(store: Store, table: str, now_us: int, interval_us: int, cycle_us: int,
                live: LiveCheck | None = None) -> VerificationRun:
    """One run: the proof, a drill at a moment drawn with ``now_us`` as seed, the sampled check, and
    ``live`` (the live sample, given the store, the table and the seed) when set."""
    failures: list[str] = []
    skipped: list[str] = []
    proof: CoverageProof | None = None
    drill: DrillResult | None = None
    try:
        proof = coverage_proof(store, table, now_us)
    except TableNotFound as exc:
        # Nothing captured yet: nothing to prove, drill or check (the capture lag stays unpublished).
        return VerificationRun(table, now_us, None, None, None, (), (str(exc),))
    except RewindError as exc:
        failures.append(f"coverage: {exc}")
    try:
        drill = restore_drill(store, table, seed=now_us)
        if not drill.matches:
            failures.append(
                f"restore drill at {format_time(from_micros(drill.at_us))}: snapshot + changes give "
                f"{drill.items_with_snapshot:,} items (checksum {drill.checksum_with_snapshot}), changes alone "
                f"{drill.items_from_changes:,} (checksum {drill.checksum_from_changes})")
    except (TimeOutOfRange, TableNotFound) as exc:
        # No moment to drill at (nothing restorable after the newest snapshot): the proof's gap and
        # quarantine counts carry the reason, and alarm on their own.
        skipped.append(f"restore drill: {exc}")
    except RewindError as exc:
        failures.append(f"restore drill: {exc}")
    check = check_store(store, table, read_data=True,
                        sample=lambda path: in_sample(path, now_us, interval_us, cycle_us))
    failures.extend(f"check: {f.path} {f.problem} ({f.affects})" for f in check.problems)
    sample = None
    if live is not None:
        try:
            sample = live(store, table, now_us)
        except RewindError as exc:
            failures.append(f"live sample: {exc}")
        else:
            failures.extend(f"live sample: the stored item {key} differs from the table's"
                            for key in sample.mismatched)
            skipped.extend(f"live sample: {sample.inconclusive} item(s) undecided: {why}"
                           for why in sample.why_inconclusive)
    return VerificationRun(table, now_us, proof, drill, check, tuple(failures), tuple(skipped), sample)


def _settings() -> tuple[str, str, int, int]:
    store_uri = os.environ.get("REWIND_STORE", "")
    table = os.environ.get("REWIND_TABLE", "")
    if not store_uri or not table:
        raise UsageError("REWIND_STORE and REWIND_TABLE must be set")
    problem = table_name_problem(table)
    if problem:
        raise UsageError(f"REWIND_TABLE: {problem}")
    interval = _positive_int("REWIND_VERIFY_INTERVAL_MINUTES", "60")
    cycle = _positive_int("REWIND_VERIFY_CYCLE_DAYS", "7")
    return store_uri, table, interval * MINUTE_US, cycle * DAY_US


def _positive_int(name: str, default: str, *, zero: bool = False) -> int:
    text = os.environ.get(name, default)
    if not (text.isascii() and text.isdigit() and len(text) <= 9 and (zero or int(text) > 0)):
        raise UsageError(f"{name} must be a whole number {'from 0' if zero else 'above 0'}, not {text!r}")
    return int(text)


_clients: dict[str, Any] = {}


def _live_check() -> LiveCheck | None:
    """The live sample the environment asks for (REWIND_VERIFY_LIVE_SAMPLE items each way), or None."""
    size = _positive_int("REWIND_VERIFY_LIVE_SAMPLE", "0", zero=True)
    if size == 0:
        return None
    wait_s = _positive_int("REWIND_VERIFY_LIVE_WAIT_SECONDS", "120", zero=True)
    from replayer.proving.live_sample import live_sample

    def check(store: Store, table: str, seed: int) -> LiveSample:
        if "dynamodb" not in _clients:
            import boto3

            _clients["dynamodb"] = boto3.client("dynamodb")
        return live_sample(store, table, _clients["dynamodb"], min(size, 100), seed, wait_s=wait_s)

    return check


def run_time_us(event: dict[str, Any] | None) -> int:
    """The run's moment: the schedule's ``time`` (EventBridge sends the moment it fired), else the clock."""
    stamp = (event or {}).get("time")
    if stamp is None:
        return time.time_ns() // 1000
    try:
        moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"the event's time {str(stamp)[:40]!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise UsageError(f"the event's time {str(stamp)[:40]!r} has no time zone")
    return to_micros(moment)


def publish(run: VerificationRun) -> None:
    """The run's result as metrics: one value of each per run, so a dashboard line has no holes."""
    proof = run.proof
    if proof is not None:
        lag = proof.capture_lag_seconds
        if lag is not None:
            metrics.add_metric(name="CaptureLagSeconds", unit=MetricUnit.Seconds, value=lag)
        metrics.add_metric(name="UnreadShards", unit=MetricUnit.Count, value=len(proof.unread_shards))
        metrics.add_metric(name="Gaps", unit=MetricUnit.Count, value=proof.gaps)
        metrics.add_metric(name="QuarantinedRecords", unit=MetricUnit.Count, value=proof.quarantined)
    metrics.add_metric(name="VerificationFailures", unit=MetricUnit.Count, value=len(run.failures))
    metrics.add_metric(name="DrillsPassed", unit=MetricUnit.Count,
                       value=1 if run.drill is not None and run.drill.matches else 0)
    metrics.add_metric(name="FilesHashed", unit=MetricUnit.Count,
                       value=run.check.files_read if run.check is not None else 0)
    if run.live is not None:
        metrics.add_metric(name="LiveItemsCompared", unit=MetricUnit.Count, value=run.live.compared)
        metrics.add_metric(name="LiveItemsMismatched", unit=MetricUnit.Count, value=len(run.live.mismatched))
        metrics.add_metric(name="LiveItemsUndecided", unit=MetricUnit.Count, value=run.live.inconclusive)


_stores: dict[str, Store] = {}


@metrics.log_metrics
def lambda_handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    """Scheduled run: verify, publish, and return (and log) a summary; findings never raise."""
    store_uri, table, interval_us, cycle_us = _settings()
    now_us = run_time_us(event)
    store = _stores.get(store_uri) or _stores.setdefault(store_uri, open_store(store_uri, allow_empty=True))
    run = verify_once(store, table, now_us, interval_us, cycle_us, _live_check())
    publish(run)
    summary: dict[str, Any] = {
        "table": table,
        "at": format_time(from_micros(now_us)),
        "proof": run.proof.describe() if run.proof is not None else None,
        "drill_at": format_time(from_micros(run.drill.at_us)) if run.drill is not None else None,
        "drill_matches": run.drill.matches if run.drill is not None else None,
        "files_hashed": run.check.files_read if run.check is not None else 0,
        "live_compared": run.live.compared if run.live is not None else 0,
        "failures": list(run.failures),
        "skipped": list(run.skipped),
    }
    if run.failures:
        logger.error("verification failed", extra=summary)
    else:
        logger.info("verification passed", extra=summary)
    return summary
