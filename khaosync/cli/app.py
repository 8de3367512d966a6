"""``khaosync``: the command-line entry point.

Each command is a few lines: resolve the context, call one library function, render.
Library errors (``KhaosyncError``) become a one-line message and their exit code.
"""

from __future__ import annotations

from typing import Optional

import typer

from khaosync.cli.context import AppContext
from khaosync.cli.terminal import Terminal
from khaosync.errors import KhaosyncError
from typer.core import TyperGroup


class KhaosyncGroup(TyperGroup):
    """Turns every library error into one clean line on stderr and its exit code."""

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except KhaosyncError as exc:
            obj = ctx.obj
            terminal = obj.terminal if isinstance(obj, AppContext) else Terminal()
            terminal.error(str(exc))
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=KhaosyncGroup,
    name="khaosync",
    help="Keep Ometria in step with the Khaos Control ERP: pull, map, diff, push, reconcile.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def root(
    ctx: typer.Context,
    config: Optional[str] = typer.Option(None, "--config", help="Config file (default: ./khaosync.yaml if present, else the sandbox)."),
    state: Optional[str] = typer.Option(None, "--state", help="State store path (default: .khaosync/state.db)."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More detail on stderr (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr (for cron)."),
) -> None:
    """Keep Ometria in step with the Khaos Control ERP.

    Example: khaosync sandbox init --seed 7 && khaosync pull
    """
    ctx.obj = AppContext(config_path=config, state_override=state, terminal=Terminal(-1 if quiet else verbose))


def _register() -> None:
    # Imported here so each command group lives in its own module.
    from khaosync.cli import commands, consent_cmd, sandbox_cmd

    app.add_typer(sandbox_cmd.sandbox_app, name="sandbox")
    commands.register(app)
    app.add_typer(consent_cmd.consent_app, name="consent")


_register()


def main() -> None:
    app()
