"""``khaosync exceptions list|show``: the register at 80 columns, its JSON and CSV, one finding whole."""

import csv
import io
import json
from decimal import Decimal as D

import pytest
from typer.testing import CliRunner

from khaosync.cli.app import app
from khaosync.ometria import wire
from khaosync.store import open_store

STATE = ".khaosync/state.db"


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMETRIA_API_KEY", raising=False)
    return CliRunner(env={"COLUMNS": "80"})


@pytest.fixture
def register(tmp_path):
    """A total mismatch (pull) with its staged, mapped and accepted forms; a duplicate (diff) naming
    Ometria-only orders; a resolved identifier conflict."""
    with open_store(tmp_path / STATE) as store:
        run = store.start_run("pull", "sandbox")
        with store.transaction() as conn:
            conn.execute(
                "INSERT INTO staged_record(entity, key, version, content_hash, raw, parsed, run_id, seen_at, current) "
                "VALUES ('sales_order', '2042', 1, 'h', ?, ?, ?, 'now', 1)",
                (b"<SALES_ORDER><SORDER_ID>2042</SORDER_ID><ORDER_AMOUNT>114.99</ORDER_AMOUNT></SALES_ORDER>",
                 '{"order_amount":"114.99","sorder_id":2042}', run))
            body = wire.dumps({"@type": "order", "id": "2042", "grand_total": D("114.98"), "lineitems": []})
            conn.execute("INSERT INTO outbound_record VALUES ('order', '2042', ?, ?, ?, 'held', 'total_mismatch', ?, "
                         "'now')", (wire.content_hash(body), body, '[{"entity":"sales_order","key":"2042","version":1}]',
                                    run))
            conn.execute("INSERT INTO ledger(type, id, content_hash, body, accepted_at) VALUES ('order', '2042', 'x', "
                         "?, '2026-11-01T00:00:00+00:00')",
                         (wire.dumps({"@type": "order", "id": "2042", "grand_total": D("114.99"), "lineitems": []}),))
        store.record_exception(
            run_id=run, type="total_mismatch", severity="fail", owner="finance", stage="pull",
            reason="order_amount 114.99 but lines and delivery give 114.98 (off by 0.01)",
            records=["sales_order:2042"], entity="sales_order", record_key="2042",
            detail={"rule": "lines + delivery = ORDER_AMOUNT"})
        store.record_exception(
            run_id=run, type="split_consignment_duplicate", severity="fail", owner="ecommerce", stage="diff",
            reason="KC sales order SO02076 (2076): 2 Ometria order(s) not sent by khaosync (INV-INV40081, "
                   "INV-INV40082) stand for it",
            records=["sales_order:2076", "ometria_order:INV-INV40081", "ometria_order:INV-INV40082",
                     "ometria_order:INV-INV40083"], entity="sales_order", record_key="2076",
            detail={"rule": "web_id = AssociatedRef", "ometria": [{"id": "INV-INV40081", "grand_total": "100.00"}]})
        conflict = store.record_exception(
            run_id=run, type="identifier_conflict", severity="warn", owner="crm", stage="diff",
            reason="email a@example.com is on 2 KC holders", records=["contact:7086", "contact:7088"],
            entity="contact")
        store.conn.execute("UPDATE exception SET resolved_at = '2026-11-27T10:00:00+00:00' WHERE id = ?",
                           (conflict,))
    return tmp_path / STATE


def plain(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


LIST = """\
3 exception(s), 2 open
id  type                 sev   owner      records / reason
────────────────────────────────────────────────────────────────────────────────
 1  total_mismatch       fail  finance    sales_order:2042
                                          order_amount 114.99 but lines and
                                          delivery give 114.98 (off by 0.01)
 2  split_consignment_   fail  ecommerce  ometria_order:INV-INV40081,
    duplicate                             ometria_order:INV-INV40082,
                                          ometria_order:INV-INV40083 +1
                                          KC sales order SO02076 (2076): 2
                                          Ometria order(s) not sent by khaosync
                                          (INV-INV40081, INV-INV40082) stand for
                                          it
 3  identifier_conflict  warn  crm        contact:7086, contact:7088
                                          (resolved 2026-11-27) email
                                          a@example.com is on 2 KC holders
2 open exception(s) at fail severity
"""


def test_list_at_80_columns_and_exit_1_on_open_fail(runner, register):
    result = runner.invoke(app, ["exceptions", "list"])
    assert result.exit_code == 1
    assert plain(result.stdout) == LIST
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_list_json_contract_and_filters(runner, register):
    result = runner.invoke(app, ["exceptions", "list", "--json"])
    rows = json.loads(result.stdout)["exceptions"]
    assert [{k: r[k] for k in ("id", "type", "severity", "owner", "status", "stage", "records")} for r in rows] == [
        {"id": 1, "type": "total_mismatch", "severity": "fail", "owner": "finance", "status": "open",
         "stage": "pull", "records": ["sales_order:2042"]},
        {"id": 2, "type": "split_consignment_duplicate", "severity": "fail", "owner": "ecommerce",
         "status": "open", "stage": "diff", "records": ["ometria_order:INV-INV40081", "ometria_order:INV-INV40082",
                                                        "ometria_order:INV-INV40083", "sales_order:2076"]},
        {"id": 3, "type": "identifier_conflict", "severity": "warn", "owner": "crm", "status": "resolved",
         "stage": "diff", "records": ["contact:7086", "contact:7088"]},
    ]
    assert rows[2]["resolved_at"] == "2026-11-27T10:00:00+00:00"
    crm = runner.invoke(app, ["exceptions", "list", "--owner", "crm", "--json"])
    assert crm.exit_code == 0 and [r["id"] for r in json.loads(crm.stdout)["exceptions"]] == [3]
    opened = json.loads(runner.invoke(app, ["exceptions", "list", "--open", "--json"]).stdout)["exceptions"]
    assert [r["id"] for r in opened] == [1, 2]
    typed = json.loads(runner.invoke(app, ["exceptions", "list", "--type", "total_mismatch", "--json"]).stdout)[
        "exceptions"]
    assert [r["id"] for r in typed] == [1]


def test_list_csv(runner, register, tmp_path):
    result = runner.invoke(app, ["exceptions", "list", "--csv", "register.csv"])
    assert "wrote 3 exceptions to register.csv" in result.stderr
    rows = list(csv.DictReader(open(tmp_path / "register.csv", encoding="utf-8")))
    assert [(r["id"], r["type"], r["status"], r["records"]) for r in rows] == [
        ("1", "total_mismatch", "open", "sales_order:2042"),
        ("2", "split_consignment_duplicate", "open",
         "ometria_order:INV-INV40081 ometria_order:INV-INV40082 ometria_order:INV-INV40083 sales_order:2076"),
        ("3", "identifier_conflict", "resolved", "contact:7086 contact:7088")]
    out = runner.invoke(app, ["exceptions", "list", "--csv", "-"]).stdout
    assert next(csv.reader(io.StringIO(out)))[:5] == ["id", "type", "severity", "owner", "status"]


SHOW = """\
exception   1 total_mismatch
severity    fail
owner       finance
status      open
stage       pull
first seen  FIRST
last seen   LAST
rule        lines + delivery = ORDER_AMOUNT
reason      order_amount 114.99 but lines and delivery give 114.98 (off by 0.01)
records     sales_order:2042

== sales_order:2042 ==
-- KC sales_order 2042 version 1, raw:
<SALES_ORDER><SORDER_ID>2042</SORDER_ID><ORDER_AMOUNT>114.99</ORDER_AMOUNT></SALES_ORDER>
-- parsed:
{
  "order_amount": "114.99",
  "sorder_id": 2042
}
-- mapped order 2042 (held: total_mismatch):
{
  "@type": "order",
  "grand_total": 114.98,
  "id": "2042",
  "lineitems": []
}
-- Ometria accepted order 2042 at 2026-11-01T00:00:00+00:00:
{
  "@type": "order",
  "grand_total": 114.99,
  "id": "2042",
  "lineitems": []
}
"""


def test_show_every_record_raw_and_mapped(runner, register):
    result = runner.invoke(app, ["exceptions", "show", "1"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(runner.invoke(app, ["exceptions", "list", "--type", "total_mismatch", "--json"]).stdout)[
        "exceptions"]
    expected = SHOW.replace("FIRST", row["first_seen"]).replace("LAST", row["last_seen"])
    assert plain(result.stdout) == expected


def test_show_json_and_ometria_only_records(runner, register):
    data = json.loads(runner.invoke(app, ["exceptions", "show", "2", "--json"]).stdout, parse_float=D)
    assert {k: data[k] for k in ("id", "type", "severity", "owner", "status", "stage", "rule")} == {
        "id": 2, "type": "split_consignment_duplicate", "severity": "fail", "owner": "ecommerce", "status": "open",
        "stage": "diff", "rule": "web_id = AssociatedRef"}
    involved = {v["ref"]: v for v in data["involved"]}
    assert involved["ometria_order:INV-INV40081"]["ometria"] == {"id": "INV-INV40081", "grand_total": "100.00"}
    assert involved["ometria_order:INV-INV40082"]["ometria"] is None
    assert involved["sales_order:2076"]["note"] == "no staged sales_order 2076"
    one = json.loads(runner.invoke(app, ["exceptions", "show", "1", "--json"]).stdout, parse_float=D)
    [view] = one["involved"]
    assert view["erp"][0]["raw"].startswith("<SALES_ORDER>") and view["mapped"][0]["state"] == "held"
    assert view["mapped"][0]["body"]["grand_total"] == D("114.98")  # exact, never through a float
    assert view["ledger"][0]["body"]["grand_total"] == D("114.99")


def test_show_an_unknown_id_is_a_usage_error(runner, register):
    result = runner.invoke(app, ["exceptions", "show", "99"])
    assert result.exit_code == 2 and "no exception 99" in result.stderr


def test_one_cause_is_one_row_across_stages(runner, tmp_path):
    """Issue 14.3: pull and map both find order 2042's total wrong: the register, health and the
    report count it once; --every-stage shows both rows."""
    with open_store(tmp_path / STATE) as store:
        run = store.start_run("sync", "sandbox")
        for stage, severity in (("pull", "warn"), ("map", "fail")):
            store.record_exception(run_id=run, type="total_mismatch", severity=severity, owner="finance",
                                   stage=stage, reason=f"{stage}: lines give 10.00, KC says 10.01",
                                   records=["sales_order:2042"], entity="sales_order")
        store.record_exception(run_id=run, type="total_mismatch", severity="fail", owner="finance", stage="pull",
                               reason="another order", records=["sales_order:2043"], entity="sales_order")
    listed = json.loads(runner.invoke(app, ["exceptions", "list", "--json"]).stdout)["exceptions"]
    assert [(r["id"], r["stage"], r["severity"], r["records"]) for r in listed] == [
        (1, "pull+map", "fail", ["sales_order:2042"]), (3, "pull", "fail", ["sales_order:2043"])]
    assert listed[0]["reason"] == "pull: lines give 10.00, KC says 10.01"
    every = json.loads(runner.invoke(app, ["exceptions", "list", "--every-stage", "--json"]).stdout)["exceptions"]
    assert [r["stage"] for r in every] == ["pull", "map", "pull"]
    health = json.loads(runner.invoke(app, ["health", "--no-detect", "--json"]).stdout)
    [finance] = [c for c in health["checks"] if c["name"] == "exceptions:finance"]
    assert finance["data"]["open"] == 2 and finance["data"]["fail_severity"] == 2
    from khaosync.report import open_exceptions

    with open_store(tmp_path / STATE, write=False) as store:
        [row] = open_exceptions(store)
    assert (row["owner"], row["type"], row["open"], row["records"]) == (
        "finance", "total_mismatch", 2, "sales_order:2042, sales_order:2043")
