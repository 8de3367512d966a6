"""Health: green when runs are recent and nothing is stuck; red for a stalled batch, an open
fail-severity exception, an unattributed rejection; green again once each is resolved."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from khaosync.ometria.client import PushError
from khaosync.stages.health import age_text, check_health
from khaosync.stages.reconcile_rules import parse_rules
from khaosync.store import StateStore, open_store

NOW = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
ENTITIES = ("customers", "stock", "orders", "credit-notes")


def iso(when: datetime) -> str:
    return when.isoformat()


def add_run(store: StateStore, command: str, finished: datetime, status: str = "ok", summary: dict | None = None,
            started: datetime | None = None) -> int:
    started = started or finished - timedelta(minutes=5)
    cur = store.conn.execute(
        "INSERT INTO run(command, profile, started_at, finished_at, status, summary) VALUES (?, 'test', ?, ?, ?, ?)",
        (command, iso(started), iso(finished) if status != "running" else None, status,
         json.dumps(summary) if summary else None))
    return int(cur.lastrowid)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    with open_store(tmp_path / "state.db") as s:
        yield s


@pytest.fixture
def healthy(store: StateStore) -> StateStore:
    """A store as a good night leaves it: a full pull an hour ago, bookmarks near the ERP's clock, a push."""
    run = add_run(store, "pull", NOW - timedelta(hours=1), summary={"entities": {e: {} for e in ENTITIES}})
    for entity in ("company", "stock_item", "sales_order", "credit_note"):
        store.conn.execute("INSERT INTO bookmark(entity, position, run_id, updated_at) VALUES (?, ?, ?, ?)",
                           (entity, iso(NOW - timedelta(hours=3)), run, iso(NOW - timedelta(hours=1))))
    add_run(store, "push", NOW - timedelta(minutes=40))
    return store


def by_name(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_a_healthy_store_is_green(healthy):
    report = check_health(healthy, now=NOW)
    assert report.status == "ok", [c.as_dict() for c in report.checks if c.status != "ok"]
    assert report.verdict().startswith("health OK: all ")
    data = report.as_dict()
    assert data["status"] == "ok"
    assert all(set(c) >= {"name", "status", "detail"} for c in data["checks"])
    assert {"pull:orders", "bookmark:orders", "push", "stalled_batches", "failed_records", "exceptions"} <= \
        set(by_name(report))


def test_a_stalled_batch_turns_health_red_and_green_again(healthy):
    cur = healthy.conn.execute(
        "INSERT INTO push_batch(type, records, state, created_at) VALUES ('order', '[[\"2042\", \"h\"]]', "
        "'journaled', ?)", (iso(NOW - timedelta(hours=2)),))
    report = check_health(healthy, now=NOW)
    assert by_name(report)["stalled_batches"] == "fail" and report.status == "fail"
    assert "stalled_batches" in report.verdict()
    # a batch journaled a minute ago is in flight, not stalled
    healthy.conn.execute("UPDATE push_batch SET created_at = ? WHERE id = ?", (iso(NOW - timedelta(minutes=1)),
                                                                              cur.lastrowid))
    assert by_name(check_health(healthy, now=NOW))["stalled_batches"] == "ok"
    healthy.conn.execute("UPDATE push_batch SET created_at = ?, state = 'accepted', accepted = 1, rejected = 0 "
                         "WHERE id = ?", (iso(NOW - timedelta(hours=2)), cur.lastrowid))
    healthy.conn.execute("INSERT INTO ledger(type, id, content_hash, body, accepted_at) VALUES "
                         "('order', '2042', 'h', x'7b7d', ?)", (iso(NOW),))
    assert check_health(healthy, now=NOW).status == "ok"


def test_an_open_fail_severity_exception_turns_health_red_until_resolved(healthy):
    run = add_run(healthy, "map", NOW - timedelta(minutes=30))
    exc = healthy.record_exception(run_id=run, type="total_mismatch", severity="fail", owner="finance", stage="map",
                                   reason="sales order 2042: 1p out", records=["sales_order:2042"],
                                   entity="sales_order", record_key="2042")
    report = check_health(healthy, now=datetime.now(UTC))
    assert by_name(report)["exceptions:finance"] == "fail" and report.status == "fail"
    assert report.exceptions_by_owner["finance"]["total_mismatch"]["records"] == ["sales_order:2042"]
    healthy.conn.execute("UPDATE exception SET resolved_at = ? WHERE id = ?", (iso(NOW), exc))
    report = check_health(healthy, now=NOW)
    assert by_name(report)["exceptions"] == "ok" and report.status == "ok"


def test_warn_severity_exceptions_wait_a_week_before_they_turn_yellow(healthy):
    run = add_run(healthy, "pull", NOW - timedelta(hours=1), summary={"entities": {e: {} for e in ENTITIES}})
    healthy.record_exception(run_id=run, type="malformed_record", severity="warn", owner="ecommerce", stage="pull",
                             reason="bad email", records=["company:1042"], entity="company", record_key="1042")
    first_seen = datetime.fromisoformat(healthy.exceptions()[0].first_seen)
    assert by_name(check_health(healthy, now=first_seen + timedelta(days=2)))["exceptions:ecommerce"] == "ok"
    late = check_health(healthy, now=first_seen + timedelta(days=8))
    assert by_name(late)["exceptions:ecommerce"] == "warn"
    assert "malformed_record x1" in next(c.detail for c in late.checks if c.name == "exceptions:ecommerce")


def test_an_overdue_or_missing_pull_and_a_lagging_bookmark(healthy, store):
    assert by_name(check_health(healthy, now=NOW + timedelta(hours=30)))["pull:orders"] == "warn"
    assert by_name(check_health(healthy, now=NOW + timedelta(hours=60)))["pull:orders"] == "fail"
    lagging = check_health(healthy, now=NOW, erp_now=NOW + timedelta(days=4))
    assert by_name(lagging)["bookmark:orders"] == "fail"
    assert "behind the ERP's clock" in next(c.detail for c in lagging.checks if c.name == "bookmark:orders")


def test_a_store_that_never_pulled_is_red(tmp_path):
    with open_store(tmp_path / "empty.db") as empty:
        report = check_health(empty, now=NOW)
    assert by_name(report)["pull:orders"] == "fail" and by_name(report)["push"] == "warn"
    assert "never pulled" in next(c.detail for c in report.checks if c.name == "pull:orders")


def test_rejected_records_must_be_attributed(healthy):
    healthy.conn.execute(
        "INSERT INTO push_batch(type, records, state, request_id, accepted, rejected, created_at, answered_at) "
        "VALUES ('contact', '[[\"7001\", \"h1\"], [\"7002\", \"h2\"]]', 'accepted', 'r-1', 1, 1, ?, ?)",
        (iso(NOW - timedelta(hours=1)), iso(NOW - timedelta(hours=1))))
    healthy.conn.execute("INSERT INTO ledger(type, id, content_hash, body, request_id, accepted_at) VALUES "
                         "('contact', '7001', 'h1', x'7b7d', 'r-1', ?)", (iso(NOW),))
    report = check_health(healthy, now=NOW)
    assert by_name(report)["unattributed_rejections"] == "fail"
    assert "contact 7002" in next(c.detail for c in report.checks if c.name == "unattributed_rejections")
    healthy.conn.execute("INSERT INTO failed_record(type, id, content_hash, error_message, first_failed, "
                         "last_failed) VALUES ('contact', '7002', 'h2', 'Invalid email', ?, ?)", (iso(NOW), iso(NOW)))
    report = check_health(healthy, now=NOW)
    assert by_name(report)["unattributed_rejections"] == "ok"
    assert by_name(report)["failed_records"] == "warn"  # the failed-record index is not empty
    assert report.failed_records[0]["id"] == "7002" and report.failed_records_total == 1


class ErrorLog:
    def __init__(self, entries):
        self.entries = entries

    def push_errors(self):
        return self.entries


def test_push_errors_about_our_records_must_be_recorded(healthy):
    healthy.conn.execute("INSERT INTO push_batch(type, records, state, request_id, accepted, rejected, created_at) "
                         "VALUES ('order', '[[\"2042\", \"h\"]]', 'accepted', 'r-9', 1, 0, ?)", (iso(NOW),))
    healthy.conn.execute("INSERT INTO ledger(type, id, content_hash, body, request_id, accepted_at) VALUES "
                         "('order', '2042', 'h', x'7b7d', 'r-9', ?)", (iso(NOW),))
    log = ErrorLog([
        PushError("Invalid reference: product does not exist", "root > lineitems > 0 > product_id", "r-9", "order",
                  "2042"),
        {"error_message": "bad email", "error_path": "root > email", "request_id": "someone-else",
         "record_type": "contact", "record_id": "web-1"},
    ])
    report = check_health(healthy, now=NOW, live_client=log)
    check = next(c for c in report.checks if c.name == "push_errors")
    assert check.status == "fail" and "1 from other sources" in check.detail
    assert check.data["unattributed"][0]["record_id"] == "2042"
    healthy.conn.execute("INSERT INTO failed_record(type, id, content_hash, error_message, first_failed, "
                         "last_failed) VALUES ('order', '2042', 'h', 'Invalid reference', ?, ?)", (iso(NOW), iso(NOW)))
    assert by_name(check_health(healthy, now=NOW, live_client=log))["push_errors"] == "ok"


def test_documented_error_entries_are_counted_apart_not_called_foreign(healthy):
    log = ErrorLog([{"error_message": "not a valid value", "error_path": "root > price"},
                    {"error_message": "not a valid value", "error_path": "root > email"}])
    check = next(c for c in check_health(healthy, now=NOW, live_client=log).checks if c.name == "push_errors")
    assert check.status == "ok" and (check.data["anonymous"], check.data["foreign"]) == (2, 0)
    assert "2 name no request or record" in check.detail and "other sources" not in check.detail


def test_a_run_killed_mid_way_is_reported(healthy):
    add_run(healthy, "push", NOW, status="running", started=NOW - timedelta(hours=9))
    report = check_health(healthy, now=NOW)
    assert by_name(report)["runs"] == "warn" and report.status == "warn"
    assert "never finished" in next(c.detail for c in report.checks if c.name == "runs")


def test_thresholds_come_from_the_rules_file(healthy):
    rules = parse_rules("health:\n  last_pull: {warn_hours: 0.5, fail_hours: null}\n  stalled_batch_minutes: 5\n")
    assert by_name(check_health(healthy, now=NOW, rules=rules))["pull:orders"] == "warn"


def test_ages_read_at_a_glance():
    assert [age_text(h) for h in (None, 0.05, 5.25, 100)] == ["never", "3 min", "5.2 h", "4 d"]
