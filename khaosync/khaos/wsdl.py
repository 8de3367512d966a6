"""Reading a Khaos Control site's WSDL: operations, their parameters, namespaces and return types.

Used by the client (which takes each method's body namespace and SOAPAction from the site's
WSDL, never from a constant) and by ``discover`` (which compares the whole with what
khaosync sends and reads).

WSDL 1.1 in both styles a site may publish: rpc (Delphi's default, KC's: parameters are
message parts, which cannot say "optional"; the body namespace is ``soap:body``'s) and
document/literal wrapped (parameters are the wrapper element's children; ``minOccurs="0"``
means optional; the namespace is the schema's).

A return type is read as a *shape*: ``"string"`` (or another XSD type name) for a simple
value, or the sorted field paths of a structure, ``("Count", "List[].ParentCode",
"List[].StockCode")``, arrays written ``[]`` whether they are ``soapenc:Array`` restrictions
(rpc/encoded) or ``maxOccurs="unbounded"`` elements (literal). Type names are not part of a
shape: clients read by field name.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from khaosync.khaos.errors import KhaosBadResponseError

WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
SOAP_BINDING_NAMESPACES = ("http://schemas.xmlsoap.org/wsdl/soap/", "http://schemas.xmlsoap.org/wsdl/soap12/")
XSD_NS = "http://www.w3.org/2001/XMLSchema"
SOAP_ENC_NS = "http://schemas.xmlsoap.org/soap/encoding/"
_MAX_DEPTH = 8

Shape = str | tuple[str, ...]


@dataclass(frozen=True)
class WsdlParam:
    name: str
    xsd_type: str | None = None
    required: bool | None = None  # None: the WSDL cannot say (rpc style)


@dataclass(frozen=True)
class SiteOperation:
    name: str
    soap_action: str | None
    style: str
    use: str | None  # "encoded" or "literal"
    namespace: str | None  # of the method element (rpc: soap:body's; document: the schema's)
    params: tuple[WsdlParam, ...]
    returns: Shape | None  # None: the WSDL declares no output


def local_name(qname: str | None) -> str:
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


class Wsdl:
    """A parsed WSDL 1.1 document."""

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
        self.operations = self._operations()

    def operation(self, name: str) -> SiteOperation | None:
        return next((op for op in self.operations if op.name == name), None)

    def service(self) -> tuple[str | None, str | None]:
        for service in _children(self.root, WSDL_NS, "service"):
            for port in _children(service, WSDL_NS, "port"):
                address = _soap_child(port, "address")
                if address is not None:
                    return service.get("name"), address.get("location")
            return service.get("name"), None
        return None, None

    def _bindings(self) -> dict[str, tuple[str, str | None, str | None, str | None]]:
        """Operation name -> (style, soapAction, soap:body namespace, use), from every SOAP binding."""
        found: dict[str, tuple[str, str | None, str | None, str | None]] = {}
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
                found.setdefault(op.get("name", ""), (
                    style, action, body.get("namespace") if body is not None else None,
                    body.get("use") if body is not None else None,
                ))
        return found

    def _operations(self) -> list[SiteOperation]:
        bindings = self._bindings()
        out: dict[str, SiteOperation] = {}
        for port_type in _children(self.root, WSDL_NS, "portType"):
            for op in _children(port_type, WSDL_NS, "operation"):
                name = op.get("name", "")
                if name in out:
                    continue  # overloaded or repeated in another portType: first wins
                style, action, namespace, use = bindings.get(name, ("document", None, None, None))
                inputs = _children(op, WSDL_NS, "input")
                outputs = _children(op, WSDL_NS, "output")
                message = local_name(inputs[0].get("message")) if inputs else ""
                if style == "document" or not namespace:
                    namespace = self.schema_namespace or self.root.get("targetNamespace")
                returns = self._returns(local_name(outputs[0].get("message")), style) if outputs else None
                out[name] = SiteOperation(name=name, soap_action=action, style=style, use=use, namespace=namespace,
                                          params=tuple(self._params(self.messages.get(message, []), style)),
                                          returns=returns)
        return list(out.values())

    # -- parameters ------------------------------------------------------------------
    def _params(self, parts: list[Element], style: str) -> list[WsdlParam]:
        if style == "document" and len(parts) == 1 and parts[0].get("element"):
            wrapped = self._wrapped_params(local_name(parts[0].get("element")))
            if wrapped is not None:
                return wrapped
        return [WsdlParam(name=p.get("name", ""), xsd_type=local_name(p.get("type") or p.get("element")) or None)
                for p in parts]

    def _wrapped_type(self, element_name: str) -> Element | None:
        element = self.elements.get(element_name)
        if element is None:
            return None
        complex_type = element.find(f"{{{XSD_NS}}}complexType")
        if complex_type is None and element.get("type"):
            complex_type = self.complex_types.get(local_name(element.get("type")))
        return complex_type

    def _wrapped_params(self, element_name: str) -> list[WsdlParam] | None:
        complex_type = self._wrapped_type(element_name)
        if complex_type is None:
            return None
        return [WsdlParam(name=child.get("name") or local_name(child.get("ref")),
                          xsd_type=local_name(child.get("type")) or None,
                          required=child.get("minOccurs", "1") != "0")
                for child in _sequence(complex_type)]

    # -- return types ----------------------------------------------------------------
    def _returns(self, message: str, style: str) -> Shape | None:
        parts = self.messages.get(message, [])
        if not parts:
            return None
        part = parts[0]
        if style == "document" and part.get("element"):
            wrapper = self._wrapped_type(local_name(part.get("element")))
            inner = _sequence(wrapper) if wrapper is not None else []
            if not inner:
                return None
            return self._shape_of(inner[0], 0)
        return self._shape(part.get("type") or part.get("element"), 0)

    def _shape_of(self, element: Element, depth: int) -> Shape:
        inline = element.find(f"{{{XSD_NS}}}complexType")
        if inline is not None:
            return self._complex_shape(inline, depth)
        return self._shape(element.get("type"), depth)

    def _shape(self, qname: str | None, depth: int) -> Shape:
        name = local_name(qname)
        complex_type = self.complex_types.get(name)
        if complex_type is None:
            return name or "anyType"
        return self._complex_shape(complex_type, depth)

    def _complex_shape(self, complex_type: Element, depth: int) -> Shape:
        if depth > _MAX_DEPTH:
            return ()
        item = _array_item(complex_type)
        if item is not None:
            return _prefixed("[]", self._shape(item, depth + 1))
        paths: list[str] = []
        for child in _sequence(complex_type):
            name = child.get("name") or local_name(child.get("ref"))
            shape = self._shape_of(child, depth + 1)
            suffix = "[]" if child.get("maxOccurs", "1") not in ("1", "0") else ""
            paths.extend(_prefixed(name + suffix, shape))
        return tuple(sorted(paths))


def _sequence(complex_type: Element) -> list[Element]:
    out: list[Element] = []
    for group in ("sequence", "all"):
        for container in complex_type.iter(f"{{{XSD_NS}}}{group}"):
            out.extend(_children(container, XSD_NS, "element"))
    return out


def _array_item(complex_type: Element) -> str | None:
    """The item type of a ``soapenc:Array`` restriction (``n1:arrayType="ns1:T[]"``)."""
    for restriction in complex_type.iter(f"{{{XSD_NS}}}restriction"):
        if local_name(restriction.get("base")) != "Array":
            continue
        for attribute in restriction.iter(f"{{{XSD_NS}}}attribute"):
            declared = attribute.get(f"{{{WSDL_NS}}}arrayType")
            if declared:
                return declared.partition("[")[0]
        return "anyType"
    return None


def _prefixed(prefix: str, shape: Shape) -> tuple[str, ...]:
    """``List[]`` + ``("StockCode",)`` -> ``("List[].StockCode",)``; a simple item is the prefix alone."""
    if isinstance(shape, str) or not shape:
        return (prefix,)
    return tuple(f"{prefix}{p}" if p.startswith("[]") else f"{prefix}.{p}" for p in shape)


def parse_wsdl(wsdl_bytes: bytes) -> Wsdl:
    try:
        root = DET.fromstring(wsdl_bytes, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise KhaosBadResponseError(f"WSDL: not a readable XML document: {exc}", method="WSDL") from None
    if root.tag != f"{{{WSDL_NS}}}definitions":
        raise KhaosBadResponseError(f"WSDL: expected a WSDL 1.1 <definitions>, got <{local_name(root.tag)}>",
                                    method="WSDL")
    return Wsdl(root)


__all__ = ["Shape", "SiteOperation", "Wsdl", "WsdlParam", "local_name", "parse_wsdl"]
