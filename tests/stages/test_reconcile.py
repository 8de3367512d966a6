"""Reconcile: the ERP's figures are the manifest's, a clean sync passes every month, and each
drift planted in Ometria is named, record by record, and fails the month."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import reconcile_world as world  # noqa: E402

from khaosync.errors import ConfigError  # noqa: E402
from khaosync.sandbox.generator import load_manifest  # noqa: E402
from khaosync.stages.reconcile import (  # noqa: E402
    erp_months, local_month, month_bounds, reconcile_contacts, reconcile_month,
)
from khaosync.stages.reconcile_rules import (  # noqa: E402
    DEFAULT_RULES_PATH, MetricRule, ReconcileRules, load_rules, parse_rules,
)
from khaosync.store import open_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MANIFEST_METRICS = {"orders": "orders", "gross_revenue": "gross", "refunds": "refunds", "net_revenue": "net",
                    "customers": "customers", "units": "units"}


@pytest.fixture(scope="module")
def pulled(tmp_path_factory) -> tuple[Path, Path]:
    return world.plant_and_pull(tmp_path_factory.mktemp("reconcile"))


@pytest.fixture(scope="module")
def manifest(pulled) -> dict:
    return load_manifest(pulled[0])


@pytest.fixture
def copy(pulled, tmp_path) -> tuple[Path, Path]:
    return world.copy_world(*pulled, tmp_path / "w")


def by_currency(result) -> dict[str, dict[str, Decimal]]:
    out: dict[str, dict[str, Decimal]] = {}
    for row in result.metrics:
        out.setdefault(row.currency, {})[row.name] = out.get(row.currency, {}).get(row.name, Decimal(0)) + row.erp
    return out


def serious(result) -> set[tuple[str, str]]:
    return {(r.key, r.issue) for r in result.records if r.severity != "info"}


# -- the ERP side is the manifest's truth ------------------------------------------------------------


def test_erp_figures_equal_the_manifest_for_every_month(pulled, manifest):
    _sandbox, state = pulled
    profile = world.profile_for(state, pulled[0])
    malformed: set[str] = set()
    with open_store(state, write=False) as store:
        assert erp_months(store) == sorted(manifest["monthly_totals"])
        for month, currencies in manifest["monthly_totals"].items():
            result = reconcile_month(store, profile, month)
            # the default mapping sends no store: one group per currency
            assert len({(r.currency, r.store) for r in result.metrics}) == len(result.metrics) // 7
            got = by_currency(result)
            assert set(got) == set(currencies), month
            for currency, totals in currencies.items():
                for metric, key in MANIFEST_METRICS.items():
                    assert got[currency][metric] == Decimal(totals[key]), (month, currency, metric)
            malformed |= {r.key for r in result.records if r.issue == "erp_malformed"}
    assert malformed == {str(k) for k in manifest["excluded_from_totals"]}


def test_valid_orders_leave_out_the_cancelled_and_the_fully_refunded(pulled, manifest):
    profile = world.profile_for(pulled[1], pulled[0])
    valid = 0
    with open_store(pulled[1], write=False) as store:
        for month in manifest["monthly_totals"]:
            valid += sum(int(r.erp) for r in reconcile_month(store, profile, month).metrics if r.name == "valid_orders")
    totals = [t for currencies in manifest["monthly_totals"].values() for t in currencies.values()]
    placed = sum(int(t["orders"]) for t in totals)
    cancelled = sum(int(t["cancelled"]) for t in totals)
    assert manifest["faults"]["full_refund"]
    assert valid == placed - cancelled - len(manifest["faults"]["full_refund"])


def test_months_are_london_months():
    start, end = month_bounds("2026-10")
    assert start == datetime(2026, 9, 30, 23, 0, tzinfo=UTC)  # BST: midnight is 23:00 UTC the day before
    assert end == datetime(2026, 11, 1, 0, 0, tzinfo=UTC)     # GMT again after 25 October
    assert local_month(datetime(2026, 9, 30, 23, 30, tzinfo=UTC)) == "2026-10"
    assert local_month(datetime(2026, 12, 31, 23, 30, tzinfo=UTC)) == "2026-12"
    with pytest.raises(ValueError, match="expected YYYY-MM"):
        month_bounds("2026-13")


# -- a clean sync passes ---------------------------------------------------------------------------------


def test_a_clean_sync_passes_every_month_against_the_ledger(copy, manifest, tmp_path):
    sandbox, state = copy
    profile = world.profile_for(state, sandbox)
    for month in manifest["monthly_totals"]:
        world.sync_by_hand(state, tmp_path / f"o-{month}.db", month)
    with open_store(state, write=False) as store:
        for month in manifest["monthly_totals"]:
            result = reconcile_month(store, profile, month)
            assert result.status == "ok", (month, [r.as_dict() for r in result.records if r.severity != "info"],
                                           [m.as_dict() for m in result.metrics if m.status != "ok"])
            assert all(m.ometria is None for m in result.metrics)


def test_orders_not_yet_despatched_are_expected_to_be_missing(copy, manifest, tmp_path):
    sandbox, state = copy
    month = "2026-10"
    world.sync_by_hand(state, tmp_path / "o.db", month)
    waiting = {str(k) for k in manifest["faults"]["not_despatched"]}
    with open_store(state, write=False) as store:
        result = reconcile_month(store, world.profile_for(state, sandbox), month)
    not_due = {r.key for r in result.records if r.issue == "not_yet_due"}
    assert not_due and not_due <= waiting
    assert all(r.severity == "info" for r in result.records if r.issue == "not_yet_due")
    orders = next(m for m in result.metrics if m.name == "orders" and m.currency == "GBP")
    assert orders.not_yet_due < 0 and orders.unexplained == 0 and orders.status == "ok"
    assert result.status == "ok"


# -- drift planted in Ometria: named exactly, and the month fails ------------------------------------------


def _month_with_everything(manifest: dict, state: Path) -> tuple[str, dict[str, str]]:
    """A month holding a due split-consignment order and a partial refund, and the keys to use."""
    with open_store(state, write=False) as store:
        for month in sorted(manifest["monthly_totals"], reverse=True):
            docs = {d["id"]: d for d in world.due_orders(store, month)}
            split = [str(k) for k in manifest["faults"]["split_consignment"] if str(k) in docs]
            partial = [str(e["sorder_id"]) for e in manifest["faults"]["partial_refund"]
                       if str(e["sorder_id"]) in docs and docs[str(e["sorder_id"])]["status"] == "partial_refund"]
            plain = [k for k, d in docs.items() if d["status"] in ("shipped", "complete") and k not in split]
            if split and partial and len(plain) >= 3:
                return month, {"split": split[0], "partial": partial[0], "missing": plain[0], "penny": plain[1],
                               "customer": plain[2]}
    raise AssertionError("no month with every kind of order")


def _plant(kind: str, emulator, docs: dict[str, dict], keys: dict[str, str], state: Path) -> tuple[str, str]:
    """Plant one drift; return the (record key, issue) reconcile must name."""
    if kind == "duplicate":
        key = keys["split"]
        with open_store(state, write=False) as store:
            from khaosync.stages.reconcile import _staged_order
            order = _staged_order(store, key)
        invoice = next(inv for inv in order.invoices if inv.issued is not None)
        duplicate = world.as_float_json({**docs[key], "id": f"INV-{invoice.invoice_code}",
                                         "timestamp": docs[key]["timestamp"], "status": "complete"})
        emulator.seed_record("order", duplicate)
        return f"INV-{invoice.invoice_code}", "duplicate"
    if kind == "refund_missing":
        key = keys["partial"]
        lines = [{k: v for k, v in line.items() if k not in ("refunded", "quantity_refunded")}
                 for line in docs[key]["lineitems"]]
        emulator.tamper("order", key, {"lineitems": world.as_float_json(lines), "status": "shipped"})
        return key, "refund_missing"
    if kind == "total_mismatch":
        key = keys["penny"]
        emulator.tamper("order", key, {"grand_total": float(docs[key]["grand_total"] + Decimal("0.01"))})
        return key, "total_mismatch"
    if kind == "customer_mismatch":
        key = keys["customer"]
        emulator.tamper("order", key, {"customer": {"id": "999999"}})
        return key, "customer_mismatch"
    raise AssertionError(kind)


DRIFTS = ("missing_in_ometria", "duplicate", "refund_missing", "total_mismatch", "customer_mismatch")


@pytest.mark.parametrize("drift", DRIFTS)
def test_each_drift_in_ometria_is_named_and_fails(copy, manifest, tmp_path, drift):
    sandbox, state = copy
    month, keys = _month_with_everything(manifest, state)
    missing = (keys["missing"],) if drift == "missing_in_ometria" else ()
    emulator, docs = world.sync_by_hand(state, tmp_path / "o.db", month, not_in_ometria=missing)
    profile = world.profile_for(state, sandbox)
    try:
        with open_store(state, write=False) as store:
            clean = reconcile_month(store, profile, month, live_client=world.live_client(emulator)) \
                if not missing else None
            if clean is not None:
                assert clean.status == "ok" and serious(clean) == set()
            if missing:
                expected = (keys["missing"], "missing_in_ometria")
            else:
                expected = _plant(drift, emulator, {d["id"]: d for d in docs}, keys, state)
            result = reconcile_month(store, profile, month, live_client=world.live_client(emulator))
    finally:
        emulator.close()
    assert serious(result) == {expected}
    assert result.status == "fail"
    [record] = [r for r in result.records if (r.key, r.issue) == expected]
    assert record.severity == "fail" and record.owner
    assert record.side == "ometria"
    if drift == "duplicate":
        assert record.erp_key == keys["split"]
        assert record.owner == "ecommerce"
    if drift == "total_mismatch":
        assert Decimal(record.ometria) - Decimal(record.erp) == Decimal("0.01")
        net = [m for m in result.metrics if m.name == "net_revenue" and m.status == "fail"]
        assert [m.unexplained for m in net] == [Decimal("0.01")]
    # without --live the ledger still agrees with the ERP: the drift is Ometria's alone
    with open_store(state, write=False) as store:
        assert reconcile_month(store, profile, month).status == "ok"


def test_a_storefront_order_is_in_ometria_but_not_in_the_erp(copy, manifest, tmp_path):
    sandbox, state = copy
    month, _keys = _month_with_everything(manifest, state)
    emulator, docs = world.sync_by_hand(state, tmp_path / "o.db", month)
    shop = world.as_float_json({**docs[0], "id": "SHOP-000042", "web_id": "SHOP-000042", "customer": {
        "email": "guest0042@example.net"}})
    emulator.seed_record("order", shop)
    try:
        with open_store(state, write=False) as store:
            result = reconcile_month(store, world.profile_for(state, sandbox), month,
                                     live_client=world.live_client(emulator))
    finally:
        emulator.close()
    assert serious(result) == {("SHOP-000042", "not_in_erp")}
    assert result.status == "fail"  # its revenue makes Ometria's figures differ from the ERP's


# -- the rules file ----------------------------------------------------------------------------------------


def test_the_shipped_rules_file_is_the_built_in_default():
    shipped = load_rules(ROOT / DEFAULT_RULES_PATH)
    assert shipped.model_dump(exclude={"source"}) == ReconcileRules().model_dump(exclude={"source"})


def test_thresholds_absolute_and_percent():
    rule = parse_rules("orders:\n  metrics:\n    net_revenue: {warn: 0, fail: '0.5%'}\n", "r.yaml").metric("net_revenue")
    assert rule.status(Decimal("0"), Decimal("1000")) == "ok"
    assert rule.status(Decimal("0.01"), Decimal("1000")) == "warn"
    assert rule.status(Decimal("5"), Decimal("1000")) == "warn"     # exactly 0.5%: not more than it
    assert rule.status(Decimal("-5.01"), Decimal("1000")) == "fail"
    assert rule.status(Decimal("1"), Decimal("0")) == "fail"        # any share of nothing
    assert MetricRule().status(Decimal("0.01"), Decimal("1000")) == "fail"  # default: exact to the penny
    off = parse_rules("orders:\n  metrics:\n    units: {fail: null}\n").metric("units")
    assert off.status(Decimal("3"), Decimal("10")) == "ok"


money = st.decimals(min_value=-10**6, max_value=10**6, places=2, allow_nan=False, allow_infinity=False)


@given(a=money, b=money, base=money, warn=st.sampled_from(["0", "1.50", "0.5%", None]),
       fail=st.sampled_from(["0", "10", "2%", None]))
def test_a_bigger_difference_is_never_a_better_status(a, b, base, warn, fail):
    rule = MetricRule.model_validate({"warn": warn, "fail": fail})
    rank = {"ok": 0, "warn": 1, "fail": 2}
    small, big = sorted((a, b), key=abs)
    assert rank[rule.status(small, base)] <= rank[rule.status(big, base)]
    assert rule.status(Decimal(0), base) == "ok"


@pytest.mark.parametrize("text,where", [
    ("orders:\n  metrics:\n    net_revenue: {fail: lots}\n", "orders.metrics.net_revenue.fail"),
    ("orders:\n  metrics:\n    revenue: {fail: 0}\n", "orders.metrics"),
    ("orders:\n  issues:\n    duplicate: {severity: bad}\n", "orders.issues.duplicate.severity"),
    ("health:\n  stalled_batch_minutes: -1\n", "health.stalled_batch_minutes"),
    ("heath: {}\n", "heath"),
])
def test_a_bad_rules_file_names_file_key_and_reason(text, where):
    with pytest.raises(ConfigError) as caught:
        parse_rules(text, "site-rules.yaml")
    message = str(caught.value)
    assert message.startswith("site-rules.yaml: invalid reconcile rules")
    assert f"  {where}: " in message


def test_a_missing_rules_file_is_an_error_but_no_file_means_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_rules().source == "built-in defaults"
    with pytest.raises(ConfigError, match="not found"):
        load_rules(tmp_path / "nope.yaml")


def test_rules_change_severity_and_owner(copy, manifest, tmp_path):
    sandbox, state = copy
    month, keys = _month_with_everything(manifest, state)
    emulator, docs = world.sync_by_hand(state, tmp_path / "o.db", month)
    emulator.tamper("order", keys["customer"], {"customer": {"id": "999999"}})
    rules = parse_rules("orders:\n  issues:\n    customer_mismatch: {severity: warn, owner: crm-team}\n"
                        "  metrics:\n    customers: {warn: 0, fail: null}\n")
    try:
        with open_store(state, write=False) as store:
            result = reconcile_month(store, world.profile_for(state, sandbox), month,
                                     live_client=world.live_client(emulator), rules=rules)
    finally:
        emulator.close()
    [record] = [r for r in result.records if r.issue == "customer_mismatch"]
    assert (record.severity, record.owner) == ("warn", "crm-team")
    assert result.status == "warn"


# -- contacts ----------------------------------------------------------------------------------------------


def _contacts_by_hand(state: Path, emulator_path: Path):
    """Every staged contact as khaosync would send it, in the ledger and in a fresh emulator."""
    from khaosync.stages.reconcile_contacts import _erp_contacts
    with open_store(state) as store:
        m = world._Mapping(None)
        erp, _shared, _bad = _erp_contacts(store, m)
        docs = []
        for c in erp.values():
            doc = {"@type": "contact", "@collection": "khaos", "id": c.contact_id, "customer_id": c.customer_id}
            from khaosync.ometria.models import is_ometria_email
            if c.email and is_ometria_email(c.email):
                doc["email"] = c.email
            for field, value in (("firstname", c.firstname), ("lastname", c.lastname),
                                 ("marketing_optin", c.optin)):
                if value:
                    doc[field] = value
            docs.append(doc)
        world.write_ledger(store, docs)
    emulator = world.fresh_emulator(emulator_path)
    world.push(emulator, docs)
    return emulator, {d["id"]: d for d in docs}, erp


def test_contacts_agree_then_each_attribute_drift_is_named(copy, tmp_path):
    sandbox, state = copy
    profile = world.profile_for(state, sandbox)
    emulator, docs, erp = _contacts_by_hand(state, tmp_path / "c.db")
    try:
        with open_store(state, write=False) as store:
            clean = reconcile_contacts(store, profile, live_client=world.live_client(emulator))
            assert clean.status != "fail", [r.as_dict() for r in clean.records if r.severity == "fail"]
            assert {r.issue for r in clean.records} <= {"email_withheld", "erp_malformed", "email_mismatch"}
            assert reconcile_contacts(store, profile).status != "fail"  # the ledger side too
            opted_out = next(k for k, c in erp.items() if c.optin == "EXPLICITLY_OPTEDOUT")
            opted_in = next(k for k, c in erp.items() if c.optin == "EXPLICITLY_OPTEDIN" and docs[k].get("email"))
            plain = next(k for k in erp if k not in (opted_out, opted_in))
            emulator.tamper("contact", opted_out, {"marketing_optin": "EXPLICITLY_OPTEDIN"}, collection="khaos")
            emulator.tamper("contact", plain, {"customer_id": "424242"}, collection="khaos")
            emulator.seed_unsubscribe(docs[opted_in]["email"], "2026-10-20T10:00:00Z", "unsubscribe link")
            result = reconcile_contacts(store, profile, live_client=world.live_client(emulator))
    finally:
        emulator.close()
    found = {(r.key, r.issue) for r in result.records} - {(r.key, r.issue) for r in clean.records}
    assert found == {(opted_out, "consent_gap"), (plain, "customer_mismatch"), (opted_in, "unsubscribed_in_ometria")}
    assert result.status == "fail"


# -- end to end: the real pipeline --------------------------------------------------------------------------


@pytest.mark.slow
def test_after_a_real_sync_every_month_passes_and_only_planted_ometria_orders_differ(copy, manifest):
    pytest.importorskip("khaosync.stages.map")
    pytest.importorskip("khaosync.stages.diff")
    from khaosync.stages.diff import diff_all
    from khaosync.stages.map import map_records
    from khaosync.stages.push import push_plan

    sandbox, state = copy
    profile = world.profile_for(state, sandbox).model_copy(update={"ometria": world.settings()})
    emulator = world.OmetriaEmulator(world.sandbox_emulator_path(sandbox), world.KEY, push_rate=1000,
                                     read_rate=1000)  # the sandbox's own Ometria, with its planted orders
    client = world.live_client(emulator)
    try:
        with open_store(state) as store:
            map_records(store, profile)
            diff_all(store, profile)
            for (plan_id,) in store.conn.execute("SELECT id FROM plan WHERE status = 'open' ORDER BY created_at")\
                    .fetchall():
                push_plan(store, profile, client, plan_id, commit=True, verify="none")
            pushed = store.conn.execute("SELECT count(*) FROM ledger WHERE type = 'order'").fetchone()[0]
        assert pushed > 300
        planted = {i for e in manifest["faults"]["ometria_duplicate_order"] for i in e["ometria_ids"]}
        planted |= set(manifest["faults"]["ometria_storefront_order"])
        with open_store(state, write=False) as store:
            for month, currencies in manifest["monthly_totals"].items():
                result = reconcile_month(store, profile, month)
                assert result.status == "ok", (month, serious(result))
                got = by_currency(result)
                for currency, totals in currencies.items():
                    for metric, key in MANIFEST_METRICS.items():
                        assert got[currency][metric] == Decimal(totals[key]), (month, currency, metric)
            live_months = sorted({local_month(datetime.fromisoformat(d["timestamp"].replace("Z", "+00:00")))
                                  for d in emulator.records("order") if d["id"] in planted})
            seen: set[str] = set()
            for month in live_months[:3]:
                result = reconcile_month(store, profile, month, live_client=client)
                assert {issue for _key, issue in serious(result)} <= {"duplicate", "not_in_erp"}, month
                assert {key for key, _issue in serious(result)} <= planted
                seen |= {key for key, _issue in serious(result)}
            assert seen and any(key.startswith("INV-") for key in seen)
    finally:
        emulator.close()
