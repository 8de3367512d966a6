"""``khaosync reconcile`` and ``khaosync health``."""

from __future__ import annotations


import typer

from khaosync.cli.app import not_built
from khaosync.cli.context import app_context


def register(app: typer.Typer) -> None:
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
