"""Pull's feeds as Khaos Control offers them: order codes walked, statuses re-read, stock levels
swept, SCS children however the site exports them; and bad answers that never cost good records."""

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from khaosync.config import sandbox_profile
from khaosync.khaos.soap import KhaosClient
from khaosync.sandbox.server import SandboxApp
from khaosync.sandbox.world import World
from khaosync.stages.pull import ORDER_CODE_BOOKMARK, FileSource, SoapSource, next_order_code, pull
from khaosync.store import open_store, staging

KEY = "sandbox-key"


def run(tmp_path: Path, sandbox: Path, **kwargs):
    profile = sandbox_profile(state=str(tmp_path / "state.db"), sandbox_path=str(sandbox))
    client = KhaosClient(profile.khaos, transport=httpx.WSGITransport(app=SandboxApp(sandbox, KEY)))
    with open_store(profile.state) as store:
        return pull(store, profile, SoapSource(client, profile, FileSource(sandbox / "exports")), **kwargs)


def staged(tmp_path: Path, entity: str) -> dict[str, dict]:
    with open_store(str(tmp_path / "state.db"), write=False) as store:
        return {r.key: r.parsed for r in staging.iter_current(store.conn, entity) if r.parsed is not None}


def versions(tmp_path: Path, entity: str) -> dict[str, int]:
    with open_store(str(tmp_path / "state.db"), write=False) as store:
        return dict(store.conn.execute(
            "SELECT key, version FROM staged_record WHERE entity = ? AND current = 1", (entity,)).fetchall())


def world_docs(sandbox: Path, entity: str) -> dict[int, dict]:
    world = World(sandbox, create=False)
    try:
        return {d[{"sales_order": "sorder_id", "stock_item": "stock_id", "company": "company_id"}[entity]]: d
                for d in world.iter(entity)}
    finally:
        world.close()


def test_order_codes_are_walked_in_number_order():
    assert next_order_code("SO02075") == "SO02076"
    assert next_order_code("SO99999") == "SO100000"
    with pytest.raises(ValueError, match="does not end in a number"):
        next_order_code("SO-X")


def test_the_walk_finds_every_order_from_the_sites_first_code(tmp_path, sandbox):
    """The sandbox's codes start at SO02001, not at pull.first_order_code SO00001: the walk finds
    the first, stages every order once, and its bookmark is the highest code."""
    result = run(tmp_path, sandbox, entities=["orders"])
    orders = world_docs(sandbox, "sales_order")
    assert set(staged(tmp_path, "sales_order")) | {k for k in versions(tmp_path, "sales_order")} \
        == {str(k) for k in orders}
    with open_store(str(tmp_path / "state.db"), write=False) as store:
        assert staging.get_bookmark(store.conn, ORDER_CODE_BOOKMARK) == max(
            (d["sorder_code"] for d in orders.values()), key=lambda c: int(c[2:]))
    assert result.entities["orders"].new == len(orders)
    again = run(tmp_path, sandbox, entities=["orders"])
    assert again.entities["orders"].new == 0 and again.entities["orders"].changed == 0


def test_a_status_change_alone_makes_a_new_version_of_its_order(tmp_path, sandbox):
    run(tmp_path, sandbox, entities=["orders"])
    before = staged(tmp_path, "sales_order")
    open_order = next(k for k, o in sorted(before.items()) if not o["complete"] and not o["cancelled"]
                      and o["invoices"])
    world = World(sandbox, create=False)
    doc = world.get("sales_order", int(open_order))
    for invoice in doc["invoices"]:
        invoice["stage_id"], invoice["stage_desc"] = 1, "Cancelled"
    doc["cancelled"] = True
    world.put("sales_order", doc)
    world.close()
    result = run(tmp_path, sandbox, entities=["orders"])
    after = staged(tmp_path, "sales_order")
    assert result.entities["orders"].changed == 1
    assert after[open_order]["cancelled"] is True and after[open_order]["status"] == "Cancelled"
    assert after[open_order]["cancellation"]["reason"]
    assert {k for k in after if after[k] != before[k]} == {open_order}


def test_a_staged_form_the_model_no_longer_reads_is_exported_again_and_the_pull_goes_on(tmp_path, sandbox):
    """An open order staged in a form this khaosync's model does not read (an older version
    staged it, or a hand edit): the status refresh exports it again from KC, stages the fresh
    record as a new version, and every other order is refreshed as usual. A stock item in such a
    form gets no stock level (map reports it) and costs nothing else."""
    run(tmp_path, sandbox, entities=["orders", "stock"])
    before = staged(tmp_path, "sales_order")
    open_order = next(k for k, o in sorted(before.items()) if not o["complete"] and not o["cancelled"]
                      and o["lines"])
    item = sorted(staged(tmp_path, "stock_item"))[0]
    with open_store(str(tmp_path / "state.db")) as store:
        for entity, key, edit in (("sales_order", open_order, ("lines", 0, "qty")), ("stock_item", item, ("sell_price",))):
            doc = staging.current(store.conn, entity, key).parsed
            target = doc
            for step in edit[:-1]:
                target = target[step]
            target[edit[-1]] = "many"
            text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
            store.conn.execute("UPDATE staged_record SET parsed = ?, content_hash = ? WHERE entity = ? AND key = ?"
                               " AND current = 1", (text, hashlib.sha256(text.encode()).hexdigest(), entity, key))
    versions_before = versions(tmp_path, "sales_order")
    result = run(tmp_path, sandbox, entities=["stock", "orders"])
    after = staged(tmp_path, "sales_order")
    assert after[open_order] == before[open_order]  # as KC holds it, read again
    assert versions(tmp_path, "sales_order")[open_order] == versions_before[open_order] + 1
    assert {k for k in after if after[k] != before[k]} == set()
    assert result.entities["orders"].changed == 1
    assert staged(tmp_path, "stock_item")[item]["sell_price"] == "many"  # left for map to report


def test_an_unreadable_order_status_never_replaces_the_last_good_state(tmp_path, sandbox):
    """One status record with a bare & must cost only itself: the other orders in the same
    answer keep their state, and the broken one keeps its last good state, with its bytes kept
    and an exception naming it."""
    run(tmp_path, sandbox, entities=["orders"])
    before = staged(tmp_path, "sales_order")
    # A despatched order placed recently enough to be asked again (pull.order_status_lookback_days).
    victim = max(k for k, o in before.items() if o["invoices"] and o["status"] in ("Complete", "PartialShip")
                 and not o["cancelled"])
    code = before[victim]["sorder_code"]
    world = World(sandbox, create=False)
    world.set_raw_override("order_status", int(victim),
                           f'<ORDER_STATUS SORDER_CODE="{code}" ASSOCIATED_REF=""><COURIER>Smith & Sons</COURIER>'
                           f'<COMPLETE>0</COMPLETE></ORDER_STATUS>'.encode())
    world.close()
    versions_before = versions(tmp_path, "sales_order")
    result = run(tmp_path, sandbox, entities=["orders"])
    after = staged(tmp_path, "sales_order")
    assert after == before and versions(tmp_path, "sales_order") == versions_before
    assert result.entities["orders"].rejected >= 1
    with open_store(str(tmp_path / "state.db"), write=False) as store:
        kept = store.conn.execute("SELECT reason, raw FROM rejected_payload WHERE key = ? ORDER BY id DESC",
                                  (victim,)).fetchone()
        assert kept is not None and b"Smith & Sons" in kept[1] and code in kept[0]
        open_ = [e for e in store.exceptions() if e.record_key == victim and e.type == "malformed_record"]
        assert open_


def test_stock_levels_are_swept_and_a_level_change_alone_is_a_new_version(tmp_path, sandbox):
    run(tmp_path, sandbox, entities=["stock"])
    items = staged(tmp_path, "stock_item")
    assert items and all(i["stock_status"] is not None and i["stock_level"] is not None for i in items.values())
    assert {i["stock_status"] for i in items.values()} >= {0, 4}  # some in stock, deleted ones discontinued
    key = next(k for k, i in sorted(items.items()) if i["stock_status"] == 0)
    world = World(sandbox, create=False)
    doc = world.get("stock_item", int(key))
    doc.update(stock_level=0, stock_status=2)  # sold out, more due: not the item's own change
    world.put("stock_item", doc)
    world.close()
    result = run(tmp_path, sandbox, entities=["stock"])
    after = staged(tmp_path, "stock_item")
    assert result.entities["stock"].changed == 1
    assert (after[key]["stock_level"], after[key]["stock_status"]) == ("0", 2)
    assert {k for k in after if after[k] != items[k]} == {key}


@pytest.mark.parametrize("mode", ["tree", "separate"])
def test_scs_children_are_linked_however_the_site_exports_them(tmp_path, sandbox, mode):
    world = World(sandbox, create=False)
    world.set_meta("scs_export", mode)
    world.close()
    run(tmp_path, sandbox, entities=["stock"])
    items = staged(tmp_path, "stock_item")
    truth = world_docs(sandbox, "stock_item")
    children = {k: d for k, d in truth.items() if d["parent_stock_id"] is not None}
    assert children
    for key, doc in children.items():
        assert items[str(key)]["parent_id"] == doc["parent_stock_id"]
        assert items[str(key)]["parent_code"] == doc["parent_code"]
    if mode == "tree":  # the tree names each child under its parent, and the child's place in it
        for key, doc in children.items():
            parent = items[str(doc["parent_stock_id"])]
            assert doc["stock_code"] in parent["variant_codes"]
            assert (items[str(key)]["scs"]["colour"], items[str(key)]["scs"]["size"]) == (
                doc["scs"]["colour"], doc["scs"]["size"])


def test_a_web_password_is_never_kept(tmp_path, sandbox):
    run(tmp_path, sandbox, entities=["customers"])
    with open_store(str(tmp_path / "state.db"), write=False) as store:
        raws = [staging.raw_bytes(raw, encoding) for raw, encoding in store.conn.execute(
            "SELECT raw, raw_encoding FROM staged_record WHERE entity = 'company'")]  # as the ERP sent it
        raws += [bytes(r[0]) for r in store.conn.execute("SELECT raw FROM rejected_payload")]
    assert any(b"<WEB_PASSWORD>***</WEB_PASSWORD>" in r for r in raws)
    assert not any(b"pw-" in r for r in raws)


def test_contacts_are_read_from_inside_their_address(tmp_path, sandbox):
    run(tmp_path, sandbox, entities=["customers"])
    companies = staged(tmp_path, "company")
    truth = world_docs(sandbox, "company")
    with_contacts = [k for k, c in companies.items() if c["contacts"]]
    assert with_contacts
    for key in with_contacts:
        world_contacts = {c["contact_id"] for c in truth[int(key)]["contacts"]}
        assert {c["contact_id"] for c in companies[key]["contacts"]} == world_contacts
        invoice = next(a for a in companies[key]["addresses"] if a["addr_type"] == "Invoice")
        assert {c["address_id"] for c in companies[key]["contacts"]} == {invoice["address_id"]}
        assert invoice["country_code"] in ("GBR", "IRL", "FRA", "DEU", "USA")  # as KC holds it


# -- the export folder: each file on its own, rows salvaged, copies ordered by change ----------


def folder_pull(tmp_path: Path, folder: Path, entities: list[str]):
    profile = sandbox_profile(state=str(tmp_path / "files.db"))
    with open_store(profile.state) as store:
        return pull(store, profile, FileSource(folder), entities=entities)


COMPANY = ('<COMPANY><COMPANY_CODE>{code}</COMPANY_CODE><COMPANY_NAME>{name}</COMPANY_NAME>'
           '<COMPANY_ID>{id}</COMPANY_ID><CURRENCY_CODE>GBP</CURRENCY_CODE>{extra}<ADDRESSES><ADDRESS>'
           '<ADDRTYPE>1</ADDRTYPE><COUNTRY_CODE>GBR</COUNTRY_CODE><ADDRESS_ID>{id}0</ADDRESS_ID><CONTACTS><CONTACT>'
           '<FORENAME>{name}</FORENAME><EMAIL>{code}@example.co.uk</EMAIL><CONTACT_ID>{id}1</CONTACT_ID></CONTACT>'
           '</CONTACTS></ADDRESS></ADDRESSES></COMPANY>')


def company_xml(*companies: dict) -> str:
    return "<COMPANYS>" + "".join(COMPANY.format(extra="", **c) for c in companies) + "</COMPANYS>"


def test_a_broken_export_file_does_not_stop_the_files_after_it(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "companies_1.xml").write_text(company_xml({"code": "A1", "name": "Ann", "id": 1}))
    (folder / "companies_2.xml").write_bytes(b"\x00\x01 not xml at all \xff")
    (folder / "companies_3.xml").write_text(company_xml({"code": "C3", "name": "Cat", "id": 3}))
    result = folder_pull(tmp_path, folder, ["customers"])
    assert set(staged_files(tmp_path, "company")) == {"1", "3"}
    assert result.entities["customers"].rejected == 1


def staged_files(tmp_path: Path, entity: str) -> dict[str, dict]:
    with open_store(str(tmp_path / "files.db"), write=False) as store:
        return {r.key: r.parsed for r in staging.iter_current(store.conn, entity) if r.parsed is not None}


def test_a_utf16_export_is_read_as_its_declaration_says(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    text = '<?xml version="1.0" encoding="UTF-16"?>' + company_xml({"code": "Z1", "name": "Zoë", "id": 5})
    (folder / "companies.xml").write_bytes(text.encode("utf-16"))  # with its BOM, as Windows writes it
    folder_pull(tmp_path, folder, ["customers"])
    assert staged_files(tmp_path, "company")["5"]["name"] == "Zoë"


def test_one_bad_credit_note_row_costs_only_itself(tmp_path, sandbox):
    folder = tmp_path / "exports"
    folder.mkdir()
    lines = (sandbox / "exports" / "credit_notes.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    credit_ids = {row.split(",")[0] for row in rows}
    bad = ['9999001,CN-X,1,SO1,,2026-10-01T10:00:00,GBP,"never closed,1,X,1,1.00,0.00,1.00',
           "9999002,CN-Y,1,SO1,,2026-10-01T10:00:00,GBP," + "x" * 200_000 + ",1,X,1,1.00,0.00,1.00"]
    (folder / "credit_notes.csv").write_text("\n".join([header, rows[0], bad[0], *rows[1:4], bad[1], *rows[4:]]) + "\n")
    result = folder_pull(tmp_path, folder, ["credit-notes"])
    assert set(staged_files(tmp_path, "credit_note")) == credit_ids
    assert result.entities["credit-notes"].rejected == 2
    with open_store(str(tmp_path / "files.db"), write=False) as store:
        reasons = [r[0] for r in store.conn.execute("SELECT reason FROM rejected_payload ORDER BY id")]
        kept = b"".join(bytes(r[0]) for r in store.conn.execute("SELECT raw FROM rejected_payload"))
    assert any("line 3" in r and "quote" in r for r in reasons) and any("field" in r for r in reasons)
    assert b"never closed" in kept and b"x" * 1000 in kept


def test_the_same_record_in_two_files_keeps_the_one_kc_changed_last(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    newer = COMPANY.format(code="B2", name="Newer", id=2, extra="<LAST_UPDATED>2026-10-05T10:00:00</LAST_UPDATED>")
    older = COMPANY.format(code="B2", name="Older", id=2, extra="<LAST_UPDATED>2026-09-01T10:00:00</LAST_UPDATED>")
    (folder / "companies_a.xml").write_text(f"<COMPANYS>{newer}</COMPANYS>")
    (folder / "companies_b.xml").write_text(f"<COMPANYS>{older}</COMPANYS>")  # later by name, older by change
    folder_pull(tmp_path, folder, ["customers"])
    assert staged_files(tmp_path, "company")["2"]["name"] == "Newer"
    with open_store(str(tmp_path / "files.db"), write=False) as store:
        found = [e for e in store.exceptions() if e.type == "conflicting_exports"]
    assert found and "older" in found[0].reason
    assert json.dumps([e.records for e in found]).count("company:2") == 1


class _SequenceSite:
    """A KC site that is only a list of order documents by code (and no statuses)."""

    def __init__(self, orders: dict[str, str]):
        self.orders = orders
        self.last_server_time = None
        self.asked: list[str] = []

    def export_orders(self, code: str) -> bytes:
        self.asked.append(code)
        return f"<SALES_ORDERS>{self.orders.get(code, '')}</SALES_ORDERS>".encode()

    def export_order_status(self, ids: list[str], mapping_type: int = 3) -> bytes:
        return b"<STATUS_LIST/>"


def _order(oid: int, order_type: int = 1) -> str:
    return (f"<SALES_ORDER><CUSTOMER_DETAIL><COMPANY_ID>1</COMPANY_ID></CUSTOMER_DETAIL><ORDER_HEADER>"
            f"<SORDER_ID>{oid}</SORDER_ID><SORDER_CODE>SO{oid:05d}</SORDER_CODE><ORDER_TYPE>{order_type}</ORDER_TYPE>"
            f"<ORDER_DATE>2026-10-01T10:00:00</ORDER_DATE><ORDER_AMOUNT>10.00</ORDER_AMOUNT>"
            f"<ORDER_CURRENCY_CODE>GBP</ORDER_CURRENCY_CODE></ORDER_HEADER><ORDER_ITEMS><ORDER_ITEM>"
            f"<SORDER_ITEM_ID>{oid}1</SORDER_ITEM_ID><ORDER_QTY>1</ORDER_QTY><PRICE_GRS>10.00</PRICE_GRS>"
            f"</ORDER_ITEM></ORDER_ITEMS></SALES_ORDER>")


def test_the_walk_crosses_gaps_keeps_credit_notes_apart_and_resumes_after_the_last_code(tmp_path):
    orders = {f"SO{n:05d}": _order(n) for n in (1, 2, 5, 9)}  # codes 3, 4, 6-8 deleted
    orders["SO00006"] = _order(6, order_type=2)  # a credit note in the sequence
    site = _SequenceSite(orders)
    profile = sandbox_profile(state=str(tmp_path / "state.db"))
    profile = profile.model_copy(update={"pull": profile.pull.model_copy(update={"order_code_gap": 4})})
    with open_store(profile.state) as store:
        result = pull(store, profile, SoapSource(site, profile, None), entities=["orders"])
        assert staging.get_bookmark(store.conn, ORDER_CODE_BOOKMARK) == "SO00009"
        kept = store.conn.execute("SELECT reason FROM rejected_payload").fetchall()
    assert set(staged(tmp_path, "sales_order")) == {"1", "2", "5", "9"}
    assert result.entities["orders"].rejected == 1 and "credit note" in kept[0][0]
    assert site.asked[-4:] == ["SO00010", "SO00011", "SO00012", "SO00013"]  # the gap that ended the walk
    site.orders["SO00011"] = _order(11)  # placed since: found next run, from after the last code found
    site.asked.clear()
    with open_store(profile.state) as store:
        again = pull(store, profile, SoapSource(site, profile, None), entities=["orders"])
    assert site.asked[0] == "SO00010" and again.entities["orders"].new == 1


def test_pull_since_stages_only_orders_placed_from_that_date_and_counts_the_rest(tmp_path, sandbox):
    orders = world_docs(sandbox, "sales_order")
    dates = sorted(d["order_date"] for d in orders.values() if d["order_date"])
    middle = dates[len(dates) // 2]
    from datetime import datetime, timezone
    since = datetime.fromisoformat(middle).replace(tzinfo=timezone.utc)
    result = run(tmp_path, sandbox, entities=["orders"], since=since)
    staged_orders = staged(tmp_path, "sales_order")
    assert staged_orders and all(o.get("order_date") >= since.isoformat().replace("+00:00", "Z")[:10]
                                 for o in staged_orders.values() if o.get("order_date"))
    assert result.entities["orders"].skipped_before_since > 0
    assert result.entities["orders"].skipped_before_since + len(versions(tmp_path, "sales_order")) <= len(orders)


def test_an_unchanged_export_file_is_not_read_again_until_it_changes(tmp_path, sandbox):
    """The credit-note report is exported again every night: a file whose bytes were staged
    already is neither parsed nor hashed again; a changed file is; --full reads them all."""
    folder = tmp_path / "exports"
    folder.mkdir()
    report = (sandbox / "exports" / "credit_notes.csv").read_text()
    (folder / "credit_notes.csv").write_text(report)
    first = folder_pull(tmp_path, folder, ["credit-notes"])
    assert first.entities["credit-notes"].fetched > 0
    again = folder_pull(tmp_path, folder, ["credit-notes"])
    assert (again.entities["credit-notes"].fetched, again.entities["credit-notes"].new) == (0, 0)
    lines = report.splitlines()
    (folder / "credit_notes.csv").write_text("\n".join(lines[:-1]) + "\n")  # a line less: changed
    changed = folder_pull(tmp_path, folder, ["credit-notes"])
    assert changed.entities["credit-notes"].fetched > 0
    profile = sandbox_profile(state=str(tmp_path / "files.db"))
    with open_store(profile.state) as store:
        full = pull(store, profile, FileSource(folder), entities=["credit-notes"], full=True)
    assert full.entities["credit-notes"].fetched == changed.entities["credit-notes"].fetched
