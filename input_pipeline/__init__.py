"""TFDS builders for video pedestrian attributes, and the tf.data pipeline over them.

Importing this package imports nothing heavy: `get_builder` imports the
module of the named builder (which registers it with TFDS) on first use.
"""

from __future__ import annotations

import importlib
import os

# Builder name -> (module, class). Kept as strings so that importing the
# package does not pull in TensorFlow.
BUILDERS = {
    "synthetic_pedestrians": ("input_pipeline.synthetic", "SyntheticPedestrians"),
    "mars_attribute": ("input_pipeline.mars", "MarsAttribute"),
    "dukemtmc_vid_attribute": ("input_pipeline.duke", "DukemtmcVidAttribute"),
}


def builder_class(name: str) -> type:
    """The builder class registered under `name` (imports its module)."""
    try:
        module, cls = BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(BUILDERS)}") from None
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
