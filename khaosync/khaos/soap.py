"""The Khaos Control SOAP client (interface A), as fixed by docs/khaos-soap.md.

KC's ``KhaosKSD.exe`` is a Delphi SOAP server: rpc/encoded, structures as Delphi classes
(``TStockList``...) and SOAP-ENC arrays, strings holding XML documents for the exports.
``call`` speaks SOAP 1.1 to the site's ``IKosWeb`` endpoint and returns the decoded
``return``: a ``str`` for a string, a ``dict`` for a structure (by field name), a ``list``
for an array, ``bytes`` for ``xs:base64Binary``, with Delphi's multi-reference values
(``href="#1"`` pointing at ``id="1"`` nodes after the method element) followed, and inline
values read the same way. The typed methods around it build parameters with KC's
conventions (London local datetimes, CSV lists) and read the structures; big exports come
back as document bytes, unparsed: a broken record must reach the puller intact, so it can be
staged and reported rather than lost in a parse error here.

The method element's namespace and the SOAPAction come from the site's WSDL (fetched once
per client, or ``khaos.body_namespace``), never from a constant. Requests are built from
``EXPECTED_OPERATIONS``, the same table ``discover`` checks a site's WSDL against, so the
two cannot drift. Per-site method names come from ``khaos.methods``.

Retries: timeouts, connection errors, HTTP 502/503/504, an HTTP 500 that is not a SOAP
fault, and ``Server`` faults are tried again, up to ``khaos.retries`` times, with
exponential backoff (0.5 s doubling, capped at 30 s) and full jitter. Everything else
(``Client`` faults, other HTTP errors, unreadable answers) fails at once: sending the
same request again would get the same answer.
"""

from __future__ import annotations

import base64
import email.utils
import binascii
import io
import logging
import random
import re
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Literal, Mapping, Sequence, TypeVar
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DET
import httpx
from defusedxml import DefusedXmlException

from khaosync.config import KhaosSettings
from khaosync.errors import ConfigError
from khaosync.khaos.convert import NO_DATE, to_kc_list, utc_to_kc_datetime
from khaosync.khaos.errors import (
    KhaosBadResponseError, KhaosConnectionError, KhaosError, KhaosHttpError, KhaosTimeoutError, SoapFaultError,
)
from khaosync.khaos.wsdl import parse_wsdl
from khaosync.scrub import scrub

log = logging.getLogger(__name__)

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENC = "http://schemas.xmlsoap.org/soap/encoding/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
SESSION_HEADER = "SessionID"  # (assumed) how a Login session travels: a SOAP header
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
# A compressed stock export of 50 items is a few hundred KB; refuse zip bombs long before memory does.
MAX_UNZIPPED_BYTES = 256 * 2**20
# ImportCompany's Method: the vendor's connector sends '0'.
IMPORT_METHOD = 0
_MAX_REFS = 10_000  # hrefs followed in one answer; a loop or a bomb stops here

XsdType = Literal["string", "int", "dateTime", "boolean"]
Returns = str | tuple[str, ...]  # "string", or a structure's sorted field paths (see khaos/wsdl.py)
SoapValue = str | bytes | dict | list | None
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_DECLARATION = re.compile(r"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']+)["'][^>]*\?>""")


# -- the operations we call: the single source of truth for requests and for discover ----

@dataclass(frozen=True)
class Param:
    name: str
    xsd_type: XsdType


@dataclass(frozen=True)
class Operation:
    """A method khaosync calls: the parameters it sends (in order) and the return shape it reads."""

    name: str
    forms: dict[str, tuple[Param, ...]]
    returns: Returns
    # ExportStock and ExportStockCompressed are alternatives (khaos.compressed_stock); Login only for sessions.
    called_when: Literal["always", "compressed_stock", "uncompressed_stock", "session"] = "always"
    form_setting: str | None = None  # the KhaosSettings field choosing the form, when there are several
    hint: str = ""  # the setting an operator changes when the site differs
    other_forms: tuple[str, ...] = field(default=())  # forms only a transitional caller uses

    def form_name(self, settings: KhaosSettings) -> str:
        return getattr(settings, self.form_setting) if self.form_setting else "site"

    def params_for(self, settings: KhaosSettings) -> tuple[Param, ...]:
        return self.forms[self.form_name(settings)]

    @property
    def params(self) -> tuple[Param, ...]:
        return self.forms[next(iter(self.forms))]

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def is_called(self, settings: KhaosSettings) -> bool:
        if self.called_when == "compressed_stock":
            return settings.compressed_stock
        if self.called_when == "uncompressed_stock":
            return not settings.compressed_stock
        if self.called_when == "session":
            return settings.credentials is not None and settings.credentials.mode == "session"
        return True


def _params(*params: tuple[str, XsdType]) -> tuple[Param, ...]:
    return tuple(Param(n, t) for n, t in params)


def _op(name: str, returns: Returns, *params: tuple[str, XsdType], **kwargs: Any) -> Operation:
    return Operation(name, {"site": _params(*params)}, returns, **kwargs)


_STOCK_PARAMS: tuple[tuple[str, XsdType], ...] = (("StockCode", "string"), ("MappingType", "int"), ("LastUpdated", "dateTime"))

EXPECTED_OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    _op("Login", "string", ("UserName", "string"), ("UserPassword", "string"), called_when="session",
        hint="khaos.credentials.mode"),
    _op("GetSiteList", ("List[].SiteID", "List[].SiteName")),
    _op("GetCompanyList", ("List[].CompanyCode",), ("LastUpdated", "dateTime")),
    _op("ExportCompany", "string", ("CompanyCode", "string"), ("MappingType", "int"), ("LastUpdated", "dateTime")),
    _op("ImportCompany", ("CustomerImport[].URN", "CustomerImport[].WebUser"), ("Customers", "string"), ("Method", "int")),
    Operation("GetStockList", {
        "last_updated": _params(("LastUpdated", "dateTime")),
        "date_type": _params(("DateType", "int"), ("DateValue", "dateTime"), ("StockItemType", "int")),
    }, ("Count", "List[].ParentCode", "List[].StockCode"), form_setting="stock_list_form",
        hint="khaos.stock_list_form"),
    _op("ExportStock", "string", *_STOCK_PARAMS, called_when="uncompressed_stock", hint="khaos.compressed_stock"),
    _op("ExportStockCompressed", ("Data",), *_STOCK_PARAMS, ("CompressionMethod", "int"),
        called_when="compressed_stock", hint="khaos.compressed_stock"),
    _op("ExportStockStatus", "string", *_STOCK_PARAMS),
    _op("ExportOrders", "string", ("OrderCode", "string"), ("MappingType", "int")),
    _op("ExportOrderStatusEx", "string", ("IDs", "string"), ("MappingType", "int"), ("WebOnly", "boolean")),
)}

CREDENTIAL_PARAMS: tuple[Param, ...] = (Param("Username", "string"), Param("Password", "string"))


def site_method_name(settings: KhaosSettings, method: str) -> str:
    """Our method name as this site spells it (``khaos.methods``)."""
    return settings.methods.get(method, method)


def soap_action(namespace: str, site_method: str) -> str:
    """Delphi's SOAPAction: the interface namespace, ``#``, the method (used when a WSDL gives none)."""
    return f"{namespace}#{site_method}"


# -- envelopes -------------------------------------------------------------------------

def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def request_envelope(site_method: str, params: Sequence[tuple[str, str, str]], namespace: str,
                     header: Sequence[tuple[str, str]] = ()) -> bytes:
    """rpc/encoded, as Delphi and PHP clients send it: ``(name, xsd type, text)`` per parameter."""
    inner = "".join(f'<{name} xsi:type="xsd:{xsd_type}">{_escape(value)}</{name}>' for name, xsd_type, value in params)
    head = ""
    if header:
        head = "<SOAP-ENV:Header>" + "".join(
            f'<NS1:{name} xmlns:NS1="{namespace}" xsi:type="xsd:string">{_escape(value)}</NS1:{name}>'
            for name, value in header) + "</SOAP-ENV:Header>"
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" xmlns:xsd="{XSD}" xmlns:xsi="{XSI}"'
        f' xmlns:SOAP-ENC="{SOAP_ENC}">{head}'
        f'<SOAP-ENV:Body SOAP-ENV:encodingStyle="{SOAP_ENC}">'
        f'<NS1:{site_method} xmlns:NS1="{namespace}">{inner}</NS1:{site_method}>'
        "</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode("utf-8")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _parse_xml(content: bytes) -> Element:
    # Answers are untrusted input: no DTDs, no entities, no external references.
    return DET.fromstring(content, forbid_dtd=True, forbid_entities=True, forbid_external=True)


def _body(content: bytes) -> Element | None:
    """soap:Body, or None if this is not a SOAP 1.1 envelope with a non-empty body."""
    try:
        root = _parse_xml(content)
    except (ParseError, DefusedXmlException, ValueError):
        return None
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        return None
    body = root.find(f"{{{SOAP_ENV}}}Body")
    if body is None or len(body) == 0:
        return None
    return body


def _fault(element: Element) -> tuple[str, str] | None:
    if _local(element.tag) != "Fault":
        return None
    fields = {_local(child.tag): (child.text or "").strip() for child in element}
    return fields.get("faultcode", ""), fields.get("faultstring", "")


def _excerpt(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


class _Decoder:
    """rpc/encoded (and literal) values -> plain Python, following ``href`` to ``id`` nodes."""

    def __init__(self, body: Element, method: str):
        self.method = method
        self.refs = {e.get("id"): e for e in body.iter() if e.get("id") is not None}
        self.followed = 0

    def bad(self, message: str) -> KhaosBadResponseError:
        return KhaosBadResponseError(f"Khaos Control {self.method}: {message}", method=self.method)

    def value(self, element: Element, depth: int = 0) -> SoapValue:
        if depth > 32:
            raise self.bad("the answer nests too deeply")
        href = element.get("href")
        if href is not None:
            self.followed += 1
            target = self.refs.get(href.lstrip("#"))
            if target is None or not href.startswith("#") or self.followed > _MAX_REFS:
                raise self.bad(f"href {href!r} points at nothing in the answer")
            element = target
        if element.get(f"{{{XSI}}}nil") in ("true", "1"):
            return None
        xsi_type = _local(element.get(f"{{{XSI}}}type") or "").rpartition(":")[2]
        children = list(element)
        if element.get(f"{{{SOAP_ENC}}}arrayType") is not None or xsi_type == "Array":
            return [self.value(child, depth + 1) for child in children]
        if children:
            out: dict[str, Any] = {}
            for child in children:
                name, value = _local(child.tag), self.value(child, depth + 1)
                if name in out:  # a literal array: the same element repeated
                    previous = out[name]
                    out[name] = (previous if isinstance(previous, _Repeated) else _Repeated([previous])) + [value]
                else:
                    out[name] = value
            return {k: list(v) if isinstance(v, _Repeated) else v for k, v in out.items()}
        text = element.text or ""
        if xsi_type == "base64Binary":
            return _base64(self.method, text)
        return text


class _Repeated(list):
    """Marks a list built from repeated elements while decoding."""

    def __add__(self, other: list) -> "_Repeated":  # type: ignore[override]
        return _Repeated(list(self) + other)


def _base64(method: str, text: str) -> bytes:
    try:
        # Some servers wrap base64 at 76 columns; whitespace is not part of the data.
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error as exc:
        raise KhaosBadResponseError(f"Khaos Control {method}: not base64: {exc}", method=method) from None


T = TypeVar("T")


@dataclass(frozen=True)
class _Endpoint:
    """Per site method: the namespace of its element, its SOAPAction, its parameters' types."""

    namespace: str
    actions: dict[str, str]
    param_types: dict[str, dict[str, str]]

    def action(self, site_method: str) -> str:
        return self.actions.get(site_method) or soap_action(self.namespace, site_method)


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
        self._session: str | None = None
        self._endpoint: _Endpoint | None = None
        # The site's clock at its last answer (HTTP Date), for bookmarks: "changed since" is
        # asked in the site's time, so a server clock that differs from ours loses nothing.
        self.last_server_time: datetime | None = None
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

    @property
    def _session_mode(self) -> bool:
        return self.settings.credentials is not None and self.settings.credentials.mode == "session"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "KhaosClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one SOAP call ---------------------------------------------------------------
    def call(self, method: str, params: Mapping[str, Any], *, form: str | None = None) -> SoapValue:
        """Call ``method`` (our name) and return the decoded ``<return>``.

        ``params`` values may be ``str``, ``int``, ``bool`` (sent as ``xs:boolean``) or an aware
        ``datetime`` (sent as KC's London local time). For the methods in
        ``EXPECTED_OPERATIONS`` the parameters must be exactly the table's (the form the
        settings choose, or ``form``), and are sent in its order. Raises a ``KhaosError``.
        """
        site_method = site_method_name(self.settings, method)
        if not _XML_NAME.match(site_method):
            raise ValueError(f"{site_method!r} is not a valid SOAP method name")
        ordered = self._ordered(method, params, form)
        endpoint = self._site()
        if not self._session_mode or method == "Login":
            return self._call_once(method, site_method, ordered, endpoint)
        fresh = self._session is None
        if fresh:
            self.login()
        try:
            return self._call_once(method, site_method, ordered, endpoint)
        except SoapFaultError as exc:
            # A session that expired since Login (assumed: the fault names the session): log in once more.
            if fresh or exc.transient or "session" not in exc.fault_string.lower():
                raise
            log.info("Khaos Control %s: the session was refused; logging in again", method)
            self._session = None
            self.login()
            return self._call_once(method, site_method, ordered, endpoint)

    def _call_once(self, method: str, site_method: str, ordered: list[tuple[str, str, str]],
                   endpoint: _Endpoint) -> SoapValue:
        declared = endpoint.param_types.get(site_method, {})
        typed = [(name, declared.get(name) or xsd_type, value) for name, xsd_type, value in
                 self._credential_params() + ordered]
        header = [(SESSION_HEADER, self._session)] if self._session and method != "Login" else []
        body = request_envelope(site_method, typed, endpoint.namespace, header)
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"{endpoint.action(site_method)}"',
            "Accept": "text/xml",
        }
        return self._with_retries(method, lambda: self._post_once(method, body, headers))

    def login(self) -> str:
        """``Login(UserName, UserPassword)``: the session later calls carry (``khaos.credentials.mode: session``)."""
        if self._credentials is None:
            raise ConfigError("khaos.credentials: Login needs a user name and password")
        username, password = self._credentials
        session = self._string("Login", self.call("Login", {"UserName": username, "UserPassword": password}))
        if not session.strip():
            raise KhaosBadResponseError("Khaos Control Login: the answer holds no session", method="Login")
        self._session = session.strip()
        return self._session

    def _ordered(self, method: str, params: Mapping[str, Any], form: str | None) -> list[tuple[str, str, str]]:
        operation = EXPECTED_OPERATIONS.get(method)
        if operation is None:
            spec = [(name, _xsd_type_of(value)) for name, value in params.items()]
        else:
            chosen = operation.forms[form] if form else operation.params_for(self.settings)
            spec = [(p.name, p.xsd_type) for p in chosen]
            if set(params) != {name for name, _ in spec}:
                raise ValueError(f"{method}: parameters {sorted(params)} differ from EXPECTED_OPERATIONS "
                                 f"{[name for name, _ in spec]}")
        for name, _ in spec:
            if not _XML_NAME.match(name):
                raise ValueError(f"{method}: {name!r} is not a valid parameter name")
        return [(name, xsd_type, _wire(params[name])) for name, xsd_type in spec]

    def _credential_params(self) -> list[tuple[str, str, str]]:
        if self._credentials is None or self._session_mode:
            return []
        username, password = self._credentials
        return [("Username", "string", username), ("Password", "string", password)]

    def _site(self) -> _Endpoint:
        """Namespace and SOAPActions: ``khaos.body_namespace``, else the site's WSDL (read once)."""
        if self._endpoint is not None:
            return self._endpoint
        if self.settings.body_namespace:
            self._endpoint = _Endpoint(self.settings.body_namespace, {}, {})
            return self._endpoint
        wsdl = parse_wsdl(self.fetch_wsdl())
        namespaces = [op.namespace for op in wsdl.operations if op.namespace]
        if not namespaces:
            raise KhaosBadResponseError("WSDL: no operation names a namespace; set khaos.body_namespace",
                                        method="WSDL")
        self._endpoint = _Endpoint(
            max(set(namespaces), key=namespaces.count),
            {op.name: op.soap_action.strip('"') for op in wsdl.operations if op.soap_action},
            {op.name: {p.name: p.xsd_type for p in op.params if p.xsd_type} for op in wsdl.operations},
        )
        return self._endpoint

    def _post_once(self, method: str, body: bytes, headers: dict[str, str]) -> SoapValue:
        response = self._send(method, lambda: self._http.post(self.settings.soap_url, content=body, headers=headers))
        soap_body = _body(response.content)
        element = next((c for c in soap_body if c.get("id") is None), None) if soap_body is not None else None
        fault = _fault(element) if element is not None else None
        if fault is not None:
            # A fault is a fault whatever the status (most sites send 500, some 200).
            raise SoapFaultError(fault[0], self._scrub(fault[1]), method)
        if response.status_code != 200:
            raise KhaosHttpError(response.status_code, method, _excerpt(self._scrub(response.text)))
        self._note_server_time(response)
        if soap_body is None or element is None:
            raise KhaosBadResponseError(f"Khaos Control {method}: the answer is not a SOAP 1.1 envelope", method=method)
        children = list(element)
        returned = next((c for c in children if _local(c.tag) == "return"), None)
        if returned is None and len(children) == 1:
            returned = children[0]  # some servers name the part otherwise
        if returned is None:
            raise KhaosBadResponseError(f"Khaos Control {method}: the answer has no <return>", method=method)
        return _Decoder(soap_body, method).value(returned)

    def _note_server_time(self, response: httpx.Response) -> None:
        date = response.headers.get("date")
        if not date:
            return
        try:
            seen = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError):
            return  # an unreadable Date is no clock: our own is used, and the look-back covers it
        if seen.tzinfo is not None:
            self.last_server_time = seen

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
        """The password and a session, or any 8-character piece of either (as sent or
        XML-escaped), never reach a message, even if a site echoes our request back. Scrub
        before cutting (``_excerpt``)."""
        secrets = [s for s in ((self._credentials or ("", ""))[1], self._session or "") if s]
        if not secrets:
            return text
        return scrub(text, [form for secret in secrets for form in (secret, _escape(secret))])

    # -- typed methods -----------------------------------------------------------------
    def get_site_list(self) -> list[tuple[str, str]]:
        """(SiteID, SiteName) per site; ids as text: on some sites they are not numbers."""
        result = self._structure("GetSiteList", self.call("GetSiteList", {}))
        return [(self._field_text("GetSiteList", site, "SiteID"), self._field_text("GetSiteList", site, "SiteName"))
                for site in self._items("GetSiteList", result, "List")]

    def get_company_list(self, since: datetime) -> list[str]:
        """URNs of companies changed after ``since`` (an aware datetime).

        Blank URNs are kept (as ``""``): such a company cannot be exported by URN, and the
        caller must say so rather than lose it silently.
        """
        result = self._structure("GetCompanyList", self.call("GetCompanyList", {"LastUpdated": since}))
        return [self._field_text("GetCompanyList", item, "CompanyCode").strip()
                for item in self._items("GetCompanyList", result, "List")]

    def export_company(self, codes: list[str]) -> bytes:
        """The ``<COMPANYS>`` document for these URNs. Callers batch by ``khaos.company_batch``."""
        returned = self.call("ExportCompany", {"CompanyCode": to_kc_list(codes), "MappingType": 1, "LastUpdated": NO_DATE})
        return _utf8_document(self._string("ExportCompany", returned))

    def get_stock_list(self, since: datetime) -> list[tuple[str, str | None]]:
        """(stock code, parent code or None) for items changed after ``since``, in the form the site declares."""
        if self.settings.stock_list_form == "last_updated":
            params: dict[str, Any] = {"LastUpdated": since}
        else:
            params = {"DateType": -1, "DateValue": since, "StockItemType": 0}
        result = self._structure("GetStockList", self.call("GetStockList", params))
        items = [(self._field_text("GetStockList", item, "StockCode").strip(),
                  self._field_text("GetStockList", item, "ParentCode").strip() or None)
                 for item in self._items("GetStockList", result, "List")]
        count = result.get("Count")
        if count is not None and str(count).strip() != str(len(items)):
            # A short list would silently skip products; better to stop and say so.
            raise KhaosBadResponseError(
                f"Khaos Control GetStockList: Count says {count} but {len(items)} items came", method="GetStockList"
            )
        return [(code, parent) for code, parent in items if code]

    def export_stock(self, codes: list[str], mapping_type: int = 1) -> bytes:
        """The ``<STOCK_ITEMS>`` document for these codes (``mapping_type`` 1 code, 2 other ref, 4 short
        description). Callers batch by ``khaos.stock_batch``."""
        params: dict[str, Any] = {"StockCode": to_kc_list(codes), "MappingType": mapping_type, "LastUpdated": NO_DATE}
        if not self.settings.compressed_stock:
            return _utf8_document(self._string("ExportStock", self.call("ExportStock", params)))
        returned = self.call("ExportStockCompressed", {**params, "CompressionMethod": 0})
        if isinstance(returned, dict):
            data = returned.get("Data")
            if isinstance(data, str):  # no xsi:type: the WSDL says base64Binary
                data = _base64("ExportStockCompressed", data)
            if not isinstance(data, bytes):
                raise KhaosBadResponseError("Khaos Control ExportStockCompressed: the answer has no Data",
                                            method="ExportStockCompressed")
        elif isinstance(returned, (str, bytes)) and returned:  # a site that declares a plain base64 string
            data = returned if isinstance(returned, bytes) else _base64("ExportStockCompressed", returned)
        else:
            raise KhaosBadResponseError("Khaos Control ExportStockCompressed: the answer has no Data",
                                        method="ExportStockCompressed")
        return _first_zip_entry("ExportStockCompressed", data)

    def export_stock_status(self, codes: list[str]) -> bytes:
        """The ``<STOCK_STATUS>`` document for these stock codes."""
        returned = self.call("ExportStockStatus", {"StockCode": to_kc_list(codes), "MappingType": 1,
                                                   "LastUpdated": NO_DATE})
        return _utf8_document(self._string("ExportStockStatus", returned))

    def export_orders(self, order_code: str, mapping_type: int = 1) -> bytes:
        """The sales order document for one order. ``mapping_type`` 1 = SOrderCode **(assumed**, as
        Elucid's ``ExportOrders($soc, 1)``; its meaning for ExportOrders is not published)."""
        if not isinstance(order_code, str):
            raise TypeError(f"export_orders takes one order code, not {type(order_code).__name__}")
        returned = self.call("ExportOrders", {"OrderCode": order_code, "MappingType": mapping_type})
        return _utf8_document(self._string("ExportOrders", returned))

    def export_order_status(self, ids: list[str], mapping_type: int = 3, web_only: bool = False) -> bytes:
        """The ``<STATUS_LIST>`` document; ``mapping_type`` 3 SOrderCode, 4 AssociatedRef."""
        returned = self.call("ExportOrderStatusEx", {"IDs": to_kc_list(ids), "MappingType": mapping_type,
                                                     "WebOnly": web_only})
        return _utf8_document(self._string("ExportOrderStatusEx", returned))

    def import_company(self, companies_xml: str, method: int = IMPORT_METHOD) -> list[tuple[str, str]]:
        """Send a ``<COMPANYS>`` document (consent write-back); (URN, WebUser) of each company KC took."""
        result = self._structure("ImportCompany", self.call("ImportCompany", {"Customers": companies_xml,
                                                                              "Method": method}))
        return [(urn, self._field_text("ImportCompany", item, "WebUser"))
                for item in self._items("ImportCompany", result, "CustomerImport")
                if (urn := self._field_text("ImportCompany", item, "URN").strip())]

    def fetch_wsdl(self) -> bytes:
        """The site's WSDL, for ``discover`` and for the namespace of every call."""
        url = self.settings.resolved_wsdl_url()

        def attempt() -> bytes:
            response = self._send("WSDL", lambda: self._http.get(url, headers={"Accept": "text/xml"}))
            if response.status_code != 200:
                raise KhaosHttpError(response.status_code, "WSDL", _excerpt(self._scrub(response.text)))
            return response.content

        return self._with_retries("WSDL", attempt)

    # -- reading structures ------------------------------------------------------------
    @staticmethod
    def _string(method: str, value: SoapValue) -> str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        raise KhaosBadResponseError(
            f"Khaos Control {method}: expected a string, got a structure; run `khaos discover`", method=method)

    @staticmethod
    def _structure(method: str, value: SoapValue) -> dict:
        if isinstance(value, dict):
            return value
        if value in (None, ""):
            return {}  # an empty structure (Delphi writes nil objects as empty or nil elements)
        raise KhaosBadResponseError(
            f"Khaos Control {method}: expected a structure, got {'a string' if isinstance(value, str) else 'a list'};"
            " run `khaos discover`", method=method)

    @staticmethod
    def _items(method: str, result: dict, name: str) -> list[dict]:
        """An array field: a list, a single literal item, or empty."""
        value = result.get(name)
        if value in (None, ""):
            return []
        if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), (dict, list)):
            value = next(iter(value.values()))  # literal arrays: <List><item>...</item></List>
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, dict) for item in items):
            raise KhaosBadResponseError(f"Khaos Control {method}: {name} is not an array of structures",
                                        method=method)
        return items

    @staticmethod
    def _field_text(method: str, item: dict, name: str) -> str:
        value = item.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise KhaosBadResponseError(f"Khaos Control {method}: {name} is not a simple value", method=method)
        return value


def _xsd_type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int"
    if isinstance(value, datetime):
        return "dateTime"
    return "string"


def _wire(value: Any) -> str:
    """A parameter's text: xs:boolean ``true``/``false``, datetimes in KC's London local time."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return utc_to_kc_datetime(value)
    return str(value)


def _utf8_document(text: str) -> bytes:
    """The document as UTF-8 bytes. A declaration naming another encoding would now lie, so drop it."""
    match = _DECLARATION.match(text)
    if match and match.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
        text = text[match.end():]
    return text.encode("utf-8")


def _first_zip_entry(method: str, archive_bytes: bytes) -> bytes:
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
        raise KhaosBadResponseError(f"Khaos Control {method}: Data is not a readable zip: {exc}", method=method) from None
    if len(data) > MAX_UNZIPPED_BYTES:
        raise KhaosBadResponseError(f"Khaos Control {method}: the zipped document is too large", method=method)
    return data


__all__ = [
    "CREDENTIAL_PARAMS", "EXPECTED_OPERATIONS", "KhaosClient", "Operation", "Param", "SESSION_HEADER", "SoapValue",
    "request_envelope", "site_method_name", "soap_action",
]
