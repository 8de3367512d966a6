"""The CLI reference in docs/cli.md is generated from ``--help`` so it cannot drift.

Regenerate with ``python -m khaosync.cli.reference > docs/cli.md``; a test fails when they differ.
"""

from __future__ import annotations

import typer
import typer.main

from khaosync.cli.app import app


def is_group(command) -> bool:
    return hasattr(command, "commands")


def walk(command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every command under ``command`` (typer's click command objects), depth first."""
    found = [(path, command)]
    if is_group(command):
        for name in sorted(command.commands):
            found += walk(command.commands[name], path + (name,))
    return found


def render() -> str:
    root = typer.main.get_command(app)
    parts = ["# CLI reference", "", "Generated from `--help` by `python -m khaosync.cli.reference`; do not edit.", ""]
    for path, command in walk(root):
        name = " ".join(("khaosync",) + path)
        ctx = typer.Context(command, info_name=name, terminal_width=100, max_content_width=100)
        parts += [f"## {name}", "", "```", command.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
