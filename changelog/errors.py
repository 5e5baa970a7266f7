"""Typed errors: every expected failure is one of these, turned into one clear line at the CLI edge.

Each kind has its own documented exit code (docs/reliability.md), so scripts can tell a typo from
a damaged store from an AWS outage:

    1  the command ran and the answer is "no" (verify found differences, check found problems)
    2  usage: a malformed or contradictory argument
    3  a write to a table failed part-way (what was written is reported; re-running is safe)
    4  not found: the store, a table, an item or the target table does not exist
    5  out of coverage: the moment lies outside what the store can restore (or crosses a gap)
    6  damaged store: a file is missing, unreadable, truncated, swapped or fails its checksum
    7  AWS or the store could not be reached or refused the call (credentials, region, network)
    8  conflict: another writer got there first, or the target holds what it must not
    130 interrupted (Ctrl-C or SIGTERM)
"""

from __future__ import annotations

EXIT_ANSWER_NO = 1
EXIT_USAGE = 2
EXIT_WRITE_FAILED = 3
EXIT_NOT_FOUND = 4
EXIT_OUT_OF_COVERAGE = 5
EXIT_DAMAGED = 6
EXIT_UNREACHABLE = 7
EXIT_CONFLICT = 8
EXIT_INTERRUPTED = 130


class RewindError(Exception):
    """Base of every error ddb-rewind reports to a user as one line."""

    exit_code = EXIT_USAGE


class UsageError(RewindError):
    """A malformed argument: a time, a key, a policy, a file name."""


class UnsafeName(UsageError):
    """A name from outside (a table name, a shard id, a sequence number) that cannot be one step of a path."""


class StoreError(RewindError):
    """The store cannot be reached or refused a call."""

    exit_code = EXIT_UNREACHABLE


class StoreNotFound(StoreError):
    """The store path or bucket does not exist."""

    exit_code = EXIT_NOT_FOUND


class DamagedStore(StoreError):
    """A file the answer depends on is missing, unreadable, truncated, swapped or fails its checksum."""

    exit_code = EXIT_DAMAGED


class FileVanished(StoreError):
    """A file listed for a read was deleted before it was read (a merge or expire ran meanwhile).

    Readers re-plan and retry; only when that keeps happening does it reach the user.
    """

    exit_code = EXIT_CONFLICT


class TableNotFound(RewindError):
    """The store (or DynamoDB) has no such table."""

    exit_code = EXIT_NOT_FOUND


class TimeOutOfRange(RewindError):
    """A requested time lies outside what the store can restore."""

    exit_code = EXIT_OUT_OF_COVERAGE


class SettingsUnknown(TimeOutOfRange):
    """The table's settings were not observed at or before the moment asked for."""


class StreamConfigError(RewindError):
    """The table's stream cannot feed a backup (missing, or KEYS_ONLY / images missing)."""


class DecodeError(RewindError):
    """A stream record could not be decoded; the caller quarantines it whole."""


class ConflictError(RewindError):
    """A conditional write lost a race (another writer published first)."""

    exit_code = EXIT_CONFLICT


class TargetError(RewindError):
    """The restore target is unusable (exists when it must not, missing when it must exist)."""


class AwsError(RewindError):
    """An AWS call failed: no region or credentials, an unreachable endpoint, access denied, throttled."""

    exit_code = EXIT_UNREACHABLE


class WriteFailed(RewindError):
    """Writing items to a table failed after retries; nothing is reported as written that was not."""

    exit_code = EXIT_WRITE_FAILED


class Interrupted(RewindError):
    """Ctrl-C or SIGTERM: what was done so far is reported, and whether re-running is safe."""

    exit_code = EXIT_INTERRUPTED


class TargetMissing(TargetError, TableNotFound):
    """The restore or repair target table does not exist (exit 4, not found)."""


class TargetExists(TargetError, ConflictError):
    """The restore target exists where a new table was asked for (exit 8, conflict)."""


class TargetKeyMismatch(TargetError, ConflictError):
    """The existing target is keyed otherwise than the restored items (exit 8, conflict)."""
