"""The store under S3 faults: every failure is one StoreError line; an answer lost after a write is not a race."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from changelog.errors import ConflictError, StoreError
from changelog.store import ObjectMissing, Store
from tests.faults.proxy import FaultProxy

OPERATIONS: dict[str, tuple[str, Callable[[Store], object]]] = {
    "read": ("GET", lambda store: store.read("t/x")),
    "write": ("PUT", lambda store: store.write("t/y", b"new")),
    "conditional write": ("PUT", lambda store: store.write("t/z", b"new", if_absent=True)),
    "list": ("GET", lambda store: store.list("t/")),
    "sizes": ("GET", lambda store: store.sizes("t/")),
    "modified times": ("GET", lambda store: store.modified_times("t/")),
    "delete": ("DELETE", lambda store: store.delete("t/x")),
    "exists": ("HEAD", lambda store: store.exists("t/x")),
}


@pytest.fixture
def s3(proxy: FaultProxy, direct: Callable[[str], object]) -> Store:
    from changelog.store import open_store

    direct("s3").create_bucket(Bucket="faults")  # type: ignore[attr-defined]
    store = open_store("s3://faults/backups", allow_empty=True)  # a new store
    store.write("t/x", b"old")
    return store


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@pytest.mark.parametrize("fault", ["error", "drop"])
def test_every_s3_operation_turns_a_persistent_fault_into_one_store_error_line(
        s3: Store, proxy: FaultProxy, operation: str, fault: str) -> None:
    method, call = OPERATIONS[operation]
    proxy.add(fault, method=method, service="s3", path="/faults", count=100)
    with pytest.raises(StoreError) as raised:
        call(s3)
    assert type(raised.value) is StoreError
    assert "\n" not in str(raised.value) and "s3://faults/backups" in str(raised.value)


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_single_dropped_connection_is_retried_away(s3: Store, proxy: FaultProxy, operation: str) -> None:
    method, call = OPERATIONS[operation]
    rule = proxy.add("drop", method=method, service="s3", path="/faults")
    call(s3)
    assert rule.hits == 1


def test_a_missing_object_stays_object_missing(s3: Store) -> None:
    with pytest.raises(ObjectMissing):
        s3.read("t/none")
    assert not s3.exists("t/none")


def test_a_conditional_put_applied_with_its_answer_lost_is_our_own_success(s3: Store, proxy: FaultProxy) -> None:
    lost = proxy.add("drop_after", method="PUT", service="s3", path="manifest.json")
    s3.write("snap/manifest.json", b"ours", if_absent=True)
    assert lost.hits == 1
    assert len(proxy.requests(method="PUT", path="manifest.json")) == 2  # the retry met the object
    assert s3.read("snap/manifest.json") == b"ours"


def test_a_conditional_put_over_different_bytes_is_still_a_conflict(s3: Store) -> None:
    s3.write("snap/manifest.json", b"theirs", if_absent=True)
    with pytest.raises(ConflictError):
        s3.write("snap/manifest.json", b"ours", if_absent=True)
    assert s3.read("snap/manifest.json") == b"theirs"


def _captured(store: Store) -> None:
    from tests.workloads import Workload

    work = Workload(table="orders")
    for n in range(10):
        work.put({"pk": {"S": f"k{n}"}}, 1_750_000_000 + n)
    work.capture(store, batch=20)


def test_a_head_bucket_that_fails_is_s3_unreachable_not_a_missing_bucket(s3: Store, proxy: FaultProxy) -> None:
    from tests.faults.harness import one_error_line, run_rewind

    proxy.add("error", method="HEAD", service="s3", path=r"^/faults/?$", count=100, status=503,
              code="ServiceUnavailable")
    done = run_rewind("status", "--store", s3.uri, proxy=proxy)
    line = one_error_line(done.stderr)
    assert done.returncode == 7, line
    assert "does not exist" not in line


def test_a_missing_bucket_is_still_not_found(proxy: FaultProxy) -> None:
    from tests.faults.harness import run_rewind

    done = run_rewind("status", "--store", "s3://no-such-bucket/backups", proxy=proxy)
    assert done.returncode == 4 and "does not exist" in done.stderr


@pytest.mark.slow
def test_a_failed_second_read_of_a_verified_file_is_s3_failing_not_damage(s3: Store, proxy: FaultProxy,
                                                                          tmp_path: Path) -> None:
    from tests.faults.harness import one_error_line, run_rewind

    _captured(s3)
    # The first GET of each change file (the checksum check) passes; DuckDB's read through pyarrow fails.
    proxy.add("error", method="GET", service="s3", path=r"changes/.*\.parquet", skip=1, count=1000, status=503,
              code="SlowDown")
    done = run_rewind("replay", "--table", "orders", "--store", s3.uri, "--at", "1750000005", "--to-file",
                      str(tmp_path / "out.jsonl"), proxy=proxy)
    line = one_error_line(done.stderr)
    assert done.returncode == 7, line
    assert "damaged" not in line
