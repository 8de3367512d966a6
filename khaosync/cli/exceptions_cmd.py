"""``khaosync exceptions``: the exceptions register."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any, Optional

import typer
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from khaosync.cli.context import app_context
from khaosync.report.csv import csv_writer
from khaosync.errors import EXIT_FINDINGS, ConfigError

LIST_COLUMNS = ("id", "type", "severity", "owner", "status", "stage", "records", "reason", "first_seen", "last_seen",
                "resolved_at")


def records_cell(records: list[str]) -> str:
    shown = ", ".join(records[:3])
    return shown + (f" +{len(records) - 3}" if len(records) > 3 else "")


def wrap_name(name: str, width: int = 19) -> str:
    """A snake_case type name broken after underscores, so the column stays narrow and whole words
    stay whole (``split_consignment_`` / ``duplicate``)."""
    if len(name) <= width:
        return name
    lines, line = [], ""
    for part in name.split("_"):
        piece = part + "_"
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    lines.append(line.removesuffix("_"))
    return "\n".join(lines)


def register_table(title: str, rows: list[tuple[str, str, str, str, list[str], str]]) -> Table:
    """id, type, sev, owner, then the records over the reason: 80 columns, nothing cut."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True, header_style="bold")
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("sev", no_wrap=True)
    table.add_column("owner", no_wrap=True)
    table.add_column("records / reason", overflow="fold", ratio=1)
    for id_, type_, severity, owner, records, reason in rows:
        table.add_row(id_, wrap_name(type_), severity, owner, Text(records_cell(records) + "\n" + reason))
    return table


def exceptions_table(rows) -> Table:
    open_count = sum(1 for r in rows if r.status == "open")
    return register_table(f"{len(rows)} exception(s), {open_count} open", [
        (str(r.id), r.type, r.severity, r.owner, r.records,
         r.reason if r.status == "open" else f"(resolved {r.resolved_at[:10]}) {r.reason}") for r in rows])


def as_json_row(r) -> dict:
    return {"id": r.id, "type": r.type, "severity": r.severity, "owner": r.owner, "status": r.status,
            "stage": r.stage, "records": r.records, "reason": r.reason, "first_seen": r.first_seen,
            "last_seen": r.last_seen, "resolved_at": r.resolved_at}


def write_csv(rows, target, masker=None) -> None:
    writer = csv_writer(target, masker)
    writer.writerow(LIST_COLUMNS)
    for r in rows:
        data = as_json_row(r)
        data["records"] = " ".join(r.records)
        writer.writerow(["" if data[c] is None else data[c] for c in LIST_COLUMNS])


def _pretty(value: Any) -> str:
    from khaosync.cli.diff_cmd import exact_json

    return value if isinstance(value, str) else exact_json(value)


def detail_view(found) -> Group:
    """One finding whole: what, whose, since when, the rule, and every record raw and mapped."""
    head = Table(box=None, show_header=False, pad_edge=False)
    head.add_column("what", no_wrap=True, style="bold")
    head.add_column("value", overflow="fold")
    rows = [("exception", f"{found.id} {found.type}"), ("severity", found.severity), ("owner", found.owner),
            ("status", found.status + (f" since {found.resolved_at}" if found.resolved_at else "")),
            ("stage", found.stage), ("first seen", found.first_seen), ("last seen", found.last_seen),
            ("rule", found.rule or "-"), ("reason", found.reason), ("records", ", ".join(found.records))]
    for name, value in rows:
        head.add_row(name, Text(str(value)))
    parts: list[Any] = [head]
    for view in found.views:
        parts.append(Text(f"\n== {view.ref} ==", style="bold"))
        if view.note:
            parts.append(Text(view.note))
        for staged in view.erp:
            parts.append(Text(f"-- KC {staged['entity']} {staged['key']} version {staged['version']}, raw:"))
            parts.append(Text(staged["raw"] or "(none)"))
            parts.append(Text("-- parsed:"))
            parts.append(Text(_pretty(staged["parsed"]) if staged["parsed"] is not None else "(could not be parsed)"))
        for mapped in view.mapped:
            state = f"held: {mapped['hold_reason']}" if mapped["state"] == "held" else mapped["state"]
            parts.append(Text(f"-- mapped {mapped['type']} {mapped['id']} ({state}):"))
            parts.append(Text(_pretty(mapped["body"])))
        for sent in view.ledger:
            verified = f", verified {sent['verified_at']}" if sent["verified_at"] else ""
            parts.append(Text(f"-- Ometria accepted {sent['type']} {sent['id']} at {sent['accepted_at']}{verified}:"))
            parts.append(Text(_pretty(sent["body"])))
        if view.ometria is not None:
            parts.append(Text("-- in Ometria (as the detector read it):"))
            parts.append(Text(_pretty(view.ometria)))
        if view.other is not None:
            parts.append(Text(_pretty(view.other)))
    return Group(*parts)


def _mask(c, store) -> None:
    from khaosync.report import masker_for

    c.terminal.masker = masker_for(store)


def _check_filter(store, column: str, value: str | None) -> None:
    """An unknown --owner or --type is a typo, not an empty register: say which values exist."""
    if value is None:
        return
    from khaosync.findings import TYPES

    known = {t.name if column == "type" else t.owner for t in TYPES.values()}
    known |= {r[0] for r in store.conn.execute(f"SELECT DISTINCT {column} FROM exception")}  # noqa: S608 - fixed names
    if value not in known:
        raise ConfigError(f"--{column} {value!r}: unknown; choose from {', '.join(sorted(known))}")


def register(app: typer.Typer) -> None:
    exceptions_app = typer.Typer(help="The exceptions register: every finding, typed and owned.", no_args_is_help=True)
    app.add_typer(exceptions_app, name="exceptions")

    @exceptions_app.command("list")
    def exceptions_list(
        ctx: typer.Context,
        owner: Optional[str] = typer.Option(None, help="Only this owner (ecommerce, crm, finance, ...)."),
        type_: Optional[str] = typer.Option(None, "--type", help="Only this exception type."),
        open_only: bool = typer.Option(False, "--open", help="Only open exceptions."),
        every_stage: bool = typer.Option(False, "--every-stage", help="One row per stage that raised a finding "
                                         "(default: one per cause, stages joined as pull+map)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
        csv_path: Optional[str] = typer.Option(None, "--csv", metavar="FILE",
                                               help="The list as CSV to FILE ('-' for stdout)."),
        mask_pii: bool = typer.Option(False, "--mask-pii", help="Replace every email and name the state store has "
                                      "ever held (same person, same mask)."),
    ) -> None:
        """List exceptions. Exit 1 when one listed is open at fail severity.

        Example: khaosync exceptions list --owner finance --open --json
        """
        c = app_context(ctx)
        with c.open_store("exceptions list", write=False) as store:
            _check_filter(store, "owner", owner)
            _check_filter(store, "type", type_)
            rows = store.exceptions(open_only=open_only, owner=owner, type=type_, distinct=not every_stage)
            if mask_pii:
                _mask(c, store)
                rows = [replace(r, reason=c.terminal.masker.text(r.reason), detail=c.terminal.masker.value(r.detail))
                        for r in rows]
        if csv_path == "-":
            write_csv(rows, sys.stdout, c.terminal.masker)
        elif csv_path:
            with open(csv_path, "w", newline="", encoding="utf-8") as handle:
                write_csv(rows, handle, c.terminal.masker)
            c.terminal.info(f"wrote {len(rows)} exceptions to {csv_path}")
        if as_json:
            c.terminal.json({"sandbox": c.profile.is_sandbox, "exceptions": [as_json_row(r) for r in rows]})
        elif csv_path != "-":
            c.terminal.data(exceptions_table(rows))
        failing = sum(1 for r in rows if r.severity == "fail" and r.status == "open")
        if failing:
            if not as_json and csv_path != "-":
                c.terminal.verdict(f"{failing} open exception(s) at fail severity", failed=True)
            raise typer.Exit(EXIT_FINDINGS)

    @exceptions_app.command("show")
    def exceptions_show(
        ctx: typer.Context,
        exception_id: int = typer.Argument(..., metavar="ID", help="The exception's id (exceptions list)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
        mask_pii: bool = typer.Option(False, "--mask-pii", help="Replace every email and name the state store has "
                                      "ever held (same person, same mask)."),
    ) -> None:
        """Show one exception: every record involved, raw (as the ERP sent it) and mapped (as
        khaosync would send it, and as Ometria accepted it), the rule that fired, first and last
        seen, and its status.

        Example: khaosync exceptions show 42
        """
        from khaosync.detectors.register import show_exception

        c = app_context(ctx)
        with c.open_store("exceptions show", write=False) as store:
            # SQLite ids are 64-bit: a larger number names no exception (and would not bind).
            found = show_exception(store.conn, exception_id) if 0 < exception_id < 2**63 else None
            if mask_pii:
                _mask(c, store)
                c.terminal.mask_rendered = True  # raw documents and reasons: free text
        if found is None:
            raise ConfigError(f"no exception {exception_id}: see khaosync exceptions list")
        if as_json:
            from khaosync.cli.diff_cmd import exact_json

            c.terminal.json_text(exact_json({"sandbox": c.profile.is_sandbox, **found.as_dict()}))
        else:
            c.terminal.data(detail_view(found))
