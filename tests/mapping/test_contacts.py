"""Contacts: identity, consent precedence, shared emails, invalid emails, secondary attributes."""

from datetime import UTC, date, datetime

import pytest

from khaosync.khaos.models import Address, Company, Contact as KcContact
from khaosync.mapping import Mapping, parse_mapping
from khaosync.mapping.contacts import (
    Member, SharedEmails, choose_survivor, consent_for, email_key, map_company, map_contact, phone_e164,
)
from khaosync.ometria.models import MarketingOptin

IN, OUT = MarketingOptin.OPTED_IN, MarketingOptin.OPTED_OUT
DEFAULT = Mapping()


def company(mailing_status=1, contacts=None, **over) -> Company:
    data = dict(company_id=1075, company_code="C001075", mailing_status=mailing_status,
                date_created=datetime(2026, 9, 23, 9, 15, 23, tzinfo=UTC),
                additional={"LOYALTY_TIER": "Silver", "SOURCE": "Web", "NOT_MAPPED": "x"},
                addresses=[Address(address_id=1, country_code="gb", addr_type="Delivery"),
                           Address(address_id=2, country_code="IE", addr_type="Invoice")],
                contacts=contacts if contacts is not None else [person()])
    data.update(over)
    return Company(**data)


def person(contact_id=7086, email="tomasz.white7086@example.net", subscribe=True, **over) -> KcContact:
    data = dict(contact_id=contact_id, title="Mr", forename="Tomasz", surname="White", email=email,
                mobile="07700 900123", dob=date(1972, 6, 4), email_subscribe=subscribe)
    data.update(over)
    return KcContact(**data)


@pytest.mark.parametrize("status,subscribe,expected,unknown", [
    (1, True, IN, False),
    (1, None, None, False),     # the company's opt-in does not opt in a contact who holds no decision
    (1, False, OUT, False),
    (5, True, OUT, False),      # company "do not mail" wins over a contact opt-in
    (5, None, OUT, False),
    (None, True, IN, False),    # blank company status: the contact's own decision
    (None, None, None, False),  # nothing held anywhere: marketing_optin not sent
    (None, False, OUT, False),
    (9, True, None, True),      # unknown id: never opt in on a guess
    (9, False, OUT, True),      # ... but an opt-out is always safe to send
])
def test_consent_precedence(status, subscribe, expected, unknown):
    assert consent_for(status, subscribe, DEFAULT.consent) == (expected, unknown)


def test_consent_per_site():
    site = parse_mapping("consent:\n  mailing_status: {1: opt_in, 6: opt_out}\n  email_subscribe_false: no_decision\n"
                         "  company_opt_in_covers_contacts: true\n").consent
    assert consent_for(6, True, site) == (OUT, False)
    assert consent_for(5, True, site) == (None, True)  # 5 means nothing on this site
    assert consent_for(1, None, site) == (IN, False)   # covered by the company
    assert consent_for(None, False, site) == (None, False)


def test_one_contact_per_kc_contact_with_stable_ids():
    outcomes, findings = map_company(company(contacts=[person(), person(7087, "second@example.org", None)]), 3,
                                     DEFAULT, SharedEmails())
    assert findings == []
    first, second = [o.record.to_wire() for o in outcomes]
    assert first == {
        "@type": "contact", "@collection": "khaos", "id": "7086", "customer_id": "1075",
        "email": "tomasz.white7086@example.net", "firstname": "Tomasz", "lastname": "White", "prefix": "Mr",
        "date_of_birth": "1972-06-04", "phone_number": "+447700900123", "country_id": "IE",
        "timestamp_acquired": "2026-09-23T09:15:23Z", "marketing_optin": "EXPLICITLY_OPTEDIN",
        "properties": {"acquisition_source": "Web", "loyalty_tier": "Silver"},
    }
    assert second["id"] == "7087" and "marketing_optin" not in second
    assert outcomes[0].lineage == [("company", "1075", 3)]
    for o in outcomes:  # never an email or a name as an id
        assert "@" not in o.record.id and "@" not in o.record.customer_id


def test_customer_id_can_be_the_contact():
    mapping = parse_mapping("identity: {customer_id: contact_id, collection: erp}\n")
    record = map_contact(company(), person(), 1, mapping, SharedEmails()).record
    assert (record.customer_id, record.collection) == ("7086", "erp")


def test_unknown_mailing_status_is_a_consent_gap_and_no_opt_in():
    outcomes, findings = map_company(company(mailing_status=9), 1, DEFAULT, SharedEmails())
    assert [f.type for f in findings] == ["consent_gap"]
    assert findings[0].records == ("company:1075",) and "MAILING_STATUS 9" in findings[0].reason
    assert outcomes[0].record.marketing_optin is None


def test_invalid_email_is_omitted_or_held():
    bad = company(contacts=[person(email="tomasz.white@")])
    omitted = map_company(bad, 1, DEFAULT, SharedEmails())[0][0]
    assert omitted.hold is None and omitted.record.email is None and omitted.findings == []  # pull already said so
    held = map_company(bad, 1, parse_mapping("contacts: {invalid_email: hold}"), SharedEmails())[0][0]
    assert held.hold and [f.type for f in held.findings] == ["malformed_record"]
    # KC's own check passes this one, Ometria's does not: map says why the email is left out
    accented = map_company(company(contacts=[person(email="zoë@example.com")]), 1, DEFAULT, SharedEmails())[0][0]
    assert accented.record.email is None and "not one Ometria accepts" in accented.findings[0].reason


def test_inactive_contacts_follow_the_rule():
    gone = company(contacts=[person(inactive=True)])
    assert len(map_company(gone, 1, DEFAULT, SharedEmails())[0]) == 1
    assert map_company(gone, 1, parse_mapping("contacts: {inactive: skip}"), SharedEmails())[0] == []


@pytest.mark.parametrize("raw,expected", [
    ("+447700900123", "+447700900123"), ("07700 900123", "+447700900123"), ("0044 7700 900123", "+447700900123"),
    ("(0131) 117684", "+44131117684"), ("+44 (0)7700 900123", "+447700900123"), ("ext 12", None), ("", None),
    ("+0123456789", None),
])
def test_phones_become_e164_or_are_left_out(raw, expected):
    assert phone_e164(raw, "44") == expected
    assert phone_e164("07700 900123", None) is None


def test_survivor_policies():
    members = [Member(7086, 1075, "2026-01-01T00:00:00Z", None), Member(7088, 1077, "2026-05-01T00:00:00Z", None),
               Member(7090, 1077, "2026-05-01T00:00:00Z", "2026-05-01T00:00:00Z")]
    assert choose_survivor(members, "survivor_most_recent_order") == 7090  # named on the latest order
    assert choose_survivor(members[:2], "survivor_most_recent_order") == 7088
    assert choose_survivor(members, "survivor_oldest_contact") == 7086
    assert choose_survivor(members, "skip") is None
    no_orders = [Member(7101, 1, None, None), Member(7100, 2, None, None)]
    assert choose_survivor(no_orders, "survivor_most_recent_order") == 7100  # then the oldest contact


def test_shared_email_one_finding_listing_everyone_and_the_policy_applied():
    shared = SharedEmails()
    shared.add_group("tomasz.white7086@example.net", [Member(7088, 1077, "2026-05-01T00:00:00Z"),
                                                      Member(7086, 1075, "2026-01-01T00:00:00Z")],
                     "survivor_most_recent_order")
    [finding] = shared.findings
    assert finding.type == "identifier_conflict" and finding.records == ("contact:7086", "contact:7088")
    assert "contact:7088 keeps it" in finding.reason
    keeps = map_contact(company(company_id=1077, contacts=[]), person(7088), 1, DEFAULT, shared).record
    loses = map_contact(company(), person(7086), 1, DEFAULT, shared).record
    assert keeps.email == "tomasz.white7086@example.net" and loses.email is None
    skip = SharedEmails()
    skip.add_group("x@example.com", [Member(1, 1), Member(2, 2)], "skip")
    assert skip.withheld == {1, 2} and "all are sent without it" in skip.findings[0].reason


def test_an_opt_out_travels_with_the_shared_email():
    shared = SharedEmails()
    shared.add_group("a@example.com", [Member(7086, 1075, "2026-01-01T00:00:00Z", opted_out=True),
                                       Member(7088, 1077, "2026-05-01T00:00:00Z")], "survivor_most_recent_order")
    survivor = map_contact(company(company_id=1077, contacts=[]), person(7088, "a@example.com", True), 1, DEFAULT,
                           shared).record
    assert survivor.email == "a@example.com" and survivor.marketing_optin == OUT


def test_email_key():
    assert email_key(" Ada@Example.COM ") == "ada@example.com"
    assert email_key("no email") is None and email_key("") is None and email_key(None) is None


# -- consent times (KC keeps none: khaosync's first-seen times, and Ometria's newer opt-outs) ------
def _sent(c: Company, times) -> dict:
    from khaosync.mapping.contacts import ConsentTimes  # noqa: F401  (the type under test)

    outcome = map_contact(c, c.contacts[0], 1, DEFAULT, SharedEmails(), times)
    return outcome.record.model_dump(mode="json", by_alias=True, exclude_none=True)


def at(day: int) -> datetime:
    return datetime(2026, 10, day, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("subscribe, times, optin, subscribed, unsubscribed", [
    # the decision carries the time khaosync first saw it
    (True, dict(kc_at=at(3)), "EXPLICITLY_OPTEDIN", "2026-10-03T09:00:00Z", None),
    (False, dict(kc_at=at(3)), "EXPLICITLY_OPTEDOUT", None, "2026-10-03T09:00:00Z"),
    # there since the first pull: KC's own last change, never now
    (True, dict(undated_at=at(1)), "EXPLICITLY_OPTEDIN", "2026-10-01T09:00:00Z", None),
    # no time known: none sent (Ometria dates it)
    (True, dict(), "EXPLICITLY_OPTEDIN", None, None),
    # an Ometria opt-out newer than KC's opt-in: the opt-in is not sent at all
    (True, dict(kc_at=at(3), ometria_opt_out_at=at(5)), None, None, None),
    (True, dict(undated_at=at(1), ometria_opt_out_at=at(5)), None, None, None),
    # ... an older one does not stop a newer KC opt-in (the consent flow raises the conflict)
    (True, dict(kc_at=at(6), ometria_opt_out_at=at(5)), "EXPLICITLY_OPTEDIN", "2026-10-06T09:00:00Z", None),
    # KC's opt-out written back from Ometria's: dated when the person said no
    (False, dict(kc_at=at(9), ometria_opt_out_at=at(5)), "EXPLICITLY_OPTEDOUT", None, "2026-10-05T09:00:00Z"),
    # no decision in KC: no consent field at all, whatever the times
    (None, dict(kc_at=at(3), ometria_opt_out_at=at(5)), None, None, None),
])
def test_consent_times_are_sent_with_the_decision(subscribe, times, optin, subscribed, unsubscribed):
    from khaosync.mapping.contacts import ConsentTimes

    body = _sent(company(mailing_status=None, contacts=[person(subscribe=subscribe)]), ConsentTimes(**times))
    assert (body.get("marketing_optin"), body.get("timestamp_subscribed"), body.get("timestamp_unsubscribed")) == (
        optin, subscribed, unsubscribed)
    assert "@force_optin" not in body
