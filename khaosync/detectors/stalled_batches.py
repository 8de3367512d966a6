"""Stalled batches: pushes never acknowledged, and push errors nobody attributed.

Push journals a batch before sending it and marks it when Ometria answers. A batch still
``journaled`` long after it was written was left by a run that died between the two: its
records may or may not have reached Ometria, and they are not in the ledger (the next push
sends them again, which is safe: pushes are upserts). Until then the plan is not settled.

Ometria's ``GET /push/_errors`` keeps only the 100 most recent record errors of the account.
Push attributes each error of one of our requests to a record (the failed-record index); one
of ours left unattributed (``--live``) would be lost when the log rolls over.

- ``journaled`` (always): a ``push_batch`` still ``journaled`` after ``STALL_AFTER`` (15 minutes).
- ``unattributed_errors`` (``--live``): an error-log entry of one of our requests (its
  ``request_id`` is in the journal; without one, a record id the ledger holds) with no
  failed-record entry for its record.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterator

from khaosync.detectors import Check, DetectorContext, Finding, ref

TYPE = "stalled_batch"


def _when(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def journaled(ctx: DetectorContext) -> Iterator[Finding]:
    cutoff = ctx.now - ctx.stall_after
    for batch_id, plan_id, type_, records, created in ctx.conn.execute(
            "SELECT id, plan_id, type, json_array_length(records), created_at FROM push_batch "
            "WHERE state = 'journaled' ORDER BY id"):
        at = _when(created)
        if at is None or at > cutoff:
            continue
        minutes = int((ctx.now - at).total_seconds() // 60)
        yield Finding(
            TYPE,
            f"push batch {batch_id} ({records} {type_} records of plan {plan_id or '-'}) was journaled {minutes} "
            "minutes ago and never acknowledged: the run that sent it stopped; the next push sends its records again",
            (ref("push_batch", batch_id),), "push_batch", str(batch_id),
            detail={"plan": plan_id, "type": type_, "records": records, "created_at": created})


def _field(entry: Any, name: str) -> str | None:
    value = entry.get(name) if isinstance(entry, dict) else getattr(entry, name, None)
    return value if isinstance(value, str) and value else None


def unattributed_errors(ctx: DetectorContext) -> Iterator[Finding]:
    assert ctx.live is not None
    conn = ctx.conn
    ours = {r[0] for r in conn.execute("SELECT request_id FROM push_batch WHERE request_id IS NOT NULL")}
    for entry in ctx.live.push_errors():
        request_id, type_, id_ = _field(entry, "request_id"), _field(entry, "record_type"), _field(entry, "record_id")
        if request_id is not None:
            if request_id not in ours:
                continue  # another integration's error, or one from before khaosync
        elif not (type_ and id_ and conn.execute("SELECT 1 FROM ledger WHERE type = ? AND id = ?",
                                                 (type_, id_)).fetchone()):
            continue
        if type_ and id_ and conn.execute("SELECT 1 FROM failed_record WHERE type = ? AND id = ?",
                                          (type_, id_)).fetchone():
            continue  # push attributed it
        message = _field(entry, "error_message") or "(no message)"
        path = _field(entry, "error_path") or "-"
        subject = ref(type_, id_) if type_ and id_ else ref("push_error", request_id or _field(entry, "timestamp"))
        yield Finding(
            TYPE,
            f"Ometria logged an error for {subject} of our request {request_id or '-'} ({message} at {path}) that "
            "no failed record accounts for: push has not attributed it",
            (subject,), "push_error", id_ or request_id,
            detail={"error_message": message, "error_path": path, "request_id": request_id,
                    "timestamp": _field(entry, "timestamp")})


CHECKS = [
    Check("stalled_batches.journaled", TYPE, "push_batch",
          "a push batch journaled and never acknowledged for longer than 15 minutes", journaled),
    Check("stalled_batches.unattributed_errors", TYPE, "push_error",
          "an Ometria push error of one of our requests that no failed record accounts for (--live)",
          unattributed_errors, mode="live"),
]
