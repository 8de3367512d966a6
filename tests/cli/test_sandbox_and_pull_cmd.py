"""The sandbox and pull commands as an operator runs them."""

import json
from datetime import datetime, timezone

import httpx
import pytest
from typer.testing import CliRunner

from khaosync.cli.app import app

SIZE = ["--seed", "7", "--customers", "40", "--orders", "150"]


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMETRIA_API_KEY", raising=False)
    return CliRunner()


def test_init_twice_gives_byte_identical_datasets(runner, tmp_path, monkeypatch):
    files = ("world.db", "manifest.json", "exports/credit_notes.csv")
    seen = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        result = runner.invoke(app, ["sandbox", "init", *SIZE])
        assert result.exit_code == 0, result.output
        assert "SANDBOX" in result.stderr
        seen.append([(tmp_path / name / ".khaosync" / "sandbox" / f).read_bytes() for f in files])
    assert seen[0] == seen[1]


def test_init_refuses_to_overwrite_without_force(runner):
    assert runner.invoke(app, ["sandbox", "init", *SIZE]).exit_code == 0
    again = runner.invoke(app, ["sandbox", "init", *SIZE])
    assert again.exit_code == 2 and "--force" in again.stderr
    assert runner.invoke(app, ["sandbox", "init", *SIZE, "--force"]).exit_code == 0


def test_too_small_a_merchant_is_a_usage_error(runner):
    result = runner.invoke(app, ["sandbox", "init", "--customers", "3", "--orders", "5"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_manifest_counts_match_what_the_emulators_serve(runner, tmp_path):
    from khaosync.config import sandbox_profile
    from khaosync.khaos.soap import KhaosClient
    from khaosync.sandbox.server import SandboxApp
    from khaosync.stages.pull import read_document

    result = runner.invoke(app, ["sandbox", "init", *SIZE, "--json"])
    manifest = json.loads(result.stdout)
    folder = tmp_path / ".khaosync" / "sandbox"
    app_ = SandboxApp(folder, "sandbox-key")
    profile = sandbox_profile()
    client = KhaosClient(profile.khaos, transport=httpx.WSGITransport(app=app_))
    since = datetime(2000, 1, 1, tzinfo=timezone.utc)
    assert len(client.get_company_list(since)) == manifest["counts"]["companies"]
    assert len(client.get_stock_list(since)) == manifest["counts"]["stock_items"]
    from khaosync.sandbox.world import World
    world = World(folder, create=False)
    codes = [d["sorder_code"] for d in world.iter("sales_order")]
    world.close()
    # ExportOrders answers one order per code, as KC's does.
    served = [read_document("sales_order", client.export_orders(code)) for code in codes]
    served_twice = len(manifest["faults"]["duplicate_in_response"]["sales_order"])
    assert sum(len(o) + len(r) for o, r in served) == manifest["counts"]["sales_orders"] + served_twice
    ometria = httpx.Client(transport=httpx.WSGITransport(app=app_), base_url="https://sandbox.khaosync.invalid/ometria/v2",
                           headers={"X-Ometria-Auth": "sandbox-key"})
    assert len(ometria.get("/orders", params={"limit": 250}).json()) == manifest["counts"]["ometria_seed_orders"]
    unsubscribed = ometria.get("/unsubscribes", params={"since": "2000-01-01T00:00:00"}).json()
    assert len(unsubscribed) == manifest["counts"]["ometria_unsubscribes"]


def test_status_and_advance(runner):
    assert runner.invoke(app, ["sandbox", "status"]).exit_code == 2  # nothing planted yet
    runner.invoke(app, ["sandbox", "init", *SIZE])
    status = runner.invoke(app, ["sandbox", "status", "--json"])
    assert json.loads(status.stdout)["clock"] == "2026-10-31T23:59:59"
    advanced = runner.invoke(app, ["sandbox", "advance", "--days", "2", "--json"])
    assert advanced.exit_code == 0
    summary = json.loads(advanced.stdout)
    assert summary["to"].startswith("2026-11-02") and set(summary["changed"]) >= {"company", "sales_order"}


def test_pull_json_contract_and_exit_code(runner):
    runner.invoke(app, ["sandbox", "init", *SIZE])
    result = runner.invoke(app, ["pull", "--json"])
    # the planted orders whose totals do not add up are fail-severity findings
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["sandbox"] is True and data["fail_findings"] >= 1
    assert set(data["entities"]) == {"customers", "stock", "orders", "credit-notes"}
    for entity in data["entities"].values():
        assert {"fetched", "new", "changed", "unchanged", "problems", "rejected", "bookmark_after"} <= set(entity)
    assert data["exceptions"]["total_mismatch"] >= 1
    again = json.loads(runner.invoke(app, ["pull", "--json"]).stdout)
    assert all(e["new"] == 0 and e["changed"] == 0 for e in again["entities"].values())


def test_pull_one_entity_since_a_date(runner):
    runner.invoke(app, ["sandbox", "init", *SIZE])
    result = runner.invoke(app, ["pull", "--entity", "orders", "--since", "2026-10-01", "--json"])
    data = json.loads(result.stdout)
    assert list(data["entities"]) == ["orders"]
    assert data["entities"]["orders"]["since"].startswith("2026-10-01")
    assert 0 < data["entities"]["orders"]["fetched"] < 150


def test_pull_usage_errors(runner):
    runner.invoke(app, ["sandbox", "init", *SIZE])
    assert runner.invoke(app, ["pull", "--since", "yesterday"]).exit_code == 2
    assert runner.invoke(app, ["pull", "--since", "2026-10-01", "--full"]).exit_code == 2
    assert runner.invoke(app, ["pull", "--source", "files"]).exit_code == 2
    assert runner.invoke(app, ["pull", "--entity", "invoices"]).exit_code == 2


def test_pull_without_a_sandbox_says_how_to_make_one(runner):
    result = runner.invoke(app, ["pull"])
    assert result.exit_code == 2 and "sandbox init" in result.stderr


def test_khaos_discover_on_the_sandbox(runner):
    runner.invoke(app, ["sandbox", "init", *SIZE])
    result = runner.invoke(app, ["khaos", "discover", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    statuses = {op["name"]: op["status"] for op in report["operations"]}
    for name in ("GetCompanyList", "ExportCompany", "GetStockList", "ExportStockCompressed", "ExportOrders",
                 "ExportOrderStatusEx", "GetSiteList"):
        assert statuses[name] == "used"
    table = runner.invoke(app, ["khaos", "discover"])
    assert "ExportOrders" in table.stdout
