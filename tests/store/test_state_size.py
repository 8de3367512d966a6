"""A state file that stays small (issue 15.4): raw kept deflated and read back byte for byte, a
ledger body the outbound record holds stored once and never lost, an older store migrated."""

import json
import os
import sqlite3

import pytest

from khaosync.ometria import wire
from khaosync.store import journal, map_state, open_store, outbound, packing, schema, staging
from khaosync.store.db import PAGE_SIZE, _statements, utcnow

SMALL = next(i for i, (what, _) in enumerate(schema.MIGRATIONS) if what.startswith("a state file that stays small"))

XML = (b'<?xml version="1.0" encoding="utf-8"?><SALES_ORDER><SORDER_ID>1042</SORDER_ID>'
       + b"".join(b"<LINE><STOCK_CODE>MUG-%d</STOCK_CODE><QTY>2</QTY></LINE>" % i for i in range(40))
       + "<NOTE>caf\u00e9 \u00a3 \u20ac</NOTE></SALES_ORDER>".encode())
RAWS = {"xml": XML, "tiny": b"<x/>", "random": os.urandom(3000), "empty": b"", "latin-1": "Gr\u00fcn".encode("latin-1")}


def _order(id_: str, title: str = "first") -> tuple[str, bytes]:
    body = wire.dumps({"@type": "order", "id": id_, "title": title})
    return wire.content_hash(body), body


def _write_outbound(conn, id_: str, title: str = "first") -> None:
    digest, body = _order(id_, title)
    conn.execute("INSERT OR IGNORE INTO run(id, command, profile, started_at) VALUES (1, 'map', 'test', 'now')")
    outbound.write(conn, [outbound.NewVersion("order", id_, digest, body, "[]", "ready", None)], run_id=1, now=utcnow())


def test_raw_reads_back_exactly_what_was_staged(tmp_path):
    with open_store(tmp_path / "state.db") as store:
        run = store.start_run("pull", "test")
        with store.transaction() as conn:
            for key, raw in RAWS.items():
                staging.stage(conn, entity="sales_order", key=key, raw=raw, parsed=None, content_hash=key,
                              run_id=run, seen_at=utcnow())
            staging.stage(conn, entity="sales_order", key="xml", raw=XML + b" ", parsed=None, content_hash="v2",
                          run_id=run, seen_at=utcnow())
        for key, raw in RAWS.items():
            assert staging.current(store.conn, "sales_order", key).raw == (XML + b" " if key == "xml" else raw)
        assert [v.raw for v in staging.history(store.conn, "sales_order", "xml")] == [XML, XML + b" "]
        kept = dict(store.conn.execute("SELECT key, length(raw) FROM staged_record WHERE current = 1"))
        encodings = dict(store.conn.execute("SELECT key, raw_encoding FROM staged_record WHERE current = 1"))
    assert kept["xml"] < len(XML) / 4 and encodings["xml"] == "zlib"
    # deflating would not save anything: kept as sent
    assert encodings["tiny"] is None and encodings["random"] is None and kept["random"] == 3000


def test_a_raw_in_an_unknown_encoding_is_refused_not_misread():
    with pytest.raises(ValueError, match="'zstd'"):
        staging.raw_bytes(b"...", "zstd")


def test_a_new_store_has_large_pages(tmp_path):
    with open_store(tmp_path / "state.db") as store:
        assert store.conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE


def test_a_ledger_body_the_outbound_record_holds_is_stored_once(tmp_path):
    with open_store(tmp_path / "state.db") as store:
        with store.transaction() as conn:
            _write_outbound(conn, "1")
            digest, body = _order("1")
            journal.put_ledger(conn, "order", "1", digest, body, None, "req-1", utcnow())
            void = wire.dumps({"@type": "order", "id": "2", "is_valid": False})  # a voiding body diff made
            journal.put_ledger(conn, "order", "2", wire.content_hash(void), void, None, "req-1", utcnow())
        kept = dict(store.conn.execute("SELECT id, body FROM ledger_entry"))
        assert kept == {"1": None, "2": void}
        assert journal.ledger_body(store.conn, "order", "1") == body
        assert journal.ledger_body(store.conn, "order", "2") == void
        assert store.conn.execute("SELECT body FROM ledger WHERE id = '1'").fetchone()[0] == body


@pytest.mark.parametrize("change", ["remapped", "deleted", "replaced", "raw sql update"])
def test_the_accepted_body_survives_whatever_happens_to_the_outbound_record(tmp_path, change):
    """Ometria holds what it accepted: the ledger must keep saying so when map makes a new body."""
    with open_store(tmp_path / "state.db") as store:
        digest, accepted = _order("1")
        with store.transaction() as conn:
            _write_outbound(conn, "1")
            journal.put_ledger(conn, "order", "1", digest, accepted, None, "req-1", utcnow())
            assert conn.execute("SELECT body FROM ledger_entry").fetchone()[0] is None
            new_digest, new_body = _order("1", "second")
            if change == "remapped":
                _write_outbound(conn, "1", "second")
            elif change == "deleted":
                conn.execute("DELETE FROM outbound_record WHERE type = 'order' AND id = '1'")
            elif change == "replaced":
                conn.execute("INSERT OR REPLACE INTO outbound_record(type, id, content_hash, body, lineage, run_id,"
                             " mapped_at) VALUES ('order', '1', ?, ?, '[]', 1, 'now')", (new_digest, new_body))
            else:
                conn.execute("UPDATE outbound_record SET body = ?, content_hash = ? WHERE id = '1'",
                             (new_body, new_digest))
        assert journal.ledger_body(store.conn, "order", "1") == accepted
        assert journal.ledger_row(store.conn, "order", "1").content_hash == digest
        # and a state-only move (held) keeps sharing
        with store.transaction() as conn:
            _write_outbound(conn, "2")
            journal.put_ledger(conn, "order", "2", *_order("2"), None, "req-2", utcnow())
            conn.execute("UPDATE outbound_record SET state = 'held', hold_reason = 'x' WHERE id = '2'")
        assert store.conn.execute("SELECT body FROM ledger_entry WHERE id = '2'").fetchone()[0] is None
        assert journal.ledger_body(store.conn, "order", "2") == _order("2")[1]


def test_the_ledger_view_takes_plain_sql(tmp_path):
    """What a sqlite3 shell (or an older script) did to the ledger table still works on the view."""
    with open_store(tmp_path / "state.db") as store:
        with store.transaction() as conn:
            _write_outbound(conn, "1")
            conn.execute("INSERT INTO ledger(type, id, content_hash, body, accepted_at) VALUES ('order', '1', ?, ?,"
                         " 'then')", _order("1"))
            conn.execute("INSERT OR REPLACE INTO ledger(type, id, content_hash, body, accepted_at) VALUES"
                         " ('order', '1', 'x', 'text body', 'later')")
            assert conn.execute("SELECT content_hash, body, accepted_at FROM ledger").fetchall() == [
                ("x", "text body", "later")]
            conn.execute("UPDATE ledger SET body = ?, verified_at = 'v' WHERE id = '1'", (_order("1")[1],))
            assert conn.execute("SELECT body FROM ledger_entry").fetchone()[0] is None
            conn.execute("UPDATE ledger SET accepted_at = 'again'")
            assert conn.execute("SELECT body, accepted_at, verified_at FROM ledger").fetchone() == (
                _order("1")[1], "again", "v")
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute("INSERT INTO ledger(type, id, content_hash, body, accepted_at) VALUES ('order', '1', 'y',"
                             " 'b', 'x')")
            with pytest.raises(sqlite3.IntegrityError, match="ledger.body"):
                conn.execute("INSERT INTO ledger(type, id, content_hash, body, accepted_at) VALUES ('order', '3', 'y',"
                             " NULL, 'x')")
            conn.execute("DELETE FROM ledger WHERE id = '1'")
            assert conn.execute("SELECT count(*) FROM ledger_entry").fetchone()[0] == 0


def _store_before(path, version: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.create_function("khaosync_deflate", 1, staging.deflate, deterministic=True)
    packing.register(conn)
    for _, sql in schema.MIGRATIONS[:version]:
        for statement in _statements(sql):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def test_an_older_store_migrates_and_reads_the_same(tmp_path):
    path = tmp_path / "state.db"
    conn = _store_before(path, SMALL)
    conn.execute("INSERT INTO run(id, command, profile, started_at) VALUES (1, 'pull', 'test', 'then')")
    for key, raw in RAWS.items():
        conn.execute("INSERT INTO staged_record(entity, key, version, content_hash, raw, parsed, run_id, seen_at)"
                     " VALUES ('sales_order', ?, 1, ?, ?, '{\"a\": 1}', 1, 'then')", (key, key, raw))
    shared, own = _order("1"), _order("2", "accepted")
    for id_, (digest, body) in (("1", shared), ("2", _order("2", "remapped since"))):
        conn.execute("INSERT INTO outbound_record(type, id, content_hash, body, lineage, run_id, mapped_at)"
                     " VALUES ('order', ?, ?, ?, '[]', 1, 'then')", (id_, digest, body))
    for id_, (digest, body) in (("1", shared), ("2", own), ("3", _order("3"))):
        conn.execute("INSERT INTO ledger(type, id, content_hash, body, request_id, accepted_at, verified_at)"
                     " VALUES ('order', ?, ?, ?, 'req', 'then', 'v')", (id_, digest, body))
    conn.close()

    with open_store(path) as store:
        assert store.schema_version == schema.SCHEMA_VERSION
        for key, raw in RAWS.items():
            assert staging.current(store.conn, "sales_order", key).raw == raw
        assert store.conn.execute("SELECT raw_encoding FROM staged_record WHERE key = 'xml'").fetchone()[0] == "zlib"
        assert {i: journal.ledger_body(store.conn, "order", i) for i in "123"} == {
            "1": shared[1], "2": own[1], "3": _order("3")[1]}
        assert dict(store.conn.execute("SELECT id, body IS NULL FROM ledger_entry")) == {"1": 1, "2": 0, "3": 0}
        assert journal.ledger_row(store.conn, "order", "1").verified_at == "v"
        assert journal.ledger_rows_for_request(store.conn, "req") == [("order", "1"), ("order", "2"), ("order", "3")]


def test_a_writer_gives_a_large_free_area_back_when_it_closes(tmp_path):
    path = tmp_path / "state.db"
    big = os.urandom(4000)
    with open_store(path) as store:
        run = store.start_run("pull", "test")
        with store.transaction() as conn:
            for i in range(6000):  # ~24 MB, then most of it goes, as a pruned plan's bodies do
                conn.execute("INSERT INTO plan_body(content_hash, body) VALUES (?, ?)", (str(i), big + str(i).encode()))
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        full = path.stat().st_size
        with store.transaction() as conn:
            conn.execute("DELETE FROM plan_body WHERE CAST(content_hash AS INTEGER) >= 500")
        assert run
    assert path.stat().st_size < full / 4
    with open_store(path) as store:
        assert store.conn.execute("SELECT count(*) FROM plan_body").fetchone()[0] == 500
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_what_map_read_survives_the_change_to_name_codes(tmp_path):
    coded = next(i for i, (what, _) in enumerate(schema.MIGRATIONS) if what.startswith("what map read, with its"))
    path = tmp_path / "state.db"
    conn = _store_before(path, coded)
    conn.executemany("INSERT INTO map_read(entity, key, type, id) VALUES (?, ?, ?, ?)", [
        ("stock_item", "300", "order", "1"), ("stock_item.stock_code", "JNS001", "order", "1"),
        ("company", "7", "order", "2"), ("contact", "7086", "contact", "7086")])
    conn.close()
    with open_store(path) as store:
        conn = store.conn
        assert map_state.readers(conn, [("stock_item", "300"), ("company", "7")], "order") == {"1", "2"}
        assert map_state.readers(conn, [("stock_item.stock_code", "JNS001")], "order") == {"1"}
        assert map_state.readers(conn, [("contact", "7086")], "order") == set()
        assert map_state.readers(conn, [("never_seen", "1")], "product") == set()
        with store.transaction():
            map_state.replace_reads(conn, "order", {"1": {("stock_item", "301"), ("credit_note", "9")}})
        assert map_state.all_reads(conn, "order", "1") == {("stock_item", "301"), ("credit_note", "9")}
        assert map_state.all_reads(conn, "contact", "7086") == {("contact", "7086")}
        assert map_state.readers(conn, [("credit_note", "9")], "order") == {"1"}


def test_an_exception_shows_a_deflated_raw_as_the_erp_sent_it(tmp_path):
    from khaosync.detectors.register import view_record

    with open_store(tmp_path / "state.db") as store:
        run = store.start_run("pull", "test")
        with store.transaction() as conn:
            staging.stage(conn, entity="sales_order", key="1042", raw=XML, parsed='{"sorder_id": 1042}',
                          content_hash="h", run_id=run, seen_at=utcnow())
        assert store.conn.execute("SELECT raw_encoding FROM staged_record").fetchone()[0] == "zlib"
        view = view_record(store.conn, "sales_order:1042")
    assert view.erp[0]["raw"] == XML.decode()


PACKED = next(i for i, (what, _) in enumerate(schema.MIGRATIONS) if what.startswith("outbound bodies and lineage packed"))
LINEAGE = '[{"entity":"sales_order","key":"7","version":2},{"entity":"company","key":"70","version":1}]'


def test_the_packing_dictionary_never_changes():
    """Rows packed with it read back only with the same bytes: a new dictionary is a new encoding."""
    import hashlib

    assert packing.ENCODING == "zstd-d1"
    assert hashlib.sha256(packing.DICTIONARY).hexdigest() == (
        "39371d397e8b4ee4f68e8101c7b301d32d863733da4d6e3c426cd6759dc23632")


@pytest.mark.parametrize("data", [b"", b"{}", wire.dumps({"@type": "order", "id": "1", "title": "caf\u00e9 \u00a3"}),
                                  os.urandom(5000), LINEAGE.encode()])
def test_a_packed_body_reads_back_byte_for_byte(data):
    assert packing.unpack(packing.pack(data), packing.ENCODING) == data
    assert packing.unpack(data, None) == data
    with pytest.raises(ValueError, match="'zstd-d9'"):
        packing.unpack(packing.pack(data), "zstd-d9")


def test_outbound_records_read_back_exactly_and_sql_reads_their_fields(tmp_path):
    body = wire.dumps({"@type": "order", "id": "7", "customer": {"id": "70", "email": "a@example.com"},
                       "lineitems": [{"product_id": "P1", "quantity": 2}], "timestamp": "2024-01-02T03:04:05Z"})
    with open_store(tmp_path / "state.db") as store:
        with store.transaction() as conn:
            conn.execute("INSERT INTO run(id, command, profile, started_at) VALUES (1, 'map', 'test', 'now')")
            outbound.write(conn, [outbound.NewVersion("order", "7", wire.content_hash(body), body, LINEAGE, "ready",
                                                      None)], run_id=1, now=utcnow())
        kept, encoding = store.conn.execute("SELECT length(body), encoding FROM outbound_entry").fetchone()
        assert encoding == packing.ENCODING and kept < len(body)
        record = outbound.get(store.conn, "order", "7")
        assert record.body == body and record.lineage == json.loads(LINEAGE)
        assert store.conn.execute(
            "SELECT body, lineage, json_extract(CAST(body AS TEXT), '$.customer.id'), json_extract(j.value, '$.key')"
            " FROM outbound_record o, json_each(o.lineage) j WHERE j.key = 1").fetchone() == (body, LINEAGE, "70", "70")


def test_a_store_before_packing_migrates_and_reads_the_same(tmp_path):
    path = tmp_path / "state.db"
    conn = _store_before(path, PACKED)
    conn.execute("INSERT INTO run(id, command, profile, started_at) VALUES (1, 'map', 'test', 'then')")
    bodies = {str(i): wire.dumps({"@type": "order", "id": str(i), "customer": {"id": f"c{i}"}, "grand_total": i})
              for i in range(1, 4)}
    for id_, body in bodies.items():
        conn.execute("INSERT INTO outbound_record(type, id, content_hash, body, lineage, state, hold_reason, run_id,"
                     " mapped_at) VALUES ('order', ?, ?, ?, ?, ?, ?, 1, 'then')",
                     (id_, wire.content_hash(body), body, LINEAGE, "held" if id_ == "3" else "ready",
                      "x" if id_ == "3" else None))
    for id_ in ("1", "2"):  # 1 shares its body with the outbound record; 2 was accepted in another version
        accepted = bodies[id_] if id_ == "1" else wire.dumps({"@type": "order", "id": "2", "grand_total": 0})
        conn.execute("INSERT INTO ledger(type, id, content_hash, body, request_id, accepted_at) VALUES"
                     " ('order', ?, ?, ?, 'req', 'then')", (id_, wire.content_hash(accepted), accepted))
    before = conn.execute("SELECT id, json_extract(CAST(body AS TEXT), '$.customer.id') FROM ledger ORDER BY id"
                          ).fetchall()
    conn.close()

    with open_store(path) as store:
        conn = store.conn
        assert store.schema_version == schema.SCHEMA_VERSION
        assert {r.id: (r.body, r.lineage, r.state, r.hold_reason) for r in outbound.iter_records(conn)} == {
            id_: (body, json.loads(LINEAGE), "held" if id_ == "3" else "ready", "x" if id_ == "3" else None)
            for id_, body in bodies.items()}
        assert dict(conn.execute("SELECT DISTINCT encoding, 1 FROM outbound_entry")) == {packing.ENCODING: 1}
        assert journal.ledger_body(conn, "order", "1") == bodies["1"]
        assert dict(conn.execute("SELECT id, body IS NULL FROM ledger_entry")) == {"1": 1, "2": 0}
        assert conn.execute("SELECT id, json_extract(CAST(body AS TEXT), '$.customer.id') FROM ledger ORDER BY id"
                            ).fetchall() == before
        with store.transaction() as c:  # map makes a new body: the ledger keeps the one Ometria accepted
            new = wire.dumps({"@type": "order", "id": "1", "grand_total": 9})
            outbound.write(c, [outbound.NewVersion("order", "1", wire.content_hash(new), new, "[]", "ready", None)],
                           run_id=1, now=utcnow())
        assert journal.ledger_body(conn, "order", "1") == bodies["1"]
        assert outbound.get(conn, "order", "1").body == new


STRIPPED = next(i for i, (what, _) in enumerate(schema.MIGRATIONS) if what.startswith("staged parsed JSON kept without"))


def _nullable_without_null_default() -> list[str]:
    import types
    import typing

    from pydantic import BaseModel

    from khaosync.khaos.models import RECORD_TYPES

    def admits_none(ann) -> bool:
        if typing.get_origin(ann) in (typing.Union, types.UnionType):
            return any(admits_none(a) for a in typing.get_args(ann))
        if typing.get_origin(ann) is typing.Annotated:
            return admits_none(typing.get_args(ann)[0])
        return ann is type(None) or ann is typing.Any

    def nested(ann):
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield ann
        for arg in typing.get_args(ann):
            yield from nested(arg)

    seen, bad, todo = set(), [], list(RECORD_TYPES.values())
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, f in model.model_fields.items():
            if admits_none(f.annotation) and (f.is_required() or f.default is not None):
                bad.append(f"{model.__name__}.{name}")
            todo.extend(nested(f.annotation))
    return bad


def test_every_erp_field_that_may_be_null_defaults_to_null():
    """What makes leaving null members out of the staged JSON lossless: the model reads them back."""
    assert _nullable_without_null_default() == []


def test_parsed_is_staged_without_nulls_and_reads_back_the_same_record(tmp_path):
    from khaosync.khaos.models import SalesOrder, canonical_json, content_hash

    order = SalesOrder(sorder_id=7, sorder_code="SO7", company_id=None, lines=[], status=None)
    whole = canonical_json(order)
    with open_store(tmp_path / "state.db") as store:
        run = store.start_run("pull", "test")
        with store.transaction() as conn:
            staging.stage(conn, entity="sales_order", key="7", raw=b"<x/>", parsed=whole,
                          content_hash=content_hash(order), run_id=run, seen_at=utcnow())
        text, digest, company, missing = store.conn.execute(
            "SELECT parsed, content_hash, json_extract(parsed, '$.company_id'), json_extract(parsed, '$.nothing')"
            " FROM staged_record").fetchone()
        assert "null" in whole and "null" not in text and len(text) < len(whole)
        assert digest == content_hash(order) and company is None and missing is None
        assert SalesOrder.model_validate(staging.current(store.conn, "sales_order", "7").parsed) == order


def test_a_store_with_null_members_migrates_and_answers_the_same(tmp_path):
    path = tmp_path / "state.db"
    conn = _store_before(path, STRIPPED)
    conn.execute("INSERT INTO run(id, command, profile, started_at) VALUES (1, 'pull', 'test', 'then')")
    docs = {"1": {"sorder_id": 1, "company_id": None, "lines": [{"stock_id": None, "stock_code": "A"}, None],
                  "cancellation": {"when": None}, "note": "null and void"},
            "2": {"sorder_id": 2, "company_id": 70, "status": "x"}}
    for key, doc in docs.items():
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        conn.execute("INSERT INTO staged_record(entity, key, version, content_hash, raw, parsed, run_id, seen_at)"
                     " VALUES ('sales_order', ?, 1, ?, x'00', ?, 1, 'then')", (key, key, text))
    queries = ("SELECT key, json_extract(parsed, '$.company_id'), json_extract(parsed, '$.cancellation.when'),"
               " json_extract(parsed, '$.note') FROM staged_record ORDER BY key",
               "SELECT s.key, l.key, json_extract(l.value, '$.stock_id'), json_extract(l.value, '$.stock_code')"
               " FROM staged_record s, json_each(s.parsed, '$.lines') l ORDER BY 1, 2",
               "SELECT key FROM staged_record WHERE entity = 'sales_order' AND current = 1"
               " AND json_extract(parsed, '$.company_id') = 70")
    before = [conn.execute(q).fetchall() for q in queries]
    conn.close()
    with open_store(path) as store:
        assert [store.conn.execute(q).fetchall() for q in queries] == before
        assert dict(store.conn.execute("SELECT key, parsed FROM staged_record")) == {
            "1": '{"cancellation":{},"lines":[{"stock_code":"A"},null],"note":"null and void","sorder_id":1}',
            "2": '{"company_id":70,"sorder_id":2,"status":"x"}'}
