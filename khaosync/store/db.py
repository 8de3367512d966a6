"""Opening the state store, migrating it, and the tables every stage shares (runs, exceptions).

Stage-specific reads and writes live beside their stage's tables (``khaosync.store.staging``
for pull, and so on); this module only owns the connection and the lifecycle of a run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterator

from khaosync.errors import ConfigError
from khaosync.store import packing, staging
from khaosync.store.lock import StateLock
from khaosync.store.schema import MIGRATIONS, SCHEMA_VERSION


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class ExceptionRow:
    id: int
    type: str
    severity: str
    owner: str
    stage: str
    entity: str | None
    record_key: str | None
    reason: str
    records: list[str]
    first_seen: str
    last_seen: str
    resolved_at: str | None
    detail: dict | None = None

    @property
    def status(self) -> str:
        return "resolved" if self.resolved_at else "open"


_EXCEPTION_COLUMNS = ("id, type, severity, owner, stage, entity, record_key, reason, records, first_seen, last_seen, "
                      "resolved_at, detail")


def read_exceptions(conn: sqlite3.Connection, where: str = "1=1", args: tuple | list = ()) -> list[ExceptionRow]:
    """Exception rows matching ``where`` (SQL over the exception table), in id order.

    ``detail`` keeps amounts exact (JSON floats read as Decimal).
    """
    rows = conn.execute(f"SELECT {_EXCEPTION_COLUMNS} FROM exception WHERE {where} ORDER BY id", args).fetchall()
    return [ExceptionRow(*r[:8], json.loads(r[8]), *r[9:12], json.loads(r[12], parse_float=Decimal) if r[12] else None)
            for r in rows]


class StateStore:
    """A migrated SQLite connection. Writers hold the lock; readers may open without it."""

    def __init__(self, path: str | Path, conn: sqlite3.Connection, lock: StateLock | None):
        self.path = Path(path)
        self.conn = conn
        self.lock = lock

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        if self.lock is not None:
            self._give_back_free_pages()
        self.conn.close()
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _give_back_free_pages(self) -> None:
        """A writer's last act: when much of the file is free (pruned plans), shrink the file.

        Only a store made with ``auto_vacuum = INCREMENTAL`` (every new one) can; an older one
        reuses its free pages as it grows (``docs/runbook.md`` says how to convert it)."""
        try:
            if self.conn.in_transaction or self.conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                return
            free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
            pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
            if free >= FREE_PAGES_KEPT and free * 10 > pages:
                # executescript steps the pragma to its end (execute frees one page only)
                self.conn.executescript("PRAGMA incremental_vacuum")
        except sqlite3.Error:
            pass  # shrinking is a courtesy: the next writer tries again

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit: committed on success, rolled back on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    # -- runs --------------------------------------------------------------------------------
    def start_run(self, command: str, profile: str) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO run(command, profile, started_at) VALUES (?, ?, ?)", (command, profile, utcnow())
            )
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str, summary: dict | None = None) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE run SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
                (utcnow(), status, json.dumps(summary, sort_keys=True, default=str) if summary else None, run_id),
            )

    # -- exceptions -------------------------------------------------------------------------
    def record_exception(
        self,
        *,
        run_id: int,
        type: str,
        severity: str,
        owner: str,
        stage: str,
        reason: str,
        records: list[str],
        entity: str | None = None,
        record_key: str | None = None,
        detail: dict | None = None,
    ) -> int:
        """Open (or re-see) one finding. The same type/stage/records is one row, not many."""
        fingerprint = hashlib.sha256(
            json.dumps([type, stage, entity, sorted(records)], sort_keys=True).encode()
        ).hexdigest()
        now = utcnow()
        row = self.conn.execute(
            """
            INSERT INTO exception(type, severity, owner, stage, entity, record_key, fingerprint, reason,
                                  records, detail, first_seen, last_seen, first_run, last_run)
            VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
            ON CONFLICT(fingerprint) DO UPDATE SET
                last_seen = excluded.last_seen, last_run = excluded.last_run, reason = excluded.reason,
                severity = excluded.severity, owner = excluded.owner, detail = excluded.detail,
                resolved_at = NULL
            RETURNING id
            """,
            (
                type, severity, owner, stage, entity, record_key, fingerprint, reason,
                json.dumps(sorted(records)), json.dumps(detail, sort_keys=True, default=str) if detail else None,
                now, now, run_id, run_id,
            ),
        ).fetchone()
        return int(row[0])

    def resolve_unseen_exceptions(self, run_id: int, stage: str, types: list[str], entity: str | None = None) -> int:
        """Close the findings of ``stage`` that this run, having looked again, no longer saw."""
        q = ",".join("?" * len(types))
        sql = f"UPDATE exception SET resolved_at = ? WHERE resolved_at IS NULL AND stage = ? AND type IN ({q}) AND last_run < ?"
        args: list = [utcnow(), stage, *types, run_id]
        if entity is not None:
            sql += " AND entity = ?"
            args.append(entity)
        return self.conn.execute(sql, args).rowcount

    def exceptions(self, *, open_only: bool = False, owner: str | None = None, type: str | None = None,
                   distinct: bool = False) -> list[ExceptionRow]:
        """Exception rows in id order. ``distinct``: one row per cause (issue 14.3): pull and map
        each record their own finding about one record (an order's total, a malformed record),
        and a list for people counts it once (``merge_stages``)."""
        if distinct:
            return merge_stages(self.exceptions(open_only=open_only, owner=owner, type=type))
        where, args = ["1=1"], []
        if open_only:
            where.append("resolved_at IS NULL")
        if owner:
            where.append("owner = ?")
            args.append(owner)
        if type:
            where.append("type = ?")
            args.append(type)
        return read_exceptions(self.conn, " AND ".join(where), args)


_SEVERITY_RANK = {"info": 0, "warn": 1, "fail": 2}


def merge_stages(rows: list[ExceptionRow]) -> list[ExceptionRow]:
    """Rows of one type about the same records, raised by different stages, as one: the first
    row's id and reason, the stages joined (``pull+map``), the worse severity, the first and
    last sightings, open while any of them is."""
    merged: dict[tuple, ExceptionRow] = {}
    for row in rows:
        key = (row.type, row.entity, tuple(row.records))
        seen = merged.get(key)
        if seen is None:
            merged[key] = row
            continue
        stages = seen.stage.split("+")
        merged[key] = replace(
            seen, stage="+".join(stages + [row.stage] if row.stage not in stages else stages),
            severity=max(seen.severity, row.severity, key=lambda s: _SEVERITY_RANK.get(s, 0)),
            first_seen=min(seen.first_seen, row.first_seen), last_seen=max(seen.last_seen, row.last_seen),
            resolved_at=None if seen.resolved_at is None or row.resolved_at is None
            else max(seen.resolved_at, row.resolved_at))
    return list(merged.values())


def _statements(script: str) -> list[str]:
    """Split a migration into statements (``executescript`` would commit mid-migration)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise ConfigError(
            f"state {path} has schema version {current}, newer than this khaosync ({SCHEMA_VERSION}); upgrade khaosync"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        _, sql = MIGRATIONS[version - 1]
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


PAGE_SIZE = 16384
FREE_PAGES_KEPT = 1024
"""Free pages (16 MiB) a writer leaves in the file for the next runs to reuse; more than that,
and more than a tenth of the file, and it shrinks the file when it closes."""

BUSY_PROBE_S = 2.0
"""How long a writer waits, on opening, for a transaction someone else holds. khaosync's own
writers queue on the lock file first, so a holder here is another program (a sqlite3 shell, a
backup): say so at once rather than wait 30 s and fail half-way."""


def _probe_writable(conn: sqlite3.Connection, path: Path) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise ConfigError(f"state {path} is busy: another program holds a transaction on it (khaosync runs "
                              "hold the lock file instead); try again when it has finished") from None
        if "readonly" in text:
            raise ConfigError(f"state {path} is read-only: this command writes to it") from None
        raise


def open_store(path: str | Path, *, write: bool = True, command: str | None = None) -> StateStore:
    """Open (creating and migrating if needed) the state store at ``path``.

    ``write=True`` takes the lock first: a second writer gets ``StateLockedError``.
    A reader of a store that does not exist yet gets a ``ConfigError``.
    """
    path = Path(path)
    lock = None
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = StateLock(path)
        lock.acquire(command)
    elif not path.exists():
        raise ConfigError(f"no state at {path}: run `khaosync pull` first (or pass --state)")
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so transactions are explicit.
        new = not path.exists() or path.stat().st_size == 0
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_PROBE_S if write else 30)
        if new:
            # Larger pages: a store's rows (a staged order, an outbound body) run to a few KB, and
            # a 4 KB page holds one of them and leaves the rest empty. And a store that can give
            # pruned plans' pages back to the file system (see close()). An existing store keeps
            # its own (they change only with VACUUM outside WAL: see docs/runbook.md), and is not
            # asked: another program's transaction on it would make the pragma wait.
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        if write:
            _probe_writable(conn, path)
            conn.execute(f"PRAGMA busy_timeout = {30_000}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # 64 MiB of page cache (SQLite's default is 2): a large store's indexes stay in memory
        # across a run's batches instead of being read again (bench/map.py, peak RSS bounded).
        conn.execute("PRAGMA cache_size = -65536")
        packing.register(conn)  # outbound_record is a view that unpacks its table's bodies
        if write:
            conn.create_function("khaosync_deflate", 1, staging.deflate, deterministic=True)
            conn.create_function("khaosync_strip_nulls", 1, staging.stored_parsed, deterministic=True)
            _migrate(conn, path)
        return StateStore(path, conn, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
