"""The emulated site's published interface: its methods, their parameters, return types, and its WSDL.

Evidence, in order of weight:

- ``reference/kc-vendor-samples/site-functions.txt``: a real site's ``__getFunctions()``, i.e.
  every signature and return type its WSDL declared (``TStockList GetStockList(dateTime
  $LastUpdated)``, ``string ExportOrders(string $OrderCode, int $MappingType)``, ...).
- ``ksdl/khaosconnect-magento`` ``Helper/Webservice.php``: the parameters the vendor's own
  connector sends (``GetStockList(DateType, DateValue, StockItemType)``, ``ExportStockStatus(
  StockCodes, ..., SiteID)``, ``ExportOrderStatusEx(IDs, MappingType /* WebOnly, ... */)``,
  ``ExportCompany(CompanyCode, MappingType)`` without ``LastUpdated``) and how it reads the
  answers (``$result->Data``, ``$stockList->List``, ``$site->SiteID``).
- ``InternationalDanceSupplies/KhaosAPI`` ``Caller/ExportStockStatus.php``: ``SiteID`` and
  ``PotentialLeadTime`` after the three declared parameters.
- Delphi's WebSnap SOAP server, which KC's ``KhaosKSD.exe`` is: a Delphi-published WSDL
  (``definitions name="<I>service" targetNamespace="http://tempuri.org/"``, messages
  ``<Method>0Request``/``<Method>0Response``, rpc/encoded bodies in
  ``urn:<Unit>-<Interface>``, SOAPAction ``urn:<Unit>-<Interface>#<Method>``, classes in the
  unit's own schema ``urn:<Unit>``, dynamic arrays as ``soapenc:Array`` restrictions with
  ``n1:arrayType``), as public Delphi WSDLs and Delphi's ``Soap.WSDLPub`` show.

The names of the element types inside the arrays (``TCompanyListItem``...) and of
``TSiteList``/``TCompressedData`` are not published: **(assumed)**, listed in
docs/verify-on-site.md. A client that reads by field name (as the PHP clients do, and
khaosync does) does not depend on them.

This table is the emulator's own idea of the site, written apart from the client's
``EXPECTED_OPERATIONS`` on purpose: ``discover`` run against this WSDL is then a real check
that the client and the site agree, not a table compared with itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union
from xml.sax.saxutils import escape, quoteattr

# Delphi derives both from the interface's unit (KosWebIntf) and name (IKosWeb).
BODY_NAMESPACE = "urn:IKosWebIntf-IKosWeb"
TYPES_NAMESPACE = "urn:KosWebIntf"
WSDL_NAMESPACE = "http://tempuri.org/"  # Delphi's default targetNamespace of the definitions
SOAP_ACTION_PREFIX = f"{BODY_NAMESPACE}#"
SOAP_ENCODING = "http://schemas.xmlsoap.org/soap/encoding/"
SERVICE_NAME = "IKosWebservice"
PORT_TYPE = "IKosWeb"

Scalar = Literal["string", "int", "dateTime", "boolean", "base64Binary"]
StockListForm = Literal["last_updated", "date_type"]


@dataclass(frozen=True)
class Struct:
    """A Delphi class (``TRemotable``): fields in order."""

    name: str
    fields: tuple[tuple[str, "TypeRef"], ...]


@dataclass(frozen=True)
class ArrayOf:
    """A Delphi dynamic array, published as a ``soapenc:Array`` restriction."""

    name: str
    item: "TypeRef"


TypeRef = Union[Scalar, Struct, ArrayOf]


@dataclass(frozen=True)
class SiteParam:
    """A parameter the site takes. ``declared``: in its WSDL (else only accepted, as real
    clients send it); ``alias_of``: another spelling of a declared parameter."""

    name: str
    xsd_type: Scalar
    required: bool = True
    declared: bool = True
    alias_of: str | None = None

    @property
    def canonical(self) -> str:
        return self.alias_of or self.name


@dataclass(frozen=True)
class SiteMethod:
    """A published method: one or more accepted parameter lists (``forms``) and its return type."""

    name: str
    forms: dict[str, tuple[SiteParam, ...]]
    returns: TypeRef
    # Which form the WSDL declares; GetStockList's is an emulator option.
    declared_form: str = "site"
    notes: tuple[str, ...] = field(default=())

    def form(self, name: str | None = None) -> tuple[SiteParam, ...]:
        return self.forms[name or self.declared_form]


def _p(name: str, xsd_type: Scalar, required: bool = True, *, declared: bool = True,
       alias_of: str | None = None) -> SiteParam:
    return SiteParam(name, xsd_type, required, declared, alias_of)


def _accepted(name: str, xsd_type: Scalar, alias_of: str | None = None) -> SiteParam:
    """Optional, not in the site's WSDL, but sent by real clients: accepted, never faulted."""
    return SiteParam(name, xsd_type, False, False, alias_of)


def _struct(name: str, *fields: tuple[str, TypeRef]) -> Struct:
    return Struct(name, tuple(fields))


# -- the return types (site-functions.txt; item type names assumed) -----------------------

COMPANY_LIST = _struct("TCompanyList", ("List", ArrayOf("TCompanyListArray", _struct(
    "TCompanyListItem", ("CompanyCode", "string")))))
STOCK_LIST = _struct("TStockList", ("Count", "int"), ("List", ArrayOf("TStockListArray", _struct(
    "TStockListItem", ("StockCode", "string"), ("ParentCode", "string")))))
CUSTOMER_IMPORT_RESULT = _struct("TCustomerImportResult", ("CustomerImport", ArrayOf("TCustomerImportArray", _struct(
    "TCustomerImport", ("URN", "string"), ("WebUser", "string")))))
ORDER_IMPORT_RESULT = _struct(
    "TOrderImportResult", ("ImportedCount", "int"),
    ("OrderImport", ArrayOf("TOrderImportArray", _struct(
        "TOrderImport", ("SalesOrderCode", "string"), ("AssociatedRef", "string")))),
    ("OrderSkipped", ArrayOf("TOrderSkippedArray", _struct(
        "TOrderSkipped", ("OrderRef", "string"), ("SkipReason", "string")))),
)
SITE_LIST = _struct("TSiteList", ("List", ArrayOf("TSiteListArray", _struct(
    "TSite", ("SiteID", "int"), ("SiteName", "string")))))
COMPRESSED_DATA = _struct("TCompressedData", ("Data", "base64Binary"))

_STOCK = (_p("StockCode", "string"), _p("MappingType", "int"), _p("LastUpdated", "dateTime"))
_STOCK_LIST_FORMS: dict[str, tuple[SiteParam, ...]] = {
    "last_updated": (_p("LastUpdated", "dateTime"),),  # the real site
    "date_type": (_p("DateType", "int"), _p("DateValue", "dateTime"), _p("StockItemType", "int")),  # the connector
}


def _method(name: str, returns: TypeRef, *params: SiteParam, **forms: tuple[SiteParam, ...]) -> SiteMethod:
    return SiteMethod(name, forms or {"site": params}, returns)


SITE_METHOD_LIST: tuple[SiteMethod, ...] = (
    _method("Login", "string", _p("UserName", "string"), _p("UserPassword", "string")),
    _method("GetVersion", "string"),
    _method("GetSiteList", SITE_LIST),
    _method("GetCompanyList", COMPANY_LIST, _p("LastUpdated", "dateTime")),
    # The connector omits LastUpdated: a Delphi server defaults a missing part.
    _method("ExportCompany", "string", _p("CompanyCode", "string"), _p("MappingType", "int"),
            _p("LastUpdated", "dateTime", False)),
    _method("ImportCompany", CUSTOMER_IMPORT_RESULT, _p("Customers", "string"), _p("Method", "int")),
    SiteMethod("GetStockList", _STOCK_LIST_FORMS, STOCK_LIST, declared_form="last_updated"),
    _method("ExportStock", "string", *_STOCK),
    # Not in site-functions.txt, but called by the vendor's connector.
    _method("ExportStockCompressed", COMPRESSED_DATA, *_STOCK, _p("CompressionMethod", "int")),
    _method("ExportStockStatus", "string",
            _p("StockCode", "string"), _p("MappingType", "int"), _p("LastUpdated", "dateTime"),
            _accepted("StockCodes", "string", alias_of="StockCode"), _accepted("SiteID", "int"),
            _accepted("PotentialLeadTime", "boolean")),
    _method("ExportOrders", "string", _p("OrderCode", "string"), _p("MappingType", "int")),
    # WebOnly is commented out in the connector, so it never sends it: optional in practice.
    _method("ExportOrderStatusEx", "string",
            _p("IDs", "string"), _p("MappingType", "int"), _p("WebOnly", "boolean", False),
            _accepted("ConfirmedOnly", "boolean"), _accepted("IncludeTracking", "boolean"),
            _accepted("IncludeCancelled", "boolean"), _accepted("DateFrom", "dateTime"),
            _accepted("DateTo", "dateTime"), _accepted("InvoiceStageIDs", "string")),
    _method("ExportOrderStatus", "string"),
    _method("ImportOrders", ORDER_IMPORT_RESULT, _p("Orders", "string")),
)

SITE_METHODS: dict[str, SiteMethod] = {m.name: m for m in SITE_METHOD_LIST}

# In-body credentials (khaos.credentials mode "body"): some sites, assumed.
CREDENTIAL_PARAMS = (_p("Username", "string"), _p("Password", "string"))


def soap_action(method: str) -> str:
    return f"{SOAP_ACTION_PREFIX}{method}"


def declared_params(method: SiteMethod, *, stock_list_form: StockListForm = "last_updated",
                    with_credentials: bool = False) -> tuple[SiteParam, ...]:
    form = stock_list_form if method.name == "GetStockList" else None
    params = tuple(p for p in method.form(form) if p.declared)
    if with_credentials and method.name != "Login":
        params = CREDENTIAL_PARAMS + params
    return params


# -- the WSDL ----------------------------------------------------------------------------

def _qname(ref: TypeRef) -> str:
    return f"xs:{ref}" if isinstance(ref, str) else f"ns1:{ref.name}"


def _collect(ref: TypeRef, out: dict[str, Struct | ArrayOf]) -> None:
    if isinstance(ref, str) or ref.name in out:
        return
    out[ref.name] = ref
    if isinstance(ref, Struct):
        for _name, inner in ref.fields:
            _collect(inner, out)
    else:
        _collect(ref.item, out)


def _schema_type(ref: Struct | ArrayOf) -> str:
    if isinstance(ref, Struct):
        elements = "".join(f'<xs:element name="{n}" type="{_qname(t)}"/>' for n, t in ref.fields)
        return f'<xs:complexType name="{ref.name}"><xs:sequence>{elements}</xs:sequence></xs:complexType>'
    return (
        f'<xs:complexType name="{ref.name}"><xs:complexContent><xs:restriction base="soapenc:Array">'
        '<xs:sequence/>'
        f'<xs:attribute ref="soapenc:arrayType" n1:arrayType="{_qname(ref.item)}[]"'
        ' xmlns:n1="http://schemas.xmlsoap.org/wsdl/"/>'
        "</xs:restriction></xs:complexContent></xs:complexType>"
    )


def render_wsdl(endpoint: str, *, with_credentials: bool = False,
                stock_list_form: StockListForm = "last_updated") -> bytes:
    """The WSDL 1.1 document, rpc/encoded as a Delphi server publishes it.

    ``endpoint`` is the soap address the requester can reach; ``stock_list_form`` picks which of
    GetStockList's two parameter lists is declared (both are accepted).
    """
    types: dict[str, Struct | ArrayOf] = {}
    for method in SITE_METHOD_LIST:
        _collect(method.returns, types)
    messages: list[str] = []
    operations: list[str] = []
    bindings: list[str] = []
    body = f'<soap:body use="encoded" encodingStyle="{SOAP_ENCODING}" namespace="{BODY_NAMESPACE}"/>'
    for method in SITE_METHOD_LIST:
        parts = declared_params(method, stock_list_form=stock_list_form, with_credentials=with_credentials)
        part_xml = "".join(f'<part name="{p.name}" type="xs:{p.xsd_type}"/>' for p in parts)
        messages.append(f'<message name="{method.name}0Request">{part_xml}</message>')
        messages.append(f'<message name="{method.name}0Response"><part name="return" type="{_qname(method.returns)}"/>'
                        "</message>")
        operations.append(
            f'<operation name="{method.name}"><input message="tns:{method.name}0Request"/>'
            f'<output message="tns:{method.name}0Response"/></operation>'
        )
        bindings.append(
            f'<operation name="{method.name}"><soap:operation soapAction="{soap_action(method.name)}" style="rpc"/>'
            f'<input message="tns:{method.name}0Request">{body}</input>'
            f'<output message="tns:{method.name}0Response">{body}</output></operation>'
        )
    text = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:xs="http://www.w3.org/2001/XMLSchema"'
        f' name="{SERVICE_NAME}" targetNamespace="{WSDL_NAMESPACE}" xmlns:tns="{WSDL_NAMESPACE}"'
        ' xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"'
        f' xmlns:soapenc="{SOAP_ENCODING}" xmlns:mime="http://schemas.xmlsoap.org/wsdl/mime/"'
        f' xmlns:ns1="{TYPES_NAMESPACE}">'
        f'<types><xs:schema targetNamespace="{TYPES_NAMESPACE}" xmlns="{TYPES_NAMESPACE}">'
        + "".join(_schema_type(t) for t in types.values())
        + "</xs:schema></types>"
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


__all__ = [
    "ArrayOf", "BODY_NAMESPACE", "CREDENTIAL_PARAMS", "SITE_METHODS", "SITE_METHOD_LIST",
    "SiteMethod", "SiteParam", "Struct", "TYPES_NAMESPACE", "TypeRef", "declared_params", "render_wsdl",
    "soap_action",
]
