"""The colab/ notebooks: committed stripped, and run top to bottom in smoke mode as a new user
runs them, from a fresh install.

Each notebook runs in a venv of its own that holds none of this checkout, from an empty
folder. Its first cell installs the package, as on Colab, but from a wheel built here from
the checkout (`VTFPAR_SOURCE`), with pip kept off the network (`PIP_NO_INDEX`): the
dependencies are this interpreter's, linked into the venv, so nothing is downloaded. A
notebook that reads a file of the checkout, or a module the wheel leaves out, fails here.

Smoke mode is chosen through the environment (VTFPAR_SMOKE=1, read by each notebook's
parameters cell), so no papermill is needed. The notebooks that start from a trained model
get the suite's demo model (VTFPAR_MODEL).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "colab").glob("*.ipynb"))
CELL_TIMEOUT_S = 600
# What the wheel is built from: pyproject.toml decides what of it is packaged.
PACKAGED = ("pyproject.toml", "README.md", "LICENSE", "vtfpar_jax", "input_pipeline", "configs")
KERNEL = "vtfpar-fresh"
# Every notebook's first code cell: pip installs f"vtfpar-jax[{EXTRAS}] @ {SOURCE}", where EXTRAS
# are the notebook's own plus the plugin extra of a GPU or TPU runtime, the ones
# tests/test_colab_resolution.py resolves against Colab's runtimes.
INSTALL = re.compile(r"package = f\"vtfpar-jax\[\{','\.join\(EXTRAS\)\}\] @ \{SOURCE\}\"")
RUNTIME_EXTRAS = ('EXTRAS.append("cuda12")', 'EXTRAS.append("tpu")')


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The package's wheel, built from a copy of the checkout (a build in place would leave
    build/ behind)."""
    root = tmp_path_factory.mktemp("wheel")
    for name in PACKAGED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / "src" / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (root / "src").mkdir(exist_ok=True)
            shutil.copy2(src, root / "src" / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "-w", str(root / "dist"),
                    str(root / "src")], check=True, capture_output=True)
    (built,) = (root / "dist").glob("vtfpar_jax-*.whl")
    return built


def _fresh_venv(root: Path) -> Path:
    """A venv with its own pip and, linked in, every package this interpreter has but this
    checkout's own (its editable install and dist-info). Returns the venv's python."""
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True)
    python = root / "bin" / "python"
    fresh = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                 "get_paths()['purelib'])"], check=True, capture_output=True,
                                text=True).stdout.strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if entry.name.startswith(("__editable__", "vtfpar_jax")) or (fresh / entry.name).exists():
            continue
        (fresh / entry.name).symlink_to(entry)
    # A kernel that runs in this venv, found through JUPYTER_PATH.
    spec = root / "share" / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": KERNEL, "language": "python"}))
    return python


@pytest.fixture
def fresh(wheel, tmp_path, monkeypatch):
    """(the fresh venv's python, an empty working folder), with the environment a notebook
    run gets: the wheel as VTFPAR_SOURCE, pip offline, no path into this checkout."""
    python = _fresh_venv(tmp_path / "venv")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "venv" / "share" / "jupyter"))
    monkeypatch.setenv("VTFPAR_SOURCE", wheel.as_uri())
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)   # the suite's simulated devices
    monkeypatch.delenv("VTFPAR_NOTEBOOK_DIR", raising=False)  # the default: under `work`
    return python, work


def _execute(nb, work: Path) -> None:
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(work)}})
    client.execute()


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["experiments.ipynb", "from_pytorch.ipynb",
                                           "quickstart.ipynb", "street_video.ipynb",
                                           "tpu_pod.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_installs_first(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = _code(nb)
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    # The first code cell names the runtime and installs the package.
    assert code[0].source.startswith("# Runtime: ") and INSTALL.search(code[0].source)
    assert all(extra in code[0].source for extra in RUNTIME_EXTRAS)
    assert "Checked on Colab's CPU runtime" in code[0].source
    assert "Runtime:" in nb.cells[0].source
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "SMOKE" in tagged[0].source and "VTFPAR_SMOKE" in tagged[0].source
    # Thin notebooks: they import the package, they do not define its functions.
    assert any("vtfpar_jax" in c.source for c in code[1:])
    assert not any(line.startswith(("def ", "class ")) for c in code
                   for line in c.source.splitlines())
    # Nothing read from a checkout.
    assert not any(re.search(r"\btests/|colab/|configs/\w+\.py\"", c.source) for c in code)


def test_the_install_cell_installs_the_wheel_and_nothing_of_the_checkout(fresh):
    python, work = fresh
    install = _code(nbformat.read(NOTEBOOKS[0], as_version=4))[0]
    nb = nbformat.v4.new_notebook(cells=[install, nbformat.v4.new_code_cell(
        "import sys, vtfpar_jax\nprint(sys.prefix)\nprint(vtfpar_jax.__file__)")])
    _execute(nb, work)
    prefix, package = nb.cells[1].outputs[0]["text"].split()
    assert Path(prefix) == python.parent.parent
    assert Path(package).is_relative_to(python.parent.parent) and REPO not in Path(package).parents


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, fresh, monkeypatch, request):
    python, work = fresh
    nb = nbformat.read(path, as_version=4)
    monkeypatch.setenv("VTFPAR_SMOKE", "1")
    if "VTFPAR_MODEL" in _code(nb)[1].source:   # it starts from a trained model
        demo = request.getfixturevalue("demo_model")
        monkeypatch.setenv("VTFPAR_MODEL", str(demo["model"]))
        monkeypatch.setenv("VTFPAR_DATA_DIR", str(demo["data_dir"]))
    began = time.perf_counter()
    _execute(nb, work)
    errors = [o for c in _code(nb) for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in _code(nb) for o in c.outputs)
    images = [o for c in _code(nb) for o in c.outputs if "image/png" in o.get("data", {})]
    if path.stem == "from_pytorch":
        assert "max |ours - published|" in text and "exported file: max |logits" in text
    if path.stem == "tpu_pod":
        assert "8 devices" in text
    if path.stem == "quickstart":
        assert len(images) >= 3   # the test clips and the curves
    if path.stem == "experiments":
        assert len(images) == 3   # robustness.png, groups.png, ablation.png
        assert "cells already done, kept" in text and "| spatial_aggregation=max |" in text
        assert any(line.startswith("occlusion ") for line in text.splitlines())
    if path.stem == "street_video":
        assert len(images) >= 3   # the annotated frames and the contact sheet
        assert "drawn people: 4, tracks found:" in text
    # Everything the notebook wrote went under the working folder.
    assert (work / "runs" / "colab").is_dir()
    print(f"{path.name}: {time.perf_counter() - began:.0f} s")
