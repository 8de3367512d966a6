"""The consent back-flow through the sandbox: Ometria's opt-outs end up in the KC emulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from khaosync.config import sandbox_profile
from khaosync.connect import Connections
from khaosync.mapping.schema import load_mapping
from khaosync.sandbox.generator import load_manifest
from khaosync.sandbox.ometria_emulator import OmetriaEmulator
from khaosync.sandbox.world import World
from khaosync.stages.consent import consent_flow, diff_consent, push_consent, read_ometria_consent
from khaosync.stages.pull import FileSource, SoapSource, pull
from khaosync.store import open_store

KEY = "sandbox-key"


def profile_of(tmp_path: Path, sandbox: Path):
    return sandbox_profile(state=str(tmp_path / "state.db"), sandbox_path=str(sandbox))


def pulled(tmp_path: Path, sandbox: Path):
    profile = profile_of(tmp_path, sandbox)
    connections = Connections(profile)
    with open_store(profile.state) as store:
        pull(store, profile, SoapSource(connections.khaos_client(), profile, FileSource(sandbox / "exports")),
             entities=["customers"])
    return profile, connections


def kc_companies(sandbox: Path) -> dict[int, dict]:
    world = World(sandbox, create=False)
    try:
        return {doc["company_id"]: doc for doc in world.iter("company")}
    finally:
        world.close()


class CountingKhaos:
    """The real KC client, counting imports; ``die`` stops the run before or after KC applies one."""

    def __init__(self, client, die: str | None = None):
        self.client, self.die, self.imports = client, die, 0

    def import_company(self, companies_xml: str):
        if self.die == "before":
            raise KeyboardInterrupt("killed before sending")
        answer = self.client.import_company(companies_xml)
        self.imports += 1
        if self.die == "after":
            raise KeyboardInterrupt("killed before the answer was recorded")
        return answer

    def export_company(self, codes):
        return self.client.export_company(codes)


def run_flow(store, profile, connections, kc, *, commit=True):
    run_id = store.start_run("consent", profile.name)
    return consent_flow(store, profile, connections.ometria_client(), kc, run_id=run_id, commit=commit)


def test_every_planted_ometria_opt_out_reaches_kc_and_nothing_else_changes(tmp_path, sandbox):
    planted = load_manifest(sandbox)["faults"]["ometria_unsubscribed"]
    assert planted, "the sandbox plants Ometria-side unsubscribes"
    before = kc_companies(sandbox)
    profile, connections = pulled(tmp_path, sandbox)
    kc = CountingKhaos(connections.khaos_client())
    with open_store(profile.state) as store:
        dry = run_flow(store, profile, connections, kc, commit=False)
        assert dry.push.planned == len(planted) and kc.imports == 0
        assert kc_companies(sandbox) == before  # a dry run sends nothing
        done = run_flow(store, profile, connections, kc)
    assert dry.read.new_unsubscribes == len(planted) and done.read.new_unsubscribes == 0  # each kept once
    assert (done.push.done, done.push.failed, done.push.unwritable) == (len(planted), 0, [])
    after = kc_companies(sandbox)
    expected = {(e["company_id"], e["contact_id"]) for e in planted}
    for company_id, doc in after.items():
        old = before[company_id]
        for new_contact, old_contact in zip(doc["contacts"], old["contacts"]):
            if (company_id, new_contact["contact_id"]) in expected:
                assert new_contact["email_subscribe"] is False
            else:
                assert new_contact == old_contact
        touched = any((company_id, c["contact_id"]) in expected for c in doc["contacts"])
        changed = {k for k in doc if doc[k] != old[k]} - {"contacts"}
        assert changed <= ({"mailing_status", "updated"} if touched else set()), company_id
        if doc["mailing_status"] != old["mailing_status"]:
            # the mapping's "do not mail", only when no other contact with an email stays opted in
            assert doc["mailing_status"] == load_mapping(profile.mappings).consent.write_back_status()
            assert len([c for c in doc["contacts"] if c["email"]]) == 1


def test_a_second_run_and_a_later_pull_change_nothing(tmp_path, sandbox):
    profile, connections = pulled(tmp_path, sandbox)
    kc = CountingKhaos(connections.khaos_client())
    with open_store(profile.state) as store:
        first = run_flow(store, profile, connections, kc)
        assert first.push.done > 0
        imports = kc.imports
        again = run_flow(store, profile, connections, kc)
        assert (again.push.planned, kc.imports) == (0, imports)
        assert again.diff.counts.get("written") == first.push.done
        after_kc = kc_companies(sandbox)
        pull(store, profile, SoapSource(connections.khaos_client(), profile, None), entities=["customers"])
        later = run_flow(store, profile, connections, kc)
    assert (later.push.planned, kc.imports) == (0, imports)
    assert "opt_out_in_kc" not in later.diff.counts and "written" not in later.diff.counts
    assert kc_companies(sandbox) == after_kc


@pytest.mark.parametrize("die, resumed, resent", [("after", 1, 0), ("before", 0, 1)])
def test_a_kill_between_journal_and_answer_resumes_without_a_double_import(tmp_path, sandbox, die, resumed, resent):
    profile, connections = pulled(tmp_path, sandbox)
    dying = CountingKhaos(connections.khaos_client(), die=die)
    with open_store(profile.state) as store:
        run_id = store.start_run("consent", profile.name)
        read_ometria_consent(store, profile, connections.ometria_client(), run_id=run_id)
        planned = diff_consent(store, profile, run_id=run_id).planned
        with pytest.raises(KeyboardInterrupt):
            push_consent(store, profile, dying, commit=True, run_id=run_id)
        assert store.conn.execute("SELECT state FROM consent_batch").fetchall() == [("journaled",)]
        kc = CountingKhaos(connections.khaos_client())
        result = push_consent(store, profile, kc, commit=True, run_id=run_id)
    assert (result.resumed, result.resent, result.done) == (resumed, resent, planned)
    assert kc.imports == resent  # applied before the kill: confirmed from KC's own export, not imported again
    assert dying.imports + kc.imports == 1


def test_no_kc_match_is_listed_never_created_and_kc_opt_out_is_never_reopted(tmp_path, sandbox):
    emu = OmetriaEmulator(sandbox / "ometria.db", KEY)
    emu.seed_unsubscribe("nobody-in-kc@example.com", "2026-09-01T10:00:00Z", type="preferences_centre")
    before = kc_companies(sandbox)
    profile, connections = pulled(tmp_path, sandbox)
    with open_store(profile.state) as store:
        flow = run_flow(store, profile, connections, CountingKhaos(connections.khaos_client()))
    row = next(r for r in flow.diff.rows if r.email == "nobody-in-kc@example.com")
    assert (row.action, row.contact_id, row.ometria_source) == ("no_kc_match", None, "unsubscribes:preferences_centre")
    assert len(kc_companies(sandbox)) == len(before)
    assert all(r.kc != "EXPLICITLY_OPTEDOUT" for r in flow.diff.rows if r.action == "opt_out_in_kc")


# -- consent times khaosync keeps itself (KC keeps none) -----------------------------------------
def mapped_contact(store, contact_id: int) -> dict:
    import json

    body = store.conn.execute("SELECT body FROM outbound_record WHERE type = 'contact' AND id = ?",
                              (str(contact_id),)).fetchone()[0]
    return json.loads(bytes(body))


def test_a_kc_consent_change_is_sent_with_the_time_khaosync_first_saw_it_never_now(tmp_path, sandbox):
    from khaosync.stages.map import map_records

    profile, connections = pulled(tmp_path, sandbox)
    companies = kc_companies(sandbox)
    company = next(d for d in companies.values()
                   if d["mailing_status"] in (1, 2, 3) and d["contacts"] and d["contacts"][0]["email_subscribe"] is True
                   and d["contacts"][0]["email"])
    contact_id = company["contacts"][0]["contact_id"]
    source = SoapSource(connections.khaos_client(), profile, None)
    with open_store(profile.state) as store:
        map_records(store, profile, entities=["contacts"])
        first = mapped_contact(store, contact_id)
        # there since the first pull: dated by KC's own last change of the company (else its
        # creation, where the site exports no LAST_UPDATED), not by our pull
        assert first["marketing_optin"] == "EXPLICITLY_OPTEDIN"
        assert first["timestamp_subscribed"] == store.conn.execute(
            "SELECT coalesce(json_extract(parsed, '$.last_updated'), json_extract(parsed, '$.date_created')) "
            "FROM staged_record WHERE entity = 'company' AND key = ? AND current = 1",
            (str(company["company_id"]),)).fetchone()[0]
        assert first["timestamp_subscribed"] < store.conn.execute(
            "SELECT min(seen_at) FROM staged_record WHERE entity = 'company'").fetchone()[0]  # before our pull
        world = World(sandbox, create=False)
        company["contacts"][0]["email_subscribe"] = False
        company["updated"] = "2026-12-01T09:00:00"
        world.set_meta("clock", "2026-12-01T09:00:00")
        world.put("company", company)
        world.close()
        pull(store, profile, source, entities=["customers"])
        seen = store.conn.execute("SELECT seen_at FROM staged_record WHERE entity = 'company' AND key = ? AND "
                                  "current = 1", (str(company["company_id"]),)).fetchone()[0]
        map_records(store, profile, entities=["contacts"])
        changed = mapped_contact(store, contact_id)
        assert changed["marketing_optin"] == "EXPLICITLY_OPTEDOUT" and "timestamp_subscribed" not in changed
        assert changed["timestamp_unsubscribed"] == seen[:19] + "Z"  # when the change was first seen
        # a later, unrelated change in KC does not move the consent time
        world = World(sandbox, create=False)
        company["contacts"][0]["forename"] = "Renamed"
        company["updated"] = "2026-12-01T11:00:00"
        world.put("company", company)
        world.close()
        pull(store, profile, source, entities=["customers"])
        map_records(store, profile, entities=["contacts"])
        later = mapped_contact(store, contact_id)
    assert later["firstname"] == "Renamed" and later["timestamp_unsubscribed"] == changed["timestamp_unsubscribed"]


def test_map_never_sends_a_kc_opt_in_over_a_newer_ometria_opt_out(tmp_path, sandbox):
    from khaosync.stages.map import map_records

    planted = load_manifest(sandbox)["faults"]["ometria_unsubscribed"][0]
    profile, connections = pulled(tmp_path, sandbox)
    with open_store(profile.state) as store:
        map_records(store, profile, entities=["contacts"])
        assert mapped_contact(store, planted["contact_id"])["marketing_optin"] == "EXPLICITLY_OPTEDIN"  # KC's word
        run_id = store.start_run("consent", profile.name)
        read_ometria_consent(store, profile, connections.ometria_client(), run_id=run_id)
        map_records(store, profile, entities=["contacts"])
        body = mapped_contact(store, planted["contact_id"])
    assert "marketing_optin" not in body and "timestamp_subscribed" not in body


class FailingKhaos(CountingKhaos):
    def __init__(self, client, error):
        super().__init__(client)
        self.error = error

    def import_company(self, companies_xml: str):
        raise self.error


def test_kc_refusing_the_document_fails_it_and_no_answer_leaves_it_to_be_checked(tmp_path, sandbox):
    from khaosync.errors import EXIT_EXTERNAL
    from khaosync.khaos.errors import KhaosTimeoutError, SoapFaultError

    profile, connections = pulled(tmp_path, sandbox)
    with open_store(profile.state) as store:
        run_id = store.start_run("consent", profile.name)
        read_ometria_consent(store, profile, connections.ometria_client(), run_id=run_id)
        planned = diff_consent(store, profile, run_id=run_id).planned
        refusal = SoapFaultError("soap:Client", "ImportCompany: bad document", "ImportCompany")
        with pytest.raises(SoapFaultError) as raised:
            push_consent(store, profile, FailingKhaos(connections.khaos_client(), refusal), commit=True)
        assert raised.value.exit_code == EXIT_EXTERNAL
        assert store.conn.execute("SELECT state FROM consent_batch").fetchall() == [("failed",)]
        assert store.conn.execute("SELECT DISTINCT state FROM consent_change").fetchall() == [("failed",)]
        assert diff_consent(store, profile, run_id=run_id).planned == planned  # planned again
        with pytest.raises(KhaosTimeoutError):
            push_consent(store, profile, FailingKhaos(connections.khaos_client(),
                                                      KhaosTimeoutError("no answer", method="ImportCompany")),
                         commit=True)
        assert store.conn.execute("SELECT state FROM consent_batch ORDER BY id").fetchall() == [
            ("failed",), ("journaled",)]
        kc = CountingKhaos(connections.khaos_client())
        result = push_consent(store, profile, kc, commit=True)
    assert (result.resent, result.done, kc.imports) == (1, planned, 1)  # not applied: checked, then sent once


def test_a_contact_ometria_erased_is_recorded_and_never_sent_again(tmp_path, sandbox):
    import sqlite3

    from khaosync.stages.map import map_records
    from khaosync.stages.sync import sync
    from khaosync.store.outbound import iter_records

    profile = profile_of(tmp_path, sandbox)
    connections = Connections(profile)
    source = SoapSource(connections.khaos_client(), profile, FileSource(sandbox / "exports"))
    with open_store(profile.state) as store:
        sync(store, profile, source, connections.ometria_client(), since=None, entities=["contacts"], commit=True,
             verify="all")
        erased_id, anonymised_id = [i for (i,) in store.conn.execute(
            "SELECT id FROM ledger WHERE type = 'contact' AND verified_at IS NOT NULL AND "
            "json_extract(CAST(body AS TEXT), '$.email') IS NOT NULL ORDER BY id LIMIT 2")]
    emu = OmetriaEmulator(sandbox / "ometria.db", KEY)
    emu.process_queue()
    emu.close()
    db = sqlite3.connect(sandbox / "ometria.db")  # GDPR anonymisation, as Ometria does it (no API for it)
    db.execute("DELETE FROM record WHERE type = 'contact' AND id = ?", (erased_id,))
    db.execute("UPDATE record SET doc = json_remove(doc, '$.email', '$.firstname', '$.lastname'), email = NULL "
               "WHERE type = 'contact' AND id = ?", (anonymised_id,))
    db.commit()
    db.close()
    with open_store(profile.state) as store:
        run_id = store.start_run("consent", profile.name)
        read = read_ometria_consent(store, profile, connections.ometria_client(), run_id=run_id)
        assert read.erased == 2
        again = read_ometria_consent(store, profile, connections.ometria_client(), run_id=run_id)
        assert again.erased == 0  # recorded once
        rows = {r.contact_id: r for r in diff_consent(store, profile, run_id=run_id).rows if r.action == "erased"}
        assert set(rows) == {erased_id, anonymised_id}
        map_records(store, profile, entities=["contacts"])
        held = {r.id: r for r in iter_records(store.conn, "contact", state="held")}
        assert {erased_id, anonymised_id} <= set(held)
        assert "erased by Ometria (GDPR" in held[erased_id].hold_reason
        ready = {r.id for r in iter_records(store.conn, "contact", state="ready")}
    assert erased_id not in ready and anonymised_id not in ready


class ForgetfulKhaos(CountingKhaos):
    """KC imports, but its TCustomerImportResult lists no URN."""

    def import_company(self, companies_xml: str):
        super().import_company(companies_xml)
        return []


def test_an_unconfirmed_urn_is_failed_recorded_for_crm_and_planned_again(tmp_path, sandbox):
    profile, connections = pulled(tmp_path, sandbox)
    with open_store(profile.state) as store:
        run_id = store.start_run("consent", profile.name)
        read_ometria_consent(store, profile, connections.ometria_client(), run_id=run_id)
        planned = diff_consent(store, profile, run_id=run_id).planned
        result = push_consent(store, profile, ForgetfulKhaos(connections.khaos_client()), commit=True, run_id=run_id)
        assert (result.done, result.failed) == (0, planned)
        found = [e for e in store.exceptions(open_only=True) if e.stage == "consent"]
        assert [(e.type, e.owner, e.entity) for e in found] == [("consent_gap", "crm", "company")] * planned
        assert "KC did not confirm" in found[0].reason
        assert diff_consent(store, profile, run_id=store.start_run("consent", profile.name)).planned == planned
