"""Benchmark: pull a large sandbox merchant, streaming.

Prints staged records/s and peak memory (the pulling process's maximum resident set) for a
baseline merchant (a quarter of the orders) and the full one. A pull streams, so the peak
must stay flat while the number of orders grows: the ratio line says by how much it moved.
Each pull runs in a fresh child process so its peak is its own; the parent prints both.

    .venv/bin/python bench/pull.py                 # 200,000 orders (about 40,000 customers)
    .venv/bin/python bench/pull.py --orders 20000  # a quick look

The generated merchants are cached under /tmp/khaosync-bench/ by size and seed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import json
import resource
import subprocess
from pathlib import Path

from khaosync.config import sandbox_profile
from khaosync.khaos.soap import KhaosClient
from khaosync.sandbox.lifecycle import init_sandbox
from khaosync.sandbox.server import SandboxApp
from khaosync.sandbox.world import World
from khaosync.stages.pull import FileSource, SoapSource, pull
from khaosync.store import open_store
from khaosync.store import staging

import httpx

KEY = "bench-key"


def merchant(orders: int, seed: int) -> Path:
    folder = Path(f"/tmp/khaosync-bench/pull-{orders}-{seed}")
    if not World.exists(folder):
        if folder.exists():
            shutil.rmtree(folder)
        started = time.perf_counter()
        init_sandbox(folder, api_key=KEY, seed=seed, customers=max(50, orders // 5), orders=orders)
        print(f"  generated {orders:,} orders in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return folder


def measure(orders: int, seed: int) -> dict:
    folder = merchant(orders, seed)
    state = Path(f"/tmp/khaosync-bench/state-{orders}-{seed}.db")
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


def measure_in_child(orders: int, seed: int) -> dict:
    merchant(orders, seed)  # generate here, so the child's peak is the pull's alone
    out = subprocess.run([sys.executable, __file__, "--child", str(orders), "--seed", str(seed)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.seed)))
        return
    baseline = measure_in_child(max(1000, args.orders // 4), args.seed)
    full = measure_in_child(args.orders, args.seed)
    print(f"{'run':<10}{'orders':>10}{'records':>10}{'seconds':>10}{'records/s':>12}{'peak MiB':>10}")
    for name, r in (("baseline", baseline), ("full", full)):
        print(f"{name:<10}{r['orders']:>10,}{r['records']:>10,}{r['seconds']:>10.1f}{r['records_per_s']:>12,.0f}{r['peak_mib']:>10.1f}")
    print(f"orders x{full['orders'] / baseline['orders']:.1f} -> peak memory x{full['peak_mib'] / baseline['peak_mib']:.2f}, "
          f"throughput x{full['records_per_s'] / baseline['records_per_s']:.2f} (emulator in-process: its cost is included)")


if __name__ == "__main__":
    main()
