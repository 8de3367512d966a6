"""Plans: what ``diff`` decided should be sent, exactly, for ``push`` to send or refuse.

A plan is a row in ``plan`` (id, when, the run, the record types it covers, its counts, its
status) and one ``plan_record`` per record to send: its change (``new``, ``changed``,
``void``), the content hash and the exact body. For new and changed records the body is the
outbound record's at diff time (push refuses the plan if the outbound hash has moved since:
the plan no longer says what would be sent); for a void it is the voiding version diff made.

Ids are short and typable: ``p<run>-<YYYYMMDD>-<HHMM>`` (UTC), for example
``p7-20261127-0231``. The run id makes them unique; the time makes them readable.

One open plan per scope: a new diff of the same record types supersedes the open plans before
it (``status = 'superseded'``), so ``push`` without ``--plan`` always sends the newest review.
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


def plan_id_for(run_id: int, at: datetime) -> str:
    """``p<run>-<YYYYMMDD>-<HHMM>``: unique through the run id, readable through the time."""
    return f"p{run_id}-{at:%Y%m%d-%H%M}"


def scope_json(scope: Iterable[str]) -> str:
    return json.dumps(sorted(set(scope)))


def create_plan(conn: sqlite3.Connection, plan_id: str, *, run_id: int | None, scope: list[str],
                created_at: str) -> None:
    """An open plan with no records yet (counts are set by ``finish_plan``)."""
    conn.execute("INSERT INTO plan(id, created_at, run_id, scope, counts, status) VALUES (?, ?, ?, ?, '{}', 'open')",
                 (plan_id, created_at, run_id, scope_json(scope)))


def add_records(conn: sqlite3.Connection, plan_id: str, rows: Iterable[PlanRow]) -> int:
    cur = conn.executemany(
        "INSERT INTO plan_record(plan_id, type, id, change, content_hash, body) VALUES (?, ?, ?, ?, ?, ?)",
        ((plan_id, t, i, c, h, b) for t, i, c, h, b in rows))
    return cur.rowcount


def finish_plan(conn: sqlite3.Connection, plan_id: str, counts: dict[str, int]) -> list[str]:
    """Store the plan's counts and supersede the older open plans of its scope; their ids."""
    conn.execute("UPDATE plan SET counts = ? WHERE id = ?", (json.dumps(counts, sort_keys=True), plan_id))
    scope = conn.execute("SELECT scope FROM plan WHERE id = ?", (plan_id,)).fetchone()[0]
    older = [r[0] for r in conn.execute(
        "SELECT id FROM plan WHERE status = 'open' AND scope = ? AND id != ? ORDER BY created_at, rowid",
        (scope, plan_id))]
    conn.executemany("UPDATE plan SET status = 'superseded' WHERE id = ?", [(i,) for i in older])
    return older


def get_plan(conn: sqlite3.Connection, plan_id: str) -> Plan | None:
    row = conn.execute("SELECT id, created_at, run_id, scope, counts, status FROM plan WHERE id = ?",
                       (plan_id,)).fetchone()
    return _plan(row) if row else None


def list_plans(conn: sqlite3.Connection, status: str | None = None) -> list[Plan]:
    sql = "SELECT id, created_at, run_id, scope, counts, status FROM plan"
    args: tuple = ()
    if status is not None:
        sql += " WHERE status = ?"
        args = (status,)
    return [_plan(r) for r in conn.execute(sql + " ORDER BY created_at, rowid", args)]


def plan_records(conn: sqlite3.Connection, plan_id: str, type_: str | None = None) -> Iterator[PlanRow]:
    """The plan's records in (type, id) order, streamed."""
    sql = "SELECT type, id, change, content_hash, body FROM plan_record WHERE plan_id = ?"
    args: list = [plan_id]
    if type_ is not None:
        sql += " AND type = ?"
        args.append(type_)
    for t, i, c, h, b in conn.execute(sql + " ORDER BY type, id", args):
        yield t, i, c, h, bytes(b)


def record_count(conn: sqlite3.Connection, plan_id: str) -> int:
    return conn.execute("SELECT count(*) FROM plan_record WHERE plan_id = ?", (plan_id,)).fetchone()[0]


def _plan(row: tuple) -> Plan:
    return Plan(row[0], row[1], row[2], json.loads(row[3] or "[]"), json.loads(row[4] or "{}"), row[5])
