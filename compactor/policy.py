"""The retention policy (``--keep``) as text and as a value: parsing only, so the CLI can check it cheaply.

The grammar and what each entry keeps are described in ``compactor.retention``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from changelog.errors import UsageError

_ENTRY = re.compile(r"^(daily|monthly|changes)=(\d+)([a-z]?)$")
CHANGE_UNITS = {"h": "hours", "d": "days", "w": "weeks", "m": "months", "y": "years"}
_HOURS = {"h": 1, "d": 24, "w": 24 * 7, "m": 24 * 31, "y": 24 * 366}
MAX_RETENTION_HOURS = 1000 * 366 * 24
_GRAMMAR = "use e.g. daily=35d,monthly=24m,changes=400d (changes units: h, d, w, m, y)"


@dataclass(frozen=True)
class Policy:
    """A parsed ``--keep`` policy."""

    daily: int
    monthly: int
    changes: int
    changes_unit: str
    text: str


def parse_policy(text: str) -> Policy:
    """Parse ``daily=35d,monthly=24m,changes=400d``; raises UsageError with one line on any mistake."""
    seen: dict[str, tuple[int, str]] = {}
    for raw in text.split(","):
        entry = raw.strip().lower()
        match = _ENTRY.match(entry)
        if not match:
            raise UsageError(f"cannot read retention entry {raw.strip()!r}: {_GRAMMAR}")
        name, count, unit = match.group(1), int(match.group(2)), match.group(3)
        if name in seen:
            raise UsageError(f"retention entry {name!r} is given twice")
        expected = {"daily": ("d", ""), "monthly": ("m", "")}.get(name)
        if expected is not None and unit not in expected:
            raise UsageError(f"{name} counts {'days' if name == 'daily' else 'months'}: write {name}={count}"
                             f"{expected[0]}")
        if name == "changes":
            if unit not in CHANGE_UNITS:
                raise UsageError(f"changes={count}{unit} needs a unit of h, d, w, m or y, as in changes=400d")
            if count < 1:
                raise UsageError("changes must keep at least 1 unit of history")
        seen[name] = (count, unit)
    if "changes" not in seen:
        raise UsageError(f"the policy must say how long changes are kept (changes=...): {_GRAMMAR}")
    count, unit = seen["changes"]
    # Beyond a thousand years is a typo (and overflows date arithmetic): refused wherever a policy is read.
    if count * _HOURS[unit] > MAX_RETENTION_HOURS:
        raise UsageError(f"changes={count}{unit} is more than 1000 years")
    for name, limit in (("daily", 366_000), ("monthly", 12_000)):
        if seen.get(name, (0, ""))[0] > limit:
            raise UsageError(f"{name}={seen[name][0]} is more than 1000 years of snapshots")
    return Policy(
        daily=seen.get("daily", (0, ""))[0],
        monthly=seen.get("monthly", (0, ""))[0],
        changes=seen["changes"][0],
        changes_unit=seen["changes"][1],
        text=",".join(f"{name}={count}{unit}" for name, (count, unit) in seen.items()),
    )
