"""``khaosync sandbox``: plant, advance and serve the emulated merchant."""

from __future__ import annotations

import typer

sandbox_app = typer.Typer(help="The built-in sandbox: a deterministic merchant and strict emulators.", no_args_is_help=True)
