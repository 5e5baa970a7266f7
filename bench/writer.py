"""Restore writer throughput against a latency stub: today's writer beside the writer it replaced and boto3's.

Run ``python -m bench.writer [--items N] [--workers 8 32] [--repeat 3] [--latency-ms 10]``.

A stub DynamoDB (a local HTTP server on 127.0.0.1, in a child process so its CPU is not counted)
answers every BatchWriteItem after ``--latency-ms`` with no UnprocessedItems. Against it, at each
worker count, in alternating order:

- ``raw``: ``replayer.restoring.writer.write_images``, the stored DynamoDB JSON sent as the request body;
- ``values``: the writer as it was before, kept here as the baseline: every image parsed into
  Python (``json.loads``, base64 to bytes), sized with ``json.dumps``, then validated and serialised
  again by botocore;
- ``batch_writer``: boto3's ``Table.batch_writer`` in N threads over TypeDeserializer'd items, what a
  hand-written restore does.

Printed per path: items/s (wall) and CPU µs per item of this process (all threads; the stub's CPU
is not in it), medians over ``--repeat`` runs. The items are storegen's (~400 bytes of DynamoDB JSON).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import numpy as np
from boto3.dynamodb.types import TypeDeserializer
from botocore.config import Config

from bench.storegen import _images as storegen_images
from changelog.codec import base64_to_binaries
from replayer.restoring.writer import WriteSettings, write_images

TABLE = "orders"
_ANSWER = b'{"UnprocessedItems":{}}'
_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: "
             + str(len(_ANSWER)).encode() + b"\r\n\r\n" + _ANSWER)


class _Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: botocore reuses its pooled connections
    latency = 0.01

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # The answer leaves at once: no Nagle wait for the client's delayed ACK (40 ms, not the stub's latency).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(self.latency)
        self.wfile.write(_RESPONSE)  # status line, headers and body in one write


def _serve(port: int, latency: float, ready: Any) -> None:
    _Stub.latency = latency
    server = ThreadingHTTPServer(("127.0.0.1", port), _Stub)
    server.daemon_threads = True
    ready.set()
    server.serve_forever()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_images(count: int) -> list[str]:
    """``count`` distinct items as stored DynamoDB JSON (storegen's shape)."""
    key = np.arange(count, dtype=np.int64)
    images = storegen_images(key, key * 3 + 1)
    return [str(image) for image in images.to_pylist()]


def _client(url: str, workers: int) -> Any:
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
                        aws_secret_access_key="bench",
                        config=Config(max_pool_connections=workers, retries={"mode": "standard"}))


def raw(url: str, images: list[str], workers: int) -> int:
    """Today's writer."""
    report, errors = write_images(_client(url, workers), TABLE, images, settings=WriteSettings(workers=workers))
    assert not errors and report.failed == 0
    return report.written


# The writer before the wire-format path, kept as the baseline (replayer/restoring/writer.py and
# replay._put_requests as they were): parse each image, size it with json.dumps, let botocore
# validate and serialise it again.
def _old_requests(images: Iterable[str]) -> Iterator[dict[str, Any]]:
    for image in images:
        yield {"PutRequest": {"Item": base64_to_binaries(json.loads(image))}}


def _old_size(request: dict[str, Any]) -> int:
    return len(json.dumps(request, default=lambda value: "x" * len(value)))


def _old_chunks(requests: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for request in requests:
        request_size = _old_size(request)
        if batch and (len(batch) == 25 or size + request_size > 16 * 1024 * 1024):
            yield batch
            batch, size = [], 0
        batch.append(request)
        size += request_size
    if batch:
        yield batch


def values(url: str, images: list[str], workers: int) -> int:
    """The writer before this one (Python values through botocore's validator and serialiser)."""
    client = _client(url, workers)
    written = 0
    lock = threading.Lock()

    def send(batch: list[dict[str, Any]]) -> None:
        nonlocal written
        response = client.batch_write_item(RequestItems={TABLE: batch})
        assert not response.get("UnprocessedItems", {}).get(TABLE)
        with lock:
            written += len(batch)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(send, batch) for batch in _old_chunks(_old_requests(images))]:
            future.result()
    return written


def batch_writer(url: str, images: list[str], workers: int) -> int:
    """boto3's resource ``batch_writer``, one per thread, over deserialised items."""
    resource = boto3.resource("dynamodb", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
                              aws_secret_access_key="bench",
                              config=Config(max_pool_connections=workers, retries={"mode": "standard"}))
    deserializer = TypeDeserializer()

    def share(part: list[str]) -> int:
        with resource.Table(TABLE).batch_writer() as writer:
            for image in part:
                item = {name: deserializer.deserialize(value)
                        for name, value in base64_to_binaries(json.loads(image)).items()}
                writer.put_item(Item=item)
        return len(part)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(share, [images[n::workers] for n in range(workers)]))


PATHS: dict[str, Callable[[str, list[str], int], int]] = {"raw": raw, "values": values,
                                                          "batch_writer": batch_writer}


def measure(path: Callable[[str, list[str], int], int], url: str, images: list[str],
            workers: int) -> tuple[float, float]:
    """(items/s, CPU µs per item) of one run."""
    wall, cpu = time.perf_counter(), time.process_time()
    written = path(url, images, workers)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert written == len(images)
    return written / wall, cpu / written * 1e6


def main(argv: list[str] | None = None) -> None:
    """Run every path at every worker count and print the medians side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=30_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    args = parser.parse_args(argv)
    images = make_images(args.items)
    print(f"{len(images):,} items, {sum(map(len, images)) / len(images):.0f} bytes of DynamoDB JSON each; "
          f"stub answers after {args.latency_ms:g} ms; {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}")
    port = _free_port()
    ready = multiprocessing.get_context("spawn").Event()
    stub = multiprocessing.get_context("spawn").Process(target=_serve, args=(port, args.latency_ms / 1000, ready),
                                                        daemon=True)
    stub.start()
    try:
        if not ready.wait(30):
            raise SystemExit("the stub did not start")
        url = f"http://127.0.0.1:{port}"
        raw(url, images[:2_000], 8)  # warm up: imports, connections, botocore's loaders
        for workers in args.workers:
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in args.paths}
            for _ in range(args.repeat):
                order = list(args.paths)
                random.shuffle(order)
                for name in order:
                    results[name].append(measure(PATHS[name], url, images, workers))
            base = statistics.median(rate for rate, _ in results["values"]) if "values" in results else None
            for name in args.paths:
                rate = statistics.median(r for r, _ in results[name])
                cpu = statistics.median(c for _, c in results[name])
                ratio = f"  {rate / base:.2f}x the old writer" if base else ""
                print(f"workers {workers:>3}  {name:<13} {rate:>9,.0f} items/s  {cpu:>6.1f} CPU µs/item{ratio}")
    finally:
        stub.terminate()
        stub.join(10)


if __name__ == "__main__":
    main()
