"""Stale fields: values Ometria still holds for fields khaosync stopped sending.

Ometria merges what it is sent into what it holds, so a field left out stays; khaosync sends
a blank (``null``) for every field it stops sending (``khaosync.ometria.blanks``), and
Ometria's own page says a blank "may or may not" remove the value. When Ometria accepted
our blank (the ledger's version carries it) and still holds a value there, the API cannot
clear it: the field is stale, and a person clears it in Ometria.

- ``stale_fields.<type>`` (``--live``, one check per record type): a record of ours (in the
  ledger) whose accepted version blanks a field Ometria holds a value for. One finding per
  record, naming every stale field; it closes when a later live run no longer sees it.
"""

from __future__ import annotations

from typing import Iterator

from khaosync.detectors import Check, DetectorContext, Finding, ref
from khaosync.ometria import wire
from khaosync.ometria.blanks import stale_paths

TYPE = "stale_field"


def _stale(ctx: DetectorContext, type_: str) -> Iterator[Finding]:
    assert ctx.live is not None
    # Only bodies that blank something can hold a stale field (a cheap filter before parsing).
    rows = ctx.conn.execute("SELECT id, body FROM ledger WHERE type = ? AND CAST(body AS TEXT) LIKE '%null%' "
                            "ORDER BY id", (type_,)).fetchall()
    collection = ctx.collection
    if len(rows) > 1 and type_ != "contact":
        ctx.live.load(type_)  # one paged read (the diff reads it next anyway), not one GET each
    for id_, body in rows:
        sent = wire.loads(bytes(body) if not isinstance(body, str) else body.encode("utf-8"))
        held = ctx.live.get(type_, id_, str(sent.get("@collection") or collection) if type_ == "contact" else None)
        if held is None:
            continue
        fields = stale_paths(sent, held)
        if fields:
            yield Finding(TYPE, f"Ometria still holds {', '.join(fields[:10])} on {type_} {id_}, which khaosync "
                          "cleared (sent blank, accepted): the API cannot clear it; clear it in Ometria",
                          (ref(type_, id_),), type_, id_, detail={"fields": fields})


def stale_orders(ctx: DetectorContext) -> Iterator[Finding]:
    return _stale(ctx, "order")


def stale_products(ctx: DetectorContext) -> Iterator[Finding]:
    return _stale(ctx, "product")


def stale_contacts(ctx: DetectorContext) -> Iterator[Finding]:
    return _stale(ctx, "contact")


CHECKS = [
    Check("stale_fields.order", TYPE, "order", "a field we cleared (sent blank) that Ometria still holds on an order",
          stale_orders, mode="live", scope=frozenset({"order"})),
    Check("stale_fields.product", TYPE, "product", "a field we cleared that Ometria still holds on a product",
          stale_products, mode="live", scope=frozenset({"product"})),
    Check("stale_fields.contact", TYPE, "contact", "a field we cleared that Ometria still holds on a contact",
          stale_contacts, mode="live", scope=frozenset({"contact"})),
]
