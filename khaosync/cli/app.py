"""``khaosync``: the command-line entry point.

Each command is a few lines: resolve the context, call one library function, render.
Every error becomes a one-line message and its exit code (``khaosync/cli/boundary.py``).
"""

from __future__ import annotations

from typing import Optional

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from khaosync.cli.boundary import describe
from khaosync.cli.context import AppContext
from khaosync.cli.terminal import Terminal


class KhaosyncGroup(TyperGroup):
    """Turns every error into one clean line on stderr and its exit code (``cli/boundary.py``)."""

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise  # click's own: usage errors (exit 2) and deliberate exits
        except KeyboardInterrupt:
            _terminal(ctx).error("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            obj = ctx.obj
            state = None
            if isinstance(obj, AppContext):
                state = obj.state_override or (obj._profile.state if obj._profile is not None else None)
            code, message = describe(exc, state)
            terminal = _terminal(ctx)
            terminal.error(message)
            if terminal.verbosity >= 3:
                terminal.traceback(exc)
            raise typer.Exit(code) from None


def _terminal(ctx) -> Terminal:
    obj = ctx.obj
    return obj.terminal if isinstance(obj, AppContext) else Terminal()


app = typer.Typer(
    cls=KhaosyncGroup,
    name="khaosync",
    help="Keep Ometria in step with the Khaos Control ERP: pull, map, diff, push, reconcile.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from khaosync import __version__

        typer.echo(f"khaosync {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    config: Optional[str] = typer.Option(None, "--config", help="Config file (default: ./khaosync.yaml if present, else the sandbox)."),
    state: Optional[str] = typer.Option(None, "--state", help="State store path (default: .khaosync/state.db)."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More detail on stderr (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Nothing when all is well; only the verdict line "
                               "(on stderr) when not, and errors (for cron)."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                 help="Print khaosync's version and exit."),
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
