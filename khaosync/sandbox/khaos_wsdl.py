"""The emulated site's published interface: its methods, their parameters, and its WSDL.

This table is the emulator's own idea of the site (docs/khaos-soap.md), written apart from
the client's ``EXPECTED_OPERATIONS`` on purpose: ``discover`` run against this WSDL is then
a real check that the client and the contract agree, not a table compared with itself.

The WSDL is WSDL 1.1, rpc/literal, the way the emulator reads requests: one accessor element
per part, unqualified, inside the method element in ``http://tempuri.org/``. (Delphi sites,
which KC is, publish rpc/encoded; discover reads both.) rpc parts cannot say "optional", so
the parameters the emulator treats as optional are marked only in ``wsdl:documentation``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

BODY_NAMESPACE = "http://tempuri.org/"
SOAP_ACTION_PREFIX = "urn:IKosWebIntf-IKosWeb#"
SERVICE_NAME = "IKosWebservice"
PORT_TYPE = "IKosWeb"

XsdType = Literal["string", "int", "dateTime"]


@dataclass(frozen=True)
class SiteParam:
    name: str
    xsd_type: XsdType
    required: bool = True


def _p(name: str, xsd_type: XsdType, required: bool = True) -> SiteParam:
    return SiteParam(name, xsd_type, required)


# KC booleans are -1/0, so they are ints on the wire, not xs:boolean.
SITE_METHODS: dict[str, tuple[SiteParam, ...]] = {
    "GetSiteList": (),
    "GetCompanyList": (_p("LastUpdated", "dateTime"),),
    "ExportCompany": (_p("CompanyCode", "string"), _p("MappingType", "int"), _p("LastUpdated", "dateTime", False)),
    "ImportCompany": (_p("Customers", "string"), _p("Method", "int")),
    "GetStockList": (_p("LastUpdated", "dateTime", False), _p("DateType", "int", False),
                     _p("DateValue", "dateTime", False), _p("StockItemType", "int", False)),
    "ExportStock": (_p("StockCode", "string"), _p("MappingType", "int"), _p("LastUpdated", "dateTime")),
    "ExportStockCompressed": (
        _p("StockCode", "string"), _p("MappingType", "int"), _p("LastUpdated", "dateTime"),
        _p("CompressionMethod", "int"),
    ),
    "ExportStockStatus": (
        _p("StockCode", "string", False), _p("StockCodes", "string", False), _p("MappingType", "int"),
        _p("LastUpdated", "dateTime"), _p("SiteID", "int", False), _p("PotentialLeadTime", "int", False),
    ),
    "ExportOrders": (_p("OrderCode", "string"), _p("MappingType", "int")),
    "ExportOrderStatusEx": (
        _p("IDs", "string"), _p("MappingType", "int"), _p("WebOnly", "string", False),
        _p("DateFrom", "dateTime", False), _p("DateTo", "dateTime", False),
        _p("IncludeTracking", "int", False), _p("IncludeCancelled", "int", False),
        _p("InvoiceStageIDs", "string", False), _p("ConfirmedOnly", "string", False),
    ),
}

CREDENTIAL_PARAMS = (_p("Username", "string"), _p("Password", "string"))


def soap_action(method: str) -> str:
    return f"{SOAP_ACTION_PREFIX}{method}"


def _operation_parts(method: str, with_credentials: bool) -> tuple[SiteParam, ...]:
    return (CREDENTIAL_PARAMS if with_credentials else ()) + SITE_METHODS[method]


def render_wsdl(endpoint: str, *, with_credentials: bool = False) -> bytes:
    """The WSDL 1.1 document; ``endpoint`` is the soap address the requester can reach."""
    messages: list[str] = []
    operations: list[str] = []
    bindings: list[str] = []
    for method in SITE_METHODS:
        parts = _operation_parts(method, with_credentials)
        part_xml = "".join(f'<part name="{p.name}" type="xs:{p.xsd_type}"/>' for p in parts)
        messages.append(f'<message name="{method}0Request">{part_xml}</message>')
        messages.append(f'<message name="{method}0Response"><part name="return" type="xs:string"/></message>')
        optional = [p.name for p in parts if not p.required]
        doc = f"<documentation>optional: {', '.join(optional)}</documentation>" if optional else ""
        order = " ".join(p.name for p in parts)
        operations.append(
            f'<operation name="{method}"' + (f' parameterOrder="{order}"' if order else "") + ">"
            f'{doc}<input message="tns:{method}0Request"/><output message="tns:{method}0Response"/></operation>'
        )
        body = f'<soap:body use="literal" namespace="{BODY_NAMESPACE}"/>'
        bindings.append(
            f'<operation name="{method}"><soap:operation soapAction="{soap_action(method)}" style="rpc"/>'
            f"<input>{body}</input><output>{body}</output></operation>"
        )
    text = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:xs="http://www.w3.org/2001/XMLSchema"'
        ' xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"'
        f' xmlns:tns="{BODY_NAMESPACE}" name="{SERVICE_NAME}" targetNamespace="{BODY_NAMESPACE}">'
        + "".join(messages)
        + f'<portType name="{PORT_TYPE}">' + "".join(operations) + "</portType>"
        + f'<binding name="{PORT_TYPE}binding" type="tns:{PORT_TYPE}">'
        '<soap:binding style="rpc" transport="http://schemas.xmlsoap.org/soap/http"/>'
        + "".join(bindings) + "</binding>"
        + f'<service name="{SERVICE_NAME}"><documentation>{escape("Khaos Control (sandbox emulator)")}</documentation>'
        f'<port name="{PORT_TYPE}Port" binding="tns:{PORT_TYPE}binding">'
        f"<soap:address location={quoteattr(endpoint)}/></port></service>"
        "</definitions>"
    )
    return text.encode("utf-8")
