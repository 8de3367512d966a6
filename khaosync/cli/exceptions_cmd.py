"""``khaosync exceptions``: the exceptions register."""

from __future__ import annotations

from typing import Optional

import typer

from khaosync.cli.context import app_context
from khaosync.errors import EXIT_FINDINGS


def register(app: typer.Typer) -> None:
    exceptions_app = typer.Typer(help="The exceptions register: every finding, typed and owned.", no_args_is_help=True)
    app.add_typer(exceptions_app, name="exceptions")

    @exceptions_app.command("list")
    def exceptions_list(
        ctx: typer.Context,
        owner: Optional[str] = typer.Option(None, help="Only this owner (ecommerce, crm, finance, ...)."),
        type_: Optional[str] = typer.Option(None, "--type", help="Only this exception type."),
        open_only: bool = typer.Option(False, "--open", help="Only open exceptions."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    ) -> None:
        """List exceptions.

        Example: khaosync exceptions list --owner finance --open --json
        """
        from khaosync.cli.render import exceptions_table

        c = app_context(ctx)
        with c.open_store("exceptions list", write=False) as store:
            rows = store.exceptions(open_only=open_only, owner=owner, type=type_)
        if as_json:
            c.terminal.json([
                {"id": r.id, "type": r.type, "severity": r.severity, "owner": r.owner, "status": r.status,
                 "stage": r.stage, "records": r.records, "reason": r.reason, "first_seen": r.first_seen,
                 "last_seen": r.last_seen}
                for r in rows
            ])
        else:
            c.terminal.data(exceptions_table(rows))
        if any(r.severity == "fail" and r.status == "open" for r in rows):
            raise typer.Exit(EXIT_FINDINGS)
