"""A planted sandbox merchant, pulled and mapped, and a stand-in for push: shared by the detector,
diff stage and diff CLI tests.

Push (issue 6) is simulated the simplest way that keeps the ledger honest: the outbound bodies
go to the Ometria emulator with plain httpx (the emulator validates them as strictly as Ometria
would), its queue is processed, and each accepted body becomes a ledger row.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import httpx

from khaosync.config import Profile, sandbox_profile
from khaosync.khaos.soap import KhaosClient
from khaosync.ometria import wire
from khaosync.ometria.client import OmetriaClient
from khaosync.sandbox.lifecycle import init_sandbox
from khaosync.sandbox.ometria_emulator import OmetriaEmulator
from khaosync.sandbox.server import OMETRIA_DB, SandboxApp
from khaosync.stages.pull import FileSource, SoapSource, pull
from khaosync.store import open_store

KEY = "sandbox-key"
FAST = 10_000.0  # requests/s: tests must not wait on the emulator's real rate limits
SIZE = {"seed": 11, "customers": 80, "orders": 400}


def plant(root: Path, *, mapped: bool = True) -> Path:
    """``root/sandbox`` (a planted merchant) and ``root/state.db`` pulled (and mapped) from it."""
    folder = root / "sandbox"
    init_sandbox(folder, api_key=KEY, **SIZE)
    profile = profile_for(root)
    app = SandboxApp(folder, KEY)
    with open_store(profile.state) as store:
        pull(store, profile, SoapSource(KhaosClient(profile.khaos, transport=httpx.WSGITransport(app=app)), profile,
                                        FileSource(folder / "exports")))
        if mapped:
            from khaosync.stages.map import map_records

            map_records(store, profile)
    app.ometria.close()
    return root


def copy_planted(planted: Path, to: Path) -> Path:
    shutil.copytree(planted / "sandbox", to / "sandbox")
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        if (planted / name).exists():
            shutil.copy(planted / name, to / name)
    return to


def profile_for(root: Path) -> Profile:
    return sandbox_profile(state=str(root / "state.db"), sandbox_path=str(root / "sandbox"))


def emulator(root: Path) -> OmetriaEmulator:
    return OmetriaEmulator(root / "sandbox" / OMETRIA_DB, KEY, push_rate=FAST, read_rate=FAST)


def client(profile: Profile, emu: OmetriaEmulator) -> OmetriaClient:
    settings = profile.ometria.model_copy(update={"read_rate": FAST, "push_rate": FAST})
    return OmetriaClient(settings, transport=httpx.WSGITransport(app=emu))


def push(store, profile: Profile, emu: OmetriaEmulator, types=("product", "contact", "order"), *,
         transform: Callable[[str, dict], dict] | None = None, ids: set[str] | None = None) -> dict[str, int]:
    """Send the ready outbound records of ``types`` (optionally changed by ``transform``) to the
    emulator and write what it stored into the ledger. Returns how many per type."""
    http = httpx.Client(transport=httpx.WSGITransport(app=emu), base_url=profile.ometria.base_url,
                        headers={"X-Ometria-Auth": KEY, "Content-Type": "application/json"})
    sent: dict[str, int] = {}
    for type_ in types:
        rows = store.conn.execute("SELECT id, body FROM outbound_record WHERE type = ? AND state = 'ready' "
                                  "ORDER BY id", (type_,)).fetchall()
        bodies = []
        for id_, body in rows:
            if ids is not None and id_ not in ids:
                continue
            doc = wire.loads(bytes(body))
            bodies.append((id_, wire.dumps(transform(type_, doc) if transform else doc)))
        for start in range(0, len(bodies), 100):
            chunk = bodies[start:start + 100]
            answer = http.post("/push", content=wire.batch_body([b for _, b in chunk]))
            assert answer.status_code == 200 and answer.json()["rejected"] == 0, (
                answer.text, http.get("/push/_errors").json()[:3])
        emu.process_queue()
        with store.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO ledger(type, id, content_hash, body, accepted_at) VALUES (?, ?, ?, ?, ?)",
                [(type_, i, wire.content_hash(b), b, "2026-11-01T00:00:00+00:00") for i, b in bodies
                 if emu.get(type_, i) is not None])
        sent[type_] = len(bodies)
    http.close()
    return sent
