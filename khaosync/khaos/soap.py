"""The Khaos Control SOAP client (interface A), as fixed by docs/khaos-soap.md.

One ``call`` speaks SOAP 1.1 to the site's ``IKosWeb`` endpoint and returns the text of
``<return>``; the typed methods around it build parameters with KC's conventions (London
local datetimes, ``-1``/``0``, CSV lists) and read the small list documents. Big exports
come back as document bytes, unparsed: a broken record must reach the puller intact, so it
can be staged and reported rather than lost in a parse error here.

Requests are built from ``EXPECTED_OPERATIONS``, the same table ``discover`` checks a site's
WSDL against, so the two cannot drift. Per-site method names come from ``khaos.methods``.

Retries: timeouts, connection errors, HTTP 502/503/504, an HTTP 500 that is not a SOAP
fault, and ``soap:Server`` faults are tried again, up to ``khaos.retries`` times, with
exponential backoff (0.5 s doubling, capped at 30 s) and full jitter. Everything else
(``soap:Client`` faults, other HTTP errors, unreadable answers) fails at once: sending the
same request again would get the same answer.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import random
import re
import time
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Literal, Mapping, Sequence, TypeVar
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DET
import httpx
from defusedxml import DefusedXmlException

from khaosync.config import KhaosSettings
from khaosync.errors import ConfigError
from khaosync.khaos.convert import NO_DATE, to_kc_bool, to_kc_list, utc_to_kc_datetime
from khaosync.khaos.errors import (
    KhaosBadResponseError, KhaosConnectionError, KhaosError, KhaosHttpError, KhaosTimeoutError, SoapFaultError,
)
from khaosync.scrub import scrub

log = logging.getLogger(__name__)

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
BODY_NAMESPACE = "http://tempuri.org/"  # (assumed) verify on site
SOAP_ACTION_PREFIX = "urn:IKosWebIntf-IKosWeb#"  # (assumed) verify on site
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
# A compressed stock export of 50 items is a few hundred KB; refuse zip bombs long before memory does.
MAX_UNZIPPED_BYTES = 256 * 2**20
# ImportCompany's Method: the value the vendor's connector sends is not public (assumed).
IMPORT_METHOD = "1"

XsdType = Literal["string", "int", "dateTime"]
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_INTEGER = re.compile(r"-?[0-9]+\Z")
_DECLARATION = re.compile(r"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']+)["'][^>]*\?>""")


# -- the operations we call: the single source of truth for requests and for discover ----

@dataclass(frozen=True)
class Param:
    name: str
    xsd_type: XsdType


@dataclass(frozen=True)
class Operation:
    """A method khaosync calls, and the parameters it sends, in the order it sends them."""

    name: str
    params: tuple[Param, ...]
    # ExportStock and ExportStockCompressed are alternatives; khaos.compressed_stock picks one.
    called_when: Literal["always", "compressed_stock", "uncompressed_stock"] = "always"

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def is_called(self, settings: KhaosSettings) -> bool:
        if self.called_when == "compressed_stock":
            return settings.compressed_stock
        if self.called_when == "uncompressed_stock":
            return not settings.compressed_stock
        return True


def _op(name: str, *params: tuple[str, XsdType], called_when: str = "always") -> Operation:
    return Operation(name, tuple(Param(n, t) for n, t in params), called_when)  # type: ignore[arg-type]


_STOCK_PARAMS: tuple[tuple[str, XsdType], ...] = (("StockCode", "string"), ("MappingType", "int"), ("LastUpdated", "dateTime"))

EXPECTED_OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    _op("GetSiteList"),
    _op("GetCompanyList", ("LastUpdated", "dateTime")),
    _op("ExportCompany", ("CompanyCode", "string"), ("MappingType", "int")),
    _op("ImportCompany", ("Customers", "string"), ("Method", "int")),
    _op("GetStockList", ("DateType", "int"), ("DateValue", "dateTime"), ("StockItemType", "int")),
    _op("ExportStock", *_STOCK_PARAMS, called_when="uncompressed_stock"),
    _op("ExportStockCompressed", *_STOCK_PARAMS, ("CompressionMethod", "int"), called_when="compressed_stock"),
    _op("ExportOrders", ("DateFrom", "dateTime"), ("DateTo", "dateTime"), ("DateType", "int")),
    _op("ExportOrderStatusEx", ("IDs", "string"), ("MappingType", "int"), ("IncludeTracking", "int"),
        ("IncludeCancelled", "int"), ("InvoiceStageIDs", "string")),
)}

CREDENTIAL_PARAMS: tuple[Param, ...] = (Param("Username", "string"), Param("Password", "string"))


def soap_action(site_method: str) -> str:
    return f"{SOAP_ACTION_PREFIX}{site_method}"


def site_method_name(settings: KhaosSettings, method: str) -> str:
    """Our method name as this site spells it (``khaos.methods``)."""
    return settings.methods.get(method, method)


# -- envelopes -------------------------------------------------------------------------

def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def request_envelope(site_method: str, params: Sequence[tuple[str, str]]) -> bytes:
    inner = "".join(f"<{name}>{_escape(value)}</{name}>" for name, value in params)
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body>'
        f'<ns:{site_method} xmlns:ns="{BODY_NAMESPACE}">{inner}</ns:{site_method}>'
        "</soap:Body></soap:Envelope>"
    ).encode("utf-8")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _parse_xml(content: bytes) -> Element:
    # Answers are untrusted input: no DTDs, no entities, no external references.
    return DET.fromstring(content, forbid_dtd=True, forbid_entities=True, forbid_external=True)


def _body_element(content: bytes) -> Element | None:
    """The first element inside soap:Body, or None if this is not a SOAP 1.1 envelope."""
    try:
        root = _parse_xml(content)
    except (ParseError, DefusedXmlException, ValueError):
        return None
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        return None
    body = root.find(f"{{{SOAP_ENV}}}Body")
    if body is None or len(body) == 0:
        return None
    return body[0]


def _fault(element: Element) -> tuple[str, str] | None:
    if _local(element.tag) != "Fault":
        return None
    fields = {_local(child.tag): (child.text or "").strip() for child in element}
    return fields.get("faultcode", ""), fields.get("faultstring", "")


def _excerpt(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


T = TypeVar("T")


# -- the client ------------------------------------------------------------------------

class KhaosClient:
    """Khaos Control's ``IKosWeb`` SOAP service for one site (``KhaosSettings``).

    Example::

        with KhaosClient(profile.khaos, transport=connections.transport()) as kc:
            codes = kc.get_company_list(since)
            xml = kc.export_company(codes[:profile.khaos.company_batch])
    """

    def __init__(self, settings: KhaosSettings, *, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None):
        self.settings = settings
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._credentials = self._resolve_credentials(settings)
        for ours, theirs in settings.methods.items():
            if not _XML_NAME.match(theirs):
                raise ConfigError(f"khaos.methods.{ours}: {theirs!r} is not a valid SOAP method name")
        self._http = httpx.Client(
            transport=transport, verify=settings.verify_tls, timeout=httpx.Timeout(settings.timeout_s),
            headers={"User-Agent": "khaosync"},
        )

    @staticmethod
    def _resolve_credentials(settings: KhaosSettings) -> tuple[str, str] | None:
        creds = settings.credentials
        if creds is None:
            return None
        password = creds.resolved_password()
        return creds.username, password.get_secret_value() if password is not None else ""

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "KhaosClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one SOAP call ---------------------------------------------------------------
    def call(self, method: str, params: Mapping[str, str]) -> str:
        """Call ``method`` (our name) and return the text of ``<return>``.

        For the methods in ``EXPECTED_OPERATIONS`` the parameters must be exactly the
        table's, and are sent in its order. Raises a ``KhaosError`` subclass.
        """
        site_method = site_method_name(self.settings, method)
        if not _XML_NAME.match(site_method):
            raise ValueError(f"{site_method!r} is not a valid SOAP method name")
        body = request_envelope(site_method, self._credential_params() + self._ordered(method, params))
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"{soap_action(site_method)}"',
            "Accept": "text/xml",
        }
        return self._with_retries(method, lambda: self._post_once(method, body, headers))

    @staticmethod
    def _ordered(method: str, params: Mapping[str, str]) -> list[tuple[str, str]]:
        operation = EXPECTED_OPERATIONS.get(method)
        if operation is None:
            names = list(params)
        else:
            names = list(operation.param_names)
            if set(params) != set(names):
                raise ValueError(f"{method}: parameters {sorted(params)} differ from EXPECTED_OPERATIONS {names}")
        for name in names:
            if not _XML_NAME.match(name):
                raise ValueError(f"{method}: {name!r} is not a valid parameter name")
        return [(name, params[name]) for name in names]

    def _credential_params(self) -> list[tuple[str, str]]:
        if self._credentials is None:
            return []
        username, password = self._credentials
        return [("Username", username), ("Password", password)]

    def _post_once(self, method: str, body: bytes, headers: dict[str, str]) -> str:
        response = self._send(method, lambda: self._http.post(self.settings.soap_url, content=body, headers=headers))
        element = _body_element(response.content)
        fault = _fault(element) if element is not None else None
        if fault is not None:
            # A fault is a fault whatever the status (most sites send 500, some 200).
            raise SoapFaultError(fault[0], self._scrub(fault[1]), method)
        if response.status_code != 200:
            raise KhaosHttpError(response.status_code, method, _excerpt(self._scrub(response.text)))
        if element is None:
            raise KhaosBadResponseError(f"Khaos Control {method}: the answer is not a SOAP 1.1 envelope", method=method)
        returned = next((child for child in element if _local(child.tag) == "return"), None)
        if returned is None:
            raise KhaosBadResponseError(f"Khaos Control {method}: the answer has no <return>", method=method)
        return returned.text or ""

    def _send(self, method: str, send: Callable[[], httpx.Response]) -> httpx.Response:
        started = time.monotonic()
        try:
            response = send()
        except httpx.TimeoutException:
            # `from None`: the httpx exception carries the request, and the request carries the password.
            raise KhaosTimeoutError(
                f"Khaos Control {method}: no answer within {self.settings.timeout_s:g}s", method=method
            ) from None
        except httpx.TransportError as exc:
            raise KhaosConnectionError(
                f"Khaos Control {method}: {type(exc).__name__}: {self._scrub(str(exc))}", method=method
            ) from None
        log.debug("khaos %s: HTTP %s, %d bytes in %.2fs", method, response.status_code, len(response.content),
                  time.monotonic() - started)
        return response

    def _with_retries(self, method: str, attempt: Callable[[], T]) -> T:
        retries = self.settings.retries
        for number in range(retries + 1):
            try:
                return attempt()
            except KhaosError as exc:
                exc.attempts = number + 1
                if not exc.transient or number == retries:
                    raise
                delay = self._backoff(number)
                log.warning("%s; retry %d of %d in %.1fs", exc, number + 1, retries, delay)
                self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _backoff(self, number: int) -> float:
        """Full jitter: uniform over [0, min(cap, base * 2**n)], so retrying clients spread out."""
        return self._rng.uniform(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**number))

    def _scrub(self, text: str) -> str:
        """The password, or any 8-character piece of it (as sent or XML-escaped), never reaches a
        message, even if a site echoes our request back. Scrub before cutting (``_excerpt``)."""
        if self._credentials and self._credentials[1]:
            secret = self._credentials[1]
            return scrub(text, [secret, _escape(secret)])
        return text

    # -- typed methods -----------------------------------------------------------------
    def get_site_list(self) -> list[tuple[int, str]]:
        root = self._document("GetSiteList", self.call("GetSiteList", {}), "SITES")
        sites: list[tuple[int, str]] = []
        for site in root.findall("SITE"):
            site_id = (site.findtext("SITE_ID") or "").strip()
            if not _INTEGER.match(site_id):
                raise KhaosBadResponseError(f"Khaos Control GetSiteList: SITE_ID {site_id!r} is not a number",
                                            method="GetSiteList")
            sites.append((int(site_id), (site.findtext("SITE_NAME") or "").strip()))
        return sites

    def get_company_list(self, since: datetime) -> list[str]:
        """URNs of companies changed after ``since`` (an aware datetime).

        Blank URNs are kept (as ``""``): such a company cannot be exported by URN, and the
        caller must say so rather than lose it silently.
        """
        text = self.call("GetCompanyList", {"LastUpdated": utc_to_kc_datetime(since)})
        root = self._document("GetCompanyList", text, "COMPANY_LIST")
        return [(e.text or "").strip() for e in root.findall("COMPANY_CODE")]

    def export_company(self, codes: list[str]) -> bytes:
        """The ``<COMPANYS>`` document for these URNs. Callers batch by ``khaos.company_batch``."""
        text = self.call("ExportCompany", {"CompanyCode": to_kc_list(codes), "MappingType": "1"})
        return _utf8_document(text)

    def get_stock_list(self, since: datetime) -> list[tuple[str, str | None]]:
        """(stock code, parent code or None) for items changed after ``since``."""
        text = self.call("GetStockList", {"DateType": "-1", "DateValue": utc_to_kc_datetime(since), "StockItemType": "0"})
        root = self._document("GetStockList", text, "STOCK_LIST")
        items = [
            ((item.findtext("STOCK_CODE") or "").strip(), (item.findtext("PARENT_CODE") or "").strip() or None)
            for item in root.findall("ITEM")
        ]
        count = root.get("COUNT")
        if count is not None and count.strip() != str(len(items)):
            # A short list would silently skip products; better to stop and say so.
            raise KhaosBadResponseError(
                f"Khaos Control GetStockList: COUNT says {count} but {len(items)} items came", method="GetStockList"
            )
        return [(code, parent) for code, parent in items if code]

    def export_stock(self, codes: list[str]) -> bytes:
        """The ``<STOCK_ITEMS>`` document for these codes. Callers batch by ``khaos.stock_batch``."""
        params = {"StockCode": to_kc_list(codes), "MappingType": "1", "LastUpdated": NO_DATE}
        if not self.settings.compressed_stock:
            return _utf8_document(self.call("ExportStock", params))
        text = self.call("ExportStockCompressed", {**params, "CompressionMethod": "0"})
        return _first_zip_entry("ExportStockCompressed", text)

    def export_orders(self, date_from: datetime, date_to: datetime,
                      by: Literal["order_date", "updated"] = "updated") -> bytes:
        """The ``<SALES_ORDERS>`` document for orders whose date falls in ``[date_from, date_to)``."""
        date_type = {"order_date": "0", "updated": "1"}[by]
        text = self.call("ExportOrders", {
            "DateFrom": utc_to_kc_datetime(date_from), "DateTo": utc_to_kc_datetime(date_to), "DateType": date_type,
        })
        return _utf8_document(text)

    def export_order_status(self, ids: list[str], mapping_type: int = 5, include_tracking: bool = True) -> bytes:
        """The ``<ORDER_STATUSES>`` document; ``mapping_type`` 3 SOrderCode, 4 AssociatedRef, 5 SOrderID.

        Cancelled orders are always asked for: a cancellation is a status khaosync must see.
        """
        text = self.call("ExportOrderStatusEx", {
            "IDs": to_kc_list(ids), "MappingType": str(mapping_type), "IncludeTracking": to_kc_bool(include_tracking),
            "IncludeCancelled": to_kc_bool(True), "InvoiceStageIDs": "",
        })
        return _utf8_document(text)

    def import_company(self, companies_xml: str, *, method: str = IMPORT_METHOD) -> list[str]:
        """Send a ``<COMPANYS>`` document (consent write-back); returns the URNs KC accepted."""
        text = self.call("ImportCompany", {"Customers": companies_xml, "Method": method})
        root = self._document("ImportCompany", text, "IMPORT_RESULT")
        return [urn for e in root.findall("COMPANY/URN") if (urn := (e.text or "").strip())]

    def fetch_wsdl(self) -> bytes:
        """The site's WSDL, for ``discover``."""
        url = self.settings.resolved_wsdl_url()

        def attempt() -> bytes:
            response = self._send("WSDL", lambda: self._http.get(url, headers={"Accept": "text/xml"}))
            if response.status_code != 200:
                raise KhaosHttpError(response.status_code, "WSDL", _excerpt(self._scrub(response.text)))
            return response.content

        return self._with_retries("WSDL", attempt)

    @staticmethod
    def _document(method: str, text: str, root_tag: str) -> Element:
        try:
            root = _parse_xml(text.encode("utf-8"))
        except (ParseError, DefusedXmlException, ValueError) as exc:
            raise KhaosBadResponseError(f"Khaos Control {method}: <return> is not a readable XML document: {exc}",
                                        method=method) from None
        if root.tag != root_tag:
            raise KhaosBadResponseError(f"Khaos Control {method}: expected <{root_tag}>, got <{root.tag}>",
                                        method=method)
        return root


def _utf8_document(text: str) -> bytes:
    """The document as UTF-8 bytes. A declaration naming another encoding would now lie, so drop it."""
    match = _DECLARATION.match(text)
    if match and match.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
        text = text[match.end():]
    return text.encode("utf-8")


def _first_zip_entry(method: str, text: str) -> bytes:
    try:
        # Some servers wrap base64 at 76 columns; whitespace is not part of the data.
        archive_bytes = base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error as exc:
        raise KhaosBadResponseError(f"Khaos Control {method}: <return> is not base64: {exc}", method=method) from None
    try:
        with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
            entries = archive.infolist()
            if not entries:
                raise KhaosBadResponseError(f"Khaos Control {method}: the zip is empty", method=method)
            if entries[0].file_size > MAX_UNZIPPED_BYTES:
                raise KhaosBadResponseError(f"Khaos Control {method}: the zipped document is too large", method=method)
            with archive.open(entries[0]) as entry:
                data = entry.read(MAX_UNZIPPED_BYTES + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, EOFError, OSError) as exc:
        raise KhaosBadResponseError(f"Khaos Control {method}: <return> is not a readable zip: {exc}", method=method) from None
    if len(data) > MAX_UNZIPPED_BYTES:
        raise KhaosBadResponseError(f"Khaos Control {method}: the zipped document is too large", method=method)
    return data


__all__ = [
    "BODY_NAMESPACE", "CREDENTIAL_PARAMS", "EXPECTED_OPERATIONS", "KhaosClient", "Operation", "Param",
    "SOAP_ACTION_PREFIX", "request_envelope", "site_method_name", "soap_action",
]
