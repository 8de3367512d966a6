"""discover: a site's WSDL against EXPECTED_OPERATIONS, starting from the emulator's WSDL."""

from __future__ import annotations

import re

import pytest
from pydantic import SecretStr

from khaosync.config import SANDBOX_KHAOS_URL, KhaosCredentials, KhaosSettings
from khaosync.khaos.discover import EXPECTED_OPERATIONS, DiscoverReport, discover
from khaosync.khaos.errors import KhaosBadResponseError
from khaosync.sandbox.khaos_wsdl import SITE_METHODS, render_wsdl

CALLED_BY_DEFAULT = {name for name, op in EXPECTED_OPERATIONS.items() if op.is_called(KhaosSettings())}


def site_wsdl(**kwargs) -> str:
    return render_wsdl(SANDBOX_KHAOS_URL, **kwargs).decode("utf-8")


def run(wsdl: str, **settings) -> DiscoverReport:
    return discover(wsdl.encode("utf-8"), KhaosSettings(**settings))


def marks(report: DiscoverReport) -> dict[str, str]:
    return {op.name: op.status for op in report.operations}


def without_operation(wsdl: str, name: str) -> str:
    return re.sub(rf'<operation name="{name}".*?</operation>', "", wsdl, flags=re.S)


def with_message_part_renamed(wsdl: str, message: str, old: str, new: str) -> str:
    start = wsdl.index(f'<message name="{message}">')
    end = wsdl.index("</message>", start)
    return wsdl[:start] + wsdl[start:end].replace(f'name="{old}"', f'name="{new}"') + wsdl[end:]


def test_the_emulators_wsdl_answers_every_call_we_make() -> None:
    report = run(site_wsdl())
    assert report.ok and report.notes == []
    assert {op.our_name for op in report.with_status("used")} == CALLED_BY_DEFAULT
    assert {op.name for op in report.with_status("unused")} == set(SITE_METHODS) - CALLED_BY_DEFAULT
    assert report.with_status("expected_missing") == [] and report.with_status("different_signature") == []
    assert report.endpoint == SANDBOX_KHAOS_URL and report.style == "rpc" and report.service == "IKosWebservice"
    export_stock = report.operation("ExportStock")
    assert export_stock.status == "unused" and "compressed_stock is false" in export_stock.notes[0]
    company_list = report.operation("GetCompanyList")
    assert company_list.soap_action == "urn:IKosWebIntf-IKosWeb#GetCompanyList"
    assert [(p.name, p.xsd_type, p.required) for p in company_list.params] == [("LastUpdated", "dateTime", None)]
    assert company_list.sent_params == ["LastUpdated"] and company_list.type_differences == []


def test_uncompressed_stock_calls_export_stock_instead() -> None:
    report = run(site_wsdl(), compressed_stock=False)
    assert report.operation("ExportStock").status == "used"
    assert report.operation("ExportStockCompressed").status == "unused"


def test_credentials_must_be_parameters_of_the_site() -> None:
    creds = KhaosCredentials(username="u", password=SecretStr("p"))
    assert run(site_wsdl(with_credentials=True), credentials=creds).ok
    report = run(site_wsdl(), credentials=creds)
    assert report.operation("GetSiteList").status == "different_signature"
    assert report.operation("GetSiteList").missing_params == ["Username", "Password"]


def test_a_removed_method_is_expected_missing() -> None:
    report = run(without_operation(site_wsdl(), "ExportOrders"))
    missing = report.operation("ExportOrders")
    assert missing.status == "expected_missing" and missing.params == []
    assert missing.sent_params == ["OrderCode", "MappingType"]
    assert not report.ok
    assert marks(report) | {"ExportOrders": "used"} == marks(run(site_wsdl()))  # nothing else moved


def test_a_renamed_method_without_and_with_a_methods_override() -> None:
    renamed = site_wsdl().replace("GetCompanyList", "GetCompanyListEx")
    report = run(renamed)
    missing = report.operation("GetCompanyList")
    assert missing.status == "expected_missing" and missing.suggestions[0] == "GetCompanyListEx"
    assert "khaos.methods.GetCompanyList: GetCompanyListEx" in missing.notes[-1]
    assert report.operation("GetCompanyListEx").status == "unused"

    fixed = run(renamed, methods={"GetCompanyList": "GetCompanyListEx"})
    used = fixed.operation("GetCompanyList")
    assert (used.name, used.our_name, used.status) == ("GetCompanyListEx", "GetCompanyList", "used")
    assert fixed.ok and used.notes == []


def test_an_override_naming_a_method_the_site_lacks() -> None:
    report = run(site_wsdl(), methods={"ExportOrders": "ExportOrdersV2"})
    missing = report.operation("ExportOrders")
    assert (missing.name, missing.status) == ("ExportOrdersV2", "expected_missing")
    assert "khaos.methods renames ExportOrders to ExportOrdersV2" in missing.notes
    assert report.operation("ExportOrders").suggestions[0] == "ExportOrders"
    assert marks(report)["ExportOrders"] == "unused"


def test_a_changed_parameter_is_a_different_signature() -> None:
    wsdl = with_message_part_renamed(site_wsdl(), "ExportStockCompressed0Request", "LastUpdated", "LastChanged")
    report = run(wsdl)
    changed = report.operation("ExportStockCompressed")
    assert changed.status == "different_signature"
    assert changed.missing_params == ["LastUpdated"]
    assert changed.extra_params == ["LastChanged"] and changed.extra_required_params == []  # rpc cannot say
    assert any("LastChanged" in note for note in changed.notes)
    assert report.operation("ExportStock").status == "unused"  # the untouched alternative


def test_a_parameter_spelt_differently_is_named_in_the_notes() -> None:
    report = run(with_message_part_renamed(site_wsdl(), "GetCompanyList0Request", "LastUpdated", "Lastupdated"))
    op = report.operation("GetCompanyList")
    assert op.status == "different_signature" and "LastUpdated: the site spells it Lastupdated" in op.notes


def test_type_differences_are_reported_without_changing_the_mark() -> None:
    wsdl = site_wsdl()
    start = wsdl.index('<message name="GetCompanyList0Request">')
    wsdl = wsdl[:start] + wsdl[start:].replace('type="xs:dateTime"', 'type="xs:string"', 1)
    wsdl = wsdl.replace('soapAction="urn:IKosWebIntf-IKosWeb#GetSiteList"', 'soapAction="http://tempuri.org/GetSiteList"')
    report = run(wsdl)
    company_list = report.operation("GetCompanyList")
    assert company_list.status == "used"
    assert company_list.type_differences == ["LastUpdated: khaosync sends dateTime, the site declares string"]
    site_list = report.operation("GetSiteList")  # the client sends the WSDL's own SOAPAction: nothing to report
    assert site_list.status == "used" and site_list.soap_action == "http://tempuri.org/GetSiteList"


def test_return_types_a_string_where_we_read_a_structure_and_a_missing_field() -> None:
    wsdl = site_wsdl()
    as_string = wsdl.replace('<message name="GetCompanyList0Response"><part name="return" type="ns1:TCompanyList"/>',
                             '<message name="GetCompanyList0Response"><part name="return" type="xs:string"/>')
    report = run(as_string)
    op = report.operation("GetCompanyList")
    assert op.status == "different_signature" and op.returns == "string" and op.reads == ["List[].CompanyCode"]
    assert op.return_difference == "the site returns a string, khaosync reads a structure (List[].CompanyCode)"
    assert report.advice == [f"GetCompanyList: {op.return_difference}; no setting covers it; report it"]
    no_parent = run(wsdl.replace('<xs:element name="ParentCode" type="xs:string"/>', ""))
    stock_list = no_parent.operation("GetStockList")
    assert stock_list.status == "different_signature"
    assert stock_list.return_difference.startswith("the site's structure lacks List[].ParentCode")
    structure_for_string = run(wsdl.replace(
        '<message name="ExportCompany0Response"><part name="return" type="xs:string"/>',
        '<message name="ExportCompany0Response"><part name="return" type="ns1:TCompanyList"/>'))
    assert structure_for_string.operation("ExportCompany").return_difference == (
        "the site returns a structure (List[].CompanyCode), khaosync reads a string")


def test_the_stock_list_form_the_site_declares_names_its_setting() -> None:
    report = run(site_wsdl(stock_list_form="date_type"))
    op = report.operation("GetStockList")
    assert op.status == "different_signature" and op.missing_params == ["LastUpdated"]
    assert report.advice == ["GetStockList: the site declares (DateType, DateValue, StockItemType): "
                             "set khaos.stock_list_form: date_type"]
    assert run(site_wsdl(stock_list_form="date_type"), stock_list_form="date_type").ok
    assert not run(site_wsdl(), stock_list_form="date_type").ok


def test_advice_for_compressed_stock_and_credentials() -> None:
    report = run(without_operation(site_wsdl(), "ExportStockCompressed"))
    assert "ExportStockCompressed: not published, ExportStock is: set khaos.compressed_stock: false" in report.advice
    creds = KhaosCredentials(username="u", password=SecretStr("p"))
    body = run(site_wsdl(), credentials=creds)
    assert any(line.startswith("GetSiteList:") and "khaos.credentials.mode: session" in line for line in body.advice)
    session = run(site_wsdl(), credentials=KhaosCredentials(username="u", password=SecretStr("p"), mode="session"))
    assert session.ok and session.operation("Login").status == "used"


def test_site_level_notes_namespace_and_endpoint() -> None:
    wsdl = site_wsdl().replace('namespace="urn:IKosWebIntf-IKosWeb"', 'namespace="urn:SiteIntf-IKosWeb"')
    report = run(wsdl, soap_url="https://kc.example.com/LiveSoap/KhaosKSD.exe/soap/IKosWeb")
    assert report.body_namespace == "urn:SiteIntf-IKosWeb"  # what the client will send: the WSDL's
    assert any("khaos.soap_url" in note for note in report.notes)
    pinned = run(wsdl, body_namespace="urn:IKosWebIntf-IKosWeb")
    assert any("khaos.body_namespace says urn:IKosWebIntf-IKosWeb" in line for line in pinned.advice)


DOCUMENT_WSDL = """<?xml version="1.0"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:s="http://www.w3.org/2001/XMLSchema" xmlns:tns="http://tempuri.org/" targetNamespace="http://tempuri.org/">
  <wsdl:types><s:schema elementFormDefault="unqualified" targetNamespace="http://tempuri.org/">
    <s:element name="GetCompanyList"><s:complexType><s:sequence>
      <s:element name="LastUpdated" type="s:dateTime"/>
      <s:element name="SiteID" type="s:int"/>
      <s:element name="Verbose" type="s:int" minOccurs="0"/>
    </s:sequence></s:complexType></s:element>
    <s:element name="GetSiteList" type="tns:Empty"/>
    <s:complexType name="Empty"><s:sequence/></s:complexType>
    <s:element name="GetCompanyListResponse"><s:complexType><s:sequence>
      <s:element name="return" type="s:string"/></s:sequence></s:complexType></s:element>
  </s:schema></wsdl:types>
  <wsdl:message name="GetCompanyListIn"><wsdl:part name="parameters" element="tns:GetCompanyList"/></wsdl:message>
  <wsdl:message name="GetCompanyListOut"><wsdl:part name="parameters" element="tns:GetCompanyListResponse"/></wsdl:message>
  <wsdl:message name="GetSiteListIn"><wsdl:part name="parameters" element="tns:GetSiteList"/></wsdl:message>
  <wsdl:portType name="IKosWeb">
    <wsdl:operation name="GetCompanyList"><wsdl:input message="tns:GetCompanyListIn"/><wsdl:output message="tns:GetCompanyListOut"/></wsdl:operation>
    <wsdl:operation name="GetSiteList"><wsdl:input message="tns:GetSiteListIn"/></wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="IKosWebSoap" type="tns:IKosWeb">
    <soap:binding transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="GetCompanyList"><soap:operation soapAction="urn:IKosWebIntf-IKosWeb#GetCompanyList"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input></wsdl:operation>
    <wsdl:operation name="GetSiteList"><soap:operation soapAction="urn:IKosWebIntf-IKosWeb#GetSiteList"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input></wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="KhaosService"><wsdl:port name="IKosWebSoap" binding="tns:IKosWebSoap">
    <soap:address location="https://kc.example.com/soap"/></wsdl:port></wsdl:service>
</wsdl:definitions>"""


def test_document_literal_wrapped_wsdl_knows_required_parameters() -> None:
    report = run(DOCUMENT_WSDL)
    assert report.style == "document"
    company_list = report.operation("GetCompanyList")
    assert company_list.status == "different_signature"
    assert company_list.missing_params == [] and company_list.extra_required_params == ["SiteID"]
    assert company_list.extra_params == ["SiteID", "Verbose"]
    assert [(p.name, p.xsd_type, p.required) for p in company_list.params] == [
        ("LastUpdated", "dateTime", True), ("SiteID", "int", True), ("Verbose", "int", False)]
    assert report.operation("GetSiteList").status == "different_signature"  # no output declared
    assert report.operation("GetCompanyList").returns == "string"  # the wrapper's child
    assert report.operation("ExportCompany").status == "expected_missing"
    assert any("literal (not rpc/encoded)" in line for line in report.advice)


@pytest.mark.parametrize("wsdl", [
    b"not xml",
    b"<definitions/>",  # not in the WSDL namespace
    b'<!DOCTYPE d [<!ENTITY x "y">]><definitions xmlns="http://schemas.xmlsoap.org/wsdl/">&x;</definitions>',
])
def test_unreadable_wsdl_is_a_bad_response(wsdl: bytes) -> None:
    with pytest.raises(KhaosBadResponseError):
        discover(wsdl, KhaosSettings())


def test_the_report_is_a_pydantic_model_that_dumps_to_json() -> None:
    data = run(site_wsdl()).model_dump(mode="json")
    assert {op["status"] for op in data["operations"]} == {"used", "unused"}
