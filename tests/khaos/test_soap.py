"""The Khaos Control SOAP client.

Two kinds of test:

- unit tests over ``httpx.MockTransport``: envelopes, method renames, credentials, every
  error class and the retry policy;
- cassette tests: real exchanges with the sandbox emulator, recorded once with vcrpy into
  ``tests/khaos/cassettes/`` and replayed with ``record_mode="none"``, so CI never runs the
  emulator for them. The replay transport is a WSGI app that fails if it is ever called.

Re-record (after a change to the contract, the client's requests or the emulator)::

    KHAOSYNC_RECORD=1 .venv/bin/python -m pytest tests/khaos/test_soap.py -q

Recording deletes each cassette and records it again against the emulator in-process
(vcrpy patches ``httpx.WSGITransport``). ``<Password>``'s value is written as ``***`` in
every recorded body; request matching scrubs live requests the same way, so replay still
matches. Each client reads the emulator's WSDL first (the namespace comes from it), so every
cassette opens with that GET.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import re
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator
from xml.etree import ElementTree as ET

import httpx
import pytest
import vcr
import yaml
from pydantic import SecretStr

from khaosync.config import KhaosCredentials, KhaosSettings
from khaosync.errors import ExternalSystemError
from khaosync.khaos.convert import ConversionError
from khaosync.khaos.discover import discover
from khaosync.khaos.errors import (
    KhaosBadResponseError, KhaosConnectionError, KhaosError, KhaosHttpError, KhaosTimeoutError, SoapFaultError,
)
from khaosync.khaos.soap import BACKOFF_CAP_S, EXPECTED_OPERATIONS, KhaosClient, request_envelope

SOAP_URL = "https://kc.example.test/LiveSoap/KhaosKSD.exe/soap/IKosWeb"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENC = "http://schemas.xmlsoap.org/soap/encoding/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
BODY_NS = "urn:IKosWebIntf-IKosWeb"
NO_DATE = "1899-12-31T00:00:00"
PASSWORD = "s3cret-Pa55&<word>"


# -- helpers ---------------------------------------------------------------------------

def settings(**over) -> KhaosSettings:
    # The namespace as a setting: unit tests need no WSDL (test_the_namespace_comes_from_the_wsdl covers that path).
    return KhaosSettings(**{"soap_url": SOAP_URL, "retries": 3, "body_namespace": BODY_NS, **over})


def _envelope(method: str, inner: str, roots: str = "", status: int = 200) -> httpx.Response:
    body = (f'<?xml version="1.0" encoding="utf-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" '
            f'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="{XSI}" xmlns:SOAP-ENC="{SOAP_ENC}">'
            f'<SOAP-ENV:Body xmlns:NS2="urn:KosWebIntf"><NS1:{method}Response xmlns:NS1="{BODY_NS}">{inner}'
            f"</NS1:{method}Response>{roots}</SOAP-ENV:Body></SOAP-ENV:Envelope>")
    return httpx.Response(status, content=body.encode(), headers={"Content-Type": "text/xml; charset=utf-8"})


def answer(method: str, returned: str, status: int = 200) -> httpx.Response:
    """A string return (an export's document as text)."""
    escaped = returned.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _envelope(method, f'<return xsi:type="xsd:string">{escaped}</return>', status=status)


def array(name: str, item_type: str, items: list[str]) -> str:
    return (f'<{name} xsi:type="SOAP-ENC:Array" SOAP-ENC:arrayType="NS2:{item_type}[{len(items)}]">'
            + "".join(items) + f"</{name}>")


def item(type_name: str, **fields: str) -> str:
    inner = "".join(f'<{k} xsi:type="xsd:string">{v}</{k}>' for k, v in fields.items())
    return f'<item xsi:type="NS2:{type_name}">{inner}</item>'


def inline(method: str, type_name: str, fields: str) -> httpx.Response:
    """A structure written inline in <return>."""
    return _envelope(method, f'<return xsi:type="NS2:{type_name}">{fields}</return>')


def sites(*pairs: tuple[str, str]) -> httpx.Response:
    return inline("GetSiteList", "TSiteList",
                  array("List", "TSite", [item("TSite", SiteID=i, SiteName=n) for i, n in pairs]))


def fault(code: str, message: str, status: int = 500) -> httpx.Response:
    body = (f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><soap:Fault><faultcode>{code}</faultcode>'
            f"<faultstring>{message}</faultstring></soap:Fault></soap:Body></soap:Envelope>")
    return httpx.Response(status, content=body.encode(), headers={"Content-Type": "text/xml"})


class Recorder:
    """A MockTransport handler that answers from a script and keeps the requests."""

    def __init__(self, *responses: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]):
        self.script = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script[min(len(self.requests), len(self.script)) - 1]  # the last one repeats
        if isinstance(step, Exception):
            raise step
        if callable(step) and not isinstance(step, httpx.Response):
            return step(request)
        return step

    def body(self, index: int = -1) -> ET.Element:
        """The method element of a sent request."""
        root = ET.fromstring(self.requests[index].content)
        method = root.find(f"{{{SOAP_ENV}}}Body")[0]  # type: ignore[index]
        return method

    def params(self, index: int = -1) -> list[tuple[str, str]]:
        return [(p.tag, p.text or "") for p in self.body(index)]


class FakeRng(random.Random):
    def __init__(self) -> None:
        super().__init__(1)
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append((a, b))
        return super().uniform(a, b)


def client_for(recorder: Recorder, **over) -> tuple[KhaosClient, list[float], FakeRng]:
    sleeps: list[float] = []
    rng = FakeRng()
    client = KhaosClient(settings(**over), transport=httpx.MockTransport(recorder), sleep=sleeps.append, rng=rng)
    return client, sleeps, rng


UTC = timezone.utc


# -- requests --------------------------------------------------------------------------

def test_envelope_action_and_parameters_follow_the_contract() -> None:
    recorder = Recorder(inline("GetCompanyList", "TCompanyList",
                               array("List", "TCompanyListItem", [item("TCompanyListItem", CompanyCode="C1")])))
    client, _, _ = client_for(recorder)
    assert client.get_company_list(datetime(2026, 7, 1, 12, 0, tzinfo=UTC)) == ["C1"]
    request = recorder.requests[0]
    assert request.method == "POST" and str(request.url) == SOAP_URL
    assert request.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert request.headers["SOAPAction"] == '"urn:IKosWebIntf-IKosWeb#GetCompanyList"'
    root = ET.fromstring(request.content)
    assert root.find(f"{{{SOAP_ENV}}}Body").get(f"{{{SOAP_ENV}}}encodingStyle") == SOAP_ENC  # type: ignore[union-attr]
    method = recorder.body()
    assert method.tag == f"{{{BODY_NS}}}GetCompanyList"
    assert recorder.params() == [("LastUpdated", "2026-07-01T13:00:00")]  # London summer time
    assert method[0].get(f"{{{XSI}}}type") == "xsd:dateTime"  # rpc/encoded: every value typed


def test_parameters_are_sent_in_table_order_and_must_match_it() -> None:
    recorder = Recorder(answer("ExportOrderStatusEx", "<STATUS_LIST/>"))
    client, _, _ = client_for(recorder)
    assert client.export_order_status(["SO2075", "SO2076"]) == b"<STATUS_LIST/>"
    assert recorder.params() == [("IDs", "SO2075,SO2076"), ("MappingType", "3"), ("WebOnly", "false")]
    assert [p.get(f"{{{XSI}}}type") for p in recorder.body()] == ["xsd:string", "xsd:int", "xsd:boolean"]
    assert [name for name, _ in recorder.params()] == list(EXPECTED_OPERATIONS["ExportOrderStatusEx"].param_names)
    client.export_order_status(["WEB-1"], mapping_type=4, web_only=True)
    assert recorder.params() == [("IDs", "WEB-1"), ("MappingType", "4"), ("WebOnly", "true")]
    with pytest.raises(ValueError, match="EXPECTED_OPERATIONS"):
        client.call("GetCompanyList", {"Since": "x"})


def test_typed_methods_build_their_parameters() -> None:
    since = datetime(2026, 1, 10, tzinfo=UTC)
    recorder = Recorder(
        answer("ExportOrders", "<SALES_ORDERS/>"),
        answer("ExportCompany", "<COMPANYS/>"),
        inline("GetStockList", "TStockList", '<Count xsi:type="xsd:int">2</Count>' + array("List", "TStockListItem", [
            item("TStockListItem", StockCode="A", ParentCode=""),
            item("TStockListItem", StockCode="A-1", ParentCode="A")])),
        sites(("1", "Main"), ("WH-2", "Outlet")),
        inline("ImportCompany", "TCustomerImportResult", array("CustomerImport", "TCustomerImport", [
            item("TCustomerImport", URN="C1", WebUser="c1@example.com"), item("TCustomerImport", URN="", WebUser="x")])),
        answer("ExportStockStatus", "<STOCK_STATUS/>"),
    )
    client, _, _ = client_for(recorder)
    assert client.export_orders("SO02075") == b"<SALES_ORDERS/>"
    assert client.export_company(["C1", "C2"]) == b"<COMPANYS/>"
    assert client.get_stock_list(since) == [("A", None), ("A-1", "A")]
    assert client.get_site_list() == [("1", "Main"), ("WH-2", "Outlet")]  # ids as text: not numbers everywhere
    assert client.import_company("<COMPANYS/>") == [("C1", "c1@example.com")]  # a blank URN is not a company taken
    assert client.export_stock_status(["A", "B"]) == b"<STOCK_STATUS/>"
    assert [recorder.params(i) for i in range(6)] == [
        [("OrderCode", "SO02075"), ("MappingType", "1")],
        [("CompanyCode", "C1,C2"), ("MappingType", "1"), ("LastUpdated", NO_DATE)],
        [("LastUpdated", "2026-01-10T00:00:00")],
        [],
        [("Customers", "<COMPANYS/>"), ("Method", "0")],  # the connector's Method
        [("StockCode", "A,B"), ("MappingType", "1"), ("LastUpdated", NO_DATE)],
    ]
    with pytest.raises(ConversionError):
        client.get_company_list(datetime(2026, 1, 1))  # naive: which zone?


def test_get_stock_list_uses_the_form_the_site_declares() -> None:
    recorder = Recorder(inline("GetStockList", "TStockList", '<Count xsi:type="xsd:int">0</Count>'
                               + array("List", "TStockListItem", [])))
    client, _, _ = client_for(recorder, stock_list_form="date_type")
    assert client.get_stock_list(datetime(2026, 1, 10, tzinfo=UTC)) == []
    assert recorder.params() == [("DateType", "-1"), ("DateValue", "2026-01-10T00:00:00"), ("StockItemType", "0")]


def test_structures_by_reference_as_delphi_sends_them() -> None:
    roots = ('<NS2:TStockList id="1" xsi:type="NS2:TStockList"><Count xsi:type="xsd:int">2</Count>'
             '<List xsi:type="SOAP-ENC:Array" SOAP-ENC:arrayType="NS2:TStockListItem[2]"><item href="#2"/>'
             '<item href="#3"/></List></NS2:TStockList>'
             '<NS2:TStockListItem id="2" xsi:type="NS2:TStockListItem"><StockCode xsi:type="xsd:string">B</StockCode>'
             '<ParentCode xsi:type="xsd:string"></ParentCode></NS2:TStockListItem>'
             '<NS2:TStockListItem id="3" xsi:type="NS2:TStockListItem"><StockCode xsi:type="xsd:string">B-1</StockCode>'
             '<ParentCode xsi:type="xsd:string">B</ParentCode></NS2:TStockListItem>')
    client, _, _ = client_for(Recorder(_envelope("GetStockList", '<return href="#1"/>', roots)))
    assert client.get_stock_list(datetime(2026, 1, 1, tzinfo=UTC)) == [("B", None), ("B-1", "B")]
    client, _, _ = client_for(Recorder(_envelope("GetStockList", '<return href="#1"/>', roots.replace('id="3"', 'id="9"'))))
    with pytest.raises(KhaosBadResponseError, match="href '#3' points at nothing"):
        client.get_stock_list(datetime(2026, 1, 1, tzinfo=UTC))


def test_literal_structures_read_the_same() -> None:
    literal = ("<return><List><item><SiteID>1</SiteID><SiteName>Main</SiteName></item>"
               "<item><SiteID>2</SiteID><SiteName>Outlet</SiteName></item></List></return>")
    client, _, _ = client_for(Recorder(_envelope("GetSiteList", literal)))
    assert client.get_site_list() == [("1", "Main"), ("2", "Outlet")]
    one = "<return><List><item><SiteID>1</SiteID><SiteName>Main</SiteName></item></List></return>"
    client, _, _ = client_for(Recorder(_envelope("GetSiteList", one)))
    assert client.get_site_list() == [("1", "Main")]


def test_export_stock_compressed_reads_data_and_plain_export_the_string() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("stock.xml", "<STOCK_ITEMS><STOCK_ITEM><STOCK_CODE>£1</STOCK_CODE></STOCK_ITEM></STOCK_ITEMS>")
    packed = base64.encodebytes(buffer.getvalue()).decode()  # wrapped at 76 columns, as some servers do
    data = inline("ExportStockCompressed", "TCompressedData", f'<Data xsi:type="xsd:base64Binary">{packed}</Data>')
    recorder = Recorder(data, answer("ExportStockCompressed", packed), answer("ExportStock", "<STOCK_ITEMS/>"))
    client, _, _ = client_for(recorder)
    expected = "<STOCK_ITEMS><STOCK_ITEM><STOCK_CODE>£1</STOCK_CODE></STOCK_ITEM></STOCK_ITEMS>".encode()
    assert client.export_stock(["£1"]) == expected
    assert recorder.body().tag.endswith("ExportStockCompressed")
    assert recorder.params()[-1] == ("CompressionMethod", "0")
    assert client.export_stock(["£1"]) == expected  # a site declaring a bare base64 string
    plain, _, _ = client_for(recorder, compressed_stock=False)
    assert plain.export_stock(["X"], mapping_type=2) == b"<STOCK_ITEMS/>"
    assert recorder.body().tag.endswith("}ExportStock") and recorder.params()[1] == ("MappingType", "2")


def test_a_document_declaring_another_encoding_loses_the_declaration() -> None:
    doc = '<?xml version="1.0" encoding="windows-1252"?><COMPANYS><COMPANY_NAME>Zoë</COMPANY_NAME></COMPANYS>'
    client, _, _ = client_for(Recorder(answer("ExportCompany", doc)))
    data = client.export_company(["C1"])
    assert data == "<COMPANYS><COMPANY_NAME>Zoë</COMPANY_NAME></COMPANYS>".encode("utf-8")
    assert ET.fromstring(data).findtext("COMPANY_NAME") == "Zoë"


def test_method_names_can_be_renamed_per_site() -> None:
    recorder = Recorder(inline("GetCompanyListEx", "TCompanyList", array("List", "TCompanyListItem", [])))
    client, _, _ = client_for(recorder, methods={"GetCompanyList": "GetCompanyListEx"})
    assert client.get_company_list(datetime(2026, 1, 1, tzinfo=UTC)) == []
    assert recorder.requests[0].headers["SOAPAction"] == '"urn:IKosWebIntf-IKosWeb#GetCompanyListEx"'
    assert recorder.body().tag == f"{{{BODY_NS}}}GetCompanyListEx"


def test_the_namespace_and_soap_actions_come_from_the_wsdl() -> None:
    from khaosync.sandbox.khaos_wsdl import render_wsdl

    wsdl = render_wsdl(SOAP_URL).replace(b"urn:IKosWebIntf-IKosWeb", b"urn:SiteIntf-IKosWeb")
    recorder = Recorder(httpx.Response(200, content=wsdl), sites(("1", "Main")))
    client, _, _ = client_for(recorder, body_namespace=None)
    assert client.get_site_list() == [("1", "Main")]
    assert client.get_site_list() == [("1", "Main")]
    assert [r.method for r in recorder.requests] == ["GET", "POST", "POST"]  # the WSDL once per client
    assert str(recorder.requests[0].url) == SOAP_URL.replace("/soap/", "/wsdl/")
    assert recorder.body().tag == "{urn:SiteIntf-IKosWeb}GetSiteList"
    assert recorder.requests[-1].headers["SOAPAction"] == '"urn:SiteIntf-IKosWeb#GetSiteList"'


def test_credentials_go_first_in_the_body_and_never_into_errors(caplog: pytest.LogCaptureFixture) -> None:
    creds = KhaosCredentials(username="kc-user", password=SecretStr(PASSWORD))
    echo = f"Access denied for kc-user/{PASSWORD}"
    recorder = Recorder(
        sites(),
        fault("SOAP-ENV:Client", echo.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")),
        httpx.Response(400, text=f"bad request: <Password>{PASSWORD}</Password>"),
        httpx.ConnectError(f"refused while sending {PASSWORD}"),
    )
    client, _, _ = client_for(recorder, credentials=creds, retries=0)
    caplog.set_level(logging.DEBUG)
    assert client.get_site_list() == []
    assert recorder.params() == [("Username", "kc-user"), ("Password", PASSWORD)]
    for expected in (SoapFaultError, KhaosHttpError, KhaosConnectionError):
        with pytest.raises(expected) as caught:
            client.get_site_list()
        assert PASSWORD not in str(caught.value) and "***" in str(caught.value)
        # A traceback shows no httpx exception (it carries the request, and so the password).
        assert caught.value.__cause__ is None and caught.value.__suppress_context__ is (expected is KhaosConnectionError)
    assert PASSWORD not in caplog.text


def test_a_session_site_logs_in_once_and_sends_the_session_in_a_header() -> None:
    creds = KhaosCredentials(username="kc-user", password=SecretStr(PASSWORD), mode="session")
    recorder = Recorder(answer("Login", "sess-42"), sites(("1", "Main")), fault("SOAP-ENV:Client", "bad sess-42"))
    client, _, _ = client_for(recorder, credentials=creds, retries=0)
    assert client.get_site_list() == [("1", "Main")]
    assert recorder.body(0).tag == f"{{{BODY_NS}}}Login"
    assert recorder.params(0) == [("UserName", "kc-user"), ("UserPassword", PASSWORD)]
    assert recorder.params(1) == []  # no credentials in the body
    header = ET.fromstring(recorder.requests[1].content).find(f"{{{SOAP_ENV}}}Header")
    assert header is not None and [(e.tag, e.text) for e in header] == [(f"{{{BODY_NS}}}SessionID", "sess-42")]
    assert ET.fromstring(recorder.requests[0].content).find(f"{{{SOAP_ENV}}}Header") is None
    with pytest.raises(SoapFaultError) as caught:
        client.get_site_list()
    assert "sess-42" not in str(caught.value)  # a session is a secret too
    assert len(recorder.requests) == 3  # one Login


def test_a_password_echoed_across_the_cut_leaves_no_piece_behind() -> None:
    # Issue 11.9: scrub before the 200-character cut, and any 8+ character piece of it.
    creds = KhaosCredentials(username="kc-user", password=SecretStr(PASSWORD))
    padding = "y" * (200 - len(PASSWORD) + 1)
    recorder = Recorder(httpx.Response(400, text=padding + PASSWORD),
                        httpx.Response(400, text=f"saw {PASSWORD[1:10]} then {PASSWORD[-8:]}"))
    client, _, _ = client_for(recorder, credentials=creds, retries=0)
    for _ in range(2):
        with pytest.raises(KhaosHttpError) as caught:
            client.get_site_list()
        text = str(caught.value)
        assert not any(PASSWORD[i:i + 8] in text for i in range(len(PASSWORD) - 7)), text


def test_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_PASSWORD", "from-env")
    recorder = Recorder(sites())
    client, _, _ = client_for(recorder, credentials=KhaosCredentials(username="u", password_env="KC_PASSWORD"))
    client.get_site_list()
    assert recorder.body().findtext("Password") == "from-env"


# -- errors and retries ----------------------------------------------------------------

TRANSIENT = [
    pytest.param(lambda: fault("soap:Server", "busy"), SoapFaultError, id="soap-server-fault"),
    pytest.param(lambda: fault("SOAP-ENV:Server.Userexception", "EDatabaseError"), SoapFaultError, id="delphi-server-fault"),
    pytest.param(lambda: httpx.Response(500, text="Internal Server Error"), KhaosHttpError, id="500-not-a-fault"),
    pytest.param(lambda: httpx.Response(502, text="Bad Gateway"), KhaosHttpError, id="502"),
    pytest.param(lambda: httpx.Response(503, text="Service Unavailable"), KhaosHttpError, id="503"),
    pytest.param(lambda: httpx.Response(504, text="Gateway Timeout"), KhaosHttpError, id="504"),
    pytest.param(lambda: httpx.ReadTimeout("timed out"), KhaosTimeoutError, id="timeout"),
    pytest.param(lambda: httpx.ConnectError("refused"), KhaosConnectionError, id="connect"),
    pytest.param(lambda: httpx.RemoteProtocolError("server disconnected"), KhaosConnectionError, id="dropped"),
]


@pytest.mark.parametrize("make, error", TRANSIENT)
def test_transient_failures_are_retried_then_raised(make: Callable, error: type[KhaosError]) -> None:
    recorder = Recorder(make())
    client, sleeps, _ = client_for(recorder, retries=3)
    with pytest.raises(error) as caught:
        client.get_site_list()
    assert isinstance(caught.value, ExternalSystemError) and caught.value.transient
    assert len(recorder.requests) == 4 and caught.value.attempts == 4
    assert len(sleeps) == 3
    assert caught.value.method == "GetSiteList" and "GetSiteList" in str(caught.value)


NOT_TRANSIENT = [
    pytest.param(lambda: fault("SOAP-ENV:Client", "No method named 'X'"), SoapFaultError, id="soap-client-fault"),
    pytest.param(lambda: httpx.Response(404, text="Not Found"), KhaosHttpError, id="404"),
    pytest.param(lambda: httpx.Response(401, text="Unauthorized"), KhaosHttpError, id="401"),
    pytest.param(lambda: httpx.Response(200, text="<html>proxy login</html>"), KhaosBadResponseError, id="not-soap"),
    pytest.param(lambda: httpx.Response(200, text="not xml at all"), KhaosBadResponseError, id="not-xml"),
    pytest.param(lambda: httpx.Response(
        200, text=f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><ns:GetSiteListResponse xmlns:ns="x"/>'
                  "</soap:Body></soap:Envelope>"), KhaosBadResponseError, id="no-return"),
    pytest.param(lambda: httpx.Response(
        200, text=f'<!DOCTYPE x [<!ENTITY e "boom">]><soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body>'
                  "<r><return>&e;</return></r></soap:Body></soap:Envelope>"), KhaosBadResponseError, id="dtd"),
    pytest.param(lambda: answer("GetSiteList", "<SITES><SITE>"), KhaosBadResponseError, id="a-string-not-a-structure"),
    pytest.param(lambda: _envelope("GetSiteList", '<return href="#7"/>'), KhaosBadResponseError, id="dangling-href"),
    pytest.param(lambda: inline("GetSiteList", "TSiteList", "<List>text</List>"), KhaosBadResponseError,
                 id="not-an-array-of-structures"),
]


@pytest.mark.parametrize("make, error", NOT_TRANSIENT)
def test_non_transient_failures_raise_at_once(make: Callable, error: type[KhaosError]) -> None:
    recorder = Recorder(make())
    client, sleeps, _ = client_for(recorder, retries=3)
    with pytest.raises(error) as caught:
        client.get_site_list()
    assert not caught.value.transient
    assert len(recorder.requests) == 1 and sleeps == []


def test_a_structure_where_a_string_is_read_is_a_bad_response() -> None:
    client, _, _ = client_for(Recorder(sites(("1", "Main"))))
    with pytest.raises(KhaosBadResponseError, match="expected a string, got a structure"):
        client.export_company(["C1"])


def test_fault_attributes() -> None:
    client, _, _ = client_for(Recorder(fault("SOAP-ENV:Client", "MappingType must be 1")))
    with pytest.raises(SoapFaultError) as caught:
        client.export_company(["C1"])
    assert (caught.value.fault_code, caught.value.fault_string, caught.value.method) == (
        "SOAP-ENV:Client", "MappingType must be 1", "ExportCompany")


def test_a_fault_in_a_200_is_still_a_fault() -> None:
    client, _, _ = client_for(Recorder(fault("soap:Client", "nope", status=200)))
    with pytest.raises(SoapFaultError):
        client.get_site_list()


def test_http_error_attributes() -> None:
    client, _, _ = client_for(Recorder(httpx.Response(403, text="Forbidden " + "x" * 500)))
    with pytest.raises(KhaosHttpError) as caught:
        client.get_site_list()
    assert caught.value.status == 403 and len(str(caught.value)) < 300


def test_recovers_after_transient_failures() -> None:
    recorder = Recorder(httpx.Response(503), httpx.ReadTimeout("slow"), sites())
    client, sleeps, _ = client_for(recorder, retries=3)
    assert client.get_site_list() == []
    assert len(recorder.requests) == 3 and len(sleeps) == 2


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    recorder = Recorder(httpx.Response(503))
    client, sleeps, rng = client_for(recorder, retries=10)
    with pytest.raises(KhaosHttpError):
        client.get_site_list()
    assert len(recorder.requests) == 11
    ceilings = [min(BACKOFF_CAP_S, 0.5 * 2**n) for n in range(10)]
    assert rng.bounds == [(0.0, c) for c in ceilings]  # full jitter: from zero to the ceiling
    assert ceilings[-1] == 30.0 and ceilings[:3] == [0.5, 1.0, 2.0]
    assert all(0.0 <= s <= c for s, c in zip(sleeps, ceilings))
    assert len(set(sleeps)) == len(sleeps)  # jittered, not a fixed schedule


def test_zero_retries_means_one_attempt() -> None:
    recorder = Recorder(httpx.Response(503))
    client, sleeps, _ = client_for(recorder, retries=0)
    with pytest.raises(KhaosHttpError):
        client.get_site_list()
    assert len(recorder.requests) == 1 and sleeps == []


def compressed(data: str) -> httpx.Response:
    return inline("ExportStockCompressed", "TCompressedData", f'<Data xsi:type="xsd:base64Binary">{data}</Data>')


@pytest.mark.parametrize("response, message", [
    (compressed("not base64!!"), "not base64"),
    (compressed(base64.b64encode(b"PK but not a zip").decode()), "not a readable zip"),
    (compressed(""), "not a readable zip"),
    (inline("ExportStockCompressed", "TCompressedData", ""), "no Data"),
    (answer("ExportStockCompressed", "not base64!!"), "not base64"),
])
def test_bad_compressed_payloads(response: httpx.Response, message: str) -> None:
    client, _, _ = client_for(Recorder(response))
    with pytest.raises(KhaosBadResponseError, match=message):
        client.export_stock(["A"])


def test_an_empty_zip_is_a_bad_response() -> None:
    buffer = io.BytesIO()
    zipfile.ZipFile(buffer, "w").close()
    client, _, _ = client_for(Recorder(compressed(base64.b64encode(buffer.getvalue()).decode())))
    with pytest.raises(KhaosBadResponseError, match="empty"):
        client.export_stock(["A"])


def test_a_short_stock_list_is_a_bad_response() -> None:
    short = inline("GetStockList", "TStockList", '<Count xsi:type="xsd:int">3</Count>' + array(
        "List", "TStockListItem", [item("TStockListItem", StockCode="A", ParentCode="")]))
    client, _, _ = client_for(Recorder(short))
    with pytest.raises(KhaosBadResponseError, match="Count says 3 but 1 items came"):
        client.get_stock_list(datetime(2026, 1, 1, tzinfo=UTC))


def test_fetch_wsdl_uses_the_wsdl_url_and_retries() -> None:
    recorder = Recorder(httpx.Response(503), httpx.Response(200, content=b"<definitions/>"))
    client, sleeps, _ = client_for(recorder)
    assert client.fetch_wsdl() == b"<definitions/>"
    assert str(recorder.requests[-1].url) == SOAP_URL.replace("/soap/", "/wsdl/")
    assert recorder.requests[-1].method == "GET" and len(sleeps) == 1


def test_request_envelope_escapes_values() -> None:
    body = request_envelope("ImportCompany", [("Customers", "string", "<COMPANYS>&</COMPANYS>")], BODY_NS)
    method = ET.fromstring(body).find(f"{{{SOAP_ENV}}}Body")[0]  # type: ignore[index]
    assert method.findtext("Customers") == "<COMPANYS>&</COMPANYS>"


# -- cassettes: recorded once against the emulator, replayed without it -----------------

CASSETTES = Path(__file__).parent / "cassettes"
RECORDING = os.environ.get("KHAOSYNC_RECORD") == "1"
CASSETTE_SOAP_URL = "https://kc.sandbox.test/khaos/KhaosKSD.exe/soap/IKosWeb"
CASSETTE_USER, CASSETTE_PASSWORD = "kc-user", "cassette-pw-1"
_PASSWORD_ELEMENT = re.compile(rb"(<Password\b[^>]*>).*?(</Password>)", re.S)
SCRUBBED = '<Password xsi:type="xsd:string">***</Password>'


def scrub_request(request):  # vcr.request.Request -> the same, without the password
    if request.body:
        request.body = _PASSWORD_ELEMENT.sub(rb"\1***\2", request.body)
    return request


cassette_vcr = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="once" if RECORDING else "none",
    match_on=("method", "scheme", "host", "port", "path", "query", "body"),
    filter_headers=["authorization", "cookie"],
    before_record_request=scrub_request,
    decode_compressed_response=True,
)


def _no_emulator(environ: dict, start_response: Callable) -> list[bytes]:
    raise AssertionError("replay reached the transport: the cassette does not hold this request")


def _world(folder: Path) -> None:
    """The small merchant the cassettes were recorded against."""
    from khaosync.sandbox.world import World

    world = World(folder)
    world.set_meta("clock", "2026-10-05T12:00:00")
    for company_id, code, updated, subscribe in [(1001, "C001001", "2026-10-02T09:00:00", True),
                                                 (1002, "C001002", "2026-09-01T09:00:00", None)]:
        world.put("company", {
            "company_id": company_id, "company_code": code, "company_name": f"Customer {company_id}",
            "company_class": "Retail", "company_status": "Active", "web_user": f"c{company_id}@example.com",
            "mailing_status": 1 if subscribe else None, "currency_code": "GBP", "date_created": "2025-03-01T10:00:00",
            "updated": updated, "additional": {},
            "addresses": [], "contacts": [{
                "contact_id": company_id + 6000, "title": "", "forename": "C", "surname": str(company_id),
                "email": f"c{company_id}@example.com", "mobile": "", "dob": None, "email_subscribe": subscribe,
                "mailing_flag": True, "inactive": False}],
        })
    for stock_id, code, parent in [(300, "TEE", None), (301, "TEE-RED-M", "TEE")]:
        world.put("stock_item", {
            "stock_id": stock_id, "stock_code": code, "parent_stock_id": 300 if parent else None, "parent_code": parent,
            "stock_desc": code, "long_desc": "", "web_teaser": "", "sell_price": "12.50", "vat_rate": "20",
            "deleted": False, "stock_type": 1, "manufacturer": "Acme", "other_ref": "", "barcodes": [],
            "user_defined": {}, "images": [], "scs": None, "code_history": [], "updated": "2026-09-01T08:00:00",
        })
    world.put("sales_order", {
        "sorder_id": 2075, "sorder_code": "SO02075", "associated_ref": "WEB-100231", "company_id": 1001,
        "company_code": "C001001", "contact_id": 7001, "web_user": "c1001@example.com",
        "order_date": "2026-10-01T09:12:00", "currency": "GBP", "site": 1, "sales_source": "Web",
        "website_name": "shop", "courier_code": "24HR", "keycode_code": "", "delivery_net": "3.33",
        "delivery_tax": "0.66", "delivery_gross": "3.99", "order_amount": "47.99", "cancelled": False,
        "updated": "2026-10-03T16:00:00",
        "items": [{"sorder_item_id": 90001, "stock_id": 301, "stock_code": "TEE-RED-M", "stock_desc": "Tee",
                   "qty": "2", "price_net": "18.33", "price_gross": "22.00", "tax_rate": "20", "discount": "0.00"}],
        "invoices": [{"invoice_id": 40001, "invoice_code": "INV106", "stage_id": 16, "stage_desc": "Issue Invoices",
                      "issued": "2026-10-02T14:00:00", "consignment_ref": "CN-8812", "courier_code": "24HR",
                      "courier_name": "Metapack 24Hr", "tracking_number": "JD0002211",
                      "items": [{"sorder_item_id": 90001, "qty": "1"}]}],
    })
    world.close()


@pytest.fixture
def recorded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., KhaosClient]]:
    """A client factory inside this test's cassette; the emulator is there only when recording."""
    name = f"{request.node.name}.yaml"
    if RECORDING:
        (CASSETTES / name).unlink(missing_ok=True)
        from khaosync.sandbox.khaos_emulator import KhaosEmulator

        _world(tmp_path)
        app = KhaosEmulator(tmp_path, credentials=(CASSETTE_USER, CASSETTE_PASSWORD))
    else:
        app = _no_emulator
    clients: list[KhaosClient] = []

    def make(password: str = CASSETTE_PASSWORD, **over) -> KhaosClient:
        creds = KhaosCredentials(username=CASSETTE_USER, password=SecretStr(password))
        client = KhaosClient(KhaosSettings(soap_url=CASSETTE_SOAP_URL, credentials=creds, retries=0, **over),
                             transport=httpx.WSGITransport(app=app), sleep=lambda s: None)
        clients.append(client)
        return client

    with cassette_vcr.use_cassette(name):
        yield make
    for client in clients:
        client.close()


SINCE = datetime(2026, 9, 15, tzinfo=UTC)


def test_cassette_lists(recorded: Callable[..., KhaosClient]) -> None:
    client = recorded()
    assert client.get_site_list() == [("1", "Main")]
    assert client.get_company_list(SINCE) == ["C001001"]
    assert client.get_stock_list(datetime(2026, 1, 1, tzinfo=UTC)) == [("TEE", None), ("TEE-RED-M", "TEE")]


def test_cassette_exports(recorded: Callable[..., KhaosClient]) -> None:
    client = recorded()
    companies = ET.fromstring(client.export_company(["C001001", "C001002", "C404"]))
    assert [c.findtext("COMPANY_CODE") for c in companies] == ["C001001", "C001002"]
    stock = ET.fromstring(client.export_stock(["TEE-RED-M"]))  # ExportStockCompressed, unzipped
    assert [s.findtext("STOCK_ID") for s in stock] == ["301"]
    orders = ET.fromstring(client.export_orders("SO02075"))
    assert [o.findtext("ORDER_HEADER/SORDER_CODE") for o in orders] == ["SO02075"]
    statuses = ET.fromstring(client.export_order_status(["SO02075"]))
    assert statuses.findtext("ORDER_STATUS/ORDER_STATUS") == "PartialShip"
    assert statuses.findtext("ORDER_STATUS/INVOICES/INVOICE/TRACKING_NUMBER") == "JD0002211"
    levels = ET.fromstring(client.export_stock_status(["TEE-RED-M", "TEE"]))
    assert [i.findtext("CODE") for i in levels.findall("STOCK_ITEM")] == ["TEE", "TEE-RED-M"]


def test_cassette_import_company(recorded: Callable[..., KhaosClient]) -> None:
    client = recorded()
    customers = ("<COMPANYS><COMPANY><COMPANY_CODE>C001001</COMPANY_CODE><MAILING_STATUS>5</MAILING_STATUS>"
                 "<CONTACTS><CONTACT><CONTACT_ID>7001</CONTACT_ID><EMAILSUBSCRIBE>0</EMAILSUBSCRIBE></CONTACT>"
                 "</CONTACTS></COMPANY></COMPANYS>")
    assert client.import_company(customers) == [("C001001", "c1001@example.com")]
    after = ET.fromstring(client.export_company(["C001001"]))
    assert after.findtext("COMPANY/MAILING_STATUS") == "5"
    assert after.findtext("COMPANY/LAST_UPDATED") == "2026-10-05T12:00:00"


def test_cassette_faults(recorded: Callable[..., KhaosClient]) -> None:
    with pytest.raises(SoapFaultError) as caught:
        recorded().call("ExportCompany", {"CompanyCode": "C001001", "MappingType": 7, "LastUpdated": NO_DATE})
    assert caught.value.fault_code == "SOAP-ENV:Client" and "MappingType" in caught.value.fault_string
    with pytest.raises(SoapFaultError) as denied:
        recorded(password="wrong-password").get_site_list()
    assert denied.value.fault_string == "Access denied" and "wrong-password" not in str(denied.value)


def test_cassette_wsdl_discovers_every_operation_we_call(recorded: Callable[..., KhaosClient]) -> None:
    client = recorded()
    report = discover(client.fetch_wsdl(), client.settings)
    assert report.ok and report.endpoint == CASSETTE_SOAP_URL
    assert {op.our_name for op in report.with_status("used")} == {
        name for name, op in EXPECTED_OPERATIONS.items() if op.is_called(client.settings)}


def test_cassettes_hold_no_password() -> None:
    files = sorted(CASSETTES.glob("*.yaml"))
    assert len(files) >= 5, "cassettes missing: record them with KHAOSYNC_RECORD=1"
    text = "".join(f.read_text(encoding="utf-8") for f in files)
    assert CASSETTE_PASSWORD not in text and "wrong-password" not in text
    bodies = "".join(str(i["request"]["body"]) for f in files for i in yaml.safe_load(f.read_text())["interactions"])
    assert SCRUBBED in bodies  # YAML folds long lines: read the bodies, not the file text


@pytest.mark.skipif(RECORDING, reason="only meaningful when replaying")
def test_replay_refuses_requests_the_cassette_does_not_hold() -> None:
    from vcr.errors import CannotOverwriteExistingCassetteException

    client = KhaosClient(KhaosSettings(soap_url=CASSETTE_SOAP_URL, retries=0), transport=httpx.WSGITransport(app=_no_emulator))
    with cassette_vcr.use_cassette("test_cassette_lists.yaml"), pytest.raises(CannotOverwriteExistingCassetteException):
        client.get_site_list()  # no credentials: a different body from the recorded one


# -- the client against the emulator in-process, in the ways sites differ ----------------

@pytest.mark.parametrize("multiref", [True, False], ids=["multiref", "inline"])
def test_the_client_against_a_session_site_in_both_encodings(tmp_path: Path, multiref: bool) -> None:
    from khaosync.sandbox.khaos_emulator import KhaosEmulator

    _world(tmp_path)
    app = KhaosEmulator(tmp_path, credentials=(CASSETTE_USER, CASSETTE_PASSWORD), credentials_mode="session",
                        multiref=multiref, stock_list_form="date_type")
    creds = KhaosCredentials(username=CASSETTE_USER, password=SecretStr(CASSETTE_PASSWORD), mode="session")
    site = KhaosSettings(soap_url=CASSETTE_SOAP_URL, credentials=creds, retries=0, stock_list_form="date_type")
    with KhaosClient(site, transport=httpx.WSGITransport(app=app), sleep=lambda s: None) as client:
        assert discover(client.fetch_wsdl(), client.settings).ok
        assert client.get_site_list() == [("1", "Main")]
        assert client.get_stock_list(datetime(2026, 1, 1, tzinfo=UTC)) == [("TEE", None), ("TEE-RED-M", "TEE")]
        # The sandbox site exports SCS children inside their parent's tree, not by their own code.
        assert ET.fromstring(client.export_stock(["TEE-RED-M"])).findall("STOCK_ITEM") == []
        stock = ET.fromstring(client.export_stock(["TEE"]))
        assert [s.findtext("STOCK_ID") for s in stock] == ["300"]
        assert [i.findtext("STOCK_ID") for i in stock.iter("SCS_ITEM")] == ["301"]
    assert app.stats()["calls"]["Login"] == 1
    with KhaosClient(site, transport=httpx.WSGITransport(app=app), sleep=lambda s: None) as client:
        client.get_site_list()
        app.expire_sessions()
        assert client.get_site_list() == [("1", "Main")]
    assert app.stats()["calls"]["Login"] == 3  # logged in again, once
    wrong = KhaosCredentials(username=CASSETTE_USER, password=SecretStr("guess"), mode="session")
    with KhaosClient(site.model_copy(update={"credentials": wrong}), transport=httpx.WSGITransport(app=app)) as client:
        with pytest.raises(SoapFaultError) as caught:
            client.get_site_list()
    assert caught.value.method == "Login" and "guess" not in str(caught.value)
