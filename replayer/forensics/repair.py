"""Surgical repair: put every item changed in (from, to] back to its state at ``from``, nothing else.

The plan is the diff between the state at ``from`` and the state at ``to``: items created in the
window are deleted, items deleted are re-created, items modified are put back. A later legitimate
write must never be clobbered, so by default each write is guarded twice: a consistent read skips
items that no longer equal their state at ``to``, and the write itself carries a condition that
the item still equals that state (every attribute ``=`` its value, ``attribute_not_exists`` for
attributes it must not have, or ``attribute_not_exists(<partition key>)`` for an item that must be
absent), which closes the race between the read and the write for every attribute the item had at
``to``; an attribute another writer adds in between is not seen (a condition cannot say "no other
attribute"; docs/operations.md says so). A failed condition is a skip, not an error. ``force``
writes unconditionally.

An item removed in the window whose state at ``from`` has expired under the target's TTL is not
re-created (``Expiry``): DynamoDB would delete it again, and expired data (often kept no longer on
purpose) would be readable until it did. ``recreate_expired`` re-creates it all the same.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from changelog.codec import base64_to_binaries, binaries_to_base64
from changelog.errors import TableNotFound
from changelog.meta import read_meta
from changelog.store import Store
from changelog.timefmt import format_time, from_micros
from replayer.forensics.attrdiff import items_equal
from replayer.forensics.diff import StateDiff, diff_states
from replayer.restoring.target import key_names, ttl_attribute

RETRYABLE = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "LimitExceededException", "TransactionConflictException",
})
# DynamoDB refuses condition expressions over 4 KB; beyond it the consistent read is the only guard.
MAX_EXPRESSION = 4000
ACTIONS = ("recreate", "delete", "restore")
SKIP_CHANGED = "changed after the window (live item differs from its state at --to)"
SKIP_REPAIRED = "already repaired (live item holds its state at --from)"
# DynamoDB's TTL leaves alone an item whose expiry time is more than five years in the past.
TTL_HORIZON_S = 5 * 365 * 86_400


@dataclass(frozen=True)
class Expiry:
    """The target table's TTL (``attribute``) as DynamoDB applies it at ``now_s`` (epoch seconds):
    an item whose attribute is a number of seconds before then, and at most five years before, has
    expired."""

    attribute: str
    now_s: float

    def passed(self, item: Mapping[str, Any] | None) -> str | None:
        """Why ``item`` has expired (its attribute and expiry time), or None when it has not."""
        value = (item or {}).get(self.attribute)
        if not isinstance(value, dict) or "N" not in value:
            return None  # TTL ignores an item without the attribute, or with one that is not a number
        seconds = Decimal(value["N"])
        if not self.now_s - TTL_HORIZON_S <= seconds < self.now_s:
            return None
        moment = format_time(from_micros(int(seconds * 1_000_000)))
        return (f"expired ({self.attribute} = {moment}, before now): not re-created, DynamoDB's TTL would "
                "delete it again (--recreate-expired re-creates it)")


@dataclass(frozen=True)
class RepairAction:
    """One item to put back: ``restore`` is its state at ``from`` (None: delete it), ``expected`` at ``to``.

    ``action`` is ``recreate`` (deleted in the window), ``delete`` (created in the window) or
    ``restore`` (modified in the window).
    """

    item_key: str
    key: dict[str, Any]
    action: str
    restore: dict[str, Any] | None
    expected: dict[str, Any] | None


@dataclass(frozen=True)
class RepairPlan:
    """Every repair action for one window, ordered by key."""

    table: str
    from_us: int
    to_us: int
    actions: tuple[RepairAction, ...]
    # The items' key schema (meta.json's key_schema); empty when the store has no meta.json.
    key_schema: tuple[dict[str, str], ...] = ()

    def counts(self) -> dict[str, int]:
        """Number of actions of each kind."""
        return {name: sum(1 for a in self.actions if a.action == name) for name in ACTIONS}


@dataclass(frozen=True)
class RepairResult:
    """What a repair did: keys repaired, skipped (with why) and failed (with the error)."""

    repaired: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    failed: tuple[tuple[str, str], ...]


def plan_repair(store: Store, table: str, from_us: int, to_us: int) -> RepairPlan:
    """The actions that put every item changed in (from, to] back to its state at ``from``.

    Raises UsageError for an inverted window and TimeOutOfRange outside coverage (as ``diff``).
    """
    plan = plan_from_diff(diff_states(store, table, from_us, to_us))
    try:
        schema = read_meta(store, table).get("key_schema") or []
    except TableNotFound:  # captured without meta.json: the target's own key is all there is to go by
        schema = []
    return replace(plan, key_schema=tuple(schema))


def check_target(plan: RepairPlan, client: Any, target: str) -> str:
    """The live table's partition key; refuses (before anything is written) a table that does not
    exist (TargetMissing) or is keyed otherwise than the plan's items (TargetKeyMismatch)."""
    return key_names(client, target, {"key_schema": list(plan.key_schema)} if plan.key_schema else None)[0]


def plan_from_diff(diff: StateDiff) -> RepairPlan:
    """The repair plan that undoes ``diff``: one action per item change.

    ``diff`` must cover every item: a plan from a narrowed diff would leave the other items unrepaired.
    """
    if diff.where is not None:
        raise ValueError(f"a repair plan needs the whole diff, not one narrowed by {diff.where!r}")
    actions = []
    for change in diff.all():
        kind = {"added": "delete", "removed": "recreate", "changed": "restore"}[change.kind]
        actions.append(RepairAction(change.item_key, change.key, kind, change.before, change.after))
    return RepairPlan(diff.table, diff.from_us, diff.to_us, tuple(actions))


def condition_for(action: RepairAction, partition_key: str) -> dict[str, Any]:
    """ConditionExpression and its names/values: the live item still equals ``action.expected``.

    Returns ``{}`` when the expression would exceed DynamoDB's size limit.
    """
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    if action.expected is None:
        names["#k"] = partition_key
        return {"ConditionExpression": "attribute_not_exists(#k)", "ExpressionAttributeNames": names}
    clauses = []
    for index, (name, value) in enumerate(action.expected.items()):
        names[f"#a{index}"] = name
        values[f":v{index}"] = base64_to_binaries(value)
        clauses.append(f"#a{index} = :v{index}")
    absent = sorted(set(action.restore or {}) - set(action.expected))
    for index, name in enumerate(absent):
        names[f"#x{index}"] = name
        clauses.append(f"attribute_not_exists(#x{index})")
    expression = " AND ".join(clauses)
    if len(expression) > MAX_EXPRESSION:
        return {}
    out: dict[str, Any] = {"ConditionExpression": expression, "ExpressionAttributeNames": names}
    if values:
        out["ExpressionAttributeValues"] = values
    return out


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "ClientError"))


def _with_retries(call: Callable[[], Any], attempts: int, sleep: Callable[[float], None]) -> Any:
    """Run ``call``, retrying throttling and transient errors with exponential backoff and full jitter."""
    for attempt in range(attempts):
        try:
            return call()
        except ClientError as exc:
            if _error_code(exc) not in RETRYABLE or attempt == attempts - 1:
                raise
            sleep(random.uniform(0, min(5.0, 0.05 * 2**attempt)))
    raise AssertionError("unreachable")


def apply_action(client: Any, target: str, action: RepairAction, partition_key: str, *, force: bool = False,
                 attempts: int = 8, sleep: Callable[[float], None] = time.sleep,
                 precheck: bool = True, dry_run: bool = False, expiry: Expiry | None = None) -> str | None:
    """Write one action to ``target``; returns None when written, else why it was skipped.

    ``dry_run`` makes the same read and applies the same skip rule, and stops short of the write:
    its None means "would be written". ``expiry`` is the target's TTL: a re-creation it has expired
    is skipped. Raises ClientError for a failure other than a failed condition (after retries).
    """
    expired = expiry.passed(action.restore) if expiry is not None and action.action == "recreate" else None
    if expired is not None:
        return expired
    if not force and (precheck or dry_run):
        live = _with_retries(
            lambda: client.get_item(TableName=target, Key=base64_to_binaries(action.key), ConsistentRead=True),
            attempts, sleep,
        ).get("Item")
        now = binaries_to_base64(live) if live is not None else None
        if not items_equal(now, action.expected):
            # A repair run before (or anyone) already put it back: nothing to do, and no one to blame.
            return SKIP_REPAIRED if items_equal(now, action.restore) else SKIP_CHANGED
    if dry_run:
        return None
    guard = {} if force else condition_for(action, partition_key)
    if action.restore is None:
        request = {"TableName": target, "Key": base64_to_binaries(action.key), **guard}
        call: Callable[[], Any] = lambda: client.delete_item(**request)  # noqa: E731
    else:
        request = {"TableName": target, "Item": base64_to_binaries(action.restore), **guard}
        call = lambda: client.put_item(**request)  # noqa: E731
    try:
        _with_retries(call, attempts, sleep)
    except ClientError as exc:
        if _error_code(exc) == "ConditionalCheckFailedException":
            return "changed after the window (condition failed at write time)"
        raise
    return None


def execute_repair(plan: RepairPlan, client: Any, target: str, *, force: bool = False, workers: int = 8,
                   attempts: int = 8, sleep: Callable[[float], None] = time.sleep,
                   dry_run: bool = False, recreate_expired: bool = False,
                   clock: Callable[[], float] = time.time) -> RepairResult:
    """Apply every action of ``plan`` to live table ``target`` in a thread pool.

    Raises TargetError when the target does not exist. Never raises for one item: each ends
    repaired, skipped or failed. ``dry_run`` runs the same checks (target, its TTL, consistent read
    of every item, skip rules) and writes nothing: its result is the real run's, barring writes in
    between. Unless ``recreate_expired``, an item the target's TTL has expired at ``clock()`` is not
    re-created (``Expiry``).
    """
    partition_key = check_target(plan, client, target)
    attribute = None if recreate_expired else ttl_attribute(client, target)
    expiry = Expiry(attribute, clock()) if attribute is not None else None

    def one(action: RepairAction) -> tuple[str, str, str]:
        try:
            reason = apply_action(client, target, action, partition_key, force=force, attempts=attempts, sleep=sleep,
                                  dry_run=dry_run, expiry=expiry)
        except ClientError as exc:
            return (action.item_key, "failed", _error_code(exc))
        return (action.item_key, "skipped", reason) if reason else (action.item_key, "repaired", "")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes = list(pool.map(one, plan.actions))
    return RepairResult(
        repaired=tuple(k for k, status, _ in outcomes if status == "repaired"),
        skipped=tuple((k, why) for k, status, why in outcomes if status == "skipped"),
        failed=tuple((k, why) for k, status, why in outcomes if status == "failed"),
    )
