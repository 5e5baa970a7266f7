"""Argument types and shared options for the subcommands (parsing only)."""

from __future__ import annotations

import argparse
from datetime import datetime

from changelog.errors import UsageError
from changelog.timefmt import parse_time


def time_arg(text: str) -> datetime:
    """argparse type for TIME; a bad value becomes argparse's one-line error."""
    try:
        return parse_time(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_store(parser: argparse.ArgumentParser) -> None:
    """--store S: a local directory or s3://bucket/prefix."""
    parser.add_argument("--store", required=True, metavar="S", help="local directory or s3://bucket/prefix")


def add_table(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--table T: the source table's name."""
    parser.add_argument("--table", required=required, metavar="T", help="source table name")


def add_format(parser: argparse.ArgumentParser, choices: tuple[str, ...] = ("table", "json")) -> None:
    """--format: how results are printed."""
    parser.add_argument("--format", choices=choices, default=choices[0], help="output format")
