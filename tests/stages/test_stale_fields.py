"""A field khaosync stops sending never stays stale in Ometria unseen.

Ometria merges what it is sent into what it holds, so a coupon removed in the ERP would stay
on the Ometria order if khaosync just left the field out. Here a synced order loses its
keycode in the sandbox ERP, sync runs again, and the order is read back from the emulator:
with an Ometria that clears on a blank the coupon is gone; with one that keeps it (the
emulator's default, the harder reading of "may or may not") a ``stale_field`` exception is open,
and ``diff --live`` keeps showing it without planning the order again.
"""

from __future__ import annotations

import pytest

from khaosync.config import sandbox_profile
from khaosync.connect import Connections
from khaosync.ometria import wire
from khaosync.ometria.blanks import blanked, stale_paths, with_blanks
from khaosync.sandbox.ometria_emulator import OmetriaEmulator
from khaosync.sandbox.server import Faults, SandboxApp
from khaosync.sandbox.world import World
from khaosync.stages.diff import diff_records
from khaosync.stages.pull import FileSource, SoapSource
from khaosync.stages.sync import sync
from khaosync.store import open_store

KEY = "sandbox-key"


def sync_once(tmp_path, sandbox, blanks: str, verify: str):
    profile = sandbox_profile(state=str(tmp_path / "state.db"), sandbox_path=str(sandbox))
    # KC publishes no "orders changed since": an edit that leaves an order's totals alone (a
    # keycode removed) is seen only where the site asks for open orders again in full.
    profile = profile.model_copy(update={"pull": profile.pull.model_copy(update={"reexport_open_orders": True})})
    connections = Connections(profile)
    connections.sandbox_app = SandboxApp(sandbox, KEY, Faults(blanks=blanks))  # the emulator under test
    source = SoapSource(connections.khaos_client(), profile, FileSource(sandbox / "exports"))
    with open_store(profile.state) as store:
        result = sync(store, profile, source, connections.ometria_client(), since=None, commit=True,
                      verify=verify)
    connections.sandbox_app.ometria.close()
    return profile, result


def ometria_order(sandbox, order_id: str) -> dict:
    emu = OmetriaEmulator(sandbox / "ometria.db", KEY)
    try:
        emu.process_queue()
        return emu.get("order", order_id)
    finally:
        emu.close()


def drop_a_keycode(sandbox, tmp_path) -> str:
    """Remove the keycode of one synced order in the ERP (touched, so pull reads it again)."""
    with open_store(tmp_path / "state.db", write=False) as store:
        ours = {i for (i,) in store.conn.execute("SELECT id FROM ledger WHERE type = 'order'")}
    world = World(sandbox, create=False)
    try:
        # The most recent order: one pull asks about again (open, or within its look-back).
        for doc in sorted(world.iter("sales_order"), key=lambda d: d["order_date"] or "", reverse=True):
            if str(doc["sorder_id"]) in ours and doc["keycode_code"]:
                world.begin()
                world.put("sales_order", {**doc, "keycode_code": "", "updated": world.clock})
                world.commit()
                return str(doc["sorder_id"])
    finally:
        world.close()
    raise AssertionError("the planted sandbox has no synced order with a keycode")


@pytest.mark.parametrize("blanks", ["kept", "cleared"])
def test_a_coupon_removed_in_the_erp_is_cleared_or_an_exception_owns_it(tmp_path, sandbox, blanks):
    sync_once(tmp_path, sandbox, blanks, verify="none")
    order_id = drop_a_keycode(sandbox, tmp_path)
    coupon = ometria_order(sandbox, order_id)["coupon_code"]
    assert coupon

    profile, result = sync_once(tmp_path, sandbox, blanks, verify="sample")
    with open_store(profile.state) as store:
        sent = wire.loads(bytes(store.conn.execute(
            "SELECT body FROM ledger WHERE type = 'order' AND id = ?", (order_id,)).fetchone()[0]))
        stale = store.exceptions(open_only=True, type="stale_field")
    assert sent["coupon_code"] is None  # the blank went out, and Ometria accepted it
    held = ometria_order(sandbox, order_id)
    if blanks == "cleared":
        assert "coupon_code" not in held and stale == []
    else:
        assert held["coupon_code"] == coupon
        [finding] = stale
        assert (finding.record_key, finding.entity, finding.stage, finding.owner, finding.severity) == (
            order_id, "order", "push", "integration", "warn")
        assert "coupon_code" in finding.reason and result.as_dict()["exceptions"].get("stale_field") == 1

        # diff --live: shown as stale_field (the detector), not planned again (a blank would not clear it)
        connections = Connections(profile)
        connections.sandbox_app = SandboxApp(sandbox, KEY, Faults(blanks=blanks))
        with open_store(profile.state) as store, connections.ometria_client() as client:
            live = diff_records(store, profile, "orders", live_client=client)
        assert order_id not in {r.key for r in live.records}
        [seen] = [f for f in live.findings if f.type == "stale_field"]
        assert (seen.key, seen.detail) == (order_id, {"fields": ["coupon_code"]})


def test_blanks_follow_every_field_we_stop_sending_and_stay() -> None:
    accepted = {"@type": "order", "id": "O1", "coupon_code": "SAVE1", "status": "shipped",
                "properties": {"keycode": "K7", "tracking": [{"n": "T1"}]}, "customer": {"id": "C1"}}
    new = {"@type": "order", "id": "O1", "status": "complete", "properties": {"tracking": []}}
    sent = with_blanks(accepted, new)
    assert sent == {"@type": "order", "id": "O1", "status": "complete", "coupon_code": None, "customer": None,
                    "properties": {"tracking": [], "keycode": None}}
    assert blanked(accepted, new) == ["coupon_code", "properties.keycode", "customer"]
    assert with_blanks(sent, new) == sent and blanked(sent, new) == []  # once blanked, always blanked
    assert sorted(stale_paths(sent, {**accepted, "status": "complete"})) == [
        "coupon_code", "customer", "properties.keycode"]
    assert stale_paths(sent, {"id": "O1", "coupon_code": "", "properties": {}}) == []


def test_identity_and_consent_are_never_blanked() -> None:
    """A KC contact whose consent decision went blank must not erase Ometria's (an unsubscribe)."""
    accepted = {"@type": "contact", "@collection": "khaos", "id": "C1", "email": "a@example.com",
                "marketing_optin": "EXPLICITLY_OPTEDIN", "timestamp_subscribed": "2026-01-01T00:00:00Z",
                "firstname": "Ann"}
    new = {"@type": "contact", "@collection": "khaos", "id": "C1", "email": "a@example.com"}
    assert with_blanks(accepted, new) == {**new, "firstname": None}
    assert blanked(accepted, new) == ["firstname"]
