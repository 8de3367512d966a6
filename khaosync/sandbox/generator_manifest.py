"""What the sandbox holds, recomputed from the World: counts, derived faults, monthly totals, and
the credit-note CSV export.

``generate`` and ``advance`` both finish here, so the manifest always describes the World as it
is, never as the generator meant it to be. Only the planted faults (which no document can
reveal on its own: a rename's orders, a malformed record's reason) are passed in.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from khaosync.sandbox.generator_catalogue import style_parent_ids
from khaosync.sandbox.generator_people import OPT_OUT_STATUSES
from khaosync.sandbox.world import World, dumps

CSV_COLUMNS = ("CREDIT_ID", "CREDIT_CODE", "SORDER_ID", "SORDER_CODE", "ASSOCIATED_REF", "ISSUED", "CURRENCY",
               "REASON", "SORDER_ITEM_ID", "STOCK_CODE", "QTY", "VALUE", "DELIVERY_REFUND", "TOTAL")
CREDIT_CSV = Path("exports") / "credit_notes.csv"
MANIFEST = "manifest.json"
ZERO = Decimal("0.00")


@dataclass
class _Refunds:
    """Every credit note raised against one order, summed."""

    credit_ids: list[int] = field(default_factory=list)
    total: Decimal = ZERO
    delivery: Decimal = ZERO
    qty: dict[int, int] = field(default_factory=dict)
    lines: int = 0


@dataclass
class _Month:
    orders: int = 0
    cancelled: int = 0
    despatched: int = 0
    gross: Decimal = ZERO
    refunds: Decimal = ZERO
    units: int = 0
    customers: set[int] = field(default_factory=set)

    def as_strings(self) -> dict[str, str]:
        return {"orders": str(self.orders), "cancelled": str(self.cancelled), "despatched": str(self.despatched),
                "gross": str(self.gross), "refunds": str(self.refunds), "net": str(self.gross - self.refunds),
                "units": str(self.units), "customers": str(len(self.customers))}


def excluded_orders(planted: dict) -> list[int]:
    """Malformed orders: a correct pipeline holds them back, so they are not in the totals."""
    keys: list[int] = []
    for kind in ("unknown_currency", "negative_quantity", "total_mismatch", "unknown_product"):
        keys.extend(planted[kind])
    for kind in ("missing_field", "broken_xml"):
        keys.extend(entry["key"] for entry in planted[kind] if entry["entity"] == "sales_order")
    return sorted(set(keys))


def malformed_companies(planted: dict) -> list[int]:
    keys = [entry["company_id"] for entry in planted["bad_email"]] + list(planted["company_without_contacts"])
    for kind in ("missing_field", "broken_xml", "hostile_xml"):
        keys.extend(entry["key"] for entry in planted[kind] if entry["entity"] == "company")
    return sorted(set(keys))


def write_credit_notes_csv(world: World, folder: Path) -> dict[int, _Refunds]:
    """Write ``exports/credit_notes.csv`` (one row per line, the delivery-only note as one row with
    empty line columns) and return the refunds per order it contains."""
    path = folder / CREDIT_CSV
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".csv.partial")
    refunds: dict[int, _Refunds] = {}
    with partial.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for note in world.iter("credit_note"):
            head = [note["credit_id"], note["credit_code"], note["sorder_id"], note["sorder_code"],
                    note["associated_ref"], note["issued"], note["currency"], note["reason"]]
            tail = [note["delivery_refund"], note["total"]]
            lines = sorted(note["lines"], key=lambda line: line["sorder_item_id"])
            for line in lines:
                writer.writerow(head + [line["sorder_item_id"], line["stock_code"], line["qty"], line["value"]] + tail)
            if not lines:
                writer.writerow(head + ["", "", "", ""] + tail)
            summary = refunds.setdefault(note["sorder_id"], _Refunds())
            summary.credit_ids.append(note["credit_id"])
            summary.total += Decimal(note["total"])
            summary.delivery += Decimal(note["delivery_refund"])
            summary.lines += len(lines)
            for line in lines:
                summary.qty[line["sorder_item_id"]] = summary.qty.get(line["sorder_item_id"], 0) + int(line["qty"])
    os.replace(partial, path)
    return refunds


def _refund_kind(order: dict, refunds: _Refunds) -> str:
    if refunds.lines == 0:
        return "delivery_only_refund"
    every_line = all(refunds.qty.get(item["sorder_item_id"], 0) >= int(item["qty"]) for item in order["items"])
    if every_line and refunds.delivery >= Decimal(order["delivery_gross"]):
        return "full_refund"
    return "partial_refund"


def _despatch_kinds(order: dict) -> list[str]:
    if order["cancelled"]:
        return ["cancelled"]
    issued = sum(1 for invoice in order["invoices"] if invoice["issued"] is not None)
    waiting = len(order["invoices"]) - issued
    kinds = []
    if issued == 0:
        kinds.append("not_despatched")
    if issued >= 2:
        kinds.append("split_consignment")
    if issued >= 1 and waiting >= 1:
        kinds.append("back_order")
    return kinds


def describe(world: World, folder: Path, planted: dict, last_advance: dict | None) -> dict:
    """Build the manifest from the World (and rewrite the credit-note CSV on the way)."""
    refunds = write_credit_notes_csv(world, folder)
    excluded = set(excluded_orders(planted))
    counts: dict[str, int] = {}
    derived: dict[str, list] = {kind: [] for kind in (
        "cancelled", "not_despatched", "split_consignment", "back_order",
        "full_refund", "partial_refund", "delivery_only_refund", "consent_opted_out", "consent_blank")}
    _scan_companies(world, planted, counts, derived)
    _scan_stock(world, counts)
    months = _scan_orders(world, refunds, excluded, counts, derived)
    counts["credit_notes"] = world.count("credit_note")
    counts["credit_note_lines"] = sum(summary.lines for summary in refunds.values())
    counts["ometria_seed_orders"] = sum(1 for kind, _, _ in world.ometria_seeds() if kind == "order")
    counts["ometria_unsubscribes"] = sum(1 for _ in world.ometria_unsubscribes())
    faults = dict(planted)
    faults.update(derived)
    monthly = {month: {currency: totals.as_strings() for currency, totals in sorted(by_currency.items())}
               for month, by_currency in sorted(months.items())}
    return {
        "seed": world.get_meta("seed"),
        "params": world.get_meta("params"),
        "clock": world.clock,
        "counts": counts,
        "faults": faults,
        "excluded_from_totals": sorted(excluded),
        "monthly_totals": monthly,
        "last_advance": last_advance,
    }


def _scan_companies(world: World, planted: dict, counts: dict, derived: dict) -> None:
    malformed = set(malformed_companies(planted))
    companies = contacts = addresses = 0
    for company in world.iter("company"):
        companies += 1
        contacts += len(company["contacts"])
        addresses += len(company["addresses"])
        if company["company_id"] in malformed:
            continue
        if company["mailing_status"] in OPT_OUT_STATUSES:
            derived["consent_opted_out"].append(company["company_id"])
        elif company["mailing_status"] is None:
            derived["consent_blank"].append(company["company_id"])
    counts.update(companies=companies, contacts=contacts, addresses=addresses)


def _scan_stock(world: World, counts: dict) -> None:
    docs = list(world.iter("stock_item"))  # the catalogue is thousands of items, not millions
    parents = style_parent_ids(docs)
    counts.update(stock_items=len(docs), stock_parents=len(parents),
                  stock_variants=sum(1 for doc in docs if doc["parent_stock_id"] is not None))


def _scan_orders(world: World, refunds: dict[int, _Refunds], excluded: set[int], counts: dict,
                 derived: dict) -> dict[str, dict[str, _Month]]:
    months: dict[str, dict[str, _Month]] = {}
    orders = lines = invoices = 0
    for order in world.iter("sales_order"):
        orders += 1
        lines += len(order["items"])
        invoices += len(order["invoices"])
        sorder_id = order["sorder_id"]
        if sorder_id in excluded:
            continue
        kinds = _despatch_kinds(order)
        for kind in kinds:
            derived[kind].append(sorder_id)
        summary = refunds.get(sorder_id)
        if summary is not None:
            derived[_refund_kind(order, summary)].append({"sorder_id": sorder_id, "credit_ids": summary.credit_ids})
        totals = months.setdefault(order["order_date"][:7], {}).setdefault(order["currency"], _Month())
        totals.orders += 1
        if order["cancelled"]:
            totals.cancelled += 1
            continue
        if "not_despatched" not in kinds:
            totals.despatched += 1
        totals.gross += Decimal(order["order_amount"])
        totals.refunds += summary.total if summary is not None else ZERO
        totals.units += sum(int(item["qty"]) for item in order["items"])
        totals.customers.add(order["company_id"])
    counts.update(sales_orders=orders, order_lines=lines, invoices=invoices)
    return months


def load_manifest(folder: Path) -> dict:
    return json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))


def publish(folder: Path, planted: dict, last_advance: dict | None) -> dict:
    """Describe the World in ``manifest.json`` (and the credit-note CSV) and return the manifest."""
    world = World(folder)
    try:
        manifest = describe(world, folder, planted, last_advance)
    finally:
        world.close()
    partial = folder / (MANIFEST + ".partial")
    partial.write_text(dumps(manifest) + "\n", encoding="utf-8")
    partial.replace(folder / MANIFEST)
    return manifest
