"""Consent gaps (--live): KC opted in, Ometria unsubscribed, exactly as planted; and the reverse."""

from diff_fixtures import client, emulator, profile_for, push

from khaosync.detectors import run_detectors
from khaosync.sandbox.generator import load_manifest
from khaosync.store import open_store

TYPE = "consent_gap"


def gaps(store, profile, emu):
    return {f.key: f for f in run_detectors(store, profile, live_client=client(profile, emu), scope={"contact"})
            if f.type == TYPE}


def test_unsubscribed_in_ometria_opted_in_in_kc_before_and_after_our_push(world):
    profile = profile_for(world)
    emu = emulator(world)
    planted = {str(e["contact_id"]): e for e in load_manifest(world / "sandbox")["faults"]["ometria_unsubscribed"]}
    with open_store(profile.state) as store:
        assert not [f for f in run_detectors(store, profile, scope={"contact"}) if f.type == TYPE]  # needs --live
        before = gaps(store, profile, emu)
        assert set(before) == set(planted)
        for key, found in before.items():
            assert found.records == (f"contact:{key}",)
            assert (found.detail["erp"], found.detail["ometria"], found.detail["source"]) == (
                "EXPLICITLY_OPTEDIN", "EXPLICITLY_OPTEDOUT", "unsubscribed in Ometria")
            assert found.detail["email"] == planted[key]["email"].lower()
            assert found.detail["newer"] in ("ometria", "erp", "unknown") and found.owner == "crm"
        push(store, profile, emu)
        assert set(gaps(store, profile, emu)) == set(planted)  # our opt-in did not lift Ometria's opt-out


def test_opted_out_in_kc_but_opted_in_on_ometrias_contact(world):
    profile = profile_for(world)
    emu = emulator(world)
    with open_store(profile.state) as store:
        push(store, profile, emu)
        opted_out = store.conn.execute(
            "SELECT id FROM outbound_record WHERE type = 'contact' AND json_extract(CAST(body AS TEXT), "
            "'$.marketing_optin') = 'EXPLICITLY_OPTEDOUT' ORDER BY id LIMIT 1").fetchone()[0]
        emu.tamper("contact", opted_out, {"marketing_optin": "EXPLICITLY_OPTEDIN"})
        found = gaps(store, profile, emu)[opted_out]
    assert (found.detail["erp"], found.detail["ometria"], found.detail["source"]) == (
        "EXPLICITLY_OPTEDOUT", "EXPLICITLY_OPTEDIN", "Ometria's contact")
    assert "opted out in KC, opted in in Ometria" in found.reason
