"""Missing purchase history (--live): orders Ometria accepted that it no longer holds under the
customer we sent them for."""

from diff_fixtures import client, emulator, profile_for, push

from khaosync.detectors import run_detectors
from khaosync.store import open_store

TYPE = "missing_purchase_history"


def histories(store, profile, emu):
    return {f.key: f for f in run_detectors(store, profile, live_client=client(profile, emu), scope={"order"})
            if f.type == TYPE}


def contacts_of(store, customer: str) -> tuple[str, ...]:
    return tuple(f"contact:{i}" for (i,) in store.conn.execute(
        "SELECT id FROM ledger WHERE type = 'contact' AND json_extract(CAST(body AS TEXT), '$.customer_id') = ? "
        "ORDER BY id", (customer,)))


def test_clean_after_a_push_then_an_order_moved_and_an_order_gone(world):
    profile = profile_for(world)
    emu = emulator(world)
    with open_store(profile.state) as store:
        assert histories(store, profile, emu) == {}  # nothing pushed: no history to lose
        push(store, profile, emu)
        assert histories(store, profile, emu) == {}
        rows = store.conn.execute(
            "SELECT id, json_extract(CAST(body AS TEXT), '$.customer.id') FROM ledger WHERE type = 'order' "
            "ORDER BY id").fetchall()
        order, customer = next((o, c) for o, c in rows if contacts_of(store, c))
        other = next(c for _, c in rows if c != customer and contacts_of(store, c))
        doc = emu.get("order", order)
        emu.tamper("order", order, {"customer": {**doc["customer"], "id": other}})
        # and one Ometria accepted from us for `other` that it no longer holds at all
        store.conn.execute("INSERT INTO ledger(type, id, content_hash, body, accepted_at) VALUES "
                           "('order', 'LOST-1', 'h', ?, '2026-11-01T00:00:00+00:00')",
                           (('{"@type":"order","id":"LOST-1","customer":{"id":"%s"}}' % other).encode(),))
        found = histories(store, profile, emu)
        people = {c: contacts_of(store, c) for c in (customer, other)}
    assert set(found) == {customer, other}
    assert found[customer].records == people[customer]
    assert found[customer].detail == {"missing": [], "held_elsewhere": [[order, other]], "held_here": []}
    assert found[other].records == people[other]
    assert found[other].detail == {"missing": ["LOST-1"], "held_elsewhere": [], "held_here": [[order, customer]]}
    assert found[other].severity == "warn" and found[other].owner == "crm"
