"""The records that hold coverage back are answered for: the ledger notices one removed, ``check`` one damaged.

A quarantined record and a pending batch record each stop restores at the change they stand for.
Removed by hand, they would lift that stop silently and restores would answer across a change the
store does not hold; the ledger's ``keep`` and ``pend`` records turn such a removal into the same
loss, and ``check`` names it. Kinesis change files, named by sequence numbers longer than
DynamoDB's, are vouched for like any other. And ``check`` reads capture's records and quarantine
documents as readers do, so one that makes every reader refuse the table is not called sound.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from changelog.captured import record_pending_batch, record_stored_batch
from changelog.codec import decode_lambda_record
from changelog.errors import DamagedStore, DecodeError, TimeOutOfRange
from changelog.layout import checkpoint_path
from changelog.meta import meta_from_description, write_meta
from changelog.quarantine import quarantine_paths
from changelog.state import change_files, check_restorable, coverage
from changelog.store import LocalStore, Store
from changelog.timefmt import from_micros
from compactor.ledger_fold import fold_ledger
from replayer.proving.check import check_store
from stream_consumer import handler
from stream_consumer.capture import capture_batch
from stream_consumer.checkpoint import Checkpoint, write_checkpoint
from stream_consumer.requeue import requeue
from tests.events import event, kinesis_record
from tests.workloads import BASE, Workload

US = 1_000_000
ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2025-06-15T00:00:00.000"


def _workload() -> Workload:
    work = Workload()
    for n in range(6):
        work.put({"pk": {"S": "k"}, "n": {"N": str(n)}}, BASE + 10 * n)
    return work


def _restorable(store: Store, table: str, second: int) -> bool:
    try:
        check_restorable(coverage(store, table), from_micros(second * US), second * US)
    except TimeOutOfRange:
        return False
    return True


def _findings(store: Store) -> dict[str, str]:
    return {finding.path: finding.problem for finding in check_store(store).problems}


@pytest.fixture
def quarantined(store: Store) -> tuple[Workload, str]:
    """A batch whose third record cannot be decoded: it is quarantined, and moments from it are refused."""
    work = _workload()
    write_meta(store, meta_from_description(work.description()))
    records: list[dict[str, Any]] = copy.deepcopy(work.records)
    records[2]["dynamodb"]["NewImage"] = records[2]["dynamodb"]["Keys"] = {"pk": {"Q": "?"}}
    capture_batch(store, records, decode_lambda_record, source="lambda-dynamodb")
    (path,) = quarantine_paths(store, "orders")
    assert not _restorable(store, "orders", BASE + 25)
    return work, path


def test_a_quarantined_record_removed_by_hand_still_stops_restores_at_its_change(
        store: Store, quarantined: tuple[Workload, str]) -> None:
    _work, path = quarantined
    store.delete(path)
    assert _restorable(store, "orders", BASE + 15)
    assert not _restorable(store, "orders", BASE + 25)


def test_check_names_a_quarantined_record_removed_by_hand(store: Store, quarantined: tuple[Workload, str]) -> None:
    _work, path = quarantined
    assert path not in _findings(store)
    store.delete(path)
    assert _findings(store)[path].startswith("is missing: the ledger record")


def test_a_quarantined_record_requeue_removed_is_no_loss(store: Store, quarantined: tuple[Workload, str]) -> None:
    work, path = quarantined
    # The cause is fixed: the record decodes now (its keys and image put right).
    document = json.loads(store.read(path))
    document["record"]["dynamodb"] = work.records[2]["dynamodb"]
    store.write(path, json.dumps(document).encode())
    assert requeue(store, "orders").files
    assert not store.exists(path)
    assert _restorable(store, "orders", BASE + 25)
    assert _findings(store) == {}


def test_a_folded_ledger_still_answers_for_a_quarantined_record(
        store: Store, quarantined: tuple[Workload, str]) -> None:
    _work, path = quarantined
    capture_batch(store, _workload().records[:1], decode_lambda_record, source="test")  # a later record in the chain
    assert fold_ledger(store, "orders") > 0
    store.delete(path)
    assert not _restorable(store, "orders", BASE + 25)
    assert path in _findings(store)


def test_a_fold_after_requeue_keeps_the_drop_of_a_keep_it_cannot_fold(store: Store) -> None:
    # Two records fail to decode once: the capture chain ends with a keep, which no fold takes (a
    # chain's newest never is). The requeue chain's first drop is folded: were it dropped from the
    # fold, that keep would be read as the last word on a record requeue removed.
    work = _workload()
    write_meta(store, meta_from_description(work.description()))
    failing = {work.records[4]["eventID"], work.records[5]["eventID"]}

    def once(record: dict[str, Any]) -> Any:
        if record["eventID"] in failing:
            raise DecodeError("not decodable until the fix")
        return decode_lambda_record(record)

    capture_batch(store, work.records, once, source="lambda-dynamodb")
    # requeue and compact run as processes of their own: each writes a chain of its own (one per store object)
    assert len(requeue(LocalStore(store.root), "orders").files) == 1
    assert fold_ledger(LocalStore(store.root), "orders") > 0
    assert _findings(store) == {}
    assert _restorable(store, "orders", BASE + 50)


@pytest.fixture
def pending(store: Store) -> tuple[Workload, str]:
    """Batches 1 and 3 stored; batch 2 (from the third change) failed and is pending."""
    work = _workload()
    write_meta(store, meta_from_description(work.description()))
    capture_batch(store, work.records[:2], decode_lambda_record, source="test")
    path = record_pending_batch(store, "orders", ARN, work.records[2]["dynamodb"]["SequenceNumber"],
                                (BASE + 20) * US - 1, "test")
    capture_batch(store, work.records[4:], decode_lambda_record, source="test")
    assert not _restorable(store, "orders", BASE + 35)
    return work, path


def test_a_pending_batch_record_removed_by_hand_still_stops_restores_at_its_batch(
        store: Store, pending: tuple[Workload, str]) -> None:
    _work, path = pending
    store.delete(path)
    assert _restorable(store, "orders", BASE + 15)
    assert not _restorable(store, "orders", BASE + 35)


def test_check_names_a_pending_batch_record_removed_by_hand(store: Store, pending: tuple[Workload, str]) -> None:
    _work, path = pending
    store.delete(path)
    assert "a stream batch failed here" in _findings(store)[path]


def test_a_pending_batch_settled_by_its_stored_record_is_no_loss_without_its_record(
        store: Store, pending: tuple[Workload, str]) -> None:
    work, path = pending
    capture_batch(store, work.records[2:4], decode_lambda_record, source="test")
    first, last = (work.records[n]["dynamodb"]["SequenceNumber"] for n in (2, 3))
    record_stored_batch(store, "orders", ARN, first, last, "test")
    store.delete(path)
    assert _restorable(store, "orders", BASE + 35)
    assert path not in _findings(store)


KINESIS_SEQUENCE = "49590338271490256608559692538361571095921575989136588898"  # 56 digits, as Kinesis gives them


def test_kinesis_change_files_are_vouched_for_by_the_ledger(handler_store: Store,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWIND_TABLE", "sensors")
    key = {"id": {"S": "s-1"}}
    for n in range(2):
        record = kinesis_record("sensors", "MODIFY", key, (BASE + n) * 1000, str(int(KINESIS_SEQUENCE) + n),
                                new={**key, "v": {"N": str(n)}}, event_id=f"ddb-{n}")
        assert handler.lambda_handler(event([record]), None) == {"batchItemFailures": []}
    assert _findings(handler_store) == {}  # no record is foreign
    victim = change_files(handler_store, "sensors")[0]
    handler_store.delete(victim)
    assert _findings(handler_store)[victim].startswith("is missing: the ledger record")


def test_check_names_a_checkpoint_every_reader_refuses(store: Store, pending: tuple[Workload, str]) -> None:
    write_checkpoint(store, "orders", Checkpoint("shardId-1", None, closed=False, watermark_us=BASE * US))
    path = checkpoint_path("orders", "shardId-1")
    store.write(path, json.dumps({"shard_id": "shardId-1", "closed": "false"}).encode())
    with pytest.raises(DamagedStore):
        coverage(store, "orders")
    assert "is not a sound checkpoint" in _findings(store)[path]


def test_check_names_a_pending_batch_record_that_no_longer_parses(store: Store, pending: tuple[Workload, str]) -> None:
    _work, path = pending
    store.write(path, store.read(path)[:10])
    with pytest.raises(DamagedStore):
        coverage(store, "orders")
    assert path in _findings(store)


def test_check_names_a_quarantine_document_that_no_longer_parses(
        store: Store, quarantined: tuple[Workload, str]) -> None:
    _work, path = quarantined
    store.write(path, store.read(path)[:-40])
    assert not _restorable(store, "orders", BASE + 5)  # a loss of unknown time: every moment is refused
    assert "no readable quarantined_at" in _findings(store)[path]
