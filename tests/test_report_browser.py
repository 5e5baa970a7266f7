"""``report`` in a real headless browser (Debian chromium): the page loads clean and shows the chart and the tables.

The page is written by a real ``ddb-rewind report`` process and loaded once; each test reads one
thing from it. Under CI a missing chromium is a failure (.ci/run installs it), never a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from html import escape
from pathlib import Path

import pytest

from changelog.codec import dump_json
from changelog.store import LocalStore
from replayer.report_html import POLICY
from tests.cdp import CHROMIUM, Page
from tests.incident import FROM, HOSTILE, TO, capture_incident

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _need_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """The incident's report, written by the CLI and loaded in chromium (its chart drawn)."""
    _need_chromium()
    root = tmp_path_factory.mktemp("report")
    (root / "store").mkdir()
    capture_incident(LocalStore(root / "store"))
    out = root / "incident.html"
    done = subprocess.run(
        [sys.executable, "-m", "ddb_rewind", "report", "--table", "orders", "--store", str(root / "store"),
         "--from", str(FROM), "--to", str(TO), "-o", str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert done.returncode == 0, done.stderr
    with Page() as browser:
        browser.open(out)
        browser.wait_until("document.querySelectorAll('#change-rate-chart svg.main-svg').length > 0")
        yield browser


def _count(page: Page, selector: str) -> int:
    return int(page.evaluate(f"document.querySelectorAll({selector!r}).length"))


def test_the_page_loads_with_no_console_errors(page: Page) -> None:
    assert page.problems() == []


def test_the_page_requests_nothing_but_itself(page: Page) -> None:
    assert [url.split(":", 1)[0] for url in page.requests()] == ["file"]


def test_the_chart_draws_a_bar_trace_per_event_type(page: Page) -> None:
    assert _count(page, "#change-rate-chart .barlayer .trace") == 4
    assert page.evaluate("[...document.querySelectorAll('#change-rate-chart .legendtext')].map(e => e.textContent)") \
        == ["inserts", "modifies", "removes", "ttl removes"]


def test_the_overview_counts_the_window(page: Page) -> None:
    cells = page.evaluate("[...document.querySelectorAll('#summary tbody tr')].map(r => r.cells[1].textContent)")
    assert cells == ["17", "2", "12", "3", "0", "2", "3", "12"]


def test_the_attribute_table_ranks_the_changed_attributes(page: Page) -> None:
    names = page.evaluate("[...document.querySelectorAll('#attributes tbody tr')].map(r => r.cells[0].textContent)")
    assert names == ["status", "note", "total"]


def test_ten_sample_diffs_are_shown(page: Page) -> None:
    assert _count(page, "#samples .sample") == 10


def test_the_repair_plan_counts_puts_and_deletes_with_a_sample(page: Page) -> None:
    counts = page.evaluate("[...document.querySelectorAll('#repair-counts tbody tr')].map(r => r.cells[1].textContent)")
    assert counts == ["3", "12", "2", "15"] and _count(page, "#repair-sample tbody tr") == 10


def test_item_contents_show_as_text_and_never_run(page: Page) -> None:
    shown = page.evaluate("[...document.querySelectorAll('#samples code')].map(e => e.textContent).join('\\n')")
    assert dump_json({"S": HOSTILE}) in shown
    assert _count(page, "img") == 0 and _count(page, "b") == 0
    assert page.evaluate("document.title") == "ddb-rewind incident report: orders"


def test_the_checks_see_errors_and_blocked_fetches(tmp_path: Path) -> None:
    """The clean-page checks above can fail: the same policy and probes on a page that misbehaves."""
    _need_chromium()
    bad = tmp_path / "bad.html"
    bad.write_text(f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{escape(POLICY)}">'
                   '</head><body><img src="https://cdn.example.invalid/x.png">'
                   '<script>console.error("drawn wrong"); undefinedFunction();</script></body></html>')
    with Page() as browser:
        browser.open(bad)
        browser.wait_until("true")
        problems = browser.problems()
    assert any("drawn wrong" in p for p in problems)
    assert any("undefinedFunction" in p for p in problems)
    assert any("cdn.example.invalid" in p and "Content Security Policy" in p for p in problems)
