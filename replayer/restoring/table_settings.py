"""A restored table with the source's settings as they were at T: plan, then apply.

CreateTable takes most settings (``target.create_table_request``, the one place its arguments are
built); TTL, PITR, the resource policy and auto scaling are separate calls made after the table is
active. A setting that was recorded as unknown (its read was refused) is reported as not applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from changelog.errors import UsageError
from changelog.settings import SettingsVersion, history, settings_at
from changelog.store import Store
from changelog.timefmt import to_micros
from replayer.restoring.target import OPTIONAL_SETTINGS, create_table_request

_POLICY_KEEP = ("PolicyName", "ServiceNamespace", "ScalableDimension", "PolicyType",
                "TargetTrackingScalingPolicyConfiguration", "StepScalingPolicyConfiguration")
_TARGET_KEEP = ("ServiceNamespace", "ScalableDimension", "MinCapacity", "MaxCapacity", "SuspendedState")


def parse_without(text: str) -> frozenset[str]:
    """``--without ttl,pitr,...``: the named settings; UsageError naming the valid ones otherwise."""
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    valid = {*OPTIONAL_SETTINGS, "settings"}
    unknown = sorted(names - valid)
    if unknown:
        raise UsageError(f"--without: unknown setting {', '.join(unknown)}; choose from "
                         f"{', '.join(sorted(valid))}")
    return names


@dataclass(frozen=True)
class TablePlan:
    """Everything a restore target is created with, and what is left out and why."""

    request: dict[str, Any]
    ttl: dict[str, Any] | None
    pitr: dict[str, Any] | None
    resource_policy: str | None
    source_arn: str | None
    scalable_targets: tuple[dict[str, Any], ...]
    scaling_policies: tuple[dict[str, Any], ...]
    not_applied: tuple[str, ...]

    def lines(self) -> list[str]:
        """What would be applied, one setting a line (for --dry-run)."""
        request = self.request
        shown = {key: request[key] for key in request if key not in ("TableName",)}
        out = [f"  {key}: {json.dumps(value, sort_keys=True)}" for key, value in sorted(shown.items())]
        if self.ttl:
            out.append(f"  TimeToLive: {json.dumps(self.ttl, sort_keys=True)}")
        if self.pitr:
            out.append(f"  PointInTimeRecovery: {json.dumps(self.pitr, sort_keys=True)}")
        if self.resource_policy:
            out.append("  ResourcePolicy: (rewritten for the new table's ARN)")
        for target in self.scalable_targets:
            out.append(f"  ScalableTarget: {target['ResourceId']} {target['ScalableDimension']} "
                       f"{target.get('MinCapacity')}..{target.get('MaxCapacity')}")
        for policy in self.scaling_policies:
            out.append(f"  ScalingPolicy: {policy['ResourceId']} {policy['PolicyName']}")
        out.extend(f"  not applied: {note}" for note in self.not_applied)
        return out


def restore_plan(store: Store, table: str, name: str, meta: dict[str, Any], at: datetime, *,
                 without: frozenset[str] = frozenset(), with_later_indexes: bool = False) -> TablePlan:
    """The plan for restoring ``table`` as of ``at`` into a new table ``name``, from the store's history."""
    if "settings" in without:
        return plan_table(name, meta, None, None, without=without)
    versions = history(store, table)
    return plan_table(name, meta, settings_at(store, table, to_micros(at)), versions[-1] if versions else None,
                      without=without, with_later_indexes=with_later_indexes)


def _rename(resource_id: str, source: str, target: str) -> str:
    """``table/<source>[/index/<i>]`` as the same resource of the target table."""
    prefix = f"table/{source}"
    return f"table/{target}{resource_id[len(prefix):]}"


def plan_table(name: str, meta: dict[str, Any], at: SettingsVersion | None, latest: SettingsVersion | None, *,
               without: frozenset[str] = frozenset(), with_later_indexes: bool = False) -> TablePlan:
    """The target ``name`` as the source was at T (``at``); ``latest`` supplies later indexes if asked."""
    settings = dict(at.settings) if at is not None and "settings" not in without else {}
    notes = [f"{section} (unknown when observed: {why})" for section, why in
             (at.unknown().items() if at is not None and "settings" not in without else [])]
    description = settings.get("table") if isinstance(settings.get("table"), dict) else None
    if description is not None and "unknown" in description:
        description = None
    extra: tuple[dict[str, Any], ...] = ()
    definitions: tuple[dict[str, Any], ...] = ()
    if with_later_indexes and latest is not None and isinstance(latest.settings.get("table"), dict):
        now = latest.settings["table"]
        had = {i["IndexName"] for i in ((description or meta.get("description") or {})
                                        .get("GlobalSecondaryIndexes") or [])}
        extra = tuple(i for i in now.get("GlobalSecondaryIndexes") or [] if i["IndexName"] not in had)
        definitions = tuple(now.get("AttributeDefinitions") or [])
    request = create_table_request(name, meta, description, without=without, extra_indexes=extra,
                                   extra_definitions=definitions)
    source = meta["table_name"]
    indexes = {i["IndexName"] for i in request.get("GlobalSecondaryIndexes", [])}

    def usable(section: str, flag: str) -> Any:
        value = settings.get(section)
        if flag in without or not isinstance(value, dict) or "unknown" in value:
            return None
        return value

    ttl = usable("ttl", "ttl")
    ttl_spec = ({"Enabled": True, "AttributeName": ttl["AttributeName"]}
                if ttl and ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") else None)
    pitr = ((usable("pitr", "pitr") or {}).get("PointInTimeRecoveryDescription") or {})
    pitr_spec = None
    if pitr.get("PointInTimeRecoveryStatus") == "ENABLED":
        pitr_spec = {"PointInTimeRecoveryEnabled": True}
        if pitr.get("RecoveryPeriodInDays"):
            pitr_spec["RecoveryPeriodInDays"] = pitr["RecoveryPeriodInDays"]
    policy = settings.get("resource_policy")
    policy_text = (json.dumps(policy, sort_keys=True)
                   if "resource-policy" not in without and isinstance(policy, dict) and "unknown" not in policy
                   else None)
    if "tags" not in without and isinstance(settings.get("tags"), list) and settings["tags"]:
        request["Tags"] = settings["tags"]
    scaling = usable("autoscaling", "autoscaling") or {}

    def wanted(entry: dict[str, Any]) -> bool:
        # A target of an index the restored table does not have (added after T, not asked for) is skipped.
        parts = entry["ResourceId"].split("/")
        return len(parts) < 4 or parts[3] in indexes

    targets = tuple({**{k: t[k] for k in _TARGET_KEEP if k in t},
                     "ResourceId": _rename(t["ResourceId"], source, name)}
                    for t in scaling.get("targets", []) if wanted(t))
    policies = tuple({**{k: p[k] for k in _POLICY_KEEP if k in p},
                      "ResourceId": _rename(p["ResourceId"], source, name)}
                     for p in scaling.get("policies", []) if wanted(p))
    regions = sorted(str(replica.get("RegionName")) for replica in (description or {}).get("Replicas") or []
                     if isinstance(replica, dict))
    if regions:  # none when "settings" is left out: there is no description then
        # CreateTable makes a table in one region; replicas are added one UpdateTable at a time.
        notes.append(f"global table replicas in {', '.join(regions)} (the restored table is in this region "
                     "only: add replicas with UpdateTable once it is filled)")
    if at is None and "settings" not in without:
        notes.append("settings (none recorded for this table: keys, indexes and billing mode only; "
                     "run bootstrap or let the compactor record them)")
    return TablePlan(request, ttl_spec, pitr_spec, policy_text,
                     (description or {}).get("TableArn"), targets, policies, tuple(notes))


def _retarget(value: Any, source: str | None, target: str) -> Any:
    """``value`` with every string naming the source ARN (or a resource under it) naming ``target``."""
    if isinstance(value, dict):
        return {key: _retarget(inner, source, target) for key, inner in value.items()}
    if isinstance(value, list):
        return [_retarget(inner, source, target) for inner in value]
    if source and isinstance(value, str) and (value == source or value.startswith(source + "/")):
        return target + value[len(source):]
    return value


def apply_after_create(dynamodb: Any, autoscaling: Any, plan: TablePlan) -> None:
    """The settings CreateTable does not take: TTL, PITR, resource policy, auto scaling."""
    name = plan.request["TableName"]
    if plan.ttl:
        dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=plan.ttl)
    if plan.pitr:
        dynamodb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification=plan.pitr)
    if plan.resource_policy:
        arn = dynamodb.describe_table(TableName=name)["Table"]["TableArn"]
        # The policy names the source table's ARN (and its indexes and stream under it): the copy's own.
        text = json.dumps(_retarget(json.loads(plan.resource_policy), plan.source_arn, arn), sort_keys=True)
        dynamodb.put_resource_policy(ResourceArn=arn, Policy=text)
    for target in plan.scalable_targets:
        autoscaling.register_scalable_target(**target)
    for policy in plan.scaling_policies:
        autoscaling.put_scaling_policy(**policy)
