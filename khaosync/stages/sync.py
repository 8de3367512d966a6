"""Sync: pull, map, diff and push in one run, for cron.

One run id covers the pull, map and diff, so their findings are one run's findings. The
three per-type diffs are merged into ONE plan (products, contacts, orders), which push sends
in that order: line items need their products first. Without ``commit`` the same path runs
and push only checks and summarises the plan, so what a dry run predicts is what a real run
sends.

A nightly sync's work follows the day's change, not the history: map maps only what was
staged since the last map, and when the last sync left the store (``nightly_basis``), diff
compares only what that map looked at again plus what was planned since, and the detectors
that can look at those records only do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from khaosync.config import Profile
from khaosync.detectors import load_mapping_for
from khaosync.stages.diff import DiffResult, diff_all, nightly_basis
from khaosync.stages.map import MapResult, map_records
from khaosync.stages.pull import PullResult, Source, pull
from khaosync.stages.push import PushResult, push_plan
from khaosync.store import StateStore, plans
from khaosync.store.db import utcnow

# Reference data: an order needs its customer and its products however long ago they last
# changed, so ``--since`` never narrows these; they follow their bookmarks (all on a first run).
REFERENCE = ("customers", "stock")
# Ometria record sets (what sync pushes) -> the KC entities each one needs pulled.
NEEDS = {
    "products": ["stock"],
    "contacts": ["customers"],
    "orders": ["customers", "stock", "orders", "credit-notes"],
}
ORDER = ("products", "contacts", "orders")


@dataclass
class SyncResult:
    sandbox: bool
    committed: bool
    run_id: int
    pull: PullResult
    map: MapResult
    diffs: list[DiffResult]
    plan_id: str | None
    push: PushResult | None
    exceptions: dict[str, int] = field(default_factory=dict)
    consent: Any = None  # khaosync.stages.consent.ConsentRun, when the consent flow ran

    @property
    def fail_findings(self) -> int:
        return (self.pull.fail_findings + self.map.fail_findings + sum(d.fail_findings for d in self.diffs)
                + (getattr(self.push, "fail_findings", 0) or 0))

    def as_dict(self) -> dict[str, Any]:
        pushed = self.push.as_dict() if self.push is not None else {}
        zero = {"product": 0, "contact": 0, "order": 0}
        return {
            "sandbox": self.sandbox,
            "committed": self.committed,
            "run": self.run_id,
            "plan": self.plan_id,
            "sent": pushed.get("sent", zero),
            "accepted": pushed.get("accepted", zero),
            "rejected": pushed.get("rejected", zero),
            "exceptions": self.exceptions,
            "pull": self.pull.as_dict(),
            "map": self.map.as_dict(),
            "diff": {d.type: d.counts for d in self.diffs},
            "push": pushed or None,
            "consent": self.consent.as_dict() if self.consent is not None else None,
            "fail_findings": self.fail_findings,
            "left_outside_window": self.left_outside_window(),
        }

    def left_outside_window(self) -> dict[str, int] | None:
        """What a ``--since`` window left out: orders placed before it (not pulled) and their
        credit notes (not checked for refund gaps); None when nothing was."""
        orders = self.pull.entities.get("orders")
        skipped = orders.skipped_before_since if orders is not None else 0
        mapped = self.map.entities.get("orders")
        notes = mapped.outside_window if mapped is not None else 0
        return {"orders": skipped, "credit_notes": notes} if skipped or notes else None


def _merge_plans(store: StateStore, run_id: int, diffs: list[DiffResult]) -> str | None:
    """One plan holding every type's records; the per-type plans are superseded by it."""
    ids = [d.plan_id for d in diffs]
    with store.transaction() as conn:
        merged = f"{ids[-1]}-sync"
        plans.create_plan(conn, merged, run_id=run_id, scope=[d.type for d in diffs], created_at=utcnow(),
                          made_by="sync")
        counts: dict[str, int] = {"new": 0, "changed": 0, "unchanged": 0, "void": 0}
        for d in diffs:
            plans.copy_records(conn, d.plan_id, merged)
            for change in counts:
                counts[change] += d.counts.get(change, 0)
        plans.finish_plan(conn, merged, counts)
        conn.executemany("UPDATE plan SET status = 'superseded' WHERE id = ? AND status = 'open'",
                         [(i,) for i in ids])
    return merged


def _named(progress, stage: str):
    """The stage's progress callback with its name first (``map products``, ``push product``),
    so one display can tell sync's stages apart."""
    if progress is None:
        return None
    return lambda name, done, total: progress(f"{stage} {name}", done, total)


def sync(store: StateStore, profile: Profile, source: Source, client, *, since: datetime | None,
         entities: list[str] | None = None, commit: bool = False, verify: str = "sample",
         progress=None, consent_reader=None, consent_kc=None) -> SyncResult:
    """Pull orders and credit notes changed since ``since`` (None: from the bookmarks) with the
    customers and stock they need, map, diff and push them. With ``consent_reader`` (an Ometria
    client) the consent flow runs too: Ometria's changes are read before map (so no KC opt-in
    goes over a newer Ometria opt-out), planned last, and with ``commit`` written to KC through
    ``consent_kc``."""
    chosen = [e for e in ORDER if e in (entities or ORDER)]
    unknown = sorted(set(entities or ()) - set(ORDER))
    if unknown:
        raise ValueError(f"unknown entity {unknown[0]!r}; choose from {', '.join(ORDER)}")
    kc_entities = [e for e in ("customers", "stock", "orders", "credit-notes") if any(e in NEEDS[c] for c in chosen)]
    run_id = store.start_run("sync", profile.name)
    try:
        reference = [e for e in kc_entities if e in REFERENCE]
        dated = [e for e in kc_entities if e not in REFERENCE]
        pulled = pull(store, profile, source, entities=reference, progress=_named(progress, "pull"), run_id=run_id) if reference \
            else None
        if dated:
            more = pull(store, profile, source, entities=dated, since=since, progress=_named(progress, "pull"),
                        run_id=run_id)
            if pulled is None:
                pulled = more
            else:
                pulled.entities.update(more.entities)
                pulled.exceptions.update(more.exceptions)
                pulled.fail_findings += more.fail_findings
        assert pulled is not None
        full: set[str] = set()
        if consent_reader is not None:
            from khaosync.stages.consent import read_ometria_consent

            # Before map: a KC opt-in is never sent over a newer Ometria opt-out.
            consent_read = read_ometria_consent(store, profile, consent_reader, run_id=run_id)
            if consent_read.new_unsubscribes or consent_read.contact_changes or consent_read.erased:
                full.add("contacts")  # what a contact is sent depends on Ometria's side now
        # Before map moves the marks: may this run's diff build on the last sync's?
        basis = nightly_basis(store.conn, run_id, chosen)
        mapping = load_mapping_for(profile)  # read once for map, diff and the detectors
        mapped = map_records(store, profile, entities=chosen, progress=_named(progress, "map"), run_id=run_id,
                             incremental=True, full=full, mapping=mapping)
        diffs = diff_all(store, profile, chosen, run_id=run_id, changed=mapped.looked_at, basis=basis,
                         mapping=mapping)
        plan_id = _merge_plans(store, run_id, diffs)
        pushed = push_plan(store, profile, client if commit else None, plan_id, commit=commit, verify=verify,
                           progress=_named(progress, "push"))
        consent = None
        if consent_reader is not None:
            from khaosync.stages.consent import consent_after_read

            consent = consent_after_read(store, profile, consent_read, consent_kc if commit else None,
                                         run_id=run_id, commit=commit)
        found = dict(store.conn.execute(
            "SELECT type, count(*) FROM exception WHERE first_run >= ? GROUP BY type ORDER BY type", (run_id,)))
        result = SyncResult(profile.is_sandbox, commit, run_id, pulled, mapped, diffs, plan_id, pushed, found, consent)
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    store.finish_run(run_id, "ok", {"plan": plan_id, "committed": commit, "exceptions": found,
                                    "pull": pulled.as_dict()})
    return result
