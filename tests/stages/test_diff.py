"""The diff stage: exact field comparison, the merge against the ledger or Ometria, and the plan."""

import re
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detectors"))

from diff_fixtures import client, copy_planted, emulator, plant, profile_for, push  # noqa: E402

from khaosync.config import sandbox_profile  # noqa: E402
from khaosync.errors import ConfigError  # noqa: E402
from khaosync.ometria import wire  # noqa: E402
from khaosync.sandbox.generator import load_manifest  # noqa: E402
from khaosync.stages.diff import MISSING, FieldChange, diff_records, field_changes, voided  # noqa: E402
from khaosync.store import journal, open_store, plans  # noqa: E402

D = Decimal


# -- comparing two records ---------------------------------------------------------------------


def test_fields_compare_exactly_and_name_nested_paths():
    before = {"@type": "order", "id": "1", "grand_total": D("19.90"), "is_valid": True, "status": "shipped",
              "customer": {"id": "7", "email": "a@example.com"},
              "lineitems": [{"product_id": "P1", "quantity": 1}, {"product_id": "P2", "quantity": 2}]}
    after = {"@type": "order", "id": "1", "grand_total": D("19.9"), "is_valid": 1, "status": "shipped",
             "customer": {"id": "8"}, "lineitems": [{"product_id": "P1", "quantity": D("1.0")}],
             "@merge": True}
    assert field_changes(before, after) == {
        "customer.email": FieldChange("a@example.com", MISSING),
        "customer.id": FieldChange("7", "8"),
        "is_valid": FieldChange(True, 1),                      # a boolean is never a number
        "lineitems[1]": FieldChange({"product_id": "P2", "quantity": 2}, MISSING),  # a whole line, once
    }
    assert field_changes({"a": D("0.1")}, {"a": D("0.10000000001")}) == {"a": FieldChange(D("0.1"),
                                                                                        D("0.10000000001"))}
    assert field_changes({"title": "x", "web": 1}, {"title": "x"}, only_sent=True) == {}
    assert field_changes({"title": "x", "web": 1}, {"title": "x"}) == {"web": FieldChange(1, MISSING)}
    # null, "" and absent are all "no value": a blank we sent is not a change against nothing held
    assert field_changes({"coupon_code": None, "note": ""}, {}) == {}
    assert field_changes({"coupon_code": "SAVE1"}, {"coupon_code": None}) == {
        "coupon_code": FieldChange("SAVE1", MISSING)}


def test_voiding_orders_and_products_and_never_contacts():
    order = {"@type": "order", "id": "1", "status": "shipped", "is_valid": True, "grand_total": D("5")}
    assert voided("order", order, "cancelled") == {**order, "is_valid": False, "status": "cancelled"}
    assert voided("order", {**order, "is_valid": False, "status": "refunded"}) is None
    assert voided("product", {"id": "P", "is_active": True}) == {"id": "P", "is_active": False}
    assert voided("product", {"id": "P", "is_active": False}) is None
    assert voided("contact", {"id": "C"}) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=5)
    | st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-10**6, max_value=10**6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12)
records = st.dictionaries(st.text(min_size=1, max_size=4), json_values, max_size=5)


@settings(max_examples=150, deadline=None)
@given(records, records)
def test_a_record_equals_itself_and_differences_are_symmetric(a, b):
    assert field_changes(a, a) == {}
    assert field_changes(wire.loads(wire.dumps(a)), a) == {}  # the wire round trip loses nothing
    forward, backward = field_changes(a, b), field_changes(b, a)
    assert {p: (c.after, c.before) for p, c in forward.items()} == {p: (c.before, c.after)
                                                                   for p, c in backward.items()}


# -- against the ledger, on hand-written rows ------------------------------------------------------


def order(id_: str, **fields) -> dict:
    return {"@type": "order", "id": id_, "timestamp": "2026-10-01T09:00:00Z", "currency": "GBP",
            "grand_total": D("10.00"), "status": "shipped", "is_valid": True,
            "lineitems": [{"product_id": "P1", "quantity": 1}], **fields}


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "state.db") as store:
        store.run = store.start_run("map", "sandbox")
        yield store


@pytest.fixture
def profile(tmp_path):
    return sandbox_profile(state=str(tmp_path / "state.db"), sandbox_path=str(tmp_path / "no-sandbox"))


def outbound(store, doc: dict, state: str = "ready", reason: str | None = None, type_: str | None = None) -> str:
    body = wire.dumps(doc)
    store.conn.execute(
        "INSERT OR REPLACE INTO outbound_record(type, id, content_hash, body, lineage, state, hold_reason, run_id, "
        "mapped_at) VALUES (?, ?, ?, ?, '[]', ?, ?, ?, 'now')",
        (type_ or doc["@type"], doc["id"], wire.content_hash(body), body, state, reason, store.run))
    return wire.content_hash(body)


def accepted(store, doc: dict, type_: str | None = None) -> None:
    body = wire.dumps(doc)
    store.conn.execute("INSERT OR REPLACE INTO ledger(type, id, content_hash, body, accepted_at) VALUES "
                       "(?, ?, ?, ?, 'then')", (type_ or doc["@type"], doc["id"], wire.content_hash(body), body))


def test_every_kind_of_change_against_the_ledger_and_the_plan_push_reads(store, profile):
    hashes = {"new": outbound(store, order("A-new"))}
    accepted(store, order("B-changed"))
    hashes["changed"] = outbound(store, order("B-changed", status="complete", grand_total=D("12.50")))
    accepted(store, order("C-same"))
    outbound(store, order("C-same"))
    accepted(store, order("D-same-value", grand_total=D("10.0")))
    outbound(store, order("D-same-value", grand_total=D("10.00")))  # another hash, the same amount
    accepted(store, order("E-held"))
    outbound(store, order("E-held", grand_total=D("10.01")), state="held", reason="total_mismatch: 1p out")
    accepted(store, order("F-gone"))
    accepted(store, order("G-void-already", status="refunded", is_valid=False))
    outbound(store, order("H-held-never-sent"), state="held", reason="bad currency")

    result = diff_records(store, profile, "orders")
    assert result.counts == {"new": 1, "changed": 1, "unchanged": 3, "void": 2, "held": 0}
    assert [(r.key, r.change) for r in result.records] == [
        ("A-new", "new"), ("B-changed", "changed"), ("E-held", "void"), ("F-gone", "void")]
    changed = result.records[1].as_dict()
    assert changed == {"key": "B-changed", "change": "changed", "fields": {
        "grand_total": {"before": D("10.00"), "after": D("12.50")},
        "status": {"before": "shipped", "after": "complete"}}}
    assert result.records[2].as_dict() == {"key": "E-held", "change": "void", "reason": "total_mismatch: 1p out",
                                           "fields": {"is_valid": {"before": True, "after": False},
                                                      "status": {"before": "shipped", "after": "cancelled"}}}
    assert result.records[3].reason == "no longer mapped"
    assert re.fullmatch(r"p\d+-\d{8}-\d{4}", result.plan_id)

    rows = {i: (c, h, b) for _, i, c, h, b in plans.plan_records(store.conn, result.plan_id)}
    assert set(rows) == {"A-new", "B-changed", "E-held", "F-gone"} and result.planned == 4
    assert rows["A-new"][:2] == ("new", hashes["new"]) and rows["B-changed"][:2] == ("changed", hashes["changed"])
    void_body = wire.loads(rows["F-gone"][2])
    assert void_body == {**order("F-gone"), "is_valid": False, "status": "cancelled"}  # the whole order, voided
    assert rows["F-gone"][1] == wire.content_hash(rows["F-gone"][2])

    # what push (issue 6) reads: the newest open plan, current, with its records pending
    plan = journal.find_plan(store.conn, None)
    assert (plan.id, plan.status, plan.scope) == (result.plan_id, "open", ["order"])
    assert plan.counts == {"new": 1, "changed": 1, "unchanged": 3, "void": 2}
    assert journal.stale_records(store.conn, plan.id) == (0, [])
    assert journal.pending_count(store.conn, plan.id, "order") == 4


KINDS = {  # how a record stands on each side -> what the diff makes of it (as in the test above)
    "new": "new", "changed": "changed", "same": "unchanged", "same-value": "unchanged", "held-sent": "void",
    "gone": "void", "void-already": "unchanged", "held-never-sent": None}
ids = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(ids, st.sampled_from(sorted(KINDS)), max_size=40), st.integers(1, 6))
def test_a_whole_diff_decides_every_record_as_it_stands_whatever_the_block_size(tmp_path_factory, kinds, block):
    # The merge reads both sides a block at a time and matches pairs as sets: records on either
    # side only, and ids in any order of characters, must come out as one record at a time would.
    folder = tmp_path_factory.mktemp("merge")
    profile = sandbox_profile(state=str(folder / "state.db"), sandbox_path=str(folder / "none"))
    with open_store(folder / "state.db") as store:
        store.run = store.start_run("map", "sandbox")
        for id_, kind in kinds.items():
            if kind in ("changed", "same", "held-sent", "gone"):
                accepted(store, order(id_))
            if kind == "same-value":
                accepted(store, order(id_, grand_total=D("10.0")))
            if kind == "void-already":
                accepted(store, order(id_, status="refunded", is_valid=False))
            if kind in ("new", "same", "same-value"):
                outbound(store, order(id_))
            if kind == "changed":
                outbound(store, order(id_, status="complete"))
            if kind in ("held-sent", "held-never-sent"):
                outbound(store, order(id_, grand_total=D("10.01")), state="held", reason="held here")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("khaosync.stages.diff._MERGE_BLOCK", block)
            result = diff_records(store, profile, "orders", detect=False)
        expected = {c: 0 for c in ("new", "changed", "unchanged", "void", "held")}
        for kind in kinds.values():
            if KINDS[kind]:
                expected[KINDS[kind]] += 1
        assert result.counts == expected
        listed = [(id_, KINDS[kinds[id_]]) for id_ in sorted(kinds) if KINDS[kinds[id_]] not in (None, "unchanged")]
        assert [(r.key, r.change) for r in result.records] == listed
        assert sorted(i for _, i, *_ in plans.plan_records(store.conn, result.plan_id)) == sorted(i for i, _ in listed)


def test_a_new_diff_supersedes_the_open_plan_of_its_scope_only(store, profile):
    outbound(store, order("A"))
    outbound(store, {"@type": "product", "id": "P1", "title": "Mug"})
    first = diff_records(store, profile, "orders")
    products = diff_records(store, profile, "products")
    second = diff_records(store, profile, "orders")
    assert second.superseded == [first.plan_id] and products.superseded == []
    status = {p.id: p.status for p in plans.list_plans(store.conn)}
    assert status == {first.plan_id: "superseded", products.plan_id: "open", second.plan_id: "open"}
    assert len(set(status)) == 3


def test_contacts_are_never_voided_only_reported(store, profile):
    contact = {"@type": "contact", "@collection": "khaos", "id": "7001", "email": "a@example.com"}
    accepted(store, contact)
    outbound(store, {**contact, "email": "b@example.com"}, state="held", reason="identifier_conflict")
    accepted(store, {**contact, "id": "7002"})
    result = diff_records(store, profile, "contacts")
    assert result.counts["held"] == 2 and result.counts["void"] == 0 and result.planned == 0
    assert [(r.key, r.change, r.reason) for r in result.records] == [
        ("7001", "held", "identifier_conflict"), ("7002", "held", "no longer mapped")]
    assert result.records[0].fields == {"email": FieldChange("a@example.com", "b@example.com")}


def test_keys_narrow_the_plan_fields_and_limit_only_the_listing(store, profile):
    for n in range(5):
        accepted(store, order(f"O{n}"))
        outbound(store, order(f"O{n}", status="complete" if n % 2 else "shipped", grand_total=D(f"2{n}.00")))
    listed = diff_records(store, profile, "orders", fields=["status"], limit=1)
    assert listed.counts["changed"] == 5 and listed.planned == 5 and listed.listed == 2
    assert [(r.key, list(r.fields)) for r in listed.records] == [("O1", ["status"])]
    keyed = diff_records(store, profile, "orders", keys=["O3", "nope"])
    assert keyed.counts == {"new": 0, "changed": 1, "unchanged": 0, "void": 0, "held": 0}
    assert [i for _, i, *_ in plans.plan_records(store.conn, keyed.plan_id)] == ["O3"]
    with pytest.raises(ConfigError):
        diff_records(store, profile, "customers")


# -- the sandbox, end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    return plant(tmp_path_factory.mktemp("diff-planted"))


def test_pull_map_diff_push_then_live_drift(planted, tmp_path):
    root = copy_planted(planted, tmp_path)
    profile = profile_for(root)
    emu = emulator(root)
    manifest = load_manifest(root / "sandbox")
    with open_store(profile.state) as store:
        ready = dict(store.conn.execute("SELECT type, count(*) FROM outbound_record WHERE state = 'ready' "
                                        "GROUP BY type").fetchall())
        first = {e: diff_records(store, profile, e) for e in ("products", "contacts", "orders")}
        for entity, type_ in (("products", "product"), ("contacts", "contact"), ("orders", "order")):
            assert first[entity].counts == {"new": ready[type_], "changed": 0, "unchanged": 0, "void": 0, "held": 0}
            assert plans.record_count(store.conn, first[entity].plan_id) == ready[type_]

        push(store, profile, emu)
        again = {e: diff_records(store, profile, e) for e in ("products", "contacts", "orders")}
        for entity, type_ in (("products", "product"), ("contacts", "contact"), ("orders", "order")):
            assert again[entity].counts["unchanged"] == ready[type_] and again[entity].planned == 0

        live = {e: diff_records(store, profile, e, live_client=client(profile, emu))
                for e in ("products", "contacts", "orders")}
        assert live["orders"].counts["unchanged"] == ready["order"] and live["orders"].records == []
        assert live["products"].counts["unchanged"] == ready["product"] and live["products"].records == []
        # contacts: only the people who unsubscribed in Ometria differ (Ometria keeps them opted out,
        # and without the opt-in's date, which khaosync sends: consent times)
        unsubscribed = {str(e["contact_id"]) for e in manifest["faults"]["ometria_unsubscribed"]}
        assert {r.key: list(r.fields) for r in live["contacts"].records} == {
            k: ["marketing_optin", "timestamp_subscribed"] for k in unsubscribed}

        # drift in Ometria: a total changed, a line dropped, a consent flag flipped
        total_id, line_id = [i for (i,) in store.conn.execute(
            "SELECT id FROM ledger WHERE type = 'order' AND json_array_length(CAST(body AS TEXT), '$.lineitems') > 1 "
            "ORDER BY id LIMIT 2")]
        held_total = emu.get("order", total_id)["grand_total"]
        emu.tamper("order", total_id, {"grand_total": held_total + 1})
        lines = emu.get("order", line_id)["lineitems"]
        emu.tamper("order", line_id, {"lineitems": lines[:-1]})
        consent_id = store.conn.execute(
            "SELECT id FROM ledger WHERE type = 'contact' AND json_extract(CAST(body AS TEXT), '$.marketing_optin') "
            "= 'EXPLICITLY_OPTEDIN' ORDER BY id LIMIT 1").fetchone()[0]
        emu.tamper("contact", consent_id, {"marketing_optin": "EXPLICITLY_OPTEDOUT"})

        orders = diff_records(store, profile, "orders", live_client=client(profile, emu))
        ours = {r.key: r for r in orders.records}
        assert set(ours) == {total_id, line_id} and orders.counts["changed"] == 2
        assert {p: (c.before, c.after) for p, c in ours[total_id].fields.items()} == {
            "grand_total": (D(str(held_total)) + 1, D(str(held_total)))}
        assert list(ours[line_id].fields) == [f"lineitems[{len(lines) - 1}]"]
        assert ours[line_id].fields[f"lineitems[{len(lines) - 1}]"].before is MISSING
        contacts = diff_records(store, profile, "contacts", live_client=client(profile, emu))
        assert {r.key: list(r.fields) for r in contacts.records} == {
            consent_id: ["marketing_optin"], **{k: ["marketing_optin", "timestamp_subscribed"] for k in unsubscribed}}
        flipped = next(r for r in contacts.records if r.key == consent_id).fields["marketing_optin"]
        assert (flipped.before, flipped.after) == ("EXPLICITLY_OPTEDOUT", "EXPLICITLY_OPTEDIN")
        # the plan from a live diff sends exactly the drifted records back
        assert {i for _, i, *_ in plans.plan_records(store.conn, orders.plan_id)} == {total_id, line_id}


class CountingReader:
    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        self.calls.append(name)
        return getattr(self.inner, name)


def test_live_diff_of_a_few_keys_reads_only_those_records(planted, tmp_path):
    root = copy_planted(planted, tmp_path)
    profile = profile_for(root)
    emu = emulator(root)
    with open_store(profile.state) as store:
        push(store, profile, emu, types=("product",))
        ids = [i for (i,) in store.conn.execute("SELECT id FROM ledger WHERE type = 'product' ORDER BY id LIMIT 2")]
        reader = CountingReader(client(profile, emu))
        result = diff_records(store, profile, "products", live_client=reader, keys=ids + ["nope"], detect=False)
    assert result.counts["unchanged"] == 2 and result.records == []
    assert reader.calls == ["get_product", "get_product", "get_product"]


def test_the_plan_goes_through_push_and_a_void_settles(planted, tmp_path):
    """diff -> push (issue 6) -> diff: nothing left; a pushed order map now holds is voided once."""
    from khaosync.stages.push import push_plan

    root = copy_planted(planted, tmp_path)
    profile = profile_for(root)
    emu = emulator(root)
    with open_store(profile.state) as store:
        for entity in ("products", "contacts", "orders"):
            plan = diff_records(store, profile, entity, detect=False)
            push_plan(store, profile, client(profile, emu), plan.plan_id, commit=True, verify="none")
        assert diff_records(store, profile, "orders", detect=False).planned == 0
        held = store.conn.execute("SELECT id FROM ledger WHERE type = 'order' ORDER BY id LIMIT 1").fetchone()[0]
        store.conn.execute("UPDATE outbound_record SET state = 'held', hold_reason = 'total_mismatch: test' "
                           "WHERE type = 'order' AND id = ?", (held,))
        void = diff_records(store, profile, "orders", detect=False)
        assert [(r.key, r.change) for r in void.records] == [(held, "void")]
        push_plan(store, profile, client(profile, emu), void.plan_id, commit=True, verify="none")
        assert emu.get("order", held)["is_valid"] is False and emu.get("order", held)["status"] == "cancelled"
        after = diff_records(store, profile, "orders", detect=False)
        assert after.planned == 0 and after.counts["void"] == 0
        live = diff_records(store, profile, "orders", live_client=client(profile, emu), detect=False)
        assert live.planned == 0
