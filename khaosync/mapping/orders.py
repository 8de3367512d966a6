"""KC sales orders (with their invoices and credit notes) -> Ometria orders.

One Ometria order per KC sales order, keyed on the stable SORDER_ID, whatever its invoices
(despatches), consignments, back-orders and credit notes. The rules, in the order they apply:

1. **Trigger.** An order is first sent when it reaches ``orders.trigger``: ``placed`` (as soon
   as it is staged), ``released`` (an invoice at a released, in-progress or despatched stage)
   or ``despatched`` (an invoice issued; the default). Before that it makes no record and no
   finding. An order that already has an outbound record is always kept up to date, whatever
   the trigger says now (so a cancellation reaches an order Ometria may already hold).
2. **Blocking problems** (no date, a currency that is not ISO 4217, a negative quantity, no
   lines, no customer id) make no record: the order is held with a ``malformed_record``.
3. **Status** follows the despatch state: nothing issued ``pending``; part of the quantities
   issued ``partially_despatched``; all issued ``despatched``, or ``complete`` once every
   invoice is at a complete stage. Cancelled orders are ``cancelled`` + ``is_valid: false``;
   credit notes make ``refunded`` + invalid (everything refunded) or ``partial_refund``.
4. **Lines** point at the stable product: ``product_id`` = the style's STOCK_ID (or the item's
   own for plain items), ``variant_id`` = the SCS child's; ``sku`` is the *current* stock
   code, so a renamed code resolves. A line whose stock item is not staged holds the order
   (``product_mismatch``): Ometria would get a dangling product id.
5. **Totals** are recomputed from the lines (``totals`` convention) and must equal KC's
   ORDER_AMOUNT to the penny; otherwise ``total_mismatch`` and the order is held.
6. **Refunds** update the original order: per line ``quantity_refunded`` (never reducing
   ``quantity``) and ``refunded`` (money). Refunded amounts that belong to no line (delivery,
   a credit-note line that matches no order line, a note whose total exceeds its lines) are
   added to the lines' ``refunded`` pro rata to the line totals, so the net value Ometria
   reports equals KC's (see ``reported_net_value``); ``properties.delivery_refund_in_lines``
   says how much of the lines' ``refunded`` is a delivery refund (already counted: never
   subtract it again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable

from pydantic import ValidationError

from khaosync.khaos.models import CreditNote, OrderLine, SalesOrder
from khaosync.mapping.outcome import Finding, Lineage, Outcome
from khaosync.mapping.products import ProductRef, variant_options
from khaosync.mapping.schema import Mapping
from khaosync.ometria.models import CURRENCIES, CheckedOrder, Order, order_wire_ok, penny

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class CustomerRef:
    """The contact an order names, as the contacts rule sends it."""

    email: str | None  # None: withheld (shared, invalid) or the contact is not sent
    firstname: str | None
    lastname: str | None
    lineage: Lineage | None = None


class Catalogue:
    """Stock items by stable id, for resolving lines: added whole (a full map of products), or
    read one by one as lines name them (``load``: a night that maps a few hundred orders reads
    the items those orders hold, not the catalogue)."""

    def __init__(self, by_code: Callable[[str], list[str]] | None = None,
                 load: Callable[[int], ProductRef | None] | None = None):
        self.items: dict[int, ProductRef | None] = {}
        self._by_code = by_code
        self._load = load
        self._options: dict[int, list[dict] | None] = {}

    def add(self, ref: ProductRef) -> None:
        self.items[ref.stock_id] = ref

    def options(self, ref: ProductRef, mapping: Mapping) -> list[dict] | None:
        """A variant's ``variant_options`` (computed once per stock item: every line reuses them)."""
        if ref.stock_id not in self._options:
            made = variant_options(ref, mapping)
            self._options[ref.stock_id] = [o.model_dump(exclude_none=True) for o in made] if made else None
        return self._options[ref.stock_id]

    def get(self, stock_id: int | None) -> ProductRef | None:
        if stock_id is None:
            return None
        if stock_id not in self.items and self._load is not None:
            self.items[stock_id] = self._load(stock_id)  # None too: asked once per run
        return self.items.get(stock_id)

    def by_code(self, code: str) -> ProductRef | None:
        """A line without STOCK_ID: the stock item that ever carried this code (aliases included)."""
        if not code or self._by_code is None:
            return None
        keys = self._by_code(code)
        return self.get(int(keys[0])) if len(keys) == 1 and keys[0].isdigit() else None


# -- despatch state ----------------------------------------------------------------------------


@dataclass(slots=True)
class Despatch:
    state: str  # pending | partially_despatched | despatched | complete | cancelled
    released: bool
    despatched: bool
    unknown_stages: list[int] = field(default_factory=list)


_ISSUED = ("despatched", "complete")
_RELEASED = ("released", "in_progress", "despatched", "complete")


def despatch_state(order: SalesOrder, mapping: Mapping) -> Despatch:
    """Where the order's despatches stand, from its invoices' stage ids (mapping: invoice_stages)."""
    stages = mapping.orders.invoice_stages
    groups = []
    unknown: list[int] = []
    for invoice in order.invoices:
        group = stages.group_of(invoice.stage_id)
        if group == "unknown":
            unknown.append(invoice.stage_id)  # type: ignore[arg-type]
            group = "in_progress"  # not issued, not cancelled: the safe reading
        elif group is None:
            group = "despatched" if invoice.issued is not None else "in_progress"
        groups.append(group)
    issued = [inv for inv, g in zip(order.invoices, groups) if g in _ISSUED]
    released = any(g in _RELEASED for g in groups)
    cancelled = order.cancelled or (order.status or "").lower() == "cancelled"
    if cancelled:
        return Despatch("cancelled", released, bool(issued), unknown)
    if not issued:
        return Despatch("pending", released, False, unknown)
    if any(inv.items for inv in issued):
        shipped: dict[int | None, Decimal] = {}
        for inv in issued:
            for item in inv.items:
                shipped[item.sorder_item_id] = shipped.get(item.sorder_item_id, ZERO) + item.qty
        everything = all(shipped.get(line.sorder_item_id, ZERO) >= line.qty for line in order.lines)
    elif order.complete is not None:
        # ExportOrderStatusEx's COMPLETE: every unit assigned and every invoice issued. A
        # back-order with no invoice yet keeps an order with all its invoices issued partial.
        everything = order.complete
    else:
        # No item detail on this site's invoices: all despatched once no invoice is still to go.
        everything = all(g in _ISSUED or g == "cancelled" for g in groups)
    if not everything:
        return Despatch("partially_despatched", True, True, unknown)
    complete = all(g == "complete" for inv, g in zip(order.invoices, groups) if g in _ISSUED)
    return Despatch("complete" if complete else "despatched", True, True, unknown)


def reached_trigger(despatch: Despatch, trigger: str) -> bool:
    if trigger == "placed":
        return True
    if trigger == "released":
        return despatch.released or despatch.despatched
    return despatch.despatched


# -- money ---------------------------------------------------------------------------------------


def _q(value: Decimal, unit: Decimal) -> Decimal:
    return value.quantize(unit, rounding=ROUND_HALF_UP)


def _signed(discount: Decimal, sign: int) -> Decimal:
    """A discount with the convention's sign; never a negative zero (it would print as "-0.00")."""
    return -discount if sign < 0 and discount != 0 else discount


@dataclass(slots=True)
class LineMoney:
    """A line's amounts, all exact in the currency's unit; ``discount`` is positive here."""

    unit_price: Decimal
    subtotal: Decimal
    discount: Decimal
    tax: Decimal
    total: Decimal  # what the customer paid for the line, tax included, after discount


def line_money(line: OrderLine, unit: Decimal, prices: str) -> LineMoney:
    """Split a KC line (PRICE_GRS tax-inclusive, KSD_DISCOUNT gross) into Ometria's fields.

    ``total`` = qty x PRICE_GRS - KSD_DISCOUNT (rounded once). ``tax`` is the tax inside
    ``total`` (the VAT actually charged, after discount). With ``tax_exclusive`` prices,
    ``unit_price`` is PRICE_NET, ``subtotal`` = qty x PRICE_NET, and ``discount`` is the
    balancing ex-tax discount, so subtotal - discount + tax = total exactly; with
    ``tax_inclusive``, unit_price/subtotal/discount are the gross figures and tax is not added.
    """
    qty, gross = line.qty, line.price_gross
    total = _q(qty * gross - line.discount, unit)
    net_unit = line.price_net
    if net_unit is None:
        net_unit = _q(gross * 100 / (100 + line.tax_rate), unit) if line.tax_rate is not None else gross
    if line.discount == 0:
        tax = total - _q(qty * net_unit, unit)  # KC's own net: no invented penny
    elif line.tax_rate is not None:
        tax = _q(total * line.tax_rate / (100 + line.tax_rate), unit)
    elif gross:
        tax = _q(total * (gross - net_unit) / gross, unit)
    else:
        tax = ZERO
    if prices == "tax_inclusive":
        subtotal = _q(qty * gross, unit)
        return LineMoney(gross, subtotal, subtotal - total, tax, total)
    subtotal = _q(qty * net_unit, unit)
    return LineMoney(net_unit, subtotal, subtotal + tax - total, tax, total)


@dataclass(slots=True)
class Totals:
    subtotal: Decimal
    discount: Decimal  # positive
    tax: Decimal
    shipping: Decimal
    grand_total: Decimal


def order_totals(lines: list[LineMoney], order: SalesOrder, unit: Decimal, prices: str) -> Totals:
    delivery = order.delivery_gross or ZERO
    if order.delivery_tax is not None:
        delivery_tax = order.delivery_tax
    elif order.delivery_net is not None:
        delivery_tax = delivery - order.delivery_net
    else:
        delivery_tax = ZERO
    subtotal = sum((m.subtotal for m in lines), ZERO)
    discount = sum((m.discount for m in lines), ZERO)
    tax = sum((m.tax for m in lines), ZERO) + delivery_tax
    if prices == "tax_inclusive":
        shipping = delivery
        grand = subtotal - discount + shipping
    else:
        shipping = delivery - delivery_tax
        grand = subtotal - discount + tax + shipping
    return Totals(_q(subtotal, unit), _q(discount, unit), _q(tax, unit), _q(shipping, unit), _q(grand, unit))


def spread(amount: Decimal, weights: list[Decimal], unit: Decimal) -> list[Decimal]:
    """``amount`` split over lines in proportion to ``weights``, to the penny, summing exactly
    (largest remainder; ties go to the earlier line). All on the first line if no weight."""
    if not weights:
        return []
    total_weight = sum((w for w in weights if w > 0), ZERO)
    if total_weight == 0:
        return [amount] + [ZERO] * (len(weights) - 1)
    units = int((amount / unit).to_integral_value(rounding=ROUND_HALF_UP))
    raw = [Decimal(units) * max(w, ZERO) / total_weight for w in weights]
    floors = [int(r) if r >= 0 else -int(-r) for r in raw]
    left = units - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-(abs(raw[i] - floors[i])), i))
    step = 1 if left >= 0 else -1
    for i in order[:abs(left)]:
        floors[i] += step
    return [Decimal(f) * unit for f in floors]


# -- refunds -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Refunds:
    qty: dict[int, Decimal] = field(default_factory=dict)    # by line index
    value: dict[int, Decimal] = field(default_factory=dict)  # by line index, before the spread
    delivery: Decimal = ZERO
    unplaced: Decimal = ZERO   # value on no order line (unmatched lines, totals above their lines)
    total: Decimal = ZERO      # what the credit notes say was refunded, all in
    codes: list[str] = field(default_factory=list)


def gather_refunds(order: SalesOrder, notes: list[CreditNote]) -> tuple[Refunds, list[Finding]]:
    """Every credit note's lines against the order's lines (by SORDER_ITEM_ID, else stock code)."""
    refunds = Refunds()
    findings: list[Finding] = []
    by_item = {line.sorder_item_id: i for i, line in enumerate(order.lines) if line.sorder_item_id is not None}
    by_code: dict[str, int] = {}
    for i, line in enumerate(order.lines):
        by_code.setdefault(line.stock_code, i)
    for note in sorted(notes, key=lambda n: n.credit_id):
        refunds.codes.append(note.credit_code or str(note.credit_id))
        placed = ZERO
        for cl in note.lines:
            i = by_item.get(cl.sorder_item_id) if cl.sorder_item_id is not None else by_code.get(cl.stock_code)
            if i is None:
                findings.append(Finding(
                    "malformed_record",
                    f"credit note {note.credit_id}: line (sorder_item_id {cl.sorder_item_id}, {cl.stock_code or '-'}) "
                    f"matches no line of sales order {order.sorder_id}; its {cl.value} is spread over the order's lines",
                    (f"credit_note:{note.key}", f"sales_order:{order.key}"), "credit_note", note.key))
                continue
            refunds.qty[i] = refunds.qty.get(i, ZERO) + cl.qty
            refunds.value[i] = refunds.value.get(i, ZERO) + cl.value
            placed += cl.value
        refunds.delivery += note.delivery_refund
        refunds.total += note.total
        refunds.unplaced += note.total - placed - note.delivery_refund
    return refunds, findings


def reported_net_value(order: Order) -> Decimal:
    """The net value Ometria reports for an order: 0 when invalid, else grand_total minus
    every line's ``refunded``. khaosync makes this equal KC's ORDER_AMOUNT minus credit notes."""
    if order.is_valid is False:
        return ZERO
    return order.grand_total - sum((line.refunded or ZERO for line in order.lineitems), ZERO)


# -- the rule ------------------------------------------------------------------------------------


def _blocking(order: SalesOrder, mapping: Mapping) -> list[str]:
    problems = []
    if order.order_date is None:
        problems.append("order_date missing: no timestamp to send")
    if order.currency not in CURRENCIES:
        problems.append(f"currency {order.currency!r} is not an ISO 4217 currency")
    for n, line in enumerate(order.lines, 1):
        if line.qty < 0:
            problems.append(f"line {n} (sorder_item_id {line.sorder_item_id}): negative quantity {line.qty}")
    if not order.lines:
        problems.append("no lines")
    if order.order_amount is None:
        problems.append("ORDER_AMOUNT missing: the total cannot be checked")
    who = "company_id" if mapping.identity.customer_id == "company_id" else "contact_id"
    if getattr(order, who) is None:
        problems.append(f"no {who.upper()}: the order cannot be linked to its customer")
    return problems


def _iso_z(value) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _tracking(order: SalesOrder, mapping: Mapping) -> list[dict]:
    stages = mapping.orders.invoice_stages
    out = []
    for inv in sorted(order.invoices, key=lambda i: (i.issued.isoformat() if i.issued else "", i.label)):
        group = stages.group_of(inv.stage_id)
        issued = group in _ISSUED or (group is None and inv.issued is not None)
        if not issued:
            continue
        # KC's CONSIGNMENT_REF is the courier's tracking reference: sent once, as the number.
        consignment = inv.consignment_ref if inv.consignment_ref != inv.tracking_number else ""
        entry = {"invoice": inv.label, "consignment_ref": consignment,
                 "courier": inv.courier_name or inv.courier_code, "tracking_number": inv.tracking_number,
                 "tracking_url": inv.tracking_url, "despatched_at": _iso_z(inv.issued) if inv.issued else ""}
        out.append({k: v for k, v in entry.items() if v})
    return out


def _status(despatch: Despatch, refunds: Refunds | None, grand_total: Decimal, mapping: Mapping) -> tuple[str, bool]:
    words = mapping.orders.statuses
    if despatch.state == "cancelled":
        return words.cancelled, False
    if refunds is not None and refunds.codes:
        if refunds.total >= grand_total and refunds.total > 0:
            return words.refunded, False
        if refunds.total > 0:
            return words.partial_refund, True
    return getattr(words, despatch.state), True


def map_sales_order(order: SalesOrder, version: int, mapping: Mapping, *, catalogue: Catalogue,
                    customer: CustomerRef | None = None, credit_notes: list[tuple[CreditNote, int]] = (),
                    already_mapped: bool = False, customer_known: bool = True) -> Outcome | None:
    """One sales order -> one Ometria order; None when it has not reached its trigger yet.

    ``customer_known`` False: the order's company is not a readable staged record (KC never
    exported it, or it was unreadable): an ``unknown_customer`` finding."""
    key = order.key
    records = (f"sales_order:{key}",)
    despatch = despatch_state(order, mapping)
    if not already_mapped and not reached_trigger(despatch, mapping.orders.trigger):
        return None
    lineage: list[Lineage] = [("sales_order", key, version)]
    lineage += [("credit_note", note.key, v) for note, v in sorted(credit_notes, key=lambda nv: nv[0].credit_id)]
    outcome = Outcome("order", key, None, lineage)
    if despatch.unknown_stages:
        stages = sorted(set(despatch.unknown_stages))
        outcome.findings.append(Finding(
            "unmapped_value", f"sales order {key}: invoice stage id(s) {stages} not in orders.invoice_stages; "
            "read as in progress (not despatched)", records, "sales_order", key, {"stage_ids": stages}))
    problems = _blocking(order, mapping)
    if problems:
        outcome.held_because("; ".join(problems))
        outcome.findings.append(Finding("malformed_record", f"sales order {key} cannot be mapped: {'; '.join(problems)}",
                                        records, "sales_order", key))
        return outcome
    rules = mapping.orders
    unit = penny(order.currency)
    prices = rules.totals.prices
    sign = -1 if rules.totals.discount_sign == "negative" else 1
    moneys = [line_money(line, unit, prices) for line in order.lines]
    totals = order_totals(moneys, order, unit, prices)
    if totals.grand_total != order.order_amount:
        outcome.held_because(f"total_mismatch: lines give {totals.grand_total}, KC says {order.order_amount}")
        outcome.findings.append(Finding(
            "total_mismatch",
            f"sales order {key}: recomputed grand_total {totals.grand_total} {order.currency} "
            f"(subtotal {totals.subtotal}, discount {_signed(totals.discount, sign)}, tax {totals.tax}, shipping "
            f"{totals.shipping}) but KC ORDER_AMOUNT is {order.order_amount} (off by "
            f"{order.order_amount - totals.grand_total}); held", records, "sales_order", key,  # type: ignore[operator]
            {"recomputed": str(totals.grand_total), "erp": str(order.order_amount)}))

    refunds, refund_findings = gather_refunds(order, [note for note, _ in credit_notes])
    outcome.findings += refund_findings
    over = [(i, refunds.value[i], moneys[i].total) for i in sorted(refunds.value) if refunds.value[i] > moneys[i].total]
    if over or (refunds.codes and order.order_amount is not None and refunds.total > order.order_amount):
        said = "; ".join(f"line {i + 1} refunds {value} of its {total}" for i, value, total in over) or \
            f"the credit notes refund {refunds.total} of an order of {order.order_amount}"
        outcome.held_because(f"refund_exceeds_order: {said}")
        outcome.findings.append(Finding(
            "refund_exceeds_order", f"sales order {key}: {said} {order.currency}; held: Ometria would show "
            f"negative revenue (credit notes {', '.join(refunds.codes)})",
            (*records, *(f"credit_note:{note.key}" for note, _ in credit_notes)), "sales_order", key,
            {"refunded": str(refunds.total), "order_amount": str(order.order_amount)}))
    if not customer_known:
        who = f"company_id {order.company_id}" if order.company_id is not None else "no company_id"
        outcome.findings.append(Finding(
            "unknown_customer", f"sales order {key}: its customer ({who}, code {order.company_code or '-'}) is not a "
            "readable staged company: Ometria gets the order with an id only, no contact details",
            records, "sales_order", key, {"company_id": order.company_id}))
    extra = spread(refunds.delivery + refunds.unplaced, [m.total for m in moneys], unit) if refunds.codes else []

    items: list[dict] = []  # validated once, with the order (LineItem's rules apply)
    stock_lineage: set[Lineage] = set()
    for i, (line, money) in enumerate(zip(order.lines, moneys)):
        ref = catalogue.get(line.stock_id) if line.stock_id is not None else catalogue.by_code(line.stock_code)
        parent = catalogue.get(ref.parent_id) if ref is not None and ref.is_variant else None
        variant_mode = mapping.products.variants == "children"
        if ref is None or (variant_mode and ref.is_variant and parent is None):
            what = (f"stock_id {line.stock_id}" if line.stock_id is not None else "no stock_id") + \
                   f", code {line.stock_code or '-'}"
            why = "is not a staged stock item" if ref is None else f"has parent {ref.parent_id}, which is not staged"
            outcome.held_because(f"product_mismatch: line {i + 1} ({what}) {why}")
            outcome.findings.append(Finding(
                "product_mismatch", f"sales order {key}: line {i + 1} ({what}) {why}; held: Ometria would get a "
                "product id it does not hold", records, "sales_order", key,
                {"sorder_item_id": line.sorder_item_id, "stock_id": line.stock_id, "stock_code": line.stock_code}))
            # The body is held, never sent: it still needs a well-formed id to be read back by diff.
            product_id = str(line.stock_id) if line.stock_id is not None else f"unresolved-{line.sorder_item_id or i + 1}"
            variant_id, sku, options = None, line.stock_code or None, None
        else:
            stock_lineage.add(("stock_item", str(ref.stock_id), ref.version))
            if variant_mode and ref.is_variant:
                stock_lineage.add(("stock_item", str(parent.stock_id), parent.version))  # type: ignore[union-attr]
                product_id, variant_id = str(ref.parent_id), str(ref.stock_id)
                options = catalogue.options(ref, mapping)
            else:
                product_id, variant_id, options = str(ref.stock_id), None, None
            sku = ref.code or None
        props = None
        if ref is not None and line.stock_code and line.stock_code != ref.code:
            props = {"stock_code_ordered": line.stock_code}  # the code on the order before a rename
        refunded_qty = refunds.qty.get(i)
        refunded = refunds.value.get(i, ZERO) + (extra[i] if extra else ZERO)
        item = {"product_id": product_id, "variant_id": variant_id, "sku": sku, "quantity": line.qty,
                "unit_price": money.unit_price, "subtotal": money.subtotal,
                "discount": _signed(money.discount, sign), "tax": money.tax, "total": money.total,
                "quantity_refunded": refunded_qty, "refunded": _q(refunded, unit) if refunded else None,
                "variant_options": options, "properties": props}
        items.append({k: v for k, v in item.items() if v is not None})
    outcome.lineage += sorted(stock_lineage, key=lambda e: int(e[1]) if e[1].isdigit() else 0)
    if customer is not None and customer.lineage is not None:
        outcome.lineage.append(customer.lineage)

    status, valid = _status(despatch, refunds, totals.grand_total, mapping)
    properties: dict = {"sorder_code": order.sorder_code} if order.sorder_code else {}
    if rules.tracking:
        tracking = _tracking(order, mapping)
        if tracking:
            properties["tracking"] = tracking
    if refunds.codes:
        properties["credit_notes"] = refunds.codes
        if refunds.delivery:
            properties["delivery_refund_in_lines"] = _q(refunds.delivery, unit)
    customer_id = str(order.company_id if mapping.identity.customer_id == "company_id" else order.contact_id)
    wire = {
        "@type": "order", "id": key, "timestamp": _iso_z(order.order_date.astimezone(UTC)),  # type: ignore[union-attr]
        "currency": order.currency, "grand_total": totals.grand_total, "subtotal": totals.subtotal,
        "discount": _signed(totals.discount, sign), "shipping": totals.shipping, "tax": totals.tax,
        "status": status, "is_valid": valid,
        "customer": {k: v for k, v in (("id", customer_id), ("email", customer.email if customer else None),
                                      ("firstname", customer.firstname if customer else None),
                                      ("lastname", customer.lastname if customer else None)) if v is not None},
        "store": rules.store.pick(order.site), "channel": rules.channel.pick(order.sales_source),
        "web_id": order.associated_ref or None,
        "coupon_code": (order.keycode_code or None) if rules.coupon_from_keycode else None,
        "shipping_method": order.courier_code or None,
        "properties": properties or None, "lineitems": items,
    }
    wire = {k: v for k, v in wire.items() if v is not None}
    if order_wire_ok(wire):  # the model's own rules, checked once without building it
        outcome.record = CheckedOrder(wire)
        return outcome
    try:
        outcome.record = Order.model_validate(wire)
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        outcome.held_because(f"not a valid Ometria order: {reason}")
        outcome.findings.append(Finding("malformed_record", f"sales order {key} cannot be mapped: {reason}",
                                        records, "sales_order", key))
    return outcome
