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


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """The tiny synthetic set (24/8 tracklets), built once per test session."""
    import input_pipeline
    d = tmp_path_factory.mktemp("tfds")
    input_pipeline.get_builder("synthetic_pedestrians/tiny", d).download_and_prepare()
    return str(d)


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
