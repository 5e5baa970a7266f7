"""An incident report's contents: what changed in a window, how fast, which attributes, and what repair would do.

Every figure comes from the mechanisms the commands use, so the report agrees with them: the change
rate is ``timeline`` over (from, to], the item counts, attributes and samples are ``diff`` (narrowed
by ``--where`` when given) and the repair plan is exactly what ``repair --from --to`` would plan
(always the whole table: repair has no ``--where``). Rendering is replayer.forensics.report_html's job.
"""

from __future__ import annotations

import shlex
import time
from collections import Counter
from dataclasses import dataclass

from changelog.errors import UsageError
from changelog.meta import key_names
from changelog.predicate import Predicate
from changelog.progress import Progress
from changelog.store import Store
from changelog.timefmt import format_time, from_micros
from replayer.forensics.attrdiff import values_equal
from replayer.forensics.diff import ItemChange, StateDiff, diff_states
from replayer.forensics.repair import ACTIONS, RepairAction, plan_from_diff, plan_repair
from replayer.forensics.timeline import Timeline, timeline

# A browser draws a few hundred bars easily, and finer buckets make a spike stand out.
CHART_MAX_BUCKETS = 400
TOP_ATTRIBUTES = 20


@dataclass(frozen=True)
class AttributeChurn:
    """How many of the items modified in the window had top-level attribute ``name`` changed, added or removed."""

    name: str
    changed: int
    added: int
    removed: int

    @property
    def items(self) -> int:
        """Modified items in which the attribute differs at all."""
        return self.changed + self.added + self.removed


@dataclass(frozen=True)
class IncidentReport:
    """Everything an incident report shows, for table ``table`` over (``from_us``, ``to_us``].

    ``key_names`` are the table's key attributes, the partition key first (how keys are shown).
    """

    table: str
    store_uri: str
    from_us: int
    to_us: int
    where: str | None
    key_names: tuple[str, ...]
    generated_us: int
    timeline: Timeline
    added: int
    removed: int
    changed: int
    attributes: tuple[AttributeChurn, ...]
    samples: tuple[ItemChange, ...]
    repair_counts: tuple[tuple[str, int], ...]
    repair_sample: tuple[RepairAction, ...]

    @property
    def repair_puts(self) -> int:
        """Items repair would write back (re-created or restored)."""
        counts = dict(self.repair_counts)
        return counts["recreate"] + counts["restore"]

    @property
    def repair_deletes(self) -> int:
        """Items repair would delete (created in the window)."""
        return dict(self.repair_counts)["delete"]

    @property
    def repair_command(self) -> str:
        """The exact ``repair --dry-run`` line to paste: every value shell-quoted, the times to the microsecond.

        The target is the table itself: an incident is repaired where it happened.
        """
        options = [("--table", self.table), ("--store", self.store_uri),
                   ("--from", format_time(from_micros(self.from_us))), ("--to", format_time(from_micros(self.to_us))),
                   ("--target", self.table)]
        # --table=VALUE: a value that starts with '-' (a table named -orders) is then no option to argparse.
        return shlex.join(["ddb-rewind", "repair", *(f"{option}={value}" for option, value in options), "--dry-run"])


def damaged_first(diff: StateDiff) -> tuple[ItemChange, ...]:
    """The items that differ, those the window damaged (modified or removed) first, then those it added.

    Each group is ordered by key. Added items are the least of an incident (repair deletes them);
    ordered among the others by key, a burst of them would hide the damaged ones from the samples.
    """
    damaged = sorted(diff.changed + diff.removed, key=lambda c: c.item_key)
    return (*damaged, *diff.added)


def attribute_churn(changes: tuple[ItemChange, ...], top: int = TOP_ATTRIBUTES) -> tuple[AttributeChurn, ...]:
    """The ``top`` top-level attributes that differ in the most modified items, most first (ties by name).

    Only modified items count: an item created or deleted in the window would count every attribute it has.
    """
    kinds: dict[str, Counter[str]] = {}
    for change in changes:
        if change.kind != "changed" or change.before is None or change.after is None:
            continue
        before, after = change.before, change.after
        for name in before.keys() | after.keys():
            if name not in before:
                kind = "added"
            elif name not in after:
                kind = "removed"
            elif not values_equal(before[name], after[name]):
                kind = "changed"
            else:
                continue
            kinds.setdefault(name, Counter())[kind] += 1
    churn = [AttributeChurn(name, c["changed"], c["added"], c["removed"]) for name, c in kinds.items()]
    churn.sort(key=lambda a: (-a.items, a.name))
    return tuple(churn[:top])


def build_report(store: Store, table: str, from_us: int, to_us: int, where: Predicate | None = None,
                 samples: int = 10) -> IncidentReport:
    """Gather the report for (``from_us``, ``to_us``]; ``samples`` bounds the diffs and repair actions shown.

    Refuses as ``diff`` does: UsageError for an inverted (or empty) window or a bad ``where``, TimeOutOfRange
    when either end lies outside coverage (before any other work).
    """
    if from_us == to_us:
        # (from, to] would hold no change: the chart of its rate would be of nothing.
        raise UsageError("--from and --to are the same moment: the window after --from up to --to holds no "
                         "change to report; give a later --to")
    progress = Progress(f"report {table}", total=3 if where is None else 4, unit="steps")
    diff: StateDiff = diff_states(store, table, from_us, to_us, where)
    progress.advance()
    # The window is (from, to], as in diff and repair: a change exactly at --from is not in it.
    rate = timeline(store, table, "auto", from_us + 1, to_us, max_buckets=CHART_MAX_BUCKETS)
    progress.advance()
    if where is None:
        plan = plan_from_diff(diff)
    else:
        plan = plan_repair(store, table, from_us, to_us)
        progress.advance()
    counts = plan.counts()
    progress.advance()
    progress.close()
    return IncidentReport(
        table=table, store_uri=store.uri, from_us=from_us, to_us=to_us, where=diff.where,
        key_names=key_names(store, table), generated_us=time.time_ns() // 1000, timeline=rate,
        added=len(diff.added), removed=len(diff.removed), changed=len(diff.changed),
        attributes=attribute_churn(diff.changed), samples=damaged_first(diff)[:samples],
        repair_counts=tuple((name, counts[name]) for name in ACTIONS),
        # Puts (the damaged items) before deletes (the added ones), as in the samples; a stable sort keeps key order.
        repair_sample=tuple(sorted(plan.actions, key=lambda a: a.action == "delete"))[:samples],
    )
