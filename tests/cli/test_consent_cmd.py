"""``khaosync consent diff|push``: exit codes, the --json contracts, and what reaches KC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from khaosync.cli.app import app
from khaosync.sandbox.generator import load_manifest
from khaosync.sandbox.lifecycle import init_sandbox
from khaosync.sandbox.ometria_emulator import OmetriaEmulator
from khaosync.sandbox.world import World

KEY = "sandbox-key"


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("consent-cli") / "sandbox"
    init_sandbox(folder, api_key=KEY, seed=11, customers=80, orders=400)
    return folder


@pytest.fixture
def workspace(planted, tmp_path, monkeypatch) -> Path:
    """The default sandbox profile's folder (./.khaosync/sandbox), customers pulled."""
    import shutil

    monkeypatch.chdir(tmp_path)
    sandbox = tmp_path / ".khaosync" / "sandbox"
    shutil.copytree(planted, sandbox)
    assert invoke("pull", "--entity", "customers").exit_code in (0, 1)
    return sandbox


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def subscribed(sandbox: Path, company_id: int, contact_id: int):
    world = World(sandbox, create=False)
    try:
        return next(c["email_subscribe"] for c in world.get("company", company_id)["contacts"]
                    if c["contact_id"] == contact_id)
    finally:
        world.close()


def test_diff_then_push_writes_the_planted_opt_out_to_kc(workspace):
    planted = load_manifest(workspace)["faults"]["ometria_unsubscribed"]
    diff = invoke("consent", "diff", "--json")
    assert diff.exit_code == 0, diff.stderr
    data = json.loads(diff.stdout)
    assert {"sandbox", "read", "counts", "planned", "conflicts", "rows"} <= set(data)
    assert data["planned"] == len(planted) and data["conflicts"] == 0
    rows = {r["contact_id"]: r for r in data["rows"] if r["action"] == "opt_out_in_kc"}
    assert set(rows) == {str(p["contact_id"]) for p in planted}
    for p in planted:
        row = rows[str(p["contact_id"])]
        assert (row["kc"], row["ometria"], row["email"]) == ("EXPLICITLY_OPTEDIN", "EXPLICITLY_OPTEDOUT",
                                                             p["email"].lower())
        assert row["ometria_source"].startswith("unsubscribes:") and row["ometria_at"].endswith("Z")
    dry = invoke("consent", "push")
    assert dry.exit_code == 0 and "dry run, nothing sent" in dry.stdout
    assert "nothing was sent; to write it: khaosync consent push --commit" in dry.stderr
    assert all(subscribed(workspace, p["company_id"], p["contact_id"]) is True for p in planted)
    pushed = invoke("consent", "push", "--commit", "--json")
    assert pushed.exit_code == 0, pushed.stderr
    result = json.loads(pushed.stdout)
    assert (result["committed"], result["done"], result["failed"], result["imports"]) == (True, len(planted), 0, 1)
    assert all(subscribed(workspace, p["company_id"], p["contact_id"]) is False for p in planted)
    again = json.loads(invoke("consent", "push", "--commit", "--json").stdout)
    assert (again["planned"], again["imports"]) == (0, 0)


def test_a_shared_email_with_different_consent_is_a_conflict_for_crm_and_exits_1(workspace):
    shared = load_manifest(workspace)["faults"]["shared_email"][0]
    world = World(workspace, create=False)
    for n, member in enumerate(shared["contacts"]):
        doc = world.get("company", member["company_id"])
        for contact in doc["contacts"]:
            if contact["contact_id"] == member["contact_id"]:
                contact["email_subscribe"] = n == 0  # opted in on one, opted out on the other
        doc["updated"] = world.clock
        world.put("company", doc)
    world.close()
    assert invoke("pull", "--entity", "customers").exit_code in (0, 1)
    OmetriaEmulator(workspace / "ometria.db", KEY).seed_unsubscribe(shared["email"], "2026-11-01T10:00:00Z",
                                                                    type="list_unsubscribe")
    diff = invoke("consent", "diff")
    assert diff.exit_code == 1
    assert "conflict" in diff.stdout and "consent:" in diff.stderr
    listed = json.loads(invoke("exceptions", "list", "--json", "--open").stdout)
    conflicts = [e for e in listed["exceptions"] if e["stage"] == "consent"] if isinstance(listed, dict) else \
        [e for e in listed if e["stage"] == "consent"]
    assert {e["owner"] for e in conflicts} == {"crm"} and {e["type"] for e in conflicts} == {"consent_gap"}
    assert len(conflicts) == 1  # the contact whose KC consent differs from Ometria's; the other agrees
    push = json.loads(invoke("consent", "push", "--commit", "--json").stdout)
    assert push["planned"] == len(load_manifest(workspace)["faults"]["ometria_unsubscribed"])  # not the shared one
