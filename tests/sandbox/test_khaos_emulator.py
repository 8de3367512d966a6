"""The Khaos Control emulator against a tiny hand-built world, method by method, and its strictness.

The record-level documents are compared with the examples in docs/khaos-soap.md itself, so
the emulator renders "exactly as the contract shows" by construction of the test. Answers
are read here with a small rpc/encoded reader of the test's own (hrefs followed), so the
emulator is not checked with the client's decoder; tests/sandbox/test_khaos_zeep.py checks
it with a standard WSDL client.
"""

from __future__ import annotations

import base64
import io
import threading
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import defusedxml.ElementTree as DET
import httpx
import pytest

from khaosync.sandbox.khaos_emulator import SOAP_PATH, WSDL_PATH, KhaosEmulator
from khaosync.sandbox.khaos_wsdl import SITE_METHODS, declared_params
from khaosync.sandbox.world import World

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
ACTION = '"urn:IKosWebIntf-IKosWeb#{}"'
BODY_NS = "urn:IKosWebIntf-IKosWeb"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
SOAP_ENC = "http://schemas.xmlsoap.org/soap/encoding/"
CLIENT, SERVER = "SOAP-ENV:Client", "SOAP-ENV:Server"
NO_DATE = "1899-12-31T00:00:00"


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

def envelope(method: str, params: list[tuple[str, str]], namespace: str = BODY_NS, header: str = "") -> bytes:
    inner = "".join(f"<{n}>{v.replace('&', '&amp;').replace('<', '&lt;')}</{n}>" for n, v in params)
    head = f"<soap:Header>{header}</soap:Header>" if header else ""
    return (f'<soap:Envelope xmlns:soap="{SOAP_ENV}">{head}<soap:Body><ns:{method} xmlns:ns="{namespace}">'
            f"{inner}</ns:{method}></soap:Body></soap:Envelope>").encode()


def decode(element: ET.Element, refs: dict[str, ET.Element]):
    """rpc/encoded -> Python: hrefs followed, arrays as lists, structures as dicts, the rest as text."""
    if element.get("href"):
        element = refs[element.get("href", "").lstrip("#")]
    if element.get(f"{{{SOAP_ENC}}}arrayType") is not None:
        return [decode(child, refs) for child in element]
    if len(element):
        return {child.tag.rpartition("}")[2]: decode(child, refs) for child in element}
    return element.text or ""


class Site:
    def __init__(self, app: KhaosEmulator):
        self.http = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://kc.example:8084")

    def post(self, method: str, params: list[tuple[str, str]] | None = None, *, action: str | None = "",
             content_type: str = "text/xml; charset=utf-8", body: bytes | None = None, header: str = "") -> httpx.Response:
        headers = {"Content-Type": content_type}
        if action is not None:
            headers["SOAPAction"] = action or ACTION.format(method)
        return self.http.post(SOAP_PATH, content=body if body is not None else envelope(method, params or [], header=header),
                              headers=headers)

    def call(self, method: str, params: list[tuple[str, str]] | None = None, **kwargs):
        """The decoded <return>: text for a string, dicts and lists for a structure."""
        response = self.post(method, params, **kwargs)
        assert response.status_code == 200, response.text
        body = ET.fromstring(response.content).find(f"{{{SOAP_ENV}}}Body")
        assert body is not None
        answer = body.find(f"{{{BODY_NS}}}{method}Response/return")
        assert answer is not None
        return decode(answer, {e.get("id", ""): e for e in body if e.get("id")})

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
    assert site.call("GetSiteList") == {"List": [{"SiteID": "1", "SiteName": "Main"}]}
    world = World(world_folder)
    world.set_meta("sites", [[1, "Main"], [2, "Outlet"]])
    world.close()
    assert [s["SiteName"] for s in site.call("GetSiteList")["List"]] == ["Main", "Outlet"]


def codes(result: dict) -> list[str]:
    return [item["CompanyCode"] for item in result["List"]]


def test_get_company_list_is_exclusive_and_ordered_by_key(site: Site) -> None:
    assert codes(site.call("GetCompanyList", [("LastUpdated", NO_DATE)])) == ["C001001", "C001002", "C001003"]
    assert codes(site.call("GetCompanyList", [("LastUpdated", "2026-10-01T00:00:00")])) == ["C001001", "C001002"]
    # Changed exactly at LastUpdated is not "changed after" it.
    assert codes(site.call("GetCompanyList", [("LastUpdated", "2026-10-02T09:00:00")])) == ["C001002"]
    assert site.call("GetCompanyList", [("LastUpdated", "2027-01-01T00:00:00")]) == {"List": []}


def test_export_company_in_the_vendors_shape(site: Site) -> None:
    """KSDXMLCustomer.xml: contacts inside the address, ADDRTYPE 1/2, alpha-3 countries, dates
    DD/MM/YYYY, no LAST_UPDATED; a web customer's WEB_PASSWORD is there, as a real export's."""
    ada = site.doc("ExportCompany", [("CompanyCode", "C001001"), ("MappingType", "1")]).find("COMPANY")
    assert ada is not None
    assert [c.tag for c in ada][:4] == ["COMPANY_CODE", "COMPANY_NAME", "OTHER_REF", "WEB_SITE"]
    assert (ada.findtext("COMPANY_ID"), ada.findtext("DATE_CREATED"), ada.find("LAST_UPDATED")) == (
        "1001", "01/03/2025", None)
    assert ada.findtext("WEB_PASSWORD")  # khaosync must mask it: the vendor's document carries it
    address = ada.find("ADDRESSES/ADDRESS")
    assert address is not None and (address.findtext("ADDRTYPE"), address.findtext("COUNTRY_CODE")) == ("1", "GBR")
    assert ada.find("CONTACTS") is None
    assert texts(address, "CONTACTS/CONTACT/CONTACT_ID") == ["7001"]
    assert texts(address, "CONTACTS/CONTACT/DOB") == ["1990-12-10"]
    assert ada.find("ADDITIONAL").get("NAME") == "LOYALTY_TIER"


def test_export_company_empty_values_unknown_codes_and_escaping(site: Site) -> None:
    root = site.doc("ExportCompany", [("CompanyCode", "C001003,NOPE,C001002"), ("MappingType", "1")])
    assert texts(root, "COMPANY/COMPANY_CODE") == ["C001002", "C001003"]  # key order, unknown absent
    bob = root.find("COMPANY")
    assert bob is not None
    assert bob.findtext("MAILING_STATUS") == ""  # <MAILING_STATUS/>: no decision held
    assert texts(bob, "ADDRESSES/ADDRESS/CONTACTS/CONTACT/EMAILSUBSCRIBE") == ["", "-1"]
    assert texts(root, "COMPANY/COMPANY_NAME")[1] == "Cy & Co <Ltd>"
    assert site.call("ExportCompany", [("CompanyCode", ""), ("MappingType", "1")]) == "<COMPANYS/>"
    assert site.fault("ExportCompany", [("CompanyCode", "C001001"), ("MappingType", "2")])[0] == CLIENT


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
    orders = site.doc("ExportOrders", [("OrderCode", "SO02076"), ("MappingType", "1")])
    assert texts(orders, "SALES_ORDER/ORDER_HEADER/SORDER_ID") == ["2076", "2076"]


def _importing(code: str, body: str, company_class: str = "<COMPANY_CLASS>Retail</COMPANY_CLASS>") -> str:
    return f"<COMPANY><COMPANY_CODE>{code}</COMPANY_CODE>{company_class}{body}</COMPANY>"


def _contact(address_id: int, contact: str) -> str:
    return (f"<ADDRESSES><ADDRESS><COUNTRY_CODE>GBR</COUNTRY_CODE><ADDRESS_ID>{address_id}</ADDRESS_ID>"
            f"<CONTACTS><CONTACT>{contact}</CONTACT></CONTACTS></ADDRESS></ADDRESSES>")


def test_import_company_updates_consent_and_bumps_updated(site: Site, world_folder: Path) -> None:
    """The vendor's import document: contacts in their address; COMPANY_CLASS present even for
    an update; only what a consent write-back carries changes."""
    customers = "<COMPANYS>" + "".join([
        _importing("C001001", "<MAILING_STATUS>6</MAILING_STATUS>"
                   + _contact(5001, "<CONTACT_ID>7001</CONTACT_ID><EMAILSUBSCRIBE>0</EMAILSUBSCRIBE>")),
        _importing("C001002", _contact(5001, "<EMAIL>shared@example.com</EMAIL><EMAILSUBSCRIBE>0</EMAILSUBSCRIBE>")),
        _importing("C999999", "<MAILING_STATUS>6</MAILING_STATUS>"),
    ]) + "</COMPANYS>"
    result = site.call("ImportCompany", [("Customers", customers), ("Method", "0")])
    assert result == {"CustomerImport": [  # unknown companies are not created
        {"URN": "C001001", "WebUser": "ada@example.co.uk"}, {"URN": "C001002", "WebUser": "ada@example.co.uk"}]}
    world = World(world_folder)
    ada, bob = world.get("company", 1001), world.get("company", 1002)
    world.close()
    assert ada["mailing_status"] == 6 and ada["contacts"][0]["email_subscribe"] is False
    assert ada["updated"] == "2026-10-05T12:00:00"
    assert bob["mailing_status"] is None  # not in the import: left as KC holds it
    assert [c["email_subscribe"] for c in bob["contacts"]] == [None, False]
    assert codes(site.call("GetCompanyList", [("LastUpdated", "2026-10-05T00:00:00")])) == ["C001001", "C001002"]
    again = site.call("ImportCompany", [("Customers", customers), ("Method", "0")])
    assert again == result  # the same import twice changes nothing more


@pytest.mark.parametrize("body, why", [
    (_importing("C001001", "<MAILING_STATUS>6</MAILING_STATUS>", company_class=""), "COMPANY_CLASS is mandatory"),
    (_importing("C001001", "<ADDRESSES><ADDRESS><ADDRESS_ID>5001</ADDRESS_ID></ADDRESS></ADDRESSES>"),
     "COUNTRY or COUNTRY_CODE"),
])
def test_import_company_follows_the_vendors_rules(site: Site, body: str, why: str) -> None:
    code, message = site.fault("ImportCompany", [("Customers", f"<COMPANYS>{body}</COMPANYS>"), ("Method", "0")])
    assert code == CLIENT and why in message


@pytest.mark.parametrize("customers", [
    "<COMPANYS><COMPANY>",
    '<!DOCTYPE x [<!ENTITY a "aaaa">]><COMPANYS><COMPANY><COMPANY_CODE>&a;</COMPANY_CODE></COMPANY></COMPANYS>',
    "<CUSTOMERS/>",
    "<COMPANYS><COMPANY><COMPANY_CODE>C001001</COMPANY_CODE><MAILING_STATUS>yes</MAILING_STATUS></COMPANY></COMPANYS>",
])
def test_import_company_refuses_bad_documents(site: Site, customers: str) -> None:
    assert site.fault("ImportCompany", [("Customers", customers), ("Method", "1")])[0] == CLIENT


def test_get_stock_list_in_both_forms(site: Site) -> None:
    expected = {"Count": "2", "List": [{"StockCode": "TEE-RED-M", "ParentCode": "TEE"},
                                       {"StockCode": "MUG1", "ParentCode": ""}]}
    assert site.call("GetStockList", [("LastUpdated", "2026-08-15T00:00:00")]) == expected  # the real site's form
    connector = [("DateType", "-1"), ("DateValue", "2026-08-15T00:00:00"), ("StockItemType", "0")]
    assert site.call("GetStockList", connector) == expected
    typed = site.call("GetStockList", [("DateType", "-1"), ("DateValue", NO_DATE), ("StockItemType", "2")])
    assert [i["StockCode"] for i in typed["List"]] == ["MUG1"] and typed["Count"] == "1"
    assert site.fault("GetStockList", [("DateType", "0"), ("DateValue", NO_DATE), ("StockItemType", "0")])[0] == CLIENT
    # One form or the other, never a mix.
    code, message = site.fault("GetStockList", [("LastUpdated", NO_DATE), ("StockItemType", "0")])
    assert code == CLIENT and "unknown parameter StockItemType" in message


def test_export_stock_in_the_vendors_shape_with_the_scs_tree(site: Site, world_folder: Path) -> None:
    """KSDXMLStock.xml: types as text with ids, ASSOCIATED_REF, WEB/DISCONTINUED/DELETED, no
    parent fields; a style parent carries its children in an SCS tree, and a child's own code
    exports nothing (the harder reading); with scs_export "separate", each child on its own."""
    parent = site.doc("ExportStock", [("StockCode", "TEE,TEE-R-M"), ("MappingType", "1"), ("LastUpdated", NO_DATE)])
    assert texts(parent, "STOCK_ITEM/STOCK_CODE") == ["TEE"]  # an old code is simply absent
    item = parent.find("STOCK_ITEM")
    assert item is not None and item.find("PARENT_ID") is None and item.find("LAST_UPDATED") is None
    assert [h.text for h in item.findall("SCS/HEADING")] == ["Colour", "Size"]
    [child] = item.iter("SCS_ITEM")
    assert (child.findtext("STOCK_ID"), child.findtext("STOCK_CODE"), child.findtext("ASSOCIATED_REF")) == (
        "301", "TEE-RED-M", "SUP-123")
    assert [s.findtext("DESCRIPTION") for s in item.iter("STYLE")] == ["Red", "M"]
    assert site.doc("ExportStock", [("StockCode", "TEE-RED-M"), ("MappingType", "1"),
                                    ("LastUpdated", NO_DATE)]).findall("STOCK_ITEM") == []
    by_ref = site.doc("ExportStock", [("StockCode", "SUP-9"), ("MappingType", "2"), ("LastUpdated", NO_DATE)])
    mug = by_ref.find("STOCK_ITEM")
    assert mug is not None and (mug.findtext("STOCK_CODE"), mug.findtext("DELETED"), mug.findtext("WEB")) == (
        "MUG1", "-1", "0")
    assert mug.find("STOCK_TYPE") is not None and mug.findtext("STOCK_TTYPE_ID").isdigit()  # text types, with ids
    since = site.doc("ExportStock", [("StockCode", "TEE,MUG1"), ("MappingType", "1"), ("LastUpdated", "2026-09-01T00:00:00")])
    assert texts(since, "STOCK_ITEM/STOCK_CODE") == ["MUG1"]
    world = World(world_folder)
    world.set_meta("scs_export", "separate")
    world.close()
    apart = site.doc("ExportStock", [("StockCode", "TEE,TEE-RED-M"), ("MappingType", "1"), ("LastUpdated", NO_DATE)])
    assert texts(apart, "STOCK_ITEM/STOCK_CODE") == ["TEE", "TEE-RED-M"] and apart.find(".//SCS") is None


def test_export_stock_compressed_is_base64_zip_of_the_same_document(site: Site) -> None:
    params = [("StockCode", "TEE,TEE-RED-M"), ("MappingType", "1"), ("LastUpdated", NO_DATE)]
    plain = site.call("ExportStock", params)
    packed = site.call("ExportStockCompressed", params + [("CompressionMethod", "0")])
    assert set(packed) == {"Data"}
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(packed["Data"], validate=True))) as archive:
        assert archive.read(archive.infolist()[0]).decode("utf-8") == plain
    assert site.fault("ExportStockCompressed", params + [("CompressionMethod", "1")])[0] == CLIENT


def test_export_stock_status(site: Site) -> None:
    """KSDXMLStockStatus.xml: STOCK_STATUS SITE= with STOCK_ITEM CODE= ID= DESC=, LEVEL, STATUS 0-5."""
    declared = [("StockCode", "MUG1,TEE"), ("MappingType", "1"), ("LastUpdated", NO_DATE)]
    root = site.doc("ExportStockStatus", declared)
    assert root.tag == "STOCK_STATUS" and root.get("SITE") == "Main"
    items = {i.get("CODE"): i for i in root.findall("STOCK_ITEM")}
    assert set(items) == {"TEE", "MUG1"} and items["MUG1"].get("ID") == "302"
    assert items["MUG1"].findtext("STATUS") == "4"  # deleted: discontinued
    assert items["MUG1"].get("OTHER_REF") == "SUP-9"
    # What newer clients send: StockCodes for StockCode, then SiteID and PotentialLeadTime.
    newer = [("StockCodes", "MUG1,TEE"), ("MappingType", "1"), ("LastUpdated", NO_DATE), ("SiteID", "1"),
             ("PotentialLeadTime", "false")]
    assert site.call("ExportStockStatus", newer) == site.call("ExportStockStatus", declared)
    code, message = site.fault("ExportStockStatus", declared + [("StockCodes", "MUG1")])
    assert code == CLIENT and "StockCode given twice" in message


def test_export_orders_exports_one_order_by_its_code(site: Site) -> None:
    order = site.doc("ExportOrders", [("OrderCode", "SO02075"), ("MappingType", "1")])
    assert texts(order, "SALES_ORDER/ORDER_HEADER/SORDER_ID") == ["2075"]
    assert order.find("SALES_ORDER/ORDER_HEADER/LAST_UPDATED") is None  # no change time is published
    assert texts(order, "SALES_ORDER/ORDER_ITEMS/ORDER_ITEM/SORDER_ITEM_ID") == ["90001"]
    assert site.call("ExportOrders", [("OrderCode", "SO99999"), ("MappingType", "1")]) == "<SALES_ORDERS/>"
    # A list of codes is not a code.
    assert site.call("ExportOrders", [("OrderCode", "SO02075,SO02076"), ("MappingType", "1")]) == "<SALES_ORDERS/>"
    assert site.fault("ExportOrders", [("OrderCode", "SO02075"), ("MappingType", "3")])[0] == CLIENT


def test_the_date_window_export_orders_is_refused(world_folder: Path) -> None:
    strict = Site(KhaosEmulator(world_folder))
    code, message = strict.fault("ExportOrders", [("DateFrom", NO_DATE), ("DateTo", NO_DATE), ("DateType", "1")])
    assert code == CLIENT and "unknown parameter DateFrom" in message


def test_export_orders_serves_raw_overrides(site: Site, world_folder: Path) -> None:
    world = World(world_folder)
    world.set_raw_override("sales_order", 2076, "<SALES_ORDER><ORDER_HEADER><SORDER_ID>2076</SORDER_ID>£</ORDER_HEADER>"
                                                "</SALES_ORDER>".encode("utf-8"))
    world.close()
    text = site.call("ExportOrders", [("OrderCode", "SO02076"), ("MappingType", "1")])
    assert text == "<SALES_ORDERS><SALES_ORDER><ORDER_HEADER><SORDER_ID>2076</SORDER_ID>£</ORDER_HEADER></SALES_ORDER></SALES_ORDERS>"


def status_params(ids: str, mapping: str, **extra: str) -> list[tuple[str, str]]:
    return [("IDs", ids), ("MappingType", mapping), *extra.items()]


def test_export_order_status_in_the_vendors_shape(site: Site) -> None:
    """KSDXMLOrderStatusEx.xml: STATUS_LIST/ORDER_STATUS SORDER_CODE= ASSOCIATED_REF=, no internal
    ids, invoices as attributes with DD/MM/YYYY dates and the courier's reference and URL."""
    root = site.doc("ExportOrderStatusEx", status_params("SO02075", "3"))
    assert root.tag == "STATUS_LIST"
    [status] = root.findall("ORDER_STATUS")
    assert (status.get("SORDER_CODE"), status.get("ASSOCIATED_REF")) == ("SO02075", "WEB-100231")
    assert status.find("SORDER_ID") is None and status.find("ORDER_TYPE").get("TYPE_ID") == "1"
    assert (status.findtext("COMPLETE"), status.findtext("QTY_SOLD")) == ("0", "2")
    assert status.find("ITEMS_TOTAL").get("NET_VALUE") == "36.66" and status.findtext("ITEMS_TOTAL") == "44.00"
    issued = [i for i in status.iter("INVOICE") if i.get("ISSUE_DATE") != "30/12/1899"]
    assert [i.get("INVOICE_CODE") for i in issued] == ["INV106"]
    assert issued[0].get("ISSUE_DATE") == "02/10/2026" and issued[0].get("CONSIGNMENT_REF") == "JD0002211"
    assert issued[0].get("TRACKING_URL").endswith("JD0002211") and issued[0].find("BOX") is not None
    assert all(i.find("ITEMS") is None for i in status.iter("INVOICE"))  # no line detail per invoice


def test_export_order_status_follows_the_invoices(site: Site) -> None:
    root = site.doc("ExportOrderStatusEx", status_params("SO02079,SO02078,SO02077,SO02076,SO02075,SO09999", "3",
                                                         WebOnly="false"))
    by_code = {s.get("SORDER_CODE"): s for s in root.findall("ORDER_STATUS")}
    assert list(by_code) == ["SO02075", "SO02076", "SO02077", "SO02078", "SO02079"]  # key order; unknown absent
    assert by_code["SO02079"].findtext("COMPLETE") == "-1"
    assert by_code["SO02077"].find("CANCELLED/REASON") is not None
    assert all(by_code[c].find("CANCELLED") is None for c in ("SO02075", "SO02076", "SO02078", "SO02079"))
    assert by_code["SO02076"].findall("INVOICES/INVOICE") == []


def test_export_order_status_options(site: Site) -> None:
    by_ref = site.doc("ExportOrderStatusEx", status_params("WEB-100231,WEB-2077", "4"))
    assert [s.get("SORDER_CODE") for s in by_ref.findall("ORDER_STATUS")] == ["SO02075", "SO02077"]
    web = site.doc("ExportOrderStatusEx", status_params("SO02075,SO02077", "3", WebOnly="true"))
    assert [s.get("SORDER_CODE") for s in web.findall("ORDER_STATUS")] == ["SO02075", "SO02077"]  # both Web
    assert site.fault("ExportOrderStatusEx", status_params("2075", "5"))[0] == CLIENT  # no id mapping is published
    assert site.fault("ExportOrderStatusEx", status_params("SO02075", "3", WebOnly="-1"))[0] == CLIENT



def test_the_world_is_read_per_request(site: Site, world_folder: Path) -> None:
    assert "C001004" not in codes(site.call("GetCompanyList", [("LastUpdated", NO_DATE)]))
    world = World(world_folder)  # what `sandbox advance` does from another process
    world.put("company", company(1004, "C001004", "2026-10-05T11:00:00"))
    world.close()
    assert "C001004" in codes(site.call("GetCompanyList", [("LastUpdated", NO_DATE)]))


def test_concurrent_requests_from_threads(emu: KhaosEmulator) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            site = Site(emu)
            for _ in range(5):
                results.append(codes(site.call("GetCompanyList", [("LastUpdated", NO_DATE)])))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({tuple(r) for r in results}) == 1 and len(results) == 30
    assert emu.stats()["calls"]["GetCompanyList"] == 30


# -- strictness ------------------------------------------------------------------------

def test_soap_action_must_name_the_method(site: Site) -> None:
    assert site.fault("GetSiteList", action=None)[0] == CLIENT
    code, message = site.fault("GetSiteList", action=ACTION.format("GetCompanyList"))
    assert code == CLIENT and "SOAPAction" in message
    assert site.post("GetSiteList", action="urn:IKosWebIntf-IKosWeb#GetSiteList").status_code == 200  # unquoted: tolerated


@pytest.mark.parametrize("method, params, expected", [
    ("DeleteEverything", [], "No method named 'DeleteEverything'"),
    ("GetCompanyList", [], "missing parameter(s) LastUpdated"),
    ("GetCompanyList", [("LastUpdated", "2026-10-01")], "not a valid date and time"),
    ("GetCompanyList", [("LastUpdated", "2026-10-01T09:00")], "not a valid date and time"),
    ("GetCompanyList", [("LastUpdated", "2026-10-01T09:00:00+1:00")], "not a valid date and time"),
    ("GetCompanyList", [("LastUpdated", "2026-1-5T9:00:00")], "not a valid date and time"),
    ("GetCompanyList", [("LastUpdated", "")], "not a valid date and time"),
    ("ExportCompany", [("CompanyCode", "C1"), ("MappingType", "1_0")], "not a valid integer"),
    ("GetCompanyList", [("LastUpdated", NO_DATE), ("Since", NO_DATE)], "unknown parameter Since"),
    ("GetCompanyList", [("LastUpdated", NO_DATE), ("LastUpdated", NO_DATE)], "given twice"),
    ("ExportCompany", [("CompanyCode", "C1"), ("MappingType", "one")], "not a valid integer"),
    ("ExportOrders", [("OrderCode", "SO1")], "missing parameter(s) MappingType"),
    ("ExportCompany", [("CompanyCode", "C1"), ("MappingType", "2147483648")], "not a valid integer"),
    ("ExportOrderStatusEx", [("IDs", "1"), ("MappingType", "3"), ("WebOnly", "yes")], "not a valid boolean"),
    ("ExportOrderStatusEx", [("IDs", "1"), ("MappingType", "3"), ("Verbose", "1")], "unknown parameter Verbose"),
])
def test_client_faults(site: Site, method: str, params: list[tuple[str, str]], expected: str) -> None:
    code, message = site.fault(method, params)
    assert code == CLIENT and expected in message


def test_datetimes_follow_xsd_and_are_read_as_london_local_time(site: Site) -> None:
    # 09:00 London (BST) on 2 October is 08:00Z; a fraction of a second is dropped.
    after_ada = ["C001002"]
    for value in ("2026-10-02T09:00:00", "2026-10-02T08:00:00Z", "2026-10-02T10:00:00+02:00",
                  "2026-10-02T09:00:00.750"):
        assert codes(site.call("GetCompanyList", [("LastUpdated", value)])) == after_ada, value
    assert codes(site.call("GetCompanyList", [("LastUpdated", "2026-10-02T07:59:59Z")])) == ["C001001", "C001002"]


def test_parameters_may_carry_their_xsd_types(site: Site) -> None:
    body = envelope("GetCompanyList", []).replace(
        b"</ns:GetCompanyList>", f"<LastUpdated xmlns:xsi=\"{XSI}\" xmlns:xsd=\"{XSD}\" xsi:type=\"xsd:dateTime\">{NO_DATE}</LastUpdated>"
        "</ns:GetCompanyList>".encode())
    assert site.post("GetCompanyList", body=body).status_code == 200
    wrong = body.replace(b"xsd:dateTime", b"xsd:string")
    code, message = site.fault("GetCompanyList", body=wrong)
    assert code == CLIENT and "LastUpdated is xsd:dateTime, not string" in message
    # Any prefix bound to XML Schema will do; an unbound or foreign one will not.
    other_prefix = body.replace(b"xsd:dateTime", b"s0:dateTime").replace(
        b"<LastUpdated ", b'<LastUpdated xmlns:s0="http://www.w3.org/2001/XMLSchema" ')
    assert site.post("GetCompanyList", body=other_prefix).status_code == 200
    foreign = body.replace(b"xsd:dateTime", b"xsd2:dateTime").replace(b"<LastUpdated ", b'<LastUpdated xmlns:xsd2="urn:x" ')
    assert "not xsd2:dateTime" in site.fault("GetCompanyList", body=foreign)[1]
    unbound = body.replace(f' xmlns:xsd="{XSD}"'.encode(), b"")
    assert site.fault("GetCompanyList", body=unbound)[0] == CLIENT
    nil = envelope("ExportCompany", [("CompanyCode", "C001001"), ("MappingType", "1")]).replace(
        b"</ns:ExportCompany>", f'<LastUpdated xmlns:xsi="{XSI}" xsi:nil="true"/></ns:ExportCompany>'.encode())
    assert site.post("ExportCompany", body=nil).status_code == 200  # nil: as if not sent (it is optional)


def test_structures_are_multi_reference_values_after_the_response_as_delphi_writes_them(site: Site) -> None:
    body = site.post("GetStockList", [("LastUpdated", "2026-09-15T00:00:00")]).text
    assert ('<NS1:GetStockListResponse xmlns:NS1="urn:IKosWebIntf-IKosWeb"><return href="#1"/>'
            "</NS1:GetStockListResponse>") in body
    assert ('<NS2:TStockList id="1" xsi:type="NS2:TStockList"><Count xsi:type="xsd:int">1</Count>'
            '<List xsi:type="SOAP-ENC:Array" SOAP-ENC:arrayType="NS2:TStockListItem[1]"><item href="#2"/></List>'
            "</NS2:TStockList>") in body
    assert ('<NS2:TStockListItem id="2" xsi:type="NS2:TStockListItem"><StockCode xsi:type="xsd:string">MUG1</StockCode>'
            '<ParentCode xsi:type="xsd:string"></ParentCode></NS2:TStockListItem>') in body
    assert 'xmlns:NS2="urn:KosWebIntf"' in body
    text = site.post("GetVersion").text
    assert '<return xsi:type="xsd:string">KhaosKSD sandbox' in text


def test_structures_inline_when_the_emulator_is_told_so(world_folder: Path) -> None:
    site = Site(KhaosEmulator(world_folder, multiref=False))
    body = site.post("GetSiteList").text
    assert ('<return xsi:type="NS2:TSiteList"><List xsi:type="SOAP-ENC:Array" SOAP-ENC:arrayType="NS2:TSite[1]">'
            '<item xsi:type="NS2:TSite"><SiteID xsi:type="xsd:int">1</SiteID>') in body
    assert "href" not in body
    assert site.call("GetSiteList") == {"List": [{"SiteID": "1", "SiteName": "Main"}]}


def test_declared_methods_the_sandbox_does_not_answer_are_server_faults(site: Site) -> None:
    code, message = site.fault("ImportOrders", [("Orders", "<SALES_ORDERS/>")])
    assert code == SERVER and message == "ImportOrders is not supported by the sandbox"
    assert site.fault("ExportOrderStatus")[1] == "ExportOrderStatus is not supported by the sandbox"


def test_envelope_rules(site: Site) -> None:
    assert site.fault("GetSiteList", body=b"not xml")[0] == CLIENT
    assert site.fault("GetSiteList", body=envelope("GetSiteList", [], namespace="urn:other"))[0] == CLIENT
    assert site.fault("GetSiteList", body=envelope("GetSiteList", [], namespace="http://tempuri.org/"))[0] == CLIENT
    soap12 = b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>'
    assert site.fault("GetSiteList", body=soap12)[0] == "SOAP-ENV:VersionMismatch"
    assert site.fault("GetSiteList", content_type="application/json")[0] == CLIENT
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            + envelope("GetSiteList", []))
    assert site.fault("GetSiteList", body=bomb)[0] == CLIENT


def test_http_verbs_and_paths(site: Site) -> None:
    assert site.http.get(SOAP_PATH).status_code == 405
    assert site.http.get(SOAP_PATH).headers["Allow"] == "POST"
    assert site.http.post(WSDL_PATH, content=b"").status_code == 405
    assert site.http.get("/khaos/KhaosKSD.exe/soap/Other").status_code == 404


def test_credentials_when_the_site_has_them(world_folder: Path) -> None:
    site = Site(KhaosEmulator(world_folder, credentials=("kc-user", "s3cret")))
    ok = [("Username", "kc-user"), ("Password", "s3cret")]
    assert "List" in site.call("GetSiteList", ok)
    assert site.call("GetCompanyList", ok + [("LastUpdated", "2027-01-01T00:00:00")]) == {"List": []}
    assert site.fault("GetSiteList") == (CLIENT, "Access denied")
    assert site.fault("GetSiteList", [("Username", "kc-user"), ("Password", "guess")]) == (CLIENT, "Access denied")
    # A site without credentials ignores any that are sent.
    assert "List" in Site(KhaosEmulator(world_folder)).call("GetSiteList", ok)


def test_a_session_site_wants_login_then_the_session_header(world_folder: Path) -> None:
    site = Site(KhaosEmulator(world_folder, credentials=("kc-user", "s3cret"), credentials_mode="session"))
    assert site.fault("GetSiteList")[1].startswith("Access denied")
    assert site.fault("Login", [("UserName", "kc-user"), ("UserPassword", "guess")])[0] == CLIENT
    session = site.call("Login", [("UserName", "kc-user"), ("UserPassword", "s3cret")])
    assert isinstance(session, str) and len(session) >= 16
    header = f'<k:SessionID xmlns:k="{BODY_NS}">{session}</k:SessionID>'
    assert "List" in site.call("GetSiteList", header=header)
    assert site.fault("GetSiteList", header=header.replace(session, "forged"))[1].startswith("Access denied")
    assert site.call("GetVersion").startswith("KhaosKSD")  # no session needed to ask the version


def test_missing_world_is_a_server_fault_and_creates_nothing(tmp_path: Path) -> None:
    site = Site(KhaosEmulator(tmp_path / "nowhere"))
    assert site.fault("GetSiteList")[0] == SERVER
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
            assert b"<faultcode>SOAP-ENV:Server</faultcode>" in r.content
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
    assert stats["faults"] == {CLIENT: 1}
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
        assert messages[request] == [(p.name, f"xs:{p.xsd_type}") for p in declared_params(SITE_METHODS[name])]
        response_message = op.find(f"{WSDL_NS}output").get("message").split(":")[1]  # type: ignore[union-attr]
        returns = SITE_METHODS[name].returns
        assert messages[response_message] == [("return", f"xs:{returns}" if isinstance(returns, str) else f"ns1:{returns.name}")]
    bodies = root.findall(f"{WSDL_NS}binding/{WSDL_NS}operation/{WSDL_NS}input/{{http://schemas.xmlsoap.org/wsdl/soap/}}body")
    assert {(b.get("use"), b.get("encodingStyle"), b.get("namespace")) for b in bodies} == {("encoded", SOAP_ENC, BODY_NS)}
    assert [p.name for p in declared_params(SITE_METHODS["GetStockList"])] == ["LastUpdated"]
    assert [p.name for p in declared_params(SITE_METHODS["ExportStockStatus"])] == ["StockCode", "MappingType", "LastUpdated"]
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
            assert response.status_code == 200 and b"<SiteName xsi:type=\"xsd:string\">Main</SiteName>" in response.content
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
