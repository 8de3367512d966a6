"""The consent back-flow's tables (migration 3): reads and writes.

- ``consent_event``: every consent change read from Ometria, once (its unique key), raw kept;
- ``kc_consent_seen``: when khaosync first saw each KC consent value (KC keeps no times);
- ``consent_change`` / ``consent_batch``: planned opt-outs and the ImportCompany journal. A
  batch is written ``journaled`` (its changes too) and committed before it is sent; its answer
  makes it ``confirmed`` (changes ``done`` or ``failed``) or ``failed``.

Functions take the store's connection and write inside the caller's transaction.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable

from khaosync.store import staging


# -- Ometria's consent changes -----------------------------------------------------------------
def add_event(conn: sqlite3.Connection, *, source: str, email: str, contact_id: str, profile_id: str, optin: str,
              type: str, reason: str | None, at: str, raw: Any, run_id: int | None, read_at: str) -> bool:
    """Keep one event; False when it was already kept."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO consent_event(source, email, contact_id, profile_id, optin, type, reason, at, raw,"
        " run_id, read_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (source, email, contact_id, profile_id, optin, type, reason, at,
         json.dumps(raw, sort_keys=True, default=str), run_id, read_at))
    return cur.rowcount == 1


@dataclass(frozen=True)
class Event:
    id: int
    source: str
    email: str
    contact_id: str
    optin: str
    type: str
    at: str  # '' when Ometria gave no time


def latest_events(conn: sqlite3.Connection) -> tuple[dict[str, Event], dict[str, Event]]:
    """The newest event per email (unsubscribes) and per contact id (read-back)."""
    by_email: dict[str, Event] = {}
    by_contact: dict[str, Event] = {}
    for row in conn.execute("SELECT id, source, email, contact_id, optin, type, at FROM consent_event ORDER BY at, id"):
        event = Event(*row)
        if event.source == "unsubscribes" and event.email:
            by_email[event.email] = event
        elif event.source == "contact" and event.contact_id:
            by_contact[event.contact_id] = event
    return by_email, by_contact


def latest_opt_outs(conn: sqlite3.Connection) -> tuple[dict[str, str], dict[str, str]]:
    """The newest dated Ometria opt-out per email and per contact id (UTC ISO)."""
    by_email: dict[str, str] = {}
    by_contact: dict[str, str] = {}
    for email, contact_id, at in conn.execute(
            "SELECT email, contact_id, max(at) FROM consent_event WHERE optin = 'EXPLICITLY_OPTEDOUT' AND at != ''"
            " GROUP BY email, contact_id"):
        if contact_id:
            by_contact[contact_id] = max(at, by_contact.get(contact_id, ""))
        elif email:
            by_email[email] = max(at, by_email.get(email, ""))
    return by_email, by_contact


def add_erased(conn: sqlite3.Connection, contact_id: str, evidence: str, run_id: int | None, now: str) -> bool:
    cur = conn.execute("INSERT OR IGNORE INTO consent_erased(contact_id, evidence, run_id, detected_at)"
                       " VALUES (?,?,?,?)", (contact_id, evidence, run_id, now))
    return cur.rowcount == 1


def erased(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT contact_id, evidence FROM consent_erased"))


# -- KC consent first-seen times -------------------------------------------------------------
def _since_of(conn: sqlite3.Connection, entity: str, key: str, company_key: str, value: str,
              after_version: int, undated: str | None) -> str | None:
    """When the current run of ``value`` began: the seen_at of the earliest company version
    after ``after_version`` from which every version holds it; ``undated`` when that is the
    very first version pull saw (the value was already there, KC gives no time)."""
    versions = staging.history(conn, "company", company_key)
    start = None
    for staged in reversed(versions):
        if staged.version <= after_version or staged.parsed is None:
            break
        if _value_in(staged.parsed, entity, key) != value:
            break
        start = staged
    if start is None:
        return undated
    return undated if start.version == 1 else start.seen_at


def _value_in(parsed: dict, entity: str, key: str) -> str:
    if entity == "company":
        return json.dumps(parsed.get("mailing_status"))
    for contact in parsed.get("contacts") or []:
        if str(contact.get("contact_id")) == key:
            return json.dumps(contact.get("email_subscribe"))
    return json.dumps(None)


def companies_to_observe(conn: sqlite3.Connection) -> list[str]:
    """Current companies whose staged version has not been looked at for consent yet."""
    return [k for (k,) in conn.execute(
        "SELECT s.key FROM staged_record s LEFT JOIN kc_consent_seen k ON k.entity = 'company' AND k.key = s.key"
        " WHERE s.entity = 'company' AND s.current = 1 AND s.parsed IS NOT NULL"
        " AND (k.version IS NULL OR k.version != s.version)")]


def observe_kc_consent(conn: sqlite3.Connection, company_key: str, version: int, parsed: dict,
                       undated: str | None) -> dict[tuple[str, str], str | None]:
    """Record any KC consent value of this company that changed since last seen; returns
    ``{(entity, key): since}`` for the company and each of its contacts."""
    wanted = [("company", company_key, json.dumps(parsed.get("mailing_status")))]
    for contact in parsed.get("contacts") or []:
        wanted.append(("contact", str(contact.get("contact_id")), json.dumps(contact.get("email_subscribe"))))
    out: dict[tuple[str, str], str | None] = {}
    for entity, key, value in wanted:
        row = conn.execute("SELECT value, since, version FROM kc_consent_seen WHERE entity = ? AND key = ?",
                           (entity, key)).fetchone()
        if row is not None and row[0] == value:
            out[(entity, key)] = row[1]
            if entity == "company" and row[2] != version:  # the company row marks the version looked at
                conn.execute("UPDATE kc_consent_seen SET version = ? WHERE entity = 'company' AND key = ?",
                             (version, key))
            continue
        since = _since_of(conn, entity, key, company_key, value, row[2] if row else 0, undated if row is None else None)
        if row is not None and since is None:  # a change seen in the very first version: cannot be; be safe
            since = staging.current(conn, "company", company_key).seen_at  # type: ignore[union-attr]
        conn.execute(
            "INSERT INTO kc_consent_seen(entity, key, value, since, version) VALUES (?,?,?,?,?)"
            " ON CONFLICT(entity, key) DO UPDATE SET value = excluded.value, since = excluded.since,"
            " version = excluded.version", (entity, key, value, since, version))
        out[(entity, key)] = since
    return out


# -- planned changes and the journal ----------------------------------------------------------
@dataclass(frozen=True)
class Change:
    id: int
    contact_id: str
    company_id: str
    urn: str
    email: str
    mailing_status: int | None
    event_id: int
    state: str
    batch_id: int | None
    attempts: int


_CHANGE = "id, contact_id, company_id, urn, email, mailing_status, event_id, state, batch_id, attempts"


def changes(conn: sqlite3.Connection, states: Iterable[str]) -> list[Change]:
    wanted = list(states)
    marks = ",".join("?" * len(wanted))
    return [Change(*r) for r in conn.execute(
        f"SELECT {_CHANGE} FROM consent_change WHERE state IN ({marks}) ORDER BY CAST(company_id AS INTEGER), "
        "CAST(contact_id AS INTEGER), event_id", wanted)]


def change_states(conn: sqlite3.Connection) -> dict[tuple[str, int], str]:
    return {(c, e): s for c, e, s in conn.execute("SELECT contact_id, event_id, state FROM consent_change")}


def plan_change(conn: sqlite3.Connection, *, contact_id: str, company_id: str, urn: str, email: str,
                mailing_status: int | None, event_id: int, now: str) -> None:
    """Plan (or re-plan, after a failure) one opt-out; one that is journaled or done stays so."""
    conn.execute(
        "INSERT INTO consent_change(contact_id, company_id, urn, email, mailing_status, event_id, state, planned_at)"
        " VALUES (?,?,?,?,?,?, 'planned', ?) ON CONFLICT(contact_id, event_id) DO UPDATE SET"
        " urn = excluded.urn, email = excluded.email, mailing_status = excluded.mailing_status,"
        " state = 'planned', planned_at = excluded.planned_at"
        " WHERE consent_change.state IN ('planned', 'failed', 'superseded')",
        (contact_id, company_id, urn, email, mailing_status, event_id, now))


def supersede_unplanned(conn: sqlite3.Connection, keep: set[tuple[str, int]]) -> int:
    """Planned changes the latest diff no longer plans (KC caught up, a conflict) are superseded."""
    n = 0
    for id_, contact_id, event_id in conn.execute(
            "SELECT id, contact_id, event_id FROM consent_change WHERE state IN ('planned', 'failed')").fetchall():
        if (contact_id, event_id) not in keep:
            conn.execute("UPDATE consent_change SET state = 'superseded' WHERE id = ?", (id_,))
            n += 1
    return n


def journal_batch(conn: sqlite3.Connection, document: str, urns: list[str], change_ids: list[int], now: str) -> int:
    batch_id = int(conn.execute(
        "INSERT INTO consent_batch(document, urns, state, created_at) VALUES (?, ?, 'journaled', ?)",
        (document, json.dumps(urns), now)).lastrowid)
    conn.executemany("UPDATE consent_change SET state = 'journaled', batch_id = ?, attempts = attempts + 1"
                     " WHERE id = ?", [(batch_id, i) for i in change_ids])
    return batch_id


@dataclass(frozen=True)
class Batch:
    id: int
    document: str
    urns: list[str]


def journaled_batches(conn: sqlite3.Connection) -> list[Batch]:
    return [Batch(i, d, json.loads(u)) for i, d, u in
            conn.execute("SELECT id, document, urns FROM consent_batch WHERE state = 'journaled' ORDER BY id")]


def answer_batch(conn: sqlite3.Connection, batch_id: int, confirmed: list[str], now: str, *,
                 unconfirmed_error: str) -> tuple[int, int]:
    """KC answered: changes of confirmed URNs are done, the others failed (re-planned by the next diff)."""
    conn.execute("UPDATE consent_batch SET state = 'confirmed', confirmed = ?, answered_at = ? WHERE id = ?",
                 (json.dumps(sorted(set(confirmed))), now, batch_id))
    done = failed = 0
    for id_, urn in conn.execute("SELECT id, urn FROM consent_change WHERE batch_id = ? AND state = 'journaled'",
                                 (batch_id,)).fetchall():
        if urn in confirmed:
            conn.execute("UPDATE consent_change SET state = 'done', done_at = ?, error = NULL WHERE id = ?", (now, id_))
            done += 1
        else:
            conn.execute("UPDATE consent_change SET state = 'failed', error = ? WHERE id = ?",
                         (unconfirmed_error, id_))
            failed += 1
    return done, failed


def fail_batch(conn: sqlite3.Connection, batch_id: int, error: str, now: str, *, state: str = "planned") -> None:
    """The batch was not applied: its changes are ``planned`` again (sent by this push) or
    ``failed`` (KC refused them: planned again by the next diff)."""
    conn.execute("UPDATE consent_batch SET state = 'failed', error = ?, answered_at = ? WHERE id = ?",
                 (error, now, batch_id))
    conn.execute("UPDATE consent_change SET state = ?, error = ? WHERE batch_id = ? AND state = 'journaled'",
                 (state, error, batch_id))
