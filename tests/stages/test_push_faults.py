"""Push against the emulator served on a loopback port, with faults: 5xx (some after the work
was done), 429 bursts, slow answers; and a push process killed with SIGKILL at random points,
then run again to completion. Each ends with Ometria holding exactly the plan's records, the
ledger holding exactly what Ometria holds, and no journal entry left open.

Plans are small (300 records in batches of 25) and answers quick, so the file runs in well
under a minute on two cores.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydantic import SecretStr

from khaosync.config import OmetriaSettings, Profile, sandbox_profile
from khaosync.ometria import wire
from khaosync.ometria.client import OmetriaClient
from khaosync.sandbox.ometria_emulator import OmetriaEmulator
from khaosync.sandbox.ometria_limits import FaultInjector, TokenBucket
from khaosync.sandbox.server import Faults, SandboxApp, ServedSandbox
from khaosync.stages.push import differences, push_plan
from khaosync.store import StateStore, journal, open_store, plans
from khaosync.store.db import utcnow

KEY = "fault-key"
BATCH = 25


# -- the merchant and its plan -------------------------------------------------------------------

def merchant(n: int = 100) -> list[dict]:
    products = [{"@type": "product", "id": f"P{i:03d}", "title": f"Lamp {i}", "price": Decimal(f"{20 + i}.{i:02d}"),
                 "currency": "GBP", "url": f"https://shop.example.com/lamp/{i}", "is_active": True} for i in range(n)]
    contacts = [{"@type": "contact", "@collection": "khaos", "id": f"C{i:03d}", "customer_id": f"CU{i:03d}",
                 "email": f"buyer{i}@example.com", "firstname": "Lee", "lastname": f"Jones{i}"} for i in range(n)]
    orders = [{"@type": "order", "id": f"O{i:03d}", "timestamp": "2026-10-02T10:00:00Z", "currency": "GBP",
               "grand_total": Decimal(f"{20 + i}.{i:02d}"), "status": "shipped", "is_valid": True,
               "customer": {"id": f"CU{i:03d}"},
               "lineitems": [{"product_id": f"P{i:03d}", "quantity": 1, "unit_price": Decimal(f"{20 + i}.{i:02d}")}]}
              for i in range(n)]
    return products + contacts + orders


def make_plan(store: StateStore, plan_id: str, docs: list[dict]) -> None:
    run = store.start_run("diff", "test")
    now = utcnow()
    with store.transaction() as c:
        c.execute("INSERT INTO plan(id, created_at, run_id, scope, counts) VALUES (?, ?, ?, '[]', '{}')",
                  (plan_id, now, run))
        for doc in docs:
            body = wire.dumps(doc)
            digest = wire.content_hash(body)
            c.execute("INSERT INTO outbound_record(type, id, content_hash, body, lineage, run_id, mapped_at) "
                      "VALUES (?, ?, ?, ?, '[]', ?, ?)", (doc["@type"], doc["id"], digest, body, run, now))
            plans.add_records(c, plan_id, [(doc["@type"], doc["id"], "new", digest, body)])


def settings_for(base_url: str, **over: Any) -> OmetriaSettings:
    return OmetriaSettings(**{"base_url": f"{base_url}/ometria/v2", "api_key": SecretStr(KEY), "push_rate": 40,
                              "read_rate": 200, "retries": 6, "push_in_flight": 4, "verify_sample": 5,
                              "timeout_s": 10, **over})


def profile_for(state: Path, settings: OmetriaSettings) -> Profile:
    return sandbox_profile(state=str(state)).model_copy(update={"ometria": settings})


def served(folder: Path, faults: Faults, *, after_commit: bool = False) -> ServedSandbox:
    app = SandboxApp(folder, KEY, faults)
    app.ometria.read_bucket = TokenBucket(200, time.monotonic)  # reads are not what these tests are about
    if after_commit:  # half of the 5xx come after the push was queued: the client cannot tell
        app.ometria.faults = FaultInjector(faults.fail_rate, True, faults.seed)
    sandbox = ServedSandbox(app)
    # poll for shutdown every 20 ms, not serve_forever's 500: two dozen trials each stop a server
    sandbox.thread = threading.Thread(target=sandbox.server.serve_forever, kwargs={"poll_interval": 0.02},
                                      daemon=True)
    return sandbox


# -- the final state ----------------------------------------------------------------------------------

def emulator_docs(folder: Path) -> dict[tuple[str, str], dict]:
    emu = OmetriaEmulator(folder / "ometria.db", KEY)
    try:
        emu.process_queue()
        return {(t, d["id"]): wire.loads(json.dumps(d).encode())
                for t in ("product", "contact", "order") for d in emu.records(t)}
    finally:
        emu.close()


def ledger_rows(state: Path) -> dict[tuple[str, str], bytes]:
    with open_store(state, write=False) as store:
        return {(t, i): bytes(b) for t, i, b in store.conn.execute("SELECT type, id, body FROM ledger")}


def assert_ledger_held(folder: Path, state: Path) -> None:
    """No ledger row for a record Ometria does not hold in that version."""
    held = emulator_docs(folder)
    for key, body in ledger_rows(state).items():
        assert key in held, f"ledger holds {key}, Ometria does not"
        assert differences(wire.loads(body), held[key]) == [], key


def assert_complete(folder: Path, state: Path, docs: list[dict]) -> None:
    held = emulator_docs(folder)
    expected = {(d["@type"], d["id"]): wire.loads(wire.dumps(d)) for d in docs}
    assert set(held) == set(expected), "Ometria holds a different set of records"
    for key, doc in expected.items():
        assert differences(doc, held[key]) == [], key
    assert set(ledger_rows(state)) == set(expected)
    assert_ledger_held(folder, state)
    with open_store(state, write=False) as store:
        assert "journaled" not in journal.batch_states(store.conn)
        assert journal.find_plan(store.conn, "plan-1").status == "pushed"
        assert journal.failed_records(store.conn) == []


def push_all(state: Path, settings: OmetriaSettings, verify: str = "sample") -> Any:
    profile = profile_for(state, settings)
    with open_store(state) as store, OmetriaClient(settings) as client:
        return push_plan(store, profile, client, "plan-1", commit=True, verify=verify, batch_size=BATCH)  # type: ignore[arg-type]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Path, Path, list[dict]]]:
    folder, state = tmp_path / "sandbox", tmp_path / "state.db"
    docs = merchant()
    with open_store(state) as store:
        make_plan(store, "plan-1", docs)
    yield folder, state, docs


# -- faults -----------------------------------------------------------------------------------------

def test_one_in_five_answers_is_a_5xx_some_after_the_work_was_done(world) -> None:
    folder, state, docs = world
    with served(folder, Faults(fail_rate=0.2, latency_ms=5, rate_limit=50, seed=11), after_commit=True) as sandbox:
        result = push_all(state, settings_for(sandbox.base_url))
        stats = sandbox.server.get_app().ometria.stats()  # type: ignore[attr-defined]
    assert stats["injected_failures"] >= 5
    assert result.accepted == {"product": 100, "contact": 100, "order": 100}
    assert sum(result.mismatched.values()) == 0 and result.fail_findings == 0
    assert stats["max_records_per_request"] <= BATCH
    assert_complete(folder, state, docs)


def test_bursts_of_429_are_waited_out(world) -> None:
    folder, state, docs = world
    # the account allows 6 pushes/s; the client is (mis)configured for 30: it must back off
    with served(folder, Faults(rate_limit=6, latency_ms=5)) as sandbox:
        result = push_all(state, settings_for(sandbox.base_url, push_rate=30, retries=2), verify="none")
        stats = sandbox.server.get_app().ometria.stats()  # type: ignore[attr-defined]
    assert stats["throttled"] >= 1 and stats["injected_failures"] == 0
    assert sandbox.server.get_app().ometria.retry_after is False  # type: ignore[attr-defined]  # as documented: none
    assert sum(result.accepted.values()) == 300
    assert_complete(folder, state, docs)


def test_slow_answers_with_everything_at_once(world) -> None:
    folder, state, docs = world
    # How fast requests in flight fill a slow API's allowance is bench/push.py's figure: a test
    # asserts no timing (it must pass on a loaded machine), only that nothing is lost or doubled.
    with served(folder, Faults(fail_rate=0.1, latency_ms=120, rate_limit=20, seed=5), after_commit=True) as sandbox:
        result = push_all(state, settings_for(sandbox.base_url, push_rate=20, push_in_flight=6))
    assert sum(result.accepted.values()) == 300 and result.fail_findings == 0
    assert_complete(folder, state, docs)


# -- killed at random points ----------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import os, signal, sys, threading, random
    import httpx
    from pydantic import SecretStr
    from khaosync.config import OmetriaSettings, sandbox_profile
    from khaosync.ometria.client import OmetriaClient
    from khaosync.stages.push import push_plan
    from khaosync.store import open_store, journal

    state, base, mode, point, seed = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    pushes = 0
    lock = threading.Lock()

    class Hook(httpx.HTTPTransport):
        def handle_request(self, request):
            global pushes
            if request.method == "POST":
                with lock:
                    pushes += 1
                    n = pushes
                if mode == "before_send" and n == point:
                    die()
                answer = super().handle_request(request)
                if mode == "after_answer" and n == point:
                    answer.read()
                    die()
                return answer
            return super().handle_request(request)

    if mode == "mid_ledger":  # inside the transaction that writes an answer's ledger rows
        real, calls = journal.put_ledger, [0]
        def put_ledger(*args, **kwargs):
            calls[0] += 1
            if calls[0] == point:
                die()
            return real(*args, **kwargs)
        journal.put_ledger = put_ledger

    settings = OmetriaSettings(base_url=base, api_key=SecretStr(os.environ["OMETRIA_TEST_KEY"]), push_rate=40,
                               read_rate=200, retries=3, push_in_flight=3, verify_sample=5)
    profile = sandbox_profile(state=state).model_copy(update={"ometria": settings})
    with open_store(state) as store:
        if mode == "timer":
            threading.Timer(point, die).start()
        push_plan(store, profile, OmetriaClient(settings, transport=Hook()), "plan-1", commit=True,
                  verify="sample", batch_size=25)
    os._exit(0)
""")


def run_child(state: Path, base: str, mode: str, point: float, seed: int) -> int:
    env = {**os.environ, "OMETRIA_TEST_KEY": KEY}
    child = subprocess.run([sys.executable, "-c", CHILD, str(state), f"{base}/ometria/v2", mode, str(point), str(seed)],
                           env=env, capture_output=True, timeout=60, check=False)
    assert child.returncode in (0, -signal.SIGKILL), child.stderr.decode()[-2000:]
    return child.returncode


@pytest.mark.parametrize("trial", range(24))
def test_a_killed_push_is_completed_by_the_next_run(tmp_path: Path, trial: int) -> None:
    rng = random.Random(trial)
    folder, state = tmp_path / "sandbox", tmp_path / "state.db"
    docs = merchant()
    with open_store(state) as store:
        make_plan(store, "plan-1", docs)
    modes = ["before_send", "after_answer", "mid_ledger", "timer"]
    with served(folder, Faults(latency_ms=rng.choice([2, 10, 30]), rate_limit=50, seed=trial)) as sandbox:
        kills = 1 + (trial % 3 == 2)  # every third trial is killed twice before it is let finish
        for _ in range(kills):
            mode = modes[(trial + _) % len(modes)]
            point = {"before_send": rng.randint(1, 12), "after_answer": rng.randint(1, 12),
                     "mid_ledger": rng.randint(1, 300), "timer": rng.uniform(0.02, 0.35)}[mode]
            code = run_child(state, sandbox.base_url, mode, point, trial)
            # whatever moment it died at, the ledger holds nothing Ometria does not
            assert_ledger_held(folder, state)
            if code == 0:
                break
        result = push_all(state, settings_for(sandbox.base_url, verify_sample=10))
        stats = sandbox.server.get_app().ometria.stats()  # type: ignore[attr-defined]
    assert sum(result.mismatched.values()) == 0
    # A push killed while its body was on the wire arrives short: counted as incomplete, never
    # as a bad request of ours. Nor is a 429: on a loaded machine a child's requests can bunch
    # up against the account's rate, and waiting them out is the client's job, not a fault.
    assert stats["max_records_per_request"] <= BATCH and stats["rejected_requests"] == 0
    assert_complete(folder, state, docs)
