"""Canonical Khaos Control records: what ``pull`` stages and ``map`` reads.

One model per ERP entity, keyed on KC's stable internal id (``COMPANY_ID``, ``STOCK_ID``,
``SORDER_ID``, ``INVOICE_ID``, ``CREDIT_ID``), never on the codes KC lets people rename.
Money and quantities are ``Decimal``; datetimes are aware UTC (converted at the edge by
``khaosync.khaos.convert``). The models check types only; business rules (email syntax,
totals, currencies) are the parser's ``problems`` list, so a record that breaks a rule is
still staged, with its exception.

Content hashing. ``canonical_json`` writes a model as sorted-key JSON with every Decimal as
``str(Decimal)``, which is the text KC sent (``Decimal("1.10")`` stays ``"1.10"``): we do
*not* normalise ``1.10`` to ``1.1``. The hash answers "did the ERP say something different?",
and a change of representation is a change in what KC said; it costs one no-op re-map at
worst, whereas normalising would hide a site whose export starts rounding differently.
Comparisons of value (diff, reconcile) compare Decimals numerically, not hashes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field


def _refuse_float(value: Any) -> Any:
    # A float has already lost the text KC sent (0.1 is not 0.1): money must arrive as text
    # or Decimal.
    if isinstance(value, float):
        raise ValueError(f"a float is not exact money or quantity: {value!r}; pass a str or Decimal")
    return value


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: convert KC local time with convert.kc_datetime_to_utc")
    return value.astimezone(UTC)


Money = Annotated[Decimal, BeforeValidator(_refuse_float), Field(allow_inf_nan=False)]
"""An exact decimal (money, quantity, rate), never a float."""
UtcDatetime = Annotated[datetime, AfterValidator(_aware_utc)]
"""An aware datetime, stored in UTC."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErpRecord(_Model):
    """A top-level record staged by ``pull``: has an entity name and a stable key."""

    ENTITY: ClassVar[str] = ""

    @property
    def key(self) -> str:
        raise NotImplementedError


# -- company -------------------------------------------------------------------------


class Address(_Model):
    address_id: int
    addr1: str = ""
    addr2: str = ""
    addr3: str = ""
    town: str = ""
    county: str = ""
    postcode: str = ""
    country_code: str = ""
    email: str = ""
    tel: str = ""
    addr_type: str = ""  # "Invoice" | "Delivery" on the sites seen
    inactive: bool = False


class Contact(_Model):
    contact_id: int
    title: str = ""
    forename: str = ""
    surname: str = ""
    email: str = ""
    mobile: str = ""
    dob: date | None = None
    email_subscribe: bool | None = None  # None: KC holds no decision (blank EMAILSUBSCRIBE)
    mailing_flag: bool | None = None
    inactive: bool = False


class Company(ErpRecord):
    """A KC customer. ``company_id`` is the stable key; ``company_code`` (the URN) can be renamed."""

    ENTITY: ClassVar[str] = "company"

    company_id: int
    company_code: str
    name: str = ""
    company_class: str = ""
    status: str = ""
    web_user: str = ""
    mailing_status: int | None = None  # an id into the site's own list: map it, never hard-code
    currency: str = ""
    date_created: UtcDatetime | None = None
    last_updated: UtcDatetime | None = None
    additional: dict[str, str] = Field(default_factory=dict)
    addresses: list[Address] = Field(default_factory=list)
    contacts: list[Contact] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return str(self.company_id)


# -- stock ---------------------------------------------------------------------------


class Scs(_Model):
    """Style/colour/size of a variant (KC's SCS structure)."""

    style: str = ""
    colour: str = ""
    size: str = ""


class StockItem(ErpRecord):
    """A KC stock item. ``stock_id`` is the stable key; ``stock_code`` can change."""

    ENTITY: ClassVar[str] = "stock_item"

    stock_id: int
    stock_code: str
    parent_id: int | None = None
    parent_code: str | None = None
    other_ref: str = ""
    description: str = ""
    long_description: str = ""
    web_teaser: str = ""
    sell_price: Money | None = None
    vat_rate: Money | None = None
    deleted: bool = False
    stock_type: int | None = None
    manufacturer: str = ""
    barcodes: list[str] = Field(default_factory=list)
    user_defined: dict[str, str] = Field(default_factory=dict)
    images: list[str] = Field(default_factory=list)
    scs: Scs | None = None
    last_updated: UtcDatetime | None = None

    @property
    def key(self) -> str:
        return str(self.stock_id)

    @property
    def is_variant(self) -> bool:
        """A child of a style (size/colour variant), as opposed to a parent or plain item."""
        return self.parent_id is not None or bool(self.parent_code)


# -- sales orders and despatches -----------------------------------------------------


class OrderLine(_Model):
    sorder_item_id: int | None = None
    stock_id: int | None = None
    stock_code: str = ""  # as at order time: may be an old code of a renamed stock item
    mapping_type: int | None = None
    description: str = ""
    qty: Money
    price_net: Money | None = None
    price_gross: Money  # unit price including tax (PRICE_GRS)
    tax_rate: Money | None = None
    discount: Money = Decimal("0")  # gross discount on the whole line (KSD_DISCOUNT)

    @property
    def gross_total(self) -> Decimal:
        """The line after discount, unrounded: ``qty * price_gross - discount``."""
        return self.qty * self.price_gross - self.discount


class InvoiceItem(_Model):
    sorder_item_id: int | None = None
    stock_code: str = ""
    qty: Money


class Invoice(_Model):
    """One despatch. ``invoice_id`` is stable; ``invoice_code`` can change."""

    invoice_id: int
    invoice_code: str = ""
    stage_id: int | None = None
    stage_desc: str = ""
    issued: UtcDatetime | None = None
    consignment_ref: str = ""
    courier_code: str = ""
    courier_name: str = ""
    tracking_number: str = ""
    items: list[InvoiceItem] = Field(default_factory=list)


class SalesOrder(ErpRecord):
    """A KC sales order, keyed on ``sorder_id``. ``status``/``invoices`` come from ORDER_STATUS."""

    ENTITY: ClassVar[str] = "sales_order"

    sorder_id: int
    sorder_code: str = ""
    associated_ref: str = ""
    company_id: int | None = None
    company_code: str = ""
    contact_id: int | None = None
    web_user: str = ""
    order_date: UtcDatetime | None = None  # None is a problem the parser reports
    last_updated: UtcDatetime | None = None
    order_amount: Money | None = None  # the ERP's gross total: lines after discount + delivery
    currency: str = ""
    site: str = ""
    sales_source: str = ""
    website_name: str = ""
    delivery_net: Money | None = None
    delivery_tax: Money | None = None
    delivery_gross: Money | None = None
    courier_code: str = ""
    keycode_code: str = ""
    cancelled: bool = False
    lines: list[OrderLine] = Field(default_factory=list)
    status: str | None = None
    invoices: list[Invoice] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return str(self.sorder_id)


class OrderStatus(ErpRecord):
    """ExportOrderStatusEx's view of an order: its status and its invoices (despatches)."""

    ENTITY: ClassVar[str] = "order_status"

    sorder_id: int
    sorder_code: str = ""
    associated_ref: str = ""
    status: str = ""
    invoices: list[Invoice] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return str(self.sorder_id)


# -- refunds -------------------------------------------------------------------------


class CreditNoteLine(_Model):
    sorder_item_id: int | None = None
    stock_code: str = ""
    qty: Money
    value: Money  # gross value refunded for the line


class CreditNote(ErpRecord):
    """A processed refund, raised against the original sales order."""

    ENTITY: ClassVar[str] = "credit_note"

    credit_id: int
    credit_code: str = ""
    sorder_id: int | None = None
    sorder_code: str = ""
    associated_ref: str = ""
    issued: UtcDatetime | None = None
    currency: str = ""
    reason: str = ""
    delivery_refund: Money = Decimal("0")
    total: Money
    lines: list[CreditNoteLine] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return str(self.credit_id)


RECORD_TYPES: dict[str, type[ErpRecord]] = {
    cls.ENTITY: cls for cls in (Company, StockItem, SalesOrder, OrderStatus, CreditNote)
}
"""Entity name -> model, for reading staged records back (``RECORD_TYPES[e].model_validate_json``)."""


# -- canonical form ------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A model dump made JSON-safe without losing the text of a Decimal."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)  # the text KC sent: "1.10" stays "1.10"
    if isinstance(value, datetime):
        return _utc_iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        raise TypeError(f"a float in a canonical record: {value!r}")
    return value


def _utc_iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise TypeError(f"naive datetime in a canonical record: {value.isoformat()}")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def canonical_json(model: BaseModel) -> str:
    """The model as canonical JSON: sorted keys, no spaces, Decimals as their text, UTC ``...Z``.

    Same model, same string, in any process on any machine (no dependence on dict order or
    hash seeds). ``Model.model_validate_json`` reads it back to an equal model.
    """
    data = _plain(model.model_dump(mode="python"))
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_hash(model: BaseModel) -> str:
    """sha256 hex of ``canonical_json(model)``: changes exactly when what KC said changes."""
    return hashlib.sha256(canonical_json(model).encode("utf-8")).hexdigest()


__all__ = [
    "Address", "Company", "Contact", "CreditNote", "CreditNoteLine", "ErpRecord", "Invoice", "InvoiceItem",
    "Money", "OrderLine", "OrderStatus", "RECORD_TYPES", "SalesOrder", "Scs", "StockItem", "UtcDatetime",
    "canonical_json", "content_hash",
]
