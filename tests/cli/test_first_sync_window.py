"""A first `sync --since DATE` does not flood the register with what lies before DATE (issue
14.5): credit notes of orders placed before it, and Ometria's copies of those orders, are left
out of the checks, and the run says how many it left out."""

import json
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli_workspace import copied, plant  # noqa: E402

from khaosync.cli.app import app


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return plant(tmp_path_factory.mktemp("window"))


@pytest.fixture
def runner(planted, tmp_path, monkeypatch):
    return copied(planted, tmp_path, monkeypatch)


def open_exceptions(runner, type_: str) -> list[dict]:
    listed = runner.invoke(app, ["exceptions", "list", "--open", "--type", type_, "--json"])
    assert listed.exit_code in (0, 1), listed.stderr
    return json.loads(listed.stdout)["exceptions"]


def test_a_first_sync_since_leaves_out_what_lies_before_it_and_says_so(runner):
    synced = runner.invoke(app, ["sync", "--since", "2026-09-01", "--commit", "--json"])
    assert synced.exit_code in (0, 1), synced.stderr
    left = json.loads(synced.stdout)["left_outside_window"]
    assert left["orders"] > 0 and left["credit_notes"] > 0
    # No refund gap for a credit note whose order was placed before the window.
    assert not [e for e in open_exceptions(runner, "refund_gap") if "not staged" in e["reason"]]
    db = sqlite3.connect(".khaosync/state.db")
    outside = {k for (k,) in db.execute("SELECT key FROM order_outside_window")}
    db.close()
    assert len(outside) == left["orders"]
    # Ometria's copies of those orders (an earlier integration's) are not ometria_only_order.
    health = runner.invoke(app, ["health", "--live", "--json"])
    assert health.exit_code in (0, 1), health.stderr
    for finding in open_exceptions(runner, "ometria_only_order"):
        # Only Ometria orders from within the window are still checked (storefront orders).
        placed = finding["reason"].split(", ")[1].split(")")[0]
        assert placed >= "2026-09-01", finding["reason"]
        assert not any(finding["records"][0].endswith(":" + k) for k in outside)
    human = runner.invoke(app, ["sync", "--since", "2026-09-01"])
    said = [line for line in human.stderr.splitlines() if line.startswith("left out by the --since window: ")]
    # The window is walked already: no order is left out again; its credit notes still are.
    assert said == [f"left out by the --since window: {left['credit_notes']} credit notes of such orders not checked"]


def test_without_since_nothing_is_left_out(runner):
    synced = runner.invoke(app, ["sync", "--json"])
    assert synced.exit_code in (0, 1), synced.stderr
    assert json.loads(synced.stdout)["left_outside_window"] is None
