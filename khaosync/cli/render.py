"""Rich renderings of library objects, shared by commands."""

from __future__ import annotations

from rich.table import Table

from khaosync.store.db import ExceptionRow


def exceptions_table(rows: list[ExceptionRow]) -> Table:
    table = Table(title=f"{len(rows)} exception(s)", title_justify="left")
    for col in ("id", "type", "sev", "owner", "status", "records", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        recs = ", ".join(r.records[:3]) + (f" +{len(r.records) - 3}" if len(r.records) > 3 else "")
        table.add_row(str(r.id), r.type, r.severity, r.owner, r.status, recs, r.reason)
    return table


def pull_table(result) -> Table:
    """Fits an 80-column terminal: the bookmark shows to the minute, in UTC."""
    table = Table(title=f"pull run {result.run_id}", title_justify="left", box=None, header_style="bold underline")
    for col in ("entity", "read", "new", "changed", "same", "problems", "rejected", "bookmark UTC"):
        table.add_column(col, justify="left" if col in ("entity", "bookmark UTC") else "right", no_wrap=True)
    for name, r in result.entities.items():
        mark = (r.bookmark_after or "-")[:16].replace("T", " ")
        table.add_row(name, str(r.fetched), str(r.new), str(r.changed), str(r.unchanged), str(r.problems),
                      str(r.rejected), mark)
    return table


def discover_table(report) -> Table:
    table = Table(title=f"{report.service or 'service'} at {report.endpoint or '?'} ({report.style or '?'} style)",
                  title_justify="left")
    for col in ("operation", "status", "detail"):
        table.add_column(col, overflow="fold")
    order = {"expected_missing": 0, "different_signature": 1, "used": 2, "unused": 3}
    for op in sorted(report.operations, key=lambda o: (order.get(o.status, 9), o.name)):
        detail = []
        if op.our_name and op.our_name != op.name:
            detail.append(f"ours: {op.our_name}")
        if op.missing_params:
            detail.append("site lacks: " + ", ".join(op.missing_params))
        if op.extra_required_params:
            detail.append("site requires: " + ", ".join(op.extra_required_params))
        if op.return_difference:
            detail.append(op.return_difference)
        detail += op.type_differences + op.notes
        if op.suggestions:
            detail.append("similar: " + ", ".join(op.suggestions))
        table.add_row(op.name, op.status, "; ".join(detail))
    if report.advice:
        table.caption = "\n".join(report.advice)
        table.caption_justify = "left"
    return table


def sync_table(result) -> Table:
    """One line per record type: what the ERP gave, what map made, the plan, what Ometria took."""
    data = result.as_dict()
    title = f"sync run {result.run_id}: plan {result.plan_id} ({'committed' if result.committed else 'dry run'})"
    table = Table(title=title, title_justify="left", box=None, header_style="bold underline")
    for col in ("type", "mapped", "held", "new", "changed", "void", "sent", "accepted", "rejected"):
        table.add_column(col, justify="left" if col == "type" else "right", no_wrap=True)
    for type_, counts in data["diff"].items():
        m = next((v for k, v in data["map"]["entities"].items() if k.rstrip("s") == type_), {})
        table.add_row(type_, str(m.get("mapped", 0) + m.get("unchanged", 0)), str(m.get("held", 0)),
                      str(counts.get("new", 0)), str(counts.get("changed", 0)), str(counts.get("void", 0)),
                      str(data["sent"].get(type_, 0)), str(data["accepted"].get(type_, 0)),
                      str(data["rejected"].get(type_, 0)))
    found = ", ".join(f"{t} {n}" for t, n in sorted(data["exceptions"].items())) or "none"
    table.caption = f"new exceptions: {found}"
    table.caption_justify = "left"
    return table
