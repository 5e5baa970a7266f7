"""What one coverage read asks of S3: every command and the hourly verifier pay it, for as long as the store lives."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from changelog.codec import decode_lambda_record
from changelog.layout import checkpoints_root, table_root
from changelog.state import coverage
from changelog.store import LocalStore, ObjectMissing, ReadOnce, S3Store, Store
from stream_consumer.capture import capture_batch
from stream_consumer.checkpoint import Checkpoint, write_checkpoint
from tests.model import Op, stream_records
from tests.test_store import s3_over_http  # noqa: F401  (the fixture)

TABLE = "orders"
T0 = 1_700_000_000
OPS = [Op(i % 3, {"pk": {"S": "abc"[i % 3]}, "n": {"N": str(i)}}, T0 + 600 * i) for i in range(6)]


def _requests(store: S3Store) -> Counter[tuple[str, str]]:
    """(operation, key or prefix) of every S3 call the store's client makes from now on."""
    made: Counter[tuple[str, str]] = Counter()

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        made[(model.name, str(params.get("Key") or params.get("Prefix")))] += 1

    store.client.meta.events.register("before-parameter-build.s3.*", record)
    return made


def test_a_coverage_read_fetches_each_checkpoint_once_and_lists_the_table_once(
        s3_over_http: Store) -> None:  # noqa: F811
    assert isinstance(s3_over_http, S3Store)
    capture_batch(s3_over_http, stream_records(TABLE, OPS), decode_lambda_record, source="test")
    for n in range(4):
        write_checkpoint(s3_over_http, TABLE, Checkpoint(f"shard-{n}", f"shard-{n - 1}" if n else None,
                                                         closed=n < 3, watermark_us=(T0 + 3000) * 1_000_000))
    made = _requests(s3_over_http)
    assert coverage(s3_over_http, TABLE).latest_us == (T0 + 3000) * 1_000_000
    checkpoints = {key: count for (operation, key), count in made.items()
                   if operation == "GetObject" and "/" + checkpoints_root(TABLE) in "/" + key}
    assert len(checkpoints) == 4 and set(checkpoints.values()) == {1}
    assert made[("ListObjectsV2", f"backups/{table_root(TABLE)}/")] == 1


class _Counting(LocalStore):
    def __init__(self, store: LocalStore) -> None:
        super().__init__(store.root)
        self.reads: Counter[str] = Counter()

    def read(self, path: str) -> bytes:
        self.reads[path] += 1
        return super().read(path)


def test_read_once_fetches_an_object_once_and_a_missing_one_each_time(store: LocalStore) -> None:
    counting = _Counting(store)
    counting.write("a.json", b"{}")
    once = ReadOnce(counting)
    assert once.read("a.json") == once.read("a.json") == b"{}"
    for _ in range(2):
        with pytest.raises(ObjectMissing):
            once.read("missing.json")
    assert counting.reads == Counter({"a.json": 1, "missing.json": 2})
    assert once.uri == store.uri and once.list("") == ["a.json"]
