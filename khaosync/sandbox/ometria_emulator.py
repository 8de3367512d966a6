"""A strict emulator of the Ometria Data API v2: a WSGI app over a persistent SQLite store.

It behaves as ``ometria.md`` (the reference) describes, never kinder: a client that works
against it has met every documented rule, and the *(sandbox rules)* that pick the strict
reading where the reference is silent (listed in ``docs/sandbox.md``).

    emu = OmetriaEmulator(tmp_path / "ometria.db", "key")
    client = httpx.Client(transport=httpx.WSGITransport(app=emu),
                          base_url="https://sandbox.khaosync.invalid/ometria/v2",
                          headers={"X-Ometria-Auth": "key"})
    client.post("/push", json=[{"@type": "product", "id": "P1", "title": "Mug"}])
    emu.process_queue()      # or: the next request of any kind processes the queue

Every request runs the same steps, in this order: process the queue entries that are due;
sleep ``latency_ms``; draw an injected fault (answered before anything else happens, or, with
``fail_after_commit``, after the work is done); check the path is under ``/ometria/v2``; check
``X-Ometria-Auth`` (403); route (404, 405); take a rate-limit token (429); then the endpoint
itself.

Three switches pick between readings the evidence leaves open; each default is the harder one
for a client:

- ``blanks``: what a blank (null or "") sent for a stored field does: ``"kept"`` (default:
  the "Merge" page's "may or may not result in those field values being removed", read as
  "may not") or ``"cleared"``. With ``@merge: true`` blanks are always kept ("any parameters
  which are not set will be copied from the existing record").
- ``error_detail``: ``GET /push/_errors`` entries carry only the documented
  ``{error_message, error_path}`` and the message is the documented generic
  ``"not a valid value"`` (Ometria's "List validation errors" page: "The error_message value
  will usually be the same"); with ``error_detail=True`` they also carry ``request_id``,
  ``record_type``, ``record_id``, ``timestamp`` and a specific message.
- ``retry_after``: a 429 carries no ``Retry-After`` (none is documented) unless this is set.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

from khaosync.sandbox import ometria_store as store
from khaosync.sandbox.ometria_http import HttpError, Request, Response, error_response, json_response
from khaosync.sandbox.ometria_limits import Fault, FaultInjector, TokenBucket
from khaosync.sandbox.ometria_processing import (
    BLANK_RULES,
    BLANKS_KEPT,
    error_entry,
    process_entries,
    seed,
    update_profile,
)
from khaosync.sandbox.ometria_validation import (
    NOT_SPECIFIED,
    OPTED_OUT,
    RECORD_TYPES,
    TOO_LARGE,
    compact_json,
    validate_record,
)

PREFIX = "/ometria/v2"
MAX_RECORDS_PER_PUSH = 100
MAX_BODY_BYTES = 10 * 1024 * 1024  # (sandbox rule) a whole push body; 100 records of 60 KB fit
AUTH_HEADER = "X-Ometria-Auth"
PAGING = ("limit", "offset")
ORDERED = ("limit", "offset", "orderby")
GENERIC_ERROR = "not a valid value"  # Ometria's "List validation errors" page: "will usually be the same"
PROFILE_FIELDS = ("customer_id", "firstname", "middlename", "lastname", "prefix", "gender", "date_of_birth",
                  "phone_number", "country_id", "timezone")


class Remove:
    """Marker for ``tamper``: delete the field instead of setting it."""

    def __repr__(self) -> str:
        return "REMOVE"


REMOVE = Remove()

_ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (re.compile(r"^/push$"), {"POST": "push"}),
    (re.compile(r"^/push/_errors$"), {"GET": "push_errors"}),
    (re.compile(r"^/orders$"), {"GET": "list_orders"}),
    (re.compile(r"^/orders/(?P<record_id>[^/]+)$"), {"GET": "get_order"}),
    (re.compile(r"^/products$"), {"GET": "list_products"}),
    (re.compile(r"^/products/(?P<record_id>[^/]+)$"), {"GET": "get_product"}),
    (re.compile(r"^/contacts$"), {"GET": "list_collections"}),
    (re.compile(r"^/contacts/(?P<collection>[^/]+)$"), {"GET": "list_contacts"}),
    (re.compile(r"^/contacts/(?P<collection>[^/]+)/(?P<record_id>[^/]+)$"), {"GET": "get_contact"}),
    (re.compile(r"^/profiles$"), {"GET": "list_profiles"}),
    (re.compile(r"^/profiles/(?P<profile_id>[^/]+)$"), {"GET": "get_profile"}),
    (re.compile(r"^/unsubscribes$"), {"GET": "list_unsubscribes"}),
]


class OmetriaEmulator:
    """One emulated Ometria account. State lives in ``db_path``; rate limits and the fault
    generator live in this object (a restart starts with full buckets and a fresh seed)."""

    def __init__(
        self,
        db_path: str | Path,
        api_key: str,
        *,
        push_rate: float = 8.0,
        read_rate: float = 4.0,
        fail_rate: float = 0.0,
        fail_after_commit: bool = False,
        latency_ms: int = 0,
        seed: int = 0,
        queue_limit: int = 50_000,
        processing_delay_s: float = 0.0,
        blanks: str = BLANKS_KEPT,
        error_detail: bool = False,
        retry_after: bool = False,
        unsubscribes_cap: int = 500,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if blanks not in BLANK_RULES:
            raise ValueError(f"blanks must be one of {', '.join(BLANK_RULES)}, not {blanks!r}")
        self.blanks = blanks
        self.error_detail = error_detail
        self.retry_after = retry_after
        self.store = store.OmetriaStore(db_path)
        self.api_key = api_key
        self.queue_limit = queue_limit
        self.processing_delay_s = processing_delay_s
        self.unsubscribes_cap = unsubscribes_cap
        self.latency_ms = latency_ms
        self.clock = clock
        self.sleep = sleep
        self.push_bucket = TokenBucket(push_rate, clock)
        self.read_bucket = TokenBucket(read_rate, clock)
        self.faults = FaultInjector(fail_rate, fail_after_commit, seed)

    # -- WSGI ----------------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        response = self.handle(Request.from_environ(environ))
        start_response(response.status_line, response.wsgi_headers())
        return [response.body]

    def handle(self, request: Request) -> Response:
        counts: Counter[str] = Counter()
        if is_push(request):
            counts["push_requests"] += 1
        elif request.method == "GET":
            counts["read_requests"] += 1
        self._process_due()
        if self.latency_ms > 0:
            self.sleep(self.latency_ms / 1000.0)
        fault = self.faults.draw()
        if fault is not None and not fault.after_commit:
            response = self._fault_response(fault, counts)
        else:
            response = self._dispatch(request, counts)
            if fault is not None:
                response = self._fault_response(fault, counts)
        self._count(counts)
        return response

    def _dispatch(self, request: Request, counts: Counter[str]) -> Response:
        try:
            return self._route(request, counts)
        except HttpError as refusal:
            counts["rejected_requests"] += int(refusal.client_fault)
            if refusal.counter:
                counts[refusal.counter] += 1
            headers = refusal.headers
            if is_push(request) and refusal.status != 403:
                headers = [*headers, *self._queue_headers()]
            return error_response(refusal.status, refusal.message, headers)

    def _route(self, request: Request, counts: Counter[str]) -> Response:
        """Prefix, auth (every endpoint), route, method, then the endpoint's rate limit."""
        if not request.path.startswith(PREFIX + "/"):
            raise HttpError(404, "Not Found")
        if not self._authorised(request):
            raise HttpError(403, "Forbidden: invalid or missing X-Ometria-Auth key")
        subpath = request.path[len(PREFIX):]
        for pattern, methods in _ROUTES:
            match = pattern.match(subpath)
            if match is None:
                continue
            if request.method not in methods:
                raise HttpError(405, "Method Not Allowed", [("Allow", ", ".join(methods))])
            bucket = self.push_bucket if request.method == "POST" else self.read_bucket
            retry_after = bucket.take()
            if retry_after is not None:
                counts["throttled"] += 1
                raise HttpError(429, "Too Many Requests", self._retry_after(retry_after), client_fault=False)
            handler = getattr(self, "_" + methods[request.method])
            return handler(request, counts, **match.groupdict())
        raise HttpError(404, "Not Found")

    def _retry_after(self, seconds: int) -> list[tuple[str, str]]:
        """Reference: "honour `Retry-After` if sent"; Ometria documents none, so by default none."""
        return [("Retry-After", str(seconds))] if self.retry_after else []

    def _authorised(self, request: Request) -> bool:
        """Reference: "auth: header `X-Ometria-Auth: <api key>`"; 403 when wrong or missing."""
        given = request.header(AUTH_HEADER)
        return given is not None and hmac.compare_digest(given.encode(), self.api_key.encode())

    def _fault_response(self, fault: Fault, counts: Counter[str]) -> Response:
        """(sandbox rule) an injected 5xx looks like a gateway's: an HTML body, not JSON."""
        counts["injected_failures"] += 1
        phrase = Response(fault.status, b"").status_line
        body = f"<html><body><h1>{phrase}</h1></body></html>".encode()
        return Response(fault.status, body, [("Content-Type", "text/html")])

    def _count(self, counts: Counter[str]) -> None:
        """Persist this request's counters; ``max_records_per_request`` only ever rises."""
        largest = counts.pop("max_records_per_request", 0)
        if largest or any(counts.values()):
            with self.store.transaction() as conn:
                store.bump(conn, **counts)
                if largest:
                    store.raise_to(conn, "max_records_per_request", largest)

    def _queue_headers(self) -> list[tuple[str, str]]:
        """Reference: "headers `X-QueueSize-Limit` and `X-QueueSize-Remaining`" on push answers."""
        with self.store.lock:
            queued = store.queue_size(self.store.conn)
        return [("X-QueueSize-Limit", str(self.queue_limit)),
                ("X-QueueSize-Remaining", str(max(0, self.queue_limit - queued)))]

    # -- the queue -----------------------------------------------------------------------------
    def _process_due(self) -> int:
        """Process what was queued ``processing_delay_s`` ago or earlier (0: all of it)."""
        cutoff = None if self.processing_delay_s <= 0 else self.clock() - self.processing_delay_s
        return self._process(cutoff)

    def _process(self, cutoff: float | None) -> int:
        with self.store.lock:
            if not store.has_due(self.store.conn, cutoff):
                return 0
            with self.store.transaction() as conn:
                now = store.utc_now()
                outcome = process_entries(conn, store.take_due(conn, cutoff), now, self.blanks)
                store.log_errors(conn, outcome.errors)
                store.bump(conn, records_processed=outcome.processed, records_stored=outcome.stored,
                           processing_errors=len(outcome.errors), identity_conflicts=outcome.identity_conflicts,
                           optins_refused=outcome.optins_refused)
            return outcome.processed

    def process_queue(self) -> int:
        """Process every queued record now, whatever ``processing_delay_s``; how many."""
        return self._process(None)

    # -- POST /push ----------------------------------------------------------------------------
    def _push(self, request: Request, counts: Counter[str]) -> Response:
        """Reference, transport: one JSON array of 1..100 records of one type, each at most
        60 KB; accepted records are queued (``OK`` is not "stored"), rejected ones logged."""
        check_content_type(request)
        records = parse_records(request.read_body(MAX_BODY_BYTES), counts)
        encoded = [encode_record(record) for record in records]
        record_type = records[0]["@type"]
        request_id = str(uuid.uuid4())
        now = store.utc_now()
        accepted: list[str] = []
        errors: list[dict] = []
        forced: list[str] = []
        accepted_keys: set[tuple[str, Any]] = set()  # an earlier record of this request creates it
        with self.store.reading() as conn:
            for record, text in zip(records, encoded):
                key = record_key(record)
                exists = key in accepted_keys or store.known(conn, record_type, *key)
                error = validate_record(record, text, exists=exists)
                if error is not None:
                    errors.append(error_entry(error, request_id, record_type, record.get("id"), now))
                    continue
                accepted.append(text)
                accepted_keys.add(key)
                if record.get("@force_optin") is True:
                    forced.append(record["id"])
        with self.store.transaction() as conn:
            queued = store.queue_size(conn)
            if queued + len(records) > self.queue_limit:
                counts["queue_full"] += 1
                raise HttpError(429, "Too Many Requests: the queue is full",
                                self._retry_after(max(1, math.ceil(self.processing_delay_s))), client_fault=False)
            store.enqueue(conn, self.clock(), request_id, record_type, accepted)
            store.log_errors(conn, errors)
            store.record_forced_optins(conn, forced)
        counts.update(records_received=len(records), records_accepted=len(accepted), records_rejected=len(errors))
        body = {"status": "OK", "request_id": request_id, "accepted": len(accepted), "rejected": len(errors)}
        return json_response(200, body, self._queue_headers())

    # -- reads ---------------------------------------------------------------------------------
    def _push_errors(self, request: Request, counts: Counter[str]) -> Response:
        """Reference: the 100 most recent record errors of the account, newest first; by default
        in the documented form only (see ``error_detail``)."""
        request.params(())
        with self.store.reading() as conn:
            entries = store.recent_errors(conn)
        if not self.error_detail:
            entries = [documented_error(entry) for entry in entries]
        return json_response(200, entries)

    def _list_orders(self, request: Request, counts: Counter[str]) -> Response:
        params = request.params(ORDERED)
        limit, offset = params.paging()
        with self.store.reading() as conn:
            docs = store.list_records(conn, "order", by_update=params.by_update(), limit=limit, offset=offset)
        return json_response(200, docs)

    def _get_order(self, request: Request, counts: Counter[str], record_id: str) -> Response:
        return self._one(request, "order", record_id)

    def _list_products(self, request: Request, counts: Counter[str]) -> Response:
        """``active`` filters on ``is_active`` (absent counts as active); variants
        (``is_variant: true``) are left out unless ``includeVariants=true``."""
        params = request.params((*ORDERED, "active", "includeVariants"))
        limit, offset = params.paging()
        where = ""
        active = params.flag("active")
        if active is not None:
            where += f" AND coalesce(json_extract(doc, '$.is_active'), 1) = {int(active)}"
        if not params.flag("includeVariants"):
            where += " AND coalesce(json_extract(doc, '$.is_variant'), 0) = 0"
        with self.store.reading() as conn:
            docs = store.list_records(conn, "product", where=where, by_update=params.by_update(),
                                      limit=limit, offset=offset)
        return json_response(200, docs)

    def _get_product(self, request: Request, counts: Counter[str], record_id: str) -> Response:
        return self._one(request, "product", record_id)

    def _list_collections(self, request: Request, counts: Counter[str]) -> Response:
        """Reference: ``GET /contacts`` -> ``[{collection, count}]``."""
        limit, offset = request.params(PAGING).paging()
        with self.store.reading() as conn:
            return json_response(200, store.collection_counts(conn, limit, offset))

    def _list_contacts(self, request: Request, counts: Counter[str], collection: str) -> Response:
        params = request.params(ORDERED)
        limit, offset = params.paging()
        with self.store.reading() as conn:
            docs = store.list_records(conn, "contact", collection=collection, by_update=params.by_update(),
                                      limit=limit, offset=offset)
        return json_response(200, docs)

    def _get_contact(self, request: Request, counts: Counter[str], collection: str, record_id: str) -> Response:
        return self._one(request, "contact", record_id, collection)

    def _one(self, request: Request, record_type: str, record_id: str, collection: str = "") -> Response:
        request.params(())
        with self.store.reading() as conn:
            doc = store.get_record(conn, record_type, record_id, collection)
        if doc is None:
            return error_response(404, f"Not Found: no {record_type} {record_id!r}")
        return json_response(200, doc)

    def _list_profiles(self, request: Request, counts: Counter[str]) -> Response:
        """Reference: ``GET /profiles`` (``updateSince``), ``GET /profiles?email=``."""
        params = request.params((*ORDERED, "updateSince", "email"))
        limit, offset = params.paging()
        where, args = "", []
        since = params.instant("updateSince")
        if since is not None:
            where, args = where + " AND updated >= ?", [*args, since]
        email = params.get("email")
        if email is not None:
            where, args = where + " AND email = ?", [*args, email.lower()]
        with self.store.reading() as conn:
            rows = store.profile_rows(conn, where=where, args=tuple(args), by_update=params.by_update(),
                                      limit=limit, offset=offset)
            return json_response(200, [profile_doc(conn, row) for row in rows])

    def _get_profile(self, request: Request, counts: Counter[str], profile_id: str) -> Response:
        request.params(())
        with self.store.reading() as conn:
            row = None
            if re.fullmatch(r"p[1-9]\d{0,17}", profile_id):
                row = conn.execute(f"SELECT {store.PROFILE_COLUMNS} FROM profile WHERE seq = ?",
                                   (int(profile_id[1:]),)).fetchone()
            if row is None:
                return error_response(404, f"Not Found: no profile {profile_id!r}")
            return json_response(200, profile_doc(conn, row))

    def _list_unsubscribes(self, request: Request, counts: Counter[str]) -> Response:
        """Reference: ``GET /unsubscribes?since=&before=&type=``, ``since``/``before`` in UTC as
        ``YYYY-MM-DDTHH:MM:SS`` (no zone), no ``limit``/``offset`` (so none is accepted);
        answers ``[{email_address, profile_id, reason, timestamp, type}]`` with ``timestamp``
        like ``2017-05-17 22:08:07+00`` and ``reason`` often null. Unsubscribes made through
        the API are not listed (only those made in Ometria: ``seed_unsubscribe``).

        *(sandbox rules)* ``since`` is inclusive and ``before`` exclusive (Ometria does not say:
        khaosync's reader overlaps its windows and takes neither for granted); an answer holds
        at most ``unsubscribes_cap`` rows, the earliest, and says nothing of the rest (Ometria
        documents no limit, and no way to page: the reader must narrow its windows).
        """
        params = request.params(("since", "before", "type"))
        since, before = unsubscribe_instant(params, "since"), unsubscribe_instant(params, "before")
        kind = params.get("type")
        if kind is not None and kind not in UNSUBSCRIBE_TYPES:
            raise HttpError(400, f"Invalid parameter type: one of {', '.join(UNSUBSCRIBE_TYPES)}")
        with self.store.reading() as conn:
            rows = store.list_unsubscribes(conn, since=since, before=before, unsubscribe_type=kind,
                                           limit=self.unsubscribes_cap)
        return json_response(200, rows)

    # -- the Python side: seeding, inspection, tampering ------------------------------------------
    def seed_record(self, type: str, doc: dict) -> None:
        """Plant a record Ometria already holds (an earlier integration, web sign-ups):
        stored as given, no validation, not queued."""
        check_record_type(type)
        with self.store.transaction() as conn:
            seed(conn, type, doc, store.utc_now())

    def seed_unsubscribe(self, email: str, timestamp: str, reason: str | None = None, *,
                         type: str = "link_unsubscribe") -> None:
        """A profile that unsubscribed in Ometria (an email link, the preference centre): it is
        opted out and listed by ``GET /unsubscribes``. ``timestamp`` is ISO 8601 with a zone;
        ``type`` one of ``UNSUBSCRIBE_TYPES``. Seeding the same event again changes nothing."""
        if type not in UNSUBSCRIBE_TYPES:
            raise ValueError(f"unknown unsubscribe type {type!r} (one of {', '.join(UNSUBSCRIBE_TYPES)})")
        with self.store.transaction() as conn:
            profile_id = store.ensure_profile(conn, email, store.utc_now())
            store.set_profile_consent(conn, email, OPTED_OUT, timestamp)
            store.add_unsubscribe(conn, email, profile_id, reason, timestamp, type)

    def get(self, type: str, id: str, collection: str | None = None) -> dict | None:
        """The stored record, or None. A contact without ``collection``: the first with that id."""
        check_record_type(type)
        with self.store.reading() as conn:
            if type == "contact" and collection is None:
                return store.find_contact(conn, id)
            return store.get_record(conn, type, id, collection or "")

    def records(self, type: str, collection: str | None = None) -> list[dict]:
        """Every stored record of ``type`` (contacts: of ``collection`` if given), internal id order."""
        check_record_type(type)
        with self.store.reading() as conn:
            return store.all_records(conn, type, collection if type == "contact" else None)

    def tamper(self, type: str, id: str, changes: dict, collection: str | None = None) -> None:
        """Change a stored record in place, as if someone edited it in Ometria (drift for the
        diff to find). A value of ``REMOVE`` deletes the field. KeyError if absent."""
        check_record_type(type)
        with self.store.transaction() as conn:
            if type == "contact" and collection is None:
                doc = store.find_contact(conn, id)
            else:
                doc = store.get_record(conn, type, id, collection or "")
            if doc is None:
                raise KeyError(f"no stored {type} {id!r}")
            for key, value in changes.items():
                if value is REMOVE:
                    doc.pop(key, None)
                else:
                    doc[key] = value
            now = store.utc_now()
            store.put_record(conn, type, id, doc, collection=doc.get("@collection", "") if type == "contact" else "",
                             email=doc.get("email") if type == "contact" else None, updated=now)
            if type == "contact":
                update_profile(conn, doc, changes, now)

    def stats(self) -> dict[str, Any]:
        """Counters since the file was created (see ``ometria_store.COUNTERS``), the ids of
        contacts pushed with ``@force_optin`` (``forced_optins``) and the queue length."""
        with self.store.reading() as conn:
            return store.read_stats(conn)

    def close(self) -> None:
        self.store.close()


def documented_error(entry: dict) -> dict:
    """An error-log entry as Ometria documents it: ``{error_message, error_path}``, the message
    the generic one except the record-size message the reference quotes."""
    message = entry["error_message"] if entry["error_message"] == TOO_LARGE else GENERIC_ERROR
    return {"error_message": message, "error_path": entry["error_path"]}


def record_key(record: dict) -> tuple[str, Any]:
    """A record's identity in its type: (``@collection`` or "", ``id``)."""
    collection = record.get("@collection") if record["@type"] == "contact" else ""
    return (collection if isinstance(collection, str) else "", record.get("id"))

# Reference: the email types, then the SMS stop-word types ("stopword_unsubscribe_TF" in an
# automation campaign, "stopword_unsubscribe_DO" in a double opt-in message).
UNSUBSCRIBE_TYPES = ("preferences_centre", "app", "list_unsubscribe", "link_unsubscribe",
                     "stopword_unsubscribe_TF", "stopword_unsubscribe_DO")
_UNSUBSCRIBE_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")


def unsubscribe_instant(params: Any, name: str) -> str | None:
    """Reference: "time format YYYY-MM-DDTH:I:S in UTC": no zone, no fraction; anything else is
    a 400 *(sandbox rule)*. Returned as the comparable UTC string ``to_utc`` writes."""
    value = params.get(name)
    if value is None:
        return None
    if not _UNSUBSCRIBE_INSTANT.match(value):
        raise HttpError(400, f"Invalid parameter {name}: expected YYYY-MM-DDTHH:MM:SS in UTC, without a zone")
    try:
        return store.to_utc(value + "+00:00")
    except ValueError:
        raise HttpError(400, f"Invalid parameter {name}: not a date and time") from None


def is_push(request: Request) -> bool:
    return request.method == "POST" and request.path == PREFIX + "/push"


# -- request-level checks of POST /push (a failure refuses the whole request) --------------------
def check_content_type(request: Request) -> None:
    """Reference, transport: "JSON, UTF-8, `Content-Type: application/json`" (else 415)."""
    media, *parameters = (request.header("Content-Type") or "").split(";")
    if media.strip().lower() != "application/json":
        raise HttpError(415, "Unsupported Media Type: send Content-Type: application/json")
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise HttpError(415, "Unsupported Media Type: the body must be UTF-8")


def parse_records(body: bytes, counts: Counter[str]) -> list[dict]:
    """Reference, transport: "body is always a JSON array, 1..100 records", one ``@type``
    per request. *(sandbox rules)* NaN/Infinity, duplicate keys and a BOM are invalid JSON."""
    try:
        text = body.decode("utf-8")
        records = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise HttpError(400, "Invalid body: not UTF-8") from None
    except ValueError as problem:
        raise HttpError(400, f"Invalid body: not JSON ({problem})") from None
    if not isinstance(records, list):
        raise HttpError(400, "Invalid body: expected a JSON array of records")
    counts["max_records_per_request"] = len(records)  # a maximum, not a sum: see _count
    if not records:
        raise HttpError(400, "Invalid body: empty array")
    if len(records) > MAX_RECORDS_PER_PUSH:
        raise HttpError(400, f"Invalid body: at most {MAX_RECORDS_PER_PUSH} records per request")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise HttpError(400, f"Invalid body: record {index} is not an object")
        if record.get("@type") not in RECORD_TYPES:
            raise HttpError(400, f"Invalid body: record {index} has no valid @type ({', '.join(RECORD_TYPES)})")
    if len({record["@type"] for record in records}) > 1:
        raise HttpError(400, "Invalid body: records of more than one @type in one request")
    return records


def encode_record(record: dict) -> str:
    """The compact JSON the size limit measures; lone surrogates (``\\ud800``) are not UTF-8."""
    text = compact_json(record)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise HttpError(400, "Invalid body: not UTF-8") from None
    return text


def check_record_type(record_type: str) -> None:
    if record_type not in RECORD_TYPES:
        raise ValueError(f"unknown Ometria record type {record_type!r} (one of {', '.join(RECORD_TYPES)})")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    doc: dict = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"duplicate key {key!r}")
        doc[key] = value
    return doc


def profile_doc(conn: Any, row: tuple) -> dict:
    """A read-only profile: the consent Ometria holds for the email, and the personal fields
    of the contact that holds the email (the first, for seeded duplicates)."""
    seq, email, optin, subscribed, unsubscribed, updated = row
    contacts = store.contacts_with_email(conn, email)
    doc: dict[str, Any] = {"id": f"p{seq}", "email": email, "marketing_optin": optin or NOT_SPECIFIED}
    if subscribed:
        doc["timestamp_subscribed"] = subscribed
    if unsubscribed:
        doc["timestamp_unsubscribed"] = unsubscribed
    first = contacts[0] if contacts else {}
    doc.update({key: first[key] for key in PROFILE_FIELDS if key in first})
    doc["contacts"] = [{"collection": contact.get("@collection"), "id": contact.get("id")} for contact in contacts]
    doc["timestamp_update"] = updated
    return doc
