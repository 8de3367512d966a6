"""Map: staged ERP records -> outbound Ometria records, through the YAML mapping rules.

Entities run in push order, products, then contacts, then orders, each streaming its staged
records (``staging.iter_current``) and writing ``outbound_record`` rows in batched
transactions (``batch_size`` records each, with their exceptions). A record that cannot be
mapped becomes an exception (stage ``map``) and the rest goes on; raw-only staged records
(pull could not parse them, and recorded why) are skipped silently.

Memory stays bounded by the catalogue and the customer base, never by the number of orders:

- stock items are held as small ``ProductRef`` tuples (a catalogue is thousands of items);
- contacts are in ``contact_index`` (on disk, kept in step with staging: a night re-reads only
  the companies staged since its mark, ``store/contact_index.py``); credit notes are found by
  their order through an index on the staged JSON (``staged_credit_order``); each batch of
  orders looks its customers and credit notes up by key, a query a batch;
- orders stream through the cursor; each batch prefetches the outbound rows it may replace.

Mapping the same staged records twice gives byte-identical bodies and writes nothing the
second time (``store.outbound.write`` skips unchanged rows). Findings this run no longer
sees are resolved for the entities it mapped.

Incremental (``incremental=True``, what ``sync`` runs): only what changed is mapped again. The
records staged since the entity's last completed map (``map_mark``, found through the staging
run index) name what changed; every record's *reads* (``map_read``: each (entity, key) its
mapping looked up, found or not) give the reverse lineage, so a changed customer, stock item,
alias or credit note maps again the orders that used it, and a changed shared-email decision
the contacts and orders it touches. Checks that look at everything at once (shared emails,
credit notes without their order) still run whole, over SQL indexes. A finding of a record that
was not mapped again stays open (carried forward); only the records looked at again, and the
whole-store checks, close what they no longer see. Another mapping, or no mark yet, maps all.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

import orjson
from pydantic import ValidationError

from khaosync.config import Profile
from khaosync.findings import TYPES, owner_of, severity_of
from khaosync.khaos import staged as canonical  # staged canonical JSON read at C speed
from khaosync.khaos.models import Company, CreditNote, SalesOrder, StockItem
from khaosync.mapping.contacts import Member, SharedEmails, consent_for, email_key, map_company
from khaosync.mapping.orders import Catalogue, CustomerRef, map_sales_order
from khaosync.mapping.outcome import Finding, Outcome, lineage_json
from khaosync.mapping.products import ProductRef, map_stock_item
from khaosync.mapping.schema import Mapping, load_mapping
from khaosync.ometria import wire
from khaosync.ometria.models import MarketingOptin
from khaosync.store import StateStore, contact_index, map_state, outbound, staging
from khaosync.store.db import utcnow

STAGE = "map"
# CLI names -> the staged entity each maps from, in push order (products before orders).
ENTITIES: dict[str, str] = {"products": "stock_item", "contacts": "company", "orders": "sales_order"}
OMETRIA_TYPES: dict[str, str] = {"products": "product", "contacts": "contact", "orders": "order"}
# The exception entities each CLI entity owns: its run resolves what it no longer sees.
FINDING_ENTITIES: dict[str, tuple[str, ...]] = {
    "products": ("stock_item",), "contacts": ("company", "contact"), "orders": ("sales_order", "credit_note"),
}
BATCH = 1000
# Findings from checks that look at the whole store every run: closed whole, even incrementally.
WHOLE_STORE_FINDINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "products": (), "contacts": (("identifier_conflict", "contact"),), "orders": (),
}
# (refund_gap is answered for the credit notes whose answer may have moved: ``credit_candidates``.)
# Keys a staged record's versions point at, besides its own: a company holds its contacts, a
# credit note points at its sales order. (Aliases come from ``record_alias``, for every entity.)
DERIVED_KEYS: dict[str, Callable[[dict], list[tuple[str, str]]]] = {
    "company": lambda doc: [("contact", str(c["contact_id"])) for c in doc.get("contacts") or []
                            if isinstance(c, dict) and c.get("contact_id") is not None],
    "credit_note": lambda doc: [("sales_order", str(doc["sorder_id"]))] if doc.get("sorder_id") is not None else [],
}

Progress = Callable[[str, int, int | None], None]


@dataclass
class EntityResult:
    entity: str
    staged: int = 0       # current staged records read with a parsed form
    skipped_raw: int = 0  # staged raw-only: pull could not parse them (its exception says why)
    new: int = 0          # ready records written for the first time
    changed: int = 0      # ready records whose body (or state) changed
    unchanged: int = 0    # ready records identical to what is stored: nothing written
    held: int = 0         # records that must not be sent (their exceptions say why)
    not_sent: int = 0     # before their trigger, or skipped by a rule (inactive contacts)
    exceptions: int = 0   # findings recorded this run
    outside_window: int = 0  # credit notes of orders a pull --since left outside its window: not checked

    @property
    def mapped(self) -> int:
        return self.new + self.changed

    def as_dict(self) -> dict:
        return {**self.__dict__, "mapped": self.mapped}


@dataclass
class MapResult:
    run_id: int
    entities: dict[str, EntityResult]
    exceptions: Counter = field(default_factory=Counter)
    fail_findings: int = 0  # fail-severity map exceptions open for this run
    mappings: tuple[str, ...] = ()
    incremental: dict[str, bool] = field(default_factory=dict)  # per entity: only what changed was mapped
    looked_at: dict[str, set[str]] = field(default_factory=dict)  # staged entity -> keys mapped again (incremental)

    def as_dict(self) -> dict:
        return {
            "run": self.run_id,
            "mappings": list(self.mappings),
            "entities": {k: v.as_dict() for k, v in self.entities.items()},
            "exceptions": dict(sorted(self.exceptions.items())),
            "fail_findings": self.fail_findings,
        }


def _batches(items: Iterable, size: int) -> Iterable[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _MapRun:
    """One run of the stage over one store: the indexes, the writer, the counters."""

    def __init__(self, store: StateStore, mapping: Mapping, run_id: int, batch_size: int,
                 progress: Progress | None):
        self.store = store
        self.conn = store.conn
        self.mapping = mapping
        self.run_id = run_id
        self.batch_size = batch_size
        self.progress = progress
        self.found: Counter = Counter()
        self.catalogue = Catalogue(lambda code: staging.keys_by_alias(self.conn, "stock_item", "stock_code", code),
                                   self._stock_item)
        self.shared = SharedEmails()
        self.scope: dict[str, set[tuple[str, str]]] = {}  # incremental: (entity, key) looked at again, per CLI entity
        self.credit_candidates: set[str] = set()  # incremental: credit notes whose refund gap may have moved

    # -- writing ---------------------------------------------------------------------------
    def _record(self, finding: Finding, result: EntityResult) -> None:
        result.exceptions += 1
        self.found[finding.type] += 1
        self.store.record_exception(
            run_id=self.run_id, type=finding.type, severity=severity_of(finding.type),
            owner=owner_of(finding.type, self.mapping.owners), stage=STAGE, reason=finding.reason,
            records=list(finding.records), entity=finding.entity, record_key=finding.key, detail=finding.detail,
        )

    def write(self, outcomes: list[Outcome], result: EntityResult, findings: list[Finding] = (),
              stored: dict[tuple[str, str], outbound.Stored] | None = None,
              reads: dict[str, set[map_state.Read]] | None = None) -> None:
        """One transaction: the batch's outbound rows, every finding it raised, what it read."""
        versions = [encode(o) for o in outcomes]
        extra: list[Finding] = list(findings)
        for o in outcomes:
            extra += o.findings
        with self.store.transaction() as conn:
            written = outbound.write(conn, versions, run_id=self.run_id, now=utcnow(), stored=stored)
            if reads:
                map_state.replace_reads(conn, "order", reads)
            for finding in extra:
                self._record(finding, result)
        for v in versions:
            if v.state == "held":
                result.held += 1
            else:
                setattr(result, written.get(v.id, "unchanged"), getattr(result, written.get(v.id, "unchanged")) + 1)

    def _tick(self, name: str, done: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress(name, done, total)

    # -- products --------------------------------------------------------------------------
    def _stock_item(self, stock_id: int) -> ProductRef | None:
        """One staged stock item as order lines see it (None: not staged, or unreadable)."""
        row = self.conn.execute("SELECT version, parsed FROM staged_record WHERE entity = 'stock_item' AND key = ?"
                                " AND current = 1", (str(stock_id),)).fetchone()
        if row is None or row[1] is None:
            return None
        try:
            return ProductRef.of(StockItem.model_validate_json(row[1]), row[0])
        except ValidationError:
            return None  # its own finding is the products map's

    def products(self, result: EntityResult | None, keys: set[str] | None = None) -> None:
        """Map the catalogue (only ``keys``, when given: an incremental run). Order lines read
        stock items through the catalogue, which loads what it was not given."""
        if result is None:
            return  # orders alone: the catalogue reads the items their lines name
        total = staging.count_current(self.conn, "stock_item") if keys is None else len(keys)
        outcomes: list[Outcome] = []
        findings: list[Finding] = []
        done = 0
        items = staging.iter_current(self.conn, "stock_item") if keys is None else _current_of(
            self.conn, "stock_item", keys)
        for staged in items:
            done += 1
            if staged.parsed is None:
                result.skipped_raw += 1
                continue
            try:
                item = StockItem.model_validate(staged.parsed)
            except ValidationError as exc:
                findings.append(_unreadable("stock_item", staged.key, exc))
                continue
            self.catalogue.add(ProductRef.of(item, staged.version))
            result.staged += 1
            outcomes.append(map_stock_item(item, staged.version, self.mapping))
            if len(outcomes) >= self.batch_size:
                self.write(outcomes, result, findings)
                outcomes, findings = [], []
                self._tick("products", done, total)
        self.write(outcomes, result, findings)
        self._tick("products", done, total)

    # -- contacts --------------------------------------------------------------------------
    def index_contacts(self, upto: int, incremental: bool) -> None:
        """The contact index brought up to staging (whole, or the companies staged since its
        mark), then the shared-email decisions."""
        c = self.conn
        c.create_function("khaosync_email_key", 1, email_key, deterministic=True)
        mark = map_state.get_mark(c, "contact_index") if incremental else None
        with self.store.transaction():
            if mark is None or mark.mapping != contact_index.VERSION:
                contact_index.rebuild(c)
            else:
                contact_index.refresh(c, [k for e, k in map_state.staged_since(c, mark.staged_run, upto)
                                          if e == "company"])
            map_state.set_mark(c, "contact_index", map_state.Mark(upto, contact_index.VERSION), self.run_id)
        rows = contact_index.shared(c, inactive_sent=self.mapping.contacts.inactive == "send")
        if not rows:
            return
        last_orders: dict[tuple[int, int | None], str] = {}
        if self.mapping.contacts.shared_email == "survivor_most_recent_order":
            companies = sorted({r[2] for r in rows})
            marks = ",".join("?" * len(companies))
            for company, contact, latest in c.execute(f"""
                    SELECT json_extract(parsed, '$.company_id'), json_extract(parsed, '$.contact_id'),
                           max(json_extract(parsed, '$.order_date'))
                    FROM staged_record INDEXED BY staged_order_company WHERE entity = 'sales_order'
                      AND current = 1 AND json_extract(parsed, '$.company_id') IN ({marks}) GROUP BY 1, 2""",
                    companies):  # the planner without statistics would walk every current order
                if latest:
                    last_orders[(company, contact)] = latest
        company_last: dict[int, str] = {}
        for (company, _), latest in last_orders.items():
            company_last[company] = max(company_last.get(company, ""), latest)
        groups: dict[str, list[Member]] = {}
        for key, contact_id, company_id, status, subscribe in rows:
            opted_out = consent_for(status, None if subscribe is None else bool(subscribe),
                                    self.mapping.consent)[0] == MarketingOptin.OPTED_OUT
            groups.setdefault(key, []).append(Member(contact_id, company_id, company_last.get(company_id),
                                                     last_orders.get((company_id, contact_id)), opted_out))
        for key, members in groups.items():
            self.shared.add_group(key, members, self.mapping.contacts.shared_email)

    def contacts(self, result: EntityResult, keys: set[str] | None = None) -> None:
        from khaosync.stages.consent import MapConsent  # consent times: KC keeps none (docs/runbook.md)

        self.consent = MapConsent(self.store, self.mapping)
        total = staging.count_current(self.conn, "company") if keys is None else len(keys)
        outcomes: list[Outcome] = []
        findings: list[Finding] = list(self.shared.findings)
        done = 0
        staged_companies = staging.iter_current(self.conn, "company") if keys is None else \
            _current_of(self.conn, "company", keys)
        for staged in staged_companies:
            done += 1
            if staged.parsed is None:
                result.skipped_raw += 1
                continue
            try:
                company = Company.model_validate(staged.parsed)
            except ValidationError as exc:
                findings.append(_unreadable("company", staged.key, exc))
                continue
            result.staged += 1
            made, company_findings = map_company(company, staged.version, self.mapping, self.shared,
                                                 self.consent.times(company))
            self.consent.hold_erased(made)
            result.not_sent += len(company.contacts) - len(made)
            outcomes += made
            findings += company_findings
            if len(outcomes) >= self.batch_size:
                self.write(outcomes, result, findings)
                outcomes, findings = [], []
                self._tick("contacts", done, total)
        self.write(outcomes, result, findings)
        self._tick("contacts", done, total)

    def customers_of(self, orders: list) -> tuple[dict[int, tuple], set[int]]:
        """A batch's contacts (``contact_index`` rows by contact id) and the ids of its
        companies that are readable staged records: two queries a batch, not two an order."""
        companies = sorted({str(o.company_id) for o in orders if o.company_id is not None})
        rows = contact_index.customers(self.conn, (o.contact_id for o in orders if o.contact_id is not None))
        known: set[int] = set()
        for start in range(0, len(companies), 500):
            part = companies[start:start + 500]
            known.update(int(k) for (k,) in self.conn.execute(
                "SELECT key FROM staged_record WHERE entity = 'company' AND current = 1 AND parsed IS NOT NULL"
                f" AND key IN ({','.join('?' * len(part))})", part))
        return rows, known

    def customer(self, order, contacts: dict[int, tuple]) -> CustomerRef | None:
        if order.contact_id is None:
            return None
        row = contacts.get(order.contact_id)
        if row is None:
            return None
        company_id, version, email, valid, first, last, inactive = row
        lineage = ("company", str(company_id), version)
        if inactive and self.mapping.contacts.inactive == "skip":
            return CustomerRef(None, None, None, lineage)  # the contact is not sent: nor are its details
        return CustomerRef(self.shared.email_for(order.contact_id, email, bool(valid)), (first or "").strip() or None,
                           (last or "").strip() or None, lineage)

    # -- orders ----------------------------------------------------------------------------
    def index_credit_notes(self, result: EntityResult, incremental: bool) -> None:
        """``refund_gap``: credit notes whose order is not a readable staged order. Every note on a
        full run; incrementally, the notes whose answer may have moved (``credit_candidates``)."""
        c = self.conn
        candidates = sorted(self.credit_candidates) if incremental else None
        # Each orphan, and whether its order was placed before a `pull --since` window: not
        # khaosync's, left out (counted).
        sql = """SELECT m.key, json_extract(m.parsed, '$.sorder_id'), json_extract(m.parsed, '$.credit_code'),
                   json_extract(m.parsed, '$.total'), EXISTS (SELECT 1 FROM order_outside_window w
                       WHERE w.key = CAST(json_extract(m.parsed, '$.sorder_id') AS TEXT))
            FROM staged_record m
            WHERE m.entity = 'credit_note' AND m.current = 1 AND m.parsed IS NOT NULL
              AND (json_extract(m.parsed, '$.sorder_id') IS NULL OR NOT EXISTS (
                SELECT 1 FROM staged_record s WHERE s.entity = 'sales_order' AND s.current = 1
                  AND s.parsed IS NOT NULL AND s.key = CAST(json_extract(m.parsed, '$.sorder_id') AS TEXT)))"""
        if candidates is None:
            orphans = c.execute(sql + " ORDER BY m.key").fetchall()
        else:
            orphans = []
            for start in range(0, len(candidates), 500):
                part = candidates[start:start + 500]
                orphans += c.execute(sql + f" AND m.key IN ({','.join('?' * len(part))})", part).fetchall()
            orphans.sort()
        kept = [o[:4] for o in orphans if o[1] is None or not o[4]]
        if candidates is None:
            result.outside_window = len(orphans) - len(kept)
        else:  # all of them, as a full run counts them: from the window's side, through the index
            result.outside_window = c.execute(
                "SELECT count(*) FROM order_outside_window w, staged_record m INDEXED BY staged_credit_order"
                " WHERE m.entity = 'credit_note' AND m.current = 1"
                " AND json_extract(m.parsed, '$.sorder_id') = CAST(w.key AS INTEGER)").fetchone()[0]
        orphans = kept
        findings = [Finding(
            "refund_gap",
            f"credit note {code or key} ({total}) refers to sales order {sorder_id if sorder_id is not None else '(none)'}, "
            "which is not staged or could not be read: the refund cannot reach Ometria",
            (f"credit_note:{key}",) + ((f"sales_order:{sorder_id}",) if sorder_id is not None else ()),
            "credit_note", key) for key, sorder_id, code, total in orphans]
        if findings:
            self.write([], result, findings)

    def credit_notes_of(self, sorder_ids: list[int]) -> dict[int, list[tuple]]:
        """The batch's credit notes by sales order, in credit key order, read once each."""
        notes: dict[int, list[tuple]] = {}
        for sorder_id, parsed, version in staging.credit_notes_of_orders(
                self.conn, sorder_ids, "json_extract(parsed, '$.sorder_id'), parsed, version"):
            note = canonical.credit_note(parsed) or CreditNote.model_validate_json(parsed)
            notes.setdefault(sorder_id, []).append((note, version))
        return notes

    def order_reads(self, order: SalesOrder) -> set[map_state.Read]:
        """Every (entity, key) mapping this order looks up, found or not (its reverse lineage)."""
        reads: set[map_state.Read] = {("sales_order", order.key)}
        if order.contact_id is not None:
            reads.add(("contact", str(order.contact_id)))
        if order.company_id is not None:
            reads.add(("company", str(order.company_id)))  # customer_known: is it a readable staged company?
        for line in order.lines:
            if line.stock_id is not None:
                reads.add(("stock_item", str(line.stock_id)))
                self._item_reads(reads, self.catalogue.get(line.stock_id))
            else:
                reads.add(("stock_item.stock_code", line.stock_code))
                self._item_reads(reads, self.catalogue.by_code(line.stock_code))
        return reads

    @staticmethod
    def _item_reads(reads: set[map_state.Read], ref: ProductRef | None) -> None:
        """The catalogue item an order line resolved to, and its style (an SCS child's parent)."""
        if ref is not None:
            reads.add(("stock_item", str(ref.stock_id)))
            if ref.parent_id is not None:
                reads.add(("stock_item", str(ref.parent_id)))

    def loose_order_reads(self, key: str, parsed: str) -> set[map_state.Read]:
        """``order_reads`` of a staged form the model does not read, from what its JSON names:
        the nightly checks that follow reverse lineage (an item's renamed code counted over the
        order lines that name it) see its lines as a whole scan does."""
        reads: set[map_state.Read] = {("sales_order", key)}
        try:
            doc = json.loads(parsed)
        except ValueError:
            return reads
        if not isinstance(doc, dict):
            return reads
        for field, entity in (("contact_id", "contact"), ("company_id", "company")):
            if isinstance(doc.get(field), (int, str)) and not isinstance(doc.get(field), bool):
                reads.add((entity, str(doc[field])))
        for line in doc.get("lines") if isinstance(doc.get("lines"), list) else []:
            if not isinstance(line, dict):
                continue
            stock_id, code = line.get("stock_id"), line.get("stock_code")
            if isinstance(stock_id, (int, str)) and not isinstance(stock_id, bool):
                reads.add(("stock_item", str(stock_id)))
                self._item_reads(reads, self.catalogue.get(int(stock_id)) if str(stock_id).isdigit() else None)
            elif isinstance(code, str):
                reads.add(("stock_item.stock_code", code))
                self._item_reads(reads, self.catalogue.by_code(code))
        return reads

    def orders(self, result: EntityResult, keys: set[str] | None = None) -> None:
        self.index_credit_notes(result, keys is not None)
        total = staging.count_current(self.conn, "sales_order") if keys is None else len(keys)
        done = 0
        for batch in _parsed_pages(self.conn, "sales_order", keys, self.batch_size):
            done += len(batch)
            stored = {("order", k): s for k, s in outbound.existing(self.conn, "order", [k for k, _, _ in batch]).items()}
            outcomes: list[Outcome] = []
            findings: list[Finding] = []
            reads: dict[str, set[map_state.Read]] = {}
            orders: list[tuple] = []
            for key, version, parsed in batch:
                if parsed is None:
                    result.skipped_raw += 1
                    continue
                order = canonical.sales_order(parsed)  # at C speed; else the model reads it
                if order is None:
                    try:
                        order = SalesOrder.model_validate_json(parsed)
                    except ValidationError as exc:
                        findings.append(_unreadable("sales_order", key, exc))
                        reads[key] = self.loose_order_reads(key, parsed)
                        continue
                orders.append((order, version))
            contacts, known = self.customers_of([o for o, _ in orders])
            notes_of = self.credit_notes_of([o.sorder_id for o, _ in orders])
            for order, version in orders:
                result.staged += 1
                notes = notes_of.get(order.sorder_id, [])
                reads[order.key] = self.order_reads(order) | {("credit_note", n.key) for n, _ in notes}
                outcome = map_sales_order(
                    order, version, self.mapping, catalogue=self.catalogue, customer=self.customer(order, contacts),
                    customer_known=order.company_id in known,
                    credit_notes=notes, already_mapped=("order", order.key) in stored)
                if outcome is None:
                    result.not_sent += 1
                else:
                    outcomes.append(outcome)
            self.write(outcomes, result, findings, stored, reads)
            self._tick("orders", done, total)

    # -- what changed (incremental runs) ----------------------------------------------------
    def shared_decisions(self) -> dict[int, str]:
        """Per contact of a shared email: sent without it, and/or with the group's opt-out."""
        contacts = self.shared.withheld | self.shared.forced_opt_out
        return {c: ("withheld" if c in self.shared.withheld else "") + ("+opt_out" if c in self.shared.forced_opt_out
                                                                          else "") for c in contacts}

    def invalidated(self, changed: list[tuple[str, str]]) -> set[map_state.Read]:
        """Every read a changed staged record answers differently now: its own key, its aliases,
        and the keys any of its versions points at (``DERIVED_KEYS``)."""
        reads: set[map_state.Read] = set()
        for entity, key in changed:
            reads.add((entity, key))
            reads.update((f"{entity}.{kind}", alias) for kind, alias in map_state.aliases(self.conn, entity, key))
            derive = DERIVED_KEYS.get(entity)
            if derive is None:
                continue
            for text in map_state.versions(self.conn, entity, key):
                try:
                    doc = json.loads(text)
                except ValueError:
                    continue
                if isinstance(doc, dict):
                    reads.update(derive(doc))
        return reads

    def dirty(self, name: str, mark: map_state.Mark, upto: int, decisions: dict[int, str]) -> set[str]:
        """The staged keys of CLI entity ``name`` to map again since ``mark``."""
        changed = map_state.staged_since(self.conn, mark.staged_run, upto)
        if name == "products":
            return {k for e, k in changed if e == "stock_item"}
        before = map_state.shared_decisions(self.conn, name)
        moved = {c for c in set(before) | set(decisions) if before.get(c) != decisions.get(c)}
        if name == "contacts":
            keys = {k for e, k in changed if e == "company"}
            if moved:
                keys.update(str(company) for company in contact_index.companies_of(self.conn, moved))
            return keys
        reads = self.invalidated(changed) | {("contact", str(c)) for c in moved}
        keys = map_state.readers(self.conn, reads, "order") | {k for e, k in reads if e == "sales_order"}
        self.credit_candidates = self._credit_candidates(changed, mark.staged_run, keys)
        return keys

    def _credit_candidates(self, changed: list[tuple[str, str]], after: int, orders: set[str]) -> set[str]:
        """The credit notes whose refund gap may have opened or closed since the mark: those
        staged since, those of the ``orders`` this run maps again (every order staged since is
        one), and those of orders a pull --since has listed outside its window since (any other
        note's order is as it was). The notes of the orders mapped again are in the run's scope
        (``resolve``): their gaps are answered, or one still open would be closed unseen."""
        notes = {k for e, k in changed if e == "credit_note"}
        outside = {k for (k,) in self.conn.execute("SELECT key FROM order_outside_window WHERE run_id > ?", (after,))}
        return notes | self._notes_of_orders(int(k) for k in orders | outside if k.isdigit())

    def _notes_of_orders(self, sorder_ids: Iterable[int]) -> set[str]:
        """The keys of the current credit notes of these sales orders (through the index)."""
        return {k for (k,) in staging.credit_notes_of_orders(self.conn, sorder_ids, "key")}

    def scope_of(self, name: str, keys: set[str]) -> set[tuple[str, str]]:
        """The (entity, key) pairs an incremental run of ``name`` looked at again."""
        if name == "products":
            return {("stock_item", k) for k in keys}
        if name == "contacts":
            scope = {("company", k) for k in keys}
            for key in keys:
                for text in map_state.versions(self.conn, "company", key):
                    scope.update(DERIVED_KEYS["company"](json.loads(text)))
            return scope
        return {("sales_order", k) for k in keys}  # and their credit notes: ``credit_candidates``

    def resolve(self, name: str, scope: set[tuple[str, str]] | None) -> None:
        """Close the findings this run no longer saw: all of the entity's (a full run), or only
        those of the records looked at again and of the whole-store checks (incremental)."""
        if scope is None:
            for entity in FINDING_ENTITIES[name]:
                self.store.resolve_unseen_exceptions(self.run_id, STAGE, list(TYPES), entity=entity)
            return
        for type_, entity in WHOLE_STORE_FINDINGS[name]:
            self.store.resolve_unseen_exceptions(self.run_id, STAGE, [type_], entity=entity)
        if name == "orders":
            scope = scope | {("credit_note", k) for k in self.credit_candidates}
        c = self.conn
        c.execute("DROP TABLE IF EXISTS temp.map_scope")
        c.execute("CREATE TEMP TABLE map_scope (entity TEXT, key TEXT, PRIMARY KEY (entity, key)) WITHOUT ROWID")
        c.executemany("INSERT OR IGNORE INTO temp.map_scope VALUES (?, ?)", sorted(scope))
        entities, types = FINDING_ENTITIES[name], list(TYPES)
        c.execute(f"""UPDATE exception SET resolved_at = ? WHERE resolved_at IS NULL AND stage = ? AND last_run < ?
            AND entity IN ({','.join('?' * len(entities))}) AND type IN ({','.join('?' * len(types))})
            AND EXISTS (SELECT 1 FROM temp.map_scope s WHERE s.entity = exception.entity
                        AND s.key = exception.record_key)""", (utcnow(), STAGE, self.run_id, *entities, *types))
        c.execute("DROP TABLE temp.map_scope")


def _current_of(conn, entity: str, keys: set[str]) -> Iterable[staging.StagedRecord]:
    """The current staged versions of ``keys``, in key order, a page at a time."""
    ordered = sorted(keys)
    for start in range(0, len(ordered), 500):
        part = ordered[start:start + 500]
        yield from staging.current_of(conn, entity, part)


def _parsed_pages(conn, entity: str, keys: set[str] | None, size: int) -> Iterable[list[tuple[str, int, str | None]]]:
    """(key, version, parsed text) of the current staged records (of ``keys``, or all), in key
    order, a page at a time: the raw bytes stay on disk, the text is decoded by the caller."""
    if keys is None:
        after = ""
        while True:
            rows = conn.execute("SELECT key, version, parsed FROM staged_record WHERE entity = ? AND current = 1"
                                " AND key > ? ORDER BY key LIMIT ?", (entity, after, size)).fetchall()
            if rows:
                yield rows
            if len(rows) < size:
                return
            after = rows[-1][0]
    ordered = sorted(keys)
    for start in range(0, len(ordered), size):
        part = ordered[start:start + size]
        page: list[tuple[str, int, str | None]] = []
        for sub in range(0, len(part), 500):
            chunk = part[sub:sub + 500]
            page += conn.execute(f"SELECT key, version, parsed FROM staged_record WHERE entity = ? AND current = 1"
                                 f" AND key IN ({','.join('?' * len(chunk))}) ORDER BY key", (entity, *chunk)).fetchall()
        if page:
            yield page


def mapping_hash(mapping: Mapping) -> str:
    """The rules, whatever files they came from: another hash means everything maps again."""
    return hashlib.sha256(mapping.model_dump_json(exclude={"sources"}).encode()).hexdigest()


def encode(outcome: Outcome) -> outbound.NewVersion:
    """The row for an outcome: the exact bytes push will send (``wire.dumps``), their hash, the
    lineage, and its state. Over Ometria's 60 KB limit: held, with a ``record_too_large``
    finding added to the outcome; no record at all: a state-only version (``body`` None)."""
    if outcome.record is None:
        return outbound.NewVersion(outcome.type, outcome.id, None, None, None, "held", outcome.hold)
    body = wire.dumps_valid(outcome.record.to_wire())
    try:
        wire.check_size(outcome.type, outcome.id, body)
    except wire.RecordTooLarge as exc:
        outcome.held_because(f"record_too_large: {exc.size} bytes")
        entity, key = ("contact", outcome.id) if outcome.type == "contact" else outcome.lineage[0][:2]
        outcome.findings.append(Finding("record_too_large", f"{outcome.type} {outcome.id}: {exc}; held",
                                        (f"{entity}:{key}",), entity, key, {"bytes": exc.size}))
    return outbound.NewVersion(outcome.type, outcome.id, wire.content_hash(body), body,
                               orjson.dumps(lineage_json(outcome.lineage)).decode(), "held" if outcome.hold else "ready",
                               outcome.hold)


def _unreadable(entity: str, key: str, exc: ValidationError) -> Finding:
    # A staged parsed form the model no longer reads (an older khaosync wrote it): say so, go on.
    reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
    return Finding("malformed_record", f"{entity} {key}: staged form cannot be read: {reason}",
                   (f"{entity}:{key}",), entity, key)


def map_records(store: StateStore, profile: Profile, *, entities: list[str] | None = None,
                mapping: Mapping | None = None, progress: Progress | None = None, run_id: int | None = None,
                batch_size: int = BATCH, incremental: bool = False, full: set[str] | None = None) -> MapResult:
    """Map the given entities (CLI names: products, contacts, orders; default all) into
    ``outbound_record``, through ``mapping`` (default: the profile's mapping files).

    ``incremental``: map only what changed since each entity's last completed map (all of it
    when there is none, or it used other rules); the store ends as a full map would leave it.
    ``full``: entities mapped whole even so (contacts, after Ometria's consent changed: what a
    contact is sent depends on them, and they are not staged records)."""
    names = entities or list(ENTITIES)
    unknown = [n for n in names if n not in ENTITIES]
    if unknown:
        raise ValueError(f"unknown entity {unknown[0]!r}; choose from {', '.join(ENTITIES)}")
    names = [n for n in ENTITIES if n in names]  # push order, whatever order they were asked in
    mapping = mapping if mapping is not None else load_mapping(profile.mappings)
    own_run = run_id is None
    run_id = run_id if run_id is not None else store.start_run("map", profile.name)
    result = MapResult(run_id=run_id, entities={n: EntityResult(ENTITIES[n]) for n in names},
                       mappings=mapping.sources)
    run = _MapRun(store, mapping, run_id, batch_size, progress)
    rules = mapping_hash(mapping)
    upto = map_state.latest_staged_run(store.conn)
    marks = {n: map_state.get_mark(store.conn, n) for n in names} if incremental else {}
    since = {n: m for n, m in marks.items() if m is not None and m.mapping == rules and n not in (full or ())}
    keys: dict[str, set[str] | None] = {n: None for n in names}  # None: everything
    decisions: dict[int, str] = {}
    try:
        if "products" in since:
            keys["products"] = run.dirty("products", since["products"], upto, {})
        if "products" in names:
            run.products(result.entities["products"], keys["products"])
        if "contacts" in names or "orders" in names:
            run.index_contacts(upto, incremental)
            decisions = run.shared_decisions()
        for name in ("contacts", "orders"):
            if name in since:
                keys[name] = run.dirty(name, since[name], upto, decisions)
        if "contacts" in names:
            run.contacts(result.entities["contacts"], keys["contacts"])
        if "orders" in names:
            run.orders(result.entities["orders"], keys["orders"])
        result.incremental = {n: k is not None for n, k in keys.items()}
        result.looked_at = {ENTITIES[n]: k for n, k in keys.items() if k is not None}
        with store.transaction() as conn:
            for name in names:
                chosen = keys[name]
                run.resolve(name, None if chosen is None else run.scope_of(name, chosen))
                map_state.set_mark(conn, name, map_state.Mark(upto, rules), run_id)
                if name != "products":
                    map_state.set_shared_decisions(conn, name, decisions)
        result.exceptions = run.found
        # Open after this run: what it saw, and (incremental) what it carried forward unseen.
        owned = sorted({e for name in names for e in FINDING_ENTITIES[name]})
        result.fail_findings = store.conn.execute(
            "SELECT count(*) FROM exception WHERE stage = ? AND severity = 'fail' AND resolved_at IS NULL"
            f" AND (last_run = ? OR entity IN ({','.join('?' * len(owned))}))", (STAGE, run_id, *owned)).fetchone()[0]
    except BaseException:
        if own_run:
            store.finish_run(run_id, "failed", result.as_dict())
        raise
    if own_run:
        store.finish_run(run_id, "ok", result.as_dict())
    return result
