"""Product mismatches: order lines Ometria cannot attach, renames it has not seen, products its
recommendations cannot use.

Ometria stores an order only if every line's ``product_id`` (and ``variant_id``) already exists
there, and recommends a product only with a title, a price above zero and a url. Products are
keyed on KC's stable stock id, so a renamed stock code is harmless once the product carrying
the new code has been pushed.

- ``unknown_product`` (always): a KC order line whose stock item is not staged (by stock id, or
  by code when the line has no id; a variant whose parent is not staged counts too). One
  finding per sales order (the same one ``map`` raises when it holds the order).
- ``stock_item`` (always): per stock item, every problem at once: a renamed stock code
  (order lines or an earlier pull carry another code than the item's current one) that the
  product Ometria holds from us (the ledger) does not carry yet; a parent or plain item
  without what recommendations need (title, price above zero, and, once mapped, a url);
  malformed attributes on the mapped product (blank type, id or label, stray spaces, the
  same attribute twice).
- ``pending_order_lines`` (always): an order about to be sent (ready, not in the ledger in
  this version) with a line whose product will not be in Ometria (neither a ready product nor
  one Ometria accepted).
- ``ometria_order_lines`` (``--live``): an order of ours Ometria holds whose lines name a
  product Ometria does not hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterator

from khaosync.detectors import Check, DetectorContext, Finding, amount, ref
from khaosync.detectors.scratch import fill
from khaosync.store import map_state

TYPE = "product_mismatch"


@dataclass
class _Item:
    key: str
    code: str
    parent_id: str | None
    deleted: bool
    description: str
    sell_price: Decimal | None
    other_codes: set[str] = field(default_factory=set)

    @property
    def is_variant(self) -> bool:
        return self.parent_id is not None


def catalogue(ctx: DetectorContext) -> dict[str, _Item]:
    """Staged stock items by key (a catalogue is thousands of items, not millions)."""
    if "catalogue" not in ctx.cache:
        items = {}
        for key, code, parent, deleted, desc, price in ctx.conn.execute(
                "SELECT key, json_extract(parsed, '$.stock_code'), json_extract(parsed, '$.parent_id'), "
                "json_extract(parsed, '$.deleted'), json_extract(parsed, '$.description'), "
                "json_extract(parsed, '$.sell_price') FROM staged_record "
                "WHERE entity = 'stock_item' AND current = 1 AND parsed IS NOT NULL"):
            items[key] = _Item(key, code or "", None if parent is None else str(parent), bool(deleted), desc or "",
                               amount(price))
        ctx.cache["catalogue"] = items
    return ctx.cache["catalogue"]


_LINES = ("SELECT s.key, CAST(l.key AS INTEGER) + 1, json_extract(l.value, '$.stock_id'), "
          "json_extract(l.value, '$.stock_code') FROM staged_record s, json_each(s.parsed, '$.lines') l "
          "WHERE s.entity = 'sales_order' AND s.current = 1 AND s.parsed IS NOT NULL")


def _lines(ctx: DetectorContext, keys: set[str] | None = None) -> Iterator[tuple[str, int, str | None, str]]:
    """(sales order key, line number, stock id, stock code) of every staged order line (of
    the orders ``keys`` only, when given)."""
    if keys is None:
        batches: list[tuple[str, list[str]]] = [(_LINES, [])]
    else:
        ordered = sorted(keys)
        batches = [(_LINES + f" AND s.key IN ({','.join('?' * len(part))})", part)
                   for part in (ordered[i:i + 500] for i in range(0, len(ordered), 500))]
    for sql, args in batches:
        for key, index, stock_id, code in ctx.conn.execute(sql, args):
            yield key, index, None if stock_id is None else str(stock_id), code or ""


def unknown_product(ctx: DetectorContext, keys: set[str] | None = None) -> Iterator[Finding]:
    """Also scoped (``keys``: the sales orders the incremental map looked at again, which are
    every order whose lines, stock items, codes or styles changed: the same reads)."""
    items = catalogue(ctx)
    by_code = {item.code: item for item in items.values()}
    problems: dict[str, list[str]] = {}
    for key, number, stock_id, code in _lines(ctx, keys):
        item = items.get(stock_id) if stock_id is not None else by_code.get(code)
        what = f"line {number} (stock_id {stock_id or '-'}, code {code or '-'})"
        if item is None:
            problems.setdefault(key, []).append(f"{what} is not a staged stock item")
        elif item.is_variant and item.parent_id not in items:
            problems.setdefault(key, []).append(f"{what} has parent {item.parent_id}, which is not staged")
    for key in sorted(problems, key=lambda k: (len(k), k)):
        yield Finding(TYPE, f"sales order {key}: " + "; ".join(problems[key]) + ": Ometria refuses an order whose "
                      "product it does not hold", (ref("sales_order", key),), "sales_order", key,
                      detail={"lines": problems[key]})


_CODES = ("SELECT CAST(json_extract(l.value, '$.stock_id') AS TEXT) AS sid, json_extract(l.value, '$.stock_code'), "
          "count(*) FROM staged_record s, json_each(s.parsed, '$.lines') l "
          "WHERE s.entity = 'sales_order' AND s.current = 1 AND s.parsed IS NOT NULL AND sid IS NOT NULL")


def _renamed(ctx: DetectorContext, items: dict[str, _Item], suspects: set[str],
             orders: set[str] | None = None) -> dict[str, dict[str, int]]:
    """Stock item key -> {other code: order lines carrying it} for codes that are not current, of
    the ``suspects`` only (the items whose rename can matter); over the sales orders ``orders``
    only, when given (every order that has a line of a suspect), else over every order line."""
    out: dict[str, dict[str, int]] = {}
    if not suspects:
        return out  # nothing to read the history for
    wanted = sorted(suspects) if len(suspects) <= 1000 else []  # a long list is filtered here, not in SQL
    only = f" AND sid IN ({','.join('?' * len(wanted))})" if wanted else ""
    if orders is None:
        batches = [(_CODES + only + " GROUP BY 1, 2", wanted)]
    else:
        ordered = sorted(orders)
        batches = [(_CODES + only + f" AND s.key IN ({','.join('?' * len(part))}) GROUP BY 1, 2", wanted + part)
                   for part in (ordered[i:i + 500] for i in range(0, len(ordered), 500))]
    for sql, args in batches:
        for stock_id, code, lines in ctx.conn.execute(sql, args):
            item = items.get(stock_id)
            if item is not None and stock_id in suspects and code and code != item.code:
                found = out.setdefault(stock_id, {})
                found[code] = found.get(code, 0) + lines
    for key, alias in ctx.conn.execute("SELECT key, alias FROM record_alias WHERE entity = 'stock_item' "
                                       "AND alias_kind = 'stock_code'"):
        item = items.get(key)
        if item is not None and alias != item.code:
            out.setdefault(key, {}).setdefault(alias, 0)
    return out


def _attribute_problems(attributes) -> list[str]:
    problems, seen = [], set()
    for n, attr in enumerate(attributes or [], 1):
        if not isinstance(attr, dict):
            problems.append(f"attribute {n} is not an object")
            continue
        for part in ("type", "id", "label"):
            value = attr.get(part)
            if part != "label" and (not isinstance(value, str) or not value.strip()):
                problems.append(f"attribute {n} has no {part}")
            elif isinstance(value, str) and value != value.strip():
                problems.append(f"attribute {n} {part} {value!r} has stray spaces")
            elif part == "label" and value is not None and (not isinstance(value, str) or not value.strip()):
                problems.append(f"attribute {n} has a blank label")
        pair = (attr.get("type"), attr.get("id"))
        if pair in seen:
            problems.append(f"attribute {pair[0]}={pair[1]} is there twice")
        seen.add(pair)
    return problems


def stock_item(ctx: DetectorContext) -> Iterator[Finding]:
    return _stock_items(ctx, from_reads=False)


def stock_item_nightly(ctx: DetectorContext, changed: dict[str, set[str]]) -> Iterator[Finding]:
    """The whole check (sync), the renames read from the orders that have a line of a suspect
    item (``map_read``, which an incremental map keeps current) instead of every order line."""
    return _stock_items(ctx, from_reads=True)


def _orders_reading(ctx: DetectorContext, stock_ids: set[str]) -> set[str]:
    return map_state.readers(ctx.conn, [("stock_item", s) for s in sorted(stock_ids)], "order")


def _stock_items(ctx: DetectorContext, *, from_reads: bool) -> Iterator[Finding]:
    items = catalogue(ctx)
    mapped = {id_: json.loads(body) for id_, body in ctx.conn.execute(
        "SELECT id, CAST(body AS TEXT) FROM outbound_record WHERE type = 'product'")}
    in_ometria = {id_: sku for id_, sku in ctx.conn.execute(
        "SELECT id, json_extract(CAST(body AS TEXT), '$.sku') FROM ledger WHERE type = 'product'")}
    # A rename matters only while Ometria does not hold the item's current code.
    suspects = {key for key, item in items.items() if in_ometria.get(key) != item.code}
    renamed = _renamed(ctx, items, suspects, _orders_reading(ctx, suspects) if from_reads else None)
    for key in sorted(items, key=lambda k: (len(k), k)):
        item = items[key]
        problems, detail = [], {}
        if key in renamed and in_ometria.get(key) != item.code:
            old = renamed[key]
            held = in_ometria.get(key)
            olds = ", ".join(f"{code} ({n} order line{'s' if n != 1 else ''})" if n else code
                             for code, n in sorted(old.items()))
            problems.append(f"stock code renamed to {item.code} from {olds}; Ometria "
                            + (f"still holds sku {held}" if key in in_ometria else "does not hold it yet"))
            detail["renamed"] = {"current": item.code, "other_codes": old, "ometria_sku": held}
        body = mapped.get(key)
        if not item.is_variant and not item.deleted:
            missing = []
            if not item.description.strip() or (body is not None and not str(body.get("title") or "").strip()):
                missing.append("title")
            price = amount(body.get("price")) if body is not None else item.sell_price
            if item.sell_price is None or item.sell_price <= 0 or price is None or price <= 0:
                missing.append("price above zero")
            if body is not None and body.get("is_variant") is not True and not body.get("url"):
                missing.append("url")
            if missing:
                problems.append("lacks what Ometria's recommendations need: " + ", ".join(missing))
                detail["missing"] = missing
        if body is not None:
            bad = _attribute_problems(body.get("attributes"))
            if bad:
                problems.append("malformed attributes: " + "; ".join(bad))
                detail["attributes"] = bad
        if problems:
            yield Finding(TYPE, f"stock item {key} ({item.code}): " + "; ".join(problems),
                          (ref("stock_item", key),), "stock_item", key, detail=detail)


def _known_products(ctx: DetectorContext) -> set[str]:
    return {r[0] for r in ctx.conn.execute(
        "SELECT id FROM outbound_record WHERE type = 'product' AND state = 'ready' "
        "UNION SELECT id FROM ledger WHERE type = 'product'")}


def _unknown_lines(lines, known: set[str]) -> list[str]:
    out = []
    for n, line in enumerate(lines or [], 1):
        if not isinstance(line, dict):
            continue
        for part in ("product_id", "variant_id"):
            value = line.get(part)
            if value is not None and str(value) not in known:
                out.append(f"line {n} {part} {value}")
    return out


_PENDING = ("SELECT o.id, json_extract(CAST(o.body AS TEXT), '$.lineitems') FROM outbound_record o "
            "LEFT JOIN ledger l ON l.type = 'order' AND l.id = o.id "
            "WHERE o.type = 'order' AND o.state = 'ready' AND l.content_hash IS NOT o.content_hash")


def pending_order_lines(ctx: DetectorContext, keys: set[str] | None = None) -> Iterator[Finding]:
    """Also scoped (sync: ``keys``, the orders whose diff can be other than unchanged, which are
    all the orders about to be sent)."""
    known = _known_products(ctx)
    # Only orders about to be sent: what Ometria accepted is the live check's business.
    if keys is None:
        rows = ctx.conn.execute(_PENDING + " ORDER BY o.id")
    else:
        fill(ctx.conn, "det_pending", ("id",), ((k,) for k in sorted(keys)), index="id")
        rows = ctx.conn.execute(_PENDING + " AND o.id IN (SELECT id FROM temp.det_pending) ORDER BY o.id").fetchall()
        ctx.conn.execute("DROP TABLE temp.det_pending")
    for id_, lines in rows:
        bad = _unknown_lines(json.loads(lines or "[]"), known)
        if bad:
            yield Finding(TYPE, f"order {id_} is about to be sent with {', '.join(bad)}: no ready product and "
                          "nothing Ometria accepted has that id, so Ometria will refuse the order",
                          (ref("order", id_),), "order", id_, detail={"lines": bad})


def ometria_order_lines(ctx: DetectorContext) -> Iterator[Finding]:
    assert ctx.live is not None
    known = set(ctx.live.ids("product"))
    for id_, doc in ctx.live.records("order"):
        if ctx.conn.execute("SELECT 1 FROM ledger WHERE type = 'order' AND id = ?", (id_,)).fetchone() is None:
            continue  # not ours
        bad = _unknown_lines(doc.get("lineitems"), known)
        if bad:
            yield Finding(TYPE, f"Ometria holds our order {id_} with {', '.join(bad)}, a product Ometria does not "
                          "hold: the line is not attached to a product", (ref("order", id_),), "ometria_order", id_,
                          detail={"lines": bad})


ORDERS_AND_PRODUCTS = frozenset({"order", "product"})
CHECKS = [
    Check("products.unknown_product", TYPE, "sales_order",
          "a KC order line whose stock item (or its parent) is not staged", unknown_product, scope=ORDERS_AND_PRODUCTS,
          scoped=unknown_product),
    Check("products.stock_item", TYPE, "stock_item",
          "a renamed stock code Ometria does not hold yet; a product without title, price above zero or url; "
          "malformed attributes", stock_item, scope=ORDERS_AND_PRODUCTS, nightly=stock_item_nightly),
    Check("products.pending_order_lines", TYPE, "order",
          "an order about to be sent naming a product that will not be in Ometria", pending_order_lines,
          scope=ORDERS_AND_PRODUCTS, scoped=pending_order_lines),
    Check("products.ometria_order_lines", TYPE, "ometria_order",
          "an order of ours in Ometria naming a product Ometria does not hold (--live)", ometria_order_lines,
          mode="live", scope=frozenset({"order"})),
]
