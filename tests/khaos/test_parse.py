"""The XML parsers: contract documents in, records and named problems out."""

from __future__ import annotations

import tracemalloc
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from khaosync.errors import RecordError
from khaosync.khaos.models import Company, SalesOrder, StockItem
from khaosync.khaos.parse import (
    ISO_4217,
    DocumentError,
    Parsed,
    check_document,
    expected_order_amount,
    is_email,
    parse_companies,
    parse_sales_orders,
    parse_stock_items,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def by_key(parsed: list[Parsed]) -> dict[str | None, Parsed]:
    return {p.key: p for p in parsed}


def reasons(p: Parsed) -> list[str]:
    return [e.reason for e in p.problems]


def kinds(p: Parsed) -> list[str]:
    return [e.kind for e in p.problems]


# -- the contract's examples ---------------------------------------------------------


def test_company_from_the_contract() -> None:
    ada, charles = list(parse_companies(fixture("companies.xml")))
    assert ada.entity == "company" and ada.key == "1001" and ada.problems == []
    c = ada.record
    assert isinstance(c, Company)
    assert (c.company_id, c.company_code, c.name, c.company_class, c.status) == (
        1001, "C001001", "Ada Lovelace", "Retail", "Active")
    assert (c.web_user, c.mailing_status, c.currency) == ("ada@example.co.uk", 1, "GBP")
    assert c.date_created == datetime(2025, 3, 1, 10, 0, tzinfo=UTC)  # GMT in March
    assert c.last_updated == datetime(2026, 10, 2, 8, 0, tzinfo=UTC)  # BST in October
    assert c.additional == {"LOYALTY_TIER": "Gold"}
    [address] = c.addresses
    assert (address.address_id, address.addr1, address.addr2, address.town, address.postcode, address.addr_type,
            address.inactive) == (5001, "1 High St", "", "Bath", "BA1 1AA", "Invoice", False)
    [contact] = c.contacts
    assert (contact.contact_id, contact.title, contact.forename, contact.surname, contact.email) == (
        7001, "Ms", "Ada", "Lovelace", "ada@example.co.uk")
    assert contact.dob == date(1990, 12, 10)
    assert (contact.email_subscribe, contact.mailing_flag, contact.inactive) == (True, True, False)


def test_blank_consent_and_no_date() -> None:
    _, charles = list(parse_companies(fixture("companies.xml")))
    c = charles.record
    assert c.mailing_status is None  # <MAILING_STATUS/>: no decision held
    assert c.contacts[0].email_subscribe is None  # <EMAILSUBSCRIBE/>
    assert c.contacts[0].mailing_flag is False
    assert c.contacts[0].dob is None  # 1899-12-31T00:00:00
    assert c.addresses == []


def test_company_dst_edges() -> None:
    _, charles = list(parse_companies(fixture("companies.xml")))
    # 2025-03-30T01:30 is in the spring gap (read as GMT); 2026-10-25T01:30 is the repeated
    # autumn hour (the first, BST).
    assert charles.record.date_created == datetime(2025, 3, 30, 1, 30, tzinfo=UTC)
    assert charles.record.last_updated == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_raw_is_the_records_own_element() -> None:
    ada, _ = list(parse_companies(fixture("companies.xml")))
    assert ada.raw.startswith(b"<COMPANY>") and ada.raw.endswith(b"</COMPANY>")
    again = ET.fromstring(ada.raw)
    assert again.findtext("COMPANY_CODE") == "C001001"
    assert again.find("ADDITIONAL").get("NAME") == "LOYALTY_TIER"
    # Parsing the raw on its own gives the same record: pull can re-read what it staged.
    [reread] = list(parse_companies(b"<COMPANYS>" + ada.raw + b"</COMPANYS>"))
    assert reread.record == ada.record


def test_raw_escapes_what_it_must() -> None:
    [parent, *_] = list(parse_stock_items(fixture("stock_items.xml")))
    assert parent.record.long_description == "A plain tee & nothing else"
    assert b"A plain tee &amp; nothing else" in parent.raw
    doc = '<COMPANYS><COMPANY><COMPANY_ID>1</COMPANY_ID><COMPANY_NAME>Zoë "Z" &lt;Co&gt;</COMPANY_NAME>' \
          '<ADDITIONAL NAME="a&quot;b">x</ADDITIONAL></COMPANY></COMPANYS>'
    [p] = list(parse_companies(doc.encode()))
    assert ET.fromstring(p.raw).findtext("COMPANY_NAME") == 'Zoë "Z" <Co>'
    assert ET.fromstring(p.raw).find("ADDITIONAL").get("NAME") == 'a"b'
    assert p.raw.decode("utf-8")  # UTF-8 bytes


def test_stock_items_from_the_contract() -> None:
    parent, variant, mug, bad = list(parse_stock_items(fixture("stock_items.xml")))
    v = variant.record
    assert isinstance(v, StockItem) and variant.problems == []
    assert (v.stock_id, v.stock_code, v.parent_id, v.parent_code, v.other_ref) == (301, "TEE-RED-M", 300, "TEE",
                                                                                 "SUP-123")
    assert (v.description, v.sell_price, v.vat_rate, v.deleted, v.stock_type, v.manufacturer) == (
        "Tee, red, M", Decimal("12.50"), Decimal("20"), False, "1", "Acme")
    assert str(v.sell_price) == "12.50"
    assert v.barcodes == ["5012345678900"]
    assert v.user_defined == {"COLOUR_FAMILY": "Red"}
    assert v.images == ["tee-red.jpg"]
    assert v.scs is None  # SCS levels come in a parent's tree (test_vendor_documents.py), not on a child
    assert v.is_variant and not parent.record.is_variant
    assert parent.record.parent_id is None and parent.record.parent_code is None and parent.record.scs is None
    assert mug.record.deleted is True and mug.record.scs is None
    assert bad.record is None and bad.key == "303"
    assert reasons(bad) == ["SELL_PRICE: not a decimal: '12,50'"]


def test_sales_order_from_the_contract() -> None:
    first, _ = list(parse_sales_orders(fixture("sales_orders.xml")))
    o = first.record
    assert isinstance(o, SalesOrder) and first.problems == [] and first.key == "2075"
    assert (o.sorder_id, o.sorder_code, o.associated_ref) == (2075, "SO02075", "WEB-100231")
    assert (o.company_id, o.company_code, o.contact_id, o.web_user) == (1001, "C001001", 7001, "ada@example.co.uk")
    assert o.order_date == datetime(2026, 10, 1, 8, 12, tzinfo=UTC)
    assert o.last_updated == datetime(2026, 10, 3, 15, 0, tzinfo=UTC)
    assert (o.order_amount, o.currency, o.site, o.sales_source, o.website_name) == (
        Decimal("47.99"), "GBP", "1", "Web", "shop")
    assert (o.delivery_net, o.delivery_tax, o.delivery_gross) == (Decimal("3.33"), Decimal("0.66"), Decimal("3.99"))
    assert (o.courier_code, o.keycode_code, o.cancelled) == ("24HR", "", False)
    [line] = o.lines
    assert (line.sorder_item_id, line.stock_id, line.stock_code, line.mapping_type, line.description) == (
        90001, 301, "TEE-RED-M", 1, "Tee, red, M")
    assert (line.qty, line.price_net, line.price_gross, line.tax_rate, line.discount) == (
        Decimal("2"), Decimal("18.33"), Decimal("22.00"), Decimal("20"), Decimal("0.00"))
    assert str(line.price_gross) == "22.00"
    assert o.status is None and o.invoices == []


def test_dst_edge_datetimes_in_a_parsed_order() -> None:
    _, second = list(parse_sales_orders(fixture("sales_orders.xml")))
    o = second.record
    assert second.problems == []
    # 01:30 on 2026-10-25 happens twice in London: KC cannot say which; we take the first (BST).
    assert o.order_date == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    # 01:30 on 2026-03-29 never happens in London: read as GMT.
    assert o.last_updated == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert o.lines[1].discount == Decimal("0")  # <KSD_DISCOUNT/>: no discount


# Order statuses in the vendor's shape: tests/khaos/test_vendor_documents.py.


# -- problems, one kind at a time ------------------------------------------------------


def test_problems_carry_entity_key_and_stage() -> None:
    for p in parse_companies(fixture("companies_problems.xml")):
        for e in p.problems:
            assert isinstance(e, RecordError)
            assert (e.entity, e.key, e.stage) == ("company", p.key, "pull")


def test_company_rule_problems_keep_the_record() -> None:
    found = by_key(list(parse_companies(fixture("companies_problems.xml"))))
    bad_email = found["2001"]
    assert bad_email.record is not None
    assert reasons(bad_email) == [
        "contacts[contact_id=8001].email: not an email address: 'bad email@example'",
        "currency: unknown currency 'GBX' (not ISO 4217)",
    ]
    assert kinds(bad_email) == ["malformed_record", "malformed_record"]
    nobody = found["2002"]
    assert nobody.record is not None and reasons(nobody) == ["contacts: none (company_code 'C002002')"]


def test_missing_or_non_numeric_key() -> None:
    no_key = [p for p in parse_companies(fixture("companies_problems.xml")) if p.key is None]
    assert [p.record for p in no_key] == [None, None]
    assert [reasons(p) for p in no_key] == [
        ["COMPANY_ID: missing (COMPANY_CODE 'C002003')"],
        ["COMPANY_ID: not a numeric id: 'X2004' (COMPANY_CODE 'C002004')"],
    ]


def test_wrong_types_make_the_record_unusable_and_name_every_field() -> None:
    found = by_key(list(parse_companies(fixture("companies_problems.xml"))))
    assert found["2005"].record is None
    assert reasons(found["2005"]) == [
        "MAILING_STATUS: not an integer: 'yes'",
        "CONTACTS/CONTACT[1]/EMAILSUBSCRIBE: not a KC boolean (-1/0): 'maybe'",
    ]
    assert found["2006"].record is None
    assert reasons(found["2006"]) == ["contacts.0.contact_id: Field required"]


def test_sales_order_problems() -> None:
    found = by_key(list(parse_sales_orders(fixture("sales_orders_problems.xml"))))
    negative = found["3001"]
    assert negative.record is not None
    assert reasons(negative) == ["lines[1] (sorder_item_id 1).qty: negative: -1"]
    no_date = found["3002"]
    assert no_date.record is not None and no_date.record.order_date is None
    assert reasons(no_date) == ["order_date: missing (empty or KC's no-date 1899-12-31)"]
    penny = found["3003"]
    assert penny.record is not None and kinds(penny) == ["total_mismatch"]
    assert reasons(penny) == [
        "order_amount: 48.00 but lines (qty*PRICE_GRS - KSD_DISCOUNT) + DELIVERY_GRS = 44.00 + 3.99 = 47.99 "
        "(off by 0.01)"]
    currency = found["3004"]
    assert currency.record is not None
    assert reasons(currency) == ["currency: unknown currency 'UKP' (not ISO 4217)"]


def test_an_unusable_order_reports_all_its_faults_at_once() -> None:
    found = by_key(list(parse_sales_orders(fixture("sales_orders_problems.xml"))))
    broken = found["3005"]
    assert broken.record is None
    assert reasons(broken) == [
        "ORDER_HEADER/ORDER_DATE: not a KC datetime (YYYY-MM-DDTHH:MM:SS): '01/06/2026 12:00'",
        "lines.0.price_gross: Field required",
    ]


def test_an_order_without_header() -> None:
    found = by_key(list(parse_sales_orders(fixture("sales_orders_problems.xml"))))
    assert found[None].record is None
    assert reasons(found[None]) == ["SORDER_ID: missing (no enclosing element with it)"]


def test_total_check_rounds_each_line_to_the_currency() -> None:
    doc = b"""<SALES_ORDERS>
      <SALES_ORDER><ORDER_HEADER><SORDER_ID>1</SORDER_ID><ORDER_DATE>2026-01-01T00:00:00</ORDER_DATE>
        <ORDER_AMOUNT>10.00</ORDER_AMOUNT><ORDER_CURRENCY_CODE>GBP</ORDER_CURRENCY_CODE></ORDER_HEADER>
        <ORDER_ITEMS><ORDER_ITEM><ORDER_QTY>3</ORDER_QTY><PRICE_GRS>3.3333</PRICE_GRS></ORDER_ITEM></ORDER_ITEMS>
      </SALES_ORDER>
      <SALES_ORDER><ORDER_HEADER><SORDER_ID>2</SORDER_ID><ORDER_DATE>2026-01-01T00:00:00</ORDER_DATE>
        <ORDER_AMOUNT>1500</ORDER_AMOUNT><ORDER_CURRENCY_CODE>JPY</ORDER_CURRENCY_CODE><DELIVERY_GRS>500</DELIVERY_GRS>
        </ORDER_HEADER>
        <ORDER_ITEMS><ORDER_ITEM><ORDER_QTY>1</ORDER_QTY><PRICE_GRS>1000.4</PRICE_GRS></ORDER_ITEM></ORDER_ITEMS>
      </SALES_ORDER>
      <SALES_ORDER><ORDER_HEADER><SORDER_ID>3</SORDER_ID><ORDER_DATE>2026-01-01T00:00:00</ORDER_DATE>
        <ORDER_CURRENCY_CODE>GBP</ORDER_CURRENCY_CODE></ORDER_HEADER></SALES_ORDER>
    </SALES_ORDERS>"""
    gbp, jpy, no_amount = list(parse_sales_orders(doc))
    assert gbp.problems == [] and expected_order_amount(gbp.record) == Decimal("10.00")
    assert jpy.problems == [] and expected_order_amount(jpy.record) == Decimal("1500")
    assert reasons(no_amount) == ["order_amount: missing"]


# -- duplicates within one document ----------------------------------------------------


def test_duplicate_keys() -> None:
    first, identical, different = list(parse_companies(fixture("companies_duplicates.xml")))
    assert first.record is not None and first.problems == []
    # Same content again: marked, record kept, so the caller can ignore it knowingly.
    assert identical.record == first.record
    assert kinds(identical) == ["duplicate_in_response"] and identical.duplicate == "identical"
    assert reasons(identical) == [
        "key 3001 appears again in this document with identical content; the first occurrence is kept"]
    # Different content: we cannot tell which KC meant; the first stands, this one is refused.
    assert different.record is None
    assert kinds(different) == ["duplicate_in_response"] and different.duplicate == "different"
    assert first.duplicate is None
    assert reasons(different) == [
        "key 3001 appears again in this document with different content "
        "(differs in company_code 'C003001' then 'C003001-RENAMED'); the first occurrence is kept"]
    assert different.raw != first.raw and b"C003001-RENAMED" in different.raw


def test_duplicates_differing_only_in_whitespace_are_identical() -> None:
    one = b"<COMPANY><COMPANY_ID>1</COMPANY_ID><COMPANY_CODE>C1</COMPANY_CODE></COMPANY>"
    two = b"<COMPANY>\n  <COMPANY_ID> 1 </COMPANY_ID>\n  <COMPANY_CODE>C1</COMPANY_CODE>\n</COMPANY>"
    _, second = list(parse_companies(b"<COMPANYS>" + one + two + b"</COMPANYS>"))
    assert second.record is not None
    assert second.duplicate == "identical"


def test_duplicates_differing_in_decimal_text_differ() -> None:
    order = ("<SALES_ORDER><ORDER_HEADER><SORDER_ID>1</SORDER_ID><ORDER_DATE>2026-01-01T00:00:00</ORDER_DATE>"
             "<ORDER_AMOUNT>{}</ORDER_AMOUNT><ORDER_CURRENCY_CODE>GBP</ORDER_CURRENCY_CODE></ORDER_HEADER></SALES_ORDER>")
    doc = ("<SALES_ORDERS>" + order.format("0.0") + order.format("0.00") + "</SALES_ORDERS>").encode()
    _, second = list(parse_sales_orders(doc))
    assert second.record is None
    assert "differs in order_amount '0.0' then '0.00'" in reasons(second)[-1]


def test_unexpected_element_in_the_document_is_reported_not_dropped() -> None:
    doc = b"<COMPANYS><COMPANY><COMPANY_ID>1</COMPANY_ID></COMPANY><CUSTOMER><ID>2</ID></CUSTOMER></COMPANYS>"
    _, stray = list(parse_companies(doc))
    assert stray.record is None and stray.key is None
    assert reasons(stray) == ["unexpected <CUSTOMER> in <COMPANYS>, expected <COMPANY>"]
    assert stray.raw == b"<CUSTOMER><ID>2</ID></CUSTOMER>"


# -- the document level: hostile, malformed, wrongly encoded ---------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("hostile_billion_laughs.xml", "refused: the document declares a DTD ('lolz')"),
        ("hostile_external_entity.xml", "refused: the document declares a DTD ('COMPANYS')"),
        ("hostile_undefined_entity.xml", "malformed XML: undefined entity"),
    ],
)
def test_hostile_xml_is_refused(name: str, reason: str) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_companies(fixture(name))
    assert caught.value.reason.startswith(reason)


@pytest.mark.parametrize(
    "doc",
    [
        b'<!DOCTYPE COMPANYS SYSTEM "http://attacker.invalid/x.dtd"><COMPANYS/>',
        b'<?xml version="1.0"?><!DOCTYPE COMPANYS [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><COMPANYS/>',
        b'<?xml version="1.0"?><!DOCTYPE COMPANYS [<!ENTITY a "x">]><COMPANYS/>',
        b"<!DOCTYPE COMPANYS><COMPANYS/>",
    ],
)
def test_any_dtd_is_refused(doc: bytes) -> None:
    with pytest.raises(DocumentError, match="DTD"):
        parse_companies(doc)


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"<COMPANYS><COMPANY><COMPANY_ID>1</COMPANY_ID></COMPANY><COMPANY><COMPANY_ID>2</COMP", "malformed XML"),
        (b"", "malformed XML: no element found"),
        (b"<COMPANYS></COMPANY>", "malformed XML: mismatched tag"),
        (b"not xml at all", "malformed XML: syntax error"),
        (b"<COMPANYS/><COMPANYS/>", "malformed XML: junk after document element"),
        (b"<COMPANYS><COMPANY><COMPANY_NAME>\xff\xfe</COMPANY_NAME></COMPANY></COMPANYS>",
         "not valid UTF-8: byte 0xff at offset 33"),
        (b"<COMPANYS><COMPANY><COMPANY_NAME>caf\xe9</COMPANY_NAME></COMPANY></COMPANYS>",
         "not valid UTF-8: byte 0xe9 at offset 36"),
        (b"<STOCK_ITEMS/>", "expected a <COMPANYS> document, got <STOCK_ITEMS>"),
    ],
)
def test_document_errors(doc: bytes, reason: str) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_companies(doc)
    assert caught.value.reason.startswith(reason)


def test_a_truncated_document_fails_before_any_record_is_yielded() -> None:
    whole = fixture("sales_orders.xml")
    cut = whole[: len(whole) - 40]  # the first order is complete, the second is not
    with pytest.raises(DocumentError):
        parse_sales_orders(cut)  # raises on the call, not halfway through iterating


def test_a_declared_encoding_is_honoured() -> None:
    doc = '<?xml version="1.0" encoding="ISO-8859-1"?><COMPANYS><COMPANY><COMPANY_ID>1</COMPANY_ID>' \
          '<COMPANY_NAME>Café</COMPANY_NAME></COMPANY></COMPANYS>'
    [p] = list(parse_companies(doc.encode("latin-1")))
    assert p.record.name == "Café"
    assert "Café".encode() in p.raw  # raw is always UTF-8


def test_a_utf8_bom_is_fine() -> None:
    [p] = list(parse_companies(b"\xef\xbb\xbf<COMPANYS><COMPANY><COMPANY_ID>1</COMPANY_ID></COMPANY></COMPANYS>"))
    assert p.key == "1"


def test_text_is_refused_as_a_document() -> None:
    with pytest.raises(DocumentError, match="bytes"):
        check_document("<COMPANYS/>")  # type: ignore[arg-type]


def test_an_empty_document_has_no_records() -> None:
    assert list(parse_companies(b"<COMPANYS/>")) == []
    assert list(parse_sales_orders(b"<?xml version='1.0'?>\n<SALES_ORDERS>\n</SALES_ORDERS>")) == []


# -- helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ok"),
    [("ada@example.co.uk", True), ("a.b+c@sub.example.com", True), ("ada@example", False), ("@example.com", False),
     ("ada@@example.com", False), ("a@b@example.com", False), ("ada @example.com", False), ("ada@example.", False),
     ("ada@.example.com", False), ("ada@example..com", False), ("", False)],
)
def test_is_email(text: str, ok: bool) -> None:
    assert is_email(text) is ok


def test_currency_list() -> None:
    assert {"GBP", "EUR", "USD", "JPY", "CHF", "SEK"} <= ISO_4217
    assert not {"XXX", "XTS", "UKP", "GBX", "gbp", ""} & ISO_4217


# -- streaming -----------------------------------------------------------------------------


def _orders_document(n: int) -> bytes:
    order = ("<SALES_ORDER><CUSTOMER_DETAIL><COMPANY_ID>{i}</COMPANY_ID></CUSTOMER_DETAIL><ORDER_HEADER>"
             "<SORDER_ID>{i}</SORDER_ID><SORDER_CODE>SO{i:05d}</SORDER_CODE><ORDER_DATE>2026-10-01T09:12:00</ORDER_DATE>"
             "<ORDER_AMOUNT>47.99</ORDER_AMOUNT><ORDER_CURRENCY_CODE>GBP</ORDER_CURRENCY_CODE>"
             "<DELIVERY_GRS>3.99</DELIVERY_GRS><STOCK_DESC>" + "x" * 500 + "</STOCK_DESC></ORDER_HEADER>"
             "<ORDER_ITEMS><ORDER_ITEM><SORDER_ITEM_ID>{i}</SORDER_ITEM_ID><ORDER_QTY>2</ORDER_QTY>"
             "<PRICE_GRS>22.00</PRICE_GRS></ORDER_ITEM></ORDER_ITEMS></SALES_ORDER>")
    return ("<SALES_ORDERS>" + "".join(order.format(i=i) for i in range(1, n + 1)) + "</SALES_ORDERS>").encode()


def test_memory_follows_one_record_not_the_tree() -> None:
    doc = _orders_document(2000)
    tracemalloc.start()
    try:
        count = 0
        for parsed in parse_sales_orders(doc):
            assert parsed.problems == []
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 2000
    # A whole tree of 2,000 orders would cost several times the document; streaming keeps
    # one record plus each first occurrence's raw bytes (for the duplicate check).
    assert peak < 2.5 * len(doc), (peak, len(doc))


# -- properties ------------------------------------------------------------------------------

# Text XML 1.0 can carry (no control characters but TAB and LF, no surrogates).
_xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")
                    | st.sampled_from("\t\n&<>\"'"), max_size=40)


@given(name=_xml_text, user_field=_xml_text)
def test_raw_reparses_to_the_same_record(name: str, user_field: str) -> None:
    company = ET.Element("COMPANY")
    ET.SubElement(company, "COMPANY_ID").text = "1"
    ET.SubElement(company, "COMPANY_NAME").text = name
    extra = ET.SubElement(company, "ADDITIONAL", NAME=user_field or "X")
    extra.text = name
    doc = b"<COMPANYS>" + ET.tostring(company, encoding="utf-8").split(b"?>", 1)[-1].strip() + b"</COMPANYS>"
    [first] = list(parse_companies(doc))
    assert first.record is not None
    assert first.record.name == name.strip()
    [again] = list(parse_companies(b"<COMPANYS>" + first.raw + b"</COMPANYS>"))
    assert again.record == first.record


_values = st.one_of(
    st.sampled_from(["", "0", "-1", "1", "2.50", "-0.01", "1899-12-31T00:00:00", "2026-10-25T01:30:00",
                     "2026-03-29T01:30:00", "GBP", "XYZ", "NaN", "1e3", "abc", " 7 ", "99999999999999999999"]),
    _xml_text,
)
_order_fields = ["SORDER_ID", "ORDER_DATE", "LAST_UPDATED", "ORDER_AMOUNT", "ORDER_CURRENCY_CODE", "DELIVERY_GRS",
                 "CANCELLED"]
_line_fields = ["SORDER_ITEM_ID", "STOCK_ID", "ORDER_QTY", "PRICE_GRS", "KSD_DISCOUNT", "MAPPING_TYPE"]


@settings(max_examples=200)
@given(header=st.fixed_dictionaries({f: _values for f in _order_fields}),
       lines=st.lists(st.fixed_dictionaries({f: _values for f in _line_fields}), max_size=3))
def test_a_record_never_raises(header: dict[str, str], lines: list[dict[str, str]]) -> None:
    order = ET.Element("SALES_ORDER")
    head = ET.SubElement(order, "ORDER_HEADER")
    for tag, text in header.items():
        ET.SubElement(head, tag).text = text
    items = ET.SubElement(order, "ORDER_ITEMS")
    for line in lines:
        item = ET.SubElement(items, "ORDER_ITEM")
        for tag, text in line.items():
            ET.SubElement(item, tag).text = text
    doc = b"<SALES_ORDERS>" + ET.tostring(order, encoding="unicode").encode() + b"</SALES_ORDERS>"
    [parsed] = list(parse_sales_orders(doc))  # exactly one, whatever was inside
    assert parsed.record is not None or parsed.problems
    assert all(e.reason and e.stage == "pull" for e in parsed.problems)
    if parsed.record is not None:
        assert parsed.key == str(parsed.record.sorder_id)
