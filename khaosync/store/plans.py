"""Plans: what ``diff`` decided should be sent, exactly, for ``push`` to send or refuse.

A plan is a row in ``plan`` (id, when, the run, the record types it covers, its counts, its
status, the command that made it, and the record ids a ``diff --key`` narrowed it to) and one
``plan_record`` per record to send: its change (``new``, ``changed``, ``void``) and the
content hash of the exact body, which lives once in ``plan_body`` however many plans carry it
(a type's plan and the sync plan that merges it share every body). For new and changed
records the body is the outbound record's at diff time (push refuses the plan if the outbound
hash has moved since: the plan no longer says what would be sent); for a void it is the
voiding version diff made.

Ids are short and typable: ``p<run>-<YYYYMMDD>-<HHMM>`` (UTC), for example
``p7-20261127-0231``. The run id makes them unique; the time makes them readable.

One open plan per scope: a new full diff of the same record types supersedes the open plans
before it (``status = 'superseded'``), so ``push`` without ``--plan`` always sends the newest
full review. A narrowed plan (``diff --key``, a triage of a few records) supersedes nothing and
is never the default: push sends it only when named (issue 14.2).
Plans older than the retention (``plans.retention_days``) are pruned by ``prune_plans``: the
plan row stays (id, time, scope, counts, status, ``pruned_at``), its records and the bodies no
kept plan carries go. A record's history does not need them: the push journal
(``push_batch.records``: id and hash per batch, with its plan and time) says which version went
when, and the ledger holds the body Ometria accepted last. The open plan is never pruned.

Writes happen inside the caller's transaction.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Iterator

PlanRow = tuple[str, str, str, str, bytes]
"""(type, id, change, content_hash, body) of one plan record."""


@dataclass(frozen=True)
class Plan:
    id: str
    created_at: str
    run_id: int | None
    scope: list[str]
    counts: dict[str, int]
    status: str
    made_by: str | None = None
    narrowed_to: list[str] | None = None   # the record ids of a narrowed diff; None: a full review
    records: int = 0                        # plan records (new + changed + void)
    pruned_at: str | None = None

    @property
    def partial(self) -> bool:
        return self.narrowed_to is not None

    def as_dict(self) -> dict:
        return {"id": self.id, "created_at": self.created_at, "run": self.run_id, "scope": self.scope,
                "counts": self.counts, "status": self.status, "made_by": self.made_by, "partial": self.partial,
                "narrowed_to": self.narrowed_to, "records": self.records, "pruned_at": self.pruned_at}


def plan_id_for(run_id: int, at: datetime) -> str:
    """``p<run>-<YYYYMMDD>-<HHMM>``: unique through the run id, readable through the time."""
    return f"p{run_id}-{at:%Y%m%d-%H%M}"


def scope_json(scope: Iterable[str]) -> str:
    return json.dumps(sorted(set(scope)))


def has_provenance(conn: sqlite3.Connection) -> bool:
    """Whether the store has the ``made_by``/``narrowed_to`` columns (a reader of a store an
    older khaosync wrote does not migrate it)."""
    return any(row[1] == "narrowed_to" for row in conn.execute("PRAGMA table_info(plan)"))


def create_plan(conn: sqlite3.Connection, plan_id: str, *, run_id: int | None, scope: list[str],
                created_at: str, made_by: str | None = None, narrowed_to: list[str] | None = None) -> None:
    """An open plan with no records yet (counts are set by ``finish_plan``)."""
    conn.execute("INSERT INTO plan(id, created_at, run_id, scope, counts, status, made_by, narrowed_to) "
                 "VALUES (?, ?, ?, ?, '{}', 'open', ?, ?)",
                 (plan_id, created_at, run_id, scope_json(scope), made_by,
                  None if narrowed_to is None else json.dumps(sorted(set(narrowed_to)))))


def add_records(conn: sqlite3.Connection, plan_id: str, rows: Iterable[PlanRow]) -> int:
    rows = list(rows)
    conn.executemany("INSERT OR IGNORE INTO plan_body(content_hash, body) VALUES (?, ?)",
                     ((h, b) for _, _, _, h, b in rows))
    cur = conn.executemany(
        "INSERT INTO plan_record(plan_id, type, id, change, content_hash) VALUES (?, ?, ?, ?, ?)",
        ((plan_id, t, i, c, h) for t, i, c, h, _ in rows))
    return cur.rowcount


def copy_records(conn: sqlite3.Connection, from_plan: str, to_plan: str) -> int:
    """Every record of ``from_plan`` into ``to_plan`` too (their bodies are shared, not copied)."""
    return conn.execute(
        "INSERT INTO plan_record(plan_id, type, id, change, content_hash)"
        " SELECT ?, type, id, change, content_hash FROM plan_record WHERE plan_id = ?", (to_plan, from_plan)).rowcount


def finish_plan(conn: sqlite3.Connection, plan_id: str, counts: dict[str, int]) -> list[str]:
    """Store the plan's counts and, for a full review, supersede the older open plans of its
    scope (narrowed ones too); their ids. A narrowed plan supersedes nothing."""
    conn.execute("UPDATE plan SET counts = ? WHERE id = ?", (json.dumps(counts, sort_keys=True), plan_id))
    scope, narrowed = conn.execute("SELECT scope, narrowed_to FROM plan WHERE id = ?", (plan_id,)).fetchone()
    if narrowed is not None:
        return []
    older = [r[0] for r in conn.execute(
        "SELECT id FROM plan WHERE status = 'open' AND scope = ? AND id != ? ORDER BY created_at, rowid",
        (scope, plan_id))]
    conn.executemany("UPDATE plan SET status = 'superseded' WHERE id = ?", [(i,) for i in older])
    return older


def prune_plans(conn: sqlite3.Connection, *, before: str, now: str) -> dict[str, int]:
    """Prune the superseded and pushed plans created before ``before`` (ISO UTC): their
    records go, and every body no kept plan still carries. Returns {plans, records, bodies}."""
    due = conn.execute(
        "SELECT id, status FROM plan WHERE status IN ('superseded', 'pushed') AND pruned_at IS NULL AND created_at < ?"
        " ORDER BY created_at, rowid", (before,)).fetchall()
    if not due:
        return {"plans": 0, "records": 0, "bodies": 0}
    records = 0
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS prune_hash (content_hash TEXT PRIMARY KEY) WITHOUT ROWID")
    for plan_id, _status in due:
        conn.execute("INSERT OR IGNORE INTO temp.prune_hash SELECT content_hash FROM plan_record WHERE plan_id = ?",
                     (plan_id,))
        records += conn.execute("DELETE FROM plan_record WHERE plan_id = ?", (plan_id,)).rowcount
        conn.execute("UPDATE plan SET pruned_at = ? WHERE id = ?", (now, plan_id))
    bodies = conn.execute("""DELETE FROM plan_body WHERE content_hash IN (SELECT content_hash FROM temp.prune_hash)
        AND NOT EXISTS (SELECT 1 FROM plan_record r WHERE r.content_hash = plan_body.content_hash)""").rowcount
    conn.execute("DROP TABLE temp.prune_hash")
    return {"plans": len(due), "records": records, "bodies": bodies}


def _has_column(conn: sqlite3.Connection, name: str) -> bool:
    return any(row[1] == name for row in conn.execute("PRAGMA table_info(plan)"))


def _select(conn: sqlite3.Connection) -> str:
    extra = "made_by, narrowed_to" if has_provenance(conn) else "NULL, NULL"
    pruned = "pruned_at" if _has_column(conn, "pruned_at") else "NULL"
    return (f"SELECT id, created_at, run_id, scope, counts, status, {extra}, "
            f"(SELECT count(*) FROM plan_record r WHERE r.plan_id = plan.id), {pruned} FROM plan")


def get_plan(conn: sqlite3.Connection, plan_id: str) -> Plan | None:
    row = conn.execute(_select(conn) + " WHERE id = ?", (plan_id,)).fetchone()
    return _plan(row) if row else None


def list_plans(conn: sqlite3.Connection, status: str | None = None, limit: int | None = None) -> list[Plan]:
    """Plans oldest first (with ``limit``: the newest ``limit`` of them, still oldest first)."""
    sql = _select(conn)
    args: list = []
    if status is not None:
        sql += " WHERE status = ?"
        args.append(status)
    sql += " ORDER BY created_at DESC, rowid DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return [_plan(r) for r in reversed(conn.execute(sql, args).fetchall())]


def default_plan_id(conn: sqlite3.Connection) -> str | None:
    """The plan ``push`` sends when none is named: the newest open full review."""
    where = " AND narrowed_to IS NULL" if has_provenance(conn) else ""
    row = conn.execute(f"SELECT id FROM plan WHERE status = 'open'{where} "
                       "ORDER BY created_at DESC, rowid DESC LIMIT 1").fetchone()
    return row[0] if row else None


def wider_open_reviews(conn: sqlite3.Connection, plan: Plan) -> list[Plan]:
    """Older open full reviews covering more record types than ``plan`` (a sync's review, then a
    ``diff orders``): sending ``plan`` by default would leave them behind unseen."""
    where = " AND narrowed_to IS NULL" if has_provenance(conn) else ""
    ids = [r[0] for r in conn.execute(f"SELECT id FROM plan WHERE status = 'open'{where} AND id != ? "
                                      "ORDER BY created_at, rowid", (plan.id,))]
    found = [p for p in (get_plan(conn, i) for i in ids) if p is not None]
    return [p for p in found if set(p.scope) > set(plan.scope)]


def newer_narrowed(conn: sqlite3.Connection, plan: Plan) -> list[Plan]:
    """Open narrowed plans made after ``plan``: a triage the operator may have meant to push."""
    if not has_provenance(conn):
        return []
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM plan WHERE status = 'open' AND narrowed_to IS NOT NULL AND created_at > ? "
        "ORDER BY created_at, rowid", (plan.created_at,))]
    return [p for p in (get_plan(conn, i) for i in ids) if p is not None]


def plan_records(conn: sqlite3.Connection, plan_id: str, type_: str | None = None) -> Iterator[PlanRow]:
    """The plan's records in (type, id) order, streamed (a pruned plan's records have no body: b"")."""
    sql = ("SELECT r.type, r.id, r.change, r.content_hash, b.body FROM plan_record r"
           " LEFT JOIN plan_body b ON b.content_hash = r.content_hash WHERE r.plan_id = ?")
    args: list = [plan_id]
    if type_ is not None:
        sql += " AND r.type = ?"
        args.append(type_)
    for t, i, c, h, b in conn.execute(sql + " ORDER BY r.type, r.id", args):
        yield t, i, c, h, bytes(b) if b is not None else b""


def record_count(conn: sqlite3.Connection, plan_id: str) -> int:
    return conn.execute("SELECT count(*) FROM plan_record WHERE plan_id = ?", (plan_id,)).fetchone()[0]


def _plan(row: tuple) -> Plan:
    return Plan(row[0], row[1], row[2], json.loads(row[3] or "[]"), json.loads(row[4] or "{}"), row[5],
                made_by=row[6], narrowed_to=json.loads(row[7]) if row[7] is not None else None, records=row[8],
                pruned_at=row[9])
