"""The colab/ notebooks: committed stripped, executed top to bottom in smoke mode on a CPU.

Smoke mode is chosen through the environment (VTFPAR_SMOKE=1, read by each
notebook's parameters cell), so no papermill is needed; the kernel is this
interpreter's own ipykernel ('python3' as jupyter_client resolves it from
sys.prefix), and nothing is registered globally.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "colab").glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def _execute(nb, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VTFPAR_SMOKE", "1")
    monkeypatch.setenv("VTFPAR_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()


def test_the_three_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["from_pytorch.ipynb", "quickstart.ipynb",
                                           "tpu_pod.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_with_parameters(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "SMOKE" in tagged[0].source and "VTFPAR_SMOKE" in tagged[0].source
    # Thin notebooks: they import the package, they do not define its functions.
    assert "import vtfpar_jax" in "".join(c.source for c in code) or any(
        "from vtfpar_jax" in c.source for c in code)
    assert not any(line.startswith(("def ", "class ")) for c in code
                   for line in c.source.splitlines())


def test_kernel_is_this_interpreter(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys, vtfpar_jax\nprint(sys.prefix)")])
    _execute(nb, tmp_path, monkeypatch)
    assert nb.cells[0].outputs[0]["text"].strip() == sys.prefix


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    began = time.perf_counter()
    _execute(nb, tmp_path, monkeypatch)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    if path.stem == "from_pytorch":
        assert "max |ours - published|" in text
    if path.stem == "tpu_pod":
        assert "8 devices" in text
    if path.stem == "quickstart":
        images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                  if "image/png" in o.get("data", {})]
        assert len(images) >= 3   # the test clips and the curves
    print(f"{path.name}: {time.perf_counter() - began:.0f} s")
