"""The batch writer: BatchWriteItem in parallel workers, losing nothing.

Requests travel as their DynamoDB-JSON wire text and go 25 at a time (or fewer, to stay under 16 MB
a call); a botocore client sends those bytes as the body, signed and retried by botocore
(replayer.restoring.wire), with no round trip through Python values. ``UnprocessedItems``, throttling and
transaction conflicts are retried with exponential backoff and full jitter; a batch that still fails
after the last attempt is counted as failed, never dropped silently. All workers share one adaptive
rate (replayer.restoring.rate): it backs off when the target pushes back and climbs again, never above
``max_rate``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from changelog.progress import Progress
from replayer.restoring.rate import AdaptiveRate
from replayer.restoring.wire import (
    Sent,
    enable_raw_bodies,
    envelope_bytes,
    is_botocore_client,
    put_request,
    request_text,
    send_raw,
    send_values,
)

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
# The target is out of capacity (or overloaded): the shared rate backs off, not just this call.
_PUSH_BACK = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable"}
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


_T = TypeVar("_T")


def _chunks(requests: Iterable[_T], size: Callable[[_T], int], limit: int) -> Iterator[list[_T]]:
    batch: list[_T] = []
    total = 0
    for request in requests:
        request_size = size(request) + 1  # the comma between requests
        if batch and (len(batch) == MAX_ITEMS or total + request_size > limit):
            yield batch
            batch, total = [], 0
        batch.append(request)
        total += request_size
    if batch:
        yield batch


def chunk_requests(requests: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Group write requests into BatchWriteItem calls of at most 25 requests and 16 MB."""
    return _chunks(requests, lambda request: len(request_text(request)), MAX_BYTES)


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.written = 0
        self.retried = 0
        self.failed = 0
        self.errors: list[str] = []


def _backoff(attempt: int, settings: WriteSettings, sleep: Callable[[float], None]) -> None:
    sleep(random.uniform(0, min(settings.max_delay, settings.base_delay * 2**attempt)))


Sender = Callable[[str, list[bytes]], Sent]


def _sender(client: Any) -> Sender:
    """Raw bodies through a botocore client; Python values through anything else with ``batch_write_item``."""
    if is_botocore_client(client):
        enable_raw_bodies(client)
        return lambda table, requests: send_raw(client, table, requests)
    return lambda table, requests: send_values(client, table, requests)


def _write_batch(send: Sender, table: str, batch: list[bytes], settings: WriteSettings, counters: _Counters,
                 rate: AdaptiveRate, progress: Progress, sleep: Callable[[float], None]) -> None:
    pending = batch
    for attempt in range(settings.max_attempts):
        delay = rate.reserve(len(pending))
        if delay > 0:
            sleep(delay)
        try:
            sent = send(table, pending)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code not in _RETRYABLE:
                with counters.lock:
                    counters.failed += len(pending)
                    counters.errors.append(f"{code}: {exc.response['Error'].get('Message', '')}")
                return
            rate.record(0, pushed_back=code in _PUSH_BACK)
            with counters.lock:
                counters.retried += len(pending)
            _backoff(attempt, settings, sleep)
            continue
        except BotoCoreError:
            with counters.lock:
                counters.retried += len(pending)
            _backoff(attempt, settings, sleep)
            continue
        unprocessed = sent.unprocessed
        done = len(pending) - len(unprocessed)
        rate.record(done, pushed_back=bool(unprocessed) or sent.retried)
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
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> tuple[WriteReport, list[str]]:
    """Send PutRequest/DeleteRequest dicts (boto3 low-level form) to ``table``.

    Returns the report and the distinct error messages of failed requests. Requests are pulled
    lazily, with at most two batches per worker in flight, so memory stays flat on big restores.
    """
    return _write(client, table, (request_text(request) for request in requests), settings=settings,
                  progress=progress, sleep=sleep, clock=clock)


def write_images(client: Any, table: str, images: Iterable[str | bytes], *,
                 settings: WriteSettings | None = None, progress: Progress | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> tuple[WriteReport, list[str]]:
    """Put stored DynamoDB-JSON images (validated at capture: already the wire format) into ``table``.

    The same writer as ``write_requests``; the images are never parsed.
    """
    return _write(client, table, (put_request(image) for image in images), settings=settings,
                  progress=progress, sleep=sleep, clock=clock)


def _write(client: Any, table: str, requests: Iterable[bytes], *, settings: WriteSettings | None,
           progress: Progress | None, sleep: Callable[[float], None],
           clock: Callable[[], float]) -> tuple[WriteReport, list[str]]:
    settings = settings or WriteSettings()
    progress = progress or Progress("writing", stream=None)
    send = _sender(client)
    counters = _Counters()
    rate = AdaptiveRate(settings.max_rate, clock=clock)
    limit = MAX_BYTES - envelope_bytes(table)
    started = time.monotonic()
    in_flight: set[Future[None]] = set()
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        for batch in _chunks(requests, len, limit):
            if len(in_flight) >= settings.workers * 2:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
            in_flight.add(pool.submit(_write_batch, send, table, batch, settings, counters, rate, progress, sleep))
        for future in in_flight:
            future.result()
    progress.close()
    report = WriteReport(counters.written, counters.retried, counters.failed, time.monotonic() - started)
    return report, sorted(set(counters.errors))
