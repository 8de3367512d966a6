"""World documents (JSON, KC terms) rendered as the XML elements of docs/khaos-soap.md.

Element order is the contract's. Values follow KC's conventions: booleans ``-1``/``0``,
datetimes as KC local strings with ``None`` as ``1899-12-31T00:00:00``, decimals exactly as
stored, "no decision held" (``None`` for a consent field) as an empty element. Empty
elements are written ``<X/>``, as the contract shows them.
"""

from __future__ import annotations

import zlib
from decimal import Decimal
from typing import Any, Iterable

from khaosync.khaos.convert import NO_DATE, to_kc_bool

# Invoice stages (reference table; per site in real life, fixed in the sandbox).
CANCELLED_STAGE = 1
ISSUED_STAGES = frozenset({16, 70, 71, 72, 73})
SHIPPING_STAGES = frozenset({12, 13, 14, 15})  # Picking, Packing, Shipping, Invoice Print


def _escape(text: str) -> str:
    # \r would be normalised away by any XML parser; keep it as a character reference.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _attr(text: str) -> str:
    return '"' + _escape(text).replace('"', "&quot;") + '"'


def kc_text(value: Any) -> str:
    """A scalar in KC's wire form: bools -1/0, None empty, everything else as stored."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return to_kc_bool(value)
    return str(value)


def kc_when(value: str | None) -> str:
    """A datetime field: None means "no date", which KC writes as 1899-12-31."""
    return NO_DATE if value is None else value


def el(name: str, value: Any = None, *, attrs: dict[str, str] | None = None) -> str:
    """``<NAME>text</NAME>``, or ``<NAME/>`` when empty. ``value`` may be pre-rendered children."""
    attr = "".join(f" {k}={_attr(v)}" for k, v in (attrs or {}).items())
    text = value if isinstance(value, _Children) else _escape(kc_text(value))
    return f"<{name}{attr}>{text}</{name}>" if text else f"<{name}{attr}/>"


class _Children(str):
    """Already-rendered XML, placed inside an element without escaping."""


def children(parts: Iterable[str]) -> _Children:
    return _Children("".join(parts))


def document(root: str, elements: Iterable[str], *, attrs: dict[str, str] | None = None) -> str:
    return el(root, children(elements), attrs=attrs)


def text_of(fragment: str | bytes) -> str:
    """A raw override as text: the bytes are served as they are, broken or not."""
    return fragment if isinstance(fragment, str) else fragment.decode("utf-8", errors="replace")


# -- company ---------------------------------------------------------------------------
# KSDXMLCustomer.xml: element order as the vendor's document; contacts inside the address
# they belong to (the invoice address here); ADDRTYPE 1 invoice / 2 delivery; countries as
# KC holds them (alpha-3, "KC defaulted the country to GBR"); no LAST_UPDATED (the vendor's
# document has none); a WEB_PASSWORD as a real export may carry one, which khaosync must
# never keep.

_ALPHA3 = {"GB": "GBR", "IE": "IRL", "FR": "FRA", "DE": "DEU", "US": "USA", "NL": "NLD", "ES": "ESP"}
_COUNTRY_NAMES = {"GB": "United Kingdom", "IE": "Ireland", "FR": "France", "DE": "Germany",
                  "US": "United States", "NL": "Netherlands", "ES": "Spain"}
_ADDR_TYPES = {"Invoice": "1", "Delivery": "2"}


def kc_uk_day(value: str | None) -> str:
    """A stored KC datetime as ``DD/MM/YYYY``; None as Delphi's zero date ``30/12/1899``."""
    if not value or value.startswith("1899-12-3"):
        return "30/12/1899"
    return f"{value[8:10]}/{value[5:7]}/{value[0:4]}"


def render_company(doc: dict) -> str:
    addresses = doc["addresses"]
    home = next((a for a in addresses if a["addr_type"] == "Invoice"), addresses[0] if addresses else None)
    country = home["country_code"] if home else ""
    return el("COMPANY", children([
        el("COMPANY_CODE", doc["company_code"]), el("COMPANY_NAME", doc["company_name"]),
        el("OTHER_REF", doc.get("other_ref", "")), el("WEB_SITE"), el("COMPANY_CLASS", doc["company_class"]),
        el("COMPANY_TYPE"), el("COMPANY_STATUS", doc["company_status"]), el("SOURCE_CODE"),
        el("DATE_CREATED", kc_uk_day(doc["date_created"])), el("COMPANY_ID", doc["company_id"]),
        el("PROFORMA", False), el("SORDER_LOCKED", False), el("SUPPLIER", False), el("EC_COMPANY", False),
        el("PAYS_VAT", True), el("POCODE_REQUIRED", False), el("WEB_USER", doc["web_user"]),
        el("WEB_PASSWORD", f"pw-{doc['company_id'] * 7919 % 100000:05d}" if doc["web_user"] else None),
        el("TAX_REFERENCE"), el("MAILING_STATUS", doc["mailing_status"]),
        el("CURRENCY_CODE", doc["currency_code"]),
        el("ADDRESSES", children(_address(a, doc["contacts"] if a is home else []) for a in addresses)),
        el("COUNTRY", _COUNTRY_NAMES.get(country, country)), el("COUNTRY_CODE", _ALPHA3.get(country, country)),
        *(el("ADDITIONAL", value, attrs={"NAME": name}) for name, value in doc["additional"].items()),
        el("EMAIL_OPTION", True, attrs={"NAME": "Statement"}), el("EMAIL_OPTION", False, attrs={"NAME": "Invoice"}),
    ]))


def _address(a: dict, contacts: list[dict]) -> str:
    country = a["country_code"]
    return el("ADDRESS", children([
        el("ADDR1", a["addr1"]), el("ADDR2", a["addr2"]), el("ADDR3", a["addr3"]), el("TOWN", a["town"]),
        el("COUNTY", a["county"]), el("POSTCODE", a["postcode"]), el("ORGANISATION"),
        el("ADDRTYPE", _ADDR_TYPES.get(a["addr_type"], a["addr_type"])), el("EMAIL", a["email"]),
        el("TEL", a["tel"]), el("FAX"), el("COUNTRY", _COUNTRY_NAMES.get(country, country)),
        el("COUNTRY_CODE", _ALPHA3.get(country, country)), el("ADDRESS_ID", a["address_id"]),
        el("INACTIVE", bool(a["inactive"])),
        el("CONTACTS", children(_contact(c) for c in contacts)),
    ]))


def _contact(c: dict) -> str:
    return el("CONTACT", children([
        el("TITLE", c["title"]), el("FORENAME", c["forename"]), el("SURNAME", c["surname"]), el("JOBTITLE"),
        el("TEL"), el("FAX"), el("MOBILE", c["mobile"]), el("EMAIL", c["email"]), el("NOTE"),
        el("EMAILSUBSCRIBE", c["email_subscribe"]), el("DOB", c["dob"][:10] if c["dob"] else None),
        el("CONTACT_ID", c["contact_id"]), el("INACTIVE", bool(c["inactive"])),
    ]))


# -- stock -----------------------------------------------------------------------------
# KSDXMLStock.xml: types as text with ids (the world keeps a category; level 1 is the
# department), ASSOCIATED_REF for the other ref, WEB/DISCONTINUED beside DELETED, no
# LAST_UPDATED, no parent fields on an item. SCS children come one of two ways, as a site
# is set up (world meta ``scs_export``): "tree" (the parent's SCS tree holds them) or
# "separate" (each child its own unlinked STOCK_ITEM).

def _type_id(text: str) -> int:
    return 100 + zlib.crc32(text.encode("utf-8")) % 900


def _stock_fields(doc: dict, *, child: bool) -> list[str]:
    department = "Clothing" if (doc["scs"] or doc.get("is_style")) else "Home & Gifts"
    category = doc["user_defined"].get("CATEGORY", "")
    desc_tag = "DESCRIPTION" if child else "STOCK_DESC"
    deleted = bool(doc["deleted"])
    return [
        el("STOCK_CODE", doc["stock_code"]), el("ASSOCIATED_REF", doc["other_ref"]),
        el(desc_tag, doc["stock_desc"]), el("LONG_DESC", doc["long_desc"]),
        *([] if child else [el("WEB_TEASER", doc["web_teaser"])]),
        el("SELL_PRICE", doc["sell_price"]), *([] if child else [el("SELL_PRICE_NET", True)]),
        el("SELL_PRICE_WEB"), el("VAT_RATE", doc["vat_rate"]),
        el("STOCK_TTYPE", department, attrs={"EPOS_DESC": department[:3].upper()}),
        el("STOCK_TTYPE_ID", _type_id(department)),
        el("STOCK_TYPE", category, attrs={"EPOS_DESC": category[:3].upper()}), el("STOCK_TYPE_ID", _type_id(category)),
        el("STOCK_ID", doc["stock_id"]), el("MANUFACTURER", doc["manufacturer"]),
        el("DELETED", deleted), el("WEB", not deleted), el("DISCONTINUED", deleted),
        *(el("USER_DEFINED", value, attrs={"NAME": name}) for name, value in doc["user_defined"].items()),
        el("BARCODES", children(el("BARCODE", b, attrs={"DESC": "EAN13"}) for b in doc["barcodes"])),
        el("STOCK_IMAGES", children(el("STOCK_IMAGE", children([el("IMAGE_NAME", f), el("FILE_NAME", f)]))
                                     for f in doc["images"])),
    ]


def render_stock_item(doc: dict, variants: list[dict] | None = None) -> str:
    """A STOCK_ITEM; with ``variants`` (tree mode, a style parent) its SCS tree as well:
    HEADINGs Colour (level 1) and Size (level 2), a STYLE per colour holding a STYLE per size
    holding the SCS_ITEM."""
    parts = _stock_fields(doc, child=False)
    if variants:
        by_colour: dict[str, list[dict]] = {}
        for v in variants:
            by_colour.setdefault((v.get("scs") or {}).get("colour", ""), []).append(v)
        styles = []
        for colour, group in by_colour.items():
            sizes = [el("STYLE", children([
                el("DESCRIPTION", (v.get("scs") or {}).get("size", "")),
                el("SCS_CODE_SUFFIX", v["stock_code"].rsplit("-", 1)[-1]),
                el("SCS_ITEM", children(_stock_fields(v, child=True))),
            ])) for v in group]
            suffix = group[0]["stock_code"].split("-")[-2] if group[0]["stock_code"].count("-") >= 2 else ""
            styles.append(el("STYLE", children([el("DESCRIPTION", colour), el("SCS_CODE_SUFFIX", suffix), *sizes])))
        parts.append(el("SCS", children([
            el("HEADING", "Colour", attrs={"LEVEL": "1"}), el("HEADING", "Size", attrs={"LEVEL": "2"}), *styles,
        ])))
    return el("STOCK_ITEM", children(parts))


def render_stock_status(site: str, docs: Iterable[dict]) -> str:
    """KSDXMLStockStatus.xml: ``STOCK_STATUS SITE=`` with one STOCK_ITEM per code asked for."""
    items = []
    for doc in docs:
        attrs = {"CODE": doc["stock_code"], "ID": str(doc["stock_id"]), "DESC": doc["stock_desc"]}
        if doc["other_ref"]:
            attrs["OTHER_REF"] = doc["other_ref"]
        level, status = stock_position(doc)
        items.append(el("STOCK_ITEM", children([
            el("SELL_PRICE", doc["sell_price"]), el("WEBSELL_PRICE", doc["sell_price"]), el("LEVEL", level),
            el("STATUS", status), el("LEAD_TIME", "2026-12-14" if status in (2, 3) else None),
        ]), attrs=attrs))
    return document("STOCK_STATUS", items, attrs={"SITE": site})


def stock_position(doc: dict) -> tuple[int, int]:
    """(LEVEL, STATUS) of an item: the world's own when it holds them, else a deterministic
    spread (most in stock, some allocated or awaiting stock, deleted ones discontinued)."""
    if "stock_level" in doc and "stock_status" in doc:
        return int(doc["stock_level"]), int(doc["stock_status"])
    if doc["deleted"]:
        return 0, 4
    spread = doc["stock_id"] * 2654435761 % 100
    if spread < 6:
        return 0, 2
    if spread < 9:
        return 0, 3
    if spread < 11:
        return 0, 1
    if spread < 14:
        return 0, 5
    return 3 + spread % 60, 0


# -- sales orders ------------------------------------------------------------------------

def render_sales_order(doc: dict) -> str:
    return el("SALES_ORDER", children([
        el("CUSTOMER_DETAIL", children([
            el("COMPANY_ID", doc["company_id"]), el("COMPANY_CODE", doc["company_code"]),
            el("CONTACT_ID", doc["contact_id"]), el("WEB_USER", doc["web_user"]),
        ])),
        el("ORDER_HEADER", children([
            el("SORDER_ID", doc["sorder_id"]), el("SORDER_CODE", doc["sorder_code"]),
            el("ASSOCIATED_REF", doc["associated_ref"]), el("ORDER_DATE", kc_when(doc["order_date"])),
            el("ORDER_AMOUNT", doc["order_amount"]), el("ORDER_CURRENCY_CODE", doc["currency"]),
            el("SITE", doc["site"]), el("SALES_SOURCE", doc["sales_source"]), el("WEBSITE_NAME", doc["website_name"]),
            el("DELIVERY_NET", doc["delivery_net"]), el("DELIVERY_TAX", doc["delivery_tax"]),
            el("DELIVERY_GRS", doc["delivery_gross"]), el("COURIER_CODE", doc["courier_code"]),
            el("KEYCODE_CODE", doc["keycode_code"]), el("CANCELLED", bool(doc["cancelled"])),
        ])),
        el("ORDER_ITEMS", children(_order_item(i) for i in doc["items"])),
    ]))


def _order_item(i: dict) -> str:
    return el("ORDER_ITEM", children([
        el("SORDER_ITEM_ID", i["sorder_item_id"]), el("STOCK_ID", i["stock_id"]), el("STOCK_CODE", i["stock_code"]),
        el("MAPPING_TYPE", 1), el("STOCK_DESC", i["stock_desc"]), el("ORDER_QTY", i["qty"]),
        el("PRICE_NET", i["price_net"]), el("PRICE_GRS", i["price_gross"]), el("TAX_RATE", i["tax_rate"]),
        el("KSD_DISCOUNT", i["discount"]),
    ]))


def invoice_issued(inv: dict) -> bool:
    return inv["issued"] is not None or inv["stage_id"] in ISSUED_STAGES


def order_status(doc: dict) -> str:
    """KC's order-level status, derived from the invoices (one per despatch).

    Complete needs every live invoice issued *and* every ordered unit invoiced: a back-order
    that has no invoice yet keeps the order at PartialShip, as in KC.
    """
    live = [inv for inv in doc["invoices"] if inv["stage_id"] != CANCELLED_STAGE]
    if doc["cancelled"] or (doc["invoices"] and not live):
        return "Cancelled"
    issued = [inv for inv in live if invoice_issued(inv)]
    if issued:
        shipped: dict[int, Decimal] = {}
        for inv in issued:
            for item in inv["items"]:
                shipped[item["sorder_item_id"]] = shipped.get(item["sorder_item_id"], Decimal(0)) + Decimal(str(item["qty"]))
        all_units = all(shipped.get(i["sorder_item_id"], Decimal(0)) >= Decimal(str(i["qty"])) for i in doc["items"])
        return "Complete" if len(issued) == len(live) and all_units else "PartialShip"
    if any(inv["stage_id"] in SHIPPING_STAGES for inv in live):
        return "Shipping"
    return "Received"


_COURIER_NAMES = {"24HR": "DPD Next Day", "48HR": "Royal Mail Tracked 48", "NDAY": "DPD Precise",
                  "INTL": "Parcelforce Global"}
_TRACKING_URLS = {"24HR": "https://track.dpd.co.uk/parcels/{ref}", "NDAY": "https://track.dpd.co.uk/parcels/{ref}",
                  "48HR": "https://www.royalmail.com/track-your-item#/tracking-results/{ref}",
                  "INTL": "https://www.parcelforce.com/track-trace?trackNumber={ref}"}


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def render_order_status(doc: dict, *, stage_ids: frozenset[int] | None = None) -> str:
    """KSDXMLOrderStatusEx.xml's ORDER_STATUS: identified by SORDER_CODE and ASSOCIATED_REF
    only, invoices as attributes with DD/MM/YYYY dates, no line detail per invoice (the
    quantities sold and sent are totals), CANCELLED only for a cancelled order."""
    items = doc["items"]
    qty_sold = sum((Decimal(str(i["qty"])) for i in items), Decimal(0))
    net = sum((Decimal(str(i["price_net"])) * Decimal(str(i["qty"])) for i in items), Decimal(0))
    delivery_gross = Decimal(str(doc["delivery_gross"] or "0"))
    items_gross = Decimal(str(doc["order_amount"])) - delivery_gross
    state = order_status(doc)
    live = [inv for inv in doc["invoices"] if inv["stage_id"] != CANCELLED_STAGE]
    assigned = sum((Decimal(str(it["qty"])) for inv in live for it in inv["items"]), Decimal(0))
    invoices = [inv for inv in doc["invoices"] if stage_ids is None or inv["stage_id"] in stage_ids]
    courier = _COURIER_NAMES.get(doc["courier_code"], doc["courier_code"])
    cancelled = []
    if state == "Cancelled":
        when = doc.get("cancelled_at") or doc["updated"]
        cancelled = [el("CANCELLED", children([
            el("CANCELLED_DATE_TIME", when[:10] if when else None),
            el("REASON", doc.get("cancel_reason") or "Customer request"), el("USER_NAME", "warehouse"),
        ]))]
    return el("ORDER_STATUS", children([
        el("COMPANY_NAME", doc.get("company_name", ""), attrs={"COMPANY_CODE": doc["company_code"],
                                                               "OTHER_REF": doc.get("web_user", "")}),
        el("ORDER_TYPE", "Sales Order", attrs={"TYPE_ID": "1"}),
        el("COURIER", courier), el("CURRENCY_CODE", doc["currency"]),
        el("DATE_CREATED", kc_uk_day(doc["order_date"])), el("DELIVERY_DATE", kc_uk_day(doc["order_date"])),
        el("ITEMS_TOTAL", _money(items_gross), attrs={"NET_VALUE": _money(net)}),
        el("DELIVERY_TOTAL", _money(delivery_gross), attrs={"NET_VALUE": _money(Decimal(str(doc["delivery_net"] or "0")))}),
        el("COMPLETE", state == "Complete"), el("QTY_SOLD", qty_sold), el("QTY_ASSIGNED", min(assigned, qty_sold)),
        *cancelled,
        el("INVOICES", children(_invoice(inv, doc["courier_code"]) for inv in invoices)),
    ]), attrs={"SORDER_CODE": doc["sorder_code"], "ASSOCIATED_REF": doc["associated_ref"]})


def _invoice(inv: dict, courier_code: str) -> str:
    issued = invoice_issued(inv) and inv["stage_id"] != CANCELLED_STAGE
    ref = inv["tracking_number"] or inv["consignment_ref"] or ""
    url = _TRACKING_URLS.get(courier_code, "").format(ref=ref) if ref else ""
    sold = sum((Decimal(str(it["qty"])) for it in inv["items"]), Decimal(0))
    day = kc_uk_day(inv["issued"]) if issued else "30/12/1899"
    attrs = {
        "INVOICE_CODE": inv["invoice_code"], "INVOICE_DATE": day, "SHIP_DATE": day, "ISSUE_DATE": day,
        "INVOICE_STAGE_ID": str(inv["stage_id"]), "INVOICE_STAGE_DESC": inv["stage_desc"],
        "COURIER": inv["courier_name"] or _COURIER_NAMES.get(courier_code, courier_code),
        "CONSIGNMENT_REF": ref, "TRACKING_URL": url, "QTY_SOLD": str(sold), "QTY_SENT": str(sold if issued else 0),
        "MOVED": to_kc_bool(issued),
    }
    boxes = [el("BOX", attrs={"SHIPPED": to_kc_bool(True), "SHIP_DATE": day, "COURIER": attrs["COURIER"],
                              "CONSIGNMENT_REF": ref, "TRACKING_URL": url})] if issued and ref else []
    return el("INVOICE", children(boxes), attrs=attrs)
