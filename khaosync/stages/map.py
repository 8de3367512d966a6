"""Map: staged ERP records -> outbound Ometria records, through the YAML mapping rules.

Entities run in push order, products, then contacts, then orders, each streaming its staged
records (``staging.iter_current``) and writing ``outbound_record`` rows in batched
transactions (``batch_size`` records each, with their exceptions). A record that cannot be
mapped becomes an exception (stage ``map``) and the rest goes on; raw-only staged records
(pull could not parse them, and recorded why) are skipped silently.

Memory stays bounded by the catalogue and the customer base, never by the number of orders:

- stock items are held as small ``ProductRef`` tuples (a catalogue is thousands of items);
- contacts and credit notes go into TEMP tables of this connection (``map_contact``,
  ``map_credit``, on disk, indexed), filled by SQL from the staged JSON, and each order looks
  its customer and its credit notes up by key;
- orders stream through the cursor; each batch prefetches the outbound rows it may replace.

Mapping the same staged records twice gives byte-identical bodies and writes nothing the
second time (``store.outbound.write`` skips unchanged rows). Findings this run no longer
sees are resolved for the entities it mapped.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from pydantic import ValidationError

from khaosync.config import Profile
from khaosync.findings import TYPES, owner_of, severity_of
from khaosync.khaos.models import Company, CreditNote, SalesOrder, StockItem
from khaosync.mapping.contacts import Member, SharedEmails, consent_for, email_key, map_company
from khaosync.mapping.orders import Catalogue, CustomerRef, map_sales_order
from khaosync.mapping.outcome import Finding, Outcome, lineage_json
from khaosync.mapping.products import ProductRef, map_stock_item
from khaosync.mapping.schema import Mapping, load_mapping
from khaosync.ometria import wire
from khaosync.ometria.models import MarketingOptin
from khaosync.store import StateStore, outbound, staging
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
        self.catalogue = Catalogue(lambda code: staging.keys_by_alias(self.conn, "stock_item", "stock_code", code))
        self.shared = SharedEmails()

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
              stored: dict[tuple[str, str], outbound.Stored] | None = None) -> None:
        """One transaction: the batch's outbound rows and every finding it raised."""
        versions = [encode(o) for o in outcomes]
        extra: list[Finding] = list(findings)
        for o in outcomes:
            extra += o.findings
        with self.store.transaction() as conn:
            written = outbound.write(conn, versions, run_id=self.run_id, now=utcnow(), stored=stored)
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
    def products(self, result: EntityResult | None) -> None:
        """Index the catalogue (always: order lines resolve against it); map it if asked."""
        total = staging.count_current(self.conn, "stock_item")
        outcomes: list[Outcome] = []
        findings: list[Finding] = []
        done = 0
        for staged in staging.iter_current(self.conn, "stock_item"):
            done += 1
            if staged.parsed is None:
                if result is not None:
                    result.skipped_raw += 1
                continue
            try:
                item = StockItem.model_validate(staged.parsed)
            except ValidationError as exc:
                findings.append(_unreadable("stock_item", staged.key, exc))
                continue
            self.catalogue.add(ProductRef.of(item, staged.version))
            if result is None:
                continue
            result.staged += 1
            outcomes.append(map_stock_item(item, staged.version, self.mapping))
            if len(outcomes) >= self.batch_size:
                self.write(outcomes, result, findings)
                outcomes, findings = [], []
                self._tick("products", done, total)
        if result is not None:
            self.write(outcomes, result, findings)
            self._tick("products", done, total)

    # -- contacts --------------------------------------------------------------------------
    def index_contacts(self) -> None:
        """Every staged contact into TEMP ``map_contact``, then the shared-email decisions."""
        c = self.conn
        c.create_function("khaosync_email_key", 1, email_key, deterministic=True)
        c.execute("DROP TABLE IF EXISTS temp.map_contact")
        c.execute("""CREATE TEMP TABLE map_contact (
            contact_id INTEGER PRIMARY KEY, company_id INTEGER, company_version INTEGER, email TEXT, email_key TEXT,
            firstname TEXT, lastname TEXT, inactive INTEGER, mailing_status INTEGER, email_subscribe INTEGER)""")
        c.execute("""INSERT OR IGNORE INTO temp.map_contact
            SELECT json_extract(ct.value, '$.contact_id'), CAST(s.key AS INTEGER), s.version,
                   json_extract(ct.value, '$.email'), khaosync_email_key(json_extract(ct.value, '$.email')),
                   json_extract(ct.value, '$.forename'), json_extract(ct.value, '$.surname'),
                   coalesce(json_extract(ct.value, '$.inactive'), 0), json_extract(s.parsed, '$.mailing_status'),
                   json_extract(ct.value, '$.email_subscribe')
            FROM staged_record s, json_each(s.parsed, '$.contacts') ct
            WHERE s.entity = 'company' AND s.current = 1 AND s.parsed IS NOT NULL
            ORDER BY s.key""")
        sent = "1=1" if self.mapping.contacts.inactive == "send" else "inactive = 0"
        rows = c.execute(f"""SELECT email_key, contact_id, company_id, mailing_status, email_subscribe
            FROM temp.map_contact WHERE {sent} AND email_key IN (
                SELECT email_key FROM temp.map_contact WHERE email_key IS NOT NULL AND {sent}
                GROUP BY email_key HAVING count(*) > 1)
            ORDER BY email_key, contact_id""").fetchall()
        if not rows:
            return
        last_orders: dict[tuple[int, int | None], str] = {}
        if self.mapping.contacts.shared_email == "survivor_most_recent_order":
            companies = sorted({r[2] for r in rows})
            marks = ",".join("?" * len(companies))
            for company, contact, latest in c.execute(f"""
                    SELECT json_extract(parsed, '$.company_id'), json_extract(parsed, '$.contact_id'),
                           max(json_extract(parsed, '$.order_date'))
                    FROM staged_record WHERE entity = 'sales_order' AND current = 1 AND parsed IS NOT NULL
                      AND json_extract(parsed, '$.company_id') IN ({marks}) GROUP BY 1, 2""", companies):
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

    def contacts(self, result: EntityResult) -> None:
        total = staging.count_current(self.conn, "company")
        outcomes: list[Outcome] = []
        findings: list[Finding] = list(self.shared.findings)
        done = 0
        for staged in staging.iter_current(self.conn, "company"):
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
            made, company_findings = map_company(company, staged.version, self.mapping, self.shared)
            result.not_sent += len(company.contacts) - len(made)
            outcomes += made
            findings += company_findings
            if len(outcomes) >= self.batch_size:
                self.write(outcomes, result, findings)
                outcomes, findings = [], []
                self._tick("contacts", done, total)
        self.write(outcomes, result, findings)
        self._tick("contacts", done, total)

    def customer(self, order: SalesOrder) -> CustomerRef | None:
        if order.contact_id is None:
            return None
        row = self.conn.execute(
            "SELECT company_id, company_version, email, email_key IS NOT NULL, firstname, lastname, inactive"
            " FROM temp.map_contact WHERE contact_id = ?", (order.contact_id,)).fetchone()
        if row is None:
            return None
        company_id, version, email, valid, first, last, inactive = row
        lineage = ("company", str(company_id), version)
        if inactive and self.mapping.contacts.inactive == "skip":
            return CustomerRef(None, None, None, lineage)  # the contact is not sent: nor are its details
        return CustomerRef(self.shared.email_for(order.contact_id, email, bool(valid)), (first or "").strip() or None,
                           (last or "").strip() or None, lineage)

    # -- orders ----------------------------------------------------------------------------
    def index_credit_notes(self, result: EntityResult) -> None:
        c = self.conn
        c.execute("DROP TABLE IF EXISTS temp.map_credit")
        c.execute("CREATE TEMP TABLE map_credit (sorder_id INTEGER, credit_key TEXT, version INTEGER, parsed TEXT)")
        c.execute("""INSERT INTO temp.map_credit
            SELECT json_extract(parsed, '$.sorder_id'), key, version, parsed FROM staged_record
            WHERE entity = 'credit_note' AND current = 1 AND parsed IS NOT NULL""")
        c.execute("CREATE INDEX temp.map_credit_order ON map_credit(sorder_id, credit_key)")
        orphans = c.execute("""SELECT m.credit_key, m.sorder_id, json_extract(m.parsed, '$.credit_code'),
                   json_extract(m.parsed, '$.total') FROM temp.map_credit m
            WHERE m.sorder_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM staged_record s WHERE s.entity = 'sales_order' AND s.current = 1
                  AND s.parsed IS NOT NULL AND s.key = CAST(m.sorder_id AS TEXT))
            ORDER BY m.credit_key""").fetchall()
        findings = [Finding(
            "refund_gap",
            f"credit note {code or key} ({total}) refers to sales order {sorder_id if sorder_id is not None else '(none)'}, "
            "which is not staged or could not be read: the refund cannot reach Ometria",
            (f"credit_note:{key}",) + ((f"sales_order:{sorder_id}",) if sorder_id is not None else ()),
            "credit_note", key) for key, sorder_id, code, total in orphans]
        if findings:
            self.write([], result, findings)

    def credit_notes(self, sorder_id: int) -> list[tuple[CreditNote, int]]:
        return [(CreditNote.model_validate_json(parsed), version) for parsed, version in self.conn.execute(
            "SELECT parsed, version FROM temp.map_credit WHERE sorder_id = ? ORDER BY credit_key", (sorder_id,))]

    def orders(self, result: EntityResult) -> None:
        self.index_credit_notes(result)
        total = staging.count_current(self.conn, "sales_order")
        done = 0
        for batch in _batches(staging.iter_current(self.conn, "sales_order"), self.batch_size):
            done += len(batch)
            stored = {("order", k): s for k, s in outbound.existing(self.conn, "order", [r.key for r in batch]).items()}
            outcomes: list[Outcome] = []
            findings: list[Finding] = []
            for staged in batch:
                if staged.parsed is None:
                    result.skipped_raw += 1
                    continue
                try:
                    order = SalesOrder.model_validate(staged.parsed)
                except ValidationError as exc:
                    findings.append(_unreadable("sales_order", staged.key, exc))
                    continue
                result.staged += 1
                outcome = map_sales_order(
                    order, staged.version, self.mapping, catalogue=self.catalogue, customer=self.customer(order),
                    credit_notes=self.credit_notes(order.sorder_id), already_mapped=("order", order.key) in stored)
                if outcome is None:
                    result.not_sent += 1
                else:
                    outcomes.append(outcome)
            self.write(outcomes, result, findings, stored)
            self._tick("orders", done, total)

    def close(self) -> None:
        self.conn.execute("DROP TABLE IF EXISTS temp.map_contact")
        self.conn.execute("DROP TABLE IF EXISTS temp.map_credit")


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
                               json.dumps(lineage_json(outcome.lineage)), "held" if outcome.hold else "ready",
                               outcome.hold)


def _unreadable(entity: str, key: str, exc: ValidationError) -> Finding:
    # A staged parsed form the model no longer reads (an older khaosync wrote it): say so, go on.
    reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
    return Finding("malformed_record", f"{entity} {key}: staged form cannot be read: {reason}",
                   (f"{entity}:{key}",), entity, key)


def map_records(store: StateStore, profile: Profile, *, entities: list[str] | None = None,
                mapping: Mapping | None = None, progress: Progress | None = None, run_id: int | None = None,
                batch_size: int = BATCH) -> MapResult:
    """Map the given entities (CLI names: products, contacts, orders; default all) into
    ``outbound_record``, through ``mapping`` (default: the profile's mapping files)."""
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
    try:
        if "products" in names or "orders" in names:
            run.products(result.entities.get("products"))
        if "contacts" in names or "orders" in names:
            run.index_contacts()
        if "contacts" in names:
            run.contacts(result.entities["contacts"])
        if "orders" in names:
            run.orders(result.entities["orders"])
        with store.transaction():
            for name in names:
                for entity in FINDING_ENTITIES[name]:
                    store.resolve_unseen_exceptions(run_id, STAGE, list(TYPES), entity=entity)
        result.exceptions = run.found
        result.fail_findings = store.conn.execute(
            "SELECT count(*) FROM exception WHERE stage = ? AND severity = 'fail' AND resolved_at IS NULL"
            " AND last_run = ?", (STAGE, run_id)).fetchone()[0]
    except BaseException:
        run.close()
        if own_run:
            store.finish_run(run_id, "failed", result.as_dict())
        raise
    run.close()
    if own_run:
        store.finish_run(run_id, "ok", result.as_dict())
    return result
