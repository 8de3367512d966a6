"""Diff: what would change in Ometria, record by record, and the plan that ``push`` sends.

``diff_records`` compares the outbound records ``map`` made with what Ometria last accepted
from us (the ledger) or, with a live client, with what Ometria holds now, for one record
type. Every record lands in one of:

- ``new``: ready, and Ometria has nothing under its id (ledger: never accepted);
- ``changed``: ready, and at least one field differs (values compared exactly: amounts as
  ``Decimal``, so ``19.9`` equals ``19.90`` but ``19.99`` never equals ``19.990000001``);
- ``unchanged``: ready and equal (a different hash with equal values is unchanged too);
- ``void``: an order or product Ometria holds from us (the ledger) that map no longer makes
  ready (held, or gone): it is sent again voided, the only removal Ometria has
  (orders ``is_valid: false`` + the mapping's cancelled status; products ``is_active: false``);
  one already void is unchanged;
- ``held``: a contact in the same position. People cannot be voided (only GDPR-deleted, a
  human decision): reported, never planned.

New, changed and void records go into a plan (``khaosync.store.plans``) with their exact
bodies and hashes. Both sides are streamed in id order and merge-joined, so memory does not
grow with the number of records; bodies are read and parsed only when hashes differ.

Live comparison reads Ometria back (``khaosync.detectors.live``). Ometria merges every
record it is sent into the one it holds (contacts, products and orders alike), so only the
fields we send count (Ometria may hold web data we never sent). Push directives (``@merge``,
``@force_optin``, list changes) are instructions, not stored fields: ignored.

A field we stop sending would stay in Ometria (fields not sent are kept), so a changed
record's planned body carries a ``null`` for every field the ledger's version had and the new
one lacks (``khaosync.ometria.blanks``); its hash stays the outbound version's. With
``--live``, a field Ometria still holds after it accepted our blank is not a change (sending
the blank again would not clear it): the ``stale_fields`` detector reports it as
``stale_field``. Null, "" and absent are the same value here: none is a value.

Field paths: ``status``, ``customer.id``, ``lineitems[0].quantity``. A whole object or line
present on one side only is one path (``lineitems[2]``) with the object as its value.
"""

from __future__ import annotations

import json
import sqlite3
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from operator import itemgetter
from typing import Any, Iterable, Iterator

from khaosync.config import Profile
from khaosync.detectors import Finding, load_mapping_for, run_detectors, selected_checks
from khaosync.detectors.live import LiveSnapshot, OmetriaReader, as_snapshot
from khaosync.errors import ConfigError
from khaosync.ometria import wire
from khaosync.ometria.blanks import is_blank, stale_paths, with_blanks
from khaosync.store import StateStore, map_state, plans
from khaosync.store.db import utcnow

STAGE = "diff"
ENTITIES: dict[str, str] = {"contacts": "contact", "orders": "order", "products": "product"}
CHANGES = ("new", "changed", "unchanged", "void", "held")
MERGED_TYPES = frozenset({"contact", "product", "order"})  # Ometria merges the fields sent into what it holds
DIRECTIVES = frozenset({"@merge", "@force_optin", "@add_to_lists", "@remove_from_lists"})
_PLAN_BATCH = 1000
_MERGE_BLOCK = 2048  # rows a whole diff reads of each side at a time


class _Missing:
    """A field one side does not have (shown as null in JSON, ``-`` in tables)."""

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


# -- comparing two records -------------------------------------------------------------------


@dataclass(frozen=True)
class FieldChange:
    before: Any  # Ometria's (ledger or live) value, MISSING if it has none
    after: Any   # ours (outbound, or the voiding version), MISSING if we send none

    def as_dict(self) -> dict:
        return {"before": _plain(self.before), "after": _plain(self.after)}


def _plain(value: Any) -> Any:
    return None if value is MISSING else value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


def same_value(a: Any, b: Any) -> bool:
    """Equal as Ometria would see it: numbers by exact value, booleans only as booleans."""
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    return type(a) is type(b) and a == b


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _compare(a: Any, b: Any, path: str, out: dict[str, FieldChange]) -> None:
    a = MISSING if is_blank(a) else a
    b = MISSING if is_blank(b) else b
    if a is MISSING and b is MISSING:
        return  # null, "" and absent: no value either way (Ometria's "blank data")
    if a is MISSING or b is MISSING:
        out[path] = FieldChange(a, b)
    elif isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _compare(a.get(key, MISSING), b.get(key, MISSING), _join(path, key), out)
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            _compare(a[i] if i < len(a) else MISSING, b[i] if i < len(b) else MISSING, f"{path}[{i}]", out)
    elif not same_value(a, b):
        out[path] = FieldChange(a, b)


def field_changes(before: dict, after: dict, *, only_sent: bool = False) -> dict[str, FieldChange]:
    """Every path whose value differs, ``before`` (Ometria's) against ``after`` (ours).

    ``only_sent``: compare only the top-level fields ``after`` carries (merged record types).
    """
    keys = set(after) if only_sent else set(before) | set(after)
    out: dict[str, FieldChange] = {}
    for key in sorted(keys - DIRECTIVES):
        _compare(before.get(key, MISSING), after.get(key, MISSING), key, out)
    return out


def path_matches(path: str, wanted: str) -> bool:
    """``--field lineitems`` matches ``lineitems[0].quantity``; ``--field customer`` ``customer.id``."""
    return path == wanted or path.startswith(wanted + ".") or path.startswith(wanted + "[")


def voided(type_: str, doc: dict, cancelled_status: str = "cancelled") -> dict | None:
    """The voiding version of a record Ometria holds from us, or None when it is void already."""
    if type_ == "order":
        if doc.get("is_valid") is False:
            return None  # already out of Ometria's revenue (cancelled or refunded): nothing to void
        return {**doc, "is_valid": False, "status": cancelled_status}
    if type_ == "product":
        if doc.get("is_active") is False:
            return None
        return {**doc, "is_active": False}
    return None  # contacts cannot be voided


# -- the result ------------------------------------------------------------------------------


@dataclass
class RecordDiff:
    type: str
    key: str
    change: str
    fields: dict[str, FieldChange] = field(default_factory=dict)
    reason: str | None = None  # why a record is void or held (map's hold reason)

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"key": self.key, "change": self.change,
                               "fields": {p: c.as_dict() for p, c in self.fields.items()}}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class DiffResult:
    type: str
    plan_id: str
    run_id: int
    live: bool
    counts: dict[str, int] = field(default_factory=lambda: {c: 0 for c in CHANGES})
    records: list[RecordDiff] = field(default_factory=list)  # what matched --field, up to --limit
    listed: int = 0       # how many matched --field (records holds at most --limit of them)
    planned: int = 0      # plan records written (new + changed + void)
    superseded: list[str] = field(default_factory=list)
    pruned: dict[str, int] = field(default_factory=dict)  # what prune_plans removed (plans.retention_days)
    findings: list[Finding] = field(default_factory=list)
    keys: list[str] | None = None
    fields_filter: list[str] | None = None
    compared: int | None = None  # a nightly diff: the candidate ids compared (None: every record)

    @property
    def entity(self) -> str:
        return {v: k for k, v in ENTITIES.items()}[self.type]

    carried_fail: int = 0  # a nightly diff: fail findings of its checks left open, not looked at again

    @property
    def fail_findings(self) -> int:
        return sum(1 for f in self.findings if f.severity == "fail") + self.carried_fail

    def as_dict(self) -> dict:
        """The machine contract (docs/diff.md): ``plan``, ``counts``, ``records`` and more."""
        return {
            "plan": self.plan_id, "entity": self.entity, "type": self.type, "live": self.live, "run": self.run_id,
            "counts": dict(self.counts), "planned": self.planned, "superseded": list(self.superseded),
            "listed": self.listed, "records": [r.as_dict() for r in self.records],
            "findings": [f.as_dict() for f in self.findings],
        }


# -- reading both sides in id order ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Out:
    content_hash: str
    state: str
    hold_reason: str | None


def _keys_clause(keys: list[str] | None) -> tuple[str, list]:
    if not keys:
        return "", []
    return f" AND id IN ({','.join('?' * len(keys))})", list(keys)


def _outbound(conn: sqlite3.Connection, type_: str, keys: list[str] | None) -> Iterator[tuple[str, _Out]]:
    extra, args = _keys_clause(keys)
    for id_, h, state, reason in conn.execute(
            f"SELECT id, content_hash, state, hold_reason FROM outbound_record WHERE type = ?{extra} ORDER BY id",
            [type_, *args]):
        yield id_, _Out(h, state, reason)


def _ledger(conn: sqlite3.Connection, type_: str, keys: list[str] | None) -> Iterator[tuple[str, str]]:
    extra, args = _keys_clause(keys)
    yield from conn.execute(f"SELECT id, content_hash FROM ledger WHERE type = ?{extra} ORDER BY id", [type_, *args])


def _live(snapshot: LiveSnapshot, type_: str, keys: list[str] | None) -> Iterator[tuple[str, dict]]:
    if keys and not snapshot.loaded(type_):
        for id_ in sorted(set(keys)):
            doc = snapshot.get(type_, id_)
            if doc is not None:
                yield id_, doc
        return
    wanted = set(keys) if keys else None
    for id_, doc in snapshot.records(type_):
        if wanted is None or id_ in wanted:
            yield id_, doc


def merge_by_id(*streams: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, list[Any]]]:
    """Merge-join streams sorted by id (SQLite's BINARY order is Python's str order)."""
    its = [iter(s) for s in streams]
    heads = [next(it, None) for it in its]
    while True:
        live = [h[0] for h in heads if h is not None]
        if not live:
            return
        key = min(live)
        row = []
        for i, head in enumerate(heads):
            if head is not None and head[0] == key:
                row.append(head[1])
                heads[i] = next(its[i], None)
            else:
                row.append(None)
        yield key, row


def as_bytes(value: bytes | str) -> bytes:
    """A body column's bytes (a row written by hand may hold TEXT instead of a BLOB)."""
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _body(conn: sqlite3.Connection, table: str, type_: str, id_: str) -> dict:
    row = conn.execute(f"SELECT body FROM {table} WHERE type = ? AND id = ?", (type_, id_)).fetchone()
    return wire.loads(as_bytes(row[0]))


# -- the stage -------------------------------------------------------------------------------


def entity_type(entity: str) -> str:
    """``orders`` or ``order`` -> ``order``; anything else is a usage error."""
    if entity in ENTITIES:
        return ENTITIES[entity]
    if entity in ENTITIES.values():
        return entity
    raise ConfigError(f"diff: unknown entity {entity!r}; choose contacts, orders or products")


class _Differ:
    """One diff of one record type: decides each record's change and writes the plan."""

    def __init__(self, conn: sqlite3.Connection, result: DiffResult, *, plan_id: str, cancelled_status: str,
                 fields: list[str] | None, limit: int | None):
        self.conn = conn
        self.result = result
        self.type = result.type
        self.plan_id = plan_id
        self.cancelled_status = cancelled_status
        self.fields = fields
        self.limit = limit
        self.pending: list[plans.PlanRow] = []

    # -- outcomes ------------------------------------------------------------------------
    def count(self, change: str) -> None:
        self.result.counts[change] += 1

    def show(self, diff: RecordDiff) -> None:
        if self.fields:
            kept = {p: c for p, c in diff.fields.items() if any(path_matches(p, f) for f in self.fields)}
            if not kept:
                return
            diff.fields = kept
        self.result.listed += 1
        if self.limit is None or len(self.result.records) < self.limit:
            self.result.records.append(diff)

    def plan(self, id_: str, change: str, content_hash: str, body: bytes) -> None:
        self.pending.append((self.type, id_, change, content_hash, body))
        self.result.planned += 1
        if len(self.pending) >= _PLAN_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            plans.add_records(self.conn, self.plan_id, self.pending)
            self.pending.clear()

    def outbound_bytes(self, id_: str) -> bytes:
        row = self.conn.execute("SELECT body FROM outbound_record WHERE type = ? AND id = ?",
                                (self.type, id_)).fetchone()
        return as_bytes(row[0])

    def outbound_body(self, id_: str) -> tuple[bytes, dict]:
        body = self.outbound_bytes(id_)
        return body, wire.loads(body)

    def ready(self, id_: str, out: _Out, before: dict | None, *, only_sent: bool,
              accepted: dict | None = None) -> None:
        """``before``: what Ometria holds (the ledger's body, or live); ``accepted``: the ledger's
        body, whose fields the new version leaves out are sent as blanks."""
        if before is None:
            self.count("new")
            self.plan(id_, "new", out.content_hash, self.outbound_bytes(id_))  # nothing to compare: not parsed
            self.show(RecordDiff(self.type, id_, "new"))
            return
        body, ours = self.outbound_body(id_)
        if accepted is not None:
            blanked = with_blanks(accepted, ours)
            if blanked != ours:
                body, ours = wire.dumps(blanked), blanked
        changes = field_changes(before, ours, only_sent=only_sent)
        if accepted is not None and before is not accepted:
            # live: a field Ometria kept after it accepted our blank is stale, not a change
            stale = set(stale_paths(accepted, before))
            changes = {p: c for p, c in changes.items() if p not in stale}
        if not changes:
            self.count("unchanged")
            return
        self.count("changed")
        self.plan(id_, "changed", out.content_hash, body)
        self.show(RecordDiff(self.type, id_, "changed", changes))

    def gone(self, id_: str, out: _Out | None, sent: dict, held_in_ometria: dict, *, only_sent: bool) -> None:
        """A record Ometria holds from us (``sent``: the ledger's body; ``held_in_ometria``: what
        Ometria holds, the same without --live) that map no longer makes ready."""
        reason = out.hold_reason if out is not None else "no longer mapped"
        if self.type == "contact":
            self.count("held")
            fields = {}
            if out is not None:
                fields = field_changes(held_in_ometria, self.outbound_body(id_)[1], only_sent=only_sent)
            self.show(RecordDiff(self.type, id_, "held", fields, reason))
            return
        void = voided(self.type, sent, self.cancelled_status)
        if void is None or voided(self.type, held_in_ometria, self.cancelled_status) is None:
            self.count("unchanged")  # void already: nothing would change
            return
        body = wire.dumps(void)
        self.count("void")
        self.plan(id_, "void", wire.content_hash(body), body)
        self.show(RecordDiff(self.type, id_, "void", field_changes(held_in_ometria, void, only_sent=only_sent),
                             reason))

    # -- against the ledger ---------------------------------------------------------------------
    def against_ledger(self, keys: list[str] | None, *, candidates: bool = False) -> None:
        # This is the whole cost of a full diff. Both sides are read in id order from small indexes,
        # a block at a time, as (id, hash) pairs, the outbound hash only when the record is ready: a
        # pair on both sides is a record unchanged since Ometria accepted it. A block's pairs are
        # matched as sets (in C); only what is left is looked at one by one, in id order.
        # ``candidates``: only the ids in temp.diff_candidate (a nightly diff after an incremental
        # map), however many they are.
        extra, args = (" AND id IN (SELECT id FROM temp.diff_candidate)", []) if candidates else _keys_clause(keys)
        outs = self.conn.execute(f"SELECT id, iif(state = 'ready', content_hash, NULL) FROM outbound_record "
                                 f"WHERE type = ?{extra} ORDER BY id", [self.type, *args])
        sent = self.conn.execute(f"SELECT id, content_hash FROM ledger WHERE type = ?{extra} ORDER BY id",
                                 [self.type, *args])
        unchanged, theirs, sent_done = 0, [], False
        while block := outs.fetchmany(_MERGE_BLOCK):
            last = block[-1][0]
            while not sent_done and (not theirs or theirs[-1][0] <= last):
                more = sent.fetchmany(_MERGE_BLOCK)
                sent_done = not more
                theirs.extend(more)
            upto = bisect_right(theirs, last, key=itemgetter(0))
            unchanged += self._merge_block(block, theirs[:upto])
            del theirs[:upto]
        for row in theirs:
            self._ledger_only(row)
        for row in sent:
            self._ledger_only(row)
        self.result.counts["unchanged"] += unchanged
        self.flush()

    def _merge_block(self, ours: list[tuple], theirs: list[tuple]) -> int:
        """Outbound pairs and the ledger's pairs over the same ids: the unchanged count; every other
        record decided here, in id order."""
        same = set(ours).intersection(theirs)
        if len(same) == len(ours) == len(theirs):
            return len(same)
        our_rest = [o[0] for o in ours if o not in same]
        their_rest = {s[0] for s in theirs if s not in same}
        rows = {}
        for at in range(0, len(our_rest), 500):
            chunk = our_rest[at:at + 500]
            rows.update((r[0], r) for r in self.conn.execute(
                f"SELECT id, content_hash, state, hold_reason FROM outbound_record WHERE type = ? "
                f"AND id IN ({','.join('?' * len(chunk))})", [self.type, *chunk]))
        for id_ in sorted(their_rest.union(our_rest)):
            if id_ not in rows:
                self._ledger_only((id_,))
            elif id_ in their_rest:
                self._both(rows[id_])
            else:
                self._outbound_only(rows[id_])
        return len(same)

    def _outbound_only(self, row: tuple) -> None:
        if row[2] == "ready":
            self.ready(row[0], _Out(*row[1:]), None, only_sent=False)

    def _ledger_only(self, row: tuple) -> None:
        self.gone(row[0], None, *self._ledger_twice(row[0]), only_sent=False)

    def _both(self, row: tuple) -> None:
        id_, out = row[0], _Out(*row[1:])
        if out.state == "ready":
            accepted = _body(self.conn, "ledger", self.type, id_)
            self.ready(id_, out, accepted, only_sent=False, accepted=accepted)
        else:
            self.gone(id_, out, *self._ledger_twice(id_), only_sent=False)

    def _ledger_twice(self, id_: str) -> tuple[dict, dict]:
        doc = _body(self.conn, "ledger", self.type, id_)
        return doc, doc

    # -- against what Ometria holds now ------------------------------------------------------------
    def against_live(self, snapshot: LiveSnapshot, keys: list[str] | None) -> None:
        only_sent = self.type in MERGED_TYPES
        streams = (_outbound(self.conn, self.type, keys), _ledger(self.conn, self.type, keys),
                   _live(snapshot, self.type, keys))
        for id_, (out, sent_hash, held) in merge_by_id(*streams):
            if out is not None and out.state == "ready":
                accepted = _body(self.conn, "ledger", self.type, id_) if sent_hash is not None else None
                self.ready(id_, out, held, only_sent=only_sent, accepted=accepted)
            elif sent_hash is not None and held is not None:
                self.gone(id_, out, _body(self.conn, "ledger", self.type, id_), held, only_sent=only_sent)
            # else: held and never accepted, or an Ometria record that is not ours (the detectors' business)
        self.flush()


# -- a nightly diff: only what can have moved since the last sync ---------------------------------

STAGED_BY_TYPE = {"product": "stock_item", "contact": "company", "order": "sales_order"}
MAP_ENTITY = {"product": "products", "contact": "contacts", "order": "orders"}  # map's marks by record type


def nightly_basis(conn: sqlite3.Connection, run_id: int, types: Iterable[str]) -> int | None:
    """The previous sync run whose diff this run's diff can build on, or None (diff everything).

    Sound when nothing but that sync and its push touched the outbound records and the ledger
    of ``types`` since its diff: it finished ok, it made the last map of each type (``map_mark``),
    it diffed each type and its plans are not pruned, and every push since sent a plan made at
    or after it. Call before this run's map (which moves the marks)."""
    row = conn.execute("SELECT id, status, started_at FROM run WHERE command = 'sync' AND id < ? ORDER BY id DESC"
                       " LIMIT 1", (run_id,)).fetchone()
    if row is None or row[1] != "ok":
        return None
    basis, started = row[0], row[2]
    types = [entity_type(t) for t in types]
    for type_ in types:
        mark = conn.execute("SELECT run_id FROM map_mark WHERE entity = ?", (MAP_ENTITY[type_],)).fetchone()
        if mark is None or mark[0] != basis:
            return None  # another map ran since (or none did): what it changed was never diffed
    since = conn.execute("SELECT id, run_id, scope, pruned_at FROM plan WHERE run_id >= ?", (basis,)).fetchall()
    if any(pruned is not None for _, _, _, pruned in since):
        return None
    diffed = {t for _, r, scope, _ in since if r == basis for t in json.loads(scope)}
    if not set(types) <= diffed:
        return None
    plans_since = {p for p, _, _, _ in since}
    for plan_id, created in conn.execute("SELECT plan_id, created_at FROM push_batch ORDER BY id DESC"):
        if created < started:
            break  # batches are journaled in id order
        if plan_id not in plans_since:
            return None  # a push of an older plan changed the ledger
    return basis


def nightly_candidates(conn: sqlite3.Connection, type_: str, changed: dict[str, set[str]], basis: int) -> set[str] | None:
    """Every id of ``type_`` whose diff can be anything but ``unchanged``: the records map looked at
    again (``changed``: staged entity -> keys) and every record planned since ``basis`` (what was
    not unchanged then, and all the ledger took since). None: map looked at all of them."""
    staged = changed.get(STAGED_BY_TYPE[type_])
    if staged is None:
        return None
    if type_ == "contact":  # a company's contacts, as any of its versions held them
        ids: set[str] = set()
        for key in staged:
            for text in map_state.versions(conn, "company", key):
                doc = json.loads(text)
                ids.update(str(c["contact_id"]) for c in doc.get("contacts") or []
                           if isinstance(c, dict) and c.get("contact_id") is not None)
    else:
        ids = set(staged)  # orders and products are keyed on the staged key
    ids.update(i for (i,) in conn.execute(
        "SELECT r.id FROM plan p JOIN plan_record r ON r.plan_id = p.id AND r.type = ? WHERE p.run_id >= ?",
        (type_, basis)))
    return ids


def _fill_candidates(conn: sqlite3.Connection, ids: set[str]) -> None:
    conn.execute("DROP TABLE IF EXISTS temp.diff_candidate")
    conn.execute("CREATE TEMP TABLE diff_candidate (id TEXT PRIMARY KEY) WITHOUT ROWID")
    conn.executemany("INSERT INTO temp.diff_candidate VALUES (?)", ((i,) for i in sorted(ids)))


def _count_the_rest(conn: sqlite3.Connection, result: DiffResult) -> None:
    """Counts for the records not compared: each is as the basis left it, unchanged, or held (a
    contact Ometria holds that map does not make ready). Every record Ometria holds from us is
    changed, void, held or unchanged, so unchanged is the ledger's count less the others."""
    conn.execute("DROP TABLE IF EXISTS temp.diff_candidate")
    counts = result.counts
    if result.type == "contact":
        counts["held"] = conn.execute(
            "SELECT count(*) FROM ledger l LEFT JOIN outbound_record o ON o.type = l.type AND o.id = l.id "
            "WHERE l.type = 'contact' AND (o.id IS NULL OR o.state != 'ready')").fetchone()[0]
    in_ledger = conn.execute("SELECT count(*) FROM ledger WHERE type = ?", (result.type,)).fetchone()[0]
    counts["unchanged"] = in_ledger - counts["changed"] - counts["void"] - counts["held"]


def _made_by(entity: str, live: bool, keys: list[str] | None) -> str:
    """The diff as an operator would type it, so push can say which review it sends."""
    return " ".join(["diff", entity] + (["--live"] if live else []) + [f"--key {k}" for k in keys or []])


def _new_plan_id(conn: sqlite3.Connection, run_id: int, now: datetime) -> str:
    base = plans.plan_id_for(run_id, now)
    plan_id, n = base, 0
    while conn.execute("SELECT 1 FROM plan WHERE id = ?", (plan_id,)).fetchone():
        n += 1  # a second diff in the same run and minute (sync diffs every type in one run)
        plan_id = f"{base}-{n + 1}"
    return plan_id


def diff_records(store: StateStore, profile: Profile, entity: str, *,
                 live_client: OmetriaReader | LiveSnapshot | None = None, fields: list[str] | None = None,
                 keys: list[str] | None = None, limit: int | None = None, detect: bool = True,
                 run_id: int | None = None, owners: dict[str, str] | None = None, mapping: Any = None,
                 candidates: set[str] | None = None) -> DiffResult:
    """Diff one record type (``contacts``/``orders``/``products``) and write its plan.

    ``live_client``: compare with what Ometria holds now (an ``OmetriaClient`` or a
    ``LiveSnapshot`` shared with other callers) instead of the ledger. ``keys`` narrows the
    whole diff, counts and plan included, to those record ids; ``fields`` and ``limit`` only
    narrow ``records`` (the listing). ``detect`` runs the detectors of this record type first
    (stage ``diff``), recording their exceptions; they are in ``result.findings`` (with ``keys``,
    only the checks that need no read-back: the live ones read whole collections).

    ``candidates`` (sync, against the ledger): every id whose answer can differ from
    ``unchanged`` (``nightly_candidates``); only those are compared, and the others are counted
    unchanged (or held) from the ledger's count. The plan is still a full review.

    >>> result = diff_records(store, profile, "orders")            # doctest: +SKIP
    >>> result.counts, result.plan_id                              # doctest: +SKIP
    ({'new': 12, 'changed': 3, 'unchanged': 380, 'void': 0, 'held': 0}, 'p7-20261127-0231')
    """
    type_ = entity_type(entity)
    if mapping is None:
        mapping = load_mapping_for(profile)
    collection = mapping.identity.collection if mapping is not None else profile.ometria.collection
    cancelled = mapping.orders.statuses.cancelled if mapping is not None else "cancelled"
    snapshot = as_snapshot(live_client, collection)
    own_snapshot = snapshot is not None and snapshot is not live_client
    own_run = run_id is None
    if own_run:
        run_id = store.start_run("diff", profile.name)
    assert run_id is not None
    try:
        findings: list[Finding] = []
        if detect:
            # The live checks need whole collections: a diff of a few keys reads only those records,
            # so it runs the checks that need no read-back.
            findings = run_detectors(store, profile, live_client=None if keys else snapshot, owners=owners,
                                     stage=STAGE, scope={type_}, run_id=run_id, mapping=mapping)
        if snapshot is not None and not keys:
            snapshot.load(type_)  # the slow read-back happens before the write transaction opens
        now = datetime.now(timezone.utc)
        with store.transaction() as conn:
            plan_id = _new_plan_id(conn, run_id, now)
            result = DiffResult(type_, plan_id, run_id, snapshot is not None, findings=findings,
                                keys=list(keys) if keys else None, fields_filter=list(fields) if fields else None)
            plans.create_plan(conn, plan_id, run_id=run_id, scope=[type_], created_at=utcnow(),
                              made_by=_made_by(entity, snapshot is not None, keys) if own_run else "sync",
                              narrowed_to=list(keys) if keys else None)
            differ = _Differ(conn, result, plan_id=plan_id, cancelled_status=cancelled, fields=fields, limit=limit)
            if snapshot is None and candidates is not None and not keys:
                _fill_candidates(conn, candidates)
                differ.against_ledger(None, candidates=True)
                _count_the_rest(conn, result)
                result.compared = len(candidates)
            elif snapshot is None:
                differ.against_ledger(keys)
            else:
                differ.against_live(snapshot, keys)
            plan_counts = {c: result.counts[c] for c in ("new", "changed", "unchanged", "void")}
            result.superseded = plans.finish_plan(conn, plan_id, plan_counts)
            cutoff = now - timedelta(days=profile.plans.retention_days)
            result.pruned = plans.prune_plans(conn, before=cutoff.isoformat(timespec="microseconds"), now=utcnow())
    except BaseException:
        if own_run:
            store.finish_run(run_id, "failed")
        raise
    finally:
        if own_snapshot:
            snapshot.close()  # type: ignore[union-attr]
    if own_run:
        store.finish_run(run_id, "ok", {"diff": type_, "plan": result.plan_id, "counts": result.counts,
                                        "live": result.live})
    return result


def diff_all(store: StateStore, profile: Profile, entities: Iterable[str] = ("products", "contacts", "orders"),
             **kwargs: Any) -> list[DiffResult]:
    """Diff several types in push order (``sync``): one plan per type.

    Within one run (``run_id``, as sync gives), the detectors run once for all the types (a
    check covering products and orders used to run in both diffs); each result holds the findings
    of the checks its type covers, as a diff of that type alone would.

    A nightly diff (sync): ``changed`` (staged entity -> the keys its incremental map looked at
    again) and ``basis`` (``nightly_basis``, taken before that map) narrow the work to what can
    have moved: each type compares only its ``nightly_candidates``, and the detectors that can
    look at those records only (``Check.scoped``) do. Without both, everything is compared and
    every check runs whole."""
    entities = list(entities)
    changed = kwargs.pop("changed", None)  # entity -> keys the incremental map looked at (sync)
    basis = kwargs.pop("basis", None)
    shared_run = kwargs.get("run_id") is not None  # sync's run: one detector pass for it
    if not shared_run or not kwargs.get("detect", True) or kwargs.get("keys") or kwargs.get("live_client") is not None:
        return [diff_records(store, profile, e, **kwargs) for e in entities]
    types = [entity_type(e) for e in entities]
    if kwargs.get("mapping") is None:
        kwargs["mapping"] = load_mapping_for(profile)
    candidates: dict[str, set[str] | None] = {t: None for t in types}
    scope: dict[str, set[str]] | None = None
    if changed is not None and basis is not None:
        # All up front: a type's diff may prune old plans before the next type's is read.
        candidates = {t: nightly_candidates(store.conn, t, changed, basis) for t in types}
        scope = dict(changed)
        for type_, ids in candidates.items():
            if ids is not None:
                scope[type_] = ids  # the records whose diff can move: their checks look at them
        scope["credit_note"] = {k for (k,) in store.conn.execute(  # staged since the basis (refund checks)
            "SELECT DISTINCT key FROM staged_record WHERE run_id >= ? AND entity = 'credit_note'", (basis,))}
        if candidates.get("order") is not None:
            # sales orders map looked at, and every order planned since (the ledger took those)
            scope["sales_order"] = set(changed.get("sales_order", ())) | candidates["order"]  # type: ignore[operator]
    findings = run_detectors(store, profile, live_client=None, owners=kwargs.get("owners"), stage=STAGE,
                             scope=set(types), run_id=kwargs["run_id"], mapping=kwargs["mapping"], changed=scope)
    scopes = {c.name: c.scope for c in selected_checks(live=False, scope=set(types))}
    results = [diff_records(store, profile, e, **{**kwargs, "detect": False, "candidates": candidates[t]})
               for e, t in zip(entities, types)]
    for result in results:
        result.findings = [f for f in findings if result.type in scopes.get(f.check or "", frozenset())]
    if scope is not None:
        # What a nightly pass did not look at again is still open: counted, as a whole pass would.
        seen = {f.exception_id for f in findings}
        carried = [(t, e) for i, t, e in store.conn.execute(
            "SELECT id, type, entity FROM exception WHERE resolved_at IS NULL AND severity = 'fail' "
            "AND stage IN ('diff', 'health') AND last_run < ?", (kwargs["run_id"],)) if i not in seen]
        for result in results:
            parts = {(c.type, c.entity) for c in selected_checks(live=False, scope={result.type})}
            result.carried_fail = sum(1 for part in carried if part in parts)
    return results
