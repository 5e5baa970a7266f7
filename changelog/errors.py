"""Typed errors: every user mistake is one of these, turned into one clear line at the CLI edge."""

from __future__ import annotations


class RewindError(Exception):
    """Base of every error ddb-rewind reports to a user as one line (exit code 2 unless overridden)."""

    exit_code = 2


class UsageError(RewindError):
    """A malformed argument: a time, a key, a policy, a file name."""


class StoreError(RewindError):
    """The store cannot be reached, does not exist, or holds something unexpected."""


class StoreNotFound(StoreError):
    """The store path or bucket does not exist."""


class TableNotFound(RewindError):
    """The store (or DynamoDB) has no such table."""


class TimeOutOfRange(RewindError):
    """A requested time lies outside what the store can restore."""


class StreamConfigError(RewindError):
    """The table's stream cannot feed a backup (missing, or KEYS_ONLY / images missing)."""


class DecodeError(RewindError):
    """A stream record could not be decoded; the caller quarantines it whole."""


class ConflictError(RewindError):
    """A conditional write lost a race (another writer published first)."""


class TargetError(RewindError):
    """The restore target is unusable (exists when it must not, missing when it must exist)."""


class WriteFailed(RewindError):
    """Writing items to a table failed after retries; nothing is reported as written that was not."""

    exit_code = 3
