"""sync's diffs run the detectors once for all types, with the findings per type a diff of each
type alone gives."""

import shutil
from pathlib import Path

import httpx
import pytest

from khaosync import detectors
from khaosync.config import sandbox_profile
from khaosync.khaos.soap import KhaosClient
from khaosync.sandbox.server import SandboxApp
from khaosync.stages import diff as diff_stage
from khaosync.stages.diff import diff_all, diff_records
from khaosync.stages.map import map_records
from khaosync.stages.pull import FileSource, SoapSource, pull
from khaosync.store import open_store

KEY = "sandbox-key"


@pytest.fixture(scope="module")
def mapped(planted, tmp_path_factory) -> Path:
    state = tmp_path_factory.mktemp("mapped") / "state.db"
    profile = sandbox_profile(state=str(state), sandbox_path=str(planted))
    client = KhaosClient(profile.khaos, transport=httpx.WSGITransport(app=SandboxApp(planted, KEY)))
    with open_store(state) as store:
        pull(store, profile, SoapSource(client, profile, FileSource(planted / "exports")))
        map_records(store, profile)
    return state


def _findings(results) -> dict[str, list[tuple]]:
    return {r.type: [(f.type, f.entity, f.key, tuple(f.records), f.reason, f.check, f.severity, f.stage)
                     for f in r.findings] for r in results}


def _open(state: Path) -> set[tuple]:
    with open_store(state, write=False) as store:
        return set(store.conn.execute("SELECT type, stage, entity, record_key, records, reason FROM exception"
                                      " WHERE resolved_at IS NULL"))


def test_one_detector_pass_gives_each_type_the_findings_of_its_own_pass(mapped, tmp_path, monkeypatch):
    once, each = tmp_path / "once.db", tmp_path / "each.db"
    shutil.copyfile(mapped, once)
    shutil.copyfile(mapped, each)
    calls = []
    real = diff_stage.run_detectors
    monkeypatch.setattr(diff_stage, "run_detectors", lambda *a, **k: calls.append(k["scope"]) or real(*a, **k))
    entities = ["products", "contacts", "orders"]
    with open_store(once) as store:
        run = store.start_run("sync", "sandbox")
        together = diff_all(store, sandbox_profile(state=str(once)), entities, run_id=run)
    assert calls == [{"product", "contact", "order"}]
    calls.clear()
    with open_store(each) as store:
        run = store.start_run("sync", "sandbox")
        alone = [diff_records(store, sandbox_profile(state=str(each)), e, run_id=run) for e in entities]
    assert len(calls) == 3
    assert _findings(together) == _findings(alone)
    assert sum(len(f) for f in _findings(together).values()) > 0
    assert [r.counts for r in together] == [r.counts for r in alone]
    assert _open(once) == _open(each)
    assert detectors.selected_checks(live=False, scope={"product"})  # the scopes the split follows exist
