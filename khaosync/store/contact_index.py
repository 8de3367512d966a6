"""The contacts ``map`` looks customers up in, kept in step with staging instead of rebuilt.

KC keeps contacts inside a company's addresses and an order names its contact by id, so map
needs, for every contact id: its company, the fields an order carries (email, names) and what
the shared-email rule weighs (email key, consent fields, inactive). Extracting that from every
staged company on every run grew with the customer base; ``contact_index`` holds it on disk:

- one row per (contact, company that lists it); where two companies list one contact id (KC
  should never export that), the company with the lowest key is the contact's, as it always
  was (``winner``);
- rebuilt whole by :func:`rebuild`; :func:`refresh` replaces only the rows of the companies
  given (map passes those staged since the index's mark, ``map_mark`` entity
  ``contact_index``), so a nightly run costs the night's changed companies;
- ``email_key`` is computed by the SQL function ``khaosync_email_key``, which the caller
  registers on the connection (``mapping.contacts.email_key``: the store knows no rules).

Writes happen inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable

VERSION = "contact-index-1"
"""The extraction below: another one means a rebuild (kept in the mark's ``mapping`` column)."""

_EXTRACT = """INSERT OR IGNORE INTO contact_index(contact_id, company_key, company_id, company_version, email,
        email_key, firstname, lastname, inactive, mailing_status, email_subscribe)
    SELECT json_extract(ct.value, '$.contact_id'), s.key, CAST(s.key AS INTEGER), s.version,
           json_extract(ct.value, '$.email'), khaosync_email_key(json_extract(ct.value, '$.email')),
           json_extract(ct.value, '$.forename'), json_extract(ct.value, '$.surname'),
           coalesce(json_extract(ct.value, '$.inactive'), 0), json_extract(s.parsed, '$.mailing_status'),
           json_extract(ct.value, '$.email_subscribe')
    FROM staged_record s, json_each(s.parsed, '$.contacts') ct
    WHERE s.entity = 'company' AND s.current = 1 AND s.parsed IS NOT NULL
      AND json_extract(ct.value, '$.contact_id') IS NOT NULL"""

# The row that is the contact's: its company has the lowest key among those that list it.
_WINNER = ("company_key = (SELECT min(d.company_key) FROM contact_index d WHERE d.contact_id = contact_index.contact_id)")


def _chunks(items: list, size: int = 500) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def rebuild(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM contact_index")
    conn.execute(_EXTRACT)


def refresh(conn: sqlite3.Connection, companies: list[str]) -> None:
    """The rows of these companies (staged keys) as their current staged versions say."""
    for part in _chunks(sorted(set(companies))):
        marks = ",".join("?" * len(part))
        conn.execute(f"DELETE FROM contact_index WHERE company_key IN ({marks})", part)
        conn.execute(_EXTRACT + f" AND s.key IN ({marks})", part)


def customers(conn: sqlite3.Connection, contact_ids: Iterable[int]) -> dict[int, tuple]:
    """contact id -> (company_id, company_version, email, email is valid, firstname, lastname, inactive)."""
    found: dict[int, tuple] = {}
    for part in _chunks(sorted(set(contact_ids))):
        for row in conn.execute(
                "SELECT contact_id, company_id, company_version, email, email_key IS NOT NULL, firstname, lastname,"
                f" inactive FROM contact_index WHERE contact_id IN ({','.join('?' * len(part))})"
                " ORDER BY contact_id, company_key", part):
            found.setdefault(row[0], row[1:])
    return found


def companies_of(conn: sqlite3.Connection, contact_ids: Iterable[int]) -> set[int]:
    """The companies these contacts belong to (their winning rows)."""
    return {c[0] for c in customers(conn, contact_ids).values()}


def shared(conn: sqlite3.Connection, *, inactive_sent: bool) -> list[tuple]:
    """(email_key, contact_id, company_id, mailing_status, email_subscribe) of every sent contact
    whose email key another sent contact has too, by email key then contact id.

    Candidates come from the email index (any two rows with the key); the winners' rows of those
    keys are then counted again, so a contact listed twice never makes a group on its own."""
    sent = "" if inactive_sent else " AND inactive = 0"
    keys = [k for (k,) in conn.execute(
        f"SELECT email_key FROM contact_index WHERE email_key IS NOT NULL{sent}"
        " GROUP BY email_key HAVING count(DISTINCT contact_id) > 1")]
    rows: list[tuple] = []
    for part in _chunks(keys):
        rows += conn.execute(
            "SELECT email_key, contact_id, company_id, mailing_status, email_subscribe FROM contact_index"
            f" WHERE email_key IN ({','.join('?' * len(part))}){sent} AND {_WINNER}", part).fetchall()
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[0]] = counts.get(row[0], 0) + 1
    return sorted((r for r in rows if counts[r[0]] > 1), key=lambda r: (r[0], r[1]))
