"""Shared test fixtures: the reference fixtures committed under tests/fixtures."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


@pytest.hookimpl(trylast=True)   # after pytest's tmp_path plugin is configured
def pytest_configure(config):
    """One persistent JAX compilation cache for the whole run. Both xdist workers and every
    process they start (commands, notebook kernels) compile the same programs again and
    again, most of them the hundreds of small ones of a model's init, run op by op: cached
    from the first compile on (min compile time 0), a second smoke training process spends
    31 s of CPU instead of 75. Set in the main process before any test module imports JAX
    (which reads them then); the workers inherit them. The cache lives in pytest's temporary
    folder for this run, which pytest prunes.

    No size limit: with one, JAX sums the folder's sizes on every write, thousands of files
    each time. Without it, an entry being written can be read half-written by another
    process; JAX then warns and compiles instead, and the warning is silenced here, so that
    the tests of one-line error output do not see it."""
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ.update({
            "JAX_COMPILATION_CACHE_DIR": str(config._tmp_path_factory.getbasetemp()
                                             / "jax_compilation_cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "PYTHONWARNINGS": ",".join(filter(None, [
                os.environ.get("PYTHONWARNINGS"),
                "ignore:Error reading persistent compilation cache entry"]))})


def pytest_runtest_setup(item):
    """Tests marked `gpu` run only where JAX's default backend is a GPU."""
    if item.get_closest_marker("gpu"):
        import jax
        if jax.default_backend() != "gpu":
            pytest.skip(f"needs a GPU; JAX's default backend is {jax.default_backend()!r}")


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


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> dict[str, Path]:
    """{'model': a trained smoke model dir, 'data_dir': the TFDS dir holding its data}.

    configs/demo.py:smoke on synthetic_pedestrians/tiny, trained once per session
    in a subprocess (about a minute on two cores).
    """
    root = tmp_path_factory.mktemp("demo")
    model, data_dir = root / "model", root / "tfds"
    subprocess.run([sys.executable, "-m", "vtfpar_jax", "demo", "--workdir", str(model),
                    "--data_dir", str(data_dir), "--config_arg", "smoke"],
                   cwd=REPO, check=True, capture_output=True)
    return {"model": model, "data_dir": data_dir}
