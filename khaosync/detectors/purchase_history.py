"""Missing purchase history: contacts in Ometria whose orders are not the ones the ERP gave them
(``--live``).

Ometria ties orders to people through ``customer.id`` (the contact's ``customer_id``). An order
Ometria accepted from us but no longer holds, or holds under another customer (an edit in
Ometria, a merge, an order re-sent by another system), takes a purchase out of the person's
history: lapsed-customer and repeat-purchase segments go wrong without any error.

For every order of ours Ometria accepted (the ledger), the customer it was sent for is compared
with the one Ometria holds it under (read back in id order, merge-joined with the ledger, so
memory holds only the problems). A customer with at least one contact in Ometria (our
collection) and at least one order missing or moved is a finding: the records are those
contacts; the detail lists the orders.
"""

from __future__ import annotations

from typing import Any, Iterator

from khaosync.detectors import Check, DetectorContext, Finding, ref

TYPE = "missing_purchase_history"


def _merge(left: Iterator[tuple[str, Any]], right: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, tuple | None,
                                                                                                   tuple | None]]:
    """(id, (left value,) or None, (right value,) or None) of two id-ordered streams."""
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            yield a[0], (a[1],), None  # type: ignore[index]
            a = next(left, None)
        elif a is None or b[0] < a[0]:
            yield b[0], None, (b[1],)
            b = next(right, None)
        else:
            yield a[0], (a[1],), (b[1],)
            a, b = next(left, None), next(right, None)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def histories(ctx: DetectorContext) -> Iterator[Finding]:
    assert ctx.live is not None
    sent = ctx.conn.execute("SELECT id, json_extract(CAST(body AS TEXT), '$.customer.id') FROM ledger "
                            "WHERE type = 'order' ORDER BY id")
    missing: dict[str, list[str]] = {}
    moved_away: dict[str, list[tuple[str, str]]] = {}
    moved_in: dict[str, list[tuple[str, str]]] = {}
    for id_, ours, theirs in _merge(iter(sent), ctx.live.extract("order", "$.customer.id")):
        if ours is None or ours[0] is None:
            continue  # not an order we sent (or one sent without a customer)
        customer = _text(ours[0])
        if theirs is None:
            missing.setdefault(customer, []).append(id_)  # type: ignore[arg-type]
        elif _text(theirs[0]) != customer:
            other = _text(theirs[0]) or "(none)"
            moved_away.setdefault(customer, []).append((id_, other))  # type: ignore[arg-type]
            moved_in.setdefault(other, []).append((id_, customer))  # type: ignore[arg-type]
    problems = set(missing) | set(moved_away) | set(moved_in)
    if not problems:
        return
    contacts: dict[str, list[str]] = {}
    for contact_id, customer in ctx.live.extract("contact", "$.customer_id"):
        if _text(customer) in problems:
            contacts.setdefault(_text(customer), []).append(contact_id)  # type: ignore[arg-type]
    for customer in sorted(problems, key=lambda k: (len(k), k)):
        if customer not in contacts:
            continue  # nobody in Ometria carries this history: the orders' own diff shows them
        parts = []
        if customer in missing:
            parts.append(f"{len(missing[customer])} order(s) Ometria accepted from us are gone: "
                         + ", ".join(missing[customer][:10]) + (" ..." if len(missing[customer]) > 10 else ""))
        if customer in moved_away:
            parts.append(f"{len(moved_away[customer])} are held under another customer: "
                         + ", ".join(f"{o} (under {c})" for o, c in moved_away[customer][:10]))
        if customer in moved_in:
            parts.append(f"{len(moved_in[customer])} of another customer's are held under it: "
                         + ", ".join(f"{o} (sent for {c})" for o, c in moved_in[customer][:10]))
        who = ", ".join(sorted(contacts[customer]))
        yield Finding(TYPE, f"customer {customer} (Ometria contact {who}): " + "; ".join(parts),
                      tuple(ref("contact", c) for c in sorted(contacts[customer])), "customer", customer,
                      detail={"missing": missing.get(customer, []),
                              "held_elsewhere": [list(p) for p in moved_away.get(customer, [])],
                              "held_here": [list(p) for p in moved_in.get(customer, [])]})


CHECKS = [
    Check("purchase_history.histories", TYPE, "customer",
          "an order Ometria accepted from us that it no longer holds under the customer we sent it for, for a "
          "customer with contacts in Ometria (--live)", histories, mode="live",
          scope=frozenset({"contact", "order"})),
]
