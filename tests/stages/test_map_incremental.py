"""An incremental map leaves exactly what a full map leaves: the same outbound records and the
same open findings, after random changes to orders, customers, stock items and credit notes;
and sync's diff, its detectors scoped to what that map looked at again, the findings of a
full scan.

The planted sandbox is pulled and mapped once; each example copies that store twice, applies
the same changes (as new staged versions, the way pull stages them) to both, and maps one
incrementally after each day and the other fully after each day.
"""

import hashlib
import json
from datetime import datetime, timezone
import shutil
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from khaosync.config import sandbox_profile
from khaosync.khaos.soap import KhaosClient
from khaosync.mapping import load_mapping
from khaosync.sandbox.server import SandboxApp
from khaosync.stages.diff import diff_all, nightly_basis
from khaosync.stages.map import map_records
from khaosync.stages.pull import FileSource, SoapSource, pull
from khaosync.store import open_store, staging

KEY = "sandbox-key"
ROOT = Path(__file__).resolve().parents[2]
MAPPING = load_mapping(str(ROOT / "mappings" / "default.yaml"))
ENTITIES = ["products", "contacts", "orders"]


@pytest.fixture(scope="module")
def mapped_once(planted, tmp_path_factory) -> Path:
    """The planted sandbox pulled and fully mapped once (read only: examples copy it)."""
    state = tmp_path_factory.mktemp("incremental") / "state.db"
    profile = sandbox_profile(state=str(state), sandbox_path=str(planted))
    client = KhaosClient(profile.khaos, transport=httpx.WSGITransport(app=SandboxApp(planted, KEY)))
    with open_store(state) as store:
        pull(store, profile, SoapSource(client, profile, FileSource(planted / "exports")))
        map_records(store, profile, mapping=MAPPING, incremental=True)  # no mark yet: a full map, and the marks
    return state


# -- changes, as pull would stage them ------------------------------------------------------------------

def _keys(conn, entity: str) -> list[str]:
    return [k for (k,) in conn.execute("SELECT key FROM staged_record WHERE entity = ? AND current = 1 AND parsed"
                                       " IS NOT NULL ORDER BY key", (entity,))]


def _raw_only(conn) -> list[str]:
    return [k for (k,) in conn.execute("SELECT key FROM staged_record WHERE entity = 'sales_order' AND current = 1 AND"
                                       " parsed IS NULL ORDER BY key")]


def _last_readable(conn, key: str) -> dict | None:
    row = conn.execute("SELECT parsed FROM staged_record WHERE entity = 'sales_order' AND key = ? AND parsed IS NOT"
                       " NULL ORDER BY version DESC LIMIT 1", (key,)).fetchone()
    return None if row is None else json.loads(row[0])


def _seen_at(run_id: int) -> str:
    """When pull staged it: the same for both copies of the store (consent first-seen times are
    the staging times), later than the planted pull, one minute per run."""
    return datetime(2030, 1, 1, tzinfo=timezone.utc).replace(minute=run_id % 60, hour=run_id // 60 % 24).isoformat(
        timespec="microseconds")


def _stage(conn, run_id: int, entity: str, key: str, doc: dict | None, raw: bytes | None = None) -> None:
    text = None if doc is None else json.dumps(doc, sort_keys=True, separators=(",", ":"))
    aliases = {}
    if doc is not None and entity == "stock_item":
        aliases = {"stock_code": doc["stock_code"]}
    staging.stage(conn, entity=entity, key=key, raw=raw or (text or "").encode() or b"<broken/>", parsed=text,
                  content_hash=hashlib.sha256((text or "raw-only " + key).encode()).hexdigest(), run_id=run_id,
                  seen_at=_seen_at(run_id), aliases=aliases)


def apply(conn, run_id: int, op: tuple[str, int, int]) -> None:
    kind, a, b = op
    orders, companies, items, notes = (_keys(conn, e) for e in ("sales_order", "company", "stock_item", "credit_note"))
    order = staging.current(conn, "sales_order", orders[a % len(orders)]).parsed
    company = staging.current(conn, "company", companies[a % len(companies)]).parsed
    if kind == "order_ref":
        order["associated_ref"] = f"WEB-CHANGED-{b}"
        _stage(conn, run_id, "sales_order", str(order["sorder_id"]), order)
    elif kind == "order_despatched":
        for invoice in order["invoices"]:
            invoice["stage_id"] = 70
        _stage(conn, run_id, "sales_order", str(order["sorder_id"]), order)
    elif kind == "order_qty":  # the lines no longer add up to KC's total
        order["lines"][0]["qty"] = str(int(float(order["lines"][0]["qty"])) + 1 + b % 3)
        _stage(conn, run_id, "sales_order", str(order["sorder_id"]), order)
    elif kind == "order_product":  # a line pointing at another (maybe unknown) stock item
        order["lines"][0]["stock_id"] = int(items[b % len(items)]) if b % 4 else 999999
        _stage(conn, run_id, "sales_order", str(order["sorder_id"]), order)
    elif kind == "order_pending_product":  # not sent yet (no invoice), so only the detector sees its line
        order["invoices"] = []
        order["lines"][0]["stock_id"] = 999999 if b % 2 else int(items[b % len(items)])
        _stage(conn, run_id, "sales_order", str(order["sorder_id"]), order)
    elif kind == "order_raw_only":
        _stage(conn, run_id, "sales_order", str(order["sorder_id"]), None, b"<SALES_ORDER broken")
    elif kind == "order_invalid":  # parsed, but not a sales order KC's model reads (map's malformed_record)
        order["lines"][0]["qty"] = "many"
        if b % 2:  # and its line names another item
            order["lines"][0]["stock_id"] = int(items[b % len(items)])
        _stage(conn, run_id, "sales_order", str(order["sorder_id"]), order)
    elif kind == "stock_rename_of_invalid":  # an item such an order names
        invalid = [json.loads(t) for (t,) in conn.execute(
            "SELECT parsed FROM staged_record WHERE entity = 'sales_order' AND current = 1 AND parsed LIKE"
            " '%\"qty\":\"many\"%' ORDER BY key")]
        if invalid:
            item = staging.current(conn, "stock_item", str(invalid[b % len(invalid)]["lines"][0]["stock_id"]))
            if item is not None and item.parsed is not None:
                renamed = {**item.parsed, "stock_code": f"{item.parsed['stock_code']}-I{b}"}
                _stage(conn, run_id, "stock_item", str(renamed["stock_id"]), renamed)
    elif kind == "order_new":
        new_id = 900000 + b
        order.update(sorder_id=new_id, sorder_code=f"SO-NEW-{b}", associated_ref=f"WEB-NEW-{b}")
        _stage(conn, run_id, "sales_order", str(new_id), order)
    elif kind == "order_customer":  # the order names another contact
        other = staging.current(conn, "company", companies[b % len(companies)]).parsed
        if other["contacts"]:
            order.update(company_id=other["company_id"], contact_id=other["contacts"][0]["contact_id"])
            _stage(conn, run_id, "sales_order", str(order["sorder_id"]), order)
    elif kind == "company_shared_email":  # a contact takes another company's email
        other = staging.current(conn, "company", companies[b % len(companies)]).parsed
        if company["contacts"] and other["contacts"]:
            company["contacts"][0]["email"] = other["contacts"][0]["email"]
            _stage(conn, run_id, "company", str(company["company_id"]), company)
    elif kind == "company_name":
        for contact in company["contacts"]:
            contact["surname"] = f"Renamed{b}"
        _stage(conn, run_id, "company", str(company["company_id"]), company)
    elif kind == "company_opt_out":
        company["mailing_status"] = 5 if company.get("mailing_status") != 5 else 1
        for contact in company["contacts"]:
            contact["email_subscribe"] = False
        _stage(conn, run_id, "company", str(company["company_id"]), company)
    elif kind == "company_inactive":
        for contact in company["contacts"]:
            contact["inactive"] = not contact.get("inactive")
        _stage(conn, run_id, "company", str(company["company_id"]), company)
    elif kind == "stock_rename":
        item = staging.current(conn, "stock_item", items[a % len(items)]).parsed
        item["stock_code"] = f"{item['stock_code']}-R{b}"
        _stage(conn, run_id, "stock_item", str(item["stock_id"]), item)
    elif kind == "stock_price":
        item = staging.current(conn, "stock_item", items[a % len(items)]).parsed
        item["sell_price"] = f"{1 + b % 90}.99"
        item["description"] = f"Changed {b}"
        _stage(conn, run_id, "stock_item", str(item["stock_id"]), item)
    elif kind == "credit_move" and notes:  # a credit note now points at another order (or none staged)
        note = staging.current(conn, "credit_note", notes[a % len(notes)]).parsed
        note["sorder_id"] = int(orders[b % len(orders)]) if b % 5 else 888888
        _stage(conn, run_id, "credit_note", str(note["credit_id"]), note)
    elif kind == "credit_to_raw_only" and notes and _raw_only(conn):  # a note now points at an unreadable order
        note = staging.current(conn, "credit_note", notes[a % len(notes)]).parsed
        raw_only = _raw_only(conn)
        note["sorder_id"] = int(raw_only[b % len(raw_only)])
        _stage(conn, run_id, "credit_note", str(note["credit_id"]), note)
    elif kind == "stock_rename_of_raw_only":  # an item an order last named before it became unreadable
        lasts = [d for d in map(lambda k: _last_readable(conn, k), _raw_only(conn)) if d is not None and d["lines"]]
        if lasts:
            last = lasts[b % len(lasts)]
            item = staging.current(conn, "stock_item", str(last["lines"][0]["stock_id"]))
            if item is not None and item.parsed is not None:
                renamed = {**item.parsed, "stock_code": f"{item.parsed['stock_code']}-U{b}"}
                _stage(conn, run_id, "stock_item", str(renamed["stock_id"]), renamed)
    elif kind == "credit_new" and notes:
        note = staging.current(conn, "credit_note", notes[a % len(notes)]).parsed
        note.update(credit_id=700000 + b, credit_code=f"CR-NEW-{b}", sorder_id=order["sorder_id"])
        _stage(conn, run_id, "credit_note", str(700000 + b), note)


KINDS = ["order_ref", "order_despatched", "order_qty", "order_product", "order_pending_product", "order_raw_only",
         "order_new",
         "order_customer", "company_shared_email", "company_name", "company_opt_out", "company_inactive",
         "stock_rename", "stock_price", "credit_move", "credit_new", "credit_to_raw_only", "stock_rename_of_raw_only",
         "order_invalid", "stock_rename_of_invalid"]
ops = st.tuples(st.sampled_from(KINDS), st.integers(0, 10_000), st.integers(0, 10_000))
days = st.lists(st.lists(ops, min_size=1, max_size=8), min_size=1, max_size=2)


def what_it_left(state: Path) -> tuple[dict, set]:
    with open_store(state, write=False) as store:
        rows = {(t, i): (h, bytes(b) if b is not None else None, lin, s, r) for t, i, h, b, lin, s, r in store.conn.execute(
            "SELECT type, id, content_hash, body, lineage, state, hold_reason FROM outbound_record")}
        found = set(store.conn.execute(
            "SELECT type, stage, entity, record_key, reason, records, detail FROM exception WHERE resolved_at IS NULL"))
    return rows, found


def run_days(state: Path, plan: list[list[tuple]], *, incremental: bool):
    profile = sandbox_profile(state=str(state))
    with open_store(state) as store:
        for day in plan:
            run_id = store.start_run("pull", "test")
            with store.transaction() as conn:
                for op in day:
                    apply(conn, run_id, op)
            store.finish_run(run_id, "ok", {})
            # Each day's map, one way or the other: a raw-only version keeps the last body mapped;
            # incrementally as sync maps, in the sync's run, so the next day builds on this one.
            sync_run = store.start_run("sync", "test")
            basis = nightly_basis(store.conn, sync_run, ENTITIES) if incremental else None
            result = map_records(store, profile, mapping=MAPPING, incremental=incremental, run_id=sync_run)
            # ... and the day's diff as sync runs it: scoped to what that map looked at (from day 2).
            diff_all(store, profile, ENTITIES, run_id=sync_run, mapping=MAPPING,
                     changed=result.looked_at if incremental else None, basis=basis)
            store.finish_run(sync_run, "ok", {})
    return result


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=days)
# Found by a longer run: a second note moving to the same unstaged order put the first one's
# still-open refund gap in the night's scope without answering for it, and closed it.
@example(plan=[[("credit_move", 0, 0)], [("credit_move", 1, 0)]])
def test_an_incremental_map_leaves_what_a_full_map_leaves(mapped_once, tmp_path_factory, plan):
    folder = tmp_path_factory.mktemp("example")
    incremental, full = folder / "incremental.db", folder / "full.db"
    shutil.copyfile(mapped_once, incremental)
    shutil.copyfile(mapped_once, full)
    by_change = run_days(incremental, plan, incremental=True)
    by_all = run_days(full, plan, incremental=False)
    assert by_change.incremental == {"products": True, "contacts": True, "orders": True}
    assert by_change.fail_findings == by_all.fail_findings
    left, expected = what_it_left(incremental), what_it_left(full)
    assert {k for k in left[0] if left[0][k] != expected[0].get(k)} == set()
    assert set(left[0]) == set(expected[0])
    assert left[1] - expected[1] == set() and expected[1] - left[1] == set()


@pytest.mark.parametrize("later", [
    [[("credit_to_raw_only", 1, 0)]], [[("stock_rename_of_raw_only", 0, 2)]],
    [[("credit_to_raw_only", 2, 0), ("stock_rename_of_raw_only", 0, 0), ("order_raw_only", 7, 0)]],
    [[("order_invalid", 9, 0)], [("stock_rename_of_invalid", 0, 0)]],
    [[("order_invalid", 9, 0), ("order_invalid", 30, 0)], [("stock_rename_of_invalid", 0, 1), ("order_ref", 9, 0)]],
    [[("order_invalid", 9, 5)], [("stock_rename_of_invalid", 0, 0)]],
    [[("order_invalid", 9, 7), ("order_invalid", 12, 13)], [("stock_rename_of_invalid", 1, 1)]]])
def test_an_order_staged_unreadable_is_answered_for_as_a_full_map_answers(mapped_once, tmp_path, later):
    # What an incremental map keeps of an order whose newest version is raw-only (pull owns its
    # exception) or does not validate (map's): a credit note that starts to point at it, or a
    # rename of an item it names or last named, must come out as a full map and a whole scan say.
    plan = [[("order_raw_only", 4, 0), ("order_raw_only", 11, 0)], *later]
    incremental, full = tmp_path / "incremental.db", tmp_path / "full.db"
    shutil.copyfile(mapped_once, incremental)
    shutil.copyfile(mapped_once, full)
    by_change = run_days(incremental, plan, incremental=True)
    by_all = run_days(full, plan, incremental=False)
    assert by_change.fail_findings == by_all.fail_findings
    left, expected = what_it_left(incremental), what_it_left(full)
    assert {k for k in set(left[0]) | set(expected[0]) if left[0].get(k) != expected[0].get(k)} == set()
    assert left[1] - expected[1] == set() and expected[1] - left[1] == set()


def test_an_incremental_map_of_nothing_changed_maps_nothing(mapped_once, tmp_path):
    state = tmp_path / "state.db"
    shutil.copyfile(mapped_once, state)
    before = what_it_left(state)
    with open_store(state) as store:
        result = map_records(store, sandbox_profile(state=str(state)), mapping=MAPPING, incremental=True)
    assert result.incremental == {"products": True, "contacts": True, "orders": True}
    assert {n: e.staged for n, e in result.entities.items()} == {"products": 0, "contacts": 0, "orders": 0}
    assert what_it_left(state) == before


def test_another_mapping_maps_everything(mapped_once, tmp_path):
    state = tmp_path / "state.db"
    shutil.copyfile(mapped_once, state)
    other = MAPPING.model_copy(update={"orders": MAPPING.orders.model_copy(update={"tracking": not MAPPING.orders.tracking})})
    with open_store(state) as store:
        result = map_records(store, sandbox_profile(state=str(state)), mapping=other, incremental=True)
        staged = staging.count_current(store.conn, "sales_order", parsed_only=True)
    assert result.incremental == {"products": False, "contacts": False, "orders": False}
    assert result.entities["orders"].staged == staged


