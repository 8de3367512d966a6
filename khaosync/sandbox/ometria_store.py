"""The Ometria emulator's persistent state: one SQLite file (WAL) shared by every process.

What Ometria holds lives here, so an emulator served by ``khaosync sandbox serve`` and one
running in-process over the same file see the same account: stored records, the push queue,
the account's error log, profiles, unsubscribes and the counters of ``stats()``.

One connection per ``OmetriaStore``, serialised by a lock (the emulator is called from
several server threads); other processes are serialised by SQLite itself (``BEGIN
IMMEDIATE`` plus a busy timeout). Functions below take the connection of an open transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

ERROR_LOG_SIZE = 100  # "GET /push/_errors returns the 100 most recent record errors"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS record (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- Ometria's internal id: the default read order
    type       TEXT NOT NULL,
    collection TEXT NOT NULL DEFAULT '',           -- contacts only; '' for the other types
    id         TEXT NOT NULL,
    doc        TEXT NOT NULL,
    email      TEXT,                               -- contacts: lower-cased email, for identity rules
    updated    TEXT NOT NULL,                      -- timestamp_update (UTC ISO, microseconds)
    UNIQUE (type, collection, id)
);
CREATE INDEX IF NOT EXISTS record_email   ON record(email) WHERE email IS NOT NULL;
CREATE INDEX IF NOT EXISTS record_updated ON record(type, updated, seq);

CREATE TABLE IF NOT EXISTS queue (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    queued_at  REAL NOT NULL,                      -- the emulator's injected clock
    request_id TEXT NOT NULL,
    type       TEXT NOT NULL,
    doc        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_due ON queue(queued_at);
CREATE INDEX IF NOT EXISTS queue_record ON queue(type, json_extract(doc, '$.id'));  -- push-time "is it known?"

CREATE TABLE IF NOT EXISTS push_error (seq INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS profile (
    seq                    INTEGER PRIMARY KEY AUTOINCREMENT,  -- profile id is 'p' || seq
    email                  TEXT NOT NULL UNIQUE,               -- lower-cased
    marketing_optin        TEXT,
    timestamp_subscribed   TEXT,
    timestamp_unsubscribed TEXT,
    updated                TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS profile_updated ON profile(updated, seq);

-- Unsubscribes made in Ometria (listed by GET /unsubscribes); API opt-outs are not here.
CREATE TABLE IF NOT EXISTS unsubscribe (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    email     TEXT NOT NULL,
    profile   TEXT NOT NULL,
    reason    TEXT,            -- often null, as Ometria's own example
    timestamp TEXT NOT NULL,   -- as given
    at_utc    TEXT NOT NULL,   -- the same instant in UTC, for since/before
    type      TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS unsubscribe_event ON unsubscribe(email, at_utc, type);

CREATE TABLE IF NOT EXISTS stat (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS forced_optin (seq INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL);
"""

COUNTERS = (
    "push_requests",  # every POST /push that reached the emulator, whatever its answer
    "read_requests",  # every GET that reached the emulator, whatever its answer
    "records_received",  # records in pushes that got past the request-level checks
    "records_accepted",
    "records_rejected",  # failed synchronous validation (the response's ``rejected``)
    "records_processed",  # taken off the queue
    "records_stored",
    "processing_errors",  # failed at processing (e.g. unknown product on a line)
    "max_records_per_request",  # largest JSON array seen on POST /push, even one refused as > 100
    "rejected_requests",  # answered 400, 403, 405, 411, 413 or 415: the client's mistake
    "incomplete_requests",  # bodies shorter than their Content-Length: the sender died mid-request
    "throttled",  # 429 from a rate limit
    "queue_full",  # 429 because the queue would overflow
    "injected_failures",  # 5xx from fail_rate
    "identity_conflicts",  # emails silently dropped because another contact holds them
    "optins_refused",  # opt-ins left opted out (no @force_optin)
)


_last_now = datetime.min.replace(tzinfo=timezone.utc)
_now_lock = threading.Lock()


def utc_now() -> str:
    """Wall-clock UTC with microseconds for ``timestamp_update`` and error timestamps; strictly
    increasing within a process, so ``orderby=timestamp_update`` follows the order of changes."""
    global _last_now
    with _now_lock:
        _last_now = max(datetime.now(timezone.utc), _last_now + timedelta(microseconds=1))
        return _last_now.isoformat(timespec="microseconds").replace("+00:00", "Z")


def to_utc(value: str) -> str:
    """An aware ISO 8601 datetime as the UTC string ``utc_now`` writes, so strings compare."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"datetime without a zone: {value!r}")
    return parsed.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def dumps(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class OmetriaStore:
    """The SQLite file behind one emulated Ometria account."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self.conn.execute("PRAGMA busy_timeout = 30000")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        with self.lock:
            self.conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: committed on success, rolled back on any exception."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A consistent read (one snapshot across several statements)."""
        with self.lock:
            self.conn.execute("BEGIN")
            try:
                yield self.conn
            finally:
                self.conn.execute("COMMIT")


# -- stats -----------------------------------------------------------------------------------
def bump(conn: sqlite3.Connection, **counts: int) -> None:
    conn.executemany(
        "INSERT INTO stat(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
        [(name, count) for name, count in counts.items() if count],
    )


def raise_to(conn: sqlite3.Connection, name: str, value: int) -> None:
    conn.execute(
        "INSERT INTO stat(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)",
        (name, value),
    )


def record_forced_optins(conn: sqlite3.Connection, record_ids: list[str]) -> None:
    conn.executemany("INSERT INTO forced_optin(record_id) VALUES (?)", [(rid,) for rid in record_ids])


def read_stats(conn: sqlite3.Connection) -> dict[str, Any]:
    stats: dict[str, Any] = {name: 0 for name in COUNTERS}
    stats.update(dict(conn.execute("SELECT name, value FROM stat")))
    stats["forced_optins"] = [row[0] for row in conn.execute("SELECT record_id FROM forced_optin ORDER BY seq")]
    stats["queued"] = queue_size(conn)
    return stats


# -- queue -----------------------------------------------------------------------------------
def queue_size(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM queue").fetchone()[0]


def enqueue(conn: sqlite3.Connection, queued_at: float, request_id: str, record_type: str, docs: list[str]) -> None:
    conn.executemany(
        "INSERT INTO queue(queued_at, request_id, type, doc) VALUES (?, ?, ?, ?)",
        [(queued_at, request_id, record_type, doc) for doc in docs],
    )


def has_due(conn: sqlite3.Connection, cutoff: float | None) -> bool:
    if cutoff is None:
        return conn.execute("SELECT 1 FROM queue LIMIT 1").fetchone() is not None
    return conn.execute("SELECT 1 FROM queue WHERE queued_at <= ? LIMIT 1", (cutoff,)).fetchone() is not None


def take_due(conn: sqlite3.Connection, cutoff: float | None) -> list[tuple[str, str, dict]]:
    """Remove and return the due queue entries, oldest first: (request_id, type, record)."""
    sql = "SELECT seq, request_id, type, doc FROM queue"
    rows = conn.execute(sql + " ORDER BY seq" if cutoff is None else sql + " WHERE queued_at <= ? ORDER BY seq",
                        () if cutoff is None else (cutoff,)).fetchall()
    conn.executemany("DELETE FROM queue WHERE seq = ?", [(row[0],) for row in rows])
    return [(row[1], row[2], json.loads(row[3])) for row in rows]


# -- error log -------------------------------------------------------------------------------
def log_errors(conn: sqlite3.Connection, entries: Iterable[dict]) -> int:
    """Append to the account's error log and keep only its most recent ``ERROR_LOG_SIZE``."""
    rows = [(dumps(entry),) for entry in entries]
    if rows:
        conn.executemany("INSERT INTO push_error(doc) VALUES (?)", rows)
        conn.execute("DELETE FROM push_error WHERE seq <= (SELECT max(seq) FROM push_error) - ?", (ERROR_LOG_SIZE,))
    return len(rows)


def recent_errors(conn: sqlite3.Connection) -> list[dict]:
    rows = conn.execute("SELECT doc FROM push_error ORDER BY seq DESC LIMIT ?", (ERROR_LOG_SIZE,))
    return [json.loads(row[0]) for row in rows]


# -- records ---------------------------------------------------------------------------------
def get_record(conn: sqlite3.Connection, record_type: str, record_id: str, collection: str = "") -> dict | None:
    row = conn.execute(
        "SELECT doc FROM record WHERE type = ? AND collection = ? AND id = ?", (record_type, collection, record_id)
    ).fetchone()
    return json.loads(row[0]) if row else None


def find_contact(conn: sqlite3.Connection, record_id: str) -> dict | None:
    """A contact by id in whichever collection holds it first (for callers without one)."""
    row = conn.execute("SELECT doc FROM record WHERE type = 'contact' AND id = ? ORDER BY seq LIMIT 1", (record_id,)).fetchone()
    return json.loads(row[0]) if row else None


def known(conn: sqlite3.Connection, record_type: str, collection: str, record_id: Any) -> bool:
    """Does Ometria hold, or has it queued, a record with this identity? (Push-time: a partial
    record for it is an update, not a creation.)"""
    if not isinstance(record_id, str):
        return False
    if conn.execute("SELECT 1 FROM record WHERE type = ? AND collection = ? AND id = ?",
                    (record_type, collection, record_id)).fetchone():
        return True
    row = conn.execute(
        "SELECT 1 FROM queue WHERE type = ? AND json_extract(doc, '$.id') = ? "
        "AND coalesce(json_extract(doc, '$.\"@collection\"'), '') = ? LIMIT 1",
        (record_type, record_id, collection if record_type == "contact" else ""),
    ).fetchone()
    return row is not None


def record_exists(conn: sqlite3.Connection, record_type: str, record_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM record WHERE type = ? AND collection = '' AND id = ?", (record_type, record_id))
    return row.fetchone() is not None


def put_record(conn: sqlite3.Connection, record_type: str, record_id: str, doc: dict, *, collection: str = "",
               email: str | None = None, updated: str) -> None:
    """Insert or replace the stored record; an existing one keeps its internal id (seq)."""
    conn.execute(
        """INSERT INTO record(type, collection, id, doc, email, updated) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT(type, collection, id) DO UPDATE SET doc = excluded.doc, email = excluded.email,
                                                           updated = excluded.updated""",
        (record_type, collection, record_id, dumps(doc), email.lower() if email else None, updated),
    )


def email_held_elsewhere(conn: sqlite3.Connection, email: str, collection: str, record_id: str) -> bool:
    """Is ``email`` held by a contact other than (collection, id), in any collection?"""
    row = conn.execute(
        "SELECT 1 FROM record WHERE email = ? AND type = 'contact' AND NOT (collection = ? AND id = ?) LIMIT 1",
        (email.lower(), collection, record_id),
    ).fetchone()
    return row is not None


def contacts_with_email(conn: sqlite3.Connection, email: str) -> list[dict]:
    rows = conn.execute("SELECT doc FROM record WHERE email = ? AND type = 'contact' ORDER BY seq", (email.lower(),))
    return [json.loads(row[0]) for row in rows]


def list_records(conn: sqlite3.Connection, record_type: str, *, collection: str = "", where: str = "",
                 args: tuple = (), by_update: bool = False, limit: int, offset: int) -> list[dict]:
    order = "updated, seq" if by_update else "seq"
    rows = conn.execute(
        f"SELECT doc FROM record WHERE type = ? AND collection = ? {where} ORDER BY {order} LIMIT ? OFFSET ?",
        (record_type, collection, *args, limit, offset),
    )
    return [json.loads(row[0]) for row in rows]


def all_records(conn: sqlite3.Connection, record_type: str, collection: str | None) -> list[dict]:
    if collection is None:
        rows = conn.execute("SELECT doc FROM record WHERE type = ? ORDER BY seq", (record_type,))
    else:
        rows = conn.execute("SELECT doc FROM record WHERE type = ? AND collection = ? ORDER BY seq", (record_type, collection))
    return [json.loads(row[0]) for row in rows]


def collection_counts(conn: sqlite3.Connection, limit: int, offset: int) -> list[dict]:
    rows = conn.execute(
        "SELECT collection, count(*) FROM record WHERE type = 'contact' GROUP BY collection ORDER BY collection LIMIT ? OFFSET ?",
        (limit, offset),
    )
    return [{"collection": name, "count": count} for name, count in rows]


# -- profiles --------------------------------------------------------------------------------
PROFILE_COLUMNS = "seq, email, marketing_optin, timestamp_subscribed, timestamp_unsubscribed, updated"


def profile_row(conn: sqlite3.Connection, email: str) -> tuple | None:
    return conn.execute(f"SELECT {PROFILE_COLUMNS} FROM profile WHERE email = ?", (email.lower(),)).fetchone()


def ensure_profile(conn: sqlite3.Connection, email: str, updated: str) -> str:
    """The profile id for ``email`` (``p1``, ``p2``, ...), created on first sight; touches it."""
    conn.execute(
        "INSERT INTO profile(email, updated) VALUES (?, ?) ON CONFLICT(email) DO UPDATE SET updated = excluded.updated",
        (email.lower(), updated),
    )
    return "p%d" % conn.execute("SELECT seq FROM profile WHERE email = ?", (email.lower(),)).fetchone()[0]


def set_profile_consent(conn: sqlite3.Connection, email: str, optin: str, timestamp: str | None) -> None:
    """Record a consent decision on the profile of ``email`` (which must exist)."""
    column = "timestamp_unsubscribed" if optin == "EXPLICITLY_OPTEDOUT" else "timestamp_subscribed"
    conn.execute(
        f"UPDATE profile SET marketing_optin = ?, {column} = coalesce(?, {column}) WHERE email = ?",
        (optin, timestamp, email.lower()),
    )


def profile_rows(conn: sqlite3.Connection, *, where: str = "", args: tuple = (), by_update: bool = False,
                 limit: int, offset: int) -> list[tuple]:
    order = "updated, seq" if by_update else "seq"
    return conn.execute(
        f"SELECT {PROFILE_COLUMNS} FROM profile WHERE 1 = 1 {where} ORDER BY {order} LIMIT ? OFFSET ?",
        (*args, limit, offset),
    ).fetchall()


# -- unsubscribes ----------------------------------------------------------------------------
def add_unsubscribe(conn: sqlite3.Connection, email: str, profile_id: str, reason: str | None, timestamp: str,
                    unsubscribe_type: str) -> None:
    """One unsubscribe event; the same (email, instant, type) again is the same event."""
    conn.execute(
        "INSERT OR IGNORE INTO unsubscribe(email, profile, reason, timestamp, at_utc, type) VALUES (?, ?, ?, ?, ?, ?)",
        (email, profile_id, reason, timestamp, to_utc(timestamp), unsubscribe_type),
    )


def unsubscribe_timestamp(at_utc: str) -> str:
    """Reference: answers carry ``timestamp`` like ``2017-05-17 22:08:07+00``."""
    return datetime.fromisoformat(at_utc.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S+00")


def list_unsubscribes(conn: sqlite3.Connection, *, since: str | None, before: str | None, unsubscribe_type: str | None,
                      limit: int) -> list[dict]:
    """The earliest ``limit`` events in [since, before), oldest first."""
    where, args = "", []
    if since is not None:
        where += " AND at_utc >= ?"
        args.append(since)
    if before is not None:
        where += " AND at_utc < ?"
        args.append(before)
    if unsubscribe_type is not None:
        where += " AND type = ?"
        args.append(unsubscribe_type)
    rows = conn.execute(
        f"SELECT email, profile, reason, at_utc, type FROM unsubscribe WHERE 1 = 1 {where} ORDER BY at_utc, seq LIMIT ?",
        (*args, limit),
    )
    return [
        {"email_address": email, "profile_id": profile, "reason": reason, "timestamp": unsubscribe_timestamp(at),
         "type": kind}
        for email, profile, reason, at, kind in rows
    ]
