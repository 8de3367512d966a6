"""The unsubscribe reader: windows by since/before, splits answers that may be cut short,
and cannot loop, whatever the server does with its parameters."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest
from pydantic import SecretStr

from khaosync.config import OmetriaSettings
from khaosync.ometria.client import OmetriaClient
from khaosync.ometria.unsubscribes import UnsubscribesIncomplete, parse_timestamp, read_windows
from khaosync.sandbox.ometria_emulator import OmetriaEmulator

KEY = "sandbox-key"
BASE = "https://sandbox.khaosync.invalid/ometria/v2"
UTC = timezone.utc


def client(transport: httpx.BaseTransport, **settings) -> OmetriaClient:
    options = {"base_url": BASE, "api_key": SecretStr(KEY), "read_rate": 1000.0, "retries": 0, **settings}
    return OmetriaClient(OmetriaSettings(**options), transport=transport, sleep=lambda s: None)


def test_a_window_holding_more_than_the_servers_cap_is_split_until_every_event_is_read(tmp_path):
    emu = OmetriaEmulator(tmp_path / "o.db", KEY, read_rate=1000.0, unsubscribes_cap=3)
    start = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
    planted = []
    for n in range(20):  # 20 events, some in the same second, one exactly on the first split point
        at = start + timedelta(hours=5 * n) if n != 7 else start + timedelta(hours=5 * 6)
        emu.seed_unsubscribe(f"p{n}@example.com", at.isoformat())
        planted.append(f"p{n}@example.com")
    with client(httpx.WSGITransport(app=emu), unsubscribes_full_answer=3) as c:
        rows = c.unsubscribes(datetime(2026, 9, 1, tzinfo=UTC), before=datetime(2026, 9, 6, tzinfo=UTC))
    assert sorted(r["email_address"] for r in rows) == sorted(planted)
    assert len(rows) == 20  # once each, however the halves overlapped
    times = [parse_timestamp(r["timestamp"]) for r in rows]
    assert times == sorted(times) and times[0] == start


def test_a_server_that_ignores_since_and_before_is_read_once_not_looped():
    served = [{"email_address": f"p{n}@example.com", "profile_id": f"p{n}", "reason": None,
               "timestamp": f"2026-0{n % 9 + 1}-01 10:00:00+00", "type": "link_unsubscribe"} for n in range(5)]
    calls = []

    def ignores_everything(request: httpx.Request) -> httpx.Response:
        calls.append(dict(request.url.params))
        return httpx.Response(200, json=served)

    with client(httpx.MockTransport(ignores_everything), unsubscribes_full_answer=10) as c:
        rows = c.unsubscribes(datetime(2026, 3, 1, tzinfo=UTC), before=datetime(2026, 3, 2, tzinfo=UTC))
    assert len(calls) == 1 and len(rows) == 5  # kept (real events), not split, not repeated
    with client(httpx.MockTransport(ignores_everything), unsubscribes_full_answer=5) as c:
        with pytest.raises(UnsubscribesIncomplete, match="ignores since/before"):
            c.unsubscribes(datetime(2026, 3, 1, tzinfo=UTC), before=datetime(2026, 3, 2, tzinfo=UTC))
    assert len(calls) == 2


def test_a_server_that_answers_full_inside_every_window_stops_at_the_budget():
    calls = []

    def always_full(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        calls.append(params)
        return httpx.Response(200, json=[{"email_address": f"x{len(calls)}-{n}@example.com", "profile_id": "p",
                                          "reason": None, "timestamp": params["since"].replace("T", " ") + "+00",
                                          "type": "app"} for n in range(4)])

    with client(httpx.MockTransport(always_full), unsubscribes_full_answer=4, unsubscribes_max_requests=25) as c:
        with pytest.raises(UnsubscribesIncomplete) as raised:
            c.unsubscribes(datetime(2000, 1, 1, tzinfo=UTC), before=datetime(2026, 1, 1, tzinfo=UTC))
    assert len(calls) == 25
    assert raised.value.exit_code == 3
    assert all(set(p) == {"since", "before"} for p in calls)  # never limit/offset


def test_one_second_fuller_than_a_full_answer_cannot_be_narrowed():
    with pytest.raises(UnsubscribesIncomplete, match="one second holds more"):
        read_windows(lambda params: [{"email_address": f"{n}@x.com", "timestamp": "2026-01-01 00:00:00+00"}
                                     for n in range(3)],
                     datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC),
                     full_answer=3, max_requests=100)


@pytest.mark.parametrize("text, expected", [
    ("2017-05-17 22:08:07+00", datetime(2017, 5, 17, 22, 8, 7, tzinfo=UTC)),
    ("2017-05-17T23:08:07+01:00", datetime(2017, 5, 17, 22, 8, 7, tzinfo=UTC)),
    ("2017-05-17T22:08:07Z", datetime(2017, 5, 17, 22, 8, 7, tzinfo=UTC)),
    ("2017-05-17 22:08:07", datetime(2017, 5, 17, 22, 8, 7, tzinfo=UTC)),
    ("yesterday", None), (None, None), ("", None),
])
def test_ometria_unsubscribe_timestamps(text, expected):
    assert parse_timestamp(text) == expected
