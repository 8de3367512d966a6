"""The pipeline's commands. Each is thin: context, one library call, render."""

from __future__ import annotations

from typing import Optional

import typer

from khaosync.cli.app import not_built
from khaosync.cli.context import app_context
from khaosync.errors import EXIT_FINDINGS


def register(app: typer.Typer) -> None:
    @app.command()
    def pull(ctx: typer.Context) -> None:
        """Read Khaos Control into the state store, incrementally.

        Example: khaosync pull --since 2026-10-01
        """
        app_context(ctx).profile
        not_built("pull", "issue 3")

    @app.command("map")
    def map_(ctx: typer.Context) -> None:
        """Turn staged ERP records into Ometria records through the YAML mappings.

        Example: khaosync map --entity orders
        """
        app_context(ctx).profile
        not_built("map", "issue 4")

    @app.command()
    def diff(ctx: typer.Context) -> None:
        """Show what would change in Ometria, record by record, and write a plan.

        Example: khaosync diff contacts
        """
        app_context(ctx).profile
        not_built("diff", "issue 5")

    @app.command()
    def push(ctx: typer.Context) -> None:
        """Send a reviewed plan to Ometria (only with --commit).

        Example: khaosync push --plan 12 --commit
        """
        app_context(ctx).profile
        not_built("push", "issue 6")

    @app.command()
    def sync(ctx: typer.Context) -> None:
        """Chain pull, map, diff and push for scheduled runs.

        Example: khaosync sync --since 2026-10-01 --commit
        """
        app_context(ctx).profile
        not_built("sync", "issue 6")

    @app.command()
    def reconcile(ctx: typer.Context) -> None:
        """Prove month by month that ERP, ledger and Ometria agree.

        Example: khaosync reconcile --month 2026-10
        """
        app_context(ctx).profile
        not_built("reconcile", "issue 7")

    @app.command()
    def health(ctx: typer.Context) -> None:
        """The daily check: last runs, lag, stalled batches, open exceptions by owner.

        Example: khaosync health --json
        """
        app_context(ctx).profile
        not_built("health", "issue 7")

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

    config_app = typer.Typer(help="Show the resolved configuration.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("show")
    def config_show(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON on stdout.")) -> None:
        """Print the resolved profile, secrets masked.

        Example: khaosync --config site.yaml config show --json
        """
        import yaml

        c = app_context(ctx)
        data = c.profile.masked()
        data["sandbox_profile"] = c.profile.is_sandbox
        if as_json:
            c.terminal.json(data)
        else:
            c.terminal.data(yaml.safe_dump(data, sort_keys=True).rstrip())
