"""``khaosync map`` and ``khaosync mappings``: staged ERP records to Ometria records."""

from __future__ import annotations


import typer

from khaosync.cli.app import not_built
from khaosync.cli.context import app_context


def register(app: typer.Typer) -> None:
    @app.command("map")
    def map_(ctx: typer.Context) -> None:
        """Turn staged ERP records into Ometria records through the YAML mappings.

        Example: khaosync map --entity orders
        """
        app_context(ctx).profile
        not_built("map", "issue 4")
