"""The Ometria emulator's synchronous record validation: what ``POST /push`` rejects at once.

Each check names the rule of ``ometria.md`` (the reference) it enforces. Where the reference
is silent the emulator picks the stricter reading, so a client built against it cannot lean
on a leniency the real service may not have; those choices are marked *(sandbox rule)* and
listed in ``docs/sandbox.md``.

A record is checked in this order and only its first error is reported (one entry in
``/push/_errors`` per rejected record): size, ``id``, unknown fields, required fields, then
every field in the order the record carries them.

Required fields are required to *create* a record. Ometria's Push API page: "To update an
existing record, you can send a partial record and only the supplied fields will be merged
into the existing record", with the partial cancellation
``[{"@type":"order","id":"123551","status":"cancelled","is_valid":false}]`` as its example;
so a record for an id Ometria already holds needs only its identity (``id``, and a
contact's ``@collection``).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

RECORD_TYPES = ("contact", "order", "product", "custom_event")
MAX_RECORD_BYTES = 61_440  # "at most 60 KB per record", measured on the compact UTF-8 JSON
TOO_LARGE = "Payload invalid: Record is too large."

OPTED_IN = "EXPLICITLY_OPTEDIN"
NOT_SPECIFIED = "NOT_SPECIFIED"
OPTED_OUT = "EXPLICITLY_OPTEDOUT"
MARKETING_OPTIN_VALUES = (OPTED_IN, NOT_SPECIFIED, OPTED_OUT)

# Control fields: instructions to the API, accepted on input, never stored on the record.
DIRECTIVES = ("@merge", "@force_optin", "@add_to_lists", "@remove_from_lists")

# ISO 4217 currencies in circulation. Fund codes (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW),
# metals, SDR/bond units and the test codes XTS/XXX are not money an order is paid in, and
# withdrawn codes (HRK, CUC, VEF, ...) are gone: all rejected *(sandbox rule)*.
ISO_4217 = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
    GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
    KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
    MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
    SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD
    TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
    """.split()
)

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# The offset may be ``+HH`` too: Ometria's own contact example (support page "Changing a
# contact's email address via API") sends ``"timestamp_acquired": "2018-04-19T09:00:00+00"``.
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}(:?\d{2})?)$")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_EMAIL_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_URL = re.compile(r"^https?://[^\s/?#]+\.[^\s/?#]+([/?#]\S*)?$")
MAX_EVENT_TYPE_CHARS = 31  # "event_type ... under 32 chars"


@dataclass(frozen=True)
class RecordError:
    """Why one record was rejected: ``error_message`` and ``error_path`` of ``/push/_errors``."""

    message: str
    path: str


Check = Callable[[Any, str], "RecordError | None"]


def compact_json(record: Any) -> str:
    """The record's compact JSON encoding, the form whose UTF-8 size the 60 KB limit measures."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def record_size_error(encoded: str) -> RecordError | None:
    """Reference, transport: "at most 60 KB per record; larger fails with `Payload invalid: ...`"."""
    if len(encoded.encode("utf-8")) > MAX_RECORD_BYTES:
        return RecordError(TOO_LARGE, "root")
    return None


# -- scalar checks ---------------------------------------------------------------------------
def string(value: Any, path: str) -> RecordError | None:
    if not isinstance(value, str):
        return RecordError("Invalid type: expected a string", path)
    return None


def non_empty_string(value: Any, path: str) -> RecordError | None:
    if not isinstance(value, str) or not value.strip():
        return RecordError("Invalid value: expected a non-empty string", path)
    return None


def identifier(value: Any, path: str) -> RecordError | None:
    """Reference, record shapes: "IDs are strings and must not contain personal data".

    *(sandbox rule)* an id holding ``@`` is taken for an email and rejected; so is a blank one.
    """
    if not isinstance(value, str):
        return RecordError("Invalid type: ids must be strings", path)
    if not value.strip():
        return RecordError("Invalid id: must not be empty", path)
    if "@" in value:
        return RecordError("Invalid id: ids must not contain personal data", path)
    return None


def number(value: Any, path: str) -> RecordError | None:
    """Reference: "Money is a JSON number". Strings ("12.50") and booleans are not numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return RecordError("Invalid type: expected a number", path)
    return None


def boolean(value: Any, path: str) -> RecordError | None:
    if not isinstance(value, bool):
        return RecordError("Invalid type: expected a boolean", path)
    return None


def email(value: Any, path: str) -> RecordError | None:
    """Emails must be syntactically valid *(sandbox rule: ASCII, dotted domain, RFC lengths)*."""
    if not isinstance(value, str) or len(value) > 254 or value.count("@") != 1:
        return RecordError("Invalid email address", path)
    local, domain = value.split("@")
    labels = domain.split(".")
    if (
        not local
        or len(local) > 64
        or not _EMAIL_LOCAL.match(local)
        or len(labels) < 2
        or not all(_EMAIL_LABEL.match(label) for label in labels)
        or not labels[-1].isalpha()
        or len(labels[-1]) < 2
    ):
        return RecordError("Invalid email address", path)
    return None


def phone_e164(value: Any, path: str) -> RecordError | None:
    """Reference, contact: "`phone_number` (E.164)", i.e. ``+`` then at most 15 digits."""
    if not isinstance(value, str) or not _E164.match(value):
        return RecordError("Invalid phone number: expected E.164 (+447700900123)", path)
    return None


def gender(value: Any, path: str) -> RecordError | None:
    """Reference, contact: "`gender` (`m|f|o`)", lower case only."""
    if value not in ("m", "f", "o"):
        return RecordError("Invalid value: gender must be one of m, f, o", path)
    return None


def date_ymd(value: Any, path: str) -> RecordError | None:
    """Reference, record shapes: "Dates `YYYY-MM-DD`" (and a real calendar date)."""
    if isinstance(value, str) and _DATE.match(value):
        try:
            date.fromisoformat(value)
            return None
        except ValueError:
            pass
    return RecordError("Invalid date: expected YYYY-MM-DD", path)


def datetime_zoned(value: Any, path: str) -> RecordError | None:
    """Reference: "Datetimes are ISO 8601 with a zone (`2026-10-01T09:12:00Z`)".

    *(sandbox rule)* seconds are required, the separator is ``T``, the offset is ``Z``,
    ``+HH:MM``, ``+HHMM`` or ``+HH`` (Ometria's own example); a naive datetime is rejected.
    """
    if isinstance(value, str) and _DATETIME.match(value):
        try:
            datetime.fromisoformat(value)
            return None
        except ValueError:
            pass
    return RecordError("Invalid datetime: expected ISO 8601 with a time zone", path)


def currency(value: Any, path: str) -> RecordError | None:
    """Reference, order: "`currency` (ISO 4217)": an upper-case code in circulation."""
    if not isinstance(value, str) or value not in ISO_4217:
        return RecordError("Invalid currency: expected an ISO 4217 code", path)
    return None


def marketing_optin(value: Any, path: str) -> RecordError | None:
    """Reference, contact consent: one of the three values; null is not one of them."""
    if value not in MARKETING_OPTIN_VALUES:
        return RecordError("Invalid value: marketing_optin must be one of " + ", ".join(MARKETING_OPTIN_VALUES), path)
    return None


def country_code(value: Any, path: str) -> RecordError | None:
    """*(sandbox rule)* countries are ISO 3166-1 alpha-2, upper case (``GB``)."""
    if not isinstance(value, str) or not _COUNTRY.match(value):
        return RecordError("Invalid country: expected an ISO 3166-1 alpha-2 code", path)
    return None


def timezone_name(value: Any, path: str) -> RecordError | None:
    """*(sandbox rule)* ``timezone`` is an IANA zone name (``Europe/London``)."""
    if isinstance(value, str) and value and not value.startswith("/"):
        try:
            ZoneInfo(value)
            return None
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return RecordError("Invalid timezone: expected an IANA zone name", path)


def url(value: Any, path: str) -> RecordError | None:
    """*(sandbox rule)* URLs are absolute ``http(s)://`` addresses."""
    if not isinstance(value, str) or not _URL.match(value):
        return RecordError("Invalid url: expected an absolute http(s) URL", path)
    return None


def event_type(value: Any, path: str) -> RecordError | None:
    """Reference, custom_event: "`event_type` (pre-agreed with Ometria, under 32 chars)"."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_EVENT_TYPE_CHARS:
        return RecordError(f"Invalid event_type: expected 1 to {MAX_EVENT_TYPE_CHARS} characters", path)
    return None


def list_id(value: Any, path: str) -> RecordError | None:
    """Ometria list ids, as used by ``@add_to_lists`` / ``@remove_from_lists``."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip())):
        return RecordError("Invalid list id: expected a string or an integer", path)
    return None


def ip_address(value: Any, path: str) -> RecordError | None:
    """*(sandbox rule)* an order's ``ip_address`` is an IPv4 or IPv6 address."""
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return None
        except ValueError:
            pass
    return RecordError("Invalid value: expected an IP address", path)


def free_object(value: Any, path: str) -> RecordError | None:
    """``properties{}``: any JSON object, its keys are the merchant's own."""
    if not isinstance(value, dict):
        return RecordError("Invalid type: expected an object", path)
    return None


# -- structured checks -----------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """The fields an object may carry, which of them are required, and which may be null.

    An optional field sent as ``null`` is accepted as "no value" (a blank: what it does to a
    stored value is ``ometria_processing.merge_fields``'s business); required fields and
    ``not_null`` ones never accept null.
    """

    fields: Mapping[str, Check]
    required: tuple[str, ...] = ()
    not_null: tuple[str, ...] = ()
    identity: tuple[str, ...] = ()  # of a record: what an update of an existing one still needs


def shape_error(value: Any, shape: Shape, path: str, *, exists: bool = False) -> RecordError | None:
    """Unknown fields first (the "Unknown field" rule), then required, then each field.

    ``exists``: the record updates one Ometria holds, so only its identity is required.
    """
    if not isinstance(value, dict):
        return RecordError("Invalid type: expected an object", path)
    for key in value:
        if key not in shape.fields:
            return RecordError("Unknown field", f"{path} > {key}")
    for key in shape.identity if exists else shape.required:
        if value.get(key) is None:
            return RecordError("Missing required field", f"{path} > {key}")
    for key, field_value in value.items():
        if field_value is None and key not in shape.not_null:
            continue
        error = shape.fields[key](field_value, f"{path} > {key}")
        if error:
            return error
    return None


def obj(shape: Shape) -> Check:
    return lambda value, path: shape_error(value, shape, path)


def list_of(item: Check) -> Check:
    def check(value: Any, path: str) -> RecordError | None:
        if not isinstance(value, list):
            return RecordError("Invalid type: expected an array", path)
        for index, element in enumerate(value):
            error = item(element, f"{path} > {index}")
            if error:
                return error
        return None

    return check


def _type_tag(value: Any, path: str) -> RecordError | None:
    return None  # already checked for the whole request


# -- the record shapes of the reference ("Record shapes") ------------------------------------
ADDRESS = Shape({"city": string, "state": string, "postcode": string, "country_code": country_code})
ORDER_CUSTOMER = Shape({"id": identifier, "email": email, "firstname": string, "lastname": string})
VARIANT_OPTION = Shape({"id": string, "type": string, "label": string})
LINEITEM = Shape(
    {
        "product_id": identifier,
        "variant_id": identifier,
        "sku": string,
        "quantity": number,
        "unit_price": number,
        "subtotal": number,
        "discount": number,
        "tax": number,
        "total": number,
        "quantity_refunded": number,
        "refunded": number,
        "is_on_sale": boolean,
        "variant_options": list_of(obj(VARIANT_OPTION)),
        "properties": free_object,
    },
    required=("product_id", "quantity"),
)
ATTRIBUTE = Shape({"type": non_empty_string, "id": non_empty_string, "label": string}, required=("type", "id"))
LISTING = Shape(
    {
        "store": non_empty_string,
        "title": string,
        "price": number,
        "special_price": number,
        "currency": currency,
        "is_active": boolean,
        "url": url,
        "image_url": url,
    },
    required=("store",),
)

# rudderlabs/rudder-transformer, src/v0/destinations/ometria/transform.js (identify): every
# contact it pushes carries ``channels.sms`` with these four fields.
SMS_CHANNEL = Shape(
    {
        "allow_marketing": boolean,
        "allow_transactional": boolean,
        "dt_updated_marketing": datetime_zoned,
        "dt_updated_transactional": datetime_zoned,
    }
)
CHANNELS = Shape({"sms": obj(SMS_CHANNEL)})

CONTACT = Shape(
    {
        "@type": _type_tag,
        "@collection": non_empty_string,
        "@merge": boolean,
        "@force_optin": boolean,
        "@add_to_lists": list_of(list_id),
        "@remove_from_lists": list_of(list_id),
        "id": identifier,
        "email": email,
        "customer_id": identifier,
        "firstname": string,
        "middlename": string,
        "lastname": string,
        "prefix": string,
        "gender": gender,
        "date_of_birth": date_ymd,
        "phone_number": phone_e164,
        "country_id": country_code,
        "timezone": timezone_name,
        "store_ids": list_of(non_empty_string),
        "timestamp_acquired": datetime_zoned,
        "marketing_optin": marketing_optin,
        "timestamp_subscribed": datetime_zoned,
        "timestamp_unsubscribed": datetime_zoned,
        "channels": obj(CHANNELS),
        "properties": free_object,
    },
    required=("id", "@collection"),
    not_null=("@collection", "@merge", "@force_optin", "marketing_optin"),
    identity=("id", "@collection"),
)
ORDER = Shape(
    {
        "@type": _type_tag,
        # Ometria's "Merge" support page: "Merge can be used with contact, product and order records".
        "@merge": boolean,
        "id": identifier,
        "timestamp": datetime_zoned,
        "currency": currency,
        "grand_total": number,
        "subtotal": number,
        "discount": number,
        "shipping": number,
        "tax": number,
        "status": string,
        "is_valid": boolean,
        "customer": obj(ORDER_CUSTOMER),
        "store": string,
        "channel": string,
        "web_id": string,
        "coupon_code": string,
        "payment_method": string,
        "shipping_method": string,
        "billing_address": obj(ADDRESS),
        "shipping_address": obj(ADDRESS),
        # rudderlabs/rudder-transformer, src/v0/destinations/ometria/data/OmetriaOrder.json maps
        # the visitor's ``context.ip`` to ``ip_address``.
        "ip_address": ip_address,
        "properties": free_object,
        "lineitems": list_of(obj(LINEITEM)),
    },
    required=("id", "timestamp", "currency", "grand_total", "lineitems"),
    not_null=("@merge",),
    identity=("id",),
)
PRODUCT = Shape(
    {
        "@type": _type_tag,
        "@merge": boolean,
        "id": identifier,
        "title": string,
        "sku": string,
        "url": url,
        "image_url": url,
        "price": number,
        "currency": currency,
        "special_price": number,
        "special_price_dt_from": datetime_zoned,
        "special_price_dt_to": datetime_zoned,
        "is_active": boolean,
        "is_in_stock": boolean,
        "is_variant": boolean,
        "attributes": list_of(obj(ATTRIBUTE)),
        "listings": list_of(obj(LISTING)),
        "properties": free_object,
    },
    required=("id",),
    not_null=("@merge",),
    identity=("id",),
)
CUSTOM_EVENT = Shape(
    {
        "@type": _type_tag,
        "id": identifier,
        "event_type": event_type,
        "timestamp": datetime_zoned,
        "identity_email": email,
        "identity_account_id": identifier,
        "properties": free_object,
    },
    required=("id", "event_type", "timestamp"),
    identity=("id", "event_type", "timestamp"),  # events are not merged: each is sent whole
)
SHAPES: dict[str, Shape] = {"contact": CONTACT, "order": ORDER, "product": PRODUCT, "custom_event": CUSTOM_EVENT}


def id_error(record: dict) -> RecordError | None:
    """Reference, upsert semantics: a record is identified by its ``id``; it must be there."""
    if record.get("id") is None:
        return RecordError("Missing required field", "root > id")
    return identifier(record["id"], "root > id")


def event_identity_error(record: dict) -> RecordError | None:
    """*(sandbox rule)* an event must name whom it is about: ``identity_email`` or ``identity_account_id``."""
    if record.get("identity_email") is None and record.get("identity_account_id") is None:
        return RecordError("Missing identity: identity_email or identity_account_id is required", "root > identity_email")
    return None


def validate_record(record: dict, encoded: str, *, exists: bool = False) -> RecordError | None:
    """The first reason ``record`` (of a known ``@type``) is rejected at push time, or None.

    ``exists``: Ometria holds (or has queued) a record with this identity, so this one may be
    partial; a new one needs every required field.
    """
    return (
        record_size_error(encoded)
        or id_error(record)
        or shape_error(record, SHAPES[record["@type"]], "root", exists=exists)
        or (event_identity_error(record) if record["@type"] == "custom_event" else None)
    )


def creation_error(record_type: str, record: dict) -> RecordError | None:
    """Processing: a record that turned out to create (nothing stored under its identity when
    its turn came) must carry every required field."""
    for key in SHAPES[record_type].required:
        if record.get(key) is None:
            return RecordError("Missing required field", f"root > {key}")
    return None


def is_blank(value: Any) -> bool:
    """"Blank data in a field" (Ometria's "Merge" page): null or an empty string."""
    return value is None or value == ""
