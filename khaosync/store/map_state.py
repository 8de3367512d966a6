"""What an incremental ``map`` needs from the last one: what each record read, the marks, the
shared-email decisions.

- ``map_read``: every (entity, key) map looked up for an outbound record, found or not (reverse
  lineage: a changed input names the records to map again). Keys are staged keys or derived
  ones: ``("contact", "7086")`` for a contact inside a company, ``("stock_item.stock_code",
  "JNS001")`` for an alias. Entity and type names are kept as codes (``map_read_name``).
- ``map_mark``: per CLI entity, the highest staging run a completed map had seen and the hash
  of the mapping rules it used; another mapping means a full map.
- ``map_shared``: per CLI entity, the shared-email decisions its last map made.

Writes happen inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Iterable

Read = tuple[str, str]
"""(entity, key) a record's mapping looked up."""


@dataclass(frozen=True)
class Mark:
    staged_run: int
    mapping: str


def latest_staged_run(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(run_id), 0) FROM staged_record").fetchone()[0]


def get_mark(conn: sqlite3.Connection, entity: str) -> Mark | None:
    row = conn.execute("SELECT staged_run, mapping FROM map_mark WHERE entity = ?", (entity,)).fetchone()
    return Mark(row[0], row[1]) if row else None


def set_mark(conn: sqlite3.Connection, entity: str, mark: Mark, run_id: int) -> None:
    conn.execute("""INSERT INTO map_mark(entity, staged_run, mapping, run_id) VALUES (?, ?, ?, ?)
        ON CONFLICT(entity) DO UPDATE SET staged_run = excluded.staged_run, mapping = excluded.mapping,
            run_id = excluded.run_id""", (entity, mark.staged_run, mark.mapping, run_id))


def staged_since(conn: sqlite3.Connection, after: int, upto: int) -> list[tuple[str, str]]:
    """(entity, key) of every record a staging run in (after, upto] added a version of."""
    return conn.execute("SELECT DISTINCT entity, key FROM staged_record WHERE run_id > ? AND run_id <= ?"
                        " ORDER BY entity, key", (after, upto)).fetchall()


def versions(conn: sqlite3.Connection, entity: str, key: str) -> list[str]:
    """The parsed form of every version of one record (the old ones name what it used to point at)."""
    return [p for (p,) in conn.execute("SELECT parsed FROM staged_record WHERE entity = ? AND key = ? AND parsed"
                                       " IS NOT NULL ORDER BY version", (entity, key))]


def aliases(conn: sqlite3.Connection, entity: str, key: str) -> list[tuple[str, str]]:
    return conn.execute("SELECT alias_kind, alias FROM record_alias WHERE entity = ? AND key = ?",
                        (entity, key)).fetchall()


def _codes(conn: sqlite3.Connection, names: set[str], *, add: bool = False) -> dict[str, int]:
    """The codes of these names in map_read (``add``: giving the new ones a code)."""
    if add:
        conn.executemany("INSERT OR IGNORE INTO map_read_name(name) VALUES (?)", ((n,) for n in sorted(names)))
    ordered = sorted(names)
    return {name: code for code, name in conn.execute(
        f"SELECT code, name FROM map_read_name WHERE name IN ({','.join('?' * len(ordered))})", ordered)}


def readers(conn: sqlite3.Connection, reads: Iterable[Read], type_: str) -> set[str]:
    """Ids of the ``type_`` records that read any of ``reads``."""
    found: set[str] = set()
    reads = list(reads)
    codes = _codes(conn, {type_} | {e for e, _ in reads})
    if type_ not in codes:
        return found
    for entity, key in reads:
        if entity in codes:
            found.update(i for (i,) in conn.execute(
                "SELECT id FROM map_read WHERE entity = ? AND key = ? AND type = ?", (codes[entity], key, codes[type_])))
    return found


def replace_reads(conn: sqlite3.Connection, type_: str, reads: dict[str, set[Read]]) -> None:
    """What each of these records read this run, instead of what it read before."""
    codes = _codes(conn, {type_} | {e for keys in reads.values() for e, _ in keys}, add=True)
    type_code = codes[type_]
    conn.executemany("DELETE FROM map_read WHERE type = ? AND id = ?", ((type_code, i) for i in reads))
    conn.executemany("INSERT OR IGNORE INTO map_read(entity, key, type, id) VALUES (?, ?, ?, ?)",
                     ((codes[e], k, type_code, i) for i, keys in reads.items() for e, k in keys))


def read_keys(conn: sqlite3.Connection, type_: str, ids: Iterable[str], entity: str) -> set[str]:
    """The keys of ``entity`` these ``type_`` records read (a record's credit notes, say)."""
    codes = _codes(conn, {type_, entity})
    found: set[str] = set()
    if type_ not in codes or entity not in codes:
        return found
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), 500):
        part = ordered[start:start + 500]
        found.update(k for (k,) in conn.execute(
            f"SELECT key FROM map_read INDEXED BY map_read_record WHERE type = ? AND id IN ({','.join('?' * len(part))})"
            " AND entity = ?", (codes[type_], *part, codes[entity])))
    return found


def all_reads(conn: sqlite3.Connection, type_: str, id_: str) -> set[Read]:
    """What one record read, by name (for tests and tracing)."""
    return set(conn.execute("SELECT e.name, r.key FROM map_read r JOIN map_read_name e ON e.code = r.entity"
                            " JOIN map_read_name t ON t.code = r.type WHERE t.name = ? AND r.id = ?", (type_, id_)))


def shared_decisions(conn: sqlite3.Connection, entity: str) -> dict[int, str]:
    return dict(conn.execute("SELECT contact_id, decision FROM map_shared WHERE entity = ?", (entity,)).fetchall())


def set_shared_decisions(conn: sqlite3.Connection, entity: str, decisions: dict[int, str]) -> None:
    conn.execute("DELETE FROM map_shared WHERE entity = ?", (entity,))
    conn.executemany("INSERT INTO map_shared(entity, contact_id, decision) VALUES (?, ?, ?)",
                     ((entity, c, d) for c, d in sorted(decisions.items())))
