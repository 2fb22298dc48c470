"""A run's config from its file: `configs/<name>.py[:arg]` and `--config.<field>=` overrides,
a field the file does not have refused by name (the nearest one suggested)."""

from __future__ import annotations

import os

import ml_collections

from vtfpar_jax.errors import ConfigError, nearest
from vtfpar_jax.state import old_names


def load_config_file(spec: str, **overrides) -> ml_collections.ConfigDict:
    """'configs/mars.py[:arg]' -> that file's get_config(arg), as --config reads it.

    `overrides` set fields as --config.<field>= does; nested ones by dotted key,
    e.g. `**{"optimizer.lr": 3e-4}`. A field the config does not have is refused,
    naming the nearest one (as absl does for --config.<field>= typos).
    """
    import importlib.util
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found")
    module_spec = importlib.util.spec_from_file_location("_vtfpar_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    fields = config_fields(config)
    for key in overrides:
        if key not in fields:
            raise ConfigError(f"{path}: override {key!r}: the config has no field {key!r}"
                              f"{_suggestion(key, fields)}")
    config.update_from_flattened_dict(overrides)
    return config


def config_fields(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every field's dotted name ('optimizer', 'optimizer.lr', ...)."""
    names = []
    for key, value in config.items():
        names.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            names += config_fields(value, f"{prefix}{key}.")
    return names


def _suggestion(key: str, fields) -> str:
    """The field's name now, if it is one the backbone had while called "clip"; else the
    nearest field."""
    now = old_names.field(key)
    if now != key and now in fields:
        return f" (it is called {now!r} now)"
    return nearest(key, fields)


def check_config_overrides(argv: list[str]) -> None:
    """Refuse a --config.<field>=... that names no field of the --config file."""
    spec = next((arg.partition("=")[2] or next_arg for arg, next_arg in zip(
        argv, [*argv[1:], ""], strict=True) if arg.partition("=")[0] == "--config"), None)
    if not spec:
        return  # absl reports the missing --config
    fields = config_fields(load_config_file(spec))
    for arg in argv:
        if arg.startswith("--config."):
            key = arg.removeprefix("--config.").partition("=")[0]
            if key not in fields:
                raise ConfigError(f"--config.{key}: {spec.partition(':')[0]} has no field "
                                  f"{key!r}{_suggestion(key, fields)}")
