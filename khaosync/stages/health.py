"""Health: the daily check, one verdict and an exit code for alerting (docs/runbook.md).

Every check reads the state store only (``live_client`` adds Ometria's push error log):

- ``pull:<entity>``: the last successful pull that covered the entity, and its age;
- ``bookmark:<entity>``: how far the entity's high-water mark trails the ERP's clock;
- ``push``: the last successful push (or sync), and its age;
- ``runs``: runs killed mid-way (still ``running`` long after they started) or whose latest
  attempt failed;
- ``stalled_batches``: push batches journaled and never answered;
- ``unattributed_rejections``: records Ometria rejected (its answer counted them) that are
  neither in the failed-record index nor, since, in the ledger;
- ``push_errors`` (live): entries of Ometria's error log about our records that nothing has
  recorded yet;
- ``failed_records``: the failed-record index (records waiting for a retry);
- ``exceptions:<owner>``: open exceptions by owner, type and age.

Thresholds come from the rules file's ``health`` section (``mappings/reconcile.yaml``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from khaosync.config import Profile
from khaosync.stages.reconcile import worst
from khaosync.stages.reconcile_rules import ReconcileRules, Status
from khaosync.store import StateStore

PULL_ENTITIES = {"customers": "company", "stock": "stock_item", "orders": "sales_order",
                 "credit-notes": "credit_note"}  # khaosync.stages.pull.ENTITIES, by CLI name
PUSH_COMMANDS = ("push", "sync")
RUN_LOOKBACK = 200  # recent runs read to find each entity's last successful pull


class ErrorLog(Protocol):
    def push_errors(self) -> list[Any]: ...


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    data: dict | None = None

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "status": self.status, "detail": self.detail}
        if self.data is not None:
            out["data"] = self.data
        return out


@dataclass
class HealthReport:
    generated_at: str
    checks: list[Check]
    exceptions_by_owner: dict[str, dict[str, dict]] = field(default_factory=dict)
    failed_records: list[dict] = field(default_factory=list)
    failed_records_total: int = 0
    live: bool = False

    @property
    def status(self) -> Status:
        return worst(c.status for c in self.checks)

    def verdict(self, width: int = 80) -> str:
        """One line for a cron mail's subject or a chat alert, at most ``width`` characters:
        the failing checks are named first; what does not fit is counted."""
        fails = [c.name for c in self.checks if c.status == "fail"]
        warns = [c.name for c in self.checks if c.status == "warn"]
        if not fails and not warns:
            return f"health OK: all {len(self.checks)} checks pass"
        head = f"health {self.status.upper()}: "
        tail = f"; {len(warns)} warn" if fails and warns else ""
        names, count, label = (fails, len(fails), "fail") if fails else (warns, len(warns), "warn")
        for shown in range(len(names), -1, -1):
            more = f", +{len(names) - shown} more" if shown < len(names) else ""
            listed = ", ".join(names[:shown]) + more if shown else f"+{len(names)} more"
            line = f"{head}{count} {label} ({listed}){tail}"
            if len(line) <= width or shown == 0:
                return line
        return line  # pragma: no cover - the loop always returns

    def as_dict(self) -> dict:
        return {"status": self.status, "verdict": self.verdict(), "generated_at": self.generated_at,
                "live": self.live, "checks": [c.as_dict() for c in self.checks],
                "exceptions_by_owner": self.exceptions_by_owner, "failed_records": self.failed_records,
                "failed_records_total": self.failed_records_total}


# -- time -----------------------------------------------------------------------------------------


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _hours(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else (now - then).total_seconds() / 3600


def age_text(hours: float | None) -> str:
    """``3 min``, ``5.2 h``, ``4 d``: an age a person reads at a glance."""
    if hours is None:
        return "never"
    if hours < 0:
        return "in the future"
    if hours < 1:
        return f"{round(hours * 60)} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.0f} d"


# -- the checks -------------------------------------------------------------------------------------


def _recent_runs(store: StateStore) -> list[tuple]:
    return store.conn.execute(
        "SELECT id, command, status, started_at, finished_at, summary FROM run ORDER BY id DESC LIMIT ?",
        (RUN_LOOKBACK,)).fetchall()


def _pulled_entities(summary: str | None) -> set[str]:
    """Entities a pull (or sync) run's summary says it read."""
    try:
        data = json.loads(summary) if summary else {}
    except ValueError:
        return set()
    if not isinstance(data, dict):
        return set()
    entities = data.get("entities")
    if not isinstance(entities, dict) and isinstance(data.get("pull"), dict):
        entities = data["pull"].get("entities")  # a sync run nests its pull's summary
    return set(entities) if isinstance(entities, dict) else set()


def _pull_checks(store: StateStore, rules: ReconcileRules, now: datetime, runs: list[tuple]) -> list[Check]:
    last: dict[str, datetime] = {}
    for _id, command, status, _started, finished, summary in runs:
        if command not in ("pull", "sync") or status != "ok":
            continue
        for name in _pulled_entities(summary):
            when = _when(finished)
            if name in PULL_ENTITIES and when is not None and name not in last:
                last[name] = when
    marks = {e: _when(u) for e, u in store.conn.execute("SELECT entity, updated_at FROM bookmark")}
    checks = []
    for name, entity in PULL_ENTITIES.items():
        # A run whose summary we cannot read still moved the bookmark when it committed.
        when = last.get(name) or marks.get(entity)
        hours = _hours(now, when)
        status = rules.health.last_pull.status(hours)
        detail = "never pulled" if when is None else f"last successful pull {age_text(hours)} ago"
        checks.append(Check(f"pull:{name}", status, detail,
                            {"last_success": when.isoformat() if when else None, "age_hours": _round(hours)}))
    return checks


def _bookmark_checks(store: StateStore, rules: ReconcileRules, erp_now: datetime) -> list[Check]:
    positions = {e: _when(p) for e, p in store.conn.execute("SELECT entity, position FROM bookmark")}
    checks = []
    for name, entity in PULL_ENTITIES.items():
        position = positions.get(entity)
        if position is None:
            checks.append(Check(f"bookmark:{name}", "ok", "no bookmark yet: nothing read", {"position": None}))
            continue
        lag = max(_hours(erp_now, position) or 0.0, 0.0)
        judged = name in rules.health.bookmark_lag.entities
        checks.append(Check(f"bookmark:{name}", rules.health.bookmark_lag.status(lag) if judged else "ok",
                            f"{age_text(lag)} behind the ERP's clock (high-water mark "
                            f"{position.strftime('%Y-%m-%d %H:%M')} UTC)",
                            {"position": position.isoformat(), "lag_hours": _round(lag)}))
    return checks


def _push_check(rules: ReconcileRules, now: datetime, runs: list[tuple]) -> Check:
    for _id, command, status, _started, finished, _summary in runs:
        if command in PUSH_COMMANDS and status == "ok":
            when = _when(finished)
            hours = _hours(now, when)
            return Check("push", rules.health.last_push.status(hours),
                         f"last successful {command} {age_text(hours)} ago",
                         {"last_success": when.isoformat() if when else None, "age_hours": _round(hours)})
    return Check("push", "warn", "no successful push yet", {"last_success": None, "age_hours": None})


def _runs_check(rules: ReconcileRules, now: datetime, runs: list[tuple]) -> Check:
    latest: dict[str, tuple] = {}
    for run in runs:  # newest first
        latest.setdefault(run[1], run)
    stuck, failed = [], []
    for command, (id_, _cmd, status, started, _finished, _summary) in sorted(latest.items()):
        hours = _hours(now, _when(started))
        if status == "running" and hours is not None and hours > rules.health.stuck_run_hours:
            stuck.append(f"{command} run {id_} started {age_text(hours)} ago never finished (killed?)")
        elif status == "failed":
            failed.append(f"the latest {command} (run {id_}, {age_text(hours)} ago) failed")
    problems = stuck + failed
    return Check("runs", "warn" if problems else "ok", "; ".join(problems) or "no stuck or failed runs",
                 {"stuck": stuck, "failed": failed})


def _stalled_check(store: StateStore, rules: ReconcileRules, now: datetime) -> Check:
    limit = rules.health.stalled_batch_minutes
    stalled = []
    for id_, type_, created, plan in store.conn.execute(
            "SELECT id, type, created_at, plan_id FROM push_batch WHERE state = 'journaled' ORDER BY id"):
        hours = _hours(now, _when(created))
        if hours is not None and hours * 60 > limit:
            stalled.append({"batch": id_, "type": type_, "plan": plan, "age_hours": _round(hours)})
    if not stalled:
        return Check("stalled_batches", "ok", f"no batch journaled and unanswered for over {limit:g} min",
                     {"batches": []})
    first = stalled[0]
    return Check("stalled_batches", "fail",
                 f"{len(stalled)} batch(es) journaled and never answered (oldest: batch {first['batch']}, "
                 f"{first['type']}, {age_text(first['age_hours'])}); the next push closes and resends them",
                 {"batches": stalled})


def _rejections_check(store: StateStore, rules: ReconcileRules) -> Check:
    """Ometria said N were rejected; each of those must now be in the failed index or the ledger."""
    missing = []
    for id_, type_, records in store.conn.execute(
            "SELECT id, type, records FROM push_batch WHERE state = 'accepted' AND rejected > 0 ORDER BY id"):
        for record_id, _hash in json.loads(records or "[]"):
            found = store.conn.execute(
                "SELECT 1 FROM ledger WHERE type = ? AND id = ? UNION ALL "
                "SELECT 1 FROM failed_record WHERE type = ? AND id = ? LIMIT 1",
                (type_, record_id, type_, record_id)).fetchone()
            if found is None:
                missing.append({"batch": id_, "type": type_, "id": record_id})
    status = rules.health.unattributed_push_errors.status(len(missing))
    detail = ("every rejected record is in the failed-record index or was accepted since" if not missing else
              f"{len(missing)} record(s) of batches with rejections are neither in the failed-record index nor "
              f"in the ledger (e.g. {missing[0]['type']} {missing[0]['id']} of batch {missing[0]['batch']})")
    return Check("unattributed_rejections", status, detail, {"records": missing[:100]})


def _field(entry: Any, name: str) -> Any:
    return entry.get(name) if isinstance(entry, dict) else getattr(entry, name, None)


def _push_errors_check(store: StateStore, rules: ReconcileRules, client: ErrorLog) -> Check:
    """Ometria's error log (100 newest) against what we recorded: an error about one of our
    records is attributed once the record is in the failed-record index, or a later version of
    it was accepted since."""
    ours = {r for (r,) in store.conn.execute("SELECT request_id FROM push_batch WHERE request_id IS NOT NULL")}
    unattributed, foreign, attributed, anonymous = [], 0, 0, 0
    for entry in client.push_errors():
        request, type_, id_ = _field(entry, "request_id"), _field(entry, "record_type"), _field(entry, "record_id")
        if request is None and not (type_ and id_):
            anonymous += 1  # Ometria's documented form: push pins these by split retries and read-back
            continue
        known = request in ours or (type_ and id_ and store.conn.execute(
            "SELECT 1 FROM ledger WHERE type = ? AND id = ? UNION ALL SELECT 1 FROM outbound_record "
            "WHERE type = ? AND id = ? LIMIT 1", (type_, id_, type_, id_)).fetchone())
        if not known:
            foreign += 1
            continue
        if type_ and id_ and _attributed(store, entry, type_, id_):
            attributed += 1
            continue
        unattributed.append({"request_id": request, "record_type": type_, "record_id": id_,
                             "error_message": _field(entry, "error_message"), "error_path": _field(entry, "error_path")})
    status = rules.health.unattributed_push_errors.status(len(unattributed))
    detail = (f"{attributed} error(s) about our records, all recorded" if not unattributed else
              f"{len(unattributed)} error(s) about our records not recorded yet (run push, or see docs/runbook.md)")
    if foreign:
        detail += f"; {foreign} from other sources (not ours)"
    if anonymous:
        detail += (f"; {anonymous} name no request or record (the documented form: push pins them by split "
                   "retries and read-back)")
    return Check("push_errors", status, detail, {"unattributed": unattributed, "foreign": foreign,
                                                  "anonymous": anonymous})


def _attributed(store: StateStore, entry: Any, type_: str, id_: str) -> bool:
    if store.conn.execute("SELECT 1 FROM failed_record WHERE type = ? AND id = ?", (type_, id_)).fetchone():
        return True
    row = store.conn.execute("SELECT request_id, accepted_at FROM ledger WHERE type = ? AND id = ?",
                             (type_, id_)).fetchone()
    if row is None:
        return False
    request = _field(entry, "request_id")
    if request is not None:
        return row[0] is not None and row[0] != request  # a later push replaced the refused version
    logged, accepted = _when(_field(entry, "timestamp")), _when(row[1])
    return logged is not None and accepted is not None and accepted > logged


def _failed_check(store: StateStore, rules: ReconcileRules) -> tuple[Check, list[dict], int]:
    total = store.conn.execute("SELECT count(*) FROM failed_record").fetchone()[0]
    rows = store.conn.execute(
        "SELECT type, id, error_message, error_path, attempts, first_failed, last_failed FROM failed_record"
        " ORDER BY last_failed DESC, type, id LIMIT 100").fetchall()
    keys = ("type", "id", "error_message", "error_path", "attempts", "first_failed", "last_failed")
    index = [dict(zip(keys, r)) for r in rows]
    by_type: dict[str, int] = defaultdict(int)
    for (type_, n) in store.conn.execute("SELECT type, count(*) FROM failed_record GROUP BY type"):
        by_type[type_] = n
    detail = ("the failed-record index is empty" if not total else
              f"{total} record(s) refused by Ometria, retried on the next push: "
              + ", ".join(f"{n} {t}" for t, n in sorted(by_type.items()))
              + f" (latest: {index[0]['type']} {index[0]['id']}: {index[0]['error_message']})")
    return Check("failed_records", rules.health.failed_records.status(total), detail, {"by_type": dict(by_type)}), \
        index, total


def _exception_checks(store: StateStore, rules: ReconcileRules, now: datetime) -> tuple[list[Check], dict]:
    grouped: dict[str, dict[str, dict]] = defaultdict(dict)
    statuses: dict[str, list[str]] = defaultdict(list)
    limits = rules.health.exceptions
    for row in store.exceptions(open_only=True, distinct=True):  # one cause, counted once (issue 14.3)
        hours = _hours(now, _when(row.first_seen)) or 0.0
        entry = grouped[row.owner].setdefault(row.type, {"count": 0, "severity": row.severity, "oldest_hours": 0.0,
                                                         "records": []})
        entry["count"] += 1
        entry["oldest_hours"] = _round(max(entry["oldest_hours"], hours))
        if len(entry["records"]) < 20:
            entry["records"].extend(row.records[: 20 - len(entry["records"])])
        if row.severity == "fail":
            entry["severity"] = "fail"
            statuses[row.owner].append("fail" if hours >= limits.fail_severity_hours else "ok")
        elif row.severity == "warn":
            late = limits.warn_severity_hours is not None and hours >= limits.warn_severity_hours
            statuses[row.owner].append("warn" if late else "ok")
    if not grouped:
        return [Check("exceptions", "ok", "no open exceptions")], {}
    checks = []
    for owner in sorted(grouped):
        types = grouped[owner]
        count = sum(t["count"] for t in types.values())
        oldest = max(t["oldest_hours"] for t in types.values())
        fails = sum(t["count"] for t in types.values() if t["severity"] == "fail")
        listing = ", ".join(f"{name} x{t['count']}" for name, t in sorted(types.items(), key=lambda kv: -kv[1]["count"]))
        checks.append(Check(f"exceptions:{owner}", worst(statuses[owner]),
                            f"{count} open ({fails} fail severity), oldest {age_text(oldest)}: {listing}",
                            {"open": count, "fail_severity": fails, "oldest_hours": oldest}))
    return checks, {owner: dict(sorted(types.items())) for owner, types in sorted(grouped.items())}


def _round(hours: float | None) -> float | None:
    return None if hours is None else round(hours, 2)


def check_health(store: StateStore, profile: Profile | None = None, *, live_client: ErrorLog | None = None,
                 now: datetime | None = None, erp_now: datetime | None = None,
                 rules: ReconcileRules | None = None) -> HealthReport:
    """Every check, against ``now`` (default: the wall clock). ``erp_now`` is the ERP's clock
    for bookmark lag when it is not ours (the sandbox lives in its own time)."""
    rules = rules or ReconcileRules()
    now = now or datetime.now(UTC)
    runs = _recent_runs(store)
    checks: list[Check] = []
    checks += _pull_checks(store, rules, now, runs)
    checks += _bookmark_checks(store, rules, erp_now or now)
    checks.append(_push_check(rules, now, runs))
    checks.append(_runs_check(rules, now, runs))
    checks.append(_stalled_check(store, rules, now))
    checks.append(_rejections_check(store, rules))
    if live_client is not None:
        checks.append(_push_errors_check(store, rules, live_client))
    failed, index, total = _failed_check(store, rules)
    checks.append(failed)
    exception_checks, by_owner = _exception_checks(store, rules, now)
    checks += exception_checks
    return HealthReport(generated_at=now.isoformat(), checks=checks, exceptions_by_owner=by_owner,
                        failed_records=index, failed_records_total=total, live=live_client is not None)
