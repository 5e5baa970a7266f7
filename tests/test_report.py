"""``report``: the figures an incident report shows, and the one file it writes (the page is checked in a browser)."""

from __future__ import annotations

import shlex
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from changelog.errors import TimeOutOfRange, UsageError
from changelog.predicate import parse_predicate
from changelog.store import LocalStore, Store
from changelog.timefmt import to_micros
from ddb_rewind.cli import build_parser, main
from replayer.forensics.diff import diff_states
from replayer.forensics.repair import plan_from_diff, plan_repair
from replayer.forensics.report import build_report
from replayer.forensics.report_html import render_html
from tests.incident import DEPLOY, FROM, HOSTILE, TO, US, capture_incident
from tests.workloads import BASE, Workload, run_cli


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


def test_samples_are_bounded_by_samples(store: Store) -> None:
    capture_incident(store)
    samples = build_report(store, "orders", FROM * US, TO * US, samples=4).samples
    assert [c.key["pk"]["S"] for c in samples] == ["order-00", "order-01", "order-02", "order-03"]


def test_samples_show_damaged_items_before_added_ones(store: Store) -> None:
    """The added ghosts sort first by key; the modified and removed orders still come first."""
    capture_incident(store)
    samples = build_report(store, "orders", FROM * US, TO * US, samples=100).samples
    assert [(c.kind, c.key["pk"]["S"]) for c in samples] == [
        *[("changed", f"order-{n:02}") for n in range(12)], *[("removed", f"order-{n}") for n in range(17, 20)],
        ("added", "ghost-0"), ("added", "ghost-1")]


def test_the_repair_plan_is_what_repair_would_plan(store: Store) -> None:
    capture_incident(store)
    report = build_report(store, "orders", FROM * US, TO * US, samples=100)
    plan = plan_repair(store, "orders", FROM * US, TO * US)
    assert sorted(report.repair_sample, key=lambda a: a.item_key) == list(plan.actions)
    assert dict(report.repair_counts) == plan.counts() and (report.repair_puts, report.repair_deletes) == (15, 2)


def test_the_repair_sample_lists_puts_before_deletes(store: Store) -> None:
    capture_incident(store)
    sample = build_report(store, "orders", FROM * US, TO * US, samples=100).repair_sample
    assert [a.action for a in sample] == ["restore"] * 12 + ["recreate"] * 3 + ["delete"] * 2


def test_the_repair_command_parses_back_to_the_same_window_store_and_table(tmp_path: Path) -> None:
    """A store path that needs quoting and a window to the microsecond: the pasted line means the same."""
    root = tmp_path / "it's a store; $HOME"
    root.mkdir()
    store = LocalStore(root)
    capture_incident(store)
    report = build_report(store, "orders", FROM * US + 123_456, TO * US + 1)
    words = shlex.split(report.repair_command)
    args = build_parser().parse_args(words[1:])
    assert words[0] == "ddb-rewind" and args.command == "repair" and args.dry_run
    assert (args.table, args.target, args.store) == ("orders", "orders", str(root))
    assert (to_micros(args.start), to_micros(args.end)) == (FROM * US + 123_456, TO * US + 1)


def test_the_repair_command_of_a_table_named_like_an_option_parses_back(store: Store) -> None:
    # -orders is a valid DynamoDB name; "--table -orders" is an option missing its value to argparse.
    import dataclasses

    capture_incident(store)
    report = dataclasses.replace(build_report(store, "orders", FROM * US, TO * US), table="-orders")
    args = build_parser().parse_args(shlex.split(report.repair_command)[1:])
    assert (args.table, args.target) == ("-orders", "-orders")


def test_the_page_shows_the_repair_command_to_paste(store: Store) -> None:
    capture_incident(store)
    report = build_report(store, "orders", FROM * US, TO * US)
    assert f'<pre class="command" id="repair-command">{escape(report.repair_command)}</pre>' in render_html(report)


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


def test_an_empty_window_is_refused_as_empty_not_as_inverted(store: Store) -> None:
    capture_incident(store)
    with pytest.raises(UsageError, match="the same moment"):
        build_report(store, "orders", TO * US, TO * US)


def test_item_contents_are_escaped_in_the_page(store: Store) -> None:
    capture_incident(store)
    page = render_html(build_report(store, "orders", FROM * US, TO * US))
    assert HOSTILE not in page and "&lt;/script&gt;&lt;img src=x onerror=" in page


def test_control_and_bidirectional_characters_of_the_data_are_shown_not_obeyed(store: Store) -> None:
    # A right-to-left override in a key made "pk=order-1\u202e, sk=2024-01-09" read as another key.
    from changelog.codec import decode_lambda_record
    from stream_consumer.capture import capture_batch
    from tests.events import lambda_record

    key = {"pk": {"S": "order-1\u202e"}}
    capture_batch(store, [lambda_record("orders", "INSERT", key, FROM, 1, new={**key, "v": {"N": "1"}}),
                          lambda_record("orders", "MODIFY", key, FROM + 60, 2, new={**key, "v": {"N": "2"}})],
                  decode_lambda_record, source="test")

    page = render_html(build_report(store, "orders", FROM * US, (FROM + 60) * US))

    assert "\u202e" not in page and "pk=order-1\\u202e" in page


def test_values_are_shown_plainly_and_keys_as_name_equals_value(store: Store) -> None:
    capture_incident(store)
    page = render_html(build_report(store, "orders", FROM * US, TO * US))
    assert "<h3>changed <code>pk=order-00</code></h3>" in page
    assert "<code>&quot;paid&quot;</code>" in page and "<code>&quot;10&quot;</code>" in page
    assert "&quot;S&quot;:" not in page and "&quot;N&quot;:" not in page


def test_the_page_holds_no_script(store: Store) -> None:
    capture_incident(store)
    page = render_html(build_report(store, "orders", FROM * US, TO * US))
    assert "<script" not in page.lower() and "script-src &#x27;none&#x27;" in page


def test_the_page_is_at_most_one_megabyte(store: Store) -> None:
    capture_incident(store)
    assert len(render_html(build_report(store, "orders", FROM * US, TO * US)).encode()) <= 1_000_000


def test_the_page_of_a_long_busy_window_is_at_most_one_megabyte(store: Store) -> None:
    """2,000 items changed, every event type in every one of the chart's 400 buckets: the page stays small."""
    work = Workload()
    start = BASE - BASE % 60
    for n in range(2_000):
        work.put({"pk": {"S": f"item-{n:04}"}, "payload": {"S": "x" * 1_000}}, start + n % 400 * 60)
    for n in range(2_000):
        minute = start + (400 + n // 5) * 60 + 1  # five changes a minute, of four kinds
        if n % 4 == 0:
            work.delete({"pk": {"S": f"item-{n:04}"}}, minute)
        elif n % 4 == 3:
            work.delete({"pk": {"S": f"item-{n:04}"}}, minute, ttl=True)
        elif n % 4 == 1:
            work.put({"pk": {"S": f"new-{n:04}"}, "payload": {"S": "y" * 1_000}}, minute)
        else:
            work.put({"pk": {"S": f"item-{n:04}"}, "payload": {"S": "z" * 1_000}, "n": {"N": str(n)}}, minute)
    work.put({"pk": {"S": "later"}}, start + 900 * 60)  # coverage reaches past the window
    work.capture(store, batch=500)
    report = build_report(store, "orders", (start + 400 * 60) * US, (start + 800 * 60 - 1) * US)
    assert report.added + report.removed + report.changed == 2_000
    assert len(report.timeline.filled()) == 400
    assert all(b.inserts and b.modifies and b.removes and b.ttl_removes for b in report.timeline.filled())
    assert len(render_html(report).encode()) <= 1_000_000


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


def test_a_sample_of_a_whole_item_lists_its_key_attributes_first(store: Store) -> None:
    work = Workload(key_names=("zone", "at"), key_types=("S", "N"))  # names sort the other way
    work.put({"zone": {"S": "us"}, "at": {"N": "1"}}, BASE)
    work.put({"amount": {"N": "1"}, "at": {"N": "5"}, "zone": {"S": "eu"}}, BASE + 1)
    work.capture(store)
    page = render_html(build_report(store, "orders", BASE * US, (BASE + 1) * US))
    sample = page[page.index("<h3>added <code>zone=eu, at=5</code></h3>"):]
    cells = [sample.index(f"<td><code>{name}</code></td>") for name in ("zone", "at", "amount")]
    assert cells == sorted(cells)
