"""Plans, the push journal, the ledger and the failed-record index: reads and writes.

The tables are migration 2's (``khaosync/store/schema.py``). Functions take the store's
connection and write nothing outside the caller's transaction; the push stage decides what
goes into one transaction (docs/push.md says why: a batch's answer, its ledger rows and its
failed records commit together, or not at all).

- ``push_batch`` (the journal): a batch is written ``journaled`` before it is sent, then
  ``accepted`` (Ometria answered; counts and request id) or ``failed`` (no usable answer; the
  error). A batch still ``journaled`` when a run starts was left by a killed run: it is
  closed as ``failed`` with ``ABANDONED`` and its records, not being in the ledger, are sent again.
- ``ledger``: per record, the last version Ometria accepted (hash, body, request id, time) and
  ``verified_at`` once read back equal. It only ever holds what Ometria holds.
- ``failed_record``: what Ometria refused, at once or later; a record leaves it when accepted.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Iterable

from khaosync.store.plans import default_plan_id

ABANDONED = "abandoned: the run stopped before the answer was recorded; its records are sent again"


@dataclass(frozen=True)
class PlanRow:
    id: str
    created_at: str
    status: str
    scope: list[str]
    counts: dict
    pruned_at: str | None = None  # its bodies are gone (plans.retention_days): it cannot be sent


@dataclass(frozen=True)
class PlanRecord:
    type: str
    id: str
    change: str
    content_hash: str
    body: bytes


@dataclass(frozen=True)
class LedgerRow:
    type: str
    id: str
    content_hash: str
    batch_id: int | None
    request_id: str | None
    accepted_at: str
    verified_at: str | None


@dataclass(frozen=True)
class JournaledBatch:
    id: int
    plan_id: str | None
    type: str
    records: list[tuple[str, str]]


# -- plans ---------------------------------------------------------------------------------------
def find_plan(conn: sqlite3.Connection, plan_id: str | None) -> PlanRow | None:
    """The plan ``plan_id``, or (None) the newest open full review (``plans.default_plan_id``:
    a plan a ``diff --key`` narrowed is sent only when named)."""
    sql = "SELECT id, created_at, status, scope, counts, pruned_at FROM plan"
    if plan_id is None:
        plan_id = default_plan_id(conn)
        if plan_id is None:
            return None
    row = conn.execute(sql + " WHERE id = ?", (plan_id,)).fetchone()
    if row is None:
        return None
    return PlanRow(row[0], row[1], row[2], _json_list(row[3]), _json_dict(row[4]), row[5])


def plan_summary(conn: sqlite3.Connection, plan_id: str) -> dict[str, dict[str, int]]:
    """{type: {change: n}} of the plan's records."""
    out: dict[str, dict[str, int]] = {}
    for type_, change, n in conn.execute(
        "SELECT type, change, count(*) FROM plan_record WHERE plan_id = ? GROUP BY type, change", (plan_id,)
    ):
        out.setdefault(type_, {})[change] = n
    return out


def stale_records(conn: sqlite3.Connection, plan_id: str, limit: int = 10) -> tuple[int, list[str]]:
    """New and changed plan records whose outbound record is gone, held, or has another hash
    now: (how many, the first ``limit`` of them as ``type:id``)."""
    where = """FROM plan_record p LEFT JOIN outbound_record o ON o.type = p.type AND o.id = p.id
               WHERE p.plan_id = ? AND p.change IN ('new', 'changed')
                 AND (o.id IS NULL OR o.content_hash != p.content_hash OR o.state != 'ready')"""
    count = conn.execute("SELECT count(*) " + where, (plan_id,)).fetchone()[0]
    first = [f"{t}:{i}" for t, i in conn.execute(f"SELECT p.type, p.id {where} ORDER BY p.type, p.id LIMIT ?",
                                                  (plan_id, limit))]
    return count, first


_PENDING = """FROM plan_record p
              LEFT JOIN ledger l ON l.type = p.type AND l.id = p.id AND l.content_hash = p.content_hash
              WHERE p.plan_id = ? AND p.type = ? AND l.id IS NULL"""


def pending_count(conn: sqlite3.Connection, plan_id: str, type_: str) -> int:
    """Plan records of ``type_`` Ometria has not accepted in this version (not in the ledger)."""
    return conn.execute("SELECT count(*) " + _PENDING, (plan_id, type_)).fetchone()[0]


def pending_page(conn: sqlite3.Connection, plan_id: str, type_: str, after_id: str | None,
                 limit: int) -> list[PlanRecord]:
    """The next ``limit`` pending records after ``after_id`` (keyset paging: bounded memory)."""
    sql = ("SELECT p.type, p.id, p.change, p.content_hash, b.body "
           + _PENDING.replace("WHERE", "JOIN plan_body b ON b.content_hash = p.content_hash WHERE", 1))
    args: list = [plan_id, type_]
    if after_id is not None:
        sql += " AND p.id > ?"
        args.append(after_id)
    sql += " ORDER BY p.id LIMIT ?"
    args.append(limit)
    return [PlanRecord(t, i, c, h, bytes(b)) for t, i, c, h, b in conn.execute(sql, args)]


def unsettled_count(conn: sqlite3.Connection, plan_id: str) -> int:
    """Plan records neither accepted (ledger) nor known bad (failed records), in the plan's version."""
    return conn.execute(
        """SELECT count(*) FROM plan_record p
           LEFT JOIN ledger l ON l.type = p.type AND l.id = p.id AND l.content_hash = p.content_hash
           LEFT JOIN failed_record f ON f.type = p.type AND f.id = p.id AND f.content_hash = p.content_hash
           WHERE p.plan_id = ? AND l.id IS NULL AND f.id IS NULL""",
        (plan_id,),
    ).fetchone()[0]


def set_plan_status(conn: sqlite3.Connection, plan_id: str, status: str) -> None:
    conn.execute("UPDATE plan SET status = ? WHERE id = ?", (status, plan_id))


def plan_ledger_ids(conn: sqlite3.Connection, plan_id: str, type_: str, limit: int | None) -> list[tuple[str, str]]:
    """(id, content_hash) of the plan's records the ledger holds in the plan's version, not yet
    verified first, then in content-hash order: a deterministic, well-spread sample."""
    sql = """SELECT l.id, l.content_hash FROM plan_record p
             JOIN ledger l ON l.type = p.type AND l.id = p.id AND l.content_hash = p.content_hash
             WHERE p.plan_id = ? AND p.type = ?
             ORDER BY l.verified_at IS NOT NULL, l.content_hash"""
    args: list = [plan_id, type_]
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return [(i, h) for i, h in conn.execute(sql, args)]


# -- the journal ---------------------------------------------------------------------------------
def journal_batch(conn: sqlite3.Connection, plan_id: str | None, type_: str, records: list[tuple[str, str]],
                  now: str) -> int:
    """Write a batch ``journaled`` (call, and commit, before sending it). Returns its id."""
    cur = conn.execute(
        "INSERT INTO push_batch(plan_id, type, records, state, created_at) VALUES (?, ?, ?, 'journaled', ?)",
        (plan_id, type_, json.dumps([[i, h] for i, h in records]), now),
    )
    return int(cur.lastrowid)


def mark_batch_accepted(conn: sqlite3.Connection, batch_id: int, request_id: str | None, accepted: int,
                        rejected: int, now: str) -> None:
    conn.execute(
        "UPDATE push_batch SET state = 'accepted', request_id = ?, accepted = ?, rejected = ?, answered_at = ? "
        "WHERE id = ?",
        (request_id, accepted, rejected, now, batch_id),
    )


def mark_batch_failed(conn: sqlite3.Connection, batch_id: int, error: str, now: str) -> None:
    conn.execute("UPDATE push_batch SET state = 'failed', error = ?, answered_at = ? WHERE id = ?",
                 (error, now, batch_id))


def abandon_journaled(conn: sqlite3.Connection, now: str) -> list[JournaledBatch]:
    """Close the batches a killed run left ``journaled``: they may or may not have reached
    Ometria, and their records are not in the ledger, so they go again with this run."""
    rows = conn.execute("SELECT id, plan_id, type, records FROM push_batch WHERE state = 'journaled' ORDER BY id")
    batches = [JournaledBatch(i, p, t, [(r[0], r[1]) for r in json.loads(recs)]) for i, p, t, recs in rows]
    for batch in batches:
        mark_batch_failed(conn, batch.id, ABANDONED, now)
    return batches


def batch_states(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT state, count(*) FROM push_batch GROUP BY state").fetchall())


# -- the ledger ----------------------------------------------------------------------------------
def put_ledger(conn: sqlite3.Connection, type_: str, id_: str, content_hash: str, body: bytes, batch_id: int | None,
               request_id: str | None, now: str) -> None:
    """Ometria accepted this version: it replaces the record's row (and is not verified yet).

    The entry keeps no body of its own when the outbound record holds the same bytes (the
    ``ledger`` view fills it in; outbound_record's triggers copy it over before it changes)."""
    conn.execute(
        """INSERT INTO ledger_entry(type, id, content_hash, body, batch_id, request_id, accepted_at, verified_at)
           VALUES (?, ?, ?, nullif(?, (SELECT o.body FROM outbound_record o WHERE o.type = ? AND o.id = ?)), ?, ?, ?, NULL)
           ON CONFLICT(type, id) DO UPDATE SET content_hash = excluded.content_hash, body = excluded.body,
               batch_id = excluded.batch_id, request_id = excluded.request_id, accepted_at = excluded.accepted_at,
               verified_at = NULL""",
        (type_, id_, content_hash, body, type_, id_, batch_id, request_id, now),
    )


def ledger_row(conn: sqlite3.Connection, type_: str, id_: str) -> LedgerRow | None:
    row = conn.execute(
        "SELECT type, id, content_hash, batch_id, request_id, accepted_at, verified_at FROM ledger "
        "WHERE type = ? AND id = ?", (type_, id_)).fetchone()
    return LedgerRow(*row) if row else None


def ledger_body(conn: sqlite3.Connection, type_: str, id_: str) -> bytes | None:
    row = conn.execute("SELECT body FROM ledger WHERE type = ? AND id = ?", (type_, id_)).fetchone()
    return bytes(row[0]) if row else None


def unverified_ledger_rows(conn: sqlite3.Connection, accepted_since: str | None) -> list[tuple[str, str]]:
    """(type, id) of ledger rows never read back, accepted at or after ``accepted_since`` (None: any)."""
    if accepted_since is None:
        rows = conn.execute("SELECT type, id FROM ledger WHERE verified_at IS NULL ORDER BY type, id")
    else:
        rows = conn.execute("SELECT type, id FROM ledger WHERE verified_at IS NULL AND accepted_at >= ? "
                            "ORDER BY type, id", (accepted_since,))
    return rows.fetchall()


def ledger_rows_for_request(conn: sqlite3.Connection, request_id: str) -> list[tuple[str, str]]:
    return conn.execute("SELECT type, id FROM ledger WHERE request_id = ? ORDER BY type, id", (request_id,)).fetchall()


def remove_ledger(conn: sqlite3.Connection, type_: str, id_: str) -> None:
    conn.execute("DELETE FROM ledger_entry WHERE type = ? AND id = ?", (type_, id_))


def set_verified(conn: sqlite3.Connection, type_: str, id_: str, content_hash: str, now: str) -> None:
    conn.execute("UPDATE ledger_entry SET verified_at = ? WHERE type = ? AND id = ? AND content_hash = ?",
                 (now, type_, id_, content_hash))


# -- failed records ------------------------------------------------------------------------------
def put_failed(conn: sqlite3.Connection, type_: str, id_: str, content_hash: str, message: str, path: str | None,
               now: str) -> None:
    conn.execute(
        """INSERT INTO failed_record(type, id, content_hash, error_message, error_path, attempts, first_failed,
                                     last_failed)
           VALUES (?, ?, ?, ?, ?, 1, ?, ?)
           ON CONFLICT(type, id) DO UPDATE SET content_hash = excluded.content_hash,
               error_message = excluded.error_message, error_path = excluded.error_path,
               attempts = failed_record.attempts + 1, last_failed = excluded.last_failed""",
        (type_, id_, content_hash, message, path, now, now),
    )


def clear_failed(conn: sqlite3.Connection, type_: str, id_: str) -> None:
    conn.execute("DELETE FROM failed_record WHERE type = ? AND id = ?", (type_, id_))


def failed_records(conn: sqlite3.Connection, type_: str | None = None) -> list[dict]:
    sql = ("SELECT type, id, content_hash, error_message, error_path, attempts, first_failed, last_failed "
           "FROM failed_record")
    args: tuple = ()
    if type_ is not None:
        sql += " WHERE type = ?"
        args = (type_,)
    keys = ("type", "id", "content_hash", "error_message", "error_path", "attempts", "first_failed", "last_failed")
    return [dict(zip(keys, row)) for row in conn.execute(sql + " ORDER BY type, id", args)]


# -- exceptions the push stage closes ------------------------------------------------------------
def open_exception_ids(conn: sqlite3.Connection, stage: str) -> set[int]:
    return {row[0] for row in conn.execute("SELECT id FROM exception WHERE stage = ? AND resolved_at IS NULL",
                                           (stage,))}


def resolve_record_exceptions(conn: sqlite3.Connection, stage: str, types: Iterable[str], entity: str, key: str,
                              now: str) -> int:
    """Close ``stage``'s open findings of ``types`` about one record (it is now accepted or verified)."""
    names = list(types)
    marks = ",".join("?" * len(names))
    return conn.execute(
        f"UPDATE exception SET resolved_at = ? WHERE resolved_at IS NULL AND stage = ? AND type IN ({marks}) "
        "AND entity = ? AND record_key = ?",
        (now, stage, *names, entity, key),
    ).rowcount


def _json_list(text: str | None) -> list[str]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _json_dict(text: str | None) -> dict:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
