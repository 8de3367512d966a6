"""``khaosync map --incremental`` maps only what changed since the last map; ``--full`` (the
default) maps every staged record again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli_workspace import copied, plant  # noqa: E402

from khaosync.cli.app import app

ALL = {"products": False, "contacts": False, "orders": False}
INCREMENTAL = {"products": True, "contacts": True, "orders": True}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return plant(tmp_path_factory.mktemp("map"), ["pull"])


@pytest.fixture
def runner(planted, tmp_path, monkeypatch):
    return copied(planted, tmp_path, monkeypatch)


def _map(runner, *args: str) -> dict:
    result = runner.invoke(app, ["map", *args, "--json"])
    assert result.exit_code in (0, 1), result.output  # 1: the planted fail findings
    return json.loads(result.stdout)


def test_incremental_maps_only_what_changed_and_full_maps_everything(runner):
    first = _map(runner, "--incremental")
    assert first["incremental"] == ALL  # no map yet: everything
    staged = {name: entity["staged"] for name, entity in first["entities"].items()}
    assert all(staged.values())
    again = _map(runner, "--incremental")
    assert again["incremental"] == INCREMENTAL
    assert {name: entity["staged"] for name, entity in again["entities"].items()} == {n: 0 for n in staged}
    assert again["fail_findings"] == first["fail_findings"]  # carried forward, not lost
    full = _map(runner, "--full")
    assert full["incremental"] == ALL
    assert {name: entity["staged"] for name, entity in full["entities"].items()} == staged
    assert {name: entity["mapped"] for name, entity in full["entities"].items()} == {n: 0 for n in staged}


def test_map_is_full_by_default(runner):
    _map(runner)
    assert _map(runner, "--entity", "orders")["incremental"] == {"orders": False}
    assert _map(runner, "--entity", "orders", "--incremental")["incremental"] == {"orders": True}
