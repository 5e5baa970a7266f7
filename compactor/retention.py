"""Retention: dropping old change files and snapshots without ever losing a restore point that is kept.

Policy grammar (``--keep``), entries separated by commas, each at most once::

    daily=<N>d        keep the newest snapshot of each of the last N UTC days       (default 0)
    monthly=<N>m      keep the newest snapshot of each of the last N UTC months     (default 0)
    changes=<N><unit> keep every change of the last N units; unit h, d, w, m (calendar months) or y
                      (required: deleting history is never implied)

Example: ``daily=35d,monthly=24m,changes=400d``.

What stays restorable: every moment from the new floor to the watermark ("now"), where the floor is
the time of the base snapshot S0, the newest snapshot at or before the change horizon
H = now - changes (or at or before the existing floor, if an earlier run went further). Then:

- a change file is deleted only if S0's manifest lists it as consumed (S0's set accumulates every
  file its ancestors consumed) and every row in it is at or before S0's time: S0 already holds the
  effect of each such row, and no restore at or after S0 reads them. Every other file stays.
- snapshots before S0 are deleted: no kept moment can use them, except a bootstrap whose moment S0
  does not carry (``changelog.state.manifest_bases``) while it clears a gap (or quarantined record)
  that no base S0 carries clears: deleting it would cut every kept moment after that loss. A bootstrap
  whose losses a later base S0 carries also clears is deleted: it serves no kept moment.
  Snapshots after S0 are a cache for kept moments: the daily/monthly policy chooses which of them
  stay, plus always S0, the newest snapshot, every bootstrap (export/scan) snapshot after S0 (the
  base for the moments after it) and the next bases: the newest snapshot of each day after S0 (of
  each eighth of the changes window, when that is longer), so that S0 keeps up with the horizon
  (``next_bases``) instead of staying behind with every change since.
- Daily or monthly snapshots older than S0 are NOT kept as "archived" exact-moment restore points:
  with the change files gone, their exactness at their own moment would depend on late files, and
  no reader can ask for a moment before the floor. To keep monthly restore points for two years,
  keep changes for two years (``changes=24m``): files compress well, and every second stays restorable.
- ``tables/<t>/retention.json`` (the floor ``status`` reports) is written before anything is deleted,
  so no reader is promised a moment whose files are going. The floor never moves backwards.
- a snapshot is deleted manifest first, then its parts: a crash leaves an invisible directory, never
  a visible half snapshot. Objects of snapshot directories that no manifest lists and that are older
  than an hour (a crashed or losing writer's parts, with or without a manifest beside them) are
  removed too.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow.compute as pc
import pyarrow.parquet as pq

from changelog.integrity import verify_for_read
from changelog.layout import parse_change_file_name, partition_of, retention_path, table_root
from changelog.ledger import record_removed
from changelog.record import STREAM_SEQUENCE_WIDTH
from changelog.restorable import Base, Loss, bridged
from changelog.snapshot import MANIFEST, Manifest, list_manifests, write_removal
from changelog.state import BOOTSTRAP_KINDS, change_files, coverage, manifest_bases, retention_floor, snapshot_dirs
from changelog.store import ObjectMissing, Store
from changelog.timefmt import from_micros, to_micros
from compactor.policy import CHANGE_UNITS, Policy

DAY_US = 86_400_000_000
NEXT_BASE_STEPS = 8
ORPHAN_AGE_SECONDS = 3600
def _minus_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    following = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    last_day = (following - timedelta(days=1)).day
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def horizon_us(now_us: int, policy: Policy) -> int:
    """The change horizon: ``now`` minus the policy's ``changes`` duration (calendar months and years)."""
    now = from_micros(now_us)
    unit, count = policy.changes_unit, policy.changes
    if unit == "m":
        return to_micros(_minus_months(now, count))
    if unit == "y":
        return to_micros(_minus_months(now, 12 * count))
    return to_micros(now - timedelta(**{CHANGE_UNITS[unit]: count}))


def selected_by_policy(manifests: list[tuple[str, Manifest]], now_us: int, policy: Policy) -> set[str]:
    """Manifest paths the daily/monthly rules keep: the newest snapshot of each recent day and month."""
    now = from_micros(now_us)
    today = now.date().toordinal()
    this_month = now.year * 12 + now.month - 1
    newest_of: dict[tuple[str, int], str] = {}
    for path, manifest in manifests:  # oldest first, so the last one seen per period is the newest
        moment = manifest.snapshot_time
        if manifest.snapshot_time_us > now_us:
            continue
        day = moment.date().toordinal()
        month = moment.year * 12 + moment.month - 1
        if today - day < policy.daily:
            newest_of[("day", day)] = path
        if this_month - month < policy.monthly:
            newest_of[("month", month)] = path
    return set(newest_of.values())


@dataclass(frozen=True)
class ExpirePlan:
    """Everything one expire run would do; ``apply_expire`` carries it out."""

    table: str
    policy: Policy
    now_us: int | None
    horizon_us: int | None
    base_snapshot: str | None
    floor_us: int | None
    previous_floor_us: int | None
    keep_snapshots: tuple[str, ...]
    drop_snapshots: tuple[str, ...]
    drop_changes: tuple[str, ...]
    drop_orphans: tuple[str, ...]
    sizes: dict[str, int]

    def bytes_of(self, paths: tuple[str, ...]) -> int:
        """Total size of the given objects."""
        return sum(self.sizes.get(path, 0) for path in paths)

    def snapshot_files(self) -> tuple[str, ...]:
        """Every object of the snapshots to drop (manifests and parts)."""
        prefixes = tuple(path.rsplit("/", 1)[0] + "/" for path in self.drop_snapshots)
        return tuple(p for p in self.sizes if p.startswith(prefixes)) if prefixes else ()


def next_bases(manifests: list[tuple[str, Manifest]], base: Manifest | None, horizon: int,
               now_us: int) -> set[str]:
    """Snapshots after the base kept so that later runs find a base close behind their horizon.

    The base is the newest snapshot at or before the horizon, and the horizon moves on with every run;
    a snapshot after it that the daily/monthly rules do not keep would be gone by the time the
    horizon passes it, and the base would stay behind (for ever when the policy keeps no daily
    snapshots right after the horizon), keeping every change since. So the newest snapshot of each
    step after the base is kept: a step is a day, or an eighth of the changes window when that is
    longer, which bounds both the extra snapshots (about eight) and how far the floor lags its horizon.
    """
    step = max(DAY_US, (now_us - horizon) // NEXT_BASE_STEPS)
    newest_of: dict[int, str] = {}
    for path, manifest in manifests:  # oldest first: the last one seen per step is the newest
        moment = manifest.snapshot_time_us
        if (base is None or moment > base.snapshot_time_us) and moment <= now_us:
            newest_of[moment // step] = path
    return set(newest_of.values())


def _max_event_us(store: Store, path: str) -> int | None:
    verify_for_read(store, [path])  # what expire deletes must not be decided from a damaged file
    table = pq.read_table(io.BytesIO(store.read(path)), columns=["event_time"])
    if table.num_rows == 0:
        return None
    latest = max(table.column("event_time").to_pylist())
    return to_micros(latest)


def _partition_end_us(path: str) -> int:
    day, hour = path.split("/")[-3:-1]
    start = datetime.strptime(f"{day[3:]} {hour[5:]}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    return to_micros(start + timedelta(hours=1)) - 1


# A Kinesis producer's re-send carries a new Kinesis sequence number: readers tell it from a later
# change of the same moment only beside its first copy. A stream keeps records 24 hours by default,
# so the hour partitions holding Kinesis rows stay this long after they end.
RESEND_WINDOW_US = 25 * 3_600_000_000


def deletable_changes(store: Store, table: str, base: Manifest, now_us: int | None = None) -> list[str]:
    """Change files of hour partitions whose every file ``base`` consumed, every row at or before its time;
    one holding Kinesis rows only once it ended ``RESEND_WINDOW_US`` before ``now_us`` (when given).

    A partition goes whole or not at all: a late file kept in it may hold a copy of a record whose
    first copy sits in a consumed file, and readers keep the first copy (``record.first_copies``).
    A re-send arriving after its first copy was deleted would count as a change of its own.
    """
    consumed = set(base.consumed_files)
    partitions: dict[str, list[str]] = {}
    for path in change_files(store, table):
        partitions.setdefault(partition_of(path), []).append(path)
    found = []
    for paths in partitions.values():
        if any(path not in consumed for path in paths):
            continue
        if now_us is not None and any(_partition_end_us(path) > now_us - RESEND_WINDOW_US and _kinesis_rows(store, path)
                                      for path in paths):
            continue
        if all(_partition_end_us(path) <= base.snapshot_time_us or _covered(store, path, base) for path in paths):
            found.extend(paths)
    return found


def _kinesis_rows(store: Store, path: str) -> bool:
    """Whether a change file holds Kinesis rows (their sequence numbers are longer than a stream's).

    Its name says so when its first or last row is one; a merged hour of both kinds may hold them
    between, so the sequence numbers are read otherwise (only for the hours of the last day).
    """
    name = parse_change_file_name(path)
    if name is None or max(len(name.first_seq), len(name.last_seq)) > STREAM_SEQUENCE_WIDTH:
        return True
    verify_for_read(store, [path])
    numbers = pq.read_table(io.BytesIO(store.read(path)), columns=["sequence_number"]).column("sequence_number")
    longest = pc.max(pc.utf8_length(numbers)).as_py()
    return longest is not None and longest > STREAM_SEQUENCE_WIDTH


def _covered(store: Store, path: str, base: Manifest) -> bool:
    latest = _max_event_us(store, path)
    return latest is None or latest <= base.snapshot_time_us


def orphan_files(store: Store, table: str, *, older_than_s: float = ORPHAN_AGE_SECONDS,
                 clock: Callable[[], float] = time.time) -> list[str]:
    """Objects of snapshot directories that no manifest lists, untouched for ``older_than_s`` seconds.

    Two kinds: every object of a directory without a manifest (a crashed writer), and, in a
    directory with one, the parts its manifest does not list (a killed or losing compactor that
    wrote parts for the same moment). Nothing younger than the age is touched: a live compactor
    may still be writing, and it checks its parts are all there right before it publishes.
    """
    found: list[str] = []
    now = clock()
    for directory in snapshot_dirs(store, table):
        times = store.modified_times(directory + "/")
        manifest_path = f"{directory}/{MANIFEST}"
        listed: set[str] = set()
        if manifest_path in times:
            try:
                manifest = Manifest.from_json(store.read(manifest_path))
            except ObjectMissing:  # withdrawn since the listing: judge the directory next time
                continue
            listed = {manifest_path} | {f"{directory}/{part}" for part in manifest.parts}
        found.extend(path for path, modified in sorted(times.items())
                     if path not in listed and now - modified >= older_than_s)
    return found


def plan_expire(store: Store, table: str, policy: Policy, *, now_us: int | None = None,
                clock: Callable[[], float] = time.time) -> ExpirePlan:
    """Work out what ``policy`` deletes; ``now_us`` defaults to the watermark (latest restorable time)."""
    covered = coverage(store, table) if now_us is None else None
    if covered is not None:
        now_us = covered.latest_us
    previous_floor = retention_floor(store, table)
    sizes = store.sizes(table_root(table) + "/")
    orphans = tuple(orphan_files(store, table, clock=clock))
    manifests = list_manifests(store, table)
    if now_us is None:
        return ExpirePlan(table, policy, None, None, None, previous_floor, previous_floor,
                          tuple(p for p, _ in manifests), (), (), orphans, sizes)
    horizon = horizon_us(now_us, policy)
    limit = max(horizon, previous_floor) if previous_floor is not None else horizon
    candidates = [(path, m) for path, m in manifests if m.snapshot_time_us <= limit]
    base_path, base = candidates[-1] if candidates else (None, None)
    chosen = selected_by_policy(manifests, now_us, policy) | next_bases(manifests, base, horizon, now_us)
    keep, drop = [], []
    losses: tuple[Loss, ...] | None = None
    for index, (path, manifest) in enumerate(manifests):
        if base is not None and manifest.snapshot_time_us < base.snapshot_time_us:
            own = set(manifest_bases(manifest)) - set(manifest_bases(base))
            if own and losses is None:
                losses = (covered or coverage(store, table)).losses
            if not own or _clears_nothing_more(own, base, losses or ()):
                drop.append(path)
            else:
                keep.append(path)
        elif (path == base_path or manifest.kind in BOOTSTRAP_KINDS or path in chosen
              or index == len(manifests) - 1):
            keep.append(path)
        else:
            drop.append(path)
    changes = tuple(deletable_changes(store, table, base, now_us)) if base is not None else ()
    floor = previous_floor
    if base is not None:
        floor = base.snapshot_time_us if floor is None else max(floor, base.snapshot_time_us)
    return ExpirePlan(table, policy, now_us, horizon, base_path, floor, previous_floor, tuple(keep), tuple(drop),
                      changes, orphans, sizes)


def _clears_nothing_more(bases: set[Base], base: Manifest, losses: tuple[Loss, ...]) -> bool:
    """Whether every loss the whole copies ``bases`` clear is cleared for the kept moments by ``base`` too.

    Every kept moment is at or after ``base``; a loss ``base`` carries a later whole copy for needs
    nothing older, so the older bootstrap would be kept for ever and serve no moment.
    """
    cleared = [loss for loss in losses if bridged(loss, list(bases))]
    return all(bridged(loss, manifest_bases(base), base.snapshot_time_us) for loss in cleared)


def delete_snapshot(store: Store, manifest_path: str, manifest: Manifest, *, reason: str) -> bool:
    """Delete one published snapshot: the manifest first (it disappears at once), then its parts.

    A removal record (the manifest's digest and ``reason``) is written before anything is deleted,
    so the manifest chain stays verifiable and only a removal by hand reads as tampering. Returns
    False, deleting nothing, when the manifest is already gone: a bootstrap and the compaction that
    published the snapshot may both withdraw it at once.
    """
    directory = manifest_path.rsplit("/", 1)[0]
    try:
        write_removal(store, manifest.table_name, manifest_path, reason)
    except ObjectMissing:
        return False
    store.delete(manifest_path)
    store.delete_many([f"{directory}/{part}" for part in manifest.parts])
    return True


def write_floor(store: Store, table: str, floor_us: int | None, policy: Policy) -> None:
    """Write ``retention.json``: the earliest restorable time ``status`` reports from now on."""
    body = {"restorable_from_us": floor_us, "policy": policy.text, "updated_at": datetime.now(UTC).isoformat()}
    store.write(retention_path(table), json.dumps(body, indent=1).encode("utf-8"))


def apply_expire(store: Store, plan: ExpirePlan) -> None:
    """Carry out a plan: the floor first, then snapshots (manifest first), change files, orphans."""
    write_floor(store, plan.table, plan.floor_us, plan.policy)
    manifests = dict(list_manifests(store, plan.table))
    for path in plan.drop_snapshots:
        if path in manifests:
            delete_snapshot(store, path, manifests[path], reason=f"expired by policy {plan.policy.text}")
    record_removed(store, plan.drop_changes)  # before deleting: the ledger tells an expire from a loss
    store.delete_many(plan.drop_changes)
    store.delete_many(plan.drop_orphans)
