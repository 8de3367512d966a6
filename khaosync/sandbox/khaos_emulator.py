"""A strict Khaos Control SOAP emulator (interface A), serving the sandbox world.

It follows docs/khaos-soap.md to the letter and refuses anything else, so a client that
drifts from the contract fails here first rather than on a customer's site:

- ``POST .../KhaosKSD.exe/soap/IKosWeb``: SOAP 1.1, ``text/xml``, a ``SOAPAction`` naming
  the method in the body, known parameters only, required ones present, values parseable;
  ``Username``/``Password`` checked when the emulator is given credentials. Anything else is
  a ``soap:Client`` fault (HTTP 500), the way a Delphi SOAP server answers.
- ``GET .../KhaosKSD.exe/wsdl/IKosWeb``: the WSDL, its address built from the request's host.

The world is opened per request: the emulator is served from several threads, and
``sandbox advance`` changes the world from another process between requests.

Planted faults come from the world: ``raw_override`` bytes replace a record's element
(a whole document may then be broken, which is the point), and meta ``serve_twice``
(``{"company": [ids], "sales_order": [ids], "stock_item": [ids]}``) repeats those records
in one answer. Transport faults come from ``fail_rate`` (HTTP 500 ``soap:Server`` fault or
a plain-text 503, drawn from ``random.Random(seed)``) and ``latency_ms``.
"""

from __future__ import annotations

import base64
import io
import random
import re
import threading
import time
import zipfile
from collections import Counter
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator
from wsgiref.util import application_uri
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from khaosync.khaos.convert import KC_FORMAT, LONDON, ConversionError, kc_bool, kc_int, kc_list
from khaosync.sandbox import khaos_render as render
from khaosync.sandbox.khaos_wsdl import BODY_NAMESPACE, CREDENTIAL_PARAMS, SITE_METHODS, render_wsdl, soap_action
from khaosync.sandbox.world import KEY_FIELD, World

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_PATH = "/khaos/KhaosKSD.exe/soap/IKosWeb"
WSDL_PATH = "/khaos/KhaosKSD.exe/wsdl/IKosWeb"
MAX_REQUEST_BYTES = 32 * 2**20
DEFAULT_SITES = [(1, "Main")]
# SQLite's historical limit on bound parameters is 999; stay well under it.
_IN_CHUNK = 500

StartResponse = Callable[..., object]
_KC_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\Z", re.ASCII)
_KC_INT = re.compile(r"-?\d+\Z", re.ASCII)


class SoapFault(Exception):
    """Answered as an HTTP 500 SOAP fault."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.method: str | None = None  # set once the request has named a known method


def client_fault(message: str) -> SoapFault:
    return SoapFault("soap:Client", message)


class Reply:
    def __init__(self, status: str, body: bytes, content_type: str = "text/xml; charset=utf-8",
                 extra_headers: Iterable[tuple[str, str]] = ()):
        self.status = status
        self.body = body
        self.headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra_headers]


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def response_envelope(method: str, returned: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body>'
        f'<ns:{method}Response xmlns:ns="{BODY_NAMESPACE}"><return>{_xml_text(returned)}</return>'
        f"</ns:{method}Response></soap:Body></soap:Envelope>"
    ).encode("utf-8")


def fault_envelope(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><soap:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{_xml_text(message)}</faultstring>"
        "</soap:Fault></soap:Body></soap:Envelope>"
    ).encode("utf-8")


# -- parameter values ------------------------------------------------------------------

def parse_kc_datetime(name: str, text: str) -> datetime:
    """KC local time, exactly ``YYYY-MM-DDTHH:MM:SS``; anything else is the client's fault.

    The pattern comes first because strptime alone takes ``2026-1-5T9:00:00`` and non-ASCII digits.
    """
    try:
        if not _KC_DATETIME.match(text):
            raise ValueError(text)
        return datetime.strptime(text, KC_FORMAT)
    except ValueError:
        raise client_fault(f"{name}: '{text}' is not a valid date and time") from None


def parse_int(name: str, text: str) -> int:
    # int() would also take "1_000" and non-ASCII digits; a strict site does not.
    if not _KC_INT.match(text.strip()):
        raise client_fault(f"{name}: '{text}' is not a valid integer")
    return int(text.strip())


def parse_flag(name: str, text: str) -> bool:
    try:
        value = kc_bool(text)
    except ConversionError:
        value = None
    if value is None:
        raise client_fault(f"{name}: '{text}' is not a valid boolean (-1 or 0)")
    return value


def _when(text: str | None) -> datetime | None:
    """A stored KC datetime (or None / empty / "no date")."""
    if not text or text.startswith("1899-12-3"):
        return None
    return datetime.fromisoformat(text)


def _canonical(dt: datetime) -> str:
    return dt.strftime(KC_FORMAT)


class Request:
    """A validated SOAP call: the method and its parameters as text."""

    def __init__(self, method: str, params: dict[str, str]):
        self.method = method
        self.params = params

    def text(self, name: str, default: str | None = None) -> str | None:
        return self.params.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.params

    def when(self, name: str) -> datetime:
        return parse_kc_datetime(name, self.params[name])

    def number(self, name: str) -> int:
        return parse_int(name, self.params[name])

    def flag(self, name: str, default: bool) -> bool:
        return parse_flag(name, self.params[name]) if name in self.params else default


def _local(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


def parse_soap_request(body: bytes, action: str | None, credentials: tuple[str, str] | None) -> Request:
    """Envelope -> Request, checking everything the contract fixes."""
    try:
        root = DET.fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise client_fault(f"request is not well-formed XML: {exc}") from None
    if _local(root.tag) != (SOAP_ENV, "Envelope"):
        raise SoapFault("soap:VersionMismatch", "expected a SOAP 1.1 Envelope")
    bodies = [c for c in root if _local(c.tag) == (SOAP_ENV, "Body")]
    if len(bodies) != 1 or len(bodies[0]) != 1:
        raise client_fault("the SOAP Body must hold exactly one method element")
    call = bodies[0][0]
    namespace, method = _local(call.tag)
    if method not in SITE_METHODS:
        raise client_fault(f"No method named '{method}' is supported by interface 'IKosWeb'")
    if namespace != BODY_NAMESPACE:
        raise client_fault(f"{method}: method element must be in namespace {BODY_NAMESPACE}, not {namespace}")
    try:
        return Request(method, _checked_params(method, call, action, credentials))
    except SoapFault as fault:
        fault.method = method
        raise


def _checked_params(method: str, call: Element, action: str | None, credentials: tuple[str, str] | None) -> dict[str, str]:
    expected_action = soap_action(method)
    if action is None or action.strip('"') != expected_action:
        raise client_fault(f"SOAPAction {action!r} does not match the method: expected \"{expected_action}\"")
    params = _params(method, call)
    _check_credentials(params, credentials)
    for p in CREDENTIAL_PARAMS:
        params.pop(p.name, None)
    missing = [p.name for p in SITE_METHODS[method] if p.required and p.name not in params]
    if missing:
        raise client_fault(f"{method}: missing parameter(s) {', '.join(missing)}")
    return params


def _params(method: str, call: Element) -> dict[str, str]:
    known = {p.name for p in SITE_METHODS[method]} | {p.name for p in CREDENTIAL_PARAMS}
    params: dict[str, str] = {}
    for child in call:
        namespace, name = _local(child.tag)
        if namespace is not None:
            raise client_fault(f"{method}: parameter {name} must be unqualified")
        if name not in known:
            raise client_fault(f"{method}: unknown parameter {name}")
        if name in params:
            raise client_fault(f"{method}: parameter {name} given twice")
        if len(child):
            raise client_fault(f"{method}: parameter {name} must be text, not elements")
        params[name] = child.text or ""
    return params


def _check_credentials(params: dict[str, str], credentials: tuple[str, str] | None) -> None:
    if credentials is None:
        return  # a site without credentials ignores any that are sent
    if (params.get("Username"), params.get("Password")) != credentials:
        raise client_fault("Access denied")


# -- the emulator ----------------------------------------------------------------------

class KhaosEmulator:
    """WSGI app: Khaos Control's SOAP endpoint and WSDL over a sandbox world folder."""

    def __init__(self, world_folder: str | Path, *, fail_rate: float = 0.0, latency_ms: int = 0, seed: int = 0,
                 sleep: Callable[[float], None] = time.sleep, credentials: tuple[str, str] | None = None):
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError("fail_rate must be between 0 and 1")
        self.world_folder = Path(world_folder)
        self.fail_rate = fail_rate
        self.latency_ms = latency_ms
        self.credentials = credentials
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._injected: Counter[str] = Counter()
        self._http: Counter[int] = Counter()
        self._requests = 0
        self._handlers: dict[str, Callable[[World, Request], str]] = {
            "GetSiteList": self._get_site_list,
            "GetCompanyList": self._get_company_list,
            "ExportCompany": self._export_company,
            "ImportCompany": self._import_company,
            "GetStockList": self._get_stock_list,
            "ExportStock": self._export_stock,
            "ExportStockCompressed": self._export_stock_compressed,
            "ExportStockStatus": self._export_stock_status,
            "ExportOrders": self._export_orders,
            "ExportOrderStatusEx": self._export_order_status,
        }
        assert set(self._handlers) == set(SITE_METHODS), "every published method has a handler"

    # -- WSGI --------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: StartResponse) -> list[bytes]:
        reply = self._route(environ)
        with self._lock:
            self._requests += 1
            self._http[int(reply.status.split()[0])] += 1
        start_response(reply.status, reply.headers)
        return [reply.body]

    def stats(self) -> dict:
        with self._lock:
            return {
                "requests": self._requests,
                "calls": dict(self._calls),
                "faults": dict(self._faults),
                "injected": dict(self._injected),
                "http_status": {str(k): v for k, v in sorted(self._http.items())},
            }

    def _route(self, environ: dict) -> Reply:
        path = environ.get("PATH_INFO", "")
        verb = environ.get("REQUEST_METHOD", "GET")
        if path == SOAP_PATH:
            if verb != "POST":
                return Reply("405 Method Not Allowed", b"SOAP endpoint: POST only\n", "text/plain; charset=utf-8",
                             [("Allow", "POST")])
            return self._soap(environ)
        if path == WSDL_PATH:
            if verb not in ("GET", "HEAD"):
                return Reply("405 Method Not Allowed", b"WSDL: GET only\n", "text/plain; charset=utf-8",
                             [("Allow", "GET, HEAD")])
            self._delay()
            return Reply("200 OK", render_wsdl(self._endpoint(environ), with_credentials=self.credentials is not None))
        return Reply("404 Not Found", f"no Khaos Control resource at {path}\n".encode(), "text/plain; charset=utf-8")

    def _endpoint(self, environ: dict) -> str:
        # application_uri gives scheme://host[:port]/SCRIPT_NAME/ from the request itself.
        return application_uri(environ).rstrip("/") + SOAP_PATH

    def _delay(self) -> None:
        if self.latency_ms:
            self._sleep(self.latency_ms / 1000)

    def _injected_fault(self) -> Reply | None:
        with self._lock:
            if self.fail_rate <= 0 or self._rng.random() >= self.fail_rate:
                return None
            kind = "503" if self._rng.random() < 0.5 else "500"
            self._injected[kind] += 1
        if kind == "503":
            return Reply("503 Service Unavailable", b"Service Unavailable\n", "text/plain; charset=utf-8")
        return Reply("500 Internal Server Error", fault_envelope("soap:Server", "Server busy (injected fault)"))

    def _soap(self, environ: dict) -> Reply:
        self._delay()
        injected = self._injected_fault()
        if injected is not None:
            return injected
        method: str | None = None
        try:
            content_type = environ.get("CONTENT_TYPE", "")
            if content_type.split(";")[0].strip().lower() != "text/xml":
                raise client_fault(f"Content-Type must be text/xml for SOAP 1.1, not {content_type!r}")
            request = parse_soap_request(self._read_body(environ), environ.get("HTTP_SOAPACTION"), self.credentials)
            method = request.method
            with self._world(write=method == "ImportCompany") as world:
                returned = self._handlers[method](world, request)
            reply = Reply("200 OK", response_envelope(method, returned))
        except SoapFault as fault:
            method = method or fault.method
            with self._lock:
                self._faults[fault.code] += 1
            reply = Reply("500 Internal Server Error", fault_envelope(fault.code, fault.message))
        if method is not None:  # every request that named a known method, answered or not
            with self._lock:
                self._calls[method] += 1
        return reply

    def _read_body(self, environ: dict) -> bytes:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise client_fault("bad Content-Length") from None
        if length > MAX_REQUEST_BYTES:
            raise client_fault("request too large")
        return environ["wsgi.input"].read(length) if length else b""

    @contextmanager
    def _world(self, *, write: bool) -> Iterator[World]:
        try:
            world = World(self.world_folder, create=False)  # never create a world by reading one
        except FileNotFoundError:
            raise SoapFault("soap:Server", "database not available") from None
        try:
            # One transaction per request: a consistent snapshot even while `sandbox advance` writes.
            world.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield world
            except BaseException:
                world.conn.execute("ROLLBACK")
                raise
            world.conn.execute("COMMIT")
        finally:
            world.close()

    # -- lookups -----------------------------------------------------------------------
    @staticmethod
    def _by_field(world: World, entity: str, field: str, values: list[str] | list[int]) -> list[dict]:
        """Records whose ``field`` is one of ``values``, in key order (unknown values: absent)."""
        found: dict[int, dict] = {}
        wanted: list = list(dict.fromkeys(values))
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start:start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            expr = "key" if field == KEY_FIELD[entity] else f"CAST(json_extract(doc, '$.{field}') AS TEXT)"
            for doc in world.iter(entity, where=f"{expr} IN ({marks})", args=tuple(chunk)):
                found[doc[KEY_FIELD[entity]]] = doc
        return [found[k] for k in sorted(found)]

    @staticmethod
    def _render_records(world: World, entity: str, docs: Iterable[dict], render_one: Callable[[dict], str]) -> list[str]:
        """Each record's element, or its planted raw bytes; ``serve_twice`` records twice."""
        overrides = world.raw_overrides(entity)
        twice = set((world.get_meta("serve_twice") or {}).get(entity, []))
        out: list[str] = []
        for doc in docs:
            key = doc[KEY_FIELD[entity]]
            element = render.text_of(overrides[key]) if key in overrides else render_one(doc)
            out.append(element)
            if key in twice:
                out.append(element)
        return out

    # -- handlers: each returns the text of <return> ------------------------------------
    def _get_site_list(self, world: World, req: Request) -> str:
        sites = world.get_meta("sites") or DEFAULT_SITES
        pairs = [(s["site_id"], s["site_name"]) if isinstance(s, dict) else (s[0], s[1]) for s in sites]
        return render.render_site_list(pairs)

    def _get_company_list(self, world: World, req: Request) -> str:
        since = req.when("LastUpdated")
        docs = world.iter("company", updated_since=_canonical(since))
        # The SQL filter compares canonical strings; check as datetimes too, as KC would.
        codes = [d["company_code"] for d in docs if _after(d["updated"], since)]
        return render.render_company_list(codes)

    def _export_company(self, world: World, req: Request) -> str:
        if req.number("MappingType") != 1:
            raise client_fault("ExportCompany: MappingType must be 1 (URN)")
        docs = self._by_field(world, "company", "company_code", kc_list(req.text("CompanyCode")))
        return render.document("COMPANYS", self._render_records(world, "company", docs, render.render_company))

    def _import_company(self, world: World, req: Request) -> str:
        req.number("Method")  # required and numeric; the sandbox has one import behaviour: update
        root = _parse_customers(req.text("Customers") or "")
        clock = world.clock or datetime.now(LONDON).strftime(KC_FORMAT)
        urns: list[str] = []
        for company in root.findall("COMPANY"):
            code = (company.findtext("COMPANY_CODE") or "").strip()
            if not code:
                raise client_fault("ImportCompany: COMPANY without COMPANY_CODE")
            for doc in self._by_field(world, "company", "company_code", [code]):
                _apply_consent(doc, company)
                doc["updated"] = clock
                world.put("company", doc)
                urns.append(code)
        return render.render_import_result(list(dict.fromkeys(urns)))

    def _get_stock_list(self, world: World, req: Request) -> str:
        if req.number("DateType") != -1:
            raise client_fault("GetStockList: only DateType -1 (last changed) is supported")
        since = req.when("DateValue")
        item_type = req.number("StockItemType")
        items = [
            (d["stock_code"], d["parent_code"] or None)
            for d in world.iter("stock_item", updated_since=_canonical(since))
            if item_type in (0, d["stock_type"])
        ]
        return render.render_stock_list(items)

    def _stock_docs(self, world: World, req: Request, codes_param: str) -> list[dict]:
        mapping = req.number("MappingType")
        fields = {1: "stock_code", 2: "other_ref"}
        if mapping not in fields:
            raise client_fault(f"{req.method}: MappingType must be 1 (StockCode) or 2 (OtherRef)")
        since = req.when("LastUpdated")
        docs = self._by_field(world, "stock_item", fields[mapping], kc_list(req.text(codes_param)))
        return [d for d in docs if _after(d["updated"], since)]

    def _export_stock(self, world: World, req: Request) -> str:
        docs = self._stock_docs(world, req, "StockCode")
        return render.document("STOCK_ITEMS", self._render_records(world, "stock_item", docs, render.render_stock_item))

    def _export_stock_compressed(self, world: World, req: Request) -> str:
        if req.number("CompressionMethod") != 0:
            raise client_fault("ExportStockCompressed: CompressionMethod must be 0 (zip)")
        document = self._export_stock(world, req)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            # A fixed timestamp: the same world gives the same bytes.
            archive.writestr(zipfile.ZipInfo("StockExport.xml", date_time=(2000, 1, 1, 0, 0, 0)), document.encode("utf-8"))
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def _export_stock_status(self, world: World, req: Request) -> str:
        req.number("SiteID")
        docs = self._stock_docs(world, req, "StockCodes")
        return render.document("STOCK_ITEMS", (render.render_stock_status(d) for d in docs))

    def _export_orders(self, world: World, req: Request) -> str:
        date_from, date_to = req.when("DateFrom"), req.when("DateTo")
        date_type = req.number("DateType")
        lo, hi = _canonical(date_from), _canonical(date_to)
        if date_type == 0:
            # Orders with no order date (a planted fault) have nothing to compare: never in range.
            docs = world.iter("sales_order", where="json_extract(doc, '$.order_date') >= ? AND json_extract(doc, '$.order_date') < ?", args=(lo, hi))
            keep = [d for d in docs if _in_range(_when(d["order_date"]), date_from, date_to)]
        elif date_type == 1:
            docs = world.iter("sales_order", where="updated >= ? AND updated < ?", args=(lo, hi))
            keep = [d for d in docs if _in_range(_when(d["updated"]), date_from, date_to)]
        else:
            raise client_fault("ExportOrders: DateType must be 0 (order date) or 1 (last changed)")
        return render.document("SALES_ORDERS", self._render_records(world, "sales_order", keep, render.render_sales_order))

    def _export_order_status(self, world: World, req: Request) -> str:
        mapping = req.number("MappingType")
        ids = kc_list(req.text("IDs"))
        if mapping == 3:
            docs = self._by_field(world, "sales_order", "sorder_code", ids)
        elif mapping == 4:
            docs = self._by_field(world, "sales_order", "associated_ref", ids)
        elif mapping == 5:
            docs = self._by_field(world, "sales_order", "sorder_id", [parse_int("IDs", i) for i in ids])
        else:
            raise client_fault("ExportOrderStatusEx: MappingType must be 3 (SOrderCode), 4 (AssociatedRef) or 5 (SOrderID)")
        date_from = req.when("DateFrom") if req.has("DateFrom") else None
        date_to = req.when("DateTo") if req.has("DateTo") else None
        include_tracking = req.flag("IncludeTracking", False)
        include_cancelled = req.flag("IncludeCancelled", False)
        stages_text = req.text("InvoiceStageIDs") or ""
        stage_ids = frozenset(parse_int("InvoiceStageIDs", s) for s in kc_list(stages_text)) or None
        out: list[str] = []
        for doc in docs:
            changed = _when(doc["updated"])
            if (date_from and (changed is None or changed < date_from)) or (date_to and (changed is None or changed >= date_to)):
                continue
            if not include_cancelled and render.order_status(doc) == "Cancelled":
                continue
            if stage_ids is not None and not any(inv["stage_id"] in stage_ids for inv in doc["invoices"]):
                continue
            out.append(render.render_order_status(doc, include_tracking=include_tracking, stage_ids=stage_ids))
        return render.document("ORDER_STATUSES", out)


def _after(stored: str | None, since: datetime) -> bool:
    value = _when(stored)
    return value is not None and value > since


def _in_range(value: datetime | None, lo: datetime, hi: datetime) -> bool:
    return value is not None and lo <= value < hi


def _parse_customers(text: str) -> Element:
    try:
        root = DET.fromstring(text.encode("utf-8"), forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise client_fault(f"ImportCompany: Customers is not well-formed XML: {exc}") from None
    if root.tag != "COMPANYS":
        raise client_fault(f"ImportCompany: Customers must be a COMPANYS document, not {root.tag}")
    return root


def _apply_consent(doc: dict, company: Element) -> None:
    """Copy the consent fields the import carries; leave everything else as KC holds it."""
    try:
        if (status := company.find("MAILING_STATUS")) is not None:
            doc["mailing_status"] = kc_int(status.text, field="MAILING_STATUS")
        for incoming in company.findall("CONTACTS/CONTACT"):
            subscribe = incoming.find("EMAILSUBSCRIBE")
            if subscribe is None:
                continue
            for contact in _matching_contacts(doc, incoming):
                contact["email_subscribe"] = kc_bool(subscribe.text)
    except ConversionError as exc:
        raise client_fault(f"ImportCompany {doc['company_code']}: {exc}") from None


def _matching_contacts(doc: dict, incoming: Element) -> list[dict]:
    """By CONTACT_ID when given; else by EMAIL within this one company (KC never matches
    companies by email, but a contact inside a known company can be found by it)."""
    contact_id = (incoming.findtext("CONTACT_ID") or "").strip()
    if contact_id:
        wanted = parse_int("CONTACT_ID", contact_id)
        return [c for c in doc["contacts"] if c["contact_id"] == wanted]
    email = (incoming.findtext("EMAIL") or "").strip().casefold()
    return [c for c in doc["contacts"] if email and (c["email"] or "").strip().casefold() == email]


__all__ = ["KhaosEmulator", "SOAP_PATH", "WSDL_PATH"]
