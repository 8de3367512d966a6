"""``khaosync push`` and ``khaosync sync``."""

from __future__ import annotations


import typer

from khaosync.cli.app import not_built
from khaosync.cli.context import app_context


def register(app: typer.Typer) -> None:
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
