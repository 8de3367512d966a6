"""Detectors: one module per failure class, each a list of checks over the state store (and,
with a live read-back, over what Ometria holds now).

A check yields ``Finding`` objects; ``run_detectors`` records them in the exceptions register
(type, severity, owner, the records involved, the stage) and resolves the findings of the
checks it ran that this run no longer sees. The register is keyed per check by
(type, entity): a run without ``--live`` never closes what only a live check can see.

A finding another stage already holds open (``map`` flags an unknown product line, the
detector sees the same line) is not recorded twice: the open row stands for both. ``diff``
and ``health`` run the same checks, so between them they keep one row per finding: either
stage's run sees it again, or closes it when it is gone.

Record references are ``kind:key``: ERP records by staged entity (``company:1003``,
``sales_order:2042``, ``stock_item:315``, ``credit_note:60001``), KC contacts as
``contact:7086`` (also their Ometria id), Ometria-only records as ``ometria_order:INV-INV40081``
or ``ometria_contact:web/123``, pushes as ``push_batch:12``.

    >>> from khaosync.detectors import run_detectors
    >>> findings = run_detectors(store, profile)          # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal

from khaosync.config import Profile
from khaosync.findings import owner_of, severity_of
from khaosync.store import StateStore
from khaosync.store.db import utcnow

if TYPE_CHECKING:
    from khaosync.detectors.live import LiveSnapshot

RECORD_TYPES = frozenset({"contact", "order", "product"})
STALL_AFTER = timedelta(minutes=15)  # a journaled batch older than this was never acknowledged
DETECTOR_STAGES = ("diff", "health")  # the stages that run the detectors: one register between them


@dataclass(frozen=True)
class Finding:
    """One problem, naming every record involved. ``severity`` None: the type's default."""

    type: str
    reason: str
    records: tuple[str, ...]
    entity: str               # what the finding is about (register partition, with the type)
    key: str | None = None    # the main record
    severity: str | None = None
    detail: dict | None = None
    # Set by run_detectors:
    owner: str | None = None
    stage: str | None = None
    check: str | None = None
    rule: str | None = None
    exception_id: int | None = None

    def as_dict(self) -> dict:
        return {"id": self.exception_id, "type": self.type, "severity": self.severity, "owner": self.owner,
                "stage": self.stage, "entity": self.entity, "key": self.key, "records": list(self.records),
                "reason": self.reason, "check": self.check}


Mode = Literal["always", "ledger", "live"]


@dataclass(frozen=True)
class Check:
    """One rule of a detector.

    ``mode``: ``always`` runs on every run; ``live`` only with a read-back; ``ledger`` only
    without one (the same question answered from the ledger when Ometria is not read).
    ``scope``: the record types whose diff runs it (``health`` runs every check).
    """

    name: str
    type: str
    entity: str
    rule: str
    run: Callable[["DetectorContext"], Iterable[Finding]]
    mode: Mode = "always"
    scope: frozenset[str] = RECORD_TYPES
    # The same question over some records of ``entity`` only (``changed`` in run_detectors):
    # its findings about other records are carried forward, not closed.
    scoped: Callable[["DetectorContext", set[str]], Iterable[Finding]] | None = None
    # The question answered from what changed (``changed`` in run_detectors) and what an
    # incremental map keeps (``map_read``), instead of a scan of the history: every finding (the
    # check closes whole), ``Narrowed`` (it closes only those keys), or None when nothing it
    # reads changed (every finding carried).
    nightly: Callable[["DetectorContext", dict[str, set[str]]], "Iterable[Finding] | Narrowed | None"] | None = None


@dataclass
class Narrowed:
    """A nightly answer about some records only: its findings, and the keys (of the check's
    entity) whose findings it closes when unseen; the others are carried forward."""

    findings: list[Finding]
    keys: set[str]


@dataclass
class DetectorContext:
    store: StateStore
    profile: Profile
    mapping: Any  # khaosync.mapping.schema.Mapping, or None when no mapping file can be read
    live: "LiveSnapshot | None"
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    stall_after: timedelta = STALL_AFTER
    cache: dict = field(default_factory=dict)  # one pass shared by several checks of a detector
    changed: dict[str, set[str]] = field(default_factory=dict)  # run_detectors' ``changed`` ({}: none)

    @property
    def conn(self):
        return self.store.conn

    @property
    def collection(self) -> str:
        return self.mapping.identity.collection if self.mapping is not None else self.profile.ometria.collection

    def status_word(self, name: str) -> str:
        """The mapping's Ometria status for ``refunded``, ``partial_refund``, ``cancelled``, ..."""
        if self.mapping is not None:
            return getattr(self.mapping.orders.statuses, name)
        return name


def _modules() -> dict[str, ModuleType]:
    from khaosync.detectors import (
        consent, identifier_conflicts, products, purchase_history, refunds, split_consignments, stale_fields,
        stalled_batches,
    )

    return {m.__name__.rsplit(".", 1)[1]: m for m in (
        identifier_conflicts, split_consignments, products, refunds, consent, purchase_history, stalled_batches,
        stale_fields)}


def registry() -> dict[str, list[Check]]:
    """Detector module name -> its checks, in the order they run."""
    out = {name: list(module.CHECKS) for name, module in _modules().items()}
    partitions: dict[tuple[str, str], str] = {}
    for checks in out.values():
        for check in checks:
            clash = partitions.setdefault((check.type, check.entity), check.name)
            # Two checks sharing a partition would close each other's findings.
            assert clash == check.name, f"{check.name} and {clash} share ({check.type}, {check.entity})"
    return out


def load_mapping_for(profile: Profile) -> Any:
    """The profile's mapping files (the packaged default when the default file is absent).

    A broken mapping file raises its ConfigError: silently falling back to the defaults would
    report findings under rules the operator did not choose.
    """
    from khaosync.mapping.schema import load_mapping

    return load_mapping(profile.mappings)


def selected_checks(*, live: bool, scope: Iterable[str] | None) -> list[Check]:
    wanted = RECORD_TYPES if scope is None else frozenset(scope)
    out = []
    for checks in registry().values():
        for check in checks:
            if check.mode == "live" and not live or check.mode == "ledger" and live:
                continue
            if check.scope & wanted:
                out.append(check)
    return out


def run_detectors(store: StateStore, profile: Profile, *, live_client: Any = None,
                  owners: dict[str, str] | None = None, stage: str = "diff", scope: Iterable[str] | None = None,
                  run_id: int | None = None, mapping: Any = None, now: datetime | None = None,
                  stall_after: timedelta = STALL_AFTER, changed: dict[str, set[str]] | None = None) -> list[Finding]:
    """Run every detector check that applies, record the findings, resolve what is gone.

    ``live_client``: an ``OmetriaClient`` (or a ``LiveSnapshot``) to run the live checks too.
    ``owners``: exception type -> owner (default: the mapping file's ``owners``, then
    ``khaosync.findings``). ``scope``: record types (``{"order"}``) whose checks run; None
    runs them all (``health``). ``changed``: entity -> the keys whose answers may have moved
    (sync's incremental map, ``diff_all``); a check that can (``Check.scoped``) then looks at
    those records only and closes only their findings, and one with a ``Check.nightly`` answer
    takes it (whole, or nothing when its inputs did not change: its findings stay open).
    Returns the findings with severity, owner and exception id.
    """
    from khaosync.detectors.live import as_snapshot

    if mapping is None:
        mapping = load_mapping_for(profile)
    if owners is None and mapping is not None:
        owners = dict(mapping.owners)
    collection = mapping.identity.collection if mapping is not None else profile.ometria.collection
    snapshot = as_snapshot(live_client, collection)
    own_run = run_id is None
    if own_run:
        run_id = store.start_run(stage, profile.name)
    ctx = DetectorContext(store, profile, mapping, snapshot, now or datetime.now(timezone.utc), stall_after,
                          changed=dict(changed or {}))
    try:
        checks = selected_checks(live=snapshot is not None, scope=scope)
        found: list[Finding] = []
        narrowed: dict[tuple[str, str], set[str]] = {}  # (type, entity) -> the keys looked at
        ran: list[Check] = []  # the checks that answered (a carried one closes nothing)
        for check in checks:
            keys = (changed or {}).get(check.entity) if check.scoped is not None else None
            if keys is not None:
                narrowed[(check.type, check.entity)] = keys
                answer: Iterable[Finding] | None = check.scoped(ctx, keys)  # type: ignore[misc]
            elif changed is not None and check.nightly is not None:
                answer = check.nightly(ctx, changed)  # type: ignore[assignment]
                if isinstance(answer, Narrowed):
                    narrowed[(check.type, check.entity)] = answer.keys
                    answer = answer.findings
            else:
                answer = check.run(ctx)
            if answer is None:
                continue
            ran.append(check)
            for finding in answer:
                found.append(replace(finding, severity=finding.severity or severity_of(finding.type),
                                     owner=owner_of(finding.type, owners), stage=stage, check=check.name,
                                     rule=check.rule))
        recorded = _record(store, run_id, stage, ran, found, narrowed)  # type: ignore[arg-type]
    except BaseException:
        if own_run:
            store.finish_run(run_id, "failed")  # type: ignore[arg-type]
        raise
    finally:
        if snapshot is not None and snapshot is not live_client:
            snapshot.close()
    if own_run:
        store.finish_run(run_id, "ok", {"detectors": len(checks), "findings": len(recorded)})  # type: ignore[arg-type]
    return recorded


def _record(store: StateStore, run_id: int, stage: str, checks: list[Check], found: list[Finding],
            narrowed: dict[tuple[str, str], set[str]] | None = None) -> list[Finding]:
    recorded: list[Finding] = []
    with store.transaction() as conn:
        open_rows = _open_rows(conn, {c.type for c in checks})
        for finding in found:
            records = sorted(set(finding.records))
            row_stage = stage
            twin = open_rows.get((finding.type, finding.entity, json.dumps(records)))
            if twin is not None and twin[1] not in DETECTOR_STAGES:
                # pull or map raised it at source: their open row stands for both
                recorded.append(replace(finding, exception_id=twin[0], stage=twin[1]))
                continue
            if twin is not None:
                row_stage = twin[1]  # diff and health run the same checks: one row, seen again
            detail = {**(finding.detail or {}), "rule": finding.rule, "check": finding.check}
            exception_id = store.record_exception(
                run_id=run_id, type=finding.type, severity=finding.severity or severity_of(finding.type),
                owner=finding.owner or owner_of(finding.type), stage=row_stage, reason=finding.reason,
                records=records, entity=finding.entity, record_key=finding.key, detail=detail)
            recorded.append(replace(finding, exception_id=exception_id, stage=row_stage))
        for type_, entity in sorted({(c.type, c.entity) for c in checks}):
            keys = (narrowed or {}).get((type_, entity))
            for detector_stage in sorted({stage, *DETECTOR_STAGES}):
                if keys is None:
                    store.resolve_unseen_exceptions(run_id, detector_stage, [type_], entity)
                else:
                    _resolve_unseen_of(conn, run_id, detector_stage, type_, entity, keys)
    return recorded


def _resolve_unseen_of(conn: Any, run_id: int, stage: str, type_: str, entity: str, keys: set[str]) -> None:
    """Close the unseen findings of these records only (a scoped check carries the rest)."""
    ordered = sorted(keys)
    now = utcnow()
    for start in range(0, len(ordered), 500):
        part = ordered[start:start + 500]
        conn.execute(f"UPDATE exception SET resolved_at = ? WHERE resolved_at IS NULL AND stage = ? AND type = ?"
                     f" AND entity = ? AND last_run < ? AND record_key IN ({','.join('?' * len(part))})",
                     (now, stage, type_, entity, run_id, *part))


def _open_rows(conn: Any, types: set[str]) -> dict[tuple[str, str, str], tuple[int, str]]:
    """Open findings by (type, entity, records JSON): (id, stage); detector stages win a tie."""
    if not types:
        return {}
    marks = ",".join("?" * len(types))
    rows = conn.execute(f"SELECT type, entity, records, id, stage FROM exception WHERE resolved_at IS NULL "
                        f"AND type IN ({marks}) ORDER BY id", tuple(sorted(types)))
    out: dict[tuple[str, str, str], tuple[int, str]] = {}
    for t, e, r, i, s in rows:
        key = (t, e or "", json.dumps(json.loads(r)))
        if key not in out or (s in DETECTOR_STAGES and out[key][1] not in DETECTOR_STAGES):
            out[key] = (i, s)
    return out


def amount(value: object) -> Decimal | None:
    """A money value read from JSON (SQLite's json_extract or a body): exact, or None when it
    is absent or not a number (a boolean is not an amount)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def ref(kind: str, key: object) -> str:
    """A record reference: ``ref("sales_order", 2042)`` -> ``"sales_order:2042"``."""
    return f"{kind}:{key}"


__all__ = ["Check", "DetectorContext", "Finding", "Narrowed", "STALL_AFTER", "load_mapping_for", "ref", "registry",
           "run_detectors", "selected_checks"]
