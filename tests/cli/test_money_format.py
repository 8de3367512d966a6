"""Money printed with its currency's decimals everywhere (issue 14.7): 903.60, never 903.6."""

from __future__ import annotations

import csv
import json
import re
from decimal import Decimal

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli_workspace import copied, plant  # noqa: E402

from khaosync.cli.app import app
from khaosync.currency import minor_units, money_text

MONEY = ("gross_revenue", "refunds", "net_revenue")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return plant(tmp_path_factory.mktemp("money"), ["sync"])


@pytest.fixture
def runner(planted, tmp_path, monkeypatch):
    return copied(planted, tmp_path, monkeypatch, env={"COLUMNS": "80"})


def test_money_text():
    assert [money_text(Decimal(v), c) for v, c in [("903.6", "GBP"), ("0", "EUR"), ("1200", "JPY"),
                                                    ("1.5", "KWD"), ("19.999", "GBP"), ("-4.1", None)]] == [
        "903.60", "0.00", "1200", "1.500", "19.999", "-4.10"]


def places(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def test_reconcile_money_in_json_table_and_csv(runner):
    result = runner.invoke(app, ["reconcile", "--month", "2026-06", "--json", "--csv", "out"])
    assert result.exit_code in (0, 1), result.output
    data = json.loads(result.stdout)
    money = [(m["currency"], m[side]) for m in data["metrics"] if m["name"] in MONEY
             for side in ("erp", "ledger", "difference", "not_yet_due", "unexplained") if m[side] is not None]
    money += [(d["currency"], d[side]) for d in data["daily"] for side in ("erp", "ledger") if d[side] is not None]
    assert money and all(places(v) == minor_units(c) for c, v in money), money
    assert ("EUR", "0.00") in money  # a zero is money too
    rows = list(csv.DictReader(open("out/2026-06-metrics.csv", encoding="utf-8")))
    assert all(places(r["erp"]) == minor_units(r["currency"]) for r in rows if r["name"] in MONEY)
    table = runner.invoke(app, ["reconcile", "--month", "2026-06"]).stdout
    revenue = [line.split() for line in table.splitlines() if line.startswith(MONEY)]
    assert revenue and all(re.fullmatch(r"-?\d+\.\d\d", cell) for row in revenue for cell in row[1:3])


# -- --mask-pii on every command that writes people's data (issue 11.11) --------------------------


def people_in_store() -> tuple[set[str], set[str]]:
    import sqlite3

    emails, names = set(), set()
    with sqlite3.connect(".khaosync/state.db") as conn:
        for (parsed,) in conn.execute("SELECT parsed FROM staged_record WHERE entity = 'company' AND parsed IS NOT NULL"):
            company = json.loads(parsed)
            for c in company.get("contacts", []):
                if "@" in (c.get("email") or ""):
                    emails.add(c["email"].lower())
                if c.get("forename") and c.get("surname"):
                    names.add(f"{c['forename']} {c['surname']}".lower())
    return emails, names


def test_mask_pii_everywhere_people_appear(runner):
    import sqlite3

    # A company seen twice with two names: the old name lives only in a past version, and a
    # reason quotes it (issue 11.11).
    with sqlite3.connect(".khaosync/state.db") as conn:
        key, version, parsed, run = conn.execute(
            "SELECT key, version, parsed, run_id FROM staged_record WHERE entity = 'company' AND current = 1 "
            "AND parsed LIKE '%forename%' ORDER BY key LIMIT 1").fetchone()
        old = json.loads(parsed)
        old["contacts"][0].update(forename="Marguerite", surname="Oldname-Smythe")
        conn.execute("INSERT INTO staged_record(entity, key, version, content_hash, raw, parsed, run_id, seen_at, "
                     "current) VALUES ('company', ?, ?, 'x', X'00', ?, ?, 'then', 0)",
                     (key, version + 100, json.dumps(old), run))
        conn.execute("INSERT INTO exception(type, severity, owner, stage, fingerprint, reason, records, first_seen, "
                     "last_seen, first_run, last_run) VALUES ('identifier_conflict', 'warn', 'crm', 'pull', 'm', ?, "
                     "'[\"company:1\"]', 'now', 'now', 1, 1)",
                     ("company seen as 'Marguerite Oldname-Smythe' and as someone else",))
    emails, names = people_in_store()
    assert "marguerite oldname-smythe" in names and emails
    outputs = []
    for args in (["exceptions", "list", "--mask-pii"], ["exceptions", "list", "--mask-pii", "--json"],
                 ["exceptions", "list", "--mask-pii", "--csv", "-"], ["exceptions", "show", "1", "--mask-pii"],
                 ["exceptions", "show", "1", "--mask-pii", "--json"], ["reconcile", "contacts", "--mask-pii"],
                 ["reconcile", "contacts", "--mask-pii", "--json", "--csv", "weekly"],
                 ["reconcile", "--month", "2026-06", "--mask-pii", "--json"],
                 ["diff", "contacts", "--mask-pii"], ["diff", "contacts", "--mask-pii", "--json"],
                 ["diff", "contacts", "--mask-pii", "--csv", "-"]):
        result = runner.invoke(app, args)
        assert result.exit_code in (0, 1), (args, result.output)
        outputs.append((args, result.stdout.lower()))
    outputs.append((["weekly csv"], open("weekly/contacts-records.csv", encoding="utf-8").read().lower()))
    for args, text in outputs:
        leaked = [p for p in emails | names if p in " ".join(text.split())]
        assert not leaked, (args, leaked[:3])
    assert "person-" in outputs[0][1] and "person " in outputs[0][1]
    # Unmasked, the same people are there: the masking, not the data, made the difference.
    plain = runner.invoke(app, ["exceptions", "list", "--json"]).stdout.lower()
    assert "marguerite oldname-smythe" in plain
