"""The history of a table's settings: what it was configured as, readable as "settings at T".

A restore that copies only keys and items is not the table: encryption, TTL, stream,
PITR, deletion protection, table class, throughput, indexes, tags, resource policy and auto scaling
are captured here, at bootstrap and whenever the compactor sees them change.

One object per observed change, ``tables/<t>/settings/<observed µs>-<sha256>.json``, written once
with a conditional write: the object is complete when it appears (write-first is the object itself,
publishing is its name), two compactors observing the same settings at the same microsecond settle
on the same bytes, and two observing different settings both land (history keeps both). The
settings at T are those of the newest version observed at or before T.

A section that could not be read (a missing permission) is recorded as ``{"unknown": reason}``,
never guessed and never a crash: a restore reports it as not applied.

Every job that reads the table observes through ``observe_or_report``: bootstrap, every compaction
(the scheduled compactor and ``compact``) and ``consume``. A read that fails for another reason
(throttled after retries, the network, a damaged history) must not stop the job: it is one line,
and nothing is recorded, so the version in force stays the last one observed until the next
observation succeeds. (Recording the sections as unknown instead would claim the settings became
unknowable for a while, and a restore into that while would drop them.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from changelog.damage import damaged, micros, parse_json_object
from changelog.errors import RewindError, SettingsUnknown
from changelog.layout import content_digest, settings_path, settings_root
from changelog.store import Store
from changelog.timefmt import format_time, from_micros

SECTIONS = ("table", "ttl", "pitr", "tags", "resource_policy", "autoscaling")
UNKNOWN = "unknown"

# Fields DescribeTable and friends report about this instance of the table (identity, sizes, status,
# timestamps, alarm names), not about how it is configured: they change without the settings changing.
_VOLATILE = frozenset({
    "TableStatus", "CreationDateTime", "TableSizeBytes", "ItemCount", "TableId", "LatestStreamLabel",
    "LatestStreamArn", "NumberOfDecreasesToday", "LastIncreaseDateTime", "LastDecreaseDateTime", "IndexStatus",
    "IndexSizeBytes", "IndexArn", "Backfilling", "InaccessibleEncryptionDateTime", "LastUpdateDateTime",
    "LastUpdateToPayPerRequestDateTime", "EarliestRestorableDateTime", "LatestRestorableDateTime", "CreationTime",
    "ScalableTargetARN", "PolicyARN", "Alarms", "ResponseMetadata", "RevisionId", "ArchivalSummary",
    "RestoreSummary",
})
_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
_NO_POLICY = frozenset({"PolicyNotFoundException"})


def stable(value: Any, parent: str = "") -> Any:
    """The configuration part of an AWS response: volatile fields dropped, times as text, lists kept."""
    if isinstance(value, dict):
        return {key: stable(inner, key) for key, inner in value.items()
                if key not in _VOLATILE and not (parent == "WarmThroughput" and key == "Status")}
    if isinstance(value, list):
        return [stable(inner, parent) for inner in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@dataclass(frozen=True)
class SettingsVersion:
    """One observed version of a table's settings."""

    observed_us: int
    settings: Mapping[str, Any]
    path: str

    def unknown(self) -> dict[str, str]:
        """Sections that could not be read when observed, with why."""
        return {name: str(section[UNKNOWN]) for name, section in self.settings.items()
                if isinstance(section, dict) and UNKNOWN in section}


def _section(read: Callable[[], Any], what: str) -> Any:
    """One section of the settings; a refused call is recorded as unknown (the rest is still captured)."""
    from botocore.exceptions import ClientError

    from changelog.aws import translate

    try:
        return stable(read())
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _DENIED or status == 403:  # a 403 is a refusal whatever body came with it
            return {UNKNOWN: f"{code if code in _DENIED else 'AccessDenied'} on {what}"}
        if code in _NO_POLICY:
            return None
        raise translate(exc, f"reading {what}") from None


def capture(table: str, dynamodb: Any, autoscaling: Any) -> dict[str, Any]:
    """Every setting of ``table`` as AWS reports it now (sections that were refused: unknown)."""
    description = _section(lambda: dynamodb.describe_table(TableName=table)["Table"], "DescribeTable")
    arn = description.get("TableArn") if isinstance(description, dict) else None

    def tags() -> list[dict[str, str]]:
        if not arn:
            raise RewindError(f"DescribeTable of {table!r} gave no ARN to list tags of")
        pages = dynamodb.get_paginator("list_tags_of_resource").paginate(ResourceArn=arn)
        return sorted((tag for page in pages for tag in page.get("Tags", [])), key=lambda t: t["Key"])

    def policy() -> Any:
        return json.loads(dynamodb.get_resource_policy(ResourceArn=arn)["Policy"]) if arn else None

    def scaling() -> dict[str, Any]:
        resources = [f"table/{table}"] + [f"table/{table}/index/{index['IndexName']}" for index in
                                          (description or {}).get("GlobalSecondaryIndexes") or []]
        targets = autoscaling.describe_scalable_targets(ServiceNamespace="dynamodb", ResourceIds=resources)
        policies = [policy for resource in resources for policy in autoscaling.describe_scaling_policies(
            ServiceNamespace="dynamodb", ResourceId=resource).get("ScalingPolicies", [])]
        key = ("ResourceId", "ScalableDimension")
        return {
            "targets": sorted(targets.get("ScalableTargets", []), key=lambda t: tuple(t[k] for k in key)),
            "policies": sorted(policies, key=lambda p: (p["ResourceId"], p["ScalableDimension"], p["PolicyName"])),
        }

    return {
        "table": description,
        "ttl": _section(lambda: dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"],
                        "DescribeTimeToLive"),
        "pitr": _section(lambda: dynamodb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"],
                         "DescribeContinuousBackups"),
        "tags": _section(tags, "ListTagsOfResource"),
        "resource_policy": _section(policy, "GetResourcePolicy"),
        "autoscaling": _section(scaling, "application-autoscaling Describe*"),
    }


def is_settings_record(path: str) -> bool:
    """Whether a path under a table's settings/ names a settings record."""
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".json") and name[:16].isdigit()


def read_settings_record(store: Store, path: str) -> SettingsVersion:
    """One settings record; DamagedStore (one line naming it) when it is not a sound one.

    Its name carries the digest of its bytes (``layout.settings_path``): a changed byte is found
    even when the JSON still parses."""
    data = store.read(path)
    digest = path.rsplit("/", 1)[-1][17:33]
    if len(digest) == 16 and content_digest(data)[:16] != digest:
        raise damaged(store, path, "does not match the digest in its name (its bytes changed)")
    document = parse_json_object(store, path, data)
    try:
        observed_us = micros(document["observed_us"], "observed_us")
        settings = document["settings"]
        if not isinstance(settings, dict):
            raise TypeError("settings is not a JSON object")
    except (KeyError, TypeError, ValueError) as exc:
        raise damaged(store, path, f"is not a sound settings record ({type(exc).__name__}: {exc})") from None
    return SettingsVersion(observed_us, settings, path)


def history(store: Store, table: str) -> list[SettingsVersion]:
    """Every recorded settings version of ``table``, oldest first."""
    versions = [read_settings_record(store, path) for path in store.list(settings_root(table) + "/")
                if is_settings_record(path)]
    return sorted(versions, key=lambda v: (v.observed_us, v.path))


def settings_at(store: Store, table: str, at_us: int) -> SettingsVersion | None:
    """The settings in force at ``at_us`` (newest observed at or before it); None when none recorded.

    Refuses (RewindError) when settings are recorded but none before ``at_us``: what the table
    looked like then was never observed, and a later version would be a guess.
    """
    versions = history(store, table)
    if not versions:
        return None
    before = [v for v in versions if v.observed_us <= at_us]
    if not before:
        first = format_time(from_micros(versions[0].observed_us))
        raise SettingsUnknown(f"the settings of {table!r} were first recorded at {first}, after "
                              f"{format_time(from_micros(at_us))}: restore to a later time, or pass "
                              "--without settings to create the table from its keys and indexes only")
    return before[-1]


def record(store: Store, table: str, settings: Mapping[str, Any], observed_us: int) -> SettingsVersion | None:
    """Record ``settings`` as observed at ``observed_us`` unless they equal the newest recorded version.

    Returns the new version, or None when nothing changed.
    """
    versions = history(store, table)
    if versions and versions[-1].settings == settings:
        return None
    data = json.dumps({"table_name": table, "observed_us": observed_us, "settings": settings},
                      indent=2, sort_keys=True).encode()
    path = settings_path(table, observed_us, data)
    store.write(path, data, if_absent=True)
    return SettingsVersion(observed_us, json.loads(data)["settings"], path)


def wall_clock_us() -> int:
    """When an observation is stamped (the one clock settings are read by; a simulation replaces it)."""
    import time

    return time.time_ns() // 1000


def observe(store: Store, table: str, *, dynamodb: Any = None, autoscaling: Any = None,
            now_us: int | None = None) -> SettingsVersion | None:
    """Capture ``table``'s settings now and record them if they changed; the new version or None."""
    from changelog.aws import aws_boundary, client

    with aws_boundary(f"reading the settings of table {table!r}"):
        settings = capture(table, dynamodb or client("dynamodb"), autoscaling or client("application-autoscaling"))
    return record(store, table, settings, now_us if now_us is not None else wall_clock_us())


def observe_or_report(store: Store, table: str, report: Callable[[str], None], *, dynamodb: Any = None,
                      autoscaling: Any = None) -> SettingsVersion | None:
    """``observe`` for a job whose own work must go on: a failure is one line to ``report``, nothing recorded.

    Only typed errors are reported (AWS refused or unreachable, a damaged settings record, the store
    failing); a bug still raises.
    """
    try:
        return observe(store, table, dynamodb=dynamodb, autoscaling=autoscaling)
    except RewindError as exc:
        report(f"the settings of table {table!r} were not recorded this time ({exc})")
        return None
