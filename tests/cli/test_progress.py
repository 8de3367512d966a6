"""Progress (issue 14.6): bars name the stage and record type; nothing when piped or with -q."""

from __future__ import annotations

import io

from rich.console import Console
from typer.testing import CliRunner

from khaosync.cli.app import app
from khaosync.cli.terminal import Terminal


def terminal_on_a_tty(verbosity: int = 0) -> tuple[Terminal, io.StringIO]:
    terminal = Terminal(verbosity, width=80)
    screen = io.StringIO()
    terminal.err = Console(file=screen, force_terminal=True, width=80, markup=False)
    return terminal, screen


def test_bars_name_the_stage_and_earlier_bars_stop():
    terminal, screen = terminal_on_a_tty()
    with terminal.progress("map") as update:
        update("products", 5, 10)
        update("contacts", 1, None)
        update("contacts", 3, None)
    shown = screen.getvalue()
    assert "map products" in shown and "map contacts" in shown


def test_sync_stages_name_themselves():
    terminal, screen = terminal_on_a_tty()
    with terminal.progress("") as update:
        update("push product", 1, 2)
    assert "push product" in screen.getvalue()


def test_no_progress_when_quiet_or_piped(tmp_path, monkeypatch):
    terminal, screen = terminal_on_a_tty(verbosity=-1)
    with terminal.progress("pull") as update:
        update("customers", 1, None)
    assert screen.getvalue() == ""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["sandbox", "init", "--customers", "25", "--orders", "100"]).exit_code == 0
    piped = runner.invoke(app, ["pull"])
    assert "\r" not in piped.stderr and "pull customers" not in piped.stderr
