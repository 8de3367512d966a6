"""Run history, read from the state store: what each run was, and what it did (issue 14.8).

Every stage writes a ``run`` row (command, start, finish, status, a JSON summary). This module
only reads: the list of runs, and one run in full with what it staged, made, planned, pushed,
rejected, and which exceptions it opened, saw again or closed.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Run:
    id: int
    command: str
    profile: str
    started_at: str
    finished_at: str | None
    status: str                       # running | ok | failed
    summary: dict[str, Any] | None

    @property
    def duration_s(self) -> float | None:
        if not self.finished_at:
            return None
        return (datetime.fromisoformat(self.finished_at) - datetime.fromisoformat(self.started_at)).total_seconds()

    @property
    def fail_findings(self) -> int:
        value = (self.summary or {}).get("fail_findings", 0)
        return value if isinstance(value, int) else 0

    @property
    def verdict(self) -> str:
        """``ok``, ``findings`` (finished, with fail-severity findings), ``failed`` or ``running``."""
        if self.status == "ok" and self.fail_findings:
            return "findings"
        return self.status

    def counts(self) -> dict[str, int]:
        """The run's headline numbers, by what kind of run it was."""
        return headline(self.command, self.summary or {})

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "command": self.command, "profile": self.profile, "started_at": self.started_at,
                "finished_at": self.finished_at, "duration_s": self.duration_s, "status": self.status,
                "verdict": self.verdict, "counts": self.counts()}


@dataclass
class RunDetail:
    run: Run
    staged: dict[str, int] = field(default_factory=dict)        # entity -> record versions staged
    rejected: dict[str, int] = field(default_factory=dict)      # entity -> payloads kept, not staged
    mapped: dict[str, int] = field(default_factory=dict)        # Ometria type -> outbound records made
    plans: list[dict[str, Any]] = field(default_factory=list)   # id, status, records
    pushed: dict[str, int] = field(default_factory=dict)        # type -> accepted (push runs)
    push_rejected: dict[str, int] = field(default_factory=dict)
    opened: list[dict[str, Any]] = field(default_factory=list)  # exceptions first seen by this run
    seen_again: int = 0                                          # open ones this run saw again
    closed: list[dict[str, Any]] = field(default_factory=list)  # exceptions resolved while it ran

    def as_dict(self) -> dict[str, Any]:
        return {**self.run.as_dict(), "summary": self.run.summary, "staged": self.staged, "rejected": self.rejected,
                "mapped": self.mapped, "plans": self.plans, "pushed": self.pushed,
                "push_rejected": self.push_rejected, "exceptions_opened": self.opened,
                "exceptions_seen_again": self.seen_again, "exceptions_closed": self.closed}


def _sum(section: Any, key: str) -> int:
    if not isinstance(section, dict):
        return 0
    return sum(v.get(key, 0) for v in section.values() if isinstance(v, dict) and isinstance(v.get(key, 0), int))


def _total(section: Any) -> int:
    return sum(v for v in section.values() if isinstance(v, int)) if isinstance(section, dict) else 0


def headline(command: str, summary: dict[str, Any]) -> dict[str, int]:
    """A few numbers that say what a run did; the keys depend on the stage."""
    out: dict[str, int] = {}
    pull = summary.get("pull") if command.startswith("sync") else summary
    if command.startswith(("pull", "sync")) and isinstance(pull, dict):
        out["read"] = _sum(pull.get("entities"), "fetched")
        out["new"] = _sum(pull.get("entities"), "new")
        out["changed"] = _sum(pull.get("entities"), "changed")
    if command.startswith("map"):
        out["mapped"] = _sum(summary.get("entities"), "mapped")
        out["held"] = _sum(summary.get("entities"), "held")
    if command.startswith("diff") and isinstance(summary.get("counts"), dict):
        counts = summary["counts"]
        out.update({k: counts.get(k, 0) for k in ("new", "changed", "void")})
    if command.startswith(("push", "sync")):
        push = summary.get("push") if command.startswith("sync") and isinstance(summary.get("push"), dict) else summary
        if "accepted" in push or "sent" in push:
            out["sent"] = _total(push.get("sent"))
            out["accepted"] = _total(push.get("accepted"))
            out["rejected"] = _total(push.get("rejected"))
    if isinstance(summary.get("exceptions"), dict):
        out["exceptions"] = _total(summary["exceptions"])
    elif isinstance(summary.get("findings"), int):
        out["exceptions"] = summary["findings"]
    return out


_COLUMNS = "id, command, profile, started_at, finished_at, status, summary"


def _run(row: tuple) -> Run:
    return Run(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]) if row[6] else None)


def list_runs(conn: sqlite3.Connection, *, limit: int = 20, command: str | None = None) -> list[Run]:
    """The newest ``limit`` runs (of ``command`` when given: ``sync`` also finds ``sync --commit``),
    oldest first."""
    sql, args = f"SELECT {_COLUMNS} FROM run", []
    if command:
        sql += " WHERE command = ? OR command LIKE ?"
        args += [command, command + " %"]
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit]).fetchall()
    return [_run(r) for r in reversed(rows)]


def get_run(conn: sqlite3.Connection, run_id: int) -> RunDetail | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM run WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    run = _run(row)
    detail = RunDetail(run)
    detail.staged = dict(conn.execute(
        "SELECT entity, count(*) FROM staged_record WHERE run_id = ? GROUP BY entity ORDER BY entity", (run_id,)))
    detail.rejected = dict(conn.execute(
        "SELECT entity, count(*) FROM rejected_payload WHERE run_id = ? GROUP BY entity ORDER BY entity", (run_id,)))
    if _has_table(conn, "outbound_record"):
        detail.mapped = dict(conn.execute(
            "SELECT type, count(*) FROM outbound_record WHERE run_id = ? GROUP BY type ORDER BY type", (run_id,)))
    if _has_table(conn, "plan"):
        detail.plans = [{"id": i, "status": s, "records": n} for i, s, n in conn.execute(
            "SELECT id, status, (SELECT count(*) FROM plan_record r WHERE r.plan_id = plan.id) FROM plan "
            "WHERE run_id = ? ORDER BY created_at, rowid", (run_id,))]
    summary = run.summary or {}
    push = summary.get("push") if isinstance(summary.get("push"), dict) else summary
    if isinstance(push.get("accepted"), dict):
        detail.pushed = {k: v for k, v in push["accepted"].items() if isinstance(v, int)}
        detail.push_rejected = {k: v for k, v in (push.get("rejected") or {}).items() if isinstance(v, int)}
    detail.opened = [{"id": i, "type": t, "severity": s, "records": json.loads(r)} for i, t, s, r in conn.execute(
        "SELECT id, type, severity, records FROM exception WHERE first_run = ? ORDER BY id", (run_id,))]
    detail.seen_again = conn.execute("SELECT count(*) FROM exception WHERE last_run = ? AND first_run != ?",
                                     (run_id, run_id)).fetchone()[0]
    if run.finished_at:
        detail.closed = [{"id": i, "type": t, "severity": s} for i, t, s in conn.execute(
            "SELECT id, type, severity FROM exception WHERE resolved_at >= ? AND resolved_at <= ? ORDER BY id",
            (run.started_at, run.finished_at))]
    return detail


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?",
                        (name,)).fetchone() is not None
