"""Parsing and printing of TIME: ISO 8601 (offsets allowed), epoch seconds, ``now``, a time before now
(``-2h``) or ``latest``; always UTC inside. The command line and SQL's ``<table>_at(TIME)`` read it alike."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from changelog.errors import UsageError

_EPOCH = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
# The times a command takes: from the epoch to a year short of datetime's end, so that a margin, a
# bucket or an offset added to any of them stays a datetime. Nothing a store holds lies outside.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _out_of_range(text: str) -> UsageError:
    return UsageError(f"time {text!r} is out of range: give a time from {EARLIEST:%Y-%m-%d} to before "
                      f"{LATEST:%Y-%m-%d}")


def _in_range(moment: datetime, text: str) -> datetime:
    if not EARLIEST <= moment < LATEST:
        raise _out_of_range(text)
    return moment


_RELATIVE = re.compile(r"^-([0-9]{1,9})([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
TIME_FORMS = ("ISO 8601 (2025-06-29T23:59:00Z, offsets allowed), epoch seconds, 'latest' (the latest restorable "
              "moment), 'now', or a time before now such as -30m, -2h, -7d")
LATEST_KEYWORD = "latest"


def is_relative(text: str) -> bool:
    """Whether ``text`` is a time before now such as ``-2h``."""
    return _RELATIVE.match(text.strip().lower()) is not None


def parse_moment(text: str, now: datetime | None = None) -> datetime | None:
    """A user TIME in any of its forms (TIME_FORMS); None for ``latest``, which only the store resolves
    (``changelog.state.latest_restorable``). ``now`` and ``-2h`` are read against ``now``, by default
    this machine's clock.

    Raises UsageError naming the accepted forms.
    """
    value = text.strip().lower()
    if value == LATEST_KEYWORD:
        return None
    clock = now or datetime.now(UTC)
    if value == "now":
        return clock
    relative = _RELATIVE.match(value)
    if relative:
        seconds = int(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
        try:
            return clock - timedelta(seconds=seconds)
        except OverflowError:
            raise UsageError(f"time {text!r} reaches before year 1") from None
    try:
        return parse_time(text)
    except UsageError as exc:
        raise UsageError(f"{exc}; TIME is {TIME_FORMS}") from None


def parse_time(text: str) -> datetime:
    """Parse a user TIME (ISO 8601 or epoch seconds) into an aware UTC datetime.

    A naive ISO time is taken as UTC. Raises UsageError with the accepted forms on anything else.
    """
    value = text.strip()
    if _EPOCH.match(value):
        try:
            return _in_range(from_micros(_epoch_micros(value)), text)
        except (OverflowError, OSError, ValueError):
            raise _out_of_range(text) from None
    iso = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        raise UsageError(
            f"cannot read time {text!r}: use ISO 8601 such as 2025-06-29T23:59:00Z "
            "(an offset like +02:00 is allowed) or epoch seconds such as 1751241540"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        # Year 1 with a positive offset, or 9999 with a negative one, is no datetime in UTC.
        moment = parsed.astimezone(UTC)
    except OverflowError:
        raise _out_of_range(text) from None
    return _in_range(moment, text)


def _epoch_micros(value: str) -> int:
    """Epoch seconds as text, to the microsecond at or before it (digits past the sixth are cut, as an
    ISO time's are). Read as a float, 1700000009.9999996 was 1700000010: a moment after the one asked."""
    negative = value.startswith("-")
    whole, _, fraction = value.lstrip("-").partition(".")
    micros = int(whole) * 1_000_000 + int(fraction[:6].ljust(6, "0"))
    if negative:
        return -(micros + (1 if fraction[6:].strip("0") else 0))
    return micros


def format_time(moment: datetime | None) -> str:
    """Format an aware datetime as ISO 8601 UTC with a Z (microseconds only when present); None as '-'."""
    if moment is None:
        return "-"
    moment = moment.astimezone(UTC)
    spec = "%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return moment.strftime(spec)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch for an aware datetime (the unit the change files store)."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """Aware UTC datetime from microseconds since the epoch."""
    seconds, rest = divmod(micros, 1_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest)
