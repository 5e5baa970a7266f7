"""Argument types and shared options for the subcommands (parsing only).

Every value is checked here, where argparse turns a refusal into its one-line usage error (exit 2),
before any store or AWS is touched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from changelog.argtypes import table_arg as table_arg
from changelog.errors import UsageError
from changelog.names import s3_uri_problem
from changelog.timefmt import format_time, is_relative, parse_moment
from compactor.policy import Policy, parse_policy

if TYPE_CHECKING:
    from changelog.predicate import Predicate



TIME_HELP = "ISO 8601, epoch seconds, latest, now, or before now as -2h"  # TIME in a --help line


@dataclass(frozen=True)
class Latest:
    """TIME given as ``latest``: the latest restorable moment, known once the store is read (``resolve_times``)."""


def time_arg(text: str) -> datetime | Latest:
    """argparse type for TIME; a bad value becomes argparse's one-line error.

    ``now`` and ``-2h`` are read against this machine's clock when the command starts; ``latest``
    is resolved from the store before the command runs.
    """
    try:
        moment = parse_moment(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return Latest() if moment is None else moment


TIME_OPTIONS = frozenset({"--at", "--from", "--to", "--drill-at"})


def joined_relative_times(argv: list[str]) -> list[str]:
    """``--at -2h`` as ``--at=-2h``: argparse takes a value starting with '-' for an option of its own."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token in TIME_OPTIONS and index + 1 < len(argv) and is_relative(argv[index + 1]):
            joined.append(f"{token}={argv[index + 1]}")
            index += 2
            continue
        joined.append(token)
        index += 1
    return joined


def resolve_times(args: argparse.Namespace) -> str | None:
    """Replace every ``latest`` TIME with the latest restorable moment of the command's table(s);
    returns what to say of it (None when no TIME was ``latest``).

    The caller says it on stderr, so that the exact moment the keyword stood for is on record beside
    the answer (or in the command's one error line). With ``--tables`` it is the latest moment every
    one of them can be restored to.
    """
    names = [name for name, value in vars(args).items() if isinstance(value, Latest)]
    if not names:
        return None
    from changelog.state import coverage, latest_restorable
    from changelog.store import open_store

    tables = [args.table] if getattr(args, "table", None) else \
        [t.strip() for t in (getattr(args, "tables", None) or "").split(",") if t.strip()]
    if not tables or not getattr(args, "store", None):
        raise UsageError("TIME 'latest' needs --store and --table (or --tables): give an explicit time")
    store = open_store(args.store)
    if [t.lower() for t in tables] == ["all"] and not getattr(args, "table", None):
        from changelog.layout import TABLES, table_names

        tables = table_names(store.list(TABLES + "/"))  # serve's --tables all: every table of the store
    moment = latest_restorable(tables, lambda table: coverage(store, table))
    for name in names:
        setattr(args, name, moment)
    return f"'latest' is {format_time(moment)}"


def path_arg(text: str) -> str:
    """argparse type for a local output path: never empty (Path("") is the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("it is empty: name a file or directory")
    if text.lower().startswith("s3:"):
        raise argparse.ArgumentTypeError(f"it takes a local path, not {text!r}")
    return text


def location_arg(*, local: bool = True) -> Callable[[str], str]:
    """argparse type for an output directory or ``s3://bucket/prefix`` (only the latter unless ``local``).

    Either comes back without trailing slashes (and "/" stays "/", never the current directory).
    """

    def parse(text: str) -> str:
        if text.startswith("s3://"):
            problem = s3_uri_problem(text)
            if problem:
                raise argparse.ArgumentTypeError(problem)
            return text.rstrip("/")
        if not local:
            raise argparse.ArgumentTypeError(f"it must be s3://bucket/prefix, not {text!r}")
        if text.lower().startswith("s3:"):
            raise argparse.ArgumentTypeError(f"{text!r} is neither a directory nor s3://bucket/prefix")
        return path_arg(text).rstrip("/") or "/"

    return parse


def where_arg(text: str) -> Predicate:
    """argparse type for --where: one whitelisted boolean expression (changelog.predicate)."""
    # SQLGlot and DuckDB load only when a --where is given: --help and plain commands start fast.
    from changelog.predicate import parse_predicate

    try:
        return parse_predicate(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--where ")) from None


def policy_arg(text: str) -> Policy:
    """argparse type for --keep: the retention grammar and its bounds (``compactor.policy``)."""
    try:
        return parse_policy(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def int_range(name: str, low: int, high: int) -> Callable[[str], int]:
    """argparse type for a whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be between {low:,} and {high:,}, not {value:,}")
        return value

    return parse


def positive_float(name: str) -> Callable[[str], float]:
    """argparse type for a finite number above zero (a rate)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, not {text!r}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be a number above 0, not {text!r}")
        return value

    return parse


def add_store(parser: argparse.ArgumentParser) -> None:
    """--store S: a local directory or s3://bucket/prefix; REWIND_STORE (as the Lambda functions read it) by default."""
    import os

    default = os.environ.get("REWIND_STORE") or None
    parser.add_argument("--store", required=default is None, default=default, metavar="S",
                        help="local directory or s3://bucket/prefix (default: $REWIND_STORE)")


def add_table(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--table T: the source table's name."""
    parser.add_argument("--table", required=required, type=table_arg, metavar="T", help="source table name")


def add_format(parser: argparse.ArgumentParser, choices: tuple[str, ...] = ("table", "json")) -> None:
    """--format: how results are printed."""
    parser.add_argument("--format", choices=choices, default=choices[0], help="output format")


def add_where(parser: argparse.ArgumentParser, help_text: str) -> None:
    """--where: one boolean expression over attribute names."""
    parser.add_argument("--where", type=where_arg, metavar="EXPR", help=help_text)


ENGINES = ("duckdb", "spark")


def add_engine(parser: argparse.ArgumentParser) -> None:
    """--engine: which engine computes the answer (same bytes from each; changelog.spec)."""
    parser.add_argument("--engine", choices=ENGINES, default="duckdb",
                        help="duckdb (default, in this process) or spark (pyspark: local, or the master "
                             "from SPARK_MASTER / spark-defaults.conf)")


def add_yes(parser: argparse.ArgumentParser) -> None:
    """--yes: skip the confirmation a command that changes live data asks on a terminal."""
    parser.add_argument("--yes", action="store_true",
                        help="do not ask for confirmation (required when not run on a terminal)")


def check_can_confirm(yes: bool, what: str) -> None:
    """Refuse early, before any work, a destructive run that could not ask and was not told --yes."""
    if not yes and not sys.stdin.isatty():
        raise UsageError(f"{what} needs confirmation: add --yes (no terminal to ask on)")


def confirm(yes: bool, question: str) -> None:
    """Ask ``question`` on the terminal unless ``yes``; anything but y/yes refuses (UsageError)."""
    if yes:
        return
    check_can_confirm(yes, question)
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise UsageError("not confirmed: nothing was changed")
