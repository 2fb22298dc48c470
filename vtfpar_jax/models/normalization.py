"""Pixel statistics by `config.input.normalization`, and the one normalisation that uses them.

Clips read from disk (inference/video.py, numpy arrays), the device preprocessing
(preprocess.py, JAX arrays) and exported models' metadata (export.py) all use it. It
imports numpy only, so the deviceless-compile venv (`make aot-venv`: JAX only) can import
the train step that uses it.

docs/published-model.md §1 (quirk): the published model normalises with mean 0.5,
std 0.5, not CLIP's own statistics.
"""


import numpy as np

NORMALIZATIONS = {
    "published": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


def normalize(pixels, normalization: str = "published"):
    """Pixel values in [0, 255] (..., 3), uint8 or whole floats -> float32
    (x / 255 - mean) / std per channel. A numpy array gives numpy (clips read on the
    host), a JAX array JAX (the device preprocessing): the same float32 operations."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r}: expected one of "
                         f"{sorted(NORMALIZATIONS)}")
    mean, std = (np.asarray(v, np.float32) for v in NORMALIZATIONS[normalization])
    return (pixels.astype(np.float32) / np.float32(255.0) - mean) / std
