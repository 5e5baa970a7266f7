"""Fixtures of the fault suite: moto's server behind the fault proxy, stores of both kinds, real processes."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.retries.standard import ExponentialBackoff

from changelog.store import Store, open_store
from stream_consumer import handler
from tests.faults.proxy import FaultProxy
from tests.moto_http import MotoHttpServer

BUCKET = "faults"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server on 127.0.0.1, one for the session."""
    server = MotoHttpServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def moto_url(moto_server: str) -> str:
    """moto's server with fresh state (moto's backends are per process, shared by every server)."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=30).close()
    return moto_server


@pytest.fixture
def proxy(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The fault proxy in front of moto; every AWS client of this process and its children uses it."""
    running = FaultProxy(moto_url).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", running.url)
    # Three attempts per call (botocore's standard mode): a single fault is retried away, a
    # persistent one fails in about a second instead of the default's ten attempts.
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    # Before retrying a throttled call botocore waits a random part of 1, 2, 4 s: the same retries,
    # twenty times sooner, in this process (what is tested is what is retried, not botocore's wait).
    real_delay = ExponentialBackoff.delay_amount
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: real_delay(self, context) / 20)
    # Fresh handler caches: a cached S3 client would still point at an earlier test's endpoint.
    monkeypatch.setattr(handler, "_stores", {})
    monkeypatch.setattr(handler, "_known_meta", set())
    monkeypatch.delenv("REWIND_TABLE", raising=False)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def direct(moto_url: str) -> Callable[[str], Any]:
    """boto3 clients that reach moto without the proxy (for setting up and checking)."""
    return lambda service: boto3.client(service, endpoint_url=moto_url)


@pytest.fixture(params=["local", "s3"])
def fault_store(request: pytest.FixtureRequest, proxy: FaultProxy, direct: Callable[[str], Any],
                tmp_path: Path) -> Store:
    """A store of each kind; the s3:// one is reached through the proxy."""
    if request.param == "local":
        root = tmp_path / "store"
        root.mkdir()
        return open_store(str(root))
    direct("s3").create_bucket(Bucket=BUCKET)
    return open_store(f"s3://{BUCKET}/backups", allow_empty=True)  # a new store, filled by each test
