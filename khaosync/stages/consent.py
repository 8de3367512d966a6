"""Consent back-flow: every unsubscribe in Ometria reaches Khaos Control, nobody is re-opted in.

Three steps, each a function over the store (docs/runbook.md, "The consent flow"):

1. ``read_ometria_consent``: Ometria's consent changes, incrementally. ``GET /unsubscribes``
   from a bookmark (re-reading ``REREAD`` before it, since Ometria may list an event late),
   and, because unsubscribes made through the API are not listed there, our collection's
   contacts read back: a ``marketing_optin`` that differs from what we last sent is a change
   made in Ometria. Each change is kept once, with Ometria's time, type and source, raw.
2. ``diff_consent``: per KC contact, KC's decision (company ``MAILING_STATUS`` and contact
   ``EMAILSUBSCRIBE`` through the mapping, exactly as ``map`` reads them, with the time
   khaosync first saw it) beside Ometria's newest change, and the planned change. Rules:

   - an Ometria opt-out newer than KC's state (or KC's state undated) is written to KC;
   - an opt-in is never inferred, forced or written to KC; an Ometria opt-in newer than a KC
     opt-out is a conflict, and so is a KC opt-in newer than an Ometria opt-out (khaosync
     never sends ``@force_optin``, so the two sides would stay apart);
   - one email on several KC contacts whose KC consent differs is a conflict;
   - an unsubscribed email no KC contact holds is listed, never created in KC.

   Conflicts are ``consent_gap`` exceptions of stage ``consent`` (owner: crm by default).
3. ``push_consent``: the planned opt-outs to KC through ``ImportCompany`` in the vendor's shape
   (``consent_document``), journaled before sending; KC's ``TCustomerImportResult`` confirms
   each URN. A batch left journaled by a killed run is checked against KC (``ExportCompany``)
   before anything is sent again: applied, it is confirmed without a second import.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from defusedxml import ElementTree as DET

from khaosync.config import Profile
from khaosync.errors import KhaosyncError
from khaosync.findings import owner_of, severity_of
from khaosync.khaos.errors import SoapFaultError
from khaosync.khaos.models import Company
from khaosync.mapping.contacts import ConsentTimes, consent_for, email_key
from khaosync.mapping.schema import Mapping, load_mapping
from khaosync.ometria import wire
from khaosync.ometria.unsubscribes import parse_timestamp
from khaosync.stages import consent_document as doc
from khaosync.store import StateStore, staging
from khaosync.store import consent as cstore
from khaosync.store.db import utcnow


STAGE = "consent"
BOOKMARK = "ometria:unsubscribes"
REREAD = timedelta(hours=24)  # Ometria may list an unsubscribe some time after it happened (assumed)
COMPANIES_PER_IMPORT = 50
FIRST_READ = datetime(2000, 1, 1, tzinfo=timezone.utc)
OPTED_IN, OPTED_OUT = "EXPLICITLY_OPTEDIN", "EXPLICITLY_OPTEDOUT"
UNCONFIRMED = "KC did not confirm this URN in its TCustomerImportResult; planned again by the next diff"


class ConsentReader(Protocol):
    def unsubscribes(self, since: datetime, before: datetime | None = None) -> list[dict]: ...
    def iter_contacts(self, collection: str) -> Any: ...


class CompanyImporter(Protocol):
    def import_company(self, companies_xml: str) -> list: ...
    def export_company(self, codes: list[str]) -> bytes: ...


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _at(value: Any) -> str:
    parsed = parse_timestamp(value)
    return _iso(parsed) if parsed is not None else ""


def _mapping(profile: Profile, mapping: Mapping | None) -> Mapping:
    return mapping if mapping is not None else load_mapping(profile.mappings)


# -- 1. read -----------------------------------------------------------------------------------
@dataclass
class ReadResult:
    since: str
    before: str
    unsubscribes: int = 0        # events listed by GET /unsubscribes in the window
    new_unsubscribes: int = 0    # ... not kept before
    contacts_read: int = 0
    contact_changes: int = 0     # read-back marketing_optin different from what we sent, new
    erased: int = 0              # contacts found erased by Ometria (GDPR), new

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def read_ometria_consent(store: StateStore, profile: Profile, reader: ConsentReader, *, run_id: int,
                         mapping: Mapping | None = None, now: datetime | None = None,
                         read_contacts: bool = True) -> ReadResult:
    """Read Ometria's consent changes since the bookmark and keep each once."""
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    mark = staging.get_bookmark(store.conn, BOOKMARK)
    if mark is not None:
        since = datetime.fromisoformat(mark.replace("Z", "+00:00")) - REREAD
    else:
        since = FIRST_READ  # Ometria keeps unsubscribes for the account's life: all of them, once
    rows = reader.unsubscribes(since, before=now)
    result = ReadResult(_iso(since), _iso(now), unsubscribes=len(rows))
    read_at = utcnow()
    with store.transaction() as conn:
        for row in rows:
            email = str(row.get("email_address") or "").strip().lower()
            result.new_unsubscribes += cstore.add_event(
                conn, source="unsubscribes", email=email, contact_id="", profile_id=str(row.get("profile_id") or ""),
                optin=OPTED_OUT, type=str(row.get("type") or ""), reason=row.get("reason") if isinstance(
                    row.get("reason"), str) else None, at=_at(row.get("timestamp")), raw=row, run_id=run_id,
                read_at=read_at)
        staging.set_bookmark(conn, BOOKMARK, _iso(now), run_id, read_at)
    if read_contacts:
        collection = _mapping(profile, mapping).identity.collection
        seen: set[str] = set()
        with store.transaction() as conn:
            for contact in reader.iter_contacts(collection):
                result.contacts_read += 1
                result.contact_changes += _contact_event(conn, contact, run_id, read_at)
                if isinstance(contact.get("id"), str):
                    seen.add(contact["id"])
                    if _anonymised(conn, contact):
                        result.erased += cstore.add_erased(conn, contact["id"], "read back with its email and "
                                                           "names gone (anonymised)", run_id, read_at)
            # Only after a whole read: Ometria deletes people only by GDPR anonymisation, so a
            # contact it once held as we sent it (verified) and no longer lists was erased.
            for (id_, verified) in conn.execute("SELECT id, verified_at FROM ledger WHERE type = 'contact' AND "
                                                "verified_at IS NOT NULL").fetchall():
                if id_ not in seen:
                    result.erased += cstore.add_erased(conn, id_, f"verified in Ometria at {verified}, no longer in "
                                                       f"collection {collection!r}", run_id, read_at)
    return result


def _anonymised(conn, contact: dict) -> bool:
    """(assumed, verify on site) an erased contact keeps its id and loses email and names."""
    if any(contact.get(k) for k in ("email", "firstname", "lastname")):
        return False
    row = conn.execute("SELECT body FROM ledger WHERE type = 'contact' AND id = ?", (contact["id"],)).fetchone()
    return row is not None and bool(wire.loads(bytes(row[0])).get("email"))


def _contact_event(conn, contact: dict, run_id: int, read_at: str) -> int:
    """A read-back marketing_optin that is not what we last sent is a change made in Ometria."""
    optin = contact.get("marketing_optin")
    if optin not in (OPTED_IN, OPTED_OUT) or not isinstance(contact.get("id"), str):
        return 0
    row = conn.execute("SELECT body FROM ledger WHERE type = 'contact' AND id = ?", (contact["id"],)).fetchone()
    sent = wire.loads(bytes(row[0])).get("marketing_optin") if row else None
    if sent == optin:
        return 0
    stamp = contact.get("timestamp_unsubscribed" if optin == OPTED_OUT else "timestamp_subscribed")
    return int(cstore.add_event(
        conn, source="contact", email=str(contact.get("email") or "").strip().lower(), contact_id=contact["id"],
        profile_id="", optin=optin, type="marketing_optin", reason=None, at=_at(stamp),
        raw={k: contact.get(k) for k in ("id", "email", "marketing_optin", "timestamp_subscribed",
                                         "timestamp_unsubscribed") if k in contact},
        run_id=run_id, read_at=read_at))


# -- 2. diff -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KcContact:
    contact_id: str
    company_id: str
    mailing_status: int | None  # the company's
    email: str          # compared form ('' when none or not one Ometria accepts)
    decision: str | None
    at: str | None      # when khaosync first saw the value behind the decision (None: undated)
    why: str            # which KC field decided


@dataclass
class ConsentRow:
    """One person: KC's consent beside Ometria's, and what the flow does about it."""

    contact_id: str | None
    company_id: str | None
    email: str
    kc: str | None
    kc_at: str | None
    kc_source: str | None
    ometria: str
    ometria_at: str
    ometria_source: str   # unsubscribes:<type> | contact:marketing_optin
    action: str           # opt_out_in_kc | written | agree | conflict | no_kc_match | kc_wins
    note: str = ""
    mailing_status: int | None = None
    event_id: int | None = None

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out.pop("event_id")
        return out


@dataclass
class ConsentDiff:
    rows: list[ConsentRow]
    counts: dict[str, int]
    conflicts: int
    read: ReadResult | None = None

    @property
    def planned(self) -> int:
        return self.counts.get("opt_out_in_kc", 0)

    def as_dict(self) -> dict:
        return {"read": self.read.as_dict() if self.read else None, "counts": self.counts,
                "planned": self.planned, "conflicts": self.conflicts, "rows": [r.as_dict() for r in self.rows]}


def _norm(text: str | None) -> str | None:
    """Any stored ISO time as ``_iso`` writes it, so times compare as strings."""
    if not text:
        return None
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return _iso(parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc))


def _undated(parsed: dict) -> str | None:
    """The time given to a value that was already there at the first pull: KC's own last change
    of the company (an upper bound), else its creation; never the time of our pull."""
    return _norm(parsed.get("last_updated") or parsed.get("date_created"))


def _observe(conn, staged) -> dict[tuple[str, str], str | None]:
    # A value already there at the first pull is undated (NULL): older than any Ometria change.
    return cstore.observe_kc_consent(conn, staged.key, staged.version, staged.parsed, None)


def record_kc_consent(store: StateStore) -> int:
    """Note each KC consent value that changed since last seen, for the companies pulled since
    the last look (the others cannot have changed); how many companies were looked at."""
    with store.transaction() as conn:
        keys = cstore.companies_to_observe(conn)
        for key in keys:
            staged = staging.current(conn, "company", key)
            if staged is not None and staged.parsed is not None:
                _observe(conn, staged)
    return len(keys)


def decision_of(company: Company, contact, mapping: Mapping,
                times: dict[tuple[str, str], str | None]) -> tuple[str | None, str | None, str]:
    """(KC's decision, when khaosync first saw the value behind it, which field decided)."""
    decision, _unknown = consent_for(company.mailing_status, contact.email_subscribe, mapping.consent)
    own, _ = consent_for(None, contact.email_subscribe, mapping.consent)
    if decision is not None and own == decision:
        at, why = times.get(("contact", str(contact.contact_id))), f"EMAILSUBSCRIBE {contact.email_subscribe}"
    else:
        at, why = times.get(("company", company.key)), f"MAILING_STATUS {company.mailing_status}"
    return (None if decision is None else str(decision.value)), _norm(at), why


def seen_times(conn, company: Company) -> dict[tuple[str, str], str | None]:
    """The first-seen times ``record_kc_consent`` kept for a company and its contacts."""
    keys = [("company", company.key)] + [("contact", str(c.contact_id)) for c in company.contacts]
    out: dict[tuple[str, str], str | None] = {}
    for entity, key in keys:
        row = conn.execute("SELECT since FROM kc_consent_seen WHERE entity = ? AND key = ?", (entity, key)).fetchone()
        out[(entity, key)] = row[0] if row else None
    return out


class MapConsent:
    """What ``map`` needs to date consent and to keep off newer Ometria opt-outs."""

    def __init__(self, store: StateStore, mapping: Mapping):
        record_kc_consent(store)
        self.conn = store.conn
        self.mapping = mapping
        self.by_email, self.by_contact = cstore.latest_opt_outs(store.conn)
        self.erased = cstore.erased(store.conn)

    def hold_erased(self, outcomes: list) -> None:
        """A contact Ometria erased (GDPR) is held: no push re-creates the person."""
        for outcome in outcomes:
            if outcome.id in self.erased:
                outcome.held_because(f"erased by Ometria (GDPR anonymisation): {self.erased[outcome.id]}")

    def times(self, company: Company) -> dict[int, ConsentTimes]:
        seen = seen_times(self.conn, company)
        out: dict[int, ConsentTimes] = {}
        for c in company.contacts:
            _decision, at, _why = decision_of(company, c, self.mapping, seen)
            outs = [t for t in (self.by_contact.get(str(c.contact_id)), self.by_email.get(email_key(c.email) or ""))
                    if t]
            undated = _undated(company.model_dump(mode="json")) if at is None else None
            out[c.contact_id] = ConsentTimes(_dt(at), _dt(max(outs)) if outs else None, _dt(undated))
        return out


def _dt(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00"))


def _kc_contacts(store: StateStore, mapping: Mapping, emails: set[str], ids: set[str]) -> list[KcContact]:
    """The contacts of every company one of whose contacts an Ometria change names (by contact
    id or email): the rules need no others, so memory follows the changes, not the customer
    base. Every company's consent values are looked at on the way (first-seen times)."""
    out: list[KcContact] = []
    with store.transaction() as conn:
        for staged in staging.iter_current(conn, "company"):
            if staged.parsed is None:
                continue
            times = _observe(conn, staged)
            contacts = staged.parsed.get("contacts") or []
            if not any(str(c.get("contact_id")) in ids or (email_key(c.get("email")) or "") in emails
                       for c in contacts):
                continue
            company = Company.model_validate(staged.parsed)
            for c in company.contacts:
                decision, at, why = decision_of(company, c, mapping, times)
                out.append(KcContact(str(c.contact_id), company.key, company.mailing_status, email_key(c.email) or "",
                                     decision, at, why))
    return out


def _newer(a: str, b: str | None) -> bool:
    """Ometria's time ``a`` after KC's ``b``; an undated KC state is older than any change."""
    if not b:
        return True
    if not a:
        return False
    return a > b


def diff_consent(store: StateStore, profile: Profile, *, run_id: int, mapping: Mapping | None = None,
                 owners: dict[str, str] | None = None) -> ConsentDiff:
    """Plan the opt-outs KC must get, by the rules above; record the conflicts."""
    mapping = _mapping(profile, mapping)
    owners = {**dict(mapping.owners), **(owners or {})}
    unsubscribed, read_back = cstore.latest_events(store.conn)
    erased = cstore.erased(store.conn)
    kc = _kc_contacts(store, mapping, set(unsubscribed), set(read_back) | set(erased))
    by_id = {c.contact_id: c for c in kc}
    by_email: dict[str, list[KcContact]] = defaultdict(list)
    by_company: dict[str, list[KcContact]] = defaultdict(list)
    for c in kc:
        by_company[c.company_id].append(c)
        if c.email:
            by_email[c.email].append(c)
    states = cstore.change_states(store.conn)
    write_status = mapping.consent.write_back_status()
    rows: list[ConsentRow] = []
    for c in sorted(kc, key=lambda k: (int(k.company_id), int(k.contact_id))):
        candidates = [e for e in (read_back.get(c.contact_id), unsubscribed.get(c.email) if c.email else None) if e]
        if not candidates:
            continue
        event = max(candidates, key=lambda e: (e.at, e.optin == OPTED_OUT))
        row = ConsentRow(c.contact_id, c.company_id, c.email, c.decision, c.at, c.why, event.optin, event.at,
                         f"{event.source}:{event.type}", "agree", event_id=event.id)
        rows.append(row)
        holders = by_email.get(c.email, []) if c.email else []
        if event.optin == OPTED_OUT:
            if c.decision == OPTED_OUT:
                continue
            if states.get((c.contact_id, event.id)) in ("done", "journaled"):
                row.action, row.note = "written", "written to KC; the next pull shows it"
            elif len({h.decision for h in holders}) > 1:
                row.action = "conflict"
                row.note = (f"email shared by {len(holders)} KC contacts with different consent "
                            f"({', '.join(f'contact:{h.contact_id}' for h in holders)})")
            elif c.decision == OPTED_IN and not _newer(event.at, c.at):
                row.action = "conflict"
                row.note = "KC's opt-in is newer than Ometria's opt-out; khaosync never forces an opt-in"
            else:
                row.action = "opt_out_in_kc"
                row.mailing_status = _company_status(c, by_company, by_email, unsubscribed, read_back,
                                                     write_status, mapping)
        else:  # an opt-in in Ometria, different from what we sent
            if c.decision == OPTED_OUT and _newer(event.at, c.at):
                row.action = "conflict"
                row.note = "Ometria's opt-in is newer than KC's opt-out; opt-ins are never written to KC"
            elif c.decision == OPTED_OUT:
                row.action, row.note = "kc_wins", "KC's newer opt-out: the next push sends it"
    for contact_id, evidence in sorted(erased.items()):
        c = by_id.get(contact_id)
        rows.append(ConsentRow(contact_id, c.company_id if c else None, "", c.decision if c else None,
                               c.at if c else None, c.why if c else None, "erased", "", "contact:erased", "erased",
                               f"erased by Ometria (GDPR): {evidence}; never sent again"))
    known = {c.email for c in kc if c.email}
    for email, event in sorted(unsubscribed.items()):
        if email not in known:
            rows.append(ConsentRow(None, None, email, None, None, None, event.optin, event.at,
                                   f"unsubscribes:{event.type}", "no_kc_match",
                                   "no KC contact holds this email: listed, never created"))
    _record(store, run_id, rows, owners)
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r.action] += 1
    return ConsentDiff(rows, dict(sorted(counts.items())), counts.get("conflict", 0))


def _company_status(c: KcContact, kc: dict[str, list[KcContact]], by_email, unsubscribed, read_back,
                    write_status: int | None, mapping: Mapping) -> int | None:
    """The site's "do not mail" status, when the company's is not an opt-out already, is one the
    mapping knows, and no contact of it with an email stays opted in after the write-back."""
    status = c.mailing_status
    if write_status is None or status == write_status:
        return None
    if status is not None and mapping.consent.mailing_status.get(status) in (None, "opt_out"):
        return None  # unknown to the mapping, or already an opt-out (gone away, deceased): left alone
    for other in kc.get(c.company_id, []):
        if not other.email or other.contact_id == c.contact_id:
            continue
        theirs = [e for e in (read_back.get(other.contact_id), unsubscribed.get(other.email)) if e]
        if not any(e.optin == OPTED_OUT for e in theirs) and other.decision != OPTED_OUT:
            return None
    return write_status


def _record(store: StateStore, run_id: int, rows: list[ConsentRow], owners: dict[str, str]) -> None:
    now = utcnow()
    keep: set[tuple[str, int]] = set()
    with store.transaction() as conn:
        for r in rows:
            if r.action == "opt_out_in_kc" and r.contact_id and r.company_id and r.event_id is not None:
                company = r.company_id
                urn = conn.execute("SELECT json_extract(parsed, '$.company_code') FROM staged_record WHERE "
                                   "entity = 'company' AND key = ? AND current = 1", (company,)).fetchone()[0]
                cstore.plan_change(conn, contact_id=r.contact_id, company_id=company, urn=urn, email=r.email,
                                   mailing_status=r.mailing_status, event_id=r.event_id, now=now)
                keep.add((r.contact_id, r.event_id))
            if r.action == "conflict":
                store.record_exception(
                    run_id=run_id, type="consent_gap", severity=severity_of("consent_gap"),
                    owner=owner_of("consent_gap", owners), stage=STAGE,
                    reason=f"contact {r.contact_id} ({r.email}): KC {r.kc or 'no decision'} ({r.kc_source}, "
                           f"{r.kc_at or 'undated'}), Ometria {r.ometria} ({r.ometria_source}, {r.ometria_at or 'undated'}): "
                           f"{r.note}",
                    records=[f"contact:{r.contact_id}"], entity="contact", record_key=r.contact_id,
                    detail={"conflict": r.note, "kc": r.kc, "kc_at": r.kc_at, "ometria": r.ometria,
                            "ometria_at": r.ometria_at, "source": r.ometria_source, "company_id": r.company_id})
        cstore.supersede_unplanned(conn, keep)
        store.resolve_unseen_exceptions(run_id, STAGE, ["consent_gap"])


# -- 3. push -----------------------------------------------------------------------------------
@dataclass
class ConsentPushResult:
    committed: bool
    planned: int = 0
    companies: int = 0
    imports: int = 0              # ImportCompany requests sent by this run
    done: int = 0                 # changes KC confirmed
    failed: int = 0               # changes KC did not confirm (planned again by the next diff)
    resumed: int = 0              # journaled batches of a killed run found applied: not sent again
    resent: int = 0               # ... found not applied: their changes sent again
    unwritable: list[dict] = field(default_factory=list)  # companies whose document cannot be made

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _confirmed_urns(answer: list) -> list[str]:
    """``TCustomerImportResult.CustomerImport[]``: (URN, WebUser) pairs; an older client gives URNs."""
    return [str(item[0] if isinstance(item, (tuple, list)) else item).strip() for item in answer]


def _applied(kc: CompanyImporter, batch: cstore.Batch, changes: list[cstore.Change]) -> bool:
    """Whether KC already holds what a journaled batch carried (the run died before its answer)."""
    root = DET.fromstring(kc.export_company(batch.urns))
    held: dict[str, tuple[str | None, dict[str, str | None]]] = {}
    for company in root.iter("COMPANY"):
        code = (company.findtext("COMPANY_CODE") or "").strip()
        contacts = {(ct.findtext("CONTACT_ID") or "").strip(): (ct.findtext("EMAILSUBSCRIBE") or "").strip()
                    for ct in company.iter("CONTACT")}
        held[code] = ((company.findtext("MAILING_STATUS") or "").strip(), contacts)
    for change in changes:
        status, contacts = held.get(change.urn, (None, {}))
        if contacts.get(change.contact_id) not in ("0", "false", "False"):
            return False
        if change.mailing_status is not None and status != str(change.mailing_status):
            return False
    return True


def push_consent(store: StateStore, profile: Profile, kc: CompanyImporter | None, *, commit: bool = False,
                 run_id: int | None = None, owners: dict[str, str] | None = None) -> ConsentPushResult:
    """Write the planned opt-outs to KC (only with ``commit``); resume a killed run first."""
    result = ConsentPushResult(committed=commit)
    if commit:
        assert kc is not None
        _resume(store, kc, result)
    planned = cstore.changes(store.conn, ["planned"])
    result.planned = len(planned)
    by_company: dict[str, list[cstore.Change]] = defaultdict(list)
    for change in planned:
        by_company[change.company_id].append(change)
    result.companies = len(by_company)
    elements: list[tuple[str, str, list[cstore.Change]]] = []
    for company_id, company_changes in by_company.items():
        staged = staging.current(store.conn, "company", company_id)
        try:
            if staged is None or staged.parsed is None:
                raise doc.DocumentError(company_id, "not staged readable: run pull")
            company = Company.model_validate(staged.parsed)
            status = next((c.mailing_status for c in company_changes if c.mailing_status is not None), None)
            element = doc.company_element(company, [doc.ContactOptOut(int(c.contact_id), c.email)
                                                    for c in company_changes], status)
        except doc.DocumentError as exc:
            result.unwritable.append({"company_id": company_id, "reason": exc.reason})
            if run_id is not None:
                store.record_exception(
                    run_id=run_id, type="malformed_record", severity=severity_of("malformed_record"),
                    owner=owner_of("consent_gap", owners), stage=STAGE, entity="company", record_key=company_id,
                    reason=f"company {company_id}: its contacts' opt-out cannot be written to KC: {exc.reason}",
                    records=[f"company:{company_id}"] + [f"contact:{c.contact_id}" for c in company_changes])
            continue
        elements.append((company_changes[0].urn, element, company_changes))
    if not commit:
        return result
    assert kc is not None
    for start in range(0, len(elements), COMPANIES_PER_IMPORT):
        chunk = elements[start:start + COMPANIES_PER_IMPORT]
        confirmed = _send(store, kc, [u for u, _, _ in chunk], doc.document([e for _, e, _ in chunk]),
                          [c.id for _, _, cs in chunk for c in cs], result)
        for urn, _element, changes in chunk:
            if urn not in confirmed and run_id is not None:
                store.record_exception(
                    run_id=run_id, type="consent_gap", severity=severity_of("consent_gap"),
                    owner=owner_of("consent_gap", owners), stage=STAGE, entity="company",
                    record_key=changes[0].company_id,
                    reason=f"company {changes[0].company_id} (URN {urn}): KC did not confirm the ImportCompany "
                           "of its contacts' opt-out; planned again by the next consent diff",
                    records=[f"company:{changes[0].company_id}"] + [f"contact:{c.contact_id}" for c in changes],
                    detail={"urn": urn, "contacts": [c.contact_id for c in changes]})
    return result


def _send(store: StateStore, kc: CompanyImporter, urns: list[str], document: str, change_ids: list[int],
          result: ConsentPushResult) -> set[str]:
    """One journaled ImportCompany; the URNs KC confirmed."""
    with store.transaction() as conn:
        batch_id = cstore.journal_batch(conn, document, urns, change_ids, utcnow())
    try:
        answer = kc.import_company(document)
    except SoapFaultError as exc:
        if not exc.transient:
            # A client fault: KC refused the document, nothing applied. Planned again by the next diff.
            with store.transaction() as conn:
                cstore.fail_batch(conn, batch_id, str(exc), utcnow(), state="failed")
        raise  # a server fault may have applied part of it: the batch stays journaled, like no answer
    except KhaosyncError:
        # No answer (timeout, connection, a 5xx after retries): the import may have landed. The batch
        # stays journaled, so the next push asks KC before sending anything again.
        raise
    result.imports += 1
    confirmed = _confirmed_urns(answer)
    with store.transaction() as conn:
        done, failed = cstore.answer_batch(conn, batch_id, confirmed, utcnow(), unconfirmed_error=UNCONFIRMED)
    result.done += done
    result.failed += failed
    return set(confirmed)


def _resume(store: StateStore, kc: CompanyImporter, result: ConsentPushResult) -> None:
    """Batches a killed run left journaled: confirmed if KC holds their changes, else re-planned."""
    for batch in cstore.journaled_batches(store.conn):
        changes = [c for c in cstore.changes(store.conn, ["journaled"]) if c.batch_id == batch.id]
        applied = _applied(kc, batch, changes)
        with store.transaction() as conn:
            if applied:
                cstore.answer_batch(conn, batch.id, batch.urns, utcnow(), unconfirmed_error=UNCONFIRMED)
                result.resumed += 1
                result.done += len(changes)
            else:
                cstore.fail_batch(conn, batch.id, "abandoned: the run stopped before KC's answer; not applied in "
                                                  "KC, sent again", utcnow())
                result.resent += 1


# -- the flow, for sync and the CLI ---------------------------------------------------------------
@dataclass
class ConsentRun:
    read: ReadResult
    diff: ConsentDiff
    push: ConsentPushResult

    def as_dict(self) -> dict:
        return {"read": self.read.as_dict(), "diff": {k: v for k, v in self.diff.as_dict().items() if k != "rows"},
                "push": self.push.as_dict()}


def consent_flow(store: StateStore, profile: Profile, reader: ConsentReader, kc: CompanyImporter | None, *,
                 run_id: int, commit: bool, mapping: Mapping | None = None,
                 owners: dict[str, str] | None = None) -> ConsentRun:
    """Read, diff and (with ``commit``) push: one more stage of ``sync``."""
    read = read_ometria_consent(store, profile, reader, run_id=run_id, mapping=mapping)
    return consent_after_read(store, profile, read, kc, run_id=run_id, commit=commit, mapping=mapping,
                              owners=owners)


def consent_after_read(store: StateStore, profile: Profile, read: ReadResult, kc: CompanyImporter | None, *,
                       run_id: int, commit: bool, mapping: Mapping | None = None,
                       owners: dict[str, str] | None = None) -> ConsentRun:
    """Diff and (with ``commit``) push, once Ometria's changes are read."""
    diff = diff_consent(store, profile, run_id=run_id, mapping=mapping, owners=owners)
    diff.read = read
    pushed = push_consent(store, profile, kc, commit=commit, run_id=run_id, owners=owners)
    return ConsentRun(read, diff, pushed)


def run_consent_diff(store: StateStore, profile: Profile, reader: ConsentReader, *,
                     mapping: Mapping | None = None) -> ConsentDiff:
    """``khaosync consent diff``: read Ometria's changes and plan, as one run."""
    run_id = store.start_run("consent diff", profile.name)
    try:
        read = read_ometria_consent(store, profile, reader, run_id=run_id, mapping=mapping)
        diff = diff_consent(store, profile, run_id=run_id, mapping=mapping)
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    diff.read = read
    store.finish_run(run_id, "ok", {"read": read.as_dict(), "counts": diff.counts})
    return diff


def run_consent_push(store: StateStore, profile: Profile, kc: CompanyImporter | None, *,
                     commit: bool) -> ConsentPushResult:
    """``khaosync consent push``: the planned opt-outs to KC (only with ``commit``), as one run."""
    run_id = store.start_run("consent push --commit" if commit else "consent push", profile.name)
    try:
        owners = dict(load_mapping(profile.mappings).owners)
        result = push_consent(store, profile, kc, commit=commit, run_id=run_id, owners=owners)
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    store.finish_run(run_id, "ok", result.as_dict())
    return result


def planned_documents(store: StateStore) -> list[tuple[str, list[cstore.Change]]]:
    """What a push would write now, per URN (for the dry run's table)."""
    grouped: dict[str, list[cstore.Change]] = defaultdict(list)
    for change in cstore.changes(store.conn, ["planned"]):
        grouped[change.urn].append(change)
    return sorted(grouped.items())
