"""Identifier conflicts: one email, several people.

KC matches customers by URN, address and name, never by email, so one email on several
contacts (on one company or on several) is normal there. Ometria refuses to let two contacts
share an identifier and does it silently: the second contact's email just never lands.

- ``shared_email`` (always): an email held by more than one KC contact, or by a company's
  web login and a contact of another company. Compared trimmed and lower-cased, as Ometria
  merges profiles. One finding per email, naming every holder.
- ``ometria_email_elsewhere`` (``--live``): an email we send on a contact that Ometria already
  holds under another contact id (another collection, a web sign-up, an earlier integration):
  Ometria would ignore ours.
"""

from __future__ import annotations

import json
from itertools import groupby
from typing import Iterator

from khaosync.detectors import Check, DetectorContext, Finding, Narrowed, ref
from khaosync.detectors.scratch import fill
from khaosync.store import map_state

TYPE = "identifier_conflict"

_HOLDERS = """
WITH contact_email AS (
    SELECT lower(trim(json_extract(c.value, '$.email'))) AS email, s.key AS company,
           CAST(json_extract(c.value, '$.contact_id') AS TEXT) AS contact
    FROM staged_record s, json_each(s.parsed, '$.contacts') c
    WHERE s.entity = 'company' AND s.current = 1 AND s.parsed IS NOT NULL
), web_login AS (
    SELECT lower(trim(json_extract(s.parsed, '$.web_user'))) AS email, s.key AS company, NULL AS contact
    FROM staged_record s
    WHERE s.entity = 'company' AND s.current = 1 AND s.parsed IS NOT NULL
), holder AS (
    SELECT email, company, contact FROM contact_email WHERE email IS NOT NULL AND email != ''
    UNION ALL
    -- a web login counts only when no contact of its own company carries the email
    SELECT w.email, w.company, w.contact FROM web_login w
    WHERE w.email IS NOT NULL AND w.email != '' AND instr(w.email, '@') > 0
      AND NOT EXISTS (SELECT 1 FROM contact_email c WHERE c.email = w.email AND c.company = w.company)
)
SELECT email, company, contact FROM holder
WHERE email IN (SELECT email FROM holder GROUP BY email HAVING count(*) > 1)
ORDER BY email, CAST(company AS INTEGER), company, CAST(contact AS INTEGER)
"""


def shared_emails(ctx: DetectorContext, rows=None, emails: set[str] | None = None) -> Iterator[Finding]:
    """Every shared email; with ``rows`` (holders of some companies) and ``emails``, those of
    ``emails`` only (the rows hold every holder of those)."""
    rows = ctx.conn.execute(_HOLDERS) if rows is None else rows
    for email, group in groupby(rows, key=lambda r: r[0]):
        holders = list(group)
        if emails is not None and email not in emails:
            continue  # some of its holders may be among the companies not read
        records = tuple(ref("contact", contact) if contact is not None else ref("company", company)
                        for _, company, contact in holders)
        who = ", ".join(f"contact {contact} (company {company})" if contact is not None
                        else f"web login of company {company}" for _, company, contact in holders)
        first_contact = next((contact for _, _, contact in holders if contact is not None), None)
        yield Finding(
            TYPE,
            f"email {email} is on {len(holders)} KC holders: {who}; Ometria keeps it on one contact and silently "
            "ignores it on the others (contacts.shared_email decides who keeps it)",
            records, "contact", first_contact,
            detail={"email": email, "holders": [{"company_id": company, "contact_id": contact}
                                                for _, company, contact in holders]})


_AT_MOST = 500  # more emails than this changed: one whole pass is as cheap as the search
_EMAILS_OF = """
    SELECT lower(trim(json_extract(c.value, '$.email'))) FROM staged_record s, json_each(s.parsed, '$.contacts') c
    WHERE s.entity = 'company' AND s.key = ? AND s.parsed IS NOT NULL
    UNION SELECT lower(trim(json_extract(s.parsed, '$.web_user'))) FROM staged_record s
    WHERE s.entity = 'company' AND s.key = ? AND s.parsed IS NOT NULL"""


def _holders(conn, emails: set[str]) -> set[str]:
    """The staged companies whose contacts or web login carry one of ``emails`` (compared as the
    check compares them): through the contact index map keeps and an index on the web login."""
    found: set[str] = set()
    ordered = sorted(emails)
    for start in range(0, len(ordered), 500):
        part = ordered[start:start + 500]
        marks = ",".join("?" * len(part))
        found.update(k for (k,) in conn.execute(
            f"SELECT company_key FROM contact_index INDEXED BY contact_index_loose WHERE lower(trim(email)) IN ({marks})",
            part))
        found.update(k for (k,) in conn.execute(
            "SELECT key FROM staged_record INDEXED BY staged_company_login WHERE entity = 'company' AND current = 1"
            f" AND lower(trim(json_extract(parsed, '$.web_user'))) IN ({marks})", part))
    return found


def _index_is_current(conn) -> bool:
    """The contact index holds every company staged so far (sync's map refreshed it)."""
    mark = map_state.get_mark(conn, "contact_index")
    latest = conn.execute("SELECT coalesce(max(run_id), 0) FROM staged_record WHERE entity = 'company'").fetchone()[0]
    return mark is not None and mark.staged_run >= latest


def shared_emails_nightly(ctx: DetectorContext, changed: dict[str, set[str]]) -> Iterator[Finding] | Narrowed | None:
    """Sync: only the emails a company staged since the last sync holds or held (any version)
    can have become, or stopped being, shared. Their holders are found through indexes (the
    contact index map keeps in step with staging, and the companies' web logins), and only those
    emails' groups are answered; their old findings close when unseen, the rest are carried.
    The whole check when contacts were mapped whole, too much changed, or the contact index is
    behind staging (no map since the last pull)."""
    companies = changed.get("company")
    if companies is None or not _index_is_current(ctx.conn):
        return shared_emails(ctx)
    if not companies:
        return None
    conn = ctx.conn
    emails: set[str] = set()
    for key in sorted(companies):
        emails.update(e for (e,) in conn.execute(_EMAILS_OF, (key, key)) if e)
    if not emails:
        return Narrowed([], set())
    if len(emails) > _AT_MOST:
        return shared_emails(ctx)
    closes: set[str] = set()
    for key, detail in conn.execute("SELECT record_key, detail FROM exception WHERE resolved_at IS NULL "
                                    "AND type = ? AND entity = 'contact'", (TYPE,)):
        if (json.loads(detail or "{}") or {}).get("email") in emails:
            if key is None:
                return shared_emails(ctx)  # a finding only a whole pass can close
            closes.add(key)
    holders = set(companies) | _holders(conn, emails)
    fill(conn, "det_holder_company", ("key",), ((k,) for k in sorted(holders)), index="key")
    only = "AND s.key IN (SELECT key FROM temp.det_holder_company)"
    rows = conn.execute(_HOLDERS.replace("WHERE s.entity = 'company' AND s.current = 1 AND s.parsed IS NOT NULL",
                                         "WHERE s.entity = 'company' AND s.current = 1 AND s.parsed IS NOT NULL "
                                         + only)).fetchall()
    conn.execute("DROP TABLE temp.det_holder_company")
    found = list(shared_emails(ctx, rows, emails))
    return Narrowed(found, closes | {f.key for f in found if f.key is not None})


def ometria_email_elsewhere(ctx: DetectorContext) -> Iterator[Finding]:
    assert ctx.live is not None
    collection = ctx.collection
    fill(ctx.conn, "det_ometria_email", ("email", "collection", "id", "doc"),
         ((str(doc["email"]).strip().lower(), coll, id_, _summary(doc))
          for coll, id_, doc in ctx.live.all_contacts() if isinstance(doc.get("email"), str) and doc["email"].strip()),
         index="email")
    rows = ctx.conn.execute(
        """SELECT o.id, o.email, e.collection, e.id, e.doc FROM (
               SELECT id, lower(trim(json_extract(CAST(body AS TEXT), '$.email'))) AS email
               FROM outbound_record WHERE type = 'contact' AND state = 'ready') o
           JOIN temp.det_ometria_email e ON e.email = o.email
           WHERE NOT (e.collection = ? AND e.id = o.id)
           ORDER BY o.id, e.collection, e.id""", (collection,))
    for ours, email, coll, theirs, doc in rows:
        yield Finding(
            TYPE,
            f"contact {ours}: Ometria already holds {email} on contact {theirs} of collection {coll!r}; our email "
            "would be silently ignored",
            (ref("contact", ours), ref("ometria_contact", f"{coll}/{theirs}")), "ometria_contact", ours,
            detail={"email": email, "ometria": {"collection": coll, "id": theirs, "record": json.loads(doc)}})


def _summary(doc: dict) -> str:
    keep = ("@collection", "id", "email", "customer_id", "firstname", "lastname", "marketing_optin")
    return json.dumps({k: str(doc[k]) for k in keep if k in doc and doc[k] is not None}, sort_keys=True)


CHECKS = [
    Check("identifier_conflicts.shared_email", TYPE, "contact",
          "one email (trimmed, lower-cased) on more than one KC contact or company web login", shared_emails,
          scope=frozenset({"contact"}), nightly=shared_emails_nightly),
    Check("identifier_conflicts.ometria_email_elsewhere", TYPE, "ometria_contact",
          "an email we send that Ometria holds on another contact id (--live)", ometria_email_elsewhere,
          mode="live", scope=frozenset({"contact"})),
]
