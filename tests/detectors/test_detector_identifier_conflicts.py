"""Identifier conflicts: exactly the shared emails the generator planted, and emails Ometria holds
under another contact (--live)."""

import pytest
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


def _restage(conn, run_id: int, doc: dict) -> None:
    import hashlib
    import json

    from khaosync.store import staging

    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    staging.stage(conn, entity="company", key=str(doc["company_id"]), raw=text.encode(), parsed=text,
                  content_hash=hashlib.sha256(text.encode()).hexdigest(), run_id=run_id,
                  seen_at="2030-01-01T00:00:00.000000+00:00")


def _open_conflicts(state) -> set[tuple]:
    with open_store(state, write=False) as store:
        return set(store.conn.execute("SELECT entity, record_key, records, reason, detail FROM exception "
                                      "WHERE resolved_at IS NULL AND type = ?", (TYPE,)))


@pytest.mark.parametrize("mapped", [False, True], ids=["index-behind", "index-current"])
def test_a_nightly_pass_over_changed_companies_finds_what_a_whole_pass_does(erp_only, tmp_path, mapped):
    """Emails taken from unchanged companies, planted groups broken up, web logins: the nightly
    answer (only the emails the changed companies hold or held) leaves the register as a whole
    pass does: found through the contact index when a map has brought it up to staging (as in
    sync), by the whole pass when it is behind."""
    import random
    import shutil

    from khaosync.store import staging

    profile = profile_for(erp_only)
    with open_store(profile.state) as store:
        findings(store, profile)  # the register as the last sync left it
    for seed in range(8):
        rng = random.Random(seed)
        nightly, whole = tmp_path / f"nightly-{seed}.db", tmp_path / f"whole-{seed}.db"
        shutil.copyfile(profile.state, nightly)
        with open_store(nightly) as store:
            conn = store.conn
            keys = [k for (k,) in conn.execute("SELECT key FROM staged_record WHERE entity = 'company' AND current = 1"
                                               " AND parsed IS NOT NULL ORDER BY key")]
            shared = sorted({r.split(":")[1] for g in planted_groups(erp_only) for r in g})
            run_id = store.start_run("pull", "test")
            changed = set()
            with store.transaction():
                for _ in range(rng.randint(1, 4)):
                    doc = staging.current(conn, "company", rng.choice(keys)).parsed
                    other = staging.current(conn, "company", rng.choice(keys)).parsed
                    kind = rng.choice(["take", "fresh", "web", "fresh_shared"])
                    if kind == "fresh_shared":  # a planted holder leaves its group
                        holder = rng.choice(shared)
                        doc = next(staging.current(conn, "company", k).parsed for k in keys
                                   if any(str(c["contact_id"]) == holder for c in
                                          staging.current(conn, "company", k).parsed.get("contacts") or []))
                    if not doc.get("contacts") or not other.get("contacts"):
                        continue
                    if kind == "take":
                        doc["contacts"][0]["email"] = " " + other["contacts"][0]["email"].upper()
                    elif kind == "web":
                        doc["web_user"] = other["contacts"][-1]["email"]
                    elif kind == "fresh":
                        doc["contacts"][0]["email"] = f"someone.new{seed}@example.org"
                    else:
                        for contact in doc["contacts"]:
                            if str(contact["contact_id"]) == holder:
                                contact["email"] = f"left.the.group{seed}@example.org"
                    _restage(conn, run_id, doc)
                    changed.add(str(doc["company_id"]))
            store.finish_run(run_id, "ok", {})
            if mapped:
                from khaosync.stages.map import map_records

                map_records(store, profile, entities=["contacts"], incremental=True)
        shutil.copyfile(nightly, whole)
        with open_store(nightly) as store:
            run_detectors(store, profile, scope={"contact"}, changed={"company": changed})
        with open_store(whole) as store:
            run_detectors(store, profile, scope={"contact"})
        assert _open_conflicts(nightly) == _open_conflicts(whole), (seed, changed)
