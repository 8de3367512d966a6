"""Consent gaps: opted out on one side and opted in on the other (``--live``).

Consent is the one field that flows both ways. People unsubscribe in Ometria (an email link,
a complaint); KC keeps saying "opted in" until the change is written back, and its exports
would keep re-opting them in. The other way round, KC may hold an opt-out that Ometria's
contact does not show.

The ERP's decision per contact follows the mapping's consent rules exactly as ``map`` applies
them (an opt-out on the company or the contact wins; an opt-in only from the contact's own
EMAILSUBSCRIBE, or the company's if the mapping says so). Ometria's side: the email is in
``GET /unsubscribes`` (made in Ometria), or our contact in Ometria says
``EXPLICITLY_OPTEDOUT`` / ``EXPLICITLY_OPTEDIN``.

Which side is newer, when known: KC exposes no consent timestamps, only the company's
``LAST_UPDATED``; Ometria dates unsubscribes. ``newer`` is ``ometria`` when Ometria's date is
after the company's last change, ``erp`` when the company changed after it (which may or may
not have been its consent), ``unknown`` otherwise.
"""

from __future__ import annotations

import json
from typing import Iterator

from khaosync.detectors import Check, DetectorContext, Finding, ref

TYPE = "consent_gap"
OPTED_IN = "EXPLICITLY_OPTEDIN"
OPTED_OUT = "EXPLICITLY_OPTEDOUT"
_DEFAULT_STATUS = {1: "opt_in", 2: "opt_in", 3: "opt_in", 5: "opt_out"}


def erp_decision(ctx: DetectorContext, mailing_status: int | None, email_subscribe: bool | None) -> str | None:
    """``EXPLICITLY_OPTEDIN`` / ``EXPLICITLY_OPTEDOUT`` / None, as map decides it."""
    if ctx.mapping is not None:
        try:
            from khaosync.mapping.contacts import consent_for

            decision, _ = consent_for(mailing_status, email_subscribe, ctx.mapping.consent)
            return None if decision is None else str(getattr(decision, "value", decision))
        except ImportError:  # pragma: no cover - the mapping package ships with khaosync
            pass
    company = _DEFAULT_STATUS.get(mailing_status) if mailing_status is not None else None
    if company == "opt_out" or email_subscribe is False:
        return OPTED_OUT
    return OPTED_IN if email_subscribe is True and mailing_status in (None, *_DEFAULT_STATUS) else None


def _newer(ometria_at: str | None, erp_at: str | None) -> str:
    if not ometria_at or not erp_at:
        return "unknown"
    a, b = ometria_at.replace("Z", "+00:00"), erp_at.replace("Z", "+00:00")
    return "ometria" if a > b else "erp" if b > a else "unknown"


def gaps(ctx: DetectorContext) -> Iterator[Finding]:
    assert ctx.live is not None
    unsubscribed: dict[str, dict] = {}
    for entry in ctx.live.unsubscribes():
        email = str(entry.get("email_address") or "").strip().lower()
        if email and (email not in unsubscribed or str(entry.get("timestamp")) > str(unsubscribed[email].get("timestamp"))):
            unsubscribed[email] = entry
    ctx.live.load("contact")  # our collection, once, so each lookup below is local
    rows = ctx.conn.execute(
        "SELECT s.key, json_extract(s.parsed, '$.mailing_status'), json_extract(s.parsed, '$.last_updated'), "
        "CAST(json_extract(c.value, '$.contact_id') AS TEXT), json_extract(c.value, '$.email'), "
        "json_extract(c.value, '$.email_subscribe') FROM staged_record s, json_each(s.parsed, '$.contacts') c "
        "WHERE s.entity = 'company' AND s.current = 1 AND s.parsed IS NOT NULL "
        "ORDER BY CAST(s.key AS INTEGER), CAST(json_extract(c.value, '$.contact_id') AS INTEGER)")
    for company, status, updated, contact, email, subscribe in rows:
        erp = erp_decision(ctx, status, None if subscribe is None else bool(subscribe))
        if erp is None:
            continue
        key = (email or "").strip().lower()
        theirs = ctx.live.get("contact", contact)
        unsub = unsubscribed.get(key) if key else None
        if unsub is not None:
            ometria, ometria_at, source = OPTED_OUT, unsub.get("timestamp"), "unsubscribed in Ometria"
        elif theirs is not None and theirs.get("marketing_optin") in (OPTED_IN, OPTED_OUT):
            ometria = theirs["marketing_optin"]
            stamp = "timestamp_unsubscribed" if ometria == OPTED_OUT else "timestamp_subscribed"
            ometria_at, source = theirs.get(stamp), "Ometria's contact"
        else:
            continue
        if ometria == erp:
            continue
        newer = _newer(str(ometria_at) if ometria_at else None, updated)
        words = {OPTED_IN: "opted in", OPTED_OUT: "opted out"}
        yield Finding(
            TYPE,
            f"contact {contact} (company {company}, {key or 'no email'}): {words[erp]} in KC, {words[ometria]} in "
            f"Ometria ({source}{', ' + str(ometria_at) if ometria_at else ''}); newer: {newer}"
            + ("; write the unsubscribe back to KC" if ometria == OPTED_OUT else ""),
            (ref("contact", contact),), "contact", contact,
            detail=json.loads(json.dumps({
                "email": key, "erp": erp, "ometria": ometria, "source": source, "ometria_at": ometria_at,
                "erp_updated_at": updated, "newer": newer, "company_id": company,
                "unsubscribe": unsub}, default=str)))


CHECKS = [
    Check("consent.gaps", TYPE, "contact",
          "a KC contact opted in (or out) whose email Ometria lists as unsubscribed, or whose Ometria contact "
          "says the opposite (--live)", gaps, mode="live", scope=frozenset({"contact"})),
]
