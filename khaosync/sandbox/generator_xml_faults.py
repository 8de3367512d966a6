"""Raw XML the KC emulator serves in place of a record: the planted broken and hostile elements.

Each element still names its record (``COMPANY_ID``/``COMPANY_CODE``, ``SORDER_ID``/``SORDER_CODE``)
so a pull can say which record it could not read. None of them is well-formed once placed
inside a ``<COMPANYS>`` or ``<SALES_ORDERS>`` document, so a strict parser must reject them:

- broken: an element left unclosed (the tags no longer match);
- hostile, entity reference: ``&lol9;`` with no DTD defining it (a parser that expands
  entities from anywhere would be the one to worry about);
- hostile, entity declaration: a "billion laughs" DTD inside the element, where no DTD may be.
"""

from __future__ import annotations

from xml.sax.saxutils import escape


def _company_head(doc: dict) -> str:
    return (f"<COMPANY><COMPANY_ID>{doc['company_id']}</COMPANY_ID>"
            f"<COMPANY_CODE>{escape(doc['company_code'])}</COMPANY_CODE>")


def broken_company(doc: dict) -> bytes:
    """``COMPANY_NAME`` is never closed."""
    return (f"{_company_head(doc)}<COMPANY_NAME>{escape(doc['company_name'])}"
            f"<CURRENCY_CODE>{doc['currency_code']}</CURRENCY_CODE></COMPANY>").encode()


def hostile_company_entity_ref(doc: dict) -> bytes:
    """A reference to an entity only a billion-laughs DTD would define."""
    return (f"{_company_head(doc)}<COMPANY_NAME>&lol9;</COMPANY_NAME>"
            f"<CURRENCY_CODE>{doc['currency_code']}</CURRENCY_CODE></COMPANY>").encode()


def hostile_company_entity_decl(doc: dict) -> bytes:
    """The billion-laughs declarations themselves, smuggled into the element."""
    entities = ['<!ENTITY lol "lol">']
    for level in range(1, 10):
        previous = "lol" if level == 1 else f"lol{level - 1}"
        entities.append(f'<!ENTITY lol{level} "{f"&{previous};" * 10}">')
    dtd = f"<!DOCTYPE lolz [{''.join(entities)}]>"
    return (f"{_company_head(doc)}{dtd}<COMPANY_NAME>&lol9;</COMPANY_NAME>"
            f"<CURRENCY_CODE>{doc['currency_code']}</CURRENCY_CODE></COMPANY>").encode()


def broken_sales_order(doc: dict) -> bytes:
    """The first ``ORDER_ITEM`` is never closed."""
    item = doc["items"][0]
    return (f"<SALES_ORDER><CUSTOMER_DETAIL><COMPANY_ID>{doc['company_id']}</COMPANY_ID>"
            f"<COMPANY_CODE>{escape(doc['company_code'])}</COMPANY_CODE></CUSTOMER_DETAIL>"
            f"<ORDER_HEADER><SORDER_ID>{doc['sorder_id']}</SORDER_ID><SORDER_CODE>{doc['sorder_code']}</SORDER_CODE>"
            f"<ORDER_DATE>{doc['order_date']}</ORDER_DATE><ORDER_AMOUNT>{doc['order_amount']}</ORDER_AMOUNT>"
            f"<ORDER_CURRENCY_CODE>{doc['currency']}</ORDER_CURRENCY_CODE></ORDER_HEADER>"
            f"<ORDER_ITEMS><ORDER_ITEM><SORDER_ITEM_ID>{item['sorder_item_id']}</SORDER_ITEM_ID>"
            f"<STOCK_CODE>{escape(item['stock_code'])}</STOCK_CODE><ORDER_QTY>{item['qty']}</ORDER_QTY>"
            f"</ORDER_ITEMS></SALES_ORDER>").encode()
