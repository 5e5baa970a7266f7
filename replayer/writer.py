"""The batch writer: BatchWriteItem in parallel workers, losing nothing.

Requests go 25 at a time (or fewer, to stay under 16 MB a call). ``UnprocessedItems``, throttling
and transaction conflicts are retried with exponential backoff and full jitter; a batch that still fails after the
last attempt is counted as failed, never dropped silently. An optional rate cap (items/s) is
shared by all workers.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from changelog.progress import Progress

MAX_ITEMS = 25
MAX_BYTES = 16 * 1024 * 1024
_RETRYABLE = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "LimitExceededException",
        # An item of the batch is in an ongoing transaction: transient, like throttling.
        "TransactionConflictException",
    }
)


@dataclass(frozen=True)
class WriteSettings:
    """How hard to write: workers, an optional items/s cap, and the retry schedule."""

    workers: int = 8
    max_rate: float | None = None
    max_attempts: int = 12
    base_delay: float = 0.05
    max_delay: float = 5.0


@dataclass(frozen=True)
class WriteReport:
    """Outcome of a write: every request is in exactly one of written or failed."""

    written: int
    retried: int
    failed: int
    seconds: float


class _RateLimiter:
    """A token bucket shared by the workers (state: tokens and the last refill time)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def take(self, count: int) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= count or self.tokens >= self.rate:
                    self.tokens -= count
                    return
                wait_for = (count - self.tokens) / self.rate
            time.sleep(min(wait_for, 1.0))


def _request_size(request: dict[str, Any]) -> int:
    return len(json.dumps(request, default=lambda value: "x" * len(value)))


def chunk_requests(requests: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Group write requests into BatchWriteItem calls of at most 25 requests and 16 MB."""
    batch: list[dict[str, Any]] = []
    size = 0
    for request in requests:
        request_size = _request_size(request)
        if batch and (len(batch) == MAX_ITEMS or size + request_size > MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(request)
        size += request_size
    if batch:
        yield batch


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.written = 0
        self.retried = 0
        self.failed = 0
        self.errors: list[str] = []


def _backoff(attempt: int, settings: WriteSettings, sleep: Callable[[float], None]) -> None:
    sleep(random.uniform(0, min(settings.max_delay, settings.base_delay * 2**attempt)))


def _write_batch(client: Any, table: str, batch: list[dict[str, Any]], settings: WriteSettings,
                 counters: _Counters, limiter: _RateLimiter | None, progress: Progress,
                 sleep: Callable[[float], None]) -> None:
    pending = batch
    for attempt in range(settings.max_attempts):
        if limiter:
            limiter.take(len(pending))
        try:
            response = client.batch_write_item(RequestItems={table: pending})
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code not in _RETRYABLE:
                with counters.lock:
                    counters.failed += len(pending)
                    counters.errors.append(f"{code}: {exc.response['Error'].get('Message', '')}")
                return
            with counters.lock:
                counters.retried += len(pending)
            _backoff(attempt, settings, sleep)
            continue
        except BotoCoreError:
            with counters.lock:
                counters.retried += len(pending)
            _backoff(attempt, settings, sleep)
            continue
        unprocessed = response.get("UnprocessedItems", {}).get(table, [])
        done = len(pending) - len(unprocessed)
        with counters.lock:
            counters.written += done
            counters.retried += len(unprocessed)
        progress.advance(done)
        if not unprocessed:
            return
        pending = unprocessed
        _backoff(attempt, settings, sleep)
    with counters.lock:
        counters.failed += len(pending)
        counters.errors.append(f"{len(pending)} requests still unprocessed after {settings.max_attempts} attempts")


def write_requests(client: Any, table: str, requests: Iterable[dict[str, Any]], *,
                   settings: WriteSettings | None = None, progress: Progress | None = None,
                   sleep: Callable[[float], None] = time.sleep) -> tuple[WriteReport, list[str]]:
    """Send PutRequest/DeleteRequest dicts (boto3 low-level form) to ``table``.

    Returns the report and the distinct error messages of failed requests. Requests are pulled
    lazily, with at most two batches per worker in flight, so memory stays flat on big restores.
    """
    settings = settings or WriteSettings()
    progress = progress or Progress("writing", stream=None)
    counters = _Counters()
    limiter = _RateLimiter(settings.max_rate) if settings.max_rate else None
    started = time.monotonic()
    in_flight: set[Future[None]] = set()
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        for batch in chunk_requests(requests):
            if len(in_flight) >= settings.workers * 2:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
            in_flight.add(pool.submit(_write_batch, client, table, batch, settings, counters, limiter,
                                      progress, sleep))
        for future in in_flight:
            future.result()
    progress.close()
    report = WriteReport(counters.written, counters.retried, counters.failed, time.monotonic() - started)
    return report, sorted(set(counters.errors))
