"""argparse types shared by every command line: the CLI's and the spark-submit jobs' (parsing only).

A job run by ``spark-submit`` is a stage's own entry point and must not import the CLI; the checks it
shares with the CLI live here, so a table name or a moment is refused by the same words everywhere.
"""

from __future__ import annotations

import argparse
from datetime import datetime

from changelog.errors import UsageError
from changelog.names import table_name_problem
from changelog.timefmt import parse_time


def table_arg(text: str) -> str:
    """argparse type for a DynamoDB table name (source or target): DynamoDB's own naming rules."""
    problem = table_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def moment_arg(text: str) -> datetime:
    """argparse type for an absolute moment (ISO 8601 or epoch seconds), as an aware UTC datetime."""
    try:
        return parse_time(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
