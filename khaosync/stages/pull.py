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
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from khaosync.config import Profile
from khaosync.errors import RecordError
from khaosync.findings import owner_of, severity_of
from khaosync.khaos import attach
from khaosync.khaos import parse as kparse
from khaosync.khaos.models import RECORD_TYPES, OrderStatus, SalesOrder, StockItem, canonical_json, content_hash
from khaosync.khaos.salvage import cut, wrap
from khaosync.store import StateStore
from khaosync.store import staging
from khaosync.store.db import utcnow

_M = TypeVar("_M", bound=BaseModel)

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
    rejected: list[tuple] = field(default_factory=list)  # (key, reason, raw[, exception type: malformed_record])
    position: datetime | None = None
    listed: int = 0
    code_position: str | None = None  # orders: the highest sales order code now safe
    outside: list = field(default_factory=list)  # orders before pull --since: (key, code, ref, order_date)
    files: list = field(default_factory=list)  # export files now staged whole: (bookmark name, sha256)


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
    skipped_before_since: int = 0  # orders placed before pull --since: not staged, only counted
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
    "order_status": (kparse.parse_order_statuses, "ORDER_STATUS", "STATUS_LIST"),
    "stock_status": (kparse.parse_stock_statuses, "STOCK_ITEM", "STOCK_STATUS"),
}


def read_document(entity: str, document: bytes) -> tuple[list[kparse.Parsed], list[tuple[str | None, str, bytes]]]:
    """Parse a whole document; if it fails, parse it record by record.

    Returns the records (a piece that does not parse but shows its key becomes a record with
    no parsed form and a ``malformed_record`` problem, so its raw bytes are staged) and the
    payloads that carry no key at all.
    """
    parser, tag, root = DOCUMENTS[entity]
    document = kparse.redact_document(kparse.as_utf8(document))
    try:
        return list(parser(document)), []
    except kparse.DocumentError as whole:
        reason_whole = str(whole)
    pieces = cut(document, tag, root)
    if not pieces:
        return [], [(None, f"unreadable {root} document: {reason_whole}", document)]
    parsed: list[kparse.Parsed] = []
    rejected: list[tuple[str | None, str, bytes]] = []
    prolog = document[:pieces[0].start]
    if b"<!" in prolog.replace(b"<!--", b""):
        # A declaration before the records (a DTD, an entity) belongs to no record: kept on its own.
        rejected.append((None, f"unreadable {root} document: {reason_whole}; its records were read one by one",
                         prolog))
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

def next_order_code(code: str) -> str:
    """The code after ``code`` in KC's sequence: the trailing number plus one, its width kept
    (``SO02075`` -> ``SO02076``, ``SO99999`` -> ``SO100000``)."""
    match = _TRAILING_NUMBER.search(code)
    if match is None:
        raise ValueError(f"order code {code!r} does not end in a number; set pull.first_order_code to one that does")
    digits = match.group(1)
    return code[:match.start(1)] + str(int(digits) + 1).zfill(len(digits))


_TRAILING_NUMBER = re.compile(r"([0-9]+)\Z")
_ONE_ORDER = re.compile(rb"<SALES_ORDER[\s>/]")
ORDER_CODE_BOOKMARK = "sales_order.code"
WINDOW_START = "sales_order.window_start"  # set by the first pull --since that left orders out


class SoapSource:
    """Khaos Control's SOAP service (interface A); credit notes from the export folder.

    What each entity's feed is built from (docs/pull.md): customers and stock from the
    list calls' own "changed since" (``GetCompanyList``, ``GetStockList``), their bookmark
    the site's clock at the list call (its HTTP ``Date``), never a field the vendor's
    documents lack; stock levels from ``ExportStockStatus`` for every staged item (levels
    change without the item changing); new orders by walking sales order codes past the
    highest one staged with ``ExportOrders(OrderCode)``; despatch and cancellation from
    ``ExportOrderStatusEx`` over every open order and the recently completed ones.
    """

    def __init__(self, client, profile: Profile, credit_notes: "FileSource | None"):
        self.client = client
        self.profile = profile
        self.credit_notes = credit_notes
        self.store: StateStore | None = None
        self.explicit_since: datetime | None = None  # pull --since: orders placed before it are not staged
        self.skipped_before_since = 0
        self.outside: list[tuple] = []
        self._outside_keys: set[str | None] = set()

    def bind(self, store: StateStore) -> None:
        """The state store the feeds read what is already staged from (pull calls this)."""
        self.store = store

    def _conn(self):
        if self.store is None:
            raise RuntimeError("SoapSource.bind(store) first: the order and stock feeds read the staged records")
        return self.store.conn

    def _site_now(self) -> datetime:
        """The site's clock at its last answer, else ours (the look-back window covers skew)."""
        seen = getattr(self.client, "last_server_time", None)
        return seen.astimezone(timezone.utc) if seen is not None else datetime.now(timezone.utc)

    def batches(self, entity: str, since: datetime) -> Iterator[Batch]:
        if entity == "company":
            codes = self.client.get_company_list(since)
            position = self._site_now()
            yield from self._by_code(entity, codes, self.client.export_company, self.profile.khaos.company_batch,
                                     position)
        elif entity == "stock_item":
            listed = self.client.get_stock_list(since)
            position = self._site_now()
            yield from self._stock(listed, position)
        elif entity == "sales_order":
            yield from self._orders(since)
        elif entity == "credit_note":
            if self.credit_notes is None:
                return
            yield from self.credit_notes.batches(entity, since)

    def _by_code(self, entity: str, codes: list[str], export: Callable[[list[str]], bytes], size: int,
                 position: datetime) -> Iterator[Batch]:
        blanks = sum(1 for c in codes if not c)
        if blanks:
            # KC exports by URN/code only: a record listed with a blank one cannot be fetched.
            reason = (f"{blanks} {entity} record(s) listed with a blank code: they cannot be exported by code; "
                      "give them a code in Khaos Control")
            yield Batch(rejected=[(None, reason, f"<BLANK_CODES count={blanks}/>".encode())], listed=blanks)
        codes = list(dict.fromkeys(c for c in codes if c))  # a code listed twice is fetched once
        for chunk in _chunks(codes, size):
            parsed, rejected = read_document(entity, export(chunk))
            yield Batch(parsed=parsed, rejected=rejected, listed=len(chunk))
        # The bookmark moves only when every listed code is safe.
        yield Batch(position=position)

    # -- stock ---------------------------------------------------------------------------
    def _stock(self, listed: list[tuple[str, str | None]], position: datetime) -> Iterator[Batch]:
        """Changed items, then every staged item's stock level.

        SCS children come inside their parent's tree on some sites and as separate, unlinked
        items on others: each changed child's parent is asked for (its tree, if the site
        exports one) and the child's own code too (its item, if the site exports them
        apart); a separate child is linked to its parent by GetStockList's ParentCode."""
        parent_of = {code: parent for code, parent in listed if parent}
        wanted: list[str] = []
        for code, parent in sorted(listed, key=lambda cp: (cp[1] or cp[0], cp[1] is not None, cp[0])):
            if parent:
                wanted.append(parent)
            wanted.append(code)
        wanted = list(dict.fromkeys(wanted))
        ids: dict[str, int] = {}
        for chunk in _chunks(wanted, self.profile.khaos.stock_batch):
            parsed, rejected = read_document("stock_item", self.client.export_stock(chunk))
            for p in parsed:
                if isinstance(p.record, StockItem):
                    ids[p.record.stock_code] = p.record.stock_id
            parsed = [self._linked(p, parent_of, ids) for p in parsed]
            if self.profile.pull.stock_status != "off":
                parsed = self._with_stock_statuses(parsed, rejected)
            else:
                parsed = [self._keep_stock_status(p) for p in parsed]
            yield Batch(parsed=parsed, rejected=rejected, listed=len(chunk))
        yield Batch(position=position)
        if self.profile.pull.stock_status == "all":
            exported = set(ids)
            yield from self._stock_statuses([c for c in self._staged_stock_codes() if c not in exported])

    def _with_stock_statuses(self, items: list[kparse.Parsed], rejected: list) -> list[kparse.Parsed]:
        """The exported items with their stock level, read for the same codes at once."""
        codes = [p.record.stock_code for p in items if isinstance(p.record, StockItem)]
        found: dict[str, kparse.Parsed] = {}
        if codes:
            statuses, bad = read_document("stock_status", self.client.export_stock_status(codes))
            rejected.extend(bad)
            found = {s.key: s for s in statuses if s.key}
        out = []
        for p in items:
            status = found.get(p.record.stock_code) if isinstance(p.record, StockItem) else None
            if status is None:
                out.append(self._keep_stock_status(p))
            elif status.record is None:
                rejected.append(_unreadable_status(status.key, status, "stock status"))
                out.append(self._keep_stock_status(p))
            else:
                problems = p.problems + _status_problems(status, "stock_item", p.key, "stock status")
                out.append(kparse.Parsed(p.entity, p.key, attach.stock_raw(p.raw, status.raw),
                                         attach.with_stock_status(p.record, status.record), problems))
        return out

    def _linked(self, p: kparse.Parsed, parent_of: dict[str, str], ids: dict[str, int]) -> kparse.Parsed:
        record = p.record
        if not isinstance(record, StockItem) or record.parent_id is not None:
            return p
        parent_code = parent_of.get(record.stock_code)
        if not parent_code:
            return p
        parent_id = ids.get(parent_code)
        if parent_id is None:
            keys = staging.keys_by_alias(self._conn(), "stock_item", "stock_code", parent_code)
            parent_id = int(keys[-1]) if keys and keys[-1].isdigit() else None
        problems = list(p.problems)
        if parent_id is None:
            problems.append(RecordError(
                entity="stock_item", key=p.key, stage=STAGE, kind="malformed_record",
                reason=f"SCS child {record.stock_code}: GetStockList names parent {parent_code}, which KC did not export"))
        update = {"parent_code": parent_code, "parent_id": parent_id}
        return kparse.Parsed(p.entity, p.key, p.raw, record.model_copy(update=update), problems)

    def _keep_stock_status(self, p: kparse.Parsed) -> kparse.Parsed:
        """A re-exported item keeps the stock level staged for it, until the sweep reads a new one."""
        if not isinstance(p.record, StockItem) or p.key is None:
            return p
        staged = staging.current(self._conn(), "stock_item", p.key)
        if staged is None or staged.parsed is None or staged.parsed.get("stock_status") is None:
            return p
        previous = attach.status_raw(staged.raw)
        record = p.record.model_copy(update={"stock_level": staged.parsed.get("stock_level"),
                                             "stock_status": staged.parsed.get("stock_status")})
        record = StockItem.model_validate(record.model_dump())
        raw = attach.stock_raw(p.raw, previous) if previous is not None else p.raw
        return kparse.Parsed(p.entity, p.key, raw, record, p.problems)

    def _staged_stock_codes(self) -> list[str]:
        rows = self._conn().execute(
            "SELECT json_extract(parsed, '$.stock_code') FROM staged_record WHERE entity = 'stock_item' AND current = 1"
            " AND parsed IS NOT NULL ORDER BY key").fetchall()
        return [code for (code,) in rows if code]

    def _stock_statuses(self, codes: list[str]) -> Iterator[Batch]:
        """Each item's LEVEL and STATUS; an item whose status changed gets a new version. A
        status khaosync cannot read leaves the item as it was (and is kept as a payload)."""
        for chunk in _chunks(codes, self.profile.khaos.stock_batch):
            statuses, rejected = read_document("stock_status", self.client.export_stock_status(chunk))
            updates: list[kparse.Parsed] = []
            for status in statuses:
                if status.record is None or status.key is None:
                    rejected.append(_unreadable_status(status.key, status, "stock status"))
                    continue
                keys = staging.keys_by_alias(self._conn(), "stock_item", "stock_code", status.key)
                staged = staging.current(self._conn(), "stock_item", keys[-1]) if keys else None
                if staged is None or staged.parsed is None:
                    continue  # a status for an item not staged as readable: nothing to attach it to
                item = _readable(StockItem, staged.parsed)
                if item is None:
                    continue  # staged in a form this khaosync's model does not read: map reports it
                if item.stock_code != status.key:
                    continue  # the code now belongs to another item (a rename); its own status follows
                updated = attach.with_stock_status(item, status.record)
                if updated == item:
                    continue
                problems = _status_problems(status, "stock_item", staged.key, "stock status")
                updates.append(kparse.Parsed("stock_item", staged.key, attach.stock_raw(staged.raw, status.raw),
                                             updated, problems))
            yield Batch(parsed=updates, rejected=rejected, listed=0)

    # -- orders --------------------------------------------------------------------------
    def _orders(self, since: datetime) -> Iterator[Batch]:
        yield from self._new_orders(since)
        yield from self._open_order_statuses()

    def _new_orders(self, since: datetime) -> Iterator[Batch]:
        """Orders after the highest code staged, one ``ExportOrders`` call per code, until
        ``pull.order_code_gap`` codes in a row are unknown (a gap of deleted codes, or the
        end). The bookmark is the last code found, so codes not yet used are asked again."""
        settings = self.profile.pull
        last = staging.get_bookmark(self._conn(), ORDER_CODE_BOOKMARK)
        code = next_order_code(last) if last else self._first_code()
        explicit_since = getattr(self, "explicit_since", None)
        misses = 0
        found_code: str | None = None
        batch: list[kparse.Parsed] = []
        rejected: list[tuple[str | None, str, bytes]] = []
        while misses < settings.order_code_gap:
            parsed, bad = read_document("sales_order", self.client.export_orders(code))
            if not parsed and not bad:
                misses += 1
            else:
                misses = 0
                found_code = code
                rejected.extend(bad)
                for p in parsed:
                    record = p.record
                    if isinstance(record, SalesOrder) and record.order_type == 2:
                        rejected.append((p.key, f"{record.sorder_code}: a credit note (ORDER_TYPE 2) in the order "
                                         "sequence; refunds are read from the credit-note export", p.raw))
                        continue
                    if (explicit_since is not None and isinstance(record, SalesOrder) and record.order_date
                            and record.order_date < explicit_since):
                        if p.key not in self._outside_keys:  # a record served twice is one order
                            self._outside_keys.add(p.key)
                            self.skipped_before_since += 1
                            self.outside.append((p.key, record.sorder_code, record.associated_ref,
                                                 record.order_date.isoformat()))
                        continue
                    batch.append(p)
            if len(batch) >= self.profile.khaos.company_batch:
                yield self._order_batch(batch, rejected, found_code)
                batch, rejected = [], []
            code = next_order_code(code)
        yield self._order_batch(batch, rejected, found_code)

    def _exists(self, code: str) -> bool:
        return _ONE_ORDER.search(self.client.export_orders(code)) is not None

    def _first_code(self) -> str:
        """Where a first walk starts: ``pull.first_order_code``, or, when the site's codes
        begin later, the first code found by doubling the number until a code exists and
        then walking down until ``pull.order_code_gap`` codes in a row are unknown."""
        first = self.profile.pull.first_order_code
        gap = self.profile.pull.order_code_gap
        match = _TRAILING_NUMBER.search(first)
        assert match is not None  # the setting's pattern requires a trailing number
        prefix, width, start = first[:match.start(1)], len(match.group(1)), int(match.group(1))

        def code_of(n: int) -> str:
            return prefix + str(n).zfill(width)

        if any(self._exists(code_of(n)) for n in range(start, start + gap)):
            return first
        n = max(start, 1) * 2
        limit = 10 ** (width + 2)
        while n < limit and not self._exists(code_of(n)):
            n *= 2
        if n >= limit:
            return first  # nothing at all: the walk finds nothing, and says so
        low, misses = n, 0
        while low > start and misses < gap:
            if self._exists(code_of(low - 1)):
                misses = 0
            else:
                misses += 1
            low -= 1
        return code_of(low + misses if misses else low)

    def _order_batch(self, orders: list[kparse.Parsed], rejected: list, found_code: str | None) -> Batch:
        parsed = self._with_statuses(orders, rejected) if orders else []
        outside, self.outside = self.outside, []
        return Batch(parsed=parsed, rejected=rejected, listed=len(orders), code_position=found_code, outside=outside)

    def _statuses_of(self, codes: list[str], rejected: list) -> dict[str, kparse.Parsed]:
        statuses: dict[str, kparse.Parsed] = {}
        for chunk in _chunks(codes, self.profile.khaos.company_batch):
            parsed, bad = read_document("order_status", self.client.export_order_status(chunk, mapping_type=3))
            rejected.extend(bad)
            for p in parsed:
                if p.key and p.key not in statuses:
                    statuses[p.key] = p
        return statuses

    def _with_statuses(self, orders: list[kparse.Parsed], rejected: list) -> list[kparse.Parsed]:
        """Attach each new order's despatch state from ExportOrderStatusEx (by SORDER_CODE)."""
        codes = [p.record.sorder_code for p in orders if isinstance(p.record, SalesOrder) and p.record.sorder_code]
        statuses = self._statuses_of(codes, rejected)
        out = []
        for p in orders:
            status = statuses.get(p.record.sorder_code) if isinstance(p.record, SalesOrder) else None
            out.append(p if status is None else _merged(p, status, rejected))
        return out

    def _open_order_statuses(self) -> Iterator[Batch]:
        """Every staged order not yet complete or cancelled, and those placed within
        ``pull.order_status_lookback_days``, asked for their state again; an order whose
        state changed gets a new version. One whose totals no longer match the status's is
        exported again (an edit in KC)."""
        cutoff = (datetime.now(timezone.utc) - timedelta(days=self.profile.pull.order_status_lookback_days))
        site_cutoff = min(cutoff, self._site_now() - timedelta(days=self.profile.pull.order_status_lookback_days))
        rows = self._conn().execute(
            "SELECT key, json_extract(parsed, '$.sorder_code') FROM staged_record WHERE entity = 'sales_order'"
            " AND current = 1 AND parsed IS NOT NULL AND (coalesce(json_extract(parsed, '$.complete'), 0) = 0"
            " AND coalesce(json_extract(parsed, '$.cancelled'), 0) = 0 OR json_extract(parsed, '$.order_date') >= ?)"
            " ORDER BY key", (site_cutoff.isoformat().replace("+00:00", "Z"),)).fetchall()
        open_orders = {code: key for key, code in rows if code}
        for chunk in _chunks(list(open_orders), self.profile.khaos.company_batch):
            rejected: list[tuple[str | None, str, bytes]] = []
            statuses = self._statuses_of(chunk, rejected)
            updates: list[kparse.Parsed] = []
            for code, status in statuses.items():
                key = open_orders.get(code)
                staged = staging.current(self._conn(), "sales_order", key) if key else None
                if staged is None or staged.parsed is None:
                    continue
                # A staged form this khaosync's model does not read (an older one staged it, or a
                # hand edit; map reports it): the order is exported again, as an edited one is.
                held = _readable(SalesOrder, staged.parsed)
                order = kparse.Parsed("sales_order", key, attach.own_raw(staged.raw), held, [])
                edited = held is None or (
                    isinstance(status.record, OrderStatus) and held.order_amount is not None
                    and status.record.gross_total is not None and status.record.gross_total != held.order_amount)
                if edited or self.profile.pull.reexport_open_orders:
                    again, bad = read_document("sales_order", self.client.export_orders(code))
                    rejected.extend(bad)
                    fresh = [p for p in again if p.key == key and p.record is not None]
                    if fresh:
                        order = fresh[0]
                if order.record is None:
                    continue  # KC did not give it again either: map's exception stands
                merged = _merged(order, status, rejected)
                if merged.record is not None and merged.record == held and not merged.problems:
                    continue
                updates.append(merged)
            yield Batch(parsed=updates, rejected=rejected, listed=0)


def _readable(model: type[_M], parsed: dict) -> _M | None:
    """A staged parsed form as ``model`` reads it, or None when it no longer does (a form an
    older khaosync staged, or one edited by hand; map raises its ``malformed_record``)."""
    try:
        return model.model_validate(parsed)
    except ValidationError:
        return None


def _unreadable_status(key: str | None, status: kparse.Parsed, what: str,
                       label: str | None = None) -> tuple[str | None, str, bytes]:
    """A status khaosync cannot read (``what``: "stock status"), as a rejected payload naming
    the record it belongs to; ``label`` heads the reason (default ``what``)."""
    reason = "; ".join(e.reason for e in status.problems) or f"unreadable {what}"
    return key, f"{label or what}: {reason}", status.raw


def _status_problems(status: kparse.Parsed, entity: str, key: str | None, what: str) -> list[RecordError]:
    """A readable status's problems, as problems of the record it is attached to."""
    return [RecordError(entity=entity, key=key, stage=STAGE, kind=e.kind, reason=f"{what}: {e.reason}")
            for e in status.problems]


def _merged(order: kparse.Parsed, status: kparse.Parsed, rejected: list) -> kparse.Parsed:
    """An order with its status attached. A status khaosync cannot read never replaces what
    the order had: the order is staged as it was (its last good state), and the unreadable
    status is kept as a payload with an exception."""
    if status.record is None:
        rejected.append(_unreadable_status(order.key, status, "order status", f"order status {status.key}"))
        return order
    problems = order.problems + _status_problems(status, "sales_order", order.key, "order status")
    if order.record is None:
        # An unreadable order keeps its status's bytes beside its own, nothing more.
        return kparse.Parsed("sales_order", order.key, attach.order_raw(order.raw, status.raw), None, problems)
    record = attach.with_order_status(order.record, status.record)
    return kparse.Parsed("sales_order", order.key, attach.order_raw(order.raw, status.raw), record, problems)


class FileSource:
    """A folder of KC exports (XML and CSV/TSV report exports)."""

    BATCH = 500

    def __init__(self, folder, columns=None):
        from khaosync.khaos.files import ExportFolder

        self._rejected: list[tuple[str | None, str, bytes]] = []
        self.export = ExportFolder(folder, columns, read_xml=self._salvaging_reader, keep_broken_files=True)
        self.export.unchanged = self._unchanged
        self.store: StateStore | None = None
        self.full = False  # pull --full: every file is read again, changed or not
        self.files_unchanged = 0
        self._read_files: list[tuple[str, str]] = []

    def bind(self, store: StateStore) -> None:
        self.store = store

    def _unchanged(self, path) -> bool:
        """The file's bytes are the ones a committed pull read last time (a report export written
        again each night, or a folder pulled twice): its records are staged as they are, so it is
        neither parsed nor hashed record by record again. Its fingerprint is kept once the batch
        that holds its last records is committed."""
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return False  # ExportFolder says what is wrong with it
        name = f"export_file:{path.resolve()}"
        if not self.full and self.store is not None and staging.get_bookmark(self.store.conn, name) == digest:
            self.files_unchanged += 1
            return True
        self._read_files.append((name, digest))
        return False
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
        seen: dict[str, tuple[datetime | None, str]] = {}
        # Each file is read, and fails, on its own (ExportFolder keeps a broken one as a payload).
        for p in reader():
            p = self._in_change_order(entity, p, seen)
            if p is None:
                continue
            batch.append(p)
            if len(batch) >= self.BATCH:
                high = _later(high, _position_of(batch))
                yield Batch(parsed=batch, rejected=self._take_rejected(), listed=len(batch))
                batch = []
        high = _later(high, _position_of(batch))
        files, self._read_files = self._read_files, []
        yield Batch(parsed=batch, rejected=self._take_rejected(), listed=len(batch), position=high, files=files)

    def _in_change_order(self, entity: str, p: kparse.Parsed,
                         seen: dict[str, tuple[datetime | None, str]]) -> kparse.Parsed | None:
        """The same record in two files: the one KC changed last wins, whatever the file names
        say. A copy older than what this run (or the store) already holds is not staged over
        it; the disagreement is an exception. Without change times, the later file wins, and
        different content is still an exception."""
        if p.key is None or p.record is None:
            return p
        when = _change_time(p.record)
        digest = content_hash(p.record)
        earlier = seen.get(p.key)
        in_this_run = earlier is not None
        if earlier is None and self.store is not None:
            staged = staging.current(self.store.conn, entity, p.key)
            if staged is not None and staged.parsed is not None:
                earlier = (_change_time(RECORD_TYPES[entity].model_validate(staged.parsed)), staged.content_hash)
        seen.setdefault(p.key, (when, digest))
        if earlier is None or earlier[1] == digest:
            return p
        older = when is not None and earlier[0] is not None and when < earlier[0]
        if not older and not in_this_run:
            return p  # a newer export than the last run's: an ordinary change
        reason = (f"{entity} {p.key}: two exports disagree; "
                  + (f"this copy (changed {when.isoformat()}) is older than the one held (changed "
                     f"{earlier[0].isoformat()}), so it is not staged" if older else
                     "the copy KC changed last is kept" if when is not None and earlier[0] is not None else
                     "neither says when it changed, so the later file by name is kept"))
        if older:
            self._rejected.append((p.key, reason, p.raw, "conflicting_exports"))
            return None
        seen[p.key] = (when, digest)
        conflict = RecordError(entity=entity, key=p.key, stage=STAGE, kind="conflicting_exports", reason=reason)
        return kparse.Parsed(p.entity, p.key, p.raw, p.record, [*p.problems, conflict])

    def _take_rejected(self) -> list[tuple[str | None, str, bytes]]:
        taken, self._rejected = self._rejected, []
        return taken


def _change_time(record) -> datetime | None:
    """When KC last changed a record, where the record says so (credit notes: their issue)."""
    return getattr(record, "last_updated", None) or getattr(record, "issued", None)


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
        for item in batch.rejected:
            key, reason, raw = item[:3]
            kind = item[3] if len(item) > 3 else "malformed_record"
            staging.reject(conn, run_id=run_id, entity=entity, key=key, reason=reason, raw=raw, received_at=now)
            result.rejected += 1
            found[kind] += 1
            fails += severity_of(kind) == "fail"
            store.record_exception(
                run_id=run_id, type=kind, severity=severity_of(kind),
                owner=owner_of(kind), stage=STAGE, reason=reason,
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
        for name, digest in batch.files:
            staging.put_bookmark(conn, name, digest, run_id, now)
        if batch.outside:
            conn.executemany("INSERT OR REPLACE INTO order_outside_window(key, sorder_code, associated_ref, order_date,"
                             " run_id) VALUES (?, ?, ?, ?, ?)", [(*o, run_id) for o in batch.outside])
        if entity == "sales_order" and seen_keys:
            conn.executemany("DELETE FROM order_outside_window WHERE key = ?", [(k,) for k in sorted(seen_keys)])
        if batch.code_position is not None:
            _set_code_bookmark(conn, batch.code_position, run_id, now)
            result.bookmark_after = staging.get_bookmark(conn, ORDER_CODE_BOOKMARK)
    return fails


def _code_number(code: str) -> int:
    match = _TRAILING_NUMBER.search(code)
    return int(match.group(1)) if match else -1


def _set_code_bookmark(conn, code: str, run_id: int, now: str) -> None:
    """Codes compare by their number (``SO99999`` < ``SO100000``), not as text."""
    current = staging.get_bookmark(conn, ORDER_CODE_BOOKMARK)
    if current is None or _code_number(current) < _code_number(code):
        staging.put_bookmark(conn, ORDER_CODE_BOOKMARK, code, run_id, now)


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
    if hasattr(source, "bind"):
        source.bind(store)
    for files in (source, getattr(source, "credit_notes", None)):
        if isinstance(files, FileSource):
            files.bind(store)
            files.full = full
    if hasattr(source, "explicit_since"):
        source.explicit_since = since
    if full and "orders" in names:
        # A full pull walks every order code again from pull.first_order_code.
        with store.transaction() as conn:
            conn.execute("DELETE FROM bookmark WHERE entity = ?", (ORDER_CODE_BOOKMARK,))
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
            skipped = getattr(source, "skipped_before_since", 0)
            for batch in source.batches(entity, start):
                er.listed += batch.listed
                result.fail_findings += _commit_batch(store, run_id, entity, batch, er, result.exceptions)
                if progress:
                    progress(name, er.fetched, None)
            er.skipped_before_since = getattr(source, "skipped_before_since", 0) - skipped
            if entity == "sales_order" and er.skipped_before_since and since is not None:
                # The window's start: what lies before it is not khaosync's to check (Ometria's
                # older orders, the credit notes of orders before it).
                with store.transaction() as conn:
                    if staging.get_bookmark(conn, WINDOW_START) is None:
                        staging.set_bookmark(conn, WINDOW_START, since.astimezone(timezone.utc).isoformat(), run_id,
                                             utcnow())
    except BaseException:
        if own_run:
            store.finish_run(run_id, "failed", result.as_dict())
        raise
    if own_run:
        store.finish_run(run_id, "ok", result.as_dict())
    return result
