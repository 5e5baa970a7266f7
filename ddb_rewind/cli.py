"""The ``ddb-rewind`` command line: parsing and printing only; the work lives in the packages.

This is the one place where an expected failure becomes one line on stderr and its documented
exit code (changelog/errors.py, docs/reliability.md): a RewindError as it is; and what escapes the
libraries as someone else's exception (AWS, DuckDB, the operating system, Ctrl-C) by ``_as_error``.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

from changelog.errors import (
    EXIT_INTERRUPTED,
    DamagedStore,
    Interrupted,
    RewindError,
    StoreError,
    StoreNotFound,
    UsageError,
    WriteFailed,
)
from changelog.store import remote_read_failure
from changelog.udf import refusal_behind
from ddb_rewind.args import joined_relative_times, resolve_times
from ddb_rewind.commands import COMMANDS


class _Help(argparse.HelpFormatter):
    """Help that states every option's default (unless the help text already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) and action.option_strings
        if shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line, like every other error."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # Subcommand parsers are named "ddb-rewind sql"; every error line keeps the one prefix scripts match on.
        self.exit(2, f"ddb-rewind: error: {_one_line(message)} (see '{self.prog} --help')\n")


class _Version(argparse.Action):
    """--version, reading the installed version only when asked (importlib.metadata costs ~20 ms)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("ddb-rewind")
        except PackageNotFoundError:  # running from a checkout that was never installed
            found = "unknown"
        print(f"ddb-rewind {found}")
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    """The full parser: one subcommand per module in ``ddb_rewind.commands``."""
    parser = _Parser(prog="ddb-rewind", description="Continuous, queryable backup for DynamoDB.")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def _one_line(text: str) -> str:
    # Whole, however long: a message names the file and ends with what to do; only newlines go.
    return " ".join(str(text).split())


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _os_error(exc: OSError) -> RewindError:
    where = f" {exc.filename!r}" if exc.filename else ""
    reason = exc.strerror or _first_line(exc)
    if isinstance(exc, PermissionError):
        return StoreError(f"permission denied on{where}: {reason}; check the file's owner and mode")
    if isinstance(exc, IsADirectoryError | NotADirectoryError):
        return UsageError(f"{reason}:{where}; name a file, not a directory")
    if isinstance(exc, FileNotFoundError):
        return StoreNotFound(f"not found:{where} ({reason})")
    if exc.errno == errno.ENAMETOOLONG:
        return UsageError(f"the name{where} is too long for the file system; choose a shorter one")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return WriteFailed(f"no space left on the device{where}; free some space and run the command again")
    return StoreError(f"{reason}{where}")


_TERMINATED = threading.Event()  # set by SIGTERM: the interruption is worded after its cause


def _interrupted() -> Interrupted:
    return Interrupted("interrupted (SIGTERM)" if _TERMINATED.is_set() else "interrupted (Ctrl-C)")


def _terminate(signum: int, frame: FrameType | None) -> None:
    _TERMINATED.set()
    raise KeyboardInterrupt


@contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (a supervisor, ``kill``, ``timeout``) stops a command as Ctrl-C does: what it holds is
    cleaned up (serve's index, a partial output file), what it did is reported, and it exits 130
    (serve and a kept demo stop as asked, 0). Python's default for SIGTERM ends the process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _TERMINATED.clear()
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _as_error(exc: BaseException) -> RewindError | None:
    """The typed error for an expected failure from outside our packages; None for a bug."""
    if isinstance(exc, RewindError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return _interrupted()
    # DuckDB, botocore and pyarrow are looked up, not imported: an exception of theirs means the command
    # loaded them, and a command that did not should not pay for them here (lazy start-up).
    if (known := refusal_behind(exc) or remote_read_failure(exc)) is not None:
        return known
    duckdb = sys.modules.get("duckdb")
    if duckdb is not None:
        error = _duckdb_error(duckdb, exc)
        if error is not None:
            return error
    elif isinstance(exc, RuntimeError) and "interrupted" in str(exc).lower():
        return _interrupted()
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None and isinstance(exc, botocore.BotoCoreError | botocore.ClientError):
        from changelog.aws import translate

        return translate(exc, "AWS call failed")
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None and isinstance(exc, pyarrow.ArrowInvalid):
        return DamagedStore(f"a store file cannot be read ({_first_line(exc)}); the store may be damaged")
    if isinstance(exc, OSError):
        return _os_error(exc)
    return None


def _duckdb_error(duckdb: Any, exc: BaseException) -> RewindError | None:
    if isinstance(exc, duckdb.InterruptException) or (
        isinstance(exc, duckdb.Error | RuntimeError) and "interrupted" in str(exc).lower()
    ):
        return _interrupted()
    if isinstance(exc, duckdb.OutOfMemoryException):
        return UsageError(f"DuckDB ran out of memory ({_first_line(exc)}); free memory or narrow the question")
    if isinstance(exc, duckdb.IOException | duckdb.InvalidInputException | duckdb.SerializationException):
        return DamagedStore(f"a store file cannot be read ({_first_line(exc)}); the store may be damaged")
    if isinstance(exc, duckdb.Error):
        return DamagedStore(f"reading the store failed ({_first_line(exc)})")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    # Current botocore routes DynamoDB calls to account-based endpoints that local AWS does not serve.
    os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    # Lambda and most SDKs read AWS_REGION; botocore reads only AWS_DEFAULT_REGION. Take either.
    if os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):
        os.environ["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"]
    try:
        args = build_parser().parse_args(joined_relative_times(sys.argv[1:] if argv is None else list(argv)))
    except SystemExit as exc:  # argparse has printed its one line (or --help, --version)
        return int(exc.code or 0)
    latest: str | None = None
    try:
        with _sigterm_as_ctrl_c():
            latest = resolve_times(args)
            code = int(args.run(args) or 0)
        if latest:  # said after the command, so that a refusal stays one line (that names it too)
            print(f"ddb-rewind: {latest}", file=sys.stderr)
        return code
    except BrokenPipeError:
        # A reader such as `head` closed the pipe: not an error of ours.
        sys.stderr.close()
        return 0
    except BaseException as exc:  # sorted by _as_error; a bug is re-raised with its traceback
        error = _as_error(exc)
        if error is None:
            raise
        try:
            said = f" ({latest})" if latest else ""
            print(f"ddb-rewind: error: {_one_line(str(error))}{said}", file=sys.stderr)
        except KeyboardInterrupt:  # a second Ctrl-C while reporting the first
            return EXIT_INTERRUPTED
        return error.exit_code

