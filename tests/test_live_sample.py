"""The verifier's live sample: live items compared with the stored state exactly, or left undecided.

The live table is moto's; the store is captured from the same writes (``tests.workloads``). Reads
are dated by an injected clock, so "coverage has passed the read" is a stored change stamped later.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from changelog.codec import base64_to_binaries
from changelog.store import Store
from replayer.proving.live_sample import SLACK_S, LiveSample, live_sample
from replayer.proving.scheduled import verify_once
from tests.workloads import BASE, Workload, random_item

US = 1_000_000
READ_S = BASE + 100  # when the sample reads the live table (the injected clock)


def _clock() -> int:
    return READ_S * US


def _workload(items: int = 12) -> Workload:
    import random

    rng = random.Random(3)
    work = Workload(client=boto3.client("dynamodb"))
    work.create_live_table()
    for n in range(items):
        work.put(random_item(rng, {"pk": {"S": f"k{n:02d}"}}), BASE + n)
    return work


def _sample(store: Store, work: Workload, *, wait_s: float = 0) -> LiveSample:
    return live_sample(store, work.table, work.client, 50, seed=1, wait_s=wait_s, sleep=lambda _: None,
                       clock=_clock)


def _covered_after_the_read(store: Store, work: Workload) -> None:
    """A later change of another item: coverage now passes the read and its slack."""
    work.put({"pk": {"S": "zz-later"}, "n": {"N": "1"}}, READ_S + 60)
    work.capture(store)


@pytest.fixture
def work(aws: None, store: Store) -> Workload:
    result = _workload()
    result.capture(store)
    return result


def test_a_live_table_that_matches_the_store_agrees_item_for_item(store: Store, work: Workload) -> None:
    sample = _sample(store, work)
    assert sample.compared > 0 and sample.agreed == sample.compared
    assert sample.mismatched == () and sample.inconclusive == 0


def test_an_item_changed_behind_the_streams_back_is_a_mismatch_once_coverage_passes_the_read(
        store: Store, work: Workload) -> None:
    work.client.put_item(TableName=work.table, Item={"pk": {"S": "k03"}, "secret": {"S": "drifted"}})
    _covered_after_the_read(store, work)
    sample = _sample(store, work)
    assert sample.mismatched == ('{"pk":{"S":"k03"}}',)


def test_an_item_the_table_lost_but_the_store_holds_is_a_mismatch(store: Store, work: Workload) -> None:
    work.client.delete_item(TableName=work.table, Key={"pk": {"S": "k05"}})
    _covered_after_the_read(store, work)
    assert _sample(store, work).mismatched == ('{"pk":{"S":"k05"}}',)


def test_a_difference_coverage_has_not_passed_yet_is_undecided_not_a_failure(store: Store, work: Workload) -> None:
    work.client.put_item(TableName=work.table, Item={"pk": {"S": "k03"}, "n": {"N": "2"}})
    sample = _sample(store, work, wait_s=0)
    assert sample.mismatched == () and sample.inconclusive == 1
    assert "coverage did not pass" in sample.why_inconclusive[0]


def test_a_difference_behind_a_gap_is_undecided_at_once_without_waiting(store: Store, work: Workload) -> None:
    from changelog.gaps import Gap, write_gap

    write_gap(store, work.table, Gap("shardId-1", detected_at_us=READ_S * US, reason="trimmed",
                                     start_us=(READ_S - 30) * US, end_us=(READ_S - 20) * US,
                                     after_sequence_number="5"))
    work.client.put_item(TableName=work.table, Item={"pk": {"S": "k03"}, "n": {"N": "2"}})
    slept: list[float] = []
    sample = live_sample(store, work.table, work.client, 50, seed=1, wait_s=120, sleep=slept.append,
                         clock=lambda: READ_S * US + int(sum(slept) * US))  # a clock the sleeps move on
    assert sample.mismatched == () and sample.inconclusive == 1
    assert slept == [] and "a gap" in sample.why_inconclusive[0]


def test_an_item_that_changed_around_the_read_agrees_with_the_version_after_it(store: Store, work: Workload) -> None:
    # The change reached the table before the read and the stream stamped it a second later.
    item = {"pk": {"S": "k04"}, "n": {"N": "7"}}
    work.put(item, READ_S + 1)
    work.capture(store)
    _covered_after_the_read(store, work)
    sample = _sample(store, work)
    assert sample.mismatched == () and sample.inconclusive == 0 and sample.agreed == sample.compared


def test_a_change_stamped_at_the_edge_of_the_slack_before_the_read_is_no_mismatch(
        store: Store, work: Workload) -> None:
    # The stream stamped it SLACK_S seconds before the read, and the table did not show it yet: a
    # version within the slack may be on either side of the read. The "before" state held it too, so
    # both sides were one version, which the live item's older one differed from: a false mismatch.
    client, work.client = work.client, None  # a change the stream carries and the live read does not see
    work.put({"pk": {"S": "k04"}, "n": {"N": "7"}}, READ_S - SLACK_S)
    work.client = client
    _covered_after_the_read(store, work)
    sample = _sample(store, work)
    assert sample.mismatched == () and sample.agreed == sample.compared


def test_the_verifier_counts_a_live_mismatch_as_a_failure_naming_the_key_only(store: Store, work: Workload) -> None:
    work.client.put_item(TableName=work.table, Item={"pk": {"S": "k03"}, "secret": {"S": "drifted"}})
    _covered_after_the_read(store, work)

    def live(store: Store, table: str, seed: int) -> LiveSample:
        return live_sample(store, table, work.client, 50, seed, wait_s=0, clock=_clock)

    run = verify_once(store, work.table, (READ_S + 3600) * US, 3600 * US, 7 * 86400 * US, live)
    assert [f for f in run.failures if f.startswith("live sample")] == [
        'live sample: the stored item {"pk":{"S":"k03"}} differs from the table\'s']
    assert "drifted" not in json.dumps(run.failures)


def test_binary_keys_are_read_back_and_compared(aws: None, store: Store) -> None:
    work = Workload(key_types=("B",), client=boto3.client("dynamodb"))
    work.create_live_table()
    for n in range(5):
        key: dict[str, Any] = {"pk": {"B": base64_text(bytes([n, 255]))}}
        work.put({**key, "v": {"N": str(n)}}, BASE + n)
    work.capture(store)
    assert base64_to_binaries(work.records[0]["dynamodb"]["Keys"])["pk"]["B"] == bytes([0, 255])
    sample = _sample(store, work)
    assert sample.compared >= 5 and sample.agreed == sample.compared


def base64_text(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def test_the_scheduled_verifier_samples_as_many_live_items_as_its_environment_says(
        store: Store, work: Workload, monkeypatch: pytest.MonkeyPatch) -> None:
    from replayer.proving import scheduled

    monkeypatch.setenv("REWIND_STORE", store.uri)
    monkeypatch.setenv("REWIND_TABLE", work.table)
    monkeypatch.setenv("REWIND_VERIFY_LIVE_SAMPLE", "5")
    monkeypatch.setenv("REWIND_VERIFY_LIVE_WAIT_SECONDS", "0")
    monkeypatch.setattr(scheduled, "_stores", {})
    monkeypatch.setattr(scheduled, "_clients", {})
    summary = scheduled.lambda_handler({"time": "2025-06-15T18:00:00Z"}, None)
    # Five from the Scan page and five drawn from the store, a key drawn both ways compared once.
    assert 5 < summary["live_compared"] <= 10 and summary["failures"] == []


def test_a_live_sample_size_that_is_not_a_count_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from changelog.errors import UsageError
    from replayer.proving import scheduled

    monkeypatch.setenv("REWIND_VERIFY_LIVE_SAMPLE", "-3")
    with pytest.raises(UsageError, match="REWIND_VERIFY_LIVE_SAMPLE"):
        scheduled._live_check()
