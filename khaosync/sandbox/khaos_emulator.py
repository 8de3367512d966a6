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

import random
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator
from wsgiref.util import application_uri
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from khaosync.sandbox.khaos_methods import KhaosMethods
from khaosync.sandbox.khaos_request import Request, SoapFault, client_fault
from khaosync.sandbox.khaos_wsdl import BODY_NAMESPACE, CREDENTIAL_PARAMS, SITE_METHODS, render_wsdl, soap_action
from khaosync.sandbox.world import World

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_PATH = "/khaos/KhaosKSD.exe/soap/IKosWeb"
WSDL_PATH = "/khaos/KhaosKSD.exe/wsdl/IKosWeb"
MAX_REQUEST_BYTES = 32 * 2**20

StartResponse = Callable[..., object]


class Reply:
    def __init__(self, status: str, body: bytes, content_type: str = "text/xml; charset=utf-8",
                 extra_headers: Iterable[tuple[str, str]] = ()):
        self.status = status
        self.body = body
        self.headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra_headers]


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _encode(value: object) -> str:
    """A structure as nested accessor elements (interim: arrays as repeated ``item``)."""
    if isinstance(value, dict):
        return "".join(f"<{k}>{_encode(v)}</{k}>" for k, v in value.items())
    if isinstance(value, list):
        return "".join(f"<item>{_encode(v)}</item>" for v in value)
    if isinstance(value, (bytes, bytearray)):
        import base64
        return base64.b64encode(bytes(value)).decode("ascii")
    return _xml_text(str(value))


def response_envelope(method: str, returned: object) -> bytes:
    if not isinstance(returned, str):
        return (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body>'
            f'<ns:{method}Response xmlns:ns="{BODY_NAMESPACE}"><return>{_encode(returned)}</return>'
            f"</ns:{method}Response></soap:Body></soap:Envelope>"
        ).encode("utf-8")
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body>'
        f'<ns:{method}Response xmlns:ns="{BODY_NAMESPACE}"><return>{_xml_text(returned)}</return>'
        f"</ns:{method}Response></soap:Body></soap:Envelope>"
    ).encode("utf-8")


def server_date(clock: str | None) -> str:
    """The HTTP ``Date`` of an answer: the site's own clock (the sandbox world's), which a
    client uses as "now" on the site when it moves its bookmarks."""
    from datetime import datetime, timezone
    from email.utils import format_datetime

    from khaosync.khaos.convert import KC_FORMAT, LONDON

    now = datetime.strptime(clock, KC_FORMAT).replace(tzinfo=LONDON) if clock else datetime.now(timezone.utc)
    return format_datetime(now.astimezone(timezone.utc), usegmt=True)


def fault_envelope(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><soap:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{_xml_text(message)}</faultstring>"
        "</soap:Fault></soap:Body></soap:Envelope>"
    ).encode("utf-8")


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
        self._handlers = KhaosMethods().handlers()
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
                clock = world.clock
                returned = self._handlers[method](world, request)
            reply = Reply("200 OK", response_envelope(method, returned), extra_headers=[("Date", server_date(clock))])
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

__all__ = ["KhaosEmulator", "SOAP_PATH", "WSDL_PATH"]
