"""Pixel statistics by `config.input.normalization`: one table, no dependencies.

Clips read from disk (video.py, numpy and PIL), the device preprocessing
(preprocess.py, JAX) and exported models' metadata (export.py) all read it; it
imports nothing, so the deviceless-compile venv (`make aot-venv`: JAX only)
can import the train step that uses it.

docs/published-model.md §1 (quirk): the published model normalises with mean 0.5,
std 0.5, not CLIP's own statistics.
"""

NORMALIZATIONS = {
    "published": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}
