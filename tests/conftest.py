"""Shared test fixtures: the reference fixtures beside the repo (../shared/fixtures)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"reference fixtures not found at {SHARED_FIXTURES}")
    return SHARED_FIXTURES


@functools.cache
def _regenerate(case: str) -> dict:
    sys.path.insert(0, str(SHARED_FIXTURES / "openpar_parity"))
    try:
        from regenerate import regenerate
    finally:
        sys.path.pop(0)
    return regenerate(case)


@pytest.fixture(scope="session")
def openpar_case(shared_dir):
    """regenerate(case) of the published model's parity fixtures, cached per session."""
    return _regenerate
