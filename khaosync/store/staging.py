"""Staged ERP records: every version pull has seen, raw and parsed, with its content hash.

An unchanged record adds no version; a changed one becomes version n+1 and the old one stays
(``current = 0``), so a renamed stock code or URN remains traceable through ``record_alias``.

``raw`` is kept deflated (``raw_encoding = 'zlib'``) where that is smaller, and read back here
byte for byte; a reader outside this module selects ``raw, raw_encoding`` and calls ``raw_bytes``.

``parsed`` is the record's canonical JSON without the members whose value is null
(``stored_parsed``): SQL's ``json_extract`` of an absent member is NULL as of a null one, and
every field of the ERP models that may be null defaults to null, so the models read the same
record back. ``content_hash`` stays the hash of the whole canonical text (nulls included).
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Literal

Outcome = Literal["new", "changed", "unchanged"]


@dataclass(frozen=True)
class StagedRecord:
    entity: str
    key: str
    version: int
    content_hash: str
    raw: bytes
    parsed: dict | None
    run_id: int
    seen_at: str


RAW_ENCODING = "zlib"


def deflate(raw: bytes) -> bytes:
    """The stored form of raw bytes (also ``khaosync_deflate`` in SQL, for the migration)."""
    return zlib.compress(bytes(raw), 6)


def encode_raw(raw: bytes) -> tuple[bytes, str | None]:
    """(stored bytes, raw_encoding): deflated when that is smaller, as sent otherwise."""
    packed = deflate(raw)
    return (packed, RAW_ENCODING) if len(packed) < len(raw) else (bytes(raw), None)


def raw_bytes(stored: bytes | None, encoding: str | None) -> bytes | None:
    """Exactly what the ERP sent, from a row's ``raw`` and ``raw_encoding``."""
    if stored is None:
        return None
    if encoding is None:
        return bytes(stored)
    if encoding == RAW_ENCODING:
        return zlib.decompress(stored)
    raise ValueError(f"raw kept as {encoding!r}: this khaosync cannot read it")


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]  # a null in a list keeps its place
    return value


def stored_parsed(parsed: str | None) -> str | None:
    """The stored form of a canonical parsed text: its null members left out, the rest canonical
    as it came (also ``khaosync_strip_nulls`` in SQL, for the migration)."""
    if parsed is None or "null" not in parsed:
        return parsed
    return json.dumps(_without_nulls(json.loads(parsed)), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)


def stage(conn: sqlite3.Connection, *, entity: str, key: str, raw: bytes, parsed: str | None, content_hash: str,
          run_id: int, seen_at: str, aliases: dict[str, str] | None = None) -> Outcome:
    """Store one record if it is new or changed. Call inside the batch's transaction."""
    row = conn.execute(
        "SELECT version, content_hash FROM staged_record WHERE entity = ? AND key = ? AND current = 1", (entity, key)
    ).fetchone()
    if row is not None and row[1] == content_hash:
        return "unchanged"
    version = 1 if row is None else row[0] + 1
    if row is not None:
        conn.execute("UPDATE staged_record SET current = 0 WHERE entity = ? AND key = ? AND current = 1", (entity, key))
    stored, encoding = encode_raw(raw)
    parsed = stored_parsed(parsed)
    conn.execute(
        "INSERT INTO staged_record(entity, key, version, content_hash, raw, raw_encoding, parsed, run_id, seen_at,"
        " current) VALUES (?,?,?,?,?,?,?,?,?,1)",
        (entity, key, version, content_hash, stored, encoding, parsed, run_id, seen_at),
    )
    for kind, alias in (aliases or {}).items():
        if alias:
            conn.execute(
                "INSERT OR IGNORE INTO record_alias(entity, key, alias_kind, alias, first_version) VALUES (?,?,?,?,?)",
                (entity, key, kind, alias, version),
            )
    return "new" if row is None else "changed"


def _row(r: tuple) -> StagedRecord:
    return StagedRecord(r[0], r[1], r[2], r[3], raw_bytes(r[4], r[8]), json.loads(r[5]) if r[5] else None, r[6], r[7])


_COLUMNS = "entity, key, version, content_hash, raw, parsed, run_id, seen_at, raw_encoding"


def current(conn: sqlite3.Connection, entity: str, key: str) -> StagedRecord | None:
    r = conn.execute(f"SELECT {_COLUMNS} FROM staged_record WHERE entity = ? AND key = ? AND current = 1",
                     (entity, key)).fetchone()
    return _row(r) if r else None


def current_of(conn: sqlite3.Connection, entity: str, keys: list[str]) -> list[StagedRecord]:
    """The current versions of these keys (those that exist), in key order."""
    if not keys:
        return []
    rows = conn.execute(f"SELECT {_COLUMNS} FROM staged_record WHERE entity = ? AND current = 1"
                        f" AND key IN ({','.join('?' * len(keys))}) ORDER BY key", (entity, *keys)).fetchall()
    return [_row(r) for r in rows]


def credit_notes_of_orders(conn: sqlite3.Connection, sorder_ids: Iterable[int | str], columns: str) -> Iterator[tuple]:
    """``columns`` (SQL over a staged row: ``key``, ``version``, ``parsed``) of the current credit
    notes whose order id is one of ``sorder_ids``, through the index on it (``staged_credit_order``),
    in order id then key order. KC's model holds the id as an integer; text matches text."""
    ids = sorted(set(sorder_ids), key=lambda v: (isinstance(v, str), v))
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        yield from conn.execute(
            f"SELECT {columns} FROM staged_record INDEXED BY staged_credit_order WHERE entity = 'credit_note'"
            f" AND current = 1 AND json_extract(parsed, '$.sorder_id') IN ({','.join('?' * len(part))})"
            " ORDER BY json_extract(parsed, '$.sorder_id'), key", part)


def history(conn: sqlite3.Connection, entity: str, key: str) -> list[StagedRecord]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM staged_record WHERE entity = ? AND key = ? ORDER BY version",
                        (entity, key)).fetchall()
    return [_row(r) for r in rows]


def iter_current(conn: sqlite3.Connection, entity: str, page: int = 1000) -> Iterator[StagedRecord]:
    """Current versions in key order, a page at a time.

    Paging by key (not one long cursor) lets the caller commit between pages: an open read
    statement would pin the WAL, which then grows for the whole run.
    """
    after = ""
    while True:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM staged_record WHERE entity = ? AND current = 1 AND key > ?"
            " ORDER BY key LIMIT ?", (entity, after, page)).fetchall()
        for r in rows:
            yield _row(r)
        if len(rows) < page:
            return
        after = rows[-1][1]


def count_current(conn: sqlite3.Connection, entity: str, *, parsed_only: bool = False) -> int:
    sql = "SELECT count(*) FROM staged_record WHERE entity = ? AND current = 1"
    if parsed_only:
        sql += " AND parsed IS NOT NULL"
    return conn.execute(sql, (entity,)).fetchone()[0]


def count_versions(conn: sqlite3.Connection, entity: str | None = None) -> int:
    if entity is None:
        return conn.execute("SELECT count(*) FROM staged_record").fetchone()[0]
    return conn.execute("SELECT count(*) FROM staged_record WHERE entity = ?", (entity,)).fetchone()[0]


def keys_by_alias(conn: sqlite3.Connection, entity: str, kind: str, alias: str) -> list[str]:
    """Which stable ids ever carried this code (a renamed stock code finds its item)."""
    return [r[0] for r in conn.execute(
        "SELECT key FROM record_alias WHERE entity = ? AND alias_kind = ? AND alias = ? ORDER BY key", (entity, kind, alias))]


def reject(conn: sqlite3.Connection, *, run_id: int, entity: str, key: str | None, reason: str, raw: bytes,
           received_at: str) -> int:
    cur = conn.execute(
        "INSERT INTO rejected_payload(run_id, entity, key, reason, raw, received_at) VALUES (?,?,?,?,?,?)",
        (run_id, entity, key, reason, raw, received_at),
    )
    return int(cur.lastrowid)


def get_bookmark(conn: sqlite3.Connection, entity: str) -> str | None:
    row = conn.execute("SELECT position FROM bookmark WHERE entity = ?", (entity,)).fetchone()
    return row[0] if row else None


def put_bookmark(conn: sqlite3.Connection, entity: str, position: str, run_id: int, now: str) -> None:
    """Set a bookmark whatever it held: for positions that do not order as text (an order code,
    a file's digest); the caller decides whether it moves."""
    conn.execute(
        """INSERT INTO bookmark(entity, position, run_id, updated_at) VALUES (?,?,?,?)
           ON CONFLICT(entity) DO UPDATE SET position = excluded.position, run_id = excluded.run_id,
               updated_at = excluded.updated_at""",
        (entity, position, run_id, now),
    )


def set_bookmark(conn: sqlite3.Connection, entity: str, position: str, run_id: int, now: str) -> None:
    """Move a bookmark forward only; a re-read of older data never moves it back."""
    conn.execute(
        """INSERT INTO bookmark(entity, position, run_id, updated_at) VALUES (?,?,?,?)
           ON CONFLICT(entity) DO UPDATE SET position = excluded.position, run_id = excluded.run_id,
               updated_at = excluded.updated_at
           WHERE excluded.position > bookmark.position""",
        (entity, position, run_id, now),
    )
