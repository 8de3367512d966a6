"""Pull: read Khaos Control into the state store, incrementally, losing nothing.

Records arrive in batches (a SOAP export of 200 companies, a week of orders, a file). Each
batch is committed in one transaction: its new and changed record versions, the exceptions
its bad records raised, the payloads that could not be staged, and, only once everything
before it is safe, the entity's bookmark. A run killed at any point leaves whole batches or
nothing, and the next run re-reads from the bookmark (minus the look-back window): unchanged
records add no version, so nothing is duplicated.

Bookmarks are high-water marks of the ERP's own ``LAST_UPDATED`` times, not our clock, so a
KC server whose clock differs from ours (or the sandbox's, which lives in its own time) does
not make us skip changes.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from typing import Callable, Iterable, Iterator, Protocol

from khaosync.config import Profile
from khaosync.errors import RecordError
from khaosync.findings import owner_of, severity_of
from khaosync.khaos import parse as kparse
from khaosync.khaos.models import canonical_json, content_hash
from khaosync.khaos.salvage import cut, wrap
from khaosync.store import StateStore
from khaosync.store import staging
from khaosync.store.db import utcnow

# CLI names -> the staged entity they fill, in the order a full pull runs them.
ENTITIES: dict[str, str] = {
    "customers": "company",
    "stock": "stock_item",
    "orders": "sales_order",
    "credit-notes": "credit_note",
}
STAGE = "pull"
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=timezone.utc)

Progress = Callable[[str, int, int | None], None]


@dataclass
class Batch:
    """What one request (or file) gave: parsed records, payloads we could not stage, and
    the bookmark position that is safe once this batch (and all before it) is committed."""

    parsed: list[kparse.Parsed] = field(default_factory=list)
    rejected: list[tuple[str | None, str, bytes]] = field(default_factory=list)  # (key, reason, raw)
    position: datetime | None = None
    listed: int = 0


class Source(Protocol):
    def batches(self, entity: str, since: datetime) -> Iterator[Batch]: ...


@dataclass
class EntityResult:
    entity: str
    since: str
    listed: int = 0
    fetched: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    problems: int = 0
    rejected: int = 0
    bookmark_before: str | None = None
    bookmark_after: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class PullResult:
    run_id: int
    entities: dict[str, EntityResult]
    exceptions: Counter = field(default_factory=Counter)
    fail_findings: int = 0

    def as_dict(self) -> dict:
        return {
            "run": self.run_id,
            "entities": {k: v.as_dict() for k, v in self.entities.items()},
            "exceptions": dict(sorted(self.exceptions.items())),
            "fail_findings": self.fail_findings,
        }


# -- reading documents, salvaging what a broken one still holds ---------------------------

DOCUMENTS = {
    # entity: (parser, record element, root element, key element for aliases)
    "company": (kparse.parse_companies, "COMPANY", "COMPANYS"),
    "stock_item": (kparse.parse_stock_items, "STOCK_ITEM", "STOCK_ITEMS"),
    "sales_order": (kparse.parse_sales_orders, "SALES_ORDER", "SALES_ORDERS"),
    "order_status": (kparse.parse_order_statuses, "ORDER_STATUS", "ORDER_STATUSES"),
}


def read_document(entity: str, document: bytes) -> tuple[list[kparse.Parsed], list[tuple[str | None, str, bytes]]]:
    """Parse a whole document; if it fails, parse it record by record.

    Returns the records (a piece that does not parse but shows its key becomes a record with
    no parsed form and a ``malformed_record`` problem, so its raw bytes are staged) and the
    payloads that carry no key at all.
    """
    parser, tag, root = DOCUMENTS[entity]
    try:
        return list(parser(document)), []
    except kparse.DocumentError as whole:
        reason_whole = str(whole)
    pieces = cut(document, tag, root)
    if not pieces:
        return [], [(None, f"unreadable {root} document: {reason_whole}", document)]
    parsed: list[kparse.Parsed] = []
    rejected: list[tuple[str | None, str, bytes]] = []
    seen: set[str] = set()
    for piece in pieces:
        try:
            records = list(parser(wrap(piece.raw, root)))
        except kparse.DocumentError as exc:
            reason = f"unreadable {tag} element: {exc}"
            if piece.key is None:
                rejected.append((None, reason, piece.raw))
                continue
            problem = RecordError(entity=entity, key=piece.key, stage=STAGE, reason=reason, kind="malformed_record")
            records = [kparse.Parsed(entity=entity, key=piece.key, raw=piece.raw, record=None, problems=[problem])]
        for p in records:
            if p.key is not None and p.key in seen and p.duplicate is None:
                # Pieces are parsed one by one, so the parser cannot see a repeat: we do.
                again = RecordError(entity=entity, key=p.key, stage=STAGE, kind=kparse.DUPLICATE,
                                    reason=f"{tag} {p.key} appears more than once in one answer")
                p = kparse.Parsed(entity=entity, key=p.key, raw=p.raw, record=p.record, problems=[*p.problems, again])
            if p.key is not None:
                seen.add(p.key)
            parsed.append(p)
    return parsed, rejected


def _max_updated(records: Iterable[kparse.Parsed]) -> datetime | None:
    seen = [getattr(p.record, "last_updated", None) for p in records if p.record is not None]
    seen = [s for s in seen if s is not None]
    return max(seen) if seen else None


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


# -- sources -------------------------------------------------------------------------------

class SoapSource:
    """Khaos Control's SOAP service (interface A); credit notes from the export folder."""

    def __init__(self, client, profile: Profile, credit_notes: "FileSource | None"):
        self.client = client
        self.profile = profile
        self.credit_notes = credit_notes

    def batches(self, entity: str, since: datetime) -> Iterator[Batch]:
        if entity == "company":
            yield from self._by_code(entity, self.client.get_company_list(since), self.client.export_company,
                                     self.profile.khaos.company_batch)
        elif entity == "stock_item":
            codes = [code for code, _parent in self.client.get_stock_list(since)]
            yield from self._by_code(entity, codes, self.client.export_stock, self.profile.khaos.stock_batch)
        elif entity == "sales_order":
            yield from self._orders(since)
        elif entity == "credit_note":
            if self.credit_notes is None:
                return
            yield from self.credit_notes.batches(entity, since)

    def _by_code(self, entity: str, codes: list[str], export: Callable[[list[str]], bytes], size: int) -> Iterator[Batch]:
        blanks = sum(1 for c in codes if not c)
        if blanks:
            # KC exports by URN/code only: a record listed with a blank one cannot be fetched.
            reason = (f"{blanks} {entity} record(s) listed with a blank code: they cannot be exported by code; "
                      "give them a code in Khaos Control")
            yield Batch(rejected=[(None, reason, f"<BLANK_CODES count={blanks}/>".encode())], listed=blanks)
        codes = list(dict.fromkeys(c for c in codes if c))  # a code listed twice is fetched once
        high: datetime | None = None
        for chunk in _chunks(codes, size):
            parsed, rejected = read_document(entity, export(chunk))
            high = _later(high, _max_updated(parsed))
            yield Batch(parsed=parsed, rejected=rejected, listed=len(chunk))
        # The bookmark moves only when every listed code is safe.
        yield Batch(position=high)

    def _orders(self, since: datetime) -> Iterator[Batch]:
        """Orders changed since ``since``, in date windows sized to hold about
        ``pull.orders_per_request`` orders each, so memory does not grow with a merchant's
        volume: a window that returned too many halves the next one, a sparse one doubles it
        (up to ``pull.order_window_days``), and one with more than four times the target is
        asked again in halves before anything in it is parsed."""
        settings = self.profile.pull
        widest = timedelta(days=settings.order_window_days)
        narrowest = timedelta(minutes=10)
        width = min(timedelta(days=1), widest)
        horizon = datetime.now(timezone.utc) + timedelta(days=1)
        high: datetime | None = None
        start = since
        while True:
            # The last window is open-ended: whatever a KC clock ahead of ours has already written.
            end = FAR_FUTURE if start >= horizon else min(start + width, horizon)
            document = self.client.export_orders_window(start, end, by="updated")
            if document.count(b"<SALES_ORDER>") > 4 * settings.orders_per_request and width > narrowest \
                    and end != FAR_FUTURE:
                # Far too many to hold at once (a sparse stretch widened the window just before a
                # busy one): drop the answer unparsed and ask for half the window.
                del document
                width = max(narrowest, width / 2)
                continue
            parsed, rejected = read_document("sales_order", document)
            del document
            if parsed:
                parsed = self._with_statuses(parsed, rejected)
            high = _later(high, _max_updated(parsed))
            # Windows run in time order: once this one is committed, all changes up to the
            # latest time seen so far are safe.
            yield Batch(parsed=parsed, rejected=rejected, position=high, listed=len(parsed))
            if end == FAR_FUTURE:
                return
            start = end
            if len(parsed) > settings.orders_per_request:
                width = max(narrowest, width / 2)
            elif len(parsed) < settings.orders_per_request // 4:
                width = min(widest, width * 2)

    def _with_statuses(self, orders: list[kparse.Parsed], rejected: list) -> list[kparse.Parsed]:
        """Attach each order's despatch state (invoices, tracking) from ExportOrderStatusEx."""
        ids = [p.key for p in orders if p.key]
        statuses: dict[str, kparse.Parsed] = {}
        for chunk in _chunks(ids, self.profile.khaos.company_batch):
            parsed, bad = read_document("order_status", self.client.export_order_status(chunk, mapping_type=5))
            rejected.extend(bad)
            for p in parsed:
                if p.key and p.key not in statuses:
                    statuses[p.key] = p
        out = []
        for p in orders:
            status = statuses.get(p.key) if p.key else None
            if status is None:
                out.append(p)
                continue
            if p.record is None:
                # An unreadable order keeps its status's bytes beside its own, nothing more.
                out.append(kparse.Parsed(entity="sales_order", key=p.key, raw=p.raw + b"\n" + status.raw,
                                         record=None, problems=p.problems))
                continue
            problems = list(p.problems) + [
                RecordError(entity="sales_order", key=p.key, stage=STAGE, reason=f"order status: {e.reason}", kind=e.kind)
                for e in status.problems
            ]
            record = p.record
            if status.record is not None:
                record = record.model_copy(update={"status": status.record.status, "invoices": status.record.invoices})
            out.append(kparse.Parsed(entity="sales_order", key=p.key, raw=p.raw + b"\n" + status.raw,
                                     record=record, problems=problems))
        return out


class FileSource:
    """A folder of KC exports (XML and CSV/TSV report exports)."""

    BATCH = 500

    def __init__(self, folder, columns=None):
        from khaosync.khaos.files import ExportFolder

        self._rejected: list[tuple[str | None, str, bytes]] = []
        self.export = ExportFolder(folder, columns, read_xml=self._salvaging_reader)

    def _salvaging_reader(self, entity: str, document: bytes) -> Iterator[kparse.Parsed]:
        """Broken export files are salvaged record by record, as SOAP answers are."""
        parsed, rejected = read_document(entity, document)
        self._rejected.extend(rejected)
        return iter(parsed)

    def batches(self, entity: str, since: datetime) -> Iterator[Batch]:
        reader = {
            "company": self.export.companies,
            "stock_item": self.export.stock_items,
            "sales_order": self.export.sales_orders,
            "credit_note": self.export.credit_notes,
        }[entity]
        high: datetime | None = None
        batch: list[kparse.Parsed] = []
        try:
            for p in reader():
                batch.append(p)
                if len(batch) >= self.BATCH:
                    high = _later(high, _position_of(batch))
                    yield Batch(parsed=batch, rejected=self._take_rejected(), listed=len(batch))
                    batch = []
        except kparse.DocumentError as exc:
            # A CSV that cannot be read at all (missing columns, invalid UTF-8): keep its name and reason.
            self._rejected.append((None, f"unreadable export file: {exc}", str(exc).encode()))
        high = _later(high, _position_of(batch))
        yield Batch(parsed=batch, rejected=self._take_rejected(), listed=len(batch), position=high)

    def _take_rejected(self) -> list[tuple[str | None, str, bytes]]:
        taken, self._rejected = self._rejected, []
        return taken


def _position_of(parsed: list[kparse.Parsed]) -> datetime | None:
    high = _max_updated(parsed)
    issued = [getattr(p.record, "issued", None) for p in parsed if p.record is not None]
    issued = [i for i in issued if i is not None]
    return _later(high, max(issued) if issued else None)


# -- the stage -----------------------------------------------------------------------------

def _aliases(entity: str, record) -> dict[str, str]:
    if record is None:
        return {}
    if entity == "company":
        return {"company_code": record.company_code}
    if entity == "stock_item":
        return {"stock_code": record.stock_code}
    if entity == "sales_order":
        return {"sorder_code": record.sorder_code, "associated_ref": record.associated_ref or ""}
    return {}


def _commit_batch(store: StateStore, run_id: int, entity: str, batch: Batch, result: EntityResult,
                  found: Counter) -> int:
    """One transaction: versions, exceptions, rejected payloads, and the bookmark."""
    fails = 0
    now = utcnow()
    seen_keys: set[str] = set()
    with store.transaction() as conn:
        for p in batch.parsed:
            result.fetched += 1
            key = p.key
            duplicate = any(e.kind == "duplicate_in_response" for e in p.problems)
            # A status with no order to belong to (file source) is kept, never staged as an order.
            stray = p.entity != entity
            if key is None or duplicate or stray or (key in seen_keys and p.record is None):
                reason = "; ".join(e.reason for e in p.problems) or "record without a key"
                staging.reject(conn, run_id=run_id, entity=entity, key=key, reason=reason, raw=p.raw, received_at=now)
                result.rejected += 1
            else:
                seen_keys.add(key)
                if p.record is not None:
                    parsed_json, digest = canonical_json(p.record), content_hash(p.record)
                else:
                    parsed_json, digest = None, "raw:" + hashlib.sha256(p.raw).hexdigest()
                outcome = staging.stage(conn, entity=entity, key=key, raw=p.raw, parsed=parsed_json,
                                        content_hash=digest, run_id=run_id, seen_at=now,
                                        aliases=_aliases(entity, p.record))
                setattr(result, outcome, getattr(result, outcome) + 1)
            for problem in p.problems:
                result.problems += 1
                severity = severity_of(problem.kind)
                fails += severity == "fail"
                found[problem.kind] += 1
                store.record_exception(
                    run_id=run_id, type=problem.kind, severity=severity, owner=owner_of(problem.kind), stage=STAGE,
                    reason=problem.reason, records=[f"{entity}:{key or '?'}"], entity=entity, record_key=key,
                )
        for key, reason, raw in batch.rejected:
            staging.reject(conn, run_id=run_id, entity=entity, key=key, reason=reason, raw=raw, received_at=now)
            result.rejected += 1
            found["malformed_record"] += 1
            store.record_exception(
                run_id=run_id, type="malformed_record", severity=severity_of("malformed_record"),
                owner=owner_of("malformed_record"), stage=STAGE, reason=reason,
                records=[f"{entity}:{key or 'payload:' + hashlib.sha256(raw).hexdigest()[:12]}"], entity=entity,
                record_key=key,
            )
        # A record read again without the problem it had before: that finding is closed.
        conn.executemany(
            "UPDATE exception SET resolved_at = ? WHERE resolved_at IS NULL AND stage = ? AND entity = ?"
            " AND record_key = ? AND last_run < ?",
            [(now, STAGE, entity, key, run_id) for key in sorted(seen_keys)],
        )
        if batch.position is not None:
            position = batch.position.astimezone(timezone.utc).isoformat()
            staging.set_bookmark(conn, entity, position, run_id, now)
            result.bookmark_after = staging.get_bookmark(conn, entity)
    return fails


def _start_of(profile: Profile, store: StateStore, entity: str, since: datetime | None, full: bool) -> datetime:
    if since is not None:
        return since
    history = datetime.combine(profile.pull.history_start, time.min, tzinfo=timezone.utc)
    if full:
        return history
    mark = staging.get_bookmark(store.conn, entity)
    if mark is None:
        return history
    return datetime.fromisoformat(mark) - timedelta(hours=profile.pull.lookback_hours)


def pull(store: StateStore, profile: Profile, source: Source, *, entities: list[str] | None = None,
         since: datetime | None = None, full: bool = False, progress: Progress | None = None,
         run_id: int | None = None) -> PullResult:
    """Pull the given entities (CLI names, default all) from ``source`` into ``store``."""
    names = entities or list(ENTITIES)
    unknown = [n for n in names if n not in ENTITIES]
    if unknown:
        raise ValueError(f"unknown entity {unknown[0]!r}; choose from {', '.join(ENTITIES)}")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    own_run = run_id is None
    run_id = run_id if run_id is not None else store.start_run("pull", profile.name)
    result = PullResult(run_id=run_id, entities={})
    try:
        for name in names:
            entity = ENTITIES[name]
            start = _start_of(profile, store, entity, since, full)
            er = EntityResult(entity=entity, since=start.isoformat(),
                              bookmark_before=staging.get_bookmark(store.conn, entity))
            er.bookmark_after = er.bookmark_before
            result.entities[name] = er
            for batch in source.batches(entity, start):
                er.listed += batch.listed
                result.fail_findings += _commit_batch(store, run_id, entity, batch, er, result.exceptions)
                if progress:
                    progress(name, er.fetched, None)
    except BaseException:
        if own_run:
            store.finish_run(run_id, "failed", result.as_dict())
        raise
    if own_run:
        store.finish_run(run_id, "ok", result.as_dict())
    return result
