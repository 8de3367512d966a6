"""Reading ``GET /unsubscribes`` by time windows, bounded, unable to loop.

What Ometria documents (support page "Unsubscribe API", docs.ometria.com ``get_unsubscribes``):
``since`` and ``before`` in UTC as ``YYYY-MM-DDTHH:MM:SS`` with no zone, an optional ``type``,
and an answer ``[{email_address, profile_id, reason, timestamp, type}]`` with ``timestamp``
like ``2017-05-17 22:08:07+00``. No ``limit``/``offset`` and no page size are documented, and
neither whether ``since``/``before`` are inclusive. So the reader takes the harder case:

- an answer may be cut short without saying so: one holding ``full_answer`` rows or more is
  not trusted, and its window is split in two, down to ``MIN_WINDOW``;
- a bound may be inclusive or exclusive: the two halves overlap by ``MIN_WINDOW`` and every
  event is kept once (by email, profile, instant and type);
- the server may ignore a parameter: rows outside the window asked for are kept (they are
  real events) but the window is not split again (splitting cannot help), and an answer that
  is then still full raises ``UnsubscribesIncomplete`` rather than pretend to be whole;
- whatever happens, at most ``max_requests`` requests are made: beyond that the read raises.

Nothing here loops on the server's word: every step either narrows a window that is finite
and at least two seconds wide, or stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from khaosync.ometria.errors import OmetriaBadResponseError

WIRE_FORMAT = "%Y-%m-%dT%H:%M:%S"
MIN_WINDOW = timedelta(seconds=1)  # the documented format has whole seconds
WHAT = "GET /unsubscribes"


class UnsubscribesIncomplete(OmetriaBadResponseError):
    """The unsubscribes of a window could not be read whole (a full answer that narrowing
    cannot make smaller, or the request budget spent). Nothing of the read should be trusted
    as complete; the caller keeps its bookmark where it was."""


def wire_time(value: datetime) -> str:
    """An instant as the documented ``since``/``before``: UTC, no zone, whole seconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime(WIRE_FORMAT)


def parse_timestamp(value: Any) -> datetime | None:
    """Ometria's ``timestamp`` (``2017-05-17 22:08:07+00``, or ISO 8601) as aware UTC; None when
    it is missing or unreadable (the event is kept, undated)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace(" ", "T", 1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif len(text) >= 3 and text[-3] in "+-" and text[-2:].isdigit():
        text += ":00"  # "+00" -> "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # documented as UTC
    return parsed.astimezone(timezone.utc)


def event_key(row: dict) -> tuple[str, str, str, str]:
    return (str(row.get("email_address") or "").strip().lower(), str(row.get("profile_id") or ""),
            str(row.get("timestamp") or ""), str(row.get("type") or ""))


@dataclass
class WindowRead:
    """What a windowed read found: the events (once each, oldest first) and how."""

    rows: list[dict]
    requests: int
    splits: int
    ignored_bounds: bool  # the server answered rows outside a window: it ignores since/before


def read_windows(fetch: Callable[[dict[str, str]], list], since: datetime, before: datetime, *,
                 full_answer: int, max_requests: int, unsubscribe_type: str | None = None) -> WindowRead:
    """Every unsubscribe in [since, before), asking ``fetch(params)`` for one window at a time."""
    since = since.astimezone(timezone.utc) if since.tzinfo else since.replace(tzinfo=timezone.utc)
    before = before.astimezone(timezone.utc) if before.tzinfo else before.replace(tzinfo=timezone.utc)
    since, before = since.replace(microsecond=0), before.replace(microsecond=0)
    if before <= since:
        return WindowRead([], 0, 0, False)
    found: dict[tuple[str, str, str, str], dict] = {}
    windows = [(since, before)]
    requests = splits = 0
    ignored = False
    while windows:
        lo, hi = windows.pop()
        if requests >= max_requests:
            raise UnsubscribesIncomplete(
                f"Ometria {WHAT}: {max_requests} requests were not enough to read {wire_time(since)} to "
                f"{wire_time(before)} (ometria.unsubscribes_max_requests)", request=WHAT)
        params = {"since": wire_time(lo), "before": wire_time(hi)}
        if unsubscribe_type:
            params["type"] = unsubscribe_type
        page = fetch(params)
        requests += 1
        if not isinstance(page, list):
            raise OmetriaBadResponseError(f"Ometria {WHAT}: expected a list", request=WHAT)
        rows = [row for row in page if isinstance(row, dict)]
        outside = any((at := parse_timestamp(row.get("timestamp"))) is not None
                      and not lo - MIN_WINDOW <= at <= hi + MIN_WINDOW for row in rows)
        ignored = ignored or outside
        for row in rows:
            found.setdefault(event_key(row), row)
        if len(rows) < full_answer:
            continue
        if outside or hi - lo <= 2 * MIN_WINDOW:
            why = "the server ignores since/before" if outside else "one second holds more than a full answer"
            raise UnsubscribesIncomplete(
                f"Ometria {WHAT}: {len(rows)} rows for {params['since']} to {params['before']} may be cut short "
                f"and the window cannot be narrowed ({why})", request=WHAT)
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        splits += 1
        # Later half first on the stack, so windows are read oldest first; the halves overlap
        # by a second because the bounds' inclusiveness is not documented.
        windows.append((mid, hi))
        windows.append((lo, mid + MIN_WINDOW))
    ordered = sorted(found.values(), key=lambda r: (parse_timestamp(r.get("timestamp"))
                                                    or datetime.min.replace(tzinfo=timezone.utc), event_key(r)))
    return WindowRead(ordered, requests, splits, ignored)
