"""The sandbox merchant generator: determinism, planted faults, money, the manifest and advance."""

from __future__ import annotations

import csv
import re
import shutil
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from khaosync.sandbox.generator import DEFAULT_END, DEFAULT_START, advance, generate, load_manifest
from khaosync.sandbox.generator_manifest import CSV_COLUMNS
from khaosync.sandbox.world import ENTITIES, KEY_FIELD, World

SMALL = {"customers": 60, "orders": 300}
FILES = ("world.db", "manifest.json", "exports/credit_notes.csv")
PENNY = Decimal("0.01")
MONEY = re.compile(r"^-?\d+\.\d{2}$")
INTEGER = re.compile(r"^-?\d+$")
EMAIL = re.compile(r"^[a-z0-9._-]+@[a-z0-9-]+(\.[a-z0-9-]+)+$")
KC_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
ISSUED_STAGES = {16, 70}
WAITING_STAGES = {9, 12, 13, 18}
MALFORMED_ORDER_KINDS = ("unknown_currency", "negative_quantity", "total_mismatch", "unknown_product")


# -- helpers ---------------------------------------------------------------------------
def load(folder: Path) -> dict[str, dict[int, dict]]:
    world = World(folder)
    try:
        return {entity: {doc[KEY_FIELD[entity]]: doc for doc in world.iter(entity)} for entity in ENTITIES}
    finally:
        world.close()


def world_extras(folder: Path) -> dict:
    world = World(folder)
    try:
        return {
            "seeds": {ident: doc for kind, ident, doc in world.ometria_seeds() if kind == "order"},
            "unsubscribes": {email: (ts, reason) for email, ts, reason in world.ometria_unsubscribes()},
            "overrides": {entity: world.raw_overrides(entity) for entity in ("company", "sales_order")},
            "meta": {key: world.get_meta(key) for key in ("clock", "seed", "params", "serve_twice")},
        }
    finally:
        world.close()


def money(text: str) -> Decimal:
    assert MONEY.match(text), text
    return Decimal(text)


def excluded(manifest: dict) -> set[int]:
    faults = manifest["faults"]
    keys = {key for kind in MALFORMED_ORDER_KINDS for key in faults[kind]}
    keys |= {e["key"] for kind in ("missing_field", "broken_xml") for e in faults[kind] if e["entity"] == "sales_order"}
    return keys


def despatched_by(order: dict, when: str) -> dict[int, int]:
    shipped: dict[int, int] = defaultdict(int)
    for invoice in order["invoices"]:
        if invoice["issued"] is not None and invoice["issued"] <= when:
            for entry in invoice["items"]:
                shipped[entry["sorder_item_id"]] += int(entry["qty"])
    return shipped


def issued_count(order: dict) -> int:
    return sum(1 for invoice in order["invoices"] if invoice["issued"] is not None)


# -- fixtures --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("sandbox")
    return folder, generate(folder, **SMALL)


@pytest.fixture(scope="module")
def docs(sandbox) -> dict[str, dict[int, dict]]:
    return load(sandbox[0])


@pytest.fixture(scope="module")
def advanced(tmp_path_factory, sandbox) -> tuple[Path, dict, dict]:
    """A copy of the small sandbox moved on ten days: (folder, summary, docs before)."""
    folder = tmp_path_factory.mktemp("advanced") / "sandbox"
    shutil.copytree(sandbox[0], folder)
    before = load(folder)
    return folder, advance(folder, 10), before


# -- determinism and refusal -----------------------------------------------------------
def test_same_arguments_give_the_same_bytes(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    generate(first, seed=3, **SMALL)
    generate(second, seed=3, **SMALL)
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_another_seed_gives_another_world(tmp_path, sandbox):
    other = generate(tmp_path, seed=8, **SMALL)
    assert (tmp_path / "world.db").read_bytes() != (sandbox[0] / "world.db").read_bytes()
    assert other["monthly_totals"] != sandbox[1]["monthly_totals"]


def test_refuses_to_overwrite_a_world(sandbox):
    folder, _ = sandbox
    before = (folder / "world.db").read_bytes()
    with pytest.raises(FileExistsError):
        generate(folder, **SMALL)
    assert (folder / "world.db").read_bytes() == before


def test_refuses_a_world_too_small_for_its_faults(tmp_path):
    with pytest.raises(ValueError):
        generate(tmp_path, customers=5, orders=300)
    assert not (tmp_path / "world.db").exists()


def test_advance_is_deterministic(tmp_path, sandbox):
    copies = [tmp_path / "one", tmp_path / "two"]
    for copy in copies:
        shutil.copytree(sandbox[0], copy)
        advance(copy, 5)
        advance(copy, 3)
    for name in FILES:
        assert (copies[0] / name).read_bytes() == (copies[1] / name).read_bytes(), name


# -- the manifest ----------------------------------------------------------------------
def test_manifest_header_and_meta(sandbox):
    folder, manifest = sandbox
    assert load_manifest(folder) == manifest
    assert (folder / "manifest.json").read_text().endswith("}\n")
    assert manifest["seed"] == 7
    assert manifest["params"] == {"customers": 60, "orders": 300, "start": DEFAULT_START.isoformat(),
                                  "end": DEFAULT_END.isoformat()}
    assert manifest["clock"] == "2026-10-31T23:59:59"
    assert manifest["last_advance"] is None
    meta = world_extras(folder)["meta"]
    assert meta["clock"] == manifest["clock"] and meta["seed"] == 7 and meta["params"] == manifest["params"]
    assert meta["serve_twice"] == manifest["faults"]["duplicate_in_response"]


def check_counts(folder: Path, manifest: dict, docs: dict) -> None:
    extras = world_extras(folder)
    companies, stock = docs["company"].values(), docs["stock_item"].values()
    parents = {d["parent_stock_id"] for d in stock if d["parent_stock_id"] is not None}
    assert manifest["counts"] == {
        "companies": len(docs["company"]),
        "contacts": sum(len(c["contacts"]) for c in companies),
        "addresses": sum(len(c["addresses"]) for c in companies),
        "stock_items": len(docs["stock_item"]),
        "stock_parents": len(parents),
        "stock_variants": sum(1 for d in stock if d["parent_stock_id"] is not None),
        "sales_orders": len(docs["sales_order"]),
        "order_lines": sum(len(o["items"]) for o in docs["sales_order"].values()),
        "invoices": sum(len(o["invoices"]) for o in docs["sales_order"].values()),
        "credit_notes": len(docs["credit_note"]),
        "credit_note_lines": sum(len(n["lines"]) for n in docs["credit_note"].values()),
        "ometria_seed_orders": len(extras["seeds"]),
        "ometria_unsubscribes": len(extras["unsubscribes"]),
    }


def test_counts_match_the_world(sandbox, docs):
    check_counts(sandbox[0], sandbox[1], docs)
    assert sandbox[1]["counts"]["sales_orders"] == 300 and sandbox[1]["counts"]["companies"] == 60


def recompute_monthly_totals(manifest: dict, docs: dict) -> dict:
    refunds: dict[int, Decimal] = defaultdict(Decimal)
    for note in docs["credit_note"].values():
        refunds[note["sorder_id"]] += Decimal(note["total"])
    months: dict = {}
    skip = excluded(manifest)
    for order in docs["sales_order"].values():
        if order["sorder_id"] in skip:
            continue
        row = months.setdefault(order["order_date"][:7], {}).setdefault(order["currency"], {
            "orders": 0, "cancelled": 0, "despatched": 0, "gross": Decimal("0.00"), "refunds": Decimal("0.00"),
            "units": 0, "customers": set()})
        row["orders"] += 1
        if order["cancelled"]:
            row["cancelled"] += 1
            continue
        row["despatched"] += issued_count(order) > 0
        row["gross"] += Decimal(order["order_amount"])
        row["refunds"] += refunds[order["sorder_id"]]
        row["units"] += sum(int(item["qty"]) for item in order["items"])
        row["customers"].add(order["company_id"])
    return {month: {currency: {
        "orders": str(r["orders"]), "cancelled": str(r["cancelled"]), "despatched": str(r["despatched"]),
        "gross": str(r["gross"]), "refunds": str(r["refunds"]), "net": str(r["gross"] - r["refunds"]),
        "units": str(r["units"]), "customers": str(len(r["customers"]))} for currency, r in by_currency.items()}
        for month, by_currency in months.items()}


def test_monthly_totals_recomputed_independently(sandbox, docs):
    manifest = sandbox[1]
    assert manifest["monthly_totals"] == recompute_monthly_totals(manifest, docs)
    assert sorted(manifest["monthly_totals"]) == [f"2026-{m:02d}" for m in range(1, 11)]
    assert manifest["excluded_from_totals"] == sorted(excluded(manifest))
    currencies = {c for month in manifest["monthly_totals"].values() for c in month}
    assert {"GBP", "EUR"} <= currencies and "ZZZ" not in currencies


# -- the documents ---------------------------------------------------------------------
def check_orders(manifest: dict, docs: dict) -> None:
    mismatched = set(manifest["faults"]["total_mismatch"])
    clock = manifest["clock"]
    start = manifest["params"]["start"] + "T00:00:00"
    invoice_ids, invoice_codes = set(), set()
    for order in docs["sales_order"].values():
        assert order["order_date"] == "" or start <= order["order_date"] <= clock
        lines = Decimal("0.00")
        for item in order["items"]:
            assert INTEGER.match(item["qty"])
            net, gross, discount = money(item["price_net"]), money(item["price_gross"]), money(item["discount"])
            assert gross == (net * Decimal("1.2")).quantize(PENNY, rounding=ROUND_HALF_UP)
            assert discount >= 0
            lines += int(item["qty"]) * gross - discount
        delivery = money(order["delivery_gross"])
        assert delivery == money(order["delivery_net"]) + money(order["delivery_tax"])
        expected = lines + delivery + (PENNY if order["sorder_id"] in mismatched else 0)
        assert money(order["order_amount"]) == expected, order["sorder_id"]
        events = [order["order_date"] or order["updated"]]
        for invoice in order["invoices"]:
            assert invoice["invoice_id"] not in invoice_ids and invoice["invoice_code"] not in invoice_codes
            invoice_ids.add(invoice["invoice_id"])
            invoice_codes.add(invoice["invoice_code"])
            if order["cancelled"]:
                assert invoice["stage_id"] == 1 and invoice["issued"] is None
            elif invoice["issued"] is not None:
                assert invoice["stage_id"] in ISSUED_STAGES
                assert invoice["consignment_ref"] and invoice["tracking_number"] and invoice["courier_name"]
                assert order["order_date"] == "" or order["order_date"] < invoice["issued"] <= clock
                events.append(invoice["issued"])
            else:
                assert invoice["stage_id"] in WAITING_STAGES
                assert invoice["consignment_ref"] == "" and invoice["tracking_number"] == ""
        if not order["cancelled"]:
            assert order["updated"] == max(events)
            # the invoices cover the lines exactly, whatever the number of despatches
            shipped = despatched_by({"invoices": [dict(i, issued="") for i in order["invoices"]]}, "~")
            assert dict(shipped) == {i["sorder_item_id"]: int(i["qty"]) for i in order["items"]}
        assert KC_TIME.match(order["updated"]) and order["updated"] <= clock


def test_orders_money_invoices_and_updated(sandbox, docs):
    check_orders(sandbox[1], docs)


def check_credit_notes(manifest: dict, docs: dict) -> None:
    orders = docs["sales_order"]
    refunded: dict[int, Decimal] = defaultdict(Decimal)
    issued_order = []
    for note in docs["credit_note"].values():
        order = orders[note["sorder_id"]]
        assert note["sorder_code"] == order["sorder_code"] and note["currency"] == order["currency"]
        assert note["updated"] == note["issued"] <= manifest["clock"]
        values = sum((money(line["value"]) for line in note["lines"]), Decimal("0.00"))
        assert money(note["total"]) == values + money(note["delivery_refund"])
        assert note["lines"] or money(note["delivery_refund"]) > 0
        first_despatch = min(i["issued"] for i in order["invoices"] if i["issued"] is not None)
        assert note["issued"] > first_despatch
        shipped = despatched_by(order, note["issued"])
        for line in note["lines"]:
            assert 0 < int(line["qty"]) <= shipped[line["sorder_item_id"]]
        refunded[note["sorder_id"]] += money(note["total"])
        issued_order.append((note["issued"], note["credit_id"]))
    for sorder_id, total in refunded.items():
        assert total <= money(orders[sorder_id]["order_amount"])
    assert [credit_id for _, credit_id in sorted(issued_order)] == sorted(docs["credit_note"])


def test_credit_notes_never_refund_more_than_was_despatched(sandbox, docs):
    check_credit_notes(sandbox[1], docs)


def check_csv(folder: Path, docs: dict) -> None:
    with (folder / "exports" / "credit_notes.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    expected = []
    for note in docs["credit_note"].values():
        head = [str(note["credit_id"]), note["credit_code"], str(note["sorder_id"]), note["sorder_code"],
                note["associated_ref"], note["issued"], note["currency"], note["reason"]]
        tail = [note["delivery_refund"], note["total"]]
        lines = sorted(note["lines"], key=lambda line: line["sorder_item_id"])
        expected += [head + [str(l["sorder_item_id"]), l["stock_code"], l["qty"], l["value"]] + tail for l in lines]
        if not lines:
            expected.append(head + ["", "", "", ""] + tail)
    assert rows[1:] == expected
    assert b"\r" not in (folder / "exports" / "credit_notes.csv").read_bytes()


def test_csv_matches_the_world(sandbox, docs):
    check_csv(sandbox[0], docs)


def test_realistic_merchant(docs):
    companies, stock = docs["company"].values(), docs["stock_item"]
    assert {len(c["contacts"]) for c in companies} >= {0, 1, 2}
    assert all({a["addr_type"] for a in c["addresses"]} == {"Invoice", "Delivery"} for c in companies)
    assert {a["country_code"] for c in companies for a in c["addresses"]} >= {"GB"}
    variants = [d for d in stock.values() if d["parent_stock_id"] is not None]
    assert variants
    assert all(d["scs"] and stock[d["parent_stock_id"]]["stock_code"] == d["parent_code"] for d in variants)
    assert all(d["barcodes"] and d["images"] for d in variants)
    assert any(d["parent_stock_id"] is None and d["scs"] is None and d["barcodes"] for d in stock.values())
    orders = docs["sales_order"].values()
    assert {len(o["items"]) for o in orders} >= {1, 2, 3}
    assert any(money(i["discount"]) > 0 for o in orders for i in o["items"])
    assert {o["currency"] for o in orders} >= {"GBP", "EUR"}
    assert len({o["order_date"][:7] for o in orders if o["order_date"]}) == 10


# -- planted faults --------------------------------------------------------------------
def check_faults_present(manifest: dict) -> None:
    for kind, keys in manifest["faults"].items():
        if kind == "duplicate_in_response":
            assert keys["company"] and keys["sales_order"]
        else:
            assert keys, kind


def test_every_fault_kind_is_planted(sandbox):
    check_faults_present(sandbox[1])
    assert set(sandbox[1]["faults"]) == {
        "shared_email", "renamed_stock_code", "split_consignment", "back_order", "not_despatched", "cancelled",
        "full_refund", "partial_refund", "delivery_only_refund", "consent_opted_out", "consent_blank",
        "ometria_unsubscribed", "ometria_duplicate_order", "ometria_storefront_order", "bad_email",
        "unknown_currency", "negative_quantity", "missing_field", "company_without_contacts", "broken_xml",
        "hostile_xml", "duplicate_in_response", "total_mismatch", "unknown_product", "product_incomplete",
        "dst_ambiguous", "dst_gap_adjacent"}


def contact(docs: dict, company_id: int, contact_id: int) -> dict:
    return next(c for c in docs["company"][company_id]["contacts"] if c["contact_id"] == contact_id)


def check_identity_and_consent_faults(folder: Path, faults: dict, docs: dict) -> None:
    emails = defaultdict(list)
    for company in docs["company"].values():
        for person in company["contacts"]:
            emails[person["email"]].append((company["company_id"], person["contact_id"]))
    for group in faults["shared_email"]:
        members = [(m["company_id"], m["contact_id"]) for m in group["contacts"]]
        assert 2 <= len(members) <= 3 and sorted(emails[group["email"]]) == sorted(members)
    assert any(len({m["company_id"] for m in g["contacts"]}) == 1 for g in faults["shared_email"])
    assert any(len({m["company_id"] for m in g["contacts"]}) > 1 for g in faults["shared_email"])
    unsubscribes = world_extras(folder)["unsubscribes"]
    for entry in faults["ometria_unsubscribed"]:
        company = docs["company"][entry["company_id"]]
        person = contact(docs, entry["company_id"], entry["contact_id"])
        assert person["email"] == entry["email"] and person["email_subscribe"] is True
        assert company["mailing_status"] in (1, 2, 3)
        timestamp, reason = unsubscribes[entry["email"]]
        assert timestamp.endswith("Z") and datetime.fromisoformat(timestamp.replace("Z", "+00:00")) and reason
    for entry in faults["bad_email"]:
        assert not EMAIL.match(contact(docs, entry["company_id"], entry["contact_id"])["email"])
    assert all(docs["company"][key]["contacts"] == [] for key in faults["company_without_contacts"])
    assert faults["consent_opted_out"] == sorted(k for k in faults["consent_opted_out"])
    assert all(docs["company"][key]["mailing_status"] == 6 for key in faults["consent_opted_out"])  # "do not use"
    assert all(docs["company"][key]["mailing_status"] is None for key in faults["consent_blank"])
    statuses = {c["mailing_status"] for c in docs["company"].values()}
    assert statuses >= {1, 2, 3, 6, None}
    assert {p["email_subscribe"] for c in docs["company"].values() for p in c["contacts"]} == {True, False, None}


def test_identity_and_consent_faults(sandbox, docs):
    check_identity_and_consent_faults(sandbox[0], sandbox[1]["faults"], docs)


def check_stock_faults(faults: dict, docs: dict) -> None:
    stock, orders = docs["stock_item"], docs["sales_order"]
    for entry in faults["renamed_stock_code"]:
        item = stock[entry["stock_id"]]
        assert item["stock_code"] == entry["new_code"] and item["code_history"][-1] == entry["old_code"]
        assert item["updated"] >= entry["renamed_at"]
        with_old_code = sorted(o["sorder_id"] for o in orders.values()
                               if any(i["stock_id"] == entry["stock_id"] and i["stock_code"] == entry["old_code"]
                                      for i in o["items"]))
        assert entry["sales_orders"] == with_old_code and with_old_code
        for order in orders.values():
            for line in order["items"]:
                if line["stock_id"] == entry["stock_id"] and order["order_date"]:
                    placed_before = order["order_date"] < entry["renamed_at"]
                    assert line["stock_code"] == (entry["old_code"] if placed_before else entry["new_code"])
    parents = {d["parent_stock_id"] for d in stock.values()}
    for entry in faults["product_incomplete"]:
        item = stock[entry["stock_id"]]
        assert item["stock_id"] in parents
        assert item[entry["field"]] == ("0.00" if entry["field"] == "sell_price" else "")
    assert {e["field"] for e in faults["product_incomplete"]} == {"sell_price", "stock_desc"}
    for key in faults["unknown_product"]:
        assert any(i["stock_id"] not in stock for i in orders[key]["items"])


def test_stock_faults(sandbox, docs):
    check_stock_faults(sandbox[1]["faults"], docs)


def test_malformed_records(sandbox, docs):
    folder, manifest = sandbox
    faults, orders = manifest["faults"], docs["sales_order"]
    assert all(orders[k]["currency"] not in ("GBP", "EUR", "USD", "XXX") for k in faults["unknown_currency"])
    assert all(any(int(i["qty"]) < 0 for i in orders[k]["items"]) for k in faults["negative_quantity"])
    for entry in faults["missing_field"]:
        assert docs[entry["entity"]][entry["key"]][entry["field"]] == ""
    assert {e["entity"] for e in faults["missing_field"]} == {"company", "sales_order"}
    overrides = world_extras(folder)["overrides"]
    for entry in faults["broken_xml"] + faults["hostile_xml"]:
        raw = overrides[entry["entity"]][entry["key"]]
        assert str(entry["key"]).encode() in raw
        wrapper = b"COMPANYS" if entry["entity"] == "company" else b"SALES_ORDERS"
        with pytest.raises(ET.ParseError):
            ET.fromstring(b"<" + wrapper + b">" + raw + b"</" + wrapper + b">")
    assert {e["entity"] for e in faults["broken_xml"]} == {"company", "sales_order"}
    assert {e["kind"] for e in faults["hostile_xml"]} == {"entity_reference", "entity_declaration"}
    assert any(b"<!ENTITY" in overrides["company"][e["key"]] for e in faults["hostile_xml"])
    for key in faults["duplicate_in_response"]["company"]:
        assert key in docs["company"]
    for key in faults["duplicate_in_response"]["sales_order"]:
        assert key in orders and key not in excluded(manifest)
    assert len(excluded(manifest)) <= 0.05 * len(orders)


def test_malformed_faults_stay_apart(sandbox):
    faults = sandbox[1]["faults"]
    order_sets = {kind: set(faults[kind]) for kind in MALFORMED_ORDER_KINDS}
    order_sets["missing_field"] = {e["key"] for e in faults["missing_field"] if e["entity"] == "sales_order"}
    order_sets["broken_xml"] = {e["key"] for e in faults["broken_xml"] if e["entity"] == "sales_order"}
    order_sets["serve_twice"] = set(faults["duplicate_in_response"]["sales_order"])
    order_sets["ometria_duplicate"] = {e["sorder_id"] for e in faults["ometria_duplicate_order"]}
    order_sets["renamed"] = {k for e in faults["renamed_stock_code"] for k in e["sales_orders"]}
    for kind in ("full_refund", "partial_refund", "delivery_only_refund"):
        order_sets[kind] = {e["sorder_id"] for e in faults[kind]}
    for kind in ("cancelled", "split_consignment", "back_order", "not_despatched"):
        order_sets[kind] = set(faults[kind])
    malformed = [k for k in order_sets if k in MALFORMED_ORDER_KINDS + ("missing_field", "broken_xml", "serve_twice")]
    for kind in malformed:
        for other, keys in order_sets.items():
            if other != kind:
                assert not order_sets[kind] & keys, (kind, other)
    company_sets = {"bad_email": {e["company_id"] for e in faults["bad_email"]},
                    "no_contacts": set(faults["company_without_contacts"]),
                    "missing": {e["key"] for e in faults["missing_field"] if e["entity"] == "company"},
                    "broken": {e["key"] for e in faults["broken_xml"] if e["entity"] == "company"},
                    "hostile": {e["key"] for e in faults["hostile_xml"]},
                    "serve_twice": set(faults["duplicate_in_response"]["company"]),
                    "shared": {m["company_id"] for g in faults["shared_email"] for m in g["contacts"]},
                    "unsubscribed": {e["company_id"] for e in faults["ometria_unsubscribed"]}}
    for kind, keys in company_sets.items():
        for other, other_keys in company_sets.items():
            if other != kind:
                assert not keys & other_keys, (kind, other)


def check_order_state_faults(faults: dict, docs: dict) -> None:
    orders = docs["sales_order"]
    for key in faults["split_consignment"]:
        assert issued_count(orders[key]) >= 2
    for key in faults["back_order"]:
        assert 1 <= issued_count(orders[key]) < len(orders[key]["invoices"])
    assert any(i["stage_id"] == 18 for k in faults["back_order"] for i in orders[k]["invoices"])
    for key in faults["not_despatched"]:
        assert issued_count(orders[key]) == 0 and not orders[key]["cancelled"]
    for key in faults["cancelled"]:
        assert orders[key]["cancelled"] and issued_count(orders[key]) == 0
    notes = docs["credit_note"]
    for entry in faults["full_refund"]:
        order = orders[entry["sorder_id"]]
        refunded = defaultdict(int)
        for credit_id in entry["credit_ids"]:
            for line in notes[credit_id]["lines"]:
                refunded[line["sorder_item_id"]] += int(line["qty"])
        assert dict(refunded) == {i["sorder_item_id"]: int(i["qty"]) for i in order["items"]}
        assert sum(money(notes[c]["total"]) for c in entry["credit_ids"]) == money(order["order_amount"])
    for entry in faults["partial_refund"]:
        total = sum(money(notes[c]["total"]) for c in entry["credit_ids"])
        assert 0 < total < money(orders[entry["sorder_id"]]["order_amount"])
    for entry in faults["delivery_only_refund"]:
        for credit_id in entry["credit_ids"]:
            assert notes[credit_id]["lines"] == [] and money(notes[credit_id]["delivery_refund"]) > 0


def test_order_state_and_refund_faults(sandbox, docs):
    check_order_state_faults(sandbox[1]["faults"], docs)


def test_ometria_side_faults(sandbox, docs):
    check_ometria_side(sandbox[0], sandbox[1], docs)


def check_ometria_side(folder: Path, manifest: dict, docs: dict) -> None:
    seeds = world_extras(folder)["seeds"]
    orders = docs["sales_order"]
    for entry in manifest["faults"]["ometria_duplicate_order"]:
        order = orders[entry["sorder_id"]]
        assert issued_count(order) >= 2
        assert entry["ometria_ids"] == [f"INV-{i['invoice_code']}" for i in order["invoices"]]
        grand = sum(Decimal(repr(seeds[i]["grand_total"])) for i in entry["ometria_ids"])
        assert grand == money(order["order_amount"])
        for ident in entry["ometria_ids"]:
            seed = seeds[ident]
            assert seed["currency"] == order["currency"] and seed["timestamp"].endswith("Z")
            parts = sum(Decimal(repr(seed[k])) for k in ("subtotal", "discount", "tax", "shipping"))
            assert parts == Decimal(repr(seed["grand_total"]))
    refs = {o["associated_ref"] for o in orders.values()}
    for ident in manifest["faults"]["ometria_storefront_order"]:
        assert ident in seeds and ident not in refs and seeds[ident]["@type"] == "order"
    assert len(seeds) == sum(len(e["ometria_ids"]) for e in manifest["faults"]["ometria_duplicate_order"]) + len(
        manifest["faults"]["ometria_storefront_order"])


def test_dst_edge_orders(sandbox, docs):
    faults, orders = sandbox[1]["faults"], docs["sales_order"]
    assert [orders[k]["order_date"] for k in faults["dst_ambiguous"]] == ["2026-10-25T01:30:00"]
    assert [orders[k]["order_date"] for k in faults["dst_gap_adjacent"]] == ["2026-03-29T00:59:00",
                                                                           "2026-03-29T02:00:00"]
    in_gap = [o for o in orders.values() if o["order_date"].startswith("2026-03-29T01:")]
    in_repeat = [o["sorder_id"] for o in orders.values() if o["order_date"].startswith("2026-10-25T01:")]
    assert in_gap == [] and in_repeat == faults["dst_ambiguous"]


def test_no_dst_faults_outside_the_changeovers(tmp_path):
    manifest = generate(tmp_path, customers=30, orders=120, start=date(2026, 5, 1), end=date(2026, 6, 30))
    assert manifest["faults"]["dst_ambiguous"] == manifest["faults"]["dst_gap_adjacent"] == []
    assert sorted(manifest["monthly_totals"]) == ["2026-05", "2026-06"]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=10**6), customers=st.integers(25, 40),
       orders=st.integers(100, 160))
def test_tiny_worlds_still_plant_every_fault(tmp_path_factory, seed, customers, orders):
    folder = tmp_path_factory.mktemp("tiny")
    manifest = generate(folder, seed=seed, customers=customers, orders=orders)
    docs = load(folder)
    check_faults_present(manifest)
    check_orders(manifest, docs)
    check_credit_notes(manifest, docs)
    check_order_state_faults(manifest["faults"], docs)
    check_stock_faults(manifest["faults"], docs)
    check_ometria_side(folder, manifest, docs)
    assert manifest["monthly_totals"] == recompute_monthly_totals(manifest, docs)


# -- advance ---------------------------------------------------------------------------
def test_advance_moves_the_clock_and_lists_exactly_what_changed(advanced):
    folder, summary, before = advanced
    after = load(folder)
    manifest = load_manifest(folder)
    assert summary["from"] == "2026-10-31T23:59:59" and summary["to"] == "2026-11-10T23:59:59"
    assert manifest["clock"] == summary["to"] and world_extras(folder)["meta"]["clock"] == summary["to"]
    assert {k: manifest["last_advance"][k] for k in ("days", "from", "to", "changed")} == {
        k: summary[k] for k in ("days", "from", "to", "changed")}
    for entity in ENTITIES:
        moved = sorted(key for key, doc in after[entity].items() if doc["updated"] > summary["from"])
        assert summary["changed"][entity] == moved, entity
        for key, doc in after[entity].items():
            if key not in moved:
                assert before[entity][key] == doc, (entity, key)
            else:
                assert summary["from"] < doc["updated"] <= summary["to"]
    assert summary["changed"]["sales_order"] and summary["changed"]["credit_note"]
    assert summary["changed"]["company"]


def test_advance_keeps_the_world_consistent(advanced):
    folder, summary, before = advanced
    manifest, docs = load_manifest(folder), load(folder)
    check_counts(folder, manifest, docs)
    check_orders(manifest, docs)
    check_credit_notes(manifest, docs)
    check_csv(folder, docs)
    check_order_state_faults(manifest["faults"], docs)
    check_stock_faults(manifest["faults"], docs)
    check_identity_and_consent_faults(folder, manifest["faults"], docs)
    assert manifest["monthly_totals"] == recompute_monthly_totals(manifest, docs)
    assert "2026-11" in manifest["monthly_totals"]
    assert manifest["counts"]["sales_orders"] > len(before["sales_order"])


def test_advance_despatches_waiting_orders_and_raises_refunds(advanced):
    folder, summary, before = advanced
    after = load(folder)
    waiting = [k for k, o in before["sales_order"].items() if not o["cancelled"] and issued_count(o) == 0]
    assert any(issued_count(after["sales_order"][k]) > 0 for k in waiting)
    new_notes = [after["credit_note"][k] for k in summary["changed"]["credit_note"]]
    assert {"full", "partial"} <= {"full" if n["total"] == after["sales_order"][n["sorder_id"]]["order_amount"]
                                   else "partial" for n in new_notes}
    opted_out = [k for k in summary["changed"]["company"] if k in before["company"]]
    assert opted_out and all(after["company"][k]["mailing_status"] == 6 for k in opted_out)


def test_advance_renames_a_stock_code_now_and_then(tmp_path, sandbox):
    folder = tmp_path / "renames"
    shutil.copytree(sandbox[0], folder)
    renamed_before = len(sandbox[1]["faults"]["renamed_stock_code"])
    for _ in range(6):
        advance(folder, 30)
    manifest, docs = load_manifest(folder), load(folder)
    assert len(manifest["faults"]["renamed_stock_code"]) > renamed_before
    check_stock_faults(manifest["faults"], docs)


def test_advance_needs_a_world(tmp_path):
    with pytest.raises(FileNotFoundError):
        advance(tmp_path, 1)
