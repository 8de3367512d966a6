"""Benchmark: diff 1,000,000 orders against the ledger, nothing changed and 1% changed.

Synthesises realistic order bodies (a header, one to three lines, canonical JSON as map writes
them) into ``outbound_record`` and ``ledger`` of a temporary state store, streaming the
inserts, then times ``diff_records`` twice: with every outbound record equal to what Ometria
accepted, and after changing 1% of them (status and total). Each scenario runs twice: once
timed, once under ``tracemalloc`` for its peak (tracemalloc slows Python down, so the two are
kept apart). Detectors are left out (``detect=False``): this measures the merge-join, the
comparison and the plan writes.

    .venv/bin/python bench/diff.py                   # 1,000,000 orders
    .venv/bin/python bench/diff.py --orders 100000   # a quick look

The merge-join reads two small indexes in id order (schema migration 11), not the tables of bodies.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path

from khaosync.config import sandbox_profile
from khaosync.ometria import wire
from khaosync.stages.diff import diff_records
from khaosync.store import open_store

BATCH = 10_000


def order_body(n: int, rng: random.Random, status: str = "complete") -> bytes:
    lines, subtotal = [], Decimal(0)
    for i in range(rng.randint(1, 3)):
        qty = rng.randint(1, 3)
        price = Decimal(rng.randint(500, 15000)) / 100
        subtotal += qty * price
        lines.append({"product_id": str(300 + rng.randrange(400)), "variant_id": str(1000 + rng.randrange(4000)),
                      "sku": f"SKU-{rng.randrange(10**6):06d}", "quantity": qty, "unit_price": price,
                      "subtotal": qty * price, "discount": Decimal("0.00"), "tax": (qty * price / 6).quantize(
                          Decimal("0.01")), "total": qty * price})
    return wire.dumps({
        "@type": "order", "id": str(n), "timestamp": f"2026-{1 + n % 10:02d}-{1 + n % 28:02d}T10:00:00Z",
        "currency": "GBP", "grand_total": subtotal + Decimal("4.99"), "subtotal": subtotal, "shipping": Decimal("4.99"),
        "discount": Decimal("0.00"), "tax": (subtotal / 6).quantize(Decimal("0.01")), "status": status,
        "is_valid": True, "customer": {"id": str(1000 + n % 200_000), "email": f"c{n % 200_000}@example.com"},
        "store": "shop", "channel": "online", "web_id": f"WEB-{n}", "lineitems": lines,
        "properties": {"sorder_code": f"SO{n:07d}"}})


def synthesise(store, orders: int) -> None:
    rng = random.Random(7)
    run = store.start_run("bench", "sandbox")
    started = time.perf_counter()
    for start in range(0, orders, BATCH):
        rows = []
        for n in range(start, min(orders, start + BATCH)):
            body = order_body(n, rng)
            rows.append((str(n), wire.content_hash(body), body))
        with store.transaction() as conn:
            conn.executemany("INSERT INTO outbound_record(type, id, content_hash, body, lineage, state, run_id, "
                             "mapped_at) VALUES ('order', ?, ?, ?, '[]', 'ready', ?, 'now')",
                             [(i, h, b, run) for i, h, b in rows])
            conn.executemany("INSERT INTO ledger(type, id, content_hash, body, accepted_at) VALUES "
                             "('order', ?, ?, ?, 'then')", rows)
    print(f"  synthesised {orders:,} orders (outbound and ledger) in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)


def change(store, orders: int, share: float) -> int:
    """Give ``share`` of the outbound orders a new status and total (what a despatch and an edit do)."""
    rng = random.Random(11)
    ids = sorted(rng.sample(range(orders), int(orders * share)))
    with store.transaction() as conn:
        for n in ids:
            body = order_body(n, random.Random(n), status="shipped")
            conn.execute("UPDATE outbound_record SET body = ?, content_hash = ? WHERE type = 'order' AND id = ?",
                         (body, wire.content_hash(body), str(n)))
    return len(ids)


def run_diff(store, profile, orders: int, label: str) -> None:
    started = time.perf_counter()
    result = diff_records(store, profile, "orders", detect=False, limit=0)
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    diff_records(store, profile, "orders", detect=False, limit=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    counts = result.counts
    print(f"{label:<16} {orders / elapsed:>12,.0f} records/s  {elapsed:6.1f} s   peak {peak / 2**20:6.1f} MiB "
          f"(tracemalloc)   changed {counts['changed']:,}, unchanged {counts['unchanged']:,}, "
          f"planned {result.planned:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--changed", type=float, default=0.01)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="khaosync-bench-diff-") as folder:
        profile = sandbox_profile(state=str(Path(folder) / "state.db"), sandbox_path=str(Path(folder) / "none"))
        with open_store(profile.state) as store:
            synthesise(store, args.orders)
            # The diffs write plans: the mapping file is not needed (void wording falls back to "cancelled").
            print(f"diff of {args.orders:,} orders against the ledger")
            run_diff(store, profile, args.orders, "nothing changed")
            n = change(store, args.orders, args.changed)
            run_diff(store, profile, args.orders, f"{n / args.orders:.0%} changed")
            size = Path(profile.state).stat().st_size
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"state file {size / 2**30:.2f} GiB; process peak resident {rss:,.0f} MiB (synthesis included)")


if __name__ == "__main__":
    main()
