"""Reports for people outside the pipeline: the HTML audit report (``html``), CSV tables for
finance (``csv``), and consistent PII masking for reports that are shared (``mask``).

``build_audit`` gathers what a report shows (a month's reconciliation and the open exceptions
by owner and type); ``khaosync.report.html.render`` turns it into one self-contained file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from khaosync.config import Profile
from khaosync.khaos.models import Company
from khaosync.report.mask import Masker, NoMask
from khaosync.stages.reconcile_rules import ReconcileRules
from khaosync.store import StateStore

RECORDS_PER_EXCEPTION_ROW = 50


@dataclass
class Audit:
    """What the audit report shows, already reduced to plain values."""

    reconciliation: dict      # ``Reconciliation.as_dict()``: the same tables as ``reconcile --json``
    exceptions: list[dict]    # open exceptions, one row per owner and type
    masker: Masker
    masked: bool
    profile: str
    sandbox: bool


def known_people(store: StateStore) -> list[tuple[str | None, str | None]]:
    """(email, full name) of every ERP contact and address the store has ever held (every
    version: a company renamed once has two names to mask), and of every contact khaosync made
    or Ometria accepted, so masking knows who is one person."""
    people: list[tuple[str | None, str | None]] = []
    for (parsed,) in store.conn.execute(
            "SELECT parsed FROM staged_record WHERE entity = 'company' AND parsed IS NOT NULL ORDER BY key, version"):
        try:
            company = Company.model_validate_json(parsed)
        except ValueError:
            continue  # a version this khaosync cannot read names nobody it could show
        for c in company.contacts:
            name = " ".join(part for part in (c.forename.strip(), c.surname.strip()) if part) or None
            people.append((c.email.strip() or None, name))
        for a in company.addresses:
            if a.email.strip():
                people.append((a.email.strip(), None))
        if company.web_user.strip():
            people.append((company.web_user.strip(), company.name.strip() or None))
    for table in ("outbound_record", "ledger"):
        for (body,) in store.conn.execute(f"SELECT body FROM {table} WHERE type = 'contact'"):  # noqa: S608
            try:
                doc = json.loads(bytes(body))
            except ValueError:
                continue
            if isinstance(doc, dict):
                name = " ".join(str(doc.get(k) or "").strip() for k in ("firstname", "lastname")).strip()
                email = doc.get("email") if isinstance(doc.get("email"), str) else None
                people.append((email, name or None))
    return people


def masker_for(store: StateStore) -> Masker:
    """The ``--mask-pii`` masker: every person the store knows, one mask each."""
    return Masker(known_people(store))


def _age(first_seen: str, now: datetime) -> str:
    from khaosync.stages.health import age_text

    try:
        then = datetime.fromisoformat(first_seen)
    except ValueError:
        return "?"
    return age_text((now - then).total_seconds() / 3600)


def open_exceptions(store: StateStore, now: datetime | None = None) -> list[dict]:
    """One row per owner and type: how many are open, the oldest, the records, an example reason."""
    now = now or datetime.now(UTC)
    grouped: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in store.exceptions(open_only=True, distinct=True):  # one cause, counted once (issue 14.3)
        grouped[(row.owner, row.type)].append(row)
    out = []
    for (owner, type_), rows in sorted(grouped.items()):
        keys = [key for row in rows for key in row.records]
        shown = ", ".join(keys[:RECORDS_PER_EXCEPTION_ROW])
        if len(keys) > RECORDS_PER_EXCEPTION_ROW:
            shown += f" (+{len(keys) - RECORDS_PER_EXCEPTION_ROW} more)"
        severity = "fail" if any(r.severity == "fail" for r in rows) else rows[0].severity
        out.append({"owner": owner, "type": type_, "severity": severity, "open": len(rows),
                    "oldest": _age(min(r.first_seen for r in rows), now), "records": shown,
                    "reason": rows[0].reason})
    return out


def build_audit(store: StateStore, profile: Profile, month: str, *, live_client: Any = None,
                rules: ReconcileRules | None = None, mask_pii: bool = False, now: datetime | None = None) -> Audit:
    """Reconcile ``month`` and collect the open exceptions, ready for ``html.render``."""
    from khaosync.stages.reconcile import reconcile_month

    result = reconcile_month(store, profile, month, live_client=live_client, rules=rules)
    masker: Masker = Masker(known_people(store)) if mask_pii else NoMask()
    return Audit(reconciliation=result.as_dict(), exceptions=open_exceptions(store, now), masker=masker,
                 masked=mask_pii, profile=profile.name, sandbox=profile.is_sandbox)
