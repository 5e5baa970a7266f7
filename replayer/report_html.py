"""An incident report as ONE self-contained HTML file: it opens on an air-gapped laptop.

plotly.js is inlined (``include_plotlyjs=True``); nothing is fetched, and a Content-Security-Policy
forbids any fetch, so a library that tried would fail loudly (a console error) instead of phoning
home. Item contents are the user's data: every one is HTML-escaped here, in Python, into static
markup. None of it goes to plotly or to any script, so no script ever puts data into the page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from changelog.codec import dump_json
from changelog.timefmt import format_time, from_micros
from replayer.outfile import output_file
from replayer.report import TOP_ATTRIBUTES, IncidentReport
from replayer.timeline import KINDS

# Data-shaped strings are cut for display only; the store and `diff --format json` keep them whole.
MAX_VALUE_CHARS = 300
POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
          "font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'")
_COLOURS = {"inserts": "#2ca02c", "modifies": "#ff7f0e", "removes": "#d62728", "ttl_removes": "#9467bd"}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ddd; padding: .2em .6em; }
th { background: #f4f4f4; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: .9em; white-space: pre-wrap; word-break: break-all; } .note { color: #555; font-size: .9em; }
.sample { margin: 1em 0; } .sample h3 { font-size: 1em; margin: .3em 0; }
"""


def _time(us: int) -> str:
    return format_time(from_micros(us))


def _value(value: Any) -> str:
    """An AttributeValue as escaped DynamoDB JSON, cut at MAX_VALUE_CHARS (said so when cut)."""
    text = dump_json(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + f"… ({len(text):,} characters)"
    return f"<code>{escape(text)}</code>"


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
    import plotly.graph_objects as go

    buckets = report.timeline.filled()
    # Naive UTC datetimes: plotly draws them as given (it has no time zones), the axis says UTC.
    starts = [from_micros(b.start_us).astimezone(UTC).replace(tzinfo=None) for b in buckets]
    figure = go.Figure(
        data=[go.Bar(name=kind.replace("_", " "), x=starts, y=[getattr(b, kind) for b in buckets],
                     marker_color=_COLOURS[kind]) for kind in KINDS],
        layout=go.Layout(barmode="stack", bargap=0.05, height=420, margin={"l": 50, "r": 20, "t": 40, "b": 50},
                         title=f"Changes per {report.timeline.label} bucket",
                         xaxis={"title": "time (UTC)", "type": "date"}, yaxis={"title": "changes"},
                         legend={"orientation": "h", "y": -0.2, "traceorder": "normal"}),
    )
    html: str = figure.to_html(full_html=False, include_plotlyjs=True, div_id="change-rate-chart",
                               config={"displaylogo": False, "responsive": True})
    return html


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
            rows = [[f"<code>{escape(name)}</code>", escape(change.kind),
                     _value(value) if change.kind == "removed" else "(absent)",
                     _value(value) if change.kind == "added" else "(absent)"] for name, value in item.items()]
        parts.append(f'<div class="sample"><h3>{escape(change.kind)} {_value(change.key)}</h3>'
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
                    [[escape(a.action), _value(a.key)] for a in report.repair_sample],
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
<p class="note">The first {len(report.samples)} items that differ, by key; values longer than {MAX_VALUE_CHARS}
characters are cut. <code>ddb-rewind diff</code> lists them all.</p>
{_samples(report)}</section>
<section id="repair"><h2>What repair would do</h2>
<p class="note">The plan of <code>ddb-rewind repair --from {escape(_time(report.from_us))}
--to {escape(_time(report.to_us))}</code>: put every item changed in the window back to its state at the
window start. At run time, items written again after the window are skipped (unless --force);
<code>repair --dry-run</code> predicts those skips against the live table.</p>
{_repair(report)}</section>
</body></html>
"""


def write_report(report: IncidentReport, path: str, *, overwrite: bool = False) -> int:
    """Write the page to ``path`` whole or not at all (replayer.outfile); returns its size in bytes."""
    page = render_html(report).encode("utf-8")
    with output_file(path, overwrite) as partial:
        partial.write_bytes(page)
    return len(page)
