"""Scratch tables for detectors: TEMP tables on the store's connection, so a detector can join
what Ometria holds with the outbound records in SQL instead of holding either in memory."""

from __future__ import annotations

import sqlite3
from typing import Iterable

BATCH = 1000


def fill(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: Iterable[tuple],
         index: str | None = None) -> int:
    """(Re)create ``temp.<table>`` with ``columns`` and insert ``rows`` in batches."""
    conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
    conn.execute(f"CREATE TEMP TABLE {table} ({', '.join(columns)})")
    sql = f"INSERT INTO temp.{table} VALUES ({','.join('?' * len(columns))})"
    total, batch = 0, []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            total += _insert(conn, sql, batch)
    total += _insert(conn, sql, batch)
    if index:
        conn.execute(f"CREATE INDEX temp.{table}_{index} ON {table}({index})")
    return total


def _insert(conn: sqlite3.Connection, sql: str, batch: list[tuple]) -> int:
    if not batch:
        return 0
    # Only the temp database is written: a deferred transaction does not take the store's write lock.
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    conn.executemany(sql, batch)
    if own:
        conn.execute("COMMIT")
    n = len(batch)
    batch.clear()
    return n
