"""KC companies and their contacts -> Ometria contacts.

One Ometria contact per KC contact: ``id`` is the stable CONTACT_ID, ``customer_id`` the
stable COMPANY_ID (or CONTACT_ID, per ``identity.customer_id``), in the mapping's collection.
Never an email or a name as an id.

Consent (``consent_for``): an opt-out on the company (``MAILING_STATUS``) or on the contact
(``EMAILSUBSCRIBE``) always wins; an opt-in is sent only when the contact itself holds one
(or, if the mapping says so, the company does and the contact holds no decision); with no
decision, ``marketing_optin`` is not sent at all. A ``MAILING_STATUS`` id the mapping does
not list is a ``consent_gap`` finding: the company's decision is unknown, so no opt-in is sent
for its contacts (an opt-out still is: sending one is never wrong).

Shared emails (``SharedEmails``): KC allows one email on several contacts; Ometria silently
ignores an identifier another contact already holds. The stage groups contacts by email and
the mapping's policy picks who keeps it; the others are sent without it. An opt-out held by
any contact of the group travels with the email to the one who keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pycountry
from pydantic import ValidationError

from khaosync.khaos.models import Address, Company, Contact as KcContact
from khaosync.khaos.parse import is_email as kc_is_email
from khaosync.mapping.outcome import Finding, Outcome
from khaosync.mapping.schema import Consent, Mapping
from khaosync.ometria.models import Contact, MarketingOptin, is_ometria_email

_DECISIONS = {"opt_in": MarketingOptin.OPTED_IN, "opt_out": MarketingOptin.OPTED_OUT, "no_decision": None}


def email_key(email: str | None) -> str | None:
    """The form emails are compared in (trimmed, lower case), or None when Ometria would refuse it."""
    if not email:
        return None
    text = email.strip()
    return text.lower() if is_ometria_email(text) else None


def customer_id_of(mapping: Mapping, company_id: int | None, contact_id: int | None) -> str | None:
    value = company_id if mapping.identity.customer_id == "company_id" else contact_id
    return None if value is None else str(value)


def consent_for(mailing_status: int | None, email_subscribe: bool | None,
                rules: Consent) -> tuple[MarketingOptin | None, bool]:
    """(``marketing_optin`` to send or None, whether the company's status id is unknown)."""
    unknown = mailing_status is not None and mailing_status not in rules.mailing_status
    company = None if mailing_status is None or unknown else _DECISIONS[rules.mailing_status[mailing_status]]
    if email_subscribe is None:
        contact = None
    else:
        contact = _DECISIONS[rules.email_subscribe_true if email_subscribe else rules.email_subscribe_false]
    if MarketingOptin.OPTED_OUT in (company, contact):
        return MarketingOptin.OPTED_OUT, unknown
    if unknown:
        return None, True  # the company may have said "do not mail": never opt in on a guess
    if contact == MarketingOptin.OPTED_IN:
        return MarketingOptin.OPTED_IN, False
    if company == MarketingOptin.OPTED_IN and rules.company_opt_in_covers_contacts:
        return MarketingOptin.OPTED_IN, False
    return None, False


def phone_e164(raw: str, calling_code: str | None) -> str | None:
    """A KC phone as E.164, or None when it cannot be made one (it is then left out)."""
    # "+44 (0)7700 900123": the bracketed trunk 0 is not dialled from abroad.
    digits = "".join(ch for ch in raw.replace("(0)", "") if ch.isdigit() or ch == "+")
    if not digits:
        return None
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    elif digits.startswith("0") and calling_code:
        digits = f"+{calling_code}{digits[1:]}"
    if digits.startswith("+") and digits[1:].isdigit() and digits[1] != "0" and 8 <= len(digits) <= 16:
        return digits
    return None


def country_alpha2(code: str) -> str | None:
    """An ISO 3166 country code as Ometria takes it (alpha-2). KC holds alpha-3 on the sites
    seen ("GBR"), alpha-2 on others; ``UK`` is not ISO but is what people type for GB."""
    text = code.strip().upper()
    if not (text.isascii() and text.isalpha()):
        return None
    if text == "UK":
        return "GB"
    if len(text) == 2:
        return text if pycountry.countries.get(alpha_2=text) is not None else None
    if len(text) == 3:
        country = pycountry.countries.get(alpha_3=text)
        return country.alpha_2 if country is not None else None
    return None


def _country(addresses: list[Address]) -> str | None:
    active = [a for a in addresses if not a.inactive] or addresses
    invoice = [a for a in active if a.addr_type.lower() == "invoice"] or active
    for address in invoice:
        code = country_alpha2(address.country_code)
        if code is not None:
            return code
    return None


# -- shared emails ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """A contact in a shared-email group, with what the policies rank it by."""

    contact_id: int
    company_id: int
    company_last_order: str | None = None  # ISO UTC of the company's most recent order
    contact_last_order: str | None = None  # ... of the most recent order naming this contact
    opted_out: bool = False                # its own consent says opted out


def choose_survivor(members: list[Member], policy: str) -> int | None:
    """Who keeps a shared email: None for ``skip``.

    ``survivor_most_recent_order``: the contact whose company ordered last; between contacts
    of that company, the one named on the latest order; then the lowest CONTACT_ID (oldest).
    ``survivor_oldest_contact``: the lowest CONTACT_ID.
    """
    if policy == "skip" or not members:
        return None
    if policy == "survivor_oldest_contact":
        return min(m.contact_id for m in members)
    best = max(members, key=lambda m: (m.company_last_order or "", m.contact_last_order or "", -m.contact_id))
    return best.contact_id


@dataclass
class SharedEmails:
    """Decisions for every contact whose email is shared, and the one finding per email."""

    withheld: set[int] = field(default_factory=set)        # sent without their email
    forced_opt_out: set[int] = field(default_factory=set)  # keep the email and an opt-out of the group
    findings: list[Finding] = field(default_factory=list)

    def add_group(self, email: str, members: list[Member], policy: str) -> None:
        members = sorted(members, key=lambda m: m.contact_id)
        survivor = choose_survivor(members, policy)
        self.withheld.update(m.contact_id for m in members if m.contact_id != survivor)
        if survivor is not None and any(m.opted_out for m in members):
            self.forced_opt_out.add(survivor)
        who = ", ".join(f"contact:{m.contact_id} (company {m.company_id})" for m in members)
        outcome = (f"contact:{survivor} keeps it, the others are sent without it" if survivor is not None
                   else "all are sent without it")
        self.findings.append(Finding(
            type="identifier_conflict",
            reason=f"email {email} is on {len(members)} KC contacts: {who}; policy {policy}: {outcome}",
            records=tuple(f"contact:{m.contact_id}" for m in members),
            entity="contact", key=str(survivor) if survivor is not None else None,
            detail={"email": email, "policy": policy, "survivor": survivor,
                    "contacts": [{"contact_id": m.contact_id, "company_id": m.company_id} for m in members]},
        ))

    def email_for(self, contact_id: int, email: str | None, valid: bool | None = None) -> str | None:
        """The email this contact is sent with (None: withheld or not one Ometria accepts).
        ``valid``: whether ``email_key(email)`` is set, when the caller knows it already."""
        if contact_id in self.withheld or not email:
            return None
        if valid is None:
            valid = email_key(email) is not None
        return email.strip() if valid else None


# -- the rule ---------------------------------------------------------------------------------


def _none_if_blank(text: str) -> str | None:
    text = text.strip()
    return text or None


@dataclass(frozen=True, slots=True)
class ConsentTimes:
    """KC keeps no consent times: ``kc_at`` is when khaosync first saw the value behind the
    contact's decision (``khaosync.stages.consent``); ``ometria_opt_out_at`` Ometria's newest
    opt-out for the contact or its email, if any."""

    kc_at: datetime | None = None
    ometria_opt_out_at: datetime | None = None
    undated_at: datetime | None = None  # for a value there since the first pull: KC's own last change of the company


def map_contact(company: Company, contact: KcContact, version: int, mapping: Mapping,
                shared: SharedEmails, times: ConsentTimes | None = None) -> Outcome | None:
    """One KC contact -> an Ometria contact (None: not sent, by the ``inactive: skip`` rule)."""
    rules = mapping.contacts
    if contact.inactive and rules.inactive == "skip":
        return None
    cid = str(contact.contact_id)
    outcome = Outcome("contact", cid, None, [("company", company.key, version)])
    records = (f"contact:{cid}",)
    optin, _unknown = consent_for(company.mailing_status, contact.email_subscribe, mapping.consent)
    if contact.contact_id in shared.forced_opt_out:
        optin = MarketingOptin.OPTED_OUT
    times = times or ConsentTimes()
    out_at = times.ometria_opt_out_at
    if optin == MarketingOptin.OPTED_IN and out_at is not None and (times.kc_at is None or out_at > times.kc_at):
        optin = None  # never copy a KC opt-in over a newer Ometria opt-out (the consent flow writes it to KC)
    # The time the decision was first seen, never "now" (Ometria's default when none is sent).
    stamp = (times.kc_at or times.undated_at) if optin is not None else None
    if optin == MarketingOptin.OPTED_OUT and out_at is not None and (stamp is None or out_at < stamp):
        stamp = out_at  # KC's opt-out came from Ometria's (the consent flow wrote it): dated when the person said no
    email = shared.email_for(contact.contact_id, contact.email)
    raw_email = contact.email.strip()
    if raw_email and email_key(raw_email) is None:
        if rules.invalid_email == "hold":
            outcome.held_because(f"email not accepted by Ometria: {raw_email!r}")
            outcome.findings.append(Finding("malformed_record", f"contact {cid}: email {raw_email!r} is not one "
                                            "Ometria accepts; the contact is held (contacts.invalid_email: hold)",
                                            records, "contact", cid))
        elif kc_is_email(raw_email):
            # KC's own check passed, so pull raised nothing: say why the email is left out.
            outcome.findings.append(Finding("malformed_record", f"contact {cid}: email {raw_email!r} is not one "
                                            "Ometria accepts; the contact is sent without it", records, "contact", cid))
    properties = {target: company.additional[source].strip() for source, target in rules.properties.items()
                  if company.additional.get(source, "").strip()}
    try:
        outcome.record = Contact(
            collection=mapping.identity.collection,
            id=cid,
            customer_id=customer_id_of(mapping, company.company_id, contact.contact_id),
            email=email,
            firstname=_none_if_blank(contact.forename),
            lastname=_none_if_blank(contact.surname),
            prefix=_none_if_blank(contact.title),
            date_of_birth=contact.dob,
            phone_number=phone_e164(contact.mobile, rules.phone_country_code) if contact.mobile else None,
            country_id=_country(company.addresses) if rules.country_from == "invoice_address" else None,
            timestamp_acquired=company.date_created,
            marketing_optin=optin,
            timestamp_subscribed=stamp if optin == MarketingOptin.OPTED_IN else None,
            timestamp_unsubscribed=stamp if optin == MarketingOptin.OPTED_OUT else None,
            properties=dict(sorted(properties.items())) or None,
        )
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        outcome.held_because(f"not a valid Ometria contact: {reason}")
        outcome.findings.append(Finding("malformed_record", f"contact {cid}: cannot be mapped: {reason}",
                                        records, "contact", cid))
    return outcome


def map_company(company: Company, version: int, mapping: Mapping, shared: SharedEmails,
                times: dict[int, ConsentTimes] | None = None) -> tuple[list[Outcome], list[Finding]]:
    """Every contact of a company, and the company-level findings (an unknown MAILING_STATUS)."""
    findings: list[Finding] = []
    status = company.mailing_status
    if status is not None and status not in mapping.consent.mailing_status:
        listed = ", ".join(str(k) for k in sorted(mapping.consent.mailing_status))
        findings.append(Finding(
            "consent_gap",
            f"company {company.key}: MAILING_STATUS {status} is not in the mapping (consent.mailing_status lists "
            f"{listed}); consent is not sent for its contacts (an opt-out of their own still is)",
            (f"company:{company.key}",), "company", company.key, {"mailing_status": status}))
    times = times or {}
    outcomes = [o for o in (map_contact(company, c, version, mapping, shared, times.get(c.contact_id))
                            for c in company.contacts) if o]
    return outcomes, findings


def member_opted_out(mailing_status: int | None, email_subscribe: bool | None, rules: Consent) -> bool:
    return consent_for(mailing_status, email_subscribe, rules)[0] == MarketingOptin.OPTED_OUT

