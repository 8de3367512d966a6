"""A planted sandbox workspace for CLI tests: made once per module, copied for each test."""

import os
import shutil
from pathlib import Path

from typer.testing import CliRunner

from khaosync.cli.app import app

SMALL = ["sandbox", "init", "--customers", "25", "--orders", "100"]


def plant(folder: Path, *commands: list[str]) -> Path:
    """``sandbox init`` (small) in ``folder``, then each command, as an operator would run them."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        runner = CliRunner()
        assert runner.invoke(app, SMALL).exit_code == 0
        for command in commands:
            assert runner.invoke(app, command).exit_code in (0, 1), command  # 1: the planted findings
    finally:
        os.chdir(cwd)
    return folder


def copied(planted: Path, tmp_path: Path, monkeypatch, **runner_kwargs) -> CliRunner:
    """A private copy of the planted workspace, made the working folder; a runner for it."""
    shutil.copytree(planted, tmp_path / "ws")
    monkeypatch.chdir(tmp_path / "ws")
    monkeypatch.delenv("OMETRIA_API_KEY", raising=False)
    return CliRunner(**runner_kwargs)
