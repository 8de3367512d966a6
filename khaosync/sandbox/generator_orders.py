"""Sales orders, their invoices (one per despatch) and the credit notes raised against them.

An order's life, as the Sales Invoice Manager shows it:

- placed: 1-5 lines, UK VAT at 20% (``price_gross = price_net * 1.2`` to the penny), a delivery
  charge unless it qualified for free delivery, line discounts from a promotion code or a sale;
- despatched: usually one invoice; sometimes split into 2-3 consignments; sometimes a
  back-order (what was in stock goes first, the rest waits at stage 18 "Future Stock");
  an invoice planned after the world's clock is not issued yet (stage 9/12/13);
- cancelled: one invoice at stage 1, nothing despatched;
- refunded: a credit note issued after despatch, for the whole order, some lines or
  quantities, or just the delivery charge, and never more than was despatched.

Money is ``Decimal`` throughout, written as strings with two decimals; quantities as integer
strings. Planted order faults are chosen by the caller (see ``generator.py``) and applied here.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from random import Random

from khaosync.sandbox.generator_calendar import after, between, kc, utc_z, working_hours
from khaosync.sandbox.generator_catalogue import Catalogue, Sellable, gross_of, pennies
from khaosync.sandbox.generator_people import ContactRef, Customer, weighted
from khaosync.sandbox.world import World

FIRST_SORDER_ID = 2001
FIRST_ITEM_ID = 90001
FIRST_INVOICE_ID = 40001
FIRST_CREDIT_ID = 60001
UNKNOWN_STOCK_ID = 990001  # beyond any generated stock id: the "unknown product" lines point here
UNKNOWN_CURRENCY = "ZZZ"  # not in ISO 4217 (unlike "XXX", which is)
TAX_RATE = "20"
ZERO = Decimal("0.00")

STAGES = {1: "Cancelled", 9: "Released", 12: "Picking", 13: "Packing", 16: "Issue Invoices",
          18: "Future Stock", 70: "Issued (current)"}
COURIERS = {"48HR": "Royal Mail Tracked 48", "24HR": "Metapack 24Hr", "NDAY": "DPD Next Day",
            "INTL": "DHL Express International"}
_DELIVERY_NET_GBP = {"48HR": Decimal("3.32"), "24HR": Decimal("4.99"), "NDAY": Decimal("6.66"),
                     "INTL": Decimal("10.00")}
_FREE_DELIVERY_FROM_GBP = Decimal("50.00")  # standard delivery is free on goods over this
_FX_FROM_GBP = {"GBP": Decimal("1"), "EUR": Decimal("1.16"), "USD": Decimal("1.27")}
_KEYCODES = (("SPRING10", Decimal("0.10")), ("WELCOME15", Decimal("0.15")), ("VIP20", Decimal("0.20")),
             ("FRIENDS25", Decimal("0.25")))
_SALE_DISCOUNTS = (Decimal("0.10"), Decimal("0.15"), Decimal("0.20"), Decimal("0.25"))
_REASONS = {
    "full": ("Changed mind", "Faulty", "Not as described", "Arrived damaged"),
    "partial": ("Wrong size", "Faulty", "Changed mind", "Colour not as pictured"),
    "delivery_only": ("Late delivery", "Courier missed the delivery date"),
}

MALFORMED_ORDER_ROLES = ("unknown_currency", "negative_quantity", "missing_order_date", "broken_xml",
                         "total_mismatch", "unknown_product")
# Roles whose orders stay simple (one despatch, no refund) so each planted fault is seen alone.
_PLAIN_ROLES = MALFORMED_ORDER_ROLES + ("serve_twice",)
_FORCED_REFUNDS = {"refund_full": "full", "refund_partial": "partial", "refund_delivery": "delivery_only"}


@dataclass(slots=True)
class OrderPlan:
    """What the caller wants from one order: a planted fault or a forced life, and SKUs to include."""

    role: str | None = None
    force_stock_id: int | None = None
    dst: str | None = None  # "ambiguous" or "gap_adjacent": the order time was planted on a DST edge


@dataclass(slots=True)
class _Line:
    item_id: int
    stock_id: int
    sellable: Sellable | None  # None for the planted unknown product
    code: str
    qty: int
    price_net: Decimal
    price_gross: Decimal
    discount: Decimal

    @property
    def value(self) -> Decimal:
        """What the line cost the customer, gross, after its discount."""
        return self.qty * self.price_gross - self.discount

    def refund_value(self, qty: int) -> Decimal:
        """The gross value of refunding ``qty`` of this line: its share of the discount goes too."""
        if qty == self.qty:
            return self.value
        return pennies(qty * self.price_gross - pennies(self.discount * qty / self.qty))


@dataclass
class BuiltOrder:
    doc: dict
    credits: list[tuple[str, int, dict]] = field(default_factory=list)  # (issued, sorder_id, doc without id)
    ometria_seeds: list[tuple[str, dict]] = field(default_factory=list)
    old_code_stock_ids: list[int] = field(default_factory=list)  # renamed SKUs ordered under their old code


def money(value: Decimal) -> str:
    return str(pennies(value))


def json_number(value: Decimal) -> float:
    """Ometria's wire format has one number type; a 2-dp value round-trips exactly through repr."""
    return float(pennies(value))


class OrderFactory:
    """Builds one sales order (and what follows from it) at a time, as of the world's clock."""

    def __init__(self, rng: Random, catalogue: Catalogue, ids: dict[str, int], clock: datetime,
                 *, ometria_duplicates: bool = True):
        self.rng = rng
        # The earlier integration that keyed Ometria orders on invoices is gone once khaosync
        # runs: only orders from before the sandbox's first clock can have its duplicates.
        self.ometria_duplicates = ometria_duplicates
        self.catalogue = catalogue
        self.ids = ids
        self.clock = clock
        self.unknown_products = 0

    def _next(self, counter: str) -> int:
        value = self.ids[counter]
        self.ids[counter] = value + 1
        return value

    # -- the order ---------------------------------------------------------------------
    def build(self, placed: datetime, customer: Customer, plan: OrderPlan | None = None) -> BuiltOrder:
        """One order placed at ``placed``, with its despatches, cancellation and refund up to the clock."""
        plan = plan or OrderPlan()
        contact = self._contact(customer)
        doc, lines, delivery_net = self._placed(placed, customer, contact, plan)
        built = BuiltOrder(doc)
        placed_text = kc(placed)
        built.old_code_stock_ids = [line.stock_id for line in lines if line.sellable is not None
                                    and line.sellable.renamed_at is not None and placed_text < line.sellable.renamed_at]
        fate = self._fate(plan, lines)
        self._despatch_or_cancel(doc, fate, placed, lines, designated=plan.role is not None)
        delivery_gross = Decimal(doc["delivery_gross"])
        if fate != "cancelled" and plan.role not in _PLAIN_ROLES and plan.role != "ometria_duplicate":
            credit = self._credit(doc, lines, delivery_gross, plan.role)
            if credit is not None:
                built.credits.append(credit)
        if fate == "split" and all(inv["issued"] for inv in doc["invoices"]):
            chance = self.ometria_duplicates and plan.role is None and self.rng.random() < 0.2
            if plan.role == "ometria_duplicate" or chance:
                built.ometria_seeds = self._ometria_duplicates(doc, lines, customer, contact, delivery_net,
                                                               delivery_gross)
        return built

    def _placed(self, placed: datetime, customer: Customer, contact: ContactRef | None,
                plan: OrderPlan) -> tuple[dict, list[_Line], Decimal]:
        """The order as KC records it when it is placed: header, lines, delivery, totals."""
        rng, role = self.rng, plan.role
        sorder_id = self._next("sales_order")
        placed_text = kc(placed)
        fx = _FX_FROM_GBP.get(customer.currency, Decimal("1"))
        source = weighted(rng, (("Web", 0.85), ("Phone", 0.08), ("Amazon", 0.07)))
        keycode, keycode_pct = "", None
        if source == "Web" and rng.random() < 0.12:
            keycode, keycode_pct = rng.choice(_KEYCODES)
        lines = self._lines(placed_text, plan, fx, keycode_pct)
        courier = self._courier(customer.country)
        delivery_net = self._delivery_net(courier, lines, fx, force_charge=role == "refund_delivery")
        delivery_gross = gross_of(delivery_net)
        order_amount = sum((line.value for line in lines), ZERO) + delivery_gross
        if role == "total_mismatch":
            order_amount += Decimal("0.01")  # the ERP's header total disagrees with its own lines
        doc = {
            "sorder_id": sorder_id,
            "sorder_code": f"SO{sorder_id:05d}",
            "associated_ref": self._associated_ref(source, sorder_id),
            "company_id": customer.company_id,
            "company_code": customer.company_code,
            "contact_id": contact.contact_id if contact else None,
            "web_user": customer.web_user,
            "order_date": "" if role == "missing_order_date" else placed_text,
            "currency": UNKNOWN_CURRENCY if role == "unknown_currency" else customer.currency,
            "site": "1",
            "sales_source": source,
            "website_name": {"Web": "shop", "Amazon": "amazon"}.get(source, ""),
            "courier_code": courier,
            "keycode_code": keycode,
            "delivery_net": money(delivery_net),
            "delivery_tax": money(delivery_gross - delivery_net),
            "delivery_gross": money(delivery_gross),
            "order_amount": money(order_amount),
            "cancelled": False,
            "updated": placed_text,
            "items": [self._item_doc(line) for line in lines],
            "invoices": [],
        }
        return doc, lines, delivery_net

    def _despatch_or_cancel(self, doc: dict, fate: str, placed: datetime, lines: list[_Line],
                            designated: bool) -> None:
        """Add the invoices, cancel if that is the order's fate, and date the latest event."""
        despatches = self._despatch_plan(fate, placed, lines, designated)
        cancelled_at = None
        if fate == "cancelled":
            cancelled_at = after(self.rng, placed, timedelta(minutes=10), timedelta(hours=12))
            if cancelled_at > self.clock:
                cancelled_at = between(self.rng, placed, self.clock)
            doc["cancelled"] = True
        self._invoices(doc, despatches, doc["courier_code"], placed, cancelled_at)
        events = [kc(placed)] + [inv["issued"] for inv in doc["invoices"] if inv["issued"]]
        if cancelled_at is not None:
            events.append(kc(cancelled_at))
        doc["updated"] = max(events)

    def _contact(self, customer: Customer) -> ContactRef | None:
        if not customer.contacts:
            return None
        if len(customer.contacts) == 1 or self.rng.random() < 0.8:
            return customer.contacts[0]
        return self.rng.choice(customer.contacts)

    def _associated_ref(self, source: str, sorder_id: int) -> str:
        if source == "Web":
            return f"WEB-{100000 + sorder_id}"
        if source == "Amazon":
            rng = self.rng
            return f"{rng.randrange(200, 210)}-{rng.randrange(10**7):07d}-{rng.randrange(10**7):07d}"
        return ""  # phone orders carry no external reference

    # -- lines -------------------------------------------------------------------------
    def _lines(self, placed_text: str, plan: OrderPlan, fx: Decimal, keycode_pct: Decimal | None) -> list[_Line]:
        rng = self.rng
        count = weighted(rng, ((1, 0.45), (2, 0.28), (3, 0.15), (4, 0.08), (5, 0.04)))
        if plan.role in ("split", "ometria_duplicate", "refund_partial", "back_order_open"):
            count = max(count, 2)  # something to split or to refund only part of
        chosen: list[Sellable] = []
        if plan.force_stock_id is not None:
            chosen.append(self.catalogue.by_id[plan.force_stock_id])
        # Planted malformed orders leave renamed SKUs alone, so each fault is seen on its own.
        avoid_renamed = plan.role in _PLAIN_ROLES
        attempts = 0
        while len(chosen) < count and attempts < count * 10:
            attempts += 1
            sellable = self.catalogue.pick(rng)
            if sellable not in chosen and not (avoid_renamed and sellable.renamed_at is not None):
                chosen.append(sellable)
        if not chosen:
            chosen.append(next(s for s in self.catalogue.sellables if s.renamed_at is None))
        on_sale = keycode_pct is None and rng.random() < 0.06
        lines = []
        for sellable in chosen:
            qty = weighted(rng, ((1, 0.8), (2, 0.15), (3, 0.05)))
            net = pennies(sellable.net_gbp * fx)
            gross = gross_of(net)
            pct = keycode_pct if keycode_pct is not None else (rng.choice(_SALE_DISCOUNTS) if on_sale else None)
            discount = pennies(qty * gross * pct) if pct is not None else ZERO
            lines.append(_Line(self._next("sorder_item"), sellable.stock_id, sellable, sellable.code_at(placed_text),
                               qty, net, gross, discount))
        if plan.role == "negative_quantity":
            lines[0].qty = -2
            lines[0].discount = ZERO
        if plan.role == "unknown_product":
            self._make_unknown(lines[-1], fx)
        return lines

    def _make_unknown(self, line: _Line, fx: Decimal) -> None:
        """Point a line at a SKU KC no longer has (deleted, or typed in by hand)."""
        self.unknown_products += 1
        line.stock_id = UNKNOWN_STOCK_ID + self.unknown_products - 1
        line.code = f"DISC-{self.unknown_products:04d}"
        line.sellable = None
        line.price_net = pennies(Decimal("10.00") * fx)
        line.price_gross = gross_of(line.price_net)
        line.discount = ZERO

    def _item_doc(self, line: _Line) -> dict:
        desc = line.sellable.desc if line.sellable is not None else "Discontinued item"
        return {
            "sorder_item_id": line.item_id, "stock_id": line.stock_id, "stock_code": line.code, "stock_desc": desc,
            "qty": str(line.qty), "price_net": money(line.price_net), "price_gross": money(line.price_gross),
            "tax_rate": TAX_RATE, "discount": money(line.discount),
        }

    # -- delivery ----------------------------------------------------------------------
    def _courier(self, country: str) -> str:
        if country != "GB":
            return "INTL"
        return weighted(self.rng, (("48HR", 0.6), ("24HR", 0.3), ("NDAY", 0.1)))

    def _delivery_net(self, courier: str, lines: list[_Line], fx: Decimal, force_charge: bool) -> Decimal:
        goods = sum((line.value for line in lines), ZERO)
        if courier == "48HR" and goods >= _FREE_DELIVERY_FROM_GBP * fx and not force_charge:
            return ZERO
        return pennies(_DELIVERY_NET_GBP[courier] * fx)

    # -- despatch ----------------------------------------------------------------------
    def _fate(self, plan: OrderPlan, lines: list[_Line]) -> str:
        role = plan.role
        if role in _PLAIN_ROLES or (role or "").startswith("refund_") or role == "renamed":
            return "single"
        if role == "cancelled":
            return "cancelled"
        if role in ("split", "ometria_duplicate"):
            return "split"
        if role in ("back_order_open", "pending"):
            return role
        splittable = sum(line.qty for line in lines if line.qty > 0) >= 2
        roll = self.rng.random()
        if roll < 0.02:
            return "cancelled"
        if splittable and roll < 0.07:
            return "split"
        if splittable and roll < 0.105:
            return "back_order"
        return "single"

    def _lag(self, designated: bool) -> timedelta:
        """Order (or previous despatch) to despatch: same day, next day, or a few days."""
        rng = self.rng
        if designated:
            return timedelta(seconds=rng.randint(2 * 3600, 20 * 3600))
        low, high = weighted(rng, (((2, 8), 0.3), ((16, 40), 0.5), ((40, 96), 0.2)))
        return timedelta(seconds=rng.randint(low * 3600, high * 3600))

    def _despatch_plan(self, fate: str, placed: datetime, lines: list[_Line],
                       designated: bool) -> list[tuple[dict[int, int], datetime | None, str]]:
        """Invoices as (quantities per order line, planned issue time or None, kind)."""
        rng = self.rng
        everything = {line.item_id: line.qty for line in lines}
        if fate == "cancelled":
            return [(everything, None, "cancelled")]
        first = working_hours(placed + self._lag(designated))
        if fate == "pending":
            return [(everything, None, "first")]  # still in the warehouse at the clock
        if fate == "single":
            return [(everything, first, "first")]
        if fate == "split":
            parts = _split_units(rng, lines, rng.choice((2, 2, 3)))
            plan: list[tuple[dict[int, int], datetime | None, str]] = []
            when = first
            for n, part in enumerate(parts):
                plan.append((part, when, "first" if n == 0 else "split"))
                when = working_hours(after(rng, when, timedelta(hours=3), timedelta(hours=20 if designated else 72)))
            return plan
        # a back-order: what is in stock goes now, the rest when stock arrives (or not yet)
        now_part, later_part = _split_units(rng, lines, 2)
        later: datetime | None = None
        if fate == "back_order" and rng.random() < 0.95:
            later = working_hours(after(rng, first, timedelta(days=5), timedelta(days=25)))
        return [(now_part, first, "first"), (later_part, later, "back")]

    def _invoices(self, doc: dict, despatches: list, courier: str, placed: datetime,
                  cancelled_at: datetime | None) -> None:
        for part, planned, kind in despatches:
            invoice_id = self._next("invoice")
            issued = planned if planned is not None and planned <= self.clock else None
            if cancelled_at is not None:
                stage = 1
            elif issued is not None:
                # Recent despatches still sit at "Issue Invoices"; older ones have been archived.
                recent = self.clock - issued < timedelta(days=7)
                stage = 16 if recent or self.rng.random() < 0.15 else 70
            elif kind == "back":
                stage = 18
            else:
                age = self.clock - placed
                stage = 9 if age < timedelta(hours=6) else 12 if age < timedelta(hours=30) else 13
            doc["invoices"].append({
                "invoice_id": invoice_id, "invoice_code": f"INV{invoice_id}", "stage_id": stage,
                "stage_desc": STAGES[stage], "issued": kc(issued) if issued is not None else None,
                "consignment_ref": f"CN-{invoice_id}" if issued is not None else "",
                "courier_code": courier, "courier_name": COURIERS[courier],
                "tracking_number": tracking_number(self.rng, courier) if issued is not None else "",
                "items": [{"sorder_item_id": item_id, "qty": str(qty)} for item_id, qty in part.items()],
            })

    # -- refunds -----------------------------------------------------------------------
    def _credit(self, doc: dict, lines: list[_Line], delivery_gross: Decimal,
                role: str | None) -> tuple[str, int, dict] | None:
        rng = self.rng
        forced = _FORCED_REFUNDS.get(role or "")
        roll = rng.random()
        kind = forced or ("full" if roll < 0.025 else "partial" if roll < 0.075
                          else "delivery_only" if roll < 0.082 else None)
        if kind is None:
            return None
        return plan_credit(rng, doc, lines, delivery_gross, kind, self.clock,
                           designated=forced is not None, window_start=None)

    # -- Ometria's side ----------------------------------------------------------------
    def _ometria_duplicates(self, doc: dict, lines: list[_Line], customer: Customer, contact: ContactRef | None,
                            delivery_net: Decimal, delivery_gross: Decimal) -> list[tuple[str, dict]]:
        """An earlier integration sent one Ometria order per invoice, keyed on the invoice code."""
        by_item = {line.item_id: line for line in lines}
        shipped_before: dict[int, int] = {}
        seeds = []
        for n, invoice in enumerate(doc["invoices"]):
            ometria_id = f"INV-{invoice['invoice_code']}"
            lineitems, subtotal, tax, discount = [], ZERO, ZERO, ZERO
            for entry in invoice["items"]:
                line = by_item[entry["sorder_item_id"]]
                qty = int(entry["qty"])
                before = shipped_before.get(line.item_id, 0)
                shipped_before[line.item_id] = before + qty
                # Cumulative rounding: the invoices' discount shares add up to the line's exactly.
                line_discount = (pennies(line.discount * (before + qty) / line.qty)
                                 - pennies(line.discount * before / line.qty))
                line_net, line_tax = qty * line.price_net, qty * (line.price_gross - line.price_net)
                subtotal, tax, discount = subtotal + line_net, tax + line_tax, discount + line_discount
                lineitems.append({
                    "product_id": line.code, "sku": line.code, "quantity": qty,
                    "unit_price": json_number(line.price_gross), "subtotal": json_number(line_net),
                    "tax": json_number(line_tax), "discount": json_number(line_discount),
                    "total": json_number(line_net + line_tax - line_discount),
                })
            shipping = delivery_net if n == 0 else ZERO
            tax += (delivery_gross - delivery_net) if n == 0 else ZERO
            customer_doc = {"id": str(customer.company_id)}
            if contact is not None:
                customer_doc.update(email=contact.email, firstname=contact.forename, lastname=contact.surname)
            seeds.append((ometria_id, {
                "@type": "order", "id": ometria_id, "timestamp": utc_z(invoice["issued"]),
                "currency": doc["currency"], "grand_total": json_number(subtotal - discount + tax + shipping),
                "subtotal": json_number(subtotal), "discount": json_number(-discount),
                "shipping": json_number(shipping), "tax": json_number(tax), "status": "complete",
                "is_valid": True, "customer": customer_doc, "store": "shop", "channel": "online",
                "web_id": doc["associated_ref"], "lineitems": lineitems,
            }))
        return seeds


def storefront_order(rng: Random, number: int, catalogue: Catalogue, placed: str,
                     contact: ContactRef | None) -> tuple[str, dict]:
    """An Ometria order from the web shop that never reached KC (a guest, or a known contact)."""
    picked: list[Sellable] = []
    for _ in range(rng.randint(1, 3)):
        sellable = catalogue.pick(rng)
        if sellable not in picked:
            picked.append(sellable)
    lineitems, subtotal, tax = [], ZERO, ZERO
    for sellable in picked:
        qty = rng.randint(1, 2)
        net, gross = sellable.net_gbp, gross_of(sellable.net_gbp)
        subtotal, tax = subtotal + qty * net, tax + qty * (gross - net)
        lineitems.append({"product_id": sellable.code_at(placed), "sku": sellable.code_at(placed), "quantity": qty,
                          "unit_price": json_number(gross), "subtotal": json_number(qty * net),
                          "tax": json_number(qty * (gross - net)), "discount": 0.0, "total": json_number(qty * gross)})
    ometria_id = f"SHOP-{number:06d}"
    customer = ({"email": contact.email, "firstname": contact.forename, "lastname": contact.surname} if contact
                else {"email": f"guest{number:04d}@example.net", "firstname": "Guest", "lastname": "Shopper"})
    return ometria_id, {
        "@type": "order", "id": ometria_id, "timestamp": utc_z(placed), "currency": "GBP",
        "grand_total": json_number(subtotal + tax), "subtotal": json_number(subtotal), "discount": 0.0,
        "shipping": 0.0, "tax": json_number(tax), "status": "complete", "is_valid": True, "customer": customer,
        "store": "shop", "channel": "online", "web_id": ometria_id, "lineitems": lineitems,
    }


def tracking_number(rng: Random, courier: str) -> str:
    if courier == "48HR":
        letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
        return f"{rng.choice(letters)}{rng.choice(letters)}{rng.randrange(10**9):09d}GB"
    if courier == "24HR":
        return f"JD{rng.randrange(10**9):09d}"
    if courier == "NDAY":
        return f"{rng.randrange(10**14):014d}"
    return f"{rng.randrange(10**10):010d}"


def _split_units(rng: Random, lines: list[_Line], parts: int) -> list[dict[int, int]]:
    """Cut the order's units into ``parts`` non-empty despatches, keeping line order."""
    units = [line.item_id for line in lines for _ in range(max(line.qty, 0))]
    parts = max(1, min(parts, len(units)))
    cuts = sorted(rng.sample(range(1, len(units)), parts - 1)) if parts > 1 else []
    bounds = [0] + cuts + [len(units)]
    result = []
    for low, high in zip(bounds, bounds[1:]):
        part: dict[int, int] = {}
        for item_id in units[low:high]:
            part[item_id] = part.get(item_id, 0) + 1
        result.append(part)
    return result


def line_from_item(item: dict, sellable: Sellable | None) -> _Line:
    """Rebuild an order line from its document (for ``advance``)."""
    return _Line(item["sorder_item_id"], item["stock_id"], sellable, item["stock_code"], int(item["qty"]),
                 Decimal(item["price_net"]), Decimal(item["price_gross"]), Decimal(item["discount"]))


def despatched_by(doc: dict, when: str) -> dict[int, int]:
    """Quantities per order line on invoices issued at or before ``when``."""
    shipped: dict[int, int] = {}
    for invoice in doc["invoices"]:
        if invoice["issued"] is not None and invoice["issued"] <= when:
            for entry in invoice["items"]:
                shipped[entry["sorder_item_id"]] = shipped.get(entry["sorder_item_id"], 0) + int(entry["qty"])
    return shipped


def plan_credit(rng: Random, doc: dict, lines: list[_Line], delivery_gross: Decimal, kind: str,
                clock: datetime, *, designated: bool, window_start: datetime | None) -> tuple[str, int, dict] | None:
    """A credit note of ``kind`` for a despatched order, issued no later than ``clock``.

    ``window_start`` (for ``advance``) is the earliest the note may be issued. Returns
    ``(issued, sorder_id, document)`` with the id left for the caller to assign in issue order,
    or None when the order cannot take such a refund (nothing despatched yet, too late, ...).
    """
    issued_times = sorted(inv["issued"] for inv in doc["invoices"] if inv["issued"] is not None)
    if not issued_times:
        return None
    if kind == "full" and len(issued_times) < len(doc["invoices"]):
        return None  # a full refund only once everything has gone out
    if kind == "delivery_only" and delivery_gross <= ZERO:
        return None
    anchor = datetime.fromisoformat(issued_times[-1] if kind == "full" else issued_times[0])
    earliest = max(anchor + timedelta(hours=1), window_start) if window_start else anchor + timedelta(hours=1)
    if window_start is not None:
        when = between(rng, earliest, clock)
    else:
        high = timedelta(days=5 if designated else (10 if kind == "delivery_only" else 30))
        when = working_hours(after(rng, anchor, timedelta(days=1), high))
        if when > clock:
            if not designated:
                return None
            when = between(rng, earliest, clock)
    if when > clock or when < earliest:
        return None
    when_text = kc(when)
    shipped = despatched_by(doc, when_text)
    chosen = _refund_lines(rng, lines, shipped, kind)
    if chosen is None:
        return None
    refund_lines = [{"sorder_item_id": line.item_id, "stock_code": _code_at(line, when_text),
                     "qty": str(qty), "value": money(line.refund_value(qty))} for line, qty in chosen]
    delivery_refund = delivery_gross if kind in ("full", "delivery_only") else ZERO
    total = sum((line.refund_value(qty) for line, qty in chosen), ZERO) + delivery_refund
    return when_text, doc["sorder_id"], {
        "credit_id": None, "credit_code": None, "sorder_id": doc["sorder_id"], "sorder_code": doc["sorder_code"],
        "associated_ref": doc["associated_ref"], "issued": when_text, "currency": doc["currency"],
        "reason": rng.choice(_REASONS[kind]), "delivery_refund": money(delivery_refund), "total": money(total),
        "updated": when_text, "lines": refund_lines,
    }


def _code_at(line: _Line, when: str) -> str:
    # The credit note shows the code the SKU has when the note is raised.
    return line.sellable.code_at(when) if line.sellable is not None else line.code


def _refund_lines(rng: Random, lines: list[_Line], shipped: dict[int, int],
                  kind: str) -> list[tuple[_Line, int]] | None:
    if kind == "delivery_only":
        return []
    if kind == "full":
        if any(shipped.get(line.item_id, 0) < line.qty for line in lines):
            return None
        return [(line, line.qty) for line in lines]
    candidates = [line for line in lines if shipped.get(line.item_id, 0) > 0]
    if not candidates:
        return None
    picked = sorted(rng.sample(candidates, rng.randint(1, len(candidates))), key=lambda line: line.item_id)
    lines_back = list(picked)
    quantities = [rng.randint(1, shipped[line.item_id]) for line in picked]
    if sum(quantities) >= sum(line.qty for line in lines):
        # That would be everything: give back one unit fewer, or one line fewer.
        reducible = next((n for n, qty in enumerate(quantities) if qty > 1), None)
        if reducible is not None:
            quantities[reducible] -= 1
        elif len(lines_back) > 1:
            lines_back.pop()
            quantities.pop()
        else:
            return None
    return list(zip(lines_back, quantities))


class CreditQueue:
    """Credit notes wait here until no later order can produce an earlier one, then get their
    ids in issue order (KC numbers them as they are raised)."""

    def __init__(self, world: World, ids: dict[str, int]):
        self.world = world
        self.ids = ids
        self._heap: list[tuple[str, int, int, dict]] = []
        self._sequence = 0

    def push(self, credit: tuple[str, int, dict]) -> None:
        issued, sorder_id, doc = credit
        self._sequence += 1
        heapq.heappush(self._heap, (issued, sorder_id, self._sequence, doc))

    def flush_before(self, moment: str | None) -> int:
        """Write every note issued before ``moment`` (all of them for None)."""
        written = 0
        while self._heap and (moment is None or self._heap[0][0] < moment):
            _, _, _, doc = heapq.heappop(self._heap)
            credit_id = self.ids["credit_note"]
            self.ids["credit_note"] = credit_id + 1
            doc["credit_id"], doc["credit_code"] = credit_id, f"CR{credit_id}"
            self.world.put("credit_note", doc)
            written += 1
        return written
