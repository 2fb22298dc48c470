"""TFDS builders for video pedestrian attributes, and the tf.data pipeline over them.

Importing this package imports nothing heavy: `get_builder` imports the
module of the named builder (which registers it with TFDS) on first use.
"""

from __future__ import annotations

import importlib
import os

from vtfpar_jax.errors import UserError, nearest

# Builder name -> (module, class). Kept as strings so that importing the
# package does not pull in TensorFlow.
BUILDERS = {
    "synthetic_pedestrians": ("input_pipeline.synthetic", "SyntheticPedestrians"),
    "mars_attribute": ("input_pipeline.mars", "MarsAttribute"),
    "dukemtmc_vid_attribute": ("input_pipeline.duke", "DukemtmcVidAttribute"),
}


class UnknownDatasetError(UserError, ValueError):
    """A dataset name no builder is registered under."""


def builder_class(name: str) -> type:
    """The builder class registered under `name` (imports its module)."""
    try:
        module, cls = BUILDERS[name]
    except KeyError:
        raise UnknownDatasetError(f"unknown dataset {name!r}; known: {sorted(BUILDERS)}"
                                  f"{nearest(name, BUILDERS)}") from None
    return getattr(importlib.import_module(module), cls)


def get_builder(name: str, data_dir: str | os.PathLike | None = None, **kwargs):
    """An instance of builder `name` over `data_dir`; call `download_and_prepare()` if needed.

    `name` may carry a config, e.g. 'synthetic_pedestrians/tiny'; kwargs go to
    the builder (e.g. `config=`).
    """
    base, _, config = name.partition("/")
    if config:
        kwargs.setdefault("config", config)
    return builder_class(base)(data_dir=None if data_dir is None else os.fspath(data_dir),
                               **kwargs)


_MODULE_FILES = {name: module.split(".")[-1] + ".py" for name, (module, _) in BUILDERS.items()}


class DatasetNotBuiltError(UserError, FileNotFoundError):
    """A dataset that has not been prepared: the message says how to build it."""

    how_to_fix_follows = True   # the lines after the first are the build commands

    def __init__(self, builder):
        name = builder.name + (f"/{builder.builder_config.name}" if builder.builder_config else "")
        manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
        how = (f"put the downloaded files in a manual dir, then run\n  tfds build "
               f"input_pipeline/{_MODULE_FILES[builder.name]} --data_dir {builder.data_dir_root}"
               f" --manual_dir DIR\n{manual.strip()}" if manual else
               f"build it with\n  vtfpar demo --prepare_only --data_dir "
               f"{builder.data_dir_root}")
        super().__init__(f"dataset {name!r} is not built in {builder.data_dir_root}; {how}")
