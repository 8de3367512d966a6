"""Stalled batches: journaled pushes never acknowledged; push errors nobody attributed (--live)."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from khaosync.config import sandbox_profile
from khaosync.detectors import STALL_AFTER, run_detectors
from khaosync.store import open_store

TYPE = "stalled_batch"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


class FakeOmetria:
    """The read side of ``OmetriaClient``, holding nothing but an error log."""

    def __init__(self, errors):
        self.errors = errors

    def push_errors(self):
        return self.errors

    def iter_orders(self):
        return iter(())

    def iter_products(self, include_variants=True):
        return iter(())

    def iter_contacts(self, collection):
        return iter(())

    def collections(self):
        return []

    def unsubscribes(self, since, before=None):
        return []

    def get_order(self, id):
        return None

    def get_product(self, id):
        return None

    def get_contact(self, collection, id):
        return None


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "state.db") as store:
        yield store


@pytest.fixture
def profile(tmp_path):
    return sandbox_profile(state=str(tmp_path / "state.db"), sandbox_path=str(tmp_path / "none"))


def journal(store, created: datetime, state: str = "journaled", request_id: str | None = None) -> int:
    with store.transaction() as conn:
        return conn.execute(
            "INSERT INTO push_batch(plan_id, type, records, state, request_id, created_at) VALUES (NULL, 'order', ?, ?, ?, ?)",
            (json.dumps([["2042", "h1"], ["2043", "h2"]]), state, request_id, created.isoformat())).lastrowid


def stalled(store, profile, **kwargs):
    return [f for f in run_detectors(store, profile, now=NOW, **kwargs) if f.type == TYPE]


def test_a_batch_journaled_longer_than_the_threshold_is_stalled_until_answered(store, profile):
    old = journal(store, NOW - STALL_AFTER - timedelta(minutes=1))
    journal(store, NOW - timedelta(minutes=2))              # still in flight
    journal(store, NOW - timedelta(days=1), state="accepted")
    [found] = stalled(store, profile)
    assert (found.records, found.severity, found.owner, found.entity) == (
        (f"push_batch:{old}",), "fail", "integration", "push_batch")
    assert "2 order records" in found.reason and "16 minutes ago" in found.reason
    store.conn.execute("UPDATE push_batch SET state = 'failed' WHERE id = ?", (old,))
    assert stalled(store, profile) == []
    assert store.exceptions(type=TYPE)[0].status == "resolved"


def test_live_errors_of_our_requests_that_push_did_not_attribute(store, profile):
    journal(store, NOW - timedelta(days=1), state="accepted", request_id="req-ours")
    store.conn.execute("INSERT INTO failed_record(type, id, content_hash, error_message, first_failed, last_failed) "
                       "VALUES ('order', '2043', 'h2', 'Invalid reference', 'x', 'x')")
    store.conn.execute("INSERT INTO ledger(type, id, content_hash, body, accepted_at) "
                       "VALUES ('order', '2050', 'h', X'7B7D', 'x')")
    errors = [
        {"error_message": "Invalid reference", "error_path": "root > lineitems > 0", "request_id": "req-ours",
         "record_type": "order", "record_id": "2042"},                       # ours, not attributed
        {"error_message": "Invalid reference", "request_id": "req-ours", "record_type": "order",
         "record_id": "2043"},                                               # ours, attributed
        {"error_message": "Bad", "request_id": "someone-else", "record_type": "order", "record_id": "9"},
        {"error_message": "Bad email", "record_type": "order", "record_id": "2050"},  # no request id: in our ledger
        {"error_message": "Bad", "record_type": "contact", "record_id": "77"},        # not ours
    ]
    found = stalled(store, profile, live_client=FakeOmetria(errors))
    assert sorted(f.records for f in found) == [("order:2042",), ("order:2050",)]
    assert {f.entity for f in found} == {"push_error"}
    assert stalled(store, profile) == []  # without --live the error log is not read, and nothing is closed
    assert len(store.exceptions(open_only=True, type=TYPE)) == 2
