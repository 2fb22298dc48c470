"""Shared test fixtures: the reference fixtures committed under tests/fixtures."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Recorded reference outputs (tests/fixtures/README.md says what each holds)."""
    return FIXTURES


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """The tiny synthetic set (24/8 tracklets), built once per test session."""
    import input_pipeline
    d = tmp_path_factory.mktemp("tfds")
    input_pipeline.get_builder("synthetic_pedestrians/tiny", d).download_and_prepare()
    return str(d)


@functools.cache
def _rebuild(case: str) -> dict:
    sys.path.insert(0, str(FIXTURES / "openpar_parity"))
    try:
        from rebuild import rebuild_case
    finally:
        sys.path.pop(0)
    return rebuild_case(FIXTURES / "openpar_parity" / case)


@pytest.fixture(scope="session")
def openpar_case():
    """case name -> the published model's parity case, rebuilt once per session."""
    return _rebuild
