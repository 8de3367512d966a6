"""The detector registry and how run_detectors records, owns and closes findings."""

from khaosync import findings
from khaosync.detectors import Check, Finding, registry, run_detectors, selected_checks
from khaosync.detectors import products as products_detector
from khaosync.config import sandbox_profile
from khaosync.store import open_store


def test_one_module_per_failure_class_and_types_are_known():
    checks = registry()
    assert list(checks) == ["identifier_conflicts", "split_consignments", "products", "refunds", "consent",
                            "purchase_history", "stalled_batches", "stale_fields"]
    for check in (c for group in checks.values() for c in group):
        assert check.type in findings.TYPES, check.name
        assert check.rule and check.mode in ("always", "ledger", "live")


def test_selection_by_mode_and_scope():
    names = {c.name for c in selected_checks(live=False, scope={"contact"})}
    assert "identifier_conflicts.shared_email" in names and "refunds.ledger" not in names
    assert not any(c.mode == "live" for c in selected_checks(live=False, scope=None))
    live = {c.name for c in selected_checks(live=True, scope={"order"})}
    assert "refunds.live" in live and "refunds.ledger" not in live


def test_owners_from_the_mapping_and_severity_per_finding(tmp_path, monkeypatch):
    profile = sandbox_profile(state=str(tmp_path / "state.db"), sandbox_path=str(tmp_path / "sb"))

    def fake(ctx):
        yield Finding("product_mismatch", "one", ("stock_item:1",), "stock_item", "1")
        yield Finding("product_mismatch", "two", ("stock_item:2",), "stock_item", "2", severity="fail")

    monkeypatch.setattr(products_detector, "CHECKS", [Check("products.fake", "product_mismatch", "stock_item",
                                                            "a fake rule", fake)])
    with open_store(profile.state) as store:
        found = run_detectors(store, profile, owners={"product_mismatch": "merch"}, scope={"product"})
        mine = [f for f in found if f.check == "products.fake"]
        assert [(f.owner, f.severity, f.rule) for f in mine] == [("merch", "warn", "a fake rule"),
                                                                  ("merch", "fail", "a fake rule")]
        rows = {r.records[0]: r for r in store.exceptions(type="product_mismatch")}
        assert rows["stock_item:2"].severity == "fail" and rows["stock_item:1"].owner == "merch"

        def fewer(ctx):
            yield Finding("product_mismatch", "two", ("stock_item:2",), "stock_item", "2")

        monkeypatch.setattr(products_detector, "CHECKS", [Check("products.fake", "product_mismatch", "stock_item",
                                                                "a fake rule", fewer)])
        run_detectors(store, profile, scope={"product"})
        status = {r.records[0]: r.status for r in store.exceptions(type="product_mismatch")}
        assert status == {"stock_item:1": "resolved", "stock_item:2": "open"}
        # health runs the same checks: it sees diff's row again rather than opening a second one ...
        [again] = [f for f in run_detectors(store, profile, stage="health") if f.check == "products.fake"]
        assert (again.stage, again.exception_id) == ("diff", rows["stock_item:2"].id)
        assert len(store.exceptions(open_only=True, type="product_mismatch")) == 1

        # ... and closes it when it is gone
        monkeypatch.setattr(products_detector, "CHECKS", [Check("products.fake", "product_mismatch", "stock_item",
                                                                "a fake rule", lambda ctx: iter(()))])
        run_detectors(store, profile, stage="health", scope={"product"})
        assert store.exceptions(open_only=True, type="product_mismatch") == []


def test_after_a_clean_push_every_detector_finds_exactly_what_was_planted(world):
    """Everything at once, live: no detector misses a planted fault or flags a clean record."""
    from diff_fixtures import client, emulator, profile_for, push

    from khaosync.sandbox.generator import load_manifest

    profile = profile_for(world)
    emu = emulator(world)
    faults = load_manifest(world / "sandbox")["faults"]
    with open_store(profile.state) as store:
        push(store, profile, emu)
        found = run_detectors(store, profile, live_client=client(profile, emu), stage="health")
    by_type: dict[str, set[frozenset[str]]] = {}
    for f in found:
        by_type.setdefault(f.type, set()).add(frozenset(f.records))
    assert by_type == {
        "identifier_conflict": {frozenset(f"contact:{c['contact_id']}" for c in e["contacts"])
                                for e in faults["shared_email"]},
        "split_consignment_duplicate": {frozenset({f"sales_order:{e['sorder_id']}",
                                                   *(f"ometria_order:{i}" for i in e["ometria_ids"])})
                                        for e in faults["ometria_duplicate_order"]},
        "ometria_only_order": {frozenset({f"ometria_order:{i}"}) for i in faults["ometria_storefront_order"]},
        # the renamed code reached Ometria with the push; unknown products and incomplete items remain
        "product_mismatch": {frozenset({f"sales_order:{k}"}) for k in faults["unknown_product"]}
                            | {frozenset({f"stock_item:{e['stock_id']}"}) for e in faults["product_incomplete"]},
        "consent_gap": {frozenset({f"contact:{e['contact_id']}"}) for e in faults["ometria_unsubscribed"]},
    }
