"""Text features of the attribute phrases: computed once from the backbone's frozen text tower.

Phrases are the published ones or the paper's expanded phrases through a
prompt template (vtfpar_jax.attributes). Features are cached on disk under a
key made of the phrases, the template and a digest of the text tower's weights;
the cache file is written atomically, so a host never reads half of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence

import jax
import numpy as np

from vtfpar_jax.models import towers
from vtfpar_jax.outputs.files import atomic_file


def weights_digest(text_params) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(text_params):
        h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return h.hexdigest()[:16]


def attribute_text_features(cfg, backbone_params, phrases: Sequence[str],
                            tokens: np.ndarray, cache_dir: str | None = None) -> np.ndarray:
    """(A, E) float32 text features of `phrases` (ids `tokens`, (A, context)) from the
    backbone of config `cfg` (CLIP or SigLIP), cached."""
    path = None
    if cache_dir:
        key = hashlib.sha256(json.dumps(
            [list(phrases), tokens.tolist(), weights_digest(backbone_params["text"])]).encode())
        path = os.path.join(cache_dir, f"text_features_{key.hexdigest()[:16]}.npy")
        if os.path.exists(path):
            return np.load(path)
    features = np.asarray(jax.jit(towers.of(cfg).text_features, static_argnums=0)(
        cfg, backbone_params, tokens), np.float32)
    if path:
        # Every host computes the features and may write them, while others read:
        # written whole under a unique name, then renamed (vtfpar_jax.outputs.files).
        with atomic_file(path) as temporary, open(temporary, "wb") as f:
            np.save(f, features)
        logging.info("text features of %d phrases cached at %s", len(phrases), path)
    return features
