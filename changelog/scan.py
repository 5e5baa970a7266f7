"""A parallel Scan of a DynamoDB table: one thread per segment, pages handed to a sink as they arrive."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from changelog.aws import translate
from changelog.codec import binaries_to_base64
from changelog.errors import TableNotFound, UsageError

PageSink = Callable[[list[dict[str, Any]]], None]


def parallel_scan(client: Any, table: str, segments: int, sink: PageSink, *, page_size: int | None = None) -> int:
    """Scan ``table`` with ``segments`` parallel workers; returns the number of items handed to ``sink``.

    ``sink`` gets each page's items as DynamoDB JSON with binaries as base64 text (the stored form)
    and is called from several threads: it must be thread-safe. A strongly consistent read is used
    so that each item is read as of the moment its page is served (after every write acknowledged
    before it). Any error stops the scan and is raised.
    """
    if segments < 1:
        raise UsageError("--segments must be at least 1")

    def scan_segment(segment: int) -> int:
        paginator = client.get_paginator("scan")
        kwargs: dict[str, Any] = {"TableName": table, "Segment": segment, "TotalSegments": segments,
                                  "ConsistentRead": True}
        if page_size:
            kwargs["PaginationConfig"] = {"PageSize": page_size}
        count = 0
        for page in paginator.paginate(**kwargs):
            items = [binaries_to_base64(item) for item in page.get("Items", [])]
            if items:
                sink(items)
            count += len(items)
        return count

    try:
        with ThreadPoolExecutor(max_workers=segments, thread_name_prefix="scan") as pool:
            return sum(pool.map(scan_segment, range(segments)))
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            raise TableNotFound(f"DynamoDB has no table {table!r} to scan") from None
        raise translate(exc, f"the scan of {table!r} failed") from None
    except BotoCoreError as exc:
        raise translate(exc, f"the scan of {table!r} failed") from None
