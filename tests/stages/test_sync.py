"""sync: pull, map, diff and push in one run, against the sandbox."""

import json
import shutil

from typer.testing import CliRunner

from khaosync.cli.app import app
from khaosync.config import sandbox_profile
from khaosync.connect import Connections
from khaosync.sandbox.lifecycle import advance_sandbox
from khaosync.sandbox.ometria_emulator import OmetriaEmulator
from khaosync.stages.sync import sync
from khaosync.store import open_store
from khaosync.store.outbound import iter_records

KEY = "sandbox-key"


def run(tmp_path, sandbox, *, commit, since=None):
    profile = sandbox_profile(state=str(tmp_path / "state.db"), sandbox_path=str(sandbox))
    connections = Connections(profile)
    from khaosync.stages.pull import FileSource, SoapSource

    source = SoapSource(connections.khaos_client(), profile, FileSource(sandbox / "exports"))
    with open_store(profile.state) as store:
        return sync(store, profile, source, connections.ometria_client() if commit else None, since=since,
                    commit=commit, verify="none")


def emulator(sandbox) -> OmetriaEmulator:
    emu = OmetriaEmulator(sandbox / "ometria.db", KEY)
    emu.process_queue()
    return emu


def ready(tmp_path, type_):
    with open_store(tmp_path / "state.db", write=False) as store:
        return {r.id: r for r in iter_records(store.conn, type_, state="ready")}


def test_sync_commit_leaves_ometria_holding_exactly_what_the_rules_allow(tmp_path, sandbox):
    seeded = {o["id"] for o in emulator(sandbox).records("order")}  # an earlier integration's, and web orders
    result = run(tmp_path, sandbox, commit=True)
    assert result.committed and result.plan_id.endswith("-sync")
    emu = emulator(sandbox)
    orders = {o["id"]: o for o in emu.records("order") if o["id"] not in seeded}
    expected_orders = ready(tmp_path, "order")
    # exactly one Ometria order per KC sales order past its trigger, with the bytes we mapped
    assert set(orders) == set(expected_orders)
    products = {p["id"] for p in emu.records("product")}
    for order in orders.values():
        for line in order["lineitems"]:
            assert line["product_id"] in products
    contacts = {c["id"] for c in emu.records("contact", collection="khaos")}
    assert contacts == set(ready(tmp_path, "contact"))
    counts = result.as_dict()
    assert counts["sent"]["order"] == counts["accepted"]["order"] == len(expected_orders)
    assert counts["rejected"] == {"product": 0, "contact": 0, "order": 0}
    assert emu.stats()["forced_optins"] == []


def test_second_sync_sends_nothing_and_advance_sends_exactly_the_changes(tmp_path, sandbox):
    run(tmp_path, sandbox, commit=True)
    again = run(tmp_path, sandbox, commit=True).as_dict()
    assert again["sent"] == {"product": 0, "contact": 0, "order": 0}
    before = {t: {r.id: r.content_hash for r in ready(tmp_path, t).values()} for t in ("product", "contact", "order")}
    advance_sandbox(sandbox, 3, api_key=KEY)
    after_run = run(tmp_path, sandbox, commit=True).as_dict()
    for t in ("product", "contact", "order"):
        now = {r.id: r.content_hash for r in ready(tmp_path, t).values()}
        changed = {i for i, h in now.items() if before[t].get(i) != h}
        assert after_run["sent"][t] == len(changed), t
        assert after_run["accepted"][t] == len(changed), t


def test_dry_run_predicts_what_the_commit_sends(tmp_path, sandbox):
    dry = run(tmp_path, sandbox, commit=False)
    assert not dry.committed
    assert emulator(sandbox).stats()["push_requests"] == 0
    predicted = {t: sum(n for c, n in changes.items() if c in ("new", "changed", "void"))
                 for t, changes in dry.push.as_dict()["summary"].items()}
    real = run(tmp_path, sandbox, commit=True).as_dict()
    assert {t: real["sent"][t] for t in predicted} == predicted


def test_sync_json_contract(tmp_path, sandbox, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / ".khaosync" / "sandbox"
    target.parent.mkdir()
    shutil.copytree(sandbox, target)
    result = CliRunner().invoke(app, ["sync", "--since", "2026-01-01", "--commit", "--verify", "none", "--json"])
    data = json.loads(result.stdout)
    assert {"sandbox", "committed", "sent", "accepted", "rejected", "plan", "exceptions"} <= set(data)
    assert data["sandbox"] is True and data["committed"] is True
    for key in ("sent", "accepted", "rejected"):
        assert set(data[key]) >= {"product", "contact", "order"}
    # the planted orders whose totals do not add up are fail-severity findings
    assert result.exit_code == 1
    assert data["exceptions"]["total_mismatch"] >= 1
    dry = CliRunner().invoke(app, ["sync", "--verify", "none"])
    # --fail-on new (the default): the same findings, still open, are not news the second time.
    assert "dry run" in dry.stderr and dry.exit_code == 0
    assert CliRunner().invoke(app, ["sync", "--verify", "none", "--fail-on", "any"]).exit_code == 1


def test_after_a_clean_sync_every_month_reconciles_and_the_erp_side_is_the_manifest(tmp_path, sandbox):
    from decimal import Decimal

    from khaosync.sandbox.generator import load_manifest
    from khaosync.stages.reconcile import reconcile_month

    manifest = load_manifest(sandbox)
    run(tmp_path, sandbox, commit=True, since=None)
    profile = sandbox_profile(state=str(tmp_path / "state.db"), sandbox_path=str(sandbox))
    names = {"orders": "orders", "gross_revenue": "gross", "refunds": "refunds", "net_revenue": "net",
             "customers": "customers", "units": "units"}
    with open_store(profile.state, write=False) as store:
        for month, currencies in manifest["monthly_totals"].items():
            result = reconcile_month(store, profile, month)
            assert result.status == "ok", (month, [m.as_dict() for m in result.metrics if m.status != "ok"])
            erp: dict = {}
            for m in result.metrics:
                erp.setdefault(m.currency, {}).setdefault(m.name, Decimal(0))
                erp[m.currency][m.name] += m.erp
            for currency, totals in currencies.items():
                for metric, key in names.items():
                    assert erp[currency][metric] == Decimal(totals[key]), (month, currency, metric)


def run_with_consent(tmp_path, sandbox, *, commit):
    profile = sandbox_profile(state=str(tmp_path / "state.db"), sandbox_path=str(sandbox))
    connections = Connections(profile)
    from khaosync.stages.pull import FileSource, SoapSource

    kc = connections.khaos_client()
    source = SoapSource(kc, profile, FileSource(sandbox / "exports"))
    with open_store(profile.state) as store:
        return sync(store, profile, source, connections.ometria_client() if commit else None, since=None,
                    commit=commit, verify="none", consent_reader=connections.ometria_client(),
                    consent_kc=kc if commit else None)


def test_sync_writes_ometria_opt_outs_to_kc_and_later_syncs_reopt_nobody_in(tmp_path, sandbox):
    from khaosync.sandbox.generator import load_manifest
    from khaosync.sandbox.world import World

    planted = load_manifest(sandbox)["faults"]["ometria_unsubscribed"]
    world = World(sandbox, create=False)
    unsubscribed_at = {email: timestamp for email, timestamp, _ in world.ometria_unsubscribes()}
    world.close()
    first = run_with_consent(tmp_path, sandbox, commit=True)
    assert first.consent.push.done == len(planted) and first.as_dict()["consent"]["push"]["done"] == len(planted)
    world = World(sandbox, create=False)
    for p in planted:
        contact = next(c for c in world.get("company", p["company_id"])["contacts"]
                       if c["contact_id"] == p["contact_id"])
        assert contact["email_subscribe"] is False
    world.close()
    second = run_with_consent(tmp_path, sandbox, commit=True)  # pulls KC's change, pushes the opt-out
    assert second.consent.push.planned == 0 and second.consent.diff.counts.get("opt_out_in_kc", 0) == 0
    assert second.as_dict()["sent"]["contact"] == len(planted)  # the opt-out KC now holds, once
    third = run_with_consent(tmp_path, sandbox, commit=True)
    assert third.as_dict()["sent"]["contact"] == 0 and third.consent.push.imports == 0
    emu = emulator(sandbox)
    stats = emu.stats()
    assert stats["forced_optins"] == [] and stats["optins_refused"] == 0  # no opt-in was ever sent over an opt-out
    for p in planted:
        stored = emu.get("contact", str(p["contact_id"]), "khaos")
        assert stored["marketing_optin"] == "EXPLICITLY_OPTEDOUT"
        # dated when the person unsubscribed in Ometria, not when KC was told
        assert stored["timestamp_unsubscribed"] == unsubscribed_at[p["email"]]
