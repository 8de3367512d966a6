"""One planted, pulled and mapped sandbox per test session; each test works on its own copy."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from diff_fixtures import copy_planted, plant  # noqa: E402


@pytest.fixture(scope="session")
def planted_mapped(tmp_path_factory) -> Path:
    return plant(tmp_path_factory.mktemp("planted-mapped"))


@pytest.fixture(scope="session")
def planted_pulled(tmp_path_factory) -> Path:
    return plant(tmp_path_factory.mktemp("planted-pulled"), mapped=False)


@pytest.fixture
def world(planted_mapped, tmp_path) -> Path:
    """A private copy: pulled, mapped, nothing pushed."""
    return copy_planted(planted_mapped, tmp_path)


@pytest.fixture
def erp_only(planted_pulled, tmp_path) -> Path:
    """A private copy: pulled only (no outbound records): what an audit from the ERP alone sees."""
    return copy_planted(planted_pulled, tmp_path)
