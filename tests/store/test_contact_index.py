"""The contact index map keeps in step with staging: refreshed for the companies that changed,
it holds exactly what a rebuild from every staged company holds."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from khaosync.mapping.contacts import email_key
from khaosync.store import contact_index, open_store, staging
from khaosync.store.db import utcnow

EMAILS = ["ada@example.com", "ADA@example.com ", "bob@example.co.uk", "not-an-email", "", "cy@example.org"]


def _company(key: int, contacts: list[tuple[int, int, bool]], status: int | None) -> str:
    doc = {"company_id": key, "company_code": f"C{key}", "mailing_status": status,
           "contacts": [{"contact_id": c, "email": EMAILS[e], "forename": f"F{c}", "surname": f"S{c}",
                         "inactive": inactive, "email_subscribe": None if c % 3 else bool(c % 2)}
                        for c, e, inactive in contacts]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _stage(store, companies: dict[int, str]) -> None:
    run = store.start_run("pull", "test")
    with store.transaction() as conn:
        for key, parsed in companies.items():
            staging.stage(conn, entity="company", key=str(key), raw=parsed.encode(), parsed=parsed,
                          content_hash=str(hash(parsed)), run_id=run, seen_at=utcnow())


def _everything(conn) -> tuple:
    rows = conn.execute("SELECT * FROM contact_index ORDER BY contact_id, company_key").fetchall()
    ids = [r[0] for r in rows]
    return rows, contact_index.customers(conn, ids), contact_index.shared(conn, inactive_sent=False), \
        contact_index.shared(conn, inactive_sent=True)


_CONTACTS = st.lists(st.tuples(st.integers(1, 12), st.integers(0, len(EMAILS) - 1), st.booleans()), max_size=3)
_COMPANIES = st.dictionaries(st.integers(1, 9), st.tuples(_CONTACTS, st.sampled_from([None, 1, 6])), max_size=6)


@settings(max_examples=60, deadline=None)
@given(nights=st.lists(_COMPANIES, min_size=1, max_size=4))
def test_refreshing_the_changed_companies_equals_a_rebuild(tmp_path_factory, nights):
    # Contacts move between companies, two companies list one contact id, emails change and
    # collide, contacts go inactive: after each night the refreshed index is the rebuilt one.
    with open_store(tmp_path_factory.mktemp("ci") / "state.db") as store:
        conn = store.conn
        conn.create_function("khaosync_email_key", 1, email_key, deterministic=True)
        for night in nights:
            changed = {k: _company(k, contacts, status) for k, (contacts, status) in night.items()}
            _stage(store, changed)
            with store.transaction():
                contact_index.refresh(conn, [str(k) for k in changed])
            refreshed = _everything(conn)
            with store.transaction():
                contact_index.rebuild(conn)
            assert _everything(conn) == refreshed


def test_the_lowest_company_key_owns_a_contact_two_companies_list(tmp_path):
    with open_store(tmp_path / "state.db") as store:
        conn = store.conn
        conn.create_function("khaosync_email_key", 1, email_key, deterministic=True)
        _stage(store, {5: _company(5, [(7, 0, False)], 1), 10: _company(10, [(7, 2, False), (8, 0, False)], 1)})
        with store.transaction():
            contact_index.rebuild(conn)
        # "10" < "5" as text: company 10's row is contact 7's, as map has always read it.
        assert contact_index.customers(conn, [7])[7][0] == 10
        assert contact_index.shared(conn, inactive_sent=False) == []  # 7 (bob) and 8 (ada) share nothing
        _stage(store, {10: _company(10, [(8, 0, False)], 1)})
        with store.transaction():
            contact_index.refresh(conn, ["10"])
        assert contact_index.customers(conn, [7])[7][0] == 5  # company 5 still lists it
        assert [r[1] for r in contact_index.shared(conn, inactive_sent=False)] == [7, 8]  # both ada now
