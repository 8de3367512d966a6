"""Refund gaps: a processed credit note whose Ometria order still shows full value.

Ometria's preferred refund method updates the original order: a full refund makes it
``is_valid: false`` with status ``refunded``; a partial one sets status ``partial_refund`` and
``refunded`` / ``quantity_refunded`` on the lines. An order Ometria holds with none of that,
while KC has processed a credit note against it, overstates revenue and keeps the customer in
"recent purchaser" segments.

What Ometria holds is read from the ledger (what it accepted from us) or, with ``--live``, from
Ometria itself. An order never pushed has no gap: its first push carries the refund.

- full refund (credit notes total at least the order's ``ORDER_AMOUNT``): a gap until the order
  is invalid;
- partial or delivery-only refund: a gap while the order is valid, its status is neither the
  mapping's ``refunded`` nor ``partial_refund``, and no line shows a refunded amount.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Iterator

from khaosync.detectors import Check, DetectorContext, Finding, amount, ref
from khaosync.ometria import wire
from khaosync.store import staging

TYPE = "refund_gap"


def _decimal(value) -> Decimal:
    """An amount, zero when absent or unreadable (a refund we cannot read refunds nothing)."""
    found = amount(value)
    return Decimal(0) if found is None else found


def credit_notes(ctx: DetectorContext) -> dict[str, list[tuple[str, Decimal, str]]]:
    """Sales order key -> [(credit note key, total, code)] of the processed credit notes."""
    out: dict[str, list[tuple[str, Decimal, str]]] = {}
    for sorder, key, total, code in ctx.conn.execute(
            "SELECT CAST(json_extract(parsed, '$.sorder_id') AS TEXT), key, json_extract(parsed, '$.total'), "
            "json_extract(parsed, '$.credit_code') FROM staged_record "
            "WHERE entity = 'credit_note' AND current = 1 AND parsed IS NOT NULL ORDER BY key"):
        if sorder is not None:
            out.setdefault(sorder, []).append((key, _decimal(total), code or key))
    return out


def shows_full_value(doc: dict, full: bool, ctx: DetectorContext) -> bool:
    if doc.get("is_valid") is False:
        return False
    if full:
        return True
    if doc.get("status") in (ctx.status_word("refunded"), ctx.status_word("partial_refund")):
        return False
    return not any(isinstance(line, dict) and _decimal(line.get("refunded")) > 0
                   for line in doc.get("lineitems") or [])


def credit_notes_of(ctx: DetectorContext, keys: set[str]) -> dict[str, list[tuple[str, Decimal, str]]]:
    """``credit_notes`` for the sales orders ``keys`` only, without reading every credit note:
    the current notes that point at them now, found through the index on their order id (not
    through what map last read of an order: one whose newest version is raw-only is not mapped
    again, and a note that starts to point at it since would be missed)."""
    out: dict[str, list[tuple[str, Decimal, str]]] = {}
    # The order id as KC's model holds it (an integer), and as text, should a record carry it so.
    wanted = {int(k) for k in keys if k.isdigit()} | set(keys)
    for sorder, key, total, code in staging.credit_notes_of_orders(
            ctx.conn, wanted, "CAST(json_extract(parsed, '$.sorder_id') AS TEXT), key, json_extract(parsed, '$.total'), "
            "json_extract(parsed, '$.credit_code')"):
        if sorder is not None and sorder in keys:
            out.setdefault(sorder, []).append((key, _decimal(total), code or key))
    for found in out.values():
        found.sort()  # key order, as the scan gives them
    return out


def _gaps(ctx: DetectorContext, held_by_ometria, notes: dict | None = None) -> Iterator[Finding]:
    conn = ctx.conn
    notes = credit_notes(ctx) if notes is None else notes
    for sorder in sorted(notes, key=lambda k: (len(k), k)):
        doc = held_by_ometria(sorder)
        if doc is None:
            continue  # never pushed (or not in Ometria): the first push carries the refund
        row = conn.execute("SELECT json_extract(parsed, '$.order_amount'), json_extract(parsed, '$.sorder_code'), "
                           "json_extract(parsed, '$.currency') FROM staged_record WHERE entity = 'sales_order' "
                           "AND key = ? AND current = 1", (sorder,)).fetchone()
        order_amount = _decimal(row[0]) if row else Decimal(0)
        refunded = sum((total for _, total, _ in notes[sorder]), Decimal(0))
        full = order_amount > 0 and refunded >= order_amount
        if not shows_full_value(doc, full, ctx):
            continue
        codes = ", ".join(code for _, _, code in notes[sorder])
        kind = "full" if full else "partial"
        where = "Ometria" if ctx.live is not None else "the ledger (what Ometria accepted)"
        yield Finding(
            TYPE,
            f"sales order {(row[1] if row else None) or sorder}: {kind} refund of {refunded} "
            f"{(row[2] if row else '') or ''} processed in KC ({codes}) but {where} still shows the order at full "
            f"value (is_valid {doc.get('is_valid', '-')}, status {doc.get('status', '-')}, "
            f"grand_total {doc.get('grand_total', '-')})",
            (ref("sales_order", sorder), *(ref("credit_note", key) for key, _, _ in notes[sorder])),
            "ometria_order" if ctx.live is not None else "sales_order", sorder,
            detail={"refund": kind, "refunded": str(refunded), "order_amount": str(order_amount),
                    "ometria": {k: str(doc[k]) if not isinstance(doc[k], (str, bool)) else doc[k]
                                for k in ("status", "is_valid", "grand_total") if k in doc}})


def _ledger_body(ctx: DetectorContext):
    def held(sorder: str) -> dict | None:
        row = ctx.conn.execute("SELECT body FROM ledger WHERE type = 'order' AND id = ?", (sorder,)).fetchone()
        return wire.loads(row[0]) if row else None

    return held


def ledger_gaps(ctx: DetectorContext) -> Iterator[Finding]:
    return _gaps(ctx, _ledger_body(ctx))


def ledger_gaps_of(ctx: DetectorContext, keys: set[str]) -> Iterator[Finding]:
    """Scoped (sync): ``keys`` are the sales orders map looked at again (among them the orders
    any version of a credit note staged since points at) and every order planned since the last
    sync (the ledger took those). Nothing else can have moved."""
    notes = credit_notes_of(ctx, keys)
    return _gaps(ctx, _ledger_body(ctx), notes)


def live_gaps(ctx: DetectorContext) -> Iterator[Finding]:
    assert ctx.live is not None
    return _gaps(ctx, lambda sorder: ctx.live.get("order", sorder))  # type: ignore[union-attr]


CHECKS = [
    Check("refunds.ledger", TYPE, "sales_order",
          "a processed KC credit note whose order, as Ometria accepted it from us, still shows full value",
          ledger_gaps, mode="ledger", scope=frozenset({"order"}), scoped=ledger_gaps_of),
    Check("refunds.live", TYPE, "ometria_order",
          "a processed KC credit note whose order, as Ometria holds it now, still shows full value (--live)",
          live_gaps, mode="live", scope=frozenset({"order"})),
]
