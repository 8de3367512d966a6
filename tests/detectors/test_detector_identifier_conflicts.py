"""Identifier conflicts: exactly the shared emails the generator planted, and emails Ometria holds
under another contact (--live)."""

from diff_fixtures import client, emulator, profile_for, push

from khaosync.detectors import run_detectors
from khaosync.sandbox.generator import load_manifest
from khaosync.store import open_store

TYPE = "identifier_conflict"


def planted_groups(root) -> set[frozenset[str]]:
    return {frozenset(f"contact:{c['contact_id']}" for c in entry["contacts"])
            for entry in load_manifest(root / "sandbox")["faults"]["shared_email"]}


def findings(store, profile, **kwargs):
    return [f for f in run_detectors(store, profile, scope={"contact"}, **kwargs) if f.type == TYPE]


def test_every_planted_shared_email_and_nothing_else_from_the_erp_alone(erp_only):
    profile = profile_for(erp_only)
    with open_store(profile.state) as store:
        found = findings(store, profile)
        assert {frozenset(f.records) for f in found} == planted_groups(erp_only)
        assert all(f.entity == "contact" and f.severity == "warn" and f.owner == "crm" and f.stage == "diff"
                   for f in found)
        assert all(f.detail["email"] in f.reason for f in found)
        # the register holds one row per email, open, stage diff
        rows = store.exceptions(open_only=True, type=TYPE)
        assert {frozenset(r.records) for r in rows} == planted_groups(erp_only)


def test_a_conflict_map_already_raised_is_not_recorded_twice(world):
    profile = profile_for(world)
    with open_store(profile.state) as store:
        found = findings(store, profile)
        assert {frozenset(f.records) for f in found} == planted_groups(world)
        # map (issue 4) raised the same finding: the detector points at map's open row
        assert {f.stage for f in found} == {"map"}
        assert len(store.exceptions(open_only=True, type=TYPE)) == len(found)


def test_live_an_email_ometria_holds_on_another_contact(world):
    profile = profile_for(world)
    emu = emulator(world)
    with open_store(profile.state) as store:
        push(store, profile, emu)
        clean = findings(store, profile, live_client=client(profile, emu))
        assert [f.entity for f in clean] == ["contact"] * len(planted_groups(world))  # no Ometria-side conflict
        ours = store.conn.execute(
            "SELECT id, json_extract(CAST(body AS TEXT), '$.email') FROM outbound_record WHERE type = 'contact' "
            "AND state = 'ready' AND json_extract(CAST(body AS TEXT), '$.email') IS NOT NULL ORDER BY id").fetchone()
        emu.seed_record("contact", {"@collection": "web", "id": "w-1", "email": ours[1].upper()})
        live = [f for f in findings(store, profile, live_client=client(profile, emu), owners={TYPE: "crm-team"})
                if f.entity == "ometria_contact"]
        assert [(f.records, f.owner, f.key) for f in live] == [
            ((f"contact:{ours[0]}", "ometria_contact:web/w-1"), "crm-team", ours[0])]
        [row] = [r for r in store.exceptions(open_only=True, type=TYPE) if "ometria_contact:web/w-1" in r.records]

        # a run without --live cannot see it, so it does not close it
        findings(store, profile)
        assert [r.id for r in store.exceptions(open_only=True, type=TYPE)].count(row.id) == 1
        # gone from Ometria: the next live run closes it
        emu.tamper("contact", "w-1", {"email": "someone.else@example.org"}, collection="web")
        findings(store, profile, live_client=client(profile, emu))
        assert row.id not in [r.id for r in store.exceptions(open_only=True, type=TYPE)]
