"""What the training tests share: the smoke config, the environment of child processes and
the check of output file modes."""

from __future__ import annotations

import os

from vtfpar_jax.training import config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "configs", "demo.py") + ":smoke"


def smoke_config(data_dir, **overrides):
    return config_file.load_config_file(SMOKE, data_dir=data_dir, **overrides)


def subprocess_env() -> dict[str, str]:
    """A CPU-only child that imports this checkout: no simulated devices inherited."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def assert_default_modes(root, mask: int) -> None:
    """Every file under `root` 0666 and every folder 0777, less `mask` (what open / mkdir
    make), as every command's outputs must be."""
    wrong = []
    for folder, folders, names in os.walk(root):
        for name, want in [(f, 0o777) for f in folders] + [(n, 0o666) for n in names]:
            path = os.path.join(folder, name)
            if not os.path.islink(path) and os.stat(path).st_mode & 0o777 != want & ~mask:
                wrong.append(f"{oct(os.stat(path).st_mode & 0o777)} {path}")
    assert not wrong, "\n".join(wrong)
