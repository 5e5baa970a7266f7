"""DynamoDB's naming rules, checked where names come in (the command line, stream ARNs); standard library only."""

from __future__ import annotations

import re

_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")


def table_name_problem(name: str) -> str | None:
    """Why ``name`` is not a DynamoDB table name (None when it is one)."""
    if not _TABLE_NAME.fullmatch(name) or name in (".", ".."):
        shown = name if len(name) <= 60 else name[:57] + "..."
        return (f"{shown!r} is not a DynamoDB table name (3 to 255 characters of letters, digits, "
                "'_', '-' and '.')")
    return None
