"""The package's layers, and no import that runs up them or round in a cycle.

Each module belongs to one layer (LAYERS, from the bottom up; docs/architecture.md says what
each holds) and imports only from its own layer or those below. No module imports one that
imports it back, directly or through others.

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
LAYERS = (
    ("ground", ("vtfpar_jax", "vtfpar_jax.errors", "vtfpar_jax.cli_errors",
                "vtfpar_jax.attributes", "vtfpar_jax.outputs")),
    ("data", ("input_pipeline",)),
    ("models", ("vtfpar_jax.models",)),
    ("backbones", ("vtfpar_jax.backbones",)),
    ("state", ("vtfpar_jax.state",)),
    ("evaluation", ("vtfpar_jax.evaluation",)),
    ("training", ("vtfpar_jax.training",)),
    ("experiments", ("vtfpar_jax.experiments",)),
    ("inference", ("vtfpar_jax.inference",)),
    ("convert", ("vtfpar_jax.convert",)),
    ("tools", ("vtfpar_jax.tools",)),
    ("cli", ("vtfpar_jax.cli", "vtfpar_jax.__main__")),
)


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


def layer(module: str) -> int:
    """The index in LAYERS of `module`'s layer: a package's modules are in its layer, and the
    package root `vtfpar_jax` (its __init__) alone is in the ground floor."""
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (member != "vtfpar_jax" and module.startswith(member + ".")):
                return index
    raise LookupError(f"{module} is in no layer: add it to one in LAYERS (and to "
                      "docs/architecture.md)")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} ({LAYERS[layer(module)][0]}) imports {target} "
                  f"({LAYERS[layer(target)][0]})"
                  for module, targets in graph.items() for target in targets
                  if layer(target) > layer(module))


def test_the_graph_sees_the_package():
    graph = import_graph(REPO)
    assert "vtfpar_jax.models.vtfpar" in graph["vtfpar_jax.inference.predict"]
    assert "vtfpar_jax.evaluation.decisions" in graph["vtfpar_jax.evaluation.visualize"]
    # an import inside a function counts as much as one at the top
    assert "vtfpar_jax.state.train_state" in graph["vtfpar_jax.state.model_dir"]


def test_every_module_imports_only_its_layer_and_below():
    assert upward_imports(import_graph(REPO)) == []


def test_an_upward_import_is_found(tmp_path):
    """The check itself: a model module that reaches up into training, inside a function."""
    for package in ("vtfpar_jax", "vtfpar_jax/models", "vtfpar_jax/training", "input_pipeline"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "vtfpar_jax/training/loop.py").write_text("")
    (tmp_path / "vtfpar_jax/models/tower.py").write_text(
        "def f():\n    from vtfpar_jax.training import loop\n    return loop\n")
    assert upward_imports(import_graph(tmp_path)) == [
        "vtfpar_jax.models.tower (models) imports vtfpar_jax.training.loop (training)"]


def test_the_top_level_holds_at_most_six_modules():
    """Everything else sits in a subpackage named for its job."""
    top = sorted(p.name for p in (REPO / "vtfpar_jax").glob("*.py"))
    assert len(top) <= 6, top


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
