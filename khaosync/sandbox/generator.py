"""The deterministic sandbox merchant: a UK fashion and homeware retailer on Khaos Control.

``generate(folder)`` plants a merchant in ``folder``; ``advance(folder, days)`` lets time pass.
Same arguments, same bytes: every random choice comes from ``random.Random`` seeded from the
arguments (never the wall clock, never ``hash()`` of a string, never a set's order), and rows
are written in key order in one transaction.

Files written
=============

- ``world.db``: the World (``khaosync.sandbox.world``): companies, stock items, sales orders,
  credit notes, raw overrides, Ometria's side, and meta ``seed``, ``params``, ``clock``,
  ``serve_twice``, ``next_ids`` (the next free id per counter) and ``planted`` (the planted
  fault lists, which ``advance`` keeps up to date).
- ``manifest.json``: what the World holds and where the faults are (canonical JSON + newline).
- ``exports/credit_notes.csv``: the credit-note report export (``docs/khaos-soap.md``).

Ids: companies from 1001 (code ``C001001``), addresses from 5001, contacts from 7001, stock
items from 300, sales orders from 2001 (``SO02001``), order lines from 90001, invoices from
40001 (``INV40001``), credit notes from 60001 (``CR60001``, numbered in issue order).

Manifest keys
=============

``seed``
    the seed given to ``generate``.
``params``
    ``{"customers", "orders", "start", "end"}`` as given to ``generate`` (dates ``YYYY-MM-DD``).
``clock``
    the World's "now", KC local time: ``end`` at 23:59:59 after ``generate``, moved by ``advance``.
``counts``
    ``companies``, ``contacts``, ``addresses``, ``stock_items`` (all, parents included),
    ``stock_parents`` (styles with colour/size children), ``stock_variants`` (the children),
    ``sales_orders``, ``order_lines``, ``invoices``, ``credit_notes``, ``credit_note_lines``
    (lines in the documents; a delivery-only note has none), ``ometria_seed_orders``,
    ``ometria_unsubscribes``.
``faults``
    every planted or derived fault, by key. Planted:

    - ``shared_email``: ``[{email, contacts: [{company_id, contact_id}]}]``, 2-3 contacts per
      email, on different companies or on one company;
    - ``renamed_stock_code``: ``[{stock_id, old_code, new_code, renamed_at, sales_orders}]``;
      ``sales_orders`` are the orders whose lines still carry ``old_code``;
    - ``ometria_unsubscribed``: ``[{company_id, contact_id, email}]``: opted in on KC
      (``email_subscribe`` true, ``mailing_status`` 1-3), unsubscribed in Ometria;
    - ``ometria_duplicate_order``: ``[{sorder_id, ometria_ids}]``: a split-consignment order an
      earlier integration sent to Ometria once per invoice (``INV-<invoice_code>``);
    - ``ometria_storefront_order``: ``[ometria order id]``: web orders KC never received;
    - ``bad_email``: ``[{company_id, contact_id}]``;
    - ``unknown_currency``, ``negative_quantity``, ``total_mismatch``, ``unknown_product``:
      ``[sorder_id]``;
    - ``missing_field``: ``[{entity, key, field}]`` (a company without ``company_code``, an
      order with ``order_date`` "");
    - ``company_without_contacts``: ``[company_id]``;
    - ``broken_xml``: ``[{entity, key}]`` (not well-formed raw overrides);
    - ``hostile_xml``: ``[{entity, key, kind}]``, kind ``entity_reference`` or ``entity_declaration``;
    - ``duplicate_in_response``: ``{"company": [ids], "sales_order": [ids]}`` (also World meta
      ``serve_twice``);
    - ``product_incomplete``: ``[{stock_id, field}]``, field ``sell_price`` or ``stock_desc``;
    - ``dst_ambiguous``: ``[sorder_id]`` placed at 01:30 on the autumn changeover day;
    - ``dst_gap_adjacent``: ``[sorder_id]`` placed at 00:59 and 02:00 on the spring changeover day.

    Derived from the World each time the manifest is written (malformed orders and companies
    left out):

    - ``cancelled``, ``not_despatched`` (no issued invoice), ``split_consignment`` (>= 2 issued
      invoices), ``back_order`` (>= 1 issued and >= 1 not issued): ``[sorder_id]``;
    - ``full_refund``, ``partial_refund``, ``delivery_only_refund``: ``[{sorder_id, credit_ids}]``;
    - ``consent_opted_out`` (``mailing_status`` 5), ``consent_blank`` (no mailing status):
      ``[company_id]``.
``excluded_from_totals``
    ``[sorder_id]`` of the malformed orders (unknown currency, negative quantity, total
    mismatch, unknown product, missing order date, broken XML): a correct pipeline holds them
    back, so ``monthly_totals`` leave them out. Orders served twice are in the totals once.
``monthly_totals``
    ``{"YYYY-MM": {currency: {...}}}`` by the order's local month and currency, all values
    decimal strings: ``orders`` (placed, cancelled included), ``cancelled``, ``despatched``
    (at least one issued invoice), ``gross`` (sum of ``order_amount`` of orders not cancelled),
    ``refunds`` (credit-note totals of those orders, in the order's month), ``net`` (gross -
    refunds), ``units`` (line quantities of orders not cancelled), ``customers`` (distinct
    companies with an order not cancelled).
``last_advance``
    ``null`` after ``generate``; after ``advance``: ``{"days", "from", "to", "changed": {"company",
    "stock_item", "sales_order", "credit_note": [keys whose updated moved past "from"]},
    "events": {...counts of what happened}}``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from random import Random

from khaosync.sandbox.generator_advance import run_advance
from khaosync.sandbox.generator_calendar import (
    allocate, between, date_range, day_end, day_start, day_weights, fall_back, is_dst_day, kc,
    random_times, spring_forward,
)
from khaosync.sandbox.generator_catalogue import CatalogueBuild, CatalogueFactory, Sellable
from khaosync.sandbox.generator_manifest import load_manifest, publish
from khaosync.sandbox.generator_orders import (
    MALFORMED_ORDER_ROLES, BuiltOrder, CreditQueue, OrderFactory, OrderPlan, storefront_order,
)
from khaosync.sandbox.generator_people import CompanyFactory, Customer, CustomerPool
from khaosync.sandbox.generator_planting import (
    CHUNK, EXISTING_CUSTOMER_SHARE, IndexPicker, empty_planted, first_ids, scaled,
)
from khaosync.sandbox.generator_xml_faults import (
    broken_company, broken_sales_order, hostile_company_entity_decl, hostile_company_entity_ref,
)
from khaosync.sandbox.world import World

__all__ = ["DEFAULT_END", "DEFAULT_START", "advance", "generate", "load_manifest"]

DEFAULT_START = date(2026, 1, 1)
DEFAULT_END = date(2026, 10, 31)
MIN_CUSTOMERS = 25  # enough companies to plant every company fault on its own record
MIN_ORDERS = 100
MIN_DAYS = 28


def generate(folder: Path, *, seed: int = 7, customers: int = 1000, orders: int = 5000,
             start: date = DEFAULT_START, end: date = DEFAULT_END) -> dict:
    """Plant a merchant in ``folder`` and return its manifest.

    Creates ``folder`` if needed and refuses (``FileExistsError``) if ``folder/world.db``
    exists: the caller deletes an old sandbox, never this function. The World is built in a
    scratch folder and moved into place at the end, so a failed run leaves no half world.

    >>> generate(Path("sandbox"), customers=60, orders=300)["counts"]["sales_orders"]  # doctest: +SKIP
    300
    """
    _check_params(customers, orders, start, end)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if World.exists(folder):
        raise FileExistsError(f"{folder / World.FILE} already exists: delete the sandbox first")
    scratch = folder / ".generating"
    if scratch.exists():
        shutil.rmtree(scratch)  # our own leftovers from an interrupted run
    scratch.mkdir()
    world = World(scratch)
    try:
        planted = _Generation(world, seed, customers, orders, start, end).run()
    finally:
        world.close()
    (scratch / World.FILE).replace(folder / World.FILE)
    shutil.rmtree(scratch)
    return publish(folder, planted, last_advance=None)


def advance(folder: Path, days: int) -> dict:
    """Let ``days`` days pass in the sandbox (see ``generator_advance``); returns the summary
    that is also the manifest's ``last_advance``."""
    return run_advance(Path(folder), days)


def _check_params(customers: int, orders: int, start: date, end: date) -> None:
    if customers < MIN_CUSTOMERS:
        raise ValueError(f"customers must be at least {MIN_CUSTOMERS} to plant every fault")
    if orders < MIN_ORDERS:
        raise ValueError(f"orders must be at least {MIN_ORDERS} to plant every fault")
    if (end - start).days + 1 < MIN_DAYS:
        raise ValueError(f"the range must cover at least {MIN_DAYS} days")


@dataclass
class _DayPlan:
    day: date
    count: int
    specials: list[tuple[datetime, str]] = field(default_factory=list)  # planted DST-edge times


class _Generation:
    """One run of ``generate``: catalogue, companies, then orders day by day, in one transaction."""

    def __init__(self, world: World, seed: int, customers: int, orders: int, start: date, end: date):
        self.world = world
        self.seed = seed
        self.n_customers = customers
        self.n_orders = orders
        self.start, self.end = start, end
        self.start_dt = day_start(start)
        self.clock = day_end(end)
        self.ids = first_ids()
        self.planted = empty_planted()

    def run(self) -> dict:
        world = self.world
        world.begin()
        world.set_meta("seed", self.seed)
        world.set_meta("params", {"customers": self.n_customers, "orders": self.n_orders,
                                  "start": self.start.isoformat(), "end": self.end.isoformat()})
        world.set_meta("clock", kc(self.clock))
        catalogue_build = self._catalogue()
        customers = self._companies()
        self._orders(catalogue_build, customers)
        self._storefront_orders(catalogue_build, customers)
        world.set_meta("serve_twice", self.planted["duplicate_in_response"])
        world.set_meta("next_ids", self.ids)
        world.set_meta("planted", self.planted)
        world.commit()
        return self.planted

    # -- catalogue ---------------------------------------------------------------------
    def _catalogue(self) -> CatalogueBuild:
        rng = Random(f"{self.seed}:catalogue")
        factory = CatalogueFactory(rng, self.seed, self.start_dt, self.clock)
        span = self.clock - self.start_dt
        build = factory.build(styles=min(400, max(8, self.n_orders // 500)),
                              plain_items=min(100, max(4, self.n_orders // 2000)),
                              renames_from=self.start_dt + span * 0.35, renames_to=self.start_dt + span * 0.75)
        self.ids["stock_item"] = factory.next_stock_id
        for doc in build.docs:
            self.world.put("stock_item", doc)
        self.planted["product_incomplete"] = build.product_incomplete
        self.planted["renamed_stock_code"] = [
            {"stock_id": s.stock_id, "old_code": s.code, "new_code": s.new_code, "renamed_at": s.renamed_at,
             "sales_orders": []} for s in build.renamed]
        return build

    # -- companies ---------------------------------------------------------------------
    def _company_roles(self, rng: Random) -> tuple[dict[int, str], dict[int, int]]:
        """Which company positions carry a planted fault or forced consent, and the shared-email groups."""
        size = self.n_customers
        picker = IndexPicker(rng, size, blocked=[range(0, 5)])  # the first customers stay clean to take orders
        roles: dict[int, str] = {}
        groups: dict[int, int] = {}
        for group in range(scaled(size, 0.005)):
            lead = picker.pick(5, size - 2)
            roles[lead], groups[lead] = "shared_lead", group
            for _ in range(1 if size < 200 or rng.random() < 0.6 else 2):
                member = picker.pick(lead + 1, size)
                roles[member], groups[member] = "shared_member", group
        plan = (("shared_same", scaled(size, 0.002)), ("bad_email", scaled(size, 0.005)),
                ("missing_code", scaled(size, 0.002)), ("no_contacts", scaled(size, 0.003)),
                ("broken_xml", scaled(size, 0.003)), ("serve_twice", scaled(size, 0.003)),
                ("unsub", 1), ("opted_out", 1), ("blank", 1))
        for role, count in plan:
            for _ in range(count):
                roles[picker.pick(5, size)] = role
        for n in range(scaled(size, 0.004, minimum=2)):
            roles[picker.pick(5, size)] = "hostile_entity_ref" if n % 2 == 0 else "hostile_entity_decl"
        return roles, groups

    def _creation_times(self, rng: Random) -> list[datetime]:
        existing = self.n_customers - round(self.n_customers * (1 - EXISTING_CUSTOMER_SHARE))
        before = sorted(between(rng, self.start_dt - timedelta(days=3 * 365), self.start_dt - timedelta(seconds=1))
                        for _ in range(existing))
        during = sorted(between(rng, self.start_dt, self.clock) for _ in range(self.n_customers - existing))
        return before + during

    def _companies(self) -> list[Customer]:
        rng = Random(f"{self.seed}:companies")
        roles, groups = self._company_roles(rng)
        factory = CompanyFactory(rng, self.seed, self.ids, self.start_dt, self.clock)
        group_members: dict[int, list[dict]] = {}
        group_email: dict[int, str] = {}
        customers: list[Customer] = []
        unsubscribes: list[dict] = []
        for index, created in enumerate(self._creation_times(rng)):
            role = roles.get(index)
            group = groups.get(index)
            build = factory.build(created, role, shared_email=group_email.get(group) if group is not None else None)
            doc = build.doc
            if role == "shared_lead":
                group_email[group] = doc["contacts"][0]["email"]  # type: ignore[index]
            if group is not None:
                group_members.setdefault(group, []).append(
                    {"company_id": doc["company_id"], "contact_id": doc["contacts"][0]["contact_id"]})
            if role == "shared_same":
                self.planted["shared_email"].append({"email": doc["contacts"][0]["email"], "contacts": [
                    {"company_id": doc["company_id"], "contact_id": c["contact_id"]} for c in doc["contacts"]]})
            self._plant_company_fault(role, doc)
            self.world.put("company", doc)
            customers.append(build.customer)
            unsubscribes.extend(build.unsubscribes)
        for group in sorted(group_members):
            self.planted["shared_email"].append({"email": group_email[group], "contacts": group_members[group]})
        self.planted["shared_email"].sort(key=lambda entry: entry["email"])
        for entry in sorted(unsubscribes, key=lambda e: e["email"]):
            self.world.put_ometria_unsubscribe(entry["email"], entry["timestamp"], entry["reason"])
            self.planted["ometria_unsubscribed"].append(
                {"company_id": entry["company_id"], "contact_id": entry["contact_id"], "email": entry["email"]})
        self.planted["ometria_unsubscribed"].sort(key=lambda e: (e["company_id"], e["contact_id"]))
        return customers

    def _plant_company_fault(self, role: str | None, doc: dict) -> None:
        planted, company_id = self.planted, doc["company_id"]
        if role == "bad_email":
            planted["bad_email"].append({"company_id": company_id, "contact_id": doc["contacts"][0]["contact_id"]})
        elif role == "missing_code":
            planted["missing_field"].append({"entity": "company", "key": company_id, "field": "company_code"})
        elif role == "no_contacts":
            planted["company_without_contacts"].append(company_id)
        elif role == "broken_xml":
            self.world.set_raw_override("company", company_id, broken_company(doc))
            planted["broken_xml"].append({"entity": "company", "key": company_id})
        elif role == "hostile_entity_ref":
            self.world.set_raw_override("company", company_id, hostile_company_entity_ref(doc))
            planted["hostile_xml"].append({"entity": "company", "key": company_id, "kind": "entity_reference"})
        elif role == "hostile_entity_decl":
            self.world.set_raw_override("company", company_id, hostile_company_entity_decl(doc))
            planted["hostile_xml"].append({"entity": "company", "key": company_id, "kind": "entity_declaration"})
        elif role == "serve_twice":
            planted["duplicate_in_response"]["company"].append(company_id)

    # -- orders ------------------------------------------------------------------------
    def _day_plans(self, rng: Random) -> list[_DayPlan]:
        days = date_range(self.start, self.end)
        counts = allocate(self.n_orders, day_weights(rng, days))
        plans = [_DayPlan(day, count) for day, count in zip(days, counts)]
        for plan in plans:
            if plan.day == spring_forward(plan.day.year):
                base = day_start(plan.day)
                plan.specials = [(base + timedelta(minutes=59), "gap_adjacent"),
                                 (base + timedelta(hours=2), "gap_adjacent")]
            elif plan.day == fall_back(plan.day.year):
                plan.specials = [(day_start(plan.day) + timedelta(hours=1, minutes=30), "ambiguous")]
            while plan.count < len(plan.specials):
                # Borrow an order from the busiest ordinary day so the DST edge gets its orders.
                donor = max((p for p in plans if not p.specials), key=lambda p: (p.count, p.day))
                donor.count -= 1
                plan.count += 1
        return plans

    def _order_roles(self, rng: Random, day_plans: list[_DayPlan], renamed: list[Sellable]) -> dict[int, OrderPlan]:
        size = self.n_orders
        first_index, blocked, running = {}, [], 0
        for plan in day_plans:
            first_index[plan.day] = running
            if is_dst_day(plan.day):
                blocked.append(range(running, running + plan.count))  # DST orders stay plain
            running += plan.count
        picker = IndexPicker(rng, size, blocked)
        early, late = max(1, int(size * 0.8)), int(size * 0.97)
        plans: dict[int, OrderPlan] = {}
        for role in MALFORMED_ORDER_ROLES + ("serve_twice",):
            for _ in range(scaled(size, 0.005)):
                plans[picker.pick(0, early)] = OrderPlan(role)
        for role in ("cancelled", "split", "refund_full", "refund_partial", "refund_delivery"):
            plans[picker.pick(0, early)] = OrderPlan(role)
        for _ in range(scaled(size, 0.002)):
            plans[picker.pick(0, early)] = OrderPlan("ometria_duplicate")
        plans[picker.pick(late, size)] = OrderPlan("back_order_open")
        plans[picker.pick(late, size)] = OrderPlan("pending")
        for sellable in renamed:
            rename_day = datetime.fromisoformat(sellable.renamed_at or "").date()
            plans[picker.pick(0, max(1, first_index.get(rename_day, size)))] = OrderPlan(
                "renamed", force_stock_id=sellable.stock_id)
        return plans

    def _orders(self, catalogue_build: CatalogueBuild, customers: list[Customer]) -> None:
        rng = Random(f"{self.seed}:orders")
        day_plans = self._day_plans(rng)
        roles = self._order_roles(Random(f"{self.seed}:order-roles"), day_plans, catalogue_build.renamed)
        factory = OrderFactory(rng, catalogue_build.catalogue, self.ids, self.clock)
        pool = CustomerPool(customers)
        credits = CreditQueue(self.world, self.ids)
        renamed = {entry["stock_id"]: entry for entry in self.planted["renamed_stock_code"]}
        chunk: list[dict] = []
        index = 0
        for plan in day_plans:
            credits.flush_before(kc(day_start(plan.day)))
            times: list[tuple[datetime, str]] = [(moment, "") for moment in
                                                 random_times(rng, plan.day, plan.count - len(plan.specials))]
            for moment, dst in sorted(times + plan.specials):
                order_plan = OrderPlan(dst=dst) if dst else roles.get(index, None)
                customer = pool.pick(rng, kc(moment))
                built = factory.build(moment, customer, order_plan)
                self._record_order(built, order_plan, renamed, credits)
                chunk.append(built.doc)
                if len(chunk) >= CHUNK:
                    self._write_orders(chunk)
                index += 1
        self._write_orders(chunk)
        credits.flush_before(None)

    def _write_orders(self, chunk: list[dict]) -> None:
        for doc in chunk:
            self.world.put("sales_order", doc)
        chunk.clear()

    def _record_order(self, built: BuiltOrder, plan: OrderPlan | None, renamed: dict[int, dict],
                      credits: CreditQueue) -> None:
        doc, planted = built.doc, self.planted
        sorder_id = doc["sorder_id"]
        role = plan.role if plan else None
        for credit in built.credits:
            credits.push(credit)
        for stock_id in sorted(set(built.old_code_stock_ids)):
            renamed[stock_id]["sales_orders"].append(sorder_id)
        if built.ometria_seeds:
            for ometria_id, seed_doc in built.ometria_seeds:
                self.world.put_ometria_seed("order", ometria_id, seed_doc)
            planted["ometria_duplicate_order"].append(
                {"sorder_id": sorder_id, "ometria_ids": [ometria_id for ometria_id, _ in built.ometria_seeds]})
        if plan is not None and plan.dst:
            planted[f"dst_{plan.dst}"].append(sorder_id)
        if role in ("unknown_currency", "negative_quantity", "total_mismatch", "unknown_product"):
            planted[role].append(sorder_id)
        elif role == "missing_order_date":
            planted["missing_field"].append({"entity": "sales_order", "key": sorder_id, "field": "order_date"})
        elif role == "broken_xml":
            self.world.set_raw_override("sales_order", sorder_id, broken_sales_order(doc))
            planted["broken_xml"].append({"entity": "sales_order", "key": sorder_id})
        elif role == "serve_twice":
            planted["duplicate_in_response"]["sales_order"].append(sorder_id)

    # -- Ometria-only orders -----------------------------------------------------------
    def _storefront_orders(self, catalogue_build: CatalogueBuild, customers: list[Customer]) -> None:
        """Web orders that reached Ometria from the storefront but never reached KC."""
        rng = Random(f"{self.seed}:storefront")
        for n in range(1, scaled(self.n_orders, 0.002, minimum=2) + 1):
            placed = kc(between(rng, self.start_dt, self.clock))
            customer = rng.choice(customers)
            contact = customer.contacts[0] if customer.contacts and rng.random() < 0.5 else None
            ometria_id, doc = storefront_order(rng, n, catalogue_build.catalogue, placed, contact)
            self.world.put_ometria_seed("order", ometria_id, doc)
            self.planted["ometria_storefront_order"].append(ometria_id)
