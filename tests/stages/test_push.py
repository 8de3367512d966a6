"""Push against the in-process Ometria emulator: the plan, exactly, once; refusals isolated;
late errors attributed; read-back compared; never more than 100 records, one type, the rate.

Plans are written straight into the store (``make_plan``): diff, which makes them in real
runs, is another stage's business.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import SecretStr
from typer.testing import CliRunner

from khaosync.config import (
    SANDBOX_OMETRIA_URL,
    OmetriaSettings,
    Profile,
    sandbox_profile,
)
from khaosync.errors import EXIT_EXTERNAL, EXIT_FINDINGS, EXIT_USAGE
from khaosync.ometria import wire
from khaosync.ometria.client import OmetriaClient
from khaosync.ometria.errors import OmetriaAuthError, OmetriaRequestError
from khaosync.sandbox.ometria_emulator import OmetriaEmulator
from khaosync.stages.push import (
    MAX_CONSECUTIVE_REFUSALS,
    PlanNotFoundError,
    StalePlanError,
    differences,
    push_plan,
)
from khaosync.store import StateStore, journal, open_store, outbound, plans
from khaosync.store.db import utcnow

KEY = "sandbox-key"


# -- records and plans ---------------------------------------------------------------------------

def product(i: int, **extra: Any) -> dict:
    return {"@type": "product", "id": f"P{i:04d}", "title": f"Mug {i}", "sku": f"MUG-{i}",
            "price": Decimal(f"{9 + i % 7}.{i % 100:02d}"), "currency": "GBP", "url": f"https://shop.example.com/p/{i}",
            "is_active": True, "attributes": [{"type": "brand", "id": "acme", "label": "Acme"}], **extra}


def contact(i: int, **extra: Any) -> dict:
    return {"@type": "contact", "@collection": "khaos", "id": f"C{i:04d}", "customer_id": f"CU{i:04d}",
            "email": f"c{i}@example.com", "firstname": "Ann", "lastname": f"Smith{i}", **extra}


def order(i: int, product_id: str, **extra: Any) -> dict:
    return {"@type": "order", "id": f"O{i:04d}", "timestamp": "2026-10-01T09:12:00Z", "currency": "GBP",
            "grand_total": Decimal("23.97"), "subtotal": Decimal("19.98"), "shipping": Decimal("3.99"),
            "discount": Decimal("0.00"), "tax": Decimal("0"), "status": "complete", "is_valid": True,
            "customer": {"id": f"CU{i:04d}"},
            "lineitems": [{"product_id": product_id, "quantity": 2, "unit_price": Decimal("9.99"),
                           "total": Decimal("19.98")}], **extra}


def merchant(products: int, contacts: int, orders: int) -> list[dict]:
    return ([product(i) for i in range(products)] + [contact(i) for i in range(contacts)]
            + [order(i, f"P{i % max(products, 1):04d}") for i in range(orders)])


def make_plan(store: StateStore, plan_id: str, docs: list[dict], change: str = "new") -> None:
    """What diff would leave: outbound records (ready) and a plan of exactly these bodies."""
    run = store.start_run("diff", "test")
    now = utcnow()
    with store.transaction() as c:
        c.execute("INSERT INTO plan(id, created_at, run_id, scope, counts) VALUES (?, ?, ?, ?, ?)",
                  (plan_id, now, run, json.dumps(sorted({d["@type"] for d in docs})), json.dumps({change: len(docs)})))
        for doc in docs:
            body = wire.dumps(doc)
            digest = wire.content_hash(body)
            outbound.write(c, [outbound.NewVersion(doc["@type"], doc["id"], digest, body, "[]", "ready", None)],
                           run_id=run, now=now)
            plans.add_records(c, plan_id, [(doc["@type"], doc["id"], change, digest, body)])


# -- the emulator, a spy, the client ---------------------------------------------------------------

class FakeTime:
    """A shared fake clock: sleeping moves it to the sleeper's wake time (never back)."""

    def __init__(self) -> None:
        self.now = 5000.0
        self.lock = threading.Lock()

    def clock(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += max(seconds, 0.0)


class Spy(httpx.BaseTransport):
    """The emulator behind a transport that notes every push: when, how many records, which types."""

    def __init__(self, app: Callable, clock: Callable[[], float] = time.monotonic,
                 before: Callable[[httpx.Request], httpx.Response | None] | None = None):
        self.inner = httpx.WSGITransport(app=app)
        self.clock = clock
        self.before = before
        self.lock = threading.Lock()
        self.pushes: list[tuple[float, int, frozenset[str]]] = []
        self.reads = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        if request.method == "POST":
            records = json.loads(request.content)
            with self.lock:
                self.pushes.append((self.clock(), len(records), frozenset(r.get("@type") for r in records)))
        else:
            with self.lock:
                self.reads += 1
        if self.before is not None:
            answer = self.before(request)
            if answer is not None:
                return answer
        return self.inner.handle_request(request)


@pytest.fixture
def emulator(tmp_path: Path) -> OmetriaEmulator:
    emu = OmetriaEmulator(tmp_path / "ometria.db", KEY, push_rate=1000, read_rate=1000)
    yield emu
    emu.close()


def make_settings(**over: Any) -> OmetriaSettings:
    return OmetriaSettings(**{"base_url": SANDBOX_OMETRIA_URL, "api_key": SecretStr(KEY), "push_rate": 1000,
                              "read_rate": 1000, "retries": 3, "push_in_flight": 4, **over})


def make_profile(tmp_path: Path, **over: Any) -> Profile:
    return sandbox_profile(state=str(tmp_path / "state.db")).model_copy(update={"ometria": make_settings(**over)})


def client_for(profile: Profile, transport: httpx.BaseTransport, fake: FakeTime | None = None) -> OmetriaClient:
    if fake is None:
        return OmetriaClient(profile.ometria, transport=transport, sleep=lambda s: None)
    return OmetriaClient(profile.ometria, transport=transport, clock=fake.clock, sleep=fake.sleep)


def held(emu: OmetriaEmulator, type_: str) -> dict[str, dict]:
    """What the emulator stores, numbers as exact decimals (as the client reads them)."""
    return {doc["id"]: wire.loads(json.dumps(doc).encode()) for doc in emu.records(type_)}


def assert_holds_exactly(emu: OmetriaEmulator, docs: list[dict]) -> None:
    emu.process_queue()
    for type_ in ("product", "contact", "order"):
        expected = {d["id"]: wire.loads(wire.dumps(d)) for d in docs if d["@type"] == type_}
        stored = held(emu, type_)
        assert set(stored) == set(expected), type_
        for id_, doc in expected.items():
            assert differences(doc, stored[id_]) == [], (type_, id_)


def ledger(store: StateStore) -> dict[tuple[str, str], tuple[str, str | None]]:
    return {(t, i): (h, r) for t, i, h, r in store.conn.execute("SELECT type, id, content_hash, request_id FROM ledger")}


# -- the happy path ----------------------------------------------------------------------------------

def test_a_plan_is_pushed_exactly_and_the_ledger_keeps_it(tmp_path: Path, emulator: OmetriaEmulator) -> None:
    docs = merchant(230, 140, 120)
    profile = make_profile(tmp_path)
    spy = Spy(emulator)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", docs)
        result = push_plan(store, profile, client_for(profile, spy), None, commit=True)
        assert_holds_exactly(emulator, docs)
        rows = ledger(store)
        assert len(rows) == len(docs) and all(request_id for _, request_id in rows.values())
        assert rows[("order", "O0007")][0] == wire.content_hash(wire.dumps(docs[230 + 140 + 7]))
        assert journal.batch_states(store.conn) == {"accepted": 3 + 2 + 2}
        assert journal.find_plan(store.conn, "plan-1").status == "pushed"
        verified = store.conn.execute("SELECT type, count(*) FROM ledger WHERE verified_at IS NOT NULL GROUP BY type")
        assert dict(verified.fetchall()) == {"product": 20, "contact": 20, "order": 20}
    data = result.as_dict()
    assert {k: data[k] for k in ("sandbox", "committed", "plan", "exceptions")} == {
        "sandbox": True, "committed": True, "plan": "plan-1", "exceptions": {}}
    assert data["sent"] == data["accepted"] == {"product": 230, "contact": 140, "order": 120}
    assert data["rejected"] == {"product": 0, "contact": 0, "order": 0}
    assert data["verified"] == {"product": 20, "contact": 20, "order": 20}
    assert result.fail_findings == 0
    # products, then contacts, then orders: never a type before the one it may need
    order_of_types = [next(iter(types)) for _, _, types in spy.pushes]
    assert order_of_types == ["product"] * 3 + ["contact"] * 2 + ["order"] * 2
    assert emulator.stats()["records_received"] == len(docs)


def test_a_second_run_sends_nothing_again(tmp_path: Path, emulator: OmetriaEmulator) -> None:
    docs = merchant(20, 10, 10)
    profile = make_profile(tmp_path)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", docs)
        push_plan(store, profile, client_for(profile, Spy(emulator)), "plan-1", commit=True, verify="none")
        before = emulator.stats()["records_received"]
        again = push_plan(store, profile, client_for(profile, Spy(emulator)), "plan-1", commit=True, verify="none")
    assert sum(again.sent.values()) == 0 and emulator.stats()["records_received"] == before


def test_without_commit_nothing_is_sent_or_written(tmp_path: Path, emulator: OmetriaEmulator) -> None:
    docs = merchant(5, 3, 4)
    profile = make_profile(tmp_path)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", docs)
        runs = store.conn.execute("SELECT count(*) FROM run").fetchone()[0]
        stats = emulator.stats()
        result = push_plan(store, profile, None, None, commit=False)
        assert emulator.stats() == stats
        assert store.conn.execute("SELECT count(*) FROM run").fetchone()[0] == runs
        assert store.conn.execute("SELECT count(*) FROM push_batch").fetchone()[0] == 0
    data = result.as_dict()
    assert data["committed"] is False and data["plan"] == "plan-1"
    assert data["summary"] == {"product": {"new": 5}, "contact": {"new": 3}, "order": {"new": 4}}
    assert data["pending"] == {"product": 5, "contact": 3, "order": 4}
    assert data["sent"] == {"product": 0, "contact": 0, "order": 0}


def test_no_open_plan_is_a_usage_error(tmp_path: Path) -> None:
    profile = make_profile(tmp_path)
    with open_store(profile.state) as store:
        with pytest.raises(PlanNotFoundError, match="no open plan") as caught:
            push_plan(store, profile, None, None, commit=False)
        assert caught.value.exit_code == EXIT_USAGE
        with pytest.raises(PlanNotFoundError, match="no plan 'nope'"):
            push_plan(store, profile, None, "nope", commit=False)


def test_a_stale_plan_is_refused_before_anything_is_sent(tmp_path: Path, emulator: OmetriaEmulator) -> None:
    docs = merchant(4, 2, 2)
    profile = make_profile(tmp_path)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", docs)
        changed = wire.dumps(product(1, title="Mug renamed"))
        with store.transaction() as c:
            c.execute("UPDATE outbound_record SET body = ?, content_hash = ? WHERE type = 'product' AND id = 'P0001'",
                      (changed, wire.content_hash(changed)))
            c.execute("UPDATE outbound_record SET state = 'held' WHERE type = 'order' AND id = 'O0000'")
        for commit in (False, True):
            with pytest.raises(StalePlanError) as caught:
                push_plan(store, profile, client_for(profile, Spy(emulator)), "plan-1", commit=commit)
            assert str(caught.value).startswith("plan plan-1 is stale: 2 records changed since it was made")
            assert "order:O0000" in str(caught.value) and "product:P0001" in str(caught.value)
            assert "run `khaosync diff` again" in str(caught.value) and caught.value.exit_code == EXIT_USAGE
    assert emulator.stats()["push_requests"] == 0


def test_a_superseded_plan_is_refused(tmp_path: Path) -> None:
    profile = make_profile(tmp_path)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", merchant(2, 0, 0))
        with store.transaction() as c:
            c.execute("UPDATE plan SET status = 'superseded' WHERE id = 'plan-1'")
        with pytest.raises(StalePlanError, match="plan plan-1 was superseded"):
            push_plan(store, profile, None, "plan-1", commit=False)


# -- refusals --------------------------------------------------------------------------------------

@pytest.fixture
def detailed(tmp_path: Path) -> OmetriaEmulator:
    """The emulator whose error log names request, record and rule (``error_detail``): not
    documented, so khaosync uses it when there and never needs it."""
    emu = OmetriaEmulator(tmp_path / "ometria-detailed.db", KEY, push_rate=1000, read_rate=1000, error_detail=True)
    yield emu
    emu.close()


@pytest.mark.parametrize("error_log", ["attributed", "documented"])
def test_rejected_records_are_isolated_and_indexed(tmp_path: Path, emulator: OmetriaEmulator,
                                                   detailed: OmetriaEmulator, error_log: str) -> None:
    """``documented``: /push/_errors as Ometria documents it ({error_message, error_path}, the
    generic message), the emulator's default: every rejection is still pinned to its record."""
    if error_log == "attributed":
        emulator = detailed
    docs = merchant(100, 60, 0)
    bad = {"P0003": "Invalid type: expected a number", "P0042": "Invalid url: expected an absolute http(s) URL",
           "P0077": "Invalid type: expected a number", "C0010": "Invalid email address"}
    docs[3]["price"] = "9.99"
    docs[42]["url"] = "shop/p/42"
    docs[77]["price"] = "free"
    docs[100 + 10]["email"] = "not-an-email"
    spy = Spy(emulator)
    profile = make_profile(tmp_path)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", docs)
        result = push_plan(store, profile, client_for(profile, spy), None, commit=True, verify="none")
        failed = {r["id"]: r for r in journal.failed_records(store.conn)}
        if error_log == "attributed":
            assert {i: r["error_message"] for i, r in failed.items()} == bad
            assert failed["P0042"]["error_path"] == "root > url" and failed["P0042"]["attempts"] == 1
        else:  # entries that name no record cannot be matched: the records are known, the reasons not
            assert set(failed) == set(bad)
            assert {r["error_message"] for r in failed.values()} == {
                "rejected by Ometria (no matching entry in /push/_errors)"}
        assert {i for _, i in ledger(store)} == {d["id"] for d in docs} - set(bad)
        exceptions = store.exceptions(open_only=True, type="push_rejected")
        assert sorted(e.record_key for e in exceptions) == sorted(bad)
        assert {e.owner for e in exceptions} == {"integration"} and {e.severity for e in exceptions} == {"fail"}
        assert journal.find_plan(store.conn, "plan-1").status == "pushed"  # every record settled, one way or the other

        # the next run retries the failed records (and only those): still refused, attempts counted
        again = push_plan(store, profile, client_for(profile, spy), "plan-1", commit=True, verify="none")
        assert sum(again.sent.values()) == len(bad) and sum(again.rejected.values()) == len(bad)
        assert {r["attempts"] for r in journal.failed_records(store.conn)} == {2}
        assert again.exceptions == Counter()  # the same findings, seen again, are not new
    assert result.rejected == Counter({"product": 3, "contact": 1})
    assert result.accepted == Counter({"product": 97, "contact": 59})
    assert result.fail_findings == 4 and result.exceptions == Counter({"push_rejected": 4})
    assert all(size <= 100 for _, size, _ in spy.pushes)
    good = [d for d in docs if d["id"] not in bad]
    assert_holds_exactly(emulator, good)
    if error_log == "documented":  # halving: more pushes than batches, each half smaller
        assert len(spy.pushes) > 2 and min(size for _, size, _ in spy.pushes) == 1


def test_a_fixed_record_leaves_the_failed_index(tmp_path: Path, emulator: OmetriaEmulator) -> None:
    broken = product(1, price="oops")
    profile = make_profile(tmp_path)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", [product(0), broken])
        push_plan(store, profile, client_for(profile, Spy(emulator)), None, commit=True, verify="none")
        assert [r["id"] for r in journal.failed_records(store.conn)] == ["P0001"]
        make_plan(store, "plan-2", [product(1)], change="changed")  # mapping fixed: a new version
        push_plan(store, profile, client_for(profile, Spy(emulator)), "plan-2", commit=True, verify="none")
        assert journal.failed_records(store.conn) == []
        assert store.exceptions(open_only=True) == []
        assert ("product", "P0001") in ledger(store)


def test_a_record_over_60kb_is_never_sent(tmp_path: Path, emulator: OmetriaEmulator) -> None:
    huge = product(2, title="x" * (wire.RECORD_LIMIT + 10))
    profile = make_profile(tmp_path)
    spy = Spy(emulator)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", [product(1), huge])
        result = push_plan(store, profile, client_for(profile, spy), None, commit=True, verify="none")
        [failed] = journal.failed_records(store.conn)
        assert failed["id"] == "P0002" and "60" in failed["error_message"] or "record limit" in failed["error_message"]
        [finding] = store.exceptions(type="record_too_large")
        assert finding.record_key == "P0002" and finding.stage == "push"
    assert spy.pushes[0][1] == 1 and result.sent["product"] == 1 and result.rejected["product"] == 1


def refuse_marked(marker: bytes) -> Callable[[httpx.Request], httpx.Response | None]:
    def before(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and marker in request.content:
            return httpx.Response(400, json={"status": "ERROR", "error": "Invalid body: cannot parse record"})
        return None
    return before


def test_a_400_is_split_down_to_the_record_that_causes_it(tmp_path: Path, emulator: OmetriaEmulator) -> None:
    docs = [product(i) for i in range(40)]
    docs[17]["title"] = "POISON"
    profile = make_profile(tmp_path)
    spy = Spy(emulator, before=refuse_marked(b"POISON"))
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", docs)
        push_plan(store, profile, client_for(profile, spy), None, commit=True, verify="none")
        [failed] = journal.failed_records(store.conn)
        assert failed["id"] == "P0017" and failed["error_message"].startswith("request refused: HTTP 400")
        assert len(ledger(store)) == 39
    assert len(spy.pushes) <= 2 * 6 + 1  # about two per halving level, never one per record


def test_a_400_on_everything_stops_the_run(tmp_path: Path, emulator: OmetriaEmulator) -> None:
    profile = make_profile(tmp_path)
    spy = Spy(emulator, before=refuse_marked(b'"@type"'))
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", [product(i) for i in range(300)])
        with pytest.raises(OmetriaRequestError) as caught:
            push_plan(store, profile, client_for(profile, spy), None, commit=True, verify="none", in_flight=1)
        assert caught.value.exit_code == EXIT_EXTERNAL
        assert ledger(store) == {}
        assert journal.batch_states(store.conn) == {"failed": 1}
        assert store.conn.execute("SELECT status FROM run ORDER BY id DESC LIMIT 1").fetchone()[0] == "failed"
    assert len(spy.pushes) == MAX_CONSECUTIVE_REFUSALS + 1


def test_a_revoked_key_fails_at_once_with_exit_3(tmp_path: Path, emulator: OmetriaEmulator) -> None:
    profile = make_profile(tmp_path)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", merchant(3, 0, 0))
        wrong = profile.model_copy(update={"ometria": make_settings(api_key=SecretStr("revoked-key"))})
        with pytest.raises(OmetriaAuthError) as caught:
            push_plan(store, profile, client_for(wrong, Spy(emulator)), None, commit=True)
        assert caught.value.exit_code == EXIT_EXTERNAL and "key not authorised" in str(caught.value)
        assert "revoked-key" not in str(caught.value)
        assert ledger(store) == {}


# -- what Ometria refuses after it answered -----------------------------------------------------------

def test_a_late_error_is_attributed_in_the_same_run(tmp_path: Path, detailed: OmetriaEmulator) -> None:
    docs = [product(1), order(1, "P0001"), order(2, "P0404")]  # P0404: a product Ometria does not hold
    profile = make_profile(tmp_path)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", docs)
        result = push_plan(store, profile, client_for(profile, Spy(detailed)), None, commit=True)
        assert result.accepted["order"] == 2 and result.failed_later["order"] == 1
        assert ("order", "O0002") not in ledger(store) and ("order", "O0001") in ledger(store)
        [failed] = journal.failed_records(store.conn)
        assert (failed["id"], failed["error_path"]) == ("O0002", "root > lineitems > 0 > product_id")
        [finding] = store.exceptions(type="push_rejected")
        assert finding.record_key == "O0002" and "refused when Ometria processed it" in finding.reason


def many_orders(n: int) -> list[dict]:
    """A product, ``n`` orders of it, and one order of a product Ometria does not hold (O0999)."""
    return [product(1), *(order(i, "P0001") for i in range(n)), order(999, "P0404")]


def assert_only_the_bad_order_left_the_ledger(store: StateStore, n: int) -> None:
    assert {i for t, i in ledger(store) if t == "order"} == {f"O{i:04d}" for i in range(n)}
    [failed] = journal.failed_records(store.conn)
    assert (failed["id"], failed["error_message"]) == ("O0999", "accepted but not found on read-back")
    [finding] = store.exceptions(open_only=True, type="push_verification_mismatch")
    assert finding.record_key == "O0999"


def test_a_late_error_in_the_documented_log_is_found_by_reading_back(tmp_path: Path,
                                                                     emulator: OmetriaEmulator) -> None:
    """The documented log names no record: the new entry makes push read back every record it
    has not verified yet, beyond the sample (verify_sample 2 here), so the refused one is found."""
    profile = make_profile(tmp_path, verify_sample=2)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", many_orders(30))
        result = push_plan(store, profile, client_for(profile, Spy(emulator)), None, commit=True)
        assert result.accepted["order"] == 31 and result.mismatched == Counter({"order": 1})
        assert result.verified["order"] == 30 and result.verified["product"] == 1
        assert_only_the_bad_order_left_the_ledger(store, 30)
        # the next run sees the same log: nothing new, so no read-back beyond its own sample
        make_plan(store, "plan-2", [contact(1)])
        spy = Spy(emulator)
        again = push_plan(store, profile, client_for(profile, spy), "plan-2", commit=True)
        assert sum(again.verified.values()) == 1 and spy.reads == 2 + 1


@pytest.mark.parametrize("error_log", ["attributed", "documented"])
def test_a_late_error_is_attributed_on_the_next_run(tmp_path: Path, error_log: str) -> None:
    queue_clock = FakeTime()
    emu = OmetriaEmulator(tmp_path / "ometria.db", KEY, push_rate=1000, read_rate=1000, processing_delay_s=60,
                          clock=queue_clock.clock, error_detail=error_log == "attributed")
    profile = make_profile(tmp_path)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", [product(1), order(1, "P0001"), order(2, "P0404")])
        first = push_plan(store, profile, client_for(profile, Spy(emu)), None, commit=True, verify="none")
        assert first.failed_later == Counter() and len(ledger(store)) == 3  # not processed yet: all accepted
        queue_clock.sleep(120)  # Ometria gets round to it
        make_plan(store, "plan-2", [contact(1)])
        second = push_plan(store, profile, client_for(profile, Spy(emu)), "plan-2", commit=True, verify="none")
        assert set(ledger(store)) == {("product", "P0001"), ("order", "O0001"), ("contact", "C0001")}
        [failed] = journal.failed_records(store.conn)
        if error_log == "attributed":
            assert second.failed_later == Counter({"order": 1})
            assert failed["id"] == "O0002" and "product does not exist" in failed["error_message"]
            assert second.exceptions == Counter({"push_rejected": 1}) and second.fail_findings == 1
        else:  # the new anonymous entry: every record the first run left unverified is read back
            assert second.mismatched == Counter({"order": 1}) and second.verified["order"] == 1
            assert failed["id"] == "O0002" and failed["error_message"] == "accepted but not found on read-back"
            assert second.exceptions == Counter({"push_verification_mismatch": 1})
        # nothing Ometria refused stays in the ledger, and what it holds is all there
        emu.process_queue()
        assert {("order", i) for i in held(emu, "order")} | {("product", i) for i in held(emu, "product")} | {
            ("contact", i) for i in held(emu, "contact")} == set(ledger(store))
    emu.close()


def test_an_error_naming_our_request_but_no_record_has_its_records_read_back(
        tmp_path: Path, emulator: OmetriaEmulator) -> None:
    profile = make_profile(tmp_path)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", [product(i) for i in range(30)] + [contact(1)])
        push_plan(store, profile, client_for(profile, Spy(emulator)), None, commit=True, verify="none")
        request_id = ledger(store)[("product", "P0001")][1]
        emulator.tamper("product", "P0002", {"title": "edited in Ometria"})
        anonymous = [{"error_message": "Something went wrong", "error_path": "root", "request_id": request_id}]
        spy = Spy(emulator, before=lambda r: httpx.Response(200, json=anonymous) if r.method == "GET" and
                  r.url.path.endswith("/push/_errors") else None)
        make_plan(store, "plan-2", [contact(2)])
        result = push_plan(store, profile, client_for(profile, spy), "plan-2", commit=True, verify="none")
    assert result.verified == Counter({"product": 29}) and result.mismatched == Counter({"product": 1})
    assert spy.reads == 2 + 30  # the error log twice, then each record of that request


# -- verification ------------------------------------------------------------------------------------

def test_verification_finds_drift_and_missing_records(tmp_path: Path, emulator: OmetriaEmulator) -> None:
    docs = merchant(6, 3, 3)
    profile = make_profile(tmp_path)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", docs)
        push_plan(store, profile, client_for(profile, Spy(emulator)), None, commit=True, verify="none")
        emulator.tamper("product", "P0002", {"price": 1.01})
        emulator.tamper("order", "O0001", {"lineitems": [{"product_id": "P0001", "quantity": 3}]})
        with emulator.store.transaction() as conn:  # as if it never landed
            conn.execute("DELETE FROM record WHERE type = 'contact' AND id = 'C0002'")
        result = push_plan(store, profile, client_for(profile, Spy(emulator)), "plan-1", commit=True, verify="all")
        assert result.mismatched == Counter({"product": 1, "order": 1, "contact": 1})
        assert result.verified == Counter({"product": 5, "contact": 2, "order": 2})
        findings = {e.record_key: e for e in store.exceptions(type="push_verification_mismatch")}
        assert set(findings) == {"P0002", "O0001", "C0002"}
        assert findings["P0002"].reason == "read back different from what was sent: price"
        assert "lineitems" in findings["O0001"].reason
        detail = json.loads(store.conn.execute("SELECT detail FROM exception WHERE record_key = 'P0002'").fetchone()[0])
        assert detail["values"]["price"]["held"] == "1.01"
        assert ("contact", "C0002") not in ledger(store)  # Ometria does not hold it: out of the ledger
        assert ("product", "P0002") in ledger(store)
        assert result.fail_findings == 3

        # the next run sends the missing record again and the drifted ones stay flagged until fixed
        again = push_plan(store, profile, client_for(profile, Spy(emulator)), "plan-1", commit=True, verify="all")
        assert again.sent == Counter({"contact": 1}) and again.mismatched == Counter({"product": 1, "order": 1})
        assert ("contact", "C0002") in ledger(store)


def test_the_sample_is_deterministic_and_prefers_unverified(tmp_path: Path, emulator: OmetriaEmulator) -> None:
    docs = [product(i) for i in range(30)]
    profile = make_profile(tmp_path, verify_sample=10)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", docs)
        first = push_plan(store, profile, client_for(profile, Spy(emulator)), None, commit=True)
        assert first.verified == Counter({"product": 10})
        second = push_plan(store, profile, client_for(profile, Spy(emulator)), "plan-1", commit=True)
        third = push_plan(store, profile, client_for(profile, Spy(emulator)), "plan-1", commit=True)
        assert second.verified == third.verified == Counter({"product": 10})
        assert store.conn.execute("SELECT count(*) FROM ledger WHERE verified_at IS NOT NULL").fetchone()[0] == 30


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.decimals(allow_nan=False, allow_infinity=False, places=2)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("abc", min_size=1, max_size=2), inner, max_size=3),
    max_leaves=10))
@hsettings(max_examples=150, deadline=None)
def test_a_record_equals_itself_read_back_with_extra_fields(doc: Any) -> None:
    sent = {"@type": "product", "id": "P1", "body": doc}
    got = wire.loads(wire.dumps({**sent, "timestamp_update": "2026-10-01T00:00:00Z"}))
    assert differences(sent, got) == []


def test_differences_are_exact() -> None:
    assert differences({"price": Decimal("12.50")}, {"price": Decimal("12.5")}) == []
    assert differences({"price": Decimal("12.50")}, {"price": Decimal("12.51")}) == ["price"]
    assert differences({"is_valid": True}, {"is_valid": 1}) == ["is_valid"]
    assert differences({"qty": 1}, {"qty": True}) == ["qty"]
    assert differences({"a": None}, {}) == [] and differences({"a": None}, {"a": 1}) == ["a"]
    assert differences({"a": ""}, {}) == [] and differences({"a": ""}, {"a": "x"}) == ["a"]  # "" is a blank too
    assert differences({"@merge": True, "x": [1, 2]}, {"x": [1]}) == ["x"]


# -- never more than 100, never mixed, never faster than configured -----------------------------------------

def windows_over(stamps: list[float], rate: float, slack: float = 0.0) -> int:
    """The largest number of requests in any window of (1 - slack) seconds."""
    stamps = sorted(stamps)
    worst = 0
    for i, end in enumerate(stamps):
        worst = max(worst, sum(1 for s in stamps[: i + 1] if s > end - (1 - slack) + 1e-9))
    return worst


def test_the_rate_holds_on_a_fake_clock(tmp_path: Path, emulator: OmetriaEmulator) -> None:
    fake = FakeTime()
    docs = merchant(450, 250, 300)
    profile = make_profile(tmp_path, push_rate=4, read_rate=4)
    spy = Spy(emulator, clock=fake.clock)
    client = client_for(profile, spy, fake)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", docs)
        push_plan(store, profile, client, None, commit=True, verify="none", batch_size=40, in_flight=1)
    stamps = [t for t, _, _ in spy.pushes]
    assert len(stamps) == 12 + 7 + 8
    assert windows_over(stamps, 4) <= 4
    assert all(size <= 40 and len(types) == 1 for _, size, types in spy.pushes)
    assert client.push_bucket.acquired == len(spy.pushes)


def test_the_rate_holds_with_requests_in_flight(tmp_path: Path) -> None:
    emu = OmetriaEmulator(tmp_path / "ometria.db", KEY, push_rate=1000, read_rate=1000, latency_ms=60)
    docs = merchant(300, 200, 100)
    profile = make_profile(tmp_path, push_rate=25, push_in_flight=4)
    spy = Spy(emu)
    client = client_for(profile, spy)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", docs)
        started = time.monotonic()
        push_plan(store, profile, client, None, commit=True, verify="none", batch_size=20)
        elapsed = time.monotonic() - started
    assert len(spy.pushes) == 30 and client.push_bucket.acquired == 30
    assert all(size <= 20 and len(types) == 1 for _, size, types in spy.pushes)
    assert windows_over([t for t, _, _ in spy.pushes], 25, slack=0.03) <= 25
    # 60 ms answers at 25/s: one at a time would take 30 x 60 ms; in flight, the rate is the limit
    assert elapsed < 30 * 0.060 + 1.0
    assert_holds_exactly(emu, docs)
    emu.close()


def test_read_back_keeps_reads_in_flight_and_every_read_in_the_bucket(tmp_path: Path,
                                                                      emulator: OmetriaEmulator) -> None:
    docs = merchant(30, 30, 30)
    profile = make_profile(tmp_path, read_in_flight=3, verify_sample=6)

    class Gate(Spy):
        """Holds each GET until three are in flight at once (then lets every one through)."""

        def __init__(self, app: Callable) -> None:
            super().__init__(app)
            self.in_flight = self.most = 0
            self.open = threading.Event()

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.method != "GET":
                return super().handle_request(request)
            with self.lock:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
                if self.in_flight >= 3:
                    self.open.set()
            self.open.wait(timeout=10)  # one GET at a time never opens it: each then waits it out
            try:
                return super().handle_request(request)
            finally:
                with self.lock:
                    self.in_flight -= 1

    gate = Gate(emulator)
    client = client_for(profile, gate)
    with open_store(profile.state) as store:
        make_plan(store, "plan-1", docs)
        result = push_plan(store, profile, client, None, commit=True, verify="sample")
    assert gate.most == 3
    assert result.as_dict()["verified"] == {"product": 6, "contact": 6, "order": 6}
    assert client.read_bucket.acquired == gate.reads  # the read rate covers every GET, in flight or not


# -- a run killed in-process (the subprocess version is in test_push_faults.py) ------------------------------

class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing may swallow it."""


@pytest.mark.parametrize("when", ["before_send", "after_answer"])
def test_a_killed_run_is_completed_by_the_next(tmp_path: Path, emulator: OmetriaEmulator, when: str) -> None:
    docs = merchant(250, 120, 130)
    profile = make_profile(tmp_path)
    calls = {"n": 0}

    class Dying(Spy):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST":
                calls["n"] += 1
                if calls["n"] == 4 and when == "before_send":
                    raise Killed()
                answer = super().handle_request(request)
                if calls["n"] == 4:
                    raise Killed()
                return answer
            return super().handle_request(request)

    with open_store(profile.state) as store:
        make_plan(store, "plan-1", docs)
        with pytest.raises(Killed):
            push_plan(store, profile, client_for(profile, Dying(emulator)), None, commit=True, in_flight=1)
        assert journal.batch_states(store.conn) == {"accepted": 3, "journaled": 1}
        result = push_plan(store, profile, client_for(profile, Spy(emulator)), None, commit=True, verify="all")
        assert result.resumed_batches == 1
        assert sum(result.sent.values()) == len(docs) - 250  # only what was not in the ledger (products were)
        assert len(ledger(store)) == len(docs) and sum(result.verified.values()) == len(docs)
        assert journal.batch_states(store.conn) == {"accepted": 3 + 4, "failed": 1}
        assert journal.find_plan(store.conn, "plan-1").status == "pushed"
    assert_holds_exactly(emulator, docs)


# -- the command -----------------------------------------------------------------------------------

def test_the_command_dry_run_and_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from khaosync.cli.app import app
    from khaosync.sandbox.lifecycle import init_sandbox

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMETRIA_API_KEY", raising=False)
    init_sandbox(tmp_path / ".khaosync" / "sandbox", api_key=KEY, seed=3, customers=50, orders=100)
    docs = merchant(3, 2, 2)
    docs[3]["email"] = "not an email"
    with open_store(tmp_path / ".khaosync" / "state.db") as store:
        make_plan(store, "12", docs)
    runner = CliRunner()
    dry = runner.invoke(app, ["push", "--json"])
    assert dry.exit_code == 0, dry.output
    data = json.loads(dry.stdout)
    assert data["committed"] is False and data["sandbox"] is True and data["plan"] == "12"
    assert data["sent"] == {"product": 0, "contact": 0, "order": 0}
    human = runner.invoke(app, ["push"])
    assert human.exit_code == 0 and "plan 12 (open): dry run, nothing sent" in human.stdout
    assert "khaosync push --plan 12 --commit" in human.stderr
    bad = runner.invoke(app, ["push", "--verify", "most"])
    assert bad.exit_code == EXIT_USAGE
    done = runner.invoke(app, ["-q", "push", "--plan", "12", "--commit", "--json"])
    assert done.exit_code == EXIT_FINDINGS, done.output  # one contact refused: a fail finding
    data = json.loads(done.stdout)
    assert {k: data[k] for k in ("committed", "sent", "accepted", "rejected", "exceptions")} == {
        "committed": True, "sent": {"product": 3, "contact": 2, "order": 2},
        "accepted": {"product": 3, "contact": 1, "order": 2}, "rejected": {"product": 0, "contact": 1, "order": 0},
        "exceptions": {"push_rejected": 1}}
    assert done.stderr == ""  # -q: nothing but errors
    gone = runner.invoke(app, ["push", "--commit"])
    assert gone.exit_code == EXIT_USAGE and "no open plan" in gone.stderr
