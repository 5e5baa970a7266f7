"""``ddb-rewind serve``: the tables as they were at TIME, behind DynamoDB's read API on loopback."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import threading
from typing import Any

from changelog.errors import UsageError
from changelog.layout import TABLES, table_names
from changelog.store import open_store
from changelog.timefmt import format_time
from ddb_rewind.args import TIME_HELP, add_store, int_range, time_arg
from ddb_rewind.commands.replay import say_erasures


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser(
        "serve", help="answer DynamoDB reads of the tables as they were at TIME (read-only endpoint)",
        description="Serve the tables as they were at TIME on a local DynamoDB endpoint: GetItem, BatchGetItem, "
                    "Query, Scan, DescribeTable, ListTables. Writes are refused. Point the AWS CLI or an SDK at it "
                    "with --endpoint-url; any credentials are accepted.")
    add_store(parser)
    parser.add_argument("--at", required=True, type=time_arg, metavar="TIME",
                        help=TIME_HELP)
    parser.add_argument("--tables", default="all", metavar="T1,T2|all",
                        help="tables to serve, all at the same TIME; all: every table in the store")
    parser.add_argument("--port", type=int_range("--port", 0, 65535), default=8000,
                        help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; anything but loopback lets others read the data unauthenticated")
    parser.set_defaults(run=run)


def chosen_tables(store: Any, text: str) -> list[str]:
    """``--tables``: the names given, or every table of the store for ``all``."""
    from replayer.restoring.many import parse_tables

    if text.strip().lower() != "all":
        return parse_tables(text)
    tables = table_names(store.list(TABLES + "/"))
    if not tables:
        raise UsageError(f"the store {store.uri} holds no table to serve")
    return tables


def run(args: argparse.Namespace) -> int:
    """Load the moment, say where it is served, and answer until Ctrl-C or SIGTERM."""
    from replayer.serving.server import moto_missing, serving

    # serve's only extra dependency, checked before any work (imported beside the loading, not here).
    if importlib.util.find_spec("moto") is None:
        raise moto_missing()

    store = open_store(args.store)
    tables = chosen_tables(store, args.tables)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    say_erasures(store, tables, sys.stderr)

    with serving(store, tables, args.at, host=args.host, port=args.port, say=say) as server:
        host, port = str(server.server_address[0]), int(server.server_address[1])
        try:  # a stop may come as soon as the line is read, before print returns
            print(f"serving {', '.join(tables)} as of {format_time(args.at)} at http://{host}:{port} "
                  "(read-only; Ctrl-C or SIGTERM stops)", flush=True)
            threading.Event().wait()
        except KeyboardInterrupt:
            say("stopped")
    return 0
