"""An incident report as ONE self-contained HTML file: it opens on an air-gapped laptop, and runs no script.

The chart is an SVG drawn here by matplotlib and written into the page as markup, so the page holds
no script at all and stays small (a few tens of kilobytes for a chart of 400 buckets). Its
Content-Security-Policy forbids every script and every fetch, so anything that tried would fail
loudly (a console error) instead of running or phoning home. Item contents are the user's data:
every one is HTML-escaped here, in Python, into static markup, shown as plain values
(``changelog.docs``, the one plain-JSON rule) with keys as ``pk=customer-034, sk=100136``.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from html import escape as html_escape
from typing import Any

from changelog.docs import key_text, plain_text
from changelog.shown import visible
from changelog.timefmt import format_time, from_micros
from replayer.forensics.report import TOP_ATTRIBUTES, IncidentReport
from replayer.forensics.timeline import KINDS
from replayer.restoring.outfile import output_file

# Data-shaped strings are cut for display only; the store and `diff --format json` keep them whole.
MAX_VALUE_CHARS = 300
POLICY = ("default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
          "connect-src 'none'; base-uri 'none'; form-action 'none'")
_COLOURS = {"inserts": "#2ca02c", "modifies": "#ff7f0e", "removes": "#d62728", "ttl_removes": "#9467bd"}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ddd; padding: .2em .6em; }
th { background: #f4f4f4; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: .9em; white-space: pre-wrap; word-break: break-all; } .note { color: #555; font-size: .9em; }
.sample { margin: 1em 0; } .sample h3 { font-size: 1em; margin: .3em 0; }
#change-rate-chart svg { width: 100%; height: auto; max-width: 60em; }
pre.command { background: #f4f4f4; border: 1px solid #ddd; padding: .6em; white-space: pre-wrap;
              word-break: break-all; user-select: all; }
"""


def escape(text: str) -> str:
    """Text from the table as the page shows it: HTML-escaped, control and bidirectional format
    characters written out (``changelog.shown``: a right-to-left override would make a key read as another)."""
    return html_escape(visible(text))


def _time(us: int) -> str:
    return format_time(from_micros(us))


def _cut(text: str) -> str:
    """``text`` escaped, cut at MAX_VALUE_CHARS (said so when cut)."""
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + f"… ({len(text):,} characters)"
    return f"<code>{escape(text)}</code>"


def _value(value: Any) -> str:
    """An AttributeValue as its escaped plain JSON (``"shipped"``, ``"12.50"``, ``["a", "b"]``)."""
    return _cut(plain_text(value))


def _key(report: IncidentReport, key: dict[str, Any]) -> str:
    """A key as escaped ``pk=customer-034, sk=100136``, the partition key first."""
    return _cut(key_text(key, report.key_names))


def _table(table_id: str, columns: tuple[str, ...], rows: list[list[str]], numeric: frozenset[int] = frozenset(),
           empty: str = "none") -> str:
    """A table whose cells are already escaped markup; ``numeric`` columns align right."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f'<td class="n">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(columns)}" class="note">{escape(empty)}</td></tr>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _chart(report: IncidentReport) -> str:
    """The change rate as an inline SVG: one stacked step band per event type, quiet buckets empty."""
    import matplotlib
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    buckets = report.timeline.filled()
    # svg.fonttype none: text stays text (the browser's sans-serif), not glyph paths; a fixed hash salt
    # keeps the clip-path ids the same from run to run.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "ddb-rewind", "font.family": "sans-serif",
                                "font.size": 10.0}):
        figure = Figure(figsize=(10, 4.2), layout="constrained")
        axes = figure.subplots()
        if buckets:
            width = report.timeline.width_us
            # One edge per bucket start and one after the last: a bucket's changes fill its whole width.
            edges = [mdates.date2num(from_micros(us)) for us in
                     [*(b.start_us for b in buckets), buckets[-1].start_us + width]]
            base = [0] * len(buckets)
            for kind in KINDS:
                counts = [getattr(b, kind) for b in buckets]
                top = [low + n for low, n in zip(base, counts, strict=True)]
                # One path per event type however many buckets: the page stays small at 400 buckets.
                axes.stairs(top, edges, baseline=base, fill=True, color=_COLOURS[kind],
                            label=kind.replace("_", " "), gid=f"band-{kind}")
                base = top
            axes.set_xlim(edges[0], edges[-1])
        locator = mdates.AutoDateLocator(tz=UTC)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        # At least 0 to 1: a quiet window gets whole-number ticks, not 0.006 steps.
        axes.set_ylim(0, max(1.0, axes.get_ylim()[1]))
        axes.set_title(f"Changes per {report.timeline.label} bucket")
        axes.set_xlabel("time (UTC)")
        axes.set_ylabel("changes")
        axes.grid(axis="y", color="#e4e4e4")
        axes.set_axisbelow(True)
        axes.spines[["top", "right"]].set_visible(False)
        if buckets:
            figure.legend(loc="outside lower center", ncols=len(KINDS), frameon=False)
        if not any(b.total for b in buckets):
            axes.text(0.5, 0.5, "no change in the window", transform=axes.transAxes, ha="center", va="center")
        out = io.StringIO()
        # No metadata block: it names matplotlib's site and the moment, neither of use in a report.
        figure.savefig(out, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = out.getvalue()
    # Inline markup, not a document: drop the XML declaration and DOCTYPE before the <svg> element.
    svg = svg[svg.index("<svg"):]
    return f'<div id="change-rate-chart" role="img" aria-label="change rate by event type">{svg}</div>'


def _summary(report: IncidentReport) -> str:
    totals = report.timeline.totals()
    rows = [
        ["changes in the window (all items)", str(sum(totals.values()))],
        *[[f"  {kind.replace('_', ' ')}", str(n)] for kind, n in totals.items()],
        ["items added" + (" (matching --where)" if report.where else ""), str(report.added)],
        ["items removed" + (" (matching --where)" if report.where else ""), str(report.removed)],
        ["items changed" + (" (matching --where)" if report.where else ""), str(report.changed)],
    ]
    return _table("summary", ("what", "count"), [[escape(a), b] for a, b in rows], numeric=frozenset({1}))


def _attributes(report: IncidentReport) -> str:
    rows = [[f"<code>{escape(a.name)}</code>", str(a.items), str(a.changed), str(a.added), str(a.removed)]
            for a in report.attributes]
    return _table("attributes", ("attribute", "items", "changed", "added", "removed"), rows,
                  numeric=frozenset({1, 2, 3, 4}), empty="no item was modified in the window")


def _samples(report: IncidentReport) -> str:
    parts = []
    for change in report.samples:
        if change.kind == "changed":
            rows = [[f"<code>{escape(p.path)}</code>", escape(p.kind),
                     _value(p.old) if p.kind != "added" else "(absent)",
                     _value(p.new) if p.kind != "removed" else "(absent)"] for p in change.paths]
        else:
            item = (change.after if change.kind == "added" else change.before) or {}
            # The key attributes first (partition, then sort), as in every item-shaped output.
            names = [n for n in report.key_names if n in item] + [n for n in item if n not in report.key_names]
            rows = [[f"<code>{escape(name)}</code>", escape(change.kind),
                     _value(item[name]) if change.kind == "removed" else "(absent)",
                     _value(item[name]) if change.kind == "added" else "(absent)"] for name in names]
        parts.append(f'<div class="sample"><h3>{escape(change.kind)} {_key(report, change.key)}</h3>'
                     + _table("", ("path", "change", "before", "after"), rows).replace(' id=""', "") + "</div>")
    if not parts:
        return '<p class="note">No item differs between the two moments.</p>'
    return "".join(parts)


def _repair(report: IncidentReport) -> str:
    counts = _table("repair-counts", ("action", "items"),
                    [["re-create (deleted in the window): put", str(dict(report.repair_counts)["recreate"])],
                     ["restore (modified in the window): put", str(dict(report.repair_counts)["restore"])],
                     ["delete (created in the window)", str(report.repair_deletes)],
                     ["puts in all", str(report.repair_puts)]],
                    numeric=frozenset({1}))
    sample = _table("repair-sample", ("action", "key"),
                    [[escape(a.action), _key(report, a.key)] for a in report.repair_sample],
                    empty="nothing to repair")
    return counts + sample


def render_html(report: IncidentReport) -> str:
    """The whole page: summary, change-rate chart, attributes, sample diffs and the repair plan."""
    window = f"{_time(report.from_us)} to {_time(report.to_us)}"
    where = (f"<p>Items narrowed by <code>--where {escape(report.where)}</code>: the attributes and samples "
             "show matching items only; the chart and the repair plan cover every item.</p>" if report.where else "")
    generated = format_time(datetime.fromtimestamp(report.generated_us // 1_000_000, UTC))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{escape(POLICY)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ddb-rewind incident report: {escape(report.table)}</title><style>{_STYLE}</style></head>
<body>
<h1>Incident report: table <code>{escape(report.table)}</code></h1>
<p>Window (after the first moment, up to and including the second): <strong>{escape(window)}</strong>.
Store <code>{escape(report.store_uri)}</code>. Generated {escape(generated)} by ddb-rewind.</p>
{where}
<section id="overview"><h2>Overview</h2>{_summary(report)}</section>
<section id="change-rate"><h2>Change rate by event type</h2>
<p class="note">Every change of the table in the window, per {escape(report.timeline.label)} bucket (UTC);
quiet buckets are empty. An incident shows as a spike.</p>
{_chart(report)}</section>
<section id="most-changed"><h2>Attributes most changed</h2>
<p class="note">Top-level attributes by the number of modified items in which they differ between the two
moments (items created or deleted in the window are not counted here); the top {TOP_ATTRIBUTES} at most.</p>
{_attributes(report)}</section>
<section id="samples"><h2>Sample before/after diffs</h2>
<p class="note">{len(report.samples)} of the items that differ: those the window damaged (modified or
removed) first, then those it added, each by key. Values are shown as plain JSON; those longer than
{MAX_VALUE_CHARS} characters are cut. <code>ddb-rewind diff</code> lists them all.</p>
{_samples(report)}</section>
<section id="repair"><h2>What repair would do</h2>
<p class="note">The plan of <code>ddb-rewind repair</code> over the same window: put every item changed in the
window back to its state at the window start. At run time, items written again after the window are skipped
(unless --force), and so are removed items the live table's TTL has expired (unless --recreate-expired).
Paste this line to check the plan against the live table (it writes nothing); run it
again without <code>--dry-run</code> to repair (it asks first, unless <code>--yes</code>). <code>--target</code>
names the live table to repair: here the table itself.</p>
<pre class="command" id="repair-command">{escape(report.repair_command)}</pre>
{_repair(report)}</section>
</body></html>
"""


def write_report(report: IncidentReport, path: str, *, overwrite: bool = False) -> int:
    """Write the page to ``path`` whole or not at all (replayer.restoring.outfile); returns its size in bytes."""
    page = render_html(report).encode("utf-8")
    with output_file(path, overwrite) as partial:
        partial.write_bytes(page)
    return len(page)
