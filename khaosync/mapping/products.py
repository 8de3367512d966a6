"""KC stock items -> Ometria products, and the catalogue order lines resolve against.

A product's id is the stable STOCK_ID, never the stock code (KC lets people rename codes):
a renamed code changes ``sku``, not the product, so old order lines still point at it.

With ``products.variants: children`` (the default) SCS parents and plain items are products
and SCS children are variants (``is_variant: true``, their own id = the child's STOCK_ID); an
order line points ``product_id`` at the style and ``variant_id`` at the child. With
``separate`` every stock item is a product of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import quote

from pydantic import ValidationError

from khaosync.khaos.models import StockItem
from khaosync.mapping.outcome import Finding, Outcome
from khaosync.mapping.schema import Mapping
from khaosync.ometria.models import Attribute, Listing, Product, VariantOption, penny

_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """An attribute id from a KC value: ``"Forest Green"`` -> ``"forest-green"``."""
    return _SLUG.sub("-", text.strip().lower()).strip("-")


@dataclass(frozen=True, slots=True)
class ProductRef:
    """What an order line needs of a stock item, kept for the whole catalogue while orders map."""

    stock_id: int
    parent_id: int | None
    code: str
    version: int
    colour: str = ""
    size: str = ""
    style: str = ""

    @classmethod
    def of(cls, item: StockItem, version: int) -> "ProductRef":
        scs = item.scs
        return cls(item.stock_id, item.parent_id, item.stock_code, version,
                   scs.colour if scs else "", scs.size if scs else "", scs.style if scs else "")

    @property
    def is_variant(self) -> bool:
        return self.parent_id is not None


def variant_options(ref: ProductRef, mapping: Mapping) -> list[VariantOption] | None:
    out = []
    for part, type_ in mapping.products.scs_attributes.items():
        value = getattr(ref, part)
        if value and slug(value):
            out.append(VariantOption(id=slug(value), type=type_, label=value))
    return out or None


def _gross(item: StockItem, mapping: Mapping) -> Decimal | None:
    if item.sell_price is None:
        return None
    unit = penny(mapping.products.currency)
    # SELL_PRICE_NET -1: the price excludes VAT; 0: it includes it. Not sent: net (KC's default).
    price_is_net = item.sell_price_is_net is not False
    if mapping.products.price == "net" or item.vat_rate is None:
        if mapping.products.price == "net" and not price_is_net and item.vat_rate is not None:
            return (item.sell_price * 100 / (100 + item.vat_rate)).quantize(unit, rounding=ROUND_HALF_UP)
        return item.sell_price.quantize(unit, rounding=ROUND_HALF_UP)
    if not price_is_net:
        return item.sell_price.quantize(unit, rounding=ROUND_HALF_UP)
    return (item.sell_price * (100 + item.vat_rate) / 100).quantize(unit, rounding=ROUND_HALF_UP)


def _fill(template: str | None, **values: str) -> str | None:
    if template is None:
        return None
    return template.format(**{k: quote(v, safe="-_.~") for k, v in values.items()})


def _attributes(item: StockItem, mapping: Mapping) -> list[Attribute]:
    rules = mapping.products
    out: list[Attribute] = []
    for name, type_ in rules.attributes.items():
        value = item.user_defined.get(name, "").strip()
        if value and slug(value):
            out.append(Attribute(type=type_, id=slug(value), label=value))
    if rules.manufacturer_attribute and item.manufacturer.strip() and slug(item.manufacturer):
        out.append(Attribute(type=rules.manufacturer_attribute, id=slug(item.manufacturer),
                             label=item.manufacturer.strip()))
    for level, type_ in rules.stock_type_attributes.items():
        value = getattr(item, level).strip()
        if value and slug(value):
            out.append(Attribute(type=type_, id=slug(value), label=value))
    if item.scs is not None and item.is_variant:
        for part, type_ in rules.scs_attributes.items():
            value = getattr(item.scs, part)
            if value and slug(value):
                out.append(Attribute(type=type_, id=slug(value), label=value))
    return out


def map_stock_item(item: StockItem, version: int, mapping: Mapping) -> Outcome:
    """One stock item -> one Ometria product (a variant for an SCS child, by default)."""
    rules = mapping.products
    pid = str(item.stock_id)
    outcome = Outcome("product", pid, None, [("stock_item", item.key, version)])
    records = (f"stock_item:{item.key}",)
    variant = rules.variants == "children" and item.is_variant
    style_code = (item.parent_code or item.stock_code) if item.is_variant else item.stock_code
    fields = {"stock_id": pid, "stock_code": item.stock_code, "style_code": style_code, "other_ref": item.other_ref}
    price = _gross(item, mapping)
    title = item.description.strip() or None
    url = _fill(rules.url_template, **fields)
    image_url = _fill(rules.image_url_template, file_name=item.images[0], stock_code=item.stock_code,
                      stock_id=pid) if item.images else None
    try:
        listings = [Listing(store=rule.store, title=title, price=price,
                            currency=(rule.currency or rules.currency) if price is not None else None,
                            is_active=not item.deleted, url=_fill(rule.url_template, **fields) or url,
                            image_url=image_url) for rule in rules.listings]
        outcome.record = Product(
            id=pid, title=title, sku=item.stock_code or None, url=url, image_url=image_url, price=price,
            currency=rules.currency if price is not None else None, is_active=not item.deleted,
            is_in_stock=None if item.stock_status is None else item.stock_status in rules.in_stock_statuses,
            is_variant=variant, attributes=_attributes(item, mapping) or None, listings=listings or None,
        )
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        outcome.held_because(f"not a valid Ometria product: {reason}")
        outcome.findings.append(Finding("malformed_record", f"stock item {pid}: cannot be mapped: {reason}",
                                        records, "stock_item", item.key))
        return outcome
    if rules.flag_incomplete and not variant:
        missing = outcome.record.missing_for_recommendations()  # type: ignore[union-attr]
        if missing:
            outcome.findings.append(Finding(
                "product_mismatch",
                f"stock item {pid} ({item.stock_code}) lacks what Ometria's recommendations need: "
                f"{', '.join(missing)}; it is sent, but will not be recommended",
                records, "stock_item", item.key, {"missing": missing}))
    return outcome
