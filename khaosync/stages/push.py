"""Push: send a reviewed plan to Ometria, journaled, resumable, verified (docs/push.md).

Without ``commit`` it reads the plan and says what it would send; nothing leaves the machine.
With it, the plan's records go type by type (products, contacts, orders, custom events: an
order line needs its product first), in batches of at most 100 records, through the one
``OmetriaClient`` whose token bucket holds the configured rate. Several batches are in flight
at once (``ometria.push_in_flight``), so slow answers do not leave the allowance unused.

Threads: workers only do HTTP (``_Sender``). The store's connection belongs to the calling
thread, which journals each batch (committed) before handing it to a worker and writes the
answer, the ledger rows of what was accepted and the failed records of what was not, in one
transaction when the worker is done. A run killed at any moment therefore leaves:

- batches ``journaled`` without an answer: closed at the next run, their records (absent from
  the ledger) sent again; pushes are upserts, so a record that did arrive is not duplicated;
- answered batches whose transaction did not commit: the same, nothing of them in the ledger;
- whole answered batches: in the ledger, skipped by the next run.

So the next run completes the plan with no duplicate, no gap, and no ledger row for a record
Ometria did not accept.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Iterator, Literal

from khaosync.config import Profile
from khaosync.errors import KhaosyncError
from khaosync.findings import owner_of, severity_of
from khaosync.ometria import wire
from khaosync.ometria.blanks import is_blank, stale_paths
from khaosync.ometria.client import OmetriaClient, PushError
from khaosync.ometria.errors import OmetriaRequestError
from khaosync.store import StateStore, journal
from khaosync.store.db import utcnow

log = logging.getLogger(__name__)

STAGE = "push"
TYPE_ORDER = wire.RECORD_TYPES           # product, contact, order, custom_event
REPORTED_TYPES = ("product", "contact", "order")  # always in the JSON contract; custom_event when present
READABLE_TYPES = ("product", "contact", "order")  # custom events have no read endpoint
PAGE = 1000                              # plan records read per query
SPLITTABLE_STATUSES = (400, 413)         # a whole-request refusal one bad record can cause
MAX_CONSECUTIVE_REFUSALS = 8             # then it is not one bad record but a systematic error: stop
LIST_SCAN_OVER = 500                     # --verify all: above this many records of a type, page the list instead
DIRECTIVES = frozenset({"@merge", "@force_optin", "@add_to_lists", "@remove_from_lists"})

Verify = Literal["sample", "all", "none"]
Progress = Callable[[str, int, int | None], None]


class StalePlanError(KhaosyncError):
    """The outbound records changed since the plan was made: it no longer says what would be sent."""


class PlanNotFoundError(KhaosyncError):
    """No such plan, or no open plan at all."""


def _per_type() -> Counter:
    return Counter()


@dataclass
class PushResult:
    """What a push did (or, without commit, would do). ``as_dict`` is the ``--json`` contract."""

    plan_id: str
    sandbox: bool
    committed: bool
    plan_status: str
    summary: dict[str, dict[str, int]]                   # the plan: {type: {new, changed, void}}
    pending: Counter = field(default_factory=_per_type)  # not in the ledger when the run started
    sent: Counter = field(default_factory=_per_type)     # records put in a request this run (once each)
    accepted: Counter = field(default_factory=_per_type)  # Ometria's answer accepted them: now in the ledger
    rejected: Counter = field(default_factory=_per_type)  # known bad: in the failed-record index
    failed_later: Counter = field(default_factory=_per_type)  # accepted, then refused when Ometria processed them
    verified: Counter = field(default_factory=_per_type)  # read back and equal
    mismatched: Counter = field(default_factory=_per_type)  # read back different, or missing
    exceptions: Counter = field(default_factory=Counter)  # new exceptions, by type
    fail_findings: int = 0                               # fail-severity exceptions this run raised (new or again)
    resumed_batches: int = 0                             # journaled batches a killed run left, closed and resent
    requests: int = 0                                    # HTTP requests made (push and read)
    run_id: int | None = None

    def _types(self) -> list[str]:
        extra = [t for t in TYPE_ORDER if t not in REPORTED_TYPES and (t in self.summary or self.sent[t])]
        return [*REPORTED_TYPES, *extra]

    def _counts(self, counter: Counter) -> dict[str, int]:
        return {t: int(counter[t]) for t in self._types()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "sandbox": self.sandbox,
            "committed": self.committed,
            "plan": self.plan_id,
            "plan_status": self.plan_status,
            "summary": {t: dict(sorted(self.summary.get(t, {}).items())) for t in self._types()},
            "pending": self._counts(self.pending),
            "sent": self._counts(self.sent),
            "accepted": self._counts(self.accepted),
            "rejected": self._counts(self.rejected),
            "failed_later": self._counts(self.failed_later),
            "verified": self._counts(self.verified),
            "mismatched": self._counts(self.mismatched),
            "exceptions": dict(sorted(self.exceptions.items())),
            "fail_findings": self.fail_findings,
            "resumed_batches": self.resumed_batches,
            "requests": self.requests,
            "run": self.run_id,
        }


def push_plan(store: StateStore, profile: Profile, client: OmetriaClient | None, plan_id: str | None, *,
              commit: bool, verify: Verify = "sample", progress: Progress | None = None,
              batch_size: int = wire.BATCH_LIMIT, in_flight: int | None = None,
              owners: dict[str, str] | None = None) -> PushResult:
    """Push plan ``plan_id`` (None: the newest open plan).

    Without ``commit``: check the plan is current and return its summary; nothing is sent and
    nothing written (``client`` may be None). With it: send every plan record Ometria has not
    accepted in this version, then attribute late errors and read back (``verify``).
    ``owners``: exception type -> owner (the mapping file's ``owners``); else the defaults.

    Raises ``PlanNotFoundError`` / ``StalePlanError`` (exit 2) before anything is sent, and an
    ``OmetriaError`` (exit 3) when Ometria fails after retries; what was answered by then is
    journaled and in the ledger, and the next run carries on from there.
    """
    if verify not in ("sample", "all", "none"):
        raise ValueError(f"verify must be sample, all or none, not {verify!r}")
    if not 1 <= batch_size <= wire.BATCH_LIMIT:
        raise ValueError(f"batch_size must be within 1..{wire.BATCH_LIMIT}")
    conn = store.conn
    if store.schema_version < 2:
        raise PlanNotFoundError("no plans in this state store yet: run `khaosync diff` first")
    plan = journal.find_plan(conn, plan_id)
    if plan is None:
        raise PlanNotFoundError(f"no plan {plan_id!r}" if plan_id is not None
                                else "no open plan: run `khaosync diff` to make one")
    summary = journal.plan_summary(conn, plan.id)
    unknown = sorted(set(summary) - set(TYPE_ORDER))
    if unknown:
        raise PlanNotFoundError(f"plan {plan.id} holds records of unknown type {', '.join(unknown)}")
    if plan.status == "superseded":
        raise StalePlanError(f"plan {plan.id} was superseded by a newer diff; push the newest plan "
                             "(`khaosync push` shows it)")
    if plan.pruned_at is not None:
        raise StalePlanError(f"plan {plan.id} was pruned on {plan.pruned_at[:10]} (plans.retention_days): its bodies "
                             "are gone; run `khaosync diff` for a new plan")
    _refuse_stale(conn, plan)
    result = PushResult(plan_id=plan.id, sandbox=profile.is_sandbox, committed=commit, plan_status=plan.status,
                        summary=summary)
    for type_ in summary:
        result.pending[type_] = journal.pending_count(conn, plan.id, type_)
    if not commit:
        return result
    if client is None:
        raise ValueError("a commit run needs an OmetriaClient")
    run = _PushRun(store, profile, client, plan, result, progress or (lambda name, done, total: None),
                   batch_size, in_flight or profile.ometria.push_in_flight, owners or {})
    return run.execute(verify)


def _refuse_stale(conn: Any, plan: journal.PlanRow) -> None:
    count, first = journal.stale_records(conn, plan.id)
    if count:
        scope = ", ".join(plan.scope) if plan.scope else "the same records"
        more = f" and {count - len(first)} more" if count > len(first) else ""
        raise StalePlanError(
            f"plan {plan.id} is stale: {count} records changed since it was made ({', '.join(first)}{more}); "
            f"run `khaosync diff` again ({scope}) and push the new plan"
        )


# -- a batch's journey through a worker (HTTP only) ----------------------------------------------
@dataclass
class BatchOutcome:
    """What Ometria made of one batch: accepted (id, request id), rejected (id, message, path)."""

    accepted: list[tuple[str, str | None]] = field(default_factory=list)
    rejected: list[tuple[str, str, str | None]] = field(default_factory=list)
    request_id: str | None = None  # of the batch's first answered request


class _Sender:
    """Sends one batch and finds out, record by record, what Ometria accepted.

    ``rejected > 0``: the error log is read and entries of this request naming its records
    settle it; otherwise the batch is split in halves and each half sent again, down to single
    records. A 400/413 (the whole request refused) is split the same way, unless it keeps
    happening (``MAX_CONSECUTIVE_REFUSALS``), which means the fault is not in one record.
    """

    def __init__(self, client: OmetriaClient):
        self.client = client
        self._lock = threading.Lock()
        self._refusals = 0
        self.logged_rejections = 0  # error-log entries our own answers' ``rejected`` account for

    def send(self, type_: str, records: list[tuple[str, bytes]]) -> BatchOutcome:
        outcome = BatchOutcome()
        self._send(type_, records, outcome)
        return outcome

    def _send(self, type_: str, records: list[tuple[str, bytes]], outcome: BatchOutcome) -> None:
        try:
            answer = self.client.push(type_, records)
        except OmetriaRequestError as exc:
            if exc.status not in SPLITTABLE_STATUSES:
                raise
            with self._lock:
                self._refusals += 1
                if self._refusals > MAX_CONSECUTIVE_REFUSALS:
                    raise
            if len(records) == 1:
                outcome.rejected.append((records[0][0], f"request refused: HTTP {exc.status}: {exc.detail}", None))
                return
            for half in _halves(records):
                self._send(type_, half, outcome)
            return
        with self._lock:
            self._refusals = 0
            self.logged_rejections += answer.rejected
        outcome.request_id = outcome.request_id or answer.request_id
        if answer.rejected == 0:
            outcome.accepted.extend((record_id, answer.request_id) for record_id, _ in records)
            return
        ids = {record_id for record_id, _ in records}
        mine = self._errors_of(answer.request_id, type_, ids)
        if len(mine) == answer.rejected:
            outcome.rejected.extend((rid, e.error_message, e.error_path) for rid, e in mine.items())
            outcome.accepted.extend((rid, answer.request_id) for rid, _ in records if rid not in mine)
            return
        if answer.rejected >= len(records):
            for record_id, _ in records:
                error = mine.get(record_id)
                outcome.rejected.append((record_id, error.error_message if error else
                                         "rejected by Ometria (no matching entry in /push/_errors)",
                                         error.error_path if error else None))
            return
        for half in _halves(records):
            self._send(type_, half, outcome)

    def _errors_of(self, request_id: str | None, type_: str, ids: set[str]) -> dict[str, PushError]:
        """The error-log entries of this request that name one of its records."""
        if request_id is None:
            return {}
        found: dict[str, PushError] = {}
        for entry in self.client.push_errors():
            if (entry.request_id == request_id and entry.record_id in ids
                    and entry.record_type in (None, type_) and entry.record_id not in found):
                found[entry.record_id] = entry
        return found


def _halves(records: list[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
    middle = len(records) // 2
    return [records[:middle], records[middle:]]


# -- the run (the calling thread: every store write happens here) --------------------------------
class _PushRun:
    def __init__(self, store: StateStore, profile: Profile, client: OmetriaClient, plan: journal.PlanRow,
                 result: PushResult, progress: Progress, batch_size: int, in_flight: int,
                 owners: dict[str, str]):
        self.store = store
        self.owners = owners
        self.conn = store.conn
        self.profile = profile
        self.client = client
        self.plan = plan
        self.result = result
        self.progress = progress
        self.batch_size = batch_size
        self.in_flight = max(1, in_flight)
        self.sender = _Sender(client)
        self.run_id = 0
        self.open_before: set[int] = set()
        self.raised: dict[int, str] = {}     # exception id -> type, this run
        self.must_verify: set[tuple[str, str]] = set()
        self.seen_log: list[PushError] = []  # /push/_errors as last read, kept in the run's summary
        self._tokens_before = 0

    def execute(self, verify: Verify) -> PushResult:
        self.run_id = self.store.start_run(STAGE, self.profile.name)
        self.result.run_id = self.run_id
        self.open_before = journal.open_exception_ids(self.conn, STAGE)
        self._tokens_before = self.client.push_bucket.acquired + self.client.read_bucket.acquired
        status = "failed"
        try:
            with self.store.transaction() as conn:
                self.result.resumed_batches = len(journal.abandon_journaled(conn, utcnow()))
            previous_log, previous_start = _previous_push(self.conn, self.run_id)
            self.seen_log = self.attribute_late_errors()
            self.read_back_on_anonymous_errors(previous_log, self.seen_log, 0, previous_start)
            with ThreadPoolExecutor(max_workers=self.in_flight, thread_name_prefix="push") as pool:
                for type_ in TYPE_ORDER:
                    self.push_type(pool, type_)
            if sum(self.result.sent.values()):
                if self.profile.ometria.verify_delay_s > 0:
                    self.client.wait(self.profile.ometria.verify_delay_s)
                later = self.attribute_late_errors()
                self.read_back_on_anonymous_errors(self.seen_log, later, self.sender.logged_rejections,
                                                   previous_start)
                self.seen_log = later
            self.verify(verify)
            self._settle_plan()
            status = "ok"
            return self.result
        finally:
            self._count_exceptions()
            self.result.requests = (self.client.push_bucket.acquired + self.client.read_bucket.acquired
                                    - self._tokens_before)
            self.store.finish_run(self.run_id, status, {**self.result.as_dict(),
                                                        "error_log_seen": [asdict(e) for e in self.seen_log]})

    # -- sending ---------------------------------------------------------------------------------
    def push_type(self, pool: ThreadPoolExecutor, type_: str) -> None:
        total = journal.pending_count(self.conn, self.plan.id, type_)
        if total == 0:
            return
        done = 0
        self.progress(type_, 0, total)
        batches = self._batches(type_)
        flying: dict[Future[BatchOutcome], tuple[int, list[journal.PlanRecord]]] = {}
        failure: BaseException | None = None
        try:
            while True:
                while failure is None and len(flying) < self.in_flight:
                    batch = next(batches, None)
                    if batch is None:
                        break
                    with self.store.transaction() as conn:  # journaled, and committed, before it is sent
                        batch_id = journal.journal_batch(conn, self.plan.id, type_,
                                                         [(r.id, r.content_hash) for r in batch], utcnow())
                    self.result.sent[type_] += len(batch)
                    future = pool.submit(self.sender.send, type_, [(r.id, r.body) for r in batch])
                    flying[future] = (batch_id, batch)
                if not flying:
                    break
                finished, _ = wait(flying, return_when=FIRST_COMPLETED)
                for future in finished:
                    batch_id, batch = flying.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as exc:  # noqa: BLE001 - journaled as failed, then raised below
                        with self.store.transaction() as conn:
                            journal.mark_batch_failed(conn, batch_id, _one_line(exc), utcnow())
                        failure = failure or exc
                        continue
                    self._record_outcome(type_, batch_id, batch, outcome)
                    done += len(batch)
                    self.progress(type_, done, total)
        finally:
            for future in flying:
                future.cancel()
        if failure is not None:
            raise failure
        self.progress(type_, total, total)  # records over the size limit were settled without a request

    def _batches(self, type_: str) -> Iterator[list[journal.PlanRecord]]:
        """Pending records in batches; records over the size limit never leave (failed at once)."""
        after: str | None = None
        batch: list[journal.PlanRecord] = []
        while True:
            page = journal.pending_page(self.conn, self.plan.id, type_, after, PAGE)
            if not page:
                break
            after = page[-1].id
            for record in page:
                try:
                    wire.check_size(record.type, record.id, record.body)
                except wire.RecordTooLarge as exc:
                    self._too_large(record, exc)
                    continue
                batch.append(record)
                if len(batch) == self.batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _too_large(self, record: journal.PlanRecord, exc: wire.RecordTooLarge) -> None:
        now = utcnow()
        with self.store.transaction() as conn:
            journal.put_failed(conn, record.type, record.id, record.content_hash, str(exc), "root", now)
            self._raise(conn, "record_too_large", record.type, record.id, f"not sent: {exc}",
                        {"size": exc.size, "limit": wire.RECORD_LIMIT})
        self.result.rejected[record.type] += 1

    def _record_outcome(self, type_: str, batch_id: int, batch: list[journal.PlanRecord],
                        outcome: BatchOutcome) -> None:
        """One transaction: the batch answered, its accepted records in the ledger, the rest failed."""
        by_id = {r.id: r for r in batch}
        now = utcnow()
        with self.store.transaction() as conn:
            journal.mark_batch_accepted(conn, batch_id, outcome.request_id, len(outcome.accepted),
                                        len(outcome.rejected), now)
            for record_id, request_id in outcome.accepted:
                record = by_id[record_id]
                journal.put_ledger(conn, type_, record_id, record.content_hash, record.body, batch_id, request_id, now)
                journal.clear_failed(conn, type_, record_id)
                journal.resolve_record_exceptions(conn, STAGE, ("push_rejected", "record_too_large"), type_,
                                                  record_id, now)
            for record_id, message, path in outcome.rejected:
                record = by_id[record_id]
                journal.put_failed(conn, type_, record_id, record.content_hash, message, path, now)
                where = f" at {path}" if path else ""
                self._raise(conn, "push_rejected", type_, record_id, f"refused by Ometria: {message}{where}",
                            {"error_message": message, "error_path": path, "when": "at push", "batch": batch_id})
        self.result.accepted[type_] += len(outcome.accepted)
        self.result.rejected[type_] += len(outcome.rejected)

    # -- errors Ometria logs after it answered -----------------------------------------------
    def attribute_late_errors(self) -> list[PushError]:
        """Entries of ``/push/_errors`` about a record the ledger says was accepted, by the very
        request that carried the ledger's version: Ometria refused it when it processed it, so
        it leaves the ledger for the failed-record index (and is retried). Returns the log read."""
        now = utcnow()
        entries = self.client.push_errors()
        for entry in entries:
            if entry.record_id is None or entry.record_type is None:
                if entry.request_id is not None:  # ours? then read back that request's records
                    self.must_verify.update(journal.ledger_rows_for_request(self.conn, entry.request_id))
                continue
            row = journal.ledger_row(self.conn, entry.record_type, entry.record_id)
            if row is None or not _same_push(entry, row):
                continue
            with self.store.transaction() as conn:
                journal.remove_ledger(conn, row.type, row.id)
                journal.put_failed(conn, row.type, row.id, row.content_hash, entry.error_message, entry.error_path, now)
                where = f" at {entry.error_path}" if entry.error_path else ""
                self._raise(conn, "push_rejected", row.type, row.id,
                            f"accepted, then refused when Ometria processed it: {entry.error_message}{where}",
                            {"error_message": entry.error_message, "error_path": entry.error_path,
                             "when": "after acceptance", "request_id": entry.request_id})
            self.result.failed_later[row.type] += 1
        return entries

    def read_back_on_anonymous_errors(self, before: list[PushError] | None, after: list[PushError],
                                      explained: int, since: str | None) -> None:
        """The documented error log names no request and no record: when it holds more new
        entries of that kind than our own answers' ``rejected`` account for, Ometria refused
        something it had accepted, and only a read-back can say what. Every ledger row not yet
        read back since the previous push began is then verified (missing: out of the ledger,
        into the failed records). ``before`` None: no earlier reading, every entry counts as new."""
        fresh = after if before is None else after[:_new_entries(before, after)]
        anonymous = sum(1 for e in fresh if e.record_id is None and e.request_id is None)
        if anonymous > explained:
            rows = journal.unverified_ledger_rows(self.conn, since)
            log.info("/push/_errors: %d new entries name no record; reading back %d unverified records",
                     anonymous - explained, len(rows))
            self.must_verify.update(rows)

    # -- verification ---------------------------------------------------------------------------
    def verify(self, mode: Verify) -> None:
        targets: dict[str, list[tuple[str, str]]] = {}
        if mode != "none":
            limit = None if mode == "all" else self.profile.ometria.verify_sample
            for type_ in READABLE_TYPES:
                targets[type_] = journal.plan_ledger_ids(self.conn, self.plan.id, type_, limit)
        for type_, id_ in sorted(self.must_verify):
            row = journal.ledger_row(self.conn, type_, id_)
            if row is not None and type_ in READABLE_TYPES and (id_, row.content_hash) not in targets.get(type_, []):
                targets.setdefault(type_, []).append((id_, row.content_hash))
        for type_, wanted in targets.items():
            if wanted:
                self._verify_type(type_, wanted, scan=len(wanted) > LIST_SCAN_OVER)

    def _verify_type(self, type_: str, wanted: list[tuple[str, str]], scan: bool) -> None:
        """Read ``wanted`` back (one GET each, or by paging the list) and settle each: equal
        (verified), different (an exception, the ledger row stays: Ometria holds the record),
        or missing (out of the ledger, into the failed records: Ometria does not hold it)."""
        hashes = dict(wanted)
        verdicts: dict[str, list[str]] = {}  # id -> differing fields ([] = equal); absent = missing
        details: dict[str, dict] = {}
        stale: dict[str, list[str]] = {}     # id -> fields we blanked that Ometria kept
        seen = self._scan(type_, hashes) if scan else self._read_each(type_, list(hashes))
        for id_, got in seen:
            if got is None:
                continue
            sent = wire.loads(journal.ledger_body(self.conn, type_, id_) or b"{}")
            stale[id_] = stale_paths(sent, got)
            verdicts[id_] = [path for path in differences(sent, got) if path not in stale[id_]]
            if verdicts[id_]:
                details[id_] = _mismatch_detail(type_, verdicts[id_], sent, got)
        now = utcnow()
        items = list(hashes.items())
        for start in range(0, len(items), PAGE):
            with self.store.transaction() as conn:
                for id_, content_hash in items[start:start + PAGE]:
                    self._settle_verdict(conn, type_, id_, content_hash, verdicts.get(id_), details.get(id_), now)
                    if id_ in stale:
                        self._settle_stale(conn, type_, id_, stale[id_], now)

    def _settle_verdict(self, conn: Any, type_: str, id_: str, content_hash: str, fields: list[str] | None,
                        detail: dict | None, now: str) -> None:
        if fields is None:
            journal.remove_ledger(conn, type_, id_)
            journal.put_failed(conn, type_, id_, content_hash, "accepted but not found on read-back", None, now)
            self._raise(conn, "push_verification_mismatch", type_, id_,
                        "accepted by Ometria but not found when read back", {"missing": True})
            self.result.mismatched[type_] += 1
        elif fields:
            self._raise(conn, "push_verification_mismatch", type_, id_,
                        f"read back different from what was sent: {', '.join(fields[:10])}", detail)
            self.result.mismatched[type_] += 1
        else:
            journal.set_verified(conn, type_, id_, content_hash, now)
            journal.resolve_record_exceptions(conn, STAGE, ("push_verification_mismatch",), type_, id_, now)
            self.result.verified[type_] += 1

    def _settle_stale(self, conn: Any, type_: str, id_: str, fields: list[str], now: str) -> None:
        """Fields we sent blank that Ometria still holds: it did not clear them (docs/push.md)."""
        if not fields:
            journal.resolve_record_exceptions(conn, STAGE, ("stale_field",), type_, id_, now)
            return
        self._raise(conn, "stale_field", type_, id_,
                    f"Ometria kept {', '.join(fields[:10])} after accepting a blank for "
                    f"{'it' if len(fields) == 1 else 'them'}: clear it in Ometria by hand", {"fields": fields})

    def _collection_of(self, id_: str) -> str:
        sent = wire.loads(journal.ledger_body(self.conn, "contact", id_) or b"{}")
        return str(sent.get("@collection") or self.profile.ometria.collection)

    def _read_each(self, type_: str, ids: list[str]) -> Iterator[tuple[str, dict | None]]:
        """One GET per record, ``ometria.read_in_flight`` at a time: the read bucket keeps them
        within ``read_rate``, the threads keep slow answers from leaving it unused. Answers come
        back in ``ids`` order; the store is read here, in the calling thread, never in a worker."""
        collections = {id_: self._collection_of(id_) for id_ in ids} if type_ == "contact" else {}

        def read(id_: str) -> tuple[str, dict | None]:
            if type_ == "product":
                return id_, self.client.get_product(id_)
            if type_ == "order":
                return id_, self.client.get_order(id_)
            return id_, self.client.get_contact(collections[id_], id_)

        workers = min(self.profile.ometria.read_in_flight, max(1, len(ids)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
            for start in range(0, len(ids), PAGE):  # bounded: at most a page of answers waits at a time
                yield from pool.map(read, ids[start:start + PAGE])

    def _scan(self, type_: str, wanted: dict[str, str]) -> Iterator[tuple[str, dict]]:
        """Page through the list endpoint until every wanted record is seen (or the list ends)."""
        if type_ == "contact":
            by_collection: dict[str, set[str]] = {}
            for id_ in wanted:
                by_collection.setdefault(self._collection_of(id_), set()).add(id_)
            sources = [(self.client.iter_contacts(c), ids) for c, ids in by_collection.items()]
        elif type_ == "product":
            sources = [(self.client.iter_products(include_variants=True), set(wanted))]
        else:
            sources = [(self.client.iter_orders(), set(wanted))]
        for docs, ids in sources:
            for doc in docs:
                id_ = doc.get("id") if isinstance(doc, dict) else None
                if isinstance(id_, str) and id_ in ids:
                    ids.discard(id_)
                    yield id_, doc
                    if not ids:
                        break

    # -- endings ----------------------------------------------------------------------------------
    def _settle_plan(self) -> None:
        if journal.unsettled_count(self.conn, self.plan.id) == 0 and self.plan.status == "open":
            with self.store.transaction() as conn:
                journal.set_plan_status(conn, self.plan.id, "pushed")
            self.result.plan_status = "pushed"

    def _raise(self, conn: Any, type_name: str, entity: str, key: str, reason: str, detail: dict | None) -> None:
        exception_id = self.store.record_exception(
            run_id=self.run_id, type=type_name, severity=severity_of(type_name), owner=owner_of(type_name, self.owners),
            stage=STAGE, reason=reason, records=[f"{entity}:{key}"], entity=entity, record_key=key, detail=detail,
        )
        self.raised[exception_id] = type_name

    def _count_exceptions(self) -> None:
        self.result.exceptions = Counter(t for i, t in self.raised.items() if i not in self.open_before)
        self.result.fail_findings = sum(1 for t in self.raised.values() if severity_of(t) == "fail")


# -- helpers ----------------------------------------------------------------------------------------
def _new_entries(before: list[PushError], after: list[PushError]) -> int:
    """How many entries at the head of ``after`` (newest first) came after ``before`` was read:
    the fewest that make the rest of ``after`` the head of ``before`` (the log keeps 100)."""
    for n in range(len(after) + 1):
        tail = after[n:]
        if tail == before[:len(tail)]:
            return n
    return len(after)


def _previous_push(conn: Any, run_id: int) -> tuple[list[PushError] | None, str | None]:
    """The error log the last finished push saw at its end, and when that push started."""
    row = conn.execute("SELECT summary, started_at FROM run WHERE command = ? AND id < ? AND summary IS NOT NULL "
                       "ORDER BY id DESC LIMIT 1", (STAGE, run_id)).fetchone()
    if row is None:
        return None, None
    try:
        seen = json.loads(row[0]).get("error_log_seen")
    except (ValueError, AttributeError):
        seen = None
    if not isinstance(seen, list):
        return None, row[1]
    return [PushError.from_json(entry) for entry in seen], row[1]


def _same_push(entry: PushError, row: journal.LedgerRow) -> bool:
    """Is this error about the version the ledger holds? By request id when the entry has one,
    else by time (an error logged after the ledger's acceptance)."""
    if entry.request_id is not None:
        return entry.request_id == row.request_id
    if entry.timestamp is None:
        return False
    try:
        logged = datetime.fromisoformat(entry.timestamp.replace("Z", "+00:00"))
        accepted = datetime.fromisoformat(row.accepted_at)
    except ValueError:
        return False
    if logged.tzinfo is None or accepted.tzinfo is None:
        return False
    return logged >= accepted


def differences(sent: Any, got: Any, path: str = "") -> list[str]:
    """Paths of the fields we sent that Ometria holds differently. Fields Ometria adds are
    ignored, directives (``@merge`` ...) are not stored, a field sent blank (null or "") must be
    absent or the same, numbers compare exactly as decimals, and a boolean is never a number."""
    if isinstance(sent, dict):
        if not isinstance(got, dict):
            return [path or "(record)"]
        out: list[str] = []
        for key, value in sent.items():
            if not path and key in DIRECTIVES:
                continue
            where = f"{path}.{key}" if path else key
            if key not in got:
                if not is_blank(value):  # a blank sent and nothing held: the same (no value)
                    out.append(where)
                continue
            out.extend(differences(value, got[key], where))
        return out
    if isinstance(sent, list):
        if not isinstance(got, list) or len(got) != len(sent):
            return [path]
        out = []
        for index, (a, b) in enumerate(zip(sent, got)):
            out.extend(differences(a, b, f"{path}.{index}"))
        return out
    if isinstance(sent, bool) or isinstance(got, bool):
        return [] if type(sent) is type(got) and sent == got else [path]
    if isinstance(sent, (int, Decimal)) and isinstance(got, (int, Decimal)):
        return [] if Decimal(sent) == Decimal(got) else [path]
    return [] if sent == got else [path]


def _lookup(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(doc, dict):
            doc = doc.get(part)
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return None
    return doc


def _mismatch_detail(type_: str, fields: list[str], sent: dict, got: dict) -> dict:
    """The differing fields; their values too, except for contacts (personal data stays out)."""
    detail: dict[str, Any] = {"fields": fields}
    if type_ != "contact":
        detail["values"] = {f: {"sent": str(_lookup(sent, f)), "held": str(_lookup(got, f))} for f in fields[:20]}
    return detail


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
