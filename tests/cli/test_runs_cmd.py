"""``khaosync runs list`` / ``runs show`` (issue 14.8): the run history, from the state store."""

from __future__ import annotations

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
    return plant(tmp_path_factory.mktemp("runs"), ["sync"], ["diff", "orders"])


@pytest.fixture
def runner(planted, tmp_path, monkeypatch):
    return copied(planted, tmp_path, monkeypatch, env={"COLUMNS": "80"})


def test_runs_list_json_says_what_each_run_was(runner):
    result = runner.invoke(app, ["runs", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["sandbox"] is True
    assert [r["command"] for r in data["runs"]] == ["sync", "diff"]
    sync, diff = data["runs"]
    assert sync["status"] == "ok" and sync["verdict"] in ("ok", "findings") and sync["duration_s"] >= 0
    with sqlite3.connect(".khaosync/state.db") as conn:
        staged_by_sync = conn.execute("SELECT count(*) FROM staged_record WHERE run_id = ?", (sync["id"],)).fetchone()[0]
        opened = conn.execute("SELECT count(*) FROM exception WHERE first_run = ?", (sync["id"],)).fetchone()[0]
    assert sync["counts"]["new"] == staged_by_sync and sync["counts"]["exceptions"] == opened
    assert set(diff["counts"]) == {"new", "changed", "void"}
    only = json.loads(runner.invoke(app, ["runs", "list", "--command", "diff", "--json"]).stdout)["runs"]
    assert [r["id"] for r in only] == [diff["id"]]


def test_runs_list_table_fits_80_columns(runner):
    result = runner.invoke(app, ["runs", "list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "2 run(s)"
    assert lines[1].split() == ["id", "command", "started", "UTC", "took", "counts", "verdict"]
    assert max(len(line) for line in lines) <= 80 and all(line == line.rstrip() for line in lines)
    assert lines[3].split()[:2] == ["1", "sync"]


def test_runs_show_says_what_a_run_read_made_and_opened(runner):
    data = json.loads(runner.invoke(app, ["runs", "show", "1", "--json"]).stdout)
    with sqlite3.connect(".khaosync/state.db") as conn:
        staged = dict(conn.execute("SELECT entity, count(*) FROM staged_record WHERE run_id = 1 GROUP BY entity"))
        mapped = dict(conn.execute("SELECT type, count(*) FROM outbound_entry WHERE run_id = 1 GROUP BY type"))
        opened = [r[0] for r in conn.execute("SELECT id FROM exception WHERE first_run = 1 ORDER BY id")]
        plans = [r[0] for r in conn.execute("SELECT id FROM plan WHERE run_id = 1 ORDER BY created_at, rowid")]
    assert data["sandbox"] is True and data["command"] == "sync"
    assert data["staged"] == staged and data["mapped"] == mapped
    assert [e["id"] for e in data["exceptions_opened"]] == opened and opened
    assert [p["id"] for p in data["plans"]] == plans
    assert [p["status"] for p in data["plans"]] == ["superseded"] * 3 + ["open"]  # per type, then merged
    human = runner.invoke(app, ["runs", "show", "1"])
    assert human.exit_code == 0
    assert f"exceptions opened   {len(opened)}" in human.stdout
    assert "read (staged)       " + ", ".join(f"{k} {v}" for k, v in sorted(staged.items())) in human.stdout


def test_push_refuses_a_plan_narrower_than_the_open_review_unless_named(runner):
    """After sync's review (products, contacts, orders), `diff orders` made a plan of orders only."""
    listed = json.loads(runner.invoke(app, ["plans", "list", "--open", "--json"]).stdout)["plans"]
    review, narrower = [p["id"] for p in listed]
    result = runner.invoke(app, ["push"])
    assert result.exit_code == 2
    assert (f"error: the newest plan {narrower} (`diff orders`: order) is narrower than the open review {review} "
            f"(`sync`: contact, order, product); name the one to push: --plan {narrower} or --plan {review}"
            ) in result.stderr
    named = runner.invoke(app, ["push", "--plan", narrower, "--json"])
    assert named.exit_code == 0 and json.loads(named.stdout)["plan"] == narrower


def test_an_unknown_run_is_a_usage_error(runner):
    for missing in ("999", "99999999999999999999"):
        result = runner.invoke(app, ["runs", "show", missing])
        assert result.exit_code == 2 and f"no run {missing}: see khaosync runs list" in result.stderr
