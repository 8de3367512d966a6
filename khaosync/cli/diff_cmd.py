"""``khaosync diff``: what would change in Ometria, record by record, and the plan to push it."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any, Optional

import typer
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from khaosync.cli.context import app_context
from khaosync.cli.live_reads import live_reads
from khaosync.report.csv import csv_writer
from khaosync.errors import EXIT_FINDINGS

ENTITY_CHOICES = ("contacts", "orders", "products")
CSV_COLUMNS = ("type", "key", "change", "field", "before", "after", "reason")


# -- values, exactly -------------------------------------------------------------------------


def cell(value: Any) -> str:
    """A value as a person reads it: amounts exactly as held, absent as ``-``."""
    from khaosync.stages.diff import MISSING

    if value is MISSING:
        return "-"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value if value else '""'
    return exact_json(value, indent=None)


def exact_json(data: Any, indent: int | None = 2, _level: int = 0) -> str:
    """JSON with every ``Decimal`` written as the exact number it is (``19.90`` stays ``19.90``).

    ``json.dumps`` can only write a Decimal as a string or through a float; machine readers of
    ``diff --json`` get numbers where Ometria has numbers.
    """
    pad = "" if indent is None else "\n" + " " * (indent * (_level + 1))
    end = "" if indent is None else "\n" + " " * (indent * _level)
    sep = ","
    colon = ":" if indent is None else ": "
    if isinstance(data, Decimal):
        return format(data, "f")
    if isinstance(data, dict):
        if not data:
            return "{}"
        items = [f"{pad}{json.dumps(str(k), ensure_ascii=False)}{colon}{exact_json(v, indent, _level + 1)}"
                 for k, v in sorted(data.items(), key=lambda kv: str(kv[0]))]
        return "{" + sep.join(items) + end + "}"
    if isinstance(data, (list, tuple)):
        if not data:
            return "[]"
        return "[" + sep.join(f"{pad}{exact_json(v, indent, _level + 1)}" for v in data) + end + "]"
    return json.dumps(data, ensure_ascii=False, default=str)


# -- renderings ------------------------------------------------------------------------------


def counts_line(result) -> str:
    """One line, under 80 columns: what would change, against what."""
    against = "Ometria now" if result.live else "the ledger"
    c = result.counts
    parts = [f"{c['new']} new", f"{c['changed']} changed", f"{c['unchanged']} unchanged", f"{c['void']} to void"]
    if c.get("held"):
        parts.append(f"{c['held']} held")
    scope = f" ({len(result.keys)} key{'s' if len(result.keys) != 1 else ''})" if result.keys else ""
    return f"{result.entity}{scope} vs {against}: " + ", ".join(parts)


def plan_lines(result) -> list[str]:
    line = f"plan {result.plan_id}: {result.planned} record{'s' if result.planned != 1 else ''} to push"
    if len(result.superseded) == 1:
        line += f" (supersedes {result.superseded[0]})"
    elif result.superseded:
        line += f" (supersedes {len(result.superseded)} older plans)"
    lines = [line]
    if result.keys:
        lines.append("partial plan (--key): push sends it only when named; it supersedes nothing")
    if result.planned:
        lines.append(f"push it with: khaosync push --plan {result.plan_id} --commit")
    return lines


def changes_table(result) -> Table:
    """One row per field that differs; fits 80 columns, long values fold, nothing is cut."""
    title = None
    if result.listed > len(result.records):
        title = f"first {len(result.records)} of {result.listed} records"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  header_style="bold")
    table.add_column("key", overflow="fold")
    table.add_column("change", overflow="fold")
    table.add_column("field", no_wrap=True)  # a path is one token: never broken (issue 14.7)
    table.add_column("before", overflow="fold")
    table.add_column("after", overflow="fold")
    for record in result.records:
        rows = list(record.fields.items()) or [(None, None)]
        for n, (path, change) in enumerate(rows):
            first = n == 0
            if path is None:
                table.add_row(record.key, record.change, "", "", "")
            else:
                table.add_row(record.key if first else "", record.change if first else "", path,
                              cell(change.before), cell(change.after))
        if record.reason:
            table.add_row("", "", "(why)", "", record.reason)
    return table


def findings_table(findings) -> Table:
    from khaosync.cli.exceptions_cmd import register_table

    return register_table("exceptions this diff saw", [
        (str(f.exception_id or "-"), f.type, f.severity or "", f.owner or "", list(f.records), f.reason)
        for f in sorted(findings, key=lambda f: f.exception_id or 0)])


def human(result) -> Group:
    parts: list[Any] = [Text(counts_line(result)), *(Text(line) for line in plan_lines(result))]
    if result.records:
        parts.append(changes_table(result))
    if result.findings:
        parts.append(findings_table(result.findings))
    return Group(*parts)


def csv_value(value: Any) -> str:
    from khaosync.stages.diff import MISSING

    if value is MISSING:
        return ""
    if isinstance(value, str):
        return value
    return cell(value)


def write_csv(result, target, masker=None) -> None:
    writer = csv_writer(target, masker)
    writer.writerow(CSV_COLUMNS)
    for record in result.records:
        if not record.fields:
            writer.writerow((record.type, record.key, record.change, "", "", "", record.reason or ""))
        for path, change in record.fields.items():
            writer.writerow((record.type, record.key, record.change, path, csv_value(change.before),
                             csv_value(change.after), record.reason or ""))


def mask_diff(result, masker) -> None:
    """--mask-pii: every value, reason and finding of the diff, masked before it is rendered."""
    from dataclasses import replace

    from khaosync.stages.diff import FieldChange

    for record in result.records:
        record.fields = {path: FieldChange(masker.value(ch.before), masker.value(ch.after))
                         for path, ch in record.fields.items()}
        record.reason = masker.text(record.reason)
    result.findings = [replace(f, reason=masker.text(f.reason), detail=masker.value(f.detail)) for f in result.findings]


def _open_fail_exceptions(store) -> int:
    return store.conn.execute(
        "SELECT count(*) FROM exception WHERE resolved_at IS NULL AND severity = 'fail'").fetchone()[0]


def register(app: typer.Typer) -> None:
    @app.command()
    def diff(
        ctx: typer.Context,
        entity: str = typer.Argument(..., help="contacts, orders or products.", metavar="ENTITY"),
        live: bool = typer.Option(False, "--live", help="Compare with what Ometria holds now (read back within "
                                  "the read rate) instead of the ledger."),
        field: Optional[list[str]] = typer.Option(None, "--field", help="Only list changes to this field (and "
                                                  "below it: lineitems, customer.id); repeatable."),
        key: Optional[list[str]] = typer.Option(None, "--key", help="Only these record ids (counts and plan "
                                                "too); repeatable."),
        limit: Optional[int] = typer.Option(None, "--limit", min=0, help="List at most N records."),
        as_json: bool = typer.Option(False, "--json", help="The diff as JSON on stdout (docs/diff.md)."),
        csv_path: Optional[str] = typer.Option(None, "--csv", metavar="FILE",
                                               help="One row per changed field to FILE ('-' for stdout)."),
        mask_pii: bool = typer.Option(False, "--mask-pii", help="Replace every email and name the state store has "
                                      "ever held (same person, same mask)."),
    ) -> None:
        """Show what would change in Ometria, record by record, and write a plan for push.

        Runs the detectors of the record type first (stage diff): their exceptions are listed
        and recorded. Exit 1 when any open exception is at fail severity.

        Example: khaosync diff orders --field status --limit 20
        """
        from khaosync.connect import Connections
        from khaosync.stages.diff import diff_records

        if entity not in ENTITY_CHOICES:
            raise typer.BadParameter(f"{entity!r}: choose contacts, orders or products", param_hint="ENTITY")
        c = app_context(ctx)
        with c.open_store("diff") as store:
            client = Connections(c.profile).ometria_client() if live else None
            try:
                with live_reads(c.terminal, client) as reads:
                    result = diff_records(store, c.profile, entity, live_client=reads, fields=field or None,
                                          keys=key or None, limit=limit)
            finally:
                if client is not None:
                    client.close()
            open_fail = _open_fail_exceptions(store)
            if mask_pii:
                from khaosync.report import masker_for

                c.terminal.masker = masker_for(store)
                mask_diff(result, c.terminal.masker)
        if not any(result.counts.values()) and not key:
            c.terminal.warn(f"no outbound {entity}, nothing in the ledger: run `khaosync map`")
        if csv_path:
            if csv_path == "-":
                write_csv(result, sys.stdout, c.terminal.masker)
            else:
                with open(csv_path, "w", newline="", encoding="utf-8") as handle:
                    write_csv(result, handle, c.terminal.masker)
                c.terminal.info(f"wrote {len(result.records)} records to {csv_path}")
        if as_json:
            data = {"sandbox": c.profile.is_sandbox, **result.as_dict(), "open_fail_exceptions": open_fail}
            c.terminal.json_text(exact_json(data))
        elif csv_path != "-":
            c.terminal.data(human(result))
        if open_fail:
            line = f"{open_fail} open exception(s) at fail severity: khaosync exceptions list --open"
            if c.terminal.quiet:
                if not as_json:
                    c.terminal.verdict(line, failed=True)
            else:
                c.terminal.info(line)
            raise typer.Exit(EXIT_FINDINGS)


__all__ = ["cell", "exact_json", "register", "write_csv"]
