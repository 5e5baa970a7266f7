"""``timeline``: change counts per minute or hour, as bars for people and JSON for machines."""

from __future__ import annotations

import json

import pytest

from changelog.errors import UsageError
from changelog.store import Store
from ddb_rewind.cli import main
from replayer.timeline import render_bars, timeline
from tests.workloads import BASE, Workload, run_cli

MINUTE = BASE - BASE % 60


def _traffic(store: Store) -> None:
    work = Workload()
    for n in range(5):
        work.put({"pk": {"S": f"k{n}"}, "v": {"N": "1"}}, MINUTE + n)
    work.put({"pk": {"S": "k0"}, "v": {"N": "2"}}, MINUTE + 61)
    work.delete({"pk": {"S": "k1"}}, MINUTE + 62)
    work.delete({"pk": {"S": "k2"}}, MINUTE + 3600, ttl=True)
    work.capture(store, batch=3, duplicates=True)


def test_minute_buckets_count_each_kind_once(store: Store) -> None:
    _traffic(store)
    rows = [b.as_json() for b in timeline(store, "orders", "minute")]
    assert [(r["inserts"], r["modifies"], r["removes"], r["ttl_removes"]) for r in rows] == [
        (5, 0, 0, 0), (0, 1, 1, 0), (0, 0, 0, 1)]


def test_hour_buckets_sum_the_minutes(store: Store) -> None:
    _traffic(store)
    assert [b.total for b in timeline(store, "orders", "hour")] == [7, 1]


def test_a_window_bounds_the_counted_changes(store: Store) -> None:
    _traffic(store)
    buckets = timeline(store, "orders", "minute", from_us=(MINUTE + 60) * 1_000_000, to_us=(MINUTE + 61) * 1_000_000)
    assert [b.total for b in buckets] == [1]


def test_an_inverted_window_is_a_usage_error(store: Store) -> None:
    _traffic(store)
    with pytest.raises(UsageError):
        timeline(store, "orders", "minute", from_us=2, to_us=1)


def test_bars_are_proportional_to_the_totals(store: Store) -> None:
    _traffic(store)
    lines = render_bars(timeline(store, "orders", "minute"), width=10)
    assert lines[0].endswith("+" * 10) and lines[1].endswith("  ~~--") and lines[2].endswith("  xx")


def test_json_output_is_one_object_per_bucket(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _traffic(store)
    assert main(["timeline", "--table", "orders", "--store", store.uri, "--bucket", "minute", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["start"] == "2025-06-15T15:06:00Z" and out[0]["inserts"] == 5


def test_a_malformed_time_gets_one_line(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _traffic(store)
    assert run_cli(["timeline", "--table", "orders", "--store", store.uri, "--from", "yesterday"]) != 0
    assert capsys.readouterr().err.count("\n") == 1
