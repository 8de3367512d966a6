"""Cron-grade output (issue 14.5): -q prints nothing when all is well and only the verdict line
when not; sync --fail-on new|any|never."""

from __future__ import annotations

import json
import re

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli_workspace import copied, plant  # noqa: E402

from khaosync.cli.app import app


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return plant(tmp_path_factory.mktemp("cron"))


@pytest.fixture
def runner(planted, tmp_path, monkeypatch):
    return copied(planted, tmp_path, monkeypatch)


VERDICT = re.compile(r"sync run \d+: (OK|FAIL) \((\d+) new exception\(s\) at fail severity, (\d+) open; "
                     r"--fail-on (new|any|never)\)\n")


def test_quiet_sync_says_only_what_is_new(runner):
    first = runner.invoke(app, ["-q", "sync"])
    assert first.exit_code == 1 and first.stdout == ""
    verdict = VERDICT.fullmatch(first.stderr)
    assert verdict and verdict.group(1) == "FAIL" and int(verdict.group(2)) > 0
    # The same exceptions, still open, the next night: nothing new, nothing printed, exit 0.
    again = runner.invoke(app, ["-q", "sync"])
    assert (again.exit_code, again.stdout, again.stderr) == (0, "", "")
    strict = runner.invoke(app, ["-q", "sync", "--fail-on", "any"])
    assert strict.exit_code == 1 and strict.stdout == ""
    assert VERDICT.fullmatch(strict.stderr).groups()[0::3] == ("FAIL", "any")
    never = runner.invoke(app, ["-q", "sync", "--fail-on", "never"])
    assert (never.exit_code, never.stdout, never.stderr) == (0, "", "")
    data = json.loads(runner.invoke(app, ["sync", "--json"]).stdout)
    assert data["new_fail_exceptions"] == 0 and data["open_fail_exceptions"] > 0 and data["fail_on"] == "new"
    bad = runner.invoke(app, ["sync", "--fail-on", "sometimes"])
    assert bad.exit_code == 2 and "--fail-on 'sometimes': choose new, any or never" in bad.stderr


def test_loud_sync_prints_its_table_then_the_verdict(runner):
    result = runner.invoke(app, ["sync"])
    assert result.exit_code == 1
    assert VERDICT.fullmatch(result.stdout.splitlines()[-1] + "\n")
    assert "SANDBOX" in result.stderr and "dry run: nothing was sent" in result.stderr


@pytest.mark.parametrize("command", [["health", "--no-detect"], ["exceptions", "list"], ["diff", "orders"],
                                     ["reconcile", "--month", "2026-10"]])
def test_quiet_commands_print_one_verdict_line_when_they_fail(runner, command):
    runner.invoke(app, ["-q", "sync"])
    result = runner.invoke(app, ["-q", *command])
    assert result.stdout == ""
    if result.exit_code == 1:
        assert len(result.stderr.splitlines()) == 1, result.stderr
    else:
        assert result.exit_code == 0 and result.stderr == ""


def test_the_committed_push_table_fits_80_columns(runner):
    runner.invoke(app, ["sync"])
    plan = json.loads(runner.invoke(app, ["plans", "list", "--open", "--json"]).stdout)["default"]
    result = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["push", "--plan", plan, "--commit", "--verify", "none"])
    assert result.exit_code in (0, 1), result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"plan {plan} (pushed)"
    assert lines[1].split() == ["product", "contact", "order"]
    assert [line.split()[0] for line in lines[3:]] == ["new", "changed", "void", "to", "sent", "accepted", "rejected",
                                                        "failed", "verified", "mismatched"]
    assert max(len(line) for line in lines) <= 80 and all(line == line.rstrip() for line in lines)
