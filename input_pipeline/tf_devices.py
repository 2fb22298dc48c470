"""Keeps TensorFlow off the accelerators: it only feeds the host, JAX owns the devices."""

from __future__ import annotations

import logging

import tensorflow as tf

from input_pipeline import tf_notices

log = logging.getLogger(__name__)


def hide_gpus_from_tensorflow() -> None:
    """Make no GPU visible to TensorFlow (idempotent; call before TF runs an op).

    Without this, TF's first op would reserve most of every GPU's memory for
    itself, leaving JAX to fail with out-of-memory errors.
    """
    try:
        with tf_notices.without_notices():   # TF's device query, and its cuInit line
            tf.config.set_visible_devices([], "GPU")
    except RuntimeError as error:
        # TF was initialised before this import; if it already sees a GPU, say so loudly.
        if tf.config.get_visible_devices("GPU"):
            log.warning("TensorFlow was initialised first and can see the GPUs (%s); "
                        "import input_pipeline before running TensorFlow ops", error)
