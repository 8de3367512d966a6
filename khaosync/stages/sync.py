"""Sync: pull, map, diff and push in one run, for cron.

One run id covers the pull, map and diff, so their findings are one run's findings. The
three per-type diffs are merged into ONE plan (products, contacts, orders), which push sends
in that order: line items need their products first. Without ``commit`` the same path runs
and push only checks and summarises the plan, so what a dry run predicts is what a real run
sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from khaosync.config import Profile
from khaosync.stages.diff import DiffResult, diff_all
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
            "fail_findings": self.fail_findings,
        }


def _merge_plans(store: StateStore, run_id: int, diffs: list[DiffResult]) -> str | None:
    """One plan holding every type's records; the per-type plans are superseded by it."""
    ids = [d.plan_id for d in diffs]
    with store.transaction() as conn:
        merged = f"{ids[-1]}-sync"
        plans.create_plan(conn, merged, run_id=run_id, scope=[d.type for d in diffs], created_at=utcnow())
        counts: dict[str, int] = {"new": 0, "changed": 0, "unchanged": 0, "void": 0}
        for d in diffs:
            plans.copy_records(conn, d.plan_id, merged)
            for change in counts:
                counts[change] += d.counts.get(change, 0)
        plans.finish_plan(conn, merged, counts)
        conn.executemany("UPDATE plan SET status = 'superseded' WHERE id = ? AND status = 'open'",
                         [(i,) for i in ids])
    return merged


def sync(store: StateStore, profile: Profile, source: Source, client, *, since: datetime | None,
         entities: list[str] | None = None, commit: bool = False, verify: str = "sample",
         progress=None) -> SyncResult:
    """Pull orders and credit notes changed since ``since`` (None: from the bookmarks) with the
    customers and stock they need, map, diff and push them."""
    chosen = [e for e in ORDER if e in (entities or ORDER)]
    unknown = sorted(set(entities or ()) - set(ORDER))
    if unknown:
        raise ValueError(f"unknown entity {unknown[0]!r}; choose from {', '.join(ORDER)}")
    kc_entities = [e for e in ("customers", "stock", "orders", "credit-notes") if any(e in NEEDS[c] for c in chosen)]
    run_id = store.start_run("sync", profile.name)
    try:
        reference = [e for e in kc_entities if e in REFERENCE]
        dated = [e for e in kc_entities if e not in REFERENCE]
        pulled = pull(store, profile, source, entities=reference, progress=progress, run_id=run_id) if reference \
            else None
        if dated:
            more = pull(store, profile, source, entities=dated, since=since, progress=progress, run_id=run_id)
            if pulled is None:
                pulled = more
            else:
                pulled.entities.update(more.entities)
                pulled.exceptions.update(more.exceptions)
                pulled.fail_findings += more.fail_findings
        assert pulled is not None
        mapped = map_records(store, profile, entities=chosen, progress=progress, run_id=run_id, incremental=True)
        diffs = diff_all(store, profile, chosen, run_id=run_id, changed=mapped.looked_at)
        plan_id = _merge_plans(store, run_id, diffs)
        pushed = push_plan(store, profile, client if commit else None, plan_id, commit=commit, verify=verify,
                           progress=progress)
        found = dict(store.conn.execute(
            "SELECT type, count(*) FROM exception WHERE first_run >= ? GROUP BY type ORDER BY type", (run_id,)))
        result = SyncResult(profile.is_sandbox, commit, run_id, pulled, mapped, diffs, plan_id, pushed, found)
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    store.finish_run(run_id, "ok", {"plan": plan_id, "committed": commit, "exceptions": found,
                                    "pull": pulled.as_dict()})
    return result
