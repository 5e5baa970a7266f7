"""The ``ddb-rewind`` command line: parsing and printing only; the work lives in the packages.

Every RewindError (a user mistake, a missing store, a time out of range) becomes one line on
stderr and a non-zero exit; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from changelog.errors import RewindError
from ddb_rewind.commands import COMMANDS


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        # Subcommand parsers are named "ddb-rewind sql"; every error line keeps the one prefix scripts match on.
        self.exit(2, f"ddb-rewind: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser: one subcommand per module in ``ddb_rewind.commands``."""
    parser = _Parser(prog="ddb-rewind", description="Continuous, queryable backup for DynamoDB.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    # Current botocore routes DynamoDB calls to account-based endpoints that local AWS does not serve.
    os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed its one line (or --help)
        return int(exc.code or 0)
    try:
        return int(args.run(args) or 0)
    except RewindError as exc:
        print(f"ddb-rewind: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ddb-rewind: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # A reader such as `head` closed the pipe: not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
