"""Reconcile: prove, month by month, that the ERP, the ledger and Ometria agree (docs/reconcile.md).

Three sides, each read on its own terms:

- **ERP**: the staged sales orders placed in the month (Europe/London local time) and the
  credit notes raised against them. These figures are the ERP's truth and equal the sandbox
  manifest's ``monthly_totals`` exactly.
- **ledger**: the order bodies Ometria accepted from us (``ledger``), whose ``timestamp``
  falls in the month.
- **Ometria** (``live_client``): every order Ometria holds, read back, whose ``timestamp``
  falls in the month, plus anything that claims to be one of the month's ERP orders.

Metrics are compared per currency and Ometria store, and every difference is explained at
record level: an order missing, one Ometria holds that the ERP never had, a duplicate left by
an earlier integration, a status, total, refund or customer link that disagrees. An order not
yet past the mapping's trigger (not yet despatched, by default) is *expected* to be missing:
it is listed as ``not_yet_due`` and the part of a difference it explains is set aside before
the thresholds are applied.

Read-only: reconcile never writes to the state store nor to Ometria.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Iterable, Iterator, Protocol
from zoneinfo import ZoneInfo

from khaosync.config import Profile
from khaosync.findings import owner_of
from khaosync.khaos import convert
from khaosync.khaos import parse as kparse
from khaosync.khaos.models import CreditNote, SalesOrder
from khaosync.mapping.orders import despatch_state as mapped_despatch_state, reached_trigger
from khaosync.mapping.schema import Mapping, load_mapping
from khaosync.ometria import wire
from khaosync.currency import money_text
from khaosync.stages.reconcile_rules import METRICS, ReconcileRules, Status
from khaosync.store import StateStore, staging
from khaosync.store.db import utcnow

LONDON = ZoneInfo("Europe/London")  # KC's clock, and the month finance closes
ZERO = Decimal(0)
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_RAW_ORDER_DATE = re.compile(rb"<ORDER_DATE>\s*([0-9T:\- ]{10,19})\s*</ORDER_DATE>")
_STATUS_RANK = {"ok": 0, "info": 0, "warn": 1, "fail": 2}

# Which exception type (khaosync/findings.py) each record-level difference is an instance of:
# its owner is that type's owner (or the mapping file's ``owners``), unless the rules say otherwise.
ORDER_ISSUE_TYPES: dict[str, str] = {
    "missing_in_ometria": "push_verification_mismatch",
    "not_in_erp": "ometria_only_order",
    "duplicate": "split_consignment_duplicate",
    "duplicate_voided": "split_consignment_duplicate",
    "status_mismatch": "push_verification_mismatch",
    "total_mismatch": "total_mismatch",
    "refund_missing": "refund_gap",
    "refund_mismatch": "refund_gap",
    "customer_mismatch": "identifier_conflict",
    "currency_mismatch": "push_verification_mismatch",
    "timestamp_mismatch": "push_verification_mismatch",
    "units_mismatch": "push_verification_mismatch",
    "store_mismatch": "push_verification_mismatch",
    "not_yet_due": "push_verification_mismatch",
    "cancelled_not_sent": "push_verification_mismatch",
    "erp_malformed": "malformed_record",
}
CONTACT_ISSUE_TYPES: dict[str, str] = {
    "missing_in_ometria": "push_verification_mismatch",
    "not_in_erp": "missing_purchase_history",
    "email_mismatch": "identifier_conflict",
    "email_withheld": "identifier_conflict",
    "name_mismatch": "push_verification_mismatch",
    "customer_mismatch": "identifier_conflict",
    "consent_gap": "consent_gap",
    "unsubscribed_in_ometria": "consent_gap",
    "store_mismatch": "push_verification_mismatch",
    "erp_malformed": "malformed_record",
}


class ReadBack(Protocol):
    """What reconcile reads from Ometria (``khaosync.ometria.client.OmetriaClient``)."""

    def iter_orders(self) -> Iterator[dict]: ...

    def iter_contacts(self, collection: str) -> Iterator[dict]: ...

    def unsubscribes(self, since: datetime, before: datetime | None = None) -> list[dict]: ...


# -- months and days in London time -------------------------------------------------------------


def check_month(month: str) -> str:
    if not _MONTH.match(month or ""):
        raise ValueError(f"month {month!r}: expected YYYY-MM, e.g. 2026-10")
    return month


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """The month's first and the next month's first instant, London midnight, in UTC."""
    year, mon = (int(p) for p in check_month(month).split("-"))
    start = datetime(year, mon, 1, tzinfo=LONDON)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=LONDON)
    return start.astimezone(UTC), end.astimezone(UTC)


def local_month(instant: datetime) -> str:
    return instant.astimezone(LONDON).strftime("%Y-%m")


def local_day(instant: datetime) -> date:
    return instant.astimezone(LONDON).date()


def parse_timestamp(value: Any) -> datetime | None:
    """An Ometria ``timestamp`` (ISO 8601 with a zone) as an aware datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def erp_months(store: StateStore) -> list[str]:
    """Every London month in which a staged sales order was placed, oldest first."""
    months: set[str] = set()
    rows = store.conn.execute(
        "SELECT json_extract(parsed, '$.order_date') FROM staged_record "
        "WHERE entity = 'sales_order' AND current = 1 AND parsed IS NOT NULL")
    for (text,) in rows:
        when = parse_timestamp(text)
        if when is not None:
            months.add(local_month(when))
    return sorted(months)


# -- money helpers --------------------------------------------------------------------------------


def _dec(value: Any) -> Decimal:
    """A JSON amount read with ``parse_float=Decimal`` (or an int, or text) as a Decimal; 0 if absent."""
    if value is None or isinstance(value, bool):
        return ZERO
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, str)):
        try:
            return Decimal(value)
        except ArithmeticError:
            return ZERO
    if isinstance(value, float):  # a reader that lost exactness: take its shortest text
        return Decimal(repr(value))
    return ZERO


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# -- one order, on any side, reduced to what the metrics count -----------------------------------


@dataclass(frozen=True)
class Figures:
    """What one order adds to a month's metrics. ``void`` orders count in ``orders`` only."""

    key: str
    currency: str
    store: str | None
    day: date
    void: bool            # cancelled (or voided): no revenue, no units, no customer
    valid: bool           # counts in valid_orders (and in Ometria's revenue)
    gross: Decimal
    refunds: Decimal
    units: Decimal
    customer: str | None

    @property
    def net(self) -> Decimal:
        return self.gross - self.refunds


@dataclass
class Tally:
    """One side's metrics for one (currency, store)."""

    orders: int = 0
    valid_orders: int = 0
    gross_revenue: Decimal = ZERO
    refunds: Decimal = ZERO
    units: Decimal = ZERO
    customer_ids: set[str] = field(default_factory=set)

    def add(self, f: Figures) -> None:
        self.orders += 1
        if f.valid:
            self.valid_orders += 1
        if f.void:
            return
        self.gross_revenue += f.gross
        self.refunds += f.refunds
        self.units += f.units
        if f.customer:
            self.customer_ids.add(f.customer)

    def value(self, metric: str) -> Decimal:
        if metric == "net_revenue":
            return self.gross_revenue - self.refunds
        if metric == "customers":
            return Decimal(len(self.customer_ids))
        return Decimal(getattr(self, metric))


Group = tuple[str, str | None]  # (currency, store)


def _tally(figures: Iterable[Figures]) -> dict[Group, Tally]:
    out: dict[Group, Tally] = defaultdict(Tally)
    for f in figures:
        out[(f.currency, f.store)].add(f)
    return out


# -- the ERP side ----------------------------------------------------------------------------------


@dataclass
class ErpOrder:
    """A staged sales order of the month, with its credit notes summed."""

    key: str
    order: SalesOrder | None          # None: staged raw-only (it could not be parsed)
    month: str | None                 # None: no readable order date
    problems: list[str] = field(default_factory=list)
    refunds: Decimal = ZERO
    credit_ids: list[str] = field(default_factory=list)

    @property
    def malformed(self) -> bool:
        return self.order is None or bool(self.problems)


class _Mapping:
    """The site's mapping (issue 4's ``khaosync.mapping``), for what reconcile must read the
    way ``map`` does: the trigger, the despatch state, the status words, the store, the
    customer id and the owners."""

    def __init__(self, profile: Profile | None, mapping: Mapping | None = None):
        if mapping is None:
            mapping = load_mapping(profile.mappings if profile is not None else None)
        self.mapping = mapping
        self.owners: dict[str, str] = dict(mapping.owners)
        self.trigger: str = mapping.orders.trigger
        self.collection: str = mapping.identity.collection
        words = mapping.orders.statuses
        self.status_word = {name: getattr(words, name) for name in (
            "pending", "partially_despatched", "despatched", "complete", "cancelled", "refunded", "partial_refund")}

    def store_of(self, order: SalesOrder) -> str | None:
        return self.mapping.orders.store.pick(order.site)

    def customer_of(self, company_id: int | None, contact_id: int | None) -> str | None:
        """The order's ``customer.id`` / the contact's ``customer_id`` (``identity.customer_id``)."""
        value = contact_id if self.mapping.identity.customer_id == "contact_id" else company_id
        return None if value is None else str(value)

    def owner(self, issue: str, rules: ReconcileRules, contacts: bool = False) -> str:
        rule = rules.contact_issue(issue) if contacts else rules.order_issue(issue)
        if rule.owner:
            return rule.owner
        types = CONTACT_ISSUE_TYPES if contacts else ORDER_ISSUE_TYPES
        return owner_of(types.get(issue, "push_verification_mismatch"), self.owners)


def despatch_state(order: SalesOrder, m: _Mapping) -> str:
    """pending | partially_despatched | despatched | complete | cancelled: the map stage's own
    reading of the invoices, so both agree on what Ometria should show."""
    return mapped_despatch_state(order, m.mapping).state


def is_due(order: SalesOrder, m: _Mapping) -> bool:
    """Has the order passed the mapping's trigger, so Ometria should hold it?"""
    return reached_trigger(mapped_despatch_state(order, m.mapping), m.trigger)


def fully_refunded(order: SalesOrder, refunds: Decimal) -> bool:
    """The ERP has credited the whole order value (Ometria: ``is_valid: false``, ``refunded``)."""
    return order.order_amount is not None and order.order_amount > 0 and refunds >= order.order_amount


def erp_figures(e: ErpOrder, m: _Mapping) -> Figures:
    """The month's definitions, exactly the manifest's ``monthly_totals`` (docs/reconcile.md)."""
    order = e.order
    assert order is not None and order.order_date is not None
    void = order.cancelled
    return Figures(
        key=e.key, currency=order.currency, store=m.store_of(order), day=local_day(order.order_date),
        void=void, valid=not void and not fully_refunded(order, e.refunds),
        gross=ZERO if void else (order.order_amount or ZERO), refunds=ZERO if void else e.refunds,
        units=ZERO if void else sum((line.qty for line in order.lines), ZERO),
        customer=None if void else m.customer_of(order.company_id, order.contact_id),
    )


def expected_status(order: SalesOrder, refunds: Decimal, m: _Mapping) -> tuple[str, bool]:
    """The Ometria ``status`` word and ``is_valid`` the ERP's state calls for (the mapping's
    rules: cancelled, then refunds, then the despatch state)."""
    words = m.status_word
    state = despatch_state(order, m)
    if state == "cancelled":
        return words["cancelled"], False
    if fully_refunded(order, refunds):
        return words["refunded"], False
    if refunds > 0:
        return words["partial_refund"], True
    return words.get(state, state), True


def _raw_order_month(raw: bytes) -> str | None:
    found = _RAW_ORDER_DATE.search(raw)
    if not found:
        return None
    try:
        when = convert.kc_datetime_to_utc(found.group(1).decode("ascii").replace(" ", "T"))
    except (ValueError, UnicodeDecodeError):
        return None
    return local_month(when) if when is not None else None


def load_erp_orders(store: StateStore, month: str, m: _Mapping) -> tuple[list[ErpOrder], list[str]]:
    """The month's staged sales orders (malformed ones flagged), and notes on what was not checked."""
    start, end = month_bounds(month)
    conn = store.conn
    # SQLite filters on the JSON's order date (a day's margin around the UTC bounds), so only
    # about one month's rows reach Python, which then applies the exact London month.
    lo = (start - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    hi = (end + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    rows = conn.execute(
        "SELECT key, parsed, raw, raw_encoding FROM staged_record WHERE entity = 'sales_order' AND current = 1 AND ("
        " parsed IS NULL OR json_extract(parsed, '$.order_date') IS NULL"
        " OR json_extract(parsed, '$.order_date') BETWEEN ? AND ?)", (lo, hi))
    notes: list[str] = []
    stock = {k for (k,) in conn.execute(
        "SELECT key FROM staged_record WHERE entity = 'stock_item' AND current = 1")}
    if not stock:
        notes.append("no stock items are staged: order lines were not checked for unknown products")
    out: list[ErpOrder] = []
    for key, parsed, raw, raw_encoding in rows:
        if parsed is None:
            found = _raw_order_month(staging.raw_bytes(raw, raw_encoding))
            if found in (None, month):
                out.append(ErpOrder(key, None, found, ["staged raw-only: the ERP's record could not be read"]))
            continue
        order = SalesOrder.model_validate_json(parsed)
        if order.order_date is not None and local_month(order.order_date) != month:
            continue
        problems = [p.reason for p in kparse.sales_order_problems(order)]
        if stock:
            problems += _unknown_products(conn, order, stock)
        out.append(ErpOrder(key, order, local_month(order.order_date) if order.order_date else None, problems))
    _attach_credit_notes(store, out)
    out.sort(key=lambda e: _key_order(e.key))
    return out, notes


def _unknown_products(conn, order: SalesOrder, stock: set[str]) -> list[str]:
    found = []
    for n, line in enumerate(order.lines, 1):
        if line.stock_id is not None and str(line.stock_id) in stock:
            continue
        if line.stock_code and conn.execute(
                "SELECT 1 FROM record_alias WHERE entity = 'stock_item' AND alias_kind = 'stock_code' AND alias = ?",
                (line.stock_code,)).fetchone():
            continue
        found.append(f"lines[{n}]: stock item {line.stock_id or line.stock_code or '?'} is not in the ERP's stock")
    return found


def _attach_credit_notes(store: StateStore, orders: list[ErpOrder]) -> None:
    by_id = {int(e.key): e for e in orders if e.key.isdigit()}
    if not by_id:
        return
    rows = store.conn.execute(
        "SELECT parsed FROM staged_record WHERE entity = 'credit_note' AND current = 1 AND parsed IS NOT NULL"
        " AND json_extract(parsed, '$.sorder_id') IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(by_id)),))
    for (parsed,) in rows:
        note = CreditNote.model_validate_json(parsed)
        target = by_id.get(note.sorder_id) if note.sorder_id is not None else None
        if target is not None:
            target.refunds += note.total
            target.credit_ids.append(note.key)


def _key_order(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.isdigit() else (1, key)


# -- the Ometria side (ledger bodies and read-back alike) --------------------------------------------


def ometria_revenue(doc: dict) -> Decimal:
    """Revenue as Ometria reports it: valid orders only, grand total less every line's
    ``refunded``. (The map stage spreads a delivery-only refund over the lines' ``refunded``;
    ``properties.delivery_refund_in_lines`` only says how much of it that is: docs/mappings.md.)"""
    if doc.get("is_valid") is False:
        return ZERO
    lines = doc.get("lineitems") or []
    refunded = sum((_dec(line.get("refunded")) for line in lines if isinstance(line, dict)), ZERO)
    return _dec(doc.get("grand_total")) - refunded


def ometria_figures(doc: dict, m: _Mapping) -> Figures | None:
    """One Ometria order (as accepted, or as read back), or None without a readable timestamp."""
    when = parse_timestamp(doc.get("timestamp"))
    if when is None:
        return None
    valid = doc.get("is_valid") is not False
    # An invalid order that is not a full refund (cancelled, or voided) carries no revenue at
    # all; a full refund is revenue that was refunded, as on the ERP side.
    void = not valid and doc.get("status") != m.status_word["refunded"]
    gross = _dec(doc.get("grand_total"))
    lines = [line for line in doc.get("lineitems") or [] if isinstance(line, dict)]
    customer = doc.get("customer") if isinstance(doc.get("customer"), dict) else {}
    who = customer.get("id") or (f"email:{customer['email'].strip().lower()}" if customer.get("email") else None)
    return Figures(
        key=str(doc.get("id")), currency=str(doc.get("currency") or ""), store=doc.get("store"),
        day=local_day(when), void=void, valid=valid,
        gross=ZERO if void else gross, refunds=ZERO if void else gross - ometria_revenue(doc),
        units=ZERO if void else sum((_dec(line.get("quantity")) for line in lines), ZERO),
        customer=None if void else who,
    )


def ledger_orders(store: StateStore, month: str, keys: set[str]) -> dict[str, dict]:
    """Ledger order bodies placed in the month, plus those of the month's ERP orders wherever
    their timestamp says they belong."""
    start, end = month_bounds(month)
    lo = (start - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    hi = (end + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    rows = store.conn.execute(
        "SELECT id, body FROM ledger WHERE type = 'order' AND ("
        " json_extract(CAST(body AS TEXT), '$.timestamp') BETWEEN ? AND ?"
        " OR id IN (SELECT value FROM json_each(?)))", (lo, hi, json.dumps(sorted(keys))))
    out = {}
    for id_, body in rows:
        doc = wire.loads(bytes(body))
        when = parse_timestamp(doc.get("timestamp"))
        if id_ in keys or (when is not None and local_month(when) == month):
            out[id_] = doc
    return out


@dataclass
class _Foreign:
    """An Ometria order that is not one of the ERP's, kept small until we know whether it matters."""

    id: str
    web_id: str | None
    valid: bool
    month: str | None
    doc: dict | None  # kept only for the month's own orders


def read_ometria_orders(client: ReadBack, month: str, erp: list[ErpOrder]) -> tuple[dict[str, dict], list[_Foreign]]:
    """One pass over Ometria's orders (no date filter exists), keeping only what this month
    needs, so memory follows the month, not Ometria: the month's ERP orders by id, every order
    placed in the month, and orders placed in another month that claim to be one of this
    month's orders (their web order number, or an earlier integration's ``INV-<invoice code>``)."""
    keys = {e.key for e in erp}
    refs = {e.order.associated_ref for e in erp if e.order is not None and e.order.associated_ref}
    invoices = {inv.invoice_code for e in erp if e.order is not None for inv in e.order.invoices if inv.invoice_code}
    ours: dict[str, dict] = {}
    foreign: list[_Foreign] = []
    for doc in client.iter_orders():
        id_ = str(doc.get("id"))
        when = parse_timestamp(doc.get("timestamp"))
        in_month = when is not None and local_month(when) == month
        if id_ in keys:
            ours[id_] = doc
        elif in_month or doc.get("web_id") in refs or (id_.startswith("INV-") and id_[4:] in invoices):
            foreign.append(_Foreign(id_, doc.get("web_id"), doc.get("is_valid") is not False,
                                    local_month(when) if when else None, doc if in_month else None))
    return ours, foreign


# -- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRow:
    name: str
    currency: str
    store: str | None
    erp: Decimal
    ledger: Decimal
    ometria: Decimal | None
    difference: Decimal       # the far side (Ometria with --live, else the ledger) minus the ERP
    not_yet_due: Decimal      # the part of ``difference`` orders not yet due explain
    unexplained: Decimal
    status: Status

    @property
    def is_count(self) -> bool:
        return self.name in ("orders", "valid_orders", "customers")

    @property
    def is_money(self) -> bool:
        return self.name in ("gross_revenue", "refunds", "net_revenue")

    def as_dict(self) -> dict:
        def out(v: Decimal | None) -> int | str | None:
            if v is None:
                return None
            if self.is_count:
                return int(v)
            return money_text(v, self.currency) if self.is_money else str(v)
        return {"name": self.name, "currency": self.currency, "store": self.store, "erp": out(self.erp),
                "ledger": out(self.ledger), "ometria": out(self.ometria), "difference": out(self.difference),
                "not_yet_due": out(self.not_yet_due), "unexplained": out(self.unexplained), "status": self.status}


@dataclass
class RecordIssue:
    """One record behind a difference: what is wrong, how bad, and who fixes it."""

    key: str                   # the Ometria id: KC's SOrderID for our orders (contacts: CONTACT_ID)
    issue: str
    severity: str
    owner: str
    side: str                  # where it was seen: erp, ledger, ometria, or ledger+ometria
    erp: str | None
    ometria: str | None
    detail: str
    currency: str | None = None
    store: str | None = None
    erp_key: str | None = None  # the ERP order a duplicate belongs to
    exception_type: str | None = None  # the khaosync/findings.py type this is an instance of

    def as_dict(self) -> dict:
        return {"key": self.key, "issue": self.issue, "severity": self.severity, "owner": self.owner,
                "side": self.side, "erp": self.erp, "ometria": self.ometria, "detail": self.detail,
                "currency": self.currency, "store": self.store, "erp_key": self.erp_key,
                "exception_type": self.exception_type}


@dataclass(frozen=True)
class DayRevenue:
    day: date
    currency: str
    erp: Decimal
    ledger: Decimal
    ometria: Decimal | None

    def as_dict(self) -> dict:
        return {"date": self.day.isoformat(), "currency": self.currency,
                "erp": money_text(self.erp, self.currency), "ledger": money_text(self.ledger, self.currency),
                "ometria": None if self.ometria is None else money_text(self.ometria, self.currency)}


def worst(statuses: Iterable[str]) -> Status:
    rank = max((_STATUS_RANK.get(s, 0) for s in statuses), default=0)
    return ("ok", "warn", "fail")[rank]  # type: ignore[return-value]


@dataclass
class Reconciliation:
    month: str
    live: bool
    rules: str
    generated_at: str
    metrics: list[MetricRow]
    records: list[RecordIssue]
    daily: list[DayRevenue]
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> Status:
        return worst([m.status for m in self.metrics] + [r.severity for r in self.records])

    def as_dict(self) -> dict:
        return {"kind": "orders", "month": self.month, "status": self.status, "live": self.live,
                "rules": self.rules, "generated_at": self.generated_at, "counts": self.counts,
                "metrics": [m.as_dict() for m in self.metrics], "records": [r.as_dict() for r in self.records],
                "daily": [d.as_dict() for d in self.daily], "notes": self.notes}


# -- comparing one ERP order with one Ometria order ------------------------------------------------------


def _describe(doc: dict) -> str:
    valid = "valid" if doc.get("is_valid") is not False else "invalid"
    return f"{doc.get('currency')} {_text(doc.get('grand_total'))} {doc.get('status') or '-'} ({valid})"


def _erp_summary(e: ErpOrder) -> str:
    o = e.order
    if o is None:
        return "unreadable"
    state = "cancelled" if o.cancelled else (o.status or "-")
    return f"{o.currency} {o.order_amount} {state}"


def compare_order(e: ErpOrder, doc: dict, m: _Mapping) -> list[tuple[str, str | None, str | None, str]]:
    """(issue, ERP value, Ometria value, why) for every way ``doc`` disagrees with the ERP order."""
    order = e.order
    assert order is not None
    found: list[tuple[str, str | None, str | None, str]] = []
    if doc.get("currency") != order.currency:
        found.append(("currency_mismatch", order.currency, _text(doc.get("currency")),
                      "the order is in another currency in Ometria"))
    grand_total = _dec(doc.get("grand_total"))
    amount = order.order_amount or ZERO
    if grand_total != amount:
        found.append(("total_mismatch", str(amount), _text(doc.get("grand_total")),
                      f"grand_total differs from the ERP's ORDER_AMOUNT by {grand_total - amount}"))
    refund_issue = False
    void_there = doc.get("is_valid") is False and doc.get("status") != m.status_word["refunded"]
    if not order.cancelled and not void_there:
        # What Ometria takes off the order's revenue: lines' refunds (and a delivery refund),
        # or the whole order once it is invalid and refunded.
        theirs = grand_total - ometria_revenue(doc)
        if theirs < e.refunds:
            refund_issue = True
            found.append(("refund_missing", str(e.refunds), str(theirs),
                          f"credit notes {', '.join(e.credit_ids) or '-'} total {e.refunds}; Ometria shows "
                          f"{theirs} refunded"))
        elif theirs > e.refunds:
            refund_issue = True
            found.append(("refund_mismatch", str(e.refunds), str(theirs),
                          f"Ometria shows {theirs} refunded; the ERP's credit notes total {e.refunds}"))
    want, want_valid = expected_status(order, e.refunds, m)
    got, got_valid = doc.get("status"), doc.get("is_valid") is not False
    # A refund not applied also leaves the status behind: the refund record says it all.
    refund_words = {m.status_word[w] for w in ("refunded", "partial_refund", "pending", "partially_despatched",
                                                 "despatched", "complete")}
    explained = refund_issue and {want, got} <= refund_words
    if (want != got or want_valid != got_valid) and not explained:
        found.append(("status_mismatch", f"{want} ({'valid' if want_valid else 'invalid'})",
                      f"{got} ({'valid' if got_valid else 'invalid'})",
                      f"the ERP's state calls for {want!r}; Ometria holds {got!r}"
                      f"{'' if got_valid else ', is_valid false'}"))
    customer = doc.get("customer") if isinstance(doc.get("customer"), dict) else {}
    want_customer = m.customer_of(order.company_id, order.contact_id)
    if want_customer is not None and str(customer.get("id")) != want_customer:
        found.append(("customer_mismatch", want_customer, _text(customer.get("id")),
                      f"the order is linked to customer {customer.get('id')!r}, not {want_customer!r}"))
    units = sum((line.qty for line in order.lines), ZERO)
    theirs_units = sum((_dec(line.get("quantity")) for line in doc.get("lineitems") or [] if isinstance(line, dict)),
                       ZERO)
    if units != theirs_units:
        found.append(("units_mismatch", str(units), str(theirs_units), "the order's line quantities differ"))
    when = parse_timestamp(doc.get("timestamp"))
    if order.order_date is not None and when != order.order_date:
        moved = when is not None and local_month(when) != local_month(order.order_date)
        found.append(("timestamp_mismatch", order.order_date.isoformat().replace("+00:00", "Z"),
                      _text(doc.get("timestamp")),
                      "placed in another month in Ometria: its revenue is reported there" if moved
                      else "the order's placed time differs"))
    store = m.store_of(order)
    if (doc.get("store") or None) != store:
        found.append(("store_mismatch", store, _text(doc.get("store")), "the order sits in another Ometria store"))
    return found


# -- linking an Ometria order the ERP never had to the ERP order it duplicates ----------------------------


class _Linker:
    """Finds the ERP order behind an Ometria order keyed on something else: an earlier
    integration's ``INV-<invoice code>`` (one per despatch), or the web order number."""

    def __init__(self, store: StateStore):
        self.conn = store.conn
        self._by_invoice: dict[str, str] | None = None

    def prepare(self, foreign: list[_Foreign]) -> None:
        codes = sorted({f.id[4:] for f in foreign if f.id.startswith("INV-")})
        self._by_invoice = {}
        if not codes:
            return
        rows = self.conn.execute(
            "SELECT s.key, json_extract(i.value, '$.invoice_code') FROM staged_record s,"
            " json_each(s.parsed, '$.invoices') i WHERE s.entity = 'sales_order' AND s.current = 1"
            " AND s.parsed IS NOT NULL AND json_extract(i.value, '$.invoice_code') IN (SELECT value FROM json_each(?))",
            (json.dumps(codes),))
        for key, code in rows:
            self._by_invoice.setdefault(code, key)

    def erp_key(self, f: _Foreign) -> str | None:
        if f.web_id:
            row = self.conn.execute(
                "SELECT key FROM record_alias WHERE entity = 'sales_order' AND alias_kind = 'associated_ref'"
                " AND alias = ? ORDER BY key LIMIT 1", (f.web_id,)).fetchone()
            if row and row[0] != f.id:
                return row[0]
        if f.id.startswith("INV-") and self._by_invoice:
            return self._by_invoice.get(f.id[4:])
        return None


# -- the stage --------------------------------------------------------------------------------------------


class _Records:
    """Record issues, one per (key, issue): seen on both far sides, it is one record."""

    def __init__(self, rules: ReconcileRules, m: _Mapping):
        self.rules, self.m = rules, m
        self.by_key: dict[tuple[str, str], RecordIssue] = {}

    def add(self, key: str, issue: str, side: str, erp: str | None, ometria: str | None, detail: str,
            currency: str | None = None, store: str | None = None, erp_key: str | None = None) -> None:
        found = self.by_key.get((key, issue))
        if found is not None:
            if side not in found.side.split("+"):
                found.side = "+".join(s for s in ("erp", "ledger", "ometria") if s in (*found.side.split("+"), side))
            if side == "ometria":  # what Ometria holds now is the value that matters
                found.ometria, found.detail = ometria, detail
            return
        self.by_key[(key, issue)] = RecordIssue(
            key=key, issue=issue, severity=self.rules.order_issue(issue).severity, owner=self.m.owner(issue, self.rules),
            side=side, erp=erp, ometria=ometria, detail=detail, currency=currency, store=store, erp_key=erp_key,
            exception_type=ORDER_ISSUE_TYPES.get(issue))

    def sorted(self) -> list[RecordIssue]:
        rank = {"fail": 0, "warn": 1, "info": 2}
        return sorted(self.by_key.values(), key=lambda r: (rank.get(r.severity, 3), r.issue, _key_order(r.key)))


def reconcile_month(store: StateStore, profile: Profile | None, month: str, *, live_client: ReadBack | None = None,
                    rules: ReconcileRules | None = None, mapping: Mapping | None = None) -> Reconciliation:
    """Reconcile one London month: ERP vs ledger (vs Ometria with ``live_client``)."""
    check_month(month)
    rules = rules or ReconcileRules()
    m = _Mapping(profile, mapping)
    erp, notes = load_erp_orders(store, month, m)
    records = _Records(rules, m)
    good = [e for e in erp if not e.malformed and e.month == month]
    keys = {e.key for e in erp}
    ledger = ledger_orders(store, month, keys)
    live = live_client is not None
    ometria: dict[str, dict] = {}
    foreign: list[_Foreign] = []
    if live_client is not None:
        ometria, foreign = read_ometria_orders(live_client, month, erp)
    failed = _failed_orders(store, keys)

    # ERP figures, and the subsets each far side is expected to hold (due, or already sent).
    erp_figs: list[Figures] = []
    expected: dict[str, list[Figures]] = {"ledger": [], "ometria": []}
    for e in good:
        figures = erp_figures(e, m)
        erp_figs.append(figures)
        _check_erp_order(e, figures, ledger.get(e.key), ometria.get(e.key) if live else None, live, failed, m,
                         records, expected)
    for e in erp:
        if e.malformed:
            _malformed(e, month, ledger, ometria, records)

    # Far-side orders the ERP does not have for this month.
    ledger_figs = _side_figures("ledger", ledger, month, keys, store, m, records)
    om_figs: list[Figures] = []
    if live:
        om_figs = _side_figures("ometria", ometria, month, keys, store, m, records)
        om_figs += _foreign_figures(foreign, month, keys, store, m, records)
    return Reconciliation(
        month=month, live=live, rules=rules.source, generated_at=utcnow(),
        metrics=_metrics(rules, erp_figs, expected, ledger_figs, om_figs if live else None),
        records=records.sorted(), daily=_daily(erp_figs, ledger_figs, om_figs if live else None),
        counts={"erp_orders": len(erp_figs), "erp_malformed": len(erp) - len(good), "ledger_orders": len(ledger_figs),
                "ometria_orders": len(om_figs) if live else 0},
        notes=notes,
    )


def _failed_orders(store: StateStore, keys: set[str]) -> dict[str, str]:
    rows = store.conn.execute(
        "SELECT id, error_message FROM failed_record WHERE type = 'order' AND id IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(keys)),))
    out = {id_: message for id_, message in rows}
    held = store.conn.execute(
        "SELECT id, hold_reason FROM outbound_record WHERE type = 'order' AND state = 'held'"
        " AND id IN (SELECT value FROM json_each(?))", (json.dumps(sorted(keys)),))
    for id_, reason in held:
        out.setdefault(id_, f"held by map: {reason or 'see its exception'}")
    return out


def _check_erp_order(e: ErpOrder, figures: Figures, ledger_doc: dict | None, om_doc: dict | None, live: bool,
                     failed: dict[str, str], m: _Mapping, records: _Records,
                     expected: dict[str, list[Figures]]) -> None:
    order = e.order
    assert order is not None
    due = is_due(order, m)
    cur, store = figures.currency, figures.store
    sides = [("ledger", ledger_doc)] + ([("ometria", om_doc)] if live else [])
    for side, doc in sides:
        # Once sent, an order is kept up to date in Ometria whatever happens to it next.
        wanted = due or ledger_doc is not None or doc is not None
        if wanted:
            expected[side].append(figures)
        if doc is None:
            if wanted:
                why = failed.get(e.key)
                detail = ("never accepted by Ometria" if side == "ledger" else
                          "accepted from us but not held by Ometria") + (f": {why}" if why else "")
                records.add(e.key, "missing_in_ometria", side, _erp_summary(e), None, detail, cur, store)
            continue
        for issue, erp_value, their_value, why in compare_order(e, doc, m):
            records.add(e.key, issue, side, erp_value, their_value, why, cur, store)
    if not due and ledger_doc is None and om_doc is None:
        if order.cancelled:
            records.add(e.key, "cancelled_not_sent", "erp", _erp_summary(e), None,
                        "cancelled before despatch: never sent, as the trigger intends", cur, store)
        else:
            records.add(e.key, "not_yet_due", "erp", _erp_summary(e), None,
                        f"not yet past the trigger ({m.trigger}): Ometria gets it then", cur, store)


def _malformed(e: ErpOrder, month: str, ledger: dict[str, dict], ometria: dict[str, dict], records: _Records) -> None:
    held = [side for side, docs in (("ledger", ledger), ("ometria", ometria)) if e.key in docs]
    where = "+".join(held) if held else "erp"
    doc = ometria.get(e.key) or ledger.get(e.key)
    when = "" if e.month == month else " (order month unknown: listed in every month)"
    detail = "; ".join(e.problems) + when + (
        f"; yet Ometria holds it ({where}), so its revenue is not the ERP's" if held else
        "; held back, so it is in neither side's figures")
    order = e.order
    records.add(e.key, "erp_malformed", where, _erp_summary(e), _describe(doc) if doc else None, detail,
                order.currency if order else None, None)


def _side_figures(side: str, docs: dict[str, dict], month: str, month_keys: set[str], store: StateStore,
                  m: _Mapping, records: _Records) -> list[Figures]:
    """The side's figures for the month; a record for each of its orders that is not one of the
    month's ERP orders."""
    figures: list[Figures] = []
    for id_, doc in docs.items():
        f = ometria_figures(doc, m)
        if f is None or f.day.strftime("%Y-%m") != month:
            continue  # one of the month's ERP orders, placed in another month there: compared already
        figures.append(f)
        if id_ not in month_keys:
            _not_this_months(side, id_, doc, store, records, f)
    return figures


def _foreign_figures(foreign: list[_Foreign], month: str, month_keys: set[str], store: StateStore, m: _Mapping,
                     records: _Records) -> list[Figures]:
    """Ometria orders keyed on something other than the month's ERP orders: other months' ERP
    orders reported in this month, duplicates of ERP orders, and orders the ERP never had."""
    linker = _Linker(store)
    linker.prepare(foreign)
    figures: list[Figures] = []
    for item in foreign:
        f = ometria_figures(item.doc, m) if item.doc is not None else None
        if f is not None:
            figures.append(f)
            if _staged_order(store, item.id) is not None:
                _not_this_months("ometria", item.id, item.doc, store, records, f)
                continue
        erp_key = linker.erp_key(item)
        if f is None and (erp_key is None or erp_key not in month_keys):
            continue  # another month's order, about none of this month's orders
        desc = _describe(item.doc) if item.doc else f"placed {item.month or '?'}"
        cur, shop = (f.currency, f.store) if f is not None else (None, None)
        if erp_key is not None:
            issue = "duplicate" if item.valid else "duplicate_voided"
            where = "" if item.month == month else f" (placed {item.month} in Ometria)"
            records.add(item.id, issue, "ometria", erp_key, desc,
                        f"a second Ometria order for ERP order {erp_key}{where}"
                        + ("; its revenue is counted twice" if item.valid else "; voided, no revenue"),
                        cur, shop, erp_key)
        else:
            records.add(item.id, "not_in_erp", "ometria", None, desc,
                        "Ometria holds an order the ERP never had (a storefront order that never reached KC?)",
                        cur, shop)
    return figures


def _staged_order(store: StateStore, key: str) -> SalesOrder | None:
    row = store.conn.execute(
        "SELECT parsed FROM staged_record WHERE entity = 'sales_order' AND current = 1 AND key = ?", (key,)).fetchone()
    return SalesOrder.model_validate_json(row[0]) if row is not None and row[0] else None


def _not_this_months(side: str, id_: str, doc: dict, store: StateStore, records: _Records, f: Figures) -> None:
    """A far-side order in this month that is not one of the month's ERP orders."""
    order = _staged_order(store, id_)
    if order is not None:
        placed = order.order_date.isoformat().replace("+00:00", "Z") if order.order_date else None
        records.add(id_, "timestamp_mismatch", side, placed, _text(doc.get("timestamp")),
                    f"ERP order placed in {local_month(order.order_date) if order.order_date else 'an unknown month'}"
                    " but reported in this month", f.currency, f.store)
    else:
        records.add(id_, "not_in_erp", side, None, _describe(doc), "not an ERP sales order we know of",
                    f.currency, f.store)


def _metrics(rules: ReconcileRules, erp: list[Figures], expected: dict[str, list[Figures]], ledger: list[Figures],
             ometria: list[Figures] | None) -> list[MetricRow]:
    erp_t, ledger_t = _tally(erp), _tally(ledger)
    exp_ledger, exp_ometria = _tally(expected["ledger"]), _tally(expected["ometria"])
    om_t = _tally(ometria) if ometria is not None else {}
    groups = sorted(set(erp_t) | set(ledger_t) | set(om_t), key=lambda g: (g[0], g[1] or ""))
    rows = []
    for group in groups:
        for name in METRICS:
            e = erp_t[group].value(name) if group in erp_t else ZERO
            led = ledger_t[group].value(name) if group in ledger_t else ZERO
            want_l = exp_ledger[group].value(name) if group in exp_ledger else ZERO
            rule = rules.metric(name)
            status = rule.status(led - want_l, e)
            far, want = led, want_l
            om = None
            if ometria is not None:
                om = om_t[group].value(name) if group in om_t else ZERO
                want = exp_ometria[group].value(name) if group in exp_ometria else ZERO
                far = om
                status = worst([status, rule.status(om - want, e)])
            rows.append(MetricRow(name=name, currency=group[0], store=group[1], erp=e, ledger=led, ometria=om,
                                  difference=far - e, not_yet_due=want - e, unexplained=far - want, status=status))
    return rows


def _daily(erp: list[Figures], ledger: list[Figures], ometria: list[Figures] | None) -> list[DayRevenue]:
    """Net revenue per London day and currency on each side (the report's chart)."""
    table: dict[tuple[str, date], list[Decimal]] = defaultdict(lambda: [ZERO, ZERO, ZERO])
    for column, figures in enumerate((erp, ledger, ometria or [])):
        for f in figures:
            if not f.void:
                table[(f.currency, f.day)][column] += f.net
    return [DayRevenue(day=day, currency=cur, erp=v[0], ledger=v[1], ometria=v[2] if ometria is not None else None)
            for (cur, day), v in sorted(table.items())]


def reconcile_contacts(store: StateStore, profile: Profile | None, *, live_client: ReadBack | None = None,
                       rules: ReconcileRules | None = None, mapping: Mapping | None = None,
                       unsubscribed_since: datetime | None = None):
    """The weekly contact check (``khaosync.stages.reconcile_contacts``, which builds on this
    module): every ERP contact's email, name, customer_id, consent and store against Ometria's."""
    from khaosync.stages import reconcile_contacts as contacts

    return contacts.reconcile_contacts(store, profile, live_client=live_client, rules=rules, mapping=mapping,
                                       unsubscribed_since=unsubscribed_since)


__all__ = [
    "DayRevenue", "MetricRow", "Reconciliation", "RecordIssue", "check_month",
    "erp_months", "local_month", "month_bounds", "reconcile_contacts", "reconcile_month",
]
