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


_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def s3_uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not ``s3://bucket[/prefix]`` with an S3 bucket name (None when it is one)."""
    bucket = uri.removeprefix("s3://").partition("/")[0]
    if not bucket:
        return f"{uri!r} names no bucket: write s3://bucket/prefix"
    if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        shown = bucket if len(bucket) <= 60 else bucket[:57] + "..."
        return (f"{shown!r} is not an S3 bucket name (3 to 63 lowercase letters, digits, '.' and '-', "
                "starting and ending with a letter or digit)")
    return None
