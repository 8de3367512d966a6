"""The Khaos Control emulator against a tiny hand-built world, method by method, and its strictness.

The record-level documents are compared with the examples in docs/khaos-soap.md itself, so
the emulator renders "exactly as the contract shows" by construction of the test.
"""

from __future__ import annotations

import base64
import io
import re
import threading
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import defusedxml.ElementTree as DET
import httpx
import pytest

from khaosync.sandbox.khaos_emulator import SOAP_PATH, WSDL_PATH, KhaosEmulator
from khaosync.sandbox.khaos_wsdl import SITE_METHODS
from khaosync.sandbox.world import World

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "khaos-soap.md"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
ACTION = '"urn:IKosWebIntf-IKosWeb#{}"'
NO_DATE = "1899-12-31T00:00:00"


def contract_example(root: str) -> str:
    """The ``<ROOT>`` example block of the contract, whitespace between tags removed."""
    for block in re.findall(r"```xml\n(.*?)```", CONTRACT.read_text(encoding="utf-8"), flags=re.S):
        if block.lstrip().startswith(f"<{root}>"):
            return re.sub(r">\s+<", "><", block.strip())
    raise AssertionError(f"no <{root}> example in {CONTRACT}")


# -- the world -------------------------------------------------------------------------

def company(company_id: int, code: str, updated: str, **over) -> dict:
    doc = {
        "company_id": company_id, "company_code": code, "company_name": "Ada Lovelace", "company_class": "Retail",
        "company_status": "Active", "web_user": "ada@example.co.uk", "mailing_status": 1, "currency_code": "GBP",
        "date_created": "2025-03-01T10:00:00", "updated": updated, "additional": {"LOYALTY_TIER": "Gold"},
        "addresses": [{
            "address_id": 5001, "addr1": "1 High St", "addr2": "", "addr3": "", "town": "Bath", "county": "Somerset",
            "postcode": "BA1 1AA", "country_code": "GB", "email": "ada@example.co.uk", "tel": "01225 000000",
            "addr_type": "Invoice", "inactive": False,
        }],
        "contacts": [{
            "contact_id": 7001, "title": "Ms", "forename": "Ada", "surname": "Lovelace", "email": "ada@example.co.uk",
            "mobile": "+447700900001", "dob": "1990-12-10", "email_subscribe": True, "mailing_flag": True,
            "inactive": False,
        }],
    }
    doc.update(over)
    return doc


def stock(stock_id: int, code: str, updated: str, **over) -> dict:
    doc = {
        "stock_id": stock_id, "stock_code": code, "parent_stock_id": 300, "parent_code": "TEE",
        "stock_desc": "Tee, red, M", "long_desc": "...", "web_teaser": "...", "sell_price": "12.50", "vat_rate": "20",
        "deleted": False, "stock_type": 1, "manufacturer": "Acme", "other_ref": "SUP-123",
        "barcodes": ["5012345678900"], "user_defined": {"COLOUR_FAMILY": "Red"}, "images": ["tee-red.jpg"],
        "scs": {"style": "TEE", "colour": "Red", "size": "M"}, "code_history": ["TEE-R-M"], "updated": updated,
    }
    doc.update(over)
    return doc


def invoice(invoice_id: int, stage_id: int, items: list[tuple[int, str]], *, issued: str | None = None, **over) -> dict:
    doc = {
        "invoice_id": invoice_id, "invoice_code": f"INV{invoice_id}", "stage_id": stage_id,
        "stage_desc": {16: "Issue Invoices", 12: "Picking", 14: "Shipping", 10: "Staging", 1: "Cancelled"}[stage_id],
        "issued": issued, "consignment_ref": f"CN-{invoice_id}", "courier_code": "24HR", "courier_name": "Metapack 24Hr",
        "tracking_number": f"JD{invoice_id}", "items": [{"sorder_item_id": i, "qty": q} for i, q in items],
    }
    doc.update(over)
    return doc


def order(sorder_id: int, order_date: str | None, updated: str, invoices: list[dict], **over) -> dict:
    doc = {
        "sorder_id": sorder_id, "sorder_code": f"SO0{sorder_id}", "associated_ref": f"WEB-{sorder_id}",
        "company_id": 1001, "company_code": "C001001", "contact_id": 7001, "web_user": "ada@example.co.uk",
        "order_date": order_date, "currency": "GBP", "site": 1, "sales_source": "Web", "website_name": "shop",
        "courier_code": "24HR", "keycode_code": "", "delivery_net": "3.33", "delivery_tax": "0.66",
        "delivery_gross": "3.99", "order_amount": "47.99", "cancelled": False, "updated": updated,
        "items": [{
            "sorder_item_id": 90001, "stock_id": 301, "stock_code": "TEE-RED-M", "stock_desc": "Tee, red, M",
            "qty": "2", "price_net": "18.33", "price_gross": "22.00", "tax_rate": "20", "discount": "0.00",
        }],
        "invoices": invoices,
    }
    doc.update(over)
    return doc


@pytest.fixture
def world_folder(tmp_path: Path) -> Path:
    world = World(tmp_path)
    world.set_meta("clock", "2026-10-05T12:00:00")
    world.put("company", company(1001, "C001001", "2026-10-02T09:00:00"))
    world.put("company", company(1002, "C001002", "2026-10-04T10:00:00", company_name="Bob Brown", mailing_status=None,
                                 contacts=[
                                     {"contact_id": 7002, "title": "Mr", "forename": "Bob", "surname": "Brown",
                                      "email": "bob@example.com", "mobile": "", "dob": None, "email_subscribe": None,
                                      "mailing_flag": False, "inactive": False},
                                     {"contact_id": 7003, "title": "", "forename": "Bea", "surname": "Brown",
                                      "email": "Shared@Example.com", "mobile": "", "dob": None, "email_subscribe": True,
                                      "mailing_flag": True, "inactive": False},
                                 ]))
    world.put("company", company(1003, "C001003", "2026-09-01T00:00:00", company_name="Cy & Co <Ltd>"))
    world.put("stock_item", stock(300, "TEE", "2026-08-01T08:00:00", parent_stock_id=None, parent_code=None, scs=None,
                                  stock_desc="Tee", barcodes=[], images=[], user_defined={}, other_ref="SUP-100"))
    world.put("stock_item", stock(301, "TEE-RED-M", "2026-09-01T08:00:00"))
    world.put("stock_item", stock(302, "MUG1", "2026-10-01T08:00:00", parent_stock_id=None, parent_code=None, scs=None,
                                  stock_type=2, deleted=True, other_ref="SUP-9"))
    world.put("sales_order", order(
        2075, "2026-10-01T09:12:00", "2026-10-03T16:00:00",
        [invoice(40001, 16, [(90001, "1")], issued="2026-10-02T14:00:00", invoice_code="INV106",
                 consignment_ref="CN-8812", tracking_number="JD0002211")],
        sorder_code="SO02075", associated_ref="WEB-100231",
    ))
    world.put("sales_order", order(2076, "2026-10-02T10:00:00", "2026-10-02T10:00:00", []))  # Received
    world.put("sales_order", order(2077, "2026-09-30T23:30:00", "2026-10-01T08:00:00", [], cancelled=True))
    world.put("sales_order", order(2078, None, "2026-10-03T12:00:00", [invoice(40003, 14, [(90001, "2")])]))  # Shipping
    world.put("sales_order", order(2079, "2026-10-03T00:00:00", "2026-10-04T00:00:00", [
        invoice(40004, 16, [(90001, "1")], issued="2026-10-04T09:00:00"),
        invoice(40005, 16, [(90001, "1")], issued="2026-10-04T10:00:00"),
    ]))  # Complete: two despatches cover both units
    world.close()
    return tmp_path


@pytest.fixture
def emu(world_folder: Path) -> KhaosEmulator:
    return KhaosEmulator(world_folder)


# -- a small SOAP caller -----------------------------------------------------------------

def envelope(method: str, params: list[tuple[str, str]], namespace: str = "http://tempuri.org/") -> bytes:
    inner = "".join(f"<{n}>{v.replace('&', '&amp;').replace('<', '&lt;')}</{n}>" for n, v in params)
    return (f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><ns:{method} xmlns:ns="{namespace}">'
            f"{inner}</ns:{method}></soap:Body></soap:Envelope>").encode()


class Site:
    def __init__(self, app: KhaosEmulator):
        self.http = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://kc.example:8084")

    def post(self, method: str, params: list[tuple[str, str]] | None = None, *, action: str | None = "",
             content_type: str = "text/xml; charset=utf-8", body: bytes | None = None) -> httpx.Response:
        headers = {"Content-Type": content_type}
        if action is not None:
            headers["SOAPAction"] = action or ACTION.format(method)
        return self.http.post(SOAP_PATH, content=body if body is not None else envelope(method, params or []),
                              headers=headers)

    def call(self, method: str, params: list[tuple[str, str]] | None = None) -> str:
        response = self.post(method, params)
        assert response.status_code == 200, response.text
        root = ET.fromstring(response.content)
        answer = root.find(f"{{{SOAP_ENV}}}Body/{{http://tempuri.org/}}{method}Response/return")
        assert answer is not None
        return answer.text or ""

    def doc(self, method: str, params: list[tuple[str, str]] | None = None) -> ET.Element:
        return ET.fromstring(self.call(method, params))

    def fault(self, method: str, params: list[tuple[str, str]] | None = None, **kwargs) -> tuple[str, str]:
        response = self.post(method, params, **kwargs)
        assert response.status_code == 500, response.text
        fault = ET.fromstring(response.content).find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
        assert fault is not None
        return fault.findtext("faultcode") or "", fault.findtext("faultstring") or ""


@pytest.fixture
def site(emu: KhaosEmulator) -> Site:
    return Site(emu)


def texts(root: ET.Element, path: str) -> list[str]:
    return [e.text or "" for e in root.findall(path)]


# -- methods ---------------------------------------------------------------------------

def test_get_site_list_default_and_from_world_meta(site: Site, world_folder: Path) -> None:
    assert site.call("GetSiteList") == "<SITES><SITE><SITE_ID>1</SITE_ID><SITE_NAME>Main</SITE_NAME></SITE></SITES>"
    world = World(world_folder)
    world.set_meta("sites", [[1, "Main"], [2, "Outlet"]])
    world.close()
    assert texts(site.doc("GetSiteList"), "SITE/SITE_NAME") == ["Main", "Outlet"]


def test_get_company_list_is_exclusive_and_ordered_by_key(site: Site) -> None:
    assert texts(site.doc("GetCompanyList", [("LastUpdated", NO_DATE)]), "COMPANY_CODE") == ["C001001", "C001002", "C001003"]
    assert texts(site.doc("GetCompanyList", [("LastUpdated", "2026-10-01T00:00:00")]), "COMPANY_CODE") == ["C001001", "C001002"]
    # Changed exactly at LastUpdated is not "changed after" it.
    assert texts(site.doc("GetCompanyList", [("LastUpdated", "2026-10-02T09:00:00")]), "COMPANY_CODE") == ["C001002"]
    assert site.call("GetCompanyList", [("LastUpdated", "2027-01-01T00:00:00")]) == "<COMPANY_LIST/>"


def test_export_company_renders_the_contract_example(site: Site) -> None:
    text = site.call("ExportCompany", [("CompanyCode", "C001001"), ("MappingType", "1")])
    assert text == f"<COMPANYS>{contract_example('COMPANY')}</COMPANYS>"


def test_export_company_empty_values_unknown_codes_and_escaping(site: Site) -> None:
    root = site.doc("ExportCompany", [("CompanyCode", "C001003,NOPE,C001002"), ("MappingType", "1")])
    assert texts(root, "COMPANY/COMPANY_CODE") == ["C001002", "C001003"]  # key order, unknown absent
    bob = root.find("COMPANY")
    assert bob is not None
    assert bob.findtext("MAILING_STATUS") == ""  # <MAILING_STATUS/>: no decision held
    assert texts(bob, "CONTACTS/CONTACT/DOB") == [NO_DATE, NO_DATE]
    assert texts(bob, "CONTACTS/CONTACT/EMAILSUBSCRIBE") == ["", "-1"]
    assert texts(root, "COMPANY/COMPANY_NAME")[1] == "Cy & Co <Ltd>"
    assert site.call("ExportCompany", [("CompanyCode", ""), ("MappingType", "1")]) == "<COMPANYS/>"
    assert site.fault("ExportCompany", [("CompanyCode", "C001001"), ("MappingType", "2")])[0] == "soap:Client"


def test_raw_override_replaces_the_element_and_may_break_the_document(site: Site, world_folder: Path) -> None:
    world = World(world_folder)
    world.set_raw_override("company", 1002, b"<COMPANY><COMPANY_CODE>C001002</COMPANY_CODE><BROKEN></COMPANY>")
    world.close()
    text = site.call("ExportCompany", [("CompanyCode", "C001001,C001002"), ("MappingType", "1")])
    assert "<COMPANY><COMPANY_CODE>C001002</COMPANY_CODE><BROKEN></COMPANY>" in text
    with pytest.raises(ET.ParseError):
        ET.fromstring(text)


def test_serve_twice_repeats_records_in_one_answer(site: Site, world_folder: Path) -> None:
    world = World(world_folder)
    world.set_meta("serve_twice", {"company": [1001], "sales_order": [2076]})
    world.close()
    companies = site.doc("ExportCompany", [("CompanyCode", "C001001,C001002"), ("MappingType", "1")])
    assert texts(companies, "COMPANY/COMPANY_CODE") == ["C001001", "C001001", "C001002"]
    orders = site.doc("ExportOrders", [("DateFrom", "2026-10-01T00:00:00"), ("DateTo", "2026-10-03T00:00:00"),
                                       ("DateType", "0")])
    assert texts(orders, "SALES_ORDER/ORDER_HEADER/SORDER_ID") == ["2075", "2076", "2076"]


def test_import_company_updates_consent_and_bumps_updated(site: Site, world_folder: Path) -> None:
    def address(contact: str) -> str:  # KSDXMLCustomer.xml: contacts sit inside their address
        return (f"<ADDRESSES><ADDRESS><ADDRESS_ID>1</ADDRESS_ID><COUNTRY_CODE>GB</COUNTRY_CODE>"
                f"<CONTACTS><CONTACT>{contact}</CONTACT></CONTACTS></ADDRESS></ADDRESSES>")

    customers = (
        "<COMPANYS>"
        "<COMPANY><COMPANY_CODE>C001001</COMPANY_CODE><COMPANY_CLASS>Retail</COMPANY_CLASS>"
        "<MAILING_STATUS>5</MAILING_STATUS>"
        + address("<CONTACT_ID>7001</CONTACT_ID><EMAILSUBSCRIBE>0</EMAILSUBSCRIBE>") + "</COMPANY>"
        "<COMPANY><COMPANY_CODE>C001002</COMPANY_CODE><COMPANY_CLASS>Retail</COMPANY_CLASS>"
        + address("<EMAIL>shared@example.com</EMAIL><EMAILSUBSCRIBE>0</EMAILSUBSCRIBE>") + "</COMPANY>"
        "<COMPANY><COMPANY_CODE>C999999</COMPANY_CODE><COMPANY_CLASS>Retail</COMPANY_CLASS>"
        "<MAILING_STATUS>5</MAILING_STATUS></COMPANY>"
        "</COMPANYS>"
    )
    result = site.doc("ImportCompany", [("Customers", customers), ("Method", "1")])
    assert texts(result, "COMPANY/URN") == ["C001001", "C001002"]  # unknown companies are not created
    world = World(world_folder)
    ada, bob = world.get("company", 1001), world.get("company", 1002)
    world.close()
    assert ada["mailing_status"] == 5 and ada["contacts"][0]["email_subscribe"] is False
    assert ada["updated"] == "2026-10-05T12:00:00"
    assert bob["mailing_status"] is None  # not in the import: left as KC holds it
    assert [c["email_subscribe"] for c in bob["contacts"]] == [None, False]
    assert texts(site.doc("GetCompanyList", [("LastUpdated", "2026-10-05T00:00:00")]), "COMPANY_CODE") == ["C001001", "C001002"]


@pytest.mark.parametrize("customers", [
    "<COMPANYS><COMPANY>",
    '<!DOCTYPE x [<!ENTITY a "aaaa">]><COMPANYS><COMPANY><COMPANY_CODE>&a;</COMPANY_CODE></COMPANY></COMPANYS>',
    "<CUSTOMERS/>",
    "<COMPANYS><COMPANY><COMPANY_CODE>C001001</COMPANY_CODE><COMPANY_CLASS>Retail</COMPANY_CLASS>"
    "<MAILING_STATUS>yes</MAILING_STATUS></COMPANY></COMPANYS>",
    # COMPANY_CLASS is mandatory even for an update; an address needs COUNTRY or COUNTRY_CODE
    "<COMPANYS><COMPANY><COMPANY_CODE>C001001</COMPANY_CODE><MAILING_STATUS>5</MAILING_STATUS></COMPANY></COMPANYS>",
    "<COMPANYS><COMPANY><COMPANY_CODE>C001001</COMPANY_CODE><COMPANY_CLASS>Retail</COMPANY_CLASS><ADDRESSES><ADDRESS>"
    "<ADDRESS_ID>1</ADDRESS_ID><CONTACTS><CONTACT><CONTACT_ID>7001</CONTACT_ID><EMAILSUBSCRIBE>0</EMAILSUBSCRIBE>"
    "</CONTACT></CONTACTS></ADDRESS></ADDRESSES></COMPANY></COMPANYS>",
])
def test_import_company_refuses_bad_documents(site: Site, customers: str) -> None:
    assert site.fault("ImportCompany", [("Customers", customers), ("Method", "1")])[0] == "soap:Client"


def test_get_stock_list(site: Site) -> None:
    root = site.doc("GetStockList", [("DateType", "-1"), ("DateValue", "2026-08-15T00:00:00"), ("StockItemType", "0")])
    assert root.get("COUNT") == "2"
    assert [(i.findtext("STOCK_CODE"), i.findtext("PARENT_CODE")) for i in root.findall("ITEM")] == [
        ("TEE-RED-M", "TEE"), ("MUG1", "")]
    typed = site.doc("GetStockList", [("DateType", "-1"), ("DateValue", NO_DATE), ("StockItemType", "2")])
    assert texts(typed, "ITEM/STOCK_CODE") == ["MUG1"]
    assert site.fault("GetStockList", [("DateType", "0"), ("DateValue", NO_DATE), ("StockItemType", "0")])[0] == "soap:Client"


def test_export_stock_renders_the_contract_example_and_maps_by_other_ref(site: Site) -> None:
    text = site.call("ExportStock", [("StockCode", "TEE-RED-M"), ("MappingType", "1"), ("LastUpdated", NO_DATE)])
    assert text == f"<STOCK_ITEMS>{contract_example('STOCK_ITEM')}</STOCK_ITEMS>"
    parent = site.doc("ExportStock", [("StockCode", "TEE,TEE-R-M"), ("MappingType", "1"), ("LastUpdated", NO_DATE)])
    assert texts(parent, "STOCK_ITEM/STOCK_CODE") == ["TEE"]  # an old code is simply absent
    item = parent.find("STOCK_ITEM")
    assert item is not None and item.find("SCS") is None and item.findtext("PARENT_ID") == ""
    by_ref = site.doc("ExportStock", [("StockCode", "SUP-9"), ("MappingType", "2"), ("LastUpdated", NO_DATE)])
    assert texts(by_ref, "STOCK_ITEM/STOCK_CODE") == ["MUG1"] and texts(by_ref, "STOCK_ITEM/DELETED") == ["-1"]
    since = site.doc("ExportStock", [("StockCode", "TEE,MUG1"), ("MappingType", "1"), ("LastUpdated", "2026-09-01T00:00:00")])
    assert texts(since, "STOCK_ITEM/STOCK_CODE") == ["MUG1"]


def test_export_stock_compressed_is_base64_zip_of_the_same_document(site: Site) -> None:
    params = [("StockCode", "TEE,TEE-RED-M"), ("MappingType", "1"), ("LastUpdated", NO_DATE)]
    plain = site.call("ExportStock", params)
    packed = site.call("ExportStockCompressed", params + [("CompressionMethod", "0")])
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(packed, validate=True))) as archive:
        assert archive.read(archive.infolist()[0]).decode("utf-8") == plain
    assert site.fault("ExportStockCompressed", params + [("CompressionMethod", "1")])[0] == "soap:Client"


def test_export_stock_status(site: Site) -> None:
    root = site.doc("ExportStockStatus", [("StockCodes", "MUG1,TEE"), ("MappingType", "1"), ("LastUpdated", NO_DATE),
                                          ("SiteID", "1")])
    assert [(i.findtext("CODE"), i.findtext("LEVEL"), i.findtext("STATUS")) for i in root.findall("STOCK_ITEM")] == [
        ("TEE", "0", "Active"), ("MUG1", "0", "Deleted")]


def test_export_orders_renders_the_contract_example(site: Site) -> None:
    text = site.call("ExportOrders", [("DateFrom", "2026-10-01T09:12:00"), ("DateTo", "2026-10-01T09:12:01"),
                                      ("DateType", "0")])
    assert text == f"<SALES_ORDERS>{contract_example('SALES_ORDER')}</SALES_ORDERS>"


def test_export_orders_ranges_are_half_open_and_empty_dates_only_by_updated(site: Site) -> None:
    def ids(date_from: str, date_to: str, date_type: str) -> list[str]:
        root = site.doc("ExportOrders", [("DateFrom", date_from), ("DateTo", date_to), ("DateType", date_type)])
        return texts(root, "SALES_ORDER/ORDER_HEADER/SORDER_ID")

    assert ids("2026-09-30T23:30:00", "2026-10-02T10:00:00", "0") == ["2075", "2077"]
    assert ids("2026-01-01T00:00:00", "2027-01-01T00:00:00", "0") == ["2075", "2076", "2077", "2079"]  # 2078: no date
    assert ids("2026-10-02T10:00:00", "2026-10-04T00:00:00", "1") == ["2075", "2076", "2078"]
    no_date = site.doc("ExportOrders", [("DateFrom", "2026-10-03T12:00:00"), ("DateTo", "2026-10-03T12:00:01"),
                                        ("DateType", "1")])
    assert texts(no_date, "SALES_ORDER/ORDER_HEADER/ORDER_DATE") == [NO_DATE]
    assert site.fault("ExportOrders", [("DateFrom", NO_DATE), ("DateTo", NO_DATE), ("DateType", "2")])[0] == "soap:Client"


def test_export_orders_serves_raw_overrides(site: Site, world_folder: Path) -> None:
    world = World(world_folder)
    world.set_raw_override("sales_order", 2076, "<SALES_ORDER><ORDER_HEADER><SORDER_ID>2076</SORDER_ID>£</ORDER_HEADER>"
                                                "</SALES_ORDER>".encode("utf-8"))
    world.close()
    text = site.call("ExportOrders", [("DateFrom", "2026-10-02T00:00:00"), ("DateTo", "2026-10-03T00:00:00"),
                                      ("DateType", "0")])
    assert text == "<SALES_ORDERS><SALES_ORDER><ORDER_HEADER><SORDER_ID>2076</SORDER_ID>£</ORDER_HEADER></SALES_ORDER></SALES_ORDERS>"


def status_params(ids: str, mapping: str, **extra: str) -> list[tuple[str, str]]:
    return [("IDs", ids), ("MappingType", mapping), *extra.items()]


def test_export_order_status_renders_the_contract_example(site: Site) -> None:
    text = site.call("ExportOrderStatusEx", status_params("SO02075", "3", IncludeTracking="-1"))
    assert text == f"<ORDER_STATUSES>{contract_example('ORDER_STATUS')}</ORDER_STATUSES>"


def test_export_order_status_derives_the_order_status_from_invoices(site: Site) -> None:
    root = site.doc("ExportOrderStatusEx", status_params("2079,2078,2077,2076,2075,9999", "5", IncludeCancelled="-1"))
    statuses = {s.findtext("SORDER_ID"): s.findtext("ORDER_STATUS") for s in root.findall("ORDER_STATUS")}
    assert statuses == {"2075": "PartialShip", "2076": "Received", "2077": "Cancelled", "2078": "Shipping",
                        "2079": "Complete"}
    assert texts(root, "ORDER_STATUS/SORDER_ID") == ["2075", "2076", "2077", "2078", "2079"]


def test_export_order_status_options(site: Site) -> None:
    by_ref = site.doc("ExportOrderStatusEx", status_params("WEB-100231,WEB-2077", "4"))
    assert texts(by_ref, "ORDER_STATUS/SORDER_ID") == ["2075"]  # IncludeCancelled defaults to 0
    invoice_xml = by_ref.find("ORDER_STATUS/INVOICES/INVOICE")
    assert invoice_xml is not None and invoice_xml.find("TRACKING_NUMBER") is None and invoice_xml.find("COURIER_NAME") is None
    staged = site.doc("ExportOrderStatusEx", status_params("2075,2078,2079", "5", InvoiceStageIDs="14,1"))
    assert texts(staged, "ORDER_STATUS/SORDER_ID") == ["2078"]
    tracked = site.doc("ExportOrderStatusEx", status_params("2079", "5", IncludeTracking="-1"))
    assert texts(tracked, "ORDER_STATUS/INVOICES/INVOICE/TRACKING_NUMBER") == ["JD40004", "JD40005"]
    dated = site.doc("ExportOrderStatusEx", status_params("2075,2076", "5", DateFrom="2026-10-03T00:00:00",
                                                         DateTo="2026-10-04T00:00:00"))
    assert texts(dated, "ORDER_STATUS/SORDER_ID") == ["2075"]
    assert site.fault("ExportOrderStatusEx", status_params("SO02075", "5"))[0] == "soap:Client"  # not an id
    assert site.fault("ExportOrderStatusEx", status_params("1", "6"))[0] == "soap:Client"
    assert site.fault("ExportOrderStatusEx", status_params("1", "5", IncludeTracking="yes"))[0] == "soap:Client"


def test_the_world_is_read_per_request(site: Site, world_folder: Path) -> None:
    assert "C001004" not in site.call("GetCompanyList", [("LastUpdated", NO_DATE)])
    world = World(world_folder)  # what `sandbox advance` does from another process
    world.put("company", company(1004, "C001004", "2026-10-05T11:00:00"))
    world.close()
    assert "C001004" in site.call("GetCompanyList", [("LastUpdated", NO_DATE)])


def test_concurrent_requests_from_threads(emu: KhaosEmulator) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            site = Site(emu)
            for _ in range(5):
                results.append(site.call("GetCompanyList", [("LastUpdated", NO_DATE)]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(results) == 30
    assert emu.stats()["calls"]["GetCompanyList"] == 30


# -- strictness ------------------------------------------------------------------------

def test_soap_action_must_name_the_method(site: Site) -> None:
    assert site.fault("GetSiteList", action=None)[0] == "soap:Client"
    code, message = site.fault("GetSiteList", action=ACTION.format("GetCompanyList"))
    assert code == "soap:Client" and "SOAPAction" in message
    assert site.post("GetSiteList", action="urn:IKosWebIntf-IKosWeb#GetSiteList").status_code == 200  # unquoted: tolerated


@pytest.mark.parametrize("method, params, expected", [
    ("DeleteEverything", [], "No method named 'DeleteEverything'"),
    ("GetCompanyList", [], "missing parameter(s) LastUpdated"),
    ("GetCompanyList", [("LastUpdated", "2026-10-01")], "not a valid date and time"),
    ("GetCompanyList", [("LastUpdated", "2026-10-01T09:00:00+01:00")], "not a valid date and time"),
    ("GetCompanyList", [("LastUpdated", "2026-1-5T9:00:00")], "not a valid date and time"),
    ("GetCompanyList", [("LastUpdated", "")], "not a valid date and time"),
    ("ExportCompany", [("CompanyCode", "C1"), ("MappingType", "1_0")], "not a valid integer"),
    ("GetCompanyList", [("LastUpdated", NO_DATE), ("Since", NO_DATE)], "unknown parameter Since"),
    ("GetCompanyList", [("LastUpdated", NO_DATE), ("LastUpdated", NO_DATE)], "given twice"),
    ("ExportCompany", [("CompanyCode", "C1"), ("MappingType", "one")], "not a valid integer"),
    ("ExportOrders", [("DateFrom", NO_DATE), ("DateType", "1")], "missing parameter(s) DateTo"),
])
def test_client_faults(site: Site, method: str, params: list[tuple[str, str]], expected: str) -> None:
    code, message = site.fault(method, params)
    assert code == "soap:Client" and expected in message


def test_envelope_rules(site: Site) -> None:
    assert site.fault("GetSiteList", body=b"not xml")[0] == "soap:Client"
    assert site.fault("GetSiteList", body=envelope("GetSiteList", [], namespace="urn:other"))[0] == "soap:Client"
    soap12 = b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>'
    assert site.fault("GetSiteList", body=soap12)[0] == "soap:VersionMismatch"
    assert site.fault("GetSiteList", content_type="application/json")[0] == "soap:Client"
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            + envelope("GetSiteList", []))
    assert site.fault("GetSiteList", body=bomb)[0] == "soap:Client"


def test_http_verbs_and_paths(site: Site) -> None:
    assert site.http.get(SOAP_PATH).status_code == 405
    assert site.http.get(SOAP_PATH).headers["Allow"] == "POST"
    assert site.http.post(WSDL_PATH, content=b"").status_code == 405
    assert site.http.get("/khaos/KhaosKSD.exe/soap/Other").status_code == 404


def test_credentials_when_the_site_has_them(world_folder: Path) -> None:
    site = Site(KhaosEmulator(world_folder, credentials=("kc-user", "s3cret")))
    ok = [("Username", "kc-user"), ("Password", "s3cret")]
    assert site.call("GetSiteList", ok).startswith("<SITES>")
    assert site.call("GetCompanyList", ok + [("LastUpdated", "2027-01-01T00:00:00")]) == "<COMPANY_LIST/>"
    assert site.fault("GetSiteList") == ("soap:Client", "Access denied")
    assert site.fault("GetSiteList", [("Username", "kc-user"), ("Password", "guess")]) == ("soap:Client", "Access denied")
    # A site without credentials ignores any that are sent.
    assert Site(KhaosEmulator(world_folder)).call("GetSiteList", ok).startswith("<SITES>")


def test_missing_world_is_a_server_fault_and_creates_nothing(tmp_path: Path) -> None:
    site = Site(KhaosEmulator(tmp_path / "nowhere"))
    assert site.fault("GetSiteList")[0] == "soap:Server"
    assert not (tmp_path / "nowhere").exists()


# -- faults, latency, stats ------------------------------------------------------------

def test_fail_rate_injects_500_faults_and_503s_deterministically(world_folder: Path) -> None:
    def run(seed: int) -> list[int]:
        site = Site(KhaosEmulator(world_folder, fail_rate=0.5, seed=seed))
        return [site.post("GetSiteList").status_code for _ in range(40)]

    first = run(3)
    assert first == run(3)
    assert {200, 500, 503} == set(first)
    always = Site(KhaosEmulator(world_folder, fail_rate=1.0, seed=1))
    responses = [always.post("GetSiteList") for _ in range(20)]
    for r in responses:
        if r.status_code == 500:
            assert b"<faultcode>soap:Server</faultcode>" in r.content
        else:
            assert r.status_code == 503 and r.headers["Content-Type"].startswith("text/plain")


def test_latency_uses_the_injected_sleep(world_folder: Path) -> None:
    slept: list[float] = []
    site = Site(KhaosEmulator(world_folder, latency_ms=250, sleep=slept.append))
    site.call("GetSiteList")
    assert slept == [0.25]


def test_stats_count_calls_faults_and_statuses(world_folder: Path) -> None:
    emu = KhaosEmulator(world_folder)
    site = Site(emu)
    site.call("GetSiteList")
    site.call("GetSiteList")
    site.fault("GetCompanyList")
    site.http.get(WSDL_PATH)
    stats = emu.stats()
    assert stats["calls"] == {"GetSiteList": 2, "GetCompanyList": 1}
    assert stats["faults"] == {"soap:Client": 1}
    assert stats["http_status"] == {"200": 3, "500": 1}
    assert stats["requests"] == 4


# -- WSDL ------------------------------------------------------------------------------

WSDL_NS = "{http://schemas.xmlsoap.org/wsdl/}"


def test_wsdl_lists_every_operation_with_its_parameters(site: Site) -> None:
    response = site.http.get(WSDL_PATH)
    assert response.status_code == 200
    root = DET.fromstring(response.content)
    assert root.tag == f"{WSDL_NS}definitions"
    messages = {m.get("name"): [(p.get("name"), p.get("type")) for p in m.findall(f"{WSDL_NS}part")]
                for m in root.findall(f"{WSDL_NS}message")}
    operations = root.findall(f"{WSDL_NS}portType/{WSDL_NS}operation")
    assert [op.get("name") for op in operations] == list(SITE_METHODS)
    for op in operations:
        name = op.get("name")
        request = op.find(f"{WSDL_NS}input").get("message").split(":")[1]  # type: ignore[union-attr]
        assert messages[request] == [(p.name, f"xs:{p.xsd_type}") for p in SITE_METHODS[name]]
    actions = {
        op.get("name"): op.find("{http://schemas.xmlsoap.org/wsdl/soap/}operation").get("soapAction")  # type: ignore[union-attr]
        for op in root.findall(f"{WSDL_NS}binding/{WSDL_NS}operation")
    }
    assert actions == {name: f"urn:IKosWebIntf-IKosWeb#{name}" for name in SITE_METHODS}
    address = root.find(f"{WSDL_NS}service/{WSDL_NS}port/{{http://schemas.xmlsoap.org/wsdl/soap/}}address")
    assert address is not None and address.get("location") == f"http://kc.example:8084{SOAP_PATH}"


def test_wsdl_declares_credentials_when_the_site_wants_them(world_folder: Path) -> None:
    site = Site(KhaosEmulator(world_folder, credentials=("u", "p")))
    root = DET.fromstring(site.http.get(WSDL_PATH).content)
    message = root.find(f"{WSDL_NS}message[@name='GetCompanyList0Request']")
    assert message is not None
    assert [p.get("name") for p in message.findall(f"{WSDL_NS}part")] == ["Username", "Password", "LastUpdated"]


def test_served_on_a_loopback_port_from_several_threads(emu: KhaosEmulator) -> None:
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    class Threaded(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    server = make_server("127.0.0.1", 0, emu, server_class=Threaded, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with httpx.Client(base_url=base) as http:
            wsdl = DET.fromstring(http.get(WSDL_PATH).content)
            address = wsdl.find(f"{WSDL_NS}service/{WSDL_NS}port/{{http://schemas.xmlsoap.org/wsdl/soap/}}address")
            assert address is not None and address.get("location") == base + SOAP_PATH
            response = http.post(SOAP_PATH, content=envelope("GetSiteList", []),
                                 headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": ACTION.format("GetSiteList")})
            assert response.status_code == 200 and b"&lt;SITES&gt;" in response.content
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
