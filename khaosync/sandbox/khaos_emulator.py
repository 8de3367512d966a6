"""A strict Khaos Control SOAP emulator (interface A), serving the sandbox world.

KC's ``KhaosKSD.exe`` is a Delphi WebSnap SOAP server; this emulator speaks as one does
(signatures and WSDL in khaos_wsdl.py, with their evidence):

- ``POST .../KhaosKSD.exe/soap/IKosWeb``: SOAP 1.1 rpc/encoded, ``text/xml``, a
  ``SOAPAction`` naming the method in the body, the method element in
  ``urn:IKosWebIntf-IKosWeb``, its parameters unqualified (``xsi:type`` allowed, and then it
  must be the declared XSD type), known parameters only, required ones present, values valid
  for their XSD type. Anything else is a ``SOAP-ENV:Client`` fault (HTTP 500).
- Answers are rpc/encoded as Delphi writes them: ``xsi:type`` on every value,
  ``SOAP-ENC:arrayType`` on arrays, array elements named ``item``. Delphi's converter sends
  class instances as multi-reference values by default (``soSendMultiRefObj`` with
  ``soRootRefNodesToBody``, the options Delphi's designer sets): ``<return href="#1"/>`` in
  the method's response element and the objects after it in the Body as ``<NS2:TStockList
  id="1">``. That is the default here (``multiref=True``); ``multiref=False`` writes them
  inline. A client must read both.
- ``GET .../KhaosKSD.exe/wsdl/IKosWeb``: the WSDL, its address built from the request's host.
- Credentials (both **(assumed)**): ``credentials_mode="body"`` wants ``Username``/``Password``
  as the first parameters of every call; ``"session"`` wants ``Login(UserName, UserPassword)``
  first, whose string answer then travels in a ``SessionID`` SOAP header.

What each method answers is khaos_methods.py (a ``str``, or plain Python for a structure,
encoded here per the WSDL type). ``Login`` and ``GetVersion`` are answered here; a declared
method without a handler (``ImportOrders``, ``ExportOrderStatus``) is a ``SOAP-ENV:Server``
fault "not supported by the sandbox".

The world is opened per request: the emulator is served from several threads, and
``sandbox advance`` changes the world from another process between requests. Transport
faults come from ``fail_rate`` (HTTP 500 ``SOAP-ENV:Server`` fault or a plain-text 503,
drawn from ``random.Random(seed)``) and ``latency_ms``.
"""

from __future__ import annotations

import base64
import io
import random
import secrets
import threading
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal
from wsgiref.util import application_uri
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from khaosync.khaos.convert import KC_FORMAT, LONDON
from khaosync.sandbox.khaos_methods import KhaosMethods
from khaosync.sandbox.khaos_request import Request, SoapFault, check_value, client_fault, server_fault
from khaosync.sandbox.khaos_wsdl import (
    BODY_NAMESPACE, CREDENTIAL_PARAMS, SITE_METHODS, TYPES_NAMESPACE, ArrayOf, SiteParam,
    StockListForm, Struct, TypeRef, render_wsdl, soap_action,
)
from khaosync.sandbox.world import World

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENC = "http://schemas.xmlsoap.org/soap/encoding/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
SOAP_PATH = "/khaos/KhaosKSD.exe/soap/IKosWeb"
WSDL_PATH = "/khaos/KhaosKSD.exe/wsdl/IKosWeb"
MAX_REQUEST_BYTES = 32 * 2**20
SESSION_HEADER = "SessionID"
SANDBOX_VERSION = "KhaosKSD sandbox 8.0"

StartResponse = Callable[..., object]
CredentialsMode = Literal["body", "session"]


class Reply:
    def __init__(self, status: str, body: bytes, content_type: str = "text/xml; charset=utf-8",
                 extra_headers: Iterable[tuple[str, str]] = ()):
        self.status = status
        self.body = body
        self.headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra_headers]


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


_ENVELOPE_OPEN = (
    '<?xml version="1.0" encoding="utf-8"?>'
    f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" xmlns:xsd="{XSD}" xmlns:xsi="{XSI}"'
    f' xmlns:SOAP-ENC="{SOAP_ENC}">'
)


# -- answers, encoded as Delphi writes them ------------------------------------------------

class _Encoder:
    """A handler's plain Python value -> rpc/encoded XML for its WSDL type."""

    def __init__(self, method: str, multiref: bool):
        self.method = method
        self.multiref = multiref
        self.roots: list[str] = []  # multi-reference objects, written after the response element

    def value(self, name: str, ref: TypeRef, value: Any) -> str:
        if isinstance(ref, str):
            return f'<{name} xsi:type="xsd:{ref}">{_xml_text(self._scalar(name, ref, value))}</{name}>'
        if isinstance(ref, ArrayOf):
            if not isinstance(value, list):
                raise TypeError(f"{self.method}: {name} must be a list, not {type(value).__name__}")
            item_type = f"xsd:{ref.item}" if isinstance(ref.item, str) else f"NS2:{ref.item.name}"
            items = "".join(self.value("item", ref.item, v) for v in value)
            return (f'<{name} xsi:type="SOAP-ENC:Array" SOAP-ENC:arrayType="{item_type}[{len(value)}]">'
                    f"{items}</{name}>")
        if not self.multiref:
            return f'<{name} xsi:type="NS2:{ref.name}">{self._fields(name, ref, value)}</{name}>'
        self.roots.append("")  # reserve the id before the children take theirs: ids follow the order written
        ident = len(self.roots)
        self.roots[ident - 1] = f'<NS2:{ref.name} id="{ident}" xsi:type="NS2:{ref.name}">{self._fields(name, ref, value)}</NS2:{ref.name}>'
        return f'<{name} href="#{ident}"/>'

    def _fields(self, name: str, ref: Struct, value: Any) -> str:
        if not isinstance(value, dict) or set(value) != {n for n, _ in ref.fields}:
            got = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise TypeError(f"{self.method}: {name} must be a dict with {[n for n, _ in ref.fields]}, not {got}")
        return "".join(self.value(n, t, value[n]) for n, t in ref.fields)

    def _scalar(self, name: str, ref: str, value: Any) -> str:
        if ref == "base64Binary":
            if not isinstance(value, bytes):
                raise TypeError(f"{self.method}: {name} must be bytes")
            return base64.b64encode(value).decode("ascii")
        if ref == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{self.method}: {name} must be an int")
            return str(value)
        if ref == "boolean":
            if not isinstance(value, bool):
                raise TypeError(f"{self.method}: {name} must be a bool")
            return "true" if value else "false"
        if value is None:
            return ""
        if not isinstance(value, str):
            raise TypeError(f"{self.method}: {name} must be a str, not {type(value).__name__}")
        return value


def response_envelope(method: str, returned: Any, returns: TypeRef = "string", *, multiref: bool = True) -> bytes:
    encoder = _Encoder(method, multiref)
    inner = encoder.value("return", returns, returned)
    return (
        _ENVELOPE_OPEN
        + f'<SOAP-ENV:Body SOAP-ENV:encodingStyle="{SOAP_ENC}" xmlns:NS2="{TYPES_NAMESPACE}">'
        f'<NS1:{method}Response xmlns:NS1="{BODY_NAMESPACE}">{inner}</NS1:{method}Response>'
        + "".join(encoder.roots)
        + "</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode("utf-8")


def server_date(clock: str | None) -> str:
    """The HTTP ``Date`` of an answer: the site's own clock (the sandbox world's, London local
    time), which a client may take as "now" on the site when it moves its bookmarks."""
    now = datetime.strptime(clock, KC_FORMAT).replace(tzinfo=LONDON) if clock else datetime.now(timezone.utc)
    return format_datetime(now.astimezone(timezone.utc), usegmt=True)


def fault_envelope(code: str, message: str) -> bytes:
    return (
        _ENVELOPE_OPEN + "<SOAP-ENV:Body><SOAP-ENV:Fault>"
        f"<faultcode>{code}</faultcode><faultstring>{_xml_text(message)}</faultstring>"
        "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode("utf-8")


# -- requests ------------------------------------------------------------------------------

def _local(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


class _Checks:
    """What this emulator instance demands beyond the signatures."""

    def __init__(self, credentials: tuple[str, str] | None, mode: CredentialsMode, sessions: set[str]):
        self.credentials = credentials
        self.mode = mode
        self.sessions = sessions


def parse_soap_request(body: bytes, action: str | None, credentials: tuple[str, str] | None = None, *,
                       mode: CredentialsMode = "body", sessions: set[str] | None = None) -> Request:
    """Envelope -> Request, checking everything the site's signatures fix."""
    checks = _Checks(credentials, mode, sessions if sessions is not None else set())
    try:
        root = DET.fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise client_fault(f"request is not well-formed XML: {exc}") from None
    if _local(root.tag) != (SOAP_ENV, "Envelope"):
        raise SoapFault("SOAP-ENV:VersionMismatch", "expected a SOAP 1.1 Envelope")
    headers = [c for c in root if _local(c.tag) == (SOAP_ENV, "Header")]
    bodies = [c for c in root if _local(c.tag) == (SOAP_ENV, "Body")]
    # rpc/encoded: multi-reference values may follow the method element; they carry an id.
    calls = [c for c in bodies[0] if c.get("id") is None] if len(bodies) == 1 else []
    if len(calls) != 1:
        raise client_fault("the SOAP Body must hold exactly one method element")
    call = calls[0]
    namespace, method = _local(call.tag)
    if method not in SITE_METHODS:
        raise client_fault(f"No method named '{method}' is supported by interface 'IKosWeb'")
    if namespace != BODY_NAMESPACE:
        raise client_fault(f"{method}: method element must be in namespace {BODY_NAMESPACE}, not {namespace}")
    try:
        expected_action = soap_action(method)
        if action is None or action.strip('"') != expected_action:
            raise client_fault(f"SOAPAction {action!r} does not match the method: expected \"{expected_action}\"")
        params = _params(method, call, _xsd_prefixes(body))
        _check_credentials(method, params, headers[0] if headers else None, checks)
        return _matched(method, params, checks)
    except SoapFault as fault:
        fault.method = method
        raise


def _xsd_prefixes(body: bytes) -> set[str]:
    """The prefixes the request binds to XML Schema (ElementTree keeps no namespace map, so read them)."""
    prefixes = set()
    for _event, (prefix, uri) in DET.iterparse(io.BytesIO(body), events=("start-ns",), forbid_dtd=True):
        if uri == XSD:
            prefixes.add(prefix)
    return prefixes


def _params(method: str, call: Element, xsd_prefixes: set[str]) -> dict[str, tuple[str, str | None]]:
    """name -> (text, xsi:type or None); nil values are absent."""
    params: dict[str, tuple[str, str | None]] = {}
    for child in call:
        namespace, name = _local(child.tag)
        if namespace is not None:
            raise client_fault(f"{method}: parameter {name} must be unqualified")
        if name in params:
            raise client_fault(f"{method}: parameter {name} given twice")
        if len(child) or child.get("href") is not None:
            raise client_fault(f"{method}: parameter {name} must be a simple value")
        if child.get(f"{{{XSI}}}nil") in ("true", "1"):
            continue
        params[name] = (child.text or "", _xsi_type(child, xsd_prefixes))
    return params


def _xsi_type(element: Element, xsd_prefixes: set[str]) -> str | None:
    """The XSD type an ``xsi:type`` names; a type outside XML Schema comes back as itself, to be refused."""
    declared = element.get(f"{{{XSI}}}type")
    if declared is None:
        return None
    prefix, _, name = declared.rpartition(":")
    return name if prefix in xsd_prefixes else declared


def _check_credentials(method: str, params: dict[str, tuple[str, str | None]], header: Element | None,
                       checks: _Checks) -> None:
    if checks.credentials is None:
        for p in CREDENTIAL_PARAMS:  # a site without credentials ignores any that are sent
            params.pop(p.name, None)
        return
    if checks.mode == "body":
        given = tuple(params.pop(p.name, ("", None))[0] for p in CREDENTIAL_PARAMS)
        if given != checks.credentials:
            raise client_fault("Access denied")
        return
    if method in ("Login", "GetVersion"):
        return
    session = None
    if header is not None:
        for child in header:
            if _local(child.tag)[1] == SESSION_HEADER:
                session = (child.text or "").strip()
    if not session or session not in checks.sessions:
        raise client_fault("Access denied: no valid session (call Login first)")


def _forms(method: str, checks: _Checks) -> list[tuple[str, tuple[SiteParam, ...]]]:
    site = SITE_METHODS[method]
    forms = [(site.declared_form, site.form())] + [(n, f) for n, f in site.forms.items() if n != site.declared_form]
    return forms


def _matched(method: str, given: dict[str, tuple[str, str | None]], checks: _Checks) -> Request:
    """The first accepted parameter list the call fits; else the fault of the declared one."""
    first_fault: SoapFault | None = None
    for form_name, form in _forms(method, checks):
        try:
            params, types = _fit(method, form, given)
        except SoapFault as fault:
            first_fault = first_fault or fault
            continue
        return Request(method, params, types, form=form_name)
    assert first_fault is not None
    raise first_fault


def _fit(method: str, form: tuple[SiteParam, ...], given: dict[str, tuple[str, str | None]]
         ) -> tuple[dict[str, str], dict[str, str]]:
    by_name = {p.name: p for p in form}
    params: dict[str, str] = {}
    types: dict[str, str] = {}
    for name, (text, xsi_type) in given.items():
        spec = by_name.get(name)
        if spec is None:
            raise client_fault(f"{method}: unknown parameter {name}")
        if xsi_type is not None and xsi_type != spec.xsd_type:
            raise client_fault(f"{method}: parameter {name} is xsd:{spec.xsd_type}, not {xsi_type}")
        check_value(name, spec.xsd_type, text)
        if spec.canonical in params:
            raise client_fault(f"{method}: parameter {spec.canonical} given twice (as {name})")
        params[spec.canonical] = text
        types[spec.canonical] = spec.xsd_type
    missing = [p.name for p in form if p.required and p.alias_of is None and p.canonical not in params]
    if missing:
        raise client_fault(f"{method}: missing parameter(s) {', '.join(missing)}")
    return params, types


# -- the emulator ----------------------------------------------------------------------

class KhaosEmulator:
    """WSGI app: Khaos Control's SOAP endpoint and WSDL over a sandbox world folder.

    Options (each a way real sites differ): ``multiref`` (Delphi's default multi-reference
    objects, or inline), ``stock_list_form`` (which GetStockList parameter list the WSDL
    declares; both are accepted), and ``credentials`` with ``credentials_mode``.
    """

    def __init__(self, world_folder: str | Path, *, fail_rate: float = 0.0, latency_ms: int = 0, seed: int = 0,
                 sleep: Callable[[float], None] = time.sleep, credentials: tuple[str, str] | None = None,
                 credentials_mode: CredentialsMode = "body", multiref: bool = True,
                 stock_list_form: StockListForm = "last_updated"):
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError("fail_rate must be between 0 and 1")
        if stock_list_form not in ("last_updated", "date_type"):
            raise ValueError("stock_list_form must be 'last_updated' or 'date_type'")
        self.world_folder = Path(world_folder)
        self.fail_rate = fail_rate
        self.latency_ms = latency_ms
        self.credentials = credentials
        self.credentials_mode = credentials_mode
        self.multiref = multiref
        self.stock_list_form = stock_list_form
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sessions: set[str] = set()
        self._calls: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._injected: Counter[str] = Counter()
        self._http: Counter[int] = Counter()
        self._requests = 0
        self._handlers = KhaosMethods().handlers()
        # The world's clock as the last handler on this thread saw it: every answer's HTTP Date.
        self._clock = threading.local()
        unknown = set(self._handlers) - set(SITE_METHODS)
        assert not unknown, f"handlers for methods the site does not publish: {sorted(unknown)}"

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

    def expire_sessions(self) -> None:
        """Forget every Login session, as a site does when they expire or it restarts."""
        with self._lock:
            self._sessions.clear()

    def wsdl(self, endpoint: str) -> bytes:
        return render_wsdl(endpoint, with_credentials=self.credentials is not None and self.credentials_mode == "body",
                           stock_list_form=self.stock_list_form)

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
            return Reply("200 OK", self.wsdl(self._endpoint(environ)))
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
        return Reply("500 Internal Server Error", fault_envelope("SOAP-ENV:Server", "Server busy (injected fault)"))

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
            with self._lock:
                sessions = set(self._sessions)
            request = parse_soap_request(
                self._read_body(environ), environ.get("HTTP_SOAPACTION"), self.credentials,
                mode=self.credentials_mode, sessions=sessions,
            )
            method = request.method
            self._clock.value = None
            returned = self._answer(request)
            reply = Reply("200 OK", response_envelope(method, returned, SITE_METHODS[method].returns,
                                                      multiref=self.multiref),
                          extra_headers=[("Date", server_date(self._clock.value))])
        except SoapFault as fault:
            method = method or fault.method
            with self._lock:
                self._faults[fault.code] += 1
            reply = Reply("500 Internal Server Error", fault_envelope(fault.code, fault.message))
        if method is not None:  # every request that named a known method, answered or not
            with self._lock:
                self._calls[method] += 1
        return reply

    def _answer(self, request: Request) -> object:
        method = request.method
        if method == "Login":
            return self._login(request)
        if method == "GetVersion":
            return SANDBOX_VERSION
        handler = self._handlers.get(method)
        if handler is None:
            raise server_fault(f"{method} is not supported by the sandbox")
        with self._world(write=method == "ImportCompany") as world:
            self._clock.value = world.clock
            return handler(world, request)

    def _login(self, request: Request) -> str:
        given = (request.text("UserName") or "", request.text("UserPassword") or "")
        if self.credentials is not None and given != self.credentials:
            raise client_fault("Login failed: unknown user name or password")
        session = secrets.token_hex(16)
        with self._lock:
            self._sessions.add(session)
        return session

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
            raise server_fault("database not available") from None
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


__all__ = ["KhaosEmulator", "SESSION_HEADER", "SOAP_PATH", "WSDL_PATH", "parse_soap_request", "response_envelope"]
