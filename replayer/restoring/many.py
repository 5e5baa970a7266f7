"""Several tables restored to the same moment: check all, then restore all in parallel.

Applications span tables, and restoring them one at a time at slightly different moments gives a
set that never existed together. Every table's coverage at T (and every target) is checked before
anything is written: one refusal and nothing is written. Targets are named by one rule: table
``<table><suffix>`` for ``--to-table-suffix``, file ``<dir>/<table>.jsonl`` for ``--to-dir``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from changelog.aws import translate
from changelog.errors import RewindError, TimeOutOfRange, UsageError
from changelog.meta import key_names, read_meta
from changelog.names import table_name_problem
from changelog.progress import Progress
from changelog.state import check_restorable, coverage
from changelog.store import Store
from changelog.timefmt import format_time, to_micros
from replayer.restoring.replay import check_file_target, open_items, replay_to_file, replay_to_table, select_counts
from replayer.restoring.table_settings import TablePlan, apply_after_create, restore_plan
from replayer.restoring.target import prepare_target
from replayer.restoring.writer import WriteSettings

MAX_PARALLEL_TABLES = 4


@dataclass(frozen=True)
class TableOutcome:
    """What happened to one table of the set."""

    table: str
    target: str
    items: int
    written: int
    error: str | None


def parse_tables(text: str) -> list[str]:
    """``--tables a,b,c``: distinct valid table names, in the order given."""
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise UsageError("--tables needs at least one table name, e.g. --tables orders,customers")
    for name in names:
        problem = table_name_problem(name)
        if problem:
            raise UsageError(f"--tables: {problem}")
    return names


def target_names(tables: list[str], suffix: str | None, directory: str | None) -> dict[str, str]:
    """Each table's target under the one naming rule; UsageError when a name is not a valid table name."""
    if directory is not None:
        return {table: str(Path(directory) / f"{table}.jsonl") for table in tables}
    targets = {table: f"{table}{suffix}" for table in tables}
    for target in targets.values():
        problem = table_name_problem(target)
        if problem:
            raise UsageError(f"--to-table-suffix gives an invalid target: {problem}")
    clash = set(targets.values()) & set(tables)
    if clash:
        raise UsageError(f"--to-table-suffix would write into a source table ({', '.join(sorted(clash))})")
    return targets


def check_all_restorable(store: Store, tables: list[str], at: datetime) -> None:
    """Refuse unless every table is restorable at ``at``, naming each one that is not."""
    problems = []
    for table in tables:
        try:
            check_restorable(coverage(store, table), at, to_micros(at))
        except TimeOutOfRange as exc:
            problems.append(str(exc))
        # Any other refusal (a table the store does not hold, a damaged file) is the command's, with its own code.
    if problems:
        raise TimeOutOfRange(f"not every table can be restored to {format_time(at)}, so none was: "
                             + "; ".join(problems))


def restore_many(store: Store, tables: list[str], at: datetime, targets: dict[str, str], *,
                 to_files: bool, overwrite: bool = False, create: bool = False, into_existing: bool = False,
                 without: frozenset[str] = frozenset(), with_later_indexes: bool = False,
                 settings: WriteSettings | None = None, dry_run: bool = False,
                 clients: Callable[[], tuple[Any, Any]] | None = None) -> list[TableOutcome]:
    """Restore every table to ``at``: all checks first (nothing written on a refusal), then in parallel."""
    check_all_restorable(store, tables, at)
    plans: dict[str, TablePlan | None] = {}
    dynamodb, autoscaling = clients() if clients and not to_files else (None, None)
    for table in tables:
        if to_files:
            check_file_target(targets[table], overwrite)
            continue
        meta = read_meta(store, table)
        plans[table] = (restore_plan(store, table, targets[table], meta, at, without=without,
                                     with_later_indexes=with_later_indexes) if create else None)
        prepare_target(dynamodb, targets[table], meta, create=create, into_existing=into_existing, dry_run=True)

    def one(table: str) -> TableOutcome:
        target = targets[table]
        try:
            con = open_items(store, table, at)
            items = select_counts(con).items
            if dry_run:
                return TableOutcome(table, target, items, 0, None)
            if to_files:
                return TableOutcome(table, target, items, replay_to_file(con, target, items, overwrite=overwrite,
                                                                          keys=key_names(store, table)),
                                    None)
            plan = plans[table]
            action = prepare_target(dynamodb, target, read_meta(store, table), create=create,
                                    into_existing=into_existing, request=plan.request if plan else None)
            if plan and action == "created":
                apply_after_create(dynamodb, autoscaling, plan)
            # One progress bar per table would garble a terminal: the summary reports each table.
            quiet = Progress(f"replay {table}", total=items, stream=io.StringIO())
            report, errors = replay_to_table(con, dynamodb, target, items, settings or WriteSettings(),
                                             progress=quiet)
            error = f"{report.failed:,} items not written ({'; '.join(errors[:3])})" if report.failed else None
            return TableOutcome(table, target, items, report.written, error)
        except RewindError as exc:  # one table's failure is reported in the summary, the others go on
            return TableOutcome(table, target, 0, 0, str(exc).splitlines()[0])
        except (BotoCoreError, ClientError) as exc:
            return TableOutcome(table, target, 0, 0, str(translate(exc, f"restoring {table}")).splitlines()[0])

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_TABLES, len(tables))) as pool:
        return list(pool.map(one, tables))
