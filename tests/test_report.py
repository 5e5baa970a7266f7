"""``report``: the figures an incident report shows, and the one file it writes (the page is checked in a browser)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from changelog.errors import TimeOutOfRange, UsageError
from changelog.predicate import parse_predicate
from changelog.store import Store
from ddb_rewind.cli import main
from replayer.diff import diff_states
from replayer.repair import plan_from_diff, plan_repair
from replayer.report import build_report
from replayer.report_html import render_html
from tests.incident import DEPLOY, FROM, HOSTILE, TO, US, capture_incident
from tests.workloads import BASE, run_cli


def test_the_item_counts_are_the_diff_of_the_window(store: Store) -> None:
    capture_incident(store)
    report = build_report(store, "orders", FROM * US, TO * US)
    assert (report.added, report.removed, report.changed) == (2, 3, 12)


def test_the_change_rate_counts_only_changes_inside_the_window(store: Store) -> None:
    capture_incident(store)
    totals = build_report(store, "orders", FROM * US, TO * US).timeline.totals()
    assert totals == {"inserts": 2, "modifies": 12, "removes": 3, "ttl_removes": 0}


def test_the_chart_buckets_show_the_burst_as_one_spike(store: Store) -> None:
    capture_incident(store)
    line = build_report(store, "orders", FROM * US, TO * US).timeline
    busy = [b for b in line.filled() if b.total]
    assert line.bucket == "minute" and len(line.filled()) == 31 and len(busy) == 1 and busy[0].total == 17


def test_attributes_are_ranked_by_the_modified_items_they_differ_in(store: Store) -> None:
    capture_incident(store)
    attributes = build_report(store, "orders", FROM * US, TO * US).attributes
    assert [(a.name, a.changed, a.added, a.removed) for a in attributes] == [
        ("status", 12, 0, 0), ("note", 0, 1, 0), ("total", 0, 0, 1)]


def test_samples_are_bounded_and_ordered_by_key(store: Store) -> None:
    capture_incident(store)
    samples = build_report(store, "orders", FROM * US, TO * US, samples=4).samples
    assert [c.key["pk"]["S"] for c in samples] == ["ghost-0", "ghost-1", "order-00", "order-01"]


def test_the_repair_plan_is_what_repair_would_plan(store: Store) -> None:
    capture_incident(store)
    report = build_report(store, "orders", FROM * US, TO * US, samples=100)
    plan = plan_repair(store, "orders", FROM * US, TO * US)
    assert report.repair_sample == plan.actions and dict(report.repair_counts) == plan.counts()
    assert (report.repair_puts, report.repair_deletes) == (15, 2)


def test_where_narrows_the_diffs_but_not_the_repair_plan(store: Store) -> None:
    capture_incident(store)
    report = build_report(store, "orders", FROM * US, TO * US, where=parse_predicate("pk LIKE 'ghost%'"))
    assert (report.added, report.removed, report.changed) == (2, 0, 0)
    assert (report.repair_puts, report.repair_deletes) == (15, 2) and report.where == "pk LIKE 'ghost%'"


def test_a_repair_plan_refuses_a_narrowed_diff(store: Store) -> None:
    capture_incident(store)
    narrowed = diff_states(store, "orders", FROM * US, TO * US, where="pk LIKE 'ghost%'")
    with pytest.raises(ValueError, match="whole diff"):
        plan_from_diff(narrowed)


def test_a_window_outside_coverage_is_refused_like_diff(store: Store) -> None:
    capture_incident(store)
    with pytest.raises(TimeOutOfRange):
        build_report(store, "orders", (BASE - 3600) * US, TO * US)


def test_an_inverted_window_is_a_usage_error(store: Store) -> None:
    capture_incident(store)
    with pytest.raises(UsageError):
        build_report(store, "orders", TO * US, FROM * US)


def test_item_contents_are_escaped_in_the_page(store: Store) -> None:
    capture_incident(store)
    page = render_html(build_report(store, "orders", FROM * US, TO * US))
    assert HOSTILE not in page and "&lt;/script&gt;&lt;img src=x onerror=" in page


class _Links(HTMLParser):
    """Every attribute of the page's markup that could load something (scripts are not parsed as markup)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [(tag, name, value) for name, value in attrs if name in ("src", "href", "srcset", "data")]


def test_the_page_refers_to_nothing_outside_itself(store: Store) -> None:
    capture_incident(store)
    parser = _Links()
    parser.feed(render_html(build_report(store, "orders", FROM * US, TO * US)))
    assert parser.links == []


def test_the_page_forbids_every_fetch(store: Store) -> None:
    capture_incident(store)
    page = render_html(build_report(store, "orders", FROM * US, TO * US))
    assert '<meta http-equiv="Content-Security-Policy" content="default-src &#x27;none&#x27;;' in page


def test_the_command_writes_one_file_and_says_what_it_holds(store: Store, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    capture_incident(store)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "incident.html"
    argv = ["report", "--table", "orders", "--store", store.uri, "--from", str(FROM), "--to", str(TO), "-o", str(out)]
    assert main(argv) == 0
    assert capsys.readouterr().out.endswith("17 items differ, repair would put 15 and delete 2\n")
    assert [p.name for p in out.parent.iterdir()] == ["incident.html"]


def test_an_existing_file_is_kept_without_overwrite(store: Store, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    capture_incident(store)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "incident.html"
    out.write_text("keep me")
    argv = ["report", "--table", "orders", "--store", store.uri, "--from", str(FROM), "--to", str(TO), "-o", str(out)]
    assert run_cli(argv) == 2 and out.read_text() == "keep me"
    assert run_cli([*argv, "--overwrite"]) == 0 and out.read_text().startswith("<!DOCTYPE html>")


def test_a_refused_window_leaves_no_file(store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture_incident(store)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "incident.html"
    argv = ["report", "--table", "orders", "--store", store.uri, "--from", str(BASE - 3600), "--to", str(DEPLOY),
            "-o", str(out)]
    assert run_cli(argv) == 5 and list(out.parent.iterdir()) == []
    assert capsys.readouterr().err.count("\n") == 1
