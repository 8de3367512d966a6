"""Benchmark: map a large merchant's staged records into Ometria records, streaming.

The generator would take too long for a million orders, so this script synthesises the staged
records directly into a state store (KC models + ``canonical_json``, written in batches, never
all in memory): a catalogue of SCS styles and plain items, one company per ten orders with one
or two contacts (a few sharing an email), orders with one to four lines, split despatches,
back-orders, cancellations, and credit notes (full, partial, delivery-only) on about 6% of them.

Each size is mapped in a fresh subprocess, twice: the first run writes every record, the
second (same staged records) must write nothing. The worker reports records/s and its peak
resident memory (``ru_maxrss``); the parent prints a baseline (100,000 orders by default) and
the full size (1,000,000) and the ratio of their peaks: bounded memory means a ratio near 1,
not near the ratio of the sizes.

    .venv/bin/python bench/map.py                                  # 100,000 then 1,000,000 orders
    .venv/bin/python bench/map.py --orders 50000 --baseline 10000  # a quick look

Synthesised stores are cached under /tmp/khaosync-bench/ (or ``$KHAOSYNC_BENCH_DIR``) by size and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from random import Random

from khaosync.config import sandbox_profile
from khaosync.khaos.models import (
    Address, Company, Contact, CreditNote, CreditNoteLine, Invoice, InvoiceItem, OrderLine, SalesOrder, Scs, StockItem,
    canonical_json, content_hash,
)
from khaosync.store import open_store, staging

FOLDER = Path(os.environ.get("KHAOSYNC_BENCH_DIR", "/tmp/khaosync-bench"))  # own folder: no clash
PENNY = Decimal("0.01")
COLOURS = ("Black", "Navy", "White", "Grey Marl", "Oatmeal", "Forest Green", "Rust", "Burgundy")
SIZES = ("XS", "S", "M", "L", "XL")
START = datetime(2021, 1, 1, tzinfo=UTC)


def _money(value: Decimal) -> Decimal:
    return value.quantize(PENNY)


class Synth:
    """Streams staged records into a store, in batches of ``BATCH`` rows per transaction."""

    BATCH = 5000

    def __init__(self, store, seed: int):
        self.store = store
        self.rng = Random(seed)
        self.run_id = store.start_run("bench-synthesis", "bench")
        self.rows: list[tuple] = []
        self.now = datetime.now(UTC).isoformat()

    def put(self, record) -> None:
        self.rows.append((record.ENTITY, record.key, 1, content_hash(record), b"<synthesised/>",
                          staging.stored_parsed(canonical_json(record)), self.run_id, self.now))  # as pull stages it
        if len(self.rows) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        with self.store.transaction() as conn:
            conn.executemany(
                "INSERT INTO staged_record(entity, key, version, content_hash, raw, parsed, run_id, seen_at, current)"
                " VALUES (?,?,?,?,?,?,?,?,1)", self.rows)
        self.rows = []

    def catalogue(self, styles: int, plain: int) -> list[tuple[int, str, Decimal]]:
        rng, sellable, stock_id = self.rng, [], 300
        for n in range(styles):
            code, net = f"STY{n:04d}", _money(Decimal(rng.randint(1000, 15000)) / 100)
            parent = stock_id
            self.put(StockItem(stock_id=parent, stock_code=code, description=f"Style {n}", sell_price=net,
                               vat_rate=Decimal("20"), manufacturer="Northfield Mills", images=[f"{code.lower()}.jpg"],
                               user_defined={"CATEGORY": "Tops", "SEASON": "CORE"}))
            stock_id += 1
            for colour in rng.sample(COLOURS, 3):
                for size in SIZES:
                    child_code = f"{code}-{colour[:3].upper()}-{size}"
                    self.put(StockItem(stock_id=stock_id, stock_code=child_code, parent_id=parent, parent_code=code,
                                       description=f"Style {n}, {colour}, {size}", sell_price=net,
                                       vat_rate=Decimal("20"), scs=Scs(style=code, colour=colour, size=size),
                                       user_defined={"CATEGORY": "Tops", "COLOUR_FAMILY": colour}))
                    sellable.append((stock_id, child_code, net))
                    stock_id += 1
        for n in range(plain):
            code, net = f"PLN{n:03d}", _money(Decimal(rng.randint(500, 5000)) / 100)
            self.put(StockItem(stock_id=stock_id, stock_code=code, description=f"Plain {n}", sell_price=net,
                               vat_rate=Decimal("20"), images=[f"{code.lower()}.jpg"]))
            sellable.append((stock_id, code, net))
            stock_id += 1
        return sellable

    def companies(self, count: int) -> list[tuple[int, int]]:
        rng, people = self.rng, []
        contact_id = 7001
        for n in range(count):
            company_id = 1001 + n
            contacts = []
            for k in range(1 if rng.random() < 0.85 else 2):
                # one email in 500 is shared with the previous company's first contact
                email = (f"person{contact_id}@example.com" if rng.random() > 0.002 or not people
                         else f"person{people[-1][1]}@example.com")
                contacts.append(Contact(contact_id=contact_id, title="Ms", forename="Ada", surname=f"Lovelace{n}",
                                        email=email, mobile="+447700900123", email_subscribe=rng.random() < 0.7))
                people.append((company_id, contact_id))
                contact_id += 1
            self.put(Company(company_id=company_id, company_code=f"C{company_id:07d}", name=f"Customer {n}",
                             mailing_status=rng.choice((1, 2, 3, 5, None)), currency="GBP",
                             date_created=START - timedelta(days=rng.randint(1, 900)),
                             additional={"LOYALTY_TIER": "Gold", "SOURCE": "Web"},
                             addresses=[Address(address_id=5001 + n, town="Bath", postcode="BA1 1AA",
                                                country_code="GB", addr_type="Invoice")],
                             contacts=contacts))
        return people

    def orders(self, count: int, sellable: list, people: list) -> None:
        rng = self.rng
        item_id, invoice_id, credit_id = 90001, 40001, 60001
        for n in range(count):
            sorder_id = 2001 + n
            company_id, contact_id = people[rng.randrange(len(people))]
            placed = START + timedelta(seconds=n * 97)
            lines = []
            for stock_id, code, net in rng.sample(sellable, rng.randint(1, 4)):
                qty = Decimal(rng.choice((1, 1, 1, 2, 3)))
                gross = _money(net * Decimal("1.2"))
                discount = _money(qty * gross * Decimal("0.1")) if rng.random() < 0.15 else Decimal("0.00")
                lines.append(OrderLine(sorder_item_id=item_id, stock_id=stock_id, stock_code=code, qty=qty,
                                       price_net=net, price_gross=gross, tax_rate=Decimal("20"), discount=discount))
                item_id += 1
            delivery_net = Decimal("3.33") if rng.random() < 0.6 else Decimal("0.00")
            delivery_gross = _money(delivery_net * Decimal("1.2"))
            amount = sum((line.qty * line.price_gross - line.discount for line in lines), Decimal(0)) + delivery_gross
            fate = rng.random()
            invoices, cancelled = [], False
            if fate < 0.02:
                cancelled = True
                invoices.append(Invoice(invoice_id=invoice_id, stage_id=1))
                invoice_id += 1
            elif fate < 0.04:
                invoices.append(Invoice(invoice_id=invoice_id, stage_id=12))
                invoice_id += 1
            else:
                parts = [lines] if len(lines) == 1 or rng.random() < 0.9 else [lines[:1], lines[1:]]
                for k, part in enumerate(parts):
                    issued = None if fate < 0.05 and k == len(parts) - 1 and len(parts) > 1 else placed + timedelta(days=1 + k)
                    invoices.append(Invoice(
                        invoice_id=invoice_id, invoice_code=f"INV{invoice_id}", stage_id=70 if issued else 18,
                        issued=issued, consignment_ref=f"CN-{invoice_id}" if issued else "", courier_code="24HR",
                        courier_name="Metapack 24Hr", tracking_number=f"JD{invoice_id:09d}" if issued else "",
                        items=[InvoiceItem(sorder_item_id=line.sorder_item_id, qty=line.qty) for line in part]))
                    invoice_id += 1
            order = SalesOrder(sorder_id=sorder_id, sorder_code=f"SO{sorder_id:07d}",
                               associated_ref=f"WEB-{sorder_id}", company_id=company_id, contact_id=contact_id,
                               order_date=placed, last_updated=placed, order_amount=amount, currency="GBP", site="1",
                               sales_source="Web", delivery_net=delivery_net,
                               delivery_tax=delivery_gross - delivery_net, delivery_gross=delivery_gross,
                               courier_code="24HR", cancelled=cancelled, lines=lines, invoices=invoices)
            self.put(order)
            if not cancelled and invoices[0].issued is not None and rng.random() < 0.06:
                kind = rng.random()
                if kind < 0.3:  # full
                    credit_lines = [CreditNoteLine(sorder_item_id=line.sorder_item_id, qty=line.qty,
                                                   value=line.qty * line.price_gross - line.discount) for line in lines]
                    delivery = delivery_gross
                elif kind < 0.9 or delivery_gross == 0:  # one line
                    line = lines[0]
                    credit_lines = [CreditNoteLine(sorder_item_id=line.sorder_item_id, qty=line.qty,
                                                   value=line.qty * line.price_gross - line.discount)]
                    delivery = Decimal("0.00")
                else:  # delivery only
                    credit_lines, delivery = [], delivery_gross
                total = sum((c.value for c in credit_lines), Decimal(0)) + delivery
                self.put(CreditNote(credit_id=credit_id, credit_code=f"CR{credit_id}", sorder_id=sorder_id,
                                    issued=placed + timedelta(days=9), currency="GBP", delivery_refund=delivery,
                                    total=total, lines=credit_lines))
                credit_id += 1
        self.flush()


def remove_store(path: Path) -> None:
    """A state file and its WAL, shared memory and lock, gone (a fresh start or a clean-up)."""
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def synthesise(orders: int, seed: int) -> Path:
    state = FOLDER / f"map-{orders}-{seed}.db"
    if state.exists():
        return state
    FOLDER.mkdir(parents=True, exist_ok=True)
    partial = state.with_suffix(".partial.db")
    remove_store(partial)
    started = time.perf_counter()
    with open_store(partial) as store:
        synth = Synth(store, seed)
        sellable = synth.catalogue(styles=min(400, max(20, orders // 2500)), plain=100)
        people = synth.companies(max(100, orders // 10))
        synth.orders(orders, sellable, people)
        synth.flush()
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    partial.rename(state)
    Path(str(partial) + ".lock").unlink(missing_ok=True)
    print(f"  synthesised {orders:,} orders in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return state


def worker(state: Path) -> dict:
    """Map everything twice in this (fresh) process; report speed and peak memory."""
    from khaosync.stages.map import map_records

    work = state.with_name(state.stem + "-work.db")
    remove_store(work)
    shutil.copyfile(state, work)  # a fresh copy: outbound starts empty
    profile = sandbox_profile(state=str(work))
    figures: dict = {}
    for label in ("first", "again"):
        with open_store(work) as store:
            started, cpu = time.perf_counter(), time.process_time()
            result = map_records(store, profile)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        records = sum(r.new + r.changed + r.unchanged + r.held + r.not_sent for r in result.entities.values())
        orders = result.entities["orders"]
        figures[label] = {"seconds": round(seconds, 1), "records": records, "records_per_s": round(records / seconds),
                          "orders_staged": orders.staged, "written": sum(r.mapped for r in result.entities.values()),
                          "orders_per_cpu_s": round(orders.staged / cpu)}  # per core: map runs on one
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    remove_store(work)
    return figures


def measure(orders: int, seed: int) -> dict:
    state = synthesise(orders, seed)
    out = subprocess.run([sys.executable, __file__, "--worker", str(state)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(Path(args.worker))))
        return
    rows = [(args.baseline, measure(args.baseline, args.seed)), (args.orders, measure(args.orders, args.seed))]
    print(f"{'orders':>10} {'records':>10} {'first s':>8} {'records/s':>10} {'orders/cpu s':>12} {'again s':>8} "
          f"{'again/s':>9} {'written again':>13} {'peak RSS MB':>11}")
    for size, f in rows:
        print(f"{size:>10,} {f['first']['records']:>10,} {f['first']['seconds']:>8} {f['first']['records_per_s']:>10,} "
              f"{f['first'].get('orders_per_cpu_s', 0):>12,} {f['again']['seconds']:>8} "
              f"{f['again']['records_per_s']:>9,} {f['again']['written']:>13} {f['peak_rss_mb']:>11}")
    base, full = rows[0][1]["peak_rss_mb"], rows[1][1]["peak_rss_mb"]
    print(f"peak memory ratio {args.orders // args.baseline}x the orders: {full / base:.2f}x the memory "
          f"(Ometria accepts at most ~800 records/s; issue 15's target: 20,000 orders per CPU second, "
          f"peak RSS under 1 GiB at 1,000,000 orders)")


if __name__ == "__main__":
    main()
