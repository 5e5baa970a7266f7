"""Shared fixtures: an isolated AWS environment (moto), a local store and an S3 store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from changelog.store import LocalStore, S3Store, Store
from stream_consumer import handler

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
os.environ.pop("AWS_PROFILE", None)


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
