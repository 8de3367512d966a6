"""Ometria Data API v2 records: what ``map`` builds and ``push`` sends.

The shapes are those of ``/work/shared/reference/ometria.md`` ("Record shapes"), held strictly:

- unknown fields are rejected (``extra="forbid"``), so a typo never reaches Ometria as a
  silently ignored field; ``@force_optin`` is *not a field at all*: an ERP feed must never
  force an opt-in, and this makes it impossible to send one;
- enumerations (``marketing_optin``, ``gender``), ISO 4217 currencies, E.164 phones, ISO dates
  and zoned datetimes are checked when a record is built, not when Ometria refuses it;
- money is ``Decimal``, never a float, and an order's amounts may not carry more decimals
  than its currency has (GBP 2, JPY 0, KWD 3);
- ids are non-empty strings without ``@`` (an id must never be an email or a name).

``to_wire()`` gives the dict ``khaosync.ometria.wire.dumps`` turns into the exact bytes
push sends: aliases (``@type``, ``@collection``), ``None`` fields left out rather than sent
as ``null`` (a null may clear a value in Ometria), datetimes as UTC ``...Z``, Decimals kept
for the wire's exact number encoding. ``encode()`` gives those bytes and checks the 60 KB
record limit (``wire.RecordTooLarge``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import lru_cache
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from khaosync.currency import CURRENCIES, minor_units, penny  # noqa: F401 (re-exported)
from khaosync.ometria import wire

# -- scalar types ----------------------------------------------------------------------------

MAX_EVENT_TYPE_CHARS = 31  # "event_type ... under 32 chars"

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_URL = re.compile(r"https?://[^\s/?#]+\.[^\s/?#]+([/?#]\S*)?")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_EMAIL_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


@lru_cache(maxsize=1 << 16)  # a customer's email is checked again on each of their orders
def is_ometria_email(text: str) -> bool:
    """An address Ometria accepts: one ``@``, an ASCII dot-atom local part, a dotted domain of
    valid labels ending in a letters-only TLD, RFC lengths. Stricter than KC's own check, on
    purpose: one record with a bad email makes Ometria refuse the whole record."""
    if len(text) > 254 or text.count("@") != 1:
        return False
    local, domain = text.split("@")
    labels = domain.split(".")
    return bool(
        local and len(local) <= 64 and _EMAIL_LOCAL.fullmatch(local) and len(labels) >= 2
        and all(_EMAIL_LABEL.fullmatch(label) for label in labels)
        and labels[-1].isascii() and labels[-1].isalpha() and len(labels[-1]) >= 2
    )


def _refuse_float(value: Any) -> Any:
    # A float has already lost the exact amount (0.1 is not 0.1): money arrives as Decimal.
    if isinstance(value, float):
        raise ValueError(f"a float is not exact money: {value!r}; use Decimal")
    if isinstance(value, bool):
        raise ValueError("a boolean is not an amount")
    return value


def _identifier(value: str) -> str:
    if not value.strip():
        raise ValueError("an id must not be empty")
    if "@" in value:
        raise ValueError("an id must not contain personal data (it looks like an email)")
    return value


def _email(value: str) -> str:
    if not is_ometria_email(value):
        raise ValueError(f"not an email address Ometria accepts: {value!r}")
    return value


def _pattern(regex: re.Pattern[str], what: str):
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"{what}: {value!r}")
        return value
    return check


def _currency(value: str) -> str:
    if value not in CURRENCIES:
        raise ValueError(f"not an ISO 4217 currency in circulation: {value!r}")
    return value


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"a datetime without a time zone: {value.isoformat()}")
    return value.astimezone(UTC)


def _iso_z(value: datetime) -> str:
    # Seconds always, microseconds only when there are some: "2026-10-01T09:12:00Z".
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


_JSON_SCALARS = (str, int, Decimal, type(None))  # bool is an int


def _json_values(value: dict[str, Any]) -> dict[str, Any]:
    # Free-form properties hold only what JSON writes exactly: the wire encoder trusts a
    # validated record and does not look again (a float would be sent as a lossy number).
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, float):
                raise ValueError(f"a float is not exact: {child!r}; use Decimal or a string")
            if isinstance(child, dict):
                if not all(isinstance(k, str) for k in child):
                    raise ValueError("property keys must be strings")
                stack.append(child)
            elif isinstance(child, (list, tuple)):
                stack.append(child)
            elif not isinstance(child, _JSON_SCALARS) or isinstance(child, Decimal) and not child.is_finite():
                raise ValueError(f"not a JSON value: {type(child).__name__}")
    return value


def _event_type(value: str) -> str:
    if not value.strip() or len(value) > MAX_EVENT_TYPE_CHARS:
        raise ValueError(f"event_type must be 1 to {MAX_EVENT_TYPE_CHARS} characters: {value!r}")
    return value


# pydantic refuses NaN and infinities for Decimal by default (allow_inf_nan=False).
Money = Annotated[Decimal, BeforeValidator(_refuse_float)]
"""An exact amount (or quantity): Decimal or int, never a float; written exactly on the wire."""
Identifier = Annotated[str, AfterValidator(_identifier)]
Email = Annotated[str, AfterValidator(_email)]
PhoneE164 = Annotated[str, AfterValidator(_pattern(_E164, "not an E.164 phone number (+447700900123)"))]
CountryCode = Annotated[str, AfterValidator(_pattern(_COUNTRY, "not an ISO 3166-1 alpha-2 country code"))]
Url = Annotated[str, AfterValidator(_pattern(_URL, "not an absolute http(s) URL"))]
Currency = Annotated[str, AfterValidator(_currency)]
Timestamp = Annotated[datetime, AfterValidator(_aware_utc), PlainSerializer(_iso_z, return_type=str)]
"""A zoned datetime, sent as UTC ``YYYY-MM-DDTHH:MM:SSZ``."""
IsoDate = Annotated[date, PlainSerializer(lambda d: d.isoformat(), return_type=str)]
EventType = Annotated[str, AfterValidator(_event_type)]
Properties = Annotated[dict[str, Any], AfterValidator(_json_values)]
"""Free-form properties: strings, integers, booleans, exact Decimals, lists and objects only."""


class MarketingOptin(StrEnum):
    """Ometria's consent values. khaosync sends one only when the ERP really holds a decision."""

    OPTED_IN = "EXPLICITLY_OPTEDIN"
    NOT_SPECIFIED = "NOT_SPECIFIED"
    OPTED_OUT = "EXPLICITLY_OPTEDOUT"


# -- the base --------------------------------------------------------------------------------


class _Part(BaseModel):
    """A nested object of a record (a line item, an attribute): strict, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, use_enum_values=True)


class OmetriaRecord(_Part):
    """A top-level record: one push item, identified by ``@type`` + ``id`` (+ ``@collection``)."""

    TYPE: ClassVar[str] = ""

    def to_wire(self) -> dict:
        """The record as the dict ``wire.dumps`` encodes: aliases, no ``None`` fields."""
        return self.model_dump(by_alias=True, exclude_none=True)

    def encode(self) -> bytes:
        """The exact bytes push sends; ``wire.RecordTooLarge`` over Ometria's 60 KB limit."""
        body = wire.dumps_valid(self.to_wire())
        wire.check_size(self.TYPE, self.id, body)  # type: ignore[attr-defined]
        return body

    @classmethod
    def from_wire(cls, data: dict | bytes):
        """Read a body back (diff, reconcile): ``wire.loads`` keeps amounts exact."""
        return cls.model_validate(wire.loads(data) if isinstance(data, bytes) else data)


# -- contact ---------------------------------------------------------------------------------


class Contact(OmetriaRecord):
    """A person in a collection. ``id`` and ``customer_id`` are stable, non-personal ERP ids."""

    TYPE: ClassVar[str] = "contact"

    type: Literal["contact"] = Field("contact", alias="@type")
    collection: Annotated[str, Field(min_length=1)] = Field(alias="@collection")
    id: Identifier
    email: Email | None = None
    customer_id: Identifier | None = None
    firstname: str | None = None
    middlename: str | None = None
    lastname: str | None = None
    prefix: str | None = None
    gender: Literal["m", "f", "o"] | None = None
    date_of_birth: IsoDate | None = None
    phone_number: PhoneE164 | None = None
    country_id: CountryCode | None = None
    timezone: str | None = None
    store_ids: list[Annotated[str, Field(min_length=1)]] | None = None
    timestamp_acquired: Timestamp | None = None
    # Sent only when the ERP holds a decision; never @force_optin (deliberately not a field).
    marketing_optin: MarketingOptin | None = None
    timestamp_subscribed: Timestamp | None = None
    timestamp_unsubscribed: Timestamp | None = None
    add_to_lists: list[str | int] | None = Field(None, alias="@add_to_lists")
    remove_from_lists: list[str | int] | None = Field(None, alias="@remove_from_lists")
    properties: Properties | None = None


# -- order -----------------------------------------------------------------------------------


class OrderCustomer(_Part):
    id: Identifier | None = None  # the contact's customer_id: always sent by khaosync
    email: Email | None = None
    firstname: str | None = None
    lastname: str | None = None


class OrderAddress(_Part):
    city: str | None = None
    state: str | None = None
    postcode: str | None = None
    country_code: CountryCode | None = None


class VariantOption(_Part):
    id: str
    type: str
    label: str | None = None


class LineItem(_Part):
    """One order line. ``quantity`` is what was ordered and is never reduced by a refund."""

    product_id: Identifier
    variant_id: Identifier | None = None
    sku: str | None = None
    quantity: Annotated[Money, Field(ge=0)]
    unit_price: Money | None = None
    subtotal: Money | None = None
    discount: Money | None = None
    tax: Money | None = None
    total: Money | None = None
    quantity_refunded: Annotated[Money, Field(ge=0)] | None = None
    refunded: Money | None = None
    is_on_sale: bool | None = None
    variant_options: list[VariantOption] | None = None
    properties: Properties | None = None

    def amounts(self) -> list[Decimal]:
        return [v for v in (self.unit_price, self.subtotal, self.discount, self.tax, self.total, self.refunded)
                if v is not None]


class Order(OmetriaRecord):
    """One order per ERP sales order, sent whole whenever it changes."""

    TYPE: ClassVar[str] = "order"

    type: Literal["order"] = Field("order", alias="@type")
    id: Identifier
    timestamp: Timestamp
    currency: Currency
    grand_total: Money
    subtotal: Money | None = None
    discount: Money | None = None
    shipping: Money | None = None
    tax: Money | None = None
    status: str | None = None
    is_valid: bool | None = None
    customer: OrderCustomer | None = None
    store: str | None = None
    channel: str | None = None
    web_id: str | None = None
    coupon_code: str | None = None
    payment_method: str | None = None
    shipping_method: str | None = None
    billing_address: OrderAddress | None = None
    shipping_address: OrderAddress | None = None
    properties: Properties | None = None
    lineitems: list[LineItem]

    @model_validator(mode="after")
    def _amounts_fit_the_currency(self) -> "Order":
        # 19.999 GBP cannot be charged: an amount finer than the currency's unit is a bug upstream.
        unit = penny(self.currency)
        amounts = [self.grand_total, self.subtotal, self.discount, self.shipping, self.tax]
        for line in self.lineitems:
            amounts += line.amounts()
        for amount in amounts:
            try:
                exact = amount is None or amount.quantize(unit) == amount
            except InvalidOperation:  # more digits than any money has: not exact either
                exact = False
            if not exact:
                raise ValueError(f"amount {amount} is not a whole number of {self.currency}'s unit ({unit}): "
                                 f"{self.currency} has {minor_units(self.currency)} decimals")
        return self


class CheckedOrder:
    """An order's wire dict that :func:`order_wire_ok` found valid: what ``map`` writes.

    Building the pydantic ``Order`` for every order costs more than the mapping rules; the
    dict the rules build is checked once, by the same rules, in plain Python. ``to_wire()``
    gives it as is; any other attribute reads the equivalent validated ``Order`` (built on
    first use), so a caller that looks closer sees the model, never a looser object.
    """

    __slots__ = ("_wire", "_model")
    TYPE: ClassVar[str] = "order"

    def __init__(self, wire: dict):
        self._wire = wire
        self._model: Order | None = None

    def to_wire(self) -> dict:
        return self._wire

    def model(self) -> "Order":
        if self._model is None:
            self._model = Order.model_validate(self._wire)
        return self._model

    def __getattr__(self, name: str):
        return getattr(self.model(), name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CheckedOrder):
            return self._wire == other._wire
        return self.model() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CheckedOrder({self._wire!r})"


_LINE_MONEY = ("unit_price", "subtotal", "discount", "tax", "total", "refunded")
_LINE_KEYS = frozenset({"product_id", "variant_id", "sku", "quantity", "quantity_refunded", "is_on_sale",
                        "variant_options", "properties", *_LINE_MONEY})
_ORDER_MONEY = ("grand_total", "subtotal", "discount", "shipping", "tax")
_ORDER_TEXT = ("status", "store", "channel", "web_id", "coupon_code", "payment_method", "shipping_method")
_ORDER_KEYS = frozenset({"@type", "id", "timestamp", "currency", "is_valid", "customer", "properties", "lineitems",
                         *_ORDER_MONEY, *_ORDER_TEXT})
_CUSTOMER_KEYS = frozenset({"id", "email", "firstname", "lastname"})
_OPTION_KEYS = frozenset({"id", "type", "label"})
_UTC_Z = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?Z")


def _is_id(value: Any) -> bool:
    return type(value) is str and bool(value.strip()) and "@" not in value


def _exact(value: Any, unit: Decimal) -> bool:
    if type(value) is not Decimal or not value.is_finite():
        return False
    try:
        return value.quantize(unit) == value
    except InvalidOperation:
        return False


def _plain_values(value: Any) -> bool:
    try:
        _json_values(value)
    except ValueError:
        return False
    return True


def order_wire_ok(wire: dict) -> bool:
    """Whether ``Order.model_validate(wire).to_wire()`` would give ``wire`` back unchanged.

    A sound subset of ``Order``'s rules, for the dicts ``mapping.orders`` builds: True only
    when every field is of the exact type the model keeps as is (Decimal amounts, str ids, a
    canonical ``...Z`` timestamp) and passes the model's checks (ids, email, currency,
    amounts in the currency's unit, no unknown field). False means "not sure": build the
    model, which accepts the record or says why not. (tests/ometria/test_order_check.py holds
    True to that promise.)
    """
    if type(wire) is not dict or not _ORDER_KEYS.issuperset(wire) or wire.get("@type") != "order":
        return False
    currency = wire.get("currency")
    timestamp = wire.get("timestamp")
    if not _is_id(wire.get("id")) or type(currency) is not str or currency not in CURRENCIES or type(timestamp) is not str \
            or not _UTC_Z.fullmatch(timestamp) or "grand_total" not in wire:
        return False
    unit = penny(currency)
    for name in _ORDER_MONEY:
        if name in wire and not _exact(wire[name], unit):
            return False
    for name in _ORDER_TEXT:
        if name in wire and type(wire[name]) is not str:
            return False
    if "is_valid" in wire and type(wire["is_valid"]) is not bool:
        return False
    if "customer" in wire:
        customer = wire["customer"]
        if type(customer) is not dict or not _CUSTOMER_KEYS.issuperset(customer):
            return False
        if "id" in customer and not _is_id(customer["id"]):
            return False
        if "email" in customer and not (type(customer["email"]) is str and is_ometria_email(customer["email"])):
            return False
        if any(type(customer[k]) is not str for k in ("firstname", "lastname") if k in customer):
            return False
    if "properties" in wire and not (type(wire["properties"]) is dict and _plain_values(wire["properties"])):
        return False
    lines = wire.get("lineitems")
    if type(lines) is not list:
        return False
    for line in lines:
        if type(line) is not dict or not _LINE_KEYS.issuperset(line) or not _is_id(line.get("product_id")):
            return False
        if "variant_id" in line and not _is_id(line["variant_id"]):
            return False
        if "sku" in line and type(line["sku"]) is not str:
            return False
        for name in ("quantity", "quantity_refunded"):
            value = line.get(name)
            if (name in line or name == "quantity") and not (type(value) is Decimal and value.is_finite() and value >= 0):
                return False
        for name in _LINE_MONEY:
            if name in line and not _exact(line[name], unit):
                return False
        if "is_on_sale" in line and type(line["is_on_sale"]) is not bool:
            return False
        if "variant_options" in line:  # a None anywhere is left out by the model: not this dict
            options = line["variant_options"]
            if type(options) is not list:
                return False
            for option in options:
                if type(option) is not dict or not _OPTION_KEYS.issuperset(option) \
                        or type(option.get("id")) is not str or type(option.get("type")) is not str \
                        or ("label" in option and type(option["label"]) is not str):
                    return False
        if "properties" in line and not (type(line["properties"]) is dict and _plain_values(line["properties"])):
            return False
    return True


# -- product ---------------------------------------------------------------------------------


class Attribute(_Part):
    """``{type, id, label}``, e.g. ``{"type": "colour", "id": "navy", "label": "Navy"}``."""

    type: Annotated[str, Field(min_length=1)]
    id: Annotated[str, Field(min_length=1)]
    label: str | None = None


class Listing(_Part):
    store: Annotated[str, Field(min_length=1)]
    title: str | None = None
    price: Money | None = None
    special_price: Money | None = None
    currency: Currency | None = None
    is_active: bool | None = None
    url: Url | None = None
    image_url: Url | None = None


class Product(OmetriaRecord):
    """A product (or, with ``is_variant``, a variant: the link to its parent lives on order lines)."""

    TYPE: ClassVar[str] = "product"

    type: Literal["product"] = Field("product", alias="@type")
    id: Identifier
    title: str | None = None
    sku: str | None = None
    url: Url | None = None
    image_url: Url | None = None
    price: Money | None = None
    currency: Currency | None = None
    special_price: Money | None = None
    special_price_dt_from: Timestamp | None = None
    special_price_dt_to: Timestamp | None = None
    is_active: bool | None = None
    is_in_stock: bool | None = None
    is_variant: bool | None = None
    attributes: list[Attribute] | None = None
    listings: list[Listing] | None = None
    properties: Properties | None = None

    def missing_for_recommendations(self) -> list[str]:
        """What Ometria's recommendations need on a parent product and this one lacks."""
        missing = []
        if not (self.title or "").strip():
            missing.append("title")
        if self.price is None or self.price <= 0:
            missing.append("price above zero")
        if not self.url:
            missing.append("url")
        return missing


# -- custom event ----------------------------------------------------------------------------


class CustomEvent(OmetriaRecord):
    TYPE: ClassVar[str] = "custom_event"

    type: Literal["custom_event"] = Field("custom_event", alias="@type")
    id: Identifier
    event_type: EventType
    timestamp: Timestamp
    identity_email: Email | None = None
    identity_account_id: Identifier | None = None
    properties: Properties | None = None

    @model_validator(mode="after")
    def _names_someone(self) -> "CustomEvent":
        if self.identity_email is None and self.identity_account_id is None:
            raise ValueError("an event needs identity_email or identity_account_id")
        return self


RECORD_MODELS: dict[str, type[OmetriaRecord]] = {m.TYPE: m for m in (Contact, Order, Product, CustomEvent)}
"""``@type`` -> model, for reading bodies back."""


def record_from_wire(data: dict | bytes) -> OmetriaRecord:
    """Any body back to its model, by its ``@type``."""
    loaded = wire.loads(data) if isinstance(data, bytes) else data
    try:
        model = RECORD_MODELS[loaded["@type"]]
    except (KeyError, TypeError):
        raise ValueError(f"not an Ometria record (no known @type): {str(loaded)[:80]}") from None
    return model.model_validate(loaded)


__all__ = [
    "Attribute", "CURRENCIES", "Contact", "CustomEvent", "Listing", "LineItem", "MarketingOptin", "Money", "Order",
    "OrderAddress", "OrderCustomer", "CheckedOrder", "order_wire_ok", "OmetriaRecord", "Product", "RECORD_MODELS", "VariantOption", "is_ometria_email",
    "minor_units", "penny", "record_from_wire",
]
