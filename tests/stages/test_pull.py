"""Pull against the sandbox: what was planted is what gets staged, nothing twice, nothing lost."""

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from khaosync.config import sandbox_profile
from khaosync.khaos.soap import KhaosClient
from khaosync.sandbox.generator import load_manifest
from khaosync.sandbox.lifecycle import advance_sandbox
from khaosync.sandbox.server import SandboxApp
from khaosync.stages.pull import ENTITIES, FileSource, SoapSource, pull
from khaosync.store import open_store
from khaosync.store import staging

KEY = "sandbox-key"


def profile_for(tmp_path: Path, sandbox: Path):
    return sandbox_profile(state=str(tmp_path / "state.db"), sandbox_path=str(sandbox))


class CountingTransport(httpx.BaseTransport):
    """The sandbox over WSGI, recording each SOAP call; optionally dies at call N."""

    def __init__(self, app, die_at: int | None = None):
        self.inner = httpx.WSGITransport(app=app)
        self.calls: list[tuple[str, bytes]] = []
        self.die_at = die_at

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.calls.append((request.headers.get("SOAPAction", ""), request.content))
        if self.die_at is not None and len(self.calls) >= self.die_at:
            raise Killed(f"killed at call {len(self.calls)}")
        return self.inner.handle_request(request)


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing may swallow it."""


def run_pull(tmp_path, sandbox, transport=None, **kwargs):
    profile = profile_for(tmp_path, sandbox)
    app = SandboxApp(sandbox, KEY)
    transport = transport or CountingTransport(app)
    client = KhaosClient(profile.khaos, transport=transport)
    source = SoapSource(client, profile, FileSource(sandbox / "exports"))
    with open_store(profile.state) as store:
        return pull(store, profile, source, **kwargs), transport


def current_state(state_path) -> dict:
    with open_store(state_path, write=False) as store:
        rows = store.conn.execute("SELECT entity, key, content_hash FROM staged_record WHERE current = 1").fetchall()
    return {(e, k): h for e, k, h in rows}


def test_pull_stages_what_the_manifest_planted(tmp_path, sandbox):
    manifest = load_manifest(sandbox)
    result, _ = run_pull(tmp_path, sandbox)
    counts = manifest["counts"]
    with open_store(tmp_path / "state.db", write=False) as store:
        c = store.conn
        blank_code = [m for m in manifest["faults"]["missing_field"]
                      if m["entity"] == "company" and m["field"] == "company_code"]
        # KC exports companies by URN only: one listed with a blank URN cannot be fetched, and says so
        assert staging.count_current(c, "company") == counts["companies"] - len(blank_code)
        if blank_code:
            assert any("blank code" in r.reason and r.type == "malformed_record" for r in store.exceptions(open_only=True))
        assert staging.count_current(c, "stock_item") == counts["stock_items"]
        assert staging.count_current(c, "sales_order") == counts["sales_orders"]
        assert staging.count_current(c, "credit_note") == counts["credit_notes"]
        # every planted broken or hostile record is staged raw-only, with its exception
        for fault in ("broken_xml", "hostile_xml"):
            for item in manifest["faults"][fault]:
                entity, key = item["entity"], str(item["key"])
                rec = staging.current(c, entity, key)
                assert rec is not None and rec.parsed is None and rec.raw, (fault, item)
        open_rows = store.exceptions(open_only=True)
    by_record = {}
    for row in open_rows:
        for r in row.records:
            by_record.setdefault(r, set()).add(row.type)
    for item in manifest["faults"]["bad_email"]:
        assert "malformed_record" in by_record[f"company:{item['company_id']}"]
    for key in _keys(manifest["faults"]["unknown_currency"], "sorder_id"):
        assert "malformed_record" in by_record[f"sales_order:{key}"]
    for key in _keys(manifest["faults"]["negative_quantity"], "sorder_id"):
        assert "malformed_record" in by_record[f"sales_order:{key}"]
    for key in _keys(manifest["faults"]["total_mismatch"], "sorder_id"):
        assert "total_mismatch" in by_record[f"sales_order:{key}"]
    for key in _keys(manifest["faults"]["company_without_contacts"], "company_id"):
        assert "malformed_record" in by_record[f"company:{key}"]
    twice = manifest["faults"]["duplicate_in_response"]
    assert twice["company"] and twice["sales_order"], "the generator plants records served twice"
    for entity, keys in twice.items():
        for key in keys:
            assert "duplicate_in_response" in by_record[f"{entity}:{key}"]
    # clean records raised nothing
    faulty = {f"company:{k}" for k in _all_fault_keys(manifest, "company")} | \
             {f"sales_order:{k}" for k in _all_fault_keys(manifest, "sales_order")}
    unexplained = {r for r in by_record if r not in faulty and not r.startswith("company:payload:")}
    assert not unexplained, sorted(unexplained)[:10]


def _keys(items, field):
    return [str(i[field]) if isinstance(i, dict) else str(i) for i in items]


def _all_fault_keys(manifest, entity):
    """Every key any fault kind names for ``entity`` (malformed kinds only)."""
    field = {"company": "company_id", "sales_order": "sorder_id"}[entity]
    keys = set()
    for key in manifest["faults"]["duplicate_in_response"].get(entity, []):
        keys.add(str(key))
    for kind in ("bad_email", "unknown_currency", "negative_quantity", "missing_field", "company_without_contacts",
                 "broken_xml", "hostile_xml", "total_mismatch", "unknown_product"):
        for item in manifest["faults"][kind]:
            if isinstance(item, dict):
                if item.get("entity") == entity and "key" in item:
                    keys.add(str(item["key"]))
                elif field in item:
                    keys.add(str(item[field]))
            else:
                keys.add(str(item))
    return keys


def test_second_pull_stores_no_new_versions(tmp_path, sandbox):
    run_pull(tmp_path, sandbox)
    with open_store(tmp_path / "state.db", write=False) as store:
        before = staging.count_versions(store.conn)
    result, _ = run_pull(tmp_path, sandbox)
    with open_store(tmp_path / "state.db", write=False) as store:
        assert staging.count_versions(store.conn) == before
    assert all(r.new == 0 and r.changed == 0 for r in result.entities.values())


def test_incremental_pull_after_advance_picks_up_exactly_the_changes(tmp_path, sandbox):
    profile = profile_for(tmp_path, sandbox)
    run_pull(tmp_path, sandbox)
    bookmarks_before = {}
    with open_store(profile.state, write=False) as store:
        for entity in ENTITIES.values():
            bookmarks_before[entity] = staging.get_bookmark(store.conn, entity)
    state_before = current_state(profile.state)
    summary = advance_sandbox(sandbox, 3, api_key=KEY)
    result, transport = run_pull(tmp_path, sandbox)
    state_after = current_state(profile.state)
    changed = {k for k in state_after if state_before.get(k) != state_after[k]}
    expected = {(entity, str(key)) for entity, keys in summary["changed"].items() for key in keys}
    assert changed == expected
    # nothing older than the bookmark minus the look-back window was asked for
    lookback = timedelta(hours=profile.pull.lookback_hours)
    for action, body in transport.calls:
        for tag in (b"<LastUpdated>", b"<DateFrom>", b"<DateValue>"):
            if tag in body:
                asked = body.split(tag)[1].split(b"<")[0].decode()
                from khaosync.khaos.convert import kc_datetime_to_utc
                asked_utc = kc_datetime_to_utc(asked)
                if asked_utc is None:  # "no date": ExportStock's LastUpdated filter, not a re-read
                    continue
                floor = min(datetime.fromisoformat(b) for b in bookmarks_before.values() if b) - lookback
                assert asked_utc >= floor - timedelta(hours=1), (action, asked)


def test_renamed_stock_code_stays_traceable(tmp_path, sandbox):
    manifest = load_manifest(sandbox)
    run_pull(tmp_path, sandbox)
    with open_store(tmp_path / "state.db", write=False) as store:
        for item in manifest["faults"]["renamed_stock_code"]:
            rec = staging.current(store.conn, "stock_item", str(item["stock_id"]))
            assert rec.parsed["stock_code"] == item["new_code"]
            # the order lines placed before the rename carry the old code and the stable id
            assert staging.keys_by_alias(store.conn, "stock_item", "stock_code", item["new_code"]) == [str(item["stock_id"])]
            for sorder_id in item["sales_orders"]:
                order = staging.current(store.conn, "sales_order", str(sorder_id)).parsed
                lines = [l for l in order["lines"] if str(l["stock_id"]) == str(item["stock_id"])]
                assert lines and all(l["stock_code"] == item["old_code"] for l in lines)


@pytest.mark.parametrize("die_at", [2, 5, 9, 14])
def test_killed_pull_resumes_complete_and_without_duplicates(tmp_path, sandbox, die_at):
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    run_pull(reference_dir, sandbox)
    expected = current_state(reference_dir / "state.db")

    app = SandboxApp(sandbox, KEY)
    with pytest.raises(Killed):
        run_pull(tmp_path, sandbox, transport=CountingTransport(app, die_at=die_at))
    run_pull(tmp_path, sandbox)
    assert current_state(tmp_path / "state.db") == expected
    with open_store(tmp_path / "state.db", write=False) as store:
        versions = staging.count_versions(store.conn)
        runs = store.conn.execute("SELECT status FROM run ORDER BY id").fetchall()
    assert versions == len(expected)  # no record stored twice
    assert [r[0] for r in runs] == ["failed", "ok"]


def test_a_new_sandbox_state_is_refused_while_another_run_writes(tmp_path, sandbox):
    from khaosync.errors import StateLockedError

    profile = profile_for(tmp_path, sandbox)
    with open_store(profile.state, command="pull"):
        with pytest.raises(StateLockedError):
            run_pull(tmp_path, sandbox)


def test_file_source_stages_the_same_records_as_soap(tmp_path, sandbox):
    """A client's export folder gives what the web service gives (the audit path)."""
    (tmp_path / "soap").mkdir()
    run_pull(tmp_path / "soap", sandbox)
    soap_state = current_state(tmp_path / "soap" / "state.db")

    app = SandboxApp(sandbox, KEY)
    profile = profile_for(tmp_path, sandbox)
    client = KhaosClient(profile.khaos, transport=httpx.WSGITransport(app=app))
    exports = tmp_path / "exports"
    exports.mkdir()
    since = datetime(2000, 1, 1, tzinfo=timezone.utc)
    (exports / "companies.xml").write_bytes(client.export_company(client.get_company_list(since)))
    (exports / "stock.xml").write_bytes(client.export_stock([c for c, _ in client.get_stock_list(since)]))
    orders = client.export_orders_window(since, datetime(2100, 1, 1, tzinfo=timezone.utc), by="updated")
    (exports / "sales_orders.xml").write_bytes(orders)
    from khaosync.khaos.parse import parse_sales_orders
    ids = [p.key for p in _safe(parse_sales_orders, orders) if p.key]
    (exports / "order_status.xml").write_bytes(client.export_order_status(ids, mapping_type=5))
    shutil.copy(sandbox / "exports" / "credit_notes.csv", exports / "credit_notes.csv")

    (tmp_path / "files").mkdir()
    files_profile = sandbox_profile(state=str(tmp_path / "files" / "state.db"), sandbox_path=str(sandbox))
    with open_store(files_profile.state) as store:
        pull(store, files_profile, FileSource(exports))
    files_state = current_state(tmp_path / "files" / "state.db")
    # Parsed records agree exactly; raw-only (broken) records may be cut differently.
    def parsed_only(state, path):
        with open_store(path, write=False) as store:
            raw_only = {(e, k) for e, k in store.conn.execute(
                "SELECT entity, key FROM staged_record WHERE current = 1 AND parsed IS NULL")}
        return {k: v for k, v in state.items() if k not in raw_only}
    assert parsed_only(files_state, tmp_path / "files" / "state.db") == parsed_only(soap_state, tmp_path / "soap" / "state.db")


def _safe(parser, doc):
    from khaosync.khaos.parse import DocumentError
    from khaosync.stages.pull import read_document
    try:
        return list(parser(doc))
    except DocumentError:
        return read_document("sales_order", doc)[0]
