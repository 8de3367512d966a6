"""Refund gaps: orders pushed without their refunds are found, exactly, from the ledger and live."""

from diff_fixtures import client, emulator, profile_for, push

from khaosync.detectors import run_detectors
from khaosync.sandbox.generator import load_manifest
from khaosync.store import open_store

TYPE = "refund_gap"


def without_refunds(type_: str, doc: dict) -> dict:
    """The order as an integration that ignores credit notes would have sent it."""
    if type_ != "order":
        return doc
    doc = dict(doc)
    if doc.get("status") in ("refunded", "partial_refund"):
        doc["status"], doc["is_valid"] = "complete", True
    doc["lineitems"] = [{k: v for k, v in line.items() if k not in ("refunded", "quantity_refunded")}
                        for line in doc["lineitems"]]
    properties = {k: v for k, v in (doc.get("properties") or {}).items()
                  if k not in ("credit_notes", "delivery_refunded")}
    doc.pop("properties", None)
    if properties:
        doc["properties"] = properties
    return doc


def planted_refunds(root) -> dict[str, set[str]]:
    faults = load_manifest(root / "sandbox")["faults"]
    return {str(e["sorder_id"]): {f"credit_note:{c}" for c in e["credit_ids"]}
            for kind in ("full_refund", "partial_refund", "delivery_only_refund") for e in faults[kind]}


def gaps(store, profile, **kwargs):
    return {f.key: f for f in run_detectors(store, profile, scope={"order"}, **kwargs) if f.type == TYPE}


def test_orders_pushed_without_their_refunds_are_exactly_the_planted_refunds(world):
    profile = profile_for(world)
    emu = emulator(world)
    planted = planted_refunds(world)
    with open_store(profile.state) as store:
        assert gaps(store, profile) == {}  # nothing pushed yet: the first push carries the refunds
        push(store, profile, emu, types=("product", "contact"))
        push(store, profile, emu, types=("order",), transform=without_refunds)
        pushed = {i for (i,) in store.conn.execute("SELECT id FROM ledger WHERE type = 'order'")}
        expected = {k: v for k, v in planted.items() if k in pushed}
        assert len(expected) >= 10

        from_ledger = gaps(store, profile)
        assert {k: set(f.records) - {f"sales_order:{k}"} for k, f in from_ledger.items()} == expected
        assert {(f.entity, f.severity, f.owner) for f in from_ledger.values()} == {("sales_order", "fail", "finance")}
        full = {str(e["sorder_id"]) for e in load_manifest(world / "sandbox")["faults"]["full_refund"]}
        assert {k for k, f in from_ledger.items() if f.detail["refund"] == "full"} == full & pushed

        live = gaps(store, profile, live_client=client(profile, emu))
        assert set(live) == set(expected) and {f.entity for f in live.values()} == {"ometria_order"}

        # the refunds reach Ometria: both kinds of finding close
        push(store, profile, emu, types=("order",))
        assert gaps(store, profile) == {} and gaps(store, profile, live_client=client(profile, emu)) == {}
        assert store.exceptions(open_only=True, type=TYPE) == []
