"""Outbound Ometria records: what ``map`` made, byte for byte what ``push`` will send.

One row per Ometria record (``type`` + ``id``) with its body, the body's content hash, its
lineage (the ERP record versions that made it) and its state: ``ready`` to send, or ``held``
with a reason. A row is written only when something a reader cares about changed (the hash,
the state or the hold reason), so mapping the same staged records twice writes nothing the
second time and ``run_id``/``mapped_at`` say when the body last changed.

``map`` never deletes a row: Ometria has no delete either (voiding is diff's business).

The rows live in ``outbound_entry`` with body and lineage packed (``khaosync.store.packing``);
``outbound_record`` is a view that unpacks them for SQL. This module writes the table and
unpacks in Python, which is cheaper than the view's SQL function for a stream of rows.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Iterator, Literal

from khaosync.store import packing

State = Literal["ready", "held"]
Written = Literal["new", "changed", "unchanged"]

_IN_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    type: str
    id: str
    content_hash: str
    body: bytes
    lineage: list[dict]
    state: str
    hold_reason: str | None
    run_id: int
    mapped_at: str


@dataclass(frozen=True, slots=True)
class Stored:
    """What decides whether a new version must be written."""

    content_hash: str
    state: str
    hold_reason: str | None


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A row to write (``body`` None: keep the stored body, only change the state)."""

    type: str
    id: str
    content_hash: str | None
    body: bytes | None
    lineage: str | None  # JSON
    state: State
    hold_reason: str | None

    def same_as(self, stored: Stored | None) -> bool:
        if stored is None:
            return False
        content = self.content_hash is None or self.content_hash == stored.content_hash
        return content and self.state == stored.state and self.hold_reason == stored.hold_reason


_COLUMNS = "type, id, content_hash, body, lineage, state, hold_reason, run_id, mapped_at, encoding"
_WRITTEN = "type, id, content_hash, body, lineage, encoding, state, hold_reason, run_id, mapped_at"


def _row(r: tuple) -> OutboundRecord:
    return OutboundRecord(r[0], r[1], r[2], bytes(packing.unpack(r[3], r[9])), json.loads(packing.unpack(r[4], r[9])),
                          r[5], r[6], r[7], r[8])


def existing(conn: sqlite3.Connection, type_: str, ids: list[str]) -> dict[str, Stored]:
    """The stored hash/state of these records (those that exist), in a few IN queries."""
    found: dict[str, Stored] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start:start + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        for id_, digest, state, reason in conn.execute(
            f"SELECT id, content_hash, state, hold_reason FROM outbound_entry WHERE type = ? AND id IN ({marks})",
            (type_, *chunk),
        ):
            found[id_] = Stored(digest, state, reason)
    return found


def write(conn: sqlite3.Connection, versions: list[NewVersion], *, run_id: int, now: str,
          stored: dict[tuple[str, str], Stored] | None = None) -> dict[str, Written]:
    """Write the versions that differ from what is stored; say for each id what happened.

    ``stored`` (from ``existing``) saves the lookup when the caller already has it. A version
    with no body (``body is None``) only moves an existing row's state (e.g. to ``held``).
    Call inside the batch's transaction.
    """
    if stored is None:
        stored = {}
        for type_ in {v.type for v in versions}:
            stored.update({(type_, k): s for k, s in existing(conn, type_, [v.id for v in versions
                                                                             if v.type == type_]).items()})
    outcomes: dict[str, Written] = {}
    upserts, moves = [], []
    for v in versions:
        before = stored.get((v.type, v.id))
        if v.same_as(before):
            outcomes[v.id] = "unchanged"
            continue
        if v.body is None:
            if before is None:
                continue  # nothing stored and nothing to store
            moves.append((v.state, v.hold_reason, run_id, now, v.type, v.id))
        else:
            upserts.append((v.type, v.id, v.content_hash, packing.pack(v.body), None if v.lineage is None else packing.pack(v.lineage),
                            packing.ENCODING, v.state, v.hold_reason, run_id, now))
        outcomes[v.id] = "new" if before is None else "changed"
    if upserts:
        conn.executemany(
            f"""INSERT INTO outbound_entry({_WRITTEN}) VALUES (?,?,?,?,?,?,?,?,?,?)
                ON CONFLICT(type, id) DO UPDATE SET content_hash = excluded.content_hash, body = excluded.body,
                    lineage = excluded.lineage, encoding = excluded.encoding, state = excluded.state,
                    hold_reason = excluded.hold_reason,
                    run_id = excluded.run_id, mapped_at = excluded.mapped_at""",
            upserts,
        )
    if moves:
        conn.executemany(
            "UPDATE outbound_entry SET state = ?, hold_reason = ?, run_id = ?, mapped_at = ? WHERE type = ? AND id = ?",
            moves,
        )
    return outcomes


def upsert(conn: sqlite3.Connection, version: NewVersion, *, run_id: int, now: str) -> Written:
    """One record: written only when its hash, state or hold reason changed."""
    return write(conn, [version], run_id=run_id, now=now).get(version.id, "unchanged")


def get(conn: sqlite3.Connection, type_: str, id_: str) -> OutboundRecord | None:
    r = conn.execute(f"SELECT {_COLUMNS} FROM outbound_entry WHERE type = ? AND id = ?", (type_, id_)).fetchone()
    return _row(r) if r else None


def _where(type_: str | None, state: str | None) -> tuple[str, list[str]]:
    clauses, args = ["1=1"], []
    for column, value in (("type", type_), ("state", state)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    return " AND ".join(clauses), args


def iter_records(conn: sqlite3.Connection, type_: str | None = None, state: str | None = None) -> Iterator[OutboundRecord]:
    """Records in (type, id) order, streamed."""
    where, args = _where(type_, state)
    for r in conn.execute(f"SELECT {_COLUMNS} FROM outbound_entry WHERE {where} ORDER BY type, id", args):
        yield _row(r)


def count(conn: sqlite3.Connection, type_: str | None = None, state: str | None = None) -> int:
    where, args = _where(type_, state)
    return conn.execute(f"SELECT count(*) FROM outbound_record WHERE {where}", args).fetchone()[0]


def counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """``{type: {state: n}}`` for every type present."""
    out: dict[str, dict[str, int]] = {}
    for type_, state, n in conn.execute("SELECT type, state, count(*) FROM outbound_record GROUP BY type, state"):
        out.setdefault(type_, {})[state] = n
    return out


def has_record(conn: sqlite3.Connection, type_: str, id_: str) -> bool:
    return conn.execute("SELECT 1 FROM outbound_record WHERE type = ? AND id = ?", (type_, id_)).fetchone() is not None
