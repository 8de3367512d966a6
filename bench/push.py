"""Benchmark: push to the served Ometria emulator at its rate limit, with slow answers.

The emulator runs on a loopback port with 150 ms added to every answer and an account limit
of 8 push requests/s; khaosync is configured for the same 8/s. The ceiling is therefore
8 x 100 = 800 records/s. Two measurements in the same run, through the real push stage
(journal, ledger, the HTTP stack):

- ``in flight``: the stage as configured (``ometria.push_in_flight``, default 8), 20,000 records;
- ``one at a time``: the same stage with one request in flight, 2,000 records.

With 150 ms answers and a request allowed every 125 ms, one at a time cannot fill the
allowance; keeping requests in flight can. Target: at least 90% of the ceiling.

    .venv/bin/python bench/push.py
    .venv/bin/python bench/push.py --records 4000 --baseline 800   # a quick look
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from pydantic import SecretStr

from khaosync.config import KhaosSettings, OmetriaSettings, Profile
from khaosync.ometria import wire
from khaosync.ometria.client import OmetriaClient
from khaosync.sandbox.server import Faults, SandboxApp, ServedSandbox
from khaosync.stages.push import push_plan
from khaosync.store import open_store, plans
from khaosync.store.db import utcnow

KEY = "bench-key"
RATE = 8.0
LATENCY_MS = 150
CEILING = RATE * wire.BATCH_LIMIT


def records(prefix: str, count: int) -> list[dict]:
    """Valid synthetic products and contacts, half and half."""
    out: list[dict] = []
    for i in range(count // 2):
        out.append({"@type": "product", "id": f"{prefix}P{i:06d}", "title": f"Enamel mug {i}", "sku": f"MUG-{i}",
                    "price": Decimal(f"{5 + i % 40}.{i % 100:02d}"), "currency": "GBP", "is_active": True,
                    "url": f"https://shop.example.com/p/{prefix}{i}", "is_in_stock": i % 5 != 0,
                    "attributes": [{"type": "brand", "id": "acme", "label": "Acme"},
                                   {"type": "colour", "id": f"c{i % 9}", "label": f"Colour {i % 9}"}]})
    for i in range(count - count // 2):
        out.append({"@type": "contact", "@collection": "khaos", "id": f"{prefix}C{i:06d}",
                    "customer_id": f"{prefix}CU{i:06d}", "email": f"{prefix.lower()}buyer{i}@example.com",
                    "firstname": "Sam", "lastname": f"Taylor{i}", "country_id": "GB",
                    "marketing_optin": "NOT_SPECIFIED"})
    return out


def plant_plan(state: Path, plan_id: str, docs: list[dict]) -> None:
    with open_store(state) as store:
        run = store.start_run("bench", "bench")
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


def measure(base_url: str, folder: Path, label: str, count: int, in_flight: int) -> dict:
    state = folder / f"state-{label}.db"
    settings = OmetriaSettings(base_url=f"{base_url}/ometria/v2", api_key=SecretStr(KEY), push_rate=RATE,
                               push_in_flight=in_flight)
    profile = Profile(mode="live", name="bench", state=str(state), ometria=settings,
                      khaos=KhaosSettings(soap_url=f"{base_url}/khaos/KhaosKSD.exe/soap/IKosWeb"))
    plant_plan(state, label, records(label.upper()[:1], count))
    with open_store(state) as store, OmetriaClient(settings) as client:
        started = time.perf_counter()
        result = push_plan(store, profile, client, label, commit=True, verify="none")
        elapsed = time.perf_counter() - started
    accepted = sum(result.accepted.values())
    if accepted != count:
        raise SystemExit(f"{label}: {accepted} of {count} records accepted: {result.as_dict()}")
    return {"label": label, "records": count, "seconds": elapsed, "per_s": count / elapsed,
            "requests": result.requests, "in_flight": in_flight}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--baseline", type=int, default=2_000)
    parser.add_argument("--in-flight", type=int, default=OmetriaSettings().push_in_flight)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="khaosync-bench-push-"))
    try:
        # The Ometria emulator needs no merchant world: it starts empty and takes what we push.
        app = SandboxApp(folder / "sandbox", KEY, Faults(latency_ms=LATENCY_MS, rate_limit=RATE))
        with ServedSandbox(app) as sandbox:
            print(f"emulator at {sandbox.base_url}: {LATENCY_MS} ms per answer, {RATE:g} pushes/s allowed; "
                  f"ceiling {CEILING:.0f} records/s", file=sys.stderr)
            base = measure(sandbox.base_url, folder, "baseline", args.baseline, 1)
            main_run = measure(sandbox.base_url, folder, "inflight", args.records, args.in_flight)
            stats = app.ometria.stats()
        print(f"{'run':<16}{'records':>9}{'seconds':>9}{'records/s':>11}{'of ceiling':>12}")
        for row, name in ((base, "one at a time"), (main_run, f"{main_run['in_flight']} in flight")):
            print(f"{name:<16}{row['records']:>9,}{row['seconds']:>9.1f}{row['per_s']:>11.0f}"
                  f"{row['per_s'] / CEILING:>12.1%}")
        print(f"in flight / one at a time: {main_run['per_s'] / base['per_s']:.2f}x")
        print(f"emulator: {stats['push_requests']} pushes, {stats['throttled']} answered 429, "
              f"largest request {stats['max_records_per_request']} records")
        share = main_run["per_s"] / CEILING
        print(f"target >= 90% of the ceiling: {'met' if share >= 0.9 else 'MISSED'} ({share:.1%})")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
