"""A corpus of bad input through pull's real entry point (an export folder, the audit path, which
reads the same documents the SOAP answers carry): for every kind, no exception escapes, the bad
record is named in a typed exception, its bytes are kept, and every good record beside it is
staged exactly as a clean run stages it."""

from __future__ import annotations

from pathlib import Path

import pytest

from khaosync.config import sandbox_profile
from khaosync.stages.pull import FileSource, pull
from khaosync.store import open_store, staging


def company(cid: int, *, name: str = "", email: str = "", currency: str = "GBP", extra: str = "",
            contact_extra: str = "") -> str:
    name = name or f"Customer {cid}"
    email = email or f"c{cid}@example.co.uk"
    return (f"<COMPANY><COMPANY_CODE>C{cid:06d}</COMPANY_CODE><COMPANY_NAME>{name}</COMPANY_NAME>"
            f"<COMPANY_CLASS>Retail</COMPANY_CLASS><DATE_CREATED>01/03/2025</DATE_CREATED><COMPANY_ID>{cid}</COMPANY_ID>"
            f"<MAILING_STATUS>1</MAILING_STATUS><CURRENCY_CODE>{currency}</CURRENCY_CODE>{extra}<ADDRESSES><ADDRESS>"
            f"<ADDR1>1 High St</ADDR1><TOWN>Bath</TOWN><POSTCODE>BA1 1AA</POSTCODE><ADDRTYPE>1</ADDRTYPE>"
            f"<COUNTRY_CODE>GBR</COUNTRY_CODE><ADDRESS_ID>{cid}0</ADDRESS_ID><CONTACTS><CONTACT><FORENAME>Ann</FORENAME>"
            f"<SURNAME>Smith</SURNAME><EMAIL>{email}</EMAIL><EMAILSUBSCRIBE>-1</EMAILSUBSCRIBE><DOB>1980-02-03</DOB>"
            f"<CONTACT_ID>{cid}1</CONTACT_ID>{contact_extra}</CONTACT></CONTACTS></ADDRESS></ADDRESSES></COMPANY>")


def stock(sid: int, *, price: str = "12.50", extra: str = "") -> str:
    return (f"<STOCK_ITEM><STOCK_CODE>SKU{sid}</STOCK_CODE><STOCK_DESC>Item {sid}</STOCK_DESC>"
            f"<SELL_PRICE>{price}</SELL_PRICE><VAT_RATE>20</VAT_RATE><STOCK_TYPE>Mugs</STOCK_TYPE>"
            f"<STOCK_ID>{sid}</STOCK_ID><DELETED>0</DELETED>{extra}</STOCK_ITEM>")


def order(oid: int, *, qty: str = "1", date: str = "2026-10-01T10:00:00", extra: str = "") -> str:
    return (f"<SALES_ORDER><CUSTOMER_DETAIL><COMPANY_ID>1</COMPANY_ID></CUSTOMER_DETAIL><ORDER_HEADER>"
            f"<SORDER_ID>{oid}</SORDER_ID><SORDER_CODE>SO{oid:05d}</SORDER_CODE><ORDER_DATE>{date}</ORDER_DATE>"
            f"<ORDER_AMOUNT>{int(qty) * 10 + 0:.2f}</ORDER_AMOUNT><ORDER_CURRENCY_CODE>GBP</ORDER_CURRENCY_CODE>"
            f"{extra}</ORDER_HEADER><ORDER_ITEMS><ORDER_ITEM><SORDER_ITEM_ID>{oid}1</SORDER_ITEM_ID>"
            f"<STOCK_ID>1</STOCK_ID><ORDER_QTY>{qty}</ORDER_QTY><PRICE_GRS>10.00</PRICE_GRS></ORDER_ITEM></ORDER_ITEMS>"
            f"</SALES_ORDER>")


def status(code: str, *, extra: str = "", attrs: str = "") -> str:
    return (f'<ORDER_STATUS SORDER_CODE="{code}" ASSOCIATED_REF=""{attrs}><CURRENCY_CODE>GBP</CURRENCY_CODE>'
            f"<COMPLETE>0</COMPLETE>{extra}</ORDER_STATUS>")


CSV_HEADER = ("CREDIT_ID,CREDIT_CODE,SORDER_ID,SORDER_CODE,ASSOCIATED_REF,ISSUED,CURRENCY,REASON,SORDER_ITEM_ID,"
              "STOCK_CODE,QTY,VALUE,DELIVERY_REFUND,TOTAL")


def note(cid: int, *, qty: str = "1", currency: str = "GBP", reason: str = "Faulty") -> str:
    return f"{cid},CR{cid},{cid},SO{cid:05d},,2026-10-05T10:00:00,{currency},{reason},{cid}1,SKU1,{qty},5.00,0.00,5.00"


GOOD = {
    "company": ("companies_1.xml", "COMPANYS", [company(1), company(2), company(3)]),
    "stock_item": ("stock_1.xml", "STOCK_ITEMS", [stock(1), stock(2), stock(3)]),
    "sales_order": ("sales_orders_1.xml", "SALES_ORDERS", [order(1), order(2), order(3)]),
    "credit_note": ("credit_notes_1.csv", None, [note(1), note(2), note(3)]),
}
CLI = {"company": "customers", "stock_item": "stock", "sales_order": "orders", "credit_note": "credit-notes"}


def write(folder: Path, entity: str, middle: str | bytes | None = None, *, whole: bytes | None = None) -> None:
    name, root, records = GOOD[entity]
    if whole is not None:
        (folder / name).write_bytes(whole)
        return
    parts = [records[0], middle if middle is not None else records[1], records[2]]
    if root is None:
        text = "\n".join([CSV_HEADER, *parts]) + "\n"
    else:
        text = f"<{root}>" + "".join(p if isinstance(p, str) else p.decode("latin-1") for p in parts) + f"</{root}>"
    data = text.encode("utf-8") if not isinstance(middle, bytes) else text.encode("latin-1")
    (folder / name).write_bytes(data)


def run(folder: Path, state: Path, entity: str):
    profile = sandbox_profile(state=str(state))
    with open_store(profile.state) as store:
        return pull(store, profile, FileSource(folder), entities=[CLI[entity]])


def snapshot(state: Path, entity: str) -> dict[str, tuple[str, bytes]]:
    with open_store(str(state), write=False) as store:
        return {r.key: (r.content_hash, r.raw) for r in staging.iter_current(store.conn, entity)}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, dict]:
    """What a clean folder stages, per entity: the baseline every case's good records must equal."""
    out = {}
    for entity in GOOD:
        root = tmp_path_factory.mktemp(f"clean-{entity}")
        (root / "x").mkdir()
        write(root / "x", entity)
        run(root / "x", root / "state.db", entity)
        out[entity] = snapshot(root / "state.db", entity)
    return out


LONG = "x" * 2_000_000
# (id, entity, the bad record in the middle of a good file, the key it should be named by, a byte string to find kept)
RECORD_CASES = [
    ("unclosed-tag", "company", company(2).replace("</COMPANY_NAME>", ""), "2", b"Customer 2"),
    ("bare-ampersand", "company", company(2, name="Smith & Sons"), "2", b"Smith & Sons"),
    ("undefined-entity", "company", company(2, name="&lol9;"), "2", b"&lol9;"),
    ("invalid-utf8", "company", company(2, name="Caf\udcff").encode("utf-8", "surrogateescape"), "2", b"Caf\xff"),
    ("nul-byte", "company", company(2, name="Nu\x00ll"), "2", b"Nu"),
    ("missing-id", "company", company(2).replace("<COMPANY_ID>2</COMPANY_ID>", ""), None, b"C000002"),
    ("text-id", "company", company(2).replace("<COMPANY_ID>2</COMPANY_ID>", "<COMPANY_ID>A2</COMPANY_ID>"), None,
     b"<COMPANY_ID>A2</COMPANY_ID>"),
    ("negative-id", "company", company(2).replace("<COMPANY_ID>2</COMPANY_ID>", "<COMPANY_ID>-2</COMPANY_ID>"), None,
     b"<COMPANY_ID>-2</COMPANY_ID>"),
    ("bad-email", "company", company(2, email="not an email"), "2", b"not an email"),
    ("unknown-currency", "company", company(2, currency="XXY"), "2", b"XXY"),
    ("text-mailing-status", "company", company(2).replace("<MAILING_STATUS>1", "<MAILING_STATUS>yes"), "2", b"yes"),
    ("bad-emailsubscribe", "company", company(2).replace("<EMAILSUBSCRIBE>-1", "<EMAILSUBSCRIBE>Y"), "2",
     b"<EMAILSUBSCRIBE>Y"),
    ("bad-dob", "company", company(2).replace("1980-02-03", "1980-13-45"), "2", b"1980-13-45"),
    ("bad-date-created", "company", company(2).replace("01/03/2025", "31/02/2025"), "2", b"31/02/2025"),
    ("oversized-name", "company", company(2, name=LONG), "2", b"x" * 100_000),
    ("no-contacts", "company", company(2).replace(company(2)[company(2).index("<CONTACTS>"):company(2).index(
        "</CONTACTS>") + 11], ""), "2", b"C000002"),
    ("unknown-record-element", "company", company(2).replace("<COMPANY>", "<CUSTOMER>").replace("</COMPANY>",
                                                                                              "</CUSTOMER>"),
     None, b"<CUSTOMER>"),
    ("duplicate-different", "company", company(1, name="Another name"), "1", b"Another name"),
    ("bad-price", "stock_item", stock(2, price="12,50"), "2", b"12,50"),
    ("negative-price-text", "stock_item", stock(2, price="-"), "2", b"<SELL_PRICE>-</SELL_PRICE>"),
    ("bad-deleted-flag", "stock_item", stock(2, extra="<WEB>maybe</WEB>"), "2", b"maybe"),
    ("scs-child-without-id", "stock_item", stock(2, extra="<SCS><HEADING LEVEL=\"1\">Size</HEADING><STYLE>"
                                                        "<DESCRIPTION>M</DESCRIPTION><SCS_ITEM><STOCK_CODE>SKU2-M"
                                                        "</STOCK_CODE></SCS_ITEM></STYLE></SCS>"),
     None, b"SKU2-M"),
    ("negative-quantity", "sales_order", order(2, qty="-3"), "2", b"-3"),
    ("missing-order-date", "sales_order", order(2, date="1899-12-31T00:00:00"), "2", b"1899-12-31"),
    ("bad-order-date", "sales_order", order(2, date="2026-02-30T10:00:00"), "2", b"2026-02-30"),
    ("bad-amount", "sales_order", order(2).replace("<ORDER_AMOUNT>10.00", "<ORDER_AMOUNT>ten"), "2", b"ten"),
    ("csv-unbalanced-quote", "credit_note", note(2, reason='"never closed'), None, b"never closed"),
    ("csv-oversized-cell", "credit_note", note(2, reason="y" * 200_000), None, b"y" * 1000),
    ("csv-negative-qty", "credit_note", note(2, qty="-2"), "2", b"-2"),
    ("csv-unknown-currency", "credit_note", note(2, currency="QQQ"), "2", b"QQQ"),
    ("csv-text-qty", "credit_note", note(2, qty="two"), "2", b"two"),
    ("csv-short-row", "credit_note", "2,CR2,2", "2", b"CR2"),
]


@pytest.mark.parametrize("case, entity, middle, key, kept", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_a_bad_record_costs_only_itself(tmp_path, clean, case, entity, middle, key, kept):
    folder = tmp_path / "exports"
    folder.mkdir()
    write(folder, entity, middle)
    run(folder, tmp_path / "state.db", entity)
    got = snapshot(tmp_path / "state.db", entity)
    for good in ("1", "3"):  # the records either side are staged exactly as a clean run stages them
        if not (case == "duplicate-different" and good == "1"):
            assert got[good] == clean[entity][good], (case, good)
    with open_store(str(tmp_path / "state.db"), write=False) as store:
        found = store.exceptions()
        payloads = [bytes(r[0]) for r in store.conn.execute("SELECT raw FROM rejected_payload")]
    staged_raw = [raw for _, raw in got.values()]
    assert any(kept in raw for raw in payloads + staged_raw), f"{case}: the bad bytes are not kept"
    assert found, f"{case}: no exception recorded"
    assert all(e.stage == "pull" and e.type in ("malformed_record", "duplicate_in_response") for e in found)
    if key is not None:
        assert any(e.record_key == key for e in found), f"{case}: no exception names {entity} {key}"


WHOLE_CASES = [
    ("random-bytes", "company", bytes(range(256)) * 4),
    ("empty-file", "company", b""),
    ("wrong-root", "company", b"<STOCK_ITEMS>" + stock(1).encode() + b"</STOCK_ITEMS>"),
    ("billion-laughs", "company", b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
                                  b'"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><COMPANYS>&lol2;</COMPANYS>'),
    ("external-entity", "company", b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                                   b"<COMPANYS><COMPANY><COMPANY_ID>9</COMPANY_ID><COMPANY_NAME>&x;</COMPANY_NAME>"
                                   b"</COMPANY></COMPANYS>"),
    ("truncated", "company", ("<COMPANYS>" + company(1) + company(2))[:-40].encode()),
    ("csv-missing-column", "credit_note", b"CREDIT_ID,TOTAL\n1,5.00\n"),
    ("csv-invalid-utf8", "credit_note", (CSV_HEADER + "\n").encode() + b"1,CR1,1,SO1,,x,GBP,\xff\xfe,1,S,1,1,0,1\n"),
    ("csv-only-a-header", "credit_note", (CSV_HEADER + "\n").encode()),
]


@pytest.mark.parametrize("case, entity, data", WHOLE_CASES, ids=[c[0] for c in WHOLE_CASES])
def test_a_bad_file_is_kept_and_named_and_the_other_files_are_read(tmp_path, clean, case, entity, data):
    folder = tmp_path / "exports"
    folder.mkdir()
    write(folder, entity)  # the good file
    name = GOOD[entity][0].replace("_1.", "_2.")
    (folder / name).write_bytes(data)
    result = run(folder, tmp_path / "state.db", entity)
    got = snapshot(tmp_path / "state.db", entity)
    assert {k: v for k, v in got.items() if k in clean[entity]} == clean[entity]  # the good file, as cleanly
    # A piece of the bad file that still names its record is kept raw (never parsed), nothing more.
    assert all(digest.startswith("raw:") for k, (digest, _) in got.items() if k not in clean[entity])
    if case in ("csv-only-a-header", "truncated"):
        # Nothing, or the record before the cut, is in it: a truncated file keeps what it still holds.
        if case == "truncated":
            with open_store(str(tmp_path / "state.db"), write=False) as store:
                assert store.conn.execute("SELECT count(*) FROM rejected_payload").fetchone()[0] >= 1
        return
    with open_store(str(tmp_path / "state.db"), write=False) as store:
        payloads = [bytes(r[0]) for r in store.conn.execute("SELECT raw FROM rejected_payload")]
        reasons = [r[0] for r in store.conn.execute("SELECT reason FROM rejected_payload")]
    assert result.entities[CLI[entity]].rejected >= 1, case
    assert data[:60] in b"".join(payloads) or any(name in r for r in reasons), f"{case}: neither kept nor named"
    assert b"root:" not in b"".join(payloads)  # an external entity is never expanded


class _Site:
    """A KC web service whose ExportCompany / ExportStock answer is the document under test (the
    same bad record, now inside a SOAP answer)."""

    def __init__(self, entity: str, document: bytes):
        self.entity = entity
        self.document = document
        self.last_server_time = None

    def get_company_list(self, since):
        return ["C000001", "C000002", "C000003"]

    def export_company(self, codes):
        return self.document

    def get_stock_list(self, since):
        return [("SKU1", None), ("SKU2", None), ("SKU3", None)]

    def export_stock(self, codes):
        return self.document

    def export_stock_status(self, codes):
        return b"<STOCK_STATUS SITE=\"Main\"/>"


def soap_run(tmp_path: Path, entity: str, document: bytes):
    profile = sandbox_profile(state=str(tmp_path / "soap.db"))
    profile = profile.model_copy(update={"pull": profile.pull.model_copy(update={"stock_status": "changed"})})
    from khaosync.stages.pull import SoapSource

    with open_store(profile.state) as store:
        return pull(store, profile, SoapSource(_Site(entity, document), profile, None), entities=[CLI[entity]])


SOAP_CASES = [c for c in RECORD_CASES if c[1] in ("company", "stock_item")]


@pytest.mark.parametrize("case, entity, middle, key, kept", SOAP_CASES, ids=[c[0] for c in SOAP_CASES])
def test_a_bad_record_in_a_soap_answer_costs_only_itself(tmp_path, case, entity, middle, key, kept):
    """The same corpus inside ExportCompany / ExportStock answers: the good records beside the
    bad one are staged exactly as from a clean answer."""
    folder = tmp_path / "x"
    folder.mkdir()
    write(folder, entity)  # the clean answer, as a file, to make the document bytes
    clean_doc = (folder / GOOD[entity][0]).read_bytes()
    write(folder, entity, middle)
    bad_doc = (folder / GOOD[entity][0]).read_bytes()
    (tmp_path / "clean").mkdir()
    soap_run(tmp_path / "clean", entity, clean_doc)
    soap_run(tmp_path, entity, bad_doc)
    clean = snapshot(tmp_path / "clean" / "soap.db", entity)
    got = snapshot(tmp_path / "soap.db", entity)
    for good in ("1", "3"):
        if not (case == "duplicate-different" and good == "1"):
            assert got[good] == clean[good], (case, good)
    with open_store(str(tmp_path / "soap.db"), write=False) as store:
        found = store.exceptions()
        payloads = [bytes(r[0]) for r in store.conn.execute("SELECT raw FROM rejected_payload")]
    assert any(kept in raw for raw in payloads + [raw for _, raw in got.values()]), case
    assert found and (key is None or any(e.record_key == key for e in found)), case
