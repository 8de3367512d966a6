"""Reading staged sales orders and credit notes back at C speed, or not at all.

``map`` reads every staged order's canonical JSON (``models.canonical_json``) back into a
model before its rules run. Through pydantic that costs more than the rules themselves, so
the stage first tries :func:`sales_order` / :func:`credit_note` here: msgspec structs that
mirror the pydantic models field for field (names, defaults, nesting), decoded strictly, with
Decimals and datetimes converted exactly as the models convert them. The mirrors answer the
same attributes the rules read (``key``, ``label``, ``gross_total``), so the rules stay one.

The rule of this module is *sound or silent*: a text the mirror is not sure of, it does not
read (``None``), and the caller reads it with the pydantic model, which accepts it or says
exactly why not. So a mirror may refuse what pydantic takes (a JSON number for an amount,
an offset other than ``Z``, an unknown field), never the reverse: whatever it reads equals,
attribute for attribute, what the model would have read (``tests/khaos/test_staged.py``
holds it to that, over the sandbox's orders and generated ones, and checks the mirrors' fields
against the models' so a new field cannot be forgotten).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated

import msgspec

# What a round trip cannot tell apart from canonical text: an amount that is not a number
# (a Decimal the model refuses, written back as the same "NaN" or "Infinity") and a datetime
# with an offset other than Z (the model converts it to UTC; the mirror would keep it).
_NOT_NUMBERS = ('NaN"', 'Infinity"')
UtcDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class _Mirror(msgspec.Struct, forbid_unknown_fields=True):
    def times(self) -> list[datetime | None]:
        return []


class OrderLine(_Mirror):
    qty: Decimal
    price_gross: Decimal
    sorder_item_id: int | None = None
    stock_id: int | None = None
    stock_code: str = ""
    mapping_type: int | None = None
    description: str = ""
    price_net: Decimal | None = None
    tax_rate: Decimal | None = None
    discount: Decimal = Decimal("0")

    @property
    def gross_total(self) -> Decimal:
        return self.qty * self.price_gross - self.discount


class InvoiceItem(_Mirror):
    qty: Decimal
    sorder_item_id: int | None = None
    stock_code: str = ""


class Box(_Mirror):
    shipped: bool | None = None
    ship_date: date | None = None
    courier: str = ""
    consignment_ref: str = ""
    tracking_url: str = ""


class Invoice(_Mirror):
    invoice_id: int | None = None
    invoice_code: str = ""
    stage_id: int | None = None
    stage_desc: str = ""
    invoice_date: date | None = None
    ship_date: date | None = None
    issue_date: date | None = None
    issued: UtcDatetime | None = None
    consignment_ref: str = ""
    courier_code: str = ""
    courier_name: str = ""
    tracking_number: str = ""
    tracking_url: str = ""
    qty_sold: Decimal | None = None
    qty_sent: Decimal | None = None
    moved: bool | None = None
    boxes: list[Box] = []
    items: list[InvoiceItem] = []

    @property
    def label(self) -> str:
        return self.invoice_code or (str(self.invoice_id) if self.invoice_id is not None else "?")


class Cancellation(_Mirror):
    when: UtcDatetime | None = None
    reason: str = ""
    user_name: str = ""


class SalesOrder(_Mirror):
    sorder_id: int
    sorder_code: str = ""
    associated_ref: str = ""
    company_id: int | None = None
    company_code: str = ""
    contact_id: int | None = None
    web_user: str = ""
    order_date: UtcDatetime | None = None
    last_updated: UtcDatetime | None = None
    order_amount: Decimal | None = None
    currency: str = ""
    site: str = ""
    sales_source: str = ""
    website_name: str = ""
    delivery_net: Decimal | None = None
    delivery_tax: Decimal | None = None
    delivery_gross: Decimal | None = None
    courier_code: str = ""
    keycode_code: str = ""
    order_type: int = 1
    cancelled: bool = False
    lines: list[OrderLine] = []
    status: str | None = None
    complete: bool | None = None
    cancellation: Cancellation | None = None
    invoices: list[Invoice] = []

    @property
    def key(self) -> str:
        return str(self.sorder_id)

    def times(self) -> list[datetime | None]:
        return [self.order_date, self.last_updated, self.cancellation.when if self.cancellation else None,
                *(i.issued for i in self.invoices)]


class CreditNoteLine(_Mirror):
    qty: Decimal
    value: Decimal
    sorder_item_id: int | None = None
    stock_code: str = ""


class CreditNote(_Mirror):
    credit_id: int
    total: Decimal
    credit_code: str = ""
    sorder_id: int | None = None
    sorder_code: str = ""
    associated_ref: str = ""
    issued: UtcDatetime | None = None
    currency: str = ""
    reason: str = ""
    delivery_refund: Decimal = Decimal("0")
    lines: list[CreditNoteLine] = []

    @property
    def key(self) -> str:
        return str(self.credit_id)

    def times(self) -> list[datetime | None]:
        return [self.issued]


MIRRORS: dict[str, type[_Mirror]] = {
    "SalesOrder": SalesOrder, "OrderLine": OrderLine, "Invoice": Invoice, "InvoiceItem": InvoiceItem, "Box": Box,
    "Cancellation": Cancellation, "CreditNote": CreditNote, "CreditNoteLine": CreditNoteLine,
}
"""The pydantic model's class name -> its mirror (checked field for field by the tests)."""

_ORDERS = msgspec.json.Decoder(SalesOrder, strict=True)
_CREDITS = msgspec.json.Decoder(CreditNote, strict=True)
_ENCODER = msgspec.json.Encoder(order="sorted")
_BYTES = tuple(n.encode() for n in _NOT_NUMBERS)


# A member whose value is null, in JSON as the mirror writes it (sorted keys, no spaces, every '"'
# inside a string escaped, so '{"' and ',"' followed by a name and '":' only open a member):
# after another member, then first (with the comma after it, or alone in its object).
_NULL_AFTER = re.compile(rb',"[A-Za-z0-9_@]+":null(?=[,}])')
_NULL_FIRST = re.compile(rb'\{"[A-Za-z0-9_@]+":null(?:,|(?=\}))')


def _without_nulls(written: bytes) -> bytes:
    """The mirror's text without its null members: what ``stored_parsed`` makes of the same record."""
    return _NULL_FIRST.sub(b"{", _NULL_AFTER.sub(b"", written))


def _read(decoder: msgspec.json.Decoder, text: str | bytes):
    data = text.encode() if isinstance(text, str) else text
    try:
        mirror = decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError, OverflowError):
        return None
    # Canonical text is exactly what the mirror writes back, as staged (its null members left
    # out: store.staging.stored_parsed) or whole (as before schema 13); anything else is
    # pydantic's to read.
    written = _ENCODER.encode(mirror)
    if written != data and _without_nulls(written) != data:
        return None
    if any(n in text for n in (_NOT_NUMBERS if isinstance(text, str) else _BYTES)):
        return None
    return mirror if all(t is None or t.tzinfo is UTC for t in mirror.times()) else None


def sales_order(text: str | bytes) -> SalesOrder | None:
    """A staged order's canonical JSON as a mirror, or None: then read it with the model."""
    return _read(_ORDERS, text)


def credit_note(text: str | bytes) -> CreditNote | None:
    """A staged credit note's canonical JSON as a mirror, or None: then read it with the model."""
    return _read(_CREDITS, text)
