"""The stack operated for 25 simulated hours, without an account (tests/simulation.py).

The template is expanded by the SAM translator and deployed into moto; every function runs in-process
with the environment, triggers and schedules the stack gave it: the consumer on the table's real moto
stream (tumbling windows, retries, the on-failure queue), the recover function on that queue and on
its 5-minute probe schedule, the compactor every 6 hours, the verifier at the interval it is given.
Stack parameters, all real ones: RetentionPolicy changes=6h (so that retention applies within the
span), VerifyIntervalMinutes 180 (the 60-minute default would run the verifier ten times as long),
VerifyFullCycleDays 1, MaximumRetryAttempts 2 (a failing batch reaches the queue after 3 attempts,
not 101). Writes to 40 items every hour. Injected: the table's TTL turned on at 07:00; at 19:00 a
batch whose store writes S3 refuses through every retry, and whose records the stream has trimmed by
the time recover reads them; at 22:00 one byte of a stored change file flipped (from then on every
read of the store refuses it as damaged, the compactor's included, until the file is restored).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from changelog.errors import RewindError
from changelog.layout import table_root
from changelog.settings import capture, history
from changelog.state import change_files, coverage
from changelog.store import Store, open_store
from compactor.policy import parse_policy
from compactor.retention import plan_expire
from replayer.restoring.replay import open_items
from tests.simulation import (
    HOUR,
    TABLE,
    Alarm,
    Call,
    Invocation,
    Simulator,
    alarm_transitions,
    allowing_statement,
    iam_check,
    stack_alarms,
)
from tests.workloads import Workload

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")]

START = datetime(2026, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())
SPAN_S = 25 * HOUR
GAP_AT = T0 + 19 * HOUR
CORRUPT_AT = T0 + 22 * HOUR
TTL_AT = T0 + 7 * HOUR
POLICY = "changes=6h"
PARAMETERS = {"RetentionPolicy": POLICY, "VerifyIntervalMinutes": "180", "VerifyFullCycleDays": "1",
              "MaximumRetryAttempts": "2"}
KEYS = 40

# Actions a role allows that this run never needs, each with why it is still right to allow.
NOT_EXERCISED = {
    ("ConsumerFunction", "s3:AbortMultipartUpload"): "only when a multipart upload fails (change files are small)",
    ("RecoverFunction", "s3:AbortMultipartUpload"): "only when a multipart upload fails",
    ("CompactorFunction", "s3:AbortMultipartUpload"): "only when a multipart upload fails",
    ("RecoverFunction", "dynamodb:ListStreams"): "only when the failed batch's stream is no longer the table's "
                                                 "current one (DescribeTable names the current stream)",
}


def _items(store: Store, at_s: int) -> dict[str, Any]:
    con = open_items(store, TABLE, datetime.fromtimestamp(at_s, tz=UTC))
    return {key: json.loads(image) for key, image in con.execute("SELECT item_key, image FROM items").fetchall()}


@dataclass
class Run:
    sim: Simulator
    store: Store
    model: Workload
    replays: list[tuple[int, bool]] = field(default_factory=list)  # (moment, equal to the model)
    refused_after_gap: list[str] = field(default_factory=list)
    corrupted: str = ""
    writes_refused_until: Callable[[], None] = lambda: None
    retention_before_corruption: tuple[int | None, Any] = (None, None)  # (earliest restorable, a new plan)

    def of(self, function: str, trigger: str | None = None) -> list[Invocation]:
        return [i for i in self.sim.invocations
                if i.function == function and (trigger is None or i.trigger.startswith(trigger))]


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    rng = random.Random(7)
    with Simulator(START, PARAMETERS) as sim:
        store = open_store(sim.outputs["StoreUri"], allow_empty=True)
        model = Workload(table=TABLE, client=sim.dynamodb)
        result = Run(sim, store, model)
        counter = [0]

        def writes(second: int) -> None:
            if second == TTL_AT:
                sim.dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={
                    "Enabled": True, "AttributeName": "expires"})
            if second == GAP_AT:
                result.writes_refused_until = sim.refuse_store_writes("ConsumerFunction")
            for _ in range(6):
                counter[0] += 1
                key = {"pk": {"S": f"k{rng.randrange(KEYS)}"}}
                if rng.random() < 0.2:
                    model.delete(key, second)
                else:
                    model.put({**key, "v": {"N": str(counter[0])}, "note": {"S": f"write {counter[0]}"}}, second)

        def after(second: int, what: str) -> None:
            if second == CORRUPT_AT and not result.corrupted:
                ran = [i.at_s for i in result.of("CompactorFunction") if "retention" in (i.result or {})]
                plan = plan_expire(store, TABLE, parse_policy(POLICY), now_us=max(ran) * 1_000_000)
                result.retention_before_corruption = (coverage(store, TABLE).earliest_us, plan)
                path = change_files(store, TABLE)[-1]
                data = bytearray(store.read(path))
                data[len(data) // 2] ^= 0x01
                sim.s3.put_object(Bucket=sim.outputs["StoreBucketName"],
                                  Key=f"{sim.outputs['StoreUri'].split('/', 3)[3]}/{path}", Body=bytes(data))
                result.corrupted = path
            if what != "write" or result.corrupted:
                return
            if second == GAP_AT + 2 * HOUR:
                try:
                    _items(store, second - HOUR)
                except RewindError as exc:
                    result.refused_after_gap.append(str(exc))
            restorable = [(low // 1_000_000 + 1, high // 1_000_000) for low, high in coverage(store, TABLE).intervals]
            restorable = [(low, high) for low, high in restorable if low <= high]
            if restorable:
                low, high = rng.choice(restorable)
                moment = rng.randint(low, high)
                result.replays.append((moment, _items(store, moment) == model.state_at(moment)))

        def lost(records: list[dict[str, Any]]) -> None:
            # The stream no longer holds the batch when recover reads it (trimmed after 24 hours).
            sim.trimmed.update(r["dynamodb"]["SequenceNumber"] for r in records)
            result.writes_refused_until()

        sim.on_give_up = lost
        sim.run_until(T0 + SPAN_S, writes=writes, after=after)
        yield result


def test_every_function_ran_on_its_triggers_without_an_error(run: Run) -> None:
    counts = {(i.function, i.trigger.split("-")[-1] if i.trigger.startswith("rewind") else i.trigger)
              for i in run.sim.invocations}
    assert {f for f, _ in counts} == {"ConsumerFunction", "RecoverFunction", "CompactorFunction", "VerifierFunction"}
    assert len(run.of("RecoverFunction", "rewind")) == SPAN_S // 300  # the probe, every 5 minutes
    assert len(run.of("VerifierFunction")) == SPAN_S // (180 * 60)
    assert len(run.of("CompactorFunction")) == SPAN_S // (6 * HOUR)
    # Only the compactor fails, and only on the damaged store.
    assert [i for i in run.sim.invocations if i.error and not (i.function == "CompactorFunction"
                                                               and i.at_s > CORRUPT_AT)] == []


def test_each_function_published_under_its_own_service(run: Run) -> None:
    for function, service in (("ConsumerFunction", "consumer"), ("VerifierFunction", "verifier"),
                              ("RecoverFunction", "recover")):
        assert {i.service for i in run.of(function) if i.metrics} == {f"ddb-rewind-{service}-{TABLE}"}


def test_drills_ran_and_passed_until_the_corruption(run: Run) -> None:
    before = [i for i in run.of("VerifierFunction") if T0 + 3 * HOUR <= i.at_s < CORRUPT_AT]
    assert len(before) >= 4
    assert [(i.at_s, i.result["failures"], i.result["skipped"], i.metrics) for i in before
            if i.metrics["DrillsPassed"] != 1 or i.metrics["VerificationFailures"] != 0] == []


def test_the_corrupted_file_raised_verification_failures(run: Run) -> None:
    after = [i for i in run.of("VerifierFunction") if i.at_s > CORRUPT_AT]
    assert run.corrupted and after[0].metrics["VerificationFailures"] >= 1
    assert any(run.corrupted.rsplit("/", 1)[-1] in failure for failure in after[0].result["failures"])


def test_the_lost_batch_raised_the_gap_metrics(run: Run) -> None:
    recovered = run.of("RecoverFunction", "queue")
    assert [i.metrics.get("PermanentGaps") for i in recovered] == [1], [(i.result, i.error) for i in recovered]
    first_after = next(i for i in run.of("VerifierFunction") if i.at_s > GAP_AT)
    assert first_after.metrics["Gaps"] == 1
    (refused,) = run.refused_after_gap  # two hours later, a moment after the gap is still refused
    assert "gap" in refused


def test_retention_was_applied_exactly_as_the_policy_says(run: Run) -> None:
    applied = [i.result["retention"] for i in run.of("CompactorFunction")
               if i.error is None and "retention" in i.result]
    assert sum(r["change_files_deleted"] for r in applied) > 0
    earliest_us, plan = run.retention_before_corruption
    assert earliest_us == applied[-1]["restorable_from_us"] is not None
    # Nothing the policy would delete was left: a new plan at the last run's moment deletes nothing.
    assert (plan.drop_changes, plan.drop_snapshots) == ((), ())


def test_each_injected_fault_raised_its_alarm_and_nothing_else_did(run: Run) -> None:
    raised = {}
    for alarm in stack_alarms(run.sim.expanded, run.sim.parameters):
        points = run.sim.datapoints(alarm)
        if points is not None:
            raised[alarm.logical_id] = [(at, state) for at, state in alarm_transitions(alarm, points, T0, T0 + SPAN_S)
                                        if state == "ALARM"]
    assert {name for name, alarmed in raised.items() if alarmed} == {
        # The lost batch; no bootstrap follows it here, so the newest restorable moment stays before it.
        "ConsumerFailedBatchesAlarm", "PermanentGapsAlarm", "StoreGapsAlarm", "CaptureLagAlarm",
        "VerificationFailuresAlarm", "CompactorErrorsAlarm",  # the flipped byte
    }
    assert min(at for at, _ in raised["StoreGapsAlarm"]) > GAP_AT
    assert min(at for at, _ in raised["CaptureLagAlarm"]) > GAP_AT + 7200  # CaptureLagAlarmSeconds' default
    assert min(at for at, _ in raised["VerificationFailuresAlarm"]) > CORRUPT_AT


def test_settings_were_recorded_and_match_the_table(run: Run) -> None:
    import boto3

    versions = history(run.store, TABLE)
    assert len(versions) == 2  # before and after TTL was turned on
    now = capture(TABLE, boto3.client("dynamodb"), boto3.client("application-autoscaling"))
    assert json.loads(json.dumps(now, sort_keys=True, default=str)) == versions[-1].settings
    assert versions[-1].settings["ttl"]["TimeToLiveStatus"] == "ENABLED"


def test_every_replay_along_the_way_equalled_the_model(run: Run) -> None:
    assert len(run.replays) >= 18
    assert [moment for moment, exact in run.replays if not exact] == []


def test_every_aws_call_is_allowed_by_the_functions_role(run: Run) -> None:
    findings = iam_check(run.sim.functions, run.sim.recorder.calls)
    assert {f: [(c.action, c.resource) for c in found.denied] for f, found in findings.items()} == \
        {f: [] for f in findings}


def test_every_permission_is_used_or_explained(run: Run) -> None:
    findings = iam_check(run.sim.functions, run.sim.recorder.calls)
    unused = {(f, action) for f, found in findings.items() for action in found.unused}
    assert unused == set(NOT_EXERCISED)


def test_the_store_holds_only_this_table(run: Run) -> None:
    assert run.store.list("tables/") and all(p.startswith(table_root(TABLE)) for p in run.store.list("tables/"))


# --- the alarm evaluation and the IAM check themselves --------------------------------------------

TWO_OF_TWO = Alarm("A", "N", "M", (), "Maximum", 3600, 2, 2, 0.0, "GreaterThanThreshold")


def test_an_alarm_of_two_periods_needs_a_breach_in_both() -> None:
    assert alarm_transitions(TWO_OF_TWO, [(100, 1.0)], 0, 4 * HOUR) == []
    assert alarm_transitions(TWO_OF_TWO, [(100, 1.0), (HOUR + 5, 2.0)], 0, 4 * HOUR) == \
        [(2 * HOUR, "ALARM"), (3 * HOUR, "OK")]


def test_a_period_without_data_does_not_breach() -> None:
    assert alarm_transitions(TWO_OF_TWO, [(100, 1.0), (2 * HOUR + 5, 1.0)], 0, 4 * HOUR) == []


# --- the IAM check itself -------------------------------------------------------------------------

STATEMENTS = (
    {"Sid": "List", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b",
     "Condition": {"StringLikeIfExists": {"s3:prefix": ["p", "p/*"]}}},
    {"Sid": "Objects", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::b/p/*"},
)


def test_the_iam_check_refuses_an_object_outside_the_allowed_prefix() -> None:
    assert allowing_statement(STATEMENTS, Call("F", "s3:GetObject", "arn:aws:s3:::b/p/x")) == "Objects"
    assert allowing_statement(STATEMENTS, Call("F", "s3:GetObject", "arn:aws:s3:::b/q/x")) is None
    assert allowing_statement(STATEMENTS, Call("F", "s3:PutObject", "arn:aws:s3:::b/p/x")) is None


def test_the_iam_check_applies_the_listing_prefix_condition() -> None:
    assert allowing_statement(STATEMENTS, Call("F", "s3:ListBucket", "arn:aws:s3:::b", "p/tables/")) == "List"
    assert allowing_statement(STATEMENTS, Call("F", "s3:ListBucket", "arn:aws:s3:::b", None)) == "List"
    assert allowing_statement(STATEMENTS, Call("F", "s3:ListBucket", "arn:aws:s3:::b", "other/")) is None
