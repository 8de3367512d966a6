"""What Ometria holds now, read back once per run and shared by ``diff --live`` and the detectors.

A full read-back runs at about 1,000 records/s at best (4 GET requests/s x 250 records), so a
run reads each collection once, the first time something asks for it, and keeps the documents
in a private SQLite file (deleted on close), never in memory: a million orders stream through
it in id order (the order ``diff`` merge-joins them with the outbound records and the ledger).

A single record asked for before its collection was read (``diff --live --key 2042``) is one
GET, not a read of the whole collection.

``client`` is anything with ``khaosync.ometria.client.OmetriaClient``'s read methods:
``get_order``, ``iter_orders``, ``get_product``, ``iter_products``, ``get_contact``,
``iter_contacts``, ``collections``, ``unsubscribes`` and ``push_errors``.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any, Iterator, Protocol

from khaosync.ometria import wire

# Unsubscribes are listed from this date; Ometria keeps them for the life of the account.
UNSUBSCRIBES_SINCE = datetime(2000, 1, 1, tzinfo=timezone.utc)
_INSERT_BATCH = 1000


class OmetriaReader(Protocol):
    def get_order(self, id: str) -> dict | None: ...
    def iter_orders(self) -> Iterator[dict]: ...
    def get_product(self, id: str) -> dict | None: ...
    def iter_products(self, include_variants: bool = True) -> Iterator[dict]: ...
    def get_contact(self, collection: str, id: str) -> dict | None: ...
    def iter_contacts(self, collection: str) -> Iterator[dict]: ...
    def collections(self) -> list[dict]: ...
    def unsubscribes(self, since: datetime, before: datetime | None = None) -> list[dict]: ...
    def push_errors(self) -> list[Any]: ...


class LiveSnapshot:
    """Ometria's records, read lazily, one collection at a time, kept on disk for this run."""

    def __init__(self, client: OmetriaReader, collection: str):
        self.client = client
        self.collection = collection  # ours: the mapping's contact collection
        self._db = sqlite3.connect("", isolation_level=None)  # "" : a private temporary file
        self._db.execute("CREATE TABLE record (type TEXT, collection TEXT, id TEXT, doc BLOB, "
                         "PRIMARY KEY (type, collection, id))")
        self._loaded: set[tuple[str, str]] = set()
        self._unsubscribes: list[dict] | None = None
        self._push_errors: list[Any] | None = None
        self.requests_saved = 0

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "LiveSnapshot":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- loading ---------------------------------------------------------------------------------
    def load(self, type_: str, collection: str | None = None) -> None:
        """Read a whole collection (orders, products with variants, or one contact collection)."""
        part = (type_, self._part(type_, collection))
        if part in self._loaded:
            return
        if type_ == "order":
            docs = self.client.iter_orders()
        elif type_ == "product":
            docs = self.client.iter_products(include_variants=True)
        elif type_ == "contact":
            docs = self.client.iter_contacts(part[1])
        else:
            raise ValueError(f"no read-back for {type_!r}")
        self._db.execute("DELETE FROM record WHERE type = ? AND collection = ?", part)
        batch: list[tuple] = []
        for doc in docs:
            if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
                continue  # a record without a string id cannot be ours; nothing to compare it with
            batch.append((type_, part[1], doc["id"], wire.dumps(doc)))
            if len(batch) >= _INSERT_BATCH:
                self._insert(batch)
        self._insert(batch)
        self._loaded.add(part)

    def _insert(self, batch: list[tuple]) -> None:
        if batch:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO record(type, collection, id, doc) VALUES (?,?,?,?)", batch)
            self._db.execute("COMMIT")
            batch.clear()

    def _part(self, type_: str, collection: str | None) -> str:
        return (collection or self.collection) if type_ == "contact" else ""

    def loaded(self, type_: str, collection: str | None = None) -> bool:
        return (type_, self._part(type_, collection)) in self._loaded

    # -- reading ---------------------------------------------------------------------------------
    def records(self, type_: str, collection: str | None = None) -> Iterator[tuple[str, dict]]:
        """(id, doc) of every record of the collection, in id order (reads it first if needed)."""
        self.load(type_, collection)
        part = self._part(type_, collection)
        for id_, doc in self._db.execute("SELECT id, doc FROM record WHERE type = ? AND collection = ? ORDER BY id",
                                         (type_, part)):
            yield id_, wire.loads(doc)

    def ids(self, type_: str, collection: str | None = None) -> Iterator[str]:
        self.load(type_, collection)
        part = self._part(type_, collection)
        for (id_,) in self._db.execute("SELECT id FROM record WHERE type = ? AND collection = ? ORDER BY id",
                                       (type_, part)):
            yield id_

    def extract(self, type_: str, path: str, collection: str | None = None) -> Iterator[tuple[str, Any]]:
        """(id, the value at JSON ``path``) of every record, in id order, without parsing whole documents."""
        self.load(type_, collection)
        part = self._part(type_, collection)
        yield from self._db.execute(
            "SELECT id, json_extract(CAST(doc AS TEXT), ?) FROM record WHERE type = ? AND collection = ? ORDER BY id",
            (path, type_, part))

    def get(self, type_: str, id_: str, collection: str | None = None) -> dict | None:
        """One record: from the snapshot when its collection was read, else one GET."""
        part = self._part(type_, collection)
        if (type_, part) in self._loaded:
            row = self._db.execute("SELECT doc FROM record WHERE type = ? AND collection = ? AND id = ?",
                                   (type_, part, id_)).fetchone()
            self.requests_saved += 1
            return wire.loads(row[0]) if row else None
        if type_ == "order":
            return self.client.get_order(id_)
        if type_ == "product":
            return self.client.get_product(id_)
        if type_ == "contact":
            return self.client.get_contact(part, id_)
        raise ValueError(f"no read-back for {type_!r}")

    def all_contacts(self) -> Iterator[tuple[str, str, dict]]:
        """(collection, id, doc) of every contact of every collection Ometria lists."""
        for entry in self.client.collections():
            name = entry.get("collection") if isinstance(entry, dict) else None
            if isinstance(name, str) and name:
                for id_, doc in self.records("contact", name):
                    yield name, id_, doc

    def unsubscribes(self) -> list[dict]:
        """Unsubscribes made in Ometria (``GET /unsubscribes``); not those we pushed."""
        if self._unsubscribes is None:
            self._unsubscribes = [u for u in self.client.unsubscribes(UNSUBSCRIBES_SINCE) if isinstance(u, dict)]
        return self._unsubscribes

    def push_errors(self) -> list[Any]:
        """The account's most recent record errors (``GET /push/_errors``)."""
        if self._push_errors is None:
            self._push_errors = list(self.client.push_errors())
        return self._push_errors


def as_snapshot(live: "LiveSnapshot | OmetriaReader | None", collection: str) -> "LiveSnapshot | None":
    """A snapshot over ``live`` (a client), or ``live`` itself when it already is one."""
    if live is None or isinstance(live, LiveSnapshot):
        return live
    return LiveSnapshot(live, collection)
