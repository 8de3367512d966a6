"""The Ometria Data API v2 client: push, the error log, and read-back (docs/push.md).

One object for one account, shared by the push stage's worker threads (``httpx.Client`` and
the two ``TokenBucket``s are thread-safe; the client keeps no other mutable state).

Every request first takes a token: pushes from the push bucket (``ometria.push_rate``),
every GET from the read bucket (``ometria.read_rate``), retries included, so no second ever
holds more requests than configured. Then:

- 2xx: read the answer (JSON, floats as ``Decimal`` so money compares exactly);
- 429: the whole client backs off (``TokenBucket.penalise``) for ``Retry-After`` seconds, or an
  exponential delay when there is none, and the request goes again; at most
  ``max(10, 4 x ometria.retries)`` times in a row;
- 5xx, timeouts, connection errors: again after a full-jitter delay (uniform over
  ``[0, min(30, 0.5 x 2**n)]`` s), at most ``ometria.retries`` times (a push is an upsert,
  so a resend is safe even when the first one arrived);
- 403: ``OmetriaAuthError`` at once; any other 4xx: ``OmetriaRequestError`` at once.

Push answers carry ``X-QueueSize-Limit`` / ``X-QueueSize-Remaining`` when Ometria sends them;
when less than a tenth of the queue is left the client pauses pushes for a moment.

The API key is sent as ``X-Ometria-Auth`` on each request and appears nowhere else: not in
the client's repr, not in an error (anything quoted from an answer is scrubbed), not in logs.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator
from urllib.parse import quote

import httpx

from khaosync.config import OmetriaSettings
from khaosync.ometria.errors import (
    OmetriaAuthError,
    OmetriaBadResponseError,
    OmetriaConnectionError,
    OmetriaError,
    OmetriaRateLimitedError,
    OmetriaRequestError,
    OmetriaServerError,
    OmetriaTimeoutError,
)
from khaosync.ometria.limiter import TokenBucket
from khaosync.ometria.unsubscribes import read_windows
from khaosync.scrub import scrub
from khaosync.ometria.wire import BATCH_LIMIT, RECORD_TYPES, batch_body, check_size

log = logging.getLogger(__name__)

AUTH_HEADER = "X-Ometria-Auth"
PAGE_SIZE = 250            # the read endpoints' largest page
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 300.0  # a Retry-After beyond this is taken as this (a misconfigured proxy must not stall us for a day)
QUEUE_LOW_SHARE = 0.10     # X-QueueSize-Remaining below this share of the limit: pause pushes
QUEUE_PAUSE_S = 2.0


@dataclass(frozen=True)
class PushAnswer:
    """Ometria's answer to one ``POST /push``. ``OK`` means received, not stored."""

    type: str
    record_ids: tuple[str, ...]
    request_id: str | None
    accepted: int
    rejected: int
    attempts: int = 1
    queue_limit: int | None = None
    queue_remaining: int | None = None


@dataclass(frozen=True)
class PushError:
    """One entry of ``GET /push/_errors``. Only the message and path are documented; the rest
    is assumed and may be missing (then attribution falls back to split retries)."""

    error_message: str
    error_path: str | None = None
    request_id: str | None = None
    record_type: str | None = None
    record_id: str | None = None
    timestamp: str | None = None

    @classmethod
    def from_json(cls, entry: Any) -> "PushError":
        if not isinstance(entry, dict):
            return cls(error_message=str(entry))

        def text(key: str) -> str | None:
            value = entry.get(key)
            return value if isinstance(value, str) else None

        return cls(
            error_message=text("error_message") or "(no message)", error_path=text("error_path"),
            request_id=text("request_id"), record_type=text("record_type"), record_id=text("record_id"),
            timestamp=text("timestamp"),
        )


def _excerpt(text: str, limit: int = 200) -> str:
    """A one-line cut of ``text``: scrub it first (``OmetriaClient._scrub``), so no cut leaves
    part of the key behind."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


class OmetriaClient:
    """Ometria for one account (``OmetriaSettings``).

    Example::

        client = OmetriaClient(profile.ometria, transport=Connections(profile).transport())
        answer = client.push("product", [("P1", wire.dumps({"@type": "product", "id": "P1", "title": "Mug"}))])
        stored = client.get_product("P1")
    """

    def __init__(self, settings: OmetriaSettings, *, transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None):
        self.settings = settings
        self._key = settings.resolved_api_key()  # a SecretStr until the moment a header is built
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.push_bucket = TokenBucket(settings.push_rate, clock=clock, sleep=sleep)
        self.read_bucket = TokenBucket(settings.read_rate, clock=clock, sleep=sleep)
        self.max_throttled = max(10, 4 * settings.retries)
        self._http = httpx.Client(
            transport=transport, base_url=settings.base_url, timeout=httpx.Timeout(settings.timeout_s),
            headers={"User-Agent": "khaosync", "Accept": "application/json"},
            # enough connections for every push thread plus the reads
            limits=httpx.Limits(max_connections=max(16, 2 * settings.push_in_flight),
                                max_keepalive_connections=max(16, 2 * settings.push_in_flight)),
        )

    def __repr__(self) -> str:
        return f"OmetriaClient({self.settings.base_url!r}, push_rate={self.settings.push_rate:g})"

    def close(self) -> None:
        self._http.close()

    def wait(self, seconds: float) -> None:
        """Sleep with the client's own ``sleep`` (a test's fake clock moves with it)."""
        self._sleep(seconds)

    def __enter__(self) -> "OmetriaClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- push --------------------------------------------------------------------------------
    def push(self, type_: str, records: list[tuple[str, bytes]]) -> PushAnswer:
        """One ``POST /push`` of 1..100 already-encoded records of one type, each checked
        against the 60 KB limit (``wire.RecordTooLarge``, a ValueError, before anything is sent).

        Waits for a push token; retries per the policy above; raises an ``OmetriaError``.
        """
        if type_ not in RECORD_TYPES:
            raise ValueError(f"unknown Ometria record type {type_!r}")
        if not 1 <= len(records) <= BATCH_LIMIT:
            raise ValueError(f"a push holds 1..{BATCH_LIMIT} records, not {len(records)}")
        for record_id, body in records:
            check_size(type_, record_id, body)
            _check_type(type_, record_id, body)
        content = batch_body([body for _, body in records])
        what = f"POST /push ({len(records)} {type_} records)"
        response, attempts = self._request("POST", "/push", what, self.push_bucket, content=content,
                                           headers={"Content-Type": "application/json"})
        limit, remaining = _queue_headers(response)
        self._watch_queue(limit, remaining)
        data = self._json(response, what)
        if not isinstance(data, dict) or str(data.get("status", "")).upper() != "OK":
            raise OmetriaBadResponseError(f"Ometria {what}: unexpected answer {_excerpt(self._scrub(response.text))}",
                                          request=what, status=response.status_code)
        accepted = _count(data.get("accepted"))
        rejected = _count(data.get("rejected"))
        if accepted is None:
            raise OmetriaBadResponseError(f"Ometria {what}: the answer has no accepted count", request=what,
                                          status=response.status_code)
        if rejected is None or accepted + rejected != len(records):
            # Trust what was accepted; whatever is left is treated as rejected and looked for.
            rejected = max(0, len(records) - accepted)
        request_id = data.get("request_id")
        return PushAnswer(type=type_, record_ids=tuple(record_id for record_id, _ in records),
                          request_id=request_id if isinstance(request_id, str) else None,
                          accepted=min(accepted, len(records)), rejected=rejected, attempts=attempts,
                          queue_limit=limit, queue_remaining=remaining)

    def push_errors(self) -> list[PushError]:
        """``GET /push/_errors``: the account's most recent record errors (100), newest first."""
        data = self._get_json("/push/_errors", "GET /push/_errors")
        if not isinstance(data, list):
            raise OmetriaBadResponseError("Ometria GET /push/_errors: expected a list", request="GET /push/_errors")
        return [PushError.from_json(entry) for entry in data]

    def _watch_queue(self, limit: int | None, remaining: int | None) -> None:
        if limit is None or remaining is None:
            return
        log.debug("ometria queue: %d of %d remaining", remaining, limit)
        if limit > 0 and remaining < limit * QUEUE_LOW_SHARE:
            log.warning("Ometria's queue is nearly full (%d of %d left): pausing pushes %.0fs", remaining, limit,
                        QUEUE_PAUSE_S)
            self.push_bucket.penalise(QUEUE_PAUSE_S)

    # -- read-back ---------------------------------------------------------------------------
    def get_order(self, id: str) -> dict | None:
        return self._get_one(f"/orders/{_segment(id)}", f"GET /orders/{id}")

    def iter_orders(self) -> Iterator[dict]:
        return self._pages("/orders", "GET /orders", {})

    def get_product(self, id: str) -> dict | None:
        return self._get_one(f"/products/{_segment(id)}", f"GET /products/{id}")

    def iter_products(self, include_variants: bool = True) -> Iterator[dict]:
        return self._pages("/products", "GET /products", {"includeVariants": "true"} if include_variants else {})

    def get_contact(self, collection: str, id: str) -> dict | None:
        return self._get_one(f"/contacts/{_segment(collection)}/{_segment(id)}", f"GET /contacts/{collection}/{id}")

    def iter_contacts(self, collection: str) -> Iterator[dict]:
        return self._pages(f"/contacts/{_segment(collection)}", f"GET /contacts/{collection}", {})

    def collections(self) -> list[dict]:
        """``GET /contacts``: ``[{collection, count}]``."""
        return list(self._pages("/contacts", "GET /contacts", {}))

    def profile_by_email(self, email: str) -> dict | None:
        found = self._get_json("/profiles", "GET /profiles?email=", params={"email": email})
        if not isinstance(found, list):
            raise OmetriaBadResponseError("Ometria GET /profiles: expected a list", request="GET /profiles")
        return found[0] if found else None

    def iter_profiles(self, update_since: datetime | None = None) -> Iterator[dict]:
        params = {} if update_since is None else {"updateSince": _iso(update_since)}
        return self._pages("/profiles", "GET /profiles", params)

    def unsubscribes(self, since: datetime, before: datetime | None = None) -> list[dict]:
        """Unsubscribes made in Ometria (not those we pushed) from ``since`` until ``before``
        (default: now), oldest first, each once: read by time windows in the documented form,
        bounded by ``ometria.unsubscribes_max_requests`` (``khaosync.ometria.unsubscribes``)."""
        until = before or datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
        read = read_windows(lambda params: self._get_json("/unsubscribes", "GET /unsubscribes", params),
                            since, until, full_answer=self.settings.unsubscribes_full_answer,
                            max_requests=self.settings.unsubscribes_max_requests)
        if read.ignored_bounds:
            log.warning("ometria GET /unsubscribes answered events outside the window asked for: the server "
                        "ignores since/before (kept, once each)")
        return read.rows

    def _get_one(self, path: str, what: str) -> dict | None:
        response, _ = self._request("GET", path, what, self.read_bucket, allow_404=True)
        if response.status_code == 404:
            return None
        data = self._json(response, what)
        if not isinstance(data, dict):
            raise OmetriaBadResponseError(f"Ometria {what}: expected an object", request=what)
        return data

    def _get_json(self, path: str, what: str, params: dict[str, str] | None = None) -> Any:
        response, _ = self._request("GET", path, what, self.read_bucket, params=params)
        return self._json(response, what)

    def _pages(self, path: str, what: str, params: dict[str, str]) -> Iterator[dict]:
        """Every item of a paged list, ``PAGE_SIZE`` per request, until a short page."""
        offset = 0
        while True:
            page = self._get_json(path, what, {**params, "limit": str(PAGE_SIZE), "offset": str(offset)})
            if not isinstance(page, list):
                raise OmetriaBadResponseError(f"Ometria {what}: expected a list", request=what)
            yield from page
            if len(page) < PAGE_SIZE:
                return
            offset += len(page)

    # -- the one request loop ----------------------------------------------------------------
    def _request(self, method: str, path: str, what: str, bucket: TokenBucket, *, content: bytes | None = None,
                 params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                 allow_404: bool = False) -> tuple[httpx.Response, int]:
        failures = 0
        throttled = 0
        attempts = 0
        while True:
            bucket.acquire()
            attempts += 1
            try:
                response = self._send(method, path, what, content=content, params=params, headers=headers)
                if response.status_code == 429:
                    throttled += 1
                    if throttled > self.max_throttled:
                        raise OmetriaRateLimitedError(what, throttled)
                    delay = _retry_after(response)
                    if delay is None:
                        delay = self._throttle_delay(throttled)
                    limit, remaining = _queue_headers(response)
                    log.info("ometria %s: 429 (queue %s of %s left), backing off %.2fs", what, remaining, limit, delay)
                    bucket.penalise(delay)
                    continue
                self._check_status(response, what, allow_404)
                return response, attempts
            except OmetriaError as exc:
                exc.attempts = attempts
                if not exc.transient or failures >= self.settings.retries:
                    raise
                delay = self._backoff(failures)
                failures += 1
                log.warning("%s; retry %d of %d in %.2fs", exc, failures, self.settings.retries, delay)
                self._sleep(delay)

    def _send(self, method: str, path: str, what: str, *, content: bytes | None, params: dict[str, str] | None,
              headers: dict[str, str] | None) -> httpx.Response:
        started = time.monotonic()
        all_headers = {**(headers or {}), AUTH_HEADER: self._key.get_secret_value()}
        failure: OmetriaError | None = None
        try:
            response = self._http.request(method, path, content=content, params=params, headers=all_headers)
        except httpx.TimeoutException:
            failure = OmetriaTimeoutError(f"Ometria {what}: no answer within {self.settings.timeout_s:g}s",
                                          request=what)
        except httpx.TransportError as exc:
            failure = OmetriaConnectionError(f"Ometria {what}: {type(exc).__name__}: {self._scrub(str(exc))}",
                                             request=what)
        if failure is not None:
            # Raised outside the except block: httpx's exception carries the request, and the
            # request carries the key, so it must not ride along as __context__.
            raise failure
        log.debug("ometria %s: HTTP %s, %d bytes in %.2fs", what, response.status_code, len(response.content),
                  time.monotonic() - started)
        return response

    def _check_status(self, response: httpx.Response, what: str, allow_404: bool) -> None:
        status = response.status_code
        if 200 <= status < 300 or (allow_404 and status == 404):
            return
        if status == 403:
            raise OmetriaAuthError(what)
        detail = _excerpt(self._scrub(_error_detail(response)))
        if 400 <= status < 500:
            raise OmetriaRequestError(status, what, detail)
        raise OmetriaServerError(status, what, detail)

    def _json(self, response: httpx.Response, what: str) -> Any:
        try:
            return json.loads(response.content, parse_float=Decimal)
        except ValueError:
            pass  # raised below, without the decoder's error (it holds the whole answer) as context
        raise OmetriaBadResponseError(
            f"Ometria {what}: the answer is not JSON: {_excerpt(self._scrub(response.text))}",
            request=what, status=response.status_code)

    def _backoff(self, number: int) -> float:
        """Full jitter: uniform over [0, min(cap, base * 2**n)], so retrying threads spread out."""
        return self._rng.uniform(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**number))

    @staticmethod
    def _throttle_delay(number: int) -> float:
        return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (number - 1))

    def _scrub(self, text: str) -> str:
        """The key, or any 8-character piece of it, never reaches a message, even if an answer
        echoes our request back. Scrub before cutting (``_excerpt``)."""
        return scrub(text, [self._key.get_secret_value()])


# -- small helpers --------------------------------------------------------------------------------
def _segment(value: str) -> str:
    return quote(value, safe="")


def _check_type(type_: str, record_id: str, body: bytes) -> None:
    """A push never mixes types: every body must say the batch's ``@type``."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError(f"{type_} {record_id}: the body is not JSON") from None
    if not isinstance(doc, dict) or doc.get("@type") != type_:
        found = doc.get("@type") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"{type_} {record_id}: the body's @type is {found!r}, not {type_!r}")


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value() and value >= 0:
        return int(value)
    return None


def _header_int(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _queue_headers(response: httpx.Response) -> tuple[int | None, int | None]:
    return _header_int(response, "X-QueueSize-Limit"), _header_int(response, "X-QueueSize-Remaining")


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), capped; None if absent or unreadable."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def _error_detail(response: httpx.Response) -> str:
    """What Ometria said: the ``error`` of a JSON error body, else the text; uncut, so the
    caller scrubs it before ``_excerpt`` cuts it."""
    try:
        data = response.json()
    except ValueError:
        return response.text
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            if isinstance(data.get(key), str):
                return data[key]
    return response.text
