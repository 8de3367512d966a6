"""Product mismatches: unknown products, renamed codes, incomplete products, malformed attributes,
order lines Ometria cannot attach."""

import json

from diff_fixtures import client, emulator, profile_for, push

from khaosync.detectors import run_detectors
from khaosync.ometria import wire
from khaosync.sandbox.generator import load_manifest
from khaosync.store import open_store

TYPE = "product_mismatch"


def mismatches(store, profile, **kwargs):
    return [f for f in run_detectors(store, profile, scope={"order", "product"}, **kwargs) if f.type == TYPE]


def planted(root):
    faults = load_manifest(root / "sandbox")["faults"]
    return ({f"sales_order:{k}" for k in faults["unknown_product"]},
            {str(e["stock_id"]) for e in faults["renamed_stock_code"]},
            {str(e["stock_id"]): e["field"] for e in faults["product_incomplete"]})


def test_exactly_the_planted_product_faults_from_the_erp_alone(erp_only):
    profile = profile_for(erp_only)
    unknown, renamed, incomplete = planted(erp_only)
    with open_store(profile.state) as store:
        found = mismatches(store, profile)
    assert {r for f in found if f.entity == "sales_order" for r in f.records} == unknown
    items = {f.key: f for f in found if f.entity == "stock_item"}
    assert set(items) == renamed | set(incomplete)
    for key in renamed:
        old = load_manifest(erp_only / "sandbox")["faults"]["renamed_stock_code"][0]
        assert items[key].detail["renamed"]["current"] == old["new_code"]
        assert items[key].detail["renamed"]["other_codes"] == {old["old_code"]: len(old["sales_orders"])}
        assert "does not hold it yet" in items[key].reason
    words = {"sell_price": "price above zero", "stock_desc": "title"}
    for key, field in incomplete.items():
        assert items[key].detail["missing"] == [words[field]]
    assert {f.entity for f in found} == {"sales_order", "stock_item"}


def test_a_renamed_code_stops_being_a_finding_once_ometria_holds_the_new_code(world):
    profile = profile_for(world)
    _, renamed, incomplete = planted(world)
    emu = emulator(world)
    with open_store(profile.state) as store:
        before = {f.key for f in mismatches(store, profile) if f.entity == "stock_item"}
        assert before == renamed | set(incomplete)
        push(store, profile, emu, types=("product",))
        after = {f.key for f in mismatches(store, profile) if f.entity == "stock_item"}
        assert after == set(incomplete)
        [gone] = [r for r in store.exceptions(type=TYPE) if r.records == [f"stock_item:{sorted(renamed)[0]}"]]
        assert gone.status == "resolved"


def test_malformed_attributes_and_a_missing_url_on_the_mapped_product(world):
    profile = profile_for(world)
    with open_store(profile.state) as store:
        id_, body = store.conn.execute(
            "SELECT id, body FROM outbound_record WHERE type = 'product' AND "
            "json_extract(CAST(body AS TEXT), '$.is_variant') IS NOT 1 ORDER BY id LIMIT 1").fetchone()
        doc = wire.loads(bytes(body))
        doc.pop("url", None)
        doc["attributes"] = [{"type": "colour", "id": "navy", "label": " Navy"},
                             {"type": "colour", "id": "navy", "label": "Navy"}, {"type": "size", "id": ""}]
        store.conn.execute("UPDATE outbound_record SET body = ? WHERE type = 'product' AND id = ?",
                           (wire.dumps(doc), id_))
        [found] = [f for f in mismatches(store, profile) if f.key == id_]
    assert found.detail["missing"] == ["url"]
    assert found.detail["attributes"] == ["attribute 1 label ' Navy' has stray spaces",
                                          "attribute colour=navy is there twice", "attribute 3 has no id"]


def test_an_order_about_to_be_sent_with_a_product_ometria_will_not_hold(world):
    profile = profile_for(world)
    with open_store(profile.state) as store:
        assert not [f for f in mismatches(store, profile) if f.entity == "order"]  # map held the unknown ones
        id_, body = store.conn.execute("SELECT id, body FROM outbound_record WHERE type = 'order' "
                                       "AND state = 'ready' ORDER BY id LIMIT 1").fetchone()
        doc = json.loads(bytes(body))
        doc["lineitems"][0]["product_id"] = "404404"
        store.conn.execute("UPDATE outbound_record SET body = ?, content_hash = 'edited' WHERE type = 'order' "
                           "AND id = ?", (json.dumps(doc).encode(), id_))
        [found] = [f for f in mismatches(store, profile) if f.entity == "order"]
    assert found.records == (f"order:{id_}",) and found.detail == {"lines": ["line 1 product_id 404404"]}


def test_live_an_order_of_ours_whose_product_ometria_does_not_hold(world):
    profile = profile_for(world)
    emu = emulator(world)
    with open_store(profile.state) as store:
        push(store, profile, emu)
        assert not [f for f in mismatches(store, profile, live_client=client(profile, emu))
                    if f.entity == "ometria_order"]
        id_ = store.conn.execute("SELECT id FROM ledger WHERE type = 'order' ORDER BY id LIMIT 1").fetchone()[0]
        doc = emu.get("order", id_)
        doc["lineitems"][0]["product_id"] = "GONE-1"
        emu.tamper("order", id_, {"lineitems": doc["lineitems"]})
        live = [f for f in mismatches(store, profile, live_client=client(profile, emu)) if f.entity == "ometria_order"]
    assert [(f.records, f.detail) for f in live] == [((f"order:{id_}",), {"lines": ["line 1 product_id GONE-1"]})]
