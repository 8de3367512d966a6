"""``khaosync reconcile``, ``reconcile contacts``, ``health`` and ``report``: exit codes, the
``--json`` contracts, CSV for finance, and tables that fit an 80-column terminal."""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import reconcile_world as world  # noqa: E402

from khaosync.cli.app import app  # noqa: E402
from khaosync.store import open_store  # noqa: E402

@pytest.fixture(scope="module")
def pulled(tmp_path_factory) -> tuple[Path, Path]:
    return world.plant_and_pull(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def month(pulled) -> str:
    return world.drift_month(pulled[1])


@pytest.fixture
def workspace(pulled, month, tmp_path, monkeypatch):
    """The default sandbox profile's folder, synced by hand for the drift month, Ometria's side clean."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMETRIA_API_KEY", raising=False)
    sandbox, state = world.make_workspace(pulled, tmp_path)
    emulator, docs = world.sync_by_hand(state, world.sandbox_emulator_path(sandbox), month)
    yield {"sandbox": sandbox, "state": state, "emulator": emulator, "docs": {d["id"]: d for d in docs},
           "month": month}
    emulator.close()


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def fits_80(text: str) -> None:
    long = [line for line in text.splitlines() if len(line) > 80]
    assert long == [], long


# -- reconcile --month ------------------------------------------------------------------------------


def test_a_clean_month_exits_0_with_the_json_contract(workspace):
    result = invoke("reconcile", "--month", workspace["month"], "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "ok" and data["sandbox"] is True and data["month"] == workspace["month"]
    assert data["metrics"] and data["records"]
    for metric in data["metrics"]:
        assert {"name", "currency", "erp", "ledger", "ometria", "difference", "status"} <= set(metric)
        assert metric["ometria"] is None  # no --live
    names = {m["name"] for m in data["metrics"]}
    assert names == {"orders", "valid_orders", "gross_revenue", "refunds", "net_revenue", "customers", "units"}
    gross = next(m for m in data["metrics"] if m["name"] == "gross_revenue" and m["currency"] == "GBP")
    assert isinstance(gross["erp"], str) and Decimal(gross["erp"]) > 0  # money: exact decimal text
    orders = next(m for m in data["metrics"] if m["name"] == "orders" and m["currency"] == "GBP")
    assert isinstance(orders["erp"], int)
    for record in data["records"]:
        assert {"key", "issue", "erp", "ometria"} <= set(record)
    assert {r["severity"] for r in data["records"]} == {"info"}


def test_the_human_tables_fit_80_columns(workspace):
    result = invoke("reconcile", "--month", workspace["month"], "--live")
    assert result.exit_code == 0, result.output
    fits_80(result.stdout)
    assert result.stdout.splitlines()[-1] == \
        f"reconcile {workspace['month']}: OK (0 metric(s) out, 0 record(s) at fail, 0 at warn)"
    assert "SANDBOX" in result.stderr
    workspace["emulator"].tamper("order", next(iter(workspace["docs"])), {"customer": {"id": "999999"}})
    drifted = invoke("reconcile", "--month", workspace["month"], "--live")
    assert drifted.exit_code == 1
    fits_80(drifted.stdout)
    assert "customer_mismatch: fail, owner crm" in drifted.stdout


def _plant(kind: str, workspace) -> tuple[str, str]:
    docs, emulator = workspace["docs"], workspace["emulator"]
    plain = [k for k, d in docs.items() if d["status"] in ("shipped", "complete")]
    if kind == "missing_in_ometria":
        with emulator.store.transaction() as conn:  # Ometria has no DELETE: as if it never stored it
            conn.execute("DELETE FROM record WHERE type = 'order' AND id = ?", (plain[0],))
        return plain[0], kind
    if kind == "duplicate":
        with open_store(workspace["state"], write=False) as store:
            from khaosync.stages.reconcile import _staged_order
            split = next(k for k in docs if len([i for i in _staged_order(store, k).invoices if i.issued]) >= 2)
            invoice = next(i for i in _staged_order(store, split).invoices if i.issued)
        emulator.seed_record("order", world.as_float_json({**docs[split], "id": f"INV-{invoice.invoice_code}"}))
        return f"INV-{invoice.invoice_code}", kind
    if kind == "refund_missing":
        key = next(k for k, d in docs.items() if d["status"] in ("partial_refund", "refunded"))
        lines = [{k: v for k, v in line.items() if k != "refunded"} for line in docs[key]["lineitems"]]
        emulator.tamper("order", key, {"lineitems": world.as_float_json(lines), "status": "shipped", "is_valid": True})
        return key, kind
    if kind == "total_mismatch":
        emulator.tamper("order", plain[1], {"grand_total": float(docs[plain[1]]["grand_total"] - Decimal("0.01"))})
        return plain[1], kind
    emulator.tamper("order", plain[2], {"customer": {"id": "1"}})
    return plain[2], "customer_mismatch"


@pytest.mark.parametrize("drift", ["missing_in_ometria", "duplicate", "refund_missing", "total_mismatch",
                                   "customer_mismatch"])
def test_reconcile_live_names_the_drifted_record_and_exits_1(workspace, drift):
    expected = _plant(drift, workspace)
    result = invoke("reconcile", "--month", workspace["month"], "--live", "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "fail"
    assert {(r["key"], r["issue"]) for r in data["records"] if r["severity"] != "info"} == {expected}
    assert all(m["ometria"] is not None for m in data["metrics"])


def test_csv_writes_one_file_per_table_with_the_json_values(workspace, tmp_path):
    result = invoke("reconcile", "--month", workspace["month"], "--json", "--csv", str(tmp_path / "finance"))
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    month = workspace["month"]
    files = sorted(p.name for p in (tmp_path / "finance").iterdir())
    assert files == [f"{month}-daily.csv", f"{month}-metrics.csv", f"{month}-records.csv"]
    with (tmp_path / "finance" / f"{month}-metrics.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(data["metrics"])
    for row, metric in zip(rows, data["metrics"]):
        assert row == {k: "" if metric[k] is None else str(metric[k]) for k in row}
    with (tmp_path / "finance" / f"{month}-records.csv").open(newline="", encoding="utf-8") as handle:
        assert [r["key"] for r in csv.DictReader(handle)] == [r["key"] for r in data["records"]]


@pytest.mark.parametrize("args,message", [
    (["reconcile"], "give --month YYYY-MM"),
    (["reconcile", "--month", "2026-13"], "expected YYYY-MM"),
    (["reconcile", "--month", "October"], "expected YYYY-MM"),
    (["reconcile", "--live", "contacts"], "put options after `contacts`"),
    (["reconcile", "--month", "2026-10", "--rules", "nope.yaml"], "rules file nope.yaml not found"),
])
def test_usage_errors_exit_2(workspace, args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_a_bad_rules_file_exits_2_naming_the_key(workspace, tmp_path):
    (tmp_path / "rules.yaml").write_text("orders:\n  metrics:\n    net_revenue: {fail: lots}\n")
    result = invoke("reconcile", "--month", workspace["month"], "--rules", "rules.yaml")
    assert result.exit_code == 2
    assert "rules.yaml: invalid reconcile rules" in result.stderr
    assert "orders.metrics.net_revenue.fail" in result.stderr and "Traceback" not in result.output


def test_warnings_exit_0(workspace, tmp_path):
    (tmp_path / "lenient.yaml").write_text("orders:\n  issues:\n    customer_mismatch: {severity: warn}\n"
                                           "  metrics:\n    customers: {warn: 0, fail: null}\n")
    workspace["emulator"].tamper("order", next(iter(workspace["docs"])), {"customer": {"id": "999999"}})
    result = invoke("reconcile", "--month", workspace["month"], "--live", "--rules", "lenient.yaml", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["status"] == "warn"


# -- reconcile contacts ------------------------------------------------------------------------------


def test_reconcile_contacts_json(workspace):
    result = invoke("reconcile", "contacts", "--json")
    data = json.loads(result.stdout)
    assert result.exit_code == (1 if data["status"] == "fail" else 0)
    assert data["kind"] == "contacts" and data["metrics"] == []
    # nothing was pushed for contacts here: every ERP contact is missing from the ledger side
    assert {r["issue"] for r in data["records"]} >= {"missing_in_ometria"}
    human = invoke("reconcile", "contacts")
    fits_80(human.stdout)
    assert human.stdout.splitlines()[-1].startswith("reconcile contacts: ")


# -- health --------------------------------------------------------------------------------------------


def test_health_turns_red_for_a_stalled_batch_and_green_when_resolved(workspace):
    now = datetime.now(UTC)
    with open_store(workspace["state"]) as store:
        store.conn.execute("UPDATE exception SET resolved_at = ?", (now.isoformat(),))  # start from no findings
        store.conn.execute("INSERT INTO run(command, profile, started_at, finished_at, status) VALUES "
                           "('push', 'sandbox', ?, ?, 'ok')", (now.isoformat(), now.isoformat()))
    result = invoke("health", "--json")
    data = json.loads(result.stdout)
    assert result.exit_code == 0, [c for c in data["checks"] if c["status"] != "ok"]
    assert data["status"] in ("ok", "warn")
    assert all({"name", "status", "detail"} <= set(c) for c in data["checks"])
    with open_store(workspace["state"]) as store:
        batch = store.conn.execute(
            "INSERT INTO push_batch(type, records, state, created_at) VALUES ('order', '[]', 'journaled', ?)",
            ((now - timedelta(hours=1)).isoformat(),)).lastrowid
    red = invoke("health")
    assert red.exit_code == 1
    # the check itself, and the detectors' stalled_batch exception owned by integration
    assert red.stdout.splitlines()[-1].startswith("health FAIL: 2 fail (stalled_batches, exceptions:integration)")
    fits_80(red.stdout)
    with open_store(workspace["state"]) as store:
        store.conn.execute("UPDATE push_batch SET state = 'accepted', accepted = 0, rejected = 0 WHERE id = ?",
                           (batch,))
    assert invoke("health").exit_code == 0


def test_health_is_red_for_the_planted_total_mismatch_until_resolved(workspace):
    data = json.loads(invoke("health", "--json").stdout)
    finance = next(c for c in data["checks"] if c["name"] == "exceptions:finance")
    assert finance["status"] == "fail" and "total_mismatch" in finance["detail"]
    assert data["exceptions_by_owner"]["finance"]["total_mismatch"]["count"] >= 1
    with open_store(workspace["state"]) as store:
        store.conn.execute("UPDATE exception SET resolved_at = ? WHERE severity = 'fail'",
                           (datetime.now(UTC).isoformat(),))
    data = json.loads(invoke("health", "--json").stdout)
    assert not any(c["name"] == "exceptions:finance" for c in data["checks"])


def test_health_live_reads_the_push_error_log(workspace):
    result = invoke("health", "--live", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["push_errors"]["status"] == "ok"


# -- report ----------------------------------------------------------------------------------------------


def test_report_writes_the_file_and_says_where(workspace, tmp_path):
    result = invoke("report", "--month", workspace["month"], "--html", "out/audit.html", "--mask-pii")
    assert result.exit_code == 0, result.output
    target = (tmp_path / "out" / "audit.html").resolve()
    assert result.stdout == f"report written: {target}\n"
    assert f"reconcile {workspace['month']}: OK" in result.stderr
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert invoke("report", "--month", workspace["month"]).exit_code == 2  # --html is required


def test_health_detect_runs_the_detectors_first(workspace):
    pytest.importorskip("khaosync.detectors")
    now = datetime.now(UTC)
    with open_store(workspace["state"]) as store:
        store.conn.execute("INSERT INTO push_batch(type, records, state, created_at) VALUES "
                           "('order', '[]', 'journaled', ?)", ((now - timedelta(hours=1)).isoformat(),))
    result = invoke("health", "--detect", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert any(c["name"] == "stalled_batches" and c["status"] == "fail" for c in data["checks"])
    with open_store(workspace["state"], write=False) as store:
        assert any(r.stage == "health" and r.type == "stalled_batch" for r in store.exceptions(open_only=True))
