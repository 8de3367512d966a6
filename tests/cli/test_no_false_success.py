"""Nothing that looks like success when it is not (issue 14.4)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from khaosync.cli.app import app
from khaosync.store import open_store


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMETRIA_API_KEY", raising=False)
    return CliRunner()


@pytest.fixture
def empty_store(tmp_path):
    open_store(tmp_path / ".khaosync" / "state.db").close()


NO_ORDERS = ("error: no data: reconcile 2026-10: no orders on any side (ERP, ledger); nothing was proven. "
             "Is this the right --state, and has `khaosync pull` run for this period?")


def test_reconcile_of_an_empty_store_is_no_data_not_ok(runner, empty_store):
    result = runner.invoke(app, ["reconcile", "--month", "2026-10"])
    assert result.exit_code == 2
    assert NO_ORDERS in result.stderr
    assert "OK" not in result.stdout
    contacts = runner.invoke(app, ["reconcile", "contacts"])
    assert contacts.exit_code == 2 and "no data: reconcile contacts: no contacts on any side" in contacts.stderr
    as_json = runner.invoke(app, ["reconcile", "--month", "2026-10", "--json"])
    assert as_json.exit_code == 2 and '"erp_orders": 0' in as_json.stdout  # the figures, and the verdict on stderr


@pytest.mark.parametrize("command", [["health"], ["health", "--no-detect"], ["exceptions", "list"],
                                     ["reconcile", "--month", "2026-10"], ["reconcile", "contacts"],
                                     ["report", "--month", "2026-10", "--html", "r.html"], ["runs", "list"],
                                     ["plans", "list"]])
def test_read_only_commands_never_create_a_missing_state(runner, tmp_path, command):
    result = runner.invoke(app, ["--state", "typo/state.db", *command])
    assert result.exit_code == 2
    assert "error: no state at typo/state.db: run `khaosync pull` first (or pass --state)" in result.stderr
    assert not (tmp_path / "typo").exists() and not (tmp_path / "r.html").exists()


def test_pull_from_a_folder_without_exports(runner, tmp_path):
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "notes.txt").write_text("not an export\n")
    result = runner.invoke(app, ["pull", "--source", "files", "--path", "exports"])
    assert result.exit_code == 2
    assert "error: --path exports: no exports found (KC export files are named companies*.xml" in result.stderr


def test_unknown_owner_or_type_lists_the_valid_ones(runner, empty_store):
    owner = runner.invoke(app, ["exceptions", "list", "--owner", "finanse"])
    assert owner.exit_code == 2
    assert "error: --owner 'finanse': unknown; choose from crm, ecommerce, finance, integration" in owner.stderr
    kind = runner.invoke(app, ["exceptions", "list", "--type", "refund_gaps"])
    assert kind.exit_code == 2 and "--type 'refund_gaps': unknown; choose from conflicting_exports, consent_gap," in kind.stderr
    assert "refund_gap," in kind.stderr
    known = runner.invoke(app, ["exceptions", "list", "--owner", "finance", "--json"])
    assert known.exit_code == 0 and json.loads(known.stdout) == {"sandbox": True, "exceptions": []}
