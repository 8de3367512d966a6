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
    organisation: str = ""
    addr1: str = ""
    addr2: str = ""
    addr3: str = ""
    town: str = ""
    county: str = ""
    postcode: str = ""
    country: str = ""  # the country's name; KC wants COUNTRY or COUNTRY_CODE on import
    country_code: str = ""  # as KC holds it: ISO 3166 alpha-3 ("GBR") on the sites seen, alpha-2 on others
    email: str = ""
    tel: str = ""
    addr_type: str = ""  # "Invoice" | "Delivery" (KC's ADDRTYPE 1 | 2)
    inactive: bool = False


class Contact(_Model):
    """A contact. KC keeps contacts inside an address (ADDRESS/CONTACTS/CONTACT): ``address_id``
    says which; khaosync lists them flat on the company."""

    contact_id: int
    address_id: int | None = None
    title: str = ""
    forename: str = ""
    surname: str = ""
    email: str = ""
    mobile: str = ""
    tel: str = ""
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
    other_ref: str = ""  # "associated reference code eg. website ID"
    company_class: str = ""  # mandatory on ImportCompany, even for an update
    status: str = ""
    web_user: str = ""
    mailing_status: int | None = None  # an id into the site's own list: map it, never hard-code
    currency: str = ""
    date_created: UtcDatetime | None = None
    last_updated: UtcDatetime | None = None  # not in the vendor's document: only a site export that adds it
    additional: dict[str, str] = Field(default_factory=dict)
    addresses: list[Address] = Field(default_factory=list)
    contacts: list[Contact] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return str(self.company_id)


# -- stock ---------------------------------------------------------------------------


class Scs(_Model):
    """Where a variant sits in its parent's SCS (size/colour/style) template.

    ``levels`` is every level as KC names it (``HEADING LEVEL=`` text -> the ``STYLE``
    description on the variant's path, e.g. ``{"Size": "M", "Colour": "Red"}``); ``style``,
    ``colour`` and ``size`` are the levels whose heading reads so, for the mapping.
    """

    style: str = ""
    colour: str = ""
    size: str = ""
    levels: dict[str, str] = Field(default_factory=dict)


class StockItem(ErpRecord):
    """A KC stock item. ``stock_id`` is the stable key; ``stock_code`` can change."""

    ENTITY: ClassVar[str] = "stock_item"

    stock_id: int
    stock_code: str
    # An SCS child's parent: from the parent's SCS tree, or from GetStockList's ParentCode when
    # the site exports children as separate, unlinked items.
    parent_id: int | None = None
    parent_code: str | None = None
    variant_codes: list[str] = Field(default_factory=list)  # an SCS parent's children, by code
    other_ref: str = ""  # ASSOCIATED_REF: the alternative code (KC's "Other Ref")
    description: str = ""
    long_description: str = ""
    web_teaser: str = ""
    sell_price: Money | None = None
    sell_price_web: Money | None = None  # overrides the sell price on the web, when set
    sell_price_is_net: bool | None = None  # SELL_PRICE_NET: -1 when SELL_PRICE excludes VAT
    vat_rate: Money | None = None
    deleted: bool = False  # "DELETED products should not be sold online" (combines WEB and DISCONTINUED)
    web: bool | None = None
    discontinued: bool = False
    # Stock types, as text (KC's categories), levels 1 to 4, with their ids.
    stock_top_type: str = ""  # STOCK_TTYPE, level 1
    stock_type: str = ""  # STOCK_TYPE, level 2, e.g. "Books"
    stock_type_id: str = ""
    stock_mid_type: str = ""  # level 3, only when four levels are used
    stock_sub_type: str = ""  # level 4
    manufacturer: str = ""
    barcodes: list[str] = Field(default_factory=list)
    user_defined: dict[str, str] = Field(default_factory=dict)
    options: dict[str, str] = Field(default_factory=dict)
    images: list[str] = Field(default_factory=list)
    scs: Scs | None = None
    # From ExportStockStatus for the configured site: LEVEL available to sell, STATUS 0-5
    # (0 in stock, 1 all allocated, 2 out of stock and due, 3 out and not due soon,
    # 4 discontinued, 5 not stock controlled). None: no status read for this item.
    stock_level: Money | None = None
    stock_status: int | None = None
    last_updated: UtcDatetime | None = None  # not in the vendor's document

    @property
    def key(self) -> str:
        return str(self.stock_id)

    @property
    def is_variant(self) -> bool:
        """A child of a style (size/colour variant), as opposed to a parent or plain item."""
        return self.parent_id is not None or bool(self.parent_code)


class StockStatus(ErpRecord):
    """ExportStockStatus's view of one item at one site (``STOCK_STATUS SITE=`` /
    ``STOCK_ITEM CODE= ID=``), keyed on its code. ``stock_ref`` is the ``ID`` attribute as
    KC sent it: the vendor's sample shows an alphanumeric one (``A3567``)."""

    ENTITY: ClassVar[str] = "stock_status"

    stock_code: str
    stock_ref: str = ""
    site: str = ""
    description: str = ""
    other_ref: str = ""
    sell_price: Money | None = None
    level: Money | None = None
    status: int | None = None
    lead_time: date | None = None

    @property
    def key(self) -> str:
        return self.stock_code


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


class Box(_Model):
    """A package of an invoice (``INVOICE/BOX``), when it was packed into several."""

    shipped: bool | None = None
    ship_date: date | None = None
    courier: str = ""
    consignment_ref: str = ""
    tracking_url: str = ""


class Invoice(_Model):
    """One despatch. ExportOrderStatusEx names it by ``invoice_code`` only (no internal id);
    a site export that carries ``INVOICE_ID`` fills ``invoice_id`` too."""

    invoice_id: int | None = None
    invoice_code: str = ""
    stage_id: int | None = None
    stage_desc: str = ""
    invoice_date: date | None = None  # last printed or edited
    ship_date: date | None = None  # shipment confirmed in the Sales Invoice Manager
    issue_date: date | None = None
    issued: UtcDatetime | None = None  # the issue date as a time (London midnight), for ordering
    consignment_ref: str = ""
    courier_code: str = ""
    courier_name: str = ""
    tracking_number: str = ""
    tracking_url: str = ""
    qty_sold: Money | None = None
    qty_sent: Money | None = None
    moved: bool | None = None  # the stage changed since KC's last status update
    boxes: list[Box] = Field(default_factory=list)
    items: list[InvoiceItem] = Field(default_factory=list)  # not in the vendor's status document

    @property
    def label(self) -> str:
        return self.invoice_code or (str(self.invoice_id) if self.invoice_id is not None else "?")


class Cancellation(_Model):
    """``CANCELLED`` in a status answer: present only for a cancelled order."""

    when: UtcDatetime | None = None
    reason: str = ""
    user_name: str = ""


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
    order_type: int = 1  # 1 sales order, 2 credit note (ORDER_TYPE TYPE_ID)
    cancelled: bool = False
    lines: list[OrderLine] = Field(default_factory=list)
    # From ExportOrderStatusEx: the derived status, whether KC marks the order complete (every
    # unit assigned and every invoice issued), the cancellation, and the invoices (despatches).
    status: str | None = None
    complete: bool | None = None
    cancellation: Cancellation | None = None
    invoices: list[Invoice] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return str(self.sorder_id)


class OrderStatus(ErpRecord):
    """ExportOrderStatusEx's view of an order (``STATUS_LIST/ORDER_STATUS``), keyed on its
    ``SORDER_CODE``: the vendor's document carries no internal order id.

    ``status`` is derived by the parser (``Cancelled`` when ``CANCELLED`` is present,
    ``Complete`` when ``COMPLETE`` is -1, ``PartialShip`` once an invoice is issued,
    ``Shipping`` while one is being picked/packed/shipped, else ``Received``), in the words of
    KCC's channel status so both sources read alike.
    """

    ENTITY: ClassVar[str] = "order_status"

    sorder_code: str
    associated_ref: str = ""
    company_code: str = ""
    company_other_ref: str = ""
    company_name: str = ""
    order_type: int = 1  # 1 sales order, 2 credit note
    courier: str = ""
    currency: str = ""
    date_created: date | None = None
    delivery_date: date | None = None
    items_total: Money | None = None  # gross; NET_VALUE attribute -> items_net
    items_net: Money | None = None
    delivery_total: Money | None = None
    delivery_net: Money | None = None
    complete: bool | None = None
    qty_sold: Money | None = None
    qty_assigned: Money | None = None
    cancellation: Cancellation | None = None
    status: str = ""
    invoices: list[Invoice] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return self.sorder_code

    @property
    def gross_total(self) -> Decimal | None:
        """ITEMS_TOTAL + DELIVERY_TOTAL: "combined to provide Total Gross Order Value"."""
        if self.items_total is None:
            return None
        return self.items_total + (self.delivery_total or Decimal(0))


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
    cls.ENTITY: cls for cls in (Company, StockItem, StockStatus, SalesOrder, OrderStatus, CreditNote)
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
    "Address", "Box", "Cancellation", "Company", "Contact", "CreditNote", "CreditNoteLine", "ErpRecord", "Invoice", "InvoiceItem",
    "Money", "OrderLine", "OrderStatus", "RECORD_TYPES", "SalesOrder", "Scs", "StockItem", "StockStatus", "UtcDatetime",
    "canonical_json", "content_hash",
]
