"""``khaosync reconcile``, ``khaosync health`` and ``khaosync report``.

Exit codes: 0 ok (and warn: a warning is for reading, not for paging anyone), 1 fail (the
worst result decides), 2 usage or configuration, 3 Ometria failed after retries (``--live``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from khaosync.cli.context import app_context
from khaosync.cli.live_reads import live_reads
from khaosync.errors import EXIT_FINDINGS, ConfigError

from khaosync.cli.options import FIRST_YEAR, LAST_YEAR

RECORDS_SHOWN = 40  # rows of the human records table; --json and --csv give them all

LIVE_HELP = "Also read Ometria back (its orders or contacts) and compare it too."
RULES_HELP = "Rules file (default: mappings/reconcile.yaml if present, else the built-in defaults)."
CSV_HELP = "Also write each table as a CSV file in this folder (for finance's spreadsheet)."


# -- rendering (80 columns) ------------------------------------------------------------------


def _status(text: str) -> Text:
    return Text(text, style={"ok": "green", "warn": "yellow", "fail": "red"}.get(text, ""))


def _value(value) -> str:
    return "-" if value is None else str(value)


def metrics_tables(result: dict) -> list[Table]:
    """One table per currency and store: each metric on the three sides, side by side."""
    groups: dict[tuple[str, str | None], list[dict]] = {}
    for row in result["metrics"]:
        groups.setdefault((row["currency"], row["store"]), []).append(row)
    tables = []
    for (currency, store), rows in groups.items():
        title = f"{result['month']} {currency}" + (f" store {store}" if store else "")
        table = Table(title=title, title_justify="left", box=None, header_style="bold underline", pad_edge=False)
        for col in ("metric", "ERP", "ledger", "Ometria", "diff", "not due", "status"):
            table.add_column(col, justify="left" if col in ("metric", "status") else "right", no_wrap=True)
        for row in rows:
            table.add_row(row["name"], _value(row["erp"]), _value(row["ledger"]), _value(row["ometria"]),
                          _value(row["difference"]), _value(row["not_yet_due"]), _status(row["status"]))
        tables.append(table)
    return tables


def records_tables(records: list[dict], limit: int = RECORDS_SHOWN) -> list[Table]:
    """The warn and fail records, one small table per issue (its severity and owner in the
    title), so each fits 80 columns with room for the two sides' values and why."""
    shown = [r for r in records if r["severity"] != "info"][:limit]
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in shown:
        groups.setdefault((r["issue"], r["severity"], r["owner"]), []).append(r)
    tables = []
    for (issue, severity, owner), rows in groups.items():
        table = Table(title=Text.assemble(f"{issue}: ", _status(severity), f", owner {owner}"), title_justify="left", box=None,
                      header_style="bold underline", pad_edge=False)
        table.add_column("record", no_wrap=True)
        table.add_column("ERP", overflow="fold", max_width=20)
        table.add_column("Ometria", overflow="fold", max_width=20)
        table.add_column("why", overflow="fold")
        for r in rows:
            table.add_row(r["key"], _value(r["erp"]), _value(r["ometria"]), r["detail"])
        tables.append(table)
    return tables


def _records_footer(records: list[dict], limit: int = RECORDS_SHOWN) -> str | None:
    serious = [r for r in records if r["severity"] != "info"]
    info = len(records) - len(serious)
    hidden = max(len(serious) - limit, 0)
    parts = []
    if hidden:
        parts.append(f"{hidden} more at warn or fail")
    if info:
        counts: dict[str, int] = {}
        for r in records:
            if r["severity"] == "info":
                counts[r["issue"]] = counts.get(r["issue"], 0) + 1
        parts.append("info: " + ", ".join(f"{n} {issue}" for issue, n in sorted(counts.items())))
    if not parts:
        return None
    return "; ".join(parts) + " (all of them: --json or --csv DIR)"


def _verdict(result: dict) -> str:
    out = sum(1 for m in result.get("metrics", []) if m["status"] != "ok")
    fails = sum(1 for r in result["records"] if r["severity"] == "fail")
    warns = sum(1 for r in result["records"] if r["severity"] == "warn")
    what = f"reconcile {result['month']}" if result.get("kind") == "orders" else "reconcile contacts"
    return (f"{what}: {result['status'].upper()} ({out} metric(s) out, {fails} record(s) at fail, "
            f"{warns} at warn)")


def health_table(report: dict) -> Table:
    table = Table(box=None, header_style="bold underline", pad_edge=False)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for check in report["checks"]:
        table.add_row(check["name"], _status(check["status"]), check["detail"])
    return table


# -- shared steps -------------------------------------------------------------------------------


def _rules(path: str | None):
    from khaosync.stages.reconcile_rules import load_rules

    return load_rules(path)


def _live_client(c):
    from khaosync.connect import Connections
    from khaosync.ometria.client import OmetriaClient

    return OmetriaClient(c.profile.ometria, transport=Connections(c.profile).transport())


def _check_month(month: str) -> str:
    from khaosync.stages.reconcile import check_month

    try:
        month = check_month(month)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--month") from None
    if not FIRST_YEAR <= int(month[:4]) <= LAST_YEAR:
        raise typer.BadParameter(f"month {month!r}: the year must be {FIRST_YEAR} to {LAST_YEAR}", param_hint="--month")
    return month


def _show(c, result: dict, as_json: bool, csv_dir: str | None) -> None:
    if c.terminal.masker is not None:
        result = c.terminal.masker.value(result)  # tables, CSV and JSON alike (--mask-pii)
    if csv_dir:
        from khaosync.report.csv import write_reconciliation

        for path in write_reconciliation(result, csv_dir):
            c.terminal.detail(f"wrote {path}")
        c.terminal.info(f"CSV tables written to {csv_dir}")
    if as_json:
        c.terminal.json({"sandbox": c.profile.is_sandbox, **result})
        return
    for table in metrics_tables(result) if result.get("kind") == "orders" else []:
        c.terminal.data(table)
    for table in records_tables(result["records"]):
        c.terminal.data(table)
    footer = _records_footer(result["records"])
    if footer:
        c.terminal.data(textwrap.fill(footer, width=79))
    for note in result.get("notes", []):
        c.terminal.warn(note)
    if not _empty(result):  # an empty reconciliation gets an error line instead (_refuse_empty)
        c.terminal.verdict(_verdict(result), failed=result["status"] == "fail")


def _exit_for(status: str) -> None:
    if status == "fail":
        raise typer.Exit(EXIT_FINDINGS)


def _refuse_empty(result: dict) -> None:
    """A reconciliation of nothing proves nothing: no records on any side is "no data", exit 2,
    never an OK a month-end checklist could tick (issue 14.4)."""
    message = _empty(result)
    if message:
        raise ConfigError(message)


def _empty(result: dict) -> str | None:
    counts = result.get("counts", {})
    if result.get("kind") == "orders":
        sides = {"ERP": counts.get("erp_orders", 0), "ledger": counts.get("ledger_orders", 0)}
        if result.get("live"):
            sides["Ometria"] = counts.get("ometria_orders", 0)
        what = f"reconcile {result['month']}: no orders"
    else:
        sides = {"ERP": counts.get("erp_contacts", 0), "Ometria": counts.get("ometria_contacts", 0)}
        what = "reconcile contacts: no contacts"
    if any(sides.values()):
        return None
    return (f"no data: {what} on any side ({', '.join(sides)}); nothing was proven. "
            "Is this the right --state, and has `khaosync pull` run for this period?")


def _run_detectors(store, profile, client, rules) -> None:
    """Issue 5's detectors, stage ``health``: findings recorded, those gone resolved."""
    from datetime import timedelta

    from khaosync.detectors import run_detectors

    run_detectors(store, profile, live_client=client, stage="health",
                  stall_after=timedelta(minutes=rules.health.stalled_batch_minutes))


def _sandbox_erp_clock(profile):
    """The sandbox merchant lives in its own time: bookmark lag is measured against its clock."""
    if not profile.is_sandbox:
        return None
    from khaosync.khaos.convert import kc_datetime_to_utc
    from khaosync.sandbox.world import World

    folder = Path(profile.sandbox.path)
    if not World.exists(folder):
        return None
    world = World(folder)
    try:
        clock = world.clock
    finally:
        world.close()
    return kc_datetime_to_utc(clock) if clock else None


# -- commands -------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    reconcile_app = typer.Typer(help="Prove that ERP, ledger and Ometria agree: revenue by month, contacts weekly.")
    app.add_typer(reconcile_app, name="reconcile")

    @reconcile_app.callback(invoke_without_command=True)
    def reconcile(
        ctx: typer.Context,
        month: Optional[str] = typer.Option(None, "--month", help="The month to close, YYYY-MM (London time)."),
        live: bool = typer.Option(False, "--live", help=LIVE_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (docs/reconcile.md)."),
        csv_dir: Optional[str] = typer.Option(None, "--csv", metavar="DIR", help=CSV_HELP),
        rules: Optional[str] = typer.Option(None, "--rules", metavar="FILE", help=RULES_HELP),
        mask_pii: bool = typer.Option(False, "--mask-pii", help="Replace every email and name the state store has "
                                      "ever held (same person, same mask)."),
    ) -> None:
        """Prove month by month that ERP, ledger and Ometria agree (with --month).

        Per currency and store: orders, valid orders, gross revenue, refunds, net revenue,
        customers and units on each side, the difference, and the records behind every
        difference, each with an owner. Exit 1 when a metric or a record is at fail per the
        rules file; warnings exit 0. `khaosync reconcile contacts` is the weekly contact check.

        Example: khaosync reconcile --month 2026-10 --live --csv month-end/
        """
        if ctx.invoked_subcommand is not None:
            if month or live or as_json or csv_dir or rules or mask_pii:
                raise typer.BadParameter(f"put options after `{ctx.invoked_subcommand}`, e.g. "
                                         f"khaosync reconcile {ctx.invoked_subcommand} --live --json")
            return
        if not month:
            raise typer.BadParameter("give --month YYYY-MM (or run: khaosync reconcile contacts)",
                                     param_hint="--month")
        from khaosync.stages.reconcile import reconcile_month

        c = app_context(ctx)
        month = _check_month(month)
        loaded = _rules(rules)
        with c.open_store("reconcile", write=False) as store:
            if mask_pii:
                from khaosync.report import masker_for

                c.terminal.masker = masker_for(store)
            client = _live_client(c) if live else None
            try:
                with live_reads(c.terminal, client) as reads:
                    result = reconcile_month(store, c.profile, month, live_client=reads, rules=loaded).as_dict()
            finally:
                if client is not None:
                    client.close()
        _show(c, result, as_json, csv_dir)
        _refuse_empty(result)
        _exit_for(result["status"])

    @reconcile_app.command("contacts")
    def reconcile_contacts_cmd(
        ctx: typer.Context,
        live: bool = typer.Option(False, "--live", help=LIVE_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (docs/reconcile.md)."),
        csv_dir: Optional[str] = typer.Option(None, "--csv", metavar="DIR", help=CSV_HELP),
        rules: Optional[str] = typer.Option(None, "--rules", metavar="FILE", help=RULES_HELP),
        mask_pii: bool = typer.Option(False, "--mask-pii", help="Replace every email and name the state store has "
                                      "ever held (same person, same mask)."),
    ) -> None:
        """The weekly customer-attribute check: every ERP contact against Ometria's.

        Email, name, customer_id, consent and store, record by record; with --live against
        Ometria's collection and its unsubscribes, else against what Ometria last accepted.
        Exit 1 when a difference is at fail (a consent gap, a wrong customer_id).

        Example: khaosync reconcile contacts --live --json
        """
        from khaosync.stages.reconcile import reconcile_contacts

        c = app_context(ctx)
        loaded = _rules(rules)
        with c.open_store("reconcile contacts", write=False) as store:
            if mask_pii:
                from khaosync.report import masker_for

                c.terminal.masker = masker_for(store)
            client = _live_client(c) if live else None
            try:
                with live_reads(c.terminal, client) as reads:
                    result = reconcile_contacts(store, c.profile, live_client=reads, rules=loaded).as_dict()
            finally:
                if client is not None:
                    client.close()
        _show(c, result, as_json, csv_dir)
        _refuse_empty(result)
        _exit_for(result["status"])

    @app.command()
    def health(
        ctx: typer.Context,
        live: bool = typer.Option(False, "--live", help="Also read Ometria's push error log (one request)."),
        detect: bool = typer.Option(True, "--detect/--no-detect", help="Run the detectors first, so the register "
                                    "is current (records findings, so it takes the state lock; while another run "
                                    "holds it, the checks run on the register as it stands)."),
        as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON on stdout (docs/reconcile.md)."),
        rules: Optional[str] = typer.Option(None, "--rules", metavar="FILE", help=RULES_HELP),
    ) -> None:
        """The daily check: last runs, bookmark lag, stalled batches, open exceptions by owner.

        One line verdict and an exit code for alerting: 1 when a check fails (a stalled batch,
        an open fail-severity exception, a pull overdue), 0 when all pass or only warn.

        Example: khaosync health --live --json
        """
        from khaosync.errors import StateLockedError
        from khaosync.stages.health import check_health

        c = app_context(ctx)
        loaded = _rules(rules)
        if not Path(c.profile.state).exists():
            # A check must not create what it checks: a mistyped --state is an error, not a new store.
            raise ConfigError(f"no state at {c.profile.state}: run `khaosync pull` first (or pass --state)")
        if detect:
            try:
                c.open_store("health", write=True).close()
            except StateLockedError as exc:
                # A sync is running: a health check must still answer, from the register as it is.
                c.terminal.warn(f"detectors skipped: {exc}")
                detect = False
        with c.open_store("health", write=detect) as store:
            client = _live_client(c) if live else None
            try:
                if detect:
                    _run_detectors(store, c.profile, client, loaded)
                report = check_health(store, c.profile, live_client=client, rules=loaded,
                                      erp_now=_sandbox_erp_clock(c.profile))
            finally:
                if client is not None:
                    client.close()
        data = report.as_dict()
        if as_json:
            c.terminal.json({"sandbox": c.profile.is_sandbox, **data})
        else:
            c.terminal.data(health_table(data))
            c.terminal.verdict(report.verdict(), failed=report.status == "fail")
        _exit_for(report.status)

    @app.command()
    def report(
        ctx: typer.Context,
        month: str = typer.Option(..., "--month", help="The month to report, YYYY-MM (London time)."),
        html: str = typer.Option(..., "--html", metavar="FILE", help="Where to write the HTML file."),
        mask_pii: bool = typer.Option(False, "--mask-pii", help="Replace emails and names (same person, same mask)."),
        live: bool = typer.Option(False, "--live", help=LIVE_HELP),
        rules: Optional[str] = typer.Option(None, "--rules", metavar="FILE", help=RULES_HELP),
    ) -> None:
        """Write the audit report: one self-contained HTML file for consultants and finance.

        The month's reconciliation tables, the records behind each difference, open exceptions
        by owner and type with their records, and a chart of ERP against Ometria revenue by
        day. Opens offline (no scripts, fonts or images from anywhere). Exit 0 once written,
        whatever it found: the file says.

        Example: khaosync report --month 2026-10 --live --mask-pii --html audit-2026-10.html
        """
        from khaosync.report import build_audit
        from khaosync.report.html import render

        c = app_context(ctx)
        month = _check_month(month)
        loaded = _rules(rules)
        with c.open_store("report", write=False) as store:
            client = _live_client(c) if live else None
            try:
                with live_reads(c.terminal, client) as reads:
                    audit = build_audit(store, c.profile, month, live_client=reads, rules=loaded, mask_pii=mask_pii)
            finally:
                if client is not None:
                    client.close()
        target = Path(html)
        if target.is_dir():
            raise typer.BadParameter(f"{html} is a folder: give the report's file name, e.g. {Path(html) / 'audit.html'}",
                                     param_hint="--html")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        try:
            partial.write_text(render(audit), encoding="utf-8")
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        c.terminal.info(_verdict(audit.reconciliation))
        c.terminal.data(f"report written: {target.resolve()}")
