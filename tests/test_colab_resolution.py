"""What our install does to Colab's runtimes, as pip resolves it: for each of Colab's CPU,
GPU and TPU runtimes (colab/runtime/*-constraints.txt, Colab's published `pip freeze`), pip
resolves our dependencies plus the runtime's extra, the one the notebooks' install cell asks
for, against a venv that holds Colab's packages at Colab's versions, and says what it would
install (`pip install --dry-run --report`). The test fails when that would put a second
TensorFlow distribution into the `tensorflow/` folder, or leave JAX without the accelerator
plugin its version needs.

Colab's packages are stand-ins: a dist-info with name and version for each pinned line, and no
files, so nothing but PyPI's metadata is downloaded. Their own requirements are not known to
the resolver; colab/runtime/check_colab.py installs the real ones and runs the notebooks.
Markers are evaluated for this interpreter, wheels picked for Colab's Python 3.13.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
RUNTIMES = REPO / "colab" / "runtime"
COLAB_PYTHON = "3.13"
# The extra the notebooks' install cell picks on each runtime (tests/test_notebooks.py checks
# the cells say the same).
RUNTIME_EXTRA = {"cpu": "", "gpu": "cuda12", "tpu": "tpu"}
# Distributions that all install the `tensorflow` package.
TENSORFLOWS = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel",
               "tensorflow-macos", "tensorflow-aarch64", "tf-nightly", "tf-nightly-cpu"}
# What of jax must move with it: its compiled half and the plugins of each accelerator.
JAX_COMPANIONS = re.compile(r"jaxlib|jax-cuda\d+-(plugin|pjrt)")

# Three resolutions against PyPI: about 20 s with pip's cache warm, 45 s cold.
pytestmark = pytest.mark.slow


def colab_freeze(runtime: str) -> dict[str, str]:
    """{canonical name: version} of the runtime's constraints file."""
    pins = {}
    for line in (RUNTIMES / f"{runtime}-constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def our_requirements(extra: str) -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])


def colab_like_venv(root: Path, pins: dict[str, str]) -> Path:
    """A venv without pip whose site-packages holds a stand-in for each pinned package."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                   "get_paths()['purelib'])"], check=True, capture_output=True,
                                  text=True).stdout.strip())
    for name, version in pins.items():
        info = purelib / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("pip\n")
    return python


def resolve(runtime: str, tmp_path: Path) -> tuple[dict[str, str], dict[str, dict]]:
    """(the runtime's versions after our install, {name: report entry} of what pip installs)."""
    pins = colab_freeze(runtime)
    python = colab_like_venv(tmp_path / "venv", pins)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(our_requirements(RUNTIME_EXTRA[runtime])) + "\n")
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run",
         "--quiet", "--python-version", COLAB_PYTHON, "--only-binary=:all:",
         "--report", str(report), "-r", str(requirements)],
        capture_output=True, text=True)
    assert done.returncode == 0, f"pip cannot resolve our dependencies on Colab's {runtime} " \
                                 f"runtime:\n{done.stderr[-3000:]}"
    installs = {canonicalize_name(item["metadata"]["name"]): item
                for item in json.loads(report.read_text())["install"]}
    after = dict(pins)
    after.update({name: item["metadata"]["version"] for name, item in installs.items()})
    return after, installs


@pytest.fixture(scope="module", params=sorted(RUNTIME_EXTRA))
def resolved(request, tmp_path_factory):
    runtime = request.param
    return (runtime, *resolve(runtime, tmp_path_factory.mktemp(runtime)))


def test_the_constraints_say_where_they_come_from():
    for runtime in RUNTIME_EXTRA:
        text = (RUNTIMES / f"{runtime}-constraints.txt").read_text()
        assert "googlecolab/backend-info" in text and re.search(r"commit [0-9a-f]{7}", text)
        assert colab_freeze(runtime)["jax"]


def test_one_tensorflow_distribution(resolved):
    runtime, after, _ = resolved
    present = sorted(TENSORFLOWS & after.keys())
    assert len(present) == 1, f"Colab's {runtime} runtime would hold {present}: they share " \
                               "the tensorflow/ folder"


def test_jax_moves_with_its_compiled_half_and_plugins(resolved):
    runtime, after, installs = resolved
    companions = {name: version for name, version in after.items()
                  if JAX_COMPANIONS.fullmatch(name)}
    assert companions, after.keys()
    assert set(companions.values()) == {after["jax"]}, \
        f"Colab's {runtime} runtime would have jax {after['jax']} with {companions}"
    if "jax" in installs:   # what jax itself asks of the runtime's extra (libtpu for TPUs)
        extra = RUNTIME_EXTRA[runtime]
        for line in installs["jax"]["metadata"].get("requires_dist", []):
            req = Requirement(line)
            if extra and req.marker and req.marker.evaluate({"extra": extra}) \
                    and not req.marker.evaluate({"extra": ""}):
                name = canonicalize_name(req.name)
                assert name in after and req.specifier.contains(after[name], prereleases=True), \
                    f"jax[{extra}] needs {req}; Colab's {runtime} runtime would have " \
                    f"{after.get(name)}"

