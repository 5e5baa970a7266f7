"""Argument types and shared options for the subcommands (parsing only).

Every value is checked here, where argparse turns a refusal into its one-line usage error (exit 2),
before any store or AWS is touched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from changelog.errors import UsageError
from changelog.names import table_name_problem
from changelog.timefmt import parse_time
from compactor.policy import Policy, parse_policy

if TYPE_CHECKING:
    from changelog.predicate import Predicate

# Retention beyond a thousand years is a typo (and overflows date arithmetic).
_HOURS = {"h": 1, "d": 24, "w": 24 * 7, "m": 24 * 31, "y": 24 * 366}
MAX_RETENTION_HOURS = 1000 * 366 * 24


def time_arg(text: str) -> datetime:
    """argparse type for TIME; a bad value becomes argparse's one-line error."""
    try:
        return parse_time(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def table_arg(text: str) -> str:
    """argparse type for a DynamoDB table name (source or target): DynamoDB's own naming rules."""
    problem = table_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def where_arg(text: str) -> Predicate:
    """argparse type for --where: one whitelisted boolean expression (changelog.predicate)."""
    # SQLGlot and DuckDB load only when a --where is given: --help and plain commands start fast.
    from changelog.predicate import parse_predicate

    try:
        return parse_predicate(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--where ")) from None


def policy_arg(text: str) -> Policy:
    """argparse type for --keep: the retention grammar, within sane bounds."""
    try:
        policy = parse_policy(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if policy.changes * _HOURS[policy.changes_unit] > MAX_RETENTION_HOURS:
        raise argparse.ArgumentTypeError(f"changes={policy.changes}{policy.changes_unit} is more than 1000 years")
    for name, count, limit in (("daily", policy.daily, 366_000), ("monthly", policy.monthly, 12_000)):
        if count > limit:
            raise argparse.ArgumentTypeError(f"{name}={count} is more than 1000 years of snapshots")
    return policy


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
    """--store S: a local directory or s3://bucket/prefix."""
    parser.add_argument("--store", required=True, metavar="S", help="local directory or s3://bucket/prefix")


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
