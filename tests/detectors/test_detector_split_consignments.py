"""Split-consignment duplicates and Ometria-only orders, against the manifest (--live)."""

from decimal import Decimal

from diff_fixtures import client, emulator, profile_for, push

from khaosync.detectors import run_detectors
from khaosync.sandbox.generator import load_manifest
from khaosync.store import open_store

DUPLICATE = "split_consignment_duplicate"
ONLY = "ometria_only_order"


def live_findings(store, profile, emu):
    return run_detectors(store, profile, live_client=client(profile, emu), scope={"order"})


def planted(root) -> tuple[dict[str, set[str]], set[str]]:
    faults = load_manifest(root / "sandbox")["faults"]
    duplicates = {str(e["sorder_id"]): {f"ometria_order:{i}" for i in e["ometria_ids"]}
                  for e in faults["ometria_duplicate_order"]}
    return duplicates, {f"ometria_order:{i}" for i in faults["ometria_storefront_order"]}


def by_type(found, type_):
    return [f for f in found if f.type == type_]


def test_duplicates_and_storefront_orders_exactly_as_planted_before_our_push(world):
    profile = profile_for(world)
    duplicates, storefront = planted(world)
    with open_store(profile.state) as store:
        found = live_findings(store, profile, emulator(world))
    dupes = by_type(found, DUPLICATE)
    assert {f.key: set(f.records) - {f"sales_order:{f.key}"} for f in dupes} == duplicates
    assert all(f"sales_order:{f.key}" in f.records and f.severity == "fail" and f.owner == "ecommerce" for f in dupes)
    assert all("ours, once pushed" in f.reason and "revenue" not in f.reason for f in dupes)
    assert all(how.startswith("web_id ") for f in dupes for how in f.detail["linked_by"].values())
    assert {r for f in by_type(found, ONLY) for r in f.records} == storefront
    assert {f.severity for f in by_type(found, ONLY)} == {"info"}


def test_an_invoice_keyed_order_without_web_id_is_linked_by_its_invoice_code(world):
    from khaosync.sandbox.ometria_emulator import REMOVE

    profile = profile_for(world)
    duplicates, _ = planted(world)
    key = sorted(duplicates)[0]
    first = sorted(duplicates[key])[0].split(":", 1)[1]
    emu = emulator(world)
    emu.tamper("order", first, {"web_id": REMOVE})
    with open_store(profile.state) as store:
        [found] = [f for f in by_type(live_findings(store, profile, emu), DUPLICATE) if f.key == key]
    assert set(found.records) == {f"sales_order:{key}", *duplicates[key]}
    assert found.detail["linked_by"][first] == f"id {first} names invoice {first[4:]}"


def test_after_our_push_the_duplicates_double_the_revenue_and_nothing_else_is_flagged(world):
    profile = profile_for(world)
    duplicates, storefront = planted(world)
    emu = emulator(world)
    with open_store(profile.state) as store:
        push(store, profile, emu)
        found = live_findings(store, profile, emu)
        dupes = by_type(found, DUPLICATE)
        assert {f.key for f in dupes} == set(duplicates)  # none of our own orders is taken for a duplicate
        for f in dupes:
            assert "besides ours;" in f.reason and Decimal(f.detail["ometria_revenue"]) == 2 * Decimal(
                f.detail["erp_value"])
        assert {r for f in by_type(found, ONLY) for r in f.records} == storefront

        # someone raises one of our orders' totals in Ometria: more revenue than the ERP's
        ours = next(i for (i,) in store.conn.execute("SELECT id FROM ledger WHERE type = 'order' ORDER BY id")
                    if i not in duplicates)
        emu.tamper("order", ours, {"grand_total": 99999.99})
        raised = [f for f in by_type(live_findings(store, profile, emu), DUPLICATE) if f.key == ours]
        assert [f.records for f in raised] == [(f"sales_order:{ours}",)]
        assert "99999.99" in raised[0].reason

        # duplicates voided by hand in Ometria still stand as orders: the finding stays, without revenue
        for ometria_id in sorted(duplicates[sorted(duplicates)[0]]):
            emu.tamper("order", ometria_id.split(":", 1)[1], {"is_valid": False})
        again = {f.key: f for f in by_type(live_findings(store, profile, emu), DUPLICATE)}
        assert "revenue" not in again[sorted(duplicates)[0]].reason
