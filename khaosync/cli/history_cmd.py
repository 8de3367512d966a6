"""``khaosync runs`` and ``khaosync plans``: the history the state store keeps, looked up."""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from khaosync.cli.context import app_context
from khaosync.errors import ConfigError


def _when(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k} {v}" for k, v in counts.items()) or "-"


def runs_table(runs) -> Table:
    """id, command, start (UTC), duration, counts, verdict: 80 columns, counts fold."""
    table = Table(title=f"{len(runs)} run(s)", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, header_style="bold")
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("command", no_wrap=True)
    table.add_column("started UTC", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("counts", overflow="fold", ratio=1)
    table.add_column("verdict", no_wrap=True)
    for run in runs:
        table.add_row(str(run.id), run.command, _when(run.started_at), _duration(run.duration_s),
                      _counts(run.counts()), run.verdict)
    return table


def run_view(detail) -> Group:
    run = detail.run
    head = Table(box=None, show_header=False, pad_edge=False)
    head.add_column("what", no_wrap=True, style="bold")
    head.add_column("value", overflow="fold")

    def by(section: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in section.items()) or "-"

    rows = [("run", f"{run.id} {run.command} (profile {run.profile})"),
            ("started", f"{run.started_at}"), ("finished", run.finished_at or "- (running, or killed)"),
            ("took", _duration(run.duration_s)), ("verdict", run.verdict),
            ("read (staged)", by(detail.staged)), ("kept, not staged", by(detail.rejected)),
            ("made (mapped)", by(detail.mapped)),
            ("plans", ", ".join(f"{p['id']} ({p['status']}, {p['records']} records)" for p in detail.plans) or "-"),
            ("pushed (accepted)", by(detail.pushed)), ("refused by Ometria", by(detail.push_rejected)),
            ("exceptions opened", str(len(detail.opened))), ("seen again", str(detail.seen_again)),
            ("closed", str(len(detail.closed)))]
    for name, value in rows:
        head.add_row(name, Text(value))
    parts: list[Any] = [head]
    for title, items in (("opened", detail.opened), ("closed", detail.closed)):
        if items:
            parts.append(Text(f"\nexceptions {title}:", style="bold"))
            for e in items:
                records = ", ".join(e.get("records", [])[:3])
                parts.append(Text(f"  {e['id']} {e['type']} ({e['severity']}){': ' + records if records else ''}"))
    return Group(*parts)


def plans_table(found) -> Table:
    table = Table(title=f"{len(found)} plan(s)", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, header_style="bold")
    # The id says when (p<run>-<YYYYMMDD>-<HHMM>); --json has created_at to the microsecond.
    table.add_column("id", no_wrap=True)
    table.add_column("made by", ratio=1)
    table.add_column("records", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for plan in found:
        status = "partial" if plan.partial and plan.status == "open" else plan.status
        table.add_row(plan.id, plan.made_by or "-", str(plan.records), status)
    return table


def plan_view(plan, summary: dict[str, dict[str, int]], pushed: dict[str, int]) -> Group:
    head = Table(box=None, show_header=False, pad_edge=False)
    head.add_column("what", no_wrap=True, style="bold")
    head.add_column("value", overflow="fold")
    rows = [("plan", plan.id), ("made", f"{plan.created_at} (run {plan.run_id})"), ("by", plan.made_by or "-"),
            ("status", plan.status), ("scope", ", ".join(plan.scope)),
            ("narrowed to", ", ".join(plan.narrowed_to) if plan.partial else "- (a full review)"),
            ("records", str(plan.records))]
    for type_, changes in summary.items():
        rows.append((f"  {type_}", ", ".join(f"{k} {v}" for k, v in sorted(changes.items()))))
    rows.append(("accepted so far", ", ".join(f"{k} {v}" for k, v in pushed.items()) or "none"))
    for name, value in rows:
        head.add_row(name, Text(value))
    hint = (f"push it with: khaosync push --plan {plan.id} --commit" if plan.status == "open"
            else f"this plan is {plan.status}; run `khaosync diff` for a new one")
    return Group(head, Text(hint))


def register(app: typer.Typer) -> None:
    runs_app = typer.Typer(help="Run history: what each run read, made, pushed and found.", no_args_is_help=True)
    app.add_typer(runs_app, name="runs")
    plans_app = typer.Typer(help="Plans diff wrote for push: which, when, by which diff, how many records.",
                            no_args_is_help=True)
    app.add_typer(plans_app, name="plans")

    @runs_app.command("list")
    def runs_list(
        ctx: typer.Context,
        limit: int = typer.Option(20, "--limit", min=1, help="The newest N runs."),
        command: Optional[str] = typer.Option(None, "--command", help="Only runs of this command (pull, sync, ...)."),
        as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
    ) -> None:
        """List the last runs: id, command, start, duration, counts, verdict.

        The verdict is ok, findings (it finished with fail-severity exceptions), failed, or
        running (still going, or killed: the next run completes its work).

        Example: khaosync runs list --limit 10 --command sync
        """
        from khaosync.store.history import list_runs

        c = app_context(ctx)
        with c.open_store("runs list", write=False) as store:
            runs = list_runs(store.conn, limit=limit, command=command)
        if as_json:
            c.terminal.json({"sandbox": c.profile.is_sandbox, "runs": [r.as_dict() for r in runs]})
        else:
            c.terminal.data(runs_table(runs))

    @runs_app.command("show")
    def runs_show(
        ctx: typer.Context,
        run_id: int = typer.Argument(..., metavar="ID", help="The run's id (runs list)."),
        as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
    ) -> None:
        """Show one run: what it read, made, pushed and failed, and the exceptions it opened or closed.

        Example: khaosync runs show 12 --json
        """
        from khaosync.store.history import get_run

        c = app_context(ctx)
        with c.open_store("runs show", write=False) as store:
            detail = get_run(store.conn, run_id) if 0 < run_id < 2**63 else None
        if detail is None:
            raise ConfigError(f"no run {run_id}: see khaosync runs list")
        if as_json:
            c.terminal.json({"sandbox": c.profile.is_sandbox, **detail.as_dict()})
        else:
            c.terminal.data(run_view(detail))

    @plans_app.command("list")
    def plans_list(
        ctx: typer.Context,
        open_only: bool = typer.Option(False, "--open", help="Only plans still to push."),
        limit: int = typer.Option(20, "--limit", min=1, help="The newest N plans."),
        as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
    ) -> None:
        """List plans: id (it says when), the diff that made it, records, status.

        A partial plan was made by diff --key: push sends it only when named with --plan.
        push without --plan sends the newest open plan that is not partial.

        Example: khaosync plans list --open
        """
        from khaosync.store import plans

        c = app_context(ctx)
        with c.open_store("plans list", write=False) as store:
            found = plans.list_plans(store.conn, status="open" if open_only else None, limit=limit)
            default = plans.default_plan_id(store.conn)
        if as_json:
            c.terminal.json({"sandbox": c.profile.is_sandbox, "default": default,
                             "plans": [p.as_dict() for p in found]})
        else:
            c.terminal.data(plans_table(found))
            c.terminal.info(f"push without --plan sends: {default}" if default else "no open full plan: run khaosync diff")

    @plans_app.command("show")
    def plans_show(
        ctx: typer.Context,
        plan_id: str = typer.Argument(..., metavar="ID", help="The plan's id (plans list)."),
        as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
    ) -> None:
        """Show one plan: when, by which diff, its records by type and change, what was accepted.

        Example: khaosync plans show p7-20261127-0231
        """
        from khaosync.store import plans
        from khaosync.store.journal import plan_summary

        c = app_context(ctx)
        with c.open_store("plans show", write=False) as store:
            plan = plans.get_plan(store.conn, plan_id)
            if plan is None:
                raise ConfigError(f"no plan {plan_id!r}: see khaosync plans list")
            summary = plan_summary(store.conn, plan.id)
            pushed = dict(store.conn.execute(
                "SELECT p.type, count(*) FROM plan_record p JOIN ledger l ON l.type = p.type AND l.id = p.id "
                "AND l.content_hash = p.content_hash WHERE p.plan_id = ? GROUP BY p.type ORDER BY p.type",
                (plan.id,)))
        if as_json:
            c.terminal.json({"sandbox": c.profile.is_sandbox, **plan.as_dict(), "summary": summary,
                             "accepted": pushed})
        else:
            c.terminal.data(plan_view(plan, summary, pushed))
