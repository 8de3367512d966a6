"""Khaos Control XML documents -> canonical records, one ``Parsed`` per record.

The shapes are docs/khaos-soap.md's. What this module promises its callers (``pull``, the
file source, the SOAP client):

- **Document level is all or nothing.** ``parse_*`` checks the whole document before it
  returns the iterator: malformed XML, a DTD or entity declaration, an external or undefined
  entity reference, invalid UTF-8 or the wrong root element raise ``DocumentError`` then,
  never halfway through. No other exception escapes for a bad document. (One cheap extra
  pass of expat with no callbacks, about 30 us per order: worth it so that a truncated
  response can never be half-staged.)
- **Record level never raises.** Every record element becomes exactly one ``Parsed``:
  ``record`` is the model, or ``None`` when the record has no usable key or a value of the
  wrong type; ``problems`` lists ``RecordError``s (stage ``"pull"``) whose reason names the
  field and the bad value. A record that parses but breaks a rule (bad contact email, no
  contacts, unknown currency, negative quantity, missing order date, totals that do not
  add up) keeps its ``record`` *and* carries the problems, so it is staged with its
  exception rather than dropped.
- **Duplicates within one document**: the first occurrence of a key wins; every later one
  carries a problem of kind ``duplicate_in_response``. With the same content it keeps its
  record (it says nothing new: ``Parsed.duplicate == "identical"``, safe to skip); with
  different content it gets ``record=None`` and the reason names the fields that differ
  (``Parsed.duplicate == "different"``), because we cannot tell which of the two KC meant.
- **Streaming.** Records are built element by element with ``iterparse`` and each element
  is cleared after use, so memory follows one record, not the document's tree.

Conventions (London local datetimes, ``-1``/``0`` booleans, ``1899-12-31`` "no date",
decimals) are converted by ``khaosync.khaos.convert`` only.
"""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.common import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser
from defusedxml.ElementTree import iterparse as defused_iterparse
from pydantic import BaseModel, ValidationError

from khaosync.errors import KhaosyncError, RecordError
from khaosync.khaos import convert
from khaosync.khaos.convert import ConversionError
from khaosync.khaos.models import (
    Company,
    ErpRecord,
    OrderStatus,
    SalesOrder,
    StockItem,
    StockStatus,
    canonical_json,
    content_hash,
)

from khaosync.currency import CURRENCIES, is_currency, minor_units  # noqa: F401 (re-exported)

STAGE = "pull"
# No KC record is anywhere near this (a large order with its status is a few KB): a record
# over it is staged with a problem rather than passed on silently.
MAX_RECORD_BYTES = 1 * 2**20
DUPLICATE = "duplicate_in_response"  # an exception type (khaosync.findings)

# One currency list for pull and map (khaosync/currency.py).
ISO_4217 = CURRENCIES

ORDER_STATUSES: frozenset[str] = frozenset({"Received", "Shipping", "PartialShip", "Complete", "Cancelled"})

# Deliberately simple and strict: one @, a non-empty local part, a dotted domain whose labels
# are non-empty, no whitespace anywhere. Not RFC 5322; it catches what breaks a send.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")

# A stable id: ASCII digits, no sign (int() alone would also take "-3", "1_0" and "١٢").
_NUMERIC_KEY = re.compile(r"[0-9]+")


def is_email(text: str) -> bool:
    return _EMAIL.fullmatch(text) is not None


# -- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    """One record out of a document, with what was wrong with it.

    ``raw`` is the record's own element serialised back as UTF-8 XML (or, for the file
    source, the CSV header and rows), so ``pull`` keeps exactly what the ERP said.
    """

    entity: str
    key: str | None
    raw: bytes
    record: BaseModel | None
    problems: list[RecordError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """A record and no problems at all."""
        return self.record is not None and not self.problems

    @property
    def duplicate(self) -> str | None:
        """``"identical"`` or ``"different"`` for a later copy of a key already seen in the
        document (the first copy is the one to keep), ``None`` for a first occurrence."""
        if not any(p.kind == DUPLICATE for p in self.problems):
            return None
        return "identical" if self.record is not None else "different"


class DocumentError(KhaosyncError):
    """A whole document could not be read safely; nothing in it should be staged."""

    def __init__(self, reason: str, *, source: str | None = None):
        self.reason = reason
        self.source = source
        super().__init__(f"{source}: {reason}" if source else reason)


def problem(entity: str, key: str | None, reason: str, kind: str = "malformed_record") -> RecordError:
    return RecordError(entity=entity, key=key, stage=STAGE, reason=reason, kind=kind)


def show(value: object, limit: int = 60) -> str:
    """A bad value for a reason: repr, cut short so a runaway field cannot flood a report."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        return repr(text[:limit]) + f"... ({len(text)} chars)"
    return repr(text)


# -- the document level --------------------------------------------------------------


class _NoTarget:
    """An expat target with no callbacks: the check pass runs at C speed and builds nothing."""


class _RootFound(Exception):
    def __init__(self, tag: str):
        self.tag = tag


class _RootSniffer:
    """A target that stops the parser at the first element: the root's name, for free."""

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        raise _RootFound(tag)


_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")


def _check_utf8(doc: bytes) -> None:
    # Expat would reject bad UTF-8 too, but as "not well-formed (invalid token)"; say what it is.
    head = doc[:200].lstrip(b"\xef\xbb\xbf")
    declared = _XML_DECL.match(head)
    if declared and declared.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        return  # a declared encoding is expat's to honour (and to refuse if it cannot)
    try:
        doc.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not valid UTF-8: byte 0x{doc[exc.start]:02x} at offset {exc.start}") from None


def _document_error(exc: BaseException) -> DocumentError:
    if isinstance(exc, DTDForbidden):
        return DocumentError(f"refused: the document declares a DTD ({exc.name!r}); DTDs are not accepted")
    if isinstance(exc, EntitiesForbidden):
        return DocumentError(f"refused: the document declares entity {exc.name!r}")
    if isinstance(exc, ExternalReferenceForbidden):
        return DocumentError(f"refused: external reference to {exc.sysid!r}")
    if isinstance(exc, ET.ParseError):
        return DocumentError(f"malformed XML: {exc}")
    return DocumentError(f"unreadable document: {type(exc).__name__}: {exc}")


# Everything expat, defusedxml or a codec can raise for a bad document.
_DOCUMENT_FAILURES = (ET.ParseError, DefusedXmlException, UnicodeError, LookupError, ValueError, SyntaxError)


def _defused_parser(target: object) -> DefusedXMLParser:
    return DefusedXMLParser(target=target, forbid_dtd=True, forbid_entities=True, forbid_external=True)


_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
         (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_DECLARATION_TEXT = re.compile(r"^\s*<\?xml[^>]*?\?>")
_DECLARED_ENCODING = re.compile(r"""encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def as_utf8(doc: bytes) -> bytes:
    """The document as UTF-8, whatever its byte-order mark or XML declaration says it is in
    (a Windows export may be UTF-16 with a BOM, or windows-1252): every later step, salvage
    included, then reads one encoding. The declaration is dropped, since it would now lie.
    A document that does not decode as it says is returned as it is, for the parser to refuse
    by name. Plain UTF-8 (the usual case) is returned untouched, at no cost."""
    if not isinstance(doc, (bytes, bytearray)):
        return doc
    encoding = None
    body = bytes(doc)
    for bom, name in _BOMS:
        if body.startswith(bom):
            encoding, body = name, body[len(bom):]
            break
    if encoding is None:
        if body[:2] in (b"<\x00", b"\x00<"):
            encoding = "utf-16-le" if body[:1] == b"<" else "utf-16-be"
        else:
            head = body[:200]
            declared = _XML_DECL.match(head)
            if declared is None or declared.group(1).lower().replace(b"_", b"-") in (b"utf-8", b"utf8"):
                return body
            encoding = declared.group(1).decode("ascii")
    try:
        text = body.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return bytes(doc)
    match = _DECLARATION_TEXT.match(text)
    if match:
        text = text[match.end():]
    return text.encode("utf-8")


def check_document(doc: bytes, root_tag: str | None = None) -> None:
    """Raise ``DocumentError`` unless ``doc`` is well-formed, safe XML in a known encoding
    (and, if ``root_tag`` is given, has that root element)."""
    if not isinstance(doc, (bytes, bytearray)):
        raise DocumentError(f"expected the document as bytes, got {type(doc).__name__}")
    _check_utf8(bytes(doc))
    parser = _defused_parser(_NoTarget())
    try:
        parser.feed(doc)
        parser.close()
    except _DOCUMENT_FAILURES as exc:
        raise _document_error(exc) from None
    if root_tag is None:
        return
    try:
        _defused_parser(_RootSniffer()).feed(doc)
    except _RootFound as found:
        if _local(found.tag) != root_tag:
            raise DocumentError(f"expected a <{root_tag}> document, got <{_local(found.tag)}>") from None
    except _DOCUMENT_FAILURES as exc:  # pragma: no cover - the full pass above has seen it
        raise _document_error(exc) from None


def _local(tag: str) -> str:
    # Tolerate a default namespace on a site's export: compare local names only.
    return tag.rsplit("}", 1)[-1] if tag[:1] == "{" else tag


def _record_elements(doc: bytes, root_tag: str) -> Iterator[ET.Element]:
    """The root's children, one at a time; each is cleared after the caller has used it."""
    depth = 0
    root: ET.Element | None = None
    events = defused_iterparse(
        io.BytesIO(doc), events=("start", "end"), forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    try:
        for event, elem in events:
            if event == "start":
                depth += 1
                if depth == 1:
                    if _local(elem.tag) != root_tag:
                        raise DocumentError(f"expected a <{root_tag}> document, got <{_local(elem.tag)}>")
                    root = elem
                continue
            depth -= 1
            if depth == 1:
                yield elem
                assert root is not None
                root.clear()  # drop the record's tree: memory follows one record
    except _DOCUMENT_FAILURES as exc:  # pragma: no cover - check_document has seen it; a seatbelt
        raise _document_error(exc) from None


def _escape_text(text: str) -> str:
    if "&" in text or "<" in text or ">" in text:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text


def _escape_attribute(text: str) -> str:
    return (_escape_text(text).replace('"', "&quot;").replace("\r", "&#13;").replace("\n", "&#10;")
            .replace("\t", "&#09;"))


class _Namespaced(Exception):
    """The element uses namespaces: leave it to ElementTree's full serialiser."""


def _serialise(elem: ET.Element, parts: list[str]) -> None:
    tag = elem.tag
    if tag[:1] == "{":
        raise _Namespaced
    parts.append("<" + tag)
    for name, value in elem.attrib.items():
        if name[:1] == "{":
            raise _Namespaced
        parts.append(f' {name}="{_escape_attribute(value)}"')
    if elem.text or len(elem):
        parts.append(">")
        if elem.text:
            parts.append(_escape_text(elem.text))
        for child in elem:
            _serialise(child, parts)
            if child.tail:
                parts.append(_escape_text(child.tail))
        parts.append(f"</{tag}>")
    else:
        parts.append("/>")


def _raw(elem: ET.Element) -> bytes:
    """The record's element as UTF-8 XML, without the whitespace that followed it.

    A plain serialiser, three times faster than ``ET.tostring`` on the records KC sends
    (no namespaces); it is on the hot path of a 10,000-order export.
    """
    parts: list[str] = []
    try:
        _serialise(elem, parts)
    except _Namespaced:
        tail, elem.tail = elem.tail, None
        text = ET.tostring(elem, encoding="unicode")
        elem.tail = tail
        return text.encode("utf-8")
    return "".join(parts).encode("utf-8")


# -- reading one element -------------------------------------------------------------


class _Reader:
    """One element's children by tag, converted with KC's conventions.

    A value that does not convert is recorded in ``errors`` (which makes the record
    unusable) with its path and value, and read as ``INVALID``.
    """

    __slots__ = ("elem", "path", "errors", "_first")

    def __init__(self, elem: ET.Element, path: str, errors: list[str]):
        self.elem = elem
        self.path = path
        self.errors = errors
        self._first: dict[str, ET.Element] = {}
        for child in elem:
            self._first.setdefault(_local(child.tag), child)

    def where(self, tag: str) -> str:
        return f"{self.path}{tag}"

    def raw(self, tag: str) -> str | None:
        child = self._first.get(tag)
        return None if child is None else (child.text or "").strip()

    def text(self, tag: str) -> str:
        return self.raw(tag) or ""

    def optional_text(self, tag: str) -> str | None:
        return self.raw(tag) or None

    # The converters return ``Any``: a value, None (blank), or INVALID.
    def _convert(self, tag: str, fn: Callable[[str | None], Any], what: str, value: str | None = None,
                 where: str | None = None) -> Any:
        value = self.raw(tag) if where is None else value
        try:
            return fn(value)
        except ConversionError:
            self.errors.append(f"{where or self.where(tag)}: not {what}: {show(value)}")
            return INVALID

    # Attributes: ORDER_STATUS, INVOICE, BOX and STOCK_STATUS's STOCK_ITEM carry their data so.
    def attr(self, name: str) -> str:
        return (self.elem.get(name) or "").strip()

    def _attr(self, name: str, fn: Callable[[str | None], Any], what: str) -> Any:
        return self._convert(name, fn, what, self.elem.get(name), f"{self.path.rstrip('/') or _local(self.elem.tag)}@{name}")

    def attr_int(self, name: str) -> int | None:
        return self._attr(name, convert.kc_int, "an integer")

    def attr_decimal(self, name: str) -> Decimal | None:
        return self._attr(name, convert.kc_decimal, "a decimal")

    def attr_bool(self, name: str) -> bool | None:
        return self._attr(name, convert.kc_bool, "a KC boolean (-1/0)")

    def attr_uk_date(self, name: str) -> date | None:
        return self._attr(name, convert.kc_uk_date, "a date (DD/MM/YYYY)")

    def attr_uk_datetime(self, name: str) -> datetime | None:
        return self._attr(name, convert.kc_uk_date_to_utc, "a date (DD/MM/YYYY)")

    def uk_date(self, tag: str) -> date | None:
        return self._convert(tag, convert.kc_uk_date, "a date (DD/MM/YYYY)")

    def uk_datetime(self, tag: str) -> datetime | None:
        return self._convert(tag, convert.kc_uk_date_to_utc, "a date (DD/MM/YYYY)")

    def child_attr(self, tag: str, name: str) -> str:
        element = self._first.get(tag)
        return "" if element is None else (element.get(name) or "").strip()

    def child_attr_int(self, tag: str, name: str) -> int | None:
        child = self.child(tag)
        return None if child is None else child.attr_int(name)

    def child_attr_decimal(self, tag: str, name: str) -> Decimal | None:
        child = self.child(tag)
        return None if child is None else child.attr_decimal(name)

    def int(self, tag: str) -> int | None:
        return self._convert(tag, convert.kc_int, "an integer")

    def decimal(self, tag: str) -> Decimal | None:
        return self._convert(tag, convert.kc_decimal, "a decimal")

    def datetime(self, tag: str) -> datetime | None:
        return self._convert(tag, convert.kc_datetime_to_utc, "a KC datetime (YYYY-MM-DDTHH:MM:SS)")

    def date(self, tag: str) -> date | None:
        return self._convert(tag, convert.kc_date, "a KC date")

    def bool(self, tag: str) -> bool | None:
        return self._convert(tag, convert.kc_bool, "a KC boolean (-1/0)")

    def child(self, tag: str) -> _Reader | None:
        element = self._first.get(tag)
        return None if element is None else _Reader(element, f"{self.where(tag)}/", self.errors)

    def each(self, container: str | None, tag: str) -> Iterator[_Reader]:
        """Readers for ``container/tag`` children (``container`` None: this element's own
        ``tag`` children, as an INVOICE's BOXes), paths numbered from 1 (``ORDER_ITEM[2]/``).

        An element with nothing in it (``<CONTACT/>``, ``<INVOICE />``: the vendor's documents
        show such placeholders) holds no data and is passed over."""
        holder = self.elem if container is None else self._first.get(container)
        if holder is None:
            return
        prefix = self.path if container is None else f"{self.where(container)}/"
        n = 0
        for element in holder:
            if _local(element.tag) == tag:
                n += 1
                if _is_empty(element):
                    continue
                yield _Reader(element, f"{prefix}{tag}[{n}]/", self.errors)

    def named(self, tag: str) -> dict[str, str]:
        """``<TAG NAME="x">v</TAG>`` children (ADDITIONAL, USER_DEFINED) as ``{x: v}``."""
        out: dict[str, str] = {}
        for element in self.elem:
            if _local(element.tag) == tag:
                name = element.get("NAME")
                if not name:
                    self.errors.append(f"{self.where(tag)}: no NAME attribute (value {show(element.text or '')})")
                    continue
                out[name] = (element.text or "").strip()
        return out

    def texts(self, container: str, tag: str, leaf: str | None = None) -> list[str]:
        """Non-empty texts of ``container/tag`` (or ``container/tag/leaf``), in order."""
        holder = self._first.get(container)
        if holder is None:
            return []
        out = []
        for element in holder:
            if _local(element.tag) != tag:
                continue
            holding = element if leaf is None else element.find(leaf)
            if holding is None:
                continue
            text = (holding.text or "").strip()
            if text:
                out.append(text)
        return out


def _is_empty(element: ET.Element) -> bool:
    return not element.attrib and len(element) == 0 and not (element.text or "").strip()


class _Invalid:
    """Stands in for a value that did not convert.

    It fails model validation wherever it lands, so the record is unusable, but the
    validator still reports every *other* field that is wrong (a missing price as well
    as a bad date) in one pass; its own error is dropped, the converter already said it
    better.
    """

    def __repr__(self) -> str:
        return "<invalid>"

    def __bool__(self) -> bool:
        return False


INVALID: Any = _Invalid()


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    # Absent and blank values fall back to the model's defaults; required ones then fail
    # validation by name.
    return {k: v for k, v in values.items() if v is not None}


# -- one record ----------------------------------------------------------------------


@dataclass
class _Outcome:
    key: str | None = None
    fields: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)  # make the record unusable


def _read_key(reader: _Reader | None, tag: str, label_tag: str, out: _Outcome) -> int | None:
    """The stable numeric id (also set as ``out.key``). Missing or not a number: ``None``,
    with the code beside it in the error so a person can find the record in KC."""
    if reader is None:
        out.errors.append(f"{tag}: missing (no enclosing element with it)")
        return None
    value = reader.raw(tag)
    label = reader.text(label_tag)
    hint = f" ({label_tag} {show(label)})" if label else ""
    if not value:
        out.errors.append(f"{reader.where(tag)}: missing{hint}")
        return None
    if not _NUMERIC_KEY.fullmatch(value):
        out.errors.append(f"{reader.where(tag)}: not a numeric id: {show(value)}{hint}")
        return None
    key = int(value)
    out.key = str(key)  # "0012" and "12" are the same KC id
    return key


def _invoice_fields(r: _Reader) -> dict[str, Any]:
    """An ``INVOICE`` as ExportOrderStatusEx writes it: everything in attributes, dates
    ``DD/MM/YYYY``, ``BOX`` children. The courier's ``CONSIGNMENT_REF`` is the tracking
    reference ("Tracking reference for invoice from Courier"), so it is the tracking number."""
    consignment = r.attr("CONSIGNMENT_REF")
    return _drop_none({
        "invoice_id": r.attr_int("INVOICE_ID"),
        "invoice_code": r.attr("INVOICE_CODE"),
        "stage_id": r.attr_int("INVOICE_STAGE_ID"),
        "stage_desc": r.attr("INVOICE_STAGE_DESC"),
        "invoice_date": r.attr_uk_date("INVOICE_DATE"),
        "ship_date": r.attr_uk_date("SHIP_DATE"),
        "issue_date": r.attr_uk_date("ISSUE_DATE"),
        "issued": r.attr_uk_datetime("ISSUE_DATE"),
        "consignment_ref": consignment,
        "courier_name": r.attr("COURIER"),
        "tracking_number": consignment,
        "tracking_url": r.attr("TRACKING_URL"),
        "qty_sold": r.attr_decimal("QTY_SOLD"),
        "qty_sent": r.attr_decimal("QTY_SENT"),
        "moved": r.attr_bool("MOVED"),
        "boxes": [
            _drop_none({"shipped": b.attr_bool("SHIPPED"), "ship_date": b.attr_uk_date("SHIP_DATE"),
                        "courier": b.attr("COURIER"), "consignment_ref": b.attr("CONSIGNMENT_REF"),
                        "tracking_url": b.attr("TRACKING_URL")})
            for b in r.each(None, "BOX")
        ],
    })


_ADDRESS_TYPES = {"1": "Invoice", "2": "Delivery"}


def _company(elem: ET.Element) -> _Outcome:
    out = _Outcome()
    r = _Reader(elem, "", out.errors)
    key = _read_key(r, "COMPANY_ID", "COMPANY_CODE", out)
    if key is None:
        return out
    out.fields = _drop_none({
        "company_id": key,
        "company_code": r.text("COMPANY_CODE"),
        "name": r.text("COMPANY_NAME"),
        "other_ref": r.text("OTHER_REF"),
        "company_class": r.text("COMPANY_CLASS"),
        "status": r.text("COMPANY_STATUS"),
        "web_user": r.text("WEB_USER"),
        "mailing_status": r.int("MAILING_STATUS"),
        "currency": r.text("CURRENCY_CODE"),
        "date_created": r.uk_datetime("DATE_CREATED"),
        "last_updated": r.datetime("LAST_UPDATED"),
        "additional": r.named("ADDITIONAL"),
    })
    addresses: list[dict[str, Any]] = []
    contacts: list[dict[str, Any]] = []
    for a in r.each("ADDRESSES", "ADDRESS"):
        address_id = a.int("ADDRESS_ID")
        kind = a.text("ADDRTYPE")
        addresses.append(_drop_none({
            "address_id": address_id, "organisation": a.text("ORGANISATION"), "addr1": a.text("ADDR1"),
            "addr2": a.text("ADDR2"), "addr3": a.text("ADDR3"), "town": a.text("TOWN"), "county": a.text("COUNTY"),
            "postcode": a.text("POSTCODE"), "country": a.text("COUNTRY"), "country_code": a.text("COUNTRY_CODE"),
            "email": a.text("EMAIL"), "tel": a.text("TEL"), "addr_type": _ADDRESS_TYPES.get(kind, kind),
            "inactive": a.bool("INACTIVE"),
        }))
        # The vendor's document keeps contacts inside the address they belong to.
        contacts += [_contact_fields(c, address_id) for c in a.each("CONTACTS", "CONTACT")]
    # A site export that lists contacts at company level loses nothing either.
    contacts += [_contact_fields(c, None) for c in r.each("CONTACTS", "CONTACT")]
    out.fields.update(addresses=addresses, contacts=contacts)
    return out


def _contact_fields(c: _Reader, address_id: int | None) -> dict[str, Any]:
    return _drop_none({
        "contact_id": c.int("CONTACT_ID"), "address_id": address_id, "title": c.text("TITLE"),
        "forename": c.text("FORENAME"), "surname": c.text("SURNAME"), "email": c.text("EMAIL"),
        "mobile": c.text("MOBILE"), "tel": c.text("TEL"), "dob": c.date("DOB"),
        "email_subscribe": c.bool("EMAILSUBSCRIBE"), "mailing_flag": c.bool("MAILING_FLAG"),
        "inactive": c.bool("INACTIVE"),
    })


def _stock_fields(r: _Reader) -> dict[str, Any]:
    """The fields a ``STOCK_ITEM`` and an ``SCS_ITEM`` share ("tags all have same format")."""
    return _drop_none({
        "stock_code": r.text("STOCK_CODE"),
        "other_ref": r.text("ASSOCIATED_REF") or r.text("OTHER_REF"),
        "description": r.text("STOCK_DESC") or r.text("DESCRIPTION"),
        "long_description": r.text("LONG_DESC"),
        "web_teaser": r.text("WEB_TEASER"),
        "sell_price": r.decimal("SELL_PRICE"),
        "sell_price_web": r.decimal("SELL_PRICE_WEB"),
        "sell_price_is_net": r.bool("SELL_PRICE_NET"),
        "vat_rate": r.decimal("VAT_RATE"),
        "deleted": r.bool("DELETED"),
        "web": r.bool("WEB"),
        "discontinued": r.bool("DISCONTINUED"),
        "stock_top_type": r.text("STOCK_TTYPE"),
        "stock_type": r.text("STOCK_TYPE"),
        "stock_type_id": r.text("STOCK_TYPE_ID"),
        "stock_mid_type": r.text("STOCK_MID_TYPE"),
        "stock_sub_type": r.text("STOCK_SUB_TYPE"),
        "manufacturer": r.text("MANUFACTURER"),
        "last_updated": r.datetime("LAST_UPDATED"),
        "barcodes": r.texts("BARCODES", "BARCODE"),
        "user_defined": r.named("USER_DEFINED"),
        "options": r.named("OPTION"),
        "images": r.texts("STOCK_IMAGES", "STOCK_IMAGE", "FILE_NAME"),
    })


# What a child takes from its parent when its own tag is blank: the vendor's note says the
# IS_NET flags "are not included for SCS children as the value from the parent should be
# inherited"; the rest is what a product page needs and a child seldom repeats.
_INHERITED = ("sell_price_is_net", "vat_rate", "stock_top_type", "stock_type", "stock_type_id", "stock_mid_type",
              "stock_sub_type", "manufacturer", "web_teaser", "long_description", "description")
_SCS_NAMES = {"style": "style", "colour": "colour", "color": "colour", "size": "size"}


def _stock_item(elem: ET.Element) -> list[tuple[_Outcome, bytes | None]]:
    """A ``STOCK_ITEM``, and when it carries an ``SCS`` tree, each ``SCS_ITEM`` in it as a
    variant of its own, linked both ways (child ``parent_id``/``parent_code``, parent
    ``variant_codes``). ``None`` as raw means the element's own bytes."""
    out = _Outcome()
    r = _Reader(elem, "", out.errors)
    key = _read_key(r, "STOCK_ID", "STOCK_CODE", out)
    if key is None:
        return [(out, None)]
    parent = {"stock_id": key, **_stock_fields(r), "parent_id": r.int("PARENT_ID"),
              "parent_code": r.optional_text("PARENT_CODE")}
    out.fields = _drop_none(parent)
    scs = r.child("SCS")
    if scs is None:
        return [(out, None)]
    headings: dict[int, str] = {}
    for element in scs.elem:
        if _local(element.tag) == "HEADING" and (level := (element.get("LEVEL") or "").strip()).isdigit():
            headings[int(level)] = (element.text or "").strip()
    children: list[tuple[_Outcome, bytes | None]] = []
    for item, path in _scs_items(scs.elem, []):
        child = _Outcome()
        cr = _Reader(item, "", child.errors)
        child_key = _read_key(cr, "STOCK_ID", "STOCK_CODE", child)
        if child_key is not None:
            fields = {"stock_id": child_key, **_stock_fields(cr), "parent_id": key,
                      "parent_code": out.fields.get("stock_code")}
            for name in _INHERITED:
                if fields.get(name) in (None, "") and out.fields.get(name) not in (None, ""):
                    fields[name] = out.fields[name]
            levels = {headings.get(n, f"Level {n}"): text for n, text in enumerate(path, 1) if text}
            named = {_SCS_NAMES[h.casefold()]: v for h, v in levels.items() if h.casefold() in _SCS_NAMES}
            fields["scs"] = {**named, "levels": levels}
            child.fields = _drop_none(fields)
        children.append((child, _raw(item)))
    out.fields["variant_codes"] = [c.fields["stock_code"] for c, _ in children
                                   if c.fields and c.fields.get("stock_code")]
    return [(out, None), *children]


def _scs_items(holder: ET.Element, path: list[str]) -> Iterator[tuple[ET.Element, list[str]]]:
    """Every ``SCS_ITEM`` under nested ``STYLE``s, with the ``DESCRIPTION`` of each style on
    the way down (level 1 first); up to four levels, as the vendor's template allows."""
    for element in holder:
        tag = _local(element.tag)
        if tag == "SCS_ITEM" and not _is_empty(element):
            yield element, path
        elif tag == "STYLE":
            description = (element.findtext("DESCRIPTION") or "").strip()
            yield from _scs_items(element, [*path, description])


def _stock_status(elem: ET.Element, site: str = "") -> _Outcome:
    """``STOCK_STATUS/STOCK_ITEM CODE= ID= DESC= OTHER_REF=`` with LEVEL, STATUS, prices."""
    out = _Outcome()
    r = _Reader(elem, "", out.errors)
    code = r.attr("CODE")
    if not code:
        ref = r.attr("ID")
        out.errors.append("STOCK_ITEM@CODE: missing" + (f" (ID {show(ref)})" if ref else ""))
        return out
    out.key = code
    out.fields = _drop_none({
        "stock_code": code, "stock_ref": r.attr("ID"), "site": site, "description": r.attr("DESC"),
        "other_ref": r.attr("OTHER_REF"), "sell_price": r.decimal("SELL_PRICE"), "level": r.decimal("LEVEL"),
        "status": r.int("STATUS"), "lead_time": r.date("LEAD_TIME"),
    })
    return out


def _sales_order(elem: ET.Element) -> _Outcome:
    out = _Outcome()
    r = _Reader(elem, "", out.errors)
    header = r.child("ORDER_HEADER")
    key = _read_key(header, "SORDER_ID", "SORDER_CODE", out)
    if key is None:
        return out
    assert header is not None
    customer = r.child("CUSTOMER_DETAIL") or _Reader(ET.Element("CUSTOMER_DETAIL"), "CUSTOMER_DETAIL/", out.errors)
    out.fields = _drop_none({
        "sorder_id": key,
        "sorder_code": header.text("SORDER_CODE"),
        "associated_ref": header.text("ASSOCIATED_REF"),
        "company_id": customer.int("COMPANY_ID"),
        "company_code": customer.text("COMPANY_CODE"),
        "contact_id": customer.int("CONTACT_ID"),
        "web_user": customer.text("WEB_USER"),
        "order_date": header.datetime("ORDER_DATE"),
        "last_updated": header.datetime("LAST_UPDATED"),
        "order_amount": header.decimal("ORDER_AMOUNT"),
        "currency": header.text("ORDER_CURRENCY_CODE"),
        "site": header.text("SITE"),
        "sales_source": header.text("SALES_SOURCE"),
        "website_name": header.text("WEBSITE_NAME"),
        "delivery_net": header.decimal("DELIVERY_NET"),
        "delivery_tax": header.decimal("DELIVERY_TAX"),
        "delivery_gross": header.decimal("DELIVERY_GRS"),
        "courier_code": header.text("COURIER_CODE"),
        "keycode_code": header.text("KEYCODE_CODE"),
        "order_type": header.int("ORDER_TYPE"),  # (assumed) the status document's 1 / 2, if the export has it
        "cancelled": header.bool("CANCELLED"),
        "lines": [
            _drop_none({
                "sorder_item_id": i.int("SORDER_ITEM_ID"), "stock_id": i.int("STOCK_ID"),
                "stock_code": i.text("STOCK_CODE"), "mapping_type": i.int("MAPPING_TYPE"),
                "description": i.text("STOCK_DESC"), "qty": i.decimal("ORDER_QTY"),
                "price_net": i.decimal("PRICE_NET"), "price_gross": i.decimal("PRICE_GRS"),
                "tax_rate": i.decimal("TAX_RATE"), "discount": i.decimal("KSD_DISCOUNT"),
            })
            for i in r.each("ORDER_ITEMS", "ORDER_ITEM")
        ],
        # Not in the contract's export, but a site whose export carries them loses nothing.
        "invoices": [_invoice_fields(i) for i in r.each("INVOICES", "INVOICE")],
    })
    return out


ISSUED_STAGES = frozenset({70, 71, 72, 73})  # "Both stages indicate that the Invoice has been issued"
SHIPPING_STAGES = frozenset({12, 13, 14, 15, 16, 20})  # picking to awaiting issue


def derived_status(complete: bool | None, cancelled: bool, invoices: list[dict[str, Any]]) -> str:
    """The order's state in KCC's channel words, from what ExportOrderStatusEx says."""
    if cancelled:
        return "Cancelled"
    if complete:
        return "Complete"
    if any(i.get("issue_date") or i.get("stage_id") in ISSUED_STAGES for i in invoices):
        return "PartialShip"
    if any(i.get("stage_id") in SHIPPING_STAGES for i in invoices):
        return "Shipping"
    return "Received"


def _order_status(elem: ET.Element) -> _Outcome:
    """``STATUS_LIST/ORDER_STATUS SORDER_CODE= ASSOCIATED_REF=`` (the vendor's status document)."""
    out = _Outcome()
    r = _Reader(elem, "", out.errors)
    code = r.attr("SORDER_CODE")
    if not code:
        ref = r.attr("ASSOCIATED_REF")
        out.errors.append("ORDER_STATUS@SORDER_CODE: missing" + (f" (ASSOCIATED_REF {show(ref)})" if ref else ""))
        return out
    out.key = code
    order_type = r.child_attr_int("ORDER_TYPE", "TYPE_ID")
    cancelled = r.child("CANCELLED")
    invoices = [_invoice_fields(i) for i in r.each("INVOICES", "INVOICE")]
    complete = r.bool("COMPLETE")
    out.fields = _drop_none({
        "sorder_code": code,
        "associated_ref": r.attr("ASSOCIATED_REF"),
        "company_code": r.child_attr("COMPANY_NAME", "COMPANY_CODE"),
        "company_other_ref": r.child_attr("COMPANY_NAME", "OTHER_REF"),
        "company_name": r.text("COMPANY_NAME"),
        "order_type": order_type,
        "courier": r.text("COURIER"),
        "currency": r.text("CURRENCY_CODE"),
        "date_created": r.uk_date("DATE_CREATED"),
        "delivery_date": r.uk_date("DELIVERY_DATE"),
        "items_total": r.decimal("ITEMS_TOTAL"),
        "items_net": r.child_attr_decimal("ITEMS_TOTAL", "NET_VALUE"),
        "delivery_total": r.decimal("DELIVERY_TOTAL"),
        "delivery_net": r.child_attr_decimal("DELIVERY_TOTAL", "NET_VALUE"),
        "complete": complete,
        "qty_sold": r.decimal("QTY_SOLD"),
        "qty_assigned": r.decimal("QTY_ASSIGNED"),
        "cancellation": None if cancelled is None else _drop_none({
            "when": cancelled.uk_datetime("CANCELLED_DATE_TIME"), "reason": cancelled.text("REASON"),
            "user_name": cancelled.text("USER_NAME"),
        }),
        "status": derived_status(complete if complete is not INVALID else None, cancelled is not None, invoices),
        "invoices": invoices,
    })
    return out


# -- rules: a record that parses but is wrong ----------------------------------------


def _currency_problems(record: ErpRecord, currency: str, field_name: str) -> list[RecordError]:
    if not currency:
        return [problem(record.ENTITY, record.key, f"{field_name}: missing")]
    if not is_currency(currency):
        return [problem(record.ENTITY, record.key, f"{field_name}: unknown currency {show(currency)} (not ISO 4217)")]
    return []


def company_problems(company: Company) -> list[RecordError]:
    """Business rules on a company; the record stays usable."""
    found: list[RecordError] = []
    entity, key = company.ENTITY, company.key
    if not company.company_code:
        found.append(problem(entity, key, "company_code: empty (KC's URN is missing)"))
    if not company.contacts:
        found.append(problem(entity, key, f"contacts: none (company_code {show(company.company_code)})"))
    for contact in company.contacts:
        if contact.email and not is_email(contact.email):
            where = f"contacts[contact_id={contact.contact_id}].email"
            found.append(problem(entity, key, f"{where}: not an email address: {show(contact.email)}"))
    # A company's currency may legitimately be blank on some sites; only a wrong one is wrong.
    if company.currency and not is_currency(company.currency):
        found.append(problem(entity, key, f"currency: unknown currency {show(company.currency)} (not ISO 4217)"))
    return found


def stock_item_problems(stock_item: StockItem) -> list[RecordError]:
    if not stock_item.stock_code:
        return [problem(stock_item.ENTITY, stock_item.key, "stock_code: empty")]
    return []


def expected_order_amount(order: SalesOrder) -> Decimal:
    """What ORDER_AMOUNT should be: each line after discount, rounded to the currency's minor
    unit (half up, as the line would be stored), plus the gross delivery charge.

    Per-line rounding is **(assumed)**; with 2-dp prices and whole quantities it never matters.
    """
    unit = Decimal(1).scaleb(-minor_units(order.currency))
    lines = sum((line.gross_total.quantize(unit, rounding=ROUND_HALF_UP) for line in order.lines), Decimal(0))
    return lines + (order.delivery_gross or Decimal(0))


def sales_order_problems(order: SalesOrder) -> list[RecordError]:
    found: list[RecordError] = []
    entity, key = order.ENTITY, order.key
    found += _currency_problems(order, order.currency, "currency")
    if order.order_date is None:
        found.append(problem(entity, key, "order_date: missing (empty or KC's no-date 1899-12-31)"))
    for n, line in enumerate(order.lines, 1):
        if line.qty < 0:
            where = f"lines[{n}] (sorder_item_id {line.sorder_item_id}).qty"
            found.append(problem(entity, key, f"{where}: negative: {line.qty}"))
    found += _invoice_problems(order, order.invoices)
    if order.order_amount is None:
        found.append(problem(entity, key, "order_amount: missing"))
    else:
        expected = expected_order_amount(order)
        if expected != order.order_amount:
            delivery = order.delivery_gross if order.delivery_gross is not None else "(none)"
            found.append(problem(
                entity, key,
                f"order_amount: {order.order_amount} but lines (qty*PRICE_GRS - KSD_DISCOUNT) + DELIVERY_GRS "
                f"= {expected - (order.delivery_gross or 0)} + {delivery} = {expected} "
                f"(off by {order.order_amount - expected})",
                kind="total_mismatch",
            ))
    return found


def _invoice_problems(record: ErpRecord, invoices: list) -> list[RecordError]:
    found = []
    for invoice in invoices:
        for item in invoice.items:
            if item.qty < 0:
                found.append(problem(
                    record.ENTITY, record.key,
                    f"invoices[{invoice.label}] item sorder_item_id {item.sorder_item_id}: qty negative: {item.qty}",
                ))
        for name in ("qty_sold", "qty_sent"):
            value = getattr(invoice, name)
            if value is not None and value < 0:
                found.append(problem(record.ENTITY, record.key, f"invoices[{invoice.label}].{name}: negative: {value}"))
    return found


def order_status_problems(status: OrderStatus) -> list[RecordError]:
    found = []
    if status.status not in ORDER_STATUSES:
        found.append(problem(
            status.ENTITY, status.key,
            f"status: {show(status.status)} is not one of {', '.join(sorted(ORDER_STATUSES))}",
        ))
    if status.currency and not is_currency(status.currency):
        found.append(problem(status.ENTITY, status.key,
                             f"currency: unknown currency {show(status.currency)} (not ISO 4217)"))
    if status.order_type not in (1, 2):
        found.append(problem(status.ENTITY, status.key,
                             f"order_type: {status.order_type} is neither 1 (sales order) nor 2 (credit note)"))
    return found + _invoice_problems(status, status.invoices)


def stock_status_problems(status: StockStatus) -> list[RecordError]:
    if status.status is not None and not 0 <= status.status <= 5:
        return [problem(status.ENTITY, status.key, f"STATUS: {status.status} is not one of KC's 0-5")]
    return []


# -- documents -----------------------------------------------------------------------


def validation_reasons(exc: ValidationError) -> list[str]:
    """pydantic's errors as "field.path: message (value ...)" reasons."""
    reasons = []
    for err in exc.errors(include_url=False):
        if err.get("input") is INVALID:
            continue  # the converter has reported this one, with the text KC sent
        where = ".".join(str(p) for p in err["loc"]) or "record"
        value = err.get("input")
        shown = "" if isinstance(value, (dict, list)) else f" (value {show(value)})"
        reasons.append(f"{where}: {err['msg']}{shown}")
    return reasons


@dataclass(frozen=True)
class _Kind:
    entity: str
    root: str
    record: str
    model: type[ErpRecord]
    # One record element -> its records: (outcome, raw or None for the element's own bytes).
    # Most elements are one record; a stock item with an SCS tree is its parent and each child.
    build: Callable[[ET.Element], Any]
    rules: Callable[[Any], list[RecordError]]


class _Duplicates:
    """First occurrence of each key wins; later ones are compared with it.

    Holds each first occurrence's raw bytes and hash (memory bounded by the document, which
    the caller holds anyway); the rare duplicate is compared field by field.
    """

    def __init__(self, kind: _Kind):
        self.kind = kind
        self.first: dict[str, tuple[bytes, BaseModel | None]] = {}

    def check(self, parsed: Parsed) -> Parsed:
        if parsed.key is None:
            return parsed
        seen = self.first.get(parsed.key)
        if seen is None:
            # Bytes only, so memory follows the document and not its records; a stock item's
            # record is kept too (an SCS child's bytes are not a STOCK_ITEM to re-read), and
            # stock answers are small (khaos.stock_batch items).
            self.first[parsed.key] = (parsed.raw, parsed.record if self.kind.entity == "stock_item" else None)
            return parsed
        entity, key = self.kind.entity, parsed.key
        first_raw, first = seen
        if first is None and first_raw != parsed.raw:
            first = _parse_element(self.kind, ET.fromstring(first_raw))[0].record
        if first_raw == parsed.raw or (
            first is not None and parsed.record is not None and content_hash(first) == content_hash(parsed.record)
        ):
            dup = problem(entity, key, f"key {key} appears again in this document with identical content; "
                                       "the first occurrence is kept", kind=DUPLICATE)
            return Parsed(entity, key, parsed.raw, parsed.record, [*parsed.problems, dup])
        differs = self._differing_fields(first, parsed)
        dup = problem(entity, key, f"key {key} appears again in this document with different content "
                                   f"({differs}); the first occurrence is kept", kind=DUPLICATE)
        return Parsed(entity, key, parsed.raw, None, [*parsed.problems, dup])

    @staticmethod
    def _differing_fields(first: BaseModel | None, second: Parsed) -> str:
        if first is None or second.record is None:
            return "one of the two does not parse"
        # Compare canonical forms: "1.10" then "1.1" is a difference in what KC said.
        a, b = json.loads(canonical_json(first)), json.loads(canonical_json(second.record))
        names = sorted(k for k in a if a[k] != b.get(k))
        shown = []
        for name in names:
            if isinstance(a[name], (list, dict)):
                shown.append(name)
            else:
                shown.append(f"{name} {show(a[name], 30)} then {show(b[name], 30)}")
        return "differs in " + ", ".join(shown)


# Values khaosync must never keep, even in the raw it stages: the vendor's company document
# carries the customer's website password.
_REDACT = {"COMPANY": ("WEB_PASSWORD",)}


_REDACT_BYTES = re.compile(rb"(<WEB_PASSWORD(?:\s[^>]*)?>)[^<]+(</WEB_PASSWORD>)")


def redact_document(doc: bytes) -> bytes:
    """The document with every secret value replaced, before any of it is kept (a broken
    document's pieces are staged as they are, so the bytes themselves must be clean)."""
    return _REDACT_BYTES.sub(rb"\1***\2", doc)


def _redact(elem: ET.Element) -> None:
    for tag in _REDACT.get(_local(elem.tag), ()):
        for found in elem.iter(tag):
            if (found.text or "").strip():
                found.text = "***"


def _parse_element(kind: _Kind, elem: ET.Element) -> list[Parsed]:
    _redact(elem)
    raw = _raw(elem)
    if _local(elem.tag) != kind.record:
        reason = f"unexpected <{_local(elem.tag)}> in <{kind.root}>, expected <{kind.record}>"
        return [Parsed(kind.entity, None, raw, None, [problem(kind.entity, None, reason)])]
    built = kind.build(elem)
    pairs = built if isinstance(built, list) else [(built, None)]
    return [build_record(kind.model, outcome.key, own if own is not None else raw, outcome.fields, outcome.errors,
                         kind.rules) for outcome, own in pairs]


def build_record(model: type[ErpRecord], key: str | None, raw: bytes, fields: dict[str, Any] | None,
                 errors: list[str], rules: Callable[[Any], list[RecordError]],
                 extra: list[RecordError] | None = None) -> Parsed:
    """Validate converted fields into a record and apply its rules.

    ``errors`` are conversion failures (they make the record unusable); ``extra`` are
    problems already found that leave it usable. Shared with the file source.
    """
    entity = model.ENTITY
    extra = list(extra or [])
    if len(raw) > MAX_RECORD_BYTES:
        extra.append(problem(entity, key, f"record is {len(raw):,} bytes, over {MAX_RECORD_BYTES:,}: a runaway field? "
                                          "staged as it is; check it in Khaos Control"))
    reasons = list(errors)
    record = None
    if fields is not None:
        try:
            record = model.model_validate(fields)
        except ValidationError as exc:
            reasons += validation_reasons(exc)
    if reasons or record is None:
        return Parsed(entity, key, raw, None, [problem(entity, key, r) for r in reasons] + extra)
    return Parsed(entity, key, raw, record, rules(record) + extra)


def _parse_document(doc: bytes, kind: _Kind) -> Iterator[Parsed]:
    doc = as_utf8(doc)
    check_document(doc, kind.root)  # raises now, before the caller sees a single record
    return _parsed_records(doc, kind)


def _parsed_records(doc: bytes, kind: _Kind) -> Iterator[Parsed]:
    duplicates = _Duplicates(kind)
    for elem in _record_elements(doc, kind.root):
        if _is_empty(elem):
            continue  # a placeholder such as <ORDER_STATUS /> holds nothing to keep
        for parsed in _parse_element(kind, elem):
            yield duplicates.check(parsed)


_COMPANY = _Kind("company", "COMPANYS", "COMPANY", Company, _company, company_problems)
_STOCK_ITEM = _Kind("stock_item", "STOCK_ITEMS", "STOCK_ITEM", StockItem, _stock_item, stock_item_problems)
_SALES_ORDER = _Kind("sales_order", "SALES_ORDERS", "SALES_ORDER", SalesOrder, _sales_order, sales_order_problems)
_ORDER_STATUS = _Kind("order_status", "STATUS_LIST", "ORDER_STATUS", OrderStatus, _order_status,
                      order_status_problems)


def parse_companies(doc: bytes) -> Iterator[Parsed]:
    """``<COMPANYS>`` (ExportCompany) -> one ``Parsed`` per ``<COMPANY>``, record a ``Company``."""
    return _parse_document(doc, _COMPANY)


def parse_stock_items(doc: bytes) -> Iterator[Parsed]:
    """``<STOCK_ITEMS>`` (ExportStock) -> one ``Parsed`` per ``<STOCK_ITEM>``, record a ``StockItem``."""
    return _parse_document(doc, _STOCK_ITEM)


def parse_sales_orders(doc: bytes) -> Iterator[Parsed]:
    """``<SALES_ORDERS>`` (ExportOrders) -> one ``Parsed`` per ``<SALES_ORDER>``, record a ``SalesOrder``.

    ``status`` and ``invoices`` stay empty unless the export carries INVOICES: they come from
    ExportOrderStatusEx (``parse_order_statuses``) and are merged by ``sorder_id``.
    """
    return _parse_document(doc, _SALES_ORDER)


def parse_order_statuses(doc: bytes) -> Iterator[Parsed]:
    """``<STATUS_LIST>`` (ExportOrderStatusEx) -> one ``Parsed`` per ``<ORDER_STATUS>``, keyed
    on its ``SORDER_CODE``."""
    return _parse_document(doc, _ORDER_STATUS)


class _RootAttributes:
    def start(self, tag: str, attrib: dict[str, str]) -> None:
        raise _RootFound(dict(attrib))  # type: ignore[arg-type]


def _root_attributes(doc: bytes) -> dict[str, str]:
    try:
        _defused_parser(_RootAttributes()).feed(doc)
    except _RootFound as found:
        return found.tag  # type: ignore[return-value]
    except _DOCUMENT_FAILURES:  # pragma: no cover - check_document has seen it
        pass
    return {}


def parse_stock_statuses(doc: bytes) -> Iterator[Parsed]:
    """``<STOCK_STATUS SITE=...>`` (ExportStockStatus) -> one ``Parsed`` per ``<STOCK_ITEM>``,
    record a ``StockStatus`` keyed on its ``CODE``."""
    doc = as_utf8(doc)
    check_document(doc, "STOCK_STATUS")
    site = (_root_attributes(doc).get("SITE") or "").strip()
    kind = _Kind("stock_status", "STOCK_STATUS", "STOCK_ITEM", StockStatus, lambda e: _stock_status(e, site),
                 stock_status_problems)
    return _parsed_records(doc, kind)


__all__ = [
    "DUPLICATE", "DocumentError", "INVALID", "ISO_4217", "ORDER_STATUSES", "Parsed", "build_record", "check_document",
    "company_problems",
    "expected_order_amount", "is_currency", "is_email", "minor_units", "order_status_problems",
    "parse_companies", "parse_order_statuses", "parse_sales_orders", "parse_stock_items",
    "parse_stock_statuses", "stock_status_problems", "derived_status", "redact_document", "as_utf8",
    "problem", "sales_order_problems", "show", "stock_item_problems", "validation_reasons",
]
