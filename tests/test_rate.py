"""The shared write rate backs off when the target pushes back and climbs again, never above --max-rate."""

from __future__ import annotations

import random
from typing import Any

import pytest

from replayer.restoring.rate import AdaptiveRate, RateSettings
from replayer.restoring.writer import WriteSettings, write_images


class Clock:
    """Time that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _write_for(rate: AdaptiveRate, clock: Clock, seconds: float, per_tick: int, tick: float = 0.01) -> None:
    """``per_tick`` items landing every ``tick`` seconds, no push-back."""
    for _ in range(round(seconds / tick)):
        clock.advance(tick)
        rate.record(per_tick, pushed_back=False)


def test_without_push_back_or_a_cap_nothing_waits(clock: Clock) -> None:
    rate = AdaptiveRate(clock=clock)
    _write_for(rate, clock, 2.0, 25)
    assert rate.rate is None
    assert rate.reserve(10_000) == 0.0


def test_the_cap_allows_one_seconds_worth_then_spaces_calls(clock: Clock) -> None:
    rate = AdaptiveRate(100.0, clock=clock)
    assert rate.reserve(100) == 0.0
    assert rate.reserve(25) == pytest.approx(0.25)
    clock.advance(0.25)
    assert rate.reserve(25) == pytest.approx(0.25)


def test_push_back_cuts_the_rate_to_a_fraction_of_what_was_written(clock: Clock) -> None:
    rate = AdaptiveRate(clock=clock, settings=RateSettings(decrease=0.5))
    _write_for(rate, clock, 2.0, 10)  # 1,000 items/s
    rate.record(0, pushed_back=True)
    assert rate.rate == pytest.approx(500.0, rel=0.02)
    assert rate.reserve(50) > 0.0


def test_push_back_before_anything_was_written_sets_no_rate(clock: Clock) -> None:
    rate = AdaptiveRate(clock=clock)
    rate.record(0, pushed_back=True)
    assert rate.rate is None
    assert rate.reserve(25) == 0.0


def test_one_overload_seen_by_every_call_in_flight_cuts_once(clock: Clock) -> None:
    rate = AdaptiveRate(clock=clock, settings=RateSettings(decrease=0.5))
    _write_for(rate, clock, 2.0, 10)
    for _ in range(32):
        rate.record(0, pushed_back=True)
    assert rate.cuts == 1
    assert rate.rate == pytest.approx(500.0, rel=0.02)


def test_push_back_after_the_window_cuts_again(clock: Clock) -> None:
    rate = AdaptiveRate(clock=clock, settings=RateSettings(decrease=0.5, climb_fraction=0.0, climb_step=0.0))
    _write_for(rate, clock, 2.0, 10)
    rate.record(0, pushed_back=True)
    _write_for(rate, clock, 1.5, 4)  # 400 items/s under the new limit
    rate.record(0, pushed_back=True)
    assert rate.cuts == 2
    assert rate.rate == pytest.approx(200.0, rel=0.02)


def test_without_push_back_the_rate_climbs_back(clock: Clock) -> None:
    rate = AdaptiveRate(clock=clock, settings=RateSettings(decrease=0.5, climb_fraction=0.1, climb_step=0.0))
    _write_for(rate, clock, 2.0, 10)
    rate.record(0, pushed_back=True)
    _write_for(rate, clock, 10.0, 5)
    assert rate.rate is not None
    assert rate.rate > 1_000.0  # above where it was cut from: capacity may have grown


def test_the_climb_never_passes_the_cap(clock: Clock) -> None:
    rate = AdaptiveRate(300.0, clock=clock)
    _write_for(rate, clock, 2.0, 3)
    rate.record(0, pushed_back=True)
    assert rate.rate is not None and rate.rate < 300.0
    _write_for(rate, clock, 60.0, 3)
    assert rate.rate == 300.0


def test_the_rate_never_drops_below_the_floor(clock: Clock) -> None:
    rate = AdaptiveRate(clock=clock, settings=RateSettings(decrease=0.1, floor=2.0))
    _write_for(rate, clock, 1.0, 10)
    for _ in range(20):
        rate.record(0, pushed_back=True)
        clock.advance(1.5)
    assert rate.rate == 2.0


class CapacityTable:
    """A stand-in DynamoDB table that absorbs ``capacity`` items per second of the clock and returns the
    rest as UnprocessedItems, as a provisioned table does once its burst is spent."""

    def __init__(self, clock: Clock, capacity: int) -> None:
        self.clock = clock
        self.capacity = capacity
        self.second = int(clock.now)
        self.used = 0
        self.items = 0
        self.pushed_back = 0

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        self.clock.advance(0.01)  # the call's latency
        if int(self.clock.now) != self.second:
            self.second, self.used = int(self.clock.now), 0
        (table, requests), = RequestItems.items()
        room = max(0, self.capacity - self.used)
        self.used += min(room, len(requests))
        self.items += min(room, len(requests))
        if room < len(requests):
            self.pushed_back += 1
            return {"UnprocessedItems": {table: requests[room:]}}
        return {"UnprocessedItems": {}}


def test_a_restore_into_a_table_of_limited_capacity_finishes_near_that_capacity(clock: Clock) -> None:
    random.seed(7)  # the backoff's jitter
    table = CapacityTable(clock, capacity=500)
    images = [f'{{"pk":{{"S":"k{n}"}}}}' for n in range(10_000)]
    started = clock.now
    report, errors = write_images(table, "t", images, settings=WriteSettings(workers=1, base_delay=0.01),
                                  sleep=clock.advance, clock=clock)
    assert (report.written, report.failed, errors) == (10_000, 0, [])
    assert table.items == 10_000
    throughput = 10_000 / (clock.now - started)
    assert 0.6 * 500 < throughput <= 500 * 1.05
    # Backing off: the target pushed back on a small share of the calls, not on every other one.
    assert table.pushed_back < 0.1 * (10_000 / 25)


def test_max_rate_caps_a_restore_the_table_could_take_faster(clock: Clock) -> None:
    table = CapacityTable(clock, capacity=100_000)
    images = [f'{{"pk":{{"S":"k{n}"}}}}' for n in range(2_000)]
    started = clock.now
    report, _ = write_images(table, "t", images, settings=WriteSettings(workers=1, max_rate=200.0),
                             sleep=clock.advance, clock=clock)
    assert (report.written, report.failed) == (2_000, 0)
    assert 2_000 / (clock.now - started) <= 200.0 * 1.15  # the first second's burst aside
    assert table.pushed_back == 0
