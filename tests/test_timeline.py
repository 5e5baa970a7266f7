"""``timeline``: change counts per bucket, as a chart for people and a table, CSV or JSON for machines."""

from __future__ import annotations

import csv
import io
import json

import pytest

from changelog.errors import TableNotFound, UsageError
from changelog.store import Store
from ddb_rewind.cli import main
from ddb_rewind.commands import timeline as timeline_command
from replayer.forensics.timeline import AUTO_MAX_BUCKETS, BUCKETS, render_bars, sparkline, timeline
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
    bars = render_bars(timeline(store, "orders", "minute"), width=10)[3:]
    assert bars[0].endswith("+" * 10) and bars[1].endswith("  ~~--") and bars[-1].endswith("  xx")


def test_the_chart_shows_quiet_buckets_as_empty_bars(store: Store) -> None:
    _traffic(store)
    bars = render_bars(timeline(store, "orders", "minute"))[3:]
    assert len(bars) == 61 and bars[2].endswith("  0")


def test_the_chart_header_names_the_span_the_width_and_the_totals(store: Store) -> None:
    _traffic(store)
    head = render_bars(timeline(store, "orders", "hour"))[0]
    assert head == ("orders: 2025-06-15T15:00:00Z to 2025-06-15T17:00:00Z, 1-hour buckets, "
                    "8 changes (inserts 5, modifies 1, removes 1, ttl removes 1)")


def test_the_sparkline_rises_with_the_totals(store: Store) -> None:
    _traffic(store)
    line = timeline(store, "orders", "minute")
    assert sparkline(line.filled()[:3]) == "█▄ "


def test_colour_is_added_only_when_asked(store: Store) -> None:
    _traffic(store)
    line = timeline(store, "orders", "minute")
    assert not any("\033[" in text for text in render_bars(line))
    assert "\033[32m+" in render_bars(line, color=True)[3]


def test_auto_buckets_keep_two_days_within_the_limit(store: Store) -> None:
    work = Workload()
    for n in range(49):
        work.put({"pk": {"S": f"k{n}"}}, MINUTE + n * 3600)
    work.capture(store)
    line = timeline(store, "orders")
    assert line.bucket == "hour" and len(line.filled()) == 49 <= AUTO_MAX_BUCKETS


def test_auto_buckets_are_minutes_for_a_short_span(store: Store) -> None:
    _traffic(store)
    line = timeline(store, "orders", "auto", from_us=MINUTE * 1_000_000, to_us=(MINUTE + 59 * 60) * 1_000_000)
    assert line.bucket == "minute" and [b.total for b in line] == [5, 2]


def test_auto_buckets_widen_past_sixty_minutes(store: Store) -> None:
    _traffic(store)
    assert timeline(store, "orders", "auto").bucket == "5min"


def test_an_explicit_bucket_is_honoured_over_a_long_span(store: Store) -> None:
    _traffic(store)
    line = timeline(store, "orders", "day")
    assert line.bucket == "day" and [b.total for b in line] == [8]


def test_a_window_with_no_changes_still_spans_the_window(store: Store) -> None:
    _traffic(store)
    line = timeline(store, "orders", "minute", from_us=(MINUTE + 120) * 1_000_000, to_us=(MINUTE + 239) * 1_000_000)
    assert len(line) == 0 and [b.total for b in line.filled()] == [0, 0]


def test_the_command_offers_every_bucket_the_timeline_counts() -> None:
    assert timeline_command.BUCKETS == BUCKETS


def test_in_a_pipe_the_default_is_a_table_with_a_header(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _traffic(store)
    assert main(["timeline", "--table", "orders", "--store", store.uri, "--bucket", "hour"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["start", "inserts", "modifies", "removes", "ttl_removes", "total"]
    assert lines[2].split() == ["2025-06-15T15:00:00Z", "5", "1", "1", "0", "7"]


def test_csv_output_has_a_header_and_one_row_per_bucket(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _traffic(store)
    assert main(["timeline", "--table", "orders", "--store", store.uri, "--bucket", "hour", "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [["start", "inserts", "modifies", "removes", "ttl_removes", "total"],
                    ["2025-06-15T15:00:00Z", "5", "1", "1", "0", "7"],
                    ["2025-06-15T16:00:00Z", "0", "0", "0", "1", "1"]]


def test_the_chart_format_can_be_asked_for_in_a_pipe(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _traffic(store)
    assert main(["timeline", "--table", "orders", "--store", store.uri, "--format", "chart"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("orders: 2025-06-15T15:05:00Z to ") and "\033[" not in out


def test_json_output_is_one_object_per_bucket(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _traffic(store)
    assert main(["timeline", "--table", "orders", "--store", store.uri, "--bucket", "minute", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["start"] == "2025-06-15T15:06:00Z" and out[0]["inserts"] == 5


def test_a_malformed_time_gets_one_line(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    _traffic(store)
    assert run_cli(["timeline", "--table", "orders", "--store", store.uri, "--from", "yesterday"]) != 0
    assert capsys.readouterr().err.count("\n") == 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_default_is_a_coloured_chart(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    _traffic(store)
    terminal = _Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(["timeline", "--table", "orders", "--store", store.uri]) == 0
    assert terminal.getvalue().startswith("orders: ") and "\033[32m+" in terminal.getvalue()


def test_no_color_keeps_the_terminal_chart_plain(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    _traffic(store)
    terminal = _Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["timeline", "--table", "orders", "--store", store.uri]) == 0
    assert terminal.getvalue().startswith("orders: ") and "\033[" not in terminal.getvalue()


def test_a_table_held_without_changes_counts_none(store: Store) -> None:
    Workload().capture(store)  # meta.json only, as after a bootstrap of a quiet table
    line = timeline(store, "orders", from_us=MINUTE * 1_000_000, to_us=(MINUTE + 59) * 1_000_000)
    assert len(line) == 0 and [b.total for b in line.filled()] == [0]


def test_a_table_the_store_does_not_hold_is_not_found(store: Store) -> None:
    _traffic(store)
    with pytest.raises(TableNotFound, match="holds no table 'invoices'"):
        timeline(store, "invoices")
