"""Benchmark: pull a large sandbox merchant, streaming.

Prints staged records/s and peak memory (the pulling process's maximum resident set) for the
full merchant and two baselines with a quarter of its orders:

- "quarter history": the same orders per day over the last quarter of the date range, so
  only the length of the history differs. A pull streams, so this ratio must stay near 1.
- "quarter volume": a quarter of the orders per day over the same range. Order windows adapt
  to the volume, but the first window after the empty years before the data (a full pull
  from ``pull.history_start``) is as wide as ``pull.order_window_days``, so this ratio
  moves with the busiest week, not with the size of the history.

Each pull runs in a fresh child process so its peak is its own; the parent prints all three.

    .venv/bin/python bench/pull.py                 # 200,000 orders (about 40,000 customers)
    .venv/bin/python bench/pull.py --orders 20000  # a quick look

The generated merchants are cached under /tmp/khaosync-bench/ by size, range and seed.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx

from khaosync.config import sandbox_profile
from khaosync.khaos.soap import KhaosClient
from khaosync.sandbox.generator import DEFAULT_END, DEFAULT_START
from khaosync.sandbox.lifecycle import init_sandbox
from khaosync.sandbox.server import SandboxApp
from khaosync.sandbox.world import World
from khaosync.stages.pull import FileSource, SoapSource, pull
from khaosync.store import open_store, staging

KEY = "bench-key"


def merchant(orders: int, start: date, seed: int) -> Path:
    folder = Path(f"/tmp/khaosync-bench/pull-{orders}-{start}-{seed}")
    if not World.exists(folder):
        if folder.exists():
            shutil.rmtree(folder)
        started = time.perf_counter()
        init_sandbox(folder, api_key=KEY, seed=seed, customers=max(50, orders // 5), orders=orders, start=start)
        print(f"  generated {orders:,} orders from {start} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return folder


def measure(orders: int, start: date, seed: int) -> dict:
    folder = merchant(orders, start, seed)
    state = Path(f"/tmp/khaosync-bench/state-{orders}-{start}-{seed}.db")
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{state}{suffix}").unlink(missing_ok=True)
    profile = sandbox_profile(state=str(state), sandbox_path=str(folder))
    client = KhaosClient(profile.khaos, transport=httpx.WSGITransport(app=SandboxApp(folder, KEY)))
    source = SoapSource(client, profile, FileSource(folder / "exports"))
    started = time.perf_counter()
    with open_store(profile.state) as store:
        pull(store, profile, source)
        records = sum(staging.count_current(store.conn, e) for e in ("company", "stock_item", "sales_order", "credit_note"))
        order_count = staging.count_current(store.conn, "sales_order")
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"orders": order_count, "records": records, "seconds": elapsed, "records_per_s": records / elapsed,
            "peak_mib": peak_kib / 1024}


def measure_in_child(orders: int, start: date, seed: int) -> dict:
    merchant(orders, start, seed)  # generate here, so the child's peak is the pull's alone
    out = subprocess.run([sys.executable, __file__, "--child", str(orders), "--start", start.isoformat(),
                          "--seed", str(seed)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.start, args.seed)))
        return
    quarter = max(1000, args.orders // 4)
    short_start = DEFAULT_END - (DEFAULT_END - DEFAULT_START) / 4
    runs = {
        "quarter history": measure_in_child(quarter, short_start, args.seed),
        "quarter volume": measure_in_child(quarter, DEFAULT_START, args.seed),
        "full": measure_in_child(args.orders, DEFAULT_START, args.seed),
    }
    print(f"{'run':<17}{'orders':>10}{'records':>10}{'seconds':>10}{'records/s':>12}{'peak MiB':>10}")
    for name, r in runs.items():
        print(f"{name:<17}{r['orders']:>10,}{r['records']:>10,}{r['seconds']:>10.1f}{r['records_per_s']:>12,.0f}"
              f"{r['peak_mib']:>10.1f}")
    full = runs["full"]
    for name in ("quarter history", "quarter volume"):
        base = runs[name]
        print(f"full vs {name}: orders x{full['orders'] / base['orders']:.1f} -> peak memory "
              f"x{full['peak_mib'] / base['peak_mib']:.2f}, throughput x{full['records_per_s'] / base['records_per_s']:.2f}")
    print("(the emulator runs in the same process: its cost and memory are included)")


if __name__ == "__main__":
    main()
