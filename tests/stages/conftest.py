"""The planted sandbox the stage tests share: generated once, copied by any test that changes it."""

import shutil
from pathlib import Path

import pytest

from khaosync.sandbox.lifecycle import init_sandbox

KEY = "sandbox-key"


@pytest.fixture(scope="session")
def planted(tmp_path_factory) -> Path:
    """Seed 11, 80 customers, 400 orders: every fault kind, small enough to be quick. Read only."""
    folder = tmp_path_factory.mktemp("planted") / "sandbox"
    init_sandbox(folder, api_key=KEY, seed=11, customers=80, orders=400)
    return folder


@pytest.fixture
def sandbox(planted, tmp_path) -> Path:
    """A private copy of the planted sandbox, for tests that pull, push or let time pass."""
    folder = tmp_path / "sandbox"
    shutil.copytree(planted, folder)
    return folder
