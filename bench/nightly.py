"""Benchmark: the nightly sync of the same day's change over histories of different sizes.

Does the night's work grow with the day's change (it should) or with the history (it must not)?
For each history size the script prepares, once, a state store as it stands after the history
was synced and pushed: staged records synthesised as ``bench/map.py`` does (its raw bytes stand in
at the size of the parsed form), mapped, diffed, and its plan in the ledger as accepted, the plan
dated before the plan retention. Then, in a fresh child process (its peak memory is its own),
each night:

1. stages the same day's change, as pull would have staged it (pull is timed by ``bench/pull.py``;
   its work already follows the change): 110 orders with a new status, 20 new orders, 6 credit
   notes, 10 customers with a changed name;
2. runs sync's stages on it, each timed: map, diff (its detectors included; from the second night
   it builds on the night before, as sync does: ``nightly_basis``), the merged plan, and
   push ``--commit`` to the in-process Ometria emulator at the sandbox rates (8 pushes/s, 4
   reads/s) with the default read-back sample.

It prints per night and size: each stage's seconds, the total, peak RSS, and the state file's
bytes per order (with its largest tables); the ratio of the largest history's total to the
smallest's comes last.

    .venv/bin/python bench/nightly.py                              # 20,000, 200,000, 2,000,000 orders
    .venv/bin/python bench/nightly.py --sizes 20000 200000 --nights 3
    .venv/bin/python bench/nightly.py --sizes 2000000 --nights 2 --in-place     # no 22 GB copy

Prepared histories are cached under /tmp/khaosync-bench/ (or ``$KHAOSYNC_BENCH_DIR``) by size and
seed. ``--tables`` prints every table's bytes per order (indexes counted with their table) after
the last night.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random

sys.path.insert(0, str(Path(__file__).resolve().parent))

import map as map_bench  # noqa: E402  (bench/map.py: the synthesiser)

from khaosync.config import sandbox_profile  # noqa: E402
from khaosync.detectors import load_mapping_for  # noqa: E402
from khaosync.ometria.client import OmetriaClient  # noqa: E402
from khaosync.sandbox.ometria_emulator import OmetriaEmulator  # noqa: E402
from khaosync.stages.diff import diff_all, nightly_basis  # noqa: E402
from khaosync.stages.map import map_records  # noqa: E402
from khaosync.stages.push import push_plan  # noqa: E402
from khaosync.stages.sync import _merge_plans  # noqa: E402
from khaosync.store import open_store, staging  # noqa: E402
from khaosync.store.db import utcnow  # noqa: E402

FOLDER = Path(os.environ.get("KHAOSYNC_BENCH_DIR", "/tmp/khaosync-bench"))  # own folder: no clash
KEY = "bench-key"
CHANGED, NEW, CREDITS, CUSTOMERS = 110, 20, 6, 10


class SizedSynth(map_bench.Synth):
    """``bench/map.py``'s synthesiser, with raw bytes as large as the parsed form (not a stub)."""

    def put(self, record) -> None:
        parsed = map_bench.canonical_json(record)
        raw, encoding = staging.encode_raw(parsed.encode())  # kept as pull keeps it
        self.rows.append((record.ENTITY, record.key, 1, map_bench.content_hash(record), raw, encoding,
                          staging.stored_parsed(parsed),
                          self.run_id, self.now))
        if len(self.rows) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        with self.store.transaction() as conn:
            conn.executemany(
                "INSERT INTO staged_record(entity, key, version, content_hash, raw, raw_encoding, parsed, run_id,"
                " seen_at, current) VALUES (?,?,?,?,?,?,?,?,?,1)", self.rows)
        self.rows = []


def history(orders: int, seed: int) -> Path:
    """A store as it stands after ``orders`` orders were synced and accepted by Ometria."""
    state = FOLDER / f"nightly-{orders}-{seed}.db"
    if state.exists():
        return state
    FOLDER.mkdir(parents=True, exist_ok=True)
    partial = state.with_suffix(".partial.db")
    map_bench.remove_store(partial)
    started = time.perf_counter()
    profile = sandbox_profile(state=str(partial))
    with open_store(partial) as store:
        synth = SizedSynth(store, seed)
        sellable = synth.catalogue(styles=min(400, max(20, orders // 2500)), plain=100)
        people = synth.companies(max(100, orders // 10))
        synth.orders(orders, sellable, people)
        synth.flush()
        run = store.start_run("bench-history", "bench")
        map_records(store, profile, run_id=run)
        diffs = diff_all(store, profile, run_id=run)
        plan_id = _merge_plans(store, run, diffs)
        long_ago = (datetime.now(UTC) - timedelta(days=45)).isoformat(timespec="microseconds")
        with store.transaction() as conn:  # Ometria accepted it all, long ago
            conn.execute("""INSERT INTO ledger(type, id, content_hash, body, request_id, accepted_at)
                SELECT o.type, o.id, o.content_hash, o.body, 'bench-history', ? FROM outbound_record o
                WHERE o.state = 'ready'""", (long_ago,))
            conn.execute("UPDATE plan SET status = 'pushed', created_at = ? WHERE id = ?", (long_ago, plan_id))
            conn.execute("UPDATE plan SET created_at = ? WHERE status = 'superseded'", (long_ago,))
        store.finish_run(run, "ok", {})
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    partial.rename(state)
    Path(str(partial) + ".lock").unlink(missing_ok=True)
    print(f"  prepared a history of {orders:,} orders in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return state


def _restage(conn, run_id: int, entity: str, key: str, parsed: dict, now: str) -> None:
    text = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    staging.stage(conn, entity=entity, key=key, raw=text.encode(), parsed=text,
                  content_hash=hashlib.sha256(text.encode()).hexdigest(), run_id=run_id, seen_at=now)


FIRST_ORDER = 2001  # bench/map.py's first sales order id; the history's ids follow on


def the_days_change(store, night: int, seed: int, history_orders: int) -> int:
    """Stage one day's change: the same amount whatever the history. Returns records staged.

    The orders changed are drawn from the history's id range (each looked up by key), never by
    listing every staged order: what stands in for pull must not grow with the history."""
    rng = Random(seed * 1000 + night)
    conn = store.conn
    run_id = store.start_run("bench-pull", "bench")
    now = utcnow()
    orders = [str(k) for k in rng.sample(range(FIRST_ORDER, FIRST_ORDER + history_orders), CHANGED + NEW)]
    top = FIRST_ORDER + history_orders - 1 + NEW * (night - 1)  # the nights before each added NEW orders
    touched = 0
    with store.transaction():
        for key in orders[:CHANGED]:
            parsed = staging.current(conn, "sales_order", key).parsed
            parsed["associated_ref"] = f"WEB-{key}-n{night}"  # a changed web reference: a changed body
            parsed["last_updated"] = now
            _restage(conn, run_id, "sales_order", key, parsed, now)
            touched += 1
        for n in range(NEW):
            template = staging.current(conn, "sales_order", orders[CHANGED + n]).parsed
            new_id = top + 1 + n
            template.update(sorder_id=new_id, sorder_code=f"SO{new_id:07d}", associated_ref=f"WEB-{new_id}")
            template["lines"] = [dict(line, sorder_item_id=new_id * 10 + i) for i, line in enumerate(template["lines"])]
            for invoice in template["invoices"]:
                invoice["items"] = [dict(item, sorder_item_id=new_id * 10 + i) for i, item in enumerate(invoice["items"])]
            _restage(conn, run_id, "sales_order", str(new_id), template, now)
            touched += 1
        credited = [k for (k,) in conn.execute(
            "SELECT key FROM staged_record WHERE entity = 'credit_note' AND current = 1 LIMIT 200")]
        for key in rng.sample(credited, min(CREDITS, len(credited))):
            parsed = staging.current(conn, "credit_note", key).parsed
            parsed["credit_code"] = f"{parsed.get('credit_code')}-n{night}"
            _restage(conn, run_id, "credit_note", key, parsed, now)
            touched += 1
        companies = [k for (k,) in conn.execute(
            "SELECT key FROM staged_record WHERE entity = 'company' AND current = 1 LIMIT 5000")]
        for key in rng.sample(companies, CUSTOMERS):
            parsed = staging.current(conn, "company", key).parsed
            for contact in parsed.get("contacts") or []:
                contact["surname"] = f"{contact.get('surname')}-n{night}"
            _restage(conn, run_id, "company", key, parsed, now)
            touched += 1
    store.finish_run(run_id, "ok", {})
    return touched


def _table_bytes(conn) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
        owner = conn.execute("SELECT tbl_name FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        table = owner[0] if owner else name
        sizes[table] = sizes.get(table, 0) + size
    free, page = conn.execute("PRAGMA freelist_count").fetchone()[0], conn.execute("PRAGMA page_size").fetchone()[0]
    sizes["(free pages)"] = free * page
    return sizes


def worker(state: Path, orders: int, nights: int, seed: int, in_place: bool = False) -> list[dict]:
    work = state if in_place else state.with_name(state.stem + "-work.db")
    emulated = state.with_name(state.stem + "-ometria.db")
    for path in (emulated,) if in_place else (work, emulated):
        map_bench.remove_store(path)
    if not in_place:
        shutil.copyfile(state, work)
    profile = sandbox_profile(state=str(work))
    import httpx

    emulator = OmetriaEmulator(emulated, KEY, push_rate=profile.ometria.push_rate, read_rate=profile.ometria.read_rate)
    client = OmetriaClient(profile.ometria.model_copy(update={"api_key": __import__("pydantic").SecretStr(KEY)}),
                           transport=httpx.WSGITransport(app=emulator))
    with open_store(work, write=False) as store:  # Ometria holds the catalogue the history pushed
        for (body,) in store.conn.execute("SELECT body FROM ledger WHERE type = 'product'"):
            emulator.seed_record("product", json.loads(body))
    with open_store(work, write=False) as store:  # in place: the nights go on from those already run
        before = store.conn.execute("SELECT count(*) FROM run WHERE command = 'bench-pull'").fetchone()[0]
    figures = []
    for night in range(before + 1, before + nights + 1):
        times: dict[str, float] = {}
        with open_store(work) as store:
            started = time.perf_counter()
            staged = the_days_change(store, night, seed, orders)
            times["stage change"] = time.perf_counter() - started
            run = store.start_run("sync", profile.name)
            started = time.perf_counter()
            basis = nightly_basis(store.conn, run, ("products", "contacts", "orders"))  # as sync does
            mapping = load_mapping_for(profile)
            mapped = map_records(store, profile, run_id=run, incremental=True, mapping=mapping)  # as sync maps
            times["map"] = time.perf_counter() - started
            started = time.perf_counter()
            diffs = diff_all(store, profile, run_id=run, changed=mapped.looked_at, basis=basis, mapping=mapping)
            times["diff"] = time.perf_counter() - started
            started = time.perf_counter()
            plan_id = _merge_plans(store, run, diffs)
            times["plan"] = time.perf_counter() - started
            started = time.perf_counter()
            pushed = push_plan(store, profile, client, plan_id, commit=True, verify="sample")
            times["push+verify"] = time.perf_counter() - started
            store.finish_run(run, "ok", {})
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            tables = _table_bytes(store.conn)
        size = work.stat().st_size
        sent = pushed.as_dict()["sent"]
        figures.append({
            "night": night, "staged": staged, "seconds": {k: round(v, 2) for k, v in times.items()},
            "total": round(sum(times.values()), 2), "sent": sum(sent.values()),
            "written": sum(r.mapped for r in mapped.entities.values()),
            "compared": {d.type: d.compared for d in diffs},
            "state_bytes_per_order": round(size / orders), "peak_rss_mb": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "largest": {t: round(b / orders) for t, b in sorted(tables.items(), key=lambda kv: -kv[1])[:5]},
            "tables": {t: round(b / orders) for t, b in sorted(tables.items(), key=lambda kv: -kv[1])},
        })
    emulator.close()
    for path in (emulated,) if in_place else (work, emulated):
        map_bench.remove_store(path)
    return figures


def measure(orders: int, nights: int, seed: int, in_place: bool = False) -> list[dict]:
    state = history(orders, seed)
    out = subprocess.run([sys.executable, __file__, "--worker", str(state), "--orders", str(orders), "--nights",
                          str(nights), "--seed", str(seed)] + (["--in-place"] if in_place else []),
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000, 2_000_000])
    parser.add_argument("--nights", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--in-place", action="store_true",
                        help="run the nights on the prepared history itself, not a copy (a 2M history is 22 GB); "
                             "later runs go on from the nights already run")
    parser.add_argument("--tables", action="store_true", help="every table's bytes per order after the last night")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--orders", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(Path(args.worker), args.orders, args.nights, args.seed, args.in_place)))
        return
    stages = ("stage change", "map", "diff", "plan", "push+verify")
    print(f"{'orders':>10} {'night':>5} " + " ".join(f"{s:>12}" for s in stages)
          + f" {'total s':>8} {'sent':>5} {'RSS MB':>7} {'state B/order':>13}  records diff compared; "
          "largest tables (B/order)")
    totals: dict[int, float] = {}
    for orders in args.sizes:
        figures = measure(orders, args.nights, args.seed, args.in_place)
        for f in figures:
            totals[orders] = f["total"]
            largest = ", ".join(f"{t} {b:,}" for t, b in f["largest"].items())
            compared = " ".join(f"{t[0]}{n}" if n is not None else f"{t[0]}:all" for t, n in f["compared"].items())
            print(f"{orders:>10,} {f['night']:>5} " + " ".join(f"{f['seconds'][s]:>12}" for s in stages)
                  + f" {f['total']:>8} {f['sent']:>5} {f['peak_rss_mb']:>7} {f['state_bytes_per_order']:>13,}  "
                  f"compared {compared}; {largest}",
                  flush=True)
        if args.tables:
            print(f"{'':>10} after night {figures[-1]['night']}, B/order: "
                  + ", ".join(f"{t} {b:,}" for t, b in figures[-1]["tables"].items() if b), flush=True)
    small, large = min(totals), max(totals)
    if small != large:
        print(f"last night at {large:,} orders took {totals[large] / totals[small]:.2f}x the time at {small:,} "
              f"({totals[large]:.1f} s against {totals[small]:.1f} s; target: within 1.5x, under 60 s)")


if __name__ == "__main__":
    main()
