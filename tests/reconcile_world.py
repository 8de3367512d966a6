"""A synced sandbox for the reconcile, health and report tests, built by hand.

The sandbox merchant (seed 11, 80 customers, 400 orders) is planted and pulled as
tests/stages/test_pull.py does; the ledger and Ometria's side are then written here from the
staged ERP orders (``ometria_order``), without the map and push stages, so these tests do not
depend on them (one end-to-end test in test_reconcile.py runs the real pipeline). Ometria's
side is a fresh emulator with none of the sandbox's planted Ometria orders, so a test knows
exactly which drift it planted.
"""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import httpx
from pydantic import SecretStr

from khaosync.config import SANDBOX_OMETRIA_URL, OmetriaSettings, Profile, sandbox_profile
from khaosync.khaos.models import SalesOrder
from khaosync.khaos.soap import KhaosClient
from khaosync.ometria import wire
from khaosync.ometria.client import OmetriaClient
from khaosync.sandbox.lifecycle import init_sandbox
from khaosync.sandbox.ometria_emulator import OmetriaEmulator
from khaosync.sandbox.server import OMETRIA_DB, SandboxApp
from khaosync.stages.pull import FileSource, SoapSource, pull
from khaosync.stages.reconcile import _Mapping, expected_status, is_due, load_erp_orders
from khaosync.store import StateStore, open_store
from khaosync.store.db import utcnow

KEY = "sandbox-key"
SEED, CUSTOMERS, ORDERS = 11, 80, 400


def plant_and_pull(folder: Path) -> tuple[Path, Path]:
    """(sandbox folder, state path) of a freshly planted and pulled merchant under ``folder``."""
    sandbox, state = folder / "sandbox", folder / "state.db"
    init_sandbox(sandbox, api_key=KEY, seed=SEED, customers=CUSTOMERS, orders=ORDERS)
    profile = profile_for(state, sandbox)
    client = KhaosClient(profile.khaos, transport=httpx.WSGITransport(app=SandboxApp(sandbox, KEY)))
    with open_store(state) as store:
        pull(store, profile, SoapSource(client, profile, FileSource(sandbox / "exports")))
    return sandbox, state


def copy_world(sandbox: Path, state: Path, to: Path) -> tuple[Path, Path]:
    to.mkdir(parents=True, exist_ok=True)
    shutil.copytree(sandbox, to / "sandbox")
    shutil.copy(state, to / "state.db")
    return to / "sandbox", to / "state.db"


def make_workspace(pulled: tuple[Path, Path], root: Path) -> tuple[Path, Path]:
    """A working folder as the CLI's default sandbox profile expects it (``.khaosync/``)."""
    sandbox, state = root / ".khaosync" / "sandbox", root / ".khaosync" / "state.db"
    shutil.copytree(pulled[0], sandbox)
    shutil.copy(pulled[1], state)
    return sandbox, state


def profile_for(state: Path, sandbox: Path) -> Profile:
    return sandbox_profile(state=str(state), sandbox_path=str(sandbox))


# -- Ometria's side, written by hand -------------------------------------------------------------


def ometria_order(order: SalesOrder, refunds: Decimal, credit_ids: list[str], m: _Mapping) -> dict:
    """An Ometria order as khaosync sends one (reference shape; the refund on the first line)."""
    status, valid = expected_status(order, refunds, m)
    lines = []
    for n, line in enumerate(order.lines):
        item = {"product_id": str(line.stock_id), "quantity": line.qty, "unit_price": line.price_gross,
                "total": line.gross_total.quantize(Decimal("0.01"))}
        if n == 0 and refunds and valid:
            item["refunded"] = refunds
        lines.append(item)
    doc = {"@type": "order", "id": order.key, "timestamp": order.order_date.isoformat().replace("+00:00", "Z"),
           "currency": order.currency, "grand_total": order.order_amount, "status": status, "is_valid": valid,
           "customer": {"id": str(order.company_id)}, "lineitems": lines}
    if order.associated_ref:
        doc["web_id"] = order.associated_ref
    if credit_ids:
        doc["properties"] = {"credit_notes": credit_ids}
    return doc


def due_orders(store: StateStore, month: str) -> list[dict]:
    """Ometria bodies of the month's well-formed orders that have passed the trigger."""
    m = _Mapping(None)
    erp, _notes = load_erp_orders(store, month, m)
    return [ometria_order(e.order, e.refunds, e.credit_ids, m) for e in erp
            if not e.malformed and e.month == month and is_due(e.order, m)]


def write_ledger(store: StateStore, docs: list[dict]) -> None:
    now = utcnow()
    with store.transaction() as conn:
        for doc in docs:
            body = wire.dumps(doc)
            conn.execute(
                "INSERT OR REPLACE INTO ledger(type, id, content_hash, body, batch_id, request_id, accepted_at)"
                " VALUES (?, ?, ?, ?, NULL, ?, ?)", (doc["@type"], doc["id"], wire.content_hash(body), body,
                                                     "req-test", now))


def settings() -> OmetriaSettings:
    return OmetriaSettings(base_url=SANDBOX_OMETRIA_URL, api_key=SecretStr(KEY), read_rate=1000, push_rate=1000,
                           retries=1)


def fresh_emulator(path: Path) -> OmetriaEmulator:
    for old in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if old.exists():
            old.unlink()
    return OmetriaEmulator(path, KEY, push_rate=1000, read_rate=1000)


def push(emulator: OmetriaEmulator, docs: list[dict]) -> None:
    """Push through the emulator's HTTP API (products first: an order naming an unknown
    product is dropped), then let it process its queue."""
    products = sorted({line["product_id"] for d in docs if d["@type"] == "order" for line in d["lineitems"]})
    catalogue = [{"@type": "product", "id": p, "title": f"product {p}", "price": Decimal("1.00"), "currency": "GBP"}
                 for p in products]
    with httpx.Client(transport=httpx.WSGITransport(app=emulator), base_url=SANDBOX_OMETRIA_URL) as http:
        for batch in (catalogue, [d for d in docs if d["@type"] != "product"]):
            for i in range(0, len(batch), 100):
                chunk = batch[i:i + 100]
                answer = http.post("/push", content=wire.batch_body([wire.dumps(d) for d in chunk]),
                                   headers={"X-Ometria-Auth": KEY, "Content-Type": "application/json"})
                assert answer.status_code < 300 and answer.json()["rejected"] == 0, answer.text
    emulator.process_queue()


def live_client(emulator: OmetriaEmulator) -> OmetriaClient:
    return OmetriaClient(settings(), transport=httpx.WSGITransport(app=emulator), sleep=lambda s: None)


def sync_by_hand(state: Path, emulator_path: Path, month: str, *, not_in_ometria: tuple[str, ...] = ()) \
        -> tuple[OmetriaEmulator, list[dict]]:
    """The month's due orders in the ledger and in a fresh emulator (less ``not_in_ometria``)."""
    with open_store(state) as store:
        docs = due_orders(store, month)
        write_ledger(store, docs)
    emulator = fresh_emulator(emulator_path)
    push(emulator, [d for d in docs if d["id"] not in not_in_ometria])
    return emulator, docs


def sandbox_emulator_path(sandbox: Path) -> Path:
    """Where the sandbox profile's in-process Ometria keeps its data (replace it to start clean)."""
    return sandbox / OMETRIA_DB


def as_float_json(value):
    """Values for ``OmetriaEmulator.tamper`` (its store writes plain JSON: no Decimals)."""
    return json.loads(json.dumps(value, default=float))


def drift_month(state: Path) -> str:
    """The latest month whose due orders include a refund and a split consignment (every drift
    the tests plant needs one of each)."""
    from khaosync.stages.reconcile import _staged_order, erp_months

    with open_store(state, write=False) as store:
        for month in reversed(erp_months(store)):
            docs = due_orders(store, month)
            refunds = [d for d in docs if d["status"] in ("partial_refund", "refunded")]
            split = [d for d in docs if len([i for i in _staged_order(store, d["id"]).invoices if i.issued]) >= 2]
            if refunds and split and len(docs) >= 5:
                return month
    raise AssertionError("no month with a refund and a split consignment")
