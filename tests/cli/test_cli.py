import json
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from khaosync.cli.app import app
from khaosync.cli.reference import is_group, render, walk

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMETRIA_API_KEY", raising=False)
    return CliRunner()


def test_help_lists_every_stage(runner):
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("pull", "map", "diff", "push", "sync", "reconcile", "health", "exceptions", "sandbox"):
        assert f"  {name} " in result.output


def test_sandbox_is_said_plainly(runner):
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0
    assert "SANDBOX" in result.stderr
    data = json.loads(result.stdout)
    assert data["mode"] == "sandbox" and data["sandbox_profile"] is True


def test_config_show_masks_secrets(runner, tmp_path):
    (tmp_path / "site.yaml").write_text(
        "mode: live\nkhaos: {soap_url: 'https://kc.example.com/LiveSoap/KhaosKSD.exe/soap/IKosWeb'}\n"
        "ometria: {api_key: 'secret-key-0123456789abcdef'}\n"
    )
    result = runner.invoke(app, ["--config", "site.yaml", "config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert "secret-key-0123456789abcdef" not in result.output
    assert json.loads(result.stdout)["ometria"]["api_key"] == "***"
    assert "SANDBOX" not in result.stderr
    human = runner.invoke(app, ["--config", "site.yaml", "config", "show"])
    assert "secret-key" not in human.output and "api_key: '***'" in human.stdout


def test_config_errors_exit_2_without_traceback(runner, tmp_path):
    (tmp_path / "site.yaml").write_text("mode: live\nometria: {base_url: 'http://api.ometria.com/v2'}\n")
    result = runner.invoke(app, ["--config", "site.yaml", "config", "show"])
    assert result.exit_code == 2
    assert "plain http:// is refused" in result.stderr
    assert "Traceback" not in result.output


def test_missing_config_file_exits_2(runner):
    result = runner.invoke(app, ["--config", "nope.yaml", "config", "show"])
    assert result.exit_code == 2 and "nope.yaml not found" in result.stderr


def test_exceptions_list_needs_a_store(runner):
    result = runner.invoke(app, ["exceptions", "list", "--json"])
    assert result.exit_code == 2 and "no state" in result.stderr


def test_exceptions_list_json_and_fail_exit(runner, tmp_path):
    from khaosync.store import open_store

    with open_store(tmp_path / ".khaosync" / "state.db") as store:
        run = store.start_run("pull", "sandbox")
        store.record_exception(run_id=run, type="malformed_record", severity="warn", owner="ecommerce",
                               stage="pull", reason="bad email", records=["company:12"], entity="company")
    result = runner.invoke(app, ["exceptions", "list", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["sandbox"] is True
    [row] = data["exceptions"]
    assert {k: row[k] for k in ("type", "severity", "owner", "status", "stage", "records")} == {
        "type": "malformed_record", "severity": "warn", "owner": "ecommerce", "status": "open",
        "stage": "pull", "records": ["company:12"]}
    with open_store(tmp_path / ".khaosync" / "state.db") as store:
        store.record_exception(run_id=run, type="total_mismatch", severity="fail", owner="finance",
                               stage="map", reason="1p out", records=["sales_order:9"], entity="sales_order")
    assert runner.invoke(app, ["exceptions", "list"]).exit_code == 1
    assert runner.invoke(app, ["exceptions", "list", "--owner", "ecommerce"]).exit_code == 0


def test_every_command_has_help_and_an_example():
    for path, command in walk(typer.main.get_command(app)):
        if not path:
            continue
        assert command.help, f"khaosync {' '.join(path)} has no help text"
        if not is_group(command):
            assert "Example: khaosync" in command.help, f"khaosync {' '.join(path)} has no example"


def test_cli_reference_is_current():
    assert (ROOT / "docs" / "cli.md").read_text() == render(), (
        "docs/cli.md is stale: python -m khaosync.cli.reference > docs/cli.md")
