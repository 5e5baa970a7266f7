"""``report`` in a real headless browser (Debian chromium): the page loads clean and shows the chart and the tables.

The page is written by a real ``ddb-rewind report`` process and loaded once; each test reads one
thing from it. Under CI a missing chromium is a failure (.ci/run installs it), never a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from html import escape
from pathlib import Path

import pytest

from changelog.store import LocalStore
from replayer.forensics.report_html import POLICY
from replayer.forensics.timeline import KINDS
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
    """The incident's report, written by the CLI and loaded in chromium."""
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
        browser.wait_until("document.readyState === 'complete'")
        yield browser


def _count(page: Page, selector: str) -> int:
    return int(page.evaluate(f"document.querySelectorAll({selector!r}).length"))


def test_the_page_loads_with_no_console_errors(page: Page) -> None:
    assert page.problems() == []


def test_the_page_requests_nothing_but_itself(page: Page) -> None:
    assert [url.split(":", 1)[0] for url in page.requests()] == ["file"]


def _box(page: Page, selector: str) -> dict[str, float]:
    return dict(page.evaluate(f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect(); "
                              "return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"))


def test_the_chart_draws_a_band_per_event_type_with_its_legend(page: Page) -> None:
    assert [_count(page, f"#change-rate-chart #band-{kind} path") for kind in KINDS] == [1, 1, 1, 1]
    texts = page.evaluate("[...document.querySelectorAll('#change-rate-chart text')].map(e => e.textContent)")
    assert texts[-4:] == ["inserts", "modifies", "removes", "ttl removes"]


def test_the_chart_is_drawn_at_a_readable_size(page: Page) -> None:
    box = _box(page, "#change-rate-chart svg")
    assert box["width"] >= 600 and box["height"] >= 250


def test_the_burst_shows_as_one_spike_in_the_chart(page: Page) -> None:
    """Across the chart at mid-height of the modifies band, the drawn band is hit in one narrow run (1 bucket of 31)."""
    page.evaluate("document.getElementById('change-rate-chart').scrollIntoView()")  # hit-testing sees the viewport
    chart, band = _box(page, "#change-rate-chart svg"), _box(page, "#band-modifies path")
    y = band["y"] + band["height"] * 0.4  # the band's bounding box runs from its top down to the axis
    hits = page.evaluate(f"[...Array({int(chart['width'])}).keys()].map(i => document.elementFromPoint("
                         f"{chart['x']} + i, {y})?.parentElement?.id === 'band-modifies')")
    runs = [i for i in range(1, len(hits)) if hits[i] and not hits[i - 1]]
    assert len(runs) == 1 and 0 < sum(hits) < chart["width"] / 20


def test_the_page_holds_no_script(page: Page) -> None:
    assert _count(page, "script") == 0


def test_the_samples_show_damaged_items_first_with_plain_keys(page: Page) -> None:
    heads = page.evaluate("[...document.querySelectorAll('#samples h3')].map(e => e.textContent)")
    assert heads == [f"changed pk=order-{n:02}" for n in range(10)]


def test_the_repair_command_is_shown_whole(page: Page) -> None:
    text = page.evaluate("document.getElementById('repair-command').textContent")
    assert text.startswith("ddb-rewind repair --table=orders --store=") and text.endswith(" --target=orders --dry-run")


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
    assert json.dumps(HOSTILE) in shown
    assert _count(page, "img") == 0 and _count(page, "b") == 0
    assert page.evaluate("document.title") == "ddb-rewind incident report: orders"


def _problems_of(path: Path, head: str) -> list[str]:
    """The problems chromium reports for a page that loads an image from outside and runs a broken script."""
    path.write_text(f'<!DOCTYPE html><html><head>{head}</head><body><img src="https://cdn.example.invalid/x.png">'
                    '<script>console.error("drawn wrong"); undefinedFunction();</script></body></html>')
    with Page() as browser:
        browser.open(path)
        browser.wait_until("true")
        return browser.problems()


def test_the_checks_see_console_errors_and_exceptions(tmp_path: Path) -> None:
    """The clean-page checks above can fail: a page without the policy, whose script misbehaves."""
    _need_chromium()
    problems = _problems_of(tmp_path / "bad.html", "")
    assert any("drawn wrong" in p for p in problems)
    assert any("undefinedFunction" in p for p in problems)


def test_the_policy_blocks_every_script_and_fetch(tmp_path: Path) -> None:
    _need_chromium()
    policy = f'<meta http-equiv="Content-Security-Policy" content="{escape(POLICY)}">'
    problems = _problems_of(tmp_path / "bad.html", policy)
    assert not any("drawn wrong" in p or "undefinedFunction" in p for p in problems)
    assert any("inline script" in p and "Content Security Policy" in p for p in problems)
    assert any("cdn.example.invalid" in p and "Content Security Policy" in p for p in problems)
