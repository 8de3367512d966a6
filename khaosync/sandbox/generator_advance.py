"""Time passes in the sandbox: ``advance(folder, days)``.

The clock moves ``days`` days on. In the new days, as in the generated range:

- new customers sign up and new orders arrive at the generated daily rates (their own
  despatches, cancellations and refunds included);
- orders waiting at the old clock are despatched: released/picking/packing invoices are
  issued within a couple of days, back-orders when their stock arrives (most within weeks);
- credit notes are raised against recently despatched orders (at least one full and one
  partial refund when there is an order to take them);
- a few customers tell the merchant "do not mail" (``mailing_status`` 6, "do not use");
- a few contacts KC still has opted in unsubscribe in Ometria;
- now and then a SKU is re-coded (``renamed_stock_code``).

Every record touched gets ``updated`` = its event time within the new days, so "changed
since the old clock" is exactly what this advance did. The random stream is seeded from
``(seed, old clock, days)``: the same advance from the same world gives the same bytes.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from random import Random

from khaosync.sandbox.generator_calendar import (
    ONE_SECOND, after, allocate, between, date_range, day_weights, kc, parse_kc, random_times, utc_z,
    working_hours,
)
from khaosync.sandbox.generator_catalogue import Catalogue, popularity, rename
from khaosync.sandbox.generator_manifest import excluded_orders, malformed_companies, publish
from khaosync.sandbox.generator_orders import (
    COURIERS, STAGES, CreditQueue, OrderFactory, line_from_item, plan_credit, tracking_number,
)
from khaosync.sandbox.generator_people import DO_NOT_MAIL, FIRST_COMPANY_ID, CompanyFactory, Customer, CustomerPool
from khaosync.sandbox.generator_planting import CHUNK, EXISTING_CUSTOMER_SHARE, IndexPicker
from khaosync.sandbox.world import ENTITIES, World

RECENT_DAYS = 60  # how far back a customer still returns things
_PENDING = ("json_extract(doc, '$.cancelled') = 0 AND EXISTS (SELECT 1 FROM json_each(doc, '$.invoices') "
            "WHERE json_extract(value, '$.issued') IS NULL)")
_HAS_STOCK = "EXISTS (SELECT 1 FROM json_each(doc, '$.items') WHERE json_extract(value, '$.stock_id') = ?)"


def run_advance(folder: Path, days: int) -> dict:
    if days < 1:
        raise ValueError("advance needs at least one day")
    if not World.exists(folder):
        raise FileNotFoundError(f"no sandbox in {folder}: generate one first")
    world = World(folder)
    try:
        step = _Advance(world, days)
        planted = step.run()
        summary = step.summary()
    finally:
        world.close()
    publish(folder, planted, last_advance=summary)
    return summary


class _Advance:
    def __init__(self, world: World, days: int):
        self.world = world
        self.days = days
        self.seed: int = world.get_meta("seed")
        self.params: dict = world.get_meta("params")
        self.old_clock_text: str = world.clock
        self.old_clock = parse_kc(self.old_clock_text)
        self.clock = self.old_clock + timedelta(days=days)
        self.window_start = self.old_clock + ONE_SECOND
        self.rng = Random(f"{self.seed}|{self.old_clock_text}|{days}")
        self.ids: dict[str, int] = world.get_meta("next_ids")
        self.planted: dict = world.get_meta("planted")
        self.excluded = set(excluded_orders(self.planted))
        self.bad_companies = set(malformed_companies(self.planted))
        self.range_days = (date.fromisoformat(self.params["end"]) - date.fromisoformat(self.params["start"])).days + 1
        stock_docs = list(world.iter("stock_item"))  # thousands, not millions
        self.catalogue = Catalogue.from_stock_docs(self.seed, stock_docs)
        self.stock_by_id = {doc["stock_id"]: doc for doc in stock_docs}
        self.credits = CreditQueue(world, self.ids)
        self.renamed_entry: dict | None = None
        # Existing records this advance changes, by key, written before any new record.
        self.companies: dict[int, dict] = {}
        self.orders: dict[int, dict] = {}
        self.stock: dict[int, dict] = {}
        self.events = {"new_companies": 0, "new_orders": 0, "despatched_orders": 0, "new_credit_notes": 0,
                       "consent_changes": 0, "ometria_unsubscribes": 0, "stock_renames": 0}

    def run(self) -> dict:
        world = self.world
        world.begin()
        # Changes to existing records first, then new records (higher keys), so every table
        # is written in key order; new orders stream out in chunks.
        self._despatch_waiting_orders()
        self._maybe_rename()
        self._credit_recent_orders()
        self._consent_changes()
        self._ometria_unsubscribes()
        self._write_changed()
        self._new_customers_and_orders()
        self.credits.flush_before(None)
        world.set_meta("clock", kc(self.clock))
        world.set_meta("next_ids", self.ids)
        world.set_meta("planted", self.planted)
        world.commit()
        return self.planted

    def summary(self) -> dict:
        changed = {}
        for entity in ENTITIES:
            rows = self.world.conn.execute(f"SELECT key FROM {entity} WHERE updated > ? ORDER BY key",
                                           (self.old_clock_text,))
            changed[entity] = [key for (key,) in rows]
        return {"days": self.days, "from": self.old_clock_text, "to": kc(self.clock), "changed": changed,
                "events": self.events}

    # -- despatch ----------------------------------------------------------------------
    def _despatch_waiting_orders(self) -> None:
        """Issue the invoices that were waiting at the old clock, if their moment has come."""
        back_order_chance = 1 - 0.9 ** self.days
        for order in self.world.iter("sales_order", where=_PENDING):
            if order["sorder_id"] in self.excluded:
                continue
            previous = max([parse_kc(order["order_date"])] +
                           [parse_kc(inv["issued"]) for inv in order["invoices"] if inv["issued"]])
            issued_any = False
            for invoice in order["invoices"]:
                if invoice["issued"] is not None:
                    continue
                if invoice["stage_id"] == 18:
                    if self.rng.random() >= back_order_chance:
                        break  # the stock has not arrived; anything after it waits too
                    when = working_hours(between(self.rng, max(previous, self.window_start), self.clock))
                else:
                    when = working_hours(after(self.rng, max(previous, self.old_clock), timedelta(hours=2),
                                               timedelta(hours=48)))
                if when > self.clock or when <= self.old_clock:
                    break
                self._issue(invoice, when, order["courier_code"])
                previous, issued_any = when, True
            if issued_any:
                order["updated"] = max(order["updated"], kc(previous))
                self.orders[order["sorder_id"]] = order
                self.events["despatched_orders"] += 1

    def _issue(self, invoice: dict, when: datetime, courier: str) -> None:
        invoice.update(stage_id=16, stage_desc=STAGES[16], issued=kc(when),
                       consignment_ref=f"CN-{invoice['invoice_id']}", courier_code=courier,
                       courier_name=COURIERS.get(courier, courier), tracking_number=tracking_number(self.rng, courier))

    # -- refunds and renames over recent orders ----------------------------------------
    def _recent_since(self) -> str:
        return kc(self.old_clock - timedelta(days=RECENT_DAYS))

    def _credit_recent_orders(self) -> None:
        """Customers send back things from orders despatched in the last weeks."""
        credited = {key for (key,) in self.world.conn.execute(
            "SELECT DISTINCT json_extract(doc, '$.sorder_id') FROM credit_note")}
        keep_clean = set(self.planted["duplicate_in_response"]["sales_order"]) | {
            entry["sorder_id"] for entry in self.planted["ometria_duplicate_order"]}
        orders_per_day = self.params["orders"] / self.range_days
        expected = 0.082 * orders_per_day * self.days
        chance = min(1.0, expected / max(1.0, orders_per_day * RECENT_DAYS))
        wanted = ["full", "partial"]  # every advance tries to raise at least one of each
        for stored in self.world.iter("sales_order", updated_since=self._recent_since()):
            order = self.orders.get(stored["sorder_id"], stored)
            sorder_id = order["sorder_id"]
            if (sorder_id in self.excluded or sorder_id in credited or sorder_id in keep_clean
                    or order["cancelled"] or not any(inv["issued"] for inv in order["invoices"])):
                continue
            if wanted:
                kind = wanted[0]
            elif self.rng.random() < chance:
                kind = str(self.rng.choice(("full", "partial", "partial", "delivery_only")))
            else:
                continue
            lines = [line_from_item(item, self.catalogue.by_id.get(item["stock_id"])) for item in order["items"]]
            credit = plan_credit(self.rng, order, lines, Decimal(order["delivery_gross"]), kind, self.clock,
                                 designated=False, window_start=self.window_start)
            if credit is not None:
                self.credits.push(credit)
                self.events["new_credit_notes"] += 1
                if kind in wanted:
                    wanted.remove(kind)

    def _maybe_rename(self) -> None:
        """Now and then the buyer re-codes a selling SKU; its old orders keep the old code."""
        if self.rng.random() >= 1 - 0.98 ** self.days:
            return
        spoiled = {entry["stock_id"] for entry in self.planted["product_incomplete"]}
        ordered = [stock_id for (stock_id,) in self.world.conn.execute(
            "SELECT DISTINCT json_extract(item.value, '$.stock_id') AS stock_id FROM sales_order, "
            "json_each(sales_order.doc, '$.items') AS item WHERE sales_order.updated > ? ORDER BY stock_id",
            (self._recent_since(),))]
        eligible = [stock_id for stock_id in ordered if stock_id in self.catalogue.by_id
                    and not self.stock_by_id[stock_id]["code_history"]
                    and self.stock_by_id[stock_id]["parent_stock_id"] not in spoiled]
        if not eligible:
            return
        stock_id = self.rng.choice(eligible)
        sellable = self.catalogue.by_id[stock_id]
        doc = self.stock_by_id[stock_id]
        old_code = doc["stock_code"]
        when = kc(working_hours(between(self.rng, self.window_start, self.clock - timedelta(hours=12))))
        rename(doc, sellable, when)
        self.stock[stock_id] = doc
        orders = [order["sorder_id"] for order in self.world.iter("sales_order", where=_HAS_STOCK, args=(stock_id,))]
        self.renamed_entry = {"stock_id": stock_id, "old_code": old_code, "new_code": doc["stock_code"],
                              "renamed_at": when, "sales_orders": orders}
        self.planted["renamed_stock_code"].append(self.renamed_entry)
        self.events["stock_renames"] += 1

    # -- consent -----------------------------------------------------------------------
    def _random_companies(self, count: int, eligible) -> list[dict]:
        """Up to ``count`` distinct existing companies that pass ``eligible``."""
        first, last = FIRST_COMPANY_ID, self.ids["company"]
        picker = IndexPicker(self.rng, last - first)
        chosen: list[dict] = []
        for _ in range(count * 20):
            if len(chosen) >= count:
                break
            try:
                company_id = first + picker.pick(0, last - first)
            except ValueError:
                break
            doc = self.companies.get(company_id) or self.world.get("company", company_id)
            if doc is not None and company_id not in self.bad_companies and eligible(doc):
                chosen.append(doc)
        return chosen

    def _consent_changes(self) -> None:
        unsubscribed = {entry["company_id"] for entry in self.planted["ometria_unsubscribed"]}
        count = max(1, round(self.params["customers"] * 0.0003 * self.days))
        for doc in self._random_companies(count, lambda d: d["mailing_status"] != DO_NOT_MAIL
                                          and d["company_id"] not in unsubscribed):
            when = kc(working_hours(between(self.rng, self.window_start, self.clock)))
            doc["mailing_status"] = DO_NOT_MAIL
            for contact in doc["contacts"]:
                contact["email_subscribe"] = False
                contact["mailing_flag"] = False
            doc["updated"] = max(doc["updated"], when)
            self.companies[doc["company_id"]] = doc
            self.events["consent_changes"] += 1

    def _ometria_unsubscribes(self) -> None:
        shared = {entry["email"] for entry in self.planted["shared_email"]}
        already = {email for email, _, _ in self.world.ometria_unsubscribes()}
        count = max(1, round(self.params["customers"] * 0.0002 * self.days))

        def opted_in(doc: dict) -> bool:
            return (doc["company_id"] not in self.companies and doc["mailing_status"] in (1, 2, 3)
                    and any(c["email_subscribe"] is True and c["email"] not in shared and c["email"] not in already
                            for c in doc["contacts"]))

        for doc in self._random_companies(count, opted_in):
            contact = next(c for c in doc["contacts"] if c["email_subscribe"] is True
                           and c["email"] not in shared and c["email"] not in already)
            when = utc_z(kc(between(self.rng, self.window_start, self.clock)))
            self.world.put_ometria_unsubscribe(contact["email"], when, "Unsubscribed via email footer link")
            already.add(contact["email"])
            self.planted["ometria_unsubscribed"].append(
                {"company_id": doc["company_id"], "contact_id": contact["contact_id"], "email": contact["email"]})
            self.events["ometria_unsubscribes"] += 1

    # -- new customers and orders ------------------------------------------------------
    def _new_customers_and_orders(self) -> None:
        rng = self.rng
        customers = [Customer.from_doc(doc, 0.0 if doc["company_id"] in self.bad_companies
                                       else popularity(self.seed, "customer", doc["company_id"]))
                     for doc in self.world.iter("company")]
        per_day = self.params["customers"] * (1 - EXISTING_CUSTOMER_SHARE) / self.range_days
        factory = CompanyFactory(rng, self.seed, self.ids, self.window_start, self.clock)
        new_count = int(per_day * self.days * rng.uniform(0.8, 1.2) + 0.5)
        for created in sorted(between(rng, self.window_start, self.clock) for _ in range(new_count)):
            build = factory.build(created)
            self.world.put("company", build.doc)
            customers.append(build.customer)
            for entry in build.unsubscribes:
                self.world.put_ometria_unsubscribe(entry["email"], entry["timestamp"], entry["reason"])
                self.planted["ometria_unsubscribed"].append(
                    {"company_id": entry["company_id"], "contact_id": entry["contact_id"], "email": entry["email"]})
            self.events["new_companies"] += 1
        pool = CustomerPool(customers)
        orders = OrderFactory(rng, self.catalogue, self.ids, self.clock, ometria_duplicates=False)
        days = date_range(self.window_start.date(), self.clock.date())
        total = int(self.params["orders"] / self.range_days * self.days + 0.5)
        chunk: list[dict] = []
        for day, count in zip(days, allocate(max(1, total), day_weights(rng, days))):
            for moment in random_times(rng, day, count):
                if not (self.old_clock < moment <= self.clock):
                    continue
                built = orders.build(moment, pool.pick(rng, kc(moment)))
                chunk.append(built.doc)
                for credit in built.credits:
                    self.credits.push(credit)
                    self.events["new_credit_notes"] += 1
                if self.renamed_entry is not None and self.renamed_entry["stock_id"] in built.old_code_stock_ids:
                    self.renamed_entry["sales_orders"].append(built.doc["sorder_id"])
                self.events["new_orders"] += 1
                if len(chunk) >= CHUNK:
                    self._put_all("sales_order", chunk)
        self._put_all("sales_order", chunk)

    # -- writing -----------------------------------------------------------------------
    def _write_changed(self) -> None:
        """Existing records this advance changed, each table in key order."""
        for entity, docs in (("company", self.companies), ("stock_item", self.stock), ("sales_order", self.orders)):
            self._put_all(entity, [docs[key] for key in sorted(docs)])
        self.companies.clear()
        self.orders.clear()

    def _put_all(self, entity: str, docs: list[dict]) -> None:
        for doc in docs:
            self.world.put(entity, doc)
        docs.clear()
