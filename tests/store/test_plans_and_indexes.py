"""Plan bodies stored once by content hash, plans pruned after their retention, and an index
behind every hot lookup (checked with ``EXPLAIN QUERY PLAN`` on the statements the store runs)."""

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from khaosync.config import sandbox_profile
from khaosync.errors import KhaosyncError
from khaosync.ometria import wire
from khaosync.stages.diff import diff_records
from khaosync.stages.push import push_plan
from khaosync.store import StateStore, contact_index, journal, map_state, open_store, outbound, plans, staging
from khaosync.store import schema
from khaosync.store.db import utcnow

PLAN_BODIES = next(i for i, (what, _) in enumerate(schema.MIGRATIONS) if what.startswith("plan bodies stored once"))


def _body(id_: str, title: str = "Mug") -> tuple[str, bytes]:
    body = wire.dumps({"@type": "product", "id": id_, "title": title})
    return wire.content_hash(body), body


def _plan(store: StateStore, plan_id: str, ids: list[str], *, created: datetime, status: str = "open",
          title: str = "Mug") -> None:
    run = store.start_run("diff", "test")
    with store.transaction() as conn:
        conn.execute("INSERT INTO plan(id, created_at, run_id, scope, counts, status) VALUES (?, ?, ?, '[\"product\"]',"
                     " '{}', ?)", (plan_id, created.isoformat(timespec="microseconds"), run, status))
        plans.add_records(conn, plan_id, [("product", i, "new", *_body(i, title)) for i in ids])


def _count(store: StateStore, table: str) -> int:
    return store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_a_body_in_two_plans_is_stored_once(tmp_path):
    now = datetime.now(UTC)
    with open_store(tmp_path / "state.db") as store:
        _plan(store, "p1", ["1", "2", "3"], created=now)
        with store.transaction() as conn:
            plans.create_plan(conn, "p1-sync", run_id=None, scope=["product"], created_at=utcnow())
            assert plans.copy_records(conn, "p1", "p1-sync") == 3
        assert _count(store, "plan_record") == 6
        assert _count(store, "plan_body") == 3
        assert [b for *_, b in plans.plan_records(store.conn, "p1-sync")] == [_body(i)[1] for i in ("1", "2", "3")]


def test_upgrade_moves_plan_bodies_into_the_body_table(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    monkeypatch.setattr("khaosync.store.db.MIGRATIONS", schema.MIGRATIONS[:PLAN_BODIES])
    monkeypatch.setattr("khaosync.store.db.SCHEMA_VERSION", PLAN_BODIES)
    with open_store(path) as store:
        with store.transaction() as conn:
            conn.execute("INSERT INTO plan(id, created_at, scope, counts) VALUES ('p1', 'x', '[]', '{}')")
            conn.execute("INSERT INTO plan(id, created_at, scope, counts) VALUES ('p2', 'y', '[]', '{}')")
            for plan_id in ("p1", "p2"):
                conn.execute("INSERT INTO plan_record(plan_id, type, id, change, content_hash, body)"
                             " VALUES (?, 'product', '1', 'new', ?, ?)", (plan_id, *_body("1")))
    monkeypatch.undo()
    with open_store(path) as store:
        assert store.schema_version == schema.SCHEMA_VERSION
        assert _count(store, "plan_body") == 1
        assert list(plans.plan_records(store.conn, "p2")) == [("product", "1", "new", *_body("1"))]
        columns = {r[1] for r in store.conn.execute("PRAGMA table_info(plan_record)")}
        assert "body" not in columns


def test_pruning_keeps_the_open_plan_the_recent_ones_and_the_bodies_they_carry(tmp_path):
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=40), now - timedelta(days=2)
    with open_store(tmp_path / "state.db") as store:
        _plan(store, "superseded-old", ["1", "2"], created=old, status="superseded", title="Old mug")
        _plan(store, "pushed-old", ["1", "3"], created=old, status="pushed")
        _plan(store, "open-old", ["4"], created=old)                 # never pruned, however old
        _plan(store, "pushed-recent", ["3"], created=recent, status="pushed")  # shares 3's body
        with store.transaction() as conn:
            gone = plans.prune_plans(conn, before=(now - timedelta(days=30)).isoformat(timespec="microseconds"),
                                     now=utcnow())
        assert gone == {"plans": 2, "records": 4, "bodies": 3}  # Old mug 1 and 2, Mug 1; Mug 3 is still needed
        kept = {p.id: p.pruned_at is not None for p in plans.list_plans(store.conn)}
        assert kept == {"superseded-old": True, "pushed-old": True, "open-old": False, "pushed-recent": False}
        assert list(plans.plan_records(store.conn, "pushed-old")) == []
        assert list(plans.plan_records(store.conn, "superseded-old")) == []
        assert [b for *_, b in plans.plan_records(store.conn, "pushed-recent")] == [_body("3")[1]]
        assert _count(store, "plan_body") == 2
        assert [b for *_, b in plans.plan_records(store.conn, "open-old")] == [_body("4")[1]]
        with store.transaction() as conn:  # a second pass finds nothing more to do
            assert plans.prune_plans(conn, before=now.isoformat(timespec="microseconds"), now=utcnow())["plans"] == 1


def test_a_pruned_plan_cannot_be_pushed(tmp_path):
    now = datetime.now(UTC)
    state = tmp_path / "state.db"
    with open_store(state) as store:
        _plan(store, "p-old", ["1"], created=now - timedelta(days=40), status="pushed")
        with store.transaction() as conn:
            plans.prune_plans(conn, before=now.isoformat(timespec="microseconds"), now=utcnow())
        with pytest.raises(KhaosyncError, match="p-old was pruned"):
            push_plan(store, sandbox_profile(state=str(state)), None, "p-old", commit=False)


# -- every hot lookup has an index ----------------------------------------------------------------

def _filled(tmp_path) -> StateStore:
    store = open_store(tmp_path / "state.db")
    run = store.start_run("pull", "test")
    now = utcnow()
    with store.transaction() as conn:
        for i in range(50):
            staging.stage(conn, entity="sales_order", key=str(i), raw=b"<x/>", parsed="{}", content_hash=str(i),
                          run_id=run, seen_at=now, aliases={"stock_code": f"C{i}"})
            body = wire.dumps({"@type": "order", "id": str(i)})
            outbound.write(conn, [outbound.NewVersion("order", str(i), wire.content_hash(body), body, "[]", "ready",
                                                      None)], run_id=run, now=now)
            journal.put_ledger(conn, "order", str(i), wire.content_hash(body), body, None, f"req-{i % 5}", now)
    _plan(store, "p1", [str(i) for i in range(50)], created=datetime.now(UTC))
    for i in range(5):
        store.record_exception(run_id=run, type="malformed_record", severity="fail", owner="ecommerce", stage="map",
                               reason="x", records=[f"sales_order:{i}"], entity="sales_order", record_key=str(i))
    return store


def _lookups(conn: sqlite3.Connection, store: StateStore) -> None:
    journal.ledger_rows_for_request(conn, "req-1")
    journal.ledger_row(conn, "order", "3")
    journal.ledger_body(conn, "order", "3")
    journal.pending_count(conn, "p1", "product")
    journal.pending_page(conn, "p1", "product", "1", 10)
    journal.plan_ledger_ids(conn, "p1", "product", 5)
    journal.find_plan(conn, "p1")
    journal.set_verified(conn, "order", "3", "h", utcnow())
    journal.resolve_record_exceptions(conn, "push", ["push_rejected"], "order", "3", utcnow())
    list(plans.plan_records(conn, "p1", "product"))
    plans.record_count(conn, "p1")
    plans.prune_plans(conn, before="2000-01-01", now=utcnow())
    staging.current(conn, "sales_order", "3")
    staging.history(conn, "sales_order", "3")
    list(staging.iter_current(conn, "sales_order", page=20))
    staging.keys_by_alias(conn, "sales_order", "stock_code", "C3")
    outbound.existing(conn, "order", ["1", "2"])
    outbound.get(conn, "order", "1")
    outbound.write(conn, [outbound.NewVersion("order", "1", "h2", b'{"id":"1"}', "[]", "ready", None),
                          outbound.NewVersion("order", "2", None, None, None, "held", "x")], run_id=1, now=utcnow())
    store.resolve_unseen_exceptions(10**6, "map", ["malformed_record"], entity="sales_order")
    map_state.latest_staged_run(conn)
    map_state.staged_since(conn, 0, 10**6)
    map_state.versions(conn, "sales_order", "3")
    map_state.aliases(conn, "sales_order", "3")
    map_state.readers(conn, [("stock_item", "300"), ("contact", "7001")], "order")
    map_state.replace_reads(conn, "order", {"3": {("stock_item", "300")}})
    map_state.read_keys(conn, "order", ["3", "4"], "stock_item")
    map_state.get_mark(conn, "orders")
    map_state.shared_decisions(conn, "orders")
    staging.current_of(conn, "sales_order", ["1", "2"])
    list(staging.credit_notes_of_orders(conn, [1, "2"], "key"))
    conn.create_function("khaosync_email_key", 1, lambda e: e, deterministic=True)
    contact_index.refresh(conn, ["1", "2"])
    contact_index.customers(conn, [7001, 7002])
    contact_index.shared(conn, inactive_sent=False)
    contact_index.shared(conn, inactive_sent=True)


def test_every_hot_lookup_uses_an_index(tmp_path):
    store = _filled(tmp_path)
    statements: list[str] = []
    try:
        store.conn.set_trace_callback(statements.append)
        with store.transaction() as conn:
            _lookups(conn, store)
        store.conn.set_trace_callback(None)
        scans: list[str] = []
        checked = 0
        for sql in statements:
            if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT")):
                continue
            checked += 1
            details = [row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + sql)]
            # json_each over one record's own array is a virtual table, not a scan of the store.
            scans += [f"{d}  <-  {sql}" for d in details if d.startswith("SCAN ") and "VIRTUAL TABLE" not in d]
        assert checked >= 20
        assert scans == []
        ledger_plan = [r[3] for r in store.conn.execute(
            "EXPLAIN QUERY PLAN SELECT type, id FROM ledger WHERE request_id = 'x'")]
        assert any("INDEX ledger_request" in d for d in ledger_plan)
    finally:
        store.close()


def test_a_whole_diff_reads_indexes_not_the_tables_of_bodies(tmp_path):
    # The merge of outbound records and the ledger reads every record of a type: from an index
    # that holds (id, hash, state) and the ledger kept in key order, not from rows of bodies.
    store = _filled(tmp_path)
    statements: list[str] = []
    try:
        profile = sandbox_profile(state=str(tmp_path / "state.db"), sandbox_path=str(tmp_path / "none"))
        store.conn.set_trace_callback(statements.append)
        result = diff_records(store, profile, "orders", detect=False)
        store.conn.set_trace_callback(None)
        assert result.counts["unchanged"] == 50
        merges = [sql for sql in statements if sql.lstrip().startswith("SELECT") and sql.rstrip().endswith("ORDER BY id")]
        plans_of = {sql: [row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + sql)] for sql in merges}
        assert len(plans_of) == 2
        for sql, details in plans_of.items():
            assert details in (["SEARCH outbound_entry USING COVERING INDEX outbound_diff (type=?)"],
                               ["SEARCH l USING PRIMARY KEY (type=?)"]), (sql, details)
    finally:
        store.close()
