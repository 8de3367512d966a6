"""The Ometria client.

Two kinds of test:

- unit tests over ``httpx.MockTransport`` with a fake clock: requests, the rate, every error
  class and the retry policy (429 via the limiter, 5xx and timeouts with bounded jitter);
- cassette tests: real exchanges with the Ometria emulator, recorded once with vcrpy into
  ``tests/ometria/cassettes/`` and replayed with ``record_mode="none"``; the replay transport
  is an app that fails if it is ever called.

Re-record (after a change to the client's requests or the emulator)::

    KHAOSYNC_RECORD=1 .venv/bin/python -m pytest tests/ometria/test_client.py -q

``X-Ometria-Auth`` is filtered out of every recorded request.
"""

from __future__ import annotations

import json
import os
import random
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
import vcr
import yaml
from pydantic import SecretStr

from khaosync.config import OmetriaSettings
from khaosync.errors import EXIT_EXTERNAL, ExternalSystemError
from khaosync.ometria import wire
from khaosync.ometria.client import PAGE_SIZE, OmetriaClient, PushError
from khaosync.ometria.errors import (
    OmetriaAuthError,
    OmetriaBadResponseError,
    OmetriaConnectionError,
    OmetriaRateLimitedError,
    OmetriaRequestError,
    OmetriaServerError,
    OmetriaTimeoutError,
)

BASE = "https://api.ometria.test/v2"
KEY = "omk-live-0123456789abcdef"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds


class FakeRng(random.Random):
    def __init__(self) -> None:
        super().__init__(1)
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append((a, b))
        return super().uniform(a, b)


class Script:
    """A MockTransport handler answering from a script (the last step repeats); keeps requests and their times."""

    def __init__(self, time: FakeTime, *steps: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]):
        self.time = time
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(self.time.now)
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        if isinstance(step, Exception):
            raise step
        if callable(step) and not isinstance(step, httpx.Response):
            return step(request)
        return step


def ok(accepted: int, rejected: int = 0, request_id: str = "req-1", headers: dict | None = None) -> httpx.Response:
    return httpx.Response(200, json={"status": "OK", "request_id": request_id, "accepted": accepted,
                                     "rejected": rejected}, headers=headers)


def status(code: int, headers: dict | None = None, body: bytes = b"") -> httpx.Response:
    return httpx.Response(code, content=body, headers=headers)


def client_for(script: Script, **over) -> tuple[OmetriaClient, FakeRng]:
    settings = OmetriaSettings(**{"base_url": BASE, "api_key": SecretStr(KEY), "retries": 3, "push_rate": 4,
                                  "read_rate": 4, **over})
    rng = FakeRng()
    client = OmetriaClient(settings, transport=httpx.MockTransport(script), clock=script.time.clock,
                           sleep=script.time.sleep, rng=rng)
    return client, rng


def product(i: int, **extra) -> tuple[str, bytes]:
    doc = {"@type": "product", "id": f"P{i}", "title": f"Mug {i}", "price": Decimal("9.99"), **extra}
    return f"P{i}", wire.dumps(doc)


# -- requests ----------------------------------------------------------------------------------

def test_push_sends_one_array_with_the_key_and_reads_the_answer() -> None:
    t = FakeTime()
    script = Script(t, ok(2, request_id="abc"))
    client, _ = client_for(script)
    answer = client.push("product", [product(1), product(2)])
    [request] = script.requests
    assert request.method == "POST" and str(request.url) == f"{BASE}/push"
    assert request.headers["X-Ometria-Auth"] == KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.content == b"[" + product(1)[1] + b"," + product(2)[1] + b"]"
    assert json.loads(request.content)[0]["price"] == 9.99
    assert answer.request_id == "abc" and answer.accepted == 2 and answer.rejected == 0
    assert answer.record_ids == ("P1", "P2") and answer.attempts == 1


@pytest.mark.parametrize("records,message", [
    ([], "1..100"),
    ([product(i) for i in range(101)], "1..100"),
    ([product(1), ("C1", wire.dumps({"@type": "contact", "id": "C1", "@collection": "khaos"}))], "@type"),
    ([product(1, title="x" * (wire.RECORD_LIMIT + 1))], "record limit"),
])
def test_push_refuses_before_sending(records, message) -> None:
    t = FakeTime()
    script = Script(t, ok(1))
    client, _ = client_for(script)
    with pytest.raises(ValueError, match=message):
        client.push("product", records)
    assert script.requests == []


def test_every_push_takes_a_token_and_the_rate_holds() -> None:
    t = FakeTime()
    script = Script(t, ok(1))
    client, _ = client_for(script, push_rate=4)
    for i in range(12):
        client.push("product", [product(i)])
    gaps = [b - a for a, b in zip(script.times, script.times[1:])]
    assert min(gaps) >= 0.25 - 1e-9
    assert client.push_bucket.acquired == 12 and client.read_bucket.acquired == 0


# -- retries -----------------------------------------------------------------------------------

def test_5xx_is_retried_with_bounded_full_jitter() -> None:
    t = FakeTime()
    script = Script(t, status(502), status(503, body=b"<html>busy</html>"), status(500), ok(1))
    client, rng = client_for(script, retries=3)
    answer = client.push("product", [product(1)])
    assert answer.attempts == 4 and len(script.requests) == 4
    assert rng.bounds == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0)]
    backoffs = [s for s in t.sleeps if s not in (0.25,)]
    assert all(0 <= s <= 2.0 for s in backoffs)


def test_5xx_gives_up_after_the_configured_retries() -> None:
    t = FakeTime()
    script = Script(t, status(503))
    client, _ = client_for(script, retries=2)
    with pytest.raises(OmetriaServerError) as caught:
        client.push("product", [product(1)])
    assert len(script.requests) == 3 and caught.value.attempts == 3
    assert isinstance(caught.value, ExternalSystemError) and caught.value.exit_code == EXIT_EXTERNAL
    assert "POST /push (1 product records): HTTP 503" in str(caught.value)


def test_jitter_is_capped_however_many_retries() -> None:
    t = FakeTime()
    script = Script(t, status(500))
    client, rng = client_for(script, retries=10)
    with pytest.raises(OmetriaServerError):
        client.push("product", [product(1)])
    assert max(b for _, b in rng.bounds) == 30.0 and all(a == 0.0 for a, _ in rng.bounds)


@pytest.mark.parametrize("exc,kind", [
    (httpx.ReadTimeout("slow"), OmetriaTimeoutError),
    (httpx.ConnectError("refused"), OmetriaConnectionError),
    (httpx.RemoteProtocolError("dropped"), OmetriaConnectionError),
])
def test_timeouts_and_connection_errors_are_retried_then_typed(exc, kind) -> None:
    t = FakeTime()
    script = Script(t, exc, ok(1))
    client, _ = client_for(script)
    assert client.push("product", [product(1)]).attempts == 2
    script = Script(t, exc)
    client, _ = client_for(script, retries=1)
    with pytest.raises(kind) as caught:
        client.get_product("P1")
    assert len(script.requests) == 2 and caught.value.__cause__ is None


def test_429_honours_retry_after_through_the_limiter() -> None:
    t = FakeTime()
    script = Script(t, status(429, {"Retry-After": "3"}), ok(1), ok(1))
    client, rng = client_for(script, push_rate=4)
    client.push("product", [product(1)])
    assert script.times[1] - script.times[0] >= 3.0
    client.push("product", [product(2)])  # the whole client was held back, not only that thread
    assert script.times[2] - script.times[1] >= 0.25 - 1e-9
    assert rng.bounds == []  # a 429 is not a failure: no jittered retry, no retry budget used


def test_429_without_retry_after_backs_off_exponentially_then_gives_up() -> None:
    t = FakeTime()
    script = Script(t, status(429))
    client, _ = client_for(script, retries=0)
    with pytest.raises(OmetriaRateLimitedError) as caught:
        client.push("product", [product(1)])
    assert len(script.requests) == client.max_throttled + 1 == 11
    gaps = [b - a for a, b in zip(script.times, script.times[1:])]
    assert gaps[:4] == pytest.approx([0.5, 1.0, 2.0, 4.0]) and max(gaps) <= 30.0 + 1e-9
    assert caught.value.exit_code == EXIT_EXTERNAL


def test_a_low_queue_pauses_pushes() -> None:
    t = FakeTime()
    script = Script(t, ok(1, headers={"X-QueueSize-Limit": "50000", "X-QueueSize-Remaining": "1200"}), ok(1))
    client, _ = client_for(script, push_rate=8)
    first = client.push("product", [product(1)])
    assert (first.queue_limit, first.queue_remaining) == (50000, 1200)
    client.push("product", [product(2)])
    assert script.times[1] - script.times[0] >= 2.0


def test_403_is_immediate_and_says_the_key_is_not_authorised() -> None:
    t = FakeTime()
    script = Script(t, status(403, body=b'{"status":"ERROR","error":"Forbidden"}'))
    client, _ = client_for(script)
    with pytest.raises(OmetriaAuthError) as caught:
        client.push("product", [product(1)])
    assert len(script.requests) == 1
    assert "key not authorised" in str(caught.value) and caught.value.exit_code == EXIT_EXTERNAL


def test_400_names_the_request_and_is_not_retried() -> None:
    t = FakeTime()
    body = json.dumps({"status": "ERROR", "error": "Invalid body: records of more than one @type"}).encode()
    script = Script(t, status(400, body=body))
    client, _ = client_for(script)
    with pytest.raises(OmetriaRequestError) as caught:
        client.push("product", [product(1), product(2)])
    assert len(script.requests) == 1 and caught.value.status == 400
    assert str(caught.value) == ("Ometria POST /push (2 product records): HTTP 400: "
                                 "Invalid body: records of more than one @type")


def test_the_key_appears_in_no_error_and_no_repr() -> None:
    t = FakeTime()
    echo = f'{{"error": "bad key {KEY} for account"}}'.encode()
    for step, kind in [(status(500, body=echo), OmetriaServerError), (status(400, body=echo), OmetriaRequestError),
                       (status(403, body=echo), OmetriaAuthError), (httpx.ConnectError(f"proxy said {KEY}"),
                                                                    OmetriaConnectionError),
                       (status(200, body=KEY.encode()), OmetriaBadResponseError)]:
        client, _ = client_for(Script(t, step), retries=0)
        with pytest.raises(kind) as caught:
            client.push("product", [product(1)])
        text = str(caught.value) + repr(caught.value) + repr(client)
        assert KEY not in text, text
        assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_a_key_echoed_across_the_cut_leaves_no_piece_behind() -> None:
    # Issue 11.9: the body is cut to 200 characters; a key straddling the cut must not show
    # all but its last characters, nor may a long fragment of it quoted elsewhere.
    t = FakeTime()
    padding = "x" * (200 - len(KEY) + 1)
    for body in (json.dumps({"error": padding + KEY}), padding + KEY, f"near {KEY[2:12]} and {KEY[-9:]}"):
        client, _ = client_for(Script(t, status(400, body=body.encode())), retries=0)
        with pytest.raises(OmetriaRequestError) as caught:
            client.push("product", [product(1)])
        text = str(caught.value)
        assert not any(KEY[i:i + 8] in text for i in range(len(KEY) - 7)), text
        assert "***" in text


def test_an_unreadable_push_answer_is_typed() -> None:
    t = FakeTime()
    client, _ = client_for(Script(t, httpx.Response(200, json={"status": "ERROR"})))
    with pytest.raises(OmetriaBadResponseError):
        client.push("product", [product(1)])


# -- reads -----------------------------------------------------------------------------------

def test_reads_take_read_tokens_page_by_250_and_keep_decimals() -> None:
    t = FakeTime()
    pages = {0: [{"id": f"P{i}", "price": 0.1} for i in range(PAGE_SIZE)], PAGE_SIZE: [{"id": "last", "price": 19.99}]}

    def answer(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        assert params["limit"] == "250" and params["includeVariants"] == "true"
        return httpx.Response(200, content=json.dumps(pages[int(params["offset"])]).encode())

    script = Script(t, answer)
    client, _ = client_for(script, read_rate=4)
    items = list(client.iter_products())
    assert len(items) == PAGE_SIZE + 1 and items[-1]["price"] == Decimal("19.99")
    assert isinstance(items[0]["price"], Decimal) and items[0]["price"] == Decimal("0.1")
    assert client.read_bucket.acquired == 2 and client.push_bucket.acquired == 0
    assert script.times[1] - script.times[0] >= 0.25 - 1e-9


def test_get_one_is_none_when_absent_and_paths_are_escaped() -> None:
    t = FakeTime()
    script = Script(t, status(404, body=b'{"status":"ERROR","error":"Not Found"}'),
                    httpx.Response(200, json={"id": "A/B", "@collection": "khaos"}))
    client, _ = client_for(script)
    assert client.get_order("O 1") is None
    assert client.get_contact("khaos", "A/B") == {"id": "A/B", "@collection": "khaos"}
    assert script.requests[0].url.raw_path == b"/v2/orders/O%201"
    assert script.requests[1].url.raw_path == b"/v2/contacts/khaos/A%2FB"


def test_push_errors_parse_the_documented_and_assumed_fields() -> None:
    t = FakeTime()
    entries = [{"error_message": "Invalid email address", "error_path": "root > email", "request_id": "r1",
                "record_type": "contact", "record_id": "C1", "timestamp": "2026-10-01T09:00:00Z"},
               {"error_message": "Missing required field", "error_path": "root > id"}]
    client, _ = client_for(Script(t, httpx.Response(200, json=entries)))
    assert client.push_errors() == [
        PushError("Invalid email address", "root > email", "r1", "contact", "C1", "2026-10-01T09:00:00Z"),
        PushError("Missing required field", "root > id"),
    ]


def test_unsubscribes_send_the_documented_zoneless_utc_form_and_profiles_an_email() -> None:
    t = FakeTime()
    script = Script(t, httpx.Response(200, json=[]), httpx.Response(200, json=[{"id": "p1"}]))
    client, _ = client_for(script)
    since = datetime(2026, 10, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))  # 00:00 UTC
    assert client.unsubscribes(since, before=datetime(2026, 10, 2, tzinfo=timezone.utc)) == []
    assert dict(script.requests[0].url.params) == {"since": "2026-10-01T00:00:00", "before": "2026-10-02T00:00:00"}
    assert client.profile_by_email("a@example.com") == {"id": "p1"}
    assert dict(script.requests[1].url.params)["email"] == "a@example.com"


# -- cassettes: recorded once against the emulator, replayed without it ----------------------------

CASSETTES = Path(__file__).parent / "cassettes"
RECORDING = os.environ.get("KHAOSYNC_RECORD") == "1"
CASSETTE_BASE = "https://ometria.sandbox.test/ometria/v2"
CASSETTE_KEY = "cassette-key-7f3a"

cassette_vcr = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="once" if RECORDING else "none",
    match_on=("method", "scheme", "host", "port", "path", "query", "body"),
    filter_headers=["x-ometria-auth", "authorization", "cookie"],
    decode_compressed_response=True,
)


def _no_emulator(environ: dict, start_response: Callable) -> list[bytes]:
    raise AssertionError("replay reached the transport: the cassette does not hold this request")


@pytest.fixture
def recorded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., OmetriaClient]]:
    """A client factory inside this test's cassette; the emulator is there only when recording."""
    name = f"{request.node.name}.yaml"
    if RECORDING:
        (CASSETTES / name).unlink(missing_ok=True)
        from khaosync.sandbox.ometria_emulator import OmetriaEmulator

        app = OmetriaEmulator(tmp_path / "ometria.db", CASSETTE_KEY)
    else:
        app = _no_emulator
    clients: list[OmetriaClient] = []

    def make(key: str = CASSETTE_KEY) -> OmetriaClient:
        settings = OmetriaSettings(base_url=CASSETTE_BASE, api_key=SecretStr(key), retries=0, push_rate=100,
                                   read_rate=100)
        client = OmetriaClient(settings, transport=httpx.WSGITransport(app=app), sleep=lambda s: None)
        clients.append(client)
        return client

    with cassette_vcr.use_cassette(name):
        yield make
    for client in clients:
        client.close()


def test_cassette_push_and_read_back(recorded: Callable[..., OmetriaClient]) -> None:
    client = recorded()
    answer = client.push("product", [product(1, price=Decimal("12.50")), product(2)])
    assert (answer.accepted, answer.rejected) == (2, 0) and answer.request_id
    assert answer.queue_limit == 50000
    stored = client.get_product("P1")
    assert stored is not None and stored["price"] == Decimal("12.50") and stored["title"] == "Mug 1"
    assert [p["id"] for p in client.iter_products()] == ["P1", "P2"]
    assert client.get_product("P404") is None
    contact = wire.dumps({"@type": "contact", "@collection": "khaos", "id": "C1", "email": "c1@example.com"})
    assert client.push("contact", [("C1", contact)]).accepted == 1
    assert client.get_contact("khaos", "C1")["email"] == "c1@example.com"
    assert client.collections() == [{"collection": "khaos", "count": 1}]


def test_cassette_rejections_reach_the_error_log(recorded: Callable[..., OmetriaClient]) -> None:
    client = recorded()
    answer = client.push("product", [product(1), product(2, price="9.99")])
    assert (answer.accepted, answer.rejected) == (1, 1)
    [entry] = [e for e in client.push_errors() if e.request_id == answer.request_id]
    assert (entry.record_id, entry.record_type, entry.error_path) == ("P2", "product", "root > price")
    order = wire.dumps({"@type": "order", "id": "O1", "timestamp": "2026-10-01T09:12:00Z", "currency": "GBP",
                        "grand_total": Decimal("9.99"), "lineitems": [{"product_id": "P404", "quantity": 1}]})
    late = client.push("order", [("O1", order)])
    assert (late.accepted, late.rejected) == (1, 0)  # accepted now, refused when processed
    [later] = [e for e in client.push_errors() if e.request_id == late.request_id]
    assert later.record_id == "O1" and "product does not exist" in later.error_message
    assert client.get_order("O1") is None


def test_cassette_wrong_key(recorded: Callable[..., OmetriaClient]) -> None:
    with pytest.raises(OmetriaAuthError) as caught:
        recorded(key="revoked-key-123").push("product", [product(1)])
    assert "revoked-key-123" not in str(caught.value)


def test_cassettes_hold_no_key() -> None:
    files = sorted(CASSETTES.glob("*.yaml"))
    assert len(files) >= 3, "cassettes missing: record them with KHAOSYNC_RECORD=1"
    text = "".join(f.read_text(encoding="utf-8") for f in files)
    assert CASSETTE_KEY not in text and "revoked-key-123" not in text
    for f in files:
        for interaction in yaml.safe_load(f.read_text(encoding="utf-8"))["interactions"]:
            assert "x-ometria-auth" not in {name.lower() for name in interaction["request"]["headers"]}


@pytest.mark.skipif(RECORDING, reason="only meaningful when replaying")
def test_replay_refuses_requests_the_cassette_does_not_hold() -> None:
    from vcr.errors import CannotOverwriteExistingCassetteException

    settings = OmetriaSettings(base_url=CASSETTE_BASE, api_key=SecretStr(CASSETTE_KEY), retries=0)
    client = OmetriaClient(settings, transport=httpx.WSGITransport(app=_no_emulator))
    with cassette_vcr.use_cassette("test_cassette_wrong_key.yaml"), \
            pytest.raises(CannotOverwriteExistingCassetteException):
        client.push("product", [product(99)])
