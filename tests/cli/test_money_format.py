"""Money printed with its currency's decimals everywhere (issue 14.7): 903.60, never 903.6."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from khaosync.cli.app import app
from khaosync.currency import minor_units, money_text

MONEY = ("gross_revenue", "refunds", "net_revenue")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("money")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        runner = CliRunner()
        assert runner.invoke(app, ["sandbox", "init", "--customers", "25", "--orders", "100"]).exit_code == 0
        assert runner.invoke(app, ["sync"]).exit_code in (0, 1)
    finally:
        os.chdir(cwd)
    return folder


@pytest.fixture
def runner(planted, tmp_path, monkeypatch):
    shutil.copytree(planted, tmp_path / "ws")
    monkeypatch.chdir(tmp_path / "ws")
    monkeypatch.delenv("OMETRIA_API_KEY", raising=False)
    return CliRunner(env={"COLUMNS": "80"})


def test_money_text():
    assert [money_text(Decimal(v), c) for v, c in [("903.6", "GBP"), ("0", "EUR"), ("1200", "JPY"),
                                                    ("1.5", "KWD"), ("19.999", "GBP"), ("-4.1", None)]] == [
        "903.60", "0.00", "1200", "1.500", "19.999", "-4.10"]


def places(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def test_reconcile_money_in_json_table_and_csv(runner):
    result = runner.invoke(app, ["reconcile", "--month", "2026-06", "--json", "--csv", "out"])
    assert result.exit_code in (0, 1), result.output
    data = json.loads(result.stdout)
    money = [(m["currency"], m[side]) for m in data["metrics"] if m["name"] in MONEY
             for side in ("erp", "ledger", "difference", "not_yet_due", "unexplained") if m[side] is not None]
    money += [(d["currency"], d[side]) for d in data["daily"] for side in ("erp", "ledger") if d[side] is not None]
    assert money and all(places(v) == minor_units(c) for c, v in money), money
    assert ("EUR", "0.00") in money  # a zero is money too
    rows = list(csv.DictReader(open("out/2026-06-metrics.csv", encoding="utf-8")))
    assert all(places(r["erp"]) == minor_units(r["currency"]) for r in rows if r["name"] in MONEY)
    table = runner.invoke(app, ["reconcile", "--month", "2026-06"]).stdout
    revenue = [line.split() for line in table.splitlines() if line.startswith(MONEY)]
    assert revenue and all(re.fullmatch(r"-?\d+\.\d\d", cell) for row in revenue for cell in row[1:3])
