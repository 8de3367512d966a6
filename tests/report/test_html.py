"""The audit report: one self-contained HTML file whose tables are ``reconcile --json``'s, that
opens offline, and that, masked, shows no email from the data."""

from __future__ import annotations

import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, strategies as st
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import reconcile_world as world  # noqa: E402

from khaosync.cli.app import app  # noqa: E402
from khaosync.khaos.models import Company  # noqa: E402
from khaosync.report.html import cell  # noqa: E402
from khaosync.report.mask import Masker  # noqa: E402
from khaosync.store import open_store  # noqa: E402


class Tables(HTMLParser):
    """Every ``<table id=...>``: its header keys (``data-key``) and its rows' cell texts; and
    every attribute value and tag seen, for the offline checks."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self._table: dict | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, k, v or "") for k, v in attrs]
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", ""), {"keys": [], "rows": []})
        elif tag == "th" and self._table is not None:
            self._table["keys"].append(attrs.get("data-key"))
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self._table["rows"].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> Tables:
    parser = Tables()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def pulled(tmp_path_factory) -> tuple[Path, Path]:
    return world.plant_and_pull(tmp_path_factory.mktemp("report"))


@pytest.fixture
def workspace(pulled, tmp_path, monkeypatch):
    """A synced month with two drifts in Ometria, and a finding naming a shared email."""
    sandbox, state = world.make_workspace(pulled, tmp_path)
    manifest = json.loads((sandbox / "manifest.json").read_text())
    month = "2026-10"
    missing = _first_due(state, month)
    emulator, docs = world.sync_by_hand(state, world.sandbox_emulator_path(sandbox), month,
                                        not_in_ometria=(missing,))
    plain = next(d for d in docs if d["id"] != missing and d["status"] in ("shipped", "complete"))
    emulator.tamper("order", plain["id"], {"grand_total": float(plain["grand_total"]) + 0.01})
    emulator.close()
    shared = manifest["faults"]["shared_email"][0]
    with open_store(state) as store:
        run = store.start_run("map", "sandbox")
        store.record_exception(run_id=run, type="identifier_conflict", severity="warn", owner="crm", stage="map",
                               reason=f"email {shared['email']} is on {len(shared['contacts'])} KC contacts",
                               records=[f"contact:{c['contact_id']}" for c in shared["contacts"]], entity="contact")
    monkeypatch.chdir(tmp_path)
    return {"month": month, "state": state, "missing": missing, "penny": plain["id"], "shared": shared["email"]}


def _first_due(state: Path, month: str) -> str:
    with open_store(state, write=False) as store:
        return next(d["id"] for d in world.due_orders(store, month) if d["status"] in ("shipped", "complete"))


def run(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def data_emails(state: Path) -> set[str]:
    """Every email (or would-be email) the ERP data holds: contacts, addresses, web users."""
    found: set[str] = set()
    with open_store(state, write=False) as store:
        for (parsed,) in store.conn.execute(
                "SELECT parsed FROM staged_record WHERE entity = 'company' AND parsed IS NOT NULL"):
            company = Company.model_validate_json(parsed)
            found |= {c.email.strip() for c in company.contacts} | {a.email.strip() for a in company.addresses}
            found.add(company.web_user.strip())
    return {e for e in found if e and ("@" in e or "." in e)}


def test_the_report_tables_are_reconcile_json(workspace, tmp_path):
    month = workspace["month"]
    out = tmp_path / "audit.html"
    made = run("report", "--month", month, "--live", "--html", str(out))
    assert made.exit_code == 0, made.output
    assert made.stdout.strip() == f"report written: {out.resolve()}"
    reconciled = run("reconcile", "--month", month, "--live", "--json")
    assert reconciled.exit_code == 1  # the planted drifts fail the month; the report still gets written
    data = json.loads(reconciled.stdout)
    tables = parse(out.read_text(encoding="utf-8")).tables

    metrics = tables["metrics"]
    assert metrics["keys"] == ["name", "currency", "store", "erp", "ledger", "ometria", "difference", "not_yet_due",
                               "unexplained", "status"]
    assert metrics["rows"] == [[cell(m[k]) for k in metrics["keys"]] for m in data["metrics"]]
    records = tables["records"]
    assert records["keys"] == ["key", "issue", "severity", "owner", "side", "erp", "ometria", "detail"]
    assert records["rows"] == [[cell(r[k]) for k in records["keys"]] for r in data["records"]]
    named = {(row[0], row[1]) for row in records["rows"]}
    assert {(workspace["missing"], "missing_in_ometria"), (workspace["penny"], "total_mismatch")} <= named
    owners = {(row[0], row[1]): row[3] for row in tables["records-by-owner"]["rows"]}
    assert owners[("finance", "total_mismatch")] == "1"
    exceptions = {(row[0], row[1]) for row in tables["exceptions"]["rows"]}
    assert {("finance", "total_mismatch"), ("crm", "identifier_conflict")} <= exceptions


def test_the_report_opens_offline(workspace, tmp_path):
    out = tmp_path / "audit.html"
    assert run("report", "--month", workspace["month"], "--html", str(out)).exit_code == 0
    html = out.read_text(encoding="utf-8")
    page = parse(html)
    assert not re.search(r"https?://", html, re.IGNORECASE)
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(page.tags)
    assert not [(t, k, v) for t, k, v in page.attributes if k in ("src", "href", "srcset", "action")]
    assert "@import" not in html and "url(" not in html
    assert page.tags.count("svg") >= 1 and "polyline" in page.tags
    assert html.startswith("<!DOCTYPE html>") and 'charset="utf-8"' in html


def test_masked_report_shows_no_email_from_the_data(workspace, tmp_path):
    emails = data_emails(workspace["state"])
    plain, masked = tmp_path / "plain.html", tmp_path / "masked.html"
    assert run("report", "--month", workspace["month"], "--html", str(plain)).exit_code == 0
    assert run("report", "--month", workspace["month"], "--html", str(masked), "--mask-pii").exit_code == 0
    shown = plain.read_text(encoding="utf-8").lower()
    assert workspace["shared"].lower() in shown  # unmasked, the finding names the email
    text = masked.read_text(encoding="utf-8").lower()
    leaked = sorted(e for e in emails if e.lower() in text)
    assert leaked == []
    assert re.search(r"person-\d{4}@masked\.invalid", text)
    assert "personal data masked" in text


def test_the_same_person_gets_the_same_mask():
    masker = Masker([("ann.lee@example.com", "Ann Lee"), ("bo@example.org", "Bo Stone")])
    first = masker.text("email ann.lee@example.com is shared")
    assert first == "email person-0001@masked.invalid is shared"
    assert masker.text("Ann Lee ordered; ANN.LEE@EXAMPLE.COM again; bo@example.org") == \
        "Person 0001 ordered; person-0001@masked.invalid again; person-0002@masked.invalid"
    assert masker.text("stranger@elsewhere.net and ann.lee@example.com") == \
        "person-0003@masked.invalid and person-0001@masked.invalid"
    assert Masker([("samuel.green.example.com", "Samuel Green")]).text(
        "not an email address: 'samuel.green.example.com'") == "not an email address: 'person-0001@masked.invalid'"


EMAILS = ["ann@example.com", "ANN@example.com", "bo@example.org", "cy@example.net", "dee@example.co.uk"]


@given(st.lists(st.sampled_from(EMAILS), min_size=1, max_size=25))
def test_masks_are_consistent_distinct_and_first_seen(sequence):
    masker = Masker()
    masks = [masker.email(e) for e in sequence]
    for a, mask_a in zip(sequence, masks):
        for b, mask_b in zip(sequence, masks):
            assert (a.lower() == b.lower()) == (mask_a == mask_b)
    firsts = list(dict.fromkeys(m for m in masks))
    assert firsts == [f"person-{n:04d}@masked.invalid" for n in range(1, len(firsts) + 1)]
