"""The package's layers, and no import that runs up them or round in a cycle.

The rules are import-linter contracts in .importlinter (docs/architecture.md says what each
layer holds); `make lint` runs them too. Its graph counts every import statement, those inside
functions included; imports by name string (`importlib.import_module`) are not seen.

Two checks stay here, having no import-linter contract: that every module of the package is
in a layer (the layers contract's `exhaustive` needs all layers under one package, and ours
span vtfpar_jax and input_pipeline), and that the package root `vtfpar_jax` (its __init__)
imports only the ground floor (a contract names a package with all it holds).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / ".importlinter"
PACKAGES = ("vtfpar_jax", "input_pipeline")


def _layers() -> list[list[str]]:
    """The layers contract's layers, the highest first, each as its modules."""
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    lines = parser["importlinter:contract:layers"]["layers"].strip().splitlines()
    return [[name.strip() for name in line.split(":")] for line in lines]


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the packages under `root`, with `root`'s .importlinter."""
    return subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
         "lint_imports_command()", "--no-cache", "--no-logo"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True, text=True, timeout=120)


def test_every_module_imports_only_its_layer_and_below_and_no_cycle():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout, result.stdout


def _copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONFIG, tmp_path)
    return tmp_path


@pytest.mark.parametrize("files, broken", [
    # a model module that reaches up into training, inside a function
    ({"vtfpar_jax/models/tower.py":
      "def f():\n    from vtfpar_jax.training import losses\n    return losses\n"},
     "vtfpar_jax.models.tower -> vtfpar_jax.training.losses"),
    # two modules of one layer that import each other, one in a function
    ({"vtfpar_jax/state/a.py": "from vtfpar_jax.state import b\n",
      "vtfpar_jax/state/b.py": "def f():\n    from vtfpar_jax.state import a\n    return a\n"},
     "No package or module imports one that imports it back BROKEN"),
], ids=["upward import", "cycle"])
def test_the_contracts_can_break(tmp_path, files, broken):
    """The check itself, on a copy of the packages with the files added."""
    root = _copy(tmp_path)
    for name, text in files.items():
        (root / name).write_text(text)
    result = _lint_imports(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout, result.stdout


def test_every_module_is_in_a_layer():
    named = {name for layer in _layers() for name in layer}
    graph = grimp.build_graph(*PACKAGES)
    outside = sorted(m for m in graph.find_children("vtfpar_jax") | {"input_pipeline"}
                     if m not in named)
    assert outside == [], f"in no layer: add them to one in .importlinter (and to " \
                          f"docs/architecture.md): {outside}"


def test_the_package_root_imports_only_the_ground_floor():
    ground = set(_layers()[-1])
    graph = grimp.build_graph(*PACKAGES)
    above = graph.find_modules_directly_imported_by("vtfpar_jax") - ground
    assert not above, f"vtfpar_jax/__init__.py imports above the ground floor: {sorted(above)}"


def test_the_top_level_holds_at_most_six_modules():
    """Everything else sits in a subpackage named for its job."""
    top = sorted(p.name for p in (REPO / "vtfpar_jax").glob("*.py"))
    assert len(top) <= 6, top
