"""Builds Colab's CPU runtime as Colab publishes it, and runs every notebook on it as a user
would: from an empty folder, installing the package with the notebook's own first cell.

    .venv/bin/python colab/runtime/check_colab.py --workdir runs/colab-check
    .venv/bin/python colab/runtime/check_colab.py --workdir runs/colab-check --lowest

Steps, for the CPU runtime:
1. a wheel of this checkout, the notebooks' VTFPAR_SOURCE;
2. a Python 3.13 venv with Colab's pip and Colab's packages at Colab's versions
   (cpu-constraints.txt): the ones our install can touch (PRESEEDED), with whatever they
   require as Colab pins it; with --lowest, then the lowest versions pyproject.toml allows;
3. for each notebook, a copy of that venv (hard links: pip replaces files, it does not write
   into them) and an empty folder; the notebook runs in smoke mode (VTFPAR_SMOKE=1) with
   nbclient, every cell even after an error, with pip reaching PyPI and nothing else;
4. in that venv afterwards: `import tensorflow` and a computation, tfds, `jax.devices()`,
   how many TensorFlow distributions are installed, `pip check`.
The GPU and TPU runtimes cannot run here: their rows are tests/test_colab_resolution.py,
which resolves our install against their constraints.

Prints a table: runtime x notebook, cells passed, each check, seconds. Exits 1 when any fails.
Needs this checkout's dev venv (nbclient, pytest) and a Python 3.13 (--python).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbclient
import nbformat
import tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NOTEBOOKS = sorted((REPO / "colab").glob("*.ipynb"))
PACKAGED = ("pyproject.toml", "README.md", "LICENSE", "vtfpar_jax", "input_pipeline", "configs")
# Colab's packages that our install requires, replaces or shares a folder with (the TensorFlow
# family, OpenCV's three cv2 distributions), and the kernel. Their own requirements come in at
# Colab's versions through the constraints.
PRESEEDED = [
    "tensorflow", "tensorflow-datasets", "tensorflow-metadata", "tensorflow-text",
    "tensorflow-hub", "tensorflow-probability", "tf_keras", "keras", "tensorboard",
    "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "protobuf",
    "transformers", "huggingface_hub", "safetensors", "tokenizers", "sentencepiece", "absl-py",
    "matplotlib", "pillow", "tqdm", "pandas", "opencv-python", "opencv-python-headless",
    "opencv-contrib-python", "ipykernel", "ipython",
]
TENSORFLOWS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel")
KERNEL = "colab-like"
CELL_TIMEOUT_S = 1800
# What each check runs in the notebook's venv afterwards.
CHECKS = {
    "tensorflow": "import tensorflow as tf; print(tf.__version__, int(tf.reduce_sum(tf.ones(3))))",
    "tfds": "import tensorflow_datasets as tfds; print(tfds.__version__)",
    "jax": "import jax; print(jax.__version__, jax.devices())",
    "one TF dist": ("import importlib.metadata as m; names = sorted({d.metadata['Name'].lower()"
                    f" for d in m.distributions()}} & set({TENSORFLOWS!r})); print(names); "
                    "assert len(names) == 1, names"),
}


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)


def must(args: list[str], what: str, **kwargs) -> str:
    done = run(args, **kwargs)
    if done.returncode != 0:
        sys.exit(f"check_colab: {what} failed (exit {done.returncode}):\n"
                 f"{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return done.stdout


def pip_env() -> dict[str, str]:
    """This environment without pip settings of the machine: pip sees PyPI only, as on Colab."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def freeze_pins(runtime: str) -> dict[str, str]:
    pins = {}
    for line in (HERE / f"{runtime}-constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def build_wheel(workdir: Path) -> Path:
    src, dist = workdir / "wheel-src", workdir / "dist"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(dist, ignore_errors=True)
    for name in PACKAGED:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    must([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", dist, src], "building the wheel")
    (wheel,) = dist.glob("vtfpar_jax-*.whl")
    return wheel


def lowest_pins(python: Path) -> list[str]:
    """name==lower bound for each of our requirements whose lower bound has a wheel for this
    Python; the others are printed and left to pip."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = []
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([\w.-]+)>=([\w.]+)(,<[\w.]+)?", requirement.replace(" ", ""))
        if not match:
            continue
        pin = f"{match[1]}=={match[2]}"
        probe = run([python, "-m", "pip", "install", "--dry-run", "-q", "--no-deps",
                     "--only-binary=:all:", pin], env=pip_env())
        if probe.returncode == 0:
            pins.append(pin)
        else:
            print(f"  lowest: {pin} has no wheel for this Python; pip picks")
    return pins


def colab_venv(root: Path, python: str, lowest: bool) -> Path:
    pins = freeze_pins("cpu")
    must([python, "-m", "venv", root], "creating the venv")
    venv_python = root / "bin" / "python"
    constraints = HERE / "cpu-constraints.txt"
    must([venv_python, "-m", "pip", "install", "-q", f"pip=={pins['pip']}"],
         "installing Colab's pip", env=pip_env())
    seeds = [f"{name}=={pins[re.sub(r'[-_.]+', '-', name).lower()]}" for name in PRESEEDED]
    must([venv_python, "-m", "pip", "install", "-q", "-c", constraints, *seeds],
         "installing Colab's packages", env=pip_env())
    if lowest:
        pins_low = lowest_pins(venv_python)
        print("  lowest:", " ".join(pins_low))
        must([venv_python, "-m", "pip", "install", "-q", *pins_low],
             "installing the lowest versions pyproject.toml allows", env=pip_env())
    return venv_python


def with_kernel(venv: Path) -> None:
    spec = venv / "share" / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f",
                 "{connection_file}"], "display_name": KERNEL, "language": "python"}))


def checks(python: Path) -> dict[str, tuple[bool, str]]:
    """{check: (passed, its last line of output)} in the venv of `python`."""
    env = dict(pip_env(), TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    commands = {name: [python, "-c", code] for name, code in CHECKS.items()}
    commands["pip check"] = [python, "-m", "pip", "check"]
    results = {}
    for name, command in commands.items():
        done = run(command, env=env)
        lines = (done.stdout if done.returncode == 0 else done.stderr).strip().splitlines()
        results[name] = (done.returncode == 0, lines[-1] if lines else "")
    return results


def run_notebook(path: Path, venv: Path, wheel: Path, folder: Path) -> tuple[int, int, str]:
    """(cells passed, code cells, the first error) of the notebook run in smoke mode."""
    nb = nbformat.read(path, as_version=4)
    env = dict(pip_env(), VTFPAR_SMOKE="1", VTFPAR_SOURCE=wheel.as_uri(),
               JUPYTER_PATH=str(venv / "share" / "jupyter"), TF_CPP_MIN_LOG_LEVEL="3")
    for name in ("PYTHONPATH", "XLA_FLAGS", "VTFPAR_NOTEBOOK_DIR", "VTFPAR_MODEL",
                 "VTFPAR_DATA_DIR", "JAX_PLATFORMS", "VIRTUAL_ENV"):
        env.pop(name, None)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)   # the kernel starts with this process's environment
    try:
        client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S,
                                         allow_errors=True,
                                         resources={"metadata": {"path": str(folder)}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [next((o for o in c.outputs if o.output_type == "error"), None) for c in code]
    first = next((f"{e['ename']}: {e['evalue']}"[:300] for e in errors if e), "")
    nbformat.write(nb, folder / path.name)   # with its outputs, to read what went wrong
    return sum(e is None for e in errors), len(code), first


def resolution_rows(runtime: str) -> tuple[bool, float, str]:
    began = time.perf_counter()
    done = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                str(REPO / "tests" / "test_colab_resolution.py"), "-k", runtime], cwd=REPO)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    return done.returncode == 0, time.perf_counter() - began, last


def default_python() -> str:
    """python3.13 on PATH or the newest pyenv has installed (its shim may not run it)."""
    for candidate in ["python3.13", *sorted(Path.home().glob(".pyenv/versions/3.13*/bin/python"),
                                            reverse=True)]:
        found = shutil.which(str(candidate))
        if found and run([found, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 13))"]
                         ).returncode == 0:
            return found
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True,
                        help="an empty or missing folder: venvs, wheel and run notebooks go here")
    parser.add_argument("--python", default=default_python(),
                        help="Python 3.13, Colab's (default: python3.13 on PATH or pyenv's)")
    parser.add_argument("--lowest", action="store_true",
                        help="install the lowest versions pyproject.toml allows first")
    parser.add_argument("--notebooks", default="",
                        help="comma-separated notebook names (default: every one)")
    parser.add_argument("--skip_resolution", action="store_true",
                        help="leave out the GPU and TPU resolution rows")
    args = parser.parse_args()
    if not args.python:
        parser.error("--python: no Python 3.13 found; give its path")
    if args.workdir.exists() and any(args.workdir.iterdir()):
        parser.error(f"--workdir {args.workdir}: not empty; give a new folder")
    wanted = [n for n in args.notebooks.split(",") if n]
    unknown = set(wanted) - {p.stem for p in NOTEBOOKS}
    if unknown:
        parser.error(f"--notebooks: no notebook named {', '.join(sorted(unknown))}; "
                     f"there are {', '.join(p.stem for p in NOTEBOOKS)}")
    notebooks = [p for p in NOTEBOOKS if not wanted or p.stem in wanted]
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    began = time.perf_counter()
    wheel = build_wheel(workdir)
    base = workdir / "venv-cpu"
    print(f"building Colab's CPU runtime in {base} ...", flush=True)
    colab_venv(base, args.python, args.lowest)
    print(f"  {time.perf_counter() - began:.0f} s", flush=True)
    before = checks(base / "bin" / "python")
    print("Colab's CPU runtime before our install:")
    for name, (ok, detail) in before.items():
        print(f"  {name}: {'ok' if ok else 'FAILS'} ({detail})")

    rows = []
    for path in notebooks:
        venv = workdir / f"venv-cpu-{path.stem}"
        shutil.copytree(base, venv, symlinks=True, copy_function=os.link)
        with_kernel(venv)
        folder = workdir / f"run-{path.stem}"
        folder.mkdir()
        print(f"running {path.name} ...", flush=True)
        began = time.perf_counter()
        passed, total, first = run_notebook(path, venv, wheel, folder)
        seconds = time.perf_counter() - began
        after = checks(venv / "bin" / "python")
        rows.append(("cpu", path.stem, passed, total, after, seconds, first))
        print(f"  {passed}/{total} cells, {seconds:.0f} s{'; ' + first if first else ''}",
              flush=True)
        for name, (ok, detail) in after.items():
            print(f"  {name}: {'ok' if ok else 'FAILS'} ({detail})")

    resolutions = [] if args.skip_resolution else [(rt, *resolution_rows(rt))
                                                   for rt in ("gpu", "tpu")]
    names = list(CHECKS) + ["pip check"]
    print(f"\n{'lowest versions pyproject allows' if args.lowest else 'as the install picks'}; "
          f"Python {must([base / 'bin' / 'python', '-V'], 'python -V').split()[-1]}\n")
    print("| runtime | notebook | cells passed | " + " | ".join(names) + " | seconds |")
    print("|---|---|---|" + "---|" * len(names) + "---|")
    failed = False
    for runtime, stem, passed, total, after, seconds, _ in rows:
        marks = ["pass" if after[n][0] else "FAIL" for n in names]
        failed |= passed < total or "FAIL" in marks
        print(f"| {runtime} | {stem} | {passed}/{total} | " + " | ".join(marks)
              + f" | {seconds:.0f} |")
    for runtime, ok, seconds, last in resolutions:
        failed |= not ok
        print(f"| {runtime} | resolution only ({last}) | – | "
              + " | ".join(["–"] * len(names)) + f" | {seconds:.0f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
