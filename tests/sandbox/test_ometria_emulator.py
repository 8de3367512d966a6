"""The Ometria emulator keeps every rule of ``ometria.md``, never kinder.

Each test drives the WSGI app through httpx, as the real client will, and asserts exact
statuses, bodies, headers, stored state and ``/push/_errors`` entries.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from khaosync.sandbox import ometria_processing
from khaosync.sandbox.ometria_emulator import REMOVE, OmetriaEmulator
from khaosync.sandbox.ometria_validation import compact_json

BASE_URL = "https://sandbox.khaosync.invalid/ometria/v2"
KEY = "sandbox-key"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


class FakeClock:
    """The injected clock and sleep: time moves only when a test (or latency) moves it."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_emulator(path: Path, clock: FakeClock, **options: Any) -> OmetriaEmulator:
    """Generous rates unless a test is about rate limits. Most tests read which rule refused a
    record, so they switch on the detailed error log and ``Retry-After``; the documented
    defaults (neither) have tests of their own below (``documented_emulator``)."""
    options.setdefault("push_rate", 1_000.0)
    options.setdefault("read_rate", 1_000.0)
    options.setdefault("error_detail", True)
    options.setdefault("retry_after", True)
    return OmetriaEmulator(path, KEY, clock=clock, sleep=clock.sleep, **options)


def client_for(emu: OmetriaEmulator, key: str | None = KEY) -> httpx.Client:
    headers = {"X-Ometria-Auth": key} if key is not None else {}
    return httpx.Client(transport=httpx.WSGITransport(app=emu), base_url=BASE_URL, headers=headers)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ometria.db"


@pytest.fixture
def emu(db_path: Path, clock: FakeClock):
    emulator = make_emulator(db_path, clock)
    yield emulator
    emulator.close()


@pytest.fixture
def api(emu: OmetriaEmulator):
    with client_for(emu) as client:
        yield client


# -- records --------------------------------------------------------------------------------
def product(pid: str = "P1", **fields: Any) -> dict:
    return {"@type": "product", "id": pid, "title": "Enamel mug", "price": 12.5,
            "url": f"https://shop.example/p/{pid}", **fields}


def contact(cid: str = "C1", **fields: Any) -> dict:
    return {"@type": "contact", "@collection": "khaos", "id": cid, **fields}


def order(oid: str = "O1", products: tuple[str, ...] = ("P1",), **fields: Any) -> dict:
    lines = [{"product_id": pid, "quantity": 1, "unit_price": 12.5} for pid in products]
    return {"@type": "order", "id": oid, "timestamp": "2026-10-01T09:12:00Z", "currency": "GBP",
            "grand_total": 12.5 * len(products), "lineitems": lines, **fields}


def event(eid: str = "E1", **fields: Any) -> dict:
    return {"@type": "custom_event", "id": eid, "event_type": "order_shipped", "timestamp": "2026-10-02T10:00:00+01:00",
            "identity_email": "ann@example.com", **fields}


def without(record: dict, *keys: str) -> dict:
    return {key: value for key, value in record.items() if key not in keys}


def push(api: httpx.Client, records: Any) -> httpx.Response:
    return api.post("/push", json=records)


def push_errors(api: httpx.Client) -> list[dict]:
    response = api.get("/push/_errors")
    assert response.status_code == 200
    return response.json()


def accepted(response: httpx.Response, n: int, rejected: int = 0) -> str:
    """Assert a 200 push answer with these counts; its request_id."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {"status": "OK", "request_id": body["request_id"], "accepted": n, "rejected": rejected}
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", body["request_id"])
    return body["request_id"]


def nothing_arrived(api: httpx.Client, emu: OmetriaEmulator) -> None:
    assert emu.stats()["queued"] == 0
    assert emu.process_queue() == 0
    assert push_errors(api) == []
    assert all(emu.records(kind) == [] for kind in ("contact", "order", "product", "custom_event"))


# -- auth -----------------------------------------------------------------------------------
ENDPOINTS = [
    ("POST", "/push"), ("GET", "/push/_errors"), ("GET", "/orders"), ("GET", "/orders/O1"), ("GET", "/products"),
    ("GET", "/products/P1"), ("GET", "/contacts"), ("GET", "/contacts/khaos"), ("GET", "/contacts/khaos/C1"),
    ("GET", "/profiles"), ("GET", "/profiles/p1"), ("GET", "/unsubscribes"), ("GET", "/no/such/path"),
]


@pytest.mark.parametrize("key", [None, "wrong-key", KEY.upper(), ""])
@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_every_endpoint_answers_403_json_without_the_right_key(emu, method, path, key):
    with client_for(emu, key) as client:
        response = client.request(method, path, json=[product()] if method == "POST" else None)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ERROR", "error": "Forbidden: invalid or missing X-Ometria-Auth key"}
    assert "x-queuesize-limit" not in response.headers
    assert emu.stats()["queued"] == 0 and emu.stats()["rejected_requests"] == 1


# -- POST /push: request-level rules ----------------------------------------------------------
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=latin-1", "application/jsonl"])
def test_push_without_json_content_type_is_415_and_nothing_is_stored(api, emu, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = api.post("/push", content=json.dumps([product()]).encode(), headers=headers)
    assert response.status_code == 415
    assert response.json()["status"] == "ERROR"
    nothing_arrived(api, emu)


def test_json_content_type_with_utf8_charset_is_fine(api):
    response = api.post("/push", content=json.dumps([product()]).encode(),
                        headers={"Content-Type": "application/json; charset=UTF-8"})
    accepted(response, 1)


def test_101_records_is_400_and_nothing_is_stored(api, emu):
    response = push(api, [product(f"P{i}") for i in range(101)])
    assert response.status_code == 400
    assert response.json() == {"status": "ERROR", "error": "Invalid body: at most 100 records per request"}
    nothing_arrived(api, emu)
    assert emu.stats()["max_records_per_request"] == 101


def test_100_records_is_the_most_one_push_may_carry(api, emu):
    accepted(push(api, [product(f"P{i}") for i in range(100)]), 100)
    emu.process_queue()
    assert len(emu.records("product")) == 100


def test_mixed_types_in_one_push_is_400_and_nothing_is_stored(api, emu):
    response = push(api, [product(), contact()])
    assert response.status_code == 400
    assert response.json() == {"status": "ERROR", "error": "Invalid body: records of more than one @type in one request"}
    nothing_arrived(api, emu)


TOO_MANY = json.dumps([product(f"P{i}") for i in range(101)]).encode()


@pytest.mark.parametrize(
    "body,error",
    [
        (b"[]", "Invalid body: empty array"),
        (b"", "Invalid body: not JSON"),
        (b'{"@type":"product","id":"P1"}', "Invalid body: expected a JSON array of records"),
        (b'"P1"', "Invalid body: expected a JSON array of records"),
        (b"[{\"@type\":\"product\",\"id\":\"P1\"", "Invalid body: not JSON"),
        (b'[{"@type":"product","id":"P\xff"}]', "Invalid body: not UTF-8"),
        ('\ufeff[{"@type":"product","id":"P1"}]'.encode(), "Invalid body: not JSON"),
        (b'[{"@type":"product","id":"P1","price":NaN}]', "Invalid body: not JSON"),
        (b'[{"@type":"product","id":"P1","id":"P2"}]', "Invalid body: not JSON"),
        (b'[{"@type":"product","id":"P\\ud800"}]', "Invalid body: not UTF-8"),
        (b"[1]", "Invalid body: record 0 is not an object"),
        (b'[{"@type":"product","id":"P1"},[]]', "Invalid body: record 1 is not an object"),
        (b'[{"id":"P1"}]', "Invalid body: record 0 has no valid @type"),
        (b'[{"@type":"customer","id":"P1"}]', "Invalid body: record 0 has no valid @type"),
        (b'[{"@type":"Product","id":"P1"}]', "Invalid body: record 0 has no valid @type"),
        (TOO_MANY, "Invalid body: at most 100 records per request"),
    ],
    ids=["empty-array", "empty-body", "object", "string", "truncated", "latin-1", "bom", "nan", "duplicate-key",
         "lone-surrogate", "number", "array-in-array", "no-type", "unknown-type", "type-case", "101"],
)
def test_malformed_push_body_is_400_and_nothing_is_stored(api, emu, body, error):
    response = api.post("/push", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["status"] == "ERROR"
    assert response.json()["error"].startswith(error)
    nothing_arrived(api, emu)


def test_push_needs_a_declared_length_and_refuses_huge_bodies(emu, api):
    def chunks():
        yield b"[]"

    assert api.post("/push", content=chunks(), headers={"Content-Type": "application/json"}).status_code == 411
    huge = b"[" + b" " * (10 * 1024 * 1024) + b"]"
    assert api.post("/push", content=huge, headers={"Content-Type": "application/json"}).status_code == 413
    nothing_arrived(api, emu)


def test_a_body_cut_short_by_a_dying_sender_is_not_counted_as_the_clients_mistake(emu):
    import io

    body = json.dumps([product("P1")]).encode()
    answers = []
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/ometria/v2/push", "QUERY_STRING": "",
               "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "HTTP_X_OMETRIA_AUTH": KEY,
               "wsgi.input": io.BytesIO(body[: len(body) // 2])}
    reply = b"".join(emu(environ, lambda status, headers: answers.append(status)))
    assert answers == ["400 Bad Request"] and b"Incomplete body" in reply
    stats = emu.stats()
    assert (stats["incomplete_requests"], stats["rejected_requests"], stats["queued"]) == (1, 0, 0)
    assert emu.records("product") == []


def test_every_push_answer_carries_the_queue_headers(db_path, clock):
    emu = make_emulator(db_path, clock, push_rate=2.0, queue_limit=1_000, processing_delay_s=60)
    with client_for(emu) as api:
        ok = push(api, [product("P1"), product("P2")])
        bad = api.post("/push", content=b"[]", headers={"Content-Type": "application/json"})
        throttled = push(api, [product("P3")])
        clock.advance(1)
        unsupported = api.post("/push", content=b"[]", headers={"Content-Type": "text/plain"})
    assert (ok.status_code, bad.status_code, throttled.status_code, unsupported.status_code) == (200, 400, 429, 415)
    for response in (ok, bad, throttled, unsupported):
        assert response.headers["X-QueueSize-Limit"] == "1000"
        assert response.headers["X-QueueSize-Remaining"] == "998"


# -- POST /push: record size ------------------------------------------------------------------
def sized_product(pid: str, size: int, filler: str = "x") -> dict:
    """A product whose compact UTF-8 JSON is exactly ``size`` bytes."""
    record = product(pid, properties={"blob": ""})
    missing = size - len(compact_json(record).encode())
    record["properties"]["blob"] = filler * (missing // len(filler.encode())) + "x" * (missing % len(filler.encode()))
    assert len(compact_json(record).encode()) == size
    return record


def test_record_over_60kb_is_rejected_alone_with_the_documented_message(api, emu):
    records = [
        product("P1"),
        sized_product("P2", 61_440),
        sized_product("P3", 61_441),
        sized_product("P4", 61_442, filler="é"),  # 30,7xx characters, 61,442 bytes
    ]
    request_id = accepted(push(api, records), 2, rejected=2)
    log = push_errors(api)
    assert [entry["record_id"] for entry in log] == ["P4", "P3"]
    assert log[1] == {"error_message": "Payload invalid: Record is too large.", "error_path": "root",
                      "request_id": request_id, "record_type": "product", "record_id": "P3",
                      "timestamp": log[1]["timestamp"]}
    assert TIMESTAMP.match(log[1]["timestamp"])
    assert [record["id"] for record in emu.records("product")] == ["P1", "P2"]
    assert emu.stats()["records_rejected"] == 2


# -- POST /push: synchronous record validation ------------------------------------------------
OPTIN_VALUES = "EXPLICITLY_OPTEDIN, NOT_SPECIFIED, EXPLICITLY_OPTEDOUT"
REJECTED = [
    # ids
    ("missing id", without(product(), "id"), "Missing required field", "root > id"),
    ("null id", product(id=None), "Missing required field", "root > id"),
    ("empty id", product(id=""), "Invalid id: must not be empty", "root > id"),
    ("blank id", contact(id="  "), "Invalid id: must not be empty", "root > id"),
    ("numeric id", order(id=1001), "Invalid type: ids must be strings", "root > id"),
    ("email as id", contact(id="ann@example.com"), "Invalid id: ids must not contain personal data", "root > id"),
    ("email as customer_id", contact(customer_id="ann@example.com"),
     "Invalid id: ids must not contain personal data", "root > customer_id"),
    # contact
    ("contact without collection", without(contact(), "@collection"), "Missing required field", "root > @collection"),
    ("empty collection", contact(**{"@collection": ""}), "Invalid value: expected a non-empty string", "root > @collection"),
    ("email without domain dot", contact(email="ann@example"), "Invalid email address", "root > email"),
    ("email with space", contact(email="ann smith@example.com"), "Invalid email address", "root > email"),
    ("email with two @", contact(email="ann@@example.com"), "Invalid email address", "root > email"),
    ("email not a string", contact(email=["ann@example.com"]), "Invalid email address", "root > email"),
    ("optin unknown", contact(marketing_optin="OPTEDIN"), f"Invalid value: marketing_optin must be one of {OPTIN_VALUES}",
     "root > marketing_optin"),
    ("optin bool", contact(marketing_optin=True), f"Invalid value: marketing_optin must be one of {OPTIN_VALUES}",
     "root > marketing_optin"),
    ("optin null", contact(marketing_optin=None), f"Invalid value: marketing_optin must be one of {OPTIN_VALUES}",
     "root > marketing_optin"),
    ("phone national", contact(phone_number="07700 900123"), "Invalid phone number: expected E.164 (+447700900123)",
     "root > phone_number"),
    ("phone with spaces", contact(phone_number="+44 7700 900123"), "Invalid phone number: expected E.164 (+447700900123)",
     "root > phone_number"),
    ("gender upper case", contact(gender="F"), "Invalid value: gender must be one of m, f, o", "root > gender"),
    ("gender word", contact(gender="female"), "Invalid value: gender must be one of m, f, o", "root > gender"),
    ("date of birth UK style", contact(date_of_birth="01/02/1990"), "Invalid date: expected YYYY-MM-DD", "root > date_of_birth"),
    ("date of birth impossible", contact(date_of_birth="1990-02-30"), "Invalid date: expected YYYY-MM-DD", "root > date_of_birth"),
    ("date of birth as datetime", contact(date_of_birth="1990-02-03T00:00:00Z"), "Invalid date: expected YYYY-MM-DD",
     "root > date_of_birth"),
    ("naive datetime", contact(timestamp_acquired="2026-10-01T09:12:00"),
     "Invalid datetime: expected ISO 8601 with a time zone", "root > timestamp_acquired"),
    ("datetime without seconds", contact(timestamp_subscribed="2026-10-01T09:12Z"),
     "Invalid datetime: expected ISO 8601 with a time zone", "root > timestamp_subscribed"),
    ("datetime with space", contact(timestamp_unsubscribed="2026-10-01 09:12:00Z"),
     "Invalid datetime: expected ISO 8601 with a time zone", "root > timestamp_unsubscribed"),
    ("country lower case", contact(country_id="gb"), "Invalid country: expected an ISO 3166-1 alpha-2 code", "root > country_id"),
    ("timezone offset", contact(timezone="+01:00"), "Invalid timezone: expected an IANA zone name", "root > timezone"),
    ("store_ids not a list", contact(store_ids="web"), "Invalid type: expected an array", "root > store_ids"),
    ("force_optin string", contact(**{"@force_optin": "true"}), "Invalid type: expected a boolean", "root > @force_optin"),
    ("unknown contact field", contact(mobile="+447700900123"), "Unknown field", "root > mobile"),
    ("properties not an object", contact(properties=["vip"]), "Invalid type: expected an object", "root > properties"),
    # order
    ("order without timestamp", without(order(), "timestamp"), "Missing required field", "root > timestamp"),
    ("order naive timestamp", order(timestamp="2026-10-01T09:12:00"), "Invalid datetime: expected ISO 8601 with a time zone",
     "root > timestamp"),
    ("order date only", order(timestamp="2026-10-01"), "Invalid datetime: expected ISO 8601 with a time zone", "root > timestamp"),
    ("order without currency", without(order(), "currency"), "Missing required field", "root > currency"),
    ("currency ZZZ", order(currency="ZZZ"), "Invalid currency: expected an ISO 4217 code", "root > currency"),
    ("currency lower case", order(currency="gbp"), "Invalid currency: expected an ISO 4217 code", "root > currency"),
    ("currency test code", order(currency="XTS"), "Invalid currency: expected an ISO 4217 code", "root > currency"),
    ("currency symbol", order(currency="£"), "Invalid currency: expected an ISO 4217 code", "root > currency"),
    ("order without grand_total", without(order(), "grand_total"), "Missing required field", "root > grand_total"),
    ("grand_total string", order(grand_total="12.50"), "Invalid type: expected a number", "root > grand_total"),
    ("grand_total boolean", order(grand_total=True), "Invalid type: expected a number", "root > grand_total"),
    ("discount string", order(discount="-1.00"), "Invalid type: expected a number", "root > discount"),
    ("shipping string", order(shipping="3.95"), "Invalid type: expected a number", "root > shipping"),
    ("is_valid string", order(is_valid="false"), "Invalid type: expected a boolean", "root > is_valid"),
    ("is_valid number", order(is_valid=0), "Invalid type: expected a boolean", "root > is_valid"),
    ("order without lineitems", without(order(), "lineitems"), "Missing required field", "root > lineitems"),
    ("lineitems object", order(lineitems={"product_id": "P1", "quantity": 1}), "Invalid type: expected an array",
     "root > lineitems"),
    ("line without product_id", order(lineitems=[{"product_id": "P1", "quantity": 1}, {"quantity": 1}]),
     "Missing required field", "root > lineitems > 1 > product_id"),
    ("line without quantity", order(lineitems=[{"product_id": "P1"}]), "Missing required field", "root > lineitems > 0 > quantity"),
    ("line quantity string", order(lineitems=[{"product_id": "P1", "quantity": "1"}]), "Invalid type: expected a number",
     "root > lineitems > 0 > quantity"),
    ("line unit_price string", order(lineitems=[{"product_id": "P1", "quantity": 1, "unit_price": "12.50"}]),
     "Invalid type: expected a number", "root > lineitems > 0 > unit_price"),
    ("line refunded boolean", order(lineitems=[{"product_id": "P1", "quantity": 1, "refunded": False}]),
     "Invalid type: expected a number", "root > lineitems > 0 > refunded"),
    ("line numeric product_id", order(lineitems=[{"product_id": 17, "quantity": 1}]), "Invalid type: ids must be strings",
     "root > lineitems > 0 > product_id"),
    ("unknown line field", order(lineitems=[{"product_id": "P1", "quantity": 1, "colour": "red"}]), "Unknown field",
     "root > lineitems > 0 > colour"),
    ("customer email as id", order(customer={"id": "ann@example.com"}), "Invalid id: ids must not contain personal data",
     "root > customer > id"),
    ("customer bad email", order(customer={"id": "K1", "email": "ann"}), "Invalid email address", "root > customer > email"),
    ("unknown address field", order(billing_address={"city": "York", "line1": "1 High St"}), "Unknown field",
     "root > billing_address > line1"),
    ("address country name", order(shipping_address={"country_code": "United Kingdom"}),
     "Invalid country: expected an ISO 3166-1 alpha-2 code", "root > shipping_address > country_code"),
    ("merge flag null on an order", order(**{"@merge": None}), "Invalid type: expected a boolean", "root > @merge"),
    ("order ip not an address", order(ip_address="localhost"), "Invalid value: expected an IP address",
     "root > ip_address"),
    ("sms channel unknown field", contact(channels={"sms": {"allow_marketing": True, "opt": 1}}), "Unknown field",
     "root > channels > sms > opt"),
    ("new order without a timestamp", without(order("O9"), "timestamp"), "Missing required field", "root > timestamp"),
    ("unknown order field", order(total=12.5), "Unknown field", "root > total"),
    # product
    ("price string", product(price="12.50"), "Invalid type: expected a number", "root > price"),
    ("special price string", product(special_price="9.99"), "Invalid type: expected a number", "root > special_price"),
    ("product currency ZZZ", product(currency="ZZZ"), "Invalid currency: expected an ISO 4217 code", "root > currency"),
    ("relative url", product(url="/p/P1"), "Invalid url: expected an absolute http(s) URL", "root > url"),
    ("is_active string", product(is_active="yes"), "Invalid type: expected a boolean", "root > is_active"),
    ("attribute without id", product(attributes=[{"type": "brand", "label": "Acme"}]), "Missing required field",
     "root > attributes > 0 > id"),
    ("listing without store", product(listings=[{"price": 3.0}]), "Missing required field", "root > listings > 0 > store"),
    ("special price naive", product(special_price_dt_from="2026-10-01T00:00:00"),
     "Invalid datetime: expected ISO 8601 with a time zone", "root > special_price_dt_from"),
    ("force_optin on a product", product(**{"@force_optin": True}), "Unknown field", "root > @force_optin"),
    ("unknown product field", product(brand="Acme"), "Unknown field", "root > brand"),
    # custom_event
    ("event type of 32 characters", event(event_type="x" * 32), "Invalid event_type: expected 1 to 31 characters",
     "root > event_type"),
    ("event without timestamp", without(event(), "timestamp"), "Missing required field", "root > timestamp"),
    ("event without identity", without(event(), "identity_email"),
     "Missing identity: identity_email or identity_account_id is required", "root > identity_email"),
    ("event unknown field", event(value=3), "Unknown field", "root > value"),
]
VALID_OF_TYPE = {"contact": contact("C0"), "order": order("O0"), "product": product("P0"), "custom_event": event("E0")}


@pytest.mark.parametrize("record,message,path", [case[1:] for case in REJECTED], ids=[case[0] for case in REJECTED])
def test_invalid_record_is_rejected_alone_and_logged(emu, api, record, message, path):
    emu.seed_record("product", product("P1"))
    emu.seed_record("product", product("P0"))
    request_id = accepted(push(api, [VALID_OF_TYPE[record["@type"]], record]), 1, rejected=1)
    log = push_errors(api)
    record_id = record.get("id") if isinstance(record.get("id"), str) else None
    assert log == [{"error_message": message, "error_path": path, "request_id": request_id,
                    "record_type": record["@type"], "record_id": record_id, "timestamp": log[0]["timestamp"]}]
    stored = {"product": ["P1", "P0"]}.get(record["@type"], [VALID_OF_TYPE[record["@type"]]["id"]])
    assert [doc["id"] for doc in emu.records(record["@type"])] == stored


def test_every_documented_field_is_accepted(emu, api):
    """The reference's full record shapes pass: strict, but not stricter than the documentation."""
    records = [
        [product("P1", sku="MUG-1", image_url="https://cdn.example/m.jpg", currency="GBP", special_price=9.99,
                 special_price_dt_from="2026-10-01T00:00:00Z", special_price_dt_to="2026-10-31T23:59:59+01:00",
                 is_active=True, is_in_stock=False, is_variant=False,
                 attributes=[{"type": "brand", "id": "acme", "label": "Acme"}, {"type": "colour", "id": "red"}],
                 listings=[{"store": "uk", "title": "Mug", "price": 12.5, "special_price": 9.99, "currency": "GBP",
                            "is_active": True, "url": "https://shop.example/uk/p1", "image_url": "https://cdn.example/1.jpg"}],
                 properties={"season": "AW26"}, **{"@merge": True}),
         product("P1-RED", is_variant=True)],
        [contact("C1", email="Ann.O'Neil+news@Example.co.uk", customer_id="K1", firstname="Ann", middlename="B",
                 lastname="O'Neil", prefix="Ms", gender="f", date_of_birth="1990-02-28", phone_number="+447700900123",
                 country_id="GB", timezone="Europe/London", store_ids=["uk"], timestamp_acquired="2020-01-01T00:00:00Z",
                 marketing_optin="EXPLICITLY_OPTEDIN", timestamp_subscribed="2020-01-01T00:00:00.123Z",
                 timestamp_unsubscribed=None, properties={"tier": "gold"},
                 **{"@merge": True, "@add_to_lists": ["123", 456], "@remove_from_lists": []})],
        [order("O1", subtotal=12.5, discount=-1.0, shipping=3.95, tax=2.41, status="partial_refund", is_valid=True,
               customer={"id": "K1", "email": "ann@example.com", "firstname": "Ann", "lastname": "O'Neil"},
               store="uk", channel="online", web_id="100001", coupon_code="SAVE1", payment_method="card",
               shipping_method="courier", billing_address={"city": "York", "state": "N Yorks", "postcode": "YO1 7HH",
                                                          "country_code": "GB"},
               shipping_address={"city": "York", "state": None, "postcode": "YO1 7HH", "country_code": "GB"},
               properties={"tracking": "TRK1"},
               lineitems=[{"product_id": "P1", "variant_id": "P1-RED", "sku": "MUG-1-RED", "quantity": 2, "unit_price": 6.25,
                           "subtotal": 12.5, "discount": -1.0, "tax": 2.41, "total": 13.91, "quantity_refunded": 1,
                           "refunded": 6.96, "is_on_sale": False,
                           "variant_options": [{"id": "red", "type": "colour", "label": "Red"}], "properties": {}}]),
         order("O2", lineitems=[])],
        [event("E1", identity_account_id="K1", properties={"tracking": "TRK1"}), event("E2", identity_email=None,
                                                                                       identity_account_id="K1")],
    ]
    for batch in records:
        accepted(push(api, batch), len(batch))
    assert push_errors(api) == []
    assert [p["id"] for p in emu.records("product")] == ["P1", "P1-RED"]
    assert emu.get("contact", "C1", "khaos")["email"] == "Ann.O'Neil+news@Example.co.uk"
    assert "@merge" not in emu.get("contact", "C1", "khaos") and "@add_to_lists" not in emu.get("contact", "C1")
    assert [o["id"] for o in emu.records("order")] == ["O1", "O2"]
    assert [e["id"] for e in emu.records("custom_event")] == ["E1", "E2"]


def test_product_without_title_price_or_url_is_accepted(api, emu):
    """Recommendations need them, pushing does not."""
    accepted(push(api, [{"@type": "product", "id": "P9"}]), 1)
    emu.process_queue()
    assert emu.get("product", "P9") == {"@type": "product", "id": "P9"}


def test_force_optin_is_allowed_but_recorded(api, emu):
    accepted(push(api, [contact("C1", marketing_optin="EXPLICITLY_OPTEDIN", **{"@force_optin": True}),
                        contact("C2", **{"@force_optin": False})]), 2)
    assert emu.stats()["forced_optins"] == ["C1"]


# -- the queue --------------------------------------------------------------------------------
def test_accepted_records_are_queued_and_stored_by_the_next_request(api, emu):
    accepted(push(api, [product("P1")]), 1)
    assert emu.get("product", "P1") is None
    assert emu.stats()["queued"] == 1
    assert api.get("/orders").json() == []  # any request processes what was queued before it
    assert emu.get("product", "P1") == product("P1")
    assert emu.stats()["queued"] == 0


def test_processing_waits_for_processing_delay(db_path, clock):
    emu = make_emulator(db_path, clock, processing_delay_s=5.0)
    with client_for(emu) as api:
        accepted(push(api, [product("P1")]), 1)
        clock.advance(4.9)
        assert api.get("/products/P1").status_code == 404
        clock.advance(0.1)
        assert api.get("/products/P1").json() == product("P1")


def test_process_queue_processes_everything_now_and_says_how_many(db_path, clock):
    emu = make_emulator(db_path, clock, processing_delay_s=3_600)
    with client_for(emu) as api:
        accepted(push(api, [product("P1"), product("P2")]), 2)
        accepted(push(api, [product("P3")]), 1)
    assert emu.process_queue() == 3
    assert emu.process_queue() == 0
    assert [p["id"] for p in emu.records("product")] == ["P1", "P2", "P3"]


def test_order_line_with_unknown_product_is_accepted_then_logged_and_not_stored(api, emu):
    emu.seed_record("product", product("P1"))
    request_id = accepted(push(api, [order("O1", ("P1",)), order("O2", ("P1", "P404"))]), 2)
    log = push_errors(api)
    assert log == [{"error_message": "Invalid reference: product does not exist",
                    "error_path": "root > lineitems > 1 > product_id", "request_id": request_id,
                    "record_type": "order", "record_id": "O2", "timestamp": log[0]["timestamp"]}]
    assert emu.get("order", "O2") is None
    assert api.get("/orders/O2").status_code == 404
    assert emu.get("order", "O1") is not None
    assert emu.stats()["processing_errors"] == 1


def test_order_line_with_unknown_variant_is_not_stored(api, emu):
    emu.seed_record("product", product("P1"))
    line = {"product_id": "P1", "variant_id": "P1-XL", "quantity": 1}
    accepted(push(api, [order("O1", lineitems=[line])]), 1)
    assert push_errors(api)[0]["error_path"] == "root > lineitems > 0 > variant_id"
    assert emu.get("order", "O1") is None


def test_queue_is_processed_in_order_so_products_pushed_first_count(db_path, clock):
    emu = make_emulator(db_path, clock, processing_delay_s=60)
    with client_for(emu) as api:
        accepted(push(api, [order("O0", ("P1",))]), 1)  # before its product: fails
        accepted(push(api, [product("P1")]), 1)
        accepted(push(api, [order("O1", ("P1",))]), 1)
        assert emu.process_queue() == 3
        assert [e["record_id"] for e in push_errors(api)] == ["O0"]
    assert [o["id"] for o in emu.records("order")] == ["O1"]


# -- upsert rules -----------------------------------------------------------------------------
def test_contacts_merge_the_fields_sent_and_objects_key_by_key(api, emu):
    accepted(push(api, [contact("C1", firstname="Ann", lastname="Lee", properties={"a": 1, "b": 2})]), 1)
    accepted(push(api, [contact("C1", lastname="Lee-Smith", properties={"a": 3})]), 1)
    accepted(push(api, [contact("C1", firstname="Anne", **{"@merge": True})]), 1)
    emu.process_queue()
    assert emu.get("contact", "C1", "khaos") == {"@type": "contact", "@collection": "khaos", "id": "C1",
                                                  "firstname": "Anne", "lastname": "Lee-Smith",
                                                  "properties": {"a": 3, "b": 2}}


@pytest.mark.parametrize("blanks,merge,kept", [("kept", False, True), ("cleared", False, False),
                                               ("cleared", True, True), ("kept", True, True)])
def test_a_blank_clears_only_when_the_emulator_says_so_and_never_with_merge(db_path, clock, blanks, merge, kept):
    """The "Merge" page: without @merge blanks "may or may not" remove a value; with it, fields
    not set are "copied from the existing record"."""
    emu = make_emulator(db_path, clock, blanks=blanks)
    emu.seed_record("product", product("P1"))
    with client_for(emu) as api:
        accepted(push(api, [order("O1", coupon_code="SAVE1", properties={"keycode": "K7", "tracking": "T1"})]), 1)
        flag = {"@merge": True} if merge else {}
        accepted(push(api, [{"@type": "order", "id": "O1", "coupon_code": None, "properties": {"keycode": ""},
                             **flag}]), 1)
        emu.process_queue()
    stored = emu.get("order", "O1")
    emu.close()
    if kept:
        assert (stored["coupon_code"], stored["properties"]) == ("SAVE1", {"keycode": "K7", "tracking": "T1"})
    else:
        assert "coupon_code" not in stored and stored["properties"] == {"tracking": "T1"}


def test_a_blank_on_a_new_record_stores_nothing(api, emu):
    accepted(push(api, [contact("C1", firstname="", lastname=None, properties={"a": None, "b": 1})]), 1)
    emu.process_queue()
    assert emu.get("contact", "C1") == {"@type": "contact", "@collection": "khaos", "id": "C1", "properties": {"b": 1}}


def test_products_merge_but_attributes_are_replaced_whole(api, emu):
    attributes = [{"type": "brand", "id": "acme"}, {"type": "colour", "id": "red"}]
    accepted(push(api, [product("P1", sku="MUG-1", attributes=attributes)]), 1)
    accepted(push(api, [{"@type": "product", "id": "P1", "price": 14.0, "attributes": [{"type": "colour", "id": "blue"}]}]), 1)
    emu.process_queue()
    assert emu.get("product", "P1") == {**product("P1", sku="MUG-1"), "price": 14.0,
                                        "attributes": [{"type": "colour", "id": "blue"}]}


def test_orders_merge_lines_are_replaced_whole_and_resending_is_safe(api, emu):
    """Reference, upsert: a resend without ``coupon_code`` does not drop the coupon Ometria holds."""
    emu.seed_record("product", product("P1"))
    emu.seed_record("product", product("P2"))
    accepted(push(api, [order("O1", ("P1", "P2"), coupon_code="SAVE1", status="shipped")]), 1)
    refunded = order("O1", ("P1",), status="refunded", is_valid=False)
    accepted(push(api, [refunded]), 1)
    accepted(push(api, [refunded]), 1)
    emu.process_queue()
    assert emu.records("order") == [{**refunded, "coupon_code": "SAVE1"}]


def test_a_partial_record_for_an_unknown_id_is_refused_at_once(api, emu):
    """Creation still needs the required fields; only an existing record may be partial."""
    accepted(push(api, [{"@type": "order", "id": "O404", "status": "cancelled", "is_valid": False}]), 0, rejected=1)
    assert [(e["error_message"], e["error_path"]) for e in push_errors(api)] == [
        ("Missing required field", "root > timestamp")]
    assert emu.records("order") == []


def test_a_partial_record_queued_behind_a_failed_creation_fails_when_processed(db_path, clock):
    emu = make_emulator(db_path, clock, processing_delay_s=60)
    with client_for(emu) as api:
        accepted(push(api, [order("O1", ("P404",))]), 1)  # accepted, then refused: no such product
        accepted(push(api, [{"@type": "order", "id": "O1", "status": "cancelled"}]), 1)  # an update of a queued one
        emu.process_queue()
        assert [(e["record_id"], e["error_path"]) for e in push_errors(api)] == [
            ("O1", "root > timestamp"), ("O1", "root > lineitems > 0 > product_id")]
    assert emu.records("order") == []
    emu.close()


# -- Ometria's own documented examples, in-process and through ``sandbox serve`` -------------------
CANCELLATION = [{"@type": "order", "id": "123551", "status": "cancelled", "is_valid": False}]  # Push API page
EMAIL_FIRST = [{"@collection": "default", "@type": "contact", "timestamp_acquired": "2018-04-19T09:00:00+00",
                "id": "uuid_4567", "customer_id": "uuid_4567", "email": "bob@ometria.com",
                "marketing_optin": "EXPLICITLY_OPTEDIN", "@force_optin": True}]  # "Changing a contact's email address"
EMAIL_CHANGE = [{"@collection": "default", "@type": "contact", "id": "uuid_4567", "customer_id": "uuid_4567",
                 "email": "bobby@ometria.com"}]
STOCK_UPDATE = [{"@type": "product", "id": "1042", "is_in_stock": False, "@merge": True}]  # magento2-extension Inventory.php


def documented_examples(api: httpx.Client, settle: Any) -> None:
    """Drive the three documented examples through ``api`` (``settle`` processes the queue)."""
    placed = order("123551", ("1042",), coupon_code="WELCOME", status="complete", is_valid=True)
    for records in ([product("1042", is_in_stock=True, sku="MUG-1")], [placed], CANCELLATION, EMAIL_FIRST,
                    EMAIL_CHANGE, STOCK_UPDATE):
        accepted(push(api, records), len(records))
        settle()

    def read(path: str, **params: str) -> Any:
        settle()  # also spaces the reads: a served account allows 4 a second
        response = api.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    assert read("/push/_errors") == []
    assert read("/orders/123551") == {**placed, "status": "cancelled", "is_valid": False}
    bob = read("/contacts/default/uuid_4567")
    assert (bob["email"], bob["marketing_optin"], bob["timestamp_acquired"]) == (
        "bobby@ometria.com", "EXPLICITLY_OPTEDIN", "2018-04-19T09:00:00+00")
    [profile] = read("/profiles", email="bobby@ometria.com")
    assert profile["contacts"] == [{"collection": "default", "id": "uuid_4567"}]
    assert read("/products/1042") == product("1042", is_in_stock=False, sku="MUG-1")


def test_ometrias_documented_examples_behave_as_documented(api, emu):
    documented_examples(api, emu.process_queue)


def test_ometrias_documented_examples_through_sandbox_serve(tmp_path):
    from khaosync.sandbox.server import SandboxApp, ServedSandbox

    with ServedSandbox(SandboxApp(tmp_path / "sandbox", KEY)) as served:
        with httpx.Client(base_url=f"{served.base_url}/ometria/v2", headers={"X-Ometria-Auth": KEY}) as api:
            documented_examples(api, lambda: time.sleep(0.3))  # serve's own rate: 8 pushes/s, 4 reads/s


def test_fields_public_clients_send_are_accepted(api, emu):
    """rudder-transformer's contact ``channels.sms`` and order ``ip_address``."""
    emu.seed_record("product", product("P1"))
    sms = {"allow_marketing": True, "allow_transactional": False, "dt_updated_marketing": "2026-10-01T09:00:00Z",
           "dt_updated_transactional": "2026-10-01T09:00:00Z"}
    accepted(push(api, [contact("C1", email="ann@example.com", channels={"sms": sms})]), 1)
    accepted(push(api, [order("O1", ip_address="203.0.113.9"), order("O2", ip_address="2001:db8::1")]), 2)
    emu.process_queue()
    assert emu.get("contact", "C1")["channels"] == {"sms": sms}
    assert [o["ip_address"] for o in emu.records("order")] == ["203.0.113.9", "2001:db8::1"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["P1", "P2", "P3"]), st.sampled_from(["title", "sku", "price"]),
                          st.one_of(st.none(), st.integers(0, 9))), min_size=1, max_size=12))
def test_resending_a_push_changes_nothing(changes):
    """Pushes are upserts: sending the same batches twice stores what sending them once did."""
    batches = [[{"@type": "product", "id": pid, field: value if field == "price" or value is None else str(value)}]
               for pid, field, value in changes]

    def stored_after(times: int) -> list[dict]:
        with tempfile.TemporaryDirectory() as folder:
            emu = make_emulator(Path(folder) / "ometria.db", FakeClock())
            with client_for(emu) as api:
                for _ in range(times):
                    for batch in batches:
                        accepted(push(api, batch), 1)
            emu.process_queue()
            try:
                return emu.records("product")
            finally:
                emu.close()

    assert stored_after(2) == stored_after(1)


def test_custom_events_are_stored_last_write_wins(api, emu):
    accepted(push(api, [event("E1"), event("E1", properties={"n": 2})]), 2)
    emu.process_queue()
    assert emu.records("custom_event") == [event("E1", properties={"n": 2})]


# -- identity -------------------------------------------------------------------------------
def test_email_held_by_another_contact_is_silently_dropped(api, emu):
    accepted(push(api, [contact("C1", email="ann@example.com", firstname="Ann")]), 1)
    accepted(push(api, [contact("C2", email="bo@example.com")]), 1)
    # another collection, other case: still the same email
    accepted(push(api, [{**contact("C3", email="ANN@Example.com", firstname="Annie"), "@collection": "web"},
                        contact("C2", email="ann@example.com", firstname="Bo")]), 2)
    assert push_errors(api) == []
    assert emu.get("contact", "C3", "web") == {"@type": "contact", "@collection": "web", "id": "C3", "firstname": "Annie"}
    assert emu.get("contact", "C2", "khaos")["email"] == "bo@example.com"  # its own email stays
    assert emu.get("contact", "C2", "khaos")["firstname"] == "Bo"  # the rest of the push landed
    assert emu.stats()["identity_conflicts"] == 2
    profile = api.get("/profiles", params={"email": "ann@example.com"}).json()
    assert [p["contacts"] for p in profile] == [[{"collection": "khaos", "id": "C1"}]]


def test_an_email_released_by_its_contact_can_be_taken(api, emu):
    accepted(push(api, [contact("C1", email="ann@example.com")]), 1)
    accepted(push(api, [contact("C1", email=None)]), 1)  # a blank: the email stays on C1
    accepted(push(api, [contact("C2", email="ann@example.com")]), 1)
    emu.process_queue()
    assert "email" not in emu.get("contact", "C2")
    accepted(push(api, [contact("C1", email="ann.new@example.com")]), 1)  # changed: released
    accepted(push(api, [contact("C2", email="ann@example.com")]), 1)
    emu.process_queue()
    assert emu.get("contact", "C2")["email"] == "ann@example.com"


def test_customer_id_can_be_made_a_conflicting_identifier_too(api, emu, monkeypatch):
    monkeypatch.setattr(ometria_processing, "CONFLICTING_IDENTIFIERS", ("email", "customer_id"))
    accepted(push(api, [contact("C1", customer_id="K1"), contact("C2", customer_id="K1", firstname="Bo")]), 2)
    emu.process_queue()
    assert emu.get("contact", "C2") == contact("C2", firstname="Bo")


# -- consent --------------------------------------------------------------------------------
def profile_of(api: httpx.Client, email: str) -> dict:
    found = api.get("/profiles", params={"email": email}).json()
    assert len(found) == 1
    return found[0]


def test_opted_out_profile_stays_opted_out_without_force_optin(api, emu):
    emu.seed_unsubscribe("ann@example.com", "2026-09-01T10:00:00Z", "unsubscribe link")
    accepted(push(api, [contact("C1", email="ann@example.com", marketing_optin="EXPLICITLY_OPTEDIN",
                                timestamp_subscribed="2026-10-01T00:00:00Z")]), 1)
    assert push_errors(api) == []  # silently
    stored = emu.get("contact", "C1", "khaos")
    assert stored["marketing_optin"] == "EXPLICITLY_OPTEDOUT" and "timestamp_subscribed" not in stored
    assert profile_of(api, "ann@example.com")["marketing_optin"] == "EXPLICITLY_OPTEDOUT"
    assert emu.stats()["optins_refused"] == 1 and emu.stats()["forced_optins"] == []


def test_force_optin_lifts_an_opt_out(api, emu):
    emu.seed_unsubscribe("ann@example.com", "2026-09-01T10:00:00Z", "unsubscribe link")
    accepted(push(api, [contact("C1", email="ann@example.com", marketing_optin="EXPLICITLY_OPTEDIN",
                                timestamp_subscribed="2026-10-01T00:00:00Z", **{"@force_optin": True})]), 1)
    emu.process_queue()
    assert emu.get("contact", "C1")["marketing_optin"] == "EXPLICITLY_OPTEDIN"
    profile = profile_of(api, "ann@example.com")
    assert profile["marketing_optin"] == "EXPLICITLY_OPTEDIN"
    assert profile["timestamp_subscribed"] == "2026-10-01T00:00:00Z"
    assert emu.stats()["forced_optins"] == ["C1"]


def test_api_opt_out_holds_and_is_not_listed_as_an_unsubscribe(api, emu):
    accepted(push(api, [contact("C1", email="ann@example.com", marketing_optin="EXPLICITLY_OPTEDOUT",
                                timestamp_unsubscribed="2026-09-01T00:00:00Z")]), 1)
    accepted(push(api, [contact("C1", marketing_optin="EXPLICITLY_OPTEDIN")]), 1)
    accepted(push(api, [contact("C1", marketing_optin="NOT_SPECIFIED")]), 1)
    emu.process_queue()
    assert emu.get("contact", "C1")["marketing_optin"] == "EXPLICITLY_OPTEDOUT"
    assert profile_of(api, "ann@example.com")["marketing_optin"] == "EXPLICITLY_OPTEDOUT"
    assert profile_of(api, "ann@example.com")["timestamp_unsubscribed"] == "2026-09-01T00:00:00Z"
    assert api.get("/unsubscribes").json() == []


def test_opted_out_contact_without_email_stays_opted_out(api, emu):
    emu.seed_record("contact", contact("C1", marketing_optin="EXPLICITLY_OPTEDOUT"))
    accepted(push(api, [contact("C1", marketing_optin="EXPLICITLY_OPTEDIN")]), 1)
    emu.process_queue()
    assert emu.get("contact", "C1")["marketing_optin"] == "EXPLICITLY_OPTEDOUT"


def test_opt_in_of_a_profile_never_opted_out_lands(api, emu):
    accepted(push(api, [contact("C1", email="ann@example.com", marketing_optin="EXPLICITLY_OPTEDIN")]), 1)
    emu.process_queue()
    assert emu.get("contact", "C1")["marketing_optin"] == "EXPLICITLY_OPTEDIN"
    assert profile_of(api, "ann@example.com")["marketing_optin"] == "EXPLICITLY_OPTEDIN"


# -- queue full -----------------------------------------------------------------------------
def test_queue_full_is_429_with_queue_headers_and_nothing_stored(db_path, clock):
    emu = make_emulator(db_path, clock, queue_limit=150, processing_delay_s=60)
    with client_for(emu) as api:
        first = push(api, [product(f"P{i}") for i in range(100)])
        accepted(first, 100)
        assert first.headers["X-QueueSize-Remaining"] == "50"
        full = push(api, [product(f"Q{i}") for i in range(51)])
        assert full.status_code == 429
        assert full.json() == {"status": "ERROR", "error": "Too Many Requests: the queue is full"}
        assert (full.headers["X-QueueSize-Limit"], full.headers["X-QueueSize-Remaining"]) == ("150", "50")
        assert int(full.headers["Retry-After"]) >= 1
        assert emu.stats()["queued"] == 100 and emu.stats()["queue_full"] == 1
        last = push(api, [product(f"R{i}") for i in range(50)])
        accepted(last, 50)
        assert last.headers["X-QueueSize-Remaining"] == "0"
        assert emu.process_queue() == 150
        assert push_errors(api) == []
    assert not any(p["id"].startswith("Q") for p in emu.records("product"))


# -- rate limits ----------------------------------------------------------------------------
def test_push_burst_beyond_the_rate_is_429_with_retry_after(db_path, clock):
    emu = make_emulator(db_path, clock, push_rate=8.0, read_rate=4.0)
    with client_for(emu) as api:
        for i in range(8):
            accepted(push(api, [product(f"P{i}")]), 1)
        throttled = push(api, [product("P8")])
        assert throttled.status_code == 429
        assert throttled.headers["Retry-After"] == "1"
        assert throttled.json() == {"status": "ERROR", "error": "Too Many Requests"}
        assert api.get("/products", params={"limit": 250}).status_code == 200  # reads have their own bucket
        clock.advance(0.125)  # one token back at 8/s
        accepted(push(api, [product("P9")]), 1)
        assert push(api, [product("P10")]).status_code == 429
    assert sorted(p["id"] for p in emu.records("product")) == sorted([f"P{i}" for i in range(8)] + ["P9"])
    assert emu.stats()["throttled"] == 2


def test_read_burst_beyond_the_rate_is_429_and_refills_continuously(db_path, clock):
    emu = make_emulator(db_path, clock, push_rate=8.0, read_rate=4.0)
    with client_for(emu) as api:
        assert [api.get("/orders").status_code for _ in range(5)] == [200, 200, 200, 200, 429]
        accepted(push(api, [product("P1")]), 1)  # pushes have their own bucket
        clock.advance(0.5)  # two tokens at 4/s
        assert [api.get("/push/_errors").status_code for _ in range(3)] == [200, 200, 429]
        clock.advance(10)  # the bucket holds one second of burst, no more
        assert [api.get("/contacts").status_code for _ in range(5)] == [200, 200, 200, 200, 429]


def test_retry_after_is_whole_seconds_until_a_token(db_path, clock):
    emu = make_emulator(db_path, clock, push_rate=0.25)
    with client_for(emu) as api:
        accepted(push(api, [product("P1")]), 1)
        assert push(api, [product("P2")]).headers["Retry-After"] == "4"
        clock.advance(2.5)
        assert push(api, [product("P2")]).headers["Retry-After"] == "2"


# -- the error log --------------------------------------------------------------------------
def test_error_log_holds_the_100_most_recent_newest_first(api):
    for batch in range(2):
        records = [product(f"B{batch * 60 + i:03d}", price="1") for i in range(60)]
        accepted(push(api, records), 0, rejected=60)
    log = push_errors(api)
    assert len(log) == 100
    assert [entry["record_id"] for entry in log] == [f"B{i:03d}" for i in range(119, 19, -1)]
    assert api.get("/push/_errors", params={"limit": 10}).status_code == 400


def documented_emulator(db_path: Path, clock: FakeClock, **options: Any) -> OmetriaEmulator:
    """The emulator as ``sandbox serve`` and the sandbox profile run it: documented error log, no Retry-After."""
    return OmetriaEmulator(db_path, KEY, clock=clock, sleep=clock.sleep, **options)


def test_the_error_log_carries_only_the_documented_fields_by_default(db_path, clock):
    emu = documented_emulator(db_path, clock, push_rate=1_000.0, read_rate=1_000.0)
    with client_for(emu) as api:
        accepted(push(api, [product("P1", price="9.99"), sized_product("P2", 61_441), product("P3")]), 1, rejected=2)
        accepted(push(api, [order("O1", ("P404",))]), 1)  # refused later, when processed
        assert push_errors(api) == [
            {"error_message": "not a valid value", "error_path": "root > lineitems > 0 > product_id"},
            {"error_message": "Payload invalid: Record is too large.", "error_path": "root"},
            {"error_message": "not a valid value", "error_path": "root > price"},
        ]
    emu.close()


def test_a_429_carries_no_retry_after_by_default(db_path, clock):
    emu = documented_emulator(db_path, clock, push_rate=1.0, read_rate=1.0, queue_limit=1)
    with client_for(emu) as api:
        assert push(api, [product("P1")]).status_code == 200
        throttled = push(api, [product("P2")])
        clock.advance(5)
        full = push(api, [product("P3"), product("P4")])  # over the queue limit of 1
    assert (throttled.status_code, full.status_code) == (429, 429)
    assert "Retry-After" not in throttled.headers and "Retry-After" not in full.headers
    emu.close()


# -- read-back --------------------------------------------------------------------------------
def test_limit_offset_and_the_250_maximum(api, emu):
    for i in range(260):
        emu.seed_record("order", order(f"O{i:03d}"))
    assert len(api.get("/orders").json()) == 100
    page = api.get("/orders", params={"limit": 250}).json()
    assert [o["id"] for o in page] == [f"O{i:03d}" for i in range(250)]
    assert [o["id"] for o in api.get("/orders", params={"limit": 250, "offset": 250}).json()] == [f"O{i:03d}" for i in range(250, 260)]
    for bad in ({"limit": 251}, {"limit": 0}, {"limit": "ten"}, {"offset": -1}, {"limit": "1.5"}):
        response = api.get("/orders", params=bad)
        assert response.status_code == 400, bad
        assert response.json()["status"] == "ERROR"
    assert api.get("/orders", params={"limit": 251}).json() == {
        "status": "ERROR", "error": "Invalid parameter limit: must be between 1 and 250"}


def test_unknown_repeated_or_bad_parameters_are_400(api):
    assert api.get("/orders", params={"since": "2026-01-01T00:00:00Z"}).json() == {
        "status": "ERROR", "error": "Unknown parameter: since"}
    assert api.get("/orders?limit=1&limit=2").status_code == 400
    assert api.get("/orders", params={"orderby": "timestamp"}).status_code == 400
    assert api.get("/orders/O1", params={"limit": 1}).status_code == 400
    assert api.get("/products", params={"active": "1"}).status_code == 400
    assert api.get("/profiles", params={"updateSince": "2026-01-01"}).status_code == 400
    assert api.get("/unsubscribes", params={"since": "2026-01-01T00:00:00+00:00"}).status_code == 400


def test_orderby_timestamp_update(api, emu):
    for pid in ("P1", "P2", "P3"):
        emu.seed_record("product", product(pid))
    emu.tamper("product", "P1", {"title": "Renamed"})
    assert [p["id"] for p in api.get("/products").json()] == ["P1", "P2", "P3"]
    assert [p["id"] for p in api.get("/products", params={"orderby": "timestamp_update"}).json()] == ["P2", "P3", "P1"]


def test_single_records_and_404_json(api, emu):
    emu.seed_record("order", order("O1"))
    emu.seed_record("product", product("P1"))
    emu.seed_record("contact", contact("C1", firstname="Ann"))
    assert api.get("/orders/O1").json() == order("O1")
    assert api.get("/products/P1").json() == product("P1")
    assert api.get("/contacts/khaos/C1").json() == contact("C1", firstname="Ann")
    for path in ("/orders/O2", "/products/P2", "/contacts/khaos/C2", "/contacts/web/C1", "/profiles/p9", "/profiles/C1"):
        response = api.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/json"
        assert response.json()["status"] == "ERROR"


def test_products_filters_active_and_variants(api, emu):
    emu.seed_record("product", product("P1"))
    emu.seed_record("product", product("P2", is_active=False))
    emu.seed_record("product", product("P1-RED", is_variant=True))
    emu.seed_record("product", product("P3", is_active=True, is_variant=False))

    def ids(**params: str) -> list[str]:
        return [p["id"] for p in api.get("/products", params=params).json()]

    assert ids() == ["P1", "P2", "P3"]
    assert ids(includeVariants="true") == ["P1", "P2", "P1-RED", "P3"]
    assert ids(active="true") == ["P1", "P3"]
    assert ids(active="false") == ["P2"]
    assert ids(active="true", includeVariants="true") == ["P1", "P1-RED", "P3"]


def test_contacts_collections_and_listing(api, emu):
    emu.seed_record("contact", contact("C1"))
    emu.seed_record("contact", contact("C2"))
    emu.seed_record("contact", {**contact("W1"), "@collection": "web"})
    assert api.get("/contacts").json() == [{"collection": "khaos", "count": 2}, {"collection": "web", "count": 1}]
    assert [c["id"] for c in api.get("/contacts/khaos").json()] == ["C1", "C2"]
    assert [c["id"] for c in api.get("/contacts/khaos", params={"limit": 1, "offset": 1}).json()] == ["C2"]
    assert api.get("/contacts/shop").json() == []


def test_profiles_one_per_email_with_stable_ids(api, emu):
    emu.seed_record("contact", {**contact("W1", email="ann@example.com", firstname="Ann"), "@collection": "web"})
    accepted(push(api, [contact("C2", email="bo@example.com", customer_id="K2", lastname="Bo"), contact("C3")]), 2)
    emu.process_queue()
    profiles = api.get("/profiles").json()
    assert [(p["id"], p["email"]) for p in profiles] == [("p1", "ann@example.com"), ("p2", "bo@example.com")]
    p2 = api.get("/profiles/p2").json()
    assert p2 == {"id": "p2", "email": "bo@example.com", "marketing_optin": "NOT_SPECIFIED", "customer_id": "K2",
                  "lastname": "Bo", "contacts": [{"collection": "khaos", "id": "C2"}],
                  "timestamp_update": p2["timestamp_update"]}
    assert TIMESTAMP.match(p2["timestamp_update"])
    assert [p["id"] for p in api.get("/profiles", params={"email": "ANN@example.com"}).json()] == ["p1"]
    assert api.get("/profiles", params={"email": "nobody@example.com"}).json() == []
    accepted(push(api, [contact("C2", firstname="Bob")]), 1)  # a change touches the profile
    emu.process_queue()
    since = p2["timestamp_update"]
    assert [p["id"] for p in api.get("/profiles", params={"updateSince": since}).json()] == ["p2"]
    assert api.get("/profiles/p2").json()["firstname"] == "Bob"
    assert [p["id"] for p in api.get("/profiles", params={"orderby": "timestamp_update"}).json()] == ["p1", "p2"]


def test_unsubscribes_answer_as_documented_with_zoneless_utc_filters(api, emu):
    emu.seed_unsubscribe("ann@example.com", "2026-09-01T10:00:00Z", "unsubscribe link")
    emu.seed_unsubscribe("bo@example.com", "2026-09-15T12:00:00+01:00", type="preferences_centre")
    emu.seed_unsubscribe("cy@example.com", "2026-10-01T00:00:00Z")
    emu.seed_unsubscribe("cy@example.com", "2026-10-01T00:00:00Z")  # the same event again: still one
    everything = api.get("/unsubscribes").json()
    assert everything == [
        {"email_address": "ann@example.com", "profile_id": "p1", "reason": "unsubscribe link",
         "timestamp": "2026-09-01 10:00:00+00", "type": "link_unsubscribe"},
        {"email_address": "bo@example.com", "profile_id": "p2", "reason": None,
         "timestamp": "2026-09-15 11:00:00+00", "type": "preferences_centre"},
        {"email_address": "cy@example.com", "profile_id": "p3", "reason": None,
         "timestamp": "2026-10-01 00:00:00+00", "type": "link_unsubscribe"},
    ]

    def emails(**params: str) -> list[str]:
        answer = api.get("/unsubscribes", params=params)
        assert answer.status_code == 200, answer.text
        return [u["email_address"] for u in answer.json()]

    assert emails(since="2026-09-15T11:00:00") == ["bo@example.com", "cy@example.com"]  # 12:00+01:00 is 11:00 UTC
    assert emails(before="2026-09-15T11:00:00") == ["ann@example.com"]
    assert emails(since="2026-09-02T00:00:00", before="2026-10-01T00:00:00") == ["bo@example.com"]
    assert emails(type="preferences_centre") == ["bo@example.com"]
    assert profile_of(api, "cy@example.com")["marketing_optin"] == "EXPLICITLY_OPTEDOUT"


@pytest.mark.parametrize("params, error", [
    ({"since": "2026-09-01T00:00:00Z"}, "Invalid parameter since: expected YYYY-MM-DDTHH:MM:SS in UTC, without a zone"),
    ({"before": "2026-09-01T00:00:00+00:00"}, "Invalid parameter before: expected YYYY-MM-DDTHH:MM:SS in UTC, without a zone"),
    ({"since": "2026-09-01"}, "Invalid parameter since: expected YYYY-MM-DDTHH:MM:SS in UTC, without a zone"),
    ({"since": "2026-13-01T00:00:00"}, "Invalid parameter since: not a date and time"),
    ({"limit": "10"}, "Unknown parameter: limit"),
    ({"offset": "10"}, "Unknown parameter: offset"),
    ({"type": "unsubscribe"}, "Invalid parameter type: one of preferences_centre, app, list_unsubscribe, "
                              "link_unsubscribe, stopword_unsubscribe_TF, stopword_unsubscribe_DO"),
])
def test_unsubscribes_refuse_what_ometria_does_not_document(api, params, error):
    answer = api.get("/unsubscribes", params=params)
    assert (answer.status_code, answer.json()) == (400, {"status": "ERROR", "error": error})


def test_unsubscribes_answer_is_cut_short_at_the_cap_without_saying_so(db_path, clock):
    emu = make_emulator(db_path, clock, unsubscribes_cap=2)
    for day in (3, 1, 2):
        emu.seed_unsubscribe(f"p{day}@example.com", f"2026-09-0{day}T10:00:00Z")
    with client_for(emu) as api:
        assert [u["email_address"] for u in api.get("/unsubscribes").json()] == ["p1@example.com", "p2@example.com"]


# -- routing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/nothing", "/orders/O1/lines", "/orders/", "/push/errors", "/v2/orders"])
def test_unknown_path_is_404(api, path):
    response = api.get(path)
    assert response.status_code == 404
    assert response.json() == {"status": "ERROR", "error": "Not Found"}


def test_outside_the_api_prefix_is_404(emu):
    with httpx.Client(transport=httpx.WSGITransport(app=emu), base_url="https://sandbox.khaosync.invalid",
                      headers={"X-Ometria-Auth": KEY}) as client:
        assert client.get("/ometria/v3/orders").status_code == 404
        assert client.get("/orders").status_code == 404


@pytest.mark.parametrize("method,path,allow", [
    ("GET", "/push", "POST"), ("PUT", "/push", "POST"), ("POST", "/orders", "GET"), ("DELETE", "/orders/O1", "GET"),
    ("PATCH", "/contacts/khaos/C1", "GET"), ("POST", "/push/_errors", "GET"),
])
def test_wrong_method_is_405(api, emu, method, path, allow):
    response = api.request(method, path)
    assert response.status_code == 405
    assert response.headers["Allow"] == allow
    assert emu.stats()["rejected_requests"] == 1


# -- fault injection --------------------------------------------------------------------------
def statuses(emu: OmetriaEmulator, n: int) -> list[int]:
    with client_for(emu) as api:
        return [api.get("/orders").status_code for _ in range(n)]


def test_fail_rate_is_deterministic_for_a_seed(tmp_path, clock):
    first = statuses(make_emulator(tmp_path / "a.db", clock, fail_rate=0.3, seed=7), 60)
    again = statuses(make_emulator(tmp_path / "b.db", clock, fail_rate=0.3, seed=7), 60)
    other = statuses(make_emulator(tmp_path / "c.db", clock, fail_rate=0.3, seed=8), 60)
    assert first == again
    assert first != other
    assert set(first) <= {200, 500, 502, 503} and 200 in first and len(set(first)) >= 3
    assert 8 <= sum(status != 200 for status in first) <= 30


def test_injected_failure_happens_before_anything(db_path, clock):
    emu = make_emulator(db_path, clock, fail_rate=1.0)
    with client_for(emu) as api:
        response = push(api, [product("P1")])
        assert response.status_code in (500, 502, 503)
        assert response.headers["content-type"] == "text/html"
        with pytest.raises(json.JSONDecodeError):
            response.json()
    assert emu.process_queue() == 0
    assert emu.records("product") == []
    assert emu.stats()["injected_failures"] == 1


def test_fail_after_commit_loses_the_answer_not_the_data(db_path, clock):
    emu = make_emulator(db_path, clock, fail_rate=1.0, fail_after_commit=True, seed=3)
    with client_for(emu) as api:
        answers = [push(api, [product(f"P{i}")]).status_code for i in range(20)]
    assert all(status in (500, 502, 503) for status in answers)
    emu.process_queue()
    arrived = len(emu.records("product"))
    assert 3 <= arrived <= 17  # about half arrived although every answer was a 5xx
    assert emu.stats()["injected_failures"] == 20


def test_latency_sleeps_through_the_injected_sleep(db_path, clock):
    emu = make_emulator(db_path, clock, latency_ms=250)
    with client_for(emu) as api:
        api.get("/orders")
        accepted(push(api, [product("P1")]), 1)
    assert clock.slept == [0.25, 0.25]


# -- persistence, concurrency, speed ------------------------------------------------------------
def test_state_survives_a_restart_and_is_shared_by_two_emulators(db_path, clock):
    first = make_emulator(db_path, clock, processing_delay_s=60)
    with client_for(first) as api:
        accepted(push(api, [product("P1")]), 1)
        first.process_queue()
        accepted(push(api, [product("P2"), product("P3", price="x")]), 1, rejected=1)  # P2 stays queued
        first.seed_unsubscribe("ann@example.com", "2026-09-01T10:00:00Z", "unsubscribe link")
        push(api, [contact("C1", **{"@force_optin": True})])
    first.close()

    second = make_emulator(db_path, FakeClock())
    other_process_view = make_emulator(db_path, FakeClock())
    with client_for(second) as api:
        assert api.get("/products/P2").json() == product("P2")  # the queue survived; processed now
        assert [e["record_id"] for e in push_errors(api)] == ["P3"]
        assert api.get("/unsubscribes").json()[0]["email_address"] == "ann@example.com"
    stats = other_process_view.stats()
    assert (stats["push_requests"], stats["records_received"], stats["records_rejected"]) == (3, 4, 1)
    assert stats["forced_optins"] == ["C1"]
    assert [p["id"] for p in other_process_view.records("product")] == ["P1", "P2"]


def test_concurrent_requests_from_threads(emu):
    def worker(n: int) -> list[int]:
        with client_for(emu) as api:
            codes = [push(api, [product(f"T{n}-{i}-{j}") for j in range(10)]).status_code for i in range(10)]
            codes += [api.get("/products", params={"limit": 5}).status_code for _ in range(5)]
            return codes

    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda n=n: results.append(worker(n))) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(code == 200 for codes in results for code in codes)
    emu.process_queue()
    assert len(emu.records("product")) == 400
    assert emu.stats()["records_received"] == 400 and emu.stats()["push_requests"] == 40


def test_20000_records_push_and_process_in_a_few_seconds(api, emu):
    started = time.perf_counter()
    for batch in range(100):
        accepted(push(api, [product(f"P{batch * 100 + i}") for i in range(100)]), 100)
    for batch in range(100):
        accepted(push(api, [order(f"O{batch * 100 + i}", (f"P{i}", f"P{i + 1}")) for i in range(100)]), 100)
    assert emu.process_queue() == 100
    elapsed = time.perf_counter() - started
    stats = emu.stats()
    assert (stats["records_stored"], stats["processing_errors"], stats["max_records_per_request"]) == (20_000, 0, 100)
    assert elapsed < 8.0, f"{elapsed:.1f}s"


# -- the Python side --------------------------------------------------------------------------
def test_seed_get_records_and_tamper(api, emu):
    emu.seed_record("product", {"id": "P1", "title": "Mug", "price": "not validated"})
    emu.seed_record("contact", contact("C1", email="ann@example.com", lastname="Lee"))
    assert emu.get("product", "P1") == {"@type": "product", "id": "P1", "title": "Mug", "price": "not validated"}
    emu.tamper("product", "P1", {"price": 99.0, "title": REMOVE})
    assert api.get("/products/P1").json() == {"@type": "product", "id": "P1", "price": 99.0}
    emu.tamper("contact", "C1", {"lastname": "Drift"}, collection="khaos")
    assert emu.records("contact", "khaos")[0]["lastname"] == "Drift"
    assert emu.records("contact", "web") == []
    assert emu.get("order", "O1") is None
    with pytest.raises(KeyError):
        emu.tamper("order", "O1", {"status": "x"})
    with pytest.raises(ValueError):
        emu.seed_record("customer", {"id": "X"})
    assert profile_of(api, "ann@example.com")["lastname"] == "Drift"


def test_stats_count_what_the_client_did(db_path, clock):
    emu = make_emulator(db_path, clock, push_rate=2.0)
    with client_for(emu) as api:
        accepted(push(api, [product("P1"), product("P2", price="1")]), 1, rejected=1)
        assert api.post("/push", content=b"[]", headers={"Content-Type": "application/json"}).status_code == 400
        assert push(api, [product("P3")]).status_code == 429
        api.get("/orders")
    with client_for(emu, "bad") as intruder:
        intruder.get("/orders")
    stats = emu.stats()
    expected = {"push_requests": 3, "read_requests": 2, "records_received": 2, "records_accepted": 1,
                "records_rejected": 1, "max_records_per_request": 2, "rejected_requests": 2, "throttled": 1,
                "forced_optins": [], "queued": 0, "records_processed": 1, "records_stored": 1}
    assert {key: stats[key] for key in expected} == expected
