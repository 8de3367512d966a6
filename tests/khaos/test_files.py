"""The file source: credit-note and customer reports through a column map, and export folders."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from khaosync.errors import ConfigError
from khaosync.khaos.files import (
    ColumnMap,
    ExportFolder,
    load_column_map,
    read_credit_notes,
    read_customers,
    strict_xml,
)
from khaosync.khaos.models import Company, CreditNote, SalesOrder
from khaosync.khaos.parse import DocumentError, Parsed, problem

FIXTURES = Path(__file__).parent / "fixtures"
HEADER = ("CREDIT_ID,CREDIT_CODE,SORDER_ID,SORDER_CODE,ASSOCIATED_REF,ISSUED,CURRENCY,REASON,SORDER_ITEM_ID,"
          "STOCK_CODE,QTY,VALUE,DELIVERY_REFUND,TOTAL")


def reasons(p: Parsed) -> list[str]:
    return [e.reason for e in p.problems]


def kinds(p: Parsed) -> list[str]:
    return [e.kind for e in p.problems]


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def notes(path: Path, columns: ColumnMap | None = None) -> dict[str | None, Parsed]:
    return {p.key: p for p in read_credit_notes(path, columns)}


# -- credit notes, default columns -----------------------------------------------------------


def test_credit_notes_grouped_by_credit_id() -> None:
    found = notes(FIXTURES / "credit_notes.csv")
    assert list(found) == ["5001", "5002", "5003", "5004"]
    assert all(p.problems == [] and p.entity == "credit_note" for p in found.values())
    n = found["5001"].record
    assert isinstance(n, CreditNote)
    assert (n.credit_id, n.credit_code, n.sorder_id, n.sorder_code, n.associated_ref) == (
        5001, "CN5001", 2075, "SO02075", "WEB-100231")
    assert (n.issued, n.currency, n.reason) == (datetime(2026, 10, 5, 9, 0, tzinfo=UTC), "GBP", "Faulty")
    assert (n.delivery_refund, n.total) == (Decimal("3.99"), Decimal("25.99"))
    assert str(n.total) == "25.99"
    [line] = n.lines
    assert (line.sorder_item_id, line.stock_code, line.qty, line.value) == (90001, "TEE-RED-M", Decimal("1"),
                                                                           Decimal("22.00"))


def test_rows_of_one_note_need_not_be_adjacent() -> None:
    split = notes(FIXTURES / "credit_notes.csv")["5003"]
    assert [line.sorder_item_id for line in split.record.lines] == [90002, 90003]
    assert split.raw.decode().splitlines() == [
        HEADER,
        "5003,CN5003,2076,SO02076,WEB-100232,2026-10-06T10:00:00,EUR,Damaged,90002,MUG1,1,6.00,0.00,14.00",
        "5003,CN5003,2076,SO02076,WEB-100232,2026-10-06T10:00:00,EUR,Damaged,90003,TEE-RED-M,1,8.00,0.00,14.00",
    ]


def test_a_delivery_only_refund_has_no_lines() -> None:
    delivery = notes(FIXTURES / "credit_notes.csv")["5004"].record
    assert delivery.lines == []
    assert (delivery.delivery_refund, delivery.total) == (Decimal("4.50"), Decimal("4.50"))


def test_credit_note_issued_in_the_repeated_autumn_hour() -> None:
    assert notes(FIXTURES / "credit_notes.csv")["5002"].record.issued == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_credit_note_problems() -> None:
    found = notes(FIXTURES / "credit_notes_problems.csv")
    assert found["6001"].record is not None
    assert reasons(found["6001"]) == ["lines[sorder_item_id=90001].qty: negative: -1"]
    assert found["6002"].record is not None and kinds(found["6002"]) == ["total_mismatch"]
    assert reasons(found["6002"]) == [
        "total: 22.01 but lines' values 22.00 + delivery_refund 0.00 = 22.00 (off by 0.01)"]
    assert reasons(found["6003"]) == ["currency: unknown currency 'XYZ' (not ISO 4217)"]
    assert found["6004"].record is not None
    assert reasons(found["6004"]) == [
        "issued (column 'ISSUED') differs between the rows: '2026-10-05T10:00:00' on line(s) 5; "
        "'2026-10-06T10:00:00' on line(s) 6"]
    assert found[None].record is None
    assert reasons(found[None]) == ["line 7, credit_id (column 'CREDIT_ID'): not a numeric id: 'X6005'"]
    assert found[None].raw.decode().splitlines()[1].startswith("X6005,")
    assert found["6006"].record is None
    assert reasons(found["6006"]) == ["line 8, qty (column 'QTY'): not a decimal: 'one'"]
    assert all(e.stage == "pull" and e.entity == "credit_note" for p in found.values() for e in p.problems)


def test_value_on_a_delivery_row_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", HEADER + "\n1,CN1,2,SO2,W2,2026-01-01T00:00:00,GBP,,,,,5.00,5.00,5.00\n")
    [p] = read_credit_notes(path)
    assert p.record is not None and p.record.lines == []
    assert reasons(p) == ["line 2, value (column 'VALUE'): 5.00 on a row without sorder_item_id "
                          "(a delivery refund row); ignored"]


def test_an_order_line_refunded_twice_in_one_note(tmp_path: Path) -> None:
    row = "1,CN1,2,SO2,W2,2026-01-01T00:00:00,GBP,,90001,TEE,1,5.00,0.00,10.00"
    [p] = read_credit_notes(write(tmp_path, "c.csv", f"{HEADER}\n{row}\n{row}\n"))
    assert reasons(p) == ["sorder_item_id 90001: refunded on two rows of one credit note"]


def test_a_short_row_makes_the_note_unusable(tmp_path: Path) -> None:
    [p] = read_credit_notes(write(tmp_path, "c.csv", HEADER + "\n1,CN1,2,SO2,W2,2026-01-01T00:00:00,GBP,,90001\n"))
    assert p.record is None
    assert "line 2: 9 cells, the header has 14" in reasons(p)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    header = "CREDIT_ID,SORDER_ID,ISSUED,CURRENCY,SORDER_ITEM_ID,VALUE,DELIVERY_REFUND"
    path = write(tmp_path, "c.csv", header + "\n1,2,,,,,\n")
    with pytest.raises(DocumentError) as caught:
        read_credit_notes(path)
    assert caught.value.reason.startswith("missing column(s) 'QTY', 'TOTAL'")
    assert caught.value.source == str(path)


def test_invalid_utf8_is_a_document_error(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", HEADER.encode() + b"\n1,CN1,2,SO2,W2,2026-01-01T00:00:00,GBP,Caf\xe9,,,,,0,0\n")
    with pytest.raises(DocumentError, match="not valid utf-8: byte 0xe9"):
        read_credit_notes(path)


def test_a_site_encoding_can_be_declared(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", (HEADER + "\n1,CN1,2,SO2,W2,2026-01-01T00:00:00,GBP,Café,,,,,0.00,0.00\n")
                 .encode("cp1252"))
    [p] = read_credit_notes(path, ColumnMap(encoding="cp1252"))
    assert p.record.reason == "Café"


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_an_empty_file_is_a_document_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(DocumentError, match="empty file"):
        read_credit_notes(write(tmp_path, "c.csv", text))


def test_bom_blank_lines_and_header_case(tmp_path: Path) -> None:
    text = "\ufeff" + HEADER.lower() + "\n\n1,CN1,2,SO2,W2,2026-01-01T00:00:00,GBP,,90001,TEE,1,5.00,0.00,5.00\n\n"
    [p] = read_credit_notes(write(tmp_path, "c.csv", text))
    assert p.problems == [] and p.record.total == Decimal("5.00")


def test_delimiter_is_sniffed_from_the_header(tmp_path: Path) -> None:
    text = HEADER.replace(",", ";") + "\n1;CN1;2;SO2;W2;2026-01-01T00:00:00;GBP;;90001;TEE;1;5.00;0.00;5.00\n"
    [p] = read_credit_notes(write(tmp_path, "report.csv", text))
    assert p.problems == [] and p.record.lines[0].value == Decimal("5.00")


def test_an_unbalanced_quote_rejects_its_row_alone(tmp_path: Path) -> None:
    [bad] = list(read_credit_notes(write(tmp_path, "c.csv", HEADER + '\n1,"CN1,2\n')))
    assert bad.record is None and bad.key is None
    assert "c.csv line 2: unbalanced quote" in reasons(bad)[0]
    assert bad.raw.endswith(b'1,"CN1,2\n')  # the row's bytes are kept, under the header


def test_a_header_that_is_not_delimited_text_is_a_document_error(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="not readable as delimited text"):
        read_credit_notes(write(tmp_path, "c.csv", '"CREDIT_ID' + "\n" * 70))


# -- a site's own report layout, through YAML ----------------------------------------------


def test_site_column_map_reads_a_tsv_with_its_own_headers() -> None:
    columns = load_column_map(FIXTURES / "site_columns.yaml")
    assert columns.credit_note.credit_id == "Credit No" and columns.credit_note.reason is None
    found = notes(FIXTURES / "credit_notes_site.tsv", columns)
    assert list(found) == ["7001", "7002"]
    refund = found["7001"]
    assert refund.problems == []
    n = refund.record
    assert (n.credit_code, n.sorder_id, n.currency, n.reason, n.total) == ("CN7001", 2075, "GBP", "", Decimal("25.99"))
    # The site writes UK dates; they are still London local time, DST rules and all.
    assert n.issued == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert found["7002"].record.issued == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert found["7002"].record.lines == []
    assert refund.raw.startswith(b"Credit No\tCredit Ref\t")


def test_a_column_the_map_names_must_exist(tmp_path: Path) -> None:
    columns = ColumnMap.model_validate({"credit_note": {"reason": "Why"}})
    with pytest.raises(DocumentError, match="missing column\\(s\\) 'Why'"):
        read_credit_notes(FIXTURES / "credit_notes.csv", columns)


def test_an_optional_default_column_may_be_absent(tmp_path: Path) -> None:
    header = HEADER.replace("REASON,", "").replace("CREDIT_CODE,", "")
    [p] = read_credit_notes(write(tmp_path, "c.csv", header + "\n1,2,SO2,W2,2026-01-01T00:00:00,GBP,,,,,0.00,0.00\n"))
    assert p.problems == [] and p.record.reason == "" and p.record.credit_code == ""


def test_a_bad_site_datetime_names_the_format(tmp_path: Path) -> None:
    columns = ColumnMap(datetime_format="%d/%m/%Y %H:%M")
    [p] = read_credit_notes(write(tmp_path, "c.csv", HEADER + "\n1,CN1,2,SO2,W2,2026-01-01,GBP,,,,,,0.00,0.00\n"),
                            columns)
    assert p.record is None
    assert reasons(p) == ["line 2, issued (column 'ISSUED'): not a datetime (%d/%m/%Y %H:%M): '2026-01-01'"]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("credit_note:\n  credit_idd: X\n", "credit_note.credit_idd: Extra inputs are not permitted"),
        ("credit_note:\n  total: null\n", "credit_note.total"),
        ("delimiter: ',,'\n", "delimiter must be one character"),
        ("encoding: klingon\n", "unknown encoding 'klingon'"),
        ("credit_note: [\n", "cannot read"),
    ],
)
def test_bad_column_maps_are_config_errors(tmp_path: Path, yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace(".", "\\.")):
        load_column_map(write(tmp_path, "columns.yaml", yaml_text))


def test_no_column_map_is_the_contract() -> None:
    assert load_column_map(None) == ColumnMap()
    assert ColumnMap().credit_note.wanted()["sorder_item_id"] == "SORDER_ITEM_ID"


# -- customers from a report -------------------------------------------------------------------


def test_customers_grouped_into_companies() -> None:
    found = {p.key: p for p in read_customers(FIXTURES / "customers.csv")}
    assert list(found) == ["1001", "1002", "1004"]
    ada = found["1001"]
    assert ada.problems == []  # the repeated identical row for contact 7001 is one contact
    c = ada.record
    assert isinstance(c, Company)
    assert (c.company_code, c.name, c.mailing_status, c.currency) == ("C001001", "Ada Lovelace", 1, "GBP")
    assert [(k.contact_id, k.forename, k.email, k.email_subscribe) for k in c.contacts] == [
        (7001, "Ada", "ada@example.co.uk", True), (7003, "Byron", "byron@example.co.uk", False)]
    assert reasons(found["1002"]) == ["contacts[contact_id=7002].email: not an email address: 'charles@example'"]
    assert found["1002"].record.contacts[0].email_subscribe is None  # blank: no decision held
    assert reasons(found["1004"]) == ["contacts: none (company_code 'C001004')"]


def test_customers_through_a_site_map(tmp_path: Path) -> None:
    columns = load_column_map(FIXTURES / "site_columns.yaml")
    path = write(tmp_path, "customers.tsv",
                 "Cust ID\tURN\tCONTACT_ID\tE-mail\tTier\n1001\tC001001\t7001\tada@example.co.uk\tGold\n")
    [p] = read_customers(path, columns)
    assert p.problems == []
    assert p.record.additional == {"LOYALTY_TIER": "Gold"}
    assert p.record.contacts[0].email == "ada@example.co.uk"


def test_customer_rows_that_disagree(tmp_path: Path) -> None:
    path = write(tmp_path, "customers.csv",
                 "COMPANY_ID,COMPANY_CODE,COMPANY_NAME,CONTACT_ID,EMAIL\n"
                 "1,C1,Ada,10,a@example.com\n1,C1-NEW,Ada,11,b@example.com\n1,C1,Ada,10,c@example.com\n")
    [p] = read_customers(path)
    assert p.record is not None
    assert reasons(p) == [
        "company_code (column 'COMPANY_CODE') differs between the rows: 'C1' on line(s) 2, 4; 'C1-NEW' on line(s) 3",
        "contact_id 10: on lines 2 and 4 with different values; the first is kept",
    ]


def test_customer_required_columns(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="missing column\\(s\\) 'CONTACT_ID', 'EMAIL'"):
        read_customers(write(tmp_path, "customers.csv", "COMPANY_ID,COMPANY_CODE\n1,C1\n"))


# -- a folder of exports -----------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for source, target in [
        ("companies.xml", "companies_1.xml"), ("companies_problems.xml", "Companies_2.XML"),
        ("customers.csv", "customers.csv"), ("stock_items.xml", "stock_items.xml"),
        ("sales_orders.xml", "sales_orders.xml"), ("order_statuses.xml", "order_status.xml"),
        ("credit_notes.csv", "credit_notes.csv"), ("credit_notes_problems.csv", "credit_notes_2.csv"),
    ]:
        shutil.copy(FIXTURES / source, tmp_path / target)
    (tmp_path / "readme.txt").write_text("not an export")
    return tmp_path


def test_folder_companies_in_name_order_then_reports(folder: Path) -> None:
    keys = [p.key for p in ExportFolder(folder).companies()]
    # companies_1.xml, then Companies_2.XML (names match ignoring case), then customers.csv
    assert keys == ["1001", "1002", "2001", "2002", None, None, "2005", "2006", "1001", "1002", "1004"]


def test_folder_stock_and_credit_notes(folder: Path) -> None:
    export = ExportFolder(folder)
    assert [p.key for p in export.stock_items()] == ["300", "301", "302", "303"]
    assert [p.key for p in export.credit_notes()][:4] == ["5001", "5002", "5003", "5004"]


def test_folder_merges_order_status_into_sales_orders(folder: Path) -> None:
    parsed = list(ExportFolder(folder).sales_orders())
    assert [(p.entity, p.key) for p in parsed] == [
        ("sales_order", "2075"), ("sales_order", "2076"), ("order_status", "SO09999")]
    merged = parsed[0]  # matched by SORDER_CODE: the vendor's status names no internal id
    assert isinstance(merged.record, SalesOrder)
    assert (merged.record.status, merged.record.complete) == ("PartialShip", False)
    assert [i.invoice_code for i in merged.record.invoices] == ["INV106", "INV107"]
    assert merged.record.invoices[0].tracking_url == "https://track.dpd.co.uk/parcels/JD0002211"
    assert merged.problems == []
    assert merged.raw.startswith(b"<SALES_ORDER>") and merged.raw.endswith(b"</ORDER_STATUS>")
    assert b"</SALES_ORDER>\n<!-- ExportOrderStatusEx -->\n<ORDER_STATUS " in merged.raw
    assert parsed[1].record.status is None  # no status exported for it
    # A status whose order is not in the folder is not dropped.
    orphan = parsed[2]
    assert orphan.record is not None
    assert [e.kind for e in orphan.problems] == ["malformed_record", "unmatched_order_status"]


def test_a_broken_file_names_itself(folder: Path) -> None:
    shutil.copy(FIXTURES / "hostile_external_entity.xml", folder / "companies_3.xml")
    with pytest.raises(DocumentError) as caught:
        list(ExportFolder(folder).companies())
    assert caught.value.source == str(folder / "companies_3.xml")
    assert "DTD" in str(caught.value) and "companies_3.xml" in str(caught.value)


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        ExportFolder(tmp_path / "missing")


def test_an_empty_folder_has_nothing(tmp_path: Path) -> None:
    export = ExportFolder(tmp_path)
    assert list(export.companies()) == list(export.sales_orders()) == list(export.credit_notes()) == []


def test_the_documented_column_map_example_loads(tmp_path: Path) -> None:
    import textwrap

    import khaosync.khaos.files as files

    doc = files.__doc__ or ""
    block = doc.split(".. code-block:: yaml", 1)[1].split("\nRequired columns", 1)[0]
    columns = load_column_map(write(tmp_path, "columns.yaml", textwrap.dedent(block)))
    assert columns.datetime_format == "%d/%m/%Y %H:%M"
    assert columns.credit_note.reason is None and columns.credit_note.sorder_item_id == "Order Line ID"
    assert columns.customer.additional == {"LOYALTY_TIER": "Tier"}


def test_line_numbers_are_physical_lines(tmp_path: Path) -> None:
    text = (HEADER + '\n1,CN1,2,SO2,W2,2026-01-01T00:00:00,GBP,"Two\nlines",90001,TEE,1,5.00,0.00,5.00\n'
            "2,CN2,2,SO2,W2,2026-01-01T00:00:00,GBP,,90002,TEE,x,5.00,0.00,5.00\n")
    first, second = read_credit_notes(write(tmp_path, "c.csv", text))
    assert first.record.reason == "Two\nlines"
    assert reasons(second) == ["line 4, qty (column 'QTY'): not a decimal: 'x'"]


def test_a_caller_can_salvage_broken_files(folder: Path) -> None:
    shutil.copy(FIXTURES / "hostile_external_entity.xml", folder / "companies_3.xml")
    seen: list[str] = []

    def forgiving(entity: str, document: bytes):
        seen.append(entity)
        try:
            return list(strict_xml(entity, document))
        except DocumentError as exc:
            return [Parsed(entity, None, document, None, [problem(entity, None, exc.reason)])]

    parsed = list(ExportFolder(folder, read_xml=forgiving).companies())
    assert seen == ["company", "company", "company"]
    assert reasons(parsed[8])[0].startswith("refused: the document declares a DTD")
    assert [p.key for p in ExportFolder(folder, read_xml=forgiving).sales_orders()] == ["2075", "2076", "SO09999"]
