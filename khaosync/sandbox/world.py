"""The sandbox merchant's Khaos Control truth, kept in ``<sandbox>/world.db``.

The generator writes it, ``sandbox advance`` changes it, the KC emulator serves it.
Each entity is a table of JSON documents in KC's own terms (field names below), keyed by the
stable KC id, with ``updated`` (Europe/London local time, ``YYYY-MM-DDTHH:MM:SS``, the way KC
keeps it) so the emulator can answer "changed since" queries.

World meta keys: ``seed``, ``params``, ``clock``, ``serve_twice`` ({entity: [keys]} served twice
in one SOAP answer) and ``sites`` ([[id, name], ...] for GetSiteList, default [[1, "Main"]]).

``updated`` is compared as text, like KC's own local times: in the repeated autumn hour
text order is not time order, which is one reason pull re-reads a look-back window.

Money and quantities are decimal strings (``"12.50"``), never floats. Datetimes are KC local
time strings without offset; ``None`` where KC would say ``1899-12-31T00:00:00``.

Document shapes (every key always present):

company:
  company_id:int, company_code, company_name, company_class, company_status, web_user,
  mailing_status:int|None, currency_code, date_created, updated,
  additional:{name: value},
  addresses:[{address_id:int, addr1, addr2, addr3, town, county, postcode, country_code,
              email, tel, addr_type ("Invoice"|"Delivery"), inactive:bool}],
  contacts:[{contact_id:int, title, forename, surname, email, mobile, dob:"YYYY-MM-DD"|None,
             email_subscribe:bool|None, mailing_flag:bool, inactive:bool}]
stock_item:
  stock_id:int, stock_code, parent_stock_id:int|None, parent_code|None, stock_desc, long_desc,
  web_teaser, sell_price, vat_rate, deleted:bool, stock_type:int, manufacturer, other_ref,
  barcodes:[str], user_defined:{name: value}, images:[file name], scs:{style, colour, size}|None,
  code_history:[older codes, oldest first], updated
sales_order:
  sorder_id:int, sorder_code, associated_ref, company_id:int, company_code, contact_id:int|None,
  web_user, order_date, currency, site, sales_source, website_name, courier_code, keycode_code,
  delivery_net, delivery_tax, delivery_gross, order_amount (the ERP's gross total: lines + delivery),
  cancelled:bool, updated,
  items:[{sorder_item_id:int, stock_id:int, stock_code (as at order time), stock_desc, qty,
          price_net, price_gross (unit prices), tax_rate, discount (gross, >= 0, whole line)}],
  invoices:[{invoice_id:int, invoice_code, stage_id:int, stage_desc, issued|None,
             consignment_ref, courier_code, courier_name, tracking_number,
             items:[{sorder_item_id:int, qty}]}]
credit_note:
  credit_id:int, credit_code, sorder_id:int, sorder_code, associated_ref, issued, currency,
  reason, delivery_refund, total, updated,
  lines:[{sorder_item_id:int, stock_code, qty, value (gross)}]

A record may also carry a raw override (``raw_override`` table): bytes the emulator serves in
place of the rendered XML element, for the planted broken-XML and hostile-XML faults.

Ometria's side of the merchant before khaosync's first push (web sign-ups, unsubscribes, an
earlier integration's duplicate orders) is planted in ``ometria_seed`` / ``ometria_unsubscribe``
and loaded into the Ometria emulator by ``sandbox init``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

ENTITIES = ("company", "stock_item", "sales_order", "credit_note")
KEY_FIELD = {"company": "company_id", "stock_item": "stock_id", "sales_order": "sorder_id", "credit_note": "credit_id"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS company     (key INTEGER PRIMARY KEY, updated TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stock_item  (key INTEGER PRIMARY KEY, updated TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sales_order (key INTEGER PRIMARY KEY, updated TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS credit_note (key INTEGER PRIMARY KEY, updated TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS company_updated     ON company(updated);
CREATE INDEX IF NOT EXISTS stock_item_updated  ON stock_item(updated);
CREATE INDEX IF NOT EXISTS sales_order_updated ON sales_order(updated);
CREATE INDEX IF NOT EXISTS credit_note_updated ON credit_note(updated);
-- The emulator finds records by the codes KC's methods take (one ExportOrders call per code).
CREATE INDEX IF NOT EXISTS sales_order_code ON sales_order(CAST(json_extract(doc, '$.sorder_code') AS TEXT));
CREATE INDEX IF NOT EXISTS sales_order_ref ON sales_order(CAST(json_extract(doc, '$.associated_ref') AS TEXT));
CREATE INDEX IF NOT EXISTS company_code ON company(CAST(json_extract(doc, '$.company_code') AS TEXT));
CREATE INDEX IF NOT EXISTS stock_item_code ON stock_item(CAST(json_extract(doc, '$.stock_code') AS TEXT));
CREATE INDEX IF NOT EXISTS stock_item_parent ON stock_item(CAST(json_extract(doc, '$.parent_stock_id') AS TEXT));
CREATE TABLE IF NOT EXISTS raw_override (entity TEXT NOT NULL, key INTEGER NOT NULL, raw BLOB NOT NULL,
                                         PRIMARY KEY (entity, key));
CREATE TABLE IF NOT EXISTS ometria_seed (type TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL,
                                         PRIMARY KEY (type, id));
CREATE TABLE IF NOT EXISTS ometria_unsubscribe (email TEXT PRIMARY KEY, timestamp TEXT NOT NULL, reason TEXT NOT NULL);
"""


def dumps(doc: Any) -> str:
    """Canonical JSON: same document, same bytes (sorted keys, no spaces)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class World:
    """Read and write the sandbox merchant. Not thread-safe; one per process or request."""

    FILE = "world.db"

    def __init__(self, folder: str | Path, *, create: bool = True):
        self.folder = Path(folder)
        self.path = self.folder / self.FILE
        if not create and not self.path.is_file():
            # A reader pointed at the wrong folder must not get a silently empty world.
            raise FileNotFoundError(f"no sandbox world at {self.path}")
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=DELETE")  # a single file: byte-comparable datasets
        self.conn.executescript(_SCHEMA)

    @classmethod
    def exists(cls, folder: str | Path) -> bool:
        return (Path(folder) / cls.FILE).is_file()

    def close(self) -> None:
        self.conn.close()

    # -- transactions ------------------------------------------------------------------
    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    # -- meta --------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, dumps(value)))

    @property
    def clock(self) -> str | None:
        """The world's "now", KC local time (``YYYY-MM-DDTHH:MM:SS``)."""
        return self.get_meta("clock")

    # -- records -----------------------------------------------------------------------
    def put(self, entity: str, doc: dict) -> None:
        key = doc[KEY_FIELD[entity]]
        self.conn.execute(
            f"INSERT OR REPLACE INTO {entity}(key, updated, doc) VALUES (?, ?, ?)", (key, doc["updated"], dumps(doc))
        )

    def get(self, entity: str, key: int) -> dict | None:
        row = self.conn.execute(f"SELECT doc FROM {entity} WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def iter(self, entity: str, *, updated_since: str | None = None, updated_until: str | None = None,
             where: str | None = None, args: tuple = ()) -> Iterator[dict]:
        """Documents in key order; ``updated_since`` is exclusive, ``updated_until`` inclusive."""
        sql = f"SELECT doc FROM {entity} WHERE 1=1"
        params: list = []
        if updated_since is not None:
            sql += " AND updated > ?"
            params.append(updated_since)
        if updated_until is not None:
            sql += " AND updated <= ?"
            params.append(updated_until)
        if where:
            sql += f" AND ({where})"
            params.extend(args)
        sql += " ORDER BY key"
        for (doc,) in self.conn.execute(sql, params):
            yield json.loads(doc)

    def count(self, entity: str) -> int:
        return self.conn.execute(f"SELECT count(*) FROM {entity}").fetchone()[0]

    # -- faults and Ometria's side -----------------------------------------------------
    def set_raw_override(self, entity: str, key: int, raw: bytes) -> None:
        self.conn.execute("INSERT OR REPLACE INTO raw_override(entity, key, raw) VALUES (?, ?, ?)", (entity, key, raw))

    def raw_override(self, entity: str, key: int) -> bytes | None:
        row = self.conn.execute("SELECT raw FROM raw_override WHERE entity = ? AND key = ?", (entity, key)).fetchone()
        return bytes(row[0]) if row else None

    def raw_overrides(self, entity: str) -> dict[int, bytes]:
        return {k: bytes(r) for k, r in self.conn.execute("SELECT key, raw FROM raw_override WHERE entity = ?", (entity,))}

    def put_ometria_seed(self, type: str, id: str, doc: dict) -> None:
        self.conn.execute("INSERT OR REPLACE INTO ometria_seed(type, id, doc) VALUES (?, ?, ?)", (type, id, dumps(doc)))

    def ometria_seeds(self) -> Iterator[tuple[str, str, dict]]:
        for t, i, d in self.conn.execute("SELECT type, id, doc FROM ometria_seed ORDER BY type, id"):
            yield t, i, json.loads(d)

    def put_ometria_unsubscribe(self, email: str, timestamp: str, reason: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO ometria_unsubscribe(email, timestamp, reason) VALUES (?, ?, ?)",
            (email, timestamp, reason),
        )

    def ometria_unsubscribes(self) -> Iterator[tuple[str, str, str]]:
        yield from self.conn.execute("SELECT email, timestamp, reason FROM ometria_unsubscribe ORDER BY email")
