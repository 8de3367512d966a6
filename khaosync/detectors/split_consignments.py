"""Split-consignment duplicates: more than one Ometria order for one KC sales order (``--live``).

khaosync sends one Ometria order per KC sales order, keyed on the sales order's stable id.
An earlier integration that keyed orders on invoices (one per despatch, ``INV-<invoice code>``)
leaves one Ometria order per consignment: the customer appears to have ordered two or three
times, and revenue is counted again once ours arrives.

Linking an Ometria order that is not ours (its id is no outbound or ledger order id) to a KC
sales order, in this order:

1. ``web_id`` equal to the sales order's ``AssociatedRef`` (the storefront order number, unique
   per source; pull keeps it as an alias of the order, so this is an index lookup);
2. an id of the form ``INV-<invoice code>`` naming one of the order's invoices.

A linked foreign order is a ``split_consignment_duplicate`` of its sales order (fail, ecommerce):
ours is there, or will be after the next push. An Ometria order for which the ERP's own value
(``ORDER_AMOUNT``, 0 if cancelled) is lower than the valid revenue Ometria counts for it (ours
plus any duplicates, same currency) is one too. An Ometria order that is not ours and links to
no sales order is an ``ometria_only_order`` (info): a storefront order KC never received.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Iterator

from khaosync.detectors import Check, DetectorContext, Finding, amount, ref
from khaosync.store import staging

TYPE = "split_consignment_duplicate"
ONLY_IN_OMETRIA = "ometria_only_order"
INVOICE_PREFIX = "INV-"


def _is_ours(conn, id_: str) -> bool:
    return conn.execute("SELECT 1 FROM outbound_record WHERE type = 'order' AND id = ? UNION ALL "
                        "SELECT 1 FROM ledger WHERE type = 'order' AND id = ? LIMIT 1", (id_, id_)).fetchone() is not None


def _erp_order(conn, key: str) -> dict | None:
    row = conn.execute(
        "SELECT json_extract(parsed, '$.order_amount'), json_extract(parsed, '$.currency'), "
        "json_extract(parsed, '$.cancelled'), json_extract(parsed, '$.sorder_code') "
        "FROM staged_record WHERE entity = 'sales_order' AND key = ? AND current = 1 AND parsed IS NOT NULL",
        (key,)).fetchone()
    if row is None:
        return None
    value = amount(row[0])
    return {"value": Decimal(0) if row[2] else value, "currency": row[1], "code": row[3] or key,
            "cancelled": bool(row[2])}


class _InvoiceIndex:
    """Invoice code -> sales order key, built on first use (only foreign ``INV-`` ids need it)."""

    def __init__(self, conn):
        self.conn = conn
        self.index: dict[str, str] | None = None

    def get(self, code: str) -> str | None:
        if self.index is None:
            self.index = {c: k for k, c in self.conn.execute(
                "SELECT s.key, json_extract(i.value, '$.invoice_code') FROM staged_record s, "
                "json_each(s.parsed, '$.invoices') i WHERE s.entity = 'sales_order' AND s.current = 1 "
                "AND s.parsed IS NOT NULL")}
        return self.index.get(code)


def link(conn, doc: dict, invoices: _InvoiceIndex) -> tuple[str | None, str | None]:
    """(sales order key, how it was linked) for an Ometria order that is not ours."""
    web_id = doc.get("web_id")
    if isinstance(web_id, str) and web_id:
        keys = staging.keys_by_alias(conn, "sales_order", "associated_ref", web_id)
        if len(keys) == 1:
            return keys[0], f"web_id {web_id} = AssociatedRef"
    id_ = doc.get("id", "")
    if isinstance(id_, str) and id_.startswith(INVOICE_PREFIX):
        key = invoices.get(id_[len(INVOICE_PREFIX):])
        if key is not None:
            return key, f"id {id_} names invoice {id_[len(INVOICE_PREFIX):]}"
    return None, None


def _outside_window(conn, id_: str, doc: dict) -> bool:
    """An Ometria order from before a ``pull --since`` window (placed before its start), or
    standing for a KC order the window left out (by its id, or web_id = the AssociatedRef)."""
    start = conn.execute("SELECT position FROM bookmark WHERE entity = 'sales_order.window_start'").fetchone()
    timestamp = doc.get("timestamp")
    if start is not None and isinstance(timestamp, str) and timestamp:
        try:
            placed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
            if placed.tzinfo is not None and placed < datetime.fromisoformat(start[0]):
                return True
        except ValueError:
            pass  # an unreadable time decides nothing
    web_id = doc.get("web_id")
    return conn.execute(
        "SELECT 1 FROM order_outside_window WHERE key = ? OR (associated_ref != '' AND associated_ref = ?) LIMIT 1",
        (id_, web_id if isinstance(web_id, str) else "")).fetchone() is not None


def _valid_revenue(doc: dict, currency: str | None) -> Decimal:
    if doc.get("is_valid") is False or (currency and doc.get("currency") != currency):
        return Decimal(0)
    return amount(doc.get("grand_total")) or Decimal(0)


def _summary(doc: dict) -> dict:
    keep = ("id", "timestamp", "currency", "grand_total", "status", "is_valid", "web_id", "store", "channel")
    out = {k: (str(doc[k]) if not isinstance(doc[k], (bool, str)) else doc[k]) for k in keep if k in doc}
    customer = doc.get("customer")
    if isinstance(customer, dict):
        out["customer"] = {k: str(v) for k, v in customer.items() if v is not None}
    out["lines"] = len(doc.get("lineitems") or [])
    return out


class _Classified:
    """One pass over Ometria's orders, shared by both checks."""

    def __init__(self) -> None:
        self.foreign: dict[str, list[tuple[dict, str]]] = {}  # sales order key -> [(foreign doc, how linked)]
        self.unlinked: list[dict] = []                       # foreign orders no sales order explains
        self.above: set[str] = set()                         # our orders valued above the ERP's value
        self.outside_window = 0                              # KC orders before a pull --since window


def _classify(ctx: DetectorContext) -> _Classified:
    if "split_consignments" in ctx.cache:
        return ctx.cache["split_consignments"]
    assert ctx.live is not None
    conn = ctx.conn
    invoices = _InvoiceIndex(conn)
    out = _Classified()
    for id_, doc in ctx.live.records("order"):
        if _is_ours(conn, id_):
            erp = _erp_order(conn, id_)
            if erp is not None and erp["value"] is not None and _valid_revenue(doc, erp["currency"]) > erp["value"]:
                out.above.add(id_)
            continue
        key, how = link(conn, doc, invoices)
        if key is not None:
            out.foreign.setdefault(key, []).append((doc, how or ""))
        elif _outside_window(conn, id_, doc):
            out.outside_window += 1  # a KC order placed before a pull --since window: not ours to check
        else:
            out.unlinked.append(_summary(doc))
    ctx.cache["split_consignments"] = out
    return out


def duplicates(ctx: DetectorContext) -> Iterator[Finding]:
    assert ctx.live is not None
    conn = ctx.conn
    seen = _classify(ctx)
    for key in sorted(set(seen.foreign) | seen.above, key=lambda k: (len(k), k)):
        erp = _erp_order(conn, key) or {"value": None, "currency": None, "code": key, "cancelled": False}
        dupes = seen.foreign.get(key, [])
        ours = ctx.live.get("order", key)
        revenue = sum((_valid_revenue(d, erp["currency"]) for d, _ in dupes), Decimal(0))
        if ours is not None:
            revenue += _valid_revenue(ours, erp["currency"])
        problems = []
        if dupes:
            ids = ", ".join(d["id"] for d, _ in dupes)
            problems.append(f"{len(dupes)} Ometria order(s) not sent by khaosync ({ids}) stand for it "
                            f"besides {'ours' if ours is not None else 'ours, once pushed'}")
        if erp["value"] is not None and revenue > erp["value"]:
            problems.append(f"Ometria counts {revenue} {erp['currency']} of valid revenue for it, the ERP "
                            f"{erp['value']}{' (cancelled)' if erp['cancelled'] else ''}")
        if not problems:
            continue
        yield Finding(
            TYPE, f"KC sales order {erp['code']} ({key}): " + "; ".join(problems),
            (ref("sales_order", key), *(ref("ometria_order", d["id"]) for d, _ in dupes)), "sales_order", key,
            detail={"linked_by": {d["id"]: how for d, how in dupes}, "ometria": [_summary(d) for d, _ in dupes],
                    "ometria_revenue": str(revenue), "erp_value": None if erp["value"] is None else str(erp["value"]),
                    "currency": erp["currency"]})


def ometria_only(ctx: DetectorContext) -> Iterator[Finding]:
    for summary in _classify(ctx).unlinked:
        id_ = summary["id"]
        yield Finding(
            ONLY_IN_OMETRIA,
            f"Ometria order {id_} ({summary.get('grand_total', '?')} {summary.get('currency', '')}, "
            f"{summary.get('timestamp', 'no date')}) matches no KC sales order (web_id {summary.get('web_id') or '-'}): "
            "in Ometria's revenue, not in the ERP's",
            (ref("ometria_order", id_),), "ometria_order", id_, detail={"ometria": summary})


CHECKS = [
    Check("split_consignments.duplicates", TYPE, "sales_order",
          "an Ometria order not sent by khaosync linked to a KC sales order (web_id = AssociatedRef, or "
          "INV-<invoice code>), or Ometria's valid revenue for a sales order above the ERP's (--live)",
          duplicates, mode="live", scope=frozenset({"order"})),
    Check("split_consignments.ometria_only", ONLY_IN_OMETRIA, "ometria_order",
          "an Ometria order not sent by khaosync that links to no KC sales order (--live)",
          ometria_only, mode="live", scope=frozenset({"order"})),
]
