"""The audit report: one self-contained HTML file (docs/reconcile.md, "The audit report").

Everything is inline: CSS in a ``<style>`` element, the revenue chart as inline SVG, no
script, no font, no image and no link to anything outside the file, so it opens offline and
can be mailed or attached to a ticket as it is. Tables carry ``id`` attributes and each
column header a ``data-key`` naming the ``reconcile --json`` field it shows, so the report
can be checked against the JSON (tests do) and scraped into a spreadsheet.
"""

from __future__ import annotations

import calendar
from datetime import date
from decimal import Decimal
from html import escape
from typing import Any, Iterable

from khaosync.report import Audit
from khaosync.report.csv import METRIC_COLUMNS

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1d232a;margin:2rem auto;
max-width:1180px;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:2px solid #dde3ea}
h3{font-size:1rem;margin-top:1.4rem}
.meta{color:#5a6672}.banner{background:#ffe58a;color:#000;font-weight:600;padding:.15rem .5rem;border-radius:3px}
table{border-collapse:collapse;margin:.6rem 0 1rem;width:100%;font-size:13px}
th,td{border:1px solid #dde3ea;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#f3f6f9}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.status-ok{color:#17803d;font-weight:600}.status-warn{color:#a35c00;font-weight:600}
.status-fail{color:#c0262d;font-weight:600}.status-info{color:#5a6672}
.verdict{font-size:1.1rem;padding:.5rem .8rem;border-radius:4px;display:inline-block}
.verdict.ok{background:#e3f6e9}.verdict.warn{background:#fff1d6}.verdict.fail{background:#fde3e4}
svg text{font:11px system-ui,Arial,sans-serif;fill:#3b4650}
.note{color:#5a6672;font-size:12px}
"""

NUMERIC = {"erp", "ledger", "ometria", "difference", "not_yet_due", "unexplained", "count", "open"}
METRIC_LABELS = {"name": "metric", "currency": "currency", "store": "store", "erp": "ERP", "ledger": "ledger",
                 "ometria": "Ometria", "difference": "difference", "not_yet_due": "not yet due",
                 "unexplained": "unexplained", "status": "status"}
RECORD_COLUMNS = ("key", "issue", "severity", "owner", "side", "erp", "ometria", "detail")
RECORD_LABELS = {"key": "record", "issue": "issue", "severity": "severity", "owner": "owner", "side": "seen in",
                 "erp": "ERP", "ometria": "Ometria", "detail": "detail"}


def cell(value: Any) -> str:
    """How a JSON value is written in a table cell (and read back by a test): null is empty."""
    return "" if value is None else str(value)


def _td(key: str, value: Any) -> str:
    text = escape(cell(value))
    classes = []
    if key in NUMERIC:
        classes.append("num")
    if key in ("status", "severity"):
        classes.append(f"status-{text}")
    attr = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{attr}>{text}</td>"


def table(table_id: str, columns: Iterable[str], labels: dict[str, str], rows: Iterable[dict]) -> str:
    columns = list(columns)
    head = "".join(f'<th data-key="{escape(c)}">{escape(labels.get(c, c))}</th>' for c in columns)
    body = "\n".join("<tr>" + "".join(_td(c, row.get(c)) for c in columns) + "</tr>" for row in rows)
    return f'<table id="{escape(table_id)}"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'


# -- the chart --------------------------------------------------------------------------------------


def _days(month: str) -> list[date]:
    year, mon = (int(p) for p in month.split("-"))
    return [date(year, mon, d) for d in range(1, calendar.monthrange(year, mon)[1] + 1)]


def revenue_chart(month: str, currency: str, daily: list[dict], far: str) -> str:
    label_far = "Ometria" if far == "ometria" else "ledger"
    """Net revenue per day, ERP against the far side (Ometria, or the ledger without --live), as
    inline SVG: two lines over the month's days, a point per day with its figures as a tooltip."""
    days = _days(month)
    by_day = {row["date"]: row for row in daily if row["currency"] == currency}
    erp = [Decimal(by_day[d.isoformat()]["erp"]) if d.isoformat() in by_day else Decimal(0) for d in days]
    other = [Decimal(by_day[d.isoformat()][far] or 0) if d.isoformat() in by_day else Decimal(0) for d in days]
    width, height, left, right, top, bottom = 760, 260, 70, 16, 28, 34
    hi = max([*erp, *other, Decimal(1)])
    lo = min([*erp, *other, Decimal(0)])
    span = hi - lo

    def x(i: int) -> float:
        return left + (width - left - right) * (i / max(len(days) - 1, 1))

    def y(v: Decimal) -> float:
        return top + float((hi - v) / span) * (height - top - bottom)

    parts = [f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'aria-label="{escape(f"net revenue per day, {currency}, ERP and {label_far}")}">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        value = lo + span * Decimal(str(fraction))
        gy = y(value)
        parts.append(f'<line x1="{left}" y1="{gy:.1f}" x2="{width - right}" y2="{gy:.1f}" stroke="#e6ebf0"/>')
        parts.append(f'<text x="{left - 6}" y="{gy + 4:.1f}" text-anchor="end">{value.quantize(Decimal(1)):,}</text>')
    for i, d in enumerate(days):
        if d.day == 1 or d.day % 5 == 0:
            parts.append(f'<text x="{x(i):.1f}" y="{height - 12}" text-anchor="middle">{d.day}</text>')
    for values, colour, dash, label in ((erp, "#1f4e8c", "", "ERP"),
                                         (other, "#e07b00", ' stroke-dasharray="6 4"', label_far)):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{points}"/>')
        for i, v in enumerate(values):
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}">'
                         f'<title>{escape(f"{days[i].isoformat()} {label}: {currency} {v}")}</title></circle>')
    parts.append(f'<rect x="{left + 8}" y="6" width="12" height="3" fill="#1f4e8c"/>'
                 f'<text x="{left + 24}" y="11">ERP</text>'
                 f'<rect x="{left + 64}" y="6" width="12" height="3" fill="#e07b00"/>'
                 f'<text x="{left + 80}" y="11">{escape(label_far)}</text>'
                 f'<text x="{width - right}" y="11" text-anchor="end">{escape(currency)} net revenue by day</text>')
    parts.append("</svg>")
    return "".join(parts)


# -- the page ---------------------------------------------------------------------------------------


def _owner_summary(records: list[dict]) -> list[dict]:
    counts: dict[tuple[str, str, str], int] = {}
    for r in records:
        k = (r["owner"], r["issue"], r["severity"])
        counts[k] = counts.get(k, 0) + 1
    return [{"owner": o, "issue": i, "severity": s, "count": n} for (o, i, s), n in sorted(counts.items())]


def render(audit: Audit) -> str:
    """The whole report as one HTML document (a str), masked as ``audit.masker`` says."""
    rec, mask = audit.reconciliation, audit.masker
    far = "ometria" if rec["live"] else "ledger"
    records = [{**r, "erp": mask.text(r["erp"]), "ometria": mask.text(r["ometria"]),
                "detail": mask.text(r["detail"])} for r in rec["records"]]
    status = rec["status"]
    sections = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>khaosync audit report {escape(rec['month'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Audit report: {escape(rec['month'])}</h1>",
        '<p class="meta">'
        + (' <span class="banner">SANDBOX</span> ' if audit.sandbox else "")
        + f"profile {escape(audit.profile)} · generated {escape(rec['generated_at'])} · "
        + ("ERP, ledger and Ometria read back" if rec["live"] else "ERP and ledger (no Ometria read-back)")
        + f" · rules: {escape(rec['rules'])}"
        + (" · personal data masked" if audit.masked else "") + "</p>",
        f'<p class="verdict {escape(status)}" id="verdict">Reconciliation {escape(status.upper())}: '
        f"{sum(1 for m in rec['metrics'] if m['status'] != 'ok')} metric(s) out, "
        f"{sum(1 for r in records if r['severity'] == 'fail')} record(s) at fail severity, "
        f"{len(records)} record(s) listed</p>",
        "<h2>Revenue by day</h2>",
        f'<p class="note">Net revenue (gross less refunds) of the orders placed each day, London time: the ERP '
        f"against {'Ometria as read back' if rec['live'] else 'what Ometria accepted from us (the ledger)'}.</p>",
    ]
    currencies = sorted({row["currency"] for row in rec["daily"]})
    for currency in currencies:
        sections.append(f"<h3>{escape(currency)}</h3>")
        sections.append(revenue_chart(rec["month"], currency, rec["daily"], far))
    if not currencies:
        sections.append('<p class="note">No revenue in this month on any side.</p>')
    sections += [
        "<h2>Reconciliation</h2>",
        '<p class="note">Per currency and Ometria store. <em>difference</em> is the far side minus the ERP; '
        "<em>not yet due</em> is the part explained by orders Ometria is not meant to hold yet; the status "
        "applies the rules to what is left (<em>unexplained</em>).</p>",
        table("metrics", METRIC_COLUMNS, METRIC_LABELS, rec["metrics"]),
        "<h2>Records behind the differences</h2>",
        table("records-by-owner", ("owner", "issue", "severity", "count"),
              {"owner": "owner", "issue": "issue", "severity": "severity", "count": "records"},
              _owner_summary(records)),
        table("records", RECORD_COLUMNS, RECORD_LABELS, records),
        "<h2>Open exceptions by owner and type</h2>",
        table("exceptions", ("owner", "type", "severity", "open", "oldest", "records", "reason"),
              {"owner": "owner", "type": "type", "severity": "severity", "open": "open", "oldest": "oldest",
               "records": "records", "reason": "example"},
              [{**e, "records": mask.text(e["records"]), "reason": mask.text(e["reason"])}
               for e in audit.exceptions]),
    ]
    if rec.get("notes"):
        sections.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in rec["notes"]) + "</ul>")
    sections.append('<p class="note">Made by khaosync reconcile; the same tables are available as '
                    "<code>khaosync reconcile --json</code> and <code>--csv DIR</code>.</p>")
    sections.append("</body></html>")
    return "\n".join(sections) + "\n"
