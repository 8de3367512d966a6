"""World documents (JSON, KC terms) rendered as the XML elements of docs/khaos-soap.md.

Element order is the contract's. Values follow KC's conventions: booleans ``-1``/``0``,
datetimes as KC local strings with ``None`` as ``1899-12-31T00:00:00``, decimals exactly as
stored, "no decision held" (``None`` for a consent field) as an empty element. Empty
elements are written ``<X/>``, as the contract shows them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable

from khaosync.khaos.convert import NO_DATE, to_kc_bool

# Invoice stages (reference table; per site in real life, fixed in the sandbox).
CANCELLED_STAGE = 1
ISSUED_STAGES = frozenset({16, 70, 71, 72, 73})
SHIPPING_STAGES = frozenset({12, 13, 14, 15})  # Picking, Packing, Shipping, Invoice Print
TRACKING_FIELDS = ("CONSIGNMENT_REF", "COURIER_CODE", "COURIER_NAME", "TRACKING_NUMBER")


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


def kc_day(value: str | None) -> str:
    """A date kept as ``YYYY-MM-DD`` (DOB) in KC's datetime form."""
    if value is None:
        return NO_DATE
    return value if "T" in value else f"{value}T00:00:00"


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

def render_company(doc: dict) -> str:
    return el("COMPANY", children([
        el("COMPANY_ID", doc["company_id"]), el("COMPANY_CODE", doc["company_code"]),
        el("COMPANY_NAME", doc["company_name"]), el("COMPANY_CLASS", doc["company_class"]),
        el("COMPANY_STATUS", doc["company_status"]), el("WEB_USER", doc["web_user"]),
        el("MAILING_STATUS", doc["mailing_status"]), el("CURRENCY_CODE", doc["currency_code"]),
        el("DATE_CREATED", kc_when(doc["date_created"])), el("LAST_UPDATED", kc_when(doc["updated"])),
        *(el("ADDITIONAL", value, attrs={"NAME": name}) for name, value in doc["additional"].items()),
        el("ADDRESSES", children(_address(a) for a in doc["addresses"])),
        el("CONTACTS", children(_contact(c) for c in doc["contacts"])),
    ]))


def _address(a: dict) -> str:
    return el("ADDRESS", children([
        el("ADDRESS_ID", a["address_id"]), el("ADDR1", a["addr1"]), el("ADDR2", a["addr2"]), el("ADDR3", a["addr3"]),
        el("TOWN", a["town"]), el("COUNTY", a["county"]), el("POSTCODE", a["postcode"]),
        el("COUNTRY_CODE", a["country_code"]), el("EMAIL", a["email"]), el("TEL", a["tel"]),
        el("ADDRTYPE", a["addr_type"]), el("INACTIVE", bool(a["inactive"])),
    ]))


def _contact(c: dict) -> str:
    return el("CONTACT", children([
        el("CONTACT_ID", c["contact_id"]), el("TITLE", c["title"]), el("FORENAME", c["forename"]),
        el("SURNAME", c["surname"]), el("EMAIL", c["email"]), el("MOBILE", c["mobile"]),
        el("DOB", kc_day(c["dob"])), el("EMAILSUBSCRIBE", c["email_subscribe"]),
        el("MAILING_FLAG", bool(c["mailing_flag"])), el("INACTIVE", bool(c["inactive"])),
    ]))


# -- stock -----------------------------------------------------------------------------

def render_stock_item(doc: dict) -> str:
    scs = doc["scs"]
    return el("STOCK_ITEM", children([
        el("STOCK_ID", doc["stock_id"]), el("STOCK_CODE", doc["stock_code"]),
        el("PARENT_CODE", doc["parent_code"]), el("PARENT_ID", doc["parent_stock_id"]),
        el("OTHER_REF", doc["other_ref"]), el("STOCK_DESC", doc["stock_desc"]),
        el("LONG_DESC", doc["long_desc"]), el("WEB_TEASER", doc["web_teaser"]),
        el("SELL_PRICE", doc["sell_price"]), el("VAT_RATE", doc["vat_rate"]),
        el("DELETED", bool(doc["deleted"])), el("STOCK_TYPE", doc["stock_type"]),
        el("MANUFACTURER", doc["manufacturer"]), el("LAST_UPDATED", kc_when(doc["updated"])),
        el("BARCODES", children(el("BARCODE", b) for b in doc["barcodes"])),
        *(el("USER_DEFINED", value, attrs={"NAME": name}) for name, value in doc["user_defined"].items()),
        el("STOCK_IMAGES", children(el("STOCK_IMAGE", children([el("FILE_NAME", f)])) for f in doc["images"])),
        # A parent or a plain item has no SCS element at all.
        *([el("SCS", children([el("STYLE", scs["style"]), el("COLOUR", scs["colour"]), el("SIZE", scs["size"])]))]
          if scs else []),
    ]))


def render_stock_status(doc: dict) -> str:
    """ExportStockStatus's element. The world keeps no levels unless a doc has ``level``."""
    return el("STOCK_ITEM", children([
        el("CODE", doc["stock_code"]), el("LEVEL", doc.get("level", "0")),
        el("STATUS", "Deleted" if doc["deleted"] else "Active"),
    ]))


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
            el("LAST_UPDATED", kc_when(doc["updated"])),
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


def render_order_status(doc: dict, *, include_tracking: bool, stage_ids: frozenset[int] | None) -> str:
    """``stage_ids`` narrows the invoices listed; the order's status still counts them all."""
    codes = {i["sorder_item_id"]: i["stock_code"] for i in doc["items"]}
    invoices = [inv for inv in doc["invoices"] if stage_ids is None or inv["stage_id"] in stage_ids]
    return el("ORDER_STATUS", children([
        el("SORDER_ID", doc["sorder_id"]), el("SORDER_CODE", doc["sorder_code"]),
        el("ASSOCIATED_REF", doc["associated_ref"]), el("ORDER_STATUS", order_status(doc)),
        el("INVOICES", children(_invoice(inv, codes, include_tracking) for inv in invoices)),
    ]))


def _invoice(inv: dict, codes: dict[int, str], include_tracking: bool) -> str:
    tracking = [
        el("CONSIGNMENT_REF", inv["consignment_ref"]), el("COURIER_CODE", inv["courier_code"]),
        el("COURIER_NAME", inv["courier_name"]), el("TRACKING_NUMBER", inv["tracking_number"]),
    ] if include_tracking else []
    return el("INVOICE", children([
        el("INVOICE_ID", inv["invoice_id"]), el("INVOICE_CODE", inv["invoice_code"]),
        el("INVOICE_STAGE_ID", inv["stage_id"]), el("INVOICE_STAGE_DESC", inv["stage_desc"]),
        el("INVOICE_DATE", kc_when(inv["issued"])),
        *tracking,
        el("ITEMS", children(
            el("ITEM", children([
                el("SORDER_ITEM_ID", item["sorder_item_id"]), el("STOCK_CODE", codes.get(item["sorder_item_id"])),
                el("QTY", item["qty"]),
            ])) for item in inv["items"]
        )),
    ]))


# -- small documents ---------------------------------------------------------------------

def render_site_list(sites: list[tuple[int, str]]) -> str:
    return document("SITES", (el("SITE", children([el("SITE_ID", i), el("SITE_NAME", n)])) for i, n in sites))


def render_company_list(codes: list[str]) -> str:
    return document("COMPANY_LIST", (el("COMPANY_CODE", c) for c in codes))


def render_stock_list(items: list[tuple[str, str | None]]) -> str:
    return document(
        "STOCK_LIST",
        (el("ITEM", children([el("STOCK_CODE", code), el("PARENT_CODE", parent)])) for code, parent in items),
        attrs={"COUNT": str(len(items))},
    )


def render_import_result(urns: list[str]) -> str:
    return document("IMPORT_RESULT", (el("COMPANY", children([el("URN", u)])) for u in urns))
