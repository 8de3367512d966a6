"""Reconcile contacts: the weekly customer-attribute check (docs/reconcile.md).

Every contact of every staged KC company against Ometria's contact with the same id in the
mapping's collection: email, first and last name, ``customer_id``, consent and store. Read
back with a live client (plus Ometria's unsubscribes, where people opt out), else against
what Ometria last accepted from us (the ledger). Differences the mapping's own rules explain
(an email shared by several KC contacts, which only one may hold in Ometria; an email Ometria
would refuse) are listed as ``email_withheld`` (info), not as mismatches.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from khaosync.config import Profile
from khaosync.khaos.models import Company, SalesOrder
from khaosync.mapping.contacts import consent_for
from khaosync.mapping.schema import Mapping
from khaosync.ometria import wire
from khaosync.ometria.models import is_ometria_email
from khaosync.stages.reconcile import (
    CONTACT_ISSUE_TYPES, ReadBack, RecordIssue, _key_order, _Mapping, _text, worst,
)
from khaosync.stages.reconcile_rules import ReconcileRules, Status
from khaosync.store import StateStore
from khaosync.store.db import utcnow


@dataclass
class ContactReconciliation:
    live: bool
    rules: str
    generated_at: str
    records: list[RecordIssue]
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> Status:
        return worst(r.severity for r in self.records)

    def as_dict(self) -> dict:
        return {"kind": "contacts", "status": self.status, "live": self.live, "rules": self.rules,
                "generated_at": self.generated_at, "counts": self.counts, "metrics": [],
                "records": [r.as_dict() for r in self.records], "notes": self.notes}


@dataclass(frozen=True)
class _ErpContact:
    contact_id: str
    company: Company
    email: str
    firstname: str | None
    lastname: str | None
    customer_id: str | None
    optin: str | None          # EXPLICITLY_OPTEDIN / EXPLICITLY_OPTEDOUT / None (no decision)
    stores: frozenset[str]


def _consent(m: _Mapping, company: Company, email_subscribe: bool | None) -> str | None:
    """What the ERP decided, by the mapping's rules exactly as ``map`` applies them."""
    optin, _unknown = consent_for(company.mailing_status, email_subscribe, m.mapping.consent)
    return None if optin is None else str(optin.value)


def _company_stores(store: StateStore, m: _Mapping) -> dict[str, set[str]]:
    """The Ometria stores each company has ordered in (per the mapping's store rule)."""
    out: dict[str, set[str]] = defaultdict(set)
    rows = store.conn.execute(
        "SELECT json_extract(parsed, '$.company_id'), json_extract(parsed, '$.site'),"
        " json_extract(parsed, '$.website_name') FROM staged_record"
        " WHERE entity = 'sales_order' AND current = 1 AND parsed IS NOT NULL")
    for company_id, site, website in rows:
        if company_id is None:
            continue
        shop = m.store_of(SalesOrder(sorder_id=0, site=site or "", website_name=website or ""))
        if shop:
            out[str(company_id)].add(shop)
    return out


@dataclass
class _SharedEmails:
    """How many ERP contacts hold each email, and the emails one of whose holders opted out
    (the map stage sends that opt-out with the email to whichever contact keeps it)."""

    holders: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    opted_out: set[str] = field(default_factory=set)

    def shared(self, email: str) -> bool:
        return self.holders.get(email.lower(), 0) > 1


def _erp_contacts(store: StateStore, m: _Mapping) -> tuple[dict[str, _ErpContact], _SharedEmails, list[str]]:
    """Every contact of every staged company, what the ERP says about it, and who shares which
    email (Ometria lets only one of them hold it)."""
    stores = _company_stores(store, m)
    contacts: dict[str, _ErpContact] = {}
    shared = _SharedEmails()
    malformed: list[str] = []
    for key, parsed in store.conn.execute(
            "SELECT key, parsed FROM staged_record WHERE entity = 'company' AND current = 1 ORDER BY key"):
        if parsed is None:
            malformed.append(key)
            continue
        company = Company.model_validate_json(parsed)
        for c in company.contacts:
            optin = _consent(m, company, c.email_subscribe)
            email = c.email.strip()
            if email:
                shared.holders[email.lower()] += 1
                if optin == "EXPLICITLY_OPTEDOUT":
                    shared.opted_out.add(email.lower())
            contacts[str(c.contact_id)] = _ErpContact(
                contact_id=str(c.contact_id), company=company, email=email, firstname=c.forename.strip() or None,
                lastname=c.surname.strip() or None, customer_id=m.customer_of(company.company_id, c.contact_id),
                optin=optin, stores=frozenset(stores.get(company.key, ())))
    return contacts, shared, malformed


def ledger_contacts(store: StateStore) -> dict[str, dict]:
    return {id_: wire.loads(bytes(body)) for id_, body in
            store.conn.execute("SELECT id, body FROM ledger WHERE type = 'contact' ORDER BY id")}


def reconcile_contacts(store: StateStore, profile: Profile | None, *, live_client: ReadBack | None = None,
                       rules: ReconcileRules | None = None, mapping: Mapping | None = None,
                       unsubscribed_since: datetime | None = None) -> ContactReconciliation:
    """Email, name, customer_id, consent and store of every ERP contact against Ometria's
    (read back with ``live_client``, else as last accepted: the ledger)."""
    rules = rules or ReconcileRules()
    m = _Mapping(profile, mapping)
    erp, shared, malformed = _erp_contacts(store, m)
    live = live_client is not None
    if live_client is not None:
        theirs = {str(doc.get("id")): doc for doc in live_client.iter_contacts(m.collection)}
        since = unsubscribed_since or datetime(2000, 1, 1, tzinfo=UTC)
        unsubscribed = {str(u.get("email_address", "")).strip().lower() for u in live_client.unsubscribes(since)}
        side = "ometria"
    else:
        theirs, unsubscribed, side = ledger_contacts(store), set(), "ledger"
    out: list[RecordIssue] = []

    def add(key: str, issue: str, erp_value: str | None, their_value: str | None, detail: str) -> None:
        out.append(RecordIssue(key=key, issue=issue, severity=rules.contact_issue(issue).severity,
                               owner=m.owner(issue, rules, contacts=True), side=side if issue != "erp_malformed"
                               else "erp", erp=erp_value, ometria=their_value, detail=detail,
                               exception_type=CONTACT_ISSUE_TYPES.get(issue)))

    for key in malformed:
        add(f"company:{key}", "erp_malformed", None, None,
            "company staged raw-only: its contacts could not be read, so they were not compared")
    for key in sorted(erp, key=_key_order):
        c = erp[key]
        doc = theirs.get(key)
        if doc is None:
            add(key, "missing_in_ometria", c.email or None, None,
                f"KC contact of company {c.company.key} is not in collection {m.collection!r}")
            continue
        _compare_contact(c, doc, shared, unsubscribed, add)
    for key in sorted(set(theirs) - set(erp), key=_key_order):
        doc = theirs[key]
        add(key, "not_in_erp", None, _text(doc.get("email")),
            f"collection {m.collection!r} holds a contact no staged KC company has")
    rank = {"fail": 0, "warn": 1, "info": 2}
    out.sort(key=lambda r: (rank.get(r.severity, 3), r.issue, _key_order(r.key)))
    return ContactReconciliation(live=live, rules=rules.source, generated_at=utcnow(), records=out,
                                 counts={"erp_contacts": len(erp), "ometria_contacts": len(theirs)})


def _compare_contact(c: _ErpContact, doc: dict, shared: _SharedEmails, unsubscribed: set[str], add) -> None:
    key = c.contact_id
    theirs_email = str(doc.get("email") or "").strip()
    if c.email.lower() != theirs_email.lower():
        if not theirs_email and c.email and (shared.shared(c.email) or not _acceptable(c.email)):
            why = "shared with other KC contacts" if shared.shared(c.email) else "not an email Ometria accepts"
            add(key, "email_withheld", c.email, None, f"sent without its email ({why}), as the mapping's policy says")
        else:
            add(key, "email_mismatch", c.email or None, theirs_email or None, "the contact's email differs")
    names = (c.firstname, c.lastname)
    got = (doc.get("firstname") or None, doc.get("lastname") or None)
    if names != got:
        add(key, "name_mismatch", " ".join(n for n in names if n) or None, " ".join(n for n in got if n) or None,
            "first or last name differs")
    if c.customer_id is not None and str(doc.get("customer_id")) != c.customer_id:
        add(key, "customer_mismatch", c.customer_id, _text(doc.get("customer_id")),
            "customer_id differs: the contact's orders attach to another person")
    theirs_optin = doc.get("marketing_optin")
    unsubscribed_there = bool(theirs_email) and theirs_email.lower() in unsubscribed
    if c.optin == "EXPLICITLY_OPTEDOUT" and theirs_optin == "EXPLICITLY_OPTEDIN" and not unsubscribed_there:
        add(key, "consent_gap", c.optin, theirs_optin, "opted out in the ERP, opted in in Ometria: a campaign "
            "could mail someone who said no")
    elif c.optin == "EXPLICITLY_OPTEDIN" and (unsubscribed_there or theirs_optin == "EXPLICITLY_OPTEDOUT") \
            and not (c.email.lower() in shared.opted_out and not unsubscribed_there):
        # (A shared email one of whose KC holders opted out is sent opted out: not a gap.)
        add(key, "unsubscribed_in_ometria", c.optin, "EXPLICITLY_OPTEDOUT",
            "unsubscribed in Ometria but still opted in in the ERP: write the opt-out back to KC")
    their_stores = doc.get("store_ids")
    if isinstance(their_stores, list) and c.stores and not c.stores <= set(map(str, their_stores)):
        add(key, "store_mismatch", ",".join(sorted(c.stores)), ",".join(map(str, their_stores)),
            "the contact is missing from a store its company ordered in")


def _acceptable(email: str) -> bool:
    return is_ometria_email(email)
