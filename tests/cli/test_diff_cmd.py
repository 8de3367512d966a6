"""``khaosync diff`` as an operator and a cron job see it: exact tables at 80 columns, the JSON
contract, CSV, exit codes."""

import csv
import io
import json
import re
from decimal import Decimal as D

import pytest
from typer.testing import CliRunner

from khaosync.cli.app import app
from khaosync.ometria import wire
from khaosync.store import open_store, plans

STATE = ".khaosync/state.db"


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMETRIA_API_KEY", raising=False)
    return CliRunner(env={"COLUMNS": "80"})


def order(id_: str, **fields) -> dict:
    return {"@type": "order", "id": id_, "timestamp": "2026-10-01T09:00:00Z", "currency": "GBP",
            "grand_total": D("10.00"), "status": "shipped", "is_valid": True,
            "lineitems": [{"product_id": "P1", "quantity": 1, "sku": "MUG-BLUE-LARGE-CERAMIC-0001"}], **fields}


@pytest.fixture
def state(tmp_path):
    """One record of each kind: new, changed (money and status), changed (a line added), void, unchanged."""
    with open_store(tmp_path / STATE) as store:
        run = store.start_run("map", "sandbox")

        def outbound(doc, state="ready", reason=None):
            body = wire.dumps(doc)
            store.conn.execute("INSERT INTO outbound_record VALUES (?, ?, ?, ?, '[]', ?, ?, ?, 'now')",
                               (doc["@type"], doc["id"], wire.content_hash(body), body, state, reason, run))

        def accepted(doc):
            body = wire.dumps(doc)
            store.conn.execute("INSERT INTO ledger(type, id, content_hash, body, accepted_at) VALUES "
                               "(?, ?, ?, ?, 'then')", (doc["@type"], doc["id"], wire.content_hash(body), body))

        accepted({"@type": "product", "id": "P1", "title": "Mug"})
        outbound(order("2001"))
        accepted(order("2002"))
        outbound(order("2002", status="complete", grand_total=D("1234567.89")))
        accepted(order("2003"))
        outbound(order("2003", lineitems=[{"product_id": "P1", "quantity": 2, "sku": "MUG-BLUE-LARGE-CERAMIC-0001"},
                                          {"product_id": "P2", "quantity": 1}]))
        accepted(order("2004"))
        outbound(order("2004"), state="held", reason="total_mismatch: lines give 10.00, KC says 10.01")
        accepted(order("2005"))
        outbound(order("2005"))
    return tmp_path / STATE


def plain(text: str) -> str:
    """Trailing spaces off (rich pads cells to the column width) and the plan id made stable."""
    return "\n".join(line.rstrip() for line in re.sub(r"p\d+-\d{8}-\d{4}", "PLAN", text).splitlines()) + "\n"


TABLE = """\
orders vs the ledger: 1 new, 2 changed, 1 unchanged, 1 to void
plan PLAN: 4 records to push
push it with: khaosync push --plan PLAN --commit
key    change    field                   before    after
────────────────────────────────────────────────────────────────────────────────
2001   new
2002   changed   grand_total             10.00     1234567.89
                 status                  shipped   complete
2003   changed   lineitems[0].quantity   1         2
                 lineitems[1]            -         {"product_id":"P2","quantity"
                                                   :1}
2004   void      is_valid                true      false
                 status                  shipped   cancelled
                 (why)                             total_mismatch: lines give
                                                   10.00, KC says 10.01
exceptions this diff saw
id  type              sev   owner      records / reason
────────────────────────────────────────────────────────────────────────────────
 1  product_mismatch  warn  ecommerce  order:2003
                                       order 2003 is about to be sent with line
                                       2 product_id P2: no ready product and
                                       nothing Ometria accepted has that id, so
                                       Ometria will refuse the order
"""


def test_the_table_at_80_columns(runner, state):
    result = runner.invoke(app, ["diff", "orders"])
    assert result.exit_code == 0, result.output
    assert plain(result.stdout) == TABLE
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "SANDBOX" in result.stderr


def test_the_json_contract(runner, state):
    result = runner.invoke(app, ["diff", "orders", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout, parse_float=D)
    with open_store(state, write=False) as store:
        [plan] = plans.list_plans(store.conn)
    assert data["plan"] == plan.id and plan.status == "open"
    assert data["counts"] == {"new": 1, "changed": 2, "unchanged": 1, "void": 1, "held": 0}
    assert [(r["key"], r["change"]) for r in data["records"]] == [
        ("2001", "new"), ("2002", "changed"), ("2003", "changed"), ("2004", "void")]
    assert data["records"][0] == {"key": "2001", "change": "new", "fields": {}}
    # amounts are JSON numbers, exactly as held: 10.00 stays 10.00
    assert data["records"][1]["fields"] == {"grand_total": {"before": D("10.00"), "after": D("1234567.89")},
                                            "status": {"before": "shipped", "after": "complete"}}
    assert '"before": 10.00' in result.stdout
    assert data["records"][2]["fields"]["lineitems[1]"] == {"before": None, "after": {"product_id": "P2",
                                                                                        "quantity": 1}}
    assert data["records"][3]["reason"].startswith("total_mismatch")
    assert data["sandbox"] is True and data["live"] is False and data["planned"] == 4
    assert [(f["type"], f["records"]) for f in data["findings"]] == [("product_mismatch", ["order:2003"])]


def test_focus_with_field_key_and_limit(runner, state):
    result = runner.invoke(app, ["diff", "orders", "--field", "status", "--json"])
    data = json.loads(result.stdout)
    assert [(r["key"], list(r["fields"])) for r in data["records"]] == [("2002", ["status"]), ("2004", ["status"])]
    assert data["planned"] == 4  # --field narrows the listing, never the plan
    data = json.loads(runner.invoke(app, ["diff", "orders", "--key", "2002", "--key", "2005", "--json"]).stdout)
    assert data["counts"] == {"new": 0, "changed": 1, "unchanged": 1, "void": 0, "held": 0}
    assert data["planned"] == 1
    data = json.loads(runner.invoke(app, ["diff", "orders", "--limit", "1", "--json"]).stdout)
    assert len(data["records"]) == 1 and data["listed"] == 4
    human = runner.invoke(app, ["diff", "orders", "--limit", "1"]).stdout
    assert "first 1 of 4 records" in human


def test_csv_one_row_per_field(runner, state, tmp_path):
    result = runner.invoke(app, ["diff", "orders", "--csv", "diff.csv"])
    assert result.exit_code == 0 and "wrote 4 records to diff.csv" in result.stderr
    rows = list(csv.DictReader(open(tmp_path / "diff.csv", encoding="utf-8")))
    assert [tuple(r.values()) for r in rows] == [
        ("order", "2001", "new", "", "", "", ""),
        ("order", "2002", "changed", "grand_total", "10.00", "1234567.89", ""),
        ("order", "2002", "changed", "status", "shipped", "complete", ""),
        ("order", "2003", "changed", "lineitems[0].quantity", "1", "2", ""),
        ("order", "2003", "changed", "lineitems[1]", "", '{"product_id":"P2","quantity":1}', ""),
        ("order", "2004", "void", "is_valid", "true", "false", "total_mismatch: lines give 10.00, KC says 10.01"),
        ("order", "2004", "void", "status", "shipped", "cancelled", "total_mismatch: lines give 10.00, KC says 10.01"),
    ]
    to_stdout = runner.invoke(app, ["diff", "orders", "--csv", "-"])
    assert list(csv.reader(io.StringIO(to_stdout.stdout)))[0] == ["type", "key", "change", "field", "before",
                                                                   "after", "reason"]


def test_a_second_diff_supersedes_the_first_plan(runner, state):
    first = json.loads(runner.invoke(app, ["diff", "orders", "--json"]).stdout)["plan"]
    second = runner.invoke(app, ["diff", "orders"])
    assert f"(supersedes {first})" in second.stdout


def test_exit_1_while_a_fail_exception_is_open_and_usage_errors_exit_2(runner, state):
    with open_store(state) as store:
        run = store.start_run("pull", "sandbox")
        store.record_exception(run_id=run, type="total_mismatch", severity="fail", owner="finance", stage="pull",
                               reason="1p out", records=["sales_order:9"], entity="sales_order")
    result = runner.invoke(app, ["diff", "orders", "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["open_fail_exceptions"] == 1
    assert "1 open exception(s) at fail severity" in result.stderr
    assert runner.invoke(app, ["diff", "customers"]).exit_code == 2
    assert runner.invoke(app, ["diff"]).exit_code == 2


def test_live_without_a_sandbox_says_how_to_make_one(runner, state):
    result = runner.invoke(app, ["diff", "orders", "--live"])
    assert result.exit_code == 2 and "sandbox init" in result.stderr


def test_live_on_the_sandbox_reads_ometria_back(runner, tmp_path):
    from khaosync.config import load_profile
    from khaosync.sandbox.generator import load_manifest
    from khaosync.stages.map import map_records

    assert runner.invoke(app, ["sandbox", "init", "--seed", "7", "--customers", "40", "--orders", "150"]).exit_code == 0
    runner.invoke(app, ["pull", "--json"])
    profile = load_profile()
    with open_store(profile.state) as store:
        map_records(store, profile)
    result = runner.invoke(app, ["diff", "orders", "--live", "--json"])
    assert result.exit_code == 1, result.output  # the planted duplicates are fail-severity findings
    data = json.loads(result.stdout)
    assert data["live"] is True and data["counts"]["new"] == data["planned"] > 0
    faults = load_manifest(tmp_path / ".khaosync" / "sandbox")["faults"]
    duplicates = {f["key"] for f in data["findings"] if f["type"] == "split_consignment_duplicate"}
    assert duplicates == {str(e["sorder_id"]) for e in faults["ometria_duplicate_order"]}
    only = {f["key"] for f in data["findings"] if f["type"] == "ometria_only_order"}
    assert only == set(faults["ometria_storefront_order"])


def test_nothing_mapped_yet_says_so(runner, tmp_path):
    with open_store(tmp_path / STATE):
        pass
    result = runner.invoke(app, ["diff", "products"])
    assert result.exit_code == 0
    assert "nothing in the ledger: run `khaosync map`" in result.stderr
    assert result.stdout.splitlines()[0] == "products vs the ledger: 0 new, 0 changed, 0 unchanged, 0 to void"


# -- plans you can trust (issue 14.2) -------------------------------------------------------------


def test_a_triage_diff_by_key_never_becomes_what_push_sends(runner, state):
    """A reviewed 4-record diff, then `diff orders --key 2002`: push still sends the review."""
    full = json.loads(runner.invoke(app, ["diff", "orders", "--json"]).stdout)["plan"]
    triage = runner.invoke(app, ["diff", "orders", "--key", "2002"])
    partial = re.search(r"plan (p\S+):", triage.stdout).group(1)
    assert "partial plan (--key): push sends it only when named; it supersedes nothing" in triage.stdout
    assert "supersedes" not in triage.stdout.split("\n")[1]
    push = runner.invoke(app, ["push", "--json"])
    assert push.exit_code == 0, push.output
    data = json.loads(push.stdout)
    assert data["plan"] == full and data["pending"]["order"] == 4
    assert data["plan_detail"]["made_by"] == "diff orders" and data["plan_detail"]["records"] == 4
    assert data["plan_detail"]["partial"] is False
    made = data["plan_detail"]["created_at"][:16].replace("T", " ")
    assert f"plan {full}: made {made} UTC by `diff orders`, 4 record(s) to push" in push.stderr
    assert (f"warning: newer partial plan {partial} (`diff orders --key 2002`) is not sent without --plan "
            f"{partial}") in push.stderr
    named = json.loads(runner.invoke(app, ["push", "--plan", partial, "--json"]).stdout)
    assert named["plan"] == partial and named["pending"]["order"] == 1
    assert named["plan_detail"]["partial"] is True and named["plan_detail"]["narrowed_to"] == ["2002"]


def test_plans_list_and_show(runner, state):
    full = json.loads(runner.invoke(app, ["diff", "orders", "--json"]).stdout)["plan"]
    runner.invoke(app, ["diff", "orders", "--key", "2002", "--key", "2001"])
    listed = json.loads(runner.invoke(app, ["plans", "list", "--json"]).stdout)
    assert listed["sandbox"] is True and listed["default"] == full
    assert [(p["made_by"], p["records"], p["status"], p["partial"]) for p in listed["plans"]] == [
        ("diff orders", 4, "open", False), ("diff orders --key 2002 --key 2001", 2, "open", True)]
    table = runner.invoke(app, ["plans", "list"])
    assert table.exit_code == 0 and f"push without --plan sends: {full}" in table.stderr
    assert not [line for line in table.stdout.splitlines() if line != line.rstrip()]  # no trailing spaces
    rows = [line.split() for line in table.stdout.splitlines()[3:]]
    assert [(r[0], r[-2], r[-1]) for r in rows if r and r[0].startswith("p")] == [
        (full, "4", "open"), (listed["plans"][1]["id"], "2", "partial")]
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    shown = json.loads(runner.invoke(app, ["plans", "show", full, "--json"]).stdout)
    assert shown["summary"] == {"order": {"changed": 2, "new": 1, "void": 1}} and shown["accepted"] == {}
    human = runner.invoke(app, ["plans", "show", full])
    assert f"push it with: khaosync push --plan {full} --commit" in human.stdout
    missing = runner.invoke(app, ["plans", "show", "p999-nope"])
    assert missing.exit_code == 2 and "no plan 'p999-nope': see khaosync plans list" in missing.stderr


def test_a_full_review_supersedes_older_partial_plans(runner, state):
    partial = re.search(r"plan (p\S+):", runner.invoke(app, ["diff", "orders", "--key", "2002"]).stdout).group(1)
    runner.invoke(app, ["diff", "orders"])
    listed = {p["id"]: p["status"] for p in json.loads(runner.invoke(app, ["plans", "list", "--json"]).stdout)["plans"]}
    assert listed[partial] == "superseded"


def test_a_long_field_path_is_never_broken(runner, state):
    path_owner = {"@type": "order", "id": "2009", "timestamp": "2026-10-01T09:00:00Z", "currency": "GBP",
                  "grand_total": D("10.00"), "status": "shipped", "is_valid": True,
                  "lineitems": [{"product_id": "P1", "quantity": 1}],
                  "properties": {"gift_message_for_the_customer_printed_on_the_slip": "Happy birthday"}}
    changed = {**path_owner, "properties": {"gift_message_for_the_customer_printed_on_the_slip": "Many happy returns"}}
    with open_store(state) as store:
        before, after = wire.dumps(path_owner), wire.dumps(changed)
        store.conn.execute("INSERT INTO ledger(type, id, content_hash, body, accepted_at) VALUES ('order', '2009', ?, ?,"
                           " 'then')", (wire.content_hash(before), before))
        store.conn.execute("INSERT INTO outbound_record VALUES ('order', '2009', ?, ?, '[]', 'ready', NULL, 1, 'now')",
                           (wire.content_hash(after), after))
    result = runner.invoke(app, ["diff", "orders", "--key", "2009"])
    assert result.exit_code == 0, result.output
    assert "properties.gift_message_for_the_customer_printed_on_the_slip" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
