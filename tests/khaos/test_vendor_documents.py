"""Documents in Khaos Control's own shapes parse into the right records.

The fixtures in ``fixtures/vendor/`` follow the vendor's Web Integration Pack examples
(``KSDXMLCustomer.xml``, ``KSDXMLStock.xml``, ``KSDXMLStockStatus.xml``,
``KSDXMLOrderStatusEx.xml``): their element names, nesting, attributes, date formats, BOMs and
declarations, and their empty elements, filled with values of our own. docs/khaos-documents.md
says, per field, which sample shows it and what khaosync does with it.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from khaosync.khaos.files import ExportFolder
from khaosync.khaos.models import (
    Address,
    Box,
    Cancellation,
    Company,
    OrderStatus,
    Scs,
    StockItem,
    StockStatus,
)
from khaosync.khaos.parse import (
    Parsed,
    parse_companies,
    parse_order_statuses,
    parse_stock_items,
    parse_stock_statuses,
)

VENDOR = Path(__file__).parent / "fixtures" / "vendor"


def document(name: str) -> bytes:
    return (VENDOR / name).read_bytes()


def by_key(parsed: list[Parsed]) -> dict[str | None, Parsed]:
    found = {p.key: p for p in parsed}
    assert len(found) == len(parsed), f"repeated keys: {[p.key for p in parsed]}"
    return found


def clean(parsed: list[Parsed]) -> None:
    """Every record usable, none with a problem: these documents are what a good site sends."""
    troubled = {p.key: [e.reason for e in p.problems] for p in parsed if not p.ok}
    assert troubled == {}


# -- the documents as the vendor writes them -----------------------------------------------------------


@pytest.mark.parametrize(("name", "bom", "declaration"), [
    ("companies.xml", False, b'<?xml version="1.0"?>'),
    ("stock_scs_tree.xml", True, b'<?xml version="1.0" encoding="utf-8"?>'),
    ("stock_scs_separate.xml", True, b'<?xml version="1.0" encoding="utf-8"?>'),
    ("stock_status.xml", False, b'<?xml version="1.0"?>'),
    ("order_statuses.xml", True, b'<?xml version="1.0"?>'),
])
def test_fixtures_open_as_the_vendor_samples_do(name: str, bom: bool, declaration: bytes) -> None:
    # A parser that trips on a BOM or a declaration without an encoding fails here first.
    raw = document(name)
    assert raw.startswith(b"\xef\xbb\xbf") is bom
    assert raw.removeprefix(b"\xef\xbb\xbf").startswith(declaration)


# -- ExportCompany: contacts inside addresses ----------------------------------------------------------


def companies() -> dict[str | None, Parsed]:
    return by_key(list(parse_companies(document("companies.xml"))))


def test_companies_parse_cleanly_in_document_order() -> None:
    parsed = list(parse_companies(document("companies.xml")))
    assert [(p.entity, p.key) for p in parsed] == [("company", "20417"), ("company", "20502"), ("company", "20611")]
    clean(parsed)


def test_company_header_fields() -> None:
    c = companies()["20417"].record
    assert isinstance(c, Company)
    assert (c.company_id, c.company_code, c.name, c.other_ref) == (20417, "CUS00417", "Harriet Pemberton", "100417")
    assert (c.company_class, c.status, c.web_user, c.currency) == (
        "Retail", "Active", "harriet.pemberton@btinternet.com", "GBP")
    assert c.mailing_status == 1
    # DATE_CREATED is London local time: 09:15 BST is 08:15 UTC.
    assert c.date_created == datetime(2023, 7, 2, 8, 15, tzinfo=UTC)
    assert c.last_updated is None  # the vendor's document has no LAST_UPDATED
    # ADDITIONAL NAME= are the user-defined fields; EMAIL_OPTION is not one of them.
    assert c.additional == {"Loyalty Tier": "Gold", "Preferred Store": "Harrogate"}


def test_mailing_status_is_the_sites_id_as_sent() -> None:
    statuses = {key: p.record.mailing_status for key, p in companies().items()}
    assert statuses == {"20417": 1, "20502": 3, "20611": 6}


def test_addresses_with_their_types() -> None:
    invoice, delivery = companies()["20417"].record.addresses
    assert invoice == Address(
        address_id=41870, organisation="", addr1="14 Rosebery Avenue", addr2="", addr3="", town="Harrogate",
        county="North Yorkshire", postcode="HG1 2LP", country="United Kingdom", country_code="GBR",
        email="harriet.pemberton@btinternet.com", tel="01423 566210", addr_type="Invoice", inactive=False)
    assert delivery == Address(
        address_id=41871, organisation="Pemberton & Daughters Ltd", addr1="Unit 3, Station Parade",
        addr2="Wellington Street", addr3="", town="Leeds", county="West Yorkshire", postcode="LS1 4DY",
        country="United Kingdom", country_code="GBR", email="", tel="0113 496 0318", addr_type="Delivery",
        inactive=False)


def test_country_code_is_kept_as_kc_holds_it() -> None:
    # KC holds alpha-3 on the sites seen; a blank COUNTRY beside it stays blank, not guessed.
    [shop] = companies()["20502"].record.addresses
    assert (shop.country, shop.country_code) == ("", "GBR")


def contact_fields(contact) -> dict:
    # MAILING_FLAG is in no vendor document: what a parser makes of its absence is not ours to fix.
    return contact.model_dump(exclude={"mailing_flag"})


def test_contacts_are_flat_on_the_company_and_remember_their_address() -> None:
    harriet, tom = companies()["20417"].record.contacts
    assert contact_fields(harriet) == {
        "contact_id": 30881, "address_id": 41870, "title": "Mrs", "forename": "Harriet", "surname": "Pemberton",
        "email": "harriet.pemberton@btinternet.com", "mobile": "07700 900412", "tel": "01423 566210",
        "dob": date(1979, 4, 23), "email_subscribe": True, "inactive": False,
    }
    assert contact_fields(tom) == {
        "contact_id": 30882, "address_id": 41871, "title": "Mr", "forename": "Tom", "surname": "Pemberton",
        "email": "tom@pembertondaughters.co.uk", "mobile": "", "tel": "0113 496 0318", "dob": None,
        "email_subscribe": False, "inactive": False,
    }


def test_two_contacts_in_one_address() -> None:
    bethan, owen = companies()["20502"].record.contacts
    assert (bethan.contact_id, bethan.address_id, bethan.email_subscribe, bethan.inactive) == (
        31140, 42015, True, False)
    # A blank EMAILSUBSCRIBE is no decision held, not "no"; INACTIVE -1 is an inactive contact.
    assert (owen.contact_id, owen.address_id, owen.email_subscribe, owen.inactive) == (31141, 42015, None, True)
    assert (owen.forename, owen.surname, owen.email) == ("Owen", "Price", "owen@oldbakerygifts.co.uk")


def test_non_ascii_names_survive() -> None:
    zoe = companies()["20611"].record
    assert zoe.name == "Zoë Brontë-Hughes"
    [contact] = zoe.contacts
    assert (contact.forename, contact.surname, contact.address_id) == ("Zoë", "Brontë-Hughes", 42233)
    # Subscribed at contact level, "do not use" (6) at company level: both are kept for the mapping.
    assert (contact.email_subscribe, zoe.mailing_status) == (True, 6)
    assert zoe.date_created == datetime(2026, 11, 28, 19, 3, 44, tzinfo=UTC)  # GMT: no shift


# -- ExportStock: SCS as a tree -------------------------------------------------------------------------


CHILDREN = ["FLN-SHIRT-M-RED", "FLN-SHIRT-M-NVY", "FLN-SHIRT-L-RED", "FLN-SHIRT-L-NVY"]


def tree() -> list[Parsed]:
    return list(parse_stock_items(document("stock_scs_tree.xml")))


def test_tree_mode_gives_one_record_per_parent_and_per_scs_item() -> None:
    parsed = tree()
    assert [(p.entity, p.key) for p in parsed] == [
        ("stock_item", "7100"), ("stock_item", "7101"), ("stock_item", "7102"), ("stock_item", "7103"),
        ("stock_item", "7104"), ("stock_item", "6250"), ("stock_item", "5980")]
    clean(parsed)
    assert all(isinstance(p.record, StockItem) for p in parsed)


def test_scs_parent_lists_its_variants() -> None:
    parent = by_key(tree())["7100"].record
    assert (parent.stock_id, parent.stock_code, parent.other_ref) == (7100, "FLN-SHIRT", "100710")
    assert parent.variant_codes == CHILDREN
    assert (parent.parent_id, parent.parent_code, parent.scs, parent.is_variant) == (None, None, None, False)
    assert (parent.description, parent.web_teaser) == (
        "Brushed Cotton Flannel Shirt", "Our winter favourite, now in two new colours")
    assert parent.long_description.startswith("Soft brushed cotton flannel")
    assert (parent.sell_price, parent.sell_price_web, parent.sell_price_is_net, parent.vat_rate) == (
        Decimal("39.00"), Decimal("35.00"), False, Decimal("20"))
    assert str(parent.sell_price) == "39.00"


def test_scs_children_point_back_to_their_parent() -> None:
    found = by_key(tree())
    children = [found[key].record for key in ("7101", "7102", "7103", "7104")]
    assert [c.stock_code for c in children] == CHILDREN
    assert {(c.parent_id, c.parent_code) for c in children} == {(7100, "FLN-SHIRT")}
    assert all(c.is_variant and c.variant_codes == [] for c in children)
    assert [c.other_ref for c in children] == ["100711", "100712", "100713", "100714"]
    assert [c.description for c in children] == [
        "Brushed Cotton Flannel Shirt M Red", "Brushed Cotton Flannel Shirt M Navy",
        "Brushed Cotton Flannel Shirt L Red", "Brushed Cotton Flannel Shirt L Navy"]
    assert [c.sell_price for c in children] == [Decimal("39.00"), Decimal("39.00"), Decimal("39.00"),
                                                Decimal("41.00")]
    assert [c.sell_price_web for c in children] == [None] * 4  # blank SELL_PRICE_WEB: no web override
    assert [c.vat_rate for c in children] == [Decimal("20")] * 4


def test_scs_levels_come_from_the_headings() -> None:
    found = by_key(tree())
    assert found["7101"].record.scs == Scs(size="M", colour="Red", style="", levels={"Size": "M", "Colour": "Red"})
    assert found["7104"].record.scs == Scs(size="L", colour="Navy", style="",
                                           levels={"Size": "L", "Colour": "Navy"})
    assert list(found["7104"].record.scs.levels) == ["Size", "Colour"]  # in heading order


def test_a_deleted_variant_is_kept_and_says_so() -> None:
    found = by_key(tree())
    gone = found["7103"].record
    assert (gone.deleted, gone.web, gone.discontinued) == (True, False, True)
    live = found["7101"].record
    assert (live.deleted, live.web, live.discontinued) == (False, True, False)


def test_variant_stock_types_are_text() -> None:
    child = by_key(tree())["7102"].record
    assert (child.stock_top_type, child.stock_type, child.stock_mid_type, child.stock_sub_type) == (
        "Menswear", "Shirts", "Casual Shirts", "Flannel")


def test_plain_item_with_four_type_levels() -> None:
    mug = by_key(tree())["6250"].record
    assert (mug.stock_code, mug.other_ref, mug.description, mug.manufacturer) == (
        "CER-MUG-SAGE", "AW-MUG-118", "Stoneware Mug, Sage Glaze", "Ashby Pottery")
    assert (mug.stock_top_type, mug.stock_type, mug.stock_type_id, mug.stock_mid_type, mug.stock_sub_type) == (
        "Homeware", "Kitchen & Dining", "38", "Drinkware", "Mugs")
    assert (mug.deleted, mug.web, mug.discontinued) == (False, True, False)
    assert (mug.sell_price, mug.sell_price_web) == (Decimal("14.50"), None)
    assert mug.options == {"Gift Wrap Available": "-1", "Fragile": "-1"}
    assert mug.user_defined == {"Capacity": "350ml", "Dishwasher Safe": "Yes"}
    assert mug.barcodes == ["5060123462506", "AWP-118-SG"]
    assert (mug.parent_id, mug.parent_code, mug.variant_codes, mug.scs) == (None, None, [], None)


def test_three_level_item_leaves_the_mid_type_blank() -> None:
    # "Where stock items are categorised to only three layers, levels 1, 2 and 4 will be used."
    candle = by_key(tree())["5980"].record
    assert (candle.stock_top_type, candle.stock_type, candle.stock_type_id, candle.stock_mid_type,
            candle.stock_sub_type) == ("Homeware", "Candles", "36", "", "Scented")
    assert (candle.description, candle.manufacturer, candle.other_ref) == (
        "Fig & Cassis Candle, Large", "Wick & Wax Co.", "")
    assert (candle.deleted, candle.web, candle.discontinued) == (True, False, True)


def test_each_record_keeps_its_own_bytes() -> None:
    found = by_key(tree())
    child_raw = found["7101"].raw
    assert child_raw.startswith(b"<SCS_ITEM>") and b"FLN-SHIRT-M-RED" in child_raw
    assert b"FLN-SHIRT-M-NVY" not in child_raw
    assert found["7100"].raw.startswith(b"<STOCK_ITEM>")


# -- ExportStock: SCS children exported as separate items -----------------------------------------------


def test_separate_mode_items_are_not_linked_by_guesswork() -> None:
    # Separate mode has no link in the document: the parent comes from GetStockList's ParentCode,
    # never from a code that happens to start like another one.
    parsed = list(parse_stock_items(document("stock_scs_separate.xml")))
    assert [p.key for p in parsed] == ["7100", "7101", "7102", "7103", "7104"]
    clean(parsed)
    records = [p.record for p in parsed]
    assert [r.stock_code for r in records] == ["FLN-SHIRT", *CHILDREN]
    assert all((r.parent_id, r.parent_code, r.variant_codes, r.scs) == (None, None, [], None) for r in records)
    assert not any(r.is_variant for r in records)


def test_separate_mode_items_carry_their_own_fields() -> None:
    found = by_key(list(parse_stock_items(document("stock_scs_separate.xml"))))
    navy = found["7104"].record
    assert (navy.stock_code, navy.other_ref, navy.description, navy.sell_price) == (
        "FLN-SHIRT-L-NVY", "100714", "Brushed Cotton Flannel Shirt L Navy", Decimal("41.00"))
    assert navy.barcodes == ["50601234" + "7104"]
    red = found["7103"].record
    assert (red.deleted, red.web, red.discontinued) == (True, False, True)


def test_both_modes_agree_on_what_they_share() -> None:
    linked = by_key(tree())
    separate = by_key(list(parse_stock_items(document("stock_scs_separate.xml"))))
    for key in ("7101", "7102", "7103", "7104"):
        a, b = linked[key].record, separate[key].record
        assert (a.stock_code, a.other_ref, a.description, a.sell_price, a.deleted, a.web, a.discontinued) == (
            b.stock_code, b.other_ref, b.description, b.sell_price, b.deleted, b.web, b.discontinued)


# -- ExportStockStatus ------------------------------------------------------------------------------------


def stock_statuses() -> list[Parsed]:
    return list(parse_stock_statuses(document("stock_status.xml")))


def test_stock_statuses_keyed_by_code_at_the_documents_site() -> None:
    parsed = stock_statuses()
    assert [(p.entity, p.key) for p in parsed] == [
        ("stock_status", "FLN-SHIRT-M-RED"), ("stock_status", "FLN-SHIRT-M-NVY"),
        ("stock_status", "FLN-SHIRT-L-NVY"), ("stock_status", "CER-MUG-SAGE"),
        ("stock_status", "FLN-SHIRT-L-RED"), ("stock_status", "GIFT-CARD-25")]
    clean(parsed)
    assert {p.record.site for p in parsed} == {"Harrogate Warehouse"}
    assert [p.record.status for p in parsed] == [0, 1, 2, 3, 4, 5]


def test_a_stock_status_record() -> None:
    red = stock_statuses()[0].record
    assert red == StockStatus(
        stock_code="FLN-SHIRT-M-RED", stock_ref="A7101", site="Harrogate Warehouse",
        description="Brushed Cotton Flannel Shirt M Red", other_ref="", sell_price=Decimal("39.00"),
        level=Decimal("14"), status=0, lead_time=date(2026, 12, 18))


def test_stock_status_ids_are_text_and_other_ref_is_read() -> None:
    found = by_key(stock_statuses())
    assert [found[k].record.stock_ref for k in ("FLN-SHIRT-L-RED", "CER-MUG-SAGE", "GIFT-CARD-25")] == [
        "A7103", "6250", "A0025"]
    mug = found["CER-MUG-SAGE"].record
    assert (mug.other_ref, mug.level, mug.status, mug.lead_time) == ("AW-MUG-118", Decimal("0"), 3, None)
    assert found["GIFT-CARD-25"].record.description == "Gift Card £25"
    assert found["FLN-SHIRT-L-NVY"].record.lead_time == date(2027, 1, 8)


# -- ExportOrderStatusEx ----------------------------------------------------------------------------------


def order_statuses() -> dict[str | None, Parsed]:
    return by_key(list(parse_order_statuses(document("order_statuses.xml"))))


def test_order_statuses_keyed_by_sorder_code() -> None:
    parsed = list(parse_order_statuses(document("order_statuses.xml")))
    assert [(p.entity, p.key) for p in parsed] == [
        ("order_status", "SO00412"), ("order_status", "SO00398"), ("order_status", "SO00420"),
        ("order_status", "SO00433"), ("order_status", "SO00437"), ("order_status", "SO00441")]
    clean(parsed)
    assert all(isinstance(p.record, OrderStatus) for p in parsed)


def test_derived_statuses() -> None:
    statuses = {key: (p.record.status, p.record.complete, p.record.order_type) for key, p in order_statuses().items()}
    assert statuses == {
        "SO00412": ("PartialShip", False, 1),  # one invoice issued, one still picking
        "SO00398": ("Complete", True, 1),
        "SO00420": ("Cancelled", False, 1),
        "SO00433": ("Complete", True, 2),  # a credit note
        "SO00437": ("Shipping", False, 1),  # being shipped, nothing issued yet
        "SO00441": ("Received", False, 1),  # no invoice yet
    }


def test_order_header_fields() -> None:
    s = order_statuses()["SO00412"].record
    assert (s.sorder_code, s.associated_ref) == ("SO00412", "100000871")
    assert (s.company_code, s.company_other_ref, s.company_name) == ("CUS00417", "100417", "Harriet Pemberton")
    assert (s.courier, s.currency) == ("Royal Mail Tracked 48", "GBP")
    # DD/MM/YYYY: 23/10 is the 23rd of October, not a month 23.
    assert (s.date_created, s.delivery_date) == (date(2026, 10, 23), date(2026, 10, 26))
    assert (s.items_total, s.items_net, s.delivery_total, s.delivery_net) == (
        Decimal("117.00"), Decimal("97.50"), Decimal("3.99"), Decimal("3.33"))
    assert s.gross_total == Decimal("120.99")
    assert (s.qty_sold, s.qty_assigned) == (Decimal("3"), Decimal("2"))
    assert s.cancellation is None


def test_an_issued_invoice_with_tracking_and_boxes() -> None:
    issued, _ = order_statuses()["SO00412"].record.invoices
    assert (issued.invoice_code, issued.invoice_id, issued.stage_id, issued.stage_desc) == (
        "INV00388", None, 70, "ISSUED_CURRENT")
    assert (issued.invoice_date, issued.ship_date, issued.issue_date) == (
        date(2026, 10, 24), date(2026, 10, 24), date(2026, 10, 24))
    # The issue date as an instant is London midnight: 24 October 2026 is still BST.
    assert issued.issued == datetime(2026, 10, 23, 23, 0, tzinfo=UTC)
    assert (issued.courier_name, issued.consignment_ref, issued.tracking_url) == (
        "Royal Mail Tracked 48", "TT123456785GB",
        "https://www.royalmail.com/track-your-item#/tracking-results/TT123456785GB")
    assert (issued.qty_sold, issued.qty_sent, issued.moved) == (Decimal("2"), Decimal("2"), False)
    assert issued.boxes == [
        Box(shipped=True, ship_date=date(2026, 10, 24), courier="Royal Mail Tracked 48",
            consignment_ref="TT123456785GB",
            tracking_url="https://www.royalmail.com/track-your-item#/tracking-results/TT123456785GB"),
        Box(shipped=True, ship_date=date(2026, 10, 24), courier="Royal Mail Tracked 48",
            consignment_ref="TT123456799GB",
            tracking_url="https://www.royalmail.com/track-your-item#/tracking-results/TT123456799GB"),
    ]


def test_an_invoice_still_picking_has_blank_dates_and_no_tracking() -> None:
    _, picking = order_statuses()["SO00412"].record.invoices
    assert (picking.invoice_code, picking.stage_id, picking.stage_desc) == ("INV00415", 12, "PRINTPICKING")
    assert (picking.invoice_date, picking.ship_date, picking.issue_date, picking.issued) == (
        date(2026, 11, 2), None, None, None)
    assert (picking.consignment_ref, picking.tracking_url) == ("", "")
    assert (picking.qty_sold, picking.qty_sent, picking.moved, picking.boxes) == (Decimal("1"), Decimal("0"), True, [])


def test_a_box_packed_but_not_shipped() -> None:
    [invoice] = order_statuses()["SO00437"].record.invoices
    assert (invoice.stage_id, invoice.consignment_ref, invoice.ship_date) == (14, "PB4410298731", None)
    [box] = invoice.boxes
    assert (box.shipped, box.ship_date, box.consignment_ref) == (False, None, "PB4410298731")


def test_a_complete_order() -> None:
    s = order_statuses()["SO00398"].record
    [invoice] = s.invoices
    assert (invoice.invoice_code, invoice.stage_id, invoice.issue_date) == ("INV00371", 71, date(2026, 10, 17))
    assert (invoice.courier_name, invoice.consignment_ref) == ("DPD Next Day", "15501234567890")
    assert s.gross_total == Decimal("20.45")


def test_a_cancelled_order_carries_its_cancellation() -> None:
    s = order_statuses()["SO00420"].record
    assert s.cancellation == Cancellation(when=datetime(2026, 11, 20, 0, 0, tzinfo=UTC),
                                          reason="Customer changed mind before despatch", user_name="jwalker")
    [invoice] = s.invoices
    assert (invoice.stage_id, invoice.stage_desc) == (1, "CANCELLED")


def test_a_credit_note_is_order_type_2() -> None:
    note = order_statuses()["SO00433"].record
    assert (note.order_type, note.associated_ref, note.company_code) == (2, "100000871-R1", "CUS00417")
    assert (note.courier, note.invoices) == ("", [])  # no INVOICES element at all
    assert (note.items_total, note.items_net, note.gross_total) == (Decimal("39.00"), Decimal("32.50"),
                                                                   Decimal("39.00"))


def test_an_order_with_no_invoices_yet() -> None:
    s = order_statuses()["SO00441"].record
    assert (s.invoices, s.cancellation, s.qty_assigned) == ([], None, Decimal("0"))
    assert (s.company_name, s.company_other_ref) == ("Zoë Brontë-Hughes", "100611")


def test_a_blank_other_ref_attribute_is_blank() -> None:
    assert order_statuses()["SO00437"].record.company_other_ref == ""


def test_an_order_status_keeps_its_own_bytes_attributes_and_all() -> None:
    found = order_statuses()
    raw = found["SO00412"].raw
    assert raw.startswith(b"<ORDER_STATUS ") and raw.endswith(b"</ORDER_STATUS>")
    for attribute in (b'SORDER_CODE="SO00412"', b'INVOICE_CODE="INV00388"', b'CONSIGNMENT_REF="TT123456799GB"',
                      b'INVOICE_STAGE_DESC="PRINTPICKING"'):
        assert attribute in raw
    assert b"SO00398" not in raw
    assert "Zoë".encode() in found["SO00441"].raw


# -- the file source reads the same documents ----------------------------------------------------------


@pytest.fixture
def export_folder(tmp_path: Path) -> Path:
    for name in ("companies.xml", "stock_scs_tree.xml", "order_statuses.xml"):
        shutil.copy(VENDOR / name, tmp_path / name)
    return tmp_path


def test_export_folder_reads_the_vendor_documents(export_folder: Path) -> None:
    export = ExportFolder(export_folder)
    from_folder = list(export.companies())
    assert [p.record for p in from_folder] == [p.record for p in parse_companies(document("companies.xml"))]
    stock = list(export.stock_items())
    assert [p.record for p in stock] == [p.record for p in tree()]
    statuses = list(export.order_statuses())
    assert [p.record for p in statuses] == list(p.record for p in order_statuses().values())
    clean(from_folder + stock + statuses)


def test_a_stock_status_export_beside_stock_is_not_read_as_stock(export_folder: Path) -> None:
    # "stock_status.xml" matches a "stock*.xml" pattern; its STOCK_STATUS root must not be taken
    # for a broken STOCK_ITEMS document, nor its STOCK_ITEMs for stock items.
    shutil.copy(VENDOR / "stock_status.xml", export_folder / "stock_status.xml")
    stock = list(ExportFolder(export_folder).stock_items())
    assert [p.key for p in stock] == [p.key for p in tree()]
    assert {p.entity for p in stock} == {"stock_item"}
