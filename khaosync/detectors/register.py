"""The exceptions register, read for people: one finding with every record it involves.

``show_exception`` gathers, for each record reference of a finding, what khaosync holds about
it: the ERP's raw bytes and parsed form (staged records), what map made of it (outbound
records, found through their lineage), what Ometria accepted (the ledger), and, for records
only Ometria holds, the copy the detector kept when it saw them. Rows are read with plain SQL:
``StateStore.exceptions()`` gives the list, this gives one row whole.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from khaosync.store import staging
from khaosync.store.db import ExceptionRow, read_exceptions

ERP_ENTITIES = ("company", "stock_item", "sales_order", "credit_note")
OMETRIA_TYPES = ("contact", "order", "product")
# An ERP record's Ometria record has the same key for these (map keys them on the stable id).
SAME_KEY = {"stock_item": "product", "sales_order": "order"}
MAX_LINKED = 20


@dataclass
class RecordView:
    ref: str
    kind: str
    key: str
    erp: list[dict] = field(default_factory=list)       # [{entity, key, version, raw, parsed}]
    mapped: list[dict] = field(default_factory=list)    # [{type, id, state, hold_reason, body}]
    ledger: list[dict] = field(default_factory=list)    # [{type, id, accepted_at, verified_at, body}]
    ometria: Any = None                                 # what the detector saw in Ometria
    other: dict | None = None                           # a push batch, ...
    note: str | None = None

    def as_dict(self) -> dict:
        return {"ref": self.ref, "kind": self.kind, "key": self.key, "erp": self.erp, "mapped": self.mapped,
                "ledger": self.ledger, "ometria": self.ometria, "other": self.other, "note": self.note}


@dataclass(frozen=True)
class ExceptionDetail(ExceptionRow):
    """One register row with a view of every record it involves."""

    views: tuple[RecordView, ...] = ()

    @property
    def rule(self) -> str | None:
        return self.detail.get("rule") if isinstance(self.detail, dict) else None

    def as_dict(self) -> dict:
        return {"id": self.id, "type": self.type, "severity": self.severity, "owner": self.owner,
                "status": self.status, "stage": self.stage, "entity": self.entity, "key": self.record_key,
                "reason": self.reason, "rule": self.rule, "records": self.records, "detail": self.detail or {},
                "first_seen": self.first_seen, "last_seen": self.last_seen, "resolved_at": self.resolved_at,
                "involved": [v.as_dict() for v in self.views]}


def _text(raw: bytes | str | None) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    return bytes(raw).decode("utf-8", errors="replace")


def _json(text: str | bytes | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text, parse_float=Decimal)  # amounts stay exact
    except ValueError:
        return _text(text) if isinstance(text, bytes) else text


def _staged(conn: sqlite3.Connection, entity: str, key: str) -> dict | None:
    row = conn.execute("SELECT version, raw, parsed, raw_encoding FROM staged_record WHERE entity = ? AND key = ?"
                       " AND current = 1", (entity, key)).fetchone()
    if row is None:
        return None
    return {"entity": entity, "key": key, "version": row[0], "raw": _text(staging.raw_bytes(row[1], row[3])),
            "parsed": _json(row[2])}


def _outbound(conn: sqlite3.Connection, type_: str, id_: str) -> dict | None:
    row = conn.execute("SELECT state, hold_reason, body, lineage FROM outbound_record WHERE type = ? AND id = ?",
                       (type_, id_)).fetchone()
    if row is None:
        return None
    return {"type": type_, "id": id_, "state": row[0], "hold_reason": row[1], "body": _json(row[2]),
            "lineage": _json(row[3])}


def _ledger(conn: sqlite3.Connection, type_: str, id_: str) -> dict | None:
    row = conn.execute("SELECT accepted_at, verified_at, body FROM ledger WHERE type = ? AND id = ?",
                       (type_, id_)).fetchone()
    if row is None:
        return None
    return {"type": type_, "id": id_, "accepted_at": row[0], "verified_at": row[1], "body": _json(row[2])}


def _mapped_from(conn: sqlite3.Connection, entity: str, key: str) -> list[tuple[str, str]]:
    """Outbound records an ERP record went into (by lineage; a full scan, fine for one finding)."""
    found = []
    same = SAME_KEY.get(entity)
    if same and _outbound(conn, same, key) is not None:
        found.append((same, key))
    for type_, id_ in conn.execute(
            "SELECT o.type, o.id FROM outbound_record o, json_each(o.lineage) j "
            "WHERE json_extract(j.value, '$.entity') = ? AND CAST(json_extract(j.value, '$.key') AS TEXT) = ? "
            "ORDER BY o.type, o.id LIMIT ?", (entity, key, MAX_LINKED)):
        if (type_, id_) not in found:
            found.append((type_, id_))
    return found


def _company_of_contact(conn: sqlite3.Connection, contact_id: str) -> str | None:
    row = conn.execute(
        "SELECT s.key FROM staged_record s, json_each(s.parsed, '$.contacts') c WHERE s.entity = 'company' "
        "AND s.current = 1 AND s.parsed IS NOT NULL AND CAST(json_extract(c.value, '$.contact_id') AS TEXT) = ? "
        "LIMIT 1", (contact_id,)).fetchone()
    return row[0] if row else None


def _ometria_copy(detail: dict, kind: str, key: str) -> Any:
    """What a live detector kept of an Ometria-only record."""
    seen = detail.get("ometria")
    if isinstance(seen, list):
        return next((d for d in seen if isinstance(d, dict) and d.get("id") == key), None)
    if isinstance(seen, dict) and kind == "ometria_contact" and seen.get("record") is not None:
        return seen["record"]
    return seen


def view_record(conn: sqlite3.Connection, ref: str, detail: dict | None = None) -> RecordView:
    kind, _, key = ref.partition(":")
    view = RecordView(ref, kind, key)
    detail = detail or {}
    if kind in ERP_ENTITIES:
        staged = _staged(conn, kind, key)
        if staged is None:
            view.note = f"no staged {kind} {key}"
        else:
            view.erp.append(staged)
        for type_, id_ in _mapped_from(conn, kind, key):
            view.mapped.append(_outbound(conn, type_, id_))  # type: ignore[arg-type]
            ledger = _ledger(conn, type_, id_)
            if ledger is not None:
                view.ledger.append(ledger)
    elif kind in OMETRIA_TYPES:
        mapped = _outbound(conn, kind, key)
        if mapped is not None:
            view.mapped.append(mapped)
        ledger = _ledger(conn, kind, key)
        if ledger is not None:
            view.ledger.append(ledger)
        sources = [(e["entity"], str(e["key"])) for e in (mapped or {}).get("lineage") or []
                   if isinstance(e, dict) and e.get("entity") in ERP_ENTITIES]
        if not sources and kind == "contact":
            company = _company_of_contact(conn, key)
            sources = [("company", company)] if company else []
        if not sources and kind in ("order", "product"):
            sources = [({"order": "sales_order", "product": "stock_item"}[kind], key)]
        for entity, source_key in sources[:MAX_LINKED]:
            staged = _staged(conn, entity, source_key)
            if staged is not None:
                view.erp.append(staged)
        if not (view.mapped or view.ledger or view.erp):
            view.note = f"khaosync holds nothing for {ref}"
    elif kind.startswith("ometria_"):
        view.ometria = _ometria_copy(detail, kind, key)
        view.note = ("held by Ometria only; below is what the detector read" if view.ometria is not None
                     else "held by Ometria only; the detector kept no copy")
    elif kind == "push_batch":
        row = conn.execute("SELECT id, plan_id, type, records, state, request_id, accepted, rejected, created_at, "
                           "answered_at, error FROM push_batch WHERE id = ?", (key,)).fetchone()
        if row is None:
            view.note = f"no push batch {key}"
        else:
            names = ("id", "plan_id", "type", "records", "state", "request_id", "accepted", "rejected", "created_at",
                     "answered_at", "error")
            view.other = dict(zip(names, row))
            view.other["records"] = _json(row[3])
    else:
        view.note = f"no view for {kind!r} references"
    return view


def show_exception(conn: sqlite3.Connection, exception_id: int) -> ExceptionDetail | None:
    found = read_exceptions(conn, "id = ?", (exception_id,))
    if not found:
        return None
    row = found[0]
    detail = row.detail or {}
    views = tuple(view_record(conn, r, detail) for r in row.records)
    return ExceptionDetail(**{**row.__dict__, "detail": detail}, views=views)
