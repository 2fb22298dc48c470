"""What the training tests share: the smoke config and the environment of child processes."""

from __future__ import annotations

import os

from vtfpar_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "configs", "demo.py") + ":smoke"


def smoke_config(data_dir, **overrides):
    return train.load_config_file(SMOKE, data_dir=data_dir, **overrides)


def subprocess_env() -> dict[str, str]:
    """A CPU-only child that imports this checkout: no simulated devices inherited."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env
