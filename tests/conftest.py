"""Shared fixtures: an isolated AWS environment (moto), a local store and an S3 store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from hypothesis import settings
from moto import mock_aws
from moto.sqs.models import SQSBackend

from changelog.store import LocalStore, S3Store, Store
from stream_consumer import handler

# Tests never assert times, and hypothesis's default 200 ms deadline is one: on a loaded machine it
# failed properties at random (a sort of ten byte strings took 315 ms once).
settings.register_profile("ddb-rewind", deadline=None)
settings.load_profile("ddb-rewind")

for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    "POWERTOOLS_METRICS_NAMESPACE": "ddb-rewind-tests",
}.items():
    os.environ[_name] = _value
os.environ.pop("AWS_ENDPOINT_URL", None)
# Spark's JVMs (sessions and spark-submit) start with the suite's settings (see its spark-defaults.conf).
os.environ["SPARK_CONF_DIR"] = str(Path(__file__).parent / "spark-conf")
os.environ.pop("AWS_PROFILE", None)
# moto starts every test with a new boto3 session, and each session parses the services' model files
# again: about 50 ms for a test's first client. The models are read-only, so one loader serves them all.
_LOADER = botocore.loaders.create_loader()
botocore.session.create_loader = lambda *args, **kwargs: _LOADER  # type: ignore[assignment]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """An empty local store."""
    root = tmp_path / "store"
    root.mkdir()
    return LocalStore(root)


@pytest.fixture
def aws() -> Iterator[None]:
    """Every boto3 call inside goes to moto's in-process AWS."""
    with mock_aws():
        yield


@pytest.fixture
def sqs_answers_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's in-process SQS answers a long poll of an empty queue at once.

    ``recover`` long-polls (real SQS's short poll samples only some servers, so an empty answer proves
    little). moto's queue is exact and nothing sends to it while recover waits, so its empty answer
    is the same without the wait (a second per run).
    """
    real_receive = SQSBackend.receive_message

    def receive_without_waiting(self: SQSBackend, queue_name: str, count: int, wait_seconds_timeout: int,
                                *args: Any, **kwargs: Any) -> Any:
        return real_receive(self, queue_name, count, 0, *args, **kwargs)

    monkeypatch.setattr(SQSBackend, "receive_message", receive_without_waiting)


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch, aws: None) -> Iterator[None]:
    """Fresh stream-consumer handler caches for every test; all AWS calls (DescribeTable) go to moto."""
    monkeypatch.setattr(handler, "_stores", {})
    monkeypatch.setattr(handler, "_known_meta", set())
    monkeypatch.delenv("REWIND_TABLE", raising=False)
    yield


@pytest.fixture
def handler_store(store: Store, lambda_env: None, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The stream-consumer handler writes into the local test store."""
    monkeypatch.setenv("REWIND_STORE", store.uri)
    return store


@pytest.fixture
def s3_store(aws: None) -> Store:
    """An empty store in a moto bucket."""
    boto3.client("s3").create_bucket(Bucket="rewind-store")
    return S3Store("rewind-store", "backups")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding slow or Spark tests first, each file's tests in their own order.

    pytest-xdist (``--dist loadfile --no-loadscope-reorder``, pyproject.toml) hands files to workers in
    this order: a long file handed out last would keep one worker busy after the other had finished.
    """
    heavy = {item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("spark")}
    items.sort(key=lambda item: item.path not in heavy)
