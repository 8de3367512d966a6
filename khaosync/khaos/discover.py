"""``discover``: read a site's WSDL and say, operation by operation, whether khaosync can talk to it.

Each operation in the WSDL, and each one khaosync calls, gets one mark:

- ``used``: khaosync calls it and the site takes every parameter we send, with no extra
  required ones;
- ``expected_missing``: khaosync calls it (after ``khaos.methods`` renames) and the site
  does not publish it;
- ``different_signature``: published, but it lacks a parameter we send or wants a required
  one we do not send (both listed);
- ``unused``: published, and khaosync does not call it (with these settings).

What khaosync sends comes from ``EXPECTED_OPERATIONS`` (the table the client builds its
requests from), plus ``Username``/``Password`` when the profile has credentials.

WSDL 1.1 in both styles Khaos Control sites may publish: rpc (Delphi's default; parameters
are message parts, which cannot say "optional", so extra parts are reported but do not
change the mark: a Delphi server defaults missing parts) and document/literal wrapped
(parameters are the wrapper element's children; ``minOccurs="0"`` means optional).
"""

from __future__ import annotations

import difflib
from typing import Literal
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException
from pydantic import BaseModel, Field

from khaosync.config import KhaosSettings
from khaosync.khaos.errors import KhaosBadResponseError
from khaosync.khaos.soap import (
    BODY_NAMESPACE, CREDENTIAL_PARAMS, EXPECTED_OPERATIONS, Operation, Param, site_method_name, soap_action,
)

WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
SOAP_BINDING_NAMESPACES = ("http://schemas.xmlsoap.org/wsdl/soap/", "http://schemas.xmlsoap.org/wsdl/soap12/")
XSD_NS = "http://www.w3.org/2001/XMLSchema"

Mark = Literal["used", "expected_missing", "different_signature", "unused"]


class WsdlParam(BaseModel):
    name: str
    xsd_type: str | None = None
    required: bool | None = Field(default=None, description="None: the WSDL cannot say (rpc style)")


class OperationReport(BaseModel):
    name: str = Field(description="as the site spells it; our name when the site lacks it")
    our_name: str | None = Field(default=None, description="our method name, when khaosync calls this")
    status: Mark
    soap_action: str | None = None
    params: list[WsdlParam] = Field(default_factory=list, description="what the site's WSDL declares")
    sent_params: list[str] = Field(default_factory=list, description="what khaosync sends")
    missing_params: list[str] = Field(default_factory=list, description="we send them, the site lacks them")
    extra_required_params: list[str] = Field(default_factory=list, description="the site requires them, we do not send them")
    extra_params: list[str] = Field(default_factory=list, description="every site parameter we do not send")
    type_differences: list[str] = Field(default_factory=list)
    suggestions: list[str] = Field(default_factory=list, description="similar site operations, for khaos.methods")
    notes: list[str] = Field(default_factory=list)


class DiscoverReport(BaseModel):
    service: str | None = None
    target_namespace: str | None = None
    endpoint: str | None = None
    style: str | None = None
    operations: list[OperationReport]
    notes: list[str] = Field(default_factory=list)

    def with_status(self, status: Mark) -> list[OperationReport]:
        return [op for op in self.operations if op.status == status]

    def operation(self, name: str) -> OperationReport:
        """By the site's name or ours."""
        for op in self.operations:
            if name in (op.name, op.our_name):
                return op
        raise KeyError(name)

    @property
    def ok(self) -> bool:
        """True when every operation khaosync calls is there with a matching signature."""
        return all(op.status in ("used", "unused") for op in self.operations)


# -- reading the WSDL ------------------------------------------------------------------

class _SiteOperation(BaseModel):
    name: str
    soap_action: str | None
    style: str
    namespace: str | None  # of the method element (rpc: soap:body's; document: the schema's)
    params: list[WsdlParam]


def _local(qname: str | None) -> str:
    """``tns:Foo`` or ``{ns}Foo`` -> ``Foo``. One WSDL document: local names are unique enough."""
    if not qname:
        return ""
    return qname.rpartition("}")[2].rpartition(":")[2]


def _children(parent: Element, namespace: str, name: str) -> list[Element]:
    return [c for c in parent if c.tag == f"{{{namespace}}}{name}"]


def _soap_child(parent: Element, name: str) -> Element | None:
    for namespace in SOAP_BINDING_NAMESPACES:
        found = parent.find(f"{{{namespace}}}{name}")
        if found is not None:
            return found
    return None


class _Wsdl:
    def __init__(self, root: Element):
        self.root = root
        self.messages = {m.get("name", ""): _children(m, WSDL_NS, "part") for m in _children(root, WSDL_NS, "message")}
        self.elements: dict[str, Element] = {}
        self.complex_types: dict[str, Element] = {}
        self.schema_namespace: str | None = None
        for schema in root.iter(f"{{{XSD_NS}}}schema"):
            self.schema_namespace = self.schema_namespace or schema.get("targetNamespace")
            for e in _children(schema, XSD_NS, "element"):
                self.elements[e.get("name", "")] = e
            for t in _children(schema, XSD_NS, "complexType"):
                self.complex_types[t.get("name", "")] = t

    def service(self) -> tuple[str | None, str | None]:
        for service in _children(self.root, WSDL_NS, "service"):
            for port in _children(service, WSDL_NS, "port"):
                address = _soap_child(port, "address")
                if address is not None:
                    return service.get("name"), address.get("location")
            return service.get("name"), None
        return None, None

    def bindings(self) -> dict[str, tuple[str, str | None, str | None]]:
        """Operation name -> (style, soapAction, soap:body namespace), from every SOAP binding."""
        found: dict[str, tuple[str, str | None, str | None]] = {}
        for binding in _children(self.root, WSDL_NS, "binding"):
            soap_binding = _soap_child(binding, "binding")
            if soap_binding is None:
                continue  # an HTTP or other non-SOAP binding
            default_style = soap_binding.get("style", "document")  # WSDL 1.1's default
            for op in _children(binding, WSDL_NS, "operation"):
                soap_op = _soap_child(op, "operation")
                style = (soap_op.get("style") if soap_op is not None else None) or default_style
                action = soap_op.get("soapAction") if soap_op is not None else None
                inputs = _children(op, WSDL_NS, "input")
                body = _soap_child(inputs[0], "body") if inputs else None
                found.setdefault(op.get("name", ""), (style, action, body.get("namespace") if body is not None else None))
        return found

    def operations(self) -> list[_SiteOperation]:
        bindings = self.bindings()
        out: dict[str, _SiteOperation] = {}
        for port_type in _children(self.root, WSDL_NS, "portType"):
            for op in _children(port_type, WSDL_NS, "operation"):
                name = op.get("name", "")
                if name in out:
                    continue  # overloaded or repeated in another portType: first wins
                style, action, namespace = bindings.get(name, ("document", None, None))
                inputs = _children(op, WSDL_NS, "input")
                message = _local(inputs[0].get("message")) if inputs else ""
                if style == "document" or not namespace:
                    namespace = self.schema_namespace or self.root.get("targetNamespace")
                out[name] = _SiteOperation(name=name, soap_action=action, style=style, namespace=namespace,
                                           params=self._params(self.messages.get(message, []), style))
        return list(out.values())

    def _params(self, parts: list[Element], style: str) -> list[WsdlParam]:
        if style == "document" and len(parts) == 1 and parts[0].get("element"):
            wrapped = self._wrapped_params(_local(parts[0].get("element")))
            if wrapped is not None:
                return wrapped
        return [WsdlParam(name=p.get("name", ""), xsd_type=_local(p.get("type") or p.get("element")) or None)
                for p in parts]

    def _wrapped_params(self, element_name: str) -> list[WsdlParam] | None:
        element = self.elements.get(element_name)
        if element is None:
            return None
        complex_type = element.find(f"{{{XSD_NS}}}complexType")
        if complex_type is None and element.get("type"):
            complex_type = self.complex_types.get(_local(element.get("type")))
        if complex_type is None:
            return None
        params: list[WsdlParam] = []
        for group in ("sequence", "all"):
            for container in complex_type.iter(f"{{{XSD_NS}}}{group}"):
                for child in _children(container, XSD_NS, "element"):
                    name = child.get("name") or _local(child.get("ref"))
                    params.append(WsdlParam(name=name, xsd_type=_local(child.get("type")) or None,
                                            required=child.get("minOccurs", "1") != "0"))
        return params


def parse_wsdl(wsdl_bytes: bytes) -> tuple[_Wsdl, list[_SiteOperation]]:
    try:
        root = DET.fromstring(wsdl_bytes, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise KhaosBadResponseError(f"WSDL: not a readable XML document: {exc}", method="WSDL") from None
    if root.tag != f"{{{WSDL_NS}}}definitions":
        raise KhaosBadResponseError(f"WSDL: expected a WSDL 1.1 <definitions>, got <{_local(root.tag)}>", method="WSDL")
    wsdl = _Wsdl(root)
    return wsdl, wsdl.operations()


# -- comparing -------------------------------------------------------------------------

def sent_params(operation: Operation, settings: KhaosSettings) -> tuple[Param, ...]:
    """What the client puts in the method element for this operation, in order."""
    return (CREDENTIAL_PARAMS if settings.credentials is not None else ()) + operation.params


def _compare(operation: Operation, site: _SiteOperation, settings: KhaosSettings) -> OperationReport:
    ours = sent_params(operation, settings)
    our_names = [p.name for p in ours]
    site_by_name = {p.name: p for p in site.params}
    missing = [n for n in our_names if n not in site_by_name]
    extra = [p for p in site.params if p.name not in our_names]
    extra_required = [p.name for p in extra if p.required is True]
    notes: list[str] = []
    lowered = {p.name.lower(): p.name for p in site.params}
    for name in missing:
        if name.lower() in lowered:
            notes.append(f"{name}: the site spells it {lowered[name.lower()]}")
    optional_unknown = [p.name for p in extra if p.required is None]
    if optional_unknown:
        notes.append(f"the site also takes {', '.join(optional_unknown)} (rpc style: the WSDL cannot say whether "
                     "they are optional; khaosync does not send them)")
    expected_action = soap_action(site.name)
    if site.soap_action is not None and site.soap_action.strip('"') != expected_action:
        notes.append(f"the site's SOAPAction is {site.soap_action!r}; khaosync sends {expected_action!r}")
    differences = [
        f"{p.name}: khaosync sends {p.xsd_type}, the site declares {site_by_name[p.name].xsd_type}"
        for p in ours
        if p.name in site_by_name and site_by_name[p.name].xsd_type not in (None, p.xsd_type)
    ]
    return OperationReport(
        name=site.name, our_name=operation.name, soap_action=site.soap_action, params=site.params,
        status="different_signature" if missing or extra_required else "used",
        sent_params=our_names, missing_params=missing, extra_required_params=extra_required,
        extra_params=[p.name for p in extra], type_differences=differences, notes=notes,
    )


def _unused(site: _SiteOperation, settings: KhaosSettings) -> OperationReport:
    notes: list[str] = []
    ours = next((op for op in EXPECTED_OPERATIONS.values() if site_method_name(settings, op.name) == site.name), None)
    if ours is not None and not ours.is_called(settings):
        setting = "true" if ours.called_when == "compressed_stock" else "false"
        notes.append(f"khaosync calls it only when khaos.compressed_stock is {setting}")
    return OperationReport(name=site.name, status="unused", soap_action=site.soap_action, params=site.params,
                           extra_params=[p.name for p in site.params], notes=notes)


def discover(wsdl_bytes: bytes, settings: KhaosSettings) -> DiscoverReport:
    """Compare a site's WSDL with what khaosync sends. ``report.ok`` is the one-line verdict.

    Example::

        report = discover(client.fetch_wsdl(), profile.khaos)
        for op in report.with_status("expected_missing"):
            print(op.name, op.suggestions)
    """
    wsdl, site_operations = parse_wsdl(wsdl_bytes)
    by_name = {op.name: op for op in site_operations}
    claimed: set[str] = set()
    reports: list[OperationReport] = []
    for operation in EXPECTED_OPERATIONS.values():
        if not operation.is_called(settings):
            continue
        name = site_method_name(settings, operation.name)
        site = by_name.get(name)
        if site is None:
            reports.append(_missing(operation, name, settings, site_operations))
            continue
        claimed.add(name)
        reports.append(_compare(operation, site, settings))
    reports.extend(_unused(op, settings) for op in site_operations if op.name not in claimed)
    service, endpoint = wsdl.service()
    styles = sorted({op.style for op in site_operations})
    return DiscoverReport(
        service=service, target_namespace=wsdl.root.get("targetNamespace"), endpoint=endpoint,
        style=",".join(styles) or None, operations=reports, notes=_site_notes(site_operations, endpoint, settings),
    )


def _missing(operation: Operation, name: str, settings: KhaosSettings,
             site_operations: list[_SiteOperation]) -> OperationReport:
    names = [op.name for op in site_operations]
    # Similar names first, then operations that take exactly the parameters we send.
    ours = {p.name for p in operation.params}
    suggestions = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    suggestions += [op.name for op in site_operations
                    if ours and {p.name for p in op.params} >= ours and op.name not in suggestions][:3]
    notes = []
    if name != operation.name:
        notes.append(f"khaos.methods renames {operation.name} to {name}")
    if suggestions:
        notes.append(f"if the site calls it {suggestions[0]}, set khaos.methods.{operation.name}: {suggestions[0]}")
    return OperationReport(name=name, our_name=operation.name, status="expected_missing",
                           sent_params=[p.name for p in sent_params(operation, settings)],
                           suggestions=suggestions, notes=notes)


def _site_notes(site_operations: list[_SiteOperation], endpoint: str | None, settings: KhaosSettings) -> list[str]:
    notes: list[str] = []
    namespaces = sorted({op.namespace for op in site_operations if op.namespace and op.namespace != BODY_NAMESPACE})
    if namespaces:
        notes.append(f"the site's method elements are in {', '.join(namespaces)}; khaosync sends them in {BODY_NAMESPACE}")
    if endpoint and endpoint.rstrip("/") != settings.soap_url.rstrip("/"):
        notes.append(f"the WSDL's endpoint is {endpoint}; khaos.soap_url is {settings.soap_url}")
    return notes


__all__ = ["DiscoverReport", "EXPECTED_OPERATIONS", "OperationReport", "WsdlParam", "discover", "parse_wsdl"]
