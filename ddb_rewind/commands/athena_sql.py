"""``ddb-rewind athena-sql``: the Athena (Trino) SQL for state at TIME, an item's history, or a diff."""

from __future__ import annotations

import argparse
from typing import Any

from changelog.errors import UsageError
from changelog.shown import visible
from changelog.timefmt import format_time, to_micros
from ddb_rewind.args import add_store, add_table, time_arg

_DESCRIPTION = """Print the Athena SQL (Trino) that answers one question over the Glue tables the stack
creates (infra/template.yaml): the state at --at (or an UNLOAD of it with --unload), the history of
--key, or the items that differ between --from and --to. The store is read to check coverage and plan
which partitions and snapshot parts the query reads; nothing is run in Athena."""


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser("athena-sql", help="print the Athena SQL for state, history or diff",
                                   description=_DESCRIPTION)
    add_table(parser)
    add_store(parser)
    parser.add_argument("--database", type=_database_arg, metavar="DB",
                        help="the stack's GlueDatabaseName (default: rewind_<table>, lowercase)")
    question = parser.add_mutually_exclusive_group(required=True)
    question.add_argument("--at", type=time_arg, metavar="TIME", help="the state at TIME")
    question.add_argument("--key", metavar="KEY", help="every version of one item (DynamoDB JSON or pk=a)")
    question.add_argument("--from", dest="start", type=time_arg, metavar="TIME",
                          help="items that differ from --from to --to")
    parser.add_argument("--to", dest="end", type=time_arg, metavar="TIME", help="the end of a diff (with --from)")
    parser.add_argument("--unload", metavar="S3_PREFIX",
                        help="with --at: an UNLOAD of the state as gzip'd {\"Item\": ...} lines under PREFIX/data/")
    parser.set_defaults(run=run)


def _database_arg(text: str) -> str:
    from replayer.engines.athena import database_problem

    problem = database_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _check_options(args: argparse.Namespace) -> None:
    if (args.start is None) != (args.end is None):
        raise UsageError("--from and --to go together: give both for a diff")
    if args.unload and args.at is None:
        raise UsageError("--unload is for the state at a moment: give --at TIME")


def run(args: argparse.Namespace) -> int:
    """Check coverage, plan, and print the SQL."""
    _check_options(args)
    from changelog.state import check_restorable, coverage, plan_state, snapshot_parts
    from changelog.store import open_store
    from replayer.engines.athena import (
        Catalog,
        check_millisecond_times,
        default_database,
        diff_query,
        history_query,
        state_query,
        unload_query,
    )
    from replayer.forensics.diff import check_window
    from replayer.forensics.history import check_history_complete, resolve_key

    store = open_store(args.store)
    if not store.uri.startswith("s3://"):
        raise UsageError(f"Athena reads the store on S3: give --store s3://bucket/prefix, not {args.store!r}")
    catalog = Catalog(args.database or default_database(args.table), store.uri)
    cov = coverage(store, args.table)
    if args.key is not None:
        from changelog.docs import key_text
        from changelog.meta import key_names

        key, canonical = resolve_key(store, args.table, args.key)
        shown = key_text(key, key_names(store, args.table))
        check_history_complete(cov, shown)
        from changelog.state import change_files

        check_millisecond_times(store, args.table, change_files(store, args.table))
        sql, what = history_query(catalog, store, args.table, canonical), f"history of {shown}"
    elif args.at is not None:
        at_us = to_micros(args.at)
        check_restorable(cov, args.at, at_us)
        plan = plan_state(store, args.table, at_us)
        check_millisecond_times(store, args.table, plan.change_files, snapshot_parts(plan))
        if args.unload:
            sql, what = unload_query(catalog, plan, args.unload), f"UNLOAD of the state at {format_time(args.at)}"
        else:
            sql, what = state_query(catalog, plan), f"state at {format_time(args.at)}"
    else:
        from_us, to_us = to_micros(args.start), to_micros(args.end)
        check_window(store, args.table, from_us, to_us)
        plans = (plan_state(store, args.table, from_us), plan_state(store, args.table, to_us))
        for plan in plans:
            check_millisecond_times(store, args.table, plan.change_files, snapshot_parts(plan))
        sql = diff_query(catalog, store, plans)
        what = f"items that differ from {format_time(args.start)} to {format_time(args.end)}"
    from changelog.restorable import describe_intervals

    bounds = describe_intervals(cov.intervals)
    # Comment lines: a key's line break would end the comment and start a statement of the key's choosing.
    print(f"-- ddb-rewind athena-sql: {visible(what)} of {args.table}, over Glue database {catalog.database}")
    print(f"-- coverage proven by {visible(store.uri)}: {bounds}")
    print(f"{sql};")
    return 0
