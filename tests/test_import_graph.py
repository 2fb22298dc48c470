"""No module of the package imports one that imports it back, directly or through others.

The graph is read from the source with `ast`: every `import` and `from ... import`
statement of vtfpar_jax/ and input_pipeline/, those inside functions included
(a cycle hidden in a function-level import is still a cycle). Imports by name
string (`importlib.import_module`) are not seen.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("vtfpar_jax", "input_pipeline")


def _module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` (at `path`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: up (level - 1) packages from this module's package
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod; `from mod import f`, mod itself.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` runs a.b.c; a name below a module (a.b.C) resolves to the module.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = _module_names(root)
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def test_the_graph_sees_the_package():
    graph = import_graph(REPO)
    assert "vtfpar_jax.models.vtfpar" in graph["vtfpar_jax.predict"]
    assert "vtfpar_jax.decisions" in graph["vtfpar_jax.visualize"]


def test_no_import_cycles():
    try:
        graphlib.TopologicalSorter(import_graph(REPO)).prepare()
    except graphlib.CycleError as e:
        cycle = e.args[1]
        pytest.fail("import cycle: " + " -> ".join(cycle))


def test_a_cycle_is_found(tmp_path):
    """The check itself: two modules that import each other, one of them in a function."""
    package = tmp_path / "vtfpar_jax"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from vtfpar_jax import b\n")
    (package / "b.py").write_text("def f():\n    from . import a\n    return a\n")
    (tmp_path / "input_pipeline").mkdir()
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(import_graph(tmp_path)).prepare()
