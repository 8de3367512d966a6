"""``khaosync diff``: what would change in Ometria, record by record."""

from __future__ import annotations


import typer

from khaosync.cli.app import not_built
from khaosync.cli.context import app_context


def register(app: typer.Typer) -> None:
    @app.command()
    def diff(ctx: typer.Context) -> None:
        """Show what would change in Ometria, record by record, and write a plan.

        Example: khaosync diff contacts
        """
        app_context(ctx).profile
        not_built("diff", "issue 5")
