"""A standard WSDL-driven client (zeep) reads the emulator's WSDL and gets structures.

zeep is driven through a ``requests`` session whose adapter calls the emulator's WSGI app
in-process: no network, no port. zeep imports the SOAP encoding schema from its namespace
URL when a WSDL uses ``soapenc:Array``; with no network, the same adapter serves a minimal
schema of our own for it (``Array`` and its ``arrayType`` attribute, all zeep needs).
"""

from __future__ import annotations

import io
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlsplit

import pytest

zeep = pytest.importorskip("zeep")
requests = pytest.importorskip("requests")

from requests.adapters import BaseAdapter  # noqa: E402 - after the importorskip
from zeep.transports import Transport  # noqa: E402

from khaosync.sandbox.khaos_emulator import WSDL_PATH, KhaosEmulator  # noqa: E402
from khaosync.sandbox.world import World  # noqa: E402

SITE = "http://kc.example:8084"
SOAP_ENCODING_SCHEMA = b"""<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:enc="http://schemas.xmlsoap.org/soap/encoding/"
    targetNamespace="http://schemas.xmlsoap.org/soap/encoding/">
  <xs:attribute name="arrayType" type="xs:string"/>
  <xs:complexType name="Array">
    <xs:sequence><xs:any minOccurs="0" maxOccurs="unbounded" processContents="lax"/></xs:sequence>
    <xs:attribute ref="enc:arrayType"/>
    <xs:anyAttribute namespace="##other" processContents="lax"/>
  </xs:complexType>
</xs:schema>"""

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


class WsgiAdapter(BaseAdapter):
    """``requests`` -> a WSGI app, in-process."""

    def __init__(self, app: WsgiApp):
        super().__init__()
        self.app = app

    def send(self, request, **kwargs):  # noqa: ANN001 - requests' signature
        url = urlsplit(request.url)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        environ = {
            "REQUEST_METHOD": request.method, "PATH_INFO": url.path, "QUERY_STRING": url.query, "SCRIPT_NAME": "",
            "SERVER_NAME": url.hostname, "SERVER_PORT": str(url.port or 80), "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": url.scheme, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        }
        environ.update({f"HTTP_{k.upper().replace('-', '_')}": v for k, v in request.headers.items()})
        started: dict = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            started.update(status=status, headers=headers)

        content = b"".join(self.app(environ, start_response))
        response = requests.Response()
        response.status_code = int(started["status"].split()[0])
        response.headers.update(dict(started["headers"]))
        response._content = content
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        pass


def _schema_app(environ: dict, start_response: Callable) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/xml")])
    return [SOAP_ENCODING_SCHEMA]


@pytest.fixture
def world_folder(tmp_path: Path) -> Path:
    world = World(tmp_path)
    world.set_meta("clock", "2026-10-05T12:00:00")
    world.set_meta("sites", [[1, "Main"], [2, "Outlet"]])
    for company_id, code, updated in [(1001, "C001001", "2026-10-02T09:00:00"), (1002, "C001002", "2026-09-01T09:00:00")]:
        world.put("company", {
            "company_id": company_id, "company_code": code, "company_name": f"Customer {company_id}",
            "company_class": "Retail", "company_status": "Active", "web_user": f"c{company_id}@example.com",
            "mailing_status": 1, "currency_code": "GBP", "date_created": "2025-03-01T10:00:00", "updated": updated,
            "additional": {}, "addresses": [], "contacts": [],
        })
    for stock_id, code, parent in [(300, "TEE", None), (301, "TEE-RED-M", "TEE")]:
        world.put("stock_item", {
            "stock_id": stock_id, "stock_code": code, "parent_stock_id": 300 if parent else None, "parent_code": parent,
            "stock_desc": code, "long_desc": "", "web_teaser": "", "sell_price": "12.50", "vat_rate": "20",
            "deleted": False, "stock_type": 1, "manufacturer": "Acme", "other_ref": "", "barcodes": [],
            "user_defined": {}, "images": [], "scs": None, "code_history": [], "updated": "2026-09-01T08:00:00",
        })
    world.close()
    return tmp_path


def zeep_client(app: KhaosEmulator):
    session = requests.Session()
    session.mount(f"{SITE}/", WsgiAdapter(app))
    session.mount("http://schemas.xmlsoap.org/", WsgiAdapter(_schema_app))
    return zeep.Client(f"{SITE}{WSDL_PATH}", transport=Transport(session=session))


@pytest.mark.parametrize("multiref", [True, False], ids=["multiref", "inline"])
def test_zeep_gets_structures_from_the_emulators_wsdl(world_folder: Path, multiref: bool) -> None:
    service = zeep_client(KhaosEmulator(world_folder, multiref=multiref)).service

    # zeep hands back a structure of one field as that field (TSiteList.List, TCompanyList.List).
    sites = service.GetSiteList()
    assert [(s.SiteID, s.SiteName) for s in sites] == [(1, "Main"), (2, "Outlet")]

    companies = service.GetCompanyList(LastUpdated=datetime(2026, 9, 15))
    assert [c.CompanyCode for c in companies] == ["C001001"]

    stock = service.GetStockList(LastUpdated=datetime(2026, 1, 1))
    # An empty xs:string reads as None in zeep.
    assert stock.Count == 2 and [(i.StockCode, i.ParentCode) for i in stock.List] == [("TEE", None), ("TEE-RED-M", "TEE")]

    customers = ("<COMPANYS><COMPANY><COMPANY_CODE>C001002</COMPANY_CODE><COMPANY_CLASS>Retail</COMPANY_CLASS>"
                 "<MAILING_STATUS>3</MAILING_STATUS>"
                 "</COMPANY></COMPANYS>")
    imported = service.ImportCompany(Customers=customers, Method=0)
    assert [(i.URN, i.WebUser) for i in imported] == [("C001002", "c1002@example.com")]

    # The sandbox site exports an SCS child inside its parent's tree: ask for the parent.
    data = service.ExportStockCompressed(StockCode="TEE", MappingType=1, LastUpdated=datetime(1899, 12, 31),
                                         CompressionMethod=0)
    assert isinstance(data, bytes)  # TCompressedData.Data, xs:base64Binary, decoded by zeep
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        document = archive.read(archive.infolist()[0])
    assert document.startswith(b"<STOCK_ITEMS><STOCK_ITEM>") and b"<STOCK_CODE>TEE-RED-M</STOCK_CODE>" in document

    # A string-returning export is a string: the XML document as text.
    exported = service.ExportCompany(CompanyCode="C001001", MappingType=1, LastUpdated=datetime(1899, 12, 31))
    assert isinstance(exported, str) and exported.startswith("<COMPANYS><COMPANY>")


def test_zeep_sees_the_declared_signatures(world_folder: Path) -> None:
    client = zeep_client(KhaosEmulator(world_folder))
    operations = client.wsdl.bindings[next(iter(client.wsdl.bindings))]._operations
    assert operations["GetStockList"].input.signature() == "LastUpdated: xsd:dateTime"
    assert operations["ExportOrders"].input.signature() == "OrderCode: xsd:string, MappingType: xsd:int"
    assert operations["GetStockList"].soapaction == "urn:IKosWebIntf-IKosWeb#GetStockList"
    connector_form = zeep_client(KhaosEmulator(world_folder, stock_list_form="date_type"))
    stock = connector_form.service.GetStockList(DateType=-1, DateValue=datetime(2026, 1, 1), StockItemType=0)
    assert stock.Count == 2
